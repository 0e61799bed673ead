// SnapshotWriter against real processes: a child publishing snapshots in a
// loop is killed with SIGKILL at random moments, while a reader process
// opens DIR/current once per read and reads the files relative to it.
//
//   snapshot-process-tests kill BASE [KILLS]   in a fresh directory under
//                                              BASE (default 300 kills)
//   snapshot-process-tests kill-shm [KILLS]    the same on /dev/shm: as
//                                              root, a tmpfs of its own
//                                              mounted there
//
// Each kill waits until the publisher has shown progress (it opened; one
// kill in four, it published once), then a random time within one publish
// at the pace measured so far (test::KillPace), so the kills land inside
// publishes however slow the machine is. What only says the test did its
// work (current moved on, the reader read) is retried with more kills, or
// waited for, then reported, never failed.
//
// Each generation holds four files that all carry its number ("gen N",
// then filler), so a reader can tell one whole set from a mix or a torn
// file; it checks too that the directory it opened is gen-N. Every other
// read holds a SnapshotReader's lease, and must never be overtaken; a
// plain read that a publisher overtook (its generation pruned while it
// read: keep 2, two publishes) is counted, not failed: keep covers one
// publish. After every kill the lock is free at once, and a new open
// leaves no temp link, no half-built or half-removed generation, no
// generation newer than current, at most `keep` generations and the one a
// reader's lease holds, current a whole generation, and no stale claim
// (.tmp-) of the killed writer.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "atomic_state.hpp"
#include "support/checks.hpp"
#include "support/child.hpp"
#include "support/files.hpp"
#include "support/mounts.hpp"

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

// Sends the time to the test once open, then after each publish.
[[noreturn]] void publish_forever(const std::string& dir, const test::Child& self) {
  auto writer = as::SnapshotWriter<>::open(dir);
  if (!writer) std::_Exit(3);
  self.send(test::now_ns());
  for (;;) {
    const std::uint64_t n = writer->current() + 1;
    for (const char* name : kNames)
      if (!writer->add(name, content(n, name))) std::_Exit(4);
    if (!writer->publish()) std::_Exit(5);
    self.send(test::now_ns());
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

// What the reader sends when it has read a generation, before its counts
// (never negative).
constexpr std::int64_t kReaderRead = -1;

/// Until SIGTERM; then sends its counts (reads, overtaken, not one whole
/// set) to the test, and prints them.
[[noreturn]] void read_forever(const std::string& dir, const test::Child& self) {
  const std::string current = dir + "/current";
  std::int64_t reads = 0, overtaken = 0, bad = 0;
  std::uint64_t last = 0;
  static volatile sig_atomic_t stop = 0;
  struct sigaction on_term {};
  on_term.sa_handler = [](int) { stop = 1; };
  ::sigaction(SIGTERM, &on_term, nullptr);
  while (!stop) {
    // Every other read holds a SnapshotReader's lease: never overtaken.
    const bool leased = reads % 2 == 1;
    std::optional<as::SnapshotReader<>> lease;
    int g = -1;
    if (leased) {
      auto opened = as::SnapshotReader<>::open(dir);
      if (!opened) {
        // Before the first publish current is missing; nothing else may fail.
        if (opened.status().step() != as::Step::open_file && ++bad <= 3)
          std::printf("FAIL - reader: no lease: %s\n", opened.status().message().c_str());
        continue;
      }
      lease.emplace(std::move(*opened));
      g = lease->descriptor();
    } else {
      g = ::open(current.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (g < 0) continue;  // before the first publish
    }
    char where[4096];
    const std::string proc = "/proc/self/fd/" + std::to_string(g);
    const ssize_t len = ::readlink(proc.c_str(), where, sizeof where - 1);
    std::string path = len > 0 ? std::string(where, static_cast<std::size_t>(len)) : "";
    if (const auto deleted = path.rfind(" (deleted)"); deleted != std::string::npos)
      path.resize(deleted);  // removed since: its files are read all the same
    std::string base = path.substr(path.rfind('/') + 1);
    if (base.rfind(".removing-", 0) == 0) base.erase(0, 10);  // being pruned under the reader
    const std::uint64_t n = leased ? lease->generation() : as::detail::generation_of(base);
    bool missing = false, whole = n != 0;
    for (const char* name : kNames) {
      int error = 0;
      const std::string data = read_at(g, name, error);
      if (error == ENOENT)
        missing = true;
      else if (data != content(n, name))
        whole = false;
    }
    if (leased)
      lease.reset();
    else
      ::close(g);
    if (reads++ == 0) self.send(kReaderRead);
    // Pruned under the reader (its files go first, then its directory):
    // two publishes or more since it opened current, more than keep 2 covers.
    char now[64];
    const ssize_t now_len = ::readlink(current.c_str(), now, sizeof now - 1);
    const std::uint64_t latest =
        now_len > 0 ? as::detail::generation_of(std::string(now, static_cast<std::size_t>(now_len)))
                    : 0;
    if (missing && whole && latest >= n + 2 && !leased) {
      ++overtaken;
    } else if (!whole || missing || n < last) {
      if (++bad <= 3)
        std::printf("FAIL - reader: %s is not one whole generation (%s, current now gen-%llu)\n",
                    path.c_str(), missing ? "a file missing" : "a file torn or of another set",
                    static_cast<unsigned long long>(latest));
    }
    if (n > last) last = n;
  }
  std::printf("reader: %lld reads, %lld overtaken by two publishes, %lld not one whole set\n",
              static_cast<long long>(reads), static_cast<long long>(overtaken),
              static_cast<long long>(bad));
  self.send(reads);
  self.send(overtaken);
  self.send(bad);
  std::fflush(stdout);
  std::_Exit(0);
}

void kill_loop(const std::string& base, int kills) {
  std::string pattern = base + "/snapshot-kill.XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) test::skip("cannot make a directory in " + base);
  const std::string dir = pattern;
  test::Child reader;
  const pid_t reader_pid = reader.fork();
  if (reader_pid < 0) test::skip(std::string("cannot fork: ") + std::strerror(errno));
  if (reader_pid == 0) read_forever(dir, reader);

  test::KillPace pace(12345);
  int killed = 0, published = 0, lock_busy = 0, stale_claims = 0, bad_after = 0, links_left = 0;
  std::uint64_t last_current = 0;
  int k = 0;
  for (; k < kills || (published == 0 && k < 2 * kills); ++k) {
    test::Child child;
    const pid_t pid = child.fork();
    if (pid < 0) test::skip(std::string("cannot fork: ") + std::strerror(errno));
    if (pid == 0) publish_forever(dir, child);
    if (!pace.wait(child)) {
      std::printf("kill %d: the publisher ended before it was killed, exit code %d\n", k,
                  test::exit_code(child.wait()));
      continue;
    }
    pace.delay();
    killed += test::exit_code(child.kill()) == 128 + SIGKILL;
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
      if (name.rfind(".current.tmp-", 0) == 0 || name.rfind(".building-gen-", 0) == 0 ||
          name.rfind(".removing-gen-", 0) == 0)
        ++links_left;
      if (const std::uint64_t n = as::detail::generation_of(name); n != 0) {
        ++generations;
        if (n > current) ++bad_after;
      }
    }
    // keep 2, and the one a reader's lease may hold at this moment
    if (generations > 3) ++bad_after;
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
  // The reader has read a generation once (a minute at most: it reads all
  // the time, and there is one when a publish completed), then it stops
  // and counts.
  std::int64_t mark = 0;
  const bool read_once = reader.receive_within(mark, 60000) && mark == kReaderRead;
  reader.signal(SIGTERM);
  std::int64_t counts[3] = {-1, -1, -1};  // reads, overtaken, not one whole set
  bool reported = true;
  for (std::int64_t& count : counts) {
    reported = reported && reader.receive(count);
    if (reported && count == kReaderRead) reported = reader.receive(count);  // the mark, late
  }
  const int reader_exit = test::exit_code(reader.wait());
  std::printf(
      "%d kills in %s: current moved on after %d of them; a publish took %.0f us on average\n", k,
      base.c_str(), published, pace.unit_ns() / 1000);
  check(killed == k, "every publisher was still publishing when it was killed");
  check(lock_busy == 0, "after every kill the lock is free at once");
  check(bad_after == 0, "after every kill: current one whole generation, nothing newer, " +
                            std::to_string(bad_after) + " problems");
  check(links_left == 0,
        "no temp link, half-built or half-removed generation survives the next open");
  check(stale_claims == 0,
        "no killed publisher's claim (.tmp-) survives the next open (left after " +
            std::to_string(stale_claims) + " kills)");
  check(reported && reader_exit == 0, "the reader ran to the end and reported its counts");
  check(counts[2] == 0, "the reader saw one whole generation at every read");
  test::lively(published > 0, "the publisher got work done between kills");
  test::lively(read_once && counts[0] > 0, "the reader read generations that publishes made");
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string what = argc > 1 ? argv[1] : "";
  if (what == "kill" && argc > 2) {
    kill_loop(argv[2], argc > 3 ? std::atoi(argv[3]) : 300);
  } else if (what == "kill-shm") {
    std::string why;
    if (!test::tmpfs_at_dev_shm("size=64m,mode=1777", why)) test::skip(why);
    kill_loop("/dev/shm", argc > 2 ? std::atoi(argv[2]) : 300);
  } else {
    std::fprintf(stderr, "usage: snapshot-process-tests kill BASE [KILLS] | kill-shm [KILLS]\n");
    return 2;
  }
  return failures == 0 ? 0 : 1;
}
