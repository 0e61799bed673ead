// json.hpp: parse_json, format_json: JSON that reads back exactly (Boost.JSON)
#ifndef ATOMIC_STATE_JSON_HPP
#define ATOMIC_STATE_JSON_HPP

#include "logging.hpp"
#include "status.hpp"

// Without Boost.JSON's headers, one error says what to do, and the JSON
// parts (this one, state.hpp, state_manager.hpp) are left out so that
// nothing follows it.
#if !defined(ATOMIC_STATE_NO_JSON) && defined(__has_include)
#if !__has_include(<boost/json/value.hpp>)
#error \
    "atomic_state.hpp: Boost.JSON's headers are not found: install them (Debian, Ubuntu: libboost-json1.81-dev), or define ATOMIC_STATE_NO_JSON to leave out StateManager"
#define ATOMIC_STATE_DETAIL_NO_BOOST_JSON
#endif
#endif

#if !defined(ATOMIC_STATE_NO_JSON) && !defined(ATOMIC_STATE_DETAIL_NO_BOOST_JSON)
#define ATOMIC_STATE_DETAIL_JSON 1
#else
#define ATOMIC_STATE_DETAIL_JSON 0
#endif

#if ATOMIC_STATE_DETAIL_JSON
// Only what is used, not <boost/json.hpp>: it saves compile time. The
// library itself comes from -lboost_json or from Boost.JSON's src.hpp in one
// translation unit of the program (never from here).
#include <algorithm>  // std::none_of
#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_stack.hpp>
#include <boost/json/value_to.hpp>
#include <charconv>      // std::to_chars, std::from_chars: exact numbers
#include <cmath>         // std::isnan, std::isinf, std::fabs
#include <cstddef>       // std::size_t
#include <new>           // std::bad_alloc
#include <string>        // std::string: format_json's output
#include <string_view>   // std::string_view
#include <system_error>  // std::errc, std::make_error_code
#include <utility>       // std::move

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// --------------------------------------------------------------- exact JSON --

/// Parses JSON the way state files are read: standard JSON only (no
/// comments, no trailing commas, valid UTF-8), at most
/// ATOMIC_STATE_JSON_MAX_DEPTH levels deep, and every number converted
/// exactly. A double written by format_json reads back bit for bit (plain
/// Boost.JSON 1.81 is one unit in the last place off for about a quarter of
/// them), and a number too large for a double (1e400) or an integer beyond
/// 64 bits is an error rather than Infinity or an approximation. A failure
/// is Step::parse with Boost.JSON's code, the detail saying where ("at byte
/// 3") and, for a number, why ("integer beyond 64 bits at byte 12"). Running
/// out of memory is Step::parse with ENOMEM, never an exception.
Result<boost::json::value> parse_json(std::string_view text,
                                      boost::json::storage_ptr sp = {}) noexcept;

/// Writes `value` as JSON a person can read: two-space indent, keys in the
/// object's order, the shortest text that reads back exactly for each
/// number (a double always with a point or an exponent, so that it reads
/// back as a double), one trailing newline. Refuses what parse_json could
/// not read back (a NaN or infinite double, invalid UTF-8, nesting deeper
/// than ATOMIC_STATE_JSON_MAX_DEPTH): Step::serialize naming where, and
/// `out` left empty; running out of memory is Step::serialize, ENOMEM.
/// Strings escape the quote, the backslash and the controls below U+0020;
/// every other byte, DEL included, is written as it is.
Status format_json(const boost::json::value& value, std::string& out) noexcept;

// ========================================================= implementation ====

namespace detail {
/// Appends `s` as the inside of a JSON string: quote, backslash and the
/// controls below U+0020 escaped, which is all JSON asks; everything else
/// (DEL included) as it is, so the text grows no more than it must.
template <class Out>
bool append_json_escaped(Out& out, std::string_view s) noexcept {
  std::size_t plain = 0;  // start of the run of bytes that need no escape
  for (std::size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    char escape[8];
    const std::size_t len = ascii_escape(c, escape);
    if (!out.append(s.substr(plain, i - plain)) || !out.append(std::string_view(escape, len)))
      return false;
    plain = i + 1;
  }
  return out.append(s.substr(plain));
}

/// Where a JSON value sits in the document, for messages: "last_tvs",
/// "items[3].price". Frames are kept only while printing.
struct JsonFrame {
  std::string_view key;  // empty for an array element
  std::size_t index;
};

// Why a number or a string cannot be written as JSON that reads back the
// same, or null when it can: the one rule of JsonPrinter and print_state.
inline const char* unwritable(double d) noexcept {
  if (std::isnan(d)) return "not a finite number (NaN)";
  if (std::isinf(d)) return "not a finite number (infinity)";
  return nullptr;
}
inline const char* unwritable(std::string_view s) noexcept {
  return valid_utf8(s) ? nullptr : "not valid UTF-8";
}

/// Pretty-prints a boost::json::value, refusing what cannot be read back.
template <class Out>
class JsonPrinter {
 public:
  explicit JsonPrinter(Out& out) noexcept : out_(out) {}

  /// False on failure: describe_problem() says what and where, or
  /// out_of_memory().
  bool print(const boost::json::value& v) noexcept { return value(v, 0) && put("\n"); }
  bool out_of_memory() const noexcept { return reason_ == nullptr; }
  /// "items[3].price: not a finite number (NaN)", after a failure.
  template <class Text>
  bool describe_problem(Text& text) const noexcept {
    if (depth_ == 0 && !text.append("the top-level value")) return false;
    for (std::size_t i = 0; i < depth_; ++i) {
      const JsonFrame& frame = frames_[i];
      char index[24];
      const auto end = std::to_chars(index, index + sizeof index, frame.index).ptr;
      const bool ok =
          frame.key.empty()
              ? text.append("[") &&
                    text.append(std::string_view(index, static_cast<std::size_t>(end - index))) &&
                    text.append("]")
              : (i == 0 || text.append(".")) && text.append(frame.key);
      if (!ok) return false;
    }
    return text.append(": ") && text.append(reason_ ? reason_ : "out of memory");
  }

 private:
  bool put(std::string_view s) noexcept { return out_.append(s); }
  bool refuse(const char* reason) noexcept {
    reason_ = reason;
    return false;
  }
  bool indent(std::size_t level) noexcept {
    if (!put("\n")) return false;
    for (std::size_t i = 0; i < level; ++i)
      if (!put("  ")) return false;
    return true;
  }
  bool string(std::string_view s) noexcept {
    if (const char* why = unwritable(s)) return refuse(why);
    return put("\"") && append_json_escaped(out_, s) && put("\"");
  }
  bool number(std::size_t length) noexcept { return put(std::string_view(number_, length)); }
  bool value(const boost::json::value& v, std::size_t level) noexcept {
    switch (v.kind()) {
      case boost::json::kind::null:
        return put("null");
      case boost::json::kind::bool_:
        return put(v.get_bool() ? "true" : "false");
      case boost::json::kind::int64:
        return number(format_int(v.get_int64(), number_));
      case boost::json::kind::uint64: {
        const auto r = std::to_chars(number_, number_ + sizeof number_, v.get_uint64());
        return number(static_cast<std::size_t>(r.ptr - number_));
      }
      case boost::json::kind::double_: {
        const double d = v.get_double();
        if (const char* why = unwritable(d)) return refuse(why);
        return number(format_double(d, number_));
      }
      case boost::json::kind::string: {
        const boost::json::string& s = v.get_string();
        return string(std::string_view(s.data(), s.size()));
      }
      case boost::json::kind::array:
        return array(v.get_array(), level);
      case boost::json::kind::object:
        return object(v.get_object(), level);
    }
    return refuse("unknown kind of value");
  }
  // `level` counts the arrays and objects around a value, so the one at
  // level 31 is the 32nd: as deep as the parser goes.
  bool too_deep(std::size_t level) noexcept {
    if (level < ATOMIC_STATE_JSON_MAX_DEPTH) return false;
    reason_ = "nested deeper than ATOMIC_STATE_JSON_MAX_DEPTH";
    return true;
  }
  bool enter(std::string_view key, std::size_t index) noexcept {
    frames_[depth_++] = JsonFrame{key, index};
    return true;
  }
  bool array(const boost::json::array& a, std::size_t level) noexcept {
    if (too_deep(level)) return false;
    if (a.empty()) return put("[]");
    if (!put("[")) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if ((i > 0 && !put(",")) || !indent(level + 1) || !enter({}, i) || !value(a[i], level + 1))
        return false;
      --depth_;
    }
    return indent(level) && put("]");
  }
  bool object(const boost::json::object& o, std::size_t level) noexcept {
    if (too_deep(level)) return false;
    if (o.empty()) return put("{}");
    if (!put("{")) return false;
    bool first = true;
    for (const auto& member : o) {
      const std::string_view key(member.key().data(), member.key().size());
      if ((!first && !put(",")) || !indent(level + 1) || !enter(key, 0) || !string(key) ||
          !put(": ") || !value(member.value(), level + 1))
        return false;
      --depth_;
      first = false;
    }
    return indent(level) && put("}");
  }

  Out& out_;
  const char* reason_ = nullptr;
  std::size_t depth_ = 0;
  JsonFrame frames_[ATOMIC_STATE_JSON_MAX_DEPTH] = {};
  char number_[40];
};

/// A basic_parser handler that builds a boost::json::value like Boost's own
/// parser, except that it converts every non-integer number from its text
/// with std::from_chars (exact), and refuses one too large for a double.
class ExactNumberHandler {
 public:
  static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);

  ExactNumberHandler(boost::json::storage_ptr sp, unsigned char* scratch, std::size_t scratch_size)
      : stack_(boost::json::storage_ptr(), scratch, scratch_size) {
    stack_.reset(std::move(sp));
  }
  boost::json::value release() { return stack_.release(); }

  bool on_document_begin(boost::json::error_code&) { return true; }
  bool on_document_end(boost::json::error_code&) { return true; }
  bool on_array_begin(boost::json::error_code&) { return true; }
  bool on_array_end(std::size_t n, boost::json::error_code&) {
    stack_.push_array(n);
    return true;
  }
  bool on_object_begin(boost::json::error_code&) { return true; }
  bool on_object_end(std::size_t n, boost::json::error_code&) {
    stack_.push_object(n);
    return true;
  }
  bool on_string_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    stack_.push_chars(s);
    return true;
  }
  bool on_string(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    stack_.push_string(s);
    return true;
  }
  bool on_key_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    stack_.push_chars(s);
    return true;
  }
  bool on_key(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    stack_.push_key(s);
    return true;
  }
  // Only a number cut by the end of a buffer comes in parts.
  bool on_number_part(boost::json::string_view s, boost::json::error_code&) {
    number_.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t i, boost::json::string_view, boost::json::error_code&) {
    number_.clear();
    stack_.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, boost::json::string_view, boost::json::error_code&) {
    number_.clear();
    stack_.push_uint64(u);
    return true;
  }
  bool on_double(double approximate, boost::json::string_view s, boost::json::error_code& ec) {
    const char* first = s.data();
    const char* last = s.data() + s.size();
    if (!number_.empty()) {
      number_.append(s.data(), s.size());
      first = number_.data();
      last = number_.data() + number_.size();
    }
    number_.clear();
    // Boost hands over an integer too long for 64 bits as an approximate
    // double: refused, since it would come back as another number.
    if (std::none_of(first, last, [](char c) { return c == '.' || c == 'e' || c == 'E'; })) {
      reason_ = "integer beyond 64 bits";
      ec = boost::json::error::not_exact;
      return false;
    }
    double exact = 0;
    const auto r = std::from_chars(first, last, exact);
    if (r.ec == std::errc::result_out_of_range) {
      // Too large is refused; too small to tell from zero is zero.
      if (std::isinf(approximate) || std::fabs(approximate) > 1) {
        reason_ = "number too large for a double";
        ec = boost::json::error::exponent_overflow;
        return false;
      }
      exact = *first == '-' ? -0.0 : 0.0;
    } else if (r.ec != std::errc() || r.ptr != last) {
      ec = boost::json::error::syntax;
      return false;
    }
    stack_.push_double(exact);
    return true;
  }
  bool on_bool(bool b, boost::json::error_code&) {
    stack_.push_bool(b);
    return true;
  }
  bool on_null(boost::json::error_code&) {
    stack_.push_null();
    return true;
  }
  bool on_comment_part(boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_comment(boost::json::string_view, boost::json::error_code&) { return true; }

  /// What the handler refused, in more words than its error code, or null.
  const char* reason() const noexcept { return reason_; }

 private:
  boost::json::value_stack stack_;
  std::string number_;
  const char* reason_ = nullptr;
};

/// Why parse_exact failed: Boost.JSON's code, where, and the handler's own
/// words when it refused a number.
struct ParseFailure {
  boost::json::error_code code;
  std::size_t offset = 0;
  const char* reason = nullptr;

  explicit operator bool() const noexcept { return static_cast<bool>(code); }
  /// "integer beyond 64 bits at byte 12", or "at byte 3" when the code
  /// says it all: into a buffer, without allocating.
  template <class Out>
  bool where(Out& out) const noexcept {
    char at[40] = "at byte ";
    const auto end = std::to_chars(at + 8, at + sizeof at, offset).ptr;
    return (reason == nullptr || (out.append(reason) && out.append(" "))) &&
           out.append(std::string_view(at, static_cast<std::size_t>(end - at)));
  }
  /// "syntax error at byte 3", "not exact: integer beyond 64 bits at byte 12".
  template <class Out>
  bool describe(Out& out) const noexcept {
    char words[128];
    return out.append(code.message(words, sizeof words)) &&
           out.append(reason != nullptr ? ": " : " ") && where(out);
  }
};

/// Parses `text` into a value held by `sp`; on failure `failure` says why
/// and the value is null. May throw std::bad_alloc.
inline boost::json::value parse_exact(std::string_view text, boost::json::storage_ptr sp,
                                      ParseFailure& failure) {
  unsigned char scratch[1024];
  boost::json::parse_options options;
  options.max_depth = ATOMIC_STATE_JSON_MAX_DEPTH;
  boost::json::basic_parser<ExactNumberHandler> parser(options, std::move(sp), scratch,
                                                       sizeof scratch);
  failure.offset = parser.write_some(false, text.data(), text.size(), failure.code);
  if (!failure.code && failure.offset != text.size()) failure.code = boost::json::error::extra_data;
  failure.reason = parser.handler().reason();
  if (failure) return nullptr;
  return parser.handler().release();
}
}  // namespace detail

inline Result<boost::json::value> parse_json(std::string_view text,
                                             boost::json::storage_ptr sp) noexcept {
  detail::ParseFailure failure;
  ATOMIC_STATE_DETAIL_TRY {
    boost::json::value parsed = detail::parse_exact(text, std::move(sp), failure);
    if (!failure) return Result<boost::json::value>(std::move(parsed));
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL {
    return Status(Step::parse, std::make_error_code(std::errc::not_enough_memory), {});
  }
  detail::TextBuffer<256> why;
  return Status(Step::parse, failure.code, {}, {}, false, nullptr,
                failure.where(why) ? why.view() : std::string_view());
}

inline Status format_json(const boost::json::value& value, std::string& out) noexcept {
  out.clear();
  detail::StringOut sink{out};
  detail::JsonPrinter<detail::StringOut> printer(sink);
  if (printer.print(value)) return {};
  out.clear();
  detail::TextBuffer<256> why;
  if (printer.out_of_memory() || !printer.describe_problem(why))
    return Status(Step::serialize, std::make_error_code(std::errc::not_enough_memory), {});
  return Status(Step::serialize, std::make_error_code(std::errc::invalid_argument), {}, {}, false,
                nullptr, why.view());
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state
#endif  // ATOMIC_STATE_DETAIL_JSON

#endif  // ATOMIC_STATE_JSON_HPP
