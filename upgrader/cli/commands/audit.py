"""``upgrader audit verify|show|export``: the auditor's commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...audit.view import CANNOT_CHECK, describe
from ...core.exit_codes import ExitCode
from ._common import console, context_of, print_json

if TYPE_CHECKING:
    from ...api import WitnessOptions

__all__ = ["cmd_verify", "cmd_cross_check", "case_lines", "case_lines_zh", "witness_lines", "cmd_show", "cmd_case", "cmd_export", "log_path", "describe", "CANNOT_CHECK"]


def log_path(args: argparse.Namespace) -> Path:
    from ...core.recorder import audit_path

    return Path(args.log) if getattr(args, "log", None) else audit_path(args.home)


def verification(args: argparse.Namespace, data: bytes | None = None) -> Any:
    """The verdict on the log; ``data``: its bytes as read once (the report is then made from the same bytes)."""
    from ...api import verify_audit

    signers = getattr(args, "allowed_signers", None)
    return verify_audit(context_of(args), log=log_path(args), allowed_signers=Path(signers) if signers else None,
                        anchor=getattr(args, "anchor", None), data=data)


def cmd_verify(args: argparse.Namespace) -> int:
    if getattr(args, "witness", None):
        return _verify_witnessed(args)
    if getattr(args, "plans", None) or getattr(args, "approvals", None):
        return cmd_cross_check(args)
    result = verification(args)
    if args.json:
        print_json({**result.to_dict(), "verdict": describe(result)})
    else:
        from rich.text import Text

        from ...core.reasons import translate

        zh = _lang(args) == "zh"
        c = console()
        word, style = {"intact": ("INTACT", "bold green"), "altered": ("ALTERED", "bold red"),
                       "cannot_check": ("CANNOT CHECK", "bold yellow")}[result.status]
        # the verdict quotes the log (a run id, a time): never parse it as markup
        c.print(Text.assemble((_WORD_ZH[word] if zh else word, style), f" {result.path}"))
        c.print(describe(result, "zh" if zh else "en"), soft_wrap=True, markup=False)
        if result.last_checkpoint:
            cp = result.last_checkpoint
            c.print(f"最后一个检查点：第 {cp['line']} 行，序号 {cp['seq']}，链头 {cp['head']}，签名人 {cp['signer']}" if zh
                    else f"last checkpoint: line {cp['line']}, seq {cp['seq']}, head {cp['head']}, signed by "
                    f"{cp['signer']}", soft_wrap=True, markup=False)
        for w in result.warnings:
            c.print(Text.assemble(("注意：" if zh else "note: ", "yellow"), translate(w, "zh") if zh else w),
                    soft_wrap=True)
    return verdict_exit(result)


#: the verdict words in Chinese (audit verify --lang zh)
_WORD_ZH = {"INTACT": "完好", "ALTERED": "已被篡改", "CANNOT CHECK": "无法核验", "NOT PROVEN": "未经证实"}


def _lang(args: argparse.Namespace) -> str:
    from ...core.language import resolve_lang

    return resolve_lang(getattr(args, "lang", None))


def _verify_witnessed(args: argparse.Namespace) -> int:
    """``audit verify --witness INV``: the log's own verdict, then the log against the hosts' witnessed checkpoints
    (one read of the log for both). Altered by either: 6; else a host not read or no signers known: 2; else 0."""
    from ...api import verify_witnesses, witnessed_exit_code
    from ...audit.log import read_log
    from ...audit.witness import protection_text

    data = read_log(log_path(args))
    result = verification(args, data)
    witnessed = verify_witnesses(context_of(args), Path(args.witness), data=data,
                                 allowed_signers=Path(args.allowed_signers) if getattr(args, "allowed_signers", None)
                                 else None, **witness_options(args))
    code = witnessed_exit_code(verdict_exit(result), witnessed)
    # --plans/--approvals too: the files checked in the same call, the worse verdict of the two is the exit code
    crossed = _cross_checked(args) if getattr(args, "plans", None) or getattr(args, "approvals", None) else None
    if crossed is not None:
        code = max(code, crossed.exit_code, key=_severity)
    if args.json:
        print_json({**result.to_dict(), "verdict": describe(result), "witness": witnessed.to_dict(),
                    **({"cross_check": crossed.check.to_dict()} if crossed is not None else {}),
                    "exit_code": int(code)})
        return int(code)
    from rich.text import Text

    c = console()
    zh = _lang(args) == "zh"
    word, style = {0: ("INTACT", "bold green"), 6: ("ALTERED", "bold red")}.get(
        int(code), ("NOT PROVEN", "bold yellow") if witnessed.doubts and verdict_exit(result) == 0 else
        ("CANNOT CHECK", "bold yellow"))
    if zh:
        c.print(Text.assemble((_WORD_ZH[word], style), f" {result.path}（已与各主机见证的检查点核对）"))
    else:
        c.print(Text.assemble((word, style), f" {result.path} (with the hosts' witnessed checkpoints)"))
    c.print(describe(result, "zh" if zh else "en"), soft_wrap=True, markup=False)
    said = "见证：" if zh else "witness: "
    for p in witnessed.problems_zh if zh else witnessed.problems:
        c.print(Text.assemble((said, "red"), p), soft_wrap=True)
    for p in witnessed.doubts_zh if zh else witnessed.doubts:
        c.print(Text.assemble((said, "yellow"), p), soft_wrap=True)
    for p in witnessed.ignored_zh if zh else witnessed.ignored:
        c.print(Text.assemble((said, "yellow"), p), soft_wrap=True)
    for h in witnessed.hosts:
        if h.error:
            c.print(Text.assemble((said, "yellow"), f"主机 {h.host} 无法读取：{h.error}" if zh else
                                  f"host {h.host} could not be read: {h.error}"), soft_wrap=True)
        elif zh:
            c.print(Text(f"见证：主机 {h.host} 保存了 {len(h.checkpoints)} 个检查点和它自己对 {len(h.runs)} 次已结束运行的"
                         f"记录；{protection_text(h, 'zh')}"), soft_wrap=True)
        else:
            c.print(Text(f"witness: host {h.host} keeps {len(h.checkpoints)} checkpoint(s) and its own record of "
                         f"{len(h.runs)} finished run(s); {protection_text(h)}"), soft_wrap=True)
    if not witnessed.problems and zh:
        c.print(Text(f"{witnessed.checked} 个见证的检查点与日志一致"
                     + (f"；主机记录的 {len(witnessed.accounts)} 次运行与日志一致" if witnessed.accounts else "")
                     + (f"；{witnessed.syslog_checked} 个见证的 syslog 副本与日志和主机记录一致"
                        if witnessed.syslog_checked else "")), soft_wrap=True)
    elif not witnessed.problems:
        c.print(Text(f"{witnessed.checked} witnessed checkpoint(s) match the log"
                     + (f"; {len(witnessed.accounts)} run(s) as the hosts recorded them match it" if
                        witnessed.accounts else "")
                     + (f"; {witnessed.syslog_checked} syslog copy(ies) of the witnesses match the log and the "
                        "hosts' records" if witnessed.syslog_checked else "")), soft_wrap=True)
    if crossed is not None:
        _print_cross_check(crossed.check, _lang(args))
    return int(code)


def witness_options(args: argparse.Namespace) -> WitnessOptions:
    """verify_witnesses's options from --earlier-policy, --syslog and --other-log LOG[:SIGNERS] (audit verify, show,
    case and export take the same)."""
    others = [other_log(x) for x in getattr(args, "other_log", None) or []]
    return {"earlier": [Path(p) for p in getattr(args, "earlier_policy", None) or []],
            "syslog": [Path(p) for p in getattr(args, "syslog", None) or []],
            "other_logs": [log for log, _ in others],
            "other_signers": {log: signers for log, signers in others if signers is not None}}


def ignored_text(witnessed: Any, lang: str = "en") -> str:
    """``; N syslog line(s) … ignored`` for a verdict line (empty when none): a line not signed by a trusted audit
    key is no evidence, and no part of the verdict, but is never passed over in silence."""
    n = len(witnessed.ignored)
    if not n:
        return ""
    return (f"；{n} 行没有可信审计密钥签名的 syslog 已忽略（audit verify --witness --syslog 逐一列出）" if lang == "zh" else
            f"; {n} syslog line(s) not signed by a trusted audit key ignored (audit verify --witness --syslog names "
            "each)")


def other_log(text: str) -> tuple[Path, Path | None]:
    """``--other-log LOG[:SIGNERS]``: the log and its own allowed_signers file (None: those of the log verified).
    A LOG whose own name holds ':' is taken whole when it exists."""
    log, sep, signers = text.rpartition(":")
    if not sep or not log or not signers or Path(text).exists():
        return Path(text), None
    return Path(log), Path(signers)


def _severity(code: int) -> int:
    """How bad an audit exit code is: altered (6) over not proven or not checked (2) over intact (0)."""
    return {0: 0, 2: 1, 6: 2}.get(int(code), 1)


def _cross_checked(args: argparse.Namespace) -> Any:
    """The log verified and every plan and approval it names checked against --plans/--approvals."""
    from ...api import cross_check_audit

    signers = getattr(args, "allowed_signers", None)
    approvers = getattr(args, "approval_signers", None)
    return cross_check_audit(context_of(args), plans=Path(args.plans) if args.plans else None,
                             approvals=Path(args.approvals) if args.approvals else None, log=log_path(args),
                             allowed_signers=Path(signers) if signers else None, anchor=getattr(args, "anchor", None),
                             approval_signers=Path(approvers) if approvers else None)


def cmd_cross_check(args: argparse.Namespace) -> int:
    """``audit verify --plans DIR --approvals DIR``: the log's verdict, then every plan and approval it names."""
    from rich.text import Text

    from ...audit.view import altered, headline

    done = _cross_checked(args)
    result, check = done.result, done.check
    if args.json:
        print_json({**result.to_dict(), "headline": headline(result), "verdict": describe(result),
                    "cross_check": check.to_dict()})
        return int(done.exit_code)
    lang = _lang(args)
    c = console()
    head = headline(result, lang)
    if int(done.exit_code) == 6 and not altered(result):  # the first line says the overall verdict, never INTACT
        head = ("已被篡改（计划或批准文件与日志不符，见下）" if lang == "zh" else
                "ALTERED (plans or approvals do not match the log, see below)")
    c.print(Text(f"{head} {result.path}"), soft_wrap=True)
    c.print(describe(result, lang), soft_wrap=True, markup=False)
    _print_cross_check(check, lang)
    return int(done.exit_code)


def _print_cross_check(check: Any, lang: str) -> None:
    """Each folder's count of files found, then every mismatch (in ``lang``), or that all match."""
    from rich.text import Text

    from ...core.reasons import translate

    zh = lang == "zh"
    c = console()
    for what, found, folder in (("plans", check.plans, check.plans_dir), ("approvals", check.approvals,
                                                                          check.approvals_dir)):
        if folder is None:
            continue
        good = sum(1 for f in found.values() if f)
        c.print(Text(f"{'计划' if what == 'plans' else '批准'}：日志提到 {len(found)} 个，在 {folder} 中找到 {good} 个" if zh
                     else f"{what}: {len(found)} named by the log, {good} found in {folder}"), soft_wrap=True)
    for p in check.problems:
        c.print(Text.assemble(("不符 " if zh else "MISMATCH ", "bold red"),
                              str(p.get("problem_zh") or translate(str(p["problem"]), lang)) if zh else str(p["problem"])),
                soft_wrap=True)
    unknown = sorted(getattr(check, "unknown_policy", None) or {})
    if unknown:
        c.print(Text(f"批准数量未核对（控制端的一面之词）：{len(unknown)} 次运行的策略不是审计方持有的策略文件：{', '.join(unknown)}"
                     if zh else f"approval counts not checked (the controller's word): {len(unknown)} run(s) under a "
                     f"policy other than the one the auditor holds: {', '.join(unknown)}", style="yellow"),
                soft_wrap=True)
    if check.ok:
        c.print(Text("日志提到的每个计划和批准都与其文件相符" if zh else
                     "every plan and approval the log names matches its file", style="green"), soft_wrap=True)


def verdict_exit(result: Any) -> int:
    """0 intact, 6 altered (or a finished run unsigned), 2 cannot check (no allowed signers known)."""
    from ...api import audit_exit_code

    return audit_exit_code(result)


def selected_events(args: argparse.Namespace) -> list[dict[str, Any]]:  # kept for callers of the module
    """The events ``audit show`` shows, from one read of the log."""
    from ...audit.log import read_log
    from ...audit.view import select_events

    path = log_path(args)
    return select_events(path, read_log(path), run=getattr(args, "run", None), host=getattr(args, "host", None),
                         since=getattr(args, "since", None))


def cmd_show(args: argparse.Namespace) -> int:
    """The timeline, after the verification of the whole log: its verdict first (and in ``--json``); exit 6 when
    the log was altered (a broken chain needs no trust to see), else 0 (UNVERIFIED without trust is said, not an
    error: the timeline is still worth reading)."""
    from rich.table import Table
    from rich.text import Text

    from ...audit.log import read_log
    from ...api import witnessed_exit_code
    from ...audit.view import altered, headline, select_events, witness_headline

    path = log_path(args)
    data = read_log(path)  # one read: the verdict is about exactly the bytes shown
    result = verification(args, data)
    events: list[dict[str, Any]] = select_events(path, data, run=getattr(args, "run", None),
                                                 host=getattr(args, "host", None), since=getattr(args, "since", None))
    witnessed = _witnessed(args, data)
    code = witnessed_exit_code(ExitCode.AUDIT_ALTERED if altered(result) else ExitCode.OK, witnessed)
    if args.json:
        print_json({"verification": {**result.to_dict(), "headline": headline(result), "verdict": describe(result)},
                    **({"witness": {**witnessed.to_dict(), "headline": witness_headline(witnessed)}}
                       if witnessed is not None else {}), "events": events, "exit_code": int(code)})
        return code
    from ...core.language import resolve_lang
    from ...core.reasons import word as said

    lang = resolve_lang(getattr(args, "lang", None))
    c = console()
    word = headline(result, lang)
    style = "bold red" if altered(result) else "bold green" if result.status == "intact" else "bold yellow"
    c.print(Text.assemble((word, style), f" {result.path}"), soft_wrap=True)
    c.print(describe(result, lang), soft_wrap=True, markup=False)
    zh = lang == "zh"
    if witnessed is not None:
        _print_witness_verdict(witnessed, lang)
    table = Table(title=f"审计时间线（{len(events)} 条事件）" if zh else f"Audit timeline ({len(events)} events)",
                  title_justify="left")
    for col in (("#", "时间", "运行", "主机", "事件", "阶段", "结果", "操作人", "详情") if zh else
                ("#", "time", "run", "host", "event", "phase", "outcome", "who", "details")):
        table.add_column(col, overflow="fold")
    style_of = {"failed": "bold red", "refused": "bold red", "rolled_back": "bold yellow", "committed": "green",
                "ok": "green", "needs_person": "bold red"}
    for e in events:
        # recorded text is untrusted: Text() cells, so that "[/bold]" in a command's output is shown, not parsed
        actor: dict[str, Any] = e["actor"] if isinstance(e.get("actor"), dict) else {}
        outcome = str(e.get("outcome") or "")
        when = str(e.get("time") or "")[:19].replace("T", " ")
        if isinstance(e.get("clock"), str):  # a time the writer raised above its clock: the clock is shown beside it
            clock = str(e["clock"])[:19].replace("T", " ")
            when += f"（写入时时钟 {clock}）" if zh else f" (writer's clock {clock})"
        cells = (e.get("seq"), when, e.get("run"), e.get("host"),
                 said("event", e.get("event"), lang) if e.get("event") else None,
                 said("phase", e.get("phase"), lang) if e.get("phase") else None)
        table.add_row(*(Text(str(v if v is not None else "")) for v in cells),
                      Text(said("status", outcome, lang), style=style_of.get(outcome, "")),
                      Text(str(actor.get("principal") or actor.get("user") or "")), Text(_details(e, lang)))
    c.print(table)
    if altered(result):  # said again below a long table, where the eye ends
        c.print(Text.assemble((word, style), " —— 上面的时间线是日志现在的样子，不是当初写下的样子" if zh else
                              " — the timeline above shows the log as it is now, not as written"), soft_wrap=True)
    return code


def _witnessed(args: argparse.Namespace, data: bytes) -> Any:
    """The log's ``data`` against the hosts' own records when ``--witness INVENTORY`` was given (else None)."""
    if not getattr(args, "witness", None):
        return None
    from ...api import verify_witnesses

    signers = getattr(args, "allowed_signers", None)
    return verify_witnesses(context_of(args), Path(args.witness), data=data,
                            allowed_signers=Path(signers) if signers else None, **witness_options(args))


def _print_witness_verdict(witnessed: Any, lang: str) -> None:
    """The hosts' verdict under the log's own (audit show --witness): its headline, then every finding."""
    from rich.text import Text

    from ...audit.view import witness_headline

    zh = lang == "zh"
    c = console()
    style = "bold red" if witnessed.problems else "bold yellow" if witnessed.doubts or witnessed.unreachable \
        else "bold green"
    c.print(Text.assemble(("见证：" if zh else "witnesses: ", style), (witness_headline(witnessed, lang), style)),
            soft_wrap=True)
    for p in witnessed.problems_zh if zh else witnessed.problems:
        c.print(Text.assemble(("  见证：" if zh else "  witness: ", "red"), p), soft_wrap=True)
    for p in witnessed.doubts_zh if zh else witnessed.doubts:
        c.print(Text.assemble(("  见证：" if zh else "  witness: ", "yellow"), p), soft_wrap=True)
    for p in witnessed.ignored_zh if zh else witnessed.ignored:
        c.print(Text.assemble(("  见证：" if zh else "  witness: ", "yellow"), p), soft_wrap=True)
    for h in witnessed.unreachable:
        c.print(Text.assemble(("  见证：" if zh else "  witness: ", "yellow"), f"主机 {h.host} 无法读取：{h.error}" if zh
                              else f"host {h.host} could not be read: {h.error}"), soft_wrap=True)


def _details(e: dict[str, Any], lang: str = "en") -> str:
    from ...core.reasons import cause, failure, refusal

    d: dict[str, Any] = e["data"] if isinstance(e.get("data"), dict) else {}
    zh = lang == "zh"
    if e.get("event") == "checkpoint":
        cp: dict[str, Any] = e["checkpoint"] if isinstance(e.get("checkpoint"), dict) else {}
        if zh:
            return f"签署序号 {cp.get('seq')}，链头 {str(cp.get('head'))[:16]}…（{cp.get('key')}）"
        return f"signs seq {cp.get('seq')} head {str(cp.get('head'))[:16]}… ({cp.get('key')})"
    for key in ("reason", "detail", "cause", "error"):
        if d.get(key):
            text = str(d[key])
            if zh:
                text = (refusal(text, lang) if key == "reason" else failure(text, lang) if key == "detail"
                        else cause(text, lang, technical=False))
            return text[:160]
    if "target" in d:
        if zh:
            return f"升级到 {d['target']}" + (f"，计划 {str(d.get('plan'))[:12]}…" if d.get("plan") else "")
        return f"to {d['target']}" + (f", plan {str(d.get('plan'))[:12]}…" if d.get("plan") else "")
    if "approver" in d:
        return f"{d['approver']} ({d.get('key')})"
    return ""


def cmd_export(args: argparse.Namespace) -> int:
    from ...api import export_audit

    signers = getattr(args, "allowed_signers", None)
    done = export_audit(context_of(args), output=Path(args.output), format=args.format, log=log_path(args),
                        allowed_signers=Path(signers) if signers else None, anchor=getattr(args, "anchor", None),
                        run=getattr(args, "run", None), host=getattr(args, "host", None),
                        since=getattr(args, "since", None), lang=args.lang,
                        witness=Path(args.witness) if getattr(args, "witness", None) else None,
                        witness_options=witness_options(args),
                        plans=Path(args.plans) if getattr(args, "plans", None) else None)
    if not args.json:
        state = {"intact": "intact", "altered": "ALTERED", "cannot_check": f"not checked: {CANNOT_CHECK}"}
        console().print(f"wrote {done.output} ({done.format}, {done.events} events; log {state[done.status]})",
                        markup=False)
        if done.witness is not None:
            wr = done.witness
            console().print("witnesses: " + (f"ALTERED, {len(wr.problems)} witnessed checkpoint(s) do not match the "
                                             "log (audit verify --witness names each)" if wr.problems else
                                             f"NOT PROVEN, {len(wr.doubts)} doubt(s) (audit verify --witness names "
                                             "each)" if wr.doubts else
                                             f"CANNOT CHECK, {len(wr.unreachable)} host(s) could not be read"
                                             if wr.unreachable else f"{wr.checked} witnessed checkpoint(s) match "
                                             "the log" + (f"; {wr.syslog_checked} syslog copy(ies) of the witnesses "
                                                          "match the log and the hosts' records"
                                                          if wr.syslog_checked else "")) + ignored_text(wr),
                            markup=False)
        if done.cases_output is not None:
            console().print(f"wrote {done.cases_output} (one row per run and host: the case files)", markup=False)
    else:
        print_json({"output": str(done.output), "format": done.format, "events": done.events,
                    "intact": done.result.intact, "status": done.status,
                    "cases_output": str(done.cases_output) if done.cases_output else None,
                    "witness": done.witness.to_dict() if done.witness is not None else None,
                    "exit_code": done.exit_code})
    # the report is written either way (it says ALTERED or CANNOT CHECK at the top); scripts learn it from the exit
    # code too
    return done.exit_code


def cmd_case(args: argparse.Namespace) -> int:
    from rich.text import Text

    from ...api import audit_case
    from ...audit.view import headline

    signers = getattr(args, "allowed_signers", None)
    done = audit_case(context_of(args), args.run, log=log_path(args),
                      allowed_signers=Path(signers) if signers else None, anchor=getattr(args, "anchor", None),
                      witness=Path(args.witness) if getattr(args, "witness", None) else None,
                      approvals=Path(args.approvals) if getattr(args, "approvals", None) else None,
                      witness_options=witness_options(args),
                      plans=Path(args.plans) if getattr(args, "plans", None) else None)
    from ...audit.view import altered

    # a case read from an altered log (its chain or signatures, or the hosts' own records, say so) is no evidence:
    # every section taken from the log is marked so below the headline
    forged = altered(done.result) or (done.witness is not None and bool(done.witness.problems))
    if args.json:
        print_json({"verification": {**done.result.to_dict(), "headline": headline(done.result),
                                     "verdict": describe(done.result)}, "case": done.case,
                    "evidence": not forged, "exit_code": done.exit_code})
        return done.exit_code
    from ...core.language import resolve_lang

    lang = resolve_lang(getattr(args, "lang", None))
    c = console()
    c.print(Text(f"{headline(done.result, lang)} {done.result.path}"), soft_wrap=True)
    wr = done.witness
    if wr is not None:  # the log against every host's witnessed checkpoints, not only this run's
        zh = lang == "zh"
        if wr.problems:
            c.print(Text(f"已被篡改：主机的见证检查点有 {len(wr.problems)} 处与日志不符（audit verify --witness 逐一列出）"
                         if zh else f"ALTERED: {len(wr.problems)} witnessed checkpoint(s) of the hosts do not match "
                         "the log (audit verify --witness names each)", style="bold red"), soft_wrap=True)
        elif wr.doubts:
            c.print(Text(f"未经证实：主机的记录有 {len(wr.doubts)} 处存疑（audit verify --witness 逐一列出）" if zh else
                         f"NOT PROVEN: {len(wr.doubts)} doubt(s) in the hosts' records (audit verify --witness names "
                         "each)", style="bold yellow"), soft_wrap=True)
        elif wr.unreachable:
            c.print(Text(f"无法核验：{len(wr.unreachable)} 台主机无法读取" if zh else
                         f"CANNOT CHECK: {len(wr.unreachable)} host(s) could not be read", style="bold yellow"),
                    soft_wrap=True)
        else:
            c.print(Text(f"完好：主机的 {wr.checked} 个见证检查点都与日志一致"
                         + (f"；{wr.syslog_checked} 个见证的 syslog 副本与日志和主机记录一致" if wr.syslog_checked else "")
                         if zh else f"INTACT: the hosts' {wr.checked} witnessed checkpoint(s) all match the log"
                         + (f"; {wr.syslog_checked} syslog copy(ies) of the witnesses match the log and the hosts' "
                            "records" if wr.syslog_checked else ""), style="bold green"), soft_wrap=True)
        if wr.ignored:
            c.print(Text(ignored_text(wr, lang).lstrip("；; "), style="yellow"), soft_wrap=True)
    checked: Any = done.case.get("approval_check")
    if isinstance(checked, dict):  # the approval files the auditor was given (--approvals)
        n = len(checked.get("problems") or [])
        zh = lang == "zh"
        c.print(Text((f"已被篡改：批准文件有 {n} 处与日志不符（见各批准人下方）" if zh else
                      f"ALTERED: {n} problem(s) of the approval files against the log (under each approval)") if n
                     else (f"完好：这次运行的批准文件（{checked.get('folder')}）都与日志一致" if zh else
                           f"INTACT: the run's approval files ({checked.get('folder')}) match the log"),
                     style="bold red" if n else "bold green"), soft_wrap=True)
        for p in checked.get("problems") or []:  # problems of the run's opening line (too few approvals)
            if isinstance(p, dict) and p.get("what") == "approvals":
                c.print(Text(("已被篡改：" if zh else "ALTERED: ") + str(p.get("problem_zh" if zh else "problem")),
                             style="bold red"), soft_wrap=True)
        if checked.get("policy_unknown"):
            c.print(Text("批准数量：运行记的策略不是审计方持有的策略文件，无法核对所需批准数（控制端的一面之词）" if zh else
                         "approval count: the run's policy is not the policy file the auditor holds, so the number of "
                         "approvals it requires is not checked (the controller's word)", style="yellow"),
                    soft_wrap=True)
    planned: Any = done.case.get("plan_check")
    if isinstance(planned, dict):  # the plan files the auditor was given (--plans)
        zh = lang == "zh"
        for p in planned.get("problems") or []:
            if isinstance(p, dict):
                c.print(Text(("已被篡改：" if zh else "ALTERED: ") + str(p.get("problem_zh" if zh else "problem")),
                             style="bold red"), soft_wrap=True)
        if not planned.get("problems") and planned.get("file") is None:
            c.print(Text("这次运行本身没有计划文件（续跑或回滚：其首次运行的案卷核对计划文件）" if zh else
                         "the run names no plan file of its own (a resume or rollback: its first run's case checks "
                         "the plan file)", style="yellow"), soft_wrap=True)
        elif not planned.get("problems"):
            c.print(Text(f"完好：这次运行的计划文件（{planned.get('file')}）与日志一致" if zh else
                         f"INTACT: the run's plan file ({planned.get('file')}) matches the log", style="bold green"),
                    soft_wrap=True)
    lines = case_lines_zh(done.case) if lang == "zh" else case_lines(done.case)
    said: Any = done.case.get("witnesses")
    hosts = len(witness_lines(said, lang))  # the hosts' own records close the case
    if forged:
        mark = NOT_EVIDENCE_ZH if lang == "zh" else NOT_EVIDENCE
        c.print(Text(mark + ("：" if lang == "zh" else ": ") + ("以下各节取自这份日志，不能作为证据；只有主机自己的记录（“主机记录”“见证”各行）是主机的证词"
                                    if lang == "zh" else "every section below is taken from this log and is no "
                                    "evidence; only the hosts' own records (the host record and witness lines) are "
                                    "the hosts' word"), style="bold red"), soft_wrap=True)
        lines = [f"[{mark}] {line}" for line in lines[:len(lines) - hosts]] + lines[len(lines) - hosts:]
    for line in lines:
        c.print(Text(line), soft_wrap=True)
    return done.exit_code


#: the mark of every section of a case read from an altered log
NOT_EVIDENCE = "from an altered log — not evidence"
NOT_EVIDENCE_ZH = "取自被篡改的日志——不是证据"


#: where a case's downtime comes from (audit/case.py "log"; api._downtime_from_hosts "host", "hosts", "hosts and
#: log"): the hosts' own step times when they are witnessed, else the log's phase times
_SOURCE_EN = {"log": "from the log's phase times", "host": "by the host's own clock",
              "hosts": "by the hosts' own clocks", "hosts and log": "by the hosts' own clocks where they recorded it, "
              "else from the log"}
_SOURCE_ZH = {"log": "来自日志的阶段时间", "host": "按主机自己的时钟", "hosts": "按各主机自己的时钟",
              "hosts and log": "主机有记录的按主机自己的时钟，其余来自日志"}


def _down(x: dict[str, Any], lang: str) -> str:
    """The downtime of a case (``downtime_unknown``: hosts never seen started again) or of one of its hosts (None:
    never seen started again), as text: never a raw None."""
    from ...audit.case import downtime_text

    unknown = bool(x.get("downtime_unknown")) and not x.get("downtime_seconds")
    return downtime_text(x.get("downtime_seconds"), unknown, lang)


def _up_again(h: dict[str, Any], lang: str) -> str:
    """Where a host's downtime ended when a later run of the change started its service again."""
    up = h.get("up_again")
    if not isinstance(up, dict) or h.get("downtime_source") == "host":
        return ""
    return (f"，至 {up.get('run')} 的启动阶段结束（{up.get('at')}）" if lang == "zh" else
            f", until the start phase of {up.get('run')} ended at {up.get('at')}")


def _approval_file_lines(case: dict[str, Any], a: dict[str, Any], lang: str) -> list[str]:
    """Under an approval of the case, when it was given ``--approvals DIR``: the file that has its digest (its
    signature checked) or that none has, and each problem of that file against the log."""
    checked = case.get("approval_check")
    if not isinstance(checked, dict):
        return []
    zh = lang == "zh"
    found = a.get("checked_file")
    if found is None:
        head = (f"  批准文件：{checked.get('folder')} 中没有哪个文件有这个摘要" if zh else
                f"  approval file: none in {checked.get('folder')} has this digest")
    elif a.get("file_problems"):
        head = f"  批准文件：{found}（与日志不符）" if zh else f"  approval file: {found} (does not match the log)"
    else:
        head = (f"  批准文件：{found}（签名已核验，计划、批准人、密钥、有效期、非工作时间预约和备注与日志一致）" if zh else
                f"  approval file: {found} (signature checked; plan, approver, key, expiry, after-hours and comment match the log)")
    return [head] + [f"  {'已被篡改：' if zh else 'ALTERED: '}{p.get('problem_zh' if zh else 'problem')}"
                     for p in a.get("file_problems") or []]


#: the mark of a field only the controller's log says, which nothing the auditor holds can check
_WORD_EN, _WORD_ZH_MARK = " (the controller's word)", "（控制端的一面之词）"


def _no_record(case: dict[str, Any], h: dict[str, Any]) -> bool:
    """Whether the host was read (``--witness``) and keeps no record at all of the run, or opened it and keeps no
    finish of it while the log gives it an end there: its outcome there is only the controller's word."""
    from ...audit.report import host_outcome_word

    return host_outcome_word(case, h)


def _word(case: dict[str, Any], a: dict[str, Any] | None = None, lang: str = "en") -> str:
    """The "(the controller's word)" mark of a time the log alone says: an approval's creation time unless its file
    was checked (``--approvals``: a moved time is then a problem of that file), a plan's creation time always (the
    case reads no plan file: ``audit verify --plans`` checks it)."""
    checked = a is not None and (a.get("created") is None or isinstance(case.get("approval_check"), dict)
                                 and a.get("checked_file") is not None)
    return "" if checked else _WORD_ZH_MARK if lang == "zh" else _WORD_EN


def _name_word(case: dict[str, Any], a: dict[str, Any], lang: str = "en") -> str:
    """The mark of an approver's name no file checked: neither the approvers' allowed_signers (verify holds each
    name to its key's literal principals there) nor the approval file (``--approvals``)."""
    checked = a.get("approver_listed_in") or (isinstance(case.get("approval_check"), dict)
                                              and a.get("checked_file") is not None)
    return "" if checked else _WORD_ZH_MARK if lang == "zh" else _WORD_EN


def _req_word(case: dict[str, Any], lang: str = "en") -> str:
    """The mark of a requester no file held (neither the plan file, ``--plans``, nor an approval file,
    ``--approvals``): the controller's word; a field a file held is named with that file."""
    from ...audit.case import requester_word

    if requester_word(case):
        held = (case.get("requested") or {}).get("checked_by") or {}
        if held:  # some fields held (an approval holds the user only)
            names = ", ".join(f"{k} by {v}" for k, v in held.items())
            names_zh = "，".join(f"{k} 由 {v}" for k, v in held.items())
            return (f"（仅 {names_zh} 核验，其余为控制端的一面之词）" if lang == "zh"
                    else f" (only {names} checked; the rest is the controller's word)")
        return _WORD_ZH_MARK if lang == "zh" else _WORD_EN
    return ""


def _head_rows(case: dict[str, Any]) -> list[tuple[str, str]]:
    """The case's first lines, (English, Chinese): the run and what it was asked as. A rollback or resume is asked
    for by its operator; the requester, plan and approvals shown are its run's (``of_run``)."""
    req = case.get("requested") or {}
    kind_zh = {"rollback": "回滚", "resume": "续跑"}.get(str(case.get("kind")), "升级")
    of = case.get("of_run")
    if not of:
        return [(f"run {case['run']} ({case.get('kind')}) to {case.get('target')}",
                 f"运行 {case['run']}（{kind_zh}），目标版本 {case.get('target')}"),
                (f"requested by: {req.get('user')}@{req.get('host')} key {req.get('key')}{_req_word(case)}; plan "
                 f"{req.get('plan')} made {req.get('plan_created')}{_WORD_EN}",
                 f"申请人：{req.get('user')}@{req.get('host')}，密钥 {req.get('key')}{_req_word(case, 'zh')}；计划 "
                 f"{req.get('plan')}，创建于 {req.get('plan_created')}{_WORD_ZH_MARK}")]
    ofr = of.get("requester") or {}
    approvals = of.get("approvals") or []
    return [(f"run {case['run']} ({case.get('kind')} of run {of.get('run')})",
             f"运行 {case['run']}（运行 {of.get('run')} 的{kind_zh}）"),
            (f"{case.get('kind')} of run {of.get('run')} (started {of.get('started')}), that run's: requested by "
             f"{ofr.get('user')}@{ofr.get('host')} key {ofr.get('key')}; plan {of.get('plan')}; to "
             f"{of.get('target')}; approved by "
             + (", ".join(f"{a.get('approver')} (key {a.get('key')}, digest {a.get('digest')})" for a in approvals)
                or "nobody recorded"),
             f"{kind_zh}的是运行 {of.get('run')}（开始于 {of.get('started')}），该运行的申请人：{ofr.get('user')}@"
             f"{ofr.get('host')}，密钥 {ofr.get('key')}；计划 {of.get('plan')}；目标版本 {of.get('target')}；批准人："
             + ("，".join(f"{a.get('approver')}（密钥 {a.get('key')}，批准摘要 {a.get('digest')}）" for a in approvals)
                or "没有记录"))]


def case_lines(case: dict[str, Any]) -> list[str]:
    """The case file as plain lines (recorded text: printed as is, never as markup)."""
    pol = case.get("policy") or {}
    cat = case.get("catalog") or {}
    win = case.get("window") or {}
    op = case.get("operator") or {}
    of = case.get("of_run")
    out = [en for en, _ in _head_rows(case)]
    for a in case.get("approvals") or []:
        out.append(f"approved by: {a.get('approver')}{_name_word(case, a, 'en')} key {a.get('key')}; created "
                   f"{a.get('created') or 'unknown'}{_word(case, a, 'en')}, expires {a.get('expires')}; approval digest "
                   f"{a.get('digest')}")
        out += _approval_file_lines(case, a, "en")
    if not case.get("approvals") and not of:
        out.append("approved by: nobody recorded")
    out += [f"policy: {pol.get('source')} sha256 {pol.get('sha256')} identity {pol.get('identity')}"
            if pol.get("sha256") else "policy: not recorded (a rollback or resume recorded before its policy was)",
            f"catalog: serial {cat.get('serial')} signed by {cat.get('signer')} ({cat.get('fingerprint')}){_WORD_EN}"
            if cat.get("serial") is not None or not of else f"catalog: none of its own (run {of.get('run')}'s plan)",
            "service window: " + (("inside" if win.get("inside") else "outside") + f" — {win.get('reason')}"
                                  + _WORD_EN if win else "not recorded"),
            f"operator: {op.get('principal')} ({op.get('user')}@{op.get('host')}{_WORD_EN}, key {op.get('key')})",
            f"started {case.get('started')}, "
            + (f"finished {case.get('finished')}, {case.get('duration_seconds')} s; " if case.get("finished")
               else "not finished; ")
            + f"downtime {_down(case, 'en')} ({_SOURCE_EN.get(str(case.get('downtime_source')), 'log')})"]
    raised = case.get("raised_lines") or []
    for r in raised[:3]:
        out.append(f"line {r.get('line')}: time {r.get('time')} was raised above the writer's clock {r.get('clock')} "
                   "(the log keeps its times in order; the case's times are the writer's clock)")
    if len(raised) > 3:
        out.append(f"… and {len(raised) - 3} more line(s) of this run with a raised time (--json: raised_lines)")
    for h in case.get("hosts") or []:
        phases = ", ".join(f"{p.get('phase')} {p.get('outcome')} {p.get('seconds')} s" if p.get("outcome") is not None
                           else f"{p.get('phase')} not finished" for p in h.get("phases") or [])
        out.append(f"host {h.get('host')}: {h.get('from')} -> {h.get('to')}: {h.get('outcome') or 'not finished'}"
                   f"{_WORD_EN if _no_record(case, h) else ''}, "
                   f"version after {h.get('version_after') or 'unknown'}, downtime {_down(h, 'en')} "
                   f"({_SOURCE_EN.get(str(h.get('downtime_source')), 'log')}{_up_again(h, 'en')}); phases: {phases}")
        if h.get("rollback_cause"):
            out.append(f"  rolled back because: {h['rollback_cause']}{_WORD_EN}")
    outcome = case.get("outcome")
    out.append(f"outcome: exit {outcome.get('exit_code')} {outcome.get('hosts')}" if outcome else "outcome: unfinished")
    for f in case.get("followups") or []:
        out.append(f"later: {f.get('kind')} {f.get('run')} of this run, started {f.get('started')}: "
                   + (f"exit {f.get('exit_code')} {f.get('hosts')}" if f.get("finished") else "unfinished")
                   + (_WORD_EN if f.get("witnessed") is False else ""))
    cp = case.get("checkpoint")
    out.append(f"checkpoint: line {cp.get('line')} signs seq {cp.get('seq')} head {cp.get('head')} by {cp.get('signer')} "
               f"(anchor {cp.get('anchor')})" if cp else "checkpoint: none (not proven by a signature)")
    out += witness_lines(case.get("witnesses"))
    return out


def witness_lines(w: dict[str, Any] | None, lang: str = "en") -> list[str]:
    """The case's witnesses (audit/witness.case_witnesses) as lines: each host keeping the run's checkpoint and
    whether the log matches it, hosts not read, hosts of the run that keep no record of it."""
    zh = lang == "zh"
    if w is None:
        return ["见证：未查询（加 --witness INVENTORY）" if zh else "witnesses: not looked up (add --witness INVENTORY)"]
    out: list[str] = []
    for k in w.get("hosts") or []:
        if zh:
            state = "与日志一致" if k.get("matches") else f"与日志不符：{k.get('problem')}"
            out.append(f"见证：主机 {k.get('host')} 保存了本次运行的检查点（序号 {k.get('seq')}，链头 {k.get('head')}，"
                       f"签名人 {k.get('signer')}，时间 {k.get('time')}）——{state}")
        else:
            state = "matches the log" if k.get("matches") else f"DOES NOT MATCH the log: {k.get('problem')}"
            out.append(f"witness: host {k.get('host')} keeps this run's checkpoint (seq {k.get('seq')}, head "
                       f"{k.get('head')}, signer {k.get('signer')}, time {k.get('time')}) — {state}")
    for u in w.get("unreadable") or []:
        out.append(f"见证：主机 {u.get('host')} 无法读取：{u.get('error')}" if zh else
                   f"witness: host {u.get('host')} could not be read: {u.get('error')}")
    for name in w.get("not_kept") or []:
        out.append(f"见证：主机 {name} 没有保存本次运行的检查点" if zh else
                   f"witness: host {name} keeps no record of this run's checkpoint")
    out += account_lines(w, lang)
    from ...audit.witness import opening_text

    out += [("主机记录：" if zh else "host record: ") + opening_text(o, lang) for o in w.get("openings") or []]
    if not out:
        out.append("见证：没有主机保存本次运行的检查点" if zh else "witnesses: no host keeps this run's checkpoint")
    return out


def account_lines(w: dict[str, Any], lang: str = "en") -> list[str]:
    """Each host's own record of the run against the log (audit/witness.account_texts)."""
    from ...audit.witness import account_texts

    return [("主机记录：" if lang == "zh" else "host record: ") + line
            for a in w.get("accounts") or [] for line in account_texts(a, lang)]


def case_lines_zh(case: dict[str, Any]) -> list[str]:
    """The case file in Chinese: every word, status, phase and cause said in Chinese; values (ids, keys, digests,
    versions, paths, times) as recorded."""
    from ...core.reasons import cause, translate, word

    pol = case.get("policy") or {}
    cat = case.get("catalog") or {}
    win = case.get("window") or {}
    op = case.get("operator") or {}
    of = case.get("of_run")
    out = [zh for _, zh in _head_rows(case)]
    for a in case.get("approvals") or []:
        out.append(f"批准人：{a.get('approver')}{_name_word(case, a, 'zh')}，密钥 {a.get('key')}；创建于 "
                   f"{a.get('created') or '未知'}"
                   f"{_word(case, a, 'zh')}，有效期至 {a.get('expires')}；批准摘要 {a.get('digest')}")
        out += _approval_file_lines(case, a, "zh")
    if not case.get("approvals") and not of:
        out.append("批准人：没有记录")
    out += [f"策略：{pol.get('source')}，sha256 {pol.get('sha256')}，身份 {pol.get('identity')}"
            if pol.get("sha256") else "策略：没有记录（在记录策略之前的回滚或续跑）",
            f"目录：序号 {cat.get('serial')}，签名人 {cat.get('signer')}（{cat.get('fingerprint')}）{_WORD_ZH_MARK}"
            if cat.get("serial") is not None or not of else f"目录：没有自己的目录（沿用运行 {of.get('run')} 的计划）",
            "维护窗口：" + (("窗口内" if win.get("inside") else "窗口外") + f"——{translate(str(win.get('reason')), 'zh')}"
                         + _WORD_ZH_MARK if win else "没有记录"),
            f"操作员：{op.get('principal')}（{op.get('user')}@{op.get('host')}{_WORD_ZH_MARK}，密钥 {op.get('key')}）",
            f"开始 {case.get('started')}，"
            + (f"结束 {case.get('finished')}，用时 {case.get('duration_seconds')} 秒；" if case.get("finished") else "尚未结束；")
            + f"停机 {_down(case, 'zh')}（{_SOURCE_ZH.get(str(case.get('downtime_source')), '来自日志')}）"]
    raised = case.get("raised_lines") or []
    for r in raised[:3]:
        out.append(f"第 {r.get('line')} 行：时间 {r.get('time')} 被抬高到写入时时钟 {r.get('clock')} 之上（日志的时间保持先后顺序；"
                   "本记录的时间取写入时的时钟）")
    if len(raised) > 3:
        out.append(f"……本次运行另有 {len(raised) - 3} 行的时间被抬高（--json：raised_lines）")
    for h in case.get("hosts") or []:
        phases = "，".join(f"{word('phase', p.get('phase'), 'zh')} {word('status', p.get('outcome'), 'zh')} "
                          f"{p.get('seconds')} 秒" if p.get("outcome") is not None else
                          f"{word('phase', p.get('phase'), 'zh')} 未结束" for p in h.get("phases") or [])
        out.append(f"主机 {h.get('host')}：{h.get('from')} → {h.get('to')}："
                   f"{word('status', h.get('outcome'), 'zh') if h.get('outcome') else '尚未结束'}"
                   f"{_WORD_ZH_MARK if _no_record(case, h) else ''}，"
                   f"之后的版本 {h.get('version_after') or '未知'}，停机 {_down(h, 'zh')}"
                   f"（{_SOURCE_ZH.get(str(h.get('downtime_source')), '来自日志')}{_up_again(h, 'zh')}）；各阶段：{phases}")
        if h.get("rollback_cause"):
            out.append(f"  回滚原因：{cause(str(h['rollback_cause']), 'zh', technical=False)}{_WORD_ZH_MARK}")
    outcome = case.get("outcome")
    if outcome:
        hosts = "，".join(f"{k}：{word('status', v, 'zh')}" for k, v in (outcome.get("hosts") or {}).items())
        out.append(f"结果：退出码 {outcome.get('exit_code')}（{hosts}）")
    else:
        out.append("结果：尚未结束")
    for f in case.get("followups") or []:
        hosts = "，".join(f"{k}：{word('status', v, 'zh')}" for k, v in (f.get("hosts") or {}).items())
        out.append(f"后续：本次运行的{'回滚' if f.get('kind') == 'rollback' else '续跑'} {f.get('run')}，开始于 "
                   f"{f.get('started')}：" + (f"退出码 {f.get('exit_code')}（{hosts}）" if f.get("finished") else "尚未结束")
                   + (_WORD_ZH_MARK if f.get("witnessed") is False else ""))
    cp = case.get("checkpoint")
    out.append(f"检查点：第 {cp.get('line')} 行，签署序号 {cp.get('seq')}，链头 {cp.get('head')}，签名人 "
               f"{cp.get('signer')}（锚点 {cp.get('anchor')}）" if cp else "检查点：没有（没有签名证明）")
    out += witness_lines(case.get("witnesses"), "zh")
    return out
