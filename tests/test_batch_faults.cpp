// Each call of a batch and of a directory handle failed in turn, from the
// BatchCall rows of support/protocol.hpp (the calls themselves are
// test_batch_trace.cpp's): after every failure no temp file and no
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
#include "support/batch_files.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

using namespace test::batch;

namespace {

const int kErrnos[] = {ENOSPC, EIO, EDQUOT, EACCES, EPERM, EROFS, EXDEV, EMFILE};

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
  // An unnamed temp file not named yet is its directory in messages.
  put("$T", static_cast<std::size_t>(file) < temps.size()
                ? dir + "/" + temps[static_cast<std::size_t>(file)]
                : dir);
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
      if (c.op == Op::create_file || c.op == Op::link_unnamed) names.push_back(c.name);
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
