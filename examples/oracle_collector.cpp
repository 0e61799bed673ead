// oracle-collector: the kind of program atomic_state is made for.
//
// It wakes up (from cron or a systemd timer), reads the latest oracle figures
// (here a bundled sample shaped like a DefiLlama oracle response, so the
// demo needs no network), and processes them only if they are newer than
// what it processed last time. Processing commits the summary file and the
// state in one step, as one batch (atomic_state::Batch and
// StateManager::save_state(state, batch)): both files are written and
// synced first, then the summary is renamed into place and, last, the
// state. A crash at any point leaves each file the previous run's or this
// run's, and never a state newer than the summary it describes; a failure
// before the renames (a state the manager refuses, a full disk) leaves
// both as they were. The next run knows which data it has seen.
//
// One run at a time: before anything else it takes the state's run lock
// (DIR/.state.json.lock, released when the run ends, however it ends). A run
// that finds it held, because the last one is still at work, logs "another
// run is in progress" at info with the holder's pid and exits 0: the data
// is left to the run at work, or to the next one. Taking the lock also
// proves that DIR can be written, so a permission problem is reported
// before any work is done.
//
//   oracle-collector [--output-dir DIR] [--input FILE] [--oracle NAME]
//                    [--log-level debug|info|warn|error]
//                    [--on-corrupt recover|fail] [--hold-ms MS]
//
// Logs (logfmt) go to stderr, the human summary to stdout. Exit status: 0
// processed, skipped (nothing newer), or skipped because another run holds
// the lock; 1 failed (an unwritable DIR among them, or, with --on-corrupt
// fail, a corrupt state file); 2 bad usage.
//
// The names in the input and the text in the state file are not trusted:
// everything printed from them goes through printable(), so a name such as
// "\x1b]0;title\x07" shows as those characters instead of retitling the
// terminal.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "atomic_state.hpp"

#ifndef ORACLE_COLLECTOR_SAMPLE
#define ORACLE_COLLECTOR_SAMPLE "examples/data/oracles-2024-11-24.json"
#endif

namespace {

namespace as = atomic_state;
namespace json = boost::json;

constexpr const char* kSummaryFile = "oracle-summary.json";

struct Options {
  std::string output_dir = "oracle-output";
  std::string input = ORACLE_COLLECTOR_SAMPLE;
  std::string oracle = "Switchboard";
  as::Level level = as::Level::info;
  as::OnCorrupt on_corrupt = as::OnCorrupt::recover;
  std::uint32_t hold_ms = 0;  // a pause after loading, as a slow fetch would make
};

struct Snapshot {
  std::int64_t timestamp = 0;
  double tvs = 0;
  std::int64_t protocol_count = 0;
};

struct Summary {
  std::string oracle;
  std::int64_t timestamp = 0;
  std::int64_t protocol_count = 0;
  double total_tvs = 0;
  std::vector<std::pair<std::string, double>> by_chain;   // largest first
  std::vector<std::pair<std::string, double>> protocols;  // largest first
  std::vector<Snapshot> history;                          // oldest first
};

void print_usage(std::ostream& out) {
  out << "usage: oracle-collector [--output-dir DIR] [--input FILE] [--oracle NAME]\n"
         "                        [--log-level debug|info|warn|error]\n"
         "                        [--on-corrupt recover|fail] [--hold-ms MS]\n"
         "Processes the oracle figures in FILE if they are newer than the last run's,\n"
         "committing DIR/"
      << kSummaryFile
      << " and DIR/state.json together, atomically.\n"
         "One run at a time: a run that finds DIR/.state.json.lock held by another\n"
         "run says so and exits 0.\n"
         "  --on-corrupt recover  a corrupt state file's bytes are copied to\n"
         "                        DIR/state.json.corrupt-*, and the run starts afresh\n"
         "  --on-corrupt fail     a corrupt state file is an error, left as it is\n"
         "  --hold-ms MS          pause MS milliseconds after loading the state, lock\n"
         "                        held, as a slow fetch would (to try overlapping runs)\n"
         "Defaults: --output-dir oracle-output --input " ORACLE_COLLECTOR_SAMPLE
         " --oracle Switchboard --log-level info --on-corrupt recover --hold-ms 0\n"
         "Exit status: 0 processed or skipped, 1 failed, 2 bad usage.\n";
}

// The length of the UTF-8 sequence at the start of `text`, with its code
// point in `code_point`; 0 when the first byte starts no valid sequence (a
// stray continuation byte, an overlong form, a surrogate, a code point past
// U+10FFFF, or a sequence cut short).
std::size_t utf8_sequence(std::string_view text, std::uint32_t& code_point) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned lead = byte(0);
  if (lead < 0x80) {
    code_point = lead;
    return 1;
  }
  // 80-BF continue a sequence, C0 and C1 would start overlong forms, F5-FF
  // code points past U+10FFFF: none of them starts a valid sequence.
  const std::size_t length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
  if (lead < 0xC2 || lead > 0xF4 || text.size() < length) return 0;
  code_point = lead & (0x7Fu >> length);  // the lead byte's bits of the code point
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xC0u) != 0x80u) return 0;
    code_point = code_point << 6 | (byte(i) & 0x3Fu);
  }
  static constexpr std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
  const bool surrogate = code_point >= 0xD800 && code_point <= 0xDFFF;
  return code_point < smallest[length] || surrogate || code_point > 0x10FFFF ? 0 : length;
}

// Whether a terminal acts on this code point rather than showing it: C0
// controls and DEL, C1 controls (U+009B is a one-character CSI), and the
// invisible characters that move or reorder what follows: bidi marks,
// embeddings, overrides and isolates, the line and paragraph separators.
bool acts_on_terminal(std::uint32_t c) {
  return c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0x061C || c == 0x200E || c == 0x200F ||
         (c >= 0x2028 && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069);
}

// `text` safe to print: what acts on a terminal is written as an escape
// instead, "\x1b" for ESC (C0 controls and DEL as \xNN, the others as
// \uNNNN, like "\u202e"), a byte that is not valid UTF-8 as \xNN, and a
// backslash doubled, so that no escape can be faked. Everything else,
// accented letters included, is kept. Every text from the input, the state
// file or the command line goes through this before it is printed.
std::string printable(std::string_view text) {
  std::string out;
  char escape[8];
  while (!text.empty()) {
    std::uint32_t c = 0;
    std::size_t length = utf8_sequence(text, c);
    if (length == 0) {  // not UTF-8: show the one byte and resynchronise
      length = 1;
      (void)std::snprintf(escape, sizeof escape, "\\x%02x", static_cast<unsigned char>(text[0]));
      out += escape;
    } else if (acts_on_terminal(c)) {
      (void)std::snprintf(escape, sizeof escape, c < 0x80 ? "\\x%02x" : "\\u%04x",
                          static_cast<unsigned>(c));
      out += escape;
    } else if (c == '\\') {
      out += "\\\\";
    } else {
      out.append(text.substr(0, length));
    }
    text.remove_prefix(length);
  }
  return out;
}

bool parse_level(const std::string& text, as::Level& level) {
  for (as::Level l : {as::Level::debug, as::Level::info, as::Level::warn, as::Level::error})
    if (text == as::to_string(l)) return level = l, true;
  return false;
}

bool parse_on_corrupt(const std::string& text, as::OnCorrupt& on_corrupt) {
  if (text == "recover") return on_corrupt = as::OnCorrupt::recover, true;
  if (text == "fail") return on_corrupt = as::OnCorrupt::fail, true;
  return false;
}

// Milliseconds, digits only, at most an hour.
bool parse_ms(const std::string& text, std::uint32_t& ms) {
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, ms);
  return !text.empty() && ec == std::errc() && ptr == end && ms <= 3600000;
}

// Checks an option's value; false (with the message printed) when it is wrong.
bool set_option(const std::string& arg, const std::string& value, Options& options) {
  if (arg == "--log-level" && !parse_level(value, options.level))
    return std::cerr << "oracle-collector: --log-level must be debug, info, warn or error\n", false;
  if (arg == "--on-corrupt" && !parse_on_corrupt(value, options.on_corrupt))
    return std::cerr << "oracle-collector: --on-corrupt must be recover or fail\n", false;
  if (arg == "--hold-ms" && !parse_ms(value, options.hold_ms))
    return std::cerr << "oracle-collector: --hold-ms must be a number of milliseconds, at most "
                        "3600000\n",
           false;
  return true;
}

// 0 to run, or the exit status to stop with.
int parse_args(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      print_usage(std::cout);
      return -1;
    }
    std::string* target = arg == "--output-dir" ? &options.output_dir
                          : arg == "--input"    ? &options.input
                          : arg == "--oracle"   ? &options.oracle
                                                : nullptr;
    const bool checked = arg == "--log-level" || arg == "--on-corrupt" || arg == "--hold-ms";
    if ((target == nullptr && !checked) || i + 1 == argc) {
      std::cerr << "oracle-collector: "
                << printable(i + 1 == argc && (target || checked) ? "missing value after " + arg
                                                                  : "unknown argument " + arg)
                << "\n";
      print_usage(std::cerr);
      return 2;
    }
    const std::string value = argv[++i];
    if (target != nullptr)
      *target = value;
    else if (!set_option(arg, value, options))
      return 2;
  }
  return 0;
}

// The file's bytes, or an error message in `error`.
bool read_text(const std::string& path, std::string& text, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return error = "cannot open " + path, false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  text = buffer.str();
  return true;
}

// Reads the oracle's figures out of a response: oraclesTVS -> oracle ->
// chain -> protocol -> USD.
bool summarize(const json::value& doc, const std::string& oracle, Summary& out,
               std::string& error) {
  const json::object* root = doc.if_object();
  const json::value* ts = root ? root->if_contains("timestamp") : nullptr;
  if (ts == nullptr || !ts->is_int64() || ts->get_int64() <= 0)
    return error = "the input has no positive integer \"timestamp\"", false;
  const json::value* all = root->if_contains("oraclesTVS");
  const json::value* chains =
      all && all->is_object() ? all->get_object().if_contains(oracle) : nullptr;
  if (chains == nullptr || !chains->is_object())
    return error = "the input has no figures for oracle \"" + oracle + "\"", false;

  out.oracle = oracle;
  out.timestamp = ts->get_int64();
  std::map<std::string, double> per_protocol;
  for (const auto& chain : chains->get_object()) {
    if (!chain.value().is_object())
      return error = "chain \"" + std::string(chain.key()) + "\" is not an object", false;
    double chain_total = 0;
    for (const auto& protocol : chain.value().get_object()) {
      if (!protocol.value().is_number())
        return error = "the TVS of \"" + std::string(protocol.key()) + "\" is not a number", false;
      const double tvs = protocol.value().to_number<double>();
      chain_total += tvs;
      per_protocol[std::string(protocol.key())] += tvs;
    }
    out.by_chain.emplace_back(std::string(chain.key()), chain_total);
    out.total_tvs += chain_total;
  }
  // Each figure is finite (parse_json refuses 1e400), but their sums need
  // not be, and an infinite one could not be written to the summary (JSON
  // has no Infinity): refuse the input. An infinite chain makes the total
  // infinite (or NaN); a protocol in several chains can overflow alone.
  const auto finite = [](const auto& named) { return std::isfinite(named.second); };
  if (!std::isfinite(out.total_tvs) ||
      !std::all_of(per_protocol.begin(), per_protocol.end(), finite))
    return error = "the TVS figures add up to more than a double can hold", false;
  out.protocol_count = static_cast<std::int64_t>(per_protocol.size());
  out.protocols.assign(per_protocol.begin(), per_protocol.end());
  const auto larger = [](const auto& a, const auto& b) { return a.second > b.second; };
  std::sort(out.by_chain.begin(), out.by_chain.end(), larger);
  std::sort(out.protocols.begin(), out.protocols.end(), larger);
  return true;
}

// The snapshots of earlier runs, from the previous summary; none if there is
// no readable one (it is rebuilt from this run on).
std::vector<Snapshot> previous_history(const std::string& path) {
  std::vector<Snapshot> history;
  std::string text, ignored;
  if (!read_text(path, text, ignored)) return history;
  auto doc = as::parse_json(text);
  const json::value* list =
      doc && doc->is_object() ? doc->get_object().if_contains("history") : nullptr;
  if (list == nullptr || !list->is_array()) return history;
  for (const json::value& item : list->get_array()) {
    const json::object* o = item.if_object();
    if (o == nullptr) continue;
    const json::value* ts = o->if_contains("timestamp");
    const json::value* tvs = o->if_contains("tvs");
    const json::value* count = o->if_contains("protocol_count");
    if (ts && ts->is_int64() && tvs && tvs->is_number() && count && count->is_int64())
      history.push_back({ts->get_int64(), tvs->to_number<double>(), count->get_int64()});
  }
  return history;
}

// Adds this run's snapshot, replacing one with the same timestamp.
void append_snapshot(std::vector<Snapshot>& history, const Snapshot& now) {
  history.erase(std::remove_if(history.begin(), history.end(),
                               [&](const Snapshot& s) { return s.timestamp == now.timestamp; }),
                history.end());
  history.push_back(now);
  std::sort(history.begin(), history.end(),
            [](const Snapshot& a, const Snapshot& b) { return a.timestamp < b.timestamp; });
}

json::value to_json(const Summary& s) {
  json::object doc;
  doc["oracle"] = s.oracle;
  doc["timestamp"] = s.timestamp;
  doc["timestamp_iso"] = as::to_rfc3339(s.timestamp);
  doc["protocol_count"] = s.protocol_count;
  doc["total_tvs"] = s.total_tvs;
  json::object& chains = doc["tvs_by_chain"].emplace_object();
  for (const auto& [chain, tvs] : s.by_chain) chains[chain] = tvs;
  json::array& top = doc["top_protocols"].emplace_array();
  for (std::size_t i = 0; i < s.protocols.size() && i < 5; ++i)
    top.push_back(json::object{{"name", s.protocols[i].first}, {"tvs", s.protocols[i].second}});
  json::array& history = doc["history"].emplace_array();
  for (const Snapshot& snap : s.history)
    history.push_back(json::object{{"timestamp", snap.timestamp},
                                   {"date", as::to_rfc3339(snap.timestamp).substr(0, 10)},
                                   {"tvs", snap.tvs},
                                   {"protocol_count", snap.protocol_count}});
  return doc;
}

// A dollar amount, short and with a unit at every size: "$512", "$9.2K",
// "$421.0M", "$1.53B", "$4.20T", and past that "$1.00e80" (a figure in the
// input can be anything a double holds, and 1e80 written out has 81
// digits). A negative amount has its sign first, "-$1.5M"; NaN and the
// infinities, which summarize() refuses, would still print as "$NaN" and
// "$Inf".
std::string money(double usd) {
  if (std::isnan(usd)) return "$NaN";
  const std::string sign = usd < 0 ? "-" : "";
  const double amount = std::fabs(usd);
  if (std::isinf(amount)) return sign + "$Inf";
  struct Unit {
    double size;
    const char* suffix;
    int decimals;
  };
  static const Unit units[] = {
      {1, "", 0}, {1e3, "K", 1}, {1e6, "M", 1}, {1e9, "B", 2}, {1e12, "T", 2}};
  char number[32];  // a figure too long for it is cut short, then too large
  for (const Unit& unit : units) {
    (void)std::snprintf(number, sizeof number, "%.*f", unit.decimals, amount / unit.size);
    // The first unit in which the figure, rounded as printed, stays below
    // 1000: 999960 prints as "1.0M", not "1000.0K".
    if (std::strtod(number, nullptr) < 1000)
      return (std::string_view(number) == "0" ? "" : sign) + "$" + number + unit.suffix;
  }
  (void)std::snprintf(number, sizeof number, "%.2e", amount);  // "1.00e+80"
  std::string text = number;
  text.erase(text.find('+'), 1);  // the exponent is positive past the trillions
  return sign + "$" + text;
}

void print_summary(const Summary& s, const std::string& summary_path,
                   const std::string& state_path) {
  std::cout << printable(s.oracle) << " oracle, data of " << as::to_rfc3339(s.timestamp) << "\n"
            << "  protocols   " << s.protocol_count << "\n"
            << "  total TVS   " << money(s.total_tvs) << "\n"
            << "  by chain    ";
  for (std::size_t i = 0; i < s.by_chain.size(); ++i)
    std::cout << (i ? ", " : "") << printable(s.by_chain[i].first) << " "
              << money(s.by_chain[i].second);
  std::cout << "\n  largest     ";
  for (std::size_t i = 0; i < s.protocols.size() && i < 3; ++i)
    std::cout << (i ? ", " : "") << printable(s.protocols[i].first) << " "
              << money(s.protocols[i].second);
  std::cout << "\n  history     " << s.history.size()
            << (s.history.size() == 1 ? " snapshot" : " snapshots") << ", "
            << as::to_rfc3339(s.history.front().timestamp).substr(0, 10) << " to "
            << as::to_rfc3339(s.history.back().timestamp).substr(0, 10) << "\n"
            << "  wrote       " << printable(summary_path) << ", " << printable(state_path) << "\n";
}

// Error messages quote names from the input and paths from the command line.
int fail(const std::string& what) {
  std::cerr << "oracle-collector: " << printable(what) << "\n";
  return 1;
}

// Whether taking the run lock failed because another run holds it.
bool held_by_another(const as::Status& status) {
  return status.code() == std::errc::resource_unavailable_try_again;
}

// Another run holds the lock: it processes the data (or the next run will),
// so this one stops, and that is no failure: exit 0. The holder is "held by
// pid N", or unknown when its pid could not be read.
int another_run(as::LogfmtSink& logger, const as::Status& held, const std::string& lock_path) {
  const std::string_view holder = held.detail().empty() ? "unknown" : held.detail();
  const as::Field fields[] = {{"lock", lock_path}, {"holder", holder}};
  logger.log(as::Level::info, "another run is in progress", as::Fields(fields, 2));
  std::cout << "another run is in progress ("
            << printable(held.detail().empty() ? "holder unknown" : held.detail()) << ", lock "
            << printable(lock_path) << "); skipped.\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (const int stop = parse_args(argc, argv, options); stop != 0) return stop < 0 ? 0 : stop;

  as::LogfmtSink logger(std::cerr, options.level);
  as::StateOptions state_options;
  state_options.on_corrupt = options.on_corrupt;
  as::StateManager<as::LogfmtSink&> manager(options.output_dir, logger, state_options);

  // The run lock first, held until main returns: two overlapping runs would
  // both process the same data, and the last to save would win. Taking it
  // also checks that the directory can be written, before any work.
  as::Result<as::RunLock<>> lock = manager.try_lock_run();
  // A run writes its pid into the lock file just after taking the lock; one
  // that comes in between reads none. Asking again for a moment (half a
  // second at most) reads the pid, or finds the lock free.
  for (int tries = 0;
       tries < 50 && !lock && held_by_another(lock.status()) && lock.status().detail().empty();
       ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    lock = manager.try_lock_run();
  }
  if (!lock) {
    if (!held_by_another(lock.status())) return fail(lock.status().message());
    return another_run(logger, lock.status(), manager.lock_file());
  }

  as::Result<as::Loaded<as::State>> state = manager.load_state();
  if (!state) return fail(state.status().message());
  // A corrupt state file (--on-corrupt recover): its bytes were copied
  // aside and this run starts as a first run. The warning is logged; the
  // person reading the summary should see it too.
  if (state->origin == as::LoadOrigin::recovered)
    std::cout << printable(manager.state_file()) << " was corrupt; its bytes are kept in "
              << printable(state->corrupt_copy) << "; processing as a first run.\n";

  // Where a real collector fetches its data, which may take a while:
  // --hold-ms stands for a slow fetch, to make overlapping runs easy to try.
  if (options.hold_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options.hold_ms));

  std::string text, error;
  if (!read_text(options.input, text, error)) return fail(error);
  as::Result<json::value> doc = as::parse_json(text);
  if (!doc) return fail(options.input + ": " + doc.status().message());
  Summary summary;
  if (!summarize(*doc, options.oracle, summary, error)) return fail(options.input + ": " + error);

  if (!manager.should_process(summary.timestamp, *state)) {
    // last_updated_iso is the state file's text, as untrusted as the input.
    std::cout << printable(summary.oracle) << " oracle: nothing newer than "
              << printable(state->last_updated_iso.empty() ? as::to_rfc3339(state->last_updated)
                                                           : state->last_updated_iso)
              << ", which was processed already; skipped.\n";
    return 0;
  }

  // Outputs and state in one batch, the state last: both are written and
  // synced before either is renamed, and the state is renamed after the
  // summary, so after a crash the state never records data whose summary
  // was not written (the next run processes that data again), and a
  // failure before the renames leaves both files as they were.
  const std::string summary_path = std::filesystem::path(manager.output_dir()) / kSummaryFile;
  summary.history = previous_history(summary_path);
  append_snapshot(summary.history, {summary.timestamp, summary.total_tvs, summary.protocol_count});
  std::string out;
  if (as::Status formatted = as::format_json(to_json(summary), out); !formatted)
    return fail(formatted.message());
  as::Batch<> batch;
  if (as::Status added = batch.add(summary_path, out); !added) return fail(added.message());

  std::vector<std::int64_t> snapshot_times;
  for (const Snapshot& snap : summary.history) snapshot_times.push_back(snap.timestamp);
  const as::State next = as::update_state(summary.oracle, summary.timestamp, summary.protocol_count,
                                          summary.total_tvs, snapshot_times);
  // Adds the state as the batch's last file and commits: on a failure the
  // batch's temp files are removed and its message says which files, if
  // any, were already replaced.
  if (as::Status saved = manager.save_state(next, batch); !saved) return fail(saved.message());

  print_summary(summary, summary_path, manager.state_file());
  return 0;
}
