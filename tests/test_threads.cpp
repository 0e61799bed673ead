// Threads: one sink shared by many, managers saving at once while a reader
// and a sweep of stale temp files run beside them. The ThreadSanitizer build
// of scripts/test runs these (Meson suite "concurrency").
#include <atomic>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_logger.hpp"
#include "support/catch.hpp"
#include "support/files.hpp"

using atomic_state::Field;
using atomic_state::Fields;
using atomic_state::Level;
using atomic_state::LogfmtLogger;
using atomic_state::State;
using Manager = atomic_state::StateManager<test::CaptureLogger&>;

TEST_CASE("threads sharing one sink never interleave inside a line", "[threads]") {
  std::ostringstream out;
  LogfmtLogger logger(out, Level::debug);
  constexpr int kThreads = 8, kRecords = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&logger, t] {
      const std::string tag(40, static_cast<char>('a' + t));
      for (int i = 0; i < kRecords; ++i) {
        const Field fields[] = {{"thread", t}, {"tag", tag}, {"i", i}};
        logger.log(Level::info, "concurrent record", Fields(fields, 3));
      }
    });
  for (auto& th : threads) th.join();

  std::istringstream lines(out.str());
  std::string line;
  int whole = 0;
  while (std::getline(lines, line)) {
    const auto t = line.find("thread=");
    REQUIRE(t != std::string::npos);
    const char letter = static_cast<char>('a' + (line[t + 7] - '0'));
    if (line.rfind("level=info msg=\"concurrent record\" thread=", 0) == 0 &&
        line.find(" tag=" + std::string(40, letter) + " i=") != std::string::npos)
      ++whole;
  }
  CHECK(whole == kThreads * kRecords);
}

TEST_CASE("threads saving at once never leave a torn file for a reader", "[threads]") {
  test::TempDir dir;
  test::CaptureLogger log;
  constexpr int kThreads = 8, kSaves = 50;
  Manager shared(dir.path(), log);
  std::atomic<bool> done{false};
  std::atomic<int> loads{0}, bad_loads{0};

  std::thread reader([&] {
    Manager own(dir.path(), log);
    while (!done) {
      auto s = own.load_state();
      ++loads;
      // Every read is a whole state some writer saved (or none yet).
      if (!s || (s->last_updated != 0 &&
                 s->oracle_name != "writer-" + std::to_string(s->last_protocol_count)))
        ++bad_loads;
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t)
    writers.emplace_back([&, t] {
      Manager own(dir.path(), log);  // half share one manager, half have their own
      Manager& m = t % 2 ? shared : own;
      for (int i = 1; i <= kSaves; ++i) {
        State s;
        s.oracle_name = "writer-" + std::to_string(t);
        s.last_protocol_count = t;
        s.last_updated = i;
        s.last_tvs = t * 1000.0 + i;
        if (!m.save_state(s)) ++bad_loads;
      }
    });
  for (auto& w : writers) w.join();
  done = true;
  reader.join();

  CHECK(bad_loads == 0);
  CHECK(loads > 0);
  CHECK(log.with("state saved").size() == kThreads * kSaves);
  CHECK(log.with("state file corrupted, treating as first run").empty());
  CHECK(test::temp_files_in(dir.path()).empty());
  auto last = shared.load_state();
  REQUIRE(last.has_value());
  CHECK(last->last_updated == kSaves);  // each writer's final save is its 50th
}

TEST_CASE("a sweep running beside saves never takes the temp file of a live one", "[threads]") {
  test::TempDir dir;
  test::CaptureLogger log;
  constexpr int kWriters = 4, kSaves = 200;
  std::atomic<int> writers_left{kWriters}, failed_saves{0}, sweeps{0}, busy{0}, removed{0};
  std::thread sweeper([&] {
    atomic_state::AtomicWriter<> writer;
    while (writers_left > 0) {
      auto swept = writer.remove_stale_temp_files(dir.path());
      ++sweeps;
      if (swept) {
        busy += swept->busy;
        removed += static_cast<int>(swept->removed);
      }
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t)
    writers.emplace_back([&, t] {
      Manager own(dir.path(), log);
      for (int i = 1; i <= kSaves; ++i) {
        State s;
        s.oracle_name = "writer-" + std::to_string(t);
        s.last_updated = i;
        if (!own.save_state(s)) ++failed_saves;
      }
      --writers_left;
    });
  for (auto& w : writers) w.join();
  sweeper.join();
  INFO(sweeps << " sweeps, " << busy << " of them while a save held the directory");
  CHECK(failed_saves == 0);
  CHECK(removed == 0);  // no save was killed, so no temp file was stale
  CHECK(sweeps > 0);
  CHECK(test::temp_files_in(dir.path()).empty());
}
