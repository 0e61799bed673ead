// What every source file of a multi-file test program includes and takes
// longest to parse (Catch2 and the library, Boost.JSON with it unless the
// program defines ATOMIC_STATE_NO_JSON): precompiled once per program, each
// with its own flags. Each file still includes what it uses; -Db_pch=false
// builds without. No include guard: the compiler reads it once, first.
#include "atomic_state.hpp"
#include "catch.hpp"
