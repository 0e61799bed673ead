// What atomic_state costs beyond the system calls it must make.
//
// Every case runs the library and its baseline in the same benchmark, each
// once per iteration in an order that changes every iteration, and times
// each call on its own. Each repetition reports the median of each side as
// a counter, and their ratio; bench/report.py takes the median of those
// ratios over the repetitions. Drift of the machine (other builds,
// writeback, the host's disk) therefore hits both sides alike.
//
// The floors are the fewest system calls, written by hand, that give the
// same guarantee (see "floors" below): a named one (temp file created with
// O_EXCL under its name) and an unnamed one (O_TMPFILE, named by linkat
// right before the rename, the library's guarantee class on Linux).
//
//   write/FullSync/disk/<bytes>   AtomicWriter<FullSync> vs the named floor
//                                 and the unnamed floor, both durable, and
//                                 (16 MiB) a dd-style write + fsync
//   write/NoSync/tmpfs/<bytes>    AtomicWriter<NoSync> vs the two floors
//                                 without syncs, and (16 MiB) a dd-style
//                                 write of one file
//   state_cycle/FullSync/disk     StateManager load_state, should_process,
//   state_cycle/NoSync/tmpfs      save_state vs reading the file by hand +
//                                 boost::json::parse + boost::json::serialize
//                                 + the named floor
//   state_load/NoSync/tmpfs       the two halves of the tmpfs cycle, to see
//   state_save/NoSync/tmpfs       where a difference comes from (the save
//                                 against both floors)
//   state_save/FullSync/disk      save_state on its own, durable, vs
//                                 boost::json::serialize + either floor
//   batch/FullSync/disk           a collector's four files (1 KiB, 16 KiB,
//                                 256 KiB, then a 300-byte state) as one
//                                 Batch vs four write_atomic calls and vs
//                                 the same batch written by hand
//   state_batch/FullSync/disk     save_state(state, batch) after the three
//                                 outputs vs the batch by hand
//   snapshot_vs_batch/FullSync/disk  a SnapshotWriter publish of the same
//                                 four files vs the Batch
//   dir_save/NoSync/tmpfs/<bytes> AtomicDirectory saves vs the named floor
//                                 without directory descriptor or lock (and
//                                 vs AtomicWriter, for what the handle saves)
//   dir_save/FullSync/disk/<b>    the same, durable, vs the floor with a kept
//                                 directory descriptor and both fsyncs
//   qsavefile/FullSync/disk/<b>   Qt's QSaveFile, only where Qt 5 was found
//
// Directories: $BENCH_DIR (default: the working directory) for the disk
// cases, $BENCH_TMPFS (default /dev/shm) for the tmpfs ones; a fresh
// subdirectory is made in each and removed at the end. A disk case runs at
// least $BENCH_DISK_MIN_TIME seconds of library time per repetition
// (default 1: an fsync takes milliseconds, and a median wants samples);
// the others follow --benchmark_min_time.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "atomic_state.hpp"

#if defined(ATOMIC_STATE_BENCH_QT) && __has_include(<QSaveFile>)
#include <QByteArray>
#include <QSaveFile>
#include <QString>
#define BENCH_HAVE_QT 1
#else
#define BENCH_HAVE_QT 0
#endif

namespace {

namespace as = atomic_state;
using Clock = std::chrono::steady_clock;

struct Dirs {
  std::string disk;   // made under $BENCH_DIR or the working directory
  std::string tmpfs;  // made under $BENCH_TMPFS or /dev/shm
};
Dirs g_dirs;

// ---------------------------------------------------------------- floors --

// A temp name of the library's shape (".tmp-" and six characters) drawn
// from a counter: the cheapest unique name there is.
void next_floor_name(char (&name)[12]) {
  static std::uint64_t counter = static_cast<std::uint64_t>(::getpid()) << 20;
  static constexpr char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::uint64_t x = ++counter;
  std::memcpy(name, ".tmp-", 5);
  for (int i = 5; i < 11; ++i, x /= 62) name[i] = digits[x % 62];
  name[11] = '\0';
}

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// DIR "/" NAME into out (cap bytes), with memcpy: a floor allocates nothing.
bool join_path(char* out, std::size_t cap, std::string_view dir, const char* name) {
  const std::size_t n = std::strlen(name);
  if (dir.size() + 1 + n >= cap) return false;
  std::memcpy(out, dir.data(), dir.size());
  out[dir.size()] = '/';
  std::memcpy(out + dir.size() + 1, name, n + 1);
  return true;
}

// The floors: the fewest system calls that replace a file atomically (and,
// under Sync, durably: the file's data and its new name), written by hand.
// None takes a lock, looks at the target or keeps a second descriptor;
// error handling is "stop". Two kinds of temp file:
//
// - named: the temp file is created under its name with O_CREAT|O_EXCL,
//   so a kill between its creation and the rename leaves it behind;
// - unnamed: the temp file is created with O_TMPFILE and named with
//   linkat(AT_EMPTY_PATH) right before the rename, so a kill before the
//   link leaves nothing (the library's own guarantee on Linux now).

// Named, without syncs: temp file by path with O_CREAT|O_EXCL, write,
// fchmod, close, rename. 5 calls, no directory descriptor.
bool floor_save_by_path(std::string_view dir, const char* target, std::string_view data) {
  char temp[12];
  next_floor_name(temp);
  char temp_path[4096], target_path[4096];
  if (!join_path(temp_path, sizeof temp_path, dir, temp) ||
      !join_path(target_path, sizeof target_path, dir, target))
    return false;
  const int fd = ::open(temp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return false;
  bool ok = write_all(fd, data.data(), data.size()) && ::fchmod(fd, 0644) == 0;
  ok = ::close(fd) == 0 && ok;
  return ok && ::rename(temp_path, target_path) == 0;
}

// Named, durable, in a directory whose descriptor is open: openat with
// O_EXCL, write, fchmod, fsync, close, renameat, fsync of the directory.
bool floor_save_in(int dfd, const char* target, std::string_view data) {
  char temp[12];
  next_floor_name(temp);
  const int fd = ::openat(dfd, temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return false;
  bool ok = write_all(fd, data.data(), data.size()) && ::fchmod(fd, 0644) == 0 && ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  return ok && ::renameat(dfd, temp, dfd, target) == 0 && ::fsync(dfd) == 0;
}

// The named floor of one save: without syncs, floor_save_by_path (5
// calls); durable, the directory opened for its fsync, floor_save_in, the
// directory closed (9 calls).
template <bool Sync>
bool floor_named(const std::string& dir, const char* target, std::string_view data) {
  if constexpr (!Sync) {
    return floor_save_by_path(dir, target, data);
  } else {
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return false;
    const bool ok = floor_save_in(dfd, target, data);
    return ::close(dfd) == 0 && ok;
  }
}

// linkat(fd, "", dir_fd, name, AT_EMPTY_PATH); where the kernel refuses it
// (ENOENT: before Linux 6.10, without CAP_DAC_READ_SEARCH), from then on
// the /proc/self/fd link, as the library does.
bool link_unnamed(int fd, int dir_fd, const char* name) {
  static bool proc_link = false;
  if (!proc_link) {
    if (::linkat(fd, "", dir_fd, name, AT_EMPTY_PATH) == 0) return true;
    if (errno != ENOENT) return false;
    proc_link = true;
  }
  char proc[32];
  std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  return ::linkat(AT_FDCWD, proc, dir_fd, name, AT_SYMLINK_FOLLOW) == 0;
}

// The unnamed floor of one save. Without syncs: open(DIR, O_TMPFILE),
// write, fchmod, linkat to a temp name, rename, close: 6 calls, no
// directory descriptor. Durable: open the directory, openat(".",
// O_TMPFILE), write, fchmod, fsync, linkat, renameat, close, fsync of the
// directory, close it: 10 calls.
template <bool Sync>
bool floor_unnamed(const std::string& dir, const char* target, std::string_view data) {
  char temp[12];
  next_floor_name(temp);
  if constexpr (!Sync) {
    char temp_path[4096], target_path[4096];
    if (!join_path(temp_path, sizeof temp_path, dir, temp) ||
        !join_path(target_path, sizeof target_path, dir, target))
      return false;
    const int fd = ::open(dir.c_str(), O_WRONLY | O_TMPFILE | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    const bool ok = write_all(fd, data.data(), data.size()) && ::fchmod(fd, 0644) == 0 &&
                    link_unnamed(fd, AT_FDCWD, temp_path) && ::rename(temp_path, target_path) == 0;
    return ::close(fd) == 0 && ok;
  } else {
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return false;
    const int fd = ::openat(dfd, ".", O_WRONLY | O_TMPFILE | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write_all(fd, data.data(), data.size()) && ::fchmod(fd, 0644) == 0 &&
              ::fsync(fd) == 0 && link_unnamed(fd, dfd, temp) &&
              ::renameat(dfd, temp, dfd, target) == 0;
    if (fd >= 0) ok = ::close(fd) == 0 && ok;
    ok = ok && ::fsync(dfd) == 0;
    return ::close(dfd) == 0 && ok;
  }
}

// dd-style: the same bytes into one file in place, no temp file, no rename.
template <bool Sync>
bool raw_write(const char* path, std::string_view data) {
  const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = write_all(fd, data.data(), data.size());
  if constexpr (Sync) ok = ok && ::fsync(fd) == 0;
  return ::close(fd) == 0 && ok;
}

// Reads a whole small file the plain way: open, fstat, read to the end.
bool read_small_file(const char* path, char* buf, std::size_t cap, std::size_t& size) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return false;
  struct stat st;
  bool ok = ::fstat(fd, &st) == 0 && static_cast<std::size_t>(st.st_size) < cap;
  size = 0;
  while (ok) {
    const ssize_t n = ::read(fd, buf + size, cap - size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    size += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return ok;
}

// ------------------------------------------------------------ the runner --

double median_of(std::vector<double>& v) {
  if (v.empty()) return 0;
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  double m = *mid;
  if (v.size() % 2 == 0) m = (m + *std::max_element(v.begin(), mid)) / 2;
  return m;
}

struct Side {
  const char* counter;         // "library_us", "floor_us", "dd_us", ...
  std::function<bool()> call;  // false: the benchmark stops with an error
};

// Runs every side once per iteration, in the next of all their orders
// (for two sides: AB, BA, AB, ...; for three, all six in turn), so that no
// side always goes first or always follows the same other side: a call can
// leave work behind for the next one (freed blocks, a journal commit). The
// first side is the library, whose time is the benchmark's own (manual)
// time. Counters: each side's median in microseconds, and for payloads of
// 1 MiB or more its throughput in MB/s (10^6 bytes per second) at it.
void run_sides(benchmark::State& st, std::vector<Side>& sides, std::size_t bytes) {
  const std::size_t n = sides.size();
  for (Side& side : sides)  // warm-up: every later call replaces a file
    if (!side.call()) {
      st.SkipWithError(side.counter);
      return;
    }
  std::vector<std::vector<double>> samples(n);
  for (auto& s : samples) s.reserve(4096);
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  for (auto _ : st) {
    double library_seconds = 0;
    for (const std::size_t i : order) {
      const auto t0 = Clock::now();
      const bool ok = sides[i].call();
      const auto t1 = Clock::now();
      if (!ok) {
        st.SkipWithError(sides[i].counter);
        return;
      }
      const double seconds = std::chrono::duration<double>(t1 - t0).count();
      samples[i].push_back(seconds);
      if (i == 0) library_seconds = seconds;
    }
    st.SetIterationTime(library_seconds);
    std::next_permutation(order.begin(), order.end());  // wraps to the first
  }
  std::vector<double> medians(n);
  for (std::size_t i = 0; i < n; ++i) {
    medians[i] = median_of(samples[i]);
    st.counters[sides[i].counter] = medians[i] * 1e6;
    if (bytes >= (1u << 20)) {
      std::string rate = sides[i].counter;
      rate.replace(rate.rfind("_us"), 3, "_MBps");
      st.counters[rate] = static_cast<double>(bytes) / medians[i] / 1e6;
    }
  }
  st.counters["ratio"] = medians[1] > 0 ? medians[0] / medians[1] : 0;
  if (bytes > 0) st.SetBytesProcessed(st.iterations() * static_cast<std::int64_t>(bytes));
}

std::string payload(std::size_t bytes) {
  std::string data(bytes, '\0');
  for (std::size_t i = 0; i < bytes; ++i)
    data[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  return data;
}

// Each case works in a directory of its own, so that no case's files
// (rename victims, directory size) weigh on another's.
std::string case_dir(const std::string& base, const char* label, std::size_t bytes) {
  std::string dir = base + "/" + label + "-" + std::to_string(bytes);
  std::filesystem::create_directories(dir);
  return dir;
}

// ----------------------------------------------------------------- cases --

// One save through AtomicWriter against the two floors, side by side: the
// named floor (floor_us) and the unnamed one (unnamed_us); at 16 MiB a
// dd-style write besides.
template <class Policy, bool Sync>
void bm_write(benchmark::State& st, const std::string* base, const char* label) {
  const auto bytes = static_cast<std::size_t>(st.range(0));
  const std::string data = payload(bytes);
  const std::string dir = case_dir(*base, label, bytes);
  const std::filesystem::path lib_path = dir + "/library.dat";  // built before timing
  const std::string raw_path = dir + "/dd.dat";
  as::AtomicWriter<Policy> writer;
  std::vector<Side> sides = {
      {"library_us", [&] { return writer.write(lib_path, data).ok(); }},
      {"floor_us", [&] { return floor_named<Sync>(dir, "floor.dat", data); }},
      {"unnamed_us", [&] { return floor_unnamed<Sync>(dir, "unnamed.dat", data); }},
  };
  if (bytes >= (1u << 20))
    sides.push_back({"dd_us", [&] { return raw_write<Sync>(raw_path.c_str(), data); }});
  run_sides(st, sides, bytes);
}

// Which part of a state cycle a benchmark times.
enum class Cycle { whole, load, save };

// A StateManager's state cycle, or one half of it, against its floor:
// reading the file by hand, boost::json::parse, a timestamp comparison,
// boost::json::serialize and the named floor's save. The save half also
// has the unnamed floor's save beside it (unnamed_us).
template <class Policy, bool Sync, Cycle Part>
void bm_state(benchmark::State& st, const std::string* base, const char* label) {
  const std::string dir = case_dir(*base, label, 0);
  using Manager = as::StateManager<as::NullSink, as::State, Policy>;
  Manager manager(dir);  // once: its first load_state sweeps temp files
  const std::int64_t ts = 1700000000;
  const as::State state =
      as::update_state("Switchboard", ts, 42, 1234567890.125, {1699990000, 1699995000, ts});
  if (!manager.save_state(state) || !manager.load_state()) {
    st.SkipWithError("first save and load");
    return;
  }
  // The baseline's file starts as the library's state text.
  const std::string floor_path = dir + "/floor.json";
  std::string lib_text(4096, '\0');
  std::size_t lib_size = 0;
  if (!read_small_file(manager.state_file().c_str(), lib_text.data(), lib_text.size(), lib_size) ||
      !floor_named<false>(dir, "floor.json", lib_text.substr(0, lib_size))) {
    st.SkipWithError("baseline file");
    return;
  }
  const boost::json::value parsed = boost::json::parse(lib_text.substr(0, lib_size));

  const auto library_load = [&] {
    as::Result<as::State> loaded = manager.load_state();
    if (!loaded) return false;
    const bool process = manager.should_process(ts, *loaded);
    benchmark::DoNotOptimize(process);
    return true;
  };
  const auto library_save = [&] { return manager.save_state(state).ok(); };
  const auto floor_load = [&](boost::json::value& jv) {
    char buf[4096];
    std::size_t n = 0;
    if (!read_small_file(floor_path.c_str(), buf, sizeof buf, n)) return false;
    boost::json::error_code ec;
    jv = boost::json::parse(boost::json::string_view(buf, n), ec);
    if (ec) return false;
    const bool process = ts > jv.at("last_updated").as_int64();
    benchmark::DoNotOptimize(process);
    return true;
  };
  const auto floor_save = [&](const boost::json::value& jv) {
    const std::string text = boost::json::serialize(jv);
    return floor_named<Sync>(dir, "floor.json", text);
  };
  const auto unnamed_save = [&](const boost::json::value& jv) {
    const std::string text = boost::json::serialize(jv);
    return floor_unnamed<Sync>(dir, "unnamed.json", text);
  };

  std::vector<Side> sides;
  if constexpr (Part == Cycle::whole)
    sides = {{"library_us", [&] { return library_load() && library_save(); }},
             {"floor_us", [&] {
                boost::json::value jv;
                return floor_load(jv) && floor_save(jv);
              }}};
  else if constexpr (Part == Cycle::load)
    sides = {{"library_us", library_load}, {"floor_us", [&] {
                                              boost::json::value jv;
                                              return floor_load(jv);
                                            }}};
  else
    sides = {{"library_us", library_save},
             {"floor_us", [&] { return floor_save(parsed); }},
             {"unnamed_us", [&] { return unnamed_save(parsed); }}};
  run_sides(st, sides, 0);
}

// What keep_previous costs: a save that first links the state it replaces
// as state.json.prev (a link, a rename, a directory sync), against the
// same save without it, side by side in the same run.
template <class Policy>
void bm_keep_previous(benchmark::State& st, const std::string* base, const char* label) {
  const std::string keeping_dir = case_dir(*base, label, 1);
  const std::string plain_dir = case_dir(*base, label, 0);
  using Manager = as::StateManager<as::NullSink, as::State, Policy>;
  as::StateOptions options;
  options.keep_previous = true;
  Manager keeping(keeping_dir, options), plain(plain_dir);
  const std::int64_t ts = 1700000000;
  const as::State state =
      as::update_state("Switchboard", ts, 42, 1234567890.125, {1699990000, 1699995000, ts});
  if (!keeping.load_state() || !plain.load_state()) {
    st.SkipWithError("first load");
    return;
  }
  std::vector<Side> sides = {
      {"library_us", [&] { return keeping.save_state(state).ok(); }},
      {"plain_save_us", [&] { return plain.save_state(state).ok(); }},
  };
  run_sides(st, sides, 0);
}

// What the run lock costs: try_lock_run() and its release, against the
// least a lock file can cost (open with O_CREAT, flock, close).
void bm_run_lock(benchmark::State& st, const std::string* base, const char* label) {
  const std::string dir = case_dir(*base, label, 0);
  as::StateManager<> manager(dir);
  const std::string floor_lock = dir + "/.floor.lock";
  std::vector<Side> sides = {
      {"library_us",
       [&] {
         auto lock = manager.try_lock_run();
         return lock.has_value();
       }},
      {"floor_us",
       [&] {
         const int fd = ::open(floor_lock.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
         if (fd < 0) return false;
         const bool locked = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
         ::close(fd);
         return locked;
       }},
  };
  run_sides(st, sides, 0);
}

// ------------------------------------------------ batches and directories --

// The four files of a collector's run: three outputs (1 KiB, 16 KiB,
// 256 KiB) and, last, a 300-byte state.
struct RunFiles {
  static constexpr std::size_t count = 4;
  const char* names[count] = {"summary.json", "detail.json", "full.json", "state.json"};
  std::string data[count] = {payload(1 << 10), payload(16 << 10), payload(256 << 10), payload(300)};
  std::size_t bytes() const {
    std::size_t n = 0;
    for (const std::string& d : data) n += d.size();
    return n;
  }
};

// The hand-written batch of n files: every temp file created (O_EXCL),
// written and given its mode; writeback started for all of them
// (sync_file_range), then each fsynced and closed; each file but the last
// renamed in order, the directory fsynced, the last renamed, the directory
// fsynced again. No lock, no look at the targets.
template <std::size_t n>
bool floor_batch(const char* dir, const char* const (&names)[n],
                 const std::string_view (&data)[n]) {
  const int dfd = ::open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return false;
  char temps[n][12];
  int fds[n];
  bool ok = true;
  std::size_t opened = 0;
  for (; opened < n && ok; ++opened) {
    next_floor_name(temps[opened]);
    fds[opened] =
        ::openat(dfd, temps[opened], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    ok = fds[opened] >= 0 && write_all(fds[opened], data[opened].data(), data[opened].size()) &&
         ::fchmod(fds[opened], 0644) == 0;
  }
  for (std::size_t i = 0; i < n && ok; ++i)
    ok = ::sync_file_range(fds[i], 0, 0, SYNC_FILE_RANGE_WRITE) == 0;
  for (std::size_t i = 0; i < n && ok; ++i) ok = ::fsync(fds[i]) == 0;
  for (std::size_t i = 0; i < opened; ++i)
    if (fds[i] >= 0) ok = ::close(fds[i]) == 0 && ok;
  for (std::size_t i = 0; i + 1 < n && ok; ++i) ok = ::renameat(dfd, temps[i], dfd, names[i]) == 0;
  ok = ok && ::fsync(dfd) == 0 && ::renameat(dfd, temps[n - 1], dfd, names[n - 1]) == 0 &&
       ::fsync(dfd) == 0;
  ::close(dfd);
  return ok;
}

bool floor_batch(const char* dir, const RunFiles& files) {
  const std::string_view data[RunFiles::count] = {files.data[0], files.data[1], files.data[2],
                                                  files.data[3]};
  return floor_batch(dir, files.names, data);
}

// A collector's four files under FullSync: a Batch (paths, as a collector
// adds them; reused, so its storage is kept) against four separate
// write_atomic calls and against the hand-written batch. Each side has a
// directory of its own.
void bm_batch(benchmark::State& st, const std::string* base, const char* label) {
  const RunFiles files;
  const std::string lib_dir = case_dir(*base, label, 0);
  const std::string separate_dir = case_dir(*base, label, 1);
  const std::string floor_dir = case_dir(*base, label, 2);
  std::vector<std::filesystem::path> lib_paths, separate_paths;
  for (const char* name : files.names) {
    lib_paths.push_back(lib_dir + "/" + name);
    separate_paths.push_back(separate_dir + "/" + name);
  }
  as::Batch<as::FullSync> batch;
  batch.reserve(RunFiles::count);
  std::vector<Side> sides = {
      {"library_us",
       [&] {
         for (std::size_t i = 0; i < RunFiles::count; ++i)
           if (!batch.add(lib_paths[i], files.data[i])) return false;
         return batch.commit().ok();
       }},
      {"separate_us",
       [&] {
         for (std::size_t i = 0; i < RunFiles::count; ++i)
           if (!as::write_atomic(separate_paths[i], files.data[i])) return false;
         return true;
       }},
      {"floor_us", [&] { return floor_batch(floor_dir.c_str(), files); }},
  };
  run_sides(st, sides, files.bytes());
}

// A collector's run saved with StateManager::save_state(state, batch): its
// three outputs (1 KiB, 16 KiB, 256 KiB) added to a reused Batch by path,
// then the state (about 260 bytes) saved as the batch's last file and the
// batch committed, under FullSync; against the batch floor of the same
// three outputs and the state, serialized with boost::json::serialize.
// Each side has a directory of its own.
void bm_state_batch(benchmark::State& st, const std::string* base, const char* label) {
  const RunFiles files;
  const std::string lib_dir = case_dir(*base, label, 0);
  const std::string floor_dir = case_dir(*base, label, 1);
  using Manager = as::StateManager<as::NullSink, as::State, as::FullSync>;
  Manager manager(lib_dir);  // once: its first load_state sweeps temp files
  const std::int64_t ts = 1700000000;
  const as::State state =
      as::update_state("Switchboard", ts, 42, 1234567890.125, {1699990000, 1699995000, ts});
  std::string lib_text(4096, '\0');
  std::size_t lib_size = 0;
  if (!manager.save_state(state) || !manager.load_state() ||
      !read_small_file(manager.state_file().c_str(), lib_text.data(), lib_text.size(), lib_size)) {
    st.SkipWithError("first save and load");
    return;
  }
  const boost::json::value parsed = boost::json::parse(lib_text.substr(0, lib_size));
  constexpr std::size_t outputs = RunFiles::count - 1;
  std::vector<std::filesystem::path> lib_paths;
  for (std::size_t i = 0; i < outputs; ++i) lib_paths.push_back(lib_dir + "/" + files.names[i]);
  as::Batch<as::FullSync> batch;
  batch.reserve(RunFiles::count);
  std::vector<Side> sides = {
      {"library_us",
       [&] {
         for (std::size_t i = 0; i < outputs; ++i)
           if (!batch.add(lib_paths[i], files.data[i])) return false;
         return manager.save_state(state, batch).ok();
       }},
      {"floor_us",
       [&] {
         const std::string text = boost::json::serialize(parsed);
         const std::string_view data[RunFiles::count] = {files.data[0], files.data[1],
                                                         files.data[2], text};
         return floor_batch(floor_dir.c_str(), files.names, data);
       }},
  };
  run_sides(st, sides, files.bytes() - files.data[outputs].size() + lib_size);
}

// What the sweep of a batch's directories costs a run: a new Batch per
// run (as a collector woken by a timer has), which sweeps the directory its
// four files went into once after its commit, against a reused one, which
// swept it in the warm-up and sweeps nothing more. The directory holds
// range(0) files of someone else's besides (the sweep reads every name,
// looks further only at the library's temp names). Each side has a
// directory of its own.
template <class Policy>
void bm_batch_sweep(benchmark::State& st, const std::string* base, const char* label) {
  const RunFiles files;
  const auto others = static_cast<std::size_t>(st.range(0));
  std::vector<std::filesystem::path> new_paths, reused_paths;
  for (int side = 0; side < 2; ++side) {
    const std::string dir = case_dir(*base, label, side == 0 ? others : others + 1);
    for (std::size_t i = 0; i < others; ++i)
      std::ofstream(dir + "/other-" + std::to_string(i) + ".csv") << i;
    for (const char* name : files.names)
      (side == 0 ? new_paths : reused_paths).push_back(dir + "/" + name);
  }
  as::Batch<Policy> reused;
  reused.reserve(RunFiles::count);
  const auto fill_and_commit = [&](as::Batch<Policy>& batch,
                                   const std::vector<std::filesystem::path>& paths) {
    for (std::size_t i = 0; i < RunFiles::count; ++i)
      if (!batch.add(paths[i], files.data[i])) return false;
    return batch.commit().ok();
  };
  std::vector<Side> sides = {
      {"library_us",
       [&] {
         as::Batch<Policy> fresh;
         return fill_and_commit(fresh, new_paths);
       }},
      {"reused_us", [&] { return fill_and_commit(reused, reused_paths); }},
  };
  run_sides(st, sides, files.bytes());
}

// A snapshot publish of the same four files (a new generation directory,
// its files synced, the generation and the parent synced, a symlink swapped
// over "current", the old generation pruned) against bm_batch's library
// side: the Batch. Each side has a directory of its own.
void bm_snapshot_vs_batch(benchmark::State& st, const std::string* base, const char* label) {
  const RunFiles files;
  const std::string snapshot_dir = case_dir(*base, label, 0);
  const std::string batch_dir = case_dir(*base, label, 1);
  auto snapshots = as::SnapshotWriter<as::FullSync>::open(snapshot_dir);
  if (!snapshots) {
    st.SkipWithError(snapshots.status().message().c_str());
    return;
  }
  std::vector<std::filesystem::path> batch_paths;
  for (const char* name : files.names) batch_paths.push_back(batch_dir + "/" + name);
  as::Batch<as::FullSync> batch;
  batch.reserve(RunFiles::count);
  std::vector<Side> sides = {
      {"library_us",
       [&] {
         for (std::size_t i = 0; i < RunFiles::count; ++i)
           if (!snapshots->add(files.names[i], files.data[i])) return false;
         return snapshots->publish().ok();
       }},
      {"batch_us",
       [&] {
         for (std::size_t i = 0; i < RunFiles::count; ++i)
           if (!batch.add(batch_paths[i], files.data[i])) return false;
         return batch.commit().ok();
       }},
  };
  run_sides(st, sides, files.bytes());
}

// Repeated saves of one file through an AtomicDirectory (opened once,
// before timing) against the named floor: under NoSync floor_save_by_path
// (5 calls, no directory descriptor), under FullSync floor_save_in (with a
// kept descriptor, both fsyncs). A third side, AtomicWriter (the directory
// opened, locked and closed per save), shows what the handle saves.
template <class Policy, bool Sync>
void bm_dir_save(benchmark::State& st, const std::string* base, const char* label) {
  const auto bytes = static_cast<std::size_t>(st.range(0));
  const std::string data = payload(bytes);
  const std::string dir = case_dir(*base, label, bytes);
  const std::filesystem::path writer_path = dir + "/writer.dat";
  as::Result<as::AtomicDirectory<Policy>> handle = as::AtomicDirectory<Policy>::open(dir);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!handle || dfd < 0) {
    st.SkipWithError("open the directory");
    if (dfd >= 0) ::close(dfd);
    return;
  }
  as::AtomicWriter<Policy> writer;
  std::vector<Side> sides = {
      {"library_us", [&] { return handle->write("library.dat", data).ok(); }},
      {"floor_us",
       [&] {
         if constexpr (Sync)
           return floor_save_in(dfd, "floor.dat", data);
         else
           return floor_save_by_path(dir, "floor.dat", data);
       }},
      {"writer_us", [&] { return writer.write(writer_path, data).ok(); }},
  };
  run_sides(st, sides, bytes);
  ::close(dfd);
}

#if BENCH_HAVE_QT
// QSaveFile vs the library, both durable: "library" is atomic_state, the
// baseline is Qt (its ratio below 1 means the library is the faster).
void bm_qsavefile(benchmark::State& st, const std::string* base, const char* label) {
  const auto bytes = static_cast<std::size_t>(st.range(0));
  const std::string data = payload(bytes);
  const std::string dir = case_dir(*base, label, bytes);
  const std::filesystem::path lib_path = dir + "/library.dat";
  const QString qt_path = QString::fromStdString(dir + "/qt.dat");
  as::AtomicWriter<as::FullSync> writer;
  std::vector<Side> sides = {
      {"library_us", [&] { return writer.write(lib_path, data).ok(); }},
      {"qsavefile_us",
       [&] {
         QSaveFile file(qt_path);
         if (!file.open(QIODevice::WriteOnly)) return false;
         if (file.write(data.data(), static_cast<qint64>(data.size())) !=
             static_cast<qint64>(data.size()))
           return false;
         return file.commit();
       }},
  };
  run_sides(st, sides, bytes);
}
#endif

const char* fs_type(const std::string& dir) {
  struct statfs s;
  if (::statfs(dir.c_str(), &s) != 0) return "unknown";
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0xEF53:
      return "ext2/3/4";
    case 0x01021994:
      return "tmpfs";
    case 0x58465342:
      return "xfs";
    case 0x9123683E:
      return "btrfs";
    case 0x794C7630:
      return "overlayfs";
    case 0x2FC12FC1:
      return "zfs";
    case 0x6969:
      return "nfs";
    default:
      return "other";
  }
}

std::string make_work_dir(const char* env, const char* fallback) {
  const char* base = std::getenv(env);
  std::string pattern = std::string(base && *base ? base : fallback) + "/atomic-state-bench.XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror(pattern.c_str());
    std::exit(1);
  }
  return pattern;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  g_dirs.disk = make_work_dir("BENCH_DIR", ".");
  g_dirs.tmpfs = make_work_dir("BENCH_TMPFS", "/dev/shm");
  benchmark::AddCustomContext("disk_dir", g_dirs.disk);
  benchmark::AddCustomContext("disk_fs", fs_type(g_dirs.disk));
  benchmark::AddCustomContext("tmpfs_dir", g_dirs.tmpfs);
  benchmark::AddCustomContext("tmpfs_fs", fs_type(g_dirs.tmpfs));
  benchmark::AddCustomContext("qsavefile",
                              BENCH_HAVE_QT ? "compared" : "not available (Qt 5 not found)");
  if (std::strcmp(fs_type(g_dirs.tmpfs), "tmpfs") != 0)
    std::fprintf(stderr, "warning: %s is not a tmpfs\n", g_dirs.tmpfs.c_str());
  if (!BENCH_HAVE_QT) std::fprintf(stderr, "note: QSaveFile not compared: Qt 5 was not found\n");

  const char* disk_env = std::getenv("BENCH_DISK_MIN_TIME");
  const double disk_min_time = disk_env && *disk_env ? std::atof(disk_env) : 1.0;
  const std::string* disk = &g_dirs.disk;
  const std::string* tmpfs = &g_dirs.tmpfs;
  for (const std::int64_t bytes : {256, 64 << 10, 16 << 20}) {
    benchmark::RegisterBenchmark("write/FullSync/disk", bm_write<as::FullSync, true>, disk,
                                 "write-full")
        ->Arg(bytes)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(disk_min_time);
    benchmark::RegisterBenchmark("write/NoSync/tmpfs", bm_write<as::NoSync, false>, tmpfs,
                                 "write-none")
        ->Arg(bytes)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::RegisterBenchmark("state_cycle/FullSync/disk",
                               bm_state<as::FullSync, true, Cycle::whole>, disk, "state-full")
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(disk_min_time);
  benchmark::RegisterBenchmark("state_cycle/NoSync/tmpfs",
                               bm_state<as::NoSync, false, Cycle::whole>, tmpfs, "state-none")
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  // The two halves of the tmpfs cycle, to see where a difference comes from.
  benchmark::RegisterBenchmark("state_load/NoSync/tmpfs", bm_state<as::NoSync, false, Cycle::load>,
                               tmpfs, "load-none")
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("state_save/NoSync/tmpfs", bm_state<as::NoSync, false, Cycle::save>,
                               tmpfs, "save-none")
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  // A save_state on its own, durable, against the floors of a FullSync save.
  benchmark::RegisterBenchmark("state_save/FullSync/disk",
                               bm_state<as::FullSync, true, Cycle::save>, disk, "save-full")
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(disk_min_time);
  benchmark::RegisterBenchmark("keep_previous/FullSync/disk", bm_keep_previous<as::FullSync>, disk,
                               "keep-full")
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(disk_min_time);
  benchmark::RegisterBenchmark("keep_previous/NoSync/tmpfs", bm_keep_previous<as::NoSync>, tmpfs,
                               "keep-none")
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("run_lock/tmpfs", bm_run_lock, tmpfs, "lock")
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  // A collector's four files as one batch, and the slot for a snapshot of them.
  benchmark::RegisterBenchmark("batch/FullSync/disk", bm_batch, disk, "batch-full")
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(disk_min_time);
  // A run's outputs and its state in one batch through save_state(state, batch).
  benchmark::RegisterBenchmark("state_batch/FullSync/disk", bm_state_batch, disk,
                               "state-batch-full")
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(disk_min_time);
  // What sweeping a batch's directory costs a run, beside 0, 100 and 10000 other files.
  for (const std::int64_t others : {0, 100, 10000}) {
    benchmark::RegisterBenchmark("batch_sweep/NoSync/tmpfs", bm_batch_sweep<as::NoSync>, tmpfs,
                                 "sweep-none")
        ->Arg(others)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::RegisterBenchmark("batch_sweep/FullSync/disk", bm_batch_sweep<as::FullSync>, disk,
                               "sweep-full")
      ->Arg(100)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(disk_min_time);
  benchmark::RegisterBenchmark("snapshot_vs_batch/FullSync/disk", bm_snapshot_vs_batch, disk,
                               "snapshot-full")
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->Iterations(1);
  // Repeated saves through a directory kept open.
  for (const std::int64_t bytes : {256, 64 << 10}) {
    benchmark::RegisterBenchmark("dir_save/NoSync/tmpfs", bm_dir_save<as::NoSync, false>, tmpfs,
                                 "dir-none")
        ->Arg(bytes)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("dir_save/FullSync/disk", bm_dir_save<as::FullSync, true>, disk,
                                 "dir-full")
        ->Arg(bytes)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(disk_min_time);
  }
#if BENCH_HAVE_QT
  for (const std::int64_t bytes : {256, 64 << 10})
    benchmark::RegisterBenchmark("qsavefile/FullSync/disk", bm_qsavefile, disk, "qsavefile")
        ->Arg(bytes)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(disk_min_time);
#endif

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::error_code ignored;
  std::filesystem::remove_all(g_dirs.disk, ignored);
  std::filesystem::remove_all(g_dirs.tmpfs, ignored);
  return 0;
}
