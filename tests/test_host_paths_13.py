"""Issue 14 (round 14, attack14 finding 1 and attack12 F1): playbook commands run as the install's owner.

The host agent often runs as root (a root SSH login, or ``local`` as root) while the install belongs to the service
account. The playbook's stop, start, hook, command probe and version command are that account's files
(``bin/stop.sh``) acting on that account's files (``run/server.pid``): run as root, one line the account adds runs
as root, and the vendor's own ``kill -TERM "$(cat run/server.pid)"`` kills whatever process the account names.
When the agent is root and root does not own the install dir, each command runs as the install dir's owner.

Every test plays the service account (daemon) with the shipped CLI, locally and over the real sshd (user root).
The sandbox lies in a directory daemon may pass (pytest's own temporary directories are root's alone) and its
service runs as daemon, started with the system's python3 (the test's virtual environment lies under root's home).
"""

from __future__ import annotations

import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from conftest import approve, kill_processes_under, plan_to
from sshd import SSHServer
from test_host_paths import run_cli
from upgrader.cli.commands.demo import Sandbox, build_sandbox

NEW = "7.0.4.2"
SYSTEM_PYTHON = "/usr/bin/python3"
SHIPPED = Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml"


def daemon_uid() -> int:
    return pwd.getpwnam("daemon").pw_uid


NO_ENTRY = 4242  # a numeric owner with no account entry (a container's or a deleted account's)


def as_daemon(*argv: str, uid: str = "daemon", gid: str = "daemon") -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


def owned_box(monkeypatch: pytest.MonkeyPatch, owner: str = "daemon:daemon",
              service: tuple[str, str] = ("daemon", "daemon"), owned: tuple[str, ...] = ("",)) -> Iterator[Sandbox]:
    """The sample install 7.0.4.1, ``chown -R owner`` (of the whole install, or of the paths ``owned`` in it, made if
    missing), its service started by ``service`` (uid, gid)."""
    top = Path(tempfile.mkdtemp(prefix="upgrader-hp13-"))
    top.chmod(0o755)
    monkeypatch.setenv("PYTHON", SYSTEM_PYTHON)  # what the local agent's start.sh runs the service with
    box = build_sandbox(top / "box")
    box.root.chmod(0o755)
    for rel in filter(None, owned):
        (box.install_dir / rel).mkdir(exist_ok=True)
    subprocess.run(["chown", "-R", owner, *(str(box.install_dir / rel) for rel in owned)], check=True)
    try:
        subprocess.run(as_daemon(str(box.install_dir / "bin" / "start.sh"), uid=service[0], gid=service[1]),
                       check=True, env={**box.service_env(), "PYTHON": SYSTEM_PYTHON}, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        box.wait_version(None, timeout=15)
        yield box
    finally:
        kill_processes_under(top)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def daemon_box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The sample install 7.0.4.1, ``chown -R daemon:daemon``, its service started by daemon."""
    yield from owned_box(monkeypatch)


@pytest.fixture
def no_entry_box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The sample install owned by uid 4242 (group 4242), which has no account entry; its service runs as 4242."""
    yield from owned_box(monkeypatch, f"{NO_ENTRY}:{NO_ENTRY}", (str(NO_ENTRY), str(NO_ENTRY)))


def over(box: Sandbox, transport: str, request: pytest.FixtureRequest) -> None:
    """The sandbox's inventory reaches its host locally, or over the real sshd as root."""
    if transport == "local":
        return
    sshd: SSHServer = request.getfixturevalue("sshd")
    doc = yaml.safe_load(box.inventory.read_text(encoding="utf-8"))
    doc["hosts"]["app-01"].update({k: v for k, v in sshd.host_entry().items() if k != "address"},
                                  address="127.0.0.1")
    box.inventory.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def root_only(box: Sandbox) -> Path:
    d = box.root.parent / "rootonly"
    d.mkdir(mode=0o700)
    return d


def daemon_edits(path: Path, line: str, who: str = "daemon") -> None:
    """daemon (the service account; or the account ``who``, name or uid) adds ``line`` before the last line
    (``exit 0``) of its own script."""
    script = "import sys; p = sys.argv[1]; t = open(p).read().rsplit('exit 0', 1); " \
             "open(p, 'w').write(t[0] + sys.argv[2] + '\\nexit 0' + t[1])"
    subprocess.run(as_daemon(SYSTEM_PYTHON, "-c", script, str(path), line, uid=who, gid=who), check=True)


def approved_plan(box: Sandbox) -> tuple[Path, Path]:
    rc, plan = plan_to(box, NEW)
    assert rc == 0, rc
    return plan, approve(box, plan)


@pytest.mark.parametrize("transport", ["local", "ssh"])
def test_1_the_service_accounts_line_in_its_stop_script_runs_as_that_account(
        daemon_box: Sandbox, transport: str, request: pytest.FixtureRequest,
        capsys: pytest.CaptureFixture[str]) -> None:
    """daemon adds ``id -u`` lines to its bin/stop.sh: one into a root-only directory, one into its own run/. The
    approved run commits (exit 0); the line ran as daemon: nothing in the root-only directory, daemon's uid in its
    file, and the run names the account that stopped and started the service."""
    box = daemon_box
    over(box, transport, request)
    secret = root_only(box)
    daemon_edits(box.install_dir / "bin" / "stop.sh",
                 f"id -u > {secret}/canary 2>/dev/null; id -u > run/stop-uid")
    plan, approval = approved_plan(box)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 0, text
    assert list(secret.iterdir()) == []
    ran = box.install_dir / "run" / "stop-uid"
    assert ran.read_text().strip() == str(daemon_uid()), ran.read_text()
    assert ran.stat().st_uid == daemon_uid()
    assert box.answers() == NEW
    service = int((box.install_dir / "run" / "server.pid").read_text())
    assert Path(f"/proc/{service}").stat().st_uid == daemon_uid()  # the new version was started by daemon too
    assert box.install_dir.stat().st_uid == daemon_uid()  # the install dir is still daemon's after the swap
    journal = "".join(p.read_text(errors="replace") for p in (box.root / "runs").rglob("*.jsonl"))
    assert f'"account": "daemon (uid {daemon_uid()})"' in journal, journal[-3000:]


@pytest.mark.parametrize("transport", ["local", "ssh"])
def test_2_the_stock_stop_script_never_kills_the_process_the_service_account_names(
        daemon_box: Sandbox, transport: str, request: pytest.FixtureRequest,
        capsys: pytest.CaptureFixture[str]) -> None:
    """daemon writes a root process's pid into its run/server.pid; the vendor's own stop.sh sends SIGTERM to that
    pid. The run is refused at preflight, before stop (exit 2: the pid file names a process that is not the
    service's own, by pid and uid): neither stop.sh nor the agent signals it, the root process is alive."""
    box = daemon_box
    over(box, transport, request)
    plan, approval = approved_plan(box)
    victim = subprocess.Popen(["sleep", "900"], cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        pid_file = box.install_dir / "run" / "server.pid"
        subprocess.run(as_daemon("sh", "-c", f"rm -f {pid_file}; echo {victim.pid} > {pid_file}"), check=True)
        assert pid_file.stat().st_uid == daemon_uid()
        rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
        assert rc == 2, text
        assert victim.poll() is None, text  # alive: neither stop.sh nor the agent signalled it
        assert f"pid {victim.pid} (uid 0/0/0)" in text and "NOT the service's own" in text, text
        assert "stopped nothing" in text and "sleep 900" not in text, text
    finally:
        victim.kill()
        victim.wait()


def with_command_probe(box: Sandbox, command: str) -> None:
    """HOME/playbooks/sample-middleware.yaml: the shipped playbook plus a command probe running ``command``."""
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    doc["observe"]["probes"].append({"name": "selfcheck", "type": "command", "command": command})
    (box.root / "playbooks").mkdir(exist_ok=True)
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False),
                                                                  encoding="utf-8")


def plan_proves(box: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """``plan`` (which proves the probes on the running version on the host) succeeds and writes the plan."""
    out = box.plans / "p.json"
    rc, text = run_cli(box, capsys, "plan", "--inventory", str(box.inventory), "--to", NEW, "--catalog",
                       str(box.catalog), "-o", str(out), "--key", str(box.requester_key))
    assert rc == 0, text
    assert out.is_file()


@pytest.mark.parametrize("transport", ["local", "ssh"])
def test_3_a_command_probe_proved_at_plan_time_runs_as_the_service_account(
        daemon_box: Sandbox, transport: str, request: pytest.FixtureRequest,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The operator's playbook has a command probe; ``plan`` proves it on the running version on the host: it ran
    as daemon (its uid in the file it wrote; nothing in the root-only directory)."""
    box = daemon_box
    over(box, transport, request)
    secret = root_only(box)
    with_command_probe(box, f"id -u > {secret}/canary 2>/dev/null; id -u > run/probe-uid")
    plan_proves(box, capsys)
    ran = box.install_dir / "run" / "probe-uid"
    assert ran.read_text().strip() == str(daemon_uid()), ran.read_text()
    assert list(secret.iterdir()) == []


def test_4_an_owner_with_no_account_entry_runs_commands_with_nobodys_group_only(
        no_entry_box: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The install belongs to uid 4242, which has no account entry (its directory's group, 4242, is no account's
    either): the command probe runs as uid 4242 with nobody's group (65534) alone, never root's groups nor the
    directory's group, and with HOME=/ (no USER nor LOGNAME of root's)."""
    box = no_entry_box
    with_command_probe(box, 'echo "$(id -u) $(id -g) $(id -G) $HOME ${USER:-none} ${LOGNAME:-none}" > run/who')
    plan_proves(box, capsys)
    who = (box.install_dir / "run" / "who").read_text().split()
    assert who == [str(NO_ENTRY), "65534", "65534", "/", "none", "none"], who
