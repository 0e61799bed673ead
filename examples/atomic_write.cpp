// atomic-write: a durable `sponge`. Reads standard input to the end and
// atomically replaces FILE with it, so `sort f | atomic-write f` is safe and
// a crash at any moment leaves FILE either as it was or complete.
//
//   atomic-write [--mode MODE] [--sync full|data|none] [--no-empty]
//                [--min-bytes N] [--] FILE
//
// FILE keeps its mode, and run as root its owner and group, as sponge and
// QSaveFile do: `sort -u secret | atomic-write secret` must not leave a 0600
// file 0644. A new FILE, or a symlink (replaced, not followed: it has no mode
// of its own), gets 0644 and the caller's owner. --mode sets the mode
// instead. MODE is 1 to 5 octal digits, 0 to 7777. An option's value follows
// it, or an "=" (--mode=0640). After "--" every argument is FILE (`-- -name`
// writes a file named -name); there is exactly one FILE, and it is not "-".
//
// A pipe does not carry the exit status of the command before it: a grep
// that matched nothing, or a command killed half-way, leaves atomic-write
// short input and exit 0 from its writer. --no-empty refuses empty input and
// --min-bytes N input of fewer than N bytes: exit 1, nothing created. Until
// N bytes have come, they are held in memory.
//
// FILE is a regular file or missing. A FILE that is (or is a symlink to) a
// device, FIFO, socket or directory is refused before anything is written:
// replacing it would leave a regular file where /dev/null was. A symlink to
// a regular file is itself replaced, as the library documents.
//
// Interrupted by SIGHUP, SIGINT or SIGTERM, it removes its temp file and
// dies of that signal; FILE is as it was (or complete, had the rename been
// done). After SIGKILL the temp file stays; it is never read, and the
// library's sweep of the directory removes it.
//
// Exit status: 0 replaced; 1 failed or refused, FILE unchanged; 2 usage
// error; 3 FILE replaced, but the directory sync failed (not known durable).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <new>
#include <string>
#include <string_view>

#include "atomic_state.hpp"

namespace {

constexpr int kReplaced = 0, kFailed = 1, kUsage = 2, kNotDurable = 3;

const char kUsageText[] =
    "usage: atomic-write [OPTION]... [--] FILE\n"
    "Reads standard input to the end and atomically replaces FILE with it:\n"
    "`sort -u f | atomic-write f` is safe, and a crash leaves FILE old or new.\n"
    "\n"
    "FILE keeps its mode and, run as root, its owner and group. A new FILE gets\n"
    "mode 0644 and the caller's owner; so does a symlink at FILE, which is\n"
    "replaced, not followed. FILE must be a regular file or missing: a device,\n"
    "FIFO, socket or directory (or a symlink to one) is refused. \"-\" is\n"
    "refused too: write ./- for a file named -.\n"
    "\n"
    "  --mode MODE    give FILE this mode instead: 1 to 5 octal digits, 0 to 7777\n"
    "  --sync LEVEL   full: fsync file and directory (default)\n"
    "                 data: fdatasync file, fsync directory\n"
    "                 none: no sync; survives a crash of this program, not a\n"
    "                       power loss\n"
    "  --no-empty     refuse empty input: exit 1, nothing written\n"
    "  --min-bytes N  refuse input of fewer than N bytes: exit 1, nothing\n"
    "                 written (the first N bytes are held in memory)\n"
    "  --             ends the options: `-- -name` writes a file named -name\n"
    "  -h, --help     print this text\n"
    "  --version      print the version\n"
    "A value follows its option as the next argument or after \"=\": --mode=0640.\n"
    "\n"
    "A pipe does not carry the exit status of the command before it: if that\n"
    "command fails or is killed, atomic-write sees short input and replaces\n"
    "FILE with it. `set -o pipefail` only reports it, too late. Keep the output\n"
    "first:  set -o pipefail; out=$(cmd) && printf '%s\\n' \"$out\" | atomic-write f\n"
    "or refuse short input with --no-empty or --min-bytes.\n"
    "\n"
    "Interrupted (SIGHUP, SIGINT, SIGTERM) before the rename, it removes its\n"
    "temp file and leaves FILE as it was.\n"
    "\n"
    "Exit status:\n"
    "  0  FILE replaced\n"
    "  1  failed or refused: FILE unchanged\n"
    "  2  usage error: FILE unchanged\n"
    "  3  FILE replaced, but the directory sync failed: not known to be durable\n";

struct Options {
  enum class Action { replace, help, version };
  Action action = Action::replace;
  unsigned mode = 0644;
  bool mode_given = false;  // else FILE's own mode is kept
  std::string_view sync = "full";
  bool no_empty = false;
  std::uint64_t min_bytes = 0;
  const char* file = nullptr;

  // The fewest bytes of input that may replace FILE.
  std::uint64_t least_input() const { return no_empty && min_bytes == 0 ? 1 : min_bytes; }
};

// One line saying what is wrong, then where to look: the whole usage text
// would bury the line that matters.
int usage_error(const char* what, const char* arg) {
  std::fprintf(stderr, "atomic-write: %s%s%s\nTry 'atomic-write --help' for more information.\n",
               what, arg ? ": " : "", arg ? arg : "");
  return kUsage;
}

// A bad value, quoted: " 644" and "" must be seen for what they are.
int bad_value(const char* what, std::string_view value) {
  const std::string quoted = '"' + std::string(value) + '"';
  return usage_error(what, quoted.c_str());
}

// 1 to 5 octal digits, 0 to 7777, and nothing else: strtoul would also take
// a sign, spaces and a 0x, and wrap -1777777777777777777777 round to 0001.
bool parse_mode(std::string_view text, unsigned& mode) {
  if (text.empty() || text.size() > 5) return false;
  unsigned value = 0;
  for (const char digit : text) {
    if (digit < '0' || digit > '7') return false;
    value = value * 8 + static_cast<unsigned>(digit - '0');
  }
  if (value > 07777) return false;
  mode = value;
  return true;
}

// Decimal digits only, 0 to UINT64_MAX: no sign, no space, no wrapping.
bool parse_count(std::string_view text, std::uint64_t& count) {
  if (text.empty()) return false;
  std::uint64_t value = 0;
  for (const char digit : text) {
    if (digit < '0' || digit > '9') return false;
    const auto d = static_cast<std::uint64_t>(digit - '0');
    if (value > (UINT64_MAX - d) / 10) return false;
    value = value * 10 + d;
  }
  count = value;
  return true;
}

// Returns kReplaced on success, or the exit status of a usage error. After
// "--" every argument is FILE, so `-- -name` writes a file named -name; a
// second FILE anywhere is an error rather than one of them silently dropped.
// --help and --version end the parsing: what follows them is not looked at.
int parse(int argc, char** argv, Options& options) {
  bool options_ended = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (options_ended || arg.size() < 2 || arg[0] != '-') {
      // "-" would mean standard output, which has no name to replace.
      if (arg == "-")
        return usage_error(
            "\"-\" (standard output) cannot be replaced; for a file named -, write ./-", nullptr);
      if (options.file != nullptr) return usage_error("only one FILE, please", argv[i]);
      options.file = argv[i];
      continue;
    }
    if (arg == "--") {
      options_ended = true;
      continue;
    }
    // --name=value, or --name and the value in the next argument.
    std::string_view name = arg, value;
    bool has_value = false;
    if (const std::size_t equals = arg.find('=');
        arg[1] == '-' && equals != std::string_view::npos) {
      name = arg.substr(0, equals);
      value = arg.substr(equals + 1);
      has_value = true;
    }
    const auto take_value = [&] {
      if (!has_value && i + 1 < argc) {
        value = argv[++i];
        has_value = true;
      }
      return has_value;
    };
    const auto no_value = [&](Options::Action action) {
      if (has_value) return usage_error("this option takes no value", argv[i]);
      options.action = action;
      return kReplaced;
    };
    if (name == "-h" || name == "--help" || name == "--version") {
      return no_value(name == "--version" ? Options::Action::version : Options::Action::help);
    } else if (name == "--no-empty") {
      if (const int status = no_value(Options::Action::replace); status != kReplaced) return status;
      options.no_empty = true;
    } else if (name == "--mode") {
      if (!take_value()) return usage_error("--mode needs a value", nullptr);
      if (!parse_mode(value, options.mode))
        return bad_value("--mode wants 1 to 5 octal digits, 0 to 7777", value);
      options.mode_given = true;
    } else if (name == "--sync") {
      if (!take_value()) return usage_error("--sync needs a value", nullptr);
      if (value != "full" && value != "data" && value != "none")
        return bad_value("--sync wants full, data or none", value);
      options.sync = value;
    } else if (name == "--min-bytes") {
      if (!take_value()) return usage_error("--min-bytes needs a value", nullptr);
      if (!parse_count(value, options.min_bytes))
        return bad_value("--min-bytes wants a number of bytes, 0 to 18446744073709551615", value);
    } else {
      return usage_error("unknown option", argv[i]);
    }
  }
  if (options.file == nullptr) return usage_error("FILE is missing", nullptr);
  return kReplaced;
}

// --help and --version: a closed or full standard output is a failure, not
// a silent exit 0.
int print(const char* text) {
  if (std::fputs(text, stdout) < 0 || std::fflush(stdout) != 0) {
    std::fprintf(stderr, "atomic-write: write standard output: %s\n", std::strerror(errno));
    return kFailed;
  }
  return kReplaced;
}

int report(const atomic_state::Status& status) {
  if (status.ok()) return kReplaced;
  // Exit 3: the library's message says FILE was replaced but is not known
  // to be durable.
  std::fprintf(stderr, "atomic-write: %s\n", status.message().c_str());
  return status.replaced() ? kNotDurable : kFailed;
}

// What a file of this type is, for a message; nullptr for a regular file.
const char* kind_of(mode_t mode) {
  if (S_ISREG(mode)) return nullptr;
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISDIR(mode)) return "a directory";
  return "a file of unknown type";
}

// The rename would put a regular file where a device, FIFO, socket or
// directory was: as root, `atomic-write /dev/null` (or /dev/stdout, a symlink
// to one) would break the machine. So FILE, or what a symlink at FILE points
// to, must be a regular file or missing. Checked before the transaction
// begins, so a refusal creates nothing; a FILE that changes type after this
// check is the library's to handle. Any other stat() failure (ENOTDIR,
// EACCES, ELOOP) is left to begin(), which reports the step that fails.
bool refuse_special_file(const char* file) {
  struct stat target {};
  if (::stat(file, &target) != 0) return false;
  const char* kind = kind_of(target.st_mode);
  if (kind == nullptr) return false;
  struct stat entry {};
  const bool symlink = ::lstat(file, &entry) == 0 && S_ISLNK(entry.st_mode);
  std::fprintf(stderr, "atomic-write: %s is %s%s, not a regular file; nothing was written\n", file,
               symlink ? "a symlink to " : "", kind);
  return true;
}

// The full path of the open transaction's temp file, for the signal handler:
// written before the handler is installed, only read while it is.
char temp_path[ATOMIC_STATE_PATH_MAX + 16];
constexpr int kCleanupSignals[] = {SIGHUP, SIGINT, SIGTERM};

// Async-signal-safe: unlink, sigaction and raise only. The signal is blocked
// while this runs, so the re-raised one is delivered, now with the default
// action, as the handler returns: the exit status still names the signal.
void remove_temp_and_die(int sig) {
  (void)::unlink(temp_path);
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  (void)::sigaction(sig, &default_action, nullptr);
  (void)::raise(sig);
}

// Ctrl-C, a hangup or a kill while the tool waits for input would otherwise
// end it without the transaction's destructor, leaving a 0600 temp file of
// partial input for good. Armed once begin() has made the temp file, until
// the transaction is over; the destructor restores the old dispositions. A
// signal ignored at start (nohup, a background job's SIGINT) stays ignored.
// After the rename the name is free, so a signal in the moment before the
// disarming finds nothing to remove. SIGKILL cannot be caught: its temp file
// stays, never read, until the library's sweep of the directory.
class RemoveTempOnSignal {
 public:
  RemoveTempOnSignal() = default;
  RemoveTempOnSignal(const RemoveTempOnSignal&) = delete;
  RemoveTempOnSignal& operator=(const RemoveTempOnSignal&) = delete;
  ~RemoveTempOnSignal() {
    for (std::size_t i = 0; i < kSignals; ++i)
      if (installed_[i]) (void)::sigaction(kCleanupSignals[i], &previous_[i], nullptr);
  }

  // The temp file is `temp_name` in FILE's directory: FILE up to and
  // including its last slash, or the working directory.
  void arm(const char* file, std::string_view temp_name) {
    const char* slash = std::strrchr(file, '/');
    const int dir_len = slash == nullptr ? 0 : static_cast<int>(slash - file + 1);
    const int n = std::snprintf(temp_path, sizeof temp_path, "%.*s%.*s", dir_len, file,
                                static_cast<int>(temp_name.size()), temp_name.data());
    if (temp_name.empty() || n < 0 || static_cast<std::size_t>(n) >= sizeof temp_path) return;
    struct sigaction action {};
    action.sa_handler = remove_temp_and_die;
    sigemptyset(&action.sa_mask);
    for (const int sig : kCleanupSignals) sigaddset(&action.sa_mask, sig);  // one death at a time
    for (std::size_t i = 0; i < kSignals; ++i) {
      if (::sigaction(kCleanupSignals[i], nullptr, &previous_[i]) != 0 ||
          previous_[i].sa_handler == SIG_IGN)
        continue;
      installed_[i] = ::sigaction(kCleanupSignals[i], &action, nullptr) == 0;
    }
  }

 private:
  static constexpr std::size_t kSignals = std::size(kCleanupSignals);
  struct sigaction previous_[kSignals] = {};
  bool installed_[kSignals] = {};
};

// What the new FILE takes from the file it replaces: its mode and, run as
// root, its owner and group. Read with lstat, since the library replaces a
// symlink rather than following it: a symlink has no mode of its own, so it
// is replaced as a new file would be (0644, the caller's). Read just before
// the transaction begins; a chmod or chown of FILE after that is lost, as it
// would be to any rewrite. An lstat that fails for another reason than a
// missing FILE leaves the defaults: begin() then reports what is wrong.
struct Kept {
  unsigned mode = 0644;
  bool owner = false;  // give the new file uid and gid
  uid_t uid = 0;
  gid_t gid = 0;
};

Kept what_to_keep(const Options& options) {
  Kept kept;
  struct stat old {};
  if (::lstat(options.file, &old) == 0 && S_ISREG(old.st_mode)) {
    kept.mode = static_cast<unsigned>(old.st_mode) & 07777u;
    // Only root can give a file away; anyone else's new file is their own.
    kept.owner = ::geteuid() == 0;
    kept.uid = old.st_uid;
    kept.gid = old.st_gid;
  }
  if (options.mode_given) kept.mode = options.mode;
  return kept;
}

// THE ONE PLACE FILE's OWNER IS KEPT. The library sets the temp file's mode
// (fchmod) at commit, before the sync and the rename; this filesystem policy
// gives the temp file FILE's owner and group first, through the descriptor.
// So the new file appears under FILE's name already owned as FILE was: a
// chown after the rename would show a reader root's file in between. And
// chown before chmod, since chown clears the set-user-ID and set-group-ID
// bits the mode may hold. Only a regular file: set_mode is also how the
// library gives a directory it made owner write and search. A failed fchown
// (a filesystem without owners) fails the save at "set permissions", FILE
// untouched. When WriteOptions can keep the owner itself, this goes.
class KeepOwnerFs : public atomic_state::PosixFs {
 public:
  explicit KeepOwnerFs(const Kept& kept) noexcept : kept_(kept) {}
  int set_mode(int fd, unsigned mode) noexcept {
    if (kept_.owner) {
      struct stat temp {};
      if (::fstat(fd, &temp) != 0) return -errno;
      if (S_ISREG(temp.st_mode) && ::fchown(fd, kept_.uid, kept_.gid) != 0) return -errno;
    }
    return PosixFs::set_mode(fd, mode);
  }

 private:
  Kept kept_;
};

char buffer[1 << 16];

// One read of standard input into `buffer`: the bytes read, 0 at its end,
// -1 after saying why it failed.
ssize_t read_input(const Options& options) {
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    std::fprintf(stderr, "atomic-write: read standard input: %s (%s unchanged)\n",
                 std::strerror(errno), options.file);
    return -1;
  }
}

// Input shorter than --no-empty or --min-bytes allow, refused.
int refuse_short_input(const Options& options, std::uint64_t got) {
  if (got == 0 && options.no_empty)
    std::fputs("atomic-write: standard input is empty (--no-empty); nothing was written\n", stderr);
  else
    std::fprintf(stderr,
                 "atomic-write: standard input has %llu byte%s, fewer than --min-bytes %llu; "
                 "nothing was written\n",
                 static_cast<unsigned long long>(got), got == 1 ? "" : "s",
                 static_cast<unsigned long long>(options.min_bytes));
  return kFailed;
}

// Streams standard input into the temp file, so input of any size needs no
// more memory than one buffer. With --no-empty or --min-bytes N, nothing is
// created (no temp file, no missing directory) until that much input has
// come: the first bytes wait in memory.
template <class Sync>
int replace_from_stdin(const Options& options) {
  std::string first;
  bool ended = false;
  const std::uint64_t least = options.least_input();
  while (!ended && first.size() < least) {
    const ssize_t n = read_input(options);
    if (n < 0) return kFailed;
    ended = n == 0;
    try {
      first.append(buffer, static_cast<std::size_t>(n));
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr,
                   "atomic-write: no memory to hold --min-bytes %llu; nothing was written\n",
                   static_cast<unsigned long long>(least));
      return kFailed;
    }
  }
  if (first.size() < least) return refuse_short_input(options, first.size());

  const Kept kept = what_to_keep(options);
  atomic_state::AtomicWriter<Sync, KeepOwnerFs> writer{KeepOwnerFs(kept)};
  // Declared before the transaction, so that it is disarmed only after the
  // transaction's destructor has removed the temp file.
  RemoveTempOnSignal cleanup;
  auto transaction = writer.begin(options.file, atomic_state::WriteOptions{kept.mode, true});
  if (!transaction) return report(transaction.status());
  cleanup.arm(options.file, transaction->temp_name());
  if (!first.empty()) {
    if (const auto written = transaction->write(first); !written) return report(written);
    std::string().swap(first);
  }
  while (!ended) {
    const ssize_t n = read_input(options);
    if (n < 0) return kFailed;  // the transaction's destructor removes the temp file
    ended = n == 0;
    const auto written = transaction->write(std::string_view(buffer, static_cast<std::size_t>(n)));
    if (!written) return report(written);
  }
  return report(transaction->commit());
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (const int status = parse(argc, argv, options); status != kReplaced) return status;
  if (options.action == Options::Action::help) return print(kUsageText);
  if (options.action == Options::Action::version)
    return print("atomic-write " ATOMIC_STATE_VERSION_STRING "\n");
  // Closed, descriptor 0 would go to the library's first open (FILE's
  // directory), and reading it would say "Is a directory".
  if (::fcntl(STDIN_FILENO, F_GETFD) == -1 && errno == EBADF) {
    std::fputs("atomic-write: standard input is closed; nothing was written\n", stderr);
    return kFailed;
  }
  if (refuse_special_file(options.file)) return kFailed;
  if (options.sync == "data") return replace_from_stdin<atomic_state::DataSync>(options);
  if (options.sync == "none") return replace_from_stdin<atomic_state::NoSync>(options);
  return replace_from_stdin<atomic_state::FullSync>(options);
}
