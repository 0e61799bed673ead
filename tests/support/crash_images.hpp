// Power loss at every crash point of one save, checked at its target: a
// save recorded over SimFs (support/sim_fs.hpp), every image a power loss
// could leave before each of its calls and after it returned, each judged
// old, new, torn, missing or of the wrong mode, and the coverage pinned
// against the calls support/protocol.hpp says the save makes. Shared by
// the writer's and StateManager's crash tests (test_writer_crash.cpp,
// test_state_crash.cpp); a batch's crash test keeps its Run.
#pragma once

#include <cstddef>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "support/catch.hpp"
#include "support/names.hpp"

namespace test::crash {

/// SimFs makes unnamed files whatever the host: the protocol tables the
/// crash points are counted from say so too, in every crash test.
inline const bool kSimulatedUnnamedFiles = (protocol::assume_unnamed_files(true), true);

// ------------------------------------------------------------- scenarios --

// Several hundred bytes, so that its first half and a zero-filled copy are
// plainly torn, and the reading side has real JSON-sized work.
inline std::string new_content() {
  std::string text;
  for (int line = 0; line < 12; ++line)
    text += "line " + std::to_string(line) + ": the replacement must arrive whole or not at all\n";
  return text;
}

inline const Node kOld = sim::file_node("old\n", 0640);
inline const Node kNew = sim::file_node(new_content(), 0644);  // 0644: a mode change to see

inline Image existing_file() { return {{"/d", sim::directory_node()}, {"/d/state.json", kOld}}; }
inline Image empty_directory() { return {{"/d", sim::directory_node()}}; }

/// The file a save replaces: what is there before (nothing: nullopt) and
/// what the save puts there.
struct Target {
  std::string path;
  std::optional<Node> old;
  Node now;
};

/// One save, run once, with everything a power loss could interrupt.
struct Run {
  std::vector<CrashPoint> points;  // before each call, then after the save returned
  bool ok = false;
  std::string message;
  std::size_t open_descriptors = 0;
  Image after;  // what the process saw when the save returned
};

/// What `fs` recorded of a save that returned `status`, once the point
/// after it has been captured.
inline Run recorded(const SimFs& fs, const Status& status) {
  return Run{fs.crash_points(), status.ok(), status.message(), fs.open_descriptors(), fs.current()};
}

template <class Policy>
Run record_write(const Image& before, const std::string& path, const Node& now) {
  SimFs fs = SimFs::from(before);
  fs.start_recording();
  const atomic_state::Status status =
      AtomicWriter<Policy, SimFs&>(fs).write(path, now.data, now.mode);
  fs.capture("(after the save returned)");
  return recorded(fs, status);
}

// ---------------------------------------------------------------- checks --

/// What a crash image holds at the target.
enum class Seen { old, fresh, torn, missing, wrong_mode };

inline Seen classify(const Image& image, const Target& t) {
  const auto it = image.find(t.path);
  if (it == image.end()) return t.old ? Seen::missing : Seen::old;
  const Node& file = it->second;
  if (file == t.now) return Seen::fresh;
  if (t.old && file == *t.old) return Seen::old;
  if (file.data == t.now.data || (t.old && file.data == t.old->data)) return Seen::wrong_mode;
  return Seen::torn;
}

inline std::string octal(unsigned mode) {
  char text[16];
  std::snprintf(text, sizeof text, "0%o", mode);
  return text;
}

inline std::string describe(const Image& image, const Target& t) {
  const auto it = image.find(t.path);
  if (it == image.end()) return "no " + t.path;
  const Node& f = it->second;
  std::string what;
  if (f.data == t.now.data)
    what = "the new bytes";
  else if (t.old && f.data == t.old->data)
    what = "the old bytes";
  else if (f.data.empty())
    what = "an empty file";
  else if (f.data == std::string(f.data.size(), '\0'))
    what = std::to_string(f.data.size()) + " zero bytes";
  else if (t.now.data.compare(0, f.data.size(), f.data) == 0)
    what = "the first " + std::to_string(f.data.size()) + " new bytes";
  else
    what = std::to_string(f.data.size()) + " other bytes";
  return t.path + " holds " + what + ", mode " + octal(f.mode);
}

/// What the enumeration of one run found.
struct Tally {
  std::size_t points = 0;
  std::size_t images = 0;      // images summed over crash points (each point deduplicated)
  std::size_t distinct = 0;    // distinct images over the whole run
  std::size_t skipped = 0;     // logged operations a subset dropped as meaningless
  std::size_t torn = 0;        // neither the old bytes nor the new ones, or the file gone
  std::size_t lost = 0;        // not the new file although the save reported success
  std::size_t wrong_mode = 0;  // whole bytes under the other version's mode
  std::size_t temp_mode = 0;   // ... namely the new bytes under the temp file's 0600
  std::size_t old_images = 0, new_images = 0;
  std::vector<std::string> violations;  // the first few bad images, described

  std::size_t bad() const { return torn + lost + wrong_mode; }
  std::string first_violations() const {
    std::string out;
    for (const std::string& v : violations) out += "\n  " + v;
    return out;
  }
};

/// Classifies one image, with any further complaint in `problem`.
using Checker = std::function<Seen(const Image&, std::string& problem)>;

inline Checker target_check(const Target& t) {
  return [t](const Image& image, std::string&) { return classify(image, t); };
}

/// Every image of every crash point of `run`, checked. The last point is
/// after the save returned: if it reported success, only the new file will do.
inline Tally enumerate(const Run& run, Order order, const Target& t, const Checker& check) {
  Tally tally;
  std::map<Image, std::pair<Seen, std::string>> verdicts;  // an image is judged once
  for (std::size_t p = 0; p < run.points.size(); ++p) {
    const CrashPoint& point = run.points[p];
    const bool after_success = run.ok && p + 1 == run.points.size();
    sim::ImageCount count;
    const std::set<Image> images = sim::crash_images(point, order, &count);
    ++tally.points;
    tally.skipped += count.skipped;
    for (const Image& image : images) {
      ++tally.images;
      auto found = verdicts.find(image);
      if (found == verdicts.end()) {
        std::string problem;
        const Seen seen = check(image, problem);
        found = verdicts.emplace(image, std::make_pair(seen, problem)).first;
      }
      const auto& [seen, problem] = found->second;
      bool bad = !problem.empty();
      switch (seen) {
        case Seen::fresh:
          ++tally.new_images;
          break;
        case Seen::old:
          ++tally.old_images;
          if (after_success) ++tally.lost, bad = true;
          break;
        case Seen::missing:
          ++tally.torn, bad = true;
          break;
        case Seen::torn:
          ++tally.torn, bad = true;
          break;
        case Seen::wrong_mode: {
          ++tally.wrong_mode, bad = true;
          const Node& f = image.at(t.path);
          if (f.data == t.now.data && f.mode == 0600) ++tally.temp_mode;
          break;
        }
      }
      if (bad && tally.violations.size() < 6)
        tally.violations.push_back("crash point " + std::to_string(p) + " (before " + point.before +
                                   "): " + describe(image, t) +
                                   (problem.empty() ? "" : "; " + problem));
    }
  }
  tally.distinct = verdicts.size();
  return tally;
}

inline void print(const char* scenario, const char* policy, Order order, const Tally& t) {
  std::printf(
      "[crash] %-34s %-12s %-6s %3zu points %4zu images %4zu distinct | "
      "torn %3zu lost %3zu wrong mode %3zu (0600: %zu)\n",
      scenario, policy, sim::to_string(order), t.points, t.images, t.distinct, t.torn, t.lost,
      t.wrong_mode, t.temp_mode);
}

/// The promise of FullSync: no bad image at any point, and a sane run.
inline void require_old_or_new(const Run& run, const Tally& tally, Order order) {
  INFO(run.message);
  REQUIRE(run.ok);
  CHECK(run.open_descriptors == 0);
  INFO("bad images:" << tally.first_violations());
  CHECK(tally.bad() == 0);
  CHECK(tally.violations.empty());
  // A prefix of a log replays exactly what happened: nothing is ever skipped.
  if (order == Order::prefix) CHECK(tally.skipped == 0);
  CHECK(tally.new_images > 0);  // the enumeration did reach the new file
  // Once the save returned, a power loss changes nothing at all: the disk
  // holds exactly what the process sees, directories and leftovers included.
  CHECK(sim::crash_images(run.points.back(), order) == std::set<Image>{run.after});
}

/// The pinned coverage of one scenario under one order: the images are
/// counted here; the crash points are one before each call the protocol
/// table (support/protocol.hpp) says the save makes, and one after it.
struct Pinned {
  Order order;
  std::size_t images, distinct;
};

inline void require_pinned(const Run& run, const Tally& tally, const Pinned& pin,
                           const protocol::Calls& calls) {
  std::vector<std::string> expected;
  for (const test::Op op : protocol::ops(calls)) expected.emplace_back(test::op_name(op));
  std::vector<std::string> explored;
  for (std::size_t p = 0; p + 1 < run.points.size(); ++p) explored.push_back(run.points[p].before);
  CHECK(explored == expected);
  CHECK(tally.points == calls.size() + 1);
  CHECK(tally.images == pin.images);
  CHECK(tally.distinct == pin.distinct);
}

}  // namespace test::crash
