// The calls of a SnapshotWriter, described once, as support/protocol.hpp
// describes a save's: the trace test compares a real writer's calls with
// these lists, and the fault test fails each call in turn and expects what
// its row says. A new call in open(), add() or publish() is one row here.
//
// Paths in a row's `names`: $D the snapshot directory, $C the directory's
// claim (".tmp-XXXXXX", AtomicDirectory's), $K $D/.snapshot.lock, $B the
// generation being built ($D/.building-gen-3), $L the temp symlink
// $D/.current.tmp-XXXXXX, $O the old generation a publish prunes
// ($D/gen-1) and $X the name it is removed under ($D/.removing-gen-1), $S
// a killed publisher's half-built generation that open() removes
// ($D/.building-gen-3).
#pragma once

#include <vector>

#include "protocol.hpp"

namespace test::protocol {

/// SnapshotWriter::open of an existing snapshot directory: the directory
/// opened and claimed as an AtomicDirectory claims it, and swept of stale
/// temp files as it is (a killed publisher's claim; the writer's own is not
/// looked at; a failure open() survives); the lock file made or opened,
/// looked at and locked; the directory looked at (its device, which every
/// directory the writer empties must be on) and `current` read; the
/// directory listed for what a killed publisher left, then `stale_links`
/// temp symlinks removed and a half-built generation as $S: its removal
/// tried as it stands (an empty one goes, a mount point is refused with
/// EBUSY; any other failure is the next calls' to tell), then opened,
/// looked at (on the directory's device: not a filesystem mounted there),
/// listed, each of its `stale_generation_files` removed, removed, closed.
inline Calls snapshot_open(int stale_links = 0, int stale_generation_files = -1) {
  Calls calls = {{Op::open_directory, Step::open_directory, "$D"},
                 {Op::entry_info, Step::check_path, "$D/.atomic-directory-claim"},
                 {Op::create_file, Step::create_temp_file, "$C"},
                 // The claim's own lock: a filesystem without locks costs its
                 // protection only; but the next lock taken is the writer's.
                 {Op::try_lock, Step::none, "", false, Step::lock_run, "$K"},
                 {Op::file_info, Step::none, "", false, Step::lock_run, "$K"},
                 // The sweep's listing: a failure open() survives; but the
                 // next listing is the one open() needs.
                 {Op::list_directory, Step::none, "", false, Step::remove_temp_file, "$D"},
                 {Op::open_or_create, Step::lock_run, "$K"},
                 {Op::file_info, Step::lock_run, "$K"},  // a regular file, 0600
                 {Op::try_lock, Step::lock_run, "$K"},
                 {Op::file_info, Step::open_directory, "$D"},
                 {Op::read_link, Step::check_path, "$D/current"},
                 {Op::list_directory, Step::remove_temp_file, "$D"}};
  for (int i = 0; i < stale_links; ++i)
    calls.push_back({Op::unlink, Step::remove_temp_file, "$D/.current.tmp-AAAAAA"});
  if (stale_generation_files >= 0) {
    calls.push_back({Op::remove_directory, Step::none, "", false, Step::remove_temp_file, "$S"});
    calls.push_back({Op::open_directory_at, Step::remove_temp_file, "$S"});
    calls.push_back({Op::file_info, Step::remove_temp_file, "$S"});
    calls.push_back({Op::list_directory, Step::remove_temp_file, "$S"});
    for (int i = 0; i < stale_generation_files; ++i)
      calls.push_back({Op::unlink, Step::remove_temp_file, "$S"});
    calls.push_back({Op::remove_directory, Step::remove_temp_file, "$S"});
    calls.push_back({Op::close, Step::none, ""});
  }
  return calls;
}

/// The first SnapshotWriter::add of a generation: the directory listed for
/// the numbers taken, the generation made ($B), opened and given its exact
/// mode; then, as every add, the file created (0600, O_EXCL) in it and
/// written.
inline Calls snapshot_first_add(const char* file) {
  return {{Op::list_directory, Step::create_directory, "$D"},
          {Op::make_directory_at, Step::create_directory, "$B"},
          {Op::open_directory_at, Step::open_directory, "$B"},
          {Op::set_mode, Step::set_permissions, "$B"},
          {Op::create_file, Step::create_temp_file, file},
          {Op::write, Step::write_data, file}};
}
inline Calls snapshot_add(const char* file) {
  return {{Op::create_file, Step::create_temp_file, file}, {Op::write, Step::write_data, file}};
}

/// SnapshotWriter::publish of `files` (their paths, in the order added)
/// over a directory whose current generation has one older generation
/// before it, of `pruned_files` files, which a keep of 2 removes:
///   1. each file's mode set; writeback started for each (not under
///      NoSync: nothing to start); each synced; each closed;
///   2. the generation directory synced (as the policy syncs directories);
///   3. the generation renamed from $B to gen-3, never over a name;
///      the temp symlink made naming it, the directory synced;
///   4. the temp symlink renamed over current; the generation's descriptor
///      closed; the directory synced: from here the new set is published
///      (the rows say `replaced`), and a failure of this sync has
///      replaced() true;
///   5. the directory listed; the old generation opened, locked (a
///      SnapshotReader's lease would refuse), renamed $X, looked at (on the
///      directory's device), listed, emptied, removed and closed: a failure
///      here comes after the swap is durable, so its replaced() is false
///      (the fault test knows).
inline Calls snapshot_publish(Sync sync, const std::vector<const char*>& files,
                              int pruned_files = 1) {
  Calls calls;
  for (const char* f : files) calls.push_back({Op::set_mode, Step::set_permissions, f});
  if (sync != Sync::none)
    for (std::size_t i = 0; i < files.size(); ++i)
      calls.push_back({Op::start_writeback, Step::none, ""});
  for (const char* f : files) {
    if (sync == Sync::full || sync == Sync::file_only)
      calls.push_back({Op::sync_full, Step::sync_file, f});
    if (sync == Sync::data) calls.push_back({Op::sync_data, Step::sync_file, f});
  }
  for (const char* f : files) calls.push_back({Op::close, Step::close_temp_file, f});
  const bool dirs = syncs_directories(sync);
  if (dirs) calls.push_back({Op::sync_full, Step::sync_directory, "$B"});
  calls.push_back({Op::rename_noreplace, Step::rename, "$B"});
  calls.push_back({Op::make_symlink, Step::create_temp_file, "$L"});
  if (dirs) calls.push_back({Op::sync_full, Step::sync_directory, "$D"});
  calls.push_back({Op::rename, Step::rename, "$L"});
  // The generation's descriptor, its work done: a close the publish survives.
  calls.push_back({Op::close, Step::none, ""});
  if (dirs) calls.push_back({Op::sync_full, Step::sync_directory, "$D", true});
  calls.push_back({Op::list_directory, Step::remove_temp_file, "$D", true});
  calls.push_back({Op::open_directory_at, Step::remove_temp_file, "$O", true});
  // A lock that cannot be taken for a reason other than a reader's lease:
  // no reader can hold one there either.
  calls.push_back({Op::try_lock, Step::none, ""});
  calls.push_back({Op::rename, Step::remove_temp_file, "$O", true});
  calls.push_back({Op::file_info, Step::remove_temp_file, "$X", true});
  calls.push_back({Op::list_directory, Step::remove_temp_file, "$X", true});
  for (int i = 0; i < pruned_files; ++i)
    calls.push_back({Op::unlink, Step::remove_temp_file, "$X", true});
  calls.push_back({Op::remove_directory, Step::remove_temp_file, "$X", true});
  calls.push_back({Op::close, Step::none, ""});
  return calls;
}

/// ~SnapshotWriter with nothing unpublished: the lock's descriptor closed,
/// then the AtomicDirectory's claim removed and closed, the directory
/// closed. Nothing to report.
inline Calls snapshot_close() {
  return {{Op::close, Step::none, ""},
          {Op::unlink, Step::none, ""},
          {Op::close, Step::none, ""},
          {Op::close, Step::none, ""}};
}

/// The fault and trace tests' publish: open a directory holding gen-1 (one
/// file) and gen-2 (current), add $G/a and $G/b, publish (gen-1 pruned),
/// destroy the writer.
inline Calls snapshot_two_files(Sync sync) {
  return snapshot_open() + snapshot_first_add("$B/a") + snapshot_add("$B/b") +
         snapshot_publish(sync, {"$B/a", "$B/b"}) + snapshot_close();
}

/// The fault and trace tests' open over a killed publisher's leftovers:
/// one temp symlink and a half-built .building-gen-3 holding one file, both
/// removed;
/// then the writer destroyed.
inline Calls snapshot_open_sweeping() { return snapshot_open(1, 1) + snapshot_close(); }

}  // namespace test::protocol
