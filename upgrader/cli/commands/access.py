"""``upgrader access grant|list|revoke``: the customer lets an engineer's key in, for a few hours.

On this host (the account's ``~/.ssh/authorized_keys``, through the agent run here) or on every
host of an inventory over SSH (through each host's agent). Every input is checked before any host
is touched; a fleet keeps every host's outcome. Each grant, extension and revocation is an audit
event. The editing itself is ``upgrader.customer.access``'s; this module only drives it and prints.
"""

from __future__ import annotations

import argparse
import re
import secrets
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from ...core.errors import InputError, UpgraderError
from ...core.exit_codes import ExitCode
from ._common import console, load_policy_or_fail, policy_path, print_json

__all__ = ["cmd_grant", "cmd_list", "cmd_revoke", "grant", "revoke"]

_FORKS = 8


@dataclass(frozen=True)
class _Target:
    name: str  # "local", or the inventory's host name
    audit_host: str
    connect: Callable[[], Any]
    local: bool


def _targets(args: argparse.Namespace) -> list[_Target]:
    if args.inventory:
        from ...fleet.inventory import load_inventory
        from ...fleet.transport import connect

        inventory = load_inventory(args.inventory)
        return [_Target(h.name, h.name, partial(connect, h), False) for h in inventory.select(args.hosts)]
    if args.hosts:
        raise InputError("--hosts needs --inventory", hint="give --inventory INV, or leave out --hosts for this host")
    from ...fleet.transport.local import LocalTransport

    return [_Target("local", socket.gethostname(), lambda: LocalTransport("local"), True)]


def _on_each(targets: list[_Target], work: Callable[[Any, _Target], dict[str, Any]]) -> list[dict[str, Any]]:
    """``work(agent, target)`` on every target; a fleet keeps each host's failure, this host raises its own."""
    from ...fleet.transport import AgentClient

    def one(target: _Target) -> dict[str, Any]:
        transport = target.connect()
        agent = AgentClient(transport)
        try:
            return {"host": target.name, **work(agent, target)}
        except UpgraderError as e:
            if target.local:
                raise
            return {"host": target.name, "outcome": "failed", "error": str(e), "exit_code": int(e.exit_code)}
        finally:
            agent.close()
            transport.close()

    if len(targets) == 1:
        return [one(targets[0])]
    with ThreadPoolExecutor(max_workers=min(_FORKS, len(targets))) as pool:
        return list(pool.map(one, targets))


def _exit(results: list[dict[str, Any]]) -> int:
    return max([int(r.get("exit_code", 0)) for r in results] or [0])


def _source(target: _Target, path: str) -> str:
    return path if target.local else f"{target.name}:{path}"


def _recorder(args: argparse.Namespace, policy: Any, clock: Any) -> Any:
    """Made before anything changes: if the operator's identity cannot be read, nothing was touched."""
    from ...core.recorder import Recorder, operator_identity

    return Recorder(args.home, operator_identity(args.home, policy, need_key=False), clock)


def _user(args: argparse.Namespace) -> str | None:
    from ...customer.access import check_user

    return check_user(args.user) if args.user is not None else None


# ------------------------------------------------------------------ grant


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


def cmd_grant(args: argparse.Namespace) -> int:
    results, hours = grant(args)
    if args.json:
        print_json({"hosts": results})
    else:
        _print_grants(args, results, hours)
    return _exit(results)


def grant(args: argparse.Namespace) -> tuple[list[dict[str, Any]], float]:
    """Make the grant on every target and record it; return each host's result and the hours granted
    (``upgrader guide`` calls this too and words the result itself)."""
    from ...customer.access import (add_grant, check_from, check_hours, check_reason, edit_on_host, expiry_time, format_time,
                          load_public_key_file)
    from ...core.clock import clock_of

    policy = load_policy_or_fail(policy_path(args))
    key = load_public_key_file(args.key)
    hours = check_hours(args.hours, policy.access_default_hours, policy.access_max_hours, policy.source)
    from_ = check_from(args.from_patterns) if args.from_patterns is not None else None
    reason = check_reason(args.reason) if args.reason is not None else None
    user = _user(args)
    targets = _targets(args)
    clock = clock_of(args)
    now = clock.now()
    expires = expiry_time(now, hours)
    recorder = _recorder(args, policy, clock)
    by = f"{recorder.operator.user}@{recorder.operator.host}"
    grant_id = secrets.token_hex(6)  # one id on every host of a fleet: one `revoke ID --inventory` ends it everywhere

    def new_id(ids: list[str]) -> Callable[[], str]:
        return lambda: ids.pop(0) if ids else secrets.token_hex(6)

    def work(agent: Any, target: _Target) -> dict[str, Any]:
        def edit(current: Any) -> tuple[bytes, Any]:
            change = add_grant(current.data, key, expires=expires, from_=from_, by=by, reason=reason,
                               new_id=new_id([grant_id]), source=_source(target, current.path))
            return change.data, change

        found, change = edit_on_host(agent, user, edit)
        return {"outcome": "extended" if change.extended else "granted", "user": found.user, "file": found.path,
                "created_file": not found.exists, "grant": change.grant.describe(now),
                "previous_expires": format_time(change.previous_expires) if change.previous_expires else None,
                "_audit_host": target.audit_host}

    results = _on_each(targets, work)
    for r in results:
        if r["outcome"] in ("granted", "extended"):
            g = r["grant"]
            recorder.event(f"access_{r['outcome']}", host=r.pop("_audit_host"), outcome=r["outcome"], grant=g["id"],
                           fingerprint=g["fingerprint"], key_type=g["key_type"], user=r["user"], file=r["file"],
                           hours=hours, expires=g["expires"], previous_expires=r["previous_expires"],
                           reason=g["reason"], granted_by=g["granted_by"], **{"from": g["from"]})
    return results, hours


def _print_grants(args: argparse.Namespace, results: list[dict[str, Any]], hours: float) -> None:
    t, when = _words(args)
    c = console()
    for r in results:
        where = "" if r["host"] == "local" else f"{r['host']}: "
        if r["outcome"] == "failed":
            c.print(t("grant_failed", host=where, error=r["error"]), soft_wrap=True)
            continue
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
    from ...customer.access import list_grants, read_on_host
    from ...core.clock import clock_of

    user = _user(args)
    targets = _targets(args)
    now = clock_of(args).now()

    def work(agent: Any, target: _Target) -> dict[str, Any]:
        found = read_on_host(agent, user)
        return {"outcome": "ok", "user": found.user, "file": found.path, "exists": found.exists,
                "grants": [g.describe(now) for g in list_grants(found.data)]}

    results = _on_each(targets, work)
    if args.json:
        print_json({"hosts": results})
        return _exit(results)
    t, when = _words(args)
    c = console()
    for r in results:
        where = "" if r["host"] == "local" else f"{r['host']}: "
        if r["outcome"] == "failed":
            c.print(t("grant_failed", host=where, error=r["error"]), soft_wrap=True)
            continue
        if not r["grants"]:
            c.print(t("list_none" if r["exists"] else "list_none_no_file", host=where, file=r["file"]), soft_wrap=True)
            continue
        c.print(t("list_head", host=where, n=len(r["grants"]), user=r["user"], file=r["file"]), soft_wrap=True)
        for g in r["grants"]:
            c.print(t("list_line", id=g["id"], fp=g["fingerprint"], kind=g["key_type"],
                      expires=when(g["expires"]) if g["expires"] else t("never"), left=_left(t, g)), soft_wrap=True)
            c.print(t("list_by", by=g["granted_by"] or "-", where=g["from"] or t("any_address"),
                      reason=g["reason"] or "-"), soft_wrap=True)
    return _exit(results)


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
    results, code, chosen = revoke(args)
    if args.json:
        print_json({"hosts": results})
        return code
    t, _ = _words(args)
    c = console()
    for r in results:
        where = "" if r["host"] == "local" else f"{r['host']}: "
        if r["outcome"] == "failed":
            c.print(t("grant_failed", host=where, error=r["error"]), soft_wrap=True)
        elif not r["revoked"]:
            key = "revoke_nothing_expired" if args.expired else "revoke_nothing_all" if args.all else "revoke_nothing_id"
            c.print(t(key, host=where, id=args.grant_id, file=r["file"]), soft_wrap=True)
        for g in r.get("revoked", ()):
            c.print(t("revoked", host=where, id=g["id"], fp=g["fingerprint"], by=g["granted_by"] or "-",
                      state=t("state_expired" if g["expired"] else "state_valid"), file=r["file"]), soft_wrap=True)
    return code


def revoke(args: argparse.Namespace) -> tuple[list[dict[str, Any]], int, list[str]]:
    """Remove the chosen grants on every target and record it; return each host's result, the exit code and
    how the grants were chosen (``upgrader guide`` calls this too)."""
    from ...customer.access import edit_on_host, remove_grants
    from ...core.clock import clock_of

    chosen = [what for what, given in (("ID", args.grant_id), ("--all", args.all), ("--expired", args.expired))
              if given]
    if len(chosen) != 1:
        raise InputError("give exactly one of ID, --all or --expired" + (f" (got {' and '.join(chosen)})"
                                                                          if chosen else ""),
                         hint="see the ids with: upgrader access list")
    if args.grant_id is not None and not re.fullmatch(r"[A-Za-z0-9]{1,64}", args.grant_id):
        raise InputError(f"{args.grant_id!r} is not a grant id", hint="see the ids with: upgrader access list")
    user = _user(args)
    targets = _targets(args)
    policy = load_policy_or_fail(policy_path(args))
    clock = clock_of(args)
    now = clock.now()
    recorder = _recorder(args, policy, clock)

    def select(g: Any) -> bool:
        return bool(args.all or (args.expired and g.expired(now)) or g.id == args.grant_id)

    def work(agent: Any, target: _Target) -> dict[str, Any]:
        def edit(current: Any) -> tuple[bytes, Any]:
            return remove_grants(current.data, select)

        found, removed = edit_on_host(agent, user, edit)
        if args.grant_id and not removed and target.local:
            from ...customer.access import list_grants

            ids = [g.id for g in list_grants(found.data)]
            raise InputError(f"no grant {args.grant_id} here; " + (f"its grants: {', '.join(ids)}" if ids
                                                                     else "it holds no grant"), path=found.path)
        return {"outcome": "revoked" if removed else "unchanged", "user": found.user, "file": found.path,
                "revoked": [g.describe(now) for g in removed], "_audit_host": target.audit_host}

    results = _on_each(targets, work)
    for r in results:
        audit_host = r.pop("_audit_host", None)
        for g in r.get("revoked", ()):
            recorder.event("access_revoked", host=audit_host, outcome="revoked", grant=g["id"],
                           fingerprint=g["fingerprint"], key_type=g["key_type"], user=r["user"], file=r["file"],
                           expires=g["expires"], expired=g["expired"], reason=g["reason"],
                           granted_by=g["granted_by"], selected_by=chosen[0], **{"from": g["from"]})
    code = _exit(results)
    if args.grant_id and code == 0 and not any(r.get("revoked") for r in results):
        code = ExitCode.BAD_INPUT
        for r in results:
            r.update(outcome="failed", error=f"no grant {args.grant_id} in {r['file']}", exit_code=int(code))
    return results, code, chosen
