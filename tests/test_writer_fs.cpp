// AtomicWriter against the real filesystem, in a fresh directory per case.
#include <fcntl.h>
#include <grp.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "atomic_state.hpp"
#include "support/catch.hpp"
#include "support/child.hpp"
#include "support/mounts.hpp"
#include "support/names.hpp"

namespace {

std::string patterned(std::size_t size) {
  std::string data(size, '\0');
  std::uint32_t x = 2463534242u;
  for (char& c : data) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;  // xorshift: no repeating blocks
    c = static_cast<char>(x);
  }
  return data;
}

}  // namespace

TEST_CASE("write creates the file with the exact mode, whatever the umask", "[fs]") {
  const unsigned modes[] = {0644, 0600, 0640, 0755, 0444, 0400};
  const mode_t masks[] = {022, 077, 0};
  for (mode_t mask : masks) {
    for (unsigned mode : modes) {
      CAPTURE(mask, mode);
      TempDir dir;
      const test::UmaskGuard umask(mask);
      const auto status = atomic_state::write_atomic(dir / "state.json", "{}\n", mode);
      REQUIRE(status.ok());
      CHECK(read_file(dir / "state.json") == "{}\n");
      CHECK(mode_of(dir / "state.json") == mode);
      CHECK(temp_files_in(dir.path()).empty());
    }
  }
}

TEST_CASE("write defaults to mode 0644", "[fs]") {
  TempDir dir;
  const test::UmaskGuard umask(077);
  REQUIRE(atomic_state::write_atomic(dir / "f", "x").ok());
  CHECK(mode_of(dir / "f") == 0644);
}

TEST_CASE("write replaces an existing file's content and mode", "[fs]") {
  TempDir dir;
  test::write_plain(dir / "state.json", "old content that is longer", 0600);
  REQUIRE(atomic_state::write_atomic(dir / "state.json", "new", 0644).ok());
  CHECK(read_file(dir / "state.json") == "new");
  CHECK(mode_of(dir / "state.json") == 0644);
  CHECK(test::names_in(dir.path()) == std::vector<std::string>{"state.json"});
}

TEST_CASE("write of empty data leaves an empty file", "[fs]") {
  TempDir dir;
  test::write_plain(dir / "f", "previous");
  REQUIRE(atomic_state::write_atomic(dir / "f", "").ok());
  CHECK(test::fs::file_size(dir / "f") == 0);
  CHECK(temp_files_in(dir.path()).empty());
}

TEST_CASE("write of a 64 MiB payload arrives byte for byte", "[fs]") {
  TempDir dir;
  const std::string data = patterned(64u << 20);
  REQUIRE(atomic_state::write_atomic(dir / "big.bin", data).ok());
  CHECK(read_file(dir / "big.bin") == data);
  CHECK(temp_files_in(dir.path()).empty());
}

TEST_CASE("every sync policy writes the same bytes", "[fs]") {
  TempDir dir;
  REQUIRE(AtomicWriter<FullSync>{}.write(dir / "full", "same").ok());
  REQUIRE(AtomicWriter<DataSync>{}.write(dir / "data", "same").ok());
  REQUIRE(AtomicWriter<NoSync>{}.write(dir / "none", "same").ok());
  for (const char* name : {"full", "data", "none"}) CHECK(read_file(dir / name) == "same");
  CHECK(temp_files_in(dir.path()).empty());
}

TEST_CASE("write creates missing parent directories with 0755", "[fs]") {
  TempDir dir;
  const test::UmaskGuard umask(022);
  const auto target = dir / "a" / "b c" / "d" / "state.json";
  REQUIRE(atomic_state::write_atomic(target, "x").ok());
  CHECK(read_file(target) == "x");
  for (const auto& level : {dir / "a", dir / "a" / "b c", dir / "a" / "b c" / "d"})
    CHECK(mode_of(level) == 0755);
}

TEST_CASE("new directories follow the umask but keep owner write and search, as mkdir -p", "[fs]") {
  struct Row {
    mode_t umask;
    unsigned mode;  // of every level made
  };
  // mkdir -p: (0755 less the umask) | u+wx, so that the next level and the
  // file can be created in it even when the umask says otherwise.
  const Row rows[] = {{022, 0755},  {077, 0700},  {0222, 0755}, {0277, 0700},
                      {0777, 0300}, {0177, 0700}, {0, 0755}};
  for (const Row& row : rows) {
    CAPTURE(row.umask);
    TempDir dir;
    const test::UmaskGuard umask(row.umask);
    const auto target = dir / "a" / "b" / "f";
    REQUIRE(atomic_state::write_atomic(target, "x", 0600).ok());
    CHECK(mode_of(dir / "a") == row.mode);
    CHECK(mode_of(dir / "a" / "b") == row.mode);
    CHECK(read_file(target) == "x");
  }
}

TEST_CASE("write accepts paths with repeated separators", "[fs]") {
  TempDir dir;
  const std::string path = dir.path().string() + "//new//f";
  REQUIRE(atomic_state::write_atomic(path, "x").ok());
  CHECK(read_file(dir / "new" / "f") == "x");
}

TEST_CASE("write handles names with spaces and non-ASCII bytes", "[fs]") {
  TempDir dir;
  const std::string names[] = {"with space.json", "caf\xC3\xA9 \xE2\x82\xAC.json",
                               "raw\xFF\xFE bytes", " leading and trailing "};
  for (const std::string& name : names) {
    CAPTURE(name);
    REQUIRE(atomic_state::write_atomic(dir / name, name).ok());
    CHECK(read_file(dir / name) == name);
  }
  CHECK(temp_files_in(dir.path()).empty());
}

TEST_CASE("write accepts a bare file name, relative to the working directory", "[fs]") {
  TempDir dir;
  const auto saved = test::fs::current_path();
  test::fs::current_path(dir.path());
  const auto status = atomic_state::write_atomic("bare.json", "x");
  test::fs::current_path(saved);
  REQUIRE(status.ok());
  CHECK(read_file(dir / "bare.json") == "x");
}

TEST_CASE("a symlink at the target is replaced, its destination untouched", "[fs]") {
  TempDir dir;
  test::write_plain(dir / "real", "keep me");
  test::fs::create_symlink("real", dir / "link");
  REQUIRE(atomic_state::write_atomic(dir / "link", "new").ok());
  CHECK_FALSE(test::fs::is_symlink(dir / "link"));
  CHECK(read_file(dir / "link") == "new");
  CHECK(read_file(dir / "real") == "keep me");
}

TEST_CASE("unusable paths and modes are refused before anything is created", "[fs]") {
  TempDir dir;
  const std::string base = dir.path().string();
  struct Row {
    const char* why;
    std::string path;
    unsigned mode;
    std::errc expected;
  };
  const Row rows[] = {
      {"empty path", "", 0644, std::errc::invalid_argument},
      {"trailing slash", base + "/x/", 0644, std::errc::is_a_directory},
      {"final dot", base + "/.", 0644, std::errc::is_a_directory},
      {"final dot-dot", base + "/..", 0644, std::errc::is_a_directory},
      {"the root", "/", 0644, std::errc::is_a_directory},
      {"embedded NUL", base + std::string("/a\0b", 4), 0644, std::errc::invalid_argument},
      {"longer than PATH_MAX", base + "/" + std::string(5000, 'a'), 0644,
       std::errc::filename_too_long},
      {"mode beyond 07777", base + "/f", 010000, std::errc::invalid_argument},
  };
  for (const Row& row : rows) {
    CAPTURE(row.why);
    const auto status = atomic_state::write_atomic(row.path, "x", row.mode);
    CHECK_FALSE(status.ok());
    CHECK(status.step() == Step::check_path);
    CHECK(status.code() == row.expected);
    CHECK(status.message().rfind("check path", 0) == 0);
  }
  CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("the longest path and file name accepted work; one byte more is refused", "[fs]") {
  TempDir dir;
  // Fill the path up to ATOMIC_STATE_PATH_MAX - 1 bytes with 200-byte
  // directory names, each created by the save itself.
  std::string path = dir.path().string();
  const std::size_t limit = ATOMIC_STATE_PATH_MAX - 1;
  while (path.size() + 1 + 200 + 1 + 10 < limit) path += "/" + std::string(200, 'd');
  path += "/" + std::string(limit - path.size() - 1, 'f');
  REQUIRE(path.size() == limit);
  const auto longest = atomic_state::write_atomic(path, "x");
  CHECK(longest.ok());
  CHECK(read_file(path) == "x");
  const auto too_long = atomic_state::write_atomic(path + "g", "x");
  CHECK(too_long.step() == Step::check_path);
  CHECK(too_long.code() == std::errc::filename_too_long);

  const std::string longest_name(ATOMIC_STATE_NAME_MAX, 'n');
  CHECK(atomic_state::write_atomic(dir / longest_name, "x").ok());
  const auto long_name = atomic_state::write_atomic(dir / (longest_name + "n"), "x");
  CHECK(long_name.step() == Step::check_path);
  CHECK(long_name.code() == std::errc::filename_too_long);
  CHECK(temp_files_in(dir.path()).empty());
}

TEST_CASE("a regular file where the directory should be is reported, not replaced", "[fs]") {
  TempDir dir;
  test::write_plain(dir / "file", "not a directory");
  const auto status = atomic_state::write_atomic(dir / "file" / "state.json", "x");
  CHECK(status.step() == Step::open_directory);
  CHECK(status.code() == std::errc::not_a_directory);
  CHECK(status.message() == "open directory " + (dir / "file").string() + " for " +
                                (dir / "file" / "state.json").string() + ": Not a directory");
  CHECK(read_file(dir / "file") == "not a directory");
}

TEST_CASE("a target that is not a file is refused before any temp file exists", "[fs]") {
  struct Row {
    const char* what;
    bool (*make)(const test::fs::path&);  // false: the machine refused the setup
    std::errc code;
    const char* note;
  };
  const Row rows[] = {
      {"a directory", [](const test::fs::path& p) { return test::fs::create_directory(p); },
       std::errc::is_a_directory, "the target is a directory"},
      {"a FIFO", [](const test::fs::path& p) { return ::mkfifo(p.c_str(), 0644) == 0; },
       std::errc::invalid_argument, "the target is a FIFO, not a regular file"},
      {"a character device",
       [](const test::fs::path& p) {
         return ::mknod(p.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0;
       },
       std::errc::invalid_argument, "the target is a device or socket, not a regular file"},
  };
  for (const Row& row : rows) {
    for (const bool streamed : {false, true}) {
      CAPTURE(row.what, streamed);
      TempDir dir;
      const auto target = dir / "taken";
      if (!row.make(target)) {
        WARN("skipped: cannot make " << row.what << " here");
        continue;
      }
      test::FaultFs fs;
      atomic_state::AtomicWriter<FullSync, test::FaultFs&> writer(fs);
      const Status status = streamed ? writer.begin(target).status() : writer.write(target, "x");
      CHECK(status.step() == Step::check_path);
      CHECK(status.code() == row.code);
      CHECK(status.message() == "check path " + target.string() + ": " +
                                    std::make_error_code(row.code).message() + " (" + row.note +
                                    ")");
      CHECK(fs.count(test::Op::create_file) == 0);
      CHECK(fs.open_descriptors().empty());
      CHECK(temp_files_in(dir.path()).empty());
      CHECK(test::fs::symlink_status(target).type() != test::fs::file_type::regular);
    }
  }
}

TEST_CASE("a symlink to a directory at the target is replaced as any symlink is", "[fs]") {
  TempDir dir;
  test::fs::create_directory(dir / "elsewhere");
  test::fs::create_symlink(dir / "elsewhere", dir / "link");
  REQUIRE(atomic_state::write_atomic(dir / "link", "new").ok());
  CHECK(test::fs::is_regular_file(test::fs::symlink_status(dir / "link")));
  CHECK(read_file(dir / "link") == "new");
  CHECK(test::fs::is_directory(dir / "elsewhere"));
}

TEST_CASE("the temp file is created 0600, close-on-exec, never following a link", "[fs]") {
  TempDir dir;
  test::FaultFs fs;
  unsigned mode_while_writing = 0;
  int fd_flags = 0;
  int dir_fd_flags = 0;
  fs.before = [&](test::Op op, int fd, const char*) {
    if (op == test::Op::create_file || op == test::Op::open_unnamed)
      dir_fd_flags = ::fcntl(fd, F_GETFD);
    if (op != test::Op::write) return;
    struct stat st {};
    ::fstat(fd, &st);
    mode_while_writing = st.st_mode & 07777;
    fd_flags = ::fcntl(fd, F_GETFD);
  };
  REQUIRE(AtomicWriter<FullSync, test::FaultFs&>(fs).write(dir / "f", "data", 0644).ok());
  CHECK(mode_while_writing == 0600);
  CHECK((fd_flags & FD_CLOEXEC) != 0);
  CHECK((dir_fd_flags & FD_CLOEXEC) != 0);
  CHECK(mode_of(dir / "f") == 0644);
}

// ---- ModeFrom: where the new file's mode comes from

namespace {
struct OwnedFile {
  uid_t uid;
  gid_t gid;
};
OwnedFile owner_of(const std::filesystem::path& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return {st.st_uid, st.st_gid};
}
}  // namespace

TEST_CASE("ModeFrom chooses the mode: given exactly, the existing file's, or filtered by the umask",
          "[fs][modes]") {
  using atomic_state::ModeFrom;
  struct Row {
    const char* behaviour;
    ModeFrom from;
    int existing_mode;  // -1: no target yet
    unsigned given;
    mode_t umask;
    unsigned expected;
  };
  const Row rows[] = {
      {"given: exactly the mode asked, over a 0600 file", ModeFrom::given, 0600, 0644, 022, 0644},
      {"given: the umask is ignored", ModeFrom::given, -1, 0666, 077, 0666},
      {"existing: a 0600 file stays 0600", ModeFrom::existing, 0600, 0644, 022, 0600},
      {"existing: a read-only 0444 file is replaced and stays 0444", ModeFrom::existing, 0444, 0644,
       022, 0444},
      {"existing: set-group-ID and sticky bits are kept", ModeFrom::existing, 02750, 0644, 022,
       02750},
      {"existing: a missing target gets the mode given", ModeFrom::existing, -1, 0640, 022, 0640},
      {"umask: 0666 under umask 022 is 0644", ModeFrom::umask, -1, 0666, 022, 0644},
      {"umask: 0666 under umask 077 is 0600", ModeFrom::umask, 0644, 0666, 077, 0600},
      {"umask: 0640 under umask 0 is 0640", ModeFrom::umask, -1, 0640, 0, 0640},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    TempDir dir;
    const auto target = dir / "f";
    if (row.existing_mode >= 0) {
      test::write_plain(target, "old");
      REQUIRE(::chmod(target.c_str(), static_cast<mode_t>(row.existing_mode)) == 0);
    }
    const test::UmaskGuard umask(row.umask);
    atomic_state::WriteOptions options;
    options.mode = row.given;
    options.mode_from = row.from;
    REQUIRE(AtomicWriter<>{}.write(target, "new", options).ok());
    CHECK(read_file(target) == "new");
    CHECK(mode_of(target) == row.expected);
    CHECK(temp_files_in(dir.path()).empty());
  }
}

TEST_CASE("ModeFrom::existing keeps the owner and group of a file another user owns (as root)",
          "[fs][modes]") {
  if (::geteuid() != 0) {
    WARN("not run: needs root to give a file to another user (the suite runs as root)");
    return;
  }
  TempDir dir;
  const auto target = dir / "f";
  test::write_plain(target, "old");
  REQUIRE(::chown(target.c_str(), 65534, 65534) == 0);
  REQUIRE(::chmod(target.c_str(), 0640) == 0);
  atomic_state::WriteOptions options;
  options.mode_from = atomic_state::ModeFrom::existing;
  REQUIRE(AtomicWriter<>{}.write(target, "new", options).ok());
  CHECK(owner_of(target).uid == 65534);
  CHECK(owner_of(target).gid == 65534);
  CHECK(mode_of(target) == 0640);
  SECTION("while ModeFrom::given leaves the file to whoever writes it") {
    REQUIRE(AtomicWriter<>{}.write(target, "again").ok());
    CHECK(owner_of(target).uid == 0);
  }
}

namespace {
// A POSIX ACL as the kernel stores it in system.posix_acl_access: version
// 2, then (tag, permissions, id) entries sorted by tag and id.
struct AclEntry {
  std::uint16_t tag;  // 1 user::, 2 user:id, 4 group::, 8 group:id, 0x10 mask, 0x20 other
  std::uint16_t perm;
  std::uint32_t id;
};
std::string acl_bytes(std::initializer_list<AclEntry> entries) {
  std::string out(4, '\0');
  const std::uint32_t version = 2;
  std::memcpy(out.data(), &version, 4);
  for (const AclEntry& e : entries) {
    char entry[8];
    std::memcpy(entry, &e.tag, 2);
    std::memcpy(entry + 2, &e.perm, 2);
    std::memcpy(entry + 4, &e.id, 4);
    out.append(entry, 8);
  }
  return out;
}
constexpr std::uint32_t kNoId = 0xFFFFFFFFu;
// user::rw- user:65534:rw- group::--- mask::rw- other::---: mode 0660 to
// ls, though the file's group may not read it.
const std::string kNamedUserAcl =
    acl_bytes({{1, 6, kNoId}, {2, 6, 65534}, {4, 0, kNoId}, {0x10, 6, kNoId}, {0x20, 0, kNoId}});
// An extended attribute of `path` (not followed), or "<absent>".
std::string attribute_of(const std::filesystem::path& path, const char* name) {
  char value[4096];
  const ssize_t n = ::lgetxattr(path.c_str(), name, value, sizeof value);
  return n < 0 ? std::string("<absent>") : std::string(value, static_cast<std::size_t>(n));
}
bool set_attribute(const std::filesystem::path& path, const char* name, const std::string& value) {
  return ::setxattr(path.c_str(), name, value.data(), value.size(), 0) == 0;
}
// Whether the filesystem under `dir` takes POSIX ACLs.
bool takes_acls(const std::filesystem::path& dir) {
  const auto probe = dir / ".acl-probe";
  test::write_plain(probe, "", 0640);
  const bool ok = set_attribute(probe, "system.posix_acl_access", kNamedUserAcl);
  ::unlink(probe.c_str());
  return ok;
}
}  // namespace

TEST_CASE("ModeFrom::existing keeps the target's access ACL, never widening it to group bits",
          "[fs][modes][acl]") {
  struct Row {
    const char* behaviour;
    bool target_acl;       // the target has kNamedUserAcl
    bool default_acl;      // the directory gives new files a default ACL
    const char* expected;  // the new file's ACL: "target" or "<absent>"
    unsigned mode;         // the new file's mode
  };
  const Row rows[] = {
      {"an ACL granting a named user is copied, its group entry still closed", true, false,
       "target", 0660},
      {"an ACL is copied over the directory's default ACL", true, true, "target", 0660},
      {"a target without an ACL gives a file without one, whatever the directory's default", false,
       true, "<absent>", 0640},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    TempDir dir;
    if (!takes_acls(dir.path())) {
      WARN("not run: the filesystem of " << dir.path() << " takes no POSIX ACLs");
      return;
    }
    const auto target = dir / "f";
    test::write_plain(target, "old", 0640);
    if (row.target_acl) REQUIRE(set_attribute(target, "system.posix_acl_access", kNamedUserAcl));
    if (row.default_acl)
      REQUIRE(set_attribute(
          dir.path(), "system.posix_acl_default",
          acl_bytes(
              {{1, 7, kNoId}, {2, 7, 65533}, {4, 7, kNoId}, {0x10, 7, kNoId}, {0x20, 7, kNoId}})));
    const std::string before = attribute_of(target, "system.posix_acl_access");
    atomic_state::WriteOptions options;
    options.mode_from = atomic_state::ModeFrom::existing;
    REQUIRE(AtomicWriter<>{}.write(target, "new", options).ok());
    CHECK(read_file(target) == "new");
    CHECK(attribute_of(target, "system.posix_acl_access") ==
          (std::string(row.expected) == "target" ? before : std::string(row.expected)));
    CHECK(mode_of(target) == row.mode);
    CHECK(temp_files_in(dir.path()).empty());
  }
}

TEST_CASE("ModeFrom::umask in a directory with a default ACL gives what open(2) gives",
          "[fs][modes][acl]") {
  // open(2) ignores the umask where the directory has a default ACL: the
  // new file takes that ACL, narrowed by the mode asked for.
  struct Row {
    const char* behaviour;
    std::string default_acl;
    unsigned mode;
    unsigned umask;
  };
  const Row rows[] = {
      {"a named user's rwx, 0666 under umask 077",
       acl_bytes({{1, 7, kNoId}, {2, 7, 65534}, {4, 5, kNoId}, {0x10, 7, kNoId}, {0x20, 5, kNoId}}),
       0666, 077},
      {"a named group's rw-, 0640 under umask 022",
       acl_bytes({{1, 7, kNoId}, {4, 5, kNoId}, {8, 6, 65534}, {0x10, 7, kNoId}, {0x20, 0, kNoId}}),
       0640, 022},
      {"only the three base entries, 0666 under umask 077",
       acl_bytes({{1, 7, kNoId}, {4, 5, kNoId}, {0x20, 4, kNoId}}), 0666, 077},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    TempDir dir;
    if (!takes_acls(dir.path())) {
      WARN("not run: the filesystem of " << dir.path() << " takes no POSIX ACLs");
      return;
    }
    REQUIRE(set_attribute(dir.path(), "system.posix_acl_default", row.default_acl));
    const mode_t old_mask = ::umask(static_cast<mode_t>(row.umask));
    const int fd = ::open((dir / "opened").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                          static_cast<mode_t>(row.mode));
    atomic_state::WriteOptions options;
    options.mode = row.mode;
    options.mode_from = atomic_state::ModeFrom::umask;
    const Status status = AtomicWriter<>{}.write(dir / "f", "new", options);
    ::umask(old_mask);
    REQUIRE(fd >= 0);
    ::close(fd);
    REQUIRE(status.ok());
    CHECK(mode_of(dir / "f") == mode_of(dir / "opened"));
    CHECK(attribute_of(dir / "f", "system.posix_acl_access") ==
          attribute_of(dir / "opened", "system.posix_acl_access"));
    CHECK(temp_files_in(dir.path()).empty());
    SECTION("while ModeFrom::given keeps the mode given, the ACL's mask with it") {
      options.mode_from = atomic_state::ModeFrom::given;
      REQUIRE(AtomicWriter<>{}.write(dir / "g", "new", options).ok());
      CHECK(mode_of(dir / "g") == row.mode);
    }
  }
}

namespace {
// A policy that reports a security context on every file, as an SELinux
// system does, and records what is set: SELinux need not be enabled.
struct LabelledFs : atomic_state::PosixFs {
  std::string label = "system_u:object_r:etc_t:s0";
  ssize_t get_error = 0;  // -errno: get_attribute of the context fails so
  int set_error = 0;      // -errno: set_attribute of the context fails so
  std::vector<std::pair<std::string, std::string>> set;  // name, value
  ssize_t get_attribute(int fd, const char* name, void* value, std::size_t size) noexcept {
    if (std::string_view(name) != "security.selinux")
      return PosixFs::get_attribute(fd, name, value, size);
    if (get_error < 0) return get_error;
    if (label.size() + 1 > size) return -ERANGE;
    std::memcpy(value, label.c_str(), label.size() + 1);  // SELinux stores the NUL
    return static_cast<ssize_t>(label.size() + 1);
  }
  int set_attribute(int fd, const char* name, const void* value, std::size_t size) noexcept {
    if (std::string_view(name) != "security.selinux")
      return PosixFs::set_attribute(fd, name, value, size);
    set.emplace_back(name, std::string(static_cast<const char*>(value), size));
    return set_error;
  }
};
}  // namespace

TEST_CASE("ModeFrom::existing gives the new file the target's security context, or refuses",
          "[fs][modes][acl]") {
  struct Row {
    const char* behaviour;
    atomic_state::ModeFrom from;
    bool target_exists;
    ssize_t get_error;
    int set_error;
    int expected_error;  // 0: replaced
    const char* note;    // in the refusal's message
  };
  using atomic_state::ModeFrom;
  const Row rows[] = {
      {"the context is copied", ModeFrom::existing, true, 0, 0, 0, ""},
      {"a context that cannot be set refuses the save", ModeFrom::existing, true, 0, -EACCES,
       EACCES, "security context"},
      {"a context that cannot be read refuses the save", ModeFrom::existing, true, -EIO, 0, EIO,
       "security context"},
      {"a context too large to copy refuses the save", ModeFrom::existing, true, -ERANGE, 0, ERANGE,
       "security context"},
      {"no context where the system has none (ENODATA)", ModeFrom::existing, true, -ENODATA, 0, 0,
       ""},
      {"no context where the filesystem has none (ENOTSUP)", ModeFrom::existing, true, -ENOTSUP, 0,
       0, ""},
      {"a new file takes no context: nothing to copy", ModeFrom::existing, false, 0, 0, 0, ""},
      {"ModeFrom::given copies nothing", ModeFrom::given, true, 0, 0, 0, ""},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    TempDir dir;
    const auto target = dir / "f";
    if (row.target_exists) test::write_plain(target, "old", 0640);
    LabelledFs fs;
    fs.get_error = row.get_error;
    fs.set_error = row.set_error;
    atomic_state::WriteOptions options;
    options.mode_from = row.from;
    const Status status = AtomicWriter<FullSync, LabelledFs&>{fs}.write(target, "new", options);
    CAPTURE(status.message());
    const bool copied = row.expected_error == 0 && row.from == ModeFrom::existing &&
                        row.target_exists && row.get_error == 0;
    CHECK(fs.set.size() == (copied || row.set_error < 0 ? 1u : 0u));
    if (!fs.set.empty()) CHECK(fs.set[0].second == fs.label + '\0');
    if (row.expected_error == 0) {
      CHECK(status.ok());
      CHECK(read_file(target) == "new");
    } else {
      CHECK(status.step() == Step::set_permissions);
      CHECK(status.code().value() == row.expected_error);
      CHECK(contains(status.message(), row.note));
      CHECK(contains(status.message(), target.native()));  // the target named
      CHECK(read_file(target) == "old");
    }
    CHECK(temp_files_in(dir.path()).empty());
  }
}

// A normal user, run in a forked child (test::run_as): `uid` with the
// supplementary groups `groups`; the child's exit status is 0 when `body`
// returns true.
template <class Body>
int as_user(uid_t uid, const std::vector<gid_t>& groups, Body body) {
  const int code = test::run_as(uid, groups, [&] { return body() ? 0 : 1; });
  REQUIRE(code != -1);  // a child was forked
  return code;
}

TEST_CASE("ModeFrom::existing keeps the group as a normal user too, where the user is in it",
          "[fs][modes]") {
  if (::geteuid() != 0) {
    WARN("not run: needs root to set up another user's file (the suite runs as root)");
    return;
  }
  struct Row {
    const char* behaviour;
    uid_t file_owner;
    std::vector<gid_t> user_groups;  // the normal user's supplementary groups
    gid_t expected_group;
  };
  constexpr uid_t kUser = 47001;
  constexpr gid_t kGroup = 47002;
  const Row rows[] = {
      {"a file another user owns, in a group the user is in", 65534, {kGroup}, kGroup},
      {"a file the user owns, in a group the user is in", kUser, {kGroup}, kGroup},
      {"a group the user is not in, 0644: the user's own (as chown allows no other)",
       65534,
       {},
       kUser},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    TempDir dir;
    REQUIRE(::chown(dir.path().c_str(), kUser, kUser) == 0);
    const auto target = dir / "f";
    test::write_plain(target, "old", 0640);
    REQUIRE(::chown(target.c_str(), row.file_owner, kGroup) == 0);
    REQUIRE(::chmod(target.c_str(), 0644) == 0);  // readable: its attributes are read
    const int exit = as_user(kUser, row.user_groups, [&] {
      atomic_state::WriteOptions options;
      options.mode_from = atomic_state::ModeFrom::existing;
      return AtomicWriter<>{}.write(target, "new", options).ok();
    });
    REQUIRE(exit == 0);
    CHECK(read_file(target) == "new");
    CHECK(owner_of(target).uid == kUser);
    CHECK(owner_of(target).gid == row.expected_group);
    CHECK(mode_of(target) == 0644);
  }
}

TEST_CASE("ModeFrom::existing refuses a group a normal user cannot keep, where the group mattered",
          "[fs][modes]") {
  if (::geteuid() != 0) {
    WARN("not run: needs root to set up another user's file (the suite runs as root)");
    return;
  }
  // The user's own group would get what the file's group had: refused,
  // unless the group's bits are the others' (and no set-group-ID, no ACL).
  struct Row {
    const char* behaviour;
    unsigned mode;
    bool acl;  // the target has kNamedUserAcl (mode 0660)
    bool refused;
  };
  const Row rows[] = {
      {"0640: the group could read, the others not", 0640, false, true},
      {"0604: the group was kept out, the others not", 0604, false, true},
      {"0660 by an ACL naming a user", 0660, true, true},
      {"2755: set-group-ID", 02755, false, true},
      {"0644: the group had what the others have", 0644, false, false},
      {"0600: neither could read", 0600, false, false},
  };
  constexpr uid_t kUser = 47004;
  constexpr gid_t kGroup = 47006;
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    TempDir dir;
    if (row.acl && !takes_acls(dir.path())) {
      WARN("not run: the filesystem of " << dir.path() << " takes no POSIX ACLs");
      continue;
    }
    REQUIRE(::chown(dir.path().c_str(), kUser, kUser) == 0);
    const auto target = dir / "f";
    test::write_plain(target, "old", 0640);
    REQUIRE(::chown(target.c_str(), kUser, kGroup) == 0);
    REQUIRE(::chmod(target.c_str(), row.mode) == 0);
    if (row.acl) REQUIRE(set_attribute(target, "system.posix_acl_access", kNamedUserAcl));
    const int exit = as_user(kUser, {}, [&] {
      atomic_state::WriteOptions options;
      options.mode_from = atomic_state::ModeFrom::existing;
      const Status status = AtomicWriter<>{}.write(target, "new", options);
      if (!row.refused) return status.ok();
      return status.step() == Step::set_permissions && status.code().value() == EPERM &&
             contains(status.message(), "group") && contains(status.message(), target.native());
    });
    CHECK(exit == 0);
    CHECK(read_file(target) == (row.refused ? "old" : "new"));
    CHECK(owner_of(target).gid == (row.refused ? kGroup : kUser));
    CHECK(mode_of(target) == row.mode);
    CHECK(temp_files_in(dir.path()).empty());
  }
}

TEST_CASE("ModeFrom::existing refuses a target a normal user cannot read: its ACL is unknown",
          "[fs][modes][acl]") {
  if (::geteuid() != 0) {
    WARN("not run: needs root to set up another user's file (the suite runs as root)");
    return;
  }
  constexpr uid_t kUser = 47003;
  TempDir dir;
  REQUIRE(::chown(dir.path().c_str(), kUser, kUser) == 0);
  const auto target = dir / "f";
  test::write_plain(target, "old", 0600);
  REQUIRE(::chown(target.c_str(), 65534, 65534) == 0);
  const int exit = as_user(kUser, {}, [&] {
    atomic_state::WriteOptions options;
    options.mode_from = atomic_state::ModeFrom::existing;
    const Status status = AtomicWriter<>{}.write(target, "new", options);
    return status.step() == Step::set_permissions && status.code().value() == EACCES &&
           contains(status.message(), "cannot be opened to read its ACL");
  });
  CHECK(exit == 0);
  CHECK(read_file(target) == "old");
  CHECK(temp_files_in(dir.path()).empty());
  SECTION("while ModeFrom::given replaces it, as the directory allows") {
    const int given =
        as_user(kUser, {}, [&] { return AtomicWriter<>{}.write(target, "new").ok(); });
    CHECK(given == 0);
    CHECK(read_file(target) == "new");
  }
}

TEST_CASE("ModeFrom::existing does not take a symlink's mode: the link is replaced by a new file",
          "[fs][modes]") {
  TempDir dir;
  test::write_plain(dir / "elsewhere", "x");
  REQUIRE(::chmod((dir / "elsewhere").c_str(), 0600) == 0);
  std::filesystem::create_symlink("elsewhere", dir / "f");
  atomic_state::WriteOptions options;
  options.mode = 0640;
  options.mode_from = atomic_state::ModeFrom::existing;
  REQUIRE(AtomicWriter<>{}.write(dir / "f", "new", options).ok());
  CHECK(mode_of(dir / "f") == 0640);
  CHECK(read_file(dir / "elsewhere") == "x");
}

TEST_CASE("ModeFrom::umask without a readable umask fails before anything is created",
          "[fs][modes]") {
  struct NoUmask : atomic_state::PosixFs {
    int process_umask() noexcept { return -ENOTSUP; }
  };
  TempDir dir;
  atomic_state::WriteOptions options;
  options.mode_from = atomic_state::ModeFrom::umask;
  const Status status = AtomicWriter<FullSync, NoUmask>{}.write(dir / "f", "x", options);
  CHECK(status.step() == Step::set_permissions);
  CHECK(status.code().value() == ENOTSUP);
  CHECK_FALSE(std::filesystem::exists(dir / "f"));
  CHECK(temp_files_in(dir.path()).empty());
}

// ---- follow_symlinks: write through a symlink, as QSaveFile does

TEST_CASE(
    "follow_symlinks replaces the file a symlink leads to; a link that leads nowhere is refused",
    "[fs][symlinks]") {
  struct Row {
    const char* behaviour;
    const char* link_to;  // the symlink "f" points here (relative to the test directory)
    bool make_destination;
    int error;  // 0: the destination is replaced
  };
  const Row rows[] = {
      {"a link to a file in the same directory", "real", true, 0},
      {"a link to a file in another directory", "sub/real", true, 0},
      {"a chain of two links", "hop", true, 0},
      {"a dangling link", "missing", false, ENOENT},
      {"a link to itself", "f", false, ELOOP},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    TempDir dir;
    std::filesystem::create_directory(dir / "sub");
    if (row.make_destination) {
      test::write_plain(dir / "real", "old");
      test::write_plain(dir / "sub" / "real", "old");
      std::filesystem::create_symlink("real", dir / "hop");
    }
    std::filesystem::create_symlink(row.link_to, dir / "f");
    atomic_state::WriteOptions options;
    options.follow_symlinks = true;
    const Status status = AtomicWriter<>{}.write(dir / "f", "new", options);
    CHECK(std::filesystem::is_symlink(dir / "f"));  // the link itself is never replaced
    CHECK(std::filesystem::read_symlink(dir / "f") == row.link_to);
    if (row.error == 0) {
      REQUIRE(status.ok());
      const auto destination = std::string(row.link_to) == "hop" ? dir / "real" : dir / row.link_to;
      CHECK(read_file(destination) == "new");
      CHECK(temp_files_in(destination.parent_path()).empty());
    } else {
      CHECK(status.step() == Step::check_path);
      CHECK(status.code().value() == row.error);
      CHECK(status.message().find("leads to no file") != std::string::npos);
    }
    CHECK(temp_files_in(dir.path()).empty());
  }
}

TEST_CASE("follow_symlinks refuses a link fs.protected_symlinks guards, at every hop of a chain",
          "[fs][symlinks]") {
  if (::geteuid() != 0) {
    WARN("not run: needs root to give links to other users (the suite runs as root)");
    return;
  }
  // The kernel's rule, whatever fs.protected_symlinks says on this machine:
  // a link in a sticky, world-writable directory is followed only by its
  // owner, or when the directory's owner owns it too.
  struct Row {
    const char* behaviour;
    unsigned dir_mode;  // of "shared", owned by root
    uid_t link_owner;   // of shared/f
    uid_t follower;     // 0: root, else a normal user
    bool through_own;   // write through "mine" (the follower's link to shared/f)
    bool refused;
  };
  constexpr uid_t kUser = 47005, kOther = 65534;
  const Row rows[] = {
      {"another user's link in a sticky world-writable directory, followed by root", 01777, kOther,
       0, false, true},
      {"another user's link there, followed by a normal user", 01777, kOther, kUser, false, true},
      {"another user's link there, reached through the follower's own link", 01777, kOther, 0, true,
       true},
      {"the follower's own link there", 01777, kUser, kUser, false, false},
      {"a link of the directory's owner there", 01777, 0, kUser, false, false},
      {"another user's link in a world-writable directory that is not sticky", 0777, kOther, 0,
       false, false},
      {"another user's link in a sticky directory others cannot write", 01755, kOther, 0, false,
       false},
  };
  for (const Row& row : rows) {
    CAPTURE(row.behaviour);
    TempDir dir;
    REQUIRE(::chmod(dir.path().c_str(), 0755) == 0);  // the user must reach it
    const auto shared = dir / "shared";
    std::filesystem::create_directory(shared);
    REQUIRE(::chmod(shared.c_str(), row.dir_mode) == 0);
    const auto victim = dir / "victim";
    test::write_plain(victim, "precious", 0666);
    std::filesystem::create_symlink(victim, shared / "f");
    REQUIRE(::lchown((shared / "f").c_str(), row.link_owner, row.link_owner) == 0);
    const auto mine = dir / "mine";
    std::filesystem::create_symlink(shared / "f", mine);
    REQUIRE(::lchown(mine.c_str(), row.follower, row.follower) == 0);
    REQUIRE(::chown(dir.path().c_str(), row.follower, row.follower) == 0);  // its temp file
    const auto path = row.through_own ? mine : shared / "f";
    const auto save = [&] {
      atomic_state::WriteOptions options;
      options.follow_symlinks = true;
      options.mode = 0666;
      const Status status = AtomicWriter<>{}.write(path, "new", options);
      if (!row.refused) return status.ok();
      return status.step() == Step::check_path && status.code().value() == EACCES &&
             contains(status.message(), "fs.protected_symlinks") &&
             contains(status.message(), (shared / "f").native());
    };
    CHECK((row.follower == 0 ? save() : as_user(row.follower, {}, save) == 0));
    CHECK(read_file(victim) == (row.refused ? "precious" : "new"));
    CHECK(std::filesystem::is_symlink(shared / "f"));
    CHECK(temp_files_in(dir.path()).empty());
    CHECK(temp_files_in(shared).empty());
  }
}

TEST_CASE("follow_symlinks on a plain file or a missing one writes it as usual", "[fs][symlinks]") {
  TempDir dir;
  atomic_state::WriteOptions options;
  options.follow_symlinks = true;
  REQUIRE(AtomicWriter<>{}.write(dir / "new", "a", options).ok());
  REQUIRE(AtomicWriter<>{}.write(dir / "new", "b", options).ok());
  CHECK(read_file(dir / "new") == "b");
}

TEST_CASE("follow_symlinks through an AtomicDirectory is refused: it needs a path",
          "[fs][symlinks]") {
  TempDir dir;
  auto handle = atomic_state::AtomicDirectory<>::open(dir.path());
  REQUIRE(handle);
  atomic_state::WriteOptions options;
  options.follow_symlinks = true;
  const Status status = handle->write("f", "x", options);
  CHECK(status.step() == Step::check_path);
  CHECK(status.code() == std::errc::invalid_argument);
  CHECK_FALSE(std::filesystem::exists(dir / "f"));
}

TEST_CASE("without /proc and before AT_EMPTY_PATH has named a file, a save makes a named temp file",
          "[fs]") {
  if (!protocol::unnamed_temp_files()) {
    WARN("the test directory's filesystem has no unnamed files (O_TMPFILE): nothing to prove");
    return;
  }
  TempDir dir;
  test::Child child;
  const pid_t pid = child.fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::string why;
    if (!test::private_mount_namespace(why) || ::umount2("/proc", MNT_DETACH) != 0) ::_exit(77);
    // This process has not learnt yet whether AT_EMPTY_PATH names a file.
    as::detail::empty_path().store(as::detail::kEmptyPathUnknown);
    test::FaultFs fs;
    if (!AtomicWriter<FullSync, test::FaultFs&>(fs).write(dir / "f", "named").ok()) ::_exit(1);
    if (fs.count(Op::open_unnamed) != 1 || fs.calls[2].result != -EOPNOTSUPP) ::_exit(2);
    if (fs.count(Op::create_file) != 1) ::_exit(3);
    ::_exit(0);
  }
  const int code = test::exit_code(child.wait());
  if (code == 77) {
    WARN("no private mount namespace here, or /proc would not unmount: nothing to prove");
    return;
  }
  CHECK(code == 0);
  CHECK(read_file(dir / "f") == "named");
  CHECK(temp_files_in(dir.path()).empty());
}

TEST_CASE("a link that fails both ways is no refusal of AT_EMPTY_PATH, and unlearns that it names",
          "[fs]") {
  if (!protocol::unnamed_temp_files()) {
    WARN("the test directory's filesystem has no unnamed files (O_TMPFILE): nothing to prove");
    return;
  }
  // The directory removed under an unnamed file: both ways of naming it
  // fail with ENOENT. Not a refusal; and what AT_EMPTY_PATH was seen to do
  // may no longer hold (privileges dropped, /proc gone): the next saves
  // look for /proc again before making an unnamed file.
  for (const int learnt : {as::detail::kEmptyPathUnknown, as::detail::kEmptyPathNames}) {
    CAPTURE(learnt);
    TempDir dir;
    test::fs::create_directory(dir / "gone");
    as::PosixFs fs;
    as::detail::empty_path().store(learnt);
    const int dir_fd = fs.open_directory((dir / "gone").c_str());
    REQUIRE(dir_fd >= 0);
    const int fd = fs.open_unnamed(dir_fd, 0600);
    REQUIRE(fd >= 0);
    test::fs::remove(dir / "gone");
    CHECK(fs.link_unnamed(fd, dir_fd, ".tmp-Ab12Cd") == -ENOENT);
    CHECK(as::detail::empty_path().load() == as::detail::kEmptyPathUnknown);
    (void)fs.close(fd);
    (void)fs.close(dir_fd);
    // And a save after it takes the short way again, learning it anew.
    test::FaultFs traced;
    REQUIRE(AtomicWriter<FullSync, test::FaultFs&>(traced).write(dir / "f", "x").ok());
    CHECK(traced.count(Op::link_unnamed) == 1);
    CHECK(as::detail::empty_path().load() != as::detail::kEmptyPathRefused);
  }
}
