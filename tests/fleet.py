"""A fleet for the tests: n sample-middleware installs in one sandbox, each reached over the real sshd.

``build_fleet`` makes a sandbox (keys, policy, signed catalog), installs ``hosts/app-01..app-0n``
each on its own free loopback port, starts them, writes a quick copy of the sample playbook
(observation window 0.5 s) and an inventory whose hosts are all ``127.0.0.1`` through the test
sshd, in one group ``prod``. It does not run upgrader; the tests do, with conftest's helpers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from sshd import SSHServer, free_port
from upgrader import sample
from upgrader.cli.commands.demo import Sandbox, build_sandbox
from upgrader.core.journal import JournalRecord, read_journal
from upgrader.core.playbook import shipped_playbooks_dir

__all__ = ["Fleet", "FleetHost", "build_fleet", "wait_for"]

QUICK_WINDOW = "0.5s"


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _run_order(run_dir: Path) -> tuple[str, str, str]:
    try:
        started = next(iter(read_journal(run_dir / "journal.jsonl"))).time
    except (OSError, ValueError, StopIteration):
        started = ""
    return run_dir.name[:16], started, run_dir.name


@dataclass(frozen=True)
class FleetHost:
    name: str
    install_dir: Path
    port: int

    @property
    def state_dir(self) -> Path:
        """Where the agent keeps its lock, packages and runs for this install."""
        return self.install_dir.parent / f".upgrader-{self.install_dir.name}"

    def run_dir(self, run_id: str) -> Path:
        return self.state_dir / "runs" / run_id

    def answers(self) -> str | None:
        """The version the service answers on /version, or None when it does not answer."""
        try:
            status, body = sample.http_get(self.port, "/version", timeout=1)
        except OSError:
            return None
        return body if status == 200 else None

    def start(self) -> None:
        """Start the service by hand, as an operator would, and wait (with a deadline) until it answers; a version
        that never comes up is left for the caller to notice."""
        subprocess.run([str(self.install_dir / "bin" / "start.sh")], check=True,
                       env={**os.environ, "PYTHON": sys.executable}, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while self.answers() is None and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run([str(self.install_dir / "bin" / "stop.sh")], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class Fleet:
    box: Sandbox
    sshd: SSHServer
    hosts: list[FleetHost]
    playbook: Path

    def __getitem__(self, name: str) -> FleetHost:
        (host,) = [h for h in self.hosts if h.name == name]
        return host

    def versions(self) -> dict[str, str | None]:
        return {h.name: h.answers() for h in self.hosts}

    def write_inventory(self, **host_settings: Any) -> Path:
        """Rewrite the inventory with these settings added to every host (None removes a setting)."""
        data = {"format": 1, "hosts": {}, "groups": {"prod": [h.name for h in self.hosts]}}
        for h in self.hosts:
            entry: dict[str, Any] = {
                **self.sshd.host_entry(), "install_dir": str(h.install_dir), "product": sample.PRODUCT,
                "playbook": "sample-middleware", "maintenance_until": "2099-12-31", "vars": {"port": str(h.port)}}
            entry.update(host_settings)
            data["hosts"][h.name] = {k: v for k, v in entry.items() if v is not None}
        self.box.inventory.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return self.box.inventory

    def write_playbook(self, name: str, **changes: Any) -> Path:
        """A copy of the quick playbook with top-level keys replaced (e.g. hooks=...); returns its path."""
        spec = yaml.safe_load(self.playbook.read_text(encoding="utf-8"))
        spec.update(changes)
        spec["name"] = name
        path = self.playbook.parent / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        return path

    def run_dirs(self) -> list[Path]:
        """The runs of the fleet's home, oldest first: by the second in their id, then by their journal's first
        record (milliseconds), since two runs of one second have ids that sort by their random part."""
        runs = self.box.root / "runs"
        return sorted((p for p in runs.iterdir() if p.is_dir()), key=_run_order) if runs.is_dir() else []

    def journal(self, run_dir: Path) -> list[JournalRecord]:
        return list(read_journal(run_dir / "journal.jsonl"))

    def stop_all(self) -> None:
        for h in self.hosts:
            h.stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(h.answers() for h in self.hosts):
            time.sleep(0.05)


def build_fleet(root: Path, sshd: SSHServer, n: int) -> Fleet:
    """The sandbox at ``root`` with n running installs app-01..app-0n, a quick playbook and an inventory."""
    box = build_sandbox(root)
    hosts = [FleetHost("app-01", box.install_dir, box.port)]
    for i in range(2, n + 1):
        port = free_port()
        install_dir = root / "hosts" / f"app-{i:02d}"
        sample.install(install_dir, port=port)
        hosts.append(FleetHost(install_dir.name, install_dir, port))
    playbooks = root / "playbooks"
    playbooks.mkdir()
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    spec["observe"]["window"] = QUICK_WINDOW
    playbook = playbooks / "sample-middleware.yaml"  # found before the shipped one: it sits beside the inventory
    playbook.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    fleet = Fleet(box, sshd, hosts, playbook)
    fleet.write_inventory()
    for h in hosts:
        h.start()
    for h in hosts:
        wait_for(h.answers, 15, f"{h.name} to answer on port {h.port}")
    return fleet
