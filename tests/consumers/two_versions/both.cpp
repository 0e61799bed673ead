// Two copies of atomic_state.hpp in one translation unit, named by run.sh
// with -DATOMIC_STATE_FIRST="..." -DATOMIC_STATE_SECOND="...". Two
// different versions must stop with the header's #error (the include guard
// would otherwise silently drop the second); two identical copies must
// compile.
#include ATOMIC_STATE_FIRST
#include ATOMIC_STATE_SECOND

int main() { return atomic_state::write_atomic("/dev/null/x", "").ok() ? 1 : 0; }
