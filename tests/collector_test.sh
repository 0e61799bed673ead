#!/usr/bin/env bash
# The demo programs as real processes, run the way a timer runs a collector:
# first run, a rerun on the same data (skipped), newer data, older data, a
# corrupt state file, bad input and bad usage. Also the custom-state example.
# Usage: collector_test.sh PATH/TO/oracle-collector PATH/TO/custom-state DATA_DIR
set -u
collector=$1
custom=$2
data=$3
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

run first --input "$day1"
check "first run exits 0" '[ "$(rc first)" = 0 ]'
check "first run saves the state of 2024-11-24" \
  '[ "$(field last_updated)" = 1732406400 ] && [ "$(field last_updated_iso)" = "\"2024-11-24T00:00:00Z\"" ]'
check "first run saves protocol count, TVS and one snapshot" \
  '[ "$(field last_protocol_count)" = 12 ] && [ "$(field last_tvs)" = 2478000000.0 ] && [ "$(field snapshot_count)" = 1 ]'
check "first run logs the logfmt record of the save" \
  'logged first "level=info msg=\"state saved\" timestamp=1732406400 protocol_count=12 tvs=2478000000.0"'
check "first run writes the summary file" '[ -s "$out/oracle-summary.json" ]'
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

printf 'not json' >"$work/bad-input.json"
cp "$out/state.json" "$work/state.before-bad"
run badinput --input "$work/bad-input.json"
check "unparsable input exits 1 with one error line and keeps the state" \
  '[ "$(rc badinput)" = 1 ] && grep -q "^oracle-collector: .*bad-input.json" "$work/badinput.err" && cmp -s "$out/state.json" "$work/state.before-bad"'

run missing --input "$work/no-such-file.json"
check "a missing input exits 1" '[ "$(rc missing)" = 1 ] && grep -q "cannot open" "$work/missing.err"'

run usage --log-level loud
check "a bad option value is a usage error (exit 2)" '[ "$(rc usage)" = 2 ]'

mkdir "$work/dir-state" && mkdir "$work/dir-state/state.json"
"$collector" --output-dir "$work/dir-state" --input "$day1" >/dev/null 2>"$work/dirstate.err"
dir_rc=$?
check "a state path that is a directory is an error, not a first run" \
  '[ $dir_rc -eq 1 ] && grep -q "state.json" "$work/dirstate.err" && [ -d "$work/dir-state/state.json" ]'

"$custom" "$work/feed" >"$work/custom1.out" 2>"$work/custom1.err"; rc1=$?
"$custom" "$work/feed" >"$work/custom2.out" 2>"$work/custom2.err"; rc2=$?
check "custom-state example: two runs, rounds 1 then 2" \
  '[ $rc1 = 0 ] && [ $rc2 = 0 ] && grep -q "round 1 " "$work/custom1.out" && grep -q "round 2 " "$work/custom2.out"'
check "custom-state example: its own JSON shape on disk" \
  'grep -q "\"feed\": \"SOL/USD\"" "$work/feed/state.json" && grep -q "\"round\": 2" "$work/feed/state.json"'
check "custom-state example: second run finds new data through StateTraits" \
  'grep -q "msg=\"new data available\" current_ts=1732406460 last_ts=1732406400 delta_seconds=60" "$work/custom2.err"'

check "no temp files are left anywhere" '[ -z "$(find "$work" -name ".tmp-*" -print -quit)" ]'

echo "$failures failed"
[ "$failures" -eq 0 ]
