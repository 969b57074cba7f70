#!/usr/bin/env python3
"""Write the fleet benchmark's table from $BENCH_ROOT/results (what bench.sh recorded).

    summarize.py [-o FILE]      default FILE: benchmarks/results/fleet-upgrade.md; '-' for stdout only

For every N benchmarked: tool, N, runs, median, min and max wall time (warm-up runs left out), the
median per host and the ratio to ssh_plain's median in the same session. The header names the
upgrader commit measured, the machine (benchmarks/machine.py), the tools' versions, when each session
ran with the load average at its start and end, and whether every run upgraded all N hosts (the
reset log). No path of the machine is written. The report is also printed on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

FLEET = Path(__file__).resolve().parent
REPO = FLEET.parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import machine_info  # noqa: E402

ORDER = ["ssh_plain", "fabric", "ansible", "pyinfra", "upgrader"]


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key:
            out[key] = " ".join(shlex.split(value)) if value else ""
    return out


def versions(root: Path) -> list[str]:
    found = []
    for venv, names in ((root / "venv", ("ansible-core", "pyinfra", "fabric", "paramiko")),
                        (root / "venv-upgrader", ("fabric", "paramiko", "cryptography"))):
        py = venv / "bin" / "python"
        if not py.exists():
            continue
        code = ("import sys, importlib.metadata as m; print(sys.version.split()[0]); "
                "[print(n, m.version(n)) for n in sys.argv[1:]]")
        out = subprocess.run([str(py), "-c", code, *names], capture_output=True, text=True).stdout.split("\n")
        label = "reference tools" if venv.name == "venv" else "upgrader's dependencies"
        found.append(f"{label}: Python {out[0]}, " + ", ".join(x for x in out[1:] if x))
    for cmd in (["ssh", "-V"], ["hyperfine", "--version"]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            found.append((r.stdout + r.stderr).strip().splitlines()[0])
        except (OSError, IndexError):
            pass
    return found


def validity(root: Path) -> list[str]:
    """Per N, its last session: every reset that followed a run (warm-up included) and the check after
    the last run must find N/N hosts at 2.0."""
    log = root / "results" / "reset.log"
    if not log.is_file():
        return ["no reset log"]
    lines, sessions = log.read_text().splitlines(), []
    current = None
    for line in lines:
        if " session N=" in line:
            current = {"n": int(re.search(r"session N=(\d+)", line).group(1)), "first": True, "ok": 0, "bad": []}
            sessions.append(current)
        elif current and (m := re.search(r"(reset N=|after the last run N=)(\d+): found (\d+)/(\d+)", line)):
            if current["first"] and m.group(1) == "reset N=":
                current["first"] = False  # the state left from before the session
                continue
            if m.group(3) == m.group(4):
                current["ok"] += 1
            else:
                current["bad"].append(line)
    latest = {s["n"]: s for s in sessions}  # the session whose hf_N.json is the table's (an aborted one is older)
    out = []
    for s in latest.values():
        text = f"N={s['n']}: {s['ok']} runs (warm-ups included) checked afterwards, all {s['n']}/{s['n']} hosts at 2.0" if not s["bad"] \
            else f"N={s['n']}: **{len(s['bad'])} runs left hosts below 2.0**: " + "; ".join(s["bad"])
        out.append(text)
    return out


def controller(path: Path, warmup: int) -> tuple[str, str]:
    """Median controller CPU (user + system) and peak RSS of the timed runs in a GNU time file."""
    if not path.is_file():
        return "-", "-"
    runs = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            try:
                runs.append((float(parts[1]) + float(parts[2]), int(parts[3]) / 1024))
            except ValueError:
                continue
    runs = runs[warmup:]
    if not runs:
        return "-", "-"
    return f"{statistics.median(c for c, _ in runs):.2f}", f"{statistics.median(m for _, m in runs):.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=str(REPO / "benchmarks" / "results" / "fleet-upgrade.md"))
    a = ap.parse_args()
    root = Path(os.environ.get("BENCH_ROOT", "/tmp/upgrader-bench"))
    results = root / "results"
    sessions = []
    for f in sorted(results.glob("hf_*.json"), key=lambda p: int(p.stem.split("_")[1])):
        n = int(f.stem.split("_")[1])
        env_file = results / f"session_{n}.env"
        sessions.append((n, json.loads(f.read_text())["results"], read_env(env_file) if env_file.is_file() else {}))
    if not sessions:
        print(f"summarize.py: no results in {results}: run bench.sh first", file=sys.stderr)
        return 2

    m = machine_info()
    commits = sorted({s[2].get("commit", "?") for s in sessions} - {"none"})
    lines = ["# Fleet benchmark: upgrade N hosts 1.0 -> 2.0 (benchmarks/fleet)", ""]
    lines.append(f"**upgrader commit measured:** {', '.join(commits) or 'not measured'} "
                 "(a `git archive` snapshot made by `bench.sh`)  ")
    lines.append(f"**Machine:** {m['nproc']} CPUs, {m['cpu']}, {m['platform']}; the controller, sshd and every "
                 "simulated host share it  ")
    lines.append("**Versions:** " + "; ".join(versions(root)) + "  ")
    lines.append("**Sessions** (one per N, the tools side by side, `reset.sh N` before every run):")
    for n, _, env in sessions:
        lines.append(f"- N={n}: {env.get('warmup', '?')} warm-up + {env.get('runs', '?')} runs each, "
                     f"{env.get('start', '?')} to {env.get('end', '?')}, load average {env.get('load_start', '?')} "
                     f"at the start, {env.get('load_end', '?')} at the end; timer {env.get('timer', '?')}")
    lines.append("")
    lines.append("**Validity** (every run must leave all N hosts at 2.0): " + "; ".join(validity(root)))
    lines.append("")
    lines.append("| tool | N | runs | wall median s | min | max | per host s (median/N) | ratio vs ssh_plain "
                 "| controller CPU s (median) | controller peak RSS MiB (median) |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for n, rows, env in sessions:
        by_name = {r["command"]: r for r in rows}
        base = by_name.get("ssh_plain", {}).get("median")
        for name in ORDER + sorted(set(by_name) - set(ORDER)):
            r = by_name.get(name)
            if not r:
                continue
            ratio = f"{r['median'] / base:.2f}" if base else "-"
            cpu, rss = controller(results / f"time_{name}_{n}.txt", int(env.get("warmup", "0") or 0))
            lines.append(f"| {name} | {n} | {len(r['times'])} | {r['median']:.2f} | {r['min']:.2f} | {r['max']:.2f} | "
                         f"{r['median'] / n:.3f} | {ratio} | {cpu} | {rss} |")
    lines.append("")
    lines.append("Wall times of the whole tool process, from start to exit (hyperfine). Controller CPU is user + "
                 "system time of the tool's process and the children it waited for, peak RSS the largest of them "
                 "(GNU time; ansible's ControlPersist ssh masters are not waited for, so not counted). Warm-up "
                 "runs are left out. Compare only rows of the same N (one session); how to reproduce and what "
                 "each tool does: `benchmarks/fleet/README.md`.")
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if a.output != "-":
        Path(a.output).write_text(report)
        print(f"summarize.py: wrote {a.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
