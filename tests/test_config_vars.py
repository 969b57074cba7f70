"""Playbook ``vars_from`` (config_vars) and the likely fixes of unproven probes (probe_proof): validation names the
file and key, precedence is defaults < configuration < inventory < --var, the real agent reads regex and XML values
beneath the install dir only, and each failing probe gets the fix its cause suggests. Table-driven where pure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from upgrader.core.config_vars import merge_variables, read_config_vars
from upgrader.core.errors import InputError
from upgrader.core.playbook import load_playbook, shipped_playbooks_dir
from upgrader.core.probe_proof import failures, likely_fix
from upgrader.fleet.transport import AgentClient
from upgrader.fleet.transport.local import LocalTransport

BASE = (shipped_playbooks_dir() / "sample-middleware.yaml").read_text()


def playbook_with(tmp_path: Path, vars_from: Any) -> Path:
    """The shipped sample playbook with another vars_from block."""
    spec = yaml.safe_load(BASE)
    spec["vars_from"] = vars_from
    p = tmp_path / "pb.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p


@pytest.mark.parametrize("block, key, words", [
    ({"port": {"file": "/etc/passwd", "pattern": "x"}}, "vars_from.port.file", "relative"),
    ({"port": {"file": "../x.conf", "pattern": "x"}}, "vars_from.port.file", "inside it"),
    ({"port": {"file": "conf/x", "pattern": "("}}, "vars_from.port.pattern", "regular expression"),
    ({"port": {"file": "conf/x", "pattern": "(a)(b)"}}, "vars_from.port.pattern", "one capture"),
    ({"port": {"file": "conf/x"}}, "vars_from.port", "exactly one of"),
    ({"port": {"file": "conf/x", "pattern": "a", "xml": "b"}}, "vars_from.port", "exactly one of"),
    ({"port": {"file": "conf/x", "xml": "[["}}, "vars_from.port.xml", "element path"),
    ({"port": {"file": "conf/x", "pattern": "a", "typo": 1}}, "vars_from.port.typo", "unknown key"),
    ({"9port": {"file": "conf/x", "pattern": "a"}}, "vars_from.9port", "variable name"),
])
def test_a_bad_vars_from_is_refused_naming_the_file_and_key(tmp_path: Path, block: Any, key: str, words: str) -> None:
    """Each mistake in vars_from is an InputError (exit 2) naming the playbook file, the key and what is wrong."""
    path = playbook_with(tmp_path, block)
    with pytest.raises(InputError) as e:
        load_playbook(path)
    assert str(path) in str(e.value) and key in str(e.value) and words in str(e.value), str(e.value)


@pytest.mark.parametrize("read, explicit, want_port, used", [
    ({"port": {"file": "c", "value": "18181", "line": 2}}, {}, "18181", True),              # config beats default
    ({"port": {"file": "c", "value": "18181", "line": 2}}, {"port": "9000"}, "9000", False),  # explicit wins
    ({"port": {"file": "c", "error": "no line matches"}}, {}, "18080", False),             # default stays
    ({}, {"port": "7000"}, "7000", None),                                                  # nothing read
])
def test_explicit_values_win_over_the_configuration_which_wins_over_defaults(
        read: dict[str, Any], explicit: dict[str, str], want_port: str, used: bool | None) -> None:
    """Precedence: the playbook's vars < vars_from < inventory vars and --var; the record says what was used."""
    values, record = merge_variables({"port": "18080"}, read, explicit)
    assert values["port"] == want_port
    assert (record["port"]["used"] if record else None) == used
    if record:
        assert record["port"]["value_used"] == want_port


def read(install: Path, specs: dict[str, Any]) -> dict[str, Any]:
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        return read_config_vars(agent, install_dir=str(install), state_dir=None, vars_from=specs)
    finally:
        agent.close()
        transport.close()


def test_the_agent_reads_regex_and_xml_values_and_refuses_entities_and_links_out(tmp_path: Path) -> None:
    """The real agent: a regex value with its line, the first HTTP/1.1 connector of a server.xml (not the commented
    one), the <Server port>, a file declaring entities not read, a link out of the install not followed."""
    install = tmp_path / "install"
    (install / "conf").mkdir(parents=True)
    (install / "conf" / "server.conf").write_text("# c\nport = 18181\n")
    (install / "conf" / "server.xml").write_text(
        '<?xml version="1.0"?>\n<Server port="8005" shutdown="SHUTDOWN">\n <Service name="Catalina">\n'
        '  <!-- <Connector port="9999" protocol="HTTP/1.1"/> -->\n'
        '  <Connector port="8009" protocol="AJP/1.3"/>\n  <Connector port="8081" protocol="HTTP/1.1"/>\n'
        ' </Service>\n</Server>\n')
    (install / "conf" / "evil.xml").write_text('<!DOCTYPE x [<!ENTITY a "1">]><x port="&a;"/>')
    (tmp_path / "outside.conf").write_text("port = 1\n")
    (install / "conf" / "link.conf").symlink_to(tmp_path / "outside.conf")
    got = read(install, {
        "port": {"file": "conf/server.conf", "pattern": r"^port\s*=\s*(\d+)"},
        "http_port": {"file": "conf/server.xml", "xml": ["./Service/Connector[@protocol='HTTP/1.1']"],
                      "attribute": "port"},
        "shutdown_port": {"file": "conf/server.xml", "xml": ["."], "attribute": "port"},
        "evil": {"file": "conf/evil.xml", "xml": ["."], "attribute": "port"},
        "linked": {"file": "conf/link.conf", "pattern": r"^port\s*=\s*(\d+)"},
        "missing": {"file": "conf/none.conf", "pattern": "x"},
    })
    assert got["port"] == {"file": "conf/server.conf", "value": "18181", "line": 2}
    assert got["http_port"]["value"] == "8081" and got["shutdown_port"]["value"] == "8005"
    assert "entities" in got["evil"]["error"] and "value" not in got["evil"]
    assert "passes through the symlink conf/link.conf" in got["linked"]["error"] and "value" not in got["linked"]
    assert "No such file" in got["missing"]["error"]


@pytest.mark.parametrize("probe, record, detail, fix", [
    ({"type": "tcp", "port": "18080"}, {"port": {"file": "c", "value": "18181", "used": False, "value_used": "18080"}},
     "port 18080 closed", "fix_explicit"),
    ({"type": "tcp", "port": "18181"}, {"port": {"file": "c", "value": "18181", "used": True, "value_used": "18181"}},
     "port 18181 closed", "fix_config"),
    ({"type": "tcp", "port": "18080"}, {"port": {"file": "c", "error": "no line", "used": False,
                                                 "value_used": "18080"}}, "port 18080 closed", "fix_default"),
    ({"type": "tcp", "port": "8088"}, {}, "port 8088 closed", "fix_port"),
    ({"type": "http", "url": "http://127.0.0.1:1/version"},
     {"port": {"file": "c", "value": "1", "used": True, "value_used": "1"}}, "http://127.0.0.1:1/version answered "
                                                                            "'x', expected 'y'", "fix_http"),
    ({"type": "http", "url": "http://127.0.0.1:2/ready"},
     {"port": {"file": "c", "value": "1", "used": True, "value_used": "1"}}, "http probe: timed out", "fix_no_answer"),
    ({"type": "process", "pid_file": "temp/catalina.pid"}, {}, "pid None not running", "fix_process"),
])
def test_each_failing_probe_gets_the_fix_its_cause_suggests(probe: dict[str, Any], record: dict[str, Any],
                                                             detail: str, fix: str) -> None:
    """Pure: a port given against the config, a config port nobody answers on, a default port, an answer that
    differs, a missing pid file: each names its own likely fix."""
    assert likely_fix(probe, record, detail)[0] == fix


def test_a_service_that_does_not_run_at_all_is_named_as_down_not_misconfigured() -> None:
    """Process gone and every judged probe failing: one fix, start the service (the log probe is judged later)."""
    probes = [{"type": "process", "pid_file": "run/p"}, {"type": "tcp", "port": "1"}, {"type": "log", "file": "l"}]
    results = [{"probe": "process", "ok": False, "detail": "pid None not running"},
               {"probe": "tcp", "ok": False, "detail": "port 1 closed"},
               {"probe": "log", "ok": True, "skipped": "later"}]
    assert {f.fix for f in failures(probes, results, {})} == {"fix_down"}
