// StateOptions::keep_previous: the state a save replaces kept as .prev (a
// hard link), never a corrupt one; a .prev without a state file is a first
// run, with a warning; a filesystem without hard links fails the save,
// saying why.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/go_service_state.hpp"
#include "support/names.hpp"

using Manager = as::StateManager<test::CaptureSink&>;

namespace {

ino_t inode_of(const test::fs::path& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

}  // namespace

TEST_CASE("keep_previous keeps the replaced state as .prev, a hard link", "[previous]") {
  test::TempDir dir;
  test::CaptureSink log;
  StateOptions options;
  options.keep_previous = true;
  Manager manager(dir.path(), log, options);
  REQUIRE(manager.save_state(test::state_at(100)).ok());
  CHECK_FALSE(present(dir / "state.json.prev"));  // nothing to keep yet
  for (std::int64_t t : {200, 300}) {
    const std::string before = read_file(dir / "state.json");
    const ino_t inode = inode_of(dir / "state.json");
    REQUIRE(manager.save_state(test::state_at(t)).ok());
    CHECK(read_file(dir / "state.json.prev") == before);
    CHECK(inode_of(dir / "state.json.prev") == inode);  // the same file: nothing copied
    CHECK(test::mode_of(dir / "state.json.prev") == 0644);
  }
  std::vector<std::string> names = test::names_in(dir.path());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"state.json", "state.json.prev"});

  // A previous state that is already this state's file is not kept again.
  test::FaultFs fs;
  as::StateManager<test::CaptureSink&, State, as::FullSync, test::FaultFs&> same(dir.path(), log,
                                                                                 fs, options);
  ::unlink((dir / "state.json.prev").c_str());
  ::link((dir / "state.json").c_str(), (dir / "state.json.prev").c_str());
  REQUIRE(same.save_state(test::state_at(400)).ok());
  CHECK(fs.count(test::Op::link) == 0);
  CHECK(read_file(dir / "state.json.prev") == read_file(dir / "state.json.prev"));
  CHECK(as::parse_json(read_file(dir / "state.json.prev")).value().at("last_updated") == 300);
}

TEST_CASE("a corrupt state never becomes the previous one", "[previous]") {
  test::TempDir dir;
  test::CaptureSink log;
  StateOptions options;
  options.keep_previous = true;
  Manager manager(dir.path(), log, options);
  REQUIRE(manager.save_state(test::state_at(100)).ok());
  REQUIRE(manager.save_state(test::state_at(200)).ok());  // state 200, previous 100
  test::write_plain(dir / "state.json", "{corrupt");      // in place: the same file
  const auto loaded = manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(loaded->origin == LoadOrigin::previous);
  CHECK(loaded->last_updated == 100);
  REQUIRE(manager.save_state(test::state_at(300)).ok());
  CHECK(as::parse_json(read_file(dir / "state.json.prev")).value().at("last_updated") == 100);
  CHECK(as::parse_json(read_file(dir / "state.json")).value().at("last_updated") == 300);
  // From then on the pairs move on as usual.
  REQUIRE(manager.save_state(test::state_at(400)).ok());
  CHECK(as::parse_json(read_file(dir / "state.json.prev")).value().at("last_updated") == 300);
}

TEST_CASE("a previous state without a state file is a first run, with a warning", "[previous]") {
  test::TempDir dir;
  test::write_plain(dir / "state.json.prev", R"({"last_updated": 100})");
  for (const bool keep_previous : {true, false}) {
    CAPTURE(keep_previous);
    test::CaptureSink log;
    StateOptions options;
    options.keep_previous = keep_previous;
    Manager manager(dir.path(), log, options);
    const auto loaded = manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(loaded->origin == LoadOrigin::first_run);
    CHECK(loaded->state() == State{});
    REQUIRE(log.size() == 1);
    if (keep_previous) {
      CHECK(log.last().level == Level::warn);
      CHECK(log.last().message ==
            "no state file found but a previous one exists, treating as first run");
      CHECK(log.last().text("previous") == (dir / "state.json.prev").string());
    } else {
      CHECK(log.last().level == Level::info);
      CHECK(log.last().message == "no state file found, treating as first run");
    }
  }
}

TEST_CASE("a filesystem without hard links fails a keep_previous save, saying why", "[previous]") {
  test::TempDir dir;
  test::CaptureSink log;
  test::FaultFs fs;
  StateOptions options;
  options.keep_previous = true;
  as::StateManager<test::CaptureSink&, State, as::FullSync, test::FaultFs&> manager(dir.path(), log,
                                                                                    fs, options);
  REQUIRE(manager.save_state(test::state_at(100)).ok());
  const std::string before = read_file(dir / "state.json");
  fs.faults = {test::Fault{test::Op::link, 1, EPERM, true}};
  const as::Status saved = manager.save_state(test::state_at(200));
  CHECK(saved.step() == Step::keep_previous);
  CHECK(saved.code().value() == EPERM);
  CHECK(saved.message() == "write state file: keep previous " + (dir / "state.json").string() +
                               " to " + (dir / "state.json.prev").string() +
                               ": Operation not permitted (StateOptions::keep_previous needs a "
                               "filesystem with hard links)");
  CHECK(read_file(dir / "state.json") == before);
  CHECK(test::names_in(dir.path()) == std::vector<std::string>{"state.json"});
  CHECK(log.with("state saved").size() == 1);
}

TEST_CASE("a corrupt file is known by its content, not its inode, which a later state may reuse",
          "[previous]") {
  // A load found state.json corrupt; its inode, once freed, may hold a
  // later valid state (ext4 reuses inode numbers at once). Here the later
  // state is written into the same inode, which is what reuse amounts to.
  struct Row {
    const char* behaviour;
    const char* later;         // what the corrupt file's inode holds at the save
    std::int64_t previous_at;  // the .prev the save leaves
  };
  const Row rows[] = {
      {"a valid later state in the inode is kept", R"({"last_updated": 250})", 250},
      {"the corrupt bytes still there are not kept", "{corrupt", 100},
      {"other corrupt bytes are not kept either", "{\"last_updated\": true}", 100},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir;
    test::CaptureSink log;
    StateOptions options;
    options.keep_previous = true;
    Manager manager(dir.path(), log, options);
    REQUIRE(manager.save_state(test::state_at(100)).ok());
    REQUIRE(manager.save_state(test::state_at(200)).ok());  // state 200, previous 100
    test::write_plain(dir / "state.json", "{corrupt");      // in place: the same inode
    const auto loaded = manager.load_state();
    REQUIRE(loaded.has_value());
    REQUIRE(loaded->origin == LoadOrigin::previous);
    const ino_t inode = inode_of(dir / "state.json");
    test::write_plain(dir / "state.json", row.later);  // the same inode again
    REQUIRE(inode_of(dir / "state.json") == inode);
    REQUIRE(manager.save_state(test::state_at(300)).ok());
    CHECK(as::parse_json(read_file(dir / "state.json.prev")).value().at("last_updated") ==
          row.previous_at);
    CHECK(as::parse_json(read_file(dir / "state.json")).value().at("last_updated") == 300);
  }
}

TEST_CASE(
    "a state file of another user that the kernel will not link is saved without .prev, "
    "with a warning",
    "[previous]") {
  // fs.protected_hardlinks: link() of a file one does not own is EPERM
  // (after one run under sudo, say). Only that save goes without .prev:
  // the file it writes is the caller's own, and the next save links it.
  struct Row {
    const char* behaviour;
    bool foreign;  // the state file belongs to uid 65534
    bool saved;
  };
  const Row rows[] = {
      {"another user's state file: saved, warned", true, true},
      {"one's own state file: no hard links here, the save fails", false, false},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir;
    test::CaptureSink log;
    test::FaultFs fs;
    StateOptions options;
    options.keep_previous = true;
    as::StateManager<test::CaptureSink&, State, as::FullSync, test::FaultFs&> manager(
        dir.path(), log, fs, options);
    REQUIRE(manager.save_state(test::state_at(100)).ok());
    if (row.foreign) REQUIRE(::chown((dir / "state.json").c_str(), 65534, 65534) == 0);
    fs.faults = {test::Fault{test::Op::link, 1, EPERM, false}};
    const as::Status saved = manager.save_state(test::state_at(200));
    CHECK(saved.ok() == row.saved);
    CHECK(as::parse_json(read_file(dir / "state.json")).value().at("last_updated") ==
          (row.saved ? 200 : 100));
    CHECK(test::names_in(dir.path()) == std::vector<std::string>{"state.json"});
    const auto warned = log.with("previous state not kept");
    if (row.saved) {
      REQUIRE(warned.size() == 1);
      CHECK(warned[0].level == Level::warn);
      CHECK(warned[0].text("path") == (dir / "state.json").string());
      CHECK(warned[0].text("previous") == (dir / "state.json.prev").string());
      CHECK(warned[0].text("error") ==
            "keep previous " + (dir / "state.json").string() + " to " +
                (dir / "state.json.prev").string() +
                ": Operation not permitted (the state file belongs to uid 65534, and the kernel "
                "links only its owner's files (fs.protected_hardlinks))");
      // The next save's state file is the caller's own: kept again.
      REQUIRE(manager.save_state(test::state_at(300)).ok());
      CHECK(as::parse_json(read_file(dir / "state.json.prev")).value().at("last_updated") == 200);
    } else {
      CHECK(warned.empty());
      CHECK(saved.step() == Step::keep_previous);
      CHECK(saved.message().find("(StateOptions::keep_previous needs a filesystem with hard "
                                 "links)") != std::string::npos);
    }
  }
}

TEST_CASE(
    "a .prev that cannot be renewed is removed, never left older than the state before, and the "
    "warning says so",
    "[previous]") {
  // .prev promises the state a save replaced. When the state file cannot
  // be linked (another user's, fs.protected_hardlinks), an older .prev
  // kept by an earlier save would be two states back: a load of a corrupt
  // state would then go back further than promised, saying "previous".
  // It is removed (the removal synced before the state is replaced); a
  // .prev that cannot be removed is left, and the warning says it is older.
  struct Row {
    const char* behaviour;
    std::vector<test::Fault> faults;  // after the link's EPERM
    bool removed;
    const char* says;  // the warning's older_previous
  };
  const Row rows[] = {
      {"the older .prev removed", {}, true, "removed"},
      {"the older .prev cannot be removed: left, and the warning says it is older",
       {test::Fault{test::Op::unlink, 1, EACCES, false}},
       false,
       "not removed, so it is older than the state before this save: Permission denied"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir;
    test::CaptureSink log;
    test::FaultFs fs;
    StateOptions options;
    options.keep_previous = true;
    as::StateManager<test::CaptureSink&, State, as::FullSync, test::FaultFs&> manager(
        dir.path(), log, fs, options);
    REQUIRE(manager.save_state(test::state_at(100)).ok());
    REQUIRE(manager.save_state(test::state_at(200)).ok());              // .prev: 100
    REQUIRE(::chown((dir / "state.json").c_str(), 65534, 65534) == 0);  // 200, another user's
    // Each fault on this save's first call of its op (faults count calls
    // from the policy's first).
    fs.faults = {test::Fault{test::Op::link, fs.count(test::Op::link) + 1, EPERM, false}};
    for (test::Fault f : row.faults) {
      f.occurrence += fs.count(f.op);
      fs.faults.push_back(f);
    }
    REQUIRE(manager.save_state(test::state_at(300)).ok());
    CHECK(as::parse_json(read_file(dir / "state.json")).value().at("last_updated") == 300);
    const auto warned = log.with("previous state not kept");
    REQUIRE(warned.size() == 1);
    REQUIRE(warned[0].has("older_previous"));
    CHECK(warned[0].text("older_previous").find(row.says) == 0);
    if (row.removed) {
      CHECK(test::names_in(dir.path()) == std::vector<std::string>{"state.json"});
      // A corrupt state now has no previous to fall back on: recovered,
      // never the state of two saves ago passed off as the previous one.
      test::write_plain(dir / "state.json", "{corrupt");
      const auto loaded = manager.load_state();
      REQUIRE(loaded.has_value());
      CHECK(loaded->origin == LoadOrigin::recovered);
    } else {
      CHECK(present(dir / "state.json.prev"));
      // The next save's state file is the caller's own: kept again.
      fs.faults.clear();
      REQUIRE(manager.save_state(test::state_at(400)).ok());
      CHECK(as::parse_json(read_file(dir / "state.json.prev")).value().at("last_updated") == 300);
    }
  }
}
