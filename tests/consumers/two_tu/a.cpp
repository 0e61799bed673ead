// One of three translation units of one program that all include the
// header: every function it defines must be inline (or a template), or the
// link fails with a multiple definition.
#include "../common/roundtrip.hpp"

int run_a(int argc, char** argv) { return consumer::run(argc, argv, "tu-a"); }
