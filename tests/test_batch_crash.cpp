// Power loss at every crash point of a batch ([batch-crash]), over
// support/sim_fs.hpp's pessimistic model: before each call of a batch
// commit of three outputs and a state (and once after it returned), every
// image a power loss could leave is built and checked. Each file is its old
// version or its new one, whole, never torn; the state (the last file) is
// never newer than a file added before it; once the commit returned, every
// file is new. The same for StateManager::save_state(state, batch), with
// and without keep_previous (the previous state never newer than the state,
// never lost), and the next run's load on each image.
#include <cstdio>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/crash_images.hpp"
#include "support/go_service_state.hpp"
#include "support/names.hpp"

using test::crash::recorded;
using test::crash::Run;

namespace {

// Three outputs in /d/out, the state last in /d/state (two directories, as
// protocol::batch_three_and_one has them).
const char* const kPaths[] = {"/d/out/full.json", "/d/out/summary.json", "/d/out/history.json",
                              "/d/state/state.json"};
constexpr std::size_t kFiles = 4;

std::string body(std::size_t i, const char* version) {
  std::string text;
  for (int line = 0; line < 6; ++line)
    text += std::string(version) + " file " + std::to_string(i) + " line " + std::to_string(line) +
            ": whole or not at all\n";
  return text;
}

Image before_image() {
  Image image{{"/d", sim::directory_node()},
              {"/d/out", sim::directory_node()},
              {"/d/state", sim::directory_node()}};
  for (std::size_t i = 0; i < kFiles; ++i) image[kPaths[i]] = sim::file_node(body(i, "old"), 0640);
  return image;
}

Node new_node(std::size_t i) { return sim::file_node(body(i, "new"), 0644); }

template <class Policy>
Run record_batch() {
  SimFs fs = SimFs::from(before_image());
  Batch<Policy, SimFs&> batch(fs);
  for (std::size_t i = 0; i < kFiles; ++i) {
    const std::string data = new_node(i).data;
    REQUIRE(batch.add(kPaths[i], data).ok());
  }
  fs.start_recording();  // the commit's calls (the adds touch no target)
  const as::Status status = batch.commit();
  fs.capture("(after the commit returned)");
  return recorded(fs, status);
}

/// The paths the checks judge: the images leave out the temp files beside
/// them (each of four unsynced temp files has up to ten versions), which
/// matter only once renamed to one of these.
const std::set<std::string>& judged_targets() {
  static const std::set<std::string> paths(std::begin(kPaths), std::end(kPaths));
  return paths;
}

enum class Seen { old, fresh, bad };

Seen classify(const Image& image, const std::string& path, const Node& old_node,
              const Node& fresh) {
  const auto it = image.find(path);
  if (it == image.end()) return Seen::bad;
  // Content and mode: a file may have a second name (the state's .prev).
  if (it->second.same_content(fresh)) return Seen::fresh;
  if (it->second.same_content(old_node)) return Seen::old;
  return Seen::bad;
}

struct Tally {
  std::size_t points = 0, images = 0, distinct = 0;
  std::size_t torn = 0;         // a file neither old nor new (or gone)
  std::size_t state_ahead = 0;  // the state new beside an older output
  std::size_t lost = 0;         // not all new once the commit succeeded
  std::size_t all_old = 0, all_new = 0, mixed = 0;
  std::vector<std::string> violations;
  std::size_t bad() const { return torn + state_ahead + lost; }
};

Tally enumerate(const Run& run, Order order) {
  Tally t;
  std::set<Image> seen_images;
  const Image old_image = before_image();
  for (std::size_t p = 0; p < run.points.size(); ++p) {
    const bool after_success = run.ok && p + 1 == run.points.size();
    const std::set<Image> images =
        sim::crash_images(run.points[p], order, nullptr, &judged_targets());
    ++t.points;
    for (const Image& image : images) {
      ++t.images;
      seen_images.insert(image);
      std::size_t fresh = 0;
      bool torn = false;
      std::vector<Seen> seen;
      for (std::size_t i = 0; i < kFiles; ++i) {
        seen.push_back(classify(image, kPaths[i], old_image.at(kPaths[i]), new_node(i)));
        torn = torn || seen.back() == Seen::bad;
        fresh += seen.back() == Seen::fresh;
      }
      bool ahead = false;
      if (seen[kFiles - 1] == Seen::fresh)
        for (std::size_t i = 0; i + 1 < kFiles; ++i) ahead = ahead || seen[i] != Seen::fresh;
      const bool lost = after_success && fresh != kFiles;
      t.torn += torn;
      t.state_ahead += ahead;
      t.lost += lost;
      t.all_old += fresh == 0;
      t.all_new += fresh == kFiles;
      t.mixed += fresh != 0 && fresh != kFiles;
      if ((torn || ahead || lost) && t.violations.size() < 6) {
        std::string v = "point " + std::to_string(p) + " (before " + run.points[p].before + "):";
        for (std::size_t i = 0; i < kFiles; ++i)
          v += std::string(" ") + kPaths[i] + "=" +
               (seen[i] == Seen::fresh ? "new"
                : seen[i] == Seen::old ? "old"
                                       : "TORN");
        t.violations.push_back(v);
      }
    }
  }
  t.distinct = seen_images.size();
  return t;
}

void print(const char* what, Order order, const Tally& t) {
  std::printf(
      "[batch-crash] %-40s %-6s %3zu points %5zu images %4zu distinct | all old %zu, mixed %zu, "
      "all new %zu | torn %zu, state ahead %zu, lost %zu\n",
      what, sim::to_string(order), t.points, t.images, t.distinct, t.all_old, t.mixed, t.all_new,
      t.torn, t.state_ahead, t.lost);
}

std::string violations(const Tally& t) {
  std::string out;
  for (const std::string& v : t.violations) out += "\n  " + v;
  return out;
}

// The commit's calls: batch_three_and_one without its adds, as SimFs names them.
std::vector<std::string> commit_ops(Sync sync) {
  std::vector<std::string> out;
  for (test::Op op : protocol::ops(protocol::calls_of(protocol::batch_commit(sync, {0, 0, 0, 1}))))
    out.emplace_back(test::op_name(op));
  return out;
}

}  // namespace

TEST_CASE(
    "FullSync batch of 3 outputs and a state: each file old or new, the state never ahead of "
    "an output, at every crash point",
    "[batch-crash]") {
  const Run run = record_batch<FullSync>();
  INFO(run.message);
  REQUIRE(run.ok);
  CHECK(run.open_descriptors == 0);
  std::vector<std::string> explored;
  for (std::size_t p = 0; p + 1 < run.points.size(); ++p) explored.push_back(run.points[p].before);
  CHECK(explored == commit_ops(Sync::full));
  for (const Order order : {Order::prefix, Order::subset}) {
    CAPTURE(sim::to_string(order));
    const Tally t = enumerate(run, order);
    print("batch 3 + 1, FullSync", order, t);
    INFO("violations:" << violations(t));
    CHECK(t.bad() == 0);
    CHECK(t.all_old > 0);
    CHECK(t.mixed > 0);  // outputs new, state old: the order is what protects
    CHECK(t.all_new > 0);
    CHECK(t.points == explored.size() + 1);
    CHECK(sim::crash_images(run.points.back(), order, nullptr, &judged_targets()).size() == 1);
  }
}

TEST_CASE("NoSync batch: the explorer finds the state ahead of its outputs, and torn files",
          "[batch-crash]") {
  // The check above can fail: without syncs, a power loss may keep the
  // state's rename and lose an output's bytes.
  const Run run = record_batch<NoSync>();
  REQUIRE(run.ok);
  const Tally t = enumerate(run, Order::prefix);
  print("batch 3 + 1, NoSync", Order::prefix, t);
  CHECK(t.torn > 0);
  CHECK(t.state_ahead > 0);
}

// ====================================== save_state(state, batch) ==

namespace {

template <class Policy>
using Manager = as::StateManager<NullSink, State, Policy, SimFs&>;

State next_state() {
  State s = test::go_service_state();
  s.last_updated += 3600;
  s.last_updated_iso = as::to_rfc3339(s.last_updated);
  s.last_protocol_count += 2;
  return s;
}

struct StateRun {
  Run run;
  Node state_new;
};

StateRun record_save_state(bool keep_previous) {
  Image start = before_image();
  start.erase(kPaths[3]);
  start["/d/state/state.json"] = sim::file_node(test::kGoServiceStateText, 0644);
  SimFs fs = SimFs::from(start);
  as::StateOptions options;
  options.keep_previous = keep_previous;
  Manager<FullSync> manager("/d/state", NullSink{}, fs, options);
  REQUIRE(manager.load_state().has_value());
  Batch<FullSync, SimFs&> batch(fs);
  for (std::size_t i = 0; i + 1 < kFiles; ++i) REQUIRE(batch.add(kPaths[i], new_node(i).data).ok());
  fs.start_recording();
  const as::Status status = manager.save_state(next_state(), batch);
  fs.capture("(after save_state returned)");
  Run run = recorded(fs, status);
  const Node state_new = run.after.count(kPaths[3]) ? run.after.at(kPaths[3]) : Node{};
  return {run, state_new};
}

}  // namespace

TEST_CASE(
    "save_state(state, batch): the next run loads the old state or the new one, never one "
    "ahead of the outputs; with keep_previous .prev never ahead of the state",
    "[batch-crash]") {
  for (const bool keep : {false, true}) {
    CAPTURE(keep);
    const StateRun sr = record_save_state(keep);
    const Run& run = sr.run;
    INFO(run.message);
    REQUIRE(run.ok);
    CHECK(run.open_descriptors == 0);
    const Node state_old = sim::file_node(test::kGoServiceStateText, 0644);
    const std::string prev = std::string(kPaths[3]) + ".prev";
    for (const Order order : {Order::prefix, Order::subset}) {
      CAPTURE(sim::to_string(order));
      std::size_t points = 0, images = 0, bad = 0, loads_new = 0, loads_old = 0, prev_seen = 0;
      std::vector<std::string> problems;
      std::map<Image, std::string> judged;
      std::set<std::string> judged_paths = judged_targets();
      judged_paths.insert(prev);
      for (std::size_t p = 0; p < run.points.size(); ++p) {
        const bool after_success = p + 1 == run.points.size();
        ++points;
        for (const Image& image : sim::crash_images(run.points[p], order, nullptr, &judged_paths)) {
          ++images;
          auto found = judged.find(image);
          if (found == judged.end()) {
            std::string problem;
            std::size_t fresh_outputs = 0;
            for (std::size_t i = 0; i + 1 < kFiles; ++i) {
              const Seen s = classify(image, kPaths[i], before_image().at(kPaths[i]), new_node(i));
              if (s == Seen::bad) problem += std::string(" ") + kPaths[i] + " torn;";
              fresh_outputs += s == Seen::fresh;
            }
            const Seen st = classify(image, kPaths[3], state_old, sr.state_new);
            if (st == Seen::bad) problem += " state torn;";
            if (st == Seen::fresh && fresh_outputs != kFiles - 1) problem += " state ahead;";
            if (after_success && (st != Seen::fresh || fresh_outputs != kFiles - 1))
              problem += " lost after success;";
            if (image.count(prev)) {
              ++prev_seen;
              if (!keep) problem += " a .prev without keep_previous;";
              // .prev is the old state (the state's predecessor), never the new one.
              if (!(image.at(prev).same_content(state_old))) problem += " .prev not the old state;";
            } else if (keep && st == Seen::fresh) {
              problem += " the new state without its .prev;";
            }
            // The next run: its load reads the old state or the new one.
            SimFs disk = SimFs::from(image);
            Manager<FullSync> reader("/d/state", NullSink{}, disk, [&] {
              as::StateOptions o;
              o.keep_previous = keep;
              return o;
            }());
            const auto loaded = reader.load_state();
            if (!loaded)
              problem += " load failed: " + loaded.status().message();
            else if (*loaded == next_state())
              ++loads_new;
            else if (*loaded == test::go_service_state())
              ++loads_old;
            else
              problem += " load gave neither state;";
            found = judged.emplace(image, problem).first;
          }
          if (!found->second.empty()) {
            ++bad;
            if (problems.size() < 6)
              problems.push_back("point " + std::to_string(p) + " (before " + run.points[p].before +
                                 "):" + found->second);
          }
        }
      }
      std::printf(
          "[batch-crash] save_state(state, batch)%-17s %-6s %3zu points %5zu images %4zu "
          "distinct | loads old %zu new %zu | .prev seen %zu | bad %zu\n",
          keep ? ", keep_previous" : "", sim::to_string(order), points, images, judged.size(),
          loads_old, loads_new, prev_seen, bad);
      std::string all;
      for (const std::string& s : problems) all += "\n  " + s;
      INFO("problems:" << all);
      CHECK(bad == 0);
      CHECK(loads_new > 0);
      CHECK(loads_old > 0);
    }
  }
}
