"""One record per change (issue 20): `upgrader audit case RUN_ID` answers, for each demo run, who requested it,
who approved it when, under which policy and window, what ran, what happened and which checkpoint proves it —
field by field against the plans, approvals, runs and results the demo left; `upgrader plan digest` equals the
README's recomputation (the README's own snippet is run)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import kill_processes_under, plan_to, run_plan

from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox, build_sandbox

README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass(frozen=True)
class Demo:
    box: Sandbox
    plans: list[Path]
    runs: list[str]             # [committed upgrade, failing upgrade rolled back]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("case")
    plans = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp))
        for var in ("UPGRADER_HOME", "UPGRADER_AUDIT_KEY", "UPGRADER_AUDIT_SIGNER", "UPGRADER_USER"):
            mp.delenv(var, raising=False)
        box = build_sandbox(tmp / "box")
        try:
            box.start_service()
            for version, want in (("7.0.4.2", 0), ("7.0.4.5", 1)):
                rc, plan = plan_to(box, version)
                assert rc == 0 and run_plan(box, plan) == want
                plans.append(plan)
        finally:
            box.stop_service()
            kill_processes_under(tmp)
    yield Demo(box, plans, sorted(p.name for p in (box.root / "runs").iterdir()))


def case_of(demo: Demo, run: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["--home", str(demo.box.root), "audit", "case", run, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["verification"]["headline"] == "INTACT"
    case: dict[str, Any] = shown["case"]
    return case


@pytest.mark.parametrize("which", [0, 1])
def test_audit_case_answers_the_auditors_questions_field_by_field(
        demo: Demo, which: int, capsys: pytest.CaptureFixture[str]) -> None:
    run = demo.runs[which]
    rundir = demo.box.root / "runs" / run
    plan = json.loads(demo.plans[which].read_text())
    result = json.loads((rundir / "result.json").read_text())
    case = case_of(demo, run[:18], capsys)          # a prefix naming one run is enough
    assert case["run"] == run
    # who requested: the plan's requester and the key that signed it; the plan's digest
    assert case["requested"]["user"] == plan["requester"]["user"]
    assert case["requested"]["key"] == plan["requester"]["key"]
    capsys.readouterr()
    assert main(["plan", "digest", str(demo.plans[which])]) == 0
    assert case["requested"]["plan"] == capsys.readouterr().out.strip()
    # who approved, when: the approval file's own statement
    approval = next(demo.box.approvals.glob(f"{demo.plans[which].stem}-*.approval")).read_text()
    [a] = case["approvals"]
    assert f"approver: {a['approver']}" in approval and a["approver"] == "engineer@vendor"
    created = re.search(r"^created: (\S+)$", approval, re.M)
    expires = re.search(r"^expires: (\S+)$", approval, re.M)
    assert created and expires
    assert a["created"] is not None and a["created"][:16] == created.group(1).replace("Z", "")[:16]
    assert a["expires"][:19] == expires.group(1).replace("Z", "")[:19]
    assert re.fullmatch(r"[0-9a-f]{64}", a["digest"])
    # under which policy and window
    assert case["policy"]["source"] == str(demo.box.root / "policy.yaml")
    assert case["policy"]["sha256"] == plan["policy"]["sha256"] and case["policy"]["identity"]
    assert case["catalog"]["serial"] == plan["catalog"]["serial"] and case["catalog"]["signer"] == "vendor-release"
    assert isinstance(case["window"]["inside"], bool) and case["window"]["reason"]
    # what ran and what happened
    [host] = case["hosts"]
    assert host["host"] == "app-01" and host["to"] == plan["hosts"][0]["target"]
    phases = [p["phase"] for p in host["phases"]]
    assert phases[:4] == ["preflight", "backup", "stop", "install"]
    assert all(isinstance(p["seconds"], (int, float)) for p in host["phases"])
    assert case["downtime_seconds"] > 0 and host["downtime_seconds"] == case["downtime_seconds"]
    assert case["outcome"]["exit_code"] == result["exit_code"]
    assert host["outcome"] == ("committed" if which == 0 else "rolled_back")
    if which == 1:
        assert "rollback" in phases and "never healthy" in host["rollback_cause"]
    # which anchor proves it: the checkpoint the run printed (result.json)
    cp = result["checkpoint"]
    assert case["checkpoint"]["anchor"] == f"{cp['seq']}:{cp['head']}"
    assert case["checkpoint"]["signer"] == "operator@customer"
    assert case["witnesses"] is None


def test_audit_case_text_and_an_unknown_run(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["--home", str(demo.box.root), "audit", "case", demo.runs[1]]) == 0
    out = capsys.readouterr().out
    assert out.startswith("INTACT ") and "approved by: engineer@vendor" in out and "rolled back because" in out
    assert main(["--home", str(demo.box.root), "audit", "case", "no-such-run"]) == 2
    assert "no run in the audit log matches 'no-such-run'" in capsys.readouterr().err


def test_json_export_holds_a_case_per_run(demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.json"
    assert main(["--home", str(demo.box.root), "audit", "export", "--format", "json", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [c["run"] for c in doc["cases"]] == demo.runs
    assert doc["cases"][1] == case_of(demo, demo.runs[1], capsys)


def test_plan_digest_equals_the_readmes_recomputation(demo: Demo, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The README's snippet, run as written on each plan, prints what `upgrader plan digest` prints (and not the
    file's sha256sum)."""
    import hashlib

    text = README.read_text()
    snippet = text.split("<!-- plan-digest -->\n```python\n", 1)[1].split("```", 1)[0]
    zh = README.with_name("README.zh-CN.md").read_text()  # the Chinese auditor's section gives the same snippet
    assert zh.split("<!-- plan-digest -->\n```python\n", 1)[1].split("```", 1)[0] == snippet
    script = tmp_path / "digest.py"
    script.write_text(snippet)
    for plan in demo.plans:
        capsys.readouterr()
        assert main(["plan", "digest", str(plan)]) == 0
        ours = capsys.readouterr().out.strip()
        theirs = subprocess.run([sys.executable, str(script), str(plan)], capture_output=True, text=True,
                                check=True).stdout.strip()
        assert ours == theirs and ours != hashlib.sha256(plan.read_bytes()).hexdigest()


def test_html_rule_approval_on_approved_runs_shows_the_approval_not_skip(
        demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.html"
    assert main(["--home", str(demo.box.root), "audit", "export", "--format", "html", "-o", str(out),
                 "--lang", "en"]) == 0
    html = out.read_text()
    assert "checked when the run starts" not in html.split('class="card others"')[0]
    for run in demo.runs:
        case = case_of(demo, run, capsys)
        a = case["approvals"][0]
        assert f"approved by engineer@vendor, approval created {a['created']}, approval digest {a['digest']}" in html
        assert f"policy sha256 {case['policy']['sha256']}" in html
        assert f"downtime {case['downtime_seconds']} s" in html
    assert "service window at the start:" in html


def copy_evidence(demo: Demo, tmp_path: Path) -> tuple[Path, Path]:
    """What an auditor is given: copies of the plans and approvals folders (the demo's own stay untouched)."""
    import shutil

    plans, approvals = tmp_path / "plans", tmp_path / "approvals"
    shutil.copytree(demo.box.plans, plans)
    shutil.copytree(demo.box.approvals, approvals)
    return plans, approvals


def cross_check(demo: Demo, plans: Path, approvals: Path, capsys: pytest.CaptureFixture[str],
                *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(demo.box.root), "audit", "verify", "--plans", str(plans), "--approvals",
               str(approvals), *extra])
    return rc, capsys.readouterr().out


def test_plans_and_approvals_the_log_names_match_their_files(demo: Demo, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    plans, approvals = copy_evidence(demo, tmp_path)
    rc, out = cross_check(demo, plans, approvals, capsys)
    assert rc == 0, out
    assert out.startswith("INTACT ") and "every plan and approval the log names matches its file" in out
    rc, out = cross_check(demo, plans, approvals, capsys, "--json")
    doc = json.loads(out)
    check = doc["cross_check"]
    assert check["ok"] and not check["problems"]
    for plan in demo.plans:
        capsys.readouterr()
        assert main(["plan", "digest", str(plan)]) == 0
        digest = capsys.readouterr().out.strip()
        assert check["plans"][digest] == str(plans / plan.name)
    assert sorted(Path(f).name for f in check["approvals"].values()) == sorted(
        p.name for p in demo.box.approvals.glob("*.approval"))


def test_a_swapped_plan_file_is_caught_naming_the_file_both_digests_and_the_line(
        demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plans, approvals = copy_evidence(demo, tmp_path)
    first, second = plans / demo.plans[0].name, plans / demo.plans[1].name
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)         # the two plans swapped: each file now holds the other's plan
    second.write_bytes(a)
    digests = []
    for plan in demo.plans:
        capsys.readouterr()
        assert main(["plan", "digest", str(plan)]) == 0
        digests.append(capsys.readouterr().out.strip())
    rc, out = cross_check(demo, plans, approvals, capsys)
    assert rc == 6, out
    assert re.search(rf"MISMATCH file {re.escape(str(first))} has digest {digests[1]}, the log names {digests[0]} "
                     r"\(line \d+\)", out), out
    # a plan that is not there at all is named by the line that names it
    second.unlink()
    first.unlink()
    rc, out = cross_check(demo, plans, approvals, capsys, "--json")
    assert rc == 6
    problems = json.loads(out)["cross_check"]["problems"]
    assert {p["digest"] for p in problems} == set(digests)
    assert all(p["problem"] == f"plan digest {p['digest']} named by line {p['line']}: no file in {plans} has it"
               for p in problems)
    log = (demo.box.root / "audit" / "audit.jsonl").read_text().splitlines()
    for p in problems:  # the line named is a line of the log that names that plan
        assert json.loads(log[p["line"] - 1])["data"]["plan"] == p["digest"]


def test_an_approval_swapped_or_signed_by_an_unknown_key_is_caught(
        demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plans, approvals = copy_evidence(demo, tmp_path)
    files = sorted(approvals.glob("*.approval"))
    assert len(files) == 2
    a, b = files[0].read_bytes(), files[1].read_bytes()
    files[0].write_bytes(b)
    files[1].write_bytes(a)
    rc, out = cross_check(demo, plans, approvals, capsys)
    assert rc == 6
    assert f"MISMATCH file {files[0]} has digest" in out and "the approval file was swapped or edited" in out
    # the right files, but the auditor's allowed signers do not hold the approver's key
    files[0].write_bytes(a)
    files[1].write_bytes(b)
    stranger = tmp_path / "allowed_signers"
    operator_line = (demo.box.root / "keys" / "allowed_signers").read_text().splitlines()
    stranger.write_text("\n".join(x for x in operator_line if "engineer@vendor" not in x) + "\n")
    rc, out = cross_check(demo, plans, approvals, capsys, "--approval-signers", str(stranger))
    assert rc == 6 and "signed by a key the allowed signers do not allow for engineer@vendor" in out, out


def test_csv_export_writes_the_case_files_beside_it_one_row_per_run_and_host(
        demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import csv
    import io

    from upgrader.audit.report import CSV_CASE_COLUMNS

    out = tmp_path / "audit.csv"
    capsys.readouterr()
    assert main(["--home", str(demo.box.root), "audit", "export", "--format", "csv", "-o", str(out)]) == 0
    cases_file = tmp_path / "audit.cases.csv"
    assert f"wrote {cases_file}" in capsys.readouterr().out
    first, header, *rows = csv.reader(io.StringIO(cases_file.read_text(), newline=""))
    assert first[:2] == ["verification", "INTACT"]
    assert tuple(header) == CSV_CASE_COLUMNS
    table = [dict(zip(header, r)) for r in rows]
    assert [r["run"] for r in table] == demo.runs          # the demo's runs have one host each
    for row, run in zip(table, demo.runs):
        case = case_of(demo, run, capsys)
        [a] = case["approvals"]
        [h] = case["hosts"]
        assert row["approvers"] == a["approver"] == "engineer@vendor" and row["approval_digests"] == a["digest"]
        assert row["approvals_created"] == a["created"] and row["plan_digest"] == case["requested"]["plan"]
        assert row["policy_sha256"] == case["policy"]["sha256"] and row["catalog_signer"] == "vendor-release"
        assert row["host"] == "app-01" and row["host_outcome"] == h["outcome"]
        assert row["phases"].startswith("preflight ") and float(row["run_downtime_seconds"]) > 0
        assert row["exit_code"] == str(case["outcome"]["exit_code"])
        assert row["checkpoint_anchor"] == case["checkpoint"]["anchor"]
        assert row["unchecked"] == "; ".join(case["unchecked"]) and row["unchecked"], row  # no --plans given
    assert table[1]["host_outcome"] == "rolled_back" and "never healthy" in table[1]["rollback_cause"]


def test_audit_show_and_case_in_chinese_say_no_english_reason(
        demo: Demo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`audit show --lang zh` and `audit case --lang zh`: the verdict word, every status, phase, event, detail and
    cause in Chinese; none of the log's English reasons, details or causes is printed (the table is wide enough
    that no text is cut by wrapping)."""
    from test_audit_report import english_catalog

    from upgrader.core.reasons import UNTRANSLATED

    monkeypatch.setenv("COLUMNS", "2000")
    events = [json.loads(x) for x in (demo.box.root / "audit" / "audit.jsonl").read_text().splitlines()]
    catalog = english_catalog(events)
    assert any("never healthy" in t for t in catalog) and len(catalog) > 15
    capsys.readouterr()
    assert main(["--home", str(demo.box.root), "audit", "show", "--lang", "en"]) == 0
    english = capsys.readouterr().out
    assert english.startswith("INTACT ") and "rolled_back" in english
    assert main(["--home", str(demo.box.root), "audit", "show", "--lang", "zh"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("完好 ") and "审计时间线" in shown
    for word in ("已提交", "已回滚", "失败", "观察", "回滚", "开始运行", "签名检查点", "启动后一直不健康"):
        assert word in shown, word
    assert [t for t in catalog if t in shown] == [] and UNTRANSLATED + "：" not in shown
    assert not re.search(r"\b(committed|rolled_back|preflight|observe|phase_finished|run_started|checkpoint)\b",
                         shown)
    for run in demo.runs:
        assert main(["--home", str(demo.box.root), "audit", "case", run, "--lang", "zh"]) == 0
        case = capsys.readouterr().out
        assert case.startswith("完好 ") and "批准人：engineer@vendor" in case and "维护窗口：" in case
        assert [t for t in catalog if t in case] == [] and UNTRANSLATED + "：" not in case
        assert not re.search(r"\b(committed|rolled_back|preflight|observe|approved by|never healthy)\b", case)
    assert "回滚原因：新版本启动失败" in case and "结果：退出码 1（app-01：已回滚）" in case
    # the verdict words: an edited log says 已被篡改 with the line, in show and case, and exits 6
    log = demo.box.root / "audit" / "audit.jsonl"
    saved = log.read_bytes()
    try:
        log.write_bytes(saved.replace(b'"outcome":"rolled_back"', b'"outcome":"committed"', 1))
        assert main(["--home", str(demo.box.root), "audit", "show", "--lang", "zh"]) == 6
        assert re.match(r"已被篡改（第 \d+ 行：内容被修改）", capsys.readouterr().out)
        assert main(["--home", str(demo.box.root), "audit", "case", demo.runs[1], "--lang", "zh"]) == 6
        assert re.match(r"已被篡改（第 \d+ 行：内容被修改）", capsys.readouterr().out)
    finally:
        log.write_bytes(saved)


def case_rows(html_text: str, index: int) -> dict[str, str]:
    """The HTML report's case file of its ``index``-th run: {data-field: the row's value as plain text}."""
    import html as _html

    section = html_text.split(f'<h3 id="case-{index}">', 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r'<tr data-field="([^"]+)"><th>.*?</th><td>(.*?)</td></tr>', section, re.S)
    return {_html.unescape(k): " ".join(_html.unescape(re.sub(r"<[^>]+>", " ", v)).split()) for k, v in rows}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_html_export_has_a_case_section_per_run_field_by_field(
        demo: Demo, lang: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every run of the HTML report has its case file (the one `audit case --json` gives), field by field, in the
    report's language; in Chinese no English label of the section is left."""
    out = tmp_path / "a.html"
    assert main(["--home", str(demo.box.root), "audit", "export", "--format", "html", "-o", str(out),
                 "--lang", lang]) == 0
    text = out.read_text()
    zh = lang == "zh"
    for index, run in enumerate(demo.runs, 1):
        case = case_of(demo, run, capsys)
        rows = case_rows(text, index)
        assert list(rows) == ["requester", "approvals", "policy", "catalog", "window", "host-app-01", "downtime",
                              "outcome", "followups", "checkpoint", "witnesses"]
        assert rows["followups"] == ("没有（本次运行没有回滚或续跑）" if zh else "none (no rollback or resume of this run)")
        req = case["requested"]
        assert f"{req['user']}@{req['host']}" in rows["requester"] and req["key"] in rows["requester"]
        assert ((f"计划 {req['plan']}，创建于 {req['plan_created']}" if zh else
                 f"plan {req['plan']}, made {req['plan_created']}") in rows["requester"])
        [a] = case["approvals"]
        assert rows["approvals"] == (
            f"由 {a['approver']} 批准（密钥 {a['key']}），创建于 {a['created']}，有效期至 {a['expires']}，批准摘要 "
            f"{a['digest']}" if zh else
            f"approved by {a['approver']} (key {a['key']}), created {a['created']}, expires {a['expires']}, "
            f"approval digest {a['digest']}")
        pol, cat = case["policy"], case["catalog"]
        assert rows["policy"] == (f"来源 {pol['source']}，sha256 {pol['sha256']}，身份 {pol['identity']}" if zh else
                                  f"source {pol['source']}, sha256 {pol['sha256']}, identity {pol['identity']}")
        # only the log says which catalog the run used: marked the controller's word (issue 20, attack20r9 H1)
        assert rows["catalog"] == (f"序号 {cat['serial']}，签名人 {cat['signer']}（{cat['fingerprint']}） （控制端的一面之词）"
                                   if zh else f"serial {cat['serial']}, signed by {cat['signer']} "
                                   f"({cat['fingerprint']}) (the controller's word)")
        assert rows["window"].endswith("（控制端的一面之词）" if zh else "(the controller's word)")
        inside = case["window"]["inside"]
        assert rows["window"].startswith(("窗口内" if inside else "窗口外") if zh else
                                         ("inside" if inside else "outside"))
        [host] = case["hosts"]
        line = rows["host-app-01"]
        assert line.startswith(f"{host['from']} → {host['to']}" + ("，停机 " if zh else ", downtime ")
                               + str(host["downtime_seconds"]))
        from upgrader.core.reasons import word

        unit, sep = ("秒", "，") if zh else ("s", ", ")
        phases = sep.join(f"{word('phase', p['phase'], lang)} {word('status', p['outcome'], lang)} {p['seconds']} "
                          f"{unit}" for p in host["phases"])  # each phase with its duration, in order
        assert len(host["phases"]) >= 5 and line.endswith(phases), (line, phases)
        assert rows["downtime"] == f"{case['downtime_seconds']} {'秒' if zh else 's'}"
        assert rows["outcome"] == (f"退出码 {case['outcome']['exit_code']}" if zh else
                                   f"exit code {case['outcome']['exit_code']}")
        cp = case["checkpoint"]
        assert rows["checkpoint"] == (f"锚点 {cp['anchor']}（第 {cp['line']} 行，签名人 {cp['signer']}）" if zh else
                                      f"anchor {cp['anchor']} (line {cp['line']}, signed by {cp['signer']})")
        assert ("--witness" in rows["witnesses"]) and (("各主机的记录" in rows["witnesses"]) if zh else
                                                       ("hosts' records" in rows["witnesses"]))
        if zh:
            words = " ".join(rows.values())
            assert not re.search(r"\b(approved by|expires|source|serial|signed by|downtime|exit code|anchor|"
                                 r"inside|outside|committed|rolled_back|preflight)\b", words), words
    assert text.count('<h3 id="case-') == len(demo.runs)
