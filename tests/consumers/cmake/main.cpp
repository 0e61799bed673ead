// Built by cmake/CMakeLists.txt through the target atomic_state::atomic_state.
#include "../common/roundtrip.hpp"

int main(int argc, char** argv) { return consumer::run(argc, argv, "cmake"); }
