// Counts heap allocations with a replaced global operator new: a save that
// succeeds makes none, whether in one call or through a transaction.
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
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

int failures = 0;

template <class Save>
void expect_no_allocation(const char* what, Save&& save) {
  const long before = allocations;
  const bool ok = save();
  const long made = allocations - before;
  std::printf("%s - %s: %ld allocation(s)\n", ok && made == 0 ? "ok  " : "FAIL", what, made);
  if (!ok || made != 0) ++failures;
}

}  // namespace

int main() {
  test::TempDir dir;
  const std::filesystem::path existing = dir / "state.json";
  const std::filesystem::path fresh = dir / "fresh.json";
  const std::string data(4096, 'x');
  test::write_plain(existing, "old");

  expect_no_allocation("write_atomic over an existing file", [&] {
    return atomic_state::write_atomic(existing, data).ok();
  });
  expect_no_allocation("AtomicWriter<NoSync>::write of a new file", [&] {
    return atomic_state::AtomicWriter<atomic_state::NoSync>{}.write(fresh, data).ok();
  });
  expect_no_allocation("begin, three writes, commit", [&] {
    atomic_state::AtomicWriter<> writer;
    auto tx = writer.begin(existing);
    return tx && tx->write("a").ok() && tx->write(data).ok() && tx->write("z").ok() &&
           tx->commit().ok();
  });
  // The counter must be able to see an allocation, or the zeros above prove
  // nothing: a failure describes itself in strings.
  const long before = allocations;
  const bool failed = !atomic_state::write_atomic(dir / "state.json" / "x", data).ok();
  std::printf("%s - a failed save is counted: %ld allocation(s)\n",
              failed && allocations > before ? "ok  " : "FAIL", allocations - before);
  if (!failed || allocations == before) ++failures;
  return failures == 0 ? 0 : 1;
}
