"""``upgrader available``: per host, the newest free upgrade, what the policy refuses and why, and
the catalog's advisories that concern the installed version.

Reads each host's installed version over its transport (read-only, as ``plan`` does), then asks
``upgrader.customer.available`` (pure). Changes nothing on any host and writes no plan.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...core.errors import UpgraderError
from ...core.exit_codes import ExitCode
from ._common import console, load_policy_or_fail, policy_path, print_json

__all__ = ["cmd_available"]


def _installed_version(inventory: Any, host: Any, home: Any) -> str:
    """The host's installed version, read by the agent's read-only facts action."""
    from ...core.planner import host_facts
    from ...fleet.transport import AgentClient, connect
    from ._common import load_operator_playbook

    pb, _ = load_operator_playbook(host.playbook, home, where=str(inventory.path), key=f"hosts.{host.name}.playbook")
    if pb.product != host.product:
        raise UpgraderError(f"the host runs {host.product!r} but playbook {pb.path} is for {pb.product!r}")
    spec = pb.render({"install_dir": host.install_dir, "host": host.name, **host.vars,
                      "target_version": "unknown", "current_version": "unknown"})
    transport = connect(host)
    try:
        facts = host_facts(AgentClient(transport), host, spec, [], check_drift=False)
    finally:
        transport.close()
    if not facts.get("version"):
        raise UpgraderError(str(facts.get("version_error") or "no installed version found"))
    return str(facts["version"])


def cmd_available(args: argparse.Namespace) -> int:
    from ...customer.available import host_offers, unreadable_host
    from ...core.clock import clock_of
    from ...fleet.inventory import load_inventory
    from ...api import trusted_catalog

    clock = clock_of(args)
    inventory = load_inventory(args.inventory)
    hosts = inventory.select(args.hosts)
    policy = load_policy_or_fail(policy_path(args))
    catalog, signed_by = trusted_catalog(args.catalog, policy, args.home, clock.now())
    today = clock.now().date()

    def one(host: Any) -> dict[str, Any]:
        try:
            current = _installed_version(inventory, host, args.home)
        except UpgraderError as e:  # keep the other hosts' answers
            return {**unreadable_host(host.name, host.product, e.message), "address": host.address}
        return {**host_offers(host=host.name, product=host.product, current=current,
                              maintenance_until=host.maintenance_until, catalog=catalog, policy=policy, today=today),
                "address": host.address}

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
        results = list(pool.map(one, hosts))
    data = {"catalog": {"path": str(catalog.path), "serial": catalog.serial, **signed_by},
            "policy": policy.source, "hosts": results}
    if args.json:
        print_json(data)
    else:
        _print(data, getattr(args, "lang", None))
    return ExitCode.NEEDS_PERSON if any(h["error"] for h in results) else ExitCode.OK


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
