"""Secrets as a customer's install really holds them, through the real CLI: in configuration files of
every format (YAML block scalars and flow maps, XML with CDATA and attributes, .properties with
continued lines, JSON with numbers), in the service's log (JDBC URLs whose password holds ``@``) and
in a URL the playbook uses. A run that fails and is rolled back then writes its diagnostics bundle,
the audit log, `run --json`, the audit reports (HTML, JSON, CSV), `audit show --json` and the
inspection (HTML and --json): none of them holds any secret, whole or as the part on either side
of an ``@``.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import approve, plan_to, upgrader

from upgrader.cli.commands.demo import Sandbox
from upgrader.core.playbook import shipped_playbooks_dir

SECRETS = {
    "yaml block": ("QvBlockOne7k", "QvBlockTwo8m"),
    "yaml folded": ("QvFoldedLine3z",),
    "yaml flow": ("QvFlow;4&and",),
    "yaml number": ("90817263544",),
    "xml cdata": ("QvCdata<5>]x&y",),
    "xml attribute": ("QvAttr6'Kp",),
    "xml element": ("QvElem7Ws",),
    "properties": ("QvProp8#Kx;y",),
    "properties continued": ("QvContOne9a", "QvContTwo1b"),
    "properties space": ("QvSpace2Jc",),
    "json number": ("918273645501",),
    "json nested": ("QvJsonDeep3q",),
    "log url": ("QvUrl@Pass4@Zz",),
    "log oracle": ("QvOra@Pass5Yy",),
    "playbook url": ("QvVar@Pass6Xx",),
}

APP_YAML = f"""datasource:
  user: app
  password: |
    {SECRETS["yaml block"][0]}
    {SECRETS["yaml block"][1]}
  backup_password: >-
    {SECRETS["yaml folded"][0]}
  replica: {{user: ro, password: {SECRETS["yaml flow"][0]}, pool: small}}
  db_password: {SECRETS["yaml number"][0]}
  pool: small
"""
SERVER_XML = f"""<server>
  <keystorePass><![CDATA[{SECRETS["xml cdata"][0]}]]></keystorePass>
  <datasource user="app" password="{SECRETS["xml attribute"][0]}" url="jdbc:h2:mem"/>
  <ldap><password>{SECRETS["xml element"][0]}</password></ldap>
</server>
"""
JDBC_PROPERTIES = f"""# datasource
db.user=app
db.password={SECRETS["properties"][0]}
ldap.password={SECRETS["properties continued"][0]}\\
    {SECRETS["properties continued"][1]}
api.token {SECRETS["properties space"][0]}
db.pool=small
"""
APP_JSON = json.dumps({"datasource": {"user": "app", "db_password": int(SECRETS["json number"][0]),
                                      "client_secret": {"value": SECRETS["json nested"][0]}}}, indent=2) + "\n"
LOG_LINES = (f"2026-11-26T09:59:00 INFO pool: jdbc:mysql://app:{SECRETS['log url'][0]}@db.internal:3306/orders\n"
             f"2026-11-26T09:59:01 INFO standby: jdbc:oracle:thin:app/{SECRETS['log oracle'][0]}@db.internal:1521:orcl\n")
DB_URL = f"jdbc:postgresql://app:{SECRETS['playbook url'][0]}@db.internal:5432/orders"
CONFIGS = {"conf/app.yaml": APP_YAML, "conf/server.xml": SERVER_XML, "conf/jdbc.properties": JDBC_PROPERTIES,
           "conf/app.json": APP_JSON}


def pieces() -> dict[str, str]:
    """Every secret, and each part of it on either side of an ``@`` (what a URL redaction cut at the first ``@``
    would leave), that is long enough to be unmistakable."""
    out = {}
    for place, values in SECRETS.items():
        for value in values:
            for piece in {value, *value.split("@")}:
                if len(piece) >= 4:
                    out[piece] = place
    return out


def found_in(name: str, data: bytes | str) -> list[str]:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return [f"{name}: {place} secret piece {piece!r}" for piece, place in pieces().items() if piece in text]


def plant(box: Sandbox) -> None:
    """The secrets in the install's config files and log, and in a URL the playbook uses (a hook shows it and the
    config files, as an operator's check would)."""
    for rel, text in CONFIGS.items():
        (box.install_dir / rel).write_text(text, encoding="utf-8")
    with open(box.install_dir / "logs" / "server.log", "a", encoding="utf-8") as f:
        f.write(LOG_LINES)
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())
    spec["vars"]["db_url"] = DB_URL
    spec["preserve"] += [{"path": rel, "kind": "config"} for rel in CONFIGS]
    spec["hooks"] = {"before_stop": [{"command": f"cat {rel}"} for rel in CONFIGS]
                     + [{"command": "echo checking ${db_url}"}]}
    spec["inspect"] = {"configs": list(CONFIGS)}
    (box.root / "playbooks").mkdir(exist_ok=True)
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def bundle_members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def test_secrets_of_every_format_reach_no_bundle_log_report_or_json_output(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A failing run (7.0.4.6 cannot start; rolled back, exit 1) with secrets planted everywhere: the bundle holds the
    config text and log tail redacted, and no output the CLI writes or prints holds a piece of any secret."""
    box = sandbox
    plant(box)
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    rc, plan = plan_to(box, "7.0.4.6", "--json")
    assert rc == 0
    approval = approve(box, plan)
    leaks = found_in("plan --json", capsys.readouterr().out)
    assert upgrader(box, "run", str(plan), "--approval", str(approval), "--json") == 1
    run_out = capsys.readouterr().out
    leaks += found_in("run --json", run_out)
    result: dict[str, Any] = json.loads(run_out)
    hooks = [p for h in result["hosts"] for p in h["phases"] if p["phase"] == "hook:before_stop"]
    assert [p["detail"] for p in hooks][:4] == [f"cat {rel}" for rel in CONFIGS], "every hook ran, its output recorded"
    assert "db_password: ***" in hooks[0]["data"]["command"]["stdout"]
    (run_dir,) = (box.root / "runs").iterdir()
    bundle = run_dir / f"diagnostics-{run_dir.name}.tar.gz"
    files = bundle_members(bundle)
    config_members = sorted(n.split("/config/", 1)[1] for n in files if "/config/" in n)
    assert config_members == sorted(CONFIGS), "the bundle holds the text of every named config file"
    for name, data in files.items():
        leaks += found_in(f"bundle {name}", data)
    audit = box.root / "audit" / "audit.jsonl"
    assert b"cat conf/app.yaml" in audit.read_bytes() and b"checking jdbc:postgresql://app:" in audit.read_bytes()
    leaks += found_in("audit log", audit.read_bytes())
    for fmt in ("html", "json", "csv"):
        out = box.root / f"audit.{fmt}"
        assert upgrader(box, "audit", "export", "--format", fmt, "-o", str(out)) == 0
        leaks += found_in(f"audit export {fmt}", out.read_bytes())
    assert upgrader(box, "audit", "show", "--json") == 0
    leaks += found_in("audit show --json", capsys.readouterr().out)
    report = box.root / "inspection.html"
    assert upgrader(box, "inspect", "--inventory", str(box.inventory), "-o", str(report)) == 0
    leaks += found_in("inspect html", report.read_bytes())
    assert upgrader(box, "inspect", "--inventory", str(box.inventory), "--json") == 0
    leaks += found_in("inspect --json", capsys.readouterr().out)
    assert leaks == []


def test_the_planted_files_hold_every_secret_as_the_formats_write_them() -> None:
    """Guard for the test above: each secret (and each piece it checks) is really in what was planted."""
    planted = "".join(CONFIGS.values()) + LOG_LINES + DB_URL
    yaml.safe_load(APP_YAML)  # the YAML is valid YAML: block scalars, a flow map, a number
    assert yaml.safe_load(APP_YAML)["datasource"]["password"].split() == list(SECRETS["yaml block"])
    assert json.loads(APP_JSON)["datasource"]["db_password"] == int(SECRETS["json number"][0])
    assert yaml.safe_load(APP_YAML)["datasource"]["replica"]["password"] == SECRETS["yaml flow"][0]
    assert [piece for piece in pieces() if piece not in planted] == []


LOG_PW = "PgLongS3cretPassw0rdXYZ"
HOOK_PW = "S3cretHOOKvalue"
# a Tomcat pool's connection error: the '@' of the URL lies far beyond 200 characters, where a cut used to fall
LONG_LOG_LINE = ("ERROR (main) org.apache.tomcat.jdbc.pool.ConnectionPool - Unable to create initial connections of "
                 "pool " + "(retry #3 of 3) " * 3 + f"url jdbc:postgresql://orders_app:{LOG_PW}@db-prod-01.corp.example"
                 ":5432/orders")


def test_secrets_near_a_cut_reach_no_result_json_journal_stderr_bundle_or_audit_log(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """S1-S3: a log line whose URL password begins before character 200 and whose '@' comes after it, and hook output
    whose secret setting sits right where the last 500 and 4000 characters begin: a failing run (the log probe sees
    the line) leaves neither secret in result.json, the journal, the printed report, the bundle or the audit log."""
    box = sandbox
    assert LONG_LOG_LINE.index(LOG_PW) + 8 < 200 < LONG_LOG_LINE.index("@db-prod")
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())
    # the secret setting ends 20 characters before the end of 500- and 4000-character tails of the output
    filler = "0" * 479
    spec["hooks"] = {
        "before_stop": [{"command": f"yes x | head -n 900; printf 'db.password={HOOK_PW}\\n{filler}\\n'"},
                        {"command": f"printf 'db.password={HOOK_PW}\\n{'0' * 3980}\\n'"}],
        "after_start": [{"command": f"echo '{LONG_LOG_LINE}' >> logs/server.log"}]}
    (box.root / "playbooks").mkdir(exist_ok=True)
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    approval = approve(box, plan)
    capsys.readouterr()
    assert upgrader(box, "run", str(plan), "--approval", str(approval)) == 1  # the log probe fails: rolled back
    printed = capsys.readouterr()
    (run_dir,) = (box.root / "runs").iterdir()
    result = (run_dir / "result.json").read_text(encoding="utf-8")
    assert "logs/server.log: ERROR (main) org.apache.tomcat" in result, "the probe's line is in the result"
    places = {"stdout": printed.out, "stderr": printed.err, "result.json": result,
              "audit log": (box.root / "audit" / "audit.jsonl").read_text(encoding="utf-8")}
    places.update({f"run file {p.name}": p.read_text(encoding="utf-8", errors="replace")
                   for p in run_dir.iterdir() if p.is_file() and not p.name.endswith(".tar.gz")})
    bundle = run_dir / f"diagnostics-{run_dir.name}.tar.gz"
    places.update({f"bundle {n}": d.decode("utf-8", "replace") for n, d in bundle_members(bundle).items()})
    for secret in (LOG_PW, HOOK_PW, LOG_PW[:8], HOOK_PW[:8]):
        found = {name: text[max(0, text.find(secret) - 300):text.find(secret) + 40] for name, text in places.items()
                 if secret in text}
        assert found == {}, secret
