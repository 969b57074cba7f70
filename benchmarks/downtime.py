#!/usr/bin/env python3
"""Downtime benchmark: how long the service is down during an upgrade and during a rollback,
and how much of that is the tool's own work, for a small and a large install.

For each install size it builds the sample middleware's packages (7.0.4.2, a healthy release,
and 7.0.4.5, which installs fine but fails its health probes) and one pristine 7.0.4.1 install
with the same amount of filler in ``lib/modules``. Each repetition then makes a fresh sandbox
like ``upgrader demo``'s (a copy of the pristine install, hard-linking the big module files, on a
free loopback port, the real service started), and runs the installed CLI in a subprocess:

    upgrader --home H plan --inventory INV --to VERSION --catalog CAT -o PLAN --json
    upgrader --home H run PLAN --json

From the run's JSON result (``hosts[0]``) it takes ``downtime`` (stop requested -> new version
healthy; for a rolled-back host: rollback start -> old version healthy), ``service_time`` (the
product's own stop and start-to-ready time inside that downtime) and the per-phase seconds.
The tool's own part is ``downtime - service_time``. A client thread polls ``/version`` during
the run as an outside cross-check (the outage a client sees).

Results: a Markdown report on stdout and in ``benchmarks/results/downtime.md``, raw figures in
``benchmarks/results/downtime.json`` (``--quick`` writes ``downtime-quick.*`` instead).
Every service it started is stopped and every temporary directory removed, also on Ctrl-C.

    .venv/bin/python benchmarks/downtime.py            # 10 MiB and 1 GiB, 5 repetitions
    .venv/bin/python benchmarks/downtime.py --quick    # 1 MiB and 50 MiB, 2 repetitions
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

from machine import machine_info  # benchmarks/machine.py (scripts run from benchmarks/)

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# the measured code: imported by load_upgrader(), from the checkout or from a snapshot of HEAD
sample: Any = None
Sandbox: Any = None
build_sandbox: Any = None

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
OLD, GOOD, BAD = "7.0.4.1", "7.0.4.2", "7.0.4.5"
SCENARIOS = {
    # name: (target, expected exit code, expected outcome, version running at the end)
    "upgrade": (GOOD, 0, "committed", GOOD),
    "rollback": (BAD, 1, "rolled_back", OLD),
}
GOAL_TOOL_SECONDS = 0.5
GOAL_RATIO = 1.5
BIG_PACKAGE = 256 * MiB          # from this filler size on, packages are built with compresslevel=1
POLL_INTERVAL = 0.02             # the client probe's pause between two GET /version
RUN_TIMEOUT = 3600.0


class BenchError(Exception):
    """The benchmark could not measure (a run did not end as expected, no disk space, ...)."""


# -- small helpers ------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 10M, 1G, 512K or a byte count)")
    unit = {"": 1, "K": KiB, "M": MiB, "G": GiB}[m.group(2).upper()]
    return int(float(m.group(1)) * unit)


def size_label(n: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit:
            value = n / unit
            return f"{value:.0f} {name}" if value == int(value) else f"{value:.1f} {name}"
    return f"{n} B"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(message: str) -> None:
    try:
        sys.stderr.write(f"[downtime {time.strftime('%H:%M:%S')}] {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed (e.g. piped into `head`): progress is optional
        pass


def load_upgrader(source: Path | None) -> Path:
    """Import the code to measure: from `source` (a snapshot) or the checkout; return the package dir.

    With a snapshot, PYTHONPATH is set too, so the CLI and the agent run the same code.
    """
    global sample, Sandbox, build_sandbox
    if source is not None:
        sys.path.insert(0, str(source))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(source), *filter(None, [os.environ.get("PYTHONPATH")])])
    else:
        try:
            import upgrader
        except ImportError:
            sys.path.insert(0, str(REPO))
    import upgrader
    from upgrader import sample as _sample
    from upgrader.cli.commands.demo import Sandbox as _Sandbox
    from upgrader.cli.commands.demo import build_sandbox as _build_sandbox

    sample, Sandbox, build_sandbox = _sample, _Sandbox, _build_sandbox
    if sample.INSTALLED_FIRST != OLD:
        raise BenchError(f"the sample product now installs {sample.INSTALLED_FIRST} first; this benchmark "
                         f"upgrades from {OLD}: update OLD in {__file__}")
    return Path(upgrader.__file__).resolve().parent


def snapshot_head(dest: Path) -> str:
    """Extract the committed HEAD of the checkout into dest (read-only for the repository)."""
    import io
    import tarfile

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], capture_output=True,
                         check=True).stdout
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(dest, filter="data")
    return commit


def source_digest(package_dir: Path) -> str:
    """sha256 over the measured code (upgrader/, version_policy/, playbooks/): did it change during the run?"""
    import hashlib

    h = hashlib.sha256()
    root = package_dir.parent
    for sub in ("upgrader", "version_policy", "playbooks"):
        for f in sorted((root / sub).rglob("*")):
            if f.is_file() and f.suffix in (".py", ".yaml", ".yml", ".sh") and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


# -- our processes: everything whose working directory lies in our work dir is ours ---------------


def processes_under(root: Path) -> list[int]:
    prefix = str(root).rstrip("/") + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        cwd = cwd.removesuffix(" (deleted)")
        if cwd == prefix.rstrip("/") or cwd.startswith(prefix):
            found.append(int(entry))
    return found


def end_processes(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM the given pids, then SIGKILL what is left after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _alive(p)]
            time.sleep(0.05)
        if not alive:
            return
        pids = alive


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


# -- the client's view: polls /version during a run ---------------------------------------------


class ClientProbe:
    """Polls GET /version in a thread; `outage()` is the gap a client saw."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="client-probe", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                status, body = sample.http_get(self.port, "/version", timeout=0.25)
                answer = body.strip() if status == 200 else None
            except OSError:
                answer = None
            self.samples.append((t, answer))
            self._stop.wait(POLL_INTERVAL)

    def outage(self, old: str, final: str) -> float | None:
        """Last answer of `old` before the first other answer -> first answer of `final` after it."""
        s = self.samples
        first_bad = next((i for i, (_, a) in enumerate(s) if a != old), None)
        if not first_bad:  # None (never down) or 0 (down from the start: no reference point)
            return None
        back = next((t for t, a in s[first_bad:] if a == final), None)
        return None if back is None else back - s[first_bad - 1][0]


# -- the benchmark --------------------------------------------------------------------------------


class Prepared:
    """Packages and a pristine install for one filler size."""

    def __init__(self, root: Path, size: int) -> None:
        self.root = root
        self.size = size
        self.catalog = root / "catalog"
        self.pristine = root / "pristine" / "app-01"
        self.compresslevel = 1 if size >= BIG_PACKAGE else 6
        self.build_seconds = 0.0
        self.install_seconds = 0.0
        self.package_bytes: dict[str, int] = {}
        self.policy: Path | None = None
        self.engineer_key: Path | None = None
        self.requester_key: Path | None = None
        self.home: Path = root


class Bench:
    def __init__(self, work: Path, cli: list[str], client_probe: bool) -> None:
        self.work = work
        self.cli = cli
        self.client_probe = client_probe
        self.boxes: list[Sandbox] = []
        self._approve: bool | None = None

    # preparation, once per size

    def prepare(self, size: int) -> Prepared:
        p = Prepared(self.work / f"size-{size}", size)
        p.root.mkdir()
        # the demo's own sandbox gives what this version of the tool needs around a run (keys, a
        # policy naming them, ...): it is the tool's HOME for every run of this size; its small
        # packages and install are not used
        template = build_sandbox(p.root / "template")
        p.home = template.root
        policy = getattr(template, "policy", None)
        p.policy = policy if policy is not None and Path(policy).is_file() else None
        engineer_key = getattr(template, "engineer_key", None)
        p.engineer_key = engineer_key if engineer_key is not None and Path(engineer_key).is_file() else None
        # plans must be signed by whoever asks for the upgrade (plan --key) where the demo has a requester
        requester_key = getattr(template, "requester_key", None)
        p.requester_key = requester_key if requester_key is not None and Path(requester_key).is_file() else None
        vendor_key = getattr(template, "vendor_key", None)
        releases = [r for r in sample.RELEASES if r.version in (GOOD, BAD)]
        log(f"{size_label(size)}: building packages {GOOD} and {BAD} (compresslevel {p.compresslevel})")
        t = time.monotonic()
        sample.build_packages(p.catalog, releases=releases, filler_bytes=size, compresslevel=p.compresslevel)
        p.build_seconds = time.monotonic() - t
        if vendor_key is not None and Path(vendor_key).is_file():
            r = self.run_cli(["catalog", "sign", str(p.catalog / "catalog.yaml"), "--key", str(vendor_key)],
                             cwd=p.root)
            if r.returncode != 0:
                raise BenchError(f"`upgrader catalog sign` failed (exit {r.returncode}): {r.stderr.strip()[-800:]}")
        for r in releases:
            p.package_bytes[r.version] = (p.catalog / sample.package_name(r.version)).stat().st_size
        log(f"{size_label(size)}: packages built in {p.build_seconds:.1f}s; installing pristine {OLD}")
        t = time.monotonic()
        sample.install(p.pristine, port=sample.DEFAULT_PORT, filler_bytes=size)
        p.install_seconds = time.monotonic() - t
        return p

    def materialize(self, p: Prepared, dest: Path, port: int) -> None:
        """A fresh install from the pristine one: big module files hard-linked, everything else copied.

        Nothing the tool or the service does writes a product file in place (trees are swapped by
        rename, backups are hard links), so sharing the module files' inodes with the pristine
        copy is safe; configuration, data and logs are real copies because they are written to.
        """
        for dirpath, dirnames, filenames in os.walk(p.pristine):
            rel = Path(dirpath).relative_to(p.pristine)
            target_dir = dest / rel
            target_dir.mkdir(parents=True, exist_ok=True)
            shutil.copystat(dirpath, target_dir)
            for name in filenames:
                src = Path(dirpath) / name
                if rel.parts[:2] == ("lib", "modules"):
                    os.link(src, target_dir / name)
                else:
                    shutil.copy2(src, target_dir / name)
        conf = dest / "conf" / "server.conf"
        text = conf.read_text(encoding="utf-8")
        text, n = re.subn(r"(?m)^port\s*=.*$", f"port = {port}", text)
        if n != 1:
            raise BenchError(f"{conf}: expected one 'port = ...' line, found {n}")
        conf.write_text(text, encoding="utf-8")

    def run_cli(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None,
                timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.cli, *argv], check=False, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def upgrader(self, p: Prepared, box: Sandbox, *argv: str,
                 timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        # the sample's start.sh runs "${PYTHON:-python3}": a tool that passes the operator's environment to its
        # commands (a57477b) hands it the demo's PYTHON, one that does not (since issue 14) the first python3 on
        # PATH, perhaps a version manager's slower shim. This interpreter's directory first on PATH gives every
        # version of the tool the same interpreter for the service, so its start-to-ready time is the same.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])
        return self.run_cli(["--home", str(p.home), *argv], cwd=box.root,
                            env={**box.service_env(), "UPGRADER_HOME": str(p.home), "PATH": path}, timeout=timeout)

    def approval_args(self, p: Prepared, box: Sandbox, plan: Path) -> list[str]:
        """When this version of the tool has `approve`, approve the plan with the demo's engineer key."""
        if self._approve is None:
            self._approve = self.run_cli(["approve", "--help"], cwd=self.work).returncode == 0
        if not self._approve or p.engineer_key is None:
            return []
        approval = box.root / "approval"
        r = self.upgrader(p, box, "approve", str(plan), "--key", str(p.engineer_key), "--expires", "2h",
                          "--comment", "downtime benchmark", "-o", str(approval))
        if r.returncode != 0:
            raise BenchError(f"`upgrader approve` failed (exit {r.returncode}): {r.stderr.strip()[-800:]}")
        return ["--approval", str(approval)]

    # one measurement

    def measure(self, p: Prepared, scenario: str, rep: int) -> dict[str, Any]:
        target, want_exit, want_outcome, final = SCENARIOS[scenario]
        port = free_port()
        box = Sandbox(self.work / f"run-{p.size}-{scenario}-{rep}", port)
        box.root.mkdir()
        self.boxes.append(box)
        try:
            self.materialize(p, box.install_dir, port)
            box.write_inventory()
            box.plans.mkdir()
            box.start_service()
            plan = box.plans / f"to-{target}.json"
            policy = ["--policy", str(p.policy)] if p.policy else []
            signed = ["--key", str(p.requester_key)] if p.requester_key else []
            r = self.upgrader(p, box, "plan", "--inventory", str(box.inventory), "--to", target,
                              "--catalog", str(p.catalog), *policy, *signed, "-o", str(plan), "--json")
            if r.returncode != 0:
                raise BenchError(f"plan to {target} failed (exit {r.returncode}): {r.stderr.strip()[-800:]}")
            run_argv = ["run", str(plan), "--json", *self.approval_args(p, box, plan)]
            t0 = time.monotonic()
            if self.client_probe:
                with ClientProbe(port) as probe:
                    r = self.upgrader(p, box, *run_argv, timeout=RUN_TIMEOUT)
                outage = probe.outage(OLD, final)
            else:
                r = self.upgrader(p, box, *run_argv, timeout=RUN_TIMEOUT)
                outage = None
            wall = time.monotonic() - t0
            try:
                result = json.loads(r.stdout)
            except ValueError:
                raise BenchError(f"run to {target} printed no JSON (exit {r.returncode}): "
                                 f"{(r.stderr or r.stdout).strip()[-800:]}") from None
            host = result["hosts"][0]
            if r.returncode != want_exit or host["outcome"] != want_outcome:
                raise BenchError(f"run to {target}: expected exit {want_exit} / {want_outcome}, got exit "
                                 f"{r.returncode} / {host['outcome']}: {host.get('error')}")
            if host.get("downtime") is None or host.get("service_time") is None:
                raise BenchError(f"run to {target}: the result has no downtime/service_time: {host}")
            answered = box.wait_version(final, timeout=10)
            return {"size": p.size, "scenario": scenario, "rep": rep, "target": target, "exit": r.returncode,
                    "outcome": host["outcome"], "answers_after": answered,
                    "downtime": host["downtime"], "service_time": host["service_time"],
                    "tool_part": round(host["downtime"] - host["service_time"], 4),
                    "client_outage": None if outage is None else round(outage, 4),
                    "run_wall": round(wall, 3), "loadavg": round(os.getloadavg()[0], 2),
                    "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "phases": host["phases"]}
        finally:
            self.dispose(box)

    def dispose(self, box: Sandbox) -> None:
        try:
            if (box.install_dir / "bin" / "stop.sh").exists():
                box.stop_service()
        except Exception as e:  # noqa: BLE001 - cleanup goes on regardless
            log(f"stopping the service in {box.install_dir}: {e}")
        # the service removes its pid file a moment before its process ends: give it time to go
        deadline = time.monotonic() + 5
        while (leftovers := [p for p in processes_under(box.root) if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if leftovers:
            log(f"ending leftover process(es) {leftovers} under {box.root}")
            end_processes(leftovers)
        shutil.rmtree(box.root, ignore_errors=True)
        if box in self.boxes:
            self.boxes.remove(box)

    def cleanup(self) -> None:
        for box in list(self.boxes):
            self.dispose(box)
        leftovers = processes_under(self.work)
        if leftovers:
            log(f"ending leftover process(es) {leftovers} under {self.work}")
            end_processes(leftovers)
        shutil.rmtree(self.work, ignore_errors=True)


# -- analysis -------------------------------------------------------------------------------------

DOWNTIME_PHASES = {"upgrade": ("stop", "install", "start"), "rollback": ("rollback", "rb.start")}
_INNER = re.compile(r"\bin (\d+(?:\.\d+)?)s\b")


def labelled_phases(phases: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Phase names, with the phases after the rollback prefixed 'rb.' (start and observe occur twice)."""
    out, after = [], False
    for ph in phases:
        name = ph["phase"]
        if name == "rollback":
            after = True
        elif after:
            name = "rb." + name
        out.append((name, ph))
    return out


def summarize(samples: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    rows, phase_rows = [], []
    for scenario in SCENARIOS:
        for size in sizes:
            ss = [s for s in samples if s["scenario"] == scenario and s["size"] == size]
            if not ss:
                continue
            tool = [s["tool_part"] for s in ss]
            outage = [s["client_outage"] for s in ss if s["client_outage"] is not None]
            rows.append({"scenario": scenario, "size": size, "n": len(ss),
                         "downtime": median([s["downtime"] for s in ss]),
                         "service_time": median([s["service_time"] for s in ss]),
                         "tool_part": median(tool), "tool_min": min(tool), "tool_max": max(tool),
                         "downtime_min": min(s["downtime"] for s in ss),
                         "downtime_max": max(s["downtime"] for s in ss),
                         "client_outage": median(outage), "run_wall": median([s["run_wall"] for s in ss])})
            walls: dict[str, list[float]] = {}
            inner: dict[str, list[float]] = {}
            rest = []
            for s in ss:
                in_window = 0.0
                for name, ph in labelled_phases(s["phases"]):
                    walls.setdefault(name, []).append(ph["seconds"])
                    m = _INNER.search(ph.get("detail") or "")
                    if m:
                        inner.setdefault(name, []).append(float(m.group(1)))
                    if name in DOWNTIME_PHASES[scenario]:
                        in_window += ph["seconds"]
                rest.append(s["downtime"] - in_window)
            order = [n for n, _ in labelled_phases(ss[0]["phases"])]
            for name in order:
                phase_rows.append({"scenario": scenario, "size": size, "phase": name,
                                   "in_downtime": name in DOWNTIME_PHASES[scenario],
                                   "wall": median(walls[name]), "inner": median(inner.get(name, []))})
                if name in DOWNTIME_PHASES[scenario] and name == DOWNTIME_PHASES[scenario][-1]:
                    phase_rows.append({"scenario": scenario, "size": size,
                                       "phase": ("rb." if scenario == "rollback" else "") + "observe until healthy",
                                       "in_downtime": True, "wall": median(rest), "inner": None,
                                       "derived": True})
    goals = []
    for scenario in SCENARIOS:
        rs = [r for r in rows if r["scenario"] == scenario]
        for r in rs:
            goals.append({"goal": f"{scenario}: tool's part of the downtime < {GOAL_TOOL_SECONDS} s at "
                                  f"{size_label(r['size'])}",
                          "measured": f"{r['tool_part']:.3f} s", "met": r["tool_part"] < GOAL_TOOL_SECONDS})
        if len(rs) >= 2:
            small, big = rs[0], rs[-1]
            ratio = big["tool_part"] / small["tool_part"] if small["tool_part"] > 0 else float("inf")
            goals.append({"goal": f"{scenario}: tool's part does not grow with size: "
                                  f"{size_label(big['size'])} / {size_label(small['size'])} < {GOAL_RATIO}",
                          "measured": f"{ratio:.2f} ({big['tool_part'] - small['tool_part']:+.3f} s)",
                          "ratio": ratio, "met": ratio < GOAL_RATIO})
    return {"rows": rows, "phases": phase_rows, "goals": goals}


def markdown(info: dict[str, Any], summary: dict[str, Any], prepared: list[dict[str, Any]]) -> str:
    L = []
    missed = [g for g in summary["goals"] if not g["met"]]
    L.append("# Downtime benchmark")
    L.append("")
    L.append(f"- date: {info['date']}")
    L.append(f"- machine: {info['nproc']} CPU(s) (`nproc`), {info['cpu']}; {info['platform']}")
    L.append(f"- Python {info['python']}; code measured: {info['code']}")
    L.append(f"- load average at start: {', '.join(str(x) for x in info['loadavg_at_start'])}; "
             f"at end: {', '.join(str(x) for x in info.get('loadavg_at_end', []))}")
    L.append(f"- command: `{info['command']}`; {info['repeat']} repetition(s) per figure; medians, "
             "min–max in brackets")
    for p in prepared:
        pk = ", ".join(f"{v} {b / MiB:.1f} MiB" for v, b in p["package_bytes"].items())
        L.append(f"- {size_label(p['size'])} install ({p['size']} filler bytes in lib/modules): packages {pk} "
                 f"(compresslevel {p['compresslevel']}, built in {p['build_seconds']:.1f} s)")
    L.append("")
    if info.get("code_changed_during_run"):
        L.append("**WARNING: the code under upgrader/ changed while this benchmark ran: the figures mix two "
                 "versions. Run it again (or with --snapshot).**")
        L.append("")
    if missed:
        L.append("**GOALS MISSED: " + "; ".join(f"{g['goal']} (measured {g['measured']})" for g in missed)
                 + ".**")
    else:
        L.append("All goals met.")
    L.append("")
    L.append("## Downtime (seconds)")
    L.append("")
    L.append("| scenario | install | downtime | service's own stop + start-to-ready | tool's part "
             "| client-seen outage | whole `run` wall time |")
    L.append("|---|---|---|---|---|---|---|")
    for r in summary["rows"]:
        what = f"upgrade {OLD} → {GOOD}" if r["scenario"] == "upgrade" else f"rollback ({BAD} unhealthy → {OLD})"
        L.append(f"| {what} | {size_label(r['size'])} | {fmt(r['downtime'])} ({fmt(r['downtime_min'])}–"
                 f"{fmt(r['downtime_max'])}) | {fmt(r['service_time'])} | **{fmt(r['tool_part'])}** "
                 f"({fmt(r['tool_min'])}–{fmt(r['tool_max'])}) | {fmt(r['client_outage'])} | "
                 f"{fmt(r['run_wall'], 2)} |")
    L.append("")
    L.append("## Goals")
    L.append("")
    L.append("| goal | measured | verdict |")
    L.append("|---|---|---|")
    for g in summary["goals"]:
        L.append(f"| {g['goal']} | {g['measured']} | {'met' if g['met'] else '**MISSED**'} |")
    L.append("")
    L.append("## Where the time goes (median seconds per phase)")
    L.append("")
    L.append("`inside agent` is the time the host agent reports for its own action (parsed from the phase "
             "detail); the rest of a phase's wall time is the engine's cost of the call (the request to the "
             "agent and its answer through the transport, the journal records). Phases marked ✱ lie inside "
             "the downtime; `observe until healthy` is the downtime left after the other ✱ phases (the observe call up to the moment "
             "every probe passed, plus the gaps between phases). The full `observe` phase also contains "
             "the playbook's observation window, which is not downtime.")
    L.append("")
    sizes = sorted({r["size"] for r in summary["phases"]})
    L.append("| scenario | phase | " + " | ".join(f"{size_label(s)} wall | inside agent" for s in sizes) + " |")
    L.append("|---|---|" + "---|---|" * len(sizes))
    for scenario in SCENARIOS:
        names: list[str] = []
        for r in summary["phases"]:
            if r["scenario"] == scenario and r["phase"] not in names:
                names.append(r["phase"])
        for name in names:
            cells = []
            mark = ""
            for s in sizes:
                r = next((x for x in summary["phases"] if x["scenario"] == scenario and x["size"] == s
                          and x["phase"] == name), None)
                if r and r["in_downtime"]:
                    mark = " ✱"
                cells.append(f"{fmt(r['wall']) if r else '–'} | {fmt(r['inner']) if r else '–'}")
            L.append(f"| {scenario} | {name}{mark} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("How to read: *downtime* is what the tool reports (stop requested → new version healthy; for "
             "the rollback, rollback start → old version healthy again). *service's own* is the part the "
             "product itself needs (its stop, its start command, its time to become ready), which no tool "
             "can remove. *tool's part* = downtime − service's own: what the tool adds. *client-seen "
             "outage* is measured from outside by polling `GET /version` every "
             f"{POLL_INTERVAL * 1000:.0f} ms: last answer of the old version → first answer of the final "
             "version; for the rollback that is the whole failed attempt (stop, install, start, failed "
             "probes, rollback), not only the rollback's own time.")
    L.append("")
    return "\n".join(L)


# -- main -----------------------------------------------------------------------------------------


def default_cli() -> list[str]:
    script = Path(sys.executable).parent / "upgrader"
    return [str(script)] if script.exists() else [sys.executable, "-m", "upgrader"]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Downtime and rollback time of an upgrade, small vs large install "
                                             "(see benchmarks/README.md).")
    ap.add_argument("--sizes", default="10M,1G",
                    help="comma-separated install filler sizes (default 10M,1G; K/M/G are binary units)")
    ap.add_argument("-r", "--repeat", type=int, default=None, help="repetitions per figure (default 5)")
    ap.add_argument("--quick", action="store_true", help="smoke run: sizes 1M,50M, 2 repetitions, "
                                                         "results in downtime-quick.{md,json}")
    ap.add_argument("--workdir", help="directory for the temporary sandboxes (a new temporary directory is "
                                      "created inside it and removed at the end; default /tmp)")
    ap.add_argument("--results", default=str(RESULTS_DIR), help="where to write the results (default "
                                                                 "benchmarks/results)")
    ap.add_argument("--cli", help="the upgrader command to run (default: the console script beside this "
                                  "Python, else `python -m upgrader`)")
    ap.add_argument("--snapshot", action="store_true",
                    help="measure the committed HEAD (a `git archive` copy in the work dir) instead of the "
                         "working tree, so edits made while the benchmark runs cannot mix into the figures")
    ap.add_argument("--no-client-probe", action="store_true", help="do not poll /version from outside")
    ap.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = ap.parse_args(argv)

    sizes = [MiB, 50 * MiB] if args.quick else sorted({parse_size(s) for s in args.sizes.split(",") if s.strip()})
    repeat = args.repeat or (2 if args.quick else 5)
    if repeat < 1 or not sizes or min(sizes) < 1:
        ap.error("sizes must be positive and --repeat at least 1")
    cli = args.cli.split() if args.cli else default_cli()
    base = Path(args.workdir or "/tmp").resolve()
    base.mkdir(parents=True, exist_ok=True)

    # disk: per size a pristine install and two packages; per run a staged tree, a package copy, a spare
    need = sum(sizes) * 3 + max(sizes) * 3 + 256 * MiB
    free = shutil.disk_usage(base).free
    if free < need:
        log(f"not enough free space in {base}: {free / GiB:.1f} GiB free, about {need / GiB:.1f} GiB needed "
            "(give --workdir on a bigger file system, or smaller --sizes)")
        return 2

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    info = machine_info()
    info.update(command=" ".join([".venv/bin/python", "benchmarks/downtime.py",
                                  *(argv if argv is not None else sys.argv[1:])]),
                repeat=repeat, sizes=sizes, cli=cli)
    work = Path(tempfile.mkdtemp(prefix="upgrader-bench-downtime-", dir=base))
    try:
        source = None
        if args.snapshot:
            commit = snapshot_head(work / "source")
            source = work / "source"
            info["code"] = f"snapshot of committed HEAD {commit[:10]} (working-tree edits not included)"
        else:
            info["code"] = f"working tree at {info['commit']}"
        package_dir = load_upgrader(source)
        digest_at_start = source_digest(package_dir)
    except (BenchError, subprocess.CalledProcessError, OSError, ImportError, KeyboardInterrupt) as e:
        shutil.rmtree(work, ignore_errors=True)
        log(f"cannot load the code to measure: {type(e).__name__}: {e}")
        return 2
    info["package_dir"] = str(package_dir)
    log(f"measuring {info['code']} ({package_dir})")
    log(f"work dir {work}; sizes {', '.join(size_label(s) for s in sizes)}; {repeat} repetition(s); cli {cli}")
    bench = Bench(work, cli, client_probe=not args.no_client_probe)
    samples: list[dict[str, Any]] = []
    prepared: list[dict[str, Any]] = []
    try:
        preps = []
        for size in sizes:
            p = bench.prepare(size)
            preps.append(p)
            prepared.append({"size": size, "compresslevel": p.compresslevel, "package_bytes": p.package_bytes,
                             "build_seconds": round(p.build_seconds, 2),
                             "install_seconds": round(p.install_seconds, 2)})
        # sizes and scenarios interleaved within each repetition, so a change in the machine's load
        # during the benchmark weighs on every figure alike instead of on one size
        for rep in range(repeat):
            for p in preps:
                for scenario in SCENARIOS:
                    s = bench.measure(p, scenario, rep)
                    samples.append(s)
                    log(f"#{rep + 1}/{repeat} {size_label(p.size)} {scenario}: downtime {s['downtime']:.3f}s, "
                        f"service {s['service_time']:.3f}s, tool {s['tool_part']:.3f}s, client-seen outage "
                        f"{fmt(s['client_outage'])}s, run {s['run_wall']:.1f}s, load {s['loadavg']}")
    except KeyboardInterrupt:
        log("interrupted: stopping the services and removing the work dir; no results written")
        return 130
    except (BenchError, subprocess.SubprocessError, OSError, ValueError) as e:
        log(f"benchmark failed: {type(e).__name__}: {e}")
        return 2
    finally:
        bench.cleanup()
        log(f"cleaned up {work}")

    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    info["code_changed_during_run"] = source_digest(package_dir) != digest_at_start if source is None else False
    if info["code_changed_during_run"]:
        log("WARNING: the code under upgrader/ changed while the benchmark ran; the figures mix versions")
    summary = summarize(samples, sizes)
    report = markdown(info, summary, prepared)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = "downtime-quick" if args.quick else "downtime"
    (out / f"{stem}.md").write_text(report, encoding="utf-8")
    (out / f"{stem}.json").write_text(json.dumps({"machine": info, "goals": {
        "tool_part_seconds": GOAL_TOOL_SECONDS, "ratio": GOAL_RATIO}, "prepared": prepared, "summary": summary,
        "samples": samples}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    sys.stdout.write(report)
    log(f"written {out / (stem + '.md')} and {out / (stem + '.json')}")
    missed = [g for g in summary["goals"] if not g["met"]]
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
