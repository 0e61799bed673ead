// StateManager logging through spdlog (examples/sinks/spdlog_sink.hpp).
//   with-spdlog [DIR]
#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdint>
#include <limits>

#include "spdlog_sink.hpp"

int main(int argc, char** argv) {
  namespace as = atomic_state;
  auto logger = spdlog::stderr_color_mt("collector");
  logger->set_level(spdlog::level::debug);
  as::StateManager<SpdlogSink> manager(argc > 1 ? argv[1] : "spdlog-state", SpdlogSink{logger});

  as::Result<as::State> last = manager.load_state();
  if (!last) {
    logger->error("{}", last.status().message());
    return 1;
  }
  // The next data comes an hour later. The state file may hold any int64:
  // check before adding, as a signed overflow is undefined behaviour.
  constexpr std::int64_t hour = 3600;
  if (last->last_updated > std::numeric_limits<std::int64_t>::max() - hour) {
    logger->error(
        "nothing can follow last_updated={}: the time 3600 s later does not fit in an int64; "
        "state left unchanged",
        last->last_updated);
    return 1;
  }
  const std::int64_t now = last->last_updated == 0 ? 1732406400 : last->last_updated + hour;
  if (!manager.should_process(now, *last)) return 0;
  return manager.save_state(as::update_state("Switchboard", now, 12, 2.478e9)) ? 0 : 1;
}
