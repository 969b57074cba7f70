#!/usr/bin/env python3
"""host_cpu.py N ROUNDS COMMIT...: the CPU the simulated hosts spend for one upgrader run, commit by commit.

On a loaded machine the wall times of compare.sh move with the other work on it; the CPU seconds a run costs move
much less. The hosts' side of a run (the private sshd's sessions, the host agents, the services they start) is
measured through a cgroup that holds the private sshd: every process it starts stays in it, also the agents that
outlive their connection, so the cgroup's CPU counter before and after a run is the hosts' CPU for that run. The
controller's CPU (upgrader.sh and its children) is measured beside it.

Rounds are interleaved (one run of each commit per round, the order reversed every other round), `reset.sh N`
before every run (not measured); each commit runs from the snapshot compare.sh made
($BENCH_ROOT/upgrader-src/cmp-COMMIT, 12-hex commit as compare.sh names it): run compare.sh first. Needs root and
a cgroup CPU controller (cgroup v2, or v1's cpuacct); the sshd stays in the cgroup until it is stopped.
Writes $BENCH_ROOT/results/host_cpu_N.json and prints each commit's medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

FLEET = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_ROOT", "/tmp/upgrader-bench"))


def cgroup_for(pid: int) -> Path:
    """A cgroup holding the private sshd (made and joined on first use), with a CPU counter."""
    name = "upgrader-bench-sshd-%d" % pid
    for base, counter, marker in ((Path("/sys/fs/cgroup/cpuacct"), "cpuacct.usage", "cpuacct.usage"),
                                  (Path("/sys/fs/cgroup"), "cpu.stat", "cgroup.controllers")):
        if (base / marker).exists():
            group = base / name
            group.mkdir(exist_ok=True)
            if str(pid) not in (group / "cgroup.procs").read_text().split():
                (group / "cgroup.procs").write_text(str(pid))
            return group / counter
    sys.exit("host_cpu.py: no cgroup CPU controller found under /sys/fs/cgroup")


def seconds(counter: Path) -> float:
    text = counter.read_text()
    if counter.name == "cpu.stat":  # cgroup v2: usage_usec
        return int(dict(line.split() for line in text.splitlines())["usage_usec"]) / 1e6
    return int(text) / 1e9  # v1 cpuacct.usage: nanoseconds


def has_children(pid: int) -> bool:
    for q in os.listdir("/proc"):
        if q.isdigit():
            try:
                if Path(f"/proc/{q}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                    return True
            except (OSError, IndexError):
                pass
    return False


def one_run(n: str, commit: str, pid: int, counter: Path) -> dict[str, float]:
    subprocess.run([str(FLEET / "reset.sh"), n], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    time.sleep(1)
    h0, t0, c0 = seconds(counter), time.monotonic(), os.times()
    done = subprocess.run([str(FLEET / "upgrader.sh"), str(ROOT / "upgrader-src" / f"cmp-{commit}"), n],
                          stdout=subprocess.DEVNULL)
    wall, c1 = time.monotonic() - t0, os.times()
    for _ in range(150):  # every connection closed (its sshd reaped)
        if not has_children(pid):
            break
        time.sleep(0.1)
    return {"rc": done.returncode, "wall": wall, "host_cpu": seconds(counter) - h0,
            "controller_cpu": (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)}


def main() -> int:
    if len(sys.argv) < 4:
        sys.exit("usage: host_cpu.py N ROUNDS COMMIT...")
    n, rounds, commits = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    pid = int((ROOT / "ssh" / "sshd.pid").read_text())
    counter = cgroup_for(pid)
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in commits}
    for r in range(rounds):
        for c in commits if r % 2 == 0 else commits[::-1]:
            runs[c].append(one_run(n, c, pid, counter))
            print(r, c, runs[c][-1], file=sys.stderr, flush=True)
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / f"host_cpu_{n}.json").write_text(json.dumps(runs, indent=1))
    for c, xs in runs.items():
        print(c, "runs", len(xs), "wall", round(statistics.median(x["wall"] for x in xs), 2),
              "host CPU", round(statistics.median(x["host_cpu"] for x in xs), 2),
              "(%s)" % " ".join("%.2f" % x["host_cpu"] for x in xs),
              "controller CPU", round(statistics.median(x["controller_cpu"] for x in xs), 2),
              "exit codes", sorted(set(x["rc"] for x in xs)))
    return 0 if all(x["rc"] == 0 for xs in runs.values() for x in xs) else 1


if __name__ == "__main__":
    sys.exit(main())
