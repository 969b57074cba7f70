"""One contract, two transports: the same cases run on this machine (local) and over the real sshd (ssh)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from sshd import SSHServer, free_port
from upgrader import sample
from upgrader.cli.commands.demo import build_sandbox
from upgrader.core.errors import TransportError
from upgrader.fleet.inventory import Host
from upgrader.core.playbook import load_playbook, shipped_playbooks_dir
from upgrader.fleet.transport import AgentClient, Transport, connect
from upgrader.fleet.transport.bundle import agent_bundle
from upgrader.fleet.transport.ssh import SSHTransport

TRICKY = ["two words", "it's", 'say "hi"', "back\\slash", "$HOME", "*", "; echo injected", "a\nb", "",
          "-n", "ünïcode"]


def host(name: str, install_dir: Path, sshd: SSHServer | None) -> Host:
    reach = sshd.host_entry() if sshd else {"address": "local"}
    return Host(name=name, install_dir=str(install_dir), product=sample.PRODUCT, playbook="sample-middleware",
                **reach)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "ssh"])
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Transport]:
    """The transport ``connect`` gives for a host on this machine, or for one behind the test sshd."""
    sshd = request.getfixturevalue("sshd") if request.param == "ssh" else None
    t = connect(host(f"contract-{request.param}", tmp_path / "install", sshd))
    try:
        yield t
    finally:
        t.close()


def test_a_command_returns_exit_code_stdout_and_stderr_separately(transport):
    """sh -c 'echo out; echo err >&2': exit 0, 'out' on stdout, 'err' on stderr."""
    res = transport.run(["sh", "-c", "echo out; echo err >&2"])
    assert (res.exited, res.stdout, res.stderr, res.ok) == (0, "out\n", "err\n", True)


def test_a_failing_command_returns_its_exit_code_without_raising(transport):
    """A command that exits 3 is a result with exited 3 (not an exception); a missing program exits 127."""
    res = transport.run(["sh", "-c", "echo partial; exit 3"])
    assert (res.exited, res.ok, res.stdout) == (3, False, "partial\n")
    assert transport.run(["no-such-program-upgrader-test"]).exited == 127


def test_arguments_reach_the_program_verbatim_and_are_never_run_by_a_shell(transport, tmp_path):
    """Spaces, quotes, $VARS, globs, ';', newlines and $(…)/`…` arrive as literal bytes; nothing is executed."""
    marker, marker2 = tmp_path / "pwned", tmp_path / "pwned2"
    args = TRICKY + [f"$(touch {marker})", f"`touch {marker2}`"]
    res = transport.run(["printf", "%s\\0", *args])
    assert res.exited == 0
    assert res.stdout.split("\0")[:-1] == args
    assert not marker.exists()
    assert not marker2.exists()


def test_stdin_is_delivered_to_the_command(transport):
    """Text given as stdin comes back from cat unchanged."""
    res = transport.run(["cat"], stdin="line one\nline 'two'\n")
    assert res.stdout == "line one\nline 'two'\n"


def test_put_copies_a_file_byte_for_byte(transport, tmp_path):
    """A binary file put() on the other side has the same sha256 there (computed by sha256sum on that side)."""
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(300_000) + b"\x00\xff\n")
    dest_dir = tmp_path / "dest dir"
    dest_dir.mkdir()
    dest = dest_dir / "payload copy.bin"
    transport.put(src, str(dest))
    res = transport.run(["sha256sum", str(dest)])
    assert res.exited == 0
    assert res.stdout.split()[0] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_a_command_that_outlives_its_timeout_raises_and_the_transport_still_works(transport):
    """sleep 10 with a 0.5 s timeout raises a TransportError saying it timed out, quickly; the next command runs."""
    started = time.monotonic()
    with pytest.raises(TransportError, match="timed out"):
        transport.run(["sleep", "10"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert transport.run(["echo", "still here"]).stdout == "still here\n"


def test_a_command_that_outlives_its_timeout_is_stopped_on_the_other_side(transport, tmp_path):
    """The timed-out command does not go on in the background: 3 s later it has not done its work."""
    mark = tmp_path / "still ran"
    with pytest.raises(TransportError, match="timed out"):
        transport.run(["sh", "-c", f'sleep 4 && touch "{mark}"'], timeout=0.5)
    time.sleep(6)
    assert not mark.exists()


def test_put_makes_the_missing_parent_directories(transport, tmp_path):
    """put() to a path whose directories do not exist yet makes them (on both transports)."""
    src = tmp_path / "small.txt"
    src.write_text("x")
    dest = tmp_path / "new" / "deeper dir" / "small.txt"
    transport.put(src, str(dest))
    assert dest.read_text() == "x"


def test_agent_facts_report_the_installed_version(transport, tmp_path):
    """The agent, called through the transport, reads 7.0.4.1 from the sample install (and no lock)."""
    sample.install(tmp_path / "install", port=free_port())
    spec = load_playbook(shipped_playbooks_dir() / "sample-middleware.yaml").spec
    agent = AgentClient(transport)
    try:
        request = {"install_dir": str(tmp_path / "install"), "version_source": spec["version"], "preserve": [],
                   "packages": []}
        facts = agent.call("facts", timeout=60, **request)
    finally:
        agent.close()
    assert facts["version"] == "7.0.4.1"
    assert facts["exists"] is True
    assert facts["lock"] is None


# ---------------------------------------------------------------- SSH only


def test_a_dropped_ssh_connection_raises_and_the_next_command_reconnects(sshd, tmp_path):
    """Killing the server side of the session mid-command raises 'connection lost'; the next run reconnects."""
    t = SSHTransport(host("drop", tmp_path, sshd))
    try:
        assert t.run(["echo", "up"]).stdout == "up\n"
        started, release = tmp_path / "started", tmp_path / "release"
        # the command outlives the cut on the "host": it waits for the test's release file, at most 30 s
        result: list[object] = []
        command = f"touch {started}; i=0; while [ ! -e {release} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done"

        def long_command() -> None:
            try:
                result.append(t.run(["sh", "-c", command], timeout=60))
            except TransportError as e:
                result.append(e)

        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(long_command)
            deadline = time.monotonic() + 20
            while not started.exists():
                assert time.monotonic() < deadline, "the command never started"
                time.sleep(0.02)
            assert sshd.kill_sessions() >= 1
            future.result(timeout=20)
        (err,) = result
        assert isinstance(err, TransportError)
        assert "connection lost" in str(err)
        assert t.run(["echo", "again"]).stdout == "again\n"
    finally:
        (tmp_path / "release").touch()
        t.close()


def test_several_installs_on_one_machine_send_the_agent_at_once_and_all_get_a_whole_copy(sshd, tmp_path):
    """Six hosts behind one sshd, no agent there yet, all connecting at once: each call works, one intact copy stays."""
    cache = sshd.root / "home" / ".cache" / "upgrader"
    shutil.rmtree(cache, ignore_errors=True)
    sample.install(tmp_path / "install", port=free_port())
    spec = load_playbook(shipped_playbooks_dir() / "sample-middleware.yaml").spec
    transports = [SSHTransport(host(f"same-machine-{i}", tmp_path / "install", sshd)) for i in range(6)]

    def facts(t: SSHTransport) -> str:
        agent = AgentClient(t)
        try:
            return str(agent.call("facts", timeout=60, install_dir=str(tmp_path / "install"),
                                  version_source=spec["version"], preserve=[], packages=[])["version"])
        finally:
            agent.close()

    try:
        with ThreadPoolExecutor(len(transports)) as pool:
            versions = list(pool.map(facts, transports))
    finally:
        for t in transports:
            t.close()
    assert versions == ["7.0.4.1"] * len(transports)
    (copy,) = [p for p in cache.iterdir() if p.suffix == ".pyz"]
    assert copy.name == agent_bundle().name and copy.read_bytes() == agent_bundle().data
    assert [p.name for p in cache.iterdir() if ".part" in p.name] == []


def test_a_failed_handshake_is_one_error_message_without_a_paramiko_traceback(tmp_path):
    """`upgrader plan` (own process) against a port that drops every connection: exit 5, our message, no traceback."""
    box = build_sandbox(tmp_path / "box")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def drop_every_connection() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=drop_every_connection, daemon=True).start()
    box.inventory.write_text(
        f"format: 1\nhosts:\n  app-01:\n    address: 127.0.0.1\n    port: {port}\n    user: root\n"
        f"    install_dir: {box.install_dir}\n    product: sample-middleware\n    playbook: sample-middleware\n")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "upgrader", "--home", str(box.root), "plan", "--inventory", str(box.inventory),
             "--to", "7.0.4.2", "--catalog", str(box.catalog), "-o", str(box.plans / "p.json")],
            capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    finally:
        listener.close()
    assert proc.returncode == 5
    assert f"app-01: SSH to 127.0.0.1:{port} failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (box.plans / "p.json").exists()
