#!/usr/bin/env python3
"""Compiles each part of include/atomic_state/ after only the parts before it
(scripts/amalgamate --upto PART), so that "the writer needs nothing of
logging or JSON" is checked, not a convention.

  parts_test.py SOURCE_ROOT COMPILER [ARGS...]

Each part is compiled twice with -fsyntax-only: as the amalgamation up to it,
and on its own from include/atomic_state/ (its own #include "..." lines
bring the parts it names, and nothing else). A part that uses a name of a
later part, or of a part it does not include, fails to compile.
"""
import os
import subprocess
import sys
import tempfile


def main():
    root, compiler = os.path.abspath(sys.argv[1]), sys.argv[2:]
    sys.path.insert(0, os.path.join(root, "scripts"))
    amalgamate = os.path.join(root, "scripts", "amalgamate")
    parts = [line.split('"')[1] for line in open(amalgamate, encoding="utf-8")
             if line.startswith('    "') and line.rstrip().endswith('.hpp",')]
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        for part in parts:
            upto = os.path.join(work, "upto.hpp")
            subprocess.run([sys.executable, amalgamate, "--upto", part, "--output", upto],
                           check=True)
            alone = os.path.join(root, "include", "atomic_state", part)
            for label, header in (("after the parts before it", upto), ("alone", alone)):
                tu = os.path.join(work, "tu.cpp")
                with open(tu, "w", encoding="utf-8") as f:
                    f.write(f'#include "{header}"\n')
                run = subprocess.run(compiler + ["-std=c++17", "-fsyntax-only", "-Wall",
                                                 "-Wextra", "-Wpedantic", "-Wshadow", "-Wconversion",
                                                 "-Werror", tu],
                                     capture_output=True, text=True)
                ok = run.returncode == 0
                failed += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {part} compiles {label}")
                if not ok:
                    print(run.stderr[:4000])
    print(f"{len(parts) * 2 - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
