// status.hpp: Step, Status, Result: what every operation returns
#ifndef ATOMIC_STATE_STATUS_HPP
#define ATOMIC_STATE_STATUS_HPP

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

#include "preamble.hpp"

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

#endif  // ATOMIC_STATE_STATUS_HPP
