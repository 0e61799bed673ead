// AtomicWriter::begin: replacing a file with data that is not in one buffer.
#include <cerrno>
#include <string>
#include <utility>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

// A transaction keeps using its writer's filesystem policy, so it cannot be
// begun from a temporary writer.
template <class W, class = void>
struct can_begin_on_rvalue : std::false_type {};
template <class W>
struct can_begin_on_rvalue<
    W, std::void_t<decltype(std::declval<W&&>().begin(std::filesystem::path("x")))>>
    : std::true_type {};
static_assert(!can_begin_on_rvalue<AtomicWriter<>>::value);
static_assert(can_begin_on_rvalue<AtomicWriter<>&>::value);

TEST_CASE("a transaction written in many chunks commits their concatenation", "[stream]") {
  TempDir dir;
  AtomicWriter<> writer;
  auto tx = writer.begin(dir / "log.txt", 0640);
  REQUIRE(tx);
  std::string expected;
  for (int i = 0; i < 1000; ++i) {
    const std::string chunk =
        std::to_string(i) + std::string(static_cast<std::size_t>(i % 7), '.') + "\n";
    expected += chunk;
    REQUIRE(tx->write(chunk).ok());
  }
  REQUIRE(tx->write("").ok());
  REQUIRE(tx->commit().ok());
  CHECK(read_file(dir / "log.txt") == expected);
  CHECK(mode_of(dir / "log.txt") == 0640);
  CHECK(temp_files_in(dir.path()).empty());
}

TEST_CASE("until the commit the target is untouched and the temp file is private", "[stream]") {
  TempDir dir;
  test::write_plain(dir / "f", "old");
  // A named temp file (a filesystem without unnamed ones), to look at.
  AtomicWriter<FullSync, test::NamedTempFs> writer;
  auto tx = writer.begin(dir / "f");
  REQUIRE(tx);
  REQUIRE(tx->write("new").ok());
  const auto temps = temp_files_in(dir.path());
  REQUIRE(temps.size() == 1);
  CHECK(temps[0] == tx->temp_name());
  CHECK(temps[0].size() == 11);  // ".tmp-" and six characters
  CHECK(mode_of(dir / temps[0]) == 0600);
  CHECK(read_file(dir / "f") == "old");
  REQUIRE(tx->commit().ok());
  CHECK(read_file(dir / "f") == "new");
  CHECK(tx->temp_name().empty());
}

TEST_CASE("an unnamed temp file is in no directory until its commit", "[stream]") {
  if (!protocol::unnamed_temp_files()) {
    WARN("the test directory's filesystem has no unnamed files (O_TMPFILE): nothing to prove");
    return;
  }
  TempDir dir;
  test::write_plain(dir / "f", "old");
  AtomicWriter<> writer;
  auto tx = writer.begin(dir / "f");
  REQUIRE(tx);
  REQUIRE(tx->write("new").ok());
  CHECK(tx->temp_name().empty());
  CHECK(test::names_in(dir.path()) == std::vector<std::string>{"f"});
  CHECK(read_file(dir / "f") == "old");
  REQUIRE(tx->commit().ok());
  CHECK(test::names_in(dir.path()) == std::vector<std::string>{"f"});
  CHECK(read_file(dir / "f") == "new");
}

TEST_CASE("destroying a transaction without a commit discards it", "[stream]") {
  TempDir dir;
  test::write_plain(dir / "f", "old");
  const int fds = test::open_fd_count();
  AtomicWriter<> writer;
  {
    auto tx = writer.begin(dir / "f");
    REQUIRE(tx);
    REQUIRE(tx->write("never committed").ok());
  }
  CHECK(read_file(dir / "f") == "old");
  CHECK(temp_files_in(dir.path()).empty());
  CHECK(test::open_fd_count() == fds);
}

TEST_CASE("discard() removes the temp file at once and ends the transaction", "[stream]") {
  TempDir dir;
  const int fds = test::open_fd_count();
  AtomicWriter<> writer;
  auto tx = writer.begin(dir / "f");
  REQUIRE(tx);
  REQUIRE(tx->write("x").ok());
  tx->discard();
  CHECK(test::open_fd_count() == fds);
  CHECK(temp_files_in(dir.path()).empty());
  CHECK_FALSE(test::fs::exists(dir / "f"));
  const auto late = tx->commit();
  CHECK(late.step() == Step::invalid_use);
  CHECK(late.message().find("discarded") != std::string::npos);
}

TEST_CASE("a committed transaction refuses further writes and commits", "[stream]") {
  TempDir dir;
  AtomicWriter<> writer;
  auto tx = writer.begin(dir / "f");
  REQUIRE(tx);
  REQUIRE(tx->write("once").ok());
  REQUIRE(tx->commit().ok());
  for (const auto& late : {tx->write("again"), tx->commit()}) {
    CHECK(late.step() == Step::invalid_use);
    CHECK(late.code() == std::errc::bad_file_descriptor);
    CHECK(late.message().find("already committed") != std::string::npos);
  }
  CHECK(read_file(dir / "f") == "once");
}

TEST_CASE("moving a transaction moves its temp file; the source is inert", "[stream]") {
  TempDir dir;
  AtomicWriter<> writer;
  auto first = writer.begin(dir / "f");
  REQUIRE(first);
  REQUIRE(first->write("moved ").ok());
  auto second = std::move(*first);
  CHECK(first->temp_name().empty());
  CHECK(first->commit().step() == Step::invalid_use);
  REQUIRE(second.write("along").ok());
  REQUIRE(second.commit().ok());
  CHECK(read_file(dir / "f") == "moved along");

  SECTION("move-assigning over an open transaction discards the one replaced") {
    AtomicWriter<FullSync, test::NamedTempFs> named;  // temp files to count
    auto a = named.begin(dir / "a");
    auto b = named.begin(dir / "b");
    REQUIRE(a);
    REQUIRE(b);
    CHECK(temp_files_in(dir.path()).size() == 2);
    const int fds = test::open_fd_count();
    *a = std::move(*b);
    CHECK(temp_files_in(dir.path()).size() == 1);
    CHECK(test::open_fd_count() == fds - 2);  // a's file and directory
    REQUIRE(a->commit().ok());
    CHECK(test::fs::exists(dir / "b"));
    CHECK_FALSE(test::fs::exists(dir / "a"));
  }
}

TEST_CASE("a failed write ends the transaction and is reported again by commit", "[stream]") {
  TempDir dir;
  test::write_plain(dir / "f", "old");
  test::FaultFs fs;
  fs.faults.push_back({test::Op::write, 2, ENOSPC});
  AtomicWriter<FullSync, test::FaultFs&> writer(fs);
  auto tx = writer.begin(dir / "f");
  REQUIRE(tx);
  REQUIRE(tx->write("first").ok());
  const auto failed = tx->write("second");
  CHECK(failed.step() == Step::write_data);
  CHECK(failed.code() == std::errc::no_space_on_device);
  CHECK(temp_files_in(dir.path()).empty());
  CHECK(fs.open_descriptors().empty());
  const auto commit = tx->commit();
  CHECK(commit.step() == Step::write_data);
  CHECK(commit.message() == failed.message());
  CHECK(read_file(dir / "f") == "old");
}

TEST_CASE("begin reports a failure as a Result without a transaction", "[stream]") {
  TempDir dir;
  test::write_plain(dir / "file", "x");
  AtomicWriter<> writer;
  auto tx = writer.begin(dir / "file" / "f");
  CHECK_FALSE(tx.has_value());
  CHECK(tx.status().step() == Step::open_directory);
}
