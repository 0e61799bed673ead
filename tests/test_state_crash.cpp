// Power loss at every crash point of a StateManager's run, over SimFs (see
// support/sim_fs.hpp for the persistence model): a load that sweeps a
// killed save's temp file, then a save; after each image the next run's
// load_state gives the old state or the new one. A save with keep_previous
// changes two names, state.json and state.json.prev: every pair a power
// loss may leave is counted, and the next run's load and save checked on
// each image; so is a first run taking the run lock in a directory it has
// to make. The checks of one target and the pinned coverage are
// support/crash_images.hpp's, as for the writer (test_writer_crash.cpp).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/crash_images.hpp"
#include "support/go_service_state.hpp"
#include "support/names.hpp"

using namespace test::crash;

namespace {

using Manager = atomic_state::StateManager<NullSink, State, FullSync, SimFs&>;

}  // namespace

// ============================================== StateManager: a job's run ==

namespace {

State next_state() {
  State s = test::go_service_state();
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
          {"/d/state.json", sim::file_node(test::kGoServiceStateText, 0644)},
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
  REQUIRE(*loaded == test::go_service_state());
  const atomic_state::Status saved = job.save_state(next_state());
  fs.capture("(after save_state returned)");
  Run run = recorded(fs, saved);
  REQUIRE(run.after.count("/d/state.json") == 1);
  const Target t{"/d/state.json", sim::file_node(test::kGoServiceStateText, 0644),
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
    const bool as_seen = (seen == Seen::old && *state == test::go_service_state()) ||
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
  // and the directory's close (6); the save (12); and after: 28 points. The
  // sweep's unlink joins /d's log ahead of the save's changes, so in subset
  // order the save can survive without it, the stale temp file beside the
  // new state: 6 distinct images, not 4.
  const Pinned pins[] = {{Order::prefix, 51, 4}, {Order::subset, 56, 6}};
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
  State s = test::go_service_state();
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
          {"old", saved_node(test::go_service_state()), test::go_service_state()},
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
  return recorded(fs, saved);
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
      // renamed and the directory synced, (new, old) (4). 28 images, 5
      // distinct: (old, older) with and without the link, (old, old) alone
      // and beside the named temp file (unnamed until then), (new, old). A subset adds
      // nothing: the link's rename without the link is skipped.
      {"from (old, older)",
       both,
       "/d",
       protocol::keep_previous_then_save(Sync::full),
       {{"old", "older"}, {"old", "old"}, {"new", "old"}},
       {{"new", "old"}},
       {Order::prefix, 28, 5, {{{"old", "older"}, 8}, {{"old", "old"}, 16}, {{"new", "old"}, 4}}},
       {Order::subset, 28, 5, {{{"old", "older"}, 8}, {{"old", "old"}, 16}, {{"new", "old"}, 4}}}},
      // The same calls; "none" in the place of the older state.
      {"from (old, none)",
       state_only,
       "/d",
       protocol::keep_previous_then_save(Sync::full),
       {{"old", "none"}, {"old", "old"}, {"new", "old"}},
       {{"new", "old"}},
       {Order::prefix, 28, 5, {{{"old", "none"}, 8}, {{"old", "old"}, 16}, {{"new", "old"}, 4}}},
       {Order::subset, 28, 5, {{{"old", "none"}, 8}, {{"old", "old"}, 16}, {{"new", "old"}, 4}}}},
      // Nothing to keep: open, look, close, then a first save (12): 16
      // points, 21 images (3, and a first save's 18), 3 distinct.
      {"first save",
       d,
       "/d",
       protocol::keep_previous(Sync::full, protocol::Previous::nothing) +
           protocol::save(Sync::full),
       {{"none", "none"}, {"new", "none"}},
       {{"new", "none"}},
       {Order::prefix, 21, 3, {{{"none", "none"}, 17}, {{"new", "none"}, 4}}},
       {Order::subset, 21, 3, {{{"none", "none"}, 17}, {{"new", "none"}, 4}}}},
      // No directory: keep_previous's open fails, then a first save into
      // the missing /d/new (18 calls): 20 points.
      {"first save, no directory",
       d,
       "/d/new",
       protocol::keep_previous(Sync::full, protocol::Previous::no_directory) +
           protocol::first_save(Sync::full, {{"/d/new", "/d"}}),
       {{"none", "none"}, {"new", "none"}},
       {{"new", "none"}},
       {Order::prefix, 28, 4, {{{"none", "none"}, 24}, {{"new", "none"}, 4}}},
       {Order::subset, 28, 4, {{{"none", "none"}, 24}, {{"new", "none"}, 4}}}},
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
  // As FullSync's 28 images, and as DataSync alone (25 images where a
  // FullSync save has 18): 7 more, 4 of them the new state under 0600.
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
    require_pinned(run, counted, Pinned{order, 35, 7},
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
  test::CaptureSink log;
  atomic_state::StateManager<test::CaptureSink&, State, FullSync, SimFs&> job("/d", log, fs,
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
  // to new. Nothing to keep (open, look, the corrupt file read again to
  // see that it still is not a state, close) and a save: 21 points; 26
  // images, 3 distinct, as a first save and five reads.
  fs.start_recording();
  const atomic_state::Status saved = job.save_state(next_state());
  fs.capture("(after save_state returned)");
  const Run run = recorded(fs, saved);
  const Keeping k{"/d", v, {{"corrupt", "older"}, {"new", "older"}}, {{"new", "older"}}};
  const PinnedPairs pins[] = {
      {Order::prefix, 26, 3, {{{"corrupt", "older"}, 22}, {{"new", "older"}, 4}}},
      {Order::subset, 26, 3, {{{"corrupt", "older"}, 22}, {{"new", "older"}, 4}}}};
  for (const PinnedPairs& pin : pins) {
    CAPTURE(sim::to_string(pin.order));
    const PairTally tally = enumerate_pairs(run, pin.order, k);
    print_pairs("from (corrupt, older)", "FullSync", pin.order, tally);
    require_kept(run, tally, pin,
                 protocol::keep_previous(Sync::full, protocol::Previous::corrupt) +
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
  const Run run = recorded(fs, saved);
  REQUIRE(locked);
  REQUIRE(first_run);
  INFO(run.message);
  REQUIRE(run.ok);
  CHECK(run.open_descriptors == 0);
  CHECK(run.after.count("/d/new/.state.json.lock") == 1);

  // The lock: open /d/new (ENOENT), look at /d and /d/new (no dangling
  // link), write_new of the empty lock file making /d/new (17 calls, no
  // write), open /d/new, take the lock (6; 7 as root, who looks whose
  // directory it is); the load (6: with keep_previous it looks for a
  // previous state to warn of); keep_previous with nothing to keep (3); the
  // save (12); the lock's close; and after: 50 points (51 as root). The
  // temp files are unnamed until their links, so a point before a link
  // shows one image where a named temp file showed 2 to 9; from the pid's
  // write on, the lock file's unsynced pid line may be there, or empty,
  // half or zeros: each image four times. 150 images (151 as root), 15
  // distinct. A subset adds nothing.
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
    require_pinned(run, counted,
                   Pinned{order, ::geteuid() == 0 ? std::size_t{151} : std::size_t{150}, 15},
                   calls);
  }
}
