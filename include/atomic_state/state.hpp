// state.hpp: StateField tables, State, update_state: a state type described once
#ifndef ATOMIC_STATE_STATE_HPP
#define ATOMIC_STATE_STATE_HPP

#include "json.hpp"

#if ATOMIC_STATE_DETAIL_JSON
#include <array>             // std::array: the fields of State
#include <cmath>             // std::isfinite
#include <cstdint>           // std::int64_t, std::uint64_t
#include <initializer_list>  // std::initializer_list: update_state's timestamps
#include <limits>            // std::numeric_limits: the range of an integer member
#include <new>               // std::bad_alloc
#include <optional>          // std::optional: optional fields, cursors
#include <string>            // std::string: string fields
#include <string_view>       // std::string_view
#include <tuple>             // std::tuple, std::apply: field tables
#include <type_traits>       // std::void_t, std::integral_constant, std::decay_t
#include <utility>           // std::declval, std::move

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

// ------------------------------------------------------------- field tables --

namespace detail {
// The integer types a field table takes: every one but bool and the
// character types (signed char and unsigned char are int8_t and uint8_t),
// of at most 64 bits: a JSON integer in the file is an int64 or a uint64,
// so g++'s __int128 (gnu++17) would be cut on save and never read back.
template <class T>
inline constexpr bool is_field_integer_v =
    std::is_integral_v<T> && !std::is_same_v<T, bool> && !is_character_v<T> && sizeof(T) <= 8;
template <class T>
inline constexpr bool is_field_scalar_v = std::is_same_v<T, std::string> || is_field_integer_v<T> ||
                                          std::is_same_v<T, double> || std::is_same_v<T, bool>;
template <class T>
struct is_field_value : std::bool_constant<is_field_scalar_v<T>> {};
template <class T>
struct is_field_value<std::optional<T>> : std::bool_constant<is_field_scalar_v<T>> {};
}  // namespace detail

/// One member of a state type's field table: its name in the JSON file,
/// the member, and the keys under which the "state loaded" and "state
/// saved" records log it (null: not logged there). The member's type is
/// one JSON holds exactly: std::string, any integer type of at most 64
/// bits (int, std::uint32_t, short, std::int64_t, ..., not bool, a
/// character type or __int128), double or bool, or a std::optional of one
/// (null in the file, and not logged, when empty). Another type fails
/// here, at the table, in one line. An integer is read with its type's
/// exact range: 70000 in a short member makes the file corrupt ("integer
/// out of range"). The name must not be "schema_version", the library's key
/// (StateTraits::version), nor another field's name, and must be valid
/// UTF-8: a save of such a table, which would write a file no load reads
/// back as saved, is refused (Step::serialize, EINVAL, the detail naming
/// the key).
template <class S, class T>
struct StateField {
  static_assert(detail::is_field_value<T>::value,
                "state_field: a field's member is std::string, an integer type of at most 64 "
                "bits, double or bool, or a std::optional of one");
  const char* name;
  T S::*member;
  const char* loaded_as;
  const char* saved_as;
};

/// A row of a field table; see State::state_fields.
template <class S, class T>
constexpr StateField<S, T> state_field(const char* name, T S::*member,
                                       const char* loaded_as = nullptr,
                                       const char* saved_as = nullptr) noexcept {
  return StateField<S, T>{name, member, loaded_as, saved_as};
}

/// Whether S describes itself with a field table: a static `state_fields()`
/// returning a std::tuple of StateField. StateManager then prints, reads
/// and logs it from the table (a save allocates nothing) and needs no
/// Boost.JSON conversion of the type's own. Reading a table: a missing or
/// null key is the zero value; an unknown key is ignored; of a key given
/// twice, the last counts; a value of the wrong type, a fraction in an
/// integer member, an integer beyond the member's range or a non-finite
/// number makes the file corrupt. An integer in a double member is read
/// (the Go service wrote 1500000000; this library writes 1500000000.0).
template <class S, class = void>
struct has_state_fields : std::false_type {};
template <class S>
struct has_state_fields<S, std::void_t<decltype(S::state_fields())>> : std::true_type {};
template <class S>
inline constexpr bool has_state_fields_v = has_state_fields<S>::value;

// ------------------------------------------------------------- StateTraits --

/// What StateManager knows of a state type beyond its fields: its cursor
/// (how far the data processed has come) and its schema version.
/// Specialise it for a type of one's own, with only the members that
/// differ from these defaults:
///
/// - `static std::optional<C> cursor(const StateT&) noexcept`: the cursor
///   of the data last processed, of any totally ordered type C (a slot or
///   block number as std::uint64_t, a time), empty for "never processed",
///   so that every value of C is a valid cursor. should_process then takes
///   a C and logs `current` and `last`. Without it, the cursor is
///   `last_updated(state)` below: unix seconds, 0 for "never processed",
///   with the Go service's four rules and messages. C needs only `<`: an
///   (epoch, block) std::pair works, though only a cursor a log Field can
///   hold (a number, a string) is logged.
/// - `static std::int64_t last_updated(const StateT&) noexcept`: where a
///   type without a cursor keeps its unix seconds (default: the member
///   `last_updated`); examples/feed_state.hpp reads `updated_at`.
/// - `static constexpr int version`: the schema version of the type. 0, the
///   default, writes no version key; a type above 0 writes
///   `"schema_version": version` as the file's first key.
/// - `static void upgrade(boost::json::object& state, int from_version)`
///   (or returning bool, false to refuse): brings a state file's object
///   from `from_version` to `from_version + 1`. load_state calls it one
///   step at a time for a file older than `version`. Required when version
///   is above 0.
///
/// Loading versions: a file without the key (or null) is version 0; a key
/// that is not a whole number from 0 up makes the file corrupt. A newer
/// version is Step::upgrade with std::errc::not_supported ("a newer
/// program wrote it"); an upgrade that throws, returns false or leaves an
/// object that does not read is Step::upgrade with
/// std::errc::invalid_argument, the detail saying which step and why.
/// Either way the file is left as it is; an upgraded file is rewritten
/// only by the next save.
template <class StateT>
struct StateTraits {
  /// The default cursor: the member `last_updated`, unix seconds.
  template <class S = StateT>
  static auto last_updated(const S& state) noexcept
      -> decltype(static_cast<std::int64_t>(state.last_updated)) {
    return static_cast<std::int64_t>(state.last_updated);
  }
};

namespace detail {
// The key of a state file's schema version (StateTraits::version).
inline constexpr std::string_view version_key = "schema_version";

// The members a StateTraits specialisation may declare, each with its
// default when it does not.
template <class S, class = void>
struct has_cursor : std::false_type {};
template <class S>
struct has_cursor<S, std::void_t<decltype(StateTraits<S>::cursor(std::declval<const S&>()))>>
    : std::true_type {};
template <class S, class = void>
struct has_last_updated : std::false_type {};
template <class S>
struct has_last_updated<
    S, std::void_t<decltype(StateTraits<S>::last_updated(std::declval<const S&>()))>>
    : std::true_type {};
template <class S, class = void>
struct schema_version : std::integral_constant<int, 0> {};
template <class S>
struct schema_version<S, std::void_t<decltype(StateTraits<S>::version)>>
    : std::integral_constant<int, StateTraits<S>::version> {};
template <class S, class = void>
struct has_upgrade : std::false_type {};
template <class S>
struct has_upgrade<
    S, std::void_t<decltype(StateTraits<S>::upgrade(std::declval<boost::json::object&>(), 0))>>
    : std::true_type {};

template <class Optional>
struct optional_value {};
template <class T>
struct optional_value<std::optional<T>> {
  using type = T;
};

// The cursor of S: what should_process compares, and how to read it.
template <class S, bool = has_cursor<S>::value>
struct CursorOf {
  using type = std::int64_t;
  static constexpr bool unix_seconds = true;
  static std::optional<type> read(const S& state) noexcept {
    const std::int64_t t = StateTraits<S>::last_updated(state);
    return t == 0 ? std::nullopt : std::optional<type>(t);
  }
};
template <class S>
struct CursorOf<S, true> {
  using type = typename optional_value<
      std::decay_t<decltype(StateTraits<S>::cursor(std::declval<const S&>()))>>::type;
  static constexpr bool unix_seconds = false;
  static std::optional<type> read(const S& state) noexcept { return StateTraits<S>::cursor(state); }
};
}  // namespace detail

// -------------------------------------------------------------------- State --
// The collector's state, as the Go service this library grew from keeps it
// (its "UpdateState" rule is update_state below). Nothing in StateManager
// knows these fields: a state type of one's own works the same way.

/// What a periodic collector remembers between runs: the data it last
/// processed. A zero last_updated means "never processed".
struct State {
  std::string oracle_name;
  std::int64_t last_updated = 0;  ///< unix seconds of the data processed
  std::string last_updated_iso;   ///< the same instant, RFC 3339 UTC
  std::int64_t last_protocol_count = 0;
  double last_tvs = 0;  ///< total value secured
  std::int64_t snapshot_count = 0;
  std::int64_t oldest_snapshot = 0;  ///< unix seconds, 0 without snapshots
  std::int64_t newest_snapshot = 0;  ///< unix seconds, 0 without snapshots

  /// The one description of the fields: JSON names in the Go service's
  /// snake_case and order, and the keys of the seed's log records. Saving,
  /// loading, ==, the Boost.JSON conversions and the log records all come
  /// from it.
  static constexpr auto state_fields() noexcept {
    return std::make_tuple(
        state_field("oracle_name", &State::oracle_name, "oracle_name"),
        state_field("last_updated", &State::last_updated, "last_updated", "timestamp"),
        state_field("last_updated_iso", &State::last_updated_iso),
        state_field("last_protocol_count", &State::last_protocol_count, "last_protocol_count",
                    "protocol_count"),
        state_field("last_tvs", &State::last_tvs, "last_tvs", "tvs"),
        state_field("snapshot_count", &State::snapshot_count, "snapshot_count"),
        state_field("oldest_snapshot", &State::oldest_snapshot),
        state_field("newest_snapshot", &State::newest_snapshot));
  }

  friend bool operator==(const State& a, const State& b) noexcept;
  friend bool operator!=(const State& a, const State& b) noexcept { return !(a == b); }
};

/// Boost.JSON conversions of State, found through value_from, value_to and
/// try_value_to. Reading: a missing or null key is the zero value, an
/// unknown key is ignored, a key of the wrong type (or an integer out of
/// int64 range, or a non-finite number) is an error.
void tag_invoke(boost::json::value_from_tag, boost::json::value& jv, const State& state);
boost::json::result<State> tag_invoke(boost::json::try_value_to_tag<State>,
                                      const boost::json::value& jv) noexcept;

/// The seed's rule for the next State: the given figures, last_updated_iso
/// from `timestamp`, and the snapshots' count, oldest and newest timestamps
/// (zeros when there are none). `snapshot_timestamps` is any range of
/// integers, unix seconds; one beyond the int64 range counts as INT64_MAX;
/// a range of doubles does not compile. Allocates the strings
/// (std::bad_alloc when memory runs out).
template <class Timestamps = std::initializer_list<std::int64_t>>
State update_state(std::string_view oracle_name, std::int64_t timestamp,
                   std::int64_t protocol_count, double tvs,
                   const Timestamps& snapshot_timestamps = {});

// ========================================================= implementation ====

// ------------------------------------------------------------- field tables --

namespace detail {

// Calls visit(field) for each row of S's field table, in order.
template <class S, class Visit>
void for_each_field(Visit&& visit) noexcept(noexcept(visit(std::get<0>(S::state_fields())))) {
  std::apply([&](const auto&... field) { (visit(field), ...); }, S::state_fields());
}
template <class S>
inline constexpr std::size_t field_count_v = std::tuple_size_v<decltype(S::state_fields())>;

// Why a field's value cannot be written as JSON that reads back the same,
// or null; the rest of unwritable() is beside JsonPrinter.
inline const char* unwritable(const std::string& s) noexcept {
  return unwritable(std::string_view(s));
}
inline const char* unwritable(std::int64_t) noexcept { return nullptr; }
inline const char* unwritable(std::uint64_t) noexcept { return nullptr; }
template <class Int, std::enable_if_t<is_field_integer_v<Int>, int> = 0>
const char* unwritable(Int) noexcept {
  return nullptr;  // every integer type fits int64 or uint64
}
inline const char* unwritable(bool) noexcept { return nullptr; }
template <class T>
const char* unwritable(const std::optional<T>& v) noexcept {
  return v ? unwritable(*v) : nullptr;
}

template <class Out>
bool print_field_value(Out& out, const std::string& s) noexcept {
  return out.append("\"") && append_json_escaped(out, s) && out.append("\"");
}
template <class Out>
bool print_field_value(Out& out, std::int64_t v) noexcept {
  char number[40];
  return out.append(std::string_view(number, format_int(v, number)));
}
template <class Out>
bool print_field_value(Out& out, std::uint64_t v) noexcept {
  char number[40];
  return out.append(std::string_view(number, format_uint(v, number)));
}
template <class Out, class Int, std::enable_if_t<is_field_integer_v<Int>, int> = 0>
bool print_field_value(Out& out, Int v) noexcept {
  if constexpr (std::is_signed_v<Int>)
    return print_field_value(out, static_cast<std::int64_t>(v));
  else
    return print_field_value(out, static_cast<std::uint64_t>(v));
}
template <class Out>
bool print_field_value(Out& out, double v) noexcept {
  char number[40];
  return out.append(std::string_view(number, format_double(v, number)));
}
template <class Out>
bool print_field_value(Out& out, bool v) noexcept {
  return out.append(v ? "true" : "false");
}
template <class Out, class T>
bool print_field_value(Out& out, const std::optional<T>& v) noexcept {
  return v ? print_field_value(out, *v) : out.append("null");
}

// Why no member may be named "schema_version": the library writes and
// reads its own version there, so the member would not read back.
inline constexpr const char* reserved_key_reason =
    "the key is the library's own (the state file's schema version, StateTraits::version); "
    "give the member another name";

// Why a field's name cannot be a key: a name given to two fields would be
// written twice, and read back as the later member's value for both; a
// name that is not UTF-8 makes every load call the file corrupt.
inline constexpr const char* repeated_key_reason =
    "the name is another field's too; each key of the table must be its own";
inline constexpr const char* unreadable_key_reason = "the name is not valid UTF-8";

// Whether a field before the index-th has the name `name`.
template <class S>
bool named_before(std::string_view name, std::size_t index) noexcept {
  std::size_t i = 0;
  bool seen = false;
  for_each_field<S>([&](const auto& field) noexcept {
    if (i++ < index && std::string_view(field.name) == name) seen = true;
  });
  return seen;
}

// Why a state could not be printed: the field and the reason, as
// JsonPrinter names them; both null when only memory ran out.
struct FieldRefusal {
  const char* name = nullptr;
  const char* reason = nullptr;
};

// A state printed from its table, byte for byte as JsonPrinter prints
// value_from(state), without building the value first: the save path of
// every collector, so it allocates nothing and does half the work.
template <class S, class Out>
bool print_fields(const S& s, Out& out, FieldRefusal& refusal) noexcept {
  bool ok = true, first = true;
  if constexpr (schema_version<S>::value > 0) {
    ok = out.append("{\n  \"") && out.append(version_key) && out.append("\": ") &&
         print_field_value(out, std::int64_t{schema_version<S>::value});
    first = false;
  }
  std::size_t index = 0;
  for_each_field<S>([&](const auto& field) noexcept {
    if (!ok) return;
    const auto& value = s.*(field.member);
    const std::string_view name(field.name);
    const std::size_t at = index++;
    const char* const unusable = name == version_key         ? reserved_key_reason
                                 : !valid_utf8(name)         ? unreadable_key_reason
                                 : named_before<S>(name, at) ? repeated_key_reason
                                                             : nullptr;
    if (unusable != nullptr) {
      refusal = {field.name, unusable};
      ok = false;
      return;
    }
    if (const char* why = unwritable(value)) {
      refusal = {field.name, why};
      ok = false;
      return;
    }
    ok = out.append(first ? "{\n  \"" : ",\n  \"") && append_json_escaped(out, field.name) &&
         out.append("\": ") && print_field_value(out, value);
    first = false;
  });
  return ok && out.append(first ? "{}\n" : "\n}\n");
}

/// Why a JSON value is not a state: the key and what is wrong with it.
struct StateProblem {
  std::string_view key;
  const char* reason = nullptr;
  boost::json::error code = boost::json::error::not_object;
};

inline const boost::json::value* member_of(const boost::json::object& o,
                                           std::string_view key) noexcept {
  const boost::json::value* v = o.if_contains(boost::json::string_view(key.data(), key.size()));
  return v != nullptr && !v->is_null() ? v : nullptr;  // null reads as missing
}

// The reading rules, one per kind of member: a missing or null key leaves
// the zero value; a value of the wrong kind is a problem naming the key.
inline bool read_field_value(const boost::json::value& v, std::string& out, const char*& why,
                             boost::json::error& code) {
  const boost::json::string* s = v.if_string();
  if (s == nullptr) {
    why = "expected a string";
    code = boost::json::error::not_string;
    return false;
  }
  out.assign(s->data(), s->size());
  return true;
}

inline bool read_field_value(const boost::json::value& v, std::int64_t& out, const char*& why,
                             boost::json::error& code) noexcept {
  if (const std::int64_t* i = v.if_int64()) {
    out = *i;
    return true;
  }
  const std::uint64_t* u = v.if_uint64();
  if (u != nullptr && *u <= static_cast<std::uint64_t>(INT64_MAX)) {
    out = static_cast<std::int64_t>(*u);
    return true;
  }
  why = u != nullptr ? "integer out of range" : "expected an integer";
  code = u != nullptr || v.is_double() ? boost::json::error::not_exact
                                       : boost::json::error::not_number;
  return false;
}

inline bool read_field_value(const boost::json::value& v, std::uint64_t& out, const char*& why,
                             boost::json::error& code) noexcept {
  if (const std::uint64_t* u = v.if_uint64()) {
    out = *u;
    return true;
  }
  const std::int64_t* i = v.if_int64();
  if (i != nullptr && *i >= 0) {
    out = static_cast<std::uint64_t>(*i);
    return true;
  }
  why = i != nullptr ? "integer out of range" : "expected an integer";
  code = i != nullptr || v.is_double() ? boost::json::error::not_exact
                                       : boost::json::error::not_number;
  return false;
}

// Any other integer type: read as int64 or uint64, then within its range.
template <class Int, std::enable_if_t<is_field_integer_v<Int>, int> = 0>
bool read_field_value(const boost::json::value& v, Int& out, const char*& why,
                      boost::json::error& code) noexcept {
  using Wide = std::conditional_t<std::is_signed_v<Int>, std::int64_t, std::uint64_t>;
  Wide wide = 0;
  if (!read_field_value(v, wide, why, code)) return false;
  if (wide < static_cast<Wide>(std::numeric_limits<Int>::min()) ||
      wide > static_cast<Wide>(std::numeric_limits<Int>::max())) {
    why = "integer out of range";
    code = boost::json::error::not_exact;
    return false;
  }
  out = static_cast<Int>(wide);
  return true;
}

inline bool read_field_value(const boost::json::value& v, double& out, const char*& why,
                             boost::json::error& code) noexcept {
  if (const double* d = v.if_double()) {
    if (!std::isfinite(*d)) {
      why = "not a finite number";
      code = boost::json::error::not_number;
      return false;
    }
    out = *d;
  } else if (const std::int64_t* i = v.if_int64()) {
    out = static_cast<double>(*i);  // the Go service wrote whole doubles so
  } else if (const std::uint64_t* u = v.if_uint64()) {
    out = static_cast<double>(*u);
  } else {
    why = "expected a number";
    code = boost::json::error::not_number;
    return false;
  }
  return true;
}

inline bool read_field_value(const boost::json::value& v, bool& out, const char*& why,
                             boost::json::error& code) noexcept {
  if (const bool* b = v.if_bool()) {
    out = *b;
    return true;
  }
  why = "expected true or false";
  code = boost::json::error::not_bool;
  return false;
}

template <class T>
bool read_field_value(const boost::json::value& v, std::optional<T>& out, const char*& why,
                      boost::json::error& code) {
  T value{};
  if (!read_field_value(v, value, why, code)) return false;
  out = std::move(value);
  return true;
}

/// Reads a state of a table type from `jv`. May throw std::bad_alloc.
template <class S>
bool read_fields(const boost::json::value& jv, S& out, StateProblem& problem) {
  const boost::json::object* o = jv.if_object();
  if (o == nullptr) {
    problem = {{}, "expected an object", boost::json::error::not_object};
    return false;
  }
  bool ok = true;
  for_each_field<S>([&](const auto& field) {
    const boost::json::value* v = ok ? member_of(*o, field.name) : nullptr;
    if (v != nullptr && !read_field_value(*v, out.*(field.member), problem.reason, problem.code)) {
      problem.key = field.name;
      ok = false;
    }
  });
  return ok;
}

template <class S>
bool fields_equal(const S& a, const S& b) noexcept {
  bool equal = true;
  for_each_field<S>(
      [&](const auto& field) noexcept { equal = equal && a.*(field.member) == b.*(field.member); });
  return equal;
}

template <class T>
boost::json::value field_as_value(const T& v, const boost::json::storage_ptr& sp) {
  return boost::json::value_from(v, sp);
}
template <class T>
boost::json::value field_as_value(const std::optional<T>& v, const boost::json::storage_ptr& sp) {
  return v ? boost::json::value_from(*v, sp) : boost::json::value(nullptr, sp);
}

template <class S>
void fields_to_value(boost::json::value& jv, const S& s) {
  boost::json::object& o = jv.emplace_object();
  o.reserve(field_count_v<S>);
  for_each_field<S>([&](const auto& field) {
    o.emplace(field.name, field_as_value(s.*(field.member), o.storage()));
  });
}

template <class S>
boost::json::result<S> fields_from_value(const boost::json::value& jv) noexcept {
  S state;
  StateProblem problem;
  ATOMIC_STATE_DETAIL_TRY {
    if (read_fields(jv, state, problem)) return state;
    return boost::json::make_error_code(problem.code);
  }
  ATOMIC_STATE_DETAIL_CATCH_ALL {
    return boost::system::error_code(ENOMEM, boost::system::generic_category());
  }
}

// The fields of a "state loaded" or "state saved" record of a table type:
// `lead` (the path), then each field the table logs there, under its key.
template <class S>
class LoggedFields {
 public:
  enum class Record : unsigned char { loaded, saved };
  LoggedFields(const S& s, Record record, std::initializer_list<Field> lead) noexcept {
    for (const Field& field : lead) fields_[size_++] = field;
    for_each_field<S>([&](const auto& field) noexcept {
      const char* key = record == Record::loaded ? field.loaded_as : field.saved_as;
      if (key != nullptr) add(key, s.*(field.member));
    });
  }
  Fields view() const noexcept { return Fields(fields_.data(), size_); }

 private:
  template <class T>
  void add(const char* key, const T& value) noexcept {
    fields_[size_++] = Field(key, value);
  }
  template <class T>
  void add(const char* key, const std::optional<T>& value) noexcept {
    if (value) add(key, *value);
  }

  std::array<Field, field_count_v<S> + 1> fields_{};
  std::size_t size_ = 0;
};

}  // namespace detail

// -------------------------------------------------------------------- State --

inline bool operator==(const State& a, const State& b) noexcept {
  return detail::fields_equal(a, b);
}

inline void tag_invoke(boost::json::value_from_tag, boost::json::value& jv, const State& state) {
  detail::fields_to_value(jv, state);
}

inline boost::json::result<State> tag_invoke(boost::json::try_value_to_tag<State>,
                                             const boost::json::value& jv) noexcept {
  return detail::fields_from_value<State>(jv);
}

namespace detail {
// An integer as int64: one beyond its range is the nearest end of it.
template <class Int>
std::int64_t saturated_int64(Int v) noexcept {
  if constexpr (std::is_signed_v<Int>)
    return static_cast<std::int64_t>(v);  // every signed type fits (int64 is the widest)
  else
    return v > static_cast<std::uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(v);
}
}  // namespace detail

template <class Timestamps>
State update_state(std::string_view oracle_name, std::int64_t timestamp,
                   std::int64_t protocol_count, double tvs, const Timestamps& snapshot_timestamps) {
  using Element = std::decay_t<decltype(*std::begin(snapshot_timestamps))>;
  static_assert(std::is_integral_v<Element> && !std::is_same_v<Element, bool>,
                "update_state: snapshot timestamps are whole unix seconds, of an integer type");
  State next;
  next.oracle_name.assign(oracle_name.data(), oracle_name.size());
  next.last_updated = timestamp;
  next.last_updated_iso = to_rfc3339(timestamp);
  next.last_protocol_count = protocol_count;
  next.last_tvs = tvs;
  for (const auto& t : snapshot_timestamps) {
    const std::int64_t ts = detail::saturated_int64(t);
    if (next.snapshot_count == 0 || ts < next.oldest_snapshot) next.oldest_snapshot = ts;
    if (next.snapshot_count == 0 || ts > next.newest_snapshot) next.newest_snapshot = ts;
    ++next.snapshot_count;
  }
  return next;
}

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state
#endif  // ATOMIC_STATE_DETAIL_JSON

#endif  // ATOMIC_STATE_STATE_HPP
