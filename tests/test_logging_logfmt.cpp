// Logger sinks: what counts as one, and the logfmt text sink's lines.
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

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

CHECK_SINK(atomic_state::NullSink, true);
CHECK_SINK(LogfmtSink, true);
CHECK_SINK(LogfmtSink&, true);
CHECK_SINK(test::CaptureSink, true);
CHECK_SINK(TemplateSink, true);
CHECK_SINK(NoLogMember, false);
CHECK_SINK(WrongArguments, false);
CHECK_SINK(LogIsNotCallable, false);
CHECK_SINK(PrivateLog, false);
CHECK_SINK(int, false);

std::string logfmt(Level min, Level level, std::string_view message,
                   const std::vector<Field>& fields) {
  std::ostringstream out;
  LogfmtSink logger(out, min);
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
       "tvs=1500000000.0\n"},
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
  LogfmtSink logger(out);
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
  LogfmtSink logger(out, Level::debug);
  CHECK_NOTHROW(logger.log(Level::info, "m", {}));
  CHECK(out.bad());  // the write was attempted, and failed
}

TEST_CASE("a stream's own members of the same names are not what the sink calls", "[logger]") {
  // The sink writes through std::ostream, whatever the stream's type: a
  // derived stream's clear() (here: one that empties it) is not called.
  struct Emptying : std::ostringstream {
    void clear() { str(""); }
  } out;
  LogfmtSink sink(out);
  sink.log(Level::info, "first", {});
  sink.log(Level::info, "second", {});
  CHECK(out.str() == "level=info msg=first\nlevel=info msg=second\n");
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

TEST_CASE("a line the stream fails to take is lost alone", "[logger]") {
  // A stream that fails once (a full pipe, a disk full for a moment), then
  // recovers: every later record must arrive.
  struct FailingOnce : std::stringbuf {
    bool failed = false;
    std::streamsize xsputn(const char* s, std::streamsize n) override {
      if (!failed) {
        failed = true;
        return 0;
      }
      return std::stringbuf::xsputn(s, n);
    }
  } buffer;
  std::ostream out(&buffer);
  LogfmtSink logger(out, Level::debug);
  logger.log(Level::info, "lost", {});
  CHECK_FALSE(out.good());  // the first line failed
  logger.log(Level::info, "second", {});
  logger.log(Level::info, "third", {});
  CHECK(buffer.str() == "level=info msg=second\nlevel=info msg=third\n");
}

TEST_CASE("no value, key or message can end a logfmt record or forge a field", "[logger]") {
  struct Row {
    const char* what;
    std::string value;
    const char* written;  // what the value becomes in the line
  };
  const Row rows[] = {
      {"a newline and a forged record", "x\nlevel=error msg=forged",
       R"("x\nlevel=error msg=forged")"},
      {"a carriage return", "a\rb", R"("a\rb")"},
      {"a quote and a forged field", "a\" level=error", R"("a\" level=error")"},
      {"a backslash", "a\\b", R"("a\\b")"},
      {"ESC, a terminal's escape", "\x1b[2J", R"("\u001b[2J")"},
      {"DEL", "a\x7f", R"("a\u007f")"},
      {"NEL, U+0085, a line break to some readers",
       "a\xc2\x85"
       "b",
       R"("a\u0085b")"},
      {"CSI, U+009B",
       "\xc2\x9b"
       "2J",
       R"("\u009b2J")"},
      {"U+2028 LINE SEPARATOR",
       "a\xe2\x80\xa8"
       "b",
       R"("a\u2028b")"},
      {"U+2029 PARAGRAPH SEPARATOR",
       "a\xe2\x80\xa9"
       "b",
       R"("a\u2029b")"},
      {"U+202E RIGHT-TO-LEFT OVERRIDE",
       "\xe2\x80\xae"
       "cba",
       R"("\u202ecba")"},
      {"U+2066 LEFT-TO-RIGHT ISOLATE",
       "\xe2\x81\xa6"
       "x",
       R"("\u2066x")"},
      {"U+200F RIGHT-TO-LEFT MARK",
       "\xe2\x80\x8f"
       "x",
       R"("\u200fx")"},
      {"U+061C ARABIC LETTER MARK",
       "\xd8\x9c"
       "x",
       R"("\u061cx")"},
      {"a byte that is not UTF-8",
       "a\xff"
       "b",
       R"("a\xffb")"},
      {"a truncated UTF-8 sequence", "a\xe2\x80", R"("a\xe2\x80")"},
      {"an overlong slash", "\xc0\xaf", R"("\xc0\xaf")"},
      {"a NUL byte", std::string("a\0b", 3), R"("a\u0000b")"},
      {"ordinary text stays as it is", "caf\xc3\xa9 \xe2\x82\xac 5",
       "\"caf\xc3\xa9 \xe2\x82\xac 5\""},
      {"a plain word stays bare", "switchboard", "switchboard"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.what);
    const std::string line = logfmt(Level::debug, Level::info, "m", {{"k", row.value}});
    CHECK(line == std::string("level=info msg=m k=") + row.written + "\n");
    CHECK(line.find('\n') == line.size() - 1);  // one record, one line
    const std::string as_message = logfmt(Level::debug, Level::info, row.value, {});
    CHECK(as_message == std::string("level=info msg=") + row.written + "\n");
  }

  struct KeyRow {
    std::string key;
    const char* written;
  };
  const KeyRow keys[] = {
      {"plain_key.1", "plain_key.1"},
      {"two words", "two_words"},
      {"k=v", "k_v"},
      {"x\nlevel=error", "x_level_error"},
      {"quote\"d", "quote_d"},
      {"", "_"},
      {"caf\xc3\xa9", "caf__"},
      {"level", "fields.level"},  // never a second level= in the record
      {"msg", "fields.msg"},
  };
  for (const KeyRow& row : keys) {
    CAPTURE(row.key);
    CHECK(logfmt(Level::debug, Level::info, "m", {{row.key, 1}}) ==
          std::string("level=info msg=m ") + row.written + "=1\n");
  }
}

TEST_CASE("every integer logs as itself, whatever its type", "[logger]") {
  struct Row {
    Field field;
    const char* written;
  };
  const Row rows[] = {
      {{"u64", UINT64_MAX}, "u64=18446744073709551615"},
      {{"u64", std::uint64_t{1} << 63}, "u64=9223372036854775808"},
      {{"i64", INT64_MIN}, "i64=-9223372036854775808"},
      {{"size", std::size_t{3}}, "size=3"},
      {{"u8", std::uint8_t{200}}, "u8=200"},
      {{"i8", std::int8_t{-5}}, "i8=-5"},
      {{"u16", std::uint16_t{65535}}, "u16=65535"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.written);
    CHECK(logfmt(Level::debug, Level::info, "m", {row.field}) ==
          std::string("level=info msg=m ") + row.written + "\n");
  }
  CHECK(std::holds_alternative<std::uint64_t>(Field("u", 1u).value));
  CHECK(std::holds_alternative<std::int64_t>(Field("i", 1).value));
  // A character is refused at compile time (the compile-fail test shows it).
  static_assert(!std::is_constructible_v<Field, std::string_view, char>);
  static_assert(!std::is_constructible_v<Field, std::string_view, char32_t>);
  static_assert(!std::is_constructible_v<Field, std::string_view, wchar_t>);
}

TEST_CASE("append_logfmt_fields and append_logfmt_text write what LogfmtSink writes", "[logger]") {
  const std::vector<Field> fields = {{"path", "/var/lib/c"},
                                     {"error", "a \"b\"\n\xe2\x80\xae"},
                                     {"count", std::uint64_t{3}},
                                     {"tvs", 1.5e9},
                                     {"ok", true},
                                     {"bad key", -1}};
  std::string line = "level=info msg=";
  REQUIRE(atomic_state::append_logfmt_text(line, "state saved"));
  REQUIRE(atomic_state::append_logfmt_fields(line, Fields(fields.data(), fields.size())));
  CHECK(line + "\n" == logfmt(Level::debug, Level::info, "state saved", fields));
  std::string word;
  REQUIRE(atomic_state::append_logfmt_text(word, "switchboard"));
  CHECK(word == "switchboard");
}
