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
