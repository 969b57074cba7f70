"""What machine and which commit a benchmark ran on (every results file starts with it)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        nproc = str(len(os.sched_getaffinity(0)))
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "upgrader", "version_policy"],
                               capture_output=True, text=True, check=True).stdout.strip()
        if dirty:
            commit += f" (+{len(dirty.splitlines())} uncommitted file(s) under upgrader/, version_policy/)"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "nproc": nproc, "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform(), "commit": commit,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
