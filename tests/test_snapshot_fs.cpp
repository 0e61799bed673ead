// SnapshotWriter: a set of files readers see change all at once.
//   [snapshot]        behaviour on a real filesystem: publish and read
//                     through current, generations kept, a killed
//                     publisher's leftovers removed, one publisher at a
//                     time, bad input, a current that is not ours, discard,
//                     moves
//   [snapshot-trace]  the exact calls, against support/snapshot_protocol.hpp
//   [snapshot-faults] every call failed with every errno, once and for good
#include <fcntl.h>
#include <grp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"
#include "support/snapshot_protocol.hpp"

namespace fs = test::fs;

namespace {

using Writer = SnapshotWriter<>;
using Files = std::map<std::string, std::string>;

/// The generation directories in `dir`, by number.
std::vector<std::uint64_t> generations(const fs::path& dir) {
  std::vector<std::uint64_t> out;
  for (const std::string& name : test::names_in(dir))
    if (const std::uint64_t n = atomic_state::detail::generation_of(name); n != 0) out.push_back(n);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> temp_links(const fs::path& dir) {
  std::vector<std::string> out;
  for (const std::string& name : test::names_in(dir))
    if (name.rfind(".current.tmp-", 0) == 0 && name.size() == 19) out.push_back(name);
  return out;
}

/// What DIR/current names, "" when it is not a symlink.
std::string current_target(const fs::path& dir) {
  char buffer[4096];
  const ssize_t n = ::readlink((dir / "current").c_str(), buffer, sizeof buffer);
  return n < 0 ? std::string() : std::string(buffer, static_cast<std::size_t>(n));
}

/// The files a reader sees: DIR/current opened once, each file read
/// relative to it.
Files read_set(int generation_fd) {
  Files out;
  const int listing = ::openat(generation_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (listing < 0) return out;
  if (DIR* d = ::fdopendir(listing)) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      const int fd = ::openat(generation_fd, name.c_str(), O_RDONLY | O_CLOEXEC);
      std::string data;
      char buffer[4096];
      for (ssize_t n; fd >= 0 && (n = ::read(fd, buffer, sizeof buffer)) > 0;)
        data.append(buffer, static_cast<std::size_t>(n));
      if (fd >= 0) ::close(fd);
      out[name] = data;
    }
    ::closedir(d);
  }
  return out;
}

Files read_current(const fs::path& dir) {
  const int fd = ::open((dir / "current").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return {};
  Files out = read_set(fd);
  ::close(fd);
  return out;
}

/// Publishes `files` (each mode 0644) through a writer of its own.
void publish(const fs::path& dir, const Files& files, const SnapshotOptions& options = {}) {
  auto writer = Writer::open(dir.string(), options);
  REQUIRE(writer.has_value());
  for (const auto& [name, data] : files) REQUIRE(writer->add(name, data).ok());
  REQUIRE(writer->publish().ok());
}

/// A file of a generation made by hand, as a killed publisher leaves it.
void make_generation(const fs::path& dir, std::uint64_t n, const Files& files) {
  const fs::path g = dir / ("gen-" + std::to_string(n));
  fs::create_directory(g);
  for (const auto& [name, data] : files) test::write_plain(g / name, data);
}

/// Every name in `dir` and what it is: a snapshot of the directory to
/// compare before and after a refusal.
std::map<std::string, std::string> listing(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    const fs::path p = entry.path();
    const std::string rel = fs::relative(p, dir).string();
    if (fs::is_symlink(fs::symlink_status(p)))
      out[rel] = "-> " + fs::read_symlink(p).string();
    else if (fs::is_directory(fs::symlink_status(p)))
      out[rel] = "dir " + std::to_string(test::mode_of(p));
    else
      out[rel] = test::read_file(p) + " " + std::to_string(test::mode_of(p));
  }
  return out;
}

}  // namespace

// ============================================================ [snapshot] ==

TEST_CASE("a publish is read through current: the whole set, its modes, nothing else",
          "[snapshot]") {
  TempDir dir;
  auto writer = Writer::open(dir.path().string());
  REQUIRE(writer.has_value());
  CHECK(writer->current() == 0);
  CHECK(writer->path() == dir.path().string());
  REQUIRE(writer->add("a", "1").ok());
  REQUIRE(writer->add("b", "22", 0600).ok());
  REQUIRE(writer->add("empty", "", 0640).ok());
  CHECK(writer->size() == 3);
  CHECK(current_target(dir.path()).empty());  // nothing visible before the publish
  REQUIRE(writer->publish().ok());
  CHECK(writer->size() == 0);
  CHECK(writer->current() == 1);
  CHECK(current_target(dir.path()) == "gen-1");
  CHECK(read_current(dir.path()) == Files{{"a", "1"}, {"b", "22"}, {"empty", ""}});
  CHECK(test::mode_of(dir / "gen-1" / "a") == 0644);
  CHECK(test::mode_of(dir / "gen-1" / "b") == 0600);
  CHECK(test::mode_of(dir / "gen-1" / "empty") == 0640);
  CHECK(test::mode_of(dir / "gen-1") == 0755);
  CHECK(test::mode_of(dir / ".snapshot.lock") == 0600);

  // The next set replaces the whole set: a file left out is gone from it.
  REQUIRE(writer->add("a", "one").ok());
  REQUIRE(writer->add("d", std::string(100000, 'd')).ok());
  REQUIRE(writer->publish().ok());
  CHECK(writer->current() == 2);
  CHECK(current_target(dir.path()) == "gen-2");
  CHECK(read_current(dir.path()) == Files{{"a", "one"}, {"d", std::string(100000, 'd')}});
  CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1, 2});
  CHECK(temp_links(dir.path()).empty());
}

TEST_CASE("a reader inside the old generation reads it whole after a publish", "[snapshot]") {
  TempDir dir;
  publish(dir.path(), {{"a", "old a"}, {"b", "old b"}});
  const int reader = ::open((dir / "current").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(reader >= 0);
  publish(dir.path(), {{"a", "new a"}, {"b", "new b"}});
  CHECK(read_set(reader) == Files{{"a", "old a"}, {"b", "old b"}});
  CHECK(read_current(dir.path()) == Files{{"a", "new a"}, {"b", "new b"}});
  ::close(reader);
}

TEST_CASE("generations are kept as SnapshotOptions::keep says: current and keep-1 before it",
          "[snapshot]") {
  for (const unsigned keep : {1u, 2u, 3u}) {
    CAPTURE(keep);
    TempDir dir;
    SnapshotOptions options;
    options.keep = keep;
    {
      auto writer = Writer::open(dir.path().string(), options);
      REQUIRE(writer.has_value());
      for (std::uint64_t n = 1; n <= 5; ++n) {
        REQUIRE(writer->add("n", std::to_string(n)).ok());
        REQUIRE(writer->publish().ok());
        std::vector<std::uint64_t> expected;
        for (std::uint64_t k = n >= keep ? n - keep + 1 : 1; k <= n; ++k) expected.push_back(k);
        CHECK(generations(dir.path()) == expected);
        CHECK(read_current(dir.path()) == Files{{"n", std::to_string(n)}});
      }
    }
    // A writer opened later with a smaller keep prunes at open.
    const auto later = Writer::open(dir.path().string(), SnapshotOptions{});
    REQUIRE(later.has_value());
    CHECK(generations(dir.path()).size() == std::min(keep, 2u));
  }
}

TEST_CASE("open removes what a killed publisher left, never current nor what is not its own",
          "[snapshot]") {
  struct Row {
    const char* name;
    Files leftovers;  // name -> "" for a generation dir made by hand
    std::vector<std::string> temp_links;
    std::vector<std::uint64_t> generations_after;
    std::uint64_t next_generation;
  };
  // Starting from gen-1 and gen-2 (current) under keep 2.
  const Row rows[] = {
      {"nothing left", {}, {}, {1, 2}, 3},
      {"a half-built generation with files", {{"gen-3", "a b"}}, {}, {1, 2}, 3},
      {"an empty half-built generation", {{"gen-3", ""}}, {}, {1, 2}, 3},
      {"two half-built generations", {{"gen-3", "a"}, {"gen-7", "a b c"}}, {}, {1, 2}, 3},
      {"a temp link to a half-built generation",
       {{"gen-3", "a"}},
       {".current.tmp-AbC123"},
       {1, 2},
       3},
      {"a temp link to the old generation", {}, {".current.tmp-xyz789"}, {1, 2}, 3},
      {"three temp links",
       {},
       {".current.tmp-aaaaaa", ".current.tmp-bbbbbb", ".current.tmp-cccccc"},
       {1, 2},
       3},
  };
  for (const Row& row : rows) {
    CAPTURE(row.name);
    TempDir dir;
    publish(dir.path(), {{"a", "1"}});
    publish(dir.path(), {{"a", "2"}});
    for (const auto& [gen, files] : row.leftovers) {
      fs::create_directory(dir / gen);
      std::string names = files;
      for (std::size_t at = 0; at < names.size();) {
        const std::size_t space = names.find(' ', at);
        const std::string f = names.substr(at, space == std::string::npos ? space : space - at);
        test::write_plain(dir / gen / f, "half");
        at = space == std::string::npos ? names.size() : space + 1;
      }
    }
    for (const std::string& link : row.temp_links)
      fs::create_symlink(row.leftovers.empty() ? "gen-1" : row.leftovers.begin()->first,
                         dir / link);
    // Names that are not the writer's: left alone.
    const char* const foreign[] = {"gen-01",
                                   "gen-0",
                                   "gen-x",
                                   "gen-",
                                   ".current.tmp-abc",
                                   "current.tmp-abcdef",
                                   "notes.txt",
                                   "gen-99999999999999999999999"};
    for (const char* name : foreign) fs::create_directory(dir / name);

    auto writer = Writer::open(dir.path().string());
    REQUIRE(writer.has_value());
    CHECK(writer->current() == 2);
    CHECK(generations(dir.path()) == row.generations_after);
    CHECK(temp_links(dir.path()).empty());
    CHECK(current_target(dir.path()) == "gen-2");
    CHECK(read_current(dir.path()) == Files{{"a", "2"}});
    for (const char* name : foreign) CHECK(fs::is_directory(dir / name));
    REQUIRE(writer->add("a", "3").ok());
    CHECK(fs::exists(dir / ("gen-" + std::to_string(row.next_generation)) / "a"));
    REQUIRE(writer->publish().ok());
    CHECK(read_current(dir.path()) == Files{{"a", "3"}});
    // remove_stale_generations finds nothing more to do.
    const auto swept = writer->remove_stale_generations();
    REQUIRE(swept.has_value());
    CHECK(swept->removed == 0);
  }
}

TEST_CASE("remove_stale_generations removes a half-built generation and counts it", "[snapshot]") {
  TempDir dir;
  publish(dir.path(), {{"a", "1"}});
  auto writer = Writer::open(dir.path().string());
  REQUIRE(writer.has_value());
  make_generation(dir.path(), 5, {{"x", "half"}});
  fs::create_symlink("gen-5", dir / ".current.tmp-QWErty");
  const auto swept = writer->remove_stale_generations();
  REQUIRE(swept.has_value());
  CHECK(swept->removed == 2);
  CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1});
  CHECK(temp_links(dir.path()).empty());
}

TEST_CASE("a claim left by a killed publisher is removed by the next open", "[snapshot]") {
  // The writer's AtomicDirectory claims the directory with a locked temp
  // file (.tmp-XXXXXX); a publisher killed with SIGKILL leaves it. The next
  // open must not let them pile up.
  TempDir dir;
  publish(dir.path(), {{"a", "1"}});
  test::write_plain(dir / ".tmp-Zz0Zz0", "");
  auto writer = Writer::open(dir.path().string());
  REQUIRE(writer.has_value());
  const auto temps = test::temp_files_in(dir.path());
  CAPTURE(temps.size());
  CHECK(std::count(temps.begin(), temps.end(), ".tmp-Zz0Zz0") == 0);
}

TEST_CASE("one publisher at a time: a second open fails at once with EWOULDBLOCK", "[snapshot]") {
  TempDir dir;
  auto first = Writer::open(dir.path().string());
  REQUIRE(first.has_value());
  for (int round = 0; round < 2; ++round) {
    auto second = Writer::open(dir.path().string());
    REQUIRE_FALSE(second.has_value());
    CHECK(second.status().step() == Step::lock_run);
    CHECK(second.status().code().value() == EWOULDBLOCK);
    CHECK(second.status().path() == (dir / ".snapshot.lock").string());
    const std::string message = second.status().message();
    CAPTURE(message);
    CHECK(message.find("another SnapshotWriter has the directory open") != std::string::npos);
  }
  // Its failure took nothing from the holder, which still publishes.
  REQUIRE(first->add("a", "1").ok());
  REQUIRE(first->publish().ok());
  first = Writer::open(dir.path().string() + "/other");  // the lock released by assignment
  REQUIRE(first.has_value());
  CHECK(Writer::open(dir.path().string()).has_value());
}

namespace {
/// In a child as uid 65534: open DIR/.snapshot.lock (read-only is enough
/// for flock) and try to lock it. 0: opened and locked; 1: open refused;
/// 2: opened, lock refused; 77: cannot drop to 65534.
int lock_as_nobody(const fs::path& lock) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0)
      ::_exit(77);
    const int fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) ::_exit(1);
    ::_exit(::flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : 2);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
}  // namespace

TEST_CASE("no other user can open or hold the lock: it is 0600, even if it was opened up",
          "[snapshot]") {
  if (::geteuid() != 0) {
    WARN("skipped: dropping to uid 65534 needs root");
    return;
  }
  struct Row {
    const char* name;
    int existing_mode;  // -1: no lock file yet
  };
  const Row rows[] = {{"made by open", -1},
                      {"already 0600", 0600},
                      {"opened up to 0644", 0644},
                      {"opened up to 0666", 0666}};
  for (const Row& row : rows) {
    CAPTURE(row.name);
    TempDir dir;
    ::chmod(dir.path().c_str(), 0777);  // only the lock's own mode keeps them out
    if (row.existing_mode >= 0)
      test::write_plain(dir / ".snapshot.lock", "", static_cast<mode_t>(row.existing_mode));
    {
      test::UmaskGuard umask(0);
      auto writer = Writer::open(dir.path().string());
      REQUIRE(writer.has_value());
    }
    CHECK(test::mode_of(dir / ".snapshot.lock") == 0600);
    const int r = lock_as_nobody(dir / ".snapshot.lock");
    if (r == 77) {
      WARN("skipped: cannot drop to uid 65534");
      return;
    }
    CHECK(r == 1);
    CHECK(Writer::open(dir.path().string()).has_value());
  }
}

TEST_CASE("bad input is refused before anything is written", "[snapshot]") {
  struct Row {
    const char* name;
    std::string file;
    unsigned mode;
    std::errc code;
  };
  const std::string too_long(ATOMIC_STATE_NAME_MAX + 1, 'x');
  const Row rows[] = {
      {"a name with a slash", "a/b", 0644, std::errc::invalid_argument},
      {"an absolute path", "/etc/passwd", 0644, std::errc::invalid_argument},
      {"a trailing slash", "a/", 0644, std::errc::invalid_argument},
      {"..", "..", 0644, std::errc::invalid_argument},
      {".", ".", 0644, std::errc::invalid_argument},
      {"the empty name", "", 0644, std::errc::invalid_argument},
      {"a NUL byte", std::string("a\0b", 3), 0644, std::errc::invalid_argument},
      {"a name one byte too long", too_long, 0644, std::errc::filename_too_long},
      {"a mode above 07777", "a", 010000, std::errc::invalid_argument},
      {"a mode of all bits", "a", ~0u, std::errc::invalid_argument},
      {"a duplicate", "dup", 0644, std::errc::file_exists},
  };
  for (const bool first_add : {true, false}) {
    for (const Row& row : rows) {
      CAPTURE(row.name, first_add);
      TempDir dir;
      publish(dir.path(), {{"a", "1"}});
      auto writer = Writer::open(dir.path().string());
      REQUIRE(writer.has_value());
      const bool duplicate = row.code == std::errc::file_exists;
      if (!first_add || duplicate) REQUIRE(writer->add("dup", "first").ok());
      const auto before = listing(dir.path());
      const Status s = writer->add(row.file, "data", row.mode);
      REQUIRE_FALSE(s.ok());
      CHECK(s.step() == Step::check_path);
      CHECK(s.code() == std::make_error_code(row.code));
      CHECK(listing(dir.path()) == before);
      CHECK(writer->size() == (!first_add || duplicate ? 1u : 0u));
      if (writer->size() == 1) {
        REQUIRE(writer->publish().ok());
        CHECK(read_current(dir.path()) == Files{{"dup", "first"}});
      } else {
        CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1});
      }
    }
  }
  // A name of exactly the longest length is a name.
  TempDir dir;
  auto writer = Writer::open(dir.path().string());
  REQUIRE(writer.has_value());
  CHECK(writer->add(std::string(ATOMIC_STATE_NAME_MAX, 'y'), "ok").ok());
  CHECK(writer->add("..a", "ok").ok());
  CHECK(writer->add(".", "x").step() == Step::check_path);
  CHECK(writer->publish().ok());
}

TEST_CASE("unusable options are refused by open, touching nothing", "[snapshot]") {
  struct Row {
    const char* name;
    SnapshotOptions options;
  };
  SnapshotOptions keep0;
  keep0.keep = 0;
  SnapshotOptions mode;
  mode.directory_mode = 010000;
  const Row rows[] = {{"keep 0", keep0}, {"a directory mode above 07777", mode}};
  for (const Row& row : rows) {
    CAPTURE(row.name);
    TempDir dir;
    publish(dir.path(), {{"a", "1"}});
    const auto before = listing(dir.path());
    const auto writer = Writer::open(dir.path().string(), row.options);
    REQUIRE_FALSE(writer.has_value());
    CHECK(writer.status().step() == Step::check_path);
    CHECK(writer.status().code() == std::make_error_code(std::errc::invalid_argument));
    CHECK(listing(dir.path()) == before);
    // Nor is a missing directory made.
    CHECK_FALSE(Writer::open((dir / "missing").string(), row.options).has_value());
    CHECK_FALSE(fs::exists(dir / "missing"));
  }
}

TEST_CASE("an empty publish is invalid_use and changes nothing", "[snapshot]") {
  TempDir dir;
  publish(dir.path(), {{"a", "1"}});
  auto writer = Writer::open(dir.path().string());
  REQUIRE(writer.has_value());
  const auto before = listing(dir.path());
  for (int round = 0; round < 2; ++round) {
    const Status s = writer->publish();
    CHECK(s.step() == Step::invalid_use);
    CHECK(s.code() == std::make_error_code(std::errc::invalid_argument));
    CHECK(listing(dir.path()) == before);
    REQUIRE(writer->add("b", "2").ok());
    writer->discard();  // and after a discard, empty again
  }
}

TEST_CASE("a current that is not a symlink to a generation: open refuses and leaves it alone",
          "[snapshot]") {
  struct Row {
    const char* name;
    const char* link;  // nullptr: not a symlink
    bool directory;
  };
  const Row rows[] = {
      {"a regular file", nullptr, false},
      {"a directory", nullptr, true},
      {"a symlink to gen-01", "gen-01", false},
      {"a symlink to gen-0", "gen-0", false},
      {"a symlink to other", "other", false},
      {"an absolute symlink", "/tmp/gen-1", false},
      {"a symlink with a slash", "gen-1/", false},
      {"a symlink to ../x/gen-1", "../x/gen-1", false},
      {"a symlink to ./gen-1", "./gen-1", false},
      {"a symlink too long to be a generation",
       "gen-1111111111111111111111111111111111111111111111111", false},
  };
  for (const Row& row : rows) {
    CAPTURE(row.name);
    TempDir dir;
    make_generation(dir.path(), 1, {{"a", "1"}});
    make_generation(dir.path(), 2, {{"a", "half"}});
    fs::create_symlink("gen-1", dir / ".current.tmp-Abcdef");
    if (row.link)
      fs::create_symlink(row.link, dir / "current");
    else if (row.directory)
      fs::create_directory(dir / "current");
    else
      test::write_plain(dir / "current", "mine");
    const auto before = listing(dir.path());
    auto writer = Writer::open(dir.path().string());
    REQUIRE_FALSE(writer.has_value());
    CHECK(writer.status().step() == Step::check_path);
    CHECK(writer.status().path() == (dir / "current").string());
    auto after = listing(dir.path());
    after.erase(".snapshot.lock");  // the only thing made: the lock file
    CHECK(after == before);
  }
}

TEST_CASE("discard and the destructor remove the unpublished generation", "[snapshot]") {
  TempDir dir;
  publish(dir.path(), {{"a", "1"}});
  {
    auto writer = Writer::open(dir.path().string());
    REQUIRE(writer.has_value());
    REQUIRE(writer->add("a", "2").ok());
    REQUIRE(writer->add("b", "2").ok());
    CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1, 2});
    writer->discard();
    CHECK(writer->size() == 0);
    CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1});
    writer->discard();  // twice is nothing
    REQUIRE(writer->add("c", "3").ok());
    REQUIRE(writer->publish().ok());
    CHECK(read_current(dir.path()) == Files{{"c", "3"}});
    REQUIRE(writer->add("d", "4").ok());
    const auto gens = generations(dir.path());
    CHECK(gens.size() == 3);
  }  // destroyed with an unpublished generation
  CHECK(generations(dir.path()).size() == 2);
  CHECK(read_current(dir.path()) == Files{{"c", "3"}});
  CHECK(test::temp_files_in(dir.path()).empty());
}

TEST_CASE("a moved writer: the new one holds the lock and the generation, the old one refuses",
          "[snapshot]") {
  TempDir dir;
  TempDir other;
  auto opened = Writer::open(dir.path().string());
  REQUIRE(opened.has_value());
  Writer a = std::move(*opened);
  REQUIRE(a.add("x", "1").ok());
  Writer b(std::move(a));
  CHECK(b.size() == 1);
  CHECK(a.add("y", "2").step() == Step::invalid_use);  // NOLINT(bugprone-use-after-move)
  CHECK(a.publish().step() == Step::invalid_use);
  CHECK(a.remove_stale_generations().status().step() == Step::invalid_use);
  a.discard();                                                 // nothing to do
  CHECK_FALSE(Writer::open(dir.path().string()).has_value());  // b holds the lock
  REQUIRE(b.publish().ok());
  CHECK(read_current(dir.path()) == Files{{"x", "1"}});

  // Assigning over a writer with an unpublished generation discards it and
  // releases its directory.
  auto in_other = Writer::open(other.path().string());
  REQUIRE(in_other.has_value());
  REQUIRE(b.add("z", "unpublished").ok());
  CHECK(generations(dir.path()).size() == 2);
  b = std::move(*in_other);
  CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1});
  CHECK(Writer::open(dir.path().string()).has_value());
  CHECK_FALSE(Writer::open(other.path().string()).has_value());
  REQUIRE(b.add("o", "1").ok());
  REQUIRE(b.publish().ok());
  CHECK(read_current(other.path()) == Files{{"o", "1"}});
  Writer& same = b;
  b = std::move(same);  // self-assignment keeps it
  CHECK(b.current() == 1);
}

TEST_CASE("a missing snapshot directory is made, or refused with MissingDirectory::fail",
          "[snapshot]") {
  TempDir dir;
  SnapshotOptions fail;
  fail.missing = atomic_state::MissingDirectory::fail;
  const auto refused = Writer::open((dir / "a" / "b").string(), fail);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.status().step() == Step::open_directory);
  CHECK_FALSE(fs::exists(dir / "a"));
  publish(dir / "a" / "b", {{"f", "1"}});
  CHECK(read_current(dir / "a" / "b") == Files{{"f", "1"}});
}

// ====================================================== [snapshot-trace] ==

namespace {
/// gen-1 (one file, "a") and gen-2 (current), as the trace and fault tests
/// start.
void two_generations(const fs::path& dir) {
  publish(dir, {{"a", "old 1"}});
  publish(dir, {{"a", "old 2"}, {"b", "old 2"}});
}

template <class Policy>
FaultFs publish_two(const fs::path& dir) {
  FaultFs fs;
  {
    auto writer = SnapshotWriter<Policy, FaultFs&>::open(dir.string(), fs);
    REQUIRE(writer.has_value());
    REQUIRE(writer->add("a", "new a").ok());
    REQUIRE(writer->add("b", "new b", 0640).ok());
    REQUIRE(writer->publish().ok());
  }
  CHECK(fs.open_descriptors().empty());
  return fs;
}
}  // namespace

TEST_CASE("a 2-file FullSync publish makes exactly the calls of snapshot_protocol.hpp",
          "[snapshot-trace]") {
  TempDir dir;
  two_generations(dir.path());
  const FaultFs fs = publish_two<FullSync>(dir.path());
  REQUIRE(fs.ops() == protocol::ops(protocol::snapshot_two_files(protocol::Sync::full)));
  const auto& c = fs.calls;
  const auto fd = [&](std::size_t i) { return static_cast<int>(c[i].result); };
  // open: the directory, its claim, the lock, current, the listing.
  CHECK(c[0].name == dir.path().string());
  const int dir_fd = fd(0);
  CHECK(c[2].name.rfind(".tmp-", 0) == 0);  // the claim
  const int claim_fd = fd(2);
  CHECK(c[5].fd == dir_fd);
  CHECK(c[5].name == ".snapshot.lock");
  CHECK(c[5].mode == 0600);
  const int lock_fd = fd(5);
  CHECK(c[6].fd == lock_fd);  // looked at: a regular file, 0600
  CHECK(c[7].fd == lock_fd);
  CHECK(c[8].fd == dir_fd);
  CHECK(c[8].name == "current");
  CHECK(c[9].fd == dir_fd);
  // the sweep of stale temp files finds only the writer's own claim, in use.
  CHECK((c[10].fd == dir_fd && c[10].name == c[2].name));
  CHECK((c[11].fd == dir_fd && c[11].name == c[2].name));
  CHECK(c[15].fd == dir_fd);
  // first add: gen-3 made with its mode, opened (not followed), set exactly.
  CHECK(c[16].fd == dir_fd);
  CHECK(c[17].name == "gen-3");
  CHECK(c[17].mode == 0755);
  CHECK(c[18].name == "gen-3");
  const int gen_fd = fd(18);
  CHECK(c[19].fd == gen_fd);
  CHECK(c[19].mode == 0755);
  // each file created 0600 in the generation, written.
  CHECK(c[20].fd == gen_fd);
  CHECK(c[20].name == "a");
  CHECK(c[20].mode == 0600);
  const int a_fd = fd(20);
  CHECK(c[21].fd == a_fd);
  CHECK(c[22].name == "b");
  const int b_fd = fd(22);
  CHECK(c[23].fd == b_fd);
  // publish: modes, writeback, syncs, closes of a then b.
  CHECK((c[24].fd == a_fd && c[24].mode == 0644));
  CHECK((c[25].fd == b_fd && c[25].mode == 0640));
  CHECK((c[26].fd == a_fd && c[27].fd == b_fd));
  CHECK((c[28].fd == a_fd && c[29].fd == b_fd));
  CHECK((c[30].fd == a_fd && c[31].fd == b_fd));
  CHECK(c[32].fd == gen_fd);  // the generation's entries durable ...
  CHECK(c[33].fd == dir_fd);  // ... before the link naming it exists
  CHECK(c[33].name.rfind(".current.tmp-", 0) == 0);
  CHECK(c[33].name.size() == 19);
  REQUIRE(fs.link_targets.size() == 1);
  CHECK(fs.link_targets[0] == "gen-3");  // relative: the directory can move
  CHECK(c[34].fd == dir_fd);             // the link and gen-3's entry durable ...
  CHECK(c[35].fd == dir_fd);             // ... before the rename over current
  CHECK(c[35].name == c[33].name);
  CHECK(c[36].fd == gen_fd);
  CHECK(c[37].fd == dir_fd);  // the rename durable before anything is removed
  CHECK(c[38].fd == dir_fd);
  CHECK(c[39].name == "gen-1");
  const int old_fd = fd(39);
  CHECK(c[40].fd == old_fd);
  CHECK((c[41].fd == old_fd && c[41].name == "a"));
  CHECK(c[42].fd == old_fd);
  CHECK((c[43].fd == dir_fd && c[43].name == "gen-1"));
  // the destructor: the lock, then the claim's file before its descriptor.
  CHECK(c[44].fd == lock_fd);
  CHECK((c[45].fd == dir_fd && c[45].name == c[2].name));
  CHECK(c[46].fd == claim_fd);
  CHECK(c[47].fd == dir_fd);
  CHECK(read_current(dir.path()) == Files{{"a", "new a"}, {"b", "new b"}});
}

TEST_CASE("DataSync and NoSync publishes make the calls of snapshot_protocol.hpp",
          "[snapshot-trace]") {
  {
    TempDir dir;
    two_generations(dir.path());
    const FaultFs fs = publish_two<DataSync>(dir.path());
    CHECK(fs.ops() == protocol::ops(protocol::snapshot_two_files(protocol::Sync::data)));
  }
  {
    TempDir dir;
    two_generations(dir.path());
    const FaultFs fs = publish_two<NoSync>(dir.path());
    CHECK(fs.ops() == protocol::ops(protocol::snapshot_two_files(protocol::Sync::none)));
    CHECK(fs.count(Op::sync_full) + fs.count(Op::sync_data) + fs.count(Op::start_writeback) == 0);
    CHECK(read_current(dir.path()) == Files{{"a", "new a"}, {"b", "new b"}});
  }
}

TEST_CASE("an open over a killed publisher's leftovers makes the calls of snapshot_protocol.hpp",
          "[snapshot-trace]") {
  TempDir dir;
  two_generations(dir.path());
  make_generation(dir.path(), 3, {{"a", "half"}});
  fs::create_symlink("gen-3", dir / ".current.tmp-AAAAAA");
  FaultFs fs;
  { REQUIRE((SnapshotWriter<FullSync, FaultFs&>::open(dir.path().string(), fs).has_value())); }
  CHECK(fs.ops() == protocol::ops(protocol::snapshot_open_sweeping()));
  CHECK(fs.open_descriptors().empty());
  CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1, 2});
  CHECK(temp_links(dir.path()).empty());
}

// ===================================================== [snapshot-faults] ==

namespace {

const int kErrnos[] = {ENOSPC, EIO, EDQUOT, EACCES, EPERM, EROFS, EXDEV, EMFILE};

struct FaultScenario {
  const char* name;
  protocol::Calls calls;
  bool sweeping;  // a killed publisher's leftovers (gen-3, a temp link) to remove at open
};

std::string expand(std::string pattern, const fs::path& dir, const FaultFs& fs) {
  std::string claim, link;
  for (const auto& c : fs.calls) {
    if (c.op == Op::create_file && claim.empty()) claim = c.name;
    if (c.op == Op::make_symlink) link = c.name;
  }
  const std::string d = dir.string();
  const auto put = [&](const std::string& key, const std::string& value) {
    for (auto at = pattern.find(key); at != std::string::npos; at = pattern.find(key))
      pattern.replace(at, key.size(), value);
  };
  put("$C", d + "/" + claim);
  put("$K", d + "/.snapshot.lock");
  put("$G", d + "/gen-3");
  put("$L", d + "/" + link);
  put("$O", d + "/gen-1");
  put("$S", d + "/gen-3");
  put("$D", d);
  return pattern;
}

/// Runs a scenario under `faults` as far as it goes; its first failure.
Status run_scenario(const FaultScenario& sc, const fs::path& dir, FaultFs& fs) {
  auto writer = SnapshotWriter<FullSync, FaultFs&>::open(dir.string(), fs);
  if (!writer) return writer.status();
  if (sc.sweeping) return {};
  if (Status s = writer->add("a", "new a"); !s) return s;
  if (Status s = writer->add("b", "new b", 0640); !s) return s;
  return writer->publish();
}

struct Outcome {
  int ok = 0, failed = 0, replaced = 0;
};

/// One scenario under `faults`, checked against everything a failure
/// promises: no descriptor leaked, no temp link, no generation but the
/// kept ones; current unchanged before the rename and the new set after it.
void run_and_check(const FaultScenario& sc, std::vector<Fault> faults, Step expected, bool replaced,
                   const char* subject, int error, Outcome& outcome) {
  TempDir dir;
  two_generations(dir.path());
  if (sc.sweeping) {
    make_generation(dir.path(), 3, {{"a", "half"}});
    fs::create_symlink("gen-3", dir / ".current.tmp-AAAAAA");
  }
  const int fds_before = test::open_fd_count();
  FaultFs fs;
  fs.faults = std::move(faults);
  const Status status = run_scenario(sc, dir.path(), fs);

  CHECK(test::open_fd_count() == fds_before);
  CHECK(fs.open_descriptors().empty());
  const bool unlink_failed = std::any_of(fs.faults.begin(), fs.faults.end(),
                                         [](const Fault& f) { return f.op == Op::unlink; });
  // The claim's file goes with the writer, unless its removal failed (then
  // it is a stale temp file: see "a claim left by a killed publisher").
  if (!unlink_failed) CHECK(test::temp_files_in(dir.path()).empty());

  if (expected == Step::none) {
    CHECK(status.ok());
    ++outcome.ok;
  } else {
    REQUIRE_FALSE(status.ok());
    ++outcome.failed;
    CHECK(status.step() == expected);
    CHECK(status.code().value() == error);
    CHECK(status.replaced() == replaced);
    CHECK(status.path() == expand(subject, dir.path(), fs));
    const std::string message = status.message();
    CAPTURE(message);
    CHECK(message.find(std::strerror(error)) != std::string::npos);
  }
  const bool new_set = expected == Step::none ? !sc.sweeping : replaced;
  if (new_set) {
    outcome.replaced += replaced ? 1 : 0;
    CHECK(current_target(dir.path()) == "gen-3");
    CHECK(read_current(dir.path()) == Files{{"a", "new a"}, {"b", "new b"}});
    CHECK(test::mode_of(dir / "gen-3" / "b") == 0640);
    const auto gens = generations(dir.path());
    // Only pruning may have failed: gen-1 may stay, nothing else.
    CHECK(
        (gens == std::vector<std::uint64_t>{2, 3} || gens == std::vector<std::uint64_t>{1, 2, 3}));
    if (expected == Step::none) CHECK(gens == std::vector<std::uint64_t>{2, 3});
  } else {
    CHECK(current_target(dir.path()) == "gen-2");
    CHECK(read_current(dir.path()) == Files{{"a", "old 2"}, {"b", "old 2"}});
    const auto gens = generations(dir.path());
    if (sc.sweeping && expected != Step::none)
      CHECK((gens == std::vector<std::uint64_t>{1, 2} ||
             gens == std::vector<std::uint64_t>{1, 2, 3}));  // the leftovers may stay
    else
      CHECK(gens == std::vector<std::uint64_t>{1, 2});
  }
  if (!sc.sweeping || expected == Step::none) CHECK(temp_links(dir.path()).empty());
  // Whatever was left, the next open removes it.
  {
    auto next = Writer::open(dir.path().string());
    REQUIRE(next.has_value());
    CHECK(temp_links(dir.path()).empty());
    CHECK(generations(dir.path()).size() == 2);
  }
}

const FaultScenario kScenarios[] = {
    {"open, add two files, publish (gen-1 pruned)",
     protocol::snapshot_two_files(protocol::Sync::full), false},
    {"open over a killed publisher's gen-3 and temp link", protocol::snapshot_open_sweeping(),
     true},
};

}  // namespace

TEST_CASE("the snapshot fault tables cover every call of open, add and publish",
          "[snapshot-faults]") {
  for (const FaultScenario& sc : kScenarios) {
    CAPTURE(sc.name);
    TempDir dir;
    two_generations(dir.path());
    if (sc.sweeping) {
      make_generation(dir.path(), 3, {{"a", "half"}});
      fs::create_symlink("gen-3", dir / ".current.tmp-AAAAAA");
    }
    FaultFs fs;
    REQUIRE(run_scenario(sc, dir.path(), fs).ok());
    CHECK(fs.ops() == protocol::ops(sc.calls));
  }
}

TEST_CASE("every call of a publish failed with each errno, once and for good, leaks nothing",
          "[snapshot-faults]") {
  const test::OnTmpfs fast;
  int cases = 0;
  std::size_t calls = 0;
  Outcome outcome;
  for (const FaultScenario& sc : kScenarios) {
    calls += sc.calls.size();
    for (const auto& [call, k] : protocol::numbered(sc.calls)) {
      for (const int error : kErrnos) {
        for (const bool persistent : {false, true}) {
          CAPTURE(sc.name, test::op_name(call.op), k, std::strerror(error), persistent);
          const bool later = persistent && call.later_fails_as != Step::none;
          run_and_check(sc, {Fault{call.op, k, error, persistent}},
                        later ? call.later_fails_as : call.fails_as, call.replaced && !later,
                        later ? call.later_names : call.names, error, outcome);
          ++cases;
        }
      }
    }
  }
  std::cout << "snapshot faults: " << cases << " cases (" << calls << " calls x "
            << std::size(kErrnos) << " errnos x once/for good): " << outcome.failed << " failed ("
            << outcome.replaced << " after the rename, replaced() true), " << outcome.ok
            << " survived\n";
  CHECK(cases == static_cast<int>(calls) * 8 * 2);
}

TEST_CASE("EINTR at every call of a publish is retried and the publish succeeds",
          "[snapshot-faults]") {
  const test::OnTmpfs fast;
  Outcome outcome;
  for (const FaultScenario& sc : kScenarios)
    for (const auto& [call, k] : protocol::numbered(sc.calls)) {
      if (call.op == Op::write || call.op == Op::close) continue;  // looped / never retried
      CAPTURE(sc.name, test::op_name(call.op), k);
      run_and_check(sc, {Fault{call.op, k, EINTR}, Fault{call.op, k + 1, EINTR}}, Step::none, false,
                    "", 0, outcome);
    }
  CHECK(outcome.failed == 0);
}
