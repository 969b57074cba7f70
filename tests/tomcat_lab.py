"""An upgrader site around one real Tomcat (tests/tomcat.py): HOME with the engineer's and operator's keys, a
policy that trusts the Tomcat vendor catalog, an inventory whose one host is that install, and helpers to plan,
approve, run, roll back and resume with the shipped CLI, in-process or as a child process.

``quick_playbook`` writes the shipped ``tomcat`` playbook unchanged except for its observation window, into
HOME/playbooks (the operator's own playbooks, found before the shipped ones), so that the tests that are not
about the window do not each wait 30 s; one test runs the shipped playbook as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tomcat import Tomcat
from upgrader.cli import main
from upgrader.trust.keys import generate_key, load_private_key, signer_line
from upgrader.core.playbook import shipped_playbooks_dir

__all__ = ["Lab", "Run", "make_lab", "quick_playbook", "conf_digest"]


@dataclass(frozen=True)
class Run:
    """A command that runs hosts (run, resume, rollback): its exit code, output and run directory."""

    rc: int
    dir: Path | None
    out: str = ""

    @property
    def id(self) -> str:
        assert self.dir is not None, f"the command left no run directory (exit {self.rc}): {self.out[-2000:]}"
        return self.dir.name

    def result(self, name: str = "result.json") -> dict[str, Any]:
        assert self.dir is not None
        return json.loads((self.dir / name).read_text())

    def host(self, name: str = "result.json") -> dict[str, Any]:
        (h,) = self.result(name)["hosts"]
        return h


@dataclass
class Lab:
    root: Path                 # the upgrader HOME (policy.yaml, keys/, playbooks/, runs/, audit/)
    tomcat: Tomcat
    catalog: Path
    host_entry: dict[str, Any]

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yaml"

    @property
    def engineer_key(self) -> Path:
        return self.root / "keys" / "engineer"

    @property
    def requester_key(self) -> Path:
        return self.root / "keys" / "requester"

    @property
    def state_dir(self) -> Path:
        return self.tomcat.home.parent / f".upgrader-{self.tomcat.home.name}"

    def write_inventory(self, playbook: str = "tomcat", **host: Any) -> None:
        entry = {**self.host_entry, "install_dir": str(self.tomcat.home), "product": "tomcat", "playbook": playbook,
                 "maintenance_until": "2099-12-31", **host}
        self.inventory.write_text(yaml.safe_dump({"format": 1, "hosts": {"tc-01": entry}}, sort_keys=False))

    def cli(self, *argv: str) -> int:
        return main(["--home", str(self.root), *argv])

    def plan(self, version: str, *extra: str) -> tuple[int, Path]:
        out = self.root / "plans" / f"to-{version}-{len(list((self.root / 'plans').glob('*.json')))}.json"
        return self.cli("plan", "--inventory", str(self.inventory), "--to", version, "--catalog", str(self.catalog),
                        "--key", str(self.requester_key), "-o", str(out), *extra), out

    def approve(self, plan: Path) -> Path:
        out = plan.with_suffix(".approval")
        assert self.cli("approve", str(plan), "--key", str(self.engineer_key), "-o", str(out)) == 0
        return out

    def runs(self) -> set[Path]:
        d = self.root / "runs"
        return {p for p in d.iterdir() if p.is_dir()} if d.is_dir() else set()

    def run(self, plan: Path, *extra: str) -> Run:
        before = self.runs()
        rc = self.cli("run", str(plan), "--approval", str(self.approve(plan)), *extra)
        new = sorted(self.runs() - before)
        return Run(rc, new[0] if new else None)

    def child(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 600) -> Run:
        """``upgrader ARGV`` as its own process (for a SIGKILL at a fault point: fault_env)."""
        before = self.runs()
        res = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(self.root), *argv],
                             env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
        new = sorted(self.runs() - before)
        return Run(res.returncode, new[0] if new else None, res.stdout + res.stderr)


def make_lab(root: Path, tomcat: Tomcat, catalog: Path, vendor_signers: Path,
             host_entry: dict[str, Any] | None = None) -> Lab:
    """HOME at ``root``: keys (the requester signs the plans, the engineer approves them), a policy trusting
    ``vendor_signers`` for catalogs, the inventory of ``tomcat``."""
    keys = root / "keys"
    lines = []
    for name, principal, namespaces in (("engineer", "engineer@vendor", "upgrader-approval"),
                                        ("operator", "operator@customer", "upgrader-audit"),
                                        ("requester", "requester@customer", "upgrader-plan")):
        generate_key(keys / name, principal)
        lines.append(signer_line(principal, load_private_key(keys / name).public_key(), namespaces))
    (keys / "allowed_signers").write_text("\n".join(lines) + "\n")
    (root / "policy.yaml").write_text(
        "format: 1\n"
        "approvals: {required: 1, allow_self_approval: false, allowed_signers: keys/allowed_signers}\n"
        "audit: {allowed_signers: keys/allowed_signers}\n"
        f"catalog: {{trusted_signers: {json.dumps(str(vendor_signers))}}}\n"
        "window: {outside: allow}\n")
    (root / "plans").mkdir()
    lab = Lab(root, tomcat, catalog, dict(host_entry or {"address": "local"}))
    lab.write_inventory()
    return lab


def quick_playbook(lab: Lab, window: str = "3s", interval: str = "0.5s", name: str = "tomcat") -> Path:
    """The shipped tomcat playbook with only its observation window and interval shortened, as HOME/playbooks/NAME.yaml."""
    text = (shipped_playbooks_dir() / "tomcat.yaml").read_text()
    for old, new in (("  window: 30s\n", f"  window: {window}\n"), ("  interval: 3s\n", f"  interval: {interval}\n"),
                     ("name: tomcat\n", f"name: {name}\n")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = lab.root / "playbooks" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def conf_digest(home: Path) -> dict[str, bytes]:
    """Every file under conf/, byte for byte."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted((home / "conf").rglob("*")) if p.is_file()}
