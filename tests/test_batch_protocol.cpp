// The calls of a batch and of a directory handle, exactly ([batch-trace]),
// and each of them failed in turn ([batch-faults]), from the rows of
// support/protocol.hpp (BatchCall): after every failure no temp file and no
// descriptor is left, before the first rename no target is touched, after
// it exactly the first Batch::replaced() targets hold their new content,
// and the Status names the step, the path, the target and the reason.
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

namespace {

const int kErrnos[] = {ENOSPC, EIO, EDQUOT, EACCES, EPERM, EROFS, EXDEV, EMFILE};

// The batch of protocol::batch_three_and_one: three outputs in a, the state in b.
const char* const kFiles[] = {"a/full.json", "a/summary.json", "a/history.json", "b/state.json"};
const int kFileCount = 4;

std::string old_content(int i) { return "old " + std::to_string(i) + "\n"; }
std::string new_content(int i) {
  return std::string(static_cast<std::size_t>(1000 * (i + 1)), static_cast<char>('a' + i)) + "\n";
}

struct Files {
  std::vector<test::fs::path> paths;
  explicit Files(const TempDir& dir) {
    for (const char* f : kFiles) {
      paths.push_back(dir / f);
      test::fs::create_directories(paths.back().parent_path());
      test::write_plain(paths.back(), old_content(static_cast<int>(paths.size()) - 1), 0600);
    }
  }
};

/// What a scenario did: its status, and the batch's replaced() count.
struct Outcome {
  Status status;
  std::size_t replaced = 0;
};

template <class Policy>
Outcome batch_by_path(FaultFs& fs, const Files& files) {
  Batch<Policy, FaultFs&> batch(fs);
  for (int i = 0; i < kFileCount; ++i)
    if (Status s = batch.add(files.paths[static_cast<std::size_t>(i)], new_content(i)); !s)
      return {s, batch.replaced()};
  Status s = batch.commit();
  return {s, batch.replaced()};
}

Outcome batch_through_handles(FaultFs& fs, const Files& files) {
  using Dir = AtomicDirectory<FullSync, FaultFs&>;
  auto a = Dir::open(files.paths[0].parent_path().string(), fs);
  if (!a) return {a.status(), 0};
  auto b = Dir::open(files.paths[3].parent_path().string(), fs);
  if (!b) return {b.status(), 0};
  Batch<FullSync, FaultFs&> batch(fs);
  for (int i = 0; i < kFileCount; ++i) {
    Dir& d = i < 3 ? *a : *b;
    const std::string name = files.paths[static_cast<std::size_t>(i)].filename().string();
    if (Status s = batch.add(d, name, new_content(i)); !s) return {s, batch.replaced()};
  }
  Status s = batch.commit();
  return {s, batch.replaced()};
}

// Two saves of the state through one handle: the second is the one the
// rows of directory_write describe (after the open's).
Outcome directory_writes(FaultFs& fs, const Files& files) {
  using Dir = AtomicDirectory<FullSync, FaultFs&>;
  auto b = Dir::open(files.paths[3].parent_path().string(), fs);
  if (!b) return {b.status(), 0};
  Status s = b->write("state.json", new_content(3));
  return {s, s.ok() || s.replaced() ? 1u : 0u};
}

struct Scenario {
  const char* name;
  BatchCalls calls;
  Outcome (*run)(FaultFs&, const Files&);
  int first_file_create;   // which create_file call is file 0's temp file
  std::vector<int> files;  // the files it writes (indexes into kFiles)
};

const Scenario& scenario(int i) {
  static const Scenario scenarios[] = {
      {"batch of 3 + 1 by path, FullSync",
       protocol::batch_three_and_one(Sync::full),
       batch_by_path<FullSync>,
       0,
       {0, 1, 2, 3}},
      {"batch of 3 + 1 by path, DataSync",
       protocol::batch_three_and_one(Sync::data),
       batch_by_path<DataSync>,
       0,
       {0, 1, 2, 3}},
      {"batch of 3 + 1 by path, NoSync",
       protocol::batch_three_and_one(Sync::none),
       batch_by_path<NoSync>,
       0,
       {0, 1, 2, 3}},
      {"batch of 3 + 1 through two handles (open, add, commit, close)",
       protocol::batch_three_and_one_through_handles(Sync::full),
       batch_through_handles,
       2,
       {0, 1, 2, 3}},
      {"AtomicDirectory open, write, close",
       protocol::directory_open(0) + protocol::directory_write(Sync::full) +
           protocol::directory_close(0),
       directory_writes,
       1,
       {3}},
  };
  return scenarios[i];
}
const int kScenarioCount = 5;

std::string expand(std::string pattern, const std::vector<test::fs::path>& targets,
                   const std::vector<std::string>& temps, const std::string& claim, int file) {
  const auto put = [&](const std::string& key, const std::string& value) {
    for (auto at = pattern.find(key); at != std::string::npos;
         at = pattern.find(key, at + value.size()))
      pattern.replace(at, key.size(), value);
  };
  const test::fs::path& target = targets[static_cast<std::size_t>(file)];
  const std::string dir = target.parent_path().string();
  put("$T",
      dir + "/" +
          (static_cast<std::size_t>(file) < temps.size() ? temps[static_cast<std::size_t>(file)]
                                                         : std::string("?")));
  put("$C", dir + "/" + claim);
  put("$F", target.string());
  put("$D", dir);
  return pattern;
}

struct Counts {
  int cases = 0, before_rename = 0, after_rename = 0, survived = 0;
};

/// One run of `sc` under `faults`, checked against the row's promises.
void run_and_check(const Scenario& sc, const protocol::BatchCall& row, std::vector<Fault> faults,
                   Step expected, int error, Counts& counts) {
  TempDir dir;
  const Files files(dir);
  std::vector<test::fs::path> targets;  // the scenario's files, by its own index
  for (int f : sc.files) targets.push_back(files.paths[static_cast<std::size_t>(f)]);
  const int fds_before = test::open_fd_count();
  FaultFs fs;
  fs.faults = std::move(faults);
  const Outcome out = sc.run(fs, files);

  CHECK(test::open_fd_count() == fds_before);
  CHECK(fs.open_descriptors().empty());
  // No temp file is left, but a claim whose removal failed (a stale temp
  // file for the next sweep, which must take it).
  for (const char* d : {"a", "b"}) {
    const auto left = temp_files_in(dir / d);
    if (!left.empty()) {
      const bool claim_unlink_failed =
          row.call.op == Op::unlink && expected == Step::none && left.size() == 1;
      CHECK(claim_unlink_failed);
      auto swept = as::AtomicWriter<>{}.remove_stale_temp_files(dir / d);
      CHECK((swept && swept->removed == 1));
    }
  }

  // Which of the scenario's targets must hold their new content.
  std::size_t fresh = 0;
  if (expected == Step::none) {
    ++counts.survived;
    CHECK(out.status.ok());
    fresh = targets.size();
  } else {
    CHECK_FALSE(out.status.ok());
    fresh = static_cast<std::size_t>(row.renamed);
    (fresh == 0 ? counts.before_rename : counts.after_rename) += 1;
  }
  CHECK(out.replaced == fresh);
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const int f = sc.files[i];
    CAPTURE(targets[i].string());
    if (i < fresh) {
      CHECK(read_file(targets[i]) == new_content(f));
      CHECK(test::mode_of(targets[i]) == 0644);
    } else {
      CHECK(read_file(targets[i]) == old_content(f));
      CHECK(test::mode_of(targets[i]) == 0600);
    }
  }
  if (expected == Step::none) return;

  // The Status: step, reason, the path the row names, the target.
  std::vector<std::string> temps;
  const auto all = [&] {
    std::vector<std::string> names;
    for (const test::Call& c : fs.calls)
      if (c.op == Op::create_file) names.push_back(c.name);
    return names;
  }();
  for (std::size_t k = static_cast<std::size_t>(sc.first_file_create); k < all.size(); ++k)
    temps.push_back(all[k]);
  // The claim of the row's directory: the handles are opened in the order
  // of their first files (a, then b), each making one create_file call.
  std::size_t claim_at = 0;
  if (sc.first_file_create == 2 && row.file == 3) claim_at = 1;
  const std::string claim = claim_at < all.size() ? all[claim_at] : std::string();
  const Status& s = out.status;
  const std::string message = s.message();
  CAPTURE(message);
  CHECK(s.step() == expected);
  CHECK(s.code().value() == error);
  CHECK(std::string(s.path()) == expand(row.call.names, targets, temps, claim, row.file));
  const bool in_open = (row.call.op == Op::open_directory && sc.first_file_create > 0) ||
                       row.call.names == std::string("$D/.atomic-directory-claim") ||
                       row.call.names == std::string("$C");
  if (in_open)  // AtomicDirectory::open: the claim is the target it names
    CHECK(std::string(s.target()) ==
          targets[static_cast<std::size_t>(row.file)].parent_path().string() +
              "/.atomic-directory-claim");
  else
    CHECK(std::string(s.target()) == targets[static_cast<std::size_t>(row.file)].string());
  CHECK(s.replaced() == row.call.replaced);
  CHECK(message.find(std::strerror(error)) != std::string::npos);
  // After some renames, the message lists the targets replaced, in order.
  if (row.renamed > 0 && sc.files.size() > 1) {
    std::string which = "replaced before the failure: ";
    for (std::size_t i = 0; i < static_cast<std::size_t>(row.renamed); ++i)
      which += (i > 0 ? ", " : "") + targets[i].string();
    CHECK(message.find(which + ")") != std::string::npos);
  } else {
    CHECK(message.find("replaced before the failure") == std::string::npos);
  }
}

}  // namespace

// ============================================================ [batch-trace] ==

TEST_CASE("a FullSync batch of 3 + 1 files: each file synced once, each directory twice at most",
          "[batch-trace]") {
  TempDir dir;
  const Files files(dir);
  FaultFs fs;
  REQUIRE(batch_by_path<FullSync>(fs, files).status.ok());
  REQUIRE(fs.ops() == protocol::ops(protocol::calls_of(protocol::batch_three_and_one(Sync::full))));
  CHECK(fs.open_descriptors().empty());
  // Descriptors: each file's directory, temp file and lock.
  std::vector<int> dir_fd, temp_fd;
  for (const test::Call& c : fs.calls) {
    if (c.op == Op::open_directory) dir_fd.push_back(static_cast<int>(c.result));
    if (c.op == Op::create_file) temp_fd.push_back(static_cast<int>(c.result));
  }
  REQUIRE(dir_fd.size() == 4);
  REQUIRE(temp_fd.size() == 4);
  std::vector<int> synced, written_back, renamed_in;
  std::vector<std::string> renamed;
  for (const test::Call& c : fs.calls) {
    if (c.op == Op::sync_full) synced.push_back(c.fd);
    if (c.op == Op::start_writeback) written_back.push_back(c.fd);
    if (c.op == Op::rename) renamed.push_back(c.name), renamed_in.push_back(c.fd);
  }
  // Writeback of every file started before the first fsync; one fsync per
  // temp file, then a's directory (through its first file's descriptor)
  // before the last rename, and b's after it: two directory syncs in all.
  CHECK(written_back == temp_fd);
  CHECK(synced ==
        std::vector<int>{temp_fd[0], temp_fd[1], temp_fd[2], temp_fd[3], dir_fd[0], dir_fd[3]});
  CHECK(renamed_in == dir_fd);
  std::vector<std::string> temps;
  for (const test::Call& c : fs.calls)
    if (c.op == Op::create_file) temps.push_back(c.name);
  CHECK(renamed == temps);  // in the order added
  // a's sync lies between the third rename and the last.
  std::vector<Op> order;
  for (const test::Call& c : fs.calls)
    if (c.op == Op::rename || (c.op == Op::sync_full && (c.fd == dir_fd[0] || c.fd == dir_fd[3])))
      order.push_back(c.op);
  CHECK(order == std::vector<Op>{Op::rename, Op::rename, Op::rename, Op::sync_full, Op::rename,
                                 Op::sync_full});
  std::printf(
      "[batch-trace] FullSync batch of 3 + 1: %zu calls, %d fsyncs (4 files, 2 directories)\n",
      fs.calls.size(), fs.count(Op::sync_full));
}

TEST_CASE("a batch whose last file shares a directory syncs that directory before and after it",
          "[batch-trace]") {
  struct Row {
    const char* what;
    std::vector<int> dirs;  // file i in directory dirs[i]
    int directory_syncs;
  };
  const Row rows[] = {
      {"a, b, a", {0, 1, 0}, 3},
      {"a, a, a", {0, 0, 0}, 2},
      {"a, b, c, d", {0, 1, 2, 3}, 4},
      {"one file", {0}, 1},
      {"b, a, b, a, c", {1, 0, 1, 0, 2}, 3},
  };
  for (const Row& row : rows) {
    CAPTURE(row.what);
    TempDir dir;
    FaultFs fs;
    Batch<FullSync, FaultFs&> batch(fs);
    for (std::size_t i = 0; i < row.dirs.size(); ++i) {
      const auto d = dir / std::string(1, static_cast<char>('a' + row.dirs[i]));
      test::fs::create_directories(d);
      REQUIRE(batch.add(d / std::to_string(i), "x").ok());
    }
    const std::size_t before = fs.calls.size();
    REQUIRE(batch.commit().ok());
    protocol::BatchCalls adds;
    for (std::size_t i = 0; i < row.dirs.size(); ++i)
      adds = adds + protocol::batch_add(static_cast<int>(i));
    CHECK(fs.ops() ==
          protocol::ops(protocol::calls_of(adds + protocol::batch_commit(Sync::full, row.dirs))));
    CHECK(fs.count(Op::sync_full) == static_cast<int>(row.dirs.size()) + row.directory_syncs);
    CHECK(before == protocol::calls_of(adds).size());
  }
}

TEST_CASE("DataSync and NoSync batches: fdatasync per file, or no sync and no writeback at all",
          "[batch-trace]") {
  TempDir dir;
  const Files files(dir);
  {
    FaultFs fs;
    REQUIRE(batch_by_path<DataSync>(fs, files).status.ok());
    CHECK(fs.ops() == protocol::ops(protocol::calls_of(protocol::batch_three_and_one(Sync::data))));
    CHECK(fs.count(Op::sync_data) == 4);
    CHECK(fs.count(Op::sync_full) == 2);
  }
  {
    FaultFs fs;
    REQUIRE(batch_by_path<NoSync>(fs, files).status.ok());
    CHECK(fs.ops() == protocol::ops(protocol::calls_of(protocol::batch_three_and_one(Sync::none))));
    CHECK(fs.count(Op::sync_data) + fs.count(Op::sync_full) + fs.count(Op::start_writeback) == 0);
  }
}

TEST_CASE("a batch through handles opens no directory and takes no lock per file",
          "[batch-trace]") {
  TempDir dir;
  const Files files(dir);
  FaultFs fs;
  REQUIRE(batch_through_handles(fs, files).status.ok());
  CHECK(fs.ops() == protocol::ops(protocol::calls_of(
                        protocol::batch_three_and_one_through_handles(Sync::full))));
  CHECK(fs.count(Op::open_directory) == 2);  // the handles'
  CHECK(fs.count(Op::try_lock) == 2);        // their claims'
  CHECK(fs.count(Op::duplicate) == 0);
  CHECK(fs.count(Op::sync_full) == 6);
}

TEST_CASE("AtomicDirectory::write makes only the calls a save must, no open or lock of its own",
          "[batch-trace]") {
  TempDir dir;
  FaultFs fs;
  using Dir = AtomicDirectory<FullSync, FaultFs&>;
  auto handle = Dir::open(dir.path().string(), fs);
  REQUIRE(handle.has_value());
  const std::size_t opened = fs.calls.size();
  CHECK(fs.ops() == protocol::ops(protocol::calls_of(protocol::directory_open(0))));
  const std::string claim = fs.calls[2].name;
  CHECK(claim.size() == 11);
  const int dir_fd = static_cast<int>(fs.calls[0].result);
  for (int i = 0; i < 3; ++i) {
    const std::size_t start = fs.calls.size();
    REQUIRE(handle->write("state.json", std::to_string(i)).ok());
    std::vector<Op> ops;
    for (std::size_t k = start; k < fs.calls.size(); ++k) ops.push_back(fs.calls[k].op);
    CHECK(ops == protocol::ops(protocol::calls_of(protocol::directory_write(Sync::full))));
    const test::Call& create = fs.calls[start + 1];
    CHECK(create.fd == dir_fd);
    CHECK(create.name == claim + "." + std::to_string(i + 1));  // numbered under the claim
    CHECK(create.mode == 0600);
    CHECK(fs.calls.back().fd == dir_fd);  // the directory synced through the kept descriptor
  }
  CHECK(fs.count(Op::open_directory) == 1);
  CHECK(fs.count(Op::try_lock) == 1);
  CHECK(fs.count(Op::duplicate) == 0);
  CHECK(opened == 5);
  // NoSync: create, write, fchmod, close, rename: the floor's calls, and a look.
  FaultFs nfs;
  auto fast = AtomicDirectory<NoSync, FaultFs&>::open(dir.path().string(), nfs);
  REQUIRE(fast.has_value());
  const std::size_t start = nfs.calls.size();
  REQUIRE(fast->write("nosync", "x").ok());
  std::vector<Op> ops;
  for (std::size_t k = start; k < nfs.calls.size(); ++k) ops.push_back(nfs.calls[k].op);
  CHECK(ops == protocol::ops(protocol::calls_of(protocol::directory_write(Sync::none))));
  CHECK(ops.size() == 6);
}

// =========================================================== [batch-faults] ==

TEST_CASE("the batch fault tables cover every call each scenario makes", "[batch-faults]") {
  for (int i = 0; i < kScenarioCount; ++i) {
    const Scenario& sc = scenario(i);
    CAPTURE(sc.name);
    TempDir dir;
    const Files files(dir);
    FaultFs fs;
    const Outcome out = sc.run(fs, files);
    REQUIRE(out.status.ok());
    // The directory handles' closes come after run() returns: all recorded.
    CHECK(fs.ops() == protocol::ops(protocol::calls_of(sc.calls)));
  }
}

TEST_CASE("every call of a batch and of a handle failed, once and for good, with every errno",
          "[batch-faults]") {
  const test::OnTmpfs fast;
  Counts counts;
  std::size_t calls = 0;
  for (int i = 0; i < kScenarioCount; ++i) {
    const Scenario& sc = scenario(i);
    calls += sc.calls.size();
    const auto numbered = protocol::numbered(protocol::calls_of(sc.calls));
    Counts mine;
    for (std::size_t r = 0; r < numbered.size(); ++r) {
      const auto& [call, k] = numbered[r];
      const protocol::BatchCall& row = sc.calls[r];
      for (int error : kErrnos)
        for (bool persistent : {false, true}) {
          CAPTURE(sc.name, r, test::op_name(call.op), k, std::strerror(error), persistent);
          run_and_check(sc, row, {Fault{call.op, k, error, persistent}}, call.fails_as, error,
                        mine);
          ++mine.cases;
        }
    }
    std::printf(
        "[batch-faults] %-62s %3zu calls: %4d cases (%d failed before the first rename, %d "
        "after, %d survived)\n",
        sc.name, sc.calls.size(), mine.cases, mine.before_rename, mine.after_rename, mine.survived);
    counts.cases += mine.cases;
    counts.before_rename += mine.before_rename;
    counts.after_rename += mine.after_rename;
    counts.survived += mine.survived;
  }
  std::printf("[batch-faults] in all: %zu calls, %d cases\n", calls, counts.cases);
  CHECK(counts.cases == static_cast<int>(calls) * 8 * 2);
  CHECK(counts.after_rename > 0);
}

TEST_CASE("EINTR at every call of a batch is retried, or costs nothing", "[batch-faults]") {
  const test::OnTmpfs fast;
  int cases = 0;
  for (int i = 0; i < kScenarioCount; ++i) {
    const Scenario& sc = scenario(i);
    const auto numbered = protocol::numbered(protocol::calls_of(sc.calls));
    for (std::size_t r = 0; r < numbered.size(); ++r) {
      const auto& [call, k] = numbered[r];
      CAPTURE(sc.name, r, test::op_name(call.op), k);
      Counts ignored;
      run_and_check(sc, sc.calls[r], {Fault{call.op, k, EINTR}}, Step::none, 0, ignored);
      ++cases;
    }
  }
  std::printf("[batch-faults] transient EINTR: %d cases\n", cases);
}
