// Preloaded into atomic-write by tests/cli_test.sh (LD_PRELOAD): fsync of a
// directory fails with EIO, every other fsync is the kernel's. The rename
// has then been done and the directory sync fails: exit status 3, the one
// outcome no real filesystem can be asked for. With $SHIM_RAISE set to a
// signal number, fsync of a file first sends the process that signal: one
// that arrives during the commit.
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>

extern "C" int fsync(int fd) {
  struct stat st {};
  const bool directory = ::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
  if (directory) {
    errno = EIO;
    return -1;
  }
  if (const char* sig = std::getenv("SHIM_RAISE")) (void)std::raise(std::atoi(sig));
  return static_cast<int>(::syscall(SYS_fsync, fd));
}
