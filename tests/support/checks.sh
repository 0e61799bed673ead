# The reporting of the shell tests: a scratch directory $work removed at
# exit, and one line per check. Sourced; check NAME CONDITION evaluates
# CONDITION (a string) and counts a failure in $failures.
# shellcheck shell=bash
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
pass() { echo "ok   - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }
check() { if eval "$2"; then pass "$1"; else fail "$1"; fi; }
# A check the machine cannot set up: said, not counted.
skip() { echo "skip - $1"; }
