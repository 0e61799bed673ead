// The reporting of the test programs that are not Catch2 (they fork, mount
// and kill): one line per check, and exit status 77, which Meson counts as
// skipped, where the machine refuses a setup.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace test {

inline int failures = 0;
constexpr int kSkip = 77;

inline void check(bool ok, const std::string& what) {
  std::printf("%s - %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

[[noreturn]] inline void skip(const std::string& why) {
  std::printf("skip: %s\n", why.c_str());
  std::fflush(stdout);
  std::_Exit(kSkip);
}

}  // namespace test
