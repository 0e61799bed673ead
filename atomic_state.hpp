// atomic_state.hpp - crash-safe file replacement and program state for C++17,
// in one header.
// Version 0.2.0 - https://github.com/atomic-state/atomic_state (SPDX: MIT)
//
// CONTENTS (generated from the first line of each part of include/atomic_state/:
// each reads top to bottom, declarations then implementation)
//   status.hpp .......... Step, Status, Result: what every operation returns
//   fs.hpp .............. sync policies, FileInfo, PosixFs and its traits: every system call
//   path.hpp ............ PathView and the checks of a path: paths taken without allocating
//   writer.hpp .......... WriteOptions, WriteTransaction, AtomicWriter, write_atomic, the sweep
//   directory.hpp ....... AtomicDirectory: a directory kept open for repeated saves
//   batch.hpp ........... Batch: several files replaced as one, the last never before the rest
//   snapshot.hpp ........ SnapshotOptions, SnapshotWriter, SnapshotReader: sets published whole
//   logging.hpp ......... Level, Field, LogSink, NullSink, LogfmtSink: log records and sinks
//   json.hpp ............ parse_json, format_json: JSON that reads back exactly (Boost.JSON)
//   state.hpp ........... StateField tables, State, update_state: a state type described once
//   state_manager.hpp ... StateOptions, RunLock, Loaded, StateTraits, StateManager
//
// WHAT IT DOES
//   AtomicWriter replaces a file so that a crash, a power cut or a full disk
//   leaves either the old content or the new content, never a torn file:
//   temp file in the same directory (created 0600, O_EXCL, O_NOFOLLOW,
//   O_CLOEXEC, and locked so that a sweep of stale temp files leaves it
//   alone), write every byte, fchmod to the final mode, fsync, close, rename
//   over the target, fsync the directory. Any failure before the rename
//   removes the temp file and leaves the target byte-for-byte untouched. No
//   save ever waits for a lock: nothing another process holds can stop one.
//
//   StateManager remembers what a periodic job last processed in
//   <dir>/state.json (Boost.JSON), decides whether new data is worth
//   processing, and saves the next state through AtomicWriter. Every decision
//   is logged through a sink of the caller's choosing (see LogSink). A run
//   lock keeps runs from overlapping; a load says where its state came from
//   (saved, first run, recovered from a corrupt file, the previous state);
//   schemas carry versions and upgrades; cursors may be slots, not clocks.
//
// USAGE CONTRACT
//   - Copy this file anywhere and #include it. It needs C++17 and POSIX
//     (Linux, the BSDs, macOS).
//   - json.hpp, state.hpp and state_manager.hpp need Boost.JSON (1.81 or
//     later): either link it (-lboost_json), or compile Boost.JSON's own
//     source file (src.hpp, in its json directory) into exactly one .cpp
//     file of the program. This header never includes that file itself.
//     Define ATOMIC_STATE_NO_JSON to leave those three out; the rest then
//     needs nothing but the C++ library.
//   - Nothing here throws and nothing aborts on bad input: every operation
//     returns a Status (or a Result<T>) naming the step, the path, the
//     target and the OS reason, and running out of memory while describing a
//     failure costs its text, never the failure. What allocates a
//     std::string can throw std::bad_alloc as any std::string does: the
//     StateManager constructor, Status::message(), to_rfc3339(),
//     update_state(). Result::value() of a failure is a caller bug: it
//     aborts (see ATOMIC_STATE_ON_MISSING_VALUE).
//   - The target and its temp file live in the same directory, so the rename
//     never crosses a filesystem. A symlink at the target path is replaced by
//     the new file, not followed.
//   - Durability is chosen by the SyncPolicy: FullSync (default), DataSync,
//     NoSync (atomic against a process crash only, not a power loss).
//   - Every system call goes through the Fs policy (PosixFs by default), so
//     a test can fail any call it likes.
//
// CONFIGURATION (define before including; each has a sensible default)
//   ATOMIC_STATE_ON_MISSING_VALUE(st)  what Result::value() without a value
//                                      does before it aborts (prints st)
//   ATOMIC_STATE_EINTR_RETRY_LIMIT     retries of a call interrupted by a
//                                      signal or a write that made no
//                                      progress, before giving up (10000)
//   ATOMIC_STATE_TEMP_NAME_ATTEMPTS    temp names tried before giving up (100)
//   ATOMIC_STATE_PATH_MAX              longest path accepted, in bytes,
//                                      terminating NUL included (PATH_MAX)
//   ATOMIC_STATE_NAME_MAX              longest file name accepted (NAME_MAX)
//   ATOMIC_STATE_NO_JSON               leave out the JSON parts (no Boost)
//   ATOMIC_STATE_MAX_STATE_SIZE        default size limit of a state file,
//                                      in bytes (1 MiB); settable per manager
//   ATOMIC_STATE_JSON_MAX_DEPTH        deepest JSON nesting read or written
//                                      (32)
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
//
// Generated from include/atomic_state/ by scripts/amalgamate: edit the parts.

//   USE OR OTHER DEALINGS IN THE SOFTWARE.

// Two different copies of this header in one translation unit would otherwise
// be silently reduced to whichever came first by the include guard.
#if defined(ATOMIC_STATE_VERSION_MAJOR) &&                                 \
    (ATOMIC_STATE_VERSION_MAJOR != 0 || ATOMIC_STATE_VERSION_MINOR != 2 || \
     ATOMIC_STATE_VERSION_PATCH != 0)
#error "atomic_state.hpp: a different version of this header was already included"
#endif

// Below C++17 this #error is the only error: the guard then skips the rest.
#if __cplusplus < 201703L
#error "atomic_state.hpp needs C++17 or later (compile with -std=c++17)"
#define ATOMIC_STATE_HPP_INCLUDED
#endif

#ifndef ATOMIC_STATE_HPP_INCLUDED
#define ATOMIC_STATE_HPP_INCLUDED

// ========================================================== include/atomic_state/preamble.hpp ====

#include <limits.h>  // NAME_MAX, PATH_MAX

// ================================================================ VERSION ====
#define ATOMIC_STATE_VERSION_MAJOR 0
#define ATOMIC_STATE_VERSION_MINOR 2
#define ATOMIC_STATE_VERSION_PATCH 0
#define ATOMIC_STATE_VERSION_STRING "0.2.0"
#define ATOMIC_STATE_VERSION                                               \
  (ATOMIC_STATE_VERSION_MAJOR * 10000 + ATOMIC_STATE_VERSION_MINOR * 100 + \
   ATOMIC_STATE_VERSION_PATCH)

// ========================================================== CONFIGURATION ====
#ifndef ATOMIC_STATE_EINTR_RETRY_LIMIT
#define ATOMIC_STATE_EINTR_RETRY_LIMIT 10000
#endif

#ifndef ATOMIC_STATE_TEMP_NAME_ATTEMPTS
#define ATOMIC_STATE_TEMP_NAME_ATTEMPTS 100
#endif

#ifndef ATOMIC_STATE_MAX_STATE_SIZE
#define ATOMIC_STATE_MAX_STATE_SIZE 1048576  // 1 MiB
#endif

#ifndef ATOMIC_STATE_JSON_MAX_DEPTH
#define ATOMIC_STATE_JSON_MAX_DEPTH 32
#endif

// try/catch that compile to nothing under -fno-exceptions. The caught
// exception is always named, so that the handler may read it; without
// exceptions the name refers to a default-constructed one, never reached.
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define ATOMIC_STATE_DETAIL_TRY try
// A type and a name, not expressions: they cannot take parentheses.
// NOLINTNEXTLINE(bugprone-macro-parentheses)
#define ATOMIC_STATE_DETAIL_CATCH(type, name) catch (const type& name)
#define ATOMIC_STATE_DETAIL_CATCH_ALL catch (...)
#else
#define ATOMIC_STATE_DETAIL_TRY if (true)
#define ATOMIC_STATE_DETAIL_CATCH(type, name) \
  else if ([[maybe_unused]] const type& name = ::atomic_state::detail::no_exception<type>(); false)
#define ATOMIC_STATE_DETAIL_CATCH_ALL else
#endif

// The inline namespace carries the version, so two vendored copies of
// different versions linked into one program cannot violate the ODR.
#define ATOMIC_STATE_DETAIL_PASTE6(a, b, c, d, e, f) a##b##c##d##e##f
#define ATOMIC_STATE_DETAIL_ABI_NAME(ma, mi, pa) ATOMIC_STATE_DETAIL_PASTE6(v, ma, _, mi, _, pa)
#define ATOMIC_STATE_DETAIL_ABI                                                        \
  ATOMIC_STATE_DETAIL_ABI_NAME(ATOMIC_STATE_VERSION_MAJOR, ATOMIC_STATE_VERSION_MINOR, \
                               ATOMIC_STATE_VERSION_PATCH)

// =============================================================== PLATFORM ====
// All platform-specific code lives in this block and in PosixFs below.
#if defined(_WIN32)
#error \
    "atomic_state.hpp supports POSIX systems only (Linux, BSD, macOS); Windows is not supported yet"
#elif !(defined(__unix__) || defined(__unix) || defined(__APPLE__))
#error "atomic_state.hpp supports POSIX systems only (Linux, BSD, macOS); this platform is not one"
#endif

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

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

namespace detail {
// What ATOMIC_STATE_DETAIL_CATCH names when there are no exceptions.
template <class Exception>
const Exception& no_exception() noexcept {
  static const Exception none{};
  return none;
}
}  // namespace detail

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

// ============================================================ include/atomic_state/status.hpp ====

#include <atomic>        // std::atomic: the shared text's count
#include <cstddef>       // std::size_t
#include <cstdio>        // std::fputs: print_missing_value
#include <cstdlib>       // std::abort: Result::value() without a value
#include <cstring>       // std::memcpy
#include <new>           // std::nothrow, std::bad_alloc
#include <optional>      // std::optional: Result
#include <string>        // std::string: Status::message()
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code, std::errc, std::make_error_code
#include <type_traits>   // std::enable_if_t, std::is_*_v
#include <utility>       // std::move, std::forward, std::exchange

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// ------------------------------------------------------------------ results --

/// The step of the protocol at which an operation failed.
enum class Step : unsigned char {
  none,              ///< no failure
  check_path,        ///< the path, mode or target given is unusable
  create_directory,  ///< mkdir of a missing parent directory
  open_directory,    ///< opening the parent directory
  create_temp_file,  ///< creating the temp file beside the target
  write_data,        ///< writing the bytes into the temp file
  set_permissions,   ///< fchmod of the temp file to the final mode
  sync_file,         ///< fsync/fdatasync of the temp file
  close_temp_file,   ///< close of the temp file
  rename,            ///< rename of the temp file over the target
  sync_directory,    ///< fsync of a directory whose entries changed
  open_file,         ///< opening a file to read it (the state file)
  check_file,        ///< the file read is not a regular file, or too large
  read_file,         ///< reading the file's bytes
  parse,             ///< the text is not JSON this library accepts
  copy_aside,        ///< keeping a copy of a corrupt state file beside it
  upgrade,           ///< bringing a state file of an older schema version up to date
  serialize,         ///< the value cannot be written as JSON that reads back
  remove_temp_file,  ///< listing or removing stale temp files of killed saves
  lock_run,          ///< taking the run lock of a state (StateManager::try_lock_run)
  keep_previous,     ///< linking the state file being replaced as its .prev
  invalid_use,       ///< a caller bug, e.g. a second commit()
  move_aside
  [[deprecated("a corrupt state file is copied aside now: Step::copy_aside; removed in 0.3.0")]] =
      copy_aside,
};

/// Lower-case words naming a step, as used in messages ("create temp file").
constexpr std::string_view to_string(Step step) noexcept;

namespace detail {
// The text of a failed Status (subject, target and detail, each
// NUL-terminated) in one block that copies share. It is allocated without
// throwing, so running out of memory while describing a failure costs the
// text, never the failure: the Status keeps its step and code.
class StatusText {
 public:
  static StatusText* make(std::string_view subject, std::string_view target,
                          std::string_view detail) noexcept {
    const std::size_t bytes = subject.size() + target.size() + detail.size() + 3;
    void* memory = ::operator new(sizeof(StatusText) + bytes, std::nothrow);
    if (memory == nullptr) return nullptr;
    auto* text = new (memory) StatusText(subject.size(), target.size(), detail.size());
    char* out = text->chars();
    for (const std::string_view part : {subject, target, detail}) {
      if (!part.empty()) std::memcpy(out, part.data(), part.size());
      out += part.size();
      *out++ = '\0';
    }
    return text;
  }
  static StatusText* share(StatusText* text) noexcept {
    if (text != nullptr) text->count_.fetch_add(1, std::memory_order_relaxed);
    return text;
  }
  static void drop(StatusText* text) noexcept {
    if (text == nullptr || text->count_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    text->~StatusText();
#ifndef __clang_analyzer__  // it cannot follow the count, and sees copies use freed text
    ::operator delete(static_cast<void*>(text));
#endif
  }

  std::string_view subject() const noexcept { return {chars(), subject_}; }
  std::string_view target() const noexcept { return {chars() + subject_ + 1, target_}; }
  std::string_view detail() const noexcept {
    return {chars() + subject_ + 1 + target_ + 1, detail_};
  }

 private:
  StatusText(std::size_t subject, std::size_t target, std::size_t detail) noexcept
      : subject_(subject), target_(target), detail_(detail) {}
  char* chars() noexcept { return reinterpret_cast<char*>(this + 1); }
  const char* chars() const noexcept { return reinterpret_cast<const char*>(this + 1); }

  std::atomic<std::size_t> count_{1};
  std::size_t subject_, target_, detail_;
};
}  // namespace detail

/// The outcome of an operation: success, or the step, paths and OS reason of
/// its failure. Success costs nothing; a failure allocates its text once
/// (without throwing), and copies share it, so copying a Status never
/// allocates or throws. If memory runs out while a failure is described,
/// the Status keeps its step and code; path(), target() and detail() are
/// then empty (under -fno-exceptions too).
class [[nodiscard]] Status {
 public:
  /// Success.
  Status() noexcept = default;

  /// A failure at `step` with error `code`. `subject` is the path the step
  /// worked on; `target` is the file being replaced (or the rename's
  /// destination); `replaced` says the target already holds the new data;
  /// `note` is an optional static explanation appended to the message.
  /// `detail` is an explanation made at run time (which field, which byte).
  /// For code of one's own that returns a Status (Batch::commit's
  /// before_last); the library builds its own. A failure always has a step:
  /// Step::none is taken as Step::invalid_use.
  Status(Step step, std::error_code code, std::string_view subject, std::string_view target = {},
         bool replaced = false, const char* note = nullptr, std::string_view detail = {}) noexcept;

  Status(const Status& other) noexcept;
  Status(Status&& other) noexcept;
  Status& operator=(const Status& other) noexcept;
  Status& operator=(Status&& other) noexcept;
  ~Status() { detail::StatusText::drop(text_); }

  /// True on success.
  bool ok() const noexcept { return step_ == Step::none; }
  explicit operator bool() const noexcept { return ok(); }

  /// The step that failed; Step::none on success.
  Step step() const noexcept { return step_; }
  /// The reason: an OS errno in the system category for OS failures, a
  /// std::errc in the generic category for the library's own refusals,
  /// Boost.JSON's category for parse errors. Empty on success.
  std::error_code code() const noexcept { return code_; }
  /// The path the failed step worked on (temp file, directory, ...).
  std::string_view path() const noexcept { return text_ ? text_->subject() : std::string_view(); }
  /// The file being replaced or read.
  std::string_view target() const noexcept { return text_ ? text_->target() : std::string_view(); }
  /// The run-time explanation (which field, which byte), or empty.
  std::string_view detail() const noexcept { return text_ ? text_->detail() : std::string_view(); }
  /// True when the target already holds the new content although the
  /// operation failed: the rename happened, but a step after it did not
  /// (the directory sync that makes it durable, or the checked close of an
  /// unnamed temp file, which comes after its rename).
  bool replaced() const noexcept { return replaced_; }

  /// What the caller was doing, e.g. "write state file"; empty if not set.
  std::string_view context() const noexcept {
    return context_ ? std::string_view(context_) : std::string_view();
  }
  /// This failure seen from a caller's task: message() then starts with
  /// "<context>: ". `context` must outlive every copy (a string literal).
  /// A success stays a success.
  Status within(const char* context) const noexcept;
  /// This failure with one more static note in its message (a string
  /// literal), such as "the temp file could not be removed". A Status
  /// keeps two notes; a success stays a success.
  Status with_note(const char* note) const noexcept;

  /// A sentence: "[<context>: ]<step>[ <path>][ for <target>]: <reason>",
  /// the step in to_string's words and the reason code().message(), then,
  /// each in parentheses when present: "<target> was replaced, but the
  /// replacement is not known to be durable" (replaced()), the notes, the
  /// detail. The target is left out when empty or the same as the path;
  /// rename, copy aside and keep previous say " to " instead of " for ".
  /// E.g. "create temp file /var/lib/c/.tmp-Ab12Cd for
  /// /var/lib/c/state.json: Permission denied", "rename /d/.tmp-Ab12Cd to
  /// /d/state.json: No space left on device". "ok" on success. Allocates
  /// the string (std::bad_alloc when memory runs out).
  std::string message() const;

 private:
  template <class SyncPolicy, class Fs>
  friend class Batch;
  // This failure with `more` after its run-time detail (a batch's list of
  // the targets it replaced); everything else kept.
  Status with_detail(std::string_view more) const noexcept;

  Step step_ = Step::none;
  bool replaced_ = false;
  const char* context_ = nullptr;
  const char* notes_[2] = {nullptr, nullptr};
  std::error_code code_;
  detail::StatusText* text_ = nullptr;  // null on success or when memory ran out
};

namespace detail {
// What Result::value() does without a value: says so on stderr, naming the
// failure, so that the program's last words explain its end.
inline void print_missing_value(const Status& status) noexcept;
}  // namespace detail

// A caller bug: Result::value(), operator* or operator-> without a value.
// By default it prints "atomic_state: Result::value() called on a failure:
// <message>" to stderr. Whatever this does, the program then aborts, in
// every build mode: a default-constructed value would be garbage the
// program then trusts.
#ifndef ATOMIC_STATE_ON_MISSING_VALUE
#define ATOMIC_STATE_ON_MISSING_VALUE(status) ::atomic_state::detail::print_missing_value(status)
#endif

/// A value of type T, or the Status of the failure that prevented it.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T&& value) noexcept(std::is_nothrow_move_constructible_v<T>) : value_(std::move(value)) {}
  Result(const T& value) noexcept(std::is_nothrow_copy_constructible_v<T>) : value_(value) {}
  /// A failure. Given a success Status (a caller bug), the Result still
  /// holds an error rather than an empty success: Step::invalid_use,
  /// std::errc::invalid_argument.
  Result(Status status) noexcept;
  /// The Result of a type derived from T, as a Result<T>: a
  /// Result<Loaded<State>> where a Result<State> is wanted.
  template <class U, std::enable_if_t<!std::is_same_v<U, T> && std::is_base_of_v<T, U>, int> = 0>
  Result(Result<U>&& other) noexcept(std::is_nothrow_move_constructible_v<T>)
      : status_(std::move(other.status_)) {
    if (other.value_) value_.emplace(std::move(static_cast<T&>(*other.value_)));
  }
  template <class U, std::enable_if_t<!std::is_same_v<U, T> && std::is_base_of_v<T, U>, int> = 0>
  Result(const Result<U>& other) noexcept(std::is_nothrow_copy_constructible_v<T>)
      : status_(other.status_) {
    if (other.value_) value_.emplace(static_cast<const T&>(*other.value_));
  }

  bool has_value() const noexcept { return value_.has_value(); }
  explicit operator bool() const noexcept { return has_value(); }

  /// The value. Without one: ATOMIC_STATE_ON_MISSING_VALUE(status()) (by
  /// default it prints the failure to stderr), then std::abort(), in every
  /// build mode. Check first, or use value_or().
  T& value() & noexcept { return checked(), *value_; }
  const T& value() const& noexcept { return checked(), *value_; }
  T&& value() && noexcept { return checked(), std::move(*value_); }
  T& operator*() & noexcept { return value(); }
  const T& operator*() const& noexcept { return value(); }
  T&& operator*() && noexcept { return std::move(*this).value(); }
  T* operator->() noexcept { return &value(); }
  const T* operator->() const noexcept { return &value(); }

  /// The value, or `fallback` converted to T when there is none.
  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? *value_ : static_cast<T>(std::forward<U>(fallback));
  }
  template <class U>
  T value_or(U&& fallback) && {
    return has_value() ? std::move(*value_) : static_cast<T>(std::forward<U>(fallback));
  }

  /// Success when a value is held, otherwise the failure.
  const Status& status() const noexcept { return status_; }

 private:
  template <class>
  friend class Result;

  void checked() const noexcept {
    if (has_value()) return;
    ATOMIC_STATE_ON_MISSING_VALUE(status_);
    std::abort();
  }
  std::optional<T> value_;
  Status status_;
};

// ========================================================= implementation ====

// ------------------------------------------------------------------ results --
constexpr std::string_view to_string(Step step) noexcept {
  switch (step) {
    case Step::none:
      return "ok";
    case Step::check_path:
      return "check path";
    case Step::create_directory:
      return "create directory";
    case Step::open_directory:
      return "open directory";
    case Step::create_temp_file:
      return "create temp file";
    case Step::write_data:
      return "write data";
    case Step::set_permissions:
      return "set permissions";
    case Step::sync_file:
      return "sync file";
    case Step::close_temp_file:
      return "close temp file";
    case Step::rename:
      return "rename";
    case Step::sync_directory:
      return "sync directory";
    case Step::open_file:
      return "open file";
    case Step::check_file:
      return "check file";
    case Step::read_file:
      return "read file";
    case Step::parse:
      return "parse";
    case Step::copy_aside:
      return "copy aside";
    case Step::upgrade:
      return "upgrade";
    case Step::serialize:
      return "serialize";
    case Step::remove_temp_file:
      return "remove temp file";
    case Step::lock_run:
      return "lock run";
    case Step::keep_previous:
      return "keep previous";
    case Step::invalid_use:
      return "invalid use";
  }
  return "unknown step";
}

inline Status::Status(Step step, std::error_code code, std::string_view subject,
                      std::string_view target, bool replaced, const char* note,
                      std::string_view detail) noexcept
    : step_(step == Step::none ? Step::invalid_use : step),
      replaced_(replaced),
      notes_{note, nullptr},
      code_(code),
      text_(detail::StatusText::make(subject, target, detail)) {}

inline Status::Status(const Status& other) noexcept
    : step_(other.step_),
      replaced_(other.replaced_),
      context_(other.context_),
      notes_{other.notes_[0], other.notes_[1]},
      code_(other.code_),
      text_(detail::StatusText::share(other.text_)) {}

inline Status::Status(Status&& other) noexcept
    : step_(other.step_),
      replaced_(other.replaced_),
      context_(other.context_),
      notes_{other.notes_[0], other.notes_[1]},
      code_(other.code_),
      text_(std::exchange(other.text_, nullptr)) {}

inline Status& Status::operator=(const Status& other) noexcept {
  if (this != &other) *this = Status(other);
  return *this;
}

inline Status& Status::operator=(Status&& other) noexcept {
  if (this == &other) return *this;
  detail::StatusText::drop(std::exchange(text_, std::exchange(other.text_, nullptr)));
  step_ = other.step_;
  replaced_ = other.replaced_;
  context_ = other.context_;
  notes_[0] = other.notes_[0];
  notes_[1] = other.notes_[1];
  code_ = other.code_;
  return *this;
}

inline Status Status::within(const char* context) const noexcept {
  Status out = *this;
  if (!ok()) out.context_ = context;
  return out;
}

inline Status Status::with_note(const char* note) const noexcept {
  Status out = *this;
  if (!ok()) out.notes_[out.notes_[0] == nullptr ? 0 : 1] = note;
  return out;
}

inline Status Status::with_detail(std::string_view more) const noexcept {
  if (ok()) return *this;
  char joined[2048];  // cut short: only the message loses
  std::size_t size = 0;
  for (const std::string_view part :
       {detail(), detail().empty() ? std::string_view() : "; ", more}) {
    const std::size_t n = part.size() < sizeof joined - size ? part.size() : sizeof joined - size;
    if (n > 0) std::memcpy(joined + size, part.data(), n);
    size += n;
  }
  Status out = *this;
  detail::StatusText::drop(out.text_);
  out.text_ = detail::StatusText::make(path(), target(), std::string_view(joined, size));
  return out;
}

inline std::string Status::message() const {
  if (ok()) return "ok";
  std::string out;
  if (context_ != nullptr) out.append(context_).append(": ");
  out.append(to_string(step_));
  const std::string_view subject = path(), file = target();
  if (!subject.empty()) out.append(" ").append(subject);
  if (!file.empty() && file != subject)
    out.append(step_ == Step::rename || step_ == Step::copy_aside || step_ == Step::keep_previous
                   ? " to "
                   : " for ")
        .append(file);
  out.append(": ").append(code_.message());
  if (replaced_)
    out.append(" (")
        .append(file.empty() ? std::string_view("the target") : file)
        .append(" was replaced, but the replacement is not known to be durable)");
  for (const char* note : notes_)
    if (note != nullptr) out.append(" (").append(note).append(")");
  if (!detail().empty()) out.append(" (").append(detail()).append(")");
  return out;
}

namespace detail {
inline void print_missing_value(const Status& status) noexcept {
  std::fputs("atomic_state: Result::value() called on a failure: ", stderr);
  ATOMIC_STATE_DETAIL_TRY { std::fputs(status.message().c_str(), stderr); }
  ATOMIC_STATE_DETAIL_CATCH_ALL { std::fputs(to_string(status.step()).data(), stderr); }
  std::fputs("\n", stderr);
}
}  // namespace detail

template <class T>
Result<T>::Result(Status status) noexcept : status_(std::move(status)) {
  if (status_.ok())
    status_ = Status(Step::invalid_use, std::make_error_code(std::errc::invalid_argument), {}, {},
                     false, "Result built from a success Status without a value");
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

// ================================================================ include/atomic_state/fs.hpp ====

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

#include <cerrno>    // errno, E*
#include <charconv>  // std::from_chars, std::to_chars: /proc/self/status, /proc/self/fd
#include <cstdint>   // std::uint32_t, std::uint64_t, std::int64_t

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

// ============================================================== include/atomic_state/path.hpp ====

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// -------------------------------------------------------------------- paths --

/// A path the library reads but does not keep: a view of the caller's
/// characters, built implicitly from a string literal, a `const char*`, a
/// std::string, a std::string_view or a std::filesystem::path, so that
/// passing a path never allocates. It must outlive the call it is given to.
/// Every call refuses a path holding a NUL byte (Step::check_path, EINVAL)
/// or of ATOMIC_STATE_PATH_MAX bytes or more (ENAMETOOLONG).
class PathView {
 public:
  constexpr PathView(const char* path) noexcept : text_(path ? path : "") {}
  constexpr PathView(std::string_view path) noexcept : text_(path) {}
  PathView(const std::string& path) noexcept : text_(path) {}
  /// Any path type whose native() is a string of char that it keeps (a
  /// reference or a pointer), std::filesystem::path among them (this header
  /// does not include <filesystem> for it). A native() that makes a new
  /// string each call is refused: the view would outlive it.
  template <class Path, class Native = decltype(std::declval<const Path&>().native()),
            std::enable_if_t<std::is_convertible_v<Native, std::string_view> &&
                                 (std::is_lvalue_reference_v<Native> || std::is_pointer_v<Native>),
                             int> = 0>
  PathView(const Path& path) noexcept : text_(path.native()) {}

  constexpr std::string_view text() const noexcept { return text_; }

 private:
  std::string_view text_;
};

// ========================================================= implementation ====

// -------------------------------------------------------------------- paths --
namespace detail {

/// "dir/name" in a buffer of its own, for messages: never allocates (a
/// path too long for it is cut short, which only a message can show).
class JoinedPath {
 public:
  JoinedPath(std::string_view dir, std::string_view name) noexcept {
    add(dir);
    if (!dir.empty() && !name.empty() && dir.back() != '/') add("/");
    add(name);
  }
  std::string_view view() const noexcept { return {text_, size_}; }

 private:
  void add(std::string_view part) noexcept {
    const std::size_t n = part.size() < sizeof text_ - size_ ? part.size() : sizeof text_ - size_;
    if (n > 0) std::memcpy(text_ + size_, part.data(), n);
    size_ += n;
  }
  char text_[ATOMIC_STATE_PATH_MAX + ATOMIC_STATE_NAME_MAX + 2];
  std::size_t size_ = 0;
};

/// Why `path` can be given to no call at all, or null: the one rule of every
/// entry point, for files and directories alike.
inline const char* path_problem(std::string_view path, std::errc& code) noexcept {
  if (path.find('\0') != std::string_view::npos) {
    code = std::errc::invalid_argument;
    return "path contains a NUL byte";
  }
  if (path.size() >= ATOMIC_STATE_PATH_MAX) {
    code = std::errc::filename_too_long;
    return "path too long";
  }
  return nullptr;
}

/// A directory path checked by path_problem and NUL-terminated in a buffer
/// of its own; the empty path is the working directory.
class DirectoryPath {
 public:
  explicit DirectoryPath(std::string_view dir) noexcept : given_(dir) {
    if (dir.empty()) dir = ".";
    problem_ = path_problem(dir, code_);
    if (problem_ != nullptr) return;
    std::memcpy(text_, dir.data(), dir.size());
    text_[dir.size()] = '\0';
    size_ = dir.size();
  }
  bool ok() const noexcept { return problem_ == nullptr; }
  const char* c_str() const noexcept { return text_; }
  std::string_view view() const noexcept { return {text_, size_}; }
  /// The refusal, at `step`.
  Status problem(Step step) const noexcept {
    return Status(step, std::make_error_code(code_), given_, {}, false, problem_);
  }

 private:
  std::string_view given_;
  const char* problem_ = nullptr;
  std::errc code_{};
  char text_[ATOMIC_STATE_PATH_MAX] = {};
  std::size_t size_ = 0;
};

}  // namespace detail

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

// ============================================================ include/atomic_state/writer.hpp ====

#include <time.h>  // clock_gettime: temp names of forked processes differ

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

// ========================================================= include/atomic_state/directory.hpp ====

#include <memory>  // std::unique_ptr: the claim, whose address outlives moves

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

// ============================================================= include/atomic_state/batch.hpp ====

#include <algorithm>  // std::fill_n, std::find
#include <vector>     // std::vector: the files

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

template <class SyncPolicy = FullSync, class Fs = PosixFs>
class Batch {
  static_assert(is_sync_policy_v<SyncPolicy>,
                "Batch: SyncPolicy needs `static constexpr SyncLevel file` and `static "
                "constexpr bool directory` (see FullSync)");
  static_assert(is_filesystem_v<Fs>,
                "Batch: Fs needs every call of PosixFs that a save makes (see is_filesystem)");

 public:
  using Transaction = WriteTransaction<SyncPolicy, Fs>;
  using Directory = AtomicDirectory<SyncPolicy, Fs>;

  template <class F = Fs, std::enable_if_t<std::is_default_constructible_v<F>, int> = 0>
  Batch() noexcept : Batch(F()) {}
  explicit Batch(Fs fs) noexcept : fs_(static_cast<Fs&&>(fs)) {}
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;
  /// Discards what was not committed: the temp files are removed.
  ~Batch() { discard(); }

  /// Adds the file `path` with `data`, written to its temp file now (see
  /// AtomicWriter::write for the path's rules). The same target twice in
  /// one batch is refused (Step::check_path, EEXIST): the same name in the
  /// same directory, known by its device and inode as opened, whatever the
  /// spelling of its path or whether it came through a handle; and
  /// so is a directory, FIFO, socket or device at the target (check_path,
  /// EISDIR or EINVAL), before a byte is written. Failures: those of
  /// AtomicWriter::begin and of a write, and create_temp_file with ENOMEM
  /// when there is no memory for one more file; the batch keeps its other
  /// files.
  Status add(PathView path, std::string_view data, unsigned perm = 0644) noexcept;
  Status add(PathView path, std::string_view data, const WriteOptions& options) noexcept;
  /// Adds the file `name` of an open directory (a plain name, as
  /// AtomicDirectory::write takes); the directory must outlive the commit.
  Status add(Directory& dir, std::string_view name, std::string_view data,
             unsigned perm = 0644) noexcept;
  Status add(Directory& dir, std::string_view name, std::string_view data,
             const WriteOptions& options) noexcept;
  /// Adds a file to be streamed: write() to the transaction returned, then
  /// commit() the batch (the transaction's own commit() refuses:
  /// Step::invalid_use, EPERM). The
  /// pointer is valid until the batch's commit() or discard().
  Result<Transaction*> add_stream(PathView path, const WriteOptions& options = {}) noexcept;
  Result<Transaction*> add_stream(Directory& dir, std::string_view name,
                                  const WriteOptions& options = {}) noexcept;

  /// Makes room for `files` files, so that adding them and committing
  /// allocates nothing.
  void reserve(std::size_t files) noexcept;

  /// Commits every file added, as above. An empty batch is an error
  /// (Step::invalid_use, EINVAL), as is one holding a file whose streamed
  /// write failed (that failure; every temp file is removed). A failure
  /// after some renames lists them in its detail: "rename /d/.tmp-Ab12Cd
  /// to /d/state.json: No space left on device (replaced before the
  /// failure: /d/out/summary.json, /d/out/full.json)".
  Status commit() noexcept {
    return commit([]() noexcept { return Status(); });
  }
  /// The same, running `before_last()` (a callable returning a Status)
  /// once the files before the last are in place and their directories
  /// synced, right before the last rename; its failure stops the commit
  /// there. StateManager keeps the previous state at that point.
  template <class BeforeLast>
  Status commit(BeforeLast&& before_last) noexcept;
  /// Removes every temp file and forgets the files; no target is touched.
  void discard() noexcept;

  /// Files added and not yet committed or discarded.
  std::size_t size() const noexcept { return used_; }
  /// How many targets the last commit() replaced: all of them after a
  /// success, the first ones in order after a failure.
  std::size_t replaced() const noexcept { return replaced_; }
  /// What the batch's sweeps of stale temp files have done so far, added
  /// up. After a successful commit, each directory that gained a file by
  /// path is swept once in the batch's life (a directory known by its
  /// device and inode, whatever its spelling; a batch remembers as many
  /// directories as it has held files, forgetting the oldest past that), as
  /// AtomicWriter::remove_stale_temp_files does: one pass over its
  /// entries, looking only at names the library gives its temp files,
  /// never waiting on a lock, never removing one a live save holds, never
  /// allocating. A directory reached through an AtomicDirectory is its
  /// handle's to sweep (at its open). A sweep's failure is not the
  /// commit's: it counts nothing, and the commit succeeds. No sweep with
  /// an Fs that cannot list directories (is_state_filesystem_v).
  const TempSweep& swept() const noexcept { return swept_; }

 private:
  using FsRef = std::remove_reference_t<Fs>;
  using Steps = detail::TransactionSteps<Transaction>;  // all a batch takes of a transaction
  Transaction* next_file(FsRef& fs) noexcept;
  Status added(Transaction* file, const Status& opened, std::string_view data) noexcept;
  Status stopped(const Status& failure) noexcept;
  bool duplicate(const Transaction& file) const noexcept;
  void sweep_new_directories() noexcept;
  bool first_sweep_of(const detail::DirectoryIdentity& dir) noexcept;

  Fs fs_;
  // The files in use are the first used_; the others wait to be reused, so
  // that a batch filled run after run allocates nothing.
  std::vector<std::unique_ptr<Transaction>> files_;
  std::size_t used_ = 0;
  std::size_t replaced_ = 0;
  std::vector<detail::DirectoryIdentity> swept_directories_;  // at most files_.size()
  std::size_t forget_next_ = 0;
  TempSweep swept_;
};

// ========================================================= implementation ====

// ------------------------------------------------------------------- Batch --

template <class S, class Fs>
void Batch<S, Fs>::reserve(std::size_t files) noexcept {
  ATOMIC_STATE_DETAIL_TRY {
    swept_directories_.reserve(files);
    files_.reserve(files);
    while (files_.size() < files) {
      std::unique_ptr<Transaction> file(new (std::nothrow) Transaction(Steps::make(fs_)));
      if (!file) return;
      files_.push_back(std::move(file));
    }
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL {}  // the adds will say so
}

// The transaction for the next file: one given up by an earlier run, made
// new for `fs`, or a new one. Null when memory runs out.
template <class S, class Fs>
typename Batch<S, Fs>::Transaction* Batch<S, Fs>::next_file(FsRef& fs) noexcept {
  if (used_ < files_.size()) {
    *files_[used_] = Steps::make(fs);
    return files_[used_].get();
  }
  ATOMIC_STATE_DETAIL_TRY {
    std::unique_ptr<Transaction> file(new (std::nothrow) Transaction(Steps::make(fs)));
    if (!file) return nullptr;
    files_.push_back(std::move(file));
    return files_.back().get();
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL { return nullptr; }
}

// Whether a file of the batch already has `file`'s target: the same name in
// the same directory, known by identity (TransactionSteps::same_target).
template <class S, class Fs>
bool Batch<S, Fs>::duplicate(const Transaction& file) const noexcept {
  for (std::size_t i = 0; i < used_; ++i)
    if (Steps::same_target(*files_[i], file)) return true;
  return false;
}

// Keeps `file` (just opened, or the failure `opened`) as the batch's next
// file, after writing `data` into it; on any failure it is given up and
// its temp file removed.
template <class S, class Fs>
Status Batch<S, Fs>::added(Transaction* file, const Status& opened,
                           std::string_view data) noexcept {
  if (!opened) return opened;
  // The directory by identity, for the duplicate test and the commit's
  // syncs: from an earlier file through the same handle, or asked once.
  const Transaction* known = nullptr;
  for (std::size_t i = 0; i < used_ && known == nullptr; ++i)
    if (Steps::directory_descriptor(*files_[i]) == Steps::directory_descriptor(*file))
      known = files_[i].get();
  Steps::learn_directory(*file, known);
  if (duplicate(*file)) {
    file->discard();
    const detail::JoinedPath target = Steps::target(*file);
    return Status(Step::check_path, std::make_error_code(std::errc::file_exists), target.view(),
                  target.view(), false, "the batch already has this target");
  }
  if (Status written = file->write(data); !written) return written;
  Steps::join_batch(*file);
  ++used_;
  return {};
}

template <class S, class Fs>
Status Batch<S, Fs>::add(PathView path, std::string_view data, unsigned perm) noexcept {
  return add(path, data, WriteOptions{perm});
}

template <class S, class Fs>
Status Batch<S, Fs>::add(PathView path, std::string_view data,
                         const WriteOptions& options) noexcept {
  Transaction* file = next_file(fs_);
  if (file == nullptr)
    return Status(Step::create_temp_file, detail::system_error(-ENOMEM), path.text(), {}, false,
                  "no memory for one more file in the batch");
  const Status opened = Steps::open(*file, path.text(), options, Steps::Commit::replace);
  return added(file, opened, data);
}

template <class S, class Fs>
Status Batch<S, Fs>::add(Directory& dir, std::string_view name, std::string_view data,
                         unsigned perm) noexcept {
  return add(dir, name, data, WriteOptions{perm});
}

template <class S, class Fs>
Status Batch<S, Fs>::add(Directory& dir, std::string_view name, std::string_view data,
                         const WriteOptions& options) noexcept {
  Result<Transaction*> file = add_stream(dir, name, options);
  if (!file) return file.status();
  if (Status written = (*file)->write(data); !written) {
    --used_;  // its temp file is gone with the failure
    return written;
  }
  return {};
}

template <class S, class Fs>
Result<typename Batch<S, Fs>::Transaction*> Batch<S, Fs>::add_stream(
    PathView path, const WriteOptions& options) noexcept {
  Transaction* file = next_file(fs_);
  if (file == nullptr)
    return Status(Step::create_temp_file, detail::system_error(-ENOMEM), path.text(), {}, false,
                  "no memory for one more file in the batch");
  const Status opened = Steps::open(*file, path.text(), options, Steps::Commit::replace);
  if (Status kept = added(file, opened, {}); !kept) return kept;
  return file;
}

template <class S, class Fs>
Result<typename Batch<S, Fs>::Transaction*> Batch<S, Fs>::add_stream(
    Directory& dir, std::string_view name, const WriteOptions& options) noexcept {
  Transaction* file = next_file(dir.filesystem());
  if (file == nullptr)
    return Status(Step::create_temp_file, detail::system_error(-ENOMEM), name, {}, false,
                  "no memory for one more file in the batch");
  const Status opened = Steps::open_in(*file, dir, name, options, Steps::Commit::replace);
  if (Status kept = added(file, opened, {}); !kept) return kept;
  return file;
}

template <class S, class Fs>
void Batch<S, Fs>::discard() noexcept {
  // A file put in place keeps only descriptors to close; the others lose
  // their temp files too.
  for (std::size_t i = 0; i < used_; ++i) files_[i]->discard();
  used_ = 0;
}

// A failure after some renames: the files before it are in place, the
// others are given up. The Status keeps the failure's step, path, target
// and reason, and says which targets hold their new content.
template <class S, class Fs>
Status Batch<S, Fs>::stopped(const Status& failure) noexcept {
  // Cut short (with "...") when the names do not fit: only a message loses.
  char which[1024];
  std::size_t size = 0;
  const auto append = [&](std::string_view part) {
    const std::size_t n = part.size() < sizeof which - size ? part.size() : sizeof which - size;
    if (n > 0) std::memcpy(which + size, part.data(), n);
    size += n;
  };
  append("replaced before the failure: ");
  for (std::size_t i = 0; i < replaced_; ++i) {
    const detail::JoinedPath target = Steps::target(*files_[i]);
    if (i > 0) append(", ");
    append(target.view());
  }
  if (size == sizeof which) std::fill_n(which + size - 3, 3, '.');
  discard();
  if (replaced_ == 0) return failure;
  return failure.with_detail(std::string_view(which, size));
}

template <class S, class Fs>
template <class BeforeLast>
Status Batch<S, Fs>::commit(BeforeLast&& before_last) noexcept {
  replaced_ = 0;
  if (used_ == 0)
    return Status(Step::invalid_use, std::make_error_code(std::errc::invalid_argument), {}, {},
                  false, "an empty batch: add a file first");
  const auto given_up = [&](Status failure) {
    discard();
    return failure;
  };
  const auto each = [&](auto&& step) {
    for (std::size_t i = 0; i < used_; ++i)
      if (Status done = step(*files_[i]); !done) return done;
    return Status();
  };
  if (Status open = each(Steps::still_open); !open) return given_up(open);
  // 1. Every file's bytes and mode durable, their writebacks overlapping.
  if (Status done = each(Steps::set_final_mode); !done) return given_up(done);
  for (std::size_t i = 0; i < used_; ++i) Steps::start_writeback(*files_[i]);
  if (Status done = each(Steps::sync_file); !done) return given_up(done);
  if (Status done = each(Steps::close_file); !done) return given_up(done);
  // 2, 3. Every file but the last in place, in order, then durably so.
  // A file renamed whose close then failed is replaced all the same.
  const auto put_in_place = [&](Transaction& file) {
    Status done = Steps::put_in_place(file);
    if (done || done.replaced()) ++replaced_;
    return done;
  };
  const std::size_t last = used_ - 1;
  for (std::size_t i = 0; i < last; ++i)
    if (Status done = put_in_place(*files_[i]); !done) return stopped(done);
  if constexpr (S::directory)
    for (std::size_t i = 0; i < last; ++i) {
      bool synced = false;  // a directory is synced once, whatever its files
      for (std::size_t k = 0; k < i && !synced; ++k)
        synced = Steps::same_directory(*files_[k], *files_[i]);
      if (!synced)
        if (Status done = Steps::sync_directory(*files_[i]); !done) return stopped(done);
    }
  // 4. The last file, never durable before the files it follows.
  if (Status done = before_last(); !done) return stopped(done);
  if (Status done = put_in_place(*files_[last]); !done) return stopped(done);
  if constexpr (S::directory)
    if (Status done = Steps::sync_directory(*files_[last]); !done) return stopped(done);
  sweep_new_directories();
  for (std::size_t i = 0; i < used_; ++i) files_[i]->discard();
  used_ = 0;
  return {};
}

// After a commit, when no temp file of the batch is left to meet: each
// directory a file went into by path, unless an earlier commit swept it.
template <class S, class Fs>
void Batch<S, Fs>::sweep_new_directories() noexcept {
  if constexpr (is_state_filesystem_v<Fs>) {  // else it cannot list a directory
    for (std::size_t i = 0; i < used_; ++i) {
      const Transaction& file = *files_[i];
      detail::DirectoryIdentity dir;
      if (Steps::through_handle(file) || !Steps::directory_identity(file, dir) ||
          !first_sweep_of(dir))
        continue;
      detail::Retrying<FsRef> fs(fs_);
      const Result<TempSweep> swept = detail::sweep_temp_files(
          fs, Steps::directory_descriptor(file), Steps::directory_path(file));
      if (!swept) continue;
      swept_.removed += swept->removed;
      swept_.in_use += swept->in_use;
      swept_.not_regular += swept->not_regular;
      swept_.not_permitted += swept->not_permitted;
    }
  }
}

// Whether `dir` is swept for the first time, remembering it; false when
// there is no memory to remember it (it is then swept by the next batch).
// The batch remembers as many directories as it has held files: past that
// (a directory a day, say) the one remembered longest is forgotten, and
// swept again should a file go back into it, so that a batch reused for
// ever neither grows nor allocates once its files' storage has.
template <class S, class Fs>
bool Batch<S, Fs>::first_sweep_of(const detail::DirectoryIdentity& dir) noexcept {
  if (std::find(swept_directories_.begin(), swept_directories_.end(), dir) !=
      swept_directories_.end())
    return false;
  if (!swept_directories_.empty() && swept_directories_.size() >= files_.size()) {
    swept_directories_[forget_next_++ % swept_directories_.size()] = dir;
    return true;
  }
  ATOMIC_STATE_DETAIL_TRY {
    swept_directories_.push_back(dir);
    return true;
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL { return false; }
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

// ========================================================== include/atomic_state/snapshot.hpp ====

#include <array>   // std::array: names read from the directory
#include <limits>  // std::numeric_limits: the last generation number

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// The names of a snapshot directory, as the writer's listings keep them.
namespace detail {
// generation_of and generation_shaped, the names below, are the writer
// part's: its saves refuse to make a directory of such a name.

/// What a generation's name says of it: gen-N is complete; the two others
/// are named so that no reader ever enters them through current.
enum class GenerationState : unsigned char {
  complete,  ///< gen-N
  building,  ///< .building-gen-N: being written, or half-written by a killed publisher
  removing,  ///< .removing-gen-N: being removed, or half-removed
};

inline constexpr std::string_view kBuildingPrefix = ".building-";
inline constexpr std::string_view kRemovingPrefix = ".removing-";

/// A generation's name in one of its states.
struct GenerationName {
  char text[48] = {};
  explicit GenerationName(std::uint64_t n,
                          GenerationState state = GenerationState::complete) noexcept {
    std::size_t at = 0;
    if (state != GenerationState::complete) {
      const std::string_view prefix =
          state == GenerationState::building ? kBuildingPrefix : kRemovingPrefix;
      std::memcpy(text, prefix.data(), prefix.size());
      at = prefix.size();
    }
    std::memcpy(text + at, "gen-", 4);
    *std::to_chars(text + at + 4, text + sizeof text - 1, n).ptr = '\0';
  }
  const char* c_str() const noexcept { return text; }
};

/// The names a snapshot directory holds that its writer manages. Its
/// storage is kept from one listing to the next (clear, not shrink).
struct SnapshotEntries {
  struct Generation {
    std::uint64_t number;
    GenerationState state;
  };
  std::vector<Generation> generations;
  std::vector<std::array<char, 20>> temp_links;  // ".current.tmp-XXXXXX"
  bool out_of_memory = false;

  void clear() noexcept {
    generations.clear();
    temp_links.clear();
    out_of_memory = false;
  }
  bool contains(std::uint64_t n) const noexcept {
    for (const Generation& g : generations)
      if (g.number == n) return true;
    return false;
  }

  static void add(void* context, const char* name) noexcept {
    auto& self = *static_cast<SnapshotEntries*>(context);
    const std::string_view entry(name);
    ATOMIC_STATE_DETAIL_TRY {
      GenerationState state = GenerationState::complete;
      std::string_view rest = entry;
      if (entry.substr(0, kBuildingPrefix.size()) == kBuildingPrefix) {
        state = GenerationState::building;
        rest.remove_prefix(kBuildingPrefix.size());
      } else if (entry.substr(0, kRemovingPrefix.size()) == kRemovingPrefix) {
        state = GenerationState::removing;
        rest.remove_prefix(kRemovingPrefix.size());
      }
      if (const std::uint64_t n = generation_of(rest); n != 0) {
        self.generations.push_back(Generation{n, state});
      } else if (owned_name(entry) == OwnedName::link_temp) {
        std::array<char, 20> copy{};
        std::memcpy(copy.data(), name, 20);
        self.temp_links.push_back(copy);
      }
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL { self.out_of_memory = true; }
  }
};

/// The names of a generation directory's files, to remove them; storage
/// kept as SnapshotEntries keeps its.
struct GenerationFiles {
  std::vector<std::array<char, ATOMIC_STATE_NAME_MAX + 1>> names;
  bool out_of_memory = false;

  void clear() noexcept {
    names.clear();
    out_of_memory = false;
  }
  static void add(void* context, const char* name) noexcept {
    auto& self = *static_cast<GenerationFiles*>(context);
    ATOMIC_STATE_DETAIL_TRY {
      self.names.emplace_back();
      std::strncpy(self.names.back().data(), name, ATOMIC_STATE_NAME_MAX);
      self.names.back()[ATOMIC_STATE_NAME_MAX] = '\0';
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL { self.out_of_memory = true; }
  }
};
}  // namespace detail

/// How a SnapshotWriter keeps its generations. open() refuses options it
/// cannot use (Step::check_path, EINVAL).
struct SnapshotOptions {
  /// Generations kept after a publish: the current one and the newest
  /// before it, so that a reader who opened `current` just before a publish
  /// can still read its files. At least 1. A generation a SnapshotReader
  /// holds is kept beyond this, until the reader lets go.
  unsigned keep = 2;
  /// Each generation directory's mode, exact (the umask is ignored); at
  /// most 07777.
  unsigned directory_mode = 0755;
  MissingDirectory missing = MissingDirectory::create;  ///< for the snapshot directory
};

/// A set of files that readers see change all at once. The files live in
/// a generation directory, DIR/gen-N, and DIR/current is a symlink naming
/// the complete one. A reader holds a SnapshotReader for as long as it
/// reads a set: a lease no publish removes. A reader without one opens
/// DIR/current once (open("DIR/current", O_RDONLY | O_DIRECTORY)) and then
/// reads the files relative to that descriptor (openat): it sees one whole
/// set, old or new, for as long as `keep` covers (keep - 1 publishes after
/// the one it entered); after that the set's files may be removed under it
/// (openat fails with ENOENT; a file already open still reads whole).
/// add() writes a file into a new generation, DIR/.building-gen-N (made at
/// the first add); publish() makes it durable and current:
///   1. each file's mode set, writeback started, synced and closed;
///   2. the generation directory synced;
///   3. the generation renamed to DIR/gen-N (never over an existing name):
///      a gen-N is complete, its files and their entries durable before it
///      has the name;
///   4. a temp symlink DIR/.current.tmp-XXXXXX naming it made, DIR synced;
///   5. the temp symlink renamed over DIR/current, DIR synced;
///   6. generations beyond `keep` removed, the current one never, nor one a
///      SnapshotReader holds (a non-blocking exclusive flock on the
///      generation fails): each is renamed DIR/.removing-gen-N while locked,
///      then emptied and removed.
/// After any crash DIR/current names a complete generation, old or new. A
/// failure before the rename over current removes the new generation;
/// current is untouched. A failure of the directory sync after it is
/// reported with replaced() true: readers see the new set, not known to be
/// durable. A failure to remove old generations (step 6) comes after the
/// swap is durable: replaced() is false, current() is the new generation,
/// and the message says "the snapshot was published and is durable; an old
/// generation was not removed" (under NoSync: "not known to be durable");
/// the next publish or open tries the removal again.
///
/// One publisher per directory at a time: open() takes a lock on
/// DIR/.snapshot.lock (mode 0600, so that no other user can hold it; one
/// open to others is made so) for the writer's life, and a second open()
/// fails with EWOULDBLOCK rather than waiting. A lock file that is not the
/// writer's own is refused (lock_run, EPERM) and left unchanged: a hard
/// link (a link count above 1), or a file of another user (where the Fs
/// has user_id). Root (user_id 0) in a directory of another user takes a
/// lock file of the directory's owner too, and changes nothing in the lock
/// file it opens there (that user could have put any file of root's at its
/// name for a moment); after a publish under sudo the owner removes root's
/// lock file once. open() also removes what a killed publisher left:
/// half-built generations (.building-gen-N), generations newer than
/// current (complete, never current), half-removed ones (.removing-gen-N)
/// and temp symlinks. A DIR/current that is not a symlink naming a gen-N
/// belongs to someone else: open() refuses it and removes nothing. A
/// missing DIR/current (an operator took the feed offline) removes no
/// generation: current() is then the newest complete one, kept with every
/// other, and DIR/current stays missing until the next publish.
///
/// Entries under the writer's names that are not of the kind it makes (a
/// file or symlink named gen-N, a directory named .current.tmp-XXXXXX, a
/// directory inside a generation being removed) are left where they are
/// and counted (TempSweep::not_regular), and so is a mount point: a
/// filesystem mounted on a gen-N, .building-gen-N or .removing-gen-N (a
/// directory on another device than DIR, or one whose removal the system
/// refuses with EBUSY, as it does a bind mount of the same filesystem), or
/// a file mounted on a temp link's name or inside a generation; nothing in
/// a mount is ever listed or removed. So is what the system refuses to
/// remove for want of permission (EACCES, EPERM: another user's, such as the
/// generations a run as root left in a directory of a normal user; counted
/// TempSweep::not_permitted). They never make open() or publish() fail. A
/// generation being removed that holds such a directory stays, emptied of
/// its files, as .removing-gen-N; a generation whose .removing-gen-N name
/// is taken by someone else's entry stays gen-N (no new generation takes a
/// number the directory holds). What anything else
/// writes into DIR's generations (gen-N, .building-gen-N, .removing-gen-N)
/// is the snapshot's, removed with its generation: no save of the library
/// makes a missing directory of such a name (AtomicWriter::write), but one
/// into an existing generation is not refused. Move-only.
///
/// Allocations: open() allocates (the directory's claim, the listings).
/// add() and publish() keep their storage (the files added, the names
/// listed) from one publish to the next, so a writer reused for sets of
/// the same shape allocates nothing once its storage has grown to the
/// directory's size (after its first few publishes); a failure allocates
/// its Status's text.
template <class SyncPolicy = FullSync, class Fs = PosixFs>
class SnapshotWriter {
  static_assert(is_sync_policy_v<SyncPolicy>,
                "SnapshotWriter: SyncPolicy needs `static constexpr SyncLevel file` and "
                "`static constexpr bool directory` (see FullSync)");
  static_assert(is_snapshot_filesystem_v<Fs>,
                "SnapshotWriter: Fs needs the calls of PosixFs a snapshot makes (see "
                "is_snapshot_filesystem)");

 public:
  /// Opens the snapshot directory `dir`, locks it for this publisher and
  /// removes what a killed one left. Failures: check_path (bad options, or
  /// DIR/current not a symlink to a generation: EINVAL), create_directory,
  /// open_directory, create_temp_file (AtomicDirectory's claim), lock_run
  /// (EWOULDBLOCK: another writer has it open; EPERM: the lock file is a
  /// hard link or another user's), remove_temp_file. The sweep of stale
  /// temp files (a killed publisher's claim) is done as well as it can be:
  /// a temp file it cannot remove (another user's) is left, and open()
  /// succeeds.
  template <class F = Fs, std::enable_if_t<std::is_default_constructible_v<F>, int> = 0>
  static Result<SnapshotWriter> open(PathView dir, const SnapshotOptions& options = {}) noexcept {
    return open(dir, F(), options);
  }
  static Result<SnapshotWriter> open(PathView dir, Fs fs,
                                     const SnapshotOptions& options = {}) noexcept;

  SnapshotWriter(SnapshotWriter&& other) noexcept;
  SnapshotWriter& operator=(SnapshotWriter&& other) noexcept;
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;
  /// Discards an unpublished generation, then releases the lock.
  ~SnapshotWriter();

  /// Writes the file `name` of the next generation. Refused with
  /// Step::check_path before anything is written: a name empty, holding a
  /// '/' or a NUL, "." or ".." (EINVAL), longer than ATOMIC_STATE_NAME_MAX
  /// (ENAMETOOLONG), one the library gives its own files (EINVAL, as
  /// AtomicDirectory::write refuses it: ".tmp-XXXXXX", ".tmp-XXXXXX.N",
  /// ".current.tmp-XXXXXX", ".NAME.lock", "NAME.corrupt-STAMP[.N]") or
  /// added before (EEXIST); a mode above 07777 (EINVAL).
  /// Failures: create_directory (EOVERFLOW: the generations reached
  /// gen-18446744073709551615, and no number is left: nothing is made,
  /// current stays as it is), open_directory, set_permissions (the new
  /// generation, made at the first add), create_temp_file, write_data; the
  /// generation keeps its other files. A moved-from writer: invalid_use.
  Status add(std::string_view name, std::string_view data, unsigned perm = 0644) noexcept;
  /// Publishes the files added, as above. No file added: invalid_use
  /// (EINVAL). After a failure the files added are gone: add them again.
  /// Failures: set_permissions, sync_file, close_temp_file, sync_directory,
  /// rename (to gen-N, or over current), create_temp_file (the temp
  /// symlink), remove_temp_file (step 6).
  Status publish() noexcept;
  /// Removes the unpublished generation, if any; current is untouched.
  void discard() noexcept;
  /// Removes, as open() and publish() do, the temp symlinks
  /// (.current.tmp-*), the half-built and half-removed generations, the
  /// generations newer than current and those older than the newest
  /// keep - 1 before current, but for any a SnapshotReader holds; a
  /// TempSweep counting the entries removed, the generations left because
  /// a reader holds them (in_use), the entries not the writer's own
  /// (not_regular: mount points among them) and those the system refuses
  /// to remove (not_permitted: another user's). Nothing else in DIR is
  /// touched. Failures: remove_temp_file.
  Result<TempSweep> remove_stale_generations() noexcept;

  /// The generation DIR/current names; when DIR/current is missing, the
  /// newest complete generation (0: none yet).
  std::uint64_t current() const noexcept { return current_; }
  /// Files added to the next generation.
  std::size_t size() const noexcept { return files_.size(); }
  /// The snapshot directory's path, as given to open().
  std::string_view path() const noexcept { return dir_.path(); }

 private:
  using Directory = AtomicDirectory<SyncPolicy, Fs>;
  using FsRef = std::remove_reference_t<Fs>;
  struct File {
    int fd = -1;
    unsigned mode = 0;
    std::size_t name_len = 0;
    char name[ATOMIC_STATE_NAME_MAX + 1] = {};
  };

  explicit SnapshotWriter(Directory dir) noexcept : dir_(std::move(dir)) {}
  Status read_current(bool& missing) noexcept;
  Status list() noexcept;
  Status recover_current() noexcept;
  Status begin_generation() noexcept;
  Status make_durable() noexcept;
  Status swap_current() noexcept;
  Status prune(TempSweep& sweep, bool generations = true) noexcept;
  Status retire_generation(std::uint64_t n, TempSweep& sweep) noexcept;
  Status remove_tree(const char* name, int fd, TempSweep& sweep) noexcept;
  Status fail(Step step, int r, std::string_view subject, std::string_view target = {},
              const char* note = nullptr, bool replaced = false) const noexcept;
  void release() noexcept;

  Directory dir_;
  SnapshotOptions options_;
  int lock_fd_ = -1;
  int generation_fd_ = -1;         // of the generation being built
  std::uint64_t generation_ = 0;   // its number, 0 when none
  bool generation_named_ = false;  // renamed to gen-N, not yet current
  std::uint64_t current_ = 0;
  std::uint64_t device_ = 0;  // DIR's: a directory on another is not the writer's
  std::vector<File> files_;
  detail::SnapshotEntries entries_;  // the last listing of DIR, its storage kept
  detail::GenerationFiles names_;    // the last listing of a generation, likewise
};

/// A reader's lease on the snapshot current when it opened: the
/// generation's directory, held open and locked (a shared flock) until the
/// reader is destroyed, so that no SnapshotWriter's publish or open removes
/// it, whatever `keep` says and however many publishes follow. Read the
/// set's files relative to descriptor() (openat); they are one whole set.
///
/// open() reads DIR/current, opens the generation it names and locks it
/// without waiting; a generation a writer is removing at that moment (its
/// exclusive lock held, or already renamed away) is let go and current
/// read again, up to 100 times. A reader holds its generation for as long
/// as it lives: a long-lived reader keeps an old generation on disk; open
/// a new one to follow publishes. Move-only; not for several threads at
/// once. A reader without a lease: see SnapshotWriter.
template <class Fs = PosixFs>
class SnapshotReader {
  static_assert(is_snapshot_reader_filesystem_v<Fs>,
                "SnapshotReader: Fs needs open_directory, read_link, open_directory_at, "
                "try_lock_shared, file_info, entry_info and close (see PosixFs)");

 public:
  /// Opens DIR and takes a lease on the generation DIR/current names.
  /// Failures: check_path (a bad path; DIR/current not a symlink naming a
  /// gen-N: EINVAL), open_directory (DIR, or the generation), open_file
  /// (ENOENT: DIR/current missing: nothing published yet, or taken
  /// offline), lock_run (the shared lock refused: a filesystem without
  /// flock; EAGAIN: current kept naming generations being removed).
  template <class F = Fs, std::enable_if_t<std::is_default_constructible_v<F>, int> = 0>
  static Result<SnapshotReader> open(PathView dir) noexcept {
    return open(dir, F());
  }
  static Result<SnapshotReader> open(PathView dir, Fs fs) noexcept;

  SnapshotReader(SnapshotReader&& other) noexcept;
  SnapshotReader& operator=(SnapshotReader&& other) noexcept;
  SnapshotReader(const SnapshotReader&) = delete;
  SnapshotReader& operator=(const SnapshotReader&) = delete;
  /// Releases the lease: a later publish or open may remove the generation.
  ~SnapshotReader();

  /// The generation's directory, for openat(descriptor(), name, ...): its
  /// files are one whole set while this reader lives. -1 once moved from.
  int descriptor() const noexcept { return generation_fd_; }
  /// The generation's number, N of DIR/gen-N.
  std::uint64_t generation() const noexcept { return generation_; }

 private:
  using FsRef = std::remove_reference_t<Fs>;
  explicit SnapshotReader(Fs fs) noexcept : fs_(static_cast<Fs&&>(fs)) {}
  void release() noexcept;

  Fs fs_;
  int generation_fd_ = -1;
  std::uint64_t generation_ = 0;
};

// ========================================================= implementation ====

// ---------------------------------------------------------- SnapshotWriter --

namespace detail {
// Whether a failed unlink met a directory: EISDIR on Linux, EPERM where
// POSIX's wording is followed. An EPERM is looked at to tell.
template <class Call>
bool is_directory_refusal(Call& call, int dir_fd, const char* name, int r) noexcept {
  if (r != -EISDIR && r != -EPERM) return false;
  FileInfo info;
  return call.entry_info(dir_fd, name, info) >= 0 && info.type == FileType::directory;
}
// Whether the system refused a removal for want of permission: an entry of
// another user's (what a run as root left in a directory of a normal user,
// a sticky directory's entry of someone else's), left and counted.
inline bool is_refusal(int r) noexcept { return r == -EACCES || r == -EPERM; }
}  // namespace detail

template <class S, class Fs>
Result<SnapshotWriter<S, Fs>> SnapshotWriter<S, Fs>::open(PathView dir, Fs fs,
                                                          const SnapshotOptions& options) noexcept {
  const auto invalid = [&](const char* why) {
    return Status(Step::check_path, std::make_error_code(std::errc::invalid_argument), dir.text(),
                  {}, false, why);
  };
  if (options.keep == 0) return invalid("SnapshotOptions::keep must be at least 1");
  if (options.directory_mode > 07777) return invalid("SnapshotOptions::directory_mode above 07777");
  Result<Directory> opened = Directory::open(dir, static_cast<Fs&&>(fs), options.missing);
  if (!opened) return opened.status();
  SnapshotWriter writer(std::move(*opened));
  writer.options_ = options;
  detail::Retrying<FsRef> call(writer.dir_.filesystem());
  const int dir_fd = writer.dir_.descriptor();
  const detail::JoinedPath lock_path(writer.path(), ".snapshot.lock");
  const int fd = call.open_or_create(dir_fd, ".snapshot.lock", 0600);
  if (fd < 0) return writer.fail(Step::lock_run, fd, lock_path.view());
  writer.lock_fd_ = fd;
  FileInfo info;
  if (const int r = call.file_info(fd, info); r < 0)
    return writer.fail(Step::lock_run, r, lock_path.view());
  if (info.type != FileType::regular)
    return writer.fail(Step::lock_run, -EINVAL, lock_path.view(), {},
                       "the lock file is not a regular file");
  // A name planted by whoever can write into DIR: a second name of a file
  // elsewhere, or another user's file. Its chmod would change that file.
  if (info.links > 1)
    return writer.fail(Step::lock_run, -EPERM, lock_path.view(), {},
                       "the lock file is a hard link to a file elsewhere, not the "
                       "SnapshotWriter's own: remove it");
  // Root, in a directory of another user, takes that user's lock file as
  // its own, and changes nothing in the file (detail::lock_file_owner).
  detail::LockFileOwner owner;
  if constexpr (detail::has_user_id<FsRef>::value) {
    owner = detail::lock_file_owner(call, dir_fd, call.user_id(), info.owner);
    if (!owner.taken)
      return writer.fail(Step::lock_run, -EPERM, lock_path.view(), {},
                         "the lock file belongs to another user, not the SnapshotWriter's own: "
                         "remove it");
  }
  if (const int r = call.try_lock(fd); r < 0)
    return writer.fail(
        Step::lock_run, r, lock_path.view(), {},
        r == -EWOULDBLOCK ? "another SnapshotWriter has the directory open" : nullptr);
  // Whoever can open the lock file can hold it forever: only its owner.
  if ((info.mode & 077) != 0 && !owner.hands_off)
    if (const int r = call.set_mode(fd, 0600); r < 0)
      return writer.fail(Step::lock_run, r, lock_path.view(), {},
                         "the lock file is open to other users and cannot be made 0600");
  bool missing = false;
  if (Status read = writer.read_current(missing); !read) return read;
  if (missing)
    if (Status recovered = writer.recover_current(); !recovered) return recovered;
  TempSweep swept;
  if (Status pruned = writer.prune(swept, !missing); !pruned) return pruned;
  // A killed publisher's directory claim, as any stale temp file, went
  // with the sweep of the handle's open.
  return Result<SnapshotWriter>(std::move(writer));
}

template <class S, class Fs>
SnapshotWriter<S, Fs>::SnapshotWriter(SnapshotWriter&& other) noexcept
    : dir_(std::move(other.dir_)),
      options_(other.options_),
      lock_fd_(std::exchange(other.lock_fd_, -1)),
      generation_fd_(std::exchange(other.generation_fd_, -1)),
      generation_(std::exchange(other.generation_, 0)),
      generation_named_(std::exchange(other.generation_named_, false)),
      current_(other.current_),
      device_(other.device_),
      files_(std::move(other.files_)),
      entries_(std::move(other.entries_)),
      names_(std::move(other.names_)) {}

template <class S, class Fs>
SnapshotWriter<S, Fs>& SnapshotWriter<S, Fs>::operator=(SnapshotWriter&& other) noexcept {
  if (this == &other) return *this;
  release();
  dir_ = std::move(other.dir_);
  options_ = other.options_;
  lock_fd_ = std::exchange(other.lock_fd_, -1);
  generation_fd_ = std::exchange(other.generation_fd_, -1);
  generation_ = std::exchange(other.generation_, 0);
  generation_named_ = std::exchange(other.generation_named_, false);
  current_ = other.current_;
  device_ = other.device_;
  files_ = std::move(other.files_);
  entries_ = std::move(other.entries_);
  names_ = std::move(other.names_);
  return *this;
}

template <class S, class Fs>
SnapshotWriter<S, Fs>::~SnapshotWriter() {
  release();
}

template <class S, class Fs>
void SnapshotWriter<S, Fs>::release() noexcept {
  discard();
  if (lock_fd_ >= 0) (void)dir_.filesystem().close(std::exchange(lock_fd_, -1));
}

template <class S, class Fs>
Status SnapshotWriter<S, Fs>::fail(Step step, int r, std::string_view subject,
                                   std::string_view target, const char* note,
                                   bool replaced) const noexcept {
  return Status(step, detail::system_error(r), subject, target, replaced, note);
}

// DIR's device first, which every directory the writer empties must be on
// (remove_tree). Then DIR/current: a symlink to a generation, or missing
// (before the first publish, or removed by an operator). Anything else
// belongs to someone else and is left alone.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::read_current(bool& missing) noexcept {
  char target[32];
  detail::Retrying<FsRef> call(dir_.filesystem());
  FileInfo dir_info;
  if (const int r = call.file_info(dir_.descriptor(), dir_info); r < 0)
    return fail(Step::open_directory, r, path());
  device_ = dir_info.device;
  const ssize_t r = call.read_link(dir_.descriptor(), "current", target, sizeof target);
  const detail::JoinedPath current(path(), "current");
  missing = r == -ENOENT;
  if (missing) {
    current_ = 0;
    return {};
  }
  if (r == -EINVAL) return fail(Step::check_path, -EINVAL, current.view(), {}, "not a symlink");
  if (r < 0 && r != -ENAMETOOLONG)
    return fail(Step::check_path, static_cast<int>(r), current.view());
  current_ =
      r < 0 ? 0 : detail::generation_of(std::string_view(target, static_cast<std::size_t>(r)));
  if (current_ == 0)
    return fail(Step::check_path, -EINVAL, current.view(), {},
                "the symlink names no generation (gen-N) of the directory");
  return {};
}

template <class S, class Fs>
Status SnapshotWriter<S, Fs>::list() noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  entries_.clear();
  if (const int r =
          call.list_directory(dir_.descriptor(), &detail::SnapshotEntries::add, &entries_);
      r < 0)
    return fail(Step::remove_temp_file, r, path());
  if (entries_.out_of_memory) return fail(Step::remove_temp_file, -ENOMEM, path());
  return {};
}

// DIR/current missing, generations present: an operator took the feed
// offline, or the first publish was killed before its swap. Each gen-N is
// complete (named so only once its files were durable); the newest that is
// a directory stands for current, so that nothing is removed and the next
// generation is numbered after it.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::recover_current() noexcept {
  if (Status listed = list(); !listed) return listed;
  detail::Retrying<FsRef> call(dir_.filesystem());
  for (const auto& g : entries_.generations) {
    if (g.state != detail::GenerationState::complete || g.number <= current_) continue;
    FileInfo info;
    if (call.entry_info(dir_.descriptor(), detail::GenerationName(g.number).c_str(), info) >= 0 &&
        info.type == FileType::directory)
      current_ = g.number;
  }
  return {};
}

// A new generation directory, .building-gen-N, numbered after current and
// after every name of the directory that follows it, so that a reader
// never meets a name it saw before naming other files (only a generation
// that was current has been seen, and none newer than current survives an
// open). A foreign name far ahead (gen-99999...) is not followed.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::begin_generation() noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  if (Status listed = list(); !listed)
    return fail(Step::create_directory, static_cast<int>(-listed.code().value()), path(), {},
                "listing the generations");
  std::uint64_t n = current_;
  int r = -EEXIST;
  for (int tries = 0; r == -EEXIST && tries < 100; ++tries) {
    // Past the largest number, gen-0 would follow: a name no reader takes
    // for newer, and that open() refuses.
    do {
      if (n == std::numeric_limits<std::uint64_t>::max())
        return fail(Step::create_directory, -EOVERFLOW, path(), {},
                    "no generation number is left after gen-18446744073709551615");
      ++n;
    } while (entries_.contains(n));
    r = call.make_directory_at(dir_fd,
                               detail::GenerationName(n, detail::GenerationState::building).c_str(),
                               options_.directory_mode);
  }
  const detail::GenerationName name(n, detail::GenerationState::building);
  const detail::JoinedPath where(path(), name.c_str());
  if (r < 0) return fail(Step::create_directory, r, where.view());
  const int fd = call.open_directory_at(dir_fd, name.c_str());
  if (fd < 0) {
    (void)call.remove_directory(dir_fd, name.c_str());
    return fail(Step::open_directory, fd, where.view());
  }
  generation_fd_ = fd;
  generation_ = n;
  generation_named_ = false;
  if (const int set = call.set_mode(fd, options_.directory_mode); set < 0) {
    Status failed = fail(Step::set_permissions, set, where.view());
    discard();
    return failed;
  }
  return {};
}

template <class S, class Fs>
Status SnapshotWriter<S, Fs>::add(std::string_view name, std::string_view data,
                                  unsigned perm) noexcept {
  const auto refused = [&](std::errc code, const char* why) {
    const detail::JoinedPath target(detail::JoinedPath(path(), "current").view(), name);
    return Status(Step::check_path, std::make_error_code(code), target.view(), {}, false, why);
  };
  if (lock_fd_ < 0)
    return Status(Step::invalid_use, std::make_error_code(std::errc::bad_file_descriptor), name, {},
                  false, "the SnapshotWriter was moved from");
  if (perm > 07777) return refused(std::errc::invalid_argument, "mode above 07777");
  if (name.empty() || name.find('/') != std::string_view::npos || name == "." || name == "..")
    return refused(std::errc::invalid_argument,
                   "not a file name (empty, \".\", \"..\", or with a '/')");
  if (name.find('\0') != std::string_view::npos)
    return refused(std::errc::invalid_argument, "name contains a NUL byte");
  if (name.size() > ATOMIC_STATE_NAME_MAX)
    return refused(std::errc::filename_too_long, "file name too long");
  if (const char* why = detail::owned_name_problem(name))
    return refused(std::errc::invalid_argument, why);
  for (const File& file : files_)
    if (std::string_view(file.name, file.name_len) == name)
      return refused(std::errc::file_exists, "the snapshot already has this file");
  ATOMIC_STATE_DETAIL_TRY { files_.emplace_back(); }
  ATOMIC_STATE_DETAIL_CATCH_ALL {
    return refused(std::errc::not_enough_memory, "no memory for one more file");
  }
  File& file = files_.back();
  file.mode = perm;
  file.name_len = name.size();
  std::memcpy(file.name, name.data(), name.size());
  file.name[name.size()] = '\0';
  const auto given_up = [&](Status failure) {
    files_.pop_back();
    return failure;
  };
  if (generation_ == 0)
    if (Status begun = begin_generation(); !begun) return given_up(begun);
  detail::Retrying<FsRef> call(dir_.filesystem());
  const detail::JoinedPath generation(
      path(), detail::GenerationName(generation_, detail::GenerationState::building).c_str());
  const detail::JoinedPath created(generation.view(), name);
  const detail::JoinedPath seen(detail::JoinedPath(path(), "current").view(), name);
  const int fd = call.create_file(generation_fd_, file.name, 0600);
  if (fd < 0) return given_up(fail(Step::create_temp_file, fd, created.view(), seen.view()));
  file.fd = fd;
  bool stalled = false;
  if (const int r = detail::write_all(call, fd, data.data(), data.size(), stalled); r < 0) {
    (void)call.close(fd);
    (void)call.unlink(generation_fd_, file.name);
    return given_up(fail(Step::write_data, r, created.view(), seen.view(),
                         stalled ? "the write kept returning 0 bytes" : nullptr));
  }
  return {};
}

// The files' bytes and modes durable, their writebacks overlapping, then
// the generation directory's entries.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::make_durable() noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const detail::JoinedPath generation(
      path(), detail::GenerationName(generation_, detail::GenerationState::building).c_str());
  const auto failed = [&](Step step, int r, const File& file) {
    const detail::JoinedPath where(generation.view(), std::string_view(file.name, file.name_len));
    return fail(step, r, where.view());
  };
  for (const File& file : files_)
    if (const int r = call.set_mode(file.fd, file.mode); r < 0)
      return failed(Step::set_permissions, r, file);
  if constexpr (S::file != SyncLevel::none && detail::has_start_writeback<FsRef>::value)
    for (const File& file : files_) (void)call.start_writeback(file.fd);
  for (const File& file : files_) {
    int r = 0;
    if constexpr (S::file == SyncLevel::full)
      r = call.sync_full(file.fd);
    else if constexpr (S::file == SyncLevel::data)
      r = call.sync_data(file.fd);
    if (r < 0) return failed(Step::sync_file, r, file);
  }
  for (File& file : files_)
    if (const int r = call.close(std::exchange(file.fd, -1)); r < 0)
      return failed(Step::close_temp_file, r, file);
  if constexpr (S::directory)
    if (const int r = call.sync_full(generation_fd_); r < 0)
      return fail(Step::sync_directory, r, generation.view());
  return {};
}

// The generation named gen-N (complete from here on), then DIR/current
// swapped to it by a rename, which readers see whole: the temp symlink and
// the generation's name are durable before it, the rename after it.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::swap_current() noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  const detail::GenerationName building(generation_, detail::GenerationState::building);
  const detail::GenerationName generation(generation_);
  if (const int r = call.rename_noreplace(dir_fd, building.c_str(), generation.c_str()); r < 0) {
    const detail::JoinedPath from(path(), building.c_str());
    const detail::JoinedPath to(path(), generation.c_str());
    return fail(Step::rename, r, from.view(), to.view());
  }
  generation_named_ = true;
  char temp[20];
  int r = -EEXIST;
  for (int tries = 0; r == -EEXIST && tries < 100; ++tries) {
    static constexpr char kLinkPrefix[] = ".current";  // then make_temp_name's 12 bytes
    std::copy_n(kLinkPrefix, 8, temp);
    detail::make_temp_name(temp + 8);
    r = call.make_symlink(generation.c_str(), dir_fd, temp);
  }
  const detail::JoinedPath link(path(), temp);
  const detail::JoinedPath current(path(), "current");
  if (r < 0) return fail(Step::create_temp_file, r, link.view(), current.view());
  const auto given_up = [&](Status failure) {
    (void)call.unlink(dir_fd, temp);
    return failure;
  };
  if constexpr (S::directory)
    if (const int synced = call.sync_full(dir_fd); synced < 0)
      return given_up(fail(Step::sync_directory, synced, path(), current.view()));
  if (const int renamed = call.rename(dir_fd, temp, "current"); renamed < 0)
    return given_up(fail(Step::rename, renamed, link.view(), current.view()));
  current_ = generation_;
  generation_ = 0;
  generation_named_ = false;
  (void)call.close(std::exchange(generation_fd_, -1));
  if constexpr (S::directory)
    if (const int synced = call.sync_full(dir_fd); synced < 0)
      return fail(Step::sync_directory, synced, path(), current.view(), nullptr, true);
  return {};
}

template <class S, class Fs>
Status SnapshotWriter<S, Fs>::publish() noexcept {
  if (files_.empty())
    return Status(Step::invalid_use, std::make_error_code(std::errc::invalid_argument), path(), {},
                  false, "an empty snapshot: add a file first");
  if (Status durable = make_durable(); !durable) {
    discard();
    return durable;
  }
  if (Status swapped = swap_current(); !swapped) {
    if (!swapped.replaced()) discard();
    files_.clear();
    return swapped;
  }
  files_.clear();
  TempSweep swept;
  // The swap is durable here (as durable as the policy makes anything):
  // what failed is only the removal of an old generation, which the next
  // publish or open tries again. replaced() is for a swap not known to be
  // durable; this one is.
  if (Status pruned = prune(swept); !pruned) {
    const detail::JoinedPath current(path(), "current");
    return Status(pruned.step(), pruned.code(), pruned.path(), current.view(), false,
                  S::directory ? "the snapshot was published and is durable; an old "
                                 "generation was not removed"
                               : "the snapshot was published (NoSync: not known to be "
                                 "durable); an old generation was not removed");
  }
  return {};
}

// The generation being built (or named gen-N but never current) is
// removed: no reader entered it.
template <class S, class Fs>
void SnapshotWriter<S, Fs>::discard() noexcept {
  if (generation_ == 0) return;
  detail::Retrying<FsRef> call(dir_.filesystem());
  for (File& file : files_)
    if (file.fd >= 0) (void)call.close(std::exchange(file.fd, -1));
  files_.clear();
  const detail::GenerationName name(std::exchange(generation_, 0),
                                    std::exchange(generation_named_, false)
                                        ? detail::GenerationState::complete
                                        : detail::GenerationState::building);
  TempSweep ignored;
  (void)remove_tree(name.c_str(), std::exchange(generation_fd_, -1), ignored);
}

template <class S, class Fs>
Result<TempSweep> SnapshotWriter<S, Fs>::remove_stale_generations() noexcept {
  if (lock_fd_ < 0)
    return Status(Step::invalid_use, std::make_error_code(std::errc::bad_file_descriptor), path(),
                  {}, false, "the SnapshotWriter was moved from");
  TempSweep swept;
  if (Status pruned = prune(swept); !pruned) return pruned;
  return swept;
}

// Under the writer's lock no other publisher is at work, so every temp
// symlink is stale, and so is every generation being built or removed but
// this writer's own, and every generation newer than current (a killed
// publisher's). Of the older ones, the newest keep-1 stay for readers
// still inside them; so does any a reader holds. `generations` false: no
// gen-N is removed (DIR/current is missing).
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::prune(TempSweep& sweep, bool generations) noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  if (Status listed = list(); !listed) return listed;
  for (const auto& link : entries_.temp_links) {
    const int r = call.unlink(dir_fd, link.data());
    if (r < 0 && detail::is_directory_refusal(call, dir_fd, link.data(), r)) {
      ++sweep.not_regular;  // a directory of someone else's under a temp link's name
      continue;
    }
    if (detail::is_refusal(r)) {
      ++sweep.not_permitted;  // another user's, in a directory that lets only them remove it
      continue;
    }
    if (r == -EBUSY) {
      ++sweep.not_regular;  // a mount point (a file bind-mounted there): not the writer's
      continue;
    }
    if (r < 0 && r != -ENOENT) {
      const detail::JoinedPath where(path(), link.data());
      return fail(Step::remove_temp_file, r, where.view());
    }
    sweep.removed += r == 0 ? 1 : 0;
  }
  auto& found = entries_.generations;
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.number > b.number;  // newest first
  });
  unsigned older_kept = 0;
  for (const auto& g : found) {
    const std::uint64_t n = g.number;
    if (g.state != detail::GenerationState::complete) {
      if (n == generation_ && !generation_named_ && g.state == detail::GenerationState::building)
        continue;  // this writer's own, being built
      const detail::GenerationName name(n, g.state);
      if (Status removed = remove_tree(name.c_str(), -1, sweep); !removed) return removed;
      continue;
    }
    if (!generations || n == current_ || (n == generation_ && generation_named_)) continue;
    if (n < current_ && older_kept + 1 < options_.keep) {
      ++older_kept;
      continue;
    }
    if (Status retired = retire_generation(n, sweep); !retired) return retired;
  }
  return {};
}

// A generation leaves its name gen-N while it is locked exclusively, which
// no reader holding it lets happen: a reader who locks it later finds the
// name gone and reads current again. Emptied and removed under the new
// name, a failure half-way leaves .removing-gen-N, which no reader takes.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::retire_generation(std::uint64_t n, TempSweep& sweep) noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  const detail::GenerationName name(n);
  const detail::JoinedPath where(path(), name.c_str());
  const int fd = call.open_directory_at(dir_fd, name.c_str());
  if (fd == -ENOENT) return {};
  if (fd == -ENOTDIR || fd == -ELOOP) {
    ++sweep.not_regular;  // a file or symlink named as a generation: not the writer's
    return {};
  }
  if (detail::is_refusal(fd)) {
    ++sweep.not_permitted;  // another user's, closed to this one
    return {};
  }
  if (fd < 0) return fail(Step::remove_temp_file, fd, where.view());
  const int locked = call.try_lock(fd);
  if (locked == -EWOULDBLOCK || locked == -EAGAIN) {
    ++sweep.in_use;  // a SnapshotReader holds it
    (void)call.close(fd);
    return {};
  }
  // Another failure (a filesystem without flock): no reader can hold a
  // lease there either.
  const detail::GenerationName removing(n, detail::GenerationState::removing);
  if (const int r = call.rename(dir_fd, name.c_str(), removing.c_str()); r < 0) {
    (void)call.close(fd);
    if (r == -ENOTEMPTY || r == -EEXIST || r == -ENOTDIR || r == -EBUSY) {
      // A .removing-gen-N of someone else's in the way (a file under that
      // name: ENOTDIR), or a mount point under either name (EBUSY: a
      // filesystem mounted there, never the writer's to empty). gen-N
      // stays, tried again by every prune; no new generation takes a
      // number already in the directory.
      ++sweep.not_regular;
      return {};
    }
    if (detail::is_refusal(r)) {
      ++sweep.not_permitted;  // a sticky directory's entry of another user
      return {};
    }
    return fail(Step::remove_temp_file, r, where.view());
  }
  return remove_tree(removing.c_str(), fd, sweep);
}

// Empties the directory `name` of DIR and removes it. `fd`: its descriptor
// when already open (closed here, after the removal, so that a lock held
// through it lasts to the end), or -1. A directory inside it is not the
// writer's: left, with its parent, and counted (not_regular). What the
// system refuses to remove for want of permission (another user's
// generation, such as one a run as root left) is left likewise, counted
// once as not_permitted. A mount point is not the writer's either, and
// nothing in it is listed or removed: a directory not on DIR's device (a
// filesystem mounted there), and what the system refuses to remove as a
// mount point (EBUSY: a bind mount of the same filesystem, which shares
// its device; for a name not yet open, its removal is tried first, which
// removes an empty directory and refuses a mount point before anything in
// it is looked at). Each is left, counted (not_regular).
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::remove_tree(const char* name, int fd, TempSweep& sweep) noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  const detail::JoinedPath where(path(), name);
  if (fd < 0) {
    // Another failure (ENOTEMPTY, EEXIST, a file's ENOTDIR) is the next
    // calls' to tell.
    const int removed = call.remove_directory(dir_fd, name);
    if (removed == 0) ++sweep.removed;
    if (removed == 0 || removed == -ENOENT) return {};
    if (removed == -EBUSY) {
      ++sweep.not_regular;  // a mount point
      return {};
    }
    fd = call.open_directory_at(dir_fd, name);
    if (fd == -ENOENT) return {};
    if (fd == -ENOTDIR || fd == -ELOOP) {
      ++sweep.not_regular;
      return {};
    }
    if (detail::is_refusal(fd)) {
      ++sweep.not_permitted;
      return {};
    }
    if (fd < 0) return fail(Step::remove_temp_file, fd, where.view());
  }
  FileInfo info;
  if (const int r = call.file_info(fd, info); r < 0 || info.device != device_) {
    (void)call.close(fd);
    if (r >= 0) {
      ++sweep.not_regular;  // another filesystem, mounted there
      return {};
    }
    if (detail::is_refusal(r)) {
      ++sweep.not_permitted;
      return {};
    }
    return fail(Step::remove_temp_file, r, where.view());
  }
  names_.clear();
  int r = call.list_directory(fd, &detail::GenerationFiles::add, &names_);
  if (r >= 0 && names_.out_of_memory) r = -ENOMEM;
  bool foreign = false;
  bool refused = detail::is_refusal(r);
  if (refused) r = 0;
  for (std::size_t i = 0; r >= 0 && !refused && i < names_.names.size(); ++i) {
    r = call.unlink(fd, names_.names[i].data());
    if (r == -ENOENT) r = 0;
    // A directory, or a mount point (a file bind-mounted there: EBUSY).
    if (r == -EBUSY ||
        (r < 0 && detail::is_directory_refusal(call, fd, names_.names[i].data(), r))) {
      foreign = true;
      r = 0;
    }
    if (detail::is_refusal(r)) {
      refused = true;  // the generation's directory is another user's: so is the rest
      r = 0;
    }
  }
  if (r >= 0 && !foreign && !refused) {
    r = call.remove_directory(dir_fd, name);
    if (r == -ENOENT) r = 0;
    if (r == -EBUSY) {
      foreign = true;  // mounted on since it was opened
      r = 0;
    } else if (detail::is_refusal(r)) {
      refused = true;
      r = 0;
    }
    if (r == 0 && !refused && !foreign) ++sweep.removed;
  }
  (void)call.close(fd);
  if (foreign) ++sweep.not_regular;
  if (refused) ++sweep.not_permitted;
  if (r < 0) return fail(Step::remove_temp_file, r, where.view());
  return {};
}

// ---------------------------------------------------------- SnapshotReader --

template <class Fs>
Result<SnapshotReader<Fs>> SnapshotReader<Fs>::open(PathView dir, Fs fs) noexcept {
  const detail::DirectoryPath path(dir.text());
  if (!path.ok()) return path.problem(Step::check_path);
  SnapshotReader reader(static_cast<Fs&&>(fs));
  detail::Retrying<FsRef> call(reader.fs_);
  const int dir_fd = call.open_directory(path.c_str());
  if (dir_fd < 0) return Status(Step::open_directory, detail::system_error(dir_fd), path.view());
  const detail::JoinedPath current(path.view(), "current");
  const auto given_up = [&](Status failure) {
    (void)call.close(dir_fd);
    return failure;
  };
  for (int tries = 0; tries < 100; ++tries) {
    char target[32];
    const ssize_t r = call.read_link(dir_fd, "current", target, sizeof target);
    if (r == -ENOENT)
      return given_up(Status(Step::open_file, detail::system_error(-ENOENT), current.view(), {},
                             false, "no snapshot is published: DIR/current is missing"));
    if (r == -EINVAL || r == -ENAMETOOLONG)
      return given_up(Status(Step::check_path, std::make_error_code(std::errc::invalid_argument),
                             current.view(), {}, false, "not a symlink naming a generation"));
    if (r < 0)
      return given_up(
          Status(Step::open_file, detail::system_error(static_cast<int>(r)), current.view()));
    const std::string_view name(target, static_cast<std::size_t>(r));
    const std::uint64_t n = detail::generation_of(name);
    if (n == 0)
      return given_up(Status(Step::check_path, std::make_error_code(std::errc::invalid_argument),
                             current.view(), {}, false,
                             "the symlink names no generation (gen-N) of the directory"));
    target[r] = '\0';
    const detail::JoinedPath where(path.view(), name);
    const int fd = call.open_directory_at(dir_fd, target);
    if (fd == -ENOENT) continue;  // removed since current was read: current moved on
    if (fd < 0)
      return given_up(Status(Step::open_directory, detail::system_error(fd), where.view()));
    const int locked = call.try_lock_shared(fd);
    if (locked == -EWOULDBLOCK || locked == -EAGAIN) {
      (void)call.close(fd);  // a writer is removing it
      continue;
    }
    if (locked < 0) {
      (void)call.close(fd);
      return given_up(Status(Step::lock_run, detail::system_error(locked), where.view(), {}, false,
                             "a SnapshotReader's lease needs flock"));
    }
    // Locked: no writer removes it from here on. One that began before
    // renamed it first: the name must still lead to this directory.
    FileInfo held, named;
    if (call.file_info(fd, held) >= 0 && call.entry_info(dir_fd, target, named) >= 0 &&
        held.device == named.device && held.inode == named.inode) {
      reader.generation_fd_ = fd;
      reader.generation_ = n;
      (void)call.close(dir_fd);
      return Result<SnapshotReader>(std::move(reader));
    }
    (void)call.close(fd);
  }
  return given_up(Status(
      Step::lock_run, std::make_error_code(std::errc::resource_unavailable_try_again),
      current.view(), {}, false, "current kept naming generations being removed (100 tries)"));
}

template <class Fs>
SnapshotReader<Fs>::SnapshotReader(SnapshotReader&& other) noexcept
    : fs_(static_cast<Fs&&>(other.fs_)),
      generation_fd_(std::exchange(other.generation_fd_, -1)),
      generation_(std::exchange(other.generation_, 0)) {}

template <class Fs>
SnapshotReader<Fs>& SnapshotReader<Fs>::operator=(SnapshotReader&& other) noexcept {
  if (this == &other) return *this;
  release();
  fs_ = static_cast<Fs&&>(other.fs_);
  generation_fd_ = std::exchange(other.generation_fd_, -1);
  generation_ = std::exchange(other.generation_, 0);
  return *this;
}

template <class Fs>
SnapshotReader<Fs>::~SnapshotReader() {
  release();
}

template <class Fs>
void SnapshotReader<Fs>::release() noexcept {
  if (generation_fd_ >= 0) (void)fs_.close(std::exchange(generation_fd_, -1));
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

// =========================================================== include/atomic_state/logging.hpp ====

#include <pthread.h>  // pthread_mutex_t: LogfmtSink (<mutex> would cost every includer)

#include <iosfwd>   // std::ostream: LogfmtSink (its user includes <ostream>)
#include <variant>  // std::variant: Field::Value

// The C++20 spelling of the LogSink requirement, where the compiler has it.
#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
#define ATOMIC_STATE_DETAIL_LOG_SINK ::atomic_state::LogSink
#else
#define ATOMIC_STATE_DETAIL_LOG_SINK class
#endif

// Exact JSON numbers are written with std::to_chars and read with
// std::from_chars; without them a saved double could not load back bit for
// bit.
#if !defined(__cpp_lib_to_chars) && !(defined(__GLIBCXX__) && _GLIBCXX_RELEASE >= 11)
#error \
    "atomic_state.hpp needs floating-point std::to_chars/std::from_chars (libstdc++ 11, libc++ 17, MSVC 19.24 or later)"
#endif

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

/// How much a log record matters.
enum class Level : unsigned char { debug, info, warn, error };

/// "debug", "info", "warn" or "error".
constexpr std::string_view to_string(Level level) noexcept;

/// One key/value pair of a log record. A string value is a view: it is
/// valid only during the log() call that receives it.
namespace detail {
// Character types, which a log field refuses: logged as a number a char
// would mislead, and as text it would need storage the field does not
// have. (signed char and unsigned char are int8_t and uint8_t: numbers.)
template <class T>
inline constexpr bool is_character_v =
    std::is_same_v<T, char> || std::is_same_v<T, wchar_t> || std::is_same_v<T, char16_t> ||
#if defined(__cpp_char8_t)
    std::is_same_v<T, char8_t> ||
#endif
    std::is_same_v<T, char32_t>;
}  // namespace detail

/// One key/value pair of a log record. A string value is a view: it is
/// valid only during the log() call that receives it. Signed integers are
/// held as int64, unsigned ones as uint64, so every value logs as itself.
struct Field {
  using Value = std::variant<std::int64_t, std::uint64_t, double, bool, std::string_view>;

  std::string_view key;
  Value value;

  /// No key, the value 0: a place to fill in an array of fields.
  constexpr Field() noexcept : value(std::int64_t{0}) {}
  constexpr Field(std::string_view k, std::string_view v) noexcept : key(k), value(v) {}
  constexpr Field(std::string_view k, const char* v) noexcept
      : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, const std::string& v) noexcept : key(k), value(std::string_view(v)) {}
  constexpr Field(std::string_view k, bool v) noexcept : key(k), value(v) {}
  constexpr Field(std::string_view k, double v) noexcept : key(k), value(v) {}
  template <class Int, std::enable_if_t<std::is_integral_v<Int> && !std::is_same_v<Int, bool> &&
                                            !detail::is_character_v<Int>,
                                        int> = 0>
  constexpr Field(std::string_view k, Int v) noexcept : key(k), value(widened(v)) {}
  /// A character is refused: log a string_view of it, or cast it to a number.
  template <class Char, std::enable_if_t<detail::is_character_v<Char>, int> = 0>
  Field(std::string_view k, Char v) = delete;

 private:
  template <class Int>
  static constexpr Value widened(Int v) noexcept {
    if constexpr (std::is_signed_v<Int>)
      return Value(std::in_place_type<std::int64_t>, v);
    else
      return Value(std::in_place_type<std::uint64_t>, v);
  }
};

/// The fields of one record: a view of an array of Field, iterable. Valid
/// only during the log() call that receives it: copy what you keep.
class Fields {
 public:
  constexpr Fields() noexcept = default;
  constexpr Fields(const Field* data, std::size_t size) noexcept : data_(data), size_(size) {}

  constexpr const Field* begin() const noexcept { return data_; }
  constexpr const Field* end() const noexcept { return data_ + size_; }
  constexpr std::size_t size() const noexcept { return size_; }
  constexpr bool empty() const noexcept { return size_ == 0; }
  constexpr const Field& operator[](std::size_t i) const noexcept { return data_[i]; }
  /// The first field named `key`, or nullptr.
  const Field* find(std::string_view key) const noexcept;

 private:
  const Field* data_ = nullptr;
  std::size_t size_ = 0;
};

/// A log sink is any type with a member `log(Level, std::string_view
/// message, Fields fields)`; a template over the fields' type works too.
/// The C++17 static_asserts ask this trait; the C++20 concept LogSink asks
/// the same of the call itself, so that compilers print the signature it
/// needs (tests/compile_fail_test.sh checks that the two agree). A
/// reference to a sink is a sink. A sink that throws is tolerated:
/// StateManager catches and drops the exception.
template <class S, class = void>
struct is_log_sink : std::false_type {};
template <class S>
struct is_log_sink<
    S, std::void_t<decltype(std::declval<S&>().log(
           std::declval<Level>(), std::declval<std::string_view>(), std::declval<Fields>()))>>
    : std::true_type {};
template <class S>
inline constexpr bool is_log_sink_v = is_log_sink<std::remove_reference_t<S>>::value;

#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
template <class S>
concept LogSink = requires(S& sink) {
  sink.log(Level(), std::string_view(), Fields());
};
#endif

/// The default sink: drops every record and costs nothing.
struct NullSink {
  constexpr void log(Level, std::string_view, Fields) const noexcept {}
};

/// Writes one logfmt line per record to a std::ostream and flushes it:
///   level=info msg="state saved" timestamp=1700000000 tvs=1500000000.0
/// Records below the minimum level are dropped. Every byte that comes from
/// data is escaped, so one record is one line for every common log reader:
/// a value is bare when it is one plain printable ASCII word, else quoted,
/// with `"` `\\` and control characters escaped as in JSON, C1 controls,
/// U+2028, U+2029 and the bidirectional controls as \\uXXXX, and bytes
/// that are not UTF-8 as \\xNN; a key keeps only printable ASCII other than
/// `=` `"` `\\`, every other byte becoming `_`, and a field named `level`
/// or `msg` is written `fields.level`, `fields.msg`. A line the stream fails to
/// take is lost alone: the stream's error state is cleared before each
/// line, as is one whose stream throws. DEL is escaped as \\u007f. A double
/// is written exactly, and always as a double (1500000000.0, 0.1). Safe to
/// share between threads: each line is formatted apart, then written whole
/// under a lock. Formatting allocates nothing for lines up to 512 bytes.
/// Movable, not copyable: share one by reference (StateManager<LogfmtSink&>).
class LogfmtSink {
 public:
  /// `out` is a std::ostream (or one derived from it), which the caller's
  /// code includes: this header includes only <iosfwd> for it.
  template <class Stream, std::enable_if_t<std::is_base_of_v<std::ostream, Stream>, int> = 0>
  explicit LogfmtSink(Stream& out, Level min_level = Level::info) noexcept
      : out_(&out),
        write_(&write_line<Stream>),
        min_level_(static_cast<unsigned char>(min_level)) {}
  /// Takes over the stream and level; the lock is a new one.
  LogfmtSink(LogfmtSink&& other) noexcept
      : out_(other.out_), write_(other.write_), min_level_(other.min_level_.load()) {}
  LogfmtSink(const LogfmtSink&) = delete;
  LogfmtSink& operator=(const LogfmtSink&) = delete;
  ~LogfmtSink() { (void)::pthread_mutex_destroy(&mutex_); }

  void log(Level level, std::string_view message, Fields fields) noexcept;

  Level min_level() const noexcept { return static_cast<Level>(min_level_.load()); }
  void set_min_level(Level level) noexcept { min_level_.store(static_cast<unsigned char>(level)); }

 private:
  // Writes one whole line and flushes, under the sink's lock; a stream set
  // to throw must not end the save, and a line lost before must not silence
  // every line after it.
  template <class Stream>
  static void write_line(std::ostream* out, std::string_view line) noexcept {
    // std::ostream's own members, never a derived stream's of the same
    // names; named through Stream so that the calls wait for the caller's
    // <ostream> (this header has only <iosfwd>).
    using Out = std::conditional_t<std::is_base_of_v<std::ostream, Stream>, std::ostream, Stream>;
    Out& stream = *out;
    ATOMIC_STATE_DETAIL_TRY {
      stream.clear();
      stream.write(line.data(), static_cast<std::streamsize>(line.size()));
      stream.flush();
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL {}
  }

  std::ostream* out_;
  void (*write_)(std::ostream*, std::string_view) noexcept;
  std::atomic<unsigned char> min_level_;
  pthread_mutex_t mutex_ = PTHREAD_MUTEX_INITIALIZER;  // not <mutex>: it costs every includer
};

/// The names before 0.2.0, removed in 0.3.0.
using NullLogger [[deprecated("renamed NullSink; removed in 0.3.0")]] = NullSink;
using LogfmtLogger [[deprecated("renamed LogfmtSink; removed in 0.3.0")]] = LogfmtSink;

/// Appends each field as " key=value", escaped as LogfmtSink escapes them:
/// for sinks of one's own that write text lines (examples/sinks/ has one for
/// spdlog). False when memory ran out (`out` then holds a part).
bool append_logfmt_fields(std::string& out, Fields fields) noexcept;
/// Appends `text` as one logfmt value, as LogfmtSink writes it: bare when
/// it is a plain word, else quoted and escaped. False when memory ran out.
bool append_logfmt_text(std::string& out, std::string_view text) noexcept;

/// "2023-11-14T22:13:20Z" for 1700000000: RFC 3339 in UTC, whole seconds.
/// Years outside 0000-9999 are written with as many digits as they need
/// (and a '-' before the year), as Go's time package does.
std::string to_rfc3339(std::int64_t unix_seconds);

// ========================================================= implementation ====

constexpr std::string_view to_string(Level level) noexcept {
  switch (level) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
  }
  return "unknown";
}

inline const Field* Fields::find(std::string_view key) const noexcept {
  for (const Field& field : *this)
    if (field.key == key) return &field;
  return nullptr;
}

namespace detail {
/// Text built in place: the first N bytes live inside the object, more go
/// to the heap without throwing. Every failure to grow is reported.
template <std::size_t N>
class TextBuffer {
 public:
  TextBuffer() noexcept = default;
  TextBuffer(const TextBuffer&) = delete;
  TextBuffer& operator=(const TextBuffer&) = delete;

  /// Room for `n` more bytes at the end, or nullptr when memory ran out.
  char* room_for(std::size_t n) noexcept {
    if (n > capacity_ - size_ && !grow(n)) return nullptr;
    return data() + size_;
  }
  /// Counts `n` bytes written into room_for()'s space.
  void added(std::size_t n) noexcept { size_ += n; }
  bool append(std::string_view s) noexcept {
    char* p = room_for(s.size());
    if (p == nullptr) return false;
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    size_ += s.size();
    return true;
  }
  std::size_t size() const noexcept { return size_; }
  std::size_t spare() const noexcept { return capacity_ - size_; }
  std::string_view view() const noexcept {
    return std::string_view(heap_ ? heap_.get() : inline_, size_);
  }

 private:
  char* data() noexcept { return heap_ ? heap_.get() : inline_; }
  bool grow(std::size_t n) noexcept {
    if (n > static_cast<std::size_t>(-1) / 2 - size_) return false;
    std::size_t capacity = capacity_ * 2;
    if (capacity < size_ + n) capacity = size_ + n;
    std::unique_ptr<char[]> bigger(new (std::nothrow) char[capacity]);
    if (!bigger) return false;
    if (size_ > 0) std::memcpy(bigger.get(), data(), size_);
    heap_ = std::move(bigger);
    capacity_ = capacity;
    return true;
  }

  char inline_[N];
  std::unique_ptr<char[]> heap_;
  std::size_t size_ = 0;
  std::size_t capacity_ = N;
};

/// Appends to a std::string, reporting out-of-memory instead of throwing.
struct StringOut {
  std::string& text;
  bool append(std::string_view s) noexcept {
    ATOMIC_STATE_DETAIL_TRY {
      text.append(s.data(), s.size());
      return true;
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL { return false; }
  }
};

/// The shortest text that reads back as exactly `v` (finite), and reads
/// back as a double: plain digits from 1e-6 to 1e21 as people write them,
/// with ".0" when there would be no point ("2.0", not "2", which JSON
/// readers take for an integer), scientific outside; "-0.0" keeps the sign
/// of a negative zero.
inline std::size_t format_double(double v, char (&out)[40]) noexcept {
  if (v == 0) {
    // The sign bit, read as <cmath>'s signbit reads it (the header does not
    // include <cmath>: it alone would cost a fifth of the writer's compile).
    std::uint64_t bits = 0;
    static_assert(sizeof bits == sizeof v, "a double of 64 bits");
    std::memcpy(&bits, &v, sizeof bits);
    const std::string_view zero = bits >> 63 ? "-0.0" : "0.0";
    std::memcpy(out, zero.data(), zero.size());
    return zero.size();
  }
  const double magnitude = v < 0 ? -v : v;
  const bool fixed = magnitude >= 1e-6 && magnitude < 1e21;
  const auto r = std::to_chars(out, out + sizeof out - 2, v,
                               fixed ? std::chars_format::fixed : std::chars_format::scientific);
  if (r.ec != std::errc()) return 0;
  char* end = r.ptr;
  if (fixed && std::find(out, end, '.') == end) {
    *end++ = '.';
    *end++ = '0';
  }
  return static_cast<std::size_t>(end - out);
}

inline std::size_t format_int(std::int64_t v, char (&out)[40]) noexcept {
  return static_cast<std::size_t>(std::to_chars(out, out + sizeof out, v).ptr - out);
}

inline std::size_t format_uint(std::uint64_t v, char (&out)[40]) noexcept {
  return static_cast<std::size_t>(std::to_chars(out, out + sizeof out, v).ptr - out);
}

/// The length of the valid UTF-8 sequence starting at s[i] (1-4), or 0.
/// Rejects what JSON parsers reject: overlong forms, surrogates, values
/// above U+10FFFF, truncated sequences.
inline std::size_t utf8_sequence(std::string_view s, std::size_t i) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  std::size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  return n;
}

inline bool valid_utf8(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// The letter of JSON's two-character escape of `c` ('n' for a newline),
// or 0 when JSON has none.
inline char short_escape(unsigned char c) noexcept {
  switch (c) {
    case '"':
      return '"';
    case '\\':
      return '\\';
    case '\n':
      return 'n';
    case '\r':
      return 'r';
    case '\t':
      return 't';
    case '\b':
      return 'b';
    case '\f':
      return 'f';
    default:
      return 0;
  }
}

/// The JSON escape of an ASCII control character, quote or backslash:
/// "\\n" and its kin where JSON has one, else "\\u00XX". Returns its length.
inline std::size_t ascii_escape(unsigned char c, char (&out)[8]) noexcept {
  static constexpr char hex[] = "0123456789abcdef";
  out[0] = '\\';
  if (const char letter = short_escape(c)) {
    out[1] = letter;
    return 2;
  }
  const char code[5] = {'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
  std::memcpy(out + 1, code, sizeof code);
  return 6;
}

/// The code point of the valid UTF-8 sequence of `n` bytes at s[i].
inline std::uint32_t utf8_code_point(std::string_view s, std::size_t i, std::size_t n) noexcept {
  const auto byte = [&](std::size_t k) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(s[i + k]));
  };
  if (n == 1) return byte(0);
  std::uint32_t cp = byte(0) & (0x7Fu >> n);
  for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (byte(k) & 0x3Fu);
  return cp;
}

/// Code points that some log reader takes for a line break or that reorder
/// what a terminal shows: C1 controls (NEL, CSI, ...), U+2028, U+2029, and
/// the bidirectional marks, embeddings, overrides and isolates.
inline bool misleading_code_point(std::uint32_t cp) noexcept {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x061C || cp == 0x200E || cp == 0x200F ||
         (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

/// Appends `s` quoted for logfmt, escaped so that no byte of it can end
/// the line, forge a field or change what a terminal shows (see
/// LogfmtSink).
template <class Out>
bool append_logfmt_quoted(Out& out, std::string_view s) noexcept {
  static constexpr char hex[] = "0123456789abcdef";
  if (!out.append("\"")) return false;
  std::size_t plain = 0;  // start of the run of bytes that need no escape
  for (std::size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const std::size_t n = utf8_sequence(s, i);
    char escape[8];
    std::size_t len = 0;
    if (n == 0) {  // not UTF-8: the byte itself, visibly
      const char bad[4] = {'\\', 'x', hex[c >> 4], hex[c & 0xF]};
      std::memcpy(escape, bad, sizeof bad);
      len = 4;
    } else if (n == 1 && (c < 0x20 || c == '"' || c == '\\' || c == 0x7F)) {
      len = ascii_escape(c, escape);
    } else if (const std::uint32_t cp = utf8_code_point(s, i, n); misleading_code_point(cp)) {
      const char code[6] = {
          '\\', 'u', hex[cp >> 12], hex[(cp >> 8) & 0xF], hex[(cp >> 4) & 0xF], hex[cp & 0xF]};
      std::memcpy(escape, code, sizeof code);
      len = 6;
    }
    if (len > 0) {
      if (!out.append(s.substr(plain, i - plain)) || !out.append(std::string_view(escape, len)))
        return false;
      i += n == 0 ? 1 : n;
      plain = i;
    } else {
      i += n;
    }
  }
  return out.append(s.substr(plain)) && out.append("\"");
}

/// A plain logfmt word: printable ASCII but `=`, `"` and `\\`.
inline bool plain_logfmt_byte(char c) noexcept {
  return c > ' ' && c < 0x7F && c != '=' && c != '"' && c != '\\';
}

/// A logfmt value: bare when it is one plain word, quoted and escaped
/// otherwise.
template <class Out>
bool append_logfmt_text(Out& out, std::string_view s) noexcept {
  if (!s.empty() && std::all_of(s.begin(), s.end(), plain_logfmt_byte)) return out.append(s);
  return append_logfmt_quoted(out, s);
}

/// A logfmt key: logfmt readers take no quoted key, so every byte that is
/// not a plain word's becomes `_` (an empty key is `_`). A field may not
/// pass for the record's own level or message: those become
/// `fields.level` and `fields.msg`.
template <class Out>
bool append_logfmt_key(Out& out, std::string_view key) noexcept {
  if (key.empty()) return out.append("_");
  if (key == "level" || key == "msg") return out.append("fields.") && out.append(key);
  for (const char c : key)
    if (!out.append(plain_logfmt_byte(c) ? std::string_view(&c, 1) : std::string_view("_")))
      return false;
  return true;
}

template <class Out>
bool append_logfmt_value(Out& out, const Field::Value& value) noexcept {
  char number[40];
  if (const auto* i = std::get_if<std::int64_t>(&value))
    return out.append(std::string_view(number, format_int(*i, number)));
  if (const auto* u = std::get_if<std::uint64_t>(&value))
    return out.append(std::string_view(number, format_uint(*u, number)));
  if (const auto* d = std::get_if<double>(&value)) {
    // Without <cmath>: only NaN differs from itself, and only an infinity
    // (NaN excluded) minus itself is not zero.
    if (*d != *d) return out.append("NaN");
    if (*d - *d != 0) return out.append(*d > 0 ? "+Inf" : "-Inf");
    return out.append(std::string_view(number, format_double(*d, number)));
  }
  if (const auto* b = std::get_if<bool>(&value)) return out.append(*b ? "true" : "false");
  return append_logfmt_text(out, std::get<std::string_view>(value));
}
}  // namespace detail

inline void LogfmtSink::log(Level level, std::string_view message, Fields fields) noexcept {
  if (level < min_level()) return;
  detail::TextBuffer<512> line;
  bool complete = line.append("level=") && line.append(to_string(level)) && line.append(" msg=") &&
                  detail::append_logfmt_text(line, message);
  for (const Field& field : fields)
    complete = complete && line.append(" ") && detail::append_logfmt_key(line, field.key) &&
               line.append("=") && detail::append_logfmt_value(line, field.value);
  if (!complete || !line.append("\n")) return;  // out of memory: drop the record
  if (::pthread_mutex_lock(&mutex_) != 0) return;
  write_(out_, line.view());
  (void)::pthread_mutex_unlock(&mutex_);
}

inline bool append_logfmt_fields(std::string& out, Fields fields) noexcept {
  detail::StringOut text{out};
  for (const Field& field : fields)
    if (!text.append(" ") || !detail::append_logfmt_key(text, field.key) || !text.append("=") ||
        !detail::append_logfmt_value(text, field.value))
      return false;
  return true;
}

inline bool append_logfmt_text(std::string& out, std::string_view text) noexcept {
  detail::StringOut to{out};
  return detail::append_logfmt_text(to, text);
}

namespace detail {
/// Days since 1970-01-01 to a proleptic Gregorian date (the "civil from
/// days" algorithm by Howard Hinnant, valid for every int64 timestamp).
struct CivilDate {
  std::int64_t year;
  unsigned month, day;
};
inline CivilDate civil_from_days(std::int64_t days) noexcept {
  days += 719468;  // shift the epoch to 0000-03-01
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto day_of_era = static_cast<unsigned>(days - era * 146097);
  const unsigned year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  const unsigned day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const unsigned shifted_month = (5 * day_of_year + 2) / 153;  // March is 0
  CivilDate date;
  date.day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
  date.month = shifted_month < 10 ? shifted_month + 3 : shifted_month - 9;
  date.year = static_cast<std::int64_t>(year_of_era) + era * 400 + (date.month <= 2);
  return date;
}

inline std::size_t format_rfc3339(std::int64_t t, char (&out)[40]) noexcept {
  std::int64_t days = t / 86400, seconds = t % 86400;
  if (seconds < 0) {
    seconds += 86400;
    --days;
  }
  const CivilDate date = civil_from_days(days);
  char* p = out;
  std::int64_t year = date.year;
  if (year < 0) *p++ = '-';
  const std::uint64_t digits_of =
      year < 0 ? 0 - static_cast<std::uint64_t>(year) : static_cast<std::uint64_t>(year);
  char year_text[24] = {};
  const auto end = std::to_chars(year_text, year_text + sizeof year_text, digits_of).ptr;
  for (auto width = end - year_text; width < 4; ++width) *p++ = '0';
  for (const char* q = year_text; q != end; ++q) *p++ = *q;
  const auto two = [&](unsigned v, char after) {
    *p++ = static_cast<char>('0' + v / 10);
    *p++ = static_cast<char>('0' + v % 10);
    if (after) *p++ = after;
  };
  const auto s = static_cast<unsigned>(seconds);
  *p++ = '-';
  two(date.month, '-');
  two(date.day, 'T');
  two(s / 3600, ':');
  two(s / 60 % 60, ':');
  two(s % 60, 'Z');
  return static_cast<std::size_t>(p - out);
}
}  // namespace detail

inline std::string to_rfc3339(std::int64_t unix_seconds) {
  char text[40];
  return std::string(text, detail::format_rfc3339(unix_seconds, text));
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

// ============================================================== include/atomic_state/json.hpp ====

// Without Boost.JSON's headers, one error says what to do, and the JSON
// parts (this one, state.hpp, state_manager.hpp) are left out so that
// nothing follows it.
#if !defined(ATOMIC_STATE_NO_JSON) && defined(__has_include)
#if !__has_include(<boost/json/value.hpp>)
#error \
    "atomic_state.hpp: Boost.JSON's headers are not found: install them (Debian, Ubuntu: libboost-json1.81-dev), or define ATOMIC_STATE_NO_JSON to leave out StateManager"
#define ATOMIC_STATE_DETAIL_NO_BOOST_JSON
#endif
#endif

#if !defined(ATOMIC_STATE_NO_JSON) && !defined(ATOMIC_STATE_DETAIL_NO_BOOST_JSON)
#define ATOMIC_STATE_DETAIL_JSON 1
#else
#define ATOMIC_STATE_DETAIL_JSON 0
#endif

#if ATOMIC_STATE_DETAIL_JSON
// Only what is used, not <boost/json.hpp>: it saves compile time. The
// library itself comes from -lboost_json or from Boost.JSON's src.hpp in one
// translation unit of the program (never from here).
#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_stack.hpp>
#include <boost/json/value_to.hpp>
#include <cmath>  // std::isnan, std::isinf, std::fabs

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// --------------------------------------------------------------- exact JSON --

/// Parses JSON the way state files are read: standard JSON only (no
/// comments, no trailing commas, valid UTF-8), at most
/// ATOMIC_STATE_JSON_MAX_DEPTH levels deep, and every number converted
/// exactly. A double written by format_json reads back bit for bit (plain
/// Boost.JSON 1.81 is one unit in the last place off for about a quarter of
/// them), and a number too large for a double (1e400) or an integer beyond
/// 64 bits is an error rather than Infinity or an approximation. A failure
/// is Step::parse with Boost.JSON's code, the detail saying where ("at byte
/// 3") and, for a number, why ("integer beyond 64 bits at byte 12"). Running
/// out of memory is Step::parse with ENOMEM, never an exception.
Result<boost::json::value> parse_json(std::string_view text,
                                      boost::json::storage_ptr sp = {}) noexcept;

/// Writes `value` as JSON a person can read: two-space indent, keys in the
/// object's order, the shortest text that reads back exactly for each
/// number (a double always with a point or an exponent, so that it reads
/// back as a double), one trailing newline. Refuses what parse_json could
/// not read back (a NaN or infinite double, invalid UTF-8, nesting deeper
/// than ATOMIC_STATE_JSON_MAX_DEPTH): Step::serialize naming where, and
/// `out` left empty; running out of memory is Step::serialize, ENOMEM.
/// Strings escape the quote, the backslash and the controls below U+0020;
/// every other byte, DEL included, is written as it is.
Status format_json(const boost::json::value& value, std::string& out) noexcept;

// ========================================================= implementation ====

namespace detail {
/// Appends `s` as the inside of a JSON string: quote, backslash and the
/// controls below U+0020 escaped, which is all JSON asks; everything else
/// (DEL included) as it is, so the text grows no more than it must.
template <class Out>
bool append_json_escaped(Out& out, std::string_view s) noexcept {
  std::size_t plain = 0;  // start of the run of bytes that need no escape
  for (std::size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    char escape[8];
    const std::size_t len = ascii_escape(c, escape);
    if (!out.append(s.substr(plain, i - plain)) || !out.append(std::string_view(escape, len)))
      return false;
    plain = i + 1;
  }
  return out.append(s.substr(plain));
}

/// Where a JSON value sits in the document, for messages: "last_tvs",
/// "items[3].price". Frames are kept only while printing.
struct JsonFrame {
  std::string_view key;  // empty for an array element
  std::size_t index;
};

// Why a number or a string cannot be written as JSON that reads back the
// same, or null when it can: the one rule of JsonPrinter and print_state.
inline const char* unwritable(double d) noexcept {
  if (std::isnan(d)) return "not a finite number (NaN)";
  if (std::isinf(d)) return "not a finite number (infinity)";
  return nullptr;
}
inline const char* unwritable(std::string_view s) noexcept {
  return valid_utf8(s) ? nullptr : "not valid UTF-8";
}

/// Pretty-prints a boost::json::value, refusing what cannot be read back.
template <class Out>
class JsonPrinter {
 public:
  explicit JsonPrinter(Out& out) noexcept : out_(out) {}

  /// False on failure: describe_problem() says what and where, or
  /// out_of_memory().
  bool print(const boost::json::value& v) noexcept { return value(v, 0) && put("\n"); }
  bool out_of_memory() const noexcept { return reason_ == nullptr; }
  /// "items[3].price: not a finite number (NaN)", after a failure.
  template <class Text>
  bool describe_problem(Text& text) const noexcept {
    if (depth_ == 0 && !text.append("the top-level value")) return false;
    for (std::size_t i = 0; i < depth_; ++i) {
      const JsonFrame& frame = frames_[i];
      char index[24];
      const auto end = std::to_chars(index, index + sizeof index, frame.index).ptr;
      const bool ok =
          frame.key.empty()
              ? text.append("[") &&
                    text.append(std::string_view(index, static_cast<std::size_t>(end - index))) &&
                    text.append("]")
              : (i == 0 || text.append(".")) && text.append(frame.key);
      if (!ok) return false;
    }
    return text.append(": ") && text.append(reason_ ? reason_ : "out of memory");
  }

 private:
  bool put(std::string_view s) noexcept { return out_.append(s); }
  bool refuse(const char* reason) noexcept {
    reason_ = reason;
    return false;
  }
  bool indent(std::size_t level) noexcept {
    if (!put("\n")) return false;
    for (std::size_t i = 0; i < level; ++i)
      if (!put("  ")) return false;
    return true;
  }
  bool string(std::string_view s) noexcept {
    if (const char* why = unwritable(s)) return refuse(why);
    return put("\"") && append_json_escaped(out_, s) && put("\"");
  }
  bool number(std::size_t length) noexcept { return put(std::string_view(number_, length)); }
  bool value(const boost::json::value& v, std::size_t level) noexcept {
    switch (v.kind()) {
      case boost::json::kind::null:
        return put("null");
      case boost::json::kind::bool_:
        return put(v.get_bool() ? "true" : "false");
      case boost::json::kind::int64:
        return number(format_int(v.get_int64(), number_));
      case boost::json::kind::uint64: {
        const auto r = std::to_chars(number_, number_ + sizeof number_, v.get_uint64());
        return number(static_cast<std::size_t>(r.ptr - number_));
      }
      case boost::json::kind::double_: {
        const double d = v.get_double();
        if (const char* why = unwritable(d)) return refuse(why);
        return number(format_double(d, number_));
      }
      case boost::json::kind::string: {
        const boost::json::string& s = v.get_string();
        return string(std::string_view(s.data(), s.size()));
      }
      case boost::json::kind::array:
        return array(v.get_array(), level);
      case boost::json::kind::object:
        return object(v.get_object(), level);
    }
    return refuse("unknown kind of value");
  }
  // `level` counts the arrays and objects around a value, so the one at
  // level 31 is the 32nd: as deep as the parser goes.
  bool too_deep(std::size_t level) noexcept {
    if (level < ATOMIC_STATE_JSON_MAX_DEPTH) return false;
    reason_ = "nested deeper than ATOMIC_STATE_JSON_MAX_DEPTH";
    return true;
  }
  bool enter(std::string_view key, std::size_t index) noexcept {
    frames_[depth_++] = JsonFrame{key, index};
    return true;
  }
  bool array(const boost::json::array& a, std::size_t level) noexcept {
    if (too_deep(level)) return false;
    if (a.empty()) return put("[]");
    if (!put("[")) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if ((i > 0 && !put(",")) || !indent(level + 1) || !enter({}, i) || !value(a[i], level + 1))
        return false;
      --depth_;
    }
    return indent(level) && put("]");
  }
  bool object(const boost::json::object& o, std::size_t level) noexcept {
    if (too_deep(level)) return false;
    if (o.empty()) return put("{}");
    if (!put("{")) return false;
    bool first = true;
    for (const auto& member : o) {
      const std::string_view key(member.key().data(), member.key().size());
      if ((!first && !put(",")) || !indent(level + 1) || !enter(key, 0) || !string(key) ||
          !put(": ") || !value(member.value(), level + 1))
        return false;
      --depth_;
      first = false;
    }
    return indent(level) && put("}");
  }

  Out& out_;
  const char* reason_ = nullptr;
  std::size_t depth_ = 0;
  JsonFrame frames_[ATOMIC_STATE_JSON_MAX_DEPTH] = {};
  char number_[40];
};

/// A basic_parser handler that builds a boost::json::value like Boost's own
/// parser, except that it converts every non-integer number from its text
/// with std::from_chars (exact), and refuses one too large for a double.
class ExactNumberHandler {
 public:
  static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);

  ExactNumberHandler(boost::json::storage_ptr sp, unsigned char* scratch, std::size_t scratch_size)
      : stack_(boost::json::storage_ptr(), scratch, scratch_size) {
    stack_.reset(std::move(sp));
  }
  boost::json::value release() { return stack_.release(); }

  bool on_document_begin(boost::json::error_code&) { return true; }
  bool on_document_end(boost::json::error_code&) { return true; }
  bool on_array_begin(boost::json::error_code&) { return true; }
  bool on_array_end(std::size_t n, boost::json::error_code&) {
    stack_.push_array(n);
    return true;
  }
  bool on_object_begin(boost::json::error_code&) { return true; }
  bool on_object_end(std::size_t n, boost::json::error_code&) {
    stack_.push_object(n);
    return true;
  }
  bool on_string_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    stack_.push_chars(s);
    return true;
  }
  bool on_string(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    stack_.push_string(s);
    return true;
  }
  bool on_key_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    stack_.push_chars(s);
    return true;
  }
  bool on_key(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    stack_.push_key(s);
    return true;
  }
  // Only a number cut by the end of a buffer comes in parts.
  bool on_number_part(boost::json::string_view s, boost::json::error_code&) {
    number_.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t i, boost::json::string_view, boost::json::error_code&) {
    number_.clear();
    stack_.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, boost::json::string_view, boost::json::error_code&) {
    number_.clear();
    stack_.push_uint64(u);
    return true;
  }
  bool on_double(double approximate, boost::json::string_view s, boost::json::error_code& ec) {
    const char* first = s.data();
    const char* last = s.data() + s.size();
    if (!number_.empty()) {
      number_.append(s.data(), s.size());
      first = number_.data();
      last = number_.data() + number_.size();
    }
    number_.clear();
    // Boost hands over an integer too long for 64 bits as an approximate
    // double: refused, since it would come back as another number.
    if (std::none_of(first, last, [](char c) { return c == '.' || c == 'e' || c == 'E'; })) {
      reason_ = "integer beyond 64 bits";
      ec = boost::json::error::not_exact;
      return false;
    }
    double exact = 0;
    const auto r = std::from_chars(first, last, exact);
    if (r.ec == std::errc::result_out_of_range) {
      // Too large is refused; too small to tell from zero is zero.
      if (std::isinf(approximate) || std::fabs(approximate) > 1) {
        reason_ = "number too large for a double";
        ec = boost::json::error::exponent_overflow;
        return false;
      }
      exact = *first == '-' ? -0.0 : 0.0;
    } else if (r.ec != std::errc() || r.ptr != last) {
      ec = boost::json::error::syntax;
      return false;
    }
    stack_.push_double(exact);
    return true;
  }
  bool on_bool(bool b, boost::json::error_code&) {
    stack_.push_bool(b);
    return true;
  }
  bool on_null(boost::json::error_code&) {
    stack_.push_null();
    return true;
  }
  bool on_comment_part(boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_comment(boost::json::string_view, boost::json::error_code&) { return true; }

  /// What the handler refused, in more words than its error code, or null.
  const char* reason() const noexcept { return reason_; }

 private:
  boost::json::value_stack stack_;
  std::string number_;
  const char* reason_ = nullptr;
};

/// Why parse_exact failed: Boost.JSON's code, where, and the handler's own
/// words when it refused a number.
struct ParseFailure {
  boost::json::error_code code;
  std::size_t offset = 0;
  const char* reason = nullptr;

  explicit operator bool() const noexcept { return static_cast<bool>(code); }
  /// "integer beyond 64 bits at byte 12", or "at byte 3" when the code
  /// says it all: into a buffer, without allocating.
  template <class Out>
  bool where(Out& out) const noexcept {
    char at[40] = "at byte ";
    const auto end = std::to_chars(at + 8, at + sizeof at, offset).ptr;
    return (reason == nullptr || (out.append(reason) && out.append(" "))) &&
           out.append(std::string_view(at, static_cast<std::size_t>(end - at)));
  }
  /// "syntax error at byte 3", "not exact: integer beyond 64 bits at byte 12".
  template <class Out>
  bool describe(Out& out) const noexcept {
    char words[128];
    return out.append(code.message(words, sizeof words)) &&
           out.append(reason != nullptr ? ": " : " ") && where(out);
  }
};

/// Parses `text` into a value held by `sp`; on failure `failure` says why
/// and the value is null. May throw std::bad_alloc.
inline boost::json::value parse_exact(std::string_view text, boost::json::storage_ptr sp,
                                      ParseFailure& failure) {
  unsigned char scratch[1024];
  boost::json::parse_options options;
  options.max_depth = ATOMIC_STATE_JSON_MAX_DEPTH;
  boost::json::basic_parser<ExactNumberHandler> parser(options, std::move(sp), scratch,
                                                       sizeof scratch);
  failure.offset = parser.write_some(false, text.data(), text.size(), failure.code);
  if (!failure.code && failure.offset != text.size()) failure.code = boost::json::error::extra_data;
  failure.reason = parser.handler().reason();
  if (failure) return nullptr;
  return parser.handler().release();
}
}  // namespace detail

inline Result<boost::json::value> parse_json(std::string_view text,
                                             boost::json::storage_ptr sp) noexcept {
  detail::ParseFailure failure;
  ATOMIC_STATE_DETAIL_TRY {
    boost::json::value parsed = detail::parse_exact(text, std::move(sp), failure);
    if (!failure) return Result<boost::json::value>(std::move(parsed));
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL {
    return Status(Step::parse, std::make_error_code(std::errc::not_enough_memory), {});
  }
  detail::TextBuffer<256> why;
  return Status(Step::parse, failure.code, {}, {}, false, nullptr,
                failure.where(why) ? why.view() : std::string_view());
}

inline Status format_json(const boost::json::value& value, std::string& out) noexcept {
  out.clear();
  detail::StringOut sink{out};
  detail::JsonPrinter<detail::StringOut> printer(sink);
  if (printer.print(value)) return {};
  out.clear();
  detail::TextBuffer<256> why;
  if (printer.out_of_memory() || !printer.describe_problem(why))
    return Status(Step::serialize, std::make_error_code(std::errc::not_enough_memory), {});
  return Status(Step::serialize, std::make_error_code(std::errc::invalid_argument), {}, {}, false,
                nullptr, why.view());
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state
#endif  // ATOMIC_STATE_DETAIL_JSON

// ============================================================= include/atomic_state/state.hpp ====

#if ATOMIC_STATE_DETAIL_JSON
#include <initializer_list>  // std::initializer_list: update_state's timestamps
#include <tuple>             // std::tuple, std::apply: field tables

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// ------------------------------------------------------------- field tables --

namespace detail {
// The integer types a field table takes: every one but bool and the
// character types (signed char and unsigned char are int8_t and uint8_t),
// of at most 64 bits: a JSON integer in the file is an int64 or a uint64,
// so g++'s __int128 (gnu++17) would be cut on save and never read back.
template <class T>
inline constexpr bool is_field_integer_v =
    std::is_integral_v<T> && !std::is_same_v<T, bool> && !is_character_v<T> && sizeof(T) <= 8;
template <class T>
inline constexpr bool is_field_scalar_v = std::is_same_v<T, std::string> || is_field_integer_v<T> ||
                                          std::is_same_v<T, double> || std::is_same_v<T, bool>;
template <class T>
struct is_field_value : std::bool_constant<is_field_scalar_v<T>> {};
template <class T>
struct is_field_value<std::optional<T>> : std::bool_constant<is_field_scalar_v<T>> {};
}  // namespace detail

/// One member of a state type's field table: its name in the JSON file,
/// the member, and the keys under which the "state loaded" and "state
/// saved" records log it (null: not logged there). The member's type is
/// one JSON holds exactly: std::string, any integer type of at most 64
/// bits (int, std::uint32_t, short, std::int64_t, ..., not bool, a
/// character type or __int128), double or bool, or a std::optional of one
/// (null in the file, and not logged, when empty). Another type fails
/// here, at the table, in one line. An integer is read with its type's
/// exact range: 70000 in a short member makes the file corrupt ("integer
/// out of range"). The name must not be "schema_version", the library's key
/// (StateTraits::version), nor another field's name, and must be valid
/// UTF-8: a save of such a table, which would write a file no load reads
/// back as saved, is refused (Step::serialize, EINVAL, the detail naming
/// the key).
template <class S, class T>
struct StateField {
  static_assert(detail::is_field_value<T>::value,
                "state_field: a field's member is std::string, an integer type of at most 64 "
                "bits, double or bool, or a std::optional of one");
  const char* name;
  T S::*member;
  const char* loaded_as;
  const char* saved_as;
};

/// A row of a field table; see State::state_fields.
template <class S, class T>
constexpr StateField<S, T> state_field(const char* name, T S::*member,
                                       const char* loaded_as = nullptr,
                                       const char* saved_as = nullptr) noexcept {
  return StateField<S, T>{name, member, loaded_as, saved_as};
}

/// Whether S describes itself with a field table: a static `state_fields()`
/// returning a std::tuple of StateField. StateManager then prints, reads
/// and logs it from the table (a save allocates nothing) and needs no
/// Boost.JSON conversion of the type's own. Reading a table: a missing or
/// null key is the zero value; an unknown key is ignored; of a key given
/// twice, the last counts; a value of the wrong type, a fraction in an
/// integer member, an integer beyond the member's range or a non-finite
/// number makes the file corrupt. An integer in a double member is read
/// (the Go service wrote 1500000000; this library writes 1500000000.0).
template <class S, class = void>
struct has_state_fields : std::false_type {};
template <class S>
struct has_state_fields<S, std::void_t<decltype(S::state_fields())>> : std::true_type {};
template <class S>
inline constexpr bool has_state_fields_v = has_state_fields<S>::value;

// ------------------------------------------------------------- StateTraits --

/// What StateManager knows of a state type beyond its fields: its cursor
/// (how far the data processed has come) and its schema version.
/// Specialise it for a type of one's own, with only the members that
/// differ from these defaults:
///
/// - `static std::optional<C> cursor(const StateT&) noexcept`: the cursor
///   of the data last processed, of any totally ordered type C (a slot or
///   block number as std::uint64_t, a time), empty for "never processed",
///   so that every value of C is a valid cursor. should_process then takes
///   a C and logs `current` and `last`. Without it, the cursor is
///   `last_updated(state)` below: unix seconds, 0 for "never processed",
///   with the Go service's four rules and messages. C needs only `<`: an
///   (epoch, block) std::pair works, though only a cursor a log Field can
///   hold (a number, a string) is logged.
/// - `static std::int64_t last_updated(const StateT&) noexcept`: where a
///   type without a cursor keeps its unix seconds (default: the member
///   `last_updated`); examples/feed_state.hpp reads `updated_at`.
/// - `static constexpr int version`: the schema version of the type. 0, the
///   default, writes no version key; a type above 0 writes
///   `"schema_version": version` as the file's first key.
/// - `static void upgrade(boost::json::object& state, int from_version)`
///   (or returning bool, false to refuse): brings a state file's object
///   from `from_version` to `from_version + 1`. load_state calls it one
///   step at a time for a file older than `version`. Required when version
///   is above 0.
///
/// Loading versions: a file without the key (or null) is version 0; a key
/// that is not a whole number from 0 up makes the file corrupt. A newer
/// version is Step::upgrade with std::errc::not_supported ("a newer
/// program wrote it"); an upgrade that throws, returns false or leaves an
/// object that does not read is Step::upgrade with
/// std::errc::invalid_argument, the detail saying which step and why.
/// Either way the file is left as it is; an upgraded file is rewritten
/// only by the next save.
template <class StateT>
struct StateTraits {
  /// The default cursor: the member `last_updated`, unix seconds.
  template <class S = StateT>
  static auto last_updated(const S& state) noexcept
      -> decltype(static_cast<std::int64_t>(state.last_updated)) {
    return static_cast<std::int64_t>(state.last_updated);
  }
};

namespace detail {
// The key of a state file's schema version (StateTraits::version).
inline constexpr std::string_view version_key = "schema_version";

// The members a StateTraits specialisation may declare, each with its
// default when it does not.
template <class S, class = void>
struct has_cursor : std::false_type {};
template <class S>
struct has_cursor<S, std::void_t<decltype(StateTraits<S>::cursor(std::declval<const S&>()))>>
    : std::true_type {};
template <class S, class = void>
struct has_last_updated : std::false_type {};
template <class S>
struct has_last_updated<
    S, std::void_t<decltype(StateTraits<S>::last_updated(std::declval<const S&>()))>>
    : std::true_type {};
template <class S, class = void>
struct schema_version : std::integral_constant<int, 0> {};
template <class S>
struct schema_version<S, std::void_t<decltype(StateTraits<S>::version)>>
    : std::integral_constant<int, StateTraits<S>::version> {};
template <class S, class = void>
struct has_upgrade : std::false_type {};
template <class S>
struct has_upgrade<
    S, std::void_t<decltype(StateTraits<S>::upgrade(std::declval<boost::json::object&>(), 0))>>
    : std::true_type {};

template <class Optional>
struct optional_value {};
template <class T>
struct optional_value<std::optional<T>> {
  using type = T;
};

// The cursor of S: what should_process compares, and how to read it.
template <class S, bool = has_cursor<S>::value>
struct CursorOf {
  using type = std::int64_t;
  static constexpr bool unix_seconds = true;
  static std::optional<type> read(const S& state) noexcept {
    const std::int64_t t = StateTraits<S>::last_updated(state);
    return t == 0 ? std::nullopt : std::optional<type>(t);
  }
};
template <class S>
struct CursorOf<S, true> {
  using type = typename optional_value<
      std::decay_t<decltype(StateTraits<S>::cursor(std::declval<const S&>()))>>::type;
  static constexpr bool unix_seconds = false;
  static std::optional<type> read(const S& state) noexcept { return StateTraits<S>::cursor(state); }
};
}  // namespace detail

// -------------------------------------------------------------------- State --
// The collector's state, as the Go service this library grew from keeps it
// (its "UpdateState" rule is update_state below). Nothing in StateManager
// knows these fields: a state type of one's own works the same way.

/// What a periodic collector remembers between runs: the data it last
/// processed. A zero last_updated means "never processed".
struct State {
  std::string oracle_name;
  std::int64_t last_updated = 0;  ///< unix seconds of the data processed
  std::string last_updated_iso;   ///< the same instant, RFC 3339 UTC
  std::int64_t last_protocol_count = 0;
  double last_tvs = 0;  ///< total value secured
  std::int64_t snapshot_count = 0;
  std::int64_t oldest_snapshot = 0;  ///< unix seconds, 0 without snapshots
  std::int64_t newest_snapshot = 0;  ///< unix seconds, 0 without snapshots

  /// The one description of the fields: JSON names in the Go service's
  /// snake_case and order, and the keys of the seed's log records. Saving,
  /// loading, ==, the Boost.JSON conversions and the log records all come
  /// from it.
  static constexpr auto state_fields() noexcept {
    return std::make_tuple(
        state_field("oracle_name", &State::oracle_name, "oracle_name"),
        state_field("last_updated", &State::last_updated, "last_updated", "timestamp"),
        state_field("last_updated_iso", &State::last_updated_iso),
        state_field("last_protocol_count", &State::last_protocol_count, "last_protocol_count",
                    "protocol_count"),
        state_field("last_tvs", &State::last_tvs, "last_tvs", "tvs"),
        state_field("snapshot_count", &State::snapshot_count, "snapshot_count"),
        state_field("oldest_snapshot", &State::oldest_snapshot),
        state_field("newest_snapshot", &State::newest_snapshot));
  }

  friend bool operator==(const State& a, const State& b) noexcept;
  friend bool operator!=(const State& a, const State& b) noexcept { return !(a == b); }
};

/// Boost.JSON conversions of State, found through value_from, value_to and
/// try_value_to. Reading: a missing or null key is the zero value, an
/// unknown key is ignored, a key of the wrong type (or an integer out of
/// int64 range, or a non-finite number) is an error.
void tag_invoke(boost::json::value_from_tag, boost::json::value& jv, const State& state);
boost::json::result<State> tag_invoke(boost::json::try_value_to_tag<State>,
                                      const boost::json::value& jv) noexcept;

/// The seed's rule for the next State: the given figures, last_updated_iso
/// from `timestamp`, and the snapshots' count, oldest and newest timestamps
/// (zeros when there are none). `snapshot_timestamps` is any range of
/// integers, unix seconds; one beyond the int64 range counts as INT64_MAX;
/// a range of doubles does not compile. Allocates the strings
/// (std::bad_alloc when memory runs out).
template <class Timestamps = std::initializer_list<std::int64_t>>
State update_state(std::string_view oracle_name, std::int64_t timestamp,
                   std::int64_t protocol_count, double tvs,
                   const Timestamps& snapshot_timestamps = {});

// ========================================================= implementation ====

// ------------------------------------------------------------- field tables --

namespace detail {

// Calls visit(field) for each row of S's field table, in order.
template <class S, class Visit>
void for_each_field(Visit&& visit) noexcept(noexcept(visit(std::get<0>(S::state_fields())))) {
  std::apply([&](const auto&... field) { (visit(field), ...); }, S::state_fields());
}
template <class S>
inline constexpr std::size_t field_count_v = std::tuple_size_v<decltype(S::state_fields())>;

// Why a field's value cannot be written as JSON that reads back the same,
// or null; the rest of unwritable() is beside JsonPrinter.
inline const char* unwritable(const std::string& s) noexcept {
  return unwritable(std::string_view(s));
}
inline const char* unwritable(std::int64_t) noexcept { return nullptr; }
inline const char* unwritable(std::uint64_t) noexcept { return nullptr; }
template <class Int, std::enable_if_t<is_field_integer_v<Int>, int> = 0>
const char* unwritable(Int) noexcept {
  return nullptr;  // every integer type fits int64 or uint64
}
inline const char* unwritable(bool) noexcept { return nullptr; }
template <class T>
const char* unwritable(const std::optional<T>& v) noexcept {
  return v ? unwritable(*v) : nullptr;
}

template <class Out>
bool print_field_value(Out& out, const std::string& s) noexcept {
  return out.append("\"") && append_json_escaped(out, s) && out.append("\"");
}
template <class Out>
bool print_field_value(Out& out, std::int64_t v) noexcept {
  char number[40];
  return out.append(std::string_view(number, format_int(v, number)));
}
template <class Out>
bool print_field_value(Out& out, std::uint64_t v) noexcept {
  char number[40];
  return out.append(std::string_view(number, format_uint(v, number)));
}
template <class Out, class Int, std::enable_if_t<is_field_integer_v<Int>, int> = 0>
bool print_field_value(Out& out, Int v) noexcept {
  if constexpr (std::is_signed_v<Int>)
    return print_field_value(out, static_cast<std::int64_t>(v));
  else
    return print_field_value(out, static_cast<std::uint64_t>(v));
}
template <class Out>
bool print_field_value(Out& out, double v) noexcept {
  char number[40];
  return out.append(std::string_view(number, format_double(v, number)));
}
template <class Out>
bool print_field_value(Out& out, bool v) noexcept {
  return out.append(v ? "true" : "false");
}
template <class Out, class T>
bool print_field_value(Out& out, const std::optional<T>& v) noexcept {
  return v ? print_field_value(out, *v) : out.append("null");
}

// Why no member may be named "schema_version": the library writes and
// reads its own version there, so the member would not read back.
inline constexpr const char* reserved_key_reason =
    "the key is the library's own (the state file's schema version, StateTraits::version); "
    "give the member another name";

// Why a field's name cannot be a key: a name given to two fields would be
// written twice, and read back as the later member's value for both; a
// name that is not UTF-8 makes every load call the file corrupt.
inline constexpr const char* repeated_key_reason =
    "the name is another field's too; each key of the table must be its own";
inline constexpr const char* unreadable_key_reason = "the name is not valid UTF-8";

// Whether a field before the index-th has the name `name`.
template <class S>
bool named_before(std::string_view name, std::size_t index) noexcept {
  std::size_t i = 0;
  bool seen = false;
  for_each_field<S>([&](const auto& field) noexcept {
    if (i++ < index && std::string_view(field.name) == name) seen = true;
  });
  return seen;
}

// Why a state could not be printed: the field and the reason, as
// JsonPrinter names them; both null when only memory ran out.
struct FieldRefusal {
  const char* name = nullptr;
  const char* reason = nullptr;
};

// A state printed from its table, byte for byte as JsonPrinter prints
// value_from(state), without building the value first: the save path of
// every collector, so it allocates nothing and does half the work.
template <class S, class Out>
bool print_fields(const S& s, Out& out, FieldRefusal& refusal) noexcept {
  bool ok = true, first = true;
  if constexpr (schema_version<S>::value > 0) {
    ok = out.append("{\n  \"") && out.append(version_key) && out.append("\": ") &&
         print_field_value(out, std::int64_t{schema_version<S>::value});
    first = false;
  }
  std::size_t index = 0;
  for_each_field<S>([&](const auto& field) noexcept {
    if (!ok) return;
    const auto& value = s.*(field.member);
    const std::string_view name(field.name);
    const std::size_t at = index++;
    const char* const unusable = name == version_key         ? reserved_key_reason
                                 : !valid_utf8(name)         ? unreadable_key_reason
                                 : named_before<S>(name, at) ? repeated_key_reason
                                                             : nullptr;
    if (unusable != nullptr) {
      refusal = {field.name, unusable};
      ok = false;
      return;
    }
    if (const char* why = unwritable(value)) {
      refusal = {field.name, why};
      ok = false;
      return;
    }
    ok = out.append(first ? "{\n  \"" : ",\n  \"") && append_json_escaped(out, field.name) &&
         out.append("\": ") && print_field_value(out, value);
    first = false;
  });
  return ok && out.append(first ? "{}\n" : "\n}\n");
}

/// Why a JSON value is not a state: the key and what is wrong with it.
struct StateProblem {
  std::string_view key;
  const char* reason = nullptr;
  boost::json::error code = boost::json::error::not_object;
};

inline const boost::json::value* member_of(const boost::json::object& o,
                                           std::string_view key) noexcept {
  const boost::json::value* v = o.if_contains(boost::json::string_view(key.data(), key.size()));
  return v != nullptr && !v->is_null() ? v : nullptr;  // null reads as missing
}

// The reading rules, one per kind of member: a missing or null key leaves
// the zero value; a value of the wrong kind is a problem naming the key.
inline bool read_field_value(const boost::json::value& v, std::string& out, const char*& why,
                             boost::json::error& code) {
  const boost::json::string* s = v.if_string();
  if (s == nullptr) {
    why = "expected a string";
    code = boost::json::error::not_string;
    return false;
  }
  out.assign(s->data(), s->size());
  return true;
}

inline bool read_field_value(const boost::json::value& v, std::int64_t& out, const char*& why,
                             boost::json::error& code) noexcept {
  if (const std::int64_t* i = v.if_int64()) {
    out = *i;
    return true;
  }
  const std::uint64_t* u = v.if_uint64();
  if (u != nullptr && *u <= static_cast<std::uint64_t>(INT64_MAX)) {
    out = static_cast<std::int64_t>(*u);
    return true;
  }
  why = u != nullptr ? "integer out of range" : "expected an integer";
  code = u != nullptr || v.is_double() ? boost::json::error::not_exact
                                       : boost::json::error::not_number;
  return false;
}

inline bool read_field_value(const boost::json::value& v, std::uint64_t& out, const char*& why,
                             boost::json::error& code) noexcept {
  if (const std::uint64_t* u = v.if_uint64()) {
    out = *u;
    return true;
  }
  const std::int64_t* i = v.if_int64();
  if (i != nullptr && *i >= 0) {
    out = static_cast<std::uint64_t>(*i);
    return true;
  }
  why = i != nullptr ? "integer out of range" : "expected an integer";
  code = i != nullptr || v.is_double() ? boost::json::error::not_exact
                                       : boost::json::error::not_number;
  return false;
}

// Any other integer type: read as int64 or uint64, then within its range.
template <class Int, std::enable_if_t<is_field_integer_v<Int>, int> = 0>
bool read_field_value(const boost::json::value& v, Int& out, const char*& why,
                      boost::json::error& code) noexcept {
  using Wide = std::conditional_t<std::is_signed_v<Int>, std::int64_t, std::uint64_t>;
  Wide wide = 0;
  if (!read_field_value(v, wide, why, code)) return false;
  if (wide < static_cast<Wide>(std::numeric_limits<Int>::min()) ||
      wide > static_cast<Wide>(std::numeric_limits<Int>::max())) {
    why = "integer out of range";
    code = boost::json::error::not_exact;
    return false;
  }
  out = static_cast<Int>(wide);
  return true;
}

inline bool read_field_value(const boost::json::value& v, double& out, const char*& why,
                             boost::json::error& code) noexcept {
  if (const double* d = v.if_double()) {
    if (!std::isfinite(*d)) {
      why = "not a finite number";
      code = boost::json::error::not_number;
      return false;
    }
    out = *d;
  } else if (const std::int64_t* i = v.if_int64()) {
    out = static_cast<double>(*i);  // the Go service wrote whole doubles so
  } else if (const std::uint64_t* u = v.if_uint64()) {
    out = static_cast<double>(*u);
  } else {
    why = "expected a number";
    code = boost::json::error::not_number;
    return false;
  }
  return true;
}

inline bool read_field_value(const boost::json::value& v, bool& out, const char*& why,
                             boost::json::error& code) noexcept {
  if (const bool* b = v.if_bool()) {
    out = *b;
    return true;
  }
  why = "expected true or false";
  code = boost::json::error::not_bool;
  return false;
}

template <class T>
bool read_field_value(const boost::json::value& v, std::optional<T>& out, const char*& why,
                      boost::json::error& code) {
  T value{};
  if (!read_field_value(v, value, why, code)) return false;
  out = std::move(value);
  return true;
}

/// Reads a state of a table type from `jv`. May throw std::bad_alloc.
template <class S>
bool read_fields(const boost::json::value& jv, S& out, StateProblem& problem) {
  const boost::json::object* o = jv.if_object();
  if (o == nullptr) {
    problem = {{}, "expected an object", boost::json::error::not_object};
    return false;
  }
  bool ok = true;
  for_each_field<S>([&](const auto& field) {
    const boost::json::value* v = ok ? member_of(*o, field.name) : nullptr;
    if (v != nullptr && !read_field_value(*v, out.*(field.member), problem.reason, problem.code)) {
      problem.key = field.name;
      ok = false;
    }
  });
  return ok;
}

template <class S>
bool fields_equal(const S& a, const S& b) noexcept {
  bool equal = true;
  for_each_field<S>(
      [&](const auto& field) noexcept { equal = equal && a.*(field.member) == b.*(field.member); });
  return equal;
}

template <class T>
boost::json::value field_as_value(const T& v, const boost::json::storage_ptr& sp) {
  return boost::json::value_from(v, sp);
}
template <class T>
boost::json::value field_as_value(const std::optional<T>& v, const boost::json::storage_ptr& sp) {
  return v ? boost::json::value_from(*v, sp) : boost::json::value(nullptr, sp);
}

template <class S>
void fields_to_value(boost::json::value& jv, const S& s) {
  boost::json::object& o = jv.emplace_object();
  o.reserve(field_count_v<S>);
  for_each_field<S>([&](const auto& field) {
    o.emplace(field.name, field_as_value(s.*(field.member), o.storage()));
  });
}

template <class S>
boost::json::result<S> fields_from_value(const boost::json::value& jv) noexcept {
  S state;
  StateProblem problem;
  ATOMIC_STATE_DETAIL_TRY {
    if (read_fields(jv, state, problem)) return state;
    return boost::json::make_error_code(problem.code);
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL {
    return boost::system::error_code(ENOMEM, boost::system::generic_category());
  }
}

// The fields of a "state loaded" or "state saved" record of a table type:
// `lead` (the path), then each field the table logs there, under its key.
template <class S>
class LoggedFields {
 public:
  enum class Record : unsigned char { loaded, saved };
  LoggedFields(const S& s, Record record, std::initializer_list<Field> lead) noexcept {
    for (const Field& field : lead) fields_[size_++] = field;
    for_each_field<S>([&](const auto& field) noexcept {
      const char* key = record == Record::loaded ? field.loaded_as : field.saved_as;
      if (key != nullptr) add(key, s.*(field.member));
    });
  }
  Fields view() const noexcept { return Fields(fields_.data(), size_); }

 private:
  template <class T>
  void add(const char* key, const T& value) noexcept {
    fields_[size_++] = Field(key, value);
  }
  template <class T>
  void add(const char* key, const std::optional<T>& value) noexcept {
    if (value) add(key, *value);
  }

  std::array<Field, field_count_v<S> + 1> fields_{};
  std::size_t size_ = 0;
};

}  // namespace detail

// -------------------------------------------------------------------- State --

inline bool operator==(const State& a, const State& b) noexcept {
  return detail::fields_equal(a, b);
}

inline void tag_invoke(boost::json::value_from_tag, boost::json::value& jv, const State& state) {
  detail::fields_to_value(jv, state);
}

inline boost::json::result<State> tag_invoke(boost::json::try_value_to_tag<State>,
                                             const boost::json::value& jv) noexcept {
  return detail::fields_from_value<State>(jv);
}

namespace detail {
// An integer as int64: one beyond its range is the nearest end of it.
template <class Int>
std::int64_t saturated_int64(Int v) noexcept {
  if constexpr (std::is_signed_v<Int>)
    return static_cast<std::int64_t>(v);  // every signed type fits (int64 is the widest)
  else
    return v > static_cast<std::uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(v);
}
}  // namespace detail

template <class Timestamps>
State update_state(std::string_view oracle_name, std::int64_t timestamp,
                   std::int64_t protocol_count, double tvs, const Timestamps& snapshot_timestamps) {
  using Element = std::decay_t<decltype(*std::begin(snapshot_timestamps))>;
  static_assert(std::is_integral_v<Element> && !std::is_same_v<Element, bool>,
                "update_state: snapshot timestamps are whole unix seconds, of an integer type");
  State next;
  next.oracle_name.assign(oracle_name.data(), oracle_name.size());
  next.last_updated = timestamp;
  next.last_updated_iso = to_rfc3339(timestamp);
  next.last_protocol_count = protocol_count;
  next.last_tvs = tvs;
  for (const auto& t : snapshot_timestamps) {
    const std::int64_t ts = detail::saturated_int64(t);
    if (next.snapshot_count == 0 || ts < next.oldest_snapshot) next.oldest_snapshot = ts;
    if (next.snapshot_count == 0 || ts > next.newest_snapshot) next.newest_snapshot = ts;
    ++next.snapshot_count;
  }
  return next;
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state
#endif  // ATOMIC_STATE_DETAIL_JSON

// ===================================================== include/atomic_state/state_manager.hpp ====

#if ATOMIC_STATE_DETAIL_JSON
#include <exception>  // std::exception: a throwing upgrade()

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// ------------------------------------------------------------- StateManager --

/// What load_state does with a state file that is not a valid state.
enum class OnCorrupt : unsigned char {
  recover,  ///< keep a copy of its bytes, warn, and start from the zero state
  fail,     ///< return an error (Step::parse) and touch nothing
};

/// Where the state load_state returned came from.
enum class LoadOrigin : unsigned char {
  saved,      ///< the state file, as the last save left it
  first_run,  ///< no state file yet: the zero state
  recovered,  ///< the state file was corrupt: the zero state (OnCorrupt::recover)
  previous,   ///< the state file was corrupt: the state before it (keep_previous)
};

/// Lower-case words naming an origin, as used in logs ("first run").
constexpr std::string_view to_string(LoadOrigin origin) noexcept;

/// How a StateManager keeps its state. Every default is the rule of the Go
/// service this library grew from.
struct StateOptions {
  /// The size limit that is none: `max_state_size = no_size_limit`.
  static constexpr std::size_t no_size_limit = static_cast<std::size_t>(-1);

  /// The state file's name in the directory: not empty, no '/', not "." or
  /// "..", and none of the names the manager gives files of its own (a
  /// temp file's ".tmp-...", a name ending ".lock" or ".prev", a name
  /// holding ".corrupt-"), so that two managers with different names share
  /// a directory without touching each other's files. No NUL byte, and
  /// short enough for the names made from it (NAME_MAX - 40 bytes).
  std::string file_name = "state.json";
  /// The state file's mode, exact (the umask is ignored); at most 07777,
  /// with the owner's read bit (0400): a state its owner cannot read back
  /// is refused. 0600 for a state that holds tokens.
  unsigned file_mode = 0644;
  /// Whether a missing state directory is created (0755 less the umask, as
  /// mkdir -p, each level synced). When false, a missing directory is an
  /// error, never a first run: for a directory on a volume that may not be
  /// mounted. load_state, save_state and try_lock_run then fail alike with
  /// Step::open_directory, ENOENT, the note asking whether it is mounted.
  /// The directory try_lock_run or load_state opened (its device and inode;
  /// each lock and each load that opens it pins it anew) is also the only
  /// one later saves write into: a save finding another directory at the
  /// path (the volume unmounted mid-run, its mount point's directory there
  /// now) fails the same way, nothing written, and save_state(state, batch)
  /// gives up the whole batch. Outputs written beside the state should pass
  /// WriteOptions::create_directories = false too. When true, nothing is
  /// pinned: a save follows the path, making what is missing.
  bool create_directory = true;
  /// What load_state does with a corrupt state file.
  OnCorrupt on_corrupt = OnCorrupt::recover;
  /// How many copies of corrupt state files are kept beside the state; once
  /// there are more, the oldest (by the time in their names) are removed,
  /// each removal logged. Entries that are not this state's copies, or not
  /// regular files, are never counted or removed. 0: no copy is made.
  std::size_t corrupt_copies = 5;
  /// Whether each save first keeps the state it replaces as
  /// `<file_name>.prev` (a hard link: nothing is copied), for load_state
  /// to fall back to when the state file is corrupt. The link is made under
  /// a temp name and renamed over the old .prev, the directory synced, all
  /// before the state file is replaced. Nothing is linked when there is no
  /// state file yet, when it is the file this manager's load found corrupt
  /// (the same device and inode) and its bytes still do not read as a
  /// state (an inode number reused for a later state does not count), or
  /// when .prev already is it. Needs a filesystem with hard links (not
  /// FAT): without, a save fails with Step::keep_previous (EPERM,
  /// EOPNOTSUPP or EMLINK) and a note saying so. A state file of another
  /// user that the kernel will not link (EPERM under fs.protected_hardlinks,
  /// after a run under sudo, say) is not kept: the save goes on, with a
  /// warning "previous state not kept" naming the owner, and the next save
  /// (of a file now this user's own) keeps .prev again. An older .prev is
  /// then removed (the removal synced before the state is replaced), so
  /// that .prev is never older than the state before; one that cannot be
  /// removed is left, and the warning's older_previous says it is older.
  bool keep_previous = false;
  /// State files larger than this are refused, by load_state and by
  /// save_state alike. Every value is allowed: 0 refuses every non-empty
  /// file, no_size_limit refuses none. A file over the limit is an error
  /// (Step::check_file, EFBIG), never a corrupt file; a state whose text
  /// would exceed it is refused by save_state (Step::serialize, EFBIG).
  std::size_t max_state_size = ATOMIC_STATE_MAX_STATE_SIZE;

  /// Why these options cannot be used (Step::check_path), or success.
  Status check() const noexcept;
};

/// What load_state returns: the state itself (a Loaded<StateT> is a
/// StateT), where it came from, and where the bytes of a corrupt state
/// file were kept. A Result<Loaded<StateT>> converts to a Result<StateT>.
template <class StateT>
struct Loaded : StateT {
  static_assert(std::is_class_v<StateT> && !std::is_final_v<StateT>,
                "Loaded<StateT>: the state type must be a class that is not final");

  LoadOrigin origin = LoadOrigin::first_run;
  /// The copy of a corrupt state file's bytes (origin recovered or
  /// previous), or empty when none was kept.
  std::string corrupt_copy;

  StateT& state() & noexcept { return *this; }
  const StateT& state() const& noexcept { return *this; }
};

/// The run lock of one state (StateManager::try_lock_run): while it is
/// held, nobody else gets it, in this process or another. Released by
/// unlock() or the destructor, and by the kernel when the process dies,
/// SIGKILL included; a child forked while it is held holds it too. Never
/// waited for. Move-only. It closes its descriptor through the Fs it was
/// given: a copy of the manager's, or the same object when Fs is a
/// reference (which must then outlive the lock).
template <class Fs = PosixFs>
class RunLock {
 public:
  /// Holds nothing.
  RunLock() noexcept = default;
  /// Takes over `fd`, a descriptor that holds a lock.
  RunLock(Fs fs, int fd) noexcept;
  RunLock(RunLock&& other) noexcept;
  RunLock& operator=(RunLock&& other) noexcept;
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  ~RunLock() { unlock(); }

  bool owns_lock() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return owns_lock(); }
  /// Releases the lock now (closing its descriptor); then holds nothing.
  void unlock() noexcept;

 private:
  using FsRef = std::remove_reference_t<Fs>;
  using Held = std::conditional_t<std::is_reference_v<Fs>, FsRef*, FsRef>;
  FsRef& fs() noexcept {
    if constexpr (std::is_reference_v<Fs>)
      return *fs_;
    else
      return fs_;
  }

  Held fs_{};
  int fd_ = -1;
};

namespace detail {
// What reading a state file's text gave.
enum class Decoded : unsigned char { valid, corrupt, too_new, upgrade_failed, out_of_memory };

// Set once, by whichever thread gets there first. Copies carry the value,
// so a class holding one stays copyable and movable.
class OnceFlag {
 public:
  OnceFlag() noexcept = default;
  OnceFlag(const OnceFlag& other) noexcept : set_(other.set_.load()) {}
  OnceFlag& operator=(const OnceFlag& other) noexcept {
    set_.store(other.set_.load());
    return *this;
  }
  /// True for the first call only.
  bool first() noexcept { return !set_.exchange(true); }
  bool is_set() const noexcept { return set_.load(); }

 private:
  std::atomic<bool> set_{false};
};

// Which file (device and inode) a load found corrupt, so that a save does
// not keep it as the previous state. Copies carry the value.
class CorruptFile {
 public:
  CorruptFile() noexcept = default;
  CorruptFile(const CorruptFile& other) noexcept
      : device_(other.device_.load()), inode_(other.inode_.load()) {}
  CorruptFile& operator=(const CorruptFile& other) noexcept {
    device_.store(other.device_.load());
    inode_.store(other.inode_.load());
    return *this;
  }
  void remember(const FileInfo& file) noexcept {
    device_.store(file.device);
    inode_.store(file.inode);
  }
  bool is(const FileInfo& file) const noexcept {
    return inode_.load() == file.inode && device_.load() == file.device && file.inode != 0;
  }

 private:
  std::atomic<std::uint64_t> device_{0}, inode_{0};
};

// The state directory a manager with create_directory false locked or
// loaded: its device and inode, which every save compares with the
// directory at the path (a card unmounted mid-run leaves its mount point's
// directory there, on another disk). Atomic, as saves may race.
class PinnedDirectory {
 public:
  PinnedDirectory() noexcept = default;
  PinnedDirectory(const PinnedDirectory& other) noexcept { *this = other; }
  PinnedDirectory& operator=(const PinnedDirectory& other) noexcept {
    device_.store(other.device_.load());
    inode_.store(other.inode_.load());
    set_.store(other.set_.load());
    return *this;
  }
  void pin(const FileInfo& dir) noexcept {
    device_.store(dir.device);
    inode_.store(dir.inode);
    set_.store(true);  // after both: a save never compares with half a pin of zeros
  }
  /// Whether `dir` is the directory pinned, or nothing is.
  bool admits(const FileInfo& dir) const noexcept {
    return !set_.load() || (device_.load() == dir.device && inode_.load() == dir.inode);
  }
  bool is_set() const noexcept { return set_.load(); }

 private:
  std::atomic<std::uint64_t> device_{0}, inode_{0};  // two words: no libatomic needed
  std::atomic<bool> set_{false};
};

}  // namespace detail

/// Remembers a periodic job's state in `<dir>/state.json` (the name, mode
/// and rules are StateOptions).
///
/// - Sink: a LogSink, by value (default NullSink) or by reference
///   (`StateManager<MySink&>`) to share the application's sink;
///   `StateManager manager(dir, sink)` deduces the reference.
/// - StateT: State, or a type of one's own: a class, default-constructible,
///   with a field table (has_state_fields) or Boost.JSON conversions
///   (value_from and value_to or try_value_to), and a cursor StateTraits
///   can read. Read integers with value_to<T>, not as_uint64(): JSON text
///   does not keep Boost's int64/uint64 kind.
/// - SyncPolicy: how far a save syncs (FullSync, DataSync, NoSync).
/// - Fs: the filesystem policy every call goes through, by value or by
///   reference (`PosixFs`, or `MyFs&` to share a test's policy).
///
/// Threads: load_state, should_process, save_state and try_lock_run change
/// nothing in the manager that another call reads unsynchronised, so any
/// number of threads may call them at once on one manager (or on several
/// managers of one directory) provided the Sink and the Fs are thread-safe,
/// as NullSink, LogfmtSink and PosixFs are. Every save is atomic, so a
/// reader sees one whole state; when saves race, the last rename wins and
/// the others are lost: take the run lock to have one run at a time. The
/// setter is not thread-safe: call it before sharing the manager.
///
/// Failures are returned as a Status, not logged: the caller decides what
/// to say and whether to go on.
template <ATOMIC_STATE_DETAIL_LOG_SINK Sink = NullSink, class StateT = State,
          class SyncPolicy = FullSync, class Fs = PosixFs>
class StateManager {
  static_assert(is_log_sink_v<Sink>,
                "StateManager: Sink must be a log sink: it needs a member "
                "`log(atomic_state::Level, std::string_view message, "
                "atomic_state::Fields fields)` (see NullSink)");
  static_assert(std::is_default_constructible_v<StateT>,
                "StateManager: StateT must be default-constructible (the "
                "zero state of a first run)");
  static_assert(is_sync_policy_v<SyncPolicy>,
                "StateManager: SyncPolicy needs `static constexpr SyncLevel file` and "
                "`static constexpr bool directory` (see FullSync)");
  static_assert(is_state_filesystem_v<Fs>,
                "StateManager: Fs needs every call of PosixFs, the reading ones included "
                "(see is_state_filesystem)");
  static_assert(detail::has_cursor<StateT>::value || detail::has_last_updated<StateT>::value,
                "StateManager: StateT needs a cursor: a member `last_updated` (unix "
                "seconds), or a StateTraits<StateT> specialisation with "
                "`static std::optional<C> cursor(const StateT&) noexcept`");
  static_assert(detail::schema_version<StateT>::value >= 0,
                "StateManager: StateTraits<StateT>::version must not be negative");
  static_assert(detail::schema_version<StateT>::value == 0 || detail::has_upgrade<StateT>::value,
                "StateManager: a StateTraits<StateT> with a version above 0 needs "
                "`static void upgrade(boost::json::object& state, int from_version)`");

 public:
  using sink_type = Sink;
  using state_type = StateT;
  using sync_policy = SyncPolicy;
  using filesystem_type = Fs;
  /// What should_process compares: std::int64_t unix seconds by default,
  /// or the type of StateTraits<StateT>::cursor.
  using cursor_type = typename detail::CursorOf<StateT>::type;

  /// The size limit that is none: set_max_state_size(no_size_limit).
  static constexpr std::size_t no_size_limit = StateOptions::no_size_limit;

  /// A manager of `<dir>/<options.file_name>`; nothing is touched on disk
  /// until a call asks. `dir` is any path PathView takes (a string, a
  /// std::filesystem::path); an empty dir is the working directory. Options
  /// that cannot be used (StateOptions::check) make every call fail with
  /// their reason. Allocates the paths: std::bad_alloc is the only way it
  /// can fail.
  template <class S = Sink, std::enable_if_t<std::is_default_constructible_v<S>, int> = 0>
  explicit StateManager(PathView dir, StateOptions options = {})
      : StateManager(dir, S{}, std::move(options)) {}
  StateManager(PathView dir, Sink sink, StateOptions options = {});
  StateManager(PathView dir, Sink sink, Fs fs, StateOptions options = {});

  /// The state's directory, as given.
  const std::string& output_dir() const noexcept { return dir_; }
  /// `<dir>/<file_name>`.
  const std::string& state_file() const noexcept { return file_; }
  /// `<state file>.prev`, the previous state (StateOptions::keep_previous).
  const std::string& previous_file() const noexcept { return previous_file_; }
  /// `.<file name>.lock` in the state's directory: the run lock's file.
  const std::string& lock_file() const noexcept { return lock_file_; }
  const StateOptions& options() const noexcept { return options_; }

  /// Takes the run lock of this state, without waiting: one run at a time.
  /// A second holder (another process, or another manager of the same
  /// state in this one) gets Step::lock_run with the code
  /// std::errc::resource_unavailable_try_again, naming the state file and
  /// the holder's pid when it can be read. The lock file (lock_file(),
  /// created 0600) is the library's own: saves never take it, so it never
  /// makes a save wait, and `flock DIR` wrappers do not meet it. Taking it
  /// also proves early that the directory is usable: it is created when
  /// missing (StateOptions::create_directory) and must be writable.
  /// The lock file is opened without following a symlink (one there:
  /// ELOOP) and must be a regular file (else EINVAL) with one link (a hard
  /// link planted there: EMLINK) and of this process's user (another
  /// user's: EPERM), each refused with the file left as it is; one open to
  /// other users is made 0600; the holder writes its pid into it. Root, in
  /// a directory of another user, takes a lock file of the directory's
  /// owner too, and changes nothing in the lock file there (no chmod, no
  /// pid: that user could have put any file of root's at its name for a
  /// moment); after a run under sudo the owner removes root's lock file
  /// once. It is never
  /// removed: removing a lock file races with its next taker. A second
  /// taker's Status has path() the lock file, target() the state file,
  /// detail() "held by pid N": "take the run lock: lock run
  /// /var/lib/c/.state.json.lock for /var/lib/c/state.json: Resource
  /// temporarily unavailable (another run holds it) (held by pid 4242)".
  Result<RunLock<Fs>> try_lock_run() noexcept;

  /// The saved state and where it came from (LoadOrigin): saved, or
  /// first_run (info log, with the path) when there is no state file, or,
  /// for a corrupt state file, previous (the previous state, when
  /// keep_previous kept a valid one; warning) or recovered (the zero state,
  /// OnCorrupt::recover; warning) or an error (OnCorrupt::fail). A corrupt
  /// file is left where it is, for the next save to replace, and a copy of
  /// its bytes is kept beside it as `<file name>.corrupt-<its modification
  /// time, unix seconds>`, with ".1", ".2" after copies of files of the same
  /// second (numbered past the highest there, never into a freed number,
  /// so that a newer copy always ranks newer), the newest corrupt_copies of
  /// them. A file of an older schema version
  /// is upgraded (StateTraits::upgrade); one of a newer version, or whose
  /// upgrade fails, is Step::upgrade, nothing touched. Any other failure is
  /// an error and nothing is touched: a later save must not replace a good
  /// state that merely could not be read. A missing directory is a first
  /// run, or an error when create_directory is false; a symlink to nothing,
  /// at the state file or anywhere in the directory's path, is an error,
  /// since it usually means a volume that is not mounted. The first call
  /// also removes the temp files of saves that were killed (logged; its
  /// failure never fails the load). A corrupt file's bytes are copied once:
  /// the same bytes already under their name are not copied again. Under
  /// OnCorrupt::fail, without a valid previous state, a corrupt file is
  /// Step::parse with std::errc::bad_message, and no copy is made. The
  /// .prev file is read under the same rules. Never blocks on a FIFO.
  /// Errors: "load state file: " then the step, the path and the reason.
  Result<Loaded<StateT>> load_state() noexcept;

  /// Whether data at cursor `current` is new: true on a first run (no
  /// cursor in `state`) or for a cursor past the state's, false for the
  /// same one (info log) or an earlier one (warning). Every decision is
  /// logged.
  bool should_process(const cursor_type& current, const StateT& state) noexcept;

  /// Validates and serializes `state`, then (keep_previous) keeps the
  /// state file it replaces as previous_file(), then replaces the state
  /// file (mode file_mode, missing directories created 0755 unless
  /// create_directory is false), then logs "state saved". A state JSON
  /// cannot hold exactly (a non-finite double, invalid UTF-8), or whose
  /// text would exceed max_state_size() (so that load_state would refuse
  /// it), is refused before anything is written. Errors: "write state
  /// file: " then the step, the path and the reason; nothing is logged as
  /// saved. A failure before the rename leaves the state file untouched;
  /// Status::replaced() says the rename happened and only a step after it
  /// failed (the directory sync, or an unnamed temp file's close). With create_directory false, a
  /// state directory that is not the one the last try_lock_run or load_state opened is refused
  /// (Step::open_directory, ENOENT, "is its volume mounted?"), before
  /// anything is written.
  Status save_state(const StateT& state) noexcept;

  /// Saves `state` as the last file of `batch` and commits the batch, so
  /// that a run's outputs and its state change together: after any crash
  /// the state is never newer than the outputs added before it. The state
  /// is checked and written as save_state does; keep_previous keeps the
  /// previous state right before the state's rename. On any failure the
  /// batch is given up (its temp files removed; batch.replaced() says which
  /// outputs were already in place) and nothing is logged as saved; a
  /// state directory replaced since the lock or the load (create_directory
  /// false, as save_state) gives it up before any rename. The batch's sync
  /// policy and Fs are the manager's (the parameter's type says so: another
  /// batch does not compile), so that the state is as durable as the
  /// outputs it records. The processing this gives is at least once, not
  /// exactly once (docs/protocol.md, Batches). Errors: "save state with its
  /// batch: " then the step, the path and the reason.
  Status save_state(const StateT& state, Batch<SyncPolicy, Fs>& batch) noexcept;

  /// Removes the temp files killed saves left in output_dir(), never one of
  /// a save in progress (AtomicWriter::remove_stale_temp_files), and logs
  /// what it removed. The first load_state calls it unless it was already.
  Result<TempSweep> remove_stale_temp_files() noexcept;

  /// StateOptions::max_state_size.
  std::size_t max_state_size() const noexcept { return options_.max_state_size; }
  /// Every value is allowed: 0 refuses every non-empty file, no_size_limit
  /// none.
  void set_max_state_size(std::size_t bytes) noexcept { options_.max_state_size = bytes; }

  std::remove_reference_t<Sink>& sink() noexcept { return sink_; }
  std::remove_reference_t<Fs>& filesystem() noexcept { return fs_; }

  /// Deprecated spellings, removed in 0.3.0.
  [[deprecated("the name is options().file_name; removed in 0.3.0")]] static constexpr const char*
      file_name = "state.json";
  using logger_type [[deprecated("use sink_type; removed in 0.3.0")]] = Sink;
  [[deprecated("use sink(); removed in 0.3.0")]] std::remove_reference_t<Sink>& logger() noexcept {
    return sink_;
  }
  template <class Timestamps = std::initializer_list<std::int64_t>>
  [[deprecated("use the free function atomic_state::update_state; removed in 0.3.0")]] State
  update_state(std::string_view oracle_name, std::int64_t timestamp, std::int64_t protocol_count,
               double tvs, const Timestamps& snapshot_timestamps = {}) const {
    return atomic_state::update_state(oracle_name, timestamp, protocol_count, tvs,
                                      snapshot_timestamps);
  }

 private:
  using FsRef = std::remove_reference_t<Fs>;
  using Text = detail::TextBuffer<4096>;
  using Problem = detail::TextBuffer<256>;
  enum class Copy : unsigned char { absent, same, other };

  AtomicWriter<SyncPolicy, FsRef&> writer() noexcept {
    return AtomicWriter<SyncPolicy, FsRef&>(fs_);
  }
  void log(Level level, std::string_view message, Fields fields) noexcept;
  void log(Level level, std::string_view message, std::initializer_list<Field> fields) noexcept {
    log(level, message, Fields(fields.begin(), fields.size()));
  }
  Status failure(Step step, int neg_errno, const char* note = nullptr,
                 std::string_view detail = {}) const noexcept;
  Status open_directory(const detail::DirectoryPath& dir, int& dir_fd) noexcept;
  Status missing_directory(const detail::DirectoryPath& dir) const noexcept;
  Status create_directory(const detail::DirectoryPath& dir, int& dir_fd) noexcept;
  Status lock_failure(int neg_errno, const char* note = nullptr,
                      std::string_view detail = {}) const noexcept;
  Status lock_held(int fd) noexcept;
  Status not_own_lock(const FileInfo& info, bool owner_taken) const noexcept;
  void write_holder(int fd) noexcept;
  Result<TempSweep> sweep_temp_files(int dir_fd, std::string_view dir) noexcept;
  Result<Loaded<StateT>> first_run(int dir_fd = -1) noexcept;
  Result<Loaded<StateT>> use_state_text(int dir_fd, const detail::DirectoryPath& dir,
                                        std::string_view text, const FileInfo& info) noexcept;
  Status read_file(int dir_fd, const char* name, std::string_view path, Text& text, FileInfo& info,
                   bool& missing) noexcept;
  Status read_to_end(int fd, const FileInfo& info, std::string_view path, Text& text) noexcept;
  detail::Decoded decode(std::string_view text, StateT& state, Problem& problem,
                         std::int64_t& from_version) noexcept;
  Status refused(detail::Decoded decoded, std::string_view path,
                 std::string_view problem) const noexcept;
  Result<Loaded<StateT>> load_corrupt(int dir_fd, std::string_view bytes, const FileInfo& info,
                                      std::string_view problem) noexcept;
  Status load_previous(int dir_fd, Loaded<StateT>& loaded, bool& found) noexcept;
  Status keep_corrupt_copy(int dir_fd, std::string_view bytes, const FileInfo& info,
                           Loaded<StateT>& loaded) noexcept;
  Status copy_aside(int dir_fd, std::string_view bytes, const FileInfo& info,
                    char (&name)[ATOMIC_STATE_NAME_MAX + 1]) noexcept;
  Copy existing_copy(int dir_fd, const char* name, std::string_view bytes, int& error) noexcept;
  Status copy_failed(const Status& written, std::string_view copy) const noexcept;
  void remove_old_copies(int dir_fd, const char* kept) noexcept;
  Status encode(const StateT& state, detail::TextBuffer<2048>& text) const noexcept;
  Status keep_previous() noexcept;
  Status link_previous(int dir_fd) noexcept;
  void pin_directory(int dir_fd) noexcept;
  Status check_pinned_directory() noexcept;
  bool reads_as_state(int dir_fd) noexcept;
  Status not_linked(int dir_fd, const FileInfo& current) noexcept;

  StateOptions options_;
  Status unusable_;            // why options_ cannot be used, or success
  std::string previous_name_;  // "<file name>.prev"
  std::string lock_name_;      // ".<file name>.lock"
  std::string dir_;
  std::string file_;
  std::string previous_file_;
  std::string lock_file_;
  Sink sink_;
  Fs fs_;
  detail::OnceFlag swept_;
  detail::CorruptFile corrupt_;
  detail::PinnedDirectory pinned_;  // create_directory false: the directory locked or loaded
};

/// `StateManager manager(dir, sink)` without template arguments: a sink
/// named by an lvalue is held by reference, as `StateManager<MySink&>`
/// holds it (it must outlive the manager); a temporary is held by value.
/// Without these guides an lvalue sink would be copied, or refused if it
/// cannot be (LogfmtSink).
/// (Constrained as the class is, so that C++20 compilers rank them alike.)
template <ATOMIC_STATE_DETAIL_LOG_SINK Sink>
StateManager(PathView, Sink&, StateOptions = {}) -> StateManager<Sink&>;
template <ATOMIC_STATE_DETAIL_LOG_SINK Sink, class Fs>
StateManager(PathView, Sink&, Fs, StateOptions = {}) -> StateManager<Sink&, State, FullSync, Fs>;

/// The spelling before 0.2.0: StateManager<Logger, StateT, AtomicWriter<S,
/// Fs>>, a writer in place of the sync policy and the filesystem. Removed
/// in 0.3.0; a writer given to the constructor lends its filesystem.
template <ATOMIC_STATE_DETAIL_LOG_SINK Sink, class StateT, class SyncPolicy, class Fs>
class StateManager<Sink, StateT, AtomicWriter<SyncPolicy, Fs>, PosixFs>
    : public StateManager<Sink, StateT, SyncPolicy, Fs> {
  using Base = StateManager<Sink, StateT, SyncPolicy, Fs>;

 public:
  using writer_type [[deprecated("StateManager<Sink, StateT, SyncPolicy, Fs>; removed in 0.3.0")]] =
      AtomicWriter<SyncPolicy, Fs>;
  using Base::Base;
  [[deprecated(
      "StateManager<Sink, StateT, SyncPolicy, Fs>(dir, sink, fs);"
      " removed in 0.3.0")]] StateManager(PathView output_dir, Sink sink,
                                          AtomicWriter<SyncPolicy, Fs> writer)
      : Base(output_dir, static_cast<Sink&&>(sink), static_cast<Fs>(writer.filesystem())) {}
};

// ========================================================= implementation ====

// ------------------------------------------------------------- StateManager --

namespace detail {

// Whether T has a conversion of its own for try_value_to (one that reports
// errors instead of throwing them).
template <class T, class = void>
struct has_try_value_to : std::false_type {};
template <class T>
struct has_try_value_to<
    T, std::void_t<decltype(tag_invoke(boost::json::try_value_to_tag<T>(),
                                       std::declval<const boost::json::value&>()))>>
    : std::true_type {};
template <class T>
inline constexpr bool has_try_value_to_v = has_try_value_to<T>::value;

// Why a state file's schema version cannot be read as this program's, as
// load_state reports it; the versions are the file's and the program's.
template <class Problem>
bool describe_newer(Problem& problem, std::string_view file, int program) noexcept {
  char b[40];
  return problem.append("schema_version ") && problem.append(file) &&
         problem.append(" is newer than this program's ") &&
         problem.append(std::string_view(b, format_int(program, b))) &&
         problem.append(": a newer program wrote it");
}

// Brings the parsed state `jv` from its schema version to S's: reads and
// removes the version key, refuses a newer version, and calls
// StateTraits<S>::upgrade once per version in between. `from` is the
// file's version.
template <class S, class Problem>
Decoded upgrade_to_current(boost::json::value& jv, std::int64_t& from, Problem& problem) {
  constexpr int current = schema_version<S>::value;
  from = 0;
  boost::json::object* o = jv.if_object();
  if (o == nullptr) return Decoded::valid;  // the codec says what is wrong
  const auto written = [&](bool ok) { return ok ? Decoded::corrupt : Decoded::out_of_memory; };
  if (const boost::json::value* v = member_of(*o, version_key)) {
    const std::int64_t* n = v->if_int64();
    if (const std::uint64_t* u = v->if_uint64()) {  // beyond int64: named as the file holds it
      char number[40];
      return describe_newer(problem, std::string_view(number, format_uint(*u, number)), current)
                 ? Decoded::too_new
                 : Decoded::out_of_memory;
    }
    if (n == nullptr || *n < 0)
      return written(problem.append(version_key) &&
                     problem.append(": expected a whole number, 0 or more"));
    from = *n;
  }
  if (from > current) {
    char number[40];
    return describe_newer(problem, std::string_view(number, format_int(from, number)), current)
               ? Decoded::too_new
               : Decoded::out_of_memory;
  }
  o->erase(boost::json::string_view(version_key.data(), version_key.size()));
  if constexpr (current > 0) {
    for (auto version = static_cast<int>(from); version < current; ++version) {
      const auto failed = [&](std::string_view why, std::string_view what) {
        char n[40];
        return problem.append("upgrade from schema_version ") &&
                       problem.append(std::string_view(n, format_int(version, n))) &&
                       problem.append(why) && problem.append(what)
                   ? Decoded::upgrade_failed
                   : Decoded::out_of_memory;
      };
      ATOMIC_STATE_DETAIL_TRY {
        using Returned = decltype(StateTraits<S>::upgrade(*o, version));
        if constexpr (std::is_same_v<Returned, bool>) {
          if (!StateTraits<S>::upgrade(*o, version)) return failed(" refused", {});
        } else {
          StateTraits<S>::upgrade(*o, version);
        }
      }
      ATOMIC_STATE_DETAIL_CATCH(std::bad_alloc, no_memory) { return Decoded::out_of_memory; }
      ATOMIC_STATE_DETAIL_CATCH(std::exception, error) { return failed(" threw: ", error.what()); }
      ATOMIC_STATE_DETAIL_CATCH_ALL { return failed(" threw something not an exception", {}); }
    }
  }
  return Decoded::valid;
}

// Reads the state in `jv` with `convert`, after bringing it to S's schema
// version from `from`, the file's. A state an upgrade produced that does not convert is the
// upgrade's failure, not a corrupt file: the file is left alone.
template <class S, class Problem, class Convert>
Decoded read_current(boost::json::value& jv, Problem& problem, std::int64_t& from,
                     Convert&& convert) {
  if (const Decoded upgraded = upgrade_to_current<S>(jv, from, problem); upgraded != Decoded::valid)
    return upgraded;
  if (from == schema_version<S>::value) return convert(jv, problem);
  Problem why;
  const Decoded converted = convert(jv, why);
  if (converted != Decoded::corrupt) return converted;
  char n[40];
  return problem.append("the upgrade from schema_version ") &&
                 problem.append(std::string_view(n, format_int(from, n))) &&
                 problem.append(" gave a state that does not read: ") && problem.append(why.view())
             ? Decoded::upgrade_failed
             : Decoded::out_of_memory;
}

// The cursor of `state` as log fields under `key`: none when it is empty
// or of a type a log field cannot hold.
template <class S>
std::size_t cursor_fields(const S& state, const char* key, Field* out) noexcept {
  using Cursor = CursorOf<S>;
  const std::optional<typename Cursor::type> cursor = Cursor::read(state);
  if constexpr (std::is_constructible_v<Field, const char*, const typename Cursor::type&>) {
    if (Cursor::unix_seconds && !cursor) {
      out[0] = Field(key, std::int64_t{0});  // the Go service logs 0
      return 1;
    }
    if (cursor) {
      out[0] = Field(key, *cursor);
      return 1;
    }
  }
  return 0;
}

// How StateManager writes, reads and logs a state type: from its field
// table when it has one (below), else through its Boost.JSON conversions.
template <class S, bool = has_state_fields_v<S>>
struct StateCodec {
  // Into `text`; a refusal is Step::serialize with its detail in `why`.
  template <class Text, class Why>
  static int print(const S& state, Text& text, Why& why) noexcept {
    ATOMIC_STATE_DETAIL_TRY {
      // Through Boost.JSON, on a stack arena: nothing of it outlives this.
      unsigned char arena[2048];
      boost::json::monotonic_resource resource(arena, sizeof arena);
      const boost::json::storage_ptr sp(&resource);
      boost::json::value jv = boost::json::value_from(state, sp);
      if (const boost::json::object* o = jv.if_object();
          o != nullptr &&
          o->contains(boost::json::string_view(version_key.data(), version_key.size())))
        return why.append(version_key) && why.append(": ") && why.append(reserved_key_reason)
                   ? -EINVAL
                   : -ENOMEM;
      if constexpr (schema_version<S>::value > 0) {
        if (!jv.is_object())
          return why.append(
                     "the state type's conversion to JSON gave no object, and a "
                     "versioned state needs one for its version key")
                     ? -EINVAL
                     : -ENOMEM;
        jv = versioned(jv.get_object(), sp);
      }
      JsonPrinter<Text> printer(text);
      if (printer.print(jv)) return 0;
      if (printer.out_of_memory() || !printer.describe_problem(why)) return -ENOMEM;
      return -EINVAL;
    }
    ATOMIC_STATE_DETAIL_CATCH(std::bad_alloc, no_memory) { return -ENOMEM; }
    ATOMIC_STATE_DETAIL_CATCH(std::exception, error) {
      return why.append("the state type's conversion to JSON threw: ") && why.append(error.what())
                 ? -EINVAL
                 : -ENOMEM;
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL {
      return why.append("the state type's conversion to JSON threw") ? -EINVAL : -ENOMEM;
    }
  }

  template <class Problem>
  static Decoded read(std::string_view text, S& state, Problem& problem, std::int64_t& from) {
    // A type of one's own may keep Boost.JSON values (unknown keys kept for
    // a later version): they must not point into memory that dies with
    // this call, so the value lives on the default resource.
    ParseFailure failure;
    boost::json::value jv = parse_exact(text, {}, failure);
    if (failure) return failure.describe(problem) ? Decoded::corrupt : Decoded::out_of_memory;
    return read_current<S>(jv, problem, from, [&](const boost::json::value& v, Problem& why) {
      return convert(v, state, why);
    });
  }

  template <class Log>
  static void log_loaded(const S& state, std::string_view path, Log&& log) noexcept {
    Field fields[2] = {{"path", path}};
    log(Fields(fields, 1 + cursor_fields(state, "last_updated", fields + 1)));
  }
  template <class Log>
  static void log_saved(const S& state, Log&& log) noexcept {
    Field fields[1];
    log(Fields(fields, cursor_fields(state, "timestamp", fields)));
  }

 private:
  // The object with the version key first, on the same storage (print has
  // refused an object that holds the key already).
  static boost::json::value versioned(const boost::json::object& o,
                                      const boost::json::storage_ptr& sp) {
    boost::json::object out(sp);
    out.reserve(o.size() + 1);
    out.emplace(boost::json::string_view(version_key.data(), version_key.size()),
                schema_version<S>::value);
    for (const auto& member : o) out.emplace(member.key(), member.value());
    return boost::json::value(std::move(out), sp);
  }

  template <class Problem>
  static Decoded convert(const boost::json::value& jv, S& state, Problem& problem) {
    const auto corrupt = [&](std::string_view a, std::string_view b) {
      return problem.append(a) && problem.append(b) ? Decoded::corrupt : Decoded::out_of_memory;
    };
    if constexpr (has_try_value_to_v<S>) {
      auto converted = boost::json::try_value_to<S>(jv);
      if (!converted) {
        char words[128];
        return corrupt("the state type's conversion from JSON failed: ",
                       converted.error().message(words, sizeof words));
      }
      state = std::move(*converted);
    } else {
      // Not try_value_to: it would catch the conversion's exception and
      // keep only "got exception", losing what the exception says.
      ATOMIC_STATE_DETAIL_TRY { state = boost::json::value_to<S>(jv); }
      ATOMIC_STATE_DETAIL_CATCH(std::bad_alloc, no_memory) { return Decoded::out_of_memory; }
      ATOMIC_STATE_DETAIL_CATCH(std::exception, error) {
        return corrupt("the state type's conversion from JSON threw: ", error.what());
      }
      ATOMIC_STATE_DETAIL_CATCH_ALL {
        return corrupt("the state type's conversion from JSON threw something not an exception",
                       {});
      }
    }
    return Decoded::valid;
  }
};

template <class S>
struct StateCodec<S, true> {
  template <class Text, class Why>
  static int print(const S& state, Text& text, Why& why) noexcept {
    FieldRefusal refusal;
    if (print_fields(state, text, refusal)) return 0;
    if (refusal.reason == nullptr) return -ENOMEM;
    return why.append(refusal.name) && why.append(": ") && why.append(refusal.reason) ? -EINVAL
                                                                                      : -ENOMEM;
  }

  template <class Problem>
  static Decoded read(std::string_view text, S& state, Problem& problem, std::int64_t& from) {
    // The table keeps nothing of the parsed value, so a state file of
    // ordinary size is parsed without touching the heap.
    unsigned char arena[4096];
    boost::json::monotonic_resource resource(arena, sizeof arena);
    ParseFailure failure;
    boost::json::value jv = parse_exact(text, boost::json::storage_ptr(&resource), failure);
    if (failure) return failure.describe(problem) ? Decoded::corrupt : Decoded::out_of_memory;
    return read_current<S>(jv, problem, from, [&](const boost::json::value& v, Problem& out) {
      StateProblem why;
      if (read_fields(v, state, why)) return Decoded::valid;
      const bool described =
          why.key.empty() ? out.append(why.reason)
                          : out.append(why.key) && out.append(": ") && out.append(why.reason);
      return described ? Decoded::corrupt : Decoded::out_of_memory;
    });
  }

  template <class Log>
  static void log_loaded(const S& state, std::string_view path, Log&& log) noexcept {
    using Fields = LoggedFields<S>;
    log(Fields(state, Fields::Record::loaded, {{"path", path}}).view());
  }
  template <class Log>
  static void log_saved(const S& state, Log&& log) noexcept {
    using Fields = LoggedFields<S>;
    log(Fields(state, Fields::Record::saved, {}).view());
  }
};

}  // namespace detail

// ------------------------------------------------------------ state options --

constexpr std::string_view to_string(LoadOrigin origin) noexcept {
  switch (origin) {
    case LoadOrigin::saved:
      return "saved";
    case LoadOrigin::first_run:
      return "first run";
    case LoadOrigin::recovered:
      return "recovered";
    case LoadOrigin::previous:
      return "previous";
  }
  return "?";
}

namespace detail {
// The longest a name derived from the state file's grows it: a corrupt
// copy's ".corrupt-", a modification time and a ".N" suffix.
inline constexpr std::size_t derived_name_growth = 40;

inline bool ends_with(std::string_view s, std::string_view end) noexcept {
  return s.size() >= end.size() && s.substr(s.size() - end.size()) == end;
}
}  // namespace detail

inline Status StateOptions::check() const noexcept {
  const std::string_view name = file_name;
  const auto refuse = [&](std::errc code, const char* why) {
    return Status(Step::check_path, std::make_error_code(code), name, {}, false, why);
  };
  if (name.empty()) return refuse(std::errc::invalid_argument, "StateOptions::file_name is empty");
  if (name.find('\0') != std::string_view::npos)
    return refuse(std::errc::invalid_argument, "StateOptions::file_name holds a NUL byte");
  if (name.find('/') != std::string_view::npos)
    return refuse(std::errc::invalid_argument,
                  "StateOptions::file_name holds a '/': it is a name in the directory, not a path");
  if (name == "." || name == "..")
    return refuse(std::errc::is_a_directory, "StateOptions::file_name names a directory");
  if (name.size() + detail::derived_name_growth > ATOMIC_STATE_NAME_MAX)
    return refuse(std::errc::filename_too_long,
                  "StateOptions::file_name is too long for the names made from it");
  if (name.substr(0, 5) == ".tmp-")
    return refuse(std::errc::invalid_argument,
                  "StateOptions::file_name is named like a temp file, which a sweep removes");
  if (detail::ends_with(name, ".lock") || detail::ends_with(name, ".prev") ||
      name.find(".corrupt-") != std::string_view::npos)
    return refuse(std::errc::invalid_argument,
                  "StateOptions::file_name is named like a file the manager makes (a lock, a "
                  "previous state, a corrupt copy)");
  if (file_mode > 07777)
    return refuse(std::errc::invalid_argument, "StateOptions::file_mode is above 07777");
  if ((file_mode & 0400) == 0)
    return refuse(std::errc::invalid_argument,
                  "StateOptions::file_mode lacks the owner's read bit (0400): no load could read "
                  "the state back");
  return {};
}

// ----------------------------------------------------------------- RunLock --

template <class Fs>
RunLock<Fs>::RunLock(Fs fs, int fd) noexcept : fd_(fd) {
  if constexpr (std::is_reference_v<Fs>)
    fs_ = &fs;
  else
    fs_ = static_cast<Fs&&>(fs);
}

template <class Fs>
RunLock<Fs>::RunLock(RunLock&& other) noexcept
    : fs_(std::move(other.fs_)), fd_(std::exchange(other.fd_, -1)) {}

template <class Fs>
RunLock<Fs>& RunLock<Fs>::operator=(RunLock&& other) noexcept {
  if (this == &other) return *this;
  unlock();
  fs_ = std::move(other.fs_);
  fd_ = std::exchange(other.fd_, -1);
  return *this;
}

template <class Fs>
void RunLock<Fs>::unlock() noexcept {
  // Nothing was written through it that could be lost: a close error
  // changes nothing, and the lock is gone either way.
  if (fd_ >= 0) (void)fs().close(std::exchange(fd_, -1));
}

// ------------------------------------------------------------- StateManager --

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
StateManager<L, S, P, F>::StateManager(PathView dir, L sink, StateOptions options)
    : StateManager(dir, static_cast<L&&>(sink), F(), std::move(options)) {}

namespace detail {
// "dir/name", joined as std::filesystem's operator/ joins a file name to a
// directory: an empty dir is the working directory, a trailing '/' is not
// doubled.
inline std::string path_in(std::string_view dir, std::string_view name) {
  std::string path(dir);
  if (!path.empty() && path.back() != '/') path += '/';
  return path.append(name);
}
}  // namespace detail

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
StateManager<L, S, P, F>::StateManager(PathView dir, L sink, F fs, StateOptions options)
    : options_(std::move(options)),
      unusable_(options_.check()),
      previous_name_(options_.file_name + ".prev"),
      lock_name_("." + options_.file_name + ".lock"),
      dir_(dir.text()),
      file_(detail::path_in(dir_, options_.file_name)),
      previous_file_(detail::path_in(dir_, previous_name_)),
      lock_file_(detail::path_in(dir_, lock_name_)),
      sink_(static_cast<L&&>(sink)),
      fs_(static_cast<F&&>(fs)) {}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
void StateManager<L, S, P, F>::log(Level level, std::string_view message, Fields fields) noexcept {
  ATOMIC_STATE_DETAIL_TRY { sink_.log(level, message, fields); }
  ATOMIC_STATE_DETAIL_CATCH_ALL {}  // a throwing sink must not undo a save
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::failure(Step step, int neg_errno, const char* note,
                                         std::string_view detail) const noexcept {
  return Status(step, detail::system_error(neg_errno), file_, {}, false, note, detail);
}

namespace detail {
// Closes a descriptor when the scope ends, whatever way it ends.
template <class Fs>
class ClosingFd {
 public:
  ClosingFd(Fs& fs, int fd) noexcept : fs_(fs), fd_(fd) {}
  ClosingFd(const ClosingFd&) = delete;
  ClosingFd& operator=(const ClosingFd&) = delete;
  ~ClosingFd() { (void)fs_.close(fd_); }  // read-only descriptors: nothing to lose

 private:
  Fs& fs_;
  int fd_;
};

// Why a directory that cannot be opened (ENOENT) is missing: the first
// level of its path that is a symlink to nothing, as an error, or success
// when it is plainly not there. A link to nothing usually means a volume
// that is not mounted, where a first run would start over on the wrong
// disk.
template <class Fs>
Status find_dangling_link(Fs& fs, std::string_view dir, std::string_view state) noexcept {
  char path[ATOMIC_STATE_PATH_MAX];
  std::memcpy(path, dir.data(), dir.size());
  path[dir.size()] = '\0';
  for (std::size_t end = 1; end <= dir.size(); ++end) {
    if (end < dir.size() && path[end] != '/') continue;
    if (path[end - 1] == '/') continue;  // "/" itself, or a run of slashes
    const char saved = path[end];
    path[end] = '\0';
    FileInfo entry, target;
    const int r = fs.entry_info(AT_FDCWD, path, entry);
    const bool dangling = r >= 0 && entry.type == FileType::symlink &&
                          fs.file_info_at(AT_FDCWD, path, target) == -ENOENT;
    if (dangling)
      return Status(Step::open_directory, system_error(-ENOENT), std::string_view(path, end), state,
                    false, "a symlink to nothing: is the volume it points to mounted?");
    path[end] = saved;
    if (r < 0) return {};  // the first level missing: the directory plainly is
  }
  return {};
}
}  // namespace detail

// Opens the state directory; a missing one is not an error but dir_fd -1.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::open_directory(const detail::DirectoryPath& dir,
                                                int& dir_fd) noexcept {
  detail::Retrying<FsRef> fs(fs_);
  dir_fd = fs.open_directory(dir.c_str());
  if (dir_fd >= 0) return {};
  const int error = std::exchange(dir_fd, -1);
  if (error != -ENOENT)
    return Status(Step::open_directory, detail::system_error(error), dir.view(), file_);
  return detail::find_dangling_link(fs, dir.view(), file_);
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::missing_directory(
    const detail::DirectoryPath& dir) const noexcept {
  return Status(Step::open_directory, detail::system_error(-ENOENT), dir.view(), file_, false,
                "the state directory is missing and StateOptions::create_directory is false: is "
                "its volume mounted?");
}

// ---------------------------------------------------------------- run lock --

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<RunLock<F>> StateManager<L, S, P, F>::try_lock_run() noexcept {
  constexpr const char* context = "take the run lock";
  if (!unusable_.ok()) return unusable_.within(context);
  const detail::DirectoryPath dir(dir_);
  if (!dir.ok()) return dir.problem(Step::check_path).within(context);
  int dir_fd = -1;
  if (Status opened = open_directory(dir, dir_fd); !opened) return opened.within(context);
  if (dir_fd < 0) {
    if (!options_.create_directory) return missing_directory(dir).within(context);
    if (Status made = create_directory(dir, dir_fd); !made) return made.within(context);
  }
  const detail::ClosingFd<FsRef> closing(fs_, dir_fd);
  pin_directory(dir_fd);
  detail::Retrying<FsRef> fs(fs_);
  if (const int r = fs.check_writable(dir_fd); r < 0)
    return Status(Step::lock_run, detail::system_error(r), dir.view(), file_, false,
                  "the state directory is not writable: no save could succeed")
        .within(context);
  const int fd = fs.open_or_create(dir_fd, lock_name_.c_str(), 0600);
  if (fd < 0)
    return lock_failure(fd, fd == -ELOOP ? "the lock file is a symlink" : nullptr).within(context);
  RunLock<F> lock(fs_, fd);  // from here on, every return closes fd
  FileInfo info;
  if (const int r = fs.file_info(fd, info); r < 0) return lock_failure(r).within(context);
  if (info.type != FileType::regular)
    return lock_failure(-EINVAL, "the lock file is not a regular file").within(context);
  // Root, in a directory of another user, takes that user's lock file as
  // its own, and changes nothing in the file (detail::lock_file_owner).
  const detail::LockFileOwner owner =
      detail::lock_file_owner(fs, dir_fd, static_cast<std::uint32_t>(::geteuid()), info.owner);
  if (Status foreign = not_own_lock(info, owner.taken); !foreign) return foreign.within(context);
  const int locked = fs.try_lock(fd);
  if (locked == -EWOULDBLOCK || locked == -EAGAIN) return lock_held(fd).within(context);
  if (locked < 0) return lock_failure(locked).within(context);
  if (owner.hands_off) return Result<RunLock<F>>(std::move(lock));
  // Whoever can open the lock file can hold it forever: only its owner.
  if ((info.mode & 077) != 0)
    if (const int r = fs.set_mode(fd, 0600); r < 0)
      return lock_failure(r, "the lock file is open to other users and cannot be made 0600")
          .within(context);
  write_holder(fd);
  return Result<RunLock<F>>(std::move(lock));
}

// A missing state directory, made as a first save makes it (each level
// synced into its parent), by creating the lock file in it.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::create_directory(const detail::DirectoryPath& dir,
                                                  int& dir_fd) noexcept {
  AtomicWriter<P, FsRef&> lock_writer = writer();  // the lock's name is the library's own
  Status made = detail::write_new_own_file(lock_writer, lock_file_, {}, WriteOptions{0600, true});
  if (!made && made.code() != std::errc::file_exists && !made.replaced()) return made;
  detail::Retrying<FsRef> fs(fs_);
  dir_fd = fs.open_directory(dir.c_str());
  if (dir_fd >= 0) return {};
  return Status(Step::open_directory, detail::system_error(std::exchange(dir_fd, -1)), dir.view(),
                file_);
}

// Why the lock file at the lock's name is not the library's own, or
// success: a hard link to another file (planted there, so that the chmod
// and the pid below would change that file), or a file of another user
// (`owner_taken` false: detail::lock_file_owner's rule, under which root
// takes the directory owner's). Refused before anything is changed.
// (Every other file the manager opens by name it only reads, links or
// replaces by rename: this is the one it changes.)
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::not_own_lock(const FileInfo& info,
                                              bool owner_taken) const noexcept {
  char why[160];
  std::size_t size = 0;
  const auto append = [&](std::string_view part) {
    std::memcpy(why + size, part.data(), part.size());
    size += part.size();
  };
  const auto number = [&](std::uint64_t n) {
    size = static_cast<std::size_t>(std::to_chars(why + size, why + size + 24, n).ptr - why);
  };
  if (info.links > 1) {
    append("the lock file has ");
    number(info.links);
    append(" hard links: not the library's own, left as it is");
    return lock_failure(-EMLINK, nullptr, std::string_view(why, size));
  }
  if (!owner_taken) {
    append("the lock file belongs to uid ");
    number(info.owner);
    append(", not to this process's user: not the library's own, left as it is");
    return lock_failure(-EPERM, nullptr, std::string_view(why, size));
  }
  return {};
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::lock_failure(int neg_errno, const char* note,
                                              std::string_view detail) const noexcept {
  return Status(Step::lock_run, detail::system_error(neg_errno), lock_file_, file_, false, note,
                detail);
}

// Another run holds the lock: says so, with the pid the holder wrote into
// the lock file when it can be read.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::lock_held(int fd) noexcept {
  detail::Retrying<FsRef> fs(fs_);
  char text[24];
  const ssize_t n = fs.read(fd, text, sizeof text);
  std::size_t digits = 0;
  while (n > 0 && digits < static_cast<std::size_t>(n) && digits < 20 && text[digits] >= '0' &&
         text[digits] <= '9')
    ++digits;
  char holder[40] = "held by pid ";
  std::memcpy(holder + 12, text, digits);
  const std::string_view detail =
      digits > 0 ? std::string_view(holder, 12 + digits) : std::string_view();
  return Status(Step::lock_run, std::make_error_code(std::errc::resource_unavailable_try_again),
                lock_file_, file_, false, "another run holds it", detail);
}

// Writes this process's pid into the lock file, for a run that finds the
// lock held to name its holder. Always the same width, so that no shorter
// pid leaves digits of a longer one behind. Its failure costs only that.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
void StateManager<L, S, P, F>::write_holder(int fd) noexcept {
  char line[21];
  std::memset(line, ' ', sizeof line);
  (void)std::to_chars(line, line + 20, static_cast<std::int64_t>(::getpid()));
  line[20] = '\n';
  detail::Retrying<FsRef> fs(fs_);
  bool stalled = false;
  (void)detail::write_all(fs, fd, line, sizeof line, stalled);
}

// ------------------------------------------------------------ load_state --

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<Loaded<S>> StateManager<L, S, P, F>::load_state() noexcept {
  constexpr const char* context = "load state file";
  if (!unusable_.ok()) return unusable_.within(context);
  const detail::DirectoryPath dir(dir_);
  if (!dir.ok()) return dir.problem(Step::check_path).within(context);
  Text text;
  FileInfo info;
  bool missing = false;
  // Once swept, a load reads the state file by its path, as any reader
  // would; the directory is opened only when there is work there (a
  // missing file to explain, a corrupt one to copy).
  if (swept_.is_set() && file_.size() < ATOMIC_STATE_PATH_MAX) {
    if (Status read = read_file(AT_FDCWD, file_.c_str(), file_, text, info, missing); !read)
      return read.within(context);
    if (!missing) return use_state_text(-1, dir, text.view(), info);
  }
  int dir_fd = -1;
  if (Status opened = open_directory(dir, dir_fd); !opened) return opened.within(context);
  if (dir_fd < 0) {
    if (!options_.create_directory) return missing_directory(dir).within(context);
    return first_run();
  }
  const detail::ClosingFd<FsRef> closing(fs_, dir_fd);
  pin_directory(dir_fd);
  if (swept_.first()) (void)sweep_temp_files(dir_fd, dir.view());
  missing = false;
  if (Status read = read_file(dir_fd, options_.file_name.c_str(), file_, text, info, missing);
      !read)
    return read.within(context);
  if (missing) return first_run(dir_fd);
  return use_state_text(dir_fd, dir, text.view(), info);
}

// The state in the text read from the state file, or what a corrupt one
// leads to; dir_fd is the state directory, or -1 when it is not open yet.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<Loaded<S>> StateManager<L, S, P, F>::use_state_text(int dir_fd,
                                                           const detail::DirectoryPath& dir,
                                                           std::string_view text,
                                                           const FileInfo& info) noexcept {
  constexpr const char* context = "load state file";
  Loaded<S> loaded;
  Problem problem;
  std::int64_t version = 0;
  const detail::Decoded decoded = decode(text, loaded, problem, version);
  if (decoded == detail::Decoded::corrupt) {
    if (dir_fd >= 0) return load_corrupt(dir_fd, text, info, problem.view());
    int opened_fd = -1;
    if (Status opened = open_directory(dir, opened_fd); !opened) return opened.within(context);
    if (opened_fd < 0)  // the directory went away since the file was read
      return Status(Step::open_directory, detail::system_error(-ENOENT), dir.view(), file_)
          .within(context);
    const detail::ClosingFd<FsRef> closing(fs_, opened_fd);
    return load_corrupt(opened_fd, text, info, problem.view());
  }
  if (decoded != detail::Decoded::valid)
    return refused(decoded, file_, problem.view()).within(context);
  loaded.origin = LoadOrigin::saved;
  if (version < detail::schema_version<S>::value)
    log(Level::info, "state file upgraded",
        {{"path", file_},
         {"from_version", version},
         {"to_version", detail::schema_version<S>::value}});
  detail::StateCodec<S>::log_loaded(
      loaded, file_, [&](Fields fields) noexcept { log(Level::debug, "state loaded", fields); });
  return Result<Loaded<S>>(std::move(loaded));
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<Loaded<S>> StateManager<L, S, P, F>::first_run(int dir_fd) noexcept {
  // Info, not debug: a first run where a state was expected (a volume not
  // mounted, a wrong directory) is the event an operator looks for. A
  // previous state without a state file is no save's doing (no save
  // removes the state file): someone removed it, and is warned.
  FileInfo previous;
  if (options_.keep_previous && dir_fd >= 0 &&
      detail::Retrying<FsRef>(fs_).entry_info(dir_fd, previous_name_.c_str(), previous) >= 0)
    log(Level::warn, "no state file found but a previous one exists, treating as first run",
        {{"path", file_}, {"previous", previous_file_}});
  else
    log(Level::info, "no state file found, treating as first run", {{"path", file_}});
  Loaded<S> loaded;
  loaded.origin = LoadOrigin::first_run;
  return Result<Loaded<S>>(std::move(loaded));
}

// Why a state file that was read cannot be used, as an error that leaves
// it where it is.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::refused(detail::Decoded decoded, std::string_view path,
                                         std::string_view problem) const noexcept {
  switch (decoded) {
    case detail::Decoded::too_new:
      return Status(Step::upgrade, std::make_error_code(std::errc::not_supported), path, {}, false,
                    "the state file is left as it is", problem);
    case detail::Decoded::upgrade_failed:
      return Status(Step::upgrade, std::make_error_code(std::errc::invalid_argument), path, {},
                    false, "the state file is left as it is", problem);
    case detail::Decoded::corrupt:
      return Status(Step::parse, std::make_error_code(std::errc::bad_message), path, {}, false,
                    "the state file is corrupt and StateOptions::on_corrupt is fail: it is left "
                    "as it is",
                    problem);
    case detail::Decoded::valid:
    case detail::Decoded::out_of_memory:
      break;
  }
  return Status(Step::parse, detail::system_error(-ENOMEM), path);
}

// A corrupt state file: the previous state when one was kept and is valid,
// else the zero state or an error, as on_corrupt says. The file itself is
// left for the next save to replace; a copy of its bytes is kept.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<Loaded<S>> StateManager<L, S, P, F>::load_corrupt(int dir_fd, std::string_view bytes,
                                                         const FileInfo& info,
                                                         std::string_view problem) noexcept {
  constexpr const char* context = "load state file";
  corrupt_.remember(info);
  Loaded<S> loaded;
  bool found = false;
  if (options_.keep_previous)
    if (Status read = load_previous(dir_fd, loaded, found); !read) return read.within(context);
  if (!found && options_.on_corrupt == OnCorrupt::fail)
    return refused(detail::Decoded::corrupt, file_, problem).within(context);
  loaded.origin = found ? LoadOrigin::previous : LoadOrigin::recovered;
  if (Status kept = keep_corrupt_copy(dir_fd, bytes, info, loaded); !kept)
    return kept.within(context);

  Field fields[4] = {{"path", file_}, {"error", problem}};
  std::size_t count = 2;
  if (found) fields[count++] = Field("previous", previous_file_);
  if (!loaded.corrupt_copy.empty()) fields[count++] = Field("copied_to", loaded.corrupt_copy);
  log(Level::warn,
      found ? "state file corrupted, loading the previous state"
            : "state file corrupted, treating as first run",
      Fields(fields, count));
  return Result<Loaded<S>>(std::move(loaded));
}

// Reads the previous state into `loaded`; `found` says whether there was a
// valid one. A corrupt one is only logged: the zero state follows.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::load_previous(int dir_fd, Loaded<S>& loaded,
                                               bool& found) noexcept {
  Text text;
  FileInfo info;
  bool missing = false;
  if (Status read = read_file(dir_fd, previous_name_.c_str(), previous_file_, text, info, missing);
      !read)
    return read;
  if (missing) return {};
  Problem problem;
  std::int64_t version = 0;
  const detail::Decoded decoded = decode(text.view(), loaded, problem, version);
  if (decoded == detail::Decoded::valid) {
    found = true;
    return {};
  }
  if (decoded != detail::Decoded::corrupt) return refused(decoded, previous_file_, problem.view());
  static_cast<S&>(loaded) = S{};
  log(Level::warn, "previous state file corrupted too",
      {{"path", previous_file_}, {"error", problem.view()}});
  return {};
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<TempSweep> StateManager<L, S, P, F>::remove_stale_temp_files() noexcept {
  (void)swept_.first();
  if (!unusable_.ok()) return unusable_;
  const detail::DirectoryPath dir(dir_);
  if (!dir.ok()) return dir.problem(Step::check_path);
  int dir_fd = -1;
  if (Status opened = open_directory(dir, dir_fd); !opened) return opened;
  if (dir_fd < 0) return TempSweep{};
  const detail::ClosingFd<FsRef> closing(fs_, dir_fd);
  return sweep_temp_files(dir_fd, dir.view());
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<TempSweep> StateManager<L, S, P, F>::sweep_temp_files(int dir_fd,
                                                             std::string_view dir) noexcept {
  detail::Retrying<FsRef> fs(fs_);
  Result<TempSweep> sweep = detail::sweep_temp_files(fs, dir_fd, dir);
  if (!sweep) {
    ATOMIC_STATE_DETAIL_TRY {
      log(Level::warn, "stale temp files could not be removed",
          {{"path", dir}, {"error", sweep.status().message()}});
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL {}
    return sweep;
  }
  if (sweep->removed > 0)
    log(Level::info, "stale temp files removed", {{"path", dir}, {"count", sweep->removed}});
  if (sweep->not_regular > 0)
    log(Level::warn, "entries named like temp files are not regular files; left alone",
        {{"path", dir}, {"count", sweep->not_regular}});
  if (sweep->in_use > 0)
    log(Level::debug, "temp files of saves in progress left alone",
        {{"path", dir}, {"count", sweep->in_use}});
  if (sweep->not_permitted > 0)
    log(Level::warn, "temp files this user may not remove left alone",
        {{"path", dir}, {"count", sweep->not_permitted}});
  return sweep;
}

// Reads the whole file `name` (shown as `path`) into `text`, refusing
// anything but a regular file within the size limit. A missing file is
// not an error: `missing`.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::read_file(int dir_fd, const char* name, std::string_view path,
                                           Text& text, FileInfo& info, bool& missing) noexcept {
  const auto failed = [&](Step step, int neg_errno, const char* note = nullptr) {
    return Status(step, detail::system_error(neg_errno), path, {}, false, note);
  };
  detail::Retrying<FsRef> fs(fs_);
  const int fd = fs.open_file(dir_fd, name);
  if (fd == -ENOENT) {
    // A link to nothing is not a first run: it usually means the state
    // lives on a volume that is not mounted, and a save would replace the
    // link. (Any failure to look is taken for a plain missing file.)
    FileInfo link;
    if (fs.entry_info(dir_fd, name, link) >= 0 && link.type == FileType::symlink)
      return failed(Step::open_file, -ENOENT, "the state path is a symlink to nothing");
    missing = true;
    return {};
  }
  if (fd < 0) return failed(Step::open_file, fd);
  const detail::ClosingFd<FsRef> closing(fs_, fd);

  const int r = fs.file_info(fd, info);
  if (r < 0) return failed(Step::check_file, r);
  if (info.type == FileType::directory)
    return failed(Step::check_file, -EISDIR, "the state path is a directory");
  if (info.type != FileType::regular)
    return failed(Step::check_file, -EINVAL,
                  info.type == FileType::fifo ? "not a regular file but a FIFO"
                                              : "not a regular file but a device or socket");
  return read_to_end(fd, info, path, text);
}

// Reads up to the size limit, and one byte past it to see a file that
// outgrew it; a file that grows while it is read is read on. The limit may
// be anything up to no_size_limit, so no sum here may pass SIZE_MAX.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::read_to_end(int fd, const FileInfo& info, std::string_view path,
                                             Text& text) noexcept {
  const std::size_t limit = options_.max_state_size;
  const auto too_large = [&] {
    return Status(Step::check_file, detail::system_error(-EFBIG), path, {}, false,
                  "larger than the state size limit");
  };
  if (info.size > limit || info.size >= no_size_limit) return too_large();
  detail::Retrying<FsRef> fs(fs_);
  const auto expected = static_cast<std::size_t>(info.size);
  for (;;) {
    std::size_t want = text.size() < expected ? expected - text.size() + 1
                                              : (text.spare() > 0 ? text.spare() : 4096);
    const std::size_t room = limit - text.size();  // text.size() <= limit here
    if (want - 1 > room) want = room + 1;
    char* into = text.room_for(want);
    if (into == nullptr) return Status(Step::read_file, detail::system_error(-ENOMEM), path);
    const ssize_t n = fs.read(fd, into, want);
    if (n < 0) return Status(Step::read_file, detail::system_error(static_cast<int>(n)), path);
    if (n == 0) return {};
    text.added(static_cast<std::size_t>(n) <= want ? static_cast<std::size_t>(n) : want);
    if (text.size() > limit) return too_large();
  }
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
detail::Decoded StateManager<L, S, P, F>::decode(std::string_view text, S& state, Problem& problem,
                                                 std::int64_t& from_version) noexcept {
  ATOMIC_STATE_DETAIL_TRY {
    return detail::StateCodec<S>::read(text, state, problem, from_version);
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL { return detail::Decoded::out_of_memory; }  // std::bad_alloc
}

// ----------------------------------------------------------- corrupt copies --

// Keeps a copy of the corrupt file's bytes (unless corrupt_copies is 0),
// records where in `loaded`, and removes the oldest copies past the limit.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::keep_corrupt_copy(int dir_fd, std::string_view bytes,
                                                   const FileInfo& info,
                                                   Loaded<S>& loaded) noexcept {
  if (options_.corrupt_copies == 0) return {};
  char name[ATOMIC_STATE_NAME_MAX + 1];
  if (Status kept = copy_aside(dir_fd, bytes, info, name); !kept) return kept;
  const detail::JoinedPath copy(dir_, name);
  ATOMIC_STATE_DETAIL_TRY { loaded.corrupt_copy.assign(copy.view().data(), copy.view().size()); }
  ATOMIC_STATE_DETAIL_CATCH_ALL { return failure(Step::copy_aside, -ENOMEM); }
  remove_old_copies(dir_fd, name);
  return {};
}

namespace detail {
// The age of a corrupt copy's name, "<file name>.corrupt-<stamp>[.<n>]":
// its stamp then its n (0 without one), or false for any other name.
inline bool corrupt_copy_age(std::string_view name, std::string_view prefix, std::int64_t& stamp,
                             std::int64_t& n) noexcept {
  if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) return false;
  const char* p = name.data() + prefix.size();
  const char* const end = name.data() + name.size();
  const auto digits = [](const char* from, const char* to) {
    return from != to && *from != '-' && *from != '+';
  };
  const char* stamp_start = *p == '-' ? p + 1 : p;
  const char* dot = std::find(stamp_start, end, '.');
  if (!digits(stamp_start, dot)) return false;
  const auto parsed = std::from_chars(p, dot, stamp);
  if (parsed.ec != std::errc() || parsed.ptr != dot) return false;
  n = 0;
  if (dot == end) return true;
  if (!digits(dot + 1, end)) return false;
  const auto suffix = std::from_chars(dot + 1, end, n);
  return suffix.ec == std::errc() && suffix.ptr == end;
}

// One pass over the state directory through the corrupt copies of one
// file time `stamp`: the highest suffix among them (-1: none), so that a
// new copy's name ranks after every copy of the same time, and the first
// that holds the bytes to keep (`same(name)`), so that they are kept once.
template <class Fs, class Same>
class StampCopies {
 public:
  StampCopies(Fs& fs, int dir_fd, std::string_view prefix, std::int64_t stamp, Same& same) noexcept
      : fs_(fs), dir_fd_(dir_fd), prefix_(prefix), stamp_(stamp), same_(same) {}

  int run() noexcept { return fs_.list_directory(dir_fd_, &StampCopies::visit, this); }
  std::int64_t highest() const noexcept { return highest_; }
  const char* same() const noexcept { return same_name_; }

 private:
  static void visit(void* self, const char* name) noexcept {
    static_cast<StampCopies*>(self)->examine(name);
  }
  void examine(const char* name) noexcept {
    std::int64_t stamp = 0, n = 0;
    if (!corrupt_copy_age(name, prefix_, stamp, n) || stamp != stamp_) return;
    if (n > highest_) highest_ = n;
    if (same_name_[0] == '\0' && same_(name)) {
      const std::size_t size = std::strlen(name);  // at most NAME_MAX: a directory entry
      std::memcpy(same_name_, name, size + 1);
    }
  }

  Fs& fs_;
  int dir_fd_;
  std::string_view prefix_;
  std::int64_t stamp_;
  Same& same_;
  std::int64_t highest_ = -1;
  char same_name_[ATOMIC_STATE_NAME_MAX + 1] = {};
};

// One pass over the state directory counting the corrupt copies of one
// state file that are regular files, and finding the oldest but `kept`.
template <class Fs>
class CopyCensus {
 public:
  CopyCensus(Fs& fs, int dir_fd, std::string_view prefix, const char* kept) noexcept
      : fs_(fs), dir_fd_(dir_fd), prefix_(prefix), kept_(kept) {}

  int run() noexcept { return fs_.list_directory(dir_fd_, &CopyCensus::visit, this); }
  std::size_t count() const noexcept { return count_; }
  const char* oldest() const noexcept { return oldest_; }

 private:
  static void visit(void* self, const char* name) noexcept {
    static_cast<CopyCensus*>(self)->examine(name);
  }
  void examine(const char* name) noexcept {
    std::int64_t stamp = 0, n = 0;
    if (!corrupt_copy_age(name, prefix_, stamp, n)) return;
    FileInfo info;
    if (fs_.entry_info(dir_fd_, name, info) < 0 || info.type != FileType::regular) return;
    ++count_;
    if (std::strcmp(name, kept_) == 0) return;  // counted, never removed
    if (oldest_[0] != '\0' && (stamp > stamp_ || (stamp == stamp_ && n >= n_))) return;
    stamp_ = stamp;
    n_ = n;
    const std::size_t size = std::strlen(name);  // at most NAME_MAX: a directory entry
    std::memcpy(oldest_, name, size + 1);
  }

  Fs& fs_;
  int dir_fd_;
  std::string_view prefix_;
  const char* kept_;
  std::size_t count_ = 0;
  std::int64_t stamp_ = 0, n_ = 0;
  char oldest_[ATOMIC_STATE_NAME_MAX + 1] = {};
};
}  // namespace detail

// Removes the oldest corrupt copies until corrupt_copies are left, logging
// each removal; never `kept`, the copy just made, whatever its age. A
// failure is logged and ends the pruning: the copies are the operator's
// evidence, and keeping one too many loses nothing.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
void StateManager<L, S, P, F>::remove_old_copies(int dir_fd, const char* kept) noexcept {
  char prefix[ATOMIC_STATE_NAME_MAX + 1];
  const std::string_view name = options_.file_name;
  std::memcpy(prefix, name.data(), name.size());
  std::memcpy(prefix + name.size(), ".corrupt-", 10);  // with its NUL
  detail::Retrying<FsRef> fs(fs_);
  for (int round = 0; round < ATOMIC_STATE_TEMP_NAME_ATTEMPTS; ++round) {
    detail::CopyCensus<detail::Retrying<FsRef>> census(
        fs, dir_fd, std::string_view(prefix, name.size() + 9), kept);
    const int listed = census.run();
    if (listed < 0 || census.count() <= options_.corrupt_copies || census.oldest()[0] == '\0')
      return;
    const detail::JoinedPath path(dir_, census.oldest());
    if (const int r = fs.unlink(dir_fd, census.oldest()); r < 0 && r != -ENOENT) {
      ATOMIC_STATE_DETAIL_TRY {
        log(Level::warn, "old corrupt copy could not be removed",
            {{"path", path.view()}, {"error", detail::system_error(r).message()}});
      }
      ATOMIC_STATE_DETAIL_CATCH_ALL {}
      return;
    }
    log(Level::info, "old corrupt copy removed",
        {{"path", path.view()}, {"kept", options_.corrupt_copies}});
  }
}

// Keeps the bytes of a corrupt state file beside it, named after the file's
// modification time, without touching the file itself: a valid save may
// have replaced it since it was read, and must not be moved aside or lost.
// Loads of the same file agree on the name, so its bytes are kept once.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::copy_aside(int dir_fd, std::string_view bytes,
                                            const FileInfo& info,
                                            char (&name)[ATOMIC_STATE_NAME_MAX + 1]) noexcept {
  // The file name is at most NAME_MAX - derived_name_growth (StateOptions::check).
  const std::string_view file = options_.file_name;
  std::memcpy(name, file.data(), file.size());
  std::memcpy(name + file.size(), ".corrupt-", 9);
  char* const stamp_end =
      std::to_chars(name + file.size() + 9, name + sizeof name - 8, info.modified).ptr;
  int unreadable = 0;  // why the last name that could not be examined could not
  // Copies of files of the same time (a second's resolution) are numbered
  // on past the highest number there, never into a freed one: the newest
  // copy must rank newest, or pruning would remove it first.
  auto same = [&](const char* existing) noexcept {
    return existing_copy(dir_fd, existing, bytes, unreadable) == Copy::same;
  };
  detail::Retrying<FsRef> fs(fs_);
  detail::StampCopies<detail::Retrying<FsRef>, decltype(same)> copies(
      fs, dir_fd, std::string_view(name, file.size() + 9), info.modified, same);
  std::int64_t first = 0;
  if (copies.run() >= 0) {
    if (copies.same()[0] != '\0') {
      std::memcpy(name, copies.same(), std::strlen(copies.same()) + 1);
      return {};
    }
    first = copies.highest() + 1;
  }
  for (int attempt = 0; attempt < ATOMIC_STATE_TEMP_NAME_ATTEMPTS; ++attempt) {
    char* end = stamp_end;
    if (const std::int64_t n = first + attempt; n > 0) {
      *end++ = '.';
      end = std::to_chars(end, name + sizeof name - 1, n).ptr;
    }
    *end = '\0';
    Copy found = existing_copy(dir_fd, name, bytes, unreadable);
    if (found == Copy::absent) {
      const detail::JoinedPath path(dir_, name);
      AtomicWriter<P, FsRef&> copy_writer = writer();  // the copy's name is the library's own
      const Status written =
          detail::write_new_own_file(copy_writer, path.view(), bytes, WriteOptions{0600, false});
      // Renamed but not known durable is kept all the same: the corrupt
      // file itself stays until a save replaces it, and that save syncs
      // the directory.
      if (written.ok() || written.replaced()) found = Copy::same;
      // Another load of the same bytes may have been quicker: look again.
      else if (written.code() == std::errc::file_exists)
        found = existing_copy(dir_fd, name, bytes, unreadable);
      else
        return copy_failed(written, path.view());
    }
    if (found == Copy::same) return {};
  }
  return failure(Step::copy_aside, unreadable < 0 ? unreadable : -EEXIST,
                 "every name tried for the copy was taken");
}

// The failure to write the copy `copy`, as a failure to copy the state file
// aside: which step of the write failed, and on what, is the detail.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::copy_failed(const Status& written,
                                             std::string_view copy) const noexcept {
  detail::TextBuffer<256> how;
  const bool described =
      how.append(to_string(written.step())) && how.append(" ") && how.append(written.path());
  return Status(Step::copy_aside, written.code(), file_, copy, false, nullptr,
                described ? how.view() : std::string_view());
}

// Whether `name` in the state directory is missing, a regular file holding
// exactly `bytes`, or something else; `error` keeps why a file there could
// not be opened.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
typename StateManager<L, S, P, F>::Copy StateManager<L, S, P, F>::existing_copy(
    int dir_fd, const char* name, std::string_view bytes, int& error) noexcept {
  detail::Retrying<FsRef> fs(fs_);
  const int fd = fs.open_file(dir_fd, name);
  if (fd == -ENOENT) return Copy::absent;
  if (fd < 0) {
    error = fd;
    return Copy::other;
  }
  const detail::ClosingFd<FsRef> closing(fs_, fd);
  FileInfo info;
  if (fs.file_info(fd, info) < 0 || info.type != FileType::regular || info.size != bytes.size())
    return Copy::other;
  char chunk[4096];
  std::size_t at = 0;
  for (;;) {
    const ssize_t n = fs.read(fd, chunk, sizeof chunk);
    if (n <= 0) return n == 0 && at == bytes.size() ? Copy::same : Copy::other;
    const auto got = static_cast<std::size_t>(n);
    if (got > bytes.size() - at || std::memcmp(chunk, bytes.data() + at, got) != 0)
      return Copy::other;
    at += got;
  }
}

// --------------------------------------------------------- should_process --

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
bool StateManager<L, S, P, F>::should_process(const cursor_type& current, const S& state) noexcept {
  using Cursor = detail::CursorOf<S>;
  const std::optional<cursor_type> last = Cursor::read(state);
  if (!last) {
    log(Level::debug, "first run, processing required", {});
    return true;
  }
  if constexpr (Cursor::unix_seconds) {
    // The Go service's rules and words, for unix seconds.
    const std::int64_t last_ts = *last, current_ts = current;
    if (current_ts > last_ts) {
      // Unsigned so that far-apart timestamps cannot overflow the subtraction.
      const auto delta =
          static_cast<std::uint64_t>(current_ts) - static_cast<std::uint64_t>(last_ts);
      log(Level::debug, "new data available",
          {{"current_ts", current_ts}, {"last_ts", last_ts}, {"delta_seconds", delta}});
      return true;
    }
    if (current_ts == last_ts) {
      log(Level::info, "no new data, skipping extraction",
          {{"current_ts", current_ts}, {"last_ts", last_ts}});
      return false;
    }
    log(Level::warn, "clock skew detected, API timestamp older than last processed",
        {{"current_ts", current_ts}, {"last_ts", last_ts}});
    return false;
  } else {
    Field fields[2];
    std::size_t count = 0;
    if constexpr (std::is_constructible_v<Field, const char*, const cursor_type&>) {
      fields[0] = Field("current", current);
      fields[1] = Field("last", *last);
      count = 2;
    }
    if (*last < current) {
      log(Level::debug, "new data available", Fields(fields, count));
      return true;
    }
    if (!(current < *last)) {
      log(Level::info, "no new data, skipping extraction", Fields(fields, count));
      return false;
    }
    log(Level::warn, "cursor went backwards, data older than last processed",
        Fields(fields, count));
    return false;
  }
}

// ------------------------------------------------------------ save_state --

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::save_state(const S& state) noexcept {
  constexpr const char* context = "write state file";
  if (!unusable_.ok()) return unusable_.within(context);
  detail::TextBuffer<2048> text;
  if (Status encoded = encode(state, text); !encoded) return encoded.within(context);
  if (text.size() > options_.max_state_size)
    return failure(Step::serialize, -EFBIG,
                   "the text would be larger than the state size limit, so load_state "
                   "would refuse it")
        .within(context);
  if (Status same = check_pinned_directory(); !same) return same.within(context);
  if (options_.keep_previous)
    if (Status kept = keep_previous(); !kept) return kept.within(context);
  Status written = writer().write(file_, text.view(),
                                  WriteOptions{options_.file_mode, options_.create_directory});
  if (!written) {
    if (!options_.create_directory && written.step() == Step::open_directory &&
        written.code() == std::errc::no_such_file_or_directory)
      written = written.with_note(
          "StateOptions::create_directory is false: is the state directory's volume mounted?");
    return written.within(context);
  }
  detail::StateCodec<S>::log_saved(
      state, [&](Fields fields) noexcept { log(Level::info, "state saved", fields); });
  return {};
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::save_state(const S& state, Batch<P, F>& batch) noexcept {
  constexpr const char* context = "save state with its batch";
  const auto given_up = [&](const Status& failure) {
    batch.discard();
    return failure.within(context);
  };
  if (!unusable_.ok()) return given_up(unusable_);
  detail::TextBuffer<2048> text;
  if (Status encoded = encode(state, text); !encoded) return given_up(encoded);
  if (text.size() > options_.max_state_size)
    return given_up(failure(Step::serialize, -EFBIG,
                            "the text would be larger than the state size limit, so load_state "
                            "would refuse it"));
  if (Status same = check_pinned_directory(); !same) return given_up(same);
  if (Status added = batch.add(file_, text.view(),
                               WriteOptions{options_.file_mode, options_.create_directory});
      !added)
    return given_up(added);
  const Status committed =
      batch.commit([&]() noexcept { return options_.keep_previous ? keep_previous() : Status(); });
  if (!committed) return committed.within(context);
  detail::StateCodec<S>::log_saved(
      state, [&](Fields fields) noexcept { log(Level::info, "state saved", fields); });
  return {};
}

// With create_directory false, the directory a lock or a load opened is the
// state's directory for the saves that follow (the latest lock or load
// pins anew: each starts a run). With true, nothing is pinned: directories
// may be made, and a save follows the path wherever it leads.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
void StateManager<L, S, P, F>::pin_directory(int dir_fd) noexcept {
  if (options_.create_directory) return;
  FileInfo info;
  if (detail::Retrying<FsRef>(fs_).file_info(dir_fd, info) >= 0) pinned_.pin(info);
}

// Refuses a save when the directory at the path is not the one pinned: one
// look at the path, right before the save opens it.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::check_pinned_directory() noexcept {
  if (options_.create_directory || !pinned_.is_set()) return {};
  const detail::DirectoryPath dir(dir_);
  if (!dir.ok()) return {};  // the write says why
  FileInfo info;
  const int r = detail::Retrying<FsRef>(fs_).file_info_at(AT_FDCWD, dir.c_str(), info);
  if (r >= 0 && info.type == FileType::directory && pinned_.admits(info)) return {};
  return Status(Step::open_directory, detail::system_error(r < 0 ? r : -ENOENT), dir.view(), file_,
                false,
                "the directory at the path is not the one locked or loaded (another device or "
                "inode) and StateOptions::create_directory is false: is its volume mounted?");
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::encode(const S& state,
                                        detail::TextBuffer<2048>& text) const noexcept {
  detail::TextBuffer<256> why;
  const int r = detail::StateCodec<S>::print(state, text, why);
  if (r == 0) return {};
  return failure(Step::serialize, r, nullptr, r == -ENOMEM ? std::string_view() : why.view());
}

// Keeps the state file a save is about to replace as previous_file(): a
// hard link under a temp name, renamed over the previous one, and the
// directory synced, so that the state file is never replaced before its
// predecessor is durably kept. Nothing to keep: no state file yet, one a
// load found corrupt, or one already kept.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::keep_previous() noexcept {
  const detail::DirectoryPath dir(dir_);
  if (!dir.ok()) return {};  // the write says why
  detail::Retrying<FsRef> fs(fs_);
  const int dir_fd = fs.open_directory(dir.c_str());
  if (dir_fd == -ENOENT) return {};
  if (dir_fd < 0)
    return Status(Step::open_directory, detail::system_error(dir_fd), dir.view(), file_);
  const detail::ClosingFd<FsRef> closing(fs_, dir_fd);
  return link_previous(dir_fd);
}

// Whether the state file reads as a state now. Asked only of a file that
// is the one (device and inode) a load found corrupt: an inode number is
// reused once the file is gone (ext4 reuses them at once), so the number
// alone would take a later, valid state for the corrupt one. Its bytes
// decide; a file that cannot be read counts as corrupt.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
bool StateManager<L, S, P, F>::reads_as_state(int dir_fd) noexcept {
  Text text;
  FileInfo info;
  bool missing = false;
  if (!read_file(dir_fd, options_.file_name.c_str(), file_, text, info, missing) || missing)
    return false;
  ATOMIC_STATE_DETAIL_TRY {
    S state;
    Problem problem;
    std::int64_t version = 0;
    return decode(text.view(), state, problem, version) == detail::Decoded::valid;
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL { return false; }
}

// A state file of another user that the kernel refuses to link
// (fs.protected_hardlinks: after one run under sudo, say): the save goes
// on without .prev, warned. Only this save: the file it writes is this
// user's own, and the next save links it. The state matters more than its
// backup, and a save that failed here would fail every run from now on.
// An older .prev, kept by an earlier save, would be two states back once
// this save replaces the state, and a load of a corrupt state would go
// back that far as "the previous state": it is removed, the removal synced
// before the state is replaced. One that cannot be removed is left, and
// the warning says it is older (older_previous).
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::not_linked(int dir_fd, const FileInfo& current) noexcept {
  char why[128] = "the state file belongs to uid ";
  std::size_t size = std::strlen(why);
  size = static_cast<std::size_t>(std::to_chars(why + size, why + 64, current.owner).ptr - why);
  const std::string_view rest =
      ", and the kernel links only its owner's files (fs.protected_hardlinks)";
  std::memcpy(why + size, rest.data(), rest.size());
  size += rest.size();
  const Status status(Step::keep_previous, detail::system_error(-EPERM), file_, previous_file_,
                      false, nullptr, std::string_view(why, size));
  detail::Retrying<FsRef> fs(fs_);
  const int removed = fs.unlink(dir_fd, previous_name_.c_str());
  if (removed == 0 && P::directory)
    if (const int r = fs.sync_full(dir_fd); r < 0)
      return Status(Step::sync_directory, detail::system_error(r), dir_, previous_file_);
  ATOMIC_STATE_DETAIL_TRY {
    const std::string error = status.message();  // the fields only view it
    Field fields[4] = {{"path", file_}, {"previous", previous_file_}, {"error", error}};
    std::size_t count = 3;
    std::string older;
    if (removed == 0) {
      fields[count++] = Field("older_previous", "removed");
    } else if (removed != -ENOENT) {
      older = "not removed, so it is older than the state before this save: " +
              detail::system_error(removed).message();
      fields[count++] = Field("older_previous", older);
    }
    log(Level::warn, "previous state not kept", Fields(fields, count));
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL {}
  return {};
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::link_previous(int dir_fd) noexcept {
  const auto failed = [&](int neg_errno) {
    // ENOTSUP and EOPNOTSUPP are one value on Linux, two elsewhere.
    const bool no_links = neg_errno == -EPERM || neg_errno == -EOPNOTSUPP ||
#if ENOTSUP != EOPNOTSUPP
                          neg_errno == -ENOTSUP ||
#endif
                          neg_errno == -EMLINK;
    return Status(
        Step::keep_previous, detail::system_error(neg_errno), file_, previous_file_, false,
        no_links ? "StateOptions::keep_previous needs a filesystem with hard links" : nullptr);
  };
  detail::Retrying<FsRef> fs(fs_);
  const char* const name = options_.file_name.c_str();
  FileInfo current, kept;
  int r = fs.entry_info(dir_fd, name, current);
  if (r == -ENOENT) return {};
  if (r < 0) return failed(r);
  if (current.type != FileType::regular || (corrupt_.is(current) && !reads_as_state(dir_fd)))
    return {};
  if (fs.entry_info(dir_fd, previous_name_.c_str(), kept) >= 0 && kept.inode == current.inode &&
      kept.device == current.device)
    return {};
  char temp[12];
  for (int attempt = 0; attempt < ATOMIC_STATE_TEMP_NAME_ATTEMPTS; ++attempt) {
    detail::make_temp_name(temp);
    r = fs.link(dir_fd, name, temp);
    if (r == -EEXIST) continue;
    if (r == -ENOENT) return {};  // the state file went away: nothing to keep
    if (r == -EPERM && current.owner != static_cast<std::uint32_t>(::geteuid()))
      return not_linked(dir_fd, current);
    if (r < 0) return failed(r);
    r = fs.rename(dir_fd, temp, previous_name_.c_str());
    if (r == -ENOENT) continue;  // a sweep took the link for a stale temp file
    if (r < 0) {
      (void)fs.unlink(dir_fd, temp);
      return failed(r);
    }
    if (P::directory)
      if (r = fs.sync_full(dir_fd); r < 0)
        return Status(Step::sync_directory, detail::system_error(r), dir_, previous_file_);
    return {};
  }
  return failed(-EEXIST);
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

#elif defined(ATOMIC_STATE_NO_JSON)

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {
namespace detail {
template <class...>
inline constexpr bool json_left_out = false;
}  // namespace detail

/// Left out: what stands in its place says so in one line, where a
/// compiler would say "'StateManager' is not a member of 'atomic_state'".
template <class... Parameters>
class StateManager {
  static_assert(detail::json_left_out<Parameters...>,
                "atomic_state: StateManager needs Boost.JSON, left out by ATOMIC_STATE_NO_JSON "
                "(defined by you, or by Meson, which found no Boost.JSON)");

 public:
  template <class... Arguments>
  explicit StateManager(Arguments&&...) noexcept {}
};
template <class... Arguments>
StateManager(Arguments&&...) -> StateManager<>;

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state
#endif  // ATOMIC_STATE_NO_JSON

// ========================================================== include/atomic_state/epilogue.hpp ====

#undef ATOMIC_STATE_DETAIL_TRY
#undef ATOMIC_STATE_DETAIL_CATCH
#undef ATOMIC_STATE_DETAIL_CATCH_ALL
#undef ATOMIC_STATE_DETAIL_LOG_SINK
#undef ATOMIC_STATE_DETAIL_PASTE6
#undef ATOMIC_STATE_DETAIL_ABI_NAME
#undef ATOMIC_STATE_DETAIL_ABI
#undef ATOMIC_STATE_DETAIL_HAS_FDATASYNC
#undef ATOMIC_STATE_DETAIL_HAS_SYNC_FILE_RANGE
#undef ATOMIC_STATE_DETAIL_HAS_UNNAMED_FILES
#undef ATOMIC_STATE_DETAIL_NO_BOOST_JSON
#undef ATOMIC_STATE_DETAIL_JSON

#endif  // ATOMIC_STATE_HPP_INCLUDED
