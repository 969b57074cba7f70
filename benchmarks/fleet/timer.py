#!/usr/bin/env python3
"""The timing fallback of bench.sh when hyperfine is not installed: the subset of hyperfine that bench.sh
uses, with the same meaning and the same JSON fields, so that summarize.py reads either.

    timer.py --warmup W --runs R --prepare CMD --export-json FILE -n NAME CMD [-n NAME CMD ...]

Commands are split into words like a shell would and run without a shell (hyperfine -N); their output
is discarded. For each command: W warm-up runs, then R timed runs, each preceded by CMD (not timed).
A command or prepare step that exits non-zero aborts, as it does in hyperfine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time


def run(words: list[str]) -> int:
    return subprocess.run(words, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--prepare", default="")
    ap.add_argument("--export-json", required=True)
    ap.add_argument("-n", "--command-name", action="append", default=[])
    ap.add_argument("commands", nargs="+")
    a = ap.parse_intermixed_args()
    if len(a.command_name) != len(a.commands):
        ap.error("give one -n NAME per command")
    results = []
    for name, command in zip(a.command_name, a.commands):
        times: list[float] = []
        for k in range(a.warmup + a.runs):
            if a.prepare and (rc := run(shlex.split(a.prepare))):
                print(f"timer: prepare '{a.prepare}' exited {rc}; aborting", file=sys.stderr)
                return 1
            t0 = time.perf_counter()
            rc = run(shlex.split(command))
            elapsed = time.perf_counter() - t0
            if rc:
                print(f"timer: {name} exited {rc}; aborting", file=sys.stderr)
                return 1
            if k >= a.warmup:
                times.append(elapsed)
        print(f"{name}: median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f}, "
              f"{len(times)} runs)", file=sys.stderr)
        results.append({"command": name, "mean": statistics.fmean(times), "median": statistics.median(times),
                        "min": min(times), "max": max(times),
                        "stddev": statistics.stdev(times) if len(times) > 1 else None,
                        "times": times, "exit_codes": [0] * len(times)})
    with open(a.export_json, "w") as f:
        json.dump({"results": results, "timer": "timer.py"}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
