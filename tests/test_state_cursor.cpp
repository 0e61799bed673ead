// Cursors that are not clocks (StateTraits<T>::cursor): a uint64 compared
// right above 2^63, any totally ordered type, and optional fields that are
// null when empty.
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"
#include "support/slot_state.hpp"

using Manager = as::StateManager<test::CaptureSink&>;

using namespace test::slot;

TEST_CASE("a uint64 cursor: every value valid, above 2^63 compared right", "[cursor]") {
  constexpr std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
  constexpr std::uint64_t half = std::uint64_t{1} << 63;
  struct Row {
    const char* behaviour;
    std::optional<std::uint64_t> last;
    std::uint64_t current;
    bool process;
    Level level;
    const char* message;
  };
  const Row rows[] = {
      {"never processed", std::nullopt, 0, true, Level::debug, "first run, processing required"},
      {"slot 0 is a cursor like any other", 0, 0, false, Level::info,
       "no new data, skipping extraction"},
      {"the next slot", 0, 1, true, Level::debug, "new data available"},
      {"above 2^63, newer", half, half + 1, true, Level::debug, "new data available"},
      {"above 2^63, the same", top, top, false, Level::info, "no new data, skipping extraction"},
      {"above 2^63, older", top, half, false, Level::warn,
       "cursor went backwards, data older than last processed"},
      {"an older slot", 10, 9, false, Level::warn,
       "cursor went backwards, data older than last processed"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    test::CaptureSink log;
    SlotManager manager("/nonexistent", log);
    CHECK(manager.should_process(row.current, slot_state(row.last)) == row.process);
    REQUIRE(log.size() == 1);
    CHECK(log.last().level == row.level);
    CHECK(log.last().message == row.message);
    if (!row.last) {
      CHECK(log.last().fields.empty());
      continue;
    }
    CHECK(log.last().keys() == std::vector<std::string>{"current", "last"});
    CHECK(log.last().unsigned_integer("current") == row.current);
    CHECK(log.last().unsigned_integer("last") == *row.last);
  }
  static_assert(std::is_same_v<SlotManager::cursor_type, std::uint64_t>);
  static_assert(std::is_same_v<Manager::cursor_type, std::int64_t>);

  test::TempDir dir;
  test::CaptureSink log;
  SlotManager manager(dir.path(), log);
  REQUIRE(manager.save_state(slot_state(top - 1)).ok());
  const auto loaded = manager.load_state();
  REQUIRE(loaded.has_value());
  CHECK(loaded->last_slot == top - 1);
  CHECK(manager.should_process(top, *loaded));
  CHECK(log.with("state saved")[0].unsigned_integer("slot") == top - 1);
  CHECK(log.with("state loaded")[0].unsigned_integer("last_slot") == top - 1);
}

namespace {
// A cursor no log field can hold: compared, not logged.
struct Height {
  std::int64_t epoch = 0, block = 0;
  friend bool operator<(const Height& a, const Height& b) {
    return std::tie(a.epoch, a.block) < std::tie(b.epoch, b.block);
  }
};
struct ChainState {
  std::int64_t epoch = -1, block = 0;  // epoch -1: never processed
  static constexpr auto state_fields() noexcept {
    return std::make_tuple(as::state_field("epoch", &ChainState::epoch),
                           as::state_field("block", &ChainState::block));
  }
};
}  // namespace

template <>
struct atomic_state::StateTraits<ChainState> {
  static std::optional<Height> cursor(const ChainState& s) noexcept {
    if (s.epoch < 0) return std::nullopt;
    return Height{s.epoch, s.block};
  }
};

TEST_CASE("any totally ordered type is a cursor", "[cursor]") {
  test::CaptureSink log;
  as::StateManager<test::CaptureSink&, ChainState> manager("/nonexistent", log);
  ChainState state;
  CHECK(manager.should_process(Height{0, 0}, state));
  state.epoch = 2;
  state.block = 5;
  CHECK(manager.should_process(Height{2, 6}, state));
  CHECK(manager.should_process(Height{3, 0}, state));
  CHECK_FALSE(manager.should_process(Height{2, 5}, state));
  CHECK_FALSE(manager.should_process(Height{1, 9}, state));
  const auto records = log.records();
  REQUIRE(records.size() == 5);
  CHECK(records[4].message == "cursor went backwards, data older than last processed");
  for (const auto& r : records) CHECK(r.fields.empty());
}

TEST_CASE("optional fields are null when empty, and read back", "[cursor]") {
  struct Opt {
    std::optional<std::string> name;
    std::optional<double> price;
    std::optional<bool> live;
    std::optional<std::int64_t> at;
    static constexpr auto state_fields() noexcept {
      return std::make_tuple(as::state_field("name", &Opt::name, "name"),
                             as::state_field("price", &Opt::price, "price"),
                             as::state_field("live", &Opt::live),
                             as::state_field("at", &Opt::at, "at"));
    }
  };
  static_assert(as::has_state_fields_v<Opt>);
  // Opt has no cursor, so no manager: its table is printed and read here
  // directly (SlotState above goes through a manager).
  as::detail::FieldRefusal refusal;
  as::detail::TextBuffer<256> out;
  Opt empty;
  REQUIRE(as::detail::print_fields(empty, out, refusal));
  CHECK(out.view() ==
        "{\n  \"name\": null,\n  \"price\": null,\n  \"live\": null,\n  \"at\": null\n}\n");
  Opt full{std::string("x"), 2.5, true, -3};
  as::detail::TextBuffer<256> out2;
  REQUIRE(as::detail::print_fields(full, out2, refusal));
  CHECK(out2.view() ==
        "{\n  \"name\": \"x\",\n  \"price\": 2.5,\n  \"live\": true,\n  \"at\": -3\n}\n");
  Opt back;
  as::detail::StateProblem problem;
  REQUIRE(as::detail::read_fields(as::parse_json(out2.view()).value(), back, problem));
  CHECK(back.name == full.name);
  CHECK(back.price == full.price);
  CHECK(back.live == full.live);
  CHECK(back.at == full.at);
  Opt nulls{std::string("keep"), 1.0, false, 1};
  REQUIRE(as::detail::read_fields(as::parse_json(out.view()).value(), nulls, problem));
  CHECK(nulls.name == std::string("keep"));  // null reads as missing: the value is left
  Opt wrong;
  CHECK_FALSE(as::detail::read_fields(as::parse_json(R"({"name": 5})").value(), wrong, problem));
  CHECK(problem.key == "name");
  CHECK(std::string(problem.reason) == "expected a string");
  Opt nan{std::nullopt, std::numeric_limits<double>::quiet_NaN(), std::nullopt, std::nullopt};
  as::detail::TextBuffer<256> refused;
  CHECK_FALSE(as::detail::print_fields(nan, refused, refusal));
  CHECK(std::string(refusal.name) == "price");
}
