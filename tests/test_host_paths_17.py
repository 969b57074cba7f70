"""Issue 14 (round 15, attack14r15 findings 2-7): what the service account can make the root agent (and the
controller) hold, copy, hash or show.

The host agent often runs as root while the install belongs to the service account (daemon here, played with
setpriv). That account writes the scripts the agent runs (their output), the files it copies and hashes, the ports
the probes look at; a package author writes the tar headers both sides read. Each test plays that account (or the
author) against the shipped CLI and shows the bound: memory the agent keeps, bytes it copies, what it passes on.
"""

from __future__ import annotations

import gzip
import json
import os
import pwd
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from test_guide import UPGRADER
from hoststate import LEDGER, assert_host_untouched
from hoststate import host_state as whole_host_state
from test_host_paths import last_run_id, run_cli
from test_host_paths_13 import SHIPPED, SYSTEM_PYTHON, approved_plan, as_daemon, daemon_edits, daemon_uid, owned_box
from test_host_paths_14 import inspect_measured
from upgrader.cli.commands.demo import Sandbox

MiB = 1 << 20


@pytest.fixture
def daemon_box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The sample install 7.0.4.1, ``chown -R daemon:daemon``, its service started by daemon."""
    yield from owned_box(monkeypatch)


def cli_measured(box: Sandbox, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, int]:
    """The shipped CLI as its own process (the local transport runs the agent as its child): exit code, its
    output, and the peak RSS in KiB of that process and its children (the agent among them)."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
             "print('RC-PEAK', r, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", probe, UPGRADER, "--home", str(box.root), *argv],
                         capture_output=True, text=True, env={**os.environ, **(env or {})})
    text = res.stdout + res.stderr
    assert "Traceback" not in text, text
    rc, peak = (int(x) for x in res.stdout.rsplit("RC-PEAK", 1)[1].split())
    return rc, text, peak


def kill_pid_in(path: Path) -> None:
    """End the process whose pid the attacker's script wrote to ``path`` (one the test's attacker started)."""
    try:
        os.kill(int(path.read_text().split()[0]), signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass


# ---------------------------------------------------------------- finding 2: a command's output, bounded

def test_1_a_stop_script_that_prints_hundreds_of_megabytes_leaves_the_agent_small(daemon_box: Sandbox) -> None:
    """daemon's bin/stop.sh prints 300 MB before it stops the service. The approved run commits (exit 0) and the
    peak memory of the CLI and its agent stays under 200 MiB: the agent keeps the start and the end of the output
    (a bound), not all of it (before: the bytes, their join and the decoded text, about a gigabyte)."""
    box = daemon_box
    daemon_edits(box.install_dir / "bin" / "stop.sh", "head -c 300000000 /dev/zero | tr '\\0' A; echo; echo last-line")
    plan, approval = approved_plan(box)
    rc, text, peak_kib = cli_measured(box, "run", str(plan), "--approval", str(approval))
    assert rc == 0, text[-3000:]
    assert peak_kib < 200 * 1024, peak_kib  # a memory bound (KiB), not a time one


def test_2_a_child_that_leaves_the_stop_scripts_process_group_holding_its_output_does_not_hang_the_stop(
        daemon_box: Sandbox) -> None:
    """daemon's bin/stop.sh starts ``setsid sleep 900 &`` (out of the process group the agent kills) that keeps
    the output pipe open, then ends. The stop is done when the script ends (a short grace for its last output):
    the run commits (exit 0). Before, the agent read that pipe to EOF: the controller got no answer, the run
    failed and rolled back."""
    box = daemon_box
    holder = box.install_dir / "run" / "holder.pid"
    daemon_edits(box.install_dir / "bin" / "stop.sh", f"setsid sleep 900 & echo $! > {holder}")
    plan, approval = approved_plan(box)
    try:
        rc, text, _ = cli_measured(box, "run", str(plan), "--approval", str(approval))
        assert rc == 0, text[-3000:]
        assert box.answers() == "7.0.4.2"
    finally:
        kill_pid_in(holder)


# ---------------------------------------------------------------- finding 3: a pax header of a tiny package

def with_pax_comment(stock: Path, out: Path, size: int) -> Path:
    """The stock package with one more member, docs/NOTES.txt, preceded by a pax header whose ``comment`` is
    ``size`` bytes of one letter: written as a stream (the test never holds it), gzip packs it about 1000:1."""
    with tarfile.open(stock, "r:gz") as tar:
        tar.getmembers()
        end = tar.offset  # after the last member: the stock archive without its end blocks
    body = b" comment="  # the record is "<length> comment=<value>\n", its length counting its own digits
    length = len(body) + size + 1
    length += len(str(length + len(str(length))))
    record_head = str(length).encode() + body
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, length
    member = tarfile.TarInfo("docs/NOTES.txt")
    with gzip.open(out, "wb") as f:
        f.write(gzip.decompress(stock.read_bytes())[:end])
        f.write(pax.tobuf(tarfile.USTAR_FORMAT))
        f.write(record_head)
        chunk = b"a" * MiB
        for i in range(0, size, MiB):
            f.write(chunk[:min(MiB, size - i)])
        f.write(b"\n" + bytes(-length % 512))
        f.write(member.tobuf(tarfile.USTAR_FORMAT) + bytes(1024))
    return out


def test_3_a_pax_header_of_hundreds_of_megabytes_in_a_small_package_is_refused_unread(
        daemon_box: Sandbox, tmp_path: Path) -> None:
    """A package author adds to the stock 7.0.4.2 package a member whose pax header carries a 200 MB comment (the
    file is well under 1 MB). ``package verify`` refuses it (exit 2) naming the member and the header's size, and
    its peak memory stays under 150 MiB (before: verified, exit 0, with the header held and decoded, about 600 MB)."""
    stock = daemon_box.catalog / "sample-middleware-7.0.4.2.tar.gz"
    pkg = with_pax_comment(stock, tmp_path / "sample-middleware-7.0.4.2.tar.gz", 200 * MiB)
    assert pkg.stat().st_size < MiB
    rc, text, peak_kib = cli_measured(daemon_box, "package", "verify", str(pkg))
    assert rc == 2, text
    assert "'docs/NOTES.txt'" in text and "pax header of" in text and str(pkg) in text, text
    assert peak_kib < 150 * 1024, peak_kib  # a memory bound (KiB), not a time one


# ---------------------------------------------------------------- finding 4: the backup copies the size it saw

GROWER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
open(sys.argv[2], "w").write(str(os.getpid()))
end = time.time() + 600
while time.time() < end:  # a slow, dense growth: about 1 MB/s, so that every copy of it sees it grow
    os.write(fd, b"g" * 512)
    time.sleep(0.0005)
"""


def test_4_a_product_file_the_service_account_grows_during_the_backup_copy_is_refused_before_stop(
        daemon_box: Sandbox) -> None:
    """daemon owns a 30 MB product file, extra/big.bin, and appends to it all along the run (a hole of any size
    would do as well, see the finding). The backup copies the size it saw when it opened the file, sees it changed
    and refuses before stop (exit 2), naming the file: the old service runs untouched (before: the copy read to
    EOF, as long as its owner kept it growing)."""
    box = daemon_box
    extra = box.install_dir / "extra"
    subprocess.run(as_daemon("sh", "-c", f"mkdir {extra} && head -c 30000000 /dev/urandom > {extra}/big.bin"),
                   check=True)
    plan, approval = approved_plan(box)
    was = whole_host_state(box.install_dir, answers=box.answers, own=("logs", "run", "extra"))
    pid_file = extra / "grower.pid"
    grower = subprocess.Popen(as_daemon(SYSTEM_PYTHON, "-c", GROWER, str(extra / "big.bin"), str(pid_file)),
                              stdin=subprocess.DEVNULL)
    try:
        rc, text, _ = cli_measured(box, "run", str(plan), "--approval", str(approval))
    finally:
        grower.kill()
        grower.wait()
    assert rc == 2, text[-3000:]
    assert "extra/big.bin" in text and "changed size while it was copied" in text, text[-3000:]
    assert_host_untouched(was, whole_host_state(box.install_dir, answers=box.answers, own=("logs", "run", "extra")),
                          run_record=last_run_id(box), appended=LEDGER)  # the run locked the host
    assert box.answers() == "7.0.4.1"
    state = box.install_dir.parent / f".upgrader-{box.install_dir.name}"
    left = [p for p in state.rglob("*") if p.is_file() and p.stat().st_size > MiB]
    assert left == [], left  # no partial backup kept


# ---------------------------------------------------------------- finding 5: the operator's environment

def test_5_the_operators_environment_never_reaches_the_service_accounts_scripts(daemon_box: Sandbox) -> None:
    """The operator runs with a key passphrase and a cloud secret in the environment (the local transport's agent
    is the CLI's child). daemon's bin/stop.sh writes its whole environment into its own run/. The run commits
    (exit 0); neither secret is there, the run's own UPGRADER_* variables and daemon's HOME are."""
    box = daemon_box
    seen = box.install_dir / "run" / "stop-env.txt"
    daemon_edits(box.install_dir / "bin" / "stop.sh", f"env > {seen}")
    plan, approval = approved_plan(box)
    secrets = {"UPGRADER_KEY_PASSPHRASE": "operator-Passphrase-2026", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-K7MDENG"}
    rc, text, _ = cli_measured(box, "run", str(plan), "--approval", str(approval), env=secrets)
    assert rc == 0, text[-3000:]
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert seen.stat().st_uid == daemon_uid()
    for name, value in secrets.items():
        assert name not in env and value not in seen.read_text(), env
    assert env["UPGRADER_TARGET_VERSION"] == "7.0.4.2" and env["HOME"] == pwd.getpwnam("daemon").pw_dir, env


# ---------------------------------------------------------------- finding 6: inspect's config digests

def test_6_a_config_file_made_huge_as_a_hole_is_reported_sparse_and_not_hashed(daemon_box: Sandbox) -> None:
    """daemon makes its conf/server.conf 8 GiB as a hole (4 KiB on disk; terabytes would cost it no more).
    ``inspect`` (exit 0) reports the file's size and says it is sparse and was not hashed: no sha256 (before: the
    agent read all 8 GiB of zeros to hash them, and would read terabytes for hours)."""
    box = daemon_box
    conf = box.install_dir / "conf" / "server.conf"
    subprocess.run(as_daemon("truncate", "-s", str(8 << 30), str(conf)), check=True)
    rc, report, _ = inspect_measured(box)
    assert rc == 0, report
    (facts,) = [h["facts"] for h in report["hosts"]]
    (fact,) = [c for c in facts["configs"] if c["path"] == "conf/server.conf"]
    assert fact["size"] == 8 << 30 and "sha256" not in fact, fact
    assert "sparse" in fact["withheld"] and "not hashed" in fact["withheld"], fact


# ---------------------------------------------------------------- finding 7: a selector port's holder

SECRET_ARGV = "--db-url=jdbc:oracle:thin:appuser/Tiger2026@db01:1521/ORCL"
HOLDER = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); " \
         "print(s.getsockname()[1], flush=True); time.sleep(300)"


def test_7_a_port_the_service_account_names_is_said_held_by_pid_and_uid_never_by_its_command_line(
        daemon_box: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The operator's playbook finds the server by a process selector whose port comes from conf/server.conf
    (vars_from; the inventory sets none). daemon writes there the port a root process holds, a process with a
    database password on its command line. ``plan`` refuses (exit 2: the process probe fails) and names the holder
    by pid and uids only: nothing of its command line, not even redacted (user, host, the rest)."""
    box = daemon_box
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    doc["process"] = {"cmdline_contains": ["lib/server.py"], "ports": ["${port}"]}
    doc["observe"]["probes"] = [{"type": "process"}] + doc["observe"]["probes"][1:]
    (box.root / "playbooks").mkdir(exist_ok=True)
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    inventory = yaml.safe_load(box.inventory.read_text(encoding="utf-8"))
    inventory["hosts"]["app-01"].pop("vars")
    box.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
    holder = subprocess.Popen([SYSTEM_PYTHON, "-c", HOLDER, SECRET_ARGV, "token=ABCDEF123456"], cwd="/",
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        conf = box.install_dir / "conf" / "server.conf"
        subprocess.run(as_daemon("sed", "-i", f"s/^port = .*/port = {port}/", str(conf)), check=True)
        rc, text = run_cli(box, capsys, "plan", "--inventory", str(box.inventory), "--to", "7.0.4.2", "--catalog",
                           str(box.catalog), "-o", str(box.plans / "p.json"), "--key", str(box.requester_key))
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
    assert rc == 2, text
    assert f"port {port} is held by pid {holder.pid} (uid 0/0/0)" in text, text
    for secret in ("Tiger2026", "appuser", "db01", "ABCDEF", "socket", "--db-url", "token"):
        assert secret not in text, (secret, text)


# ---------------------------------------------------------------- finding 2, read-only inspect: a JDK tool's output

def test_8_a_jdk_tool_next_to_the_service_accounts_own_java_that_prints_hundreds_of_megabytes_leaves_inspect_small(
        daemon_box: Sandbox) -> None:
    """daemon runs its service with a JDK of its own inside the install (jdk/bin/java), whose jcmd prints 300 MB.
    ``inspect`` runs that jcmd as daemon (as designed: the JVM's own account), finishes (exit 0) and says the heap
    figure is not known; the peak memory of the CLI and its agent stays under 200 MiB (before: all of it held,
    decoded and joined)."""
    box = daemon_box
    jdk = box.install_dir / "jdk" / "bin"
    jcmd = "#!/bin/sh\nhead -c 300000000 /dev/zero | tr '\\0' A\nexit 0\n"
    subprocess.run(as_daemon("sh", "-c", f"mkdir -p {jdk} && cp {SYSTEM_PYTHON} {jdk}/java && "
                                         f"printf %s \"$0\" > {jdk}/jcmd && chmod 755 {jdk}/jcmd", jcmd), check=True)
    env = {**os.environ, "PYTHON": str(jdk / "java")}
    subprocess.run(as_daemon(str(box.install_dir / "bin" / "stop.sh")), check=True, env=env,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(as_daemon(str(box.install_dir / "bin" / "start.sh")), check=True, env=env,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    box.wait_version(None, timeout=15)
    service = int((box.install_dir / "run" / "server.pid").read_text())
    assert os.path.basename(Path(f"/proc/{service}/cmdline").read_bytes().split(b"\0")[0].decode()) == "java"
    rc, report, peak_kib = inspect_measured(box)
    assert rc == 0, report
    (host,) = report["hosts"]
    heap = host["facts"]["perf"]["jvm"]["heap_used"]
    assert "jcmd GC.heap_info printed no heap line" in json.dumps(heap), heap
    assert peak_kib < 200 * 1024, peak_kib  # a memory bound (KiB), not a time one
