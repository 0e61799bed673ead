#!/usr/bin/env python3
"""Compiles each part of include/atomic_state/ on its own, so that "the writer
needs nothing of logging or JSON" is checked, not a convention.

  parts_test.py SOURCE_ROOT COMPILER [ARGS...]

A part brings the parts it needs with its own #include "..." lines, and
scripts/amalgamate refuses one that names a part after it: so a part that
compiles alone compiles after only the parts before it. One that uses a
name of a later part, of a part it does not include, or of a standard
header it does not include itself (and no part it includes does) fails.
Templates are checked only when instantiated, so each part's class
templates are instantiated whole (every member) after it. Each with
-fsyntax-only and the project's warnings as errors.
"""
import os
import subprocess
import sys
import tempfile


# What each part instantiates after itself: its class templates, whole.
NS = "atomic_state::"
INSTANTIATE = {
    "writer.hpp": [f"{NS}AtomicWriter<{NS}FullSync, {NS}PosixFs>",
                   f"{NS}AtomicWriter<{NS}NoSync, {NS}PosixFs>",
                   f"{NS}WriteTransaction<{NS}FullSync, {NS}PosixFs>"],
    "directory.hpp": [f"{NS}AtomicDirectory<{NS}FullSync, {NS}PosixFs>"],
    "batch.hpp": [f"{NS}Batch<{NS}FullSync, {NS}PosixFs>"],
    "snapshot.hpp": [f"{NS}SnapshotWriter<{NS}FullSync, {NS}PosixFs>"],
    "state_manager.hpp": [f"{NS}StateManager<{NS}NullSink, {NS}State, {NS}FullSync, {NS}PosixFs>",
                          f"{NS}RunLock<{NS}PosixFs>"],
}


def main():
    root, compiler = os.path.abspath(sys.argv[1]), sys.argv[2:]
    parts_dir = os.path.join(root, "include", "atomic_state")
    amalgamate = os.path.join(root, "scripts", "amalgamate")
    parts = subprocess.run([sys.executable, amalgamate, "--list"], check=True,
                           capture_output=True, text=True).stdout.split()
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        for part in parts:
            tu = os.path.join(work, "tu.cpp")
            with open(tu, "w", encoding="utf-8") as f:
                f.write(f'#include "{os.path.join(parts_dir, part)}"\n')
                f.write("".join(f"template class {t};\n" for t in INSTANTIATE.get(part, [])))
            run = subprocess.run(compiler + ["-std=c++17", "-fsyntax-only", "-Wall", "-Wextra",
                                             "-Wpedantic", "-Wshadow", "-Wconversion", "-Werror",
                                             tu], capture_output=True, text=True)
            ok = run.returncode == 0
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {part} compiles alone, after only the parts it includes")
            if not ok:
                print(run.stderr[:4000])
    print(f"{len(parts) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
