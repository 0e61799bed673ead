#!/usr/bin/env python3
"""Every C++ block of the README and of docs/ compiles, so that the documents
cannot drift from the header (nlohmann/json's unit-readme.cpp is the model).

A block is one of three kinds, and says which:
  - a whole program: it has a main();
  - "// fragment: statements" on its first line: the body of a function;
  - "// fragment: declarations" on its first line: code at namespace scope.
A marker may end with compiler flags in parentheses, as in
"// fragment: declarations (-fno-exceptions)".
Fragments are compiled after a prelude that includes the header and offers
the few names the documents take for granted (PRELUDE below). A C++ block
of none of these kinds is a failure: it could never be checked.

usage: doc_snippets.py SOURCE_ROOT COMPILER [COMPILER ARGS...]
"""
import os
import re
import subprocess
import sys
import tempfile

PRELUDE = """\
#include "atomic_state.hpp"
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>
namespace as = atomic_state;
// What the documents' fragments take for granted.
[[maybe_unused]] static int fail(const as::Status&) { return 1; }
[[maybe_unused]] static const std::vector<std::string> rows;
[[maybe_unused]] static const std::int64_t api_timestamp = 1700000000, count = 42;
[[maybe_unused]] static const double tvs = 1.5e9;
[[maybe_unused]] static const std::vector<std::int64_t> snapshot_times;
"""

FENCE = re.compile(r"^```cpp\n(.*?)^```", re.S | re.M)
WARNINGS = ["-Wall", "-Wextra", "-Wpedantic", "-Werror"]


def documents(root):
    yield os.path.join(root, "README.md")
    docs = os.path.join(root, "docs")
    for name in sorted(os.listdir(docs)):
        if name.endswith(".md"):
            yield os.path.join(docs, name)


MARKER = re.compile(r"^// fragment: (statements|declarations)(?: \((.*)\))?$")


def program_of(block):
    """The translation unit to compile for a block and its extra flags, or
    (None, []) if its kind is unknown."""
    first = block.split("\n", 1)[0].strip()
    if re.search(r"\bint main\s*\(", block):
        return block, []
    marker = MARKER.match(first)
    if marker is None:
        return None, []
    flags = marker.group(2).split() if marker.group(2) else []
    if marker.group(1) == "statements":
        body = "[[maybe_unused]] static int snippet() {\n" + block + "\nreturn 0;\n}\n"
        return PRELUDE + body, flags
    return PRELUDE + block, flags


def main(root, compiler):
    failures = checked = 0
    with tempfile.TemporaryDirectory() as work:
        for path in documents(root):
            text = open(path, encoding="utf-8").read()
            for block in FENCE.finditer(text):
                line = text.count("\n", 0, block.start()) + 1
                where = f"{os.path.relpath(path, root)}:{line}"
                program, flags = program_of(block.group(1))
                if program is None:
                    print(f"FAIL - {where}: a C++ block that is neither a program nor a marked "
                          "fragment (first line '// fragment: statements' or "
                          "'// fragment: declarations')")
                    failures += 1
                    continue
                source = os.path.join(work, f"snippet{checked}.cpp")
                with open(source, "w") as f:
                    f.write(program)
                checked += 1
                result = subprocess.run(
                    compiler + ["-std=c++17", "-fsyntax-only", *WARNINGS, *flags, "-I", root, source],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if result.returncode == 0:
                    print(f"ok   - {where} compiles")
                else:
                    print(f"FAIL - {where} does not compile:\n{result.stdout[:3000]}")
                    failures += 1
    print(f"{checked} blocks compiled, {failures} failure(s)")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
