// Every system call of a save, failed at every occurrence with every errno
// that matters, once and for good; plus EINTR, short writes, name collisions
// and a hostile neighbour. After a failure the target is byte-identical, no
// temp file is left and no descriptor leaks; the Status says where and why.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/fault_fs.hpp"
#include "support/files.hpp"

using atomic_state::AtomicWriter;
using atomic_state::DataSync;
using atomic_state::FullSync;
using atomic_state::NoSync;
using atomic_state::Status;
using atomic_state::Step;
using test::Fault;
using test::FaultFs;
using test::Op;
using test::read_file;
using test::temp_files_in;
using test::TempDir;

namespace {

using Writer = AtomicWriter<FullSync, FaultFs&>;

const int kErrnos[] = {ENOSPC, EIO, EDQUOT, EACCES, EPERM, EROFS, EXDEV, EMFILE};

// What a fault at the k-th call of `op` must produce, once (transient) and
// from then on (persistent). Step::none means the save still succeeds.
// `subject` is the path the Status must name: $R is the test directory, $D
// the target's directory, $T the temp file. A persistent fault may fail a
// later call instead, naming `persistent_subject` when that differs.
struct Row {
  Op op;
  int k;
  Step transient;
  Step persistent;
  bool replaced;  // the failure comes after the rename
  const char* subject;
  const char* persistent_subject = nullptr;
};

// A save over an existing file: the protocol's nine calls.
const std::vector<Row> kOverwrite = {
    {Op::open_directory, 1, Step::open_directory, Step::open_directory, false, "$D"},
    // Without the lock a save still works; it only loses the sweep's respect.
    {Op::lock_directory, 1, Step::none, Step::none, false, ""},
    {Op::create_file, 1, Step::create_temp_file, Step::create_temp_file, false, "$T"},
    {Op::write, 1, Step::write_data, Step::write_data, false, "$T"},
    {Op::set_mode, 1, Step::set_permissions, Step::set_permissions, false, "$T"},
    {Op::sync_full, 1, Step::sync_file, Step::sync_file, false, "$T"},
    {Op::close, 1, Step::close_temp_file, Step::close_temp_file, false, "$T"},
    {Op::rename, 1, Step::rename, Step::rename, false, "$T"},
    {Op::sync_full, 2, Step::sync_directory, Step::sync_directory, true, "$D"},
    // Closing the read-only directory descriptor cannot lose anything.
    {Op::close, 2, Step::none, Step::none, false, ""},
};

// A first save into two missing directory levels: $R/a/b/f.
const std::vector<Row> kFirstSave = {
    {Op::open_directory, 1, Step::open_directory, Step::open_directory, false, "$D"},
    {Op::make_directory, 1, Step::create_directory, Step::create_directory, false, "$R/a/b"},
    {Op::make_directory, 2, Step::create_directory, Step::create_directory, false, "$R/a"},
    {Op::open_directory, 2, Step::sync_directory, Step::sync_directory, false, "$R"},
    {Op::sync_full, 1, Step::sync_directory, Step::sync_directory, false, "$R"},
    {Op::close, 1, Step::none, Step::close_temp_file, false, "", "$T"},
    {Op::make_directory, 3, Step::create_directory, Step::create_directory, false, "$R/a/b"},
    {Op::open_directory, 3, Step::sync_directory, Step::sync_directory, false, "$R/a"},
    {Op::sync_full, 2, Step::sync_directory, Step::sync_directory, false, "$R/a"},
    {Op::close, 2, Step::none, Step::close_temp_file, false, "", "$T"},
    {Op::open_directory, 4, Step::open_directory, Step::open_directory, false, "$D"},
    {Op::lock_directory, 1, Step::none, Step::none, false, ""},
    {Op::create_file, 1, Step::create_temp_file, Step::create_temp_file, false, "$T"},
    {Op::write, 1, Step::write_data, Step::write_data, false, "$T"},
    {Op::set_mode, 1, Step::set_permissions, Step::set_permissions, false, "$T"},
    {Op::sync_full, 3, Step::sync_file, Step::sync_file, false, "$T"},
    {Op::close, 3, Step::close_temp_file, Step::close_temp_file, false, "$T"},
    {Op::rename, 1, Step::rename, Step::rename, false, "$T"},
    {Op::sync_full, 4, Step::sync_directory, Step::sync_directory, true, "$D"},
    {Op::close, 4, Step::none, Step::none, false, ""},
};

// The same over an existing file under DataSync: fdatasync for the file.
const std::vector<Row> kOverwriteDataSync = {
    {Op::open_directory, 1, Step::open_directory, Step::open_directory, false, "$D"},
    {Op::lock_directory, 1, Step::none, Step::none, false, ""},
    {Op::create_file, 1, Step::create_temp_file, Step::create_temp_file, false, "$T"},
    {Op::write, 1, Step::write_data, Step::write_data, false, "$T"},
    {Op::set_mode, 1, Step::set_permissions, Step::set_permissions, false, "$T"},
    {Op::sync_data, 1, Step::sync_file, Step::sync_file, false, "$T"},
    {Op::close, 1, Step::close_temp_file, Step::close_temp_file, false, "$T"},
    {Op::rename, 1, Step::rename, Step::rename, false, "$T"},
    {Op::sync_full, 1, Step::sync_directory, Step::sync_directory, true, "$D"},
    {Op::close, 2, Step::none, Step::none, false, ""},
};

// Under NoSync: no sync to fail, and nothing after the rename that can.
const std::vector<Row> kOverwriteNoSync = {
    {Op::open_directory, 1, Step::open_directory, Step::open_directory, false, "$D"},
    {Op::lock_directory, 1, Step::none, Step::none, false, ""},
    {Op::create_file, 1, Step::create_temp_file, Step::create_temp_file, false, "$T"},
    {Op::write, 1, Step::write_data, Step::write_data, false, "$T"},
    {Op::set_mode, 1, Step::set_permissions, Step::set_permissions, false, "$T"},
    {Op::close, 1, Step::close_temp_file, Step::close_temp_file, false, "$T"},
    {Op::rename, 1, Step::rename, Step::rename, false, "$T"},
    {Op::close, 2, Step::none, Step::none, false, ""},
};

// A streamed save: begin(), three write() calls, commit().
const std::vector<Row> kStreamed = {
    {Op::open_directory, 1, Step::open_directory, Step::open_directory, false, "$D"},
    {Op::lock_directory, 1, Step::none, Step::none, false, ""},
    {Op::create_file, 1, Step::create_temp_file, Step::create_temp_file, false, "$T"},
    {Op::write, 1, Step::write_data, Step::write_data, false, "$T"},
    {Op::write, 2, Step::write_data, Step::write_data, false, "$T"},
    {Op::write, 3, Step::write_data, Step::write_data, false, "$T"},
    {Op::set_mode, 1, Step::set_permissions, Step::set_permissions, false, "$T"},
    {Op::sync_full, 1, Step::sync_file, Step::sync_file, false, "$T"},
    {Op::close, 1, Step::close_temp_file, Step::close_temp_file, false, "$T"},
    {Op::rename, 1, Step::rename, Step::rename, false, "$T"},
    {Op::sync_full, 2, Step::sync_directory, Step::sync_directory, true, "$D"},
    {Op::close, 2, Step::none, Step::none, false, ""},
};

const std::string kOld = "old state\n";
const std::string kNew = std::string(5000, 'n') + "\n";

template <class Policy>
Status save_whole(FaultFs& fs, const test::fs::path& target) {
  return AtomicWriter<Policy, FaultFs&>(fs).write(target, kNew, 0644);
}

Status save_streamed(FaultFs& fs, const test::fs::path& target) {
  AtomicWriter<FullSync, FaultFs&> writer(fs);
  auto tx = writer.begin(target, 0644);
  if (!tx) return tx.status();
  for (std::size_t at = 0; at < kNew.size(); at += 2000)
    if (Status s = tx->write(std::string_view(kNew).substr(at, 2000)); !s) return s;
  return tx->commit();
}

test::fs::path existing_target(const TempDir& d) { return d / "state.json"; }
test::fs::path nested_target(const TempDir& d) { return d / "a" / "b" / "f"; }

struct Scenario {
  const char* name;
  const std::vector<Row>* rows;
  bool target_exists;
  test::fs::path (*target)(const TempDir&);
  Status (*save)(FaultFs&, const test::fs::path&);
};

const Scenario kScenarios[] = {
    {"overwrite, FullSync", &kOverwrite, true, existing_target, save_whole<FullSync>},
    {"first save into missing directories", &kFirstSave, false, nested_target,
     save_whole<FullSync>},
    {"overwrite, DataSync", &kOverwriteDataSync, true, existing_target, save_whole<DataSync>},
    {"overwrite, NoSync", &kOverwriteNoSync, true, existing_target, save_whole<NoSync>},
    {"streamed overwrite", &kStreamed, true, existing_target, save_streamed},
};

std::string expand(std::string pattern, const TempDir& dir, const test::fs::path& target,
                   const std::string& temp) {
  const auto put = [&](const std::string& key, const std::string& value) {
    for (auto at = pattern.find(key); at != std::string::npos; at = pattern.find(key))
      pattern.replace(at, key.size(), value);
  };
  put("$T", target.parent_path().string() + "/" + temp);
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

std::vector<std::pair<Op, int>> numbered(const std::vector<Op>& ops) {
  std::vector<std::pair<Op, int>> out;
  int seen[16] = {};
  for (Op op : ops) out.emplace_back(op, ++seen[static_cast<int>(op)]);
  return out;
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
    const auto trace = numbered(fs.ops());
    REQUIRE(trace.size() == sc.rows->size());
    for (std::size_t i = 0; i < trace.size(); ++i) {
      CAPTURE(i, test::op_name(trace[i].first));
      CHECK(trace[i].first == (*sc.rows)[i].op);
      CHECK(trace[i].second == (*sc.rows)[i].k);
    }
  }
}

TEST_CASE("a failing call leaves the target as it was and says where and why", "[faults]") {
  int cases = 0;
  for (const Scenario& sc : kScenarios) {
    for (const Row& row : *sc.rows) {
      for (int error : kErrnos) {
        for (bool persistent : {false, true}) {
          CAPTURE(sc.name, test::op_name(row.op), row.k, std::strerror(error), persistent);
          const Step expected = persistent ? row.persistent : row.transient;
          const char* subject =
              persistent && row.persistent_subject ? row.persistent_subject : row.subject;
          (void)run_and_check(sc, {Fault{row.op, row.k, error, persistent}}, expected, row.replaced,
                              subject, error);
          ++cases;
        }
      }
    }
  }
  report("errno at every call", cases);
  CHECK(cases == (10 + 20 + 10 + 8 + 12) * 8 * 2);
}

TEST_CASE("EINTR is retried at every call and the save succeeds", "[faults]") {
  int cases = 0;
  for (const Scenario& sc : kScenarios) {
    for (const Row& row : *sc.rows) {
      CAPTURE(sc.name, test::op_name(row.op), row.k);
      (void)run_and_check(sc, {Fault{row.op, row.k, EINTR}}, Step::none, false, "", 0);
      (void)run_and_check(sc, {Fault{row.op, row.k, EINTR}, Fault{row.op, row.k + 1, EINTR}},
                          Step::none, false, "", 0);
      cases += 2;
    }
  }
  report("transient EINTR", cases);
}

TEST_CASE("an endless EINTR storm ends in an error, not a hang", "[faults]") {
  int cases = 0;
  for (const Scenario& sc : kScenarios) {
    for (const Row& row : *sc.rows) {
      CAPTURE(sc.name, test::op_name(row.op), row.k);
      // close() is never retried: its EINTR means the descriptor is gone.
      const Step expected = row.op == Op::close ? Step::none : row.persistent;
      (void)run_and_check(sc, {Fault{row.op, row.k, EINTR, true}}, expected, row.replaced,
                          row.persistent_subject ? row.persistent_subject : row.subject, EINTR);
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
  SECTION("a few collisions cost a few retries") {
    FaultFs fs;
    fs.faults = {Fault{Op::create_file, 1, EEXIST}, Fault{Op::create_file, 2, EEXIST}};
    TempDir dir;
    REQUIRE(Writer(fs).write(dir / "f", "x").ok());
    CHECK(fs.count(Op::create_file) == 3);
    CHECK(read_file(dir / "f") == "x");
  }
  SECTION("when every name is taken the save gives up with a clear reason") {
    const auto status = run_and_check(kScenarios[0], {Fault{Op::create_file, 1, EEXIST, true}},
                                      Step::create_temp_file, false, "$T", EEXIST);
    CHECK(status.message().find("every temp name tried was taken") != std::string::npos);
  }
  SECTION("each retry draws a different name") {
    FaultFs fs;
    fs.faults = {Fault{Op::create_file, 1, EEXIST, true}};
    TempDir dir;
    (void)Writer(fs).write(dir / "f", "x");
    std::set<std::string> names;
    for (const auto& call : fs.calls)
      if (call.op == Op::create_file) names.insert(call.name);
    CHECK(fs.count(Op::create_file) == ATOMIC_STATE_TEMP_NAME_ATTEMPTS);
    CHECK(names.size() == ATOMIC_STATE_TEMP_NAME_ATTEMPTS);
  }
}

TEST_CASE("a symlink planted at the temp name is neither followed nor removed", "[faults]") {
  TempDir dir;
  test::write_plain(dir / "victim", "precious");
  FaultFs fs;
  std::string planted;
  fs.before = [&](Op op, int, const char* name) {
    if (op != Op::create_file || !planted.empty()) return;
    planted = name;  // the attacker guessed the name right
    test::fs::create_symlink(dir / "victim", dir / planted);
  };
  REQUIRE(Writer(fs).write(dir / "f", "mine").ok());
  CHECK(fs.calls[2].result == -EEXIST);  // O_EXCL|O_NOFOLLOW refused the link
  CHECK(fs.count(Op::create_file) == 2);
  CHECK(read_file(dir / "victim") == "precious");
  CHECK(test::fs::is_symlink(dir / planted));
  CHECK(read_file(dir / "f") == "mine");
}

TEST_CASE("a temp file that cannot be removed is reported with the first failure", "[faults]") {
  TempDir dir;
  test::write_plain(dir / "f", kOld);
  FaultFs fs;
  fs.faults = {Fault{Op::sync_full, 1, EIO}, Fault{Op::unlink, 1, EIO, true}};
  const auto status = Writer(fs).write(dir / "f", kNew);
  CHECK(status.step() == Step::sync_file);
  CHECK(status.code().value() == EIO);
  CHECK(status.message().find("the temp file could not be removed") != std::string::npos);
  CHECK(read_file(dir / "f") == kOld);
  CHECK(fs.open_descriptors().empty());
  CHECK(temp_files_in(dir.path()).size() == 1);

  SECTION("alongside a note the failure already had") {
    TempDir other;
    FaultFs stalled;
    stalled.faults = {Fault{Op::write, 1, 0, true, 0}, Fault{Op::unlink, 1, EIO, true}};
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
