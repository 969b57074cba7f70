#!/usr/bin/env python3
"""Cost of the whole-tree re-check before a root command (issue 12): how long ``tree_problems`` takes on an
install of ``--files`` files (default 20,000: 200 directories of 100 files), root's alone, so the walk goes to the
end as it does before every command root runs in the install (hostagent/processes.py root_workdir). It also times
the agent's pre-command look as a run makes it, several commands in one agent call (``root_workdir`` called
``--commands`` times in a row with nothing run in between), to show what the one-walk-per-call reuse saves.

Run as root (the tree must be root's for the walk to go to the end), on a quiet machine; it reports and asserts
nothing about time. The tree lives in a temporary directory removed at the end.

    .venv/bin/python benchmarks/root_tree_check.py
    .venv/bin/python benchmarks/root_tree_check.py --files 50000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from upgrader.hostagent import processes  # noqa: E402 - after the path above


def build(top: Path, files: int, per_dir: int = 100) -> Path:
    install = top / "install"
    for i in range(files):
        d = install / ("d%03d" % (i // per_dir))
        if i % per_dir == 0:
            d.mkdir(parents=True)
            d.chmod(0o755)
        f = d / ("f%03d.txt" % (i % per_dir))
        f.write_bytes(b"x")
        f.chmod(0o644)
    install.chmod(0o755)
    return install


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--commands", type=int, default=3, help="root commands checked in a row (one agent call)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("root_tree_check.py: run as root (the walk stops at the first file root does not own)", file=sys.stderr)
        return 2
    top = Path(tempfile.mkdtemp(prefix="root-tree-check-"))
    try:
        top.chmod(0o755)
        install = build(top, args.files)
        assert processes.tree_problems(str(install)) == [], "the tree is not root's alone"
        walk = timed(lambda: processes.tree_problems(str(install), limit=1), args.repeat)
        command = "bin/stop.sh"  # an in-install command: looked at before it runs

        def one_call() -> None:
            processes.forget_tree_checks()
            for _ in range(args.commands):
                processes.root_workdir(str(install), command)

        calls = timed(one_call, args.repeat) if hasattr(processes, "forget_tree_checks") else []
        load = os.getloadavg()[0]
        print("| what | median | min | max |")
        print("|---|---|---|---|")
        print("| tree_problems, %d files (%d runs) | %.1f ms | %.1f ms | %.1f ms |"
              % (args.files, args.repeat, statistics.median(walk) * 1e3, min(walk) * 1e3, max(walk) * 1e3))
        if calls:
            print("| %d root_workdir checks in one agent call, nothing run between | %.1f ms | %.1f ms | %.1f ms |"
                  % (args.commands, statistics.median(calls) * 1e3, min(calls) * 1e3, max(calls) * 1e3))
        print("\nnproc %d, load average %.2f, Python %s" % (os.cpu_count() or 0, load, sys.version.split()[0]))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
