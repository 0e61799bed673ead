// SnapshotWriter against real processes: a child publishing snapshots in a
// loop is killed with SIGKILL at random moments, while a reader process
// opens DIR/current once per read and reads the files relative to it.
//
//   snapshot-process-tests kill BASE [KILLS]   in a fresh directory under
//                                              BASE (default 300 kills)
//
// Each generation holds four files that all carry its number ("gen N",
// then filler), so a reader can tell one whole set from a mix or a torn
// file; it checks too that the directory it opened is gen-N. A reader that
// a publisher overtook (its generation pruned while it read: keep 2, two
// publishes) is counted, not failed: keep covers one publish. After every
// kill the lock is free at once, and a new open leaves no temp link, no
// generation newer than current, at most `keep` generations, current a
// whole generation, and no stale claim (.tmp-) of the killed writer.
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "atomic_state.hpp"
#include "support/checks.hpp"
#include "support/files.hpp"

namespace {

namespace as = atomic_state;
using test::check;
using test::failures;
namespace fs = std::filesystem;

const char* const kNames[] = {"a", "b", "c", "d"};

std::string content(std::uint64_t n, const char* name) {
  return "gen " + std::to_string(n) + "\n" +
         std::string(static_cast<std::size_t>(100 + 300 * (name[0] - 'a')), name[0]);
}

[[noreturn]] void publish_forever(const std::string& dir) {
  auto writer = as::SnapshotWriter<>::open(dir);
  if (!writer) std::_Exit(3);
  for (;;) {
    const std::uint64_t n = writer->current() + 1;
    for (const char* name : kNames)
      if (!writer->add(name, content(n, name))) std::_Exit(4);
    if (!writer->publish()) std::_Exit(5);
  }
}

std::string read_at(int dir_fd, const char* name, int& error) {
  const int fd = ::openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = errno;
    return {};
  }
  std::string data;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;)
    data.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  return data;
}

/// 0 when every read was one whole generation; counts on stdout.
[[noreturn]] void read_forever(const std::string& dir) {
  const std::string current = dir + "/current";
  long reads = 0, overtaken = 0, bad = 0;
  std::uint64_t last = 0;
  static volatile sig_atomic_t stop = 0;
  struct sigaction on_term {};
  on_term.sa_handler = [](int) { stop = 1; };
  ::sigaction(SIGTERM, &on_term, nullptr);
  while (!stop) {
    const int g = ::open(current.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g < 0) continue;  // before the first publish
    char where[4096];
    const std::string proc = "/proc/self/fd/" + std::to_string(g);
    const ssize_t len = ::readlink(proc.c_str(), where, sizeof where - 1);
    std::string path = len > 0 ? std::string(where, static_cast<std::size_t>(len)) : "";
    if (const auto deleted = path.rfind(" (deleted)"); deleted != std::string::npos)
      path.resize(deleted);  // removed since: its files are read all the same
    const std::uint64_t n = as::detail::generation_of(path.substr(path.rfind('/') + 1));
    bool missing = false, whole = n != 0;
    for (const char* name : kNames) {
      int error = 0;
      const std::string data = read_at(g, name, error);
      if (error == ENOENT)
        missing = true;
      else if (data != content(n, name))
        whole = false;
    }
    ::close(g);
    ++reads;
    // Pruned under the reader (its files go first, then its directory):
    // two publishes or more since it opened current, more than keep 2 covers.
    char now[64];
    const ssize_t now_len = ::readlink(current.c_str(), now, sizeof now - 1);
    const std::uint64_t latest =
        now_len > 0 ? as::detail::generation_of(std::string(now, static_cast<std::size_t>(now_len)))
                    : 0;
    if (missing && whole && latest >= n + 2) {
      ++overtaken;
    } else if (!whole || missing || n < last) {
      if (++bad <= 3)
        std::printf("FAIL - reader: %s is not one whole generation (%s, current now gen-%llu)\n",
                    path.c_str(), missing ? "a file missing" : "a file torn or of another set",
                    static_cast<unsigned long long>(latest));
    }
    if (n > last) last = n;
  }
  std::printf("reader: %ld reads, %ld overtaken by two publishes, %ld not one whole set\n", reads,
              overtaken, bad);
  std::fflush(stdout);
  std::_Exit(bad == 0 && reads > 0 ? 0 : 1);
}

void kill_loop(const std::string& base, int kills) {
  std::string pattern = base + "/snapshot-kill.XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) test::skip("cannot make a directory in " + base);
  const std::string dir = pattern;
  const pid_t reader = ::fork();
  if (reader == 0) read_forever(dir);

  // A durable publish takes milliseconds on a disk, microseconds on tmpfs.
  struct statfs where {};
  const bool tmpfs = ::statfs(dir.c_str(), &where) == 0 && where.f_type == TMPFS_MAGIC;
  const unsigned window_us = tmpfs ? 3000 : 20000;
  std::mt19937 random(12345);
  int published = 0, lock_busy = 0, stale_claims = 0, bad_after = 0, links_left = 0;
  std::uint64_t last_current = 0;
  for (int i = 0; i < kills; ++i) {
    const pid_t child = ::fork();
    if (child == 0) publish_forever(dir);
    std::this_thread::sleep_for(std::chrono::microseconds(random() % window_us));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    if (!WIFSIGNALED(status)) {
      check(false, "the publisher died on its own, status " + std::to_string(status));
      continue;
    }
    // The next start: the lock free at once, the leftovers gone.
    auto writer = as::SnapshotWriter<>::open(dir);
    if (!writer) {
      ++lock_busy;
      if (lock_busy <= 3) check(false, "open after a kill: " + writer.status().message());
      continue;
    }
    const std::uint64_t current = writer->current();
    if (current > last_current) ++published;
    if (current < last_current) ++bad_after;
    last_current = current;
    std::size_t generations = 0;
    for (const std::string& name : test::names_in(dir)) {
      if (name.rfind(".current.tmp-", 0) == 0) ++links_left;
      if (const std::uint64_t n = as::detail::generation_of(name); n != 0) {
        ++generations;
        if (n > current) ++bad_after;
      }
    }
    if (generations > 2) ++bad_after;
    // The writer's own claim is one .tmp- file; any other is a killed one's.
    if (test::temp_files_in(dir).size() > 1) ++stale_claims;
    if (current != 0) {
      const int g = ::open((dir + "/current").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      for (const char* name : kNames) {
        int error = 0;
        if (read_at(g, name, error) != content(current, name)) ++bad_after;
      }
      ::close(g);
    }
  }
  ::kill(reader, SIGTERM);
  int status = 0;
  ::waitpid(reader, &status, 0);
  std::printf("%d kills in %s: current moved on after %d of them\n", kills, base.c_str(),
              published);
  check(published > 0, "the publisher got work done between kills");
  check(lock_busy == 0, "after every kill the lock is free at once");
  check(bad_after == 0, "after every kill: current one whole generation, nothing newer, " +
                            std::to_string(bad_after) + " problems");
  check(links_left == 0, "no temp link survives the next open");
  check(stale_claims == 0,
        "no killed publisher's claim (.tmp-) survives the next open (left after " +
            std::to_string(stale_claims) + " kills)");
  check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "the reader saw one whole generation at every read");
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 3 || std::string(argv[1]) != "kill") {
    std::fprintf(stderr, "usage: snapshot-process-tests kill BASE [KILLS]\n");
    return 2;
  }
  kill_loop(argv[2], argc > 3 ? std::atoi(argv[3]) : 300);
  return failures == 0 ? 0 : 1;
}
