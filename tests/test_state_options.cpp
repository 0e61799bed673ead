// StateOptions: the defaults are the Go service's rules; options that
// cannot be used fail every call and touch nothing; file_name and
// file_mode name the state file and set its mode, so that two managers
// share a directory; a missing directory is an error, never a first run,
// when create_directory is false.
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

TEST_CASE("the default options are the Go service's rules", "[options]") {
  const StateOptions options;
  CHECK(options.file_name == "state.json");
  CHECK(options.file_mode == 0644);
  CHECK(options.create_directory);
  CHECK(options.on_corrupt == OnCorrupt::recover);
  CHECK(options.corrupt_copies == 5);
  CHECK_FALSE(options.keep_previous);
  CHECK(options.max_state_size == ATOMIC_STATE_MAX_STATE_SIZE);
  CHECK(options.check().ok());

  test::TempDir root;
  const test::UmaskGuard umask(022);
  test::CaptureSink log;
  Manager manager(root / "a" / "b", log);
  REQUIRE(manager.save_state(test::state_at(1700000000)).ok());
  CHECK(test::mode_of(root / "a" / "b" / "state.json") == 0644);
  CHECK(test::mode_of(root / "a") == 0755);
  CHECK(test::mode_of(root / "a" / "b") == 0755);
  CHECK(test::names_in(root / "a" / "b") == std::vector<std::string>{"state.json"});
}

TEST_CASE("options that cannot be used fail every call, touching nothing", "[options]") {
  struct Row {
    const char* behaviour;
    std::string file_name;
    unsigned file_mode;
    std::errc code;
    const char* words;
  };
  const Row rows[] = {
      {"an empty name", "", 0644, std::errc::invalid_argument, "file_name is empty"},
      {"a name with a slash", "sub/state.json", 0644, std::errc::invalid_argument, "holds a '/'"},
      {"an absolute path", "/etc/passwd", 0644, std::errc::invalid_argument, "holds a '/'"},
      {"a name with a NUL byte", std::string("state\0.json", 11), 0644, std::errc::invalid_argument,
       "NUL"},
      {"the directory itself", ".", 0644, std::errc::is_a_directory, "names a directory"},
      {"its parent", "..", 0644, std::errc::is_a_directory, "names a directory"},
      {"a temp file's name", ".tmp-Ab12Cd", 0644, std::errc::invalid_argument, "temp file"},
      {"a name starting like a temp file", ".tmp-state.json", 0644, std::errc::invalid_argument,
       "temp file"},
      {"a lock's name", "state.json.lock", 0644, std::errc::invalid_argument, "a lock"},
      {"a previous state's name", "state.json.prev", 0644, std::errc::invalid_argument,
       "previous state"},
      {"a corrupt copy's name", "state.json.corrupt-1764000000", 0644, std::errc::invalid_argument,
       "corrupt copy"},
      {"a name too long for the names made from it", std::string(ATOMIC_STATE_NAME_MAX - 39, 'n'),
       0644, std::errc::filename_too_long, "too long"},
      {"a mode above 07777", "state.json", 010000, std::errc::invalid_argument, "above 07777"},
      {"a mode of all ones", "state.json", ~0u, std::errc::invalid_argument, "above 07777"},
      {"a mode its owner cannot read", "state.json", 0200, std::errc::invalid_argument,
       "file_mode lacks the owner's read bit (0400)"},
      {"a mode only others can read", "state.json", 0044, std::errc::invalid_argument,
       "file_mode lacks the owner's read bit (0400)"},
      {"a mode of none", "state.json", 0, std::errc::invalid_argument,
       "file_mode lacks the owner's read bit (0400)"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir;
    test::CaptureSink log;
    StateOptions options;
    options.file_name = row.file_name;
    options.file_mode = row.file_mode;
    const as::Status checked = options.check();
    CHECK(checked.step() == Step::check_path);
    CHECK(checked.code() == row.code);
    CHECK(checked.message().find(row.words) != std::string::npos);

    Manager manager(dir.path(), log, options);
    const auto lock = manager.try_lock_run();
    const auto loaded = manager.load_state();
    const as::Status saved = manager.save_state(test::state_at(1700000000));
    const auto swept = manager.remove_stale_temp_files();
    for (const as::Status& s : {lock.status(), loaded.status(), saved, swept.status()}) {
      CHECK(s.step() == Step::check_path);
      CHECK(s.code() == row.code);
      CHECK(s.message().find(row.words) != std::string::npos);
    }
    CHECK(test::names_in(dir.path()).empty());
    CHECK(log.size() == 0);
  }
  // The longest name that is allowed works.
  test::TempDir dir;
  test::CaptureSink log;
  StateOptions longest;
  longest.file_name = std::string(ATOMIC_STATE_NAME_MAX - 40, 'n');
  Manager manager(dir.path(), log, longest);
  CHECK(manager.save_state(test::state_at(1700000000)).ok());
  CHECK(manager.try_lock_run().has_value());
}

TEST_CASE("file_name and file_mode name the state file and set its mode", "[options]") {
  test::TempDir dir;
  test::CaptureSink log;
  StateOptions options;
  options.file_name = "tokens.json";
  options.file_mode = 0600;
  Manager manager(dir.path(), log, options);
  CHECK(manager.state_file() == dir / "tokens.json");
  CHECK(manager.previous_file() == dir / "tokens.json.prev");
  CHECK(manager.lock_file() == dir / ".tokens.json.lock");
  CHECK(manager.options().file_mode == 0600);
  const test::UmaskGuard umask(0);
  REQUIRE(manager.save_state(test::state_at(1700000000)).ok());
  CHECK(test::mode_of(dir / "tokens.json") == 0600);
  CHECK(test::names_in(dir.path()) == std::vector<std::string>{"tokens.json"});
  const auto loaded = manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(loaded->origin == LoadOrigin::saved);
  CHECK(loaded->state() == test::state_at(1700000000));
}

TEST_CASE("two managers with different names share a directory without touching each other",
          "[options]") {
  test::TempDir dir;
  test::CaptureSink log;
  StateOptions a_options, b_options;
  a_options.file_name = "a.json";
  a_options.keep_previous = true;
  a_options.corrupt_copies = 1;
  b_options.file_name = "a.json.b";  // a name that starts with the other's
  b_options.keep_previous = true;
  b_options.corrupt_copies = 1;
  Manager a(dir.path(), log, a_options), b(dir.path(), log, b_options);

  const auto a_lock = a.try_lock_run();
  const auto b_lock = b.try_lock_run();
  CHECK(a_lock.has_value());
  CHECK(b_lock.has_value());  // one lock each
  for (std::int64_t t : {100, 200}) {
    REQUIRE(a.save_state(test::state_at(t)).ok());
    REQUIRE(b.save_state(test::state_at(t + 1)).ok());
  }
  // Two corrupt copies of a's file, from two corruptions: a keeps one.
  for (std::int64_t stamp : {kStamp, kStamp + 1}) {
    test::write_plain(dir / "a.json", "{corrupt");
    test::set_mtime(dir / "a.json", stamp);
    const auto loaded = a.load_state();
    REQUIRE(loaded.has_value());
    CHECK(loaded->origin == LoadOrigin::previous);
  }
  const auto b_loaded = b.load_state();
  REQUIRE(b_loaded.has_value());
  CHECK(b_loaded->origin == LoadOrigin::saved);
  CHECK(b_loaded->state() == test::state_at(201));
  std::vector<std::string> names = test::names_in(dir.path());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{
                     ".a.json.b.lock", ".a.json.lock", "a.json", "a.json.b", "a.json.b.prev",
                     "a.json.corrupt-" + std::to_string(kStamp + 1), "a.json.prev"});
}

TEST_CASE("with create_directory false a missing directory is an error, never a first run",
          "[options]") {
  // The SD-card case: /mnt/sd is an empty mount point while the card is
  // not mounted, and the state lives in /mnt/sd/collector.
  test::TempDir mount_point;
  const test::fs::path dir = mount_point / "collector";
  test::CaptureSink log;
  StateOptions options;
  options.create_directory = false;
  Manager manager(dir, log, options);

  const auto lock = manager.try_lock_run();
  const auto loaded = manager.load_state();
  const as::Status saved = manager.save_state(test::state_at(1700000000));
  for (const as::Status& s : {lock.status(), loaded.status(), saved}) {
    CAPTURE(s.message());
    CHECK(s.step() == Step::open_directory);
    CHECK(s.code() == std::errc::no_such_file_or_directory);
    CHECK(s.message().find(dir.string()) != std::string::npos);
    CHECK(s.message().find("create_directory is false") != std::string::npos);
  }
  CHECK(test::names_in(mount_point.path()).empty());  // nothing made on the wrong disk
  CHECK(log.size() == 0);

  // Once the card is there, the same manager works, and its first run is
  // logged at info.
  test::fs::create_directory(dir);
  REQUIRE(manager.try_lock_run().has_value());
  const auto first = manager.load_state();
  REQUIRE(first.has_value());
  CHECK(first->origin == LoadOrigin::first_run);
  CHECK(log.last().level == Level::info);
  CHECK(log.last().message == "no state file found, treating as first run");
  CHECK(manager.save_state(test::state_at(1700000000)).ok());
}

TEST_CASE(
    "with create_directory false every save refuses a state directory replaced since the "
    "lock or the load, and a batch is given up whole",
    "[options]") {
  // The card unmounted mid-run: the mount point's directory (or one an
  // operator made) is at the path now, on the root filesystem.
  struct Row {
    const char* what;
    bool lock, load, batch;
  };
  const Row rows[] = {
      {"locked and loaded, save_state", true, true, false},
      {"loaded only, save_state", false, true, false},
      {"locked only, save_state", true, false, false},
      {"locked and loaded, save_state with a batch", true, true, true},
      {"loaded only, save_state with a batch", false, true, true},
  };
  for (const Row& row : rows) {
    CAPTURE(row.what);
    test::TempDir root;
    const test::fs::path dir = root / "card";
    test::fs::create_directories(dir / "out");
    test::CaptureSink log;
    StateOptions options;
    options.create_directory = false;
    Manager manager(dir, log, options);
    std::optional<as::RunLock<>> lock;
    if (row.lock) {
      auto taken = manager.try_lock_run();
      REQUIRE(taken.has_value());
      lock.emplace(std::move(*taken));
    }
    if (row.load) REQUIRE(manager.load_state().has_value());

    test::fs::rename(dir, root / "unmounted");
    test::fs::create_directories(dir / "out");  // the same path, another directory

    as::Status saved;
    if (row.batch) {
      as::Batch<> batch;
      REQUIRE(batch.add(dir / "out" / "data.json", "data", as::WriteOptions{0644, false}).ok());
      saved = manager.save_state(test::state_at(1700000000), batch);
      CHECK(batch.size() == 0);
      CHECK(batch.replaced() == 0);
    } else {
      saved = manager.save_state(test::state_at(1700000000));
    }
    CAPTURE(saved.message());
    CHECK(saved.step() == Step::open_directory);
    CHECK(saved.code() == std::errc::no_such_file_or_directory);
    CHECK(saved.path() == dir.string());
    CHECK(saved.message().find("is its volume mounted?") != std::string::npos);
    CHECK(saved.message().find("not the one") != std::string::npos);
    CHECK(test::names_in(dir).size() == 1);  // "out", and nothing written beside it
    CHECK(test::names_in(dir / "out").empty());
    CHECK(log.with("state saved").empty());

    // The card back: the same manager saves into it.
    test::fs::remove_all(dir);
    test::fs::rename(root / "unmounted", dir);
    CHECK(manager.save_state(test::state_at(1700000000)).ok());
  }
}

TEST_CASE("with create_directory true a replaced state directory is written as any directory",
          "[options]") {
  // Directories may be made: the path is followed, as a first save follows it.
  test::TempDir root;
  const test::fs::path dir = root / "state";
  test::CaptureSink log;
  Manager manager(dir, log);
  REQUIRE(manager.try_lock_run().has_value());
  REQUIRE(manager.load_state().has_value());
  test::fs::rename(dir, root / "old");
  test::fs::create_directory(dir);
  CHECK(manager.save_state(test::state_at(1700000000)).ok());
  CHECK(test::fs::exists(dir / "state.json"));
}
