// The batch of protocol::batch_three_and_one on a real directory: three
// outputs in a/, the state in b/, each with its old and new contents, and
// the batch run under FaultFs by path or through two directory handles.
// The trace tests (test_batch_trace.cpp) and the fault tables
// (test_batch_faults.cpp) run it.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/names.hpp"

namespace test::batch {

// The batch of protocol::batch_three_and_one: three outputs in a, the state in b.
inline const char* const kFiles[] = {"a/full.json", "a/summary.json", "a/history.json",
                                     "b/state.json"};
inline const int kFileCount = 4;

inline std::string old_content(int i) { return "old " + std::to_string(i) + "\n"; }
inline std::string new_content(int i) {
  return std::string(static_cast<std::size_t>(1000 * (i + 1)), static_cast<char>('a' + i)) + "\n";
}

struct Files {
  std::vector<test::fs::path> paths;
  explicit Files(const TempDir& dir) {
    for (const char* f : kFiles) {
      paths.push_back(dir / f);
      test::fs::create_directories(paths.back().parent_path());
      test::write_plain(paths.back(), old_content(static_cast<int>(paths.size()) - 1), 0600);
    }
  }
};

/// What a scenario did: its status, and the batch's replaced() count.
struct Outcome {
  Status status;
  std::size_t replaced = 0;
};

template <class Policy>
Outcome batch_by_path(FaultFs& fs, const Files& files) {
  Batch<Policy, FaultFs&> batch(fs);
  for (int i = 0; i < kFileCount; ++i)
    if (Status s = batch.add(files.paths[static_cast<std::size_t>(i)], new_content(i)); !s)
      return {s, batch.replaced()};
  Status s = batch.commit();
  return {s, batch.replaced()};
}

inline Outcome batch_through_handles(FaultFs& fs, const Files& files) {
  using Dir = AtomicDirectory<FullSync, FaultFs&>;
  auto a = Dir::open(files.paths[0].parent_path().string(), fs);
  if (!a) return {a.status(), 0};
  auto b = Dir::open(files.paths[3].parent_path().string(), fs);
  if (!b) return {b.status(), 0};
  Batch<FullSync, FaultFs&> batch(fs);
  for (int i = 0; i < kFileCount; ++i) {
    Dir& d = i < 3 ? *a : *b;
    const std::string name = files.paths[static_cast<std::size_t>(i)].filename().string();
    if (Status s = batch.add(d, name, new_content(i)); !s) return {s, batch.replaced()};
  }
  Status s = batch.commit();
  return {s, batch.replaced()};
}

}  // namespace test::batch
