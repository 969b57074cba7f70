#!/usr/bin/env python3
"""upgrader, the fifth contender of the fleet benchmark: contender.py N upgrades hosts h1..hN.

bench.sh runs it through upgrader.sh, from a snapshot of one commit:
    upgrader.sh SNAPSHOT N    (PYTHONPATH=SNAPSHOT, upgrader's dependencies from $BENCH_ROOT/venv-upgrader)

One process does what a requester, an engineer and the tool do for a real upgrade, all of it timed:
plan (read every host's version over SSH, policy decision, package digest from the signed catalog,
signed with the requester's key, as plans must be), approve
(the engineer's SSH signature of the plan), run (preflight, verified backup, stop, install, start,
observe until /VERSION answers 2.0, then write version.txt like the workload's step 5), audit log
with a signed checkpoint. Its own files live under $BENCH_ROOT/upgrader (made on the first call:
keys, a signed catalog holding one 2.0 package repacked from h1's release tarball, the policy, the
playbook in its playbooks/ directory, the inventory naming it by name). The package is sent to each
host over SFTP once (the warm-up run) and found again by its digest afterwards, as the other tools
find release/middleware-2.0.tar.gz already on the hosts.
"""

from __future__ import annotations

import os
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def bench_env() -> tuple[Path, int, int]:
    """BENCH_ROOT, the sshd's port and the hosts' HTTP base port (the ones setup.sh recorded win)."""
    root = Path(os.environ.get("BENCH_ROOT", "/tmp/upgrader-bench"))
    values = {"BENCH_SSH_PORT": os.environ.get("BENCH_SSH_PORT", "2222"),
              "BENCH_HTTP_BASE": os.environ.get("BENCH_HTTP_BASE", "18000")}
    env = root / "bench.env"
    if env.is_file():
        for line in env.read_text().splitlines():
            key, _, value = line.partition("=")
            if key in values:
                values[key] = value
    return root, int(values["BENCH_SSH_PORT"]), int(values["BENCH_HTTP_BASE"])


def prepare(root: Path, home: Path) -> None:
    """Keys, policy, playbook, a signed catalog with the 2.0 package (made once; later calls reuse them;
    the policy and the playbook are rewritten when this directory's differ)."""
    from upgrader.trust.catalog import write_catalog
    from upgrader.trust.keys import generate_key, load_private_key, signer_line
    from upgrader.trust.package import PackageMeta, build_package
    from upgrader.trust.catalog_trust import sign_catalog

    policy = ("format: 1\n"
              "rules:\n"
              "  free_levels: [1, 2, 3, 4]   # the bench middleware goes 1.0 -> 2.0; that is its maintenance line\n"
              "  require_maintenance_contract: false\n"
              "approvals: {allowed_signers: keys/allowed_signers}\n"
              "audit: {allowed_signers: keys/allowed_signers}\n"
              "catalog: {trusted_signers: keys/vendor_signers}\n"
              "window: {outside: allow}   # a benchmark runs at any hour; the window is still evaluated\n")
    if not (home / "policy.yaml").is_file() or (home / "policy.yaml").read_text() != policy:
        (home / "policy.yaml").write_text(policy)
    # an inventory names its playbook by name only; upgrader takes it from the operator's playbook
    # directory (HOME/playbooks), so the benchmark's playbook is put there (rewritten when it differs)
    playbook = (HERE / "bench-middleware.yaml").read_text()
    installed = home / "playbooks" / "bench-middleware.yaml"
    if not installed.is_file() or installed.read_text() != playbook:
        installed.parent.mkdir(parents=True, exist_ok=True)
        installed.write_text(playbook)
    keys = home / "keys"
    # the requester signs the plan (plans must be signed), the engineer approves it, the operator's
    # key closes the audit log with a checkpoint, the vendor's signs the catalog
    people = (("requester", "requester@bench", "upgrader-plan"),
              ("engineer", "engineer@vendor", "upgrader-approval"),
              ("operator", "operator@bench", "upgrader-audit"),
              ("vendor", "vendor-release", "upgrader-catalog"))
    if (home / "catalog" / "catalog.yaml.sig").is_file() and all((keys / f"{name}.signer").is_file() for name, _, _ in people):
        return
    lines = []
    for name, principal, ns in people:
        if not (keys / name).exists():
            generate_key(keys / name, principal)
        line = signer_line(principal, load_private_key(keys / name).public_key(), ns)
        (keys / f"{name}.signer").write_text(line + "\n")
        lines.append(line)
    (keys / "allowed_signers").write_text("\n".join(lines[:3]) + "\n")
    (keys / "vendor_signers").write_text(lines[3] + "\n")
    if (home / "catalog" / "catalog.yaml.sig").is_file():
        return
    catalog = home / "catalog"
    catalog.mkdir(parents=True, exist_ok=True)
    release = root / "hosts" / "h1" / "release" / "middleware-2.0.tar.gz"
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        with tarfile.open(release) as tar:
            tar.extractall(tmp, filter="data")
        built = build_package(Path(tmp) / "middleware-2.0", catalog / "bench-middleware-2.0.tar.gz",
                              PackageMeta(product="bench-middleware", version="2.0", kind="full"), compresslevel=1)
    write_catalog(catalog, [built], serial=1)
    sign_catalog(catalog / "catalog.yaml", load_private_key(keys / "vendor"))


def inventory(root: Path, home: Path, port: int, http_base: int, n: int) -> Path:
    path = home / f"inventory-{n}.yaml"
    hosts = []
    for i in range(1, n + 1):
        d = root / "hosts" / f"h{i}"
        hosts.append(f"  h{i}:\n    install_dir: {d}/current\n    vars: {{hostdir: {d}, port: \"{http_base + i}\"}}\n")
    path.write_text(
        "format: 1\n"
        "defaults:\n"
        "  address: 127.0.0.1\n"
        f"  port: {port}\n"
        "  user: root\n"
        f"  key: {root}/ssh/client_key\n"
        f"  known_hosts: {root}/ssh/known_hosts\n"
        "  product: bench-middleware\n"
        "  playbook: bench-middleware\n"
        "hosts:\n" + "".join(hosts))
    return path


def bytecode() -> None:
    """Compiled modules, as an installed package has them (pip compiles on install). This checkout is
    an editable install: with PYTHONDONTWRITEBYTECODE set, every run would compile upgrader from source
    (~0.07 s of CPU) while the other contenders load their installed bytecode. Up-to-date files are skipped."""
    if sys.dont_write_bytecode:
        import compileall

        for package in ("upgrader", "version_policy"):
            compileall.compile_dir(HERE.parent.parent / package, quiet=1)


def main() -> int:
    n = int(sys.argv[-1])
    bytecode()
    root, port, http_base = bench_env()
    home = root / "upgrader"
    home.mkdir(parents=True, exist_ok=True)
    prepare(root, home)
    inv = inventory(root, home, port, http_base, n)
    from upgrader.cli import main as upgrader

    base = ["--home", str(home)]
    plan, approval = home / f"plan-{n}.json", home / f"approval-{n}"
    rc = upgrader([*base, "plan", "--inventory", str(inv), "--to", "2.0", "--catalog", str(home / "catalog"),
                   "--key", str(home / "keys" / "requester"), "-o", str(plan), "--json"])
    if rc:
        return rc
    rc = upgrader([*base, "approve", str(plan), "--key", str(home / "keys" / "engineer"), "--expires", "1h",
                   "-o", str(approval), "--json"])
    if rc:
        return rc
    forks = os.environ.get("UPGRADER_BENCH_FORKS", str(n))
    return upgrader([*base, "run", str(plan), "--approval", str(approval), "--forks", forks, "--json"])


if __name__ == "__main__":
    with open(os.devnull, "w") as quiet:  # hyperfine shows no output; keep the JSON in the run journal
        sys.stdout = quiet
        sys.exit(main())
