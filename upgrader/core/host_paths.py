"""The paths in the install dir that a run touches, as the host agent must check them.

A playbook is checked when it is loaded, but a ``${var}`` from an inventory can still turn
``pid_file: ${pid_file}`` into ``../../etc/x`` or ``/etc/x``; so the rendered spec is checked
again here, by name, and the same list goes to the host agent, which resolves each path on the
real file system (links included) and refuses one that leads out (``agent.check_host_paths``).
This module only reads the spec; it does not touch a host.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from .errors import InputError, TransportError
from .exit_codes import ExitCode
from .shapes import PathsToCheck, PlanPackage, PlaybookSpec

__all__ = ["paths_to_check", "check_rendered", "refuse_unsafe", "refuse_agent_unsafe", "HostPathRefused"]


def paths_to_check(spec: PlaybookSpec, package: PlanPackage | None = None) -> PathsToCheck:
    """Every path of a rendered spec (and a patch's ``remove`` list) that the agent will open, move or delete."""
    probes = spec["observe"]["probes"]
    pid_files = [spec["stop"].get("pid_file")] + [p.get("pid_file") for p in probes if p["type"] == "process"]
    return {"preserve": [p["path"] for p in spec["preserve"]],
            "remove": list(package.get("remove", []) if package else []),
            "pid_files": sorted({p for p in pid_files if p}),
            "logs": sorted({p["file"] for p in probes if p["type"] == "log"}),
            "version_file": spec["version"].get("file"),
            "ascii_dirs": list(spec.get("preflight", {}).get("ascii_dirs", [])),
            "copied": [p["path"] for p in spec["preserve"] if p.get("kind") in ("config", "cache")],
            "commands": _commands(spec)}


def _commands(spec: PlaybookSpec) -> dict[str, str]:
    """{key: command} of every playbook command the agent runs (stop, start, hooks, command probes, version)."""
    out = {"stop.command": spec["stop"]["command"], "start.command": spec["start"]["command"]}
    if spec["version"].get("command"):
        out["version.command"] = spec["version"]["command"]
    for name, hooks in (spec.get("hooks") or {}).items():
        out.update((f"hooks.{name}[{i}].command", h["command"]) for i, h in enumerate(hooks))
    out.update((f"observe.probes[{i}].command", str(p["command"])) for i, p in enumerate(spec["observe"]["probes"])
               if p["type"] == "command" and p.get("command"))
    return out


def _named(spec: PlaybookSpec) -> list[tuple[str, str]]:
    """(key, value) of every path in a rendered spec."""
    out = [(f"preserve[{i}].path", p["path"]) for i, p in enumerate(spec["preserve"])]
    pid_file = spec["stop"].get("pid_file")
    if pid_file:
        out.append(("stop.pid_file", pid_file))
    for i, p in enumerate(spec["observe"]["probes"]):
        for key in ("pid_file", "file"):
            if p.get(key):
                out.append((f"observe.probes[{i}].{key}", p[key]))
    if spec["version"].get("file"):
        out.append(("version.file", spec["version"]["file"]))
    out += [(f"preflight.ascii_dirs[{i}]", d) for i, d in enumerate(spec.get("preflight", {}).get("ascii_dirs", []))]
    return out


def check_rendered(spec: PlaybookSpec, *, playbook: str, host: str, inventory: str) -> None:
    """Refuse a spec whose paths, once ``${var}`` is substituted, are absolute or climb out with '..'."""
    for key, value in _named(spec):
        parts = PurePosixPath(value).parts
        if value.startswith("/") or ".." in parts or not parts or "\x00" in value:
            raise InputError(f"{key} is {value!r} for host {host} once its variables are substituted: it must be "
                             "a path inside the install dir", path=playbook, key=key,
                             hint=f"correct the variable in {inventory} (hosts.{host}.vars) or in the playbook")


def refuse_unsafe(problems: list[str], *, host: str, inventory: str) -> None:
    """The host agent found paths that lead out of the install dir: a bad-input error naming each."""
    if problems:
        raise InputError(f"host {host}: " + "; ".join(problems), path=inventory,
                         hint="nothing was changed on the host; fix the link or the setting, then plan again")


class HostPathRefused(TransportError):
    """The host agent refused to read the install (or state dir) because of where it lies: a directory above it
    another account can change, or the install dir's own name a link. Bad input (exit 2), nothing read or changed.
    A TransportError all the same where a caller leaves an unreadable host to the run's preflight (the run-time
    gate), which refuses it there again and records the refusal in the run's journal."""

    exit_code = ExitCode.BAD_INPUT


def refuse_agent_unsafe(err: object, *, host: str) -> None:
    """An agent action refused with kind ``unsafe_path``: HostPathRefused with the agent's sentence (it names the
    path, its owner and what to do). Anything else: returns."""
    if getattr(err, "kind", None) == "unsafe_path":
        message = str(getattr(err, "message", err))
        if (getattr(err, "data", None) or {}).get("key") == "state_dir":
            message = f"inventory key hosts.{host}.state_dir: {message}"
        raise HostPathRefused(message, host=host,
                              hint="nothing was read or changed on the host; fix the directory's owner or mode (or "
                                   "install_dir / state_dir in the inventory) as the message says, then try again")
