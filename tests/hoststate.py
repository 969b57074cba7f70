"""What "refused, nothing touched" means, for every test: the whole host, before and after.

``host_state(install_dir, ...)`` records
- every file, directory and link under the install (sha256 or link target, and mode), except the directories
  the running service writes itself (``logs/``, ``run/`` for the sample middleware; ``logs/``, ``temp/``,
  ``work/`` for a Tomcat or TongWeb);
- the service: the content of its pid file, and each running process as (pid, start time), the start time
  being field 22 of ``/proc/PID/stat`` (so a service stopped and started again under the same pid is seen);
- the version it answers (when the caller says how to ask);
- the host agent's whole state directory beside the install (``.upgrader-<name>``): the lock and its content,
  packages staged there, run directories, backups, the ledger of used approvals and catalog serials, the audit
  checkpoints, the installed manifest (the agent's marker file excepted: it is its claim on the directory, made
  when it first looks at an install; a directory with nothing else counts as none);
- optionally this machine's run directories (HOME/runs).

``assert_host_untouched(before, after)`` fails with a message that names what changed (which files were
added, removed or changed, which service process went away, what the lock now holds).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["LEDGER", "WITNESS", "HostState", "assert_host_untouched", "assert_hosts_untouched", "assert_released", "diff",
           "host_state", "lock_audit", "process_start", "take_lock", "tree"]

Digest = dict[str, tuple[str, int]]
MARKER = ".upgrader-state"
WITNESS = "checkpoints.jsonl"   # the audit log's witness on the host (appended at the end of every run)
OPENED = "runs-opened.jsonl"     # the host's own opening record of each run that took its lock
LEDGER = ("approvals-used.jsonl", "catalog-serials.json", WITNESS, OPENED, "runs.jsonl")  # what a run that locked the host records


def tree(root: Path, skip: Iterable[str] = ()) -> Digest:
    """Every file, link and directory under ``root`` (not following links): sha256 or link target, and mode;
    top-level names in ``skip`` (and everything below them) left out."""
    skip = tuple(skip)
    out: Digest = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            try:
                st = p.lstat()
            except FileNotFoundError:  # gone while we looked (a service's own file)
                continue
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link:" + os.readlink(p), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(st.st_mode))
            else:  # a FIFO, socket or device: its kind, never its content
                out[rel] = (f"kind:{stat.S_IFMT(st.st_mode):o}", stat.S_IMODE(st.st_mode))
    return out


def process_start(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (the process's start time in clock ticks since boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(after_name[19])  # fields 3.. follow the name: field 22 is the 20th of them


@dataclass(frozen=True)
class HostState:
    """The whole host as "nothing touched" means it (see the module's doc)."""

    product: Digest
    pid: str | None                        # the service's pid file, as written
    service: tuple[tuple[int, int | None], ...]  # (pid, start time) of each service process
    version: str | None                    # what the service answers (None: down, or not asked)
    agent: Digest | None                   # the agent's whole state dir but its marker (None: there is none)
    lock: str | None                       # the host lock's content, if any
    home_runs: tuple[str, ...] = ()        # this machine's run directories, when asked for
    records: tuple[tuple[str, str], ...] = ()  # the text of the files at the top of the agent's state dir (ledger)

    # the parts older tests name ------------------------------------------------
    @property
    def host_runs(self) -> Digest | None:
        return _below(self.agent, "runs")

    @property
    def staged(self) -> Digest | None:
        return _below(self.agent, "packages")

    @property
    def host_records(self) -> Digest | None:
        """Files at the top of the agent's state dir (used approvals, catalog serials, installed manifest)."""
        if self.agent is None:
            return None
        return {k: v for k, v in self.agent.items() if "/" not in k and v[0] != "dir" and k != "lock"}


def _below(digest: Digest | None, top: str) -> Digest | None:
    if digest is None or top not in digest:
        return None
    return {k[len(top) + 1:]: v for k, v in digest.items() if k.startswith(top + "/")}


def host_state(install_dir: Path, *, state_dir: Path | None = None, pid_file: str | None = "run/server.pid",
               pids: Callable[[], Iterable[int]] | None = None, answers: Callable[[], str | None] | None = None,
               home: Path | None = None, own: Iterable[str] = ("logs", "run")) -> HostState:
    """The whole host of the install at ``install_dir`` now.

    ``state_dir``: the agent's (default ``<parent>/.upgrader-<name>``); ``pid_file``: the service's, relative to
    the install; ``pids``: how to find the service's processes (default: the pid in the pid file); ``answers``: how to
    ask the service its version; ``home``: an upgrader home whose ``runs/`` to list; ``own``: the install's
    top-level directories the running service writes itself (left out of the product)."""
    install_dir = Path(install_dir)
    state = state_dir or install_dir.parent / f".upgrader-{install_dir.name}"
    pid_text = None
    if pid_file:
        path = install_dir / pid_file
        try:
            if stat.S_ISREG(path.lstat().st_mode):  # never open a FIFO (a test puts one there): it would block
                pid_text = path.read_text(encoding="utf-8", errors="replace").strip()
            else:
                pid_text = f"not a regular file: {stat.filemode(path.lstat().st_mode)}"
        except (FileNotFoundError, NotADirectoryError):
            pid_text = None
    if pids is not None:
        found = sorted(pids())
    else:
        found = [int(pid_text)] if pid_text and pid_text.isdigit() else []
    service = tuple((p, process_start(p)) for p in found)
    agent: Digest | None = None
    lock = None
    records: list[tuple[str, str]] = []
    if state.is_dir():
        # the agent's marker of a directory it made or adopted is its claim on the directory, not a change to it
        agent = {k: v for k, v in tree(state).items() if k != MARKER} or None
        for name, (kind, _mode) in sorted((agent or {}).items()):
            if "/" not in name and kind not in ("dir",) and not kind.startswith(("link:", "kind:")):
                text = (state / name).read_text(encoding="utf-8", errors="replace")
                if name == "lock":
                    lock = text
                else:
                    records.append((name, text))
    runs = home / "runs" if home else None
    return HostState(
        product=tree(install_dir, skip=own) if install_dir.is_dir() else {},
        pid=pid_text,
        service=service,
        version=answers() if answers else None,
        agent=agent,
        lock=lock,
        home_runs=tuple(sorted(p.name for p in runs.iterdir())) if runs and runs.is_dir() else (),
        records=tuple(records),
    )


def _tree_diff(what: str, a: Digest | None, b: Digest | None) -> list[str]:
    if a == b:
        return []
    if a is None:
        return [f"{what}: made (now {len(b or {})} entries: {', '.join(sorted(b or {})[:12])})"]
    if b is None:
        return [f"{what}: removed (it had {', '.join(sorted(a)[:12])})"]
    added = sorted(set(b) - set(a))
    removed = sorted(set(a) - set(b))
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    out = []
    for label, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            more = f" and {len(names) - 12} more" if len(names) > 12 else ""
            out.append(f"{what}: {label} {', '.join(names[:12])}{more}")
    return out


def _without_run_record(before: Digest | None, agent: Digest | None, run: str | None) -> Digest | None:
    """The agent state without the record a refused run leaves on the host (runs/<run> and the files directly in
    it; never a staging or backup directory beneath it, nor a runs/ dir with anything else in it)."""
    if agent is None or run is None:
        return agent
    mine = f"runs/{run}"
    kept = {k: v for k, v in agent.items()
            if not (k == mine or (k.startswith(mine + "/") and "/" not in k[len(mine) + 1:] and v[0] != "dir"))}
    if (before is None or "runs" not in before) and not any(k.startswith("runs/") for k in kept):
        kept.pop("runs", None)
    return kept or None


def diff(before: HostState, after: HostState, *, run_record: str | None = None,
         appended: Iterable[str] = ()) -> list[str]:
    """What changed between two states, one line per part (empty: nothing).

    ``run_record``: the id of a refused run whose own record on the host (runs/<id>, the files in it) is expected.
    ``appended``: files at the top of the agent's state dir that the command may have made or appended lines to,
    and nothing else (e.g. ``checkpoints.jsonl``: every run, resume and rollback that reached the host ends by
    appending its audit checkpoint there; ``approvals-used.jsonl``: a run that locked the host spent its approval)."""
    # the host's opening record of each run that took its lock (runs-opened.jsonl) is its own audit, appended even
    # when the run is then refused: allowed everywhere, as long as it is only appended to
    appended = tuple(appended) + ((OPENED,) if OPENED not in appended else ())
    out = []
    after_agent = _without_run_record(before.agent, after.agent, run_record)
    old, new = dict(before.records), dict(after.records)
    for name in appended:
        if name in new and not new[name].startswith(old.get(name, "")):
            out.append(f"agent state dir: {name} was not only appended to ({len(old.get(name, ''))} -> "
                       f"{len(new[name])} bytes)")
        if after_agent is not None:  # judged above: leave it out of the digest comparison
            after_agent = dict(after_agent)
            if before.agent is not None and name in before.agent:
                after_agent[name] = before.agent[name]
            else:
                after_agent.pop(name, None)
            after_agent = after_agent or None
    out += _tree_diff("product files", before.product, after.product)
    out += _tree_diff("agent state dir", before.agent, after_agent)
    for f in fields(HostState):
        if f.name in ("product", "agent", "records"):  # records: part of the agent's digest
            continue
        a, b = getattr(before, f.name), getattr(after, f.name)
        if f.name == "home_runs" and run_record is not None:
            b = tuple(r for r in b if r != run_record)
        if a != b:
            label = {"pid": "service pid file", "service": "service processes (pid, start time)",
                     "version": "version answered", "lock": "host lock", "home_runs": "runs on this machine"}[f.name]
            out.append(f"{label}: {a!r} -> {b!r}")
    return out


def assert_released(before: HostState, after: HostState, what: str = "") -> None:
    """A host that a run locked and then released without changing it (refused after its lock, or Ctrl-C before
    its stop): product files, the service (pid file, processes and their start times), the version it answers and
    the packages staged there as before, no lock, nothing staged left in a run directory; the agent may have kept
    the run's own record (its verified backup) and appended to its ledger (the spent approval, the audit
    checkpoint; the catalog serial recorded)."""
    changes = _tree_diff("product files", before.product, after.product)
    changes += _tree_diff("staged packages", before.staged, after.staged)
    for label, a, b in (("service pid file", before.pid, after.pid),
                        ("service processes (pid, start time)", before.service, after.service),
                        ("version answered", before.version, after.version)):
        if a != b:
            changes.append(f"{label}: {a!r} -> {b!r}")
    if after.lock is not None:
        changes.append(f"host lock: still held: {after.lock}")
    staging = sorted(k for k in after.agent or {} if k.startswith("runs/") and "/staging" in k)
    if staging:
        changes.append(f"agent state dir: staging left: {', '.join(staging[:6])}")
    new = dict(after.records)
    for name, text in before.records:
        if name != "catalog-serials.json" and not new.get(name, "").startswith(text):
            changes.append(f"agent state dir: {name} was not only appended to")
    if changes:
        head = f"{what}: the host was not released untouched" if what else "the host was not released untouched"
        raise AssertionError(head + ":\n  " + "\n  ".join(changes))


def assert_hosts_untouched(before: dict[str, HostState], after: dict[str, HostState], **allowed: Any) -> None:
    """Each host of ``before`` (by name) untouched in ``after``; the message names every host and change."""
    assert set(after) == set(before), f"other hosts: {sorted(before)} -> {sorted(after)}"
    changes = [f"{name}: {c}" for name in sorted(before) for c in diff(before[name], after[name], **allowed)]
    if changes:
        raise AssertionError("hosts were touched:\n  " + "\n  ".join(changes))


#: the host's own record of each run it finished (appended by every finish, a recovery's with nothing to undo too)
RUN_RECORDS = "runs.jsonl"


def without_run(state: HostState, run: str) -> HostState:
    """``state`` but run ``run``'s own record in the agent's state dir (runs/RUN: its state, its steps), which a
    recovery with nothing to undo still writes: its steps (observe) and its end (attack20r6 #3)."""
    from dataclasses import replace

    return replace(state, agent={k: v for k, v in (state.agent or {}).items() if not k.startswith(f"runs/{run}")}
                   or None)


def assert_host_untouched(before: HostState, after: HostState, what: str = "", *, run_record: str | None = None,
                          appended: Iterable[str] = ()) -> None:
    """``after`` is ``before`` in every part; otherwise fail naming each change (``run_record``, ``appended``: what
    the command may have left, see ``diff``)."""
    changes = diff(before, after, run_record=run_record, appended=appended)
    if changes:
        head = f"{what}: the host was touched" if what else "the host was touched"
        raise AssertionError(head + ":\n  " + "\n  ".join(changes))


def lock_audit(run_id: str, kind: str = "run", **fields: Any) -> dict[str, Any]:
    """The ``audit`` field of a lock request as the controller sends it for a run of ``kind`` (run, guided,
    continuation, resume, rollback) and the label the log gives it (RUN, RUN/resume-TIME, RUN/rollback-TIME): the
    host refuses a lock that does not say which kind of run it opens (hostagent/witness.py check_opening)."""
    label = run_id if kind in ("run", "guided") else \
        f"{run_id}/{'rollback' if kind == 'rollback' else 'resume'}-{_label_time()}"
    return {"kind": kind, "as": label, **fields}


def _label_time() -> str:
    import time

    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time_ns() % 10**6:06d}"


def take_lock(call: Callable[..., dict[str, Any]], run_id: str, kind: str = "run", **req: Any) -> dict[str, Any]:
    """The host's lock for run ``run_id`` taken as the controller takes it, through ``call(op, **request)`` (an
    AgentClient's call with the install's fields bound, or ``handle`` wrapped): every changing action of a run is
    refused unless its run holds the lock. Returns the agent's reply (or result)."""
    req.setdefault("controller", "test")
    req.setdefault("user", "test")
    req.setdefault("approvals", [])
    return call("lock", run_id=run_id, audit=lock_audit(run_id, kind, **req.pop("audit", {})), **req)
