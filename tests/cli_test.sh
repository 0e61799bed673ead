#!/usr/bin/env bash
# atomic-write as a real process: content, modes, sync levels, exit statuses
# and the one-line errors. Usage: cli_test.sh PATH/TO/atomic-write
set -u
tool=$1
. "$(dirname "$0")/support/checks.sh"
no_temps() { [ -z "$(find "$work" -name '.tmp-*' -print -quit)" ]; }

printf 'hello\n' | "$tool" "$work/a.txt"
check "writes standard input to FILE (exit 0)" '[ $? -eq 0 ] && [ "$(cat "$work/a.txt")" = hello ]'
check "default mode is 0644" '[ "$(stat -c %a "$work/a.txt")" = 644 ]'

printf 'secret' | "$tool" --mode 0600 "$work/b.txt"
check "--mode sets the exact mode" '[ "$(stat -c %a "$work/b.txt")" = 600 ]'

for level in full data none; do
  printf '%s' "$level" | "$tool" --sync "$level" "$work/sync-$level"
  check "--sync $level writes the data" '[ "$(cat "$work/sync-$level")" = "$level" ]'
done

printf '3\n1\n2\n' > "$work/list"
sort "$work/list" | "$tool" "$work/list"
check "sponge: a pipeline can rewrite its own input" '[ "$(cat "$work/list" | tr -d "\n")" = 123 ]'

head -c 3000000 /dev/urandom > "$work/big.src"
"$tool" "$work/big.out" < "$work/big.src"
check "input larger than the read buffer arrives intact" 'cmp -s "$work/big.src" "$work/big.out"'

"$tool" "$work/new/dir/c.txt" < /dev/null
check "creates missing directories and an empty file" '[ -f "$work/new/dir/c.txt" ] && [ ! -s "$work/new/dir/c.txt" ]'

printf 'keep' > "$work/blocker"
err=$(printf 'x' | "$tool" "$work/blocker/f" 2>&1 >/dev/null); rc=$?
check "failure exits 1" '[ $rc -eq 1 ]'
check "failure prints one line naming step, path and reason" \
  '[ "$err" = "atomic-write: open directory $work/blocker: Not a directory" ]'

printf 'old' > "$work/target"
mkdir "$work/target.d"
err=$(printf 'new' | "$tool" "$work/target.d" 2>&1 >/dev/null); rc=$?
check "a failed rename exits 1 and leaves no temp file" '[ $rc -eq 1 ] && no_temps'

err=$("$tool" --mode 9999 "$work/x" 2>&1 </dev/null); rc=$?
check "a bad mode is a usage error (exit 2)" '[ $rc -eq 2 ] && [[ "$err" == *"--mode"* ]] && [ ! -e "$work/x" ]'
err=$("$tool" --sync sometimes "$work/x" 2>&1 </dev/null); rc=$?
check "a bad sync level is a usage error (exit 2)" '[ $rc -eq 2 ] && [ ! -e "$work/x" ]'
"$tool" </dev/null >/dev/null 2>&1; rc=$?
check "a missing FILE is a usage error (exit 2)" '[ $rc -eq 2 ]'
"$tool" --bogus "$work/x" </dev/null >/dev/null 2>&1; rc=$?
check "an unknown option is a usage error (exit 2)" '[ $rc -eq 2 ]'
out=$("$tool" --help); rc=$?
check "--help prints usage and exits 0" '[ $rc -eq 0 ] && [[ "$out" == usage:* ]]'

# Standard input that fails to read (a directory) must not replace FILE.
printf 'untouched' > "$work/kept"
"$tool" "$work/kept" < "$work" 2>/dev/null; rc=$?
check "a read error exits 1 and keeps FILE" '[ $rc -eq 1 ] && [ "$(cat "$work/kept")" = untouched ] && no_temps'

check "no temp file is left anywhere" 'no_temps'
echo "cli: $failures failure(s)"
[ "$failures" -eq 0 ]
