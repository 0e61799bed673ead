// writer.hpp: WriteOptions, WriteTransaction, AtomicWriter, write_atomic, the sweep
#ifndef ATOMIC_STATE_WRITER_HPP
#define ATOMIC_STATE_WRITER_HPP

#include <time.h>  // clock_gettime: temp names of forked processes differ

#include <atomic>        // std::atomic: an AtomicDirectory's claim numbers
#include <charconv>      // std::to_chars
#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint64_t, std::uintptr_t
#include <cstring>       // std::memcpy, std::strncmp
#include <string_view>   // std::string_view
#include <system_error>  // std::errc, std::make_error_code
#include <type_traits>   // std::remove_reference_t
#include <utility>       // std::move, std::exchange

#include "path.hpp"

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

namespace detail {
struct Claim;
template <class Transaction>
struct TransactionSteps;
}  // namespace detail

/// Where a new file's mode comes from.
enum class ModeFrom : unsigned char {
  /// Exactly WriteOptions::mode, whatever the umask (the default, and the
  /// Go service's rule).
  given,
  /// The existing target's mode, its owner and group where the process may
  /// give them (root may; a normal user keeps the group where they are in
  /// it, and their own user, silently; a group they are not in becomes
  /// their own only where that gives no one other access: the mode gives
  /// the group what it gives the others, without set-group-ID, and the
  /// target has no ACL; otherwise Step::set_permissions, EPERM, the target
  /// untouched), its access ACL and its security
  /// context (Linux: the attributes system.posix_acl_access and
  /// security.selinux; a target without an ACL gives a file without one,
  /// whatever the directory's default ACL). The target is opened read-only
  /// when the transaction begins, to read them from the very file whose
  /// mode was taken, and copied before the rename: a target that cannot be
  /// opened, or an attribute that cannot be read or set, fails the save
  /// (Step::set_permissions, the target untouched) rather than leave the
  /// file open wider than it was. A missing target (or a symlink, which is
  /// replaced) gets WriteOptions::mode.
  existing,
  /// What open(2) gives a new file of WriteOptions::mode, as QSaveFile
  /// does: the mode filtered by the process umask (read from
  /// /proc/self/status: Linux 4.7 or later; elsewhere
  /// Step::set_permissions with ENOTSUP); in a directory with a default
  /// ACL, the umask ignored, as the kernel ignores it there, and that ACL,
  /// narrowed by the mode, given to the file as its access ACL (read and
  /// set at commit through the Fs attribute calls; an Fs without them
  /// applies the umask; a default ACL that cannot be read, or the access
  /// ACL set, fails the save at Step::set_permissions).
  umask,
};

/// How a file is written: AtomicWriter's write(), write_new() and begin().
struct WriteOptions {
  unsigned mode = 0644;            ///< the file's mode (see mode_from)
  bool create_directories = true;  ///< create missing parent directories, as mkdir -p
  ModeFrom mode_from = ModeFrom::given;
  /// A symlink at the target is replaced by the file (false, the default),
  /// or followed, and the file it leads to replaced in its own directory
  /// (true, as QSaveFile does). Each link is followed as the kernel follows
  /// one under fs.protected_symlinks, whatever that sysctl says: a link in
  /// a sticky, world-writable directory (/tmp) owned by neither the
  /// process's user nor the directory's owner is refused (check_path,
  /// EACCES), so that another user's link there cannot send the save
  /// elsewhere. A dangling or looping link is an error (check_path, ENOENT
  /// or ELOOP), as is an Fs without read_link and file_info_at (ENOTSUP).
  /// Paths only: an AtomicDirectory refuses it (EINVAL).
  bool follow_symlinks = false;
};

/// One replacement in progress: a temp file beside the target, open for
/// writing. commit() puts it in place; destroying it without a commit (or
/// calling discard()) removes the temp file and leaves the target untouched.
/// Move-only. Must not outlive the AtomicWriter (or AtomicDirectory, or
/// Batch) that began it.
///
/// Phases: open -> committed (commit() succeeded), or open -> failed (any
/// failure: the temp file is gone), or open -> discarded.
///
/// On Linux the temp file has no name until commit() (see docs/protocol.md):
/// nothing is in the directory meanwhile, so an empty directory stays empty
/// to rmdir, and a directory removed before the commit fails it (ENOENT).
/// After fork() one process commits and the other discards: both
/// committing make the second link the same file under a temp name again
/// and rename it onto itself, which leaves that name for the next sweep.
template <class SyncPolicy, class Fs>
class WriteTransaction {
 public:
  WriteTransaction(WriteTransaction&& other) noexcept;
  WriteTransaction& operator=(WriteTransaction&& other) noexcept;
  WriteTransaction(const WriteTransaction&) = delete;
  WriteTransaction& operator=(const WriteTransaction&) = delete;
  ~WriteTransaction();

  /// Appends bytes to the temp file. After a failure the transaction is
  /// over: the temp file is gone and every later call returns that failure.
  Status write(std::string_view data) noexcept;
  /// Sets the mode, syncs, closes and renames over the target, then syncs
  /// the directory, as the policy says. Only the first commit does work: a
  /// second (or one after discard()) is Step::invalid_use, EBADF, and one
  /// after a failure returns that failure. A transaction of a Batch is
  /// committed by Batch::commit, not here (Step::invalid_use, EPERM).
  Status commit() noexcept;
  /// Removes the temp file now; the target is untouched.
  void discard() noexcept;

  /// The temp file's name in the target's directory (".tmp-XXXXXX", or
  /// ".tmp-XXXXXX.N" in an AtomicDirectory), empty once the transaction is
  /// over, and while the temp file has no name (an unnamed file on Linux,
  /// named only by commit, right before its rename).
  std::string_view temp_name() const noexcept;
  /// The directory the temp file is in, and the target: the path's, or,
  /// under WriteOptions::follow_symlinks, that of the file the symlinks
  /// lead to (as the links spell it, not made canonical); "." for a bare
  /// name. With temp_name(), the temp file's path, for a signal handler
  /// that must remove it.
  std::string_view directory() const noexcept { return dir_for_messages(); }

 private:
  using FsRef = std::remove_reference_t<Fs>;
  // The library's handles reach a transaction only through this door.
  friend struct detail::TransactionSteps<WriteTransaction>;
  enum class Phase : unsigned char { open, committed, failed, discarded };
  // What commit() does to an existing target: replace it, or (for copies
  // that must never overwrite) fail with EEXIST.
  enum class Commit : unsigned char { replace, no_replace };

  explicit WriteTransaction(FsRef& fs) noexcept : fs_(fs) {}
  Status open(std::string_view path, const WriteOptions& options, Commit commit) noexcept;
  Status open_in(int dir_fd, std::string_view dir, std::string_view name,
                 const WriteOptions& options, Commit commit, detail::Claim& claim) noexcept;
  Status open_through_symlink(std::string_view path, const WriteOptions& options,
                              Commit commit) noexcept;
  int follow_link(char* at, const FileInfo& link) noexcept;
  Status refuse_link(std::string_view path, const char* at, int neg_errno) noexcept;
  Status check_target(const WriteOptions& options) noexcept;
  Status choose_mode(const WriteOptions& options, const FileInfo* existing) noexcept;
  Status make_parent_directories() noexcept;
  Status make_directory_level(std::size_t end) noexcept;
  Status sync_parent_of(std::size_t end) noexcept;
  std::size_t parent_end(std::size_t end) const noexcept;
  template <class Call>
  int on_prefix(std::size_t end, Call&& call) noexcept;
  Status create_temp_file() noexcept;
  int claim_temp_file(int fd) noexcept;
  Status name_unnamed_file() noexcept;
  // The steps of commit(), in order; a Batch takes them file by file.
  Status set_final_mode() noexcept;
  Status copy_attributes() noexcept;
  bool group_matters() const noexcept;
  Status mode_as_open() noexcept;
  Status open_source(const FileInfo& listed) noexcept;
  void start_writeback() noexcept;
  Status sync_file() noexcept;
  Status close_file() noexcept;
  Status put_in_place() noexcept;
  Status sync_directory() noexcept;
  Status fail(Step step, int neg_errno, std::string_view subject_dir,
              std::string_view subject_name = {}, const char* note = nullptr) noexcept;
  Status fail_on_temp(Step step, int neg_errno, const char* note = nullptr) noexcept;
  Status status_after_end() const noexcept;
  void take(WriteTransaction& other) noexcept;
  bool close_and_remove_temp() noexcept;
  std::string_view dir_for_messages() const noexcept;
  std::string_view dir_prefix() const noexcept;

  detail::Retrying<FsRef> fs_;  // every call, with the retry rule applied
  int dir_fd_ = -1;
  int fd_ = -1;
  int lock_fd_ = -1;                // keeps the temp file's lock from close() to rename()
  detail::Claim* claim_ = nullptr;  // an AtomicDirectory's: it protects the temp file
  unsigned perm_ = 0;
  bool keep_owner_ = false;  // ModeFrom::existing found a file: give its owner too
  int source_fd_ = -1;       // ModeFrom::existing: the target, read for its ACL and context
  bool target_acl_ = false;  // ModeFrom::existing: the target had an access ACL
  int umask_ = -1;           // ModeFrom::umask: the process umask, applied at commit
  std::uint32_t owner_ = 0, group_ = 0;
  Phase phase_ = Phase::open;
  Commit commit_ = Commit::replace;
  bool temp_exists_ = false;
  bool unnamed_ = false;     // fd_ is an unnamed file: no name (temp_exists_) until commit
  bool named_only_ = false;  // the temp file must have a name from the start (a claim)
  bool has_dir_ = false;
  bool own_dir_ = true;  // false: dir_fd_ is an AtomicDirectory's
  bool in_batch_ = false;
  bool own_name_ = false;   // the library's own file (a lock): its name is not refused
  bool dir_known_ = false;  // dir_device_ and dir_inode_ hold the directory's identity
  std::uint64_t dir_device_ = 0, dir_inode_ = 0;
  std::size_t dir_len_ = 0;
  std::size_t name_len_ = 0;
  std::size_t temp_len_ = 0;
  char temp_[40] = {};
  Status error_;
  // dir_ and name_ are NUL-terminated views into buf_: "dir\0name\0".
  char buf_[ATOMIC_STATE_PATH_MAX + 2];  // only the bytes in use are written
  const char* dir() const noexcept { return buf_; }
  const char* name() const noexcept { return buf_ + dir_len_ + 1; }
};

namespace detail {
/// A directory known by its device and inode, as opened.
struct DirectoryIdentity {
  std::uint64_t device = 0, inode = 0;
  bool operator==(const DirectoryIdentity& other) const noexcept {
    return device == other.device && inode == other.inode;
  }
};

/// The one door into a WriteTransaction for the library's own handles
/// (AtomicWriter, AtomicDirectory, Batch): how one is made and opened, the
/// steps of its commit, each callable alone so that a Batch can take them
/// file by file, and what a batch compares. Nothing else of a transaction
/// is reachable from outside it.
template <class Transaction>
struct TransactionSteps {
  using Commit = typename Transaction::Commit;
  using FsRef = typename Transaction::FsRef;

  static Transaction make(FsRef& fs) noexcept { return Transaction(fs); }
  static Status open(Transaction& t, std::string_view path, const WriteOptions& options,
                     Commit commit) noexcept {
    return t.open(path, options, commit);
  }
  /// Opens `t` for the file `name` of an open AtomicDirectory.
  template <class Directory>
  static Status open_in(Transaction& t, Directory& dir, std::string_view name,
                        const WriteOptions& options, Commit commit) noexcept {
    if (dir.dir_fd_ < 0)
      return Status(Step::invalid_use, std::make_error_code(std::errc::bad_file_descriptor), name,
                    {}, false, "the AtomicDirectory was moved from");
    return t.open_in(dir.dir_fd_, dir.path(), name, options, commit, *dir.claim_);
  }
  /// Gives an opened transaction's directory and temp file to an
  /// AtomicDirectory, as its claim; the transaction is then over.
  template <class Directory>
  static void hand_over_as_claim(Transaction& t, Directory& dir) noexcept {
    dir.dir_fd_ = std::exchange(t.dir_fd_, -1);
    dir.claim_fd_ = std::exchange(t.fd_, -1);
    std::memcpy(dir.claim_->name, t.temp_, sizeof dir.claim_->name);
    t.temp_exists_ = false;
    t.phase_ = Transaction::Phase::discarded;
  }
  /// Makes `t` (before open) create a named temp file, never an unnamed
  /// one: an AtomicDirectory's claim is that file, kept.
  static void keep_named(Transaction& t) noexcept { t.named_only_ = true; }
  /// Lets `t` (before open) write a file the library names itself (a run
  /// lock), past the refusal of the library's names.
  static void allow_own_name(Transaction& t) noexcept { t.own_name_ = true; }
  /// Marks `t` as one file of a batch: its own commit() then refuses.
  static void join_batch(Transaction& t) noexcept { t.in_batch_ = true; }
  /// Success while `t` is open, else why it is not.
  static Status still_open(const Transaction& t) noexcept {
    return t.phase_ == Transaction::Phase::open ? Status() : t.status_after_end();
  }

  // The steps of commit(), in order.
  static Status set_final_mode(Transaction& t) noexcept { return t.set_final_mode(); }
  static void start_writeback(Transaction& t) noexcept { t.start_writeback(); }
  static Status sync_file(Transaction& t) noexcept { return t.sync_file(); }
  static Status close_file(Transaction& t) noexcept { return t.close_file(); }
  static Status put_in_place(Transaction& t) noexcept { return t.put_in_place(); }
  static Status sync_directory(Transaction& t) noexcept { return t.sync_directory(); }

  /// Learns which directory `t` (open) puts its file into: the device and
  /// inode of the descriptor it holds, never its path's text, which may
  /// name another directory by now (renamed away and made again, a volume
  /// mounted over it, a relative path after a chdir). Taken from `known`
  /// when that one holds the very same descriptor (a handle's); one
  /// file_info call otherwise. When that call fails the directory stays
  /// unknown: the same as no other, so it is synced on its own.
  static void learn_directory(Transaction& t, const Transaction* known) noexcept {
    if (known != nullptr && known->dir_known_ && known->dir_fd_ == t.dir_fd_) {
      t.dir_known_ = true;
      t.dir_device_ = known->dir_device_;
      t.dir_inode_ = known->dir_inode_;
      return;
    }
    FileInfo info;
    t.dir_known_ = t.fs_.file_info(t.dir_fd_, info) >= 0;
    t.dir_device_ = info.device;
    t.dir_inode_ = info.inode;
  }
  /// Whether two transactions put their files into the same directory: the
  /// same descriptor, or the same device and inode (learn_directory).
  static bool same_directory(const Transaction& a, const Transaction& b) noexcept {
    if (a.dir_fd_ >= 0 && a.dir_fd_ == b.dir_fd_) return true;
    return a.dir_known_ && b.dir_known_ && a.dir_device_ == b.dir_device_ &&
           a.dir_inode_ == b.dir_inode_;
  }
  /// Whether two transactions replace the same target: the same name in
  /// the same directory (same_directory), whatever the paths' spellings.
  static bool same_target(const Transaction& a, const Transaction& b) noexcept {
    return same_directory(a, b) && name_of(a) == name_of(b);
  }
  /// The descriptor of `t`'s directory, for a sweep of it.
  static int directory_descriptor(const Transaction& t) noexcept { return t.dir_fd_; }
  /// `t`'s directory, for messages ("." for a bare file name).
  static std::string_view directory_path(const Transaction& t) noexcept {
    return t.dir_for_messages();
  }
  /// Whether `t` saves through an AtomicDirectory, whose open swept.
  static bool through_handle(const Transaction& t) noexcept { return t.claim_ != nullptr; }
  /// The identity of `t`'s directory (learn_directory), when known.
  static bool directory_identity(const Transaction& t, DirectoryIdentity& out) noexcept {
    if (!t.dir_known_) return false;
    out = DirectoryIdentity{t.dir_device_, t.dir_inode_};
    return true;
  }
  /// "dir/name", for messages.
  static JoinedPath target(const Transaction& t) noexcept {
    return JoinedPath(t.dir_prefix(), std::string_view(t.name(), t.name_len_));
  }

 private:
  static std::string_view name_of(const Transaction& t) noexcept {
    return std::string_view(t.name(), t.name_len_);
  }
};
}  // namespace detail

/// What a sweep of stale temp files did.
struct TempSweep {
  std::size_t removed = 0;      ///< stale temp files removed
  std::size_t in_use = 0;       ///< left: a live save holds it (or the filesystem has no locks)
  std::size_t not_regular = 0;  ///< left: named like a temp file, but not a regular file
  /// left: another user's (a sweep removes only the temp files of the
  /// user it runs as, root included, where the Fs has user_id), or one the
  /// system refused to open or remove (EACCES, EPERM). Never a sweep's
  /// failure.
  std::size_t not_permitted = 0;
};

/// Replaces files atomically, durably as `SyncPolicy` says, making every
/// system call through `Fs` (a value, or a reference such as `MyFs&` to
/// share a stateful policy with the caller).
template <class SyncPolicy = FullSync, class Fs = PosixFs>
class AtomicWriter {
  static_assert(is_sync_policy_v<SyncPolicy>,
                "AtomicWriter: SyncPolicy needs `static constexpr SyncLevel "
                "file` and `static constexpr bool directory` (see FullSync)");
  static_assert(is_filesystem_v<Fs>,
                "AtomicWriter: Fs needs every call of PosixFs that a save makes "
                "(open_directory, make_directory, create_file, try_lock, duplicate, "
                "write, set_mode, sync_full, sync_data, close, rename, unlink, "
                "file_info, entry_info)");

 public:
  using Transaction = WriteTransaction<SyncPolicy, Fs>;

  AtomicWriter() = default;
  explicit AtomicWriter(Fs fs) noexcept : fs_(static_cast<Fs&&>(fs)) {}

  /// Replaces `path` with `data`, mode `perm` (exact, umask ignored),
  /// creating missing parent directories (0755 less the umask, but always
  /// with owner write and search, as `mkdir -p` does), but none named as a
  /// SnapshotWriter names its generations (gen-N, .building-gen-N,
  /// .removing-gen-N), which an open() or prune of its parent, should that
  /// be a snapshot directory, would remove with the file: such a missing
  /// directory is refused (Step::create_directory, EINVAL) before anything
  /// is made. A directory of such a name that exists is written into as any
  /// other; inside a snapshot directory its files are the snapshot's (see
  /// SnapshotWriter). A directory, FIFO,
  /// socket or device at `path` is refused; a symlink there is replaced.
  /// A file name the library gives files of its own is refused
  /// (Step::check_path, EINVAL) before anything is created, here and at
  /// every entry point (write_new, begin, AtomicDirectory, Batch): a temp
  /// file's ".tmp-" and six letters or digits (".tmp-backup" among them),
  /// with ".N" after it (an AtomicDirectory's), ".current.tmp-XXXXXX" (a
  /// snapshot's link), which a sweep would later remove, ".NAME.lock"
  /// (a run lock's, ".snapshot.lock"), which a replacement would break, and
  /// "NAME.corrupt-STAMP" with an optional ".N" (a StateManager's corrupt
  /// copy, whatever its state file's name), which its load prunes. A
  /// "NAME.prev" is written: it is a StateManager's previous state only
  /// under keep_previous, whose saves replace it; write no such name beside
  /// a state file of that NAME.
  Status write(PathView path, std::string_view data, unsigned perm = 0644) noexcept;
  /// The same, as `options` say; with create_directories false a missing
  /// directory is an error (Step::open_directory, ENOENT).
  Status write(PathView path, std::string_view data, const WriteOptions& options) noexcept;

  /// Starts a streaming replacement of `path`: checks it, creates the
  /// parent directories and the temp file, and returns the open
  /// transaction.
  Result<Transaction> begin(PathView path, unsigned perm = 0644) & noexcept;
  Result<Transaction> begin(PathView path, const WriteOptions& options) & noexcept;
  /// A transaction keeps using its writer's Fs: a temporary writer would
  /// leave it dangling.
  Result<Transaction> begin(PathView path, unsigned perm = 0644) && = delete;
  Result<Transaction> begin(PathView path, const WriteOptions& options) && = delete;

  /// Removes the temp files that saves killed mid-way left in `dir`: regular
  /// files named `.tmp-` and six letters or digits that no live save holds
  /// (each save holds a lock on its own temp file while it has a name,
  /// which the kernel drops when the process dies), and that belong to the
  /// user it runs as. One
  /// pass (allocating nothing); never waits for anything; entries that are
  /// not regular files, and another user's, are left and counted. A missing
  /// directory has nothing to remove. Needs the reading calls of the Fs as
  /// well.
  /// Failures: check_path, open_directory, remove_temp_file naming the file.
  Result<TempSweep> remove_stale_temp_files(PathView dir) noexcept;

  /// The filesystem policy (the caller's own object when Fs is a reference).
  std::remove_reference_t<Fs>& filesystem() noexcept { return fs_; }

  /// Creates `path` with `data` as write() does, but fails with EEXIST
  /// (Step::rename) instead of replacing a file already there.
  Status write_new(PathView path, std::string_view data, unsigned perm = 0644) noexcept;
  Status write_new(PathView path, std::string_view data, const WriteOptions& options) noexcept;

 private:
  using Steps = detail::TransactionSteps<Transaction>;
  // write() and write_new(): one whole buffer, replacing or not.
  Status write_whole(PathView path, std::string_view data, const WriteOptions& options,
                     typename Steps::Commit commit) noexcept;

  Fs fs_;
};

/// `AtomicWriter<>{}.write(path, data, perm)`: durable, atomic replacement.
Status write_atomic(PathView path, std::string_view data, unsigned perm = 0644) noexcept;

// ========================================================= implementation ====

// --------------------------------------------------------- WriteTransaction --

namespace detail {
/// Writes every byte, looping over short writes and EINTR. Returns 0 or
/// -errno; a write that keeps making no progress ends in -EIO with `stalled`.
template <class Fs>
int write_all(Fs& fs, int fd, const char* data, std::size_t size, bool& stalled) noexcept {
  long stalls = 0;
  while (size > 0) {
    const ssize_t n = fs.write(fd, data, size);
    if (n > 0 && static_cast<std::size_t>(n) <= size) {
      data += n;
      size -= static_cast<std::size_t>(n);
      stalls = 0;
    } else if (n == 0 || n == -EINTR) {
      if (++stalls > ATOMIC_STATE_EINTR_RETRY_LIMIT) {
        stalled = n == 0;
        return n == 0 ? -EIO : -EINTR;
      }
    } else {
      return n < 0 ? static_cast<int>(n) : -EIO;  // more than asked: broken Fs
    }
  }
  return 0;
}

/// Calls `attempt` (a creation or a link under a fresh temp name) until it
/// is not -EEXIST, a bounded number of times: its last result.
template <class Attempt>
int under_fresh_names(Attempt&& attempt) noexcept {
  int r = -EEXIST;
  for (int n = 0; n < ATOMIC_STATE_TEMP_NAME_ATTEMPTS && r == -EEXIST; ++n) r = attempt();
  return r;
}
constexpr const char* kEveryNameTaken = "every temp name tried was taken";

/// Six letters or digits after ".tmp-". Names need not be secret: the file
/// is created with O_EXCL|O_NOFOLLOW, so a planted name only costs a retry.
/// The clock is mixed in on every call so that forked processes, which
/// share the generator's state, still draw different names.
inline void make_temp_name(char* out) noexcept {  // 12 bytes, NUL included
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::uint64_t state =
      reinterpret_cast<std::uintptr_t>(&state) * 0x9E3779B97F4A7C15ull;
  timespec now{};
  (void)::clock_gettime(CLOCK_MONOTONIC, &now);
  state += 0x9E3779B97F4A7C15ull ^ (static_cast<std::uint64_t>(now.tv_sec) * 1000000000u +
                                    static_cast<std::uint64_t>(now.tv_nsec));
  std::uint64_t x = state;  // splitmix64 finaliser
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  std::memcpy(out, ".tmp-", 5);
  for (int i = 5; i < 11; ++i, x /= 62) out[i] = alphabet[x % 62];
  out[11] = '\0';
}

/// The claim of an AtomicDirectory: an empty temp file, locked for the
/// handle's life, whose name starts the names of the handle's temp files
/// (".tmp-XXXXXX.1", ".tmp-XXXXXX.2", ...). One lock held throughout
/// protects them all from a sweep, so a save takes no lock of its own.
struct Claim {
  char name[12] = {};
  std::atomic<std::uint64_t> next{0};

  /// The next temp file's name, into `out`; its length.
  std::size_t next_name(char (&out)[40]) noexcept {
    std::memcpy(out, name, 11);
    out[11] = '.';
    char* const end = std::to_chars(out + 12, out + 39, next.fetch_add(1) + 1).ptr;
    *end = '\0';
    return static_cast<std::size_t>(end - out);
  }
};
}  // namespace detail

namespace detail {
// Whether `name` starts as make_temp_name's names do: ".tmp-" and six of
// [0-9A-Za-z].
inline bool starts_as_temp_name(std::string_view name) noexcept {
  if (name.size() < 11 || name.substr(0, 5) != ".tmp-") return false;
  for (std::size_t i = 5; i < 11; ++i) {
    const char c = name[i];  // not isalnum: the locale must not widen the set
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) return false;
  }
  return true;
}

/// What a name in a directory is to the library: a name it gives files of
/// its own, which its sweeps remove or its locks use, or none. The one rule
/// for both: a sweep removes what this calls a temp file, and no save
/// writes a target this calls anything but `none`.
enum class OwnedName : unsigned char {
  none,
  temp,          ///< ".tmp-XXXXXX": a save's temp file, or a directory's claim
  claimed_temp,  ///< ".tmp-XXXXXX.N": a temp file of an AtomicDirectory
  link_temp,     ///< ".current.tmp-XXXXXX": a snapshot's temp link
  lock,          ///< ".NAME.lock": a run lock (StateManager), ".snapshot.lock"
  corrupt_copy,  ///< "NAME.corrupt-STAMP[.N]": a StateManager's corrupt copy
};

// Whether `s` is one or more digits, the first optionally after a '-'.
inline bool is_decimal(std::string_view s, bool signed_ok) noexcept {
  if (signed_ok && !s.empty() && s[0] == '-') s.remove_prefix(1);
  if (s.empty()) return false;
  for (const char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

inline OwnedName owned_name(std::string_view name) noexcept {
  if (starts_as_temp_name(name)) {
    if (name.size() == 11) return OwnedName::temp;
    if (name[11] != '.' || name.size() == 12 || name.size() > 32) return OwnedName::none;
    for (const char c : name.substr(12))
      if (c < '0' || c > '9') return OwnedName::none;
    return OwnedName::claimed_temp;
  }
  if (name.size() == 19 && name.substr(0, 8) == ".current" && starts_as_temp_name(name.substr(8)))
    return OwnedName::link_temp;
  if (name.size() > 6 && name[0] == '.' && name.substr(name.size() - 5) == ".lock")
    return OwnedName::lock;
  // A StateManager's corrupt copy: "<file name>.corrupt-<stamp>[.<n>]", a
  // shape its load prunes whatever the state file's name (a writer does
  // not know it), so every such name is the library's.
  if (const std::size_t at = name.rfind(".corrupt-"); at != std::string_view::npos && at > 0) {
    const std::string_view rest = name.substr(at + 9);
    const std::size_t dot = rest.find('.');
    if (is_decimal(rest.substr(0, dot), true) &&
        (dot == std::string_view::npos || is_decimal(rest.substr(dot + 1), false)))
      return OwnedName::corrupt_copy;
  }
  return OwnedName::none;
}

/// The generation number of a name "gen-N" (N a decimal without leading
/// zeros, at least 1), or 0 when `name` is not one: a SnapshotWriter's.
inline std::uint64_t generation_of(std::string_view name) noexcept {
  if (name.size() < 5 || name.size() > 24 || name.substr(0, 4) != "gen-" || name[4] == '0')
    return 0;
  std::uint64_t n = 0;
  const char* const end = name.data() + name.size();
  const auto [at, error] = std::from_chars(name.data() + 4, end, n);
  return error == std::errc() && at == end ? n : 0;
}

/// Whether `name` is one a SnapshotWriter's open or prune removes as a
/// directory: "gen-N", ".building-gen-N", ".removing-gen-N". No save makes
/// a directory of such a name (make_parent_directories).
inline bool generation_shaped(std::string_view name) noexcept {
  for (const std::string_view prefix :
       {std::string_view(".building-"), std::string_view(".removing-")})
    if (name.substr(0, prefix.size()) == prefix)
      return generation_of(name.substr(prefix.size())) != 0;
  return generation_of(name) != 0;
}

/// Why a save must not write the target `name`, or null: a name the library
/// owns (owned_name), which a later sweep would remove or a lock uses.
inline const char* owned_name_problem(std::string_view name) noexcept {
  switch (owned_name(name)) {
    case OwnedName::none:
      return nullptr;
    case OwnedName::lock:
      return "the name is one the library gives its lock files (\".NAME.lock\"); a file "
             "written over a lock breaks it";
    case OwnedName::corrupt_copy:
      return "the name is one the library gives its corrupt copies (\"NAME.corrupt-STAMP\", "
             "\"NAME.corrupt-STAMP.N\"), which a StateManager's load removes past the newest "
             "StateOptions::corrupt_copies";
    default:
      return "the name is one the library gives its temp files (\".tmp-XXXXXX\", "
             "\".tmp-XXXXXX.N\", \".current.tmp-XXXXXX\"), which its sweep removes";
  }
}
}  // namespace detail

// Takes over other's temp file and descriptors; other is left discarded.
template <class S, class Fs>
void WriteTransaction<S, Fs>::take(WriteTransaction& other) noexcept {
  fs_ = other.fs_;
  dir_fd_ = std::exchange(other.dir_fd_, -1);
  fd_ = std::exchange(other.fd_, -1);
  lock_fd_ = std::exchange(other.lock_fd_, -1);
  claim_ = other.claim_;
  own_dir_ = other.own_dir_;
  in_batch_ = other.in_batch_;
  own_name_ = other.own_name_;
  dir_known_ = other.dir_known_;
  dir_device_ = other.dir_device_;
  dir_inode_ = other.dir_inode_;
  temp_len_ = other.temp_len_;
  perm_ = other.perm_;
  keep_owner_ = other.keep_owner_;
  source_fd_ = std::exchange(other.source_fd_, -1);
  target_acl_ = other.target_acl_;
  umask_ = other.umask_;
  owner_ = other.owner_;
  group_ = other.group_;
  phase_ = std::exchange(other.phase_, Phase::discarded);
  commit_ = other.commit_;
  temp_exists_ = std::exchange(other.temp_exists_, false);
  unnamed_ = other.unnamed_;
  named_only_ = other.named_only_;
  has_dir_ = other.has_dir_;
  dir_len_ = other.dir_len_;
  name_len_ = other.name_len_;
  error_ = std::move(other.error_);
  std::memcpy(temp_, other.temp_, sizeof temp_);
  std::memcpy(buf_, other.buf_, dir_len_ + 1 + name_len_ + 1);
}

template <class S, class Fs>
WriteTransaction<S, Fs>::WriteTransaction(WriteTransaction&& other) noexcept : fs_(other.fs_) {
  take(other);
}

template <class S, class Fs>
WriteTransaction<S, Fs>& WriteTransaction<S, Fs>::operator=(WriteTransaction&& other) noexcept {
  if (this != &other) {
    discard();
    take(other);
  }
  return *this;
}

template <class S, class Fs>
WriteTransaction<S, Fs>::~WriteTransaction() {
  discard();
}

template <class S, class Fs>
std::string_view WriteTransaction<S, Fs>::temp_name() const noexcept {
  return temp_exists_ ? std::string_view(temp_, temp_len_) : std::string_view();
}

// The directory as messages show it; "." for a bare file name.
template <class S, class Fs>
std::string_view WriteTransaction<S, Fs>::dir_for_messages() const noexcept {
  return has_dir_ ? std::string_view(dir(), dir_len_) : std::string_view(".");
}

// The directory to put before a name in messages; empty for a bare file
// name, so that "state.json" is not shown as "./state.json".
template <class S, class Fs>
std::string_view WriteTransaction<S, Fs>::dir_prefix() const noexcept {
  return has_dir_ ? std::string_view(dir(), dir_len_) : std::string_view();
}

// Closes what is open and removes the temp file; false when the temp file
// could not be removed. Close errors are not reported: the descriptors are
// released either way and nothing written depends on them any more. The
// temp file's name goes before its lock (held by fd_ or lock_fd_), so no
// sweep can take it for stale; an unnamed file goes with its descriptor.
template <class S, class Fs>
bool WriteTransaction<S, Fs>::close_and_remove_temp() noexcept {
  bool removed = true;
  if (temp_exists_) {
    removed = fs_.unlink(dir_fd_, temp_) >= 0;
    temp_exists_ = false;
  }
  if (fd_ >= 0) (void)fs_.close(std::exchange(fd_, -1));
  if (lock_fd_ >= 0) (void)fs_.close(std::exchange(lock_fd_, -1));
  if (source_fd_ >= 0) (void)fs_.close(std::exchange(source_fd_, -1));
  const int dir_fd = std::exchange(dir_fd_, -1);
  if (dir_fd >= 0 && own_dir_) (void)fs_.close(dir_fd);
  return removed;
}

// Ends the transaction with the failure of `step` on the path
// subject_dir/subject_name: releases everything, then records and returns
// the Status, which names the target too. Every failure of a save goes
// through here, and nothing here allocates but the Status's own text.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::fail(Step step, int neg_errno, std::string_view subject_dir,
                                     std::string_view subject_name, const char* note) noexcept {
  if (phase_ == Phase::open) phase_ = Phase::failed;
  const bool temp_removed = close_and_remove_temp();
  const bool replaced = phase_ == Phase::committed;
  detail::JoinedPath subject(subject_dir, subject_name);
  detail::JoinedPath target(dir_prefix(), std::string_view(name(), name_len_));
  error_ =
      Status(step, detail::system_error(neg_errno), subject.view(), target.view(), replaced, note);
  if (!temp_removed) error_ = error_.with_note("the temp file could not be removed");
  return error_;
}

// A failure of the temp file, named by its name; while it has none (an
// unnamed file before its link), by its directory.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::fail_on_temp(Step step, int neg_errno, const char* note) noexcept {
  if (unnamed_ && !temp_exists_) return fail(step, neg_errno, dir_for_messages(), {}, note);
  return fail(step, neg_errno, dir_prefix(), std::string_view(temp_, temp_len_), note);
}

template <class S, class Fs>
Status WriteTransaction<S, Fs>::status_after_end() const noexcept {
  if (!error_.ok()) return error_;
  return Status(Step::invalid_use, std::make_error_code(std::errc::bad_file_descriptor), {}, {},
                false,
                phase_ == Phase::committed ? "the transaction was already committed"
                                           : "the transaction was discarded");
}

template <class S, class Fs>
void WriteTransaction<S, Fs>::discard() noexcept {
  if (phase_ == Phase::open) phase_ = Phase::discarded;
  (void)close_and_remove_temp();  // after a commit: the descriptors it still holds
}

template <class S, class Fs>
Status WriteTransaction<S, Fs>::open(std::string_view path, const WriteOptions& options,
                                     Commit commit) noexcept {
  const unsigned perm = options.mode;
  const auto invalid = [&](std::errc code, const char* why) {
    phase_ = Phase::failed;
    error_ = Status(Step::check_path, std::make_error_code(code), path, path, false, why);
    return error_;
  };
  if (perm > 07777) return invalid(std::errc::invalid_argument, "mode above 07777");
  if (path.empty()) return invalid(std::errc::invalid_argument, "empty path");
  std::errc unusable{};
  if (const char* why = detail::path_problem(path, unusable)) return invalid(unusable, why);
  if (options.follow_symlinks) return open_through_symlink(path, options, commit);
  const std::size_t slash = path.rfind('/');
  const std::string_view base = slash == std::string_view::npos ? path : path.substr(slash + 1);
  if (base.empty() || base == "." || base == "..")
    return invalid(std::errc::is_a_directory, "the path names a directory");
  // Caught here rather than at the rename, after every byte was written.
  if (base.size() > ATOMIC_STATE_NAME_MAX)
    return invalid(std::errc::filename_too_long, "file name too long");
  if (!own_name_)
    if (const char* why = detail::owned_name_problem(base))
      return invalid(std::errc::invalid_argument, why);

  std::string_view parent = ".";
  has_dir_ = slash != std::string_view::npos;
  if (has_dir_) {
    parent = path.substr(0, slash);
    while (parent.size() > 1 && parent.back() == '/') parent.remove_suffix(1);
    if (parent.empty()) parent = "/";
  }
  perm_ = perm;
  commit_ = commit;
  dir_len_ = parent.size();
  name_len_ = base.size();
  std::memcpy(buf_, parent.data(), dir_len_);
  buf_[dir_len_] = '\0';
  std::memcpy(buf_ + dir_len_ + 1, base.data(), name_len_);
  buf_[dir_len_ + 1 + name_len_] = '\0';

  dir_fd_ = fs_.open_directory(dir());
  if (dir_fd_ == -ENOENT && options.create_directories) {
    dir_fd_ = -1;
    if (Status made = make_parent_directories(); !made) return made;
    dir_fd_ = fs_.open_directory(dir());
  }
  if (dir_fd_ < 0)
    return fail(Step::open_directory, std::exchange(dir_fd_, -1), dir_for_messages());
  if (Status usable = check_target(options); !usable) return usable;
  return create_temp_file();
}

// Opens the transaction in an AtomicDirectory's directory: dir_fd is
// borrowed, `dir` names it in messages, and the claim protects the temp
// file, which takes no lock of its own.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::open_in(int dir_fd, std::string_view dir, std::string_view name,
                                        const WriteOptions& options, Commit commit,
                                        detail::Claim& claim) noexcept {
  const auto invalid = [&](std::errc code, const char* why) {
    phase_ = Phase::failed;
    const detail::JoinedPath path(dir, name);
    error_ =
        Status(Step::check_path, std::make_error_code(code), path.view(), path.view(), false, why);
    return error_;
  };
  if (options.mode > 07777) return invalid(std::errc::invalid_argument, "mode above 07777");
  if (options.follow_symlinks)
    return invalid(std::errc::invalid_argument,
                   "WriteOptions::follow_symlinks needs a path, not an AtomicDirectory");
  if (name.empty() || name.find('/') != std::string_view::npos)
    return invalid(std::errc::invalid_argument, "not a name in the directory (empty, or a '/')");
  if (name.find('\0') != std::string_view::npos)
    return invalid(std::errc::invalid_argument, "name contains a NUL byte");
  if (name == "." || name == "..")
    return invalid(std::errc::is_a_directory, "the path names a directory");
  if (name.size() > ATOMIC_STATE_NAME_MAX)
    return invalid(std::errc::filename_too_long, "file name too long");
  if (dir.size() + 1 + name.size() >= ATOMIC_STATE_PATH_MAX)
    return invalid(std::errc::filename_too_long, "path too long");
  if (const char* why = detail::owned_name_problem(name))
    return invalid(std::errc::invalid_argument, why);
  perm_ = options.mode;
  commit_ = commit;
  claim_ = &claim;
  own_dir_ = false;
  has_dir_ = true;
  dir_len_ = dir.size();  // within ATOMIC_STATE_PATH_MAX: the directory's own check
  name_len_ = name.size();
  std::memcpy(buf_, dir.data(), dir_len_);
  buf_[dir_len_] = '\0';
  std::memcpy(buf_ + dir_len_ + 1, name.data(), name_len_);
  buf_[dir_len_ + 1 + name_len_] = '\0';
  dir_fd_ = dir_fd;
  if (Status usable = check_target(options); !usable) return usable;
  return create_temp_file();
}

// The calls an option needs, where the Fs offers them.

namespace detail {
/// The most symlinks one save follows, as Linux's MAXSYMLINKS: more is a loop.
constexpr int kMaxSymlinkHops = 40;

/// Whether the rule of Linux's fs.protected_symlinks forbids `follower` to
/// follow `link`, a symlink in the directory `dir`: a link in a sticky,
/// world-writable directory is followed only by its owner, or when the
/// directory's owner owns it too. Applied whatever the sysctl says.
inline bool protected_symlink(const FileInfo& link, const FileInfo& dir,
                              std::uint32_t follower) noexcept {
  return (dir.mode & 01002u) == 01002u && link.owner != follower && link.owner != dir.owner;
}
}  // namespace detail

// WriteOptions::follow_symlinks: the symlinks at the end of the path are
// followed one by one, each checked as the kernel checks a link it follows,
// and the file the last leads to is the target, in its own directory. The
// directories on the way are the kernel's to resolve, as in any path.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::open_through_symlink(std::string_view path,
                                                     const WriteOptions& options,
                                                     Commit commit) noexcept {
  WriteOptions plain = options;
  plain.follow_symlinks = false;
  char at[ATOMIC_STATE_PATH_MAX];  // path_problem checked that it fits
  std::memcpy(at, path.data(), path.size());
  at[path.size()] = '\0';
  for (int hops = 0;; ++hops) {
    FileInfo link;
    int r = fs_.entry_info(AT_FDCWD, at, link);
    if ((r < 0 && hops == 0) || (r >= 0 && link.type != FileType::symlink))
      return open(at, plain, commit);  // a missing target is made; open reports the rest
    if (r >= 0) r = hops == detail::kMaxSymlinkHops ? -ELOOP : follow_link(at, link);
    if (r < 0) return refuse_link(path, at, r);
  }
}

// Replaces `at`, the path of the symlink `link`, with the path it leads to:
// 0, or -errno (-EACCES: the link is one fs.protected_symlinks guards).
template <class S, class Fs>
int WriteTransaction<S, Fs>::follow_link(char* at, const FileInfo& link) noexcept {
  if constexpr (!detail::has_link_reading<FsRef>::value) {
    (void)at, (void)link;
    return -ENOTSUP;
  } else {
    const char* const slash = std::strrchr(at, '/');
    const std::size_t name_at = slash == nullptr ? 0 : static_cast<std::size_t>(slash - at) + 1;
    char dir[ATOMIC_STATE_PATH_MAX];  // the link's directory: "/" for "/name"
    const std::size_t dir_len = slash == nullptr ? 1 : name_at > 1 ? name_at - 1 : 1;
    std::memcpy(dir, slash == nullptr ? "." : at, dir_len);
    dir[dir_len] = '\0';
    FileInfo parent;
    const int r = fs_.file_info_at(AT_FDCWD, dir, parent);
    if (r < 0) return r;
    std::uint32_t follower = static_cast<std::uint32_t>(-1);  // unknown: nobody's
    if constexpr (detail::has_user_id<FsRef>::value) follower = fs_.user_id();
    if (detail::protected_symlink(link, parent, follower)) return -EACCES;
    char to[ATOMIC_STATE_PATH_MAX];
    const ssize_t n = fs_.read_link(AT_FDCWD, at, to, sizeof to);
    if (n <= 0) return n < 0 ? static_cast<int>(n) : -ENOENT;
    const std::size_t keep = to[0] == '/' ? 0 : name_at;  // "dir/" before a relative one
    if (keep + static_cast<std::size_t>(n) >= ATOMIC_STATE_PATH_MAX) return -ENAMETOOLONG;
    std::memcpy(at + keep, to, static_cast<std::size_t>(n));
    at[keep + static_cast<std::size_t>(n)] = '\0';
    return 0;
  }
}

// Fails the transaction on the symlink `at` that could not be followed.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::refuse_link(std::string_view path, const char* at,
                                            int neg_errno) noexcept {
  const char* note = "the symlink at the target leads to no file (dangling, or a loop)";
  if (neg_errno == -ENOTSUP)
    note = "WriteOptions::follow_symlinks: the Fs has no read_link and file_info_at";
  else if (neg_errno == -EACCES)
    note =
        "not followed, as fs.protected_symlinks would not: a symlink in a sticky, "
        "world-writable directory is followed only by its owner, or when the directory's "
        "owner owns it (or a directory on the way is not searchable)";
  phase_ = Phase::failed;
  error_ = Status(Step::check_path, detail::system_error(neg_errno), at, path, false, note);
  return error_;
}

// Refuses, before a byte is written, a target the rename could not replace
// (a directory) or must not (a FIFO, socket or device: replacing one with a
// regular file breaks whoever uses it). A symlink is replaced, not followed.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::check_target(const WriteOptions& options) noexcept {
  FileInfo info;
  const int r = fs_.entry_info(dir_fd_, name(), info);
  if (r == -ENOENT) return choose_mode(options, nullptr);
  const std::string_view target(name(), name_len_);
  if (r < 0) return fail(Step::check_path, r, dir_prefix(), target);
  if (info.type == FileType::directory)
    return fail(Step::check_path, -EISDIR, dir_prefix(), target, "the target is a directory");
  if (info.type == FileType::fifo || info.type == FileType::other)
    return fail(Step::check_path, -EINVAL, dir_prefix(), target,
                info.type == FileType::fifo
                    ? "the target is a FIFO, not a regular file"
                    : "the target is a device or socket, not a regular file");
  return choose_mode(options, info.type == FileType::regular ? &info : nullptr);
}

// The final mode, decided once the target has been looked at.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::choose_mode(const WriteOptions& options,
                                            const FileInfo* existing) noexcept {
  perm_ = options.mode;
  keep_owner_ = false;
  umask_ = -1;
  if (options.mode_from == ModeFrom::existing && existing != nullptr) {
    perm_ = existing->mode;
    keep_owner_ = detail::has_set_owner<FsRef>::value;
    owner_ = existing->owner;
    group_ = existing->group;
    if constexpr (detail::has_attributes<FsRef>::value)
      if (Status opened = open_source(*existing); !opened) return opened;
  } else if (options.mode_from == ModeFrom::umask) {
    int mask = -ENOTSUP;
    if constexpr (detail::has_process_umask<FsRef>::value) mask = fs_.process_umask();
    if (mask < 0)
      return fail(Step::set_permissions, mask, dir_prefix(), std::string_view(name(), name_len_),
                  "ModeFrom::umask: the process umask cannot be read here");
    umask_ = mask;  // applied at commit, unless the directory has a default ACL
  }
  return {};
}

// ModeFrom::existing: opens the target read-only, so that its ACL and
// security context are read at commit from the very file whose mode and
// owner were taken (`listed`). Without it they could not be read, and the
// new file could end up open wider than the target: refused.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::open_source(const FileInfo& listed) noexcept {
  const std::string_view target(name(), name_len_);
  const int fd = fs_.open_file(dir_fd_, name());
  if (fd < 0)
    return fail(Step::set_permissions, fd, dir_prefix(), target,
                "ModeFrom::existing: the target cannot be opened to read its ACL and security "
                "context; not replaced, rather than with wider permissions");
  source_fd_ = fd;
  FileInfo opened;
  const int r = fs_.file_info(fd, opened);
  if (r < 0) return fail(Step::check_path, r, dir_prefix(), target);
  if (opened.device != listed.device || opened.inode != listed.inode)
    return fail(Step::check_path, -EAGAIN, dir_prefix(), target,
                "the target was replaced while it was examined");
  return {};
}

// mkdir -p of dir(): walks up to the deepest existing ancestor, then creates
// each missing level downward, syncing the directory that gained an entry so
// that a first save into a new tree is as durable as any other.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::make_parent_directories() noexcept {
  const char* const path = buf_;  // dir() is NUL-terminated at dir_len_
  std::size_t end = dir_len_;
  // No level is made under a name a SnapshotWriter of its parent would
  // remove (gen-N, .building-gen-N, .removing-gen-N): each missing one
  // is refused before anything is made; an existing one is the user's.
  for (std::size_t level = dir_len_; level > 0; level = parent_end(level)) {
    std::size_t start = level;
    while (start > 0 && path[start - 1] != '/') --start;
    if (!detail::generation_shaped(std::string_view(path + start, level - start))) continue;
    FileInfo info;
    const int r = on_prefix(
        level, [&](const char* prefix) { return fs_.entry_info(AT_FDCWD, prefix, info); });
    if (r == -ENOENT)
      return fail(Step::create_directory, -EINVAL, std::string_view(path, level), {},
                  "a directory named like a snapshot's generation (gen-N, .building-gen-N, "
                  ".removing-gen-N) is not made: a SnapshotWriter of its parent would remove it");
  }
  const auto make = [&](std::size_t at) {
    return on_prefix(at, [&](const char* level) { return fs_.make_directory(level, 0755); });
  };

  // Upward: find the first level that exists or can be created.
  std::size_t levels_missing = 0;
  for (;;) {
    const int r = make(end);
    if (r == 0) {
      if (Status made = make_directory_level(end); !made) return made;
      break;
    }
    if (r == -EEXIST) break;
    if (r != -ENOENT) return fail(Step::create_directory, r, std::string_view(path, end));
    const std::size_t up = parent_end(end);
    if (up == 0) return fail(Step::create_directory, r, std::string_view(path, end));
    end = up;
    ++levels_missing;
  }
  // Downward: create each level below the one found.
  while (levels_missing-- > 0) {
    std::size_t next = end;
    while (next < dir_len_ && path[next] == '/') ++next;
    while (next < dir_len_ && path[next] != '/') ++next;
    end = next;
    const int r = make(end);
    if (r == -EEXIST) continue;  // another process was quicker: fine
    if (r != 0) return fail(Step::create_directory, r, std::string_view(path, end));
    if (Status made = make_directory_level(end); !made) return made;
  }
  return {};
}

// Finishes a level of dir() just created: gives it owner write and search
// if the umask took them (as mkdir -p does, or the next level and the temp
// file could not be created in it), then syncs its parent.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::make_directory_level(std::size_t end) noexcept {
  const std::string_view level(buf_, end);
  FileInfo info;
  int r = on_prefix(end, [&](const char* path) { return fs_.entry_info(AT_FDCWD, path, info); });
  if (r >= 0 && (info.mode & 0300u) != 0300u) {
    r = on_prefix(end, [&](const char* path) { return fs_.open_directory(path); });
    if (r >= 0) {
      const int fd = r;
      r = fs_.set_mode(fd, info.mode | 0300u);
      (void)fs_.close(fd);
    }
  }
  if (r < 0) return fail(Step::create_directory, r, level);
  return sync_parent_of(end);
}

// End of the level above the one of dir() ending at `end`; 0 when that level
// is the root or the working directory, which cannot be missing.
template <class S, class Fs>
std::size_t WriteTransaction<S, Fs>::parent_end(std::size_t end) const noexcept {
  std::size_t i = end;
  while (i > 0 && buf_[i - 1] != '/') --i;  // back over the last name
  while (i > 0 && buf_[i - 1] == '/') --i;  // back over its separators
  return i;
}

// Calls call(path) with dir() cut short at `end`: buf_ is NUL-terminated
// there for the call and restored after it.
template <class S, class Fs>
template <class Call>
int WriteTransaction<S, Fs>::on_prefix(std::size_t end, Call&& call) noexcept {
  const char saved = buf_[end];
  buf_[end] = '\0';
  const int r = call(static_cast<const char*>(buf_));
  buf_[end] = saved;
  return r;
}

// Syncs the directory holding the level of dir() that ends at `end`.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::sync_parent_of(std::size_t end) noexcept {
  if constexpr (!S::directory) {
    (void)end;
    return {};
  } else {
    std::size_t stop = parent_end(end);
    if (stop == 0 && buf_[0] == '/') stop = 1;  // the root is "/", not ""
    const bool relative = stop == 0;
    const auto sync_directory = [&](const char* parent) {
      int r = fs_.open_directory(parent);
      if (r >= 0) {
        const int fd = r;
        r = fs_.sync_full(fd);
        (void)fs_.close(fd);  // read-only descriptor: nothing to lose
      }
      return r;
    };
    const int r = relative ? sync_directory(".") : on_prefix(stop, sync_directory);
    if (r >= 0) return {};
    return fail(Step::sync_directory, r,
                relative ? std::string_view(".") : std::string_view(buf_, stop));
  }
}

// Creates the temp file: unnamed where the Fs and the filesystem can (a
// kill then leaves nothing, and nothing needs a lock until the name is
// given at commit); else under a fresh name, claimed. A name that is taken,
// or a file a sweep got hold of first, costs one more name.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::create_temp_file() noexcept {
  if constexpr (detail::has_unnamed_files<FsRef>::value)
    if (claim_ == nullptr && !named_only_) {
      const int fd = fs_.open_unnamed(dir_fd_, 0600);
      if (fd >= 0) {
        fd_ = fd;
        unnamed_ = true;
        return {};
      }
      if (fd != -EOPNOTSUPP)
        return fail(Step::create_temp_file, fd, dir_for_messages(), {},
                    "an unnamed temp file could not be made in the directory");
    }
  const int r = detail::under_fresh_names([&]() noexcept {
    if (claim_ != nullptr) {  // protected by the directory's claim: no lock of its own
      temp_len_ = claim_->next_name(temp_);
      const int fd = fs_.create_file(dir_fd_, temp_, 0600);
      if (fd >= 0) fd_ = fd;
      return fd < 0 ? fd : 0;
    }
    detail::make_temp_name(temp_);
    temp_len_ = 11;
    const int fd = fs_.create_file(dir_fd_, temp_, 0600);
    return fd < 0 ? fd : claim_temp_file(fd);
  });
  if (r < 0)
    return fail_on_temp(Step::create_temp_file, r,
                        r == -EEXIST ? detail::kEveryNameTaken : nullptr);
  temp_exists_ = true;
  return {};
}

// Locks the new temp file `fd`, so that no sweep takes it for the leftover
// of a killed save; the kernel drops the lock when this process dies. The
// file is 0600, so only its owner and root can open it to lock it at all,
// and nothing here ever waits for a lock. A sweep may have locked and
// removed the file between its creation and this lock: then it has no link
// left, and the name is given up (-EEXIST asks for another). A filesystem
// without locks only costs the protection.
template <class S, class Fs>
int WriteTransaction<S, Fs>::claim_temp_file(int fd) noexcept {
  const int locked = fs_.try_lock(fd);
  FileInfo info;
  const bool swept = locked == -EWOULDBLOCK || locked == -EAGAIN ||
                     (locked >= 0 && fs_.file_info(fd, info) >= 0 && info.links == 0);
  if (!swept) {
    fd_ = fd;
    return 0;
  }
  (void)fs_.close(fd);  // the sweep that holds it removes it
  return -EEXIST;
}

// Names the unnamed temp file, right before its rename: locked first, so
// that a sweep leaves the name alone (a name it removed could not be given
// again), under a fresh name. The descriptor, and so the lock, is kept
// until the rename is done.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::name_unnamed_file() noexcept {
  (void)fs_.try_lock(fd_);  // without locks, only the sweep's protection is lost
  const int r = detail::under_fresh_names([&]() noexcept {
    detail::make_temp_name(temp_);
    temp_len_ = 11;
    return fs_.link_unnamed(fd_, dir_fd_, temp_);
  });
  if (r < 0)
    return fail_on_temp(
        Step::create_temp_file, r,
        r == -EEXIST ? detail::kEveryNameTaken : "the unnamed temp file could not be given a name");
  temp_exists_ = true;
  return {};
}

template <class S, class Fs>
Status WriteTransaction<S, Fs>::write(std::string_view data) noexcept {
  if (phase_ != Phase::open) return status_after_end();
  bool stalled = false;
  const int r = detail::write_all(fs_, fd_, data.data(), data.size(), stalled);
  if (r < 0)
    return fail_on_temp(Step::write_data, r,
                        stalled ? "the write kept returning 0 bytes" : nullptr);
  return {};
}

template <class S, class Fs>
Status WriteTransaction<S, Fs>::commit() noexcept {
  if (phase_ != Phase::open) return status_after_end();
  if (in_batch_)
    return Status(Step::invalid_use, std::make_error_code(std::errc::operation_not_permitted), {},
                  {}, false, "the transaction is part of a batch: Batch::commit commits it");
  if (Status done = set_final_mode(); !done) return done;
  if (Status done = sync_file(); !done) return done;
  if (Status done = close_file(); !done) return done;
  if (Status done = put_in_place(); !done) return done;
  if constexpr (S::directory)
    if (Status done = sync_directory(); !done) return done;
  (void)close_and_remove_temp();
  return {};
}

// The mode is set before the sync so that the sync covers it too.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::set_final_mode() noexcept {
  // The owner first: a change of owner clears the set-user-ID bits.
  bool group_kept = true;
  if constexpr (detail::has_set_owner<FsRef>::value)
    if (keep_owner_) {
      int r = fs_.set_owner(fd_, owner_, group_);
      // Only root gives a file away; anyone keeps a group they are in.
      if (r == -EPERM) r = fs_.set_owner(fd_, static_cast<std::uint32_t>(-1), group_);
      if (r < 0 && r != -EPERM) return fail_on_temp(Step::set_permissions, r);
      group_kept = r >= 0;
    }
  // The attributes before the mode: fchmod has the last word on the
  // permission bits, which the ACL copied agrees with.
  if (source_fd_ >= 0)
    if (Status copied = copy_attributes(); !copied) return copied;
  if (umask_ >= 0)
    if (Status created = mode_as_open(); !created) return created;
  if (!group_kept && group_matters())
    return fail_on_temp(Step::set_permissions, -EPERM,
                        "ModeFrom::existing: the target's group cannot be given to the new file "
                        "(the user is not in it), and its mode or ACL gives that group other "
                        "access than the others; not replaced, rather than give it to the "
                        "user's own group");
  const int r = fs_.set_mode(fd_, perm_);
  if (r < 0) return fail_on_temp(Step::set_permissions, r);
  return {};
}

namespace detail {
// An attribute the file (or its filesystem, or system) does not have.
inline bool no_attribute(long neg_errno) noexcept {
#if defined(ENODATA)
  if (neg_errno == -ENODATA) return true;
#endif
  if (neg_errno == -ENOTSUP) return true;
#if EOPNOTSUPP != ENOTSUP
  if (neg_errno == -EOPNOTSUPP) return true;
#endif
  return false;
}
}  // namespace detail

namespace detail {
inline unsigned acl_u16(const unsigned char* at) noexcept {
  return static_cast<unsigned>(at[0]) | static_cast<unsigned>(at[1]) << 8;
}

/// Rewrites `acl`, a directory's default ACL of `size` bytes as Linux
/// stores it (system.posix_acl_default: a version 2 of 4 bytes, then
/// entries of 8, little-endian: a tag and permissions of 16 bits, an id of
/// 32), into the access ACL open(2) gives a new file asked with `mode`, and
/// `mode` into that file's mode, as Linux's posix_acl_create_masq does: 1
/// when the ACL says more than the mode (it must be set on the file), 0
/// when the mode says it all, -EINVAL for an ACL not of that form.
inline int inherit_acl(unsigned char* acl, std::size_t size, unsigned& mode) noexcept {
  if (size < 4 || (size - 4) % 8 != 0 || acl_u16(acl) != 2 || acl_u16(acl + 2) != 0) return -EINVAL;
  unsigned rest = mode & 0777u;
  unsigned char* group = nullptr;  // the owning group's entry
  unsigned char* mask = nullptr;
  bool extended = false;
  for (unsigned char* e = acl + 4; e != acl + size; e += 8) {
    unsigned perm = acl_u16(e + 2) & 7u;
    switch (acl_u16(e)) {
      case 0x01:  // user::
        perm &= rest >> 6;
        rest &= perm << 6 | 077u;
        break;
      case 0x20:  // other::
        perm &= rest & 7u;
        rest &= perm | 0770u;
        break;
      case 0x04:  // group::
        group = e;
        break;
      case 0x10:  // mask::
        mask = e;
        extended = true;
        break;
      case 0x02:  // user:ID
      case 0x08:  // group:ID
        extended = true;
        break;
      default:
        return -EINVAL;
    }
    e[2] = static_cast<unsigned char>(perm);
    e[3] = 0;
  }
  unsigned char* const narrowed = mask != nullptr ? mask : group;  // the group class
  if (narrowed == nullptr) return -EINVAL;
  const unsigned perm = narrowed[2] & rest >> 3 & 7u;
  narrowed[2] = static_cast<unsigned char>(perm);
  rest &= perm << 3 | 0707u;
  mode = (mode & ~0777u) | rest;
  return extended ? 1 : 0;
}
}  // namespace detail

// ModeFrom::umask: the mode open(2) gives a new file: the one asked for,
// less the umask; in a directory with a default ACL, the umask ignored, as
// the kernel ignores it there, and the ACL (narrowed by the mode) given to
// the new file as its access ACL.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::mode_as_open() noexcept {
  const unsigned asked = perm_;
  perm_ = asked & ~static_cast<unsigned>(umask_);
  if constexpr (detail::has_attributes<FsRef>::value) {
    unsigned char acl[ATOMIC_STATE_ATTRIBUTE_MAX];
    const ssize_t n = fs_.get_attribute(dir_fd_, "system.posix_acl_default", acl, sizeof acl);
    if (detail::no_attribute(n)) return {};
    const auto size = static_cast<std::size_t>(n);
    perm_ = asked;
    const int r = n < 0 ? static_cast<int>(n) : detail::inherit_acl(acl, size, perm_);
    if (r < 0)
      return fail(Step::set_permissions, r, dir_for_messages(), {},
                  "ModeFrom::umask: the directory's default ACL cannot be read (or is over "
                  "ATOMIC_STATE_ATTRIBUTE_MAX bytes, or not a POSIX ACL)");
    if (r == 1)
      if (const int set = fs_.set_attribute(fd_, "system.posix_acl_access", acl, size); set < 0)
        return fail_on_temp(Step::set_permissions, set,
                            "ModeFrom::umask: the ACL the directory's default ACL gives cannot be "
                            "given to the new file");
  }
  return {};
}

// Whether the new file's group, once not the target's, would change who
// may do what: the group's permission bits differ from the others', or the
// mode has set-group-ID, or the target had an access ACL (whose group
// entries the new group would take).
template <class S, class Fs>
bool WriteTransaction<S, Fs>::group_matters() const noexcept {
  return target_acl_ || (perm_ & 02000u) != 0 || ((perm_ >> 3) & 7u) != (perm_ & 7u);
}

// ModeFrom::existing: the target's access ACL and security context onto the
// temp file. A target without an ACL gives a file without one: a default
// ACL of the directory would otherwise grant the new file what the old one
// did not. Whatever cannot be copied fails the save, the target untouched.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::copy_attributes() noexcept {
  if constexpr (detail::has_attributes<FsRef>::value) {
    struct Kind {
      const char* name;
      bool remove_when_absent;
      const char* unreadable;
      const char* unset;
    };
    static constexpr Kind kinds[] = {
        {"system.posix_acl_access", true,
         "ModeFrom::existing: the target's ACL cannot be read (or is over "
         "ATOMIC_STATE_ATTRIBUTE_MAX bytes); not replaced, rather than with wider permissions",
         "ModeFrom::existing: the target's ACL cannot be given to the new file; not replaced, "
         "rather than with wider permissions"},
        {"security.selinux", false,
         "ModeFrom::existing: the target's security context cannot be read (or is over "
         "ATOMIC_STATE_ATTRIBUTE_MAX bytes); not replaced",
         "ModeFrom::existing: the target's security context cannot be given to the new file; "
         "not replaced"},
    };
    char value[ATOMIC_STATE_ATTRIBUTE_MAX];
    for (const Kind& kind : kinds) {
      const ssize_t n = fs_.get_attribute(source_fd_, kind.name, value, sizeof value);
      if (detail::no_attribute(n)) {
        if (!kind.remove_when_absent) continue;
        const int r = fs_.remove_attribute(fd_, kind.name);
        if (r < 0 && !detail::no_attribute(r))
          return fail_on_temp(Step::set_permissions, r, kind.unset);
        continue;
      }
      if (n < 0)
        return fail(Step::set_permissions, static_cast<int>(n), dir_prefix(),
                    std::string_view(name(), name_len_), kind.unreadable);
      if (kind.remove_when_absent) target_acl_ = true;  // the ACL's kind
      const int r = fs_.set_attribute(fd_, kind.name, value, static_cast<std::size_t>(n));
      if (r < 0) return fail_on_temp(Step::set_permissions, r, kind.unset);
    }
    (void)fs_.close(std::exchange(source_fd_, -1));
  }
  return {};
}

// Asks the kernel to start writing the file back now, without waiting, so
// that the syncs of a batch's files overlap (sync_file_range where the
// policy offers start_writeback). Only a hint: its failure changes nothing.
template <class S, class Fs>
void WriteTransaction<S, Fs>::start_writeback() noexcept {
  if constexpr (S::file != SyncLevel::none && detail::has_start_writeback<FsRef>::value)
    (void)fs_.start_writeback(fd_);
}

// A failed sync is never retried: after a writeback error the kernel may
// already have dropped the dirty pages, so a second sync would "succeed".
template <class S, class Fs>
Status WriteTransaction<S, Fs>::sync_file() noexcept {
  const int fd = fd_;
  int r = 0;
  if constexpr (S::file == SyncLevel::full)
    r = fs_.sync_full(fd);
  else if constexpr (S::file == SyncLevel::data)
    r = fs_.sync_data(fd);
  if (r < 0) return fail_on_temp(Step::sync_file, r);
  return {};
}

template <class S, class Fs>
Status WriteTransaction<S, Fs>::close_file() noexcept {
  // An unnamed file is closed after its rename instead, by put_in_place:
  // its descriptor holds the lock that keeps a sweep off its name.
  if (unnamed_) return name_unnamed_file();
  // The temp file's lock lives as long as one descriptor of it: a second
  // one keeps it from the close below to the rename, when the file stops
  // being a temp file. Without it the save goes on, unprotected. A temp
  // file of an AtomicDirectory has no lock of its own: the claim is held.
  if (claim_ == nullptr) {
    lock_fd_ = fs_.duplicate(fd_);
    if (lock_fd_ < 0) lock_fd_ = -1;
  }

  // close() is never retried: the descriptor is gone even when it fails,
  // and EINTR loses nothing once the data has been handed over. Checked,
  // because some filesystems (NFS) report write errors only here.
  const int r = fs_.close(std::exchange(fd_, -1));
  if (r < 0 && r != -EINTR) return fail_on_temp(Step::close_temp_file, r);
  return {};
}

template <class S, class Fs>
Status WriteTransaction<S, Fs>::put_in_place() noexcept {
  const int r = commit_ == Commit::replace ? fs_.rename(dir_fd_, temp_, name())
                                           : fs_.rename_noreplace(dir_fd_, temp_, name());
  if (r < 0) return fail_on_temp(Step::rename, r);
  temp_exists_ = false;
  phase_ = Phase::committed;
  if (unnamed_) {
    // Checked all the same, though the target is replaced by now: a
    // filesystem that reports write errors only at the close (FUSE, which
    // may make unnamed files) then fails the save with replaced() true,
    // rather than let it pass. Under a sync policy the sync reported them.
    const int closed = fs_.close(std::exchange(fd_, -1));
    if (closed < 0 && closed != -EINTR)
      return fail(Step::close_temp_file, closed, dir_prefix(), std::string_view(name(), name_len_));
  }
  return {};
}

// After the rename: a failure here leaves the target replaced, not known
// durable, and the Status says so (replaced()).
template <class S, class Fs>
Status WriteTransaction<S, Fs>::sync_directory() noexcept {
  const int dir_fd = dir_fd_;
  const int r = fs_.sync_full(dir_fd);
  if (r < 0) return fail(Step::sync_directory, r, dir_for_messages());
  return {};
}
// ------------------------------------------------------------- AtomicWriter --

template <class S, class Fs>
Result<typename AtomicWriter<S, Fs>::Transaction> AtomicWriter<S, Fs>::begin(
    PathView path, unsigned perm) & noexcept {
  return begin(path, WriteOptions{perm});
}

template <class S, class Fs>
Result<typename AtomicWriter<S, Fs>::Transaction> AtomicWriter<S, Fs>::begin(
    PathView path, const WriteOptions& options) & noexcept {
  Transaction transaction = Steps::make(fs_);
  if (Status opened = Steps::open(transaction, path.text(), options, Steps::Commit::replace);
      !opened)
    return opened;
  return Result<Transaction>(std::move(transaction));
}

namespace detail {
template <class Transaction>
Status write_whole(Transaction& transaction, std::string_view data) noexcept {
  if (Status written = transaction.write(data); !written) return written;
  return transaction.commit();
}
}  // namespace detail

template <class S, class Fs>
Status AtomicWriter<S, Fs>::write(PathView path, std::string_view data, unsigned perm) noexcept {
  return write(path, data, WriteOptions{perm});
}

template <class S, class Fs>
Status AtomicWriter<S, Fs>::write(PathView path, std::string_view data,
                                  const WriteOptions& options) noexcept {
  return write_whole(path, data, options, Steps::Commit::replace);
}

template <class S, class Fs>
Status AtomicWriter<S, Fs>::write_new(PathView path, std::string_view data,
                                      unsigned perm) noexcept {
  return write_new(path, data, WriteOptions{perm});
}

template <class S, class Fs>
Status AtomicWriter<S, Fs>::write_new(PathView path, std::string_view data,
                                      const WriteOptions& options) noexcept {
  return write_whole(path, data, options, Steps::Commit::no_replace);
}

template <class S, class Fs>
Status AtomicWriter<S, Fs>::write_whole(PathView path, std::string_view data,
                                        const WriteOptions& options,
                                        typename Steps::Commit commit) noexcept {
  Transaction transaction = Steps::make(fs_);
  if (Status opened = Steps::open(transaction, path.text(), options, commit); !opened)
    return opened;
  return detail::write_whole(transaction, data);
}
// ---------------------------------------------------------------- the sweep --

namespace detail {

// One pass over a directory, examining each entry as the listing meets
// it, so that the pass is bounded by the directory's size and holds
// nothing between entries.
template <class Fs>
class TempSweeper {
 public:
  TempSweeper(Fs& fs, int dir_fd, std::string_view dir, std::string_view own) noexcept
      : fs_(fs), dir_fd_(dir_fd), dir_(dir), own_(own) {}

  Result<TempSweep> run() noexcept {
    if constexpr (has_user_id<Fs>::value) user_ = fs_.user_id();
    const int listed = fs_.list_directory(dir_fd_, &TempSweeper::visit, this);
    if (listed < 0) return Status(Step::remove_temp_file, system_error(listed), dir_);
    if (!failure_.ok()) return failure_;
    return sweep_;
  }

 private:
  static void visit(void* self, const char* name) noexcept {
    auto* sweeper = static_cast<TempSweeper*>(self);
    if (std::string_view(name) == sweeper->own_) return;  // the caller's own, held for its life
    const OwnedName owned = owned_name(name);             // the rule saves refuse targets by
    if (owned == OwnedName::temp)
      sweeper->examine(name);
    else if (owned == OwnedName::claimed_temp)
      sweeper->examine_claimed(name);
  }

  // A temp file of an AtomicDirectory is stale when its claim is: removed
  // only while holding the claim's lock (so no live handle has it), or
  // when the claim is gone (its handle ended).
  void examine_claimed(const char* name) noexcept {
    FileInfo listed, now;
    int r = fs_.entry_info(dir_fd_, name, listed);
    if (r == -ENOENT) return;
    if (r < 0) return note(r, name);
    if (!removable(listed)) return;
    char claim[12];
    std::memcpy(claim, name, 11);
    claim[11] = '\0';
    const int fd = open_claim(claim);
    if (fd < 0 && fd != -ENOENT) return note(fd, claim);
    if (fd >= 0 && fs_.try_lock(fd) < 0) {
      ++sweep_.in_use;  // a live handle (or a filesystem without locks)
      (void)fs_.close(fd);
      return;
    }
    r = fs_.entry_info(dir_fd_, name, now);
    if (r >= 0 && same_file(now, listed)) {
      r = fs_.unlink(dir_fd_, name);
      if (r >= 0) ++sweep_.removed;
    }
    if (fd >= 0) (void)fs_.close(fd);  // after the unlink: the claim's lock guards it
    if (r < 0 && r != -ENOENT) note(r, name);
  }

  // The claim `claim` opened, when it is a regular file (a live handle's
  // always is): never a symlink's target, which could be any file; -ENOENT
  // when there is no such claim, so that nothing guards the temp file.
  int open_claim(const char* claim) noexcept {
    FileInfo listed, opened;
    const int r = fs_.entry_info(dir_fd_, claim, listed);
    if (r < 0) return r;
    if (listed.type != FileType::regular) return -ENOENT;
    const int fd = fs_.open_file(dir_fd_, claim);
    if (fd < 0) return fd;
    if (fs_.file_info(fd, opened) >= 0 && same_file(opened, listed)) return fd;
    (void)fs_.close(fd);
    return -EAGAIN;  // replaced meanwhile: left for the next sweep
  }

  // Whether the entry `listed` is one this sweep may remove: a regular file
  // (else counted not_regular) of the user it runs as, where the Fs knows
  // that user (else counted not_permitted: another user's, whoever sweeps,
  // root included, in /tmp or a home as in a state directory).
  bool removable(const FileInfo& listed) noexcept {
    if (listed.type != FileType::regular) {
      ++sweep_.not_regular;
      return false;
    }
    if (user_ != no_user && listed.owner != user_) {
      ++sweep_.not_permitted;
      return false;
    }
    return true;
  }

  // Removes `name` only while holding its lock, and only if the name still
  // leads to the file locked: a live save holds its own temp file's lock
  // from its creation to its rename.
  void examine(const char* name) noexcept {
    FileInfo listed;
    int r = fs_.entry_info(dir_fd_, name, listed);
    if (r == -ENOENT) return;  // committed or removed meanwhile
    if (r < 0) return note(r, name);
    if (!removable(listed)) return;
    const int fd = fs_.open_file(dir_fd_, name);
    if (fd == -ENOENT) return;
    if (fd < 0) return note(fd, name);
    FileInfo opened, now;
    r = fs_.file_info(fd, opened);
    if (r >= 0 && same_file(opened, listed)) {
      r = fs_.try_lock(fd);
      if (r < 0) {
        ++sweep_.in_use;  // a live save (or a filesystem without locks)
        r = 0;
      } else if (fs_.entry_info(dir_fd_, name, now) >= 0 && same_file(now, opened)) {
        r = fs_.unlink(dir_fd_, name);
        if (r >= 0) ++sweep_.removed;
      }
    }
    (void)fs_.close(fd);  // after the unlink: the lock guards it to the end
    if (r < 0 && r != -ENOENT) note(r, name);
  }

  static bool same_file(const FileInfo& a, const FileInfo& b) noexcept {
    return a.device == b.device && a.inode == b.inode;
  }

  // The first failure is the one reported; the pass goes on regardless.
  // Another user's temp file is left and counted: no failure of this
  // user's sweep, which cannot do better.
  void note(int neg_errno, const char* name) noexcept {
    if (neg_errno == -EACCES || neg_errno == -EPERM) {
      ++sweep_.not_permitted;
      return;
    }
    if (!failure_.ok()) return;
    JoinedPath path(dir_, name);
    failure_ = Status(Step::remove_temp_file, system_error(neg_errno), path.view());
  }

  Fs& fs_;
  int dir_fd_;
  std::string_view dir_;
  std::string_view own_;
  static constexpr std::uint32_t no_user = static_cast<std::uint32_t>(-1);
  std::uint32_t user_ = no_user;  // whose temp files it removes; any, when unknown
  TempSweep sweep_;
  Status failure_;
};

/// One sweep of the directory `dir_fd` (`dir` in messages), leaving alone
/// the entry `own` (an AtomicDirectory's claim) without looking at it.
template <class Fs>
Result<TempSweep> sweep_temp_files(Fs& fs, int dir_fd, std::string_view dir,
                                   std::string_view own = {}) noexcept {
  return TempSweeper<Fs>(fs, dir_fd, dir, own).run();
}

}  // namespace detail

namespace detail {
/// write_new of a file the library names itself (a run lock's file), which
/// AtomicWriter::write_new refuses by its name.
template <class Writer>
Status write_new_own_file(Writer& writer, std::string_view path, std::string_view data,
                          const WriteOptions& options) noexcept {
  using Steps = TransactionSteps<typename Writer::Transaction>;
  typename Writer::Transaction transaction = Steps::make(writer.filesystem());
  Steps::allow_own_name(transaction);
  if (Status opened = Steps::open(transaction, path, options, Steps::Commit::no_replace); !opened)
    return opened;
  return write_whole(transaction, data);
}
}  // namespace detail

template <class S, class Fs>
Result<TempSweep> AtomicWriter<S, Fs>::remove_stale_temp_files(PathView dir) noexcept {
  static_assert(is_state_filesystem_v<Fs>,
                "remove_stale_temp_files needs the Fs calls open_file and list_directory "
                "(see PosixFs)");
  const detail::DirectoryPath path(dir.text());
  if (!path.ok()) return path.problem(Step::check_path);
  detail::Retrying<std::remove_reference_t<Fs>> fs(fs_);
  const int dir_fd = fs.open_directory(path.c_str());
  // No directory, no temp files; whatever comes next says why.
  if (dir_fd == -ENOENT || dir_fd == -ENOTDIR) return TempSweep{};
  if (dir_fd < 0) return Status(Step::open_directory, detail::system_error(dir_fd), path.view());
  Result<TempSweep> swept = detail::sweep_temp_files(fs, dir_fd, path.view());
  (void)fs.close(dir_fd);
  return swept;
}

inline Status write_atomic(PathView path, std::string_view data, unsigned perm) noexcept {
  return AtomicWriter<>{}.write(path, data, perm);
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

#endif  // ATOMIC_STATE_WRITER_HPP
