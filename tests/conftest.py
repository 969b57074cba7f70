"""Shared fixtures: an isolated HOME, the sample catalog (built once), and sandboxes with the real
sample middleware installed and running on a free loopback port.

Another "now", a kill or a pause: the product has no hook for any of them (no variable it reads).
- Another now, in-process: ``now_at(monkeypatch, "2026-11-27T10:00:00+08:00")``; every later call of
  ``upgrader``/``plan_to``/``approve``/``run_plan`` in that test hands the CLI a clock that starts at
  that time and ticks (``cli.main(argv, clock=...)``). Replaces ``monkeypatch.setenv("UPGRADER_TEST_NOW", t)``.
- Another now, in a child process: ``faketime_env(t)`` (libfaketime, for commands that do not wait on
  threads: libfaketime 0.9.10 stalls Python's timed lock waits), merged into the child's env.
- A kill or a pause in a child process: ``fault_env(kill_at=...)`` / ``fault_env(pause_at=...)``, merged
  into the child's env. Same point names as the old ``UPGRADER_TEST_KILL_AT`` / ``UPGRADER_TEST_PAUSE_AT``;
  tests/plugin/sitecustomize.py registers the hooks (see tests/plugin/upgrader_test_faults.py).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import pwd
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from fleet import Fleet, build_fleet
from sshd import SSHServer, start_sshd
from upgrader.cli import main
from upgrader.core.clock import Clock
from upgrader.cli.commands.demo import Sandbox, build_sandbox

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
#: the test suite's fault plugin (sitecustomize.py): put on every test's PYTHONPATH, never shipped
PLUGIN = Path(__file__).resolve().parent / "plugin"


# --- each file's seconds, for tests/shards.py (tests/run.sh splits the whole suite by them) -------------------
_file_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add each phase's time (set-up, call, teardown) to its test file."""
    name = report.nodeid.split("::", 1)[0]
    _file_seconds[name] = _file_seconds.get(name, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Merge this run's files into test-artifacts/durations.json (shards running side by side each add theirs;
    copy it over tests/durations.json to refresh the split)."""
    if not _file_seconds:
        return
    ARTIFACTS.mkdir(exist_ok=True)
    record = ARTIFACTS / "durations.json"
    with open(ARTIFACTS / ".durations.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            merged = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            merged = {}
        merged.update({k: round(v, 1) for k, v in _file_seconds.items()})
        record.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n", encoding="utf-8")


LIBFAKETIME = next(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"), Path("/usr/lib/faketime/libfaketime.so.1"))
_CLOCK: Clock | None = None  # set by now_at for this test's in-process CLI calls

# A suite started in the background by a shell without job control (`bash tests/run.sh &`, nohup) inherits SIGINT
# ignored, and every program it spawns would inherit that too: the tests that press Ctrl-C in a terminal would then
# press it in vain. Ctrl-C reaches the programs under test as it would at a person's terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)



class TickingClock:
    """A clock that starts at ``at`` and then runs with the real one (waits and timeouts stay real)."""

    def __init__(self, at: datetime.datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("TickingClock needs an aware datetime")
        self._at, self._start = at, time.monotonic()

    def now(self) -> datetime.datetime:
        return (self._at + datetime.timedelta(seconds=time.monotonic() - self._start)).astimezone(datetime.timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


def now_at(monkeypatch: pytest.MonkeyPatch, when: str) -> TickingClock:
    """From here on in this test, the in-process CLI (``upgrader`` and the helpers that call it) runs with its clock
    at ``when`` (ISO 8601 with its UTC offset), ticking from there."""
    clock = TickingClock(datetime.datetime.fromisoformat(when))
    monkeypatch.setattr(sys.modules[__name__], "_CLOCK", clock)
    return clock


def weeks_ahead(first: str) -> datetime.timedelta:
    """The whole weeks that bring ``first`` (ISO 8601 with its UTC offset) to the real now or after it: a test whose
    in-process clock (now_at) is set to a weekday and hour shifts all its times by this, so the approvals it makes
    are still valid by the real clock of the hosts' agents, which refuse a lock past an approval's expiry by their
    own clock (hostagent/witness.py approval_expiries)."""
    at = datetime.datetime.fromisoformat(first)
    behind = (datetime.datetime.now(datetime.timezone.utc) - at).total_seconds()
    weeks = 0 if behind < 0 else int(behind // (7 * 86400)) + 1
    return datetime.timedelta(weeks=weeks)


def shifted_iso(when: str, by: datetime.timedelta) -> str:
    return (datetime.datetime.fromisoformat(when) + by).isoformat()


def fault_env(*, kill_at: str | None = None, pause_at: str | None = None, exchange_at: str | None = None,
              exchange: tuple[Path, str, str, int] | None = None) -> dict[str, str]:
    """Environment entries for a child process that the test suite's fault plugin kills at ``kill_at`` or holds at
    ``pause_at``, or where account ``exchange[3]`` swaps names ``exchange[1]`` and ``exchange[2]`` of directory
    ``exchange[0]`` at ``exchange_at`` (the point names are listed in tests/plugin/upgrader_test_faults.py)."""
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(PLUGIN), os.environ.get("PYTHONPATH", "")) if p)}
    if kill_at:
        env["UPGRADER_FAULT_KILL_AT"] = kill_at
    if pause_at:
        env["UPGRADER_FAULT_PAUSE_AT"] = pause_at
    if exchange_at and exchange:
        env["UPGRADER_FAULT_EXCHANGE_AT"] = exchange_at
        env["UPGRADER_FAULT_EXCHANGE"] = "\n".join(str(x) for x in exchange)
    return env


def faketime_env(when: str) -> dict[str, str]:
    """Environment entries that run a child process under libfaketime with its wall clock at ``when`` (ISO 8601 with
    its UTC offset), ticking from there; only for commands that do not wait on locks with a timeout."""
    assert LIBFAKETIME.is_file(), f"{LIBFAKETIME} is missing: install the Debian package faketime (tests/run.sh does)"
    offset = datetime.datetime.fromisoformat(when).timestamp() - time.time()
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"{offset:+.0f}", "FAKETIME_NO_CACHE": "1"}


@pytest.fixture(autouse=True)
def fault_plugin_on_pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    """Child processes of every test can load the fault plugin; it does nothing unless fault_env's variables are set."""
    monkeypatch.setenv("PYTHONPATH", fault_env()["PYTHONPATH"])


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HOME (so no ~/.ssh/config or user state leaks in) and no UPGRADER_HOME."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("UPGRADER_HOME", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return home


@pytest.fixture(autouse=True)
def machine_ledger_forgotten() -> Iterator[None]:
    """The host agent keeps this machine's newest catalog serials outside any test's directories (root's in
    /etc/upgrader/ledger, the suite's own tmpfs; another account's in its home): a record a test made there is removed
    after it, so that a test upgraded from catalog serial 2 does not refuse the next test's serial 1."""
    import shutil

    from upgrader.hostagent.ledger import MACHINE_LEDGER_ROOT

    if os.geteuid() == 0 and os.path.ismount("/etc/upgrader"):
        # as root in tests/run.sh's namespace /etc/upgrader is the suite's own tmpfs: the record goes before and after
        # every test, also one a module's fixture made (its upgrades ran before this fixture could look)
        shutil.rmtree(MACHINE_LEDGER_ROOT, ignore_errors=True)
        yield
        shutil.rmtree(MACHINE_LEDGER_ROOT, ignore_errors=True)
        return
    places = [Path(MACHINE_LEDGER_ROOT)] if os.geteuid() == 0 else \
        [Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".upgrader-agent"]
    there = {p for p in places if p.exists()}
    yield
    for p in places:
        if p not in there and p.exists():
            shutil.rmtree(p, ignore_errors=True)


def kill_processes_under(root: Path) -> None:
    """SIGKILL every process whose working directory lies under root (services a test left behind)."""
    root_s = str(root.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == root_s or cwd.startswith(root_s + "/"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """Sample middleware 7.0.4.1 installed at <tmp>/box/hosts/app-01 and running; an inventory and catalog beside."""
    box = build_sandbox(tmp_path / "box")
    try:
        box.start_service()
        yield box
    finally:
        box.stop_service()
        kill_processes_under(tmp_path)


def contract_in_policy(box: Sandbox, hosts: str = "*", until: str = "2099-12-31") -> None:
    """The operator's policy states the maintenance contract of ``hosts`` (the date an install the guide finds
    without an inventory is judged by)."""
    box.policy.write_text(box.policy.read_text(encoding="utf-8") + f"rules:\n  contracts: {{'{hosts}': {until}}}\n",
                          encoding="utf-8")


@pytest.fixture
def guide_contract(request: pytest.FixtureRequest) -> None:
    """For the guide's tests: the sandbox policy gives every host a contract (the guide's host has no inventory)."""
    if "sandbox" in request.fixturenames:
        contract_in_policy(request.getfixturevalue("sandbox"))


def upgrader(box: Sandbox, *argv: str) -> int:
    """Run the real CLI in-process against the sandbox's home (with the clock of ``now_at``, if the test set one).
    A ``plan`` (not ``plan show``/``digest``) without ``--key`` is signed by the sandbox's requester (the policy
    requires signed plans); a test that wants an unsigned plan calls ``main`` itself."""
    return main(["--home", str(box.root), *signed_plan(box, argv)], clock=_CLOCK)


def inspect_json(box: Sandbox, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    """``upgrader inspect --json`` of the sandbox's install (``extra``: more options): exit code and stdout, no
    traceback on either stream."""
    capsys.readouterr()
    rc = upgrader(box, "inspect", "--install-dir", str(box.install_dir), "--json", *extra)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return rc, out


def signed_plan(box: Sandbox, argv: tuple[str, ...] | list[str]) -> list[str]:
    """``argv`` of a ``plan`` command with the sandbox requester's ``--key`` added when it has none."""
    argv = list(argv)
    if argv[:1] == ["plan"] and argv[1:2] not in (["show"], ["digest"]) and "--key" not in argv:
        argv += ["--key", str(box.requester_key)]
    return argv


def plan_to(box: Sandbox, version: str, *extra: str) -> tuple[int, Path]:
    out = box.plans / f"to-{version}-{len(list(box.plans.iterdir()))}.json"
    rc = upgrader(box, "plan", "--inventory", str(box.inventory), "--to", version, "--catalog", str(box.catalog),
                  "-o", str(out), *extra)  # signed by the sandbox operator unless extra gives --key
    return rc, out


def approve(box: Sandbox, plan: Path, *extra: str) -> Path:
    """The sandbox engineer's signed approval of ``plan`` (real key, real SSHSIG)."""
    out = box.approvals / f"{plan.stem}-{len(list(box.approvals.iterdir()))}.approval"
    rc = upgrader(box, "approve", str(plan), "--key", str(box.engineer_key), "-o", str(out), *extra)
    assert rc == 0, f"approve exited {rc}"
    return out


def run_plan(box: Sandbox, plan: Path, *extra: str) -> int:
    """Approve ``plan`` as the sandbox engineer, then run it; return the run's exit code."""
    return upgrader(box, "run", str(plan), "--approval", str(approve(box, plan)), *extra)


@dataclass(frozen=True)
class Run:
    """What a command that runs hosts (run, resume, rollback) exited with, and the run directory it used."""

    rc: int
    dir: Path | None

    @property
    def id(self) -> str:
        assert self.dir is not None, "the run left no run directory"
        return self.dir.name

    @property
    def result(self) -> dict[str, Any]:
        assert self.dir is not None, "the run left no run directory"
        return json.loads((self.dir / "result.json").read_text())

    @property
    def outcomes(self) -> dict[str, str]:
        return {h["host"]: h["outcome"] for h in self.result["hosts"]}

    def host(self, name: str | None = None) -> dict[str, Any]:
        """The result of host ``name``, or of the run's only host."""
        (h,) = [h for h in self.result["hosts"] if name in (None, h["host"])]
        return h


class CancelAt:
    """An engine observer that cancels the run when a phase has finished (the operator's Ctrl-C, on cue)."""

    def __init__(self, phase: str, cancel: threading.Event) -> None:
        self.phase, self.cancel = phase, cancel

    def on_event(self, event: dict[str, Any]) -> None:
        if event["event"] == "phase_finished" and event["phase"] == self.phase:
            self.cancel.set()


def run_with_cancel(box: Sandbox, at: str) -> dict[str, Any]:
    """Plan and approve 7.0.4.2, then run it with ``upgrader.api.run`` and a cancel token that an observer sets
    once phase ``at`` has finished; the run's result (as result.json holds it)."""
    from upgrader import api

    rc, plan_file = plan_to(box, "7.0.4.2")
    assert rc == 0, f"plan 7.0.4.2 exited {rc}"
    cancel = api.CancelToken()
    result = api.run(api.Context(home=box.root), plan_file, approvals=[approve(box, plan_file)],
                     observers=[CancelAt(at, cancel)], cancel=cancel)
    return result.data


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """Every file, link and directory under root: sha256 (or link target) and mode. For byte-for-byte checks."""
    out: dict[str, tuple[str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link:" + os.readlink(p), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(st.st_mode))
    return out


def product_digest(install_dir: Path) -> dict[str, tuple[str, int]]:
    """tree_digest without the paths the running service changes (logs/, run/)."""
    return {k: v for k, v in tree_digest(install_dir).items()
            if not (k in ("logs", "run") or k.startswith(("logs/", "run/")))}


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A real OpenSSH server on 127.0.0.1 for the whole session; failing to start it fails the tests."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fleet(tmp_path: Path, sshd: SSHServer) -> Iterator[Callable[[int], Fleet]]:
    """fleet(n): a sandbox with n running installs app-01..app-0n, each reached over the real sshd, group prod."""
    built: list[Fleet] = []

    def make(n: int) -> Fleet:
        f = build_fleet(tmp_path / f"fleet{len(built)}", sshd, n)
        built.append(f)
        return f

    try:
        yield make
    finally:
        for f in built:
            f.stop_all()
        kill_processes_under(tmp_path)
