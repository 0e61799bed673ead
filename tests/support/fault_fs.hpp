// A filesystem policy that makes the real calls through PosixFs, records
// every call, and fails or shortens the calls a test asks it to.
#pragma once

#include <algorithm>
#include <cerrno>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "atomic_state.hpp"

namespace test {

enum class Op {
  open_directory,
  make_directory,
  create_file,
  write,
  set_mode,
  sync_full,
  sync_data,
  close,
  rename,
  unlink,
  try_lock,
  duplicate,
  file_info,
  entry_info,
  open_file,
  read,
  file_info_at,
  rename_noreplace,
  list_directory,
  open_or_create,
  link,
  check_writable,
  start_writeback,
  make_directory_at,
  open_directory_at,
  remove_directory,
  make_symlink,
  read_link,
  open_unnamed,
  link_unnamed,
};
inline constexpr int op_count = 30;

inline std::string_view op_name(Op op) {
  switch (op) {
    case Op::open_directory:
      return "open_directory";
    case Op::make_directory:
      return "make_directory";
    case Op::create_file:
      return "create_file";
    case Op::write:
      return "write";
    case Op::set_mode:
      return "set_mode";
    case Op::sync_full:
      return "sync_full";
    case Op::sync_data:
      return "sync_data";
    case Op::close:
      return "close";
    case Op::rename:
      return "rename";
    case Op::unlink:
      return "unlink";
    case Op::try_lock:
      return "try_lock";
    case Op::duplicate:
      return "duplicate";
    case Op::open_file:
      return "open_file";
    case Op::file_info:
      return "file_info";
    case Op::file_info_at:
      return "file_info_at";
    case Op::read:
      return "read";
    case Op::rename_noreplace:
      return "rename_noreplace";
    case Op::list_directory:
      return "list_directory";
    case Op::entry_info:
      return "entry_info";
    case Op::open_or_create:
      return "open_or_create";
    case Op::link:
      return "link";
    case Op::check_writable:
      return "check_writable";
    case Op::start_writeback:
      return "start_writeback";
    case Op::make_directory_at:
      return "make_directory_at";
    case Op::open_directory_at:
      return "open_directory_at";
    case Op::remove_directory:
      return "remove_directory";
    case Op::make_symlink:
      return "make_symlink";
    case Op::read_link:
      return "read_link";
    case Op::open_unnamed:
      return "open_unnamed";
    case Op::link_unnamed:
      return "link_unnamed";
  }
  return "?";
}

/// What to do to the `occurrence`-th call (1-based) of `op`, and with
/// `persistent` to every later one too: fail it with `error`, or, when
/// `error` is 0, let a write or read through for at most `short_bytes` bytes.
struct Fault {
  Op op;
  int occurrence = 1;
  int error = 0;
  bool persistent = false;
  std::size_t short_bytes = 0;
};

/// One call as the writer made it.
struct Call {
  Op op;
  int fd;            // descriptor argument, or -1
  std::string name;  // path or name argument, or ""
  unsigned mode;     // mode argument, or 0
  long result;       // what the writer was told
};

class FaultFs {
 public:
  std::vector<Fault> faults;
  std::vector<Call> calls;
  /// Runs before each real call: lets a test act like a hostile neighbour.
  std::function<void(Op, int fd, const char* name)> before;

  int count(Op op) const {
    return static_cast<int>(
        std::count_if(calls.begin(), calls.end(), [op](const Call& c) { return c.op == op; }));
  }
  std::vector<Op> ops() const {
    std::vector<Op> out;
    for (const Call& c : calls) out.push_back(c.op);
    return out;
  }
  /// Descriptors opened through this policy and not yet closed.
  const std::set<int>& open_descriptors() const { return open_; }
  /// The name of the last temp file the writer created, or gave an
  /// unnamed one.
  std::string last_temp_name() const {
    for (auto it = calls.rbegin(); it != calls.rend(); ++it)
      if (it->op == Op::create_file || it->op == Op::link_unnamed) return it->name;
    return {};
  }

  int open_directory(const char* path) noexcept {
    const Fault* f = due(Op::open_directory, -1, path);
    const int r = f && f->error ? -f->error : real_.open_directory(path);
    if (r >= 0) open_.insert(r);
    return record(Op::open_directory, -1, path, 0, r);
  }
  int make_directory(const char* path, unsigned mode) noexcept {
    const Fault* f = due(Op::make_directory, -1, path);
    const int r = f && f->error ? -f->error : real_.make_directory(path, mode);
    return record(Op::make_directory, -1, path, mode, r);
  }
  int create_file(int dir_fd, const char* name, unsigned mode) noexcept {
    const Fault* f = due(Op::create_file, dir_fd, name);
    const int r = f && f->error ? -f->error : real_.create_file(dir_fd, name, mode);
    if (r >= 0) open_.insert(r);
    return record(Op::create_file, dir_fd, name, mode, r);
  }
  int open_unnamed(int dir_fd, unsigned mode) noexcept {
    const Fault* f = due(Op::open_unnamed, dir_fd, nullptr);
    const int r = f && f->error ? -f->error : real_.open_unnamed(dir_fd, mode);
    if (r >= 0) open_.insert(r);
    return record(Op::open_unnamed, dir_fd, nullptr, mode, r);
  }
  int link_unnamed(int fd, int dir_fd, const char* name) noexcept {
    const Fault* f = due(Op::link_unnamed, fd, name);
    const int r = f && f->error ? -f->error : real_.link_unnamed(fd, dir_fd, name);
    return record(Op::link_unnamed, fd, name, 0, r);
  }
  ssize_t write(int fd, const void* data, std::size_t size) noexcept {
    const Fault* f = due(Op::write, fd, nullptr);
    ssize_t r;
    if (f && f->error)
      r = -f->error;
    else if (f && f->short_bytes == 0)
      r = 0;
    else
      r = real_.write(fd, data, f ? std::min(size, f->short_bytes) : size);
    return record(Op::write, fd, nullptr, 0, r);
  }
  int set_mode(int fd, unsigned mode) noexcept {
    const Fault* f = due(Op::set_mode, fd, nullptr);
    const int r = f && f->error ? -f->error : real_.set_mode(fd, mode);
    return record(Op::set_mode, fd, nullptr, mode, r);
  }
  int sync_full(int fd) noexcept {
    const Fault* f = due(Op::sync_full, fd, nullptr);
    const int r = f && f->error ? -f->error : real_.sync_full(fd);
    return record(Op::sync_full, fd, nullptr, 0, r);
  }
  int sync_data(int fd) noexcept {
    const Fault* f = due(Op::sync_data, fd, nullptr);
    const int r = f && f->error ? -f->error : real_.sync_data(fd);
    return record(Op::sync_data, fd, nullptr, 0, r);
  }
  int close(int fd) noexcept {
    // Like Linux: the descriptor is released even when close reports an error.
    const Fault* f = due(Op::close, fd, nullptr);
    const int real = real_.close(fd);
    open_.erase(fd);
    return record(Op::close, fd, nullptr, 0, f && f->error ? -f->error : real);
  }
  int rename(int dir_fd, const char* from, const char* to) noexcept {
    const Fault* f = due(Op::rename, dir_fd, from);
    const int r = f && f->error ? -f->error : real_.rename(dir_fd, from, to);
    return record(Op::rename, dir_fd, from, 0, r);
  }
  int unlink(int dir_fd, const char* name) noexcept {
    const Fault* f = due(Op::unlink, dir_fd, name);
    const int r = f && f->error ? -f->error : real_.unlink(dir_fd, name);
    return record(Op::unlink, dir_fd, name, 0, r);
  }
  int try_lock(int fd) noexcept {
    const Fault* f = due(Op::try_lock, fd, nullptr);
    const int r = f && f->error ? -f->error : real_.try_lock(fd);
    return record(Op::try_lock, fd, nullptr, 0, r);
  }
  int duplicate(int fd) noexcept {
    const Fault* f = due(Op::duplicate, fd, nullptr);
    const int r = f && f->error ? -f->error : real_.duplicate(fd);
    if (r >= 0) open_.insert(r);
    return record(Op::duplicate, fd, nullptr, 0, r);
  }
  int open_file(int dir_fd, const char* name) noexcept {
    const Fault* f = due(Op::open_file, dir_fd, name);
    const int r = f && f->error ? -f->error : real_.open_file(dir_fd, name);
    if (r >= 0) open_.insert(r);
    return record(Op::open_file, dir_fd, name, 0, r);
  }
  int file_info(int fd, atomic_state::FileInfo& info) noexcept {
    const Fault* f = due(Op::file_info, fd, nullptr);
    const int r = f && f->error ? -f->error : real_.file_info(fd, info);
    return record(Op::file_info, fd, nullptr, 0, r);
  }
  int file_info_at(int dir_fd, const char* name, atomic_state::FileInfo& info) noexcept {
    const Fault* f = due(Op::file_info_at, dir_fd, name);
    const int r = f && f->error ? -f->error : real_.file_info_at(dir_fd, name, info);
    return record(Op::file_info_at, dir_fd, name, 0, r);
  }
  ssize_t read(int fd, void* data, std::size_t size) noexcept {
    const Fault* f = due(Op::read, fd, nullptr);
    ssize_t r;
    if (f && f->error)
      r = -f->error;
    else if (f && f->short_bytes == 0)
      r = 0;
    else
      r = real_.read(fd, data, f ? std::min(size, f->short_bytes) : size);
    return record(Op::read, fd, nullptr, 0, r);
  }
  int rename_noreplace(int dir_fd, const char* from, const char* to) noexcept {
    const Fault* f = due(Op::rename_noreplace, dir_fd, from);
    const int r = f && f->error ? -f->error : real_.rename_noreplace(dir_fd, from, to);
    return record(Op::rename_noreplace, dir_fd, to, 0, r);
  }
  int list_directory(int dir_fd, void (*on_entry)(void*, const char*) noexcept,
                     void* context) noexcept {
    const Fault* f = due(Op::list_directory, dir_fd, nullptr);
    const int r = f && f->error ? -f->error : real_.list_directory(dir_fd, on_entry, context);
    return record(Op::list_directory, dir_fd, nullptr, 0, r);
  }
  int entry_info(int dir_fd, const char* name, atomic_state::FileInfo& info) noexcept {
    const Fault* f = due(Op::entry_info, dir_fd, name);
    const int r = f && f->error ? -f->error : real_.entry_info(dir_fd, name, info);
    return record(Op::entry_info, dir_fd, name, 0, r);
  }
  int open_or_create(int dir_fd, const char* name, unsigned mode) noexcept {
    const Fault* f = due(Op::open_or_create, dir_fd, name);
    const int r = f && f->error ? -f->error : real_.open_or_create(dir_fd, name, mode);
    if (r >= 0) open_.insert(r);
    return record(Op::open_or_create, dir_fd, name, mode, r);
  }
  int link(int dir_fd, const char* from, const char* to) noexcept {
    const Fault* f = due(Op::link, dir_fd, from);
    const int r = f && f->error ? -f->error : real_.link(dir_fd, from, to);
    return record(Op::link, dir_fd, to, 0, r);
  }
  int check_writable(int dir_fd) noexcept {
    const Fault* f = due(Op::check_writable, dir_fd, nullptr);
    const int r = f && f->error ? -f->error : real_.check_writable(dir_fd);
    return record(Op::check_writable, dir_fd, nullptr, 0, r);
  }
  /// A batch's hint to start writing a file back (sync_file_range).
  int start_writeback(int fd) noexcept {
    const Fault* f = due(Op::start_writeback, fd, nullptr);
    const int r = f && f->error ? -f->error : real_.start_writeback(fd);
    return record(Op::start_writeback, fd, nullptr, 0, r);
  }

  // What a SnapshotWriter adds. A symlink's record names the link (its
  // target is in `link_targets`, in order).
  std::vector<std::string> link_targets;
  int make_directory_at(int dir_fd, const char* name, unsigned mode) noexcept {
    const Fault* f = due(Op::make_directory_at, dir_fd, name);
    const int r = f && f->error ? -f->error : real_.make_directory_at(dir_fd, name, mode);
    return record(Op::make_directory_at, dir_fd, name, mode, r);
  }
  int open_directory_at(int dir_fd, const char* name) noexcept {
    const Fault* f = due(Op::open_directory_at, dir_fd, name);
    const int r = f && f->error ? -f->error : real_.open_directory_at(dir_fd, name);
    if (r >= 0) open_.insert(r);
    return record(Op::open_directory_at, dir_fd, name, 0, r);
  }
  int remove_directory(int dir_fd, const char* name) noexcept {
    const Fault* f = due(Op::remove_directory, dir_fd, name);
    const int r = f && f->error ? -f->error : real_.remove_directory(dir_fd, name);
    return record(Op::remove_directory, dir_fd, name, 0, r);
  }
  int make_symlink(const char* target, int dir_fd, const char* name) noexcept {
    const Fault* f = due(Op::make_symlink, dir_fd, name);
    const int r = f && f->error ? -f->error : real_.make_symlink(target, dir_fd, name);
    link_targets.emplace_back(target);
    return record(Op::make_symlink, dir_fd, name, 0, r);
  }
  ssize_t read_link(int dir_fd, const char* name, char* buffer, std::size_t size) noexcept {
    const Fault* f = due(Op::read_link, dir_fd, name);
    const ssize_t r = f && f->error ? -f->error : real_.read_link(dir_fd, name, buffer, size);
    return record(Op::read_link, dir_fd, name, 0, r);
  }

 private:
  const Fault* due(Op op, int fd, const char* name) {
    if (before) before(op, fd, name);
    const int n = ++seen_[static_cast<int>(op)];
    for (const Fault& f : faults)
      if (f.op == op && (n == f.occurrence || (f.persistent && n > f.occurrence))) return &f;
    return nullptr;
  }
  template <class R>
  R record(Op op, int fd, const char* name, unsigned mode, R result) {
    calls.push_back(Call{op, fd, name ? name : "", mode, static_cast<long>(result)});
    return result;
  }

  atomic_state::PosixFs real_;
  int seen_[op_count] = {};
  std::set<int> open_;
};

/// The fault that makes a save use a named, locked temp file, as on a
/// filesystem without unnamed files (vfat, NFS): open_unnamed refused.
inline Fault no_unnamed_files() { return Fault{Op::open_unnamed, 1, EOPNOTSUPP, true}; }

/// PosixFs on a filesystem without unnamed files: every temp file named
/// and locked.
struct NamedTempFs : atomic_state::PosixFs {
  int open_unnamed(int, unsigned) noexcept { return -EOPNOTSUPP; }
};

static_assert(atomic_state::is_filesystem_v<FaultFs>);
static_assert(atomic_state::is_state_filesystem_v<FaultFs>);
static_assert(atomic_state::is_snapshot_filesystem_v<FaultFs>);

}  // namespace test
