"""Issue 20, the auditor's case file, leftovers (fix20k), played through the shipped CLI over the real sshd.

- Two rollbacks of one run in the same second (the controller's clock frozen: the CLI's own injected clock) each get
  their own label in the log and on the hosts (RUN/rollback-TIME-RANDOM, sortable by time), and both end cleanly:
  every host keeps one record per label and the log with the hosts' records reads INTACT."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Iterator

import pytest
from conftest import approve, kill_processes_under, now_at, plan_to, upgrader

from fleet import Fleet, build_fleet
from sshd import SSHServer
from test_audit_witness_attacks_2 import log_of, records, verify


@pytest.fixture
def fleet2(tmp_path: Path, sshd: SSHServer) -> Iterator[Fleet]:
    f = build_fleet(tmp_path / "fleet", sshd, 2)
    try:
        yield f
    finally:
        f.stop_all()
        kill_processes_under(tmp_path)


def run_all(f: Fleet, version: str = "7.0.4.2") -> str:
    rc, plan = plan_to(f.box, version)
    assert rc == 0
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 0
    return f.run_dirs()[-1].name


def test_two_rollbacks_of_one_run_in_the_same_second_each_get_their_own_label(
        fleet2: Fleet, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`rollback RUN --hosts app-01` then `rollback RUN --hosts app-02` each starting at the same second on the controller's clock (conftest.now_at, the CLI's injected clock): both exit
    0, the log opens two rollbacks with two labels (time first, so they sort), each host opened and ended its own
    label once, and `audit verify --witness` reads INTACT."""
    f = fleet2
    run = run_all(f)
    # the controller's clock a second or two ahead (one offset for each rollback, as a host allows): the first
    # rollback starts on a whole second, the second one 0.95 s later on the same clock, so both labels share that second
    second = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)).replace(microsecond=0)
    now_at(monkeypatch, second.isoformat())
    assert upgrader(f.box, "rollback", run, "--hosts", "app-01", "--yes") == 0
    took = dt.datetime.fromisoformat(records(log_of(f))[-1]["time"]) - second
    if took > dt.timedelta(seconds=0.9):  # the log's times never go back: the second would start later than this
        pytest.skip(f"the first rollback took {took} on a loaded machine: the second cannot start in its second")
    now_at(monkeypatch, (second + dt.timedelta(seconds=0.95)).isoformat())
    assert upgrader(f.box, "rollback", run, "--hosts", "app-02", "--yes") == 0
    opened = [r["run"] for r in records(log_of(f)) if r.get("event") == "rollback_requested"]
    assert len(opened) == 2 and len(set(opened)) == 2, opened
    stamp = f"{second:%Y%m%dT%H%M%S}"
    assert all(label.startswith(f"{run}/rollback-{stamp}") for label in opened), opened
    for name, label in zip(("app-01", "app-02"), opened):
        ended = [r for r in records(f[name].state_dir / "runs.jsonl") if r.get("as", r.get("run")) == label]
        assert len(ended) == 1 and ended[0]["kind"] == "rollback", ended
    rc, report, text = verify(f, capsys)
    assert rc == 0 and "INTACT" in text, text
