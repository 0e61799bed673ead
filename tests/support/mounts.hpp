// Mounts of a test's own, as root: a private mount namespace (nothing the
// test mounts outlives it or is seen outside it), tmpfs mounts in it, and
// a tmpfs at /dev/shm that is the test's own rather than whatever the
// machine has there.
#pragma once

#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace test {

/// Moves this process into a mount namespace of its own whose mounts
/// propagate nowhere; false, with `why`, where the machine refuses.
inline bool private_mount_namespace(std::string& why) {
  if (::geteuid() != 0) {
    why = "needs root to mount";
    return false;
  }
  if (::unshare(CLONE_NEWNS) != 0) {
    why = std::string("cannot make a private mount namespace: ") + std::strerror(errno);
    return false;
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    why = std::string("cannot make mounts private: ") + std::strerror(errno);
    return false;
  }
  return true;
}

/// Mounts a fresh tmpfs at the directory `at`; false, with `why`, where
/// the kernel refuses.
inline bool mount_tmpfs(const std::filesystem::path& at, const char* options, std::string& why) {
  if (::mount("tmpfs", at.c_str(), "tmpfs", 0, options) == 0) return true;
  why = "cannot mount tmpfs on " + at.string() + ": " + std::strerror(errno);
  return false;
}

/// The type of the filesystem mounted where `path` is, as
/// /proc/self/mountinfo names it ("tmpfs", "devtmpfs", "ext4"); "" when it
/// cannot tell. statfs cannot: devtmpfs reports the tmpfs magic number.
inline std::string mount_type(const std::filesystem::path& path) {
  std::error_code ec;
  const std::string where = std::filesystem::canonical(path, ec).string();
  if (ec) return "";
  std::ifstream info("/proc/self/mountinfo");
  std::string line, type;
  std::size_t longest = 0;
  while (std::getline(info, line)) {
    // id parent major:minor root MOUNT-POINT options [tags...] - TYPE source ...
    std::istringstream fields(line);
    std::string skip, point, word;
    fields >> skip >> skip >> skip >> skip >> point;
    while (fields >> word && word != "-") {
    }
    if (!(fields >> word)) continue;
    for (std::size_t at; (at = point.find("\\040")) != std::string::npos;)
      point.replace(at, 4, " ");
    const bool under =
        point == "/" || where == point ||
        (where.rfind(point, 0) == 0 && where.size() > point.size() && where[point.size()] == '/');
    // A later mount over the same point hides the earlier one: >=, not >.
    if (under && point.size() >= longest) {
      longest = point.size();
      type = word;
    }
  }
  return type;
}

/// Where the tests "on /dev/shm" run: as root, a fresh tmpfs of the test's
/// own mounted over /dev/shm in a private mount namespace, so the test
/// neither depends on nor touches the machine's /dev/shm (in a chroot it is
/// often the host's devtmpfs); otherwise /dev/shm itself when it is a
/// writable tmpfs; otherwise false, with `why`. Says on stdout which.
inline bool tmpfs_at_dev_shm(const char* options, std::string& why) {
  std::string refused;
  if (private_mount_namespace(refused) && mount_tmpfs("/dev/shm", options, refused)) {
    std::printf("on a tmpfs of the test's own, mounted over /dev/shm in a private namespace\n");
    return true;
  }
  const std::string type = mount_type("/dev/shm");
  if (type == "tmpfs" && ::access("/dev/shm", W_OK) == 0) {
    std::printf("on the machine's /dev/shm (no tmpfs of its own: %s)\n", refused.c_str());
    return true;
  }
  why = "no tmpfs to run on: " + refused + "; and /dev/shm is " +
        (type.empty() ? std::string("not a mount this test can find")
                      : "on " + type + (type == "tmpfs" ? " but not writable" : ", not tmpfs"));
  return false;
}

}  // namespace test
