"""``upgrader available``: per host, the newest free upgrade, what the policy refuses and why, and
the catalog's advisories that concern the installed version.

The work is ``upgrader.api.available``: it reads each host's installed version over its transport
(read-only, as ``plan`` does), then asks ``upgrader.customer.available`` (pure). This module parses the
arguments and prints. Changes nothing on any host and writes no plan.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import console, context_of, print_json

__all__ = ["cmd_available"]


def cmd_available(args: argparse.Namespace) -> int:
    from ...api import available

    found = available(context_of(args), inventory=Path(args.inventory), catalog=Path(args.catalog),
                      hosts=args.hosts)
    data = found.to_dict()
    if args.json:
        print_json(data)
    else:
        _print(data, getattr(args, "lang", None))
    return found.exit_code


def _print(data: dict[str, Any], lang: str | None = None) -> None:
    """A summary table (one row a host), then one line per refused version and per flagged advisory, in the
    operator's language (--lang, else the locale)."""
    from rich.table import Table
    from rich.text import Text

    from ..command_messages import texts
    from ...core.language import resolve_lang
    from ...core.reasons import translate

    t = texts(resolve_lang(lang))

    def words(text: str) -> str:
        return translate(text, t.lang)

    def kind(k: str) -> str:
        return {"full": "完整包", "patch": "补丁"}.get(k, k) if t.lang == "zh" else k

    c = console()
    cat = data["catalog"]
    table = Table(title=t.plain("available_title", serial=cat["serial"], signer=cat.get("signer")),
                  title_justify="left")
    for col in ("col_host", "col_current", "col_newest", "col_also", "col_refused", "col_advisories"):
        table.add_column(t.plain(col))
    for h in data["hosts"]:
        if h["error"]:
            table.add_row(h["host"], "?", Text(t.plain("cannot_read_host", error=words(h["error"])), style="bold red"),
                          "", "", "")
            continue
        newest = h["newest_free"]
        best = Text(f"{newest['version']} ({kind(newest['kind'])})", style="bold green") if newest else \
            Text(words(h["note"]), style="yellow")
        others = ", ".join(a["version"] for a in h["allowed"] if not newest or a["version"] != newest["version"])
        flagged = Text(", ".join(a["id"] for a in h["advisories"]), style="bold red") if h["advisories"] else \
            Text(t.plain("no_advisories"), style="green")
        table.add_row(h["host"], str(h["current"]), best, others or "-",
                      ", ".join(r["version"] for r in h["refused"]) or "-", flagged)
    c.print(table)
    for h in data["hosts"]:
        for r in h["refused"]:
            c.print(t("refused_line", host=h["host"], version=r["version"], kind=kind(r["kind"]),
                      reasons="; ".join(words(x) for x in r["reasons"])), soft_wrap=True)
        for a in h["advisories"]:
            status = t.plain(f"status_{a['status']}") if f"status_{a['status']}" in _STATUS else a["status"]
            c.print(t("advisory_line", host=h["host"], id=a["id"], severity=a["severity"], title=a["title"],
                      status=status, why=words(a["why"]), fix=words(a["fix_note"])), soft_wrap=True)
    flagged_hosts = [h["host"] for h in data["hosts"] if h["advisories"]]
    if flagged_hosts:
        c.print(t("advisory_hosts", n=len(flagged_hosts), hosts=", ".join(flagged_hosts)), soft_wrap=True)


_STATUS = ("status_affected", "status_cannot tell")
