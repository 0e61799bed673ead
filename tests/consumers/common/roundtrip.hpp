// What every consumer program of run.sh does with the library, whichever way
// it got the header: replace a file with AtomicWriter and read it back; and,
// unless ATOMIC_STATE_NO_JSON, save a State with StateManager and load it
// back equal. Prints one line per part; run.sh looks for them.
//
// Included as "../common/roundtrip.hpp" by the consumers' main.cpp, so it
// finds atomic_state.hpp only where the consumer's build puts it (-I of a
// vendored copy, pkg-config, CMake target, Meson dependency), never here.
#ifndef ATOMIC_STATE_CONSUMER_ROUNDTRIP_HPP
#define ATOMIC_STATE_CONSUMER_ROUNDTRIP_HPP

#include <cstdio>
#include <string>
#include <vector>

#include "atomic_state.hpp"

namespace consumer {
// Internal linkage on purpose: the two-versions program links TUs built
// against two different copies of the header, and these helpers must not
// be merged across them (that would itself be an ODR violation).
namespace {

inline std::string slurp(const std::string& path) {
  std::string text;
  if (std::FILE* file = std::fopen(path.c_str(), "rb")) {
    char buffer[4096];
    std::size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) text.append(buffer, n);
    std::fclose(file);
  }
  return text;
}

inline bool report(const char* tag, const char* what, const atomic_state::Status& status) {
  if (!status) std::fprintf(stderr, "%s: %s failed: %s\n", tag, what, status.message().c_str());
  return status.ok();
}

// write_atomic, then a streamed transaction over the same file, each read back.
inline bool writer_roundtrip(const std::string& dir, const char* tag) {
  const std::string path = dir + "/" + tag + ".txt";
  const std::string first = std::string("first, by ") + tag + "\n";
  if (!report(tag, "write_atomic", atomic_state::write_atomic(path, first, 0640))) return false;
  if (slurp(path) != first) {
    std::fprintf(stderr, "%s: %s does not hold what write_atomic wrote\n", tag, path.c_str());
    return false;
  }
  atomic_state::AtomicWriter<> writer;
  auto tx = writer.begin(path, 0644);
  if (!report(tag, "begin", tx.status())) return false;
  if (!report(tag, "write", tx->write("second, "))) return false;
  if (!report(tag, "write", tx->write(ATOMIC_STATE_VERSION_STRING "\n"))) return false;
  if (!report(tag, "commit", tx->commit())) return false;
  if (slurp(path) != "second, " ATOMIC_STATE_VERSION_STRING "\n") {
    std::fprintf(stderr, "%s: %s does not hold what the transaction wrote\n", tag, path.c_str());
    return false;
  }
  return true;
}

#ifndef ATOMIC_STATE_NO_JSON
// A first run loads the zero state; a saved state loads back equal in a
// second manager, and the same timestamp is then not worth processing.
inline bool state_roundtrip(const std::string& dir, const char* tag) {
  const std::string state_dir = dir + "/" + tag + "-state";
  atomic_state::StateManager<> manager(state_dir);
  atomic_state::Result<atomic_state::State> first = manager.load_state();
  if (!report(tag, "first load_state", first.status())) return false;
  if (first->last_updated != 0 || !manager.should_process(1700000000, *first)) {
    std::fprintf(stderr, "%s: a first run should load the zero state\n", tag);
    return false;
  }
  const std::vector<std::int64_t> snapshots{1699990000, 1700000000, 1699995000};
  const atomic_state::State next = manager.update_state(tag, 1700000000, 42, 1234.5678, snapshots);
  if (!report(tag, "save_state", manager.save_state(next))) return false;

  atomic_state::StateManager<> again(state_dir);
  atomic_state::Result<atomic_state::State> loaded = again.load_state();
  if (!report(tag, "second load_state", loaded.status())) return false;
  if (*loaded != next || loaded->oracle_name != tag || loaded->snapshot_count != 3 ||
      loaded->oldest_snapshot != 1699990000 || again.should_process(1700000000, *loaded)) {
    std::fprintf(stderr, "%s: the state loaded back differs from the one saved:\n%s", tag,
                 slurp(again.state_file()).c_str());
    return false;
  }
  return true;
}
#endif

// The whole check, for a main(): argv[1] is a fresh directory to work in.
inline int run(int argc, char** argv, const char* tag) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s WORK_DIR\n", argv[0]);
    return 2;
  }
  bool ok = writer_roundtrip(argv[1], tag);
  std::printf("%s: atomic_state %s: writer roundtrip %s\n", tag, ATOMIC_STATE_VERSION_STRING,
              ok ? "ok" : "FAILED");
#ifndef ATOMIC_STATE_NO_JSON
  const bool state_ok = state_roundtrip(argv[1], tag);
  std::printf("%s: atomic_state %s: state roundtrip %s\n", tag, ATOMIC_STATE_VERSION_STRING,
              state_ok ? "ok" : "FAILED");
  ok = ok && state_ok;
#else
  std::printf("%s: atomic_state %s: state left out (ATOMIC_STATE_NO_JSON)\n", tag,
              ATOMIC_STATE_VERSION_STRING);
#endif
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace consumer

#endif
