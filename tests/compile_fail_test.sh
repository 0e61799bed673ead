#!/usr/bin/env bash
# Misuse of StateManager's template parameters must fail to compile with a
# message that says what is missing: a static_assert under C++17, the
# LogSink concept under C++20 (the signature a sink needs in its first
# lines). So must StateManager with ATOMIC_STATE_NO_JSON, the header without
# Boost.JSON's headers, and the header below C++17, each with one error in
# the first lines. A matching program that must compile guards against a
# test that passes only because its snippet is broken. meson.build runs it
# with the build's compiler: g++ and clang++ in scripts/test.
# Usage: compile_fail_test.sh SOURCE_ROOT COMPILER [COMPILER ARGS...]
set -u
root=$1
shift
cxx=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
pass() { echo "ok   - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }

# snippet BODY: a translation unit declaring the sinks and states used below.
snippet() {
  cat <<EOF
#include "atomic_state.hpp"
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>
#include <tuple>
#include <vector>
struct GoodSink {
  void log(atomic_state::Level, std::string_view, atomic_state::Fields) {}
};
struct MessageOnlySink {  // the fields parameter is missing
  void log(atomic_state::Level, std::string_view) {}
};
struct NotASink {};
struct LvalueFieldsSink {  // the records' fields are temporaries
  void log(atomic_state::Level, std::string_view, atomic_state::Fields&) {}
};
struct TemplateSink {
  template <class F>
  void log(atomic_state::Level, std::string_view, F) {}
};
struct NoDefaultState {
  explicit NoDefaultState(int) {}
};
struct NotAWriter {};
$1
EOF
}

# Further compiler arguments for the next compile (reset by each check).
flags=()

# compile NAME STD BODY: sets $status and $diagnostics. A BODY starting
# with "#" is the whole translation unit, without the snippet around it.
compile() {
  if [ "${3:0:1}" = '#' ]; then printf '%s\n' "$3"; else snippet "$3"; fi >"$work/$1.cpp"
  diagnostics=$("${cxx[@]}" -std="$2" -fsyntax-only "${flags[@]}" -I"$root" "$work/$1.cpp" 2>&1)
  status=$?
}

# expect_ok NAME STD BODY
expect_ok() {
  compile "$1" "$2" "$3"
  if [ $status -eq 0 ]; then pass "$1 ($2) compiles"; else
    fail "$1 ($2) should compile"; printf '%s\n' "$diagnostics" | head -20; fi
}

# expect_warning NAME STD BODY TEXT [TEXT...]: compiles, and the
# diagnostics (warnings) hold every TEXT.
expect_warning() {
  compile "$1" "$2" "$3"
  local name="$1 ($2)" ok=1 text
  shift 3
  [ $status -eq 0 ] || ok=0
  for text in "$@"; do grep -qF -- "$text" <<<"$diagnostics" || ok=0; done
  if [ $ok -eq 1 ]; then pass "$name compiles, warning: $*"; else
    fail "$name should compile with warnings: $* (status $status)"
    printf '%s\n' "$diagnostics" | head -20
  fi
}

# expect_error NAME STD BODY TEXT [TEXT...]: fails to compile and the
# diagnostics hold every TEXT; a TEXT starting with ! must be absent.
expect_error() {
  compile "$1" "$2" "$3"
  local name="$1 ($2)" ok=1 text
  shift 3
  [ $status -ne 0 ] || ok=0
  for text in "$@"; do
    if [ "${text:0:1}" = '!' ]; then
      ! grep -qF -- "${text:1}" <<<"$diagnostics" || ok=0
    else
      grep -qF -- "$text" <<<"$diagnostics" || ok=0
    fi
  done
  if [ $ok -eq 1 ]; then pass "$name is refused with: $*"; else
    fail "$name should be refused with: $* (status $status)"
    printf '%s\n' "$diagnostics" | head -20
  fi
}

# expect_first NAME STD LINES BODY TEXT [TEXT...]: fails to compile, and
# every TEXT is in the first LINES lines of the diagnostics: what a user
# reads first. A TEXT starting with ! is nowhere in the diagnostics; "=N"
# says the diagnostics hold exactly N errors.
expect_first() {
  compile "$1" "$2" "$4"
  local name="$1 ($2${flags[*]:+ ${flags[*]}})" lines=$3 ok=1 text first errors
  shift 4
  first=$(head -n "$lines" <<<"$diagnostics")
  errors=$(grep -c 'error:' <<<"$diagnostics")
  [ $status -ne 0 ] || ok=0
  for text in "$@"; do
    case $text in
      '!'*) ! grep -qF -- "${text:1}" <<<"$diagnostics" || ok=0 ;;
      '='*) [ "$errors" = "${text:1}" ] || ok=0 ;;
      *) grep -qF -- "$text" <<<"$first" || ok=0 ;;
    esac
  done
  if [ $ok -eq 1 ]; then pass "$name is refused, in its first $lines lines: $*"; else
    fail "$name should be refused, in its first $lines lines: $* (status $status, $errors errors)"
    printf '%s\n' "$diagnostics" | head -"$((lines + 8))"
  fi
  flags=()
}

manager() { echo "atomic_state::StateManager<$1> m{\"d\"};"; }
manager_with_sink() { echo "NotASink s; atomic_state::StateManager<$1> m{\"d\", s};"; }

# Everything that must compile, in one translation unit per standard.
accepted='
GoodSink g;
atomic_state::StateManager<GoodSink> by_value{"d"};
atomic_state::StateManager<GoodSink&> by_reference{"d", g};
atomic_state::StateManager<> null_sink{"d"};
atomic_state::LogfmtSink logfmt{std::cerr};
atomic_state::StateManager<atomic_state::LogfmtSink&> shared_logfmt{"d", logfmt};
atomic_state::Field numbers[] = {{"u8", static_cast<unsigned char>(1)}, {"i8", static_cast<signed char>(1)},
                                 {"u64", 1ull}, {"code", 120}};
std::vector<unsigned long long> times{1, 2};
atomic_state::State from_unsigned = atomic_state::update_state("x", 1, 1, 1.0, times);
static_assert(atomic_state::is_log_sink_v<GoodSink> && atomic_state::is_log_sink_v<GoodSink&>);
static_assert(!atomic_state::is_log_sink_v<MessageOnlySink>);
static_assert(!atomic_state::is_log_sink_v<NotASink>);
static_assert(atomic_state::is_log_sink_v<TemplateSink> && atomic_state::is_log_sink_v<const atomic_state::NullSink&>);
static_assert(!atomic_state::is_log_sink_v<LvalueFieldsSink> && !atomic_state::is_log_sink_v<const GoodSink&>);'
for std in c++17 c++20; do
  concept_agrees=''
  [ $std = c++20 ] && concept_agrees='
static_assert(atomic_state::LogSink<GoodSink> && atomic_state::LogSink<GoodSink&>);
static_assert(!atomic_state::LogSink<MessageOnlySink> && !atomic_state::LogSink<NotASink>);
static_assert(atomic_state::LogSink<TemplateSink> && atomic_state::LogSink<const atomic_state::NullSink&>);
static_assert(!atomic_state::LogSink<LvalueFieldsSink> && !atomic_state::LogSink<const GoodSink&>);'
  expect_ok "sinks by value and by reference, NullSink, LogfmtSink; the trait" $std \
    "$accepted$concept_agrees"
  expect_error "a state without a default constructor" $std \
    "atomic_state::StateManager<atomic_state::NullSink, NoDefaultState> m{\"d\"};" \
    "StateT must be default-constructible"
  expect_error "a sync policy that is not one" $std \
    "atomic_state::StateManager<atomic_state::NullSink, atomic_state::State, NotAWriter> m{\"d\"};" \
    "SyncPolicy needs"
  expect_error "a filesystem policy without the reading calls" $std \
    "atomic_state::StateManager<atomic_state::NullSink, atomic_state::State,
       atomic_state::FullSync, NotAWriter> m{\"d\"};" \
    "Fs needs every call of PosixFs"
  # The spellings before 0.2.0 still compile, with a deprecation warning.
  expect_warning "the names before 0.2.0" $std \
    "atomic_state::LogfmtLogger sink{std::cerr};
     atomic_state::StateManager<atomic_state::LogfmtLogger&, atomic_state::State,
       atomic_state::AtomicWriter<atomic_state::NoSync>> m{\"d\", sink,
       atomic_state::AtomicWriter<atomic_state::NoSync>{}};
     atomic_state::State s = m.update_state(\"x\", 1, 1, 1.0);
     auto& same = m.logger();
     atomic_state::NullLogger null;
     atomic_state::Step step = atomic_state::Step::move_aside;" \
    "renamed LogfmtSink" "StateManager<Sink, StateT, SyncPolicy, Fs>" \
    "use the free function atomic_state::update_state" "use sink()" "renamed NullSink" \
    "Step::copy_aside"
  # A path type whose native() makes a new string each call: a view of it
  # would dangle inside the call, so PathView refuses it.
  expect_error "a path type whose native() returns a string by value" $std \
    "struct MadePath { std::string native() const { return \"d/f\"; } };
     atomic_state::Status made = atomic_state::write_atomic(MadePath{}, \"x\");" \
    "PathView"
  # A char logs neither as its code nor as text it has nowhere to keep.
  expect_error "a char as a log field" $std \
    "atomic_state::Field f{\"initial\", 'x'};" "deleted"
  # Snapshot times are whole seconds: a double could hold any value, NaN too.
  expect_error "snapshot times as doubles" $std \
    "atomic_state::StateManager<> m{\"d\"}; std::vector<double> t{1.5};
     auto s = m.update_state(\"x\", 1, 1, 1.0, t);" \
    "snapshot timestamps are whole unix seconds"
  # save_state(state, batch): the batch has the manager's sync policy and
  # Fs, or the state could be less durable than the outputs it records.
  expect_ok "a batch of the manager's kind given to save_state" $std \
    "atomic_state::StateManager<> m{\"d\"}; atomic_state::Batch<> b;
     atomic_state::Status s = m.save_state(atomic_state::State{}, b);"
  expect_error "a batch of another sync policy given to save_state" $std \
    "atomic_state::StateManager<> m{\"d\"}; atomic_state::Batch<atomic_state::NoSync> b;
     atomic_state::Status s = m.save_state(atomic_state::State{}, b);" \
    "save_state"
  # A field table takes every integer type, read with its exact range ...
  expect_ok "a field table of int, std::uint32_t, short, long and unsigned char members" $std \
    "struct Narrow {
       int count = 0; std::uint32_t id = 0; short delta = 0; long total = 0;
       unsigned char level = 0; std::optional<std::uint16_t> port; std::int64_t last_updated = 0;
       static constexpr auto state_fields() noexcept {
         return std::make_tuple(atomic_state::state_field(\"count\", &Narrow::count, \"count\"),
           atomic_state::state_field(\"id\", &Narrow::id, \"id\", \"id\"),
           atomic_state::state_field(\"delta\", &Narrow::delta),
           atomic_state::state_field(\"total\", &Narrow::total),
           atomic_state::state_field(\"level\", &Narrow::level),
           atomic_state::state_field(\"port\", &Narrow::port, \"port\"),
           atomic_state::state_field(\"last_updated\", &Narrow::last_updated));
       }
     };
     inline bool use(atomic_state::StateManager<atomic_state::NullSink, Narrow>& m) {
       auto loaded = m.load_state();
       return loaded && m.save_state(*loaded).ok();
     }"
  # ... and refuses any other type at the table, in one line.
  expect_first "a field table with a float member" $std 4 \
    "struct Floating {
       float ratio = 0; std::int64_t last_updated = 0;
       static constexpr auto state_fields() noexcept {
         return std::make_tuple(atomic_state::state_field(\"ratio\", &Floating::ratio));
       }
     };
     inline auto table = Floating::state_fields();" \
    "a field's member is std::string, an integer type of at most 64 bits, double or bool, or a std::optional of one"
done

# g++'s own dialect has __int128: no JSON integer in the file holds it
# (int64 or uint64), so the table refuses it in one line, both signs.
for wide in __int128 'unsigned __int128'; do
  expect_first "a field table with a $wide member" gnu++17 4 \
    "struct Wide {
       $wide w = 0; std::int64_t last_updated = 0;
       static constexpr auto state_fields() noexcept {
         return std::make_tuple(atomic_state::state_field(\"w\", &Wide::w));
       }
     };
     inline auto table = Wide::state_fields();" \
    "an integer type of at most 64 bits"
done

# The sink requirement: C++17 names it in a static_assert ...
for sink in MessageOnlySink NotASink; do
  expect_error "$sink as the sink" c++17 "$(manager $sink)" "StateManager: Sink must be a log sink"
done
expect_error "a non-sink by reference" c++17 "$(manager_with_sink 'NotASink&')" \
  "StateManager: Sink must be a log sink"
# ... and C++20 refuses it at the template parameter, naming the concept,
# before the class (and so its static_assert) is ever instantiated.
concept_refusal=(constraint LogSink '!Sink must be a log sink')
for sink in MessageOnlySink NotASink; do
  expect_error "$sink as the sink" c++20 "$(manager $sink)" "${concept_refusal[@]}"
done
expect_error "a non-sink by reference" c++20 "$(manager_with_sink 'NotASink&')" \
  "${concept_refusal[@]}"

# C++20: the concept is a requires-expression on the call itself, so that
# both compilers print the signature a sink needs in their first lines.
signature=('Level(), std::string_view(), ' 'Fields())')
for sink in MessageOnlySink NotASink; do
  expect_first "$sink as the sink, the signature" c++20 12 "$(manager $sink)" "${signature[@]}"
done
expect_first "a non-sink by reference, the signature" c++20 12 \
  "$(manager_with_sink 'NotASink&')" "${signature[@]}"

# StateManager(dir, sink) without template arguments: an lvalue sink is
# held by reference (the application's own), an rvalue by value.
deduced='
GoodSink g;
atomic_state::LogfmtSink logfmt{std::cerr};
atomic_state::PosixFs fs;
atomic_state::StateManager by_reference("d", g);
atomic_state::StateManager by_reference_options("d", g, atomic_state::StateOptions{});
atomic_state::StateManager logfmt_by_reference("d", logfmt);
atomic_state::StateManager with_fs("d", g, fs);
atomic_state::StateManager by_value("d", GoodSink{});
atomic_state::StateManager null_sink("d");
using atomic_state::StateManager;
static_assert(std::is_same_v<decltype(by_reference), StateManager<GoodSink&>>);
static_assert(std::is_same_v<decltype(by_reference_options), StateManager<GoodSink&>>);
static_assert(std::is_same_v<decltype(logfmt_by_reference), StateManager<atomic_state::LogfmtSink&>>);
static_assert(std::is_same_v<decltype(with_fs), StateManager<GoodSink&, atomic_state::State,
                                                             atomic_state::FullSync, atomic_state::PosixFs>>);
static_assert(std::is_same_v<decltype(by_value), StateManager<GoodSink>>);
static_assert(std::is_same_v<decltype(null_sink), StateManager<>>);'
for std in c++17 c++20; do
  expect_ok "StateManager(dir, sink) deduces a reference to an lvalue sink, a value of an rvalue" \
    $std "$deduced"
done

# StateManager where ATOMIC_STATE_NO_JSON leaves it out: one line says so.
no_json='StateManager needs Boost.JSON, left out by ATOMIC_STATE_NO_JSON'
for std in c++17 c++20; do
  flags=(-DATOMIC_STATE_NO_JSON)
  expect_first "StateManager<> with ATOMIC_STATE_NO_JSON" $std 4 \
    'atomic_state::StateManager<> m{"d"};' "$no_json" '!is not a member' '=1'
  flags=(-DATOMIC_STATE_NO_JSON)
  expect_first "StateManager(dir, sink) with ATOMIC_STATE_NO_JSON" $std 4 \
    'GoodSink g; atomic_state::StateManager m{"d", g};' "$no_json" '!is not a member' '=1'
  flags=(-DATOMIC_STATE_NO_JSON)
  expect_first "StateManager<GoodSink&, MyState> with ATOMIC_STATE_NO_JSON" $std 4 \
    'struct MyState {}; GoodSink g; atomic_state::StateManager<GoodSink&, MyState> m{"d", g};' \
    "$no_json" '!is not a member' '=1'
done

# Without Boost's headers: the include path of this compiler with every
# directory holding boost/ replaced by a copy without it (links).
search=$("${cxx[@]}" -std=c++17 -x c++ -E -v /dev/null 2>&1 |
  sed -n '/#include <...> search starts here:/,/End of search list\./p' | sed -n 's/^ //p' |
  sed 's/ (framework directory)$//')
no_boost=(-nostdinc)
index=0
while IFS= read -r dir; do
  [ -n "$dir" ] || continue
  if [ -d "$dir/boost" ]; then
    index=$((index + 1))
    mkdir -p "$work/no-boost-$index"
    for entry in "$dir"/*; do
      [ "$(basename "$entry")" = boost ] || ln -s "$entry" "$work/no-boost-$index/"
    done
    dir=$work/no-boost-$index
  fi
  no_boost+=(-isystem "$dir")
done <<<"$search"
without_boost='#include "atomic_state.hpp"
int main() { return 0; }'
for std in c++17 c++20; do
  flags=("${no_boost[@]}" -DATOMIC_STATE_NO_JSON)
  expect_ok "without Boost headers, with ATOMIC_STATE_NO_JSON" $std "$without_boost"
  flags=("${no_boost[@]}")
  expect_first "without Boost headers" $std 2 "$without_boost" \
    'libboost-json1.81-dev' 'ATOMIC_STATE_NO_JSON' '!No such file' '=1'
done

# Below C++17 the #error is all there is: nothing else of the header is read.
for std in c++11 c++14; do
  expect_first "the header alone" $std 2 "$without_boost" 'needs C++17 or later' '=1'
done

echo "$failures failed"
[ "$failures" -eq 0 ]
