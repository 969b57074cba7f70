"""Diagnostics bundle and severity levels: a real failing upgrade (a sample release that cannot start) writes a
redacted bundle with the journal, log tails, versions and a manifest, classified level 1 with the policy's 2 h;
--obfuscate hides host names and addresses; the severity rules, redaction and the policy key, table-driven."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import plan_to, run_plan, upgrader

from upgrader.commands.demo import Sandbox
from upgrader.redaction import Obfuscator, redact
from upgrader.severity import classify_host, classify_run
from version_policy import PolicyError, load_policy

PLANTED = "Secr3tPlanted"


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


@pytest.fixture
def failed_run(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> tuple[Sandbox, str, str]:
    """7.0.4.1 -> 7.0.4.6 (cannot start) with a password planted in the config and the log; rolled back (exit 1)."""
    box = sandbox
    with open(box.install_dir / "conf" / "server.conf", "a") as f:
        f.write(f"password={PLANTED}\n")
    with open(box.install_dir / "logs" / "server.log", "a") as f:
        f.write(f"2026-11-26T09:59:00 INFO jdbc:mysql://app:{PLANTED}@db.internal:3306/orders token={PLANTED}\n")
    rc, plan = plan_to(box, "7.0.4.6")
    assert rc == 0
    capsys.readouterr()
    assert run_plan(box, plan) == 1
    out = capsys.readouterr().out
    (run_id,) = [p.name for p in (box.root / "runs").iterdir()]
    return box, run_id, out


def test_a_service_that_cannot_start_writes_a_redacted_bundle_classified_level_1(failed_run) -> None:
    """The bundle holds the journal, log tail, versions and a manifest of every member with its sha256 and
    collector; the planted password is in no member; the summary names the bundle, level 1 and 2 h."""
    box, run_id, out = failed_run
    bundle = box.root / "runs" / run_id / f"diagnostics-{run_id}.tar.gz"
    assert bundle.is_file()
    assert f"diagnostics bundle: {bundle}" in out.replace("\n", "")
    assert "severity level 1" in out and "response within 2 h" in out
    files = members(bundle)
    for name in ("manifest.json", "severity.json", "run/journal.jsonl", "run/plan.json", "run/result.json",
                 "hosts/app-01/phases.json", "hosts/app-01/versions.json", "hosts/app-01/platform.json",
                 "hosts/app-01/configs.json", "hosts/app-01/config/conf/server.conf",
                 "hosts/app-01/logs/logs/server.log.tail"):
        assert name in files, name
    for name, data in files.items():
        assert PLANTED.encode() not in data, f"{name} leaks the planted password"
    assert b"password=***" in files["hosts/app-01/config/conf/server.conf"]
    assert b"jdbc:mysql://app:***@" in files["hosts/app-01/logs/logs/server.log.tail"]
    assert b"cannot start: configuration rejected" in files["hosts/app-01/logs/logs/server.log.tail"]
    journal = [json.loads(line) for line in files["run/journal.jsonl"].splitlines()]
    assert any(r["rec"]["phase"] == "observe" and r["rec"]["event"] == "failed" for r in journal)
    versions = json.loads(files["hosts/app-01/versions.json"])
    assert versions == {"current": "7.0.4.1", "target": "7.0.4.6", "running_at_end": "7.0.4.1", "found_now": "7.0.4.1"}
    manifest = json.loads(files["manifest.json"])
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == set(files) - {"manifest.json"}
    for name, entry in listed.items():
        assert entry["sha256"] == hashlib.sha256(files[name]).hexdigest() and entry["collector"]
    assert listed["hosts/app-01/logs/logs/server.log.tail"]["collector"] == "logs"
    assert manifest["redacted"] is True and manifest["obfuscated"] is False
    severity = json.loads(files["severity.json"])
    assert severity["level"] == 1 and severity["response_hours"] == 2
    assert "process" in severity["rule"] and "not running" in severity["evidence"]
    platform = json.loads(files["hosts/app-01/platform.json"])
    assert platform["facts"]["kernel"] and "net.core.somaxconn" in platform["facts"]["sysctl"]
    result = json.loads((box.root / "runs" / run_id / "result.json").read_text())
    assert result["diagnostics"]["bundle"] == str(bundle) and result["diagnostics"]["severity"]["level"] == 1


def test_diagnostics_command_obfuscates_host_names_and_addresses_keeping_the_key_outside(failed_run, capsys,
                                                                                         tmp_path: Path) -> None:
    """`upgrader diagnostics RUN --obfuscate`: app-01 and 127.0.0.1 are in no member, versions are kept, and the
    mapping is written beside the bundle (mode 0600), not into it."""
    box, run_id, _ = failed_run
    out = tmp_path / "support.tar.gz"
    capsys.readouterr()
    assert upgrader(box, "diagnostics", run_id, "--obfuscate", "-o", str(out), "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bundle"] == str(out) and info["severity"]["level"] == 1
    files = members(out)
    for name, data in files.items():
        assert b"app-01" not in data and b"127.0.0.1" not in data and PLANTED.encode() not in data, name
        assert "app-01" not in name
    assert "hosts/host1/versions.json" in files
    assert json.loads(files["hosts/host1/versions.json"])["target"] == "7.0.4.6"
    key = Path(info["obfuscation_key"])
    mapping = json.loads(key.read_text())
    assert mapping["app-01"] == "host1" and mapping["127.0.0.1"].startswith("ip-")
    assert key.stat().st_mode & 0o777 == 0o600 and key.name not in " ".join(files)


def test_diagnostics_of_an_unknown_run_is_bad_input(sandbox: Sandbox, capsys) -> None:
    """No such run: exit 2 naming the runs directory."""
    capsys.readouterr()
    assert upgrader(sandbox, "diagnostics", "20990101T000000Z-000000") == 2
    assert "no run '20990101T000000Z-000000'" in capsys.readouterr().err


def _host(outcome: str, *phases: tuple[str, str, str]) -> dict[str, Any]:
    return {"host": "h", "outcome": outcome, "error": None,
            "phases": [{"phase": p, "status": s, "detail": d} for p, s, d in phases]}


TYPES = {"process": "process", "tcp": "tcp", "health": "http", "log": "log", "smoke": "command"}
STOP = ("stop", "ok", "stopped")


@pytest.mark.parametrize("host, level", [
    (_host("committed", STOP), None),
    (_host("not_started"), None),
    (_host("rolled_back", STOP, ("start", "failed", "start command exited 1")), 1),
    (_host("rolled_back", STOP, ("observe", "failed", "never healthy after start: process: pid None not running")), 1),
    (_host("rolled_back", STOP, ("observe", "failed",
                                 "healthy at first, then failed during the observation window: process: pid 7 not "
                                 "running")), 1),
    (_host("rolled_back", STOP, ("observe", "failed", "never healthy after start: health: answered 500")), 1),
    (_host("rolled_back", STOP, ("observe", "failed", "never healthy after start: log: logs/server.log: ERROR "
                                                      "Cannot create JDBC connection to jdbc/orders")), 1),
    (_host("rolled_back", STOP, ("observe", "failed", "healthy at first, then failed during the observation "
                                                      "window: health: answered 503")), 2),
    (_host("rolled_back", STOP, ("observe", "failed", "never healthy after start: log: logs/server.log: WARN x")), 3),
    (_host("rolled_back", STOP, ("observe", "failed", "never healthy after start: smoke: command exited 1")), 3),
    (_host("rolled_back", STOP, ("hook:after_install", "failed", "hook 'x' exited 1")), 3),
    (_host("unchanged", ("stop", "failed", "service did not stop within 5s")), 3),
    (_host("unchanged", ("preflight", "failed", "only 3 MiB free")), 4),
    (_host("needs_person", ("preflight", "failed", "host is locked by run x")), 4),
    (_host("needs_person", STOP, ("observe", "failed", "never healthy after start: tcp: port 1 closed"),
           ("rollback", "failed", "restored tree differs")), 1),
])
def test_severity_rules(host: dict[str, Any], level: int | None) -> None:
    """Pure: each failure maps to the documented level (start failure, dead process, data source -> 1; flapping -> 2;
    non-core probe, hook, stop -> 3; before the service was touched -> 4)."""
    got = classify_host(host, TYPES)
    assert (got["level"] if got else None) == level


def test_a_runs_level_is_its_most_severe_hosts_with_the_policy_response_time() -> None:
    """Two failed hosts, levels 3 and 2: the run is level 2 with the second response target."""
    result = {"hosts": [{**_host("rolled_back", STOP, ("hook:after_start", "failed", "x")), "host": "a"},
                        {**_host("rolled_back", STOP, ("observe", "failed", "healthy at first, then failed during "
                                                                            "the observation window: tcp: closed")),
                         "host": "b"}]}
    run = classify_run(result, {"a": TYPES, "b": TYPES}, (1.0, 3.0, 5.0, 7.0))
    assert run is not None and run["level"] == 2 and run["host"] == "b" and run["response_hours"] == 3.0
    assert [h["level"] for h in run["hosts"]] == [3, 2]
    assert classify_run({"hosts": [_host("committed")]}) is None


@pytest.mark.parametrize("text, secret", [
    ("admin_password = hunter2", "hunter2"),
    ("password=Secr3t", "Secr3t"),
    ("db.passwd: p4ss", "p4ss"),
    ("<password>x1y2</password>", "x1y2"),
    ('<datasource user="app" password="s3cr" url="x"/>', "s3cr"),
    ("url=jdbc:mysql://app:pw123@db:3306/x?user=a&password=b2c3", "pw123"),
    ("url=jdbc:mysql://db/x?user=a&password=b2c3", "b2c3"),
    ("jdbc:oracle:thin:scott/tiger9@host:1521:orcl", "tiger9"),
    ('{"token": "abc.def.ghi"}', "abc.def.ghi"),
    ("api_key: AKIA1234567", "AKIA1234567"),
    ("client_secret=zzz999", "zzz999"),
    ("Authorization: Bearer eyJhbGci", "eyJhbGci"),
    ("https://user:hunter2@example.com/x", "hunter2"),
    ("-----BEGIN PRIVATE KEY-----\nMIIEv\n-----END PRIVATE KEY-----", "MIIEv"),
])
def test_redaction_hides_each_kind_of_secret(text: str, secret: str) -> None:
    """Pure: the secret is gone, a *** stands in its place."""
    out = redact(text)
    assert secret not in out and "***" in out


@pytest.mark.parametrize("text", ["port = 18080", "bind = 127.0.0.1", "version 7.0.4.9_M1", '"key": null',
                                  "sha256 0f1e2d"])
def test_redaction_keeps_what_is_not_a_secret(text: str) -> None:
    assert redact(text) == text


def test_obfuscation_is_consistent_and_keeps_versions_and_sysctl_names() -> None:
    """Same name, same stand-in; an address that is a listed version stays; vm.* is not the host 'vm'."""
    ob = Obfuscator(["app-01", "vm", "db.example.com"], keep=["7.0.4.1"])
    out = ob("app-01 10.1.2.3 app-01 10.1.2.3 10.1.2.4 7.0.4.1 vm.swappiness on vm db.example.com /x/app-01/y")
    assert out == ("host1 ip-1 host1 ip-1 ip-2 7.0.4.1 vm.swappiness on host3 host2 /x/host1/y")


@pytest.mark.parametrize("text, words", [
    ("severity: {response_hours: {1: 0}}", "level 1 has 0"),
    ("severity: {response_hours: {5: 1}}", "5 is not a level"),
    ("severity: {response_hours: 2}", "a mapping of severity levels"),
    ("severity: {respons_hours: {1: 2}}", "unknown key"),
])
def test_policy_response_hours_are_validated(tmp_path: Path, text: str, words: str) -> None:
    """severity.response_hours: levels 1-4 to hours; a bad value is an error naming the file and key."""
    path = tmp_path / "policy.yaml"
    path.write_text(text + "\n")
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    assert words in str(e.value) and str(path) in str(e.value) and "severity." in str(e.value)


def test_policy_response_hours_default_and_override(tmp_path: Path) -> None:
    """Defaults 2, 4, 8, 48 h; a level left out keeps its default."""
    assert [load_policy().response_hours(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 48]
    path = tmp_path / "policy.yaml"
    path.write_text("severity:\n  response_hours: {1: 1, 4: 24}\n")
    assert [load_policy(path).response_hours(n) for n in (1, 2, 3, 4)] == [1, 4, 8, 24]
