"""``upgrader demo``: the whole story in a sandbox on this machine, with no questions asked.

It builds a sandbox (the sample middleware installed at 7.0.4.1 and running on a free loopback
port, a catalog of packages, an inventory), then runs the real commands, printing each one as
a user would type it: a refused minor upgrade, an allowed upgrade, a patch, and a failing
upgrade that is rolled back automatically. It leaves no process running unless asked to.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..exit_codes import ExitCode
from ._common import console

__all__ = ["cmd_demo", "build_sandbox", "Sandbox"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sandbox:
    """A demo directory: catalog/, hosts/app-01 (the install), inventory.yaml, runs/, plans/."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.catalog = root / "catalog"
        self.install_dir = root / "hosts" / "app-01"
        self.inventory = root / "inventory.yaml"
        self.plans = root / "plans"

    def service_env(self) -> dict[str, str]:
        return {**os.environ, "PYTHON": sys.executable}

    def start_service(self) -> None:
        subprocess.run([str(self.install_dir / "bin" / "start.sh")], check=True, env=self.service_env(),
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_version(None, timeout=15)

    def stop_service(self) -> None:
        pid_file = self.install_dir / "run" / "server.pid"
        subprocess.run([str(self.install_dir / "bin" / "stop.sh")], env=self.service_env(),
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (pid_file.exists() or self.answers()):
            time.sleep(0.05)

    def answers(self) -> str | None:
        from ..sample import http_get

        try:
            status, body = http_get(self.port, "/version", timeout=1)
        except OSError:
            return None
        return body if status == 200 else None

    def wait_version(self, version: str | None, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            got = self.answers()
            if got and (version is None or got == version):
                return got
            if time.monotonic() > deadline:
                raise InputError(f"the sample service on port {self.port} did not answer {version or 'at all'}")
            time.sleep(0.05)


def build_sandbox(root: Path, port: int | None = None) -> Sandbox:
    from .. import sample

    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise InputError("the demo directory is not empty", path=str(root),
                         hint="give a new or empty directory with --dir")
    box = Sandbox(root, port or free_port())
    sample.build_packages(box.catalog)
    sample.install(box.install_dir, port=box.port)
    box.inventory.write_text(
        "# The demo's inventory: one host on this machine.\n"
        "format: 1\n"
        "hosts:\n"
        "  app-01:\n"
        "    address: local\n"
        f"    install_dir: {box.install_dir}\n"
        "    product: sample-middleware\n"
        "    playbook: sample-middleware\n"
        "    maintenance_until: 2099-12-31\n"
        "    vars:\n"
        f"      port: \"{box.port}\"\n"
        "groups:\n"
        "  demo: [app-01]\n", encoding="utf-8")
    box.plans.mkdir()
    return box


def _step(c: Any, title: str) -> None:
    c.print()
    c.rule(f"[bold]{title}")


def _upgrader(c: Any, box: Sandbox, *argv: str) -> int:
    from ..cli import main

    shown = " ".join(shlex.quote(a) for a in argv)
    c.print(f"[bold cyan]$ upgrader --home {shlex.quote(str(box.root))} {shown}[/bold cyan]")
    return main(["--home", str(box.root), *argv])


def _expect(c: Any, got: int, want: int, what: str) -> None:
    if got != want:
        raise DemoFailed(f"{what}: expected exit {want}, got {got}")
    c.print(f"[dim]exit {got}: {what}[/dim]")


class DemoFailed(InputError):
    pass


def cmd_demo(args: argparse.Namespace) -> int:
    c = console()
    root = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="upgrader-demo-"))
    started = time.monotonic()
    _step(c, "1. A sandbox: sample middleware 7.0.4.1 running on this machine")
    box = build_sandbox(root)
    box.start_service()
    c.print(f"sandbox [bold]{root}[/bold]; app-01 answers [bold]{box.answers()}[/bold] on 127.0.0.1:{box.port}")
    try:
        _story(c, box)
    finally:
        if not args.keep_running:
            box.stop_service()
    _step(c, f"Done in {time.monotonic() - started:.0f}s. Try next, on the same sandbox:")
    home = shlex.quote(str(root))
    for line in (
        f"upgrader versions check 7.0.4.3 7.0.5.0",
        f"upgrader --home {home} plan --inventory {home}/inventory.yaml --to 7.0.5.0 --catalog {home}/catalog "
        f"-o {home}/plans/to-7.0.5.0.json",
        f"upgrader --home {home} run {home}/plans/to-7.0.5.0.json",
        f"upgrader --home {home} rollback RUN_ID        # run ids: ls {home}/runs",
        f"upgrader package verify {home}/catalog/sample-middleware-7.0.5.0.tar.gz --catalog {home}/catalog",
    ):
        c.print(f"  {line}")
    if not args.keep_running:
        c.print(f"(the sample service was stopped; start it again with {home}/hosts/app-01/bin/start.sh)")
    return ExitCode.OK


def _story(c: Any, box: Sandbox) -> None:
    inv, cat = str(box.inventory), str(box.catalog)

    _step(c, "2. A minor-version upgrade (7.0 → 7.1) is not a free upgrade: refused, nothing touched")
    rc = _upgrader(c, box, "plan", "--inventory", inv, "--to", "7.1.0.0", "--catalog", cat,
                   "-o", str(box.plans / "to-7.1.0.0.json"))
    _expect(c, rc, ExitCode.POLICY_REFUSED, "refused by the version policy")

    for number, version, what in (("3", "7.0.4.2", "A free maintenance upgrade: 7.0.4.1 → 7.0.4.2"),
                                  ("4", "7.0.4.3", "A patch (overlays files, removes one): 7.0.4.2 → 7.0.4.3")):
        _step(c, f"{number}. {what}")
        plan = str(box.plans / f"to-{version}.json")
        _expect(c, _upgrader(c, box, "plan", "--inventory", inv, "--to", version, "--catalog", cat, "-o", plan),
                ExitCode.OK, "plan allowed")
        _expect(c, _upgrader(c, box, "run", plan), ExitCode.OK, "upgraded and healthy")
        c.print(f"app-01 now answers [bold green]{box.wait_version(version, 5)}[/bold green]")

    _step(c, "5. An upgrade that installs fine but fails its health probes: rolled back automatically")
    plan = str(box.plans / "to-7.0.4.5.json")
    _expect(c, _upgrader(c, box, "plan", "--inventory", inv, "--to", "7.0.4.5", "--catalog", cat, "-o", plan),
            ExitCode.OK, "plan allowed")
    _expect(c, _upgrader(c, box, "run", plan), ExitCode.ROLLED_BACK, "failed, rolled back, old version healthy")
    c.print(f"app-01 answers [bold yellow]{box.wait_version('7.0.4.3', 5)}[/bold yellow] again; "
            "its configuration and data are untouched")
