#!/usr/bin/env bash
# The demo programs as real processes, run the way a timer runs a collector:
# first run, a rerun on the same data (skipped), newer data, older data, a
# corrupt state file, bad input and bad usage; overlapping runs (the run
# lock), a killed run, an unwritable output directory, a failing fsync in the
# batch that commits summary and state (FAIL_SYNC_SHIM, tests/support/
# fail_sync.cpp, preloaded); the summary and the state agreeing; names and state text
# that are terminal escape sequences, figures of every size. Also the
# custom-state example (a uint64 slot cursor, a file layout upgraded, slots
# at the end of uint64) and the sink examples on state files at the end of
# int64.
# Usage: collector_test.sh PATH/TO/oracle-collector PATH/TO/custom-state DATA_DIR
#          PATH/TO/with-jsonlines [PATH/TO/with-spdlog]
# (with-spdlog is built only where spdlog is installed; without it, skipped.)
set -u
collector=$1
custom=$2
data=$3
jsonlines=$4
spdlog=${5:-}
. "$(dirname "$0")/support/checks.sh"

out=$work/out
day1=$data/oracles-2024-11-24.json
day2=$data/oracles-2024-11-25.json
# run NAME ARGS...: runs the collector; stdout, stderr and status land in $work/NAME.*
run() {
  local name=$1; shift
  "$collector" --output-dir "$out" "$@" >"$work/$name.out" 2>"$work/$name.err"
  echo $? >"$work/$name.rc"
}
rc() { cat "$work/$1.rc"; }
logged() { grep -qF -- "$2" "$work/$1.err"; }
field() { grep -o "\"$1\": [^,]*" "$out/state.json" | head -1 | sed 's/.*: //'; }
# sfield KEY: a top-level field of the summary file
sfield() { grep -o "^  \"$1\": [^,]*" "$out/oracle-summary.json" | head -1 | sed 's/.*: //'; }
# agree: the summary and the state describe the same data (timestamp,
# protocol count, TVS, number of snapshots), as one batch commits them
agree() {
  [ -n "$(sfield timestamp)" ] && [ "$(sfield timestamp)" = "$(field last_updated)" ] &&
    [ "$(sfield protocol_count)" = "$(field last_protocol_count)" ] &&
    [ "$(sfield total_tvs)" = "$(field last_tvs)" ] &&
    [ "$(grep -c '"date": ' "$out/oracle-summary.json")" = "$(field snapshot_count)" ]
}

run first --input "$day1"
check "first run exits 0" '[ "$(rc first)" = 0 ]'
check "first run saves the state of 2024-11-24" \
  '[ "$(field last_updated)" = 1732406400 ] && [ "$(field last_updated_iso)" = "\"2024-11-24T00:00:00Z\"" ]'
check "first run saves protocol count, TVS and one snapshot" \
  '[ "$(field last_protocol_count)" = 12 ] && [ "$(field last_tvs)" = 2478000000.0 ] && [ "$(field snapshot_count)" = 1 ]'
check "first run logs the logfmt record of the save" \
  'logged first "level=info msg=\"state saved\" timestamp=1732406400 protocol_count=12 tvs=2478000000.0"'
check "first run writes the summary file" '[ -s "$out/oracle-summary.json" ]'
check "first run: the summary and the state, committed as one batch, agree" 'agree'
cp "$out/state.json" "$work/state.day1"
cp "$out/oracle-summary.json" "$work/summary.day1"

run again --input "$day1"
check "second run on the same data exits 0" '[ "$(rc again)" = 0 ]'
check "second run logs the skip with both timestamps" \
  'logged again "level=info msg=\"no new data, skipping extraction\" current_ts=1732406400 last_ts=1732406400"'
check "second run saves nothing" '! logged again "state saved"'
check "second run leaves state and summary byte-identical" \
  'cmp -s "$out/state.json" "$work/state.day1" && cmp -s "$out/oracle-summary.json" "$work/summary.day1"'
check "second run tells the user it skipped" 'grep -q "skipped" "$work/again.out"'

run debug --input "$day1" --log-level debug
check "debug level shows the state that was loaded" \
  'logged debug "msg=\"state loaded\"" && logged debug "oracle_name=Switchboard last_updated=1732406400"'

run newer --input "$day2"
check "newer data is processed (exit 0)" '[ "$(rc newer)" = 0 ]'
check "newer data moves the state to 2024-11-25 with two snapshots" \
  '[ "$(field last_updated)" = 1732492800 ] && [ "$(field snapshot_count)" = 2 ] && [ "$(field oldest_snapshot)" = 1732406400 ] && [ "$(field newest_snapshot)" = 1732492800 ]'
check "newer data logs the save" 'logged newer "msg=\"state saved\" timestamp=1732492800 protocol_count=13"'
check "newer data: the summary and the state agree (2024-11-25, two snapshots)" \
  'agree && [ "$(sfield timestamp)" = 1732492800 ]'

# A failure inside the batch, on its last file: a preloaded shim makes
# every fsync from the second on fail (EIO). The batch syncs the summary's
# temp file, then fails on the state's, before any rename. The run exits 1
# naming the state file and the reason, and the summary and the state are
# both the previous run's, byte for byte (two separate saves would have
# left a new summary beside an old state), with no temp file left; the
# next healthy run processes the data.
if [ -z "${FAIL_SYNC_SHIM:-}" ] || [ ! -f "$FAIL_SYNC_SHIM" ]; then
  skip "a failure in the batch: FAIL_SYNC_SHIM (tests/support/fail_sync.cpp, built by Meson) is not set"
else
  saved_out=$out
  out=$work/out-eio
  run eio-first --input "$day1"
  cp "$out/state.json" "$work/eio.state" && cp "$out/oracle-summary.json" "$work/eio.summary"
  # ASan wants its runtime first among the libraries; the shim comes first.
  LD_PRELOAD=$FAIL_SYNC_SHIM FAIL_SYNC_FROM=2 \
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
    run eio --input "$day2"
  check "a failing fsync on the batch's last file: exit 1, the message names the sync, the state file and EIO" \
    '[ "$(rc eio-first)" = 0 ] && [ "$(rc eio)" = 1 ] && grep -q "^oracle-collector: save state with its batch: sync file .*state.json.*Input/output error" "$work/eio.err" && ! logged eio "state saved"'
  check "a failing fsync in the batch: summary and state both left as they were, no temp file" \
    'cmp -s "$out/state.json" "$work/eio.state" && cmp -s "$out/oracle-summary.json" "$work/eio.summary" && [ -z "$(find "$out" -name ".tmp-*")" ]'
  run eio-after --input "$day2"
  check "after the failure, the next run processes the data; summary and state agree" \
    '[ "$(rc eio-after)" = 0 ] && [ "$(field last_updated)" = 1732492800 ] && agree'
  out=$saved_out
fi

cp "$out/state.json" "$work/state.day2"
run older --input "$day1"
check "older data warns of clock skew and exits 0" \
  '[ "$(rc older)" = 0 ] && logged older "level=warn msg=\"clock skew detected, API timestamp older than last processed\" current_ts=1732406400 last_ts=1732492800"'
check "older data leaves the state alone" 'cmp -s "$out/state.json" "$work/state.day2"'

printf '{"oracle_name": "Switchboard", "last_upd' >"$out/state.json"
run corrupt --input "$day1"
check "a truncated state file is reported, then treated as a first run" \
  '[ "$(rc corrupt)" = 0 ] && logged corrupt "level=warn msg=\"state file corrupted, treating as first run\"" && [ "$(field last_updated)" = 1732406400 ]'
aside=$(find "$out" -name 'state.json.corrupt-*')
check "the truncated file is kept aside, byte for byte, and the warning names it" \
  '[ -f "$aside" ] && [ "$(cat "$aside")" = "{\"oracle_name\": \"Switchboard\", \"last_upd" ] && logged corrupt "copied_to=$aside"'
check "a truncated state file: the run says on stdout that it was corrupt, and where its copy is" \
  'grep -qF "$out/state.json was corrupt; its bytes are kept in $aside" "$work/corrupt.out"'

# --on-corrupt fail: a corrupt state is an error for the operator, not a
# first run: nothing is processed, the file stays as it is, no copy is made.
mkdir "$work/out-strict"
printf '{"oracle_name": "Switchboard", "last_upd' >"$work/out-strict/state.json"
cp "$work/out-strict/state.json" "$work/state.strict"
"$collector" --output-dir "$work/out-strict" --input "$day1" --on-corrupt fail \
  >"$work/strict.out" 2>"$work/strict.err"
echo $? >"$work/strict.rc"
check "--on-corrupt fail: a truncated state file is an error (exit 1) naming it, left byte-identical, no copy, nothing written" \
  '[ "$(rc strict)" = 1 ] && grep -q "^oracle-collector: .*out-strict/state.json.*corrupt" "$work/strict.err" && cmp -s "$work/out-strict/state.json" "$work/state.strict" && [ -z "$(find "$work/out-strict" -name "state.json.corrupt-*")" ] && [ ! -e "$work/out-strict/oracle-summary.json" ]'

printf 'not json' >"$work/bad-input.json"
cp "$out/state.json" "$work/state.before-bad"
run badinput --input "$work/bad-input.json"
check "unparsable input exits 1 with one error line and keeps the state" \
  '[ "$(rc badinput)" = 1 ] && grep -q "^oracle-collector: .*bad-input.json" "$work/badinput.err" && cmp -s "$out/state.json" "$work/state.before-bad"'

run missing --input "$work/no-such-file.json"
check "a missing input exits 1" '[ "$(rc missing)" = 1 ] && grep -q "cannot open" "$work/missing.err"'

run usage --log-level loud
check "a bad option value is a usage error (exit 2)" '[ "$(rc usage)" = 2 ]'
run usage-hold --hold-ms soon
run usage-hold-big --hold-ms 99999999999999999999
run usage-corrupt --on-corrupt ignore
check "a bad --hold-ms or --on-corrupt value is a usage error (exit 2), and --help lists both" \
  '[ "$(rc usage-hold)" = 2 ] && [ "$(rc usage-hold-big)" = 2 ] && [ "$(rc usage-corrupt)" = 2 ] && "$collector" --help | grep -q -- "--hold-ms MS" && "$collector" --help | grep -q -- "--on-corrupt recover|fail"'

mkdir "$work/dir-state" && mkdir "$work/dir-state/state.json"
"$collector" --output-dir "$work/dir-state" --input "$day1" >/dev/null 2>"$work/dirstate.err"
dir_rc=$?
check "a state path that is a directory is an error, not a first run" \
  '[ $dir_rc -eq 1 ] && grep -q "state.json" "$work/dirstate.err" && [ -d "$work/dir-state/state.json" ]'

# --- One run at a time: the run lock ----------------------------------------
# A timer may start a run while the last one is still at work (a slow fetch:
# --hold-ms here). The collector takes the state's run lock first; a run that
# finds it held logs at info that another run is in progress, naming the
# holder, and exits 0 without loading or processing anything. --hold-ms
# pauses a run between its load and its save, where a fetch would be: runs
# without the lock would all load the old state there, and all process.

# wait_for_holder PID DIR: whether PID wrote itself into DIR's lock file
# (the holder's pid, padded with spaces) within 10 s
wait_for_holder() {
  local i
  for i in $(seq 200); do
    grep -qs "^$1 " "$2/.state.json.lock" && return 0
    sleep 0.05
  done
  return 1
}

# Eight runs started together on the same new data, in a directory that
# does not exist yet: one processes it, the others skip.
par=$work/out-parallel
pids=()
for i in 1 2 3 4 5 6 7 8; do
  "$collector" --output-dir "$par" --input "$day1" --hold-ms 1000 \
    >"$work/par$i.out" 2>"$work/par$i.err" &
  pids+=($!)
done
par_rcs=""
for pid in "${pids[@]}"; do wait "$pid"; par_rcs+="$? "; done
winner="" locked_out=0 others_skipped=yes
for i in 1 2 3 4 5 6 7 8; do
  grep -qF 'msg="state saved"' "$work/par$i.err" && winner=${pids[i - 1]}
done
for i in 1 2 3 4 5 6 7 8; do
  [ "${pids[i - 1]}" = "$winner" ] && continue
  if grep -qF 'level=info msg="another run is in progress"' "$work/par$i.err" &&
     grep -qF "holder=\"held by pid $winner\"" "$work/par$i.err" &&
     grep -qF "another run is in progress" "$work/par$i.out"; then
    locked_out=$((locked_out + 1))
  elif ! grep -qF 'msg="no new data, skipping extraction"' "$work/par$i.err"; then
    others_skipped=no
  fi
done
check "8 overlapping runs on the same new data: all exit 0" '[ "$par_rcs" = "0 0 0 0 0 0 0 0 " ]'
check "8 overlapping runs: the data is processed exactly once (one \"state saved\", one summary written)" \
  '[ "$(cat "$work"/par?.err | grep -cF "msg=\"state saved\"")" = 1 ] && [ "$(cat "$work"/par?.out | grep -c "^  wrote ")" = 1 ] && grep -q "\"last_updated\": 1732406400," "$par/state.json"'
check "8 overlapping runs: each other run found the lock held (info, naming the holder's pid) or no new data after it" \
  '[ -n "$winner" ] && [ $locked_out -ge 1 ] && [ $others_skipped = yes ]'

# A run while another holds the lock, then the next one after it.
held=$work/out-held
(umask 000 && exec "$collector" --output-dir "$held" --input "$day1" --hold-ms 2000 \
  >"$work/holder.out" 2>"$work/holder.err") &
holder=$!
wait_for_holder $holder "$held"
out=$held
run busy --input "$day1"
check "a run while another holds the lock: exit 0, info log naming the holder's pid and the lock file" \
  '[ "$(rc busy)" = 0 ] && logged busy "level=info msg=\"another run is in progress\"" && logged busy "holder=\"held by pid $holder\"" && logged busy "lock=$held/.state.json.lock"'
check "a run while another holds the lock: nothing loaded or saved, the user told it skipped" \
  '! logged busy "state saved" && ! logged busy "treating as first run" && grep -q "another run is in progress.*skipped" "$work/busy.out"'
wait $holder
holder_rc=$?
check "the holder, undisturbed, processes the data (exit 0, state saved)" \
  '[ $holder_rc = 0 ] && grep -qF "msg=\"state saved\"" "$work/holder.err"'
run after --input "$day1"
check "after the holder ends, the next run takes the lock (and finds no new data)" \
  '[ "$(rc after)" = 0 ] && logged after "msg=\"no new data, skipping extraction\"" && ! logged after "another run"'
check "the lock file is .state.json.lock in the output directory, mode 0600 under umask 000" \
  '[ -f "$held/.state.json.lock" ] && [ "$(stat -c %a "$held/.state.json.lock")" = 600 ]'

# A holder killed with SIGKILL: the kernel releases its lock.
killed=$work/out-killed
{  # stderr to /dev/null over the whole job: bash reports the kill ("Killed") there
  "$collector" --output-dir "$killed" --input "$day1" --hold-ms 20000 >/dev/null &
  victim=$!
  wait_for_holder $victim "$killed" && kill -9 $victim
  wait $victim
  victim_rc=$?
} 2>/dev/null
out=$killed
run afterkill --input "$day1"
check "a holder killed by SIGKILL blocks no one: the next run takes the lock and processes the data" \
  '[ $victim_rc = 137 ] && [ "$(rc afterkill)" = 0 ] && logged afterkill "msg=\"state saved\"" && ! logged afterkill "another run"'

# An output directory the user cannot write: taking the lock proves it
# before any work (root writes anywhere, so the run is uid 65534's).
if ! command -v setpriv >/dev/null; then
  skip "an unwritable output directory: setpriv is not installed"
elif ! setpriv --reuid 65534 --regid 65534 --clear-groups true 2>/dev/null; then
  skip "an unwritable output directory: setpriv cannot switch to uid 65534 here"
else
  chmod 0711 "$work"  # uid 65534 passes through to the directory
  ro=$work/readonly
  mkdir -m 0755 "$ro"
  setpriv --reuid 65534 --regid 65534 --clear-groups \
    "$collector" --output-dir "$ro" --input "$day1" >"$work/ro.out" 2>"$work/ro.err"
  echo $? >"$work/ro.rc"
  check "an output directory uid 65534 cannot write: exit 1 before any work, naming the directory" \
    '[ "$(rc ro)" = 1 ] && grep -q "^oracle-collector: .*$ro.*not writable" "$work/ro.err" && ! logged ro "first run" && [ -z "$(ls -A "$ro")" ] && [ ! -s "$work/ro.out" ]'
fi

# --- Text from data reaches the terminal escaped ----------------------------
# raw_controls FILE...: whether the files hold anything a terminal acts on
# rather than shows: a C0 control but newline (ESC, BEL, CR, backspace, NUL),
# DEL, the byte 0x9b (a one-byte CSI), a C1 control in UTF-8 (C2 80-9F), a
# bidi embedding, override or isolate (U+202A-U+202E, U+2066-U+2069) or a
# line or paragraph separator (U+2028, U+2029).
raw_controls() {
  LC_ALL=C grep -qaP '[\x00-\x09\x0b-\x1f\x7f\x9b]|\xc2[\x80-\x9f]|\xe2\x80[\xa8-\xae]|\xe2\x81[\xa6-\xa9]' "$@"
}
shows() { grep -qF -- "$2" "$work/$1.out"; }

# Names that are commands: OSC 0 (ended by BEL) sets the window title, ESC [2J
# clears the screen, CR and backspace overwrite the line, U+009B is the C1
# CSI (bytes C2 9B), U+202E reverses the text after it; a NUL, U+2066, the
# separators U+2028 and U+2029, and a name with a backslash of its own.
cat >"$work/hostile.json" <<'EOF'
{"timestamp": 1732406400, "oraclesTVS": {"Evil\u001b]0;pwned\u0007": {
  "Sol\u001b[2Jana\r": {"Drift\u009b31m Trade": 5000000, "Kamino \u202eLend\b": 3000000},
  "Sui\u2028\u2029": {"Scallop\u2066 Lend\u0000": 1000},
  "Core\\x1b": {"Colend": 500}}}}
EOF
out=$work/out-hostile
run hostile --input "$work/hostile.json" --oracle $'Evil\e]0;pwned\a'
check "hostile names: processed (exit 0)" '[ "$(rc hostile)" = 0 ]'
check "hostile names: no ESC, BEL, CR, 0x9b, C1, bidi or separator reaches stdout or stderr" \
  '! raw_controls "$work/hostile.out" "$work/hostile.err"'
check "hostile names: oracle and chain names shown escaped (\x1b, \x07, \x0d, \u2028)" \
  'shows hostile '\''Evil\x1b]0;pwned\x07 oracle'\'' && shows hostile '\''Sol\x1b[2Jana\x0d $8.0M'\'' && shows hostile '\''Sui\u2028\u2029 $1.0K'\'''
check "hostile names: protocol names shown escaped (\u009b, \u202e, \x08, \u2066, \x00)" \
  'shows hostile '\''Drift\u009b31m Trade $5.0M'\'' && shows hostile '\''Kamino \u202eLend\x08 $3.0M'\'' && shows hostile '\''Scallop\u2066 Lend\x00 $1.0K'\'''
check "hostile names: a backslash in a name is doubled, so it reads apart from an escape" \
  'shows hostile '\''Core\\x1b $500'\'''
run hostile-again --input "$work/hostile.json" --oracle $'Evil\e]0;pwned\a'
check "hostile names: the skip message shows the oracle name escaped" \
  '[ "$(rc hostile-again)" = 0 ] && shows hostile-again '\''Evil\x1b]0;pwned\x07 oracle: nothing newer'\'' && ! raw_controls "$work/hostile-again.out" "$work/hostile-again.err"'

# The state file's own text: the skip message quotes last_updated_iso.
mkdir "$work/out-iso"
cat >"$work/out-iso/state.json" <<'EOF'
{"oracle_name": "Switchboard", "last_updated": 1732406400, "last_updated_iso": "\u001b]0;owned\u0007\u001b[2J\r\u009b2K\u202e", "last_protocol_count": 12, "last_tvs": 2478000000, "snapshot_count": 1, "oldest_snapshot": 1732406400, "newest_snapshot": 1732406400}
EOF
cp "$work/out-iso/state.json" "$work/state.iso"
out=$work/out-iso
run iso --input "$day1"
check "escape sequences in last_updated_iso: skipped (exit 0), state byte-identical" \
  '[ "$(rc iso)" = 0 ] && cmp -s "$out/state.json" "$work/state.iso"'
check "escape sequences in last_updated_iso: none reaches stdout or stderr" \
  '! raw_controls "$work/iso.out" "$work/iso.err"'
check "escape sequences in last_updated_iso: shown escaped in the skip message" \
  'shows iso '\''nothing newer than \x1b]0;owned\x07\x1b[2J\x0d\u009b2K\u202e, which'\'''

# Error messages quote names too; invalid UTF-8 shows as \xNN.
out=$work/out-errors
run badoracle --input "$day1" --oracle $'No\xff\e[2J\xc3'
check "an unknown oracle name with ESC and invalid UTF-8: exit 1, quoted escaped" \
  '[ "$(rc badoracle)" = 1 ] && grep -qF '\''oracle "No\xff\x1b[2J\xc3"'\'' "$work/badoracle.err" && ! raw_controls "$work/badoracle.err" "$work/badoracle.out"'
run badusage $'--\e]0;title\a'
check "an unknown option with an escape sequence: exit 2, quoted escaped" \
  '[ "$(rc badusage)" = 2 ] && grep -qF '\''unknown argument --\x1b]0;title\x07'\'' "$work/badusage.err" && ! raw_controls "$work/badusage.err"'
printf '{"timestamp": 1732406400, "oraclesTVS": {"Switchboard": {"Bad\\u001b[2J\\u0007": 5}}}' \
  >"$work/badchain.json"
run badchain --input "$work/badchain.json"
check "a chain that is not an object, its name an escape sequence: exit 1, quoted escaped" \
  '[ "$(rc badchain)" = 1 ] && grep -qF '\''chain "Bad\x1b[2J\x07" is not an object'\'' "$work/badchain.err" && ! raw_controls "$work/badchain.err"'
printf '{"timestamp": 1732406400, "oraclesTVS": {"Switchboard": {"Solana": {"Bad\\u202e": "x"}}}}' \
  >"$work/badtvs.json"
run badtvs --input "$work/badtvs.json"
check "a TVS that is not a number, its protocol name with U+202E: exit 1, quoted escaped" \
  '[ "$(rc badtvs)" = 1 ] && grep -qF '\''"Bad\u202e" is not a number'\'' "$work/badtvs.err" && ! raw_controls "$work/badtvs.err"'

# --- Figures of every size, with a unit ------------------------------------
# 1e80 would print as 81 digits; 4.2e12 as "$4200.00B"; 999960 as "$1000.0K".
cat >"$work/sizes.json" <<'EOF'
{"timestamp": 1732406400, "oraclesTVS": {"Switchboard": {
  "A": {"Huge": 1e80}, "B": {"Refund": -1500000}, "C": {"Idle": 0},
  "D": {"Mid": 4.2e12}, "E": {"Edge": 999960}, "F": {"Tiny": 999.7}}}}
EOF
out=$work/out-sizes
run sizes --input "$work/sizes.json"
check "1e80: processed (exit 0), the total printed as \$1.00e80" \
  '[ "$(rc sizes)" = 0 ] && grep -qxF "  total TVS   \$1.00e80" "$work/sizes.out"'
check "by chain: T, M rounded up from 999.96K, K rounded up from 999.7, zero, negative" \
  'shows sizes "A \$1.00e80, D \$4.20T, E \$1.0M, F \$1.0K, C \$0, B -\$1.5M"'
# odd_amounts FILE: the dollar amounts in FILE that are not at most three
# digits, two decimals and a unit (at most 10 characters: "-$999.99T")
odd_amounts() {
  grep -oE -- '-?\$[^ ,]*' "$1" | grep -vxE -- '-?\$[0-9]{1,3}(\.[0-9]{1,2})?([KMBT]|e[0-9]{1,3})?'
}
check "every amount printed is short, with a unit past 999" '[ -z "$(odd_amounts "$work/sizes.out")" ]'

# Finite figures whose sums are not: a protocol in two chains (its total
# is infinite though the grand total is not), and a grand total.
printf '{"timestamp": 1732406400, "oraclesTVS": {"Switchboard": {"A": {"p": 1e308}, "C": {"q": -1e308}, "B": {"p": 1e308}, "D": {"q": -1e308}}}}' \
  >"$work/inf-protocol.json"
printf '{"timestamp": 1732406400, "oraclesTVS": {"Switchboard": {"A": {"p": 1e308}, "B": {"q": 1e308}}}}' \
  >"$work/inf-total.json"
out=$work/out-inf
run infprotocol --input "$work/inf-protocol.json"
run inftotal --input "$work/inf-total.json"
check "TVS sums beyond a double are refused (exit 1), with a message that says so, nothing written" \
  '[ "$(rc infprotocol)" = 1 ] && [ "$(rc inftotal)" = 1 ] && grep -q "add up to more than a double can hold" "$work/infprotocol.err" && grep -q "add up to more than a double can hold" "$work/inftotal.err" && [ ! -e "$out/state.json" ] && [ ! -e "$out/oracle-summary.json" ]'

# --- Timestamps and slots at the end of int64 and uint64 -------------------
# Each example adds to numbers it loaded: custom-state 1 to last_slot,
# with-jsonlines and with-spdlog 3600 s to last_updated. At the largest
# value, or close enough that the sum would overflow (undefined behaviour
# for an int64, which the sanitizer build stops at; a wrap to 0 for a
# uint64), the program must say that no later value fits, exit 1 and leave
# the state file byte for byte; just below, it must go on to the largest.
max=9223372036854775807
umax=18446744073709551615
# example NAME PROGRAM DIR [ARGS...]: runs PROGRAM on DIR; stdout, stderr,
# status in $work/NAME.*
example() { "$2" "$3" "${@:4}" >"$work/$1.out" 2>"$work/$1.err"; echo $? >"$work/$1.rc"; }
# plant NAME DIR TEXT: writes TEXT as DIR's state file, and a copy aside
plant() {
  mkdir -p "$2" && printf '%s\n' "$3" >"$2/state.json" && cp "$2/state.json" "$work/$1.planted"
}
# unchanged NAME DIR: DIR's state file is still what was planted
unchanged() { cmp -s "$2/state.json" "$work/$1.planted"; }
# out_of_int64 NAME WHAT: the run exited 1 saying that nothing fits after
# WHAT ("round=9223372036854775807"), and no sanitizer reported anything
out_of_int64() {
  [ "$(rc "$1")" = 1 ] && grep -qF -- "$2" "$work/$1.err" &&
    grep -q "does not fit in an int64" "$work/$1.err" && ! grep -q "runtime error" "$work/$1.err"
}
# custom-state keeps the last slot it processed, a std::optional<uint64_t>:
# empty means none yet, so slot 0 is a slot like any other. Without SLOT it
# processes the slot after the last one (0 on a first run); with SLOT, that
# one if it is newer.
slots=$work/slots
example slot-first "$custom" "$slots"
example slot-next "$custom" "$slots"
check "custom-state: a first run processes slot 0, the next run slot 1 (0 is a slot, not 'never')" \
  '[ "$(rc slot-first)" = 0 ] && [ "$(rc slot-next)" = 0 ] && grep -q "^solana slot 0 processed" "$work/slot-first.out" && grep -q "^solana slot 1 processed" "$work/slot-next.out"'
check "custom-state: its file, from the field table: schema_version first, then chain and last_slot" \
  '[ "$(cat "$slots/state.json")" = "$(printf '\''{\n  "schema_version": 1,\n  "chain": "solana",\n  "last_slot": 1\n}'\'')" ]'
check "custom-state: the second run finds slot 1 past slot 0 through StateTraits::cursor" \
  'grep -qF "msg=\"new data available\" current=1 last=0" "$work/slot-next.err"'
cp "$slots/state.json" "$work/slots.before"
example slot-same "$custom" "$slots" 1
check "custom-state: slot 1 again is skipped (exit 0), the file byte-identical" \
  '[ "$(rc slot-same)" = 0 ] && grep -qF "level=info msg=\"no new data, skipping extraction\" current=1 last=1" "$work/slot-same.err" && cmp -s "$slots/state.json" "$work/slots.before"'
example slot-older "$custom" "$slots" 0
check "custom-state: an older slot warns that the cursor went backwards (exit 0), the file byte-identical" \
  '[ "$(rc slot-older)" = 0 ] && grep -qF "level=warn msg=\"cursor went backwards, data older than last processed\" current=0 last=1" "$work/slot-older.err" && cmp -s "$slots/state.json" "$work/slots.before"'
bad_slots=0
for bad in -1 18446744073709551616 12x "" " 3"; do
  example slot-bad "$custom" "$work/slots-bad" "$bad"
  [ "$(rc slot-bad)" = 2 ] && grep -q "^usage: custom-state" "$work/slot-bad.err" || bad_slots=$((bad_slots + 1))
done
check "custom-state: a SLOT that is not a uint64 (-1, 2^64, 12x, empty, \" 3\") is a usage error (exit 2), nothing written" \
  '[ $bad_slots = 0 ] && [ ! -e "$work/slots-bad" ]'

slot_state() { printf '{"schema_version": 1, "chain": "solana", "last_slot": %s}' "$1"; }
# slot_file SLOT: the file custom-state saves after processing SLOT
slot_file() { printf '{\n  "schema_version": 1,\n  "chain": "solana",\n  "last_slot": %s\n}' "$1"; }
plant slot-big "$work/slot-big" "$(slot_state 18446744073709551000)"
example slot-big "$custom" "$work/slot-big"
example slot-big-again "$custom" "$work/slot-big"
check "custom-state: last_slot 18446744073709551000 (past 2^63) reads back exactly: the next runs process ...001, then ...002" \
  '[ "$(rc slot-big)" = 0 ] && grep -qF "current=18446744073709551001 last=18446744073709551000" "$work/slot-big.err" && [ "$(rc slot-big-again)" = 0 ] && grep -qF "current=18446744073709551002 last=18446744073709551001" "$work/slot-big-again.err" && [ "$(cat "$work/slot-big/state.json")" = "$(slot_file 18446744073709551002)" ]'
plant slot-max "$work/slot-max" "$(slot_state $umax)"
example slot-max "$custom" "$work/slot-max"
check "custom-state, last_slot $umax: no later slot, exit 1, state byte-identical" \
  '[ "$(rc slot-max)" = 1 ] && grep -qF "last_slot=$umax" "$work/slot-max.err" && grep -q "does not fit in a uint64" "$work/slot-max.err" && unchanged slot-max "$work/slot-max"'
plant slot-last "$work/slot-last" "$(slot_state 18446744073709551614)"
example slot-last "$custom" "$work/slot-last"
check "custom-state, last_slot UINT64_MAX-1: slot UINT64_MAX is processed and saved" \
  '[ "$(rc slot-last)" = 0 ] && [ "$(cat "$work/slot-last/state.json")" = "$(slot_file $umax)" ]'

# The file layout of an older custom-state: no schema_version, and the slot
# under "slot". StateTraits::upgrade renames it; without the upgrade the
# field table would ignore the key and take the file for a first run.
plant slot-old "$work/slot-old" '{"chain": "solana", "slot": 41}'
example slot-old "$custom" "$work/slot-old"
check "custom-state: an old-layout file (no schema_version, \"slot\": 41) is upgraded on load: slot 42 comes next" \
  '[ "$(rc slot-old)" = 0 ] && grep -qF "msg=\"new data available\" current=42 last=41" "$work/slot-old.err"'
check "custom-state: the upgraded state is saved in the new layout, schema_version first, no \"slot\" key" \
  '[ "$(cat "$work/slot-old/state.json")" = "$(slot_file 42)" ]'
# A file a newer program wrote: this one cannot know what it means.
plant slot-new "$work/slot-new" '{"schema_version": 2, "chain": "solana", "last_slot": 7, "finalized": 6}'
example slot-new "$custom" "$work/slot-new"
check "custom-state: a file of a newer schema_version (2) is refused: exit 1, saying so, byte-identical, no copy made" \
  '[ "$(rc slot-new)" = 1 ] && grep -q "schema_version 2 is newer than this program.s 1" "$work/slot-new.err" && unchanged slot-new "$work/slot-new" && [ "$(ls -A "$work/slot-new")" = state.json ]'

# sink_example NAME PROGRAM: a first run of with-jsonlines or with-spdlog,
# then the cases above for its last_updated
sink_example() {
  local name=$1 program=$2 at
  example "$name-first" "$program" "$work/$name-first"
  check "$name: a first run saves the state (exit 0)" \
    '[ "$(rc "$name-first")" = 0 ] && grep -q "\"last_updated\": 1732406400," "$work/$name-first/state.json"'
  for at in $max $((max - 1)); do
    plant "$name-$at" "$work/$name-$at" "$(state_at "$at")"
    example "$name-$at" "$program" "$work/$name-$at"
    check "$name, last_updated $at: no later time, exit 1, state byte-identical" \
      'out_of_int64 "$name-$at" "last_updated=$at" && unchanged "$name-$at" "$work/$name-$at"'
  done
  plant "$name-last" "$work/$name-last" "$(state_at $((max - 3600)))"
  example "$name-last" "$program" "$work/$name-last"
  check "$name, last_updated INT64_MAX-3600: INT64_MAX is saved" \
    '[ "$(rc "$name-last")" = 0 ] && grep -q "\"last_updated\": $max," "$work/$name-last/state.json"'
}
state_at() {
  printf '{"oracle_name": "Switchboard", "last_updated": %s, "last_updated_iso": "", "last_protocol_count": 12, "last_tvs": 2478000000, "snapshot_count": 0, "oldest_snapshot": 0, "newest_snapshot": 0}' "$1"
}
sink_example with-jsonlines "$jsonlines"
if [ -n "$spdlog" ]; then
  sink_example with-spdlog "$spdlog"
else
  echo "skip - with-spdlog: not built here (libspdlog-dev is not installed)"
fi

# The single-instance idiom: flock(1) holds the state directory while the
# collector runs in it. No save may wait on a lock someone else can take, so
# the run must finish (a watchdog ends a hang in 20 s, as a failure).
locked=$work/locked
mkdir -p "$locked"
timeout 20 flock -n "$locked" "$collector" --output-dir "$locked" --input "$day1" \
  >"$work/locked.out" 2>"$work/locked.err"
echo $? >"$work/locked.rc"
check "flock -n DIR oracle-collector --output-dir DIR saves, never waiting on the lock" \
  '[ "$(cat "$work/locked.rc")" = 0 ] && grep -q "\"last_updated\": 1732406400," "$locked/state.json"'

check "no temp files are left anywhere" '[ -z "$(find "$work" -name ".tmp-*" -print -quit)" ]'

echo "$failures failed"
[ "$failures" -eq 0 ]
