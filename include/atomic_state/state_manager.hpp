// state_manager.hpp: StateOptions, RunLock, Loaded, StateTraits, StateManager
#ifndef ATOMIC_STATE_STATE_MANAGER_HPP
#define ATOMIC_STATE_STATE_MANAGER_HPP

#include "batch.hpp"
#include "logging.hpp"
#include "path.hpp"
#include "state.hpp"

#if ATOMIC_STATE_DETAIL_JSON
#include <algorithm>     // std::find
#include <atomic>        // std::atomic: what a manager remembers across threads
#include <charconv>      // std::to_chars, std::from_chars: pids and stamps
#include <cstddef>       // std::size_t
#include <cstdint>       // std::int64_t, std::uint64_t
#include <cstring>       // std::memcpy, std::memcmp, std::strcmp, std::strlen
#include <exception>     // std::exception: a throwing upgrade()
#include <new>           // std::bad_alloc
#include <optional>      // std::optional: cursors
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::errc, std::make_error_code
#include <type_traits>   // std::enable_if_t, std::conditional_t, std::is_*_v
#include <utility>       // std::move, std::exchange

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// ------------------------------------------------------------- StateManager --

/// What load_state does with a state file that is not a valid state.
enum class OnCorrupt : unsigned char {
  recover,  ///< keep a copy of its bytes, warn, and start from the zero state
  fail,     ///< return an error (Step::parse) and touch nothing
};

/// Where the state load_state returned came from.
enum class LoadOrigin : unsigned char {
  saved,      ///< the state file, as the last save left it
  first_run,  ///< no state file yet: the zero state
  recovered,  ///< the state file was corrupt: the zero state (OnCorrupt::recover)
  previous,   ///< the state file was corrupt: the state before it (keep_previous)
};

/// Lower-case words naming an origin, as used in logs ("first run").
constexpr std::string_view to_string(LoadOrigin origin) noexcept;

/// How a StateManager keeps its state. Every default is the rule of the Go
/// service this library grew from.
struct StateOptions {
  /// The size limit that is none: `max_state_size = no_size_limit`.
  static constexpr std::size_t no_size_limit = static_cast<std::size_t>(-1);

  /// The state file's name in the directory: not empty, no '/', not "." or
  /// "..", and none of the names the manager gives files of its own (a
  /// temp file's ".tmp-...", a name ending ".lock" or ".prev", a name
  /// holding ".corrupt-"), so that two managers with different names share
  /// a directory without touching each other's files. No NUL byte, and
  /// short enough for the names made from it (NAME_MAX - 40 bytes).
  std::string file_name = "state.json";
  /// The state file's mode, exact (the umask is ignored); at most 07777,
  /// with the owner's read bit (0400): a state its owner cannot read back
  /// is refused. 0600 for a state that holds tokens.
  unsigned file_mode = 0644;
  /// Whether a missing state directory is created (0755 less the umask, as
  /// mkdir -p, each level synced). When false, a missing directory is an
  /// error, never a first run: for a directory on a volume that may not be
  /// mounted. load_state, save_state and try_lock_run then fail alike with
  /// Step::open_directory, ENOENT, the note asking whether it is mounted.
  /// The directory try_lock_run or load_state opened (its device and inode;
  /// each lock and each load that opens it pins it anew) is also the only
  /// one later saves write into: a save finding another directory at the
  /// path (the volume unmounted mid-run, its mount point's directory there
  /// now) fails the same way, nothing written, and save_state(state, batch)
  /// gives up the whole batch. Outputs written beside the state should pass
  /// WriteOptions::create_directories = false too. When true, nothing is
  /// pinned: a save follows the path, making what is missing.
  bool create_directory = true;
  /// What load_state does with a corrupt state file.
  OnCorrupt on_corrupt = OnCorrupt::recover;
  /// How many copies of corrupt state files are kept beside the state; once
  /// there are more, the oldest (by the time in their names) are removed,
  /// each removal logged. Entries that are not this state's copies, or not
  /// regular files, are never counted or removed. 0: no copy is made.
  std::size_t corrupt_copies = 5;
  /// Whether each save first keeps the state it replaces as
  /// `<file_name>.prev` (a hard link: nothing is copied), for load_state
  /// to fall back to when the state file is corrupt. The link is made under
  /// a temp name and renamed over the old .prev, the directory synced, all
  /// before the state file is replaced. Nothing is linked when there is no
  /// state file yet, when it is the file this manager's load found corrupt
  /// (the same device and inode) and its bytes still do not read as a
  /// state (an inode number reused for a later state does not count), or
  /// when .prev already is it. Needs a filesystem with hard links (not
  /// FAT): without, a save fails with Step::keep_previous (EPERM,
  /// EOPNOTSUPP or EMLINK) and a note saying so. A state file of another
  /// user that the kernel will not link (EPERM under fs.protected_hardlinks,
  /// after a run under sudo, say) is not kept: the save goes on, with a
  /// warning "previous state not kept" naming the owner, and the next save
  /// (of a file now this user's own) keeps .prev again. An older .prev is
  /// then removed (the removal synced before the state is replaced), so
  /// that .prev is never older than the state before; one that cannot be
  /// removed is left, and the warning's older_previous says it is older.
  bool keep_previous = false;
  /// State files larger than this are refused, by load_state and by
  /// save_state alike. Every value is allowed: 0 refuses every non-empty
  /// file, no_size_limit refuses none. A file over the limit is an error
  /// (Step::check_file, EFBIG), never a corrupt file; a state whose text
  /// would exceed it is refused by save_state (Step::serialize, EFBIG).
  std::size_t max_state_size = ATOMIC_STATE_MAX_STATE_SIZE;

  /// Why these options cannot be used (Step::check_path), or success.
  Status check() const noexcept;
};

/// What load_state returns: the state itself (a Loaded<StateT> is a
/// StateT), where it came from, and where the bytes of a corrupt state
/// file were kept. A Result<Loaded<StateT>> converts to a Result<StateT>.
template <class StateT>
struct Loaded : StateT {
  static_assert(std::is_class_v<StateT> && !std::is_final_v<StateT>,
                "Loaded<StateT>: the state type must be a class that is not final");

  LoadOrigin origin = LoadOrigin::first_run;
  /// The copy of a corrupt state file's bytes (origin recovered or
  /// previous), or empty when none was kept.
  std::string corrupt_copy;

  StateT& state() & noexcept { return *this; }
  const StateT& state() const& noexcept { return *this; }
};

/// The run lock of one state (StateManager::try_lock_run): while it is
/// held, nobody else gets it, in this process or another. Released by
/// unlock() or the destructor, and by the kernel when the process dies,
/// SIGKILL included; a child forked while it is held holds it too. Never
/// waited for. Move-only. It closes its descriptor through the Fs it was
/// given: a copy of the manager's, or the same object when Fs is a
/// reference (which must then outlive the lock).
template <class Fs = PosixFs>
class RunLock {
 public:
  /// Holds nothing.
  RunLock() noexcept = default;
  /// Takes over `fd`, a descriptor that holds a lock.
  RunLock(Fs fs, int fd) noexcept;
  RunLock(RunLock&& other) noexcept;
  RunLock& operator=(RunLock&& other) noexcept;
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  ~RunLock() { unlock(); }

  bool owns_lock() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return owns_lock(); }
  /// Releases the lock now (closing its descriptor); then holds nothing.
  void unlock() noexcept;

 private:
  using FsRef = std::remove_reference_t<Fs>;
  using Held = std::conditional_t<std::is_reference_v<Fs>, FsRef*, FsRef>;
  FsRef& fs() noexcept {
    if constexpr (std::is_reference_v<Fs>)
      return *fs_;
    else
      return fs_;
  }

  Held fs_{};
  int fd_ = -1;
};

namespace detail {
// What reading a state file's text gave.
enum class Decoded : unsigned char { valid, corrupt, too_new, upgrade_failed, out_of_memory };

// Set once, by whichever thread gets there first. Copies carry the value,
// so a class holding one stays copyable and movable.
class OnceFlag {
 public:
  OnceFlag() noexcept = default;
  OnceFlag(const OnceFlag& other) noexcept : set_(other.set_.load()) {}
  OnceFlag& operator=(const OnceFlag& other) noexcept {
    set_.store(other.set_.load());
    return *this;
  }
  /// True for the first call only.
  bool first() noexcept { return !set_.exchange(true); }
  bool is_set() const noexcept { return set_.load(); }

 private:
  std::atomic<bool> set_{false};
};

// Which file (device and inode) a load found corrupt, so that a save does
// not keep it as the previous state. Copies carry the value.
class CorruptFile {
 public:
  CorruptFile() noexcept = default;
  CorruptFile(const CorruptFile& other) noexcept
      : device_(other.device_.load()), inode_(other.inode_.load()) {}
  CorruptFile& operator=(const CorruptFile& other) noexcept {
    device_.store(other.device_.load());
    inode_.store(other.inode_.load());
    return *this;
  }
  void remember(const FileInfo& file) noexcept {
    device_.store(file.device);
    inode_.store(file.inode);
  }
  bool is(const FileInfo& file) const noexcept {
    return inode_.load() == file.inode && device_.load() == file.device && file.inode != 0;
  }

 private:
  std::atomic<std::uint64_t> device_{0}, inode_{0};
};

// The state directory a manager with create_directory false locked or
// loaded: its device and inode, which every save compares with the
// directory at the path (a card unmounted mid-run leaves its mount point's
// directory there, on another disk). Atomic, as saves may race.
class PinnedDirectory {
 public:
  PinnedDirectory() noexcept = default;
  PinnedDirectory(const PinnedDirectory& other) noexcept { *this = other; }
  PinnedDirectory& operator=(const PinnedDirectory& other) noexcept {
    device_.store(other.device_.load());
    inode_.store(other.inode_.load());
    set_.store(other.set_.load());
    return *this;
  }
  void pin(const FileInfo& dir) noexcept {
    device_.store(dir.device);
    inode_.store(dir.inode);
    set_.store(true);  // after both: a save never compares with half a pin of zeros
  }
  /// Whether `dir` is the directory pinned, or nothing is.
  bool admits(const FileInfo& dir) const noexcept {
    return !set_.load() || (device_.load() == dir.device && inode_.load() == dir.inode);
  }
  bool is_set() const noexcept { return set_.load(); }

 private:
  std::atomic<std::uint64_t> device_{0}, inode_{0};  // two words: no libatomic needed
  std::atomic<bool> set_{false};
};

}  // namespace detail

/// Remembers a periodic job's state in `<dir>/state.json` (the name, mode
/// and rules are StateOptions).
///
/// - Sink: a LogSink, by value (default NullSink) or by reference
///   (`StateManager<MySink&>`) to share the application's sink;
///   `StateManager manager(dir, sink)` deduces the reference.
/// - StateT: State, or a type of one's own: a class, default-constructible,
///   with a field table (has_state_fields) or Boost.JSON conversions
///   (value_from and value_to or try_value_to), and a cursor StateTraits
///   can read. Read integers with value_to<T>, not as_uint64(): JSON text
///   does not keep Boost's int64/uint64 kind.
/// - SyncPolicy: how far a save syncs (FullSync, DataSync, NoSync).
/// - Fs: the filesystem policy every call goes through, by value or by
///   reference (`PosixFs`, or `MyFs&` to share a test's policy).
///
/// Threads: load_state, should_process, save_state and try_lock_run change
/// nothing in the manager that another call reads unsynchronised, so any
/// number of threads may call them at once on one manager (or on several
/// managers of one directory) provided the Sink and the Fs are thread-safe,
/// as NullSink, LogfmtSink and PosixFs are. Every save is atomic, so a
/// reader sees one whole state; when saves race, the last rename wins and
/// the others are lost: take the run lock to have one run at a time. The
/// setter is not thread-safe: call it before sharing the manager.
///
/// Failures are returned as a Status, not logged: the caller decides what
/// to say and whether to go on.
template <ATOMIC_STATE_DETAIL_LOG_SINK Sink = NullSink, class StateT = State,
          class SyncPolicy = FullSync, class Fs = PosixFs>
class StateManager {
  static_assert(is_log_sink_v<Sink>,
                "StateManager: Sink must be a log sink: it needs a member "
                "`log(atomic_state::Level, std::string_view message, "
                "atomic_state::Fields fields)` (see NullSink)");
  static_assert(std::is_default_constructible_v<StateT>,
                "StateManager: StateT must be default-constructible (the "
                "zero state of a first run)");
  static_assert(is_sync_policy_v<SyncPolicy>,
                "StateManager: SyncPolicy needs `static constexpr SyncLevel file` and "
                "`static constexpr bool directory` (see FullSync)");
  static_assert(is_state_filesystem_v<Fs>,
                "StateManager: Fs needs every call of PosixFs, the reading ones included "
                "(see is_state_filesystem)");
  static_assert(detail::has_cursor<StateT>::value || detail::has_last_updated<StateT>::value,
                "StateManager: StateT needs a cursor: a member `last_updated` (unix "
                "seconds), or a StateTraits<StateT> specialisation with "
                "`static std::optional<C> cursor(const StateT&) noexcept`");
  static_assert(detail::schema_version<StateT>::value >= 0,
                "StateManager: StateTraits<StateT>::version must not be negative");
  static_assert(detail::schema_version<StateT>::value == 0 || detail::has_upgrade<StateT>::value,
                "StateManager: a StateTraits<StateT> with a version above 0 needs "
                "`static void upgrade(boost::json::object& state, int from_version)`");

 public:
  using sink_type = Sink;
  using state_type = StateT;
  using sync_policy = SyncPolicy;
  using filesystem_type = Fs;
  /// What should_process compares: std::int64_t unix seconds by default,
  /// or the type of StateTraits<StateT>::cursor.
  using cursor_type = typename detail::CursorOf<StateT>::type;

  /// The size limit that is none: set_max_state_size(no_size_limit).
  static constexpr std::size_t no_size_limit = StateOptions::no_size_limit;

  /// A manager of `<dir>/<options.file_name>`; nothing is touched on disk
  /// until a call asks. `dir` is any path PathView takes (a string, a
  /// std::filesystem::path); an empty dir is the working directory. Options
  /// that cannot be used (StateOptions::check) make every call fail with
  /// their reason. Allocates the paths: std::bad_alloc is the only way it
  /// can fail.
  template <class S = Sink, std::enable_if_t<std::is_default_constructible_v<S>, int> = 0>
  explicit StateManager(PathView dir, StateOptions options = {})
      : StateManager(dir, S{}, std::move(options)) {}
  StateManager(PathView dir, Sink sink, StateOptions options = {});
  StateManager(PathView dir, Sink sink, Fs fs, StateOptions options = {});

  /// The state's directory, as given.
  const std::string& output_dir() const noexcept { return dir_; }
  /// `<dir>/<file_name>`.
  const std::string& state_file() const noexcept { return file_; }
  /// `<state file>.prev`, the previous state (StateOptions::keep_previous).
  const std::string& previous_file() const noexcept { return previous_file_; }
  /// `.<file name>.lock` in the state's directory: the run lock's file.
  const std::string& lock_file() const noexcept { return lock_file_; }
  const StateOptions& options() const noexcept { return options_; }

  /// Takes the run lock of this state, without waiting: one run at a time.
  /// A second holder (another process, or another manager of the same
  /// state in this one) gets Step::lock_run with the code
  /// std::errc::resource_unavailable_try_again, naming the state file and
  /// the holder's pid when it can be read. The lock file (lock_file(),
  /// created 0600) is the library's own: saves never take it, so it never
  /// makes a save wait, and `flock DIR` wrappers do not meet it. Taking it
  /// also proves early that the directory is usable: it is created when
  /// missing (StateOptions::create_directory) and must be writable.
  /// The lock file is opened without following a symlink (one there:
  /// ELOOP) and must be a regular file (else EINVAL) with one link (a hard
  /// link planted there: EMLINK) and of this process's user (another
  /// user's: EPERM), each refused with the file left as it is; one open to
  /// other users is made 0600; the holder writes its pid into it. Root, in
  /// a directory of another user, takes a lock file of the directory's
  /// owner too, and changes nothing in the lock file there (no chmod, no
  /// pid: that user could have put any file of root's at its name for a
  /// moment); after a run under sudo the owner removes root's lock file
  /// once. It is never
  /// removed: removing a lock file races with its next taker. A second
  /// taker's Status has path() the lock file, target() the state file,
  /// detail() "held by pid N": "take the run lock: lock run
  /// /var/lib/c/.state.json.lock for /var/lib/c/state.json: Resource
  /// temporarily unavailable (another run holds it) (held by pid 4242)".
  Result<RunLock<Fs>> try_lock_run() noexcept;

  /// The saved state and where it came from (LoadOrigin): saved, or
  /// first_run (info log, with the path) when there is no state file, or,
  /// for a corrupt state file, previous (the previous state, when
  /// keep_previous kept a valid one; warning) or recovered (the zero state,
  /// OnCorrupt::recover; warning) or an error (OnCorrupt::fail). A corrupt
  /// file is left where it is, for the next save to replace, and a copy of
  /// its bytes is kept beside it as `<file name>.corrupt-<its modification
  /// time, unix seconds>`, with ".1", ".2" after copies of files of the same
  /// second (numbered past the highest there, never into a freed number,
  /// so that a newer copy always ranks newer), the newest corrupt_copies of
  /// them. A file of an older schema version
  /// is upgraded (StateTraits::upgrade); one of a newer version, or whose
  /// upgrade fails, is Step::upgrade, nothing touched. Any other failure is
  /// an error and nothing is touched: a later save must not replace a good
  /// state that merely could not be read. A missing directory is a first
  /// run, or an error when create_directory is false; a symlink to nothing,
  /// at the state file or anywhere in the directory's path, is an error,
  /// since it usually means a volume that is not mounted. The first call
  /// also removes the temp files of saves that were killed (logged; its
  /// failure never fails the load). A corrupt file's bytes are copied once:
  /// the same bytes already under their name are not copied again. Under
  /// OnCorrupt::fail, without a valid previous state, a corrupt file is
  /// Step::parse with std::errc::bad_message, and no copy is made. The
  /// .prev file is read under the same rules. Never blocks on a FIFO.
  /// Errors: "load state file: " then the step, the path and the reason.
  Result<Loaded<StateT>> load_state() noexcept;

  /// Whether data at cursor `current` is new: true on a first run (no
  /// cursor in `state`) or for a cursor past the state's, false for the
  /// same one (info log) or an earlier one (warning). Every decision is
  /// logged.
  bool should_process(const cursor_type& current, const StateT& state) noexcept;

  /// Validates and serializes `state`, then (keep_previous) keeps the
  /// state file it replaces as previous_file(), then replaces the state
  /// file (mode file_mode, missing directories created 0755 unless
  /// create_directory is false), then logs "state saved". A state JSON
  /// cannot hold exactly (a non-finite double, invalid UTF-8), or whose
  /// text would exceed max_state_size() (so that load_state would refuse
  /// it), is refused before anything is written. Errors: "write state
  /// file: " then the step, the path and the reason; nothing is logged as
  /// saved. A failure before the rename leaves the state file untouched;
  /// Status::replaced() says the rename happened and only a step after it
  /// failed (the directory sync, or an unnamed temp file's close). With create_directory false, a
  /// state directory that is not the one the last try_lock_run or load_state opened is refused
  /// (Step::open_directory, ENOENT, "is its volume mounted?"), before
  /// anything is written.
  Status save_state(const StateT& state) noexcept;

  /// Saves `state` as the last file of `batch` and commits the batch, so
  /// that a run's outputs and its state change together: after any crash
  /// the state is never newer than the outputs added before it. The state
  /// is checked and written as save_state does; keep_previous keeps the
  /// previous state right before the state's rename. On any failure the
  /// batch is given up (its temp files removed; batch.replaced() says which
  /// outputs were already in place) and nothing is logged as saved; a
  /// state directory replaced since the lock or the load (create_directory
  /// false, as save_state) gives it up before any rename. The batch's sync
  /// policy and Fs are the manager's (the parameter's type says so: another
  /// batch does not compile), so that the state is as durable as the
  /// outputs it records. The processing this gives is at least once, not
  /// exactly once (docs/protocol.md, Batches). Errors: "save state with its
  /// batch: " then the step, the path and the reason.
  Status save_state(const StateT& state, Batch<SyncPolicy, Fs>& batch) noexcept;

  /// Removes the temp files killed saves left in output_dir(), never one of
  /// a save in progress (AtomicWriter::remove_stale_temp_files), and logs
  /// what it removed. The first load_state calls it unless it was already.
  Result<TempSweep> remove_stale_temp_files() noexcept;

  /// StateOptions::max_state_size.
  std::size_t max_state_size() const noexcept { return options_.max_state_size; }
  /// Every value is allowed: 0 refuses every non-empty file, no_size_limit
  /// none.
  void set_max_state_size(std::size_t bytes) noexcept { options_.max_state_size = bytes; }

  std::remove_reference_t<Sink>& sink() noexcept { return sink_; }
  std::remove_reference_t<Fs>& filesystem() noexcept { return fs_; }

  /// Deprecated spellings, removed in 0.3.0.
  [[deprecated("the name is options().file_name; removed in 0.3.0")]] static constexpr const char*
      file_name = "state.json";
  using logger_type [[deprecated("use sink_type; removed in 0.3.0")]] = Sink;
  [[deprecated("use sink(); removed in 0.3.0")]] std::remove_reference_t<Sink>& logger() noexcept {
    return sink_;
  }
  template <class Timestamps = std::initializer_list<std::int64_t>>
  [[deprecated("use the free function atomic_state::update_state; removed in 0.3.0")]] State
  update_state(std::string_view oracle_name, std::int64_t timestamp, std::int64_t protocol_count,
               double tvs, const Timestamps& snapshot_timestamps = {}) const {
    return atomic_state::update_state(oracle_name, timestamp, protocol_count, tvs,
                                      snapshot_timestamps);
  }

 private:
  using FsRef = std::remove_reference_t<Fs>;
  using Text = detail::TextBuffer<4096>;
  using Problem = detail::TextBuffer<256>;
  enum class Copy : unsigned char { absent, same, other };

  AtomicWriter<SyncPolicy, FsRef&> writer() noexcept {
    return AtomicWriter<SyncPolicy, FsRef&>(fs_);
  }
  void log(Level level, std::string_view message, Fields fields) noexcept;
  void log(Level level, std::string_view message, std::initializer_list<Field> fields) noexcept {
    log(level, message, Fields(fields.begin(), fields.size()));
  }
  Status failure(Step step, int neg_errno, const char* note = nullptr,
                 std::string_view detail = {}) const noexcept;
  Status open_directory(const detail::DirectoryPath& dir, int& dir_fd) noexcept;
  Status missing_directory(const detail::DirectoryPath& dir) const noexcept;
  Status create_directory(const detail::DirectoryPath& dir, int& dir_fd) noexcept;
  Status lock_failure(int neg_errno, const char* note = nullptr,
                      std::string_view detail = {}) const noexcept;
  Status lock_held(int fd) noexcept;
  Status not_own_lock(const FileInfo& info, bool owner_taken) const noexcept;
  void write_holder(int fd) noexcept;
  Result<TempSweep> sweep_temp_files(int dir_fd, std::string_view dir) noexcept;
  Result<Loaded<StateT>> first_run(int dir_fd = -1) noexcept;
  Result<Loaded<StateT>> use_state_text(int dir_fd, const detail::DirectoryPath& dir,
                                        std::string_view text, const FileInfo& info) noexcept;
  Status read_file(int dir_fd, const char* name, std::string_view path, Text& text, FileInfo& info,
                   bool& missing) noexcept;
  Status read_to_end(int fd, const FileInfo& info, std::string_view path, Text& text) noexcept;
  detail::Decoded decode(std::string_view text, StateT& state, Problem& problem,
                         std::int64_t& from_version) noexcept;
  Status refused(detail::Decoded decoded, std::string_view path,
                 std::string_view problem) const noexcept;
  Result<Loaded<StateT>> load_corrupt(int dir_fd, std::string_view bytes, const FileInfo& info,
                                      std::string_view problem) noexcept;
  Status load_previous(int dir_fd, Loaded<StateT>& loaded, bool& found) noexcept;
  Status keep_corrupt_copy(int dir_fd, std::string_view bytes, const FileInfo& info,
                           Loaded<StateT>& loaded) noexcept;
  Status copy_aside(int dir_fd, std::string_view bytes, const FileInfo& info,
                    char (&name)[ATOMIC_STATE_NAME_MAX + 1]) noexcept;
  Copy existing_copy(int dir_fd, const char* name, std::string_view bytes, int& error) noexcept;
  Status copy_failed(const Status& written, std::string_view copy) const noexcept;
  void remove_old_copies(int dir_fd, const char* kept) noexcept;
  Status encode(const StateT& state, detail::TextBuffer<2048>& text) const noexcept;
  Status keep_previous() noexcept;
  Status link_previous(int dir_fd) noexcept;
  void pin_directory(int dir_fd) noexcept;
  Status check_pinned_directory() noexcept;
  bool reads_as_state(int dir_fd) noexcept;
  Status not_linked(int dir_fd, const FileInfo& current) noexcept;

  StateOptions options_;
  Status unusable_;            // why options_ cannot be used, or success
  std::string previous_name_;  // "<file name>.prev"
  std::string lock_name_;      // ".<file name>.lock"
  std::string dir_;
  std::string file_;
  std::string previous_file_;
  std::string lock_file_;
  Sink sink_;
  Fs fs_;
  detail::OnceFlag swept_;
  detail::CorruptFile corrupt_;
  detail::PinnedDirectory pinned_;  // create_directory false: the directory locked or loaded
};

/// `StateManager manager(dir, sink)` without template arguments: a sink
/// named by an lvalue is held by reference, as `StateManager<MySink&>`
/// holds it (it must outlive the manager); a temporary is held by value.
/// Without these guides an lvalue sink would be copied, or refused if it
/// cannot be (LogfmtSink).
/// (Constrained as the class is, so that C++20 compilers rank them alike.)
template <ATOMIC_STATE_DETAIL_LOG_SINK Sink>
StateManager(PathView, Sink&, StateOptions = {}) -> StateManager<Sink&>;
template <ATOMIC_STATE_DETAIL_LOG_SINK Sink, class Fs>
StateManager(PathView, Sink&, Fs, StateOptions = {}) -> StateManager<Sink&, State, FullSync, Fs>;

/// The spelling before 0.2.0: StateManager<Logger, StateT, AtomicWriter<S,
/// Fs>>, a writer in place of the sync policy and the filesystem. Removed
/// in 0.3.0; a writer given to the constructor lends its filesystem.
template <ATOMIC_STATE_DETAIL_LOG_SINK Sink, class StateT, class SyncPolicy, class Fs>
class StateManager<Sink, StateT, AtomicWriter<SyncPolicy, Fs>, PosixFs>
    : public StateManager<Sink, StateT, SyncPolicy, Fs> {
  using Base = StateManager<Sink, StateT, SyncPolicy, Fs>;

 public:
  using writer_type [[deprecated("StateManager<Sink, StateT, SyncPolicy, Fs>; removed in 0.3.0")]] =
      AtomicWriter<SyncPolicy, Fs>;
  using Base::Base;
  [[deprecated(
      "StateManager<Sink, StateT, SyncPolicy, Fs>(dir, sink, fs);"
      " removed in 0.3.0")]] StateManager(PathView output_dir, Sink sink,
                                          AtomicWriter<SyncPolicy, Fs> writer)
      : Base(output_dir, static_cast<Sink&&>(sink), static_cast<Fs>(writer.filesystem())) {}
};

// ========================================================= implementation ====

// ------------------------------------------------------------- StateManager --

namespace detail {

// Whether T has a conversion of its own for try_value_to (one that reports
// errors instead of throwing them).
template <class T, class = void>
struct has_try_value_to : std::false_type {};
template <class T>
struct has_try_value_to<
    T, std::void_t<decltype(tag_invoke(boost::json::try_value_to_tag<T>(),
                                       std::declval<const boost::json::value&>()))>>
    : std::true_type {};
template <class T>
inline constexpr bool has_try_value_to_v = has_try_value_to<T>::value;

// Why a state file's schema version cannot be read as this program's, as
// load_state reports it; the versions are the file's and the program's.
template <class Problem>
bool describe_newer(Problem& problem, std::string_view file, int program) noexcept {
  char b[40];
  return problem.append("schema_version ") && problem.append(file) &&
         problem.append(" is newer than this program's ") &&
         problem.append(std::string_view(b, format_int(program, b))) &&
         problem.append(": a newer program wrote it");
}

// Brings the parsed state `jv` from its schema version to S's: reads and
// removes the version key, refuses a newer version, and calls
// StateTraits<S>::upgrade once per version in between. `from` is the
// file's version.
template <class S, class Problem>
Decoded upgrade_to_current(boost::json::value& jv, std::int64_t& from, Problem& problem) {
  constexpr int current = schema_version<S>::value;
  from = 0;
  boost::json::object* o = jv.if_object();
  if (o == nullptr) return Decoded::valid;  // the codec says what is wrong
  const auto written = [&](bool ok) { return ok ? Decoded::corrupt : Decoded::out_of_memory; };
  if (const boost::json::value* v = member_of(*o, version_key)) {
    const std::int64_t* n = v->if_int64();
    if (const std::uint64_t* u = v->if_uint64()) {  // beyond int64: named as the file holds it
      char number[40];
      return describe_newer(problem, std::string_view(number, format_uint(*u, number)), current)
                 ? Decoded::too_new
                 : Decoded::out_of_memory;
    }
    if (n == nullptr || *n < 0)
      return written(problem.append(version_key) &&
                     problem.append(": expected a whole number, 0 or more"));
    from = *n;
  }
  if (from > current) {
    char number[40];
    return describe_newer(problem, std::string_view(number, format_int(from, number)), current)
               ? Decoded::too_new
               : Decoded::out_of_memory;
  }
  o->erase(boost::json::string_view(version_key.data(), version_key.size()));
  if constexpr (current > 0) {
    for (auto version = static_cast<int>(from); version < current; ++version) {
      const auto failed = [&](std::string_view why, std::string_view what) {
        char n[40];
        return problem.append("upgrade from schema_version ") &&
                       problem.append(std::string_view(n, format_int(version, n))) &&
                       problem.append(why) && problem.append(what)
                   ? Decoded::upgrade_failed
                   : Decoded::out_of_memory;
      };
      ATOMIC_STATE_DETAIL_TRY {
        using Returned = decltype(StateTraits<S>::upgrade(*o, version));
        if constexpr (std::is_same_v<Returned, bool>) {
          if (!StateTraits<S>::upgrade(*o, version)) return failed(" refused", {});
        } else {
          StateTraits<S>::upgrade(*o, version);
        }
      }
      ATOMIC_STATE_DETAIL_CATCH(std::bad_alloc, no_memory) { return Decoded::out_of_memory; }
      ATOMIC_STATE_DETAIL_CATCH(std::exception, error) { return failed(" threw: ", error.what()); }
      ATOMIC_STATE_DETAIL_CATCH_ALL { return failed(" threw something not an exception", {}); }
    }
  }
  return Decoded::valid;
}

// Reads the state in `jv` with `convert`, after bringing it to S's schema
// version from `from`, the file's. A state an upgrade produced that does not convert is the
// upgrade's failure, not a corrupt file: the file is left alone.
template <class S, class Problem, class Convert>
Decoded read_current(boost::json::value& jv, Problem& problem, std::int64_t& from,
                     Convert&& convert) {
  if (const Decoded upgraded = upgrade_to_current<S>(jv, from, problem); upgraded != Decoded::valid)
    return upgraded;
  if (from == schema_version<S>::value) return convert(jv, problem);
  Problem why;
  const Decoded converted = convert(jv, why);
  if (converted != Decoded::corrupt) return converted;
  char n[40];
  return problem.append("the upgrade from schema_version ") &&
                 problem.append(std::string_view(n, format_int(from, n))) &&
                 problem.append(" gave a state that does not read: ") && problem.append(why.view())
             ? Decoded::upgrade_failed
             : Decoded::out_of_memory;
}

// The cursor of `state` as log fields under `key`: none when it is empty
// or of a type a log field cannot hold.
template <class S>
std::size_t cursor_fields(const S& state, const char* key, Field* out) noexcept {
  using Cursor = CursorOf<S>;
  const std::optional<typename Cursor::type> cursor = Cursor::read(state);
  if constexpr (std::is_constructible_v<Field, const char*, const typename Cursor::type&>) {
    if (Cursor::unix_seconds && !cursor) {
      out[0] = Field(key, std::int64_t{0});  // the Go service logs 0
      return 1;
    }
    if (cursor) {
      out[0] = Field(key, *cursor);
      return 1;
    }
  }
  return 0;
}

// How StateManager writes, reads and logs a state type: from its field
// table when it has one (below), else through its Boost.JSON conversions.
template <class S, bool = has_state_fields_v<S>>
struct StateCodec {
  // Into `text`; a refusal is Step::serialize with its detail in `why`.
  template <class Text, class Why>
  static int print(const S& state, Text& text, Why& why) noexcept {
    ATOMIC_STATE_DETAIL_TRY {
      // Through Boost.JSON, on a stack arena: nothing of it outlives this.
      unsigned char arena[2048];
      boost::json::monotonic_resource resource(arena, sizeof arena);
      const boost::json::storage_ptr sp(&resource);
      boost::json::value jv = boost::json::value_from(state, sp);
      if (const boost::json::object* o = jv.if_object();
          o != nullptr &&
          o->contains(boost::json::string_view(version_key.data(), version_key.size())))
        return why.append(version_key) && why.append(": ") && why.append(reserved_key_reason)
                   ? -EINVAL
                   : -ENOMEM;
      if constexpr (schema_version<S>::value > 0) {
        if (!jv.is_object())
          return why.append(
                     "the state type's conversion to JSON gave no object, and a "
                     "versioned state needs one for its version key")
                     ? -EINVAL
                     : -ENOMEM;
        jv = versioned(jv.get_object(), sp);
      }
      JsonPrinter<Text> printer(text);
      if (printer.print(jv)) return 0;
      if (printer.out_of_memory() || !printer.describe_problem(why)) return -ENOMEM;
      return -EINVAL;
    }
    ATOMIC_STATE_DETAIL_CATCH(std::bad_alloc, no_memory) { return -ENOMEM; }
    ATOMIC_STATE_DETAIL_CATCH(std::exception, error) {
      return why.append("the state type's conversion to JSON threw: ") && why.append(error.what())
                 ? -EINVAL
                 : -ENOMEM;
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL {
      return why.append("the state type's conversion to JSON threw") ? -EINVAL : -ENOMEM;
    }
  }

  template <class Problem>
  static Decoded read(std::string_view text, S& state, Problem& problem, std::int64_t& from) {
    // A type of one's own may keep Boost.JSON values (unknown keys kept for
    // a later version): they must not point into memory that dies with
    // this call, so the value lives on the default resource.
    ParseFailure failure;
    boost::json::value jv = parse_exact(text, {}, failure);
    if (failure) return failure.describe(problem) ? Decoded::corrupt : Decoded::out_of_memory;
    return read_current<S>(jv, problem, from, [&](const boost::json::value& v, Problem& why) {
      return convert(v, state, why);
    });
  }

  template <class Log>
  static void log_loaded(const S& state, std::string_view path, Log&& log) noexcept {
    Field fields[2] = {{"path", path}};
    log(Fields(fields, 1 + cursor_fields(state, "last_updated", fields + 1)));
  }
  template <class Log>
  static void log_saved(const S& state, Log&& log) noexcept {
    Field fields[1];
    log(Fields(fields, cursor_fields(state, "timestamp", fields)));
  }

 private:
  // The object with the version key first, on the same storage (print has
  // refused an object that holds the key already).
  static boost::json::value versioned(const boost::json::object& o,
                                      const boost::json::storage_ptr& sp) {
    boost::json::object out(sp);
    out.reserve(o.size() + 1);
    out.emplace(boost::json::string_view(version_key.data(), version_key.size()),
                schema_version<S>::value);
    for (const auto& member : o) out.emplace(member.key(), member.value());
    return boost::json::value(std::move(out), sp);
  }

  template <class Problem>
  static Decoded convert(const boost::json::value& jv, S& state, Problem& problem) {
    const auto corrupt = [&](std::string_view a, std::string_view b) {
      return problem.append(a) && problem.append(b) ? Decoded::corrupt : Decoded::out_of_memory;
    };
    if constexpr (has_try_value_to_v<S>) {
      auto converted = boost::json::try_value_to<S>(jv);
      if (!converted) {
        char words[128];
        return corrupt("the state type's conversion from JSON failed: ",
                       converted.error().message(words, sizeof words));
      }
      state = std::move(*converted);
    } else {
      // Not try_value_to: it would catch the conversion's exception and
      // keep only "got exception", losing what the exception says.
      ATOMIC_STATE_DETAIL_TRY { state = boost::json::value_to<S>(jv); }
      ATOMIC_STATE_DETAIL_CATCH(std::bad_alloc, no_memory) { return Decoded::out_of_memory; }
      ATOMIC_STATE_DETAIL_CATCH(std::exception, error) {
        return corrupt("the state type's conversion from JSON threw: ", error.what());
      }
      ATOMIC_STATE_DETAIL_CATCH_ALL {
        return corrupt("the state type's conversion from JSON threw something not an exception",
                       {});
      }
    }
    return Decoded::valid;
  }
};

template <class S>
struct StateCodec<S, true> {
  template <class Text, class Why>
  static int print(const S& state, Text& text, Why& why) noexcept {
    FieldRefusal refusal;
    if (print_fields(state, text, refusal)) return 0;
    if (refusal.reason == nullptr) return -ENOMEM;
    return why.append(refusal.name) && why.append(": ") && why.append(refusal.reason) ? -EINVAL
                                                                                      : -ENOMEM;
  }

  template <class Problem>
  static Decoded read(std::string_view text, S& state, Problem& problem, std::int64_t& from) {
    // The table keeps nothing of the parsed value, so a state file of
    // ordinary size is parsed without touching the heap.
    unsigned char arena[4096];
    boost::json::monotonic_resource resource(arena, sizeof arena);
    ParseFailure failure;
    boost::json::value jv = parse_exact(text, boost::json::storage_ptr(&resource), failure);
    if (failure) return failure.describe(problem) ? Decoded::corrupt : Decoded::out_of_memory;
    return read_current<S>(jv, problem, from, [&](const boost::json::value& v, Problem& out) {
      StateProblem why;
      if (read_fields(v, state, why)) return Decoded::valid;
      const bool described =
          why.key.empty() ? out.append(why.reason)
                          : out.append(why.key) && out.append(": ") && out.append(why.reason);
      return described ? Decoded::corrupt : Decoded::out_of_memory;
    });
  }

  template <class Log>
  static void log_loaded(const S& state, std::string_view path, Log&& log) noexcept {
    using Fields = LoggedFields<S>;
    log(Fields(state, Fields::Record::loaded, {{"path", path}}).view());
  }
  template <class Log>
  static void log_saved(const S& state, Log&& log) noexcept {
    using Fields = LoggedFields<S>;
    log(Fields(state, Fields::Record::saved, {}).view());
  }
};

}  // namespace detail

// ------------------------------------------------------------ state options --

constexpr std::string_view to_string(LoadOrigin origin) noexcept {
  switch (origin) {
    case LoadOrigin::saved:
      return "saved";
    case LoadOrigin::first_run:
      return "first run";
    case LoadOrigin::recovered:
      return "recovered";
    case LoadOrigin::previous:
      return "previous";
  }
  return "?";
}

namespace detail {
// The longest a name derived from the state file's grows it: a corrupt
// copy's ".corrupt-", a modification time and a ".N" suffix.
inline constexpr std::size_t derived_name_growth = 40;

inline bool ends_with(std::string_view s, std::string_view end) noexcept {
  return s.size() >= end.size() && s.substr(s.size() - end.size()) == end;
}
}  // namespace detail

inline Status StateOptions::check() const noexcept {
  const std::string_view name = file_name;
  const auto refuse = [&](std::errc code, const char* why) {
    return Status(Step::check_path, std::make_error_code(code), name, {}, false, why);
  };
  if (name.empty()) return refuse(std::errc::invalid_argument, "StateOptions::file_name is empty");
  if (name.find('\0') != std::string_view::npos)
    return refuse(std::errc::invalid_argument, "StateOptions::file_name holds a NUL byte");
  if (name.find('/') != std::string_view::npos)
    return refuse(std::errc::invalid_argument,
                  "StateOptions::file_name holds a '/': it is a name in the directory, not a path");
  if (name == "." || name == "..")
    return refuse(std::errc::is_a_directory, "StateOptions::file_name names a directory");
  if (name.size() + detail::derived_name_growth > ATOMIC_STATE_NAME_MAX)
    return refuse(std::errc::filename_too_long,
                  "StateOptions::file_name is too long for the names made from it");
  if (name.substr(0, 5) == ".tmp-")
    return refuse(std::errc::invalid_argument,
                  "StateOptions::file_name is named like a temp file, which a sweep removes");
  if (detail::ends_with(name, ".lock") || detail::ends_with(name, ".prev") ||
      name.find(".corrupt-") != std::string_view::npos)
    return refuse(std::errc::invalid_argument,
                  "StateOptions::file_name is named like a file the manager makes (a lock, a "
                  "previous state, a corrupt copy)");
  if (file_mode > 07777)
    return refuse(std::errc::invalid_argument, "StateOptions::file_mode is above 07777");
  if ((file_mode & 0400) == 0)
    return refuse(std::errc::invalid_argument,
                  "StateOptions::file_mode lacks the owner's read bit (0400): no load could read "
                  "the state back");
  return {};
}

// ----------------------------------------------------------------- RunLock --

template <class Fs>
RunLock<Fs>::RunLock(Fs fs, int fd) noexcept : fd_(fd) {
  if constexpr (std::is_reference_v<Fs>)
    fs_ = &fs;
  else
    fs_ = static_cast<Fs&&>(fs);
}

template <class Fs>
RunLock<Fs>::RunLock(RunLock&& other) noexcept
    : fs_(std::move(other.fs_)), fd_(std::exchange(other.fd_, -1)) {}

template <class Fs>
RunLock<Fs>& RunLock<Fs>::operator=(RunLock&& other) noexcept {
  if (this == &other) return *this;
  unlock();
  fs_ = std::move(other.fs_);
  fd_ = std::exchange(other.fd_, -1);
  return *this;
}

template <class Fs>
void RunLock<Fs>::unlock() noexcept {
  // Nothing was written through it that could be lost: a close error
  // changes nothing, and the lock is gone either way.
  if (fd_ >= 0) (void)fs().close(std::exchange(fd_, -1));
}

// ------------------------------------------------------------- StateManager --

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
StateManager<L, S, P, F>::StateManager(PathView dir, L sink, StateOptions options)
    : StateManager(dir, static_cast<L&&>(sink), F(), std::move(options)) {}

namespace detail {
// "dir/name", joined as std::filesystem's operator/ joins a file name to a
// directory: an empty dir is the working directory, a trailing '/' is not
// doubled.
inline std::string path_in(std::string_view dir, std::string_view name) {
  std::string path(dir);
  if (!path.empty() && path.back() != '/') path += '/';
  return path.append(name);
}
}  // namespace detail

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
StateManager<L, S, P, F>::StateManager(PathView dir, L sink, F fs, StateOptions options)
    : options_(std::move(options)),
      unusable_(options_.check()),
      previous_name_(options_.file_name + ".prev"),
      lock_name_("." + options_.file_name + ".lock"),
      dir_(dir.text()),
      file_(detail::path_in(dir_, options_.file_name)),
      previous_file_(detail::path_in(dir_, previous_name_)),
      lock_file_(detail::path_in(dir_, lock_name_)),
      sink_(static_cast<L&&>(sink)),
      fs_(static_cast<F&&>(fs)) {}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
void StateManager<L, S, P, F>::log(Level level, std::string_view message, Fields fields) noexcept {
  ATOMIC_STATE_DETAIL_TRY { sink_.log(level, message, fields); }
  ATOMIC_STATE_DETAIL_CATCH_ALL {}  // a throwing sink must not undo a save
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::failure(Step step, int neg_errno, const char* note,
                                         std::string_view detail) const noexcept {
  return Status(step, detail::system_error(neg_errno), file_, {}, false, note, detail);
}

namespace detail {
// Closes a descriptor when the scope ends, whatever way it ends.
template <class Fs>
class ClosingFd {
 public:
  ClosingFd(Fs& fs, int fd) noexcept : fs_(fs), fd_(fd) {}
  ClosingFd(const ClosingFd&) = delete;
  ClosingFd& operator=(const ClosingFd&) = delete;
  ~ClosingFd() { (void)fs_.close(fd_); }  // read-only descriptors: nothing to lose

 private:
  Fs& fs_;
  int fd_;
};

// Why a directory that cannot be opened (ENOENT) is missing: the first
// level of its path that is a symlink to nothing, as an error, or success
// when it is plainly not there. A link to nothing usually means a volume
// that is not mounted, where a first run would start over on the wrong
// disk.
template <class Fs>
Status find_dangling_link(Fs& fs, std::string_view dir, std::string_view state) noexcept {
  char path[ATOMIC_STATE_PATH_MAX];
  std::memcpy(path, dir.data(), dir.size());
  path[dir.size()] = '\0';
  for (std::size_t end = 1; end <= dir.size(); ++end) {
    if (end < dir.size() && path[end] != '/') continue;
    if (path[end - 1] == '/') continue;  // "/" itself, or a run of slashes
    const char saved = path[end];
    path[end] = '\0';
    FileInfo entry, target;
    const int r = fs.entry_info(AT_FDCWD, path, entry);
    const bool dangling = r >= 0 && entry.type == FileType::symlink &&
                          fs.file_info_at(AT_FDCWD, path, target) == -ENOENT;
    if (dangling)
      return Status(Step::open_directory, system_error(-ENOENT), std::string_view(path, end), state,
                    false, "a symlink to nothing: is the volume it points to mounted?");
    path[end] = saved;
    if (r < 0) return {};  // the first level missing: the directory plainly is
  }
  return {};
}
}  // namespace detail

// Opens the state directory; a missing one is not an error but dir_fd -1.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::open_directory(const detail::DirectoryPath& dir,
                                                int& dir_fd) noexcept {
  detail::Retrying<FsRef> fs(fs_);
  dir_fd = fs.open_directory(dir.c_str());
  if (dir_fd >= 0) return {};
  const int error = std::exchange(dir_fd, -1);
  if (error != -ENOENT)
    return Status(Step::open_directory, detail::system_error(error), dir.view(), file_);
  return detail::find_dangling_link(fs, dir.view(), file_);
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::missing_directory(
    const detail::DirectoryPath& dir) const noexcept {
  return Status(Step::open_directory, detail::system_error(-ENOENT), dir.view(), file_, false,
                "the state directory is missing and StateOptions::create_directory is false: is "
                "its volume mounted?");
}

// ---------------------------------------------------------------- run lock --

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<RunLock<F>> StateManager<L, S, P, F>::try_lock_run() noexcept {
  constexpr const char* context = "take the run lock";
  if (!unusable_.ok()) return unusable_.within(context);
  const detail::DirectoryPath dir(dir_);
  if (!dir.ok()) return dir.problem(Step::check_path).within(context);
  int dir_fd = -1;
  if (Status opened = open_directory(dir, dir_fd); !opened) return opened.within(context);
  if (dir_fd < 0) {
    if (!options_.create_directory) return missing_directory(dir).within(context);
    if (Status made = create_directory(dir, dir_fd); !made) return made.within(context);
  }
  const detail::ClosingFd<FsRef> closing(fs_, dir_fd);
  pin_directory(dir_fd);
  detail::Retrying<FsRef> fs(fs_);
  if (const int r = fs.check_writable(dir_fd); r < 0)
    return Status(Step::lock_run, detail::system_error(r), dir.view(), file_, false,
                  "the state directory is not writable: no save could succeed")
        .within(context);
  const int fd = fs.open_or_create(dir_fd, lock_name_.c_str(), 0600);
  if (fd < 0)
    return lock_failure(fd, fd == -ELOOP ? "the lock file is a symlink" : nullptr).within(context);
  RunLock<F> lock(fs_, fd);  // from here on, every return closes fd
  FileInfo info;
  if (const int r = fs.file_info(fd, info); r < 0) return lock_failure(r).within(context);
  if (info.type != FileType::regular)
    return lock_failure(-EINVAL, "the lock file is not a regular file").within(context);
  // Root, in a directory of another user, takes that user's lock file as
  // its own, and changes nothing in the file (detail::lock_file_owner).
  const detail::LockFileOwner owner =
      detail::lock_file_owner(fs, dir_fd, static_cast<std::uint32_t>(::geteuid()), info.owner);
  if (Status foreign = not_own_lock(info, owner.taken); !foreign) return foreign.within(context);
  const int locked = fs.try_lock(fd);
  if (locked == -EWOULDBLOCK || locked == -EAGAIN) return lock_held(fd).within(context);
  if (locked < 0) return lock_failure(locked).within(context);
  if (owner.hands_off) return Result<RunLock<F>>(std::move(lock));
  // Whoever can open the lock file can hold it forever: only its owner.
  if ((info.mode & 077) != 0)
    if (const int r = fs.set_mode(fd, 0600); r < 0)
      return lock_failure(r, "the lock file is open to other users and cannot be made 0600")
          .within(context);
  write_holder(fd);
  return Result<RunLock<F>>(std::move(lock));
}

// A missing state directory, made as a first save makes it (each level
// synced into its parent), by creating the lock file in it.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::create_directory(const detail::DirectoryPath& dir,
                                                  int& dir_fd) noexcept {
  AtomicWriter<P, FsRef&> lock_writer = writer();  // the lock's name is the library's own
  Status made = detail::write_new_own_file(lock_writer, lock_file_, {}, WriteOptions{0600, true});
  if (!made && made.code() != std::errc::file_exists && !made.replaced()) return made;
  detail::Retrying<FsRef> fs(fs_);
  dir_fd = fs.open_directory(dir.c_str());
  if (dir_fd >= 0) return {};
  return Status(Step::open_directory, detail::system_error(std::exchange(dir_fd, -1)), dir.view(),
                file_);
}

// Why the lock file at the lock's name is not the library's own, or
// success: a hard link to another file (planted there, so that the chmod
// and the pid below would change that file), or a file of another user
// (`owner_taken` false: detail::lock_file_owner's rule, under which root
// takes the directory owner's). Refused before anything is changed.
// (Every other file the manager opens by name it only reads, links or
// replaces by rename: this is the one it changes.)
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::not_own_lock(const FileInfo& info,
                                              bool owner_taken) const noexcept {
  char why[160];
  std::size_t size = 0;
  const auto append = [&](std::string_view part) {
    std::memcpy(why + size, part.data(), part.size());
    size += part.size();
  };
  const auto number = [&](std::uint64_t n) {
    size = static_cast<std::size_t>(std::to_chars(why + size, why + size + 24, n).ptr - why);
  };
  if (info.links > 1) {
    append("the lock file has ");
    number(info.links);
    append(" hard links: not the library's own, left as it is");
    return lock_failure(-EMLINK, nullptr, std::string_view(why, size));
  }
  if (!owner_taken) {
    append("the lock file belongs to uid ");
    number(info.owner);
    append(", not to this process's user: not the library's own, left as it is");
    return lock_failure(-EPERM, nullptr, std::string_view(why, size));
  }
  return {};
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::lock_failure(int neg_errno, const char* note,
                                              std::string_view detail) const noexcept {
  return Status(Step::lock_run, detail::system_error(neg_errno), lock_file_, file_, false, note,
                detail);
}

// Another run holds the lock: says so, with the pid the holder wrote into
// the lock file when it can be read.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::lock_held(int fd) noexcept {
  detail::Retrying<FsRef> fs(fs_);
  char text[24];
  const ssize_t n = fs.read(fd, text, sizeof text);
  std::size_t digits = 0;
  while (n > 0 && digits < static_cast<std::size_t>(n) && digits < 20 && text[digits] >= '0' &&
         text[digits] <= '9')
    ++digits;
  char holder[40] = "held by pid ";
  std::memcpy(holder + 12, text, digits);
  const std::string_view detail =
      digits > 0 ? std::string_view(holder, 12 + digits) : std::string_view();
  return Status(Step::lock_run, std::make_error_code(std::errc::resource_unavailable_try_again),
                lock_file_, file_, false, "another run holds it", detail);
}

// Writes this process's pid into the lock file, for a run that finds the
// lock held to name its holder. Always the same width, so that no shorter
// pid leaves digits of a longer one behind. Its failure costs only that.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
void StateManager<L, S, P, F>::write_holder(int fd) noexcept {
  char line[21];
  std::memset(line, ' ', sizeof line);
  (void)std::to_chars(line, line + 20, static_cast<std::int64_t>(::getpid()));
  line[20] = '\n';
  detail::Retrying<FsRef> fs(fs_);
  bool stalled = false;
  (void)detail::write_all(fs, fd, line, sizeof line, stalled);
}

// ------------------------------------------------------------ load_state --

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<Loaded<S>> StateManager<L, S, P, F>::load_state() noexcept {
  constexpr const char* context = "load state file";
  if (!unusable_.ok()) return unusable_.within(context);
  const detail::DirectoryPath dir(dir_);
  if (!dir.ok()) return dir.problem(Step::check_path).within(context);
  Text text;
  FileInfo info;
  bool missing = false;
  // Once swept, a load reads the state file by its path, as any reader
  // would; the directory is opened only when there is work there (a
  // missing file to explain, a corrupt one to copy).
  if (swept_.is_set() && file_.size() < ATOMIC_STATE_PATH_MAX) {
    if (Status read = read_file(AT_FDCWD, file_.c_str(), file_, text, info, missing); !read)
      return read.within(context);
    if (!missing) return use_state_text(-1, dir, text.view(), info);
  }
  int dir_fd = -1;
  if (Status opened = open_directory(dir, dir_fd); !opened) return opened.within(context);
  if (dir_fd < 0) {
    if (!options_.create_directory) return missing_directory(dir).within(context);
    return first_run();
  }
  const detail::ClosingFd<FsRef> closing(fs_, dir_fd);
  pin_directory(dir_fd);
  if (swept_.first()) (void)sweep_temp_files(dir_fd, dir.view());
  missing = false;
  if (Status read = read_file(dir_fd, options_.file_name.c_str(), file_, text, info, missing);
      !read)
    return read.within(context);
  if (missing) return first_run(dir_fd);
  return use_state_text(dir_fd, dir, text.view(), info);
}

// The state in the text read from the state file, or what a corrupt one
// leads to; dir_fd is the state directory, or -1 when it is not open yet.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<Loaded<S>> StateManager<L, S, P, F>::use_state_text(int dir_fd,
                                                           const detail::DirectoryPath& dir,
                                                           std::string_view text,
                                                           const FileInfo& info) noexcept {
  constexpr const char* context = "load state file";
  Loaded<S> loaded;
  Problem problem;
  std::int64_t version = 0;
  const detail::Decoded decoded = decode(text, loaded, problem, version);
  if (decoded == detail::Decoded::corrupt) {
    if (dir_fd >= 0) return load_corrupt(dir_fd, text, info, problem.view());
    int opened_fd = -1;
    if (Status opened = open_directory(dir, opened_fd); !opened) return opened.within(context);
    if (opened_fd < 0)  // the directory went away since the file was read
      return Status(Step::open_directory, detail::system_error(-ENOENT), dir.view(), file_)
          .within(context);
    const detail::ClosingFd<FsRef> closing(fs_, opened_fd);
    return load_corrupt(opened_fd, text, info, problem.view());
  }
  if (decoded != detail::Decoded::valid)
    return refused(decoded, file_, problem.view()).within(context);
  loaded.origin = LoadOrigin::saved;
  if (version < detail::schema_version<S>::value)
    log(Level::info, "state file upgraded",
        {{"path", file_},
         {"from_version", version},
         {"to_version", detail::schema_version<S>::value}});
  detail::StateCodec<S>::log_loaded(
      loaded, file_, [&](Fields fields) noexcept { log(Level::debug, "state loaded", fields); });
  return Result<Loaded<S>>(std::move(loaded));
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<Loaded<S>> StateManager<L, S, P, F>::first_run(int dir_fd) noexcept {
  // Info, not debug: a first run where a state was expected (a volume not
  // mounted, a wrong directory) is the event an operator looks for. A
  // previous state without a state file is no save's doing (no save
  // removes the state file): someone removed it, and is warned.
  FileInfo previous;
  if (options_.keep_previous && dir_fd >= 0 &&
      detail::Retrying<FsRef>(fs_).entry_info(dir_fd, previous_name_.c_str(), previous) >= 0)
    log(Level::warn, "no state file found but a previous one exists, treating as first run",
        {{"path", file_}, {"previous", previous_file_}});
  else
    log(Level::info, "no state file found, treating as first run", {{"path", file_}});
  Loaded<S> loaded;
  loaded.origin = LoadOrigin::first_run;
  return Result<Loaded<S>>(std::move(loaded));
}

// Why a state file that was read cannot be used, as an error that leaves
// it where it is.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::refused(detail::Decoded decoded, std::string_view path,
                                         std::string_view problem) const noexcept {
  switch (decoded) {
    case detail::Decoded::too_new:
      return Status(Step::upgrade, std::make_error_code(std::errc::not_supported), path, {}, false,
                    "the state file is left as it is", problem);
    case detail::Decoded::upgrade_failed:
      return Status(Step::upgrade, std::make_error_code(std::errc::invalid_argument), path, {},
                    false, "the state file is left as it is", problem);
    case detail::Decoded::corrupt:
      return Status(Step::parse, std::make_error_code(std::errc::bad_message), path, {}, false,
                    "the state file is corrupt and StateOptions::on_corrupt is fail: it is left "
                    "as it is",
                    problem);
    case detail::Decoded::valid:
    case detail::Decoded::out_of_memory:
      break;
  }
  return Status(Step::parse, detail::system_error(-ENOMEM), path);
}

// A corrupt state file: the previous state when one was kept and is valid,
// else the zero state or an error, as on_corrupt says. The file itself is
// left for the next save to replace; a copy of its bytes is kept.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<Loaded<S>> StateManager<L, S, P, F>::load_corrupt(int dir_fd, std::string_view bytes,
                                                         const FileInfo& info,
                                                         std::string_view problem) noexcept {
  constexpr const char* context = "load state file";
  corrupt_.remember(info);
  Loaded<S> loaded;
  bool found = false;
  if (options_.keep_previous)
    if (Status read = load_previous(dir_fd, loaded, found); !read) return read.within(context);
  if (!found && options_.on_corrupt == OnCorrupt::fail)
    return refused(detail::Decoded::corrupt, file_, problem).within(context);
  loaded.origin = found ? LoadOrigin::previous : LoadOrigin::recovered;
  if (Status kept = keep_corrupt_copy(dir_fd, bytes, info, loaded); !kept)
    return kept.within(context);

  Field fields[4] = {{"path", file_}, {"error", problem}};
  std::size_t count = 2;
  if (found) fields[count++] = Field("previous", previous_file_);
  if (!loaded.corrupt_copy.empty()) fields[count++] = Field("copied_to", loaded.corrupt_copy);
  log(Level::warn,
      found ? "state file corrupted, loading the previous state"
            : "state file corrupted, treating as first run",
      Fields(fields, count));
  return Result<Loaded<S>>(std::move(loaded));
}

// Reads the previous state into `loaded`; `found` says whether there was a
// valid one. A corrupt one is only logged: the zero state follows.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::load_previous(int dir_fd, Loaded<S>& loaded,
                                               bool& found) noexcept {
  Text text;
  FileInfo info;
  bool missing = false;
  if (Status read = read_file(dir_fd, previous_name_.c_str(), previous_file_, text, info, missing);
      !read)
    return read;
  if (missing) return {};
  Problem problem;
  std::int64_t version = 0;
  const detail::Decoded decoded = decode(text.view(), loaded, problem, version);
  if (decoded == detail::Decoded::valid) {
    found = true;
    return {};
  }
  if (decoded != detail::Decoded::corrupt) return refused(decoded, previous_file_, problem.view());
  static_cast<S&>(loaded) = S{};
  log(Level::warn, "previous state file corrupted too",
      {{"path", previous_file_}, {"error", problem.view()}});
  return {};
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<TempSweep> StateManager<L, S, P, F>::remove_stale_temp_files() noexcept {
  (void)swept_.first();
  if (!unusable_.ok()) return unusable_;
  const detail::DirectoryPath dir(dir_);
  if (!dir.ok()) return dir.problem(Step::check_path);
  int dir_fd = -1;
  if (Status opened = open_directory(dir, dir_fd); !opened) return opened;
  if (dir_fd < 0) return TempSweep{};
  const detail::ClosingFd<FsRef> closing(fs_, dir_fd);
  return sweep_temp_files(dir_fd, dir.view());
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Result<TempSweep> StateManager<L, S, P, F>::sweep_temp_files(int dir_fd,
                                                             std::string_view dir) noexcept {
  detail::Retrying<FsRef> fs(fs_);
  Result<TempSweep> sweep = detail::sweep_temp_files(fs, dir_fd, dir);
  if (!sweep) {
    ATOMIC_STATE_DETAIL_TRY {
      log(Level::warn, "stale temp files could not be removed",
          {{"path", dir}, {"error", sweep.status().message()}});
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL {}
    return sweep;
  }
  if (sweep->removed > 0)
    log(Level::info, "stale temp files removed", {{"path", dir}, {"count", sweep->removed}});
  if (sweep->not_regular > 0)
    log(Level::warn, "entries named like temp files are not regular files; left alone",
        {{"path", dir}, {"count", sweep->not_regular}});
  if (sweep->in_use > 0)
    log(Level::debug, "temp files of saves in progress left alone",
        {{"path", dir}, {"count", sweep->in_use}});
  if (sweep->not_permitted > 0)
    log(Level::warn, "temp files this user may not remove left alone",
        {{"path", dir}, {"count", sweep->not_permitted}});
  return sweep;
}

// Reads the whole file `name` (shown as `path`) into `text`, refusing
// anything but a regular file within the size limit. A missing file is
// not an error: `missing`.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::read_file(int dir_fd, const char* name, std::string_view path,
                                           Text& text, FileInfo& info, bool& missing) noexcept {
  const auto failed = [&](Step step, int neg_errno, const char* note = nullptr) {
    return Status(step, detail::system_error(neg_errno), path, {}, false, note);
  };
  detail::Retrying<FsRef> fs(fs_);
  const int fd = fs.open_file(dir_fd, name);
  if (fd == -ENOENT) {
    // A link to nothing is not a first run: it usually means the state
    // lives on a volume that is not mounted, and a save would replace the
    // link. (Any failure to look is taken for a plain missing file.)
    FileInfo link;
    if (fs.entry_info(dir_fd, name, link) >= 0 && link.type == FileType::symlink)
      return failed(Step::open_file, -ENOENT, "the state path is a symlink to nothing");
    missing = true;
    return {};
  }
  if (fd < 0) return failed(Step::open_file, fd);
  const detail::ClosingFd<FsRef> closing(fs_, fd);

  const int r = fs.file_info(fd, info);
  if (r < 0) return failed(Step::check_file, r);
  if (info.type == FileType::directory)
    return failed(Step::check_file, -EISDIR, "the state path is a directory");
  if (info.type != FileType::regular)
    return failed(Step::check_file, -EINVAL,
                  info.type == FileType::fifo ? "not a regular file but a FIFO"
                                              : "not a regular file but a device or socket");
  return read_to_end(fd, info, path, text);
}

// Reads up to the size limit, and one byte past it to see a file that
// outgrew it; a file that grows while it is read is read on. The limit may
// be anything up to no_size_limit, so no sum here may pass SIZE_MAX.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::read_to_end(int fd, const FileInfo& info, std::string_view path,
                                             Text& text) noexcept {
  const std::size_t limit = options_.max_state_size;
  const auto too_large = [&] {
    return Status(Step::check_file, detail::system_error(-EFBIG), path, {}, false,
                  "larger than the state size limit");
  };
  if (info.size > limit || info.size >= no_size_limit) return too_large();
  detail::Retrying<FsRef> fs(fs_);
  const auto expected = static_cast<std::size_t>(info.size);
  for (;;) {
    std::size_t want = text.size() < expected ? expected - text.size() + 1
                                              : (text.spare() > 0 ? text.spare() : 4096);
    const std::size_t room = limit - text.size();  // text.size() <= limit here
    if (want - 1 > room) want = room + 1;
    char* into = text.room_for(want);
    if (into == nullptr) return Status(Step::read_file, detail::system_error(-ENOMEM), path);
    const ssize_t n = fs.read(fd, into, want);
    if (n < 0) return Status(Step::read_file, detail::system_error(static_cast<int>(n)), path);
    if (n == 0) return {};
    text.added(static_cast<std::size_t>(n) <= want ? static_cast<std::size_t>(n) : want);
    if (text.size() > limit) return too_large();
  }
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
detail::Decoded StateManager<L, S, P, F>::decode(std::string_view text, S& state, Problem& problem,
                                                 std::int64_t& from_version) noexcept {
  ATOMIC_STATE_DETAIL_TRY {
    return detail::StateCodec<S>::read(text, state, problem, from_version);
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL { return detail::Decoded::out_of_memory; }  // std::bad_alloc
}

// ----------------------------------------------------------- corrupt copies --

// Keeps a copy of the corrupt file's bytes (unless corrupt_copies is 0),
// records where in `loaded`, and removes the oldest copies past the limit.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::keep_corrupt_copy(int dir_fd, std::string_view bytes,
                                                   const FileInfo& info,
                                                   Loaded<S>& loaded) noexcept {
  if (options_.corrupt_copies == 0) return {};
  char name[ATOMIC_STATE_NAME_MAX + 1];
  if (Status kept = copy_aside(dir_fd, bytes, info, name); !kept) return kept;
  const detail::JoinedPath copy(dir_, name);
  ATOMIC_STATE_DETAIL_TRY { loaded.corrupt_copy.assign(copy.view().data(), copy.view().size()); }
  ATOMIC_STATE_DETAIL_CATCH_ALL { return failure(Step::copy_aside, -ENOMEM); }
  remove_old_copies(dir_fd, name);
  return {};
}

namespace detail {
// The age of a corrupt copy's name, "<file name>.corrupt-<stamp>[.<n>]":
// its stamp then its n (0 without one), or false for any other name.
inline bool corrupt_copy_age(std::string_view name, std::string_view prefix, std::int64_t& stamp,
                             std::int64_t& n) noexcept {
  if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) return false;
  const char* p = name.data() + prefix.size();
  const char* const end = name.data() + name.size();
  const auto digits = [](const char* from, const char* to) {
    return from != to && *from != '-' && *from != '+';
  };
  const char* stamp_start = *p == '-' ? p + 1 : p;
  const char* dot = std::find(stamp_start, end, '.');
  if (!digits(stamp_start, dot)) return false;
  const auto parsed = std::from_chars(p, dot, stamp);
  if (parsed.ec != std::errc() || parsed.ptr != dot) return false;
  n = 0;
  if (dot == end) return true;
  if (!digits(dot + 1, end)) return false;
  const auto suffix = std::from_chars(dot + 1, end, n);
  return suffix.ec == std::errc() && suffix.ptr == end;
}

// One pass over the state directory through the corrupt copies of one
// file time `stamp`: the highest suffix among them (-1: none), so that a
// new copy's name ranks after every copy of the same time, and the first
// that holds the bytes to keep (`same(name)`), so that they are kept once.
template <class Fs, class Same>
class StampCopies {
 public:
  StampCopies(Fs& fs, int dir_fd, std::string_view prefix, std::int64_t stamp, Same& same) noexcept
      : fs_(fs), dir_fd_(dir_fd), prefix_(prefix), stamp_(stamp), same_(same) {}

  int run() noexcept { return fs_.list_directory(dir_fd_, &StampCopies::visit, this); }
  std::int64_t highest() const noexcept { return highest_; }
  const char* same() const noexcept { return same_name_; }

 private:
  static void visit(void* self, const char* name) noexcept {
    static_cast<StampCopies*>(self)->examine(name);
  }
  void examine(const char* name) noexcept {
    std::int64_t stamp = 0, n = 0;
    if (!corrupt_copy_age(name, prefix_, stamp, n) || stamp != stamp_) return;
    if (n > highest_) highest_ = n;
    if (same_name_[0] == '\0' && same_(name)) {
      const std::size_t size = std::strlen(name);  // at most NAME_MAX: a directory entry
      std::memcpy(same_name_, name, size + 1);
    }
  }

  Fs& fs_;
  int dir_fd_;
  std::string_view prefix_;
  std::int64_t stamp_;
  Same& same_;
  std::int64_t highest_ = -1;
  char same_name_[ATOMIC_STATE_NAME_MAX + 1] = {};
};

// One pass over the state directory counting the corrupt copies of one
// state file that are regular files, and finding the oldest but `kept`.
template <class Fs>
class CopyCensus {
 public:
  CopyCensus(Fs& fs, int dir_fd, std::string_view prefix, const char* kept) noexcept
      : fs_(fs), dir_fd_(dir_fd), prefix_(prefix), kept_(kept) {}

  int run() noexcept { return fs_.list_directory(dir_fd_, &CopyCensus::visit, this); }
  std::size_t count() const noexcept { return count_; }
  const char* oldest() const noexcept { return oldest_; }

 private:
  static void visit(void* self, const char* name) noexcept {
    static_cast<CopyCensus*>(self)->examine(name);
  }
  void examine(const char* name) noexcept {
    std::int64_t stamp = 0, n = 0;
    if (!corrupt_copy_age(name, prefix_, stamp, n)) return;
    FileInfo info;
    if (fs_.entry_info(dir_fd_, name, info) < 0 || info.type != FileType::regular) return;
    ++count_;
    if (std::strcmp(name, kept_) == 0) return;  // counted, never removed
    if (oldest_[0] != '\0' && (stamp > stamp_ || (stamp == stamp_ && n >= n_))) return;
    stamp_ = stamp;
    n_ = n;
    const std::size_t size = std::strlen(name);  // at most NAME_MAX: a directory entry
    std::memcpy(oldest_, name, size + 1);
  }

  Fs& fs_;
  int dir_fd_;
  std::string_view prefix_;
  const char* kept_;
  std::size_t count_ = 0;
  std::int64_t stamp_ = 0, n_ = 0;
  char oldest_[ATOMIC_STATE_NAME_MAX + 1] = {};
};
}  // namespace detail

// Removes the oldest corrupt copies until corrupt_copies are left, logging
// each removal; never `kept`, the copy just made, whatever its age. A
// failure is logged and ends the pruning: the copies are the operator's
// evidence, and keeping one too many loses nothing.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
void StateManager<L, S, P, F>::remove_old_copies(int dir_fd, const char* kept) noexcept {
  char prefix[ATOMIC_STATE_NAME_MAX + 1];
  const std::string_view name = options_.file_name;
  std::memcpy(prefix, name.data(), name.size());
  std::memcpy(prefix + name.size(), ".corrupt-", 10);  // with its NUL
  detail::Retrying<FsRef> fs(fs_);
  for (int round = 0; round < ATOMIC_STATE_TEMP_NAME_ATTEMPTS; ++round) {
    detail::CopyCensus<detail::Retrying<FsRef>> census(
        fs, dir_fd, std::string_view(prefix, name.size() + 9), kept);
    const int listed = census.run();
    if (listed < 0 || census.count() <= options_.corrupt_copies || census.oldest()[0] == '\0')
      return;
    const detail::JoinedPath path(dir_, census.oldest());
    if (const int r = fs.unlink(dir_fd, census.oldest()); r < 0 && r != -ENOENT) {
      ATOMIC_STATE_DETAIL_TRY {
        log(Level::warn, "old corrupt copy could not be removed",
            {{"path", path.view()}, {"error", detail::system_error(r).message()}});
      }
      ATOMIC_STATE_DETAIL_CATCH_ALL {}
      return;
    }
    log(Level::info, "old corrupt copy removed",
        {{"path", path.view()}, {"kept", options_.corrupt_copies}});
  }
}

// Keeps the bytes of a corrupt state file beside it, named after the file's
// modification time, without touching the file itself: a valid save may
// have replaced it since it was read, and must not be moved aside or lost.
// Loads of the same file agree on the name, so its bytes are kept once.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::copy_aside(int dir_fd, std::string_view bytes,
                                            const FileInfo& info,
                                            char (&name)[ATOMIC_STATE_NAME_MAX + 1]) noexcept {
  // The file name is at most NAME_MAX - derived_name_growth (StateOptions::check).
  const std::string_view file = options_.file_name;
  std::memcpy(name, file.data(), file.size());
  std::memcpy(name + file.size(), ".corrupt-", 9);
  char* const stamp_end =
      std::to_chars(name + file.size() + 9, name + sizeof name - 8, info.modified).ptr;
  int unreadable = 0;  // why the last name that could not be examined could not
  // Copies of files of the same time (a second's resolution) are numbered
  // on past the highest number there, never into a freed one: the newest
  // copy must rank newest, or pruning would remove it first.
  auto same = [&](const char* existing) noexcept {
    return existing_copy(dir_fd, existing, bytes, unreadable) == Copy::same;
  };
  detail::Retrying<FsRef> fs(fs_);
  detail::StampCopies<detail::Retrying<FsRef>, decltype(same)> copies(
      fs, dir_fd, std::string_view(name, file.size() + 9), info.modified, same);
  std::int64_t first = 0;
  if (copies.run() >= 0) {
    if (copies.same()[0] != '\0') {
      std::memcpy(name, copies.same(), std::strlen(copies.same()) + 1);
      return {};
    }
    first = copies.highest() + 1;
  }
  for (int attempt = 0; attempt < ATOMIC_STATE_TEMP_NAME_ATTEMPTS; ++attempt) {
    char* end = stamp_end;
    if (const std::int64_t n = first + attempt; n > 0) {
      *end++ = '.';
      end = std::to_chars(end, name + sizeof name - 1, n).ptr;
    }
    *end = '\0';
    Copy found = existing_copy(dir_fd, name, bytes, unreadable);
    if (found == Copy::absent) {
      const detail::JoinedPath path(dir_, name);
      AtomicWriter<P, FsRef&> copy_writer = writer();  // the copy's name is the library's own
      const Status written =
          detail::write_new_own_file(copy_writer, path.view(), bytes, WriteOptions{0600, false});
      // Renamed but not known durable is kept all the same: the corrupt
      // file itself stays until a save replaces it, and that save syncs
      // the directory.
      if (written.ok() || written.replaced()) found = Copy::same;
      // Another load of the same bytes may have been quicker: look again.
      else if (written.code() == std::errc::file_exists)
        found = existing_copy(dir_fd, name, bytes, unreadable);
      else
        return copy_failed(written, path.view());
    }
    if (found == Copy::same) return {};
  }
  return failure(Step::copy_aside, unreadable < 0 ? unreadable : -EEXIST,
                 "every name tried for the copy was taken");
}

// The failure to write the copy `copy`, as a failure to copy the state file
// aside: which step of the write failed, and on what, is the detail.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::copy_failed(const Status& written,
                                             std::string_view copy) const noexcept {
  detail::TextBuffer<256> how;
  const bool described =
      how.append(to_string(written.step())) && how.append(" ") && how.append(written.path());
  return Status(Step::copy_aside, written.code(), file_, copy, false, nullptr,
                described ? how.view() : std::string_view());
}

// Whether `name` in the state directory is missing, a regular file holding
// exactly `bytes`, or something else; `error` keeps why a file there could
// not be opened.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
typename StateManager<L, S, P, F>::Copy StateManager<L, S, P, F>::existing_copy(
    int dir_fd, const char* name, std::string_view bytes, int& error) noexcept {
  detail::Retrying<FsRef> fs(fs_);
  const int fd = fs.open_file(dir_fd, name);
  if (fd == -ENOENT) return Copy::absent;
  if (fd < 0) {
    error = fd;
    return Copy::other;
  }
  const detail::ClosingFd<FsRef> closing(fs_, fd);
  FileInfo info;
  if (fs.file_info(fd, info) < 0 || info.type != FileType::regular || info.size != bytes.size())
    return Copy::other;
  char chunk[4096];
  std::size_t at = 0;
  for (;;) {
    const ssize_t n = fs.read(fd, chunk, sizeof chunk);
    if (n <= 0) return n == 0 && at == bytes.size() ? Copy::same : Copy::other;
    const auto got = static_cast<std::size_t>(n);
    if (got > bytes.size() - at || std::memcmp(chunk, bytes.data() + at, got) != 0)
      return Copy::other;
    at += got;
  }
}

// --------------------------------------------------------- should_process --

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
bool StateManager<L, S, P, F>::should_process(const cursor_type& current, const S& state) noexcept {
  using Cursor = detail::CursorOf<S>;
  const std::optional<cursor_type> last = Cursor::read(state);
  if (!last) {
    log(Level::debug, "first run, processing required", {});
    return true;
  }
  if constexpr (Cursor::unix_seconds) {
    // The Go service's rules and words, for unix seconds.
    const std::int64_t last_ts = *last, current_ts = current;
    if (current_ts > last_ts) {
      // Unsigned so that far-apart timestamps cannot overflow the subtraction.
      const auto delta =
          static_cast<std::uint64_t>(current_ts) - static_cast<std::uint64_t>(last_ts);
      log(Level::debug, "new data available",
          {{"current_ts", current_ts}, {"last_ts", last_ts}, {"delta_seconds", delta}});
      return true;
    }
    if (current_ts == last_ts) {
      log(Level::info, "no new data, skipping extraction",
          {{"current_ts", current_ts}, {"last_ts", last_ts}});
      return false;
    }
    log(Level::warn, "clock skew detected, API timestamp older than last processed",
        {{"current_ts", current_ts}, {"last_ts", last_ts}});
    return false;
  } else {
    Field fields[2];
    std::size_t count = 0;
    if constexpr (std::is_constructible_v<Field, const char*, const cursor_type&>) {
      fields[0] = Field("current", current);
      fields[1] = Field("last", *last);
      count = 2;
    }
    if (*last < current) {
      log(Level::debug, "new data available", Fields(fields, count));
      return true;
    }
    if (!(current < *last)) {
      log(Level::info, "no new data, skipping extraction", Fields(fields, count));
      return false;
    }
    log(Level::warn, "cursor went backwards, data older than last processed",
        Fields(fields, count));
    return false;
  }
}

// ------------------------------------------------------------ save_state --

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::save_state(const S& state) noexcept {
  constexpr const char* context = "write state file";
  if (!unusable_.ok()) return unusable_.within(context);
  detail::TextBuffer<2048> text;
  if (Status encoded = encode(state, text); !encoded) return encoded.within(context);
  if (text.size() > options_.max_state_size)
    return failure(Step::serialize, -EFBIG,
                   "the text would be larger than the state size limit, so load_state "
                   "would refuse it")
        .within(context);
  if (Status same = check_pinned_directory(); !same) return same.within(context);
  if (options_.keep_previous)
    if (Status kept = keep_previous(); !kept) return kept.within(context);
  Status written = writer().write(file_, text.view(),
                                  WriteOptions{options_.file_mode, options_.create_directory});
  if (!written) {
    if (!options_.create_directory && written.step() == Step::open_directory &&
        written.code() == std::errc::no_such_file_or_directory)
      written = written.with_note(
          "StateOptions::create_directory is false: is the state directory's volume mounted?");
    return written.within(context);
  }
  detail::StateCodec<S>::log_saved(
      state, [&](Fields fields) noexcept { log(Level::info, "state saved", fields); });
  return {};
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::save_state(const S& state, Batch<P, F>& batch) noexcept {
  constexpr const char* context = "save state with its batch";
  const auto given_up = [&](const Status& failure) {
    batch.discard();
    return failure.within(context);
  };
  if (!unusable_.ok()) return given_up(unusable_);
  detail::TextBuffer<2048> text;
  if (Status encoded = encode(state, text); !encoded) return given_up(encoded);
  if (text.size() > options_.max_state_size)
    return given_up(failure(Step::serialize, -EFBIG,
                            "the text would be larger than the state size limit, so load_state "
                            "would refuse it"));
  if (Status same = check_pinned_directory(); !same) return given_up(same);
  if (Status added = batch.add(file_, text.view(),
                               WriteOptions{options_.file_mode, options_.create_directory});
      !added)
    return given_up(added);
  const Status committed =
      batch.commit([&]() noexcept { return options_.keep_previous ? keep_previous() : Status(); });
  if (!committed) return committed.within(context);
  detail::StateCodec<S>::log_saved(
      state, [&](Fields fields) noexcept { log(Level::info, "state saved", fields); });
  return {};
}

// With create_directory false, the directory a lock or a load opened is the
// state's directory for the saves that follow (the latest lock or load
// pins anew: each starts a run). With true, nothing is pinned: directories
// may be made, and a save follows the path wherever it leads.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
void StateManager<L, S, P, F>::pin_directory(int dir_fd) noexcept {
  if (options_.create_directory) return;
  FileInfo info;
  if (detail::Retrying<FsRef>(fs_).file_info(dir_fd, info) >= 0) pinned_.pin(info);
}

// Refuses a save when the directory at the path is not the one pinned: one
// look at the path, right before the save opens it.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::check_pinned_directory() noexcept {
  if (options_.create_directory || !pinned_.is_set()) return {};
  const detail::DirectoryPath dir(dir_);
  if (!dir.ok()) return {};  // the write says why
  FileInfo info;
  const int r = detail::Retrying<FsRef>(fs_).file_info_at(AT_FDCWD, dir.c_str(), info);
  if (r >= 0 && info.type == FileType::directory && pinned_.admits(info)) return {};
  return Status(Step::open_directory, detail::system_error(r < 0 ? r : -ENOENT), dir.view(), file_,
                false,
                "the directory at the path is not the one locked or loaded (another device or "
                "inode) and StateOptions::create_directory is false: is its volume mounted?");
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::encode(const S& state,
                                        detail::TextBuffer<2048>& text) const noexcept {
  detail::TextBuffer<256> why;
  const int r = detail::StateCodec<S>::print(state, text, why);
  if (r == 0) return {};
  return failure(Step::serialize, r, nullptr, r == -ENOMEM ? std::string_view() : why.view());
}

// Keeps the state file a save is about to replace as previous_file(): a
// hard link under a temp name, renamed over the previous one, and the
// directory synced, so that the state file is never replaced before its
// predecessor is durably kept. Nothing to keep: no state file yet, one a
// load found corrupt, or one already kept.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::keep_previous() noexcept {
  const detail::DirectoryPath dir(dir_);
  if (!dir.ok()) return {};  // the write says why
  detail::Retrying<FsRef> fs(fs_);
  const int dir_fd = fs.open_directory(dir.c_str());
  if (dir_fd == -ENOENT) return {};
  if (dir_fd < 0)
    return Status(Step::open_directory, detail::system_error(dir_fd), dir.view(), file_);
  const detail::ClosingFd<FsRef> closing(fs_, dir_fd);
  return link_previous(dir_fd);
}

// Whether the state file reads as a state now. Asked only of a file that
// is the one (device and inode) a load found corrupt: an inode number is
// reused once the file is gone (ext4 reuses them at once), so the number
// alone would take a later, valid state for the corrupt one. Its bytes
// decide; a file that cannot be read counts as corrupt.
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
bool StateManager<L, S, P, F>::reads_as_state(int dir_fd) noexcept {
  Text text;
  FileInfo info;
  bool missing = false;
  if (!read_file(dir_fd, options_.file_name.c_str(), file_, text, info, missing) || missing)
    return false;
  ATOMIC_STATE_DETAIL_TRY {
    S state;
    Problem problem;
    std::int64_t version = 0;
    return decode(text.view(), state, problem, version) == detail::Decoded::valid;
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL { return false; }
}

// A state file of another user that the kernel refuses to link
// (fs.protected_hardlinks: after one run under sudo, say): the save goes
// on without .prev, warned. Only this save: the file it writes is this
// user's own, and the next save links it. The state matters more than its
// backup, and a save that failed here would fail every run from now on.
// An older .prev, kept by an earlier save, would be two states back once
// this save replaces the state, and a load of a corrupt state would go
// back that far as "the previous state": it is removed, the removal synced
// before the state is replaced. One that cannot be removed is left, and
// the warning says it is older (older_previous).
template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::not_linked(int dir_fd, const FileInfo& current) noexcept {
  char why[128] = "the state file belongs to uid ";
  std::size_t size = std::strlen(why);
  size = static_cast<std::size_t>(std::to_chars(why + size, why + 64, current.owner).ptr - why);
  const std::string_view rest =
      ", and the kernel links only its owner's files (fs.protected_hardlinks)";
  std::memcpy(why + size, rest.data(), rest.size());
  size += rest.size();
  const Status status(Step::keep_previous, detail::system_error(-EPERM), file_, previous_file_,
                      false, nullptr, std::string_view(why, size));
  detail::Retrying<FsRef> fs(fs_);
  const int removed = fs.unlink(dir_fd, previous_name_.c_str());
  if (removed == 0 && P::directory)
    if (const int r = fs.sync_full(dir_fd); r < 0)
      return Status(Step::sync_directory, detail::system_error(r), dir_, previous_file_);
  ATOMIC_STATE_DETAIL_TRY {
    const std::string error = status.message();  // the fields only view it
    Field fields[4] = {{"path", file_}, {"previous", previous_file_}, {"error", error}};
    std::size_t count = 3;
    std::string older;
    if (removed == 0) {
      fields[count++] = Field("older_previous", "removed");
    } else if (removed != -ENOENT) {
      older = "not removed, so it is older than the state before this save: " +
              detail::system_error(removed).message();
      fields[count++] = Field("older_previous", older);
    }
    log(Level::warn, "previous state not kept", Fields(fields, count));
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL {}
  return {};
}

template <ATOMIC_STATE_DETAIL_LOG_SINK L, class S, class P, class F>
Status StateManager<L, S, P, F>::link_previous(int dir_fd) noexcept {
  const auto failed = [&](int neg_errno) {
    // ENOTSUP and EOPNOTSUPP are one value on Linux, two elsewhere.
    const bool no_links = neg_errno == -EPERM || neg_errno == -EOPNOTSUPP ||
#if ENOTSUP != EOPNOTSUPP
                          neg_errno == -ENOTSUP ||
#endif
                          neg_errno == -EMLINK;
    return Status(
        Step::keep_previous, detail::system_error(neg_errno), file_, previous_file_, false,
        no_links ? "StateOptions::keep_previous needs a filesystem with hard links" : nullptr);
  };
  detail::Retrying<FsRef> fs(fs_);
  const char* const name = options_.file_name.c_str();
  FileInfo current, kept;
  int r = fs.entry_info(dir_fd, name, current);
  if (r == -ENOENT) return {};
  if (r < 0) return failed(r);
  if (current.type != FileType::regular || (corrupt_.is(current) && !reads_as_state(dir_fd)))
    return {};
  if (fs.entry_info(dir_fd, previous_name_.c_str(), kept) >= 0 && kept.inode == current.inode &&
      kept.device == current.device)
    return {};
  char temp[12];
  for (int attempt = 0; attempt < ATOMIC_STATE_TEMP_NAME_ATTEMPTS; ++attempt) {
    detail::make_temp_name(temp);
    r = fs.link(dir_fd, name, temp);
    if (r == -EEXIST) continue;
    if (r == -ENOENT) return {};  // the state file went away: nothing to keep
    if (r == -EPERM && current.owner != static_cast<std::uint32_t>(::geteuid()))
      return not_linked(dir_fd, current);
    if (r < 0) return failed(r);
    r = fs.rename(dir_fd, temp, previous_name_.c_str());
    if (r == -ENOENT) continue;  // a sweep took the link for a stale temp file
    if (r < 0) {
      (void)fs.unlink(dir_fd, temp);
      return failed(r);
    }
    if (P::directory)
      if (r = fs.sync_full(dir_fd); r < 0)
        return Status(Step::sync_directory, detail::system_error(r), dir_, previous_file_);
    return {};
  }
  return failed(-EEXIST);
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

#elif defined(ATOMIC_STATE_NO_JSON)

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {
namespace detail {
template <class...>
inline constexpr bool json_left_out = false;
}  // namespace detail

/// Left out: what stands in its place says so in one line, where a
/// compiler would say "'StateManager' is not a member of 'atomic_state'".
template <class... Parameters>
class StateManager {
  static_assert(detail::json_left_out<Parameters...>,
                "atomic_state: StateManager needs Boost.JSON, left out by ATOMIC_STATE_NO_JSON "
                "(defined by you, or by Meson, which found no Boost.JSON)");

 public:
  template <class... Arguments>
  explicit StateManager(Arguments&&...) noexcept {}
};
template <class... Arguments>
StateManager(Arguments&&...) -> StateManager<>;

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state
#endif  // ATOMIC_STATE_NO_JSON

#endif  // ATOMIC_STATE_STATE_MANAGER_HPP
