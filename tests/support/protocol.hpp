// The protocol of a save, as the calls it makes through the filesystem
// policy, described once: each kind of save is a list of calls, and each
// call says what its failure must produce. The trace tests compare a real
// save's calls with these lists, the fault tables fail each call in turn,
// and the crash tests count their crash points from them. Adding a system
// call to a save is one row here.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "atomic_state.hpp"
#include "fault_fs.hpp"

namespace test::protocol {

using atomic_state::Step;

/// One call of a successful save, and what its failure must produce.
struct Call {
  Op op;
  /// The step a failure of this call reports; Step::none when the save
  /// goes on without it (a lock a filesystem may not have, a descriptor
  /// closed after its work is done).
  Step fails_as;
  /// The path the Status names: $R the test directory, $D the target's
  /// directory, $T the temp file, $F the target, $L the run lock's file;
  /// "" when nothing fails.
  const char* names;
  /// The failure comes after the rename: the target is already replaced.
  bool replaced = false;
  /// For a call the save survives: a failure of every call of this op
  /// from here on fails this later one, at this step, naming this path.
  Step later_fails_as = Step::none;
  const char* later_names = "";
  bool later_replaced = false;
};

using Calls = std::vector<Call>;

/// The calls themselves, in order.
inline std::vector<Op> ops(const Calls& calls) {
  std::vector<Op> out;
  for (const Call& c : calls) out.push_back(c.op);
  return out;
}

/// Each call with its occurrence among the calls of its op (1-based), which
/// is how a Fault picks the call it fails.
inline std::vector<std::pair<Call, int>> numbered(const Calls& calls) {
  std::vector<std::pair<Call, int>> out;
  std::array<int, op_count> seen{};
  for (const Call& c : calls) out.emplace_back(c, ++seen[static_cast<std::size_t>(c.op)]);
  return out;
}

inline Calls operator+(Calls a, const Calls& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ------------------------------------------------------------- the pieces --

/// Open the target's directory, which exists.
inline Calls open_directory() { return {{Op::open_directory, Step::open_directory, "$D"}}; }

/// Look at the target: refuse a directory, FIFO, socket or device.
inline Calls check_target() { return {{Op::entry_info, Step::check_path, "$F"}}; }

/// Whether the test directories ($TMPDIR, or /tmp) make unnamed files, as
/// PosixFs::open_unnamed asks: then a save's temp file is unnamed, else
/// named and locked. Looked at once.
/// What unnamed_temp_files() says whatever the test directories make: -1
/// to look (the default), 0 or 1 (assume_unnamed_files).
inline int& assumed_unnamed_files() {
  static int assumed = -1;
  return assumed;
}
/// For SimFs, which makes unnamed files on every host: the crash tables
/// then describe what it does.
inline void assume_unnamed_files(bool unnamed) { assumed_unnamed_files() = unnamed ? 1 : 0; }

inline bool unnamed_temp_files() {
  if (assumed_unnamed_files() >= 0) return assumed_unnamed_files() == 1;
  static const bool here = [] {
#if defined(O_TMPFILE)
    const char* base = std::getenv("TMPDIR");
    const int fd = ::open(base != nullptr && *base != '\0' ? base : "/tmp",
                          O_WRONLY | O_TMPFILE | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    ::close(fd);
    return ::access("/proc/self/fd", X_OK) == 0;
#else
    return false;
#endif
  }();
  return here;
}

/// Create the temp file: unnamed, nothing to name, lock or check until the
/// commit; or, where the filesystem has no unnamed files (`named`), under a
/// name, claimed with a lock a sweep respects (a filesystem without locks
/// only costs that protection).
inline Calls create_temp_file(bool named = !unnamed_temp_files()) {
  if (!named) return {{Op::open_unnamed, Step::create_temp_file, "$D"}};
  return {{Op::create_file, Step::create_temp_file, "$T"},
          {Op::try_lock, Step::none, ""},
          {Op::file_info, Step::none, ""}};
}

/// How many of `n` temp files made and not yet committed a directory
/// listing shows: none where they are unnamed.
inline std::size_t listed_before_commit(std::size_t n) { return unnamed_temp_files() ? 0 : n; }

/// The unnamed temp file named, right before its rename: locked (a sweep
/// then leaves the name alone), linked under a fresh name.
inline Calls name_unnamed_file() {
  return {{Op::try_lock, Step::none, ""}, {Op::link_unnamed, Step::create_temp_file, "$D"}};
}

inline Calls write_data(int chunks = 1) {
  return Calls(static_cast<std::size_t>(chunks), Call{Op::write, Step::write_data, "$T"});
}

/// A temp descriptor's close: where a persistent close failure lands when an
/// earlier close was one the save survives: a named temp file's, before its
/// rename; an unnamed one's, after it, the target already replaced.
inline Call later_temp_close(Call call) {
  call.later_fails_as = Step::close_temp_file;
  call.later_names = unnamed_temp_files() ? "$F" : "$T";
  call.later_replaced = unnamed_temp_files();
  return call;
}

/// How far a save syncs: FullSync, DataSync, NoSync, or a policy that syncs
/// the file but never a directory.
enum class Sync { full, data, none, file_only };

inline bool syncs_directories(Sync sync) { return sync == Sync::full || sync == Sync::data; }

/// Mode, sync, then as `sync` says: an unnamed temp file named, renamed
/// and closed (its descriptor held the lock); a named one closed (checked:
/// some filesystems report write errors only there) while a second
/// descriptor keeps its lock, then renamed; then the directory synced.
inline Calls commit(Sync sync, bool named = !unnamed_temp_files()) {
  Calls calls = {{Op::set_mode, Step::set_permissions, "$T"}};
  if (sync == Sync::full || sync == Sync::file_only)
    calls.push_back({Op::sync_full, Step::sync_file, "$T"});
  if (sync == Sync::data) calls.push_back({Op::sync_data, Step::sync_file, "$T"});
  if (named) {
    calls.push_back({Op::duplicate, Step::none, ""});  // keeps the lock across the close
    calls.push_back({Op::close, Step::close_temp_file, "$T"});
    calls.push_back({Op::rename, Step::rename, "$T"});
  } else {
    calls = calls + name_unnamed_file();
    calls.push_back({Op::rename, Step::rename, "$T"});
    // the temp file, and its lock: checked, the target already replaced
    calls.push_back({Op::close, Step::close_temp_file, "$F", true});
  }
  if (syncs_directories(sync)) calls.push_back({Op::sync_full, Step::sync_directory, "$D", true});
  if (named) calls.push_back({Op::close, Step::none, ""});  // the lock's descriptor
  calls.push_back({Op::close, Step::none, ""});             // the directory
  return calls;
}

/// The rest of a save once the directory is open: look at the target,
/// create and claim the temp file, write `chunks` times, commit.
inline Calls save_into_open_directory(Sync sync, int chunks = 1) {
  return check_target() + create_temp_file() + write_data(chunks) + commit(sync);
}

/// A missing level of the target's directory: its path and its parent's,
/// as the Status names them ($R/a and $R).
struct Level {
  const char* path;
  const char* parent;
};

/// The end of creating one missing level: a look at its mode (the umask may
/// have taken owner write), and under a syncing policy the sync of the
/// parent that gained it.
inline Calls finish_level(const Level& level, Sync sync) {
  Calls calls = {{Op::entry_info, Step::create_directory, level.path}};
  if (syncs_directories(sync))
    calls = calls + Calls{{Op::open_directory, Step::sync_directory, level.parent},
                          {Op::sync_full, Step::sync_directory, level.parent},
                          later_temp_close({Op::close, Step::none, ""})};
  return calls;
}

// ------------------------------------------------------ the kinds of save --

/// A save over an existing file (or into an existing directory).
inline Calls save(Sync sync, int chunks = 1) {
  return open_directory() + save_into_open_directory(sync, chunks);
}
inline Calls overwrite_full_sync() { return save(Sync::full); }
inline Calls overwrite_data_sync() { return save(Sync::data); }
inline Calls overwrite_no_sync() { return save(Sync::none); }

/// begin(), `chunks` write() calls, commit(), under FullSync.
inline Calls streamed(int chunks) { return save(Sync::full, chunks); }

/// A first save into missing directories, `levels` from the top one down:
/// the directory does not open; mkdir walks up, failing (ENOENT) until a
/// level can be made; then each level below it is made in turn. `chunks`
/// is 0 for empty data: no write at all.
inline Calls first_save(Sync sync, const std::vector<Level>& levels, int chunks = 1) {
  Calls calls = {{Op::open_directory, Step::open_directory, "$D"}};
  for (std::size_t i = levels.size(); i-- > 1;)
    calls.push_back({Op::make_directory, Step::create_directory, levels[i].path});
  for (std::size_t i = 0; i < levels.size(); ++i) {
    calls.push_back({Op::make_directory, Step::create_directory, levels[i].path});
    calls = calls + finish_level(levels[i], sync);
  }
  return calls + open_directory() + save_into_open_directory(sync, chunks);
}

/// $R/a/b/f, under FullSync: the fault tables' first save.
inline Calls first_save_two_levels() {
  return first_save(Sync::full, {{"$R/a", "$R"}, {"$R/a/b", "$R/a"}});
}

/// The same save as AtomicWriter::write_new makes it: its rename never
/// replaces.
inline Calls never_replacing(Calls calls) {
  for (Call& c : calls)
    if (c.op == Op::rename) c.op = Op::rename_noreplace;
  return calls;
}

/// AtomicWriter::write_new of a file in an existing directory: a save
/// whose rename never replaces (the copy of a corrupt state file).
inline Calls write_new_full_sync() { return never_replacing(overwrite_full_sync()); }

// ----------------------------------------- a StateManager's keep_previous --

/// What a save with StateOptions::keep_previous finds to keep as
/// `<file>.prev` before it writes.
enum class Previous {
  no_directory,  ///< no state directory yet: the directory does not open
  nothing,       ///< no state file
  corrupt,       ///< the file a load found corrupt: read again, still not a state
  already_kept,  ///< the state file is already .prev's inode
  linked,        ///< the state file is linked as .prev
};

/// StateManager::keep_previous: open the directory; look at the state file
/// and, unless there is nothing to keep, at .prev; link the state file
/// under a temp name, rename the link over .prev, and (when the policy
/// syncs directories) sync the directory, so that the state file is never
/// replaced before its predecessor is durably kept; close.
inline Calls keep_previous(Sync sync, Previous found) {
  Calls calls = open_directory();
  if (found == Previous::no_directory) return calls;
  calls.push_back({Op::entry_info, Step::keep_previous, "$F"});
  if (found == Previous::corrupt) {                    // its bytes decide, not its inode number
    calls.push_back({Op::open_file, Step::none, ""});  // a failure to read: not kept
    calls.push_back({Op::file_info, Step::none, ""});
    calls.push_back({Op::read, Step::none, ""});
    calls.push_back({Op::read, Step::none, ""});
    calls.push_back({Op::close, Step::none, ""});
  }
  if (found != Previous::nothing && found != Previous::corrupt)
    calls.push_back({Op::entry_info, Step::none, ""});  // .prev: a failure to look links anew
  if (found == Previous::linked) {
    calls.push_back({Op::link, Step::keep_previous, "$F"});
    calls.push_back({Op::rename, Step::keep_previous, "$F"});
    if (syncs_directories(sync)) calls.push_back({Op::sync_full, Step::sync_directory, "$D"});
  }
  calls.push_back({Op::close, Step::none, ""});
  return calls;
}

/// StateManager::save_state with keep_previous over an existing state file
/// in an existing directory: the state file kept as .prev, then the save.
inline Calls keep_previous_then_save(Sync sync, Previous found = Previous::linked) {
  return keep_previous(sync, found) + save(sync);
}

// ------------------------------------------------- a StateManager's run lock --

/// StateManager::try_lock_run once the state directory is open: is it
/// writable, open (or create) the lock file, check it is a regular file
/// (and, as root, whose directory it is: a failure costs root only the
/// owner's lock file), lock it, write the holder's pid line (a failure
/// costs only the name in another run's message), close the directory. The
/// lock's descriptor stays open until the lock is released: one more close.
inline Calls take_run_lock() {
  Calls calls = {{Op::check_writable, Step::lock_run, "$D"},
                 {Op::open_or_create, Step::lock_run, "$L"},
                 {Op::file_info, Step::lock_run, "$L"}};
  if (::geteuid() == 0) calls.push_back({Op::file_info, Step::none, ""});
  return calls + Calls{{Op::try_lock, Step::lock_run, "$L"},
                       {Op::write, Step::none, ""},
                       {Op::close, Step::none, ""}};
}

/// StateManager::try_lock_run where the state directory is missing: it does
/// not open; each level of its path is looked at from the top down to the
/// first missing one (`looks` of them: a symlink to nothing there is an
/// error, not a first run); the directory is made as a first save makes
/// it, by write_new of the empty lock file (`levels`: no write); it is
/// opened, and the lock taken.
inline Calls lock_run_creating_directory(int looks, const std::vector<Level>& levels) {
  Calls calls = open_directory();
  for (int i = 0; i < looks; ++i) calls.push_back({Op::entry_info, Step::none, ""});
  return calls + never_replacing(first_save(Sync::full, levels, 0)) + open_directory() +
         take_run_lock();
}

/// A StateManager's first load where the directory holds no state file and
/// no temp file: open the directory; the sweep lists it; the state file
/// does not open, and a look tells a missing file from a symlink to
/// nothing; close.
inline Calls first_load_of_no_state(bool keeping_previous = false) {
  Calls calls = {{Op::open_directory, Step::open_directory, "$D"},
                 {Op::list_directory, Step::none, ""},
                 {Op::open_file, Step::open_file, "$F"},
                 {Op::entry_info, Step::none, ""}};
  // With keep_previous, a look for a previous state to warn of.
  if (keeping_previous) calls.push_back({Op::entry_info, Step::none, ""});
  calls.push_back({Op::close, Step::none, ""});
  return calls;
}

/// A StateManager's first load of a state file with one stale temp file
/// beside it: the directory opened once for the sweep and the read; the
/// sweep's look, open, check, lock, second look, unlink and close of the
/// temp file; the read; both descriptors closed.
inline Calls first_load_sweeping_one_stale_file() {
  return {{Op::open_directory, Step::open_directory, "$D"},
          {Op::list_directory, Step::none, ""},
          {Op::entry_info, Step::none, ""},
          {Op::open_file, Step::none, ""},
          {Op::file_info, Step::none, ""},
          {Op::try_lock, Step::none, ""},
          {Op::entry_info, Step::none, ""},
          {Op::unlink, Step::none, ""},
          {Op::close, Step::none, ""},
          {Op::open_file, Step::open_file, "$F"},
          {Op::file_info, Step::check_file, "$F"},
          {Op::read, Step::read_file, "$F"},
          {Op::read, Step::read_file, "$F"},
          {Op::close, Step::none, ""},
          {Op::close, Step::none, ""}};
}

// ------------------------------------------------------------- batches --
// A Batch adds files one at a time, each writing its temp file at once,
// then commits them together; an AtomicDirectory keeps its directory open
// and claimed. A batch's calls concern several files: each row says which
// one (its $D, $T and $F are that file's), and how many targets hold their
// new content when it fails (what Batch::replaced() must then say).

/// One call of a batch, the file (0-based, in the order added) it
/// concerns, and the targets replaced should it fail. In the rows of an
/// AtomicDirectory's own calls (open, close) `file` is the first file of
/// that directory; $C is the claim's name there.
struct BatchCall {
  Call call;
  int file;
  int renamed = 0;
};
using BatchCalls = std::vector<BatchCall>;

inline BatchCalls operator+(BatchCalls a, const BatchCalls& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

/// The rows as plain calls (for ops() and numbered()).
inline Calls calls_of(const BatchCalls& rows) {
  Calls out;
  for (const BatchCall& r : rows) out.push_back(r.call);
  return out;
}

inline BatchCalls for_file(const Calls& calls, int file, int renamed = 0) {
  BatchCalls out;
  for (const Call& c : calls) out.push_back({c, file, renamed});
  return out;
}

/// A batch learns each file's directory by identity (its device and inode,
/// through the descriptor), once the temp file exists and before a byte is
/// written: what tells it which directories to sync and which targets are
/// one. Its failure costs only a sync more.
inline Calls learn_directory() { return {{Op::file_info, Step::none, ""}}; }

/// Batch::add(path, data) of file `file` into an existing directory: the
/// directory opened, the target looked at, the temp file created, claimed,
/// the directory learnt, and the file written, as a save begins.
inline BatchCalls batch_add(int file) {
  return for_file(
      open_directory() + check_target() + create_temp_file() + learn_directory() + write_data(1),
      file);
}

/// Batch::add(directory, name, data) (`in_batch`), and the start of
/// AtomicDirectory's saves: the target looked at, the temp file
/// (".tmp-XXXXXX.N") created without a lock of its own (the claim protects
/// it), the directory learnt in a batch (`learns`: the first file through
/// that handle; later ones take it from that file), written.
inline BatchCalls directory_add(int file, bool learns = false) {
  return for_file(check_target() + Calls{{Op::create_file, Step::create_temp_file, "$T"}} +
                      (learns ? learn_directory() : Calls{}) + write_data(1),
                  file);
}

/// AtomicDirectory::open of an existing directory: opened, and claimed by
/// an empty locked temp file ($C), made as a save makes its temp file
/// (the name ".atomic-directory-claim" looked at as its target); then
/// listed for stale temp files (none here).
inline BatchCalls directory_open(int first_file) {
  return for_file(Calls{{Op::open_directory, Step::open_directory, "$D"},
                        {Op::entry_info, Step::check_path, "$D/.atomic-directory-claim"},
                        {Op::create_file, Step::create_temp_file, "$C"},
                        {Op::try_lock, Step::none, ""},
                        {Op::file_info, Step::none, ""},
                        {Op::list_directory, Step::none, ""}},
                  first_file);
}

/// ~AtomicDirectory: the claim's file removed before its lock's descriptor
/// is closed, then the directory closed. Nothing to report: a claim left
/// behind is a stale temp file, for the next sweep.
inline BatchCalls directory_close(int first_file) {
  return for_file(
      Calls{{Op::unlink, Step::none, ""}, {Op::close, Step::none, ""}, {Op::close, Step::none, ""}},
      first_file);
}

/// AtomicDirectory::write of file 0 into its open directory: no directory
/// open, lock or second descriptor; mode, sync, close, rename, directory
/// sync.
inline BatchCalls directory_write(Sync sync) {
  Calls calls = {{Op::set_mode, Step::set_permissions, "$T"}};
  if (sync == Sync::full || sync == Sync::file_only)
    calls.push_back({Op::sync_full, Step::sync_file, "$T"});
  if (sync == Sync::data) calls.push_back({Op::sync_data, Step::sync_file, "$T"});
  calls.push_back({Op::close, Step::close_temp_file, "$T"});
  calls.push_back({Op::rename, Step::rename, "$T"});
  BatchCalls out = directory_add(0) + for_file(calls, 0);
  if (syncs_directories(sync))
    out.push_back({{Op::sync_full, Step::sync_directory, "$D", true}, 0, 1});
  return out;
}

/// Batch::commit of files in the directories `dirs` (file i in directory
/// dirs[i]), added by path or (`handles`) through AtomicDirectory handles:
///   every temp file's mode set; writeback started for each (not under
///   NoSync: nothing to start); each synced; each closed (by path: a second
///   descriptor keeps its lock to the rename);
///   each file but the last renamed, in order;
///   each directory that gained one of them synced, once, in order of first
///   use: before the last rename, so the last file is never durable before
///   the files it follows;
///   the last file renamed, and its directory synced;
///   by path: each directory the batch has not swept yet listed for stale
///   temp files (none here), once, in order of first use;
///   by path: each file's lock and directory descriptors closed.
inline BatchCalls batch_commit(Sync sync, const std::vector<int>& dirs, bool handles = false) {
  const int n = static_cast<int>(dirs.size());
  const int last = n - 1;
  BatchCalls out;
  for (int i = 0; i < n; ++i) out.push_back({{Op::set_mode, Step::set_permissions, "$T"}, i});
  if (sync != Sync::none)
    for (int i = 0; i < n; ++i) out.push_back({{Op::start_writeback, Step::none, ""}, i});
  for (int i = 0; i < n; ++i) {
    if (sync == Sync::full || sync == Sync::file_only)
      out.push_back({{Op::sync_full, Step::sync_file, "$T"}, i});
    if (sync == Sync::data) out.push_back({{Op::sync_data, Step::sync_file, "$T"}, i});
  }
  // By path, each temp file is unnamed or named, as create_temp_file says;
  // through a handle, named under its claim.
  const bool unnamed = !handles && unnamed_temp_files();
  for (int i = 0; i < n; ++i) {
    if (unnamed) {
      for (const Call& c : name_unnamed_file()) out.push_back({c, i});
      continue;
    }
    if (!handles) out.push_back({{Op::duplicate, Step::none, ""}, i});
    out.push_back({{Op::close, Step::close_temp_file, "$T"}, i});
  }
  const auto rename = [&](int i, int renamed) {
    out.push_back({{Op::rename, Step::rename, "$T"}, i, renamed});
    if (unnamed)  // after its rename, checked
      out.push_back({{Op::close, Step::close_temp_file, "$F", true}, i, renamed + 1});
  };
  for (int i = 0; i < last; ++i) rename(i, i);
  if (syncs_directories(sync))
    for (int i = 0; i < last; ++i)
      if (std::find(dirs.begin(), dirs.begin() + i, dirs[static_cast<std::size_t>(i)]) ==
          dirs.begin() + i)
        out.push_back({{Op::sync_full, Step::sync_directory, "$D", true}, i, last});
  rename(last, last);
  if (syncs_directories(sync))
    out.push_back({{Op::sync_full, Step::sync_directory, "$D", true}, last, n});
  if (!handles)
    for (int i = 0; i < n; ++i)
      if (std::find(dirs.begin(), dirs.begin() + i, dirs[static_cast<std::size_t>(i)]) ==
          dirs.begin() + i)
        out.push_back({{Op::list_directory, Step::none, ""}, i, n});
  if (!handles)
    for (int i = 0; i < n; ++i) {
      if (!unnamed) out.push_back({{Op::close, Step::none, ""}, i, n});  // the lock's descriptor
      out.push_back({{Op::close, Step::none, ""}, i, n});                // the directory
    }
  return out;
}

/// The batch of the trace, fault and crash tests: three outputs in $R/a,
/// then the state in $R/b, each added by path, then committed.
inline BatchCalls batch_three_and_one(Sync sync) {
  const std::vector<int> dirs = {0, 0, 0, 1};
  BatchCalls out;
  for (int i = 0; i < 4; ++i) out = out + batch_add(i);
  return out + batch_commit(sync, dirs);
}

/// The same files through two AtomicDirectory handles ($R/a, then $R/b),
/// opened first and destroyed last (b's first).
inline BatchCalls batch_three_and_one_through_handles(Sync sync) {
  const std::vector<int> dirs = {0, 0, 0, 1};
  BatchCalls out = directory_open(0) + directory_open(3);
  for (int i = 0; i < 4; ++i) out = out + directory_add(i, i == 0 || i == 3);
  return out + batch_commit(sync, dirs, true) + directory_close(3) + directory_close(0);
}

}  // namespace test::protocol
