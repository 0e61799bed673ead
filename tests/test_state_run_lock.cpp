// StateManager's run lock (try_lock_run): one holder at a time, in this
// process or another; the lock file the library's own (0600, apart from
// other locks); a missing directory made and proved writable; a hostile
// lock path refused, never followed or waited on; a dead holder's lock
// released by the kernel; the pid written whole; a run under sudo in a
// directory of a normal user locks that user out of nothing.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/child.hpp"
#include "support/go_service_state.hpp"
#include "support/names.hpp"

using Manager = as::StateManager<test::CaptureSink&>;

namespace {
/// Runs `work` in a child as uid 65534 (groups cleared): test::run_as.
template <class Work>
int as_nobody(Work work) {
  const int code = test::run_as(65534, {}, work);
  REQUIRE(code != -1);  // a child was forked
  return code;
}

uid_t owner_of(const test::fs::path& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_uid;
}
}  // namespace

TEST_CASE("the run lock has one holder at a time, in this process or another", "[run-lock]") {
  test::TempDir dir;
  test::CaptureSink log;
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
  CHECK(second.save_state(test::state_at(1700000000)).ok());
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
  test::CaptureSink log;
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
  REQUIRE(manager.save_state(test::state_at(1700000000)).ok());
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
  test::CaptureSink log;
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
  test::Child child;
  const pid_t pid = child.fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    child.die_with_parent();  // the change of user cleared it
    test::CaptureSink quiet;
    Manager other(root / "var" / "collector", quiet);
    const auto lock = other.try_lock_run();
    const bool named =
        !lock && lock.status().code() == std::errc::permission_denied &&
        lock.status().message().find((root / "var" / "collector").string()) != std::string::npos &&
        lock.status().message().find("not writable") != std::string::npos;
    ::_exit(named ? 0 : 1);
  }
  CHECK(test::exit_code(child.wait()) == 0);
}

TEST_CASE("a directory no save could write fails the run lock, even for root", "[run-lock]") {
  // A read-only mount or an immutable directory stops root too; the lock
  // file may still open. Here the filesystem policy says so.
  test::TempDir dir;
  test::CaptureSink log;
  test::FaultFs fs;
  as::StateManager<test::CaptureSink&, State, as::FullSync, test::FaultFs&> manager(dir.path(), log,
                                                                                    fs);
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
    test::CaptureSink log;
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
  test::Child holder;  // killed and reaped on every way out, a failed REQUIRE included
  const pid_t pid = holder.fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    test::CaptureSink quiet;
    Manager holding(dir.path(), quiet);
    auto lock = holding.try_lock_run();
    if (!lock) ::_exit(1);
    holder.send();
    ::pause();
    ::_exit(0);
  }
  REQUIRE(holder.receive());  // false, not a wait forever, when the child died first
  test::CaptureSink log;
  Manager manager(dir.path(), log);
  const auto refused = manager.try_lock_run();
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.status().detail() == "held by pid " + std::to_string(pid));
  CHECK(test::exit_code(holder.kill()) == 128 + SIGKILL);
  CHECK(manager.try_lock_run().has_value());
}

TEST_CASE("the pid written into the lock file leaves no digits of a longer one", "[run-lock]") {
  test::TempDir dir;
  test::write_plain(dir / ".state.json.lock", "123456789012345678\n", 0600);
  test::CaptureSink log;
  Manager manager(dir.path(), log);
  REQUIRE(manager.try_lock_run().has_value());
  const std::string text = read_file(dir / ".state.json.lock");
  CHECK(text.size() == 21);
  CHECK(std::stol(text) == ::getpid());
  CHECK(text.find_first_not_of("0123456789 \n") == std::string::npos);
}

TEST_CASE("a lock file that is not the library's own is refused, never changed", "[run-lock]") {
  // A planted hard link to a file elsewhere, or a lock file of another
  // user: neither is made 0600 nor has a pid written over its bytes.
  struct Row {
    const char* behaviour;
    void (*plant)(const test::fs::path& lock, const test::fs::path& victim);
    std::errc code;
    const char* words;
  };
  const Row rows[] = {
      {"a hard link to a file elsewhere",
       [](const test::fs::path& lock, const test::fs::path& victim) {
         REQUIRE(::link(victim.c_str(), lock.c_str()) == 0);
       },
       std::errc::too_many_links,
       "(the lock file has 2 hard links: not the library's own, left as it is)"},
      {"a hard link to another user's file",
       [](const test::fs::path& lock, const test::fs::path& victim) {
         REQUIRE(::chown(victim.c_str(), 65534, 65534) == 0);
         REQUIRE(::link(victim.c_str(), lock.c_str()) == 0);
       },
       std::errc::too_many_links,
       "(the lock file has 2 hard links: not the library's own, left as it is)"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir, other;
    test::write_plain(other / "victim", "precious bytes of someone else\n", 0644);
    row.plant(dir / ".state.json.lock", other / "victim");
    test::CaptureSink log;
    Manager manager(dir.path(), log);
    const auto lock = manager.try_lock_run();
    REQUIRE_FALSE(lock.has_value());
    CHECK(lock.status().step() == Step::lock_run);
    CHECK(lock.status().code() == row.code);
    CHECK(lock.status().message().find(row.words) != std::string::npos);
    CHECK(lock.status().path() == (dir / ".state.json.lock").string());
    CHECK(lock.status().target() == (dir / "state.json").string());
    CHECK(read_file(other / "victim") == "precious bytes of someone else\n");
    CHECK(test::mode_of(other / "victim") == 0644);
  }
  // Another user's lock file with one link: refused, left as it is.
  test::TempDir dir;
  test::write_plain(dir / ".state.json.lock", "4242\n", 0644);
  REQUIRE(::chown((dir / ".state.json.lock").c_str(), 65534, 65534) == 0);
  test::CaptureSink log;
  Manager manager(dir.path(), log);
  const auto lock = manager.try_lock_run();
  REQUIRE_FALSE(lock.has_value());
  CHECK(lock.status().code() == std::errc::operation_not_permitted);
  CHECK(lock.status().message() ==
        "take the run lock: lock run " + (dir / ".state.json.lock").string() + " for " +
            (dir / "state.json").string() +
            ": Operation not permitted (the lock file belongs to uid 65534, not to this "
            "process's user: not the library's own, left as it is)");
  CHECK(read_file(dir / ".state.json.lock") == "4242\n");
  CHECK(test::mode_of(dir / ".state.json.lock") == 0644);
}

TEST_CASE("after a run as root, the directory owner's runs need only root's lock file removed",
          "[run-lock]") {
  // sudo once in a state directory of a normal user: root's lock file stays
  // root's (root changes nothing in a lock file there: see the next test),
  // which the owner's run refuses, naming it; once the owner removes it,
  // their run takes the lock, loads root's state and saves over root's
  // state file and .prev.
  if (::geteuid() != 0) {
    WARN("skipped: running as root for another user needs root");
    return;
  }
  struct Row {
    const char* behaviour;
    unsigned file_mode;
    bool keep_previous;
  };
  const Row rows[] = {
      {"the default options", 0644, false},
      {"keep_previous", 0644, true},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir;
    REQUIRE(::chown(dir.path().c_str(), 65534, 65534) == 0);
    REQUIRE(::chmod(dir.path().c_str(), 0755) == 0);
    StateOptions options;
    options.file_mode = row.file_mode;
    options.keep_previous = row.keep_previous;
    test::CaptureSink log;
    {
      Manager root(dir.path(), log, options);
      for (std::int64_t t : {1700000000, 1700000060}) {
        auto lock = root.try_lock_run();
        REQUIRE(lock.has_value());
        REQUIRE(root.load_state().has_value());
        REQUIRE(root.save_state(test::state_at(t)).ok());
      }
    }
    CHECK(owner_of(dir / ".state.json.lock") == 0);

    const std::string path = dir.path().string();
    const int code = as_nobody([&] {
      if (::access(path.c_str(), X_OK) != 0) return 77;  // a TMPDIR closed to 65534
      test::CaptureSink quiet;
      Manager user(path, quiet, options);
      const auto refused = user.try_lock_run();
      if (refused || refused.status().step() != Step::lock_run ||
          refused.status().path() != path + "/.state.json.lock")
        return 5;
      if (::unlink((path + "/.state.json.lock").c_str()) != 0) return 6;
      for (std::int64_t t : {1700000120, 1700000180}) {
        auto lock = user.try_lock_run();
        if (!lock) {
          std::fprintf(stderr, "lock: %s\n", lock.status().message().c_str());
          return 1;
        }
        auto loaded = user.load_state();
        if (!loaded) {
          std::fprintf(stderr, "load: %s\n", loaded.status().message().c_str());
          return 2;
        }
        if (loaded->last_updated != t - 60) return 3;
        if (const Status saved = user.save_state(test::state_at(t)); !saved) {
          std::fprintf(stderr, "save: %s\n", saved.message().c_str());
          return 4;
        }
      }
      return 0;
    });
    if (code == 77) {
      WARN("skipped: uid 65534 cannot reach the test's directory or cannot be switched to");
      return;
    }
    CHECK(code == 0);
    // Root again: the lock file, the owner's now, is taken.
    Manager root(dir.path(), log, options);
    auto lock = root.try_lock_run();
    REQUIRE(lock.has_value());
    auto loaded = root.load_state();
    REQUIRE(loaded.has_value());
    CHECK(loaded->last_updated == 1700000180);
    CHECK(owner_of(dir / ".state.json.lock") == 65534);
  }
}

TEST_CASE("root in a directory of another user changes nothing in the lock file it takes",
          "[run-lock]") {
  // That user may hard-link any of root's files (on that filesystem) to the
  // lock's name and unlink it again while root opens it: root, holding a
  // file of its own with one link, cannot tell it from its lock file. So it
  // changes nothing in it: no chmod, no chown, no pid. Here the outcome of
  // such a race, made directly: a root file of one link at the lock's name.
  if (::geteuid() != 0) {
    WARN("skipped: needs root");
    return;
  }
  struct Row {
    const char* file;
    uid_t owner;
  };
  const Row rows[] = {{"root's, as a race leaves it", 0}, {"the directory owner's", 65534}};
  for (const Row& row : rows) {
    CAPTURE(row.file);
    test::TempDir dir;
    REQUIRE(::chown(dir.path().c_str(), 65534, 65534) == 0);
    test::write_plain(dir / ".state.json.lock", "precious\n", 0666);
    REQUIRE(::chown((dir / ".state.json.lock").c_str(), row.owner, row.owner) == 0);
    test::CaptureSink log;
    Manager root(dir.path(), log);
    const auto lock = root.try_lock_run();
    REQUIRE(lock.has_value());
    CHECK(owner_of(dir / ".state.json.lock") == row.owner);
    CHECK(test::mode_of(dir / ".state.json.lock") == 0666);
    CHECK(read_file(dir / ".state.json.lock") == "precious\n");
  }
}

TEST_CASE("root in a directory of another user still refuses a third user's lock file",
          "[run-lock]") {
  // Only the directory's owner's lock file is taken as root's own: a third
  // user's, or a hard link to a file of the owner, is refused and left.
  if (::geteuid() != 0) {
    WARN("skipped: needs root");
    return;
  }
  {
    test::TempDir dir;
    REQUIRE(::chown(dir.path().c_str(), 65534, 65534) == 0);
    test::write_plain(dir / ".state.json.lock", "4242\n", 0644);
    REQUIRE(::chown((dir / ".state.json.lock").c_str(), 65533, 65533) == 0);
    test::CaptureSink log;
    Manager manager(dir.path(), log);
    const auto lock = manager.try_lock_run();
    REQUIRE_FALSE(lock.has_value());
    CHECK(lock.status().step() == Step::lock_run);
    CHECK(lock.status().code() == std::errc::operation_not_permitted);
    CHECK(contains(lock.status().message(), "the lock file belongs to uid 65533"));
    CHECK(read_file(dir / ".state.json.lock") == "4242\n");
    CHECK(test::mode_of(dir / ".state.json.lock") == 0644);
    CHECK(owner_of(dir / ".state.json.lock") == 65533);
  }
  {
    test::TempDir dir, other;
    REQUIRE(::chown(dir.path().c_str(), 65534, 65534) == 0);
    test::write_plain(other / "victim", "precious\n", 0644);
    REQUIRE(::chown((other / "victim").c_str(), 65534, 65534) == 0);
    REQUIRE(::link((other / "victim").c_str(), (dir / ".state.json.lock").c_str()) == 0);
    test::CaptureSink log;
    Manager manager(dir.path(), log);
    const auto lock = manager.try_lock_run();
    REQUIRE_FALSE(lock.has_value());
    CHECK(lock.status().code() == std::errc::too_many_links);
    CHECK(read_file(other / "victim") == "precious\n");
    CHECK(test::mode_of(other / "victim") == 0644);
  }
}
