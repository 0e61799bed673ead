// The example sinks of examples/sinks/: JSON Lines always, spdlog when it is
// installed (ATOMIC_STATE_TEST_SPDLOG). Each line a sink writes must carry
// the level, the message and every field, readable by a machine, and stay
// one record on one line whatever bytes the data holds.
#include <cmath>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "../examples/sinks/jsonlines_sink.hpp"
#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"
#if ATOMIC_STATE_TEST_SPDLOG
#include <spdlog/sinks/ostream_sink.h>

#include "../examples/sinks/spdlog_sink.hpp"
#endif

namespace json = boost::json;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

json::object parsed(const std::string& line) {
  auto v = atomic_state::parse_json(line);
  REQUIRE(v.has_value());
  REQUIRE(v->is_object());
  return v->as_object();
}

// Whether `text` holds a byte or character that some reader takes for the
// end of a line or a terminal command: a C0 control (the final newline
// aside), DEL, or in UTF-8 a C1 control (NEL, CSI, ...), U+2028, U+2029 or a
// bidirectional control (U+200E, U+200F, U+202A-U+202E, U+2066-U+2069).
bool has_raw_control(std::string_view text) {
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  const auto byte = [&](std::size_t i) -> unsigned {
    return i < text.size() ? static_cast<unsigned char>(text[i]) : 0u;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const unsigned c = byte(i);
    if (c < 0x20 || c == 0x7F) return true;
    if (c == 0xC2 && byte(i + 1) >= 0x80 && byte(i + 1) <= 0x9F) return true;
    if (c == 0xE2 && byte(i + 1) == 0x80 &&
        (byte(i + 2) == 0x8E || byte(i + 2) == 0x8F ||
         (byte(i + 2) >= 0xA8 && byte(i + 2) <= 0xAE)))
      return true;
    if (c == 0xE2 && byte(i + 1) == 0x81 && byte(i + 2) >= 0xA6 && byte(i + 2) <= 0xA9) return true;
  }
  return false;
}

// Text no sink may write raw: each would end a line, forge a record or a
// field, or make a JSON line invalid, if copied as it is.
struct Hostile {
  const char* what;
  std::string text;
  // What a JSON reader reads back where it is not the text itself: U+FFFD
  // for each byte that is not part of valid UTF-8.
  const char* json = nullptr;
};
#define U_FFFD "\xef\xbf\xbd"
const Hostile hostile[] = {
    {"a newline and a forged spdlog record", "x\n[error] forged"},
    {"a newline and a forged JSON record", "x\n{\"level\":\"error\"}"},
    {"a carriage return", "a\rb"},
    {"a quote and a forged field", "a\" level=error"},
    {"a backslash", "a\\b"},
    {"ESC sequences", "\x1b[2J\x1b]0;title\x07"},
    {"DEL", "a\x7f"},
    {"NEL, U+0085",
     "a\xc2\x85"
     "b"},
    {"U+2028 LINE SEPARATOR",
     "a\xe2\x80\xa8"
     "b"},
    {"U+2029 PARAGRAPH SEPARATOR",
     "a\xe2\x80\xa9"
     "b"},
    {"U+202E RIGHT-TO-LEFT OVERRIDE",
     "\xe2\x80\xae"
     "cba"},
    {"a byte that is never UTF-8, 0xFF",
     "a\xff"
     "b",
     "a" U_FFFD "b"},
    {"an overlong slash, C0 AF", "/\xc0\xaf/", "/" U_FFFD U_FFFD "/"},
    {"an overlong 3-byte slash, E0 80 AF", "/\xe0\x80\xaf/", "/" U_FFFD U_FFFD U_FFFD "/"},
    {"a truncated 3-byte sequence", "a\xe2\x82", "a" U_FFFD U_FFFD},
    {"a truncated 3-byte sequence before ASCII", "a\xe2\x82z", "a" U_FFFD U_FFFD "z"},
    {"a lone continuation byte", "a\x80z", "a" U_FFFD "z"},
    {"an encoded surrogate, ED A0 80", "\xed\xa0\x80", U_FFFD U_FFFD U_FFFD},
    {"a code point beyond U+10FFFF", "\xf4\x90\x80\x80", U_FFFD U_FFFD U_FFFD U_FFFD},
    {"Latin-1, not UTF-8", "/srv/caf\xe9/state", "/srv/caf" U_FFFD "/state"},
    {"a NUL byte", std::string("a\0b", 3)},
    {"braces, which are not a format string", "{} {:x} {0}"},
    {"ordinary UTF-8, a 4-byte sequence and U+FFFD itself",
     "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 " U_FFFD},
    {"an empty string", ""},
};

// The line a JsonLinesSink writes for one info record.
std::string jsonlines(std::string_view message, const std::vector<Field>& fields) {
  std::ostringstream out;
  JsonLinesSink(out, Level::debug).log(Level::info, message, Fields(fields.data(), fields.size()));
  return out.str();
}

// That line checked to be one line, with no raw control, of valid JSON
// (parse_json refuses invalid UTF-8), and read back.
json::object json_record(std::string_view message, const std::vector<Field>& fields) {
  const std::string line = jsonlines(message, fields);
  INFO(line);
  CHECK(line.find('\n') == line.size() - 1);
  CHECK_FALSE(has_raw_control(line));
  const json::object o = parsed(line);
  CHECK(o.size() == 2 + fields.size());  // level, msg and the fields: nothing forged
  CHECK(o.at("level") == "info");
  return o;
}

}  // namespace

TEST_CASE("JSON Lines: one object per record with level, msg and every field typed", "[sinks]") {
  std::ostringstream out;
  JsonLinesSink sink(out, Level::debug);
  const Field fields[] = {{"timestamp", 1700000000},
                          {"tvs", 0.1},
                          {"fresh", true},
                          {"path", "/var/lib/a \"quoted\"\n dir"},
                          {"nan", std::nan("")}};
  sink.log(Level::warn, "state \"file\" corrupted", Fields(fields, 5));
  const auto lines = lines_of(out.str());
  REQUIRE(lines.size() == 1);
  const json::object o = parsed(lines[0]);
  CHECK(o.at("level") == "warn");
  CHECK(o.at("msg") == "state \"file\" corrupted");
  CHECK(o.at("timestamp").as_int64() == 1700000000);
  CHECK(o.at("tvs").as_double() == 0.1);  // exact, not 0.10000000000000001
  CHECK(o.at("fresh").as_bool());
  CHECK(o.at("path") == "/var/lib/a \"quoted\"\n dir");
  CHECK(o.at("nan").is_null());  // JSON has no NaN
}

TEST_CASE("JSON Lines: records below the minimum level are dropped", "[sinks]") {
  std::ostringstream out;
  JsonLinesSink sink(out, Level::info);
  sink.log(Level::debug, "hidden", {});
  sink.log(Level::info, "shown", {});
  sink.log(Level::error, "shown too", {});
  CHECK(lines_of(out.str()).size() == 2);
}

TEST_CASE("JSON Lines: a StateManager run is a stream of parseable records", "[sinks]") {
  test::TempDir dir;
  std::ostringstream out;
  JsonLinesSink sink(out, Level::debug);
  atomic_state::StateManager<JsonLinesSink&> manager(dir.path(), sink);
  auto last = manager.load_state();
  REQUIRE(last.has_value());
  REQUIRE(manager.should_process(1700000000, *last));
  REQUIRE(manager.save_state(atomic_state::update_state("x", 1700000000, 42, 1.5e9)).ok());
  std::vector<std::string> messages;
  for (const std::string& line : lines_of(out.str()))
    messages.emplace_back(parsed(line).at("msg").as_string());
  CHECK(messages == std::vector<std::string>{"no state file found, treating as first run",
                                             "first run, processing required", "state saved"});
  CHECK(parsed(lines_of(out.str()).back()).at("protocol_count").as_int64() == 42);
}

TEST_CASE("JSON Lines: every line is valid JSON whatever the bytes of a value, key or message",
          "[sinks]") {
  for (const Hostile& h : hostile) {
    CAPTURE(h.what);
    const std::string read_back = h.json != nullptr ? h.json : h.text;
    CHECK(json_record("m", {{"k", h.text}}).at("k").as_string() == read_back);  // as a value
    CHECK(json_record("m", {{h.text, 1}}).contains(read_back));                 // as a key
    CHECK(json_record(h.text, {}).at("msg").as_string() == read_back);          // as the message
  }
}

TEST_CASE("JSON Lines: the exact text of hostile and typed records", "[sinks]") {
  struct Row {
    const char* why;
    std::string_view message;
    std::vector<Field> fields;
    const char* line;
  };
  const Row rows[] = {
      {"a newline is escaped: no forged record",
       "state loaded",
       {{"oracle_name", "x\n{\"level\":\"error\"}"}},
       R"({"level":"info","msg":"state loaded","oracle_name":"x\n{\"level\":\"error\"}"})"},
      {"a Latin-1 path: the byte that is not UTF-8 becomes U+FFFD",
       "m",
       {{"path", "/srv/caf\xe9/state"}},
       R"({"level":"info","msg":"m","path":"/srv/caf\ufffd/state"})"},
      {"each byte of an invalid sequence is one U+FFFD, in keys too",
       "m",
       {{"k\xed\xa0\x80", "a\xe2\x82z"}},
       R"({"level":"info","msg":"m","k\ufffd\ufffd\ufffd":"a\ufffd\ufffdz"})"},
      {"U+2028, U+2029, NEL and U+202E are escaped, in the message too",
       "a\xe2\x80\xa8"
       "b\xe2\x80\xa9"
       "c\xc2\x85"
       "d\xe2\x80\xae",
       {},
       R"({"level":"info","msg":"a\u2028b\u2029c\u0085d\u202e"})"},
      {"controls, NUL and DEL are escaped",
       "m",
       {{"k", std::string_view("\x1b[2J\0\t\r\x7f", 8)}},
       R"({"level":"info","msg":"m","k":"\u001b[2J\u0000\t\r\u007f"})"},
      {"a field named level or msg cannot replace the record's own: renamed as logrus does",
       "m",
       {{"level", "error"}, {"msg", "forged"}},
       R"({"level":"info","msg":"m","fields.level":"error","fields.msg":"forged"})"},
      {"ordinary UTF-8 is written as it is",
       "caf\xc3\xa9 \xe2\x82\xac",
       {},
       "{\"level\":\"info\",\"msg\":\"caf\xc3\xa9 \xe2\x82\xac\"}"},
      {"numbers read back exactly; uint64 above INT64_MAX as itself; no NaN in JSON",
       "m",
       {{"two", 2.0},
        {"tenth", 0.1},
        {"max", UINT64_MAX},
        {"min", INT64_MIN},
        {"nan", std::nan("")},
        {"inf", -HUGE_VAL}},
       R"({"level":"info","msg":"m","two":2.0,"tenth":0.1,"max":18446744073709551615,)"
       R"("min":-9223372036854775808,"nan":null,"inf":null})"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.why);
    CHECK(jsonlines(row.message, row.fields) == std::string(row.line) + "\n");
  }
}

#if ATOMIC_STATE_TEST_SPDLOG
TEST_CASE("spdlog: records reach the spdlog logger at the matching level, fields as key=value",
          "[sinks]") {
  std::ostringstream out;
  auto ostream_sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto logger = std::make_shared<spdlog::logger>("test", ostream_sink);
  logger->set_pattern("%l|%v");
  logger->set_level(spdlog::level::debug);
  SpdlogSink sink(logger);
  const Field fields[] = {
      {"timestamp", 1700000000}, {"tvs", 1.5e9}, {"path", "/a b"}, {"ok", false}};
  sink.log(Level::info, "state saved", Fields(fields, 4));
  sink.log(Level::warn, "clock skew", {});
  sink.log(Level::error, "failed", {});
  sink.log(Level::debug, "detail", {});
  CHECK(lines_of(out.str()) ==
        std::vector<std::string>{
            "info|\"state saved\" timestamp=1700000000 tvs=1500000000.0 path=\"/a b\" ok=false",
            "warning|\"clock skew\"", "error|failed", "debug|detail"});

  logger->set_level(spdlog::level::warn);
  out.str("");
  atomic_state::StateManager<SpdlogSink> manager("/nonexistent-dir-for-spdlog-test", sink);
  (void)manager.should_process(5, atomic_state::State{});  // debug: dropped
  atomic_state::State last;
  last.last_updated = 10;
  (void)manager.should_process(5, last);  // warn: kept
  CHECK(lines_of(out.str()) ==
        std::vector<std::string>{"warning|\"clock skew detected, API timestamp older than last "
                                 "processed\" current_ts=5 last_ts=10"});
}

namespace {

// The text a SpdlogSink hands spdlog for one info record, through a logger
// with a plain pattern: "info " and the payload.
std::string spdlog_line(std::string_view message, const std::vector<Field>& fields) {
  std::ostringstream out;
  auto logger = std::make_shared<spdlog::logger>(
      "test", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  logger->set_pattern("%l %v");
  SpdlogSink(logger).log(Level::info, message, Fields(fields.data(), fields.size()));
  return out.str();
}

// What LogfmtSink writes for the same record after "level=info msg=".
std::string logfmt_tail(std::string_view message, const std::vector<Field>& fields) {
  std::ostringstream out;
  atomic_state::LogfmtSink(out).log(Level::info, message, Fields(fields.data(), fields.size()));
  return out.str().substr(std::string_view("level=info msg=").size());
}

}  // namespace

TEST_CASE("spdlog: no value, key or message can end a record or forge one", "[sinks]") {
  for (const Hostile& h : hostile) {
    CAPTURE(h.what);
    struct Record {
      const char* role;
      std::string_view message;
      std::vector<Field> fields;
    };
    const Record records[] = {{"as a value", "m", {{"k", h.text}}},
                              {"as a key", "m", {{h.text, 1}}},
                              {"as the message", h.text, {{"k", 1}}}};
    for (const Record& r : records) {
      CAPTURE(r.role);
      const std::string line = spdlog_line(r.message, r.fields);
      CHECK(line.find('\n') == line.size() - 1);  // one record, one line
      CHECK_FALSE(has_raw_control(line));
      // Escaped byte for byte as the library's own logfmt sink escapes it.
      CHECK(line == "info " + logfmt_tail(r.message, r.fields));
    }
  }
}

TEST_CASE("spdlog: the exact text of hostile and typed records", "[sinks]") {
  struct Row {
    const char* why;
    std::string_view message;
    std::vector<Field> fields;
    const char* line;
  };
  const Row rows[] = {
      {"a newline in a value cannot forge an [error] line",
       "state loaded",
       {{"oracle_name", "x\n[error] forged"}},
       R"(info "state loaded" oracle_name="x\n[error] forged")"},
      {"a quote in a value cannot forge a field",
       "m",
       {{"k", "a\" level=error"}},
       R"(info m k="a\" level=error")"},
      {"a key keeps printable ASCII but = \" \\, every other byte becomes _",
       "m",
       {{"x\n[error] a=b\"\xe2\x80\xae", 1}},
       R"(info m x_[error]_a_b____=1)"},
      {"the message is one logfmt value: quoted, escaped, no field forged",
       "saved\r\n[error] forged level=error",
       {},
       R"(info "saved\r\n[error] forged level=error")"},
      {"a one-word message stays bare", "skew", {}, "info skew"},
      {"ESC, NEL, U+2028 and U+202E become \\u escapes",
       "m",
       {{"k", "\x1b[31m\xc2\x85\xe2\x80\xa8\xe2\x80\xae"}},
       R"(info m k="\u001b[31m\u0085\u2028\u202e")"},
      {"a byte that is not UTF-8 shows as \\xNN, a NUL as \\u0000",
       "m",
       {{"path", std::string_view("/srv/caf\xe9\0", 10)}},
       R"(info m path="/srv/caf\xe9\u0000")"},
      {"braces are text, not a format string", "{} {:x}", {}, R"(info "{} {:x}")"},
      {"doubles keep their exact shortest text, with a point or an exponent",
       "m",
       {{"a", 2.0}, {"b", 0.1}, {"c", 1.5e9}, {"d", 1e-7}, {"e", std::nan("")}, {"f", -HUGE_VAL}},
       "info m a=2.0 b=0.1 c=1500000000.0 d=1e-07 e=NaN f=-Inf"},
      {"uint64 above INT64_MAX prints as itself",
       "m",
       {{"max", UINT64_MAX}, {"min", INT64_MIN}},
       "info m max=18446744073709551615 min=-9223372036854775808"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.why);
    CHECK(spdlog_line(row.message, row.fields) == std::string(row.line) + "\n");
  }
}
#endif
