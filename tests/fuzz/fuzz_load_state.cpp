// libFuzzer target: any bytes as a state file, and as JSON text.
//
//   clang++-14 -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined \
//     -fno-sanitize-recover=undefined -I. tests/fuzz/fuzz_load_state.cpp -lboost_json
//
// scripts/fuzz builds and runs it with tests/corpus as seeds.
//
// Invariants, each checked on every input (a violation aborts with the
// reason, which libFuzzer reports as a crash and saves the input):
//
// load_state, with the bytes as <dir>/state.json:
// - the file is still there, byte for byte, whatever happens;
// - it returns the state in the file; or the zero state, with a copy of the
//   file's bytes kept as state.json.corrupt-<its modification time>, and a
//   warning naming the path, the error and the copy;
// - a regular file within the size limit is never an error (an error is for
//   files that cannot be read), and nothing is touched by one;
// - it agrees with parse_json + try_value_to<State> on the same bytes;
// - no other file appears in the directory.
//
// parse_json and format_json, on the same bytes:
// - when parse_json accepts them, format_json writes the value (docs/api.md:
//   it refuses only what parse_json could not have read; a refusal must be
//   Step::serialize with empty output, and is reported as a finding);
// - parse_json reads that text back to the same value, every number of the
//   same kind (a double stays a double: 1.0 is written "1.0", not "1");
// - formatting is a fixed point: format(parse(format(v))) == format(v).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "atomic_state.hpp"

namespace as = atomic_state;
namespace json = boost::json;

namespace {

// The state file's modification time, which names its copy.
constexpr std::int64_t kStamp = 1764000000;

[[noreturn]] void violated(const char* invariant, const std::string& detail = {}) {
  std::fprintf(stderr, "\nINVARIANT VIOLATED: %s\n%s\n", invariant, detail.c_str());
  std::abort();
}
#define FUZZ_ASSERT(cond)         \
  do {                            \
    if (!(cond)) violated(#cond); \
  } while (0)
#define FUZZ_ASSERT_SAYING(cond, detail)  \
  do {                                    \
    if (!(cond)) violated(#cond, detail); \
  } while (0)

// The per-process directory: created once, emptied after every input,
// removed at exit.
struct Scratch {
  std::string dir, state, corrupt;
  Scratch() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/fuzz_load_state.XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) violated("mkdtemp", std::strerror(errno));
    dir = pattern;
    state = dir + "/state.json";
    corrupt = state + ".corrupt-" + std::to_string(kStamp);
  }
  ~Scratch() {
    ::unlink(state.c_str());
    ::unlink(corrupt.c_str());
    ::rmdir(dir.c_str());
  }
};
Scratch& scratch() {
  static Scratch s;
  return s;
}

void write_file(const std::string& path, const std::uint8_t* data, std::size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) violated("open for writing", path + ": " + std::strerror(errno));
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) violated("write", path + ": " + std::strerror(errno));
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) violated("close", path + ": " + std::strerror(errno));
  struct timespec times[2] = {{kStamp, 0}, {kStamp, 0}};
  if (::utimensat(AT_FDCWD, path.c_str(), times, 0) != 0) violated("utimensat", path);
}

// The file's bytes; `exists` false when there is no such file.
std::string read_file(const std::string& path, bool& exists) {
  std::string out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  exists = fd >= 0;
  if (fd < 0) {
    if (errno != ENOENT) violated("open for reading", path + ": " + std::strerror(errno));
    return out;
  }
  char buffer[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) violated("read", path + ": " + std::strerror(errno));
    if (n == 0) break;
    out.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

std::size_t entries_in(const std::string& dir) {
  std::size_t count = 0;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) violated("opendir", dir + ": " + std::strerror(errno));
  while (const dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++count;
  ::closedir(d);
  return count;
}

// Keeps what load_state logged, for the checks.
struct Recorder {
  int records = 0;
  bool corrupt_warning = false;
  std::string path, error, copied_to;
  void log(as::Level level, std::string_view message, as::Fields fields) {
    ++records;
    if (level != as::Level::warn || message != "state file corrupted, treating as first run")
      return;
    corrupt_warning = true;
    for (const as::Field& f : fields) {
      const auto* text = std::get_if<std::string_view>(&f.value);
      if (text == nullptr) continue;
      if (f.key == "path") path = *text;
      if (f.key == "error") error = *text;
      if (f.key == "copied_to") copied_to = *text;
    }
  }
};

bool same_json(const json::value& a, const json::value& b) {
  // The same kind, or a double would have come back as an integer.
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case json::kind::double_: {
      const double x = a.get_double(), y = b.get_double();
      return x == y && std::signbit(x) == std::signbit(y);
    }
    case json::kind::int64:
      return a.get_int64() == b.get_int64();
    case json::kind::uint64:
      return a.get_uint64() == b.get_uint64();
    case json::kind::null:
      return true;
    case json::kind::bool_:
      return a.get_bool() == b.get_bool();
    case json::kind::string:
      return a.get_string() == b.get_string();
    case json::kind::array: {
      const json::array &x = a.get_array(), &y = b.get_array();
      if (x.size() != y.size()) return false;
      for (std::size_t i = 0; i < x.size(); ++i)
        if (!same_json(x[i], y[i])) return false;
      return true;
    }
    case json::kind::object: {
      const json::object &x = a.get_object(), &y = b.get_object();
      if (x.size() != y.size()) return false;
      auto i = x.begin();
      auto j = y.begin();
      for (; i != x.end(); ++i, ++j)  // format_json keeps the order
        if (i->key() != j->key() || !same_json(i->value(), j->value())) return false;
      return true;
    }
    default:
      return false;
  }
}

void check_load_state(std::string_view input) {
  Scratch& s = scratch();
  write_file(s.state, reinterpret_cast<const std::uint8_t*>(input.data()), input.size());

  Recorder log;
  as::StateManager<Recorder&> manager(s.dir, log);
  const as::Result<as::State> loaded = manager.load_state();

  bool state_exists = false, corrupt_exists = false;
  const std::string state_bytes = read_file(s.state, state_exists);
  const std::string corrupt_bytes = read_file(s.corrupt, corrupt_exists);
  // The file stays, unchanged; a copy is all that may appear.
  FUZZ_ASSERT(state_exists && state_bytes == input);
  FUZZ_ASSERT(!corrupt_exists || corrupt_bytes == input);
  FUZZ_ASSERT(entries_in(s.dir) == (corrupt_exists ? 2u : 1u));

  // What parse_json and the State conversion make of the same bytes.
  const as::Result<json::value> parsed = as::parse_json(input);
  json::result<as::State> converted{json::make_error_code(json::error::not_object)};
  if (parsed) converted = json::try_value_to<as::State>(*parsed);

  if (!loaded) {
    // A small regular file is always readable: an error here is a finding,
    // but for one a newer program wrote (a schema_version above this
    // program's 0), which is refused and left as it is.
    const bool newer = loaded.status().step() == as::Step::upgrade &&
                       loaded.status().code() == std::errc::operation_not_supported && parsed &&
                       parsed->is_object() && parsed->as_object().contains("schema_version");
    FUZZ_ASSERT_SAYING(input.size() > manager.max_state_size() || newer, loaded.status().message());
    FUZZ_ASSERT(!corrupt_exists);
  } else if (log.corrupt_warning) {
    FUZZ_ASSERT(*loaded == as::State{});
    FUZZ_ASSERT_SAYING(corrupt_exists, "the warning names a copy that is not there");
    FUZZ_ASSERT(log.path == s.state && log.copied_to == s.corrupt && !log.error.empty());
    FUZZ_ASSERT_SAYING(!converted, "load_state quarantined what parse_json + try_value_to accept");
    FUZZ_ASSERT(log.records == 1);
  } else {
    FUZZ_ASSERT_SAYING(!corrupt_exists, "loaded, yet a corrupt copy was made");
    FUZZ_ASSERT_SAYING(converted.has_value(),
                       "load_state loaded what parse_json + try_value_to refuse");
    FUZZ_ASSERT_SAYING(*converted == *loaded, "load_state and try_value_to read different states");
  }

  if (corrupt_exists) ::unlink(s.corrupt.c_str());
  ::unlink(s.state.c_str());
}

void check_round_trip(std::string_view input) {
  const as::Result<json::value> parsed = as::parse_json(input);
  if (!parsed) {
    FUZZ_ASSERT(parsed.status().step() == as::Step::parse);
    return;
  }
  std::string text;
  const as::Status formatted = as::format_json(*parsed, text);
  if (!formatted) {
    FUZZ_ASSERT(formatted.step() == as::Step::serialize && text.empty());
    violated("format_json refuses a value parse_json accepted", formatted.message());
  }
  FUZZ_ASSERT(!text.empty() && text.back() == '\n');

  const as::Result<json::value> reparsed = as::parse_json(text);
  FUZZ_ASSERT_SAYING(reparsed.has_value(), reparsed.status().message() + "\n" + text);
  FUZZ_ASSERT_SAYING(same_json(*parsed, *reparsed), text);

  std::string again;
  FUZZ_ASSERT(as::format_json(*reparsed, again).ok());
  FUZZ_ASSERT_SAYING(again == text, text + "\nthen\n" + again);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_load_state(input);
  check_round_trip(input);
  return 0;
}
