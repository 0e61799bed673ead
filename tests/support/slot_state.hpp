// A state type of a user's own whose layout changed twice (schema version
// 2), with a uint64 cursor: the schema-version tests upgrade it
// (test_state_versions.cpp), the cursor tests compare it
// (test_state_cursor.cpp). upgrade_mode makes its upgrade work, throw,
// refuse or write garbage.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"

namespace test::slot {

// A state whose layout changed twice: version 0 kept the slot as "slot",
// version 1 renamed it "last_slot", version 2 added "network".
struct SlotState {
  std::string network;
  std::optional<std::uint64_t> last_slot;

  static constexpr auto state_fields() noexcept {
    return std::make_tuple(
        atomic_state::state_field("network", &SlotState::network, "network"),
        atomic_state::state_field("last_slot", &SlotState::last_slot, "last_slot", "slot"));
  }
  friend bool operator==(const SlotState& a, const SlotState& b) {
    return a.network == b.network && a.last_slot == b.last_slot;
  }
};

enum class Upgrade { works, throws, throws_int, refuses, garbage };
inline Upgrade upgrade_mode = Upgrade::works;  // what the next upgrade does
inline std::vector<int> upgrades_called;       // the versions upgraded from, in order

}  // namespace test::slot

template <>
struct atomic_state::StateTraits<test::slot::SlotState> {
  static constexpr int version = 2;
  static bool upgrade(boost::json::object& state, int from_version) {
    using namespace test::slot;
    upgrades_called.push_back(from_version);
    switch (upgrade_mode) {
      case Upgrade::works:
        break;
      case Upgrade::throws:
        throw std::runtime_error("no slot to rename");
      case Upgrade::throws_int:
        throw 7;
      case Upgrade::refuses:
        return false;
      case Upgrade::garbage:
        state["last_slot"] = "not a number";
        return true;
    }
    if (from_version == 0) {
      if (boost::json::value* slot = state.if_contains("slot")) {
        boost::json::value moved = std::move(*slot);  // before the object changes
        state.erase("slot");
        state["last_slot"] = std::move(moved);
      }
    }
    if (from_version == 1) state["network"] = "mainnet";
    return true;
  }
  static std::optional<std::uint64_t> cursor(const test::slot::SlotState& s) noexcept {
    return s.last_slot;
  }
};

namespace test::slot {

using SlotManager = atomic_state::StateManager<test::CaptureSink&, SlotState>;

inline SlotState slot_state(std::optional<std::uint64_t> slot, std::string network = "mainnet") {
  SlotState s;
  s.network = std::move(network);
  s.last_slot = slot;
  return s;
}

}  // namespace test::slot
