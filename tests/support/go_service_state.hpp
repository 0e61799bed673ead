// The Go service's state: its testdata/valid_state.json, as the service
// wrote it and as this library saves it, and as a State; and the state the
// Go service's rule (update_state) makes for a run at a given time.
#pragma once

#include <cstdint>

#include "atomic_state.hpp"

namespace test {

// As Go's MarshalIndent wrote it.
inline const char* const kGoServiceStateText = R"({
  "oracle_name": "switchboard",
  "last_updated": 1700000000,
  "last_updated_iso": "2023-11-14T22:00:00Z",
  "last_protocol_count": 50,
  "last_tvs": 1500000000,
  "snapshot_count": 10,
  "oldest_snapshot": 1699000000,
  "newest_snapshot": 1700000000
}
)";

// How this library saves the same state: byte for byte the Go service's
// layout, but a double is always written as a double ("1500000000.0"), so
// that it reads back as one in any JSON reader; Go reads it alike.
inline const char* const kSavedStateText = R"({
  "oracle_name": "switchboard",
  "last_updated": 1700000000,
  "last_updated_iso": "2023-11-14T22:00:00Z",
  "last_protocol_count": 50,
  "last_tvs": 1500000000.0,
  "snapshot_count": 10,
  "oldest_snapshot": 1699000000,
  "newest_snapshot": 1700000000
}
)";

/// The Go service's testdata/valid_state.json as a State.
inline atomic_state::State go_service_state() {
  atomic_state::State s;
  s.oracle_name = "switchboard";
  s.last_updated = 1700000000;
  s.last_updated_iso = "2023-11-14T22:00:00Z";
  s.last_protocol_count = 50;
  s.last_tvs = 1500000000.0;
  s.snapshot_count = 10;
  s.oldest_snapshot = 1699000000;
  s.newest_snapshot = 1700000000;
  return s;
}

/// The state the Go service's rule makes for a run at `t`: the same oracle,
/// 50 protocols, a TVS of 1.5e9, one snapshot taken at `t`.
inline atomic_state::State state_at(std::int64_t t) {
  return atomic_state::update_state("switchboard", t, 50, 1.5e9, {t});
}

}  // namespace test
