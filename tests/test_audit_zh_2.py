"""Issue 20, the attacker's fifth review (attack20-r5), finding 7: the Chinese outputs of the auditor's tools hold
no English. Played through the shipped CLI over the real sshd: a committed run, the operator's rollback of it, a run
the engineer's controller started outside the window by its own skewed clock (the host's clock says outside), a
plan made after the last checkpoint, then the log rewritten with the operator key (a phase removed). `audit verify
--witness --lang zh`, `audit case --lang zh` and the zh HTML export then say in Chinese: the note about the entries
after the last checkpoint, the window finding's reason, the phases done / not done, the rollback's phases, and the
HTML's rule names and phase facts; and none of them holds an English reason of the log (the zh report's check)."""

from __future__ import annotations

import re

import pytest
from conftest import plan_to, upgrader

from fleet import Fleet
from test_audit_report import Page, english_catalog
from test_audit_witness import rechain
from test_audit_witness_attacks_2 import (  # noqa: F401 - fleet is a fixture
    ALTERED, fleet, log_of, records, run_once, run_outside_the_window)
from upgrader.cli import main
from upgrader.core.reasons import UNTRANSLATED
from upgrader.trust.keys import load_private_key

#: the English texts attack20-r5 found in the Chinese outputs
ENGLISH = ("after the last checkpoint", "not covered by a signature", "is outside the service window",
           "working days", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday",
           " done", "not done", "verify_backup", "newer", "account=", "files=", "identical=", "seconds=", "None")


def said(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def witnessed_verdicts(capsys: pytest.CaptureFixture[str], f: Fleet, home: list[str], code: int) -> tuple[str, str]:
    """`audit verify --witness` in English and in Chinese, both with exit ``code``: their outputs."""
    out = []
    for lang in ("en", "zh"):
        rc, text = said(capsys, *home, "audit", "verify", "--witness", str(f.box.inventory), "--lang", lang)
        assert rc == code, text
        out.append(text)
    return out[0], out[1]


def no_english(text: str, catalog: set[str]) -> None:
    """Neither the English the attacker found nor any English reason of the log, nor an untranslated marker."""
    assert [w for w in ENGLISH if w in text] == [], text
    assert sorted(t for t in catalog if t in text) == [], text
    assert UNTRANSLATED + "：" not in text, text


def test_the_chinese_outputs_of_a_rollback_a_window_finding_and_a_rewritten_phase_are_chinese(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    f = fleet
    home = ["--home", str(f.box.root)]
    committed, _, _ = run_once(f)
    assert upgrader(f.box, "rollback", committed, "--yes") == 0
    rollback = next(e["run"] for e in records(log_of(f)) if e["event"] == "rollback_requested")
    outside, _, _ = run_outside_the_window(f, monkeypatch)
    plan_to(f.box, "7.0.4.2")  # a plan (refused: already there) after the last checkpoint: not covered by a signature yet
    catalog = english_catalog(records(log_of(f)))
    assert len(catalog) > 10

    # the log's own verdict: the note about the uncovered plan
    rc, en = said(capsys, *home, "audit", "verify", "--lang", "en")
    assert rc == 0 and "1 entry after the last checkpoint are not covered by a signature" in en, en
    rc, zh = said(capsys, *home, "audit", "verify", "--lang", "zh")
    assert rc == 0 and "注意：最后检查点之后的 1 条记录没有签名保护（计划、批准，或正在开始的运行的开头）" in zh, zh
    no_english(zh, catalog)
    # the hosts' verdict: the window judged by the host's clock (ALTERED)
    en, zh = witnessed_verdicts(capsys, f, home, ALTERED)
    assert "is outside the service window: before it opens at" in en, en
    assert re.search(r"（(?:UTC|Etc/GMT[+-]\d+)）不在服务时间窗口内：窗口 \d\d:\d\d 才开放（工作日 ", zh), zh
    no_english(zh, catalog)

    # the rollback's case: its phases (verify_backup among them) in Chinese
    rc, en = said(capsys, *home, "audit", "case", rollback, "--witness", str(f.box.inventory), "--lang", "en")
    assert "verify_backup" in en, en
    rc, zh = said(capsys, *home, "audit", "case", rollback, "--witness", str(f.box.inventory), "--lang", "zh")
    assert "校验备份" in zh, zh
    no_english(zh, catalog)
    rc, zh = said(capsys, *home, "audit", "case", outside, "--witness", str(f.box.inventory), "--lang", "zh")
    no_english(zh, catalog)

    # the HTML: rule names, the phases' facts (account, files, seconds, identical), the notes and the findings
    out = f.box.root / "report-zh.html"
    rc, _ = said(capsys, *home, "audit", "export", "--format", "html", "--lang", "zh", "-o", str(out),
                 "--witness", str(f.box.inventory))
    assert rc == ALTERED
    page = Page(out.read_text(encoding="utf-8")).text
    assert "版本更新" in page and "运行账户=" in page and "与升级前一致=是" in page, page
    no_english(page, catalog)

    # the engineer rewrites the log with the operator key: the committed run's install phase removed
    key = load_private_key(str(f.box.operator_key))
    lines = [line for line in log_of(f).read_bytes().splitlines(keepends=True)
             if not (b'"run":"' + committed.encode() + b'"' in line and b'"phase":"install"' in line)]
    log_of(f).write_bytes(b"".join(rechain(lines, lambda rec: rec, key, "operator@customer")))
    en, zh = witnessed_verdicts(capsys, f, home, ALTERED)
    assert "install done on the host, install not done in the log" in en, en
    assert re.search(r"主机记为 安装已执行，日志为 安装未执行", zh), zh
    no_english(zh, catalog)
    rc, zh = said(capsys, *home, "audit", "case", committed, "--witness", str(f.box.inventory), "--lang", "zh")
    assert rc == ALTERED and "主机记为 安装已执行，日志为 安装未执行" in zh, zh
    no_english(zh, catalog)
