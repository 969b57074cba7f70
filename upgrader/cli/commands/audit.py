"""``upgrader audit verify|show|export``: the auditor's commands."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from ...core.errors import InputError
from ...core.exit_codes import ExitCode
from ._common import console, context_of, print_json

__all__ = ["cmd_verify", "cmd_show", "cmd_export", "log_path"]


def log_path(args: argparse.Namespace) -> Path:
    from ...core.recorder import audit_path

    return Path(args.log) if getattr(args, "log", None) else audit_path(args.home)


def verification(args: argparse.Namespace, data: bytes | None = None) -> Any:
    """The verdict on the log; ``data``: its bytes as read once (the report is then made from the same bytes)."""
    from ...api import verify_audit

    signers = getattr(args, "allowed_signers", None)
    return verify_audit(context_of(args), log=log_path(args), allowed_signers=Path(signers) if signers else None,
                        anchor=getattr(args, "anchor", None), data=data)


CANNOT_CHECK = "cannot check the checkpoints: give --allowed-signers or --policy"


def describe(result: Any) -> str:
    """The verdict in words; never a bare OK. Without allowed signers: that it cannot check, and the chain's result."""
    if not result.signers_known:
        if not result.chain_intact:
            chain = (f"altered at {result.message} ({result.problem}); {result.valid_entries} entries before it form "
                     "a valid chain")
        else:
            chain = (f"{result.entries} entries form an unbroken hash chain with {result.checkpoints} checkpoint(s) "
                     "whose signatures match their own keys, which proves nothing until the keys are known to be "
                     "your operators'")
        return f"CANNOT CHECK: {CANNOT_CHECK} (no allowed signers are known); the chain on its own: {chain}"
    if not result.intact:
        return f"ALTERED: {result.message} ({result.problem}); {result.valid_entries} entries before it form a valid chain"
    text = (f"{result.entries} entries form an intact hash chain with {result.checkpoints} valid signed "
            f"checkpoint(s)")
    if result.anchor_checked:
        text += "; the log is complete up to the anchor you hold"
        if result.entries > 0:
            text += " (entries after it are chained but not anchored)" if result.uncovered else ""
    else:
        text += ("; completeness after the last checkpoint you hold elsewhere is NOT proven "
                 "(give --anchor SEQ:HEAD from a run's output to prove nothing was cut off)")
    return text


def cmd_verify(args: argparse.Namespace) -> int:
    result = verification(args)
    if args.json:
        print_json({**result.to_dict(), "verdict": describe(result)})
    else:
        from rich.text import Text

        c = console()
        word, style = {"intact": ("INTACT", "bold green"), "altered": ("ALTERED", "bold red"),
                       "cannot_check": ("CANNOT CHECK", "bold yellow")}[result.status]
        # the verdict quotes the log (a run id, a time): never parse it as markup
        c.print(Text.assemble((word, style), f" {result.path}"))
        c.print(describe(result), soft_wrap=True, markup=False)
        if result.last_checkpoint:
            cp = result.last_checkpoint
            c.print(f"last checkpoint: line {cp['line']}, seq {cp['seq']}, head {cp['head']}, signed by {cp['signer']}",
                    soft_wrap=True, markup=False)
        for w in result.warnings:
            c.print(f"[yellow]note:[/yellow] {w}", soft_wrap=True)
    return verdict_exit(result)


def verdict_exit(result: Any) -> int:
    """0 intact, 6 altered (or a finished run unsigned), 2 cannot check (no allowed signers known)."""
    return {"intact": ExitCode.OK, "altered": ExitCode.AUDIT_ALTERED,
            "cannot_check": ExitCode.BAD_INPUT}[result.status]


def _moment(text: str) -> dt.datetime | None:
    """An ISO time as an aware datetime; one without a zone is UTC, as the log records times."""
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _since(text: str | None) -> dt.datetime | None:
    # compared as moments, not as strings: "2026-11-26T10:00+08:00" is 02:00 in a log written in UTC
    if not text:
        return None
    since = _moment(text)
    if since is None:
        raise InputError(f"--since: expected a date like 2026-11-26 or 2026-11-26T10:00 (UTC unless you add a zone "
                         f"such as +08:00), got {text!r}")
    return since


def selected_events(args: argparse.Namespace, data: bytes | None = None) -> list[dict[str, Any]]:
    """The events a view shows, from ``data`` (the bytes that were verified) or from one read of the log."""
    from ...audit.log import read_events, read_log

    path = log_path(args)
    if data is None:
        data = read_log(path)
    since = _since(getattr(args, "since", None))
    out = []
    for e in read_events(path, data):
        run = str(e.get("run") or "")
        if getattr(args, "run", None) and not run.startswith(args.run):
            continue
        if getattr(args, "host", None) and e.get("host") not in (args.host, None):
            continue
        if getattr(args, "host", None) and e.get("host") is None and e.get("event") not in ("run_started",
                                                                                             "run_finished"):
            continue
        if since:
            at = _moment(str(e.get("time", "")))
            if at is None or at < since:
                continue
        out.append(e)
    return out


def cmd_show(args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.text import Text

    events = selected_events(args)
    if args.json:
        print_json(events)
        return ExitCode.OK
    c = console()
    table = Table(title=f"Audit timeline ({len(events)} events)", title_justify="left")
    for col in ("#", "time", "run", "host", "event", "phase", "outcome", "who", "details"):
        table.add_column(col, overflow="fold")
    style = {"failed": "bold red", "refused": "bold red", "rolled_back": "bold yellow", "committed": "green",
             "ok": "green", "needs_person": "bold red"}
    for e in events:
        # recorded text is untrusted: Text() cells, so that "[/bold]" in a command's output is shown, not parsed
        actor: dict[str, Any] = e["actor"] if isinstance(e.get("actor"), dict) else {}
        outcome = str(e.get("outcome") or "")
        cells = (e.get("seq"), str(e.get("time") or "")[:19].replace("T", " "), e.get("run"), e.get("host"),
                 e.get("event"), e.get("phase"))
        table.add_row(*(Text(str(v if v is not None else "")) for v in cells),
                      Text(outcome, style=style.get(outcome, "")),
                      Text(str(actor.get("principal") or actor.get("user") or "")), Text(_details(e)))
    c.print(table)
    return ExitCode.OK


def _details(e: dict[str, Any]) -> str:
    d: dict[str, Any] = e["data"] if isinstance(e.get("data"), dict) else {}
    if e.get("event") == "checkpoint":
        cp: dict[str, Any] = e["checkpoint"] if isinstance(e.get("checkpoint"), dict) else {}
        return f"signs seq {cp.get('seq')} head {str(cp.get('head'))[:16]}… ({cp.get('key')})"
    for key in ("reason", "detail", "cause", "error"):
        if d.get(key):
            return str(d[key])[:160]
    if "target" in d:
        return f"to {d['target']}" + (f", plan {str(d.get('plan'))[:12]}…" if d.get("plan") else "")
    if "approver" in d:
        return f"{d['approver']} ({d.get('key')})"
    return ""


def cmd_export(args: argparse.Namespace) -> int:
    from ...audit.report import export

    from ...audit.log import read_log

    out = Path(args.output)
    data = read_log(log_path(args))  # one read: the report shows exactly the bytes the verdict is about
    result = verification(args, data)
    events = selected_events(args, data)
    export(args.format, events, result, describe(result), out, lang=args.lang)
    if not args.json:
        state = {"intact": "intact", "altered": "ALTERED", "cannot_check": f"not checked: {CANNOT_CHECK}"}
        console().print(f"wrote {out} ({args.format}, {len(events)} events; log {state[result.status]})",
                        markup=False)
    else:
        print_json({"output": str(out), "format": args.format, "events": len(events), "intact": result.intact,
                    "status": result.status})
    # the report is written either way (it says ALTERED or CANNOT CHECK at the top); scripts learn it from the exit
    # code too
    return verdict_exit(result)
