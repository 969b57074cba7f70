"""``upgrader access grant|list|revoke``: the customer lets an engineer's key in, for a few hours.

On this host (the account's ``~/.ssh/authorized_keys``, through the agent run here) or on every
host of an inventory over SSH (through each host's agent). Every input is checked before any host
is touched; a fleet keeps every host's outcome. Each grant, extension and revocation is an audit
event. The work is ``upgrader.api``'s (``grant_access``, ``list_access``, ``revoke_access``); this module
parses the arguments and prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from ...core.errors import UpgraderError
from ._common import console, context_of, load_policy_or_fail, policy_path, print_json

__all__ = ["cmd_grant", "cmd_list", "cmd_revoke", "grant", "revoke"]


def _words(args: argparse.Namespace) -> tuple[Any, Callable[[Any], str]]:
    """The catalog in the operator's language (--lang, else the locale) and how times are shown (the policy's
    time zone, named)."""
    from ..command_messages import texts
    from ...core.language import resolve_lang
    from ...core.shown_time import policy_zone, shown_time

    t = texts(resolve_lang(getattr(args, "lang", None)))
    try:
        zone = policy_zone(load_policy_or_fail(policy_path(args)))
    except UpgraderError:
        zone = policy_zone(None)
    return t, lambda at: shown_time(at, zone, t.lang)


def _follow_up(args: argparse.Namespace, *argv: str) -> str:
    import shlex

    return " ".join(shlex.quote(w) for w in ("upgrader", "--home", str(args.home.absolute()), *argv))


def _where(r: dict[str, Any]) -> str:
    return "" if r["host"] == "local" else f"{r['host']}: "


def _answered(t: Any, c: Any, results: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each host's result that is not a failure, with the ``host: `` it is printed under; a failure is printed
    here, in its place."""
    for r in results:
        if r["outcome"] == "failed":
            c.print(t("grant_failed", host=_where(r), error=r["error"]), soft_wrap=True)
            continue
        yield _where(r), r


def _inventory(args: argparse.Namespace) -> Path | None:
    return Path(args.inventory) if args.inventory else None


# ------------------------------------------------------------------ grant


def cmd_grant(args: argparse.Namespace) -> int:
    results, hours = grant(args)
    if args.json:
        print_json({"hosts": results})
    else:
        _print_grants(args, results, hours)
    return max([int(r.get("exit_code", 0)) for r in results] or [0])


def grant(args: argparse.Namespace) -> tuple[list[dict[str, Any]], float]:
    """``upgrader.api.grant_access`` with the command's arguments: each host's result and the hours granted."""
    from ...api import grant_access

    done = grant_access(context_of(args), key=Path(args.key), hours=args.hours, from_patterns=args.from_patterns,
                        reason=args.reason, user=args.user, inventory=_inventory(args), hosts=args.hosts)
    return done.hosts, float(done.hours or 0)


def _print_grants(args: argparse.Namespace, results: list[dict[str, Any]], hours: float) -> None:
    t, when = _words(args)
    c = console()
    for where, r in _answered(t, c, results):
        g = r["grant"]
        c.print(t(r["outcome"], host=where, id=g["id"], user=r["user"], expires=when(g["expires"]),
                  hours=f"{hours:g}"), soft_wrap=True)
        c.print(t("grant_key", fp=g["fingerprint"], kind=g["key_type"]))
        c.print(t("grant_from", where=g["from"] or t("any_address")))
        c.print(t("grant_reason", reason=g["reason"] or "-"))
        c.print(t("grant_file_created" if r["created_file"] else "grant_file", file=r["file"]))
        c.print(t("grant_allows"))
    ids = sorted({r["grant"]["id"] for r in results if r["outcome"] != "failed"})
    fleet = ["--inventory", str(args.inventory)] if any(r["host"] != "local" for r in results) else []
    if len(ids) == 1:
        c.print(t("grant_ends_one", command=_follow_up(args, "access", "revoke", ids[0], *fleet)), soft_wrap=True)
    elif ids:
        c.print(t("grant_ends_many", command=_follow_up(args, "access", "revoke", "ID", *fleet), ids=", ".join(ids)),
                soft_wrap=True)


# ------------------------------------------------------------------ list


def cmd_list(args: argparse.Namespace) -> int:
    from ...api import list_access

    found = list_access(context_of(args), user=args.user, inventory=_inventory(args), hosts=args.hosts)
    results: list[dict[str, Any]] = found.hosts
    if args.json:
        print_json({"hosts": results})
        return found.exit_code
    t, when = _words(args)
    c = console()
    for where, r in _answered(t, c, results):
        _added_lines(t, c, r)
        if not r["grants"]:
            c.print(t("list_none" if r["exists"] else "list_none_no_file", host=where, file=r["file"]), soft_wrap=True)
            continue
        c.print(t("list_head", host=where, n=len(r["grants"]), user=r["user"], file=r["file"]), soft_wrap=True)
        for g in r["grants"]:
            c.print(t("list_line", id=g["id"], fp=g["fingerprint"], kind=g["key_type"],
                      expires=when(g["expires"]) if g["expires"] else t("never"), left=_left(t, g)), soft_wrap=True)
            c.print(t("list_by", by=g["granted_by"] or "-", where=g["from"] or t("any_address"),
                      reason=g["reason"] or "-"), soft_wrap=True)
    return found.exit_code


def _left(t: Any, g: dict[str, Any]) -> Any:
    from ..guide_messages import Markup

    if g["expires"] is None:
        return t("left_permanent")
    if g["expired"]:
        return t("left_expired")
    days, rest = divmod(int(g["seconds_left"]), 86400)
    return t("left", days=Markup(t("left_days", n=days)) if days else "", hours=rest // 3600,
             minutes=f"{rest % 3600 // 60:02d}")


# ------------------------------------------------------------------ revoke


def cmd_revoke(args: argparse.Namespace) -> int:
    results, code, _ = revoke(args)
    if args.json:
        print_json({"hosts": results})
        return code
    t, _when = _words(args)
    c = console()
    for where, r in _answered(t, c, results):
        if r.get("record_restored"):
            c.print(t("record_restored", host=where, id=args.grant_id), soft_wrap=True)
        if not r["revoked"] and not r.get("record_restored"):
            key = "revoke_nothing_expired" if args.expired else "revoke_nothing_all" if args.all else "revoke_nothing_id"
            c.print(t(key, host=where, id=args.grant_id, file=r["file"]), soft_wrap=True)
        for g in r["revoked"]:
            c.print(t("revoked", host=where, id=g["id"], fp=g["fingerprint"], by=g["granted_by"] or "-",
                      state=t("state_expired" if g["expired"] else "state_valid"), file=r["file"]), soft_wrap=True)
        _added_lines(t, c, r)
    return code


def _added_lines(t: Any, c: Any, r: dict[str, Any]) -> None:
    """The lines that let a key in to this account, added while a grant into it was open (an engineer's second key
    outlives the grant): one sentence each, what to do included."""
    for a in r.get("added_during_grants") or []:
        c.print(t("added_line", file=a["file"], line=a["line"], fp=a["fingerprint"], id=a["grant"],
                  engineer=a["engineer"]), soft_wrap=True)


def revoke(args: argparse.Namespace) -> tuple[list[dict[str, Any]], int, list[str]]:
    """``upgrader.api.revoke_access`` with the command's arguments: each host's result, the exit code and how
    the grants were chosen."""
    from ...api import revoke_access

    done = revoke_access(context_of(args), grant_id=args.grant_id, all=args.all, expired=args.expired,
                         user=args.user, inventory=_inventory(args), hosts=args.hosts)
    return done.hosts, done.exit_code, [done.chosen] if done.chosen else []
