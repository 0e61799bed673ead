// SimFs: a deterministic, in-memory filesystem policy that remembers what a
// power loss could undo, and the crash images it could leave.
//
// THE MODEL (pessimistic POSIX, the one ALICE, RocksDB's FaultInjectionTestFS
// and SQLite's crash VFS share)
//   - A file inode has a current (data, mode), what the process sees, and a
//     durable (data, mode), what is on the disk. sync_full makes both durable;
//     sync_data makes the data (and so the size) durable but NOT the mode:
//     strictly by POSIX, fdatasync need not flush metadata that reading the
//     data back does not need, and the mode is such metadata.
//   - A directory inode has current entries, durable entries, and the log of
//     the entry changes since its last fsync: create, mkdir (the entry lives
//     in the parent, so it is the parent's log), rename, rename_noreplace,
//     unlink. sync_full (or sync_data) of a directory makes its whole log
//     durable, and nothing else: not the directory's own entry in its parent,
//     not its files' data. A file's fsync never makes its entry durable.
//   - After a power loss, each directory holds its durable entries plus
//     either any PREFIX of its log (Order::prefix: ext4/xfs-like journals) or
//     any SUBSET of it, kept in order (Order::subset: ALICE's default,
//     ext2/btrfs-like). A subset may hold an operation that no longer makes
//     sense (renaming a name that is not there); it is skipped. Each
//     directory's log is chosen independently: nothing orders the logs of two
//     directories but an fsync.
//   - Each file reachable in that namespace whose data was changed since its
//     last sync shows its durable bytes, its current bytes, the empty file,
//     the first half of its current bytes, or as many zero bytes as it now
//     holds; its mode, if changed since its last sync, is the durable or the
//     current one. Each choice is independent of every other file's; a
//     file with several names (link) shows one version under all of them.
//
// A test records a run (every call is a crash point: the whole state is
// captured before it), then asks crash_images() for every image a point
// allows, and checks each. SimFs::from(image) builds a fresh filesystem
// holding an image, so the program's own reading code can run on what a
// crash left; an image says which names are one file (Node::linked_to), so
// that the rebuilt filesystem has the same links.
//
// Every call returns >= 0 or -errno and is noexcept, as PosixFs. Paths are
// absolute, without "." or ".." components; symlinks are made and read
// (make_symlink, read_link) but never followed; there is no
// umask and one device. Running out of memory inside a call terminates the
// test program, which is what a test wants.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "atomic_state.hpp"

namespace sim {

using Ino = std::size_t;  // an index into the inode table
inline constexpr Ino kRoot = 1;

/// One change to a directory's entries, kept in the directory's log until
/// the directory is synced.
struct DirOp {
  enum Kind : unsigned char { link, rename, rename_noreplace, unlink };
  Kind kind;
  std::string name;  ///< link and unlink: the entry; renames: the source
  std::string to;    ///< renames: the destination
  Ino inode;         ///< the inode the entry named when the call was made
};

struct Inode {
  bool directory = false;
  unsigned mode = 0, durable_mode = 0;
  // A file's bytes.
  std::string data, durable_data;
  // A directory's entries, and the changes not yet durable.
  std::map<std::string, Ino> entries, durable_entries;
  std::vector<DirOp> pending;
  // An unnamed file (open_unnamed) not named yet: link_unnamed may name it.
  bool linkable = false;

  bool unsynced() const {
    return directory ? !pending.empty() : data != durable_data || mode != durable_mode;
  }
  /// A symlink: a file inode whose mode holds S_IFLNK and whose data is its
  /// target (see SimFs::make_symlink).
  bool symlink() const { return !directory && (mode & S_IFMT) == S_IFLNK; }
};

/// One file or directory of a crash image.
struct Node {
  bool directory = false;
  std::string data;
  unsigned mode = 0;
  /// A file with several names in the image (hard links): the first of
  /// them in path order, the same for each; empty for a file of one name.
  std::string linked_to;

  /// The same bytes and mode, whatever other names the file has.
  bool same_content(const Node& other) const {
    return directory == other.directory && data == other.data && mode == other.mode;
  }

  friend bool operator<(const Node& a, const Node& b) {
    return std::tie(a.directory, a.data, a.mode, a.linked_to) <
           std::tie(b.directory, b.data, b.mode, b.linked_to);
  }
  friend bool operator==(const Node& a, const Node& b) {
    return a.same_content(b) && a.linked_to == b.linked_to;
  }
};

/// What the disk holds after a crash: every reachable path ("/d/state.json")
/// and what is there. The root is implicit. Ordered, so that images compare
/// and deduplicate.
using Image = std::map<std::string, Node>;

/// Marks the names of each file reachable under several (`reachable`: each
/// path and its inode, as in `image`) with the first of them.
template <class Ino>
void mark_links(const std::vector<std::pair<std::string, Ino>>& reachable, Image& image) {
  std::map<Ino, std::vector<std::string>> names;
  for (const auto& [path, ino] : reachable)
    if (!image.at(path).directory) names[ino].push_back(path);
  for (auto& [ino, paths] : names) {
    if (paths.size() < 2) continue;
    const std::string first = *std::min_element(paths.begin(), paths.end());
    for (const std::string& path : paths) image.at(path).linked_to = first;
  }
}

/// The mode of a symlink's inode and of its node in an image.
inline constexpr unsigned kSymlinkMode = S_IFLNK | 0777;

inline Node directory_node(unsigned mode = 0755) { return Node{true, {}, mode, {}}; }
/// A symlink in an image: its target as data.
inline Node symlink_node(std::string target) {
  return Node{false, std::move(target), kSymlinkMode, {}};
}
inline Node file_node(std::string data, unsigned mode) {
  return Node{false, std::move(data), mode, {}};
}

/// The whole simulated state just before a call (or after the run).
struct CrashPoint {
  std::string before;  ///< the call about to be made, e.g. "rename"
  std::vector<Inode> inodes;
};

enum class Order { prefix, subset };

inline const char* to_string(Order order) { return order == Order::prefix ? "prefix" : "subset"; }

class SimFs {
 public:
  /// An empty root directory, everything durable.
  SimFs() : inodes_(kRoot + 1) { inodes_[kRoot] = make_directory_inode(0755); }

  /// A filesystem holding exactly `image`, all of it durable, as after a
  /// reboot; the names of one file (Node::linked_to) lead to one inode.
  /// Parents sort before their children, so one pass suffices.
  static SimFs from(const Image& image) {
    SimFs fs;
    std::map<std::string, Ino> linked;  // a linked file's first name, and its inode
    for (const auto& [path, node] : image) {
      Ino parent = 0;
      std::string name;
      if (fs.resolve_parent(path.c_str(), parent, name) < 0 || name.empty()) continue;
      Ino ino = 0;
      if (!node.linked_to.empty() && linked.count(node.linked_to)) {
        ino = linked[node.linked_to];
      } else {
        Inode inode = node.directory ? make_directory_inode(node.mode) : Inode{};
        if (!node.directory) {
          inode.mode = inode.durable_mode = node.mode;
          inode.data = inode.durable_data = node.data;
        }
        ino = fs.add(std::move(inode));
        if (!node.linked_to.empty()) linked[node.linked_to] = ino;
      }
      fs.inodes_[parent].entries[name] = ino;
      fs.inodes_[parent].durable_entries[name] = ino;
    }
    return fs;
  }

  // ----------------------------------------------------- the PosixFs calls --

  int open_directory(const char* path) noexcept {
    enter("open_directory");
    Ino ino = 0;
    if (const int r = resolve(path, ino); r < 0) return r;
    if (!inodes_[ino].directory) return -ENOTDIR;
    return open_fd(ino, false);
  }

  int make_directory(const char* path, unsigned mode) noexcept {
    enter("make_directory");
    Ino parent = 0;
    std::string name;
    if (const int r = resolve_parent(path, parent, name); r < 0) return r;
    if (name.empty() || inodes_[parent].entries.count(name)) return -EEXIST;
    const Ino ino = add(make_directory_inode(mode & 07777));
    add_entry(parent, name, ino);
    return 0;
  }

  int create_file(int dir_fd, const char* name, unsigned mode) noexcept {
    enter("create_file");
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, name, dir); r < 0) return r;
    if (inodes_[dir].entries.count(name)) return -EEXIST;
    Inode file;
    file.mode = file.durable_mode = mode & 07777;  // a new inode: empty, this mode
    const Ino ino = add(std::move(file));
    add_entry(dir, name, ino);
    return open_fd(ino, true);
  }

  /// A file without a name in the directory (O_TMPFILE): in no image
  /// until link_unnamed names it, gone with its descriptor.
  int open_unnamed(int dir_fd, unsigned mode) noexcept {
    enter("open_unnamed");
    Descriptor* d = descriptor(dir_fd);
    if (d == nullptr) return -EBADF;
    if (!inodes_[d->ino].directory) return -ENOTDIR;
    Inode file;
    file.mode = file.durable_mode = mode & 07777;
    file.linkable = true;
    return open_fd(add(std::move(file)), true);
  }

  /// Names the unnamed file `fd`, logged like a creation. Only once, as
  /// Linux: a file named and unlinked again cannot be named anew.
  int link_unnamed(int fd, int dir_fd, const char* name) noexcept {
    enter("link_unnamed");
    Descriptor* file = descriptor(fd);
    if (file == nullptr) return -EBADF;
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, name, dir); r < 0) return r;
    if (!valid_name(name)) return -EINVAL;
    if (inodes_[dir].entries.count(name)) return -EEXIST;
    Inode& inode = inodes_[file->ino];
    if (!inode.linkable) return -ENOENT;
    inode.linkable = false;
    add_entry(dir, name, file->ino);
    return 0;
  }

  ssize_t write(int fd, const void* data, std::size_t size) noexcept {
    enter("write");
    Descriptor* d = descriptor(fd);
    if (d == nullptr || !d->writable) return -EBADF;
    std::string& bytes = inodes_[d->ino].data;
    if (bytes.size() < d->offset + size) bytes.resize(d->offset + size);
    if (size > 0) std::memcpy(&bytes[d->offset], data, size);
    d->offset += size;
    return static_cast<ssize_t>(size);
  }

  int set_mode(int fd, unsigned mode) noexcept {
    enter("set_mode");
    Descriptor* d = descriptor(fd);
    if (d == nullptr) return -EBADF;
    inodes_[d->ino].mode = mode & 07777;
    return 0;
  }

  int sync_full(int fd) noexcept {
    enter("sync_full");
    Descriptor* d = descriptor(fd);
    if (d == nullptr) return -EBADF;
    Inode& inode = inodes_[d->ino];
    inode.durable_mode = inode.mode;
    if (inode.directory)
      make_entries_durable(inode);
    else
      inode.durable_data = inode.data;
    return 0;
  }

  /// The data only, not the mode. A directory is synced whole, as fsync.
  int sync_data(int fd) noexcept {
    enter("sync_data");
    Descriptor* d = descriptor(fd);
    if (d == nullptr) return -EBADF;
    Inode& inode = inodes_[d->ino];
    if (inode.directory)
      make_entries_durable(inode);
    else
      inode.durable_data = inode.data;
    return 0;
  }

  int close(int fd) noexcept {
    enter("close");
    return fds_.erase(fd) == 1 ? 0 : -EBADF;
  }

  int rename(int dir_fd, const char* from, const char* to) noexcept {
    enter("rename");
    return rename_in(dir_fd, from, to, DirOp::rename);
  }

  int unlink(int dir_fd, const char* name) noexcept {
    enter("unlink");
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, name, dir); r < 0) return r;
    Inode& d = inodes_[dir];
    const auto it = d.entries.find(name);
    if (it == d.entries.end()) return -ENOENT;
    if (inodes_[it->second].directory) return -EISDIR;
    d.pending.push_back(DirOp{DirOp::unlink, name, {}, it->second});
    d.entries.erase(it);
    return 0;
  }

  /// Locks always succeed: the simulation runs one save at a time.
  int try_lock(int fd) noexcept {
    enter("try_lock");
    return descriptor(fd) == nullptr ? -EBADF : 0;
  }

  int duplicate(int fd) noexcept {
    enter("duplicate");
    Descriptor* d = descriptor(fd);
    if (d == nullptr) return -EBADF;
    const Descriptor copy = *d;
    const int second = next_fd_++;
    fds_[second] = copy;
    return second;
  }

  int open_file(int dir_fd, const char* name) noexcept {
    enter("open_file");
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, name, dir); r < 0) return r;
    const auto it = inodes_[dir].entries.find(name);
    if (it == inodes_[dir].entries.end()) return -ENOENT;
    return open_fd(it->second, false);
  }

  int file_info(int fd, atomic_state::FileInfo& info) noexcept {
    enter("file_info");
    Descriptor* d = descriptor(fd);
    if (d == nullptr) return -EBADF;
    info = info_of(d->ino);
    return 0;
  }

  int file_info_at(int dir_fd, const char* name, atomic_state::FileInfo& info) noexcept {
    enter("file_info_at");
    return stat_entry(dir_fd, name, info);
  }

  ssize_t read(int fd, void* data, std::size_t size) noexcept {
    enter("read");
    Descriptor* d = descriptor(fd);
    if (d == nullptr) return -EBADF;
    const Inode& inode = inodes_[d->ino];
    if (inode.directory) return -EISDIR;
    const std::size_t left = d->offset < inode.data.size() ? inode.data.size() - d->offset : 0;
    const std::size_t n = size < left ? size : left;
    if (n > 0) std::memcpy(data, inode.data.data() + d->offset, n);
    d->offset += n;
    return static_cast<ssize_t>(n);
  }

  int rename_noreplace(int dir_fd, const char* from, const char* to) noexcept {
    enter("rename_noreplace");
    return rename_in(dir_fd, from, to, DirOp::rename_noreplace);
  }

  /// In name order.
  int list_directory(int dir_fd, void (*on_entry)(void* context, const char* name) noexcept,
                     void* context) noexcept {
    enter("list_directory");
    Descriptor* d = descriptor(dir_fd);
    if (d == nullptr) return -EBADF;
    if (!inodes_[d->ino].directory) return -ENOTDIR;
    std::vector<std::string> names;  // a copy: the caller may change the directory
    for (const auto& entry : inodes_[d->ino].entries) names.push_back(entry.first);
    for (const std::string& name : names) on_entry(context, name.c_str());
    return 0;
  }

  int entry_info(int dir_fd, const char* name, atomic_state::FileInfo& info) noexcept {
    enter("entry_info");
    return stat_entry(dir_fd, name, info);
  }

  int open_or_create(int dir_fd, const char* name, unsigned mode) noexcept {
    enter("open_or_create");
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, name, dir); r < 0) return r;
    const auto it = inodes_[dir].entries.find(name);
    if (it != inodes_[dir].entries.end())
      return inodes_[it->second].directory ? -EISDIR : open_fd(it->second, true);
    Inode file;
    file.mode = file.durable_mode = mode & 07777;
    const Ino ino = add(std::move(file));
    add_entry(dir, name, ino);
    return open_fd(ino, true);
  }

  /// A second name for a file, logged like a creation: a crash keeps it
  /// only once its directory is synced.
  int link(int dir_fd, const char* from, const char* to) noexcept {
    enter("link");
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, from, dir); r < 0) return r;
    if (!valid_name(to)) return -EINVAL;
    Inode& d = inodes_[dir];
    const auto source = d.entries.find(from);
    if (source == d.entries.end()) return -ENOENT;
    if (inodes_[source->second].directory) return -EPERM;
    if (d.entries.count(to)) return -EEXIST;
    add_entry(dir, to, source->second);
    return 0;
  }

  /// Every directory is writable in the simulation.
  int check_writable(int dir_fd) noexcept {
    enter("check_writable");
    Descriptor* d = descriptor(dir_fd);
    if (d == nullptr) return -EBADF;
    return inodes_[d->ino].directory ? 0 : -ENOTDIR;
  }

  /// A batch's hint to start writeback: changes nothing durable (only a
  /// sync does), but is a crash point like any call.
  int start_writeback(int fd) noexcept {
    enter("start_writeback");
    return descriptor(fd) == nullptr ? -EBADF : 0;
  }

  // ---------------------------------------------- what a snapshot adds --
  // A directory made inside a directory is logged in its parent like a
  // created file. A symlink is an inode of mode S_IFLNK | 0777 (kSymlinkMode)
  // whose data is its target, durable from its creation: the model takes a
  // symlink's creation for one namespace operation, as ALICE does (a
  // symlink cannot be synced by itself; its entry's directory sync makes it
  // durable whole). In a crash image a symlink is a file node of that mode
  // and its target as data, so that SimFs::from rebuilds it. Renaming a
  // symlink over another replaces it in one logged operation: a crash keeps
  // the old link or the new one.

  int make_directory_at(int dir_fd, const char* name, unsigned mode) noexcept {
    enter("make_directory_at");
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, name, dir); r < 0) return r;
    if (inodes_[dir].entries.count(name)) return -EEXIST;
    add_entry(dir, name, add(make_directory_inode(mode & 07777)));
    return 0;
  }

  /// O_NOFOLLOW | O_DIRECTORY: a symlink is ELOOP, a file ENOTDIR.
  int open_directory_at(int dir_fd, const char* name) noexcept {
    enter("open_directory_at");
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, name, dir); r < 0) return r;
    const auto it = inodes_[dir].entries.find(name);
    if (it == inodes_[dir].entries.end()) return -ENOENT;
    if (inodes_[it->second].symlink()) return -ELOOP;
    if (!inodes_[it->second].directory) return -ENOTDIR;
    return open_fd(it->second, false);
  }

  int remove_directory(int dir_fd, const char* name) noexcept {
    enter("remove_directory");
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, name, dir); r < 0) return r;
    Inode& d = inodes_[dir];
    const auto it = d.entries.find(name);
    if (it == d.entries.end()) return -ENOENT;
    if (!inodes_[it->second].directory) return -ENOTDIR;
    if (!inodes_[it->second].entries.empty()) return -ENOTEMPTY;
    d.pending.push_back(DirOp{DirOp::unlink, name, {}, it->second});
    d.entries.erase(it);
    return 0;
  }

  int make_symlink(const char* target, int dir_fd, const char* name) noexcept {
    enter("make_symlink");
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, name, dir); r < 0) return r;
    if (target == nullptr || target[0] == '\0') return -ENOENT;
    if (inodes_[dir].entries.count(name)) return -EEXIST;
    Inode link;
    link.mode = link.durable_mode = kSymlinkMode;
    link.data = link.durable_data = target;
    add_entry(dir, name, add(std::move(link)));
    return 0;
  }

  ssize_t read_link(int dir_fd, const char* name, char* buffer, std::size_t size) noexcept {
    enter("read_link");
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, name, dir); r < 0) return r;
    const auto it = inodes_[dir].entries.find(name);
    if (it == inodes_[dir].entries.end()) return -ENOENT;
    const Inode& link = inodes_[it->second];
    if (!link.symlink()) return -EINVAL;
    if (link.data.size() >= size) return -ENAMETOOLONG;
    std::memcpy(buffer, link.data.data(), link.data.size());
    return static_cast<ssize_t>(link.data.size());
  }

  // ------------------------------------------------------------ for tests --

  /// From now on, capture the whole state before every call.
  void start_recording() {
    recording_ = true;
    points_.clear();
  }
  /// Captures a crash point now, e.g. after the operation under test returned.
  void capture(std::string label) { points_.push_back(CrashPoint{std::move(label), inodes_}); }
  const std::vector<CrashPoint>& crash_points() const { return points_; }

  /// What the process sees now, as an image.
  Image current() const {
    Image out;
    std::vector<std::pair<std::string, Ino>> reachable;
    collect(kRoot, "", out, reachable);
    mark_links(reachable, out);
    return out;
  }
  std::size_t open_descriptors() const { return fds_.size(); }

 private:
  struct Descriptor {
    Ino ino;
    bool writable;
    std::size_t offset;
  };

  static Inode make_directory_inode(unsigned mode) {
    Inode d;
    d.directory = true;
    d.mode = d.durable_mode = mode;
    return d;
  }

  void enter(const char* call) {
    if (recording_) capture(call);
  }

  Ino add(Inode inode) {
    inodes_.push_back(std::move(inode));
    return inodes_.size() - 1;
  }

  void add_entry(Ino dir, const std::string& name, Ino ino) {
    inodes_[dir].entries[name] = ino;
    inodes_[dir].pending.push_back(DirOp{DirOp::link, name, {}, ino});
  }

  static void make_entries_durable(Inode& dir) {
    dir.durable_entries = dir.entries;
    dir.pending.clear();
  }

  int open_fd(Ino ino, bool writable) {
    const int fd = next_fd_++;
    fds_[fd] = Descriptor{ino, writable, 0};
    return fd;
  }

  Descriptor* descriptor(int fd) {
    const auto it = fds_.find(fd);
    return it == fds_.end() ? nullptr : &it->second;
  }

  static bool valid_name(std::string_view name) {
    return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos;
  }

  // The directory behind dir_fd, for a call on `name` in it.
  int directory_of(int dir_fd, const char* name, Ino& dir) {
    Descriptor* d = descriptor(dir_fd);
    if (d == nullptr) return -EBADF;
    if (!inodes_[d->ino].directory) return -ENOTDIR;
    if (!valid_name(name)) return -EINVAL;
    dir = d->ino;
    return 0;
  }

  // The inode at an absolute path: 0 or -errno.
  int resolve(const char* path, Ino& out) const {
    if (path == nullptr || path[0] != '/') return -EINVAL;  // the simulation is absolute
    Ino at = kRoot;
    std::string_view rest(path);
    while (!rest.empty()) {
      const std::size_t slash = rest.find('/');
      const std::string_view part = rest.substr(0, slash);
      rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
      if (part.empty()) continue;
      if (part == "." || part == "..") return -EINVAL;
      if (!inodes_[at].directory) return -ENOTDIR;
      const auto it = inodes_[at].entries.find(std::string(part));
      if (it == inodes_[at].entries.end()) return -ENOENT;
      at = it->second;
    }
    out = at;
    return 0;
  }

  // The directory holding the last component of `path`, and that
  // component (empty for "/").
  int resolve_parent(const char* path, Ino& parent, std::string& name) const {
    if (path == nullptr || path[0] != '/') return -EINVAL;
    std::string dir(path);
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    const std::size_t slash = dir.rfind('/');
    name = dir.substr(slash + 1);
    dir.resize(slash == 0 ? 1 : slash);
    if (const int r = resolve(dir.c_str(), parent); r < 0) return r;
    if (!inodes_[parent].directory) return -ENOTDIR;
    return name.empty() || valid_name(name) ? 0 : -EINVAL;
  }

  int rename_in(int dir_fd, const char* from, const char* to, DirOp::Kind kind) {
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, from, dir); r < 0) return r;
    if (!valid_name(to)) return -EINVAL;
    Inode& d = inodes_[dir];
    const auto source = d.entries.find(from);
    if (source == d.entries.end()) return -ENOENT;
    const auto target = d.entries.find(to);
    if (target != d.entries.end()) {
      if (kind == DirOp::rename_noreplace) return -EEXIST;
      if (target->second == source->second) return 0;  // the same file: nothing to do
      if (inodes_[target->second].directory) return -EISDIR;
      if (inodes_[source->second].directory) return -ENOTDIR;
    }
    const Ino ino = source->second;
    d.pending.push_back(DirOp{kind, from, to, ino});
    d.entries.erase(source);
    d.entries[to] = ino;
    return 0;
  }

  atomic_state::FileInfo info_of(Ino ino) const {
    atomic_state::FileInfo info;
    const Inode& inode = inodes_[ino];
    info.type =
        inode.directory ? atomic_state::FileType::directory : atomic_state::FileType::regular;
    info.size = inode.directory ? 0 : inode.data.size();
    info.device = 1;
    info.inode = ino;
    info.mode = inode.mode;
    info.owner = static_cast<std::uint32_t>(::geteuid());  // every file the process's own
    info.group = static_cast<std::uint32_t>(::getegid());
    for (const Inode& dir : inodes_)
      if (dir.directory)
        for (const auto& entry : dir.entries) info.links += entry.second == ino ? 1 : 0;
    return info;
  }

  int stat_entry(int dir_fd, const char* name, atomic_state::FileInfo& info) {
    if (dir_fd == AT_FDCWD) {  // an absolute path, as open_directory takes
      Ino ino = 0;
      if (const int r = resolve(name, ino); r < 0) return r;
      info = info_of(ino);
      return 0;
    }
    Ino dir = 0;
    if (const int r = directory_of(dir_fd, name, dir); r < 0) return r;
    const auto it = inodes_[dir].entries.find(name);
    if (it == inodes_[dir].entries.end()) return -ENOENT;
    info = info_of(it->second);
    return 0;
  }

  void collect(Ino dir, const std::string& path, Image& out,
               std::vector<std::pair<std::string, Ino>>& reachable) const {
    for (const auto& [name, ino] : inodes_[dir].entries) {
      const Inode& inode = inodes_[ino];
      const std::string child = path + "/" + name;
      out[child] = inode.directory ? directory_node(inode.mode) : file_node(inode.data, inode.mode);
      reachable.emplace_back(child, ino);
      if (inode.directory) collect(ino, child, out, reachable);
    }
  }

  std::vector<Inode> inodes_;  // by inode number; 0 unused, 1 the root
  std::map<int, Descriptor> fds_;
  int next_fd_ = 3;
  bool recording_ = false;
  std::vector<CrashPoint> points_;
};

static_assert(atomic_state::is_filesystem_v<SimFs>);
static_assert(atomic_state::is_state_filesystem_v<SimFs>);
static_assert(atomic_state::is_filesystem_v<SimFs&>);
static_assert(atomic_state::is_snapshot_filesystem_v<SimFs>);
static_assert(atomic_state::is_snapshot_filesystem_v<SimFs&>);

// ---------------------------------------------------------- crash images --

/// Applies one logged change to a namespace being rebuilt after a crash;
/// false (and nothing changed) when it no longer makes sense there.
inline bool replay(std::map<std::string, Ino>& entries, const DirOp& op) {
  const auto names = [&](const std::string& name) {
    const auto it = entries.find(name);
    return it != entries.end() && it->second == op.inode;
  };
  switch (op.kind) {
    case DirOp::link:
      return entries.emplace(op.name, op.inode).second;
    case DirOp::unlink:
      if (!names(op.name)) return false;
      entries.erase(op.name);
      return true;
    case DirOp::rename:
    case DirOp::rename_noreplace:
      if (!names(op.name)) return false;
      if (op.kind == DirOp::rename_noreplace && entries.count(op.to)) return false;
      entries.erase(op.name);
      entries[op.to] = op.inode;
      return true;
  }
  return false;
}

/// The (data, mode) a crash may leave of a file: see the model above.
inline std::vector<std::pair<std::string, unsigned>> file_versions(const Inode& file) {
  std::vector<std::string> contents{file.durable_data};
  if (file.data != file.durable_data) {
    const std::size_t size = file.data.size();
    for (std::string bytes :
         {file.data, std::string(), file.data.substr(0, size / 2), std::string(size, '\0')})
      if (std::find(contents.begin(), contents.end(), bytes) == contents.end())
        contents.push_back(std::move(bytes));
  }
  std::vector<unsigned> modes{file.durable_mode};
  if (file.mode != file.durable_mode) modes.push_back(file.mode);
  std::vector<std::pair<std::string, unsigned>> out;
  for (const std::string& bytes : contents)
    for (const unsigned mode : modes) out.emplace_back(bytes, mode);
  return out;
}

/// What enumerating one crash point saw, besides the images.
struct ImageCount {
  std::size_t namespaces = 0;  ///< namespace choices tried (before deduplication)
  std::size_t skipped = 0;     ///< logged operations skipped as meaningless
};

/// Every distinct image a power loss at `point` may leave, under `order`.
/// With `only`, files at other paths are left out of the images (their
/// directories stay): a test that judges a few paths need not enumerate the
/// versions of every temp file beside them, which multiply (a batch's four
/// unsynced temp files: 10^4 combinations per namespace).
inline std::set<Image> crash_images(const CrashPoint& point, Order order,
                                    ImageCount* count = nullptr,
                                    const std::set<std::string>* only = nullptr) {
  const std::vector<Inode>& inodes = point.inodes;
  std::vector<Ino> logged;  // directories with a log to choose from
  for (Ino i = kRoot; i < inodes.size(); ++i)
    if (inodes[i].directory && !inodes[i].pending.empty()) logged.push_back(i);

  std::vector<std::map<std::string, Ino>> entries(inodes.size());
  for (Ino i = kRoot; i < inodes.size(); ++i)
    if (inodes[i].directory) entries[i] = inodes[i].durable_entries;

  std::set<Image> images;
  ImageCount local;
  ImageCount& seen = count ? *count : local;

  // Once every directory's entries are chosen: the files' versions.
  const auto add_images = [&] {
    ++seen.namespaces;
    std::vector<std::pair<std::string, Ino>> reachable;
    std::vector<std::pair<std::string, Ino>> stack{{"", kRoot}};
    while (!stack.empty()) {
      const auto [path, dir] = stack.back();
      stack.pop_back();
      for (const auto& [name, ino] : entries[dir]) {
        if (only && !inodes[ino].directory && !only->count(path + "/" + name)) continue;
        reachable.emplace_back(path + "/" + name, ino);
        if (inodes[ino].directory) stack.emplace_back(path + "/" + name, ino);
      }
    }
    std::vector<Ino> files;  // each file inode once, even under two names
    std::map<Ino, std::vector<std::pair<std::string, unsigned>>> versions;
    for (const auto& [path, ino] : reachable)
      if (!inodes[ino].directory && !versions.count(ino)) {
        files.push_back(ino);
        versions[ino] = file_versions(inodes[ino]);
      }
    std::vector<std::size_t> pick(files.size(), 0);
    for (;;) {
      std::map<Ino, std::size_t> chosen;
      for (std::size_t k = 0; k < files.size(); ++k) chosen[files[k]] = pick[k];
      Image image;
      for (const auto& [path, ino] : reachable) {
        const Inode& inode = inodes[ino];
        if (inode.directory) {
          image[path] = directory_node(inode.durable_mode);
        } else {
          const auto& version = versions[ino][chosen[ino]];
          image[path] = file_node(version.first, version.second);
        }
      }
      mark_links(reachable, image);
      images.insert(std::move(image));
      std::size_t k = 0;  // the next combination, odometer style
      while (k < files.size() && ++pick[k] == versions[files[k]].size()) pick[k++] = 0;
      if (k == files.size()) break;
    }
  };

  // Chooses the entries of logged[k], then of the directories after it.
  const auto choose = [&](const auto& self, std::size_t k) -> void {
    if (k == logged.size()) return add_images();
    const Inode& dir = inodes[logged[k]];
    const std::size_t n = dir.pending.size();
    assert(order == Order::prefix || n < 20);  // 2^n subsets
    const std::size_t choices = order == Order::prefix ? n + 1 : std::size_t{1} << n;
    for (std::size_t c = 0; c < choices; ++c) {
      std::map<std::string, Ino> kept = dir.durable_entries;
      for (std::size_t i = 0; i < n; ++i) {
        const bool applied = order == Order::prefix ? i < c : ((c >> i) & 1) != 0;
        if (applied && !replay(kept, dir.pending[i])) ++seen.skipped;
      }
      entries[logged[k]] = std::move(kept);
      self(self, k + 1);
    }
    entries[logged[k]] = dir.durable_entries;
  };
  choose(choose, 0);
  return images;
}

}  // namespace sim
