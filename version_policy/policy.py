"""Load and validate the upgrade policy file (YAML) into a typed, frozen ``Policy``.

Every key the policy knows is one row of ``SCHEMA`` (dotted key path, validator, default);
a new section is added by adding rows, and ``Policy.value(path)`` reads it at once. The file
is read once (at most 1 MiB), hashed (``Policy.digest``), scanned for YAML anchors/aliases
(refused: a billion-laughs guard), checked for duplicate keys, and loaded with
``yaml.safe_load`` only. Unknown keys and wrong types are errors naming the file and the key.
This module does not decide anything (see ``rules``) and never writes. Besides the policy it
reads the files the policy's trust keys name (``TRUST_FILE_KEYS``) only to hash them into
``Policy.identity`` (``holidays`` parses the ``window.holidays`` calendar, ``upgrader.trust``
the signer lists); ``Policy.resolve_path`` says where they are.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml  # type: ignore[import-untyped, unused-ignore]

from .errors import PolicyError

__all__ = ["Policy", "Setting", "SCHEMA", "MAX_POLICY_BYTES", "TRUST_FILE_KEYS", "TrustFile", "load_policy",
           "default_policy_path", "policy_identity"]

MAX_POLICY_BYTES = 1024 * 1024
_FIX = "fix the value or remove the key to use the default"


class _Invalid(Exception):
    """A validator's complaint: what it expected."""


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false")
    return value


def _format(value: object) -> int:
    if value != 1 or isinstance(value, bool):
        raise _Invalid("1 (the only policy format this version understands)")
    return 1


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise _Invalid("a whole number between 1 and 100")
    return value


def _levels(value: object) -> tuple[int, ...]:
    expected = "a list of levels between 1 and 4"
    if not isinstance(value, list) or not value:
        raise _Invalid(expected)
    if any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4 for v in value):
        raise _Invalid(expected)
    return tuple(sorted(set(cast(list[int], value))))


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,63}", v) for v in value):
        raise _Invalid("a list of change names such as external_interface (lowercase, _)")
    return tuple(cast(list[str], value))


def _variables(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", v) for v in value):
        raise _Invalid("a list of playbook variable names such as port")
    return tuple(cast(list[str], value))


def _one_of(*choices: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value not in choices:
            raise _Invalid(" or ".join(choices))
        return value
    return check


def _hours(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 8760:
        raise _Invalid("a number of hours above 0 and at most 8760 (a year), e.g. 4 or 0.5")
    return float(value)


def _timezone(value: object) -> str:
    expected = "an IANA time zone name such as Asia/Shanghai"
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*",
                                                      value):
        raise _Invalid(expected)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _Invalid(f"{expected} (this machine's time zone database has no {value!r}; check the "
                       "spelling, or install tzdata)") from None
    return value


def _days(value: object) -> tuple[str, ...]:
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    if not isinstance(value, list) or not value or any(
            not isinstance(v, str) or v.lower() not in names for v in value):
        raise _Invalid("a list of days such as [mon, tue, wed, thu, fri]")
    chosen = {cast(str, v).lower() for v in value}
    return tuple(n for n in names if n in chosen)


def _clock(latest: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        expected = f"a time of day between '00:00' and '{latest}', in quotes"
        if isinstance(value, int) and not isinstance(value, bool):
            raise _Invalid(f"{expected} (YAML reads an unquoted 18:00 as the number 1080)")
        match = re.fullmatch(r"([01][0-9]|2[0-4]):([0-5][0-9])", value) if isinstance(value, str) \
            else None
        if match is None or match.group(0) > latest:
            raise _Invalid(expected)
        return match.group(0)
    return check


def _optional_path(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise _Invalid("a file path (relative to the policy file) or null")
    return value


def _contracts(value: object) -> tuple[tuple[str, str], ...]:
    """{host name or pattern: YYYY-MM-DD}: the operator's maintenance contract end dates; as (pattern, ISO date)
    pairs in the file's order."""
    import datetime as _dt

    expected = ("a mapping of host names or patterns (app-*, *) to contract end dates YYYY-MM-DD, e.g. "
                "{app-01: 2027-06-30}")
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _Invalid(expected)
    out = []
    for name, when in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.*?\[\]-]{1,200}", name):
            raise _Invalid(f"{expected}; {_show(name)} is not a host name or pattern")
        if isinstance(when, _dt.datetime) or not isinstance(when, (_dt.date, str)):
            raise _Invalid(f"{expected}; {name} has {_show(when)}")
        try:
            day = when if isinstance(when, _dt.date) else _dt.date.fromisoformat(when)
        except ValueError:
            raise _Invalid(f"{expected}; {name} has {_show(when)}") from None
        out.append((name, day.isoformat()))
    return tuple(out)


def _response_hours(value: object) -> tuple[float, float, float, float]:
    """{1: h, 2: h, 3: h, 4: h}: hours to respond to an incident of each severity level; a level
    left out keeps its default."""
    expected = ("a mapping of severity levels 1 to 4 to hours, e.g. {1: 2, 2: 4, 3: 8, 4: 48} "
                "(hours above 0 and at most 8760)")
    if not isinstance(value, dict):
        raise _Invalid(expected)
    hours = list(_RESPONSE_HOURS)
    for level, given in value.items():
        if isinstance(level, bool) or level not in (1, 2, 3, 4):
            raise _Invalid(f"{expected}; {_show(level)} is not a level")
        try:
            hours[level - 1] = _hours(given)
        except _Invalid:
            raise _Invalid(f"{expected}; level {level} has {_show(given)}") from None
    return (hours[0], hours[1], hours[2], hours[3])


_RESPONSE_HOURS = (2.0, 4.0, 8.0, 48.0)


@dataclass(frozen=True)
class Setting:
    """One policy key: dotted path, validator (returns the normalized value), default."""

    path: str
    check: Callable[[object], object]
    default: object


SCHEMA: tuple[Setting, ...] = (
    Setting("format", _format, 1),
    Setting("rules.free_levels", _levels, (3, 4)),
    Setting("rules.allow_line_change", _boolean, False),
    Setting("rules.refused_changes", _names,
            ("external_interface", "config_format", "monitoring")),
    Setting("rules.require_maintenance_contract", _boolean, True),
    Setting("rules.contracts", _contracts, ()),
    Setting("rules.manual_changes", _one_of("warn", "block"), "warn"),
    Setting("rules.vars_override", _variables, ()),
    Setting("approvals.required", _count, 1),
    Setting("approvals.allow_self_approval", _boolean, False),
    Setting("approvals.allowed_signers", _optional_path, None),
    Setting("approvals.allow_unsigned_plans", _boolean, False),
    Setting("catalog.trusted_signers", _optional_path, None),
    Setting("audit.allowed_signers", _optional_path, None),
    Setting("audit.syslog", _boolean, False),
    Setting("window.timezone", _timezone, "Asia/Shanghai"),
    Setting("window.days", _days, ("mon", "tue", "wed", "thu", "fri")),
    Setting("window.start", _clock("23:59"), "09:00"),
    Setting("window.end", _clock("24:00"), "18:00"),
    Setting("window.holidays", _optional_path, None),
    Setting("window.outside", _one_of("refuse", "after_hours_approval", "allow"),
            "after_hours_approval"),
    Setting("window.rollback", _one_of("any_time", "like_run"), "any_time"),
    Setting("access.default_hours", _hours, 4.0),
    Setting("access.max_hours", _hours, 24.0),
    Setting("severity.response_hours", _response_hours, _RESPONSE_HOURS),
)


# The keys whose value names a file the policy trusts: who may approve, whose catalogs count, who signs audit
# checkpoints, which days are holidays. The policy's identity covers these files, not only the policy's bytes.
TRUST_FILE_KEYS = ("approvals.allowed_signers", "catalog.trusted_signers", "audit.allowed_signers",
                   "window.holidays")


@dataclass(frozen=True)
class TrustFile:
    """A file a policy key names, as read when the policy was loaded: the key, the resolved absolute path
    (None: the key is not set), and the sha256 of its bytes (None: ``state`` says why: "missing",
    "unreadable", "not set")."""

    key: str
    source: str | None
    sha256: str | None
    state: str
    #: the very bytes that were hashed: every decision reads the file from here, never again from its path (a
    #: file swapped between two reads would be trusted under the identity of the other)
    content: bytes | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "source": self.source, "sha256": self.sha256, "state": self.state}

    def shown(self) -> str:
        """One line: where and which bytes (or why none)."""
        if self.source is None:
            return f"{self.key}: not set"
        return f"{self.key}: {self.source} " + (f"sha256 {self.sha256}" if self.sha256 else f"({self.state})")


def policy_identity(digest: str, trust_files: "tuple[TrustFile, ...] | list[Mapping[str, object]]") -> str:
    """sha256 of the canonical record of a policy: its file's sha256 and each trust file's key, source and
    sha256 (or state). Two policies with the same identity are the same bytes naming the same trusted files."""
    import json

    record = {"format": 1, "policy_sha256": digest,
              "trust_files": [t.to_dict() if isinstance(t, TrustFile) else
                              {k: t.get(k) for k in ("key", "source", "sha256", "state")} for t in trust_files]}
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Policy:
    """A validated policy. ``settings`` maps every ``SCHEMA`` path to its value; ``trust_files`` are the files
    its trust keys name, as read at load time (see ``identity``)."""

    source: str
    digest: str
    settings: Mapping[str, object] = field(hash=False, repr=False)
    trust_files: tuple[TrustFile, ...] = field(default=(), hash=False)

    @property
    def identity(self) -> str:
        """The policy's identity digest: the policy file's sha256 and every trust file it names (source and
        sha256). A byte-identical copy of a policy elsewhere names other files and has another identity."""
        return policy_identity(self.digest, self.trust_files)

    def value(self, path: str) -> object:
        """The value of a dotted key path, e.g. ``policy.value("rules.free_levels")``."""
        return self.settings[path]

    def trust_file(self, key: str) -> TrustFile | None:
        """The trust file ``key`` names as it was read with the policy (its bytes in ``content``), or None when
        this policy was not loaded with its trust files."""
        return next((t for t in self.trust_files if t.key == key), None)

    @property
    def raw(self) -> dict[str, object]:
        """The merged policy (defaults and file) as a fresh, JSON-ready nested dict."""
        tree: dict[str, object] = {}
        for path, value in self.settings.items():
            *sections, key = path.split(".")
            node = tree
            for section in sections:
                node = cast(dict[str, object], node.setdefault(section, {}))
            node[key] = list(value) if isinstance(value, tuple) else value
        return tree

    def resolve_path(self, value: str | os.PathLike[str]) -> Path:
        """A path from the policy, resolved against the policy file's directory."""
        path = Path(value)
        return path if path.is_absolute() else Path(self.source).parent / path

    @property
    def free_levels(self) -> tuple[int, ...]:
        """Levels that may change in a free upgrade, ascending."""
        return cast(tuple[int, ...], self.settings["rules.free_levels"])

    @property
    def allow_line_change(self) -> bool:
        """May an upgrade move between letter lines (7.0.4.x -> 7.0.C.x)?"""
        return cast(bool, self.settings["rules.allow_line_change"])

    @property
    def refused_changes(self) -> tuple[str, ...]:
        """Declared changes that are never free."""
        return cast(tuple[str, ...], self.settings["rules.refused_changes"])

    @property
    def require_maintenance_contract(self) -> bool:
        """Must the host's maintenance contract be valid?"""
        return cast(bool, self.settings["rules.require_maintenance_contract"])

    @property
    def lists_contracts(self) -> bool:
        """Does the policy state contract dates (``rules.contracts``)? Then they are the only source of a contract:
        a host no entry names has none (``'*'`` covers every host)."""
        return bool(self.settings["rules.contracts"])

    def contract_until(self, host: str) -> tuple[datetime.date, str] | None:
        """The earliest contract end date the policy's ``rules.contracts`` gives ``host`` (by exact name or
        pattern), and the entry it came from; None when no entry names the host."""
        from fnmatch import fnmatchcase

        found = [(datetime.date.fromisoformat(day), name)
                 for name, day in cast(tuple[tuple[str, str], ...], self.settings["rules.contracts"])
                 if name == host or fnmatchcase(host, name)]
        return min(found) if found else None

    @property
    def manual_changes(self) -> Literal["warn", "block"]:
        """What to do about product files changed by hand since the last install."""
        return cast(Literal["warn", "block"], self.settings["rules.manual_changes"])

    @property
    def vars_override(self) -> tuple[str, ...]:
        """Playbook variables an inventory may set to another value than the install's configuration says
        (``vars_from``); any other such override is refused at plan time."""
        return cast(tuple[str, ...], self.settings["rules.vars_override"])

    @property
    def approvals_required(self) -> int:
        """Number of distinct engineers who must approve."""
        return cast(int, self.settings["approvals.required"])

    @property
    def allow_self_approval(self) -> bool:
        """May the requester approve their own plan?"""
        return cast(bool, self.settings["approvals.allow_self_approval"])

    @property
    def allow_unsigned_plans(self) -> bool:
        """May a plan go without its requester's signature (the operator who runs it then counts as requester)?"""
        return cast(bool, self.settings["approvals.allow_unsigned_plans"])

    @property
    def allowed_signers(self) -> str | None:
        """Approvers' OpenSSH allowed_signers file as written (see resolve_path)."""
        return cast(str | None, self.settings["approvals.allowed_signers"])

    @property
    def audit_signers(self) -> str | None:
        """Operators' allowed_signers for audit checkpoints as written; None: the approvers' file."""
        value = self.settings["audit.allowed_signers"]
        return cast(str | None, value if value is not None else self.settings["approvals.allowed_signers"])

    @property
    def audit_syslog(self) -> bool:
        """Does each host also send every run's witnessed checkpoint to its local syslog (for a SIEM)?"""
        return cast(bool, self.settings["audit.syslog"])

    @property
    def trusted_signers(self) -> str | None:
        """Vendor catalog keys' allowed_signers file as written (see resolve_path)."""
        return cast(str | None, self.settings["catalog.trusted_signers"])

    @property
    def access_default_hours(self) -> float:
        """How long an engineer's access grant lasts when ``access grant`` is given no --hours."""
        return cast(float, self.settings["access.default_hours"])

    @property
    def access_max_hours(self) -> float:
        """The longest access grant ``access grant --hours`` may ask for."""
        return cast(float, self.settings["access.max_hours"])

    def response_hours(self, level: int) -> float:
        """The response-time target, in hours, for an incident of severity ``level`` (1 to 4)."""
        return cast(tuple[float, ...], self.settings["severity.response_hours"])[level - 1]


_PATHS = {setting.path: setting for setting in SCHEMA}
_MAX_DEPTH = 16


def default_policy_path() -> Traversable:
    """The policy file shipped inside the package (also inside an installed wheel)."""
    return files("version_policy").joinpath("default-policy.yaml")


def read_small_text(path: str | os.PathLike[str] | None, default: Traversable, *, unreadable: str,
                    too_large: str) -> tuple[str, bytes, str]:
    """(source, bytes, text) of a small UTF-8 file; None means ``default``. Errors are PolicyErrors
    naming the file; ``unreadable`` gets the OS reason at ``{}``."""
    source = str(default) if path is None else os.fspath(path)
    try:
        with (default.open("rb") if path is None else open(source, "rb")) as fh:
            content = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as error:
        raise PolicyError(unreadable.format(error.strerror or error), path=source) from None
    if len(content) > MAX_POLICY_BYTES:
        raise PolicyError(too_large, path=source)
    try:
        return source, content, content.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("the file is not UTF-8 text; save it as UTF-8", path=source) from None


def load_policy(path: str | os.PathLike[str] | None = None) -> Policy:
    """Read, check and validate a policy file; None means the shipped default policy.

    Raises ``PolicyError`` naming the file (and key) and saying what to do.
    """
    source, content, text = read_small_text(
        path, default_policy_path(),
        unreadable="cannot read the policy file ({}); check the path and its permissions",
        too_large="the file is larger than 1 MiB; a policy is a few lines of YAML, check that this is the right file")
    data = _safe_yaml(text, source)
    if path is not None:
        source = os.path.abspath(source)  # trust files resolve against it: the same wherever the command runs
    settings = MappingProxyType(_validate(data, source))
    policy = Policy(source, hashlib.sha256(content).hexdigest(), settings)
    read: dict[str, TrustFile] = {}  # one file named by two keys (approvals' and audit's signers) is read once
    return Policy(source, policy.digest, settings, tuple(_trust_file(policy, key, read) for key in TRUST_FILE_KEYS))


def _trust_file(policy: Policy, key: str, read: dict[str, TrustFile]) -> TrustFile:
    """The file ``key`` names, resolved against the policy file, hashed (a file this large is no signer list);
    ``read``: the files this policy load read already, by path (a file is read once)."""
    named = policy.settings.get(key)
    if named is None:
        return TrustFile(key, None, None, "not set")
    where = os.path.abspath(policy.resolve_path(str(named)))
    if where in read:
        return replace(read[where], key=key)
    read[where] = _read_trust_file(key, where)
    return read[where]


def _read_trust_file(key: str, where: str) -> TrustFile:
    limit = 8 * MAX_POLICY_BYTES
    try:
        with open(where, "rb") as fh:
            content = fh.read(limit + 1)
    except FileNotFoundError:
        return TrustFile(key, where, None, "missing")
    except OSError as error:
        return TrustFile(key, where, None, f"unreadable: {error.strerror or error}")
    if len(content) > limit:
        return TrustFile(key, where, hashlib.sha256(content).hexdigest(), f"larger than {limit} bytes")
    return TrustFile(key, where, hashlib.sha256(content).hexdigest(), "read", content)


# libyaml when the installed PyYAML has it: the same grammar, ten times faster. A file it cannot
# parse is parsed again by the pure-Python loader, whose error messages (and lines) are the ones shown.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _safe_yaml(text: str, source: str) -> object:
    """Refuse anchors, aliases, deep nesting and duplicate keys, then load with the safe loader."""
    try:
        try:
            return _checked_load(text, source, _FAST_LOADER)
        except yaml.YAMLError:
            return _checked_load(text, source, yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise PolicyError(f"{where}not valid YAML ({problem}); fix the YAML syntax",
                          path=source) from None


def _checked_load(text: str, source: str, loader: Any) -> object:
    """One pass of checks (tokens, then nodes) and the load, with the given loader class."""
    depth = 0
    for token in yaml.scan(text, Loader=loader):
        if isinstance(token, (yaml.AnchorToken, yaml.AliasToken)):
            raise PolicyError(f"line {token.start_mark.line + 1}: YAML anchors and aliases "
                              "(& and *) are not allowed in a policy; write each value out",
                              path=source)
        if isinstance(token, (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken,
                              yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)):
            depth += 1
            if depth > _MAX_DEPTH:
                raise PolicyError(f"line {token.start_mark.line + 1}: the YAML is nested "
                                  f"more than {_MAX_DEPTH} levels deep; a policy is "
                                  "sections of keys", path=source)
        elif isinstance(token, (yaml.BlockEndToken, yaml.FlowMappingEndToken,
                                yaml.FlowSequenceEndToken)):
            depth -= 1
    _refuse_duplicates(yaml.compose(text, Loader=loader), "", source)
    data: object = yaml.load(text, Loader=loader)
    return data


def _refuse_duplicates(node: object, where: str, source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            name = f"{where}.{key}" if where else key
            if key in seen:
                raise PolicyError(f"the key is given twice (again on line "
                                  f"{key_node.start_mark.line + 1}); keep only one",
                                  path=source, key=name)
            seen.add(key)
            _refuse_duplicates(value_node, name, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicates(item, f"{where}[{index}]", source)


def _show(value: object) -> str:
    text = ascii(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _children(prefix: str) -> list[str]:
    return list(dict.fromkeys(p[len(prefix):].split(".")[0] for p in _PATHS
                              if p.startswith(prefix)))


def _check(setting: Setting, value: object, source: str) -> object:
    try:
        return setting.check(value)
    except _Invalid as invalid:
        raise PolicyError(f"expected {invalid}, got {_show(value)}; {_FIX}",
                          path=source, key=setting.path) from None


def _walk(mapping: dict[object, object], prefix: str, found: dict[str, object],
          source: str) -> None:
    known = _children(prefix)
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if not isinstance(key, str) or key not in known:
            section = f"in {prefix.rstrip('.')}" if prefix else "at the top level"
            raise PolicyError(f"unknown key; the known keys {section} are "
                              f"{', '.join(known)}; fix its spelling or remove it",
                              path=source, key=_show(path) if not path.isprintable() else path)
        if path in _PATHS:
            found[path] = value
        elif isinstance(value, dict):
            _walk(value, path + ".", found, source)
        elif value is not None:  # "rules:" with nothing under it is an empty section
            raise PolicyError(f"expected a section of keys ({', '.join(_children(path + '.'))})"
                              f", got {_show(value)}; indent its keys under it", path=source,
                              key=path)


def _validate(data: object, source: str) -> dict[str, object]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"expected a mapping of sections ({', '.join(_children(''))}) at the "
                          f"top level, got {_show(data)}; see the default policy",
                          path=source)
    if "format" in data:
        _check(_PATHS["format"], data["format"], source)
    found: dict[str, object] = {}
    _walk(data, "", found, source)
    return {setting.path: _check(setting, found[setting.path], source)
            if setting.path in found else setting.default for setting in SCHEMA}
