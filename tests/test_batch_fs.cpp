// Batch on a real filesystem: several files committed as one, and a state
// saved as the last file of a batch (StateManager::save_state(state,
// batch)): order, modes, streamed files, refusals before any write,
// failures before and after the first rename, before_last, reuse, discard.
// The exact calls and each of them failed are test_batch_trace.cpp's and
// test_batch_faults.cpp's; a directory handle's behaviour is
// test_directory_fs.cpp's.
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

namespace {

using TracedBatch = Batch<FullSync, FaultFs&>;
using Directory = AtomicDirectory<>;

// Names of the temp files a FaultFs saw created or given to unnamed ones,
// in order (a claim's too).
std::vector<std::string> created(const FaultFs& fs) {
  std::vector<std::string> out;
  for (const test::Call& c : fs.calls)
    if ((c.op == Op::create_file || c.op == Op::link_unnamed) && c.result >= 0)
      out.push_back(c.name);
  return out;
}
std::vector<std::string> renamed(const FaultFs& fs) {
  std::vector<std::string> out;
  for (const test::Call& c : fs.calls)
    if (c.op == Op::rename && c.result >= 0) out.push_back(c.name);
  return out;
}

// Every temp file under `dirs`.
std::size_t temps_in(std::initializer_list<test::fs::path> dirs) {
  std::size_t n = 0;
  for (const auto& d : dirs) n += temp_files_in(d).size();
  return n;
}

}  // namespace

TEST_CASE("a batch renames its files in the order they were added, whatever their directories",
          "[batch]") {
  struct Row {
    const char* what;
    std::vector<std::string> files;  // relative to the test directory
  };
  const Row rows[] = {
      {"one directory", {"a/1", "a/2", "a/3", "a/state"}},
      {"two directories, the last alone", {"a/1", "a/2", "a/3", "b/state"}},
      {"three directories, interleaved", {"b/x", "a/y", "c/z", "a/w", "b/state"}},
      {"the last back in the first directory", {"a/1", "b/2", "a/state"}},
      {"a single file", {"a/state"}},
  };
  for (const Row& row : rows) {
    CAPTURE(row.what);
    TempDir dir;
    for (const char* d : {"a", "b", "c"}) test::fs::create_directories(dir / d);
    for (const std::string& f : row.files) test::write_plain(dir / f, "old " + f);
    FaultFs fs;
    TracedBatch batch(fs);
    for (const std::string& f : row.files) REQUIRE(batch.add(dir / f, "new " + f).ok());
    CHECK(batch.size() == row.files.size());
    REQUIRE(batch.commit().ok());
    CHECK(batch.size() == 0);
    CHECK(batch.replaced() == row.files.size());
    CHECK(renamed(fs) == created(fs));  // temp file i is renamed i-th
    for (const std::string& f : row.files) CHECK(read_file(dir / f) == "new " + f);
    CHECK(temps_in({dir / "a", dir / "b", dir / "c"}) == 0);
    CHECK(fs.open_descriptors().empty());
  }
}

TEST_CASE("a batch gives each file its own mode, and makes missing directories", "[batch]") {
  TempDir dir;
  Batch<> batch;
  REQUIRE(batch.add(dir / "new" / "deep" / "a", "a", 0600).ok());
  REQUIRE(batch.add(dir / "b", "b", as::WriteOptions{0640, true}).ok());
  REQUIRE(batch.add(dir / "c", "").ok());  // empty data: an empty file
  REQUIRE(batch.commit().ok());
  CHECK(read_file(dir / "new" / "deep" / "a") == "a");
  CHECK(test::mode_of(dir / "new" / "deep" / "a") == 0600);
  CHECK(test::mode_of(dir / "b") == 0640);
  CHECK(test::mode_of(dir / "c") == 0644);
  CHECK(read_file(dir / "c").empty());
  Batch<> refusing;
  const Status missing = refusing.add(dir / "nowhere" / "x", "x", as::WriteOptions{0644, false});
  CHECK(missing.step() == Step::open_directory);
  CHECK(missing.code() == std::errc::no_such_file_or_directory);
  CHECK_FALSE(test::fs::exists(dir / "nowhere"));
}

TEST_CASE("ModeFrom::existing keeps each file's ACL in a batch, by path and through a handle",
          "[batch]") {
  // user::rw- user:65534:rw- group::--- mask::rw- other::---, as the kernel
  // stores it: version 2, then (tag, permissions, id) entries.
  const std::string acl(
      "\x02\0\0\0"
      "\x01\0\x06\0\xff\xff\xff\xff"
      "\x02\0\x06\0\xfe\xff\0\0"
      "\x04\0\0\0\xff\xff\xff\xff"
      "\x10\0\x06\0\xff\xff\xff\xff"
      "\x20\0\0\0\xff\xff\xff\xff",
      44);
  const auto acl_of = [](const test::fs::path& path) {
    char value[256];
    const ssize_t n = ::getxattr(path.c_str(), "system.posix_acl_access", value, sizeof value);
    return n < 0 ? std::string("<absent>") : std::string(value, static_cast<std::size_t>(n));
  };
  TempDir dir;
  for (const char* name : {"by-path", "by-handle"}) {
    test::write_plain(dir / name, "old", 0640);
    if (::setxattr((dir / name).c_str(), "system.posix_acl_access", acl.data(), acl.size(), 0) !=
        0) {
      WARN("not run: the filesystem of " << dir.path() << " takes no POSIX ACLs");
      return;
    }
  }
  const std::string before = acl_of(dir / "by-path");
  auto handle = AtomicDirectory<>::open(dir.path());
  REQUIRE(handle);
  as::WriteOptions options;
  options.mode_from = as::ModeFrom::existing;
  Batch<> batch;
  REQUIRE(batch.add(dir / "by-path", "new", options).ok());
  REQUIRE(batch.add(*handle, "by-handle", "new", options).ok());
  REQUIRE(batch.commit().ok());
  for (const char* name : {"by-path", "by-handle"}) {
    CAPTURE(name);
    CHECK(read_file(dir / name) == "new");
    CHECK(acl_of(dir / name) == before);
    CHECK(test::mode_of(dir / name) == 0660);
  }
  SECTION("and AtomicDirectory::write alone") {
    REQUIRE(handle->write("by-handle", "newer", options).ok());
    CHECK(acl_of(dir / "by-handle") == before);
  }
}

TEST_CASE("streamed files join a batch, written in chunks, committed only by the batch",
          "[batch]") {
  TempDir dir;
  test::write_plain(dir / "big", "old");
  Batch<> batch;
  auto big = batch.add_stream(dir / "big");
  REQUIRE(big.has_value());
  REQUIRE(batch.add(dir / "state", "state").ok());
  std::string expected;
  for (int i = 0; i < 100; ++i) {
    const std::string chunk = "chunk " + std::to_string(i) + "\n";
    expected += chunk;
    REQUIRE((*big)->write(chunk).ok());
  }
  // The transaction's own commit refuses: the batch commits it.
  const Status own = (*big)->commit();
  CHECK(own.step() == Step::invalid_use);
  CHECK(contains(own.message(), "Batch::commit commits it"));
  CHECK(read_file(dir / "big") == "old");
  CHECK(temp_files_in(dir.path()).size() == protocol::listed_before_commit(2));
  REQUIRE(batch.commit().ok());
  CHECK(read_file(dir / "big") == expected);
  CHECK(read_file(dir / "state") == "state");
  CHECK(temp_files_in(dir.path()).empty());
}

TEST_CASE("a streamed write that failed fails the commit, which removes every temp file",
          "[batch]") {
  TempDir dir;
  test::write_plain(dir / "a", "old a");
  test::write_plain(dir / "b", "old b");
  FaultFs fs;
  TracedBatch batch(fs);
  REQUIRE(batch.add(dir / "a", "new a").ok());
  auto b = batch.add_stream(dir / "b");
  REQUIRE(b.has_value());
  fs.faults = {Fault{Op::write, 2, ENOSPC}};  // the stream's first write (a's was the first)
  const Status failed = (*b)->write("new b");
  CHECK(failed.step() == Step::write_data);
  // a's; b's went with its failure
  CHECK(temp_files_in(dir.path()).size() == protocol::listed_before_commit(1));
  const Status committed = batch.commit();
  CHECK(committed.step() == Step::write_data);
  CHECK(committed.code().value() == ENOSPC);
  CHECK(committed.target() == (dir / "b").string());
  CHECK(batch.replaced() == 0);
  CHECK(batch.size() == 0);
  CHECK(read_file(dir / "a") == "old a");
  CHECK(read_file(dir / "b") == "old b");
  CHECK(temp_files_in(dir.path()).empty());
  CHECK(fs.open_descriptors().empty());
}

TEST_CASE("committing an empty batch is a caller's mistake, and touches nothing", "[batch]") {
  Batch<> batch;
  const Status empty = batch.commit();
  CHECK(empty.step() == Step::invalid_use);
  CHECK(empty.code() == std::errc::invalid_argument);
  CHECK(contains(empty.message(), "an empty batch"));
  CHECK(batch.replaced() == 0);
  // So is a second commit: the first emptied the batch.
  TempDir dir;
  REQUIRE(batch.add(dir / "x", "x").ok());
  REQUIRE(batch.commit().ok());
  CHECK(batch.commit().step() == Step::invalid_use);
  CHECK(batch.replaced() == 0);
}

TEST_CASE("the same target twice in one batch is refused at add, before its temp file stays",
          "[batch]") {
  TempDir dir;
  test::fs::create_directories(dir / "d");
  test::write_plain(dir / "d" / "x", "old");
  auto handle = Directory::open((dir / "d").string());
  REQUIRE(handle.has_value());
  struct Row {
    const char* what;
    std::function<Status(Batch<>&)> again;
  };
  const std::string x = (dir / "d" / "x").string();
  const Row rows[] = {
      {"by path, twice", [&](Batch<>& b) { return b.add(x, "second"); }},
      {"by path, then streamed", [&](Batch<>& b) { return b.add_stream(x).status(); }},
      {"by path, then through the directory's handle",
       [&](Batch<>& b) { return b.add(*handle, "x", "second"); }},
  };
  for (const Row& row : rows) {
    CAPTURE(row.what);
    Batch<> batch;
    REQUIRE(batch.add(x, "first").ok());
    const Status twice = row.again(batch);
    CHECK(twice.step() == Step::check_path);
    CHECK(twice.code() == std::errc::file_exists);
    CHECK(twice.target() == x);
    CHECK(contains(twice.message(), "the batch already has this target"));
    CHECK(batch.size() == 1);
    // the refused file's temp file is gone; the first one's and the claim stay
    CHECK(temp_files_in(dir / "d").size() == 1 + protocol::listed_before_commit(1));
    REQUIRE(batch.commit().ok());
    CHECK(read_file(dir / "d" / "x") == "first");
  }
}

TEST_CASE("a target that is a directory is refused at add, before anything is written", "[batch]") {
  TempDir dir;
  test::fs::create_directories(dir / "sub");
  test::write_plain(dir / "out", "old");
  FaultFs fs;
  TracedBatch batch(fs);
  REQUIRE(batch.add(dir / "out", "new").ok());
  const int writes = fs.count(Op::write);
  const Status refused = batch.add(dir / "sub", "data");
  CHECK(refused.step() == Step::check_path);
  CHECK(refused.code().value() == EISDIR);
  CHECK(refused.target() == (dir / "sub").string());
  CHECK(contains(refused.message(), "the target is a directory"));
  CHECK(fs.count(Op::write) == writes);                                // not a byte of it
  CHECK(fs.count(Op::create_file) + fs.count(Op::open_unnamed) == 1);  // nor a temp file
  CHECK(batch.size() == 1);                                            // the batch keeps the others
  CHECK(temp_files_in(dir.path()).size() == protocol::listed_before_commit(1));
  REQUIRE(batch.commit().ok());
  CHECK(read_file(dir / "out") == "new");
  CHECK(test::fs::is_directory(dir / "sub"));
}

TEST_CASE("a bad name through a directory handle is refused before anything is written",
          "[batch][directory]") {
  TempDir dir;
  auto handle = Directory::open(dir.path().string());
  REQUIRE(handle.has_value());
  struct Row {
    const char* what;
    std::string name;
    std::errc code;
  };
  const Row rows[] = {
      {"a slash", "a/b", std::errc::invalid_argument},
      {"a leading slash", "/etc/passwd", std::errc::invalid_argument},
      {"..", "..", std::errc::is_a_directory},
      {".", ".", std::errc::is_a_directory},
      {"../escape", "../escape", std::errc::invalid_argument},
      {"empty", "", std::errc::invalid_argument},
      {"a NUL byte", std::string("a\0b", 3), std::errc::invalid_argument},
      {"too long", std::string(300, 'n'), std::errc::filename_too_long},
  };
  for (const Row& row : rows) {
    CAPTURE(row.what);
    Batch<> batch;
    const Status added = batch.add(*handle, row.name, "data");
    CHECK(added.step() == Step::check_path);
    CHECK(added.code() == row.code);
    CHECK(batch.size() == 0);
    const Status streamed = batch.add_stream(*handle, row.name).status();
    CHECK(streamed.step() == Step::check_path);
    const Status written = handle->write(row.name, "data");
    CHECK(written.step() == Step::check_path);
    CHECK(written.code() == row.code);
    CHECK(handle->begin(row.name).status().step() == Step::check_path);
    CHECK(temp_files_in(dir.path()).size() == 1);  // the claim alone
    CHECK(test::names_in(dir.path()).size() == 1);
  }
  CHECK_FALSE(test::fs::exists(dir.path().parent_path() / "escape"));
}

namespace {

/// Where a commit's failure stops it: before its first rename (nothing
/// replaced) or after it (the first targets replaced, in order).
enum class Stops { before_first_rename, after_first_rename };

/// A commit of a/1 a/2 a/3 b/state with one of its calls failed. Its
/// fsyncs 1-4 are the files', 5 is a's directory (before the last rename),
/// 6 is b's (after it).
struct FailedCommit {
  Stops stops;
  const char* what;
  Op op;  // the call failed: its op, which occurrence, with which errno
  int occurrence;
  int error;
  Step step;
  std::size_t replaced;  // Batch::replaced(): the first ones, in order
  int file;              // the target the failure names
  bool status_replaced;  // Status::replaced(): that target holds its new content
};

const FailedCommit kFailedCommits[] = {
    {Stops::before_first_rename, "fchmod of the first file", Op::set_mode, 1, EPERM,
     Step::set_permissions, 0, 0, false},
    {Stops::before_first_rename, "fsync of the third file", Op::sync_full, 3, EIO, Step::sync_file,
     0, 2, false},
    {Stops::before_first_rename, "fsync of the last file", Op::sync_full, 4, EIO, Step::sync_file,
     0, 3, false},
    // The second file's last call before the renames: the link that names
    // it where it is unnamed, else its checked close.
    protocol::unnamed_temp_files()
        ? FailedCommit{Stops::before_first_rename, "link of the second file", Op::link_unnamed, 2,
                       EIO, Step::create_temp_file, 0, 1, false}
        : FailedCommit{Stops::before_first_rename, "close of the second file", Op::close, 2, EIO,
                       Step::close_temp_file, 0, 1, false},
    {Stops::before_first_rename, "the first rename", Op::rename, 1, EXDEV, Step::rename, 0, 0,
     false},
    {Stops::after_first_rename, "the second rename", Op::rename, 2, EIO, Step::rename, 1, 1, false},
    {Stops::after_first_rename, "the third rename", Op::rename, 3, EIO, Step::rename, 2, 2, false},
    {Stops::after_first_rename, "the sync of the outputs' directory", Op::sync_full, 5, EIO,
     Step::sync_directory, 3, 0, true},
    {Stops::after_first_rename, "the last rename", Op::rename, 4, EIO, Step::rename, 3, 3, false},
    {Stops::after_first_rename, "the sync after the last rename", Op::sync_full, 6, EIO,
     Step::sync_directory, 4, 3, true},
};

/// The row's commit, checked: the Status names the step, the reason and the
/// target, and after some renames the targets replaced; exactly the first
/// `replaced` targets hold their new content; no temp file, no descriptor.
void check_failed_commit(const FailedCommit& row) {
  CAPTURE(row.what);
  TempDir dir;
  const std::vector<test::fs::path> files = {dir / "a" / "1", dir / "a" / "2", dir / "a" / "3",
                                             dir / "b" / "state"};
  for (const auto& f : files) {
    test::fs::create_directories(f.parent_path());
    test::write_plain(f, "old");
  }
  FaultFs fs;
  TracedBatch batch(fs);
  for (const auto& f : files) REQUIRE(batch.add(f, "new").ok());
  fs.faults = {Fault{row.op, row.occurrence, row.error}};
  const Status failed = batch.commit();
  CHECK(failed.step() == row.step);
  CHECK(failed.code().value() == row.error);
  CHECK(failed.target() == files[static_cast<std::size_t>(row.file)].string());
  CHECK(failed.replaced() == row.status_replaced);
  CHECK(batch.replaced() == row.replaced);
  const std::string message = failed.message();
  CAPTURE(message);
  if (row.stops == Stops::before_first_rename) {
    CHECK_FALSE(contains(message, "replaced before the failure"));
  } else {
    std::string which = "replaced before the failure: ";
    for (std::size_t i = 0; i < row.replaced; ++i) which += (i > 0 ? ", " : "") + files[i].string();
    CHECK(contains(message, which + ")"));
    CHECK(contains(message, files[static_cast<std::size_t>(row.file)].string()));
  }
  for (std::size_t i = 0; i < files.size(); ++i)
    CHECK(read_file(files[i]) == (i < row.replaced ? "new" : "old"));
  CHECK(temps_in({dir / "a", dir / "b"}) == 0);
  CHECK(fs.open_descriptors().empty());
  CHECK(batch.size() == 0);
}

}  // namespace

TEST_CASE("a failure before the first rename removes every temp file and touches no target",
          "[batch]") {
  for (const FailedCommit& row : kFailedCommits)
    if (row.stops == Stops::before_first_rename) check_failed_commit(row);
}

TEST_CASE("a failure after some renames says which targets were replaced and which one failed",
          "[batch]") {
  for (const FailedCommit& row : kFailedCommits)
    if (row.stops == Stops::after_first_rename) check_failed_commit(row);
}

TEST_CASE("before_last runs once, with the other files in place, and its failure stops the commit",
          "[batch]") {
  TempDir dir;
  for (const char* f : {"1", "2", "state"}) test::write_plain(dir / f, "old");
  Batch<> batch;
  for (const char* f : {"1", "2", "state"}) REQUIRE(batch.add(dir / f, "new").ok());
  int calls = 0;
  std::string seen;
  REQUIRE(batch
              .commit([&]() noexcept {
                ++calls;
                seen = read_file(dir / "1") + read_file(dir / "2") + read_file(dir / "state");
                return Status();
              })
              .ok());
  CHECK(calls == 1);
  CHECK(seen == "newnewold");
  CHECK(read_file(dir / "state") == "new");

  for (const char* f : {"1", "2", "state"}) REQUIRE(batch.add(dir / f, "newer").ok());
  const Status stopped = batch.commit([]() noexcept {
    return Status(Step::keep_previous, std::make_error_code(std::errc::io_error), "p", "t");
  });
  CHECK(stopped.step() == Step::keep_previous);
  CHECK(batch.replaced() == 2);
  CHECK(read_file(dir / "1") == "newer");
  CHECK(read_file(dir / "state") == "new");
  CHECK(temp_files_in(dir.path()).empty());
}

TEST_CASE("a batch can be filled again after a commit, after a failure and after a discard",
          "[batch]") {
  TempDir dir;
  test::write_plain(dir / "f", "0");
  FaultFs fs;
  TracedBatch batch(fs);
  batch.reserve(4);
  REQUIRE(batch.add(dir / "f", "1").ok());
  REQUIRE(batch.commit().ok());
  CHECK(read_file(dir / "f") == "1");

  REQUIRE(batch.add(dir / "f", "2").ok());
  fs.faults = {Fault{Op::rename, fs.count(Op::rename) + 1, EIO}};
  CHECK(batch.commit().step() == Step::rename);
  CHECK(read_file(dir / "f") == "1");
  fs.faults.clear();

  REQUIRE(batch.add(dir / "f", "3").ok());  // the failed file is no duplicate now
  batch.discard();
  CHECK(batch.size() == 0);

  REQUIRE(batch.add(dir / "f", "4").ok());
  REQUIRE(batch.add(dir / "g", "4").ok());
  REQUIRE(batch.commit().ok());
  CHECK(batch.replaced() == 2);
  CHECK(read_file(dir / "f") == "4");
  CHECK(temp_files_in(dir.path()).empty());
  CHECK(fs.open_descriptors().empty());
}

TEST_CASE("a batch sweeps each directory it wrote into by path, once, after its commit",
          "[batch][sweep]") {
  TempDir dir;
  const test::fs::path out = dir / "out", other = dir / "other";
  test::fs::create_directories(out);
  test::fs::create_directories(other);
  // Left by killed saves, one in each directory the batch writes into.
  for (const auto& d : {out, other, dir.path()})
    test::write_plain(d / ".tmp-Ab12Cd", "stale", 0600);
  test::fs::create_directory(out / ".tmp-NotOne");  // not a temp file: left, counted
  // A live save's named temp file (as on a filesystem without unnamed
  // ones): left, counted.
  AtomicWriter<FullSync, test::NamedTempFs> writer;
  auto live = writer.begin(other / "live");
  REQUIRE(live.has_value());
  REQUIRE(live->write("live").ok());

  Batch<> batch;
  REQUIRE(batch.add(out / "a", "a").ok());
  REQUIRE(batch.add(other / "b", "b").ok());
  REQUIRE(batch.add(dir / "state", "s").ok());
  CHECK(batch.swept().removed == 0);  // nothing before the commit
  REQUIRE(batch.commit().ok());
  CHECK(batch.swept().removed == 3);
  CHECK(batch.swept().in_use == 1);
  CHECK(batch.swept().not_regular == 1);
  for (const auto& d : {out, other, dir.path()}) CHECK_FALSE(test::fs::exists(d / ".tmp-Ab12Cd"));
  CHECK(test::fs::is_directory(out / ".tmp-NotOne"));
  REQUIRE(live->commit().ok());
  CHECK(read_file(other / "live") == "live");

  // Once per directory in a batch's life: its next commits sweep nothing.
  test::write_plain(out / ".tmp-Xy12Zz", "stale", 0600);
  REQUIRE(batch.add(out / "a", "a2").ok());
  REQUIRE(batch.commit().ok());
  CHECK(test::fs::exists(out / ".tmp-Xy12Zz"));
  CHECK(batch.swept().removed == 3);
  // A new batch (the next run) sweeps it.
  Batch<> next;
  REQUIRE(next.add(out / "a", "a3").ok());
  REQUIRE(next.commit().ok());
  CHECK(next.swept().removed == 1);
  CHECK_FALSE(test::fs::exists(out / ".tmp-Xy12Zz"));
}

TEST_CASE("a batch knows a directory it swept by identity, not by the spelling of its path",
          "[batch][sweep]") {
  TempDir dir;
  test::fs::create_directories(dir / "out");
  test::fs::create_directory_symlink("out", dir / "link");
  FaultFs fs;
  TracedBatch batch(fs);
  REQUIRE(batch.add(dir / "out" / "a", "a").ok());
  REQUIRE(batch.add(dir / "link" / "b", "b").ok());
  REQUIRE(batch.add(dir / "out" / ".." / "out" / "c", "c").ok());
  REQUIRE(batch.commit().ok());
  CHECK(fs.count(Op::list_directory) == 1);
  REQUIRE(batch.add(dir / "link" / "a", "a").ok());
  REQUIRE(batch.commit().ok());
  CHECK(fs.count(Op::list_directory) == 1);
}

TEST_CASE("a batch remembers as many swept directories as it has held files, the oldest forgotten",
          "[batch][sweep]") {
  TempDir dir;
  for (const char* d : {"a", "b", "c"}) test::fs::create_directories(dir / d);
  FaultFs fs;
  TracedBatch batch(fs);  // one file a run: one directory remembered
  const auto run = [&](const char* d) {
    REQUIRE(batch.add(dir / d / "f", "x").ok());
    REQUIRE(batch.commit().ok());
    return fs.count(Op::list_directory);
  };
  CHECK(run("a") == 1);
  CHECK(run("a") == 1);
  CHECK(run("b") == 2);
  CHECK(run("a") == 3);  // forgotten for b: swept again
  // Two files a run: two directories remembered.
  REQUIRE(batch.add(dir / "c" / "f", "x").ok());
  REQUIRE(batch.add(dir / "a" / "g", "x").ok());
  REQUIRE(batch.commit().ok());
  CHECK(fs.count(Op::list_directory) == 4);  // c; a was the one remembered
  CHECK(run("c") == 4);
  CHECK(run("a") == 4);
}

TEST_CASE("a batch leaves the sweep of a handle's directory to the handle", "[batch][sweep]") {
  TempDir dir;
  FaultFs fs;
  auto handle = AtomicDirectory<FullSync, FaultFs&>::open(dir.path().string(), fs);
  REQUIRE(handle.has_value());
  const int listed = fs.count(Op::list_directory);
  TracedBatch batch(fs);
  REQUIRE(batch.add(*handle, "a", "a").ok());
  REQUIRE(batch.commit().ok());
  CHECK(fs.count(Op::list_directory) == listed);
}

TEST_CASE("a failed sweep never fails the commit it follows", "[batch][sweep]") {
  TempDir dir;
  test::write_plain(dir / ".tmp-Ab12Cd", "stale", 0600);
  FaultFs fs;
  fs.faults = {Fault{Op::list_directory, 1, EIO}};
  TracedBatch batch(fs);
  REQUIRE(batch.add(dir / "a", "a").ok());
  REQUIRE(batch.commit().ok());
  CHECK(read_file(dir / "a") == "a");
  CHECK(batch.swept().removed == 0);
  CHECK(test::fs::exists(dir / ".tmp-Ab12Cd"));
}

TEST_CASE("discard and the destructor remove every temp file and touch no target", "[batch]") {
  TempDir dir;
  test::write_plain(dir / "a", "old");
  auto handle = Directory::open(dir.path().string());
  REQUIRE(handle.has_value());
  const int fds = test::open_fd_count();
  {
    Batch<> batch;
    REQUIRE(batch.add(dir / "a", "new").ok());
    REQUIRE(batch.add(*handle, "b", "new").ok());
    auto c = batch.add_stream(dir / "c");
    REQUIRE(c.has_value());
    REQUIRE((*c)->write("half").ok());
    // the claim, b's under it, and a's and c's where they have names
    CHECK(temp_files_in(dir.path()).size() == 2 + protocol::listed_before_commit(2));
    batch.discard();
    CHECK(batch.size() == 0);
    CHECK(temp_files_in(dir.path()).size() == 1);
    REQUIRE(batch.add(dir / "a", "new").ok());
    REQUIRE(batch.add(*handle, "b", "new").ok());
  }  // the destructor
  CHECK(temp_files_in(dir.path()).size() == 1);
  CHECK(read_file(dir / "a") == "old");
  CHECK_FALSE(test::fs::exists(dir / "b"));
  CHECK_FALSE(test::fs::exists(dir / "c"));
  CHECK(test::open_fd_count() == fds);
}

TEST_CASE("save_state(state, batch) commits the outputs, then the state, and logs it saved",
          "[batch]") {
  struct Row {
    const char* what;
    bool keep_previous;
  };
  for (const Row& row : {Row{"plain", false}, Row{"keep_previous", true}}) {
    CAPTURE(row.what);
    TempDir dir;
    test::CaptureSink log;
    as::StateOptions options;
    options.keep_previous = row.keep_previous;
    as::StateManager<test::CaptureSink&> manager(dir / "state", log, options);
    as::State first;
    first.oracle_name = "first";
    first.last_updated = 1700000000;
    REQUIRE(manager.save_state(first).ok());
    const std::string first_text = read_file(manager.state_file());

    as::State second = first;
    second.oracle_name = "second";
    second.last_updated += 60;
    Batch<> batch;
    REQUIRE(batch.add(dir / "out" / "full.json", "full").ok());
    REQUIRE(batch.add(dir / "out" / "summary.json", "summary").ok());
    REQUIRE(manager.save_state(second, batch).ok());
    CHECK(batch.size() == 0);
    CHECK(batch.replaced() == 3);
    CHECK(read_file(dir / "out" / "full.json") == "full");
    auto loaded = manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(loaded->oracle_name == "second");
    CHECK(log.with("state saved").size() == 2);
    if (row.keep_previous)
      CHECK(read_file(manager.state_file() + ".prev") == first_text);
    else
      CHECK_FALSE(test::fs::exists(manager.state_file() + ".prev"));
    CHECK(temps_in({dir / "out", dir / "state"}) == 0);
  }
}

TEST_CASE("save_state(state, batch) that fails gives the batch up and logs nothing as saved",
          "[batch]") {
  TempDir dir;
  test::CaptureSink log;
  as::StateManager<test::CaptureSink&> manager(dir.path(), log);
  test::fs::create_directories(manager.state_file());  // the state's target: a directory
  test::write_plain(dir / "out", "old");
  Batch<> batch;
  REQUIRE(batch.add(dir / "out", "new").ok());
  const Status failed = manager.save_state(as::State{}, batch);
  CHECK(failed.step() == Step::check_path);
  CHECK(failed.code().value() == EISDIR);
  CHECK(failed.context() == "save state with its batch");
  CHECK(batch.size() == 0);
  CHECK(batch.replaced() == 0);
  CHECK(read_file(dir / "out") == "old");
  CHECK(temp_files_in(dir.path()).empty());
  CHECK(log.with("state saved").empty());
}

TEST_CASE("a failure after some renames keeps the failure's own note in its message", "[batch]") {
  // A failure after a rename keeps its own notes, as it does before any
  // rename: here why a keep_previous failed ("needs a filesystem with hard
  // links"), beside the targets already replaced.
  TempDir dir;
  FaultFs fs;
  test::CaptureSink log;
  as::StateOptions options;
  options.keep_previous = true;
  as::StateManager<test::CaptureSink&, as::State, FullSync, FaultFs&> manager(dir / "state", log,
                                                                              fs, options);
  REQUIRE(manager.save_state(as::State{}).ok());
  Batch<FullSync, FaultFs&> batch(fs);
  REQUIRE(batch.add(dir / "out", "new").ok());
  fs.faults = {Fault{Op::link, 1, EPERM}};
  as::State next;
  next.last_updated = 1;
  const Status failed = manager.save_state(next, batch);
  CHECK(failed.step() == Step::keep_previous);
  CHECK(batch.replaced() == 1);
  CHECK(read_file(dir / "out") == "new");
  const std::string message = failed.message();
  CAPTURE(message);
  CHECK(contains(message, "replaced before the failure: " + (dir / "out").string()));
  CHECK(contains(message, "StateOptions::keep_previous needs a filesystem with hard links"));
  CHECK(log.with("state saved").size() == 1);
}

namespace {
// A directory as the kernel knows it.
std::pair<dev_t, ino_t> identity_of(const test::fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return {st.st_dev, st.st_ino};
}
}  // namespace

TEST_CASE(
    "a batch syncs every directory that gained a file before the last rename, known by "
    "identity, not by its path's text",
    "[batch]") {
  struct Row {
    const char* what;
    // Adds the outputs (anything but the last file), moving directories or
    // the working directory between adds; returns the directories that
    // gained them, as they are named once the batch is committed.
    std::vector<test::fs::path> (*add_outputs)(TracedBatch&, FaultFs&, const test::fs::path&);
  };
  static std::optional<AtomicDirectory<FullSync, FaultFs&>> handle;
  const Row rows[] = {
      {"a handle whose path was renamed away and made again, then the same text by path",
       [](TracedBatch& batch, FaultFs& fs, const test::fs::path& dir) {
         auto opened = AtomicDirectory<FullSync, FaultFs&>::open((dir / "out").string(), fs);
         REQUIRE(opened.has_value());
         handle.emplace(std::move(*opened));
         REQUIRE(batch.add(*handle, "a.json", "a").ok());
         test::fs::rename(dir / "out", dir / "old");
         test::fs::create_directory(dir / "out");
         REQUIRE(batch.add(dir / "out" / "b.json", "b").ok());
         return std::vector<test::fs::path>{dir / "old", dir / "out"};
       }},
      {"a chdir between two adds of the same relative path",
       [](TracedBatch& batch, FaultFs&, const test::fs::path& dir) {
         test::fs::create_directories(dir / "x" / "out");
         test::fs::create_directories(dir / "y" / "out");
         REQUIRE(::chdir((dir / "x").c_str()) == 0);
         REQUIRE(batch.add("out/a.json", "a").ok());
         REQUIRE(::chdir((dir / "y").c_str()) == 0);
         REQUIRE(batch.add("out/b.json", "b").ok());
         return std::vector<test::fs::path>{dir / "x" / "out", dir / "y" / "out"};
       }},
  };
  const test::fs::path start = test::fs::current_path();
  for (const Row& row : rows) {
    CAPTURE(row.what);
    TempDir dir;
    FaultFs fs;
    std::vector<std::pair<dev_t, ino_t>> synced_before_last;
    int renames = 0;
    fs.before = [&](Op op, int fd, const char*) {
      if (op == Op::rename) ++renames;
      if (op == Op::sync_full && renames < 3) {  // two outputs: the last rename is the third
        struct stat st {};
        if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
          synced_before_last.emplace_back(st.st_dev, st.st_ino);
      }
    };
    {
      TracedBatch batch(fs);
      const std::vector<test::fs::path> gained = row.add_outputs(batch, fs, dir.path());
      REQUIRE(batch.add(dir / "state" / "state.json", "state").ok());
      const Status committed = batch.commit();
      REQUIRE(::chdir(start.c_str()) == 0);
      REQUIRE(committed.ok());
      CHECK(renames == 3);
      for (const test::fs::path& d : gained) {
        CAPTURE(d.string());
        const auto id = identity_of(d);
        CHECK(std::find(synced_before_last.begin(), synced_before_last.end(), id) !=
              synced_before_last.end());
      }
    }
    handle.reset();
  }
}

TEST_CASE("the same target through a handle and by path is refused at add, as the same text is",
          "[batch]") {
  TempDir dir;
  auto out = Directory::open((dir / "out").string());
  REQUIRE(out.has_value());
  struct Row {
    const char* what;
    std::function<Status(Batch<>&)> first, second;
  };
  const std::string d = (dir / "out").string();
  const Row rows[] = {
      {"a handle, then its file by path", [&](Batch<>& b) { return b.add(*out, "x", "1"); },
       [&](Batch<>& b) { return b.add(d + "/x", "2"); }},
      {"by path, then through the handle", [&](Batch<>& b) { return b.add(d + "/x", "1"); },
       [&](Batch<>& b) { return b.add(*out, "x", "2"); }},
      {"two spellings of one path", [&](Batch<>& b) { return b.add(d + "/x", "1"); },
       [&](Batch<>& b) { return b.add(d + "/./x", "2"); }},
  };
  for (const Row& row : rows) {
    CAPTURE(row.what);
    Batch<> batch;
    REQUIRE(row.first(batch).ok());
    const Status second = row.second(batch);
    CHECK(second.step() == Step::check_path);
    CHECK(second.code() == std::errc::file_exists);
    CHECK(batch.size() == 1);
    batch.discard();
  }
}
