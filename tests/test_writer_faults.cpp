// Every system call of a save, failed at every occurrence with every errno
// that matters, once and for good; plus EINTR, short writes, name collisions
// and a hostile neighbour. After a failure the target is byte-identical, no
// temp file is left and no descriptor leaks; the Status says where and why.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

namespace {

using Writer = AtomicWriter<FullSync, FaultFs&>;

const int kErrnos[] = {ENOSPC, EIO, EDQUOT, EACCES, EPERM, EROFS, EXDEV, EMFILE};

// Every kind of save fails at each of its calls (support/protocol.hpp says
// what each failure must produce).
const int kChunks = 3;

const std::string kOld = "old state\n";
const std::string kNew = std::string(5000, 'n') + "\n";

template <class Policy>
Status save_whole(FaultFs& fs, const test::fs::path& target) {
  return AtomicWriter<Policy, FaultFs&>(fs).write(target, kNew, 0644);
}

// The same save where the filesystem has no unnamed files: its temp file
// named and locked from the start.
template <class Policy>
Status save_named(FaultFs& fs, const test::fs::path& target) {
  fs.faults.push_back(test::no_unnamed_files());
  return AtomicWriter<Policy, FaultFs&>(fs).write(target, kNew, 0644);
}

// A save over an existing file with a named temp file: the refusal of an
// unnamed one (whose other failures fail the save), then the named save.
protocol::Calls named_save(protocol::Sync sync) {
  return protocol::open_directory() + protocol::check_target() +
         protocol::Calls{{Op::open_unnamed, Step::create_temp_file, "$D"}} +
         protocol::create_temp_file(true) + protocol::write_data() + protocol::commit(sync, true);
}

Status save_streamed(FaultFs& fs, const test::fs::path& target) {
  AtomicWriter<FullSync, FaultFs&> writer(fs);
  auto tx = writer.begin(target, 0644);
  if (!tx) return tx.status();
  const std::size_t chunk = kNew.size() / kChunks + 1;
  for (std::size_t at = 0; at < kNew.size(); at += chunk)
    if (Status s = tx->write(std::string_view(kNew).substr(at, chunk)); !s) return s;
  return tx->commit();
}

test::fs::path existing_target(const TempDir& d) { return d / "state.json"; }
test::fs::path nested_target(const TempDir& d) { return d / "a" / "b" / "f"; }

struct Scenario {
  const char* name;
  protocol::Calls calls;
  bool target_exists;
  test::fs::path (*target)(const TempDir&);
  Status (*save)(FaultFs&, const test::fs::path&);
};

const Scenario kScenarios[] = {
    {"overwrite, FullSync", protocol::overwrite_full_sync(), true, existing_target,
     save_whole<FullSync>},
    {"overwrite, FullSync, named temp file", named_save(protocol::Sync::full), true,
     existing_target, save_named<FullSync>},
    {"overwrite, NoSync, named temp file", named_save(protocol::Sync::none), true, existing_target,
     save_named<NoSync>},
    {"first save into missing directories", protocol::first_save_two_levels(), false, nested_target,
     save_whole<FullSync>},
    {"overwrite, DataSync", protocol::overwrite_data_sync(), true, existing_target,
     save_whole<DataSync>},
    {"overwrite, NoSync", protocol::overwrite_no_sync(), true, existing_target, save_whole<NoSync>},
    {"streamed overwrite", protocol::streamed(kChunks), true, existing_target, save_streamed},
};

std::string expand(std::string pattern, const TempDir& dir, const test::fs::path& target,
                   const std::string& temp) {
  const auto put = [&](const std::string& key, const std::string& value) {
    for (auto at = pattern.find(key); at != std::string::npos; at = pattern.find(key))
      pattern.replace(at, key.size(), value);
  };
  // An unnamed temp file not named yet is its directory in messages.
  put("$T",
      temp.empty() ? target.parent_path().string() : target.parent_path().string() + "/" + temp);
  put("$F", target.string());
  put("$D", target.parent_path().string());
  put("$R", dir.path().string());
  return pattern;
}

/// One save under `faults`, checked against everything a failure promises.
/// Returns the status for further checks.
Status run_and_check(const Scenario& sc, std::vector<Fault> faults, Step expected, bool replaced,
                     const char* subject, int error) {
  TempDir dir;
  const auto target = sc.target(dir);
  if (sc.target_exists) test::write_plain(target, kOld, 0600);
  const int fds_before = test::open_fd_count();

  FaultFs fs;
  fs.faults = std::move(faults);
  const Status status = sc.save(fs, target);

  CHECK(test::open_fd_count() == fds_before);
  CHECK(fs.open_descriptors().empty());
  if (test::fs::exists(target.parent_path())) CHECK(temp_files_in(target.parent_path()).empty());

  if (expected == Step::none) {
    CHECK(status.ok());
    CHECK(read_file(target) == kNew);
    CHECK(test::mode_of(target) == 0644);
    return status;
  }
  CHECK_FALSE(status.ok());
  CHECK(status.step() == expected);
  CHECK(status.code().value() == error);
  CHECK(status.target() == target.string());
  CHECK(status.replaced() == replaced);
  const std::string message = status.message();
  CAPTURE(message);
  const std::string named = std::string(atomic_state::to_string(expected)) + " " +
                            expand(subject, dir, target, fs.last_temp_name());
  CHECK(message.rfind(named, 0) == 0);
  CHECK(message.find(std::strerror(error)) != std::string::npos);
  if (expected == Step::rename)
    CHECK(message.find(" to " + target.string() + ": ") != std::string::npos);
  if (replaced) {
    CHECK(message.find(target.string() + " was replaced") != std::string::npos);
    CHECK(read_file(target) == kNew);
    CHECK(test::mode_of(target) == 0644);
  } else if (sc.target_exists) {
    CHECK(read_file(target) == kOld);
    CHECK(test::mode_of(target) == 0600);
  } else {
    CHECK_FALSE(test::fs::exists(target));
  }
  return status;
}

void report(const char* what, int cases) {
  std::cout << what << ": " << cases << " fault-injection cases\n";
}

}  // namespace

TEST_CASE("the fault tables cover every call a successful save makes", "[faults]") {
  for (const Scenario& sc : kScenarios) {
    CAPTURE(sc.name);
    TempDir dir;
    const auto target = sc.target(dir);
    if (sc.target_exists) test::write_plain(target, kOld);
    FaultFs fs;
    REQUIRE(sc.save(fs, target).ok());
    CHECK(fs.ops() == protocol::ops(sc.calls));
  }
}

TEST_CASE("a failing call leaves the target as it was and says where and why", "[faults]") {
  int cases = 0;
  std::size_t calls = 0;
  for (const Scenario& sc : kScenarios) {
    calls += sc.calls.size();
    for (const auto& [call, k] : protocol::numbered(sc.calls)) {
      for (int error : kErrnos) {
        for (bool persistent : {false, true}) {
          CAPTURE(sc.name, test::op_name(call.op), k, std::strerror(error), persistent);
          const bool later = persistent && call.later_fails_as != Step::none;
          (void)run_and_check(sc, {Fault{call.op, k, error, persistent}},
                              later ? call.later_fails_as : call.fails_as,
                              later ? call.later_replaced : call.replaced,
                              later ? call.later_names : call.names, error);
          ++cases;
        }
      }
    }
  }
  report("errno at every call", cases);
  CHECK(cases == static_cast<int>(calls) * 8 * 2);
}

TEST_CASE("EINTR is retried at every call and the save succeeds", "[faults]") {
  int cases = 0;
  for (const Scenario& sc : kScenarios) {
    for (const auto& [call, k] : protocol::numbered(sc.calls)) {
      CAPTURE(sc.name, test::op_name(call.op), k);
      (void)run_and_check(sc, {Fault{call.op, k, EINTR}}, Step::none, false, "", 0);
      (void)run_and_check(sc, {Fault{call.op, k, EINTR}, Fault{call.op, k + 1, EINTR}}, Step::none,
                          false, "", 0);
      cases += 2;
    }
  }
  report("transient EINTR", cases);
}

TEST_CASE("an endless EINTR storm ends in an error, not a hang", "[faults]") {
  int cases = 0;
  for (const Scenario& sc : kScenarios) {
    for (const auto& [call, k] : protocol::numbered(sc.calls)) {
      CAPTURE(sc.name, test::op_name(call.op), k);
      // close() is never retried: its EINTR means the descriptor is gone.
      const bool later = call.later_fails_as != Step::none && call.op != Op::close;
      const Step expected = call.op == Op::close ? Step::none
                            : later              ? call.later_fails_as
                                                 : call.fails_as;
      (void)run_and_check(sc, {Fault{call.op, k, EINTR, true}}, expected, call.replaced,
                          later ? call.later_names : call.names, EINTR);
      ++cases;
    }
  }
  report("persistent EINTR", cases);
}

TEST_CASE("short writes are completed and the save succeeds", "[faults]") {
  const Scenario& sc = kScenarios[0];
  struct Case {
    const char* what;
    std::size_t bytes;
    bool persistent;
  };
  const Case cases[] = {
      {"one write of 0 bytes", 0, false},       {"one write of 1 byte", 1, false},
      {"one write of 4000 bytes", 4000, false}, {"every write 1 byte", 1, true},
      {"every write 999 bytes", 999, true},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    Fault f{Op::write, 1, 0, c.persistent, c.bytes};
    (void)run_and_check(sc, {f}, Step::none, false, "", 0);
  }
  report("short writes", static_cast<int>(std::size(cases)));
}

TEST_CASE("a write that never makes progress fails instead of spinning", "[faults]") {
  const auto status = run_and_check(kScenarios[0], {Fault{Op::write, 1, 0, true, 0}},
                                    Step::write_data, false, "$T", EIO);
  CHECK(status.message().find("kept returning 0 bytes") != std::string::npos);
}

TEST_CASE("a taken temp name is skipped for a fresh one", "[faults]") {
  struct Kind {
    const char* what;
    Op naming;
    std::vector<Fault> faults;  // what makes the temp file of this kind
    const char* names;          // what a failure to name it names
  };
  std::vector<Kind> kinds = {{"named", Op::create_file, {test::no_unnamed_files()}, "$T"}};
  if (protocol::unnamed_temp_files()) kinds.push_back({"unnamed", Op::link_unnamed, {}, "$D"});
  for (const Kind& kind : kinds) {
    CAPTURE(kind.what);
    const auto with = [&](std::vector<Fault> faults) {
      faults.insert(faults.end(), kind.faults.begin(), kind.faults.end());
      return faults;
    };
    {  // a few collisions cost a few retries
      FaultFs fs;
      fs.faults = with({Fault{kind.naming, 1, EEXIST}, Fault{kind.naming, 2, EEXIST}});
      TempDir dir;
      REQUIRE(Writer(fs).write(dir / "f", "x").ok());
      CHECK(fs.count(kind.naming) == 3);
      CHECK(read_file(dir / "f") == "x");
    }
    {  // when every name is taken the save gives up with a clear reason
      const auto status = run_and_check(kScenarios[0], with({Fault{kind.naming, 1, EEXIST, true}}),
                                        Step::create_temp_file, false, kind.names, EEXIST);
      CHECK(status.message().find("every temp name tried was taken") != std::string::npos);
    }
    {  // each retry draws a different name
      FaultFs fs;
      fs.faults = with({Fault{kind.naming, 1, EEXIST, true}});
      TempDir dir;
      (void)Writer(fs).write(dir / "f", "x");
      std::set<std::string> names;
      for (const auto& call : fs.calls)
        if (call.op == kind.naming) names.insert(call.name);
      CHECK(fs.count(kind.naming) == ATOMIC_STATE_TEMP_NAME_ATTEMPTS);
      CHECK(names.size() == ATOMIC_STATE_TEMP_NAME_ATTEMPTS);
    }
  }
}

TEST_CASE("a symlink planted at the temp name is neither followed nor removed", "[faults]") {
  struct Kind {
    const char* what;
    Op naming;
    std::vector<Fault> faults;  // what makes the temp file of this kind
  };
  std::vector<Kind> kinds = {{"named", Op::create_file, {test::no_unnamed_files()}}};
  if (protocol::unnamed_temp_files()) kinds.push_back({"unnamed", Op::link_unnamed, {}});
  for (const Kind& kind : kinds) {
    CAPTURE(kind.what);
    TempDir dir;
    test::write_plain(dir / "victim", "precious");
    FaultFs fs;
    fs.faults = kind.faults;
    std::string planted;
    fs.before = [&](Op op, int, const char* name) {
      if (op != kind.naming || !planted.empty()) return;
      planted = name;  // the attacker guessed the name right
      test::fs::create_symlink(dir / "victim", dir / planted);
    };
    REQUIRE(Writer(fs).write(dir / "f", "mine").ok());
    const auto first = std::find_if(fs.calls.begin(), fs.calls.end(),
                                    [&](const test::Call& c) { return c.op == kind.naming; });
    REQUIRE(first != fs.calls.end());
    CHECK(first->result == -EEXIST);  // linkat, or O_EXCL|O_NOFOLLOW, refused the link
    CHECK(fs.count(kind.naming) == 2);
    CHECK(read_file(dir / "victim") == "precious");
    CHECK(test::fs::is_symlink(dir / planted));
    CHECK(read_file(dir / "f") == "mine");
  }
}

TEST_CASE("a temp file that cannot be removed is reported with the first failure", "[faults]") {
  TempDir dir;
  test::write_plain(dir / "f", kOld);
  FaultFs fs;
  // The rename: a temp file has a name by then, unnamed at first or not.
  fs.faults = {Fault{Op::rename, 1, EIO}, Fault{Op::unlink, 1, EIO, true}};
  const auto status = Writer(fs).write(dir / "f", kNew);
  CHECK(status.step() == Step::rename);
  CHECK(status.code().value() == EIO);
  CHECK(status.message().find("the temp file could not be removed") != std::string::npos);
  CHECK(read_file(dir / "f") == kOld);
  CHECK(fs.open_descriptors().empty());
  CHECK(temp_files_in(dir.path()).size() == 1);

  SECTION("alongside a note the failure already had") {
    TempDir other;
    FaultFs stalled;
    // A named temp file, which has a name while it is written.
    stalled.faults = {Fault{Op::open_unnamed, 1, EOPNOTSUPP, true}, Fault{Op::write, 1, 0, true, 0},
                      Fault{Op::unlink, 1, EIO, true}};
    const auto both = Writer(stalled).write(other / "f", kNew);
    CHECK(both.message().find("(the write kept returning 0 bytes) (the temp file could "
                              "not be removed)") != std::string::npos);
  }
}

TEST_CASE("a directory that another process creates first is used, not an error", "[faults]") {
  TempDir dir;
  FaultFs fs;
  // The neighbour wins the race between our failed open and our mkdir.
  fs.before = [&](Op op, int, const char* path) {
    if (op == Op::make_directory && path == (dir / "new").string())
      test::fs::create_directory(dir / "new");
  };
  REQUIRE(Writer(fs).write(dir / "new" / "f", "x").ok());
  CHECK(read_file(dir / "new" / "f") == "x");
  CHECK(fs.calls[1].result == -EEXIST);
  CHECK(fs.count(Op::sync_full) == 2);  // the file and its directory; not the parent
}

TEST_CASE("a missing directory that cannot be created ends in an error, not a loop", "[faults]") {
  TempDir dir;
  FaultFs fs;
  fs.faults = {Fault{Op::make_directory, 1, ENOENT, true}};
  const auto status = Writer(fs).write(dir / "a" / "b" / "f", "x");
  CHECK(status.step() == Step::create_directory);
  CHECK(status.code().value() == ENOENT);
  CHECK(fs.open_descriptors().empty());
}
