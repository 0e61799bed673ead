// An atomic_state log sink that forwards to an spdlog logger: the message
// and the fields as logfmt text, at the matching spdlog level:
//   [2023-11-14 22:13:20.000] [collector] [info] "state saved" timestamp=1700000000
//
//   auto logger = spdlog::stderr_color_mt("collector");
//   atomic_state::StateManager<SpdlogSink> manager(dir, SpdlogSink{logger});
//
// The message, keys and values are escaped by the header's own logfmt
// functions, exactly as LogfmtSink escapes them: a value (and the
// message) is bare when it is one plain printable-ASCII word, else quoted,
// with every control, quote, backslash, line or paragraph separator, bidi
// control and byte that is not UTF-8 escaped; a key keeps printable ASCII
// but `=` `"` `\`, every other byte becoming `_`. So no text from data (a
// path, an oracle name) can end the line, forge a record or a field, or
// send commands to a terminal: one record is one line.
//
// Not part of atomic_state.hpp: copy it if you use spdlog.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "atomic_state.hpp"

class SpdlogSink {
 public:
  explicit SpdlogSink(std::shared_ptr<spdlog::logger> logger) : logger_(std::move(logger)) {}

  void log(atomic_state::Level level, std::string_view message, atomic_state::Fields fields) const {
    const spdlog::level::level_enum spd = to_spdlog(level);
    if (!logger_->should_log(spd)) return;  // format nothing that is dropped
    std::string line;
    // False only when memory ran out: drop the record rather than log a part.
    if (!atomic_state::append_logfmt_text(line, message) ||
        !atomic_state::append_logfmt_fields(line, fields))
      return;
    // A plain string, never a format string: braces in data stay braces.
    logger_->log(spd, spdlog::string_view_t(line.data(), line.size()));
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

  std::shared_ptr<spdlog::logger> logger_;
};

static_assert(atomic_state::is_log_sink_v<SpdlogSink>);
