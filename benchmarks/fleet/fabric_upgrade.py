#!/usr/bin/env python3
"""Fabric: fabric_upgrade.py N

One fabric Connection per host, the N hosts in a ThreadPoolExecutor(N); each host runs the five
steps one after the other, one `c.run(..., hide=True)` per step (no barrier between hosts), each
step sent as `bash -c '<set -e; export D=... P=...><step text>'`. The host key is checked against
$BENCH_ROOT/ssh/known_hosts (paramiko's RejectPolicy instead of Fabric's default AutoAddPolicy).
Exit 0 only when every host completed every step.
"""

from __future__ import annotations

import os
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko
from fabric import Connection

STEPS = sorted((Path(__file__).resolve().parent / "steps").glob("[0-9]_*.sh"))


def env() -> tuple[Path, int, int]:
    root = Path(os.environ.get("BENCH_ROOT", "/tmp/upgrader-bench"))
    values = {"BENCH_SSH_PORT": os.environ.get("BENCH_SSH_PORT", "2222"),
              "BENCH_HTTP_BASE": os.environ.get("BENCH_HTTP_BASE", "18000")}
    recorded = root / "bench.env"
    if recorded.is_file():
        for line in recorded.read_text().splitlines():
            key, _, value = line.partition("=")
            if key in values:
                values[key] = value
    return root, int(values["BENCH_SSH_PORT"]), int(values["BENCH_HTTP_BASE"])


def upgrade(i: int, root: Path, port: int, http_base: int, texts: list[tuple[str, str]]) -> str | None:
    prefix = f"set -e; export D={root}/hosts/h{i} P={http_base + i}\n"
    c = Connection("127.0.0.1", user="root", port=port,
                   connect_kwargs={"key_filename": str(root / "ssh" / "client_key"),
                                   "look_for_keys": False, "allow_agent": False})
    c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.client.load_host_keys(str(root / "ssh" / "known_hosts"))
    try:
        for name, text in texts:
            result = c.run("bash -c " + shlex.quote(prefix + text), hide=True, warn=True, in_stream=False)
            if result.exited != 0:
                return f"h{i}: step {name} exited {result.exited}: {result.stderr.strip()[-300:]}"
        return None
    except Exception as e:  # a host's failure is reported, the others go on
        return f"h{i}: {type(e).__name__}: {e}"
    finally:
        c.close()


def main() -> int:
    n = int(sys.argv[1])
    root, port, http_base = env()
    texts = [(p.stem, p.read_text()) for p in STEPS]
    with ThreadPoolExecutor(max_workers=n) as pool:
        errors = [e for e in pool.map(lambda i: upgrade(i, root, port, http_base, texts), range(1, n + 1)) if e]
    for e in errors:
        print("fabric:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
