// Built with -fno-exceptions: memory that runs out while the library
// describes a failure costs the description, never the program. Every
// allocation the library makes on a failure path must be a non-throwing
// one (operator new(size, std::nothrow)); a throwing operator new called
// there could only end the program, so this one says so and exits.
//
// For each failing save and load, and each budget of 0 to kBudgets
// allocations before memory runs out: the Status still carries its step and
// its code.
// These replacements of the global operators take their memory from malloc
// and give it back with free, each pair matched. Once g++ -O1 inlines them
// into the library's `new (std::nothrow)` and `delete`, it sees free() on
// memory from operator new and warns (-Wmismatched-new-delete): a false
// alarm of these replacements, not of the library's pairs.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>

#include "atomic_state.hpp"
#include "support/checks.hpp"
#include "support/files.hpp"

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#error "allocations_no_exceptions.cpp must be compiled with -fno-exceptions"
#endif

#include <boost/throw_exception.hpp>
#include <exception>

namespace {
long budget = -1;         // allocations left before memory runs out; -1: no limit
bool counting = false;    // inside a call under test
long throwing_calls = 0;  // throwing operator new called inside one

bool spend() {
  if (budget < 0) return true;
  if (budget == 0) return false;
  --budget;
  return true;
}
}  // namespace

void* operator new(std::size_t size) {
  if (counting) ++throwing_calls;
  if (!spend()) {
    // Without exceptions a throwing new that fails can only terminate.
    std::printf("FAIL - a throwing operator new ran out of memory inside the library\n");
    std::fflush(stdout);
    std::_Exit(1);
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  std::abort();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return spend() ? std::malloc(size == 0 ? 1 : size) : nullptr;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }

// Boost, without exceptions, asks the program for these; the library never
// gets Boost there (its calls are the non-throwing ones).
namespace boost {
BOOST_NORETURN void throw_exception(const std::exception&) { std::abort(); }
BOOST_NORETURN void throw_exception(const std::exception&, const boost::source_location&) {
  std::abort();
}
}  // namespace boost

namespace {

namespace as = atomic_state;
constexpr long kBudgets = 8;

// Runs `attempt` (which returns the Status of a failing call) under every
// budget and checks the Status each time.
template <class Attempt>
void under_every_budget(const char* what, as::Step step, int error, Attempt&& attempt) {
  int reported = 0;
  for (long b = 0; b <= kBudgets; ++b) {
    throwing_calls = 0;
    budget = b;
    counting = true;
    const as::Status status = attempt();
    const as::Status copy = status;  // copies never allocate
    counting = false;
    budget = -1;
    if (!status.ok() && copy.step() == step && copy.code().value() == error && throwing_calls == 0)
      ++reported;
  }
  test::check(reported == kBudgets + 1,
              std::string(what) + ": reported with its step and code under all " +
                  std::to_string(kBudgets + 1) + " budgets (" + std::to_string(reported) + ")");
}

}  // namespace

int main() {
  test::TempDir dir;
  test::write_plain(dir / "file", "a file, not a directory");
  test::fs::create_directory(dir / "state-is-a-dir");
  test::fs::create_directory(dir / "state-is-a-dir" / "state.json");
  // Every path is built before counting starts: building one allocates.
  const std::string under_a_file = (dir / "file" / "state.json").string();
  const std::string a_directory = (dir / "state-is-a-dir").string();

  under_every_budget("write_atomic under a file", as::Step::open_directory, ENOTDIR,
                     [&] { return as::write_atomic(under_a_file, "x"); });
  as::AtomicWriter<> writer;
  under_every_budget("begin under a file", as::Step::open_directory, ENOTDIR,
                     [&] { return writer.begin(under_a_file).status(); });
  under_every_budget("write_atomic over a directory", as::Step::check_path, EISDIR,
                     [&] { return as::write_atomic(a_directory, "x"); });
  under_every_budget("a path with a NUL byte", as::Step::check_path, EINVAL,
                     [&] { return as::write_atomic(std::string_view("a\0b", 3), "x"); });

  as::StateManager<> reading(dir / "state-is-a-dir");
  under_every_budget("load_state of a directory", as::Step::check_file, EISDIR,
                     [&] { return reading.load_state().status(); });
  as::StateManager<> saving(dir / "file");
  const as::State state;
  under_every_budget("save_state under a file", as::Step::open_directory, ENOTDIR,
                     [&] { return saving.save_state(state); });

  std::printf("allocations_no_exceptions: %d failure(s)\n", test::failures);
  return test::failures == 0 ? 0 : 1;
}
