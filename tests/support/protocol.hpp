// The protocol of a save, as the calls it makes through the filesystem
// policy, described once: each kind of save is a list of calls, and each
// call says what its failure must produce. The trace tests compare a real
// save's calls with these lists, the fault tables fail each call in turn,
// and the crash tests count their crash points from them. Adding a system
// call to a save is one row here.
#pragma once

#include <array>
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
  /// directory, $T the temp file, $F the target; "" when nothing fails.
  const char* names;
  /// The failure comes after the rename: the target is already replaced.
  bool replaced = false;
  /// For a call the save survives: a failure of every call of this op
  /// from here on fails this later one, at this step, naming this path.
  Step later_fails_as = Step::none;
  const char* later_names = "";
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

/// Create the temp file and claim it with a lock a sweep respects; a
/// filesystem without locks only costs that protection.
inline Calls create_temp_file() {
  return {{Op::create_file, Step::create_temp_file, "$T"},
          {Op::try_lock, Step::none, ""},
          {Op::file_info, Step::none, ""}};
}

inline Calls write_data(int chunks = 1) {
  return Calls(static_cast<std::size_t>(chunks), Call{Op::write, Step::write_data, "$T"});
}

/// A temp descriptor's close: where a persistent close failure lands when an
/// earlier close was one the save survives.
inline const char* const kTempClose = "$T";

/// How far a save syncs: FullSync, DataSync, NoSync, or a policy that syncs
/// the file but never a directory.
enum class Sync { full, data, none, file_only };

inline bool syncs_directories(Sync sync) { return sync == Sync::full || sync == Sync::data; }

/// Mode, sync, close, rename, then the directory, as `sync` says.
inline Calls commit(Sync sync) {
  Calls calls = {{Op::set_mode, Step::set_permissions, "$T"}};
  if (sync == Sync::full || sync == Sync::file_only)
    calls.push_back({Op::sync_full, Step::sync_file, "$T"});
  if (sync == Sync::data) calls.push_back({Op::sync_data, Step::sync_file, "$T"});
  calls.push_back({Op::duplicate, Step::none, ""});  // keeps the lock across the close
  calls.push_back({Op::close, Step::close_temp_file, "$T"});
  calls.push_back({Op::rename, Step::rename, "$T"});
  if (syncs_directories(sync)) calls.push_back({Op::sync_full, Step::sync_directory, "$D", true});
  calls.push_back({Op::close, Step::none, ""});  // the lock's descriptor
  calls.push_back({Op::close, Step::none, ""});  // the directory
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
                          {Op::close, Step::none, "", false, Step::close_temp_file, kTempClose}};
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
/// level can be made; then each level below it is made in turn.
inline Calls first_save(Sync sync, const std::vector<Level>& levels) {
  Calls calls = {{Op::open_directory, Step::open_directory, "$D"}};
  for (std::size_t i = levels.size(); i-- > 1;)
    calls.push_back({Op::make_directory, Step::create_directory, levels[i].path});
  for (std::size_t i = 0; i < levels.size(); ++i) {
    calls.push_back({Op::make_directory, Step::create_directory, levels[i].path});
    calls = calls + finish_level(levels[i], sync);
  }
  return calls + open_directory() + save_into_open_directory(sync);
}

/// $R/a/b/f, under FullSync: the fault tables' first save.
inline Calls first_save_two_levels() {
  return first_save(Sync::full, {{"$R/a", "$R"}, {"$R/a/b", "$R/a"}});
}

/// AtomicWriter::write_new of a file in an existing directory: a save
/// whose rename never replaces (the copy of a corrupt state file).
inline Calls write_new_full_sync() {
  Calls calls = overwrite_full_sync();
  for (Call& c : calls)
    if (c.op == Op::rename) c.op = Op::rename_noreplace;
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

}  // namespace test::protocol
