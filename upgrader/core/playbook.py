"""Playbooks: how one product is upgraded (version source, preserved paths, stop/start, probes).

``load_playbook`` validates a ``playbooks/*.yaml`` file on load and names the file and key of
every error. ``Playbook.render`` substitutes ``${var}`` placeholders for one host and returns
the plain JSON-ready spec that goes into the plan (so the plan's digest covers the exact
commands) and, from there, to the host agent. Nothing here runs anything.

In a shell command (every ``command:`` key) a ``${var}`` becomes its value as one shell word,
quoted: a value such as ``$(rm -rf x)`` or ``a; b`` from an inventory is passed as that text and
never run. Write ``${var}`` bare in commands, not inside quotes of your own.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, cast

from .document import Section, load_yaml
from .errors import InputError
from .shapes import PlaybookSpec, PreserveSpec, ProbeSpec, ProcessSpec, VarsFromSpec

__all__ = ["Playbook", "load_playbook", "find_playbook", "operator_playbook", "shipped_playbooks_dir", "PROBE_TYPES",
           "PHASE_HOOKS", "SYSTEM_PLAYBOOKS", "playbook_roots", "load_operator_playbook"]

PROBE_TYPES = ("process", "tcp", "http", "log", "command")
PHASE_HOOKS = ("before_stop", "after_stop", "after_install", "after_start", "after_commit", "after_rollback")
PRESERVE_KINDS = ("config", "data", "cache")
#: the inspection's thresholds, name -> (default, "max" = warn above | "min" = warn below, what it measures)
THRESHOLDS: dict[str, tuple[float, str, str]] = {
    "disk_used_pct": (85, "max", "disk use of the install dir's file system (%)"),
    "memory_available_pct": (10, "min", "memory available (% of total)"),
    "load_per_cpu": (2.0, "max", "1-minute load average per CPU"),
    "file_max": (65536, "min", "fs.file-max (file handles of the whole system)"),
    "open_files": (65536, "min", "open files limit (ulimit -n) of the product's process, else of the agent"),
    "processes": (4096, "min", "processes limit (ulimit -u) of the product's process, else of the agent"),
    "somaxconn": (1024, "min", "net.core.somaxconn (listen backlog)"),
    "tcp_max_syn_backlog": (1024, "min", "net.ipv4.tcp_max_syn_backlog"),
    "max_map_count": (65530, "min", "vm.max_map_count"),
    "log_errors": (0, "max", "lines matching ERROR/SEVERE/FATAL/Exception in the last lines of the logs"),
    "heap_used_pct": (85, "max", "JVM heap used (% of -Xmx)"),
    "heap_max_pct_ram": (75, "max", "JVM -Xmx (% of the host's RAM)"),
    "gc_time_pct": (5, "max", "time the JVM spent in garbage collection (% of its uptime)"),
    "connector_threads_pct": (80, "max", "HTTP connector threads (% of maxThreads)"),
    "share_5xx_pct": (1, "max", "5xx answers in the last hour (% of requests)"),
    "p95_ms": (2000, "max", "95th percentile response time in the last hour (ms)"),
    "network_util_pct": (70, "max", "busiest interface's use of its link speed (%)"),
    "network_errors_per_s": (0, "max", "interface errors per second (receive + transmit)"),
    "security_updates": (0, "max", "pending security updates of the OS"),
}


def shipped_playbooks_dir() -> Path:
    """The playbooks that ship with upgrader (inside the wheel, or the checkout's playbooks/)."""
    here = Path(__file__).resolve().parent.parent  # upgrader/
    installed = here / "_playbooks"
    return installed if installed.is_dir() else here.parent / "playbooks"


def find_playbook(name: str, search: list[Path] | None = None) -> Path:
    """A path as given (an operator's own ``--playbook FILE`` on the command line), or ``NAME`` looked up as
    ``NAME.yaml`` in ``search`` then the shipped ones. An inventory's playbook goes through ``operator_playbook``."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        return Path(name)
    dirs = [*(search or []), shipped_playbooks_dir()]
    for d in dirs:
        for ext in (".yaml", ".yml"):
            p = d / f"{name}{ext}"
            if p.is_file():
                return p
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.y*ml")})
    raise InputError(f"no playbook named {name!r}", hint=f"known playbooks: {', '.join(known) or 'none'}; "
                     "or give a path to a .yaml file")


#: a playbook's name in an inventory: letters, digits, '.', '_' and '-' (never a path)
_PLAYBOOK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def operator_playbook(name: str, roots: list[tuple[Path, str]], *, where: str | None = None,
                      key: str | None = None) -> tuple[Path, str]:
    """The playbook an inventory names, from the operator's roots only: ``(path, which root)``.

    ``roots`` are ``(directory, label)`` in order (``HOME/playbooks``, ``/etc/upgrader/playbooks``, then the
    shipped ones). A playbook is run as the service account on every host: it is the operator's, like the
    policy, never a file beside the requester's inventory nor a path the inventory gives (InputError, exit 2)."""
    if not _PLAYBOOK_NAME.fullmatch(name) or name.endswith((".yaml", ".yml")):
        raise InputError(f"playbook {name!r} is a path, not a playbook name: an inventory names a playbook by name "
                         "only (e.g. 'tomcat'); upgrader takes it from the operator's playbook directories",
                         path=where, key=key,
                         hint="write the name only, and put the playbook in HOME/playbooks/NAME.yaml or "
                              "/etc/upgrader/playbooks/NAME.yaml")
    for directory, label in roots:
        for ext in (".yaml", ".yml"):
            p = directory / f"{name}{ext}"
            if p.is_file():
                return p, label
    known = sorted({p.stem for d, _ in roots if d.is_dir() for p in d.glob("*.y*ml")})
    raise InputError(f"no playbook named {name!r} in the operator's playbooks ("
                     + ", ".join(str(d) for d, _ in roots) + ")", path=where, key=key,
                     hint=f"known playbooks: {', '.join(known) or 'none'}; put NAME.yaml in HOME/playbooks/ or "
                          "/etc/upgrader/playbooks/")


@dataclass(frozen=True)
class Playbook:
    path: Path
    digest: str
    name: str
    product: str
    spec: PlaybookSpec   # validated, still with ${var} placeholders
    defaults: dict[str, object]
    #: the optional ``inspect:`` block (configs, logs, thresholds, ...); not part of the plan's spec
    inspect: dict[str, object] = field(default_factory=dict)
    #: ``vars_from:``: where a variable's value lives in the install's own configuration (``config_vars``)
    vars_from: dict[str, VarsFromSpec] = field(default_factory=dict)

    def render(self, variables: Mapping[str, object]) -> PlaybookSpec:
        values = {**{k: str(v) for k, v in self.defaults.items()}, **{k: str(v) for k, v in variables.items()}}
        return cast(PlaybookSpec, _substitute(self.spec, values, self.path, ""))

    @property
    def preserve(self) -> list[PreserveSpec]:
        return list(self.spec["preserve"])


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(value: object, values: Mapping[str, str], path: Path, key: str, shell: bool = False) -> object:
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in values:
                raise InputError(f"uses ${{{name}}}, which is not defined", path=str(path), key=key or None,
                                 hint=f"define '{name}' under the host's vars in the inventory or the playbook's vars")
            # the value of a variable is data: inside a shell command it stays one literal word
            return shlex.quote(values[name]) if shell else values[name]
        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, values, path, f"{key}.{k}" if key else k, shell=k == "command")
                for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values, path, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _relpath(s: Section, name: str) -> str:
    value = s.str(name)
    parts = Path(value).parts
    if value.startswith("/") or ".." in parts or value in (".", ""):
        raise s.error(name, f"must be a path relative to the install dir, inside it, got {value!r}")
    return value.rstrip("/")


def _dur(text: str) -> float:
    from .document import parse_duration

    return parse_duration(text)


def _process(s: Section | None) -> ProcessSpec | None:
    """``process:``: how the host agent finds the server's process without a pid file (many servers write none
    unless told to): the process whose command line holds every argument of ``cmdline_contains`` (whole
    arguments; one of the form ``NAME=/path`` also matches the same directory reached through links), whose last
    argument is ``cmdline_last`` when given, and which, when one of ``ports`` listens, is the one that holds it."""
    if s is None:
        return None
    args = s.str_list("cmdline_contains")
    if not args or any(not a.strip() for a in args):
        raise s.error("cmdline_contains", "give at least one non-empty argument")
    out: dict[str, Any] = {"cmdline_contains": args}
    if s.has("cmdline_last"):
        out["cmdline_last"] = s.str("cmdline_last")
    out["ports"] = [str(x) for x in s.get("ports", list, [], "a list of ports")]
    s.done()
    return cast(ProcessSpec, out)


def _probe(s: Section, process: ProcessSpec | None = None) -> ProbeSpec:
    kind = s.choice("type", PROBE_TYPES)
    p: ProbeSpec = {"type": kind, "name": s.str("name", kind)}
    if kind == "process":
        if s.has("pid_file"):
            p["pid_file"] = _relpath(s, "pid_file")
        elif process is not None:
            p["process"] = process  # found by its command line (the playbook's process:)
        else:
            raise s.error("pid_file", "a process probe needs 'pid_file:', or the playbook a 'process:' section "
                                      "that finds the server by its command line")
    elif kind == "tcp":
        p["port"] = cast("int | str", s.get("port", (int, str), describe="a port number or ${port}"))
        p["host"] = s.str("host", "127.0.0.1")
    elif kind == "http":
        p["url"] = s.str("url", pattern=r"https?://\S+", describe="an http:// or https:// URL")
        p["status"] = s.int("status", 200, minimum=100, maximum=599)
        if s.has("body"):
            p["body"] = s.str("body")
        if s.has("contains"):
            p["contains"] = s.str("contains")
        p["timeout"] = s.duration("timeout", 2)
    elif kind == "log":
        p["file"] = _relpath(s, "file")
        if any(c in str(Path(p["file"]).parent) for c in "*?["):
            raise s.error("file", "only the file name may hold a pattern (*, ?, [...]), not the directories: "
                                  f"got {p['file']!r}")
        for k in ("absent", "present"):
            if s.has(k):
                pattern = s.str(k)
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise s.error(k, f"not a valid regular expression: {e}") from None
                p[k] = pattern
        if "absent" not in p and "present" not in p:
            raise s.error(None, "a log probe needs 'absent:' or 'present:' (a regular expression)")
    elif kind == "command":
        p["command"] = s.str("command")
        p["exit"] = s.int("exit", 0)
        p["timeout"] = s.duration("timeout", 10)
    s.done()
    return p


def _inspect(s: Section | None) -> dict[str, object]:
    """``inspect:``: configs and logs (globs in the install dir), error_pattern, log_lines, thresholds."""
    assert s is not None
    out: dict[str, Any] = {}
    for key in ("configs", "logs"):
        if s.has(key):
            globs = s.str_list(key)
            for i, g in enumerate(globs):
                if g.startswith("/") or ".." in Path(g).parts:
                    raise s.error(f"{key}[{i}]", f"must be a pattern relative to the install dir, got {g!r}")
            out[key] = globs
    if s.has("error_pattern"):
        try:
            re.compile(s.str("error_pattern"))
        except re.error as e:
            raise s.error("error_pattern", f"not a valid regular expression: {e}") from None
        out["error_pattern"] = s.str("error_pattern")
    out["log_lines"] = s.int("log_lines", 2000, minimum=1, maximum=100000)
    if s.has("access_log"):
        a = s.section("access_log")
        assert a is not None
        files = a.str_list("files")
        for i, g in enumerate(files):
            if g.startswith("/") or ".." in Path(g).parts:
                raise a.error(f"files[{i}]", f"must be a pattern relative to the install dir, got {g!r}")
        fmt = a.str("format", "common")
        if "%t" not in fmt and fmt not in ("common", "combined"):
            raise a.error("format", "needs %t (the request's time), e.g. '%h %l %u %t \"%r\" %s %b %D', "
                                    "or common / combined")
        out["access_log"] = {"files": files, "format": fmt,
                             "d_unit": a.choice("d_unit", ("microseconds", "milliseconds"), "microseconds")}
        a.done()
    from .config_vars import parse_vars_from

    out["settings"] = parse_vars_from(s.section("settings", {}))
    out["setting_defaults"] = {str(k): str(v) for k, v in s.mapping("setting_defaults", {}).items()}
    out["sample_seconds"] = s.int("sample_seconds", 2, minimum=1, maximum=30)
    t = s.section("thresholds", {})
    assert t is not None
    out["thresholds"] = {}
    for name in THRESHOLDS:  # every name is read, so an unknown key's error lists them all
        value = t.get(name, (int, float), None, "a number")
        if value is not None:
            out["thresholds"][name] = value
    t.done()
    s.done()
    return out


def load_playbook(path: str | Path) -> Playbook:
    p = Path(path)
    raw = p.read_bytes() if p.is_file() else None
    data = load_yaml(p, what="playbook")
    from .text_safety import refuse_control

    refuse_control(data, path=str(p), what="a playbook")  # nothing hidden from the approver's terminal
    s = Section(data, source=str(p), what="a playbook")
    s.int("format", 1, minimum=1, maximum=1)
    spec: dict[str, Any] = {}
    name = s.str("name", p.stem)
    product = s.str("product")
    s.str("description", "")
    defaults = s.mapping("vars", {})
    from .config_vars import parse_vars_from

    vars_from = parse_vars_from(s.section("vars_from", {}))

    v = s.section("version")
    assert v is not None
    version: dict[str, Any] = {}
    if v.has("file") == v.has("command"):
        raise v.error(None, "give exactly one of 'file:' (a file in the install dir) or 'command:'")
    if v.has("file"):
        version["file"] = _relpath(v, "file")
        if v.has("member"):  # a file inside a zip or jar archive, e.g. a Java server's ServerInfo.properties
            member = v.str("member")
            if member.startswith("/") or ".." in member.split("/") or not member.strip("/"):
                raise v.error("member", f"must be a path inside the archive, got {member!r}")
            version["member"] = member
    else:
        version["command"] = v.str("command")
        version["timeout"] = v.duration("timeout", 30)
    pattern = v.str("pattern", r"^\s*(\S+)")
    try:
        if re.compile(pattern).groups > 1:
            raise v.error("pattern", "use at most one capture group (the version)")
    except re.error as e:
        raise v.error("pattern", f"not a valid regular expression: {e}") from None
    version["pattern"] = pattern
    v.done()
    spec["version"] = version

    preserve = []
    for item in s.sections("preserve", [], what="preserved path"):
        preserve.append({"path": _relpath(item, "path"), "kind": item.choice("kind", PRESERVE_KINDS, "config")})
        item.done()
    paths = [x["path"] for x in preserve]
    for a in paths:
        for b in paths:
            if a != b and (b + "/").startswith(a + "/"):
                raise s.error("preserve", f"{b!r} lies inside {a!r}; list only the outer path")
    spec["preserve"] = preserve

    process = _process(s.section("process", None))
    if process is not None:
        spec["process"] = process
    stop = s.section("stop")
    assert stop is not None
    spec["stop"] = {"command": stop.str("command"), "timeout": stop.duration("timeout", 60),
                    "pid_file": _relpath(stop, "pid_file") if stop.has("pid_file") else None,
                    "ports": [str(x) for x in stop.get("ports", list, [], "a list of ports")],
                    "force": stop.bool("force", True), "kill_wait": stop.duration("kill_wait", 5)}
    if process is not None:
        spec["stop"]["process"] = process  # stop waits for that process too, and signals it after the timeout
    stop.done()
    start = s.section("start")
    assert start is not None
    spec["start"] = {"command": start.str("command"), "timeout": start.duration("timeout", 60)}
    start.done()

    obs = s.section("observe")
    assert obs is not None
    spec["observe"] = {"window": obs.duration("window", 10), "interval": obs.duration("interval", 1),
                       "start_timeout": obs.duration("start_timeout", 60),
                       "probes": [_probe(x, process) for x in obs.sections("probes", what="probe")]}
    if not spec["observe"]["probes"]:
        raise obs.error("probes", "at least one probe is needed: without one, 'healthy' means nothing")
    obs.done()

    backup = s.section("backup", {})
    assert backup is not None
    spec["backup"] = {"keep": backup.int("keep", 3, minimum=1, maximum=100)}
    backup.done()

    hooks = s.section("hooks", {})
    assert hooks is not None
    spec["hooks"] = {}
    for hook in PHASE_HOOKS:
        cmds = []
        for h in hooks.sections(hook, [], what="hook"):
            cmds.append({"command": h.str("command"), "timeout": h.duration("timeout", 300)})
            h.done()
        if cmds:
            spec["hooks"][hook] = cmds
    hooks.done()

    spec["on_resume"] = s.choice("on_resume", ("rollback", "complete"), "rollback")

    checks = s.section("preflight", {})
    assert checks is not None
    ascii_dirs = checks.str_list("ascii_dirs", [])
    for i, value in enumerate(ascii_dirs):
        parts = Path(value).parts
        if value.startswith("/") or ".." in parts or value.strip("/") in (".", "") or "\x00" in value:
            raise checks.error(f"ascii_dirs[{i}]", f"must be a directory relative to the install dir, inside it, "
                                                   f"got {value!r}")
    spec["preflight"] = {"ascii_dirs": [d.rstrip("/") for d in ascii_dirs],
                         "min_free": checks.int("min_free_mb", 0, minimum=0)}
    checks.done()
    inspect = _inspect(s.section("inspect", {}))
    s.done()
    digest = hashlib.sha256(raw or b"").hexdigest()
    return Playbook(path=p, digest=digest, name=name, product=product, spec=cast(PlaybookSpec, spec),
                    defaults=defaults,
                    inspect=inspect, vars_from=vars_from)


def template_names(spec: object) -> set[str]:
    """The ${names} a spec uses (for checks and documentation)."""
    found: set[str] = set()
    if isinstance(spec, str):
        found.update(m.group(1) for m in _VAR.finditer(spec))
    elif isinstance(spec, dict):
        for v in spec.values():
            found |= template_names(v)
    elif isinstance(spec, list):
        for v in spec:
            found |= template_names(v)
    return found


#: the machine's playbooks, looked up after HOME/playbooks and before the shipped ones (the operator's, like the policy)
SYSTEM_PLAYBOOKS = Path("/etc/upgrader/playbooks")


def playbook_roots(home: str | Path) -> list[tuple[Path, str]]:
    """Where an inventory's playbook NAME is looked up, in order, with the words that name each place:
    HOME/playbooks, the system-wide /etc/upgrader/playbooks, the shipped playbooks. Never beside an inventory."""
    return [(Path(home) / "playbooks", "HOME/playbooks"), (SYSTEM_PLAYBOOKS, "system playbooks"),
            (shipped_playbooks_dir(), "shipped playbooks")]


def load_operator_playbook(name: str, home: str | Path, *, where: str | None = None,
                           key: str | None = None) -> tuple[Playbook, str]:
    """``(Playbook, which root)`` of the playbook NAME from the operator's roots (``playbook_roots``)."""
    from .errors import ApprovalRefused
    from .strict_modes import open_to_others

    path, label = operator_playbook(name, playbook_roots(home), where=where, key=key)
    problem = None if label == "shipped playbooks" else open_to_others(os.path.abspath(path))
    if problem:  # its commands and hooks run on the hosts, often as root: whoever may change it decides what runs
        raise ApprovalRefused(
            f"the operator's playbook {path} ({label}) cannot be trusted: {problem}, so another account could change "
            "the commands and hooks it runs on the hosts; nothing was changed",
            hint="make it yours (or root's) and writable only by you (chown, chmod go-w on the file, its "
                 "directory and each directory above), or keep it where only you can write (/etc/upgrader/playbooks)")
    return load_playbook(Path(os.path.abspath(path))), label
