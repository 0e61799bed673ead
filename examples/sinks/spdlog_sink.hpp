// An atomic_state log sink that forwards to an spdlog logger: the message
// and the fields as logfmt-style text ("state saved timestamp=1700000000
// protocol_count=42 tvs=1500000000"), at the matching spdlog level.
//
//   auto logger = spdlog::stderr_color_mt("collector");
//   atomic_state::StateManager<SpdlogSink> manager(dir, SpdlogSink{logger});
//
// Not part of atomic_state.hpp: copy it if you use spdlog.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <memory>
#include <string>
#include <variant>

#include "atomic_state.hpp"

class SpdlogSink {
 public:
  explicit SpdlogSink(std::shared_ptr<spdlog::logger> logger) : logger_(std::move(logger)) {}

  void log(atomic_state::Level level, std::string_view message, atomic_state::Fields fields) const {
    const spdlog::level::level_enum spd = to_spdlog(level);
    if (!logger_->should_log(spd)) return;  // format nothing that is dropped
    std::string line(message);
    for (const atomic_state::Field& field : fields) {
      line += ' ';
      line += field.key;
      line += '=';
      append_value(line, field.value);
    }
    logger_->log(spd, line);
  }

 private:
  static spdlog::level::level_enum to_spdlog(atomic_state::Level level) {
    switch (level) {
      case atomic_state::Level::debug:
        return spdlog::level::debug;
      case atomic_state::Level::info:
        return spdlog::level::info;
      case atomic_state::Level::warn:
        return spdlog::level::warn;
      case atomic_state::Level::error:
        return spdlog::level::err;
    }
    return spdlog::level::err;
  }

  static void append_value(std::string& out, const atomic_state::Field::Value& value) {
    if (const auto* i = std::get_if<std::int64_t>(&value)) {
      out += std::to_string(*i);
    } else if (const auto* u = std::get_if<std::uint64_t>(&value)) {
      out += std::to_string(*u);
    } else if (const auto* d = std::get_if<double>(&value)) {
      out += fmt::format("{}", *d);  // shortest text that reads back exactly
    } else if (const auto* b = std::get_if<bool>(&value)) {
      out += *b ? "true" : "false";
    } else {
      const std::string_view s = std::get<std::string_view>(value);
      const bool bare = !s.empty() && s.find_first_of(" =\"") == std::string_view::npos;
      if (bare)
        out += s;
      else
        out += fmt::format("\"{}\"", s);
    }
  }

  std::shared_ptr<spdlog::logger> logger_;
};

static_assert(atomic_state::is_log_sink_v<SpdlogSink>);
