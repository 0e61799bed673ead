// Built by meson_subproject/meson.build with dependency('atomic_state').
#include "../common/roundtrip.hpp"

int main(int argc, char** argv) { return consumer::run(argc, argv, "meson-subproject"); }
