// Mounts of a test's own, as root: a private mount namespace (nothing the
// test mounts outlives it or is seen outside it), tmpfs mounts in it, a
// tmpfs at /dev/shm that is the test's own rather than whatever the
// machine has there, and filesystems (ext4, xfs, btrfs) made in an image
// file and mounted through a loop device.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

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

/// The program `name` in $PATH or in the sbin directories (where mkfs.*
/// are, and a PATH may not look); "" when there is none.
inline std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = std::string(path != nullptr ? path : "") + ":/usr/sbin:/sbin:/usr/bin:/bin";
  std::istringstream each(dirs);
  for (std::string dir; std::getline(each, dir, ':');) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

/// Runs the program `argv[0]` (a path) with `argv`, its output and errors
/// to `output`; its exit status, -1 when it did not run to an end.
inline int run_program(const std::vector<std::string>& argv, std::string& output) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return -1;
  }
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  char buffer[512];
  for (;;) {
    const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
    if (n > 0)
      output.append(buffer, static_cast<std::size_t>(n));
    else if (n == 0 || errno != EINTR)
      break;
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// Makes a filesystem of `type` ("ext4", "xfs" or "btrfs") in a new sparse
/// image file `image`, as small as its mkfs allows (ext4 64 MiB, btrfs 128,
/// xfs 300), and mounts it at the directory `at` through a loop device that
/// is let go when it is unmounted (`mount -o loop`): in a private mount
/// namespace (private_mount_namespace), gone with the test. False, with
/// `why`, where the machine cannot: not root, no loop devices, no mkfs for
/// the type (the Debian package is named), or the kernel refuses.
inline bool mount_image(const std::filesystem::path& image, const std::string& type,
                        const std::filesystem::path& at, std::string& why) {
  struct Kind {
    const char* type;
    unsigned mib;
    const char* force;
    const char* package;
  };
  static const Kind kinds[] = {{"ext4", 64, "-F", "e2fsprogs"},
                               {"xfs", 300, "-f", "xfsprogs"},
                               {"btrfs", 128, "-f", "btrfs-progs"}};
  const Kind* kind = nullptr;
  for (const Kind& k : kinds)
    if (type == k.type) kind = &k;
  if (kind == nullptr) {
    why = "no image of a filesystem of type " + type + " (ext4, xfs or btrfs)";
    return false;
  }
  if (::geteuid() != 0) {
    why = "needs root to mount a loop device";
    return false;
  }
  if (::access("/dev/loop-control", F_OK) != 0) {
    why = "no loop devices here (no /dev/loop-control)";
    return false;
  }
  const std::string mkfs = find_program("mkfs." + type), mount = find_program("mount");
  if (mkfs.empty()) {
    why = "no mkfs." + type + " (Debian package " + kind->package + ")";
    return false;
  }
  if (mount.empty()) {
    why = "no mount program (Debian package mount)";
    return false;
  }
  std::error_code ec;
  { std::ofstream(image, std::ios::binary | std::ios::trunc); }
  std::filesystem::resize_file(image, std::uintmax_t{kind->mib} << 20, ec);
  if (ec) {
    why = "cannot make the image " + image.string() + ": " + ec.message();
    return false;
  }
  const auto run = [&](const std::vector<std::string>& argv) {
    std::string output;
    const int status = run_program(argv, output);
    if (status == 0) return true;
    while (!output.empty() && output.back() == '\n') output.pop_back();
    why = argv[0] + " failed (exit status " + std::to_string(status) + ")" +
          (output.empty() ? "" : ": " + output.substr(output.rfind('\n') + 1));
    return false;
  };
  return run({mkfs, "-q", kind->force, image.string()}) &&
         run({mount, "-t", type, "-o", "loop", image.string(), at.string()});
}

}  // namespace test
