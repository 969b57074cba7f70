"""``run --events FILE|-`` (and resume, rollback): one JSON object per engine event, format 1, through the
shipped CLI on the real sample middleware: every line parses, has exactly the documented keys, phases come in
order, the last line is the run's end with its exit code; with ``-`` stdout holds only the events (the human
output goes to stderr)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import approve, plan_to, upgrader
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.events import FIELDS, event_line

PHASES = ["preflight", "backup", "stop", "install", "start", "observe"]


def lines_of(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\n"), "every event is a whole line"
    out = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert out, "no events"
    for e in out:
        assert list(e) == list(FIELDS) and e["format"] == 1, e
        assert e["time"] and e["run"]
    assert len({e["run"] for e in out}) == 1
    return out


def phases(events: list[dict[str, Any]], status: str) -> list[str]:
    return [e["phase"] for e in events if e["event"] == "phase_finished" and e["status"] == status]


def host_end(events: list[dict[str, Any]]) -> dict[str, Any]:
    (end,) = [e for e in events if e["event"] == "host_finished"]
    return end


def test_a_committed_run_to_a_file(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    events_file = box.root / "events" / "run.jsonl"
    events_file.parent.mkdir()
    capsys.readouterr()
    rc = upgrader(box, "run", str(plan), "--approval", str(approve(box, plan)), "--events", str(events_file))
    out = capsys.readouterr().out
    assert rc == 0
    assert "COMMITTED" in out and "Run " in out  # the human output is unchanged on stdout
    events = lines_of(events_file.read_text(encoding="utf-8"))
    assert events[0]["event"] == "run_started" and events[0]["status"] == "started"
    assert [e["event"] for e in events if e["host"]][:2] == ["host_started", "phase_started"]
    started = [e["phase"] for e in events if e["event"] == "phase_started"]
    assert started == PHASES and phases(events, "ok") == PHASES and phases(events, "failed") == []
    for e in events:
        if e["host"]:
            assert (e["from_version"], e["to_version"]) == ("7.0.4.1", "7.0.4.2"), e
        if e["event"] == "phase_finished":
            assert isinstance(e["seconds"], float) and e["detail"]
    end = host_end(events)
    assert (end["status"], end["version"]) == ("committed", "7.0.4.2")
    last = events[-1]
    assert (last["event"], last["status"], last["exit_code"], last["host"]) == ("run_finished", "done", 0, None)
    assert (box.root / "runs" / last["run"] / "result.json").is_file()


def test_a_rolled_back_run_to_stdout(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """7.0.4.5 never becomes healthy: the stream shows observe failed, the rollback and its cause, the host
    rolled back to 7.0.4.1 and the run's exit 1; stdout holds nothing but the events."""
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.5")
    assert rc == 0
    approval = approve(box, plan)
    capsys.readouterr()
    rc = upgrader(box, "run", str(plan), "--approval", str(approval), "--events", "-")
    out, err = capsys.readouterr()
    assert rc == 1
    events = lines_of(out)
    assert "ROLLED_BACK" in err and "Run " in err  # the human output went to stderr
    assert phases(events, "ok")[:5] == PHASES[:5] and phases(events, "failed") == ["observe"]
    (rolling,) = [e for e in events if e["event"] == "rollback_started"]
    assert rolling["status"] == "rolling_back" and rolling["detail"].startswith("observe: ")
    assert [e["event"] for e in events].index("rollback_started") > [e["phase"] for e in events].index("observe")
    end = host_end(events)
    assert (end["status"], end["version"]) == ("rolled_back", "7.0.4.1")
    last = events[-1]
    assert (last["event"], last["status"], last["exit_code"]) == ("run_finished", "failed", 1)
    assert box.answers() == "7.0.4.1"


def test_rollback_streams_its_events_and_json_with_stdout_events_is_refused(sandbox: Sandbox,
                                                                            capsys: pytest.CaptureFixture[str]
                                                                            ) -> None:
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    rc = upgrader(box, "run", str(plan), "--approval", str(approve(box, plan)))
    assert rc == 0
    (run_id,) = [p.name for p in (box.root / "runs").iterdir()]
    capsys.readouterr()
    # --json and --events - would both write stdout: refused before anything is touched (exit 2)
    rc = upgrader(box, "rollback", run_id, "--yes", "--json", "--events", "-")
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and "--events - and --json" in err
    assert box.answers() == "7.0.4.2"
    events_file = box.root / "rollback.jsonl"
    rc = upgrader(box, "rollback", run_id, "--yes", "--json", "--events", str(events_file))
    out, _ = capsys.readouterr()
    assert rc == 0 and json.loads(out)["hosts"][0]["outcome"] == "restored"  # --json unchanged
    events = lines_of(events_file.read_text(encoding="utf-8"))
    assert (events[0]["event"], events[0]["run"]) == ("run_started", run_id)
    end = host_end(events)
    assert (end["status"], end["version"], end["from_version"], end["to_version"]) == \
        ("restored", "7.0.4.1", "7.0.4.2", "7.0.4.1")
    assert "start" in phases(events, "ok")
    assert (events[-1]["event"], events[-1]["status"], events[-1]["exit_code"]) == ("run_finished", "done", 0)
    assert box.answers() == "7.0.4.1"


def test_event_line_redacts_and_keeps_the_documented_keys() -> None:
    """A phase detail quoting a password is masked like every other output; unknown fields are not copied."""
    line = event_line({"event": "phase_finished", "run": "r1", "host": "h", "time": "2026-01-01T00:00:00+00:00",
                       "phase": "start", "status": "failed", "seconds": 1.5,
                       "detail": "start.sh --password=hunter2 failed", "result": {"token": "abc"}},
                      {"h": ("1", "2")})
    assert list(line) == list(FIELDS)
    assert "hunter2" not in json.dumps(line) and line["detail"] and "***" in str(line["detail"])
    assert (line["status"], line["seconds"], line["from_version"], line["to_version"]) == ("failed", 1.5, "1", "2")


def test_the_events_file_cannot_be_written_is_bad_input(sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    before = box.answers()
    capsys.readouterr()
    rc = upgrader(box, "run", str(plan), "--approval", str(approve(box, plan)), "--events",
                  str(tmp_path / "missing-dir" / "events.jsonl"))
    err = capsys.readouterr().err
    assert rc == 2 and "events.jsonl" in err and "--events" in err
    assert box.answers() == before and not (box.root / "runs").exists()
