"""The test suite's fault plugin: fills upgrader.core.faults' empty registry from two test-only variables.

The product registers no fault hook and reads none of these variables; this module exists only in
tests/ and is loaded into a child process by ``sitecustomize.py`` beside it (tests/conftest.py puts
this directory on every test's PYTHONPATH; ``fault_env`` in conftest builds the environment).

UPGRADER_FAULT_KILL_AT=<point>
    ``<phase>:before|started|finished``: SIGKILL the controller when the engine passes that point
    (the first time a phase of that name does). ``agent:<op>:<step>`` (e.g. ``agent:install:swapped``):
    the controller adds ``_test_kill`` to its requests so the host agent kills itself at that step
    (over SSH too: the field travels in the request), and the controller dies when the agent's
    session breaks, as after a power cut. ``agent:<op>:<step>@<word>``: only requests whose ``command`` names
    <word> carry the field (``agent:hook:ran@after_stop``: the hook whose command says ``after_stop``). The agent's
    steps: ``lock:held``, ``receive_commit:checked|committed``, ``prepare:copied|extracted|snapshot``,
    ``install:moved_old|swapped|preserve``, ``start:launched``, ``hook:ran``, ``rollback:built|moved_failed``,
    ``finish:cleanup`` (``test_kill`` in upgrader/hostagent).
UPGRADER_FAULT_EXCHANGE_AT=<point>, UPGRADER_FAULT_EXCHANGE=<dir>\n<a>\n<b>\n<uid>
    the first time the engine passes <point> (any name above, e.g. ``cancel_check:commit``), a child process
    running as <uid> (a local account playing the attacker) exchanges the names <a> and <b> in directory <dir>
    with renameat2(RENAME_EXCHANGE), as a user who can write that directory would; the run then goes on.
    ``agent:replied:<op>``: right after the host agent answered action <op> (e.g. ``receive_check``, just before
    the package upload) -- the moment an attacker watching the host's processes would pick.
UPGRADER_FAULT_STOP_AT=<point>, UPGRADER_FAULT_STOP_PID=<pid>
    the first time the controller passes <point> (``agent:replied:<op>`` as above), SIGKILL process <pid> (a
    test's own sshd) and its children (its live SSH sessions): the host is unreachable from then on.
UPGRADER_FAULT_CUT_AT=<point>, UPGRADER_FAULT_CUT_PID=<pid>
    the first time the controller passes <point> (``agent:request:<op>``: the request of action <op> is about to
    go), SIGKILL the sshd processes of every connection of the sshd <pid> (a test's own sshd; each connection's
    monitor and session process), so the SSH connection that carries the action is cut; the sshd itself keeps
    listening (a retry may connect again).
UPGRADER_FAULT_TRACE=<file>
    append the name of every action the controller sends to a host agent (one line each) to <file>, and
    ``cut:<n>`` when a cut (above) killed n sshd connection processes.
UPGRADER_FAULT_PAUSE_AT=<step>
    ``backup``, ``stop``, ``install``, ``start``, ``observe``, ``commit``: hold the engine (at most 120 s)
    at its Ctrl-C check before that step until the run is cancelled. ``run_started`` and
    ``access_granted``: hold the guide there until Ctrl-C was pressed or the terminal hung up.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

KILL_AT = "UPGRADER_FAULT_KILL_AT"
PAUSE_AT = "UPGRADER_FAULT_PAUSE_AT"
AGENT = "agent:"
EXCHANGE_AT = "UPGRADER_FAULT_EXCHANGE_AT"
EXCHANGE = "UPGRADER_FAULT_EXCHANGE"
_exchanged: list[str] = []
STOP_AT = "UPGRADER_FAULT_STOP_AT"
STOP_PID = "UPGRADER_FAULT_STOP_PID"
_stopped: list[str] = []
CUT_AT = "UPGRADER_FAULT_CUT_AT"
CUT_PID = "UPGRADER_FAULT_CUT_PID"
_cut: list[str] = []
TRACE = "UPGRADER_FAULT_TRACE"


def stop_tree(pid: int, children_only: bool = False) -> int:
    """SIGKILL ``pid`` (unless ``children_only``) and every process whose parent it is (found in /proc); how many."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    killed = 0
    for p in children if children_only else [pid, *children]:
        try:
            os.kill(p, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def cut_connections(listener: int) -> int:
    """SIGKILL the sshd processes of every connection of the sshd ``listener`` (each connection's monitor and its
    session process below it, found in /proc), not the listener and not the programs the sessions run: the
    connections drop as a cut cable would drop them. How many processes were killed."""
    parent: dict[int, int] = {}
    name: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            parent[int(entry)] = int(text.rsplit(")", 1)[1].split()[1])
            name[int(entry)] = text[text.index("(") + 1:text.rindex(")")]
    below, todo = [], [listener]
    while todo:
        p = todo.pop()
        for child, ppid in parent.items():
            if ppid == p and name.get(child, "").startswith("sshd"):
                below.append(child)
                todo.append(child)
    killed = 0
    for p in below:
        try:
            os.kill(p, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def exchange_as(uid: int, directory: str, a: str, b: str) -> None:
    """As account ``uid`` (a forked child that drops root), exchange names ``a`` and ``b`` in ``directory``."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            code = 0 if libc.renameat2(dfd, a.encode(), dfd, b.encode(), 2) == 0 else 2
        finally:
            os._exit(code)
    os.close(dfd)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"the exchange of {a} and {b} in {directory} as uid {uid} failed ({status})")


def _trace(line: str) -> None:
    trace = os.environ.get(TRACE)
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def hook(name: str, **context: Any) -> None:
    """Act on fault point ``name`` as the two variables say (read at each point)."""
    kill = os.environ.get(KILL_AT, "")
    pause = os.environ.get(PAUSE_AT, "")
    at = os.environ.get(EXCHANGE_AT)
    if at and at in (name, f"{name}:{context.get('op')}") and not _exchanged:
        directory, a, b, uid = os.environ[EXCHANGE].split("\n")
        _exchanged.append(name)
        exchange_as(int(uid), directory, a, b)
    stop_at = os.environ.get(STOP_AT)
    if stop_at and stop_at in (name, f"{name}:{context.get('op')}") and not _stopped:
        _stopped.append(name)
        stop_tree(int(os.environ[STOP_PID]))
    cut_at = os.environ.get(CUT_AT)
    if cut_at and cut_at == f"{name}:{context.get('op')}" and not _cut:
        _cut.append(name)
        cut = cut_connections(int(os.environ[CUT_PID]))
        _trace(f"cut:{cut}")
    if name == "agent:request":
        _trace(str(context.get("op")))
    if kill.startswith(AGENT):
        step, _, only = kill[len(AGENT):].partition("@")
        if name == "agent:request" and (not only or only in str(context["request"].get("command", ""))):
            context["request"]["_test_kill"] = step
        elif name == "agent:lost":  # the host-side action died at the kill point: the controller dies too
            _die()
    elif kill and name == kill:
        _die()
    if not pause:
        return
    if name == f"cancel_check:{pause}":
        context["cancel"].wait(120)
    elif name == f"guide:{pause}":
        until = context["until"]
        deadline = time.monotonic() + 120
        while not until() and time.monotonic() < deadline:
            time.sleep(0.05)


def install() -> None:
    """Register ``hook`` in this process (once)."""
    from upgrader.core import faults

    faults.unregister(hook)
    faults.register(hook)
