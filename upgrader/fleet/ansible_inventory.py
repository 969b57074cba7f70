"""Ansible inventories (INI and YAML), read as they are.

Hosts, groups (with ``children``) and variables at every level (``all``, group, host; a host's own
value wins, then the nearest group, as in Ansible). Ansible's connection variables map to ours:
``ansible_host`` → address, ``ansible_port`` → port, ``ansible_user`` → user,
``ansible_ssh_private_key_file`` → key. upgrader's own settings (``install_dir``, ``product``,
``playbook``, ``maintenance_until``, ``state_dir``, ``host_key``, ``known_hosts``) may be written
plainly or with an ``upgrader_`` prefix; every other variable becomes a playbook variable.
Host ranges (``web[01:20]``) are expanded. Privilege escalation is refused (exit 2, naming the host and the
key): ``ansible_become`` on, or ``ansible_become_user``, would otherwise be ignored and upgrader would act as
the login user. Jinja is not evaluated: a value with ``{{``, ``{%`` or
``{#`` is refused with a clear error rather than used as literal text.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from ..core.errors import InputError

__all__ = ["looks_like_ini", "is_ansible_yaml", "read_ansible"]

_MAP = {"ansible_host": "address", "ansible_ssh_host": "address", "ansible_port": "port",
        "ansible_ssh_port": "port", "ansible_user": "user", "ansible_ssh_user": "user",
        "ansible_ssh_private_key_file": "key", "ansible_private_key_file": "key"}
_OURS = ("install_dir", "product", "playbook", "maintenance_until", "state_dir", "host_key", "known_hosts")
_IGNORED = re.compile(r"^ansible_(python_interpreter|connection|become.*|shell_.*|ssh_common_args|ssh_extra_args|"
                      r"control_path|ssh_pipelining|group_priority)$")


def looks_like_ini(p: Path) -> bool:
    if p.suffix in (".ini", ".cfg") or (p.is_file() and p.suffix == "" and p.name != "inventory.yaml"):
        try:
            head = p.read_text(encoding="utf-8", errors="replace")[:4096]
        except OSError:
            return False
        return p.suffix in (".ini", ".cfg") or bool(re.search(r"^\s*\[[^\]]+\]\s*$", head, re.M))
    return False


def is_ansible_yaml(data: Any) -> bool:
    return isinstance(data, dict) and "format" not in data and (
        "all" in data or any(isinstance(v, dict) and ("hosts" in v or "children" in v) for v in data.values()))


def _expand(pattern: str) -> list[str]:
    m = re.search(r"\[(\w+):(\w+)\]", pattern)
    if not m:
        return [pattern]
    a, b = m.group(1), m.group(2)
    if a.isdigit() and b.isdigit():
        width = len(a) if a.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(a), int(b) + 1)]
    else:
        items = [chr(c) for c in range(ord(a), ord(b) + 1)]
    return [x for item in items for x in _expand(pattern[:m.start()] + item + pattern[m.end():])]


class _Tree:
    def __init__(self, source: str) -> None:
        self.source = source
        self.hosts: dict[str, dict[str, Any]] = {}
        self.group_hosts: dict[str, list[str]] = {"all": []}
        self.group_vars: dict[str, dict[str, Any]] = {}
        self.children: dict[str, list[str]] = {}

    def add_host(self, group: str, name: str, values: dict[str, Any]) -> None:
        self.hosts.setdefault(name, {}).update(values)
        members = self.group_hosts.setdefault(group, [])
        if name not in members:
            members.append(name)

    def members(self, group: str, seen: frozenset[str] = frozenset()) -> list[str]:
        if group in seen:
            raise InputError(f"group {group!r} contains itself", path=self.source)
        out = list(self.group_hosts.get(group, []))
        for child in self.children.get(group, []):
            out += [h for h in self.members(child, seen | {group}) if h not in out]
        return out

    def depth(self, group: str) -> int:
        parents = [g for g, kids in self.children.items() if group in kids]
        return 0 if group == "all" else 1 + max((self.depth(p) for p in parents), default=0)

    def _precedence(self, group: str) -> tuple[int, int, str]:
        """Ansible's order of group vars: parents before children, then ansible_group_priority, then by name;
        a later group wins. (Without the name, siblings came in set order: a different winner per process.)"""
        priority = self.group_vars.get(group, {}).get("ansible_group_priority", 1)
        try:
            priority = int(priority)
        except (TypeError, ValueError):
            raise InputError(f"group {group!r}: ansible_group_priority must be a whole number, got {priority!r}",
                             path=self.source) from None
        return self.depth(group), priority, group

    def resolve(self, p: Path) -> Any:
        groups = {g: tuple(self.members(g)) for g in set(self.group_hosts) | set(self.children) if g != "all"}
        settings: dict[str, dict[str, Any]] = {}
        for name, own in self.hosts.items():
            merged: dict[str, Any] = dict(self.group_vars.get("all", {}))
            mine = sorted((g for g, m in groups.items() if name in m), key=self._precedence)
            for g in mine:
                merged.update(self.group_vars.get(g, {}))
            merged.update(own)
            settings[name] = self._translate(name, merged)
        return settings, groups  # inventory.build_inventory makes the Inventory

    def _translate(self, name: str, values: dict[str, Any]) -> dict[str, Any]:
        _refuse_become(name, values, self.source)
        out: dict[str, Any] = {"address": name, "vars": {}}
        for k, v in values.items():
            if _has_jinja(v):
                raise InputError(f"host {name}: {k} uses a Jinja expression ({v!r}), which upgrader does not evaluate",
                                 path=self.source, hint="write the value out, or use upgrader's own inventory format")
            key = k[len("upgrader_"):] if k.startswith("upgrader_") else k
            if k in _MAP:
                out[_MAP[k]] = int(v) if _MAP[k] == "port" else str(v)
            elif key in _OURS:
                out[key] = v
            elif _IGNORED.match(k):
                continue
            else:
                out["vars"][k] = v
        return out


def _refuse_become(name: str, values: dict[str, Any], source: str) -> None:
    """upgrader acts as the login user (``ansible_user``) and never switches user: an inventory that asks for
    privilege escalation (``ansible_become`` on, or a ``ansible_become_user``) is refused rather than ignored, which
    would act as another user than the one written there."""
    become = values.get("ansible_become")
    on = str(become).strip().lower() in ("1", "true", "yes", "on") if become is not None else None
    key = "ansible_become" if on else "ansible_become_user" if "ansible_become_user" in values and on is not False \
        else None
    if key:
        raise InputError(f"host {name}: {key} ({values[key]!r}) asks to switch user, which upgrader does not do",
                         path=source, key=key,
                         hint=f"log in as the account that owns the install instead (ansible_user for {name}), and "
                              "remove ansible_become / ansible_become_user for these hosts")


def _has_jinja(value: Any) -> bool:
    """An expression, statement or comment of Jinja anywhere in the value (also inside lists and mappings)."""
    if isinstance(value, str):
        return any(mark in value for mark in ("{{", "{%", "{#"))
    if isinstance(value, dict):
        return any(_has_jinja(k) or _has_jinja(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_jinja(v) for v in value)
    return False


def _ini_value(text: str) -> Any:
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def read_ansible(p: Path, data: Any) -> Any:
    tree = _Tree(str(p))
    if data is None:
        _read_ini(p, tree)
    else:
        _read_yaml(data, tree, "all" if "all" in data else None)
    return tree.resolve(p)


def _read_ini(p: Path, tree: _Tree) -> None:
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read inventory: {e}", path=str(p)) from e
    section, kind = "ungrouped", "hosts"
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[([^\]:]+)(?::(vars|children))?\]", line)
        if m:
            section, kind = m.group(1), m.group(2) or "hosts"
            if kind == "hosts":
                tree.group_hosts.setdefault(section, [])
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            raise InputError(f"line {n}: {e}", path=str(p)) from None
        if kind == "vars":
            k, sep, v = line.partition("=")
            if not sep:
                raise InputError(f"line {n}: expected key=value in [{section}:vars]", path=str(p))
            tree.group_vars.setdefault(section, {})[k.strip()] = _ini_value(v.strip().strip("'\""))
        elif kind == "children":
            tree.children.setdefault(section, []).append(words[0])
        else:
            values = {}
            for w in words[1:]:
                k, sep, v = w.partition("=")
                if not sep:
                    raise InputError(f"line {n}: expected key=value after the host name, got {w!r}", path=str(p))
                values[k] = _ini_value(v)
            for host in _expand(words[0]):
                tree.add_host(section, host, values)


def _read_yaml(data: Any, tree: _Tree, group: str | None) -> None:
    if group is None:
        for g, body in data.items():
            _group(tree, str(g), body)
    else:
        _group(tree, group, data[group])


def _group(tree: _Tree, name: str, body: Any) -> None:
    if body is None:
        tree.group_hosts.setdefault(name, [])
        return
    if not isinstance(body, dict):
        raise InputError(f"group {name!r}: expected hosts/vars/children", path=tree.source)
    for key in body:
        if key not in ("hosts", "vars", "children"):
            raise InputError(f"group {name!r}: unknown key {key!r}", path=tree.source,
                             hint="an Ansible group has hosts, vars and children")
    tree.group_hosts.setdefault(name, [])
    for host, values in (body.get("hosts") or {}).items():
        for h in _expand(str(host)):
            tree.add_host(name, h, dict(values or {}))
    tree.group_vars.setdefault(name, {}).update(body.get("vars") or {})
    for child, child_body in (body.get("children") or {}).items():
        tree.children.setdefault(name, []).append(str(child))
        _group(tree, str(child), child_body)
