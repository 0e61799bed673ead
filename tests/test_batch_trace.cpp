// The calls of a batch and of a directory handle, exactly, against the
// BatchCall rows of support/protocol.hpp: each file synced once and each
// directory at most twice, a directory shared by the last file synced
// before and after it, DataSync and NoSync, handles that open and lock
// nothing per file, AtomicDirectory::write's calls; and the calls of each
// kind of save (writer, handle, manager, batch) counted. Each of those
// calls failed in turn is test_batch_faults.cpp's.
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/batch_files.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

using namespace test::batch;

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
    if (c.op == Op::create_file || c.op == Op::open_unnamed)
      temp_fd.push_back(static_cast<int>(c.result));
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
    if (c.op == Op::create_file || c.op == Op::link_unnamed) temps.push_back(c.name);
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
  CHECK(opened == 6);  // the open: five calls of a claim, one listing of its sweep
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

namespace {

/// One kind of save, and the calls it makes through the Fs, counted: with
/// an unnamed temp file, and with a named one (the filesystem refused an
/// unnamed file: that refusal is one call more).
struct Counted {
  const char* what;
  int (*save)(test::FaultFs& fs, const test::fs::path& dir);
  int unnamed, named;
};

template <class Policy>
int count_write(test::FaultFs& fs, const test::fs::path& dir) {
  test::write_plain(dir / "f", "old");
  REQUIRE(AtomicWriter<Policy, test::FaultFs&>(fs).write(dir / "f", "data").ok());
  return static_cast<int>(fs.calls.size());
}

int count_directory_write(test::FaultFs& fs, const test::fs::path& dir) {
  test::write_plain(dir / "f", "old");
  auto handle = AtomicDirectory<NoSync, test::FaultFs&>::open(dir.string(), fs);
  REQUIRE(handle.has_value());
  const std::size_t before = fs.calls.size();
  REQUIRE(handle->write("f", "data").ok());
  return static_cast<int>(fs.calls.size() - before);
}

int count_state_save(test::FaultFs& fs, const test::fs::path& dir) {
  test::write_plain(dir / "state.json", "{}");
  as::StateManager<NullSink, State, FullSync, test::FaultFs&> manager(dir, NullSink{}, fs);
  REQUIRE(manager.save_state(State{}).ok());
  return static_cast<int>(fs.calls.size());
}

int count_batch(test::FaultFs& fs, const test::fs::path& dir) {
  Batch<FullSync, test::FaultFs&> batch(fs);
  for (const char* name : {"1", "2", "3", "state"}) {
    test::write_plain(dir / name, "old");
    REQUIRE(batch.add(dir / name, "new").ok());
  }
  REQUIRE(batch.commit().ok());
  return static_cast<int>(fs.calls.size());
}

}  // namespace

TEST_CASE("the calls each kind of save makes are counted", "[batch-trace]") {
  // Unnamed, a save over a file: open the directory, look at the target,
  // create, write, fchmod, [fsync], lock, link, rename, close, [fsync the
  // directory], close it. Named: open_unnamed refused, then create, lock,
  // check the link count, write, fchmod, [fsync], dup, close, rename,
  // [fsync the directory], close the dup and the directory.
  const Counted rows[] = {
      {"AtomicWriter<FullSync>::write over a file", count_write<FullSync>, 12, 15},
      {"AtomicWriter<NoSync>::write over a file", count_write<NoSync>, 10, 13},
      // Named under the handle's claim either way: look, create, write,
      // fchmod, close, rename.
      {"AtomicDirectory<NoSync>::write over a file", count_directory_write, 6, 6},
      // The save as AtomicWriter<FullSync>'s, the state file there.
      {"StateManager<FullSync>::save_state over a state file", count_state_save, 12, 15},
      // Four files in one directory: per file open the directory, look,
      // create, learn the directory (fstat), write, fchmod, start the
      // writeback, fsync, lock, link, rename, close (unnamed: 12 each; named:
      // 16 with the refusal, the lock, the check, the dup and its close);
      // two directory syncs, one listing for the sweep, a directory close
      // per file.
      {"Batch<FullSync> of 4 files in one directory", count_batch, 4 * 12 + 2 + 1 + 4,
       4 * 15 + 2 + 1 + 4},
  };
  const bool unnamed = protocol::unnamed_temp_files();
  for (const Counted& row : rows)
    for (const bool named : {false, true}) {
      if (!named && !unnamed) continue;
      CAPTURE(row.what, named);
      TempDir dir;
      test::FaultFs fs;
      if (named) fs.faults = {test::no_unnamed_files()};
      const int calls = row.save(fs, dir.path());
      CHECK(calls == (named ? row.named : row.unnamed));
      std::printf("[trace] %-55s %-7s %2d calls\n", row.what, named ? "named" : "unnamed", calls);
    }
}
