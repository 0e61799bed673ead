// An LD_PRELOAD shim for tests/collector_test.sh: from the Nth call on
// (N = $FAIL_SYNC_FROM, default 1), fsync and fdatasync fail with EIO, as
// on a disk that reports a write error. In the collector's batch the first
// sync is the summary's temp file and the second the state's, both before
// any rename: FAIL_SYNC_FROM=2 fails the batch on its last file, where two
// separate saves would already have replaced the summary.
#include <cerrno>
#include <cstdlib>

namespace {
int fail_or_count() {
  static long calls = 0;
  static const long from = [] {
    const char* text = std::getenv("FAIL_SYNC_FROM");
    const long n = text != nullptr ? std::strtol(text, nullptr, 10) : 1;
    return n > 0 ? n : 1;
  }();
  if (++calls < from) return 0;
  errno = EIO;
  return -1;
}
}  // namespace

// The real calls, for the syncs before the Nth.
extern "C" int syncfs(int fd);

extern "C" int fsync(int fd) {
  if (fail_or_count() < 0) return -1;
  return syncfs(fd);  // durable enough for a test, and needs no dlsym
}

extern "C" int fdatasync(int fd) {
  if (fail_or_count() < 0) return -1;
  return syncfs(fd);
}
