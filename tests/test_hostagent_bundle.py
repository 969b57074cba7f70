"""The host agent is a package (upgrader/hostagent) and reaches a host as one zip application (issue 16).

The zip is built at run time from the package's sources and is deterministic (the same sources give the
same bytes, whatever their time stamps and modes); it holds every module and a top-level ``__main__.py``;
the host's ``python3 -I`` runs it directly or through the transports' boot, which runs it only when its
bytes still have the sha256 its name promises. Every module parses as Python 3.8 and imports only the
standard library and its own package, with no circle. A cached copy changed on a host (over the real
sshd) or in the controller's own cache (local transport) is not run: it is replaced, and the action works.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import plan_to, run_plan
from fleet import Fleet
from upgrader.core.errors import TransportError
from upgrader.fleet.transport import AgentClient, close_all, connect
from upgrader.fleet.transport.bundle import (BOOT, PACKAGE, SOURCE_DIR, ZIP_MODE, ZIP_TIME, agent_bundle,
                                             build_bundle, local_copy)
from upgrader.fleet.transport.local import LocalTransport

#: the host's python3 (not this test's venv): what the SSH transport runs on a host
HOST_PYTHON = "/usr/bin/python3"


def members() -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(agent_bundle().data)) as z:
        return {name: z.read(name) for name in z.namelist()}


def run_zip(path: Path, *args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOST_PYTHON, "-I", *args], input=stdin, capture_output=True, text=True, timeout=60,
                          cwd=cwd or path.parent)


def tampered(data: bytes, marker: Path) -> bytes:
    """The zip with its request loop changed to leave ``marker`` when it is imported (still a valid zip)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == f"{PACKAGE}/main.py":
                body += f"\nopen({str(marker)!r}, 'w').close()\n".encode()
            dst.writestr(info, body)
    return out.getvalue()


# ---------------------------------------------------------------- the zip: deterministic, complete


def test_the_zip_is_deterministic_whatever_the_sources_time_stamps_and_modes(tmp_path: Path) -> None:
    """Built twice, and from a copy of the sources with other mtimes and modes: the same bytes; one changed
    byte in one module changes the digest."""
    first, second = build_bundle(), build_bundle()
    assert first.data == second.data and first.sha256 == second.sha256 == agent_bundle().sha256
    copy = tmp_path / "hostagent"
    shutil.copytree(SOURCE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for i, p in enumerate(sorted(copy.glob("*.py"))):
        os.utime(p, (1_000_000 + i, 2_000_000_000 - i))
        p.chmod(0o600 if i % 2 else 0o755)
    assert build_bundle(copy).data == first.data
    (copy / "files.py").write_bytes((copy / "files.py").read_bytes() + b"\n")
    assert build_bundle(copy).sha256 != first.sha256
    with zipfile.ZipFile(io.BytesIO(first.data)) as z:
        infos = z.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {(i.date_time, i.external_attr >> 16, i.compress_type) for i in infos} == {
        (ZIP_TIME, ZIP_MODE, zipfile.ZIP_STORED)}
    assert hashlib.sha256(first.data).hexdigest() == first.sha256 and first.name == f"agent-{first.sha256}.pyz"


def test_the_zip_holds_every_module_of_the_package_as_it_is_and_a_top_level_main() -> None:
    found = members()
    sources = {f"{PACKAGE}/{p.name}": p.read_bytes() for p in SOURCE_DIR.glob("*.py")}
    assert len(sources) > 15 and f"{PACKAGE}/main.py" in sources and f"{PACKAGE}/extract.py" in sources
    assert set(found) == set(sources) | {"__main__.py"}
    assert all(found[name] == data for name, data in sources.items())


def test_every_module_parses_as_python_3_8() -> None:
    for name, data in members().items():
        ast.parse(data.decode("utf-8"), name, feature_version=(3, 8))
    with pytest.raises(SyntaxError):  # the check does catch newer syntax
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 8))


def test_every_module_imports_only_the_standard_library_and_its_own_package() -> None:
    outside = []
    for name, data in members().items():
        for node in ast.walk(ast.parse(data)):
            found = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for module in found:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and not (name == "__main__.py" and top == PACKAGE):
                    outside.append(f"{name}: {module}")
    assert outside == []
    assert "yaml" not in sys.stdlib_module_names  # the check knows a third-party name when it sees one


def test_the_package_has_no_import_circle() -> None:
    """Modules import each other in one direction only (the order the package's docstring lists)."""
    graph = {}
    for p in SOURCE_DIR.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module} if node.module else {a.name for a in node.names}
        graph[p.stem] = deps
    # main imports the actions' modules when a request first needs them (its OPS table and RUN_MODULES): those
    # are its imports too, and none of them may import main
    from upgrader.hostagent.main import OPS, RUN_MODULES

    lazy = {module for module, _ in OPS.values()} | set(RUN_MODULES)
    assert lazy <= set(graph) and "prepare" in lazy
    graph["main"] |= lazy
    assert sum(len(d) for d in graph.values()) > 50
    done: list[str] = []
    while len(done) < len(graph):  # peel off the modules whose imports are all done; a circle stops this
        ready = sorted(m for m, deps in graph.items() if m not in done and deps <= set(done))
        assert ready, f"import circle among {sorted(set(graph) - set(done))}"
        done += ready
    assert done.index("common") < done.index("beneath") < done.index("prepare") < done.index("main")


# ---------------------------------------------------------------- the zip runs with the host's python3


def test_the_zip_runs_with_python3_isolated_on_a_request(tmp_path: Path) -> None:
    """``python3 -I agent.pyz``: one request on stdin, one as a base64 argument, a --serve session."""
    path = tmp_path / agent_bundle().name
    path.write_bytes(agent_bundle().data)
    facts = {"op": "facts", "install_dir": str(tmp_path / "no-install"), "version_source": {"file": "VERSION"}}
    res = run_zip(path, str(path), stdin=json.dumps(facts))
    assert res.returncode == 0, res.stderr
    reply = json.loads(res.stdout)
    assert reply["ok"] is True and reply["result"]["exists"] is False
    assert reply["result"]["version_error"] == f"install dir {tmp_path / 'no-install'} does not exist"
    arg = base64.urlsafe_b64encode(json.dumps({"op": "no-such-op"}).encode()).decode()
    res = run_zip(path, str(path), arg)
    assert json.loads(res.stdout) == {"ok": False, "kind": "bad_input", "error": "unknown agent op 'no-such-op'"}
    res = run_zip(path, str(path), "--serve", stdin=json.dumps({"op": "nope"}) + "\nnot json\n")
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [line["kind"] for line in lines] == ["bad_input", "bad_input"]
    assert lines[1]["error"].startswith("request is not JSON")


def test_the_boot_runs_the_zip_only_with_its_digest_and_not_a_module_planted_beside_it(tmp_path: Path) -> None:
    """The transports' boot: the right sha256 answers READY and serves; another one answers MISSING (97) and
    runs nothing of the file; a ``upgrader_hostagent`` package planted in the working directory is not used."""
    path = tmp_path / agent_bundle().name
    path.write_bytes(agent_bundle().data)
    planted = tmp_path / PACKAGE
    planted.mkdir()
    (planted / "__init__.py").write_text(f"open({str(tmp_path / 'planted-ran')!r}, 'w').close()\n")
    (planted / "main.py").write_text("def main():\n    print('planted')\n")
    res = run_zip(path, "-c", BOOT, str(path), agent_bundle().sha256, "--serve", stdin='{"op": "nope"}\n')
    assert res.returncode == 0, res.stderr
    ready, reply = res.stdout.splitlines()
    assert ready == "UPGRADER-AGENT-READY" and json.loads(reply)["error"] == "unknown agent op 'nope'"
    marker = tmp_path / "tampered-ran"
    path.write_bytes(tampered(agent_bundle().data, marker))
    res = run_zip(path, "-c", BOOT, str(path), agent_bundle().sha256, "--serve", stdin='{"op": "nope"}\n')
    assert (res.returncode, res.stdout) == (97, "UPGRADER-AGENT-MISSING\n")
    assert not marker.exists() and not (tmp_path / "planted-ran").exists()


# ---------------------------------------------------------------- a cached copy changed: not run, replaced


def test_a_cached_agent_changed_on_the_host_is_not_run_and_is_sent_again(fleet, capsys) -> None:
    """Over the real sshd: the cached zip (named after its sha256) changed on the host into another valid zip
    that leaves a marker is not run; a whole copy is sent again and planning works (exit 0). The host then holds
    the very bytes this controller built."""
    f: Fleet = fleet(1)
    rc, _ = plan_to(f.box, "7.0.4.2")
    assert rc == 0, capsys.readouterr()  # the agent is cached on the host now
    cache = f.sshd.root / "home" / ".cache" / "upgrader"
    cached = cache / agent_bundle().name
    assert cached.read_bytes() == agent_bundle().data
    marker = f.sshd.root / "home" / "tampered-agent-ran"
    cached.write_bytes(tampered(agent_bundle().data, marker))
    close_all()  # the next plan is another command (another process): it connects and boots the agent anew
    rc, _ = plan_to(f.box, "7.0.4.2")
    assert rc == 0, capsys.readouterr()
    assert not marker.exists(), "the tampered agent was run"
    assert cached.read_bytes() == agent_bundle().data
    assert [p.name for p in cache.iterdir() if ".part" in p.name] == []


def agents_on_host(f: Fleet) -> list[int]:
    """The pids of the agent processes running this controller's zip from the cache of the fleet's sshd login."""
    needle = str(f.sshd.root / "home" / ".cache" / "upgrader" / agent_bundle().name).encode()
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and needle in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def no_agent_left(f: Fleet) -> bool:
    """True once no agent of the fleet's login runs (a closed session's agent reads EOF and exits on its own;
    waited for up to 20 s, an event, not a speed)."""
    for _ in range(200):
        if not agents_on_host(f):
            return True
        time.sleep(0.1)
    return False


def test_one_process_boots_the_agent_once_per_host_and_leaves_no_agent_running(fleet, capsys) -> None:
    """Over the real sshd, plan, approve and run in one process (the gate reads each host again before the run):
    the agent boots once per host, its session kept idle between the commands and reused (the zip checked at that
    boot); a client whose idle session another one took gets a new session of its own; when the connections
    close, no agent process is left on the host."""
    f: Fleet = fleet(2)
    close_all()
    assert no_agent_left(f)
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0, capsys.readouterr()
    after_plan = sorted(agents_on_host(f))
    assert len(after_plan) == 2  # one idle agent per host
    assert run_plan(f.box, plan) == 0, capsys.readouterr()
    assert sorted(agents_on_host(f)) == after_plan  # the same two processes served the run
    close_all()
    assert no_agent_left(f)


def test_a_client_whose_idle_session_was_taken_opens_its_own(fleet) -> None:
    """Two agent clients of one host in one process: the first ends its sessions (its session is kept idle), the
    second takes that session; the first then calls again and gets a new session, so two agents serve, each
    answering its own client; closing the connections ends both."""
    from upgrader.fleet.inventory import load_inventory

    f: Fleet = fleet(1)
    close_all()
    host = load_inventory(f.box.inventory).hosts["app-01"]
    request = {"install_dir": host.install_dir, "state_dir": host.state_dir, "version_source": {"file": "VERSION"},
               "preserve": [], "check_drift": False, "packages": []}
    first_t = connect(host)
    first = AgentClient(first_t)
    assert first.call("facts", timeout=60, **request)["exists"] is True
    booted = agents_on_host(f)
    assert len(booted) == 1
    first_t.close()  # a command ends: its session stays idle for the next client of this host
    assert agents_on_host(f) == booted
    second = AgentClient(connect(host))
    assert second.call("facts", timeout=60, **request)["exists"] is True
    assert agents_on_host(f) == booted  # reused, not booted again
    assert first.call("facts", timeout=60, **request)["exists"] is True  # the first client's own new session
    assert len(agents_on_host(f)) == 2
    assert second.call("facts", timeout=60, **request)["exists"] is True
    close_all()
    assert no_agent_left(f)


def test_the_local_transport_runs_the_same_zip_from_its_own_cache_and_replaces_a_changed_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local agent is the same zip, written once into this user's cache dir (0700); changed there between
    agent_path() and the start, it is not run: the boot refuses it, the copy is written again, the call works."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    t = LocalTransport()
    agent = AgentClient(t)
    request = {"install_dir": str(tmp_path / "no-install"), "version_source": {"file": "VERSION"}}
    try:
        assert agent.call("facts", timeout=60, **request)["exists"] is False
        path = tmp_path / "cache" / "upgrader" / agent_bundle().name
        assert path.read_bytes() == agent_bundle().data and (path.parent.stat().st_mode & 0o777) == 0o700
        agent.close()  # the session ends; the client keeps the path it located, and starts a new session there
        marker = tmp_path / "tampered-agent-ran"
        path.write_bytes(tampered(agent_bundle().data, marker))
        assert agent.call("facts", timeout=60, **request)["exists"] is False
        assert not marker.exists(), "the tampered agent was run"
        assert path.read_bytes() == agent_bundle().data
    finally:
        agent.close()
        t.close()


@pytest.mark.parametrize("weak", ["writable by others", "another owner", "a link"])
def test_a_local_cache_dir_others_can_change_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        weak: str) -> None:
    """The controller's cache dir must be this user's own: writable by others, owned by another account or a link
    to elsewhere, it is refused with a message that says what to fix, and nothing is written there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    d = tmp_path / "cache" / "upgrader"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    d.parent.mkdir()
    if weak == "a link":
        d.symlink_to(elsewhere)
    else:
        d.mkdir(mode=0o700)
        if weak == "writable by others":
            d.chmod(0o777)
        else:
            os.chown(d, 65534, 65534)
    with pytest.raises(TransportError) as e:
        local_copy(host="local")
    assert f"the agent's cache directory {d} is not a directory of this user" in str(e.value)
    assert "fix its owner and mode (0700)" in str(e.value)
    assert list(elsewhere.iterdir()) == [] and (weak == "a link" or list(d.iterdir()) == [])


def test_every_action_of_the_table_resolves_to_its_function() -> None:
    """The agent imports an action's module on first use: every name of its table names a function that exists
    (a typo would otherwise surface only when a host first asks for that action)."""
    from upgrader.hostagent import main

    for name, (module, function) in main.OPS.items():
        op = main.action(name)
        assert callable(op) and op.__name__ == function and op.__module__.endswith("." + module), name
    assert main.action("no_such_action") is None
