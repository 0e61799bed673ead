// StateManager logging JSON Lines to stdout (examples/sinks/jsonlines_sink.hpp).
//   with-jsonlines [DIR]
#include <iostream>

#include "jsonlines_sink.hpp"

int main(int argc, char** argv) {
  namespace as = atomic_state;
  JsonLinesSink sink(std::cout, as::Level::debug);
  // By reference: the sink holds a mutex, so it is shared, not moved in.
  as::StateManager<JsonLinesSink&> manager(argc > 1 ? argv[1] : "jsonlines-state", sink);

  as::Result<as::State> last = manager.load_state();
  if (!last) return 1;
  const std::int64_t now = last->last_updated == 0 ? 1732406400 : last->last_updated + 3600;
  if (!manager.should_process(now, *last)) return 0;
  return manager.save_state(manager.update_state("Switchboard", now, 12, 2.478e9)) ? 0 : 1;
}
