// atomic-write: a durable `sponge`. Reads standard input to the end (or
// runs a command and reads its output) and atomically replaces FILE with
// it, so `sort f | atomic-write f` is safe and a crash at any moment leaves
// FILE either as it was or complete.
//
//   atomic-write [--mode MODE] [--sync full|data|none] [--no-empty]
//                [--min-bytes N] [--no-follow] [-p] [--] FILE [-- COMMAND [ARG]...]
//
// FILE keeps what the editors keep: its mode, its POSIX ACL and SELinux
// context, its group (root: owner and group; a normal user: the group, where
// they are in it), through the library's ModeFrom::existing, which refuses
// the save rather than leave FILE open wider than it was, or open to
// another group (a normal user's own group takes FILE's only where that
// gives no one other access: the mode gives the group what it gives the
// others, no ACL, no set-group-ID; with --mode too). A new FILE gets what
// open(2) gives any file a program creates, as touch's: 0666 & ~umask, or,
// in a directory with a default ACL, that ACL narrowed by 0666, the umask
// ignored (ModeFrom::umask). --mode sets the mode
// instead, and then exactly: FILE's ACL and context are not kept, its owner
// and group are. MODE is 1 to 5 octal digits, 0 to 7777. An option's value
// follows it, or an "=" (--mode=0640). After a first "--" the next argument
// is FILE (`-- -name` writes a file named -name); after FILE, a "--" starts
// COMMAND. There is exactly one FILE, and it is not "-".
//
// A symlink at FILE is followed, as every file tool does: the file it leads
// to is replaced, in its own directory, and the link stays (a dangling one
// is refused, and so is a link the kernel's fs.protected_symlinks guards:
// another user's link in a sticky, world-writable directory such as /tmp,
// whatever the sysctl says). --no-follow replaces the link itself, as a
// new file. Missing parent directories are an error (a typo or an
// unmounted volume must not write to the wrong disk); -p/--parents makes
// them. A FILE with other hard links is replaced under its name only: the
// other names keep the old file, as with `sed -i`.
//
// A pipe does not carry the exit status of the command before it: a grep
// that matched nothing, or a command killed half-way, leaves atomic-write
// short input and exit 0 from its writer. `atomic-write FILE -- COMMAND`
// closes that hole: COMMAND's standard output goes to the temp file and is
// committed only when COMMAND exits 0; otherwise atomic-write exits with
// COMMAND's status (128 + the signal that killed it; 127 when it cannot be
// found, 126 when it cannot be run), FILE untouched. --no-empty refuses
// empty input and --min-bytes N input of fewer than N bytes: exit 1, nothing
// created. Until N bytes have come, they are held in memory.
//
// FILE is a regular file or missing. A FILE that is (or is a symlink to) a
// device, FIFO, socket or directory is refused before anything is written:
// replacing it would leave a regular file where /dev/null was.
//
// Interrupted by SIGHUP, SIGINT or SIGTERM, it removes its temp file, passes
// the signal on to COMMAND, and dies of that signal; FILE is as it was. A
// signal during the commit comes too late: it is dropped, and the exit
// status is the commit's. On Linux the temp file has no name until the commit, so even
// SIGKILL leaves nothing before it; a named temp file (a filesystem without
// unnamed ones) stays after SIGKILL, never read, until the library's sweep
// of the directory removes it.
//
// Exit status: 0 replaced; 1 failed or refused, FILE unchanged; 2 usage
// error; 3 FILE replaced, but a step after the rename failed (the directory
// sync, or the close of an unnamed temp file): not known durable;
// with COMMAND, COMMAND's own failing status, FILE unchanged.
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "atomic_state.hpp"

// posix_spawnp passes it on to COMMAND; declared by <unistd.h> on glibc
// only (with _GNU_SOURCE), so declared here for the others.
extern char** environ;  // NOLINT(readability-redundant-declaration)

namespace {

constexpr int kReplaced = 0, kFailed = 1, kUsage = 2, kNotDurable = 3;

const char kUsageText[] =
    "usage: atomic-write [OPTION]... [--] FILE [-- COMMAND [ARG]...]\n"
    "Reads standard input to the end and atomically replaces FILE with it:\n"
    "`sort -u f | atomic-write f` is safe, and a crash leaves FILE old or new.\n"
    "With FILE -- COMMAND, runs COMMAND and replaces FILE with its standard\n"
    "output only if it exits 0.\n"
    "\n"
    "FILE keeps its mode, its ACL and SELinux context, and its group: run as\n"
    "root its owner and group, run as a normal user its group where the user\n"
    "is in it. Where these cannot be copied, FILE is left as it was rather than\n"
    "replaced more open: a group the user is not in is lost, into the user's\n"
    "own, only where the mode gives it what it gives the others (no ACL, no\n"
    "set-group-ID). A new FILE gets what touch would give it (mode\n"
    "0666 & ~umask, or what the directory's default ACL gives) and the\n"
    "caller's owner. A symlink at FILE is followed: the file it leads to is\n"
    "replaced, in its own directory; a dangling one is refused, and so is\n"
    "another user's link in a sticky world-writable directory such as /tmp\n"
    "(the rule of fs.protected_symlinks, applied whatever the sysctl). FILE\n"
    "must be a regular file or missing: a device, FIFO, socket or directory\n"
    "(or a symlink to one) is refused. \"-\" is refused too: write ./- for a\n"
    "file named -. A FILE with other hard links is replaced under its name\n"
    "only: the other names keep the old file (the link is broken, as by\n"
    "sed -i). FILE's directory must exist (-p makes it).\n"
    "\n"
    "  --mode MODE    give FILE exactly this mode (not kept, not from the umask):\n"
    "                 1 to 5 octal digits, 0 to 7777; FILE's ACL and context\n"
    "                 are then not kept, its owner and group are (a group\n"
    "                 the user is not in, as above)\n"
    "  --no-follow    replace a symlink at FILE itself, as a new file\n"
    "  -p, --parents  make FILE's missing parent directories (as mkdir -p)\n"
    "  --sync LEVEL   full: fsync file and directory (default)\n"
    "                 data: fdatasync file, fsync directory\n"
    "                 none: no sync; survives a crash of this program, not a\n"
    "                       power loss\n"
    "  --no-empty     refuse empty input: exit 1, nothing written\n"
    "  --min-bytes N  refuse input of fewer than N bytes: exit 1, nothing\n"
    "                 written (the first N bytes are held in memory)\n"
    "  --             ends the options: `-- -name` writes a file named -name;\n"
    "                 after FILE, starts COMMAND\n"
    "  -h, --help     print this text\n"
    "  --version      print the version\n"
    "A value follows its option as the next argument or after \"=\": --mode=0640.\n"
    "\n"
    "A pipe does not carry the exit status of the command before it: if that\n"
    "command fails or is killed, atomic-write sees short input and replaces\n"
    "FILE with it. `set -o pipefail` only reports it, too late. Run the command\n"
    "instead:  atomic-write f -- sort -u f\n"
    "FILE -- COMMAND [ARG]... runs COMMAND (found in PATH) with atomic-write's\n"
    "standard input and error, its standard output going to the temp file; FILE\n"
    "is replaced only when COMMAND exits 0. Otherwise atomic-write exits with\n"
    "COMMAND's status, or 128 + the signal that killed it, or 127 (not found)\n"
    "or 126 (not runnable), FILE unchanged. FILE is checked and its temp file\n"
    "made before COMMAND starts, so a FILE that cannot be written runs no\n"
    "COMMAND; --no-empty and --min-bytes apply to COMMAND's output, and with\n"
    "them nothing is created until that much output has come.\n"
    "\n"
    "Interrupted (SIGHUP, SIGINT, SIGTERM) before the commit, it removes its\n"
    "temp file, passes the signal on to COMMAND, and leaves FILE as it was;\n"
    "during the commit, the signal is too late: FILE is replaced, the status\n"
    "says so.\n"
    "\n"
    "Exit status:\n"
    "  0  FILE replaced\n"
    "  1  failed or refused: FILE unchanged\n"
    "  2  usage error: FILE unchanged\n"
    "  3  FILE replaced, but a step after the rename failed (the directory sync):\n"
    "     not known to be durable\n"
    "  N  with COMMAND: COMMAND's failing status (126, 127, 128 + signal too):\n"
    "     FILE unchanged\n";

struct Options {
  enum class Action { replace, help, version };
  Action action = Action::replace;
  unsigned mode = 0;        // --mode's value
  bool mode_given = false;  // else FILE's own mode is kept
  std::string_view sync = "full";
  bool no_empty = false;
  std::uint64_t min_bytes = 0;
  bool follow = true;    // a symlink at FILE: replace the file it leads to
  bool parents = false;  // make missing parent directories
  const char* file = nullptr;
  char** command = nullptr;  // FILE -- COMMAND [ARG]...: argv's tail, null-terminated

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
// a first "--" the next argument is FILE, so `-- -name` writes a file named
// -name; once FILE is known, a "--" starts COMMAND, and every argument after
// it is COMMAND's. A second FILE anywhere is an error rather than one of
// them silently dropped. --help and --version end the parsing: what follows
// them is not looked at.
int parse(int argc, char** argv, Options& options) {
  bool options_ended = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--" && options.file != nullptr) {
      if (i + 1 == argc) return usage_error("no COMMAND after FILE --", nullptr);
      options.command = argv + i + 1;  // argv[argc] is a null pointer
      break;
    }
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
    } else if (name == "--no-follow") {
      if (const int status = no_value(Options::Action::replace); status != kReplaced) return status;
      options.follow = false;
    } else if (name == "-p" || name == "--parents") {
      if (const int status = no_value(Options::Action::replace); status != kReplaced) return status;
      options.parents = true;
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

// `why`, when given, says more than the library's message can.
int report(const atomic_state::Status& status, const char* why = nullptr) {
  if (status.ok()) return kReplaced;
  // Exit 3: the library's message says FILE was replaced but is not known
  // to be durable. A missing directory is not made without -p: say so.
  const bool missing_directory =
      status.step() == atomic_state::Step::open_directory && status.code().value() == ENOENT;
  if (missing_directory) why = " (-p makes missing directories)";
  std::fprintf(stderr, "atomic-write: %s%s\n", status.message().c_str(), why ? why : "");
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

// The full path of the open transaction's temp file, for the signal handler
// (empty: none yet), written with the signals blocked; and COMMAND's process
// while it runs (0: none).
char temp_path[ATOMIC_STATE_PATH_MAX + 48];
volatile std::sig_atomic_t command_pid = 0;
constexpr int kCleanupSignals[] = {SIGHUP, SIGINT, SIGTERM};

// Async-signal-safe: unlink, kill, sigaction and raise only. The signal is
// blocked while this runs, so the re-raised one is delivered, now with the
// default action, as the handler returns: the exit status still names the
// signal.
void remove_temp_and_die(int sig) {
  if (temp_path[0] != '\0') (void)::unlink(temp_path);
  if (command_pid > 0) (void)::kill(static_cast<pid_t>(command_pid), sig);
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  (void)::sigaction(sig, &default_action, nullptr);
  (void)::raise(sig);
}

// Ctrl-C, a hangup or a kill while the tool waits for input would otherwise
// end it without the transaction's destructor, leaving a 0600 temp file of
// partial input for good, and COMMAND running on. Armed before COMMAND
// starts and before begin() makes the temp file, whose name it is then
// given, until the transaction is over; the destructor restores the old
// dispositions. A signal ignored at start (nohup, a background job's
// SIGINT) stays ignored. The commit runs with the signals held (HeldSignals):
// it names an unnamed temp file and renames it in one call, so a handler
// could not learn that name in between; after the rename the name is free,
// so the held signal finds nothing to remove. SIGKILL cannot be caught: a
// named temp file stays, never read, until the library's sweep of the
// directory (an unnamed one is freed by the kernel).
class RemoveTempOnSignal {
 public:
  RemoveTempOnSignal() = default;
  RemoveTempOnSignal(const RemoveTempOnSignal&) = delete;
  RemoveTempOnSignal& operator=(const RemoveTempOnSignal&) = delete;
  ~RemoveTempOnSignal() {
    for (std::size_t i = 0; i < kSignals; ++i)
      if (installed_[i]) (void)::sigaction(kCleanupSignals[i], &previous_[i], nullptr);
    temp_path[0] = '\0';
  }

  void arm() {
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

  // The temp file is `temp_name` in `directory` (FILE's, or that of what a
  // symlink there leads to). Written with the signals blocked, so the
  // handler never reads half a path.
  void remove_on_signal(std::string_view directory, std::string_view temp_name) {
    sigset_t block, old;
    sigemptyset(&block);
    for (const int sig : kCleanupSignals) sigaddset(&block, sig);
    (void)::sigprocmask(SIG_BLOCK, &block, &old);
    const int n =
        std::snprintf(temp_path, sizeof temp_path, "%.*s/%.*s", static_cast<int>(directory.size()),
                      directory.data(), static_cast<int>(temp_name.size()), temp_name.data());
    if (temp_name.empty() || n < 0 || static_cast<std::size_t>(n) >= sizeof temp_path)
      temp_path[0] = '\0';
    (void)::sigprocmask(SIG_SETMASK, &old, nullptr);
  }

 private:
  static constexpr std::size_t kSignals = std::size(kCleanupSignals);
  struct sigaction previous_[kSignals] = {};
  bool installed_[kSignals] = {};
};

// Holds the cleanup signals off for its life; what arrived meanwhile came
// too late to stop what ran under it, and is dropped when it ends, so that
// the exit status says what happened to FILE.
class HeldSignals {
 public:
  HeldSignals() {
    sigemptyset(&held_);
    for (const int sig : kCleanupSignals) sigaddset(&held_, sig);
    (void)::sigprocmask(SIG_BLOCK, &held_, &previous_);
  }
  ~HeldSignals() {
    const struct timespec now {};
    while (::sigtimedwait(&held_, nullptr, &now) > 0) {
    }
    (void)::sigprocmask(SIG_SETMASK, &previous_, nullptr);
  }
  HeldSignals(const HeldSignals&) = delete;
  HeldSignals& operator=(const HeldSignals&) = delete;

 private:
  sigset_t held_, previous_;
};

// With --mode, what the new FILE still takes from the file it replaces:
// its owner and group, as without --mode (the library's ModeFrom::existing
// then gives the mode, ACL and context too). Read with stat of FILE (what
// a symlink there leads to), or lstat with --no-follow (a symlink itself
// has no owner to keep); the library follows the links again, refusing
// one fs.protected_symlinks guards, before anything is written. Read just
// before the transaction begins; a chown of FILE after that is lost, as it
// would be to any rewrite. A stat that fails leaves nothing to keep:
// begin() then reports what is wrong.
struct Kept {
  bool owner = false;  // give the new file uid and gid
  uid_t uid = 0;
  gid_t gid = 0;
};

// FILE as the save finds it: stat, a symlink followed, or lstat with
// --no-follow. False when that fails (nothing there: begin() reports any
// other reason).
bool look_at(const Options& options, struct stat& st) {
  return (options.follow ? ::stat(options.file, &st) : ::lstat(options.file, &st)) == 0;
}

Kept what_to_keep(const Options& options) {
  Kept kept;
  struct stat old {};
  if (options.mode_given && look_at(options, old) && S_ISREG(old.st_mode)) {
    kept.owner = true;
    kept.uid = old.st_uid;
    kept.gid = old.st_gid;
  }
  return kept;
}

// --mode: FILE's owner and group, kept as ModeFrom::existing keeps them.
// The library sets the temp file's mode (fchmod) at commit, before the sync
// and the rename; this filesystem policy gives the temp file FILE's owner
// and group first, through the descriptor. So the new file appears under
// FILE's name already owned as FILE was: a chown after the rename would
// show a reader root's file in between. And chown before chmod, since
// chown clears the set-user-ID and set-group-ID bits the mode may hold.
// Only root may give the file away; a normal user keeps the group where
// they are in it. In a group they are not in (EPERM), the file stays in
// their own group only where MODE gives a group what it gives the others
// (and no set-group-ID), as ModeFrom::existing does; otherwise the save
// fails at "set permissions" (EPERM), FILE untouched, rather than open it
// to their own group. Only a regular file: set_mode is also how the
// library gives a directory it made owner write and search. Any other
// failed fchown (a filesystem without owners) fails the save at "set
// permissions", FILE untouched.
class KeepOwnerFs : public atomic_state::PosixFs {
 public:
  explicit KeepOwnerFs(const Kept& kept) noexcept : kept_(kept) {}
  int set_mode(int fd, unsigned mode) noexcept {
    if (kept_.owner) {
      struct stat temp {};
      if (::fstat(fd, &temp) != 0) return -errno;
      if (S_ISREG(temp.st_mode)) {
        int r = ::fchown(fd, kept_.uid, kept_.gid);
        if (r != 0 && errno == EPERM) r = ::fchown(fd, static_cast<uid_t>(-1), kept_.gid);
        if (r != 0 && errno != EPERM) return -errno;
        group_refused_ = r != 0 && ((mode & 02000u) != 0 || ((mode >> 3) & 7u) != (mode & 7u));
        if (group_refused_) return -EPERM;
      }
    }
    return PosixFs::set_mode(fd, mode);
  }
  // Whether the save failed because FILE's group could not be kept.
  bool group_refused() const noexcept { return group_refused_; }

 private:
  Kept kept_;
  bool group_refused_ = false;
};

char buffer[1 << 16];

// Where the bytes come from: standard input, or the pipe from COMMAND's
// standard output. finish() says, once they have ended, whether they may
// replace FILE: kReplaced, or COMMAND's failing status.
class Input {
 public:
  explicit Input(const Options& options) : options_(options) {}
  Input(const Input&) = delete;
  Input& operator=(const Input&) = delete;
  ~Input() {
    if (fd_ != STDIN_FILENO) (void)::close(fd_);
  }

  // Starts COMMAND, its standard output a pipe to this process: kReplaced,
  // or 127 (not found) or 126 (not runnable) after saying so.
  int start_command() {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return cannot_run(errno);
    posix_spawn_file_actions_t actions;
    int r = ::posix_spawn_file_actions_init(&actions);
    if (r == 0) {
      // dup2 onto 1 clears close-on-exec there; the pipe's own two ends close.
      r = ::posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
      pid_t pid = 0;
      if (r == 0)
        r = ::posix_spawnp(&pid, options_.command[0], &actions, nullptr, options_.command, environ);
      (void)::posix_spawn_file_actions_destroy(&actions);
      if (r == 0) command_pid = static_cast<std::sig_atomic_t>(pid);
    }
    (void)::close(pipe_fds[1]);  // COMMAND's alone: its end is the end of the input
    if (r != 0) {
      (void)::close(pipe_fds[0]);
      return cannot_run(r);
    }
    fd_ = pipe_fds[0];
    return kReplaced;
  }

  // One read into `buffer`: the bytes read, 0 at the end, -1 after saying
  // why it failed.
  ssize_t read() {
    for (;;) {
      const ssize_t n = ::read(fd_, buffer, sizeof buffer);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      std::fprintf(stderr, "atomic-write: read %s: %s (%s unchanged)\n",
                   options_.command ? "the output of COMMAND" : "standard input",
                   std::strerror(errno), options_.file);
      return -1;
    }
  }

  // After the end of the input: waits for COMMAND to end.
  int finish() {
    if (command_pid == 0) return kReplaced;
    int status = 0;
    const auto pid = static_cast<pid_t>(command_pid);
    pid_t r;
    while ((r = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    command_pid = 0;
    const char* name = options_.command[0];
    if (r < 0) {
      std::fprintf(stderr, "atomic-write: wait for %s: %s; %s unchanged\n", name,
                   std::strerror(errno), options_.file);
      return kFailed;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return kReplaced;
    if (WIFSIGNALED(status)) {
      std::fprintf(stderr, "atomic-write: %s was killed by signal %d (%s); %s unchanged\n", name,
                   WTERMSIG(status), strsignal(WTERMSIG(status)), options_.file);
      return 128 + WTERMSIG(status);
    }
    std::fprintf(stderr, "atomic-write: %s exited with status %d; %s unchanged\n", name,
                 WEXITSTATUS(status), options_.file);
    return WEXITSTATUS(status);
  }

 private:
  // As a shell does: 127 when COMMAND is not found, 126 when it cannot run.
  int cannot_run(int error) const {
    std::fprintf(stderr, "atomic-write: cannot run %s: %s; %s unchanged\n", options_.command[0],
                 std::strerror(error), options_.file);
    return error == ENOENT ? 127 : 126;
  }

  const Options& options_;
  int fd_ = STDIN_FILENO;
};

// Input shorter than --no-empty or --min-bytes allow, refused.
int refuse_short_input(const Options& options, std::uint64_t got) {
  const char* what = options.command ? "the output of COMMAND" : "standard input";
  if (got == 0 && options.no_empty)
    std::fprintf(stderr, "atomic-write: %s is empty (--no-empty); nothing was written\n", what);
  else
    std::fprintf(stderr,
                 "atomic-write: %s has %llu byte%s, fewer than --min-bytes %llu; "
                 "nothing was written\n",
                 what, static_cast<unsigned long long>(got), got == 1 ? "" : "s",
                 static_cast<unsigned long long>(options.min_bytes));
  return kFailed;
}

// Streams the input into the temp file, so input of any size needs no more
// memory than one buffer. The transaction begins (FILE checked, the temp
// file made) before COMMAND starts, so that a FILE that cannot be written
// runs no COMMAND; but with --no-empty or --min-bytes N, nothing is created
// (no temp file, no missing directory) until that much input has come: the
// first bytes wait in memory. With COMMAND, nothing is committed before it
// ended with status 0.
template <class Sync>
int replace(const Options& options) {
  // Declared first, so that it is disarmed only after the transaction's
  // destructor has removed the temp file.
  RemoveTempOnSignal cleanup;
  cleanup.arm();

  // Without --mode, the library keeps mode, owner or group, ACL and
  // context of a FILE that exists (ModeFrom::existing), and gives a new
  // FILE what open(2) would (ModeFrom::umask of 0666: 0666 & ~umask, or,
  // in a directory with a default ACL, what that ACL gives, the umask
  // ignored). Should FILE vanish before the library looks, it gets
  // 0666 & ~umask, read here (one thread: setting it back at once changes
  // nothing for anyone).
  atomic_state::WriteOptions write_options;
  write_options.create_directories = options.parents;
  write_options.follow_symlinks = options.follow;
  struct stat old {};
  if (options.mode_given) {
    write_options.mode = options.mode;
  } else if (look_at(options, old) && S_ISREG(old.st_mode)) {
    const mode_t mask = ::umask(0);
    (void)::umask(mask);
    write_options.mode = 0666u & ~static_cast<unsigned>(mask);
    write_options.mode_from = atomic_state::ModeFrom::existing;
  } else {
    write_options.mode = 0666u;
    write_options.mode_from = atomic_state::ModeFrom::umask;
  }
  using Writer = atomic_state::AtomicWriter<Sync, KeepOwnerFs>;
  Writer writer{KeepOwnerFs(what_to_keep(options))};
  std::optional<typename Writer::Transaction> transaction;
  const auto begin = [&] {
    auto begun = writer.begin(options.file, write_options);
    if (!begun) return report(begun.status());
    transaction.emplace(std::move(*begun));
    cleanup.remove_on_signal(transaction->directory(), transaction->temp_name());
    return kReplaced;
  };

  const std::uint64_t least = options.least_input();
  if (least == 0)
    if (const int begun = begin(); begun != kReplaced) return begun;
  Input input(options);
  if (options.command)
    if (const int started = input.start_command(); started != kReplaced) return started;
  std::string first;
  bool ended = false;
  while (!ended && first.size() < least) {
    const ssize_t n = input.read();
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
  if (first.size() < least) {
    if (const int finished = input.finish(); finished != kReplaced) return finished;
    return refuse_short_input(options, first.size());
  }
  if (!transaction)
    if (const int begun = begin(); begun != kReplaced) return begun;
  if (!first.empty()) {
    if (const auto written = transaction->write(first); !written) return report(written);
    std::string().swap(first);
  }
  while (!ended) {
    const ssize_t n = input.read();
    if (n < 0) return kFailed;  // the transaction's destructor removes the temp file
    ended = n == 0;
    const auto written = transaction->write(std::string_view(buffer, static_cast<std::size_t>(n)));
    if (!written) return report(written);
  }
  if (const int finished = input.finish(); finished != kReplaced) return finished;
  const HeldSignals held;  // see RemoveTempOnSignal
  const atomic_state::Status committed = transaction->commit();
  return report(committed, writer.filesystem().group_refused()
                               ? " (FILE's group is one you are not in, and --mode gives that "
                                 "group other access than the others: not replaced rather than "
                                 "open it to your own group)"
                               : nullptr);
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
  if (options.sync == "data") return replace<atomic_state::DataSync>(options);
  if (options.sync == "none") return replace<atomic_state::NoSync>(options);
  return replace<atomic_state::FullSync>(options);
}
