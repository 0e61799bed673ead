// path.hpp: PathView and the checks of a path: paths taken without allocating
#ifndef ATOMIC_STATE_PATH_HPP
#define ATOMIC_STATE_PATH_HPP

#include <cstring>      // std::memcpy
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <type_traits>  // std::enable_if_t, std::is_convertible_v
#include <utility>      // std::declval

#include "fs.hpp"

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

#endif  // ATOMIC_STATE_PATH_HPP
