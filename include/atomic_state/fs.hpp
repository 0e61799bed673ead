// fs.hpp: sync policies, FileInfo, PosixFs and its traits: every system call
#ifndef ATOMIC_STATE_FS_HPP
#define ATOMIC_STATE_FS_HPP

#include <dirent.h>     // fdopendir, readdir64: list_directory (but on Linux)
#include <fcntl.h>      // openat, O_*, AT_*, sync_file_range
#include <stdio.h>      // renameat2 and RENAME_NOREPLACE (glibc), renameatx_np (Apple)
#include <sys/file.h>   // flock
#include <sys/stat.h>   // fstat, fstatat, mkdirat, fchmod, S_IS*
#include <sys/types.h>  // mode_t, ssize_t, off_t
#include <unistd.h>     // close, write, read, fsync, fdatasync, fchown, unlinkat, linkat, geteuid
#if defined(__linux__)
#include <sys/syscall.h>  // SYS_getdents64: list_directory
#include <sys/xattr.h>    // fgetxattr, fsetxattr, fremovexattr: ModeFrom::existing
#endif

#include <atomic>        // std::atomic: how this process names an unnamed file
#include <cerrno>        // errno, E*
#include <charconv>      // std::from_chars, std::to_chars: /proc/self/status, /proc/self/fd
#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint32_t, std::uint64_t, std::int64_t
#include <cstring>       // std::strcmp, std::strstr, std::memcpy
#include <system_error>  // std::error_code, std::system_category
#include <type_traits>   // std::void_t, std::true_type, std::remove_reference_t
#include <utility>       // std::declval

#include "status.hpp"

// Apple systems reach the disk only through F_FULLFSYNC, so DataSync uses
// it there too; every other supported system has fdatasync.
#if defined(__APPLE__)
#define ATOMIC_STATE_DETAIL_HAS_FDATASYNC 0
#else
#define ATOMIC_STATE_DETAIL_HAS_FDATASYNC 1
#endif

// Linux can start a file's writeback without waiting for it, so that a
// batch's syncs overlap; elsewhere each fsync does all the work.
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
#define ATOMIC_STATE_DETAIL_HAS_SYNC_FILE_RANGE 1
#else
#define ATOMIC_STATE_DETAIL_HAS_SYNC_FILE_RANGE 0
#endif

// Linux makes a file without a name in a directory (O_TMPFILE, 3.11) and
// names it later (linkat): a save's temp file then exists only as long as
// the save, and a kill leaves nothing.
#if defined(__linux__) && defined(O_TMPFILE)
#define ATOMIC_STATE_DETAIL_HAS_UNNAMED_FILES 1
#else
#define ATOMIC_STATE_DETAIL_HAS_UNNAMED_FILES 0
#endif

/// The largest access ACL or security context ModeFrom::existing copies,
/// in bytes (a buffer of this size on the stack of a commit); a larger one
/// fails the save rather than be dropped. ext4 keeps an ACL within a block.
#ifndef ATOMIC_STATE_ATTRIBUTE_MAX
#define ATOMIC_STATE_ATTRIBUTE_MAX 4096
#endif

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// ------------------------------------------------------------ sync policies --

/// How far a sync policy pushes the file's bytes toward the disk.
enum class SyncLevel : unsigned char {
  none,  ///< no sync: the page cache decides
  data,  ///< fdatasync: data and size, not every piece of metadata
  full,  ///< fsync, or F_FULLFSYNC where the platform has it
};

/// Default: fsync the file before the rename and its directory after it.
/// The replacement survives a power loss once write() returns success.
struct FullSync {
  static constexpr SyncLevel file = SyncLevel::full;
  static constexpr bool directory = true;
};

/// fdatasync the file, fsync the directory. Skips flushing metadata that is
/// not needed to read the data back (timestamps). Strictly by POSIX the new
/// mode is such metadata; journaling filesystems (ext4, xfs) commit the new
/// inode whole, mode included.
struct DataSync {
  static constexpr SyncLevel file = SyncLevel::data;
  static constexpr bool directory = true;
};

/// No sync at all. Still atomic against a crash of the process (readers see
/// the old or the new file), but NOT against a power loss or kernel crash,
/// after which the target may be empty, old, or hold zeros.
struct NoSync {
  static constexpr SyncLevel file = SyncLevel::none;
  static constexpr bool directory = false;
};

/// A sync policy is a type with `static constexpr SyncLevel file` and
/// `static constexpr bool directory`, like the three above.
template <class P, class = void>
struct is_sync_policy : std::false_type {};
template <class P>
struct is_sync_policy<P, std::void_t<decltype(P::file), decltype(P::directory)>>
    : std::bool_constant<std::is_same_v<std::remove_cv_t<decltype(P::file)>, SyncLevel> &&
                         std::is_same_v<std::remove_cv_t<decltype(P::directory)>, bool>> {};
template <class P>
inline constexpr bool is_sync_policy_v = is_sync_policy<P>::value;

/// What kind of file a descriptor or name refers to.
enum class FileType : unsigned char { regular, directory, fifo, symlink, other };

/// The little of fstat() the library needs.
struct FileInfo {
  FileType type = FileType::other;
  std::uint64_t size = 0;
  std::uint64_t device = 0;  ///< with inode: which file this is
  std::uint64_t inode = 0;
  std::uint64_t links = 0;    ///< hard links; 0 once the file was removed
  unsigned mode = 0;          ///< the permission bits, 07777
  std::uint32_t owner = 0;    ///< user id
  std::uint32_t group = 0;    ///< group id
  std::int64_t modified = 0;  ///< last modification, unix seconds
};

/// The filesystem policy: every system call AtomicWriter and StateManager
/// make. Each returns a non-negative value on success and -errno on
/// failure, and is noexcept.
struct PosixFs {
  // ---- what AtomicWriter::write needs (is_filesystem_v)
  /// open(path, O_RDONLY|O_DIRECTORY|O_CLOEXEC): a descriptor.
  int open_directory(const char* path) noexcept;
  /// mkdir(path, mode).
  int make_directory(const char* path, unsigned mode) noexcept;
  /// openat(dir_fd, name, O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC|O_NOFOLLOW,
  /// mode): a descriptor.
  int create_file(int dir_fd, const char* name, unsigned mode) noexcept;
  /// flock(fd, LOCK_EX|LOCK_NB): -EWOULDBLOCK while another open file
  /// description holds it. Held until every descriptor of this one is
  /// closed; the kernel drops it when the process dies.
  int try_lock(int fd) noexcept;
  /// fcntl(fd, F_DUPFD_CLOEXEC, 0): a second descriptor of the same open
  /// file, so of the same lock.
  int duplicate(int fd) noexcept;
  /// write(fd, data, size): the number of bytes written.
  ssize_t write(int fd, const void* data, std::size_t size) noexcept;
  /// fchmod(fd, mode): exact, not filtered by the umask.
  int set_mode(int fd, unsigned mode) noexcept;
  /// fsync(fd); fcntl(F_FULLFSYNC) first where the platform has it.
  int sync_full(int fd) noexcept;
  /// fdatasync(fd), or fsync where the platform has no fdatasync.
  int sync_data(int fd) noexcept;
  /// close(fd). The descriptor is released even when this fails.
  int close(int fd) noexcept;
  /// renameat(dir_fd, from, dir_fd, to).
  int rename(int dir_fd, const char* from, const char* to) noexcept;
  /// unlinkat(dir_fd, name, 0).
  int unlink(int dir_fd, const char* name) noexcept;
  /// fstat(fd).
  int file_info(int fd, FileInfo& info) noexcept;
  /// fstatat(dir_fd, name, AT_SYMLINK_NOFOLLOW): a symlink is a symlink.
  int entry_info(int dir_fd, const char* name, FileInfo& info) noexcept;

  // ---- what reading, copying aside and sweeping add (is_state_filesystem_v)
  /// openat(dir_fd, name, O_RDONLY|O_CLOEXEC|O_NOCTTY|O_NONBLOCK): never
  /// blocks, even on a FIFO. Follows symlinks.
  int open_file(int dir_fd, const char* name) noexcept;
  /// read(fd, data, size): the number of bytes read, 0 at the end.
  ssize_t read(int fd, void* data, std::size_t size) noexcept;
  /// fstatat(dir_fd, name, 0), following symlinks.
  int file_info_at(int dir_fd, const char* name, FileInfo& info) noexcept;
  /// renameat(dir_fd, from, dir_fd, to), but -EEXIST rather than replacing
  /// an existing `to`: atomically where the system can (renameat2 with
  /// RENAME_NOREPLACE, renameatx_np with RENAME_EXCL), else by a check
  /// right before the rename.
  int rename_noreplace(int dir_fd, const char* from, const char* to) noexcept;
  /// Calls on_entry(context, name) for each entry of the directory but "."
  /// and "..", in the directory's order; dir_fd is left as it was.
  int list_directory(int dir_fd, void (*on_entry)(void* context, const char* name) noexcept,
                     void* context) noexcept;

  // ---- what the run lock and the previous state add (is_state_filesystem_v)
  /// openat(dir_fd, name, O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC|O_NOCTTY|
  /// O_NONBLOCK, mode): a descriptor of the file, created if missing.
  int open_or_create(int dir_fd, const char* name, unsigned mode) noexcept;
  /// linkat(dir_fd, from, dir_fd, to, 0): a second name for the file.
  int link(int dir_fd, const char* from, const char* to) noexcept;
  /// faccessat(dir_fd, ".", W_OK|X_OK, AT_EACCESS): whether entries can be
  /// created in the directory (a read-only mount or an immutable directory
  /// says no even to root).
  int check_writable(int dir_fd) noexcept;

  // ---- what some options use (detected, not required: each says what
  // happens without it)
  /// sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) on Linux: starts
  /// writing the file's data without waiting; elsewhere nothing. Optional:
  /// without it, the syncs alone do the writing.
  int start_writeback(int fd) noexcept;
  /// openat(dir_fd, ".", O_WRONLY|O_TMPFILE|O_CLOEXEC, mode) on Linux: a
  /// regular file without a name in the directory, gone with its last
  /// descriptor unless link_unnamed names it. -EOPNOTSUPP where there is
  /// none: elsewhere than Linux, on a filesystem without it (vfat, NFS,
  /// older kernels: EOPNOTSUPP, EISDIR or EINVAL from the kernel), or where
  /// this process might not name it (no /proc/self/fd now, and linkat's
  /// AT_EMPTY_PATH not yet seen to name one, or seen refused). Optional,
  /// with link_unnamed: without them, or where this says -EOPNOTSUPP, a save
  /// makes a named temp file and locks it.
  int open_unnamed(int dir_fd, unsigned mode) noexcept;
  /// Gives the unnamed file `fd` (open_unnamed) the name `name` in dir_fd:
  /// linkat(fd, "", dir_fd, name, AT_EMPTY_PATH), or, where the kernel
  /// refuses that to a process without CAP_DAC_READ_SEARCH (ENOENT: older
  /// kernels), linkat(AT_FDCWD, "/proc/self/fd/N", dir_fd, name,
  /// AT_SYMLINK_FOLLOW), which needs no privilege; a refusal that /proc got
  /// round is remembered for the process. -EEXIST when `name` exists. A
  /// file once named and unlinked again cannot be named a second time
  /// (ENOENT).
  int link_unnamed(int fd, int dir_fd, const char* name) noexcept;
  /// fchown(fd, owner, group): for ModeFrom::existing. Optional: without
  /// it, the new file keeps the process's owner and group.
  int set_owner(int fd, std::uint32_t owner, std::uint32_t group) noexcept;
  /// The process umask, read without changing it (Linux: the Umask line
  /// of /proc/self/status); -ENOTSUP where it cannot be. For ModeFrom::umask.
  /// Optional: without it, ModeFrom::umask fails (set_permissions, ENOTSUP).
  int process_umask() noexcept;
  /// fgetxattr(fd, name, value, size) on Linux: the attribute's length;
  /// -ENODATA when the file has none, -ERANGE when it is longer than
  /// `size`, -ENOTSUP where the filesystem (or, elsewhere than Linux, the
  /// library) has none. For ModeFrom::existing, which copies the access ACL
  /// (system.posix_acl_access) and the security context (security.selinux).
  /// Optional, with set_attribute and remove_attribute: without them, the
  /// new file has the ACL and context of any new file of the process.
  ssize_t get_attribute(int fd, const char* name, void* value, std::size_t size) noexcept;
  /// fsetxattr(fd, name, value, size, 0) on Linux; elsewhere -ENOTSUP.
  int set_attribute(int fd, const char* name, const void* value, std::size_t size) noexcept;
  /// fremovexattr(fd, name) on Linux (-ENODATA when there is none);
  /// elsewhere -ENOTSUP.
  int remove_attribute(int fd, const char* name) noexcept;
  /// realpath(path, out), `out` holding ATOMIC_STATE_PATH_MAX bytes. No
  /// longer called: WriteOptions::follow_symlinks follows each link itself
  /// (read_link, file_info_at, user_id), to refuse the links
  /// fs.protected_symlinks guards, which realpath(3) follows.
  int real_path(const char* path, char* out) noexcept;
  /// geteuid(): the user the process acts as, to tell a lock file of its
  /// own from another user's, and a symlink of its own in a sticky
  /// directory (WriteOptions::follow_symlinks). Cannot fail. Optional:
  /// without it, a SnapshotWriter's lock file is not checked for its owner
  /// (its link count still is), and follow_symlinks takes no link in a
  /// sticky, world-writable directory for the process's own.
  std::uint32_t user_id() noexcept;

  // ---- what a snapshot adds (is_snapshot_filesystem_v)
  /// mkdirat(dir_fd, name, mode).
  int make_directory_at(int dir_fd, const char* name, unsigned mode) noexcept;
  /// openat(dir_fd, name, O_RDONLY|O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC).
  int open_directory_at(int dir_fd, const char* name) noexcept;
  /// unlinkat(dir_fd, name, AT_REMOVEDIR).
  int remove_directory(int dir_fd, const char* name) noexcept;
  /// symlinkat(target, dir_fd, name).
  int make_symlink(const char* target, int dir_fd, const char* name) noexcept;
  /// readlinkat(dir_fd, name, buffer, size): the length of the target (not
  /// terminated); a target of `size` bytes or more is -ENAMETOOLONG. With
  /// file_info_at, what WriteOptions::follow_symlinks needs (detected).
  ssize_t read_link(int dir_fd, const char* name, char* buffer, std::size_t size) noexcept;

  // ---- what a SnapshotReader adds (is_snapshot_reader_filesystem_v)
  /// flock(fd, LOCK_SH|LOCK_NB): -EWOULDBLOCK while another open file
  /// description holds an exclusive lock; any number share it.
  int try_lock_shared(int fd) noexcept;
};

/// Whether F offers every call of PosixFs that AtomicWriter::write makes,
/// with compatible signatures.
template <class F, class = void>
struct is_filesystem : std::false_type {};
template <class F>
struct is_filesystem<
    F,
    std::void_t<
        decltype(std::declval<F&>().open_directory("")),
        decltype(std::declval<F&>().make_directory("", 0u)),
        decltype(std::declval<F&>().create_file(0, "", 0u)),
        decltype(std::declval<F&>().try_lock(0)), decltype(std::declval<F&>().duplicate(0)),
        decltype(std::declval<F&>().write(0, nullptr, std::size_t{})),
        decltype(std::declval<F&>().set_mode(0, 0u)), decltype(std::declval<F&>().sync_full(0)),
        decltype(std::declval<F&>().sync_data(0)), decltype(std::declval<F&>().close(0)),
        decltype(std::declval<F&>().rename(0, "", "")), decltype(std::declval<F&>().unlink(0, "")),
        decltype(std::declval<F&>().file_info(0, std::declval<FileInfo&>())),
        decltype(std::declval<F&>().entry_info(0, "", std::declval<FileInfo&>()))>>
    : std::true_type {};
template <class F>
inline constexpr bool is_filesystem_v = is_filesystem<std::remove_reference_t<F>>::value;

/// Whether F also offers the calls StateManager and the sweep of stale temp
/// files make: open_file, read, file_info_at, rename_noreplace,
/// list_directory, open_or_create, link and check_writable.
template <class F, class = void>
struct is_state_filesystem : std::false_type {};
template <class F>
struct is_state_filesystem<
    F, std::void_t<decltype(std::declval<F&>().open_file(0, "")),
                   decltype(std::declval<F&>().read(0, nullptr, std::size_t{})),
                   decltype(std::declval<F&>().file_info_at(0, "", std::declval<FileInfo&>())),
                   decltype(std::declval<F&>().rename_noreplace(0, "", "")),
                   decltype(std::declval<F&>().list_directory(0, nullptr, nullptr)),
                   decltype(std::declval<F&>().open_or_create(0, "", 0u)),
                   decltype(std::declval<F&>().link(0, "", "")),
                   decltype(std::declval<F&>().check_writable(0))>> : is_filesystem<F> {};
template <class F>
inline constexpr bool is_state_filesystem_v =
    is_state_filesystem<std::remove_reference_t<F>>::value;

/// Whether F also offers the calls a SnapshotWriter makes: those of
/// is_state_filesystem, make_directory_at, open_directory_at,
/// remove_directory, make_symlink and read_link.
template <class F, class = void>
struct is_snapshot_filesystem : std::false_type {};
template <class F>
struct is_snapshot_filesystem<
    F, std::void_t<decltype(std::declval<F&>().make_directory_at(0, "", 0u)),
                   decltype(std::declval<F&>().open_directory_at(0, "")),
                   decltype(std::declval<F&>().remove_directory(0, "")),
                   decltype(std::declval<F&>().make_symlink("", 0, "")),
                   decltype(std::declval<F&>().read_link(0, "", nullptr, std::size_t{}))>>
    : is_state_filesystem<F> {};
template <class F>
inline constexpr bool is_snapshot_filesystem_v =
    is_snapshot_filesystem<std::remove_reference_t<F>>::value;

/// Whether F offers the calls a SnapshotReader makes: open_directory,
/// read_link, open_directory_at, try_lock_shared, file_info, entry_info and
/// close.
template <class F, class = void>
struct is_snapshot_reader_filesystem : std::false_type {};
template <class F>
struct is_snapshot_reader_filesystem<
    F, std::void_t<decltype(std::declval<F&>().open_directory("")),
                   decltype(std::declval<F&>().read_link(0, "", nullptr, std::size_t{})),
                   decltype(std::declval<F&>().open_directory_at(0, "")),
                   decltype(std::declval<F&>().try_lock_shared(0)),
                   decltype(std::declval<F&>().file_info(0, std::declval<FileInfo&>())),
                   decltype(std::declval<F&>().entry_info(0, "", std::declval<FileInfo&>())),
                   decltype(std::declval<F&>().close(0))>> : std::true_type {};
template <class F>
inline constexpr bool is_snapshot_reader_filesystem_v =
    is_snapshot_reader_filesystem<std::remove_reference_t<F>>::value;

namespace detail {

/// Repeats a call interrupted by a signal (-EINTR), a bounded number of
/// times so that a storm of signals ends in an error rather than a hang.
template <class Call>
auto retry_interrupted(Call&& call) noexcept -> decltype(call()) {
  auto result = call();
  for (long n = 0; result == -EINTR && n < ATOMIC_STATE_EINTR_RETRY_LIMIT; ++n) result = call();
  return result;
}

/// Every call of a filesystem policy, with the retry rule applied in one
/// place (as folly's *NoInt wrappers do): a call interrupted by a signal is
/// repeated, a bounded number of times. Two are not: close(), whose
/// descriptor is gone even when it reports EINTR, and write(), which
/// write_all loops over, counting interruptions with writes that made no
/// progress. A failed call is never repeated: after a failed fsync the
/// kernel may have dropped the dirty pages, so a second one would
/// "succeed".
template <class Fs>
class Retrying {
 public:
  explicit Retrying(Fs& fs) noexcept : fs_(&fs) {}

  int open_directory(const char* path) noexcept {
    return retry_interrupted([&] { return fs_->open_directory(path); });
  }
  int make_directory(const char* path, unsigned mode) noexcept {
    return retry_interrupted([&] { return fs_->make_directory(path, mode); });
  }
  int create_file(int dir_fd, const char* name, unsigned mode) noexcept {
    return retry_interrupted([&] { return fs_->create_file(dir_fd, name, mode); });
  }
  int try_lock(int fd) noexcept {
    return retry_interrupted([&] { return fs_->try_lock(fd); });
  }
  int duplicate(int fd) noexcept {
    return retry_interrupted([&] { return fs_->duplicate(fd); });
  }
  ssize_t write(int fd, const void* data, std::size_t size) noexcept {
    return fs_->write(fd, data, size);
  }
  int set_mode(int fd, unsigned mode) noexcept {
    return retry_interrupted([&] { return fs_->set_mode(fd, mode); });
  }
  int sync_full(int fd) noexcept {
    return retry_interrupted([&] { return fs_->sync_full(fd); });
  }
  int sync_data(int fd) noexcept {
    return retry_interrupted([&] { return fs_->sync_data(fd); });
  }
  int close(int fd) noexcept { return fs_->close(fd); }
  int rename(int dir_fd, const char* from, const char* to) noexcept {
    return retry_interrupted([&] { return fs_->rename(dir_fd, from, to); });
  }
  int unlink(int dir_fd, const char* name) noexcept {
    return retry_interrupted([&] { return fs_->unlink(dir_fd, name); });
  }
  int file_info(int fd, FileInfo& info) noexcept {
    return retry_interrupted([&] { return fs_->file_info(fd, info); });
  }
  int entry_info(int dir_fd, const char* name, FileInfo& info) noexcept {
    return retry_interrupted([&] { return fs_->entry_info(dir_fd, name, info); });
  }
  int open_file(int dir_fd, const char* name) noexcept {
    return retry_interrupted([&] { return fs_->open_file(dir_fd, name); });
  }
  ssize_t read(int fd, void* data, std::size_t size) noexcept {
    return retry_interrupted([&] { return fs_->read(fd, data, size); });
  }
  int file_info_at(int dir_fd, const char* name, FileInfo& info) noexcept {
    return retry_interrupted([&] { return fs_->file_info_at(dir_fd, name, info); });
  }
  int rename_noreplace(int dir_fd, const char* from, const char* to) noexcept {
    return retry_interrupted([&] { return fs_->rename_noreplace(dir_fd, from, to); });
  }
  int list_directory(int dir_fd, void (*on_entry)(void* context, const char* name) noexcept,
                     void* context) noexcept {
    return retry_interrupted([&] { return fs_->list_directory(dir_fd, on_entry, context); });
  }
  int open_or_create(int dir_fd, const char* name, unsigned mode) noexcept {
    return retry_interrupted([&] { return fs_->open_or_create(dir_fd, name, mode); });
  }
  int link(int dir_fd, const char* from, const char* to) noexcept {
    return retry_interrupted([&] { return fs_->link(dir_fd, from, to); });
  }
  int open_unnamed(int dir_fd, unsigned mode) noexcept {
    return retry_interrupted([&] { return fs_->open_unnamed(dir_fd, mode); });
  }
  int link_unnamed(int fd, int dir_fd, const char* name) noexcept {
    return retry_interrupted([&] { return fs_->link_unnamed(fd, dir_fd, name); });
  }
  int start_writeback(int fd) noexcept {
    return retry_interrupted([&] { return fs_->start_writeback(fd); });
  }
  int set_owner(int fd, std::uint32_t owner, std::uint32_t group) noexcept {
    return retry_interrupted([&] { return fs_->set_owner(fd, owner, group); });
  }
  int process_umask() noexcept {
    return retry_interrupted([&] { return fs_->process_umask(); });
  }
  int real_path(const char* path, char* out) noexcept {
    return retry_interrupted([&] { return fs_->real_path(path, out); });
  }
  // Only where Fs has it, so that has_user_id<Retrying<Fs>> says the truth.
  template <class F = Fs, class = decltype(std::declval<F&>().user_id())>
  std::uint32_t user_id() noexcept {
    return fs_->user_id();
  }
  ssize_t get_attribute(int fd, const char* name, void* value, std::size_t size) noexcept {
    return retry_interrupted([&] { return fs_->get_attribute(fd, name, value, size); });
  }
  int set_attribute(int fd, const char* name, const void* value, std::size_t size) noexcept {
    return retry_interrupted([&] { return fs_->set_attribute(fd, name, value, size); });
  }
  int remove_attribute(int fd, const char* name) noexcept {
    return retry_interrupted([&] { return fs_->remove_attribute(fd, name); });
  }
  int make_directory_at(int dir_fd, const char* name, unsigned mode) noexcept {
    return retry_interrupted([&] { return fs_->make_directory_at(dir_fd, name, mode); });
  }
  int open_directory_at(int dir_fd, const char* name) noexcept {
    return retry_interrupted([&] { return fs_->open_directory_at(dir_fd, name); });
  }
  int remove_directory(int dir_fd, const char* name) noexcept {
    return retry_interrupted([&] { return fs_->remove_directory(dir_fd, name); });
  }
  int make_symlink(const char* target, int dir_fd, const char* name) noexcept {
    return retry_interrupted([&] { return fs_->make_symlink(target, dir_fd, name); });
  }
  ssize_t read_link(int dir_fd, const char* name, char* buffer, std::size_t size) noexcept {
    return retry_interrupted([&] { return fs_->read_link(dir_fd, name, buffer, size); });
  }
  int check_writable(int dir_fd) noexcept {
    return retry_interrupted([&] { return fs_->check_writable(dir_fd); });
  }
  int try_lock_shared(int fd) noexcept {
    return retry_interrupted([&] { return fs_->try_lock_shared(fd); });
  }

 private:
  Fs* fs_;
};

}  // namespace detail

namespace detail {
template <class F, class = void>
struct has_set_owner : std::false_type {};
template <class F>
struct has_set_owner<F, std::void_t<decltype(std::declval<F&>().set_owner(0, 0u, 0u))>>
    : std::true_type {};
template <class F, class = void>
struct has_process_umask : std::false_type {};
template <class F>
struct has_process_umask<F, std::void_t<decltype(std::declval<F&>().process_umask())>>
    : std::true_type {};
template <class F, class = void>
struct has_user_id : std::false_type {};
template <class F>
struct has_user_id<F, std::void_t<decltype(std::declval<F&>().user_id())>> : std::true_type {};
template <class F, class = void>
struct has_attributes : std::false_type {};
template <class F>
struct has_attributes<
    F, std::void_t<decltype(std::declval<F&>().get_attribute(0, "", nullptr, std::size_t{})),
                   decltype(std::declval<F&>().set_attribute(0, "", nullptr, std::size_t{})),
                   decltype(std::declval<F&>().remove_attribute(0, "")),
                   decltype(std::declval<F&>().open_file(0, ""))>> : std::true_type {};
template <class F, class = void>
struct has_link_reading : std::false_type {};
template <class F>
struct has_link_reading<
    F, std::void_t<decltype(std::declval<F&>().read_link(0, "", nullptr, std::size_t{})),
                   decltype(std::declval<F&>().file_info_at(0, "", std::declval<FileInfo&>()))>>
    : std::true_type {};
}  // namespace detail

namespace detail {
// Whose lock file a lock takes, one rule for StateManager's run lock and
// SnapshotWriter's: the process's user's (`user`). Root (user 0), in a
// directory of another user, also takes one of the directory's owner; and
// there it changes nothing in the file it opened (no chmod, no pid, no
// chown): that user may put any of root's files at the lock's name for a
// moment, hard-linked there and unlinked again, and a file opened by name
// cannot be told from root's own. Any other user's lock file is refused
// by the caller.
struct LockFileOwner {
  bool taken = false;      // the lock file may be taken as the process's own
  bool hands_off = false;  // root in a directory of another user: change nothing in it
};
template <class Fs>
LockFileOwner lock_file_owner(Retrying<Fs>& call, int dir_fd, std::uint32_t user,
                              std::uint32_t file_owner) noexcept {
  LockFileOwner rule;
  FileInfo dir;
  const bool root_in_users_dir = user == 0 && call.file_info(dir_fd, dir) >= 0 && dir.owner != user;
  rule.taken = file_owner == user || (root_in_users_dir && file_owner == dir.owner);
  rule.hands_off = root_in_users_dir;
  return rule;
}
}  // namespace detail

namespace detail {
template <class F, class = void>
struct has_unnamed_files : std::false_type {};
template <class F>
struct has_unnamed_files<F, std::void_t<decltype(std::declval<F&>().open_unnamed(0, 0u)),
                                        decltype(std::declval<F&>().link_unnamed(0, 0, ""))>>
    : std::true_type {};
template <class F, class = void>
struct has_start_writeback : std::false_type {};
template <class F>
struct has_start_writeback<F, std::void_t<decltype(std::declval<F&>().start_writeback(0))>>
    : std::true_type {};
}  // namespace detail

// ========================================================= implementation ====

namespace detail {
// mode_t is 16 bits on some systems; perm was checked to fit in 07777.
inline mode_t to_mode(unsigned perm) noexcept { return static_cast<mode_t>(perm); }

inline int negative_errno(int result) noexcept { return result < 0 ? -errno : result; }

inline std::error_code system_error(int neg_errno) noexcept {
  return std::error_code(-neg_errno, std::system_category());
}
}  // namespace detail

// ------------------------------------------------------------------ PosixFs --

inline int PosixFs::open_directory(const char* path) noexcept {
  return detail::negative_errno(::open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

inline int PosixFs::make_directory(const char* path, unsigned mode) noexcept {
  return detail::negative_errno(::mkdir(path, detail::to_mode(mode)));
}

inline int PosixFs::create_file(int dir_fd, const char* name, unsigned mode) noexcept {
  return detail::negative_errno(::openat(
      dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, detail::to_mode(mode)));
}

inline int PosixFs::try_lock(int fd) noexcept {
  return detail::negative_errno(::flock(fd, LOCK_EX | LOCK_NB));
}

inline int PosixFs::duplicate(int fd) noexcept {
  return detail::negative_errno(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

inline ssize_t PosixFs::write(int fd, const void* data, std::size_t size) noexcept {
  const ssize_t n = ::write(fd, data, size);
  return n < 0 ? -errno : n;
}

inline int PosixFs::set_mode(int fd, unsigned mode) noexcept {
  return detail::negative_errno(::fchmod(fd, detail::to_mode(mode)));
}

inline int PosixFs::sync_full(int fd) noexcept {
#if defined(F_FULLFSYNC)
  // Plain fsync on Apple systems stops at the drive's cache.
  if (::fcntl(fd, F_FULLFSYNC) == 0) return 0;
  if (errno != ENOTSUP && errno != EOPNOTSUPP && errno != ENOTTY && errno != EINVAL) return -errno;
#endif
  return detail::negative_errno(::fsync(fd));
}

inline int PosixFs::sync_data(int fd) noexcept {
#if ATOMIC_STATE_DETAIL_HAS_FDATASYNC
  return detail::negative_errno(::fdatasync(fd));
#else
  return sync_full(fd);
#endif
}

inline int PosixFs::close(int fd) noexcept { return detail::negative_errno(::close(fd)); }

inline int PosixFs::start_writeback(int fd) noexcept {
#if ATOMIC_STATE_DETAIL_HAS_SYNC_FILE_RANGE
  return detail::negative_errno(::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE));
#else
  (void)fd;
  return 0;
#endif
}

namespace detail {
// What this process learnt of linkat's AT_EMPTY_PATH: that it names an
// unnamed file, or that it is refused (older kernels, without
// CAP_DAC_READ_SEARCH), so that every unnamed file is named through
// /proc/self/fd. A refusal counts only once /proc got round it: an ENOENT
// of another cause (the directory removed) is not one.
enum EmptyPath : int { kEmptyPathUnknown = 0, kEmptyPathNames = 1, kEmptyPathRefused = 2 };
inline std::atomic<int>& empty_path() noexcept {
  static std::atomic<int> learnt{kEmptyPathUnknown};
  return learnt;
}

// /proc/self/fd/N, into `path`.
inline const char* proc_fd_path(int fd, char (&path)[32]) noexcept {
  std::memcpy(path, "/proc/self/fd/", 14);
  *std::to_chars(path + 14, path + sizeof path - 1, fd).ptr = '\0';
  return path;
}
}  // namespace detail

inline int PosixFs::open_unnamed(int dir_fd, unsigned mode) noexcept {
#if ATOMIC_STATE_DETAIL_HAS_UNNAMED_FILES
  // Unless AT_EMPTY_PATH is known to name it, /proc must be there to: once
  // the bytes are in it, it is too late to learn that neither can (a
  // chroot or a mount namespace without /proc, an older kernel). So until
  // a first AT_EMPTY_PATH link, and ever after a refusal, each save looks.
  if (detail::empty_path().load(std::memory_order_relaxed) != detail::kEmptyPathNames &&
      ::faccessat(AT_FDCWD, "/proc/self/fd", X_OK, 0) != 0)
    return -EOPNOTSUPP;
  const int fd = ::openat(dir_fd, ".", O_WRONLY | O_TMPFILE | O_CLOEXEC, detail::to_mode(mode));
  if (fd >= 0) return fd;
  const int error = errno;
  return error == EOPNOTSUPP || error == EISDIR || error == EINVAL ? -EOPNOTSUPP : -error;
#else
  (void)dir_fd;
  (void)mode;
  return -EOPNOTSUPP;
#endif
}

inline int PosixFs::link_unnamed(int fd, int dir_fd, const char* name) noexcept {
#if ATOMIC_STATE_DETAIL_HAS_UNNAMED_FILES
  std::atomic<int>& learnt = detail::empty_path();
  const int known = learnt.load(std::memory_order_relaxed);
  if (known != detail::kEmptyPathRefused) {
    if (::linkat(fd, "", dir_fd, name, AT_EMPTY_PATH) == 0) {
      if (known == detail::kEmptyPathUnknown)
        learnt.store(detail::kEmptyPathNames, std::memory_order_relaxed);
      return 0;
    }
    if (errno != ENOENT) return -errno;
  }
  char path[32];
  const int r = detail::negative_errno(
      ::linkat(AT_FDCWD, detail::proc_fd_path(fd, path), dir_fd, name, AT_SYMLINK_FOLLOW));
  if (r == 0 && known != detail::kEmptyPathRefused)
    learnt.store(detail::kEmptyPathRefused, std::memory_order_relaxed);
  // Neither way named it: what was learnt may no longer hold (privileges
  // dropped, /proc gone), so the next saves look for /proc again before
  // they make an unnamed file.
  if (r < 0 && known == detail::kEmptyPathNames)
    learnt.store(detail::kEmptyPathUnknown, std::memory_order_relaxed);
  return r;
#else
  (void)fd;
  (void)dir_fd;
  (void)name;
  return -EOPNOTSUPP;
#endif
}

inline int PosixFs::set_owner(int fd, std::uint32_t owner, std::uint32_t group) noexcept {
  return detail::negative_errno(::fchown(fd, static_cast<uid_t>(owner), static_cast<gid_t>(group)));
}

// umask() both reads and sets: calling it twice would give other threads'
// new files the wrong mode in between, so the value is read where the
// kernel shows it instead.
inline int PosixFs::process_umask() noexcept {
#if defined(__linux__)
  const int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -ENOTSUP;
  char text[4096];
  std::size_t size = 0;
  ssize_t n = 0;
  while (size < sizeof text - 1 && (n = ::read(fd, text + size, sizeof text - 1 - size)) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    size += static_cast<std::size_t>(n);
  }
  ::close(fd);
  text[size] = '\0';
  const char* line = std::strstr(text, "\nUmask:");
  if (line == nullptr) return -ENOTSUP;  // kernels before 4.7
  line += 7;
  while (*line == ' ' || *line == '\t') ++line;
  unsigned mask = 0;
  const auto parsed = std::from_chars(line, text + size, mask, 8);
  if (parsed.ec != std::errc() || mask > 0777) return -ENOTSUP;
  return static_cast<int>(mask);
#else
  return -ENOTSUP;
#endif
}

inline int PosixFs::real_path(const char* path, char* out) noexcept {
  static_assert(ATOMIC_STATE_PATH_MAX >= PATH_MAX, "realpath writes up to PATH_MAX bytes");
  return ::realpath(path, out) == nullptr ? -errno : 0;
}

inline std::uint32_t PosixFs::user_id() noexcept { return static_cast<std::uint32_t>(::geteuid()); }

inline ssize_t PosixFs::get_attribute(int fd, const char* name, void* value,
                                      std::size_t size) noexcept {
#if defined(__linux__)
  const ssize_t n = ::fgetxattr(fd, name, value, size);
  return n < 0 ? -errno : n;
#else
  (void)fd, (void)name, (void)value, (void)size;
  return -ENOTSUP;
#endif
}

inline int PosixFs::set_attribute(int fd, const char* name, const void* value,
                                  std::size_t size) noexcept {
#if defined(__linux__)
  return detail::negative_errno(::fsetxattr(fd, name, value, size, 0));
#else
  (void)fd, (void)name, (void)value, (void)size;
  return -ENOTSUP;
#endif
}

inline int PosixFs::remove_attribute(int fd, const char* name) noexcept {
#if defined(__linux__)
  return detail::negative_errno(::fremovexattr(fd, name));
#else
  (void)fd, (void)name;
  return -ENOTSUP;
#endif
}

inline int PosixFs::make_directory_at(int dir_fd, const char* name, unsigned mode) noexcept {
  return detail::negative_errno(::mkdirat(dir_fd, name, static_cast<mode_t>(mode)));
}

inline int PosixFs::open_directory_at(int dir_fd, const char* name) noexcept {
  return detail::negative_errno(
      ::openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

inline int PosixFs::remove_directory(int dir_fd, const char* name) noexcept {
  return detail::negative_errno(::unlinkat(dir_fd, name, AT_REMOVEDIR));
}

inline int PosixFs::make_symlink(const char* target, int dir_fd, const char* name) noexcept {
  return detail::negative_errno(::symlinkat(target, dir_fd, name));
}

inline int PosixFs::try_lock_shared(int fd) noexcept {
  return detail::negative_errno(::flock(fd, LOCK_SH | LOCK_NB));
}

inline ssize_t PosixFs::read_link(int dir_fd, const char* name, char* buffer,
                                  std::size_t size) noexcept {
  const ssize_t n = ::readlinkat(dir_fd, name, buffer, size);
  if (n < 0) return -errno;
  if (static_cast<std::size_t>(n) >= size) return -ENAMETOOLONG;
  return n;
}

inline int PosixFs::rename(int dir_fd, const char* from, const char* to) noexcept {
  return detail::negative_errno(::renameat(dir_fd, from, dir_fd, to));
}

inline int PosixFs::unlink(int dir_fd, const char* name) noexcept {
  return detail::negative_errno(::unlinkat(dir_fd, name, 0));
}

namespace detail {
inline FileInfo to_file_info(const struct stat& st) noexcept {
  FileInfo info;
  info.type = S_ISREG(st.st_mode)    ? FileType::regular
              : S_ISDIR(st.st_mode)  ? FileType::directory
              : S_ISFIFO(st.st_mode) ? FileType::fifo
              : S_ISLNK(st.st_mode)  ? FileType::symlink
                                     : FileType::other;
  info.size = st.st_size > 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  info.device = static_cast<std::uint64_t>(st.st_dev);
  info.inode = static_cast<std::uint64_t>(st.st_ino);
  info.links = static_cast<std::uint64_t>(st.st_nlink);
  info.mode = static_cast<unsigned>(st.st_mode) & 07777u;
  info.owner = static_cast<std::uint32_t>(st.st_uid);
  info.group = static_cast<std::uint32_t>(st.st_gid);
  info.modified = static_cast<std::int64_t>(st.st_mtime);
  return info;
}

inline int stat_result(int result, const struct stat& st, FileInfo& info) noexcept {
  if (result != 0) return -errno;
  info = to_file_info(st);
  return 0;
}
}  // namespace detail

inline int PosixFs::file_info(int fd, FileInfo& info) noexcept {
  struct stat st;
  const int r = ::fstat(fd, &st);
  return detail::stat_result(r, st, info);
}

inline int PosixFs::entry_info(int dir_fd, const char* name, FileInfo& info) noexcept {
  struct stat st;
  const int r = ::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW);
  return detail::stat_result(r, st, info);
}

inline int PosixFs::open_file(int dir_fd, const char* name) noexcept {
  return detail::negative_errno(
      ::openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
}

inline ssize_t PosixFs::read(int fd, void* data, std::size_t size) noexcept {
  const ssize_t n = ::read(fd, data, size);
  return n < 0 ? -errno : n;
}

inline int PosixFs::file_info_at(int dir_fd, const char* name, FileInfo& info) noexcept {
  struct stat st;
  const int r = ::fstatat(dir_fd, name, &st, 0);
  return detail::stat_result(r, st, info);
}

inline int PosixFs::rename_noreplace(int dir_fd, const char* from, const char* to) noexcept {
#if defined(RENAME_NOREPLACE)
  if (::renameat2(dir_fd, from, dir_fd, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return -errno;
#elif defined(RENAME_EXCL)
  if (::renameatx_np(dir_fd, from, dir_fd, to, RENAME_EXCL) == 0) return 0;
  if (errno != EINVAL && errno != ENOTSUP) return -errno;
#endif
  // The filesystem (or system) has no exclusive rename: check, then rename.
  struct stat st;
  if (::fstatat(dir_fd, to, &st, AT_SYMLINK_NOFOLLOW) == 0) return -EEXIST;
  if (errno != ENOENT) return -errno;
  return detail::negative_errno(::renameat(dir_fd, from, dir_fd, to));
}

#if defined(__linux__) && defined(SYS_getdents64)
namespace detail {
// Lists a directory with getdents64 into a buffer on the stack: readdir's
// DIR is a malloc, and a sweep or prune on a save's success path allocates
// nothing. The records are the kernel's linux_dirent64: a 64-bit inode and
// offset (so a 32-bit off_t never meets EOVERFLOW), the record's length at
// byte 16, its type at 18, its name from 19.
inline int list_entries(int fd, void (*on_entry)(void* context, const char* name) noexcept,
                        void* context) noexcept {
  alignas(8) char records[4096];
  for (;;) {
    const long got = ::syscall(SYS_getdents64, fd, records, sizeof records);
    if (got < 0) return -errno;
    if (got == 0) return 0;
    for (std::size_t at = 0; at < static_cast<std::size_t>(got);) {
      unsigned short length;
      std::memcpy(&length, records + at + 16, sizeof length);
      const char* name = records + at + 19;
      if (std::strcmp(name, ".") != 0 && std::strcmp(name, "..") != 0) on_entry(context, name);
      at += length;
    }
  }
}
}  // namespace detail

inline int PosixFs::list_directory(int dir_fd,
                                   void (*on_entry)(void* context, const char* name) noexcept,
                                   void* context) noexcept {
  // A descriptor of its own: listing moves the offset.
  const int own = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (own < 0) return -errno;
  const int result = detail::list_entries(own, on_entry, context);
  ::close(own);
  return result;
}
#else
inline int PosixFs::list_directory(int dir_fd,
                                   void (*on_entry)(void* context, const char* name) noexcept,
                                   void* context) noexcept {
  // A descriptor of its own: readdir moves the offset, and closedir closes.
  const int own = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (own < 0) return -errno;
  DIR* dir = ::fdopendir(own);
  if (dir == nullptr) {
    const int error = errno;
    ::close(own);
    return -error;
  }
  int result = 0;
  for (;;) {
    errno = 0;
#if defined(__GLIBC__) && defined(_LARGEFILE64_SOURCE) && \
    !(defined(_FILE_OFFSET_BITS) && _FILE_OFFSET_BITS == 64)
    // A 32-bit off_t's readdir() fails with EOVERFLOW on an entry whose
    // offset or inode number passes 32 bits (ext4 on a 64-bit kernel, XFS,
    // btrfs): only the name is needed, and readdir64() reads every entry.
    const struct dirent64* entry = ::readdir64(dir);
#else
    const struct dirent* entry = ::readdir(dir);
#endif
    if (entry == nullptr) {
      if (errno != 0) result = -errno;
      break;
    }
    const char* name = entry->d_name;
    if (std::strcmp(name, ".") != 0 && std::strcmp(name, "..") != 0) on_entry(context, name);
  }
  ::closedir(dir);
  return result;
}
#endif

inline int PosixFs::open_or_create(int dir_fd, const char* name, unsigned mode) noexcept {
  return detail::negative_errno(
      ::openat(dir_fd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
               detail::to_mode(mode)));
}

inline int PosixFs::link(int dir_fd, const char* from, const char* to) noexcept {
  return detail::negative_errno(::linkat(dir_fd, from, dir_fd, to, 0));
}

inline int PosixFs::check_writable(int dir_fd) noexcept {
  return detail::negative_errno(::faccessat(dir_fd, ".", W_OK | X_OK, AT_EACCESS));
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

#endif  // ATOMIC_STATE_FS_HPP
