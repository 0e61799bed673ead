// Catch2 v2 has no separate main library in every distribution; v3 builds
// link catch2-with-main instead of this file.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
