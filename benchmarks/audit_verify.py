#!/usr/bin/env python3
"""Audit verification benchmark: how many events per second ``upgrader audit verify`` checks.

It writes a realistic audit log directly (the same line format and hash chain as
``upgrader.audit.log.AuditLog`` writes, without an fsync per line): fleet runs of 64 hosts, each a
``plan_created`` and ``approval_created`` line carrying every host's policy decision, then
``run_started`` (the hosts again), ``approval_accepted``, per host ``host_started``, the six
phases (started and finished, observe with its probe results), ``host_finished``, every 16th host
failing its observe and rolling back (``rollback_started``, rollback, start, observe), then
``run_finished`` and a ``checkpoint`` signed (SSHSIG, Ed25519, namespace ``upgrader-audit``) by a
key generated for the benchmark and listed in an ``allowed_signers`` file: about one checkpoint
per 1,000 events. A last, unfinished run leaves the log at exactly ``--events`` lines.

It then times ``upgrader.audit.log.verify_log`` over the whole file (``--repeat`` times, median),
checks that it found the log intact with the expected number of entries and checkpoints, and
reports events per second against the goal (100,000 events/s). The report goes to stdout and to
``benchmarks/results/audit_verify.md`` (``--quick``: 100,000 events, ``audit_verify-quick.md``);
progress to stderr. Exit 0 when measured (``--check``: 1 when the goal is missed), 2 when it could
not measure, 130 when interrupted. The generated log (about 630 MiB for a million events) lives
in a temporary directory that is removed at the end, also on errors and Ctrl-C (``--keep DIR``
writes it there instead and keeps it).

    .venv/bin/python benchmarks/audit_verify.py            # 1,000,000 events, median of 3 (~45 s)
    .venv/bin/python benchmarks/audit_verify.py --quick    # 100,000 events (~6 s)
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from upgrader.audit.log import GENESIS, NAMESPACE, checkpoint_statement, verify_log  # noqa: E402
from upgrader.trust.signers import load_allowed_signers  # noqa: E402
from upgrader.trust.sshsig import fingerprint, public_key_blob, sign  # noqa: E402

GOAL_EVENTS_PER_S = 100_000
HOSTS_PER_RUN = 64
ROLLBACK_EVERY = 16
SIGNER = "operator@customer"
PHASES = ("preflight", "backup", "stop", "install", "start", "observe")


def _dumps(record: dict[str, Any]) -> bytes:
    # exactly how AuditLog._append_locked serialises a line
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str).encode() + b"\n"


class LogWriter:
    """Appends chained lines to a file the way AuditLog does, minus the lock and the fsync per line."""

    def __init__(self, path: Path, actor: dict[str, Any], key: Any, start: dt.datetime) -> None:
        self.f = open(path, "wb", buffering=8 << 20)
        self.actor = actor
        self.key = key
        self.key_fp = fingerprint(public_key_blob(key.public_key()))
        self.seq = 0
        self.prev = GENESIS
        self.clock = start
        self.checkpoints = 0

    def _time(self, step_ms: int) -> str:
        self.clock += dt.timedelta(milliseconds=step_ms)
        return self.clock.isoformat(timespec="milliseconds")

    def _write(self, record: dict[str, Any]) -> None:
        line = _dumps(record)
        self.f.write(line)
        self.prev = hashlib.sha256(line[:-1]).hexdigest()

    def event(self, event: str, *, run: str | None = None, host: str | None = None, phase: str | None = None,
              outcome: str | None = None, data: dict[str, Any] | None = None, step_ms: int = 40) -> None:
        self.seq += 1
        record: dict[str, Any] = {"seq": self.seq, "prev": self.prev, "time": self._time(step_ms), "event": event,
                                  "run": run, "host": host, "phase": phase, "outcome": outcome, "actor": self.actor}
        if data:
            record["data"] = data
        self._write(record)

    def checkpoint(self, run: str) -> None:
        self.seq += 1
        time_ = self._time(1)
        statement = checkpoint_statement(self.seq - 1, self.prev, run, SIGNER, time_)
        record: dict[str, Any] = {"seq": self.seq, "prev": self.prev, "time": time_, "event": "checkpoint",
                                  "run": run, "host": None, "phase": None, "outcome": None, "actor": self.actor,
                                  "checkpoint": {"seq": self.seq - 1, "head": self.prev, "signer": SIGNER,
                                                 "key": self.key_fp,
                                                 "signature": sign(self.key, statement, NAMESPACE)}}
        self._write(record)
        self.checkpoints += 1

    def close(self) -> None:
        self.f.close()


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _decision(current: str, target: str) -> dict[str, Any]:
    rules = [
        ("same_product", "pass", "the package is for tongweb, the installed product"),
        ("newer", "pass", f"{target} is newer than {current} (level 4: 9 vs 6)"),
        ("same_line", "pass", "both versions are on the numbered line (level 3 is a number)"),
        ("free_levels", "pass", "levels 1-3 equal (7.0.4); level 4 changes; levels 3 and 4 are free"),
        ("declared_changes", "pass", "the package declares no changes the policy refuses"),
        ("maintenance_contract", "pass", "contract valid until 2028-12-31 (today 2026-11-26)"),
        ("patch_requires", "skip", "full package: no requires range"),
        ("approval", "skip", "checked when the run starts: an engineer's signed approval of this exact plan"),
    ]
    return {"allowed": True, "rules": [{"reason": r, "rule": n, "status": s} for n, s, r in rules]}


def _host_summary(name: str, current: str, target: str, package_sha: str) -> dict[str, Any]:
    return {"host": name, "address": f"10.20.{int(name[-3:]) // 200}.{int(name[-3:]) % 200 + 10}",
            "install_dir": "/opt/tongweb", "current": current, "target": target, "allowed": True,
            "decision": _decision(current, target),
            "checks": [{"check": "manual_changes", "reason": "the install matches the manifest of the last upgrade",
                        "status": "pass"},
                       {"check": "free_disk", "reason": "81541 MiB free, 412 MiB needed for the package and staging",
                        "status": "pass"}],
            "package": {"file": f"tongweb-{target}.tar.gz", "sha256": package_sha, "size": 412_000_000,
                        "kind": "full"}}


def _phase_data(phase: str, host: str, ok: bool = True) -> dict[str, Any]:
    if phase == "preflight":
        return {"seconds": 0.161, "detail": "7.0.4.6 -> 7.0.4.9, package on host",
                "result": {"package_sha256": _digest(host, "pkg")}}
    if phase == "backup":
        return {"seconds": 1.882, "detail": "1931 files (212 MiB) snapshotted and verified, 1931 staged",
                "result": {"backup_bytes": 222_298_112, "backup_digest": _digest(host, "backup"),
                           "backup_files": 1931, "config_files": 14, "drift": [], "package_members": 2104,
                           "staged_files": 1931}}
    if phase == "stop":
        return {"seconds": 4.206, "detail": "stopped in 4.09s", "result": {"escalated": None}}
    if phase == "install":
        return {"seconds": 0.84, "detail": "1931 files in place in 0.612s", "result": {"files": 1931, "seconds": 0.612}}
    if phase == "start":
        return {"seconds": 0.101, "detail": "start command done in 0.01s", "result": {}}
    if phase == "rollback":
        return {"seconds": 0.644, "detail": "1931 files restored from the verified backup in 0.52s; byte-identical",
                "result": {"identical": True}}
    if not ok:
        return {"seconds": 30.54, "detail": "never healthy after start: health: http://127.0.0.1:8080/health "
                "answered 503, expected 200; log: logs/server.log: ERROR health check failed: backend pool exhausted",
                "failure": "unhealthy"}
    probes = [{"detail": "pid 21706 alive", "ok": True, "probe": "process"},
              {"detail": "port 8080 open", "ok": True, "probe": "tcp"},
              {"detail": "http://127.0.0.1:8080/health answered 200", "ok": True, "probe": "health"},
              {"detail": "http://127.0.0.1:8080/version answered 200", "ok": True, "probe": "version"},
              {"detail": "logs/server.log clean", "ok": True, "probe": "log"}]
    return {"seconds": 32.225, "detail": "healthy: 5 probes passed 121 times over 30.0s", "result": {"probes": probes}}


def _run(w: LogWriter, number: int) -> Iterator[None]:
    """One fleet run's events, yielding after each so the caller can stop at an exact line count."""
    run = f"2026{number:08d}T0000Z-{_digest(number)[:6]}"
    current, target = "7.0.4.6", "7.0.4.9"
    hosts = [f"app-{number % 50:02d}-{i:03d}" for i in range(HOSTS_PER_RUN)]
    package_sha = _digest(target)
    summaries = [_host_summary(h, current, target, package_sha) for h in hosts]
    plan = _digest(number, "plan")
    catalog = {"path": "/srv/upgrader/catalog/catalog.yaml", "serial": 7, "sha256": _digest("catalog"),
               "signer": "vendor-release", "fingerprint": "SHA256:xwxOi6G1VEiYV8YJ1Tk63YPJyIVevvy974L+8A52jtg"}
    policy = {"manual_changes": "warn", "sha256": _digest("policy"), "source": "/srv/upgrader/policy.yaml"}
    approval = {"approver": "engineer@vendor", "key": "SHA256:mjxZayFWNysTX85y1I+lrh8XsrmlWsfE4+njQbk35P0",
                "expires": "2026-11-27T04:43:29+00:00", "digest": _digest(number, "approval"),
                "comment": f"change CHG-{number:06d}: TongWeb {target}"}
    w.event("plan_created", outcome="allowed", step_ms=60_000,
            data={"plan": plan, "file": f"/srv/upgrader/plans/to-{target}-{number}.json", "target": target,
                  "catalog": catalog, "policy": policy, "requester": {"host": "jump-01", "user": "support"},
                  "hosts": summaries})
    yield
    w.event("approval_created", outcome="approved", step_ms=300_000, data={"plan": plan, **approval})
    yield
    w.event("run_started", run=run, step_ms=600_000,
            data={"plan": plan, "target": target, "requester": {"host": "jump-01", "user": "support"},
                  "approvals": [approval], "catalog": catalog, "policy": policy, "self_approval_allowed": False,
                  "hosts": summaries})
    yield
    w.event("approval_accepted", run=run, outcome="accepted", data=approval)
    yield
    outcomes = {}
    for i, host in enumerate(hosts):
        w.event("host_started", run=run, host=host)
        yield
        fail = i % ROLLBACK_EVERY == ROLLBACK_EVERY - 1
        for phase in PHASES:
            w.event("phase_started", run=run, host=host, phase=phase)
            yield
            ok = not (fail and phase == "observe")
            w.event("phase_finished", run=run, host=host, phase=phase, outcome="ok" if ok else "failed",
                    data=_phase_data(phase, host, ok), step_ms=900)
            yield
        if fail:
            cause = "observe: " + _phase_data("observe", host, False)["detail"]
            w.event("rollback_started", run=run, host=host, data={"cause": cause})
            yield
            for phase in ("rollback", "start", "observe"):
                w.event("phase_started", run=run, host=host, phase=phase)
                yield
                w.event("phase_finished", run=run, host=host, phase=phase, outcome="ok",
                        data=_phase_data(phase, host), step_ms=700)
                yield
            outcomes[host] = "rolled_back"
            w.event("host_finished", run=run, host=host, outcome="rolled_back",
                    data={"version": current, "error": cause, "rollback_cause": cause})
        else:
            outcomes[host] = "committed"
            w.event("host_finished", run=run, host=host, outcome="committed",
                    data={"version": target, "error": None, "rollback_cause": None})
        yield
    w.event("run_finished", run=run, data={"exit_code": 1, "stopped_early": None, "outcomes": outcomes})
    yield
    w.checkpoint(run)
    yield


def generate(path: Path, events: int, key: Any) -> LogWriter:
    """Write exactly ``events`` chained lines to ``path``."""
    actor = {"user": "support", "host": "jump-01", "key": fingerprint(public_key_blob(key.public_key())),
             "principal": SIGNER}
    w = LogWriter(path, actor, key, dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.timezone.utc))
    number = 0
    try:
        while w.seq < events:
            number += 1
            for _ in _run(w, number):
                if w.seq >= events:
                    break
    finally:
        w.close()
    return w


def _machine() -> str:
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), platform.processor())
    except OSError:
        cpu = platform.processor()
    return f"{os.cpu_count()} CPU(s) (`nproc`), {cpu}; {platform.platform()}"


def _commit() -> str:
    """The commit measured, with the number of locally changed files of the code under test."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "upgrader/audit/log.py",
                                "upgrader/trust/sshsig.py", "upgrader/trust/signers.py"], capture_output=True, text=True,
                               check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (f" (+{len(dirty)} locally changed file(s))" if dirty else "")


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(work: Path, events: int, repeat: int) -> dict[str, Any]:
    """Generate the log in ``work`` and time ``verify_log`` on it ``repeat`` times."""
    from upgrader.trust.keys import generate_key, load_private_key, signer_line

    generate_key(work / "operator", SIGNER, overwrite=True)
    key = load_private_key(work / "operator")
    (work / "allowed_signers").write_text(signer_line(SIGNER, key.public_key(), NAMESPACE) + "\n", encoding="utf-8")
    log = work / "audit.jsonl"
    print(f"generating {events:,} events in {log} ...", file=sys.stderr)
    t0 = time.perf_counter()
    w = generate(log, events, key)
    gen_s = time.perf_counter() - t0
    size = log.stat().st_size
    print(f"  {size / 2**20:,.0f} MiB, {w.checkpoints} checkpoints, {gen_s:.1f} s", file=sys.stderr)
    signers = load_allowed_signers(work / "allowed_signers")
    timings = []
    for i in range(repeat):
        t0 = time.perf_counter()
        result = verify_log(log, signers=signers)
        timings.append(time.perf_counter() - t0)
        print(f"  verify {i + 1}/{repeat}: {timings[-1]:.2f} s ({events / timings[-1]:,.0f} events/s)",
              file=sys.stderr)
        if not result.intact or result.entries != events or result.checkpoints != w.checkpoints:
            raise RuntimeError(f"verify_log did not find the generated log intact: {result.to_dict()}")
    return {"events": events, "bytes": size, "checkpoints": w.checkpoints, "generate_s": gen_s, "timings": timings}


def report(m: dict[str, Any], command: str, load_start: str) -> str:
    median = statistics.median(m["timings"])
    rate = m["events"] / median
    met = rate >= GOAL_EVENTS_PER_S
    size, events = m["bytes"], m["events"]
    return "\n".join([
        "# Audit verification benchmark",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {_machine()}",
        f"- Python {platform.python_version()}; upgrader commit {_commit()}",
        f"- load average at start: {load_start}; at end: {_load()}",
        f"- command: `{command}`",
        f"- log: {events:,} events, {size / 2**20:,.0f} MiB ({size / events:,.0f} bytes per line on average), "
        f"{m['checkpoints']:,} signed checkpoints (Ed25519 SSHSIG), fleet runs of {HOSTS_PER_RUN} hosts; "
        f"generated in {m['generate_s']:.1f} s",
        "",
        ("All goals met." if met else f"**Goal missed: {rate:,.0f} events/s < {GOAL_EVENTS_PER_S:,}.**"),
        "",
        "| figure | value |",
        "|---|---|",
        f"| `verify_log` wall time, median of {len(m['timings'])} | {median:.2f} s "
        f"({', '.join(f'{t:.2f}' for t in m['timings'])}) |",
        f"| events verified per second | **{rate:,.0f}** |",
        f"| MiB verified per second | {size / 2**20 / median:,.0f} |",
        f"| goal | {GOAL_EVENTS_PER_S:,} events/s: {'met' if met else 'MISSED'} |",
        "",
        "Each verification checks every line's hash link and sequence number, the time order, every "
        "checkpoint's signature against the allowed_signers file and the structure of runs, and found the "
        f"log intact ({events:,} entries, {m['checkpoints']:,} checkpoints).",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="lines in the generated log (default 1,000,000)")
    p.add_argument("-r", "--repeat", type=int, default=3, help="verifications to time (median; default 3)")
    p.add_argument("--quick", action="store_true", help="100,000 events; writes audit_verify-quick.md")
    p.add_argument("--workdir", default=None, help="where the temporary log goes (default: the system's temp dir)")
    p.add_argument("--keep", metavar="DIR", help="write the log, key and allowed_signers to DIR and keep them")
    p.add_argument("--results", default=str(RESULTS_DIR), help="where the report goes (default benchmarks/results)")
    p.add_argument("--check", action="store_true", help="exit 1 when the goal is missed")
    args = p.parse_args(argv)
    events = 100_000 if args.quick else args.events
    command = ".venv/bin/python benchmarks/audit_verify.py" + (" --quick" if args.quick else "") + \
        ("" if args.quick or events == 1_000_000 else f" --events {events}") + \
        ("" if args.repeat == 3 else f" --repeat {args.repeat}")
    load_start = _load()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="upgrader-bench-audit-", dir=args.workdir))
    work.mkdir(parents=True, exist_ok=True)
    try:
        m = measure(work, events, args.repeat)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as e:
        print(f"audit_verify: could not measure: {e}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = report(m, command, load_start)
    print(text)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / ("audit_verify-quick.md" if args.quick else "audit_verify.md")).write_text(text, encoding="utf-8")
    met = m["events"] / statistics.median(m["timings"]) >= GOAL_EVENTS_PER_S
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
