"""``upgrader inspect``: the health inspection of one install or of every host of an inventory.

Collects through ``upgrader.customer.inspection`` (the agent's read-only ``inspect`` op, locally or over
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
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...core.errors import InputError, UpgraderError
from ...core.exit_codes import ExitCode
from ._common import console, load_policy_or_fail, parse_variables, policy_path, print_json

__all__ = ["cmd_inspect"]


@dataclass(frozen=True)
class _Target:
    name: str
    address: str
    install_dir: str
    playbook: Any
    variables: dict[str, Any]
    state_dir: str | None
    maintenance_until: Any
    connect: Callable[[], Any]


def _output_kind(path: str | None) -> str | None:
    if path is None:
        return None
    suffix = Path(path).suffix.lower()
    if suffix in (".html", ".htm"):
        return "html"
    if suffix == ".json":
        return "json"
    raise InputError(f"-o: the report's name must end in .html or .json, got {path!r}",
                     hint="e.g. -o inspection.html (send it to support) or -o inspection.json")


def _local_playbook(install_dir: Path, name: str | None) -> Any:
    """--playbook, or the shipped playbook whose version file is in the install dir."""
    from ...core.playbook import find_playbook, load_playbook, shipped_playbooks_dir

    if name:
        return load_playbook(find_playbook(name))
    tried = []
    for path in sorted(shipped_playbooks_dir().glob("*.yaml")):
        pb = load_playbook(path)
        version_file = pb.spec["version"].get("file")
        tried.append(pb.name)
        if version_file and (install_dir / version_file).is_file():
            return pb
    raise InputError(f"cannot tell which product is installed here (tried the playbooks {', '.join(tried)})",
                     path=str(install_dir), hint="name it with --playbook NAME or a playbook file")


def _targets(args: argparse.Namespace) -> list[_Target]:
    from ...fleet.transport import connect

    if bool(args.inventory) == bool(args.install_dir):
        raise InputError("give either --inventory INV or --install-dir DIR",
                         hint="upgrader inspect --install-dir /opt/TongWeb7049 (this machine) or --inventory hosts.yaml")
    if args.install_dir:
        if args.hosts:
            raise InputError("--hosts selects hosts of an inventory; it does not go with --install-dir")
        install_dir = Path(args.install_dir).absolute()
        if not install_dir.is_dir():
            raise InputError("the install dir does not exist (or is not a directory)", path=str(install_dir),
                             hint="give the directory the product is installed in")
        from ...fleet.transport.local import LocalTransport

        return [_Target("local", "local", str(install_dir), _local_playbook(install_dir, args.playbook),
                        parse_variables(args.var), None, None, lambda: LocalTransport("local"))]
    if args.playbook or args.var:
        raise InputError("--playbook and --var go with --install-dir; an inventory names each host's playbook "
                         "and vars")
    from ...fleet.inventory import load_inventory
    from ._common import load_operator_playbook

    inventory = load_inventory(args.inventory)
    playbooks: dict[str, Any] = {}
    targets = []
    for h in inventory.select(args.hosts):
        if h.playbook not in playbooks:
            playbooks[h.playbook] = load_operator_playbook(h.playbook, args.home, where=str(inventory.path),
                                                           key=f"hosts.{h.name}.playbook")[0]
        pb = playbooks[h.playbook]
        if pb.product != h.product:
            raise InputError(f"host {h.name} runs {h.product!r} but playbook {pb.path} is for {pb.product!r}",
                             path=str(inventory.path), key=f"hosts.{h.name}.playbook")
        targets.append(_Target(h.name, h.address, h.install_dir, pb, dict(h.vars), h.state_dir,
                               h.maintenance_until, lambda h=h: connect(h)))
    return targets


def cmd_inspect(args: argparse.Namespace) -> int:
    from ...core.clock import clock_of
    from ...customer.inspection import flag_advisories, inspect_host

    kind = _output_kind(args.output)
    targets = _targets(args)
    clock = clock_of(args)
    catalog = policy = None
    signed_by: dict[str, Any] = {}
    if args.catalog:
        from ...api import trusted_catalog

        policy = load_policy_or_fail(policy_path(args))
        catalog, signed_by = trusted_catalog(args.catalog, policy, args.home, clock.now())
    today = clock.now().date()
    started = clock.now().isoformat(timespec="seconds")

    refused: list[str] = []  # hosts whose agent refused the install's path (a link, a directory others can change)

    def one(t: _Target) -> dict[str, Any]:
        try:
            transport = t.connect()
            try:
                report = inspect_host(transport, t.playbook, install_dir=t.install_dir, name=t.name,
                                      variables=t.variables, state_dir=t.state_dir)
            finally:
                transport.close()
        except UpgraderError as e:  # keep the other hosts' reports
            if e.exit_code == ExitCode.BAD_INPUT:
                refused.append(t.name)
            return {"host": t.name, "address": t.address, "install_dir": t.install_dir, "product": t.playbook.product,
                    "playbook": str(t.playbook.path), "facts": {}, "metrics": {}, "thresholds": {},
                    "warnings": [], "advisories": [], "error": e.message}
        if catalog is not None:
            report = flag_advisories(report, catalog=catalog, policy=policy, today=today,
                                     maintenance_until=t.maintenance_until)
        return {**report, "address": t.address}

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets)))) as pool:
        hosts = list(pool.map(one, targets))
    data = {"inspection": {"time": clock.now().isoformat(timespec="seconds"), "started": started,
                           "form": _form(args, policy),
                           "inventory": str(args.inventory) if args.inventory else None,
                           "catalog": {"path": str(catalog.path), "serial": catalog.serial, **signed_by}
                           if catalog is not None else None},
            "hosts": hosts,
            "summary": {"hosts": len(hosts), "inspected": sum(1 for h in hosts if not h["error"]),
                        "unreachable": [h["host"] for h in hosts if h["error"]],
                        "warnings": sum(len(h["warnings"]) for h in hosts)}}
    if kind is not None:
        _write(Path(args.output), kind, data, args.lang)
    if args.json:
        print_json(data)
    else:
        _print(data, args.output, args.lang)
    if refused:  # bad input on the host's side (install_dir, state_dir): nothing was read there
        return ExitCode.BAD_INPUT
    return ExitCode.NEEDS_PERSON if data["summary"]["unreachable"] else ExitCode.OK


def _write(out: Path, kind: str, data: dict[str, Any], lang: str | None) -> None:
    from ...audit.report import _write_atomically
    from ...core.language import resolve_lang
    from ...audit.redaction import redact_value

    data = redact_value(data)  # a report is sent on: no secret from a host's facts or logs goes with it
    if kind == "html":
        from ...customer.inspect_report import render_html

        text = render_html(data, resolve_lang(lang))
    else:
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    _write_atomically(out, text)


def _form(args: argparse.Namespace, policy: Any) -> dict[str, Any]:
    """The head of the 巡检 form: who for, what, by whom, when (``--period`` as written, else the collection's
    own start and end), and the time zone the times are shown in."""
    import getpass
    import socket

    from ...core.shown_time import policy_zone

    if policy is None:
        try:
            policy = load_policy_or_fail(policy_path(args))
        except UpgraderError:
            policy = None
    inspector = getattr(args, "inspector", None)
    if not inspector:
        try:
            inspector = f"{getpass.getuser()}@{socket.gethostname()}"
        except (KeyError, OSError):
            inspector = None
    form = {"customer": getattr(args, "customer", None), "system": getattr(args, "system", None),
            "inspector": inspector, "period": getattr(args, "period", None),
            "remarks": getattr(args, "remarks", None), "timezone": policy_zone(policy)}
    for name in ("customer", "system", "inspector", "period", "remarks"):
        value = form[name]
        if value is not None and (len(str(value)) > 200 or any(ord(ch) < 32 for ch in str(value))):
            raise InputError(f"--{name}: at most 200 characters on one line", hint="e.g. --customer '某某银行'")
    return form


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
            message = translate(w["message"], t.lang) if t.lang == "zh" else w["message"]
            c.print(t("finding", host=h["host"], check=w["check"], message=message), soft_wrap=True)
    s = data["summary"]
    c.print(t("inspect_summary", inspected=s["inspected"], hosts=s["hosts"], warnings=s["warnings"])
            + (t("inspect_unreachable", hosts=", ".join(s["unreachable"])) if s["unreachable"] else ""), soft_wrap=True)
    if output:
        c.print(t("report_written", file=output), soft_wrap=True)
