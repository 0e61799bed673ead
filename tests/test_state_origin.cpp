// Where a loaded state came from (LoadOrigin): a first run, the saved
// state, the previous state, a corrupt file kept aside; and the corrupt
// copies bounded by StateOptions::corrupt_copies, the oldest removed, the
// one just made kept.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/go_service_state.hpp"
#include "support/names.hpp"

using Manager = as::StateManager<test::CaptureSink&>;

TEST_CASE("load_state says where the state came from", "[origin]") {
  enum class Planted { no_directory, nothing, valid, corrupt };
  enum class Prev { none, valid, corrupt };
  struct Row {
    const char* behaviour;
    Planted planted;
    Prev prev;
    bool keep_previous;
    OnCorrupt on_corrupt;
    std::optional<LoadOrigin> origin;  // none: an error
    std::int64_t last_updated;
    const char* warning;
  };
  const Row rows[] = {
      {"no directory: a first run", Planted::no_directory, Prev::none, false, OnCorrupt::recover,
       LoadOrigin::first_run, 0, nullptr},
      {"no state file: a first run", Planted::nothing, Prev::none, false, OnCorrupt::recover,
       LoadOrigin::first_run, 0, nullptr},
      {"a valid file: saved", Planted::valid, Prev::none, false, OnCorrupt::recover,
       LoadOrigin::saved, 300, nullptr},
      {"a corrupt file, recover: recovered", Planted::corrupt, Prev::none, false,
       OnCorrupt::recover, LoadOrigin::recovered, 0, "state file corrupted, treating as first run"},
      {"a corrupt file, fail: an error", Planted::corrupt, Prev::none, false, OnCorrupt::fail,
       std::nullopt, 0, nullptr},
      {"a corrupt file and a valid previous: previous", Planted::corrupt, Prev::valid, true,
       OnCorrupt::recover, LoadOrigin::previous, 200,
       "state file corrupted, loading the previous state"},
      {"the previous is used before on_corrupt fails", Planted::corrupt, Prev::valid, true,
       OnCorrupt::fail, LoadOrigin::previous, 200,
       "state file corrupted, loading the previous state"},
      {"a previous is not read without keep_previous", Planted::corrupt, Prev::valid, false,
       OnCorrupt::recover, LoadOrigin::recovered, 0, "state file corrupted, treating as first run"},
      {"a corrupt previous too: recovered", Planted::corrupt, Prev::corrupt, true,
       OnCorrupt::recover, LoadOrigin::recovered, 0, "state file corrupted, treating as first run"},
      {"a corrupt previous too, fail: an error", Planted::corrupt, Prev::corrupt, true,
       OnCorrupt::fail, std::nullopt, 0, nullptr},
      {"no previous, fail: an error", Planted::corrupt, Prev::none, true, OnCorrupt::fail,
       std::nullopt, 0, nullptr},
      {"a valid file ignores the previous", Planted::valid, Prev::valid, true, OnCorrupt::recover,
       LoadOrigin::saved, 300, nullptr},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir root;
    const test::fs::path dir = root / "state";
    if (row.planted != Planted::no_directory) test::fs::create_directory(dir);
    if (row.planted == Planted::valid) {
      std::string text;
      REQUIRE(as::format_json(boost::json::value_from(test::state_at(300)), text).ok());
      test::write_plain(dir / "state.json", text);
    }
    if (row.planted == Planted::corrupt) test::write_plain(dir / "state.json", "{corrupt");
    if (row.prev == Prev::valid) {
      std::string text;
      REQUIRE(as::format_json(boost::json::value_from(test::state_at(200)), text).ok());
      test::write_plain(dir / "state.json.prev", text);
    }
    if (row.prev == Prev::corrupt) test::write_plain(dir / "state.json.prev", "[");
    if (present(dir / "state.json")) test::set_mtime(dir / "state.json", kStamp);
    const std::vector<std::string> before =
        row.planted == Planted::no_directory ? std::vector<std::string>{} : test::names_in(dir);

    test::CaptureSink log;
    StateOptions options;
    options.keep_previous = row.keep_previous;
    options.on_corrupt = row.on_corrupt;
    Manager manager(dir, log, options);
    const auto loaded = manager.load_state();
    if (!row.origin) {
      REQUIRE_FALSE(loaded.has_value());
      CHECK(loaded.status().step() == Step::parse);
      CHECK(loaded.status().code() == std::errc::bad_message);
      CHECK(loaded.status().message().find("on_corrupt is fail") != std::string::npos);
      CHECK(loaded.status().detail() == "syntax error at byte 1");
      CHECK(read_file(dir / "state.json") == "{corrupt");
      CHECK(test::names_in(dir) == before);  // nothing touched, no copy
      CHECK(log.with("state file corrupted, treating as first run").empty());
      continue;
    }
    REQUIRE(loaded.has_value());
    CHECK(loaded->origin == *row.origin);
    CHECK(loaded->last_updated == row.last_updated);
    const bool corrupt = row.planted == Planted::corrupt;
    const std::string copy = (dir / ("state.json.corrupt-" + std::to_string(kStamp))).string();
    CHECK(loaded->corrupt_copy == (corrupt ? copy : std::string()));
    if (corrupt) CHECK(read_file(copy) == "{corrupt");
    if (corrupt) CHECK(read_file(dir / "state.json") == "{corrupt");  // left for the next save
    if (row.warning == nullptr) {
      CHECK(log.with("state file corrupted, treating as first run").empty());
      continue;
    }
    const auto warned = log.with(row.warning);
    REQUIRE(warned.size() == 1);
    CHECK(warned[0].level == Level::warn);
    CHECK(warned[0].text("path") == (dir / "state.json").string());
    CHECK(warned[0].text("copied_to") == copy);
    if (*row.origin == LoadOrigin::previous)
      CHECK(warned[0].text("previous") == (dir / "state.json.prev").string());
    if (row.prev == Prev::corrupt) CHECK(log.with("previous state file corrupted too").size() == 1);
  }
}

TEST_CASE("a Result of Loaded converts to a Result of the state", "[origin]") {
  test::TempDir dir;
  test::CaptureSink log;
  Manager manager(dir.path(), log);
  REQUIRE(manager.save_state(test::state_at(500)).ok());
  const as::Result<State> sliced = manager.load_state();
  REQUIRE(sliced.has_value());
  CHECK(*sliced == test::state_at(500));
  StateOptions bad;
  bad.file_name = "";
  const as::Result<State> failed = Manager(dir.path(), log, bad).load_state();
  REQUIRE_FALSE(failed.has_value());
  CHECK(failed.status().step() == Step::check_path);
  CHECK(to_string(LoadOrigin::first_run) == "first run");
  CHECK(to_string(LoadOrigin::previous) == "previous");
}

TEST_CASE("corrupt copies are bounded: the oldest are removed, each logged", "[origin]") {
  test::TempDir dir;
  const auto copy = [&](const std::string& suffix) {
    return dir / ("state.json.corrupt-" + suffix);
  };
  // Copies left by earlier corruptions, another state's copies, and names
  // that only look alike: only the first are this state's copies.
  for (const char* suffix : {"-5", "100", "200", "200.1", "300"})
    test::write_plain(copy(suffix), "old");
  test::write_plain(dir / "other.json.corrupt-1", "theirs");
  test::write_plain(copy("notes"), "a user's file");
  test::write_plain(copy("7.x"), "a user's file");
  test::fs::create_directory(copy("50"));  // not a regular file: left, not counted
  test::write_plain(dir / "state.json", "{corrupt");
  test::set_mtime(dir / "state.json", kStamp);

  test::CaptureSink log;
  StateOptions options;
  options.corrupt_copies = 3;
  Manager manager(dir.path(), log, options);
  const auto loaded = manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(loaded->origin == LoadOrigin::recovered);
  std::vector<std::string> names = test::names_in(dir.path());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"other.json.corrupt-1", "state.json",
                                          "state.json.corrupt-" + std::to_string(kStamp),
                                          "state.json.corrupt-200.1", "state.json.corrupt-300",
                                          "state.json.corrupt-50", "state.json.corrupt-7.x",
                                          "state.json.corrupt-notes"});
  const auto removed = log.with("old corrupt copy removed");
  REQUIRE(removed.size() == 3);
  CHECK(removed[0].text("path") == copy("-5").string());  // negative stamps are the oldest
  CHECK(removed[1].text("path") == copy("100").string());
  CHECK(removed[2].text("path") == copy("200").string());  // 200 is older than 200.1
  for (const auto& r : removed) {
    CHECK(r.level == Level::info);
    CHECK(r.integer("kept") == 3);
  }
}

TEST_CASE("the copy just made is kept, however old its file", "[origin]") {
  test::TempDir dir;
  for (const char* stamp : {"400", "500", "600"})
    test::write_plain(dir / ("state.json.corrupt-" + std::string(stamp)), stamp);
  test::write_plain(dir / "state.json", "{corrupt");
  test::set_mtime(dir / "state.json", 100);  // older than every copy there
  test::CaptureSink log;
  StateOptions options;
  options.corrupt_copies = 3;
  Manager manager(dir.path(), log, options);
  const auto loaded = manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(loaded->corrupt_copy == (dir / "state.json.corrupt-100").string());
  CHECK(read_file(loaded->corrupt_copy) == "{corrupt");
  CHECK_FALSE(present(dir / "state.json.corrupt-400"));
  CHECK(present(dir / "state.json.corrupt-500"));
  CHECK(log.with("old corrupt copy removed").size() == 1);
}

TEST_CASE("corrupt_copies 0 keeps no copy", "[origin]") {
  test::TempDir dir;
  test::write_plain(dir / "state.json", "{corrupt");
  test::CaptureSink log;
  StateOptions options;
  options.corrupt_copies = 0;
  Manager manager(dir.path(), log, options);
  const auto loaded = manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(loaded->origin == LoadOrigin::recovered);
  CHECK(loaded->corrupt_copy.empty());
  CHECK(test::names_in(dir.path()) == std::vector<std::string>{"state.json"});
  const auto warned = log.with("state file corrupted, treating as first run");
  REQUIRE(warned.size() == 1);
  CHECK(warned[0].keys() == std::vector<std::string>{"path", "error"});
}

TEST_CASE("the newest corrupt copies are kept, even when their files share one time", "[origin]") {
  struct Row {
    const char* behaviour;
    std::size_t kept;
    int loads;
  };
  const Row rows[] = {
      {"two kept of five", 2, 5},
      {"three kept of eight", 3, 8},
      {"one kept of four", 1, 4},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir;
    test::CaptureSink log;
    StateOptions options;
    options.corrupt_copies = row.kept;
    for (int i = 1; i <= row.loads; ++i) {
      CAPTURE(i);
      test::write_plain(dir / "state.json", "{corrupt " + std::to_string(i));
      test::set_mtime(dir / "state.json", kStamp);  // every file of one second
      const auto loaded = Manager(dir.path(), log, options).load_state();
      REQUIRE(loaded.has_value());
      CHECK(read_file(loaded->corrupt_copy) == "{corrupt " + std::to_string(i));
      std::vector<std::string> kept;
      for (const std::string& name : test::names_in(dir.path()))
        if (name != "state.json") kept.push_back(read_file(dir / name));
      std::sort(kept.begin(), kept.end());
      std::vector<std::string> newest;
      for (int j = std::max(1, i - static_cast<int>(row.kept) + 1); j <= i; ++j)
        newest.push_back("{corrupt " + std::to_string(j));
      std::sort(newest.begin(), newest.end());
      CHECK(kept == newest);
    }
  }
}
