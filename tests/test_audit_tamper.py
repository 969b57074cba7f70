"""`upgrader audit verify` against a real audit log written by real runs, tampered with in every way
an auditor worries about: each is caught with exit 6 and the right line named; the untouched log
verifies and says what it proves and what it does not. Checkpoints verify with stock ssh-keygen."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import kill_processes_under, plan_to, run_plan

from upgrader.audit.log import AuditLog
from upgrader.cli import main
from upgrader.cli.commands.demo import build_sandbox
from upgrader.trust.keys import generate_key, load_private_key
from upgrader.trust.sshsig import fingerprint, public_key_blob, sign

ALTERED = 6


@dataclass(frozen=True)
class Recorded:
    root: Path                  # the sandbox: policy.yaml, keys/
    log: bytes                  # the audit log exactly as the runs left it
    upgrade_run: str            # 7.0.4.1 -> 7.0.4.2, committed
    failed_run: str             # 7.0.4.2 -> 7.0.4.5, unhealthy, rolled back automatically
    later_checkpoint: dict[str, Any]   # the checkpoint the later run printed (its result.json)
    later_result: Path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """Two real runs on the sample middleware (an upgrade, then a failing one rolled back): two checkpoints."""
    tmp = tmp_path_factory.mktemp("recorded")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp))
        for var in ("UPGRADER_HOME", "UPGRADER_AUDIT_KEY", "UPGRADER_AUDIT_SIGNER", "UPGRADER_USER"):
            mp.delenv(var, raising=False)
        box = build_sandbox(tmp / "box")
        try:
            box.start_service()
            rc, plan = plan_to(box, "7.0.4.2")
            assert rc == 0, f"plan 7.0.4.2 exited {rc}"
            assert run_plan(box, plan) == 0
            rc, plan = plan_to(box, "7.0.4.5")
            assert rc == 0, f"plan 7.0.4.5 exited {rc}"
            assert run_plan(box, plan) == 1
        finally:
            box.stop_service()
            kill_processes_under(tmp)
    upgrade_run, failed_run = sorted(p.name for p in (box.root / "runs").iterdir())
    later_result = box.root / "runs" / failed_run / "result.json"
    yield Recorded(box.root, (box.root / "audit" / "audit.jsonl").read_bytes(), upgrade_run, failed_run,
                   json.loads(later_result.read_text())["checkpoint"], later_result)


@dataclass(frozen=True)
class Outcome:
    rc: int
    report: dict[str, Any]      # --json
    text: str                   # what a person sees


class Auditor:
    """A copy of the sandbox's policy, keys and audit log to tamper with, and `upgrader audit verify` on it."""

    def __init__(self, recorded: Recorded, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = home
        self.capsys = capsys
        shutil.copy(recorded.root / "policy.yaml", home / "policy.yaml")
        shutil.copytree(recorded.root / "keys", home / "keys")
        self.log = home / "audit" / "audit.jsonl"
        self.log.parent.mkdir()
        self.log.write_bytes(recorded.log)

    @property
    def lines(self) -> list[bytes]:
        return self.log.read_bytes().splitlines(keepends=True)

    def write(self, lines: list[bytes]) -> None:
        self.log.write_bytes(b"".join(lines))

    def verify(self, *extra: str) -> Outcome:
        self.capsys.readouterr()
        rc_json = main(["--home", str(self.home), "audit", "verify", "--json", *extra])
        report = json.loads(self.capsys.readouterr().out)
        rc = main(["--home", str(self.home), "audit", "verify", *extra])
        text = self.capsys.readouterr().out
        assert rc == rc_json, "the exit code must not depend on --json"
        return Outcome(rc, report, text)


@pytest.fixture
def auditor(recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Auditor:
    home = tmp_path / "home"
    home.mkdir()
    return Auditor(recorded, home, capsys)


def line_of(lines: list[bytes], **match: Any) -> int:
    """The 1-based number of the first line whose fields equal ``match``."""
    for n, line in enumerate(lines, 1):
        rec = json.loads(line)
        if all(rec.get(k) == v for k, v in match.items()):
            return n
    raise AssertionError(f"no line with {match}")


def checkpoint_lines(lines: list[bytes]) -> list[int]:
    return [n for n, line in enumerate(lines, 1) if json.loads(line)["event"] == "checkpoint"]


def dumps(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def sha(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


# -- the untouched log ---------------------------------------------------------------------------------


def test_recorded_log_holds_two_runs_each_closed_by_a_checkpoint(recorded: Recorded, auditor: Auditor) -> None:
    """The real runs left a log whose two runs each end with a checkpoint line (what the tamper tests rely on)."""
    lines = auditor.lines
    cps = checkpoint_lines(lines)
    assert [json.loads(lines[n - 1])["run"] for n in cps] == [recorded.upgrade_run, recorded.failed_run]
    assert cps[-1] == len(lines)
    assert recorded.later_checkpoint["line"] == cps[-1] and recorded.later_checkpoint["seq"] == cps[-1] - 1


def test_untouched_log_verifies_naming_how_many_entries_chain_and_that_completeness_is_not_proven(
        auditor: Auditor) -> None:
    """The untouched log exits 0, counts the entries of the valid chain and says completeness is not proven."""
    n = len(auditor.lines)
    out = auditor.verify()
    assert out.rc == 0
    assert out.report["intact"] is True and out.report["entries"] == n and out.report["checkpoints"] == 2
    assert f"{n} entries form an intact hash chain with 2 valid signed checkpoint(s)" in out.text
    assert "completeness after the last checkpoint you hold elsewhere is NOT proven" in out.text
    assert "OK" not in out.text.split()


def test_untouched_log_with_the_later_runs_anchor_is_complete_up_to_it(recorded: Recorded, auditor: Auditor) -> None:
    """With the checkpoint the later run printed as --anchor, the untouched log is proven complete up to it."""
    cp = recorded.later_checkpoint
    out = auditor.verify("--anchor", f"{cp['seq']}:{cp['head']}")
    assert out.rc == 0
    assert out.report["anchor_checked"] is True
    assert "complete up to the anchor you hold" in out.text


def test_without_allowed_signers_an_untouched_log_cannot_be_checked_exit_2_with_the_chain_result(
        auditor: Auditor) -> None:
    """No policy naming audit signers and no --allowed-signers: the real `upgrader` process exits 2 (not 6, not 0),
    says it cannot check the checkpoints and what to give, and reports the chain's own result beside it."""
    (auditor.home / "policy.yaml").unlink()  # the shipped default policy names no audit signers
    n = len(auditor.lines)
    proc = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(auditor.home), "audit", "verify"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "CANNOT CHECK" in proc.stdout and "ALTERED" not in proc.stdout and "INTACT" not in proc.stdout
    assert "cannot check the checkpoints: give --allowed-signers or --policy" in proc.stdout
    assert f"{n} entries form an unbroken hash chain with 2 checkpoint(s)" in proc.stdout
    out = auditor.verify()
    assert out.rc == 2
    assert out.report["status"] == "cannot_check" and out.report["intact"] is False
    assert out.report["chain_intact"] is True and out.report["signers_known"] is False
    signed = auditor.verify("--allowed-signers", str(auditor.home / "keys" / "allowed_signers"))
    assert signed.rc == 0 and signed.report["status"] == "intact"
    for lang, stamp in (("en", "CANNOT CHECK"), ("zh", "无法核验")):
        report = auditor.home / f"report-{lang}.html"
        assert main(["--home", str(auditor.home), "audit", "export", "--format", "html", "--lang", lang,
                     "-o", str(report)]) == 2
        html = report.read_text(encoding="utf-8")
        assert stamp in html and 'class="card verify cannot_check"' in html and ">INTACT<" not in html


def test_without_allowed_signers_an_edited_log_is_still_exit_2_naming_the_edit_beside_it(
        recorded: Recorded, auditor: Auditor) -> None:
    """Cannot check is the verdict without signers, and the chain's own result names the edited line."""
    (auditor.home / "policy.yaml").unlink()
    lines = auditor.lines
    k = line_of(lines, run=recorded.upgrade_run, event="phase_finished", phase="install")
    lines[k - 1] = lines[k - 1].replace(b'"outcome":"ok"', b'"outcome":"failed"')
    auditor.write(lines)
    out = auditor.verify()
    assert out.rc == 2
    assert out.report["chain_intact"] is False and out.report["bad_line"] == k
    assert f"the chain on its own: altered at line {k}:" in out.report["verdict"]


def test_stripping_every_checkpoint_and_rebuilding_the_chain_after_editing_the_approver_exits_6(
        recorded: Recorded, auditor: Auditor) -> None:
    """The attack: change who approved, drop every checkpoint, renumber and rechain every line. With the operators'
    allowed signers (the policy's) the log is not INTACT: exit 6 naming the first finished run's first line."""
    lines = auditor.lines
    k = line_of(lines, run=recorded.upgrade_run, event="approval_accepted")
    assert b"engineer@vendor" in lines[k - 1]
    kept = [json.loads(line) for line in lines if json.loads(line)["event"] != "checkpoint"]
    forged: list[bytes] = []
    for seq, rec in enumerate(kept, 1):
        if rec["event"] == "approval_accepted" and rec["run"] == recorded.upgrade_run:
            rec = json.loads(json.dumps(rec).replace("engineer@vendor", "ciso@customer"))
        rec["seq"], rec["prev"] = seq, sha(forged[-1]) if forged else "0" * 64
        forged.append(dumps(rec))
    auditor.write(forged)
    first = line_of(forged, run=recorded.upgrade_run)
    out = auditor.verify()
    assert out.rc == ALTERED, out.text
    assert out.report["status"] == "altered" and out.report["problem"] == "unsigned"
    assert out.report["bad_line"] == first
    assert out.report["message"].startswith(
        f"line {first}: {len(forged)} events, including a finished run, carry no valid signature")
    assert "ALTERED" in out.text and "INTACT" not in out.text and f"line {first}" in out.text
    proc = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(auditor.home), "audit", "verify"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == ALTERED and f"line {first}: " in proc.stdout


def test_removing_only_the_last_checkpoint_exits_6_naming_the_run_it_closed(
        recorded: Recorded, auditor: Auditor) -> None:
    """A finished run whose closing checkpoint was cut off the end is unsigned: exit 6 at that run's first line."""
    lines = auditor.lines
    auditor.write(lines[:-1])
    first = line_of(lines, run=recorded.failed_run)
    out = auditor.verify()
    assert out.rc == ALTERED
    assert out.report["problem"] == "unsigned" and out.report["bad_line"] == first
    uncovered = len(lines) - 1 - checkpoint_lines(lines)[0]
    assert f"{uncovered} events, including a finished run, carry no valid signature" in out.report["message"]


# -- edits ---------------------------------------------------------------------------------------------


def test_editing_one_field_of_one_line_exits_6_naming_that_line(recorded: Recorded, auditor: Auditor) -> None:
    """Changing one phase's outcome from ok to failed in one line is caught, naming that line."""
    lines = auditor.lines
    k = line_of(lines, run=recorded.upgrade_run, event="phase_finished", phase="install")
    assert b'"outcome":"ok"' in lines[k - 1]
    lines[k - 1] = lines[k - 1].replace(b'"outcome":"ok"', b'"outcome":"failed"')
    auditor.write(lines)
    out = auditor.verify()
    assert out.rc == ALTERED
    assert out.report["bad_line"] == k and out.report["problem"] == "edited"
    assert out.report["message"].startswith(f"line {k}: ")
    assert f"line {k}" in out.text and "ALTERED" in out.text


def test_an_edited_log_makes_the_upgrader_process_exit_6(recorded: Recorded, auditor: Auditor) -> None:
    """The real `upgrader` process (not only the in-process CLI) exits 6 and names the edited line on stdout."""
    lines = auditor.lines
    k = line_of(lines, run=recorded.failed_run, event="rollback_started")
    lines[k - 1] = lines[k - 1].replace(b'"cause":"', b'"cause":"(none) ')
    auditor.write(lines)
    proc = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(auditor.home), "audit", "verify"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == ALTERED, proc.stderr
    assert f"line {k}:" in proc.stdout


def test_editing_a_line_and_rechaining_every_later_line_fails_at_the_checkpoint_that_covers_it(
        recorded: Recorded, auditor: Auditor) -> None:
    """An attacker who edits a line and recomputes every later hash (and the checkpoint's head) breaks that signature."""
    lines = auditor.lines
    k = line_of(lines, run=recorded.upgrade_run, event="host_finished")
    rec = json.loads(lines[k - 1])
    # the version after (an outcome the run_finished line contradicts is caught at that line, before the checkpoint)
    rec["data"]["version"] = "6.9.9.9"
    lines[k - 1] = dumps(rec)
    for i in range(k, len(lines)):      # 0-based i is line i+1
        nxt = json.loads(lines[i])
        nxt["prev"] = sha(lines[i - 1])
        if nxt["event"] == "checkpoint":
            nxt["checkpoint"]["head"] = nxt["prev"]
        lines[i] = dumps(nxt)
    auditor.write(lines)
    covering = next(n for n in checkpoint_lines(lines) if n > k)
    out = auditor.verify()
    assert out.rc == ALTERED
    assert out.report["bad_line"] == covering and out.report["problem"] == "bad signature"
    assert out.report["message"].startswith(f"line {covering}: ")
    assert f"line {covering}" in out.text


def test_deleting_a_line_exits_6_naming_where_the_sequence_jumps(recorded: Recorded, auditor: Auditor) -> None:
    """Removing one line is caught at the line that now stands in its place."""
    lines = auditor.lines
    k = line_of(lines, run=recorded.upgrade_run, event="phase_finished", phase="backup")
    del lines[k - 1]
    auditor.write(lines)
    out = auditor.verify()
    assert out.rc == ALTERED
    assert out.report["bad_line"] == k and out.report["problem"] == "missing"
    assert f"line {k}:" in out.text and "removed" in out.report["message"]


def test_swapping_two_lines_exits_6_as_reordered_naming_the_first(recorded: Recorded, auditor: Auditor) -> None:
    """Two neighbouring lines swapped are reported as reordered (not as missing), at the first of them."""
    lines = auditor.lines
    k = line_of(lines, run=recorded.failed_run, event="phase_finished", phase="stop")
    lines[k - 1], lines[k] = lines[k], lines[k - 1]
    auditor.write(lines)
    out = auditor.verify()
    assert out.rc == ALTERED
    assert out.report["bad_line"] == k and out.report["problem"] == "reordered"
    assert f"line {k}:" in out.text and f"line {k + 1}" in out.report["message"]


# -- truncation ------------------------------------------------------------------------------------------


def test_cutting_the_tail_after_a_checkpoint_without_anchor_verifies_but_says_completeness_is_unproven(
        recorded: Recorded, auditor: Auditor) -> None:
    """Without an anchor a log cut right after the first checkpoint verifies, and the verdict says so honestly."""
    lines = auditor.lines
    first = checkpoint_lines(lines)[0]
    auditor.write(lines[:first])
    out = auditor.verify()
    assert out.rc == 0
    assert out.report["entries"] == first and out.report["anchor_checked"] is False
    assert "NOT proven" in out.report["verdict"] and "--anchor" in out.report["verdict"]


@pytest.mark.parametrize("form", ["printed", "result.json"])
def test_cutting_the_tail_after_a_checkpoint_exits_6_with_the_later_runs_anchor(
        recorded: Recorded, auditor: Auditor, form: str) -> None:
    """The later run's checkpoint as --anchor (as printed, or its result.json) proves lines were cut off the end."""
    lines = auditor.lines
    first = checkpoint_lines(lines)[0]
    auditor.write(lines[:first])
    cp = recorded.later_checkpoint
    anchor = f"{cp['seq']}:{cp['head']}" if form == "printed" else str(recorded.later_result)
    out = auditor.verify("--anchor", anchor)
    assert out.rc == ALTERED
    assert out.report["problem"] == "truncated" and out.report["bad_line"] == first + 1
    assert out.report["message"].startswith(f"line {first + 1}: ")
    assert f"line {cp['seq']}" in out.report["message"]
    assert f"line {first + 1}" in out.text


# -- checkpoints -------------------------------------------------------------------------------------------


def test_flipping_one_base64_character_of_a_checkpoint_signature_exits_6_naming_it(auditor: Auditor) -> None:
    """One changed character inside the first checkpoint's signature is caught at that checkpoint's line."""
    lines = auditor.lines
    c = checkpoint_lines(lines)[0]
    rec = json.loads(lines[c - 1])
    armored = rec["checkpoint"]["signature"].split("\n")
    body = armored[3]          # inside the signature blob, after the key and namespace
    i = len(body) // 2
    armored[3] = body[:i] + ("A" if body[i] != "A" else "B") + body[i + 1:]
    rec["checkpoint"]["signature"] = "\n".join(armored)
    lines[c - 1] = dumps(rec)
    auditor.write(lines)
    out = auditor.verify()
    assert out.rc == ALTERED
    assert out.report["bad_line"] == c and out.report["problem"] == "bad signature"
    assert f"line {c}:" in out.text


def test_a_checkpoint_re_signed_with_an_untrusted_key_exits_6_naming_it(auditor: Auditor, tmp_path: Path) -> None:
    """The last checkpoint re-signed, statement and all, by a key not in allowed_signers is caught at its line."""
    from upgrader.audit.log import NAMESPACE, checkpoint_statement

    generate_key(tmp_path / "mallory", "operator@customer")
    mallory = load_private_key(tmp_path / "mallory")
    lines = auditor.lines
    c = checkpoint_lines(lines)[-1]
    rec = json.loads(lines[c - 1])
    cp = rec["checkpoint"]
    cp["key"] = fingerprint(public_key_blob(mallory.public_key()))
    cp["signature"] = sign(mallory, checkpoint_statement(cp["seq"], cp["head"], rec["run"], cp["signer"],
                                                         rec["time"]), NAMESPACE)
    lines[c - 1] = dumps(rec)
    auditor.write(lines)
    out = auditor.verify()
    assert out.rc == ALTERED
    assert out.report["bad_line"] == c and out.report["problem"] == "bad signature"
    assert "is not in" in out.report["message"] and f"line {c}:" in out.text


# -- appended and torn lines ---------------------------------------------------------------------------------


def test_a_perfect_line_appended_for_an_already_checkpointed_run_exits_6_naming_it(
        recorded: Recorded, auditor: Auditor) -> None:
    """A forged line with the right sequence number and hash link, claiming an event of a closed run, is caught."""
    n = len(auditor.lines)
    last = json.loads(auditor.lines[-1])
    forged = AuditLog(auditor.log, last["actor"]).append(
        "phase_finished", run=recorded.upgrade_run, host="app-01", phase="observe", outcome="ok",
        time=last["time"], data={"seconds": 2.0, "detail": "healthy: 5 probes passed"})
    assert forged["seq"] == n + 1 and forged["prev"] == sha(auditor.lines[n - 1])
    out = auditor.verify()
    assert out.rc == ALTERED
    assert out.report["bad_line"] == n + 1 and out.report["problem"] == "forged"
    assert recorded.upgrade_run in out.report["message"] and f"line {n + 1}:" in out.text


def test_a_forged_line_whose_run_id_looks_like_console_markup_is_reported_as_written(
        recorded: Recorded, auditor: Auditor) -> None:
    """A forged run id such as "[/bold]" is quoted in the verdict as it is, and verify still exits 6."""
    n = len(auditor.lines)
    last = json.loads(auditor.lines[-1])
    AuditLog(auditor.log, last["actor"]).append("host_started", run="[/bold][red]", host="app-01", time=last["time"])
    out = auditor.verify()
    assert out.rc == ALTERED
    assert out.report["bad_line"] == n + 1 and "[/bold][red]" in out.text


def test_a_torn_last_line_exits_6_naming_it(auditor: Auditor) -> None:
    """The last line cut in half (a torn write or a cut file) is caught at that line."""
    data = auditor.log.read_bytes()
    n = len(auditor.lines)
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    auditor.log.write_bytes(data[:start + (len(data) - start) // 2])
    out = auditor.verify()
    assert out.rc == ALTERED
    assert out.report["bad_line"] == n and out.report["problem"] == "torn"
    assert f"line {n}:" in out.text


# -- standard tools ------------------------------------------------------------------------------------------


def test_every_checkpoint_verifies_with_stock_ssh_keygen_from_the_documented_statement(
        recorded: Recorded, auditor: Auditor, tmp_path: Path) -> None:
    """Each checkpoint's statement, built from the line's fields by hand, verifies with `ssh-keygen -Y verify`."""
    ssh_keygen = shutil.which("ssh-keygen")
    assert ssh_keygen, "ssh-keygen (openssh-client) is needed: tests/run.sh installs it"
    lines = auditor.lines
    for c in checkpoint_lines(lines):
        rec = json.loads(lines[c - 1])
        cp = rec["checkpoint"]
        assert cp["head"] == sha(lines[c - 2]) and cp["seq"] == c - 1
        statement = (f"upgrader audit checkpoint 1\nseq: {cp['seq']}\nhead: {cp['head']}\n"
                     f"run: {rec['run'] or '-'}\nsigner: {cp['signer']}\ntime: {rec['time']}\n")
        sig = tmp_path / f"checkpoint-{c}.sig"
        sig.write_text(cp["signature"])
        cmd = [ssh_keygen, "-Y", "verify", "-n", "upgrader-audit", "-f", str(recorded.root / "keys" / "allowed_signers"),
               "-I", "operator@customer", "-s", str(sig)]
        good = subprocess.run(cmd, input=statement.encode(), capture_output=True, timeout=60)
        assert good.returncode == 0, good.stderr.decode()
        assert b'Good "upgrader-audit" signature for operator@customer' in good.stdout + good.stderr
        bad = subprocess.run(cmd, input=statement.replace(f"seq: {cp['seq']}", f"seq: {cp['seq'] + 1}").encode(),
                             capture_output=True, timeout=60)
        assert bad.returncode != 0, "ssh-keygen must refuse a statement that was changed"


# -- attacks on the verdict itself (the checkpoint line's own fields, the uncovered tail, types, signers) ------------


def rechain(lines: list[bytes], edit: Any = None, key: Any = None, principal: str = "") -> list[bytes]:
    """The attacker's tool: ``edit`` each record (return None to drop it), renumber and rechain every line; with
    ``key``, re-sign every checkpoint as ``principal``."""
    from upgrader.audit.log import NAMESPACE, checkpoint_statement

    out: list[bytes] = []
    prev = "0" * 64
    for line in lines:
        rec = json.loads(line)
        rec = edit(rec) if edit else rec
        if rec is None:
            continue
        rec["seq"], rec["prev"] = len(out) + 1, prev
        if rec["event"] == "checkpoint" and key is not None:
            fp = fingerprint(public_key_blob(key.public_key()))
            rec["checkpoint"] = {"seq": len(out), "head": prev, "signer": principal, "key": fp,
                                 "signature": sign(key, checkpoint_statement(len(out), prev, rec["run"], principal,
                                                                             rec["time"]), NAMESPACE)}
            rec["actor"] = {**rec["actor"], "key": fp, "principal": principal}
        out.append(dumps(rec))
        prev = sha(out[-1])
    return out


def test_a_forged_last_checkpoint_line_actor_outcome_data_and_key_exits_6_even_with_an_anchor(
        recorded: Recorded, auditor: Auditor) -> None:
    """A6: the checkpoint line's own fields are not signed, so their shape is fixed: an added host, phase, outcome
    or data, a changed checkpoint.key or actor makes the line edited (exit 6), with or without --anchor, and the
    export does not pass the forged values off as an intact log."""
    lines = auditor.lines
    c = checkpoint_lines(lines)[-1]
    anchor = f"{c - 1}:{sha(lines[c - 2])}"
    forgeries = {
        "data": lambda r: {**r, "data": {"approver": "ceo@customer", "reason": "approved by the CEO"}},
        "outcome": lambda r: {**r, "outcome": "committed", "host": "app-01", "phase": "commit"},
        "key": lambda r: {**r, "checkpoint": {**r["checkpoint"], "key": "SHA256:FORGEDFINGERPRINT"}},
        "actor": lambda r: {**r, "actor": {**r["actor"], "user": "mallory", "host": "evil"}},
    }
    for what, forge in forgeries.items():
        forged = list(lines)
        forged[c - 1] = dumps(forge(json.loads(lines[c - 1])))
        auditor.write(forged)
        for extra in ((), ("--anchor", anchor)):
            out = auditor.verify(*extra)
            assert out.rc == ALTERED, (what, extra, out.text)
            assert out.report["bad_line"] == c, (what, out.report["message"])
    report = auditor.home / "forged.csv"
    assert main(["--home", str(auditor.home), "audit", "export", "--format", "csv", "-o", str(report)]) == ALTERED


def test_the_last_run_edited_with_its_checkpoint_and_run_finished_dropped_exits_6_at_its_first_uncovered_line(
        recorded: Recorded, auditor: Auditor) -> None:
    """A1: the last run's approver changed, its checkpoint and run_finished removed, the chain rebuilt: the tail
    holds more than a run's opening, so it is not proven (exit 6, its first line), unless an anchor covers it;
    a homoglyph of run_finished is an unknown event (an edit)."""
    lines = auditor.lines
    cps = checkpoint_lines(lines)

    def edit(rec: dict[str, Any], finished: str | None) -> dict[str, Any] | None:
        if rec["seq"] == cps[-1]:
            return None
        if rec["run"] == recorded.failed_run and rec["event"] == "run_finished":
            return None if finished is None else {**rec, "event": finished}
        if rec["seq"] > cps[-2] and isinstance(rec.get("data"), dict) and rec["data"].get("approver"):
            rec["data"]["approver"] = "ceo@customer"
        return rec

    auditor.write(rechain(lines, lambda r: edit(r, None)))
    first_uncovered = cps[-2] + 1
    out = auditor.verify()
    assert out.rc == ALTERED and out.report["problem"] == "unsigned", out.text
    assert out.report["bad_line"] >= first_uncovered and "not proven" in out.report["message"]
    assert main(["--home", str(auditor.home), "audit", "export", "--format", "html",
                 "-o", str(auditor.home / "r.html")]) == ALTERED

    auditor.write(rechain(lines, lambda r: edit(r, "run_finish\u0435d")))
    out = auditor.verify()
    assert out.rc == ALTERED and out.report["problem"] == "edited" and "unknown event" in out.report["message"]

    # every checkpoint and every run_finished stripped: not "intact with 0 checkpoints"
    auditor.write(rechain(lines, lambda r: None if r["event"] in ("checkpoint", "run_finished") else r))
    out = auditor.verify()
    assert out.rc == ALTERED and out.report["problem"] == "unsigned" and out.report["checkpoints"] == 0


def test_an_honest_run_opening_after_the_last_checkpoint_is_a_note_and_an_anchor_vouches_for_more(
        recorded: Recorded, auditor: Auditor) -> None:
    """Only what a run writes before it touches a host may stand uncovered (a note, exit 0); a line beyond that is
    not proven unless the --anchor you hold covers it."""
    lines = auditor.lines
    log = AuditLog(auditor.log, json.loads(lines[-1])["actor"])
    log.append("plan_created", time="2099-01-01T00:00:00.000+00:00", data={"target": "7.0.4.6"})
    log.append("run_started", run="r-next", time="2099-01-01T00:00:01.000+00:00", data={"target": "7.0.4.6"})
    out = auditor.verify()
    assert out.rc == 0 and out.report["uncovered_after_last_checkpoint"] == 2, out.text
    log.append("host_started", run="r-next", host="app-01", time="2099-01-01T00:00:02.000+00:00")
    n = len(auditor.lines)
    out = auditor.verify()
    assert out.rc == ALTERED and out.report["bad_line"] == n and "not proven" in out.report["message"]
    anchored = auditor.verify("--anchor", f"{n}:{sha(auditor.lines[-1])}")
    assert anchored.rc == 0 and anchored.report["anchor_checked"] is True, anchored.text


def test_fields_of_the_wrong_type_are_an_edited_line_not_a_crash(auditor: Auditor) -> None:
    """A4: a run id, event, time, monotonic reading (attack20r9 M3) or checkpoint field of another JSON type: exit 6
    naming the line (no traceback)."""
    lines = auditor.lines
    c = checkpoint_lines(lines)[0]
    for n, change in ((1, {"run": ["x"]}), (2, {"event": ["run_started"]}), (3, {"time": 5}), (2, {"data": [1]}),
                      (3, {"mono": "12.5"}), (2, {"mono": True}),
                      (c, {"checkpoint": {"seq": "x", "head": [], "signer": {}, "key": 1, "signature": None}})):
        rebuilt = rechain(lines, lambda r, n=n, change=change: {**r, **change} if r["seq"] == n else r)
        auditor.write(rebuilt)
        out = auditor.verify()
        assert out.rc == ALTERED and out.report["bad_line"] == n, (change, out.text)


def test_an_allowed_signers_file_without_an_audit_entry_cannot_check_exit_2(auditor: Auditor) -> None:
    """A5a: a file that lists nobody for upgrader-audit (a comment, or only approvers) is "cannot check", not
    "altered"."""
    empty = auditor.home / "empty_signers"
    empty.write_text("# operators: to be filled in\n")
    out = auditor.verify("--allowed-signers", str(empty))
    assert out.rc == 2 and out.report["status"] == "cannot_check" and out.report["chain_intact"] is True


def test_a_former_operator_whose_key_expired_cannot_backdate_and_resign_the_log(
        auditor: Auditor, tmp_path: Path) -> None:
    """A3: validity is judged when the log is verified: an operator whose valid-before has passed re-signs a
    backdated, edited log and it is refused (exit 6, the signer not allowed now)."""
    import datetime as dt

    generate_key(tmp_path / "former", "former")
    former = load_private_key(tmp_path / "former")
    signers = auditor.home / "signers"
    pub = (tmp_path / "former.pub").read_text().split()
    signers.write_text((auditor.home / "keys" / "allowed_signers").read_text() +
                       f'former@customer namespaces="upgrader-audit",valid-before="20200101Z" {pub[0]} {pub[1]}\n')

    def backdate(rec: dict[str, Any]) -> dict[str, Any]:
        rec["time"] = (dt.datetime.fromisoformat(rec["time"]).replace(year=2019)).isoformat(timespec="milliseconds")
        if isinstance(rec.get("data"), dict) and rec["data"].get("approver"):
            rec["data"]["approver"] = "ceo@customer"
        return rec

    auditor.write(rechain(auditor.lines, backdate, former, "former@customer"))
    out = auditor.verify("--allowed-signers", str(signers))
    assert out.rc == ALTERED and out.report["problem"] == "bad signature", out.text
    assert "not allowed now" in out.report["message"] and "is not valid at" in out.report["message"]


def test_export_reports_the_bytes_it_verified_even_when_the_log_changes_between_reads(
        recorded: Recorded, auditor: Auditor) -> None:
    """A2: the log is a pipe that gives the honest log to the first reader and a forged one to any second reader:
    export reads once, so the report is the verified log and there is no second read to forge."""
    import os
    import threading
    import time

    honest = auditor.log.read_bytes()
    forged = honest.replace(b'"approver":"', b'"approver":"ceo-')
    auditor.log.unlink()
    os.mkfifo(auditor.log)
    second_read: list[bool] = []

    def feed() -> None:
        with open(auditor.log, "wb") as f:
            f.write(honest)
        time.sleep(0.5)  # the first reader has read to the end and closed: a reader now is a second one
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                fd = os.open(auditor.log, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.02)
                continue
            second_read.append(True)
            os.write(fd, forged)
            os.close(fd)
            return

    feeder = threading.Thread(target=feed)
    feeder.start()
    report = auditor.home / "report.json"
    rc = main(["--home", str(auditor.home), "audit", "export", "--format", "json", "-o", str(report)])
    feeder.join()
    assert not second_read
    assert rc == 0, report.read_text()[:3000]
    assert b"ceo-" not in report.read_bytes()


def test_an_operator_listed_by_a_principal_pattern_signs_checkpoints_that_verify(tmp_path: Path) -> None:
    """A5b: allowed_signers lists the operator as ``*@customer``: the run signs as a name that pattern allows, and
    the untouched log is intact."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path))
        for var in ("UPGRADER_HOME", "UPGRADER_AUDIT_KEY", "UPGRADER_AUDIT_SIGNER", "UPGRADER_USER"):
            mp.delenv(var, raising=False)
        box = build_sandbox(tmp_path / "box")
        signers = box.root / "keys" / "allowed_signers"
        signers.write_text(signers.read_text().replace("operator@customer ", "*@customer "))
        try:
            box.start_service()
            rc, plan = plan_to(box, "7.0.4.2")
            assert rc == 0
            assert run_plan(box, plan) == 0
        finally:
            box.stop_service()
            kill_processes_under(tmp_path)
        assert main(["--home", str(box.root), "audit", "verify"]) == 0
        last = json.loads((box.root / "audit" / "audit.jsonl").read_bytes().splitlines()[-1])
        assert last["event"] == "checkpoint" and last["checkpoint"]["signer"].endswith("@customer")
