"""The recovery itself is killed: `upgrader resume` and `upgrader rollback` die (SIGKILL) at each of their own steps,
then the same command runs again: the host ends on exactly one whole version (the old one after a rollback, the old
or the new one after a resume), healthy, one service process; `audit verify` passes; a third run changes nothing on
the host (product files, the service's pid and start time, the agent's state dir, lock and staged packages).

How a kill is placed: as in test_kill_matrix (the test suite's fault plugin, conftest's fault_env; the product has no
such hook), now in the `resume` or `rollback` child process: ``<phase>:before|started|finished`` kills it at that
boundary of its own phases, ``agent:<op>:<step>`` makes the host agent die at that step of the action the recovery
sent (then the controller dies too, as after a power cut).

Scenarios (the playbook: the sample one, a 0.5 s observation window, an ``after_rollback`` hook):

- ``rollback``: 7.0.4.1 -> 7.0.4.2 committed, then `upgrader rollback RUN`, killed at each step of its own: the lock,
  verify_backup, rollback (restore), hook:after_rollback, start, observe, finish. Run again: restored, 7.0.4.1 byte
  for byte.
- ``resume``: the run killed after its install (``install:finished``: the new tree in place, the service stopped),
  then `upgrader resume RUN`, killed at each step of the rollback it does: the lock, rollback, hook:after_rollback,
  start, observe, finish (each phase as it starts, and each step of the host agent: the phase boundaries of the
  same code are all killed in ``rollback``). Run again: 7.0.4.1 byte for byte.
- ``resume-commit``: the run killed after its observation (``hook:after_commit:started``), then `upgrader resume`
  killed at its lock and its finish. Run again: 7.0.4.2 committed.

One sandbox serves the whole module (each case leaves it on 7.0.4.1, healthy, unlocked, as the case asserts; a case
that does not is followed by a new sandbox). Over SSH (the real sshd) the main points run the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conftest import approve, kill_processes_under, plan_to, product_digest, tree_digest
from fleet import Fleet
from hoststate import OPENED, RUN_RECORDS, WITNESS, HostState, assert_host_untouched, host_state, without_run
from test_kill_matrix import (CONF, OLD, Finished, assert_audit_intact, assert_killed, assert_one_healthy_version, cli,
                              finish, health, new_tree, Prepared, quick_playbook, service_pids, use_playbook)
from upgrader.cli.commands.demo import Sandbox, build_sandbox

__all__ = ["RESUME_CASES", "ROLLBACK_CASES", "SSH_RECOVERY_CASES"]
_ = new_tree  # the module-scoped fixture (the product tree of a clean upgrade), used by name below

NEW = "7.0.4.2"
STEPS = ("before", "started", "finished")
HOOKS = {"after_rollback": [{"command": "true"}], "after_commit": [{"command": "true"}]}


@dataclass(frozen=True)
class RecoveryCase:
    command: str      # "rollback" or "resume"
    scenario: str     # "rollback", "resume", "resume-commit"
    point: str        # where the recovery is killed
    ends_on: str      # "old" or "new"

    def __str__(self) -> str:
        return f"{self.scenario}@{self.point}"

    @property
    def id(self) -> str:
        return f"{self.scenario}-{self.point.replace(':', '-')}"


#: where `upgrader run` is killed before the recovery (None: it runs to its end, committed)
RUN_KILLED_AT = {"rollback": None, "resume": "install:finished", "resume-commit": "hook:after_commit:started"}


def _restore_points() -> list[str]:
    """The steps of a rollback's restore and after: each phase's boundaries and the agent's own steps."""
    points = [f"rollback:{s}" for s in STEPS] + ["agent:rollback:built", "agent:rollback:moved_failed"]
    points += [f"hook:after_rollback:{s}" for s in STEPS] + ["agent:hook:ran"]
    points += [f"start:{s}" for s in STEPS] + ["agent:start:launched"]
    points += [f"observe:{s}" for s in STEPS] + ["agent:finish:cleanup"]
    return points


ROLLBACK_CASES = [RecoveryCase("rollback", "rollback", p, "old") for p in
                  ["agent:lock:held", *(f"verify_backup:{s}" for s in STEPS), *_restore_points()]]
# resume's rollback is the same code as rollback's after its own decision: each of its phases once (as it starts) and
# each of the host agent's steps, to keep CI lean
RESUME_CASES = [RecoveryCase("resume", "resume", p, "old") for p in
                ["agent:lock:held", *(p for p in _restore_points() if not p.endswith((":before", ":finished")))]]
RESUME_CASES += [RecoveryCase("resume", "resume-commit", p, "new") for p in ("agent:lock:held",
                                                                             "agent:finish:cleanup")]
SSH_RECOVERY_CASES = [c for c in ROLLBACK_CASES + RESUME_CASES if str(c) in {
    "rollback@agent:lock:held", "rollback@agent:rollback:moved_failed", "rollback@start:started",
    "rollback@agent:finish:cleanup", "resume@agent:rollback:built", "resume@observe:started",
    "resume-commit@agent:finish:cleanup",
}]


# ---------------------------------------------------------------- helpers


@dataclass
class Host:
    """A sandbox host on 7.0.4.1 and what 'old' means there."""

    box: Sandbox
    before: dict[str, tuple[str, int]]
    conf: bytes
    data: dict[str, tuple[str, int]]

    def whole(self) -> HostState:
        return host_state(self.box.install_dir, answers=self.box.answers)


def as_prepared(h: Host, plan: Path, approval: Path) -> Prepared:
    """test_kill_matrix's Prepared for its one-version checks."""
    return Prepared(h.box, NEW, plan, approval, h.before, h.conf, h.data)


def on_old(box: Sandbox) -> Host:
    return Host(box, product_digest(box.install_dir), (box.install_dir / CONF).read_bytes(),
                tree_digest(box.install_dir / "data"))


def ready(box: Sandbox) -> bool:
    """The sandbox host is on 7.0.4.1, healthy, one service, unlocked: fit for the next case."""
    lock = box.install_dir.parent / f".upgrader-{box.install_dir.name}" / "lock"
    try:
        return box.answers() == OLD and health(box) == 200 and len(service_pids(box.root)) == 1 and not lock.exists()
    except Exception:  # a service that does not answer at all
        return False


def run_once(h: Host, kill_at: str | None) -> tuple[Path, Path, str]:
    """Plan and approve 7.0.4.2 and run it (killed at ``kill_at``, or to its end: committed); its run id."""
    rc, plan = plan_to(h.box, NEW)
    assert rc == 0, f"plan to {NEW} refused"
    approval = approve(h.box, plan)
    runs = h.box.root / "runs"
    known = {p.name for p in runs.iterdir()} if runs.is_dir() else set()
    res = finish(cli(h.box, "run", str(plan), "--approval", str(approval), "--json", kill_at=kill_at))
    if kill_at:
        assert_killed(res, kill_at)
    else:
        assert res.rc == 0, f"the upgrade failed: {res.out[-2000:]} {res.err[-2000:]}"
    (run_id,) = {p.name for p in runs.iterdir() if p.is_dir()} - known
    return plan, approval, run_id


def recover(box: Sandbox, command: str, run_id: str, kill_at: str | None = None) -> Finished:
    return finish(cli(box, command, run_id, "--json", kill_at=kill_at))


def check_recovery_killed(h: Host, case: RecoveryCase, new_tree: dict[str, tuple[str, int]]) -> None:
    plan, approval, run_id = run_once(h, RUN_KILLED_AT[case.scenario])
    p = as_prepared(h, plan, approval)
    if RUN_KILLED_AT[case.scenario] is None:
        assert_one_healthy_version(p, NEW, {**new_tree, CONF: h.before[CONF]}, "after the upgrade")

    assert_killed(recover(h.box, case.command, run_id, kill_at=case.point), f"{case.command} at {case.point}")

    again = recover(h.box, case.command, run_id)
    version, tree = p.expected(case.ends_on, new_tree)
    (host,) = again.json["hosts"]
    if case.command == "rollback":
        assert again.rc == 0, f"the rollback run again exited {again.rc}: {again.out[-3000:]} {again.err[-2000:]}"
        assert host["outcome"] == "restored", host
    else:
        assert again.rc == (0 if case.ends_on == "new" else 1), \
            f"the resume run again exited {again.rc}: {again.out[-3000:]} {again.err[-2000:]}"
        assert host["outcome"] in (("committed",) if case.ends_on == "new" else ("rolled_back", "unchanged")), host
    assert_one_healthy_version(p, version, tree, f"{case.command} killed at {case.point}, then run again")
    assert_audit_intact(h.box)

    settled = h.whole()
    third = recover(h.box, case.command, run_id)
    assert third.rc == again.rc, f"a third {case.command} exited {third.rc}: {third.out[-2000:]} {third.err[-1000:]}"
    # the host records the third's own end (its opening, finish, checkpoint; its steps in the run's record)
    assert_host_untouched(without_run(settled, run_id), without_run(h.whole(), run_id), f"a third {case.command}",
                          appended=[WITNESS, OPENED, RUN_RECORDS])
    assert_one_healthy_version(p, version, tree, f"a third {case.command}")
    assert_audit_intact(h.box)

    if case.ends_on == "new":  # the next case starts on 7.0.4.1 again
        back = recover(h.box, "rollback", run_id)
        assert back.rc == 0, f"rolling the committed run back exited {back.rc}: {back.out[-2000:]}"
        assert_one_healthy_version(p, OLD, h.before, "rolled back for the next case")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shared_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Host]]:
    """One sandbox host for the module (7.0.4.1 running, the quick playbook with hooks); a new one whenever the last
    case did not leave it on 7.0.4.1, healthy and unlocked."""
    root = tmp_path_factory.mktemp("recovery")
    made: list[Sandbox] = []

    def get() -> Host:
        if made and ready(made[-1]):
            return on_old(made[-1])
        if made:
            kill_processes_under(made[-1].root)
        box = build_sandbox(root / f"box{len(made)}")
        made.append(box)
        box.start_service()
        use_playbook(box, quick_playbook(root, f"recovery{len(made)}", HOOKS))
        return on_old(box)

    try:
        yield get
    finally:
        for box in made:
            if (box.install_dir / "bin" / "stop.sh").is_file():
                box.stop_service()
        kill_processes_under(root)


# ---------------------------------------------------------------- the tests


@pytest.mark.slow
@pytest.mark.parametrize("case", ROLLBACK_CASES + RESUME_CASES, ids=lambda c: c.id)
def test_local_recovery_killed_at_its_own_step_then_run_again_ends_on_one_whole_version(shared_box, new_tree, case):
    """`resume`/`rollback` killed at this step of its own; run again: one whole healthy version, the audit log
    verifies, and a third run changes nothing on the host."""
    check_recovery_killed(shared_box(), case, new_tree)


@pytest.mark.slow
@pytest.mark.parametrize("case", SSH_RECOVERY_CASES, ids=lambda c: c.id)
def test_ssh_recovery_killed_at_its_own_step_then_run_again_ends_on_one_whole_version(fleet, new_tree, case):
    """The same over the real sshd: the recovery's session dies with it."""
    f: Fleet = fleet(1)
    use_playbook(f.box, quick_playbook(f.playbook.parent, "recovery-ssh", HOOKS))
    check_recovery_killed(on_old(f.box), case, new_tree)
