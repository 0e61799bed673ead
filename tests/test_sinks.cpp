// The example sinks of examples/sinks/: JSON Lines always, spdlog when it is
// installed (ATOMIC_STATE_TEST_SPDLOG). Each line a sink writes must carry
// the level, the message and every field, readable by a machine.
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "../examples/sinks/jsonlines_sink.hpp"
#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/files.hpp"
#if ATOMIC_STATE_TEST_SPDLOG
#include <spdlog/sinks/ostream_sink.h>

#include "../examples/sinks/spdlog_sink.hpp"
#endif

using atomic_state::Field;
using atomic_state::Fields;
using atomic_state::Level;
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
  REQUIRE(manager.save_state(manager.update_state("x", 1700000000, 42, 1.5e9)).ok());
  std::vector<std::string> messages;
  for (const std::string& line : lines_of(out.str()))
    messages.emplace_back(parsed(line).at("msg").as_string());
  CHECK(messages == std::vector<std::string>{"no state file found, treating as first run",
                                             "first run, processing required", "state saved"});
  CHECK(parsed(lines_of(out.str()).back()).at("protocol_count").as_int64() == 42);
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
            "info|state saved timestamp=1700000000 tvs=1500000000 path=\"/a b\" ok=false",
            "warning|clock skew", "error|failed", "debug|detail"});

  logger->set_level(spdlog::level::warn);
  out.str("");
  atomic_state::StateManager<SpdlogSink> manager("/nonexistent-dir-for-spdlog-test", sink);
  (void)manager.should_process(5, atomic_state::State{});  // debug: dropped
  atomic_state::State last;
  last.last_updated = 10;
  (void)manager.should_process(5, last);  // warn: kept
  CHECK(lines_of(out.str()) ==
        std::vector<std::string>{"warning|clock skew detected, API timestamp older than last "
                                 "processed current_ts=5 last_ts=10"});
}
#endif
