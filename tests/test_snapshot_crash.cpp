// Power loss at every crash point of a snapshot publish, over SimFs (see
// support/sim_fs.hpp for the pessimistic model). A directory holds gen-1
// and gen-2 (current), four files each; a SnapshotWriter opens it, adds
// four new files and publishes them (gen-1 pruned), and is destroyed.
// Before every call, and once after, every image a power loss could leave
// is checked: DIR/current is a symlink to a generation that exists and
// holds exactly the four files, all old (gen-2) or all new (gen-3), each
// whole with its mode: never torn, never dangling; and the new set once
// publish() returned. Then a SnapshotWriter opens each image, as the next
// start would: it succeeds, leaves current as it found it, with its
// generation whole, and removes every temp link, every half-built
// (.building-gen-N) or half-removed (.removing-gen-N) generation and every
// generation newer than current, keeping at most `keep` generations.
#include <cstddef>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"

namespace {

const char* const kNames[] = {"a", "b", "c", "d"};

// Long enough that a half or a zero-filled copy is plainly torn.
std::string content(int generation, const char* name) {
  std::string text;
  for (int line = 0; line < 4; ++line)
    text += "generation " + std::to_string(generation) + " file " + name + " line " +
            std::to_string(line) + "\n";
  return text;
}

Image start_image() {
  Image image = {{"/s", sim::directory_node()},
                 {"/s/.snapshot.lock", sim::file_node("", 0600)},
                 {"/s/current", sim::symlink_node("gen-2")}};
  for (int g = 1; g <= 2; ++g) {
    const std::string dir = "/s/gen-" + std::to_string(g);
    image[dir] = sim::directory_node();
    for (const char* name : kNames)
      image[dir + "/" + name] = sim::file_node(content(g, name), 0644);
  }
  return image;
}

/// Which whole set current leads to in `image`: 2 (old), 3 (new), or 0
/// when it is torn, dangling, missing or anything else; `why` says.
int resolve(const Image& image, std::string& why) {
  const auto current = image.find("/s/current");
  if (current == image.end()) return why = "no current", 0;
  if (current->second.mode != sim::kSymlinkMode) return why = "current not a symlink", 0;
  const std::string target = current->second.data;
  const int n = target == "gen-2" ? 2 : target == "gen-3" ? 3 : 0;
  if (n == 0) return why = "current names " + target, 0;
  const std::string dir = "/s/" + target;
  const auto d = image.find(dir);
  if (d == image.end() || !d->second.directory) return why = "current dangles: " + dir, 0;
  std::size_t files = 0;
  for (auto it = image.upper_bound(dir + "/");
       it != image.end() && it->first.rfind(dir + "/", 0) == 0; ++it)
    ++files;
  if (files != 4) return why = dir + " holds " + std::to_string(files) + " files", 0;
  const unsigned mode = n == 3 ? 0640 : 0644;
  for (const char* name : kNames) {
    const auto f = image.find(dir + "/" + name);
    if (f == image.end() || !f->second.same_content(sim::file_node(content(n, name), mode)))
      return why = dir + "/" + name + " torn or of the wrong mode", 0;
  }
  return n;
}

struct Counts {
  std::size_t points = 0, images = 0, old_set = 0, new_set = 0, violations = 0, opened = 0;
  std::size_t removed_generations = 0, removed_links = 0;
};

/// The next start on a crash image: open, then look at what it left.
void open_after_crash(const Image& image, int set, Counts& counts) {
  SimFs fs = SimFs::from(image);
  std::size_t generations_before = 0, links_before = 0;
  for (const auto& [path, node] : image) {
    if (path.rfind("/s/gen-", 0) == 0 && path.find('/', 3) == std::string::npos)
      ++generations_before;
    if (path.rfind("/s/.current.tmp-", 0) == 0) ++links_before;
  }
  {
    auto writer = SnapshotWriter<FullSync, SimFs&>::open("/s", fs);
    CHECK(writer.has_value());
    if (!writer) return;
    CHECK(writer->current() == static_cast<std::uint64_t>(set));
  }
  ++counts.opened;
  const Image after = fs.current();
  std::string why;
  CHECK(resolve(after, why) == set);
  std::size_t generations_after = 0;
  for (const auto& [path, node] : after) {
    CHECK(path.rfind("/s/.current.tmp-", 0) != 0);
    CHECK(path.rfind("/s/.building-gen-", 0) != 0);  // half-built
    CHECK(path.rfind("/s/.removing-gen-", 0) != 0);  // half-removed
    if (path.rfind("/s/gen-", 0) == 0 && path.find('/', 3) == std::string::npos) {
      ++generations_after;
      CHECK(path <= "/s/gen-" + std::to_string(set));  // nothing newer than current
    }
  }
  CHECK(generations_after <= 2);
  CHECK(fs.open_descriptors() == 0);
  counts.removed_generations += generations_before - generations_after;
  counts.removed_links += links_before;
}

/// `last_points`: only the last of the crash points (0: all of them).
template <class Policy>
Counts explore(Order order, bool open_each, std::size_t last_points = 0) {
  SimFs fs = SimFs::from(start_image());
  fs.start_recording();
  {
    auto writer = SnapshotWriter<Policy, SimFs&>::open("/s", fs);
    REQUIRE(writer.has_value());
    for (const char* name : kNames) REQUIRE(writer->add(name, content(3, name), 0640).ok());
    REQUIRE(writer->publish().ok());
    fs.capture("publish returned");
  }
  fs.capture("writer destroyed");
  Counts counts;
  const auto& points = fs.crash_points();
  const std::size_t first = last_points == 0 ? 0 : points.size() - last_points;
  for (std::size_t p = first; p < points.size(); ++p) {
    const bool published = p + 2 >= points.size();
    std::set<std::string> shapes;  // what the next open sees, file contents aside
    for (const Image& image : sim::crash_images(points[p], order)) {
      ++counts.images;
      std::string why;
      const int set = resolve(image, why);
      if (set == 0 || (published && set != 3)) {
        ++counts.violations;
        if (counts.violations <= 5)
          UNSCOPED_INFO("before " << points[p].before << " (point " << p << "): " << why);
        continue;
      }
      ++(set == 2 ? counts.old_set : counts.new_set);
      if (!open_each) continue;
      std::string shape;
      for (const auto& [path, node] : image)
        shape += path + (node.mode == sim::kSymlinkMode ? "->" + node.data : "") + "\n";
      if (shapes.insert(shape).second) open_after_crash(image, set, counts);
    }
  }
  counts.points = points.size() - first;
  return counts;
}

void report(const char* what, const Counts& c) {
  std::printf(
      "%s: %zu crash points, %zu images: %zu old set, %zu new set, %zu torn or dangling; "
      "%zu next opens (%zu generations and %zu temp links removed)\n",
      what, c.points, c.images, c.old_set, c.new_set, c.violations, c.opened, c.removed_generations,
      c.removed_links);
}

}  // namespace

TEST_CASE("after power loss at every point of a publish, current is one whole generation",
          "[snapshot-crash]") {
  for (const Order order : {Order::prefix, Order::subset}) {
    CAPTURE(sim::to_string(order));
    const Counts c = explore<FullSync>(order, true);
    report(order == Order::prefix ? "FullSync publish, prefix order"
                                  : "FullSync publish, subset order",
           c);
    CHECK(c.violations == 0);
    CHECK(c.old_set > 0);
    CHECK(c.new_set > 0);
    CHECK(c.opened > 0);
  }
}

TEST_CASE("the same enumeration catches a publish that does not sync (NoSync)",
          "[snapshot-crash]") {
  const Counts c = explore<NoSync>(Order::prefix, false, 1);  // once publish() returned
  report("NoSync publish, prefix order, after it returned", c);
  CHECK(c.violations > 0);  // the explorer can see a torn set
}

TEST_CASE("the model: a symlink renamed over a symlink is old or new, never missing",
          "[snapshot-crash]") {
  SimFs fs =
      SimFs::from({{"/s", sim::directory_node()}, {"/s/current", sim::symlink_node("gen-1")}});
  const int dir = fs.open_directory("/s");
  REQUIRE(dir >= 0);
  REQUIRE(fs.make_symlink("gen-2", dir, ".current.tmp-abcdef") == 0);
  char buffer[16];
  CHECK(fs.read_link(dir, ".current.tmp-abcdef", buffer, sizeof buffer) == 5);
  CHECK(fs.read_link(dir, ".current.tmp-abcdef", buffer, 5) == -ENAMETOOLONG);
  CHECK(fs.make_directory_at(dir, "gen-2", 0755) == 0);
  CHECK(fs.open_directory_at(dir, "current") == -ELOOP);
  fs.start_recording();
  REQUIRE(fs.rename(dir, ".current.tmp-abcdef", "current") == 0);
  fs.capture("after");
  std::set<std::string> seen;
  for (const Image& image : sim::crash_images(fs.crash_points().back(), Order::subset)) {
    REQUIRE(image.count("/s/current") == 1);
    seen.insert(image.at("/s/current").data);
  }
  CHECK(seen == std::set<std::string>{"gen-1", "gen-2"});
  CHECK(fs.remove_directory(dir, "gen-2") == 0);
  CHECK(fs.remove_directory(dir, "gen-2") == -ENOENT);
  CHECK(fs.read_link(dir, "gen-2", buffer, sizeof buffer) == -ENOENT);
  CHECK(fs.close(dir) == 0);
}
