// Counts heap allocations of StateManager with a replaced global operator
// new: once a manager is built, save_state of an ordinary State makes none,
// load_state makes no more than a small fixed number, and AtomicWriter::write
// given a ready std::filesystem::path makes none.
//
// Only operator new is counted (Boost.JSON's default resource and
// std::string both go through it); malloc called directly by the C library
// is not, and the save and load paths make no such call once the first
// load_state has swept the directory (opendir).
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>

#include "atomic_state.hpp"
#include "support/files.hpp"

namespace {
long allocations = 0;
}

void* operator new(std::size_t size) {
  ++allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, std::align_val_t align) {
  ++allocations;
  const auto a = static_cast<std::size_t>(align);
  const std::size_t rounded = (size + a - 1) / a * a;
  if (void* p = std::aligned_alloc(a, rounded == 0 ? a : rounded)) return p;
  throw std::bad_alloc();
}
// The library's own allocations use the nothrow form: counted too.
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  ++allocations;
  return std::malloc(size == 0 ? 1 : size);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

namespace as = atomic_state;

// load_state of the State below: the last_updated_iso string (20 bytes) is
// longer than std::string's in-object buffer (15 bytes in libstdc++ and
// libc++); the JSON is parsed in a stack arena. Measured: 1.
constexpr long kMaxLoadAllocations = 1;

int passed = 0;
int failures = 0;

void report(bool ok, const char* what, long made, const char* limit) {
  std::printf("%s - %s: %ld allocation(s)%s\n", ok ? "ok  " : "FAIL", what, made, limit);
  ++(ok ? passed : failures);
}

// Calls `call` (which returns whether it succeeded) and counts what it
// allocated; the call must succeed and allocate at most `most`.
template <class Call>
long expect_at_most(long most, const char* what, Call&& call) {
  const long before = allocations;
  const bool ok = call();
  const long made = allocations - before;
  char limit[48] = "";
  if (most > 0) std::snprintf(limit, sizeof limit, " (at most %ld)", most);
  report(ok && made <= most, what, made, limit);
  return made;
}

}  // namespace

int main() {
  test::TempDir dir;
  as::StateManager<> manager(dir.path());  // NullSink, AtomicWriter<FullSync>
  const std::int64_t ts = 1700000000;
  const as::State state =
      as::update_state("Switchboard", ts, 42, 1234567890.125, {1699990000, 1699995000, ts});
  // The first load_state sweeps stale temp files (opendir allocates); the
  // first save creates the file. Neither is what is measured.
  if (!manager.load_state() || !manager.save_state(state)) {
    std::printf("FAIL - setup: first load and save\n1 failed\n");
    return 1;
  }

  for (const char* what : {"save_state over the existing file", "save_state again"})
    expect_at_most(0, what, [&] { return manager.save_state(state).ok(); });

  as::State loaded;
  const long load = expect_at_most(kMaxLoadAllocations, "load_state of that file", [&] {
    as::Result<as::State> result = manager.load_state();
    if (!result) return false;
    loaded = std::move(*result);
    return true;
  });
  std::printf("     load_state made %ld allocation(s); the bound is %ld\n", load,
              kMaxLoadAllocations);
  std::printf("%s - the loaded state is the saved one\n", loaded == state ? "ok  " : "FAIL");
  ++(loaded == state ? passed : failures);

  expect_at_most(0, "should_process", [&] { return !manager.should_process(ts, loaded); });

  const std::filesystem::path target = dir / "data.bin";  // built before counting
  const std::string data(4096, 'x');
  expect_at_most(0, "AtomicWriter<>::write(std::filesystem::path) of a new file",
                 [&] { return as::AtomicWriter<>{}.write(target, data).ok(); });
  expect_at_most(0, "AtomicWriter<NoSync>::write(std::filesystem::path) over it",
                 [&] { return as::AtomicWriter<as::NoSync>{}.write(target, data).ok(); });

  // The counter must be able to see an allocation, or the zeros above prove
  // nothing: update_state allocates its strings (the date is 20 bytes).
  const long before = allocations;
  const as::State next = as::update_state("Switchboard", ts + 60, 43, 1.5, {ts});
  const long made = allocations - before;
  report(made > 0 && next.last_updated == ts + 60, "update_state is counted", made, "");

  std::printf("allocations_state: %d passed, %d failed\n", passed, failures);
  return failures == 0 ? 0 : 1;
}
