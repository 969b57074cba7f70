"""Issues 20 and 12, the host side of the witness: what a modified controller (tests/modified_controller.py: the
shipped agent's own requests over the real sshd, with the fields it chooses, nothing of upgrader patched) can no
longer make a host do or record.

- A changing action (prepare, stop, install, start, hook, rollback, finish) for a run that does not hold the host's
  lock, or for no run at all, is refused naming the run that holds it ("nobody holds it"): the service keeps
  running, no hook runs, nothing is recorded; the shipped CLI still upgrades the host afterwards.
- A witness is its run's, in its turn: sent for another run than its checkpoint's, or once another run took the
  host's lock after the run's end, it is refused and nothing is recorded.
- A run ends once: its finish always releases the lock (there is no ``unlock: false`` any more), a second finish of
  the same part of a run, and a lock taken again for a part that already ended, are refused; the host keeps one
  record of it.
- The host no longer infers the kind of a run: the controller says it at the lock (run, guided, continuation,
  resume, rollback), the host checks it against the label and its own records and keeps it in its opening record,
  its record of the end and its witnessed checkpoint. An unknown kind, a label of another kind, a first run of a run
  id the host already opened, and a resume or rollback of a run that never took its lock are refused, nothing
  written. The shipped CLI's rollback of a run killed before its lock reached the host leaves that host as it is
  (nothing of the run there to undo) and records nothing of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import kill_processes_under, upgrader

from fleet import Fleet, FleetHost
from hoststate import HostState, assert_host_untouched, host_state, lock_audit, take_lock
from modified_controller import ModifiedController, checkpoint_to_witness, log_path
from test_audit_witness_attacks_2 import fleet, run_killed_at, run_once  # noqa: F401 - fleet is a fixture
from upgrader.fleet.transport.base import AgentFailure

CHANGING = ("prepare", "stop", "install", "start", "hook", "rollback", "finish")


def whole(h: FleetHost) -> HostState:
    """The whole host: product files, the service (pid, start time, version answered), the agent's state dir."""
    return host_state(h.install_dir, state_dir=h.state_dir, answers=h.answers)


def refused(c: ModifiedController, op: str, **req: Any) -> AgentFailure:
    with pytest.raises(AgentFailure) as caught:
        c.call(op, **req)
    return caught.value


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def changing_request(op: str, h: FleetHost, pwned: Path) -> dict[str, Any]:
    """What the controller sends for ``op`` (the sample middleware's own stop and start; a hook that would leave a
    file behind): each would change the host if it ran."""
    import yaml  # type: ignore[import-untyped]
    from upgrader.core.playbook import shipped_playbooks_dir

    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    return {"prepare": {"package_path": "/nonexistent", "sha256": "0" * 64, "size": 1, "limits": {}, "kind": "full",
                        "remove": [], "preserve": spec["preserve"], "current_version": "7.0.4.2"},
            "stop": {"stop": {"command": f"touch {pwned}", "pid_file": "run/server.pid", "timeout": 5}},
            "install": {"preserve": spec["preserve"], "target_version": "7.0.4.3"},
            "start": {"start": {"command": f"touch {pwned}", "timeout": 5}, "pid_file": None, "log_offsets": []},
            "hook": {"command": f"touch {pwned}", "hook_timeout": 5, "phase": "after_stop"},
            "rollback": {"verify": "quick"},
            "finish": {"outcome": "committed", "keep": 3, "approvals": []}}[op]


def test_a_changing_action_of_a_run_that_does_not_hold_the_lock_is_refused_naming_the_holder(
        fleet: Fleet, tmp_path: Path) -> None:  # noqa: F811
    f = fleet
    run, _, _ = run_once(f)  # 7.0.4.2 committed with the shipped CLI, the host unlocked
    h = f["app-01"]
    pwned = tmp_path / "pwned"
    intruder = run[:-6] + "1ntrud"
    with ModifiedController(f, "app-01") as c:
        before = whole(h)
        for op in CHANGING:  # nobody holds the lock: a run that never took it, and no run at all
            e = refused(c, op, run_id=intruder, **changing_request(op, h, pwned))
            assert e.kind == "not_locked", (op, e.kind, e.message)
            assert f"run {intruder} does not hold this host's lock (nobody holds it)" in e.message, e.message
            assert "nothing was recorded" in e.message if op == "finish" else "nothing was done" in e.message
            e = refused(c, op, **changing_request(op, h, pwned))
            assert e.kind == "not_locked" and f"the {op} request names no run (this host's lock: nobody holds it)" \
                in e.message, e.message
        assert_host_untouched(before, whole(h), "refused with nobody holding the lock")
        # another run holds the lock: the intruder is refused naming it
        holder = run[:-6] + "h0lder"
        assert take_lock(c.call, holder, controller="ops-laptop", user="alice")["locked"]
        before = whole(h)
        for op in CHANGING:
            e = refused(c, op, run_id=intruder, **changing_request(op, h, pwned))
            assert e.kind == "not_locked" and \
                f"run {intruder} does not hold this host's lock (held by run {holder})" in e.message, e.message
        assert_host_untouched(before, whole(h), "refused while another run holds the lock")
        # the witness of the finished run: sent for another run than its checkpoint's, or while another run holds
        # the lock -- refused, nothing recorded
        cp = checkpoint_to_witness(log_path(f).read_bytes().splitlines(), run)
        (h.state_dir / "checkpoints.jsonl").unlink()  # as if the controller had held its witness back
        before = whole(h)
        e = refused(c, "witness", run_id=intruder, checkpoint=cp)
        assert e.kind == "bad_input" and f"sent for run {intruder}, but its checkpoint is of run {run}" in e.message
        e = refused(c, "witness", run_id=run, checkpoint=cp)
        assert e.kind == "not_locked" and f"run {holder} holds this host's lock now" in e.message, e.message
        assert_host_untouched(before, whole(h), "a witness out of its run's turn")
        assert c.call("unlock", run_id=holder)["released"] is True
        # once another run took the host, the first run's witness is no longer in its turn
        e = refused(c, "witness", checkpoint=cp)
        assert e.kind == "bad_input" and f"{holder} took this host's lock at " in e.message, e.message
        assert f"after {run} ended here at " in e.message and "nothing was recorded" in e.message
    assert not pwned.exists(), "no hook, stop or start command of the intruder ran"
    assert h.answers() == "7.0.4.2"


def test_a_run_ends_once_on_a_host(fleet: Fleet) -> None:  # noqa: F811
    f = fleet
    run, _, _ = run_once(f)
    h = f["app-01"]
    finished = h.state_dir / "runs.jsonl"
    assert [r["as"] for r in lines(finished)] == [run]
    other = run[:-6] + "0nce00"
    with ModifiedController(f, "app-01") as c:
        before = whole(h)
        # the committed run's lock taken again, to record its end a second time (or another outcome): refused
        e = refused(c, "lock", run_id=run, controller="vm", user="root", approvals=[], audit=lock_audit(run))
        assert e.kind == "run_kind" and f"{run} already ended on this host (committed, at " in e.message
        assert "a run ends once" in e.message and "nothing was locked" in e.message, e.message
        assert_host_untouched(before, whole(h), "a lock for a run that already ended")
        # a run that holds the lock ends once: its finish releases the lock, whatever the request says
        assert take_lock(c.call, other)["locked"]
        done = c.call("finish", run_id=other, outcome="unchanged", keep=3, approvals=[], unlock=False,
                      audit={"as": other})
        assert done["released"] is True
        assert not (h.state_dir / "lock").exists()
        e = refused(c, "finish", run_id=other, outcome="rolled_back", keep=3, approvals=[], audit={"as": other})
        assert e.kind == "not_locked" and "nothing was recorded" in e.message
        e = refused(c, "lock", run_id=other, controller="vm", user="root", approvals=[], audit=lock_audit(other))
        assert e.kind == "run_kind" and f"{other} already ended on this host (unchanged, at " in e.message
        # a later part of the run (a resume) holds the lock: a finish of the part that already ended is refused
        later = lock_audit(other, "resume")
        assert take_lock(c.call, other, "resume", audit={"as": later["as"]})["locked"]
        e = refused(c, "finish", run_id=other, outcome="rolled_back", keep=3, approvals=[], audit={"as": other})
        assert e.kind == "bad_input" and f"the lock of run {other} was last taken for {later['as']}, not {other}" \
            in e.message, e.message
        assert c.call("finish", run_id=other, outcome="unchanged", keep=3, approvals=[],
                      audit={"as": later["as"]})["released"]
    labels = [r["as"] for r in lines(finished)]
    assert labels == [run, other, later["as"]], labels  # one record of each part of a run


def test_the_host_records_the_kind_it_is_told_and_refuses_one_its_records_contradict(
        fleet: Fleet) -> None:  # noqa: F811
    f = fleet
    run, _, _ = run_once(f)
    h = f["app-01"]
    assert upgrader(f.box, "rollback", run, "--yes") == 0  # the shipped CLI: a run, then its rollback
    opened, ended = lines(h.state_dir / "runs-opened.jsonl"), lines(h.state_dir / "runs.jsonl")
    witnessed = lines(h.state_dir / "checkpoints.jsonl")
    assert [r["kind"] for r in opened] == ["run", "rollback"], opened
    assert opened[0]["as"] == run and opened[1]["as"].startswith(f"{run}/rollback-"), opened
    assert [r["kind"] for r in ended] == ["run", "rollback"] and [r["kind"] for r in witnessed] == ["run", "rollback"]
    never = run[:-6] + "n3ver0"
    with ModifiedController(f, "app-01") as c:
        before = whole(h)
        base = {"controller": "vm", "user": "root", "approvals": []}
        cases = [  # (run id, audit, kind of refusal, words)
            (never, {"as": never}, "run_kind", "does not say which kind of run it opens (None)"),
            (never, {"kind": "upgrade", "as": never}, "run_kind", "(\'upgrade\'): one of continuation, guided"),
            (never, lock_audit(never, "resume"), "never_locked",
             f"run {never} never took this host's lock: nothing of it was done here, so there is nothing of it here "
             "to resume"),
            (never, lock_audit(never, "rollback"), "never_locked", "so there is nothing of it here to roll back"),
            (run, {"kind": "rollback", "as": f"{run}/resume-20990101T000000"}, "run_kind",
             f"a rollback of run {run} is named {run}/rollback-... in the log, not {run}/resume-20990101T000000"),
            (run, {"kind": "run", "as": f"{run}/rollback-20990101T000000"}, "run_kind",
             f"a run of run {run} is named {run} in the log"),
            (run, lock_audit(run, "continuation"), "run_kind",
             f"run {run} already took this host's lock (as {run}, at "),
            (run, lock_audit(run, "guided"), "run_kind", f"{run} already ended on this host (committed"),
        ]
        for run_id, audit, kind, words in cases:
            e = refused(c, "lock", run_id=run_id, audit=audit, **base)
            assert e.kind == kind and words in e.message and "nothing was locked" in e.message, (audit, e.message)
        assert_host_untouched(before, whole(h), "locks whose kind the host's records contradict")


def test_a_rollback_of_a_run_killed_before_its_lock_reached_the_host_leaves_it_as_it_is(
        fleet: Fleet) -> None:  # noqa: F811
    f = fleet
    h = f["app-01"]
    run = run_killed_at(f, "preflight:started")
    assert run not in [r["run"] for r in lines(h.state_dir / "runs-opened.jsonl")], "the lock never reached the host"
    before = whole(h)
    done = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), "rollback", run, "--yes",
                           "--json"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    (host,) = json.loads(done.stdout)["hosts"]
    assert host["outcome"] == "restored", host
    assert f"nothing of this run to roll back on app-01: run {run} never took this host's lock" in host["error"]
    assert_host_untouched(before, whole(h), "the rollback of a run that never took the host's lock")
    assert h.answers() == "7.0.4.1"


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_processes_under(tmp_path)
