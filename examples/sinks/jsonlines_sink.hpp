// An atomic_state log sink writing one JSON object per line (JSON Lines) to
// a std::ostream, for log shippers that want structure:
//   {"level":"info","msg":"state saved","timestamp":1700000000,"tvs":1500000000.0}
// Numbers are written so they read back exactly (a uint64 above INT64_MAX
// as itself), non-finite doubles as null (JSON has no NaN).
//
// Every line is valid JSON and one line, whatever the bytes of the message,
// keys and values (a path is whatever bytes the filesystem holds):
// - each byte that is not part of valid UTF-8 (a Latin-1 name, a cut or
//   overlong sequence, an encoded surrogate) becomes U+FFFD, written
//   "\ufffd", as Go's encoding/json does and log shippers expect;
// - quote, backslash and the controls below U+0020 are escaped as JSON
//   requires, and so are DEL, the C1 controls (NEL among them), U+2028,
//   U+2029 and the bidirectional controls, which JSON allows raw but which
//   some readers take for a line break (JavaScript before ES2019, Python's
//   splitlines) or which a terminal obeys when a person reads the log.
// All other UTF-8 is written as it is, so text reads back unchanged. A
// field named "level" or "msg" is written as "fields.level" or "fields.msg",
// so that it cannot replace the record's own.
// Thread-safe: each line is built apart and written whole under a lock.
//
// Not part of atomic_state.hpp: copy it if you want it.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <variant>

#include "atomic_state.hpp"

class JsonLinesSink {
 public:
  explicit JsonLinesSink(std::ostream& out,
                         atomic_state::Level min_level = atomic_state::Level::info)
      : out_(&out), min_level_(min_level) {}

  void log(atomic_state::Level level, std::string_view message, atomic_state::Fields fields) {
    if (level < min_level_) return;
    std::string line = "{\"level\":";
    append_string(line, atomic_state::to_string(level));
    line += ",\"msg\":";
    append_string(line, message);
    for (const atomic_state::Field& field : fields) {
      line += ',';
      // A field named like the record's own members would replace them for
      // most readers (of two equal keys the last wins): renamed, as logrus
      // renames them.
      append_string(line, field.key == "level" ? "fields.level"
                          : field.key == "msg" ? "fields.msg"
                                               : field.key);
      line += ':';
      append_value(line, field.value);
    }
    line += "}\n";
    const std::lock_guard<std::mutex> lock(mutex_);
    out_->clear();  // a line lost before must not silence every line after it
    *out_ << line << std::flush;
  }

 private:
  // The length (1-4) of the valid UTF-8 sequence at s[i], its code point in
  // `cp`; 0 when s[i] starts none: a stray byte, a sequence cut short, an
  // overlong form, a surrogate or a code point beyond U+10FFFF (RFC 3629).
  static std::size_t decode_utf8(std::string_view s, std::size_t i, std::uint32_t& cp) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
    const unsigned char lead = byte(0);
    std::size_t n = 0;
    if (lead < 0x80) {
      cp = lead;
      return 1;
    }
    if (lead >= 0xC2 && lead <= 0xDF) n = 2;
    if (lead >= 0xE0 && lead <= 0xEF) n = 3;
    if (lead >= 0xF0 && lead <= 0xF4) n = 4;
    if (n == 0 || s.size() - i < n) return 0;
    cp = lead & (0x7Fu >> n);
    for (std::size_t k = 1; k < n; ++k) {
      if ((byte(k) & 0xC0) != 0x80) return 0;  // not a continuation byte
      cp = (cp << 6) | (byte(k) & 0x3Fu);
    }
    const std::uint32_t least = n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
    if (cp < least || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
    return n;
  }

  // Code points JSON allows raw that are escaped all the same (see above).
  static bool escaped(std::uint32_t cp) {
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x061C || cp == 0x200E ||
           cp == 0x200F || (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
  }

  static void append_string(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    out += '"';
    for (std::size_t i = 0; i < s.size();) {
      std::uint32_t cp = 0;
      const std::size_t n = decode_utf8(s, i, cp);
      if (n == 0) {
        out += "\\ufffd";  // one U+FFFD for each byte that is not UTF-8
        i += 1;
        continue;
      }
      if (cp == '"' || cp == '\\') {
        out += '\\';
        out += static_cast<char>(cp);
      } else if (cp == '\n') {
        out += "\\n";
      } else if (cp == '\r') {
        out += "\\r";
      } else if (cp == '\t') {
        out += "\\t";
      } else if (escaped(cp)) {  // as \uXXXX: each is below U+10000
        out += "\\u";
        for (int shift = 12; shift >= 0; shift -= 4) out += hex[(cp >> shift) & 0xF];
      } else {
        out.append(s, i, n);
      }
      i += n;
    }
    out += '"';
  }

  static void append_value(std::string& out, const atomic_state::Field::Value& value) {
    if (const auto* i = std::get_if<std::int64_t>(&value)) {
      out += std::to_string(*i);
    } else if (const auto* u = std::get_if<std::uint64_t>(&value)) {
      out += std::to_string(*u);
    } else if (const auto* d = std::get_if<double>(&value)) {
      if (!std::isfinite(*d)) {
        out += "null";
        return;
      }
      const boost::json::value number(*d);
      std::string text;
      // format_json writes the shortest exact text ("2.0", not "2", which
      // would read back as an integer), plus a newline.
      if (atomic_state::format_json(number, text))
        out.append(text, 0, text.size() - 1);
      else
        out += "null";
    } else if (const auto* b = std::get_if<bool>(&value)) {
      out += *b ? "true" : "false";
    } else {
      append_string(out, std::get<std::string_view>(value));
    }
  }

  std::ostream* out_;
  atomic_state::Level min_level_;
  std::mutex mutex_;
};

static_assert(atomic_state::is_log_sink_v<JsonLinesSink>);
