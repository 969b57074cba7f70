"""Playbook variables read from the install's own configuration (a playbook's ``vars_from:``).

A playbook says where a value lives, so that health checks probe the port the service really
listens on instead of a default::

    vars_from:
      port: {file: conf/server.conf, pattern: '^port\\s*=\\s*(\\d+)'}          # a regular expression
      http_port: {file: conf/server.xml, xml: "./Service/Connector[@protocol='HTTP/1.1']",
                  attribute: port}                                           # an element's attribute

``pattern`` is searched line-wise (``^`` and ``$`` match at each line) and its one capture group
(else the whole match) is the value. ``xml`` is an ElementTree path (one, or a list tried in order)
from the root element; the first matching element with the ``attribute`` (else its text) wins.
XML is read as XML, so a commented-out ``<Connector>`` never counts; a file that declares entities
is not read. ``file`` is relative to the install dir; the host agent resolves it beneath the install
dir and refuses a link that leads out.

Precedence, lowest first: the playbook's ``vars:`` defaults, then ``vars_from`` (what the host's
configuration says), then the inventory host's ``vars:``, then ``--var`` on the command line. The
plan records what was read and which value was used. But the inventory is the requester's: an
inventory value that differs from what the install's configuration says (a port pointing the
health checks at the requester's own server) is refused at plan time (``refuse_overrides``, exit
2) unless the operator's policy names the variable in ``rules.vars_override``; and a run reads the
configuration again and refuses a value that is no longer the plan's (``read_differs``, exit 4).

This module validates ``vars_from`` (pure), asks the agent to read it (``read_config_vars``) and
merges (pure). It changes nothing on any host.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Mapping, cast

from .document import Section
from .shapes import VarRead, VarsFromSpec

if TYPE_CHECKING:
    from ..fleet.transport.base import AgentClient

__all__ = ["parse_vars_from", "read_config_vars", "merge_variables", "describe_read", "refuse_overrides",
           "read_differs"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_vars_from(s: Section | None) -> dict[str, VarsFromSpec]:
    """The validated ``vars_from:`` block: name -> {file, pattern} or {file, xml: [paths], attribute}."""
    import xml.etree.ElementTree as ET

    out: dict[str, VarsFromSpec] = {}
    if s is None:
        return out
    for name in list(s.data):
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise s.error(str(name), "a variable name: letters, digits and _, not starting with a digit")
        item = s.section(name)
        assert item is not None
        path = item.str("file")
        if path.startswith("/") or ".." in path.replace("\\", "/").split("/") or "${" in path:
            raise item.error("file", f"must be a path relative to the install dir, inside it, got {path!r}")
        spec: dict[str, Any] = {"file": path}
        if item.has("pattern") == item.has("xml"):
            raise item.error(None, "give exactly one of 'pattern:' (a regular expression) or 'xml:' (an element "
                                   "path, with 'attribute:')")
        if item.has("pattern"):
            pattern = item.str("pattern")
            try:
                if re.compile(pattern).groups > 1:
                    raise item.error("pattern", "use at most one capture group (the value)")
            except re.error as e:
                raise item.error("pattern", f"not a valid regular expression: {e}") from None
            spec["pattern"] = pattern
        else:
            raw = item.get("xml", (str, list), describe="an element path or a list of them")
            paths = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
            for i, p in enumerate(paths):
                if not isinstance(p, str) or not p.strip():
                    raise item.error(f"xml[{i}]", "expected an element path such as ./Service/Connector")
                try:
                    ET.fromstring("<x/>").findall(p)
                except (SyntaxError, KeyError, TypeError, ValueError) as e:
                    raise item.error("xml", f"not a valid element path {p!r}: {e}") from None
            spec["xml"] = list(paths)
            if item.has("attribute"):
                spec["attribute"] = item.str("attribute")
        item.done()
        out[name] = cast(VarsFromSpec, spec)
    return out


def read_config_vars(agent: AgentClient, *, install_dir: str, state_dir: str | None,
                     vars_from: Mapping[str, VarsFromSpec]) -> dict[str, VarRead]:
    """What the host's configuration says for each ``vars_from`` name ({file, value, line} or {file, error})."""
    if not vars_from:
        return {}
    from .errors import TransportError
    from ..fleet.transport.base import AgentFailure

    try:
        res = agent.call("read_vars", install_dir=install_dir, state_dir=state_dir, vars_from=dict(vars_from),
                         timeout=60)
    except AgentFailure as e:
        from .host_paths import refuse_agent_unsafe

        refuse_agent_unsafe(e, host=str(getattr(getattr(agent, "transport", None), "name", None) or install_dir))
        raise TransportError(f"cannot read the install's configuration: {e.message}") from e
    return dict(res.get("vars") or {})


def merge_variables(defaults: Mapping[str, object], read: Mapping[str, VarRead],
                    explicit: Mapping[str, object]) -> tuple[dict[str, str], dict[str, VarRead]]:
    """(the values to render with, the record for the plan). ``explicit``: inventory vars and --var."""
    values = {k: str(v) for k, v in defaults.items()}
    record: dict[str, VarRead] = {}
    for name, found in read.items():
        entry = found.copy()
        if name in explicit:
            entry["used"] = False
            entry["value_used"] = str(explicit[name])
            entry["why"] = "an explicit value (inventory vars or --var) wins over the configuration"
        elif "value" in found:
            values[name] = str(found["value"])
            entry["used"] = True
            entry["value_used"] = str(found["value"])
        else:
            entry["used"] = False
            entry["value_used"] = values.get(name)
            entry["why"] = "not found in the configuration: the playbook's default is used"
        record[name] = entry
    values.update({k: str(v) for k, v in explicit.items()})
    return values, record


def describe_read(record: Mapping[str, VarRead]) -> list[str]:
    """One English line per variable read: 'port = 18181 (conf/server.conf line 2)'; secrets in a value (a URL's
    password, say) are masked as everywhere else the CLI prints."""
    from ..audit.redaction import redact

    lines = []
    for name, r in sorted(record.items()):
        where = f"{r.get('file')} line {r['line']}" if r.get("line") else str(r.get("file"))
        if "value" in r and r.get("used"):
            lines.append(f"{name} = {r['value']} (read from {where})")
        elif "value" in r:
            lines.append(f"{name} = {r.get('value_used')} (given; {where} says {r['value']})")
        else:
            lines.append(f"{name} = {r.get('value_used')} (default; {r.get('file')}: {r.get('error')})")
    return [redact(line) for line in lines]


def refuse_overrides(host: str, explicit: Mapping[str, object], read: Mapping[str, VarRead],
                     allowed: tuple[str, ...], *, inventory: str, policy: str) -> None:
    """InputError (exit 2) when the inventory sets a variable to another value than the install's configuration
    gives it (``vars_from``), unless the operator's policy lists it in ``rules.vars_override``."""
    from .errors import InputError

    bad = [(name, str(explicit[name]), found) for name, found in sorted(read.items())
           if name in explicit and "value" in found and str(explicit[name]) != str(found["value"])
           and name not in allowed]
    if not bad:
        return
    said = "; ".join(f"hosts.{host}.vars.{name} is {given!r} but the install's {found.get('file')}"
                     f"{' line ' + str(found['line']) if found.get('line') else ''} says {str(found['value'])!r}"
                     for name, given, found in bad)
    raise InputError(f"host {host}: the inventory overrides values the playbook reads from the install's "
                     f"configuration: {said}; the health checks would not probe the install's own service",
                     path=inventory, key=f"hosts.{host}.vars.{bad[0][0]}",
                     hint=f"remove the inventory value (the configuration's is used), or the operator lists the "
                          f"variable in rules.vars_override of the policy ({policy}) to allow it")


def read_differs(host: str, planned: Mapping[str, VarRead], now: Mapping[str, VarRead]) -> list[str]:
    """One line per variable whose value the install's configuration gives now differs from the plan's record."""
    out = []
    for name, then in sorted(planned.items()):
        again = now.get(name) or {}
        if then.get("value") != again.get("value"):
            was = repr(then["value"]) if "value" in then else f"not found ({then.get('error')})"
            is_ = repr(again["value"]) if "value" in again else f"not found ({again.get('error')})"
            out.append(f"{host}: {name} in {then.get('file')} was {was} when the plan was made, is {is_} now")
    return out
