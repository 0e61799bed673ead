// A StateManager over a state type of your own (see feed_state.hpp): the
// same load / should_process / save cycle, the same crash safety.
#include <iostream>

#include "feed_state.hpp"

int main(int argc, char** argv) {
  namespace as = atomic_state;
  const char* dir = argc > 1 ? argv[1] : "feed-state";

  as::LogfmtLogger logger(std::cerr, as::Level::debug);
  as::StateManager<as::LogfmtLogger&, feeds::FeedState> manager(dir, logger);

  as::Result<feeds::FeedState> last = manager.load_state();
  if (!last) {
    std::cerr << last.status().message() << "\n";
    return 1;
  }

  // A new round arrives; process it only if it is newer than the last one.
  const std::int64_t round_time = last->updated_at == 0 ? 1732406400 : last->updated_at + 60;
  if (!manager.should_process(round_time, *last)) return 0;

  feeds::FeedState next = *last;
  next.feed = "SOL/USD";
  next.round += 1;
  next.updated_at = round_time;
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
