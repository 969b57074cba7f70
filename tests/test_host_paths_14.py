"""Issue 14 (round 14, attack14 findings 2-5 and attack12 F4): what the service account can make the root agent do
with the files it owns.

The host agent often runs as root while the install belongs to the service account (daemon here, played with
setpriv). That account can grow its log to any size as a hole, make its config sparse, point its config dir at a
root-only directory, name any process in its pid file and keep a hard link to a product file. Each test plays that
account against the shipped CLI and shows the agent holds: bounded reads, a refusal before stop, no walk out of the
install, no other process's command line shown, and backups no other account can write.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from test_guide import UPGRADER
from hoststate import assert_host_untouched
from hoststate import host_state as whole_host_state
from test_host_paths import last_result, last_run_id, run_cli
from test_host_paths_13 import SHIPPED, SYSTEM_PYTHON, approved_plan, as_daemon, daemon_uid, owned_box
from upgrader.cli.commands.demo import Sandbox

GiB = 1 << 30


@pytest.fixture
def daemon_box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The sample install 7.0.4.1, ``chown -R daemon:daemon``, its service started by daemon."""
    yield from owned_box(monkeypatch)


def daemon_sparse(path: Path, size: int) -> None:
    """daemon (the service account) makes its own file ``size`` bytes long as a hole (no disk it pays for)."""
    subprocess.run(as_daemon("truncate", "-s", str(size), str(path)), check=True)
    st = path.stat()
    assert st.st_uid == daemon_uid() and st.st_size == size and st.st_blocks * 512 < (16 << 20)


def inspect_measured(box: Sandbox) -> tuple[int, dict[str, Any], int]:
    """``upgrader inspect --json`` of the sandbox's install as its own process (root; the local transport runs the
    agent as its child): exit code, the report, and the peak RSS in KiB of that process and its children."""
    probe = ("import os, resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=open(os.environ['OUT'], "
             "'w')).returncode; print(r, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = box.root / "inspect.json"
    res = subprocess.run([sys.executable, "-c", probe, UPGRADER, "--home", str(box.root), "inspect", "--install-dir",
                          str(box.install_dir), "--playbook", "sample-middleware", "--var", f"port={box.port}",
                          "--json"], capture_output=True, text=True, check=True, env={**os.environ, "OUT": str(out)})
    rc, peak = (int(x) for x in res.stdout.split())
    text = out.read_text()
    assert "Traceback" not in text + res.stderr, text + res.stderr
    return rc, json.loads(text), peak


def test_1_a_log_grown_to_gigabytes_as_a_hole_is_read_a_bounded_amount_and_reported_sparse(
        daemon_box: Sandbox) -> None:
    """daemon makes logs/server.log 2 GiB as a hole (it could do so between the agent's fstat and its read, which
    cannot be timed here): inspect finishes (exit 0), reads at most the tail it wants (a few hundred KiB, never to
    EOF), says the log is sparse and how much it read, and the agent's peak memory stays small."""
    box = daemon_box
    log = box.install_dir / "logs" / "server.log"
    daemon_sparse(log, 2 * GiB)
    rc, report, peak_kib = inspect_measured(box)
    assert rc == 0, report
    (facts,) = [h["facts"] for h in report["hosts"]]
    (fact,) = [x for x in facts["logs"] if x["path"] == "logs/server.log"]
    assert fact["size"] == 2 * GiB and fact["sparse"] is True, fact
    assert 0 < fact["bytes_read"] <= 256 * 2000, fact
    (warning,) = [w for w in report["hosts"][0]["warnings"] if w["check"] == "log_sparse"]
    assert "logs/server.log" in warning["message"] and "sparse" in warning["message"], warning
    assert "稀疏文件" in warning["message_zh"], warning
    assert peak_kib < 200 * 1024, peak_kib  # a memory bound (KiB), not a time one


SECRET_ARGV = "--db-url=jdbc:oracle:thin:appuser/Tiger2026@db01:1521/ORCL"


def test_4_a_process_the_pid_file_names_is_shown_by_pid_and_uid_never_by_its_command_line(
        daemon_box: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A root process holds a database URL with a password on its command line; daemon writes its pid into its own
    run/server.pid. ``inspect`` (console, JSON and HTML report) says the process is not the service's, by pid and
    uid: nothing of its command line, not even redacted (the host and user names)."""
    box = daemon_box
    victim = subprocess.Popen([SYSTEM_PYTHON, "-c", "import time; time.sleep(300)", SECRET_ARGV], cwd="/",
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid_file = box.install_dir / "run" / "server.pid"
        subprocess.run(as_daemon("sh", "-c", f"rm -f {pid_file}; echo {victim.pid} > {pid_file}"), check=True)
        html = box.root / "r.html"
        rc, console = run_cli(box, capsys, "inspect", "--install-dir", str(box.install_dir), "--playbook",
                              "sample-middleware", "--var", f"port={box.port}", "-o", str(html))
        rc_json, out = run_cli(box, capsys, "inspect", "--install-dir", str(box.install_dir), "--playbook",
                               "sample-middleware", "--var", f"port={box.port}", "--json")
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()
    for shown in (console, out, html.read_text()):
        assert f"pid {victim.pid} (uid 0/0/0)" in shown, shown[-3000:]
        for secret in ("Tiger2026", "appuser", "db01", "time.sleep", "--db-url"):
            assert secret not in shown, (secret, shown[-3000:])


def with_inspect_block(box: Sandbox, block: dict[str, Any]) -> Path:
    """The operator's playbook file: the shipped sample's with an ``inspect:`` block."""
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    doc["inspect"] = block
    out = box.root / "inspect-playbook.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out


def unread(d: Path) -> float:
    """Set directory ``d``'s access time before its change time (relatime then records the next listing of it) and
    return it."""
    st = d.stat()
    os.utime(d, (st.st_mtime - 100, st.st_mtime))
    return d.stat().st_atime


def test_3_inspects_glob_walk_never_lists_a_directory_a_link_of_the_install_points_out_to(
        daemon_box: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """daemon replaces its conf/ by a link to a root-only directory outside (holding sub/ and a config file) and
    adds logs/catalina.x.log, a link to the same directory; the playbook inspects ``conf`` (a directory: every
    file below it) and ``logs/*.log``. ``inspect`` lists neither that directory nor sub/ (their access times are
    untouched: relatime records any listing), reports nothing from them, and names both links as refused, with the
    sentence a run's preflight gives."""
    box = daemon_box
    outside = box.root.parent / "rootonly"
    (outside / "sub").mkdir(parents=True)
    outside.chmod(0o700)
    (outside / "sub" / "hidden.conf").write_text("password=Tiger2026\n")
    (outside / "root.conf").write_text("password=Tiger2026\n")
    playbook = with_inspect_block(box, {"configs": ["conf"], "logs": ["logs/*.log"]})
    conf = box.install_dir / "conf"
    subprocess.run(as_daemon("sh", "-c", f"mv {conf} {conf}.real && ln -s {outside} {conf} && "
                                         f"ln -s {outside} {box.install_dir}/logs/catalina.x.log"), check=True)
    atimes = {d: unread(d) for d in (outside, outside / "sub")}
    rc, out = run_cli(box, capsys, "inspect", "--install-dir", str(box.install_dir), "--playbook", str(playbook),
                      "--var", f"port={box.port}", "--json")
    assert rc == 0, out
    assert {d: d.stat().st_atime for d in atimes} == atimes  # never listed
    report = json.loads(out)
    facts = report["hosts"][0]["facts"]
    assert facts["configs"] == [], facts["configs"]
    assert [x["path"] for x in facts["logs"]] == ["logs/server.log"], facts["logs"]
    assert "hidden.conf" not in out and "root.conf" not in out and "Tiger2026" not in out
    refused = facts["paths_refused"]
    for link in ("conf", "logs/catalina.x.log"):
        assert any(f"passes through the symlink {link} -> {outside}, which leads outside the install dir" in why
                   for why in refused), refused
    warned = [w["message"] for w in report["hosts"][0]["warnings"] if w["check"] == "path_refused"]
    assert len(warned) == 2 and all(m.startswith("not inspected: inspected path ") for m in warned), warned


@pytest.mark.parametrize("rel, what", [("conf/server.conf", "preserved path"), ("lib/extra.jar", "install file")])
def test_2_a_sparse_file_the_backup_would_copy_is_refused_before_stop_and_nothing_is_copied(
        daemon_box: Sandbox, capsys: pytest.CaptureFixture[str], rel: str, what: str) -> None:
    """After the plan was approved, daemon makes its preserved conf/server.conf 1 GiB as a hole (4 KiB on disk), or
    adds such a product file of its own (the backup copies daemon's files, which it could otherwise rewrite). The
    run is refused before stop (exit 2, at preflight), naming the file as sparse; the service was never stopped, no
    run on the host kept a large file, and the host is untouched."""
    box = daemon_box
    plan, approval = approved_plan(box)
    path = box.install_dir / rel
    before = path.read_bytes() if path.exists() else b""
    subprocess.run(as_daemon("truncate", "-s", str(GiB), str(path)), check=True)
    assert path.stat().st_blocks * 512 < (1 << 20)
    service = int((box.install_dir / "run" / "server.pid").read_text())
    was = whole_host_state(box.install_dir)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert f"{what} {rel} is a sparse file" in text, text
    (host,) = last_result(box)["hosts"]
    assert host["outcome"] == "bad_input" and [p["phase"] for p in host["phases"]] == ["preflight"], host
    assert_host_untouched(was, whole_host_state(box.install_dir), run_record=last_run_id(box))
    assert int((box.install_dir / "run" / "server.pid").read_text()) == service and Path(f"/proc/{service}").exists()
    state = box.install_dir.parent / f".upgrader-{box.install_dir.name}"
    left = [p for p in state.rglob("*") if p.is_file() and p.stat().st_size > (1 << 20)]
    assert left == [], left
    assert path.read_bytes()[:len(before)] == before  # the customer's file itself is as daemon left it


def inodes(top: Path) -> set[tuple[int, int]]:
    """(device, inode) of every file at and below ``top`` (links not followed)."""
    return {(st.st_dev, st.st_ino) for st in (p.lstat() for p in [top, *top.rglob("*")])}


def test_5_a_hard_link_the_service_account_keeps_never_reaches_the_backup(
        daemon_box: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """daemon keeps a hard link of its bin/start.sh as data/.keep (preserved data, moved across every upgrade).
    A run commits 7.0.4.2; no file of the run's backup is an inode reachable from the install (the backup's copy of
    a file daemon owns is root's own). daemon then rewrites data/.keep; ``upgrader rollback RUN`` still trusts the
    backup and puts 7.0.4.1 back (exit 0, the service up and answering), bin/start.sh as it was, daemon's with its
    mode, and not the backup's inode either."""
    box = daemon_box
    start = box.install_dir / "bin" / "start.sh"
    original, mode = start.read_bytes(), start.stat().st_mode
    keep = box.install_dir / "data" / ".keep"
    subprocess.run(as_daemon("ln", str(start), str(keep)), check=True)
    plan, approval = approved_plan(box)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 0, text
    run = last_run_id(box)
    backup = box.install_dir.parent / f".upgrader-{box.install_dir.name}" / "runs" / run / "backup" / "tree"
    saved = backup / "bin" / "start.sh"
    assert saved.read_bytes() == original and saved.stat().st_uid == 0, saved.stat()
    assert not inodes(backup) & inodes(box.install_dir)
    assert keep.stat().st_nlink == 1  # daemon's name of the old start.sh is its only one (the backup is a copy)
    subprocess.run(as_daemon("sh", "-c", f"echo 'id > /dev/null' > {keep}"), check=True)
    rc, text = run_cli(box, capsys, "rollback", run, "--yes")
    assert rc == 0, text
    assert box.answers() == "7.0.4.1"
    assert start.read_bytes() == original, start.read_text()
    st = start.stat()
    assert (st.st_uid, st.st_mode) == (daemon_uid(), mode), st
    assert (st.st_dev, st.st_ino) not in inodes(backup)


def test_6_a_prepare_that_fails_part_way_leaves_no_staged_tree_nor_partial_backup(
        daemon_box: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The operator's playbook also preserves conf/extra/ (config: copied into the backup); daemon puts a FIFO in it
    after the plan was approved. The backup has already copied daemon's product files when it meets the FIFO,
    which it refuses to copy: the run ends before stop, the service never stopped, and the run's staged tree and
    partial backup are removed (nothing left on the disk), the host otherwise untouched."""
    box = daemon_box
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    doc["preserve"].append({"path": "conf/extra", "kind": "config"})
    (box.root / "playbooks").mkdir(exist_ok=True)
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False),
                                                                  encoding="utf-8")
    extra = box.install_dir / "conf" / "extra"
    subprocess.run(as_daemon("sh", "-c", f"mkdir {extra} && echo a=1 > {extra}/a.conf"), check=True)
    plan, approval = approved_plan(box)
    subprocess.run(as_daemon("mkfifo", str(extra / "pipe")), check=True)
    service = int((box.install_dir / "run" / "server.pid").read_text())
    was = whole_host_state(box.install_dir)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc != 0 and "pipe" in text, text
    (host,) = last_result(box)["hosts"]
    assert "stop" not in [p["phase"] for p in host["phases"]], host
    now = whole_host_state(box.install_dir)  # the run's records in the agent's state dir aside
    assert (now.product, now.service, now.lock) == (was.product, was.service, was.lock)
    assert box.answers() == "7.0.4.1"
    assert int((box.install_dir / "run" / "server.pid").read_text()) == service and Path(f"/proc/{service}").exists()
    run_dir = box.install_dir.parent / f".upgrader-{box.install_dir.name}" / "runs" / last_run_id(box)
    assert not (run_dir / "staging").exists() and not (run_dir / "backup").exists(), list(run_dir.iterdir())
