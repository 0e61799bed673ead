// Built with -I to the current atomic_state.hpp (run.sh).
#include <typeinfo>

#include "../common/roundtrip.hpp"
#include "report.hpp"

TuReport old_tu(int argc, char** argv) {
  return {ATOMIC_STATE_VERSION_STRING, typeid(atomic_state::AtomicWriter<>).name(),
          consumer::run(argc, argv, "old")};
}
