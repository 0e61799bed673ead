// snapshot.hpp: SnapshotOptions, SnapshotWriter: sets of files published whole
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

/// How a SnapshotWriter keeps its generations. open() refuses options it
/// cannot use (Step::check_path, EINVAL).
struct SnapshotOptions {
  /// Generations kept after a publish: the current one and the newest
  /// before it, so that a reader who opened `current` just before a publish
  /// can still read its files. At least 1.
  unsigned keep = 2;
  /// Each generation directory's mode, exact (the umask is ignored); at
  /// most 07777.
  unsigned directory_mode = 0755;
  MissingDirectory missing = MissingDirectory::create;  ///< for the snapshot directory
};

/// A set of files that readers see change all at once. The files live in
/// a generation directory, DIR/gen-N, and DIR/current is a symlink naming
/// the complete one; a reader opens DIR/current once (open("DIR/current",
/// O_RDONLY | O_DIRECTORY)) and then reads the files relative to that
/// descriptor (openat), so it sees one whole set, old or new.
/// add() writes a file into a new generation (made at the first add);
/// publish() makes it durable and current:
///   1. each file's mode set, writeback started, synced and closed;
///   2. the generation directory synced;
///   3. a temp symlink DIR/.current.tmp-XXXXXX naming it made, DIR synced;
///   4. the temp symlink renamed over DIR/current, DIR synced;
///   5. generations beyond `keep` removed, the current one never.
/// After any crash DIR/current names a complete generation, old or new. A
/// failure before the rename removes the new generation; current is
/// untouched. A failure of the directory sync after it is reported with
/// replaced() true: readers see the new set, not known to be durable. A
/// failure to remove old generations (step 5) comes after the swap is
/// durable: replaced() is false, current() is the new generation, and the
/// message says "the snapshot was published and is durable; an old
/// generation was not removed" (under NoSync: "not known to be durable");
/// the next publish or open tries the removal again.
///
/// One publisher per directory at a time: open() takes a lock on
/// DIR/.snapshot.lock (mode 0600, so that no other user can hold it; one
/// open to others is made so) for the writer's life, and a second open()
/// fails with EWOULDBLOCK rather than waiting. A lock file that is not the
/// writer's own is refused (lock_run, EPERM) and left unchanged: a hard
/// link (a link count above 1), or a file of another user (where the Fs
/// has user_id). open() also removes what a
/// killed publisher left: generations newer than current, and temp
/// symlinks. A DIR/current that is not a symlink naming a gen-N belongs to
/// someone else: open() refuses it and removes nothing. Move-only.
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
  /// hard link or another user's), remove_temp_file.
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
  /// (ENAMETOOLONG) or added before (EEXIST); a mode above 07777 (EINVAL).
  /// Failures: create_directory (EOVERFLOW: the generations reached
  /// gen-18446744073709551615, and no number is left: nothing is made,
  /// current stays as it is), open_directory, set_permissions (the new
  /// generation, made at the first add), create_temp_file, write_data; the
  /// generation keeps its other files. A moved-from writer: invalid_use.
  Status add(std::string_view name, std::string_view data, unsigned perm = 0644) noexcept;
  /// Publishes the files added, as above. No file added: invalid_use
  /// (EINVAL). After a failure the files added are gone: add them again.
  Status publish() noexcept;
  /// Removes the unpublished generation, if any; current is untouched.
  void discard() noexcept;
  /// Removes, as open() and publish() do, the temp symlinks
  /// (.current.tmp-*), the generations newer than current (half-built by a
  /// killed publisher) and those older than the newest keep - 1 before
  /// current; a TempSweep counting the entries removed. Nothing else in DIR
  /// is touched. Failures: remove_temp_file.
  Result<TempSweep> remove_stale_generations() noexcept;

  /// The generation DIR/current names (0: none yet).
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
  struct GenerationName {
    char text[32] = {};
    explicit GenerationName(std::uint64_t n) noexcept;
    const char* c_str() const noexcept { return text; }
  };

  explicit SnapshotWriter(Directory dir) noexcept : dir_(std::move(dir)) {}
  Status read_current() noexcept;
  Status begin_generation() noexcept;
  Status make_durable() noexcept;
  Status swap_current() noexcept;
  Status prune(TempSweep& sweep) noexcept;
  Status remove_generation(std::uint64_t n) noexcept;
  Status fail(Step step, int r, std::string_view subject, std::string_view target = {},
              const char* note = nullptr, bool replaced = false) const noexcept;
  void release() noexcept;

  Directory dir_;
  SnapshotOptions options_;
  int lock_fd_ = -1;
  int generation_fd_ = -1;        // of the generation being built
  std::uint64_t generation_ = 0;  // its number, 0 when none
  std::uint64_t current_ = 0;
  std::vector<File> files_;
};

// ========================================================= implementation ====

// ---------------------------------------------------------- SnapshotWriter --

namespace detail {
/// The generation number of a name "gen-N" (N a decimal without leading
/// zeros, at least 1), or 0 when `name` is not one.
inline std::uint64_t generation_of(std::string_view name) noexcept {
  if (name.size() < 5 || name.size() > 24 || name.substr(0, 4) != "gen-" || name[4] == '0')
    return 0;
  std::uint64_t n = 0;
  const char* const end = name.data() + name.size();
  const auto [at, error] = std::from_chars(name.data() + 4, end, n);
  return error == std::errc() && at == end ? n : 0;
}

/// The names a snapshot directory holds that its writer manages.
struct SnapshotEntries {
  std::vector<std::uint64_t> generations;
  std::vector<std::array<char, 20>> temp_links;  // ".current.tmp-XXXXXX"
  bool out_of_memory = false;

  static void add(void* context, const char* name) noexcept {
    auto& self = *static_cast<SnapshotEntries*>(context);
    const std::string_view entry(name);
    ATOMIC_STATE_DETAIL_TRY {
      if (const std::uint64_t n = generation_of(entry); n != 0) {
        self.generations.push_back(n);
      } else if (entry.size() == 19 && entry.substr(0, 8) == ".current" &&
                 starts_as_temp_name(name + 8)) {
        std::array<char, 20> copy{};
        std::memcpy(copy.data(), name, 20);
        self.temp_links.push_back(copy);
      }
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL { self.out_of_memory = true; }
  }
};

/// The names of a generation directory's files, to remove them.
struct GenerationFiles {
  std::vector<std::array<char, ATOMIC_STATE_NAME_MAX + 1>> names;
  bool out_of_memory = false;

  static void add(void* context, const char* name) noexcept {
    auto& self = *static_cast<GenerationFiles*>(context);
    ATOMIC_STATE_DETAIL_TRY {
      std::array<char, ATOMIC_STATE_NAME_MAX + 1> copy{};
      std::strncpy(copy.data(), name, ATOMIC_STATE_NAME_MAX);
      self.names.push_back(copy);
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL { self.out_of_memory = true; }
  }
};
}  // namespace detail

template <class S, class Fs>
SnapshotWriter<S, Fs>::GenerationName::GenerationName(std::uint64_t n) noexcept {
  std::memcpy(text, "gen-", 4);
  *std::to_chars(text + 4, text + sizeof text - 1, n).ptr = '\0';
}

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
  if constexpr (detail::has_user_id<FsRef>::value)
    if (info.owner != call.user_id())
      return writer.fail(Step::lock_run, -EPERM, lock_path.view(), {},
                         "the lock file belongs to another user, not the SnapshotWriter's own: "
                         "remove it");
  if (const int r = call.try_lock(fd); r < 0)
    return writer.fail(
        Step::lock_run, r, lock_path.view(), {},
        r == -EWOULDBLOCK ? "another SnapshotWriter has the directory open" : nullptr);
  // Whoever can open the lock file can hold it forever: only its owner.
  if ((info.mode & 077) != 0)
    if (const int r = call.set_mode(fd, 0600); r < 0)
      return writer.fail(Step::lock_run, r, lock_path.view(), {},
                         "the lock file is open to other users and cannot be made 0600");
  if (Status read = writer.read_current(); !read) return read;
  TempSweep swept;
  if (Status pruned = writer.prune(swept); !pruned) return pruned;
  // A killed publisher's directory claim, as any stale temp file.
  if (Result<TempSweep> claims = writer.dir_.remove_stale_temp_files(); !claims)
    return claims.status();
  return Result<SnapshotWriter>(std::move(writer));
}

template <class S, class Fs>
SnapshotWriter<S, Fs>::SnapshotWriter(SnapshotWriter&& other) noexcept
    : dir_(std::move(other.dir_)),
      options_(other.options_),
      lock_fd_(std::exchange(other.lock_fd_, -1)),
      generation_fd_(std::exchange(other.generation_fd_, -1)),
      generation_(std::exchange(other.generation_, 0)),
      current_(other.current_),
      files_(std::move(other.files_)) {}

template <class S, class Fs>
SnapshotWriter<S, Fs>& SnapshotWriter<S, Fs>::operator=(SnapshotWriter&& other) noexcept {
  if (this == &other) return *this;
  release();
  dir_ = std::move(other.dir_);
  options_ = other.options_;
  lock_fd_ = std::exchange(other.lock_fd_, -1);
  generation_fd_ = std::exchange(other.generation_fd_, -1);
  generation_ = std::exchange(other.generation_, 0);
  current_ = other.current_;
  files_ = std::move(other.files_);
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

// DIR/current: a symlink to a generation, or missing before the first
// publish. Anything else belongs to someone else and is left alone.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::read_current() noexcept {
  char target[32];
  detail::Retrying<FsRef> call(dir_.filesystem());
  const ssize_t r = call.read_link(dir_.descriptor(), "current", target, sizeof target);
  const detail::JoinedPath current(path(), "current");
  if (r == -ENOENT) {
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

// A new generation directory, numbered after every one the directory holds
// and after current, so that a reader never meets a name it saw before
// naming other files (a killed publisher's half-built one, which no reader
// entered, may be numbered again once removed).
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::begin_generation() noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  detail::SnapshotEntries entries;
  if (const int r = call.list_directory(dir_fd, &detail::SnapshotEntries::add, &entries); r < 0)
    return fail(Step::create_directory, r, path(), {}, "listing the generations");
  if (entries.out_of_memory) return fail(Step::create_directory, -ENOMEM, path());
  std::uint64_t n = current_;
  for (const std::uint64_t seen : entries.generations) n = seen > n ? seen : n;
  int r = -EEXIST;
  for (int tries = 0; r == -EEXIST && tries < 100; ++tries) {
    // Past the largest number, gen-0 would follow: a name no reader takes
    // for newer, and that open() refuses.
    if (n == std::numeric_limits<std::uint64_t>::max())
      return fail(Step::create_directory, -EOVERFLOW, path(), {},
                  "no generation number is left after gen-18446744073709551615");
    r = call.make_directory_at(dir_fd, GenerationName(++n).c_str(), options_.directory_mode);
  }
  const GenerationName name(n);
  const detail::JoinedPath where(path(), name.c_str());
  if (r < 0) return fail(Step::create_directory, r, where.view());
  const int fd = call.open_directory_at(dir_fd, name.c_str());
  if (fd < 0) {
    (void)call.remove_directory(dir_fd, name.c_str());
    return fail(Step::open_directory, fd, where.view());
  }
  generation_fd_ = fd;
  generation_ = n;
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
  const detail::JoinedPath generation(path(), GenerationName(generation_).c_str());
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
  const detail::JoinedPath generation(path(), GenerationName(generation_).c_str());
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

// DIR/current swapped to the new generation by a rename, which readers see
// whole: the temp symlink and the generation's own entry are durable before
// it, the rename after it.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::swap_current() noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  const GenerationName generation(generation_);
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

template <class S, class Fs>
void SnapshotWriter<S, Fs>::discard() noexcept {
  if (generation_ == 0) return;
  detail::Retrying<FsRef> call(dir_.filesystem());
  for (File& file : files_)
    if (file.fd >= 0) (void)call.close(std::exchange(file.fd, -1));
  files_.clear();
  if (generation_fd_ >= 0) (void)call.close(std::exchange(generation_fd_, -1));
  (void)remove_generation(std::exchange(generation_, 0));
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
// symlink is stale, and so is every generation newer than current (a
// killed publisher's). Of the older ones, the newest keep-1 stay for
// readers still inside them.
template <class S, class Fs>
Status SnapshotWriter<S, Fs>::prune(TempSweep& sweep) noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  detail::SnapshotEntries entries;
  if (const int r = call.list_directory(dir_fd, &detail::SnapshotEntries::add, &entries); r < 0)
    return fail(Step::remove_temp_file, r, path());
  if (entries.out_of_memory) return fail(Step::remove_temp_file, -ENOMEM, path());
  for (const auto& link : entries.temp_links) {
    const int r = call.unlink(dir_fd, link.data());
    if (r < 0 && r != -ENOENT) {
      const detail::JoinedPath where(path(), link.data());
      return fail(Step::remove_temp_file, r, where.view());
    }
    sweep.removed += r == 0 ? 1 : 0;
  }
  std::sort(entries.generations.begin(), entries.generations.end(),
            [](std::uint64_t a, std::uint64_t b) { return a > b; });  // newest first
  unsigned older_kept = 0;
  for (const std::uint64_t n : entries.generations) {
    if (n == current_ || n == generation_) continue;
    if (n < current_ && older_kept + 1 < options_.keep) {
      ++older_kept;
      continue;
    }
    if (Status removed = remove_generation(n); !removed) return removed;
    ++sweep.removed;
  }
  return {};
}

template <class S, class Fs>
Status SnapshotWriter<S, Fs>::remove_generation(std::uint64_t n) noexcept {
  detail::Retrying<FsRef> call(dir_.filesystem());
  const int dir_fd = dir_.descriptor();
  const GenerationName name(n);
  const detail::JoinedPath where(path(), name.c_str());
  const int fd = call.open_directory_at(dir_fd, name.c_str());
  if (fd == -ENOENT) return {};
  if (fd < 0) return fail(Step::remove_temp_file, fd, where.view());
  detail::GenerationFiles files;
  int r = call.list_directory(fd, &detail::GenerationFiles::add, &files);
  if (r >= 0 && files.out_of_memory) r = -ENOMEM;
  for (std::size_t i = 0; r >= 0 && i < files.names.size(); ++i) {
    r = call.unlink(fd, files.names[i].data());
    if (r == -ENOENT) r = 0;
  }
  (void)call.close(fd);
  if (r >= 0) r = call.remove_directory(dir_fd, name.c_str());
  if (r < 0 && r != -ENOENT) return fail(Step::remove_temp_file, r, where.view());
  return {};
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

#endif  // ATOMIC_STATE_SNAPSHOT_HPP
