#!/usr/bin/env python3
"""Turns a run of bench-atomic-state into ratios, a table, bench/results.md
and a chart.

  report.py RESULTS_JSON COMPILE_COST_JSON|- RESULTS_MD CHART_PNG DISK_DIR TMPFS_DIR

Each repetition of a benchmark carries the median time of each side
(counters library_us, floor_us, ...), measured side by side, call by call.
Its ratio is library median / baseline median; the ratio reported is the
median of those over the repetitions, and the range their lowest and
highest. (Pairing within a repetition matters: fsync times on a virtual
disk can jump between levels from one second to the next, and a median of
each side taken apart could land one side on each level.) The times shown
are each side's median over the repetitions. Exits 0 even when a target is
missed: the table says so.
"""
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# (prefix of the benchmark name, what it is, its label on the chart, target
# ratio or None[, the baseline's counter]). A benchmark with several
# baselines measured side by side (batch/..., dir_save/...) has one entry
# per baseline, each naming its counter, and gives one row per entry.
CASES = [
    # A save against the named floor (the floor: the target) and the
    # unnamed floor (O_TMPFILE, linkat: the library's guarantee class).
    ("write/FullSync/disk/", "write_atomic, FullSync, disk", "FullSync, disk", 1.03, "floor_us"),
    ("write/FullSync/disk/", "  the same save", "FullSync, disk, unnamed floor", None,
     "unnamed_us"),
    ("write/NoSync/tmpfs/", "AtomicWriter<NoSync>, tmpfs", "NoSync, tmpfs", 1.10, "floor_us"),
    ("write/NoSync/tmpfs/", "  the same save", "NoSync, tmpfs, unnamed floor", None,
     "unnamed_us"),
    ("state_cycle/FullSync/disk", "StateManager cycle, FullSync, disk",
     "state cycle, FullSync, disk", 1.10),
    ("state_cycle/NoSync/tmpfs", "StateManager cycle, NoSync, tmpfs",
     "state cycle, NoSync, tmpfs", 1.10),
    ("state_load/NoSync/tmpfs", "  of which load_state + should_process",
     "its load, NoSync, tmpfs", None),
    ("state_save/NoSync/tmpfs", "  of which save_state", "its save, NoSync, tmpfs", None,
     "floor_us"),
    ("state_save/NoSync/tmpfs", "  the same save_state", "its save, NoSync, tmpfs, unnamed floor",
     None, "unnamed_us"),
    ("state_save/FullSync/disk", "StateManager::save_state, FullSync, disk",
     "save_state, FullSync, disk", None, "floor_us"),
    ("state_save/FullSync/disk", "  the same save_state", "save_state, FullSync, disk, unnamed floor",
     None, "unnamed_us"),
    ("keep_previous/FullSync/disk", "save_state with keep_previous vs without, FullSync, disk",
     "keep_previous, FullSync, disk", None),
    ("keep_previous/NoSync/tmpfs", "save_state with keep_previous vs without, NoSync, tmpfs",
     "keep_previous, NoSync, tmpfs", None),
    ("run_lock/tmpfs", "try_lock_run + release vs open, flock, close", "run lock, tmpfs", None),
    ("batch/FullSync/disk", "Batch of 4 files vs 4 write_atomic calls, FullSync, disk",
     "batch vs 4 saves, FullSync, disk", 0.6, "separate_us"),
    ("batch/FullSync/disk", "Batch of 4 files vs the batch by hand, FullSync, disk",
     "batch, FullSync, disk", 1.05, "floor_us"),
    ("state_batch/FullSync/disk", "save_state(state, batch): 3 outputs and the state vs the batch "
     "by hand, FullSync, disk", "state with its batch, FullSync, disk", None, "floor_us"),
    ("snapshot_vs_batch/FullSync/disk", "snapshot publish of the 4 files vs the Batch, FullSync, disk",
     "snapshot vs batch, FullSync, disk", 1.3, "batch_us"),
    # A new Batch sweeps the directory it wrote into; a reused one swept it
    # already. Longest prefix first: ".../100" is a prefix of ".../10000".
    ("batch_sweep/NoSync/tmpfs/10000", "a new Batch (it sweeps) vs a reused one, NoSync, tmpfs, "
     "10000 other files", "sweep, 10000 files, tmpfs", None, "reused_us"),
    ("batch_sweep/NoSync/tmpfs/100", "a new Batch (it sweeps) vs a reused one, NoSync, tmpfs, "
     "100 other files", "sweep, 100 files, tmpfs", None, "reused_us"),
    ("batch_sweep/NoSync/tmpfs/0", "a new Batch (it sweeps) vs a reused one, NoSync, tmpfs, "
     "no other file", "sweep, tmpfs", None, "reused_us"),
    ("batch_sweep/FullSync/disk/100", "a new Batch (it sweeps) vs a reused one, FullSync, disk, "
     "100 other files", "sweep, 100 files, disk", 1.10, "reused_us"),
    ("dir_save/NoSync/tmpfs/", "AtomicDirectory<NoSync> save, tmpfs",
     "directory save, NoSync, tmpfs", 1.05, "floor_us"),
    ("dir_save/NoSync/tmpfs/", "  the same save, AtomicDirectory vs AtomicWriter",
     "directory vs writer, NoSync, tmpfs", None, "writer_us"),
    ("dir_save/FullSync/disk/", "AtomicDirectory<FullSync> save, disk",
     "directory save, FullSync, disk", 1.05, "floor_us"),
    ("dir_save/FullSync/disk/", "  the same save, AtomicDirectory vs AtomicWriter",
     "directory vs writer, FullSync, disk", None, "writer_us"),
    ("qsavefile/FullSync/disk/", "atomic_state vs Qt QSaveFile, FullSync, disk",
     "QSaveFile, FullSync, disk", None),
]

# What a row's baseline is called, by its counter (floor_us: "floor").
BASELINES = {"qsavefile_us": "QSaveFile", "plain_save_us": "save without it",
             "separate_us": "4 write_atomic calls", "writer_us": "AtomicWriter",
             "batch_us": "the Batch", "reused_us": "a reused Batch",
             "unnamed_us": "the unnamed floor"}

# A benchmark that skips itself with a message starting so is a slot whose
# library side does not exist yet: reported as not measured, not an error.
NOT_MEASURED = "not measured"


def size_text(n):
    n = int(n)
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def time_text(us):
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.2f} µs"


def cases_of(name):
    """[(label, chart label, target, baseline counter or None)] of a
    benchmark: one per baseline (the entries of the first prefix that
    matches)."""
    found = []
    for prefix, what, short, target, *baseline in CASES:
        if name.startswith(prefix) and (not found or found[0][0] == prefix):
            rest = name[len(prefix):]
            if rest:
                what, short = f"{what}, {size_text(rest)}", f"{short}, {size_text(rest)}"
            found.append((prefix, what, short, target, baseline[0] if baseline else None))
    if not found:
        return [(name, name, None, None)]
    return [entry[1:] for entry in found]


def collect(results):
    """{run_name: {counter: [per-repetition values]}}, in the file's order."""
    runs = {}
    aggregates = {}
    for b in results.get("benchmarks", []):
        name = re.sub(r"/(min_time:[^/]*|iterations:[^/]*|manual_time|real_time)", "", b.get("run_name", b["name"]))
        if b.get("error_occurred"):
            runs.setdefault(name, {})["error"] = b.get("error_message", "error")
            continue
        counters = {k: v for k, v in b.items() if k.endswith("_us") or k.endswith("_MBps")}
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                aggregates[name] = counters
            continue
        entry = runs.setdefault(name, {})
        for k, v in counters.items():
            entry.setdefault(k, []).append(v)
    # A file that holds the aggregates only: use Google Benchmark's medians.
    for name, counters in aggregates.items():
        entry = runs.setdefault(name, {})
        if not any(isinstance(v, list) and v for v in entry.values()):
            for k, v in counters.items():
                entry[k] = [v]
    return runs


def rows_from(runs):
    rows = []
    for name, counters in runs.items():
        for label, short, target, baseline in cases_of(name):
            row = row_of(name, counters, label, short, target, baseline)
            if row:
                rows.append(row)
    return rows


def row_of(name, counters, label, short, target, base_key):
    if "error" in counters:
        if counters["error"].startswith(NOT_MEASURED):
            return {"name": name, "label": label, "target": target, "not_measured": counters["error"]}
        return {"name": name, "label": label, "error": counters["error"]}
    if base_key is None:
        base_key = next((k for k in ("qsavefile_us", "plain_save_us") if k in counters), "floor_us")
    lib = counters.get("library_us", [])
    base = counters.get(base_key, [])
    if not lib or not base:
        return None
    lib_m, base_m = statistics.median(lib), statistics.median(base)
    per_rep = [a / b for a, b in zip(lib, base) if b > 0]
    row = {
        "name": name, "label": label, "short": short, "target": target,
        "library_us": lib_m, "baseline_us": base_m, "ratio": statistics.median(per_rep),
        "ratio_min": min(per_rep), "ratio_max": max(per_rep), "repetitions": len(lib),
        "baseline": BASELINES.get(base_key, "floor"),
    }
    for side in ("library", "floor", "unnamed", "dd"):
        values = counters.get(f"{side}_MBps")
        if values:
            row[f"{side}_MBps"] = statistics.median(values)
    if "dd_MBps" in counters:  # paired, as the ratio
        row["library_vs_dd"] = statistics.median(
            a / b for a, b in zip(counters["library_MBps"], counters["dd_MBps"]))
    return row


def throughput_rows(rows):
    """The rows of the 16 MiB throughput table: one per benchmark with a
    dd-style side (its named-floor row)."""
    return [r for r in rows if "dd_MBps" in r and r["baseline"] == "floor"]


def verdict(row):
    if "not_measured" in row:
        return "not measured"
    if "error" in row:
        return "error"
    if row["target"] is None:
        return "—"
    return "yes" if row["ratio"] <= row["target"] else "NO"


def print_table(rows):
    head = f"{'benchmark':<52} {'library':>11} {'baseline':>11} {'ratio':>6} {'target':>7}  met?"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "not_measured" in r:
            print(f"{r['label']:<52} {'':>11} {'':>11} {'':>6} {'<=%.2f' % r['target']:>7}  not measured")
            continue
        if "error" in r:
            print(f"{r['label']:<52} error: {r['error']}")
            continue
        target = f"<={r['target']:.2f}" if r["target"] else "—"
        print(f"{r['label']:<52} {time_text(r['library_us']):>11} {time_text(r['baseline_us']):>11} "
              f"{r['ratio']:6.3f} {target:>7}  {verdict(r)}")
    big = throughput_rows(rows)
    if big:
        print()
        print(f"{'16 MiB throughput (MB/s)':<52} {'library':>9} {'floor':>9} {'unnamed':>9} "
              f"{'dd-style':>9}  lib/dd")
        for r in big:
            print(f"{r['label']:<52} {r['library_MBps']:9.0f} {r['floor_MBps']:9.0f} "
                  f"{r.get('unnamed_MBps', 0):9.0f} {r['dd_MBps']:9.0f}  {r['library_vs_dd']:.3f}")


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fs_type(path):
    found = sh(["findmnt", "-n", "-o", "FSTYPE", "-T", path]).splitlines()
    return found[0] if found and found[0] != "unknown" else sh(["stat", "-f", "-c", "%T", path])


def machine(results, disk_dir, tmpfs_dir):
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ctx = results.get("context", {})
    return {
        "CPU": model,
        "nproc": sh(["nproc"]),
        "kernel": platform.release(),
        f"disk directory ({disk_dir})": fs_type(disk_dir),
        f"tmpfs directory ({tmpfs_dir})": fs_type(tmpfs_dir),
        "load average at the end": " ".join(open("/proc/loadavg").read().split()[:3]),
        "Google Benchmark library build": ctx.get("library_build_type", "unknown"),
        "QSaveFile": ctx.get("qsavefile", "unknown"),
    }


def write_markdown(path, rows, compile_cost, info, results):
    out = []
    ctx = results.get("context", {})
    out.append("# atomic_state: benchmark results\n")
    out.append(f"Written by `scripts/bench` on {ctx.get('date', datetime.datetime.now().isoformat())}. "
               "Every ratio compares the library with its baseline measured side by side, "
               "alternating call by call in the same process and run (see `bench/README.md`). "
               "The machine may have been running other work, so the figures are indicative: "
               "compare ratios, not absolute times, across machines.\n")
    out.append("## Machine\n")
    out.append("| | |\n|---|---|")
    for k, v in info.items():
        out.append(f"| {k} | {v} |")
    out.append("")
    out.append("## Library against the floor\n")
    out.append("Median time per operation. Ratio: library / baseline (below 1: the library "
               "was the faster), computed in each repetition from the two medians measured "
               "side by side; the table gives the median over the repetitions, and the range "
               "the lowest and highest.\n")
    out.append("| benchmark | library median | baseline median | ratio | range | target | met? |")
    out.append("|---|---:|---:|---:|---|---:|---|")
    for r in rows:
        if "not_measured" in r:
            out.append(f"| {r['label'].strip()} | | | | | ≤ {r['target']:.2f} | "
                       f"{r['not_measured']} |")
            continue
        if "error" in r:
            out.append(f"| {r['label'].strip()} | | | | | | error: {r['error']} |")
            continue
        target = f"≤ {r['target']:.2f}" if r["target"] else "—"
        label = r["label"].strip() + (f" (baseline: {r['baseline']})" if r["baseline"] != "floor" else "")
        out.append(f"| {label} | {time_text(r['library_us'])} | {time_text(r['baseline_us'])} | "
                   f"{r['ratio']:.3f} | {r['ratio_min']:.2f}–{r['ratio_max']:.2f} | {target} | "
                   f"{verdict(r)} |")
    reps = max((r.get("repetitions", 0) for r in rows), default=0)
    out.append(f"\n{reps} repetitions. Baselines: *floor* = the fewest system calls written by "
               "hand that give the same guarantee, with no lock and no look at the target (for a "
               "save without syncs: temp file by path with `O_CREAT|O_EXCL`, write, `fchmod`, "
               "close, `rename`, 5 calls; for a durable save: the directory opened, the temp file "
               "created in it with `O_EXCL`, write, `fchmod`, `fsync`, close, `renameat`, `fsync` "
               "of the directory, the directory closed; for the state cycle and `save_state`: "
               "reading the file by hand, `boost::json::parse`, `boost::json::serialize`, and that "
               "save; for the run lock: `open` with `O_CREAT`, `flock`, `close`; for the batch of "
               "a collector's four files, 1 KiB, 16 KiB, 256 KiB and a 300-byte state, and for "
               "`save_state(state, batch)` with the same three outputs: the same batch by hand, "
               "temp files created with `O_EXCL`, written, `fchmod`, `sync_file_range` started on "
               "all, each `fsync`ed and closed, renamed in order with the directory `fsync`ed "
               "before the last rename and after it; for an `AtomicDirectory` save under NoSync: "
               "the 5-call save by path; under FullSync: the durable save with a kept directory "
               "descriptor); *the unnamed floor* = the same save with an unnamed temp file, the "
               "library's guarantee class on Linux (a kill before the link leaves nothing): "
               "`open` of the directory with `O_TMPFILE`, write, `fchmod`, `linkat` "
               "(`AT_EMPTY_PATH`) to a temp name, `rename`, close, 6 calls without syncs; durable: "
               "the directory opened, `openat(\".\", O_TMPFILE)`, write, `fchmod`, `fsync`, "
               "`linkat`, `renameat`, close, `fsync` of the directory, the directory closed; "
               "*4 write_atomic calls* = the same four files saved one by "
               "one; *AtomicWriter* = the same save through `AtomicWriter`, which opens, locks and "
               "closes the directory each time; *save without it* = the same `save_state` without "
               "`keep_previous`, so the ratio is what keeping the previous state costs; *a reused "
               "Batch* = the collector's four files through a Batch that swept its directory in "
               "an earlier run, against a new Batch per run, which sweeps it after its commit "
               "(the directory holding that many files of someone else's besides), so the ratio "
               "is what a run's sweep costs.\n")
    big = throughput_rows(rows)
    if big:
        out.append("## Throughput at 16 MiB\n")
        out.append("MB/s (10^6 bytes per second) at each side's median time over the "
                   "repetitions; the last column, like the ratios above, is the median of the "
                   "per-repetition ratios. *dd-style*: the same bytes written into one file in "
                   "place (open with O_TRUNC, write, fsync under FullSync, close): no temp file, "
                   "no rename, not atomic.\n")
        out.append("| benchmark | library | floor | unnamed floor | dd-style | library / dd-style |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for r in big:
            unnamed = f"{r['unnamed_MBps']:.0f}" if "unnamed_MBps" in r else ""
            out.append(f"| {r['label'].strip()} | {r['library_MBps']:.0f} | {r['floor_MBps']:.0f} | "
                       f"{unnamed} | {r['dd_MBps']:.0f} | {r['library_vs_dd']:.3f} |")
        out.append("")
    if compile_cost:
        c = compile_cost
        met = "yes" if c["ratio"] <= c["target"] else "NO"
        met_no_json = "yes" if c["ratio_no_json"] <= c["target_no_json"] else "NO"
        out.append("## Compile cost\n")
        out.append(f"`{c['compiler']}`, `-std=c++17 -fsyntax-only`, CPU seconds (user + system), "
                   f"best of {c['runs']}.\n")
        out.append("| translation unit includes | CPU time |\n|---|---:|")
        out.append(f"| `atomic_state.hpp` | {c['library_s']:.3f} s |")
        out.append(f"| `<boost/json.hpp>` | {c['boost_json_hpp_s']:.3f} s |")
        out.append(f"| the {len(c['boost_json_headers'])} Boost.JSON headers it includes "
                   f"({', '.join('`' + h + '`' for h in c['boost_json_headers'])}) | {c['boost_json_s']:.3f} s |")
        out.append(f"| every header it includes (Boost.JSON, standard, POSIX), none of its code | "
                   f"{c['all_included_headers_s']:.3f} s |")
        out.append(f"| `atomic_state.hpp` with `-DATOMIC_STATE_NO_JSON` | {c['library_no_json_s']:.3f} s |")
        out.append(f"| `<string>` | {c['string_s']:.3f} s |")
        out.append(f"| nothing | {c['empty_s']:.3f} s |")
        out.append(f"\nRatio atomic_state.hpp / `<boost/json.hpp>`: **{c['ratio']:.3f}** "
                   f"(target ≤ {c['target']:.2f}: {met}). Ratio atomic_state.hpp with "
                   f"`-DATOMIC_STATE_NO_JSON` / `<string>`: **{c['ratio_no_json']:.3f}** "
                   f"(target ≤ {c['target_no_json']:.0f}: {met_no_json}).\n")
        out.append("## Binary size\n")
        out.append(f"`examples/atomic_write.cpp` built with `-Os -DATOMIC_STATE_NO_JSON`, stripped: "
                   f"**{c['atomic_write_bytes']} bytes** (a stripped hello world built the same way: "
                   f"{c['hello_bytes']} bytes).\n")
    out.append("## Chart\n")
    out.append("![floor and library, median time per operation, log scale](chart.png)\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out))


def chart(rows, png, work_dir):
    if not shutil.which("gnuplot"):
        print("note: gnuplot not found, no chart", file=sys.stderr)
        return
    data = os.path.join(work_dir, "chart.dat")
    with open(data, "w", encoding="utf-8") as f:
        for r in rows:
            if "error" in r or "not_measured" in r or r["baseline"] != "floor":
                continue
            f.write(f"\"{r['short']} (×{r['ratio']:.2f})\" {r['baseline_us']:.4f} "
                    f"{r['library_us']:.4f}\n")
    subprocess.run(["gnuplot", "-e", f"datafile='{data}'; outfile='{png}'",
                    os.path.join(HERE, "chart.gp")], check=True)


def main():
    results_path, cost_path, md_path, png_path, disk_dir, tmpfs_dir = sys.argv[1:7]
    with open(results_path, encoding="utf-8") as f:
        results = json.load(f)
    compile_cost = None
    if cost_path != "-" and os.path.exists(cost_path):
        with open(cost_path, encoding="utf-8") as f:
            compile_cost = json.load(f)
    rows = rows_from(collect(results))
    print_table(rows)
    write_markdown(md_path, rows, compile_cost, machine(results, disk_dir, tmpfs_dir), results)
    chart(rows, png_path, os.path.dirname(os.path.abspath(results_path)))
    print(f"\nwrote {md_path} and {png_path}")


if __name__ == "__main__":
    main()
