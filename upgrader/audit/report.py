"""Audit reports: the audit log's events and its verification result as HTML, JSON or CSV.

The HTML report is one self-contained file: inline CSS, and no scripts, fonts, images or links to
anything outside it, so it opens offline and prints well. It starts with the verification
result, then a summary of each run (who, when, hosts, versions, approvals, outcome, duration),
each host's phase timeline with probe results, the policy's explanation of each decision, and
rollbacks highlighted. Labels are in English or Simplified Chinese; the recorded data stays as
recorded. Every value from the log is untrusted text and is escaped.

CSV has one row per event (``CSV_COLUMNS``); a cell that a spreadsheet would run as a formula
(starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading ``'``.

This module neither reads nor verifies the log: the caller passes the events it selected and
the ``VerifyResult``. It is the only module besides the CLI that knows HTML.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..core.errors import InputError
from .labels import load_labels
from .case import downtime_text
from ..core.language import LANGS, resolve_lang  # one rule for every reader; kept importable from here

if TYPE_CHECKING:
    from .log import VerifyResult
    from .witness import WitnessResult

__all__ = ["export", "render_html", "render_json", "render_csv", "render_cases_csv", "cases_path", "resolve_lang",
           "CSV_COLUMNS", "CSV_VERIFICATION", "CSV_CASE_COLUMNS",
           "LANGS"]

#: the first row of a CSV export: the verdict on the whole log, before the column header
CSV_VERIFICATION = ("verification", "status", "bad_line", "problem", "verdict", "allowed_signers",
                    "allowed_signers_sha256", "anchor")
CSV_COLUMNS = ("seq", "time", "run", "host", "event", "phase", "outcome", "actor_user", "actor_principal",
               "actor_key", "details")
#: after a cell only the controller's log says (the requester no plan or approval file held)
CONTROLLERS_WORD = " (the controller's word)"
#: the case file's CSV (``REPORT.cases.csv`` beside ``REPORT.csv``): one row per run and host, after the same
#: verification row; ``unchecked``: the case's fields only the controller's word backs (``audit case``'s
#: "(the controller's word)"), joined with ``; ``
CSV_CASE_COLUMNS = ("run", "kind", "target", "requester", "requester_key", "plan_digest", "plan_created",
                    "approvers", "approver_keys", "approvals_created", "approvals_expire", "approval_digests",
                    "policy_source", "policy_sha256", "catalog_serial", "catalog_signer", "window_inside",
                    "window_reason", "operator", "operator_key", "started", "finished", "duration_seconds",
                    "host", "from", "to", "host_outcome", "version_after", "phases", "host_downtime_seconds",
                    "rollback_cause", "run_downtime_seconds", "exit_code", "checkpoint_line", "checkpoint_anchor",
                    "checkpoint_signer", "later_runs", "witnesses", "unchecked")


def export(fmt: str, events: list[dict[str, object]], result: VerifyResult, verdict: str, out: Path,
           lang: str | None = None, witnessed: WitnessResult | None = None,
           held: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Write the report in ``fmt`` (html, json or csv) to ``out``, atomically; ``witnessed``: the hosts' witnessed
    checkpoints, which fill each case's ``witnesses``; ``held``: run -> the requester's fields a plan file held
    (``--plans``); any other requester is the controller's word."""
    if fmt == "html":
        text = render_html(events, result, verdict, resolve_lang(lang), witnessed, held)
    elif fmt == "json":
        text = render_json(events, result, verdict, witnessed, held)
    elif fmt == "csv":
        text = render_csv(events, result, verdict, witnessed)
        _write_atomically(cases_path(Path(out)), render_cases_csv(events, result, verdict, witnessed, held))
    else:
        raise InputError(f"--format: expected html, json or csv, got {fmt!r}")
    _write_atomically(Path(out), text)


def cases_path(out: Path) -> Path:
    """Where a CSV export's case file goes: ``audit.csv`` -> ``audit.cases.csv`` (one table a file, as a
    spreadsheet opens it)."""
    stem = out.name[:-4] if out.name.lower().endswith(".csv") else out.name
    return out.with_name(stem + ".cases.csv")


def _write_atomically(out: Path, text: str) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # a report is as readable as any file the user writes
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise InputError(f"cannot write the report: {e.strerror or e}", path=str(out),
                         hint="choose a writable path with -o") from e


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# -- JSON and CSV ---------------------------------------------------------------------------------


def _case(events: list[dict[str, object]], run: str, witnessed: WitnessResult | None,
          result: VerifyResult | None = None,
          held: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, object] | None:
    """The run's case file; its ``witnesses`` from the hosts' records when they were read; its approvers marked
    checked against the approvers' allowed_signers ``result`` names, else as the controller's word."""
    from .case import build_case, downtime_from_hosts, hold_requester, mark_approvers
    from .witness import case_witnesses, mark_followups

    case = build_case(events, run)
    if case is not None:
        hold_requester(case, (held or {}).get(run, {}))  # a requester no plan file held is the controller's word
        mark_approvers(case, result.approvers_file if result is not None else None,
                       result.approvers_keys if result is not None else frozenset())
    if case is not None and witnessed is not None:
        case["witnesses"] = case_witnesses(witnessed, run, [str(_dict(h).get("host")) for h in
                                                            _list(case.get("hosts"))])
        mark_followups(case, witnessed)  # a later run no host witnessed is the controller's word
        downtime_from_hosts(case)  # each host's own clock, as `audit case --witness` shows it
    return case


def render_json(events: list[dict[str, object]], result: VerifyResult, verdict: str,
                witnessed: WitnessResult | None = None, held: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """``{"verification": {...result, "verdict": ...}, "events": [...], "cases": [...]}`` (and ``witness``, the
    log against the hosts' records, when they were read)."""
    from .case import run_ids

    cases = [_case(events, r, witnessed, result, held) for r in run_ids(events)]
    doc: dict[str, object] = {"verification": {**result.to_dict(), "verdict": verdict}, "events": events,
                              "cases": cases}
    if witnessed is not None:
        from .view import witness_headline

        doc["witness"] = {**witnessed.to_dict(), "headline": witness_headline(witnessed)}
    return json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _verification_row(result: VerifyResult, verdict: str, witnessed: WitnessResult | None) -> list[str]:
    """A CSV export's first row: ``verification``, the headline, line, problem, verdict, the allowed signers file,
    its sha256 and the anchor used; with the hosts' records read (``--witness``), then ``witness`` and their
    verdict (witness_headline), so that no table leaves the hosts' word behind."""
    from .view import headline, witness_headline

    row: list[object] = ["verification", headline(result), result.bad_line, result.problem, verdict,
                         result.signers_file, result.signers_sha256, result.anchor]
    if witnessed is not None:
        row += ["witness", witness_headline(witnessed)]
    return [_cell(v) for v in row]


def render_csv(events: list[dict[str, object]], result: VerifyResult, verdict: str,
               witnessed: WitnessResult | None = None) -> str:
    """A verification row first (_verification_row), then the column header and one row per event;
    ``details`` is the event's data (a checkpoint's fields) as compact JSON."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(_verification_row(result, verdict, witnessed))
    w.writerow(CSV_COLUMNS)
    for e in events:
        actor = _dict(e.get("actor"))
        payload = e.get("data")
        if payload is None and e.get("event") == "checkpoint":
            payload = e.get("checkpoint")
        details = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True,
                             default=str) if payload is not None else ""
        w.writerow([_cell(v) for v in (e.get("seq"), e.get("time"), e.get("run"), e.get("host"), e.get("event"),
                                       e.get("phase"), e.get("outcome"), actor.get("user"), actor.get("principal"),
                                       actor.get("key"), details)])
    return buf.getvalue()


def _join(values: list[object]) -> str:
    return "; ".join("" if v is None else str(v) for v in values)


def _witness_cell(w: object) -> str:
    """A case's witnesses in one cell: ``host matches`` / ``host DOES NOT MATCH`` / ``host unreadable`` /
    ``host no record``, joined with ``; ``; empty when not looked up."""
    d = _dict(w)
    if not d:
        return ""
    parts = [f"{_dict(k).get('host')} {'matches' if _dict(k).get('matches') else 'DOES NOT MATCH'}"
             for k in _list(d.get("hosts"))]
    parts += [f"{_dict(u).get('host')} unreadable" for u in _list(d.get("unreadable"))]
    parts += [f"{n} no record" for n in _list(d.get("not_kept"))]
    for a in [_dict(x) for x in _list(d.get("accounts"))]:
        parts += [f"{a.get('host')} record {_dict(x).get('field')} DIFFERS" for x in _list(a.get("differences"))]
        parts += [f"{a.get('host')} {_dict(x).get('kind')}" for x in _list(a.get("doubts"))]
    return "; ".join(parts) or "none"


def render_cases_csv(events: list[dict[str, object]], result: VerifyResult, verdict: str,
                     witnessed: WitnessResult | None = None,
                     held: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The case file of every run (``audit case``) as a table: the verification row, ``CSV_CASE_COLUMNS``, then one
    row per run and host (a run's own fields repeat on each of its hosts' rows, so that a filter on a column
    keeps whole answers); several approvals are joined with ``; `` in one cell, phases as
    ``phase outcome seconds s``."""
    from .case import requester_word, run_ids

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(_verification_row(result, verdict, witnessed))
    w.writerow(CSV_CASE_COLUMNS)
    for run in run_ids(events):
        case = _case(events, run, witnessed, result, held)
        if case is None:
            continue
        req, pol, cat = _dict(case.get("requested")), _dict(case.get("policy")), _dict(case.get("catalog"))
        win, op = _dict(case.get("window")), _dict(case.get("operator"))
        cp, outcome = _dict(case.get("checkpoint")), _dict(case.get("outcome"))
        approvals = [_dict(a) for a in _list(case.get("approvals"))]
        who = f"{req.get('user')}@{req.get('host')}" + (CONTROLLERS_WORD if requester_word(case) else "")
        common = [run, case.get("kind"), case.get("target"), who, req.get("key"),
                  req.get("plan"), req.get("plan_created"), _join([a.get("approver") for a in approvals]),
                  _join([a.get("key") for a in approvals]), _join([a.get("created") for a in approvals]),
                  _join([a.get("expires") for a in approvals]), _join([a.get("digest") for a in approvals]),
                  pol.get("source"), pol.get("sha256"), cat.get("serial"), cat.get("signer"),
                  win.get("inside") if win else None, win.get("reason") if win else None,
                  op.get("principal"), op.get("key"), case.get("started"), case.get("finished"),
                  case.get("duration_seconds")]
        tail = [case.get("downtime_seconds"), outcome.get("exit_code") if outcome else None,
                cp.get("line") if cp else None, cp.get("anchor") if cp else None, cp.get("signer") if cp else None,
                _join([f"{_dict(f).get('kind')} {_dict(f).get('run')}: exit {_dict(f).get('exit_code')} "
                       f"{_dict(f).get('hosts')}" + (CONTROLLERS_WORD if _dict(f).get("witnessed") is False else "")
                       for f in _list(case.get("followups"))]),
                _witness_cell(case.get("witnesses")), _join(_list(case.get("unchecked")))]
        hosts = [_dict(h) for h in _list(case.get("hosts"))] or [{}]
        for h in hosts:
            phases = "; ".join(f"{p.get('phase')} {p.get('outcome')} {p.get('seconds')} s"
                               for p in (_dict(x) for x in _list(h.get("phases"))))
            said = h.get("outcome")
            if said and host_outcome_word(case, h):
                said = f"{said}{CONTROLLERS_WORD}"
            w.writerow([_cell(v) for v in (*common, h.get("host"), h.get("from"), h.get("to"), said,
                                           h.get("version_after"), phases, h.get("downtime_seconds"),
                                           h.get("rollback_cause"), *tail)])
    return buf.getvalue()


def host_outcome_word(case: Mapping[str, object], h: Mapping[str, object]) -> bool:
    """Whether a host's outcome in the case is only the controller's word (``--witness``): the host was read and
    keeps no record at all of the run, or opened it and keeps no finish of it while the log gives it an end there."""
    w = case.get("witnesses")
    return isinstance(w, dict) and (h.get("host") in (w.get("no_record") or [])
                                    or bool(h.get("outcome")) and h.get("host") in (w.get("no_finish") or []))


# -- labels ---------------------------------------------------------------------------------------

#: the report's labels, ``{en, zh}`` a label (report_labels.yaml)
_LABELS_FILE = Path(__file__).with_name("report_labels.yaml")

# The verdict `audit verify` prints is English; a Chinese report says the same in Chinese above it.
_ZH_VERDICT = {
    "ok": "{n} 条记录构成完整的哈希链，含 {c} 个有效的签名检查点；",
    "anchor": "日志直至您保存的锚点是完整的。",
    "open": "最后检查点之后的完整性未经证明（使用运行时输出的 --anchor SEQ:HEAD 可证明末尾没有被截断）。",
    "bad": "日志已被篡改：第 {line} 行（{problem}）；其前 {valid} 条记录构成有效的链。",
    "unchecked": "无法核验检查点：请用 --allowed-signers 或 --policy 指定允许的签名者（当前不知道任何允许的签名者）。"
                 "仅就哈希链本身而言：",
}

_CSS = """
:root { --ink:#1d2430; --muted:#5b6576; --line:#d5dae2; --soft:#f5f7fa; --ok:#17733a; --bad:#b42318;
  --warn:#9a5b00; --accent:#1f4e8c; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--ink); background: #eef1f5; font: 14px/1.5 "Segoe UI", "Noto Sans", "Noto Sans CJK SC",
  "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", "WenQuanYi Micro Hei", "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 40px; background: #fff; min-height: 100vh; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: .2px; }
h2 { font-size: 19px; margin: 0; }
h3 { font-size: 15px; margin: 22px 0 8px; color: var(--accent); }
h4 { font-size: 13px; margin: 14px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: .4px; }
p { margin: 4px 0; }
.sub { color: var(--muted); margin: 0 0 20px; overflow-wrap: anywhere; }
code, .mono { font-family: "DejaVu Sans Mono", "Noto Sans Mono", Consolas, monospace; font-size: 12px; }
.mono { overflow-wrap: anywhere; }
.runid { font-family: "DejaVu Sans Mono", "Noto Sans Mono", Consolas, monospace; font-size: 12px; white-space: nowrap; }
header.top { border-bottom: 3px solid var(--accent); padding-bottom: 10px; margin-bottom: 18px; }
section.card { border: 1px solid var(--line); border-radius: 6px; padding: 16px 18px; margin: 0 0 18px; }
section.verify { border-width: 2px; }
section.verify.intact { border-color: var(--ok); }
section.verify.altered { border-color: var(--bad); }
section.verify.cannot_check { border-color: var(--warn); }
.verify-head { display: flex; align-items: center; gap: 14px; margin-bottom: 8px; }
.stamp { font-weight: 700; font-size: 18px; padding: 3px 14px; border: 2px solid; border-radius: 4px; letter-spacing: 1px; }
.intact .stamp { color: var(--ok); } .altered .stamp { color: var(--bad); } .cannot_check .stamp { color: var(--warn); }
.verdict { font-size: 15px; margin: 2px 0 10px; }
.orig { color: var(--muted); font-size: 12.5px; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid var(--line); }
thead th { font-size: 12px; color: var(--muted); font-weight: 600; border-bottom: 2px solid var(--line); white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafbfc; }
table.kv th { width: 210px; font-weight: 600; color: var(--muted); font-size: 13px; }
table.kv td, table.kv th { border-bottom: 1px dotted var(--line); }
td.num, th.num { text-align: right; white-space: nowrap; }
td.nowrap, span.nowrap { white-space: nowrap; }
.badge { display: inline-block; padding: 0 7px; border: 1px solid currentColor; border-radius: 10px; font-size: 12px;
  font-weight: 600; white-space: nowrap; }
.s-ok { color: var(--ok); } .s-bad { color: var(--bad); } .s-warn { color: var(--warn); } .s-skip { color: var(--muted); }
.run { border: 1px solid var(--line); border-radius: 6px; margin: 26px 0; padding: 0 18px 14px; }
.run > header { display: flex; justify-content: space-between; align-items: baseline; gap: 16px; flex-wrap: wrap;
  border-bottom: 1px solid var(--line); margin: 0 -18px 10px; padding: 12px 18px; background: var(--soft);
  border-radius: 6px 6px 0 0; }
.run.has-rollback { border-left: 5px solid var(--warn); }
.run.failed { border-left: 5px solid var(--bad); }
.rollback-box { border: 1px solid var(--warn); border-left: 5px solid var(--warn); border-radius: 4px; padding: 8px 12px;
  margin: 10px 0; background: #fff8eb; }
.rollback-box strong { color: var(--warn); }
tr.rollback td { background: #fff8eb !important; }
tr.rollback td:first-child { box-shadow: inset 4px 0 0 var(--warn); }
tr.marker td { font-weight: 600; }
ul.probes, ul.approvals { margin: 4px 0 0; padding: 0; list-style: none; }
ul.approvals li { margin: 0 0 4px; }
ul.probes li { margin: 1px 0; font-size: 12.5px; }
.muted { color: var(--muted); }
.small { font-size: 12px; }
pre.out { white-space: pre-wrap; word-break: break-all; margin: 4px 0 0; padding: 6px 8px; background: var(--soft);
  border: 1px solid var(--line); border-radius: 4px; font-size: 11.5px; max-height: 18em; overflow: auto; }
a { color: var(--accent); text-decoration: none; }
footer { margin-top: 28px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { background: none; font-size: 10pt; }
  main { max-width: none; padding: 0; min-height: 0; }
  code, .mono, .runid { font-size: 8pt; }
  th, td { padding: 3px 5px; }
  thead th { white-space: normal; }
  table.kv th { width: 150px; }
  .run { break-before: page; page-break-before: always; border: none; padding: 0; margin: 0; }
  .run > header { background: none; margin: 0 0 8px; padding: 0 0 6px; border-bottom: 2px solid var(--ink); }
  .run.has-rollback, .run.failed { border-left: none; }
  section.verify, .rollback-box, table.kv, tr, li, h3, h4 { break-inside: avoid; page-break-inside: avoid; }
  h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  thead { display: table-header-group; }
  tbody tr:nth-child(even) td, tr.rollback td, .rollback-box, pre.out { background: none !important; }
  tr.rollback td:first-child { box-shadow: none; border-left: 3px solid var(--warn); }
  pre.out { max-height: none; overflow: visible; }
  a { color: inherit; }
}
"""


# -- the model the HTML is made from ----------------------------------------------------------------


@dataclass
class _Phase:
    phase: str
    start: object = None                 # the recorded time (untrusted: anything)
    seconds: Any = None
    outcome: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    in_rollback: bool = False


@dataclass
class _Host:
    name: str
    summary: dict[str, Any] = field(default_factory=dict)     # from run_started: current, target, decision
    rows: list[tuple[str, Any]] = field(default_factory=list)  # ("phase", _Phase) | ("rollback", ev) | ("end", ev)
    outcome: object = None
    finished: dict[str, Any] | None = None
    rollback_cause: str | None = None


@dataclass
class _Run:
    id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    start: dict[str, Any] | None = None        # run_started or rollback_requested
    finish: dict[str, Any] | None = None       # run_finished
    checkpoint: dict[str, Any] | None = None
    hosts: dict[str, _Host] = field(default_factory=dict)
    accepted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_rollback(self) -> bool:
        return bool(self.start and self.start.get("event") == "rollback_requested")

    def host(self, name: str) -> _Host:
        if name not in self.hosts:
            self.hosts[name] = _Host(name)
        return self.hosts[name]


def _dict(value: object) -> dict[str, object]:
    """``value`` when it is a dict (recorded data is untrusted: it may be anything), else an empty one."""
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    """``value`` when it is a list (recorded data is untrusted), else an empty one."""
    return value if isinstance(value, list) else []


def _data(e: dict[str, object] | None) -> dict[str, object]:
    return _dict(e.get("data")) if e else {}


def _runs(events: list[dict[str, object]]) -> tuple[list[_Run], list[dict[str, object]]]:
    """Events grouped by run (in order of first appearance), and the events outside any run."""
    runs: dict[str, _Run] = {}
    others: list[dict[str, Any]] = []
    for e in events:
        rid = e.get("run")
        if not rid:
            others.append(e)
            continue
        run = runs.setdefault(str(rid), _Run(str(rid)))
        run.events.append(e)
        _add(run, e)
    for run in runs.values():
        # a rollback run goes back from the rolled-back run's target to the version it started from
        of = runs.get(str(_data(run.start).get("of_run"))) if run.is_rollback and run.start else None
        for name, host in run.hosts.items():
            orig = of.hosts.get(name) if of else None
            if orig is not None and not host.summary and orig.summary:
                host.summary = {"current": orig.summary.get("target"), "target": orig.summary.get("current")}
    return list(runs.values()), others


def _add(run: _Run, e: dict[str, object]) -> None:
    kind, d, host = e.get("event"), _data(e), e.get("host")
    if kind in ("run_started", "rollback_requested") and run.start is None:
        run.start = e
        for h in _list(d.get("hosts")):
            if isinstance(h, dict) and h.get("host"):
                run.host(str(h["host"])).summary = h
            elif isinstance(h, str):
                run.host(h)
    elif kind == "run_finished":
        run.finish = e
    elif kind == "checkpoint":
        run.checkpoint = e
    elif kind == "approval_accepted":
        run.accepted.append(d)
    elif host:
        h = run.host(str(host))
        if kind == "phase_started":
            h.rows.append(("phase", _Phase(str(e.get("phase") or ""), start=e.get("time"),
                                           in_rollback=h.rollback_cause is not None)))
        elif kind == "phase_finished":
            p = next((p for k, p in reversed(h.rows) if k == "phase" and p.phase == e.get("phase")
                      and p.outcome is None), None)
            if p is None:
                p = _Phase(str(e.get("phase") or ""), in_rollback=h.rollback_cause is not None)
                h.rows.append(("phase", p))
            p.outcome, p.seconds, p.data = e.get("outcome"), d.get("seconds"), d
        elif kind == "rollback_started":
            h.rollback_cause = str(d.get("cause") or "")
            h.rows.append(("rollback", e))
        elif kind == "host_finished":
            h.outcome, h.finished = e.get("outcome"), e
            h.rows.append(("end", e))


# -- formatting helpers -------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Escaped text; None as a dash."""
    return "—" if value is None or value == "" else escape(str(value), quote=True)


def _parse(t: object) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(t).replace("Z", "+00:00"))
    except ValueError:
        return None


def _when(t: object) -> str:
    """A recorded time, readable: date, time to the second, and the zone as recorded."""
    p = _parse(t)
    if p is None:
        return _e(t)
    zone = "UTC" if p.utcoffset() == dt.timedelta(0) else p.strftime("%z")[:3] + ":" + p.strftime("%z")[3:]
    return _e(f"{p:%Y-%m-%d %H:%M:%S} {zone}" if p.tzinfo else f"{p:%Y-%m-%d %H:%M:%S}")


def _when_parts(t: object) -> str:
    """A recorded time that may wrap between its date and its time of day, never inside either."""
    text = _when(t)
    date, sep, rest = text.partition(" ")
    return f'<span class="nowrap">{date}</span> <span class="nowrap">{rest}</span>' if sep else text


def _clock(t: object) -> str:
    p = _parse(t)
    return _e(f"{p:%H:%M:%S}.{p.microsecond // 1000:03d}") if p else _e(t)


def _seconds(s: object) -> str:
    try:
        if not isinstance(s, (int, float, str)):  # None, a list or a mapping (recorded data is untrusted)
            raise TypeError(s)
        v = float(s)
    except (TypeError, ValueError):
        return _e(s)
    if v < 10:
        return f"{v:.2f} s"
    if v < 60:
        return f"{v:.1f} s"
    m, sec = divmod(int(round(v)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _span(a: object, b: object) -> str:
    pa, pb = _parse(a), _parse(b)
    if pa is None or pb is None or (pa.tzinfo is None) != (pb.tzinfo is None):
        return "—"
    return _seconds((pb - pa).total_seconds())


_OK = {"ok", "pass", "committed", "accepted", "allowed", "approved", "restored", "0", "true"}
_BAD = {"failed", "fail", "refused", "needs_person", "unreachable", "error", "5", "false"}
_WARN = {"rolled_back", "rollback", "skip", "1", "warn"}


def _badge(value: object, lang: str = "en", kind: str = "status") -> str:
    """A status as a coloured badge; its colour from the recorded word, its text in ``lang``."""
    from ..core.reasons import word

    text = "" if value is None else str(value)
    key = text.lower()
    cls = "s-ok" if key in _OK else "s-bad" if key in _BAD else "s-warn" if key in _WARN else "s-skip"
    return f'<span class="badge {cls}">{_e(word(kind, text, lang))}</span>'


class _Html:
    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.parts: list[str] = []
        self.events: list[dict[str, object]] = []  # every event of the report (a case joins approvals made earlier)
        self.witnessed: WitnessResult | None = None  # the hosts' witnessed checkpoints, when they were read
        self.result: VerifyResult | None = None  # the verdict on the log (its approvers' allowed_signers)
        self.held: Mapping[str, Mapping[str, str]] | None = None  # run -> requester fields a plan file held

    def t(self, key: str, **kw: object) -> str:
        """A label in the report's language; values put into it are escaped."""
        text = load_labels(_LABELS_FILE, self.lang)[key]
        return escape(text, quote=True).format(**{k: _e(v) for k, v in kw.items()}) if kw else escape(text)

    def reason(self, text: object) -> str:
        """A recorded English reason (a rule's, a check's, the window's) in the report's language (plain text)."""
        from ..core.reasons import translate

        return "" if text is None else translate(str(text), self.lang)

    def cause(self, text: object) -> str:
        """A failure's cause in the report's language, all of it in that language (plain text)."""
        from ..core.reasons import cause

        if text is None or self.lang != "zh":  # English: as recorded
            return "" if text is None else str(text)
        return cause(str(text), self.lang, technical=False)

    def fact(self, key: str) -> str:
        """The name of a fact a phase recorded (``files``, ``identical``) in the report's language, unescaped; a
        name the labels do not know as it is."""
        return load_labels(_LABELS_FILE, self.lang).get(f"fact_{key}", key)

    def word(self, kind: str, value: object) -> str:
        from ..core.reasons import word

        return word(kind, value, self.lang)

    def add(self, *html: str) -> None:
        self.parts.extend(html)

    def kv(self, rows: list[tuple[str, str]]) -> None:
        self.add('<table class="kv"><tbody>')
        for label, value in rows:
            self.add(f"<tr><th>{label}</th><td>{value}</td></tr>")
        self.add("</tbody></table>")


# -- the HTML report ---------------------------------------------------------------------------------


def render_html(events: list[dict[str, object]], result: VerifyResult, verdict: str, lang: str = "en",
                witnessed: WitnessResult | None = None, held: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The whole report as one HTML document."""
    lang = resolve_lang(lang)
    h = _Html(lang)
    h.events = events
    h.witnessed = witnessed
    h.result = result
    h.held = held
    runs, others = _runs(events)
    times = [e.get("time") for e in events if e.get("time")]
    h.add("<!DOCTYPE html>", f'<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">',
          '<meta name="viewport" content="width=device-width, initial-scale=1">',
          f"<title>{h.t('title')} — {_e(Path(str(result.path)).name)}</title>",
          f"<style>{_CSS}</style></head><body><main>")
    h.add('<header class="top">', f"<h1>{h.t('title')}</h1>",
          f'<p class="sub">{h.t("subtitle", n=len(events), path=result.path)}'
          + (f" · {h.t('span')}: {_when(times[0])} – {_when(times[-1])}" if times else "") + "</p></header>")
    _verification(h, result, verdict)
    _overview(h, runs)
    for i, run in enumerate(runs, 1):
        _run_section(h, run, i)
    if others:
        _others(h, others, runs)
    h.add(f"<footer>{h.t('footer')}</footer>", "</main></body></html>")
    return "\n".join(h.parts) + "\n"


def _verification(h: _Html, result: VerifyResult, verdict: str) -> None:
    from ..core.reasons import word

    intact = bool(result.chain_intact)
    state = str(result.status)
    h.add(f'<section class="card verify {state}" id="verification">',
          f'<div class="verify-head"><h2>{h.t("verification")}</h2><span class="stamp">{h.t(state)}</span></div>')
    if h.lang == "zh":
        if intact:
            text = _ZH_VERDICT["ok"].format(n=result.entries, c=result.checkpoints)
            text += _ZH_VERDICT["anchor" if result.anchor_checked else "open"]
        else:
            text = _ZH_VERDICT["bad"].format(line=result.bad_line, problem=word("problem", result.problem, "zh"),
                                             valid=result.valid_entries)
        if state == "cannot_check":
            text = _ZH_VERDICT["unchecked"] + text
        h.add(f'<p class="verdict">{_e(text)}</p>')
        if not intact:  # what exactly is wrong has no Chinese form: the verifier's own words, marked as such
            h.add(f'<p class="orig">{h.t("verifier_text")}: {_e(verdict)}</p>')
    else:
        h.add(f'<p class="verdict">{_e(verdict)}</p>')
    rows = [(h.t("log_file"), f'<span class="mono">{_e(result.path)}</span>'),
            (h.t("entries"), _e(result.entries)),
            (h.t("valid_entries"), _e(result.valid_entries)),
            (h.t("checkpoints"), _e(result.checkpoints))]
    cp = result.last_checkpoint
    if cp:
        rows.append((h.t("last_checkpoint"),
                     '<span class="mono">' + h.t("checkpoint_text", line=cp.get("line"), seq=cp.get("seq"),
                                                 head=cp.get("head"), signer=cp.get("signer")) + "</span>"))
    else:
        rows.append((h.t("last_checkpoint"), "—"))
    rows.append((h.t("uncovered"), _e(result.uncovered)))
    if result.signers_file:
        rows.append((h.t("signers_file"), f'<span class="mono">{_e(result.signers_file)}</span><br>'
                     f'<span class="mono small">sha256 {_e(result.signers_sha256)}</span>'))
    else:
        rows.append((h.t("signers_file"), f'<span class="s-warn">{h.t("signers_none")}</span>'))
    anchor = h.t("anchor_yes" if result.anchor_checked and result.chain_intact
                 else "anchor_bad" if result.anchor else "anchor_no")
    if result.anchor:
        anchor = f'<span class="mono">{_e(result.anchor)}</span><br>' + anchor
    rows.append((h.t("anchor"), anchor))
    if not intact:
        rows.append((h.t("bad_line"), f'<strong class="s-bad">{_e(result.bad_line)}</strong>'))
        rows.append((h.t("problem"), f"{_badge(result.problem, h.lang, 'problem')}" + ("" if h.lang == "zh" else f" {_e(result.message)}")))
    if result.warnings:
        rows.append((h.t("notes"), "<br>".join(_e(h.reason(w)) for w in result.warnings)))
    if h.witnessed is not None:
        rows.append((h.t("witness_verdict"), _witness_verdict_html(h, h.witnessed)))
    h.kv(rows)
    h.add("</section>")


def _witness_verdict_html(h: _Html, w: WitnessResult) -> str:
    """The hosts' verdict on the log (--witness) in the verification card: its headline, then every finding."""
    from .view import witness_headline

    css = "s-bad" if w.problems else "s-warn" if w.doubts or w.unreachable else "s-ok"
    zh = h.lang == "zh"
    items = [f'<strong class="{css}">{_e(witness_headline(w, h.lang))}</strong>']
    items += [f'<span class="s-bad">{_e(p)}</span>' for p in (w.problems_zh if zh else w.problems)]
    items += [f'<span class="s-warn">{_e(p)}</span>' for p in (w.doubts_zh if zh else w.doubts)]
    items += [f'<span class="s-warn">{h.t("witness_unreadable", host=x.host)}</span>' for x in w.unreachable]
    return "<br>".join(items)


def _run_outcome(h: _Html, run: _Run, short: bool = False) -> tuple[str, str]:
    """(css class, words) for the run's outcome; ``short`` for the overview table."""
    kind = "short" if short else "exit"
    if run.finish is None:
        return "s-skip", h.t("short_unfinished" if short else "unfinished")
    d = _data(run.finish)
    recorded: Any = d.get("exit_code", run.finish.get("outcome"))
    try:
        code = int(recorded)
    except (TypeError, ValueError):
        return "s-skip", h.t(f"{kind}_n", code=recorded)
    if code == 0 and "waiting" in _dict(d.get("outcomes")).values():
        return "s-ok", h.t(f"{kind}_0_wait")
    if code == 0:
        return "s-ok", h.t(f"{kind}_0_rb" if run.is_rollback else f"{kind}_0")
    if code == 1:
        return "s-warn", h.t(f"{kind}_1")
    outcomes = set(_dict(d.get("outcomes")).values())
    if code == 5 and "superseded" in outcomes and not outcomes & {"needs_person"}:
        return "s-warn", h.t(f"{kind}_5_sup")
    if code == 5:
        return "s-bad", h.t(f"{kind}_5")
    return "s-bad", h.t(f"{kind}_n", code=code)


def _run_id(run_id: str) -> str:
    """A run id, escaped, that may wrap after '/' (a rollback run's id is the run's id plus /rollback-TIME)."""
    return _e(run_id).replace("/", "/<wbr>")


def _from_to(host: _Host) -> str:
    s = host.summary
    if s.get("current") or s.get("target"):
        return f"{_e(s.get('current'))} → {_e(s.get('target'))}"
    return "—"


def _actor(e: dict[str, object] | None) -> tuple[str, str]:
    a = (e or {}).get("actor")
    if not isinstance(a, dict):
        return "—", "—"
    who = a.get("principal") or a.get("user")
    extra = f"{a.get('user')}@{a.get('host')}" if a.get("user") else ""
    return (_e(who) + (f' <span class="muted">({_e(extra)})</span>' if extra and extra != who else "")), _e(a.get("key"))


def _overview(h: _Html, runs: list[_Run]) -> None:
    h.add('<section class="card">', f"<h2>{h.t('overview')}</h2>")
    if not runs:
        h.add(f'<p class="muted">{h.t("no_runs")}</p></section>')
        return
    h.add("<table><thead><tr>" + "".join(f"<th>{h.t(k)}</th>" for k in (
        "run", "started", "operator", "hosts", "from_to", "outcome", "duration")) + "</tr></thead><tbody>")
    for i, run in enumerate(runs, 1):
        first = run.start or run.events[0]
        last = run.finish or run.checkpoint or run.events[-1]
        cls, words = _run_outcome(h, run, short=True)
        versions = sorted({_from_to(x) for x in run.hosts.values()} - {"—"})
        label = f' <span class="badge s-warn">{h.t("rollback")}</span>' if run.is_rollback else ""
        h.add(f'<tr><td><a class="runid" href="#run-{i}">{_run_id(run.id)}</a>{label}</td>'
              f'<td>{_when_parts(first.get("time"))}</td><td>{_actor(first)[0]}</td>'
              f'<td class="nowrap">{"<br>".join(_e(x) for x in run.hosts) or "—"}</td><td class="nowrap">{"<br>".join(versions) or "—"}</td>'
              f'<td><span class="badge {cls}">{words}</span></td><td class="num">{_span(first.get("time"), last.get("time"))}</td></tr>')
    h.add("</tbody></table></section>")


def _run_section(h: _Html, run: _Run, index: int) -> None:
    cls, words = _run_outcome(h, run)
    rolled = run.is_rollback or any(x.rollback_cause is not None for x in run.hosts.values())
    extra = " has-rollback" if rolled else ""
    extra += " failed" if cls == "s-bad" else ""
    title = h.t("rollback_run" if run.is_rollback else "run")
    h.add(f'<section class="run{extra}" id="run-{index}"><header><h2>{title} <span class="runid">{_run_id(run.id)}</span>'
          f'</h2><span class="badge {cls}">{words}</span></header>')
    _run_summary(h, run, words, cls)
    _case_section(h, run, index)
    approved = _approved_text(h, run)
    for host in run.hosts.values():
        _host_section(h, host, approved)
    h.add("</section>")


def _case_section(h: _Html, run: _Run, index: int) -> None:
    """The run's case file (audit/case.py, as ``audit case`` prints it): requester, approvals (created, expires,
    digest), policy, catalog, window, each host's phases with durations, downtime, outcome, checkpoint, witnesses.
    Every row carries ``data-field`` so that a reader (or a test) finds each answer."""
    from .case import requester_word

    case = _case(h.events or run.events, run.id, h.witnessed, h.result, h.held)
    if case is None:
        return
    req, pol, cat = _dict(case.get("requested")), _dict(case.get("policy")), _dict(case.get("catalog"))
    win, cp, out = _dict(case.get("window")), _dict(case.get("checkpoint")), _dict(case.get("outcome"))
    rows: list[tuple[str, str, str]] = []
    if req.get("user") or req.get("key") or req.get("plan"):
        rows.append(("requester", h.t("case_requested"),
                     f'{_e(req.get("user"))}@{_e(req.get("host"))} · {h.t("key")}: '
                     f'<span class="mono">{_e(req.get("key"))}</span>' + (_said(h) if requester_word(case) else "")
                     + '<br><span class="mono small">'
                     + h.t("case_plan", digest=req.get("plan"), made=req.get("plan_created")) + "</span>"))
    if not run.is_rollback:
        approvals = [_dict(a) for a in _list(case.get("approvals"))]
        rows.append(("approvals", h.t("approvals"), "<br>".join(
            h.t("case_approval", approver=a.get("approver"), fp=a.get("key"),
                created=a.get("created") or h.t("unknown_time"),
                expires=a.get("expires"), digest=a.get("digest"))
            + (_said(h) if not a.get("approver_listed_in") else "") for a in approvals)
            or f'<span class="s-bad">{h.t("no_approval")}</span>'))
    if pol:
        rows.append(("policy", h.t("policy"), '<span class="mono small">' + h.t(
            "case_policy", source=pol.get("source"), sha256=pol.get("sha256"), identity=pol.get("identity"))
            + "</span>"))
    if cat:
        rows.append(("catalog", h.t("catalog"), h.t("case_catalog", serial=cat.get("serial"),
                                                     signer=cat.get("signer"), fingerprint=cat.get("fingerprint"))
                     + _said(h)))
    rows.append(("window", h.t("case_window"),
                 f'{h.t("inside" if win.get("inside") else "outside")} ({_e(h.reason(win.get("reason")))})'
                 + _said(h) if win else h.t("case_not_recorded")))
    for x in [_dict(y) for y in _list(case.get("hosts"))]:
        phases = ("，" if h.lang == "zh" else ", ").join(h.t("case_phase", phase=h.word("phase", p.get("phase")),
                               outcome=h.word("status", p.get("outcome")), seconds=p.get("seconds"))
                           for p in [_dict(q) for q in _list(x.get("phases"))])
        rows.append((f"host-{x.get('host')}", h.t("case_host_phases", host=x.get("host")),
                     (h.t("case_host_line", from_=x.get("from"), to=x.get("to"), downtime=x.get("downtime_seconds"))
                      if x.get("downtime_seconds") is not None else
                      f"{_e(x.get('from'))} → {_e(x.get('to'))}{'，停机' if h.lang == 'zh' else ', downtime'} "
                      f"{_e(downtime_text(None, True, h.lang))}")
                     + (f" {_badge(x.get('outcome'), h.lang)}" if x.get("outcome") else "")
                     + f"<br>{phases or '—'}"))
    unknown = bool(case.get("downtime_unknown")) and not case.get("downtime_seconds")
    rows.append(("downtime", h.t("case_downtime"), _e(downtime_text(None, True, h.lang)) if unknown
                 else h.t("case_seconds", seconds=case.get("downtime_seconds"))))
    rows.append(("outcome", h.t("outcome"), h.t("case_outcome", code=out.get("exit_code")) if out
                 else h.t("unfinished")))
    rows.append(("followups", h.t("case_followups"), _followups_html(h, case.get("followups"))))
    rows.append(("checkpoint", h.t("checkpoint"), '<span class="mono small">' + h.t(
        "case_checkpoint", anchor=cp.get("anchor"), line=cp.get("line"), signer=cp.get("signer")) + "</span>"
        if cp else f'<span class="s-warn">{h.t("no_checkpoint")}</span>'))
    rows.append(("witnesses", h.t("case_witnesses"), _witnesses_html(h, case.get("witnesses"))))
    h.add(f'<h3 id="case-{index}">{h.t("case_file")}</h3>', '<table class="kv case"><tbody>')
    for field_, label, value in rows:
        h.add(f'<tr data-field="{_e(field_)}"><th>{label}</th><td>{value}</td></tr>')
    h.add("</tbody></table>")


def _said(h: _Html) -> str:
    """The mark of a field only the controller's log says (nothing the auditor holds checks it)."""
    return f' <span class="s-warn">{h.t("controllers_word")}</span>'


def _witnesses_html(h: _Html, w: object) -> str:
    """The case's witnesses: each host keeping the run's checkpoint and whether the log matches it."""
    d = _dict(w)
    if not d:
        return h.t("case_witnesses_none")
    items = [h.t("witness_kept", host=_dict(k).get("host"), seq=_dict(k).get("seq"), head=_dict(k).get("head"),
                 time=_dict(k).get("time")) + " "
             + (f'<span class="s-ok">{h.t("witness_matches")}</span>' if _dict(k).get("matches") else
                f'<strong class="s-bad">{h.t("witness_differs")}</strong>'
                + ("" if h.lang == "zh" else f" {_e(_dict(k).get('problem'))}"))
             for k in _list(d.get("hosts"))]
    items += [f'<span class="s-warn">{h.t("witness_unreadable", host=_dict(u).get("host"))}</span>'
              for u in _list(d.get("unreadable"))]
    items += [f'<span class="s-warn">{h.t("witness_not_kept", host=n)}</span>' for n in _list(d.get("not_kept"))]
    from .witness import account_texts

    for a in _list(d.get("accounts")):
        bad = bool(_dict(a).get("differences"))
        for line in account_texts(_dict(a), h.lang):
            css = "s-bad" if bad else "s-warn" if _dict(a).get("doubts") else "s-ok"
            items.append(f'<span class="{css}">{_e(line)}</span>')
    return "<br>".join(items) or h.t("witness_none")


def _followups_html(h: _Html, followups: object) -> str:
    """The runs that undid or finished this one later (its rollbacks and resumes), each with its outcome."""
    items = []
    for f in [_dict(x) for x in _list(followups)]:
        hosts = ("，" if h.lang == "zh" else ", ").join(f"{_e(k)} {_badge(v, h.lang)}"
                                                       for k, v in _dict(f.get("hosts")).items())
        items.append(h.t("case_followup_rollback" if f.get("kind") == "rollback" else "case_followup_resume",
                         run=f.get("run"), started=f.get("started"))
                     + " " + (h.t("case_outcome", code=f.get("exit_code")) + (f" {hosts}" if hosts else "")
                              if f.get("finished") else h.t("unfinished"))
                     + (_said(h) if f.get("witnessed") is False else ""))
    return "<br>".join(items) or h.t("case_followups_none")


def _approved_text(h: _Html, run: _Run) -> str | None:
    """What the rule ``approval`` was on a run that started: the approvals accepted (approver, created, digest),
    the window, the policy's digest and the downtime, from the run's case file; None when nothing was accepted."""
    from .case import build_case

    case: dict[str, Any] | None = build_case(h.events or run.events, run.id)
    if not case or not case["approvals"] or run.is_rollback:
        return None
    parts = [h.t("approved_by", approver=a.get("approver"), created=a.get("created") or "—",
                 digest=a.get("digest")) for a in case["approvals"]]
    win = case.get("window") or {}
    if win:
        parts.append(h.t("window_at_start", state=h.t("inside" if win.get("inside") else "outside"),
                         reason=h.reason(win.get("reason"))))
    parts.append(h.t("policy_digest", digest=(case.get("policy") or {}).get("sha256")))
    if case.get("downtime_unknown") and not case.get("downtime_seconds"):
        parts.append(("停机 " if h.lang == "zh" else "downtime ") + _e(downtime_text(None, True, h.lang)))
    else:
        parts.append(h.t("downtime_text", seconds=case.get("downtime_seconds")))
    return "<br>".join(parts)


def _run_summary(h: _Html, run: _Run, words: str, cls: str) -> None:
    start = run.start or run.events[0]
    d = _data(start)
    end = run.finish or run.checkpoint or run.events[-1]
    who, key = _actor(start)
    rows = [(h.t("started"), _when(start.get("time"))),
            (h.t("finished"), _when(run.finish.get("time")) if run.finish else "—"),
            (h.t("duration"), _span(start.get("time"), end.get("time"))),
            (h.t("operator"), who), (h.t("operator_key"), f'<span class="mono">{key}</span>')]
    if run.is_rollback:
        rows.append((h.t("rollback_of"), f'<span class="mono">{_e(d.get("of_run"))}</span>'))
    req = d.get("requester")
    if isinstance(req, dict):
        rows.append((h.t("requester"), _e(f"{req.get('user')}@{req.get('host')}")))
    hosts_html = []
    for x in run.hosts.values():
        after = _data(x.finished).get("version") if x.finished else None
        line = f"<strong>{_e(x.name)}</strong> {_from_to(x)}"
        if x.outcome:
            line += f" {_badge(x.outcome, h.lang)}"
        if after:
            line += f' <span class="muted">{h.t("version_after")}: {_e(after)}</span>'
        hosts_html.append(line)
    rows.append((h.t("hosts"), "<br>".join(hosts_html) or "—"))
    if d.get("target"):
        rows.append((h.t("target"), _e(d.get("target"))))
    if d.get("plan"):
        rows.append((h.t("plan"), f'<span class="mono">{_e(d.get("plan"))}</span>'))
    cat = d.get("catalog")
    if isinstance(cat, dict):
        rows.append((h.t("catalog"), f'<span class="mono">{_e(cat.get("path"))}</span> '
                     f'<span class="muted">({_e(cat.get("signer"))}, {_e(cat.get("fingerprint"))})</span>'))
    given = d.get("approvals")
    approvals: Sequence[object] = given if isinstance(given, list) else run.accepted
    if not run.is_rollback:
        rows.append((h.t("approvals"), _approvals(h, approvals)))
    rows.append((h.t("outcome"), f'<span class="{cls}"><strong>{words}</strong></span>'))
    if run.checkpoint:
        cp = _dict(run.checkpoint.get("checkpoint"))
        rows.append((h.t("checkpoint"), '<span class="mono">' + h.t(
            "checkpoint_text", line=run.checkpoint.get("seq"), seq=cp.get("seq"), head=cp.get("head"),
            signer=cp.get("signer")) + "</span>"))
    else:
        rows.append((h.t("checkpoint"), f'<span class="s-warn">{h.t("no_checkpoint")}</span>'))
    h.add(f"<h3>{h.t('summary')}</h3>")
    h.kv(rows)
    for x in run.hosts.values():
        if x.rollback_cause is not None:
            after = _data(x.finished).get("version") if x.finished else None
            h.add(f'<div class="rollback-box"><strong>{h.t("rollback")} · {_e(x.name)}</strong><br>'
                  f'{h.t("rollback_cause")}: {_e(h.cause(x.rollback_cause))}<br>'
                  f'{h.t("outcome")}: {_badge(x.outcome, h.lang)}'
                  + (f' · {h.t("version_after")}: <strong>{_e(after)}</strong>' if after else "") + "</div>")


def _approvals(h: _Html, approvals: Sequence[object]) -> str:
    if not approvals:
        return f'<span class="s-bad">{h.t("no_approval")}</span>'
    items = []
    for a in approvals:
        if not isinstance(a, dict):
            continue
        item = (f'{h.t("approver")}: <strong>{_e(a.get("approver"))}</strong> · {h.t("key")}: '
                f'<span class="mono">{_e(a.get("key"))}</span> · {h.t("expires")}: {_when(a.get("expires"))}')
        if h.result is None or h.result.approvers_file is None:
            item += _said(h)
        if a.get("comment"):  # the report reads no approval file: the comment is the log's (audit case --approvals)
            item += f" · {h.t('comment')}: {_e(a.get('comment'))}{_said(h)}"
        items.append(f"<li>{item}</li>")
    return f'<ul class="approvals">{"".join(items)}</ul>'



def _host_section(h: _Html, host: _Host, approved: str | None = None) -> None:
    h.add(f"<h3>{h.t('host')} {_e(host.name)} <span class=\"muted small\">{_from_to(host)}</span></h3>")
    decision = host.summary.get("decision")
    if isinstance(decision, dict):
        _policy(h, decision, host.summary.get("checks"), approved)
    h.add(f"<h4>{h.t('timeline')}</h4>")
    h.add("<table><thead><tr>" + "".join(f"<th>{h.t(k)}</th>" for k in (
        "phase", "start", "duration", "result", "details")) + "</tr></thead><tbody>")
    for kind, item in host.rows:
        if kind == "phase":
            _phase_row(h, item)
        elif kind == "rollback":
            h.add(f'<tr class="rollback marker"><td>{h.t("rollback_started")}</td><td class="nowrap">'
                  f'{_clock(item.get("time"))}</td><td></td><td>{_badge("rollback", h.lang)}</td>'
                  f'<td>{h.t("rollback_cause")}: {_e(h.cause(_data(item).get("cause")))}</td></tr>')
        else:
            d = _data(item)
            note = _e(h.cause(d.get("error"))) if d.get("error") else ""
            rb = ' class="rollback marker"' if item.get("outcome") == "rolled_back" else ' class="marker"'
            h.add(f'<tr{rb}><td>{h.t("host_finished")}</td><td class="nowrap">{_clock(item.get("time"))}</td><td></td>'
                  f'<td>{_badge(item.get("outcome"), h.lang)}</td><td>{h.t("version_after")}: {_e(d.get("version"))}'
                  + (f"<br>{note}" if note else "") + "</td></tr>")
    h.add("</tbody></table>")


def _phase_row(h: _Html, p: _Phase) -> None:
    d = p.data
    from ..core.reasons import failure

    parts = [_e(failure(str(d.get("detail")), h.lang))] if d.get("detail") else []
    result = _dict(d.get("result"))
    probes = result.get("probes")
    if isinstance(probes, list) and probes:
        items = "".join(
            f'<li><span class="{"s-ok" if pr.get("ok") else "s-bad"}">{"✓" if pr.get("ok") else "✗"}</span> '
            f'<strong>{_e(pr.get("probe"))}</strong> {_e(h.reason(pr.get("detail")))}</li>'
            for pr in probes if isinstance(pr, dict))
        parts.append(f'<div class="small muted">{h.t("probes")}:</div><ul class="probes">{items}</ul>')
    given = result.get("command")
    command = given if isinstance(given, dict) else None
    if command:
        out = "\n".join(str(command.get(k) or "").rstrip() for k in ("stdout", "stderr") if command.get(k))
        parts.append(f'<span class="small muted">{h.t("exit_word")} {_e(command.get("exit"))}</span>'
                     + (f'<pre class="out">{_e(out)}</pre>' if out else ""))
    scalars = [f"{_e(h.fact(k))}={_e(h.word('status', str(v).lower()) if isinstance(v, bool) else v)}"
               for k, v in result.items()
               if k not in ("probes", "command") and isinstance(v, (str, int, float, bool)) and v != ""]
    if scalars:
        parts.append(f'<div class="small muted mono">{" · ".join(scalars)}</div>')
    if d.get("failure"):
        parts.append(f'<span class="s-bad small">{_e(h.word("failure", d.get("failure")))}</span>')
    phase = _e(h.word("phase", p.phase)) + (f'<br><span class="small s-warn">{h.t("in_rollback")}</span>' if p.in_rollback else "")
    outcome = _badge(p.outcome, h.lang) if p.outcome else f'<span class="muted">{h.t("running")}</span>'
    row_cls = ' class="rollback"' if p.in_rollback or p.phase == "rollback" else ""
    h.add(f'<tr{row_cls}><td>{phase}</td><td class="nowrap">{_clock(p.start)}</td>'
          f'<td class="num">{_seconds(p.seconds) if p.seconds is not None else "—"}</td><td>{outcome}</td>'
          f'<td>{"".join(f"<div>{x}</div>" for x in parts) or "—"}</td></tr>')


def _rule(h: _Html, name: object) -> str:
    """A rule's or check's name: its identifier in English; in Chinese its name, the identifier small beside it."""
    said = h.word("rule", name)
    if h.lang == "zh" and said != str(name):  # the identifier only on hover: the Chinese page reads in Chinese
        return f'<span title="{_e(name)}">{_e(said)}</span>'
    return f'<span class="mono">{_e(name)}</span>'


def _policy(h: _Html, decision: dict[str, object], checks: object, approved: str | None = None) -> None:
    allowed = decision.get("allowed")
    verdict = h.t("allowed") if allowed else h.t("refused")
    h.add(f'<h4>{h.t("policy")} · {h.t("decision")}: <span class="{"s-ok" if allowed else "s-bad"}">{verdict}</span></h4>')
    h.add("<table><thead><tr>" + "".join(f"<th>{h.t(k)}</th>" for k in ("rule", "status", "reason"))
          + "</tr></thead><tbody>")
    for r in _list(decision.get("rules")):
        if isinstance(r, dict) and r.get("rule") == "approval" and approved is not None:
            # at plan time the rule waits for the run; on a run that started, show what was accepted
            h.add(f'<tr><td>{_rule(h, r.get("rule"))}</td><td>{_badge("approved", h.lang)}</td>'
                  f'<td>{approved}</td></tr>')
        elif isinstance(r, dict):
            h.add(f'<tr><td>{_rule(h, r.get("rule"))}</td><td>{_badge(r.get("status"), h.lang)}</td>'
                  f'<td>{_e(h.reason(r.get("reason")))}</td></tr>')
    for c in _list(checks):
        if isinstance(c, dict):
            h.add(f'<tr><td>{_rule(h, c.get("check"))} <span class="muted small">({h.t("checks")})</span></td>'
                  f'<td>{_badge(c.get("status"), h.lang)}</td><td>{_e(h.reason(c.get("reason")))}</td></tr>')
    h.add("</tbody></table>")


def _others(h: _Html, others: list[dict[str, object]], runs: list[_Run]) -> None:
    """Plans, approvals and refusals that are not part of a run; a plan that never ran shows its policy."""
    from ..core.reasons import refusal

    ran = {_data(r.start).get("plan") for r in runs if r.start}
    h.add('<section class="card others">', f"<h2>{h.t('others')}</h2>")
    h.add("<table><thead><tr>" + "".join(f"<th>{h.t(k)}</th>" for k in (
        "time", "event", "outcome", "who", "details")) + "</tr></thead><tbody>")
    for e in others:
        d = _data(e)
        details = []
        if d.get("target"):
            details.append(f"{h.t('target')}: {_e(d.get('target'))}")
        if d.get("plan"):
            details.append(f'{h.t("plan")}: <span class="mono">{_e(str(d.get("plan"))[:16])}…</span>')
        if d.get("approver"):
            details.append(f"{h.t('approver')}: {_e(d.get('approver'))} "
                           f'<span class="mono small">({_e(d.get("key"))})</span>')
        if d.get("reason"):
            details.append(f"{h.t('reason')}: {_e(refusal(str(d.get('reason')), h.lang))}")
        h.add(f'<tr><td class="nowrap">{_when(e.get("time"))}</td><td>{_e(h.word("event", e.get("event")))}</td>'
              f'<td>{_badge(e.get("outcome"), h.lang)}</td><td>{_actor(e)[0]}</td><td>{"<br>".join(details) or "—"}</td></tr>')
    h.add("</tbody></table>")
    for e in others:
        d = _data(e)
        if e.get("event") != "plan_created" or d.get("plan") in ran:
            continue
        for x in _list(d.get("hosts")):
            if isinstance(x, dict) and isinstance(x.get("decision"), dict):
                h.add(f'<h3>{h.t("plan")} <span class="mono">{_e(str(d.get("plan"))[:16])}…</span> · '
                      f'{h.t("host")} {_e(x.get("host"))} <span class="muted small">{_e(x.get("current"))} → '
                      f'{_e(x.get("target"))}</span></h3>')
                _policy(h, x["decision"], x.get("checks"))
    h.add("</section>")
