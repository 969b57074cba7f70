"""This host as a witness of the controller's audit log: the checkpoints of the runs that touched it.

At the end of every run, resume and rollback that touched this host, the controller sends the run's signed
checkpoint (seq, head, signer, key fingerprint, time, run id) and the agent appends it, one JSON line, to
``checkpoints.jsonl`` in every copy of its ledger (beside approvals-used.jsonl). The host is the customer's: the
engineer who holds the controller's log and its signing key cannot rewrite these lines there, so
``upgrader audit verify --witness INVENTORY`` checks the log against them (a rewritten chain, a run cut off).

Append-only and nothing else: no lock (a run's lock is released by then, and a witness must never block or fail
a run), one O_APPEND write of one whole line per copy, through the ledger's descriptors (never through a link).
``witness_read`` reads them back, read-only: no directory is made, no marker written.
"""

import json
import os
import re
import stat
import time

from .common import AgentError
from .ledger import ledger_fds
from .state import append_line_at, state_file_error

CHECKPOINTS = "checkpoints.jsonl"
#: a witness line is small; a file far beyond this many lines is read only up to it (newest kept)
READ_LIMIT = 100000

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _checkpoint(req):
    """The checkpoint of the request, checked for shape (the agent writes only what it can read back)."""
    cp = req.get("checkpoint")
    if not isinstance(cp, dict):
        raise AgentError("the witness request carries no checkpoint", "bad_input")
    seq, head = cp.get("seq"), cp.get("head")
    if type(seq) is not int or seq < 0 or not isinstance(head, str) or not _HEX64.match(head):
        raise AgentError("the checkpoint to witness needs seq (a number) and head (64 hex digits)", "bad_input")
    out = {"seq": seq, "head": head}
    if type(cp.get("line")) is int:
        out["line"] = cp["line"]
    for k in ("signer", "key", "time", "run"):
        v = cp.get(k)
        if v is not None and not isinstance(v, str):
            raise AgentError("checkpoint field %r must be text" % k, "bad_input")
        out[k] = (v or "")[:400] or None
    return out


def op_witness(req):
    """Append the run's checkpoint to checkpoints.jsonl in every copy of the ledger; returns where it went."""
    record = _checkpoint(req)
    record["witnessed"] = time.time()  # this host's own clock
    line = json.dumps(record, sort_keys=True) + "\n"
    written = []
    # every copy of the ledger, each opened once, refused when it is a link or not the agent's own (strict); a copy
    # missing is made, as the run's finish would have
    with ledger_fds(_paths(req), create=True) as fds:
        for d, fd in fds:
            append_line_at(fd, CHECKPOINTS, line, d)
            written.append(os.path.join(d, CHECKPOINTS))
    return {"written": written}


def op_witness_read(req):
    """The checkpoints this host witnessed (every copy of the ledger, each line once, in file order)."""
    out, seen, bad = [], set(), []
    with ledger_fds(_paths(req), strict=True) as fds:
        for d, dfd in fds:
            try:
                fd = os.open(CHECKPOINTS, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                             dir_fd=dfd)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise state_file_error(d, CHECKPOINTS, e)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise AgentError("%s/%s is not a regular file; the agent keeps its state only in plain files"
                                     % (d, CHECKPOINTS), "unsafe_path", path=os.path.join(d, CHECKPOINTS))
                for n, raw in enumerate(f, 1):
                    if n > READ_LIMIT:
                        break
                    try:
                        rec = json.loads(raw.decode("utf-8"))
                        key = (rec["seq"], rec["head"], rec.get("run"))
                    except (ValueError, KeyError, TypeError):
                        bad.append({"file": os.path.join(d, CHECKPOINTS), "line": n})
                        continue
                    if key not in seen:
                        seen.add(key)
                        out.append(dict(rec, file=os.path.join(d, CHECKPOINTS), file_line=n))
    return {"checkpoints": out, "unreadable": bad}


def _paths(req):
    from .state import Paths

    return Paths(req)
