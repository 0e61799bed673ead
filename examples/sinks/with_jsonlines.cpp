// StateManager logging JSON Lines to stdout (examples/sinks/jsonlines_sink.hpp).
//   with-jsonlines [DIR]
#include <cstdint>
#include <iostream>
#include <limits>

#include "jsonlines_sink.hpp"

int main(int argc, char** argv) {
  namespace as = atomic_state;
  JsonLinesSink sink(std::cout, as::Level::debug);
  // By reference: the sink holds a mutex, so it is shared, not moved in.
  as::StateManager<JsonLinesSink&> manager(argc > 1 ? argv[1] : "jsonlines-state", sink);

  as::Result<as::State> last = manager.load_state();
  if (!last) {
    std::cerr << "with-jsonlines: " << last.status().message() << "\n";
    return 1;
  }
  // The next data comes an hour later. The state file may hold any int64:
  // check before adding, as a signed overflow is undefined behaviour.
  constexpr std::int64_t hour = 3600;
  if (last->last_updated > std::numeric_limits<std::int64_t>::max() - hour) {
    std::cerr << "with-jsonlines: nothing can follow last_updated=" << last->last_updated
              << ": the time 3600 s later does not fit in an int64; state left unchanged\n";
    return 1;
  }
  const std::int64_t now = last->last_updated == 0 ? 1732406400 : last->last_updated + hour;
  if (!manager.should_process(now, *last)) return 0;
  return manager.save_state(as::update_state("Switchboard", now, 12, 2.478e9)) ? 0 : 1;
}
