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

/// Mode, sync, close, rename, then the directory, under a sync policy:
/// file sync call (none for NoSync) and whether the directory is synced.
inline Calls commit(Op file_sync, bool sync_directory) {
  Calls calls = {{Op::set_mode, Step::set_permissions, "$T"}};
  if (file_sync != Op::close) calls.push_back({file_sync, Step::sync_file, "$T"});
  calls.push_back({Op::duplicate, Step::none, ""});  // keeps the lock across the close
  calls.push_back({Op::close, Step::close_temp_file, "$T"});
  calls.push_back({Op::rename, Step::rename, "$T"});
  if (sync_directory) calls.push_back({Op::sync_full, Step::sync_directory, "$D", true});
  calls.push_back({Op::close, Step::none, ""});  // the lock's descriptor
  calls.push_back({Op::close, Step::none, ""});  // the directory
  return calls;
}

/// Creating one missing level `level` ($R/a) of the target's directory: mkdir,
/// a look at its mode (the umask may have taken owner write), and under a
/// syncing policy the sync of the parent `parent` that gained it.
inline Calls make_level(const char* level, const char* parent, bool sync) {
  Calls calls = {{Op::make_directory, Step::create_directory, level},
                 {Op::entry_info, Step::create_directory, level}};
  if (sync)
    calls = calls + Calls{{Op::open_directory, Step::sync_directory, parent},
                          {Op::sync_full, Step::sync_directory, parent},
                          {Op::close, Step::none, "", false, Step::close_temp_file, kTempClose}};
  return calls;
}

// ------------------------------------------------------ the kinds of save --

/// A save over an existing file, under FullSync, DataSync and NoSync.
inline Calls overwrite_full_sync() {
  return open_directory() + check_target() + create_temp_file() + write_data() +
         commit(Op::sync_full, true);
}
inline Calls overwrite_data_sync() {
  return open_directory() + check_target() + create_temp_file() + write_data() +
         commit(Op::sync_data, true);
}
inline Calls overwrite_no_sync() {
  return open_directory() + check_target() + create_temp_file() + write_data() +
         commit(Op::close, false);
}

/// begin(), `chunks` write() calls, commit(), under FullSync.
inline Calls streamed(int chunks) {
  return open_directory() + check_target() + create_temp_file() + write_data(chunks) +
         commit(Op::sync_full, true);
}

/// AtomicWriter::write_new of a file in an existing directory: a save
/// whose rename never replaces (the copy of a corrupt state file).
inline Calls write_new_full_sync() {
  Calls calls = overwrite_full_sync();
  for (Call& c : calls)
    if (c.op == Op::rename) c.op = Op::rename_noreplace;
  return calls;
}

/// A first save into two missing levels, $R/a/b/f, under FullSync: the
/// directory is missing, so is its parent; $R/a is made, then $R/a/b.
inline Calls first_save_two_levels() {
  const Calls look = {{Op::open_directory, Step::open_directory, "$D"},
                      {Op::make_directory, Step::create_directory, "$R/a/b"}};
  return look + make_level("$R/a", "$R", true) + make_level("$R/a/b", "$R/a", true) +
         open_directory() + check_target() + create_temp_file() + write_data() +
         commit(Op::sync_full, true);
}

}  // namespace test::protocol
