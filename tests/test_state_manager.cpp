// StateManager: the Go service's storage tests, ported, and what goes
// beyond them (quarantine of corrupt files, unreadable files, custom state
// types, threads).
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../examples/feed_state.hpp"
#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/go_service_state.hpp"
#include "support/names.hpp"

namespace json = boost::json;
using Manager = atomic_state::StateManager<test::CaptureSink&>;

namespace {

const char* const kValidState = test::kGoServiceStateText;
State valid_state() { return test::go_service_state(); }

struct Fixture {
  test::TempDir dir;
  test::CaptureSink log;
  Manager manager{dir.path(), log};
  std::string state_path() const { return manager.state_file(); }
  /// A state file with these bytes, modified at kStamp.
  void plant(std::string_view text, mode_t mode = 0644) const {
    test::write_plain(state_path(), text, mode);
    test::set_mtime(state_path(), kStamp);
  }
  std::string corrupt_path(const char* suffix = "") const {
    return state_path() + ".corrupt-" + std::to_string(kStamp) + suffix;
  }
};

}  // namespace

// ------------------------------------------------------------- seed ports --

TEST_CASE("the state file is state.json in the output directory", "[state]") {
  test::CaptureSink log;
  Manager m("/var/lib/collector", log);
  CHECK(m.state_file() == "/var/lib/collector/state.json");
  CHECK(m.output_dir() == "/var/lib/collector");
  Manager here("", log);
  CHECK(here.state_file() == "state.json");
}

TEST_CASE("a valid state file loads every field and logs them", "[state]") {
  Fixture f;
  test::write_plain(f.state_path(), kValidState);
  auto loaded = f.manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(*loaded == valid_state());

  const test::Record r = f.log.last();
  CHECK(r.level == Level::debug);
  CHECK(r.message == "state loaded");
  CHECK(r.keys() == std::vector<std::string>{"path", "oracle_name", "last_updated",
                                             "last_protocol_count", "last_tvs", "snapshot_count"});
  CHECK(r.text("path") == f.state_path());
  CHECK(r.text("oracle_name") == "switchboard");
  CHECK(r.integer("last_updated") == 1700000000);
  CHECK(r.integer("last_protocol_count") == 50);
  CHECK(r.number("last_tvs") == 1500000000.0);
  CHECK(r.integer("snapshot_count") == 10);
}

TEST_CASE("a missing state file is a first run", "[state]") {
  Fixture f;
  for (const bool dir_exists : {true, false}) {
    CAPTURE(dir_exists);
    test::TempDir other;
    test::CaptureSink log;
    Manager m(dir_exists ? other.path() : other / "not" / "yet", log);
    auto loaded = m.load_state();
    REQUIRE(loaded.has_value());
    CHECK(*loaded == State{});
    REQUIRE(log.size() == 1);
    CHECK(log.last().level == Level::info);  // the event an operator looks for
    CHECK(log.last().message == "no state file found, treating as first run");
    CHECK(log.last().keys() == std::vector<std::string>{"path"});
    CHECK(log.last().text("path") == m.state_file());
    CHECK(test::names_in(other.path()).empty());  // nothing created
  }
}

TEST_CASE("a corrupt or partial state file is a first run, its bytes kept aside, with a warning",
          "[state]") {
  struct Row {
    const char* why;
    std::string text;
    const char* error;  // part of the warning's error field
  };
  const Row rows[] = {
      {"the seed's corrupted_state.json", R"({"oracle_name": "switchboard", "last_updated":)",
       "incomplete JSON"},
      {"the seed's partial_state.json", R"({"oracle_name":"switchboard")", "incomplete JSON"},
      {"an empty file", "", "incomplete JSON"},
      {"only whitespace", "  \n", "incomplete JSON"},
      {"an array", "[]", "expected an object"},
      {"a wrong type", R"({"last_updated": "yesterday"})", "last_updated: expected an integer"},
      {"an integer beyond 64 bits", R"({"snapshot_count": 99999999999999999999})",
       "not exact: integer beyond 64 bits at byte "},
      {"an integer beyond int64", R"({"snapshot_count": 9223372036854775808})",
       "snapshot_count: integer out of range"},
      {"NaN", R"({"last_tvs": NaN})", "syntax error"},
      {"a number beyond double", R"({"last_tvs": 1e400})",
       "exponent overflow: number too large for a double at byte "},
      {"invalid UTF-8", "{\"oracle_name\": \"\xC3\x28\"}", "syntax error"},
      {"a NUL byte", std::string("{\"oracle_name\": \"a\0b\"}", 23), "syntax error"},
      {"binary garbage",
       std::string("\x7f"
                   "ELF\x02\x01\x01\0\0\0",
                   10),
       "syntax error"},
      {"trailing data", std::string(kValidState) + "{}", "extra data"},
      {"too deep", std::string(40, '[') + std::string(40, ']'), "too deep"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.why);
    Fixture f;
    f.plant(row.text, 0640);
    auto loaded = f.manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(*loaded == State{});

    REQUIRE(f.log.size() == 1);
    const test::Record r = f.log.last();
    CHECK(r.level == Level::warn);
    CHECK(r.message == "state file corrupted, treating as first run");
    CHECK(r.keys() == std::vector<std::string>{"path", "error", "copied_to"});
    CHECK(r.text("path") == f.state_path());
    CHECK(r.text("error").find(row.error) != std::string::npos);
    CHECK(r.text("copied_to") == f.corrupt_path());

    // The file stays for the next save to replace; its bytes are kept in a
    // private copy, named after its modification time.
    CHECK(test::read_file(f.state_path()) == row.text);
    CHECK(test::mode_of(f.state_path()) == 0640u);
    CHECK(test::read_file(f.corrupt_path()) == row.text);
    CHECK(test::mode_of(f.corrupt_path()) == 0600u);
    CHECK(test::names_in(f.dir.path()).size() == 2);
  }
}

TEST_CASE("every truncation of a valid state file is either valid or kept aside", "[state]") {
  const std::string full = kValidState;
  int valid = 0, quarantined = 0;
  for (std::size_t n = 0; n <= full.size(); ++n) {
    Fixture f;
    f.plant(full.substr(0, n));
    auto loaded = f.manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(test::read_file(f.state_path()) == full.substr(0, n));
    if (*loaded == valid_state()) {
      ++valid;
      CHECK(test::names_in(f.dir.path()).size() == 1);
    } else {
      ++quarantined;
      CHECK(*loaded == State{});
      CHECK(test::read_file(f.corrupt_path()) == full.substr(0, n));
    }
  }
  CHECK(valid == 2);  // with and without the trailing newline
  CHECK(quarantined == static_cast<int>(full.size()) - 1);
}

TEST_CASE("other corrupt bytes with the same modification time get a name of their own",
          "[state]") {
  Fixture f;
  for (const char* text : {"{first", "{second", "{third"}) {
    f.plant(text);
    REQUIRE(f.manager.load_state().has_value());
  }
  CHECK(test::read_file(f.corrupt_path()) == "{first");
  CHECK(test::read_file(f.corrupt_path(".1")) == "{second");
  CHECK(test::read_file(f.corrupt_path(".2")) == "{third");
  CHECK(f.log.last().text("copied_to") == f.corrupt_path(".2"));
}

TEST_CASE("the same corrupt file loaded again is kept once", "[state]") {
  Fixture f;
  f.plant("{torn");
  for (int run = 0; run < 3; ++run) {
    REQUIRE(f.manager.load_state().has_value());
    CHECK(f.log.last().text("copied_to") == f.corrupt_path());
  }
  CHECK(test::names_in(f.dir.path()).size() == 2);  // state.json and one copy
}

TEST_CASE("after a corrupt load the next save replaces the file; the copy stays", "[state]") {
  Fixture f;
  f.plant("{torn");
  REQUIRE(f.manager.load_state().has_value());
  REQUIRE(f.manager.save_state(valid_state()).ok());
  auto back = f.manager.load_state();
  REQUIRE(back.has_value());
  CHECK(*back == valid_state());
  CHECK(test::read_file(f.corrupt_path()) == "{torn");
}

TEST_CASE("a state file that cannot be read is an error, and nothing is touched", "[state]") {
  struct Row {
    const char* why;
    std::function<void(const std::string& path)> make;
    std::size_t limit;
    Step step;
    std::errc code;
    const char* note;
  };
  const Row rows[] = {
      {"a directory at the path", [](const std::string& p) { test::fs::create_directory(p); },
       ATOMIC_STATE_MAX_STATE_SIZE, Step::check_file, std::errc::is_a_directory,
       "the state path is a directory"},
      {"a FIFO at the path (and opening it does not block)",
       [](const std::string& p) { REQUIRE(::mkfifo(p.c_str(), 0644) == 0); },
       ATOMIC_STATE_MAX_STATE_SIZE, Step::check_file, std::errc::invalid_argument,
       "not a regular file but a FIFO"},
      {"a symlink to a device that never ends",
       [](const std::string& p) { test::fs::create_symlink("/dev/zero", p); },
       ATOMIC_STATE_MAX_STATE_SIZE, Step::check_file, std::errc::invalid_argument,
       "not a regular file but a device or socket"},
      {"larger than the default limit of 1 MiB",
       [](const std::string& p) {
         test::write_plain(p, "{}" + std::string(ATOMIC_STATE_MAX_STATE_SIZE, ' '));
       },
       ATOMIC_STATE_MAX_STATE_SIZE, Step::check_file, std::errc::file_too_large,
       "larger than the state size limit"},
      {"larger than a limit set lower",
       [](const std::string& p) { test::write_plain(p, kValidState); }, 100, Step::check_file,
       std::errc::file_too_large, "larger than the state size limit"},
      {"a path through a regular file", [](const std::string&) {}, ATOMIC_STATE_MAX_STATE_SIZE,
       Step::open_directory, std::errc::not_a_directory, nullptr},
  };
  for (const Row& row : rows) {
    CAPTURE(row.why);
    Fixture f;
    std::string path = f.state_path();
    test::CaptureSink log;
    Manager through_file(f.dir / "plain", log);
    Manager& m = row.step == Step::open_directory ? through_file : f.manager;
    if (row.step == Step::open_directory) {
      test::write_plain(f.dir / "plain", "x");
      path = (f.dir / "plain").string();
    }
    row.make(path);
    m.set_max_state_size(row.limit);
    const auto before = test::names_in(f.dir.path());

    // A load that blocks (on the FIFO) is killed by the alarm: a failure
    // in seconds, not a hang until the suite's timeout.
    ::alarm(10);
    auto loaded = m.load_state();
    ::alarm(0);
    REQUIRE_FALSE(loaded.has_value());
    const atomic_state::Status& s = loaded.status();
    CHECK(s.step() == row.step);
    CHECK(s.code() == row.code);
    CHECK(s.path() == path);
    CHECK(s.message().rfind("load state file: ", 0) == 0);
    if (row.note) CHECK(s.message().find(row.note) != std::string::npos);
    CHECK(test::names_in(f.dir.path()) == before);
    CHECK(f.log.size() + log.size() == 0);  // not a first run, not a corrupt file
  }
}

TEST_CASE("every size limit from 0 to no_size_limit behaves as documented", "[state]") {
  // A file within the limit loads, and a state whose text is within it
  // saves; one byte more is an error, never a corrupt file.
  const std::size_t loaded_size = std::string(kValidState).size();
  const std::size_t saved_size = std::string(test::kSavedStateText).size();
  const std::size_t none = Manager::no_size_limit;
  CHECK(none == SIZE_MAX);
  const std::size_t limits[] = {0,
                                1,
                                loaded_size - 1,
                                loaded_size,
                                saved_size - 1,
                                saved_size,
                                saved_size + 1,
                                ATOMIC_STATE_MAX_STATE_SIZE,
                                none / 2,
                                none - 1,
                                none};
  for (const std::size_t limit : limits) {
    CAPTURE(limit);
    Fixture f;
    f.plant(kValidState);
    f.manager.set_max_state_size(limit);
    CHECK(f.manager.max_state_size() == limit);
    auto loaded = f.manager.load_state();
    CHECK(test::names_in(f.dir.path()).size() == 1);  // never a corrupt copy
    CHECK(test::read_file(f.state_path()) == kValidState);
    if (loaded_size <= limit) {
      REQUIRE(loaded.has_value());
      CHECK(*loaded == valid_state());
    } else {
      REQUIRE_FALSE(loaded.has_value());
      CHECK(loaded.status().step() == Step::check_file);
      CHECK(loaded.status().code() == std::errc::file_too_large);
      CHECK(f.log.size() == 0);
    }
    const atomic_state::Status saved = f.manager.save_state(valid_state());
    if (saved_size <= limit) {
      CHECK(saved.ok());
      CHECK(test::read_file(f.state_path()) == test::kSavedStateText);
    } else {
      CHECK(saved.step() == Step::serialize);
      CHECK(saved.code() == std::errc::file_too_large);
      CHECK(test::read_file(f.state_path()) == kValidState);
    }
  }
}

TEST_CASE("an empty state file under a limit of 0 is corrupt, not too large", "[state]") {
  Fixture f;
  f.plant("");
  f.manager.set_max_state_size(0);
  auto loaded = f.manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(f.log.last().message == "state file corrupted, treating as first run");
}

TEST_CASE("save_state refuses a text load_state would refuse as too large", "[state]") {
  // DEL is written raw (JSON allows it), so only what must grow grows: a
  // control character becomes six bytes. Both are kept to the limit.
  Fixture f;
  REQUIRE(f.manager.save_state(valid_state()).ok());
  const std::string before = test::read_file(f.state_path());
  f.manager.set_max_state_size(4096);
  State s = valid_state();
  s.oracle_name = std::string(1000, '\x7f');  // raw: fits
  REQUIRE(f.manager.save_state(s).ok());
  auto back = f.manager.load_state();
  REQUIRE(back.has_value());
  CHECK(*back == s);
  s.oracle_name = std::string(1000, '\x01');  // six bytes each: 6000 > 4096
  const atomic_state::Status refused = f.manager.save_state(s);
  CHECK(refused.step() == Step::serialize);
  CHECK(refused.code() == std::errc::file_too_large);
  CHECK(refused.message().find("load_state would refuse it") != std::string::npos);
  CHECK(test::read_file(f.state_path()).find(std::string(1000, '\x7f')) != std::string::npos);
  CHECK(test::temp_files_in(f.dir.path()).empty());
}

TEST_CASE("should_process: the seed's skip logic, each decision logged", "[state]") {
  struct Row {
    std::int64_t current, last;
    bool process;
    Level level;
    const char* message;
    std::vector<std::string> keys;
  };
  const Row rows[] = {
      {1700003600, 0, true, Level::debug, "first run, processing required", {}},
      {1700003600,
       1700000000,
       true,
       Level::debug,
       "new data available",
       {"current_ts", "last_ts", "delta_seconds"}},
      {1700000000,
       1700000000,
       false,
       Level::info,
       "no new data, skipping extraction",
       {"current_ts", "last_ts"}},
      {1700000000,
       1700003600,
       false,
       Level::warn,
       "clock skew detected, API timestamp older than last processed",
       {"current_ts", "last_ts"}},
  };
  for (const Row& row : rows) {
    CAPTURE(row.message);
    Fixture f;
    State s;
    s.last_updated = row.last;
    CHECK(f.manager.should_process(row.current, s) == row.process);
    REQUIRE(f.log.size() == 1);
    const test::Record r = f.log.last();
    CHECK(r.level == row.level);
    CHECK(r.message == row.message);
    CHECK(r.keys() == row.keys);
    if (r.has("current_ts")) CHECK(r.integer("current_ts") == row.current);
    if (r.has("last_ts")) CHECK(r.integer("last_ts") == row.last);
    if (r.has("delta_seconds")) CHECK(r.integer("delta_seconds") == 3600);
  }
}

TEST_CASE("should_process: a delta too large for int64 is logged whole, not wrapped", "[state]") {
  Fixture f;
  State s;
  s.last_updated = INT64_MIN;
  CHECK(f.manager.should_process(INT64_MAX, s));
  CHECK(f.log.last().unsigned_integer("delta_seconds") == UINT64_MAX);
}

TEST_CASE("save_state writes readable JSON, mode 0644, and logs it", "[state]") {
  Fixture f;
  const test::UmaskGuard strict(077);  // the mode is exact whatever the umask
  State s = valid_state();
  s.oracle_name = "switchboard";
  s.last_updated = 1700001234;
  s.last_protocol_count = 10;
  s.last_tvs = 123.45;
  REQUIRE(f.manager.save_state(s).ok());

  std::string expected;
  REQUIRE(atomic_state::format_json(json::value_from(s), expected).ok());
  CHECK(test::read_file(f.state_path()) == expected);
  CHECK(test::mode_of(f.state_path()) == 0644u);
  CHECK(test::temp_files_in(f.dir.path()).empty());

  const test::Record r = f.log.last();
  CHECK(r.level == Level::info);
  CHECK(r.message == "state saved");
  CHECK(r.keys() == std::vector<std::string>{"timestamp", "protocol_count", "tvs"});
  CHECK(r.integer("timestamp") == 1700001234);
  CHECK(r.integer("protocol_count") == 10);
  CHECK(r.number("tvs") == 123.45);
}

TEST_CASE("save_state creates missing directories", "[state]") {
  test::TempDir root;
  test::CaptureSink log;
  const test::UmaskGuard usual(022);
  Manager m(root / "nested" / "state", log);
  REQUIRE(m.save_state(valid_state()).ok());
  CHECK(test::mode_of(root / "nested") == 0755u);
  CHECK(test::mode_of(root / "nested" / "state") == 0755u);
  auto back = m.load_state();
  REQUIRE(back.has_value());
  CHECK(*back == valid_state());
}

TEST_CASE("save_state round-trips every field exactly", "[state]") {
  State extremes;
  extremes.oracle_name = "Ünïcödé \"quoted\" \\ oracle\n";
  extremes.last_updated = INT64_MAX;
  extremes.last_updated_iso = atomic_state::to_rfc3339(INT64_MAX);
  extremes.last_protocol_count = INT64_MIN;
  extremes.last_tvs = 1e15;
  extremes.snapshot_count = 9007199254740993;  // not a double: must stay exact
  extremes.oldest_snapshot = -1;
  extremes.newest_snapshot = 4102444800;
  const double tvs_values[] = {
      0.1, 1e15, 1500000000.0, 123456789.123456789, 5e-324, 1.7976931348623157e308, -0.0, 0.0};
  for (double tvs : tvs_values) {
    CAPTURE(tvs);
    Fixture f;
    extremes.last_tvs = tvs;
    REQUIRE(f.manager.save_state(extremes).ok());
    auto back = f.manager.load_state();
    REQUIRE(back.has_value());
    CHECK(*back == extremes);
    CHECK(std::signbit(back->last_tvs) == std::signbit(tvs));
  }
}

TEST_CASE("a state JSON cannot hold is refused and nothing is written", "[state]") {
  struct Row {
    const char* why;
    std::function<void(State&)> spoil;
    const char* detail;
  };
  const Row rows[] = {
      {"a NaN TVS", [](State& s) { s.last_tvs = std::nan(""); },
       "last_tvs: not a finite number (NaN)"},
      {"an infinite TVS", [](State& s) { s.last_tvs = HUGE_VAL; },
       "last_tvs: not a finite number (infinity)"},
      {"a negative infinite TVS", [](State& s) { s.last_tvs = -HUGE_VAL; },
       "last_tvs: not a finite number (infinity)"},
      {"an oracle name that is not UTF-8", [](State& s) { s.oracle_name = "bad\xff"; },
       "oracle_name: not valid UTF-8"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.why);
    Fixture f;
    REQUIRE(f.manager.save_state(valid_state()).ok());
    const std::string before = test::read_file(f.state_path());
    f.log.clear();

    State bad = valid_state();
    row.spoil(bad);
    const atomic_state::Status s = f.manager.save_state(bad);
    CHECK(s.step() == Step::serialize);
    CHECK(s.code() == std::errc::invalid_argument);
    CHECK(s.message().rfind("write state file: serialize " + f.state_path(), 0) == 0);
    CHECK(s.message().find(row.detail) != std::string::npos);
    CHECK(test::read_file(f.state_path()) == before);
    CHECK(test::names_in(f.dir.path()).size() == 1);
    CHECK(f.log.size() == 0);
  }
}

TEST_CASE("a failed save says so and is not logged as saved", "[state]") {
  test::TempDir root;
  test::write_plain(root / "file", "x");
  test::CaptureSink log;
  Manager m(root / "file", log);  // the output "directory" is a regular file
  const atomic_state::Status s = m.save_state(valid_state());
  CHECK_FALSE(s.ok());
  CHECK(s.code() == std::errc::not_a_directory);
  CHECK(s.message().rfind("write state file: ", 0) == 0);
  CHECK(log.with("state saved").empty());
}

TEST_CASE("update_state builds the next state from a run's figures", "[state]") {
  Fixture f;
  const std::vector<std::int64_t> snapshots = {1700007200, 1699000000, 1700000000};
  const State s = atomic_state::update_state("switchboard", 1700001234, 10, 123.45, snapshots);
  CHECK(s.oracle_name == "switchboard");
  CHECK(s.last_updated == 1700001234);
  CHECK(s.last_updated_iso == "2023-11-14T22:33:54Z");
  CHECK(s.last_protocol_count == 10);
  CHECK(s.last_tvs == 123.45);
  CHECK(s.snapshot_count == 3);
  CHECK(s.oldest_snapshot == 1699000000);  // the earliest, whatever the order
  CHECK(s.newest_snapshot == 1700007200);

  const State none = atomic_state::update_state("switchboard", 1700000000, 0, 0);
  CHECK(none.snapshot_count == 0);
  CHECK(none.oldest_snapshot == 0);
  CHECK(none.newest_snapshot == 0);
  CHECK(none.last_updated_iso == "2023-11-14T22:13:20Z");

  const State listed = atomic_state::update_state("x", 1, 2, 3.0, {5, 4});
  CHECK(listed.snapshot_count == 2);
  CHECK(listed.oldest_snapshot == 4);
  CHECK(f.log.size() == 0);  // building a state logs nothing
}

TEST_CASE("load, decide, save over several runs: each run sees the last", "[state]") {
  Fixture f;
  std::int64_t ts = 1700000000;
  for (int run = 0; run < 5; ++run, ts += 3600) {
    CAPTURE(run);
    auto state = f.manager.load_state();
    REQUIRE(state.has_value());
    CHECK(state->last_updated == (run == 0 ? 0 : ts - 3600));
    REQUIRE(f.manager.should_process(ts, *state));
    if (run > 0) CHECK_FALSE(f.manager.should_process(state->last_updated, *state));
    const State next = atomic_state::update_state("switchboard", ts, 40 + run, 1e9 + run, {ts});
    REQUIRE(f.manager.save_state(next).ok());
    auto again = f.manager.load_state();
    REQUIRE(again.has_value());
    CHECK(*again == next);
    CHECK_FALSE(f.manager.should_process(ts, *again));
  }
  CHECK(f.log.with("state saved").size() == 5);
  CHECK(f.log.with("no state file found, treating as first run").size() == 1);
}

TEST_CASE("a logger by value, and one logger shared by reference", "[state]") {
  test::TempDir dir;
  std::ostringstream out;
  atomic_state::StateManager<atomic_state::LogfmtSink> owned(
      dir.path(), atomic_state::LogfmtSink(out, Level::info));
  State s = valid_state();
  REQUIRE(owned.save_state(s).ok());
  CHECK(out.str() ==
        "level=info msg=\"state saved\" timestamp=1700000000 protocol_count=50 "
        "tvs=1500000000.0\n");

  test::CaptureSink shared;
  Manager a(dir / "a", shared), b(dir / "b", shared);
  REQUIRE(a.save_state(s).ok());
  REQUIRE(b.save_state(s).ok());
  CHECK(shared.with("state saved").size() == 2);
  CHECK(&a.sink() == &shared);

  atomic_state::StateManager<> silent(dir / "c");  // NullSink by default
  REQUIRE(silent.save_state(s).ok());
}

TEST_CASE("a logger that throws cannot undo a save", "[state]") {
  struct Throwing {
    void log(Level, std::string_view, atomic_state::Fields) { throw std::runtime_error("x"); }
  };
  test::TempDir dir;
  atomic_state::StateManager<Throwing> m(dir.path());
  CHECK(m.save_state(valid_state()).ok());
  auto back = m.load_state();
  REQUIRE(back.has_value());
  CHECK(*back == valid_state());
}

TEST_CASE("a state type of one's own: saved, loaded, compared, quarantined", "[state]") {
  test::TempDir dir;
  test::CaptureSink log;
  atomic_state::StateManager<test::CaptureSink&, feeds::FeedState> m(dir.path(), log);

  auto first = m.load_state();
  REQUIRE(first.has_value());
  CHECK(m.should_process(1732406400, *first));  // updated_at == 0: a first run

  feeds::FeedState s{"SOL/USD", 7, 1732406400, 236.41, {235.5, 0.1, 236.41}};
  REQUIRE(m.save_state(s).ok());
  CHECK(log.last().message == "state saved");
  CHECK(log.last().integer("timestamp") == 1732406400);

  auto back = m.load_state();
  REQUIRE(back.has_value());
  CHECK(*back == s);
  CHECK(log.last().integer("last_updated") == 1732406400);
  CHECK_FALSE(m.should_process(1732406400, *back));
  CHECK(m.should_process(1732406460, *back));

  s.price = NAN;  // refused like a State's
  CHECK(m.save_state(s).step() == Step::serialize);

  test::write_plain(m.state_file(), R"({"feed": 5})");
  auto wrong = m.load_state();
  REQUIRE(wrong.has_value());
  CHECK(*wrong == feeds::FeedState{});
  CHECK(log.last().message == "state file corrupted, treating as first run");
}

namespace own_names {
// Field tables whose names could not be read back: a name twice (the
// file would hold the key twice, and the load gives both members the
// last one's value), a name that is not UTF-8 (every load would call the
// file corrupt).
struct TwiceNamed {
  std::int64_t cur = 42;
  std::int64_t other = 7;
  std::int64_t last_updated = 0;
  static constexpr auto state_fields() noexcept {
    return std::make_tuple(atomic_state::state_field("k", &TwiceNamed::cur),
                           atomic_state::state_field("last_updated", &TwiceNamed::last_updated),
                           atomic_state::state_field("k", &TwiceNamed::other));
  }
};
struct NotUtf8Named {
  std::int64_t cur = 42;
  std::int64_t last_updated = 0;
  static constexpr auto state_fields() noexcept {
    return std::make_tuple(atomic_state::state_field("cur\xff", &NotUtf8Named::cur),
                           atomic_state::state_field("last_updated", &NotUtf8Named::last_updated));
  }
};

// Saves one: refused before anything is written, the detail naming the key.
template <class T>
void check_refused(const char* detail) {
  test::TempDir dir;
  test::CaptureSink log;
  atomic_state::StateManager<test::CaptureSink&, T> manager(dir.path(), log);
  const atomic_state::Status saved = manager.save_state(T{});
  CHECK(saved.step() == Step::serialize);
  CHECK(saved.code() == std::errc::invalid_argument);
  CHECK(saved.detail() == detail);
  CHECK(test::names_in(dir.path()).empty());
  CHECK(log.with("state saved").empty());
}
}  // namespace own_names

TEST_CASE("a field table's name that would not read back is refused at save, never written",
          "[state]") {
  struct Row {
    const char* behaviour;
    void (*check)(const char*);
    const char* detail;
  };
  const Row rows[] = {
      {"a name given to two members", own_names::check_refused<own_names::TwiceNamed>,
       "k: the name is another field's too; each key of the table must be its own"},
      {"a name that is not UTF-8", own_names::check_refused<own_names::NotUtf8Named>,
       "cur\xff: the name is not valid UTF-8"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    row.check(row.detail);
  }
}

TEST_CASE("a state file that is a symlink is read through; a save replaces the link", "[state]") {
  Fixture f;
  test::write_plain(f.dir / "elsewhere.json", kValidState);
  test::fs::create_symlink(f.dir / "elsewhere.json", f.state_path());
  auto loaded = f.manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(*loaded == valid_state());

  State next = valid_state();
  next.last_updated += 60;
  REQUIRE(f.manager.save_state(next).ok());
  // As documented for AtomicWriter: the link is replaced by a regular file,
  // and what it pointed to is left as it was.
  CHECK_FALSE(test::fs::is_symlink(f.state_path()));
  CHECK(test::read_file(f.dir / "elsewhere.json") == kValidState);
  auto back = f.manager.load_state();
  REQUIRE(back.has_value());
  CHECK(*back == next);
}

// --------------------------------------------------- paths that lead nowhere --

TEST_CASE("a state directory behind a symlink to nothing is an error, and nothing is created",
          "[state]") {
  struct Row {
    const char* layout;
    const char* output_dir;  // under the test directory; "link" -> "card/collector"
  };
  // /var/lib/collector -> /mnt/sd/collector, the card not mounted.
  const Row rows[] = {{"the directory itself is the link", "link"},
                      {"a level above it is the link", "link/sub"},
                      {"the link, with a trailing slash", "link/"}};
  for (const Row& row : rows) {
    CAPTURE(row.layout);
    test::TempDir root;
    test::fs::create_directory(root / "card");  // the mount point; the card is missing
    test::fs::create_symlink(root / "card" / "collector", root / "link");
    test::CaptureSink log;
    Manager m(root.path().string() + "/" + row.output_dir, log);
    const auto before = test::names_in(root / "card");

    auto loaded = m.load_state();
    REQUIRE_FALSE(loaded.has_value());
    CHECK(loaded.status().step() == Step::open_directory);
    CHECK(loaded.status().code() == std::errc::no_such_file_or_directory);
    CHECK(loaded.status().path() == (root / "link").string());
    CHECK(loaded.status().message().find("a symlink to nothing") != std::string::npos);
    CHECK(log.size() == 0);  // not a first run

    CHECK_FALSE(m.save_state(valid_state()).ok());
    CHECK(test::names_in(root / "card") == before);  // nothing created on the wrong disk
    CHECK_FALSE(test::fs::exists(root / "card" / "collector"));
  }
}

TEST_CASE("a missing directory with no link on its way is a plain first run", "[state]") {
  test::TempDir root;
  test::fs::create_directory(root / "real");
  test::fs::create_symlink(root / "real", root / "link");  // a link that leads somewhere
  test::CaptureSink log;
  Manager m(root / "link" / "not" / "yet", log);
  auto loaded = m.load_state();
  REQUIRE(loaded.has_value());
  CHECK(log.last().message == "no state file found, treating as first run");
}

TEST_CASE("a NUL byte in the output directory is refused by every entry point", "[state]") {
  test::TempDir root;
  test::fs::create_directory(root / "d");
  test::write_plain(root / "d" / ".tmp-Ab12Cd", "a stale-looking file that must survive");
  const std::string with_nul = (root / "d").string() + std::string("\0/elsewhere", 11);
  test::CaptureSink log;
  Manager m(with_nul, log);

  const auto loaded = m.load_state();
  const auto swept = m.remove_stale_temp_files();
  const auto saved = m.save_state(valid_state());
  atomic_state::AtomicWriter<> writer;
  const auto swept_directly = writer.remove_stale_temp_files(with_nul);
  for (const atomic_state::Status& s :
       {loaded.status(), swept.status(), saved, swept_directly.status()}) {
    CHECK(s.step() == Step::check_path);
    CHECK(s.code() == std::errc::invalid_argument);
    CHECK(s.message().find("path contains a NUL byte") != std::string::npos);
  }
  CHECK(test::read_file(root / "d" / ".tmp-Ab12Cd") == "a stale-looking file that must survive");
  CHECK(test::names_in(root / "d").size() == 1);
}

// ------------------------------------------------------ custom state types --

namespace {

// A price feed whose conversions use the usual Boost.JSON idioms, and that
// keeps the items it does not know (values that must outlive the parse).
struct Quote {
  double price = 0;
  std::int64_t at = 0;
  std::vector<json::value> unknown;
  std::optional<json::value> note;
};

void tag_invoke(json::value_from_tag, json::value& jv, const Quote& q) {
  json::object& o = jv.emplace_object();
  o["price"] = q.price;
  o["at"] = q.at;
  json::array& rest = o["unknown"].emplace_array();
  for (const json::value& v : q.unknown) rest.push_back(v);
  if (q.note) o["note"] = *q.note;
}

// value_to, which throws: the idiom of most users' conversions.
Quote tag_invoke(json::value_to_tag<Quote>, const json::value& jv) {
  const json::object& o = jv.as_object();
  Quote q;
  q.price = o.at("price").as_double();
  q.at = o.at("at").as_int64();
  for (const json::value& v : o.at("unknown").as_array()) q.unknown.push_back(v);
  if (const json::value* note = o.if_contains("note")) q.note = *note;
  return q;
}

}  // namespace

template <>
struct atomic_state::StateTraits<Quote> {
  static std::int64_t last_updated(const Quote& q) noexcept { return q.at; }
};

TEST_CASE("a round double reads back as a double, in a custom state as in JSON", "[state]") {
  test::TempDir dir;
  test::CaptureSink log;
  atomic_state::StateManager<test::CaptureSink&, Quote> m(dir.path(), log);
  for (const double price : {2.0, 0.0, -3.0, 1e20, 2.5, 1e300}) {
    CAPTURE(price);
    Quote q;
    q.price = price;
    q.at = 1700000000;
    REQUIRE(m.save_state(q).ok());
    auto back = m.load_state();
    REQUIRE(back.has_value());
    CHECK(back->price == price);
    CHECK(log.with("state file corrupted, treating as first run").empty());
  }
}

TEST_CASE("Boost.JSON values a custom state keeps stay valid after load_state", "[state]") {
  // Run under AddressSanitizer by the test command: a value left pointing
  // into the parser's memory is a use after free here.
  test::TempDir dir;
  atomic_state::StateManager<atomic_state::NullSink, Quote> m(dir.path());
  Quote q;
  q.price = 236.41;
  q.at = 1700000000;
  q.unknown = {json::value("kept for a later version"), json::value({1, 2, 3}),
               json::value({{"nested", std::string(600, 'x')}})};
  q.note = json::value(std::string(5000, 'n'));
  REQUIRE(m.save_state(q).ok());
  Quote back;
  {
    auto loaded = m.load_state();
    REQUIRE(loaded.has_value());
    back = std::move(*loaded);
  }
  std::vector<char> churn(1 << 16, 'z');  // reuse of freed memory would show
  REQUIRE(back.unknown.size() == 3);
  CHECK(back.unknown[0].as_string() == "kept for a later version");
  CHECK(back.unknown[1].as_array().size() == 3);
  CHECK(back.unknown[2].as_object().at("nested").as_string().size() == 600);
  REQUIRE(back.note.has_value());
  CHECK(back.note->as_string().size() == 5000);
  CHECK(churn.front() == 'z');
}

TEST_CASE("a custom state's decoding failure names its cause in the warning", "[state]") {
  struct Row {
    const char* why;
    const char* text;
    const char* error;  // part of the warning's error field
  };
  const Row rows[] = {
      {"a conversion that throws", R"({"price": "high", "at": 1, "unknown": []})",
       "the state type's conversion from JSON threw: "},
      {"a key the conversion needs is missing", R"({"price": 2.0, "unknown": []})",
       "the state type's conversion from JSON threw: "},
  };
  for (const Row& row : rows) {
    CAPTURE(row.why);
    test::TempDir dir;
    test::CaptureSink log;
    atomic_state::StateManager<test::CaptureSink&, Quote> m(dir.path(), log);
    test::write_plain(m.state_file(), row.text);
    auto loaded = m.load_state();
    REQUIRE(loaded.has_value());
    const auto warned = log.with("state file corrupted, treating as first run");
    REQUIRE(warned.size() == 1);
    const std::string error = warned[0].text("error");
    CAPTURE(error);
    CHECK(error.rfind(row.error, 0) == 0);
    CHECK(error.size() > std::string(row.error).size());  // the exception's own words follow
  }

  // A try_value_to conversion: its error code's words.
  test::TempDir dir;
  test::CaptureSink log;
  atomic_state::StateManager<test::CaptureSink&, feeds::FeedState> feed(dir.path(), log);
  test::write_plain(feed.state_file(), R"({"feed": "SOL/USD", "price": "high"})");
  REQUIRE(feed.load_state().has_value());
  CHECK(log.last().text("error") == "the state type's conversion from JSON failed: " +
                                        json::make_error_code(json::error::not_number).message());
}

TEST_CASE("update_state takes snapshot times of any integer type, beyond int64 saturated",
          "[state]") {
  Fixture f;
  const std::vector<std::uint64_t> huge = {UINT64_MAX, 1700000000, 9223372036854775808u};
  const State s = atomic_state::update_state("x", 1700000000, 1, 1.0, huge);
  CHECK(s.snapshot_count == 3);
  CHECK(s.oldest_snapshot == 1700000000);
  CHECK(s.newest_snapshot == INT64_MAX);
  const std::vector<std::int16_t> small = {-5, 7};
  const State t = atomic_state::update_state("x", 1, 1, 1.0, small);
  CHECK(t.oldest_snapshot == -5);
  CHECK(t.newest_snapshot == 7);
}
