// Counts heap allocations with a replaced global operator new, and, outside
// the sanitizers (which replace malloc themselves), with a replaced malloc,
// calloc and realloc, which see the C library's own allocations too
// (fdopendir's, say): a save that succeeds makes none, whether in one call
// or through a transaction, and whatever spelling its path has (a string
// literal, as the README writes); nor does a reused batch or snapshot
// writer.
#include <dirent.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/files.hpp"

namespace {
long allocations = 0;
long fail_after = -1;  // when >= 0: allocations left before new throws
long mallocs = 0;      // malloc, calloc and realloc, where counted
}  // namespace

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ATOMIC_STATE_TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ATOMIC_STATE_TEST_SANITIZED 1
#endif
#if defined(__GLIBC__) && !defined(ATOMIC_STATE_TEST_SANITIZED)
constexpr bool mallocs_counted = true;
extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* p, std::size_t size);
void* malloc(std::size_t size) {
  ++mallocs;
  return __libc_malloc(size);
}
void* calloc(std::size_t count, std::size_t size) {
  ++mallocs;
  return __libc_calloc(count, size);
}
void* realloc(void* p, std::size_t size) {
  ++mallocs;
  return __libc_realloc(p, size);
}
}
#else
constexpr bool mallocs_counted = false;
#endif

void* operator new(std::size_t size) {
  ++allocations;
  if (fail_after == 0) throw std::bad_alloc();
  if (fail_after > 0) --fail_after;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
// The library allocates with the nothrow form; it is replaced too, or a
// sanitizer's own nothrow new would pair with the free() below (and go
// uncounted).
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  ++allocations;
  if (fail_after == 0) return nullptr;
  if (fail_after > 0) --fail_after;
  return std::malloc(size == 0 ? 1 : size);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

int failures = 0;

template <class Save>
void expect_no_allocation(const char* what, Save&& save) {
  const long before = allocations, before_malloc = mallocs;
  const bool ok = save();
  const long made = allocations - before, made_by_malloc = mallocs - before_malloc;
  const bool none = made == 0 && made_by_malloc == 0;
  std::printf("%s - %s: %ld allocation(s), %ld malloc(s)%s\n", ok && none ? "ok  " : "FAIL", what,
              made, made_by_malloc, mallocs_counted ? "" : " (malloc not counted here)");
  if (!ok || !none) ++failures;
}

}  // namespace

int main() {
  test::TempDir dir;
  const std::filesystem::path existing = dir / "state.json";
  const std::filesystem::path fresh = dir / "fresh.json";
  const std::string data(4096, 'x');
  test::write_plain(existing, "old");

  expect_no_allocation("write_atomic over an existing file",
                       [&] { return atomic_state::write_atomic(existing, data).ok(); });
  // The README's own spelling: a string literal, converted to nothing.
  const std::string literal_dir = dir.path().string();
  if (::chdir(literal_dir.c_str()) != 0) return 1;
  expect_no_allocation("write_atomic(\"state.json\", \"...\"), as the README writes it", [] {
    return atomic_state::write_atomic("state.json", "{\"x\": 1}\n").ok();
  });
  expect_no_allocation("AtomicWriter<>::write of a std::string path", [&] {
    return atomic_state::AtomicWriter<>{}.write(existing.native(), data).ok();
  });
  expect_no_allocation("AtomicWriter<>::write of a std::string_view path", [&] {
    return atomic_state::AtomicWriter<>{}.write(std::string_view(existing.native()), data).ok();
  });
  expect_no_allocation("AtomicWriter<NoSync>::write of a new file", [&] {
    return atomic_state::AtomicWriter<atomic_state::NoSync>{}.write(fresh, data).ok();
  });
  expect_no_allocation("begin(\"state.json\"), three writes, commit", [&] {
    atomic_state::AtomicWriter<> writer;
    auto tx = writer.begin("state.json");
    return tx && tx->write("a").ok() && tx->write(data).ok() && tx->write("z").ok() &&
           tx->commit().ok();
  });
  // A batch of buffers already in memory (issue 14): after reserve(), the
  // commit allocates nothing; nor does a directory handle's save.
  {
    const std::filesystem::path outputs = dir / "outputs";
    std::filesystem::create_directories(outputs);
    const std::string full(256 * 1024, 'f'), summary(16 * 1024, 's'), history(1024, 'h'),
        state(300, 'S');
    const std::filesystem::path full_path = outputs / "full", summary_path = outputs / "summary",
                                history_path = outputs / "history";
    atomic_state::Batch<> batch;
    batch.reserve(4);
    const auto fill = [&] {
      return batch.add(full_path, full).ok() && batch.add(summary_path, summary).ok() &&
             batch.add(history_path, history).ok() && batch.add(existing, state).ok();
    };
    for (int run = 0; run < 3; ++run) {
      if (!fill()) ++failures;
      expect_no_allocation("Batch::commit of 4 files in 2 directories, after reserve(4)",
                           [&] { return batch.commit().ok(); });
    }
    auto handle = atomic_state::AtomicDirectory<>::open(outputs.native());
    if (!handle) ++failures;
    expect_no_allocation("AtomicDirectory::write", [&] {
      return handle->write("summary", summary).ok() && handle->write("summary", summary).ok();
    });
    auto fast = atomic_state::AtomicDirectory<atomic_state::NoSync>::open(outputs.native());
    if (!fast) ++failures;
    expect_no_allocation("AtomicDirectory<NoSync>::write",
                         [&] { return fast->write("history", history).ok(); });
    for (int run = 0; run < 3; ++run) {
      if (!batch.add(*handle, "full", full).ok() || !batch.add(*handle, "state", state).ok())
        ++failures;
      expect_no_allocation("Batch::commit through a directory handle, after reserve(4)",
                           [&] { return batch.commit().ok(); });
    }
    // The header says "a batch reused run after run allocates nothing":
    // the adds too, not only the commit (each add once allocated its
    // transaction).
    const long before_run = allocations;
    const bool run_ok = fill() && batch.commit().ok();
    const long per_run = allocations - before_run;
    std::printf("%s - a whole run of a reused batch (4 adds and the commit): %ld allocation(s)%s\n",
                run_ok && per_run == 0 ? "ok  " : "FAIL", per_run,
                per_run == 0 ? "" : " (does Batch::add allocate its transaction again?)");
    if (!run_ok || per_run != 0) ++failures;
  }

  // A batch reused run after run whose output goes into a new directory
  // each run (a directory a day): what it remembers of the directories it
  // swept stays within the storage reserve() made.
  {
    const std::filesystem::path days = dir / "days";
    std::filesystem::create_directories(days);
    std::vector<std::string> outputs;
    for (int day = 0; day < 8; ++day) {
      const std::filesystem::path day_dir = days / ("day-" + std::to_string(day));
      std::filesystem::create_directories(day_dir);
      outputs.push_back((day_dir / "out.csv").string());
    }
    const std::string state_path = (days / "state.json").string();
    atomic_state::Batch<> batch;
    batch.reserve(2);
    for (const std::string& output : outputs)
      expect_no_allocation("a reused batch, a new directory each run, after reserve(2)", [&] {
        return batch.add(output, "x").ok() && batch.add(state_path, "{}").ok() &&
               batch.commit().ok();
      });
  }

  // A SnapshotWriter reused publish after publish (issue 20, item 10): once
  // its storage has grown to the directory's size (the first publishes),
  // the adds and the publish allocate nothing, its prune of the oldest
  // generation included.
  {
    const std::filesystem::path snapshots = dir / "snapshots";
    auto writer = atomic_state::SnapshotWriter<>::open(snapshots.native());
    if (!writer) ++failures;
    const std::string big(64 * 1024, 'b'), small(100, 's');
    const auto one_set = [&] {
      return writer->add("a", big).ok() && writer->add("b", small).ok() &&
             writer->add("c", small, 0600).ok() && writer->add("d", "").ok() &&
             writer->publish().ok();
    };
    for (int warm = 0; warm < 4; ++warm)
      if (!one_set()) ++failures;
    for (int run = 0; run < 3; ++run)
      expect_no_allocation(
          "a reused SnapshotWriter: 4 adds and a publish (an old generation pruned)", one_set);
  }

  // The counter must be able to see an allocation, or the zeros above prove
  // nothing: a failure describes itself in strings.
  const long before = allocations;
  const bool failed = !atomic_state::write_atomic(dir / "state.json" / "x", data).ok();
  std::printf("%s - a failed save is counted: %ld allocation(s)\n",
              failed && allocations > before ? "ok  " : "FAIL", allocations - before);
  if (!failed || allocations == before) ++failures;
  // And the malloc counter the C library's own: opendir allocates its DIR.
  if (mallocs_counted) {
    const long before_malloc = mallocs;
    const std::string listed = dir.path().string();
    DIR* opened = ::opendir(listed.c_str());
    if (opened != nullptr) ::closedir(opened);
    const bool seen = opened != nullptr && mallocs > before_malloc;
    std::printf("%s - the C library's malloc in opendir is counted: %ld malloc(s)\n",
                seen ? "ok  " : "FAIL", mallocs - before_malloc);
    if (!seen) ++failures;
  }

  // Out of memory while a failure is being described: the save still
  // reports its step and reason instead of terminating the program.
  int survived = 0;
  const int budgets = 24;
  const std::filesystem::path under_a_file = dir / "state.json" / "x";
  for (long budget = 0; budget < budgets; ++budget) {
    fail_after = budget;
    const atomic_state::Status status = atomic_state::write_atomic(under_a_file, data);
    const atomic_state::Status copy = status;  // copies never allocate
    fail_after = -1;
    if (!status.ok() && copy.step() == atomic_state::Step::open_directory &&
        copy.code().value() == ENOTDIR)
      ++survived;
  }
  std::printf("%s - out of memory after 0..%d allocations: %d of %d failed saves reported\n",
              survived == budgets ? "ok  " : "FAIL", budgets - 1, survived, budgets);
  if (survived != budgets) ++failures;
  return failures == 0 ? 0 : 1;
}
