"""The audit log itself: how lines are chained and written, what is redacted before they are, and how
`upgrader audit show` selects events."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from conftest import plan_to, run_plan

from upgrader.audit.log import GENESIS, AuditLog, redact, verify_log
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.errors import InputError
from upgrader.trust.keys import generate_key, load_private_key, signer_line
from upgrader.core.playbook import shipped_playbooks_dir
from upgrader.trust.signers import parse_allowed_signers

ACTOR = {"user": "ops", "host": "jump", "key": None, "principal": "ops@jump"}


def sha(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


# -- writing ---------------------------------------------------------------------------------------------


def test_each_line_carries_its_sequence_number_and_the_hash_of_the_line_before(tmp_path: Path) -> None:
    """Appended lines are numbered from 1 and chained from 64 zeros, each to the sha256 of the one before."""
    log = AuditLog(tmp_path / "audit.jsonl", ACTOR)
    log.append("run_started", run="r1", time="2026-11-26T10:00:00.000+00:00")
    log.append("host_started", run="r1", host="app-01", time="2026-11-26T10:00:01.000+00:00")
    log.append("run_finished", run="r1", time="2026-11-26T10:00:02.000+00:00", data={"exit_code": 0})
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert [r["prev"] for r in records] == [GENESIS, sha(lines[0]), sha(lines[1])]
    assert records[1]["actor"] == ACTOR and records[2]["data"] == {"exit_code": 0}
    result = verify_log(tmp_path / "audit.jsonl", signers=None)
    # the chain holds; its one fault is that the finished run r1 has no checkpoint (and no signers are known)
    assert (result.status, result.problem, result.bad_line) == ("cannot_check", "unsigned", 1), result.message


def test_an_append_whose_clock_reading_is_older_than_the_last_line_is_written_at_that_lines_time(
        tmp_path: Path) -> None:
    """A writer that read its clock before another process wrote a later line never writes a time going backwards."""
    log = AuditLog(tmp_path / "audit.jsonl", ACTOR)
    log.append("run_started", run="r1", time="2026-11-26T10:00:05.000+00:00")
    rec = log.append("host_started", run="r1", host="app-01", time="2026-11-26T10:00:04.999+00:00")
    assert rec["time"] == "2026-11-26T10:00:05.000+00:00"
    result = verify_log(tmp_path / "audit.jsonl", signers=None)
    # the times are in order; the one fault is the run beyond its opening that no checkpoint covers yet
    assert (result.problem, result.bad_line) == ("unsigned", 2), result.message


def test_a_checkpoint_whose_clock_reading_is_older_than_the_last_line_still_verifies(tmp_path: Path) -> None:
    """The checkpoint signs the time it is written with, so a raised time does not break its signature."""
    generate_key(tmp_path / "operator", "ops@jump")
    key = load_private_key(tmp_path / "operator")
    signers = parse_allowed_signers(signer_line("ops@jump", key.public_key(), "upgrader-audit") + "\n", "signers")
    from upgrader.trust.sshsig import fingerprint, public_key_blob

    actor = {**ACTOR, "key": fingerprint(public_key_blob(key.public_key()))}  # as the recorder writes it
    log = AuditLog(tmp_path / "audit.jsonl", actor)
    log.append("run_started", run="r1", time="2026-11-26T10:00:05.000+00:00")
    cp = log.checkpoint(run="r1", time="2026-11-26T10:00:04.000+00:00", signer="ops@jump", key=key)
    result = verify_log(tmp_path / "audit.jsonl", signers=signers)
    assert result.intact, result.message
    assert result.checkpoints == 1 and cp["line"] == 2


def test_append_refuses_to_write_after_a_torn_last_line(tmp_path: Path) -> None:
    """After a torn write the log is left for review: the next append fails instead of chaining to half a line."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, ACTOR)
    log.append("run_started", run="r1", time="2026-11-26T10:00:00.000+00:00")
    path.write_bytes(path.read_bytes() + b'{"seq":2,"prev":"ab')
    with pytest.raises(InputError, match="torn line"):
        log.append("run_finished", run="r1", time="2026-11-26T10:00:01.000+00:00")
    assert path.read_bytes().endswith(b'{"seq":2,"prev":"ab')


# -- redaction --------------------------------------------------------------------------------------------

PEM_BODY = ["MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQC7VJTUt9Us8cKj",
            "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu",
            "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ"]
PEM = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize("text, secret", [
    ("admin_password = s3cret-admin", "s3cret-admin"),
    ("admin_password=s3cret-admin\ngreeting = hi", "s3cret-admin"),
    (f"loaded key:\n{PEM}done", PEM_BODY[1]),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n-----END OPENSSH PRIVATE KEY-----",
     "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE"),
    # command output is kept as its last 500 characters: a key's tail must not survive without its BEGIN line
    ("\n".join(PEM_BODY[1:]) + "\n-----END RSA PRIVATE KEY-----\n", PEM_BODY[2]),
    ("curl -H 'Authorization: Bearer abc' http://127.0.0.1:8080/admin", "Bearer abc"),
    ("authorization: basic dXNlcjpwdw==", "dXNlcjpwdw=="),
    ("fetching https://user:pw@host/repo.git", "user:pw@"),
    ("DB_PASSWORD=hunter2 ./start.sh", "hunter2"),
    ("export MYSQL_ROOT_PASSWORD='hunter 2'", "hunter 2"),
    ('{"user": "admin", "password": "hunter2"}', "hunter2"),
    ('<Connector port="8443" keystorePass="changeit" />', "changeit"),
    ("jdbc.password: s3cret", "s3cret"),
    ("token=abc123", "abc123"),
    ("x-api-key: k-123456", "k-123456"),
])
def test_redact_removes_secrets_from_text(text: str, secret: str) -> None:
    """Secret-looking text is replaced, whatever the form the product or the command wrote it in."""
    out = redact(text)
    assert secret not in out
    assert "[REDACTED" in out


@pytest.mark.parametrize("text", [
    "healthy: 5 probes passed 9 times over 2.0s",
    "http://127.0.0.1:8080/health answered 200",
    "the password is wrong",
    "password_file = /etc/app/pw.txt",
    "token_url = https://idp.example/token",
    "6 files restored from the verified backup in 0.02s; byte-identical",
])
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    """Text without a secret comes back unchanged."""
    assert redact(text) == text


def test_redact_applies_every_rule_of_the_diagnostics_bundle_and_its_fast_path_skips_none() -> None:
    """One set of secret patterns: each secret the bundle's redaction hides is hidden from the audit log too
    (so no rule's trigger word is missing from the fast path), and what the bundle keeps, the log keeps."""
    from test_diagnostics import test_redaction_hides_each_kind_of_secret as hides
    from test_diagnostics import test_redaction_keeps_what_is_not_a_secret as keeps

    secrets = next(m for m in hides.pytestmark if m.name == "parametrize").args[1]
    plain = next(m for m in keeps.pytestmark if m.name == "parametrize").args[1]
    assert len(secrets) > 30 and len(plain) > 20
    for text, secret in secrets:
        out = redact(text)
        assert secret not in out and "[REDACTED" in out, text
        assert redact({"note": text}) == {"note": out}
    for text in plain:
        assert redact(text) == text


def test_redact_replaces_values_under_secret_keys_at_any_depth() -> None:
    """Values under secret-looking keys are replaced in nested data; key paths to files are kept."""
    data: dict[str, Any] = {"db_password": "hunter2", "password_file": "/etc/pw", "hosts": [{"api_key": "k1"}],
                            "env": {"TOKEN": "t-1", "PORT": "8080", "DB_PASS": "p-1", "passphrase": "pp"},
                            "ssh_key": "SHA256:abc"}
    assert redact(data) == {"db_password": "[REDACTED]", "password_file": "/etc/pw", "hosts": [{"api_key": "[REDACTED]"}],
                            "env": {"TOKEN": "[REDACTED]", "PORT": "8080", "DB_PASS": "[REDACTED]",
                                    "passphrase": "[REDACTED]"},
                            "ssh_key": "SHA256:abc"}


def _playbook_with_secret_hooks(box: Sandbox, key_file: Path) -> None:
    """The sample playbook, beside the inventory, with hooks whose output carries the config and secrets."""
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())
    spec["hooks"] = {
        "after_install": [{"command": "cat conf/server.conf; echo 'Authorization: Bearer abc'; "
                                      "echo 'cloning https://user:pw@host/app.git'"}],
        # longer than the 500 characters a phase result keeps: only the key's tail reaches the recorder
        "after_start": [{"command": f"cat {key_file}"}],
    }
    (box.root / "playbooks").mkdir()
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def test_a_real_run_whose_config_and_command_output_hold_secrets_leaves_none_in_the_audit_log(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """A run whose hooks print server.conf (admin_password), a bearer token, a URL password and a private key
    records the hooks' output, with every secret redacted."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    key_file = tmp_path / "leaked.pem"
    key_file.write_text(pem)
    assert "admin_password = s3cret-admin" in (sandbox.install_dir / "conf" / "server.conf").read_text()
    _playbook_with_secret_hooks(sandbox, key_file)
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == 0
    assert run_plan(sandbox, plan) == 0

    log = (sandbox.root / "audit" / "audit.jsonl").read_text()
    hooks = [json.loads(line) for line in log.splitlines() if '"phase":"hook:' in line
             and '"event":"phase_finished"' in line]
    assert len(hooks) == 2, "both hooks' results are recorded"
    assert "greeting = Welcome to sample-middleware" in log, "the hook's output did reach the log"
    assert "admin_password = [REDACTED]" in log
    assert "s3cret-admin" not in log
    assert "Bearer abc" not in log and "user:pw@" not in log
    body = [ln for ln in pem.splitlines() if not ln.startswith("-----")]
    assert not [ln for ln in body if ln in log], "no line of the private key may reach the audit log"
    assert "[REDACTED PRIVATE KEY]" in log


# -- audit show ----------------------------------------------------------------------------------------------


@pytest.fixture
def two_days(tmp_path: Path) -> Path:
    """A log of two runs on two days: r-0101 on app-01 and app-02, r-0102 on app-02, plus a plan outside runs."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, ACTOR)
    log.append("plan_created", outcome="allowed", time="2026-01-01T08:00:00.000+00:00", data={"target": "7.0.4.2"})
    for run, day, hosts in (("r-0101", "2026-01-01", ("app-01", "app-02")), ("r-0102", "2026-01-02", ("app-02",))):
        log.append("run_started", run=run, time=f"{day}T09:00:00.000+00:00")
        for i, host in enumerate(hosts):
            log.append("phase_started", run=run, host=host, phase="stop", time=f"{day}T09:0{i + 1}:00.000+00:00")
            log.append("phase_finished", run=run, host=host, phase="stop", outcome="ok",
                       time=f"{day}T09:0{i + 1}:30.000+00:00")
        log.append("run_finished", run=run, time=f"{day}T09:30:00.000+00:00", data={"exit_code": 0})
    return path


def show(capsys: pytest.CaptureFixture[str], log: Path, *args: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["audit", "show", str(log), "--json", *args]) == 0
    shown: dict[str, Any] = json.loads(capsys.readouterr().out)
    # no allowed signers here: the verdict comes first, UNVERIFIED, and the timeline is still shown (exit 0)
    assert shown["verification"]["headline"].startswith("UNVERIFIED")
    events: list[dict[str, Any]] = shown["events"]
    return events


def test_show_json_without_filters_lists_every_event(two_days: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit show --json` prints every event of the log, in order."""
    events = show(capsys, two_days)
    assert [e["seq"] for e in events] == list(range(1, 12))


def test_show_run_selects_that_runs_events_by_a_prefix_of_its_id(two_days: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--run takes a prefix of the run id and selects exactly that run's events."""
    events = show(capsys, two_days, "--run", "r-0102")
    assert {e["run"] for e in events} == {"r-0102"}
    assert [e["event"] for e in events] == ["run_started", "phase_started", "phase_finished", "run_finished"]


def test_show_host_selects_that_hosts_events_and_the_runs_it_took_part_in(
        two_days: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--host keeps the host's own events and the start and end of runs; other hosts' events are left out."""
    events = show(capsys, two_days, "--host", "app-01")
    assert [(e["event"], e["host"]) for e in events if e["host"]] == [("phase_started", "app-01"),
                                                                      ("phase_finished", "app-01")]
    assert all(e["host"] == "app-01" or e["event"] in ("run_started", "run_finished") for e in events)


@pytest.mark.parametrize("since, first_seq", [
    ("2026-01-02", 8),                     # a date: from midnight
    ("2026-01-01T09:01:30", 4),            # a time without zone: as the log records it (UTC)
    ("2026-01-02T17:00+08:00", 8),         # 09:00 UTC, written in Beijing time
    ("2026-01-01T17:01:30+08:00", 4),
])
def test_show_since_selects_events_at_or_after_that_moment(
        two_days: Path, capsys: pytest.CaptureFixture[str], since: str, first_seq: int) -> None:
    """--since keeps events at or after the moment, also when it is given with another time zone."""
    events = show(capsys, two_days, "--since", since)
    assert [e["seq"] for e in events] == list(range(first_seq, 12))


def test_show_filters_combine(two_days: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--run, --host and --since together keep only events that satisfy all three."""
    events = show(capsys, two_days, "--run", "r-01", "--host", "app-02", "--since", "2026-01-02")
    assert [(e["run"], e["event"], e["host"]) for e in events] == [
        ("r-0102", "run_started", None), ("r-0102", "phase_started", "app-02"),
        ("r-0102", "phase_finished", "app-02"), ("r-0102", "run_finished", None)]


def test_show_refuses_a_since_that_is_not_a_date(two_days: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --since that is not a date exits 2 and says what was expected."""
    assert main(["audit", "show", str(two_days), "--since", "yesterday"]) == 2
    assert "--since" in capsys.readouterr().err


def test_show_copes_with_a_log_outside_the_home(two_days: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The LOG argument is read wherever it lies, without a home or a policy."""
    elsewhere = tmp_path / "copy" / "audit.jsonl"
    elsewhere.parent.mkdir()
    shutil.copy(two_days, elsewhere)
    assert len(show(capsys, elsewhere, "--run", "r-0101")) == 6


def test_show_prints_recorded_text_that_looks_like_console_markup_as_it_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A command output such as "[/bold] [red]x[/red]" is shown literally, not parsed (nor crashing the table)."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, {"user": "[/u]", "principal": "[link=https://evil.example]ops[/link]"})
    # a first run's id has no "/" (one that has is an edited line): markup of its own
    log.append("run_started", run="[bold]r[red]", time="2026-01-01T09:00:00.000+00:00",
               data={"detail": "[/bold] [red]x[/red]"})
    capsys.readouterr()
    assert main(["audit", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[/bold] [red]x[/red]" in out and "[bold]r[red]" in out and "[link=https://evil.example]ops[/link]" in out


def test_show_and_export_skip_lines_that_are_not_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Lines that are JSON but not an event object (an array, a string) are left out, not a crash."""
    path = tmp_path / "audit.jsonl"
    AuditLog(path, ACTOR).append("run_started", run="r1", time="2026-01-01T09:00:00.000+00:00")
    path.write_bytes(path.read_bytes() + b'[1, 2]\n"text"\n{"seq": 4, "actor": "me", "data": [1], "event": 5}\n')
    capsys.readouterr()
    # the chain is broken at line 2: `audit show` says ALTERED first and exits 6, whatever the trust given
    assert main(["audit", "show", str(path), "--json"]) == 6
    shown = json.loads(capsys.readouterr().out)
    assert shown["verification"]["headline"].startswith("ALTERED (line 2")
    assert [e["seq"] for e in shown["events"]] == [1, 4]
    assert main(["audit", "show", str(path)]) == 6
    assert capsys.readouterr().out.startswith("ALTERED (line 2")
    out = tmp_path / "report.html"
    # written; no allowed signers are known here, so the verdict is "cannot check" (2) with the chain's result beside it
    assert main(["audit", "export", str(path), "--format", "html", "-o", str(out)]) == 2
    assert "CANNOT CHECK" in out.read_text() and "altered at line 2" in out.read_text()
