// The corpus of hostile and broken state files: what load_state does with
// each of them, one table row per file.
//
// The rules under test (docs/api.md, "load_state()"):
// - a state file that parses and has the right shape loads;
// - a missing file is a first run;
// - a file that is unparsable, truncated or of the wrong shape is a first run
//   too, but only after its bytes have been kept, whole, in a copy named
//   state.json.corrupt-<its modification time>, with a warning saying where;
//   the file itself is left for the next save to replace;
// - anything else that prevents reading (not a regular file, too large, a
//   symlink loop, permission) is an error, and nothing is touched: a later
//   save must never replace a state that merely could not be read.
//
// tests/corpus holds the members small enough to store (at most 4 KiB
// each). The others are made at test time: every truncation of the valid
// seed, oversized and deeply nested files, and paths that are not regular
// files at all. Every row is also checked for what must never happen: a hang
// (the FIFO row proves opening never blocks), a leaked descriptor, a deleted
// or altered original. A crash needs no assertion: it ends the run (and this
// test is also built with AddressSanitizer and UBSan).
#include <fcntl.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "atomic_state.hpp"
#include "support/capture_sink.hpp"
#include "support/catch.hpp"
#include "support/go_service_state.hpp"
#include "support/names.hpp"

#ifndef ATOMIC_STATE_CORPUS_DIR
#error "compile with -DATOMIC_STATE_CORPUS_DIR=\"<source dir>/tests/corpus\""
#endif

namespace fs = std::filesystem;
using Manager = atomic_state::StateManager<test::CaptureSink&>;

// A failed State comparison prints both states, not "{?}".
namespace Catch {
template <>
struct StringMaker<atomic_state::State> {
  static std::string convert(const atomic_state::State& state) {
    std::string text;
    if (!atomic_state::format_json(boost::json::value_from(state), text)) return "(unprintable)";
    return text;
  }
};
template <>
struct StringMaker<atomic_state::Step> {
  static std::string convert(atomic_state::Step step) {
    return std::string(atomic_state::to_string(step));
  }
};
}  // namespace Catch

namespace {

const fs::path kCorpusDir = ATOMIC_STATE_CORPUS_DIR;
// Far longer than any load takes, even under a sanitizer.
constexpr std::chrono::seconds kHangLimit{10};

// ------------------------------------------------------------ expectations --

enum class Outcome {
  loads,        // the state in the file, the file left where it is
  first_run,    // no state file: the zero state, nothing touched
  quarantined,  // the zero state, the file kept whole in a copy beside it, a warning
  refused,      // an error Result, nothing touched, nothing logged
};

struct Expect {
  Outcome outcome;
  State state{};               // loads: every field read
  std::string error;           // quarantined: part of the warning's error field
  Step step = Step::none;      // refused: the step that failed,
  std::errc code{};            //   its errno
  const char* note = nullptr;  //   and the note in its message
};

Expect loads(State state) {
  return {Outcome::loads, std::move(state), {}, Step::none, {}, nullptr};
}
Expect first_run() { return {Outcome::first_run, State{}, {}, Step::none, {}, nullptr}; }
Expect quarantined(std::string error) {
  return {Outcome::quarantined, State{}, std::move(error), Step::none, {}, nullptr};
}
Expect refused(Step step, std::errc code, const char* note = nullptr) {
  return {Outcome::refused, State{}, {}, step, code, note};
}

State seed() { return test::go_service_state(); }
template <class Change>
State seed_where(Change change) {
  State state = seed();
  change(state);
  return state;
}
State only_last_updated(std::int64_t t) {
  State state;
  state.last_updated = t;
  return state;
}

// Makes the state path (a file, a directory, a FIFO, a link...) for a
// generated row; a stored row is copied from tests/corpus instead.
using Maker = std::function<void(const fs::path& state_path)>;

struct Row {
  std::string name;  // the file in tests/corpus, or what a generated row makes
  Expect expect;
  Maker make = nullptr;    // null: a stored file
  bool as_nobody = false;  // load with the rights of uid 65534 (needs root)
};

// ------------------------------------------------------ the stored corpus --

std::vector<Row> stored_rows() {
  const std::string oracle_name = "oracle_name: expected a string";
  const auto expected_integer = [](const char* key) {
    return std::string(key) + ": expected an integer";
  };
  return {
      // Valid files, the controls: each loads and stays where it is.
      {"valid-seed.json", loads(seed())},
      {"valid-seed-without-trailing-newline.json", loads(seed())},
      {"valid-compact-one-line.json", loads(seed())},
      {"valid-crlf-line-endings.json", loads(seed())},
      {"valid-whitespace-around.json", loads(seed())},
      {"valid-unknown-keys-ignored.json", loads(seed())},  // forward compatible
      // Missing keys are zero: an older writer, or a hand-made file.
      {"valid-empty-object.json", loads(State{})},
      {"valid-every-field-null.json", loads(State{})},  // null reads as missing
      {"valid-only-last_updated.json", loads(only_last_updated(1700000000))},
      {"valid-without-snapshot-fields.json", loads(seed_where([](State& s) {
         s.snapshot_count = s.oldest_snapshot = s.newest_snapshot = 0;
       }))},
      // Go's default names (no json tags): every key unknown, so an empty
      // state that loads; the file is valid JSON of the right shape.
      {"valid-camelcase-keys-all-unknown.json", loads(State{})},
      // Duplicate keys: the last one wins, whatever the first one was.
      {"duplicate-keys.json", loads(seed_where([](State& s) {
         s.oracle_name = "second";
         s.last_updated = 1700000001;
       }))},
      {"duplicate-keys-first-of-wrong-type.json",
       loads(seed_where([](State& s) { s.last_updated = 1700000002; }))},
      // Numbers at the edges of what the fields hold. Signs are not checked.
      {"negative-numbers.json", loads(seed_where([](State& s) {
         s.last_updated = -1;
         s.last_protocol_count = -50;
         s.last_tvs = -1500000000.25;
         s.snapshot_count = -10;
         s.oldest_snapshot = -1699000000;
         s.newest_snapshot = INT64_MIN;
       }))},
      {"huge-numbers.json", loads(seed_where([](State& s) {
         s.last_updated = INT64_MAX;
         s.last_protocol_count = INT64_MAX;
         s.last_tvs = 1.7976931348623157e308;
         s.snapshot_count = INT64_MIN;
       }))},
      // last_tvs is a double: a 64-bit integer is a number for it. One
      // beyond 64 bits is no JSON this library reads: read as a double it
      // would come back as another number.
      {"last_tvs-uint64-max.json",
       loads(seed_where([](State& s) { s.last_tvs = 18446744073709551615.0; }))},
      {"last_tvs-integer-beyond-uint64.json", quarantined("integer beyond 64 bits")},
      {"last_tvs-exponent-forms.json", loads(seed())},  // 1.5E+9
      {"last_tvs-smallest-subnormal.json",
       loads(seed_where([](State& s) { s.last_tvs = 4.9406564584124654e-324; }))},
      {"last_tvs-negative-zero.json", loads(seed_where([](State& s) { s.last_tvs = -0.0; }))},
      // Too small to tell from zero is zero (too large is corrupt, below).
      {"exponent-1e-400-reads-as-zero.json", loads(seed_where([](State& s) { s.last_tvs = 0.0; }))},
      // Strings: every escape, every plane, a name longer than the logger's
      // inline buffer.
      {"unicode-name.json", loads(seed_where([](State& s) {
         s.oracle_name =
             "ch\xC3\xA2inlink \xE3\x82\xAA\xE3\x83\xA9\xE3\x82\xAF\xE3\x83\xAB "
             "\xF0\x9F\x98\x80 \xF0\x9F\x98\x80 \xC3\xA9";
       }))},
      {"every-escape-in-name.json", loads(seed_where([](State& s) {
         static constexpr char kUnescaped[] = "q\" b\\ s/ \b\f\n\r\t nul\0 \x1f end";
         s.oracle_name = std::string(kUnescaped, sizeof kUnescaped - 1);
       }))},
      {"long-name-3000-bytes.json",
       loads(seed_where([](State& s) { s.oracle_name = std::string(3000, 'x'); }))},
      // ATOMIC_STATE_JSON_MAX_DEPTH is 32: exactly that deep still loads.
      {"depth-32-in-unknown-key.json", loads(only_last_updated(1700000000))},

      // A wrong type in each of the eight fields (and a few more shapes).
      {"wrong-type-oracle_name-number.json", quarantined(oracle_name)},
      {"wrong-type-oracle_name-array.json", quarantined(oracle_name)},
      {"wrong-type-last_updated-string.json", quarantined(expected_integer("last_updated"))},
      {"wrong-type-last_updated_iso-number.json",
       quarantined("last_updated_iso: expected a string")},
      {"wrong-type-last_protocol_count-bool.json",
       quarantined(expected_integer("last_protocol_count"))},
      {"wrong-type-last_tvs-string.json", quarantined("last_tvs: expected a number")},
      {"wrong-type-last_tvs-nan-string.json", quarantined("last_tvs: expected a number")},
      {"wrong-type-snapshot_count-array.json", quarantined(expected_integer("snapshot_count"))},
      {"wrong-type-oldest_snapshot-object.json", quarantined(expected_integer("oldest_snapshot"))},
      {"wrong-type-newest_snapshot-bool.json", quarantined(expected_integer("newest_snapshot"))},
      {"duplicate-keys-last-of-wrong-type.json", quarantined(expected_integer("last_updated"))},

      // Numbers: integer fields take integers only, exactly, within int64;
      // nothing JSON cannot hold.
      {"fraction-in-last_updated.json", quarantined(expected_integer("last_updated"))},
      {"fraction-zero-in-snapshot_count.json", quarantined(expected_integer("snapshot_count"))},
      {"exponent-in-int-oldest_snapshot.json", quarantined(expected_integer("oldest_snapshot"))},
      {"int-beyond-int64.json", quarantined("last_updated: integer out of range")},
      {"int-below-int64-min.json", quarantined("integer beyond 64 bits")},
      {"int-beyond-uint64.json", quarantined("integer beyond 64 bits")},
      {"exponent-1e400.json", quarantined("exponent overflow")},
      {"exponent-negative-1e400.json", quarantined("exponent overflow")},
      // Refused by the parser, so even where no field reads it.
      {"exponent-1e400-in-unknown-key.json", quarantined("exponent overflow")},
      {"nan-literal.json", quarantined("syntax error")},
      {"infinity-literal.json", quarantined("syntax error")},
      {"negative-infinity-literal.json", quarantined("syntax error")},
      {"number-leading-zero.json", quarantined("syntax error")},
      {"number-leading-plus.json", quarantined("syntax error")},
      {"number-hex.json", quarantined("syntax error")},
      {"number-leading-dot.json", quarantined("syntax error")},
      {"number-trailing-dot.json", quarantined("syntax error")},
      {"number-exponent-without-digits.json", quarantined("syntax error")},
      {"number-bare-minus.json", quarantined("syntax error")},
      {"number-with-digit-separators.json", quarantined("syntax error")},

      // JSON, but not an object.
      {"top-level-array.json", quarantined("expected an object")},
      {"top-level-array-holding-the-state.json", quarantined("expected an object")},
      {"top-level-string.json", quarantined("expected an object")},
      {"top-level-string-holding-the-state.json", quarantined("expected an object")},
      {"top-level-number.json", quarantined("expected an object")},
      {"top-level-null.json", quarantined("expected an object")},
      {"top-level-true.json", quarantined("expected an object")},

      // Not JSON, or no longer: what crashes, full disks and editors leave.
      {"empty.json", quarantined("incomplete JSON at byte 0")},
      {"whitespace-only.json", quarantined("incomplete JSON")},
      // Both the seed's size, as a file whose blocks were lost or scrambled.
      {"zero-filled.json", quarantined("syntax error at byte 0")},
      {"garbage-filled.json", quarantined("syntax error at byte 0")},
      {"bom.json", quarantined("syntax error at byte 0")},  // JSON has no byte order mark
      {"utf16le-with-bom.json", quarantined("syntax error at byte 0")},
      {"yaml-instead-of-json.json", quarantined("syntax error at byte 0")},
      {"html-error-page.json", quarantined("syntax error at byte 0")},
      {"git-conflict-markers.json", quarantined("syntax error at byte 0")},
      {"truncated-at-37.json", quarantined("incomplete JSON at byte 37")},
      {"truncated-mid-key.json", quarantined("incomplete JSON")},
      {"truncated-mid-number.json", quarantined("incomplete JSON")},
      {"truncated-mid-escape.json", quarantined("incomplete JSON")},
      {"truncated-after-last-value.json", quarantined("incomplete JSON")},
      {"seed-corrupted_state.json", quarantined("incomplete JSON")},  // the seed's testdata
      {"seed-partial_state.json", quarantined("incomplete JSON")},

      // Standard JSON only: no extensions, nothing after the value.
      {"trailing-garbage.json", quarantined("extra data")},
      {"trailing-second-state.json", quarantined("extra data")},
      {"trailing-nul-byte.json", quarantined("extra data")},
      {"extra-closing-brace.json", quarantined("extra data")},
      {"trailing-comma-in-object.json", quarantined("syntax error")},
      {"trailing-comma-in-unknown-array.json", quarantined("syntax error")},
      {"comment-line.json", quarantined("syntax error")},
      {"comment-block.json", quarantined("syntax error")},
      {"comment-hash.json", quarantined("syntax error")},
      {"single-quotes.json", quarantined("syntax error")},
      {"unquoted-keys.json", quarantined("syntax error")},
      {"missing-comma.json", quarantined("syntax error")},
      {"missing-colon.json", quarantined("syntax error")},
      {"missing-closing-brace.json", quarantined("incomplete JSON")},
      {"literal-True-capitalised.json", quarantined("syntax error")},
      {"literal-undefined.json", quarantined("syntax error")},
      {"unterminated-string.json", quarantined("syntax error")},  // runs into a raw newline
      {"unescaped-quote-in-string.json", quarantined("syntax error")},
      {"invalid-escape-x.json", quarantined("syntax error")},
      {"invalid-escape-short-u.json", quarantined("expected hex digit")},
      {"control-char-tab-in-string.json", quarantined("syntax error")},
      {"control-char-newline-in-string.json", quarantined("syntax error")},
      {"control-char-nul-in-string.json", quarantined("syntax error")},
      {"control-char-escape-in-key.json", quarantined("syntax error")},
      // \u escapes must spell valid UTF-16.
      {"lone-high-surrogate-escape.json", quarantined("syntax error")},
      {"lone-low-surrogate-escape.json", quarantined("illegal leading surrogate")},
      {"reversed-surrogate-pair-escape.json", quarantined("illegal leading surrogate")},
      {"high-surrogate-then-letter-escape.json", quarantined("illegal trailing surrogate")},
      {"depth-33-in-unknown-key.json", quarantined("too deep")},
      {"depth-33-objects.json", quarantined("too deep")},

      // Bytes that are not UTF-8, or not the shortest UTF-8.
      {"invalid-utf8-in-name.json", quarantined("syntax error")},
      {"invalid-utf8-in-key.json", quarantined("syntax error")},
      {"latin1-name.json", quarantined("syntax error")},
      {"overlong-utf8-slash.json", quarantined("syntax error")},
      {"overlong-utf8-three-bytes.json", quarantined("syntax error")},
      {"overlong-utf8-nul.json", quarantined("syntax error")},
      {"utf8-encoded-surrogate.json", quarantined("syntax error")},
      {"utf8-beyond-u10ffff.json", quarantined("syntax error")},
      {"utf8-five-byte-form.json", quarantined("syntax error")},
      {"utf8-truncated-sequence.json", quarantined("syntax error")},
      {"utf8-stray-continuation-byte.json", quarantined("syntax error")},
  };
}

// ----------------------------------------------------- the generated corpus --

std::string stored(const char* name) { return test::read_file(kCorpusDir / name); }

Maker file_of(std::string text) {
  return [text = std::move(text)](const fs::path& p) { test::write_plain(p, text); };
}

// A file of `size` bytes: the seed, then spaces (still valid JSON).
Maker seed_padded_to(std::size_t size) {
  return [size](const fs::path& p) {
    std::string text = test::kGoServiceStateText;
    text.resize(size, ' ');
    test::write_plain(p, text);
  };
}

std::string nested(std::size_t depth, const char* open, const char* close) {
  std::string text = "{\"deep\": ";
  for (std::size_t i = 0; i < depth; ++i) text += open;
  text += "1";
  for (std::size_t i = 0; i < depth; ++i) text += close;
  return text + "}\n";
}

void make_fifo(const fs::path& p) { REQUIRE(::mkfifo(p.c_str(), 0644) == 0); }

void make_unix_socket(const fs::path& p) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  REQUIRE(p.native().size() < sizeof address.sun_path);
  std::memcpy(address.sun_path, p.c_str(), p.native().size());
  const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(s >= 0);
  const int bound = ::bind(s, reinterpret_cast<const sockaddr*>(&address), sizeof address);
  ::close(s);  // the socket file stays
  REQUIRE(bound == 0);
}

std::vector<Row> generated_rows() {
  const std::string seed_text = stored("valid-seed.json");
  std::vector<Row> rows = {
      {"no file at all", first_run(), [](const fs::path&) {}},

      // Size: the limit (1 MiB by default) is inclusive; beyond it the file
      // is refused unread, not taken for corrupt.
      {"valid seed padded to exactly 1 MiB", loads(seed()), seed_padded_to(1 << 20)},
      {"valid seed padded to 1 MiB + 1 byte",
       refused(Step::check_file, std::errc::file_too_large, "larger than the state size limit"),
       seed_padded_to((1 << 20) + 1)},
      {"valid seed padded to 2 MiB",
       refused(Step::check_file, std::errc::file_too_large, "larger than the state size limit"),
       seed_padded_to(2 << 20)},
      // The zero tail a crash can leave after delayed allocation.
      {"valid seed followed by a 512 KiB hole", quarantined("extra data at byte 256"),
       [](const fs::path& p) {
         test::write_plain(p, test::kGoServiceStateText);
         REQUIRE(::truncate(p.c_str(), 512 << 10) == 0);
       }},
      // The parser stops at depth 33: no stack overflow however deep.
      {"arrays nested 10 000 deep", quarantined("too deep"), file_of(nested(10000, "[", "]"))},
      {"objects nested 10 000 deep", quarantined("too deep"),
       file_of(nested(10000, "{\"a\": ", "}"))},
      {"10 000 unclosed brackets", quarantined("too deep"),
       file_of("{\"deep\": " + std::string(10000, '['))},

      // Not a regular file: refused, never read, never copied.
      {"a directory",
       refused(Step::check_file, std::errc::is_a_directory, "the state path is a directory"),
       [](const fs::path& p) {
         fs::create_directory(p);
         test::write_plain(p / "inside.json", test::kGoServiceStateText);
       }},
      // Opening a FIFO without O_NONBLOCK waits for a writer forever.
      {"a FIFO",
       refused(Step::check_file, std::errc::invalid_argument, "not a regular file but a FIFO"),
       make_fifo},
      // A socket cannot be opened at all (ENXIO): refused at the open.
      {"a Unix socket", refused(Step::open_file, std::errc::no_such_device_or_address),
       make_unix_socket},
      // /dev/null reads as an empty file: taken for one, it would be taken
      // for a corrupt state and the next save would replace the link.
      {"a symlink to /dev/null",
       refused(Step::check_file, std::errc::invalid_argument,
               "not a regular file but a device or socket"),
       [](const fs::path& p) { fs::create_symlink("/dev/null", p); }},
      {"a symlink to itself", refused(Step::open_file, std::errc::too_many_symbolic_link_levels),
       [](const fs::path& p) { fs::create_symlink(p.filename(), p); }},
      {"a symlink loop through a second link",
       refused(Step::open_file, std::errc::too_many_symbolic_link_levels),
       [](const fs::path& p) {
         fs::create_symlink(p.filename(), p.parent_path() / "other.json");
         fs::create_symlink("other.json", p);
       }},
      // open() says ENOENT, as for no file; but a link to nothing usually
      // means an unmounted volume, and taking it for a first run would let
      // the next save replace the link: an error, the link left alone.
      {"a dangling symlink",
       refused(Step::open_file, std::errc::no_such_file_or_directory,
               "the state path is a symlink to nothing"),
       [](const fs::path& p) { fs::create_symlink("nowhere/state.json", p); }},
      {"a symlink to a valid file", loads(seed()),
       [](const fs::path& p) {
         test::write_plain(p.parent_path() / "real.json", test::kGoServiceStateText);
         fs::create_symlink("real.json", p);
       }},
      // The link and the file it points to are left; their bytes are copied.
      {"a symlink to a corrupt file", quarantined("incomplete JSON"),
       [](const fs::path& p) {
         test::write_plain(p.parent_path() / "real.json", "{\"last_updated\": 17");
         fs::create_symlink("real.json", p);
       }},
      // Root reads anything, so the row reads as uid 65534 (setfsuid).
      {"a file its reader may not read (mode 0000)",
       refused(Step::open_file, std::errc::permission_denied),
       [](const fs::path& p) {
         test::write_plain(p, test::kGoServiceStateText, 0);
         ::chmod(p.parent_path().c_str(), 0755);  // the directory itself stays searchable
       },
       /*as_nobody=*/true},
      // Corrupt, but its bytes cannot be kept: an error, never a first run
      // that a save would then turn into the loss of the file.
      {"a corrupt file in a directory its reader may not write",
       refused(Step::copy_aside, std::errc::permission_denied),
       [](const fs::path& p) {
         test::write_plain(p, "{\"last_updated\": 17");
         ::chmod(p.parent_path().c_str(), 0755);
       },
       /*as_nobody=*/true},
  };

  // Every truncation of the valid seed: only the one that drops the final
  // newline still loads; every other is incomplete JSON.
  for (std::size_t n = 0; n < seed_text.size(); ++n)
    rows.push_back({"valid-seed.json cut to " + std::to_string(n) + " bytes",
                    n + 1 == seed_text.size()
                        ? loads(seed())
                        : quarantined("incomplete JSON at byte " + std::to_string(n)),
                    file_of(seed_text.substr(0, n))});

  // Every single byte of the valid seed turned into NUL, as a torn sector or
  // a bad block would: never valid, never anything but corrupt.
  for (std::size_t n = 0; n < seed_text.size(); ++n) {
    std::string text = seed_text;
    text[n] = '\0';
    rows.push_back(
        {"valid-seed.json with byte " + std::to_string(n) + " zeroed",
         quarantined((n + 1 == seed_text.size() ? "extra data at byte " : "syntax error at byte ") +
                     std::to_string(n)),
         file_of(std::move(text))});
  }
  return rows;
}

// ----------------------------------------------------------------- helpers --

// What a directory entry is, to tell "untouched" from "touched".
struct Entry {
  char type;  // f regular, l symlink, d directory, p FIFO, s socket, ? other
  unsigned mode;
  std::string content;  // a file's bytes, a link's target
  bool operator==(const Entry& o) const {
    return type == o.type && mode == o.mode && content == o.content;
  }
};
using Snapshot = std::map<std::string, Entry>;

Snapshot snapshot(const fs::path& dir) {
  Snapshot entries;
  for (const std::string& name : test::names_in(dir)) {
    const fs::path p = dir / name;
    struct stat st {};
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    Entry e{'?', st.st_mode & 07777u, {}};
    if (S_ISREG(st.st_mode)) e = {'f', e.mode, test::read_file(p)};
    if (S_ISLNK(st.st_mode)) e = {'l', e.mode, fs::read_symlink(p).string()};
    if (S_ISDIR(st.st_mode)) e.type = 'd';
    if (S_ISFIFO(st.st_mode)) e.type = 'p';
    if (S_ISSOCK(st.st_mode)) e.type = 's';
    entries.emplace(name, e);
  }
  return entries;
}

std::string describe(const Snapshot& s) {
  std::string out;
  for (const auto& [name, e] : s) out += name + "(" + e.type + ") ";
  return out;
}

// Reads with the filesystem rights of uid 65534 for one scope (as root), so
// that permissions apply even to root. setfsuid changes only this thread, and
// drops CAP_DAC_OVERRIDE with the uid.
class ReadAsNobody {
 public:
  explicit ReadAsNobody(bool active) : active_(active) {
    if (!active_) return;
    (void)::setfsuid(65534);
    REQUIRE(::setfsuid(65534) == 65534);  // returns the current fsuid
  }
  ~ReadAsNobody() {
    if (active_) (void)::setfsuid(0);
  }
  ReadAsNobody(const ReadAsNobody&) = delete;
  ReadAsNobody& operator=(const ReadAsNobody&) = delete;

 private:
  bool active_;
};

// Runs `load` on this thread while a watchdog waits: a load that takes longer
// than kHangLimit is a hang. The watchdog then opens the path for writing
// without blocking, which releases an open() stuck on a FIFO, so the test
// reports the hang instead of hanging; a hang nothing releases ends the run.
template <class Load>
auto without_hanging(const fs::path& path, bool& hung, Load load) {
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
  int released_by = -1;
  hung = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(mutex);
    if (finished.wait_for(lock, kHangLimit, [&] { return done; })) return;
    hung = true;
    released_by = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (finished.wait_for(lock, kHangLimit, [&] { return done; })) return;
    std::fprintf(stderr, "load_state of %s hangs and cannot be released\n", path.c_str());
    std::_Exit(3);
  });
  auto result = load();
  {
    const std::lock_guard<std::mutex> lock(mutex);
    done = true;
  }
  finished.notify_all();
  watchdog.join();
  if (released_by >= 0) ::close(released_by);
  return result;
}

template <class M>
struct BasicFixture {
  test::TempDir dir;
  test::CaptureSink log;
  M manager{dir.path(), log};
  fs::path state_path() const { return manager.state_file(); }
  fs::path corrupt_path() const {
    return state_path().string() + ".corrupt-" + std::to_string(kStamp);
  }
};
using Fixture = BasicFixture<Manager>;
// Saves without fsync: durability is not in question where this is used, and
// hundreds of fsyncs would take seconds.
using UnsyncedManager = atomic_state::StateManager<test::CaptureSink&, State, atomic_state::NoSync>;

void make(const Row& row, const fs::path& state_path) {
  if (row.make) {
    row.make(state_path);
  } else {
    const fs::path source = kCorpusDir / row.name;
    REQUIRE(fs::is_regular_file(source));
    test::write_plain(state_path, test::read_file(source));
  }
  test::set_mtime(state_path, kStamp);
}

// What a load returned, in words, for a failure message.
std::string describe(const atomic_state::Result<State>& loaded) {
  return loaded ? "the state " + Catch::StringMaker<State>::convert(*loaded)
                : "the error \"" + loaded.status().message() + "\"";
}

std::vector<std::string> messages(const std::vector<test::Record>& records) {
  std::vector<std::string> out;
  for (const test::Record& r : records) out.push_back(r.message);
  return out;
}

// Loads the row's file and checks everything its outcome promises, and what
// every outcome promises: no hang, no leaked descriptor, no byte lost. A
// row that fails is reported and the next row still runs.
void check_row(const Row& row) {
  CAPTURE(row.name);
  if (row.as_nobody && ::geteuid() != 0) {
    WARN("skipped: reading as uid 65534 needs root");
    return;
  }
  Fixture f;
  make(row, f.state_path());
  const Snapshot before = snapshot(f.dir.path());
  std::error_code no_file;  // a directory, a FIFO... has no bytes to keep
  const std::string original =
      fs::is_regular_file(f.state_path(), no_file) ? test::read_file(f.state_path()) : "";
  const int fds = test::open_fd_count();

  bool hung = false;
  const atomic_state::Result<State> loaded = without_hanging(f.state_path(), hung, [&] {
    const ReadAsNobody nobody(row.as_nobody);
    return f.manager.load_state();
  });
  if (hung)
    FAIL_CHECK("load_state did not return within " << kHangLimit.count()
                                                   << " s; it returned only once the "
                                                      "watchdog opened the path for writing");
  CHECK(test::open_fd_count() == fds);
  const Snapshot after = snapshot(f.dir.path());
  const std::vector<test::Record> records = f.log.records();
  const Expect& expect = row.expect;
  const std::string got = describe(loaded);
  CAPTURE(got);

  switch (expect.outcome) {
    case Outcome::loads:
    case Outcome::first_run: {
      CHECK(loaded.has_value());
      if (!loaded) return;
      CHECK(*loaded == expect.state);
      CHECK(describe(after) == describe(before));
      CHECK(after == before);  // left where it is, as it was
      const char* message = expect.outcome == Outcome::loads
                                ? "state loaded"
                                : "no state file found, treating as first run";
      CHECK(messages(records) == std::vector<std::string>{message});
      if (records.size() != 1 || !records[0].has("path")) return;
      CHECK(records[0].level == (expect.outcome == Outcome::loads ? Level::debug : Level::info));
      CHECK(records[0].text("path") == f.state_path().string());
      return;
    }
    case Outcome::quarantined: {
      CHECK(loaded.has_value());
      if (!loaded) return;
      CHECK(*loaded == State{});
      // Left as it was, and its bytes kept in a private copy beside it;
      // nothing else changed.
      Snapshot expected = before;
      expected.emplace(f.corrupt_path().filename().string(), Entry{'f', 0600, original});
      CHECK(describe(after) == describe(expected));
      CHECK(after == expected);
      CHECK(test::read_file(f.corrupt_path()) == original);

      CHECK(messages(records) ==
            std::vector<std::string>{"state file corrupted, treating as first run"});
      if (records.size() != 1) return;
      const test::Record& warning = records[0];
      CHECK(warning.level == Level::warn);
      CHECK(warning.keys() == std::vector<std::string>{"path", "error", "copied_to"});
      if (warning.keys() != std::vector<std::string>{"path", "error", "copied_to"}) return;
      CHECK(warning.text("path") == f.state_path().string());
      CAPTURE(warning.text("error"));
      CHECK(contains(warning.text("error"), expect.error));
      CHECK(warning.text("copied_to") == f.corrupt_path().string());
      return;
    }
    case Outcome::refused: {
      CHECK_FALSE(loaded.has_value());
      // Not moved, not read as a first run; the error is returned, not logged.
      CHECK(describe(after) == describe(before));
      CHECK(after == before);
      CHECK(messages(records) == std::vector<std::string>{});
      if (loaded) return;
      const atomic_state::Status& s = loaded.status();
      CHECK(s.step() == expect.step);
      // The OS's errno, in the system category, as Status promises.
      CHECK(s.code() == std::error_code(static_cast<int>(expect.code), std::system_category()));
      CHECK(s.path() == f.state_path().string());
      CHECK(s.message().rfind("load state file: ", 0) == 0);
      if (expect.note) CHECK(contains(s.message(), expect.note));
      return;
    }
  }
}

std::set<std::string> names_set(const fs::path& dir) {
  const std::vector<std::string> names = test::names_in(dir);
  return {names.begin(), names.end()};
}

std::set<std::string> names_of(const std::vector<Row>& rows) {
  std::set<std::string> names;
  for (const Row& row : rows) names.insert(row.name);
  return names;
}

}  // namespace

// ------------------------------------------------------------------ tests --

TEST_CASE("the corpus directory and the table name the same files", "[corpus]") {
  // A file added without a row, or a row whose file is gone, fails here: the
  // table is the corpus's specification and cannot drift from it.
  REQUIRE(fs::is_directory(kCorpusDir));
  std::set<std::string> on_disk;
  for (const auto& entry : fs::directory_iterator(kCorpusDir)) {
    const std::string name = entry.path().filename().string();
    if (name == "README.md") continue;
    on_disk.insert(name);
    CAPTURE(name);
    CHECK_FALSE(entry.is_symlink());  // real files, not links
    CHECK(entry.is_regular_file());
    CHECK(fs::file_size(entry.path()) <= 4096u);  // the repository stays small
    CHECK(entry.path().extension() == ".json");
  }
  const std::vector<Row> rows = stored_rows();
  const std::set<std::string> in_table = names_of(rows);
  CHECK(in_table.size() == rows.size());  // no file has two rows

  std::vector<std::string> without_row, without_file;
  for (const std::string& name : on_disk)
    if (in_table.count(name) == 0) without_row.push_back(name);
  for (const std::string& name : in_table)
    if (on_disk.count(name) == 0) without_file.push_back(name);
  CHECK(without_row == std::vector<std::string>{});
  CHECK(without_file == std::vector<std::string>{});
  CHECK(on_disk.size() >= 60);
}

TEST_CASE("each stored corpus file loads, is kept aside whole, or is refused, as its row says",
          "[corpus]") {
  for (const Row& row : stored_rows()) check_row(row);
}

TEST_CASE("made at test time: every truncation, every zeroed byte, oversized and deep files",
          "[corpus]") {
  for (const Row& row : generated_rows())
    if (row.expect.outcome != Outcome::refused) check_row(row);
}

TEST_CASE("made at test time: a path that cannot be read is an error that touches nothing",
          "[corpus]") {
  for (const Row& row : generated_rows())
    if (row.expect.outcome == Outcome::refused) check_row(row);
}

TEST_CASE("every corpus file as the previous state of a corrupt one: used, passed over or refused",
          "[corpus]") {
  // With keep_previous, a corrupt state file sends the load to its
  // previous one, which may be as hostile as any state file: a valid one is
  // loaded (origin previous), a corrupt one is passed over (the zero state,
  // recovered), one that cannot be read is an error. The previous file is
  // never changed, and the load never hangs.
  atomic_state::StateOptions options;
  options.keep_previous = true;
  std::vector<Row> rows = stored_rows();
  for (Row& row : generated_rows()) rows.push_back(std::move(row));
  int used = 0, passed_over = 0, refused_rows = 0;
  for (const Row& row : rows) {
    if (row.as_nobody || row.expect.outcome == Outcome::first_run) continue;
    CAPTURE(row.name);
    test::TempDir dir;
    test::CaptureSink log;
    Manager manager(dir.path(), log, options);
    const fs::path previous = manager.previous_file();
    make(row, previous);
    test::write_plain(manager.state_file(), "{corrupt");
    std::error_code no_file;
    const bool regular = fs::is_regular_file(previous, no_file);
    const std::string original = regular ? test::read_file(previous) : "";
    const int fds = test::open_fd_count();
    bool hung = false;
    const auto loaded = without_hanging(previous, hung, [&] { return manager.load_state(); });
    CHECK_FALSE(hung);
    CHECK(test::open_fd_count() == fds);
    if (regular) CHECK(test::read_file(previous) == original);
    CHECK(test::read_file(manager.state_file()) == "{corrupt");
    switch (row.expect.outcome) {
      case Outcome::loads:
        REQUIRE(loaded.has_value());
        CHECK(loaded->origin == atomic_state::LoadOrigin::previous);
        CHECK(loaded->state() == row.expect.state);
        ++used;
        break;
      case Outcome::quarantined:
        REQUIRE(loaded.has_value());
        CHECK(loaded->origin == atomic_state::LoadOrigin::recovered);
        CHECK(loaded->state() == State{});
        CHECK(log.with("previous state file corrupted too").size() == 1);
        ++passed_over;
        break;
      case Outcome::refused:
        REQUIRE_FALSE(loaded.has_value());
        CHECK(loaded.status().step() == row.expect.step);
        CHECK(loaded.status().path() == previous.string());
        CHECK(loaded.status().message().rfind("load state file: ", 0) == 0);
        ++refused_rows;
        break;
      case Outcome::first_run:
        break;
    }
  }
  INFO(used << " used, " << passed_over << " passed over, " << refused_rows << " refused");
  CHECK(used >= 10);
  CHECK(passed_over >= 40);
  CHECK(refused_rows >= 3);
}

TEST_CASE("after a corrupt file is kept aside, the next save replaces it and keeps the copy",
          "[corpus]") {
  // The zero state of a corrupt load leads to a save; that save must
  // replace state.json only, never the copy, and must read back. When the
  // same bytes come back, the copy already holds them: no second copy.
  std::vector<Row> rows = stored_rows();
  for (Row& row : generated_rows()) rows.push_back(std::move(row));
  int quarantined_rows = 0, saved = 0;
  for (const Row& row : rows) {
    if (row.expect.outcome != Outcome::quarantined) continue;
    ++quarantined_rows;
    CAPTURE(row.name);
    BasicFixture<UnsyncedManager> f;
    make(row, f.state_path());
    const std::string original = test::read_file(f.state_path());
    std::set<std::string> names = names_set(f.dir.path());
    CHECK(f.manager.load_state().has_value());
    CHECK(test::read_file(f.corrupt_path()) == original);
    if (!fs::exists(f.corrupt_path())) continue;  // reported by the row's own test

    const State next =
        atomic_state::update_state("switchboard", 1700000600, 51, 1.5e9, {1700000600});
    const atomic_state::Status save = f.manager.save_state(next);
    CAPTURE(save.message());
    CHECK(save.ok());
    CHECK(test::read_file(f.corrupt_path()) == original);
    names.insert(f.corrupt_path().filename().string());  // beside the new state.json
    CHECK(names_set(f.dir.path()) == names);
    const auto reloaded = UnsyncedManager(f.dir.path(), f.log).load_state();
    CHECK(describe(reloaded) == describe(atomic_state::Result<State>(next)));

    // The same bytes again (a state path that is a link was replaced by the
    // save, so plain bytes this time): the copy holds them already.
    test::write_plain(f.state_path(), original);
    test::set_mtime(f.state_path(), kStamp);
    CHECK(f.manager.load_state().has_value());
    CHECK(test::read_file(f.corrupt_path()) == original);
    CHECK(names_set(f.dir.path()) == names);
    ++saved;
  }
  CHECK(saved == quarantined_rows);
}
