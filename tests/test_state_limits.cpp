// Where 32-bit targets differ: time_t and off_t of 32 bits (Debian's armhf
// without -D_TIME_BITS=64 -D_FILE_OFFSET_BITS=64), a 32-bit size_t. The same
// cases run on every build; scripts/cross runs them on armhf both ways, on
// arm64 and on riscv64. What a state holds never passes through time_t; what
// the library reads of the system (a file's modification time, its size)
// does, and is either right or refused with the C library's reason.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

using Manager = as::StateManager<test::CaptureSink&>;

namespace {

constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kInt64Min = std::numeric_limits<std::int64_t>::min();
constexpr bool kWideTime = sizeof(time_t) >= 8;
constexpr bool kWideOffsets = sizeof(off_t) >= 8;

// Sets a file's modification time with the 64-bit call where time_t is 32
// bits (the kernel's utimensat_time64), so that a test can plant a file
// from after 2038 whatever the build.
int set_mtime64(const test::fs::path& path, std::int64_t seconds) {
#if defined(SYS_utimensat_time64)
  if (!kWideTime) {
    const std::int64_t times[4] = {seconds, 0, seconds, 0};
    return static_cast<int>(::syscall(SYS_utimensat_time64, AT_FDCWD, path.c_str(), times, 0));
  }
#endif
  if (!kWideTime && (seconds > std::numeric_limits<std::int32_t>::max() ||
                     seconds < std::numeric_limits<std::int32_t>::min())) {
    errno = EOVERFLOW;
    return -1;
  }
  struct timespec times[2];
  times[0].tv_sec = static_cast<time_t>(seconds);
  times[0].tv_nsec = 0;
  times[1] = times[0];
  return ::utimensat(AT_FDCWD, path.c_str(), times, 0);
}

// A file's size, whatever off_t is (stat64 where it is 32 bits).
std::uint64_t size_of(const test::fs::path& path) {
#if defined(__GLIBC__) && !defined(__USE_FILE_OFFSET64) && !defined(__LP64__)
  struct stat64 st {};
  if (::stat64(path.c_str(), &st) != 0) return ~std::uint64_t{0};
#else
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ~std::uint64_t{0};
#endif
  return static_cast<std::uint64_t>(st.st_size);
}

// Bytes of a file at any offset, through the 64-bit calls.
std::string bytes_at(const test::fs::path& path, std::uint64_t offset, std::size_t n) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_LARGEFILE);
  if (fd < 0) return "(cannot open)";
  std::string out(n, '\0');
#if defined(__GLIBC__) && !defined(__USE_FILE_OFFSET64) && !defined(__LP64__)
  const ssize_t got = ::pread64(fd, out.data(), n, static_cast<off64_t>(offset));
#else
  const ssize_t got = ::pread(fd, out.data(), n, static_cast<off_t>(offset));
#endif
  ::close(fd);
  out.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
  return out;
}

// A sparse file of `size` bytes, through the 64-bit calls.
bool make_sparse(const test::fs::path& path, std::uint64_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_LARGEFILE, 0644);
  if (fd < 0) return false;
#if defined(__GLIBC__) && !defined(__USE_FILE_OFFSET64) && !defined(__LP64__)
  const bool ok = ::ftruncate64(fd, static_cast<off64_t>(size)) == 0;
#else
  const bool ok = ::ftruncate(fd, static_cast<off_t>(size)) == 0;
#endif
  return ::close(fd) == 0 && ok;
}

// Where a few GiB may be written quickly: a tmpfs (/dev/shm) with room to
// spare, else $TMPDIR. The files are removed by the test.
struct BigDir {
  test::fs::path path;
  BigDir() {
    std::error_code ec;
    const auto space = test::fs::space("/dev/shm", ec);
    std::string pattern = (!ec && space.available > (std::uintmax_t{8} << 30)
                               ? std::string("/dev/shm")
                               : test::TempDir().path().parent_path().string()) +
                          "/atomic_state_big.XXXXXX";
    if (::mkdtemp(pattern.data()) != nullptr) path = pattern;
  }
  ~BigDir() {
    std::error_code ignored;
    if (!path.empty()) test::fs::remove_all(path, ignored);
  }
  BigDir(const BigDir&) = delete;
  BigDir& operator=(const BigDir&) = delete;
};

}  // namespace

TEST_CASE("the build's own types, as the log shows them", "[limits]") {
  // Printed so that each target's log says which case it ran.
  WARN("time_t " << 8 * sizeof(time_t) << " bits, off_t " << 8 * sizeof(off_t) << " bits, size_t "
                 << 8 * sizeof(std::size_t) << " bits");
  STATIC_REQUIRE(sizeof(as::FileInfo::modified) == 8);
  STATIC_REQUIRE(sizeof(as::FileInfo::size) == 8);
}

TEST_CASE("instants past 2038 and at the int64 limits are formatted exactly", "[limits]") {
  struct Row {
    std::int64_t t;
    const char* text;
  };
  const Row rows[] = {
      {2147483647, "2038-01-19T03:14:07Z"},  // the last second of a 32-bit time_t
      {2147483648, "2038-01-19T03:14:08Z"},
      {4294967295, "2106-02-07T06:28:15Z"},  // the last of an unsigned 32-bit count
      {4294967296, "2106-02-07T06:28:16Z"},
      {-2147483649, "1901-12-13T20:45:51Z"},
      {4102444800, "2100-01-01T00:00:00Z"},
      {kInt64Max, "292277026596-12-04T15:30:07Z"},
      {kInt64Min, "-292277022657-01-27T08:29:52Z"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.t);
    CHECK(as::to_rfc3339(row.t) == row.text);
  }
}

TEST_CASE("timestamps past 2038 and at the int64 limits are saved, loaded and compared exactly",
          "[limits]") {
  const std::int64_t instants[] = {2147483647, 2147483648, 4102444800,    253402300799,
                                   kInt64Max,  kInt64Min,  kInt64Min + 1, -2147483649};
  for (const std::int64_t t : instants) {
    CAPTURE(t);
    test::TempDir dir;
    test::CaptureSink log;
    Manager manager(dir.path(), log);
    const State state = as::update_state("switchboard", t, kInt64Max, 1.5e9, {t, kInt64Min, t});
    REQUIRE(manager.save_state(state).ok());
    const std::string text = test::read_file(dir / "state.json");
    CHECK(text.find("\"last_updated\": " + std::to_string(t) + ",") != std::string::npos);
    CHECK(text.find("\"last_updated_iso\": \"" + as::to_rfc3339(t) + "\"") != std::string::npos);
    CHECK(text.find("\"oldest_snapshot\": " + std::to_string(kInt64Min)) != std::string::npos);
    const auto loaded = manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(loaded->state() == state);
    CHECK(loaded->last_updated == t);
    CHECK(loaded->newest_snapshot == t);
    CHECK(log.with("state saved")[0].integer("timestamp") == t);
  }
}

TEST_CASE("cursors past 2038 and at the int64 limits are compared exactly", "[limits]") {
  struct Row {
    std::int64_t last, current;
    bool process;
    Level level;
  };
  const Row rows[] = {
      {2147483647, 2147483648, true, Level::debug},  // across 2038
      {2147483648, 2147483647, false, Level::warn},
      {4294967296, 4294967296, false, Level::info},  // 2^32: not 0 truncated
      {4294967296, 4294967297, true, Level::debug},
      {kInt64Max - 1, kInt64Max, true, Level::debug},
      {kInt64Max, kInt64Max, false, Level::info},
      {kInt64Max, kInt64Min, false, Level::warn},
      {kInt64Min, kInt64Min + 1, true, Level::debug},
      {kInt64Min, kInt64Max, true, Level::debug},  // a delta of 2^64 - 1
  };
  for (const Row& row : rows) {
    CAPTURE(row.last, row.current);
    test::CaptureSink log;
    Manager manager("/nonexistent", log);
    const State last = as::update_state("switchboard", row.last, 1, 1.0);
    CHECK(manager.should_process(row.current, last) == row.process);
    REQUIRE(log.size() == 1);
    CHECK(log.last().level == row.level);
    const test::Record r = log.last();
    REQUIRE(r.has("current_ts"));
    CHECK(r.integer("current_ts") == row.current);
    CHECK(r.integer("last_ts") == row.last);
    if (r.has("delta_seconds")) {
      CHECK(r.unsigned_integer("delta_seconds") ==
            static_cast<std::uint64_t>(row.current) - static_cast<std::uint64_t>(row.last));
    }
  }
}

TEST_CASE("a corrupt file's stamp is its modification time past 2038, where time_t holds it",
          "[limits]") {
  for (const std::int64_t mtime : {std::int64_t{2147483647}, std::int64_t{2147483648},
                                   std::int64_t{4102444800}, std::int64_t{4294967296}}) {
    CAPTURE(mtime);
    test::TempDir dir;
    test::write_plain(dir / "state.json", "{corrupt");
    REQUIRE(set_mtime64(dir / "state.json", mtime) == 0);
    test::CaptureSink log;
    Manager manager(dir.path(), log);
    const auto loaded = manager.load_state();
    if (kWideTime || mtime <= std::numeric_limits<std::int32_t>::max()) {
      REQUIRE(loaded.has_value());
      CHECK(loaded->origin == LoadOrigin::recovered);
      const std::string copy = (dir / ("state.json.corrupt-" + std::to_string(mtime))).string();
      CHECK(loaded->corrupt_copy == copy);
      CHECK(test::read_file(copy) == "{corrupt");
    } else {
      // A 32-bit time_t cannot hold the file's times: the C library refuses
      // to describe the file at all (EOVERFLOW), and the load says so,
      // touching nothing. It is not a first run, nor a corrupt file.
      REQUIRE_FALSE(loaded.has_value());
      CHECK(loaded.status().code() == std::errc::value_too_large);
      CHECK(loaded.status().message().find("state.json") != std::string::npos);
      WARN("32-bit time_t, a file from " << as::to_rfc3339(mtime) << ": "
                                         << loaded.status().message());
      std::vector<std::string> names;
      for (const auto& entry : test::fs::directory_iterator(dir.path())) {
        names.push_back(entry.path().filename().string());
      }
      CHECK(names == std::vector<std::string>{"state.json"});
      CHECK(test::read_file(dir / "state.json") == "{corrupt");
    }
  }
}

TEST_CASE("a state file from after 2038 is replaced, or refused untouched where time_t is 32 bits",
          "[limits]") {
  test::TempDir dir;
  test::CaptureSink log;
  Manager manager(dir.path(), log);
  REQUIRE(manager.save_state(as::update_state("switchboard", 1700000000, 1, 1.0)).ok());
  const std::string before = test::read_file(dir / "state.json");
  REQUIRE(set_mtime64(dir / "state.json", 4102444800) == 0);  // 2100-01-01
  const State next = as::update_state("switchboard", 4102444800, 2, 2.0);
  const as::Status st = manager.save_state(next);
  if (kWideTime) {
    REQUIRE(st.ok());
    const auto loaded = manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(loaded->state() == next);
  } else {
    // After 2038 every file the system writes is such a file: a 32-bit
    // time_t build can then neither load nor save. It says so.
    REQUIRE_FALSE(st.ok());
    CHECK(st.code() == std::errc::value_too_large);
    WARN("32-bit time_t, saving over a file from 2100: " << st.message());
    CHECK(test::read_file(dir / "state.json") == before);
    CHECK(test::temp_files_in(dir.path()).empty());
  }
}

TEST_CASE("a directory is listed whatever its entries' offsets and inode numbers", "[limits]") {
  // A 32-bit off_t's readdir() fails with EOVERFLOW on an entry whose
  // offset or inode number passes 32 bits: ext4's 64-bit hash offsets on a
  // 64-bit kernel (an armhf program on an arm64 board, or under qemu-user),
  // XFS and btrfs inode numbers. The sweep of temp files and the removal of
  // old corrupt copies list the state's directory.
  test::TempDir dir;
  for (int i = 0; i < 50; ++i) test::write_plain(dir / ("other-" + std::to_string(i)), "x");
  test::CaptureSink log;
  Manager manager(dir.path(), log);
  const auto swept = manager.remove_stale_temp_files();
  INFO((swept.has_value() ? std::string() : swept.status().message()));
  REQUIRE(swept.has_value());
  CHECK(swept->removed == 0);
}

TEST_CASE("a file over 2 GiB is written whole, or refused with the target untouched", "[limits]") {
  BigDir big;
  REQUIRE_FALSE(big.path.empty());
  const test::fs::path target = big.path / "big.bin";
  test::write_plain(target, "old");
  constexpr std::size_t kChunk = std::size_t{1} << 20;
  constexpr std::uint64_t kChunks = 2048 + 3;  // 2 GiB and 3 MiB
  std::string chunk(kChunk, '\0');
  for (std::size_t i = 0; i < kChunk; ++i) chunk[i] = static_cast<char>('a' + i % 26);

  as::AtomicWriter<as::NoSync> writer;
  auto tx = writer.begin(target.string());
  REQUIRE(tx);
  as::Status failed;
  for (std::uint64_t i = 0; i < kChunks && failed.ok(); ++i) {
    chunk[0] = static_cast<char>('A' + i % 26);  // each chunk its own mark
    failed = tx->write(chunk);
  }
  if (failed.ok()) failed = tx->commit();
  if (failed.ok()) {
    CHECK(size_of(target) == kChunks * kChunk);
    const std::uint64_t past = (std::uint64_t{2048} << 20);  // the chunk at 2 GiB
    CHECK(bytes_at(target, past, 3) == std::string{static_cast<char>('A' + 2048 % 26), 'b', 'c'});
    CHECK(bytes_at(target, kChunks * kChunk - 1, 2) == std::string(1, chunk[kChunk - 1]));
    CHECK(bytes_at(target, (std::uint64_t{2047} << 20) + kChunk - 1, 2) ==
          std::string{chunk[kChunk - 1], static_cast<char>('A' + 2048 % 26)});
  } else {
    // Only where off_t is 32 bits: the kernel's EFBIG at 2 GiB - 1 (not
    // under qemu-user, whose host kernel has no such limit).
    CHECK_FALSE(kWideOffsets);
    CHECK(failed.step() == Step::write_data);
    CHECK(failed.code() == std::errc::file_too_large);
    WARN("32-bit off_t: " << failed.message());
    CHECK(test::read_file(target) == "old");
  }
  CHECK(test::temp_files_in(big.path).empty());
}

TEST_CASE("a target over 2 GiB is replaced, or refused before anything is touched", "[limits]") {
  BigDir big;
  REQUIRE_FALSE(big.path.empty());
  const test::fs::path target = big.path / "state.json";
  constexpr std::uint64_t kSize = std::uint64_t{3} << 30;  // sparse: no blocks
  REQUIRE(make_sparse(target, kSize));
  REQUIRE(size_of(target) == kSize);

  test::CaptureSink log;
  Manager manager(big.path.string(), log);
  const auto loaded = manager.load_state();
  REQUIRE_FALSE(loaded.has_value());  // never a first run, never read whole
  if (kWideOffsets) {
    CHECK(loaded.status().step() == Step::check_file);
    CHECK(loaded.status().code() == std::errc::file_too_large);
  } else {
    CHECK(loaded.status().code() == std::errc::value_too_large);
  }
  WARN("a 3 GiB state file: " << loaded.status().message());
  CHECK(size_of(target) == kSize);

  as::AtomicWriter<as::NoSync> writer;
  const as::Status st = writer.write(target.string(), "{}\n");
  if (st.ok()) {
    CHECK(test::read_file(target) == "{}\n");
  } else {
    CHECK_FALSE(kWideOffsets);
    CHECK(st.code() == std::errc::value_too_large);
    WARN("32-bit off_t, a 3 GiB target: " << st.message());
    CHECK(size_of(target) == kSize);
  }
  CHECK(test::temp_files_in(big.path).empty());
}
