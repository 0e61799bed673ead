// Two vendored copies of atomic_state.hpp of different versions, one per
// translation unit (old.cpp, new.cpp), linked into one program. The
// versioned inline namespace must keep them apart: each TU runs its own
// copy's code, and their types are different types. Without it the link
// would still succeed, but the linker would keep one copy of every inline
// function for both TUs: an ODR violation no tool reports.
#include <cstdio>
#include <cstring>

#include "report.hpp"

int main(int argc, char** argv) {
  const TuReport old_report = old_tu(argc, argv);
  const TuReport new_report = new_tu(argc, argv);
  std::printf("old TU: version %s, AtomicWriter<> is %s\n", old_report.version,
              old_report.writer_type);
  std::printf("new TU: version %s, AtomicWriter<> is %s\n", new_report.version,
              new_report.writer_type);
  int status = old_report.status != 0 ? old_report.status : new_report.status;
  if (std::strcmp(old_report.version, new_report.version) == 0) {
    std::printf("the two TUs should have been built with two different versions\n");
    status = 1;
  }
  if (std::strcmp(old_report.writer_type, new_report.writer_type) == 0) {
    std::printf("both versions define the same AtomicWriter type: their code is mixed\n");
    status = 1;
  }
  return status;
}
