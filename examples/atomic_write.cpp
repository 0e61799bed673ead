// atomic-write: a durable `sponge`. Reads standard input to the end and
// atomically replaces FILE with it, so `sort f | atomic-write f` is safe and
// a crash at any moment leaves FILE either as it was or complete.
//
//   atomic-write [--mode 0644] [--sync full|data|none] FILE
//
// FILE is a regular file or missing. A FILE that is (or is a symlink to) a
// device, FIFO, socket or directory is refused before anything is written:
// replacing it would leave a regular file where /dev/null was. A symlink to
// a regular file is itself replaced, as the library documents.
//
// Exit status: 0 replaced; 1 failed or refused, FILE unchanged; 2 usage
// error; 3 FILE replaced, but the directory sync failed (not known durable).
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "atomic_state.hpp"

namespace {

constexpr int kReplaced = 0, kFailed = 1, kUsage = 2, kNotDurable = 3;

const char kUsageText[] =
    "usage: atomic-write [--mode MODE] [--sync full|data|none] FILE\n"
    "Reads standard input and atomically replaces FILE with it.\n"
    "FILE must be a regular file or missing; a device, FIFO, socket or\n"
    "directory (or a symlink to one) is refused. A symlink to a regular file\n"
    "is replaced by the new file.\n"
    "  --mode MODE   octal permission bits of FILE (default 0644)\n"
    "  --sync LEVEL  full: fsync file and directory (default)\n"
    "                data: fdatasync file, fsync directory\n"
    "                none: no sync; survives a crash of this program, not a\n"
    "                      power loss\n";

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

bool parse_mode(const char* text, unsigned& mode) {
  char* end = nullptr;
  errno = 0;
  const unsigned long value = std::strtoul(text, &end, 8);
  if (errno != 0 || end == text || *end != '\0' || value > 07777) return false;
  mode = static_cast<unsigned>(value);
  return true;
}

// Returns kReplaced on success, or the exit status of a usage error.
int parse(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsageText, stdout);
      std::exit(kReplaced);
    } else if (arg == "--version") {
      std::printf("atomic-write %s\n", ATOMIC_STATE_VERSION_STRING);
      std::exit(kReplaced);
    } else if (arg == "--mode") {
      if (!has_value) return usage_error("--mode needs a value", nullptr);
      if (!parse_mode(argv[++i], options.mode))
        return usage_error("--mode wants octal bits no higher than 07777", argv[i]);
    } else if (arg == "--sync") {
      if (!has_value) return usage_error("--sync needs a value", nullptr);
      options.sync = argv[++i];
      if (options.sync != "full" && options.sync != "data" && options.sync != "none")
        return usage_error("--sync wants full, data or none", argv[i]);
    } else if (arg == "--" && i + 2 == argc) {
      options.file = argv[++i];
    } else if (!arg.empty() && arg[0] == '-' && arg != "-") {
      return usage_error("unknown option", argv[i]);
    } else if (options.file == nullptr) {
      options.file = argv[i];
    } else {
      return usage_error("only one FILE, please", argv[i]);
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

// Streams standard input into the temp file, so input of any size needs no
// more memory than one buffer.
template <class Sync>
int replace_from_stdin(const Options& options) {
  atomic_state::AtomicWriter<Sync> writer;
  auto transaction = writer.begin(options.file, options.mode);
  if (!transaction) return report(transaction.status());
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
