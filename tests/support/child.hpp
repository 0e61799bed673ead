// Forked children that cannot outlive their test, and the pace of a kill
// loop that does not depend on the machine's speed.
//
// A child left behind keeps the test's output pipe open, and `meson test`
// waits for it forever (a child stopped with SIGSTOP most surely). So
// every fork of the tests goes through test::Child: its destructor kills
// the child (SIGKILL, and SIGCONT for a stopped one) and reaps it on every
// path out of its scope, a failed REQUIRE's exception included; and the
// kernel kills the child when the test's process dies first (an abort, a
// signal, std::_Exit), through PR_SET_PDEATHSIG.
//
// Each child has a pipe to the test: the child sends numbers (that it is
// ready, that it finished a unit of work, its counts) and the test receives
// them. Only the child holds the pipe's write end, so once the child is
// gone the test sees the end of the pipe instead of waiting forever.
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace test {

/// A wait status as one number: the exit status, or 128 + the signal; -1
/// for no status.
inline int exit_code(int status) {
  if (status == -1) return -1;
  return WIFEXITED(status)     ? WEXITSTATUS(status)
         : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                               : -1;
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
inline std::int64_t now_ns() {
  struct timespec t {};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

class Child {
 public:
  Child() = default;
  ~Child() {
    kill();
    close_fd(read_);
    close_fd(write_);
  }
  Child(Child&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)),
        owner_(other.owner_),
        status_(other.status_),
        read_(std::exchange(other.read_, -1)),
        write_(std::exchange(other.write_, -1)) {}
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  Child& operator=(Child&&) = delete;

  /// Forks: 0 in the child, the child's pid in the test, -1 when the
  /// system refuses (errno says why). A child this guard had before is
  /// killed and reaped first.
  pid_t fork() {
    kill();
    close_fd(read_);
    close_fd(write_);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
    std::fflush(nullptr);  // or the child would print again what the test had buffered
    owner_ = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int error = errno;
      ::close(fds[0]);
      ::close(fds[1]);
      errno = error;
      return -1;
    }
    if (pid == 0) {
      ::close(fds[0]);
      write_ = fds[1];
      die_with_parent();
      return 0;
    }
    ::close(fds[1]);
    read_ = fds[0];
    pid_ = pid;
    return pid;
  }

  // ------------------------------------------------------- in the child --

  /// Has the kernel SIGKILL this child when the test's process ends.
  /// fork() does; a change of user or group undoes it (the kernel clears
  /// it), so a child that changes them calls this again.
  void die_with_parent() const {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != owner_) ::_exit(125);  // the test ended before this was set
  }

  /// Sends `value` to the test; false when the test no longer reads.
  bool send(std::int64_t value = 1) const {
    return ::write(write_, &value, sizeof value) == static_cast<ssize_t>(sizeof value);
  }

  // -------------------------------------------------------- in the test --

  /// The next value the child sent, waiting for it; false once the child
  /// is gone and sent nothing more.
  bool receive(std::int64_t& value) {
    char* at = reinterpret_cast<char*>(&value);
    std::size_t got = 0;
    while (got < sizeof value) {
      const ssize_t n = ::read(read_, at + got, sizeof value - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      got += static_cast<std::size_t>(n);
    }
    return true;
  }
  bool receive() {
    std::int64_t ignored = 0;
    return receive(ignored);
  }

  /// The same, waiting at most `ms` milliseconds for the value to start
  /// coming; false too when the time ran out.
  bool receive_within(std::int64_t& value, int ms) {
    struct pollfd p {};
    p.fd = read_;
    p.events = POLLIN;
    int r;
    while ((r = ::poll(&p, 1, ms)) < 0 && errno == EINTR) {
    }
    return r > 0 && receive(value);
  }

  pid_t pid() const { return pid_; }

  /// The wait status of the child once it ended and was reaped, else -1.
  int status() const { return status_; }

  /// Waits for the child to end and reaps it; its wait status, -1 when
  /// there is none.
  int wait() {
    if (pid_ <= 0 || ::getpid() != owner_) return -1;
    int status = 0;
    pid_t r;
    while ((r = ::waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    status_ = r < 0 ? -1 : status;
    return status_;
  }

  /// Waits for the child to stop (SIGSTOP) or end: true when it stopped
  /// (it is still this guard's to resume or kill), false when it ended
  /// (reaped: status() says how).
  bool wait_stopped() {
    if (pid_ <= 0 || ::getpid() != owner_) return false;
    int status = 0;
    pid_t r;
    while ((r = ::waitpid(pid_, &status, WUNTRACED)) < 0 && errno == EINTR) {
    }
    if (r == pid_ && WIFSTOPPED(status)) return true;
    pid_ = -1;
    status_ = r < 0 ? -1 : status;
    return false;
  }

  /// Whether the child is still running; one that ended is reaped.
  bool running() {
    if (pid_ <= 0 || ::getpid() != owner_) return false;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == 0) return true;
    pid_ = -1;
    status_ = r < 0 ? -1 : status;
    return false;
  }

  /// Sends `signal` to the child, leaving it to this guard.
  void signal(int signal) const {
    if (pid_ > 0 && ::getpid() == owner_) ::kill(pid_, signal);
  }

  /// SIGKILL (and SIGCONT, for a stopped child) and reap; the wait status,
  /// -1 when there was no child. Never another process's child: a copy
  /// inherited by a forked child does nothing.
  int kill() {
    if (pid_ <= 0 || ::getpid() != owner_) return -1;
    ::kill(pid_, SIGKILL);
    ::kill(pid_, SIGCONT);
    return wait();
  }

 private:
  static void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  pid_t pid_ = -1;
  pid_t owner_ = -1;  // the process that forked the child: only it kills and reaps
  int status_ = -1;
  int read_ = -1;
  int write_ = -1;
};

/// Where the kills of a kill loop land, the same on a fast machine and a
/// slow one. The child sends now_ns() when it is ready to start its work,
/// then again each time it finishes a unit of it (a save, a commit, a
/// publish). Each kill waits for the child to be ready, and one kill in
/// four (the first always) for it to finish a unit too: progress shown,
/// never a fixed window the machine may be too slow to fill. Then it sleeps
/// a random time within one unit at the pace measured so far (the child's
/// own times), so it lands anywhere inside the next unit however long a
/// unit takes here: in the child's first unit, or, after a unit finished,
/// in its second.
class KillPace {
 public:
  explicit KillPace(std::uint32_t seed) : random_(seed) {}

  /// Waits for the child to be ready and to finish the units this kill
  /// waits for; false when the child ended first.
  bool wait(Child& child) {
    const int units =
        measured_ == 0 || std::uniform_int_distribution<int>(0, 3)(random_) == 0 ? 1 : 0;
    std::int64_t last = 0;
    if (!child.receive(last)) return false;
    for (int i = 0; i < units; ++i) {
      std::int64_t done = 0;
      if (!child.receive(done)) return false;
      sum_ns_ += static_cast<double>(done - last);
      ++measured_;
      last = done;
    }
    return true;
  }

  /// Sleeps a random time within one unit of work.
  void delay() {
    std::uniform_real_distribution<double> ns(0.0, unit_ns());
    std::this_thread::sleep_for(std::chrono::nanoseconds(static_cast<std::int64_t>(ns(random_))));
  }

  /// The mean time of a unit of work so far (1 ms before any).
  double unit_ns() const { return measured_ == 0 ? 1e6 : sum_ns_ / static_cast<double>(measured_); }

 private:
  std::mt19937 random_;
  double sum_ns_ = 0;
  long measured_ = 0;
};

/// What only says a kill loop did its work (its kills landed inside saves,
/// work completed between them), once the loop has retried with more
/// kills: a slow or loaded machine may fall short of it without any fault
/// of the library, so it is reported, never failed.
inline void lively(bool ok, const std::string& what) {
  if (ok)
    std::printf("ok   - %s\n", what.c_str());
  else
    std::printf(
        "NOTE - %s: not on this machine, even with more kills (slow or loaded?); the "
        "checks above held, over fewer cases of this kind\n",
        what.c_str());
}

/// The exit status of a child that could not become the user run_as asked.
inline constexpr int kCannotSwitchUser = 77;

/// Runs `work` (an int-returning callable, the child's exit status; no
/// Catch2 macro inside it) in a forked child as the user `uid`, with group
/// `uid` and the supplementary groups `groups`; the child's exit code
/// (exit_code), kCannotSwitchUser when it could not become that user, -1
/// when there is no child.
template <class Work>
int run_as(uid_t uid, const std::vector<gid_t>& groups, Work&& work) {
  Child child;
  const pid_t pid = child.fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(uid, uid, uid) != 0 ||
        ::setresuid(uid, uid, uid) != 0)
      ::_exit(kCannotSwitchUser);
    child.die_with_parent();  // again: the change of user undid it
    ::_exit(work());
  }
  return exit_code(child.wait());
}

}  // namespace test
