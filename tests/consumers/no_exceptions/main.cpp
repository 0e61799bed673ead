// Built by run.sh with -fno-exceptions: once with Boost.JSON (-lboost_json),
// for AtomicWriter and StateManager, a corrupt state file included; once
// with -DATOMIC_STATE_NO_JSON, AtomicWriter alone and no Boost at all.
#include <fcntl.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../common/roundtrip.hpp"

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#error "no_exceptions/main.cpp must be compiled with -fno-exceptions"
#endif

#ifndef ATOMIC_STATE_NO_JSON
#include <boost/throw_exception.hpp>  // declares the two, BOOST_NORETURN
#include <exception>

// Without exceptions Boost (BOOST_NO_EXCEPTIONS, set by Boost.Config from
// -fno-exceptions) does not throw: where it would, it calls
// boost::throw_exception, which it only declares, and every program built
// this way must define it (Boost 1.81 declares both overloads). Nothing can
// be thrown and there is no caller to return to - both are [[noreturn]] -
// so all a definition can do is report and stop. atomic_state reports its
// own failures as Status, never through Boost's exceptions, so this
// program must never get here: if it does, it aborts and the check fails.
// BOOST_NORETURN, not [[noreturn]]: clang wants the attribute of the first
// declaration, which is Boost's.
namespace boost {
BOOST_NORETURN void throw_exception(const std::exception& e) {
  std::fprintf(stderr, "boost::throw_exception without exceptions: %s\n", e.what());
  std::abort();
}
BOOST_NORETURN void throw_exception(const std::exception& e, const boost::source_location& where) {
  std::fprintf(stderr, "boost::throw_exception without exceptions: %s at %s:%u\n", e.what(),
               where.file_name(), static_cast<unsigned>(where.line()));
  std::abort();
}
}  // namespace boost

// A corrupt state file is kept aside in a copy and the zero state is
// loaded, with exceptions off as with them on.
static bool corrupt_file_quarantined(const std::string& work) {
  const std::string dir = work + "/corrupt";
  const std::string torn = "{\"last_updated\": 17000";
  if (::mkdir(dir.c_str(), 0755) != 0) return false;
  if (!atomic_state::write_atomic(dir + "/state.json", torn)) return false;
  const struct timespec stamp[2] = {{1700000000, 0}, {1700000000, 0}};  // names the copy
  if (::utimensat(AT_FDCWD, (dir + "/state.json").c_str(), stamp, 0) != 0) return false;
  atomic_state::StateManager<> manager(dir);
  const atomic_state::Result<atomic_state::State> loaded = manager.load_state();
  if (!loaded) {
    std::fprintf(stderr, "load_state of a corrupt file: %s\n", loaded.status().message().c_str());
    return false;
  }
  const bool kept = consumer::slurp(dir + "/state.json") == torn &&
                    consumer::slurp(dir + "/state.json.corrupt-1700000000") == torn;
  if (loaded->last_updated != 0 || !kept) {
    std::fprintf(stderr, "the corrupt state file was not kept in state.json.corrupt-1700000000\n");
    return false;
  }
  return true;
}
#endif

int main(int argc, char** argv) {
  int status = consumer::run(argc, argv, "no-exceptions");
#ifndef ATOMIC_STATE_NO_JSON
  if (status != 2) {
    const bool quarantined = corrupt_file_quarantined(argv[1]);
    std::printf("no-exceptions: corrupt state file quarantined %s\n",
                quarantined ? "ok" : "FAILED");
    if (!quarantined) status = 1;
  }
#endif
  return status;
}
