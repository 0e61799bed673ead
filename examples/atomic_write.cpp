// atomic-write: a durable `sponge`. Reads standard input to the end and
// atomically replaces FILE with it, so `sort f | atomic-write f` is safe and
// a crash at any moment leaves FILE either as it was or complete.
//
//   atomic-write [--mode 0644] [--sync full|data|none] [--] FILE
//
// MODE is 1 to 5 octal digits, 0 to 7777. After "--" every argument is FILE
// (`-- -name` writes a file named -name); there is exactly one FILE.
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
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <string_view>

#include "atomic_state.hpp"

namespace {

constexpr int kReplaced = 0, kFailed = 1, kUsage = 2, kNotDurable = 3;

const char kUsageText[] =
    "usage: atomic-write [--mode MODE] [--sync full|data|none] [--] FILE\n"
    "Reads standard input and atomically replaces FILE with it.\n"
    "FILE must be a regular file or missing; a device, FIFO, socket or\n"
    "directory (or a symlink to one) is refused. A symlink to a regular file\n"
    "is replaced by the new file. Interrupted (SIGHUP, SIGINT, SIGTERM)\n"
    "before the rename, it removes its temp file and leaves FILE as it was.\n"
    "  --mode MODE   permission bits of FILE: 1 to 5 octal digits, 0 to 7777\n"
    "                (default 0644)\n"
    "  --sync LEVEL  full: fsync file and directory (default)\n"
    "                data: fdatasync file, fsync directory\n"
    "                none: no sync; survives a crash of this program, not a\n"
    "                      power loss\n"
    "  --            ends the options: `-- -name` writes a file named -name\n";

struct Options {
  unsigned mode = 0644;
  std::string_view sync = "full";
  const char* file = nullptr;
};

int usage_error(const char* what, const char* arg) {
  std::fprintf(stderr, "atomic-write: %s%s%s\n%s", what, arg ? ": " : "", arg ? arg : "",
               kUsageText);
  return kUsage;
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

// Returns kReplaced on success, or the exit status of a usage error. After
// "--" every argument is FILE, so `-- -name` writes a file named -name; a
// second FILE anywhere is an error rather than one of them silently dropped.
int parse(int argc, char** argv, Options& options) {
  bool options_ended = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (options_ended || arg.size() < 2 || arg[0] != '-') {  // "-" is a file name too
      if (options.file != nullptr) return usage_error("only one FILE, please", argv[i]);
      options.file = argv[i];
    } else if (arg == "--") {
      options_ended = true;
    } else if (arg == "-h" || arg == "--help") {
      std::fputs(kUsageText, stdout);
      std::exit(kReplaced);
    } else if (arg == "--version") {
      std::printf("atomic-write %s\n", ATOMIC_STATE_VERSION_STRING);
      std::exit(kReplaced);
    } else if (arg == "--mode") {
      if (!has_value) return usage_error("--mode needs a value", nullptr);
      if (!parse_mode(argv[++i], options.mode)) {
        // Quoted: " 644" and "" must be seen for what they are.
        const std::string quoted = '"' + std::string(argv[i]) + '"';
        return usage_error("--mode wants 1 to 5 octal digits, 0 to 7777", quoted.c_str());
      }
    } else if (arg == "--sync") {
      if (!has_value) return usage_error("--sync needs a value", nullptr);
      options.sync = argv[++i];
      if (options.sync != "full" && options.sync != "data" && options.sync != "none")
        return usage_error("--sync wants full, data or none", argv[i]);
    } else {
      return usage_error("unknown option", argv[i]);
    }
  }
  if (options.file == nullptr) return usage_error("FILE is missing", nullptr);
  return kReplaced;
}

int report(const atomic_state::Status& status) {
  if (status.ok()) return kReplaced;
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

// Streams standard input into the temp file, so input of any size needs no
// more memory than one buffer.
template <class Sync>
int replace_from_stdin(const Options& options) {
  atomic_state::AtomicWriter<Sync> writer;
  // Declared before the transaction, so that it is disarmed only after the
  // transaction's destructor has removed the temp file.
  RemoveTempOnSignal cleanup;
  auto transaction = writer.begin(options.file, options.mode);
  if (!transaction) return report(transaction.status());
  cleanup.arm(options.file, transaction->temp_name());
  static char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "atomic-write: read standard input: %s (%s unchanged)\n",
                   std::strerror(errno), options.file);
      return kFailed;  // the transaction's destructor removes the temp file
    }
    const auto written = transaction->write(std::string_view(buffer, static_cast<std::size_t>(n)));
    if (!written) return report(written);
  }
  return report(transaction->commit());
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (const int status = parse(argc, argv, options); status != kReplaced) return status;
  if (refuse_special_file(options.file)) return kFailed;
  if (options.sync == "data") return replace_from_stdin<atomic_state::DataSync>(options);
  if (options.sync == "none") return replace_from_stdin<atomic_state::NoSync>(options);
  return replace_from_stdin<atomic_state::FullSync>(options);
}
