// A StateManager over a state type of your own (see slot_state.hpp): a
// field table, a cursor that is a slot number rather than a time, and a
// file layout upgraded from an older version. The same load /
// should_process / save cycle, the same crash safety.
//
//   custom-state [DIR [SLOT]]
//
// Processes SLOT, the slot the chain has reached, if it is past the last
// slot processed; without SLOT, the slot after the last one (slot 0 on a
// first run). The state is DIR/state.json (default DIR: slot-state). Exit
// status: 0 processed or skipped, 1 failed, 2 bad usage.
#include <charconv>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <optional>
#include <system_error>

#include "slot_state.hpp"

namespace {

// A slot from the command line: decimal digits only, and a uint64.
std::optional<std::uint64_t> parse_slot(const char* text) {
  const char* end = text + std::strlen(text);
  std::uint64_t slot = 0;
  const auto [ptr, ec] = std::from_chars(text, end, slot);
  if (ptr == text || ptr != end || ec != std::errc()) return std::nullopt;
  return slot;
}

}  // namespace

int main(int argc, char** argv) {
  namespace as = atomic_state;
  std::optional<std::uint64_t> given;
  if (argc > 3 || (argc == 3 && !(given = parse_slot(argv[2])))) {
    std::cerr << "usage: custom-state [DIR [SLOT]]   (SLOT: 0 to 18446744073709551615)\n";
    return 2;
  }
  const char* dir = argc > 1 ? argv[1] : "slot-state";

  as::LogfmtSink logger(std::cerr, as::Level::debug);
  as::StateManager<as::LogfmtSink&, slots::SlotState> manager(dir, logger);

  as::Result<as::Loaded<slots::SlotState>> last = manager.load_state();
  if (!last) {
    std::cerr << last.status().message() << "\n";
    return 1;
  }

  // The slot to process: the one given, else the one after the last (0 on
  // a first run). A loaded slot may be the largest a uint64 holds; adding
  // to it would wrap to 0, so the program says so and leaves the state.
  std::uint64_t slot = 0;
  if (given) {
    slot = *given;
  } else if (last->last_slot) {
    if (*last->last_slot == std::numeric_limits<std::uint64_t>::max()) {
      std::cerr << "custom-state: no slot can follow last_slot=" << *last->last_slot
                << ": the next slot does not fit in a uint64; state left unchanged\n";
      return 1;
    }
    slot = *last->last_slot + 1;
  }
  if (!manager.should_process(slot, *last)) return 0;

  // Processing the slot would go here (read its blocks, write the results
  // atomically); then the state says it was done.
  slots::SlotState next = last->state();
  next.chain = "solana";
  next.last_slot = slot;
  if (as::Status saved = manager.save_state(next); !saved) {
    std::cerr << saved.message() << "\n";
    return 1;
  }
  std::cout << next.chain << " slot " << slot << " processed (saved to " << manager.state_file()
            << ")\n";
  return 0;
}
