// atomic_state.hpp as the first and only #include: it must compile alone
// (everything it uses it includes itself) and without a warning, run.sh
// building this with -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Werror
// at C++17 and C++20, with and without ATOMIC_STATE_NO_JSON. The file is
// read back with fopen from <stdio.h>, which the header includes.
#include "atomic_state.hpp"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  const std::string path = dir + "/hygiene.txt";
  const std::string_view data = "only the header\n";
  atomic_state::AtomicWriter<> writer;
  if (const atomic_state::Status status = writer.write(path, data, 0600); !status) {
    fprintf(stderr, "%s\n", status.message().c_str());
    return 1;
  }
  char text[64] = {};
  std::size_t size = 0;
  if (FILE* file = fopen(path.c_str(), "rb")) {
    size = fread(text, 1, sizeof text, file);
    fclose(file);
  }
  if (std::string_view(text, size) != data) return 1;
  printf("hygiene: writer roundtrip ok\n");
#ifndef ATOMIC_STATE_NO_JSON
  atomic_state::StateManager<> manager(dir + "/state");
  const atomic_state::State state = atomic_state::update_state("hygiene", 1700000000, 1, 0.25);
  if (const atomic_state::Status status = manager.save_state(state); !status) {
    fprintf(stderr, "%s\n", status.message().c_str());
    return 1;
  }
  const atomic_state::Result<atomic_state::State> loaded = manager.load_state();
  if (!loaded || *loaded != state) return 1;
  printf("hygiene: state roundtrip ok\n");
#else
  printf("hygiene: state left out (ATOMIC_STATE_NO_JSON)\n");
#endif
  return 0;
}
