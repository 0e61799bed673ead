// SnapshotWriter on a real filesystem: a set of files readers see change
// all at once. A publish read through current, generations kept, a killed
// publisher's leftovers removed, one publisher at a time and a lock no
// other user can hold, bad input, a current that is not ours, discard,
// moves, a missing directory. The exact calls are
// test_snapshot_trace.cpp's, each of them failed test_snapshot_faults.cpp's,
// power loss test_snapshot_crash.cpp's.
#include <fcntl.h>
#include <grp.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/child.hpp"
#include "support/mounts.hpp"
#include "support/names.hpp"
#include "support/snapshot_dir.hpp"

namespace fs = test::fs;
using namespace test::snapshot;

namespace {

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
  // Starting from gen-1 and gen-2 (current) under keep 2. A killed
  // publisher leaves .building-gen-N (half-built), a gen-N newer than
  // current (complete, the swap not made), .removing-gen-N (half-removed).
  const Row rows[] = {
      {"nothing left", {}, {}, {1, 2}, 3},
      {"a half-built generation with files", {{".building-gen-3", "a b"}}, {}, {1, 2}, 3},
      {"an empty half-built generation far ahead", {{".building-gen-90", ""}}, {}, {1, 2}, 3},
      {"a complete generation never made current", {{"gen-3", "a b"}}, {}, {1, 2}, 3},
      {"a half-removed generation", {{".removing-gen-1", "a"}}, {}, {1, 2}, 3},
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
    CHECK(unfinished(dir.path()).empty());
    CHECK(current_target(dir.path()) == "gen-2");
    CHECK(read_current(dir.path()) == Files{{"a", "2"}});
    for (const char* name : foreign) CHECK(fs::is_directory(dir / name));
    REQUIRE(writer->add("a", "3").ok());
    CHECK(fs::exists(dir / (".building-gen-" + std::to_string(row.next_generation)) / "a"));
    REQUIRE(writer->publish().ok());
    CHECK(read_current(dir.path()) == Files{{"a", "3"}});
    // remove_stale_generations finds nothing more to do.
    const auto swept = writer->remove_stale_generations();
    REQUIRE(swept.has_value());
    CHECK(swept->removed == 0);
  }
}

TEST_CASE("entries under the writer's names that are not its own never fail open or publish",
          "[snapshot]") {
  // Each left where it is, counted as not the writer's (not_regular).
  struct Row {
    const char* name;
    void (*plant)(const fs::path& dir);
    const char* stays;  // what must still be there afterwards
    bool counted;
    std::vector<Fault> faults;
  };
  const Row rows[] = {
      {"a regular file named gen-9",
       [](const fs::path& d) { test::write_plain(d / "gen-9", "mine"); },
       "gen-9",
       true,
       {}},
      {"a symlink named gen-7",
       [](const fs::path& d) { fs::create_symlink("/", d / "gen-7"); },
       "gen-7",
       true,
       {}},
      {"a directory named .current.tmp-AbCdEf",
       [](const fs::path& d) {
         fs::create_directory(d / ".current.tmp-AbCdEf");
         test::write_plain(d / ".current.tmp-AbCdEf" / "x", "mine");
       },
       ".current.tmp-AbCdEf/x",
       true,
       {}},
      {"a directory inside the old generation a publish removes",
       [](const fs::path& d) {
         fs::create_directory(d / "gen-1" / "sub");
         test::write_plain(d / "gen-1" / "sub" / "x", "mine");
       },
       ".removing-gen-1/sub/x",
       true,
       {}},
      {"another user's temp file that cannot be opened",
       [](const fs::path& d) {
         test::write_plain(d / ".tmp-Zz0Zz0", "theirs", 0600);
         if (::geteuid() == 0) REQUIRE(::chown((d / ".tmp-Zz0Zz0").c_str(), 65534, 65534) == 0);
       },
       ".tmp-Zz0Zz0",
       false,
       {Fault{Op::open_file, 1, EACCES, true}}},  // as it is to a user
  };
  for (const Row& row : rows) {
    CAPTURE(row.name);
    TempDir dir;
    two_generations(dir.path());
    row.plant(dir.path());
    FaultFs fs;
    fs.faults = row.faults;
    auto writer = SnapshotWriter<FullSync, FaultFs&>::open(dir.path().string(), fs);
    REQUIRE(writer.has_value());
    CHECK(writer->current() == 2);
    REQUIRE(writer->add("a", "3").ok());
    const Status published = writer->publish();
    CAPTURE(published.message());
    REQUIRE(published.ok());
    CHECK(read_current(dir.path()) == Files{{"a", "3"}});
    CHECK(fs::exists(fs::symlink_status(dir / row.stays)));
    const auto swept = writer->remove_stale_generations();
    REQUIRE(swept.has_value());
    if (row.counted) CHECK(swept->not_regular >= 1);
    CHECK(fs::exists(fs::symlink_status(dir / row.stays)));
  }
}

namespace {

/// A mount of the test's own, undone on every path out of its scope (a
/// failed REQUIRE's exception included), before the TempDir under it is
/// removed: declare it after the TempDirs. The test's process is moved
/// into a private mount namespace first, so that nothing it mounts is seen
/// outside it or outlives it. `why` says what the machine refused.
class Mount {
 public:
  /// A bind mount of `source` (a directory or a file) on `at`; with
  /// `tmpfs`, a fresh tmpfs (another device) on the directory `at`.
  Mount(const fs::path& source, const fs::path& at, bool tmpfs = false) : at_(at) {
    static std::string refused;
    static const bool isolated = test::private_mount_namespace(refused);
    if (!isolated) {
      why_ = refused;
      return;
    }
    mounted_ = tmpfs ? test::mount_tmpfs(at, "size=1m,mode=0755", why_)
                     : ::mount(source.c_str(), at.c_str(), nullptr, MS_BIND, nullptr) == 0;
    if (!mounted_ && why_.empty())
      why_ = "cannot bind-mount " + source.string() + " on " + at.string() + ": " +
             std::strerror(errno);
  }
  ~Mount() {
    if (mounted_) ::umount2(at_.c_str(), MNT_DETACH);
  }
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }

 private:
  fs::path at_;
  bool mounted_ = false;
  std::string why_;
};

}  // namespace

TEST_CASE("a mount under the writer's names is not its own: never emptied, never a failure",
          "[snapshot]") {
  // A filesystem mounted on a name the writer removes (an operator's, a
  // container's volume) is never listed, emptied or removed into: its
  // removal is refused with EBUSY before anything in it is looked at, and
  // a directory on another device than DIR's is never emptied even where
  // that refusal did not come (a mount made after it: the fault stands in
  // for it). Each is left, counted (not_regular), and open, every publish
  // and the next open succeed.
  struct Row {
    const char* name;
    const char* at;  // in DIR, made by the test unless it exists
    bool file;       // a file bind-mounted on a file
    bool tmpfs;      // another device, else a bind mount of the same filesystem's directory
    std::vector<Fault> faults;
  };
  const Row rows[] = {
      {"a bind mount on a half-built generation", ".building-gen-9", false, false, {}},
      {"a bind mount on a half-removed generation", ".removing-gen-5", false, false, {}},
      {"a tmpfs on a half-built generation", ".building-gen-9", false, true, {}},
      // The probe's rmdir not refused (the mount came after it): only the
      // device of the directory opened tells.
      {"a tmpfs on a half-built generation, mounted after the writer's rmdir",
       ".building-gen-9",
       false,
       true,
       {Fault{Op::remove_directory, 1, ENOTEMPTY}}},
      {"a bind mount on the old generation a publish removes", "gen-1", false, false, {}},
      {"a tmpfs on the old generation a publish removes", "gen-1", false, true, {}},
      {"a file bind-mounted on a file of a half-removed generation",
       ".removing-gen-5/a",
       true,
       false,
       {}},
      {"a file bind-mounted on a file named as a temp link",
       ".current.tmp-AbCdEf",
       true,
       false,
       {}},
  };
  if (::geteuid() != 0) {
    WARN("skipped: mounting needs root");
    return;
  }
  for (const Row& row : rows) {
    CAPTURE(row.name);
    TempDir dir, elsewhere;
    two_generations(dir.path());
    const fs::path at = dir / row.at;
    fs::path source = elsewhere / "volume";
    if (row.file) {
      source = elsewhere / "precious";
      fs::create_directories(at.parent_path());
      test::write_plain(at, "covered");
      test::write_plain(source, "precious");
    } else {
      fs::create_directories(at);
      fs::create_directory(source);
      test::write_plain(source / "precious", "precious");
    }
    const Mount mount(source, at, row.tmpfs);
    if (!mount.mounted()) {
      WARN("skipped: " << mount.why());
      return;
    }
    const fs::path precious = row.file ? at : at / "precious";
    if (row.tmpfs) test::write_plain(precious, "precious");
    {
      FaultFs fs;
      fs.faults = row.faults;
      auto writer = SnapshotWriter<FullSync, FaultFs&>::open(dir.path().string(), fs);
      CAPTURE(writer.has_value() ? std::string() : writer.status().message());
      REQUIRE(writer.has_value());
      CHECK(test::read_file(precious) == "precious");
      for (const char* data : {"3", "4"}) {
        REQUIRE(writer->add("a", data).ok());
        const Status published = writer->publish();
        CAPTURE(published.message());
        REQUIRE(published.ok());
        CHECK(read_current(dir.path()) == Files{{"a", data}});
        CHECK(test::read_file(precious) == "precious");
      }
      const auto swept = writer->remove_stale_generations();
      REQUIRE(swept.has_value());
      CHECK(swept->not_regular >= 1);
    }
    auto reopened = Writer::open(dir.path().string());
    CAPTURE(reopened.has_value() ? std::string() : reopened.status().message());
    REQUIRE(reopened.has_value());
    CHECK(current_target(dir.path()) == "gen-4");
    CHECK(test::read_file(precious) == "precious");
    if (!row.file) CHECK(test::names_in(at) == std::vector<std::string>{"precious"});
  }
}

TEST_CASE(
    "a save never makes a directory named like a generation, which a snapshot's open "
    "would remove",
    "[snapshot]") {
  // A path's missing directories are made by a save; under a name a
  // SnapshotWriter's open or prune removes (gen-N, .building-gen-N,
  // .removing-gen-N) the next open of the parent would remove the file.
  struct Row {
    const char* path;  // in a snapshot directory with gen-1 current
    bool refused;
  };
  const Row rows[] = {
      {"gen-99/mine", true},          {".building-gen-7/mine", true},
      {".removing-gen-1/mine", true}, {"gen-99/sub/mine", true},  // a level above the file's
      {"gen-0/mine", false},                                      // not a generation's name
      {"gen-99x/mine", false},        {"building-gen-7/mine", false},
      {"sub/gen-5", false},   // a file of that name: open leaves it
      {"gen-1/mine", false},  // an existing generation: its files are the snapshot's
  };
  using Write = Status (*)(const fs::path& target);
  const std::pair<const char*, Write> points[] = {
      {"AtomicWriter::write", [](const fs::path& t) { return AtomicWriter<>{}.write(t, "x"); }},
      {"AtomicWriter::begin",
       [](const fs::path& t) {
         AtomicWriter<> w;
         auto tr = w.begin(t);
         if (!tr) return tr.status();
         if (Status written = tr->write("x"); !written) return written;
         return tr->commit();
       }},
  };
  for (const auto& [what, write] : points) {
    for (const Row& row : rows) {
      CAPTURE(what, row.path);
      TempDir dir;
      {
        auto writer = Writer::open(dir.path().string());
        REQUIRE(writer.has_value());
        REQUIRE(writer->add("a", "1").ok());
        REQUIRE(writer->publish().ok());
      }
      const auto before = listing(dir.path());
      const Status s = write(dir / row.path);
      if (row.refused) {
        CHECK(s.step() == Step::create_directory);
        CHECK(s.code() == std::errc::invalid_argument);
        CHECK(s.message().find("named like a snapshot's generation") != std::string::npos);
        CHECK(listing(dir.path()) == before);
      } else {
        REQUIRE(s.ok());
        auto reopened = Writer::open(dir.path().string());
        REQUIRE(reopened.has_value());
        CHECK(test::read_file(dir / row.path) == "x");
      }
    }
  }
}

TEST_CASE("with current missing, open removes no generation and numbers after the newest",
          "[snapshot]") {
  // An operator removed current to take the feed offline (or the first
  // publish was killed before its swap): every gen-N is complete, and the
  // newest stands for current until the next publish makes current again.
  struct Row {
    const char* name;
    unsigned keep;
    int publishes;
    void (*plant)(const fs::path& dir);
    std::vector<std::uint64_t> generations_after_open;
    std::uint64_t current_after_open;
    unsigned published_keep = 0;  // 0: keep
  };
  const Row rows[] = {
      {"three generations under keep 3", 3, 3, [](const fs::path&) {}, {1, 2, 3}, 3},
      {"four generations published under keep 4, opened under keep 2",
       2,
       4,
       [](const fs::path&) {},
       {1, 2, 3, 4},
       4,
       4},
      {"two generations and a half-built one",
       2,
       2,
       [](const fs::path& d) {
         make_building(d, 3, {{"a", "half"}});
       },
       {1, 2},
       2},
      {"two generations and a file named gen-9",
       2,
       2,
       [](const fs::path& d) { test::write_plain(d / "gen-9", "not a generation"); },
       {1, 2, 9},
       2},
  };
  for (const Row& row : rows) {
    CAPTURE(row.name);
    TempDir dir;
    SnapshotOptions options;
    options.keep = row.published_keep != 0 ? row.published_keep : row.keep;
    for (int n = 1; n <= row.publishes; ++n)
      publish(dir.path(), {{"a", std::to_string(n)}}, options);
    options.keep = row.keep;
    fs::remove(dir / "current");
    row.plant(dir.path());
    auto writer = Writer::open(dir.path().string(), options);
    REQUIRE(writer.has_value());
    CHECK(writer->current() == row.current_after_open);
    CHECK(generations(dir.path()) == row.generations_after_open);
    CHECK(unfinished(dir.path()).empty());
    CHECK_FALSE(fs::exists(fs::symlink_status(dir / "current")));  // still offline
    REQUIRE(writer->add("a", "next").ok());
    REQUIRE(writer->publish().ok());
    CHECK(writer->current() == row.current_after_open + 1);
    CHECK(read_current(dir.path()) == Files{{"a", "next"}});
  }
}

TEST_CASE("a generation a SnapshotReader holds is never removed, however many publishes follow",
          "[snapshot]") {
  TempDir dir;
  auto writer = Writer::open(dir.path().string());
  REQUIRE(writer.has_value());
  REQUIRE(writer->add("a", "1").ok());
  REQUIRE(writer->add("b", "1").ok());
  REQUIRE(writer->publish().ok());
  {
    auto reader = SnapshotReader<>::open(dir.path().string());
    REQUIRE(reader.has_value());
    CHECK(reader->generation() == 1);
    for (int n = 2; n <= 5; ++n) {
      REQUIRE(writer->add("a", std::to_string(n)).ok());
      REQUIRE(writer->publish().ok());
    }
    CHECK(read_set(reader->descriptor()) == Files{{"a", "1"}, {"b", "1"}});
    CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1, 4, 5});
    const auto swept = writer->remove_stale_generations();
    REQUIRE(swept.has_value());
    CHECK(swept->in_use == 1);
    // A second reader takes the newest; moving a reader moves its lease.
    auto second = SnapshotReader<>::open(dir.path().string());
    REQUIRE(second.has_value());
    CHECK(second->generation() == 5);
    SnapshotReader<> moved = std::move(*reader);
    CHECK(reader->descriptor() == -1);  // NOLINT(bugprone-use-after-move)
    REQUIRE(writer->add("a", "6").ok());
    REQUIRE(writer->publish().ok());
    CHECK(read_set(moved.descriptor()) == Files{{"a", "1"}, {"b", "1"}});
    CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1, 5, 6});
  }  // the leases let go
  REQUIRE(writer->add("a", "7").ok());
  REQUIRE(writer->publish().ok());
  CHECK(generations(dir.path()) == std::vector<std::uint64_t>{6, 7});
  CHECK(unfinished(dir.path()).empty());
}

TEST_CASE("a SnapshotReader refuses what it cannot hold, saying why", "[snapshot]") {
  struct Row {
    const char* name;
    void (*make)(const fs::path& dir);
    Step step;
    int code;
    const char* says;
  };
  const Row rows[] = {
      {"nothing published", [](const fs::path&) {}, Step::open_file, ENOENT,
       "no snapshot is published"},
      {"current a regular file", [](const fs::path& d) { test::write_plain(d / "current", "x"); },
       Step::check_path, EINVAL, "not a symlink"},
      {"current naming no generation",
       [](const fs::path& d) { fs::create_symlink("x", d / "current"); }, Step::check_path, EINVAL,
       "names no generation"},
      {"current dangling", [](const fs::path& d) { fs::create_symlink("gen-4", d / "current"); },
       Step::lock_run, EAGAIN, "being removed"},
      {"no directory", [](const fs::path& d) { fs::remove(d); }, Step::open_directory, ENOENT, ""},
  };
  for (const Row& row : rows) {
    CAPTURE(row.name);
    TempDir dir;
    const fs::path snapshot = dir / "s";
    fs::create_directory(snapshot);
    row.make(snapshot);
    const auto reader = SnapshotReader<>::open(snapshot.string());
    REQUIRE_FALSE(reader.has_value());
    const std::string message = reader.status().message();
    CAPTURE(message);
    CHECK(reader.status().step() == row.step);
    CHECK(reader.status().code().value() == row.code);
    CHECK(message.find(row.says) != std::string::npos);
  }
  // A generation a writer is removing (its exclusive lock held): let go,
  // current read again; still held after 100 tries, a failure.
  TempDir dir;
  publish(dir.path(), {{"a", "1"}});
  const int held = ::open((dir / "gen-1").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(held >= 0);
  REQUIRE(::flock(held, LOCK_EX | LOCK_NB) == 0);
  const auto refused = SnapshotReader<>::open(dir.path().string());
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.status().step() == Step::lock_run);
  CHECK(refused.status().code().value() == EAGAIN);
  ::close(held);
  CHECK(SnapshotReader<>::open(dir.path().string()).has_value());
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

namespace {
/// Runs `work` in a child as uid 65534 (groups cleared): test::run_as.
template <class Work>
int as_nobody(Work work) {
  const int code = test::run_as(65534, {}, work);
  REQUIRE(code != -1);  // a child was forked
  return code;
}
}  // namespace

TEST_CASE("root in a directory of another user changes nothing in the lock file it takes",
          "[snapshot]") {
  // As for the run lock: that user may put any file of root's at the lock's
  // name for a moment (a hard link, unlinked again), which root cannot tell
  // from its own lock file. Here the outcome of such a race, made directly.
  if (::geteuid() != 0) {
    WARN("skipped: needs root");
    return;
  }
  TempDir dir;
  REQUIRE(::chown(dir.path().c_str(), 65534, 65534) == 0);
  test::write_plain(dir / ".snapshot.lock", "precious\n", 0666);
  publish(dir.path(), {{"a", "root 1"}});
  CHECK(test::mode_of(dir / ".snapshot.lock") == 0666);
  CHECK(read_file(dir / ".snapshot.lock") == "precious\n");
}

TEST_CASE("a publish as root leaves nothing that fails the directory owner's opens and publishes",
          "[snapshot]") {
  // sudo once in a directory of a normal user: root's lock file, root's old
  // generations (which the owner may rename but not empty), a prune of
  // root's killed half-way (.removing-gen-N), a half-built generation of a
  // killed root publisher. The owner's writer leaves each of them, counts
  // them, and goes on.
  if (::geteuid() != 0) {
    WARN("skipped: publishing as root for another user needs root");
    return;
  }
  TempDir dir;
  REQUIRE(::chown(dir.path().c_str(), 65534, 65534) == 0);
  REQUIRE(::chmod(dir.path().c_str(), 0755) == 0);
  for (const char* data : {"root 1", "root 2", "root 3"}) publish(dir.path(), {{"a", data}});
  CHECK(generations(dir.path()) == std::vector<std::uint64_t>{2, 3});
  fs::create_directory(dir / ".removing-gen-1");
  test::write_plain(dir / ".removing-gen-1" / "a", "root 1");
  make_building(dir.path(), 4, {{"a", "half"}});
  // Root's lock file stays root's: root changes nothing in a lock file it
  // opened by name in a directory of another user (which could have put any
  // of root's files there for a moment). The owner removes it once.
  struct stat lock {};
  REQUIRE(::stat((dir / ".snapshot.lock").c_str(), &lock) == 0);
  CHECK(lock.st_uid == 0);

  const std::string path = dir.path().string();
  const int code = as_nobody([&] {
    if (::access(path.c_str(), X_OK) != 0) return 77;  // a TMPDIR closed to 65534
    auto refused = Writer::open(path);
    if (refused || refused.status().step() != Step::lock_run) return 6;
    if (::unlink((path + "/.snapshot.lock").c_str()) != 0) return 7;
    auto writer = Writer::open(path);
    if (!writer) {
      std::fprintf(stderr, "open: %s\n", writer.status().message().c_str());
      return 1;
    }
    for (const char* data : {"user 1", "user 2", "user 3"}) {
      if (!writer->add("a", data).ok()) return 2;
      if (const Status s = writer->publish(); !s) {
        std::fprintf(stderr, "publish: %s\n", s.message().c_str());
        return 3;
      }
    }
    const auto swept = writer->remove_stale_generations();
    if (!swept) {
      std::fprintf(stderr, "sweep: %s\n", swept.status().message().c_str());
      return 4;
    }
    // Root's two generations, its half-removed and its half-built one.
    if (swept->not_permitted != 4) {
      std::fprintf(stderr, "not_permitted %zu\n", swept->not_permitted);
      return 5;
    }
    return 0;
  });
  if (code == 77) {
    WARN("skipped: uid 65534 cannot reach the test's directory or cannot be switched to");
    return;
  }
  REQUIRE(code == 0);
  // The owner's publishes numbered after root's leftovers: gen-5, 6, 7.
  CHECK(current_target(dir.path()) == "gen-7");
  CHECK(read_current(dir.path()) == Files{{"a", "user 3"}});
  CHECK(generations(dir.path()) == std::vector<std::uint64_t>{6, 7});
  CHECK(unfinished(dir.path()) == std::vector<std::string>{".building-gen-4", ".removing-gen-1",
                                                           ".removing-gen-2", ".removing-gen-3"});
  // Root again: the lock file, the owner's now, is taken; root removes its own.
  publish(dir.path(), {{"a", "root 4"}});
  CHECK(current_target(dir.path()) == "gen-8");
  CHECK(unfinished(dir.path()).empty());
  CHECK(generations(dir.path()) == std::vector<std::uint64_t>{7, 8});
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
  return test::run_as(65534, {}, [&] {
    const int fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return 1;
    return ::flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : 2;
  });
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

TEST_CASE("a lock file that is not the writer's own is refused, never changed", "[snapshot]") {
  // Planted by a neighbour who can write into DIR: a hard link to a file of
  // someone else's, or a file another user owns. chmod 0600 (and any later
  // change) would land on that file.
  struct Row {
    const char* name;
    bool hard_link;
    bool foreign_owner;
    const char* says;
  };
  const Row rows[] = {
      {"a hard link to a file elsewhere", true, false, "hard link"},
      {"a file another user owns", false, true, "another user"},
      {"another user's file, hard-linked", true, true, "hard link"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.name);
    if (row.foreign_owner && ::geteuid() != 0) {
      WARN("skipped: giving a file to another user needs root");
      continue;
    }
    TempDir dir;
    TempDir elsewhere;
    const fs::path victim = elsewhere / "victim";
    test::write_plain(victim, "precious", 0644);
    if (row.foreign_owner) REQUIRE(::chown(victim.c_str(), 65534, 65534) == 0);
    if (row.hard_link)
      fs::create_hard_link(victim, dir / ".snapshot.lock");
    else
      fs::rename(victim, dir / ".snapshot.lock");
    const fs::path lock = dir / ".snapshot.lock";
    const auto writer = Writer::open(dir.path().string());
    REQUIRE_FALSE(writer.has_value());
    CHECK(writer.status().step() == Step::lock_run);
    CHECK(writer.status().code().value() == EPERM);
    CHECK(writer.status().path() == lock.string());
    const std::string message = writer.status().message();
    CAPTURE(message);
    CHECK(message.find(row.says) != std::string::npos);
    CHECK(test::read_file(lock) == "precious");
    CHECK(test::mode_of(lock) == 0644);
    CHECK_FALSE(fs::exists(dir / "current"));
  }
}

TEST_CASE("generation numbers never wrap: past the largest, nothing is published", "[snapshot]") {
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  struct Row {
    const char* name;
    std::uint64_t current;
    int publishes_left;
  };
  const Row rows[] = {
      {"current is the largest number", kMax, 0},
      {"current is one below it", kMax - 1, 1},
  };
  for (const Row& row : rows) {
    CAPTURE(row.name);
    TempDir dir;
    make_generation(dir.path(), row.current, {{"a", "last"}});
    fs::create_symlink("gen-" + std::to_string(row.current), dir / "current");
    auto writer = Writer::open(dir.path().string());
    REQUIRE(writer.has_value());
    CHECK(writer->current() == row.current);
    for (int i = 0; i < row.publishes_left; ++i) {
      REQUIRE(writer->add("a", "next").ok());
      REQUIRE(writer->publish().ok());
    }
    const auto before = listing(dir.path());
    const Status s = writer->add("a", "one too many");
    REQUIRE_FALSE(s.ok());
    CHECK(s.step() == Step::create_directory);
    CHECK(s.code().value() == EOVERFLOW);
    const std::string message = s.message();
    CAPTURE(message);
    CHECK(message.find("no generation number is left") != std::string::npos);
    CHECK(writer->size() == 0);
    CHECK(listing(dir.path()) == before);
    CHECK(current_target(dir.path()) == "gen-" + std::to_string(kMax));
    CHECK(writer->publish().step() == Step::invalid_use);  // nothing to publish
    writer = Writer::open((dir / "elsewhere").string());   // the directory still opens
    CHECK(Writer::open(dir.path().string()).has_value());
  }
}

TEST_CASE("bad input is refused before anything is written", "[snapshot]") {
  struct Row {
    const char* name;
    std::string file;
    unsigned mode;
    std::errc code;
    bool owned = false;  // a name the library owns: refused with AtomicDirectory's note
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
      // The names the library owns, as AtomicDirectory::write and
      // Batch::add refuse them (detail::owned_name_problem).
      {"a temp file's name", ".tmp-AAAAAA", 0644, std::errc::invalid_argument, true},
      {"a directory claim's temp file's name", ".tmp-AAAAAA.1", 0644, std::errc::invalid_argument,
       true},
      {"a temp link's name", ".current.tmp-AAAAAA", 0644, std::errc::invalid_argument, true},
      {"the snapshot's lock file's name", ".snapshot.lock", 0644, std::errc::invalid_argument,
       true},
      {"a run lock's name", ".a.lock", 0644, std::errc::invalid_argument, true},
      {"a corrupt copy's name", "x.corrupt-1", 0644, std::errc::invalid_argument, true},
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
      if (row.owned) {
        CHECK(s.message().find("the name is one the library gives its") != std::string::npos);
        CHECK(s.path() == (dir / "current" / row.file).string());
      }
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
  // Near the library's names, but none of them.
  for (const char* name : {".tmp-AAAAA", "tmp-AAAAAA", ".lock", "a.lock", "x.corrupt-", ".current"})
    CHECK(writer->add(name, "ok").ok());
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
    CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1});
    CHECK(unfinished(dir.path()) == std::vector<std::string>{".building-gen-2"});
    writer->discard();
    CHECK(writer->size() == 0);
    CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1});
    CHECK(unfinished(dir.path()).empty());
    writer->discard();  // twice is nothing
    REQUIRE(writer->add("c", "3").ok());
    REQUIRE(writer->publish().ok());
    CHECK(read_current(dir.path()) == Files{{"c", "3"}});
    REQUIRE(writer->add("d", "4").ok());
    CHECK(generations(dir.path()).size() == 2);
    CHECK(unfinished(dir.path()).size() == 1);
  }  // destroyed with an unpublished generation
  CHECK(generations(dir.path()).size() == 2);
  CHECK(unfinished(dir.path()).empty());
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
  CHECK(unfinished(dir.path()).size() == 1);
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
