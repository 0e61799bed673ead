// The real kernel refusing a save, as root: a full tmpfs (ENOSPC, with a
// real short write at its edge), immutable files and directories (EPERM),
// a read-only bind mount (EROFS), an unprivileged user (EACCES) and a file
// bind-mounted over the target (EBUSY).
// Each scenario runs in a private mount namespace, so nothing it mounts can
// outlive it. Where the machine refuses the setup, the scenario prints why
// and exits 77, which Meson reports as skipped, never as passed.
//
//   kernel-failures enospc|eperm|erofs|eacces|ebusy
#include <fcntl.h>
#include <grp.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "atomic_state.hpp"
#include "support/checks.hpp"
#include "support/child.hpp"
#include "support/files.hpp"
#include "support/mounts.hpp"

namespace {

using atomic_state::Status;
using atomic_state::Step;
using test::read_file;

using test::check;
using test::failures;
using test::kSkip;
using test::skip;

/// The failure a save must show: this step and errno, old bytes kept, no
/// temp file left, no descriptor leaked.
void expect_refused(const char* what, const test::fs::path& target, const Status& status, Step step,
                    int error, const std::string& old_content, int fds_before) {
  std::printf("  %s: %s\n", what, status.message().c_str());
  check(!status.ok(), std::string(what) + ": the save fails");
  check(status.step() == step,
        std::string(what) + ": at step '" + std::string(atomic_state::to_string(step)) + "'");
  check(status.code().value() == error, std::string(what) + ": with " + std::strerror(error));
  check(status.message().find(std::strerror(error)) != std::string::npos,
        std::string(what) + ": the message gives the reason");
  if (old_content.empty())
    check(!test::fs::exists(target), std::string(what) + ": no target appears");
  else
    check(read_file(target) == old_content, std::string(what) + ": the target is unchanged");
  check(test::temp_files_in(target.parent_path()).empty(),
        std::string(what) + ": no temp file is left");
  check(test::open_fd_count() == fds_before, std::string(what) + ": no descriptor leaks");
}

/// A PosixFs that remembers what each write asked for and got.
struct RecordingFs : atomic_state::PosixFs {
  std::vector<std::pair<std::size_t, ssize_t>> writes;
  ssize_t write(int fd, const void* data, std::size_t size) noexcept {
    const ssize_t n = PosixFs::write(fd, data, size);
    writes.emplace_back(size, n);
    return n;
  }
};

void private_mounts() {
  if (::geteuid() != 0) skip("needs root to mount and to change users");
  std::string why;
  if (!test::private_mount_namespace(why)) skip(why);
}

void mount_tmpfs(const test::fs::path& at, const char* options) {
  test::fs::create_directories(at);
  std::string why;
  if (!test::mount_tmpfs(at, options, why)) skip(why);
}

bool set_immutable(const test::fs::path& path, bool on) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  int flags = 0;
  bool ok = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
  flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
  ok = ok && ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
  ::close(fd);
  return ok;
}

void enospc(const test::TempDir& dir) {
  const auto mnt = dir / "small";
  mount_tmpfs(mnt, "size=64k,mode=0755");
  const auto target = mnt / "state.json";
  test::write_plain(target, "old state");
  const int fds = test::open_fd_count();

  atomic_state::AtomicWriter<atomic_state::FullSync, RecordingFs> writer;
  const std::string too_big(200 * 1024, 'x');
  expect_refused("200 KiB into a 64 KiB tmpfs", target, writer.write(target, too_big),
                 Step::write_data, ENOSPC, "old state", fds);
  bool short_write_seen = false;
  for (const auto& [asked, got] : writer.filesystem().writes)
    short_write_seen |= got > 0 && static_cast<std::size_t>(got) < asked;
  check(short_write_seen, "the kernel returned a real short write before ENOSPC");

  const std::string fits(32 * 1024, 'y');
  check(atomic_state::write_atomic(target, fits).ok(),
        "the space of the failed save was freed: 32 KiB fits afterwards");
  check(read_file(target) == fits, "and arrives whole");
}

void eperm(const test::TempDir& dir) {
  const auto mnt = dir / "attrs";
  mount_tmpfs(mnt, "size=1m,mode=0755");
  const auto target = mnt / "state.json";
  test::write_plain(target, "old state");
  if (!set_immutable(target, true))
    skip(std::string("this filesystem refuses chattr +i: ") + std::strerror(errno));
  int fds = test::open_fd_count();
  expect_refused("immutable target", target, atomic_state::write_atomic(target, "new"),
                 Step::rename, EPERM, "old state", fds);
  set_immutable(target, false);

  if (!set_immutable(mnt, true)) skip("cannot make the directory immutable");
  fds = test::open_fd_count();
  expect_refused("immutable directory", target, atomic_state::write_atomic(target, "new"),
                 Step::create_temp_file, EPERM, "old state", fds);
  set_immutable(mnt, false);
}

void erofs(const test::TempDir& dir) {
  const auto src = dir / "rw";
  const auto ro = dir / "ro";
  test::fs::create_directories(src);
  test::fs::create_directories(ro);
  test::write_plain(src / "state.json", "old state");
  if (::mount(src.c_str(), ro.c_str(), nullptr, MS_BIND, nullptr) != 0 ||
      ::mount(nullptr, ro.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
    skip(std::string("cannot make a read-only bind mount: ") + std::strerror(errno));
  int fds = test::open_fd_count();
  expect_refused("read-only bind mount", ro / "state.json",
                 atomic_state::write_atomic(ro / "state.json", "new"), Step::create_temp_file,
                 EROFS, "old state", fds);
  fds = test::open_fd_count();
  const auto nested = ro / "new" / "state.json";
  const Status status = atomic_state::write_atomic(nested, "new");
  std::printf("  first save into a missing directory: %s\n", status.message().c_str());
  check(status.step() == Step::create_directory && status.code().value() == EROFS,
        "a missing directory on a read-only mount: create directory, EROFS");
  check(!test::fs::exists(ro / "new") && test::open_fd_count() == fds,
        "nothing created, no descriptor leaked");
}

void eacces(const test::TempDir& dir) {
  const auto target = dir / "state.json";
  test::write_plain(target, "old state");
  ::chmod(dir.path().c_str(), 0755);
  test::Child child;
  const pid_t pid = child.fork();
  if (pid < 0) skip(std::string("cannot fork: ") + std::strerror(errno));
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0)
      std::_Exit(kSkip);
    child.die_with_parent();  // again: the change of user undid it
    const int fds = test::open_fd_count();
    expect_refused("unprivileged user, root's directory", target,
                   atomic_state::write_atomic(target, "new"), Step::create_temp_file, EACCES,
                   "old state", fds);
    const Status nested = atomic_state::write_atomic(dir / "sub" / "f", "new");
    std::printf("  missing directory: %s\n", nested.message().c_str());
    check(nested.step() == Step::create_directory && nested.code().value() == EACCES,
          "unprivileged user, missing directory: create directory, EACCES");
    std::fflush(stdout);
    std::_Exit(failures == 0 ? 0 : 1);
  }
  const int code = test::exit_code(child.wait());
  if (code == kSkip) skip("cannot drop to uid 65534");
  check(code == 0, "the unprivileged child saw EACCES");
  check(read_file(target) == "old state", "the target is unchanged");
}

// A single file bind-mounted over the target, as Docker does with -v
// file:file: the kernel will not rename over a mount point.
void ebusy(const test::TempDir& dir) {
  const auto target = dir / "state.json";
  test::write_plain(target, "old state");
  test::write_plain(dir / "host-copy", "old state");
  if (::mount((dir / "host-copy").c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0)
    skip(std::string("cannot bind-mount a file: ") + std::strerror(errno));
  const int fds = test::open_fd_count();
  expect_refused("file bind-mounted over the target", target,
                 atomic_state::write_atomic(target, "new"), Step::rename, EBUSY, "old state", fds);
  ::umount2(target.c_str(), MNT_DETACH);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view which = argc > 1 ? argv[1] : "";
  void (*scenario)(const test::TempDir&) = which == "enospc"   ? enospc
                                           : which == "eperm"  ? eperm
                                           : which == "erofs"  ? erofs
                                           : which == "eacces" ? eacces
                                           : which == "ebusy"  ? ebusy
                                                               : nullptr;
  if (scenario == nullptr) {
    std::fprintf(stderr, "usage: kernel-failures enospc|eperm|erofs|eacces|ebusy\n");
    return 2;
  }
  private_mounts();
  {
    test::TempDir dir;
    scenario(dir);
    // Mounts vanish with the namespace; unmount now so the directory can go.
    for (const char* sub : {"small", "attrs", "ro"}) ::umount2((dir / sub).c_str(), MNT_DETACH);
  }
  std::printf("%s: %d failure(s)\n", argv[1], failures);
  return failures == 0 ? 0 : 1;
}
