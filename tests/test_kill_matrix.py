"""The controller is killed (SIGKILL) at every phase boundary and inside every host action that writes
files; afterwards `upgrader resume` leaves the host on one whole version, healthy, and a second resume
changes nothing; separately, `upgrader rollback` brings it back to the old version byte for byte.

How a kill is placed: `upgrader run` runs as a child process with the test suite's fault plugin set to kill
at <point> (conftest's fault_env; the product has no such hook).
``<phase>:before|started|finished`` kills the controller at that boundary the first time a phase of
that name passes it; ``agent:<op>:<step>`` kills the host action at that step, then the controller.

Scenarios (the playbook is a copy of the sample one with a 0.5 s observation window):

- ``healthy``: 7.0.4.1 -> 7.0.4.2 with an ``after_commit`` hook. Every boundary of preflight, backup,
  stop, install, start, observe and hook:after_commit, and every step of lock, prepare, install, start
  and finish.
- ``rollback``: 7.0.4.1 -> 7.0.4.5 (installs, then fails its health probes) with an
  ``after_rollback`` hook. The rollback phase's boundaries and steps, hook:after_rollback's
  boundaries, and ``observe:finished``: the upgrade's own observe fails (it never reaches
  "finished"), so that point is only reached by the rollback's observe of the old version.
- ``rollback-start``: 7.0.4.1 -> 7.0.4.5 with an ``after_install`` hook that fails, so the rollback
  comes before any start: every boundary of start and observe, and ``agent:start:launched``, are then
  reached only by the rollback's start and observe of the old version.
- ``rollback-slow-start``: as ``rollback-start``, with a start command that returns at once and
  launches the service 3 s later (as a Java server that writes its pid file only once it listens).
  Killed right after that launch, neither `resume` nor `rollback` may start a second server while the
  first is still coming up.

- ``hooks``: 7.0.4.1 -> 7.0.4.2 with a hook at before_stop, after_stop, after_install and after_start: each
  hook's boundaries, and the host agent killed right after each hook's command ran.

Over SSH (the real sshd of tests/sshd.py) a subset of these points runs the same checks, and the receipt of the
package (``receive_commit``, which a local host never needs) is killed there.

The coverage check reads every kill point from the product's own source (the engine's phases, the hook phases,
the host agent's ``test_kill`` steps) and requires each to be a case here or in test_kill_recovery (where
`resume` and `rollback` themselves are killed).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, fault_env, kill_processes_under, plan_to, product_digest, tree_digest
from fleet import Fleet
from upgrader.cli.commands.demo import Sandbox, build_sandbox
from upgrader.core.playbook import PHASE_HOOKS, shipped_playbooks_dir
from upgrader.sample import http_get

OLD = "7.0.4.1"
CONF = "conf/server.conf"
PRODUCT_SOURCE = Path(__file__).resolve().parent.parent / "upgrader"


# ---------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Case:
    scenario: str
    point: str
    ends_on: str  # "old" or "new": the version `resume` must leave

    def __str__(self) -> str:
        return f"{self.scenario}@{self.point}"

    @property
    def id(self) -> str:
        """A test id that `pytest -k` accepts: healthy-agent-install-swapped."""
        return f"{self.scenario}-{self.point.replace(':', '-')}"


SCENARIOS: dict[str, dict[str, Any]] = {
    "healthy": {"target": "7.0.4.2", "hooks": {"after_commit": [{"command": "true"}]}},
    "rollback": {"target": "7.0.4.5", "hooks": {"after_rollback": [{"command": "true"}]}},
    "rollback-start": {"target": "7.0.4.5", "hooks": {"after_install": [{"command": "exit 3"}]}},
    "rollback-slow-start": {"target": "7.0.4.5", "hooks": {"after_install": [{"command": "exit 3"}]},
                            "start": "(sleep 3; exec bin/start.sh) >/dev/null 2>&1 </dev/null &"},
    # one hook at each phase before the new version is observed (the command names its phase for the fault plugin)
    "hooks": {"target": "7.0.4.2", "hooks": {h: [{"command": f"true {h}"}] for h in
                                             ("before_stop", "after_stop", "after_install", "after_start")}},
}
HOOKS_BEFORE_COMMIT = ("before_stop", "after_stop", "after_install", "after_start")
STEPS = ("before", "started", "finished")


def _healthy_cases() -> list[Case]:
    cases = []
    for phase in ("preflight", "backup", "stop", "install", "start", "observe"):
        cases += [Case("healthy", f"{phase}:{step}", "old") for step in STEPS]
    # the new version was observed healthy before these points: resume keeps it
    cases += [Case("healthy", f"hook:after_commit:{step}", "new") for step in STEPS]
    for step in ("prepare:copied", "prepare:extracted", "prepare:snapshot", "install:moved_old",
                 "install:swapped", "install:preserve", "start:launched"):
        cases.append(Case("healthy", f"agent:{step}", "old"))
    cases.append(Case("healthy", "agent:finish:cleanup", "new"))
    cases.append(Case("healthy", "agent:lock:held", "old"))
    return cases


def _hook_cases() -> list[Case]:
    """Each hook of each phase before the observation: the controller at its boundaries, the host agent right after
    the hook's command ran (``agent:hook:ran@<hook>``: only that hook's request carries the kill)."""
    cases = []
    for hook in HOOKS_BEFORE_COMMIT:
        cases += [Case("hooks", f"hook:{hook}:{step}", "old") for step in STEPS]
        cases.append(Case("hooks", f"agent:hook:ran@{hook}", "old"))
    return cases


def _rollback_cases() -> list[Case]:
    cases = [Case("rollback", f"rollback:{step}", "old") for step in STEPS]
    cases += [Case("rollback", f"hook:after_rollback:{step}", "old") for step in STEPS]
    cases += [Case("rollback", "agent:rollback:built", "old"), Case("rollback", "agent:rollback:moved_failed", "old"),
              Case("rollback", "observe:finished", "old")]
    cases += [Case("rollback-start", f"{phase}:{step}", "old") for phase in ("start", "observe") for step in STEPS]
    cases.append(Case("rollback-start", "agent:start:launched", "old"))
    cases += [Case("rollback-slow-start", point, "old") for point in ("agent:start:launched", "observe:started")]
    return cases


LOCAL_CASES = _healthy_cases() + _rollback_cases() + _hook_cases()
SSH_CASES = [c for c in LOCAL_CASES if str(c) in {
    "healthy@backup:started", "healthy@stop:finished", "healthy@agent:prepare:copied",
    "healthy@agent:prepare:extracted", "healthy@agent:install:swapped", "healthy@agent:start:launched",
    "healthy@observe:started", "healthy@hook:after_commit:finished", "rollback@agent:rollback:moved_failed",
    "healthy@agent:lock:held", "hooks@agent:hook:ran@after_stop",
}]
# the package reaches a host over SSH only (a local host reads it in place): its receipt is killed there
SSH_CASES += [Case("healthy", "agent:receive_commit:checked", "old"),
              Case("healthy", "agent:receive_commit:committed", "old")]


# ---------------------------------------------------------------- helpers


def service_pids(root: Path) -> list[int]:
    """Pids of sample-middleware servers whose working directory lies under root (renamed or deleted too)."""
    base = str(root.resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if any(a.endswith(b"lib/server.py") for a in argv) and (cwd == base or cwd.startswith(base + "/")):
            pids.append(int(entry.name))
    return pids


def health(box: Sandbox) -> int | None:
    try:
        return http_get(box.port, "/health", timeout=2)[0]
    except OSError:
        return None


def quick_playbook(root: Path, name: str, hooks: dict[str, Any], start: str | None = None) -> Path:
    """A copy of the shipped sample playbook: 0.5 s observation window, these hooks (and start command)."""
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    spec["name"] = name
    spec["observe"]["window"] = "0.5s"
    spec["hooks"] = hooks
    if start:  # as a root-owned script: a root command's own grammar has no subshell or background job
        script = root / f"{name}-start.sh"
        script.write_text(f'cd "$UPGRADER_INSTALL_DIR" || exit 1\n{start}\n', encoding="utf-8")
        spec["start"]["command"] = f"/bin/sh {script}"
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def use_playbook(box: Sandbox, playbook: Path) -> None:
    """The playbook becomes one of the operator's (HOME/playbooks/NAME.yaml); the inventory names it by name."""
    mine = box.root / "playbooks" / playbook.name
    mine.parent.mkdir(exist_ok=True)
    if mine != playbook:
        mine.write_bytes(playbook.read_bytes())
    data = yaml.safe_load(box.inventory.read_text(encoding="utf-8"))
    for host in data["hosts"].values():
        host["playbook"] = playbook.stem
    box.inventory.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def cli(box: Sandbox, *argv: str, kill_at: str | None = None) -> subprocess.Popen[str]:
    """The real CLI as a child process (cwd inside the sandbox, so anything it leaves behind is found)."""
    env = {k: v for k, v in os.environ.items() if k != "UPGRADER_FAULT_KILL_AT"}
    env.update(fault_env(kill_at=kill_at))
    return subprocess.Popen([sys.executable, "-m", "upgrader", "--home", str(box.root), *argv], cwd=box.root,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@dataclass
class Finished:
    rc: int
    out: str
    err: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.out)


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> Finished:
    out, err = proc.communicate(timeout=timeout)
    return Finished(proc.returncode, out, err)


@dataclass
class Prepared:
    """A sandbox about to run an approved plan, with everything 'before' recorded."""

    box: Sandbox
    target: str
    plan: Path
    approval: Path
    before: dict[str, tuple[str, int]]
    conf: bytes
    data: dict[str, tuple[str, int]]

    def run_id(self) -> str:
        (run,) = [p.name for p in (self.box.root / "runs").iterdir() if p.is_dir()]
        return run

    def expected(self, ends_on: str, new_tree: dict[str, tuple[str, int]]) -> tuple[str, dict[str, tuple[str, int]]]:
        """The version and product tree the host must have: the old one, or the new one with this host's config."""
        if ends_on == "old":
            return OLD, self.before
        return self.target, {**new_tree, CONF: self.before[CONF]}


def prepare(box: Sandbox, scenario: str, playbook_dir: Path) -> Prepared:
    spec = SCENARIOS[scenario]
    use_playbook(box, quick_playbook(playbook_dir, f"kill-{scenario}", spec["hooks"], spec.get("start")))
    rc, plan = plan_to(box, spec["target"])
    assert rc == 0, f"plan to {spec['target']} refused"
    approval = approve(box, plan)
    return Prepared(box, spec["target"], plan, approval, product_digest(box.install_dir),
                    (box.install_dir / CONF).read_bytes(), tree_digest(box.install_dir / "data"))


def launch_killed_run(p: Prepared, point: str) -> subprocess.Popen[str]:
    return cli(p.box, "run", str(p.plan), "--approval", str(p.approval), "--json", kill_at=point)


def assert_killed(run: Finished, point: str) -> None:
    assert run.rc == -signal.SIGKILL, f"the run was not killed at {point} (exit {run.rc}): {run.err[-2000:]}"


def assert_one_healthy_version(p: Prepared, version: str, tree: dict[str, tuple[str, int]], what: str) -> None:
    box = p.box
    assert product_digest(box.install_dir) == tree, f"{what}: the product tree is not the whole {version} tree"
    assert (box.install_dir / CONF).read_bytes() == p.conf, f"{what}: {CONF} changed"
    assert tree_digest(box.install_dir / "data") == p.data, f"{what}: data/ changed"
    assert box.answers() == version, f"{what}: the service answers {box.answers()!r}, not {version}"
    assert health(box) == 200, f"{what}: the service is not healthy"
    pids = service_pids(box.root)
    assert len(pids) == 1, f"{what}: {len(pids)} service processes run: {pids}"


def assert_audit_intact(box: Sandbox) -> None:
    res = finish(cli(box, "audit", "verify", "--json"))
    assert res.rc == 0, f"audit verify exited {res.rc}: {res.out[-1500:]} {res.err[-1500:]}"


def check_kill(first: Prepared, second: Prepared, case: Case, new_tree: dict[str, tuple[str, int]]) -> None:
    """Kill both sandboxes' runs at the case's point; resume the first (twice), roll the second back."""
    runs = [launch_killed_run(p, case.point) for p in (first, second)]
    for run in runs:
        assert_killed(finish(run), case.point)
    run_a, run_b = first.run_id(), second.run_id()
    resume, rollback = cli(first.box, "resume", run_a, "--json"), cli(second.box, "rollback", run_b, "--json")
    resumed, rolled = finish(resume), finish(rollback)

    version, tree = first.expected(case.ends_on, new_tree)
    assert resumed.rc == (0 if case.ends_on == "new" else 1), \
        f"resume exited {resumed.rc}: {resumed.out[-3000:]} {resumed.err[-2000:]}"
    (host,) = resumed.json["hosts"]
    assert host["outcome"] in (("committed",) if case.ends_on == "new" else ("rolled_back", "unchanged")), host
    assert_one_healthy_version(first, version, tree, "after resume")
    assert_audit_intact(first.box)
    pid = service_pids(first.box.root)

    again = finish(cli(first.box, "resume", run_a, "--json"))
    assert again.rc == resumed.rc, f"the second resume exited {again.rc}, the first {resumed.rc}: {again.out[-2000:]}"
    assert_one_healthy_version(first, version, tree, "after a second resume")
    assert service_pids(first.box.root) == pid, "the second resume restarted the service"
    assert_audit_intact(first.box)

    assert rolled.rc == 0, f"rollback exited {rolled.rc}: {rolled.out[-3000:]} {rolled.err[-2000:]}"
    (host,) = rolled.json["hosts"]
    assert host["outcome"] == "restored", host
    assert_one_healthy_version(second, OLD, second.before, "after rollback")
    assert_audit_intact(second.box)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def new_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, int]]]:
    """The product tree of a clean, uninterrupted upgrade 7.0.4.1 -> 7.0.4.2 (the reference for 'new')."""
    root = tmp_path_factory.mktemp("reference")
    box = build_sandbox(root / "box")
    try:
        box.start_service()
        p = prepare(box, "healthy", root)
        run = finish(cli(box, "run", str(p.plan), "--approval", str(p.approval), "--json"))
        assert run.rc == 0, f"the reference upgrade failed: {run.out[-2000:]}"
        assert box.answers() == "7.0.4.2"
        yield product_digest(box.install_dir)
    finally:
        box.stop_service()
        kill_processes_under(root)


@pytest.fixture
def two_sandboxes(tmp_path: Path) -> Iterator[Callable[[str], tuple[Prepared, Prepared]]]:
    """Two independent local sandboxes (7.0.4.1 running), prepared for one scenario."""
    boxes: list[Sandbox] = []

    def make(scenario: str) -> tuple[Prepared, Prepared]:
        prepared = []
        for name in ("resumed", "rolled-back"):
            box = build_sandbox(tmp_path / name)
            boxes.append(box)
            box.start_service()
            prepared.append(prepare(box, scenario, tmp_path / name))
        return prepared[0], prepared[1]

    try:
        yield make
    finally:
        for box in boxes:
            if (box.install_dir / "bin" / "stop.sh").is_file():  # a failed test may leave no install dir
                box.stop_service()
        kill_processes_under(tmp_path)


# ---------------------------------------------------------------- the tests


@pytest.mark.slow
@pytest.mark.parametrize("case", LOCAL_CASES, ids=lambda c: c.id)
def test_local_host_killed_at_point_resumes_to_one_whole_version_and_rolls_back_byte_identical(
        two_sandboxes, new_tree, case):
    """A local run killed at this point: resume leaves one whole healthy version (twice), rollback the old one."""
    first, second = two_sandboxes(case.scenario)
    check_kill(first, second, case, new_tree)


@pytest.mark.slow
@pytest.mark.parametrize("case", SSH_CASES, ids=lambda c: c.id)
def test_ssh_host_killed_at_point_resumes_to_one_whole_version_and_rolls_back_byte_identical(
        fleet, new_tree, case):
    """A run over the real sshd killed at this point: resume leaves one whole healthy version, rollback the old one."""
    prepared = []
    for _ in range(2):
        f: Fleet = fleet(1)
        prepared.append(prepare(f.box, case.scenario, f.playbook.parent))
    check_kill(prepared[0], prepared[1], case, new_tree)


def product_kill_points() -> set[str]:
    """Every place the product can be killed, read from its own source (not from what tests ran): each phase the
    engine runs (``self.phase("NAME", ...)``) and each hook phase (PHASE_HOOKS) at each boundary, and each step
    of the host agent (``test_kill(req, "OP:STEP")``)."""
    engine = (PRODUCT_SOURCE / "core" / "engine.py").read_text(encoding="utf-8")
    phases = set(re.findall(r'self\.phase\("([a-z_]+)"', engine)) | {f"hook:{h}" for h in PHASE_HOOKS}
    assert "hook:{which}" in engine and {"preflight", "rollback", "verify_backup"} <= phases, \
        "the engine's phases are no longer found where this reads them: update product_kill_points"
    points = {f"{p}:{s}" for p in phases for s in STEPS}
    for source in sorted((PRODUCT_SOURCE / "hostagent").glob("*.py")):
        points |= {f"agent:{step}" for step in
                   re.findall(r'test_kill\(req, "([a-z_]+:[a-z_]+)"\)', source.read_text(encoding="utf-8"))}
    return points


def test_kill_matrix_covers_every_kill_point_of_the_product():
    """Every kill point the product has (read from its source) is a case of a kill matrix: `upgrader run` killed
    (here, locally or over SSH), or `resume`/`rollback` killed (test_kill_recovery); the counts are printed."""
    from test_kill_recovery import RESUME_CASES, ROLLBACK_CASES, SSH_RECOVERY_CASES

    product = product_kill_points()
    assert {"agent:lock:held", "agent:receive_commit:committed", "agent:hook:ran", "hook:before_stop:started",
            "verify_backup:finished"} <= product
    run_cases = {c.point.split("@")[0] for c in LOCAL_CASES + SSH_CASES}
    recovery_cases = {c.point.split("@")[0] for c in ROLLBACK_CASES + RESUME_CASES + SSH_RECOVERY_CASES}
    missing = sorted(product - run_cases - recovery_cases)
    assert not missing, f"kill points of the product no matrix kills at: {missing}"
    unknown = sorted((run_cases | recovery_cases) - product)
    assert not unknown, f"cases at points the product does not have: {unknown}"
    hooks = {c.point.split(":")[1] for c in LOCAL_CASES if c.point.startswith("hook:")}
    assert hooks >= set(PHASE_HOOKS) - {"after_rollback"} and "hook:after_rollback:started" in recovery_cases
    agent_hook_ran = {c.point.split("@")[1] for c in LOCAL_CASES if c.point.startswith("agent:hook:ran@")}
    assert agent_hook_ran == set(HOOKS_BEFORE_COMMIT)
    print(f"\nkill points of the product: {len(product)}; `run` killed at {len({str(c) for c in LOCAL_CASES})} "
          f"locally and {len(SSH_CASES)} over SSH; `resume`/`rollback` killed at "
          f"{len(ROLLBACK_CASES + RESUME_CASES)} locally and {len(SSH_RECOVERY_CASES)} over SSH")
    assert len(LOCAL_CASES) >= 20 and len(SSH_CASES) >= 6
