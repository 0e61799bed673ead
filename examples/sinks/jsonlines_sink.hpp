// An atomic_state log sink writing one JSON object per line (JSON Lines) to
// a std::ostream, for log shippers that want structure:
//   {"level":"info","msg":"state saved","timestamp":1700000000,"tvs":1500000000}
// Strings are escaped with Boost.JSON's serializer, numbers written so they
// read back exactly, non-finite doubles written as null (JSON has no NaN).
// Thread-safe: each line is built apart and written whole under a lock.
//
// Not part of atomic_state.hpp: copy it if you want it.
#pragma once

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <cmath>
#include <mutex>
#include <ostream>
#include <string>
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
      append_string(line, field.key);
      line += ':';
      append_value(line, field.value);
    }
    line += "}\n";
    const std::lock_guard<std::mutex> lock(mutex_);
    *out_ << line << std::flush;
  }

 private:
  static void append_string(std::string& out, std::string_view s) {
    out += boost::json::serialize(boost::json::string_view(s.data(), s.size()));
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
      // format_json writes the shortest exact text, plus a newline.
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
