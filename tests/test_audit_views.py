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


# -- messages that say what happened ----------------------------------------------------------------------------


def dumps(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def sha(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def rechain(lines: list[bytes], edit: Any = None, key: Any = None, principal: str = "",
            keep_heads: bool = False) -> list[bytes]:
    """The engineer's tool: ``edit`` each record (None drops it), renumber and rechain; with ``key`` re-sign every
    checkpoint as ``principal``; with ``keep_heads`` leave each checkpoint's signed fields as they were."""
    from upgrader.audit.log import NAMESPACE, checkpoint_statement
    from upgrader.trust.sshsig import fingerprint, public_key_blob, sign

    out: list[bytes] = []
    prev = "0" * 64
    for line in lines:
        rec = json.loads(line)
        rec = edit(rec) if edit else rec
        if rec is None:
            continue
        rec["seq"], rec["prev"] = len(out) + 1, prev
        if rec["event"] == "checkpoint" and key is not None and not keep_heads:
            fp = fingerprint(public_key_blob(key.public_key()))
            rec["checkpoint"] = {"seq": len(out), "head": prev, "signer": principal, "key": fp,
                                 "signature": sign(key, checkpoint_statement(len(out), prev, rec["run"], principal,
                                                                             rec["time"]), NAMESPACE)}
        out.append(dumps(rec))
        prev = sha(out[-1])
    return out


def verify(home: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    rc, out = cli(home, capsys, "audit", "verify", "--json", *extra)
    return rc, json.loads(out)


def checkpoints(lines: list[bytes]) -> list[int]:
    return [n for n, line in enumerate(lines, 1) if json.loads(line)["event"] == "checkpoint"]


def test_a_checkpoint_whose_head_no_longer_matches_is_head_mismatch_not_bad_signature(
        recorded: Recorded, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A line edited and the chain rebuilt, the checkpoint left as signed: its signature is sound, its head is not
    the line before it any more -> "head mismatch". A checkpoint whose signature itself was damaged -> "bad
    signature"."""
    log = home / "audit" / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    first = checkpoints(lines)[0]

    def approver(rec: dict[str, Any]) -> dict[str, Any]:
        if rec["event"] == "phase_finished" and rec["phase"] == "install":
            rec["outcome"] = "failed"
        return rec

    log.write_bytes(b"".join(rechain(lines, approver)))
    rc, report = verify(home, capsys)
    assert rc == ALTERED and report["problem"] == "head mismatch" and report["bad_line"] == first
    assert "signature is sound" in report["message"] and "rewritten after it was signed" in report["message"]

    rec = json.loads(lines[first - 1])
    sig = rec["checkpoint"]["signature"]
    body = sig.splitlines()
    body[3] = body[3][:10] + ("A" if body[3][10] != "A" else "B") + body[3][11:]
    rec["checkpoint"]["signature"] = "\n".join(body)
    damaged = list(lines)
    damaged[first - 1] = dumps(rec)
    log.write_bytes(b"".join(damaged))
    rc, report = verify(home, capsys)
    assert rc == ALTERED and report["problem"] == "bad signature" and report["bad_line"] == first


def test_a_log_rewritten_and_re_signed_is_rewritten_against_the_anchor_and_a_cut_one_is_truncated(
        recorded: Recorded, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With the operator's own key: the log rewritten (an outcome changed) and every checkpoint signed again
    verifies on its own, but against the anchor the engineer printed it is "rewritten" at the anchor's line;
    the log cut after the first run is "truncated"."""
    from upgrader.trust.keys import load_private_key

    log = home / "audit" / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    key = load_private_key(home / "keys" / "operator")
    principal = json.loads(lines[checkpoints(lines)[0] - 1])["checkpoint"]["signer"]

    def outcome(rec: dict[str, Any]) -> dict[str, Any]:
        if rec["event"] == "phase_finished" and rec["phase"] == "install":
            rec["outcome"] = "failed"
        return rec

    log.write_bytes(b"".join(rechain(lines, outcome, key=key, principal=principal)))
    rc, report = verify(home, capsys)
    assert rc == 0, report["message"]  # without the anchor, the operator's key makes it INTACT: why anchors matter
    seq = int(recorded.anchor.split(":")[0])
    rc, report = verify(home, capsys, "--anchor", recorded.anchor)
    assert rc == ALTERED and report["problem"] == "rewritten" and report["bad_line"] == seq
    assert report["message"].startswith(f"line {seq}: rewritten") and "truncated" not in report["message"]

    log.write_bytes(b"".join(lines[:checkpoints(lines)[0]]))
    rc, report = verify(home, capsys, "--anchor", recorded.anchor)
    assert rc == ALTERED and report["problem"] == "truncated" and "cut off the end" in report["message"]


def test_json_counts_count_the_whole_file_when_verification_stops_early(
        recorded: Recorded, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    total = len(recorded.log.splitlines())
    k = edit_one_outcome(home, recorded.upgrade_run)
    rc, report = verify(home, capsys)
    assert rc == ALTERED and report["bad_line"] == k < total
    assert report["entries"] == total and report["valid_entries"] == k - 1


def test_anchored_note_names_entries_after_the_anchor_only_when_there_are_some(
        recorded: Recorded, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = recorded.log.splitlines(keepends=True)
    last = checkpoints(lines)[-1]
    at_end = f"{last}:{sha(lines[last - 1])}"       # the checkpoint line itself, the last line of the log
    assert last == len(lines)
    rc, report = verify(home, capsys, "--anchor", at_end)
    assert rc == 0 and "not anchored" not in report["verdict"]
    rc, report = verify(home, capsys, "--anchor", recorded.anchor)   # the checkpoint's head: one line after it
    assert rc == 0 and "(1 entry after it is chained but not anchored)" in report["verdict"]


def test_a_phases_detail_and_its_failure_are_separate_texts_in_the_html(
        recorded: Recorded, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The failed run's health phase: its detail and its failure are two blocks, never one run-together word."""
    from html.parser import HTMLParser

    out = tmp_path / "r.html"
    assert cli(home, capsys, "audit", "export", "--format", "html", "-o", str(out), "--lang", "en")[0] == 0
    rows = [json.loads(x) for x in recorded.log.splitlines()]
    both = [r["data"] for r in rows if r["event"] == "phase_finished" and r.get("data", {}).get("failure")
            and r["data"].get("detail")]
    assert both, "the failed run records a phase with a detail and a failure"

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.blocks: list[str] = [""]

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag in ("div", "td", "li", "br", "p", "tr"):
                self.blocks.append("")

        def handle_data(self, data: str) -> None:
            self.blocks[-1] += data

    page = Cells()
    page.feed(out.read_text())
    for d in both:
        assert any(b.strip() == str(d["failure"]).strip() for b in page.blocks), d["failure"]
        assert not any(str(d["detail"]) + str(d["failure"]) in b for b in page.blocks)
