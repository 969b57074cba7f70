"""Issue 20, the attacker's review (attack20), attacks 3 and 4 on an honest, untouched log:

- 3: a second approval of the same plan, signed after the run, must not become the run's "approved ... created"
  time or file: `approval_created` records the approval's digest and `audit case` joins by it, only from before the
  run started; an approval whose creation the log does not hold is "created: unknown", never a neighbour's time.
- 4: `upgrader rollback RUN` later undoes the run: `audit case RUN` lists that follow-up run with its outcome, in
  text (en, zh), JSON, the HTML case section and the cases CSV."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import approve, kill_processes_under, plan_to, upgrader
from test_audit_case import case_rows

from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox, build_sandbox


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, str, Path, Path]]:
    tmp = tmp_path_factory.mktemp("later")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp))
        for var in ("UPGRADER_HOME", "UPGRADER_AUDIT_KEY", "UPGRADER_AUDIT_SIGNER", "UPGRADER_USER"):
            mp.delenv(var, raising=False)
        b = build_sandbox(tmp / "box")
        try:
            b.start_service()
            rc, plan = plan_to(b, "7.0.4.2")
            assert rc == 0
            used = approve(b, plan)
            assert upgrader(b, "run", str(plan), "--approval", str(used)) == 0
            run = sorted(p.name for p in (b.root / "runs").iterdir())[-1]
            later = approve(b, plan, "--comment", "signed again after the run")
            assert upgrader(b, "rollback", run, "--yes") == 0
        finally:
            b.stop_service()
            kill_processes_under(tmp)
        yield b, run, used, later


def case_json(b: Sandbox, run: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["--home", str(b.root), "audit", "case", run, "--json"]) == 0
    got: dict[str, Any] = json.loads(capsys.readouterr().out)["case"]
    return got


def field(text: str, name: str) -> str:
    found = re.search(rf"^{name}: (\S+)$", text, re.M)
    assert found
    return found.group(1)


def test_a_later_approval_of_the_same_plan_is_not_the_runs_approval(
        box: tuple[Sandbox, str, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    b, run, used, later = box
    events = [json.loads(x) for x in (b.root / "audit" / "audit.jsonl").read_text().splitlines()]
    made = [e for e in events if e["event"] == "approval_created"]
    assert len(made) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", e["data"]["digest"]) for e in made)
    assert made[0]["data"]["digest"] != made[1]["data"]["digest"]
    case = case_json(b, run, capsys)
    [a] = case["approvals"]
    assert a["file"] == str(used) and a["digest"] == made[0]["data"]["digest"]
    assert a["created"] == made[0]["time"] and a["created"] < case["started"]
    assert a["created"][:16] == field(used.read_text(), "created").replace("Z", "")[:16]
    # the later approval (made after the run finished) is in the log, and is not taken for the run's
    assert made[1]["data"]["file"] == str(later) and made[1]["time"] > case["finished"]


def test_an_approval_whose_creation_the_log_does_not_hold_is_created_unknown(
        box: tuple[Sandbox, str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The log without the run's own approval_created line (a log kept from after it; verification says it was
    cut, the case still must not borrow the later approval's time)."""
    b, run, _, _ = box
    lines = (b.root / "audit" / "audit.jsonl").read_text().splitlines(keepends=True)
    first = next(n for n, x in enumerate(lines) if json.loads(x)["event"] == "approval_created")
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(lines[:first] + lines[first + 1:]))
    capsys.readouterr()
    assert main(["--home", str(b.root), "audit", "case", run, str(log), "--json"]) == 6  # the chain is broken
    [a] = json.loads(capsys.readouterr().out)["case"]["approvals"]
    assert a["created"] is None and a["file"] is None
    main(["--home", str(b.root), "audit", "case", run, str(log), "--lang", "en"])
    assert "created unknown, expires" in capsys.readouterr().out
    main(["--home", str(b.root), "audit", "case", run, str(log), "--lang", "zh"])
    assert "创建于 未知，有效期至" in capsys.readouterr().out


def test_the_runs_case_lists_its_later_rollback_in_every_view(
        box: tuple[Sandbox, str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    b, run, _, _ = box
    case = case_json(b, run, capsys)
    [later] = case["followups"]
    assert later["kind"] == "rollback" and later["run"].startswith(f"{run}/rollback-")
    assert later["exit_code"] in (0, "0") and later["hosts"] == {"app-01": "restored"}
    assert case["hosts"][0]["outcome"] == "committed"  # what the run itself did, unchanged
    monkeypatch.setenv("COLUMNS", "2000")
    capsys.readouterr()
    assert main(["--home", str(b.root), "audit", "case", run, "--lang", "en"]) == 0
    en = capsys.readouterr().out
    assert f"later: rollback {later['run']} of this run, started {later['started']}: exit 0 {{'app-01': 'restored'}}" \
        in en
    assert main(["--home", str(b.root), "audit", "case", run, "--lang", "zh"]) == 0
    zh = capsys.readouterr().out
    assert f"后续：本次运行的回滚 {later['run']}，开始于 {later['started']}：退出码 0（app-01：" in zh
    for lang in ("en", "zh"):
        out = tmp_path / f"{lang}.html"
        assert main(["--home", str(b.root), "audit", "export", "--format", "html", "-o", str(out), "--lang",
                     lang]) == 0
        row = case_rows(out.read_text(), 1)["followups"]
        assert later["run"] in row and (("本次运行的回滚" in row and "退出码 0" in row) if lang == "zh" else
                                        ("rollback" in row and "exit code 0" in row))
    assert main(["--home", str(b.root), "audit", "export", "--format", "json", "-o", str(tmp_path / "a.json")]) == 0
    doc = json.loads((tmp_path / "a.json").read_text())
    assert next(c for c in doc["cases"] if c["run"] == run)["followups"] == case["followups"]
    assert main(["--home", str(b.root), "audit", "export", "--format", "csv", "-o", str(tmp_path / "a.csv")]) == 0
    _, header, *rows = csv.reader((tmp_path / "a.cases.csv").open(newline=""))
    row = dict(zip(header, next(r for r in rows if r[0] == run)))
    assert row["later_runs"] == f"rollback {later['run']}: exit 0 {{'app-01': 'restored'}}"


def test_the_host_records_the_rollback_under_the_id_the_log_gives_it_and_agrees(
        box: tuple[Sandbox, str, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    b, run, _, _ = box
    case = case_json(b, run, capsys)
    [later] = case["followups"]
    ledger = b.root / "hosts" / ".upgrader-app-01"
    recs = [json.loads(x) for x in (ledger / "runs.jsonl").read_text().splitlines()]
    assert [(r["run"], r["as"], r["outcome"]) for r in recs] == [
        (run, run, "committed"), (run, later["run"], "rolled_back")]
    assert [s["op"] for s in recs[1]["steps"]][:2] == ["stop", "rollback"]  # only the rollback's own steps
    for which in (run, later["run"]):
        capsys.readouterr()
        rc = main(["--home", str(b.root), "audit", "case", which, "--witness", str(b.inventory), "--json"])
        assert rc == 0, capsys.readouterr().out
        [account] = json.loads(capsys.readouterr().out)["case"]["witnesses"]["accounts"]
        assert account == {"host": "app-01", "differences": [], "doubts": []}
