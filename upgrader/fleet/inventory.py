"""Inventories: which hosts exist, how to reach them, where the product is installed.

Reads upgrader's YAML inventory (hosts, groups, defaults) and selects hosts with patterns such as
``prod:!web-03`` or ``app-*``. Hosts are frozen dataclasses; nothing here connects anywhere.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..core.document import Section, load_yaml
from ..core.errors import InputError

__all__ = ["Host", "Inventory", "load_inventory", "build_inventory", "host_from_plan", "HOST_KEYS"]

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
HOST_KEYS = ("address", "port", "user", "key", "install_dir", "product", "playbook", "maintenance_until",
              "vars", "state_dir", "host_key", "known_hosts")


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    install_dir: str
    product: str
    playbook: str
    port: int = 22
    user: str | None = None
    key: str | None = None
    maintenance_until: _dt.date | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    state_dir: str | None = None
    host_key: str = "strict"
    known_hosts: str | None = None

    @property
    def is_local(self) -> bool:
        return self.address == "local"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "port": self.port, "user": self.user,
                "install_dir": self.install_dir, "product": self.product, "playbook": self.playbook,
                "maintenance_until": self.maintenance_until.isoformat() if self.maintenance_until else None,
                "groups": list(self.groups), "key": self.key, "host_key": self.host_key,
                "known_hosts": self.known_hosts}


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: dict[str, Host]
    groups: dict[str, tuple[str, ...]]

    def select(self, pattern: str | None) -> list[Host]:
        """Hosts matching ``pattern``: names, groups or globs joined by ':' or ',', '!' excludes."""
        if not pattern:
            return list(self.hosts.values())
        chosen: list[str] = []
        excluded: set[str] = set()
        for part in [p.strip() for p in pattern.replace(",", ":").split(":") if p.strip()]:
            neg = part.startswith("!")
            term = part[1:] if neg else part
            names = self._expand(term)
            if not names:
                raise InputError(f"host pattern {term!r} matches no host or group in {self.path}",
                                 hint="known hosts: " + ", ".join(self.hosts))
            if neg:
                excluded.update(names)
            else:
                chosen.extend(n for n in names if n not in chosen)
        if all(p.strip().startswith("!") for p in pattern.replace(",", ":").split(":") if p.strip()):
            chosen = list(self.hosts)
        result = [self.hosts[n] for n in chosen if n not in excluded]
        if not result:
            raise InputError(f"host pattern {pattern!r} leaves no host to work on")
        return result

    def _expand(self, term: str) -> list[str]:
        if term in ("all", "*"):  # as in Ansible: every host, whatever groups the inventory defines
            return list(self.hosts)
        if term in self.groups:
            return list(self.groups[term])
        if term == "ungrouped":  # as in Ansible: the hosts in no group (other than all)
            grouped = {n for g, names in self.groups.items() if g != "all" for n in names}
            return [n for n in self.hosts if n not in grouped]
        if term in self.hosts:
            return [term]
        return [n for n in self.hosts if fnmatch.fnmatchcase(n, term)]


def _date(value: Any) -> _dt.date:
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"expected a date like 2027-12-31, got {value!r}") from None


def _path(value: str | None, base: Path) -> str | None:
    if value is None or value.startswith(("/", "~")):
        return value
    return str((base / value).resolve())


def _host(name: str, s: Section, defaults: dict[str, Any], base: Path) -> Host:
    merged = {**defaults, **s.data}
    s = Section(merged, source=s.source, keypath=s.keypath)
    install_dir = s.str("install_dir")
    if not install_dir.startswith("/"):
        install_dir = str((base / install_dir).resolve())
    install_dir = "/" + install_dir.lstrip("/")  # normpath keeps a leading //, which the kernel reads as /
    if posixpath.normpath(install_dir) in ("/", "/usr", "/etc", "/var", "/opt", "/home", "/root"):
        raise s.error("install_dir", f"{install_dir!r} is a system directory, not a product install dir")
    key = s.str("key", None)
    host = Host(
        name=name,
        address=s.str("address", pattern=r"[^\s'\"`$;&|<>]+", describe="a host name, an IP address or 'local'"),
        install_dir=posixpath.normpath(install_dir),
        product=s.str("product"),
        playbook=s.str("playbook"),
        port=s.int("port", 22, minimum=1, maximum=65535),
        user=s.str("user", None, pattern=r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", describe="a user name"),
        key=str((base / key).resolve()) if key and not key.startswith(("/", "~")) else key,
        maintenance_until=s.convert("maintenance_until", _date, None),
        vars=s.mapping("vars", {}),
        state_dir=s.str("state_dir", None),
        host_key=s.choice("host_key", ("strict", "accept-new"), "strict"),
        known_hosts=_path(s.str("known_hosts", None), base),
    )
    s.done()
    return host


def _refuse_control_lines(p: Path) -> None:
    """An INI inventory with a control or bidi character on a line: refused (exit 2), naming the line."""
    from ..core.text_safety import bad_char, refuse_control

    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return  # read_ansible reports an unreadable file
    for number, line in enumerate(text.split("\n"), 1):
        if bad_char(line.rstrip("\r")) is not None:
            refuse_control(line, path=str(p), what="an inventory", key=f"line {number}")


def load_inventory(path: str | Path) -> Inventory:
    """Read upgrader's YAML inventory, or an Ansible inventory (INI or YAML) as it is."""
    from .ansible_inventory import is_ansible_yaml, looks_like_ini, read_ansible

    from ..core.text_safety import refuse_control

    p = Path(path)
    if looks_like_ini(p):
        _refuse_control_lines(p)
        return build_inventory(p, *read_ansible(p, None))
    data = load_yaml(p, what="inventory")
    refuse_control(data, path=str(p), what="an inventory")  # nothing hidden from the approver's terminal
    if is_ansible_yaml(data):
        return build_inventory(p, *read_ansible(p, data))
    s = Section(data, source=str(p), what="an inventory")
    s.int("format", 1, minimum=1, maximum=1)
    defaults_sec = s.section("defaults", {})
    assert defaults_sec is not None
    defaults = dict(defaults_sec.data)
    for k in defaults:
        if k not in HOST_KEYS:
            raise defaults_sec.error(str(k), "unknown key", hint="known keys: " + ", ".join(HOST_KEYS))
    hosts_sec = s.section("hosts", what="a mapping of host names to their settings")
    assert hosts_sec is not None
    hosts: dict[str, Host] = {}
    for name in list(hosts_sec.data):
        import re

        if not isinstance(name, str) or not re.fullmatch(_NAME, name):
            raise hosts_sec.error(str(name), "host names use letters, digits, '.', '_' and '-' (at most 63)")
        sec = hosts_sec.section(name, {})
        assert sec is not None
        hosts[name] = _host(name, sec, defaults, p.parent)
    hosts_sec.done()
    if not hosts:
        raise s.error("hosts", "the inventory lists no host")
    groups: dict[str, tuple[str, ...]] = {}
    group_sec = s.section("groups", {})
    assert group_sec is not None
    for g in list(group_sec.data):
        members = tuple(group_sec.str_list(str(g)))
        for m in members:
            if m not in hosts:
                raise group_sec.error(str(g), f"group member {m!r} is not a host of this inventory")
        groups[str(g)] = members
    group_sec.done()
    s.done()
    by_host: dict[str, list[str]] = {}
    for g, members in groups.items():
        for m in members:
            by_host.setdefault(m, []).append(g)
    hosts = {n: _with_groups(h, tuple(by_host.get(n, ()))) for n, h in hosts.items()}
    _check_distinct_installs(hosts, p)
    return Inventory(path=p, hosts=hosts, groups=groups)


def build_inventory(p: Path, raw_hosts: dict[str, dict[str, Any]], groups: dict[str, tuple[str, ...]]) -> Inventory:
    """An Inventory from already-merged host settings (used by the Ansible reader)."""
    hosts = {}
    for name, settings in raw_hosts.items():
        sec = Section(settings, source=str(p), keypath=f"hosts.{name}")
        hosts[name] = _host(name, sec, {}, p.parent)
    by_host: dict[str, list[str]] = {}
    for g, members in groups.items():
        for m in members:
            by_host.setdefault(m, []).append(g)
    hosts = {n: _with_groups(h, tuple(by_host.get(n, ()))) for n, h in hosts.items()}
    if not hosts:
        raise InputError("the inventory lists no host", path=str(p))
    _check_distinct_installs(hosts, p)
    return Inventory(path=p, hosts=hosts, groups=groups)


def _with_groups(h: Host, groups: tuple[str, ...]) -> Host:
    from dataclasses import replace

    return replace(h, groups=groups)


def _check_distinct_installs(hosts: dict[str, Host], p: Path) -> None:
    seen: dict[tuple[str, int, str], str] = {}
    for h in hosts.values():
        # on this machine the directory itself counts, whatever symlink leads to it
        install = h.install_dir
        if h.is_local:
            try:
                install = os.path.realpath(h.install_dir)
            except OSError:  # a name changing between its lstat and readlink: the agent's own checks refuse it
                install = os.path.abspath(h.install_dir)
        where = (h.address, h.port if not h.is_local else 0, install)
        if where in seen:
            raise InputError(f"hosts {seen[where]!r} and {h.name!r} point at the same install dir "
                             f"{h.install_dir} on {h.address}", path=str(p),
                             hint="each host entry must be a distinct installation")
        seen[where] = h.name


def host_from_plan(h: Mapping[str, Any]) -> Host:
    """The inventory Host a plan entry was made for (how to reach it)."""
    import datetime as dt

    until = h.get("maintenance_until")
    return Host(name=h["name"], address=h["address"], install_dir=h["install_dir"], product=h["product"],
                playbook=h["playbook"]["name"], port=int(h.get("port") or 22), user=h.get("user"),
                key=h.get("key"), maintenance_until=dt.date.fromisoformat(until) if until else None,
                groups=tuple(h.get("groups", ())), state_dir=h.get("state_dir"),
                host_key=h.get("host_key") or "strict", known_hosts=h.get("known_hosts"))
