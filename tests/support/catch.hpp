// Hides the include difference between Catch2 v2 (Debian 12) and v3.
#pragma once
#if ATOMIC_STATE_TEST_CATCH2_V3
#include <catch2/catch_test_macros.hpp>
#else
#include <catch2/catch.hpp>
#endif
