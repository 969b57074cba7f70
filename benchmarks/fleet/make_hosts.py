#!/usr/bin/env python3
"""Make the simulated middleware hosts h1..hN under $BENCH_ROOT/hosts (called by setup.sh).

    make_hosts.py N [FILES=200] [TOTAL_MB=20]

Host hI is the directory hosts/hI:
    pristine/          version 1.0: VERSION ("1.0") and FILES files of random bytes, TOTAL_MB MiB in all
                       (reset.sh rebuilds current/ from it as a copy before every timed run)
    release/middleware-2.0.tar.gz
                       version 2.0, the same shape with other random bytes, under middleware-2.0/
    run/               server.pid and server.log of the HTTP server (reset.sh starts it)
    backups/           where the workload's backup step writes
Every host has its own bytes (nothing shared between hosts, as between real machines). A host that
exists (hosts/hI/.complete) is kept, so running setup.sh again is cheap; delete hosts/ to change sizes.
Hosts are built in a temporary directory and renamed into place, so an interrupted set-up leaves no
half-made host.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def tree_files(files: int, total: int) -> list[tuple[str, int]]:
    """(relative path, size): a few config files and FILES-2 module files sharing TOTAL bytes."""
    modules = max(files - 2, 1)
    size, extra = divmod(total, modules)
    out = [("conf/server.properties", 0), ("conf/logging.properties", 0)]
    out += [(f"lib/module-{k:04d}.jar", size + (1 if k < extra else 0)) for k in range(modules)]
    return out


def write_tree(dest: Path, version: str, files: int, total: int) -> None:
    (dest / "conf").mkdir(parents=True)
    (dest / "lib").mkdir()
    (dest / "VERSION").write_text(version + "\n")
    for rel, size in tree_files(files, total):
        with open(dest / rel, "wb") as f:
            if rel.startswith("conf/"):
                f.write(f"# middleware {version}\nport=8080\n".encode())
            else:
                f.write(os.urandom(size))


def make_host(hosts: Path, i: int, files: int, total: int) -> str:
    final = hosts / f"h{i}"
    if (final / ".complete").is_file():
        return f"h{i} kept"
    tmp = hosts / f".h{i}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)
    write_tree(tmp / "pristine", "1.0", files, total)
    stage = tmp / "stage" / "middleware-2.0"
    write_tree(stage, "2.0", files, total)
    (tmp / "release").mkdir()
    with tarfile.open(tmp / "release" / "middleware-2.0.tar.gz", "w:gz") as tar:
        tar.add(stage, arcname="middleware-2.0")
    shutil.rmtree(tmp / "stage")
    for d in ("run", "backups"):
        (tmp / d).mkdir()
    (tmp / ".complete").write_text(f"files={files} total_bytes={total}\n")
    os.rename(tmp, final)
    return f"h{i} made"


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 3 or not all(a.isdigit() and int(a) > 0 for a in argv):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    n, files, mb = (int(a) for a in (argv + ["200", "20"][len(argv) - 1:])[:3])
    root = Path(os.environ.get("BENCH_ROOT", "/tmp/upgrader-bench"))
    hosts = root / "hosts"
    hosts.mkdir(parents=True, exist_ok=True)
    os.chmod(hosts, 0o755)
    made = 0
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for line in pool.map(make_host, [hosts] * n, range(1, n + 1), [files] * n, [mb * 1024 * 1024] * n):
            made += line.endswith("made")
    print(f"hosts: {made} made, {n - made} kept (h1..h{n}, {files} files, {mb} MiB per version)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
