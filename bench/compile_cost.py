#!/usr/bin/env python3
"""What including atomic_state.hpp costs a build, and how big a program is.

  compile_cost.py SOURCE_ROOT WORK_DIR OUT_JSON

1. Compile time (g++ -std=c++17 -fsyntax-only, best of $BENCH_COMPILE_RUNS,
   default 5, the translation units alternating), two ratios:
   - a TU that includes only atomic_state.hpp against one that includes only
     <boost/json.hpp> (target <= 1.10);
   - the same with -DATOMIC_STATE_NO_JSON against one that includes only
     <string> (target <= 4).
   The time is the compiler's CPU time (user + system), which other work on
   a shared machine disturbs far less than wall time; wall time is recorded
   too. For the breakdown: the Boost.JSON headers the library includes, a TU
   with every header it includes (Boost.JSON, standard and POSIX) but none
   of its own code (the difference is its own code's cost), and an empty
   TU.
2. Size of examples/atomic_write.cpp built with -Os -DATOMIC_STATE_NO_JSON and
   stripped, beside a stripped "hello world" built the same way (what any
   C++ program of this toolchain weighs).
"""
import json
import os
import re
import resource
import subprocess
import sys
import time

CXX = os.environ.get("CXX", "g++")


def timed(cmd):
    """(CPU seconds, wall seconds) of one run of cmd."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), wall


def alternate(cmds, runs):
    """Best (CPU, wall) of each command, running them in turn so that drift
    hits all alike."""
    best = [[float("inf"), float("inf")] for _ in cmds]
    for _ in range(runs):
        for i, cmd in enumerate(cmds):
            cpu, wall = timed(cmd)
            best[i] = [min(best[i][0], cpu), min(best[i][1], wall)]
    return best


def main():
    root, work, out = sys.argv[1:4]
    runs = int(os.environ.get("BENCH_COMPILE_RUNS", "5"))
    os.makedirs(work, exist_ok=True)
    header = os.path.join(root, "atomic_state.hpp")
    with open(header, encoding="utf-8") as f:
        text = f.read()
    includes = list(dict.fromkeys(re.findall(r"^\s*#\s*include\s*<([^>]+)>", text, re.M)))
    boost_includes = [h for h in includes if h.startswith("boost/json/")]
    if not boost_includes:
        sys.exit("compile_cost.py: no #include <boost/json/...> line in " + header)

    def tu(name, text):
        path = os.path.join(work, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    library = tu("library.cpp", '#include "atomic_state.hpp"\n')
    boost = tu("boost_json.cpp", "".join(f"#include <{h}>\n" for h in boost_includes))
    # Guarded: an include meant for another platform is simply left out.
    all_headers = tu("all_headers.cpp", "".join(
        f"#if __has_include(<{h}>)\n#include <{h}>\n#endif\n" for h in includes))
    empty = tu("empty.cpp", "\n")
    boost_whole = tu("boost_json_hpp.cpp", "#include <boost/json.hpp>\n")
    string = tu("string.cpp", "#include <string>\n")
    syntax = [CXX, "-std=c++17", "-fsyntax-only", "-I", root]
    lib, boost_only, headers, nojson, nothing, whole, string_only = alternate(
        [syntax + [library], syntax + [boost], syntax + [all_headers],
         syntax + ["-DATOMIC_STATE_NO_JSON", library], syntax + [empty], syntax + [boost_whole],
         syntax + [string]], runs)
    lib_t, boost_t = lib[0], boost_only[0]
    ratio, ratio_no_json = lib_t / whole[0], nojson[0] / string_only[0]
    # The library's own code: what the header costs beyond the headers it
    # includes. The whole-header target holds only if this part alone stays
    # under a tenth of <boost/json.hpp>.
    own_code = lib_t - headers[0]

    # Binary size: the atomic-write tool and, for scale, hello world.
    exe = os.path.join(work, "atomic-write-Os")
    subprocess.run([CXX, "-std=c++17", "-Os", "-DNDEBUG", "-DATOMIC_STATE_NO_JSON", "-I", root,
                    os.path.join(root, "examples", "atomic_write.cpp"), "-o", exe], check=True)
    subprocess.run(["strip", exe], check=True)
    hello_src = tu("hello.cpp", '#include <cstdio>\nint main() { std::puts("hello"); }\n')
    hello = os.path.join(work, "hello-Os")
    subprocess.run([CXX, "-std=c++17", "-Os", "-DNDEBUG", hello_src, "-o", hello], check=True)
    subprocess.run(["strip", hello], check=True)

    version = subprocess.run([CXX, "--version"], capture_output=True, text=True).stdout
    result = {
        "compiler": version.splitlines()[0] if version else CXX,
        "runs": runs,
        "boost_json_headers": boost_includes,
        "measure": "CPU seconds (user + system) of g++ -fsyntax-only, best of runs",
        "library_s": lib_t,
        "boost_json_s": boost_t,
        "boost_json_hpp_s": whole[0],
        "string_s": string_only[0],
        "ratio": ratio,
        "target": 1.10,
        "ratio_no_json": ratio_no_json,
        "target_no_json": 4.0,
        "all_included_headers_s": headers[0],
        "own_code_s": own_code,
        "own_code_per_boost_json_hpp": own_code / whole[0],
        "library_no_json_s": nojson[0],
        "empty_s": nothing[0],
        "wall_s": {"library": lib[1], "boost_json": boost_only[1], "all_included_headers": headers[1],
                   "library_no_json": nojson[1], "empty": nothing[1], "boost_json_hpp": whole[1],
                   "string": string_only[1]},
        "atomic_write_bytes": os.path.getsize(exe),
        "hello_bytes": os.path.getsize(hello),
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"compile time, {CXX} -std=c++17 -fsyntax-only, CPU seconds, best of {runs}:")
    print(f"  atomic_state.hpp                           {lib_t:6.3f} s")
    print(f"  <boost/json.hpp> alone                     {whole[0]:6.3f} s")
    print(f"  ratio                                      {ratio:6.3f}   (target <= 1.10: "
          f"{'met' if ratio <= 1.10 else 'NOT met'})")
    print(f"  atomic_state.hpp, ATOMIC_STATE_NO_JSON     {nojson[0]:6.3f} s")
    print(f"  <string> alone                             {string_only[0]:6.3f} s")
    print(f"  ratio                                      {ratio_no_json:6.3f}   (target <= 4: "
          f"{'met' if ratio_no_json <= 4 else 'NOT met'})")
    print(f"  its {len(boost_includes)} Boost.JSON headers alone             {boost_t:6.3f} s")
    print(f"  every header it includes, none of its code {headers[0]:6.3f} s")
    print(f"  so its own code                            {own_code:6.3f} s "
          f"({own_code / whole[0]:.2f} of <boost/json.hpp>)")
    print(f"  empty TU                                   {nothing[0]:6.3f} s")
    print(f"atomic-write, -Os -DATOMIC_STATE_NO_JSON, stripped: {os.path.getsize(exe)} bytes "
          f"(hello world the same way: {os.path.getsize(hello)} bytes)")


if __name__ == "__main__":
    main()
