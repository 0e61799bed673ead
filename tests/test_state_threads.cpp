// Threads: one sink shared by many, managers saving at once while a reader
// and a sweep of stale temp files run beside them. The ThreadSanitizer build
// of scripts/test runs these (Meson suite "concurrency").
#include <atomic>
#include <chrono>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

using Manager = atomic_state::StateManager<test::CaptureSink&>;

TEST_CASE("threads sharing one sink never interleave inside a line", "[threads]") {
  std::ostringstream out;
  LogfmtSink logger(out, Level::debug);
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
  test::CaptureSink log;
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
  test::CaptureSink log;
  constexpr int kWriters = 4, kSaves = 200;
  std::atomic<int> writers_left{kWriters}, failed_saves{0}, sweeps{0}, in_use{0}, removed{0};
  std::thread sweeper([&] {
    atomic_state::AtomicWriter<> writer;
    while (writers_left > 0) {
      auto swept = writer.remove_stale_temp_files(dir.path());
      ++sweeps;
      if (swept) {
        in_use += static_cast<int>(swept->in_use);
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
  // A sweep may take a temp file in the instant between its creation and
  // its lock, before a byte is in it: the save then finds it unlinked and
  // draws another name. Once claimed, a temp file is never taken: a save
  // that lost it would fail at its rename.
  INFO(sweeps << " sweeps; they found " << in_use << " temp files of live saves and took "
              << removed << " not yet claimed");
  CHECK(failed_saves == 0);
  CHECK(sweeps > 0);
  CHECK(test::temp_files_in(dir.path()).empty());
}

namespace {

using Unsynced = atomic_state::StateManager<test::CaptureSink&, State, atomic_state::NoSync>;

// Threads that wait for each other and then start at once.
class StartLine {
 public:
  explicit StartLine(int runners) : waiting_(runners) {}
  void arrive() {
    --waiting_;
    while (waiting_ > 0) std::this_thread::yield();
  }

 private:
  std::atomic<int> waiting_;
};

const char* const kTorn = "{\"oracle_name\": \"switchboard\", \"last_upd";

}  // namespace

TEST_CASE("a state saved while a load reads a corrupt file is never moved aside nor lost",
          "[threads]") {
  // A round: a corrupt state file; one thread loads it while another saves
  // a valid state. Whatever the order, the save stays, and the bytes the
  // load read as corrupt, if it did, are kept in a copy.
  constexpr int kRounds = 500;
  int lost = 0, corrupt_loads = 0;
  for (int round = 0; round < kRounds; ++round) {
    test::TempDir dir;
    test::CaptureSink log;
    test::write_plain(dir / "state.json", kTorn);
    Unsynced loader(dir.path(), log), saver(dir.path(), log);
    State saved;
    saved.oracle_name = "switchboard";
    saved.last_updated = 1700000000 + round;
    StartLine start(2);
    bool loaded_ok = false, saved_ok = false;
    std::thread load([&] {
      start.arrive();
      loaded_ok = loader.load_state().has_value();
    });
    std::thread save([&] {
      start.arrive();
      saved_ok = saver.save_state(saved).ok();
    });
    load.join();
    save.join();
    CHECK(loaded_ok);
    CHECK(saved_ok);
    auto after = Unsynced(dir.path(), log).load_state();
    if (!after || *after != saved) ++lost;
    for (const std::string& name : test::names_in(dir.path()))
      if (name.rfind("state.json.corrupt-", 0) == 0) {
        ++corrupt_loads;
        CHECK(test::read_file(dir / name) == kTorn);
      }
  }
  INFO(corrupt_loads << " of " << kRounds << " loads read the corrupt file first");
  CHECK(lost == 0);
}

TEST_CASE("concurrent loads of one corrupt file all recover, and keep one copy", "[threads]") {
  constexpr int kRounds = 200, kLoaders = 4;
  int failed = 0, copies_wrong = 0;
  for (int round = 0; round < kRounds; ++round) {
    test::TempDir dir;
    test::CaptureSink log;
    test::write_plain(dir / "state.json", kTorn);
    StartLine start(kLoaders);
    std::atomic<int> recovered{0};
    std::vector<std::thread> loaders;
    for (int t = 0; t < kLoaders; ++t)
      loaders.emplace_back([&] {
        Unsynced own(dir.path(), log);
        start.arrive();
        auto loaded = own.load_state();
        if (loaded && *loaded == State{}) ++recovered;
      });
    for (auto& l : loaders) l.join();
    if (recovered != kLoaders) ++failed;
    int copies = 0;
    for (const std::string& name : test::names_in(dir.path()))
      if (name.rfind("state.json.corrupt-", 0) == 0) {
        ++copies;
        CHECK(test::read_file(dir / name) == kTorn);
      }
    if (copies != 1) ++copies_wrong;
    CHECK(test::read_file(dir / "state.json") == kTorn);
    CHECK(test::temp_files_in(dir.path()).empty());
  }
  CHECK(failed == 0);
  CHECK(copies_wrong == 0);
}

TEST_CASE("threads racing for the run lock: never two holders, and no lock outlives its holder",
          "[threads]") {
  test::TempDir dir;
  test::CaptureSink log;
  constexpr int kThreads = 8, kRounds = 200;
  Manager shared(dir.path(), log);
  std::atomic<int> holders{0}, overlaps{0}, held{0}, refused{0}, other_errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      Manager own(dir.path(), log);  // half share one manager, half have their own
      Manager& m = t % 2 == 0 ? shared : own;
      for (int i = 0; i < kRounds; ++i) {
        auto lock = m.try_lock_run();
        if (!lock) {
          if (lock.status().code() == std::errc::resource_unavailable_try_again)
            ++refused;
          else
            ++other_errors;
          continue;
        }
        if (holders.fetch_add(1) != 0) ++overlaps;
        ++held;
        std::this_thread::sleep_for(std::chrono::microseconds(100));  // others try meanwhile
        holders.fetch_sub(1);
      }
    });
  for (auto& th : threads) th.join();
  CHECK(overlaps == 0);
  CHECK(other_errors == 0);
  CHECK(held + refused == kThreads * kRounds);
  INFO(held << " held, " << refused << " refused");
  CHECK(held > 0);
  CHECK(refused > 0);                        // they did race
  CHECK(shared.try_lock_run().has_value());  // and every lock was released
}

TEST_CASE("threads saving with keep_previous: the state and its previous are always whole",
          "[threads]") {
  test::TempDir dir;
  test::CaptureSink log;
  atomic_state::StateOptions options;
  options.keep_previous = true;
  constexpr int kThreads = 6, kSaves = 40;
  Manager first(dir.path(), log, options);
  REQUIRE(first.save_state(atomic_state::update_state("x", 1, 1, 1.0)).ok());
  std::atomic<bool> done{false};
  std::atomic<int> loads{0}, bad{0};
  std::thread reader([&] {
    Manager own(dir.path(), log, options);
    while (!done) {
      for (const auto& path : {own.state_file(), own.previous_file()}) {
        const std::string text = test::read_file(path);
        if (text.empty()) continue;  // no previous yet
        auto parsed = atomic_state::parse_json(text);
        if (!parsed) ++bad;
      }
      auto loaded = own.load_state();
      ++loads;
      if (!loaded || loaded->origin != atomic_state::LoadOrigin::saved) ++bad;
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t)
    writers.emplace_back([&, t] {
      Manager own(dir.path(), log, options);
      for (int i = 0; i < kSaves; ++i)
        (void)own.save_state(atomic_state::update_state("x", 100 + t * kSaves + i, t, 1.0));
    });
  for (auto& th : writers) th.join();
  done = true;
  reader.join();
  CHECK(bad == 0);
  CHECK(loads > 0);
  CHECK(log.with("state saved").size() == kThreads * kSaves + 1);
  Manager after(dir.path(), log, options);
  REQUIRE(after.remove_stale_temp_files().has_value());
  CHECK(test::temp_files_in(dir.path()).empty());
}
