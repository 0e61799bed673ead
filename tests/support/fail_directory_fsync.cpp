// Preloaded into atomic-write by tests/cli_test.sh (LD_PRELOAD): fsync of a
// directory fails with EIO, every other fsync is the kernel's. The rename
// has then been done and the directory sync fails: exit status 3, the one
// outcome no real filesystem can be asked for.
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

extern "C" int fsync(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    errno = EIO;
    return -1;
  }
  return static_cast<int>(::syscall(SYS_fsync, fd));
}
