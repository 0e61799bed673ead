// Power loss at every crash point of a save by AtomicWriter. A save runs
// once against SimFs (see support/sim_fs.hpp for the persistence model);
// before each of its calls, and once after it returned, every image a power
// loss could leave on the disk is built and checked: the target holds the
// old file or the new one, whole and with its own mode, never anything
// else, and the new one once the save reported success. NoSync, and a
// policy that syncs the file but not the directory, show that the checks
// can fail. StateManager's crash points are in test_state_crash.cpp; the
// checks of an image are support/crash_images.hpp's.
//
// The crash points are one before each call support/protocol.hpp says a
// save makes, and one after: the test checks it explored exactly those.
// The counts of images are pinned, so that coverage cannot shrink without a
// test saying so; they were computed by running this file and checked by
// hand for the small cases (see "the model" cases at the end). A change to
// the protocol is one edit of the table; it changes the image counts too:
// re-derive them then, and make sure the violations stay at zero.
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/crash_images.hpp"
#include "support/names.hpp"

using namespace test::crash;

namespace {

/// Syncs the file but never the directory: the rename may not survive.
struct FileSyncOnly {
  static constexpr atomic_state::SyncLevel file = atomic_state::SyncLevel::full;
  static constexpr bool directory = false;
};

}  // namespace

// ===================================================== FullSync: promises ==

TEST_CASE(
    "FullSync: a save over an existing file leaves the old file or the new one, "
    "at every crash point",
    "[crash]") {
  const Target t{"/d/state.json", kOld, kNew};
  const Run run = record_write<FullSync>(existing_file(), t.path, t.now);
  // The 12 calls of support/protocol.hpp's overwrite_full_sync, and the
  // point after the save returned: 13 points. The temp file is unnamed until
  // its link, in no image whatever its bytes: 1 image before each of open
  // dir, look, create, write, fchmod, fsync, lock, link (8) | 2 before the
  // rename (the synced temp's name or not) | 3 before the close and 3
  // before the directory's fsync (old; old and temp; new) | 1 1 = 18.
  // Distinct: old alone, old beside the whole new temp, new = 3. (Named
  // temp files gave 35 and 10: the temp's 8 unsynced versions beside the
  // old file.) A subset adds nothing: the rename without the link is
  // skipped.
  const Pinned pins[] = {{Order::prefix, 18, 3}, {Order::subset, 18, 3}};
  for (const Pinned& pin : pins) {
    CAPTURE(sim::to_string(pin.order));
    const Tally tally = enumerate(run, pin.order, t, target_check(t));
    print("existing file", "FullSync", pin.order, tally);
    require_old_or_new(run, tally, pin.order);
    CHECK(tally.old_images > 0);
    require_pinned(run, tally, pin, protocol::save(Sync::full));
  }
}

TEST_CASE(
    "FullSync: a first save leaves no file or the whole new one, and the new one "
    "once it succeeded",
    "[crash]") {
  const Target t{"/d/state.json", std::nullopt, kNew};
  const Run run = record_write<FullSync>(empty_directory(), t.path, t.now);
  // As over an existing file, with "no file" in the place of the old one.
  const Pinned pins[] = {{Order::prefix, 18, 3}, {Order::subset, 18, 3}};
  for (const Pinned& pin : pins) {
    CAPTURE(sim::to_string(pin.order));
    const Tally tally = enumerate(run, pin.order, t, target_check(t));
    print("first save", "FullSync", pin.order, tally);
    require_old_or_new(run, tally, pin.order);
    require_pinned(run, tally, pin, protocol::save(Sync::full));
  }
}

TEST_CASE(
    "FullSync: a first save into missing directories makes the directories durable "
    "too",
    "[crash]") {
  // The writer creates each missing level and syncs the directory that
  // gained it; without that, a power loss after success could take the new
  // directory, and the file in it, away.
  struct Row {
    const char* path;
    protocol::Calls calls;
    Pinned prefix, subset;
  };
  const Row rows[] = {
      // open dir (ENOENT), then mkdir /d/new, look at its mode, open, fsync
      // and close /d (support/protocol.hpp's make_level), then the 14 calls
      // of a save: 21 points. One more distinct image: /d without /d/new
      // (before /d's fsync).
      {"/d/new/state.json",
       protocol::first_save(Sync::full, {{"/d/new", "/d"}}),
       {Order::prefix, 27, 4},
       {Order::subset, 27, 4}},
      // open dir (ENOENT), mkdir /d/a/b (ENOENT), make /d/a, make /d/a/b (5
      // calls each), then the save: 27 points (protocol.hpp's
      // first_save_two_levels). Two more distinct images: /d alone, and /d/a
      // without b.
      {"/d/a/b/state.json",
       protocol::first_save(Sync::full, {{"/d/a", "/d"}, {"/d/a/b", "/d/a"}}),
       {Order::prefix, 36, 5},
       {Order::subset, 36, 5}},
  };
  for (const Row& row : rows) {
    CAPTURE(row.path);
    const Target t{row.path, std::nullopt, kNew};
    const Run run = record_write<FullSync>(empty_directory(), t.path, t.now);
    for (const Pinned& pin : {row.prefix, row.subset}) {
      CAPTURE(sim::to_string(pin.order));
      const Tally tally = enumerate(run, pin.order, t, target_check(t));
      print(row.path, "FullSync", pin.order, tally);
      require_old_or_new(run, tally, pin.order);
      require_pinned(run, tally, pin, row.calls);
    }
  }
}

// ========================================================= DataSync ==

TEST_CASE(
    "DataSync: the bytes are always whole, but strictly by POSIX the new mode may "
    "stay the temp file's 0600",
    "[crash]") {
  // fdatasync need not write the mode (metadata not needed to read the data
  // back), and nothing else syncs the temp inode. Journaling filesystems
  // commit the inode whole, so on ext4 and xfs this does not happen; the
  // strict model keeps it, and the header documents it on DataSync. So only
  // the bytes are asserted here; the 0600 images are counted and pinned.
  const Target t{"/d/state.json", kOld, kNew};
  const Run run = record_write<DataSync>(existing_file(), t.path, t.now);
  struct Row {
    Pinned pin;
    std::size_t temp_mode;
  };
  // After the fdatasync the temp inode may keep 0600 or show 0644, seen
  // once it has a name: one more image before the rename, two more before
  // the close and the fsync of the directory (temp beside the old file, or
  // renamed), one more at each later point: 25 images, 5 distinct. The new
  // bytes under 0600 at the target: before the fsync of the directory and
  // the directory's close, and after the save returned, and beside them
  // before the close: 4.
  const Row rows[] = {{{Order::prefix, 25, 5}, 4}, {{Order::subset, 25, 5}, 4}};
  for (const Row& row : rows) {
    CAPTURE(sim::to_string(row.pin.order));
    const Tally tally = enumerate(run, row.pin.order, t, target_check(t));
    print("existing file", "DataSync", row.pin.order, tally);
    INFO(run.message);
    REQUIRE(run.ok);
    INFO("bad images:" << tally.first_violations());
    CHECK(tally.torn == 0);
    CHECK(tally.lost == 0);
    // Every image with a wrong mode is the new bytes under 0600, and there
    // are such images even after the save reported success.
    CHECK(tally.wrong_mode == tally.temp_mode);
    CHECK(tally.temp_mode == row.temp_mode);
    const Image kept_0600 = {{"/d", sim::directory_node()},
                             {t.path, sim::file_node(t.now.data, 0600)}};
    CHECK(sim::crash_images(run.points.back(), row.pin.order).count(kept_0600) == 1);
    require_pinned(run, tally, row.pin, protocol::save(Sync::data));
  }
}

// ================================================ the checker can fail ==

namespace {

struct BadRow {
  const char* scenario;
  Image before;
  Target target;
  protocol::Calls calls;
  Pinned pin;
  std::size_t torn, lost, wrong_mode;
};

protocol::Calls nested_save(Sync sync) {
  return protocol::first_save(sync, {{"/d/a", "/d"}, {"/d/a/b", "/d/a"}});
}

template <class Policy>
void require_caught(const char* policy, const BadRow& row) {
  CAPTURE(row.scenario, sim::to_string(row.pin.order));
  const Run run = record_write<Policy>(row.before, row.target.path, row.target.now);
  REQUIRE(run.ok);  // the save "succeeded": only a power loss shows the defect
  const Tally tally = enumerate(run, row.pin.order, row.target, target_check(row.target));
  print(row.scenario, policy, row.pin.order, tally);
  CHECK(tally.torn + tally.lost > 0);
  CHECK(tally.torn == row.torn);
  CHECK(tally.lost == row.lost);
  CHECK(tally.wrong_mode == row.wrong_mode);
  require_pinned(run, tally, row.pin, row.calls);
}

}  // namespace

TEST_CASE("NoSync: the simulator finds torn and lost files after a power loss", "[crash]") {
  // Nothing is synced: the rename can reach the disk before the bytes, and
  // after "success" the old file (or none) can come back.
  const Target over{"/d/state.json", kOld, kNew};
  const Target nested{"/d/a/b/state.json", std::nullopt, kNew};
  const BadRow rows[] = {
      // 10 calls, 11 points. After the rename (3 points) the target is any
      // of the temp's 8 versions: 6 torn ("", half, zeros, each under either
      // mode) and the new bytes under 0600. After "success" the old file,
      // alone or beside any of the temp's 8 versions, is a lost save: 9.
      {"existing file",
       existing_file(),
       over,
       protocol::save(Sync::none),
       {Order::prefix, 67, 17},
       18,
       9,
       3},
      {"existing file",
       existing_file(),
       over,
       protocol::save(Sync::none),
       {Order::subset, 67, 17},
       18,
       9,
       3},
      // No directory synced either: after "success", /d alone, /d/a alone,
      // or /d/a/b empty or with the temp's 8 versions: 11 lost.
      {"/d/a/b/state.json",
       empty_directory(),
       nested,
       nested_save(Sync::none),
       {Order::prefix, 99, 19},
       18,
       11,
       3},
      {"/d/a/b/state.json",
       empty_directory(),
       nested,
       nested_save(Sync::none),
       {Order::subset, 99, 19},
       18,
       11,
       3},
  };
  for (const BadRow& row : rows) require_caught<NoSync>("NoSync", row);
}

TEST_CASE(
    "FileSyncOnly: without the directory fsync the simulator finds saves lost after "
    "success",
    "[crash]") {
  // The bytes are synced before the rename, so nothing is torn; but neither
  // the rename nor a created directory is durable when write() returns.
  const Target over{"/d/state.json", kOld, kNew};
  const Target nested{"/d/a/b/state.json", std::nullopt, kNew};
  const BadRow rows[] = {
      // 11 calls, 12 points. After "success": the old file, alone or beside
      // the synced temp: 2 lost.
      {"existing file",
       existing_file(),
       over,
       protocol::save(Sync::file_only),
       {Order::prefix, 19, 3},
       0,
       2,
       0},
      {"existing file",
       existing_file(),
       over,
       protocol::save(Sync::file_only),
       {Order::subset, 19, 3},
       0,
       2,
       0},
      // After "success": /d alone, /d/a alone, /d/a/b empty or with the
      // temp: 4 lost.
      {"/d/a/b/state.json",
       empty_directory(),
       nested,
       nested_save(Sync::file_only),
       {Order::prefix, 53, 5},
       0,
       4,
       0},
      {"/d/a/b/state.json",
       empty_directory(),
       nested,
       nested_save(Sync::file_only),
       {Order::subset, 53, 5},
       0,
       4,
       0},
  };
  for (const BadRow& row : rows) require_caught<FileSyncOnly>("FileSyncOnly", row);
}

// ============================================= the model, by hand ==
// Small cases whose images can be counted on paper: they pin the model
// itself, so that a change to SimFs cannot quietly weaken the cases above.

namespace {

std::size_t images_now(const SimFs& fs, Order order, std::size_t* skipped = nullptr) {
  SimFs copy = fs;
  copy.capture("now");
  sim::ImageCount count;
  const std::size_t n = sim::crash_images(copy.crash_points().back(), order, &count).size();
  if (skipped) *skipped = count.skipped;
  return n;
}

}  // namespace

TEST_CASE(
    "the model: an unsynced file may be missing, durable, new, empty, half or "
    "zeros; fsync keeps its bytes and mode, fdatasync its bytes only",
    "[crash]") {
  SimFs fs = SimFs::from(empty_directory());
  const int dir = fs.open_directory("/d");
  const int fd = fs.create_file(dir, "f", 0600);
  REQUIRE(dir >= 0);
  REQUIRE(fd >= 0);
  REQUIRE(fs.write(fd, "abcd", 4) == 4);
  // no f; or f holding "" (durable, and empty), "abcd", "ab", four zeros
  CHECK(images_now(fs, Order::prefix) == 5);
  REQUIRE(fs.set_mode(fd, 0644) == 0);
  CHECK(images_now(fs, Order::prefix) == 1 + 4 * 2);  // each under 0600 or 0644
  REQUIRE(fs.sync_data(fd) == 0);
  CHECK(images_now(fs, Order::prefix) == 1 + 2);  // the bytes kept, the mode not
  REQUIRE(fs.sync_full(fd) == 0);
  CHECK(images_now(fs, Order::prefix) == 2);  // but the entry is still not durable
  REQUIRE(fs.sync_full(dir) == 0);
  CHECK(images_now(fs, Order::prefix) == 1);
  CHECK(fs.close(fd) == 0);
  CHECK(fs.close(dir) == 0);
}

TEST_CASE(
    "the model: a directory keeps a prefix or, in subset order, any subset of its "
    "changes since its fsync",
    "[crash]") {
  SimFs fs = SimFs::from(existing_file());
  const int dir = fs.open_directory("/d");
  REQUIRE(fs.close(fs.create_file(dir, "a", 0600)) == 0);
  REQUIRE(fs.close(fs.create_file(dir, "b", 0600)) == 0);
  CHECK(images_now(fs, Order::prefix) == 3);  // {}, {a}, {a, b}
  CHECK(images_now(fs, Order::subset) == 4);  // and {b}
  REQUIRE(fs.sync_full(dir) == 0);

  // create t, rename t over state.json: the rename without the create names
  // nothing and is skipped, so a subset adds no image here.
  REQUIRE(fs.close(fs.create_file(dir, "t", 0600)) == 0);
  REQUIRE(fs.rename(dir, "t", "state.json") == 0);
  std::size_t skipped = 0;
  CHECK(images_now(fs, Order::prefix, &skipped) == 3);  // old; old and t; t as state.json
  CHECK(skipped == 0);
  CHECK(images_now(fs, Order::subset, &skipped) == 3);
  CHECK(skipped == 1);
  CHECK(fs.close(dir) == 0);
}

TEST_CASE("the model: a new directory's entry is its parent's change, not its own", "[crash]") {
  SimFs fs = SimFs::from(empty_directory());
  REQUIRE(fs.make_directory("/d/x", 0755) == 0);
  const int x = fs.open_directory("/d/x");
  REQUIRE(fs.close(fs.create_file(x, "f", 0600)) == 0);
  REQUIRE(fs.sync_full(x) == 0);
  // f's entry is durable in x, but x itself may still vanish with /d's log.
  CHECK(images_now(fs, Order::prefix) == 2);
  const int d = fs.open_directory("/d");
  REQUIRE(fs.sync_full(d) == 0);
  CHECK(images_now(fs, Order::prefix) == 1);
  CHECK(fs.close(x) == 0);
  CHECK(fs.close(d) == 0);
}

TEST_CASE("the model: SimFs answers the writer's calls as POSIX would", "[crash]") {
  SimFs fs = SimFs::from(existing_file());
  const int dir = fs.open_directory("/d");
  REQUIRE(dir >= 0);
  REQUIRE(fs.close(fs.create_file(dir, "t", 0600)) == 0);
  const int root = fs.open_directory("/");
  const int file = fs.open_file(dir, "t");
  REQUIRE(root >= 0);
  REQUIRE(file >= 0);
  atomic_state::FileInfo info;
  // Each call is made as the table is built, top to bottom.
  struct Row {
    const char* call;
    int result, expected;
  };
  const Row rows[] = {
      {"open_directory of a missing path", fs.open_directory("/nope"), -ENOENT},
      {"open_directory of a file", fs.open_directory("/d/state.json"), -ENOTDIR},
      {"open_directory of a relative path", fs.open_directory("d"), -EINVAL},
      {"make_directory of an existing name", fs.make_directory("/d", 0755), -EEXIST},
      {"make_directory under a missing parent", fs.make_directory("/d/a/b", 0755), -ENOENT},
      {"create_file of an existing name", fs.create_file(dir, "state.json", 0600), -EEXIST},
      {"rename of a missing name", fs.rename(dir, "nope", "x"), -ENOENT},
      {"rename_noreplace onto an existing name", fs.rename_noreplace(dir, "t", "state.json"),
       -EEXIST},
      {"unlink of a missing name", fs.unlink(dir, "nope"), -ENOENT},
      {"file_info_at of a missing name", fs.file_info_at(dir, "nope", info), -ENOENT},
      {"close of a descriptor not open", fs.close(999), -EBADF},
      {"write to a read-only descriptor", static_cast<int>(fs.write(dir, "x", 1)), -EBADF},
      {"link of a missing name", fs.link(dir, "nope", "x"), -ENOENT},
      {"link onto an existing name", fs.link(dir, "t", "state.json"), -EEXIST},
      {"link of a directory", fs.link(root, "d", "x"), -EPERM},
      {"open_or_create of a directory", fs.open_or_create(root, "d", 0600), -EISDIR},
      {"check_writable of a file", fs.check_writable(file), -ENOTDIR},
      {"check_writable of a descriptor not open", fs.check_writable(999), -EBADF},
  };
  for (const Row& row : rows) {
    CAPTURE(row.call);
    CHECK(row.result == row.expected);
  }
  REQUIRE(fs.file_info_at(dir, "state.json", info) == 0);
  CHECK(info.type == atomic_state::FileType::regular);
  CHECK(info.size == kOld.data.size());
  const int fd = fs.open_file(dir, "state.json");
  char buffer[16] = {};
  CHECK(fs.read(fd, buffer, sizeof buffer) == 4);
  CHECK(fs.read(fd, buffer, sizeof buffer) == 0);
  CHECK(std::string(buffer) == kOld.data);
  CHECK(fs.close(fd) == 0);
  CHECK(fs.check_writable(dir) == 0);
  CHECK(fs.close(file) == 0);
  CHECK(fs.close(root) == 0);
  CHECK(fs.close(dir) == 0);
  CHECK(fs.open_descriptors() == 0);
}

TEST_CASE(
    "the model: a link is a second name for one file, kept by a power loss only once "
    "its directory is synced; both names show the same version of the file",
    "[crash]") {
  SimFs fs = SimFs::from(existing_file());
  const int dir = fs.open_directory("/d");
  REQUIRE(dir >= 0);
  REQUIRE(fs.link(dir, "state.json", "kept") == 0);
  atomic_state::FileInfo a, b;
  REQUIRE(fs.file_info_at(dir, "state.json", a) == 0);
  REQUIRE(fs.file_info_at(dir, "kept", b) == 0);
  CHECK(a.inode == b.inode);
  CHECK(a.links == 2);
  CHECK(images_now(fs, Order::prefix) == 2);  // without the link, with it
  // Renaming a name over another name of the same file does nothing, as
  // POSIX says: both names stay.
  REQUIRE(fs.rename(dir, "kept", "state.json") == 0);
  CHECK(fs.current().count("/d/kept") == 1);
  REQUIRE(fs.sync_full(dir) == 0);
  CHECK(images_now(fs, Order::prefix) == 1);

  // One inode, one choice: new bytes written through one name show under
  // both, never the old ones under one and the new under the other. The
  // file's 5 versions (old, new, empty, half, zeros), not 25.
  const int fd = fs.open_or_create(dir, "state.json", 0600);  // there: opened, not made
  REQUIRE(fd >= 0);
  REQUIRE(fs.write(fd, "NEW\n", 4) == 4);
  SimFs copy = fs;
  copy.capture("now");
  const std::set<Image> images = sim::crash_images(copy.crash_points().back(), Order::subset);
  CHECK(images.size() == 5);
  for (const Image& image : images) {
    CAPTURE(image.at("/d/state.json").data);
    CHECK(image.at("/d/state.json") == image.at("/d/kept"));
    CHECK(image.at("/d/state.json").linked_to == "/d/kept");
    CHECK(image.at("/d/state.json").mode == kOld.mode);  // open_or_create kept the mode
  }
  // What a power loss left is rebuilt with its links: one file, two names.
  SimFs rebuilt = SimFs::from(*images.begin());
  const int at = rebuilt.open_directory("/d");
  REQUIRE(rebuilt.file_info_at(at, "state.json", a) == 0);
  REQUIRE(rebuilt.file_info_at(at, "kept", b) == 0);
  CHECK(a.inode == b.inode);
  CHECK(a.links == 2);
  CHECK(rebuilt.current() == *images.begin());
  CHECK(rebuilt.close(at) == 0);
  CHECK(fs.close(fd) == 0);

  // A file open_or_create makes is a new entry, as create_file's.
  const int lock = fs.open_or_create(dir, "lock", 0600);
  REQUIRE(lock >= 0);
  REQUIRE(fs.sync_full(lock) == 0);
  CHECK(images_now(fs, Order::prefix) == 5 * 2);  // with the lock file or without
  CHECK(fs.close(lock) == 0);
  CHECK(fs.close(dir) == 0);
  CHECK(fs.open_descriptors() == 0);
}
