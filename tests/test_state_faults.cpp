// StateManager over a filesystem that fails on demand: every call of a save
// and of a load, failed in turn. The previous state always survives, no temp
// file or descriptor is left, and "state saved" is never logged after a
// failure.
#include <fcntl.h>

#include <cstdio>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

namespace {

using FaultManager =
    atomic_state::StateManager<test::CaptureSink&, State, atomic_state::FullSync, test::FaultFs&>;

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
  explicit Setup(atomic_state::StateOptions options = {})
      : manager(dir.path(), log, fs, std::move(options)) {}
  test::TempDir dir;
  test::FaultFs fs;
  test::CaptureSink log;
  FaultManager manager;
  std::string state_path() const { return manager.state_file(); }
  std::string copy_path(const char* suffix = "") const {
    return state_path() + ".corrupt-" + std::to_string(kStamp) + suffix;
  }
  void plant_corrupt(const char* text = "{corrupt") const {
    test::write_plain(state_path(), text);
    test::set_mtime(state_path(), kStamp);
  }
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
std::vector<std::pair<Op, int>> calls_of(Prepare prepare, Action action,
                                         const atomic_state::StateOptions& options = {}) {
  Setup s(options);
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
  const protocol::Calls expected = protocol::overwrite_full_sync();
  {
    Setup s;
    prepare(s);
    s.arm({});
    REQUIRE(save(s).ok());
    REQUIRE(s.fs.ops() == protocol::ops(expected));
  }

  int cases = 0;
  for (const auto& [call, k] : protocol::numbered(expected))
    for (const int error : kErrors)
      for (const bool persistent : {false, true}) {
        CAPTURE(test::op_name(call.op), k, error, persistent);
        Setup s;
        prepare(s);
        const std::string before = test::read_file(s.state_path());
        s.arm({Fault{call.op, k, error, persistent}});
        const atomic_state::Status status = save(s);
        ++cases;

        CHECK(s.fs.open_descriptors().empty());
        CHECK(test::temp_files_in(s.dir.path()).empty());
        const bool later = persistent && call.later_fails_as != Step::none;
        const Step step = later ? call.later_fails_as : call.fails_as;
        if (step == Step::none) {  // a call the save survives
          CHECK(status.ok());
          continue;
        }
        REQUIRE_FALSE(status.ok());
        CHECK(status.step() == step);
        CHECK(status.code().value() == error);
        CHECK(status.message().rfind("write state file: ", 0) == 0);
        CHECK(s.log.with("state saved").empty());
        if (later ? call.later_replaced : call.replaced) {
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
  CHECK(cases == static_cast<int>(expected.size()) * 8 * 2);
}

TEST_CASE("a first save, into missing directories, survives the failure of any call",
          "[state-faults]") {
  const auto nothing = [](Setup&) {};
  const auto save_nested = [](Setup& s) {
    FaultManager nested(s.dir / "a" / "b", s.log, s.fs);
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
  // The sweep of temp files is done (and has a table of its own elsewhere).
  const auto prepare = [](Setup& s) {
    REQUIRE(s.manager.save_state(state_number(1)).ok());
    REQUIRE(s.manager.remove_stale_temp_files().has_value());
  };
  const auto load = [](Setup& s) { return s.manager.load_state(); };
  const auto calls = calls_of(prepare, load);
  // After the first load, the file by its path (no directory opened), its
  // size, its bytes and the end, then closed: what any reader does.
  REQUIRE(
      calls ==
      std::vector<std::pair<Op, int>>{
          {Op::open_file, 1}, {Op::file_info, 1}, {Op::read, 1}, {Op::read, 2}, {Op::close, 1}});

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

TEST_CASE("a corrupt file whose copy cannot be kept is an error, and stays", "[state-faults]") {
  const auto prepare = [](Setup& s) {
    s.plant_corrupt();
    REQUIRE(s.manager.remove_stale_temp_files().has_value());
  };
  const auto load = [](Setup& s) { return s.manager.load_state(); };
  // The copy is a write_new of the bytes read: the calls of a save, but a
  // rename that never replaces. They follow the read, the listing of the
  // copies of the file's time, and the look for a copy already there.
  const auto calls = calls_of(prepare, load);
  const std::size_t start = 8;  // open dir, open, fstat, read, read, close; list; look for a copy
  REQUIRE(calls.size() > start);
  REQUIRE(calls[start - 1].first == Op::open_file);
  const protocol::Calls copy = protocol::write_new_full_sync();
  // Then the count of the copies kept (a listing, one look at the one
  // copy), and the load's directory closed.
  REQUIRE(calls.size() == start + copy.size() + 3);
  int cases = 0;
  for (std::size_t i = 0; i < copy.size(); ++i) {
    const protocol::Call& call = copy[i];
    REQUIRE(calls[start + i].first == call.op);
    const int k = calls[start + i].second;
    for (const int error : {EIO, EACCES, EROFS, ENOSPC}) {
      CAPTURE(test::op_name(call.op), k, error);
      Setup s;
      prepare(s);
      s.arm({Fault{call.op, k, error, false}});
      auto loaded = load(s);
      ++cases;
      CHECK(test::read_file(s.state_path()) == "{corrupt");
      CHECK(s.fs.open_descriptors().empty());
      CHECK(test::temp_files_in(s.dir.path()).empty());
      if (call.fails_as == Step::none || call.replaced) {
        // The copy is kept (after the rename only its durability is in doubt).
        REQUIRE(loaded.has_value());
        CHECK(test::read_file(s.copy_path()) == "{corrupt");
        CHECK(s.log.with("state file corrupted, treating as first run").size() == 1);
        continue;
      }
      REQUIRE_FALSE(loaded.has_value());
      CHECK(loaded.status().step() == Step::copy_aside);
      CHECK(loaded.status().code().value() == error);
      CHECK(loaded.status().message().rfind(
                "load state file: copy aside " + s.state_path() + " to " + s.copy_path() + ": ",
                0) == 0);
      CHECK(loaded.status().path() == s.state_path());
      CHECK(loaded.status().target() == s.copy_path());
      CHECK_FALSE(loaded.status().detail().empty());  // which step of the copy, on what
      CHECK(test::names_in(s.dir.path()).size() == 1);
      CHECK(s.log.size() == 0);
    }
  }
  CHECK(cases == static_cast<int>(copy.size()) * 4);
}

TEST_CASE(
    "a corrupt file replaced by a save while it was read: the save stays, the bytes read "
    "are kept",
    "[state-faults]") {
  Setup s;
  s.plant_corrupt();
  test::write_plain(s.dir / "good.json", R"({"last_updated": 5})");
  // While the copy is being written, a writer renames a good state over the
  // corrupt file.
  s.fs.before = [&](Op op, int, const char*) {
    if (op == Op::create_file || op == Op::open_unnamed)  // the copy's temp file
      std::rename((s.dir / "good.json").c_str(), s.state_path().c_str());
  };
  auto loaded = s.manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(*loaded == State{});  // what was read was corrupt
  CHECK(test::read_file(s.state_path()) == R"({"last_updated": 5})");
  CHECK(test::read_file(s.copy_path()) == "{corrupt");
  s.fs.before = nullptr;
  auto again = s.manager.load_state();
  REQUIRE(again.has_value());
  CHECK(again->last_updated == 5);
}

TEST_CASE("a copy never replaces another file", "[state-faults]") {
  Setup s;
  s.plant_corrupt();
  test::write_plain(s.copy_path(), "evidence from before");
  auto loaded = s.manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(test::read_file(s.copy_path()) == "evidence from before");
  CHECK(test::read_file(s.copy_path(".1")) == "{corrupt");
  CHECK(s.fs.count(Op::rename_noreplace) == 1);
  CHECK(s.fs.count(Op::rename) == 0);
}

TEST_CASE("every descriptor a load, a sweep, a quarantine or a save uses is close-on-exec",
          "[state-faults]") {
  Setup s;
  s.plant_corrupt();
  test::write_plain(s.dir / ".tmp-Stale3", "left by a kill");
  int examined = 0, leaky = 0;
  s.fs.before = [&](Op, int fd, const char*) {
    if (fd < 0) return;
    ++examined;
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0 || !(flags & FD_CLOEXEC)) ++leaky;
  };
  auto lock = s.manager.try_lock_run();
  REQUIRE(lock.has_value());
  auto loaded = s.manager.load_state();  // sweeps, reads, copies the corrupt bytes aside
  REQUIRE(loaded.has_value());
  REQUIRE(s.manager.save_state(state_number(4)).ok());
  REQUIRE(s.manager.load_state().has_value());
  atomic_state::StateOptions keep;
  keep.keep_previous = true;
  FaultManager keeping(s.dir.path(), s.log, s.fs, keep);
  REQUIRE(keeping.save_state(state_number(5)).ok());  // links the previous state
  CHECK(s.fs.count(Op::link) == 1);
  CHECK(s.fs.count(Op::open_or_create) == 1);
  CHECK(examined > 15);
  CHECK(leaky == 0);
  CHECK(s.log.with("stale temp files removed").size() == 1);
  CHECK(s.log.with("state file corrupted, treating as first run").size() == 1);
}

// ------------------------------------------------- the deployment paths --

namespace {
atomic_state::StateOptions keeping_previous() {
  atomic_state::StateOptions options;
  options.keep_previous = true;
  return options;
}
}  // namespace

TEST_CASE("taking the run lock survives the failure of any call, and leaks nothing",
          "[state-faults]") {
  for (const bool directory_exists : {true, false}) {
    CAPTURE(directory_exists);
    const auto prepare = [&](Setup& s) {
      if (!directory_exists) test::fs::remove(s.dir.path());
    };
    const auto lock = [](Setup& s) { return s.manager.try_lock_run(); };
    const auto calls = calls_of(prepare, lock);
    REQUIRE(calls.size() >= 7);
    int cases = 0;
    for (const auto& [op, occurrence] : calls)
      for (const int error : {EIO, EACCES, EROFS, ENOSPC, EINTR}) {
        CAPTURE(test::op_name(op), occurrence, error);
        Setup s;
        prepare(s);
        s.arm({Fault{op, occurrence, error, true}});
        {
          auto held = lock(s);
          ++cases;
          CHECK(s.log.size() == 0);
          if (held.has_value()) {
            // Survivable: closing the directory, writing the holder's pid,
            // a retried interruption, root's look at whose directory it is
            // (the second file_info: failed, root takes only its own lock
            // file and gives it to nobody); and making the lock file in a
            // new directory survives what a save survives (its last
            // directory sync, a failed duplicate).
            CHECK(held->owns_lock());
            const bool directory_owner = op == Op::file_info && occurrence == 2 && ::geteuid() == 0;
            if (directory_exists)
              CHECK((op == Op::close || op == Op::write || error == EINTR || directory_owner));
          } else {
            CHECK(held.status().code().value() == error);
            CHECK(held.status().message().rfind("take the run lock: ", 0) == 0);
            // The state file, or the lock file made with a missing directory.
            const std::string message = held.status().message();
            CHECK((message.find(s.state_path()) != std::string::npos ||
                   message.find(s.manager.lock_file()) != std::string::npos));
          }
        }
        CHECK(s.fs.open_descriptors().empty());
        if (test::fs::exists(s.dir.path())) CHECK(test::temp_files_in(s.dir.path()).empty());
        s.arm({});
        CHECK(s.manager.try_lock_run().has_value());  // nothing left in the way
      }
    INFO(cases << " cases");
    CHECK(cases == static_cast<int>(calls.size()) * 5);
  }
}

TEST_CASE("a keep_previous save survives the failure of any call: (old, older) or (old, old)",
          "[state-faults]") {
  const auto prepare = [](Setup& s) {
    REQUIRE(s.manager.save_state(state_number(1)).ok());
    REQUIRE(s.manager.save_state(state_number(2)).ok());  // state 2, previous 1
  };
  const auto save = [](Setup& s) { return s.manager.save_state(state_number(3)); };
  const auto calls = calls_of(prepare, save, keeping_previous());
  // Before the save itself: the directory, a look at the state file and at
  // the previous one, the link, its rename, the directory synced and closed.
  REQUIRE(calls.size() > 7);
  CHECK(calls[3] == std::pair<Op, int>{Op::link, 1});
  int cases = 0, kept_old = 0, kept_older = 0;
  for (const auto& [op, occurrence] : calls)
    for (const int error : {EIO, ENOSPC, EPERM, EROFS})
      for (const bool persistent : {false, true}) {
        CAPTURE(test::op_name(op), occurrence, error, persistent);
        Setup s(keeping_previous());
        prepare(s);
        const std::string old = test::read_file(s.state_path());
        const std::string older = test::read_file(s.state_path() + ".prev");
        s.arm({Fault{op, occurrence, error, persistent}});
        const atomic_state::Status status = save(s);
        ++cases;
        CHECK(s.fs.open_descriptors().empty());
        CHECK(test::temp_files_in(s.dir.path()).empty());  // no temp file, no temp link
        const std::string state = test::read_file(s.state_path());
        const std::string previous = test::read_file(s.state_path() + ".prev");
        if (status.ok() || status.replaced()) {
          CHECK(state != old);  // the new state
          CHECK(previous == old);
          continue;
        }
        CHECK(s.log.with("state saved").empty());
        CHECK(status.message().rfind("write state file: ", 0) == 0);
        CHECK(status.code().value() == error);
        CHECK(state == old);
        CHECK((previous == older || previous == old));
        kept_older += previous == older;
        kept_old += previous == old;
      }
  INFO(cases << " cases; the failed saves left (old, older) " << kept_older << " times, (old, old) "
             << kept_old << " times");
  CHECK(cases == static_cast<int>(calls.size()) * 4 * 2);
  CHECK(kept_older > 0);
  CHECK(kept_old > 0);
}

TEST_CASE("a load that falls back to the previous state survives the failure of any call",
          "[state-faults]") {
  const auto prepare = [](Setup& s) {
    REQUIRE(s.manager.save_state(state_number(1)).ok());
    REQUIRE(s.manager.save_state(state_number(2)).ok());
    REQUIRE(s.manager.remove_stale_temp_files().has_value());
    s.plant_corrupt();
  };
  const auto load = [](Setup& s) { return s.manager.load_state(); };
  const auto calls = calls_of(prepare, load, keeping_previous());
  int cases = 0;
  for (const auto& [op, occurrence] : calls)
    for (const int error : {EIO, EACCES, ENOSPC})
      for (const bool persistent : {false, true}) {
        CAPTURE(test::op_name(op), occurrence, error, persistent);
        Setup s(keeping_previous());
        prepare(s);
        const std::string previous = test::read_file(s.state_path() + ".prev");
        s.arm({Fault{op, occurrence, error, persistent}});
        auto loaded = load(s);
        ++cases;
        CHECK(s.fs.open_descriptors().empty());
        CHECK(test::temp_files_in(s.dir.path()).empty());
        CHECK(test::read_file(s.state_path()) == "{corrupt");
        CHECK(test::read_file(s.state_path() + ".prev") == previous);
        if (!loaded.has_value()) {
          CHECK(loaded.status().code().value() == error);
          CHECK(loaded.status().message().rfind("load state file: ", 0) == 0);
          CHECK(s.log.with("state file corrupted, loading the previous state").empty());
          continue;
        }
        // A failure after the copy was kept (listing the copies, closing a
        // read-only descriptor) changes nothing.
        CHECK(loaded->origin == atomic_state::LoadOrigin::previous);
        CHECK(*loaded == state_number(1));
        // Under its own name, or the next one when that could not be read.
        CHECK(test::read_file(loaded->corrupt_copy) == "{corrupt");
      }
  INFO(cases << " cases");
  CHECK(cases == static_cast<int>(calls.size()) * 3 * 2);
}

TEST_CASE("removing old corrupt copies survives the failure of any call, losing no new copy",
          "[state-faults]") {
  atomic_state::StateOptions options;
  options.corrupt_copies = 1;
  const auto prepare = [](Setup& s) {
    test::write_plain(s.state_path() + ".corrupt-100", "older");
    test::write_plain(s.state_path() + ".corrupt-200", "old");
    REQUIRE(s.manager.remove_stale_temp_files().has_value());
    s.plant_corrupt();
  };
  const auto load = [](Setup& s) { return s.manager.load_state(); };
  const auto calls = calls_of(prepare, load, options);
  // Before the copy is made, a listing of the copies of the file's time;
  // after it: two rounds of (list, look at each copy, unlink the oldest),
  // and a last listing that finds one copy.
  const auto is_listing = [](const auto& c) { return c.first == Op::list_directory; };
  CHECK(std::count_if(calls.begin(), calls.end(), is_listing) == 4);
  const auto first_listing = std::find_if(std::find_if(calls.begin(), calls.end(), is_listing) + 1,
                                          calls.end(), is_listing);
  int cases = 0;
  for (auto call = first_listing; call != calls.end(); ++call) {
    const auto [op, occurrence] = *call;
    if (op != Op::list_directory && op != Op::unlink && op != Op::entry_info) continue;
    for (const int error : {EIO, EACCES}) {
      CAPTURE(test::op_name(op), occurrence, error);
      Setup s(options);
      prepare(s);
      s.arm({Fault{op, occurrence, error, false}});
      auto loaded = load(s);
      ++cases;
      CHECK(s.fs.open_descriptors().empty());
      REQUIRE(loaded.has_value());  // pruning is best effort: the load stands
      CHECK(test::read_file(s.copy_path()) == "{corrupt");
      const auto removed = s.log.with("old corrupt copy removed");
      const auto failed = s.log.with("old corrupt copy could not be removed");
      CHECK(removed.size() + failed.size() <= 2);
      for (const auto& r : failed) CHECK(r.level == Level::warn);
    }
  }
  INFO(cases << " cases");
  CHECK(cases > 6);
}
