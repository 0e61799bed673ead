// StateManager where deployments go wrong: overlapping runs (the run lock),
// options that name and guard the state (StateOptions), loads that say what
// happened (LoadOrigin), a previous state to fall back to, schemas that
// evolve, cursors that are not clocks.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_logger.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"
#include "support/seed_state.hpp"

using Manager = as::StateManager<test::CaptureLogger&>;

namespace {

constexpr std::int64_t kStamp = 1764000000;  // mtime given to planted files

State state_at(std::int64_t t) { return as::update_state("switchboard", t, 50, 1.5e9, {t}); }

std::string contents(const test::fs::path& path) { return test::read_file(path); }

bool present(const test::fs::path& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

ino_t inode_of(const test::fs::path& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// A child process told when to go on, and telling when it is ready.
class Pipe {
 public:
  Pipe() { REQUIRE(::pipe(fds_) == 0); }
  ~Pipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void send() { (void)!::write(fds_[1], "x", 1); }
  bool wait() {
    char c;
    return ::read(fds_[0], &c, 1) == 1;
  }

 private:
  int fds_[2];
};

}  // namespace

// ============================================================== options ====

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
  test::CaptureLogger log;
  Manager manager(root / "a" / "b", log);
  REQUIRE(manager.save_state(state_at(1700000000)).ok());
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
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir;
    test::CaptureLogger log;
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
    const as::Status saved = manager.save_state(state_at(1700000000));
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
  test::CaptureLogger log;
  StateOptions longest;
  longest.file_name = std::string(ATOMIC_STATE_NAME_MAX - 40, 'n');
  Manager manager(dir.path(), log, longest);
  CHECK(manager.save_state(state_at(1700000000)).ok());
  CHECK(manager.try_lock_run().has_value());
}

TEST_CASE("file_name and file_mode name the state file and set its mode", "[options]") {
  test::TempDir dir;
  test::CaptureLogger log;
  StateOptions options;
  options.file_name = "tokens.json";
  options.file_mode = 0600;
  Manager manager(dir.path(), log, options);
  CHECK(manager.state_file() == dir / "tokens.json");
  CHECK(manager.previous_file() == dir / "tokens.json.prev");
  CHECK(manager.lock_file() == dir / ".tokens.json.lock");
  CHECK(manager.options().file_mode == 0600);
  const test::UmaskGuard umask(0);
  REQUIRE(manager.save_state(state_at(1700000000)).ok());
  CHECK(test::mode_of(dir / "tokens.json") == 0600);
  CHECK(test::names_in(dir.path()) == std::vector<std::string>{"tokens.json"});
  const auto loaded = manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(loaded->origin == LoadOrigin::saved);
  CHECK(loaded->state() == state_at(1700000000));
}

TEST_CASE("two managers with different names share a directory without touching each other",
          "[options]") {
  test::TempDir dir;
  test::CaptureLogger log;
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
    REQUIRE(a.save_state(state_at(t)).ok());
    REQUIRE(b.save_state(state_at(t + 1)).ok());
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
  CHECK(b_loaded->state() == state_at(201));
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
  test::CaptureLogger log;
  StateOptions options;
  options.create_directory = false;
  Manager manager(dir, log, options);

  const auto lock = manager.try_lock_run();
  const auto loaded = manager.load_state();
  const as::Status saved = manager.save_state(state_at(1700000000));
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
  CHECK(manager.save_state(state_at(1700000000)).ok());
}

// ============================================================= run lock ====

TEST_CASE("the run lock has one holder at a time, in this process or another", "[run-lock]") {
  test::TempDir dir;
  test::CaptureLogger log;
  Manager first(dir.path(), log), second(dir.path(), log);
  auto held = first.try_lock_run();
  REQUIRE(held.has_value());
  CHECK(held->owns_lock());

  const std::string pid = std::to_string(::getpid());
  for (Manager* m : {&second, &first}) {
    const auto again = m->try_lock_run();
    REQUIRE_FALSE(again.has_value());
    const as::Status& s = again.status();
    CHECK(s.step() == Step::lock_run);
    CHECK(s.code() == std::errc::resource_unavailable_try_again);
    CHECK(s.path() == (dir / ".state.json.lock").string());
    CHECK(s.target() == (dir / "state.json").string());
    CHECK(s.detail() == "held by pid " + pid);
    CHECK(s.message() == "take the run lock: lock run " + (dir / ".state.json.lock").string() +
                             " for " + (dir / "state.json").string() +
                             ": Resource temporarily unavailable (another run holds it) (held by "
                             "pid " +
                             pid + ")");
  }
  // Saves and loads never take it: they do not wait for it.
  CHECK(second.save_state(state_at(1700000000)).ok());
  CHECK(second.load_state().has_value());

  // Moving keeps it held; unlock() and the destructor release it.
  as::RunLock<> moved = std::move(*held);
  CHECK_FALSE(held->owns_lock());
  CHECK(moved.owns_lock());
  CHECK_FALSE(second.try_lock_run().has_value());
  moved.unlock();
  CHECK_FALSE(moved.owns_lock());
  {
    auto taken = second.try_lock_run();
    REQUIRE(taken.has_value());
    CHECK_FALSE(first.try_lock_run().has_value());
  }
  auto retaken = first.try_lock_run();
  REQUIRE(retaken.has_value());
  // Assigning over a held lock releases it.
  *retaken = as::RunLock<>();
  CHECK(second.try_lock_run().has_value());
  CHECK(test::temp_files_in(dir.path()).empty());
}

TEST_CASE("the lock file is the library's own: 0600, and other locks do not meet it",
          "[run-lock]") {
  test::TempDir dir;
  test::CaptureLogger log;
  Manager manager(dir.path(), log);
  {
    const test::UmaskGuard umask(0);
    REQUIRE(manager.try_lock_run().has_value());
  }
  CHECK(test::mode_of(dir / ".state.json.lock") == 0600);
  CHECK(test::names_in(dir.path()) == std::vector<std::string>{".state.json.lock"});

  // A lock file someone made readable to all is made 0600 again: whoever
  // can open it could hold it forever.
  ::chmod((dir / ".state.json.lock").c_str(), 0644);
  REQUIRE(manager.try_lock_run().has_value());
  CHECK(test::mode_of(dir / ".state.json.lock") == 0600);

  // `flock DIR command` and a flock on the state file do not meet it.
  const int dir_fd = ::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(::flock(dir_fd, LOCK_EX | LOCK_NB) == 0);
  REQUIRE(manager.save_state(state_at(1700000000)).ok());
  const int state_fd = ::open((dir / "state.json").c_str(), O_RDONLY);
  REQUIRE(::flock(state_fd, LOCK_EX | LOCK_NB) == 0);
  const auto lock = manager.try_lock_run();
  CHECK(lock.has_value());
  ::close(state_fd);
  ::close(dir_fd);
}

TEST_CASE("the run lock makes a missing directory and proves it writable", "[run-lock]") {
  test::TempDir root;
  const test::UmaskGuard umask(022);
  test::CaptureLogger log;
  Manager manager(root / "var" / "collector", log);
  REQUIRE(manager.try_lock_run().has_value());
  CHECK(test::mode_of(root / "var") == 0755);
  CHECK(test::mode_of(root / "var" / "collector") == 0755);
  CHECK(test::names_in(root / "var" / "collector") == std::vector<std::string>{".state.json.lock"});

  // Permission bits do not stop root: the check runs as uid 65534, on a
  // directory of root's (0755), and fails before any work would be done,
  // even though the lock file itself could be opened (0666).
  ::chmod(root.path().c_str(), 0755);
  ::chmod((root / "var" / "collector" / ".state.json.lock").c_str(), 0666);
  Pipe result;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    test::CaptureLogger quiet;
    Manager other(root / "var" / "collector", quiet);
    const auto lock = other.try_lock_run();
    const bool named =
        !lock && lock.status().code() == std::errc::permission_denied &&
        lock.status().message().find((root / "var" / "collector").string()) != std::string::npos &&
        lock.status().message().find("not writable") != std::string::npos;
    ::_exit(named ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("a directory no save could write fails the run lock, even for root", "[run-lock]") {
  // A read-only mount or an immutable directory stops root too; the lock
  // file may still open. Here the filesystem policy says so.
  test::TempDir dir;
  test::CaptureLogger log;
  test::FaultFs fs;
  as::StateManager<test::CaptureLogger&, State, as::FullSync, test::FaultFs&> manager(dir.path(),
                                                                                      log, fs);
  fs.faults = {test::Fault{test::Op::check_writable, 1, EROFS, true}};
  const auto lock = manager.try_lock_run();
  REQUIRE_FALSE(lock.has_value());
  CHECK(lock.status().step() == Step::lock_run);
  CHECK(lock.status().code().value() == EROFS);
  CHECK(lock.status().message() ==
        "take the run lock: lock run " + dir.path().string() + " for " +
            (dir / "state.json").string() +
            ": Read-only file system (the state directory is not writable: no save could "
            "succeed)");
  CHECK(fs.open_descriptors().empty());
  CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("a hostile lock path is refused, never followed, never waited on", "[run-lock]") {
  struct Row {
    const char* behaviour;
    void (*plant)(const test::fs::path& lock, const test::fs::path& elsewhere);
    std::errc code;
    const char* words;
  };
  const Row rows[] = {
      {"a symlink to a file elsewhere",
       [](const test::fs::path& lock, const test::fs::path& elsewhere) {
         test::fs::create_symlink(elsewhere, lock);
       },
       std::errc::too_many_symbolic_link_levels, "the lock file is a symlink"},
      {"a directory",
       [](const test::fs::path& lock, const test::fs::path&) { test::fs::create_directory(lock); },
       std::errc::is_a_directory, ""},
      {"a FIFO",
       [](const test::fs::path& lock, const test::fs::path&) {
         REQUIRE(::mkfifo(lock.c_str(), 0600) == 0);
       },
       std::errc::invalid_argument, "not a regular file"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir, other;
    row.plant(dir / ".state.json.lock", other / "victim");
    test::CaptureLogger log;
    Manager manager(dir.path(), log);
    ::alarm(20);  // a lock that waited on the FIFO would be killed: a failure, not a hang
    const auto lock = manager.try_lock_run();
    ::alarm(0);
    REQUIRE_FALSE(lock.has_value());
    CHECK(lock.status().step() == Step::lock_run);
    CHECK(lock.status().code() == row.code);
    CHECK(lock.status().message().find(row.words) != std::string::npos);
    CHECK_FALSE(present(other / "victim"));
    CHECK(test::open_fd_count() >= 0);
  }
}

TEST_CASE("the kernel releases the lock of a holder that dies, SIGKILL included", "[run-lock]") {
  test::TempDir dir;
  Pipe ready;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    test::CaptureLogger quiet;
    Manager holder(dir.path(), quiet);
    auto lock = holder.try_lock_run();
    if (!lock) ::_exit(1);
    ready.send();
    ::pause();
    ::_exit(0);
  }
  REQUIRE(ready.wait());
  test::CaptureLogger log;
  Manager manager(dir.path(), log);
  const auto refused = manager.try_lock_run();
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.status().detail() == "held by pid " + std::to_string(child));
  ::kill(child, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(manager.try_lock_run().has_value());
}

TEST_CASE("the pid written into the lock file leaves no digits of a longer one", "[run-lock]") {
  test::TempDir dir;
  test::write_plain(dir / ".state.json.lock", "123456789012345678\n", 0600);
  test::CaptureLogger log;
  Manager manager(dir.path(), log);
  REQUIRE(manager.try_lock_run().has_value());
  const std::string text = contents(dir / ".state.json.lock");
  CHECK(text.size() == 21);
  CHECK(std::stol(text) == ::getpid());
  CHECK(text.find_first_not_of("0123456789 \n") == std::string::npos);
}

// ======================================================== load origins ====

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
      REQUIRE(as::format_json(boost::json::value_from(state_at(300)), text).ok());
      test::write_plain(dir / "state.json", text);
    }
    if (row.planted == Planted::corrupt) test::write_plain(dir / "state.json", "{corrupt");
    if (row.prev == Prev::valid) {
      std::string text;
      REQUIRE(as::format_json(boost::json::value_from(state_at(200)), text).ok());
      test::write_plain(dir / "state.json.prev", text);
    }
    if (row.prev == Prev::corrupt) test::write_plain(dir / "state.json.prev", "[");
    if (present(dir / "state.json")) test::set_mtime(dir / "state.json", kStamp);
    const std::vector<std::string> before =
        row.planted == Planted::no_directory ? std::vector<std::string>{} : test::names_in(dir);

    test::CaptureLogger log;
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
      CHECK(contents(dir / "state.json") == "{corrupt");
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
    if (corrupt) CHECK(contents(copy) == "{corrupt");
    if (corrupt) CHECK(contents(dir / "state.json") == "{corrupt");  // left for the next save
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
  test::CaptureLogger log;
  Manager manager(dir.path(), log);
  REQUIRE(manager.save_state(state_at(500)).ok());
  const as::Result<State> sliced = manager.load_state();
  REQUIRE(sliced.has_value());
  CHECK(*sliced == state_at(500));
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

  test::CaptureLogger log;
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
  test::CaptureLogger log;
  StateOptions options;
  options.corrupt_copies = 3;
  Manager manager(dir.path(), log, options);
  const auto loaded = manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(loaded->corrupt_copy == (dir / "state.json.corrupt-100").string());
  CHECK(contents(loaded->corrupt_copy) == "{corrupt");
  CHECK_FALSE(present(dir / "state.json.corrupt-400"));
  CHECK(present(dir / "state.json.corrupt-500"));
  CHECK(log.with("old corrupt copy removed").size() == 1);
}

TEST_CASE("corrupt_copies 0 keeps no copy", "[origin]") {
  test::TempDir dir;
  test::write_plain(dir / "state.json", "{corrupt");
  test::CaptureLogger log;
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

// ====================================================== previous state ====

TEST_CASE("keep_previous keeps the replaced state as .prev, a hard link", "[previous]") {
  test::TempDir dir;
  test::CaptureLogger log;
  StateOptions options;
  options.keep_previous = true;
  Manager manager(dir.path(), log, options);
  REQUIRE(manager.save_state(state_at(100)).ok());
  CHECK_FALSE(present(dir / "state.json.prev"));  // nothing to keep yet
  for (std::int64_t t : {200, 300}) {
    const std::string before = contents(dir / "state.json");
    const ino_t inode = inode_of(dir / "state.json");
    REQUIRE(manager.save_state(state_at(t)).ok());
    CHECK(contents(dir / "state.json.prev") == before);
    CHECK(inode_of(dir / "state.json.prev") == inode);  // the same file: nothing copied
    CHECK(test::mode_of(dir / "state.json.prev") == 0644);
  }
  std::vector<std::string> names = test::names_in(dir.path());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"state.json", "state.json.prev"});

  // A previous state that is already this state's file is not kept again.
  test::FaultFs fs;
  as::StateManager<test::CaptureLogger&, State, as::FullSync, test::FaultFs&> same(dir.path(), log,
                                                                                   fs, options);
  ::unlink((dir / "state.json.prev").c_str());
  ::link((dir / "state.json").c_str(), (dir / "state.json.prev").c_str());
  REQUIRE(same.save_state(state_at(400)).ok());
  CHECK(fs.count(test::Op::link) == 0);
  CHECK(contents(dir / "state.json.prev") == contents(dir / "state.json.prev"));
  CHECK(as::parse_json(contents(dir / "state.json.prev")).value().at("last_updated") == 300);
}

TEST_CASE("a corrupt state never becomes the previous one", "[previous]") {
  test::TempDir dir;
  test::CaptureLogger log;
  StateOptions options;
  options.keep_previous = true;
  Manager manager(dir.path(), log, options);
  REQUIRE(manager.save_state(state_at(100)).ok());
  REQUIRE(manager.save_state(state_at(200)).ok());    // state 200, previous 100
  test::write_plain(dir / "state.json", "{corrupt");  // in place: the same file
  const auto loaded = manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(loaded->origin == LoadOrigin::previous);
  CHECK(loaded->last_updated == 100);
  REQUIRE(manager.save_state(state_at(300)).ok());
  CHECK(as::parse_json(contents(dir / "state.json.prev")).value().at("last_updated") == 100);
  CHECK(as::parse_json(contents(dir / "state.json")).value().at("last_updated") == 300);
  // From then on the pairs move on as usual.
  REQUIRE(manager.save_state(state_at(400)).ok());
  CHECK(as::parse_json(contents(dir / "state.json.prev")).value().at("last_updated") == 300);
}

TEST_CASE("a previous state without a state file is a first run, with a warning", "[previous]") {
  test::TempDir dir;
  test::write_plain(dir / "state.json.prev", R"({"last_updated": 100})");
  for (const bool keep_previous : {true, false}) {
    CAPTURE(keep_previous);
    test::CaptureLogger log;
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
  test::CaptureLogger log;
  test::FaultFs fs;
  StateOptions options;
  options.keep_previous = true;
  as::StateManager<test::CaptureLogger&, State, as::FullSync, test::FaultFs&> manager(
      dir.path(), log, fs, options);
  REQUIRE(manager.save_state(state_at(100)).ok());
  const std::string before = contents(dir / "state.json");
  fs.faults = {test::Fault{test::Op::link, 1, EPERM, true}};
  const as::Status saved = manager.save_state(state_at(200));
  CHECK(saved.step() == Step::keep_previous);
  CHECK(saved.code().value() == EPERM);
  CHECK(saved.message() == "write state file: keep previous " + (dir / "state.json").string() +
                               " to " + (dir / "state.json.prev").string() +
                               ": Operation not permitted (StateOptions::keep_previous needs a "
                               "filesystem with hard links)");
  CHECK(contents(dir / "state.json") == before);
  CHECK(test::names_in(dir.path()) == std::vector<std::string>{"state.json"});
  CHECK(log.with("state saved").size() == 1);
}

// ============================================================ versions ====

namespace {

// A state whose layout changed twice: version 0 kept the slot as "slot",
// version 1 renamed it "last_slot", version 2 added "network".
struct SlotState {
  std::string network;
  std::optional<std::uint64_t> last_slot;

  static constexpr auto state_fields() noexcept {
    return std::make_tuple(
        as::state_field("network", &SlotState::network, "network"),
        as::state_field("last_slot", &SlotState::last_slot, "last_slot", "slot"));
  }
  friend bool operator==(const SlotState& a, const SlotState& b) {
    return a.network == b.network && a.last_slot == b.last_slot;
  }
};

enum class Upgrade { works, throws, throws_int, refuses, garbage };
Upgrade upgrade_mode = Upgrade::works;
std::vector<int> upgrades_called;

}  // namespace

template <>
struct atomic_state::StateTraits<SlotState> {
  static constexpr int version = 2;
  static bool upgrade(boost::json::object& state, int from_version) {
    upgrades_called.push_back(from_version);
    switch (upgrade_mode) {
      case Upgrade::works:
        break;
      case Upgrade::throws:
        throw std::runtime_error("no slot to rename");
      case Upgrade::throws_int:
        throw 7;
      case Upgrade::refuses:
        return false;
      case Upgrade::garbage:
        state["last_slot"] = "not a number";
        return true;
    }
    if (from_version == 0) {
      if (boost::json::value* slot = state.if_contains("slot")) {
        boost::json::value moved = std::move(*slot);  // before the object changes
        state.erase("slot");
        state["last_slot"] = std::move(moved);
      }
    }
    if (from_version == 1) state["network"] = "mainnet";
    return true;
  }
  static std::optional<std::uint64_t> cursor(const SlotState& s) noexcept { return s.last_slot; }
};

namespace {
using SlotManager = as::StateManager<test::CaptureLogger&, SlotState>;

SlotState slot_state(std::optional<std::uint64_t> slot, std::string network = "mainnet") {
  SlotState s;
  s.network = std::move(network);
  s.last_slot = slot;
  return s;
}
}  // namespace

TEST_CASE("a versioned state writes its version as the first key", "[versions]") {
  test::TempDir dir;
  test::CaptureLogger log;
  SlotManager manager(dir.path(), log);
  REQUIRE(manager.save_state(slot_state(18446744073709551615ull)).ok());
  CHECK(contents(dir / "state.json") ==
        "{\n  \"schema_version\": 2,\n  \"network\": \"mainnet\",\n"
        "  \"last_slot\": 18446744073709551615\n}\n");
  REQUIRE(manager.save_state(slot_state(std::nullopt, "")).ok());
  CHECK(contents(dir / "state.json") ==
        "{\n  \"schema_version\": 2,\n  \"network\": \"\",\n  \"last_slot\": null\n}\n");
  // A version-0 state writes no key: the Go service's layout is unchanged.
  Manager plain(dir.path(), log);
  REQUIRE(plain.save_state(test::seed_state()).ok());
  CHECK(contents(dir / "state.json").rfind("{\n  \"oracle_name\": \"switchboard\",\n", 0) == 0);
  CHECK(contents(dir / "state.json").find("schema_version") == std::string::npos);
}

TEST_CASE("an older file is upgraded one version at a time, and left as it is", "[versions]") {
  struct Row {
    const char* behaviour;
    const char* text;
    std::vector<int> steps;
    SlotState expected;
  };
  const Row rows[] = {
      {"no version key is version 0", R"({"slot": 42})", {0, 1}, slot_state(42)},
      {"version 0 said", R"({"schema_version": 0, "slot": 0})", {0, 1}, slot_state(0)},
      {"version 1", R"({"schema_version": 1, "last_slot": 7})", {1}, slot_state(7)},
      {"the current version",
       R"({"schema_version": 2, "network": "testnet", "last_slot": 9})",
       {},
       slot_state(9, "testnet")},
      {"a null version is version 0",
       R"({"schema_version": null, "slot": 1})",
       {0, 1},
       slot_state(1)},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir;
    test::write_plain(dir / "state.json", row.text);
    test::CaptureLogger log;
    SlotManager manager(dir.path(), log);
    upgrade_mode = Upgrade::works;
    upgrades_called.clear();
    const auto loaded = manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(loaded->origin == LoadOrigin::saved);
    CHECK(loaded->state() == row.expected);
    CHECK(upgrades_called == row.steps);
    CHECK(contents(dir / "state.json") == row.text);  // a load never writes
    const auto upgraded = log.with("state file upgraded");
    if (row.steps.empty()) {
      CHECK(upgraded.empty());
    } else {
      REQUIRE(upgraded.size() == 1);
      CHECK(upgraded[0].level == Level::info);
      CHECK(upgraded[0].text("path") == (dir / "state.json").string());
      CHECK(upgraded[0].integer("from_version") == row.steps.front());
      CHECK(upgraded[0].integer("to_version") == 2);
    }
    REQUIRE(manager.save_state(*loaded).ok());
    CHECK(contents(dir / "state.json").rfind("{\n  \"schema_version\": 2,", 0) == 0);
  }
}

TEST_CASE("a newer file, or a failed upgrade, is an error and the file is untouched",
          "[versions]") {
  struct Row {
    const char* behaviour;
    const char* text;
    Upgrade mode;
    std::errc code;
    const char* detail;
  };
  const Row rows[] = {
      {"a newer version", R"({"schema_version": 3, "last_slot": 1})", Upgrade::works,
       std::errc::not_supported,
       "schema_version 3 is newer than this program's 2: a newer "
       "program wrote it"},
      {"a version beyond int64", R"({"schema_version": 18446744073709551615})", Upgrade::works,
       std::errc::not_supported,
       "schema_version 9223372036854775807 is newer than this program's 2: a newer program "
       "wrote it"},
      {"an upgrade that throws", R"({"slot": 1})", Upgrade::throws, std::errc::invalid_argument,
       "upgrade from schema_version 0 threw: no slot to rename"},
      {"an upgrade that throws a non-exception", R"({"slot": 1})", Upgrade::throws_int,
       std::errc::invalid_argument,
       "upgrade from schema_version 0 threw something not an "
       "exception"},
      {"an upgrade that refuses", R"({"schema_version": 1, "last_slot": 1})", Upgrade::refuses,
       std::errc::invalid_argument, "upgrade from schema_version 1 refused"},
      {"an upgrade that returns garbage", R"({"slot": 1})", Upgrade::garbage,
       std::errc::invalid_argument,
       "the upgrade from schema_version 0 gave a state that does not read: last_slot: expected "
       "an integer"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir;
    test::write_plain(dir / "state.json", row.text);
    test::CaptureLogger log;
    upgrade_mode = row.mode;
    SlotManager manager(dir.path(), log);
    const auto loaded = manager.load_state();
    upgrade_mode = Upgrade::works;
    REQUIRE_FALSE(loaded.has_value());
    CHECK(loaded.status().step() == Step::upgrade);
    CHECK(loaded.status().code() == row.code);
    CHECK(loaded.status().detail() == row.detail);
    CHECK(loaded.status().message().rfind(
              "load state file: upgrade " + (dir / "state.json").string() + ": ", 0) == 0);
    CHECK(contents(dir / "state.json") == row.text);
    CHECK(test::names_in(dir.path()) == std::vector<std::string>{"state.json"});
    CHECK(log.size() == 0);
  }
  // A version-0 type never reads a versioned file as its own.
  test::TempDir dir;
  test::write_plain(dir / "state.json", R"({"schema_version": 1, "last_updated": 5})");
  test::CaptureLogger log;
  const auto loaded = Manager(dir.path(), log).load_state();
  REQUIRE_FALSE(loaded.has_value());
  CHECK(loaded.status().detail() ==
        "schema_version 1 is newer than this program's 0: a newer program wrote it");
}

TEST_CASE("a version key of the wrong kind makes the file corrupt", "[versions]") {
  for (const char* text : {R"({"schema_version": "2"})", R"({"schema_version": -1})",
                           R"({"schema_version": 1.0})", R"({"schema_version": true})"}) {
    CAPTURE(text);
    test::TempDir dir;
    test::write_plain(dir / "state.json", text);
    test::CaptureLogger log;
    SlotManager manager(dir.path(), log);
    const auto loaded = manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(loaded->origin == LoadOrigin::recovered);
    const auto warned = log.with("state file corrupted, treating as first run");
    REQUIRE(warned.size() == 1);
    CHECK(warned[0].text("error") == "schema_version: expected a whole number, 0 or more");
  }
}

// ============================================================= cursors ====

TEST_CASE("a uint64 cursor: every value valid, above 2^63 compared right", "[cursor]") {
  constexpr std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
  constexpr std::uint64_t half = std::uint64_t{1} << 63;
  struct Row {
    const char* behaviour;
    std::optional<std::uint64_t> last;
    std::uint64_t current;
    bool process;
    Level level;
    const char* message;
  };
  const Row rows[] = {
      {"never processed", std::nullopt, 0, true, Level::debug, "first run, processing required"},
      {"slot 0 is a cursor like any other", 0, 0, false, Level::info,
       "no new data, skipping extraction"},
      {"the next slot", 0, 1, true, Level::debug, "new data available"},
      {"above 2^63, newer", half, half + 1, true, Level::debug, "new data available"},
      {"above 2^63, the same", top, top, false, Level::info, "no new data, skipping extraction"},
      {"above 2^63, older", top, half, false, Level::warn,
       "cursor went backwards, data older than last processed"},
      {"an older slot", 10, 9, false, Level::warn,
       "cursor went backwards, data older than last processed"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::CaptureLogger log;
    SlotManager manager("/nonexistent", log);
    CHECK(manager.should_process(row.current, slot_state(row.last)) == row.process);
    REQUIRE(log.size() == 1);
    CHECK(log.last().level == row.level);
    CHECK(log.last().message == row.message);
    if (!row.last) {
      CHECK(log.last().fields.empty());
      continue;
    }
    CHECK(log.last().keys() == std::vector<std::string>{"current", "last"});
    CHECK(log.last().unsigned_integer("current") == row.current);
    CHECK(log.last().unsigned_integer("last") == *row.last);
  }
  static_assert(std::is_same_v<SlotManager::cursor_type, std::uint64_t>);
  static_assert(std::is_same_v<Manager::cursor_type, std::int64_t>);

  test::TempDir dir;
  test::CaptureLogger log;
  SlotManager manager(dir.path(), log);
  REQUIRE(manager.save_state(slot_state(top - 1)).ok());
  const auto loaded = manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(loaded->last_slot == top - 1);
  CHECK(manager.should_process(top, *loaded));
  CHECK(log.with("state saved")[0].unsigned_integer("slot") == top - 1);
  CHECK(log.with("state loaded")[0].unsigned_integer("last_slot") == top - 1);
}

namespace {
// A cursor no log field can hold: compared, not logged.
struct Height {
  std::int64_t epoch = 0, block = 0;
  friend bool operator<(const Height& a, const Height& b) {
    return std::tie(a.epoch, a.block) < std::tie(b.epoch, b.block);
  }
};
struct ChainState {
  std::int64_t epoch = -1, block = 0;  // epoch -1: never processed
  static constexpr auto state_fields() noexcept {
    return std::make_tuple(as::state_field("epoch", &ChainState::epoch),
                           as::state_field("block", &ChainState::block));
  }
};
}  // namespace

template <>
struct atomic_state::StateTraits<ChainState> {
  static std::optional<Height> cursor(const ChainState& s) noexcept {
    if (s.epoch < 0) return std::nullopt;
    return Height{s.epoch, s.block};
  }
};

TEST_CASE("any totally ordered type is a cursor", "[cursor]") {
  test::CaptureLogger log;
  as::StateManager<test::CaptureLogger&, ChainState> manager("/nonexistent", log);
  ChainState state;
  CHECK(manager.should_process(Height{0, 0}, state));
  state.epoch = 2;
  state.block = 5;
  CHECK(manager.should_process(Height{2, 6}, state));
  CHECK(manager.should_process(Height{3, 0}, state));
  CHECK_FALSE(manager.should_process(Height{2, 5}, state));
  CHECK_FALSE(manager.should_process(Height{1, 9}, state));
  const auto records = log.records();
  REQUIRE(records.size() == 5);
  CHECK(records[4].message == "cursor went backwards, data older than last processed");
  for (const auto& r : records) CHECK(r.fields.empty());
}

TEST_CASE("optional fields are null when empty, and read back", "[cursor]") {
  struct Opt {
    std::optional<std::string> name;
    std::optional<double> price;
    std::optional<bool> live;
    std::optional<std::int64_t> at;
    static constexpr auto state_fields() noexcept {
      return std::make_tuple(as::state_field("name", &Opt::name, "name"),
                             as::state_field("price", &Opt::price, "price"),
                             as::state_field("live", &Opt::live),
                             as::state_field("at", &Opt::at, "at"));
    }
  };
  static_assert(as::has_state_fields_v<Opt>);
  // Opt has no cursor, so no manager: its table is printed and read here
  // directly (SlotState above goes through a manager).
  as::detail::FieldRefusal refusal;
  as::detail::TextBuffer<256> out;
  Opt empty;
  REQUIRE(as::detail::print_fields(empty, out, refusal));
  CHECK(out.view() ==
        "{\n  \"name\": null,\n  \"price\": null,\n  \"live\": null,\n  \"at\": null\n}\n");
  Opt full{std::string("x"), 2.5, true, -3};
  as::detail::TextBuffer<256> out2;
  REQUIRE(as::detail::print_fields(full, out2, refusal));
  CHECK(out2.view() ==
        "{\n  \"name\": \"x\",\n  \"price\": 2.5,\n  \"live\": true,\n  \"at\": -3\n}\n");
  Opt back;
  as::detail::StateProblem problem;
  REQUIRE(as::detail::read_fields(as::parse_json(out2.view()).value(), back, problem));
  CHECK(back.name == full.name);
  CHECK(back.price == full.price);
  CHECK(back.live == full.live);
  CHECK(back.at == full.at);
  Opt nulls{std::string("keep"), 1.0, false, 1};
  REQUIRE(as::detail::read_fields(as::parse_json(out.view()).value(), nulls, problem));
  CHECK(nulls.name == std::string("keep"));  // null reads as missing: the value is left
  Opt wrong;
  CHECK_FALSE(as::detail::read_fields(as::parse_json(R"({"name": 5})").value(), wrong, problem));
  CHECK(problem.key == "name");
  CHECK(std::string(problem.reason) == "expected a string");
  Opt nan{std::nullopt, std::numeric_limits<double>::quiet_NaN(), std::nullopt, std::nullopt};
  as::detail::TextBuffer<256> refused;
  CHECK_FALSE(as::detail::print_fields(nan, refused, refusal));
  CHECK(std::string(refusal.name) == "price");
}
