// directory.hpp: AtomicDirectory: a directory kept open for repeated saves
#ifndef ATOMIC_STATE_DIRECTORY_HPP
#define ATOMIC_STATE_DIRECTORY_HPP

#include <cstring>      // std::memcpy
#include <memory>       // std::unique_ptr: the claim, whose address outlives moves
#include <new>          // std::nothrow
#include <string_view>  // std::string_view
#include <type_traits>  // std::enable_if_t, std::is_default_constructible_v
#include <utility>      // std::move, std::exchange

#include "writer.hpp"

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

/// What AtomicDirectory::open does with a directory that does not exist.
enum class MissingDirectory : unsigned char {
  create,  ///< make it, and any missing parent, as a first save does
  fail,    ///< an error (Step::open_directory, ENOENT)
};

/// A directory kept open for repeated saves into it: what AtomicWriter does,
/// without opening, locking and closing the directory for each file. open()
/// opens the directory and claims it: one empty temp file, locked for the
/// handle's life, whose name starts the names of the handle's temp files,
/// so that a sweep of stale temp files leaves them alone without a lock
/// per save. A save then makes only the calls a save must: a look at the
/// target, create, write, fchmod, the syncs the policy asks, close, rename.
/// Its temp files are named (".tmp-XXXXXX.N") even where AtomicWriter's are
/// unnamed: naming an unnamed file costs a link, a fifth of a small save on
/// tmpfs, and the claim already spares the lock; a kill leaves at most the
/// one it interrupted, for the next open's sweep.
///
/// The handle keeps the directory it opened, even when the path comes to
/// name another (the directory renamed, removed and made again, a volume
/// mounted over it): a program that must follow the path reopens it.
/// Move-only; its transactions must not outlive it or cross a move of it.
/// Saves from several threads at once are fine, as with AtomicWriter.
template <class SyncPolicy = FullSync, class Fs = PosixFs>
class AtomicDirectory {
  static_assert(is_sync_policy_v<SyncPolicy>,
                "AtomicDirectory: SyncPolicy needs `static constexpr SyncLevel file` and "
                "`static constexpr bool directory` (see FullSync)");
  static_assert(is_filesystem_v<Fs>,
                "AtomicDirectory: Fs needs every call of PosixFs that a save makes (see "
                "is_filesystem)");

 public:
  using Transaction = WriteTransaction<SyncPolicy, Fs>;

  /// Opens and claims `dir`; a missing one is made, or an error, as
  /// `missing` says. Failures: check_path, create_directory,
  /// open_directory, create_temp_file (the claim).
  template <class F = Fs, std::enable_if_t<std::is_default_constructible_v<F>, int> = 0>
  static Result<AtomicDirectory> open(
      PathView dir, MissingDirectory missing = MissingDirectory::create) noexcept {
    return open(dir, F(), missing);
  }
  static Result<AtomicDirectory> open(PathView dir, Fs fs,
                                      MissingDirectory missing = MissingDirectory::create) noexcept;

  AtomicDirectory(AtomicDirectory&& other) noexcept;
  AtomicDirectory& operator=(AtomicDirectory&& other) noexcept;
  AtomicDirectory(const AtomicDirectory&) = delete;
  AtomicDirectory& operator=(const AtomicDirectory&) = delete;
  /// Gives up the claim (removing its file) and closes the directory.
  ~AtomicDirectory();

  /// Replaces the file `name` of the directory with `data`, as
  /// AtomicWriter::write does (`options.create_directories` does not apply;
  /// `options.follow_symlinks` is refused, EINVAL). `name` is a plain name
  /// in the directory, refused with Step::check_path before anything is
  /// written when it is empty or holds a '/' or a NUL (EINVAL), is "." or
  /// ".." (EISDIR), is too long (ENAMETOOLONG), or is a name the library
  /// gives files of its own (EINVAL; see AtomicWriter::write); write_new()
  /// and begin() take names alike.
  Status write(std::string_view name, std::string_view data, unsigned perm = 0644) noexcept;
  Status write(std::string_view name, std::string_view data, const WriteOptions& options) noexcept;
  /// Creates `name` with `data`, failing with EEXIST (Step::rename) rather
  /// than replacing; `options` as for write().
  Status write_new(std::string_view name, std::string_view data, unsigned perm = 0644) noexcept;
  Status write_new(std::string_view name, std::string_view data,
                   const WriteOptions& options) noexcept;
  /// Starts a streaming replacement of the file `name`.
  Result<Transaction> begin(std::string_view name, unsigned perm = 0644) & noexcept;
  Result<Transaction> begin(std::string_view name, const WriteOptions& options) & noexcept;
  Result<Transaction> begin(std::string_view name, unsigned perm = 0644) && = delete;
  Result<Transaction> begin(std::string_view name, const WriteOptions& options) && = delete;

  /// The sweep of stale temp files of the directory, as
  /// AtomicWriter::remove_stale_temp_files; this handle's own are in use.
  Result<TempSweep> remove_stale_temp_files() noexcept;
  /// What open()'s own sweep did: open() sweeps the directory once, as
  /// remove_stale_temp_files() does (without looking at the handle's
  /// claim), when the Fs can list directories (is_state_filesystem_v). Its
  /// failure is not open()'s: it counts nothing.
  const TempSweep& swept() const noexcept { return swept_; }

  /// The directory's path, as given to open().
  std::string_view path() const noexcept { return {path_, path_len_}; }
  /// Its descriptor, for calls of one's own (openat to read a file).
  int descriptor() const noexcept { return dir_fd_; }
  /// The filesystem policy (the caller's own object when Fs is a reference).
  std::remove_reference_t<Fs>& filesystem() noexcept { return fs_; }

 private:
  using FsRef = std::remove_reference_t<Fs>;
  using Steps = detail::TransactionSteps<Transaction>;
  // Opens a transaction in the directory (through the claim) and takes
  // over the claim's own: the one door, shared with WriteTransaction.
  friend Steps;

  explicit AtomicDirectory(Fs fs) noexcept : fs_(static_cast<Fs&&>(fs)) {}
  Result<Transaction> start(std::string_view name, const WriteOptions& options,
                            typename Steps::Commit commit) noexcept;
  void close() noexcept;

  Fs fs_;
  int dir_fd_ = -1;
  int claim_fd_ = -1;                     // holds the claim's lock
  std::unique_ptr<detail::Claim> claim_;  // its address outlives moves
  TempSweep swept_;
  std::size_t path_len_ = 0;
  char path_[ATOMIC_STATE_PATH_MAX] = {};
};

/// Several files replaced as one: a run's outputs and, last, the state that
/// records them. add() writes a file's temp file at once (the data need not
/// outlive the call); commit() makes them all durable together and puts
/// them in place in the order they were added:
///   1. each temp file's mode set, writeback started for all of them (where
///      the Fs has start_writeback), then each synced, and each named (an
///      unnamed one: locked and linked, closed after its rename) or closed
///      (a named one);
///   2. each file but the last renamed over its target, in order;
///   3. each directory that gained a file synced, once: a directory is the
///      one each file's directory was opened as (its device and inode, or
///      the handle's descriptor), never its path's text, which a rename, a
///      mount or a chdir between two adds can make name another;
///   4. the last file renamed over its target, and its directory synced.
/// After any crash each target is old or new, never torn, and the last file
/// is never newer than the files before it. A failure before the first
/// rename removes every temp file and touches no target; after it,
/// replaced() says how many targets (the first ones, in order) hold their
/// new content, and the Status names them and the file it failed on.
///
/// After commit() (whatever its outcome) the batch is empty and can be
/// filled again; its storage is kept, so a batch reused run after run
/// allocates nothing. Neither copyable nor movable (its transactions use
/// its Fs); not for use by several threads at once.

// ========================================================= implementation ====

// ---------------------------------------------------------- AtomicDirectory --

template <class S, class Fs>
Result<AtomicDirectory<S, Fs>> AtomicDirectory<S, Fs>::open(PathView dir, Fs fs,
                                                            MissingDirectory missing) noexcept {
  const detail::DirectoryPath path(dir.text());
  if (!path.ok()) return path.problem(Step::check_path);
  AtomicDirectory handle(static_cast<Fs&&>(fs));
  handle.claim_.reset(new (std::nothrow) detail::Claim);
  if (!handle.claim_)
    return Status(Step::create_temp_file, detail::system_error(-ENOMEM), path.view());
  handle.path_len_ = path.view().size();
  std::memcpy(handle.path_, path.view().data(), handle.path_len_);
  // The claim is made as a save's temp file is, in a directory made as a
  // save makes it: a transaction does both, and is then given up for them.
  Transaction claiming = Steps::make(handle.fs_);
  Steps::keep_named(claiming);
  const detail::JoinedPath claim_path(path.view(), ".atomic-directory-claim");
  const WriteOptions options{0600, missing == MissingDirectory::create};
  if (Status opened = Steps::open(claiming, claim_path.view(), options, Steps::Commit::no_replace);
      !opened)
    return opened;
  Steps::hand_over_as_claim(claiming, handle);
  if constexpr (is_state_filesystem_v<Fs>) {
    detail::Retrying<FsRef> retrying(handle.fs_);
    const Result<TempSweep> swept =
        detail::sweep_temp_files(retrying, handle.dir_fd_, handle.path(), handle.claim_->name);
    if (swept) handle.swept_ = *swept;
  }
  return Result<AtomicDirectory>(std::move(handle));
}

template <class S, class Fs>
AtomicDirectory<S, Fs>::AtomicDirectory(AtomicDirectory&& other) noexcept
    : fs_(static_cast<Fs&&>(other.fs_)),
      dir_fd_(std::exchange(other.dir_fd_, -1)),
      claim_fd_(std::exchange(other.claim_fd_, -1)),
      claim_(std::move(other.claim_)),
      swept_(other.swept_),
      path_len_(other.path_len_) {
  std::memcpy(path_, other.path_, path_len_);
}

template <class S, class Fs>
AtomicDirectory<S, Fs>& AtomicDirectory<S, Fs>::operator=(AtomicDirectory&& other) noexcept {
  if (this == &other) return *this;
  close();
  fs_ = static_cast<Fs&&>(other.fs_);
  dir_fd_ = std::exchange(other.dir_fd_, -1);
  claim_fd_ = std::exchange(other.claim_fd_, -1);
  claim_ = std::move(other.claim_);
  swept_ = other.swept_;
  path_len_ = other.path_len_;
  std::memcpy(path_, other.path_, path_len_);
  return *this;
}

template <class S, class Fs>
AtomicDirectory<S, Fs>::~AtomicDirectory() {
  close();
}

// The claim's file goes before its lock, so that no sweep takes the
// handle's temp files for stale while it still has any.
template <class S, class Fs>
void AtomicDirectory<S, Fs>::close() noexcept {
  detail::Retrying<FsRef> fs(fs_);
  if (claim_fd_ >= 0) {
    (void)fs.unlink(dir_fd_, claim_->name);
    (void)fs.close(std::exchange(claim_fd_, -1));
  }
  if (dir_fd_ >= 0) (void)fs.close(std::exchange(dir_fd_, -1));
}

template <class S, class Fs>
Result<typename AtomicDirectory<S, Fs>::Transaction> AtomicDirectory<S, Fs>::start(
    std::string_view name, const WriteOptions& options, typename Steps::Commit commit) noexcept {
  Transaction transaction = Steps::make(fs_);
  if (Status opened = Steps::open_in(transaction, *this, name, options, commit); !opened)
    return opened;
  return Result<Transaction>(std::move(transaction));
}

template <class S, class Fs>
Result<typename AtomicDirectory<S, Fs>::Transaction> AtomicDirectory<S, Fs>::begin(
    std::string_view name, unsigned perm) & noexcept {
  return start(name, WriteOptions{perm}, Steps::Commit::replace);
}

template <class S, class Fs>
Result<typename AtomicDirectory<S, Fs>::Transaction> AtomicDirectory<S, Fs>::begin(
    std::string_view name, const WriteOptions& options) & noexcept {
  return start(name, options, Steps::Commit::replace);
}

template <class S, class Fs>
Status AtomicDirectory<S, Fs>::write(std::string_view name, std::string_view data,
                                     unsigned perm) noexcept {
  return write(name, data, WriteOptions{perm});
}

template <class S, class Fs>
Status AtomicDirectory<S, Fs>::write(std::string_view name, std::string_view data,
                                     const WriteOptions& options) noexcept {
  Result<Transaction> transaction = start(name, options, Steps::Commit::replace);
  if (!transaction) return transaction.status();
  return detail::write_whole(*transaction, data);
}

template <class S, class Fs>
Status AtomicDirectory<S, Fs>::write_new(std::string_view name, std::string_view data,
                                         unsigned perm) noexcept {
  return write_new(name, data, WriteOptions{perm});
}

template <class S, class Fs>
Status AtomicDirectory<S, Fs>::write_new(std::string_view name, std::string_view data,
                                         const WriteOptions& options) noexcept {
  Result<Transaction> transaction = start(name, options, Steps::Commit::no_replace);
  if (!transaction) return transaction.status();
  return detail::write_whole(*transaction, data);
}

template <class S, class Fs>
Result<TempSweep> AtomicDirectory<S, Fs>::remove_stale_temp_files() noexcept {
  static_assert(is_state_filesystem_v<Fs>,
                "remove_stale_temp_files needs the Fs calls open_file and list_directory "
                "(see PosixFs)");
  if (dir_fd_ < 0)
    return Status(Step::invalid_use, std::make_error_code(std::errc::bad_file_descriptor), path(),
                  {}, false, "the AtomicDirectory was moved from");
  detail::Retrying<FsRef> fs(fs_);
  return detail::sweep_temp_files(fs, dir_fd_, path());
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

#endif  // ATOMIC_STATE_DIRECTORY_HPP
