// Catch2 v2 has no separate main library in every distribution; v3 builds
// link catch2-with-main instead of this file.
//
// Catch2's own main returns the number of failed assertions: 77 of them
// would be exit status 77, which Meson reads as a skip. Any failure is 1.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

int main(int argc, char* argv[]) { return Catch::Session().run(argc, argv) == 0 ? 0 : 1; }
