// Real-filesystem helpers shared by the tests, and one for text.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace test {

namespace fs = std::filesystem;

/// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/atomic_state_test.XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  fs::path operator/(const fs::path& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// Whether `text` holds `part` (a message, a file's bytes).
inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// Writes a file the plain way, for setting up a test's starting state.
inline void write_plain(const fs::path& path, std::string_view data, mode_t mode = 0644) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(data.data(), static_cast<std::streamsize>(data.size()));
  ::chmod(path.c_str(), mode);
}

/// Sets the modification time of `path` (of what a symlink there leads
/// to), in unix seconds.
inline void set_mtime(const fs::path& path, std::int64_t seconds) {
  struct timespec times[2];
  times[0].tv_sec = static_cast<time_t>(seconds);
  times[0].tv_nsec = 0;
  times[1] = times[0];
  ::utimensat(AT_FDCWD, path.c_str(), times, 0);
}

/// The modification time the tests give a state file they plant
/// (2025-11-24T16:00:00Z): it names the file's corrupt copy.
inline constexpr std::int64_t kStamp = 1764000000;

/// Whether anything is at `path`, a dangling symlink included.
inline bool present(const fs::path& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

/// The permission bits of `path` (not following a symlink); ~0u when it
/// cannot be examined, which matches no mode a test expects.
inline unsigned mode_of(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return ~0u;
  return st.st_mode & 07777u;
}

/// Names in `dir` that match the library's temp pattern.
inline std::vector<std::string> temp_files_in(const fs::path& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0) found.push_back(name);
  }
  return found;
}

/// Every name in `dir`, for "nothing else was created" checks.
inline std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    found.push_back(entry.path().filename().string());
  return found;
}

/// Descriptors open in this process right now.
inline int open_fd_count() {
  int count = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++count;
    ::closedir(d);
    return count - 1;  // the descriptor opendir itself holds
  }
  return -1;
}

/// Sets the umask for one scope.
class UmaskGuard {
 public:
  explicit UmaskGuard(mode_t mask) : saved_(::umask(mask)) {}
  ~UmaskGuard() { ::umask(saved_); }
  UmaskGuard(const UmaskGuard&) = delete;
  UmaskGuard& operator=(const UmaskGuard&) = delete;

 private:
  mode_t saved_;
};

/// TempDirs on /dev/shm while it lives, when that is a writable tmpfs: fault
/// cases make thousands of saves, each syncing, which on a disk take minutes
/// and on a tmpfs seconds, with the same calls and failures (FaultFs fails
/// them before the kernel sees them). TempDir follows TMPDIR.
class OnTmpfs {
 public:
  OnTmpfs() {
    const char* old = std::getenv("TMPDIR");
    if (old != nullptr) saved_ = old;
    had_ = old != nullptr;
    struct statfs st {};
    if (::statfs("/dev/shm", &st) == 0 && st.f_type == 0x01021994 /* TMPFS_MAGIC */ &&
        ::access("/dev/shm", W_OK) == 0)
      ::setenv("TMPDIR", "/dev/shm", 1);
  }
  ~OnTmpfs() {
    if (had_)
      ::setenv("TMPDIR", saved_.c_str(), 1);
    else
      ::unsetenv("TMPDIR");
  }
  OnTmpfs(const OnTmpfs&) = delete;
  OnTmpfs& operator=(const OnTmpfs&) = delete;

 private:
  std::string saved_;
  bool had_ = false;
};

}  // namespace test
