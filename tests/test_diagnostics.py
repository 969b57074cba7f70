"""Diagnostics bundle and severity levels: a real failing upgrade (a sample release that cannot start) writes a
redacted bundle with the journal, log tails, versions and a manifest, classified level 3 (rolled back, the old
version healthy) with the policy's 8 h;
--obfuscate hides host names and addresses; the severity rules, redaction and the policy key, table-driven."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from conftest import fault_env, plan_to, run_plan, run_with_cancel, upgrader

from upgrader.cli.commands.demo import Sandbox
from upgrader.cli.commands.diagnostics import needs_bundle
from upgrader.core.engine import CANCELLED
from upgrader.core.playbook import shipped_playbooks_dir
from upgrader.audit.redaction import Obfuscator, redact
from upgrader.customer.severity import classify_host, classify_run, is_cancelled
from version_policy import PolicyError, load_policy

PLANTED = "Secr3tPlanted"
KEYSTORE = b"\xfe\xed\xfe\xed\x00\x00\x00\x02" + PLANTED.encode() + b"\x00binary-keystore"
SECURITY = f'<users><user name="admin" password="{PLANTED}" role="admin"/></users>\n'


def sample_playbook(box: Sandbox, change: Any) -> None:
    """The shipped sample playbook, changed by ``change(spec)``, beside the sandbox's inventory (plan picks it)."""
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())
    change(spec)
    (box.root / "playbooks").mkdir(exist_ok=True)
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def plant_secret_files(box: Sandbox) -> None:
    """A key store (binary, with NUL bytes) and a security/ file, both holding the planted password."""
    (box.install_dir / "conf" / "security").mkdir()
    (box.install_dir / "conf" / "security" / "users.xml").write_text(SECURITY)
    (box.install_dir / "conf" / "server.jks").write_bytes(KEYSTORE)
    (box.install_dir / "conf" / "cache.bin").write_bytes(b"plain\x00" + PLANTED.encode())


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


def test_a_service_that_cannot_start_writes_a_redacted_bundle_classified_level_3(failed_run) -> None:
    """The bundle holds the journal, log tail, versions and a manifest of every member with its sha256 and
    collector; the planted password is in no member; the summary names the bundle and level 3 (the upgrade failed
    and was rolled back, the old version is healthy: a workaround exists) with its three response times."""
    box, run_id, out = failed_run
    bundle = box.root / "runs" / run_id / f"diagnostics-{run_id}.tar.gz"
    assert bundle.is_file()
    assert f"diagnostics bundle: {bundle}" in out.replace("\n", "")
    assert "Severity level 3, moderate (response level: important)" in out
    assert "within 8 h, first call-back within 4 h, initial action plan within 1 working day" in out
    assert "standard hours only: weekdays 09:00–18:00 Beijing time" in out
    files = members(bundle)
    for name in ("manifest.json", "severity.json", "run/journal.jsonl", "run/plan.json", "run/result.json",
                 "hosts/app-01/phases.json", "hosts/app-01/versions.json", "hosts/app-01/platform.json",
                 "hosts/app-01/configs.json", "hosts/app-01/logs/logs/server.log.tail"):
        assert name in files, name
    for name, data in files.items():
        assert PLANTED.encode() not in data, f"{name} leaks the planted password"
    conf = box.install_dir / "conf" / "server.conf"
    assert json.loads(files["hosts/app-01/configs.json"]) == [
        {"path": "conf/server.conf", "sha256": hashlib.sha256(conf.read_bytes()).hexdigest(),
         "size": conf.stat().st_size, "mtime": conf.stat().st_mtime}]
    assert not [n for n in files if "/config/" in n], "no playbook inspect.configs: digests only, no config text"
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
    assert severity["level"] == 3 and severity["response_hours"] == 8
    assert "rolled back" in severity["rule"] and "not running" in severity["evidence"]
    platform = json.loads(files["hosts/app-01/platform.json"])
    assert platform["facts"]["kernel"] and "net.core.somaxconn" in platform["facts"]["sysctl"]
    result = json.loads((box.root / "runs" / run_id / "result.json").read_text())
    assert result["diagnostics"]["bundle"] == str(bundle) and result["diagnostics"]["severity"]["level"] == 3
    assert result["severity"]["level"] == 3


def test_preserved_key_stores_and_security_files_are_digests_only_by_default(sandbox: Sandbox, capsys) -> None:
    """As TongWeb's playbook does, the config paths preserved include conf/security and a key store: with no
    inspect.configs the bundle holds their sha256, size and mtime, and not one byte of their text."""
    box = sandbox
    plant_secret_files(box)
    sample_playbook(box, lambda spec: spec["preserve"].extend(
        [{"path": "conf/security", "kind": "config"}, {"path": "conf/server.jks", "kind": "config"}]))
    rc, plan = plan_to(box, "7.0.4.6")
    assert rc == 0 and run_plan(box, plan) == 1
    (run_id,) = [p.name for p in (box.root / "runs").iterdir()]
    files = members(box.root / "runs" / run_id / f"diagnostics-{run_id}.tar.gz")
    configs = {c["path"]: c for c in json.loads(files["hosts/app-01/configs.json"])}
    assert set(configs) == {"conf/server.conf", "conf/security/users.xml", "conf/server.jks"}
    assert configs["conf/server.jks"]["sha256"] == hashlib.sha256(KEYSTORE).hexdigest()
    assert configs["conf/security/users.xml"]["size"] == len(SECURITY.encode()) and configs["conf/server.jks"]["mtime"]
    assert not [n for n in files if "/config/" in n]
    for name, data in files.items():
        assert PLANTED.encode() not in data and b"binary-keystore" not in data and b"<users>" not in data, name


def test_config_text_only_for_files_the_playbook_names_and_never_for_secret_or_binary_files(
        sandbox: Sandbox, capsys) -> None:
    """inspect.configs names server.conf, the security dir, a key store and a binary file: server.conf's text is
    in the bundle, redacted; the others are digests with the reason their text was withheld."""
    box = sandbox
    plant_secret_files(box)
    with open(box.install_dir / "conf" / "server.conf", "a") as f:
        f.write(f"password={PLANTED}\n")
    sample_playbook(box, lambda spec: spec.update(
        inspect={"configs": ["conf/server.conf", "conf/security", "conf/server.jks", "conf/cache.bin"]}))
    rc, plan = plan_to(box, "7.0.4.6")
    assert rc == 0 and run_plan(box, plan) == 1
    (run_id,) = [p.name for p in (box.root / "runs").iterdir()]
    files = members(box.root / "runs" / run_id / f"diagnostics-{run_id}.tar.gz")
    assert [n for n in files if "/config/" in n] == ["hosts/app-01/config/conf/server.conf"]
    assert b"password=***" in files["hosts/app-01/config/conf/server.conf"]
    configs = {c["path"]: c for c in json.loads(files["hosts/app-01/configs.json"])}
    assert "security" in configs["conf/security/users.xml"]["text_withheld"]
    assert "key store" in configs["conf/server.jks"]["text_withheld"]
    assert "NUL" in configs["conf/cache.bin"]["text_withheld"]
    assert configs["conf/server.jks"]["sha256"] == hashlib.sha256(KEYSTORE).hexdigest()
    for name, data in files.items():
        assert PLANTED.encode() not in data and b"binary-keystore" not in data and b"<users>" not in data, name


def test_diagnostics_command_obfuscates_host_names_and_addresses_keeping_the_key_outside(failed_run, capsys,
                                                                                         tmp_path: Path) -> None:
    """`upgrader diagnostics RUN --obfuscate --domain corp.example.com`: app-01 (in any case, as an FQDN), this
    machine's and the host's own hostname and FQDN, the domain, 127.0.0.1 and IPv6 addresses are in no member,
    versions are kept, and the mapping is written beside the bundle (mode 0600), not into it."""
    import socket

    box, run_id, _ = failed_run
    with open(box.install_dir / "logs" / "server.log", "a") as f:
        f.write("2026-11-26T10:30:00 WARN peer APP-01.corp.example.com [fe80::1%eth0]:7001 ::1 "
                "ldap.corp.example.com down at 10:30:00\n")
    out = tmp_path / "support.tar.gz"
    capsys.readouterr()
    assert upgrader(box, "diagnostics", run_id, "--obfuscate", "--domain", "corp.example.com", "-o", str(out),
                    "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bundle"] == str(out) and info["severity"]["level"] == 3
    files = members(out)
    # this machine's name stands alone nowhere (a test machine called "vm" keeps vm.swappiness, by design)
    own = [re.compile(rf"(?i)(?<![\w-]){re.escape(n)}(?![\w-]|\.[\w-])")
           for n in {socket.gethostname(), socket.getfqdn()} - {"localhost"}]
    for name, data in files.items():
        text = data.decode().lower()
        for real in ("app-01", "127.0.0.1", "fe80::1", "corp.example.com", PLANTED.lower()):
            assert real not in text and real not in name.lower(), (name, real)
        assert not [p.pattern for p in own if p.search(text) or p.search(name)], name
    assert "hosts/host1/versions.json" in files
    assert json.loads(files["hosts/host1/versions.json"])["target"] == "7.0.4.6"
    platform = json.loads(files["hosts/host1/platform.json"])
    assert platform["facts"]["hostname"].startswith("host")
    tail = files["hosts/host1/logs/logs/server.log.tail"].decode()
    assert "host1.domain1 [ip6-" in tail and "ldap.domain1 down at 10:30:00" in tail
    key = Path(info["obfuscation_key"])
    mapping = json.loads(key.read_text())
    assert mapping["app-01"] == "host1" and mapping["127.0.0.1"].startswith("ip-")
    assert mapping["corp.example.com"] == "domain1" and mapping["fe80::1"].startswith("ip6-")
    assert socket.gethostname().split(".")[0].lower() in mapping
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


ROLLBACK_OK = (("rollback", "ok", "restored"), ("start", "ok", "started"), ("observe", "ok", "healthy"))


@pytest.mark.parametrize("host, level", [
    (_host("committed", STOP), None),
    (_host("not_started"), None),
    (_host("restored", *ROLLBACK_OK), None),
    # the upgrade failed, whatever way, and the old version runs healthy again: a workaround exists -> 3
    (_host("rolled_back", STOP, ("start", "failed", "start command exited 1"), *ROLLBACK_OK), 3),
    (_host("rolled_back", STOP, ("observe", "failed", "never healthy after start: process: pid None not running"),
           *ROLLBACK_OK), 3),
    (_host("rolled_back", STOP, ("observe", "failed", "never healthy after start: log: logs/server.log: ERROR "
                                                      "Cannot create JDBC connection to jdbc/orders"), *ROLLBACK_OK), 3),
    (_host("rolled_back", STOP, ("hook:after_install", "failed", "hook 'x' exited 1"), *ROLLBACK_OK), 3),
    # a killed run rolled back by resume: only the resume's phases are in its result; still 3, never "untouched"
    (_host("rolled_back", *ROLLBACK_OK), 3),
    (_host("unchanged", ("stop", "failed", "service did not stop within 5s"), ("observe", "ok", "healthy")), 3),
    # nothing was touched -> 4
    (_host("unchanged", ("preflight", "failed", "only 3 MiB free")), 4),
    (_host("needs_person", ("preflight", "failed", "host is locked by run x")), 4),
    # left after stop without a healthy service -> 1 (down, crashing, data source), or 2 (serves, degraded)
    (_host("needs_person", STOP, ("observe", "failed", "never healthy after start: tcp: port 1 closed"),
           ("rollback", "failed", "restored tree differs")), 1),
    (_host("needs_person", STOP, ("install", "failed", "lost the connection")), 1),
    (_host("needs_person", STOP, ("observe", "failed", "never healthy after start: process: pid None not running"),
           ("rollback", "ok", "restored"), ("start", "ok", "started"),
           ("observe", "failed", "never healthy after start: process: pid None not running; tcp: port 1 closed")), 1),
    (_host("needs_person", STOP, ("observe", "failed", "x"), ("rollback", "ok", "restored"), ("start", "ok", "s"),
           ("observe", "failed", "never healthy after start: log: logs/server.log: ERROR Cannot create JDBC "
                                 "connection")), 1),
    (_host("needs_person", STOP, ("observe", "failed", "x"), ("rollback", "ok", "restored"), ("start", "ok", "s"),
           ("observe", "failed", "never healthy after start: health: answered 500")), 2),
    (_host("needs_person", STOP, ("observe", "failed", "x"), ("rollback", "ok", "restored"), ("start", "ok", "s"),
           ("observe", "failed", "healthy at first, then failed during the observation window: tcp: port 1 "
                                 "closed")), 2),
    (_host("needs_person", STOP, ("observe", "failed", "x"), ("rollback", "ok", "restored"), ("start", "ok", "s"),
           ("observe", "failed", "never healthy after start: smoke: command exited 1")), 2),
])
def test_severity_rules(host: dict[str, Any], level: int | None) -> None:
    """Pure: the level follows the customer's state after the run (PRODUCT.md "Severity levels"): rolled back to a
    healthy old version -> 3; never touched -> 4; left down, crashing or without its data source -> 1; serving but
    degraded or unstable -> 2."""
    got = classify_host(host, TYPES)
    assert (got["level"] if got else None) == level


def test_a_runs_level_is_its_most_severe_hosts_with_the_policy_response_time() -> None:
    """Two failed hosts, levels 3 and 2: the run is level 2 with the second response target and its meaning."""
    result = {"hosts": [{**_host("rolled_back", STOP, ("hook:after_start", "failed", "x"), *ROLLBACK_OK), "host": "a"},
                        {**_host("needs_person", STOP, ("observe", "failed", "x"), ("rollback", "ok", "r"),
                                 ("start", "ok", "s"), ("observe", "failed", "healthy at first, then failed during "
                                                                             "the observation window: tcp: closed")),
                         "host": "b"}]}
    run = classify_run(result, {"a": TYPES, "b": TYPES}, (1.0, 3.0, 5.0, 7.0))
    assert run is not None and run["level"] == 2 and run["host"] == "b" and run["response_hours"] == 3.0
    assert run["name_zh"] == "严重" and run["response_level_zh"] == "紧急" and "7×24" in run["service_hours"]
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
    # the tail of a key whose BEGIN line a log tail cut off
    ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END RSA PRIVATE KEY-----\n", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
    ('<property name="password" value="S3cret"/>', "S3cret"),
    ('<property name="jdbc.password" value="S3cret"/>', "S3cret"),
    ("<property value='S3cret' name='db.password'/>", "S3cret"),
    ('<entry key="password">S3cret</entry>', "S3cret"),
    ("<context-param><param-name>ldap.password</param-name>\n  <param-value>S3cret</param-value>", "S3cret"),
    ("<keystorePass>S3cret</keystorePass>", "S3cret"),
    ("java -jar admin.jar --password S3cret --user admin", "S3cret"),
    ("tool --password=S3cret", "S3cret"),
    ("tool --db-token 'S3 cret'", "S3 cret"),
    ("mysql -pS3cret orders", "S3cret"),
    ("mysqldump -u root -h db -pS3cret --all-databases", "S3cret"),
    ("DB_PASS=S3cret ./start.sh", "S3cret"),
    ("keystorePass=S3cret", "S3cret"),
    ("passphrase=S3cret", "S3cret"),
    ("password=123456", "123456"),
    ("Cookie: JSESSIONID=S3cret; lang=zh", "S3cret"),
    ("Set-Cookie: JSESSIONID=S3cret; Path=/; HttpOnly", "S3cret"),
    ("Authorization: Basic dXNlcjpTM2NyZXQ=", "dXNlcjpTM2NyZXQ="),
    ("GET /app/list;jsessionid=S3cret HTTP/1.1", "S3cret"),
    ("JAVA_OPTS=-Djavax.net.ssl.keyStorePassword=S3cret -Xmx2g", "S3cret"),
    ("password: hunter2 token=S3cret", "S3cret"),
    ("secretKey: S3cret", "S3cret"),
    ("storepass=S3cret", "S3cret"), ("keypass: S3cret", "S3cret"), ("DBPASS=S3cret", "S3cret"),
    ("keystorepass: S3cret", "S3cret"),
])
def test_redaction_hides_each_kind_of_secret(text: str, secret: str) -> None:
    """Pure: the secret is gone, a *** stands in its place."""
    out = redact(text)
    assert secret not in out and "***" in out


@pytest.mark.parametrize("text", ["port = 18080", "bind = 127.0.0.1", "version 7.0.4.9_M1", '"key": null',
                                  "sha256 0f1e2d", "passed=3", "tests passed: 12", "bypass mode", "bypass=auto",
                                  "upgraded 7.0.4.1 -> 7.0.4.9", "ssh -p 2222 app-01", "mkdir -p /opt/x",
                                  "mysql -P 3306 -h db", "mysql -p orders", "tool --password-file /etc/pw",
                                  "password_file = /etc/app/pw.txt", "token_url = https://idp.example/token",
                                  "the password is wrong", "ssh_key: SHA256:abc", "session.timeout=30",
                                  "keystore=conf/server.jks", "compass=north"])
def test_redaction_keeps_what_is_not_a_secret(text: str) -> None:
    assert redact(text) == text


def test_obfuscation_is_consistent_and_keeps_versions_and_sysctl_names() -> None:
    """Same name, same stand-in; an address that is a listed version stays; vm.* is not the host 'vm'."""
    ob = Obfuscator(["app-01", "vm", "db.example.com"], keep=["7.0.4.1"])
    out = ob("app-01 10.1.2.3 app-01 10.1.2.3 10.1.2.4 7.0.4.1 vm.swappiness on vm db.example.com /x/app-01/y")
    assert out == ("host1 ip-1 host1 ip-1 ip-2 7.0.4.1 vm.swappiness on host3 host2.domain1 /x/host1/y")


def test_obfuscation_finds_names_in_any_case_and_in_short_and_qualified_forms() -> None:
    """An inventory name is found as an FQDN and in capitals; an FQDN given is found by its short name; the
    domains of the names given are replaced wherever they appear; file names carry the host too."""
    ob = Obfuscator(["app1", "DB02.corp.example.com"], domains=["dmz.example.net"])
    out = ob("app1.corp.example.com APP1 App1.log db02 ldap.corp.example.com ops@CORP.example.com "
             "proxy.dmz.example.net app1.dc3.example.org vm.swappiness app10 myapp1")
    assert out == ("host1.domain1 host1 host1.log host2 ldap.domain1 ops@domain1 proxy.domain2 "
                   "host1.dc3.example.org vm.swappiness app10 myapp1")
    assert ob.mapping["app1"] == "host1" and ob.mapping["db02"] == "host2"
    assert ob.mapping["corp.example.com"] == "domain1" and ob.mapping["dmz.example.net"] == "domain2"
    assert Obfuscator(["app1.local"])("app1.local app1 local") == "host1.local host1 local"


@pytest.mark.parametrize("text, want", [
    ("listen [::1]:8080 and fe80::1%eth0", "listen [ip6-1]:8080 and ip6-2%eth0"),
    ("from 2001:db8:0:0:0:0:0:5 and 2001:DB8::5", "from ip6-1 and ip6-1"),
    ("mapped ::ffff:10.0.0.9.", "mapped ip6-1."),
    # the agent's listen addresses, as /proc/net/tcp6 writes them (::1 and 2001:db8::5)
    ("listen ipv6:00000000000000000000000001000000 ::1", "listen ipv6:ip6-1 ip6-1"),
    ("listen ipv6:B80D0120000000000000000005000000 2001:db8::5", "listen ipv6:ip6-1 ip6-1"),
])
def test_obfuscation_replaces_ipv6_addresses(text: str, want: str) -> None:
    """Pure: IPv6 in every form (compressed, full, zoned, v4-mapped, the kernel's hex) gets one stand-in per address."""
    assert Obfuscator([])(text) == want


@pytest.mark.parametrize("text", ["at 10:30:00 and 2026-01-01T10:30:00", "mac 52:54:00:12:34:56",
                                  "Foo::bar std::string", "version 7.0.4.9_M1", "listen :: port 8080",
                                  "sha256:0f1e2d3c", "ratio 3:1"])
def test_obfuscation_keeps_times_macs_and_versions(text: str) -> None:
    """Pure: what only looks like an address is kept (a MAC address is not an IP address; :: reveals nothing)."""
    assert Obfuscator([], keep=["7.0.4.9"])(text) == text


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


# -- the operator's cancel is no incident ---------------------------------------------------------------------


@pytest.mark.parametrize("at, outcome", [("backup", "unchanged"), ("stop", "rolled_back")])
def test_a_run_the_operator_cancels_has_no_severity_and_writes_no_bundle(sandbox: Sandbox, at: str,
                                                                          outcome: str) -> None:
    """Cancelled before stop (unchanged) or after stop (stopped, rolled back healthy): result.json is written, with
    no diagnostics and no bundle in the run directory, and the severity rules see no incident."""
    box = sandbox
    result = run_with_cancel(box, at)
    (host,) = result["hosts"]
    assert host["outcome"] == outcome and CANCELLED in str(host["error"])
    assert is_cancelled(host) and classify_run(result) is None and not needs_bundle(result)
    assert "diagnostics" not in result
    run_dir = box.root / "runs" / result["run_id"]
    assert json.loads((run_dir / "result.json").read_text())["hosts"][0]["outcome"] == outcome
    assert not list(run_dir.glob("diagnostics-*"))
    assert box.wait_version("7.0.4.1", 10) == "7.0.4.1"


def test_a_cancelled_host_beside_a_failed_one_still_makes_a_bundle() -> None:
    """Pure: the bundle is for the host that failed; the cancelled one adds no level; a failed rollback after a
    cancel is an incident (level 1)."""
    cancelled = {**_host("rolled_back", STOP), "host": "a", "rollback_cause": CANCELLED, "error": CANCELLED}
    failed = {**_host("rolled_back", STOP, ("hook:after_start", "failed", "x")), "host": "b"}
    assert not needs_bundle({"hosts": [cancelled]}) and classify_host(cancelled) is None
    run = classify_run({"hosts": [cancelled, failed]}, {"b": TYPES})
    assert needs_bundle({"hosts": [cancelled, failed]}) and run is not None
    assert run["level"] == 3 and [h["host"] for h in run["hosts"]] == ["b"]
    stuck = {**_host("needs_person", STOP, ("rollback", "failed", "restored tree differs")), "host": "c",
             "rollback_cause": CANCELLED, "error": f"{CANCELLED}; rollback failed at rollback: x"}
    assert not is_cancelled(stuck) and (classify_host(stuck) or {}).get("level") == 1


def test_the_guide_does_not_ask_to_send_a_bundle_after_the_operator_cancelled(sandbox: Sandbox) -> None:
    """The real guide in a terminal, Ctrl-C once the service is stopped: rolled back, exit 1, and the screen
    neither asks to send anything to support nor names a bundle; none is written."""
    from test_guide import SCREEN, answer_until_stop, approved_plan, guide

    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang="en",
                  env=fault_env(pause_at="install"))
    answer_until_stop(child, "en")
    child.sendline("y")
    child.expect(SCREEN["en"]["stopped"])
    child.ctrl_c()
    child.expect(SCREEN["en"]["rolled_back"])
    assert child.finish() == 1
    assert "Send to support" not in child.transcript and "diagnostics bundle" not in child.transcript
    (run,) = [p for p in (box.root / "runs").iterdir() if p.is_dir()]
    assert not list(run.glob("diagnostics-*"))


# -- the result comes first -----------------------------------------------------------------------------------


def test_a_bundle_that_fails_unexpectedly_loses_neither_the_result_nor_the_exit_code(sandbox: Sandbox,
                                                                                   capsys) -> None:
    """A rollback hook overwrites the run's plan.json with a JSON list, so building the bundle raises a TypeError
    (no UpgraderError): the run still exits 1, and result.json holds the rolled-back host and the bundle's error."""
    box = sandbox
    runs = box.root / "runs"
    (box.root / "list.json").write_text("[]\n")
    swap = box.root / "swap-plan.sh"  # root's own script: find is no root program of a playbook (README)
    swap.write_text(f"find {runs} -name plan.json -exec cp {box.root}/list.json {{}} \\;\n")
    sample_playbook(box, lambda spec: spec.update(hooks={"after_rollback": [{"command": f"/bin/sh {swap}"}]}))
    rc, plan = plan_to(box, "7.0.4.6")
    assert rc == 0
    capsys.readouterr()
    assert run_plan(box, plan) == 1
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["hosts"][0]["outcome"] == "rolled_back" and result["exit_code"] == 1
    assert result["diagnostics"]["bundle"] is None and "TypeError" in result["diagnostics"]["error"]
    assert "the diagnostics bundle could not be written" in capsys.readouterr().out


@pytest.mark.parametrize("path, withheld", [
    ("conf/security/users.xml", True), ("conf/server.jks", True), ("conf/trust.jceks", True),
    ("conf/app.truststore", True), ("conf/key.kdb", True), ("conf/key.sth", True), ("conf/ltpa.keys", True),
    ("servers/AdminServer/security/boot.properties", True), ("config/boot.properties", True),
    ("security/SerializedSystemIni.dat", True), ("conf/.htpasswd", True), ("conf/db-credentials.xml", True),
    ("conf/app-secret.yaml", True), ("license.dat", True), ("conf/server.key", True),
    ("conf/server.conf", False), ("conf/tongweb.xml", False), ("conf/logging.properties", False),
    ("bin/setenv.sh", False), ("conf/keyboard.map", False),
])
def test_config_text_is_never_collected_from_key_stores_licences_and_credential_files(path: str,
                                                                                       withheld: bool) -> None:
    """The host agent's deny-list (even a playbook that names these files gets only their digests)."""
    from upgrader.hostagent.inspection import TEXT_NEVER

    assert bool(TEXT_NEVER.search(path)) is withheld
