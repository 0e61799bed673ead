// AtomicDirectory on a real filesystem: a directory kept open and claimed
// for repeated saves, write_new, a missing directory made or refused, the
// sweeps (its own, and another process's never taking a live handle's temp
// file), the claim going with the handle and carried by a move, and a batch
// through handles of several directories. The exact calls and each of them
// failed are test_batch_trace.cpp's and test_batch_faults.cpp's.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

namespace {

using Directory = AtomicDirectory<>;

}  // namespace

TEST_CASE("a directory handle saves over and over, one claim and no temp file left",
          "[directory]") {
  TempDir dir;
  auto opened = Directory::open(dir.path().string());
  REQUIRE(opened.has_value());
  Directory& handle = *opened;
  CHECK(handle.path() == dir.path().string());
  CHECK(handle.descriptor() >= 0);
  for (int i = 0; i < 200; ++i) REQUIRE(handle.write("state.json", std::to_string(i)).ok());
  CHECK(read_file(dir / "state.json") == "199");
  CHECK(test::mode_of(dir / "state.json") == 0644);
  REQUIRE(handle.write("other", "x", 0600).ok());
  CHECK(test::mode_of(dir / "other") == 0600);
  // Only the claim: an empty, locked .tmp-XXXXXX, mode 0600.
  const auto temps = temp_files_in(dir.path());
  REQUIRE(temps.size() == 1);
  CHECK(temps[0].size() == 11);
  CHECK(test::mode_of(dir / temps[0]) == 0600);
  CHECK(read_file(dir / temps[0]).empty());
  // A streamed save through the handle.
  auto tx = handle.begin("streamed");
  REQUIRE(tx.has_value());
  CHECK(tx->temp_name().substr(0, 12) == temps[0] + ".");
  REQUIRE(tx->write("a").ok());
  REQUIRE(tx->write("b").ok());
  REQUIRE(tx->commit().ok());
  CHECK(read_file(dir / "streamed") == "ab");
}

TEST_CASE("write_new through a handle creates a file and never replaces one", "[directory]") {
  TempDir dir;
  test::write_plain(dir / "taken", "old");
  auto handle = Directory::open(dir.path().string());
  REQUIRE(handle.has_value());
  REQUIRE(handle->write_new("fresh", "new").ok());
  CHECK(read_file(dir / "fresh") == "new");
  const Status taken = handle->write_new("taken", "new");
  CHECK(taken.step() == Step::rename);
  CHECK(taken.code().value() == EEXIST);
  CHECK(taken.target() == (dir / "taken").string());
  CHECK(read_file(dir / "taken") == "old");
  CHECK(temp_files_in(dir.path()).size() == 1);
}

TEST_CASE("write_new through a handle takes WriteOptions as write does", "[directory]") {
  TempDir dir;
  test::write_plain(dir / "taken", "old");
  auto handle = Directory::open(dir.path().string());
  REQUIRE(handle.has_value());
  atomic_state::WriteOptions options;
  options.mode = 0640;
  REQUIRE(handle->write_new("fresh", "new", options).ok());
  CHECK(read_file(dir / "fresh") == "new");
  CHECK(test::mode_of(dir / "fresh") == 0640);
  CHECK(handle->write_new("taken", "new", options).code().value() == EEXIST);
  CHECK(read_file(dir / "taken") == "old");
  options.follow_symlinks = true;  // refused by a handle, as by write()
  const Status refused = handle->write_new("other", "new", options);
  CHECK(refused.code().value() == EINVAL);
  CHECK_FALSE(test::fs::exists(dir / "other"));
}

TEST_CASE("a missing directory is made, or an error, as MissingDirectory says", "[directory]") {
  TempDir dir;
  const std::string missing = (dir / "a" / "b").string();
  auto refused = Directory::open(missing, MissingDirectory::fail);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.status().step() == Step::open_directory);
  CHECK(refused.status().code() == std::errc::no_such_file_or_directory);
  CHECK_FALSE(test::fs::exists(dir / "a"));
  auto made = Directory::open(missing, MissingDirectory::create);
  REQUIRE(made.has_value());
  CHECK(test::fs::is_directory(missing));
  REQUIRE(made->write("f", "x").ok());
  CHECK(read_file(dir / "a" / "b" / "f") == "x");
  // Not a directory at all.
  test::write_plain(dir / "file", "x");
  auto not_dir = Directory::open((dir / "file").string());
  REQUIRE_FALSE(not_dir.has_value());
  CHECK(not_dir.status().code().value() == ENOTDIR);
}

TEST_CASE("opening a handle sweeps its directory, leaving a live save's temp file alone",
          "[directory][sweep]") {
  TempDir dir;
  // Left by killed saves: a plain temp file, a dead handle's numbered one
  // (its claim gone), and one of a dead handle whose claim is still there,
  // unlocked; and a live save's, locked.
  test::write_plain(dir / ".tmp-Ab12Cd", "stale", 0600);
  test::write_plain(dir / ".tmp-ZZZZZZ.7", "stale", 0600);
  test::write_plain(dir / ".tmp-YYYYYY", "", 0600);
  test::write_plain(dir / ".tmp-YYYYYY.1", "stale", 0600);
  AtomicWriter<FullSync, test::NamedTempFs> writer;  // a named temp file, to be seen
  auto live = writer.begin(dir / "live");
  REQUIRE(live.has_value());
  auto handle = Directory::open(dir.path().string());
  REQUIRE(handle.has_value());
  CHECK(handle->swept().removed == 4);
  CHECK(handle->swept().in_use == 1);  // the live save's; its own claim is not looked at
  CHECK(temp_files_in(dir.path()).size() == 2);
  REQUIRE(live->commit().ok());
}

TEST_CASE("a handle's sweep removes stale temp files and leaves its own alone", "[directory]") {
  TempDir dir;
  auto handle = Directory::open(dir.path().string());
  REQUIRE(handle.has_value());
  CHECK(handle->swept().removed == 0);
  test::write_plain(dir / ".tmp-Ab12Cd", "stale", 0600);
  test::write_plain(dir / ".tmp-ZZZZZZ.7", "stale", 0600);
  test::write_plain(dir / ".tmp-YYYYYY", "", 0600);
  test::write_plain(dir / ".tmp-YYYYYY.1", "stale", 0600);
  auto tx = handle->begin("state.json");
  REQUIRE(tx.has_value());
  REQUIRE(tx->write("new").ok());
  auto swept = handle->remove_stale_temp_files();
  REQUIRE(swept.has_value());
  CHECK(swept->removed == 4);
  CHECK(swept->in_use == 2);  // its claim and its temp file
  CHECK(temp_files_in(dir.path()).size() == 2);
  REQUIRE(tx->commit().ok());
  CHECK(read_file(dir / "state.json") == "new");
}

TEST_CASE("another sweep, in this process or another, never removes a live handle's temp file",
          "[directory]") {
  TempDir dir;
  auto opened = Directory::open(dir.path().string());
  REQUIRE(opened.has_value());
  std::optional<Directory> handle(std::move(*opened));
  auto tx = handle->begin("state.json");
  REQUIRE(tx.has_value());
  REQUIRE(tx->write("new").ok());
  const std::string temp(tx->temp_name());
  // An AtomicWriter's sweep here (another open file description).
  auto here = as::AtomicWriter<>{}.remove_stale_temp_files(dir.path());
  REQUIRE(here.has_value());
  CHECK(here->removed == 0);
  CHECK(here->in_use == 2);
  // Another process's.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto there = as::AtomicWriter<>{}.remove_stale_temp_files(dir.path());
    std::_Exit(there && there->removed == 0 && there->in_use == 2 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(test::fs::exists(dir / temp));
  REQUIRE(tx->commit().ok());
  CHECK(read_file(dir / "state.json") == "new");
  // Once the handle is gone, a leftover of its name is anyone's to sweep.
  test::write_plain(dir / (temp + "9"), "left", 0600);
  handle.reset();
  auto after = as::AtomicWriter<>{}.remove_stale_temp_files(dir.path());
  REQUIRE(after.has_value());
  CHECK(after->removed == 1);
  CHECK(temp_files_in(dir.path()).empty());
}

TEST_CASE("the claim goes with the handle, and a move carries it", "[directory]") {
  TempDir dir;
  const int fds = test::open_fd_count();
  {
    auto opened = Directory::open(dir.path().string());
    REQUIRE(opened.has_value());
    CHECK(temp_files_in(dir.path()).size() == 1);
    Directory moved(std::move(*opened));
    REQUIRE(moved.write("a", "1").ok());
    // The moved-from handle refuses, saying so.
    const Status from = opened->write("a", "2");
    CHECK(from.step() == Step::invalid_use);
    CHECK(contains(from.message(), "moved from"));
    CHECK(opened->remove_stale_temp_files().status().step() == Step::invalid_use);
    Batch<> batch;
    CHECK(batch.add(*opened, "a", "3").step() == Step::invalid_use);
    // Assigning over a live handle gives its claim up.
    auto other = Directory::open(dir.path().string());
    REQUIRE(other.has_value());
    CHECK(temp_files_in(dir.path()).size() == 2);
    moved = std::move(*other);
    CHECK(temp_files_in(dir.path()).size() == 1);
    REQUIRE(moved.write("a", "4").ok());
    CHECK(read_file(dir / "a") == "4");
  }
  CHECK(temp_files_in(dir.path()).empty());
  CHECK(test::names_in(dir.path()) == std::vector<std::string>{"a"});
  CHECK(test::open_fd_count() == fds);
}

TEST_CASE("a batch through directory handles commits files of several directories",
          "[directory][batch]") {
  TempDir dir;
  auto a = Directory::open((dir / "a").string());
  auto b = Directory::open((dir / "b").string());
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  Batch<> batch;
  for (int run = 0; run < 3; ++run) {
    const std::string v = std::to_string(run);
    REQUIRE(batch.add(*a, "1", v).ok());
    REQUIRE(batch.add(dir / "a" / "2", v).ok());  // by path, beside the handle's
    auto s = batch.add_stream(*a, "3");
    REQUIRE(s.has_value());
    REQUIRE((*s)->write(v).ok());
    REQUIRE(batch.add(*b, "state", v).ok());
    REQUIRE(batch.commit().ok());
    for (const char* f : {"a/1", "a/2", "a/3", "b/state"}) CHECK(read_file(dir / f) == v);
  }
  CHECK(temp_files_in(dir / "a").size() == 1);
  CHECK(temp_files_in(dir / "b").size() == 1);
}

TEST_CASE(
    "a name the library's sweep removes or its locks use is refused as a target at every "
    "entry point, and the sweep removes exactly such names",
    "[directory][batch]") {
  struct Name {
    const char* name;
    bool owned;  // refused as a target
    bool swept;  // an unlocked regular file of this name is removed by a sweep
  };
  const Name names[] = {
      {".tmp-backup", true, true},  // the issue's own: six letters after ".tmp-"
      {".tmp-Ab12Cd", true, true},
      {".tmp-Ab12Cd.7", true, true},
      {".current.tmp-Ab12Cd", true, false},  // a snapshot's sweep takes it
      {".state.json.lock", true, false},
      {".snapshot.lock", true, false},
      {".tmp-backups", false, false},
      {".tmp-Ab12C", false, false},
      {".tmp-Ab12Cd.x", false, false},
      {"x.tmp-Ab12Cd", false, false},
      {"state.lock", false, false},
      {"gen-3", false, false},  // a snapshot's prune removes directories only
      {"summary.json", false, false},
      // A StateManager's corrupt copies, which its load prunes.
      {"state.json.corrupt-1700000000", true, false},
      {"state.json.corrupt-1700000000.2", true, false},
      {"x.corrupt--5", true, false},  // a stamp before 1970
      {".corrupt-17", false, false},  // no state file has the empty name
      {"report.corrupt-draft", false, false},
      {"state.json.corrupt-17.x", false, false},
      {"state.json.prev", false, false},  // a user's own .prev is theirs to write
  };
  using Entry = std::function<Status(const test::fs::path& dir, const std::string& name)>;
  struct Point {
    const char* what;
    Entry write;
  };
  const Point points[] = {
      {"AtomicWriter::write",
       [](const test::fs::path& d, const std::string& n) {
         return AtomicWriter<>{}.write(d / n, "x");
       }},
      {"AtomicWriter::write_new",
       [](const test::fs::path& d, const std::string& n) {
         return AtomicWriter<>{}.write_new(d / n, "x");
       }},
      {"AtomicWriter::begin (a WriteTransaction)",
       [](const test::fs::path& d, const std::string& n) {
         AtomicWriter<> w;
         auto t = w.begin(d / n);
         if (!t) return t.status();
         if (Status written = t->write("x"); !written) return written;
         return t->commit();
       }},
      {"AtomicDirectory::write",
       [](const test::fs::path& d, const std::string& n) {
         auto h = Directory::open(d.string());
         return h ? h->write(n, "x") : h.status();
       }},
      {"AtomicDirectory::write_new",
       [](const test::fs::path& d, const std::string& n) {
         auto h = Directory::open(d.string());
         return h ? h->write_new(n, "x") : h.status();
       }},
      {"AtomicDirectory::begin",
       [](const test::fs::path& d, const std::string& n) {
         auto h = Directory::open(d.string());
         if (!h) return h.status();
         auto t = h->begin(n);
         if (!t) return t.status();
         if (Status written = t->write("x"); !written) return written;
         return t->commit();
       }},
      {"Batch::add by path",
       [](const test::fs::path& d, const std::string& n) {
         Batch<> b;
         if (Status added = b.add(d / n, "x"); !added) return added;
         return b.commit();
       }},
      {"Batch::add_stream by path",
       [](const test::fs::path& d, const std::string& n) {
         Batch<> b;
         auto t = b.add_stream(d / n);
         if (!t) return t.status();
         if (Status written = (*t)->write("x"); !written) return written;
         return b.commit();
       }},
      {"Batch::add through a handle",
       [](const test::fs::path& d, const std::string& n) {
         auto h = Directory::open(d.string());
         if (!h) return h.status();
         Batch<> b;
         if (Status added = b.add(*h, n, "x"); !added) return added;
         return b.commit();
       }},
  };
  for (const Point& point : points) {
    for (const Name& name : names) {
      CAPTURE(point.what, name.name);
      TempDir dir;
      const Status s = point.write(dir.path(), name.name);
      if (name.owned) {
        CHECK(s.step() == Step::check_path);
        CHECK(s.code() == std::errc::invalid_argument);
        CHECK(s.message().find(name.name) != std::string::npos);
        CHECK(s.message().find("the library gives its") != std::string::npos);
        CHECK_FALSE(test::fs::exists(dir / name.name));
      } else {
        CHECK(s.ok());
        CHECK(read_file(dir / name.name) == "x");
      }
    }
  }
  for (const Name& name : names) {
    CAPTURE(name.name);
    TempDir dir;
    test::write_plain(dir / name.name, "left by a killed save");
    auto swept = AtomicWriter<>{}.remove_stale_temp_files(dir.path());
    REQUIRE(swept.has_value());
    CHECK(swept->removed == (name.swept ? 1u : 0u));
    CHECK(test::fs::exists(dir / name.name) == !name.swept);
    if (name.swept) CHECK(name.owned);  // what a sweep removes, no save writes
  }
}
