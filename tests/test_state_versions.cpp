// Schema versions (StateTraits<T>::version and upgrade): the version
// written as the first key; an older file upgraded one version at a time
// and left as it is; a newer file, a failed upgrade or a version key of the
// wrong kind an error, the file untouched. The state type is
// support/slot_state.hpp's.
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/go_service_state.hpp"
#include "support/names.hpp"
#include "support/slot_state.hpp"

using Manager = as::StateManager<test::CaptureSink&>;

using namespace test::slot;

namespace own {
// State types that never declared a schema version but have a member of
// their own under the library's key, "schema_version": through a field
// table (a string, an integer) and through Boost.JSON conversions.
struct TextVersion {
  std::string schema_version = "v2";
  std::int64_t last_updated = 0;
  static constexpr auto state_fields() noexcept {
    return std::make_tuple(as::state_field("schema_version", &TextVersion::schema_version),
                           as::state_field("last_updated", &TextVersion::last_updated));
  }
};
struct IntegerVersion {
  std::int64_t schema_version = 7;
  std::int64_t last_updated = 0;
  static constexpr auto state_fields() noexcept {
    return std::make_tuple(as::state_field("schema_version", &IntegerVersion::schema_version),
                           as::state_field("last_updated", &IntegerVersion::last_updated));
  }
};
struct ConvertedVersion {
  std::string schema_version = "v2";
  std::int64_t last_updated = 0;
};
void tag_invoke(boost::json::value_from_tag, boost::json::value& jv, const ConvertedVersion& s) {
  jv = {{"schema_version", s.schema_version}, {"last_updated", s.last_updated}};
}
ConvertedVersion tag_invoke(boost::json::value_to_tag<ConvertedVersion>,
                            const boost::json::value& jv) {
  ConvertedVersion s;
  s.schema_version = boost::json::value_to<std::string>(jv.at("schema_version"));
  s.last_updated = boost::json::value_to<std::int64_t>(jv.at("last_updated"));
  return s;
}

// Saves one of them: refused before anything is written, naming the key.
template <class T>
void check_refused(const char* behaviour) {
  CAPTURE(behaviour);
  test::TempDir dir;
  test::CaptureSink log;
  as::StateManager<test::CaptureSink&, T> manager(dir.path(), log);
  T state;
  state.last_updated = 1700000000;
  const as::Status saved = manager.save_state(state);
  CHECK(saved.step() == Step::serialize);
  CHECK(saved.code() == std::errc::invalid_argument);
  CHECK(saved.detail() ==
        "schema_version: the key is the library's own (the state file's schema version, "
        "StateTraits::version); give the member another name");
  CHECK(test::names_in(dir.path()).empty());
  CHECK(log.with("state saved").empty());
}
}  // namespace own

TEST_CASE("a versioned state writes its version as the first key", "[versions]") {
  test::TempDir dir;
  test::CaptureSink log;
  SlotManager manager(dir.path(), log);
  REQUIRE(manager.save_state(slot_state(18446744073709551615ull)).ok());
  CHECK(read_file(dir / "state.json") ==
        "{\n  \"schema_version\": 2,\n  \"network\": \"mainnet\",\n"
        "  \"last_slot\": 18446744073709551615\n}\n");
  REQUIRE(manager.save_state(slot_state(std::nullopt, "")).ok());
  CHECK(read_file(dir / "state.json") ==
        "{\n  \"schema_version\": 2,\n  \"network\": \"\",\n  \"last_slot\": null\n}\n");
  // A version-0 state writes no key: the Go service's layout is unchanged.
  Manager plain(dir.path(), log);
  REQUIRE(plain.save_state(test::go_service_state()).ok());
  CHECK(read_file(dir / "state.json").rfind("{\n  \"oracle_name\": \"switchboard\",\n", 0) == 0);
  CHECK(read_file(dir / "state.json").find("schema_version") == std::string::npos);
}

TEST_CASE("an older file is upgraded one version at a time, and left as it is", "[versions]") {
  struct Row {
    const char* behaviour;
    const char* text;
    std::vector<int> steps;
    SlotState expected;
  };
  const Row rows[] = {
      {"no version key is version 0", R"({"slot": 42})", {0, 1}, slot_state(42)},
      {"version 0 said", R"({"schema_version": 0, "slot": 0})", {0, 1}, slot_state(0)},
      {"version 1", R"({"schema_version": 1, "last_slot": 7})", {1}, slot_state(7)},
      {"the current version",
       R"({"schema_version": 2, "network": "testnet", "last_slot": 9})",
       {},
       slot_state(9, "testnet")},
      {"a null version is version 0",
       R"({"schema_version": null, "slot": 1})",
       {0, 1},
       slot_state(1)},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir;
    test::write_plain(dir / "state.json", row.text);
    test::CaptureSink log;
    SlotManager manager(dir.path(), log);
    upgrade_mode = Upgrade::works;
    upgrades_called.clear();
    const auto loaded = manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(loaded->origin == LoadOrigin::saved);
    CHECK(loaded->state() == row.expected);
    CHECK(upgrades_called == row.steps);
    CHECK(read_file(dir / "state.json") == row.text);  // a load never writes
    const auto upgraded = log.with("state file upgraded");
    if (row.steps.empty()) {
      CHECK(upgraded.empty());
    } else {
      REQUIRE(upgraded.size() == 1);
      CHECK(upgraded[0].level == Level::info);
      CHECK(upgraded[0].text("path") == (dir / "state.json").string());
      CHECK(upgraded[0].integer("from_version") == row.steps.front());
      CHECK(upgraded[0].integer("to_version") == 2);
    }
    REQUIRE(manager.save_state(*loaded).ok());
    CHECK(read_file(dir / "state.json").rfind("{\n  \"schema_version\": 2,", 0) == 0);
  }
}

TEST_CASE("a newer file, or a failed upgrade, is an error and the file is untouched",
          "[versions]") {
  struct Row {
    const char* behaviour;
    const char* text;
    Upgrade mode;
    std::errc code;
    const char* detail;
  };
  const Row rows[] = {
      {"a newer version", R"({"schema_version": 3, "last_slot": 1})", Upgrade::works,
       std::errc::not_supported,
       "schema_version 3 is newer than this program's 2: a newer "
       "program wrote it"},
      {"a version beyond int64", R"({"schema_version": 18446744073709551615})", Upgrade::works,
       std::errc::not_supported,
       "schema_version 18446744073709551615 is newer than this program's 2: a newer program "
       "wrote it"},
      {"an upgrade that throws", R"({"slot": 1})", Upgrade::throws, std::errc::invalid_argument,
       "upgrade from schema_version 0 threw: no slot to rename"},
      {"an upgrade that throws a non-exception", R"({"slot": 1})", Upgrade::throws_int,
       std::errc::invalid_argument,
       "upgrade from schema_version 0 threw something not an "
       "exception"},
      {"an upgrade that refuses", R"({"schema_version": 1, "last_slot": 1})", Upgrade::refuses,
       std::errc::invalid_argument, "upgrade from schema_version 1 refused"},
      {"an upgrade that returns garbage", R"({"slot": 1})", Upgrade::garbage,
       std::errc::invalid_argument,
       "the upgrade from schema_version 0 gave a state that does not read: last_slot: expected "
       "an integer"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::TempDir dir;
    test::write_plain(dir / "state.json", row.text);
    test::CaptureSink log;
    upgrade_mode = row.mode;
    SlotManager manager(dir.path(), log);
    const auto loaded = manager.load_state();
    upgrade_mode = Upgrade::works;
    REQUIRE_FALSE(loaded.has_value());
    CHECK(loaded.status().step() == Step::upgrade);
    CHECK(loaded.status().code() == row.code);
    CHECK(loaded.status().detail() == row.detail);
    CHECK(loaded.status().message().rfind(
              "load state file: upgrade " + (dir / "state.json").string() + ": ", 0) == 0);
    CHECK(read_file(dir / "state.json") == row.text);
    CHECK(test::names_in(dir.path()) == std::vector<std::string>{"state.json"});
    CHECK(log.size() == 0);
  }
  // A version-0 type never reads a versioned file as its own.
  test::TempDir dir;
  test::write_plain(dir / "state.json", R"({"schema_version": 1, "last_updated": 5})");
  test::CaptureSink log;
  const auto loaded = Manager(dir.path(), log).load_state();
  REQUIRE_FALSE(loaded.has_value());
  CHECK(loaded.status().detail() ==
        "schema_version 1 is newer than this program's 0: a newer program wrote it");
}

TEST_CASE("a version key of the wrong kind makes the file corrupt", "[versions]") {
  for (const char* text : {R"({"schema_version": "2"})", R"({"schema_version": -1})",
                           R"({"schema_version": 1.0})", R"({"schema_version": true})"}) {
    CAPTURE(text);
    test::TempDir dir;
    test::write_plain(dir / "state.json", text);
    test::CaptureSink log;
    SlotManager manager(dir.path(), log);
    const auto loaded = manager.load_state();
    REQUIRE(loaded.has_value());
    CHECK(loaded->origin == LoadOrigin::recovered);
    const auto warned = log.with("state file corrupted, treating as first run");
    REQUIRE(warned.size() == 1);
    CHECK(warned[0].text("error") == "schema_version: expected a whole number, 0 or more");
  }
}

TEST_CASE("a member under the library's version key is refused at save, never written",
          "[versions]") {
  own::check_refused<own::TextVersion>("a field table's string");
  own::check_refused<own::IntegerVersion>("a field table's integer");
  own::check_refused<own::ConvertedVersion>("a Boost.JSON conversion's key");
}
