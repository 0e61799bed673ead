// StateManager against real processes: a child saving in a loop is killed
// with SIGKILL at random moments, and many writers (threads and processes)
// save to one file at once while a reader watches.
//
//   process-tests kill DIR [KILLS]   SIGKILL a saving child KILLS times
//                                    (default 1000) in DIR: half of them a
//                                    plain child, half a child that holds
//                                    the run lock and keeps the previous
//                                    state (StateOptions::keep_previous);
//                                    first, a run lock held by a child. Where
//                                    DIR makes unnamed files, the plain half
//                                    is shared with a plain child saving
//                                    through named temp files
//                                    (test::NamedTempFs), to compare
//   process-tests kill-tmpfs [KILLS] the same on a tmpfs of its own
//   process-tests kill-image TYPE [KILLS]   the same on a filesystem of TYPE
//                                    (ext4, xfs, btrfs) of its own, made in
//                                    an image on a loop device (as root)
//   process-tests batch-kill DIR [KILLS]   SIGKILL a child committing batches
//                                    (default 300), a reader process watching
//   process-tests batch-kill-shm [KILLS]   the same on /dev/shm (a tmpfs of
//                                    its own mounted there, as root)
//   process-tests kill-after-each-call DIR   a save, a state save and a batch
//                                    of two files in DIR, each in a child
//                                    that SIGKILLs itself right after its
//                                    k-th call, for every k
//   process-tests concurrent DIR     8 threads and 4 processes, 200 saves each
//
// Each kill waits until the child has shown progress (it is ready to save;
// one kill in four, it finished a save), then a random time within one save
// at the pace measured so far (test::KillPace): the kills land inside saves
// on a slow machine as on a fast one. The child also marks, in memory it
// shares with the test, the version each save is about to write and the one
// it wrote last (Progress): so the test knows where each kill landed (inside
// a save, before or after its rename) whatever temp files the save makes; an
// unnamed temp file leaves a name only between its naming and its rename,
// and a kill seldom lands there. What only says the test did its work (kills
// inside saves, on both sides of the rename, saves completed between kills)
// is retried with more kills, then reported, never failed; what the library
// promises always fails.
//
// After every kill the state must load, and be one of the versions the child
// wrote, no older than the one before: the last one a save returned, or the
// one the kill interrupted; the next manager's first load must have swept
// the kill's temp file. With keep_previous, the run lock the child held must
// be free at once, and state.json.prev must hold the version before the
// state's or the state's own. Every read during the concurrent saves, and
// the final file, must be one complete version.
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/checks.hpp"
#include "support/child.hpp"
#include "support/fault_fs.hpp"
#include "support/files.hpp"
#include "support/mounts.hpp"

namespace {

namespace as = atomic_state;
using Manager = as::StateManager<test::CaptureSink&>;

using test::check;
using test::failures;
using test::skip;

// Every field follows from the version number, so a reader can tell a
// complete version from anything else. The TVS has a full 53-bit mantissa.
as::State version(std::int64_t n) {
  as::State s;
  s.oracle_name =
      "oracle-" + std::to_string(n % 977) + std::string(static_cast<std::size_t>(n % 61), 'x');
  s.last_updated = n;
  s.last_updated_iso = as::to_rfc3339(n);
  s.last_protocol_count = n % 1000;
  s.last_tvs = static_cast<double>(n) / 3.0;
  s.snapshot_count = n % 7;
  s.oldest_snapshot = n - 3600;
  s.newest_snapshot = n;
  return s;
}

bool is_a_version(const as::State& s) {
  return s.last_updated == 0 || s == version(s.last_updated);
}

as::StateOptions keeping_previous() {
  as::StateOptions options;
  options.keep_previous = true;
  return options;
}

// What `dir`/state.json.prev holds: nothing (false), or a version in `out`
// (true); `whole` says whether it read as one.
bool read_previous(const test::fs::path& dir, as::State& out, bool& whole) {
  std::error_code ec;
  if (!test::fs::exists(dir / "state.json.prev", ec)) return false;
  whole = false;
  const auto value = as::parse_json(test::read_file(dir / "state.json.prev"));
  if (!value) return true;
  auto state = boost::json::try_value_to<as::State>(*value);
  if (!state) return true;
  out = *state;
  whole = out.last_updated != 0 && is_a_version(out);
  return true;
}

// Whether `message` names the holder `pid` exactly ("held by pid 123", not
// a prefix of "held by pid 1234").
bool names_holder(const std::string& message, pid_t pid) {
  const std::string holder = "held by pid " + std::to_string(pid);
  const std::size_t at = message.find(holder);
  return at != std::string::npos &&
         (at + holder.size() == message.size() ||
          !std::isdigit(static_cast<unsigned char>(message[at + holder.size()])));
}

// Where a child's work stood when it was killed, whatever files the work
// makes: the child marks the version (or generation) each save is about to
// write, and the one it wrote last, in memory it shares with the test, which
// reads them once the child is dead. 32 bits, less a base (the versions
// stay within 2^31 of it): lock-free, so never torn by the kill, on every
// target.
class Progress {
 public:
  explicit Progress(std::int64_t base) : base_(base) {
    void* at =
        ::mmap(nullptr, sizeof(Marks), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (at == MAP_FAILED) test::skip(std::string("cannot share memory: ") + std::strerror(errno));
    marks_ = new (at) Marks;
  }
  ~Progress() { ::munmap(marks_, sizeof(Marks)); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  /// Before each child: nothing begun, nothing done.
  void reset() {
    marks_->begun = 0;
    marks_->done = 0;
  }
  // In the child, around each save of `n`.
  void begin(std::int64_t n) { marks_->begun = mark(n); }
  void end(std::int64_t n) { marks_->done = mark(n); }

  // In the test, once the child is dead: the last save begun and the last
  // one that returned, 0 for none.
  std::int64_t begun() const { return value(marks_->begun); }
  std::int64_t done() const { return value(marks_->done); }
  /// The kill came inside a save: after it began, before it returned.
  bool inside() const { return begun() != done(); }
  /// What the state may hold after the kill, `before` what it held before
  /// the child: what the last save that returned wrote, or what the save
  /// the kill interrupted was writing. A kill never undoes a save that
  /// returned, and never leaves anything else.
  bool allows(std::int64_t found, std::int64_t before) const {
    return found == (done() != 0 ? done() : before) || (inside() && found == begun());
  }
  /// allows(), saying after kill `k` what it found when it does not.
  bool allows_after_kill(int k, std::int64_t found, std::int64_t before) const {
    if (allows(found, before)) return true;
    std::printf("  kill %d: state %lld; the last save returned %lld, the save begun %lld\n", k,
                static_cast<long long>(found), static_cast<long long>(done()),
                static_cast<long long>(begun()));
    return false;
  }

 private:
  struct Marks {
    std::atomic<std::int32_t> begun{0}, done{0};
  };
  static_assert(std::atomic<std::int32_t>::is_always_lock_free);
  std::int32_t mark(std::int64_t n) const { return static_cast<std::int32_t>(n - base_ + 1); }
  std::int64_t value(std::int32_t m) const { return m == 0 ? 0 : base_ + m - 1; }

  std::int64_t base_;
  Marks* marks_ = nullptr;
};

// Waits for the child's progress, then a random time: the kill lands. The
// child's wait status; -1, with the child's status printed, when the child
// ended before the kill (a save failed: it exits 4).
int kill_when_busy(test::Child& child, test::KillPace& pace, int k) {
  if (!pace.wait(child)) {
    const int status = child.wait();
    std::printf("  kill %d: the child ended before it was killed, exit code %d\n", k,
                test::exit_code(status));
    return -1;
  }
  pace.delay();
  return child.kill();
}

// What a kill loop counts for a comparison: its kills, and the kills that
// left a temp name.
struct TempsLeft {
  int kills = 0;
  int left = 0;
};

// SIGKILL a child that saves versions first, first+1, ... in a loop through
// Fs, `kills` times, and more (up to as many again) until they landed inside
// saves (a tenth of them), some after the save's rename and some before,
// with saves completed between them.
template <class Fs>
TempsLeft kill_loop(const test::fs::path& dir, int kills, std::uint32_t seed) {
  using FsManager = as::StateManager<test::CaptureSink&, as::State, as::FullSync, Fs>;
  constexpr std::int64_t kBase = 1700000000;
  test::KillPace pace(seed);
  Progress progress(kBase);
  std::int64_t last_seen = 0;
  int killed = 0, loads_ok = 0, versions_ok = 0, monotonic = 0, as_marked = 0, swept_ok = 0,
      temps_left = 0, left_temp = 0, inside = 0, renamed = 0, corrupt = 0, first_runs = 0;
  const auto lively = [&] {
    return inside * 10 > kills && renamed > 0 && inside > renamed && last_seen > 0;
  };
  int k = 0;
  for (; k < kills || (!lively() && k < 2 * kills); ++k) {
    const std::int64_t first = kBase + static_cast<std::int64_t>(k) * 100000;
    progress.reset();
    test::Child child;
    const pid_t pid = child.fork();
    if (pid < 0) skip(std::string("cannot fork: ") + std::strerror(errno));
    if (pid == 0) {
      test::CaptureSink quiet;
      FsManager manager(dir, quiet, Fs{});
      child.send(test::now_ns());
      for (std::int64_t n = first;; ++n) {
        progress.begin(n);
        if (!manager.save_state(version(n)).ok()) std::_Exit(4);
        progress.end(n);
        child.send(test::now_ns());
      }
    }
    killed += test::exit_code(kill_when_busy(child, pace, k)) == 128 + SIGKILL;

    const std::size_t temps = test::temp_files_in(dir).size();
    left_temp += temps > 0;
    inside += progress.inside();
    test::CaptureSink log;
    Manager manager(dir, log);
    auto loaded = manager.load_state();
    loads_ok += loaded.has_value();
    if (!loaded) {
      std::printf("  kill %d: %s\n", k, loaded.status().message().c_str());
      continue;
    }
    versions_ok += is_a_version(*loaded);
    monotonic += loaded->last_updated >= last_seen;
    first_runs += loaded->last_updated == 0;
    corrupt += !log.with("state file corrupted, treating as first run").empty();
    as_marked += progress.allows_after_kill(k, loaded->last_updated, last_seen);
    renamed += progress.inside() && loaded->last_updated == progress.begun();
    if (loaded->last_updated != 0) last_seen = loaded->last_updated;
    const std::size_t left = test::temp_files_in(dir).size();
    temps_left += static_cast<int>(left);
    swept_ok += left == 0;
  }
  std::printf(
      "  %d kills, %d of them inside a save (after it began, before it returned), %d of those "
      "after its rename; %d left a temp name; %d before any save had completed; a save took "
      "%.0f us on average\n",
      k, inside, renamed, left_temp, first_runs, pace.unit_ns() / 1000);
  check(killed == k, "every child was still saving when it was killed");
  check(loads_ok == k, "after every kill the state loads");
  check(versions_ok == k, "after every kill the state is one complete version written");
  check(monotonic == k, "no kill ever brings back an older version");
  check(as_marked == k,
        "after every kill the state is what the last save that returned wrote, or what the "
        "save the kill interrupted was writing");
  check(corrupt == 0, "no kill ever leaves a corrupt state file");
  check(swept_ok == k && temps_left == 0,
        "the next manager's first load removes the temp file a kill left");
  test::lively(inside * 10 > kills,
               "the kills landed inside saves (at least a tenth of " + std::to_string(kills) + ")");
  test::lively(renamed > 0 && inside > renamed,
               "the kills found the save they interrupted renamed, and not yet renamed");
  test::lively(last_seen > 0, "saves completed between kills");
  return {k, left_temp};
}

// SIGKILL `kills` times a child that takes the run lock, loads, and saves
// the versions after the one it loaded, with keep_previous, in a loop; and
// more kills (up to as many again) until they found what the test looks
// for. The versions are consecutive across kills, so state.json.prev can
// be checked exactly: the version before the state's, or the state's own
// (the kill came between the rename of the link over .prev and the state's
// rename: two names never change in one step).
void kill_loop_keeping_previous(const test::fs::path& dir, int kills) {
  test::KillPace pace(20261127u);
  constexpr std::int64_t kFirst = 1700000000;
  Progress progress(kFirst);
  std::int64_t last_seen = 0;
  int held_before = 0, killed = 0, free_after = 0, loads_ok = 0, versions_ok = 0, monotonic = 0,
      as_marked = 0, corrupt = 0, first_runs = 0, inside = 0, renamed = 0, mid_save = 0,
      links_left = 0, swept_ok = 0, prev_whole = 0, prev_exact = 0, prev_before = 0, prev_same = 0,
      prev_missing = 0, prev_vanished = 0;
  bool prev_existed = false;
  const auto lively = [&] {
    return inside * 10 > kills && renamed > 0 && inside > renamed && prev_before > 0 &&
           prev_same > 0 && last_seen > kFirst;
  };
  int k = 0;
  for (; k < kills || (!lively() && k < 2 * kills); ++k) {
    progress.reset();
    test::Child child;
    const pid_t pid = child.fork();
    if (pid < 0) skip(std::string("cannot fork: ") + std::strerror(errno));
    if (pid == 0) {
      test::CaptureSink quiet;
      Manager manager(dir, quiet, keeping_previous());
      auto lock = manager.try_lock_run();
      if (!lock) std::_Exit(3);
      auto loaded = manager.load_state();
      if (!loaded) std::_Exit(4);
      child.send(test::now_ns());
      for (std::int64_t n = loaded->last_updated == 0 ? kFirst : loaded->last_updated + 1;; ++n) {
        progress.begin(n);
        if (!manager.save_state(version(n)).ok()) std::_Exit(5);
        progress.end(n);
        child.send(test::now_ns());
      }
    }
    test::CaptureSink log;
    Manager manager(dir, log, keeping_previous());
    if (pace.wait(child)) {
      // While the child lives, its lock is held, and names it.
      auto refused = manager.try_lock_run();
      held_before += !refused &&
                     refused.status().code() == std::errc::resource_unavailable_try_again &&
                     names_holder(refused.status().message(), pid);
      pace.delay();
      killed += test::exit_code(child.kill()) == 128 + SIGKILL;
    } else {
      std::printf("  kill %d: the child ended before it was killed, exit code %d\n", k,
                  test::exit_code(child.wait()));
    }

    // A temp name that is a second link (to state.json's file or .prev's):
    // the kill came between the link and its rename over .prev.
    const std::vector<std::string> temps = test::temp_files_in(dir);
    mid_save += !temps.empty();
    inside += progress.inside();
    for (const std::string& name : temps) {
      struct stat st {};
      links_left += ::lstat((dir / name).c_str(), &st) == 0 && st.st_nlink > 1;
    }
    {
      auto lock = manager.try_lock_run();  // never waits: free now, or a failure
      free_after += lock.has_value();
      if (!lock) std::printf("  kill %d: %s\n", k, lock.status().message().c_str());
    }
    auto loaded = manager.load_state();
    loads_ok += loaded.has_value();
    if (!loaded) {
      std::printf("  kill %d: %s\n", k, loaded.status().message().c_str());
      continue;
    }
    versions_ok += is_a_version(*loaded);
    monotonic += loaded->last_updated >= last_seen;
    first_runs += loaded->last_updated == 0;
    corrupt += !log.with("state file corrupted").empty();
    as_marked += progress.allows_after_kill(k, loaded->last_updated, last_seen);
    renamed += progress.inside() && loaded->last_updated == progress.begun();
    if (loaded->last_updated != 0) last_seen = loaded->last_updated;
    swept_ok += test::temp_files_in(dir).empty();

    as::State prev;
    bool whole = false;
    if (!read_previous(dir, prev, whole)) {
      ++prev_missing;
      // No .prev only until a save has replaced a state: before the first
      // version was, or while it is the state.
      prev_vanished += prev_existed || loaded->last_updated > kFirst;
      continue;
    }
    prev_existed = true;
    prev_whole += whole;
    const bool before = prev.last_updated + 1 == loaded->last_updated;
    const bool same = prev.last_updated == loaded->last_updated && loaded->last_updated != 0;
    prev_exact += whole && (before || same);
    prev_before += before;
    prev_same += same;
    if (!(whole && (before || same)))
      std::printf("  kill %d: state %lld, .prev %lld\n", k,
                  static_cast<long long>(loaded->last_updated),
                  static_cast<long long>(prev.last_updated));
  }
  const int with_prev = k - prev_missing;
  std::printf(
      "  %d kills of a child holding the run lock with keep_previous, %d of them inside a save "
      "(after it began, before it returned), %d of those after the state's rename; %d left a "
      "temp name, %d of them a temp link (between the link and its rename over .prev); %d "
      "before any save had completed; .prev the version before the state's %d times, the "
      "state's own %d times (the kill between the two renames), missing %d times; a save took "
      "%.0f us on average\n",
      k, inside, renamed, mid_save, links_left, first_runs, prev_before, prev_same, prev_missing,
      pace.unit_ns() / 1000);
  check(killed == k, "every child took the lock, loaded, and was killed saving");
  check(held_before == k,
        "while the child lived, try_lock_run failed with resource_unavailable_try_again "
        "naming its pid");
  check(free_after == k, "after every kill the next manager's try_lock_run succeeds at once");
  check(loads_ok == k, "after every kill the state loads");
  check(versions_ok == k, "after every kill the state is one complete version written");
  check(monotonic == k, "no kill ever brings back an older version");
  check(as_marked == k,
        "after every kill the state is what the last save that returned wrote, or what the "
        "save the kill interrupted was writing");
  check(corrupt == 0, "no kill ever leaves a corrupt state file");
  check(swept_ok == k,
        "the next manager's first load removes the temp files and temp links a kill left");
  check(prev_whole == with_prev, "state.json.prev, when there, is one complete version");
  check(prev_exact == with_prev,
        "state.json.prev is the version before the state's, or the state's own: never newer, "
        "never further behind");
  check(prev_vanished == 0, "state.json.prev is missing only before a state was replaced");
  test::lively(prev_before > 0 && prev_same > 0,
               "the kills found .prev both one version behind and equal to the state");
  test::lively(inside * 10 > kills,
               "the kills landed inside saves (at least a tenth of " + std::to_string(kills) + ")");
  test::lively(renamed > 0 && inside > renamed,
               "the kills found the save they interrupted renamed, and not yet renamed");
  test::lively(last_seen > kFirst, "saves completed between kills");
}

// A child takes the run lock and waits; the parent's try_lock_run fails,
// naming the state file and the child's pid, until the child is SIGKILLed.
void lock_held_by_another_process(const test::fs::path& dir) {
  test::Child child;
  const pid_t pid = child.fork();
  if (pid < 0) skip(std::string("cannot fork: ") + std::strerror(errno));
  if (pid == 0) {
    test::CaptureSink quiet;
    Manager manager(dir, quiet, keeping_previous());
    auto lock = manager.try_lock_run();
    child.send(lock ? 1 : 0);
    ::pause();  // holds the lock until killed
    std::_Exit(0);
  }
  std::int64_t locked = 0;
  check(child.receive(locked) && locked == 1, "a child takes the run lock");

  test::CaptureSink log;
  Manager manager(dir, log, keeping_previous());
  auto refused = manager.try_lock_run();
  const std::string message = refused ? std::string() : refused.status().message();
  std::printf("  while the child %d holds it: %s\n", static_cast<int>(pid), message.c_str());
  check(!refused && refused.status().code() == std::errc::resource_unavailable_try_again,
        "the parent's try_lock_run fails with resource_unavailable_try_again");
  check(message.find(manager.state_file()) != std::string::npos,
        "the failure names the state file");
  check(names_holder(message, pid), "the failure says \"held by pid <the child's pid>\"");
  auto again = manager.try_lock_run();
  check(!again, "and fails again: nothing was taken by failing");

  child.kill();
  auto taken = manager.try_lock_run();
  check(taken.has_value() && taken->owns_lock(), "once the child is SIGKILLed, the parent has it");
}

// Whether a save in `dir` makes its temp file unnamed: whether the
// filesystem gives PosixFs::open_unnamed a file there.
bool makes_unnamed_files(const test::fs::path& dir) {
  as::PosixFs fs;
  const int dir_fd = fs.open_directory(dir.c_str());
  if (dir_fd < 0) return false;
  const int fd = fs.open_unnamed(dir_fd, 0600);
  if (fd >= 0) (void)fs.close(fd);
  (void)fs.close(dir_fd);
  return fd >= 0;
}

// The lock held by a child, then the kills: half of them of a plain saving
// child, half of one holding the run lock with keep_previous, each in a
// directory of its own. Where the directory makes unnamed files, the plain
// child's half is shared with a plain child saving through named temp
// files, as on a filesystem without unnamed files: an unnamed temp file
// has a name only between its naming and its rename, at the commit, so it
// must leave a temp name after fewer kills.
void kill_tests(const test::fs::path& dir, int kills) {
  for (const char* sub : {"lock", "plain", "plain-named", "keep-previous"})
    test::fs::create_directories(dir / sub);
  std::printf("run lock held by another process:\n");
  lock_held_by_another_process(dir / "lock");
  const int plain = kills - kills / 2;
  if (makes_unnamed_files(dir)) {
    std::printf("plain saves, unnamed temp files (named at the commit, then renamed):\n");
    const TempsLeft unnamed = kill_loop<as::PosixFs>(dir / "plain", plain - plain / 2, 20261126u);
    std::printf("plain saves, named temp files (test::NamedTempFs, no unnamed files):\n");
    const TempsLeft named = kill_loop<test::NamedTempFs>(dir / "plain-named", plain / 2, 20261129u);
    std::printf(
        "  a temp name left by %d of %d kills with unnamed temp files, by %d of %d with "
        "named ones\n",
        unnamed.left, unnamed.kills, named.left, named.kills);
    check(unnamed.left * named.kills < named.left * unnamed.kills,
          "unnamed temp files left a temp name after fewer kills than named ones");
  } else {
    std::printf("plain saves (no unnamed files here: named temp files):\n");
    kill_loop<as::PosixFs>(dir / "plain", plain, 20261126u);
    std::printf(
        "  no comparison of unnamed and named temp files: this filesystem makes no "
        "unnamed files\n");
  }
  std::printf("saves with keep_previous, under the run lock:\n");
  kill_loop_keeping_previous(dir / "keep-previous", kills / 2);
}

void on_own_tmpfs(int kills) {
  std::string why;
  if (!test::private_mount_namespace(why)) skip(why);
  test::TempDir dir;
  const auto mnt = dir / "tmpfs";
  test::fs::create_directories(mnt);
  if (!test::mount_tmpfs(mnt, "size=4m,mode=0755", why)) skip(why);
  kill_tests(mnt, kills);
  ::umount2(mnt.c_str(), MNT_DETACH);
}

// The kill tests on a filesystem of `type` (ext4, xfs, btrfs) of their
// own: an image, on a tmpfs of the test's own (the syncs cost what that
// filesystem's own work costs, not a disk's), mounted through a loop device
// in a private mount namespace: nothing outlives the test.
void on_image(const std::string& type, int kills) {
  std::string why;
  if (!test::private_mount_namespace(why)) skip("no kill loop on " + type + ": " + why);
  test::TempDir dir;
  const auto images = dir / "images", mnt = dir / type;
  test::fs::create_directories(images);
  test::fs::create_directories(mnt);
  if (!test::mount_tmpfs(images, "size=512m,mode=0700", why))
    skip("no kill loop on " + type + ": " + why);
  if (!test::mount_image(images / (type + ".img"), type, mnt, why))
    skip("no kill loop on " + type + ": " + why);
  std::printf("on %s, made in an image of the test's own on a loop device (%s)\n", type.c_str(),
              test::mount_type(mnt).c_str());
  kill_tests(mnt, kills);
  ::umount2(mnt.c_str(), MNT_DETACH);
  ::umount2(images.c_str(), MNT_DETACH);
}

void on_disk(const test::fs::path& base, int kills) {
  struct statfs st;
  if (::statfs(base.c_str(), &st) != 0) skip("cannot examine " + base.string());
  if (st.f_type == 0x01021994 /* TMPFS_MAGIC */)
    skip(base.string() + " is a tmpfs, not a disk-backed directory");
  const auto dir = base / ("kill-test-" + std::to_string(::getpid()));
  test::fs::remove_all(dir);
  test::fs::create_directories(dir);
  kill_tests(dir, kills);
  test::fs::remove_all(dir);
}

// 8 threads here and 4 processes save 200 versions each to one file while a
// reader thread loads it over and over.
void concurrent(const test::fs::path& base) {
  constexpr int kThreads = 8, kProcesses = 4, kSaves = 200;
  const auto dir = base / ("concurrent-test-" + std::to_string(::getpid()));
  test::fs::remove_all(dir);
  test::fs::create_directories(dir);

  std::vector<test::Child> children(kProcesses);
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t child = children[static_cast<std::size_t>(p)].fork();
    if (child < 0) skip(std::string("cannot fork: ") + std::strerror(errno));
    if (child == 0) {
      test::CaptureSink quiet;
      Manager manager(dir, quiet);
      int failed = 0;
      for (int i = 0; i < kSaves; ++i)
        failed += !manager.save_state(version(1000000000 + p * 10000 + i)).ok();
      std::_Exit(failed == 0 ? 0 : 1);
    }
  }

  test::CaptureSink log;
  Manager manager(dir, log);
  std::atomic<int> saved{0}, writers_left{kThreads};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kSaves; ++i)
        saved += manager.save_state(version(2000000000 + t * 10000 + i)).ok();
      --writers_left;
    });
  std::atomic<int> reads{0}, whole{0}, errors{0};
  std::atomic<bool> children_done{false};
  std::thread reader([&] {
    test::CaptureSink reader_log;
    Manager reading(dir, reader_log);
    while (writers_left > 0 || !children_done) {
      auto loaded = reading.load_state();
      ++reads;
      if (!loaded) {
        ++errors;
        continue;
      }
      whole += is_a_version(*loaded);
    }
    check(reader_log.with("state file corrupted, treating as first run").empty(),
          "the reader never saw a corrupt file");
  });
  int children_ok = 0;
  for (test::Child& child : children) children_ok += test::exit_code(child.wait()) == 0;
  children_done = true;
  for (auto& t : threads) t.join();
  reader.join();

  std::printf("  %d saves by threads, %d processes x %d saves, %d reads in between\n", saved.load(),
              children_ok, kSaves, reads.load());
  check(saved == kThreads * kSaves, "every save of every thread succeeded");
  check(children_ok == kProcesses, "every save of every process succeeded");
  check(errors == 0, "no read failed");
  check(whole == reads, "every read in between was one complete version");
  test::lively(reads > 0, "the reader read while the others saved");
  test::CaptureSink final_log;
  Manager final_reader(dir, final_log);
  auto last = final_reader.load_state();
  check(last.has_value() && last->last_updated != 0 && is_a_version(*last),
        "the final file is one complete version");
  check(test::temp_files_in(dir).empty(), "no temp file is left");
  test::fs::remove_all(dir);
}

// ------------------------------------------------------------------ batches --
// A child commits batches in a loop: three outputs, then the state, each
// holding the batch's generation ("gen N", then padding of a length that
// follows from N and the file), through two AtomicDirectory handles. A
// reader process reads the state, then each output, over and over: an
// output must never be older than the state read before it. After each kill
// the same holds on what is left, and a sweep of each directory (as the
// next start makes) leaves no temp file: not the dead handle's claim, not
// its numbered temp files.

const char* const kBatchOutputs[] = {"full.json", "summary.json", "history.json"};

std::string batch_file(std::int64_t gen, std::size_t file) {
  std::string text = "gen " + std::to_string(gen) + "\n";
  text.append(static_cast<std::size_t>(gen % 97) + 1000 * (file + 1),
              static_cast<char>('a' + file));
  return text;
}

// The generation a file holds, 0 when it is missing, -1 when it is not one
// whole file batch_file wrote.
std::int64_t batch_generation(const test::fs::path& path, std::size_t file) {
  std::error_code ec;
  if (!test::fs::exists(path, ec)) return 0;
  const std::string text = test::read_file(path);
  if (text.rfind("gen ", 0) != 0) return -1;
  const std::int64_t gen = std::atoll(text.c_str() + 4);
  return gen > 0 && text == batch_file(gen, file) ? gen : -1;
}

volatile std::sig_atomic_t reader_stop = 0;
void stop_reader(int) { reader_stop = 1; }

// What the reader sends before its counts: it has read a state a commit
// wrote. Counts are never negative.
constexpr std::int64_t kReaderRead = -1;

void batch_kill_loop(const test::fs::path& dir, int kills) {
  const auto out = dir / "out", st = dir / "state";
  test::fs::create_directories(out);
  test::fs::create_directories(st);
  test::Child reader;
  const pid_t reader_pid = reader.fork();
  if (reader_pid < 0) skip(std::string("cannot fork: ") + std::strerror(errno));
  if (reader_pid == 0) {
    ::signal(SIGTERM, stop_reader);
    std::int64_t reads = 0, behind = 0, torn = 0;
    bool marked = false;
    while (!reader_stop) {
      const std::int64_t state = batch_generation(st / "state.json", 3);
      if (state < 0) ++torn;
      for (std::size_t i = 0; i < 3; ++i) {
        const std::int64_t output = batch_generation(out / kBatchOutputs[i], i);
        if (output < 0) ++torn;
        if (state > 0 && output >= 0 && output < state) ++behind;
      }
      ++reads;
      if (state > 0 && !marked) marked = reader.send(kReaderRead);
    }
    reader.send(reads);
    reader.send(behind);
    reader.send(torn);
    std::_Exit(0);
  }

  test::KillPace pace(20261128u);
  Progress progress(0);
  int killed = 0, consistent = 0, whole = 0, as_marked = 0, swept = 0, inside = 0, mid_commit = 0;
  std::int64_t last_state = 0, last_outputs[3] = {0, 0, 0};
  int monotonic = 0;
  int k = 0;
  for (; k < kills || ((inside * 10 <= kills || last_state == 0) && k < 2 * kills); ++k) {
    const std::int64_t first = static_cast<std::int64_t>(k + 1) * 1000000;
    progress.reset();
    test::Child child;
    const pid_t pid = child.fork();
    if (pid < 0) skip(std::string("cannot fork: ") + std::strerror(errno));
    if (pid == 0) {
      auto outputs = as::AtomicDirectory<>::open(out.native());
      auto state = as::AtomicDirectory<>::open(st.native());
      if (!outputs || !state) std::_Exit(3);
      as::Batch<> batch;
      batch.reserve(4);
      child.send(test::now_ns());
      for (std::int64_t gen = first;; ++gen) {
        progress.begin(gen);
        for (std::size_t i = 0; i < 3; ++i)
          (void)batch.add(*outputs, kBatchOutputs[i], batch_file(gen, i));
        (void)batch.add(*state, "state.json", batch_file(gen, 3));
        if (!batch.commit().ok()) std::_Exit(4);
        progress.end(gen);
        child.send(test::now_ns());
      }
    }
    killed += test::exit_code(kill_when_busy(child, pace, k)) == 128 + SIGKILL;

    mid_commit += test::temp_files_in(out).size() + test::temp_files_in(st).size() > 2;
    inside += progress.inside();
    const std::int64_t state = batch_generation(st / "state.json", 3);
    bool all_whole = state >= 0, all_consistent = true,
         all_marked = progress.allows(state, last_state);
    for (std::size_t i = 0; i < 3; ++i) {
      const std::int64_t output = batch_generation(out / kBatchOutputs[i], i);
      all_whole = all_whole && output >= 0;
      all_consistent = all_consistent && output >= state;
      all_marked = all_marked && progress.allows(output, last_outputs[i]);
      if (output > 0) last_outputs[i] = output;
    }
    whole += all_whole;
    consistent += all_consistent;
    as_marked += all_marked;
    monotonic += state >= last_state;
    if (state > 0) last_state = state;
    // The next start: a sweep of each directory.
    auto a = as::AtomicWriter<>{}.remove_stale_temp_files(out);
    auto b = as::AtomicWriter<>{}.remove_stale_temp_files(st);
    swept += a && b && test::temp_files_in(out).empty() && test::temp_files_in(st).empty();
  }
  // The reader has read a state once (a minute at most: it reads all the
  // time, and there is one), then it stops and counts.
  std::int64_t mark = 0;
  const bool read_once = reader.receive_within(mark, 60000) && mark == kReaderRead;
  reader.signal(SIGTERM);
  std::int64_t counts[3] = {-1, -1, -1};
  bool reported = true;
  for (std::int64_t& count : counts) {
    reported = reported && reader.receive(count);
    if (reported && count == kReaderRead) reported = reader.receive(count);  // the mark, late
  }
  const int reader_exit = test::exit_code(reader.wait());
  std::printf(
      "  %d kills of a child committing batches of 3 outputs and a state through two directory "
      "handles, %d of them inside a batch (after its first add, before its commit returned); %d "
      "left temp files beside the claims; last state generation %lld; a commit took %.0f us on "
      "average; the reader read %lld times\n",
      k, inside, mid_commit, static_cast<long long>(last_state), pace.unit_ns() / 1000,
      static_cast<long long>(counts[0]));
  check(killed == k, "every child was still committing when it was killed");
  check(whole == k, "after every kill each file is one whole generation");
  check(consistent == k,
        "after every kill no output is older than the state (the state is never ahead)");
  check(monotonic == k, "no kill ever brings back an older state");
  check(as_marked == k,
        "after every kill each file is the generation of the last commit that returned, or of "
        "the commit the kill interrupted");
  check(swept == k,
        "after every kill a sweep of each directory leaves no temp file: the dead handle's claim "
        "and its numbered temp files are stale");
  check(reported && reader_exit == 0, "the reader ran to the end and reported its counts");
  check(counts[1] == 0, "the reader never saw an output older than the state read before it");
  check(counts[2] == 0, "the reader never saw a torn file");
  test::lively(read_once && counts[0] > 0, "the reader read states that commits wrote");
  test::lively(inside * 10 > kills, "the kills landed inside batches (at least a tenth of " +
                                        std::to_string(kills) + ")");
  test::lively(last_state > 0, "commits completed between kills");
}

void batch_on_disk(const test::fs::path& base, int kills) {
  struct statfs st;
  if (::statfs(base.c_str(), &st) != 0) skip("cannot examine " + base.string());
  if (st.f_type == 0x01021994 /* TMPFS_MAGIC */)
    skip(base.string() + " is a tmpfs, not a disk-backed directory");
  const auto dir = base / ("batch-kill-test-" + std::to_string(::getpid()));
  test::fs::remove_all(dir);
  test::fs::create_directories(dir);
  batch_kill_loop(dir, kills);
  test::fs::remove_all(dir);
}

void batch_on_shm(int kills) {
  std::string why;
  if (!test::tmpfs_at_dev_shm("size=64m,mode=1777", why)) skip(why);
  const test::fs::path dir = "/dev/shm/batch-kill-test-" + std::to_string(::getpid());
  test::fs::remove_all(dir);
  test::fs::create_directories(dir);
  batch_kill_loop(dir, kills);
  test::fs::remove_all(dir);
}

// ---------------------------------------------------- a kill after each call --
// A save made in a child through a FaultFs whose hook SIGKILLs the child
// right after the save's k-th call (before its next one; for the last, once
// the save has returned), for every k. The child sends each call's op before
// making it, so the test knows the calls made; they must be the first k
// calls of the same save made whole (in the test, first). After each kill,
// every target must be old or new, and new exactly when its rename was
// made; a temp name must be left exactly when a temp file had a name
// (given by link_unnamed to an unnamed one, by create_file to a named one)
// and was not yet renamed; and a sweep must then leave none.

using test::Op;

// What the child sends once the save has returned, or failed.
constexpr std::int64_t kSaveReturned = -1, kSaveFailed = -2;

struct KilledSave {
  std::vector<Op> ops;  // the calls made before the kill
  bool returned = false;
  int exit_code = -1;
};

// One save to kill after each of its calls: its targets, in the order of
// their renames, what they hold before it, and the save itself, through
// the FaultFs it is given.
struct SaveToKill {
  std::string what;
  test::fs::path dir;
  std::vector<test::fs::path> targets;
  std::vector<std::string> olds;
  std::function<bool(test::FaultFs&)> save;
};

KilledSave kill_after_call(const SaveToKill& s, bool named, int k) {
  KilledSave killed;
  test::Child child;
  const pid_t pid = child.fork();
  if (pid < 0) skip(std::string("cannot fork: ") + std::strerror(errno));
  if (pid == 0) {
    test::FaultFs fs;
    if (named) fs.faults = {test::no_unnamed_files()};
    int made = 0;
    fs.before = [&](Op op, int, const char*) {
      if (made == k) ::raise(SIGKILL);
      child.send(static_cast<std::int64_t>(op));
      ++made;
    };
    const bool ok = s.save(fs);
    child.send(ok ? kSaveReturned : kSaveFailed);
    if (ok && made == k) ::raise(SIGKILL);
    std::_Exit(4);
  }
  for (std::int64_t value = 0; child.receive(value);) {
    if (value == kSaveReturned)
      killed.returned = true;
    else if (value >= 0)
      killed.ops.push_back(static_cast<Op>(value));
  }
  killed.exit_code = test::exit_code(child.wait());
  return killed;
}

std::string ops_text(const std::vector<Op>& ops) {
  std::string text;
  for (const Op op : ops) text += (text.empty() ? "" : " ") + std::string(test::op_name(op));
  return text;
}

void kill_after_each_call(const SaveToKill& s, bool named) {
  const auto reset = [&] {
    for (std::size_t i = 0; i < s.targets.size(); ++i) test::write_plain(s.targets[i], s.olds[i]);
  };
  const auto sweep = [&] {
    return as::AtomicWriter<>{}.remove_stale_temp_files(s.dir).has_value() &&
           test::temp_files_in(s.dir).empty();
  };
  // The save made whole: its calls, and what it writes.
  reset();
  test::FaultFs whole;
  if (named) whole.faults = {test::no_unnamed_files()};
  const bool saved = s.save(whole);
  const std::vector<Op> calls = whole.ops();
  std::vector<std::string> news;
  for (const auto& target : s.targets) news.push_back(test::read_file(target));
  const auto has = [&](Op op) { return whole.count(op) > 0; };
  std::printf("%s, %s temp files: %zu calls: %s\n", s.what.c_str(), named ? "named" : "unnamed",
              calls.size(), ops_text(calls).c_str());
  check(saved && sweep(), "made whole, the save succeeds and leaves no temp file");
  check(named ? has(Op::create_file) && !has(Op::link_unnamed)
              : has(Op::link_unnamed) && !has(Op::create_file),
        named ? "its temp files are named (create_file), never unnamed"
              : "its temp files are unnamed, named at the commit (link_unnamed)");

  int as_made = 0, killed_there = 0, targets_ok = 0, temps_ok = 0, swept = 0;
  std::string left_after;
  const int n = static_cast<int>(calls.size());
  for (int k = 1; k <= n; ++k) {
    reset();
    const KilledSave killed = kill_after_call(s, named, k);
    const std::vector<Op> made(calls.begin(), calls.begin() + k);
    as_made += killed.ops == made && killed.returned == (k == n);
    killed_there += killed.exit_code == 128 + SIGKILL;

    int temp_names = 0, renames = 0;
    for (const Op op : made) {
      temp_names += op == Op::create_file || op == Op::link_unnamed;
      renames += op == Op::rename;
    }
    bool targets = true;
    for (std::size_t i = 0; i < s.targets.size(); ++i) {
      const std::string now = test::read_file(s.targets[i]);
      const bool renamed = static_cast<std::size_t>(renames) > i;
      targets = targets && now == (renamed ? news[i] : s.olds[i]);
    }
    targets_ok += targets;
    const int left = static_cast<int>(test::temp_files_in(s.dir).size());
    temps_ok += left == temp_names - renames;
    if (left > 0)
      left_after += (left_after.empty() ? "" : ", ") + std::to_string(k) + " (" +
                    std::string(test::op_name(calls[static_cast<std::size_t>(k - 1)])) + ")";
    if (!targets || left != temp_names - renames || killed.ops != made)
      std::printf(
          "  killed after call %d (%s): %zu calls made, exit code %d, %d temp names left "
          "(%d expected)%s\n",
          k, std::string(test::op_name(calls[static_cast<std::size_t>(k - 1)])).c_str(),
          killed.ops.size(), killed.exit_code, left, temp_names - renames,
          targets ? "" : ", a target neither as before nor as after its rename");
    swept += sweep();
  }
  std::printf("  killed after each of the %d calls: a temp name left after call %s\n", n,
              left_after.empty() ? "none" : left_after.c_str());
  check(as_made == n,
        "each child made the first k calls of the whole save, and was killed right after "
        "them (the last, once the save returned)");
  check(killed_there == n, "each child died of its SIGKILL");
  check(targets_ok == n,
        "after every kill each target is old or new: new exactly when its rename was made");
  check(temps_ok == n,
        named ? "a temp name is left exactly when the kill came after its create_file and "
                "before its rename"
              : "a temp name is left exactly when the kill came after its link_unnamed and "
                "before its rename");
  check(swept == n, "after every kill a sweep leaves no temp file");
}

void kill_after_each_call_in(const test::fs::path& base) {
  const auto dir = base / ("kill-after-each-call-" + std::to_string(::getpid()));
  test::fs::remove_all(dir);
  std::string old_state;  // what a state save writes, as the state before
  {
    test::CaptureSink quiet;
    Manager manager(dir / "old-state", quiet);
    if (!manager.save_state(version(1700000001)).ok()) skip("cannot save in " + dir.string());
    old_state = test::read_file(dir / "old-state" / "state.json");
  }
  const SaveToKill saves[] = {
      {"AtomicWriter<FullSync>::write",
       dir / "write",
       {dir / "write" / "data.json"},
       {"old data"},
       [target = dir / "write" / "data.json"](test::FaultFs& fs) {
         return as::AtomicWriter<as::FullSync, test::FaultFs&>(fs).write(target, "new data").ok();
       }},
      {"StateManager::save_state",
       dir / "state",
       {dir / "state" / "state.json"},
       {old_state},
       [at = dir / "state"](test::FaultFs& fs) {
         as::StateManager<as::NullSink, as::State, as::FullSync, test::FaultFs&> manager(
             at, as::NullSink{}, fs);
         return manager.save_state(version(1700000002)).ok();
       }},
      {"Batch<FullSync> of two files",
       dir / "batch",
       {dir / "batch" / "a.json", dir / "batch" / "b.json"},
       {"old a", "old b"},
       [at = dir / "batch"](test::FaultFs& fs) {
         as::Batch<as::FullSync, test::FaultFs&> batch(fs);
         return batch.add(at / "a.json", "new a").ok() && batch.add(at / "b.json", "new b").ok() &&
                batch.commit().ok();
       }},
  };
  for (const SaveToKill& save : saves) test::fs::create_directories(save.dir);
  const bool unnamed = makes_unnamed_files(dir);
  if (!unnamed)
    std::printf("no unnamed files in %s: the saves with named temp files only\n", dir.c_str());
  for (const SaveToKill& save : saves) {
    if (unnamed) kill_after_each_call(save, false);
    kill_after_each_call(save, true);
  }
  test::fs::remove_all(dir);
}

int usage() {
  std::fprintf(
      stderr,
      "usage: process-tests kill DIR [KILLS] | kill-tmpfs [KILLS] | kill-image TYPE [KILLS] | "
      "batch-kill DIR [KILLS] | batch-kill-shm [KILLS] | kill-after-each-call DIR | "
      "concurrent DIR\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 2) return usage();
  const std::string what = argv[1];
  if (what == "kill" && argc >= 3)
    on_disk(argv[2], argc > 3 ? std::atoi(argv[3]) : 1000);
  else if (what == "kill-tmpfs")
    on_own_tmpfs(argc > 2 ? std::atoi(argv[2]) : 1000);
  else if (what == "kill-image" && argc >= 3)
    on_image(argv[2], argc > 3 ? std::atoi(argv[3]) : 1000);
  else if (what == "batch-kill" && argc >= 3)
    batch_on_disk(argv[2], argc > 3 ? std::atoi(argv[3]) : 300);
  else if (what == "batch-kill-shm")
    batch_on_shm(argc > 2 ? std::atoi(argv[2]) : 300);
  else if (what == "kill-after-each-call" && argc >= 3)
    kill_after_each_call_in(argv[2]);
  else if (what == "concurrent" && argc >= 3)
    concurrent(argv[2]);
  else
    return usage();
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
