// The exact calls of a SnapshotWriter, against
// support/snapshot_protocol.hpp: a 2-file FullSync publish (descriptors,
// names, modes, the symlink's target), DataSync and NoSync publishes, and
// an open over a killed publisher's leftovers.
#include <cstddef>
#include <string>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/names.hpp"
#include "support/snapshot_dir.hpp"
#include "support/snapshot_protocol.hpp"

namespace fs = test::fs;
using namespace test::snapshot;

namespace {

template <class Policy>
FaultFs publish_two(const fs::path& dir) {
  FaultFs fs;
  {
    auto writer = SnapshotWriter<Policy, FaultFs&>::open(dir.string(), fs);
    REQUIRE(writer.has_value());
    REQUIRE(writer->add("a", "new a").ok());
    REQUIRE(writer->add("b", "new b", 0640).ok());
    REQUIRE(writer->publish().ok());
  }
  CHECK(fs.open_descriptors().empty());
  return fs;
}

}  // namespace

TEST_CASE("a 2-file FullSync publish makes exactly the calls of snapshot_protocol.hpp",
          "[snapshot-trace]") {
  TempDir dir;
  two_generations(dir.path());
  const FaultFs fs = publish_two<FullSync>(dir.path());
  REQUIRE(fs.ops() == protocol::ops(protocol::snapshot_two_files(protocol::Sync::full)));
  const auto& c = fs.calls;
  const auto fd = [&](std::size_t i) { return static_cast<int>(c[i].result); };
  // open: the directory, its claim, its sweep (not looking at the claim),
  // the lock, current, the listing.
  CHECK(c[0].name == dir.path().string());
  const int dir_fd = fd(0);
  CHECK(c[2].name.rfind(".tmp-", 0) == 0);  // the claim
  const int claim_fd = fd(2);
  CHECK(c[5].fd == dir_fd);  // the sweep's listing
  CHECK(c[6].fd == dir_fd);
  CHECK(c[6].name == ".snapshot.lock");
  CHECK(c[6].mode == 0600);
  const int lock_fd = fd(6);
  CHECK(c[7].fd == lock_fd);  // looked at: a regular file, 0600
  CHECK(c[8].fd == lock_fd);
  CHECK(c[9].fd == dir_fd);
  CHECK(c[9].name == "current");
  CHECK(c[10].fd == dir_fd);
  // first add: .building-gen-3 made with its mode, opened (not followed),
  // set exactly.
  CHECK(c[11].fd == dir_fd);
  CHECK(c[12].name == ".building-gen-3");
  CHECK(c[12].mode == 0755);
  CHECK(c[13].name == ".building-gen-3");
  const int gen_fd = fd(13);
  CHECK(c[14].fd == gen_fd);
  CHECK(c[14].mode == 0755);
  // each file created 0600 in the generation, written.
  CHECK(c[15].fd == gen_fd);
  CHECK(c[15].name == "a");
  CHECK(c[15].mode == 0600);
  const int a_fd = fd(15);
  CHECK(c[16].fd == a_fd);
  CHECK(c[17].name == "b");
  const int b_fd = fd(17);
  CHECK(c[18].fd == b_fd);
  // publish: modes, writeback, syncs, closes of a then b.
  CHECK((c[19].fd == a_fd && c[19].mode == 0644));
  CHECK((c[20].fd == b_fd && c[20].mode == 0640));
  CHECK((c[21].fd == a_fd && c[22].fd == b_fd));
  CHECK((c[23].fd == a_fd && c[24].fd == b_fd));
  CHECK((c[25].fd == a_fd && c[26].fd == b_fd));
  CHECK(c[27].fd == gen_fd);                             // the generation's entries durable ...
  CHECK((c[28].fd == dir_fd && c[28].name == "gen-3"));  // ... before it is named gen-3
  CHECK(c[29].fd == dir_fd);                             // ... and before the link naming it exists
  CHECK(c[29].name.rfind(".current.tmp-", 0) == 0);
  CHECK(c[29].name.size() == 19);
  REQUIRE(fs.link_targets.size() == 1);
  CHECK(fs.link_targets[0] == "gen-3");  // relative: the directory can move
  CHECK(c[30].fd == dir_fd);             // the link and gen-3's name durable ...
  CHECK(c[31].fd == dir_fd);             // ... before the rename over current
  CHECK(c[31].name == c[29].name);
  CHECK(c[32].fd == gen_fd);
  CHECK(c[33].fd == dir_fd);  // the rename durable before anything is removed
  CHECK(c[34].fd == dir_fd);
  CHECK(c[35].name == "gen-1");
  const int old_fd = fd(35);
  CHECK(c[36].fd == old_fd);                             // locked: no reader holds it
  CHECK((c[37].fd == dir_fd && c[37].name == "gen-1"));  // renamed away while locked
  CHECK(c[38].fd == old_fd);
  CHECK((c[39].fd == old_fd && c[39].name == "a"));
  CHECK((c[40].fd == dir_fd && c[40].name == ".removing-gen-1"));
  CHECK(c[41].fd == old_fd);  // the lock held to the end
  // the destructor: the lock, then the claim's file before its descriptor.
  CHECK(c[42].fd == lock_fd);
  CHECK((c[43].fd == dir_fd && c[43].name == c[2].name));
  CHECK(c[44].fd == claim_fd);
  CHECK(c[45].fd == dir_fd);
  CHECK(read_current(dir.path()) == Files{{"a", "new a"}, {"b", "new b"}});
}

TEST_CASE("DataSync and NoSync publishes make the calls of snapshot_protocol.hpp",
          "[snapshot-trace]") {
  {
    TempDir dir;
    two_generations(dir.path());
    const FaultFs fs = publish_two<DataSync>(dir.path());
    CHECK(fs.ops() == protocol::ops(protocol::snapshot_two_files(protocol::Sync::data)));
  }
  {
    TempDir dir;
    two_generations(dir.path());
    const FaultFs fs = publish_two<NoSync>(dir.path());
    CHECK(fs.ops() == protocol::ops(protocol::snapshot_two_files(protocol::Sync::none)));
    CHECK(fs.count(Op::sync_full) + fs.count(Op::sync_data) + fs.count(Op::start_writeback) == 0);
    CHECK(read_current(dir.path()) == Files{{"a", "new a"}, {"b", "new b"}});
  }
}

TEST_CASE("an open over a killed publisher's leftovers makes the calls of snapshot_protocol.hpp",
          "[snapshot-trace]") {
  TempDir dir;
  two_generations(dir.path());
  make_building(dir.path(), 3, {{"a", "half"}});
  fs::create_symlink("gen-3", dir / ".current.tmp-AAAAAA");
  FaultFs fs;
  { REQUIRE((SnapshotWriter<FullSync, FaultFs&>::open(dir.path().string(), fs).has_value())); }
  CHECK(fs.ops() == protocol::ops(protocol::snapshot_open_sweeping()));
  CHECK(fs.open_descriptors().empty());
  CHECK(generations(dir.path()) == std::vector<std::uint64_t>{1, 2});
  CHECK(temp_links(dir.path()).empty());
}
