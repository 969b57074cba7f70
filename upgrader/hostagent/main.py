"""Requests in, replies out: the table of actions, the per-run action lock, the session loop.

The controller sends one JSON request (base64 in ``argv[1]``, or on stdin) and reads one JSON reply on
stdout; or, with ``--serve``, one request per line and one reply per line until EOF. A ``batch`` request carries
several requests in one round trip (handle_batch).
"""

import errno
import importlib
import json
import os
import signal
import sys
import time

from .common import AgentError
from .state import (Paths, ancestor_problem, state_place_problem, check_install, check_state_dir, check_state_markers, ensure_state_dir,
                    ledger_dirs)


#: action -> (module, function). A module is imported when a request first needs it, so a session that only
#: reads (a plan's facts, the trust gate, a witness) does not compile the modules of the others; a run's
#: actions are imported together at its lock (RUN_MODULES), before anything is stopped.
OPS = {"facts": ("facts", "op_facts"), "lock": ("lock", "op_lock"), "unlock": ("lock", "op_unlock"),
       "prepare": ("prepare", "op_prepare"), "stop": ("service", "op_stop"), "install": ("install", "op_install"),
       "start": ("service", "op_start"), "observe": ("probes", "op_observe"), "rollback": ("rollback", "op_rollback"),
       "recovery_check": ("recovery", "op_recovery_check"), "backup_check": ("recovery", "op_backup_check"),
       "verify_tree": ("finish", "op_verify_tree"), "finish": ("finish", "op_finish"), "hook": ("service", "op_hook"),
       "state": ("facts", "op_state"), "receive_check": ("receive", "op_receive_check"),
       "receive_commit": ("receive", "op_receive_commit"), "access_read": ("access", "op_access_read"),
       "access_write": ("access", "op_access_write"), "inspect": ("inspection", "op_inspect"),
       "read_vars": ("config_vars", "op_read_vars"), "prove": ("probes", "op_prove"),
       "host_trust": ("hosttrust", "op_host_trust"),
       "witness": ("witness", "op_witness"), "witness_read": ("witness", "op_witness_read")}

#: the modules of a run's actions, imported when its lock is taken (in preflight): none is first compiled
#: between the service's stop and its start
RUN_MODULES = ("facts", "hosttrust", "receive", "prepare", "service", "install", "probes", "finish", "rollback",
               "recovery", "witness", "product")
#: the standard library modules those actions import when first used, imported at the lock too: an HTTP probe's
#: urllib.request (with http.client, ssl and email) costs 70-130 ms to import on a busy host, which an observe
#: right after start would otherwise add to the downtime
RUN_STDLIB = ("urllib.request", "urllib.error", "selectors", "subprocess", "shlex", "fnmatch")


def action(name):
    """The function that handles the action ``name`` (its module imported on first use), or None."""
    where = OPS.get(name)
    if where is None:
        return None
    if name == "lock":
        for module in RUN_MODULES:
            importlib.import_module("." + module, __package__)
        for module in RUN_STDLIB:
            importlib.import_module(module)
    return getattr(importlib.import_module("." + where[0], __package__), where[1])


MUTATING = ("prepare", "stop", "install", "start", "rollback", "finish", "hook")
#: the actions of a run this host keeps in the run's own account of its steps (witness.note_step), read at its finish
STEP_OPS = MUTATING
#: the actions that read or write the state dir: each checks it again (check_state_dir) when it starts, not only
#: the run's lock in preflight (whoever can write its parent could have swapped it for a link since)
STATE_OPS = MUTATING + ("lock", "unlock", "receive_check", "receive_commit", "state", "verify_tree",
                        "recovery_check", "backup_check", "witness")

#: the actions that read or change the install dir: each applies the rule to the install dir, its last component
#: included, and to the state dirs' parents, before it reads anything (check_install)
INSTALL_OPS = STATE_OPS + ("facts", "read_vars", "prove", "inspect", "observe", "witness_read")
#: the actions of a run that may come after its stop: an install dir found a link there needs a person
AFTER_STOP = ("stop", "install", "start", "rollback", "finish", "hook", "observe", "verify_tree")


def step_recorder(req):
    """witness.note_step for an action the host keeps in the run's own account of its steps, else None."""
    if req.get("op") not in STEP_OPS:
        return None
    from .witness import note_step
    return note_step


class OpLock(object):
    """One mutating action per run and host at a time: a retry after a lost connection waits for
    the first attempt (which may still be running on the host) and then sees its effect."""

    def __init__(self, req):
        self.fd = None
        if req.get("op") in MUTATING and req.get("run_id") and req.get("install_dir"):
            paths = Paths(req)
            check_state_dir(paths)
            ensure_state_dir(paths.state)
            directory = paths.run()
            for d in (os.path.join(paths.state, "runs"), directory):
                if not os.path.isdir(d):
                    os.makedirs(d, 0o700, exist_ok=True)
            self.path = os.path.join(directory, ".op.lock")

    def __enter__(self):
        if hasattr(self, "path"):
            import fcntl

            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)


def handle(req):
    if req.get("op") == "batch":
        return handle_batch(req)
    from .processes import forget_tree_checks
    forget_tree_checks()  # a whole-tree look is reused within one call only (processes.tree_checked)
    try:
        return _handle(req)
    finally:
        forget_tree_checks()


def _handle(req):
    op = action(req.get("op"))
    if op is None:
        return {"ok": False, "kind": "bad_input", "error": "unknown agent op %r" % req.get("op")}
    try:
        if req.get("install_dir") and req.get("op") in INSTALL_OPS:
            # before anything of the install is read: nothing of it reaches a reply. Once a run may have stopped the
            # service, an install dir that became a link needs a person (a refusal before stop is bad input)
            paths = Paths(req)
            check_install(paths, "needs_person" if req["op"] in AFTER_STOP else "unsafe_path")
            for d in ledger_dirs(paths):  # the state dirs too: plan refuses what the run's preflight would
                problem = state_place_problem(d, d == paths.default_state)
                if problem:
                    raise problem
            check_state_markers(paths, adopt=False)  # a state_dir naming another tool's directory: refused
        if req.get("op") in STATE_OPS and req.get("install_dir"):
            check_state_dir(Paths(req))
        if req.get("op") in MUTATING + ("lock",):
            from .hosttrust import admit
            admit(req)  # with a host trust root: nothing is taken for a run it accepted nothing for
        if req.get("op") in MUTATING:
            from .witness import step_gate
            # only the run that holds this host's lock changes it, and ends here once (after its prepare): else
            # nothing is done, nothing recorded
            step_gate(req)
        note_step = step_recorder(req)
        with OpLock(req):
            # the step's start by this host's wall clock, and the monotonic clock beside it: its end is the start
            # plus the monotonic time it took, so a wall clock stepped meanwhile changes neither order nor length
            began = (time.time(), time.monotonic())
            try:
                result = op(req)
            except AgentError as e:
                if note_step:
                    note_step(req, False, e.kind, began=began)
                raise
            if note_step:
                note_step(req, True, began=began)
            return {"ok": True, "result": result}
    except AgentError as e:
        return {"ok": False, "kind": e.kind, "error": str(e), "data": e.data}
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return {"ok": False, "kind": "no_space",
                    "error": "%s: %s%s" % (e.strerror, e.filename or "", space_hint(
                        e.filename or req.get("state_dir") or req.get("install_dir")))}
        return {"ok": False, "kind": "failed", "error": "%s: %s" % (e.strerror, e.filename or "")}


def handle_batch(req):
    """Several requests in one round trip, each handled exactly as if it came alone (its own checks, gates and
    locks, in order), stopping at the first that fails: a run's preflight asks the trust gate, the lock and the
    facts at once, and a refusal is the same reply, from the same step, as when they came one by one."""
    requests = req.get("requests")
    if not isinstance(requests, list) or not all(isinstance(r, dict) for r in requests):
        return {"ok": False, "kind": "bad_input", "error": "a batch needs a list of requests"}
    replies = []
    for sub in requests:
        reply = ({"ok": False, "kind": "bad_input", "error": "a batch cannot hold a batch"}
                 if sub.get("op") == "batch" else handle(sub))
        replies.append(reply)
        if not reply.get("ok"):
            break
    return {"ok": True, "result": {"replies": replies}}


def space_hint(path):
    """'; the file system at MOUNT has N MiB free of M MiB ...' for a full disk (empty when unknown)."""
    if not path:
        return ""
    try:
        where = os.path.abspath(path)
        while not os.path.exists(where) and os.path.dirname(where) != where:
            where = os.path.dirname(where)
        dev = os.stat(where).st_dev
        while os.path.dirname(where) != where and os.stat(os.path.dirname(where)).st_dev == dev:
            where = os.path.dirname(where)
        st = os.statvfs(where)
    except OSError:
        return ""
    return ("; the file system at %s has %d MiB free of %d MiB: make room there (the upgrade needs space for the "
            "backup and the unpacked package), then run again" % (where, st.f_bavail * st.f_frsize >> 20,
                                                                  st.f_blocks * st.f_frsize >> 20))


def serve():
    """A session: one JSON request per line on stdin, one JSON reply per line on stdout, until EOF.

    A lost connection must not cut an action in half: SIGHUP and SIGPIPE are ignored, so the action
    in progress runs to its end (and records its result in the run's state) even when nobody is
    left to read the reply; the controller's retry then waits on the action lock and sees it.
    A local agent shares the operator's terminal: its Ctrl-C is the controller's to handle (cancel
    between actions), so SIGINT is caught and dropped here (a handler, not SIG_IGN, so the commands
    the agent starts get the default back)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    out = sys.stdout
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError as e:
            reply = {"ok": False, "kind": "bad_input", "error": "request is not JSON: %s" % e}
        else:
            reply = handle(req)
        try:
            out.write(json.dumps(reply, sort_keys=True) + "\n")
            out.flush()
        except (OSError, ValueError):
            return 0
    return 0


def main():
    if sys.argv[-1:] == ["--serve"]:
        return serve()
    # one request as one base64 argument (no stdin round trips, no shell quoting issues),
    # or as JSON on stdin when no argument is given
    if len(sys.argv) > 1:
        import base64

        raw = base64.urlsafe_b64decode(sys.argv[1].encode("ascii"))
    else:
        raw = sys.stdin.buffer.read()
    try:
        req = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        reply = {"ok": False, "kind": "bad_input", "error": "request is not JSON: %s" % e}
    else:
        reply = handle(req)
    sys.stdout.write(json.dumps(reply, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0
