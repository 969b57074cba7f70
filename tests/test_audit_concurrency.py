"""Two processes appending to one audit log at the same time: nothing interleaves, nothing is lost, the
chain stays intact."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

from upgrader.audit.log import AuditLog, verify_log

PER_WRITER = 5_000


def _append_many(path: str, writer: str, count: int, barrier: Any) -> None:
    """A writer process: wait for the other, then append a run of ``count`` events, reading the clock per event as
    ``Recorder`` does (before the lock is taken)."""
    log = AuditLog(Path(path), {"user": writer, "host": "test", "key": None, "principal": f"{writer}@test"})
    barrier.wait(timeout=60)
    for i in range(count):
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        if i == 0:
            log.append("run_started", run=f"run-{writer}", time=now, data={"writer": writer, "i": i})
        else:
            log.append("phase_finished", run=f"run-{writer}", host=f"host-{writer}", phase="install", outcome="ok",
                       time=now, data={"writer": writer, "i": i})


def test_two_processes_appending_5000_events_each_leave_an_intact_log_with_every_event_once(tmp_path: Path) -> None:
    """Two real processes append 5,000 events each at once; the log verifies and holds each event exactly once."""
    path = tmp_path / "audit" / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    writers = [ctx.Process(target=_append_many, args=(str(path), name, PER_WRITER, barrier)) for name in ("A", "B")]
    for p in writers:
        p.start()
    try:
        barrier.wait(timeout=60)
        started = time.monotonic()
        for p in writers:
            p.join(timeout=300)
        elapsed = time.monotonic() - started
    finally:
        for p in writers:
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in writers] == [0, 0]
    print(f"\n2 x {PER_WRITER} fsynced appends in {elapsed:.1f} s ({2 * PER_WRITER / elapsed:,.0f} events/s)")

    # no checkpoint closes the two runs: an anchor on the last line (as a run prints one) vouches for them
    last = path.read_bytes().splitlines()[-1]
    result = verify_log(path, signers=None, anchor=(2 * PER_WRITER, hashlib.sha256(last).hexdigest()))
    assert result.chain_intact and result.anchor_checked, result.message
    assert result.entries == 2 * PER_WRITER == result.valid_entries

    seen: dict[str, list[int]] = {"A": [], "B": []}
    for line in path.read_bytes().splitlines():
        data = json.loads(line)["data"]
        seen[data["writer"]].append(data["i"])
    for writer, numbers in seen.items():
        assert numbers == list(range(PER_WRITER)), f"writer {writer}'s events are missing, doubled or out of order"
    # both really wrote at the same time: their lines interleave rather than forming two blocks
    order = [json.loads(line)["data"]["writer"] for line in path.read_bytes().splitlines()]
    switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert switches > 10, f"the writers took turns only {switches} times: they did not run concurrently"


def test_a_lock_file_deleted_between_appends_does_not_fork_the_chain(tmp_path: Path) -> None:
    """Someone removes audit.jsonl.lock while a writer keeps its lock file open; a new writer makes a new one.
    Each re-checks the lock path under its lock, so the two still exclude each other: 602 lines, seq 1..602."""
    path = tmp_path / "audit.jsonl"
    first, second = AuditLog(path, {"user": "a"}), AuditLog(path, {"user": "b"})
    first.append("run_started", run="r1", time="2026-01-01T09:00:00.000+00:00")
    second.append("run_started", run="r2", time="2026-01-01T09:00:00.000+00:00")
    (tmp_path / "audit.jsonl.lock").unlink()
    third = AuditLog(path, {"user": "c"})

    def write(log: AuditLog) -> None:
        for _ in range(300):
            log.append("phase_finished", run="r", time="2026-01-01T09:00:01.000+00:00")

    writers = [threading.Thread(target=write, args=(log,)) for log in (first, third)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 603))
