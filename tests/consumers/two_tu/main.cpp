// The third translation unit: includes the header itself and uses it too.
#include <cstdio>
#include <string>

#include "atomic_state.hpp"

int run_a(int argc, char** argv);
int run_b(int argc, char** argv);

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string path = std::string(argv[1]) + "/main.txt";
  const atomic_state::Status status = atomic_state::write_atomic(path, "main\n");
  if (!status) {
    std::fprintf(stderr, "main: %s\n", status.message().c_str());
    return 1;
  }
  const int a = run_a(argc, argv);
  const int b = run_b(argc, argv);
  return a != 0 ? a : b;
}
