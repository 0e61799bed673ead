// Status and Result: what a caller learns from every operation.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

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
       "write data /d/.tmp-Ab12Cd for /d/f: No space left on device"},
      {Step::create_temp_file, EACCES, "/x/.tmp-SvzJs3", "/x/state.json", false,
       "create temp file /x/.tmp-SvzJs3 for /x/state.json: Permission denied"},
      {Step::create_directory, EROFS, "/mnt/ro/new", "/mnt/ro/new/f", false,
       "create directory /mnt/ro/new for /mnt/ro/new/f: Read-only file system"},
      {Step::sync_directory, EIO, "/d", "/d/f", true,
       "sync directory /d for /d/f: Input/output error (/d/f was replaced, but the "
       "replacement is not known to be durable)"},
      {Step::check_path, EISDIR, "/d/f", "/d/f", false, "check path /d/f: Is a directory"},
      {Step::open_file, ENOENT, "/d/state.json", "", false,
       "open file /d/state.json: No such file or directory"},
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

TEST_CASE("code() of an OS failure is the errno in the system category", "[status]") {
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
                        Step::copy_aside,
                        Step::upgrade,
                        Step::serialize,
                        Step::remove_temp_file,
                        Step::lock_run,
                        Step::keep_previous,
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

TEST_CASE("value_or gives the value, or the fallback after a failure", "[status]") {
  const Result<std::string> held = std::string("state");
  const Result<std::string> failed = Status(Step::read_file, os_error(EIO), "/d/state.json");
  CHECK(held.value_or("none") == "state");
  CHECK(failed.value_or("none") == "none");
  CHECK(Result<int>(7).value_or(0) == 7);
  CHECK(
      Result<std::unique_ptr<int>>(Status(Step::parse, os_error(EINVAL), "x")).value_or(nullptr) ==
      nullptr);
}

// What misuse does, in a child process: reading the value of a failed
// Result must end the program with the failure on stderr, in every build
// mode, never hand back a default value.
TEST_CASE("value() of a failed Result prints the failure and aborts in every build", "[status]") {
  struct Row {
    const char* how;
    void (*misuse)(const Result<int>&);
  };
  const Row rows[] = {
      {"value()", [](const Result<int>& r) { std::printf("%d", r.value()); }},
      {"operator*", [](const Result<int>& r) { std::printf("%d", *r); }},
      {"operator->", [](const Result<int>& r) { std::printf("%d", *r.operator->()); }},
  };
  for (const Row& row : rows) {
    CAPTURE(row.how);
    int err[2];
    REQUIRE(::pipe(err) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      std::signal(SIGABRT, SIG_DFL);  // Catch2's handler would report the abort as a failure
      ::dup2(err[1], 2);
      const Result<int> failed = Status(Step::open_file, os_error(ENOENT), "/d/state.json");
      row.misuse(failed);
      std::_Exit(0);  // reached only if misuse returned a value
    }
    ::close(err[1]);
    std::string said;
    char buffer[512];
    for (ssize_t n; (n = ::read(err[0], buffer, sizeof buffer)) > 0;)
      said.append(buffer, static_cast<std::size_t>(n));
    ::close(err[0]);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
    CHECK(said.find("open file /d/state.json: No such file or directory") != std::string::npos);
  }
}

TEST_CASE("with_note adds a static note after the reason; a success stays one", "[status]") {
  const Status failed(Step::sync_file, os_error(EIO), "/d/.tmp-Ab12Cd", "/d/f");
  const Status noted = failed.with_note("the temp file could not be removed");
  CHECK(noted.message() ==
        "sync file /d/.tmp-Ab12Cd for /d/f: Input/output error (the temp file could not be "
        "removed)");
  CHECK(failed.message().find("could not be removed") == std::string::npos);
  CHECK(Status().with_note("x").ok());
}

TEST_CASE("copies and moves of a Status share one text and keep every part", "[status]") {
  Status a(Step::rename, os_error(EACCES), "/d/.tmp-Ab12Cd", "/d/f", false, "a note", "a detail");
  Status b = a;
  Status c = std::move(b);
  Status d;
  d = c;
  Status& same = d;
  d = same;  // self-assignment keeps it
  Status e;
  e = std::move(c);
  for (const Status* s : {&a, &d, &e}) {
    CHECK(s->path() == "/d/.tmp-Ab12Cd");
    CHECK(s->target() == "/d/f");
    CHECK(s->detail() == "a detail");
    CHECK(s->message() == a.message());
  }
}
