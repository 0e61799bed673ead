#!/usr/bin/env bash
# Builds and runs a small program for every way users consume atomic_state:
# a vendored copy of the header (linked Boost.JSON, header-only Boost.JSON,
# no Boost), several translation units, two vendored versions in one
# program, a Meson subproject, an installed copy through pkg-config and
# through CMake, -fno-exceptions, and the header's hygiene (warnings,
# leaked macros, the diagnostics of an unsupported platform or standard).
# Every program replaces a file with AtomicWriter and reads it back and,
# where Boost.JSON is in use, saves a State with StateManager and loads it
# back equal (common/roundtrip.hpp).
#
# Usage: run.sh SOURCE_ROOT BUILD_SCRATCH_DIR CXX [CXX ARGS...]
#   SOURCE_ROOT        the atomic_state repository (meson.build, the header)
#   BUILD_SCRATCH_DIR  all work happens in a fresh directory made in it,
#                      removed at the end (kept if ATOMIC_STATE_KEEP_SCRATCH=1)
#   CXX...             the compiler command, e.g. g++ or ccache clang++
# Prints "ok   - ", "FAIL - " or "skip - " lines, then "N failed"; exits 0
# only if none failed. A check is skipped only when a tool it needs (meson,
# ninja, pkg-config, cmake, Boost.JSON's headers) is missing.
# Needs: bash, coreutils, sed, grep, find; meson and ninja; pkg-config;
# cmake (Debian 12: meson ninja-build pkg-config cmake libboost-json1.81-dev).
set -u

if [ $# -lt 3 ]; then
  echo "usage: $0 SOURCE_ROOT BUILD_SCRATCH_DIR CXX [CXX ARGS...]" >&2
  exit 2
fi
start_time=$(date +%s)
root=$(cd "$1" && pwd) || exit 2
mkdir -p "$2" || exit 2
scratch=$(cd "$2" && pwd) || exit 2
shift 2
cxx=("$@")
consumers=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
header=$root/atomic_state.hpp

work=$(mktemp -d "$scratch/consumers.XXXXXX") || exit 2
cleanup() {
  local -a pids
  mapfile -t pids < <(jobs -p)  # the checks still running (interrupted)
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
  if [ "${ATOMIC_STATE_KEEP_SCRATCH:-0}" = 1 ]; then
    echo "# scratch kept: $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The consumers' builds must not pick up the caller's flags.
unset CPPFLAGS CFLAGS CXXFLAGS LDFLAGS LIBRARY_PATH CPATH CPLUS_INCLUDE_PATH

mkdir -p "$work/results" "$work/logs" "$work/runs" "$work/tmp"
# The compilers' and tools' own temp files stay in the scratch directory too.
export TMPDIR=$work/tmp
cp -R "$consumers/." "$work/src"
rm -f "$work/src/run.sh"

# ------------------------------------------------------------------ output ----
pass() { echo "ok   - $1"; }
skip() { echo "skip - $1: $2"; }
# fail WHAT [LOG]: the FAIL line, then the end of LOG, indented.
fail() {
  echo "FAIL - $1"
  if [ $# -ge 2 ] && [ -s "$2" ]; then
    tail -n 25 "$2" | sed 's/^/    | /'
  fi
}

# ------------------------------------------------------------------- tools ----
have() { command -v "$1" >/dev/null 2>&1; }
# The compiler command for Meson (CXX, split by Meson like a shell would).
cxx_env=$(printf '%q ' "${cxx[@]}")
cxx_env=${cxx_env% }

std=(-std=c++17)
# Boost.JSON is in use wherever its headers are found; without them only
# the checks that need no Boost run (the others say why they are skipped).
if printf '#include <boost/json/value.hpp>\n' |
   "${cxx[@]}" "${std[@]}" -x c++ -E -o /dev/null - >/dev/null 2>&1; then
  json=json
else
  json=nojson
fi
no_boost_reason="Boost.JSON's headers are not found by ${cxx[*]} (Debian 12: libboost-json1.81-dev)"

# log NAME: a fresh log file for one check.
log() {
  local file="$work/logs/$1.log"
  : >"$file"
  echo "$file"
}

# compile LOG ARGS...: the compiler, at C++17 unless ARGS say otherwise.
compile() {
  local logfile=$1
  shift
  echo "+ ${cxx[*]} ${std[*]} $*" >>"$logfile"
  "${cxx[@]}" "${std[@]}" "$@" >>"$logfile" 2>&1
}

# runs_ok WHAT LOG PROGRAM json|nojson: runs PROGRAM in a fresh directory;
# it must exit 0 and say "writer roundtrip ok" and, with json, "state
# roundtrip ok" (with nojson: "state left out"). Prints ok or FAIL.
runs_ok() {
  local what=$1 logfile=$2 program=$3 mode=$4 dir status
  dir=$(mktemp -d "$work/runs/run.XXXXXX")
  echo "+ $program $dir" >>"$logfile"
  "$program" "$dir" >"$dir.out" 2>&1
  status=$?
  cat "$dir.out" >>"$logfile"
  if [ $status -ne 0 ]; then
    fail "$what: the program exited with $status" "$logfile"
  elif ! grep -q 'writer roundtrip ok' "$dir.out"; then
    fail "$what: the program did not report the writer roundtrip" "$logfile"
  elif [ "$mode" = json ] && ! grep -q 'state roundtrip ok' "$dir.out"; then
    fail "$what: the program did not report the state roundtrip (built without JSON?)" "$logfile"
  elif [ "$mode" = nojson ] && ! grep -q 'state left out' "$dir.out"; then
    fail "$what: the program should have been built with ATOMIC_STATE_NO_JSON" "$logfile"
  else
    pass "$what"
    return 0
  fi
  return 1
}

# build_and_run WHAT LOG json|nojson COMPILE ARGS... (with -o "$work/bin/NAME"
# among them, and the program as the last -o): compile, then runs_ok.
build_and_run() {
  local what=$1 logfile=$2 mode=$3
  shift 3
  local program="" previous="" arg
  for arg in "$@"; do
    [ "$previous" = -o ] && program=$arg
    previous=$arg
  done
  if ! compile "$logfile" "$@"; then
    fail "$what: does not build" "$logfile"
    return 1
  fi
  runs_ok "$what" "$logfile" "$program" "$mode"
}

# header_from DEPFILE DIR: the compile whose -MD wrote DEPFILE took
# atomic_state.hpp from DIR (not from the source tree or a system copy).
header_from() {
  # shellcheck disable=SC1003 # tr: a backslash, not an escaped quote
  tr -s '[:space:]\\' '\n' <"$1" | grep -qxF "$2/atomic_state.hpp"
}

mkdir -p "$work/bin"
src=$work/src
src_has() { [ -f "$src/$1" ]; }

# ---------------------------------------------------- copies of the header ----
# vendor/: an empty folder with only the header in it, as a user vendors it.
mkdir -p "$work/vendor" "$work/vdup" "$work/v2"
cp "$header" "$work/vendor/atomic_state.hpp"
cp "$header" "$work/vdup/atomic_state.hpp"
read_define() { sed -n "s/^#define ATOMIC_STATE_VERSION_$1 \(.*\)\$/\1/p" "$2" | head -n 1; }
major=$(read_define MAJOR "$header")
minor=$(read_define MINOR "$header")
patch=$(read_define PATCH "$header")
version=$(read_define STRING "$header" | tr -d '"')
# v2/: the same header released as the next minor version: its version
# defines and the guard against another version in the TU (the lines before
# the include guard) say MAJOR.MINOR+1.0.
new_minor=$((minor + 1))
new_version=$major.$new_minor.0
sed -e "1,/^#ifndef ATOMIC_STATE_HPP_INCLUDED/{
          s/ATOMIC_STATE_VERSION_MINOR != $minor\\b/ATOMIC_STATE_VERSION_MINOR != $new_minor/
          s/ATOMIC_STATE_VERSION_PATCH != $patch\\b/ATOMIC_STATE_VERSION_PATCH != 0/
        }" \
    -e "s/^#define ATOMIC_STATE_VERSION_MINOR $minor\$/#define ATOMIC_STATE_VERSION_MINOR $new_minor/" \
    -e "s/^#define ATOMIC_STATE_VERSION_PATCH $patch\$/#define ATOMIC_STATE_VERSION_PATCH 0/" \
    -e "s/^#define ATOMIC_STATE_VERSION_STRING \"$version\"\$/#define ATOMIC_STATE_VERSION_STRING \"$new_version\"/" \
    "$header" >"$work/v2/atomic_state.hpp"
v2=$work/v2/atomic_state.hpp
v2_made=1
[ "$(read_define MINOR "$v2")" = "$new_minor" ] &&
  [ "$(read_define PATCH "$v2")" = 0 ] &&
  [ "$(read_define STRING "$v2")" = "\"$new_version\"" ] &&
  grep -q "ATOMIC_STATE_VERSION_MINOR != $new_minor\\b" "$v2" || v2_made=0

# ================================================================= CHECKS ====
# Each check_* prints its own ok/FAIL/skip lines; they run in parallel.

# 1. Copy-paste vendoring.
check_vendored() {
  local what="vendored: only atomic_state.hpp copied into an empty folder"
  [ $json = json ] || { skip "$what, with Boost.JSON" "$no_boost_reason"; return; }
  local l d=$work/vendored
  l=$(log vendored)
  mkdir -p "$d"
  # One object for main.cpp, linked two ways.
  if ! compile "$l" -I"$work/vendor" -MD -MF "$d/main.d" -c "$src/vendored/main.cpp" \
       -o "$d/main.o"; then
    fail "$what: main.cpp does not compile" "$l"
    return
  fi
  header_from "$d/main.d" "$work/vendor" ||
    fail "$what: the header was not taken from the vendored copy" "$d/main.d"
  build_and_run "$what, -lboost_json" "$l" json "$d/main.o" -o "$work/bin/vendored-linked" \
    -lboost_json
  build_and_run "vendored: Boost.JSON header-only (boost/json/src.hpp in a second TU), no link flag" \
    "$l" json "$d/main.o" "$src/vendored/boost_json_src.cpp" -o "$work/bin/vendored-header-only"
}

check_vendored_no_json() {
  local what="vendored: -DATOMIC_STATE_NO_JSON, AtomicWriter only, no Boost header read"
  local l
  l=$(log vendored-no-json)
  build_and_run "$what" "$l" nojson -DATOMIC_STATE_NO_JSON -I"$work/vendor" \
    -MD -MF "$work/vendored-no-json.d" "$src/vendored/main.cpp" -o "$work/bin/vendored-no-json" ||
    return
  if grep -q 'boost/' "$work/vendored-no-json.d"; then
    fail "vendored: with ATOMIC_STATE_NO_JSON a Boost header was still included" \
      "$work/vendored-no-json.d"
  fi
}

# 2. Several translation units; two versions in one program.
check_two_tus() {
  local what="two TUs (and a third) include the header in one program: links, runs"
  [ $json = json ] || { skip "$what" "$no_boost_reason"; return; }
  local l
  l=$(log two-tus)
  build_and_run "$what" "$l" json -I"$root" "$src/two_tu/a.cpp" "$src/two_tu/b.cpp" \
    "$src/two_tu/main.cpp" -o "$work/bin/two-tus" -lboost_json
}

check_two_versions_linked() {
  local what="two vendored versions ($version and $new_version), one per TU, in one program"
  [ $v2_made = 1 ] || { fail "$what: could not make the copy with version $new_version"; return; }
  [ $json = json ] || { skip "$what" "$no_boost_reason"; return; }
  local l d=$work/two-versions
  l=$(log two-versions)
  mkdir -p "$d"
  if ! compile "$l" -I"$work/vendor" -c "$src/two_versions/old.cpp" -o "$d/old.o" ||
     ! compile "$l" -I"$work/v2" -c "$src/two_versions/new.cpp" -o "$d/new.o" ||
     ! compile "$l" "$src/two_versions/main.cpp" "$d/old.o" "$d/new.o" \
       -o "$work/bin/two-versions" -lboost_json; then
    fail "$what: does not build" "$l"
    return
  fi
  runs_ok "$what: links and runs" "$l" "$work/bin/two-versions" json || return
  if grep -q "^old TU: version $version," "$l" && grep -q "^new TU: version $new_version," "$l"; then
    pass "$what: each TU reports its own version and its own AtomicWriter type"
  else
    fail "$what: each TU should report its own version" "$l"
  fi
}

# both_in_one_tu WHAT FIRST SECOND ok|error
both_in_one_tu() {
  local what=$1 first=$2 second=$3 expect=$4 l status
  local message="a different version of this header was already included"
  l=$(log "one-tu-$(echo "$what" | tr -c 'a-zA-Z0-9' '-')")
  # ATOMIC_STATE_NO_JSON: the guard does not depend on it, and it is faster.
  local -a fatal=()
  [ "$expect" = error ] && fatal=(-Wfatal-errors)  # the #error is all there is to see
  compile "$l" -fsyntax-only "${fatal[@]}" -DATOMIC_STATE_NO_JSON -DATOMIC_STATE_FIRST="\"$first\"" \
    -DATOMIC_STATE_SECOND="\"$second\"" "$src/two_versions/both.cpp"
  status=$?
  if [ "$expect" = ok ]; then
    if [ $status -eq 0 ]; then pass "$what: compiles"; else fail "$what: should compile" "$l"; fi
  elif [ $status -ne 0 ] && grep -q "error.*$message" "$l"; then
    pass "$what: stops with \"$message\""
  else
    fail "$what: should stop with \"$message\" (status $status)" "$l"
  fi
}

check_two_versions_one_tu() {
  if [ $v2_made = 0 ]; then
    fail "two versions in one TU: could not make the copy with version $new_version"
    return
  fi
  both_in_one_tu "versions $version then $new_version in one TU" \
    "$work/vendor/atomic_state.hpp" "$v2" error
  both_in_one_tu "versions $new_version then $version in one TU" \
    "$v2" "$work/vendor/atomic_state.hpp" error
  both_in_one_tu "two identical copies of $version in one TU" \
    "$work/vendor/atomic_state.hpp" "$work/vdup/atomic_state.hpp" ok
}

# 3. Meson subproject.
check_meson_subproject() {
  local what="Meson subproject: dependency('atomic_state') through meson.override_dependency"
  if ! have meson || ! have ninja; then
    skip "$what" "meson or ninja is not installed (Debian: meson ninja-build)"
    return
  fi
  [ $json = json ] || { skip "$what" "$no_boost_reason"; return; }
  local l proj=$src/meson_subproject build=$work/meson-subproject-build
  l=$(log meson-subproject)
  mkdir -p "$proj/subprojects"
  ln -s "$root" "$proj/subprojects/atomic_state"
  echo "+ CXX=$cxx_env meson setup $build $proj --force-fallback-for=atomic_state" >>"$l"
  if ! CXX=$cxx_env meson setup "$build" "$proj" --force-fallback-for=atomic_state \
       --wrap-mode=nodownload >>"$l" 2>&1; then
    fail "$what: meson setup fails" "$l"
    return
  fi
  if ! grep -q "Dependency atomic_state found: YES $version (overridden)" "$l"; then
    fail "$what: the dependency was not the subproject's override of version $version" "$l"
    return
  fi
  if ! ninja -C "$build" >>"$l" 2>&1; then
    fail "$what: ninja fails" "$l"
    return
  fi
  runs_ok "$what" "$l" "$build/app" json
}

# 3b. A Meson subproject through a .wrap file: a wrap-file whose archive is
# in subprojects/packagecache, as if Meson had downloaded it (the network
# stays out), and dependency('atomic_state', default_options: ['json=enabled']).
check_meson_wrap() {
  local what="Meson subproject through subprojects/atomic_state.wrap, dependency('atomic_state', default_options: ['json=enabled'])"
  if ! have meson || ! have ninja; then
    skip "$what" "meson or ninja is not installed (Debian: meson ninja-build)"
    return
  fi
  [ $json = json ] || { skip "$what" "$no_boost_reason"; return; }
  local l proj=$work/wrap-project build=$work/wrap-build release=$work/release
  local name=atomic_state-$version archive hash
  l=$(log meson-wrap)
  mkdir -p "$proj/subprojects/packagecache" "$proj/common" "$release/$name"
  # What the subproject reads; it builds no examples, tests or benchmarks.
  cp -R "$root/meson.build" "$root/meson_options.txt" "$root/atomic_state.hpp" "$root/cmake" \
    "$release/$name/"
  archive=$proj/subprojects/packagecache/$name.tar.gz
  tar -C "$release" -czf "$archive" "$name"
  hash=$(sha256sum "$archive" | cut -d ' ' -f 1)
  printf '%s\n' '[wrap-file]' "directory = $name" \
    "source_url = https://github.com/atomic-state/atomic_state/archive/refs/tags/v$version.tar.gz" \
    "source_filename = $name.tar.gz" "source_hash = $hash" '' '[provide]' \
    'dependency_names = atomic_state' >"$proj/subprojects/atomic_state.wrap"
  printf '%s\n' "project('wrap_consumer', 'cpp', default_options: ['cpp_std=c++17'])" \
    "atomic_state_dep = dependency('atomic_state', default_options: ['json=enabled'])" \
    "executable('app', 'main.cpp', dependencies: atomic_state_dep)" >"$proj/meson.build"
  sed 's|"\.\./common/roundtrip\.hpp"|"common/roundtrip.hpp"|' "$src/meson_subproject/main.cpp" \
    >"$proj/main.cpp"
  cp "$src/common/roundtrip.hpp" "$proj/common/"
  echo "+ CXX=$cxx_env meson setup $build $proj --force-fallback-for=atomic_state" >>"$l"
  if ! CXX=$cxx_env meson setup "$build" "$proj" --force-fallback-for=atomic_state \
       --wrap-mode=nodownload >>"$l" 2>&1; then
    fail "$what: meson setup fails" "$l"
    return
  fi
  if ! grep -q "Using atomic_state source from cache" "$l" ||
     ! grep -q "atomic_state| Build targets in project: 0" "$l"; then
    fail "$what: the wrap's archive was not used, or the subproject built targets of its own" "$l"
    return
  fi
  if ! ninja -C "$build" >>"$l" 2>&1; then
    fail "$what: ninja fails" "$l"
    return
  fi
  runs_ok "$what" "$l" "$build/app" json
}

# 4. Installed: meson install into a staging prefix, then pkg-config, CMake.
check_installed() {
  local what="installed"
  if ! have meson || ! have ninja; then
    skip "$what (pkg-config and CMake consumers)" \
      "meson or ninja is not installed (Debian: meson ninja-build)"
    return
  fi
  local l stage=$work/stage build=$work/install-build
  l=$(log install)
  # --libdir lib64: what Meson picks where dpkg-dev is missing (a minimal
  # Debian, the debian:12 container image) and on Fedora. Debian's CMake and
  # pkg-config do not look in lib64: a header-only package must install
  # nothing that depends on the libdir.
  echo "+ CXX=$cxx_env meson setup $build $root -Dexamples=false --prefix=$stage --libdir=lib64" >>"$l"
  # -Dexamples=false: what is left to install (the header, the .pc file,
  # the CMake package) needs no compiling (--no-rebuild would fail on a
  # program not built); check_installed_defaults installs the tool.
  if ! CXX=$cxx_env meson setup "$build" "$root" -Dexamples=false --prefix="$stage" \
       --libdir=lib64 --wrap-mode=nodownload >>"$l" 2>&1 ||
     ! meson install -C "$build" --no-rebuild >>"$l" 2>&1; then
    fail "installed: meson setup and meson install into a staging prefix" "$l"
    return
  fi
  if [ ! -f "$stage/include/atomic_state.hpp" ]; then
    fail "installed: meson install should put the header in <prefix>/include" "$l"
    return
  fi
  pass "installed: meson setup -Dexamples=false --prefix=<stage> --libdir=lib64, meson install"
  installs_exactly "installed, -Dexamples=false: the header, the pkg-config and CMake files; no atomic-write" \
    "$l" "$stage" "${library_files[@]}"
  if [ -e "$build/examples" ]; then
    fail "installed, -Dexamples=false: the examples were configured all the same" "$l"
  fi
  # The CMake consumer uses a copy of the prefix at another path: the
  # package must find its header relative to itself.
  local moved=$work/moved-prefix
  cp -R "$stage" "$moved"
  check_pkgconfig "$stage" >"$work/pkgconfig.out" 2>&1 &
  check_cmake "$moved"
  wait
  cat "$work/pkgconfig.out"
}

# What any install holds, relative to the prefix.
library_files=(include/atomic_state.hpp share/pkgconfig/atomic_state.pc
  share/cmake/atomic_state/atomic_stateConfig.cmake
  share/cmake/atomic_state/atomic_stateConfigVersion.cmake)

# installs_exactly WHAT LOG DIR FILE...: the files (and symlinks) under DIR
# are FILE... and nothing else.
installs_exactly() {
  local what=$1 logfile=$2 dir=$3 expected actual
  shift 3
  expected=$(printf '%s\n' "$@" | sort)
  actual=$(cd "$dir" && find . \( -type f -o -type l \) -print | sed 's|^\./||' | sort)
  if [ "$actual" = "$expected" ]; then
    pass "$what"
  else
    printf 'expected:\n%s\ninstalled:\n%s\n' "$expected" "$actual" >>"$logfile"
    fail "$what" "$logfile"
  fi
}

# 4b. A user's plain install: no option at all. It must build no test and no
# benchmark (whatever is installed on the machine: Catch2, Google Benchmark),
# and install the tool beside the header.
check_installed_defaults() {
  local what="installed with the defaults: meson setup, meson install --destdir"
  if ! have meson || ! have ninja; then
    skip "$what" "meson or ninja is not installed (Debian: meson ninja-build)"
    return
  fi
  local l build=$work/defaults-build dest=$work/defaults-dest prefix=/usr/local tool out
  l=$(log install-defaults)
  # --wrap-mode=nodownload sets no build option: it only keeps the network out.
  echo "+ CXX=$cxx_env meson setup $build $root --prefix=$prefix" >>"$l"
  if ! CXX=$cxx_env meson setup "$build" "$root" --prefix=$prefix --wrap-mode=nodownload \
       >>"$l" 2>&1 ||
     ! meson install -C "$build" --destdir "$dest" >>"$l" 2>&1; then
    fail "$what" "$l"
    return
  fi
  pass "$what"
  installs_exactly "installed with the defaults: the header, the pkg-config and CMake files, bin/atomic-write" \
    "$l" "$dest$prefix" "${library_files[@]}" bin/atomic-write
  local tests benchmarks
  tests=$(meson introspect --tests "$build" 2>>"$l")
  benchmarks=$(meson introspect --benchmarks "$build" 2>>"$l")
  if [ "$tests" = "[]" ] && [ "$benchmarks" = "[]" ] && [ ! -e "$build/tests" ] &&
     [ ! -e "$build/bench" ]; then
    pass "installed with the defaults: no test and no benchmark configured or built"
  else
    printf 'tests: %s\nbenchmarks: %s\n' "$tests" "$benchmarks" >>"$l"
    ls "$build" >>"$l"
    fail "installed with the defaults: tests or benchmarks were configured" "$l"
  fi
  tool=$dest$prefix/bin/atomic-write
  out=$(printf 'x' | "$tool" "$work/defaults-written" 2>>"$l" && "$tool" --version 2>>"$l")
  if [ "$out" = "atomic-write $version" ] && [ "$(cat "$work/defaults-written" 2>/dev/null)" = x ]
  then
    pass "installed with the defaults: bin/atomic-write writes a file and says version $version"
  else
    echo "--version: $out" >>"$l"
    fail "installed with the defaults: bin/atomic-write should write a file and say $version" "$l"
  fi
}

# 4c. The tool alone: -Dexamples=tool builds and installs atomic-write and
# configures no demo program (an installer has no use for them).
check_installed_tool() {
  local what="installed, -Dexamples=tool: meson setup, meson install --destdir"
  if ! have meson || ! have ninja; then
    skip "$what" "meson or ninja is not installed (Debian: meson ninja-build)"
    return
  fi
  local l build=$work/tool-build dest=$work/tool-dest prefix=/usr/local programs
  l=$(log install-tool)
  echo "+ CXX=$cxx_env meson setup $build $root -Dexamples=tool --prefix=$prefix" >>"$l"
  if ! CXX=$cxx_env meson setup "$build" "$root" -Dexamples=tool --prefix=$prefix \
       --wrap-mode=nodownload >>"$l" 2>&1 ||
     ! meson install -C "$build" --destdir "$dest" >>"$l" 2>&1; then
    fail "$what" "$l"
    return
  fi
  pass "$what"
  installs_exactly "installed, -Dexamples=tool: the header, the pkg-config and CMake files, bin/atomic-write" \
    "$l" "$dest$prefix" "${library_files[@]}" bin/atomic-write
  programs=$(meson introspect --targets "$build" 2>>"$l" | grep -o '"name": "[^"]*"' |
    sed 's/^"name": "//; s/"$//' | sort | tr '\n' ' ')
  if [ "$programs" = "atomic-write " ]; then
    pass "installed, -Dexamples=tool: atomic-write is the one program configured, no demo"
  else
    echo "targets: $programs" >>"$l"
    fail "installed, -Dexamples=tool: programs besides atomic-write were configured" "$l"
  fi
}

check_pkgconfig() {
  local stage=$1 what="installed, pkg-config: \$CXX main.cpp \$(pkg-config --cflags --libs atomic_state)"
  have pkg-config || { skip "$what" "pkg-config is not installed (Debian: pkg-config)"; return; }
  local l pc flags modversion
  l=$(log pkgconfig)
  # <prefix>/share/pkgconfig: where pkg-config looks whatever the libdir.
  pc=$stage/share/pkgconfig/atomic_state.pc
  if [ ! -f "$pc" ]; then
    find "$stage" >>"$l"
    fail "$what: no <prefix>/share/pkgconfig/atomic_state.pc" "$l"
    return
  fi
  echo "+ PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags --libs atomic_state" >>"$l"
  if ! flags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags --libs atomic_state 2>>"$l") ||
     ! modversion=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --modversion atomic_state 2>>"$l")
  then
    fail "$what: pkg-config does not read ${pc#"$stage"/}" "$l"
    return
  fi
  echo "$flags" >>"$l"
  [ "$modversion" = "$version" ] ||
    fail "installed, pkg-config: --modversion says $modversion, the header $version" "$l"
  local -a pcflags
  read -r -a pcflags <<<"$flags"
  # Built without Boost.JSON, the .pc file says -DATOMIC_STATE_NO_JSON.
  build_and_run "$what" "$l" $json -MD -MF "$work/pkgconfig.d" "$src/pkgconfig/main.cpp" \
    -o "$work/bin/pkgconfig" "${pcflags[@]}" || return
  header_from "$work/pkgconfig.d" "$stage/include" ||
    fail "installed, pkg-config: the header was not taken from <stage>/include" "$work/pkgconfig.d"
}

check_cmake() {
  local stage=$1
  local what="installed, CMake: find_package(atomic_state 0.1) and atomic_state::atomic_state, the prefix copied elsewhere"
  have cmake || { skip "$what" "cmake is not installed (Debian: cmake)"; return; }
  local l build=$work/cmake-build
  l=$(log cmake)
  # CMake takes the compiler alone: a launcher such as ccache goes apart,
  # and any further words become CMAKE_CXX_FLAGS.
  local -a words=("${cxx[@]}") args=()
  case "$(basename "${words[0]}")" in
    ccache | sccache | distcc)
      args+=(-DCMAKE_CXX_COMPILER_LAUNCHER="${words[0]}")
      words=("${words[@]:1}")
      ;;
  esac
  args+=(-DCMAKE_CXX_COMPILER="${words[0]}")
  [ ${#words[@]} -gt 1 ] && args+=(-DCMAKE_CXX_FLAGS="${words[*]:1}")
  have ninja && args+=(-G Ninja)
  echo "+ cmake -S $src/cmake -B $build ${args[*]} -DCMAKE_PREFIX_PATH=$stage" >>"$l"
  if ! cmake -S "$src/cmake" -B "$build" "${args[@]}" -DCMAKE_PREFIX_PATH="$stage" \
       -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >>"$l" 2>&1; then
    fail "$what: cmake configure fails" "$l"
    return
  fi
  if ! grep -q "atomic_state $version from $stage/" "$l"; then
    fail "$what: the package found is not version $version from the staging prefix" "$l"
    return
  fi
  if ! cmake --build "$build" >>"$l" 2>&1; then
    fail "$what: cmake --build fails" "$l"
    return
  fi
  if ! grep -qF -- "$stage/include" "$build/compile_commands.json"; then
    fail "$what: the compile does not use <stage>/include" "$build/compile_commands.json"
    return
  fi
  runs_ok "$what" "$l" "$build/app" $json
}

# 5. The version: one value everywhere, and a mismatch stops the build.
check_version() {
  local l meson_version banner numbers
  l=$(log version)
  # The project's version: keyword, not meson_version:.
  meson_version=$(sed -n "/^project(/,/)/s/.*\\(^\\|[ ,(]\\)version: *'\\([^']*\\)'.*/\\2/p" \
    "$root/meson.build" | head -n 1)
  banner=$(sed -n 's|^// Version \([^ ]*\) .*|\1|p' "$header" | head -n 1)
  numbers=$major.$minor.$patch
  if [ -n "$version" ] && [ "$version" = "$meson_version" ] && [ "$version" = "$numbers" ] &&
     [ "$version" = "$banner" ]; then
    pass "version $version: ATOMIC_STATE_VERSION_STRING, _MAJOR/_MINOR/_PATCH, the banner and meson.build agree"
  else
    echo "ATOMIC_STATE_VERSION_STRING '$version', _MAJOR._MINOR._PATCH '$numbers'," \
      "banner '$banner', meson.build '$meson_version'" >"$l"
    fail "version: the header and meson.build disagree" "$l"
  fi
  if ! have meson || ! have ninja; then
    skip "version: a mismatched meson.build stops meson setup" \
      "meson or ninja is not installed (Debian: meson ninja-build)"
    return
  fi
  # A copy of the project (meson.build, meson_options.txt and the header are
  # all that is read before the check) with one side changed.
  mismatch "meson.build says 9.9.9" 9.9.9 "$header" "$version"
  if [ $v2_made = 1 ]; then
    mismatch "the header says $new_version" "$meson_version" "$v2" "$new_version"
  fi
}

# mismatch WHAT MESON_VERSION HEADER HEADER_VERSION
mismatch() {
  local what="version: when $1, meson setup fails naming both versions"
  local copy l
  copy=$(mktemp -d "$work/mismatch.XXXXXX")
  l=$(log "mismatch-$(basename "$copy")")
  cp "$root/meson_options.txt" "$copy/"
  cp "$3" "$copy/atomic_state.hpp"
  sed "/^project(/,/)/s/\\(^\\|[ ,(]\\)version: *'[^']*'/\\1version: '$2'/" "$root/meson.build" \
    >"$copy/meson.build"
  if CXX=$cxx_env meson setup "$copy/build" "$copy" -Dtests=disabled --wrap-mode=nodownload \
       >>"$l" 2>&1; then
    fail "$what: it configured" "$l"
  elif grep -i 'error' "$l" | grep -F -- "$2" | grep -qF -- "$4"; then
    pass "$what: $(grep -i 'error' "$l" | grep -F -- "$2" | grep -F -- "$4" | head -n 1 |
      sed 's/^.*ERROR: *//')"
  else
    fail "$what: the error should name $4 and $2" "$l"
  fi
}

# 6. -fno-exceptions.
check_no_exceptions() {
  local what="-fno-exceptions: AtomicWriter, StateManager save and load, a corrupt file quarantined"
  [ $json = json ] || { skip "$what" "$no_boost_reason"; return; }
  local l
  l=$(log no-exceptions)
  build_and_run "$what" "$l" json -fno-exceptions "$src/no_exceptions/main.cpp" -I"$root" \
    -o "$work/bin/no-exceptions" -lboost_json || return
  grep -q 'corrupt state file quarantined ok' "$l" ||
    fail "-fno-exceptions: the corrupt state file check did not run" "$l"
}

check_no_exceptions_no_json() {
  local what="-fno-exceptions -DATOMIC_STATE_NO_JSON: AtomicWriter, no Boost"
  local l
  l=$(log no-exceptions-no-json)
  build_and_run "$what" "$l" nojson -fno-exceptions -DATOMIC_STATE_NO_JSON \
    "$src/no_exceptions/main.cpp" -I"$root" -o "$work/bin/no-exceptions-no-json"
}

# 7. Header hygiene.
warnings=(-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Werror)
check_hygiene() {  # STD json|nojson
  local standard=$1 mode=$2 l name="hygiene-$1-$2"
  local what="hygiene: atomic_state.hpp as the only include, ${warnings[*]}, -std=$standard"
  local -a extra=()
  if [ "$mode" = nojson ]; then
    what+=", -DATOMIC_STATE_NO_JSON"
    extra=(-DATOMIC_STATE_NO_JSON)
  else
    [ $json = json ] || { skip "$what" "$no_boost_reason"; return; }
    extra=(-lboost_json)
  fi
  l=$(log "$name")
  build_and_run "$what" "$l" "$mode" -std="$standard" "${warnings[@]}" -I"$root" \
    "$src/hygiene/only_include.cpp" -o "$work/bin/$name" "${extra[@]}"
}

check_macro_leaks() {
  local names count l tu=$work/leaks.cpp
  l=$(log macro-leaks)
  names=$(grep -o '^[[:space:]]*#[[:space:]]*define[[:space:]]\+ATOMIC_STATE_DETAIL_[A-Za-z0-9_]\+' \
    "$header" | sed 's/.*define[[:space:]]*//' | sort -u)
  count=$(echo "$names" | grep -c .)
  if [ "$count" -eq 0 ]; then
    fail "hygiene: no #define ATOMIC_STATE_DETAIL_... found in the header (has the pattern changed?)"
    return
  fi
  {
    echo '#include "atomic_state.hpp"'
    for name in $names; do
      printf '#ifdef %s\n#error "%s leaked"\n#endif\n' "$name" "$name"
    done
    echo 'int main() { return 0; }'
  } >"$tu"
  local mode ok=1 label="with ATOMIC_STATE_NO_JSON"
  local -a variants=(nojson)
  [ $json = json ] && variants=(json nojson) && label="with JSON and with ATOMIC_STATE_NO_JSON"
  for mode in "${variants[@]}"; do
    local -a extra=()
    [ "$mode" = nojson ] && extra=(-DATOMIC_STATE_NO_JSON)
    compile "$l" -fsyntax-only -I"$root" "${extra[@]}" "$tu" || ok=0
  done
  if [ $ok = 1 ]; then
    pass "hygiene: none of the $count ATOMIC_STATE_DETAIL_ macros is defined after the header ($label)"
  else
    fail "hygiene: internal macros leak out of the header" "$l"
  fi
  [ $json = json ] || skip "hygiene: leaks with JSON" "$no_boost_reason"
  # Every macro the header defines carries its prefix.
  local others
  others=$(grep -o '^[[:space:]]*#[[:space:]]*define[[:space:]]\+[A-Za-z0-9_]\+' "$header" |
    sed 's/.*define[[:space:]]*//' | grep -v '^ATOMIC_STATE_' | sort -u | tr '\n' ' ')
  if [ -z "$others" ]; then
    pass "hygiene: every macro the header defines starts with ATOMIC_STATE_"
  else
    echo "defined without the prefix: $others" >"$l"
    fail "hygiene: macros without the ATOMIC_STATE_ prefix" "$l"
  fi
}

# diagnosed WHAT TEXT COMPILE ARGS...: the compile fails and its first error
# holds TEXT (-Wfatal-errors: the user sees this error, and only this one).
diagnosed() {
  local what=$1 text=$2 l first
  shift 2
  l=$(log "diagnosed-$(echo "$what" | tr -c 'a-zA-Z0-9' '-')")
  if compile "$l" -fsyntax-only -Wfatal-errors "$@"; then
    fail "$what: compiled" "$l"
    return
  fi
  first=$(grep -v '^+ ' "$l" | grep -m 1 'error:')
  if grep -qF -- "$text" <<<"$first"; then
    pass "$what: ${first#*error: }"
  else
    fail "$what: the first error should say \"$text\"" "$l"
  fi
}

check_unsupported() {
  local tu=$work/platform.cpp
  printf '#include "atomic_state.hpp"\nint main() { return 0; }\n' >"$tu"
  local -a not_unix=(-U__unix__ -U__unix -Uunix -U__linux__ -U__linux -Ulinux -U__gnu_linux__
    -U__APPLE__)
  diagnosed "hygiene: Windows (_WIN32) stops at compile time" \
    "supports POSIX systems only" "${not_unix[@]}" -D_WIN32 -I"$root" "$tu"
  diagnosed "hygiene: a platform that is not POSIX stops at compile time" \
    "supports POSIX systems only" "${not_unix[@]}" -I"$root" "$tu"
  diagnosed "hygiene: C++14 stops at compile time" \
    "needs C++17 or later" -std=c++14 -I"$root" "$tu"
}

# ================================================================= RUNNING ====
checks=(  # the longest first
  check_installed_defaults
  check_installed
  check_installed_tool
  check_two_tus
  check_vendored
  check_two_versions_linked
  check_meson_subproject
  check_meson_wrap
  "check_hygiene c++20 json"
  "check_hygiene c++17 json"
  check_no_exceptions
  check_macro_leaks
  check_version
  check_two_versions_one_tu
  check_vendored_no_json
  check_no_exceptions_no_json
  "check_hygiene c++17 nojson"
  check_unsupported
)
parallel=$(nproc 2>/dev/null || echo 2)
[ "$parallel" -ge 2 ] 2>/dev/null || parallel=2
echo "# atomic_state $version consumers, with ${cxx[*]} ($("${cxx[@]}" --version 2>/dev/null |
  head -n 1)), $parallel at a time"
index=0
for check in "${checks[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
  # shellcheck disable=SC2086 # a check and its arguments
  (
    begun=$(date +%s.%N)
    $check
    [ -n "${ATOMIC_STATE_CONSUMERS_TIMES:-}" ] &&
      echo "# $check: $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $begun }") s"
  ) >"$work/results/$(printf '%02d' $index)" 2>&1 &
  index=$((index + 1))
done
wait

failed=0
index=0
for check in "${checks[@]}"; do
  result=$work/results/$(printf '%02d' $index)
  if ! grep -q '^\(ok  \|FAIL\|skip\) - ' "$result"; then
    fail "$check reported nothing" "$result"
    failed=$((failed + 1))
  else
    cat "$result"
    failed=$((failed + $(grep -c '^FAIL - ' "$result")))
  fi
  index=$((index + 1))
done
echo "# $(($(date +%s) - start_time)) s"
echo "$failed failed"
[ "$failed" -eq 0 ]
