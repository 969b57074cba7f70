"""``upgrader.api`` drives the whole upgrade story on the real sample middleware (real processes, keys,
signatures and tarballs): plan, show, approve, run with an observer and a cancel token, rollback, resume
after a run killed mid-way; refusals raise ``UpgraderError`` subclasses with the CLI's exit codes and touch
nothing; the API prints nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import fault_env, product_digest, tree_digest
from upgrader import api
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.engine import CANCELLED
from upgrader.core.errors import ApprovalRefused, InputError, PolicyRefused
from upgrader.core.exit_codes import ExitCode

PHASES = ["preflight", "backup", "stop", "install", "start", "observe"]


class Seen:
    """An observer that keeps every event (from the engine's threads)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(dict(event))

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]

    def phases(self, status: str = "ok") -> list[str]:
        return [e["phase"] for e in self.events if e["event"] == "phase_finished" and e["status"] == status]


def state_dir(box: Sandbox) -> Path:
    return box.install_dir.parent / f".upgrader-{box.install_dir.name}"


def host_state(box: Sandbox) -> dict[str, Any]:
    """Everything "nothing touched" is about: product files, the running service's pid, the version it answers,
    the agent's state (lock, staged packages, backups) and this machine's runs."""
    pid_file = box.install_dir / "run" / "server.pid"
    runs = box.root / "runs"
    return {"product": product_digest(box.install_dir), "pid": pid_file.read_text().strip(),
            "version": box.answers(),
            "agent": {k: v for k, v in tree_digest(state_dir(box)).items() if k != ".upgrader-state"}
            if state_dir(box).exists() else None,
            "runs": sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []}


def plan_and_approve(box: Sandbox, ctx: api.Context, version: str) -> tuple[api.PlanMade, api.ApprovalMade]:
    made = api.make_plan(ctx, inventory=box.inventory, to=version, catalog=box.catalog,
                         output=box.plans / f"api-{version}.json", key=box.requester_key)
    approval = api.approve(ctx, made.file, key=box.engineer_key, output=box.approvals / f"api-{version}.approval",
                           comment="reviewed in the api test")
    return made, approval


def test_plan_approve_run_with_an_observer_then_rollback(sandbox: Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    box = sandbox
    ctx = api.Context(home=box.root)
    before = product_digest(box.install_dir)
    made, approval = plan_and_approve(box, ctx, "7.0.4.2")
    assert made.allowed and made.file.is_file() and made.plan.hosts[0]["current"] == "7.0.4.1"
    assert made.catalog_signer.get("serial") is not None
    review = api.show_plan(ctx, made.file)
    assert review.plan.digest == made.plan.digest == approval.plan
    assert review.review["policy_here"]["same"] is True  # type: ignore[index]
    assert approval.approver == "engineer@vendor" and approval.file.is_file()
    seen = Seen()
    result = api.run(ctx, made.file, approvals=[approval.file], observers=[seen])
    assert result.exit_code == ExitCode.OK and result.ran
    (host,) = result.hosts
    assert (host.host, host.outcome, host.current, host.target, host.version) == \
        ("app-01", "committed", "7.0.4.1", "7.0.4.2", "7.0.4.2")
    assert [p.phase for p in host.phases] == PHASES and host.downtime is not None
    assert box.answers() == "7.0.4.2"
    # the observer saw the run as it happened, in order
    assert seen.kinds()[0] == "run_started" and seen.kinds()[-1] == "run_finished"
    assert seen.phases() == PHASES
    assert seen.events[-1]["exit_code"] == 0 and seen.events[-1]["run"] == result.run_id
    # the result is what result.json holds, with the signed audit checkpoint
    on_disk = json.loads((box.root / "runs" / result.run_id / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result.data)) and result.checkpoint is not None

    back = api.rollback(ctx, result.run_id, observers=[seen])
    assert back is not None and back.exit_code == ExitCode.OK
    assert [(h.outcome, h.version) for h in back.hosts] == [("restored", "7.0.4.1")]
    assert box.answers() == "7.0.4.1" and product_digest(box.install_dir) == before
    assert seen.kinds()[-1] == "run_finished"
    # the API printed nothing
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_cancel_token_rolls_the_stopped_host_back(sandbox: Sandbox) -> None:
    """The token is set by an observer once ``stop`` finished (the operator's cancel on cue): the host is rolled
    back to the old version at the next safe point, healthy; the run says why."""
    box = sandbox
    ctx = api.Context(home=box.root)
    before = product_digest(box.install_dir)
    made, approval = plan_and_approve(box, ctx, "7.0.4.2")
    cancel = api.CancelToken()

    class CancelAfterStop:
        def on_event(self, event: dict[str, Any]) -> None:
            if event["event"] == "phase_finished" and event["phase"] == "stop":
                cancel.cancel()

    result = api.run(ctx, made.plan, approvals=[approval.file], observers=[CancelAfterStop()], cancel=cancel)
    assert cancel.cancelled
    (host,) = result.hosts
    assert (host.outcome, host.version, host.rollback_cause) == ("rolled_back", "7.0.4.1", CANCELLED)
    assert "install" not in [p.phase for p in host.phases if p.status == "ok"]
    assert result.exit_code == ExitCode.ROLLED_BACK
    assert box.answers() == "7.0.4.1" and product_digest(box.install_dir) == before


def test_refusals_raise_with_the_cli_exit_codes_and_touch_nothing(sandbox: Sandbox) -> None:
    box = sandbox
    ctx = api.Context(home=box.root)
    made, approval = plan_and_approve(box, ctx, "7.0.4.2")
    before = host_state(box)
    with pytest.raises(ApprovalRefused) as refused:  # no approval
        api.run(ctx, made.file)
    assert refused.value.exit_code == ExitCode.APPROVAL_REFUSED and "approval" in str(refused.value)
    with pytest.raises(InputError) as bad:  # bad limits: refused before any check reads a host
        api.run(ctx, made.file, approvals=[approval.file], limits=api.RunLimits(batch="150%"))
    assert bad.value.exit_code == ExitCode.BAD_INPUT and "--batch" in str(bad.value)
    refused_plan = api.make_plan(ctx, inventory=box.inventory, to="7.1.0.0", catalog=box.catalog,
                                 output=box.plans / "api-down.json", key=box.requester_key)
    assert not refused_plan.allowed  # a minor upgrade: written, with the reasons, and refused by run
    with pytest.raises(PolicyRefused) as policy:
        api.run(ctx, refused_plan.file, approvals=[approval.file])
    assert policy.value.exit_code == ExitCode.POLICY_REFUSED
    with pytest.raises(InputError):
        api.resume(ctx, "no-such-run")
    assert host_state(box) == before
    # both refusals are on the audit record
    audit = [json.loads(line) for line in (box.root / "audit" / "audit.jsonl").read_text().splitlines()]
    assert {"approval_refused", "run_refused"} <= {e["event"] for e in audit}


def test_resume_through_the_api_finishes_a_run_killed_after_stop(sandbox: Sandbox) -> None:
    """A program that drives ``api.run`` is killed (SIGKILL) right after the service was stopped; ``api.resume``
    rolls the host back to the old version from the journal and the host's own state; a second resume has
    nothing to do."""
    box = sandbox
    ctx = api.Context(home=box.root)
    before = product_digest(box.install_dir)
    made, approval = plan_and_approve(box, ctx, "7.0.4.2")
    program = ("import sys\nfrom pathlib import Path\nfrom upgrader import api\n"
               "api.run(api.Context(home=Path(sys.argv[1])), Path(sys.argv[2]), approvals=[Path(sys.argv[3])])\n")
    env = {**os.environ, **fault_env(kill_at="stop:finished")}
    child = subprocess.run([sys.executable, "-c", program, str(box.root), str(made.file), str(approval.file)],
                           env=env, capture_output=True, text=True, timeout=300, cwd=box.root)
    assert child.returncode == -9, child.stderr[-2000:]
    (run_id,) = [p.name for p in (box.root / "runs").iterdir()]
    assert not (box.root / "runs" / run_id / "result.json").exists()
    seen = Seen()
    result = api.resume(ctx, run_id, observers=[seen])
    assert result.ran and result.exit_code == ExitCode.ROLLED_BACK
    assert [(h.outcome, h.version) for h in result.hosts] == [("rolled_back", "7.0.4.1")]
    assert box.answers() == "7.0.4.1" and product_digest(box.install_dir) == before
    assert seen.kinds()[0] == "run_started" and seen.kinds()[-1] == "run_finished"
    again = api.resume(ctx, run_id)
    assert not again.ran and again.exit_code == result.exit_code
    assert box.answers() == "7.0.4.1"


def readme_python_example() -> str:
    """The README's "Use from Python" example, as written (the first python block of that section)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Use from Python\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_python_example_runs_as_written(sandbox: Sandbox, capfd: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Executed in the demo's sandbox directory (what ``upgrader demo --dir DIR`` leaves), as the README says:
    the plan is made, approved and run; the observer printed every phase; the host now runs 7.0.4.2."""
    box = sandbox
    code = readme_python_example()
    assert "api.run(" in code and "observers=" in code and "api.approve(" in code
    monkeypatch.chdir(box.root)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the documented example, verbatim
    result = namespace["result"]
    assert isinstance(result, api.RunResult) and result.exit_code == 0
    assert [(h.outcome, h.version) for h in result.hosts] == [("committed", "7.0.4.2")]
    assert box.answers() == "7.0.4.2"
    out = capfd.readouterr().out
    for phase in PHASES:
        assert f"app-01 {phase} ok " in out, out
    assert "app-01 committed now running 7.0.4.2" in out and "exit code 0" in out
