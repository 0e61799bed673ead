#!/usr/bin/env bash
# atomic-write as a real process: content, modes kept and set, owners, sync
# levels, refusals of short input, exit statuses and the one-line errors.
# Usage: cli_test.sh PATH/TO/atomic-write [PATH/TO/fail-directory-fsync.so]
# The second program, preloaded, makes fsync of a directory fail: exit
# status 3. Without it, that check is skipped.
set -u
tool=$(realpath "$1")  # the checks of FILE operands run elsewhere
shim=${2:+$(realpath "$2")}
header=$(dirname "$0")/../atomic_state.hpp
. "$(dirname "$0")/support/checks.sh"
no_temps() { [ -z "$(find "$work" -name '.tmp-*' -print -quit)" ]; }
hint="Try 'atomic-write --help' for more information."

(umask 022 && printf 'hello\n' | "$tool" "$work/a.txt")
check "writes standard input to FILE (exit 0)" '[ $? -eq 0 ] && [ "$(cat "$work/a.txt")" = hello ]'
check "a new FILE under umask 022 is 0644" '[ "$(stat -c %a "$work/a.txt")" = 644 ]'

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

# ---- Missing directories are an error (a typo or an unmounted volume must
# not write to the wrong disk); -p/--parents makes them.
err=$(printf 'x' | "$tool" "$work/new/dir/c.txt" 2>&1); rc=$?
check "a missing parent directory is refused (exit 1) and nothing is created" \
  '[ $rc -eq 1 ] && [ ! -e "$work/new" ]'
check "the refusal is one line naming the directory and -p" \
  '[ "$err" = "atomic-write: open directory $work/new/dir for $work/new/dir/c.txt: No such file or directory (-p makes missing directories)" ]'
for parents in -p --parents; do
  rm -rf "$work/new"
  "$tool" "$parents" "$work/new/dir/c.txt" < /dev/null; rc=$?
  check "$parents creates missing directories and an empty file" \
    '[ $rc -eq 0 ] && [ -f "$work/new/dir/c.txt" ] && [ ! -s "$work/new/dir/c.txt" ]'
done

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

# A symlink at FILE is followed, as by every file tool: the file it leads
# to is replaced, in its own directory, and keeps its mode; the link stays.
# --no-follow replaces the link itself.
mkdir -p "$work/elsewhere"
printf 'old' > "$work/elsewhere/pointee" && chmod 600 "$work/elsewhere/pointee"
ln -s elsewhere/pointee "$work/link"
printf 'new' | "$tool" "$work/link"; rc=$?
check "a symlink to a regular file is followed: the file it leads to is replaced, mode kept, link kept" \
  '[ $rc -eq 0 ] && [ -L "$work/link" ] && [ "$(cat "$work/elsewhere/pointee")" = new ] && [ "$(stat -c %a "$work/elsewhere/pointee")" = 600 ] && [ "$(readlink "$work/link")" = elsewhere/pointee ] && no_temps'
ln -s link "$work/link-to-link"
printf 'newer' | "$tool" "$work/link-to-link"; rc=$?
check "a chain of symlinks is followed to the file" \
  '[ $rc -eq 0 ] && [ -L "$work/link-to-link" ] && [ "$(cat "$work/elsewhere/pointee")" = newer ]'
ln -s nowhere "$work/dangling"
err=$(printf 'new' | "$tool" "$work/dangling" 2>&1); rc=$?
check "a dangling symlink is refused (exit 1), nothing created" \
  '[ $rc -eq 1 ] && [ -L "$work/dangling" ] && [ ! -e "$work/nowhere" ] && [[ "$err" == "atomic-write: "*"$work/dangling"* ]] && no_temps'
# A symlink another user planted in a sticky, world-writable directory (as
# /tmp) is not followed, as the kernel's fs.protected_symlinks would not
# follow it, whatever that sysctl says here: `atomic-write /tmp/report`
# must not overwrite whatever another user's link there leads to.
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
  chmod 711 "$work"  # the other users must reach $work/psym
  mkdir -m 711 "$work/psym" && mkdir -m 1777 "$work/psym/sticky"
  printf 'precious' > "$work/psym/victim" && chmod 666 "$work/psym/victim"
  setpriv --reuid=65534 --regid=65534 --clear-groups ln -s "$work/psym/victim" "$work/psym/sticky/report"
  ln -s sticky/report "$work/psym/mine"
  for via in sticky/report mine; do
    err=$(printf 'new' | "$tool" "$work/psym/$via" 2>&1); rc=$?
    check "root does not follow another user's link in a sticky world-writable directory (via $via): exit 1, the file it leads to untouched" \
      '[ $rc -eq 1 ] && [ "$(cat "$work/psym/victim")" = precious ] && [ -L "$work/psym/sticky/report" ] && [ -z "$(find "$work/psym" -name ".tmp-*")" ]'
    check "the refusal (via $via) names the link and fs.protected_symlinks" \
      '[[ "$err" == "atomic-write: "*"$work/psym/sticky/report"*"fs.protected_symlinks"* ]]'
  done
  chmod 777 "$work/psym"  # where the user's temp file would go
  err=$(printf 'new' | setpriv --reuid=47013 --regid=47013 --clear-groups "$tool" "$work/psym/sticky/report" 2>&1); rc=$?
  check "a normal user does not follow another user's link there either" \
    '[ $rc -eq 1 ] && [ "$(cat "$work/psym/victim")" = precious ] && [[ "$err" == *"fs.protected_symlinks"* ]]'
  printf 'new' | setpriv --reuid=65534 --regid=65534 --clear-groups "$tool" "$work/psym/sticky/report"; rc=$?
  check "the link's owner follows it" '[ $rc -eq 0 ] && [ "$(cat "$work/psym/victim")" = new ] && [ -L "$work/psym/sticky/report" ]'
else
  skip "another user's link in a sticky directory is not followed: needs root and setpriv"
fi
(umask 022 && printf 'link' | "$tool" --no-follow "$work/link"); rc=$?
check "--no-follow replaces the symlink itself with a new file (0666 & ~umask), its target untouched" \
  '[ $rc -eq 0 ] && [ ! -L "$work/link" ] && [ "$(cat "$work/link")" = link ] && [ "$(stat -c %a "$work/link")" = 644 ] && [ "$(cat "$work/elsewhere/pointee")" = newer ]'

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
for args in "-- a b" "a b" "a --" "-- a --"; do
  # shellcheck disable=SC2086 # split on purpose
  operands $args
  check "\"$args\" is a usage error (exit 2) and writes nothing" '[ $rc -eq 2 ] && [ -z "$made" ]'
done
for args in "-- -weird-name" "-- --mode" "a"; do
  # shellcheck disable=SC2086
  operands $args
  name=${args//-- /}
  check "\"$args\" writes the file $name" \
    '[ $rc -eq 0 ] && [ "$made" = "$name" ] && [ "$(cat "$work/ops/$name")" = x ]'
done

out=$("$tool" --help); rc=$?
check "--help prints usage and exits 0" '[ $rc -eq 0 ] && [[ "$out" == usage:* ]]'

# ---- FILE keeps its mode; a new FILE gets 0644; --mode overrides.
# sponge and QSaveFile keep it: `sort -u secret | atomic-write secret` must
# not turn a 0600 file into 0644.
for mode in 600 444 640 2755; do
  printf 'old' > "$work/keep-$mode" && chmod "$mode" "$work/keep-$mode"
  printf 'new' | "$tool" "$work/keep-$mode"; rc=$?
  check "a $mode FILE is replaced and keeps mode $mode" \
    '[ $rc -eq 0 ] && [ "$(cat "$work/keep-$mode")" = new ] && [ "$(stat -c %a "$work/keep-$mode")" = "$mode" ]'
done
for mask in 022:644 077:600 002:664 000:666 027:640; do
  rm -f "$work/fresh"
  (umask "${mask%:*}" && printf 'x' | "$tool" "$work/fresh"); rc=$?
  check "a new FILE gets 0666 & ~umask: ${mask#*:} under umask ${mask%:*}" \
    '[ $rc -eq 0 ] && [ "$(stat -c %a "$work/fresh")" = "${mask#*:}" ]'
done
rm -f "$work/fresh"
(umask 077 && printf 'x' | "$tool" --mode 0644 "$work/fresh"); rc=$?
check "--mode overrides the umask for a new FILE" '[ $rc -eq 0 ] && [ "$(stat -c %a "$work/fresh")" = 644 ]' 
for spelling in "--mode 0640" "--mode=0640"; do
  printf 'old' > "$work/override" && chmod 600 "$work/override"
  # shellcheck disable=SC2086 # split on purpose
  printf 'new' | "$tool" $spelling "$work/override"; rc=$?
  check "$spelling overrides the mode FILE had (0600 becomes 0640)" \
    '[ $rc -eq 0 ] && [ "$(stat -c %a "$work/override")" = 640 ] && [ "$(cat "$work/override")" = new ]'
done
# --no-follow: a symlink has no mode of its own to keep.
printf 'old' > "$work/private" && chmod 600 "$work/private"
ln -s private "$work/private-link"
(umask 022 && printf 'new' | "$tool" --no-follow "$work/private-link"); rc=$?
check "--no-follow: a symlink at FILE is replaced by a new file of mode 0644, its target untouched" \
  '[ $rc -eq 0 ] && [ ! -L "$work/private-link" ] && [ "$(stat -c %a "$work/private-link")" = 644 ] && [ "$(stat -c %a "$work/private")" = 600 ] && [ "$(cat "$work/private")" = old ]'

# A hard-linked FILE: the rename gives the name FILE a new file, so the
# other names keep the old content, as with sed -i. Documented.
printf 'old' > "$work/linked" && ln "$work/linked" "$work/other-name"
printf 'new' | "$tool" "$work/linked"; rc=$?
check "a hard-linked FILE is replaced under its name; its other names keep the old file" \
  '[ $rc -eq 0 ] && [ "$(cat "$work/linked")" = new ] && [ "$(cat "$work/other-name")" = old ] && [ "$(stat -c %h "$work/other-name")" = 1 ]'

# ---- As root, FILE keeps its owner and group too, set on the temp file
# before the rename (so no reader sees root's file), and before the mode
# (chown clears set-user-ID and set-group-ID bits).
if [ "$(id -u)" -eq 0 ]; then
  printf 'old' > "$work/owned" && chown 65534:65534 "$work/owned" && chmod 2750 "$work/owned"
  printf 'new' | "$tool" "$work/owned"; rc=$?
  check "as root, FILE of 65534:65534 mode 2750 keeps its owner, group and mode" \
    '[ $rc -eq 0 ] && [ "$(cat "$work/owned")" = new ] && [ "$(stat -c "%u:%g %a" "$work/owned")" = "65534:65534 2750" ]'
  printf 'newer' | "$tool" --mode 0600 "$work/owned"; rc=$?
  check "as root, --mode sets the mode and FILE still keeps its owner and group" \
    '[ $rc -eq 0 ] && [ "$(stat -c "%u:%g %a" "$work/owned")" = "65534:65534 600" ]'
  rm -f "$work/root-new"
  printf 'x' | "$tool" "$work/root-new"; rc=$?
  check "as root, a new FILE is root's" '[ $rc -eq 0 ] && [ "$(stat -c "%u:%g" "$work/root-new")" = "0:0" ]'
else
  skip "FILE keeps its owner and group when run as root: not root"
fi

# ---- A normal user keeps FILE's group where they are in it (chown allows
# a group one belongs to), with and without --mode; in a group they are not
# in, the file is theirs and their group's, as chown allows no other, only
# where the group had what the others have; otherwise refused.
user=47011 group=47012
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
  chmod 711 "$work"  # the user must reach $work/users
  as_user() { setpriv --reuid=$user --regid=$user --groups="$1" -- "${@:2}"; }
  mkdir "$work/users" && chown "$user:$user" "$work/users"
  for opts in "" "--mode 0640"; do
    printf 'old' > "$work/users/g" && chown "65534:$group" "$work/users/g" && chmod 640 "$work/users/g"
    # shellcheck disable=SC2086 # split on purpose
    printf 'new' | as_user "$group" "$tool" $opts "$work/users/g"; rc=$?
    check "a normal user in FILE's group keeps it${opts:+ ($opts)}: 0640 in group $group, not the user's" \
      '[ $rc -eq 0 ] && [ "$(cat "$work/users/g")" = new ] && [ "$(stat -c "%u:%g %a" "$work/users/g")" = "$user:$group 640" ]'
  done
  printf 'old' > "$work/users/g" && chown "65534:$group" "$work/users/g" && chmod 644 "$work/users/g"
  printf 'new' | as_user 65533 "$tool" "$work/users/g"; rc=$?
  check "a normal user not in FILE's group: their own user and group" \
    '[ $rc -eq 0 ] && [ "$(stat -c "%u:%g %a" "$work/users/g")" = "$user:$user 644" ]'
  # ... but only where the group had what the others have: a 0640 FILE
  # would become readable to the user's own group. Refused, FILE as it was.
  for opts in "" "--mode 0640"; do
    printf 'old' > "$work/users/g" && chown "$user:$group" "$work/users/g" && chmod 640 "$work/users/g"
    # shellcheck disable=SC2086 # split on purpose
    err=$(printf 'new' | as_user 65533 "$tool" $opts "$work/users/g" 2>&1); rc=$?
    check "a normal user not in the group of a 0640 FILE is refused${opts:+ ($opts)}: exit 1, FILE as it was" \
      '[ $rc -eq 1 ] && [ "$(cat "$work/users/g")" = old ] && [ "$(stat -c "%u:%g %a" "$work/users/g")" = "$user:$group 640" ] && no_temps'
    check "that refusal${opts:+ ($opts)} says the group cannot be kept" \
      '[[ "$err" == "atomic-write: set permissions"*"$work/users/g"*"group"* ]]'
  done
  printf 'new' | as_user 65533 "$tool" --mode 0600 "$work/users/g"; rc=$?
  check "--mode 0600 gives the group nothing: replaced, in the user's own group" \
    '[ $rc -eq 0 ] && [ "$(cat "$work/users/g")" = new ] && [ "$(stat -c "%u:%g %a" "$work/users/g")" = "$user:$user 600" ]'
else
  skip "a normal user keeps FILE's group: needs root and setpriv"
fi

# ---- FILE keeps its POSIX ACL: dropping it made its mask the group bits,
# so a file closed to its group became group read-write.
printf 'old' > "$work/acl" && chmod 640 "$work/acl"
if ! command -v setfacl >/dev/null; then
  skip "FILE keeps its ACL: no setfacl (Debian: apt-get install acl)"
elif ! setfacl -m u:65534:rw,g::- "$work/acl" 2>/dev/null; then
  skip "FILE keeps its ACL: the filesystem of $work takes no POSIX ACLs"
else
  before=$(getfacl -cp "$work/acl")
  printf 'new' | "$tool" "$work/acl"; rc=$?
  check "FILE keeps its ACL (a named user rw, its group closed) and its mode" \
    '[ $rc -eq 0 ] && [ "$(cat "$work/acl")" = new ] && [ "$(getfacl -cp "$work/acl")" = "$before" ] && [ "$(stat -c %a "$work/acl")" = 660 ]'
  mkdir "$work/acl-dir" && setfacl -d -m u:65534:rwx "$work/acl-dir"
  printf 'old' > "$work/acl-dir/plain" && setfacl -b "$work/acl-dir/plain" && chmod 640 "$work/acl-dir/plain"
  printf 'new' | "$tool" "$work/acl-dir/plain"; rc=$?
  check "FILE without an ACL gets none from its directory's default ACL" \
    '[ $rc -eq 0 ] && [ -z "$(getfacl -cps --skip-base "$work/acl-dir/plain")" ] && [ "$(stat -c %a "$work/acl-dir/plain")" = 640 ]'
  # A new FILE gets what open(2) gives it, as touch's: in a directory with
  # a default ACL the kernel ignores the umask, and the ACL's mask comes
  # from it and 0666, not from 0666 & ~umask.
  mkdir "$work/acl-new" && setfacl -d -m u::rwx,u:65534:rwx,g::rx,m::rwx,o::rx "$work/acl-new"
  for mask in 077 022; do
    rm -f "$work/acl-new/touched" "$work/acl-new/new"
    (umask "$mask" && touch "$work/acl-new/touched" && printf 'x' | "$tool" "$work/acl-new/new"); rc=$?
    check "a new FILE in a directory with a default ACL gets touch's ACL and mode, umask $mask ignored" \
      '[ $rc -eq 0 ] && [ "$(getfacl -cp "$work/acl-new/new")" = "$(getfacl -cp "$work/acl-new/touched")" ] && [ "$(stat -c %a "$work/acl-new/new")" = "$(stat -c %a "$work/acl-new/touched")" ]'
  done
  rm -f "$work/acl-new/new"
  (umask 077 && printf 'x' | "$tool" --mode 0640 "$work/acl-new/new"); rc=$?
  check "--mode 0640 there gives 0640 exactly, the ACL's mask r--" \
    '[ $rc -eq 0 ] && [ "$(stat -c %a "$work/acl-new/new")" = 640 ] && getfacl -cp "$work/acl-new/new" | grep -qx "mask::r--"'
  printf 'newer' | "$tool" --mode 0600 "$work/acl"; rc=$?
  check "--mode MODE is the whole permission: FILE's ACL is not kept" \
    '[ $rc -eq 0 ] && [ -z "$(getfacl -cps --skip-base "$work/acl")" ] && [ "$(stat -c %a "$work/acl")" = 600 ]'
fi

# ---- --no-empty and --min-bytes: a pipe cannot carry the exit status of
# the command before it, so short input is refused, FILE untouched and
# nothing created (not even FILE's missing directories).
# guarded OPTION... <INPUT (not in a pipeline: it sets variables): runs atomic-write OPTION... on $work/guarded
# (holding "keep"); sets rc, err, and kept (1 if the same inode still holds
# "keep").
guarded() {
  printf 'keep' > "$work/guarded"
  local inode
  inode=$(stat -c %i "$work/guarded")
  err=$("$tool" "$@" "$work/guarded" 2>&1 >/dev/null); rc=$?
  kept=0
  cmp -s "$work/guarded" <(printf 'keep') && [ "$(stat -c %i "$work/guarded")" = "$inode" ] && kept=1
}
guarded --no-empty </dev/null
check "--no-empty refuses empty input: exit 1, FILE untouched, no temp file" \
  '[ $rc -eq 1 ] && [ $kept -eq 1 ] && no_temps'
check "--no-empty's refusal is one line saying why" \
  '[ "$err" = "atomic-write: standard input is empty (--no-empty); nothing was written" ]'
guarded --no-empty < <(printf 'x')
check "--no-empty takes input of one byte" '[ $rc -eq 0 ] && [ "$(cat "$work/guarded")" = x ]'
"$tool" --no-empty "$work/absent/deeper/f" </dev/null 2>/dev/null; rc=$?
check "--no-empty on empty input creates nothing, not even FILE's directories" \
  '[ $rc -eq 1 ] && [ ! -e "$work/absent" ]'
printf 'a\nb\n' > "$work/grepped"
grep nomatch "$work/grepped" | "$tool" --no-empty "$work/grepped" 2>/dev/null; rc=$?
check "grep nomatch f | atomic-write --no-empty f keeps f" \
  '[ $rc -eq 1 ] && [ "$(cat "$work/grepped")" = "$(printf "a\nb")" ]'
guarded --min-bytes 5 < <(printf '1234')
check "--min-bytes 5 refuses 4 bytes: exit 1, FILE untouched" '[ $rc -eq 1 ] && [ $kept -eq 1 ] && no_temps'
check "--min-bytes's refusal is one line saying how many bytes came" \
  '[ "$err" = "atomic-write: standard input has 4 bytes, fewer than --min-bytes 5; nothing was written" ]'
guarded --min-bytes=5 < <(printf '12345')
check "--min-bytes=5 takes 5 bytes" '[ $rc -eq 0 ] && [ "$(cat "$work/guarded")" = 12345 ]'
guarded --min-bytes 100000 < <(head -c 99999 "$work/big.src")
check "--min-bytes 100000 refuses 99999 bytes (more than one read) and leaves FILE" \
  '[ $rc -eq 1 ] && [ $kept -eq 1 ] && no_temps'
guarded --min-bytes 100000 < <(head -c 100000 "$work/big.src")
check "--min-bytes 100000 takes 100000 bytes intact" \
  '[ $rc -eq 0 ] && cmp -s "$work/guarded" <(head -c 100000 "$work/big.src")'
guarded --no-empty --min-bytes 3 </dev/null
check "--no-empty with --min-bytes: empty input is refused as empty" \
  '[ $rc -eq 1 ] && [ $kept -eq 1 ] && [[ "$err" == *"is empty"* ]]'
guarded --min-bytes 0 < <(printf 'ab')
check "--min-bytes 0 refuses nothing" '[ $rc -eq 0 ] && [ "$(cat "$work/guarded")" = ab ]'
for bad in -1 "" 1x 0x10 " 5" +5 18446744073709551616; do
  err=$("$tool" --min-bytes "$bad" "$work/x" 2>&1 </dev/null); rc=$?
  check "--min-bytes \"$bad\" is a usage error (exit 2) naming the value" \
    '[ $rc -eq 2 ] && [[ "$(head -n 1 <<<"$err")" == "atomic-write: --min-bytes"*": \"$bad\"" ]] && [ ! -e "$work/x" ]'
done

# ---- Ordinary command-line manners.
printf 'eq' | "$tool" --mode=0604 --sync=data "$work/equals"; rc=$?
check "--mode=0604 --sync=data: values after = are taken" \
  '[ $rc -eq 0 ] && [ "$(stat -c %a "$work/equals")" = 604 ] && [ "$(cat "$work/equals")" = eq ]'
for bad in "" 8 0x1ff; do
  err=$("$tool" "--mode=$bad" "$work/x" 2>&1 </dev/null); rc=$?
  check "--mode=$bad is a usage error (exit 2) naming the value" \
    '[ $rc -eq 2 ] && [[ "$(head -n 1 <<<"$err")" == "atomic-write: --mode"*": \"$bad\"" ]] && [ ! -e "$work/x" ]'
done
# A usage error is one line and a hint, not the whole usage text.
mkdir -p "$work/usage"
for args in "--bogus f" "" "--sync sometimes f" "a b" "--mode" "--no-empty=yes f" "--min-bytes" \
    "--help=x"; do
  # shellcheck disable=SC2086 # split on purpose
  err=$(cd "$work/usage" && "$tool" $args 2>&1 >/dev/null </dev/null); rc=$?
  check "usage error \"$args\": exit 2, one line then the hint, nothing written" \
    '[ $rc -eq 2 ] && [ "$(wc -l <<<"$err")" -eq 2 ] && [[ "$(head -n 1 <<<"$err")" == "atomic-write: "* ]] && [ "$(tail -n 1 <<<"$err")" = "$hint" ] && [ -z "$(ls -A "$work/usage")" ]'
done
# "-" would be standard output, which cannot be replaced: refused, with
# the way to name a file "-".
for args in "-" "-- -"; do
  # shellcheck disable=SC2086
  err=$(cd "$work/usage" && printf 'x' | "$tool" $args 2>&1 >/dev/null); rc=$?
  check "\"$args\" is refused (exit 2) naming standard output and ./-, nothing written" \
    '[ $rc -eq 2 ] && [[ "$(head -n 1 <<<"$err")" == *"standard output"*"./-"* ]] && [ "$(tail -n 1 <<<"$err")" = "$hint" ] && [ -z "$(ls -A "$work/usage")" ]'
done
(cd "$work/usage" && printf 'x' | "$tool" ./-); rc=$?
check "./- writes a file named -" '[ $rc -eq 0 ] && [ "$(cat "$work/usage/-")" = x ]'
rm -f "$work/usage/-"

out=$("$tool" --help); rc=$?
check "--help lists the exit statuses 0, 1, 2 and 3" \
  '[ $rc -eq 0 ] && grep -Eq "^ +0 +FILE replaced" <<<"$out" && grep -Eq "^ +1 +failed or refused" <<<"$out" && grep -Eq "^ +2 +usage error" <<<"$out" && grep -Eq "^ +3 +FILE replaced, but" <<<"$out"'
check "--help states the mode rule: kept, 0666 & ~umask for a new file, --mode overrides" \
  'grep -q "keeps its mode" <<<"$out" && grep -q "0666 & ~umask" <<<"$out" && grep -q "owner" <<<"$out" && grep -q -- "--mode" <<<"$out"'
check "--help lists --no-empty, --min-bytes and --version, and warns about pipes" \
  'grep -q -- "--no-empty" <<<"$out" && grep -q -- "--min-bytes N" <<<"$out" && grep -q -- "--version" <<<"$out" && grep -q "pipefail" <<<"$out"'
check "--help states the rules of symlinks, new files, directories, hard links, ACLs and groups" \
  'grep -q -- "--no-follow" <<<"$out" && grep -q "0666" <<<"$out" && grep -q "umask" <<<"$out" && grep -q -- "-p, --parents" <<<"$out" && grep -q "hard link" <<<"$out" && grep -q "ACL" <<<"$out" && grep -q "group" <<<"$out"'
check "--help documents running a command: FILE -- COMMAND, its exit status, signals" \
  'grep -q "FILE -- COMMAND" <<<"$out" && grep -q "128" <<<"$out" && grep -q "127" <<<"$out"'
err=$("$tool" --help 2>&1 >&-); rc=$?
check "--help to a closed standard output fails (exit 1) and says so" \
  '[ $rc -eq 1 ] && [[ "$err" == "atomic-write: write standard output: "* ]]'
version=$(sed -n 's/^#define ATOMIC_STATE_VERSION_STRING "\(.*\)"$/\1/p' "$header")
out=$("$tool" --version); rc=$?
check "--version prints the header's version ($version) and exits 0" \
  '[ $rc -eq 0 ] && [ -n "$version" ] && [ "$out" = "atomic-write $version" ]'

# A closed standard input: the library's first descriptor would become
# descriptor 0, and reading it gave "Is a directory".
err=$("$tool" "$work/closed-input" 2>&1 <&-); rc=$?
check "a closed standard input: exit 1, one line about standard input, nothing written" \
  '[ $rc -eq 1 ] && [ "$err" = "atomic-write: standard input is closed; nothing was written" ] && [ ! -e "$work/closed-input" ] && no_temps'
err=$("$tool" --no-empty "$work/closed-input" 2>&1 <&-); rc=$?
check "a closed standard input with --no-empty: the same" \
  '[ $rc -eq 1 ] && [ "$err" = "atomic-write: standard input is closed; nothing was written" ] && [ ! -e "$work/closed-input" ]'

# Exit status 3: FILE replaced, the directory sync failed. Only a fault can
# make it: the shim fails fsync of a directory with EIO.
if [ -n "$shim" ]; then
  # ASan wants its runtime first in the list of libraries; the shim is.
  asan=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0
  printf 'old' > "$work/undurable"
  err=$(printf 'new' | LD_PRELOAD=$shim ASAN_OPTIONS=$asan "$tool" "$work/undurable" 2>&1); rc=$?
  check "a failed directory sync after the rename exits 3, FILE replaced" \
    '[ $rc -eq 3 ] && [ "$(cat "$work/undurable")" = new ] && no_temps'
  check "exit 3 prints one line saying FILE was replaced but is not known durable" \
    '[ "$err" = "atomic-write: sync directory $work for $work/undurable: Input/output error ($work/undurable was replaced, but the replacement is not known to be durable)" ]'
  # SIGTERM during the commit (at the file's fsync) comes too late: it is
  # dropped, and the exit status is the commit's.
  printf 'late' | SHIM_RAISE=$(kill -l TERM) LD_PRELOAD=$shim ASAN_OPTIONS=$asan \
    "$tool" "$work/undurable" 2>/dev/null; rc=$?
  check "SIGTERM during the commit is dropped: the commit's exit status (3), FILE replaced" \
    '[ $rc -eq 3 ] && [ "$(cat "$work/undurable")" = late ] && no_temps'
  printf 'none' | LD_PRELOAD=$shim ASAN_OPTIONS=$asan "$tool" --sync none "$work/undurable"; rc=$?
  check "--sync none syncs no directory: exit 0 under the same fault" \
    '[ $rc -eq 0 ] && [ "$(cat "$work/undurable")" = none ]'
else
  skip "exit status 3 (replaced, not durable): no fail-directory-fsync shim given"
fi

# Standard input that fails to read (a directory) must not replace FILE.
printf 'untouched' > "$work/kept"
"$tool" "$work/kept" < "$work" 2>/dev/null; rc=$?
check "a read error exits 1 and keeps FILE" '[ $rc -eq 1 ] && [ "$(cat "$work/kept")" = untouched ] && no_temps'

# SIGINT, SIGTERM or SIGHUP while atomic-write waits for the rest of its
# input: it removes its temp file and dies of that signal, FILE untouched.
# env --default-signal undoes the SIG_IGN a non-interactive shell gives the
# SIGINT of a background job. The input is a FIFO held open by this shell.
# started_temp FILE PID waits up to 10 s for a temp file of PID next to
# FILE holding bytes, so the signal lands mid-input rather than before
# begin(): a named one (.tmp-*), or an unnamed one, which only PID's
# descriptors show (Linux: "DIR/#INODE (deleted)").
started_temp() {
  for _ in $(seq 200); do
    [ -n "$(find "$(dirname "$1")" -maxdepth 1 -name '.tmp-*' -size +0c -print -quit)" ] && return 0
    for fd in /proc/"$2"/fd/*; do
      case "$(readlink "$fd" 2>/dev/null)" in
        "$(dirname "$1")"/\#*) [ "$(stat -L -c %s "$fd" 2>/dev/null)" -gt 0 ] 2>/dev/null && return 0 ;;
      esac
    done
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
  started_temp "$work/interrupted" "$pid"; started=$?
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
started_temp "$work/interrupted" "$pid"; started=$?
kill -s HUP "$pid"
sleep 0.2
# Were it dead, writing to the FIFO would kill this script with SIGPIPE.
if kill -0 "$pid" 2>/dev/null; then printf ' rest' >&3; fi
exec 3>&-
wait "$pid" 2>/dev/null; rc=$?
check "SIGHUP ignored on entry (nohup) stays ignored and the run commits" \
  '[ $started -eq 0 ] && [ $rc -eq 0 ] && [ "$(cat "$work/interrupted")" = "partial rest" ]'

# ---- FILE -- COMMAND [ARG]...: the command's standard output goes to the
# temp file, committed only when it exits 0; otherwise atomic-write exits
# with its status (128 + the signal that killed it), FILE untouched.
# commanded ARG...: runs atomic-write $work/cmd ARG... over "keep"; sets rc,
# err and kept (1 if the same inode still holds "keep").
commanded() {
  printf 'keep' > "$work/cmd"
  local inode
  inode=$(stat -c %i "$work/cmd")
  err=$("$tool" "$work/cmd" "$@" 2>&1 </dev/null); rc=$?
  kept=0
  cmp -s "$work/cmd" <(printf 'keep') && [ "$(stat -c %i "$work/cmd")" = "$inode" ] && kept=1
}
commanded -- printf 'made by %s' printf
check "FILE -- printf ...: the command's output replaces FILE (exit 0)" \
  '[ $rc -eq 0 ] && [ "$(cat "$work/cmd")" = "made by printf" ] && [ -z "$err" ] && no_temps'
for status in 1 2 3 42; do
  commanded -- sh -c "echo partial; exit $status"
  check "a command exiting $status: exit $status, FILE untouched, no temp file" \
    '[ $rc -eq $status ] && [ $kept -eq 1 ] && no_temps'
done
check "a failed command is one line naming it and its status" \
  '[ "$err" = "atomic-write: sh exited with status 42; $work/cmd unchanged" ]'
commanded -- sh -c 'head -c 200000 /dev/zero; exit 1'
check "a command failing after more output than a pipe holds: exit 1, FILE untouched" \
  '[ $rc -eq 1 ] && [ $kept -eq 1 ] && no_temps'
for sig in TERM KILL INT; do
  commanded -- sh -c "echo partial; kill -s $sig \$\$"
  check "a command killed by SIG$sig: exit $((128 + $(kill -l $sig))), FILE untouched" \
    '[ $rc -eq $((128 + $(kill -l "$sig"))) ] && [ $kept -eq 1 ] && no_temps && [[ "$err" == *"killed by signal"* ]]'
done
commanded -- "$work/no-such-command" arg
check "a command that does not exist: exit 127, one line, FILE untouched" \
  '[ $rc -eq 127 ] && [ $kept -eq 1 ] && no_temps && [ "$err" = "atomic-write: cannot run $work/no-such-command: No such file or directory; $work/cmd unchanged" ]'
printf '#!/bin/sh\n' > "$work/not-executable"
commanded -- "$work/not-executable"
check "a command that cannot be executed: exit 126, FILE untouched" '[ $rc -eq 126 ] && [ $kept -eq 1 ] && no_temps'
err=$("$tool" "$work/missing-dir/f" -- touch "$work/ran" 2>&1); rc=$?
check "a FILE that cannot be written (its directory missing) runs no command: exit 1" \
  '[ $rc -eq 1 ] && [ ! -e "$work/ran" ] && [ ! -e "$work/missing-dir" ]'
commanded -- true
check "a command with no output that exits 0 empties FILE" '[ $rc -eq 0 ] && [ ! -s "$work/cmd" ]'
commanded --no-empty -- true
check "--no-empty applies to a command's output: exit 1, FILE untouched" '[ $rc -eq 1 ] && [ $kept -eq 1 ] && no_temps'
printf '3\n1\n2\n' > "$work/cmd-sorted"
"$tool" "$work/cmd-sorted" -- sort "$work/cmd-sorted"; rc=$?
check "FILE -- sort FILE rewrites FILE from itself" '[ $rc -eq 0 ] && [ "$(tr -d "\n" < "$work/cmd-sorted")" = 123 ]'
printf 'b\na\n' | "$tool" "$work/cmd-stdin" -- sort; rc=$?
check "the command reads atomic-write's standard input" \
  '[ $rc -eq 0 ] && [ "$(cat "$work/cmd-stdin")" = "$(printf "a\nb")" ]'
err=$("$tool" "$work/cmd-stderr" -- sh -c 'echo out; echo diagnostics >&2' 2>&1); rc=$?
check "the command's standard error stays atomic-write's" \
  '[ $rc -eq 0 ] && [ "$(cat "$work/cmd-stderr")" = out ] && [ "$err" = diagnostics ]'
(cd "$work/usage" && "$tool" -- -dashed -- printf x); rc=$?
check "-- -dashed -- printf x: FILE -dashed from the command" '[ $rc -eq 0 ] && [ "$(cat "$work/usage/-dashed")" = x ]'
rm -f "$work/usage/-dashed"
(cd "$work/usage" && "$tool" --mode 0600 f -- --weird 2>/dev/null); rc=$?
check "after FILE --, every argument is the command, options included" \
  '[ $rc -eq 127 ] && [ -z "$(ls -A "$work/usage")" ]'
# SIGTERM to atomic-write while its command runs: the temp file removed,
# the signal passed on to the command, atomic-write dead of it.
# gone PID: no such process, or only a zombie left (/proc: no procps needed).
gone() { [ ! -e "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
printf 'old' > "$work/cmd-signalled"
"$tool" "$work/cmd-signalled" -- sh -c 'echo partial; exec sleep 30' & pid=$!
started_temp "$work/cmd-signalled" "$pid"; started=$?
command_pid=$(cat /proc/"$pid"/task/*/children 2>/dev/null | tr -d ' ')
command_pid=${command_pid:-none}
kill -s TERM "$pid"
wait "$pid" 2>/dev/null; rc=$?
for _ in $(seq 50); do gone "$command_pid" && break; sleep 0.1; done
check "SIGTERM while the command runs: temp removed, FILE kept, the command got it too" \
  '[ $started -eq 0 ] && [ $rc -eq 143 ] && no_temps && [ "$(cat "$work/cmd-signalled")" = old ] && [ "$command_pid" != none ] && gone "$command_pid"'

check "no temp file is left anywhere" 'no_temps'
echo "cli: $failures failure(s)"
[ "$failures" -eq 0 ]
