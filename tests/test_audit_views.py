"""Every view of the audit log carries the verdict (issue 20): `audit show` and each export verify the whole log
first and say INTACT, ALTERED (line N) or UNVERIFIED at the top and in the exit code; the CSV starts with a
verification row; the HTML names the allowed signers file (with its sha256) and the anchor it used. On a log
written by real runs of the demo sandbox, edited as an engineer would."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import kill_processes_under, plan_to, run_plan

from upgrader.cli import main
from upgrader.cli.commands.demo import build_sandbox

ALTERED = 6


@dataclass(frozen=True)
class Recorded:
    root: Path
    log: bytes
    upgrade_run: str
    failed_run: str
    anchor: str                 # SEQ:HEAD of the later run's checkpoint


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """Two real runs on the sample middleware: an upgrade, then a failing one rolled back."""
    tmp = tmp_path_factory.mktemp("views")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp))
        for var in ("UPGRADER_HOME", "UPGRADER_AUDIT_KEY", "UPGRADER_AUDIT_SIGNER", "UPGRADER_USER"):
            mp.delenv(var, raising=False)
        box = build_sandbox(tmp / "box")
        try:
            box.start_service()
            rc, plan = plan_to(box, "7.0.4.2")
            assert rc == 0 and run_plan(box, plan) == 0
            rc, plan = plan_to(box, "7.0.4.5")
            assert rc == 0 and run_plan(box, plan) == 1
        finally:
            box.stop_service()
            kill_processes_under(tmp)
    upgrade_run, failed_run = sorted(p.name for p in (box.root / "runs").iterdir())
    cp = json.loads((box.root / "runs" / failed_run / "result.json").read_text())["checkpoint"]
    yield Recorded(box.root, (box.root / "audit" / "audit.jsonl").read_bytes(), upgrade_run, failed_run,
                   f"{cp['seq']}:{cp['head']}")


@pytest.fixture
def home(recorded: Recorded, tmp_path: Path) -> Path:
    """A copy of the sandbox's policy, keys and audit log."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(recorded.root / "policy.yaml", home / "policy.yaml")
    shutil.copytree(recorded.root / "keys", home / "keys")
    (home / "audit").mkdir()
    (home / "audit" / "audit.jsonl").write_bytes(recorded.log)
    return home


def edit_one_outcome(home: Path, run: str) -> int:
    """Change one install phase's outcome from ok to failed, as an engineer hiding nothing would not; its line."""
    log = home / "audit" / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    for n, line in enumerate(lines, 1):
        rec = json.loads(line)
        if rec["run"] == run and rec["event"] == "phase_finished" and rec["phase"] == "install":
            lines[n - 1] = line.replace(b'"outcome":"ok"', b'"outcome":"failed"')
            log.write_bytes(b"".join(lines))
            return n
    raise AssertionError("no install phase")


def cli(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(home), *argv])
    return rc, capsys.readouterr().out


def test_audit_show_on_an_untouched_log_says_intact_first_and_exits_0(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = cli(home, capsys, "audit", "show")
    assert rc == 0
    assert out.splitlines()[0].startswith("INTACT ")
    rc, out = cli(home, capsys, "audit", "show", "--json")
    assert rc == 0 and json.loads(out)["verification"]["headline"] == "INTACT"


def test_audit_show_on_an_edited_log_exits_6_naming_the_line_first(
        recorded: Recorded, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The engineer's edit of one outcome: `audit show` (text and --json, and for another run's filter too) says
    ALTERED with the line before the timeline, and exits 6."""
    k = edit_one_outcome(home, recorded.upgrade_run)
    rc, out = cli(home, capsys, "audit", "show")
    assert rc == ALTERED
    assert out.splitlines()[0].startswith(f"ALTERED (line {k}: edited)")
    assert out.index("ALTERED") < out.index("Audit timeline")
    rc, out = cli(home, capsys, "audit", "show", "--run", recorded.failed_run, "--json")
    assert rc == ALTERED
    shown = json.loads(out)
    assert shown["verification"]["bad_line"] == k and shown["verification"]["headline"].startswith("ALTERED")
    assert {e["run"] for e in shown["events"]} == {recorded.failed_run}


def test_audit_show_without_any_trust_says_unverified_and_still_shows_the_timeline(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "no-signers"
    empty.write_text("")
    rc, out = cli(home, capsys, "audit", "show", "--allowed-signers", str(empty))
    assert rc == 0
    assert out.splitlines()[0].startswith("UNVERIFIED (no trust given")
    assert "Audit timeline" in out


def test_every_export_carries_the_verdict_at_the_top_and_in_the_exit_code(
        recorded: Recorded, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After the same edit: HTML, JSON and CSV are written, each says ALTERED with the line first, each exits 6."""
    k = edit_one_outcome(home, recorded.upgrade_run)
    for fmt in ("html", "json", "csv"):
        out = tmp_path / f"report.{fmt}"
        rc, _ = cli(home, capsys, "audit", "export", "--format", fmt, "-o", str(out))
        assert rc == ALTERED, fmt
        text = out.read_text()
        if fmt == "csv":
            first = next(csv.reader(io.StringIO(text, newline="")))
            assert first[:4] == ["verification", f"ALTERED (line {k}: edited)", str(k), "edited"]
        elif fmt == "json":
            assert json.loads(text)["verification"]["bad_line"] == k
        else:
            assert text.index("ALTERED") < text.index("Runs at a glance")


def test_html_names_the_allowed_signers_file_with_its_sha256_and_the_anchor_used(
        recorded: Recorded, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signers = home / "keys" / "allowed_signers"
    digest = hashlib.sha256(signers.read_bytes()).hexdigest()
    out = tmp_path / "report.html"
    rc, _ = cli(home, capsys, "audit", "export", "--format", "html", "-o", str(out), "--anchor", recorded.anchor,
                "--lang", "en")
    assert rc == 0
    html = out.read_text()
    assert "Allowed signers file" in html and str(signers) in html and f"sha256 {digest}" in html
    assert recorded.anchor in html and "checked: the log is complete up to the anchor you hold" in html
    csv_out = tmp_path / "report.csv"
    assert cli(home, capsys, "audit", "export", "--format", "csv", "-o", str(csv_out), "--anchor",
               recorded.anchor)[0] == 0
    first: list[Any] = next(csv.reader(io.StringIO(csv_out.read_text(), newline="")))
    assert first[1] == "INTACT" and first[5] == str(signers) and first[6] == digest and first[7] == recorded.anchor
