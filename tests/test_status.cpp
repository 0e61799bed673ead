// Status and Result: what a caller learns from every operation.
#include <cerrno>
#include <memory>
#include <set>
#include <string>

#include "atomic_state.hpp"
#include "support/catch.hpp"

using atomic_state::Result;
using atomic_state::Status;
using atomic_state::Step;

namespace {
std::error_code os_error(int e) { return {e, std::system_category()}; }
}  // namespace

TEST_CASE("a default Status is success", "[status]") {
  const Status s;
  CHECK(s.ok());
  CHECK(static_cast<bool>(s));
  CHECK(s.step() == Step::none);
  CHECK_FALSE(s.code());
  CHECK_FALSE(s.replaced());
  CHECK(s.message() == "ok");
}

TEST_CASE("a failed Status reads as one sentence naming step, paths and reason", "[status]") {
  struct Row {
    Step step;
    int error;
    const char* subject;
    const char* target;
    bool replaced;
    const char* expected;
  };
  const Row rows[] = {
      {Step::rename, EACCES, "/var/lib/c/.tmp-Ab12Cd", "/var/lib/c/state.json", false,
       "rename /var/lib/c/.tmp-Ab12Cd to /var/lib/c/state.json: Permission denied"},
      {Step::write_data, ENOSPC, "/d/.tmp-Ab12Cd", "/d/f", false,
       "write data /d/.tmp-Ab12Cd: No space left on device"},
      {Step::create_directory, EROFS, "/mnt/ro/new", "/mnt/ro/new/f", false,
       "create directory /mnt/ro/new: Read-only file system"},
      {Step::sync_directory, EIO, "/d", "/d/f", true,
       "sync directory /d: Input/output error (/d/f was replaced, but the "
       "replacement is not known to be durable)"},
  };
  for (const Row& row : rows) {
    const Status s(row.step, os_error(row.error), row.subject, row.target, row.replaced);
    CAPTURE(row.expected);
    CHECK_FALSE(s.ok());
    CHECK_FALSE(static_cast<bool>(s));
    CHECK(s.step() == row.step);
    CHECK(s.path() == row.subject);
    CHECK(s.target() == row.target);
    CHECK(s.replaced() == row.replaced);
    CHECK(s.message() == row.expected);
  }
}

TEST_CASE("code() is the OS errno in the system category", "[status]") {
  const Status s(Step::sync_file, os_error(ENOSPC), "/d/.tmp-x", "/d/f");
  CHECK(s.code().category() == std::system_category());
  CHECK(s.code().value() == ENOSPC);
  CHECK(s.code() == std::errc::no_space_on_device);  // portable comparison
}

TEST_CASE("a failure recorded as Step::none still reads as a failure", "[status]") {
  const Status s(Step::none, os_error(EINVAL), "x");
  CHECK_FALSE(s.ok());
  CHECK(s.step() == Step::invalid_use);
}

TEST_CASE("every step has its own words", "[status]") {
  const Step steps[] = {Step::none,
                        Step::check_path,
                        Step::create_directory,
                        Step::open_directory,
                        Step::create_temp_file,
                        Step::write_data,
                        Step::set_permissions,
                        Step::sync_file,
                        Step::close_temp_file,
                        Step::rename,
                        Step::sync_directory,
                        Step::open_file,
                        Step::check_file,
                        Step::read_file,
                        Step::parse,
                        Step::move_aside,
                        Step::serialize,
                        Step::invalid_use};
  std::set<std::string> seen;
  for (Step step : steps) seen.insert(std::string(atomic_state::to_string(step)));
  CHECK(seen.size() == std::size(steps));
  CHECK(atomic_state::to_string(Step::create_temp_file) == "create temp file");
  CHECK(atomic_state::to_string(Step::close_temp_file) == "close temp file");
  CHECK(atomic_state::to_string(Step::set_permissions) == "set permissions");
}

TEST_CASE("within() puts the caller's task in front of the message", "[status]") {
  const Status failed(Step::rename, os_error(EACCES), "/d/.tmp-Ab12Cd", "/d/state.json");
  const Status seen = failed.within("write state file");
  CHECK(seen.context() == "write state file");
  CHECK(seen.message() ==
        "write state file: rename /d/.tmp-Ab12Cd to /d/state.json: Permission denied");
  CHECK(seen.step() == Step::rename);
  CHECK(seen.code() == failed.code());
  CHECK(failed.context().empty());  // the original is unchanged
  CHECK(Status().within("write state file").ok());
  CHECK(Status().within("write state file").context().empty());
}

TEST_CASE("a run-time detail follows the static notes in the message", "[status]") {
  const Status s(Step::serialize, os_error(EINVAL), "/d/state.json", {}, false, nullptr,
                 "last_tvs: not a finite number (NaN)");
  CHECK(s.message() ==
        "serialize /d/state.json: Invalid argument (last_tvs: not a finite number (NaN))");
  const Status copy = s;  // copies share the detail
  CHECK(copy.message() == s.message());
}

TEST_CASE("Result holds a value or the Status that prevented it", "[status]") {
  SECTION("a value") {
    Result<int> r = 42;
    CHECK(r.has_value());
    CHECK(static_cast<bool>(r));
    CHECK(r.value() == 42);
    CHECK(*r == 42);
    CHECK(r.status().ok());
  }
  SECTION("a failure") {
    Result<int> r = Status(Step::open_directory, os_error(ENOTDIR), "/etc/passwd");
    CHECK_FALSE(r.has_value());
    CHECK_FALSE(static_cast<bool>(r));
    CHECK(r.status().step() == Step::open_directory);
    CHECK(r.status().message() == "open directory /etc/passwd: Not a directory");
  }
  SECTION("a move-only value, reached through operator->") {
    Result<std::unique_ptr<std::string>> r = std::make_unique<std::string>("state");
    REQUIRE(r);
    CHECK(r->get()->size() == 5);
    std::unique_ptr<std::string> taken = std::move(r).value();
    CHECK(*taken == "state");
  }
  SECTION("a success Status given where a failure belongs becomes an error") {
    Result<int> r = Status();
    CHECK_FALSE(r.has_value());
    CHECK_FALSE(r.status().ok());
    CHECK(r.status().step() == Step::invalid_use);
  }
}
