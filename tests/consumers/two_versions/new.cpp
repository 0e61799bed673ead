// Built with -I to the copy of atomic_state.hpp with its version bumped (run.sh).
#include <typeinfo>

#include "../common/roundtrip.hpp"
#include "report.hpp"

TuReport new_tu(int argc, char** argv) {
  return {ATOMIC_STATE_VERSION_STRING, typeid(atomic_state::AtomicWriter<>).name(),
          consumer::run(argc, argv, "new")};
}
