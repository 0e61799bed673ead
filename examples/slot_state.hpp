// A state type of your own, described by a field table: what a watcher of a
// chain's slots remembers between runs. Its cursor is a slot number (a
// std::uint64_t, not a time), and its file layout has changed once: a
// StateTraits specialisation says both.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "atomic_state.hpp"

namespace slots {

struct SlotState {
  std::string chain;  // "solana"
  // The last slot processed, or none yet. Slot 0 is a slot like any other,
  // so no number can stand for "never": an empty optional does (null in
  // the file).
  std::optional<std::uint64_t> last_slot;

  // The file's keys in order, and the keys of the log records ("state
  // loaded" logs last_slot=N, "state saved" slot=N). Saving, loading and
  // logging all come from it.
  static constexpr auto state_fields() noexcept {
    return std::make_tuple(
        atomic_state::state_field("chain", &SlotState::chain, "chain"),
        atomic_state::state_field("last_slot", &SlotState::last_slot, "last_slot", "slot"));
  }
};

}  // namespace slots

template <>
struct atomic_state::StateTraits<slots::SlotState> {
  // What should_process compares: the last slot, empty before the first.
  static std::optional<std::uint64_t> cursor(const slots::SlotState& s) noexcept {
    return s.last_slot;
  }

  // Files of version 0, written before there was a version (so they have no
  // "schema_version" key), named the slot "slot"; version 1 names it
  // "last_slot". A field table ignores keys it does not know, so without
  // this upgrade an old file would load as a first run and its slots would
  // be processed again. load_state calls upgrade once for each version the
  // file is behind, then reads it; the next save writes "schema_version": 1
  // as the first key. A file of a later version is refused, left untouched.
  static constexpr int version = 1;
  static void upgrade(boost::json::object& state, int from_version) {
    if (from_version == 0) {  // 0 -> 1: "slot" becomes "last_slot"
      if (const boost::json::value* slot = state.if_contains("slot")) {
        boost::json::value value = *slot;  // a copy: erasing moves the members
        state.erase("slot");
        state["last_slot"] = std::move(value);
      }
    }
  }
};
