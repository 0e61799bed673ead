// The second of three translation units; see a.cpp.
#include "../common/roundtrip.hpp"

int run_b(int argc, char** argv) { return consumer::run(argc, argv, "tu-b"); }
