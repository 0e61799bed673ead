// The sweep of temp files that killed saves leave behind: it removes exactly
// the library's own stale temp files, never one of a save still running (in
// this process or another, even one paused mid-save), never anything else,
// and its own failures never fail a load.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/child.hpp"
#include "support/fault_fs.hpp"
#include "support/files.hpp"
#include "support/protocol.hpp"

using atomic_state::AtomicWriter;
using atomic_state::FullSync;
using atomic_state::Level;
using atomic_state::State;
using atomic_state::Step;
using test::Fault;
using test::Op;

namespace {

using Manager = atomic_state::StateManager<test::CaptureSink&>;
// A save's temp file is named and locked on a filesystem without unnamed
// files: what a sweep must then respect.
using NamedWriter = AtomicWriter<FullSync, test::NamedTempFs>;
using FaultManager =
    atomic_state::StateManager<test::CaptureSink&, State, FullSync, test::FaultFs&>;

State sample_state() {
  State s;
  s.oracle_name = "switchboard";
  s.last_updated = 1700000000;
  s.last_updated_iso = atomic_state::to_rfc3339(s.last_updated);
  s.last_protocol_count = 42;
  s.last_tvs = 1.5e9;
  return s;
}

// lstat: a dangling symlink or a FIFO is present too.
bool present(const test::fs::path& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

}  // namespace

TEST_CASE("the sweep removes stale temp files and nothing but the library's own", "[sweep]") {
  test::TempDir dir;
  test::write_plain(dir / "precious", "keep me");
  struct Row {
    const char* name;
    void (*make)(const test::fs::path& at, const test::fs::path& precious);
    bool removed;
  };
  const auto file = [](const test::fs::path& at, const test::fs::path&) {
    test::write_plain(at, "half a state");
  };
  const Row rows[] = {
      {".tmp-Ab12Cd", file, true},
      {".tmp-000000", file, true},
      {".tmp-zzzzzz", file, true},
      {".tmp-ABCDE", file, false},    // five characters
      {".tmp-ABCDEFG", file, false},  // seven
      {".tmp-AB-DEF", file, false},   // not a letter or digit
      {".tmp-AB DEF", file, false},
      {".tmp-\xc3\xa9\x41\x42\x43\x44", file, false},  // not ASCII
      {"tmp-ABCDEF", file, false},                     // no dot
      {".TMP-ABCDEF", file, false},
      {".tmp-ABCDEF.json", file, false},
      {"x.tmp-ABCDEF", file, false},
      {"state.json", file, false},
      {".tmp-Dir123",
       [](const test::fs::path& at, const test::fs::path&) { test::fs::create_directory(at); },
       false},
      {".tmp-Lnk123",
       [](const test::fs::path& at, const test::fs::path& precious) {
         test::fs::create_symlink(precious, at);
       },
       false},
      {".tmp-Fif123",
       [](const test::fs::path& at, const test::fs::path&) {
         REQUIRE(::mkfifo(at.c_str(), 0600) == 0);
       },
       false},
  };
  std::size_t expected_removed = 0;
  for (const Row& row : rows) {
    row.make(dir / row.name, dir / "precious");
    expected_removed += row.removed;
  }

  AtomicWriter<> writer;
  auto swept = writer.remove_stale_temp_files(dir.path());
  REQUIRE(swept.has_value());
  CHECK(swept->removed == expected_removed);
  CHECK(swept->in_use == 0);
  CHECK(swept->not_regular == 3);  // the directory, the link, the FIFO
  for (const Row& row : rows) {
    CAPTURE(row.name);
    CHECK(present(dir / row.name) == !row.removed);
  }
  CHECK(test::read_file(dir / "precious") == "keep me");
}

TEST_CASE("one pass removes every stale temp file, among many entries that are not files",
          "[sweep]") {
  test::TempDir dir;
  const auto name = [](char kind, int i) {
    char text[16];
    std::snprintf(text, sizeof text, ".tmp-%c%05d", kind, i);
    return std::string(text);
  };
  for (int i = 0; i < 100; ++i) {  // named like temp files, but not regular files
    test::fs::create_directory(dir / name('D', i));
    REQUIRE(::mkfifo((dir / name('F', i)).c_str(), 0600) == 0);
    test::fs::create_symlink(dir / "nowhere", dir / name('L', i));
  }
  for (int i = 0; i < 300; ++i) test::write_plain(dir / name('M', i), "x");
  test::FaultFs fs;
  AtomicWriter<FullSync, test::FaultFs&> writer(fs);
  auto swept = writer.remove_stale_temp_files(dir.path());
  REQUIRE(swept.has_value());
  CHECK(swept->removed == 300);
  CHECK(swept->not_regular == 300);
  CHECK(swept->in_use == 0);
  CHECK(test::names_in(dir.path()).size() == 300);
  CHECK(fs.count(Op::list_directory) == 1);
  CHECK(fs.count(Op::try_lock) == 300);  // one lock per candidate file, held alone
  CHECK(fs.open_descriptors().empty());
}

TEST_CASE("a missing directory has nothing to sweep", "[sweep]") {
  test::TempDir dir;
  AtomicWriter<> writer;
  for (const char* missing : {"absent", "absent/deeper"}) {
    auto swept = writer.remove_stale_temp_files(dir / missing);
    REQUIRE(swept.has_value());
    CHECK(swept->removed == 0);
  }
  test::write_plain(dir / "file", "x");
  CHECK(writer.remove_stale_temp_files(dir / "file").has_value());  // ENOTDIR
}

TEST_CASE("a save in progress in this process keeps its named temp file", "[sweep]") {
  test::TempDir dir;
  NamedWriter saving;
  auto tx = saving.begin(dir / "f");
  REQUIRE(tx.has_value());
  REQUIRE(tx->write("half").ok());
  const std::string temp(tx->temp_name());

  test::write_plain(dir / ".tmp-Stale0", "left by a kill");
  AtomicWriter<> sweeping;
  auto swept = sweeping.remove_stale_temp_files(dir.path());
  REQUIRE(swept.has_value());
  CHECK(swept->in_use == 1);
  CHECK(swept->removed == 1);  // the stale one beside it goes all the same
  CHECK(present(dir / temp));

  REQUIRE(tx->write(" and the rest").ok());
  REQUIRE(tx->commit().ok());
  CHECK(test::read_file(dir / "f") == "half and the rest");
  swept = sweeping.remove_stale_temp_files(dir.path());
  REQUIRE(swept.has_value());
  CHECK(swept->in_use == 0);
}

TEST_CASE("a save committing past a sweep keeps its temp file to the rename", "[sweep]") {
  // The window between the temp file's close and its rename: a sweep there
  // must still see the file as in use (a second descriptor keeps its lock).
  test::TempDir dir;
  test::FaultFs fs;
  AtomicWriter<> sweeping;
  std::size_t in_use = 0, removed = 0;
  fs.before = [&](Op op, int, const char*) {
    if (op != Op::rename) return;
    auto swept = sweeping.remove_stale_temp_files(dir.path());
    REQUIRE(swept.has_value());
    in_use += swept->in_use;
    removed += swept->removed;
  };
  REQUIRE(AtomicWriter<FullSync, test::FaultFs&>(fs).write(dir / "f", "whole").ok());
  CHECK(in_use == 1);
  CHECK(removed == 0);
  CHECK(test::read_file(dir / "f") == "whole");
}

TEST_CASE("a named temp file a sweep took before it was locked costs a fresh name", "[sweep]") {
  // Between the temp file's creation and its lock, a sweep may lock and
  // remove it: the save sees the file unlinked and draws another name.
  test::TempDir dir;
  test::FaultFs fs;
  fs.faults = {test::no_unnamed_files()};
  bool swept_once = false;
  fs.before = [&](Op op, int, const char*) {
    if (op != Op::try_lock || swept_once) return;
    swept_once = true;
    auto swept = AtomicWriter<>().remove_stale_temp_files(dir.path());
    REQUIRE(swept.has_value());
    CHECK(swept->removed == 1);
  };
  REQUIRE(AtomicWriter<FullSync, test::FaultFs&>(fs).write(dir / "f", "whole").ok());
  CHECK(fs.count(Op::create_file) == 2);
  CHECK(test::read_file(dir / "f") == "whole");
  CHECK(test::temp_files_in(dir.path()).empty());
}

TEST_CASE("a named temp file locked by someone else costs a fresh name, never a wait", "[sweep]") {
  test::TempDir dir;
  test::FaultFs fs;
  fs.faults = {test::no_unnamed_files(), Fault{Op::try_lock, 1, EWOULDBLOCK}};
  REQUIRE(AtomicWriter<FullSync, test::FaultFs&>(fs).write(dir / "f", "whole").ok());
  CHECK(fs.count(Op::create_file) == 2);
  CHECK(test::read_file(dir / "f") == "whole");
  CHECK(fs.open_descriptors().empty());

  // Every name locked: the save gives up, in bounded time, with a reason.
  test::FaultFs always;
  always.faults = {test::no_unnamed_files(), Fault{Op::try_lock, 1, EWOULDBLOCK, true}};
  const auto status = AtomicWriter<FullSync, test::FaultFs&>(always).write(dir / "g", "x");
  CHECK(status.step() == Step::create_temp_file);
  CHECK(always.count(Op::create_file) == ATOMIC_STATE_TEMP_NAME_ATTEMPTS);
  CHECK_FALSE(test::fs::exists(dir / "g"));
}

TEST_CASE("a save paused mid-way in another process keeps its named temp file", "[sweep]") {
  test::TempDir dir;
  test::write_plain(dir / "state.json", "old");
  // Killed and reaped, stopped or not, however the case ends: a stopped
  // child left behind would keep meson test waiting on its output forever.
  test::Child child;
  const pid_t pid = child.fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    NamedWriter writer;
    auto tx = writer.begin(dir / "state.json");
    if (!tx || !tx->write("new ").ok()) ::_exit(1);
    child.send();
    ::raise(SIGSTOP);  // paused mid-save, as a debugger or a slow disk would
    if (!tx->write("state").ok() || !tx->commit().ok()) ::_exit(2);
    ::_exit(0);
  }
  REQUIRE(child.receive());
  REQUIRE(child.wait_stopped());
  REQUIRE(test::temp_files_in(dir.path()).size() == 1);

  test::CaptureSink log;
  Manager manager(dir.path(), log);
  auto swept = manager.remove_stale_temp_files();
  REQUIRE(swept.has_value());
  CHECK(swept->in_use == 1);
  CHECK(test::temp_files_in(dir.path()).size() == 1);
  const auto left = log.with("temp files of saves in progress left alone");
  REQUIRE(left.size() == 1);
  CHECK(left[0].level == Level::debug);
  CHECK(left[0].integer("count") == 1);

  child.signal(SIGCONT);
  CHECK(test::exit_code(child.wait()) == 0);
  CHECK(test::read_file(dir / "state.json") == "new state");
  CHECK(test::temp_files_in(dir.path()).empty());
}

TEST_CASE("the named temp file of a killed save is removed by the next manager's first load",
          "[sweep]") {
  test::TempDir dir;
  {
    test::CaptureSink log;
    Manager manager(dir.path(), log);
    REQUIRE(manager.save_state(sample_state()).ok());
  }
  test::Child child;
  const pid_t pid = child.fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    NamedWriter writer;
    auto tx = writer.begin(dir / "state.json");
    if (!tx || !tx->write("{\"oracle_na").ok()) ::_exit(1);
    child.send();
    ::pause();  // killed here
    ::_exit(2);
  }
  REQUIRE(child.receive());
  CHECK(test::exit_code(child.kill()) == 128 + SIGKILL);
  REQUIRE(test::temp_files_in(dir.path()).size() == 1);

  test::CaptureSink log;
  Manager manager(dir.path(), log);
  auto loaded = manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(*loaded == sample_state());
  CHECK(test::temp_files_in(dir.path()).empty());
  const auto removed = log.with("stale temp files removed");
  REQUIRE(removed.size() == 1);
  CHECK(removed[0].level == Level::info);
  CHECK(removed[0].integer("count") == 1);
  CHECK(removed[0].text("path") == dir.path().string());
}

TEST_CASE("a save killed before its commit leaves no temp file where files can be unnamed",
          "[sweep]") {
  if (!test::protocol::unnamed_temp_files()) {
    WARN("the test directory's filesystem has no unnamed files (O_TMPFILE): nothing to prove");
    return;
  }
  test::TempDir dir;
  test::write_plain(dir / "state.json", "old");
  for (const bool written : {false, true}) {
    CAPTURE(written);
    test::Child child;
    const pid_t pid = child.fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      AtomicWriter<> writer;
      auto tx = writer.begin(dir / "state.json");
      if (!tx || !tx->temp_name().empty()) ::_exit(1);  // no name until its commit
      if (written && !tx->write("{\"oracle_na").ok()) ::_exit(1);
      child.send();
      ::pause();  // killed here
      ::_exit(2);
    }
    REQUIRE(child.receive());
    CHECK(test::exit_code(child.kill()) == 128 + SIGKILL);
    CHECK(test::temp_files_in(dir.path()).empty());
    CHECK(test::read_file(dir / "state.json") == "old");
  }
}

TEST_CASE("a manager sweeps once: at its first load, or when asked", "[sweep]") {
  test::TempDir dir;
  test::CaptureSink log;
  test::FaultFs fs;
  FaultManager manager(dir.path(), log, fs);
  (void)manager.load_state();
  CHECK(fs.count(Op::list_directory) == 1);
  (void)manager.load_state();
  CHECK(fs.count(Op::list_directory) == 1);
  REQUIRE(manager.remove_stale_temp_files().has_value());
  CHECK(fs.count(Op::list_directory) == 2);

  test::FaultFs other_fs;
  FaultManager asked_first(dir.path(), log, other_fs);
  REQUIRE(asked_first.remove_stale_temp_files().has_value());
  (void)asked_first.load_state();
  CHECK(other_fs.count(Op::list_directory) == 1);
}

TEST_CASE("a sweep that fails never fails the load", "[sweep]") {
  // The sweep's calls come first in a load (the directory descriptor is the
  // load's), so the first call of each op below is the sweep's.
  struct Row {
    Op op;
    int error;
    bool persistent;
    const char* logged;  // at warn; at debug for a file in use
    bool temp_stays;
  };
  const char* const failed = "stale temp files could not be removed";
  const char* const in_use = "temp files of saves in progress left alone";
  const char* const refused = "temp files this user may not remove left alone";
  const Row rows[] = {
      {Op::list_directory, EIO, true, failed, true},
      {Op::entry_info, EIO, false, failed, true},
      {Op::open_file, EACCES, false, refused, true},  // another user's (a run as root)
      {Op::file_info, EIO, false, failed, true},
      {Op::try_lock, EWOULDBLOCK, true, in_use, true},
      {Op::try_lock, ENOLCK, true, in_use, true},
      {Op::unlink, EPERM, true, refused, true},  // a sticky directory's, of another user
      {Op::unlink, EROFS, true, failed, true},
      {Op::close, EIO, false, "stale temp files removed", false},
  };
  for (const Row& row : rows) {
    CAPTURE(test::op_name(row.op), row.error);
    test::TempDir dir;
    {
      test::CaptureSink ignored;
      Manager seed(dir.path(), ignored);
      REQUIRE(seed.save_state(sample_state()).ok());
    }
    test::write_plain(dir / ".tmp-Stale1", "left by a kill");
    test::CaptureSink log;
    test::FaultFs fs;
    fs.faults = {Fault{row.op, 1, row.error, row.persistent}};
    FaultManager manager(dir.path(), log, fs);

    auto loaded = manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(*loaded == sample_state());
    CHECK(present(dir / ".tmp-Stale1") == row.temp_stays);
    CHECK(fs.open_descriptors().empty());
    const auto records = log.with(row.logged);
    REQUIRE(records.size() == 1);
    if (std::string_view(row.logged) == failed) {
      CHECK(records[0].level == Level::warn);
      CHECK(records[0].text("error").find(std::strerror(row.error)) != std::string::npos);
      CHECK(records[0].text("error").find(dir.path().string()) != std::string::npos);
    }
    CHECK(log.with("state loaded").size() == 1);
  }
}

TEST_CASE("a failed sweep says which step, which path and why", "[sweep]") {
  test::TempDir dir;
  test::write_plain(dir / ".tmp-Stale2", "x");
  test::FaultFs fs;
  fs.faults = {Fault{Op::unlink, 1, EROFS, true}};
  AtomicWriter<FullSync, test::FaultFs&> writer(fs);
  auto swept = writer.remove_stale_temp_files(dir.path());
  REQUIRE_FALSE(swept.has_value());
  CHECK(swept.status().step() == Step::remove_temp_file);
  CHECK(swept.status().path() == (dir / ".tmp-Stale2").string());
  CHECK(swept.status().code().value() == EROFS);
  CHECK(swept.status().message() ==
        "remove temp file " + (dir / ".tmp-Stale2").string() + ": Read-only file system");
  CHECK(fs.open_descriptors().empty());
}

TEST_CASE("a temp file this user may not open or remove is left and counted, no failure",
          "[sweep]") {
  for (const auto& [op, error] : {std::pair{Op::open_file, EACCES}, std::pair{Op::unlink, EPERM}}) {
    CAPTURE(test::op_name(op), error);
    test::TempDir dir;
    test::write_plain(dir / ".tmp-Stale2", "x");
    test::write_plain(dir / ".tmp-Stale3", "x");
    test::FaultFs fs;
    fs.faults = {Fault{op, 1, error}};
    AtomicWriter<FullSync, test::FaultFs&> writer(fs);
    auto swept = writer.remove_stale_temp_files(dir.path());
    REQUIRE(swept.has_value());
    CHECK(swept->not_permitted == 1);
    CHECK(swept->removed == 1);
    CHECK(fs.open_descriptors().empty());
  }
}

TEST_CASE("a sweep removes only its own user's temp files, even as root", "[sweep]") {
  // In a shared directory (/tmp, a home), a file of another user's under a
  // temp file's name is theirs, whoever sweeps: root's sweep would remove
  // it, as would a sweep in a directory whose owner may remove any entry.
  test::TempDir dir;
  test::write_plain(dir / ".tmp-Theirs", "another user's", 0600);
  test::write_plain(dir / ".tmp-Theirs.1", "another user's", 0600);
  test::write_plain(dir / ".tmp-Mine00", "stale", 0600);
  for (const char* theirs : {".tmp-Theirs", ".tmp-Theirs.1"})
    REQUIRE(::chown((dir / theirs).c_str(), 65534, 65534) == 0);
  auto swept = AtomicWriter<>{}.remove_stale_temp_files(dir.path());
  REQUIRE(swept.has_value());
  CHECK(swept->removed == 1);
  CHECK(swept->not_permitted == 2);
  CHECK(present(dir / ".tmp-Theirs"));
  CHECK(present(dir / ".tmp-Theirs.1"));
  CHECK_FALSE(present(dir / ".tmp-Mine00"));
}

TEST_CASE("a claim that is not a regular file is never opened, and guards nothing", "[sweep]") {
  // A symlink under a claim's name could make the sweep open, and lock,
  // any file it leads to (a device, another program's lock file).
  test::TempDir dir;
  test::write_plain(dir / "outside", "not the sweep's", 0600);
  test::fs::create_directories(dir / "d");
  test::fs::create_symlink("../outside", dir / "d" / ".tmp-AAAAAA");
  test::write_plain(dir / "d" / ".tmp-AAAAAA.1", "stale", 0600);
  test::FaultFs fs;
  AtomicWriter<FullSync, test::FaultFs&> writer(fs);
  auto swept = writer.remove_stale_temp_files((dir / "d").string());
  REQUIRE(swept.has_value());
  for (const test::Call& c : fs.calls)
    CHECK_FALSE((c.op == Op::open_file && c.name == ".tmp-AAAAAA"));
  CHECK(swept->removed == 1);      // no live handle has that claim
  CHECK(swept->not_regular == 1);  // the symlink itself
  CHECK_FALSE(present(dir / "d" / ".tmp-AAAAAA.1"));
  CHECK(test::fs::is_symlink(dir / "d" / ".tmp-AAAAAA"));
  CHECK(fs.open_descriptors().empty());
}

// ------------------------------------------------ no save waits on a lock --

namespace {

enum class LockKind { flock_exclusive, flock_shared, fcntl_write };

// Takes `kind` of lock on `path` (a directory or a file) and holds it until
// the descriptor closes; false when the lock could not be taken.
bool hold_lock(const test::fs::path& path, LockKind kind, int& fd) {
  fd = ::open(path.c_str(), (kind == LockKind::fcntl_write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return false;
  if (kind == LockKind::fcntl_write) {
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    return ::fcntl(fd, F_SETLK, &lock) == 0;
  }
  return ::flock(fd, kind == LockKind::flock_shared ? LOCK_SH : LOCK_EX) == 0;
}

}  // namespace

TEST_CASE("a save never waits on a lock anyone else holds", "[sweep]") {
  struct Row {
    const char* holder;
    const char* locked;  // "dir", "target" or "parent"
    LockKind kind;
    bool other_process;
    uid_t uid;  // of the other process; 0: root
  };
  const Row rows[] = {
      {"this process, flock LOCK_EX", "dir", LockKind::flock_exclusive, false, 0},
      {"this process, flock LOCK_SH", "dir", LockKind::flock_shared, false, 0},
      {"another process, flock LOCK_EX", "dir", LockKind::flock_exclusive, true, 0},
      {"uid 65534, flock LOCK_EX on a 0755 directory", "dir", LockKind::flock_exclusive, true,
       65534},
      {"another process, flock LOCK_EX on the target", "target", LockKind::flock_exclusive, true,
       0},
      {"another process, an fcntl write lock on the target", "target", LockKind::fcntl_write, true,
       0},
      {"another process, flock LOCK_EX on the parent", "parent", LockKind::flock_exclusive, true,
       0},
  };
  for (const Row& row : rows) {
    CAPTURE(row.holder, row.locked);
    test::TempDir root;
    const test::fs::path dir = root / "collector";
    test::fs::create_directory(dir);
    ::chmod(root.path().c_str(), 0755);
    ::chmod(dir.c_str(), 0755);
    {
      test::CaptureSink ignored;
      Manager seed(dir, ignored);
      REQUIRE(seed.save_state(sample_state()).ok());
    }
    ::chmod((dir / "state.json").c_str(), 0666);  // so uid 65534 can open it too
    const test::fs::path locked = std::string_view(row.locked) == "dir"      ? dir
                                  : std::string_view(row.locked) == "target" ? dir / "state.json"
                                                                             : root.path();
    int held = -1;
    test::Child holder;
    if (!row.other_process) {
      REQUIRE(hold_lock(locked, row.kind, held));
    } else {
      const pid_t pid = holder.fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        if (row.uid != 0 && (::setgid(row.uid) != 0 || ::setuid(row.uid) != 0)) ::_exit(3);
        holder.die_with_parent();  // again: a change of user undid it
        int fd = -1;
        if (!hold_lock(locked, row.kind, fd)) ::_exit(4);
        holder.send();
        ::pause();  // holds the lock until killed
        ::_exit(0);
      }
      REQUIRE(holder.receive());
    }

    // A save that waited would be killed by the alarm: a failure in
    // seconds, not a hang.
    ::alarm(20);
    test::CaptureSink log;
    Manager manager(dir, log);
    const auto loaded = manager.load_state();
    State next = sample_state();
    next.last_updated += 60;
    const atomic_state::Status saved = manager.save_state(next);
    const atomic_state::Status written = atomic_state::write_atomic(dir / "other.json", "x");
    ::alarm(0);
    CHECK(loaded.has_value());
    CHECK(saved.ok());
    CHECK(written.ok());
    if (row.other_process) {
      CHECK(holder.running());  // still holding it
      holder.kill();
    }
    if (held >= 0) ::close(held);
    auto back = manager.load_state();
    REQUIRE(back.has_value());
    CHECK(*back == next);
  }
}

TEST_CASE("a process forked during a sweep never delays a save", "[sweep]") {
  // The child inherits every descriptor the sweep holds at that moment,
  // locks included, and keeps them for seconds: the save must not wait for
  // it, so the child must still be alive when the save is over.
  test::TempDir dir;
  {
    test::CaptureSink ignored;
    Manager seed(dir.path(), ignored);
    REQUIRE(seed.save_state(sample_state()).ok());
  }
  test::write_plain(dir / ".tmp-Stale3", "left by a kill");
  for (const Op at : {Op::list_directory, Op::try_lock, Op::unlink, Op::close}) {
    CAPTURE(test::op_name(at));
    test::write_plain(dir / ".tmp-Stale3", "left by a kill");
    test::CaptureSink log;
    test::FaultFs fs;
    test::Child child;
    fs.before = [&](Op op, int, const char*) {
      if (op != at || child.pid() != -1) return;
      if (child.fork() == 0) {
        ::sleep(30);
        ::_exit(0);
      }
    };
    FaultManager manager(dir.path(), log, fs);
    ::alarm(20);
    const auto loaded = manager.load_state();
    fs.before = nullptr;
    const atomic_state::Status saved = manager.save_state(sample_state());
    ::alarm(0);
    REQUIRE(child.pid() > 0);
    CHECK(loaded.has_value());
    CHECK(saved.ok());
    CHECK(child.running());  // the save did not wait for it
  }
}
