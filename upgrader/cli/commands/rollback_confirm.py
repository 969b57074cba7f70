"""The question ``upgrader rollback`` asks before it stops a service: what will happen, then yes or no
(default no). ``--yes`` answers yes. Without a terminal to ask on (a script, a scheduler, ``--json``) one host is
rolled back as requested, but more than one only with ``--yes`` (refused, exit 2, nothing touched). The words
follow the locale (``upgrader.core.language``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ...core.errors import InputError

__all__ = ["CANCELLED_EXIT", "confirm_rollback"]

CANCELLED_EXIT = 130  # the operator said no: nothing changed


def confirm_rollback(args: argparse.Namespace, run_id: str, hosts: list[dict[str, Any]], c: Any = None) -> bool:
    """True to go on: --yes, one host and no terminal, or the operator's yes. More than one host without a terminal
    and without --yes: InputError (exit 2). ``c``: the console to ask on (default: stdout's)."""
    if getattr(args, "yes", False):
        return True
    batch = getattr(args, "batch", None)
    if getattr(args, "json", False) or not sys.stdin.isatty():
        if len(hosts) > 1:
            how = f" in batches of {batch}" if batch else " at once (give --batch N for rolling batches)"
            raise InputError(f"rolling back run {run_id} stops {len(hosts)} hosts{how}; nothing was touched",
                             hint="confirm with --yes (scripts), or run it on a terminal to be asked")
        return True
    from ..command_messages import texts
    from ...core.language import resolve_lang
    from ._common import console

    t = texts(resolve_lang(getattr(args, "lang", None)))
    c = c or console()
    names = ", ".join(h["name"] for h in hosts)
    products = ", ".join(sorted({str(h.get("product")) for h in hosts}))
    versions = ", ".join(sorted({str(h.get("current")) for h in hosts}))
    c.print(t("rollback_what", run=run_id, hosts=names, product=products, version=versions), soft_wrap=True)
    if len(hosts) > 1:
        c.print(t("rollback_many_batches" if batch else "rollback_many_at_once", n=len(hosts), batch=batch or 0),
                soft_wrap=True)
    while True:
        try:
            reply = c.input(t.plain("rollback_ask")).strip().lower()
        except (EOFError, KeyboardInterrupt):
            reply = "n"
        if reply in ("y", "yes", "是", "是的", "好"):
            return True
        if reply in ("", "n", "no", "否", "不", "不是"):
            c.print(t("rollback_no"))
            return False
        c.print(t("rollback_invalid"))
