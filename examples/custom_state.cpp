// A StateManager over a state type of your own (see feed_state.hpp): the
// same load / should_process / save cycle, the same crash safety.
#include <cstdint>
#include <iostream>
#include <limits>
#include <optional>

#include "feed_state.hpp"

namespace {

// `value + step` (step > 0), or nothing when the sum would pass INT64_MAX.
// The state file may hold any int64, and overflowing a signed integer is
// undefined behaviour, so a loaded number is never added to unchecked.
std::optional<std::int64_t> add(std::int64_t value, std::int64_t step) {
  if (value > std::numeric_limits<std::int64_t>::max() - step) return std::nullopt;
  return value + step;
}

// Says that the state has reached the end of int64 and cannot move on. The
// state is left as it is: rewriting it would not help, the next run would
// be stuck at the same place.
int no_next(const char* field, std::int64_t value, const char* what) {
  std::cerr << "custom-state: no round can follow " << field << "=" << value << ": " << what
            << " does not fit in an int64; state left unchanged\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  namespace as = atomic_state;
  const char* dir = argc > 1 ? argv[1] : "feed-state";

  as::LogfmtSink logger(std::cerr, as::Level::debug);
  as::StateManager<as::LogfmtSink&, feeds::FeedState> manager(dir, logger);

  as::Result<feeds::FeedState> last = manager.load_state();
  if (!last) {
    std::cerr << last.status().message() << "\n";
    return 1;
  }

  // A new round arrives a minute after the last one; process it only if it
  // is newer than the last one.
  const std::optional<std::int64_t> round_time =
      last->updated_at == 0 ? 1732406400 : add(last->updated_at, 60);
  if (!round_time) return no_next("updated_at", last->updated_at, "the time 60 s later");
  const std::optional<std::int64_t> round = add(last->round, 1);
  if (!round) return no_next("round", last->round, "the next round number");
  if (!manager.should_process(*round_time, *last)) return 0;

  feeds::FeedState next = *last;
  next.feed = "SOL/USD";
  next.round = *round;
  next.updated_at = *round_time;
  next.price = 236.41 + 0.25 * static_cast<double>(next.round);
  next.recent.push_back(next.price);
  if (next.recent.size() > 5) next.recent.erase(next.recent.begin());

  if (as::Status saved = manager.save_state(next); !saved) {
    std::cerr << saved.message() << "\n";
    return 1;
  }
  std::cout << next.feed << " round " << next.round << " at " << as::to_rfc3339(next.updated_at)
            << ": " << next.price << " (saved to " << manager.state_file().string() << ")\n";
  return 0;
}
