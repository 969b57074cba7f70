#!/usr/bin/env python3
"""CLI start-up benchmark: wall time of `upgrader --help` and `upgrader versions check 7.0.4.1 7.0.4.2`
with the venv's console script, as a user types them.

Each command runs N times (default 20, after 2 warm-up runs that are not counted) as a fresh
process; the figure is the wall time from spawn to exit. For reference it also times the bare
interpreter (`python -c pass`, the floor no CLI can go under) and lists the slowest
imports of `--help` (from `python -X importtime`), which is where start-up time usually goes.

Goal (issue 2): median of `upgrader --help` under 0.3 s.

Results: Markdown on stdout and in ``benchmarks/results/cli_startup.md``, raw times in
``benchmarks/results/cli_startup.json``.

    .venv/bin/python benchmarks/cli_startup.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machine import machine_info  # benchmarks/machine.py (scripts run from benchmarks/)

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
GOAL_HELP_SECONDS = 0.3
WARMUP = 2


def time_command(argv: list[str], runs: int) -> tuple[list[float], int]:
    """Wall seconds of `runs` fresh runs of argv (after WARMUP uncounted ones); and the last exit code."""
    times = []
    code = 0
    for i in range(WARMUP + runs):
        t0 = time.perf_counter()
        code = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode
        elapsed = time.perf_counter() - t0
        if i >= WARMUP:
            times.append(elapsed)
    return times, code


def slowest_imports(argv: list[str], top: int = 12, max_depth: int = 2) -> list[dict[str, Any]]:
    """The slowest imports (nesting depth <= max_depth) of one run, by cumulative microseconds."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    err = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=env).stderr
    rows = []
    for line in err.splitlines():
        # "import time:  self_us |  cumulative_us | <indent>name": one space at depth 0, two more per level
        m = re.match(r"import time:\s*(\d+) \|\s*(\d+) \|( +)(\S.*)$", line)
        depth = (len(m.group(3)) - 1) // 2 if m else 99
        if m and depth <= max_depth:
            rows.append({"module": m.group(4).strip(), "depth": depth, "self_us": int(m.group(1)),
                         "cumulative_us": int(m.group(2))})
    rows.sort(key=lambda r: r["cumulative_us"], reverse=True)
    return rows[:top]


def stats(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": statistics.median(times), "min": ordered[0], "max": ordered[-1], "p90": p90}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start-up time of the upgrader CLI (see benchmarks/README.md).")
    ap.add_argument("-n", "--runs", type=int, default=20, help="timed runs per command (default 20)")
    ap.add_argument("--cli", help="the upgrader command (default: the console script beside this Python)")
    ap.add_argument("--results", default=str(RESULTS_DIR), help="where to write the results")
    ap.add_argument("--check", action="store_true", help="exit 1 when the goal is missed")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if args.cli:
        cli = args.cli.split()
    else:
        script = Path(sys.executable).parent / "upgrader"
        if not script.exists():
            ap.error(f"no console script {script}: install the project into this venv, or give --cli")
        cli = [str(script)]

    info = machine_info()
    commands: list[tuple[str, list[str], float | None]] = [
        ("upgrader --help", [*cli, "--help"], GOAL_HELP_SECONDS),
        ("upgrader versions check 7.0.4.1 7.0.4.2", [*cli, "versions", "check", "7.0.4.1", "7.0.4.2"], None),
        ("python -c pass (the interpreter alone, reference)", [sys.executable, "-c", "pass"], None),
    ]
    rows: list[dict[str, Any]] = []
    for label, command, goal in commands:
        sys.stderr.write(f"[cli_startup] {label}: {args.runs} runs\n")
        times, code = time_command(command, args.runs)
        rows.append({"command": label, "argv": command, "exit": code, "goal": goal, "times": times,
                     **stats(times)})
    imports = slowest_imports([*cli, "--help"])
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    help_row = rows[0]
    met = help_row["median"] < GOAL_HELP_SECONDS and help_row["exit"] == 0
    L = ["# CLI start-up benchmark", "",
         f"- date: {info['date']}",
         f"- machine: {info['nproc']} CPU(s) (`nproc`), {info['cpu']}; {info['platform']}",
         f"- Python {info['python']}; upgrader commit {info['commit']}",
         (f"- load average at start: {', '.join(map(str, info['loadavg_at_start']))}; at end: "
          f"{', '.join(map(str, info['loadavg_at_end']))}"),
         (f"- CLI: `{' '.join(cli)}`; {args.runs} timed runs per command after {WARMUP} warm-up runs; wall time "
          "from spawn to exit"), "",
         ("Goal met" if met else "**GOAL MISSED**") + f": median of `upgrader --help` {help_row['median']:.3f} s "
         f"(goal < {GOAL_HELP_SECONDS} s).", "",
         "| command | median s | min s | p90 s | max s | exit | goal |",
         "|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = "–" if r["goal"] is None else (f"< {r['goal']} s: " + (
            "met" if r["median"] < r["goal"] and r["exit"] == 0 else "**MISSED**"))
        L.append(f"| `{r['command']}` | {r['median']:.3f} | {r['min']:.3f} | {r['p90']:.3f} | {r['max']:.3f} | "
                 f"{r['exit']} | {verdict} |")
    L += ["", ("Slowest imports of one `upgrader --help` run (`PYTHONPROFILEIMPORTTIME`, nesting depth 0-2, "
               "milliseconds; cumulative includes what they import, so nested rows are part of their parents):"), "",
          "| module | depth | cumulative ms | self ms |", "|---|---|---|---|"]
    for m in imports:
        L.append(f"| `{m['module']}` | {m['depth']} | {m['cumulative_us'] / 1000:.1f} | {m['self_us'] / 1000:.1f} |")
    L += ["", ("How to read: the median is the figure to compare with the goal; min shows what the machine can do "
               "when nothing else runs, max and p90 show noise (other processes). The difference to `python -c pass` "
               "is what the CLI itself costs (imports and argument parsing)."), ""]
    report = "\n".join(L)

    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli_startup.md").write_text(report, encoding="utf-8")
    (out / "cli_startup.json").write_text(json.dumps({"machine": info, "goal_help_seconds": GOAL_HELP_SECONDS,
                                                      "runs": args.runs, "warmup": WARMUP, "commands": rows,
                                                      "slowest_imports": imports}, indent=1) + "\n",
                                          encoding="utf-8")
    sys.stdout.write(report)
    sys.stderr.write(f"[cli_startup] written {out / 'cli_startup.md'} and {out / 'cli_startup.json'}\n")
    return 1 if (args.check and not met) else 0


if __name__ == "__main__":
    sys.exit(main())
