"""``upgrader inspect``: the health inspection of one install or of every host of an inventory.

The work is ``upgrader.api.inspect`` (and ``write_inspection`` for ``-o``); this module parses the arguments and
renders. It collects through ``upgrader.customer.inspection`` (the agent's read-only ``inspect`` op, locally or over
SSH), optionally flags the catalog's advisories, and shows a table, JSON, or writes a JSON or
self-contained HTML report: a 巡检 form with the customer, the system, the inspector (``--customer``,
``--system``, ``--inspector``, ``--period``, ``--remarks``; the inspector defaults to the login name at
this machine, the period to the time the collection took, in the policy's time zone), a conclusion and
a signature block. The table and the report speak ``--lang``, else the locale. Changes nothing on any host. Exit 0 when every host was inspected
(warnings are findings of the report, not failures), 5 when a host could not be inspected (the
others are still reported), 2 bad input, 4 an untrusted catalog.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import console, context_of, parse_variables, print_json

__all__ = ["cmd_inspect"]


def cmd_inspect(args: argparse.Namespace) -> int:
    from ...api import inspect, inspection_report_kind, write_inspection, write_inspection_bundle
    from ...core.errors import InputError
    from ...core.language import resolve_lang

    if args.output is not None:
        inspection_report_kind(args.output)  # a bad name is refused before any host is asked
    if getattr(args, "review", None):
        return _review(args)
    if args.bundle is not None and not args.bundle.endswith(".tar.gz"):
        raise InputError(f"--bundle: the file's name must end in .tar.gz, got {args.bundle!r}",
                         hint="e.g. --bundle inspection-app-01.tar.gz")
    done = inspect(context_of(args), install_dir=Path(args.install_dir) if args.install_dir else None,
                   inventory=Path(args.inventory) if args.inventory else None, hosts=args.hosts,
                   playbook=args.playbook, variables=parse_variables(args.var) if args.var else None,
                   catalog=Path(args.catalog) if args.catalog else None,
                   customer=getattr(args, "customer", None), system=getattr(args, "system", None),
                   inspector=getattr(args, "inspector", None), period=getattr(args, "period", None),
                   remarks=getattr(args, "remarks", None),
                   compare=Path(args.compare) if getattr(args, "compare", None) else None)
    data: dict[str, Any] = done.data
    if args.output is not None:
        write_inspection(done, Path(args.output), lang=resolve_lang(args.lang))
    if args.bundle is not None:
        write_inspection_bundle(done, Path(args.bundle), lang=resolve_lang(args.lang))
    if args.json:
        print_json(data)
    else:
        _print(data, args.output, args.lang)
        if args.bundle is not None:
            from ..command_messages import texts

            console().print(texts(resolve_lang(args.lang))("inspect_bundle_written", file=args.bundle), soft_wrap=True)
    return done.exit_code


def _review(args: argparse.Namespace) -> int:
    """``--review BUNDLE``: the engineer's side; the advice report for the customer goes to -o (default: beside the
    bundle, NAME-advice.html)."""
    from ...api import review_inspection, write_inspection
    from ...core.errors import InputError
    from ...core.language import resolve_lang

    if args.install_dir or args.inventory or args.bundle or args.compare or args.hosts or args.playbook or args.var \
            or args.catalog:
        raise InputError("--review BUNDLE reads a customer's inspection: it does not go with --install-dir, "
                         "--inventory, --hosts, --playbook, --var, --catalog, --bundle or --compare", hint="upgrader inspect --review inspection.tar.gz "
                                                                    "-o advice.html --lang zh")
    bundle = Path(args.review)
    output = Path(args.output) if args.output else bundle.with_name(
        bundle.name.removesuffix(".tar.gz").removesuffix(".tgz") + "-advice.html")
    done = review_inspection(context_of(args), bundle)
    write_inspection(done, output, lang=resolve_lang(args.lang))
    if args.json:
        print_json(done.data)
    else:
        _print(done.data, str(output), args.lang)
    return 0


def _gib(n: Any) -> str:
    return f"{n / (1 << 30):.1f} GiB" if isinstance(n, (int, float)) else "?"


def _print(data: dict[str, Any], output: str | None, lang: str | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..command_messages import texts
    from ...core.language import resolve_lang
    from ...core.reasons import translate
    from ...core.shown_time import shown_time

    t = texts(resolve_lang(lang))
    zone = (data["inspection"].get("form") or {}).get("timezone") or "Asia/Shanghai"
    c = console()
    table = Table(title=t.plain("inspect_title", time=shown_time(data["inspection"]["time"], zone, t.lang)),
                  title_justify="left")
    for col in ("col_host", "col_os", "col_version", "col_process", "col_ports", "col_disk", "col_memory", "col_load",
                "col_open_files", "col_log_errors", "col_warnings"):
        table.add_column(t.plain(col))
    for h in data["hosts"]:
        if h["error"]:
            table.add_row(h["host"], Text(t.plain("cannot_inspect", error=translate(h["error"], t.lang)),
                                          style="bold red"), *[""] * 9)
            continue
        f, m = h["facts"], h["metrics"]
        proc = f.get("process") or {}
        ports = " ".join(f"{p['port']}{'✔' if p['open'] else '✘'}" for p in f.get("ports") or []) or "-"
        disk = f.get("disk") or {}
        table.add_row(
            f.get("hostname") or h["host"] if h["host"] == "local" else h["host"],
            f"{(f.get('os') or {}).get('pretty') or (f.get('os') or {}).get('name')}\n{f.get('kernel')}",
            str(f.get("version") or "?"),
            Text(t.plain("running_pid", pid=proc.get("pid")), style="green") if proc.get("running")
            else Text(t.plain("not_running"), style="yellow"),
            ports, t.plain("disk_use", pct=disk.get("used_pct"), total=_gib(disk.get("total"))),
            f"{m.get('memory_available_pct')}%", str(m.get("load_per_cpu")), str(m.get("open_files")),
            str(m.get("log_errors")),
            Text(str(len(h["warnings"])), style="bold yellow") if h["warnings"] else Text("0", style="green"))
    c.print(table)
    from ...core.config_vars import describe_read

    for h in data["hosts"]:
        for line in describe_read(h.get("vars_read") or {}):  # the ports the install's configuration names
            c.print(Text.assemble((f"{h['host']}: ", "bold"), line))
    for h in data["hosts"]:
        for w in h["warnings"]:
            message = (w.get("message_zh") or translate(w["message"], t.lang)) if t.lang == "zh" else w["message"]
            c.print(t("finding", host=h["host"], check=w["check"], message=message), soft_wrap=True)
            advice = w.get("advice")
            if advice:
                a = advice.get(t.lang) or advice["en"]
                c.print(t("advice", host=h["host"], setting=a["setting"], file=a["file"], reason=a["reason"]),
                        soft_wrap=True)
    for h in data["hosts"]:
        if h.get("error"):
            continue
        if not h.get("previous"):
            c.print(t("no_previous", host=h["host"]), soft_wrap=True)
        for ch in h.get("changes") or []:
            c.print(t("changed", host=h["host"], time=shown_time(h["previous"]["time"], zone, t.lang),
                      message=ch["message_zh"] if t.lang == "zh" else ch["message"]), soft_wrap=True)
    s = data["summary"]
    c.print(t("inspect_summary", inspected=s["inspected"], hosts=s["hosts"], warnings=s["warnings"])
            + (t("inspect_unreachable", hosts=", ".join(s["unreachable"])) if s["unreachable"] else ""), soft_wrap=True)
    if output:
        c.print(t("report_written", file=output), soft_wrap=True)
