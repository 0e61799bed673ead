// Each call of a SnapshotWriter's open, add and publish failed with every
// errno, once and for good, and EINTR at every call, from
// support/snapshot_protocol.hpp: the step, path, code and replaced(); no
// descriptor leaked; current and its set unchanged before the rename, the
// new set after it; no temp link; the next open removing whatever was left.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"
#include "support/snapshot_dir.hpp"
#include "support/snapshot_protocol.hpp"

namespace fs = test::fs;
using namespace test::snapshot;

namespace {

const int kErrnos[] = {ENOSPC, EIO, EDQUOT, EACCES, EPERM, EROFS, EXDEV, EMFILE};

struct FaultScenario {
  const char* name;
  protocol::Calls calls;
  bool sweeping;  // a killed publisher's leftovers (gen-3, a temp link) to remove at open
};

std::string expand(std::string pattern, const fs::path& dir, const FaultFs& fs) {
  std::string claim, link;
  for (const auto& c : fs.calls) {
    if (c.op == Op::create_file && claim.empty()) claim = c.name;
    if (c.op == Op::make_symlink) link = c.name;
  }
  const std::string d = dir.string();
  const auto put = [&](const std::string& key, const std::string& value) {
    for (auto at = pattern.find(key); at != std::string::npos; at = pattern.find(key))
      pattern.replace(at, key.size(), value);
  };
  put("$C", d + "/" + claim);
  put("$K", d + "/.snapshot.lock");
  put("$B", d + "/.building-gen-3");
  put("$L", d + "/" + link);
  put("$O", d + "/gen-1");
  put("$X", d + "/.removing-gen-1");
  put("$S", d + "/.building-gen-3");
  put("$D", d);
  return pattern;
}

/// Runs a scenario under `faults` as far as it goes; its first failure.
Status run_scenario(const FaultScenario& sc, const fs::path& dir, FaultFs& fs) {
  auto writer = SnapshotWriter<FullSync, FaultFs&>::open(dir.string(), fs);
  if (!writer) return writer.status();
  if (sc.sweeping) return {};
  if (Status s = writer->add("a", "new a"); !s) return s;
  if (Status s = writer->add("b", "new b", 0640); !s) return s;
  return writer->publish();
}

struct Outcome {
  int ok = 0, failed = 0, replaced = 0;
};

/// One scenario under `faults`, checked against everything a failure
/// promises: no descriptor leaked, no temp link, no generation but the
/// kept ones; current unchanged before the rename and the new set after it.
void run_and_check(const FaultScenario& sc, std::vector<Fault> faults, Step expected, bool replaced,
                   const char* subject, int error, Outcome& outcome, bool left = false) {
  TempDir dir;
  two_generations(dir.path());
  if (sc.sweeping) {
    make_building(dir.path(), 3, {{"a", "half"}});
    fs::create_symlink("gen-3", dir / ".current.tmp-AAAAAA");
  }
  const int fds_before = test::open_fd_count();
  FaultFs fs;
  fs.faults = std::move(faults);
  const Status status = run_scenario(sc, dir.path(), fs);

  CHECK(test::open_fd_count() == fds_before);
  CHECK(fs.open_descriptors().empty());
  const bool unlink_failed = std::any_of(fs.faults.begin(), fs.faults.end(),
                                         [](const Fault& f) { return f.op == Op::unlink; });
  // The claim's file goes with the writer, unless its removal failed (then
  // it is a stale temp file: see "a claim left by a killed publisher").
  if (!unlink_failed) CHECK(test::temp_files_in(dir.path()).empty());

  // A row after the rename: the new set is published. Only a failure of
  // the swap's own directory sync leaves it not known to be durable
  // (replaced()); a prune failing comes after that sync.
  const bool published = replaced;
  if (expected == Step::remove_temp_file) replaced = false;
  if (expected == Step::none) {
    CHECK(status.ok());
    ++outcome.ok;
  } else {
    REQUIRE_FALSE(status.ok());
    ++outcome.failed;
    CHECK(status.step() == expected);
    CHECK(status.code().value() == error);
    CHECK(status.replaced() == replaced);
    CHECK(status.path() == expand(subject, dir.path(), fs));
    const std::string message = status.message();
    CAPTURE(message);
    CHECK(message.find(std::strerror(error)) != std::string::npos);
  }
  const bool new_set = expected == Step::none ? !sc.sweeping : published;
  if (new_set) {
    outcome.replaced += published ? 1 : 0;
    CHECK(current_target(dir.path()) == "gen-3");
    CHECK(read_current(dir.path()) == Files{{"a", "new a"}, {"b", "new b"}});
    CHECK(test::mode_of(dir / "gen-3" / "b") == 0640);
    const auto gens = generations(dir.path());
    // Only pruning may have failed: gen-1 may stay, nothing else.
    CHECK(
        (gens == std::vector<std::uint64_t>{2, 3} || gens == std::vector<std::uint64_t>{1, 2, 3}));
    if (expected == Step::none && !left) CHECK(gens == std::vector<std::uint64_t>{2, 3});
  } else {
    CHECK(current_target(dir.path()) == "gen-2");
    CHECK(read_current(dir.path()) == Files{{"a", "old 2"}, {"b", "old 2"}});
    const auto gens = generations(dir.path());
    if (sc.sweeping && expected != Step::none)
      CHECK((gens == std::vector<std::uint64_t>{1, 2} ||
             gens == std::vector<std::uint64_t>{1, 2, 3}));  // the leftovers may stay
    else
      CHECK(gens == std::vector<std::uint64_t>{1, 2});
  }
  if (!left && (!sc.sweeping || expected == Step::none)) CHECK(temp_links(dir.path()).empty());
  // Whatever was left, the next open removes it.
  {
    auto next = Writer::open(dir.path().string());
    REQUIRE(next.has_value());
    CHECK(temp_links(dir.path()).empty());
    CHECK(generations(dir.path()).size() == 2);
  }
}

const FaultScenario kScenarios[] = {
    {"open, add two files, publish (gen-1 pruned)",
     protocol::snapshot_two_files(protocol::Sync::full), false},
    {"open over a killed publisher's gen-3 and temp link", protocol::snapshot_open_sweeping(),
     true},
};

/// A removal the system refuses for want of permission (EACCES, EPERM), in
/// a prune: the entry is another user's, left and counted (not_permitted),
/// and the open or publish succeeds. The listing of the snapshot directory
/// itself still fails them. A call survived once fails, for good, as its
/// later call does.
bool left_when_refused(const protocol::Call& call, int error, bool persistent) {
  const bool later = persistent && call.later_fails_as != Step::none;
  return (error == EACCES || error == EPERM) &&
         (later ? call.later_fails_as : call.fails_as) == Step::remove_temp_file &&
         std::string(later ? call.later_names : call.names) != "$D";
}

}  // namespace

TEST_CASE("the snapshot fault tables cover every call of open, add and publish",
          "[snapshot-faults]") {
  for (const FaultScenario& sc : kScenarios) {
    CAPTURE(sc.name);
    TempDir dir;
    two_generations(dir.path());
    if (sc.sweeping) {
      make_building(dir.path(), 3, {{"a", "half"}});
      fs::create_symlink("gen-3", dir / ".current.tmp-AAAAAA");
    }
    FaultFs fs;
    REQUIRE(run_scenario(sc, dir.path(), fs).ok());
    CHECK(fs.ops() == protocol::ops(sc.calls));
  }
}

TEST_CASE("every call of a publish failed with each errno, once and for good, leaks nothing",
          "[snapshot-faults]") {
  const test::OnTmpfs fast;
  int cases = 0;
  std::size_t calls = 0;
  Outcome outcome;
  for (const FaultScenario& sc : kScenarios) {
    calls += sc.calls.size();
    for (const auto& [call, k] : protocol::numbered(sc.calls)) {
      for (const int error : kErrnos) {
        for (const bool persistent : {false, true}) {
          CAPTURE(sc.name, test::op_name(call.op), k, std::strerror(error), persistent);
          const bool later = persistent && call.later_fails_as != Step::none;
          if (left_when_refused(call, error, persistent)) {
            run_and_check(sc, {Fault{call.op, k, error, persistent}}, Step::none, false, "", 0,
                          outcome, true);
            ++cases;
            continue;
          }
          run_and_check(sc, {Fault{call.op, k, error, persistent}},
                        later ? call.later_fails_as : call.fails_as, call.replaced && !later,
                        later ? call.later_names : call.names, error, outcome);
          ++cases;
        }
      }
    }
  }
  std::cout << "snapshot faults: " << cases << " cases (" << calls << " calls x "
            << std::size(kErrnos) << " errnos x once/for good): " << outcome.failed << " failed ("
            << outcome.replaced << " after the rename), " << outcome.ok << " survived\n";
  CHECK(cases == static_cast<int>(calls) * 8 * 2);
}

TEST_CASE("EINTR at every call of a publish is retried and the publish succeeds",
          "[snapshot-faults]") {
  const test::OnTmpfs fast;
  Outcome outcome;
  for (const FaultScenario& sc : kScenarios)
    for (const auto& [call, k] : protocol::numbered(sc.calls)) {
      if (call.op == Op::write || call.op == Op::close) continue;  // looped / never retried
      CAPTURE(sc.name, test::op_name(call.op), k);
      run_and_check(sc, {Fault{call.op, k, EINTR}, Fault{call.op, k + 1, EINTR}}, Step::none, false,
                    "", 0, outcome);
    }
  CHECK(outcome.failed == 0);
}

namespace {
template <class Policy>
Status publish_with_prune_failing(const fs::path& dir, Fault fault, std::uint64_t& current) {
  FaultFs fs;
  fs.faults = {fault};
  auto writer = SnapshotWriter<Policy, FaultFs&>::open(dir.string(), fs);
  REQUIRE(writer.has_value());
  REQUIRE(writer->add("a", "new a").ok());
  REQUIRE(writer->add("b", "new b", 0640).ok());
  const Status s = writer->publish();
  current = writer->current();
  return s;
}
}  // namespace

TEST_CASE("a prune failing after the swap says the snapshot was published, and whether durably",
          "[snapshot-faults]") {
  struct Row {
    const char* name;
    bool syncs;  // FullSync, else NoSync
    Fault fault;
    const char* failed_on;  // in the snapshot directory
    const char* says;
  };
  // open_directory_at's first call is the new generation's (the first add),
  // its second the old generation's, in the prune.
  const Row rows[] = {
      {"FullSync, the old generation not removed", true, Fault{Op::remove_directory, 1, EIO},
       ".removing-gen-1", "the snapshot was published and is durable"},
      {"FullSync, the old generation not opened", true, Fault{Op::open_directory_at, 2, EIO},
       "gen-1", "the snapshot was published and is durable"},
      {"NoSync, the old generation not removed", false, Fault{Op::remove_directory, 1, EIO},
       ".removing-gen-1", "the snapshot was published (NoSync: not known to be durable)"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.name);
    TempDir dir;
    two_generations(dir.path());
    std::uint64_t current = 0;
    const Status s = row.syncs
                         ? publish_with_prune_failing<FullSync>(dir.path(), row.fault, current)
                         : publish_with_prune_failing<NoSync>(dir.path(), row.fault, current);
    REQUIRE_FALSE(s.ok());
    const std::string message = s.message();
    CAPTURE(message);
    CHECK(s.step() == Step::remove_temp_file);
    CHECK(s.code().value() == row.fault.error);
    CHECK(s.path() == (dir / row.failed_on).string());
    CHECK(message.find(row.says) != std::string::npos);
    CHECK(message.find("an old generation was not removed") != std::string::npos);
    if (row.syncs) CHECK(message.find("not known to be durable") == std::string::npos);
    CHECK_FALSE(s.replaced());  // nothing left to make durable
    CHECK(current == 3);
    CHECK(read_current(dir.path()) == Files{{"a", "new a"}, {"b", "new b"}});
  }
}

TEST_CASE("a mount point met by a prune (EBUSY) is left and counted, never a failure",
          "[snapshot-faults]") {
  // What the kernel says of a mount point (a filesystem, or a bind mount,
  // on a name the writer removes or inside a generation): EBUSY at its
  // rename, its removal or its unlink. Each is left, counted (not_regular),
  // and the open and the publish succeed; the next open without the mount
  // removes it. The faults are for good: remove_stale_generations meets
  // them again.
  struct Row {
    const char* name;
    bool sweeping;  // a killed publisher's .building-gen-3 to remove at open
    Fault fault;
    const char* stays;  // in DIR, after the publish
    std::size_t left;   // counted not_regular by a sweep after it
  };
  const Row rows[] = {
      {"a mount on the old generation: its rename", false, Fault{Op::rename, 2, EBUSY, true},
       "gen-1", 1},
      {"a mount on the old generation, met at its removal", false,
       Fault{Op::remove_directory, 1, EBUSY, true}, ".removing-gen-1", 1},
      {"a file mounted inside the old generation", false, Fault{Op::unlink, 1, EBUSY, true},
       ".removing-gen-1/a", 1},
      {"a mount on a half-built generation", true, Fault{Op::remove_directory, 1, EBUSY, true},
       ".building-gen-3/a", 2},  // and the old generation, met at its removal too
  };
  for (const Row& row : rows) {
    CAPTURE(row.name);
    TempDir dir;
    two_generations(dir.path());
    if (row.sweeping) make_building(dir.path(), 3, {{"a", "half"}});
    {
      FaultFs fs;
      fs.faults = {row.fault};
      auto writer = SnapshotWriter<FullSync, FaultFs&>::open(dir.path().string(), fs);
      CAPTURE(writer.has_value() ? std::string() : writer.status().message());
      REQUIRE(writer.has_value());
      REQUIRE(writer->add("a", "new a").ok());
      const Status published = writer->publish();
      CAPTURE(published.message());
      REQUIRE(published.ok());
      CHECK(writer->current() == (row.sweeping ? 4u : 3u));
      CHECK(read_current(dir.path()) == Files{{"a", "new a"}});
      CHECK(fs::exists(dir / row.stays));
      const auto swept = writer->remove_stale_generations();
      REQUIRE(swept.has_value());
      CHECK(swept->not_regular == row.left);
      CHECK(fs::exists(dir / row.stays));
    }
    auto next = Writer::open(dir.path().string());
    REQUIRE(next.has_value());
    CHECK(unfinished(dir.path()).empty());
    CHECK(generations(dir.path()).size() == 2);
  }
}
