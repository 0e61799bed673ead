// logging.hpp: Level, Field, LogSink, NullSink, LogfmtSink: log records and sinks
#ifndef ATOMIC_STATE_LOGGING_HPP
#define ATOMIC_STATE_LOGGING_HPP

#include <pthread.h>  // pthread_mutex_t: LogfmtSink (<mutex> would cost every includer)

#include <algorithm>    // std::find, std::all_of
#include <atomic>       // std::atomic: LogfmtSink's level
#include <charconv>     // std::to_chars: numbers in records
#include <cstddef>      // std::size_t
#include <cstdint>      // std::int64_t, std::uint64_t, std::uint32_t
#include <cstring>      // std::memcpy
#include <iosfwd>       // std::ostream: LogfmtSink (its user includes <ostream>)
#include <memory>       // std::unique_ptr: TextBuffer's heap
#include <new>          // std::nothrow
#include <string>       // std::string: append_logfmt_*, to_rfc3339
#include <string_view>  // std::string_view
#include <type_traits>  // std::enable_if_t, std::is_*_v
#include <utility>      // std::move
#include <variant>      // std::variant: Field::Value

#include "preamble.hpp"

// The C++20 spelling of the LogSink requirement, where the compiler has it.
#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
#define ATOMIC_STATE_DETAIL_LOG_SINK ::atomic_state::LogSink
#else
#define ATOMIC_STATE_DETAIL_LOG_SINK class
#endif

// Exact JSON numbers are written with std::to_chars and read with
// std::from_chars; without them a saved double could not load back bit for
// bit.
#if !defined(__cpp_lib_to_chars) && !(defined(__GLIBCXX__) && _GLIBCXX_RELEASE >= 11)
#error \
    "atomic_state.hpp needs floating-point std::to_chars/std::from_chars (libstdc++ 11, libc++ 17, MSVC 19.24 or later)"
#endif

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

/// How much a log record matters.
enum class Level : unsigned char { debug, info, warn, error };

/// "debug", "info", "warn" or "error".
constexpr std::string_view to_string(Level level) noexcept;

/// One key/value pair of a log record. A string value is a view: it is
/// valid only during the log() call that receives it.
namespace detail {
// Character types, which a log field refuses: logged as a number a char
// would mislead, and as text it would need storage the field does not
// have. (signed char and unsigned char are int8_t and uint8_t: numbers.)
template <class T>
inline constexpr bool is_character_v =
    std::is_same_v<T, char> || std::is_same_v<T, wchar_t> || std::is_same_v<T, char16_t> ||
#if defined(__cpp_char8_t)
    std::is_same_v<T, char8_t> ||
#endif
    std::is_same_v<T, char32_t>;
}  // namespace detail

/// One key/value pair of a log record. A string value is a view: it is
/// valid only during the log() call that receives it. Signed integers are
/// held as int64, unsigned ones as uint64, so every value logs as itself.
struct Field {
  using Value = std::variant<std::int64_t, std::uint64_t, double, bool, std::string_view>;

  std::string_view key;
  Value value;

  /// No key, the value 0: a place to fill in an array of fields.
  constexpr Field() noexcept : value(std::int64_t{0}) {}
  constexpr Field(std::string_view k, std::string_view v) noexcept : key(k), value(v) {}
  constexpr Field(std::string_view k, const char* v) noexcept
      : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, const std::string& v) noexcept : key(k), value(std::string_view(v)) {}
  constexpr Field(std::string_view k, bool v) noexcept : key(k), value(v) {}
  constexpr Field(std::string_view k, double v) noexcept : key(k), value(v) {}
  template <class Int, std::enable_if_t<std::is_integral_v<Int> && !std::is_same_v<Int, bool> &&
                                            !detail::is_character_v<Int>,
                                        int> = 0>
  constexpr Field(std::string_view k, Int v) noexcept : key(k), value(widened(v)) {}
  /// A character is refused: log a string_view of it, or cast it to a number.
  template <class Char, std::enable_if_t<detail::is_character_v<Char>, int> = 0>
  Field(std::string_view k, Char v) = delete;

 private:
  template <class Int>
  static constexpr Value widened(Int v) noexcept {
    if constexpr (std::is_signed_v<Int>)
      return Value(std::in_place_type<std::int64_t>, v);
    else
      return Value(std::in_place_type<std::uint64_t>, v);
  }
};

/// The fields of one record: a view of an array of Field, iterable. Valid
/// only during the log() call that receives it: copy what you keep.
class Fields {
 public:
  constexpr Fields() noexcept = default;
  constexpr Fields(const Field* data, std::size_t size) noexcept : data_(data), size_(size) {}

  constexpr const Field* begin() const noexcept { return data_; }
  constexpr const Field* end() const noexcept { return data_ + size_; }
  constexpr std::size_t size() const noexcept { return size_; }
  constexpr bool empty() const noexcept { return size_ == 0; }
  constexpr const Field& operator[](std::size_t i) const noexcept { return data_[i]; }
  /// The first field named `key`, or nullptr.
  const Field* find(std::string_view key) const noexcept;

 private:
  const Field* data_ = nullptr;
  std::size_t size_ = 0;
};

/// A log sink is any type with a member `log(Level, std::string_view
/// message, Fields fields)`; a template over the fields' type works too.
/// The C++17 static_asserts ask this trait; the C++20 concept LogSink asks
/// the same of the call itself, so that compilers print the signature it
/// needs (tests/compile_fail_test.sh checks that the two agree). A
/// reference to a sink is a sink. A sink that throws is tolerated:
/// StateManager catches and drops the exception.
template <class S, class = void>
struct is_log_sink : std::false_type {};
template <class S>
struct is_log_sink<
    S, std::void_t<decltype(std::declval<S&>().log(
           std::declval<Level>(), std::declval<std::string_view>(), std::declval<Fields>()))>>
    : std::true_type {};
template <class S>
inline constexpr bool is_log_sink_v = is_log_sink<std::remove_reference_t<S>>::value;

#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
template <class S>
concept LogSink = requires(S& sink) {
  sink.log(Level(), std::string_view(), Fields());
};
#endif

/// The default sink: drops every record and costs nothing.
struct NullSink {
  constexpr void log(Level, std::string_view, Fields) const noexcept {}
};

/// Writes one logfmt line per record to a std::ostream and flushes it:
///   level=info msg="state saved" timestamp=1700000000 tvs=1500000000.0
/// Records below the minimum level are dropped. Every byte that comes from
/// data is escaped, so one record is one line for every common log reader:
/// a value is bare when it is one plain printable ASCII word, else quoted,
/// with `"` `\\` and control characters escaped as in JSON, C1 controls,
/// U+2028, U+2029 and the bidirectional controls as \\uXXXX, and bytes
/// that are not UTF-8 as \\xNN; a key keeps only printable ASCII other than
/// `=` `"` `\\`, every other byte becoming `_`, and a field named `level`
/// or `msg` is written `fields.level`, `fields.msg`. A line the stream fails to
/// take is lost alone: the stream's error state is cleared before each
/// line, as is one whose stream throws. DEL is escaped as \\u007f. A double
/// is written exactly, and always as a double (1500000000.0, 0.1). Safe to
/// share between threads: each line is formatted apart, then written whole
/// under a lock. Formatting allocates nothing for lines up to 512 bytes.
/// Movable, not copyable: share one by reference (StateManager<LogfmtSink&>).
class LogfmtSink {
 public:
  /// `out` is a std::ostream (or one derived from it), which the caller's
  /// code includes: this header includes only <iosfwd> for it.
  template <class Stream, std::enable_if_t<std::is_base_of_v<std::ostream, Stream>, int> = 0>
  explicit LogfmtSink(Stream& out, Level min_level = Level::info) noexcept
      : out_(&out),
        write_(&write_line<Stream>),
        min_level_(static_cast<unsigned char>(min_level)) {}
  /// Takes over the stream and level; the lock is a new one.
  LogfmtSink(LogfmtSink&& other) noexcept
      : out_(other.out_), write_(other.write_), min_level_(other.min_level_.load()) {}
  LogfmtSink(const LogfmtSink&) = delete;
  LogfmtSink& operator=(const LogfmtSink&) = delete;
  ~LogfmtSink() { (void)::pthread_mutex_destroy(&mutex_); }

  void log(Level level, std::string_view message, Fields fields) noexcept;

  Level min_level() const noexcept { return static_cast<Level>(min_level_.load()); }
  void set_min_level(Level level) noexcept { min_level_.store(static_cast<unsigned char>(level)); }

 private:
  // Writes one whole line and flushes, under the sink's lock; a stream set
  // to throw must not end the save, and a line lost before must not silence
  // every line after it.
  template <class Stream>
  static void write_line(std::ostream* out, std::string_view line) noexcept {
    // std::ostream's own members, never a derived stream's of the same
    // names; named through Stream so that the calls wait for the caller's
    // <ostream> (this header has only <iosfwd>).
    using Out = std::conditional_t<std::is_base_of_v<std::ostream, Stream>, std::ostream, Stream>;
    Out& stream = *out;
    ATOMIC_STATE_DETAIL_TRY {
      stream.clear();
      stream.write(line.data(), static_cast<std::streamsize>(line.size()));
      stream.flush();
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL {}
  }

  std::ostream* out_;
  void (*write_)(std::ostream*, std::string_view) noexcept;
  std::atomic<unsigned char> min_level_;
  pthread_mutex_t mutex_ = PTHREAD_MUTEX_INITIALIZER;  // not <mutex>: it costs every includer
};

/// The names before 0.2.0, removed in 0.3.0.
using NullLogger [[deprecated("renamed NullSink; removed in 0.3.0")]] = NullSink;
using LogfmtLogger [[deprecated("renamed LogfmtSink; removed in 0.3.0")]] = LogfmtSink;

/// Appends each field as " key=value", escaped as LogfmtSink escapes them:
/// for sinks of one's own that write text lines (examples/sinks/ has one for
/// spdlog). False when memory ran out (`out` then holds a part).
bool append_logfmt_fields(std::string& out, Fields fields) noexcept;
/// Appends `text` as one logfmt value, as LogfmtSink writes it: bare when
/// it is a plain word, else quoted and escaped. False when memory ran out.
bool append_logfmt_text(std::string& out, std::string_view text) noexcept;

/// "2023-11-14T22:13:20Z" for 1700000000: RFC 3339 in UTC, whole seconds.
/// Years outside 0000-9999 are written with as many digits as they need
/// (and a '-' before the year), as Go's time package does.
std::string to_rfc3339(std::int64_t unix_seconds);

// ========================================================= implementation ====

constexpr std::string_view to_string(Level level) noexcept {
  switch (level) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
  }
  return "unknown";
}

inline const Field* Fields::find(std::string_view key) const noexcept {
  for (const Field& field : *this)
    if (field.key == key) return &field;
  return nullptr;
}

namespace detail {
/// Text built in place: the first N bytes live inside the object, more go
/// to the heap without throwing. Every failure to grow is reported.
template <std::size_t N>
class TextBuffer {
 public:
  TextBuffer() noexcept = default;
  TextBuffer(const TextBuffer&) = delete;
  TextBuffer& operator=(const TextBuffer&) = delete;

  /// Room for `n` more bytes at the end, or nullptr when memory ran out.
  char* room_for(std::size_t n) noexcept {
    if (n > capacity_ - size_ && !grow(n)) return nullptr;
    return data() + size_;
  }
  /// Counts `n` bytes written into room_for()'s space.
  void added(std::size_t n) noexcept { size_ += n; }
  bool append(std::string_view s) noexcept {
    char* p = room_for(s.size());
    if (p == nullptr) return false;
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    size_ += s.size();
    return true;
  }
  std::size_t size() const noexcept { return size_; }
  std::size_t spare() const noexcept { return capacity_ - size_; }
  std::string_view view() const noexcept {
    return std::string_view(heap_ ? heap_.get() : inline_, size_);
  }

 private:
  char* data() noexcept { return heap_ ? heap_.get() : inline_; }
  bool grow(std::size_t n) noexcept {
    if (n > static_cast<std::size_t>(-1) / 2 - size_) return false;
    std::size_t capacity = capacity_ * 2;
    if (capacity < size_ + n) capacity = size_ + n;
    std::unique_ptr<char[]> bigger(new (std::nothrow) char[capacity]);
    if (!bigger) return false;
    if (size_ > 0) std::memcpy(bigger.get(), data(), size_);
    heap_ = std::move(bigger);
    capacity_ = capacity;
    return true;
  }

  char inline_[N];
  std::unique_ptr<char[]> heap_;
  std::size_t size_ = 0;
  std::size_t capacity_ = N;
};

/// Appends to a std::string, reporting out-of-memory instead of throwing.
struct StringOut {
  std::string& text;
  bool append(std::string_view s) noexcept {
    ATOMIC_STATE_DETAIL_TRY {
      text.append(s.data(), s.size());
      return true;
    }
    ATOMIC_STATE_DETAIL_CATCH_ALL { return false; }
  }
};

/// The shortest text that reads back as exactly `v` (finite), and reads
/// back as a double: plain digits from 1e-6 to 1e21 as people write them,
/// with ".0" when there would be no point ("2.0", not "2", which JSON
/// readers take for an integer), scientific outside; "-0.0" keeps the sign
/// of a negative zero.
inline std::size_t format_double(double v, char (&out)[40]) noexcept {
  if (v == 0) {
    // The sign bit, read as <cmath>'s signbit reads it (the header does not
    // include <cmath>: it alone would cost a fifth of the writer's compile).
    std::uint64_t bits = 0;
    static_assert(sizeof bits == sizeof v, "a double of 64 bits");
    std::memcpy(&bits, &v, sizeof bits);
    const std::string_view zero = bits >> 63 ? "-0.0" : "0.0";
    std::memcpy(out, zero.data(), zero.size());
    return zero.size();
  }
  const double magnitude = v < 0 ? -v : v;
  const bool fixed = magnitude >= 1e-6 && magnitude < 1e21;
  const auto r = std::to_chars(out, out + sizeof out - 2, v,
                               fixed ? std::chars_format::fixed : std::chars_format::scientific);
  if (r.ec != std::errc()) return 0;
  char* end = r.ptr;
  if (fixed && std::find(out, end, '.') == end) {
    *end++ = '.';
    *end++ = '0';
  }
  return static_cast<std::size_t>(end - out);
}

inline std::size_t format_int(std::int64_t v, char (&out)[40]) noexcept {
  return static_cast<std::size_t>(std::to_chars(out, out + sizeof out, v).ptr - out);
}

inline std::size_t format_uint(std::uint64_t v, char (&out)[40]) noexcept {
  return static_cast<std::size_t>(std::to_chars(out, out + sizeof out, v).ptr - out);
}

/// The length of the valid UTF-8 sequence starting at s[i] (1-4), or 0.
/// Rejects what JSON parsers reject: overlong forms, surrogates, values
/// above U+10FFFF, truncated sequences.
inline std::size_t utf8_sequence(std::string_view s, std::size_t i) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  std::size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  return n;
}

inline bool valid_utf8(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// The letter of JSON's two-character escape of `c` ('n' for a newline),
// or 0 when JSON has none.
inline char short_escape(unsigned char c) noexcept {
  switch (c) {
    case '"':
      return '"';
    case '\\':
      return '\\';
    case '\n':
      return 'n';
    case '\r':
      return 'r';
    case '\t':
      return 't';
    case '\b':
      return 'b';
    case '\f':
      return 'f';
    default:
      return 0;
  }
}

/// The JSON escape of an ASCII control character, quote or backslash:
/// "\\n" and its kin where JSON has one, else "\\u00XX". Returns its length.
inline std::size_t ascii_escape(unsigned char c, char (&out)[8]) noexcept {
  static constexpr char hex[] = "0123456789abcdef";
  out[0] = '\\';
  if (const char letter = short_escape(c)) {
    out[1] = letter;
    return 2;
  }
  const char code[5] = {'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
  std::memcpy(out + 1, code, sizeof code);
  return 6;
}

/// The code point of the valid UTF-8 sequence of `n` bytes at s[i].
inline std::uint32_t utf8_code_point(std::string_view s, std::size_t i, std::size_t n) noexcept {
  const auto byte = [&](std::size_t k) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(s[i + k]));
  };
  if (n == 1) return byte(0);
  std::uint32_t cp = byte(0) & (0x7Fu >> n);
  for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (byte(k) & 0x3Fu);
  return cp;
}

/// Code points that some log reader takes for a line break or that reorder
/// what a terminal shows: C1 controls (NEL, CSI, ...), U+2028, U+2029, and
/// the bidirectional marks, embeddings, overrides and isolates.
inline bool misleading_code_point(std::uint32_t cp) noexcept {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x061C || cp == 0x200E || cp == 0x200F ||
         (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

/// Appends `s` quoted for logfmt, escaped so that no byte of it can end
/// the line, forge a field or change what a terminal shows (see
/// LogfmtSink).
template <class Out>
bool append_logfmt_quoted(Out& out, std::string_view s) noexcept {
  static constexpr char hex[] = "0123456789abcdef";
  if (!out.append("\"")) return false;
  std::size_t plain = 0;  // start of the run of bytes that need no escape
  for (std::size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const std::size_t n = utf8_sequence(s, i);
    char escape[8];
    std::size_t len = 0;
    if (n == 0) {  // not UTF-8: the byte itself, visibly
      const char bad[4] = {'\\', 'x', hex[c >> 4], hex[c & 0xF]};
      std::memcpy(escape, bad, sizeof bad);
      len = 4;
    } else if (n == 1 && (c < 0x20 || c == '"' || c == '\\' || c == 0x7F)) {
      len = ascii_escape(c, escape);
    } else if (const std::uint32_t cp = utf8_code_point(s, i, n); misleading_code_point(cp)) {
      const char code[6] = {
          '\\', 'u', hex[cp >> 12], hex[(cp >> 8) & 0xF], hex[(cp >> 4) & 0xF], hex[cp & 0xF]};
      std::memcpy(escape, code, sizeof code);
      len = 6;
    }
    if (len > 0) {
      if (!out.append(s.substr(plain, i - plain)) || !out.append(std::string_view(escape, len)))
        return false;
      i += n == 0 ? 1 : n;
      plain = i;
    } else {
      i += n;
    }
  }
  return out.append(s.substr(plain)) && out.append("\"");
}

/// A plain logfmt word: printable ASCII but `=`, `"` and `\\`.
inline bool plain_logfmt_byte(char c) noexcept {
  return c > ' ' && c < 0x7F && c != '=' && c != '"' && c != '\\';
}

/// A logfmt value: bare when it is one plain word, quoted and escaped
/// otherwise.
template <class Out>
bool append_logfmt_text(Out& out, std::string_view s) noexcept {
  if (!s.empty() && std::all_of(s.begin(), s.end(), plain_logfmt_byte)) return out.append(s);
  return append_logfmt_quoted(out, s);
}

/// A logfmt key: logfmt readers take no quoted key, so every byte that is
/// not a plain word's becomes `_` (an empty key is `_`). A field may not
/// pass for the record's own level or message: those become
/// `fields.level` and `fields.msg`.
template <class Out>
bool append_logfmt_key(Out& out, std::string_view key) noexcept {
  if (key.empty()) return out.append("_");
  if (key == "level" || key == "msg") return out.append("fields.") && out.append(key);
  for (const char c : key)
    if (!out.append(plain_logfmt_byte(c) ? std::string_view(&c, 1) : std::string_view("_")))
      return false;
  return true;
}

template <class Out>
bool append_logfmt_value(Out& out, const Field::Value& value) noexcept {
  char number[40];
  if (const auto* i = std::get_if<std::int64_t>(&value))
    return out.append(std::string_view(number, format_int(*i, number)));
  if (const auto* u = std::get_if<std::uint64_t>(&value))
    return out.append(std::string_view(number, format_uint(*u, number)));
  if (const auto* d = std::get_if<double>(&value)) {
    // Without <cmath>: only NaN differs from itself, and only an infinity
    // (NaN excluded) minus itself is not zero.
    if (*d != *d) return out.append("NaN");
    if (*d - *d != 0) return out.append(*d > 0 ? "+Inf" : "-Inf");
    return out.append(std::string_view(number, format_double(*d, number)));
  }
  if (const auto* b = std::get_if<bool>(&value)) return out.append(*b ? "true" : "false");
  return append_logfmt_text(out, std::get<std::string_view>(value));
}
}  // namespace detail

inline void LogfmtSink::log(Level level, std::string_view message, Fields fields) noexcept {
  if (level < min_level()) return;
  detail::TextBuffer<512> line;
  bool complete = line.append("level=") && line.append(to_string(level)) && line.append(" msg=") &&
                  detail::append_logfmt_text(line, message);
  for (const Field& field : fields)
    complete = complete && line.append(" ") && detail::append_logfmt_key(line, field.key) &&
               line.append("=") && detail::append_logfmt_value(line, field.value);
  if (!complete || !line.append("\n")) return;  // out of memory: drop the record
  if (::pthread_mutex_lock(&mutex_) != 0) return;
  write_(out_, line.view());
  (void)::pthread_mutex_unlock(&mutex_);
}

inline bool append_logfmt_fields(std::string& out, Fields fields) noexcept {
  detail::StringOut text{out};
  for (const Field& field : fields)
    if (!text.append(" ") || !detail::append_logfmt_key(text, field.key) || !text.append("=") ||
        !detail::append_logfmt_value(text, field.value))
      return false;
  return true;
}

inline bool append_logfmt_text(std::string& out, std::string_view text) noexcept {
  detail::StringOut to{out};
  return detail::append_logfmt_text(to, text);
}

namespace detail {
/// Days since 1970-01-01 to a proleptic Gregorian date (the "civil from
/// days" algorithm by Howard Hinnant, valid for every int64 timestamp).
struct CivilDate {
  std::int64_t year;
  unsigned month, day;
};
inline CivilDate civil_from_days(std::int64_t days) noexcept {
  days += 719468;  // shift the epoch to 0000-03-01
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto day_of_era = static_cast<unsigned>(days - era * 146097);
  const unsigned year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  const unsigned day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const unsigned shifted_month = (5 * day_of_year + 2) / 153;  // March is 0
  CivilDate date;
  date.day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
  date.month = shifted_month < 10 ? shifted_month + 3 : shifted_month - 9;
  date.year = static_cast<std::int64_t>(year_of_era) + era * 400 + (date.month <= 2);
  return date;
}

inline std::size_t format_rfc3339(std::int64_t t, char (&out)[40]) noexcept {
  std::int64_t days = t / 86400, seconds = t % 86400;
  if (seconds < 0) {
    seconds += 86400;
    --days;
  }
  const CivilDate date = civil_from_days(days);
  char* p = out;
  std::int64_t year = date.year;
  if (year < 0) *p++ = '-';
  const std::uint64_t digits_of =
      year < 0 ? 0 - static_cast<std::uint64_t>(year) : static_cast<std::uint64_t>(year);
  char year_text[24] = {};
  const auto end = std::to_chars(year_text, year_text + sizeof year_text, digits_of).ptr;
  for (auto width = end - year_text; width < 4; ++width) *p++ = '0';
  for (const char* q = year_text; q != end; ++q) *p++ = *q;
  const auto two = [&](unsigned v, char after) {
    *p++ = static_cast<char>('0' + v / 10);
    *p++ = static_cast<char>('0' + v % 10);
    if (after) *p++ = after;
  };
  const auto s = static_cast<unsigned>(seconds);
  *p++ = '-';
  two(date.month, '-');
  two(date.day, 'T');
  two(s / 3600, ':');
  two(s / 60 % 60, ':');
  two(s % 60, 'Z');
  return static_cast<std::size_t>(p - out);
}
}  // namespace detail

inline std::string to_rfc3339(std::int64_t unix_seconds) {
  char text[40];
  return std::string(text, detail::format_rfc3339(unix_seconds, text));
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

#endif  // ATOMIC_STATE_LOGGING_HPP
