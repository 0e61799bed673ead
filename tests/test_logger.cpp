// Logger sinks: what counts as one, and the logfmt text sink's lines.
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_logger.hpp"
#include "support/catch.hpp"

using atomic_state::Field;
using atomic_state::Fields;
using atomic_state::Level;
using atomic_state::LogfmtLogger;

namespace {

struct TemplateSink {  // generic over the fields' type: still a sink
  template <class F>
  void log(Level, std::string_view, const F&) {}
};
struct NoLogMember {};
struct WrongArguments {
  void log(std::string_view) {}
};
struct LogIsNotCallable {
  int log = 0;
};
struct PrivateLog {
 private:
  void log(Level, std::string_view, Fields) {}
};

// The trait and (under C++20) the concept agree on every type.
#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
#define CHECK_SINK(T, expected)                                \
  static_assert(atomic_state::is_log_sink_v<T> == (expected)); \
  static_assert(atomic_state::LogSink<T> == (expected))
#else
#define CHECK_SINK(T, expected) static_assert(atomic_state::is_log_sink_v<T> == (expected))
#endif

CHECK_SINK(atomic_state::NullLogger, true);
CHECK_SINK(LogfmtLogger, true);
CHECK_SINK(LogfmtLogger&, true);
CHECK_SINK(test::CaptureLogger, true);
CHECK_SINK(TemplateSink, true);
CHECK_SINK(NoLogMember, false);
CHECK_SINK(WrongArguments, false);
CHECK_SINK(LogIsNotCallable, false);
CHECK_SINK(PrivateLog, false);
CHECK_SINK(int, false);

std::string logfmt(Level min, Level level, std::string_view message,
                   const std::vector<Field>& fields) {
  std::ostringstream out;
  LogfmtLogger logger(out, min);
  logger.log(level, message, Fields(fields.data(), fields.size()));
  return out.str();
}

}  // namespace

TEST_CASE("a logfmt line per record, fields in the order given", "[logger]") {
  struct Row {
    const char* why;
    Level level;
    const char* message;
    std::vector<Field> fields;
    const char* line;
  };
  const Row rows[] = {
      {"the seed's state saved record",
       Level::info,
       "state saved",
       {{"timestamp", 1700000000}, {"protocol_count", 42}, {"tvs", 1500000000.0}},
       "level=info msg=\"state saved\" timestamp=1700000000 protocol_count=42 "
       "tvs=1500000000\n"},
      {"no fields",
       Level::debug,
       "first run, processing required",
       {},
       "level=debug msg=\"first run, processing required\"\n"},
      {"a one-word message is bare",
       Level::warn,
       "skew",
       {{"ok", false}},
       "level=warn msg=skew ok=false\n"},
      {"booleans and negative numbers",
       Level::error,
       "x",
       {{"a", true}, {"b", -7}, {"c", -0.25}},
       "level=error msg=x a=true b=-7 c=-0.25\n"},
      {"a path with no spaces is bare",
       Level::info,
       "m",
       {{"path", "/var/lib/c/state.json"}},
       "level=info msg=m path=/var/lib/c/state.json\n"},
      {"spaces, quotes, equals and newlines are quoted and escaped",
       Level::info,
       "m",
       {{"error", "syntax error at \"x\"\nnext=1"}},
       "level=info msg=m error=\"syntax error at \\\"x\\\"\\nnext=1\"\n"},
      {"an empty value is quoted",
       Level::info,
       "m",
       {{"name", ""}},
       "level=info msg=m name=\"\"\n"},
      {"control characters are escaped",
       Level::info,
       "m",
       {{"k", "a\x01z"}},
       "level=info msg=m k=\"a\\u0001z\"\n"},
      {"non-finite numbers have names",
       Level::info,
       "m",
       {{"a", NAN}, {"b", HUGE_VAL}, {"c", -HUGE_VAL}},
       "level=info msg=m a=NaN b=+Inf c=-Inf\n"},
      {"integers of every width",
       Level::info,
       "m",
       {{"u8", static_cast<unsigned char>(200)}, {"i64", INT64_MIN}},
       "level=info msg=m u8=200 i64=-9223372036854775808\n"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.why);
    CHECK(logfmt(Level::debug, row.level, row.message, row.fields) == row.line);
  }
}

TEST_CASE("records below the minimum level are dropped", "[logger]") {
  const Level levels[] = {Level::debug, Level::info, Level::warn, Level::error};
  for (Level min : levels)
    for (Level level : levels) {
      CAPTURE(atomic_state::to_string(min), atomic_state::to_string(level));
      CHECK(logfmt(min, level, "m", {}).empty() == (level < min));
    }
  std::ostringstream out;
  LogfmtLogger logger(out);
  CHECK(logger.min_level() == Level::info);  // the default
  logger.set_min_level(Level::error);
  logger.log(Level::warn, "dropped", {});
  CHECK(out.str().empty());
}

TEST_CASE("a long record is written whole", "[logger]") {
  const std::string value(5000, 'v');
  const std::string line = logfmt(Level::debug, Level::info, "m", {{"k", value}});
  CHECK(line == "level=info msg=m k=" + value + "\n");
}

TEST_CASE("a stream that throws does not make the sink throw", "[logger]") {
  struct ThrowingBuffer : std::streambuf {
    int overflow(int) override { throw std::runtime_error("disk on fire"); }
    std::streamsize xsputn(const char*, std::streamsize) override {
      throw std::runtime_error("disk on fire");
    }
  } buffer;
  std::ostream out(&buffer);
  out.exceptions(std::ios::badbit);  // rethrow what the buffer throws
  LogfmtLogger logger(out, Level::debug);
  CHECK_NOTHROW(logger.log(Level::info, "m", {}));
  CHECK(out.bad());  // the write was attempted, and failed
}

TEST_CASE("Fields is a view that finds a field by key", "[logger]") {
  const Field fields[] = {{"path", "/p"}, {"n", 3}, {"n", 4}};
  const Fields view(fields, 3);
  CHECK(view.size() == 3);
  CHECK_FALSE(view.empty());
  REQUIRE(view.find("n") != nullptr);
  CHECK(std::get<std::int64_t>(view.find("n")->value) == 3);
  CHECK(view.find("missing") == nullptr);
  CHECK(Fields().empty());
  int count = 0;
  for (const Field& f : view) count += f.key.empty() ? 0 : 1;
  CHECK(count == 3);
}

TEST_CASE("every level has its name", "[logger]") {
  CHECK(atomic_state::to_string(Level::debug) == "debug");
  CHECK(atomic_state::to_string(Level::info) == "info");
  CHECK(atomic_state::to_string(Level::warn) == "warn");
  CHECK(atomic_state::to_string(Level::error) == "error");
}
