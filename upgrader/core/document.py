"""Strict reading of the YAML files users hand us (inventory, playbook, catalog, package.yaml).

``load_yaml`` refuses what safe loading alone lets through and we never want: anchors and
aliases (billion-laughs), huge files, non-UTF-8 text, and it turns every yaml error into an
``InputError`` naming the file and line. ``Section`` walks a mapping key by key so that every
error names the file and the dotted key path, and unknown keys are refused with the known ones
listed. This module does no validation of meaning; the loaders that use it do.
"""

from __future__ import annotations

import builtins
import enum
import re
from pathlib import Path
from typing import Callable, Iterable, TypeVar, overload

from .errors import InputError

__all__ = ["load_yaml", "parse_yaml", "Section", "parse_duration", "MAX_YAML_BYTES"]

MAX_YAML_BYTES = 1 << 20
T = TypeVar("T")
D = TypeVar("D")


class _Missing(enum.Enum):
    """No default given: the key is required."""

    MISSING = enum.auto()


_MISSING = _Missing.MISSING


def load_yaml(path: str | Path, *, what: str = "file") -> object:
    """Read and parse one YAML document from ``path``; every failure is an ``InputError``."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise InputError(f"{what} is larger than {MAX_YAML_BYTES} bytes", path=str(p),
                             hint="this does not look like a hand-written file; check the path")
        data = p.read_bytes()
    except IsADirectoryError as e:
        raise InputError(f"is a directory; expected the {what} file", path=str(p)) from e
    except FileNotFoundError as e:
        raise InputError(f"{what} not found", path=str(p), hint="check the path") from e
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror}", path=str(p)) from e
    return parse_yaml(data, source=str(p), what=what)


def parse_yaml(data: bytes | str, *, source: str, what: str = "file") -> object:
    import yaml  # deferred: keeps `upgrader --help` fast

    if isinstance(data, bytes):
        if len(data) > MAX_YAML_BYTES:
            raise InputError(f"{what} is larger than {MAX_YAML_BYTES} bytes", path=source)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"not UTF-8 text (byte {e.start})", path=source) from e
    else:
        text = data
    try:
        # libyaml when present (ten times faster on an inventory of many hosts); the pure-Python parser
        # words the syntax errors, so that their message and line are the same with or without it
        fast = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            tokens = list(yaml.scan(text, Loader=fast))
        except yaml.YAMLError:
            tokens = list(yaml.scan(text, Loader=yaml.SafeLoader))
        for token in tokens:
            if isinstance(token, (yaml.AliasToken, yaml.AnchorToken)):
                line = token.start_mark.line + 1
                raise InputError(f"line {line}: YAML anchors and aliases (& and *) are not allowed",
                                 path=source, hint="write the values out in full")
        try:
            return yaml.load(text, Loader=fast)
        except yaml.YAMLError:
            return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{where}invalid YAML: {problem}", path=source,
                         hint="fix the YAML syntax at that place") from e


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """'500ms', '30s', '5m', '2h', '1d' or a plain number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s', '5m' or '2h'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration like '30s', '5m' or '2h', got {value!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


class Section:
    """A mapping being read, with its file and dotted key path for error messages."""

    def __init__(self, data: object, *, source: str, keypath: str = "", what: str = "a mapping") -> None:
        if not isinstance(data, dict):
            raise InputError(f"expected {what} (key: value lines), got {_kind(data)}",
                             path=source, key=keypath or None)
        self.data: dict[str, object] = data
        self.source = source
        self.keypath = keypath
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.keypath}.{name}" if self.keypath else name

    def error(self, name: str | None, message: str, hint: str | None = None) -> InputError:
        return InputError(message, path=self.source, key=self.key(name) if name else (self.keypath or None),
                          hint=hint)

    def has(self, name: str) -> bool:
        return name in self.data

    @overload
    def get(self, name: str, kind: type[T], default: _Missing = _MISSING, describe: str | None = None) -> T: ...

    @overload
    def get(self, name: str, kind: type[T], default: D, describe: str | None = None) -> T | D: ...

    @overload
    def get(self, name: str, kind: tuple[type, ...], default: object = _MISSING,
            describe: str | None = None) -> object: ...

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: object = _MISSING,
            describe: str | None = None) -> object:
        self._seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is _MISSING:
                raise self.error(name, "required key is missing", hint=f"add '{name}:' to the file")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            want = describe or " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise self.error(name, f"expected {want}, got {_kind(value)} {_show(value)}")
        return value

    @overload
    def str(self, name: builtins.str, default: _Missing = _MISSING, *, pattern: builtins.str | None = None,
            describe: builtins.str | None = None) -> builtins.str: ...

    @overload
    def str(self, name: builtins.str, default: D, *, pattern: builtins.str | None = None,
            describe: builtins.str | None = None) -> builtins.str | D: ...

    def str(self, name: builtins.str, default: object = _MISSING, *, pattern: builtins.str | None = None,
            describe: builtins.str | None = None) -> object:
        value = self.get(name, builtins.str, default, describe)
        if isinstance(value, builtins.str) and self.data.get(name) is not None:  # a default is not checked
            if not value.strip():
                raise self.error(name, "must not be empty")
            if pattern and not re.fullmatch(pattern, value):
                raise self.error(name, f"expected {describe or 'a value matching ' + pattern}, got {_show(value)}")
        return value

    @overload
    def int(self, name: builtins.str, default: _Missing = _MISSING, *, minimum: builtins.int | None = None,
            maximum: builtins.int | None = None) -> builtins.int: ...

    @overload
    def int(self, name: builtins.str, default: D, *, minimum: builtins.int | None = None,
            maximum: builtins.int | None = None) -> builtins.int | D: ...

    def int(self, name: builtins.str, default: object = _MISSING, *, minimum: builtins.int | None = None,
            maximum: builtins.int | None = None) -> object:
        value = self.get(name, builtins.int, default)
        if isinstance(value, builtins.int):
            if minimum is not None and value < minimum:
                raise self.error(name, f"must be at least {minimum}, got {value}")
            if maximum is not None and value > maximum:
                raise self.error(name, f"must be at most {maximum}, got {value}")
        return value

    @overload
    def bool(self, name: builtins.str, default: _Missing = _MISSING) -> builtins.bool: ...

    @overload
    def bool(self, name: builtins.str, default: D) -> builtins.bool | D: ...

    def bool(self, name: builtins.str, default: object = _MISSING) -> object:
        return self.get(name, builtins.bool, default, "true or false")

    def duration(self, name: builtins.str, default: float | _Missing = _MISSING) -> float:
        self._seen.add(name)
        if name not in self.data or self.data[name] is None:
            if isinstance(default, _Missing):
                raise self.error(name, "required key is missing")
            return float(default)
        try:
            return parse_duration(self.data[name])
        except ValueError as e:
            raise self.error(name, builtins.str(e)) from None

    @overload
    def choice(self, name: builtins.str, choices: Iterable[builtins.str],
               default: _Missing = _MISSING) -> builtins.str: ...

    @overload
    def choice(self, name: builtins.str, choices: Iterable[builtins.str], default: D) -> builtins.str | D: ...

    def choice(self, name: builtins.str, choices: Iterable[builtins.str], default: object = _MISSING) -> object:
        options = list(choices)
        value = self.get(name, builtins.str, default, "one of " + ", ".join(options))
        if value is not default and value not in options:
            raise self.error(name, f"expected one of {', '.join(options)}, got {_show(value)}")
        return value

    def str_list(self, name: builtins.str, default: Iterable[builtins.str] | None | _Missing = _MISSING
                 ) -> list[builtins.str]:
        value = self.get(name, list, default, "a list of strings")
        if value is default:
            return list(default) if default is not None and not isinstance(default, _Missing) else []
        assert isinstance(value, list)
        for i, item in enumerate(value):
            if not isinstance(item, builtins.str) or not item.strip():
                raise self.error(f"{name}[{i}]", f"expected a non-empty string, got {_kind(item)} {_show(item)}")
        return list(value)

    def section(self, name: builtins.str, default: object = _MISSING, what: builtins.str = "a mapping"
                ) -> Section | None:
        self._seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is _MISSING:
                raise self.error(name, "required key is missing")
            if default is None:
                return None
            return Section(default, source=self.source, keypath=self.key(name), what=what)
        return Section(self.data[name], source=self.source, keypath=self.key(name), what=what)

    def sections(self, name: builtins.str, default: list[object] | None | _Missing = _MISSING,
                 what: builtins.str = "a mapping") -> list[Section]:
        items = self.get(name, list, default, f"a list of {what}s")
        return [Section(item, source=self.source, keypath=f"{self.key(name)}[{i}]", what=what)
                for i, item in enumerate(items or [])]

    def mapping(self, name: builtins.str, default: dict[builtins.str, object] | None | _Missing = _MISSING
                ) -> dict[builtins.str, object]:
        value = self.get(name, dict, default, "a mapping")
        for k in value or {}:
            if not isinstance(k, builtins.str):
                raise self.error(name, f"keys must be strings, got {_kind(k)} {_show(k)}")
        return dict(value or {})

    @overload
    def convert(self, name: builtins.str, fn: Callable[[object], T], default: _Missing = _MISSING) -> T: ...

    @overload
    def convert(self, name: builtins.str, fn: Callable[[object], T], default: D) -> T | D: ...

    def convert(self, name: builtins.str, fn: Callable[[object], T], default: object = _MISSING) -> object:
        """Read a value and convert it; a ValueError of ``fn`` becomes an error naming the key."""
        self._seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is _MISSING:
                raise self.error(name, "required key is missing")
            return default
        try:
            return fn(self.data[name])
        except ValueError as e:
            raise self.error(name, builtins.str(e)) from None

    def done(self) -> None:
        """Refuse any key that was not read: a typo must not be silently ignored."""
        unknown = [k for k in self.data if k not in self._seen]
        if unknown:
            known = ", ".join(sorted(self._seen)) or "(none)"
            raise self.error(str(unknown[0]), "unknown key", hint=f"known keys here: {known}")


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping"}


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
