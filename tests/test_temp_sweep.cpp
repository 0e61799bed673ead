// The sweep of temp files that killed saves leave behind: it removes exactly
// the library's own stale temp files, never one of a save still running (in
// this process or another, even one paused mid-save), never anything else,
// and its own failures never fail a load.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_logger.hpp"
#include "support/catch.hpp"
#include "support/fault_fs.hpp"
#include "support/files.hpp"

using atomic_state::AtomicWriter;
using atomic_state::FullSync;
using atomic_state::Level;
using atomic_state::State;
using atomic_state::Step;
using test::Fault;
using test::Op;

namespace {

using Manager = atomic_state::StateManager<test::CaptureLogger&>;
using FaultManager =
    atomic_state::StateManager<test::CaptureLogger&, State, AtomicWriter<FullSync, test::FaultFs&>>;

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

// A pipe a child writes one byte to when it reached the point under test.
struct Signal {
  int fds[2] = {-1, -1};
  Signal() { REQUIRE(::pipe(fds) == 0); }
  ~Signal() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  void send() { (void)!::write(fds[1], "x", 1); }
  bool wait() {
    char c;
    return ::read(fds[0], &c, 1) == 1;
  }
};

int exit_status_of(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
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
  CHECK_FALSE(swept->busy);
  for (const Row& row : rows) {
    CAPTURE(row.name);
    CHECK(present(dir / row.name) == !row.removed);
  }
  CHECK(test::read_file(dir / "precious") == "keep me");
}

TEST_CASE("a directory of many stale temp files is swept in several passes", "[sweep]") {
  test::TempDir dir;
  for (int i = 0; i < 300; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, ".tmp-M%05d", i);
    test::write_plain(dir / name, "x");
  }
  AtomicWriter<> writer;
  auto swept = writer.remove_stale_temp_files(dir.path());
  REQUIRE(swept.has_value());
  CHECK(swept->removed == 300);
  CHECK(test::names_in(dir.path()).empty());
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

TEST_CASE("a save in progress in this process keeps its temp file", "[sweep]") {
  test::TempDir dir;
  AtomicWriter<> saving;
  auto tx = saving.begin(dir / "f");
  REQUIRE(tx.has_value());
  REQUIRE(tx->write("half").ok());
  const std::string temp(tx->temp_name());

  AtomicWriter<> sweeping;
  auto swept = sweeping.remove_stale_temp_files(dir.path());
  REQUIRE(swept.has_value());
  CHECK(swept->busy);
  CHECK(swept->removed == 0);
  CHECK(present(dir / temp));

  REQUIRE(tx->write(" and the rest").ok());
  REQUIRE(tx->commit().ok());
  CHECK(test::read_file(dir / "f") == "half and the rest");
  // Once the save is over the directory is free again.
  swept = sweeping.remove_stale_temp_files(dir.path());
  REQUIRE(swept.has_value());
  CHECK_FALSE(swept->busy);
}

TEST_CASE("a save paused mid-way in another process keeps its temp file", "[sweep]") {
  test::TempDir dir;
  test::write_plain(dir / "state.json", "old");
  Signal reached;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    AtomicWriter<> writer;
    auto tx = writer.begin(dir / "state.json");
    if (!tx || !tx->write("new ").ok()) ::_exit(1);
    reached.send();
    ::raise(SIGSTOP);  // paused mid-save, as a debugger or a slow disk would
    if (!tx->write("state").ok() || !tx->commit().ok()) ::_exit(2);
    ::_exit(0);
  }
  REQUIRE(reached.wait());
  int status = 0;
  REQUIRE(::waitpid(child, &status, WUNTRACED) == child);
  REQUIRE(WIFSTOPPED(status));
  REQUIRE(test::temp_files_in(dir.path()).size() == 1);

  test::CaptureLogger log;
  Manager manager(dir.path(), log);
  auto swept = manager.remove_stale_temp_files();
  REQUIRE(swept.has_value());
  CHECK(swept->busy);
  CHECK(test::temp_files_in(dir.path()).size() == 1);
  CHECK(log.with("a save is in progress, stale temp files left for later").size() == 1);

  ::kill(child, SIGCONT);
  CHECK(exit_status_of(child) == 0);
  CHECK(test::read_file(dir / "state.json") == "new state");
  CHECK(test::temp_files_in(dir.path()).empty());
}

TEST_CASE("the temp file of a killed save is removed by the next manager's first load", "[sweep]") {
  test::TempDir dir;
  {
    test::CaptureLogger log;
    Manager manager(dir.path(), log);
    REQUIRE(manager.save_state(sample_state()).ok());
  }
  Signal reached;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    AtomicWriter<> writer;
    auto tx = writer.begin(dir / "state.json");
    if (!tx || !tx->write("{\"oracle_na").ok()) ::_exit(1);
    reached.send();
    ::pause();  // killed here
    ::_exit(2);
  }
  REQUIRE(reached.wait());
  ::kill(child, SIGKILL);
  CHECK(exit_status_of(child) == 128 + SIGKILL);
  REQUIRE(test::temp_files_in(dir.path()).size() == 1);

  test::CaptureLogger log;
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

TEST_CASE("a manager sweeps once: at its first load, or when asked", "[sweep]") {
  test::TempDir dir;
  test::CaptureLogger log;
  test::FaultFs fs;
  FaultManager manager(dir.path(), log, FaultManager::writer_type(fs));
  (void)manager.load_state();
  CHECK(fs.count(Op::list_directory) == 1);
  (void)manager.load_state();
  CHECK(fs.count(Op::list_directory) == 1);
  REQUIRE(manager.remove_stale_temp_files().has_value());
  CHECK(fs.count(Op::list_directory) == 2);

  test::FaultFs other_fs;
  FaultManager asked_first(dir.path(), log, FaultManager::writer_type(other_fs));
  REQUIRE(asked_first.remove_stale_temp_files().has_value());
  (void)asked_first.load_state();
  CHECK(other_fs.count(Op::list_directory) == 1);
}

TEST_CASE("a sweep that fails never fails the load", "[sweep]") {
  struct Row {
    Op op;
    int error;
    const char* logged;  // message at warn, or at debug for a busy directory
    bool temp_stays;
  };
  const Row rows[] = {
      {Op::open_directory, EACCES, "stale temp files could not be removed", true},
      {Op::open_directory, EIO, "stale temp files could not be removed", true},
      {Op::lock_directory, EWOULDBLOCK, "a save is in progress, stale temp files left for later",
       true},
      {Op::lock_directory, ENOLCK, "a save is in progress, stale temp files left for later", true},
      {Op::list_directory, EIO, "stale temp files could not be removed", true},
      {Op::entry_info, EIO, "stale temp files could not be removed", true},
      {Op::unlink, EPERM, "stale temp files could not be removed", true},
      {Op::unlink, EROFS, "stale temp files could not be removed", true},
      {Op::close, EIO, "stale temp files removed", false},
  };
  for (const Row& row : rows) {
    CAPTURE(test::op_name(row.op), row.error);
    test::TempDir dir;
    {
      test::CaptureLogger ignored;
      Manager seed(dir.path(), ignored);
      REQUIRE(seed.save_state(sample_state()).ok());
    }
    test::write_plain(dir / ".tmp-Stale1", "left by a kill");
    test::CaptureLogger log;
    test::FaultFs fs;
    fs.faults = {Fault{row.op, 1, row.error, true}};
    FaultManager manager(dir.path(), log, FaultManager::writer_type(fs));

    auto loaded = manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(*loaded == sample_state());
    CHECK(present(dir / ".tmp-Stale1") == row.temp_stays);
    CHECK(fs.open_descriptors().empty());
    const auto records = log.with(row.logged);
    REQUIRE(records.size() == 1);
    if (std::string_view(row.logged) == "stale temp files could not be removed") {
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
  fs.faults = {Fault{Op::unlink, 1, EPERM, true}};
  AtomicWriter<FullSync, test::FaultFs&> writer(fs);
  auto swept = writer.remove_stale_temp_files(dir.path());
  REQUIRE_FALSE(swept.has_value());
  CHECK(swept.status().step() == Step::remove_temp_file);
  CHECK(swept.status().path() == (dir / ".tmp-Stale2").string());
  CHECK(swept.status().code().value() == EPERM);
  CHECK(swept.status().message() ==
        "remove temp file " + (dir / ".tmp-Stale2").string() + ": Operation not permitted");
  CHECK(fs.open_descriptors().empty());
}
