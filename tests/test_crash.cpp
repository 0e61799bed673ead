// Power loss at every crash point. A save runs once against SimFs (see
// support/sim_fs.hpp for the persistence model); before each of its calls,
// and once after it returned, every image a power loss could leave on the
// disk is built and checked: the target holds the old file or the new one,
// whole and with its own mode, never anything else, and the new one once
// the save reported success. A StateManager with keep_previous changes two
// names, state.json and state.json.prev: every pair a power loss may leave
// is counted, and the next run's load_state checked on each image; so is a
// first run taking the run lock in a directory it has to make.
//
// The crash points are one before each call support/protocol.hpp says a
// save makes, and one after: the test checks it explored exactly those.
// The counts of images are pinned, so that coverage cannot shrink without a
// test saying so; they were computed by running this file and checked by
// hand for the small cases (see "the model" cases at the end). A change to
// the protocol is one edit of the table; it changes the image counts too:
// re-derive them then, and make sure the violations stay at zero.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_logger.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"
#include "support/seed_state.hpp"

namespace {

/// Syncs the file but never the directory: the rename may not survive.
struct FileSyncOnly {
  static constexpr atomic_state::SyncLevel file = atomic_state::SyncLevel::full;
  static constexpr bool directory = false;
};

using Manager = atomic_state::StateManager<NullSink, State, FullSync, SimFs&>;

// ------------------------------------------------------------- scenarios --

// Several hundred bytes, so that its first half and a zero-filled copy are
// plainly torn, and the reading side has real JSON-sized work.
std::string new_content() {
  std::string text;
  for (int line = 0; line < 12; ++line)
    text += "line " + std::to_string(line) + ": the replacement must arrive whole or not at all\n";
  return text;
}

const Node kOld = sim::file_node("old\n", 0640);
const Node kNew = sim::file_node(new_content(), 0644);  // 0644: a mode change to see

Image existing_file() { return {{"/d", sim::directory_node()}, {"/d/state.json", kOld}}; }
Image empty_directory() { return {{"/d", sim::directory_node()}}; }

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

template <class Policy>
Run record_write(const Image& before, const std::string& path, const Node& now) {
  SimFs fs = SimFs::from(before);
  fs.start_recording();
  const atomic_state::Status status =
      AtomicWriter<Policy, SimFs&>(fs).write(path, now.data, now.mode);
  fs.capture("(after the save returned)");
  return Run{fs.crash_points(), status.ok(), status.message(), fs.open_descriptors(), fs.current()};
}

// ---------------------------------------------------------------- checks --

/// What a crash image holds at the target.
enum class Seen { old, fresh, torn, missing, wrong_mode };

Seen classify(const Image& image, const Target& t) {
  const auto it = image.find(t.path);
  if (it == image.end()) return t.old ? Seen::missing : Seen::old;
  const Node& file = it->second;
  if (file == t.now) return Seen::fresh;
  if (t.old && file == *t.old) return Seen::old;
  if (file.data == t.now.data || (t.old && file.data == t.old->data)) return Seen::wrong_mode;
  return Seen::torn;
}

std::string octal(unsigned mode) {
  char text[16];
  std::snprintf(text, sizeof text, "0%o", mode);
  return text;
}

std::string describe(const Image& image, const Target& t) {
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

Checker target_check(const Target& t) {
  return [t](const Image& image, std::string&) { return classify(image, t); };
}

/// Every image of every crash point of `run`, checked. The last point is
/// after the save returned: if it reported success, only the new file will do.
Tally enumerate(const Run& run, Order order, const Target& t, const Checker& check) {
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

void print(const char* scenario, const char* policy, Order order, const Tally& t) {
  std::printf(
      "[crash] %-34s %-12s %-6s %3zu points %4zu images %4zu distinct | "
      "torn %3zu lost %3zu wrong mode %3zu (0600: %zu)\n",
      scenario, policy, sim::to_string(order), t.points, t.images, t.distinct, t.torn, t.lost,
      t.wrong_mode, t.temp_mode);
}

/// The promise of FullSync: no bad image at any point, and a sane run.
void require_old_or_new(const Run& run, const Tally& tally, Order order) {
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

void require_pinned(const Run& run, const Tally& tally, const Pinned& pin,
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

}  // namespace

// ===================================================== FullSync: promises ==

TEST_CASE(
    "FullSync: a save over an existing file leaves the old file or the new one, "
    "at every crash point",
    "[crash]") {
  const Target t{"/d/state.json", kOld, kNew};
  const Run run = record_write<FullSync>(existing_file(), t.path, t.now);
  // The 14 calls of support/protocol.hpp's overwrite_full_sync, and the
  // point after the save returned: 15 points. Images per point: 1 (open
  // dir) 1 (look at the target) 1 (create) | 2 2 (lock, link check: the
  // temp entry or not) | 2 (write) | 5 (fchmod: the temp "", new, half,
  // zeros) | 9 (fsync: each also under 0600 or 0644) | 2 2 (dup, close) | 3
  // (rename: old; old and temp; new) | 1 1 1 = 35. Distinct: old alone, old
  // beside 8 temp versions, new = 10. A subset adds nothing: the rename
  // without the create is skipped.
  const Pinned pins[] = {{Order::prefix, 35, 10}, {Order::subset, 35, 10}};
  for (const Pinned& pin : pins) {
    CAPTURE(sim::to_string(pin.order));
    const Tally tally = enumerate(run, pin.order, t, target_check(t));
    print("existing file", "FullSync", pin.order, tally);
    require_old_or_new(run, tally, pin.order);
    CHECK(tally.old_images > 0);
    require_pinned(run, tally, pin, protocol::save(Sync::full));
  }
}

TEST_CASE(
    "FullSync: a first save leaves no file or the whole new one, and the new one "
    "once it succeeded",
    "[crash]") {
  const Target t{"/d/state.json", std::nullopt, kNew};
  const Run run = record_write<FullSync>(empty_directory(), t.path, t.now);
  // As over an existing file, with "no file" in the place of the old one.
  const Pinned pins[] = {{Order::prefix, 35, 10}, {Order::subset, 35, 10}};
  for (const Pinned& pin : pins) {
    CAPTURE(sim::to_string(pin.order));
    const Tally tally = enumerate(run, pin.order, t, target_check(t));
    print("first save", "FullSync", pin.order, tally);
    require_old_or_new(run, tally, pin.order);
    require_pinned(run, tally, pin, protocol::save(Sync::full));
  }
}

TEST_CASE(
    "FullSync: a first save into missing directories makes the directories durable "
    "too",
    "[crash]") {
  // The writer creates each missing level and syncs the directory that
  // gained it; without that, a power loss after success could take the new
  // directory, and the file in it, away.
  struct Row {
    const char* path;
    protocol::Calls calls;
    Pinned prefix, subset;
  };
  const Row rows[] = {
      // open dir (ENOENT), then mkdir /d/new, look at its mode, open, fsync
      // and close /d (support/protocol.hpp's make_level), then the 14 calls
      // of a save: 21 points. One more distinct image: /d without /d/new
      // (before /d's fsync).
      {"/d/new/state.json",
       protocol::first_save(Sync::full, {{"/d/new", "/d"}}),
       {Order::prefix, 44, 11},
       {Order::subset, 44, 11}},
      // open dir (ENOENT), mkdir /d/a/b (ENOENT), make /d/a, make /d/a/b (5
      // calls each), then the save: 27 points (protocol.hpp's
      // first_save_two_levels). Two more distinct images: /d alone, and /d/a
      // without b.
      {"/d/a/b/state.json",
       protocol::first_save(Sync::full, {{"/d/a", "/d"}, {"/d/a/b", "/d/a"}}),
       {Order::prefix, 53, 12},
       {Order::subset, 53, 12}},
  };
  for (const Row& row : rows) {
    CAPTURE(row.path);
    const Target t{row.path, std::nullopt, kNew};
    const Run run = record_write<FullSync>(empty_directory(), t.path, t.now);
    for (const Pinned& pin : {row.prefix, row.subset}) {
      CAPTURE(sim::to_string(pin.order));
      const Tally tally = enumerate(run, pin.order, t, target_check(t));
      print(row.path, "FullSync", pin.order, tally);
      require_old_or_new(run, tally, pin.order);
      require_pinned(run, tally, pin, row.calls);
    }
  }
}

// ============================================== StateManager: a job's run ==

namespace {

State next_state() {
  State s = test::seed_state();
  s.last_updated += 3600;
  s.last_updated_iso = atomic_state::to_rfc3339(s.last_updated);
  s.last_protocol_count += 2;
  s.last_tvs = 1512345678.25;
  s.snapshot_count += 1;
  s.newest_snapshot = s.last_updated;
  return s;
}

// The directory after an earlier run: its state, and the temp file of a
// save that was killed, which the first load sweeps away.
Image job_directory() {
  return {{"/d", sim::directory_node()},
          {"/d/state.json", sim::file_node(test::kSeedStateText, 0644)},
          {"/d/.tmp-Ab12Cd", sim::file_node("{\"oracle_na", 0600)}};
}

}  // namespace

TEST_CASE(
    "StateManager: after a power loss anywhere in a run (load, sweep, save), the "
    "next run loads the old state or the new one",
    "[crash]") {
  SimFs fs = SimFs::from(job_directory());
  fs.start_recording();
  Manager job("/d", NullSink{}, fs);
  const auto loaded = job.load_state();
  REQUIRE(loaded.has_value());
  REQUIRE(*loaded == test::seed_state());
  const atomic_state::Status saved = job.save_state(next_state());
  fs.capture("(after save_state returned)");
  Run run{fs.crash_points(), saved.ok(), saved.message(), fs.open_descriptors(), fs.current()};
  REQUIRE(run.after.count("/d/state.json") == 1);
  const Target t{"/d/state.json", sim::file_node(test::kSeedStateText, 0644),
                 run.after.at("/d/state.json")};

  // The next run, on what the crash left: a new manager, its first load.
  const Checker next_run = [&t](const Image& image, std::string& problem) {
    const Seen seen = classify(image, t);
    SimFs disk = SimFs::from(image);
    Manager reader("/d", NullSink{}, disk);
    const auto state = reader.load_state();
    if (!state.has_value()) {
      problem = "load_state failed: " + state.status().message();
      return seen;
    }
    const bool as_seen = (seen == Seen::old && *state == test::seed_state()) ||
                         (seen == Seen::fresh && *state == next_state());
    if (!as_seen)
      problem = *state == State{} ? "load_state gave the zero state: the file read as corrupt"
                                  : "load_state gave a state neither old nor new";
    // The sweep took every temp file; nothing was moved aside as corrupt.
    for (const auto& entry : disk.current())
      if (entry.first != "/d" && entry.first != "/d/state.json")
        problem += (problem.empty() ? "" : "; ") + entry.first + " is left after the load";
    return seen;
  };

  // The directory opened once for the sweep and the read; the sweep: list,
  // and for the stale temp file look, open, fstat, lock, look again,
  // unlink, close (8); the read: open, fstat, read, read to the end, close,
  // and the directory's close (6); the save (14); and after: 30 points. The
  // sweep's unlink joins /d's log ahead of the save's changes, so in subset
  // order the save can survive without it, the stale temp file beside the
  // new state: 20 distinct images, not 11.
  const Pinned pins[] = {{Order::prefix, 69, 11}, {Order::subset, 89, 20}};
  const protocol::Calls calls =
      protocol::first_load_sweeping_one_stale_file() + protocol::save(Sync::full);
  for (const Pinned& pin : pins) {
    CAPTURE(sim::to_string(pin.order));
    const Tally tally = enumerate(run, pin.order, t, next_run);
    print("StateManager load + save", "FullSync", pin.order, tally);
    require_old_or_new(run, tally, pin.order);
    CHECK(tally.old_images > 0);
    require_pinned(run, tally, pin, calls);
  }
}

// ================================= StateManager with keep_previous: two names ==
// A save with StateOptions::keep_previous changes two names: it keeps the
// state file it replaces as state.json.prev (a link under a temp name,
// renamed over .prev, the directory synced), then replaces state.json. Two
// names cannot change in one atomic step, so between the two renames both
// may name the old state: (old, old). What must never be is the new state
// beside the older one, (new, older): the state replaced before its
// predecessor was durably kept. Nor may a .prev that existed vanish.

namespace {

template <class Policy>
using ManagerOf = atomic_state::StateManager<NullSink, State, Policy, SimFs&>;

atomic_state::StateOptions keeping_previous() {
  atomic_state::StateOptions options;
  options.keep_previous = true;
  return options;
}

State older_state() {
  State s = test::seed_state();
  s.last_updated -= 3600;
  s.last_updated_iso = atomic_state::to_rfc3339(s.last_updated);
  s.last_protocol_count -= 1;
  s.last_tvs = 1499999999.5;
  s.newest_snapshot = s.last_updated;
  return s;
}

/// The file a StateManager saves for `state`: its bytes, its mode.
Node saved_node(const State& state) {
  SimFs fs = SimFs::from(empty_directory());
  ManagerOf<FullSync> manager("/d", NullSink{}, fs);
  const atomic_state::Status saved = manager.save_state(state);
  INFO(saved.message());
  REQUIRE(saved.ok());
  return fs.current().at("/d/state.json");
}

/// One version a name may hold after a crash.
struct Version {
  std::string name;  ///< "older", "old", "new", "corrupt"
  Node node;
  State state;  ///< what it loads as (the zero state for "corrupt")
};

std::vector<Version> three_versions() {
  return {{"older", saved_node(older_state()), older_state()},
          {"old", saved_node(test::seed_state()), test::seed_state()},
          {"new", saved_node(next_state()), next_state()}};
}

const Version* find_version(const std::vector<Version>& versions, const std::string& name) {
  for (const Version& v : versions)
    if (v.name == name) return &v;
  return nullptr;
}

/// What `image` holds at `path`: "none", a version's name, a version's
/// name and the other mode its bytes show ("new 0600"), or "torn".
std::string holds(const Image& image, const std::string& path,
                  const std::vector<Version>& versions) {
  const auto it = image.find(path);
  if (it == image.end()) return "none";
  for (const Version& v : versions)
    if (it->second.same_content(v.node)) return v.name;
  for (const Version& v : versions)
    if (!it->second.directory && it->second.data == v.node.data)
      return v.name + " " + octal(it->second.mode);
  return "torn";
}

/// What the state file and .prev hold.
using Pair = std::pair<std::string, std::string>;

std::string text(const Pair& pair) { return "(" + pair.first + ", " + pair.second + ")"; }

/// A keep_previous save, and what a power loss during it may leave.
struct Keeping {
  std::string dir;                // the state's directory
  std::vector<Version> versions;  // what the two names may hold
  std::set<Pair> allowed;         // the pairs a power loss may leave before the save returned
  std::set<Pair> done;            // ... and once it returned
  std::string state_path() const { return dir + "/state.json"; }
  std::string prev_path() const { return dir + "/state.json.prev"; }
  Pair pair_of(const Image& image) const {
    return {holds(image, state_path(), versions), holds(image, prev_path(), versions)};
  }
};

/// A version's name without the mode its bytes may show: "new 0600" is new.
std::string bytes_of(const std::string& held) { return held.substr(0, held.find(' ')); }

/// The state the next run saves.
State newest_state() {
  State s = next_state();
  s.last_updated += 3600;
  s.last_updated_iso = atomic_state::to_rfc3339(s.last_updated);
  s.newest_snapshot = s.last_updated;
  return s;
}

/// The next run on what a crash left: a new manager with keep_previous,
/// its first load (after taking the run lock, when `lock_first`), then its
/// save. Empty, or what went wrong.
std::string next_run(const Image& image, const Keeping& k, bool lock_first = false) {
  const Pair pair = k.pair_of(image);
  SimFs disk = SimFs::from(image);
  ManagerOf<FullSync> reader(k.dir, NullSink{}, disk, keeping_previous());
  std::string problem;
  const auto add = [&problem](const std::string& what) {
    problem += (problem.empty() ? "" : "; ") + what;
  };
  if (lock_first) {
    const auto lock = reader.try_lock_run();
    if (!lock.has_value()) return "try_lock_run failed: " + lock.status().message();
  }
  const auto loaded = reader.load_state();
  if (!loaded.has_value()) return "load_state failed: " + loaded.status().message();
  const Version* state = find_version(k.versions, bytes_of(pair.first));
  const Version* prev = find_version(k.versions, bytes_of(pair.second));
  const std::string origin(atomic_state::to_string(loaded->origin));
  if (pair.first == "none") {
    if (loaded->origin != atomic_state::LoadOrigin::first_run || loaded->state() != State{})
      add("no state file, but the load gave origin " + origin);
  } else if (pair.first == "corrupt") {
    if (loaded->origin != atomic_state::LoadOrigin::previous || prev == nullptr ||
        loaded->state() != prev->state)
      add("a corrupt state file beside .prev holding " + pair.second + ", but origin " + origin +
          (loaded->state() == State{} ? " with the zero state" : " with another state"));
  } else if (state == nullptr) {
    add("the state file is " + pair.first + ", and loads as origin " + origin);
  } else if (loaded->origin != atomic_state::LoadOrigin::saved || loaded->state() != state->state) {
    add("the state file holds " + pair.first + " but the load gave origin " + origin +
        " and another state");
  }
  // The load swept every temp file and temp link, kept a copy only of a
  // corrupt state file, and left both names as they were.
  const Image after = disk.current();
  const std::string copies = k.state_path() + ".corrupt-";
  for (const auto& [path, node] : after) {
    const bool mine = path == k.state_path() || path == k.prev_path() ||
                      path == k.dir + "/.state.json.lock" ||
                      k.dir.compare(0, path.size(), path) == 0;  // the directory or above
    const bool copy = path.compare(0, copies.size(), copies) == 0 &&
                      (pair.first == "corrupt" || image.count(path) == 1);
    if (!mine && !copy) add(path + " is left after the load");
  }
  for (const std::string& path : {k.state_path(), k.prev_path()}) {
    const auto was = image.find(path);
    const auto is = after.find(path);
    if ((was == image.end()) != (is == after.end()) ||
        (was != image.end() && !was->second.same_content(is->second)))
      add("the load changed " + path);
  }

  // The next save keeps what the state file held as .prev (the same file
  // when a crash left it there already), unless it was corrupt or missing:
  // then .prev stays as it was.
  const atomic_state::Status saved = reader.save_state(newest_state());
  if (!saved.ok()) return problem + (problem.empty() ? "" : "; ") + saved.message();
  const Image next = disk.current();
  static const Node newest = saved_node(newest_state());
  if (next.count(k.state_path()) == 0 || !next.at(k.state_path()).same_content(newest))
    add("the next save did not write the state file");
  const auto kept = next.find(k.prev_path());
  const bool keeps_state = state != nullptr && state->name != "corrupt";
  const auto source = image.find(keeps_state ? k.state_path() : k.prev_path());
  if ((kept == next.end()) != (source == image.end()) ||
      (kept != next.end() && !kept->second.same_content(source->second)))
    add("after the next save .prev is not what " +
        std::string(keeps_state ? "the state file" : ".prev") + " held");
  for (const auto& entry : next)
    if (entry.first.compare(0, k.dir.size() + 6, k.dir + "/.tmp-") == 0)
      add(entry.first + " is left after the next save");
  return problem;
}

/// What the enumeration of a keep_previous run found.
struct PairTally {
  std::size_t points = 0, images = 0, distinct = 0, skipped = 0;
  std::map<Pair, std::size_t> pairs;  // images summed over the crash points, by pair
  std::size_t not_allowed = 0;        // a pair no power loss may leave at that point
  std::size_t next_run_problems = 0;  // the next run's load or save went wrong
  std::vector<std::string> violations;

  std::size_t count(const char* state, const char* prev) const {
    const auto it = pairs.find(Pair(state, prev));
    return it == pairs.end() ? 0 : it->second;
  }
  std::string first_violations() const {
    std::string out;
    for (const std::string& v : violations) out += "\n  " + v;
    return out;
  }
};

PairTally enumerate_pairs(const Run& run, Order order, const Keeping& k, bool lock_first = false) {
  PairTally tally;
  std::map<Image, std::string> runs;  // the next run on each distinct image, once
  for (std::size_t p = 0; p < run.points.size(); ++p) {
    const CrashPoint& point = run.points[p];
    const bool after_success = run.ok && p + 1 == run.points.size();
    sim::ImageCount count;
    const std::set<Image> images = sim::crash_images(point, order, &count);
    ++tally.points;
    tally.skipped += count.skipped;
    for (const Image& image : images) {
      ++tally.images;
      const Pair pair = k.pair_of(image);
      ++tally.pairs[pair];
      auto found = runs.find(image);
      if (found == runs.end()) found = runs.emplace(image, next_run(image, k, lock_first)).first;
      std::string problem = found->second;
      tally.next_run_problems += !problem.empty();
      const bool allowed = after_success ? k.done.count(pair) == 1 : k.allowed.count(pair) == 1;
      if (!allowed) {
        ++tally.not_allowed;
        problem = text(pair) + (after_success ? " after the save returned" : " may not be") +
                  (problem.empty() ? "" : "; " + problem);
      }
      if (!problem.empty() && tally.violations.size() < 6)
        tally.violations.push_back("crash point " + std::to_string(p) + " (before " + point.before +
                                   "): " + problem);
    }
  }
  tally.distinct = runs.size();
  return tally;
}

std::string text(const std::map<Pair, std::size_t>& pairs) {
  std::string out;
  for (const auto& [pair, n] : pairs)
    out += (out.empty() ? "" : " ") + text(pair) + " " + std::to_string(n);
  return out;
}

void print_pairs(const char* scenario, const char* policy, Order order, const PairTally& t) {
  std::printf("[crash] %-34s %-12s %-6s %3zu points %4zu images %4zu distinct | %s | bad %zu\n",
              scenario, policy, sim::to_string(order), t.points, t.images, t.distinct,
              text(t.pairs).c_str(), t.not_allowed + t.next_run_problems);
}

template <class Policy>
Run record_keeping_save(const Image& before, const std::string& dir, const State& state) {
  SimFs fs = SimFs::from(before);
  ManagerOf<Policy> manager(dir, NullSink{}, fs, keeping_previous());
  fs.start_recording();
  const atomic_state::Status saved = manager.save_state(state);
  fs.capture("(after save_state returned)");
  return Run{fs.crash_points(), saved.ok(), saved.message(), fs.open_descriptors(), fs.current()};
}

/// The pinned figures of one keep_previous scenario under one order.
struct PinnedPairs {
  Order order;
  std::size_t images, distinct;
  std::map<Pair, std::size_t> pairs;
};

void require_kept(const Run& run, const PairTally& tally, const PinnedPairs& pin,
                  const protocol::Calls& calls) {
  INFO(run.message);
  REQUIRE(run.ok);
  CHECK(run.open_descriptors == 0);
  INFO("bad images:" << tally.first_violations());
  CHECK(tally.not_allowed == 0);
  CHECK(tally.next_run_problems == 0);
  if (pin.order == Order::prefix) CHECK(tally.skipped == 0);
  CHECK(sim::crash_images(run.points.back(), pin.order) == std::set<Image>{run.after});
  Tally counted;
  counted.points = tally.points;
  counted.images = tally.images;
  counted.distinct = tally.distinct;
  require_pinned(run, counted, Pinned{pin.order, pin.images, pin.distinct}, calls);
  CHECK(text(tally.pairs) == text(pin.pairs));
}

}  // namespace

TEST_CASE(
    "keep_previous, FullSync: the state file is old or new and .prev older or old, "
    "never the new state beside the older one, at every crash point",
    "[crash]") {
  const std::vector<Version> v = three_versions();
  const Node older = v[0].node, old = v[1].node;
  struct Row {
    const char* scenario;
    Image before;
    std::string dir;
    protocol::Calls calls;
    std::set<Pair> allowed, done;
    PinnedPairs prefix, subset;
  };
  const Image d = empty_directory();
  const Image both = {
      {"/d", sim::directory_node()}, {"/d/state.json", old}, {"/d/state.json.prev", older}};
  const Image state_only = {{"/d", sim::directory_node()}, {"/d/state.json", old}};
  const Row rows[] = {
      // keep_previous's 7 calls (open, look at the state and at .prev,
      // link, rename, sync the directory, close), then the 14 of a save:
      // 22 points. Before the rename of the link: (old, older), alone or
      // beside the link (8 images); from the rename on, (old, old) (2, then
      // 31 through the save, as "existing file" above); once the state is
      // renamed and the directory synced, (new, old) (4). 45 images, 12
      // distinct: (old, older) with and without the link, (old, old) alone
      // and beside the temp file's 8 versions, (new, old). A subset adds
      // nothing: the link's rename without the link is skipped.
      {"from (old, older)",
       both,
       "/d",
       protocol::keep_previous_then_save(Sync::full),
       {{"old", "older"}, {"old", "old"}, {"new", "old"}},
       {{"new", "old"}},
       {Order::prefix, 45, 12, {{{"old", "older"}, 8}, {{"old", "old"}, 33}, {{"new", "old"}, 4}}},
       {Order::subset, 45, 12, {{{"old", "older"}, 8}, {{"old", "old"}, 33}, {{"new", "old"}, 4}}}},
      // The same calls; "none" in the place of the older state.
      {"from (old, none)",
       state_only,
       "/d",
       protocol::keep_previous_then_save(Sync::full),
       {{"old", "none"}, {"old", "old"}, {"new", "old"}},
       {{"new", "old"}},
       {Order::prefix, 45, 12, {{{"old", "none"}, 8}, {{"old", "old"}, 33}, {{"new", "old"}, 4}}},
       {Order::subset, 45, 12, {{{"old", "none"}, 8}, {{"old", "old"}, 33}, {{"new", "old"}, 4}}}},
      // Nothing to keep: open, look, close, then a first save (14): 18
      // points, 38 images (3, and a first save's 35), 10 distinct.
      {"first save",
       d,
       "/d",
       protocol::keep_previous(Sync::full, protocol::Previous::nothing) +
           protocol::save(Sync::full),
       {{"none", "none"}, {"new", "none"}},
       {{"new", "none"}},
       {Order::prefix, 38, 10, {{{"none", "none"}, 34}, {{"new", "none"}, 4}}},
       {Order::subset, 38, 10, {{{"none", "none"}, 34}, {{"new", "none"}, 4}}}},
      // No directory: keep_previous's open fails, then a first save into
      // the missing /d/new (20 calls): 22 points.
      {"first save, no directory",
       d,
       "/d/new",
       protocol::keep_previous(Sync::full, protocol::Previous::no_directory) +
           protocol::first_save(Sync::full, {{"/d/new", "/d"}}),
       {{"none", "none"}, {"new", "none"}},
       {{"new", "none"}},
       {Order::prefix, 45, 11, {{{"none", "none"}, 41}, {{"new", "none"}, 4}}},
       {Order::subset, 45, 11, {{{"none", "none"}, 41}, {{"new", "none"}, 4}}}},
  };
  for (const Row& row : rows) {
    CAPTURE(row.scenario);
    const Keeping k{row.dir, v, row.allowed, row.done};
    const Run run = record_keeping_save<FullSync>(row.before, row.dir, next_state());
    for (const PinnedPairs& pin : {row.prefix, row.subset}) {
      CAPTURE(sim::to_string(pin.order));
      const PairTally tally = enumerate_pairs(run, pin.order, k);
      print_pairs(row.scenario, "FullSync", pin.order, tally);
      require_kept(run, tally, pin, row.calls);
    }
  }
}

TEST_CASE(
    "keep_previous, DataSync: the same two names, the new state's mode possibly the "
    "temp file's 0600 (strict POSIX, as DataSync alone)",
    "[crash]") {
  const std::vector<Version> v = three_versions();
  const Image both = {{"/d", sim::directory_node()},
                      {"/d/state.json", v[1].node},
                      {"/d/state.json.prev", v[0].node}};
  const Keeping k{"/d",
                  v,
                  {{"old", "older"}, {"old", "old"}, {"new", "old"}, {"new 0600", "old"}},
                  {{"new", "old"}, {"new 0600", "old"}}};
  const Run run = record_keeping_save<DataSync>(both, "/d", next_state());
  // As FullSync's 45 images, and as DataSync alone (43 images where a
  // FullSync save has 35): 8 more, 4 of them the new state under 0600.
  for (const Order order : {Order::prefix, Order::subset}) {
    CAPTURE(sim::to_string(order));
    const PairTally tally = enumerate_pairs(run, order, k);
    print_pairs("from (old, older)", "DataSync", order, tally);
    INFO(run.message);
    REQUIRE(run.ok);
    INFO("bad images:" << tally.first_violations());
    CHECK(tally.not_allowed == 0);
    CHECK(tally.next_run_problems == 0);
    CHECK(tally.count("old", "older") == 8);
    CHECK(tally.count("new 0600", "old") == 4);
    Tally counted;
    counted.points = tally.points;
    counted.images = tally.images;
    counted.distinct = tally.distinct;
    require_pinned(run, counted, Pinned{order, 53, 13},
                   protocol::keep_previous_then_save(Sync::data));
  }
}

TEST_CASE(
    "keep_previous: a corrupt state file loads as the previous state, and a save never "
    "keeps it as .prev",
    "[crash]") {
  std::vector<Version> v = three_versions();
  const Node& old = v[1].node;
  v.push_back({"corrupt", sim::file_node(old.data.substr(0, old.data.size() / 2), 0644), State{}});
  const Image planted = {{"/d", sim::directory_node()},
                         {"/d/state.json", v[3].node},
                         {"/d/state.json.prev", v[0].node}};
  SimFs fs = SimFs::from(planted);
  test::CaptureLogger log;
  atomic_state::StateManager<test::CaptureLogger&, State, FullSync, SimFs&> job("/d", log, fs,
                                                                                keeping_previous());
  const auto loaded = job.load_state();
  REQUIRE(loaded.has_value());
  CHECK(loaded->origin == atomic_state::LoadOrigin::previous);
  CHECK(loaded->state() == older_state());
  CHECK(loaded->corrupt_copy.rfind("/d/state.json.corrupt-", 0) == 0);
  const auto warned = log.with("state file corrupted, loading the previous state");
  REQUIRE(warned.size() == 1);
  CHECK(fs.current().at("/d/state.json") == v[3].node);  // left for the next save to replace
  CHECK(fs.current().at("/d/state.json.prev") == v[0].node);

  // The save after it: the corrupt file is not the state to keep, so .prev
  // keeps the older state throughout, and the state file goes from corrupt
  // to new. Nothing to keep (open, look, close) and a save: 18 points; 38
  // images, 10 distinct, as a first save.
  fs.start_recording();
  const atomic_state::Status saved = job.save_state(next_state());
  fs.capture("(after save_state returned)");
  const Run run{fs.crash_points(), saved.ok(), saved.message(), fs.open_descriptors(),
                fs.current()};
  const Keeping k{"/d", v, {{"corrupt", "older"}, {"new", "older"}}, {{"new", "older"}}};
  const PinnedPairs pins[] = {
      {Order::prefix, 38, 10, {{{"corrupt", "older"}, 34}, {{"new", "older"}, 4}}},
      {Order::subset, 38, 10, {{{"corrupt", "older"}, 34}, {{"new", "older"}, 4}}}};
  for (const PinnedPairs& pin : pins) {
    CAPTURE(sim::to_string(pin.order));
    const PairTally tally = enumerate_pairs(run, pin.order, k);
    print_pairs("from (corrupt, older)", "FullSync", pin.order, tally);
    require_kept(run, tally, pin,
                 protocol::keep_previous(Sync::full, protocol::Previous::nothing) +
                     protocol::save(Sync::full));
  }
}

TEST_CASE(
    "keep_previous, NoSync: what a power loss may take from the two names (reported, "
    "not required)",
    "[crash]") {
  const std::vector<Version> v = three_versions();
  const Image both = {{"/d", sim::directory_node()},
                      {"/d/state.json", v[1].node},
                      {"/d/state.json.prev", v[0].node}};
  const Keeping k{"/d", v, {{"old", "older"}, {"old", "old"}, {"new", "old"}}, {{"new", "old"}}};
  const Run run = record_keeping_save<NoSync>(both, "/d", next_state());
  INFO(run.message);
  REQUIRE(run.ok);
  for (const Order order : {Order::prefix, Order::subset}) {
    CAPTURE(sim::to_string(order));
    const PairTally tally = enumerate_pairs(run, order, k);
    print_pairs("from (old, older)", "NoSync", order, tally);
    // What was lost, image by image, summed over the crash points.
    std::size_t torn = 0, regressed = 0, lost = 0;
    for (const auto& [pair, n] : tally.pairs) {
      if (bytes_of(pair.first) != "old" && bytes_of(pair.first) != "new") torn += n;
      if (bytes_of(pair.first) == "new" && pair.second != "old") regressed += n;
    }
    for (const Image& image : sim::crash_images(run.points.back(), order))
      lost += k.pair_of(image) != Pair("new", "old");
    std::printf(
        "[crash]   NoSync keep_previous, %s: %zu images not allowed under FullSync, %zu "
        "where the next run's load or save goes wrong; %zu with a torn state file, %zu with the "
        "new "
        "state beside no .prev or the older one, %zu of %zu images after the save returned "
        "not (new, old)\n",
        sim::to_string(order), tally.not_allowed, tally.next_run_problems, torn, regressed, lost,
        sim::crash_images(run.points.back(), order).size());
    // Only the recording is required: the calls the protocol table says.
    Tally counted;
    counted.points = tally.points;
    counted.images = tally.images;
    counted.distinct = tally.distinct;
    const std::vector<std::string> calls = [&] {
      std::vector<std::string> out;
      for (const test::Op op : protocol::ops(protocol::keep_previous_then_save(Sync::none)))
        out.emplace_back(test::op_name(op));
      return out;
    }();
    std::vector<std::string> explored;
    for (std::size_t p = 0; p + 1 < run.points.size(); ++p)
      explored.push_back(run.points[p].before);
    CHECK(explored == calls);
  }
}

TEST_CASE(
    "a first run with the run lock: after a power loss anywhere in try_lock_run (making "
    "the missing directory), the load and a keep_previous save, the next run takes the "
    "lock and loads a first run or the saved state",
    "[crash]") {
  const std::vector<Version> v = three_versions();
  SimFs fs = SimFs::from(empty_directory());
  ManagerOf<FullSync> job("/d/new", NullSink{}, fs, keeping_previous());
  fs.start_recording();
  bool locked = false, first_run = false;
  atomic_state::Status saved;
  std::size_t lock_returned = 0;  // the first crash point after try_lock_run returned
  {
    auto lock = job.try_lock_run();
    lock_returned = fs.crash_points().size();
    locked = lock.has_value() && lock->owns_lock();
    const auto loaded = job.load_state();
    first_run = loaded.has_value() && loaded->origin == atomic_state::LoadOrigin::first_run;
    saved = job.save_state(next_state());
    if (lock.has_value()) lock->unlock();
  }
  fs.capture("(after the lock was released)");
  const Run run{fs.crash_points(), saved.ok(), saved.message(), fs.open_descriptors(),
                fs.current()};
  REQUIRE(locked);
  REQUIRE(first_run);
  INFO(run.message);
  REQUIRE(run.ok);
  CHECK(run.open_descriptors == 0);
  CHECK(run.after.count("/d/new/.state.json.lock") == 1);

  // The lock: open /d/new (ENOENT), look at /d and /d/new (no dangling
  // link), write_new of the empty lock file making /d/new (19 calls, no
  // write), open /d/new, take the lock (6); the load (6: with
  // keep_previous it looks for a previous state to warn of); keep_previous
  // with nothing to keep (3); the save (14); the lock's close; and after:
  // 54 points. Up to the pid's write, 40 images: 3, making /d/new 9,
  // write_new 22 (its temp file empty and 0600 throughout: 2 images where a
  // save's temp shows 5 or 9), opening and locking 6. From then on the lock
  // file's unsynced pid line may be there, or empty, half or zeros: each
  // image of the 26 points left (34 of the save's points, 12 others) four
  // times, 184. A subset adds nothing.
  const protocol::Calls calls = protocol::lock_run_creating_directory(2, {{"/d/new", "/d"}}) +
                                protocol::first_load_of_no_state(/*keeping_previous=*/true) +
                                protocol::keep_previous(Sync::full, protocol::Previous::nothing) +
                                protocol::save(Sync::full) +
                                protocol::Calls{{test::Op::close, atomic_state::Step::none, ""}};
  const Keeping k{"/d/new", v, {{"none", "none"}, {"new", "none"}}, {{"new", "none"}}};
  for (const Order order : {Order::prefix, Order::subset}) {
    CAPTURE(sim::to_string(order));
    const PairTally tally = enumerate_pairs(run, order, k, /*lock_first=*/true);
    print_pairs("run lock, load, save", "FullSync", order, tally);
    INFO("bad images:" << tally.first_violations());
    CHECK(tally.not_allowed == 0);
    CHECK(tally.next_run_problems == 0);
    CHECK(tally.count("new", "none") > 0);
    // Once try_lock_run returned, the directory it made and the lock file
    // are durable: no power loss takes them.
    std::size_t without = 0;
    for (std::size_t p = lock_returned; p < run.points.size(); ++p)
      for (const Image& image : sim::crash_images(run.points[p], order))
        without += image.count("/d/new") == 0 || image.count("/d/new/.state.json.lock") == 0;
    CHECK(without == 0);
    Tally counted;
    counted.points = tally.points;
    counted.images = tally.images;
    counted.distinct = tally.distinct;
    require_pinned(run, counted, Pinned{order, 224, 43}, calls);
  }
}

// ========================================================= DataSync ==

TEST_CASE(
    "DataSync: the bytes are always whole, but strictly by POSIX the new mode may "
    "stay the temp file's 0600",
    "[crash]") {
  // fdatasync need not write the mode (metadata not needed to read the data
  // back), and nothing else syncs the temp inode. Journaling filesystems
  // commit the inode whole, so on ext4 and xfs this does not happen; the
  // strict model keeps it, and the header documents it on DataSync. So only
  // the bytes are asserted here; the 0600 images are counted and pinned.
  const Target t{"/d/state.json", kOld, kNew};
  const Run run = record_write<DataSync>(existing_file(), t.path, t.now);
  struct Row {
    Pinned pin;
    std::size_t temp_mode;
  };
  // After the fdatasync the temp inode may keep 0600 or show 0644: one more
  // image at each later point, two more before the fsync of the directory
  // (temp beside the old file, or renamed): 43 images, 11 distinct. The new
  // bytes under 0600 at the target: before the fsync of the directory, the
  // close of the lock's descriptor and of the directory, and after the save
  // returned: 4.
  const Row rows[] = {{{Order::prefix, 43, 11}, 4}, {{Order::subset, 43, 11}, 4}};
  for (const Row& row : rows) {
    CAPTURE(sim::to_string(row.pin.order));
    const Tally tally = enumerate(run, row.pin.order, t, target_check(t));
    print("existing file", "DataSync", row.pin.order, tally);
    INFO(run.message);
    REQUIRE(run.ok);
    INFO("bad images:" << tally.first_violations());
    CHECK(tally.torn == 0);
    CHECK(tally.lost == 0);
    // Every image with a wrong mode is the new bytes under 0600, and there
    // are such images even after the save reported success.
    CHECK(tally.wrong_mode == tally.temp_mode);
    CHECK(tally.temp_mode == row.temp_mode);
    const Image kept_0600 = {{"/d", sim::directory_node()},
                             {t.path, sim::file_node(t.now.data, 0600)}};
    CHECK(sim::crash_images(run.points.back(), row.pin.order).count(kept_0600) == 1);
    require_pinned(run, tally, row.pin, protocol::save(Sync::data));
  }
}

// ================================================ the checker can fail ==

namespace {

struct BadRow {
  const char* scenario;
  Image before;
  Target target;
  protocol::Calls calls;
  Pinned pin;
  std::size_t torn, lost, wrong_mode;
};

protocol::Calls nested_save(Sync sync) {
  return protocol::first_save(sync, {{"/d/a", "/d"}, {"/d/a/b", "/d/a"}});
}

template <class Policy>
void require_caught(const char* policy, const BadRow& row) {
  CAPTURE(row.scenario, sim::to_string(row.pin.order));
  const Run run = record_write<Policy>(row.before, row.target.path, row.target.now);
  REQUIRE(run.ok);  // the save "succeeded": only a power loss shows the defect
  const Tally tally = enumerate(run, row.pin.order, row.target, target_check(row.target));
  print(row.scenario, policy, row.pin.order, tally);
  CHECK(tally.torn + tally.lost > 0);
  CHECK(tally.torn == row.torn);
  CHECK(tally.lost == row.lost);
  CHECK(tally.wrong_mode == row.wrong_mode);
  require_pinned(run, tally, row.pin, row.calls);
}

}  // namespace

TEST_CASE("NoSync: the simulator finds torn and lost files after a power loss", "[crash]") {
  // Nothing is synced: the rename can reach the disk before the bytes, and
  // after "success" the old file (or none) can come back.
  const Target over{"/d/state.json", kOld, kNew};
  const Target nested{"/d/a/b/state.json", std::nullopt, kNew};
  const BadRow rows[] = {
      // 12 calls, 13 points. After the rename (3 points) the target is any
      // of the temp's 8 versions: 6 torn ("", half, zeros, each under either
      // mode) and the new bytes under 0600. After "success" the old file,
      // alone or beside any of the temp's 8 versions, is a lost save: 9.
      {"existing file",
       existing_file(),
       over,
       protocol::save(Sync::none),
       {Order::prefix, 92, 17},
       18,
       9,
       3},
      {"existing file",
       existing_file(),
       over,
       protocol::save(Sync::none),
       {Order::subset, 92, 17},
       18,
       9,
       3},
      // No directory synced either: after "success", /d alone, /d/a alone,
      // or /d/a/b empty or with the temp's 8 versions: 11 lost.
      {"/d/a/b/state.json",
       empty_directory(),
       nested,
       nested_save(Sync::none),
       {Order::prefix, 128, 19},
       18,
       11,
       3},
      {"/d/a/b/state.json",
       empty_directory(),
       nested,
       nested_save(Sync::none),
       {Order::subset, 128, 19},
       18,
       11,
       3},
  };
  for (const BadRow& row : rows) require_caught<NoSync>("NoSync", row);
}

TEST_CASE(
    "FileSyncOnly: without the directory fsync the simulator finds saves lost after "
    "success",
    "[crash]") {
  // The bytes are synced before the rename, so nothing is torn; but neither
  // the rename nor a created directory is durable when write() returns.
  const Target over{"/d/state.json", kOld, kNew};
  const Target nested{"/d/a/b/state.json", std::nullopt, kNew};
  const BadRow rows[] = {
      // 13 calls, 14 points. After "success": the old file, alone or beside
      // the synced temp: 2 lost.
      {"existing file",
       existing_file(),
       over,
       protocol::save(Sync::file_only),
       {Order::prefix, 38, 10},
       0,
       2,
       0},
      {"existing file",
       existing_file(),
       over,
       protocol::save(Sync::file_only),
       {Order::subset, 38, 10},
       0,
       2,
       0},
      // After "success": /d alone, /d/a alone, /d/a/b empty or with the
      // temp: 4 lost.
      {"/d/a/b/state.json",
       empty_directory(),
       nested,
       nested_save(Sync::file_only),
       {Order::prefix, 76, 12},
       0,
       4,
       0},
      {"/d/a/b/state.json",
       empty_directory(),
       nested,
       nested_save(Sync::file_only),
       {Order::subset, 76, 12},
       0,
       4,
       0},
  };
  for (const BadRow& row : rows) require_caught<FileSyncOnly>("FileSyncOnly", row);
}

// ============================================= the model, by hand ==
// Small cases whose images can be counted on paper: they pin the model
// itself, so that a change to SimFs cannot quietly weaken the cases above.

namespace {

std::size_t images_now(const SimFs& fs, Order order, std::size_t* skipped = nullptr) {
  SimFs copy = fs;
  copy.capture("now");
  sim::ImageCount count;
  const std::size_t n = sim::crash_images(copy.crash_points().back(), order, &count).size();
  if (skipped) *skipped = count.skipped;
  return n;
}

}  // namespace

TEST_CASE(
    "the model: an unsynced file may be missing, durable, new, empty, half or "
    "zeros; fsync keeps its bytes and mode, fdatasync its bytes only",
    "[crash]") {
  SimFs fs = SimFs::from(empty_directory());
  const int dir = fs.open_directory("/d");
  const int fd = fs.create_file(dir, "f", 0600);
  REQUIRE(dir >= 0);
  REQUIRE(fd >= 0);
  REQUIRE(fs.write(fd, "abcd", 4) == 4);
  // no f; or f holding "" (durable, and empty), "abcd", "ab", four zeros
  CHECK(images_now(fs, Order::prefix) == 5);
  REQUIRE(fs.set_mode(fd, 0644) == 0);
  CHECK(images_now(fs, Order::prefix) == 1 + 4 * 2);  // each under 0600 or 0644
  REQUIRE(fs.sync_data(fd) == 0);
  CHECK(images_now(fs, Order::prefix) == 1 + 2);  // the bytes kept, the mode not
  REQUIRE(fs.sync_full(fd) == 0);
  CHECK(images_now(fs, Order::prefix) == 2);  // but the entry is still not durable
  REQUIRE(fs.sync_full(dir) == 0);
  CHECK(images_now(fs, Order::prefix) == 1);
  CHECK(fs.close(fd) == 0);
  CHECK(fs.close(dir) == 0);
}

TEST_CASE(
    "the model: a directory keeps a prefix or, in subset order, any subset of its "
    "changes since its fsync",
    "[crash]") {
  SimFs fs = SimFs::from(existing_file());
  const int dir = fs.open_directory("/d");
  REQUIRE(fs.close(fs.create_file(dir, "a", 0600)) == 0);
  REQUIRE(fs.close(fs.create_file(dir, "b", 0600)) == 0);
  CHECK(images_now(fs, Order::prefix) == 3);  // {}, {a}, {a, b}
  CHECK(images_now(fs, Order::subset) == 4);  // and {b}
  REQUIRE(fs.sync_full(dir) == 0);

  // create t, rename t over state.json: the rename without the create names
  // nothing and is skipped, so a subset adds no image here.
  REQUIRE(fs.close(fs.create_file(dir, "t", 0600)) == 0);
  REQUIRE(fs.rename(dir, "t", "state.json") == 0);
  std::size_t skipped = 0;
  CHECK(images_now(fs, Order::prefix, &skipped) == 3);  // old; old and t; t as state.json
  CHECK(skipped == 0);
  CHECK(images_now(fs, Order::subset, &skipped) == 3);
  CHECK(skipped == 1);
  CHECK(fs.close(dir) == 0);
}

TEST_CASE("the model: a new directory's entry is its parent's change, not its own", "[crash]") {
  SimFs fs = SimFs::from(empty_directory());
  REQUIRE(fs.make_directory("/d/x", 0755) == 0);
  const int x = fs.open_directory("/d/x");
  REQUIRE(fs.close(fs.create_file(x, "f", 0600)) == 0);
  REQUIRE(fs.sync_full(x) == 0);
  // f's entry is durable in x, but x itself may still vanish with /d's log.
  CHECK(images_now(fs, Order::prefix) == 2);
  const int d = fs.open_directory("/d");
  REQUIRE(fs.sync_full(d) == 0);
  CHECK(images_now(fs, Order::prefix) == 1);
  CHECK(fs.close(x) == 0);
  CHECK(fs.close(d) == 0);
}

TEST_CASE("the model: SimFs answers the writer's calls as POSIX would", "[crash]") {
  SimFs fs = SimFs::from(existing_file());
  const int dir = fs.open_directory("/d");
  REQUIRE(dir >= 0);
  REQUIRE(fs.close(fs.create_file(dir, "t", 0600)) == 0);
  const int root = fs.open_directory("/");
  const int file = fs.open_file(dir, "t");
  REQUIRE(root >= 0);
  REQUIRE(file >= 0);
  atomic_state::FileInfo info;
  // Each call is made as the table is built, top to bottom.
  struct Row {
    const char* call;
    int result, expected;
  };
  const Row rows[] = {
      {"open_directory of a missing path", fs.open_directory("/nope"), -ENOENT},
      {"open_directory of a file", fs.open_directory("/d/state.json"), -ENOTDIR},
      {"open_directory of a relative path", fs.open_directory("d"), -EINVAL},
      {"make_directory of an existing name", fs.make_directory("/d", 0755), -EEXIST},
      {"make_directory under a missing parent", fs.make_directory("/d/a/b", 0755), -ENOENT},
      {"create_file of an existing name", fs.create_file(dir, "state.json", 0600), -EEXIST},
      {"rename of a missing name", fs.rename(dir, "nope", "x"), -ENOENT},
      {"rename_noreplace onto an existing name", fs.rename_noreplace(dir, "t", "state.json"),
       -EEXIST},
      {"unlink of a missing name", fs.unlink(dir, "nope"), -ENOENT},
      {"file_info_at of a missing name", fs.file_info_at(dir, "nope", info), -ENOENT},
      {"close of a descriptor not open", fs.close(999), -EBADF},
      {"write to a read-only descriptor", static_cast<int>(fs.write(dir, "x", 1)), -EBADF},
      {"link of a missing name", fs.link(dir, "nope", "x"), -ENOENT},
      {"link onto an existing name", fs.link(dir, "t", "state.json"), -EEXIST},
      {"link of a directory", fs.link(root, "d", "x"), -EPERM},
      {"open_or_create of a directory", fs.open_or_create(root, "d", 0600), -EISDIR},
      {"check_writable of a file", fs.check_writable(file), -ENOTDIR},
      {"check_writable of a descriptor not open", fs.check_writable(999), -EBADF},
  };
  for (const Row& row : rows) {
    CAPTURE(row.call);
    CHECK(row.result == row.expected);
  }
  REQUIRE(fs.file_info_at(dir, "state.json", info) == 0);
  CHECK(info.type == atomic_state::FileType::regular);
  CHECK(info.size == kOld.data.size());
  const int fd = fs.open_file(dir, "state.json");
  char buffer[16] = {};
  CHECK(fs.read(fd, buffer, sizeof buffer) == 4);
  CHECK(fs.read(fd, buffer, sizeof buffer) == 0);
  CHECK(std::string(buffer) == kOld.data);
  CHECK(fs.close(fd) == 0);
  CHECK(fs.check_writable(dir) == 0);
  CHECK(fs.close(file) == 0);
  CHECK(fs.close(root) == 0);
  CHECK(fs.close(dir) == 0);
  CHECK(fs.open_descriptors() == 0);
}

TEST_CASE(
    "the model: a link is a second name for one file, kept by a power loss only once "
    "its directory is synced; both names show the same version of the file",
    "[crash]") {
  SimFs fs = SimFs::from(existing_file());
  const int dir = fs.open_directory("/d");
  REQUIRE(dir >= 0);
  REQUIRE(fs.link(dir, "state.json", "kept") == 0);
  atomic_state::FileInfo a, b;
  REQUIRE(fs.file_info_at(dir, "state.json", a) == 0);
  REQUIRE(fs.file_info_at(dir, "kept", b) == 0);
  CHECK(a.inode == b.inode);
  CHECK(a.links == 2);
  CHECK(images_now(fs, Order::prefix) == 2);  // without the link, with it
  // Renaming a name over another name of the same file does nothing, as
  // POSIX says: both names stay.
  REQUIRE(fs.rename(dir, "kept", "state.json") == 0);
  CHECK(fs.current().count("/d/kept") == 1);
  REQUIRE(fs.sync_full(dir) == 0);
  CHECK(images_now(fs, Order::prefix) == 1);

  // One inode, one choice: new bytes written through one name show under
  // both, never the old ones under one and the new under the other. The
  // file's 5 versions (old, new, empty, half, zeros), not 25.
  const int fd = fs.open_or_create(dir, "state.json", 0600);  // there: opened, not made
  REQUIRE(fd >= 0);
  REQUIRE(fs.write(fd, "NEW\n", 4) == 4);
  SimFs copy = fs;
  copy.capture("now");
  const std::set<Image> images = sim::crash_images(copy.crash_points().back(), Order::subset);
  CHECK(images.size() == 5);
  for (const Image& image : images) {
    CAPTURE(image.at("/d/state.json").data);
    CHECK(image.at("/d/state.json") == image.at("/d/kept"));
    CHECK(image.at("/d/state.json").linked_to == "/d/kept");
    CHECK(image.at("/d/state.json").mode == kOld.mode);  // open_or_create kept the mode
  }
  // What a power loss left is rebuilt with its links: one file, two names.
  SimFs rebuilt = SimFs::from(*images.begin());
  const int at = rebuilt.open_directory("/d");
  REQUIRE(rebuilt.file_info_at(at, "state.json", a) == 0);
  REQUIRE(rebuilt.file_info_at(at, "kept", b) == 0);
  CHECK(a.inode == b.inode);
  CHECK(a.links == 2);
  CHECK(rebuilt.current() == *images.begin());
  CHECK(rebuilt.close(at) == 0);
  CHECK(fs.close(fd) == 0);

  // A file open_or_create makes is a new entry, as create_file's.
  const int lock = fs.open_or_create(dir, "lock", 0600);
  REQUIRE(lock >= 0);
  REQUIRE(fs.sync_full(lock) == 0);
  CHECK(images_now(fs, Order::prefix) == 5 * 2);  // with the lock file or without
  CHECK(fs.close(lock) == 0);
  CHECK(fs.close(dir) == 0);
  CHECK(fs.open_descriptors() == 0);
}
