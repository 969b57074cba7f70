"""The playbook's ``process:`` selector (the server found by its command line, no pid file), its port cross-check and
the version read from inside a jar, on real processes and files without a JVM (fast); and the playbook errors for
the new keys, each naming the file and key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from hoststate import take_lock
from upgrader.hostagent.main import handle
from upgrader.core.errors import InputError
from upgrader.core.playbook import load_playbook, shipped_playbooks_dir

# a process whose command line reads like Tomcat's server JVM: python -c CODE <the arguments catalina.sh gives java>
LISTEN = ("import socket, sys, time\n"
          "port = int(sys.argv[1])\n"
          "s = socket.socket(); s.bind(('127.0.0.1', port)); s.listen() if port else None\n"
          "print('ready', flush=True); time.sleep(120)\n")


def _spawn(port: int, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", LISTEN, str(port), *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for p in started:
            p.kill()
            p.wait()


def _prove(install: Path, port: int) -> dict[str, object]:
    spec = load_playbook(shipped_playbooks_dir() / "tomcat.yaml").render(
        {"install_dir": str(install), "http_port": str(port), "shutdown_port": "-1"})
    reply = handle({"op": "prove", "install_dir": str(install), "state_dir": None,
                          "probes": [spec["observe"]["probes"][0]]})
    assert reply["ok"], reply
    (result,) = reply["result"]["probes"]
    return result


def test_the_server_is_found_by_its_command_line_through_a_link_and_not_its_stop_jvm(
        tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    """`-Dcatalina.base=<install>` + Bootstrap + last argument `start`: found, also when the server was started
    through a symlink to the install; a `Bootstrap stop` JVM (shutdown.sh's) or another install's server is not.
    An inventory that names the install through the link is refused (issue 14: the install dir is never a link)."""
    install = tmp_path / "tomcat"
    install.mkdir()
    (tmp_path / "current").symlink_to(install)
    port = _free_port()
    procs.append(_spawn(0, f"-Dcatalina.base={install}", "org.apache.catalina.startup.Bootstrap", "stop"))
    procs.append(_spawn(0, f"-Dcatalina.base={tmp_path / 'other'}", "org.apache.catalina.startup.Bootstrap", "start"))
    result = _prove(install, port)
    assert result["ok"] is False and "not running: no process whose command line holds" in str(result["detail"])
    for base in (f"{install}/", f"{tmp_path / 'current'}"):
        server = _spawn(port, f"-Dcatalina.base={base}", "org.apache.catalina.startup.Bootstrap", "start")
        procs.append(server)
        result = _prove(install, port)
        assert result["ok"] is True, result
        assert result["detail"] == f"pid {server.pid} alive (found by its command line)"
        server.kill()
        server.wait()
        port = _free_port()
    refused = handle({"op": "prove", "install_dir": str(tmp_path / "current"), "state_dir": None, "probes": []})
    assert refused["ok"] is False and refused.get("kind") == "unsafe_path", refused


def test_a_port_held_by_another_process_fails_the_cross_check(tmp_path: Path,
                                                              procs: list[subprocess.Popen[str]]) -> None:
    """The JVM found by its command line does not hold the HTTP port; some other process does: the probe fails and
    names that process by pid and uids, never by its command line (the port may be the service account's choice)."""
    install = tmp_path / "tomcat"
    install.mkdir()
    port = _free_port()
    procs.append(_spawn(0, f"-Dcatalina.base={install}", "org.apache.catalina.startup.Bootstrap", "start"))
    squatter = _spawn(port, "squatter")
    procs.append(squatter)
    result = _prove(install, port)
    assert result["ok"] is False
    uid = os.getuid()
    assert f"port {port} is held by pid {squatter.pid} (uid {uid}/{uid}/{uid})" in str(result["detail"]), result
    assert "squatter" not in str(result["detail"]), result


def test_the_version_is_read_from_inside_the_jar_without_running_anything(tmp_path: Path) -> None:
    """`version: {file: lib/catalina.jar, member: ...ServerInfo.properties}`; a corrupt jar is a clear reason."""
    install = tmp_path / "tomcat"
    (install / "lib").mkdir(parents=True)
    with zipfile.ZipFile(install / "lib" / "catalina.jar", "w") as z:
        z.writestr("org/apache/catalina/util/ServerInfo.properties",
                   "server.info=Apache Tomcat/10.1.60 (Debian)\nserver.number=10.1.60.0\n")
    source = load_playbook(shipped_playbooks_dir() / "tomcat.yaml").spec["version"]

    def facts() -> dict[str, object]:
        reply = handle({"op": "facts", "install_dir": str(install), "state_dir": None, "version_source": source})
        assert reply["ok"], reply
        return reply["result"]

    assert facts()["version"] == "10.1.60.0"
    (install / "lib" / "catalina.jar").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    got = facts()
    assert got["version"] is None and "lib/catalina.jar holds no org/apache/catalina/util/ServerInfo.properties" \
        in str(got["version_error"])
    (install / "lib" / "catalina.jar").write_bytes(b"not a zip")
    assert "lib/catalina.jar is not a readable archive" in str(facts()["version_error"])


@pytest.mark.parametrize("change, key, words", [
    ({"process": {"cmdline_last": "start"}}, "process.cmdline_contains", "required key is missing"),
    ({"process": {"cmdline_contains": ["x"], "color": 1}}, "process.color", ""),
    ({"process": None, "probes": [{"type": "process"}]}, "observe.probes[0].pid_file", "a 'process:' section"),
    ({"version": {"file": "lib/catalina.jar", "member": "/etc/passwd"}}, "version.member", "inside the archive"),
    ({"probes": [{"type": "log", "file": "logs/*/catalina.log", "absent": "x"}]}, "observe.probes[0].file",
     "only the file name may hold a pattern"),
])
def test_playbook_errors_name_the_file_and_key(tmp_path: Path, change: dict[str, object], key: str,
                                               words: str) -> None:
    import yaml  # type: ignore[import-untyped]

    spec = yaml.safe_load((shipped_playbooks_dir() / "tomcat.yaml").read_text())
    for k, v in change.items():
        if k == "probes":
            spec["observe"]["probes"] = v
        elif v is None:
            del spec[k]
        else:
            spec[k] = v
    path = tmp_path / "tomcat.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(InputError) as e:
        load_playbook(path)
    assert e.value.path == str(path) and e.value.key == key, (e.value.path, e.value.key, str(e.value))
    assert words in str(e.value)


def test_a_stop_script_that_returns_early_is_waited_for(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    """stop with the selector: the command returns at once, the 'JVM' exits two tenths of a second later (as
    shutdown.sh and Tomcat do): the agent reports stopped only once it is gone and its port is closed."""
    install = tmp_path / "tomcat"
    (install / "bin").mkdir(parents=True)
    port = _free_port()
    server = _spawn(port, f"-Dcatalina.base={install}", "org.apache.catalina.startup.Bootstrap", "start")
    procs.append(server)
    (install / "bin" / "shutdown.sh").write_text(f"#!/bin/sh\n(sleep 0.2; kill {server.pid}) >/dev/null 2>&1 &\n")
    (install / "bin" / "shutdown.sh").chmod(0o755)
    spec = load_playbook(shipped_playbooks_dir() / "tomcat.yaml").render(
        {"install_dir": str(install), "http_port": str(port), "shutdown_port": "-1"})
    base = {"install_dir": str(install), "state_dir": None}
    assert take_lock(lambda op, **req: handle({"op": op, **base, **req}), "stop-early-1")["ok"]
    reply = handle({"op": "stop", **base, "run_id": "stop-early-1", "stop": spec["stop"]})
    assert reply["ok"], reply
    assert reply["result"]["pid"] == server.pid and reply["result"]["escalated"] is None
    assert server.poll() is not None or not Path(f"/proc/{server.pid}").exists() or \
        Path(f"/proc/{server.pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
