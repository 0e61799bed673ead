// batch.hpp: Batch: several files replaced as one, the last never before the rest
#ifndef ATOMIC_STATE_BATCH_HPP
#define ATOMIC_STATE_BATCH_HPP

#include <algorithm>    // std::fill_n, std::find
#include <cstring>      // std::memcpy
#include <memory>       // std::unique_ptr: each file's transaction, kept for reuse
#include <new>          // std::nothrow
#include <string_view>  // std::string_view
#include <vector>       // std::vector: the files

#include "directory.hpp"

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

template <class SyncPolicy = FullSync, class Fs = PosixFs>
class Batch {
  static_assert(is_sync_policy_v<SyncPolicy>,
                "Batch: SyncPolicy needs `static constexpr SyncLevel file` and `static "
                "constexpr bool directory` (see FullSync)");
  static_assert(is_filesystem_v<Fs>,
                "Batch: Fs needs every call of PosixFs that a save makes (see is_filesystem)");

 public:
  using Transaction = WriteTransaction<SyncPolicy, Fs>;
  using Directory = AtomicDirectory<SyncPolicy, Fs>;

  template <class F = Fs, std::enable_if_t<std::is_default_constructible_v<F>, int> = 0>
  Batch() noexcept : Batch(F()) {}
  explicit Batch(Fs fs) noexcept : fs_(static_cast<Fs&&>(fs)) {}
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;
  /// Discards what was not committed: the temp files are removed.
  ~Batch() { discard(); }

  /// Adds the file `path` with `data`, written to its temp file now (see
  /// AtomicWriter::write for the path's rules). The same target twice in
  /// one batch is refused (Step::check_path, EEXIST): the same name in the
  /// same directory, known by its device and inode as opened, whatever the
  /// spelling of its path or whether it came through a handle; and
  /// so is a directory, FIFO, socket or device at the target (check_path,
  /// EISDIR or EINVAL), before a byte is written. Failures: those of
  /// AtomicWriter::begin and of a write, and create_temp_file with ENOMEM
  /// when there is no memory for one more file; the batch keeps its other
  /// files.
  Status add(PathView path, std::string_view data, unsigned perm = 0644) noexcept;
  Status add(PathView path, std::string_view data, const WriteOptions& options) noexcept;
  /// Adds the file `name` of an open directory (a plain name, as
  /// AtomicDirectory::write takes); the directory must outlive the commit.
  Status add(Directory& dir, std::string_view name, std::string_view data,
             unsigned perm = 0644) noexcept;
  Status add(Directory& dir, std::string_view name, std::string_view data,
             const WriteOptions& options) noexcept;
  /// Adds a file to be streamed: write() to the transaction returned, then
  /// commit() the batch (the transaction's own commit() refuses:
  /// Step::invalid_use, EPERM). The
  /// pointer is valid until the batch's commit() or discard().
  Result<Transaction*> add_stream(PathView path, const WriteOptions& options = {}) noexcept;
  Result<Transaction*> add_stream(Directory& dir, std::string_view name,
                                  const WriteOptions& options = {}) noexcept;

  /// Makes room for `files` files, so that adding them and committing
  /// allocates nothing.
  void reserve(std::size_t files) noexcept;

  /// Commits every file added, as above. An empty batch is an error
  /// (Step::invalid_use, EINVAL), as is one holding a file whose streamed
  /// write failed (that failure; every temp file is removed). A failure
  /// after some renames lists them in its detail: "rename /d/.tmp-Ab12Cd
  /// to /d/state.json: No space left on device (replaced before the
  /// failure: /d/out/summary.json, /d/out/full.json)".
  Status commit() noexcept {
    return commit([]() noexcept { return Status(); });
  }
  /// The same, running `before_last()` (a callable returning a Status)
  /// once the files before the last are in place and their directories
  /// synced, right before the last rename; its failure stops the commit
  /// there. StateManager keeps the previous state at that point.
  template <class BeforeLast>
  Status commit(BeforeLast&& before_last) noexcept;
  /// Removes every temp file and forgets the files; no target is touched.
  void discard() noexcept;

  /// Files added and not yet committed or discarded.
  std::size_t size() const noexcept { return used_; }
  /// How many targets the last commit() replaced: all of them after a
  /// success, the first ones in order after a failure.
  std::size_t replaced() const noexcept { return replaced_; }
  /// What the batch's sweeps of stale temp files have done so far, added
  /// up. After a successful commit, each directory that gained a file by
  /// path is swept once in the batch's life (a directory known by its
  /// device and inode, whatever its spelling; a batch remembers as many
  /// directories as it has held files, forgetting the oldest past that), as
  /// AtomicWriter::remove_stale_temp_files does: one pass over its
  /// entries, looking only at names the library gives its temp files,
  /// never waiting on a lock, never removing one a live save holds, never
  /// allocating. A directory reached through an AtomicDirectory is its
  /// handle's to sweep (at its open). A sweep's failure is not the
  /// commit's: it counts nothing, and the commit succeeds. No sweep with
  /// an Fs that cannot list directories (is_state_filesystem_v).
  const TempSweep& swept() const noexcept { return swept_; }

 private:
  using FsRef = std::remove_reference_t<Fs>;
  using Steps = detail::TransactionSteps<Transaction>;  // all a batch takes of a transaction
  Transaction* next_file(FsRef& fs) noexcept;
  Status added(Transaction* file, const Status& opened, std::string_view data) noexcept;
  Status stopped(const Status& failure) noexcept;
  bool duplicate(const Transaction& file) const noexcept;
  void sweep_new_directories() noexcept;
  bool first_sweep_of(const detail::DirectoryIdentity& dir) noexcept;

  Fs fs_;
  // The files in use are the first used_; the others wait to be reused, so
  // that a batch filled run after run allocates nothing.
  std::vector<std::unique_ptr<Transaction>> files_;
  std::size_t used_ = 0;
  std::size_t replaced_ = 0;
  std::vector<detail::DirectoryIdentity> swept_directories_;  // at most files_.size()
  std::size_t forget_next_ = 0;
  TempSweep swept_;
};

// ========================================================= implementation ====

// ------------------------------------------------------------------- Batch --

template <class S, class Fs>
void Batch<S, Fs>::reserve(std::size_t files) noexcept {
  ATOMIC_STATE_DETAIL_TRY {
    swept_directories_.reserve(files);
    files_.reserve(files);
    while (files_.size() < files) {
      std::unique_ptr<Transaction> file(new (std::nothrow) Transaction(Steps::make(fs_)));
      if (!file) return;
      files_.push_back(std::move(file));
    }
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL {}  // the adds will say so
}

// The transaction for the next file: one given up by an earlier run, made
// new for `fs`, or a new one. Null when memory runs out.
template <class S, class Fs>
typename Batch<S, Fs>::Transaction* Batch<S, Fs>::next_file(FsRef& fs) noexcept {
  if (used_ < files_.size()) {
    *files_[used_] = Steps::make(fs);
    return files_[used_].get();
  }
  ATOMIC_STATE_DETAIL_TRY {
    std::unique_ptr<Transaction> file(new (std::nothrow) Transaction(Steps::make(fs)));
    if (!file) return nullptr;
    files_.push_back(std::move(file));
    return files_.back().get();
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL { return nullptr; }
}

// Whether a file of the batch already has `file`'s target: the same name in
// the same directory, known by identity (TransactionSteps::same_target).
template <class S, class Fs>
bool Batch<S, Fs>::duplicate(const Transaction& file) const noexcept {
  for (std::size_t i = 0; i < used_; ++i)
    if (Steps::same_target(*files_[i], file)) return true;
  return false;
}

// Keeps `file` (just opened, or the failure `opened`) as the batch's next
// file, after writing `data` into it; on any failure it is given up and
// its temp file removed.
template <class S, class Fs>
Status Batch<S, Fs>::added(Transaction* file, const Status& opened,
                           std::string_view data) noexcept {
  if (!opened) return opened;
  // The directory by identity, for the duplicate test and the commit's
  // syncs: from an earlier file through the same handle, or asked once.
  const Transaction* known = nullptr;
  for (std::size_t i = 0; i < used_ && known == nullptr; ++i)
    if (Steps::directory_descriptor(*files_[i]) == Steps::directory_descriptor(*file))
      known = files_[i].get();
  Steps::learn_directory(*file, known);
  if (duplicate(*file)) {
    file->discard();
    const detail::JoinedPath target = Steps::target(*file);
    return Status(Step::check_path, std::make_error_code(std::errc::file_exists), target.view(),
                  target.view(), false, "the batch already has this target");
  }
  if (Status written = file->write(data); !written) return written;
  Steps::join_batch(*file);
  ++used_;
  return {};
}

template <class S, class Fs>
Status Batch<S, Fs>::add(PathView path, std::string_view data, unsigned perm) noexcept {
  return add(path, data, WriteOptions{perm});
}

template <class S, class Fs>
Status Batch<S, Fs>::add(PathView path, std::string_view data,
                         const WriteOptions& options) noexcept {
  Transaction* file = next_file(fs_);
  if (file == nullptr)
    return Status(Step::create_temp_file, detail::system_error(-ENOMEM), path.text(), {}, false,
                  "no memory for one more file in the batch");
  const Status opened = Steps::open(*file, path.text(), options, Steps::Commit::replace);
  return added(file, opened, data);
}

template <class S, class Fs>
Status Batch<S, Fs>::add(Directory& dir, std::string_view name, std::string_view data,
                         unsigned perm) noexcept {
  return add(dir, name, data, WriteOptions{perm});
}

template <class S, class Fs>
Status Batch<S, Fs>::add(Directory& dir, std::string_view name, std::string_view data,
                         const WriteOptions& options) noexcept {
  Result<Transaction*> file = add_stream(dir, name, options);
  if (!file) return file.status();
  if (Status written = (*file)->write(data); !written) {
    --used_;  // its temp file is gone with the failure
    return written;
  }
  return {};
}

template <class S, class Fs>
Result<typename Batch<S, Fs>::Transaction*> Batch<S, Fs>::add_stream(
    PathView path, const WriteOptions& options) noexcept {
  Transaction* file = next_file(fs_);
  if (file == nullptr)
    return Status(Step::create_temp_file, detail::system_error(-ENOMEM), path.text(), {}, false,
                  "no memory for one more file in the batch");
  const Status opened = Steps::open(*file, path.text(), options, Steps::Commit::replace);
  if (Status kept = added(file, opened, {}); !kept) return kept;
  return file;
}

template <class S, class Fs>
Result<typename Batch<S, Fs>::Transaction*> Batch<S, Fs>::add_stream(
    Directory& dir, std::string_view name, const WriteOptions& options) noexcept {
  Transaction* file = next_file(dir.filesystem());
  if (file == nullptr)
    return Status(Step::create_temp_file, detail::system_error(-ENOMEM), name, {}, false,
                  "no memory for one more file in the batch");
  const Status opened = Steps::open_in(*file, dir, name, options, Steps::Commit::replace);
  if (Status kept = added(file, opened, {}); !kept) return kept;
  return file;
}

template <class S, class Fs>
void Batch<S, Fs>::discard() noexcept {
  // A file put in place keeps only descriptors to close; the others lose
  // their temp files too.
  for (std::size_t i = 0; i < used_; ++i) files_[i]->discard();
  used_ = 0;
}

// A failure after some renames: the files before it are in place, the
// others are given up. The Status keeps the failure's step, path, target
// and reason, and says which targets hold their new content.
template <class S, class Fs>
Status Batch<S, Fs>::stopped(const Status& failure) noexcept {
  // Cut short (with "...") when the names do not fit: only a message loses.
  char which[1024];
  std::size_t size = 0;
  const auto append = [&](std::string_view part) {
    const std::size_t n = part.size() < sizeof which - size ? part.size() : sizeof which - size;
    if (n > 0) std::memcpy(which + size, part.data(), n);
    size += n;
  };
  append("replaced before the failure: ");
  for (std::size_t i = 0; i < replaced_; ++i) {
    const detail::JoinedPath target = Steps::target(*files_[i]);
    if (i > 0) append(", ");
    append(target.view());
  }
  if (size == sizeof which) std::fill_n(which + size - 3, 3, '.');
  discard();
  if (replaced_ == 0) return failure;
  return failure.with_detail(std::string_view(which, size));
}

template <class S, class Fs>
template <class BeforeLast>
Status Batch<S, Fs>::commit(BeforeLast&& before_last) noexcept {
  replaced_ = 0;
  if (used_ == 0)
    return Status(Step::invalid_use, std::make_error_code(std::errc::invalid_argument), {}, {},
                  false, "an empty batch: add a file first");
  const auto given_up = [&](Status failure) {
    discard();
    return failure;
  };
  const auto each = [&](auto&& step) {
    for (std::size_t i = 0; i < used_; ++i)
      if (Status done = step(*files_[i]); !done) return done;
    return Status();
  };
  if (Status open = each(Steps::still_open); !open) return given_up(open);
  // 1. Every file's bytes and mode durable, their writebacks overlapping.
  if (Status done = each(Steps::set_final_mode); !done) return given_up(done);
  for (std::size_t i = 0; i < used_; ++i) Steps::start_writeback(*files_[i]);
  if (Status done = each(Steps::sync_file); !done) return given_up(done);
  if (Status done = each(Steps::close_file); !done) return given_up(done);
  // 2, 3. Every file but the last in place, in order, then durably so.
  // A file renamed whose close then failed is replaced all the same.
  const auto put_in_place = [&](Transaction& file) {
    Status done = Steps::put_in_place(file);
    if (done || done.replaced()) ++replaced_;
    return done;
  };
  const std::size_t last = used_ - 1;
  for (std::size_t i = 0; i < last; ++i)
    if (Status done = put_in_place(*files_[i]); !done) return stopped(done);
  if constexpr (S::directory)
    for (std::size_t i = 0; i < last; ++i) {
      bool synced = false;  // a directory is synced once, whatever its files
      for (std::size_t k = 0; k < i && !synced; ++k)
        synced = Steps::same_directory(*files_[k], *files_[i]);
      if (!synced)
        if (Status done = Steps::sync_directory(*files_[i]); !done) return stopped(done);
    }
  // 4. The last file, never durable before the files it follows.
  if (Status done = before_last(); !done) return stopped(done);
  if (Status done = put_in_place(*files_[last]); !done) return stopped(done);
  if constexpr (S::directory)
    if (Status done = Steps::sync_directory(*files_[last]); !done) return stopped(done);
  sweep_new_directories();
  for (std::size_t i = 0; i < used_; ++i) files_[i]->discard();
  used_ = 0;
  return {};
}

// After a commit, when no temp file of the batch is left to meet: each
// directory a file went into by path, unless an earlier commit swept it.
template <class S, class Fs>
void Batch<S, Fs>::sweep_new_directories() noexcept {
  if constexpr (is_state_filesystem_v<Fs>) {  // else it cannot list a directory
    for (std::size_t i = 0; i < used_; ++i) {
      const Transaction& file = *files_[i];
      detail::DirectoryIdentity dir;
      if (Steps::through_handle(file) || !Steps::directory_identity(file, dir) ||
          !first_sweep_of(dir))
        continue;
      detail::Retrying<FsRef> fs(fs_);
      const Result<TempSweep> swept = detail::sweep_temp_files(
          fs, Steps::directory_descriptor(file), Steps::directory_path(file));
      if (!swept) continue;
      swept_.removed += swept->removed;
      swept_.in_use += swept->in_use;
      swept_.not_regular += swept->not_regular;
      swept_.not_permitted += swept->not_permitted;
    }
  }
}

// Whether `dir` is swept for the first time, remembering it; false when
// there is no memory to remember it (it is then swept by the next batch).
// The batch remembers as many directories as it has held files: past that
// (a directory a day, say) the one remembered longest is forgotten, and
// swept again should a file go back into it, so that a batch reused for
// ever neither grows nor allocates once its files' storage has.
template <class S, class Fs>
bool Batch<S, Fs>::first_sweep_of(const detail::DirectoryIdentity& dir) noexcept {
  if (std::find(swept_directories_.begin(), swept_directories_.end(), dir) !=
      swept_directories_.end())
    return false;
  if (!swept_directories_.empty() && swept_directories_.size() >= files_.size()) {
    swept_directories_[forget_next_++ % swept_directories_.size()] = dir;
    return true;
  }
  ATOMIC_STATE_DETAIL_TRY {
    swept_directories_.push_back(dir);
    return true;
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL { return false; }
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

#endif  // ATOMIC_STATE_BATCH_HPP
