"""`upgrader audit export`: the HTML report (self-contained, escaped, in English and Chinese, rendered by a
real headless Chromium), the JSON and the CSV export, from a log written by real runs."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import ARTIFACTS, kill_processes_under, plan_to, run_plan, upgrader

from upgrader.audit.log import AuditLog, verify_log
from upgrader.audit.report import CSV_COLUMNS, export, resolve_lang
from upgrader.cli import main
from upgrader.core.reasons import cause
from upgrader.cli.commands.demo import build_sandbox

ZH_LABELS = ("审计报告", "校验结果", "运行", "主机", "阶段", "结果", "回滚", "审批人", "策略说明")
CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass(frozen=True)
class History:
    home: Path                  # the sandbox: policy.yaml, keys/, audit/, runs/
    events: list[dict[str, Any]]
    upgrade_run: str            # 7.0.4.1 -> 7.0.4.2, committed
    failed_run: str             # 7.0.4.2 -> 7.0.4.5, unhealthy, rolled back automatically
    rollback_run: str           # `upgrader rollback` of the upgrade run, back to 7.0.4.1

    def runs(self) -> list[str]:
        return [self.upgrade_run, self.failed_run, self.rollback_run]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """A refused plan, an upgrade, a failing upgrade rolled back, and an operator's rollback, all for real."""
    tmp = tmp_path_factory.mktemp("history")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp))
        for var in ("UPGRADER_HOME", "UPGRADER_AUDIT_KEY", "UPGRADER_AUDIT_SIGNER", "UPGRADER_USER"):
            mp.delenv(var, raising=False)
        box = build_sandbox(tmp / "box")
        try:
            box.start_service()
            assert plan_to(box, "7.1.0.0")[0] == 3
            rc, plan = plan_to(box, "7.0.4.2")
            assert rc == 0 and run_plan(box, plan) == 0
            rc, plan = plan_to(box, "7.0.4.5")
            assert rc == 0 and run_plan(box, plan) == 1
            upgrade_run, failed_run = sorted(p.name for p in (box.root / "runs").iterdir())
            assert upgrader(box, "rollback", upgrade_run) == 0
        finally:
            box.stop_service()
            kill_processes_under(tmp)
    events = [json.loads(line) for line in (box.root / "audit" / "audit.jsonl").read_text().splitlines()]
    rollback_run = next(e["run"] for e in events if e["event"] == "rollback_requested")
    yield History(box.root, events, upgrade_run, failed_run, rollback_run)


def export_cli(history: History, out: Path, fmt: str, *extra: str) -> None:
    assert main(["--home", str(history.home), "audit", "export", "--format", fmt, "-o", str(out), *extra]) == 0


@pytest.fixture(scope="module")
def reports(history: History, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The history exported once per language as HTML, and as JSON and CSV."""
    out = tmp_path_factory.mktemp("reports")
    paths = {"en": out / "audit-en.html", "zh": out / "audit-zh.html", "json": out / "audit.json",
             "csv": out / "audit.csv"}
    export_cli(history, paths["en"], "html", "--lang", "en")
    export_cli(history, paths["zh"], "html", "--lang", "zh")
    export_cli(history, paths["json"], "json")
    export_cli(history, paths["csv"], "csv")
    return paths


# -- reading HTML back ----------------------------------------------------------------------------------------

LABEL_TAGS = {"h1", "h2", "h3", "h4", "th", "caption"}
VOID = {"meta", "br", "img", "link", "input", "hr", "source", "base", "col", "wbr", "embed", "area", "track"}
BLOCK = {"br", "p", "div", "section", "header", "footer", "main", "table", "thead", "tbody", "tr", "td", "th", "ul",
         "li", "h1", "h2", "h3", "h4", "pre", "title"}


class Page(HTMLParser):
    """The parts of an HTML document the tests look at: tags, attributes, text, text per class and labels."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self.styles: list[str] = []
        self.labels: list[str] = []
        self.by_class: dict[str, list[str]] = {}
        self._stack: list[tuple[str, list[str]]] = []
        self._label: list[str] | None = None
        self.feed(html)
        self.close()

    @property
    def text(self) -> str:
        """The text as a reader sees it: blocks and cells apart, inline elements run together."""
        return " ".join("".join(self.chunks).split())

    def class_text(self, cls: str) -> str:
        return " ".join(" ".join(self.by_class.get(cls, [])).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in BLOCK:
            self.chunks.append(" ")
        if tag in VOID:
            return
        self._stack.append((tag, (dict(attrs).get("class") or "").split()))
        if tag in LABEL_TAGS:
            self._label = []

    def handle_endtag(self, tag: str) -> None:
        if tag in BLOCK:
            self.chunks.append(" ")
        while self._stack:
            open_tag, _ = self._stack.pop()
            if open_tag in LABEL_TAGS and self._label is not None:
                self.labels.append(" ".join("".join(self._label).split()))
                self._label = None
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1][0] == "style":
            self.styles.append(data)
            return
        self.chunks.append(data)
        if self._label is not None:
            self._label.append(data)
        for cls in {c for _, classes in self._stack for c in classes}:
            self.by_class.setdefault(cls, []).append(data)


def outside_references(html: str) -> list[str]:
    """Everything in the document that would make a browser fetch something or leave the file."""
    page = Page(html)
    found = [f"<{tag}>" for tag, _ in page.tags if tag in {"script", "img", "link", "iframe", "object", "embed",
                                                             "video", "audio", "source", "base", "form", "svg"}]
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            v = (value or "").strip().lower()
            if name.startswith("on") or "://" in v or v.startswith(("//", "javascript:", "data:")):
                found.append(f"<{tag} {name}={value!r}>")
            if name in ("href", "src") and not v.startswith("#"):
                found.append(f"<{tag} {name}={value!r}>")
    css = " ".join(page.styles).lower()
    found += [f"css {x}" for x in ("url(", "@import", "@font-face") if x in css]
    return found


# -- the HTML report ------------------------------------------------------------------------------------------


def test_html_report_opens_with_the_verification_result_verdict_and_last_checkpoint(
        history: History, reports: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The report starts with intact/altered, the verdict sentence `audit verify` prints, and the last checkpoint."""
    capsys.readouterr()
    assert main(["--home", str(history.home), "audit", "verify", "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    page = Page(reports["en"].read_text())
    text = page.text
    cp = verified["last_checkpoint"]
    assert text.index("Verification result") < text.index("INTACT") < text.index(f"Run {history.upgrade_run}")
    assert verified["verdict"] in text
    assert f"line {cp['line']}, signs seq {cp['seq']}, head {cp['head']}, signed by operator@customer" in text
    assert "completeness after the last checkpoint is not proven" in text


def test_html_report_summarises_each_run_with_who_when_hosts_versions_approvals_outcome_and_duration(
        history: History, reports: dict[str, Path]) -> None:
    """Each run's summary names the operator, start, hosts, from and to, the approver and key, outcome, duration."""
    page = Page(reports["en"].read_text())
    accepted = [e for e in history.events if e["event"] == "approval_accepted"]
    assert len(accepted) == 2
    for run, versions, outcome in ((history.upgrade_run, "7.0.4.1 → 7.0.4.2", "succeeded"),
                                   (history.failed_run, "7.0.4.2 → 7.0.4.5", "failed and rolled back")):
        summary = page.text[page.text.index(f"Run {run}"):]
        summary = summary[:summary.index("Policy explanation")]
        started = next(e for e in history.events if e["run"] == run and e["event"] == "run_started")
        approval = next(e["data"] for e in accepted if e["run"] == run)
        assert f"Started {started['time'][:10]} {started['time'][11:19]} UTC" in summary
        assert "Operator operator@customer" in summary and started["actor"]["key"] in summary
        assert f"app-01 {versions}" in summary
        assert approval["approver"] == "engineer@vendor" and "engineer@vendor" in summary
        assert approval["key"] in summary
        assert f"Outcome {outcome}" in summary
        assert re.search(r"Duration \d+\.\d+ s", summary)
    rollback = page.text[page.text.index(f"Rollback run {history.rollback_run}"):]
    assert f"Rollback of run {history.upgrade_run}" in rollback and "rolled back as requested" in rollback


def test_html_report_shows_each_hosts_phase_timeline_with_probe_results(history: History,
                                                                         reports: dict[str, Path]) -> None:
    """Every recorded phase appears in the host's timeline with its result and detail; observe lists its probes."""
    text = Page(reports["en"].read_text()).text
    section = text[text.index(f"Run {history.upgrade_run}"):text.index(f"Run {history.failed_run}")]
    finished = [e for e in history.events if e["run"] == history.upgrade_run and e["event"] == "phase_finished"]
    assert [e["phase"] for e in finished] == ["preflight", "backup", "stop", "install", "start", "observe"]
    timeline = section[section.index("Phase timeline"):]
    started = [e for e in history.events if e["run"] == history.upgrade_run and e["event"] == "phase_started"]
    for s, e in zip(started, finished):
        assert f"{s['phase']} {s['time'][11:23]} " in timeline, "each phase row shows its start time"
        assert f"{e['outcome']} {e['data']['detail']}" in timeline
    probes = finished[-1]["data"]["result"]["probes"]
    assert probes and all(f"✓ {p['probe']} {p['detail']}" in timeline for p in probes)
    assert "Host finished" in timeline and "committed Running after: 7.0.4.2" in timeline


def test_html_report_explains_every_policy_rule_with_its_reason(history: History,
                                                                 reports: dict[str, Path]) -> None:
    """Each rule of each decision, and each pre-flight check, appears with its status and reason, also for a refused plan."""
    text = Page(reports["en"].read_text()).text
    decisions = [(e["run"], h) for e in history.events if e["event"] in ("run_started", "plan_created")
                 for h in e["data"]["hosts"]]
    assert len(decisions) >= 4
    for _, h in decisions:
        for rule in h["decision"]["rules"]:
            assert f"{rule['rule']} {rule['status']} {rule['reason']}" in text
        for check in h.get("checks") or []:
            assert f"{check['check']} (Pre-flight checks) {check['status']} {check['reason']}" in text
    refused = next(h for e in history.events if e["event"] == "plan_created" and e["outcome"] == "refused"
                   for h in e["data"]["hosts"])
    assert any(r["status"] == "fail" for r in refused["decision"]["rules"])
    assert "Decision: refused" in text and "Decision: allowed" in text


def test_html_report_highlights_rollbacks_with_their_cause_and_outcome(history: History,
                                                                        reports: dict[str, Path]) -> None:
    """A rolled-back host stands out in a rollback box with the recorded cause and the rolled_back outcome."""
    page = Page(reports["en"].read_text())
    cause = next(e["data"]["cause"] for e in history.events
                 if e["run"] == history.failed_run and e["event"] == "rollback_started")
    assert "never healthy" in cause
    boxes = page.class_text("rollback-box")
    assert f"Rollback cause: {cause}" in boxes and "Outcome: rolled_back" in boxes
    assert "Running after: 7.0.4.2" in boxes
    assert "requested by the operator" in boxes, "the operator's rollback is highlighted too"
    assert cause in page.class_text("rollback") and "Rollback started" in page.class_text("rollback")
    runs = [attrs.get("class", "") for tag, attrs in page.tags if tag == "section" and "run" in
            (attrs.get("class") or "").split()]
    assert runs == ["run", "run has-rollback", "run has-rollback"]


def test_html_report_in_chinese_has_every_label_translated_and_the_data_as_recorded(
        history: History, reports: dict[str, Path]) -> None:
    """With --lang zh every label is Chinese (and with en none is), while run ids, hosts and reasons stay as recorded."""
    zh = Page(reports["zh"].read_text())
    en = Page(reports["en"].read_text())
    for label in ZH_LABELS:
        assert label in zh.text
    assert zh.labels and [x for x in zh.labels if not CJK.search(x)] == []
    assert en.labels and [x for x in en.labels if CJK.search(x)] == []
    assert len(zh.labels) == len(en.labels)
    for run in history.runs():
        assert run in zh.text
    # statuses and causes are said in Chinese (test_the_chinese_report_has_no_english_reason_text checks them all)
    assert "app-01" in zh.text and "已回滚" in zh.text and "rolled_back" not in zh.text
    recorded = next(e["data"]["cause"] for e in history.events if e["event"] == "rollback_started")
    assert recorded in en.text and recorded not in zh.text
    assert cause(recorded, "zh", technical=False) in zh.text
    assert '<html lang="zh-CN">' in reports["zh"].read_text()


def test_html_report_needs_nothing_outside_the_file(reports: dict[str, Path]) -> None:
    """No scripts, images, fonts, stylesheets or links to anything outside the file, in either language."""
    for lang in ("en", "zh"):
        html = reports[lang].read_text()
        assert outside_references(html) == []
        assert "@media print" in html


def test_html_report_prints_each_run_on_new_pages_without_cutting_rows(reports: dict[str, Path]) -> None:
    """The print style starts each run on a new page, keeps rows and boxes whole and repeats table headers."""
    css = " ".join(Page(reports["en"].read_text()).styles)
    print_css = css[css.index("@media print"):]
    assert re.search(r"\.run\s*\{[^}]*break-before:\s*page", print_css)
    assert re.search(r"tr,[^{]*\{[^}]*break-inside:\s*avoid", print_css)
    assert re.search(r"thead\s*\{[^}]*display:\s*table-header-group", print_css)
    assert re.search(r"body\s*\{[^}]*background:\s*none", print_css)


def untrusted_log(path: Path) -> list[dict[str, Any]]:
    """A log whose every field a report shows holds markup (as a hostile command output or inventory could)."""
    log = AuditLog(path, {"user": "<b>u</b>", "host": "h", "key": "<i>k</i>", "principal": "<script>alert(0)</script>"})
    run = "<script>alert(1)</script>"
    host = '"><img src=x onerror=alert(2)>'
    t = "2026-11-26T10:00:0{}.000+00:00"
    log.append("run_started", run=run, time=t.format(0), data={
        "target": "</style><link rel=stylesheet href=https://evil.example/x.css>",
        "approvals": [{"approver": "<script>alert(3)</script>", "key": "SHA256:<u>", "comment": "=HYPERLINK(1)"}],
        "hosts": [{"host": host, "current": "7.0.4.1", "target": "<iframe src=//evil.example>",
                   "decision": {"allowed": True, "rules": [{"rule": "<b>r</b>", "status": "pass",
                                                            "reason": "</td></tr></table><script>alert(4)</script>"}]}}]})
    log.append("host_started", run=run, host=host, time=t.format(1))
    log.append("phase_started", run=run, host=host, phase="<svg onload=alert(5)>", time=t.format(2))
    log.append("phase_finished", run=run, host=host, phase="<svg onload=alert(5)>", outcome="ok", time=t.format(3),
               data={"seconds": 1, "detail": 'a,"b"\nc', "result": {"probes": [
                   {"probe": "<img src=x>", "ok": True, "detail": "javascript:alert(6)"}]}})
    log.append("rollback_started", run=run, host=host, time=t.format(4),
               data={"cause": '<a href="https://evil.example">click</a>'})
    log.append("host_finished", run=run, host=host, outcome="rolled_back", time=t.format(5),
               data={"version": "<script>alert(7)</script>"})
    log.append("run_finished", run=run, time=t.format(6), data={"exit_code": 1})
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_html_report_escapes_every_recorded_value(tmp_path: Path) -> None:
    """Markup in any recorded field is shown as text: no tag, attribute or link from the log gets into the page."""
    events = untrusted_log(tmp_path / "audit.jsonl")
    result = verify_log(tmp_path / "audit.jsonl", signers=None)
    for lang in ("en", "zh"):
        out = tmp_path / f"hostile-{lang}.html"
        export("html", events, result, "verdict <script>alert(8)</script>", out, lang=lang)
        html = out.read_text()
        assert outside_references(html) == []
        page = Page(html)
        assert {tag for tag, _ in page.tags} <= {"html", "head", "meta", "title", "style", "body", "main", "header",
                                                 "h1", "h2", "h3", "h4", "p", "section", "div", "span", "table",
                                                 "thead", "tbody", "tr", "th", "td", "ul", "li", "a", "strong", "br",
                                                 "pre", "footer", "wbr"}
        for shown in ("<script>alert(1)</script>", '"><img src=x onerror=alert(2)>', "<script>alert(3)</script>",
                      "</td></tr></table><script>alert(4)</script>", "<svg onload=alert(5)>", "javascript:alert(6)",
                      '<a href="https://evil.example">click</a>', "<script>alert(7)</script>",
                      "</style><link rel=stylesheet href=https://evil.example/x.css>"):
            assert shown in page.text, f"{shown!r} must be shown as text"


# -- JSON and CSV -------------------------------------------------------------------------------------------------


def test_json_export_holds_the_verification_with_its_verdict_and_every_event(
        history: History, reports: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON export is {"verification": verify's result and verdict, "events": the log's events as recorded}."""
    capsys.readouterr()
    assert main(["--home", str(history.home), "audit", "verify", "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    doc = json.loads(reports["json"].read_text())
    assert set(doc) == {"verification", "events", "cases"}  # cases: one record per run (test_audit_case.py)
    assert doc["verification"] == verified
    assert doc["verification"]["intact"] is True and "NOT proven" in doc["verification"]["verdict"]
    assert doc["events"] == history.events


def event_rows(text: str) -> list[dict[str, str]]:
    """The event rows of a CSV export: after its verification row, read by the column header."""
    reader = csv.reader(io.StringIO(text, newline=""))
    assert next(reader)[0] == "verification"
    header = next(reader)
    return [dict(zip(header, row)) for row in reader]


def test_csv_export_has_one_row_per_event_with_the_documented_columns(history: History,
                                                                       reports: dict[str, Path]) -> None:
    """The CSV has the documented header, one row per event, and details that parse back to the event's data."""
    first, header, *_ = csv.reader(io.StringIO(reports["csv"].read_text(), newline=""))
    assert first[:2] == ["verification", "INTACT"] and first[5].endswith("allowed_signers")
    assert len(first[6]) == 64
    rows = event_rows(reports["csv"].read_text())
    assert tuple(header) == CSV_COLUMNS == (
        "seq", "time", "run", "host", "event", "phase", "outcome", "actor_user", "actor_principal", "actor_key",
        "details")
    assert len(rows) == len(history.events)
    for row, e in zip(rows, history.events):
        assert int(row["seq"]) == e["seq"] and row["time"] == e["time"] and row["event"] == e["event"]
        assert row["run"] == (e["run"] or "") and row["host"] == (e["host"] or "")
        assert row["outcome"] == (e["outcome"] or "") and row["actor_principal"] == e["actor"]["principal"]
        assert row["actor_key"] == e["actor"]["key"]
        expected = e.get("data") if e["event"] != "checkpoint" else e["checkpoint"]
        assert (json.loads(row["details"]) if row["details"] else None) == expected


def test_csv_export_keeps_commas_quotes_and_newlines_and_defuses_formulas(tmp_path: Path) -> None:
    """Values with commas, quotes and newlines round-trip; a value a spreadsheet would run as a formula does not."""
    events = untrusted_log(tmp_path / "audit.jsonl")
    out = tmp_path / "hostile.csv"
    export("csv", events, verify_log(tmp_path / "audit.jsonl", signers=None), "v", out, lang=None)
    rows = event_rows(out.read_text())
    assert len(rows) == len(events)
    finished = next(r for r in rows if r["event"] == "phase_finished")
    assert json.loads(finished["details"])["detail"] == 'a,"b"\nc'
    started = next(r for r in rows if r["event"] == "run_started")
    assert json.loads(started["details"])["approvals"][0]["comment"] == "=HYPERLINK(1)"
    formula = AuditLog(tmp_path / "f.jsonl", {}).append("run_started", run="=cmd|' /C calc'!A0", host="@SUM(1)",
                                                         time="2026-11-26T10:00:00.000+00:00")
    export("csv", [formula], verify_log(tmp_path / "f.jsonl", signers=None), "v", tmp_path / "f.csv")
    row = event_rows((tmp_path / "f.csv").read_text())[0]
    assert row["run"] == "'=cmd|' /C calc'!A0" and row["host"] == "'@SUM(1)"


# -- language ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given, env, lang", [
    ("zh", {"LANG": "en_US.UTF-8"}, "zh"),
    ("en", {"LANG": "zh_CN.UTF-8"}, "en"),
    (None, {"LANG": "zh_CN.UTF-8"}, "zh"),
    (None, {"LC_MESSAGES": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}, "zh"),
    (None, {"LC_ALL": "en_US.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),
    (None, {"LC_ALL": "zh_TW.UTF-8"}, "zh"),
    (None, {"LANG": "C.UTF-8"}, "en"),
    (None, {}, "en"),
])
def test_report_language_is_the_one_given_else_the_locales(given: str | None, env: dict[str, str], lang: str) -> None:
    """--lang wins; otherwise LC_ALL, LC_MESSAGES, then LANG decide, zh* meaning Chinese."""
    assert resolve_lang(given, env) == lang


def test_export_without_lang_follows_the_locale(history: History, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`audit export --format html` without --lang writes Chinese labels under a zh_CN locale."""
    for var in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    export_cli(history, tmp_path / "zh.html", "html")
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    export_cli(history, tmp_path / "en.html", "html")
    assert "审计报告" in (tmp_path / "zh.html").read_text()
    assert "Audit report" in (tmp_path / "en.html").read_text() and "审计报告" not in (tmp_path / "en.html").read_text()


def test_export_of_an_altered_log_says_so_at_the_top_naming_the_line(history: History, tmp_path: Path) -> None:
    """Exporting an edited log still writes the report, which opens with ALTERED and the first bad line; exit 6."""
    home = tmp_path / "home"
    shutil.copytree(history.home / "keys", home / "keys")
    shutil.copy(history.home / "policy.yaml", home / "policy.yaml")
    (home / "audit").mkdir()
    lines = (history.home / "audit" / "audit.jsonl").read_bytes().splitlines(keepends=True)
    k = next(n for n, line in enumerate(lines, 1) if b'"phase":"install"' in line and b'"outcome":"ok"' in line)
    lines[k - 1] = lines[k - 1].replace(b'"outcome":"ok"', b'"outcome":"failed"')
    (home / "audit" / "audit.jsonl").write_bytes(b"".join(lines))
    out = tmp_path / "altered.html"
    assert main(["--home", str(home), "audit", "export", "--format", "html", "--lang", "en", "-o", str(out)]) == 6
    page = Page(out.read_text())
    assert page.text.index("ALTERED") < page.text.index("Runs at a glance")
    assert f"First bad line {k}" in page.text and f"line {k}: line {k} was edited" in page.text
    sections = [attrs.get("class") for tag, attrs in page.tags if tag == "section"]
    assert sections[0] == "card verify altered"


# -- in a real browser ------------------------------------------------------------------------------------------------


def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium to completion (its whole process group is killed if it hangs)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is needed for the report test: tests/run.sh installs it (apt-get install chromium)"
    proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"chromium did not finish within {timeout} s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_html_report_renders_in_headless_chromium_with_runs_hosts_and_outcomes(
        history: History, reports: dict[str, Path], tmp_path: Path, lang: str) -> None:
    """Chromium loads the report offline and its DOM shows every run, the host and the outcomes; a screenshot is kept."""
    report = reports[lang]
    assert outside_references(report.read_text()) == []
    profile = tmp_path / "chromium-profile"
    dom = chromium(f"--user-data-dir={profile}", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = Page(dom.stdout).text
    for run in history.runs():
        assert run in text
    assert "app-01" in text
    for outcome in (("已提交", "已回滚", "已恢复") if lang == "zh" else ("committed", "rolled_back", "restored")):
        assert outcome in text
    assert ("审计报告" if lang == "zh" else "Audit report") in text

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"audit-report-{lang}.png"
    shot.unlink(missing_ok=True)
    done = chromium(f"--user-data-dir={profile}", "--window-size=1280,3000", f"--screenshot={shot}", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def english_catalog(events: list[dict[str, Any]]) -> set[str]:
    """Every English reason, detail and cause the log holds (rules' and checks' reasons, the window's, phase
    details and failure kinds, probes' details, rollback causes, refusals): what a Chinese report must not show."""
    found: set[str] = set()

    def rules(host: object) -> None:
        if not isinstance(host, dict):
            return
        decision = host.get("decision") if isinstance(host.get("decision"), dict) else {}
        for r in [*decision.get("rules", []), *(host.get("checks") or [])]:
            if isinstance(r, dict) and r.get("reason"):
                found.add(str(r["reason"]))

    for e in events:
        d = e.get("data") if isinstance(e.get("data"), dict) else {}
        for h in d.get("hosts") or []:
            rules(h)
        for key in ("detail", "reason", "cause", "error", "failure"):
            if d.get(key):
                found.update(str(d[key]).split("\n  -> "))
        window = d.get("window")
        if isinstance(window, dict) and window.get("reason"):
            found.add(str(window["reason"]))
        result = d.get("result") if isinstance(d.get("result"), dict) else {}
        for p in result.get("probes") or []:
            if isinstance(p, dict) and p.get("detail"):
                found.add(str(p["detail"]))
    return found


def test_the_chinese_report_has_no_english_reason_text(history: History, reports: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """Chinese all the way: the zh report of a log with a refused rule, a failed phase, a host rolled back and an
    operator's rollback, as headless Chromium renders it, holds none of the log's English reasons, details,
    causes or failure kinds, no untranslated marker, and every status badge is Chinese; a screenshot is kept."""
    from upgrader.core.reasons import UNTRANSLATED, WORDS

    events = history.events
    refused = [r for e in events if e["event"] == "plan_created" and e["outcome"] == "refused"
               for h in e["data"]["hosts"] for r in h["decision"]["rules"] if r["status"] == "fail"]
    assert refused, "the log has a refused rule"
    assert any(e["event"] == "phase_finished" and e["outcome"] == "failed" for e in events)
    assert any(e["event"] == "host_finished" and e["outcome"] == "rolled_back" for e in events)
    catalog = english_catalog(events)
    assert len(catalog) > 30 and refused[0]["reason"] in catalog
    profile = tmp_path / "chromium-profile"
    dom = chromium(f"--user-data-dir={profile}", "--dump-dom", reports["zh"].as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Page(dom.stdout)
    english = Page(reports["en"].read_text()).text
    assert refused[0]["reason"] in english and len([t for t in catalog if t in english]) > 30  # shown in English
    left = sorted(t for t in catalog if t in page.text)
    assert left == [], f"English in the Chinese report: {left}"
    assert UNTRANSLATED + "：" not in page.text
    badges = page.class_text("badge")
    assert badges and not re.search(r"\b(?:" + "|".join(sorted(WORDS["status"], key=len, reverse=True)) + r")\b",
                                    badges.replace("sha256", "")), badges
    for word in ("已提交", "已回滚", "已恢复", "不通过", "失败", "不健康"):
        assert word in page.text

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "audit-report-zh-all-chinese.png"
    shot.unlink(missing_ok=True)
    done = chromium(f"--user-data-dir={profile}", "--window-size=1280,4000", f"--screenshot={shot}",
                    reports["zh"].as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
