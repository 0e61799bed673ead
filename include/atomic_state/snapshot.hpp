// snapshot.hpp: SnapshotOptions, SnapshotWriter, SnapshotReader: sets published whole
#ifndef ATOMIC_STATE_SNAPSHOT_HPP
#define ATOMIC_STATE_SNAPSHOT_HPP

#include <algorithm>    // std::sort, std::copy_n
#include <array>        // std::array: names read from the directory
#include <charconv>     // std::to_chars, std::from_chars: generation numbers
#include <cstdint>      // std::uint64_t
#include <cstring>      // std::memcpy, std::strncpy
#include <limits>       // std::numeric_limits: the last generation number
#include <string_view>  // std::string_view
#include <utility>      // std::move, std::exchange
#include <vector>       // std::vector: the files of a generation

#include "directory.hpp"

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// The names of a snapshot directory, as the writer's listings keep them.
namespace detail {
// generation_of and generation_shaped, the names below, are the writer
// part's: its saves refuse to make a directory of such a name.

/// What a generation's name says of it: gen-N is complete; the two others
/// are named so that no reader ever enters them through current.
enum class GenerationState : unsigned char {
  complete,  ///< gen-N
  building,  ///< .building-gen-N: being written, or half-written by a killed publisher
  removing,  ///< .removing-gen-N: being removed, or half-removed
};

inline constexpr std::string_view kBuildingPrefix = ".building-";
inline constexpr std::string_view kRemovingPrefix = ".removing-";

/// A generation's name in one of its states.
struct GenerationName {
  char text[48] = {};
  explicit GenerationName(std::uint64_t n,
                          GenerationState state = GenerationState::complete) noexcept {
    std::size_t at = 0;
    if (state != GenerationState::complete) {
      const std::string_view prefix =
          state == GenerationState::building ? kBuildingPrefix : kRemovingPrefix;
      std::memcpy(text, prefix.data(), prefix.size());
      at = prefix.size();
    }
    std::memcpy(text + at, "gen-", 4);
    *std::to_chars(text + at + 4, text + sizeof text - 1, n).ptr = '\0';
  }
  const char* c_str() const noexcept { return text; }
};

/// The names a snapshot directory holds that its writer manages. Its
/// storage is kept from one listing to the next (clear, not shrink).
struct SnapshotEntries {
  struct Generation {
    std::uint64_t number;
    GenerationState state;
  };
  std::vector<Generation> generations;
  std::vector<std::array<char, 20>> temp_links;  // ".current.tmp-XXXXXX"
  bool out_of_memory = false;

  void clear() noexcept {
    generations.clear();
    temp_links.clear();
    out_of_memory = false;
  }
  bool contains(std::uint64_t n) const noexcept {
    for (const Generation& g : generations)
      if (g.number == n) return true;
    return false;
  }

  static void add(void* context, const char* name) noexcept {
    auto& self = *static_cast<SnapshotEntries*>(context);
    const std::string_view entry(name);
    ATOMIC_STATE_DETAIL_TRY {
      GenerationState state = GenerationState::complete;
      std::string_view rest = entry;
      if (entry.substr(0, kBuildingPrefix.size()) == kBuildingPrefix) {
        state = GenerationState::building;
        rest.remove_prefix(kBuildingPrefix.size());
      } else if (entry.substr(0, kRemovingPrefix.size()) == kRemovingPrefix) {
        state = GenerationState::removing;
        rest.remove_prefix(kRemovingPrefix.size());
      }
      if (const std::uint64_t n = generation_of(rest); n != 0) {
        self.generations.push_back(Generation{n, state});
      } else if (owned_name(entry) == OwnedName::link_temp) {
        std::array<char, 20> copy{};
        std::memcpy(copy.data(), name, 20);
        self.temp_links.push_back(copy);
      }
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL { self.out_of_memory = true; }
  }
};

/// The names of a generation directory's files, to remove them; storage
/// kept as SnapshotEntries keeps its.
struct GenerationFiles {
  std::vector<std::array<char, ATOMIC_STATE_NAME_MAX + 1>> names;
  bool out_of_memory = false;

  void clear() noexcept {
    names.clear();
    out_of_memory = false;
  }
  static void add(void* context, const char* name) noexcept {
    auto& self = *static_cast<GenerationFiles*>(context);
    ATOMIC_STATE_DETAIL_TRY {
      self.names.emplace_back();
      std::strncpy(self.names.back().data(), name, ATOMIC_STATE_NAME_MAX);
      self.names.back()[ATOMIC_STATE_NAME_MAX] = '\0';
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL { self.out_of_memory = true; }
  }
};
}  // namespace detail

/// How a SnapshotWriter keeps its generations. open() refuses options it
/// cannot use (Step::check_path, EINVAL).
struct SnapshotOptions {
  /// Generations kept after a publish: the current one and the newest
  /// before it, so that a reader who opened `current` just before a publish
  /// can still read its files. At least 1. A generation a SnapshotReader
  /// holds is kept beyond this, until the reader lets go.
  unsigned keep = 2;
  /// Each generation directory's mode, exact (the umask is ignored); at
  /// most 07777.
  unsigned directory_mode = 0755;
  MissingDirectory missing = MissingDirectory::create;  ///< for the snapshot directory
};

/// A set of files that readers see change all at once. The files live in
/// a generation directory, DIR/gen-N, and DIR/current is a symlink naming
/// the complete one. A reader holds a SnapshotReader for as long as it
/// reads a set: a lease no publish removes. A reader without one opens
/// DIR/current once (open("DIR/current", O_RDONLY | O_DIRECTORY)) and then
/// reads the files relative to that descriptor (openat): it sees one whole
/// set, old or new, for as long as `keep` covers (keep - 1 publishes after
/// the one it entered); after that the set's files may be removed under it
/// (openat fails with ENOENT; a file already open still reads whole).
/// add() writes a file into a new generation, DIR/.building-gen-N (made at
/// the first add); publish() makes it durable and current:
///   1. each file's mode set, writeback started, synced and closed;
///   2. the generation directory synced;
///   3. the generation renamed to DIR/gen-N (never over an existing name):
///      a gen-N is complete, its files and their entries durable before it
///      has the name;
///   4. a temp symlink DIR/.current.tmp-XXXXXX naming it made, DIR synced;
///   5. the temp symlink renamed over DIR/current, DIR synced;
///   6. generations beyond `keep` removed, the current one never, nor one a
///      SnapshotReader holds (a non-blocking exclusive flock on the
///      generation fails): each is renamed DIR/.removing-gen-N while locked,
///      then emptied and removed.
/// After any crash DIR/current names a complete generation, old or new. A
/// failure before the rename over current removes the new generation;
/// current is untouched. A failure of the directory sync after it is
/// reported with replaced() true: readers see the new set, not known to be
/// durable. A failure to remove old generations (step 6) comes after the
/// swap is durable: replaced() is false, current() is the new generation,
/// and the message says "the snapshot was published and is durable; an old
/// generation was not removed" (under NoSync: "not known to be durable");
/// the next publish or open tries the removal again.
///
/// One publisher per directory at a time: open() takes a lock on
/// DIR/.snapshot.lock (mode 0600, so that no other user can hold it; one
/// open to others is made so) for the writer's life, and a second open()
/// fails with EWOULDBLOCK rather than waiting. A lock file that is not the
/// writer's own is refused (lock_run, EPERM) and left unchanged: a hard
/// link (a link count above 1), or a file of another user (where the Fs
/// has user_id). Root (user_id 0) in a directory of another user takes a
/// lock file of the directory's owner too, and changes nothing in the lock
/// file it opens there (that user could have put any file of root's at its
/// name for a moment); after a publish under sudo the owner removes root's
/// lock file once. open() also removes what a killed publisher left:
/// half-built generations (.building-gen-N), generations newer than
/// current (complete, never current), half-removed ones (.removing-gen-N)
/// and temp symlinks. A DIR/current that is not a symlink naming a gen-N
/// belongs to someone else: open() refuses it and removes nothing. A
/// missing DIR/current (an operator took the feed offline) removes no
/// generation: current() is then the newest complete one, kept with every
/// other, and DIR/current stays missing until the next publish.
///
/// Entries under the writer's names that are not of the kind it makes (a
/// file or symlink named gen-N, a directory named .current.tmp-XXXXXX, a
/// directory inside a generation being removed) are left where they are
/// and counted (TempSweep::not_regular), and so is a mount point: a
/// filesystem mounted on a gen-N, .building-gen-N or .removing-gen-N (a
/// directory on another device than DIR, or one whose removal the system
/// refuses with EBUSY, as it does a bind mount of the same filesystem), or
/// a file mounted on a temp link's name or inside a generation; nothing in
/// a mount is ever listed or removed. So is what the system refuses to
/// remove for want of permission (EACCES, EPERM: another user's, such as the
/// generations a run as root left in a directory of a normal user; counted
/// TempSweep::not_permitted). They never make open() or publish() fail. A
/// generation being removed that holds such a directory stays, emptied of
/// its files, as .removing-gen-N; a generation whose .removing-gen-N name
/// is taken by someone else's entry stays gen-N (no new generation takes a
/// number the directory holds). What anything else
/// writes into DIR's generations (gen-N, .building-gen-N, .removing-gen-N)
/// is the snapshot's, removed with its generation: no save of the library
/// makes a missing directory of such a name (AtomicWriter::write), but one
/// into an existing generation is not refused. Move-only.
///
/// Allocations: open() allocates (the directory's claim, the listings).
/// add() and publish() keep their storage (the files added, the names
/// listed) from one publish to the next, so a writer reused for sets of
/// the same shape allocates nothing once its storage has grown to the
/// directory's size (after its first few publishes); a failure allocates
/// its Status's text.
template <class SyncPolicy = FullSync, class Fs = PosixFs>
class SnapshotWriter {
  static_assert(is_sync_policy_v<SyncPolicy>,
                "SnapshotWriter: SyncPolicy needs `static constexpr SyncLevel file` and "
                "`static constexpr bool directory` (see FullSync)");
  static_assert(is_snapshot_filesystem_v<Fs>,
                "SnapshotWriter: Fs needs the calls of PosixFs a snapshot makes (see "
                "is_snapshot_filesystem)");

 public:
  /// Opens the snapshot directory `dir`, locks it for this publisher and
  /// removes what a killed one left. Failures: check_path (bad options, or
  /// DIR/current not a symlink to a generation: EINVAL), create_directory,
  /// open_directory, create_temp_file (AtomicDirectory's claim), lock_run
  /// (EWOULDBLOCK: another writer has it open; EPERM: the lock file is a
  /// hard link or another user's), remove_temp_file. The sweep of stale
  /// temp files (a killed publisher's claim) is done as well as it can be:
  /// a temp file it cannot remove (another user's) is left, and open()
  /// succeeds.
  template <class F = Fs, std::enable_if_t<std::is_default_constructible_v<F>, int> = 0>
  static Result<SnapshotWriter> open(PathView dir, const SnapshotOptions& options = {}) noexcept {
    return open(dir, F(), options);
  }
  static Result<SnapshotWriter> open(PathView dir, Fs fs,
                                     const SnapshotOptions& options = {}) noexcept;

  SnapshotWriter(SnapshotWriter&& other) noexcept;
  SnapshotWriter& operator=(SnapshotWriter&& other) noexcept;
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;
  /// Discards an unpublished generation, then releases the lock.
  ~SnapshotWriter();

  /// Writes the file `name` of the next generation. Refused with
  /// Step::check_path before anything is written: a name empty, holding a
  /// '/' or a NUL, "." or ".." (EINVAL), longer than ATOMIC_STATE_NAME_MAX
  /// (ENAMETOOLONG), one the library gives its own files (EINVAL, as
  /// AtomicDirectory::write refuses it: ".tmp-XXXXXX", ".tmp-XXXXXX.N",
  /// ".current.tmp-XXXXXX", ".NAME.lock", "NAME.corrupt-STAMP[.N]") or
  /// added before (EEXIST); a mode above 07777 (EINVAL).
  /// Failures: create_directory (EOVERFLOW: the generations reached
  /// gen-18446744073709551615, and no number is left: nothing is made,
  /// current stays as it is), open_directory, set_permissions (the new
  /// generation, made at the first add), create_temp_file, write_data; the
  /// generation keeps its other files. A moved-from writer: invalid_use.
  Status add(std::string_view name, std::string_view data, unsigned perm = 0644) noexcept;
  /// Publishes the files added, as above. No file added: invalid_use
  /// (EINVAL). After a failure the files added are gone: add them again.
  /// Failures: set_permissions, sync_file, close_temp_file, sync_directory,
  /// rename (to gen-N, or over current), create_temp_file (the temp
  /// symlink), remove_temp_file (step 6).
  Status publish() noexcept;
  /// Removes the unpublished generation, if any; current is untouched.
  void discard() noexcept;
  /// Removes, as open() and publish() do, the temp symlinks
  /// (.current.tmp-*), the half-built and half-removed generations, the
  /// generations newer than current and those older than the newest
  /// keep - 1 before current, but for any a SnapshotReader holds; a
  /// TempSweep counting the entries removed, the generations left because
  /// a reader holds them (in_use), the entries not the writer's own
  /// (not_regular: mount points among them) and those the system refuses
  /// to remove (not_permitted: another user's). Nothing else in DIR is
  /// touched. Failures: remove_temp_file.
  Result<TempSweep> remove_stale_generations() noexcept;

  /// The generation DIR/current names; when DIR/current is missing, the
  /// newest complete generation (0: none yet).
  std::uint64_t current() const noexcept { return current_; }
  /// Files added to the next generation.
  std::size_t size() const noexcept { return files_.size(); }
  /// The snapshot directory's path, as given to open().
  std::string_view path() const noexcept { return dir_.path(); }

 private:
  using Directory = AtomicDirectory<SyncPolicy, Fs>;
  using FsRef = std::remove_reference_t<Fs>;
  struct File {
    int fd = -1;
    unsigned mode = 0;
    std::size_t name_len = 0;
    char name[ATOMIC_STATE_NAME_MAX + 1] = {};
  };

  explicit SnapshotWriter(Directory dir) noexcept : dir_(std::move(dir)) {}
  Status read_current(bool& missing) noexcept;
  Status list() noexcept;
  Status recover_current() noexcept;
  Status begin_generation() noexcept;
  Status make_durable() noexcept;
  Status swap_current() noexcept;
  Status prune(TempSweep& sweep, bool generations = true) noexcept;
  Status retire_generation(std::uint64_t n, TempSweep& sweep) noexcept;
  Status remove_tree(const char* name, int fd, TempSweep& sweep) noexcept;
  Status fail(Step step, int r, std::string_view subject, std::string_view target = {},
              const char* note = nullptr, bool replaced = false) const noexcept;
  void release() noexcept;

  Directory dir_;
  SnapshotOptions options_;
  int lock_fd_ = -1;
  int generation_fd_ = -1;         // of the generation being built
  std::uint64_t generation_ = 0;   // its number, 0 when none
  bool generation_named_ = false;  // renamed to gen-N, not yet current
  std::uint64_t current_ = 0;
  std::uint64_t device_ = 0;  // DIR's: a directory on another is not the writer's
  std::vector<File> files_;
  detail::SnapshotEntries entries_;  // the last listing of DIR, its storage kept
  detail::GenerationFiles names_;    // the last listing of a generation, likewise
};

/// A reader's lease on the snapshot current when it opened: the
/// generation's directory, held open and locked (a shared flock) until the
/// reader is destroyed, so that no SnapshotWriter's publish or open removes
/// it, whatever `keep` says and however many publishes follow. Read the
/// set's files relative to descriptor() (openat); they are one whole set.
///
/// open() reads DIR/current, opens the generation it names and locks it
/// without waiting; a generation a writer is removing at that moment (its
/// exclusive lock held, or already renamed away) is let go and current
/// read again, up to 100 times. A reader holds its generation for as long
/// as it lives: a long-lived reader keeps an old generation on disk; open
/// a new one to follow publishes. Move-only; not for several threads at
/// once. A reader without a lease: see SnapshotWriter.
template <class Fs = PosixFs>
class SnapshotReader {
  static_assert(is_snapshot_reader_filesystem_v<Fs>,
                "SnapshotReader: Fs needs open_directory, read_link, open_directory_at, "
                "try_lock_shared, file_info, entry_info and close (see PosixFs)");

 public:
  /// Opens DIR and takes a lease on the generation DIR/current names.
  /// Failures: check_path (a bad path; DIR/current not a symlink naming a
  /// gen-N: EINVAL), open_directory (DIR, or the generation), open_file
  /// (ENOENT: DIR/current missing: nothing published yet, or taken
  /// offline), lock_run (the shared lock refused: a filesystem without
  /// flock; EAGAIN: current kept naming generations being removed).
  template <class F = Fs, std::enable_if_t<std::is_default_constructible_v<F>, int> = 0>
  static Result<SnapshotReader> open(PathView dir) noexcept {
    return open(dir, F());
  }
  static Result<SnapshotReader> open(PathView dir, Fs fs) noexcept;

  SnapshotReader(SnapshotReader&& other) noexcept;
  SnapshotReader& operator=(SnapshotReader&& other) noexcept;
  SnapshotReader(const SnapshotReader&) = delete;
  SnapshotReader& operator=(const SnapshotReader&) = delete;
  /// Releases the lease: a later publish or open may remove the generation.
  ~SnapshotReader();

  /// The generation's directory, for openat(descriptor(), name, ...): its
  /// files are one whole set while this reader lives. -1 once moved from.
  int descriptor() const noexcept { return generation_fd_; }
  /// The generation's number, N of DIR/gen-N.
  std::uint64_t generation() const noexcept { return generation_; }

 private:
  using FsRef = std::remove_reference_t<Fs>;
  explicit SnapshotReader(Fs fs) noexcept : fs_(static_cast<Fs&&>(fs)) {}
  void release() noexcept;

  Fs fs_;
  int generation_fd_ = -1;
  std::uint64_t generation_ = 0;
};

// ========================================================= implementation ====

// ---------------------------------------------------------- SnapshotWriter --

namespace detail {
// Whether a failed unlink met a directory: EISDIR on Linux, EPERM where
// POSIX's wording is followed. An EPERM is looked at to tell.
template <class Call>
bool is_directory_refusal(Call& call, int dir_fd, const char* name, int r) noexcept {
  if (r != -EISDIR && r != -EPERM) return false;
  FileInfo info;
  return call.entry_info(dir_fd, name, info) >= 0 && info.type == FileType::directory;
}
// Whether the system refused a removal for want of permission: an entry of
// another user's (what a run as root left in a directory of a normal user,
// a sticky directory's entry of someone else's), left and counted.
inline bool is_refusal(int r) noexcept { return r == -EACCES || r == -EPERM; }
}  // namespace detail

template <class S, class Fs>
Result<SnapshotWriter<S, Fs>> SnapshotWriter<S, Fs>::open(PathView dir, Fs fs,
                                                          const SnapshotOptions& options) noexcept {
  const auto invalid = [&](const char* why) {
    return Status(Step::check_path, std::make_error_code(std::errc::invalid_argument), dir.text(),
                  {}, false, why);
  };
  if (options.keep == 0) return invalid("SnapshotOptions::keep must be at least 1");
  if (options.directory_mode > 07777) return invalid("SnapshotOptions::directory_mode above 07777");
  Result<Directory> opened = Directory::open(dir, static_cast<Fs&&>(fs), options.missing);
  if (!opened) return opened.status();
  SnapshotWriter writer(std::move(*opened));
  writer.options_ = options;
  detail::Retrying<FsRef> call(writer.dir_.filesystem());
  const int dir_fd = writer.dir_.descriptor();
  const detail::JoinedPath lock_path(writer.path(), ".snapshot.lock");
  const int fd = call.open_or_create(dir_fd, ".snapshot.lock", 0600);
  if (fd < 0) return writer.fail(Step::lock_run, fd, lock_path.view());
  writer.lock_fd_ = fd;
  FileInfo info;
  if (const int r = call.file_info(fd, info); r < 0)
    return writer.fail(Step::lock_run, r, lock_path.view());
  if (info.type != FileType::regular)
    return writer.fail(Step::lock_run, -EINVAL, lock_path.view(), {},
                       "the lock file is not a regular file");
  // A name planted by whoever can write into DIR: a second name of a file
  // elsewhere, or another user's file. Its chmod would change that file.
  if (info.links > 1)
    return writer.fail(Step::lock_run, -EPERM, lock_path.view(), {},
                       "the lock file is a hard link to a file elsewhere, not the "
                       "SnapshotWriter's own: remove it");
  // Root, in a directory of another user, takes that user's lock file as
  // its own, and changes nothing in the file (detail::lock_file_owner).
  detail::LockFileOwner owner;
  if constexpr (detail::has_user_id<FsRef>::value) {
    owner = detail::lock_file_owner(call, dir_fd, call.user_id(), info.owner);
    if (!owner.taken)
      return writer.fail(Step::lock_run, -EPERM, lock_path.view(), {},
                         "the lock file belongs to another user, not the SnapshotWriter's own: "
                         "remove it");
  }
  if (const int r = call.try_lock(fd); r < 0)
    return writer.fail(
        Step::lock_run, r, lock_path.view(), {},
        r == -EWOULDBLOCK ? "another SnapshotWriter has the directory open" : nullptr);
  // Whoever can open the lock file can hold it forever: only its owner.
  if ((info.mode & 077) != 0 && !owner.hands_off)
    if (const int r = call.set_mode(fd, 0600); r < 0)
      return writer.fail(Step::lock_run, r, lock_path.view(), {},
                         "the lock file is open to other users and cannot be made 0600");
  bool missing = false;
  if (Status read = writer.read_current(missing); !read) return read;
  if (missing)
    if (Status recovered = writer.recover_current(); !recovered) return recovered;
  TempSweep swept;
  if (Status pruned = writer.prune(swept, !missing); !pruned) return pruned;
  // A killed publisher's directory claim, as any stale temp file, went
  // with the sweep of the handle's open.
  return Result<SnapshotWriter>(std::move(writer));
}

template <class S, class Fs>
SnapshotWriter<S, Fs>::SnapshotWriter(SnapshotWriter&& other) noexcept
    : dir_(std::move(other.dir_)),
      options_(other.options_),
      lock_fd_(std::exchange(other.lock_fd_, -1)),
      generation_fd_(std::exchange(other.generation_fd_, -1)),
      generation_(std::exchange(other.generation_, 0)),
      generation_named_(std::exchange(other.generation_named_, false)),
      current_(other.current_),
      device_(other.device_),
      files_(std::move(other.files_)),
      entries_(std::move(other.entries_)),
      names_(std::move(other.names_)) {}

template <class S, class Fs>
SnapshotWriter<S, Fs>& SnapshotWriter<S, Fs>::operator=(SnapshotWriter&& other) noexcept {
  if (this == &other) return *this;
  release();
  dir_ = std::move(other.dir_);
  options_ = other.options_;
  lock_fd_ = std::exchange(other.lock_fd_, -1);
  generation_fd_ = std::exchange(other.generation_fd_, -1);
  generation_ = std::exchange(other.generation_, 0);
  generation_named_ = std::exchange(other.generation_named_, false);
  current_ = other.current_;
  device_ = other.device_;
  files_ = std::move(other.files_);
  entries_ = std::move(other.entries_);
  names_ = std::move(other.names_);
  return *this;
}

template <class S, class Fs>
SnapshotWriter<S, Fs>::~SnapshotWriter() {
  release();
}

template <class S, class Fs>
void SnapshotWriter<S, Fs>::release() noexcept {
  discard();
  if (lock_fd_ >= 0) (void)dir_.filesystem().close(std::exchange(lock_fd_, -1));
}

template <class S, class Fs>
Status SnapshotWriter<S, Fs>::fail(Step step, int r, std::string_view subject,
                                   std::string_view target, const char* note,
                                   bool replaced) const noexcept {
  return Status(step, detail::system_error(r), subject, target, replaced, note);
}

// DIR's device first, which every directory the writer empties must be on
// (remove_tree). Then DIR/current: a symlink to a generation, or missing
// (before the first publish, or removed by an operator). Anything else
// belongs to someone else and is left alone.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::read_current(bool& missing) noexcept {
  char target[32];
  detail::Retrying<FsRef> call(dir_.filesystem());
  FileInfo dir_info;
  if (const int r = call.file_info(dir_.descriptor(), dir_info); r < 0)
    return fail(Step::open_directory, r, path());
  device_ = dir_info.device;
  const ssize_t r = call.read_link(dir_.descriptor(), "current", target, sizeof target);
  const detail::JoinedPath current(path(), "current");
  missing = r == -ENOENT;
  if (missing) {
    current_ = 0;
    return {};
  }
  if (r == -EINVAL) return fail(Step::check_path, -EINVAL, current.view(), {}, "not a symlink");
  if (r < 0 && r != -ENAMETOOLONG)
    return fail(Step::check_path, static_cast<int>(r), current.view());
  current_ =
      r < 0 ? 0 : detail::generation_of(std::string_view(target, static_cast<std::size_t>(r)));
  if (current_ == 0)
    return fail(Step::check_path, -EINVAL, current.view(), {},
                "the symlink names no generation (gen-N) of the directory");
  return {};
}

template <class S, class Fs>
Status SnapshotWriter<S, Fs>::list() noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  entries_.clear();
  if (const int r =
          call.list_directory(dir_.descriptor(), &detail::SnapshotEntries::add, &entries_);
      r < 0)
    return fail(Step::remove_temp_file, r, path());
  if (entries_.out_of_memory) return fail(Step::remove_temp_file, -ENOMEM, path());
  return {};
}

// DIR/current missing, generations present: an operator took the feed
// offline, or the first publish was killed before its swap. Each gen-N is
// complete (named so only once its files were durable); the newest that is
// a directory stands for current, so that nothing is removed and the next
// generation is numbered after it.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::recover_current() noexcept {
  if (Status listed = list(); !listed) return listed;
  detail::Retrying<FsRef> call(dir_.filesystem());
  for (const auto& g : entries_.generations) {
    if (g.state != detail::GenerationState::complete || g.number <= current_) continue;
    FileInfo info;
    if (call.entry_info(dir_.descriptor(), detail::GenerationName(g.number).c_str(), info) >= 0 &&
        info.type == FileType::directory)
      current_ = g.number;
  }
  return {};
}

// A new generation directory, .building-gen-N, numbered after current and
// after every name of the directory that follows it, so that a reader
// never meets a name it saw before naming other files (only a generation
// that was current has been seen, and none newer than current survives an
// open). A foreign name far ahead (gen-99999...) is not followed.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::begin_generation() noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  if (Status listed = list(); !listed)
    return fail(Step::create_directory, static_cast<int>(-listed.code().value()), path(), {},
                "listing the generations");
  std::uint64_t n = current_;
  int r = -EEXIST;
  for (int tries = 0; r == -EEXIST && tries < 100; ++tries) {
    // Past the largest number, gen-0 would follow: a name no reader takes
    // for newer, and that open() refuses.
    do {
      if (n == std::numeric_limits<std::uint64_t>::max())
        return fail(Step::create_directory, -EOVERFLOW, path(), {},
                    "no generation number is left after gen-18446744073709551615");
      ++n;
    } while (entries_.contains(n));
    r = call.make_directory_at(dir_fd,
                               detail::GenerationName(n, detail::GenerationState::building).c_str(),
                               options_.directory_mode);
  }
  const detail::GenerationName name(n, detail::GenerationState::building);
  const detail::JoinedPath where(path(), name.c_str());
  if (r < 0) return fail(Step::create_directory, r, where.view());
  const int fd = call.open_directory_at(dir_fd, name.c_str());
  if (fd < 0) {
    (void)call.remove_directory(dir_fd, name.c_str());
    return fail(Step::open_directory, fd, where.view());
  }
  generation_fd_ = fd;
  generation_ = n;
  generation_named_ = false;
  if (const int set = call.set_mode(fd, options_.directory_mode); set < 0) {
    Status failed = fail(Step::set_permissions, set, where.view());
    discard();
    return failed;
  }
  return {};
}

template <class S, class Fs>
Status SnapshotWriter<S, Fs>::add(std::string_view name, std::string_view data,
                                  unsigned perm) noexcept {
  const auto refused = [&](std::errc code, const char* why) {
    const detail::JoinedPath target(detail::JoinedPath(path(), "current").view(), name);
    return Status(Step::check_path, std::make_error_code(code), target.view(), {}, false, why);
  };
  if (lock_fd_ < 0)
    return Status(Step::invalid_use, std::make_error_code(std::errc::bad_file_descriptor), name, {},
                  false, "the SnapshotWriter was moved from");
  if (perm > 07777) return refused(std::errc::invalid_argument, "mode above 07777");
  if (name.empty() || name.find('/') != std::string_view::npos || name == "." || name == "..")
    return refused(std::errc::invalid_argument,
                   "not a file name (empty, \".\", \"..\", or with a '/')");
  if (name.find('\0') != std::string_view::npos)
    return refused(std::errc::invalid_argument, "name contains a NUL byte");
  if (name.size() > ATOMIC_STATE_NAME_MAX)
    return refused(std::errc::filename_too_long, "file name too long");
  if (const char* why = detail::owned_name_problem(name))
    return refused(std::errc::invalid_argument, why);
  for (const File& file : files_)
    if (std::string_view(file.name, file.name_len) == name)
      return refused(std::errc::file_exists, "the snapshot already has this file");
  ATOMIC_STATE_DETAIL_TRY { files_.emplace_back(); }
  ATOMIC_STATE_DETAIL_CATCH_ALL {
    return refused(std::errc::not_enough_memory, "no memory for one more file");
  }
  File& file = files_.back();
  file.mode = perm;
  file.name_len = name.size();
  std::memcpy(file.name, name.data(), name.size());
  file.name[name.size()] = '\0';
  const auto given_up = [&](Status failure) {
    files_.pop_back();
    return failure;
  };
  if (generation_ == 0)
    if (Status begun = begin_generation(); !begun) return given_up(begun);
  detail::Retrying<FsRef> call(dir_.filesystem());
  const detail::JoinedPath generation(
      path(), detail::GenerationName(generation_, detail::GenerationState::building).c_str());
  const detail::JoinedPath created(generation.view(), name);
  const detail::JoinedPath seen(detail::JoinedPath(path(), "current").view(), name);
  const int fd = call.create_file(generation_fd_, file.name, 0600);
  if (fd < 0) return given_up(fail(Step::create_temp_file, fd, created.view(), seen.view()));
  file.fd = fd;
  bool stalled = false;
  if (const int r = detail::write_all(call, fd, data.data(), data.size(), stalled); r < 0) {
    (void)call.close(fd);
    (void)call.unlink(generation_fd_, file.name);
    return given_up(fail(Step::write_data, r, created.view(), seen.view(),
                         stalled ? "the write kept returning 0 bytes" : nullptr));
  }
  return {};
}

// The files' bytes and modes durable, their writebacks overlapping, then
// the generation directory's entries.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::make_durable() noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const detail::JoinedPath generation(
      path(), detail::GenerationName(generation_, detail::GenerationState::building).c_str());
  const auto failed = [&](Step step, int r, const File& file) {
    const detail::JoinedPath where(generation.view(), std::string_view(file.name, file.name_len));
    return fail(step, r, where.view());
  };
  for (const File& file : files_)
    if (const int r = call.set_mode(file.fd, file.mode); r < 0)
      return failed(Step::set_permissions, r, file);
  if constexpr (S::file != SyncLevel::none && detail::has_start_writeback<FsRef>::value)
    for (const File& file : files_) (void)call.start_writeback(file.fd);
  for (const File& file : files_) {
    int r = 0;
    if constexpr (S::file == SyncLevel::full)
      r = call.sync_full(file.fd);
    else if constexpr (S::file == SyncLevel::data)
      r = call.sync_data(file.fd);
    if (r < 0) return failed(Step::sync_file, r, file);
  }
  for (File& file : files_)
    if (const int r = call.close(std::exchange(file.fd, -1)); r < 0)
      return failed(Step::close_temp_file, r, file);
  if constexpr (S::directory)
    if (const int r = call.sync_full(generation_fd_); r < 0)
      return fail(Step::sync_directory, r, generation.view());
  return {};
}

// The generation named gen-N (complete from here on), then DIR/current
// swapped to it by a rename, which readers see whole: the temp symlink and
// the generation's name are durable before it, the rename after it.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::swap_current() noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  const detail::GenerationName building(generation_, detail::GenerationState::building);
  const detail::GenerationName generation(generation_);
  if (const int r = call.rename_noreplace(dir_fd, building.c_str(), generation.c_str()); r < 0) {
    const detail::JoinedPath from(path(), building.c_str());
    const detail::JoinedPath to(path(), generation.c_str());
    return fail(Step::rename, r, from.view(), to.view());
  }
  generation_named_ = true;
  char temp[20];
  int r = -EEXIST;
  for (int tries = 0; r == -EEXIST && tries < 100; ++tries) {
    static constexpr char kLinkPrefix[] = ".current";  // then make_temp_name's 12 bytes
    std::copy_n(kLinkPrefix, 8, temp);
    detail::make_temp_name(temp + 8);
    r = call.make_symlink(generation.c_str(), dir_fd, temp);
  }
  const detail::JoinedPath link(path(), temp);
  const detail::JoinedPath current(path(), "current");
  if (r < 0) return fail(Step::create_temp_file, r, link.view(), current.view());
  const auto given_up = [&](Status failure) {
    (void)call.unlink(dir_fd, temp);
    return failure;
  };
  if constexpr (S::directory)
    if (const int synced = call.sync_full(dir_fd); synced < 0)
      return given_up(fail(Step::sync_directory, synced, path(), current.view()));
  if (const int renamed = call.rename(dir_fd, temp, "current"); renamed < 0)
    return given_up(fail(Step::rename, renamed, link.view(), current.view()));
  current_ = generation_;
  generation_ = 0;
  generation_named_ = false;
  (void)call.close(std::exchange(generation_fd_, -1));
  if constexpr (S::directory)
    if (const int synced = call.sync_full(dir_fd); synced < 0)
      return fail(Step::sync_directory, synced, path(), current.view(), nullptr, true);
  return {};
}

template <class S, class Fs>
Status SnapshotWriter<S, Fs>::publish() noexcept {
  if (files_.empty())
    return Status(Step::invalid_use, std::make_error_code(std::errc::invalid_argument), path(), {},
                  false, "an empty snapshot: add a file first");
  if (Status durable = make_durable(); !durable) {
    discard();
    return durable;
  }
  if (Status swapped = swap_current(); !swapped) {
    if (!swapped.replaced()) discard();
    files_.clear();
    return swapped;
  }
  files_.clear();
  TempSweep swept;
  // The swap is durable here (as durable as the policy makes anything):
  // what failed is only the removal of an old generation, which the next
  // publish or open tries again. replaced() is for a swap not known to be
  // durable; this one is.
  if (Status pruned = prune(swept); !pruned) {
    const detail::JoinedPath current(path(), "current");
    return Status(pruned.step(), pruned.code(), pruned.path(), current.view(), false,
                  S::directory ? "the snapshot was published and is durable; an old "
                                 "generation was not removed"
                               : "the snapshot was published (NoSync: not known to be "
                                 "durable); an old generation was not removed");
  }
  return {};
}

// The generation being built (or named gen-N but never current) is
// removed: no reader entered it.
template <class S, class Fs>
void SnapshotWriter<S, Fs>::discard() noexcept {
  if (generation_ == 0) return;
  detail::Retrying<FsRef> call(dir_.filesystem());
  for (File& file : files_)
    if (file.fd >= 0) (void)call.close(std::exchange(file.fd, -1));
  files_.clear();
  const detail::GenerationName name(std::exchange(generation_, 0),
                                    std::exchange(generation_named_, false)
                                        ? detail::GenerationState::complete
                                        : detail::GenerationState::building);
  TempSweep ignored;
  (void)remove_tree(name.c_str(), std::exchange(generation_fd_, -1), ignored);
}

template <class S, class Fs>
Result<TempSweep> SnapshotWriter<S, Fs>::remove_stale_generations() noexcept {
  if (lock_fd_ < 0)
    return Status(Step::invalid_use, std::make_error_code(std::errc::bad_file_descriptor), path(),
                  {}, false, "the SnapshotWriter was moved from");
  TempSweep swept;
  if (Status pruned = prune(swept); !pruned) return pruned;
  return swept;
}

// Under the writer's lock no other publisher is at work, so every temp
// symlink is stale, and so is every generation being built or removed but
// this writer's own, and every generation newer than current (a killed
// publisher's). Of the older ones, the newest keep-1 stay for readers
// still inside them; so does any a reader holds. `generations` false: no
// gen-N is removed (DIR/current is missing).
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::prune(TempSweep& sweep, bool generations) noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  if (Status listed = list(); !listed) return listed;
  for (const auto& link : entries_.temp_links) {
    const int r = call.unlink(dir_fd, link.data());
    if (r < 0 && detail::is_directory_refusal(call, dir_fd, link.data(), r)) {
      ++sweep.not_regular;  // a directory of someone else's under a temp link's name
      continue;
    }
    if (detail::is_refusal(r)) {
      ++sweep.not_permitted;  // another user's, in a directory that lets only them remove it
      continue;
    }
    if (r == -EBUSY) {
      ++sweep.not_regular;  // a mount point (a file bind-mounted there): not the writer's
      continue;
    }
    if (r < 0 && r != -ENOENT) {
      const detail::JoinedPath where(path(), link.data());
      return fail(Step::remove_temp_file, r, where.view());
    }
    sweep.removed += r == 0 ? 1 : 0;
  }
  auto& found = entries_.generations;
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.number > b.number;  // newest first
  });
  unsigned older_kept = 0;
  for (const auto& g : found) {
    const std::uint64_t n = g.number;
    if (g.state != detail::GenerationState::complete) {
      if (n == generation_ && !generation_named_ && g.state == detail::GenerationState::building)
        continue;  // this writer's own, being built
      const detail::GenerationName name(n, g.state);
      if (Status removed = remove_tree(name.c_str(), -1, sweep); !removed) return removed;
      continue;
    }
    if (!generations || n == current_ || (n == generation_ && generation_named_)) continue;
    if (n < current_ && older_kept + 1 < options_.keep) {
      ++older_kept;
      continue;
    }
    if (Status retired = retire_generation(n, sweep); !retired) return retired;
  }
  return {};
}

// A generation leaves its name gen-N while it is locked exclusively, which
// no reader holding it lets happen: a reader who locks it later finds the
// name gone and reads current again. Emptied and removed under the new
// name, a failure half-way leaves .removing-gen-N, which no reader takes.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::retire_generation(std::uint64_t n, TempSweep& sweep) noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  const detail::GenerationName name(n);
  const detail::JoinedPath where(path(), name.c_str());
  const int fd = call.open_directory_at(dir_fd, name.c_str());
  if (fd == -ENOENT) return {};
  if (fd == -ENOTDIR || fd == -ELOOP) {
    ++sweep.not_regular;  // a file or symlink named as a generation: not the writer's
    return {};
  }
  if (detail::is_refusal(fd)) {
    ++sweep.not_permitted;  // another user's, closed to this one
    return {};
  }
  if (fd < 0) return fail(Step::remove_temp_file, fd, where.view());
  const int locked = call.try_lock(fd);
  if (locked == -EWOULDBLOCK || locked == -EAGAIN) {
    ++sweep.in_use;  // a SnapshotReader holds it
    (void)call.close(fd);
    return {};
  }
  // Another failure (a filesystem without flock): no reader can hold a
  // lease there either.
  const detail::GenerationName removing(n, detail::GenerationState::removing);
  if (const int r = call.rename(dir_fd, name.c_str(), removing.c_str()); r < 0) {
    (void)call.close(fd);
    if (r == -ENOTEMPTY || r == -EEXIST || r == -ENOTDIR || r == -EBUSY) {
      // A .removing-gen-N of someone else's in the way (a file under that
      // name: ENOTDIR), or a mount point under either name (EBUSY: a
      // filesystem mounted there, never the writer's to empty). gen-N
      // stays, tried again by every prune; no new generation takes a
      // number already in the directory.
      ++sweep.not_regular;
      return {};
    }
    if (detail::is_refusal(r)) {
      ++sweep.not_permitted;  // a sticky directory's entry of another user
      return {};
    }
    return fail(Step::remove_temp_file, r, where.view());
  }
  return remove_tree(removing.c_str(), fd, sweep);
}

// Empties the directory `name` of DIR and removes it. `fd`: its descriptor
// when already open (closed here, after the removal, so that a lock held
// through it lasts to the end), or -1. A directory inside it is not the
// writer's: left, with its parent, and counted (not_regular). What the
// system refuses to remove for want of permission (another user's
// generation, such as one a run as root left) is left likewise, counted
// once as not_permitted. A mount point is not the writer's either, and
// nothing in it is listed or removed: a directory not on DIR's device (a
// filesystem mounted there), and what the system refuses to remove as a
// mount point (EBUSY: a bind mount of the same filesystem, which shares
// its device; for a name not yet open, its removal is tried first, which
// removes an empty directory and refuses a mount point before anything in
// it is looked at). Each is left, counted (not_regular).
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::remove_tree(const char* name, int fd, TempSweep& sweep) noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  const detail::JoinedPath where(path(), name);
  if (fd < 0) {
    // Another failure (ENOTEMPTY, EEXIST, a file's ENOTDIR) is the next
    // calls' to tell.
    const int removed = call.remove_directory(dir_fd, name);
    if (removed == 0) ++sweep.removed;
    if (removed == 0 || removed == -ENOENT) return {};
    if (removed == -EBUSY) {
      ++sweep.not_regular;  // a mount point
      return {};
    }
    fd = call.open_directory_at(dir_fd, name);
    if (fd == -ENOENT) return {};
    if (fd == -ENOTDIR || fd == -ELOOP) {
      ++sweep.not_regular;
      return {};
    }
    if (detail::is_refusal(fd)) {
      ++sweep.not_permitted;
      return {};
    }
    if (fd < 0) return fail(Step::remove_temp_file, fd, where.view());
  }
  FileInfo info;
  if (const int r = call.file_info(fd, info); r < 0 || info.device != device_) {
    (void)call.close(fd);
    if (r >= 0) {
      ++sweep.not_regular;  // another filesystem, mounted there
      return {};
    }
    if (detail::is_refusal(r)) {
      ++sweep.not_permitted;
      return {};
    }
    return fail(Step::remove_temp_file, r, where.view());
  }
  names_.clear();
  int r = call.list_directory(fd, &detail::GenerationFiles::add, &names_);
  if (r >= 0 && names_.out_of_memory) r = -ENOMEM;
  bool foreign = false;
  bool refused = detail::is_refusal(r);
  if (refused) r = 0;
  for (std::size_t i = 0; r >= 0 && !refused && i < names_.names.size(); ++i) {
    r = call.unlink(fd, names_.names[i].data());
    if (r == -ENOENT) r = 0;
    // A directory, or a mount point (a file bind-mounted there: EBUSY).
    if (r == -EBUSY ||
        (r < 0 && detail::is_directory_refusal(call, fd, names_.names[i].data(), r))) {
      foreign = true;
      r = 0;
    }
    if (detail::is_refusal(r)) {
      refused = true;  // the generation's directory is another user's: so is the rest
      r = 0;
    }
  }
  if (r >= 0 && !foreign && !refused) {
    r = call.remove_directory(dir_fd, name);
    if (r == -ENOENT) r = 0;
    if (r == -EBUSY) {
      foreign = true;  // mounted on since it was opened
      r = 0;
    } else if (detail::is_refusal(r)) {
      refused = true;
      r = 0;
    }
    if (r == 0 && !refused && !foreign) ++sweep.removed;
  }
  (void)call.close(fd);
  if (foreign) ++sweep.not_regular;
  if (refused) ++sweep.not_permitted;
  if (r < 0) return fail(Step::remove_temp_file, r, where.view());
  return {};
}

// ---------------------------------------------------------- SnapshotReader --

template <class Fs>
Result<SnapshotReader<Fs>> SnapshotReader<Fs>::open(PathView dir, Fs fs) noexcept {
  const detail::DirectoryPath path(dir.text());
  if (!path.ok()) return path.problem(Step::check_path);
  SnapshotReader reader(static_cast<Fs&&>(fs));
  detail::Retrying<FsRef> call(reader.fs_);
  const int dir_fd = call.open_directory(path.c_str());
  if (dir_fd < 0) return Status(Step::open_directory, detail::system_error(dir_fd), path.view());
  const detail::JoinedPath current(path.view(), "current");
  const auto given_up = [&](Status failure) {
    (void)call.close(dir_fd);
    return failure;
  };
  for (int tries = 0; tries < 100; ++tries) {
    char target[32];
    const ssize_t r = call.read_link(dir_fd, "current", target, sizeof target);
    if (r == -ENOENT)
      return given_up(Status(Step::open_file, detail::system_error(-ENOENT), current.view(), {},
                             false, "no snapshot is published: DIR/current is missing"));
    if (r == -EINVAL || r == -ENAMETOOLONG)
      return given_up(Status(Step::check_path, std::make_error_code(std::errc::invalid_argument),
                             current.view(), {}, false, "not a symlink naming a generation"));
    if (r < 0)
      return given_up(
          Status(Step::open_file, detail::system_error(static_cast<int>(r)), current.view()));
    const std::string_view name(target, static_cast<std::size_t>(r));
    const std::uint64_t n = detail::generation_of(name);
    if (n == 0)
      return given_up(Status(Step::check_path, std::make_error_code(std::errc::invalid_argument),
                             current.view(), {}, false,
                             "the symlink names no generation (gen-N) of the directory"));
    target[r] = '\0';
    const detail::JoinedPath where(path.view(), name);
    const int fd = call.open_directory_at(dir_fd, target);
    if (fd == -ENOENT) continue;  // removed since current was read: current moved on
    if (fd < 0)
      return given_up(Status(Step::open_directory, detail::system_error(fd), where.view()));
    const int locked = call.try_lock_shared(fd);
    if (locked == -EWOULDBLOCK || locked == -EAGAIN) {
      (void)call.close(fd);  // a writer is removing it
      continue;
    }
    if (locked < 0) {
      (void)call.close(fd);
      return given_up(Status(Step::lock_run, detail::system_error(locked), where.view(), {}, false,
                             "a SnapshotReader's lease needs flock"));
    }
    // Locked: no writer removes it from here on. One that began before
    // renamed it first: the name must still lead to this directory.
    FileInfo held, named;
    if (call.file_info(fd, held) >= 0 && call.entry_info(dir_fd, target, named) >= 0 &&
        held.device == named.device && held.inode == named.inode) {
      reader.generation_fd_ = fd;
      reader.generation_ = n;
      (void)call.close(dir_fd);
      return Result<SnapshotReader>(std::move(reader));
    }
    (void)call.close(fd);
  }
  return given_up(Status(
      Step::lock_run, std::make_error_code(std::errc::resource_unavailable_try_again),
      current.view(), {}, false, "current kept naming generations being removed (100 tries)"));
}

template <class Fs>
SnapshotReader<Fs>::SnapshotReader(SnapshotReader&& other) noexcept
    : fs_(static_cast<Fs&&>(other.fs_)),
      generation_fd_(std::exchange(other.generation_fd_, -1)),
      generation_(std::exchange(other.generation_, 0)) {}

template <class Fs>
SnapshotReader<Fs>& SnapshotReader<Fs>::operator=(SnapshotReader&& other) noexcept {
  if (this == &other) return *this;
  release();
  fs_ = static_cast<Fs&&>(other.fs_);
  generation_fd_ = std::exchange(other.generation_fd_, -1);
  generation_ = std::exchange(other.generation_, 0);
  return *this;
}

template <class Fs>
SnapshotReader<Fs>::~SnapshotReader() {
  release();
}

template <class Fs>
void SnapshotReader<Fs>::release() noexcept {
  if (generation_fd_ >= 0) (void)fs_.close(std::exchange(generation_fd_, -1));
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

#endif  // ATOMIC_STATE_SNAPSHOT_HPP
