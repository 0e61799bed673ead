// StateManager over a filesystem that fails on demand: every call of a save
// and of a load, failed in turn. The previous state always survives, no temp
// file or descriptor is left, and "state saved" is never logged after a
// failure.
#include <fcntl.h>

#include <cstdio>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_logger.hpp"
#include "support/catch.hpp"
#include "support/fault_fs.hpp"
#include "support/files.hpp"

using atomic_state::Level;
using atomic_state::State;
using atomic_state::Step;
using test::Fault;
using test::Op;

namespace {

using FaultManager =
    atomic_state::StateManager<test::CaptureLogger&, State,
                               atomic_state::AtomicWriter<atomic_state::FullSync, test::FaultFs&>>;

std::int64_t fixed_clock() noexcept { return 1764000000; }

State state_number(int n) {
  State s;
  s.oracle_name = "switchboard";
  s.last_updated = 1700000000 + n;
  s.last_updated_iso = atomic_state::to_rfc3339(s.last_updated);
  s.last_protocol_count = n;
  s.last_tvs = 1e9 + n;
  return s;
}

struct Setup {
  test::TempDir dir;
  test::FaultFs fs;
  test::CaptureLogger log;
  FaultManager manager{dir.path(), log, FaultManager::writer_type(fs)};
  Setup() { manager.set_clock(&fixed_clock); }
  std::string state_path() const { return manager.state_file().string(); }
  /// From here on: a fresh policy (occurrences count anew), an empty log,
  /// and these faults.
  void arm(std::vector<Fault> planned) {
    fs = test::FaultFs();
    log.clear();
    fs.faults = std::move(planned);
  }
};

// The calls a clean run of `action` makes, in order, as (op, occurrence).
template <class Prepare, class Action>
std::vector<std::pair<Op, int>> calls_of(Prepare prepare, Action action) {
  Setup s;
  prepare(s);
  s.arm({});
  (void)action(s);
  std::vector<std::pair<Op, int>> out;
  int seen[test::op_count] = {};
  for (const test::Call& c : s.fs.calls) out.emplace_back(c.op, ++seen[static_cast<int>(c.op)]);
  return out;
}

const int kErrors[] = {EIO, ENOSPC, EDQUOT, EACCES, EPERM, EROFS, EXDEV, EMFILE};

}  // namespace

TEST_CASE("a save over an existing state survives the failure of any call", "[state-faults]") {
  const auto prepare = [](Setup& s) { REQUIRE(s.manager.save_state(state_number(1)).ok()); };
  const auto save = [](Setup& s) { return s.manager.save_state(state_number(2)); };
  const auto calls = calls_of(prepare, save);
  // open dir, lock, create, write, chmod, sync, close, rename, sync, close
  REQUIRE(calls.size() == 10);

  int cases = 0;
  for (const auto& [op, occurrence] : calls)
    for (const int error : kErrors)
      for (const bool persistent : {false, true}) {
        CAPTURE(test::op_name(op), occurrence, error, persistent);
        Setup s;
        prepare(s);
        const std::string before = test::read_file(s.state_path());
        s.arm({Fault{op, occurrence, error, persistent}});
        const atomic_state::Status status = save(s);
        ++cases;

        CHECK(s.fs.open_descriptors().empty());
        CHECK(test::temp_files_in(s.dir.path()).empty());
        // Closing the directory descriptor at the very end loses nothing;
        // without the directory lock a save only loses the sweep's respect.
        const bool harmless = (op == Op::close && occurrence == 2) || op == Op::lock_directory;
        if (harmless) {
          CHECK(status.ok());
          continue;
        }
        REQUIRE_FALSE(status.ok());
        CHECK(status.code().value() == error);
        CHECK(status.message().rfind("write state file: ", 0) == 0);
        CHECK(s.log.with("state saved").empty());
        if (status.step() == Step::sync_directory && op == Op::sync_full && occurrence == 2) {
          // The rename happened; only its durability is in doubt.
          CHECK(status.replaced());
          auto now = s.manager.load_state();
          REQUIRE(now.has_value());
          CHECK(*now == state_number(2));
        } else {
          CHECK_FALSE(status.replaced());
          CHECK(test::read_file(s.state_path()) == before);
        }
      }
  CHECK(cases == 10 * 8 * 2);
}

TEST_CASE("a first save, into missing directories, survives the failure of any call",
          "[state-faults]") {
  const auto nothing = [](Setup&) {};
  const auto save_nested = [](Setup& s) {
    FaultManager nested(s.dir / "a" / "b", s.log, FaultManager::writer_type(s.fs));
    return nested.save_state(state_number(1));
  };
  const auto calls = calls_of(nothing, save_nested);
  REQUIRE(calls.size() > 10);
  int cases = 0;
  for (const auto& [op, occurrence] : calls)
    for (const int error : {EIO, ENOSPC, EACCES}) {
      CAPTURE(test::op_name(op), occurrence, error);
      Setup s;
      s.fs.faults = {Fault{op, occurrence, error, true}};
      const atomic_state::Status status = save_nested(s);
      ++cases;
      CHECK(s.fs.open_descriptors().empty());
      if (status.ok()) continue;  // a failed close of a read-only descriptor
      CHECK(s.log.with("state saved").empty());
      CHECK(status.message().rfind("write state file: ", 0) == 0);
      if (!status.replaced()) CHECK_FALSE(test::fs::exists(s.dir / "a" / "b" / "state.json"));
      if (test::fs::exists(s.dir / "a" / "b"))
        CHECK(test::temp_files_in(s.dir / "a" / "b").empty());
    }
  INFO(cases << " cases");
  CHECK(cases == static_cast<int>(calls.size()) * 3);
}

TEST_CASE("interrupted calls (EINTR) and short writes still end in a saved state",
          "[state-faults]") {
  const auto prepare = [](Setup& s) { REQUIRE(s.manager.save_state(state_number(1)).ok()); };
  const auto save = [](Setup& s) { return s.manager.save_state(state_number(2)); };
  for (const auto& [op, occurrence] : calls_of(prepare, save)) {
    if (op == Op::close) continue;  // never retried: covered by the table above
    CAPTURE(test::op_name(op), occurrence);
    Setup s;
    prepare(s);
    s.arm({Fault{op, occurrence, EINTR, false}});
    REQUIRE(save(s).ok());
    CHECK(s.log.with("state saved").size() == 1);
  }
  for (const std::size_t bytes : {std::size_t{0}, std::size_t{1}, std::size_t{100}}) {
    CAPTURE(bytes);
    Setup s;
    prepare(s);
    s.arm({Fault{Op::write, 1, 0, false, bytes}});
    REQUIRE(save(s).ok());
    auto back = s.manager.load_state();
    REQUIRE(back.has_value());
    CHECK(*back == state_number(2));
  }
}

TEST_CASE("a load whose reading fails is an error that touches nothing", "[state-faults]") {
  // The sweep of temp files is done (and has a table of its own below).
  const auto prepare = [](Setup& s) {
    REQUIRE(s.manager.save_state(state_number(1)).ok());
    REQUIRE(s.manager.remove_stale_temp_files().has_value());
  };
  const auto load = [](Setup& s) { return s.manager.load_state(); };
  const auto calls = calls_of(prepare, load);
  REQUIRE(calls.size() == 5);  // open, fstat, read, read (end), close

  int cases = 0;
  for (const auto& [op, occurrence] : calls)
    for (const int error : {EIO, EACCES, EPERM, ENOMEM, EINTR})
      for (const bool persistent : {false, true}) {
        CAPTURE(test::op_name(op), occurrence, error, persistent);
        Setup s;
        prepare(s);
        const std::string before = test::read_file(s.state_path());
        s.arm({Fault{op, occurrence, error, persistent}});
        auto loaded = load(s);
        ++cases;
        CHECK(s.fs.open_descriptors().empty());
        CHECK(test::read_file(s.state_path()) == before);
        CHECK(test::names_in(s.dir.path()).size() == 1);
        CHECK(s.log.with("state file corrupted, treating as first run").empty());
        CHECK(s.log.with("no state file found, treating as first run").empty());
        const bool harmless = op == Op::close || (error == EINTR && !persistent);
        if (harmless) {
          REQUIRE(loaded.has_value());
          CHECK(*loaded == state_number(1));
          continue;
        }
        REQUIRE_FALSE(loaded.has_value());
        CHECK(loaded.status().code().value() == error);
        CHECK(loaded.status().path() == s.state_path());
        CHECK(loaded.status().message().rfind("load state file: ", 0) == 0);
      }
  CHECK(cases == 5 * 5 * 2);
}

TEST_CASE("a state file read one byte at a time loads the same", "[state-faults]") {
  Setup s;
  REQUIRE(s.manager.save_state(state_number(3)).ok());
  s.fs.faults = {Fault{Op::read, 1, 0, true, 1}};
  auto loaded = s.manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(*loaded == state_number(3));
  CHECK(s.fs.count(Op::read) > 100);
}

TEST_CASE("a corrupt file that cannot be moved aside is an error, and stays", "[state-faults]") {
  const auto prepare = [](Setup& s) {
    test::write_plain(s.state_path(), "{corrupt");
    REQUIRE(s.manager.remove_stale_temp_files().has_value());
  };
  const auto load = [](Setup& s) { return s.manager.load_state(); };
  const auto calls = calls_of(prepare, load);
  int cases = 0;
  for (const auto& [op, occurrence] : calls) {
    // Only the moving aside: after the read (the reading calls are above).
    if (op != Op::open_directory && op != Op::file_info_at && op != Op::rename_noreplace) continue;
    for (const int error : {EIO, EACCES, EROFS, EPERM}) {
      CAPTURE(test::op_name(op), error);
      Setup s;
      prepare(s);
      s.arm({Fault{op, occurrence, error, true}});
      auto loaded = load(s);
      ++cases;
      REQUIRE_FALSE(loaded.has_value());
      CHECK(loaded.status().step() == Step::move_aside);
      CHECK(loaded.status().code().value() == error);
      CHECK(loaded.status().message().rfind("load state file: move aside ", 0) == 0);
      CHECK(test::read_file(s.state_path()) == "{corrupt");
      CHECK(test::names_in(s.dir.path()).size() == 1);
      CHECK(s.fs.open_descriptors().empty());
      CHECK(s.log.size() == 0);
    }
  }
  CHECK(cases == 3 * 4);
}

TEST_CASE("a corrupt file replaced by a save while it was read is left in place",
          "[state-faults]") {
  Setup s;
  test::write_plain(s.state_path(), "{corrupt");
  test::write_plain(s.dir / "good.json", R"({"last_updated": 5})");
  // Just before the check that the file is still the one read, a writer
  // renames a good state over it.
  s.fs.before = [&](Op op, int, const char*) {
    if (op == Op::file_info_at) std::rename((s.dir / "good.json").c_str(), s.state_path().c_str());
  };
  auto loaded = s.manager.load_state();
  REQUIRE_FALSE(loaded.has_value());
  CHECK(loaded.status().step() == Step::move_aside);
  CHECK(loaded.status().code() == std::errc::resource_unavailable_try_again);
  CHECK(test::read_file(s.state_path()) == R"({"last_updated": 5})");
  s.fs.before = nullptr;
  auto again = s.manager.load_state();
  REQUIRE(again.has_value());
  CHECK(again->last_updated == 5);
}

TEST_CASE("the corrupt file is moved aside without replacing anything", "[state-faults]") {
  Setup s;
  test::write_plain(s.state_path(), "{corrupt");
  const std::string taken = s.state_path() + ".corrupt-1764000000";
  test::write_plain(taken, "evidence from before");
  auto loaded = s.manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(test::read_file(taken) == "evidence from before");
  CHECK(test::read_file(taken + ".1") == "{corrupt");
  CHECK(s.fs.count(Op::rename_noreplace) == 2);
  CHECK(s.fs.count(Op::rename) == 0);
}

TEST_CASE("every descriptor a load, a sweep, a quarantine or a save uses is close-on-exec",
          "[state-faults]") {
  Setup s;
  test::write_plain(s.state_path(), "{corrupt");
  test::write_plain(s.dir / ".tmp-Stale3", "left by a kill");
  int examined = 0, leaky = 0;
  s.fs.before = [&](Op, int fd, const char*) {
    if (fd < 0) return;
    ++examined;
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0 || !(flags & FD_CLOEXEC)) ++leaky;
  };
  auto loaded = s.manager.load_state();  // sweeps, reads, moves the corrupt file aside
  REQUIRE(loaded.has_value());
  REQUIRE(s.manager.save_state(state_number(4)).ok());
  REQUIRE(s.manager.load_state().has_value());
  CHECK(examined > 15);
  CHECK(leaky == 0);
  CHECK(s.log.with("stale temp files removed").size() == 1);
  CHECK(s.log.with("state file corrupted, treating as first run").size() == 1);
}
