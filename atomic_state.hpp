// atomic_state.hpp - crash-safe file replacement for C++17, in one header.
// Version 0.1.0 - https://github.com/atomic-state/atomic_state (SPDX: MIT)
//
// WHAT IT DOES
//   AtomicWriter replaces a file so that a crash, a power cut or a full disk
//   leaves either the old content or the new content, never a torn file:
//   temp file in the same directory (created 0600, O_EXCL, O_NOFOLLOW,
//   O_CLOEXEC), write every byte, fchmod to the final mode, fsync, close,
//   rename over the target, fsync the directory. Any failure before the rename
//   removes the temp file and leaves the target byte-for-byte untouched.
//
// USAGE CONTRACT
//   - Copy this file anywhere and #include it. It needs C++17 and POSIX
//     (Linux, the BSDs, macOS). Nothing to link for this part.
//   - Nothing here throws and nothing aborts on bad input: every operation
//     returns a Status (or a Result<T>) naming the step, the path(s) and the
//     OS reason.
//   - The target and its temp file live in the same directory, so the rename
//     never crosses a filesystem. A symlink at the target path is replaced by
//     the new file, not followed.
//   - Durability is chosen by the SyncPolicy: FullSync (default), DataSync,
//     NoSync (atomic against a process crash only, not a power loss).
//   - Every system call goes through the Fs policy (PosixFs by default), so
//     a test can fail any call it likes.
//
// CONFIGURATION (define before including; each has a sensible default)
//   ATOMIC_STATE_ASSERT(cond)          precondition check, default assert()
//   ATOMIC_STATE_EINTR_RETRY_LIMIT     retries of a call interrupted by a
//                                      signal or a write that made no
//                                      progress, before giving up (10000)
//   ATOMIC_STATE_TEMP_NAME_ATTEMPTS    temp names tried before giving up (100)
//   ATOMIC_STATE_PATH_MAX              longest path accepted, in bytes,
//                                      terminating NUL included (PATH_MAX)
//   ATOMIC_STATE_NAME_MAX              longest file name accepted (NAME_MAX)
//
// LICENSE (MIT)
//   Copyright (c) 2026 The atomic_state authors
//
//   Permission is hereby granted, free of charge, to any person obtaining a
//   copy of this software and associated documentation files (the
//   "Software"), to deal in the Software without restriction, including
//   without limitation the rights to use, copy, modify, merge, publish,
//   distribute, sublicense, and/or sell copies of the Software, and to permit
//   persons to whom the Software is furnished to do so, subject to the
//   following conditions:
//
//   The above copyright notice and this permission notice shall be included
//   in all copies or substantial portions of the Software.
//
//   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
//   OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
//   MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN
//   NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
//   DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
//   OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
//   USE OR OTHER DEALINGS IN THE SOFTWARE.

// Two different copies of this header in one translation unit would otherwise
// be silently reduced to whichever came first by the include guard.
#if defined(ATOMIC_STATE_VERSION_MAJOR) &&                                    \
    (ATOMIC_STATE_VERSION_MAJOR != 0 || ATOMIC_STATE_VERSION_MINOR != 1 ||    \
     ATOMIC_STATE_VERSION_PATCH != 0)
#error "atomic_state.hpp: a different version of this header was already included"
#endif

#ifndef ATOMIC_STATE_HPP_INCLUDED
#define ATOMIC_STATE_HPP_INCLUDED

// ============================================================== VERSION ====
#define ATOMIC_STATE_VERSION_MAJOR 0
#define ATOMIC_STATE_VERSION_MINOR 1
#define ATOMIC_STATE_VERSION_PATCH 0
#define ATOMIC_STATE_VERSION_STRING "0.1.0"
#define ATOMIC_STATE_VERSION                                                   \
  (ATOMIC_STATE_VERSION_MAJOR * 10000 + ATOMIC_STATE_VERSION_MINOR * 100 +     \
   ATOMIC_STATE_VERSION_PATCH)

// ======================================================== CONFIGURATION ====
#if __cplusplus < 201703L
#error "atomic_state.hpp needs C++17 or later (compile with -std=c++17)"
#endif

#ifndef ATOMIC_STATE_ASSERT
#include <cassert>
#define ATOMIC_STATE_ASSERT(cond) assert(cond)
#endif

#ifndef ATOMIC_STATE_EINTR_RETRY_LIMIT
#define ATOMIC_STATE_EINTR_RETRY_LIMIT 10000
#endif

#ifndef ATOMIC_STATE_TEMP_NAME_ATTEMPTS
#define ATOMIC_STATE_TEMP_NAME_ATTEMPTS 100
#endif

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define ATOMIC_STATE_DETAIL_TRY try
#define ATOMIC_STATE_DETAIL_CATCH_ALL catch (...)
#else
#define ATOMIC_STATE_DETAIL_TRY if (true)
#define ATOMIC_STATE_DETAIL_CATCH_ALL else
#endif

// The inline namespace carries the version, so two vendored copies of
// different versions linked into one program cannot violate the ODR.
#define ATOMIC_STATE_DETAIL_CAT3(a, b, c, d, e, f) a##b##c##d##e##f
#define ATOMIC_STATE_DETAIL_ABI_NAME(ma, mi, pa)                               \
  ATOMIC_STATE_DETAIL_CAT3(v, ma, _, mi, _, pa)
#define ATOMIC_STATE_DETAIL_ABI                                                \
  ATOMIC_STATE_DETAIL_ABI_NAME(ATOMIC_STATE_VERSION_MAJOR,                     \
                               ATOMIC_STATE_VERSION_MINOR,                     \
                               ATOMIC_STATE_VERSION_PATCH)

// ============================================================= PLATFORM ====
// All platform-specific code lives in this block and in PosixFs below.
#if defined(_WIN32)
#error "atomic_state.hpp supports POSIX systems only (Linux, BSD, macOS); Windows is not supported yet"
#elif !(defined(__unix__) || defined(__unix) || defined(__APPLE__))
#error "atomic_state.hpp supports POSIX systems only (Linux, BSD, macOS); this platform is not one"
#endif

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef ATOMIC_STATE_NAME_MAX
#ifdef NAME_MAX
#define ATOMIC_STATE_NAME_MAX NAME_MAX
#else
#define ATOMIC_STATE_NAME_MAX 255
#endif
#endif

#ifndef ATOMIC_STATE_PATH_MAX
#ifdef PATH_MAX
#define ATOMIC_STATE_PATH_MAX PATH_MAX
#else
#define ATOMIC_STATE_PATH_MAX 4096
#endif
#endif

// Apple systems reach the disk only through F_FULLFSYNC, so DataSync uses
// it there too; every other supported system has fdatasync.
#if defined(__APPLE__)
#define ATOMIC_STATE_DETAIL_HAS_FDATASYNC 0
#else
#define ATOMIC_STATE_DETAIL_HAS_FDATASYNC 1
#endif

// ======================================================= STANDARD LIBRARY ====
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// ========================================================= DECLARATIONS ====

/// The step of the protocol at which an operation failed.
enum class Step : unsigned char {
  none,              ///< no failure
  check_path,        ///< the path or mode given is unusable
  create_directory,  ///< mkdir of a missing parent directory
  open_directory,    ///< opening the parent directory
  create_temp_file,  ///< creating the temp file beside the target
  write_data,        ///< writing the bytes into the temp file
  set_permissions,   ///< fchmod of the temp file to the final mode
  sync_file,         ///< fsync/fdatasync of the temp file
  close_temp_file,   ///< close of the temp file
  rename,            ///< rename of the temp file over the target
  sync_directory,    ///< fsync of a directory whose entries changed
  invalid_use,       ///< a caller bug, e.g. a second commit()
};

/// Lower-case words naming a step, as used in messages ("create temp file").
constexpr std::string_view to_string(Step step) noexcept;

/// The outcome of an operation: success, or the step, paths and OS reason of
/// its failure. Success costs nothing; a failure allocates its paths once,
/// and copies share them, so copying a Status never allocates or throws.
class [[nodiscard]] Status {
 public:
  /// Success.
  Status() noexcept = default;

  /// A failure at `step` with OS error `code`. `subject` is the path the step
  /// worked on; `target` is the file being replaced (or the rename's
  /// destination); `replaced` says the target already holds the new data;
  /// `note` is an optional static explanation appended to the message.
  Status(Step step, std::error_code code, std::string_view subject,
         std::string_view target = {}, bool replaced = false,
         const char* note = nullptr) noexcept;

  bool ok() const noexcept { return step_ == Step::none; }
  explicit operator bool() const noexcept { return ok(); }

  Step step() const noexcept { return step_; }
  /// The OS errno in the system category for OS failures; empty on success.
  std::error_code code() const noexcept { return code_; }
  /// The path the failed step worked on (temp file, directory, ...).
  const std::string& path() const noexcept;
  /// The file being replaced.
  const std::string& target() const noexcept;
  /// True when the target already holds the new content although the
  /// operation failed: the rename happened, but the directory sync that
  /// makes it durable did not.
  bool replaced() const noexcept { return replaced_; }

  /// A sentence naming the step, the path(s) and the reason, e.g.
  /// "rename /var/lib/c/.tmp-Ab12Cd to /var/lib/c/state.json: Permission
  /// denied". "ok" on success.
  std::string message() const;

 private:
  template <class, class>
  friend class WriteTransaction;
  struct Paths {
    std::string subject;
    std::string target;
  };

  Step step_ = Step::none;
  bool replaced_ = false;
  const char* note_ = nullptr;
  const char* cleanup_note_ = nullptr;  // set by the writer: a temp file was left
  std::error_code code_;
  std::shared_ptr<const Paths> paths_;  // null on success or out of memory
};

/// A value of type T, or the Status of the failure that prevented it.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T&& value) noexcept(std::is_nothrow_move_constructible_v<T>)
      : value_(std::move(value)) {}
  Result(const T& value) noexcept(std::is_nothrow_copy_constructible_v<T>)
      : value_(value) {}
  /// A failure. Given a success Status (a caller bug), the Result still
  /// holds an error rather than an empty success.
  Result(Status status) noexcept;

  bool has_value() const noexcept { return value_.has_value(); }
  explicit operator bool() const noexcept { return has_value(); }

  /// Precondition: has_value(). Checked by ATOMIC_STATE_ASSERT.
  T& value() & noexcept { return checked(), *value_; }
  const T& value() const& noexcept { return checked(), *value_; }
  T&& value() && noexcept { return checked(), std::move(*value_); }
  T& operator*() & noexcept { return value(); }
  const T& operator*() const& noexcept { return value(); }
  T&& operator*() && noexcept { return std::move(*this).value(); }
  T* operator->() noexcept { return &value(); }
  const T* operator->() const noexcept { return &value(); }

  /// Success when a value is held, otherwise the failure.
  const Status& status() const noexcept { return status_; }

 private:
  void checked() const noexcept { ATOMIC_STATE_ASSERT(has_value()); }
  std::optional<T> value_;
  Status status_;
};

// ---------------------------------------------------------------- policies --

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
struct is_sync_policy<
    P, std::void_t<decltype(P::file), decltype(P::directory)>>
    : std::bool_constant<
          std::is_same_v<std::remove_cv_t<decltype(P::file)>, SyncLevel> &&
          std::is_same_v<std::remove_cv_t<decltype(P::directory)>, bool>> {};
template <class P>
inline constexpr bool is_sync_policy_v = is_sync_policy<P>::value;

/// The filesystem policy: every system call AtomicWriter makes.
/// Each returns a non-negative value on success and -errno on failure, never
/// touches errno's meaning for the caller, and is noexcept.
struct PosixFs {
  /// open(path, O_RDONLY|O_DIRECTORY|O_CLOEXEC): a descriptor.
  int open_directory(const char* path) noexcept;
  /// mkdir(path, mode).
  int make_directory(const char* path, unsigned mode) noexcept;
  /// openat(dir_fd, name, O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC|O_NOFOLLOW,
  /// mode): a descriptor.
  int create_file(int dir_fd, const char* name, unsigned mode) noexcept;
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
};

/// Whether F offers every call of PosixFs with compatible signatures.
template <class F, class = void>
struct is_filesystem : std::false_type {};
template <class F>
struct is_filesystem<
    F, std::void_t<
           decltype(std::declval<F&>().open_directory("")),
           decltype(std::declval<F&>().make_directory("", 0u)),
           decltype(std::declval<F&>().create_file(0, "", 0u)),
           decltype(std::declval<F&>().write(0, nullptr, std::size_t{})),
           decltype(std::declval<F&>().set_mode(0, 0u)),
           decltype(std::declval<F&>().sync_full(0)),
           decltype(std::declval<F&>().sync_data(0)),
           decltype(std::declval<F&>().close(0)),
           decltype(std::declval<F&>().rename(0, "", "")),
           decltype(std::declval<F&>().unlink(0, ""))>> : std::true_type {};
template <class F>
inline constexpr bool is_filesystem_v =
    is_filesystem<std::remove_reference_t<F>>::value;

// ------------------------------------------------------------------ writer --

template <class SyncPolicy, class Fs>
class AtomicWriter;

/// One replacement in progress: a temp file beside the target, open for
/// writing. commit() puts it in place; destroying it without a commit (or
/// calling discard()) removes the temp file and leaves the target untouched.
/// Move-only. Must not outlive the AtomicWriter that began it.
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
  /// the directory, as the policy says. Only the first commit does work.
  Status commit() noexcept;
  /// Removes the temp file now; the target is untouched.
  void discard() noexcept;

  /// The temp file's name in the target's directory (".tmp-XXXXXX"), empty
  /// once the transaction is over.
  std::string_view temp_name() const noexcept;

 private:
  using FsRef = std::remove_reference_t<Fs>;
  friend class AtomicWriter<SyncPolicy, Fs>;
  enum class Phase : unsigned char { open, committed, failed, discarded };

  explicit WriteTransaction(FsRef& fs) noexcept : fs_(&fs) {}
  Status open(std::string_view path, unsigned perm) noexcept;
  Status make_parent_directories() noexcept;
  Status sync_parent_of(std::size_t end) noexcept;
  std::size_t parent_end(std::size_t end) const noexcept;
  template <class Call>
  int on_prefix(std::size_t end, Call&& call) noexcept;
  Status create_temp_file() noexcept;
  Status fail(Step step, int neg_errno, std::string_view subject_dir,
              std::string_view subject_name = {},
              const char* note = nullptr) noexcept;
  Status fail_on_temp(Step step, int neg_errno, const char* note = nullptr) noexcept {
    return fail(step, neg_errno, join_dir(), std::string_view(temp_, 11), note);
  }
  Status finished() const noexcept;
  void take(WriteTransaction& other) noexcept;
  bool release() noexcept;
  std::string_view shown_dir() const noexcept;
  std::string_view join_dir() const noexcept;

  FsRef* fs_;
  int dir_fd_ = -1;
  int fd_ = -1;
  unsigned perm_ = 0;
  Phase phase_ = Phase::open;
  bool temp_exists_ = false;
  bool has_dir_ = false;
  std::size_t dir_len_ = 0;
  std::size_t name_len_ = 0;
  char temp_[12] = {};
  Status error_;
  // dir_ and name_ are NUL-terminated views into buf_: "dir\0name\0".
  char buf_[ATOMIC_STATE_PATH_MAX + 2];  // only the bytes in use are written
  const char* dir() const noexcept { return buf_; }
  const char* name() const noexcept { return buf_ + dir_len_ + 1; }
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
                "AtomicWriter: Fs needs every call of PosixFs "
                "(open_directory, make_directory, create_file, write, "
                "set_mode, sync_full, sync_data, close, rename, unlink)");

 public:
  using Transaction = WriteTransaction<SyncPolicy, Fs>;

  AtomicWriter() = default;
  explicit AtomicWriter(Fs fs) noexcept : fs_(static_cast<Fs&&>(fs)) {}

  /// Replaces `path` with `data`, mode `perm` (exact, umask ignored),
  /// creating missing parent directories (0755, less the umask).
  Status write(const std::filesystem::path& path, std::string_view data,
               unsigned perm = 0644) noexcept;

  /// Starts a streaming replacement of `path`: creates the parent
  /// directories and the temp file, and returns the open transaction.
  Result<Transaction> begin(const std::filesystem::path& path,
                            unsigned perm = 0644) & noexcept;
  /// A transaction keeps using its writer's Fs: a temporary writer would
  /// leave it dangling.
  Result<Transaction> begin(const std::filesystem::path& path,
                            unsigned perm = 0644) && = delete;

  std::remove_reference_t<Fs>& filesystem() noexcept { return fs_; }

 private:
  Fs fs_;
};

/// `AtomicWriter<>{}.write(path, data, perm)`: durable, atomic replacement.
Status write_atomic(const std::filesystem::path& path, std::string_view data,
                    unsigned perm = 0644) noexcept;

// ============================================================ INTERNALS ====
namespace detail {

// mode_t is 16 bits on some systems; perm was checked to fit in 07777.
inline mode_t to_mode(unsigned perm) noexcept { return static_cast<mode_t>(perm); }

inline int negative_errno(int result) noexcept {
  return result < 0 ? -errno : result;
}

inline std::error_code system_error(int neg_errno) noexcept {
  return std::error_code(-neg_errno, std::system_category());
}

/// Repeats a call interrupted by a signal (-EINTR), a bounded number of
/// times so that a storm of signals ends in an error rather than a hang.
template <class Call>
auto retry_interrupted(Call&& call) noexcept -> decltype(call()) {
  auto result = call();
  for (long n = 0; result == -EINTR && n < ATOMIC_STATE_EINTR_RETRY_LIMIT; ++n)
    result = call();
  return result;
}

/// Writes every byte, looping over short writes and EINTR. Returns 0 or
/// -errno; a write that keeps making no progress ends in -EIO with `stalled`.
template <class Fs>
int write_all(Fs& fs, int fd, const char* data, std::size_t size,
              bool& stalled) noexcept {
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

inline std::string join_path(std::string_view dir, std::string_view name) {
  if (name.empty()) return std::string(dir);
  std::string out;
  out.reserve(dir.size() + 1 + name.size());
  out.append(dir);
  if (!out.empty() && out.back() != '/') out.push_back('/');
  out.append(name);
  return out;
}

/// Six letters or digits after ".tmp-". Names need not be secret: the file
/// is created with O_EXCL|O_NOFOLLOW, so a planted name only costs a retry.
/// The clock is mixed in on every call so that forked processes, which
/// share the generator's state, still draw different names.
inline void make_temp_name(char (&out)[12]) noexcept {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::uint64_t state =
      reinterpret_cast<std::uintptr_t>(&state) * 0x9E3779B97F4A7C15ull;
  const auto now = static_cast<std::uint64_t>(
      std::chrono::steady_clock::now().time_since_epoch().count());
  state += 0x9E3779B97F4A7C15ull ^ now;
  std::uint64_t x = state;  // splitmix64 finaliser
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  std::memcpy(out, ".tmp-", 5);
  for (int i = 5; i < 11; ++i, x /= 62) out[i] = alphabet[x % 62];
  out[11] = '\0';
}

}  // namespace detail

// ======================================================= IMPLEMENTATION ====

constexpr std::string_view to_string(Step step) noexcept {
  switch (step) {
    case Step::none: return "ok";
    case Step::check_path: return "check path";
    case Step::create_directory: return "create directory";
    case Step::open_directory: return "open directory";
    case Step::create_temp_file: return "create temp file";
    case Step::write_data: return "write data";
    case Step::set_permissions: return "set permissions";
    case Step::sync_file: return "sync file";
    case Step::close_temp_file: return "close temp file";
    case Step::rename: return "rename";
    case Step::sync_directory: return "sync directory";
    case Step::invalid_use: return "invalid use";
  }
  return "unknown step";
}

inline Status::Status(Step step, std::error_code code,
                      std::string_view subject, std::string_view target,
                      bool replaced, const char* note) noexcept
    : step_(step == Step::none ? Step::invalid_use : step),
      replaced_(replaced),
      note_(note),
      code_(code) {
  // Out of memory while describing a failure must not turn it into a crash:
  // the step and the code survive even if the paths cannot be kept.
  ATOMIC_STATE_DETAIL_TRY {
    paths_ = std::make_shared<const Paths>(
        Paths{std::string(subject), std::string(target)});
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL {}
}

inline const std::string& Status::path() const noexcept {
  static const std::string none;
  return paths_ ? paths_->subject : none;
}

inline const std::string& Status::target() const noexcept {
  static const std::string none;
  return paths_ ? paths_->target : none;
}

inline std::string Status::message() const {
  if (ok()) return "ok";
  std::string out(to_string(step_));
  if (!path().empty()) out.append(" ").append(path());
  if (step_ == Step::rename && !target().empty())
    out.append(" to ").append(target());
  out.append(": ").append(code_.message());
  if (replaced_)
    out.append(" (").append(target().empty() ? "the target" : target()).append(
        " was replaced, but the replacement is not known to be durable)");
  for (const char* note : {note_, cleanup_note_})
    if (note != nullptr) out.append(" (").append(note).append(")");
  return out;
}

template <class T>
Result<T>::Result(Status status) noexcept : status_(std::move(status)) {
  if (status_.ok())
    status_ = Status(Step::invalid_use, std::make_error_code(std::errc::invalid_argument),
                     {}, {}, false, "Result built from a success Status without a value");
}

// ------------------------------------------------------------------ PosixFs --

inline int PosixFs::open_directory(const char* path) noexcept {
  return detail::negative_errno(::open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

inline int PosixFs::make_directory(const char* path, unsigned mode) noexcept {
  return detail::negative_errno(::mkdir(path, detail::to_mode(mode)));
}

inline int PosixFs::create_file(int dir_fd, const char* name,
                                unsigned mode) noexcept {
  return detail::negative_errno(
      ::openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
               detail::to_mode(mode)));
}

inline ssize_t PosixFs::write(int fd, const void* data,
                              std::size_t size) noexcept {
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
  if (errno != ENOTSUP && errno != EOPNOTSUPP && errno != ENOTTY && errno != EINVAL)
    return -errno;
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

inline int PosixFs::close(int fd) noexcept {
  return detail::negative_errno(::close(fd));
}

inline int PosixFs::rename(int dir_fd, const char* from,
                           const char* to) noexcept {
  return detail::negative_errno(::renameat(dir_fd, from, dir_fd, to));
}

inline int PosixFs::unlink(int dir_fd, const char* name) noexcept {
  return detail::negative_errno(::unlinkat(dir_fd, name, 0));
}

// --------------------------------------------------------- WriteTransaction --

// Takes over other's temp file and descriptors; other is left discarded.
template <class S, class Fs>
void WriteTransaction<S, Fs>::take(WriteTransaction& other) noexcept {
  fs_ = other.fs_;
  dir_fd_ = std::exchange(other.dir_fd_, -1);
  fd_ = std::exchange(other.fd_, -1);
  perm_ = other.perm_;
  phase_ = std::exchange(other.phase_, Phase::discarded);
  temp_exists_ = std::exchange(other.temp_exists_, false);
  has_dir_ = other.has_dir_;
  dir_len_ = other.dir_len_;
  name_len_ = other.name_len_;
  error_ = std::move(other.error_);
  std::memcpy(temp_, other.temp_, sizeof temp_);
  std::memcpy(buf_, other.buf_, dir_len_ + 1 + name_len_ + 1);
}

template <class S, class Fs>
WriteTransaction<S, Fs>::WriteTransaction(WriteTransaction&& other) noexcept
    : fs_(other.fs_) {
  take(other);
}

template <class S, class Fs>
WriteTransaction<S, Fs>& WriteTransaction<S, Fs>::operator=(
    WriteTransaction&& other) noexcept {
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
  return temp_exists_ ? std::string_view(temp_, 11) : std::string_view();
}

// The directory as messages show it; "." for a bare file name.
template <class S, class Fs>
std::string_view WriteTransaction<S, Fs>::shown_dir() const noexcept {
  return has_dir_ ? std::string_view(dir(), dir_len_) : std::string_view(".");
}

// The directory to put before a name in messages; empty for a bare file
// name, so that "state.json" is not shown as "./state.json".
template <class S, class Fs>
std::string_view WriteTransaction<S, Fs>::join_dir() const noexcept {
  return has_dir_ ? std::string_view(dir(), dir_len_) : std::string_view();
}

// Closes what is open and removes the temp file; false when the temp file
// could not be removed. Close errors are not reported: the descriptors are
// released either way and nothing written depends on them any more.
template <class S, class Fs>
bool WriteTransaction<S, Fs>::release() noexcept {
  bool removed = true;
  if (fd_ >= 0) (void)fs_->close(std::exchange(fd_, -1));
  if (temp_exists_) {
    removed = detail::retry_interrupted(
                  [&] { return fs_->unlink(dir_fd_, temp_); }) >= 0;
    temp_exists_ = false;
  }
  if (dir_fd_ >= 0) (void)fs_->close(std::exchange(dir_fd_, -1));
  return removed;
}

// Ends the transaction with the failure of `step` on the path
// subject_dir/subject_name: releases everything, then records and returns
// the Status. Every failure of a save goes through here.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::fail(Step step, int neg_errno,
                                     std::string_view subject_dir,
                                     std::string_view subject_name,
                                     const char* note) noexcept {
  if (phase_ == Phase::open) phase_ = Phase::failed;
  const bool temp_removed = release();
  const bool replaced = step == Step::sync_directory && phase_ == Phase::committed;
  const std::error_code code = detail::system_error(neg_errno);
  ATOMIC_STATE_DETAIL_TRY {
    error_ = Status(step, code, detail::join_path(subject_dir, subject_name),
                    detail::join_path(join_dir(), std::string_view(name(), name_len_)),
                    replaced, note);
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL { error_ = Status(step, code, {}, {}, replaced, note); }
  if (!temp_removed) error_.cleanup_note_ = "the temp file could not be removed";
  return error_;
}

template <class S, class Fs>
Status WriteTransaction<S, Fs>::finished() const noexcept {
  if (!error_.ok()) return error_;
  return Status(Step::invalid_use, std::make_error_code(std::errc::bad_file_descriptor),
                {}, {}, false,
                phase_ == Phase::committed ? "the transaction was already committed"
                                           : "the transaction was discarded");
}

template <class S, class Fs>
void WriteTransaction<S, Fs>::discard() noexcept {
  if (phase_ != Phase::open) return;
  phase_ = Phase::discarded;
  (void)release();
}

template <class S, class Fs>
Status WriteTransaction<S, Fs>::open(std::string_view path,
                                     unsigned perm) noexcept {
  const auto invalid = [&](std::errc code, const char* why) {
    phase_ = Phase::failed;
    error_ = Status(Step::check_path, std::make_error_code(code), path, path,
                    false, why);
    return error_;
  };
  if (perm > 07777) return invalid(std::errc::invalid_argument, "mode above 07777");
  if (path.empty()) return invalid(std::errc::invalid_argument, "empty path");
  if (path.find('\0') != std::string_view::npos)
    return invalid(std::errc::invalid_argument, "path contains a NUL byte");
  if (path.size() >= ATOMIC_STATE_PATH_MAX)
    return invalid(std::errc::filename_too_long, "path too long");
  const std::size_t slash = path.rfind('/');
  const std::string_view base =
      slash == std::string_view::npos ? path : path.substr(slash + 1);
  if (base.empty() || base == "." || base == "..")
    return invalid(std::errc::is_a_directory, "the path names a directory");
  // Caught here rather than at the rename, after every byte was written.
  if (base.size() > ATOMIC_STATE_NAME_MAX)
    return invalid(std::errc::filename_too_long, "file name too long");

  std::string_view parent = ".";
  has_dir_ = slash != std::string_view::npos;
  if (has_dir_) {
    parent = path.substr(0, slash);
    while (parent.size() > 1 && parent.back() == '/') parent.remove_suffix(1);
    if (parent.empty()) parent = "/";
  }
  perm_ = perm;
  dir_len_ = parent.size();
  name_len_ = base.size();
  std::memcpy(buf_, parent.data(), dir_len_);
  buf_[dir_len_] = '\0';
  std::memcpy(buf_ + dir_len_ + 1, base.data(), name_len_);
  buf_[dir_len_ + 1 + name_len_] = '\0';

  dir_fd_ = detail::retry_interrupted([&] { return fs_->open_directory(dir()); });
  if (dir_fd_ == -ENOENT) {
    dir_fd_ = -1;
    if (Status made = make_parent_directories(); !made) return made;
    dir_fd_ = detail::retry_interrupted([&] { return fs_->open_directory(dir()); });
  }
  if (dir_fd_ < 0) return fail(Step::open_directory, std::exchange(dir_fd_, -1), shown_dir());
  return create_temp_file();
}

// mkdir -p of dir(): walks up to the deepest existing ancestor, then creates
// each missing level downward, syncing the directory that gained an entry so
// that a first save into a new tree is as durable as any other.
template <class S, class Fs>
Status WriteTransaction<S, Fs>::make_parent_directories() noexcept {
  const char* const path = buf_;  // dir() is NUL-terminated at dir_len_
  std::size_t end = dir_len_;
  const auto make = [&](std::size_t at) {
    return on_prefix(at, [&](const char* level) {
      return detail::retry_interrupted([&] { return fs_->make_directory(level, 0755); });
    });
  };

  // Upward: find the first level that exists or can be created.
  std::size_t levels_missing = 0;
  for (;;) {
    const int r = make(end);
    if (r == 0) {
      if (Status synced = sync_parent_of(end); !synced) return synced;
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
    if (Status synced = sync_parent_of(end); !synced) return synced;
  }
  return {};
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
      int r = detail::retry_interrupted([&] { return fs_->open_directory(parent); });
      if (r >= 0) {
        const int fd = r;
        r = detail::retry_interrupted([&] { return fs_->sync_full(fd); });
        (void)fs_->close(fd);  // read-only descriptor: nothing to lose
      }
      return r;
    };
    const int r = relative ? sync_directory(".") : on_prefix(stop, sync_directory);
    if (r >= 0) return {};
    return fail(Step::sync_directory, r,
                relative ? std::string_view(".") : std::string_view(buf_, stop));
  }
}

template <class S, class Fs>
Status WriteTransaction<S, Fs>::create_temp_file() noexcept {
  int r = -EEXIST;
  for (int attempt = 0; attempt < ATOMIC_STATE_TEMP_NAME_ATTEMPTS && r == -EEXIST;
       ++attempt) {
    detail::make_temp_name(temp_);
    r = detail::retry_interrupted(
        [&] { return fs_->create_file(dir_fd_, temp_, 0600); });
  }
  if (r < 0)
    return fail_on_temp(Step::create_temp_file, r,
                        r == -EEXIST ? "every temp name tried was taken" : nullptr);
  fd_ = r;
  temp_exists_ = true;
  return {};
}

template <class S, class Fs>
Status WriteTransaction<S, Fs>::write(std::string_view data) noexcept {
  if (phase_ != Phase::open) return finished();
  bool stalled = false;
  const int r = detail::write_all(*fs_, fd_, data.data(), data.size(), stalled);
  if (r < 0)
    return fail_on_temp(Step::write_data, r,
                        stalled ? "the write kept returning 0 bytes" : nullptr);
  return {};
}

template <class S, class Fs>
Status WriteTransaction<S, Fs>::commit() noexcept {
  if (phase_ != Phase::open) return finished();
  const int fd = fd_;
  // The mode is set before the sync so that the sync covers it too.
  int r = detail::retry_interrupted([&] { return fs_->set_mode(fd, perm_); });
  if (r < 0) return fail_on_temp(Step::set_permissions, r);

  // A failed sync is never retried: after a writeback error the kernel may
  // already have dropped the dirty pages, so a second sync would "succeed".
  if constexpr (S::file == SyncLevel::full)
    r = detail::retry_interrupted([&] { return fs_->sync_full(fd); });
  else if constexpr (S::file == SyncLevel::data)
    r = detail::retry_interrupted([&] { return fs_->sync_data(fd); });
  if (r < 0) return fail_on_temp(Step::sync_file, r);

  // close() is never retried: the descriptor is gone even when it fails,
  // and EINTR loses nothing once the data has been handed over.
  r = fs_->close(std::exchange(fd_, -1));
  if (r < 0 && r != -EINTR) return fail_on_temp(Step::close_temp_file, r);

  r = detail::retry_interrupted([&] { return fs_->rename(dir_fd_, temp_, name()); });
  if (r < 0) return fail_on_temp(Step::rename, r);
  temp_exists_ = false;
  phase_ = Phase::committed;

  if constexpr (S::directory) {
    const int dir_fd = dir_fd_;
    r = detail::retry_interrupted([&] { return fs_->sync_full(dir_fd); });
    if (r < 0) return fail(Step::sync_directory, r, shown_dir());
  }
  (void)release();
  return {};
}

// ------------------------------------------------------------- AtomicWriter --

template <class S, class Fs>
Result<typename AtomicWriter<S, Fs>::Transaction> AtomicWriter<S, Fs>::begin(
    const std::filesystem::path& path, unsigned perm) & noexcept {
  Transaction transaction(fs_);
  if (Status opened = transaction.open(path.native(), perm); !opened)
    return opened;
  return Result<Transaction>(std::move(transaction));
}

template <class S, class Fs>
Status AtomicWriter<S, Fs>::write(const std::filesystem::path& path,
                                  std::string_view data,
                                  unsigned perm) noexcept {
  Transaction transaction(fs_);
  if (Status opened = transaction.open(path.native(), perm); !opened)
    return opened;
  if (Status written = transaction.write(data); !written) return written;
  return transaction.commit();
}

inline Status write_atomic(const std::filesystem::path& path,
                           std::string_view data, unsigned perm) noexcept {
  return AtomicWriter<>{}.write(path, data, perm);
}

}  // inline namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

#undef ATOMIC_STATE_DETAIL_TRY
#undef ATOMIC_STATE_DETAIL_CATCH_ALL
#undef ATOMIC_STATE_DETAIL_CAT3
#undef ATOMIC_STATE_DETAIL_ABI_NAME
#undef ATOMIC_STATE_DETAIL_ABI
#undef ATOMIC_STATE_DETAIL_HAS_FDATASYNC

#endif  // ATOMIC_STATE_HPP_INCLUDED
