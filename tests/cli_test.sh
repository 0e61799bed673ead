#!/usr/bin/env bash
# atomic-write as a real process: content, modes, sync levels, exit statuses
# and the one-line errors. Usage: cli_test.sh PATH/TO/atomic-write
set -u
tool=$(realpath "$1")  # the checks of FILE operands run elsewhere
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
check "failure prints one line naming step, path, target and reason" \
  '[ "$err" = "atomic-write: open directory $work/blocker for $work/blocker/f: Not a directory" ]'

# A target that is not a regular file is refused before the transaction
# begins: as root, renaming over /dev/null would turn it into a regular file.
# refuse NAME WHAT: exit 1, one line naming FILE and what it is, the entry
# (and what a symlink points to) kept with the same inode, and its directory
# not modified since an old mtime set here, so no temp file was ever created.
special=$work/special
mkdir "$special"
refuse() {
  local path=$special/$1 what=$2 before after err rc
  before=$(stat -c '%F %i' "$path"; stat -L -c '%F %i' "$path")
  touch -d @0 "$special"
  err=$(printf 'new' | "$tool" "$path" 2>&1 >/dev/null); rc=$?
  after=$(stat -c '%F %i' "$path"; stat -L -c '%F %i' "$path")
  check "refuses $what (exit 1) before creating a temp file, and leaves it as it was" \
    '[ $rc -eq 1 ] && [ "$before" = "$after" ] && [ "$(stat -c %Y "$special")" = 0 ] && no_temps'
  check "refusing $what prints one line naming FILE and what it is" \
    '[ "$err" = "atomic-write: $path is $what, not a regular file; nothing was written" ]'
}
if mknod "$special/null" c 1 3 2>/dev/null; then
  refuse null "a character device"
else
  skip "refuses a character device: mknod failed (not root, or nodev)"
fi
if mknod "$special/loop" b 7 0 2>/dev/null; then
  refuse loop "a block device"
else
  skip "refuses a block device: mknod failed (not root, or nodev)"
fi
mkfifo "$special/fifo"
refuse fifo "a FIFO"
ln -s fifo "$special/fifo-link"
refuse fifo-link "a symlink to a FIFO"
if python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' \
    "$special/socket" 2>/dev/null; then
  refuse socket "a socket"
else
  skip "refuses a socket: python3 could not bind a Unix socket"
fi
mkdir "$special/dir"
refuse dir "a directory"

# A symlink to a regular file is replaced by the new file, as the library
# documents; what it pointed to is not written through.
printf 'old' > "$work/pointee"
ln -s pointee "$work/link"
printf 'new' | "$tool" "$work/link"; rc=$?
check "a symlink to a regular file is replaced by a regular file" \
  '[ $rc -eq 0 ] && [ ! -L "$work/link" ] && [ "$(cat "$work/link")" = new ] && [ "$(cat "$work/pointee")" = old ]'

# A mode is 1 to 5 octal digits, 0 to 7777, and nothing else: strtoul took
# a sign and spaces, and wrapped -1777777777777777777777 round to 0001.
for bad in -1 -1777777777777777777777 -1777777777777777776000 +644 " 644" 10000 9999 \
    000644 0x1ff 0o644 8 "" 0644x; do
  err=$("$tool" --mode "$bad" "$work/x" 2>&1 </dev/null); rc=$?
  check "--mode \"$bad\" is a usage error (exit 2) naming the value" \
    '[ $rc -eq 2 ] && [[ "$(head -n 1 <<<"$err")" == "atomic-write: --mode"*": \"$bad\"" ]] && [ ! -e "$work/x" ]'
  rm -f "$work/x"  # so the next check is its own
done
for good in 0:0 644:644 0644:644 7777:7777 00644:644; do
  rm -f "$work/m"
  printf 'm' | "$tool" --mode "${good%:*}" "$work/m"; rc=$?
  check "--mode ${good%:*} gives mode ${good#*:}" '[ $rc -eq 0 ] && [ "$(stat -c %a "$work/m")" = "${good#*:}" ]'
done
err=$("$tool" --sync sometimes "$work/x" 2>&1 </dev/null); rc=$?
check "a bad sync level is a usage error (exit 2)" '[ $rc -eq 2 ] && [ ! -e "$work/x" ]'
"$tool" </dev/null >/dev/null 2>&1; rc=$?
check "a missing FILE is a usage error (exit 2)" '[ $rc -eq 2 ]'
"$tool" --bogus "$work/x" </dev/null >/dev/null 2>&1; rc=$?
check "an unknown option is a usage error (exit 2)" '[ $rc -eq 2 ]'
# Exactly one FILE: after "--" every argument is one, options included.
# operands ARG...: runs atomic-write ARG... in an empty directory, sets rc
# and lists in $made what it created there.
operands() {
  rm -rf "$work/ops" && mkdir "$work/ops"
  (cd "$work/ops" && printf 'x' | "$tool" "$@" 2>/dev/null); rc=$?
  made=$(ls -A "$work/ops")
}
for args in "a -- b" "-- a b" "a b"; do
  # shellcheck disable=SC2086 # split on purpose
  operands $args
  check "\"$args\" is a usage error (exit 2) and writes nothing" '[ $rc -eq 2 ] && [ -z "$made" ]'
done
for args in "-- -weird-name" "-- --mode" "a --"; do
  # shellcheck disable=SC2086
  operands $args
  name=${args//-- /}; name=${name% --}
  check "\"$args\" writes the file $name" \
    '[ $rc -eq 0 ] && [ "$made" = "$name" ] && [ "$(cat "$work/ops/$name")" = x ]'
done

out=$("$tool" --help); rc=$?
check "--help prints usage and exits 0" '[ $rc -eq 0 ] && [[ "$out" == usage:* ]]'

# Standard input that fails to read (a directory) must not replace FILE.
printf 'untouched' > "$work/kept"
"$tool" "$work/kept" < "$work" 2>/dev/null; rc=$?
check "a read error exits 1 and keeps FILE" '[ $rc -eq 1 ] && [ "$(cat "$work/kept")" = untouched ] && no_temps'

# SIGINT, SIGTERM or SIGHUP while atomic-write waits for the rest of its
# input: it removes its temp file and dies of that signal, FILE untouched.
# env --default-signal undoes the SIG_IGN a non-interactive shell gives the
# SIGINT of a background job. The input is a FIFO held open by this shell.
# started_temp FILE waits up to 10 s for a temp file next to FILE holding
# bytes, so the signal lands mid-input rather than before begin().
started_temp() {
  for _ in $(seq 200); do
    [ -n "$(find "$(dirname "$1")" -maxdepth 1 -name '.tmp-*' -size +0c -print -quit)" ] && return 0
    sleep 0.05
  done
  return 1
}
printf 'old' > "$work/interrupted"
mkfifo "$work/input"
for sig in INT TERM HUP; do
  inode=$(stat -c %i "$work/interrupted")
  env --default-signal="$sig" "$tool" "$work/interrupted" < "$work/input" & pid=$!
  exec 3> "$work/input"
  printf 'partial' >&3
  started_temp "$work/interrupted"; started=$?
  kill -s "$sig" "$pid"
  wait "$pid" 2>/dev/null; rc=$?  # no "Hangup" job report
  exec 3>&-
  check "SIG$sig mid-input removes the temp file, dies of SIG$sig and keeps FILE" \
    '[ $started -eq 0 ] && [ $rc -eq $((128 + $(kill -l "$sig"))) ] && no_temps && [ "$(cat "$work/interrupted")" = old ] && [ "$(stat -c %i "$work/interrupted")" = "$inode" ]'
  find "$work" -name '.tmp-*' -delete  # so the next signal's check is its own
done

# A signal ignored when atomic-write starts (nohup) stays ignored: the run
# goes on and commits.
env --ignore-signal=HUP "$tool" "$work/interrupted" < "$work/input" & pid=$!
exec 3> "$work/input"
printf 'partial' >&3
started_temp "$work/interrupted"; started=$?
kill -s HUP "$pid"
sleep 0.2
# Were it dead, writing to the FIFO would kill this script with SIGPIPE.
if kill -0 "$pid" 2>/dev/null; then printf ' rest' >&3; fi
exec 3>&-
wait "$pid" 2>/dev/null; rc=$?
check "SIGHUP ignored on entry (nohup) stays ignored and the run commits" \
  '[ $started -eq 0 ] && [ $rc -eq 0 ] && [ "$(cat "$work/interrupted")" = "partial rest" ]'

check "no temp file is left anywhere" 'no_temps'
echo "cli: $failures failure(s)"
[ "$failures" -eq 0 ]
