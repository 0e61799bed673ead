// JSON: what a state file looks like, and that everything written reads
// back exactly, including the numbers Boost.JSON 1.81 alone gets wrong.
#include <algorithm>
#include <boost/json/parse.hpp>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstring>
#include <ctime>
#include <limits>
#include <random>
#include <string>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/go_service_state.hpp"
#include "support/names.hpp"

namespace json = boost::json;

namespace {

std::uint64_t bits_of(double d) {
  std::uint64_t b;
  std::memcpy(&b, &d, sizeof b);
  return b;
}

double from_bits(std::uint64_t b) {
  double d;
  std::memcpy(&d, &b, sizeof d);
  return d;
}

std::string format(const json::value& v) {
  std::string out;
  const atomic_state::Status s = atomic_state::format_json(v, out);
  REQUIRE(s.ok());
  return out;
}

// The text of `d` as format_json writes it, e.g. "0.1".
std::string text_of(double d) {
  std::string out = format(json::value(d));
  out.pop_back();  // the trailing newline
  return out;
}

// A parsed number as a State reads it: a double, or an integer written
// without a fraction because the double was integral.
double number_of(const json::value& v) {
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return v.as_double();
}

// format_json then parse_json: the double that comes back.
double round_trip(double d) {
  auto parsed = atomic_state::parse_json(text_of(d));
  REQUIRE(parsed.has_value());
  return number_of(*parsed);
}

json::result<State> state_from(std::string_view text) {
  auto parsed = atomic_state::parse_json(text);
  REQUIRE(parsed.has_value());
  return json::try_value_to<State>(*parsed);
}

}  // namespace

TEST_CASE("a saved State is indented two spaces, keys in order, one trailing newline", "[json]") {
  // The Go service's layout, a double written as a double.
  CHECK(format(json::value_from(test::go_service_state())) == test::kSavedStateText);
}

TEST_CASE("the Go service's file, its double written as an integer, reads the same", "[json]") {
  auto from_go = state_from(test::kGoServiceStateText);
  auto ours = state_from(test::kSavedStateText);
  REQUIRE(from_go.has_value());
  REQUIRE(ours.has_value());
  CHECK(*from_go == test::go_service_state());
  CHECK(*ours == test::go_service_state());
}

TEST_CASE("the zero State is written with every key", "[json]") {
  CHECK(format(json::value_from(State{})) ==
        "{\n  \"oracle_name\": \"\",\n  \"last_updated\": 0,\n  \"last_updated_iso\": \"\",\n"
        "  \"last_protocol_count\": 0,\n  \"last_tvs\": 0.0,\n  \"snapshot_count\": 0,\n"
        "  \"oldest_snapshot\": 0,\n  \"newest_snapshot\": 0\n}\n");
}

TEST_CASE("nested arrays and objects are indented, empty ones kept short", "[json]") {
  const json::value v = {{"a", json::array{1, json::array{}, json::object{}}},
                         {"b", json::object{{"c", nullptr}, {"d", true}}}};
  CHECK(format(v) ==
        "{\n  \"a\": [\n    1,\n    [],\n    {}\n  ],\n"
        "  \"b\": {\n    \"c\": null,\n    \"d\": true\n  }\n}\n");
}

TEST_CASE("numbers are written as people write them, exactly, and as doubles", "[json]") {
  struct Row {
    double value;
    const char* text;
  };
  // A whole double keeps its ".0": without it every JSON reader, Boost's
  // included, reads an integer, and a conversion asking for a double fails.
  const Row rows[] = {
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {1.0, "1.0"},
      {2.0, "2.0"},
      {-3.0, "-3.0"},
      {0.1, "0.1"},
      {123.45, "123.45"},
      {1500000000.0, "1500000000.0"},
      {1e15, "1000000000000000.0"},
      {1e20, "100000000000000000000.0"},
      {-2.5, "-2.5"},
      {1e-6, "0.000001"},
      {1e-7, "1e-07"},
      {1e21, "1e+21"},
      {DBL_MAX, "1.7976931348623157e+308"},
      {5e-324, "5e-324"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.text);
    CHECK(text_of(row.value) == row.text);
    CHECK(bits_of(round_trip(row.value)) == bits_of(row.value));
    auto parsed = atomic_state::parse_json(format(json::value(row.value)));
    REQUIRE(parsed.has_value());
    CHECK(parsed->is_double());  // the kind survives, not only the value
  }
}

TEST_CASE("integers keep their full 64-bit range", "[json]") {
  for (const std::int64_t i :
       {INT64_MIN, INT64_MIN + 1, std::int64_t{-1}, std::int64_t{0}, std::int64_t{1}, INT64_MAX}) {
    auto parsed = atomic_state::parse_json(format(json::value(i)));
    REQUIRE(parsed.has_value());
    CHECK(parsed->as_int64() == i);
  }
  auto big = atomic_state::parse_json(format(json::value(UINT64_MAX)));
  REQUIRE(big.has_value());
  CHECK(big->as_uint64() == UINT64_MAX);
}

TEST_CASE("a million random doubles come back bit for bit, where Boost.JSON alone does not",
          "[json]") {
  std::mt19937_64 rng(20261125);
  constexpr int kValues = 1000000;
  int exact = 0, finite = 0, subnormal = 0, boost_alone_wrong = 0;
  for (int i = 0; i < kValues; ++i) {
    // Random bit patterns cover every exponent: subnormals, tiny, huge.
    double d = from_bits(rng());
    if (!std::isfinite(d)) continue;
    ++finite;
    if (std::fpclassify(d) == FP_SUBNORMAL) ++subnormal;
    const std::string text = text_of(d);
    auto ours = atomic_state::parse_json(text);
    if (ours && ours->is_number() && bits_of(number_of(*ours)) == bits_of(d)) ++exact;
    if (i % 10 == 0) {  // sample plain Boost.JSON on the same text, to show the trap
      const json::value plain = json::parse(text);
      if (bits_of(plain.to_number<double>()) != bits_of(d)) ++boost_alone_wrong;
    }
  }
  INFO(finite << " finite values, " << subnormal << " subnormal");
  CHECK(finite > 990000);
  CHECK(subnormal > 100);
  CHECK(exact == finite);
  // If this ever drops to 0, Boost.JSON fixed its parser, and the test above
  // no longer proves that ours is the one doing the work.
  CHECK(boost_alone_wrong > 1000);
}

TEST_CASE("a million random everyday TVS figures round-trip through State exactly", "[json]") {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> money(0, 1e12);
  int exact = 0;
  constexpr int kValues = 1000000;
  State s = test::go_service_state();
  for (int i = 0; i < kValues; ++i) {
    s.last_tvs = i % 2 ? money(rng) : std::floor(money(rng) * 100) / 100;  // cents too
    std::string out;
    if (!atomic_state::format_json(json::value_from(s), out)) continue;
    auto parsed = atomic_state::parse_json(out);
    if (!parsed) continue;
    auto back = json::try_value_to<State>(*parsed);
    if (back && bits_of(back->last_tvs) == bits_of(s.last_tvs)) ++exact;
  }
  CHECK(exact == kValues);
}

TEST_CASE("extreme doubles round-trip, integral or not", "[json]") {
  const double values[] = {DBL_MIN,
                           -DBL_MIN,
                           DBL_MAX,
                           -DBL_MAX,
                           DBL_TRUE_MIN,
                           -DBL_TRUE_MIN,
                           DBL_EPSILON,
                           9007199254740992.0,
                           9007199254740993.0,
                           18446744073709551616.0,
                           1e20,
                           123456789012345678.0,
                           std::nextafter(1e21, 0),
                           0x1p60,
                           -0x1p63};
  for (double d : values) {
    CAPTURE(d);
    State s;
    s.last_tvs = d;
    auto back = state_from(format(json::value_from(s)));
    REQUIRE(back.has_value());
    CHECK(bits_of(back->last_tvs) == bits_of(d));
  }
}

TEST_CASE("non-finite numbers are refused when writing", "[json]") {
  for (double d : {std::nan(""), HUGE_VAL, -HUGE_VAL}) {
    std::string out = "untouched";
    const atomic_state::Status s = atomic_state::format_json(json::value{{"last_tvs", d}}, out);
    CHECK_FALSE(s.ok());
    CHECK(s.step() == Step::serialize);
    CHECK(s.code() == std::errc::invalid_argument);
    CHECK(s.message().find("last_tvs: not a finite number") != std::string::npos);
    CHECK(out.empty());
  }
}

TEST_CASE("numbers a double cannot hold are refused when reading", "[json]") {
  for (const char* text : {"1e400", "-1e400", "[1.8e308]", "{\"last_tvs\": 2e308}"}) {
    CAPTURE(text);
    auto parsed = atomic_state::parse_json(text);
    CHECK_FALSE(parsed.has_value());
    CHECK(parsed.status().step() == Step::parse);
    CHECK(parsed.status().message().find("exponent overflow") != std::string::npos);
  }
  // Too small to tell from zero is zero, with its sign, as strtod says.
  auto tiny = atomic_state::parse_json("[1e-400, -1e-400]");
  REQUIRE(tiny.has_value());
  CHECK(bits_of(tiny->as_array()[0].as_double()) == bits_of(0.0));
  CHECK(bits_of(tiny->as_array()[1].as_double()) == bits_of(-0.0));
}

TEST_CASE("parse_json accepts standard JSON only", "[json]") {
  struct Row {
    const char* why;
    std::string text;
    const char* reason;  // nullptr: accepted
  };
  const std::string depth32 = std::string(32, '[') + std::string(32, ']');
  const std::string depth33 = std::string(33, '[') + std::string(33, ']');
  const Row rows[] = {
      {"an object", R"({"a": [1, 2.5, "x", true, null]})", nullptr},
      {"32 levels deep", depth32, nullptr},
      {"33 levels deep", depth33, "too deep"},
      {"a comment", "{\"a\": 1 /* note */}", "syntax error"},
      {"a comment after the document", "{} // note", "extra data"},
      {"a trailing comma", R"({"a": 1,})", "syntax error"},
      {"NaN", R"({"a": NaN})", "syntax error"},
      {"Infinity", R"({"a": Infinity})", "syntax error"},
      {"invalid UTF-8", "{\"a\": \"\xff\"}", "syntax error"},
      {"a byte-order mark", "\xEF\xBB\xBF{}", "syntax error"},
      {"trailing garbage", "{} x", "extra data"},
      {"two documents", "{} {}", "extra data"},
      {"nothing", "", "incomplete JSON"},
      {"a truncated object", R"({"a": 1)", "incomplete JSON"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.why);
    auto parsed = atomic_state::parse_json(row.text);
    CHECK(parsed.has_value() == (row.reason == nullptr));
    if (row.reason != nullptr) {
      CHECK(parsed.status().message().find(row.reason) != std::string::npos);
      CHECK(parsed.status().message().find("at byte") != std::string::npos);
    }
  }
}

TEST_CASE("format_json refuses what parse_json could not read back, saying where", "[json]") {
  json::value deep = json::array{};
  for (int i = 0; i < ATOMIC_STATE_JSON_MAX_DEPTH; ++i) deep = json::array{deep};
  struct Row {
    const char* why;
    json::value value;
    const char* expected;
  };
  const Row rows[] = {
      {"invalid UTF-8 in a string", {{"oracle_name", "bad\xff"}}, "oracle_name: not valid UTF-8"},
      {"a UTF-16 surrogate in UTF-8", {{"a", "\xED\xA0\x80"}}, "a: not valid UTF-8"},
      {"an overlong encoding", {{"a", "\xC0\xAF"}}, "a: not valid UTF-8"},
      {"invalid UTF-8 in a key", {{"k\xff", 1}}, "k\xff: not valid UTF-8"},
      {"NaN inside an array",
       {{"items", json::array{1, json::object{{"price", NAN}}}}},
       "items[1].price: not a finite number (NaN)"},
      {"too deep", deep, "nested deeper than ATOMIC_STATE_JSON_MAX_DEPTH"},
  };
  // One level less is as deep as parse_json reads, so it is written.
  std::string out32;
  REQUIRE(atomic_state::format_json(deep.as_array()[0], out32).ok());
  CHECK(atomic_state::parse_json(out32).has_value());
  for (const Row& row : rows) {
    CAPTURE(row.why);
    std::string out;
    const atomic_state::Status s = atomic_state::format_json(row.value, out);
    CHECK(s.step() == Step::serialize);
    CHECK(s.message().find(row.expected) != std::string::npos);
    CHECK(out.empty());
  }
}

TEST_CASE("strings with quotes, control characters and Unicode round-trip", "[json]") {
  const std::string texts[] = {
      "plain",
      "with \"quotes\" and \\backslash\\",
      "line\nbreak\ttab\r\b\f",
      std::string("nul\0inside", 10),
      "\x01\x1f\x7f",
      "Ünïcödé ✓ 𝄞",
      "",
  };
  for (const std::string& t : texts) {
    CAPTURE(t);
    State s;
    s.oracle_name = t;
    const std::string out = format(json::value_from(s));
    for (const char c : out) CHECK((static_cast<unsigned char>(c) >= 0x20 || c == '\n'));
    auto back = state_from(out);
    REQUIRE(back.has_value());
    CHECK(back->oracle_name == t);
  }
}

TEST_CASE("reading a State: missing keys are zero, unknown keys ignored, null is missing",
          "[json]") {
  auto empty = state_from("{}");
  REQUIRE(empty.has_value());
  CHECK(*empty == State{});

  auto partial = state_from(R"({"oracle_name": "x", "last_updated": 5, "future_field": [1]})");
  REQUIRE(partial.has_value());
  CHECK(partial->oracle_name == "x");
  CHECK(partial->last_updated == 5);
  CHECK(partial->last_tvs == 0);

  auto nulls = state_from(R"({"oracle_name": null, "last_tvs": null, "last_updated": 7})");
  REQUIRE(nulls.has_value());
  CHECK(nulls->oracle_name.empty());
  CHECK(nulls->last_updated == 7);

  auto twice = state_from(R"({"last_updated": 1, "last_updated": 2})");
  REQUIRE(twice.has_value());
  CHECK(twice->last_updated == 2);  // the last one wins, as in Boost.JSON

  auto integral_tvs = state_from(R"({"last_tvs": 42})");
  REQUIRE(integral_tvs.has_value());
  CHECK(integral_tvs->last_tvs == 42.0);
}

TEST_CASE("reading a State: a key of the wrong type makes it unreadable", "[json]") {
  const char* texts[] = {
      R"([])",
      R"("state")",
      R"(42)",
      R"({"oracle_name": 5})",
      R"({"oracle_name": ["x"]})",
      R"({"last_updated": "1700000000"})",
      R"({"last_updated": 1.5})",
      R"({"last_updated": 1e3})",
      R"({"last_updated": 9223372036854775808})",
      R"({"last_updated_iso": false})",
      R"({"last_protocol_count": {}})",
      R"({"last_tvs": "1.5"})",
      R"({"last_tvs": true})",
      R"({"snapshot_count": 2.0})",
      R"({"oldest_snapshot": []})",
      R"({"newest_snapshot": "x"})",
  };
  for (const char* text : texts) {
    CAPTURE(text);
    CHECK_FALSE(state_from(text).has_value());
  }
}

TEST_CASE("value_to and try_value_to both convert a State", "[json]") {
  const json::value v = json::value_from(test::go_service_state());
  CHECK(json::value_to<State>(v) == test::go_service_state());
  CHECK(json::try_value_to<State>(v).value() == test::go_service_state());
  // A non-finite double given directly (not parsed) is refused too.
  json::value bad = v;
  bad.as_object()["last_tvs"] = HUGE_VAL;
  CHECK_FALSE(json::try_value_to<State>(bad).has_value());
}

TEST_CASE("to_rfc3339 writes UTC instants the way the seed's Go code does", "[json]") {
  struct Row {
    std::int64_t t;
    const char* text;
  };
  const Row rows[] = {
      {0, "1970-01-01T00:00:00Z"},
      {1700000000, "2023-11-14T22:13:20Z"},
      {1700003600, "2023-11-14T23:13:20Z"},
      {-1, "1969-12-31T23:59:59Z"},
      {951782400, "2000-02-29T00:00:00Z"},
      {4107542400, "2100-03-01T00:00:00Z"},
      {253402300799, "9999-12-31T23:59:59Z"},
      {253402300800, "10000-01-01T00:00:00Z"},
      {-62135596800, "0001-01-01T00:00:00Z"},
      {-62167219201, "-0001-12-31T23:59:59Z"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.t);
    CHECK(atomic_state::to_rfc3339(row.t) == row.text);
  }
  // Every int64 is formatted without overflow.
  CHECK(atomic_state::to_rfc3339(INT64_MAX).size() > 20);
  CHECK(atomic_state::to_rfc3339(INT64_MIN).size() > 20);
}

TEST_CASE("to_rfc3339 agrees with gmtime_r on 100000 random instants", "[json]") {
  std::mt19937_64 rng(3);
  // Years 1 to 9999, or as many as time_t holds (1901 to 2038 where it has
  // 32 bits: tests/test_32bit.cpp checks the years past it by other means).
  using TimeLimits = std::numeric_limits<std::time_t>;
  std::uniform_int_distribution<std::int64_t> any(
      std::max<std::int64_t>(-62135596800, TimeLimits::min()),
      std::min<std::int64_t>(253402300799, TimeLimits::max()));
  int agree = 0;
  for (int i = 0; i < 100000; ++i) {
    const std::int64_t t = any(rng);
    const std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    ::gmtime_r(&tt, &tm);
    char expected[40];
    std::snprintf(expected, sizeof expected, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (atomic_state::to_rfc3339(t) == expected) ++agree;
  }
  CHECK(agree == 100000);
}
