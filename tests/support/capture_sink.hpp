// A log sink (a LogSink, as StateManager takes one) that keeps every
// record, so tests can assert level, message and each field exactly.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "atomic_state.hpp"

namespace test {

/// A field value the test owns (the sink's string_view would dangle).
using Value = std::variant<std::int64_t, std::uint64_t, double, bool, std::string>;

struct Record {
  atomic_state::Level level;
  std::string message;
  std::vector<std::pair<std::string, Value>> fields;  // in the order logged

  bool has(std::string_view key) const { return find(key) != nullptr; }
  const Value* find(std::string_view key) const {
    for (const auto& [k, v] : fields)
      if (k == key) return &v;
    return nullptr;
  }
  /// A signed field's value; an unsigned one's when it fits.
  std::int64_t integer(std::string_view key) const {
    const Value& v = *find(key);
    if (const auto* u = std::get_if<std::uint64_t>(&v)) return static_cast<std::int64_t>(*u);
    return std::get<std::int64_t>(v);
  }
  std::uint64_t unsigned_integer(std::string_view key) const {
    return std::get<std::uint64_t>(*find(key));
  }
  double number(std::string_view key) const { return std::get<double>(*find(key)); }
  const std::string& text(std::string_view key) const { return std::get<std::string>(*find(key)); }
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& field : fields) out.push_back(field.first);
    return out;
  }
};

class CaptureSink {
 public:
  void log(atomic_state::Level level, std::string_view message, atomic_state::Fields fields) {
    Record record{level, std::string(message), {}};
    for (const atomic_state::Field& f : fields)
      record.fields.emplace_back(std::string(f.key),
                                 std::visit([](auto v) { return to_value(v); }, f.value));
    const std::lock_guard<std::mutex> lock(mutex_);
    records_.push_back(std::move(record));
  }

  std::vector<Record> records() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return records_;
  }
  /// The records with this message.
  std::vector<Record> with(std::string_view message) const {
    std::vector<Record> out;
    for (const Record& r : records())
      if (r.message == message) out.push_back(r);
    return out;
  }
  std::size_t size() const { return records().size(); }
  Record last() const { return records().back(); }
  void clear() {
    const std::lock_guard<std::mutex> lock(mutex_);
    records_.clear();
  }

 private:
  static Value to_value(std::int64_t v) { return v; }
  static Value to_value(std::uint64_t v) { return v; }
  static Value to_value(double v) { return v; }
  static Value to_value(bool v) { return v; }
  static Value to_value(std::string_view v) { return std::string(v); }

  mutable std::mutex mutex_;
  std::vector<Record> records_;
};

static_assert(atomic_state::is_log_sink_v<CaptureSink>);
static_assert(atomic_state::is_log_sink_v<CaptureSink&>);

}  // namespace test
