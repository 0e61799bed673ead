// The protocol, exactly: which calls a save makes, in which order, with
// which arguments, under each sync policy.
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

namespace {

template <class Policy>
test::FaultFs save(const test::fs::path& path, unsigned mode = 0644,
                   std::vector<test::Fault> faults = {}) {
  test::FaultFs fs;
  fs.faults = std::move(faults);
  const auto status = AtomicWriter<Policy, test::FaultFs&>(fs).write(path, "data", mode);
  REQUIRE(status.ok());
  CHECK(fs.open_descriptors().empty());
  return fs;
}

// Struct members of "sync policy that syncs the file but not the directory".
struct FileOnlySync {
  static constexpr atomic_state::SyncLevel file = atomic_state::SyncLevel::full;
  static constexpr bool directory = false;
};

}  // namespace

TEST_CASE(
    "FullSync, unnamed: temp, write, fchmod, fsync, lock, link, rename, close, fsync directory",
    "[trace]") {
  if (!protocol::unnamed_temp_files()) {
    WARN("the test directory's filesystem has no unnamed files (O_TMPFILE): nothing to trace");
    return;
  }
  TempDir dir;
  test::write_plain(dir / "f", "old");
  const auto fs = save<FullSync>(dir / "f", 0640);
  CHECK(fs.ops() == protocol::ops(protocol::overwrite_full_sync()));
  const auto& c = fs.calls;
  const int dir_fd = static_cast<int>(c[0].result);
  const int file_fd = static_cast<int>(c[2].result);
  CHECK(c[0].name == dir.path().string());
  CHECK(c[1].fd == dir_fd);  // the target is looked at, not followed ...
  CHECK(c[1].name == "f");
  CHECK(c[2].fd == dir_fd);  // ... before the temp file exists, unnamed
  CHECK(c[2].mode == 0600);
  CHECK(c[3].fd == file_fd);  // written
  CHECK(c[4].fd == file_fd);
  CHECK(c[4].mode == 0640);
  CHECK(c[5].fd == file_fd);  // synced
  CHECK(c[6].fd == file_fd);  // locked before it has a name: a sweep keeps off it ...
  CHECK(c[7].fd == file_fd);  // ... named ...
  CHECK(c[7].name.rfind(".tmp-", 0) == 0);
  CHECK(c[8].fd == dir_fd);  // ... renamed ...
  CHECK(c[8].name == c[7].name);
  CHECK(c[9].fd == file_fd);  // ... and only then closed, the lock with it
  CHECK(c[10].fd == dir_fd);  // the directory synced after the rename
  CHECK(c[11].fd == dir_fd);
}

TEST_CASE("FullSync, named: temp, lock, write, fchmod, fsync, close, rename, fsync directory",
          "[trace]") {
  TempDir dir;
  test::write_plain(dir / "f", "old");
  const auto fs = save<FullSync>(dir / "f", 0640, {test::no_unnamed_files()});
  CHECK(fs.ops() == protocol::ops(protocol::open_directory() + protocol::check_target() +
                                  protocol::Calls{{Op::open_unnamed, Step::none, ""}} +
                                  protocol::create_temp_file(true) + protocol::write_data() +
                                  protocol::commit(protocol::Sync::full, true)));
  const auto& c = fs.calls;
  const int dir_fd = static_cast<int>(c[0].result);
  const int file_fd = static_cast<int>(c[3].result);
  CHECK(c[2].fd == dir_fd);  // refused: no unnamed files here
  CHECK(c[3].fd == dir_fd);
  CHECK(c[3].mode == 0600);
  CHECK(c[3].name.rfind(".tmp-", 0) == 0);
  CHECK(c[4].fd == file_fd);  // the temp file's own lock: the sweep keeps off it
  CHECK(c[5].fd == file_fd);  // and still linked: no sweep took it first
  CHECK(c[6].fd == file_fd);
  CHECK(c[7].mode == 0640);
  CHECK(c[8].fd == file_fd);  // the file is synced ...
  CHECK(c[9].fd == file_fd);  // a second descriptor keeps the lock ...
  const int lock_fd = static_cast<int>(c[9].result);
  CHECK(c[10].fd == file_fd);  // ... past this close ...
  CHECK(c[11].fd == dir_fd);   // ... to the rename
  CHECK(c[11].name == c[3].name);
  CHECK(c[12].fd == dir_fd);  // ... and so is the directory, after the rename
  CHECK(c[13].fd == lock_fd);
  CHECK(c[14].fd == dir_fd);
}

TEST_CASE("DataSync: fdatasync for the file, fsync for the directory", "[trace]") {
  TempDir dir;
  const auto fs = save<DataSync>(dir / "f");
  CHECK(fs.ops() == protocol::ops(protocol::overwrite_data_sync()));
  CHECK(fs.count(Op::sync_data) == 1);
  CHECK(fs.count(Op::sync_full) == 1);
}

TEST_CASE("NoSync: no sync call at all", "[trace]") {
  TempDir dir;
  const auto fs = save<NoSync>(dir / "f");
  CHECK(fs.ops() == protocol::ops(protocol::overwrite_no_sync()));
  CHECK(fs.count(Op::sync_data) + fs.count(Op::sync_full) == 0);
}

TEST_CASE("a custom policy can sync the file but not the directory", "[trace]") {
  TempDir dir;
  const auto fs = save<FileOnlySync>(dir / "f");
  CHECK(fs.ops() == protocol::ops(protocol::save(protocol::Sync::file_only)));
  CHECK(fs.count(Op::sync_full) == 1);
}

TEST_CASE("a first save into missing directories syncs each directory that gained one", "[trace]") {
  TempDir dir;
  const std::string root = dir.path().string();
  const auto fs = save<FullSync>(dir / "a" / "b" / "f");
  REQUIRE(fs.ops() == protocol::ops(protocol::first_save_two_levels()));
  const std::vector<std::string> named = {
      root + "/a/b",  // missing
      root + "/a/b",  // parent missing too
      root + "/a",    // made, and its mode looked at
      root + "/a",
      root,  // root gained "a"
      "",
      "",
      root + "/a/b",  // made, and its mode looked at
      root + "/a/b",
      root + "/a",  // "a" gained "b"
      "",
      "",
      root + "/a/b",  // now it opens
  };
  for (std::size_t i = 0; i < named.size(); ++i) {
    CAPTURE(i);
    if (!named[i].empty()) CHECK(fs.calls[i].name == named[i]);
  }
  CHECK(fs.calls[0].result == -ENOENT);
  CHECK(fs.calls[1].result == -ENOENT);
  CHECK(fs.calls[2].mode == 0755);
  CHECK(fs.count(Op::set_mode) == 1);  // the umask left owner write: nothing to add
}

TEST_CASE("a relative path syncs the working directory when it gains a directory", "[trace]") {
  TempDir dir;
  const auto saved = test::fs::current_path();
  test::fs::current_path(dir.path());
  test::FaultFs fs;
  const auto status = AtomicWriter<FullSync, test::FaultFs&>(fs).write("new/f", "x");
  test::fs::current_path(saved);
  REQUIRE(status.ok());
  CHECK(fs.calls[1].op == Op::make_directory);
  CHECK(fs.calls[1].name == "new");
  CHECK(fs.calls[2].op == Op::entry_info);
  CHECK(fs.calls[3].op == Op::open_directory);
  CHECK(fs.calls[3].name == ".");
  CHECK(fs.calls[4].op == Op::sync_full);
  CHECK(test::read_file(dir / "new" / "f") == "x");
}

TEST_CASE("NoSync creates missing directories without syncing them", "[trace]") {
  TempDir dir;
  const auto fs = save<NoSync>(dir / "a" / "f");
  CHECK(fs.count(Op::make_directory) == 1);
  CHECK(fs.count(Op::sync_full) == 0);
  CHECK(fs.count(Op::open_directory) == 2);
}

TEST_CASE("an empty payload makes no write call", "[trace]") {
  TempDir dir;
  test::FaultFs fs;
  REQUIRE(AtomicWriter<FullSync, test::FaultFs&>(fs).write(dir / "f", "").ok());
  CHECK(fs.count(Op::write) == 0);
}
