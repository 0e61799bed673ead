// A snapshot directory as the tests look at it: its generations, its temp
// links, what current names and the files read through it, a publish of
// its own, a generation made by hand as a killed publisher leaves it, and
// the two generations the trace and fault tests start from. Shared by
// test_snapshot_fs.cpp, test_snapshot_trace.cpp and test_snapshot_faults.cpp.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

namespace test::snapshot {

using Writer = SnapshotWriter<>;
using Files = std::map<std::string, std::string>;

/// The generation directories in `dir`, by number.
inline std::vector<std::uint64_t> generations(const fs::path& dir) {
  std::vector<std::uint64_t> out;
  for (const std::string& name : test::names_in(dir))
    if (const std::uint64_t n = atomic_state::detail::generation_of(name); n != 0) out.push_back(n);
  std::sort(out.begin(), out.end());
  return out;
}

/// The generations being built (.building-gen-N) or removed
/// (.removing-gen-N) in `dir`, by name: never entered through current.
inline std::vector<std::string> unfinished(const fs::path& dir) {
  std::vector<std::string> out;
  for (const std::string& name : test::names_in(dir))
    if (name.rfind(".building-gen-", 0) == 0 || name.rfind(".removing-gen-", 0) == 0)
      out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

inline std::vector<std::string> temp_links(const fs::path& dir) {
  std::vector<std::string> out;
  for (const std::string& name : test::names_in(dir))
    if (name.rfind(".current.tmp-", 0) == 0 && name.size() == 19) out.push_back(name);
  return out;
}

/// What DIR/current names, "" when it is not a symlink.
inline std::string current_target(const fs::path& dir) {
  char buffer[4096];
  const ssize_t n = ::readlink((dir / "current").c_str(), buffer, sizeof buffer);
  return n < 0 ? std::string() : std::string(buffer, static_cast<std::size_t>(n));
}

/// The files a reader sees: DIR/current opened once, each file read
/// relative to it.
inline Files read_set(int generation_fd) {
  Files out;
  const int listing = ::openat(generation_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (listing < 0) return out;
  if (DIR* d = ::fdopendir(listing)) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      const int fd = ::openat(generation_fd, name.c_str(), O_RDONLY | O_CLOEXEC);
      std::string data;
      char buffer[4096];
      for (ssize_t n; fd >= 0 && (n = ::read(fd, buffer, sizeof buffer)) > 0;)
        data.append(buffer, static_cast<std::size_t>(n));
      if (fd >= 0) ::close(fd);
      out[name] = data;
    }
    ::closedir(d);
  }
  return out;
}

inline Files read_current(const fs::path& dir) {
  const int fd = ::open((dir / "current").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return {};
  Files out = read_set(fd);
  ::close(fd);
  return out;
}

/// Publishes `files` (each mode 0644) through a writer of its own.
inline void publish(const fs::path& dir, const Files& files, const SnapshotOptions& options = {}) {
  auto writer = Writer::open(dir.string(), options);
  REQUIRE(writer.has_value());
  for (const auto& [name, data] : files) REQUIRE(writer->add(name, data).ok());
  REQUIRE(writer->publish().ok());
}

/// A file of a generation made by hand, as a killed publisher leaves it.
inline void make_generation(const fs::path& dir, std::uint64_t n, const Files& files) {
  const fs::path g = dir / ("gen-" + std::to_string(n));
  fs::create_directory(g);
  for (const auto& [name, data] : files) test::write_plain(g / name, data);
}

/// A generation half-built by a killed publisher, as it leaves it.
inline void make_building(const fs::path& dir, std::uint64_t n, const Files& files) {
  const fs::path g = dir / (".building-gen-" + std::to_string(n));
  fs::create_directory(g);
  for (const auto& [name, data] : files) test::write_plain(g / name, data);
}

/// gen-1 (one file, "a") and gen-2 (current), as the trace and fault tests
/// start.
inline void two_generations(const fs::path& dir) {
  publish(dir, {{"a", "old 1"}});
  publish(dir, {{"a", "old 2"}, {"b", "old 2"}});
}

}  // namespace test::snapshot
