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

from ...core.errors import InputError
from ...core.exit_codes import ExitCode
from ._common import console

__all__ = ["cmd_demo", "build_sandbox", "Sandbox"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sandbox:
    """A demo directory: catalog/ (signed), keys/, policy.yaml, hosts/app-01 (the install), inventory.yaml,
    plans/, approvals/, runs/."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.catalog = root / "catalog"
        self.install_dir = root / "hosts" / "app-01"
        self.inventory = root / "inventory.yaml"
        self.plans = root / "plans"
        self.approvals = root / "approvals"
        self.keys = root / "keys"
        self.engineer_key = self.keys / "engineer"
        self.operator_key = self.keys / "operator"  # runs the upgrades, signs the audit log
        self.requester_key = self.keys / "requester"  # asks for upgrades: signs the plans
        self.vendor_key = self.keys / "vendor"
        self.policy = root / "policy.yaml"

    def write_inventory(self) -> None:
        """inventory.yaml: the one host app-01 on this machine (this sandbox's install and port)."""
        self.inventory.write_text(
            "# The demo's inventory: one host on this machine.\n"
            "format: 1\n"
            "hosts:\n"
            "  app-01:\n"
            "    address: local\n"
            f"    install_dir: {self.install_dir}\n"
            "    product: sample-middleware\n"
            "    playbook: sample-middleware\n"
            "    maintenance_until: 2099-12-31\n"
            "    vars:\n"
            f"      port: \"{self.port}\"\n"
            "groups:\n"
            "  demo: [app-01]\n", encoding="utf-8")

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
        from ...sample import http_get

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
    from ... import sample

    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise InputError("the demo directory is not empty", path=str(root),
                         hint="give a new or empty directory with --dir")
    box = Sandbox(root, port or free_port())
    sample.build_packages(box.catalog)
    sample.install(box.install_dir, port=box.port)
    _trust(box)
    box.write_inventory()
    box.plans.mkdir()
    return box


def _trust(box: Sandbox) -> None:
    """Engineer, operator and vendor keys, their allowed_signers files, a policy that names them, a signed catalog."""
    from ...trust.keys import generate_key, load_private_key, signer_line
    from ...trust.catalog_trust import sign_catalog

    lines = []
    for name, principal, namespaces in (("engineer", "engineer@vendor", "upgrader-approval"),
                                        ("operator", "operator@customer", "upgrader-plan,upgrader-audit"),
                                        ("requester", "requester@customer", "upgrader-plan")):
        generate_key(box.keys / name, principal)
        lines.append(signer_line(principal, load_private_key(box.keys / name).public_key(), namespaces))
    (box.keys / "allowed_signers").write_text("\n".join(lines) + "\n", encoding="utf-8")
    generate_key(box.vendor_key, "vendor-release")
    (box.keys / "vendor_signers").write_text(
        signer_line("vendor-release", load_private_key(box.vendor_key).public_key(), "upgrader-catalog") + "\n",
        encoding="utf-8")
    box.policy.write_text(
        "# The demo's policy: the shipped default rules, plus who may approve, who signs the audit log and whose\n"
        "# catalogs are trusted.\n"
        "format: 1\n"
        "approvals:\n"
        "  required: 1\n"
        "  allow_self_approval: false\n"
        "  allow_unsigned_plans: false                # every plan is signed by whoever asks for it (plan --key)\n"
        "  allowed_signers: keys/allowed_signers     # engineers (principal, key) who may approve plans\n"
        "audit:\n"
        "  allowed_signers: keys/allowed_signers     # operators whose keys sign audit checkpoints\n"
        "catalog:\n"
        "  trusted_signers: keys/vendor_signers      # the vendor keys that sign catalog.yaml\n"
        "window:\n"
        "  # The demo runs at any hour. A real policy keeps the default, after_hours_approval: outside\n"
        "  # weekdays 09:00-18:00 Asia/Shanghai (and on public holidays) a run needs 'approve --after-hours'.\n"
        "  outside: allow\n", encoding="utf-8")
    sign_catalog(box.catalog / "catalog.yaml", load_private_key(box.vendor_key))
    box.approvals.mkdir()


def _step(c: Any, title: str) -> None:
    c.print()
    c.rule(f"[bold]{title}")


def _upgrader(c: Any, box: Sandbox, *argv: str) -> int:
    from .. import main

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
    me = _how_to_call()
    for line in (
        "upgrader versions check 7.0.4.3 7.0.5.0",
        f"upgrader --home {home} plan --inventory {home}/inventory.yaml --to 7.0.5.0 --catalog {home}/catalog "
        f"--key {home}/keys/requester -o {home}/plans/to-7.0.5.0.json",
        f"upgrader --home {home} approve {home}/plans/to-7.0.5.0.json --key {home}/keys/engineer "
        f"-o {home}/approvals/to-7.0.5.0.approval",
        f"upgrader --home {home} run {home}/plans/to-7.0.5.0.json --approval {home}/approvals/to-7.0.5.0.approval",
        f"upgrader --home {home} rollback RUN_ID        # run ids: ls {home}/runs",
        f"upgrader package verify {home}/catalog/sample-middleware-7.0.5.0.tar.gz --catalog {home}/catalog",
    ):
        c.print(f"  {me}{line.removeprefix('upgrader')}", markup=False)
    if not args.keep_running:
        c.print(f"(the sample service was stopped; start it again with {home}/hosts/app-01/bin/start.sh)")
    return ExitCode.OK


def _how_to_call() -> str:
    """How the user can call this upgrader again: ``upgrader`` when that name on PATH is this program, else
    the path it was started by (``.venv/bin/upgrader`` after the README's install, with no venv active)."""
    import shutil
    import sys

    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if Path(argv0).name != "upgrader":  # python -m upgrader, or a test calling main()
        return "upgrader"
    on_path = shutil.which("upgrader")
    if on_path and Path(on_path).resolve() == Path(argv0).resolve():
        return "upgrader"
    try:
        shown = str(Path(argv0).resolve().relative_to(Path.cwd()))
        shown = shown if "/" in shown else f"./{shown}"
    except ValueError:
        shown = str(Path(argv0).resolve())
    return shlex.quote(shown)


def _approve(c: Any, box: Sandbox, plan: str, version: str) -> str:
    approval = str(box.approvals / f"to-{version}.approval")
    _expect(c, _upgrader(c, box, "approve", plan, "--key", str(box.engineer_key), "--expires", "2h",
                         "--comment", f"demo: upgrade to {version}", "-o", approval), ExitCode.OK, "approved")
    return approval


def _story(c: Any, box: Sandbox) -> None:
    inv, cat = str(box.inventory), str(box.catalog)

    def plan_to(version: str, want: int = ExitCode.OK) -> str:
        plan = str(box.plans / f"to-{version}.json")
        rc = _upgrader(c, box, "plan", "--inventory", inv, "--to", version, "--catalog", cat, "--key",
                       str(box.requester_key), "-o", plan)
        _expect(c, rc, want, "plan allowed" if want == ExitCode.OK else "refused by the version policy")
        return plan

    _step(c, "2. A minor-version upgrade (7.0 → 7.1) is not a free upgrade: refused, nothing touched")
    plan_to("7.1.0.0", ExitCode.POLICY_REFUSED)

    _step(c, "3. A free maintenance upgrade, 7.0.4.1 → 7.0.4.2: plan, an engineer approves, run")
    plan = plan_to("7.0.4.2")
    approval = _approve(c, box, plan, "7.0.4.2")
    _expect(c, _upgrader(c, box, "run", plan, "--approval", approval), ExitCode.OK, "upgraded and healthy")
    c.print(f"app-01 now answers [bold green]{box.wait_version('7.0.4.2', 5)}[/bold green]")

    _step(c, "4. A patch (overlays files, removes one), 7.0.4.2 → 7.0.4.3; an approval of another plan is refused")
    plan = plan_to("7.0.4.3")
    _expect(c, _upgrader(c, box, "run", plan, "--approval", approval), ExitCode.APPROVAL_REFUSED,
            "refused: that approval is for the 7.0.4.2 plan (and already used); nothing touched")
    approval = _approve(c, box, plan, "7.0.4.3")
    _expect(c, _upgrader(c, box, "run", plan, "--approval", approval), ExitCode.OK, "patched and healthy")
    c.print(f"app-01 now answers [bold green]{box.wait_version('7.0.4.3', 5)}[/bold green]")

    _step(c, "5. An upgrade that installs fine but fails its health probes: rolled back automatically")
    plan = plan_to("7.0.4.5")
    approval = _approve(c, box, plan, "7.0.4.5")
    _expect(c, _upgrader(c, box, "run", plan, "--approval", approval), ExitCode.ROLLED_BACK,
            "failed, rolled back, old version healthy")
    c.print(f"app-01 answers [bold yellow]{box.wait_version('7.0.4.3', 5)}[/bold yellow] again; "
            "its configuration and data are untouched")
