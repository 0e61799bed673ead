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
  CHECK(c[9].fd == dir_fd);  // looked at: its device, which a generation emptied must be on
  CHECK(c[10].fd == dir_fd);
  CHECK(c[10].name == "current");
  CHECK(c[11].fd == dir_fd);
  // first add: .building-gen-3 made with its mode, opened (not followed),
  // set exactly.
  CHECK(c[12].fd == dir_fd);
  CHECK(c[13].name == ".building-gen-3");
  CHECK(c[13].mode == 0755);
  CHECK(c[14].name == ".building-gen-3");
  const int gen_fd = fd(14);
  CHECK(c[15].fd == gen_fd);
  CHECK(c[15].mode == 0755);
  // each file created 0600 in the generation, written.
  CHECK(c[16].fd == gen_fd);
  CHECK(c[16].name == "a");
  CHECK(c[16].mode == 0600);
  const int a_fd = fd(16);
  CHECK(c[17].fd == a_fd);
  CHECK(c[18].name == "b");
  const int b_fd = fd(18);
  CHECK(c[19].fd == b_fd);
  // publish: modes, writeback, syncs, closes of a then b.
  CHECK((c[20].fd == a_fd && c[20].mode == 0644));
  CHECK((c[21].fd == b_fd && c[21].mode == 0640));
  CHECK((c[22].fd == a_fd && c[23].fd == b_fd));
  CHECK((c[24].fd == a_fd && c[25].fd == b_fd));
  CHECK((c[26].fd == a_fd && c[27].fd == b_fd));
  CHECK(c[28].fd == gen_fd);                             // the generation's entries durable ...
  CHECK((c[29].fd == dir_fd && c[29].name == "gen-3"));  // ... before it is named gen-3
  CHECK(c[30].fd == dir_fd);                             // ... and before the link naming it exists
  CHECK(c[30].name.rfind(".current.tmp-", 0) == 0);
  CHECK(c[30].name.size() == 19);
  REQUIRE(fs.link_targets.size() == 1);
  CHECK(fs.link_targets[0] == "gen-3");  // relative: the directory can move
  CHECK(c[31].fd == dir_fd);             // the link and gen-3's name durable ...
  CHECK(c[32].fd == dir_fd);             // ... before the rename over current
  CHECK(c[32].name == c[30].name);
  CHECK(c[33].fd == gen_fd);
  CHECK(c[34].fd == dir_fd);  // the rename durable before anything is removed
  CHECK(c[35].fd == dir_fd);
  CHECK(c[36].name == "gen-1");
  const int old_fd = fd(36);
  CHECK(c[37].fd == old_fd);                             // locked: no reader holds it
  CHECK((c[38].fd == dir_fd && c[38].name == "gen-1"));  // renamed away while locked
  CHECK(c[39].fd == old_fd);  // looked at: on the directory's device, not a mount
  CHECK(c[40].fd == old_fd);
  CHECK((c[41].fd == old_fd && c[41].name == "a"));
  CHECK((c[42].fd == dir_fd && c[42].name == ".removing-gen-1"));
  CHECK(c[43].fd == old_fd);  // the lock held to the end
  // the destructor: the lock, then the claim's file before its descriptor.
  CHECK(c[44].fd == lock_fd);
  CHECK((c[45].fd == dir_fd && c[45].name == c[2].name));
  CHECK(c[46].fd == claim_fd);
  CHECK(c[47].fd == dir_fd);
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
