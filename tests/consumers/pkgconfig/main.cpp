// Built by run.sh with the flags of the installed atomic_state.pc:
//   c++ main.cpp $(pkg-config --cflags --libs atomic_state)
#include "../common/roundtrip.hpp"

int main(int argc, char** argv) { return consumer::run(argc, argv, "pkg-config"); }
