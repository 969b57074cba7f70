"""The audit log: append-only JSON Lines, hash-chained, closed by signed checkpoints.

Every line is one event: ``{"seq":N,"prev":"<sha256 of the previous line>", ...}`` (the first line's
``prev`` is 64 zeros). A run ends with a ``checkpoint`` line that signs the head of the chain
(sequence number and hash of the line before it) with the operator's SSH key (SSHSIG, namespace
``upgrader-audit``). Appends take an exclusive lock, write one whole line and fsync it, so two
runs appending at once never interleave or lose lines. String values that look like secrets are
redacted before they are written.

``verify_log`` checks the chain, the sequence, every checkpoint signature and the structure of
runs, and names the first bad line. A chain alone proves nothing (anyone can rebuild one after an
edit): only checkpoints signed by an allowed operator do, so every finished run must be covered by
one, and without allowed signers the verdict is "cannot check" beside the chain's own result. It
cannot prove that nothing was cut off the end: only a checkpoint held elsewhere (``anchor``) can,
and the result says so.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Collection, Iterable, Iterator, Mapping, Sequence, TypedDict, cast

from .reach import OPENING_EVENTS, first_like, line_clock, run_opening  # noqa: F401 - where the log's readers take them

from ..core.errors import InputError
from ..core.shapes import JSONObject
from .redaction import MAYBE_SECRET, is_secret_name
from .redaction import redact as redact_text

if TYPE_CHECKING:
    import datetime as _dt

    from ..trust.signers import AllowedSigners
    from ..trust.sshsig import PrivateKey

__all__ = ["AuditLog", "VerifyResult", "verify_log", "read_log", "signers_known", "KNOWN_EVENTS", "read_events", "redact", "checkpoint_statement",
           "parse_anchor", "NAMESPACE", "GENESIS", "line_clock", "OPENING_EVENTS", "run_opening"]

NAMESPACE = "upgrader-audit"
GENESIS = "0" * 64
# the secret patterns are redaction's (one set for the audit log and the diagnostics bundle); a value
# without a secret-looking word (``MAYBE_SECRET``: every rule needs one) skips them: audit appends are
# on the hot path of fleet runs
_MAYBE_SECRET = MAYBE_SECRET


def redact(value: object, key: str = "") -> object:
    """A copy of ``value`` with secrets replaced: values under secret-looking keys whatever their type (a number, a
    nested object), and secret-looking text."""
    if key and is_secret_name(key) and not isinstance(value, (str, bool)) and value is not None:
        return "[REDACTED]"
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        if key and value and is_secret_name(key):
            return "[REDACTED]"
        if not _MAYBE_SECRET.search(value):  # one scan instead of every pattern: most values are plain
            return value
        return redact_text(value, mask="[REDACTED]", pem_mask="[REDACTED PRIVATE KEY]")
    return value


def redact_object(data: Mapping[str, object]) -> JSONObject:
    """``redact`` of a mapping (an event's data): a copy with its secrets replaced."""
    return {k: redact(v, str(k)) for k, v in data.items()}


class Checkpoint(TypedDict):
    """A checkpoint line's signed claim: the chain up to ``head`` (line ``seq``) is as ``signer`` saw it."""

    seq: int
    head: str
    signer: str
    key: str
    signature: str


class CheckpointRef(Checkpoint):
    """A checkpoint and the line of the log that holds it (what an operator keeps as an anchor), and the time that
    line was written with (``time``: part of what the checkpoint signs, checkpoint_statement)."""

    line: int
    time: str


class AuditEvent(TypedDict, total=False):
    """One line of the audit log (``_hash``: the sha256 of the line, kept in memory only)."""

    seq: int
    prev: str
    time: str
    clock: str
    mono: float
    event: str
    run: str | None
    host: str | None
    phase: str | None
    outcome: str | None
    actor: JSONObject
    data: JSONObject
    checkpoint: Checkpoint
    _hash: str


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def log_identity(path: Path) -> str | None:
    """The identity of the audit log at ``path``: the hash of its first line, as the chain hashes it (None while
    the log has no complete line). A host keeps it in its records of a run (hostagent/witness.py) so that
    ``audit verify --witness`` compares a log only with the records of its own runs: one host may serve two logs
    (the customer's guide on the host, the engineer's controller), each true."""
    try:
        with open(path, "rb") as f:
            first = f.readline()
    except OSError:
        return None
    return log_identity_of(first)


def log_identity_of(data: bytes) -> str | None:
    """log_identity of a log's bytes (as read)."""
    first, newline, _ = data.partition(b"\n")
    return _line_hash(first) if newline else None


def checkpoint_statement(seq: int, head: str, run: str | None, signer: str, time: str) -> bytes:
    """The exact bytes a checkpoint signs (also what ``ssh-keygen -Y verify`` is given)."""
    return (f"upgrader audit checkpoint 1\nseq: {seq}\nhead: {head}\nrun: {run or '-'}\n"
            f"signer: {signer}\ntime: {time}\n").encode()


def _tail_line(f: BinaryIO) -> bytes | None:
    """The last complete line of an open binary file (None when empty)."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    if end == 0:
        return None
    block = 4096
    pos = end
    data = b""
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
        body = data[:-1] if data.endswith(b"\n") else data
        nl = body.rfind(b"\n")
        if nl >= 0:
            return data[nl + 1:]
        block *= 2
    return data


def _raised(time: str, last_time: str | None) -> tuple[str, str | None]:
    """(the time a line is written with, the writer's own clock when that time was raised, else None). The caller
    read its clock before it got the lock: another process may have written a later time meanwhile, or the clock
    stepped back. A line is never older than the line it chains to, so its time is raised to that line's (verify_log
    checks the order strictly); the writer's real clock is kept beside it (``clock``), chained like the rest, so the
    hosts' own step times are compared with what the controller's clock said, not with the raised time (an honest
    run after a clock step back would read "moved")."""
    if last_time is not None and time < last_time:
        return last_time, time
    return time, None


class AuditLog:
    """Appends events to one audit log file, safely from several processes."""

    def __init__(self, path: Path, actor: JSONObject | None = None) -> None:
        self.path = path
        self.actor = actor or {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._count = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = 0
        self._synced = 0
        # (file size after our last line, next seq, its hash, its time): valid while the size is unchanged
        self._head: tuple[int, int, str, str] | None = None
        # The log and its lock file stay open for the life of this object (a run appends hundreds of events;
        # opening both for each was most of an append's cost). flock excludes other processes; threads of
        # this process share one open file, so they take ``_mutex`` first.
        self._mutex = threading.Lock()
        self._files = _OpenFiles(path)
        weakref.finalize(self, self._files.close)

    def _durable(self, mine: int) -> None:
        """Group commit: return once an fsync that began after write number ``mine`` has finished.
        The fsync runs outside the file lock, so concurrent writers (threads of this process, or other
        processes) are not queued behind each other's disk flushes."""
        with self._sync_lock:
            if self._synced >= mine:
                return
            with self._count:
                upto = self._written
            os.fsync(self._files.log())
            self._synced = upto

    def _wrote(self) -> int:
        with self._count:
            self._written += 1
            return self._written

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            fd = self._files.acquire()
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def append(self, event: str, *, run: str | None = None, host: str | None = None, phase: str | None = None,
               outcome: str | None = None, time: str, data: Mapping[str, object] | None = None,
               mono: float | None = None) -> AuditEvent:
        """Append one event under the lock, fsynced; ``time`` earlier than the last line's is raised to it.
        ``mono``: the writer's monotonic clock (seconds) read with ``time``, kept beside it (``mono``): a wall clock
        stepped between two lines of a run shows as their times and their monotonic readings moving apart."""
        with self._locked():
            rec = self._append_locked(event, run=run, host=host, phase=phase, outcome=outcome, time=time,
                                      data=data, mono=mono)
            mine = self._wrote()
        self._durable(mine)
        return rec

    def _append_locked(self, event: str, *, run: str | None, host: str | None, phase: str | None,
                       outcome: str | None, time: str, data: Mapping[str, object] | None,
                       raw: Callable[[int, str, str], AuditEvent] | None = None,
                       mono: float | None = None) -> AuditEvent:
        fd = self._files.log(check=True)  # under the lock: the file this path names now
        if self._files.reopened:  # a new file (or the first use): chain to what it holds, not to our memory
            self._head = None
            self._files.reopened = False
        size = os.fstat(fd).st_size
        seq, prev = 1, GENESIS
        last_time: object = None
        if self._head is not None and self._head[0] == size:
            # nobody appended since our own last line (same size, under the lock): chain to it directly
            _, seq, prev, last_time = self._head
        else:
            with open(self.path, "rb") as f:
                last = _tail_line(f)
            if last is not None and not last.endswith(b"\n"):
                raise InputError("the audit log ends with a torn line; refusing to append after it",
                                 path=str(self.path),
                                 hint="run 'upgrader audit verify' and keep the file for review")
            if last is not None:
                try:
                    tail = json.loads(last)
                    seq = int(tail["seq"]) + 1
                except (ValueError, KeyError, TypeError):
                    raise InputError("the audit log's last line is not an audit event", path=str(self.path),
                                     hint="run 'upgrader audit verify'") from None
                prev = _line_hash(last)
                last_time = tail.get("time")
        time, clock = _raised(time, last_time if isinstance(last_time, str) else None)
        record: AuditEvent = {"seq": seq, "prev": prev, "time": time}
        if clock is not None:
            record["clock"] = clock
        if mono is not None:
            record["mono"] = round(mono, 3)
        record.update({"event": event, "run": run, "host": host, "phase": phase, "outcome": outcome,
                       "actor": self.actor})
        if raw is not None:
            record.update(raw(seq, prev, time))
        if data:
            record["data"] = redact_object(data)
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str).encode() + b"\n"
        _write_all(fd, line)  # durable: the caller waits for an fsync (group commit) before it returns
        record["_hash"] = _line_hash(line)
        self._head = (size + len(line), seq + 1, record["_hash"], record["time"])
        return record

    def checkpoint(self, *, run: str | None, time: str, signer: str, key: PrivateKey,
                   mono: float | None = None) -> CheckpointRef:
        """Sign the current head of the chain; return the checkpoint (seq and head) to keep elsewhere."""
        from ..trust.sshsig import fingerprint, public_key_blob, sign

        blob = public_key_blob(key.public_key())

        def fields(seq: int, prev: str, at: str) -> AuditEvent:
            # ``at``: the time the line is written with (never earlier than the line before it)
            statement = checkpoint_statement(seq - 1, prev, run, signer, at)
            return {"checkpoint": {"seq": seq - 1, "head": prev, "signer": signer, "key": fingerprint(blob),
                                   "signature": sign(key, statement, NAMESPACE)}}

        with self._locked():
            rec = self._append_locked("checkpoint", run=run, host=None, phase=None, outcome=None, time=time,
                                      data=None, raw=fields, mono=mono)
            mine = self._wrote()
        self._durable(mine)
        cp: CheckpointRef = {**rec["checkpoint"], "line": rec["seq"], "time": rec["time"]}
        return cp


class _OpenFiles:
    """The log (O_APPEND) and its lock file, opened on first use and kept open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log: tuple[int, int, int] | None = None  # fd, st_dev, st_ino
        self._lock: tuple[int, int, int] | None = None
        self._retired: list[int] = []  # replaced descriptors: a concurrent fsync may still use one
        self.reopened = False  # set when the log was opened anew (the cached head no longer holds)

    def log(self, check: bool = False) -> int:
        """The log's descriptor; with ``check``, reopened if the path now names another file (moved or deleted
        and made again by someone else): a line must never go to a file that is no longer the log."""
        if self._log is not None and check and not _names(self.path, self._log):
            self._retired.append(self._log[0])
            self._log = None
        if self._log is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
            st = os.fstat(fd)
            self._log = (fd, st.st_dev, st.st_ino)
            self.reopened = True
        return self._log[0]

    def acquire(self) -> int:
        """flock the lock file that the lock path names now (a lock file deleted or replaced meanwhile would
        let another process lock a different file: then ours is reopened, the usual lock-file check)."""
        path = self.path.with_name(self.path.name + ".lock")
        while True:
            if self._lock is None:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                st = os.fstat(fd)
                self._lock = (fd, st.st_dev, st.st_ino)
            fcntl.flock(self._lock[0], fcntl.LOCK_EX)
            if _names(path, self._lock):
                return self._lock[0]
            fcntl.flock(self._lock[0], fcntl.LOCK_UN)
            os.close(self._lock[0])
            self._lock = None

    def close(self) -> None:
        for fd in [self._log[0] if self._log else None, self._lock[0] if self._lock else None, *self._retired]:
            if fd is not None:
                os.close(fd)
        self._log = self._lock = None
        self._retired = []


def _names(path: Path, opened: tuple[int, int, int]) -> bool:
    """Does ``path`` still name the file opened as (fd, st_dev, st_ino)? (Not when deleted, moved or replaced.)"""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == opened[1:]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- verification -----------------------------------------------------------------------------


@dataclass
class VerifyResult:
    path: str
    entries: int = 0
    valid_entries: int = 0
    checkpoints: int = 0
    last_checkpoint: dict[str, Any] | None = None
    bad_line: int | None = None
    problem: str | None = None          # edited | missing | reordered | truncated | rewritten | torn
    #                                     | bad signature | head mismatch | forged
    #                                     | unsigned (a finished run no valid checkpoint covers)
    message: str = ""
    uncovered: int = 0                  # valid entries after the last checkpoint
    anchor_checked: bool = False
    signers_known: bool = True          # False: no allowed signers, so no checkpoint could be attributed
    signers_file: str | None = None     # the allowed signers file the verdict used (set by api.verify_audit)
    signers_sha256: str | None = None   # its sha256 as read
    anchor: str | None = None           # the anchor given, as SEQ:HEAD
    #: the approvers' allowed_signers every approver name of the log was held to (set by api.verify_audit; None:
    #: none was available, so the names are the controller's word)
    approvers_file: str | None = None
    #: the keys that file lists under a literal principal: an approval by a key it no longer lists (an engineer who
    #: left) keeps its approver name as the controller's word, neither checked nor ALTERED
    approvers_keys: frozenset[str] = frozenset()
    warnings: list[str] = field(default_factory=list)

    @property
    def chain_intact(self) -> bool:
        """The log's own consistency (chain, sequence, runs, signatures against their own keys)."""
        return self.bad_line is None and self.problem is None

    @property
    def intact(self) -> bool:
        """Proven unaltered: the chain holds and its checkpoints are signed by allowed operators."""
        return self.chain_intact and self.signers_known

    @property
    def status(self) -> str:
        """``intact`` (exit 0), ``altered`` (exit 6) or ``cannot_check`` (exit 2: no allowed signers known)."""
        if not self.signers_known:
            return "cannot_check"
        return "intact" if self.chain_intact else "altered"

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "status": self.status, "intact": self.intact,
                "chain_intact": self.chain_intact, "signers_known": self.signers_known, "entries": self.entries,
                "valid_entries": self.valid_entries, "checkpoints": self.checkpoints,
                "last_checkpoint": self.last_checkpoint, "bad_line": self.bad_line, "problem": self.problem,
                "message": self.message, "uncovered_after_last_checkpoint": self.uncovered,
                "anchor_checked": self.anchor_checked, "anchor": self.anchor, "signers_file": self.signers_file,
                "signers_sha256": self.signers_sha256, "approvers_file": self.approvers_file,
                "warnings": self.warnings}


def parse_anchor(text: str) -> tuple[int, str]:
    """An anchor: ``SEQ:HEAD`` or the JSON a run printed (``{"seq":..,"head":..}``), or a file holding either."""
    value = text.strip()
    if not re.match(r"^\d+:", value) and not value.startswith("{") and Path(value).is_file():
        value = Path(value).read_text(encoding="utf-8").strip()
    m = re.fullmatch(r"(\d+):([0-9a-f]{64})", value)
    if m:
        return int(m.group(1)), m.group(2)
    try:
        d = json.loads(value)
        d = d.get("checkpoint", d)
        return int(d["seq"]), str(d["head"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"--anchor: expected SEQ:HEAD (as a run prints it) or a file holding it, got {text[:80]!r}") \
            from None


def _fail(r: VerifyResult, line: int, problem: str, message: str) -> VerifyResult:
    r.bad_line, r.problem, r.message = line, problem, f"line {line}: {message}"
    r.valid_entries = min(r.valid_entries, line - 1)
    return r


_DECODE = json.JSONDecoder().raw_decode
_SEQ_PREFIX = re.compile(rb'\{"seq":(\d+),')


def _record(line: bytes) -> object:
    """The one JSON value on a line (which ends with its newline), or None when the line is not exactly one."""
    try:
        text = line.decode("utf-8")
        rec, end = _DECODE(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if end != len(text) - 1 and text[end:].strip(" \t\r\n"):
        return None
    return rec


def _find_seq(lines: Iterator[bytes], want: int, first: int) -> int | None:
    """The number of the line, from ``first`` on, that holds sequence number ``want`` (only to word a failure)."""
    for n, line in enumerate(lines, first):
        seq: Any
        m = _SEQ_PREFIX.match(line)
        if m is not None:
            seq = int(m.group(1))
        else:
            rec = _record(line) if line.endswith(b"\n") else None
            seq = rec.get("seq") if isinstance(rec, dict) else None
        if seq == want:
            return n
    return None


def read_log(path: Path) -> bytes:
    """The whole log, read once: verify and every view (show, export, case) work from these same bytes, so the
    file cannot be swapped between the check and the report."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError("audit log not found", path=str(path), hint="give the log path, or --home") from None
    except OSError as e:
        raise InputError(f"cannot read the audit log: {e.strerror or e}", path=str(path)) from e


def signers_known(signers: AllowedSigners | None) -> bool:
    """Allowed signers that can vouch for a checkpoint: a file with at least one entry for the audit namespace."""
    return signers is not None and any(e.allows_namespace(NAMESPACE) for e in getattr(signers, "entries", ()))


def verify_log(path: Path, *, signers: AllowedSigners | None, anchor: tuple[int, str] | None = None,
               data: bytes | None = None, now: _dt.datetime | None = None) -> VerifyResult:
    """Check the whole log (``data``: its bytes, read once by ``read_log``); stop at the first bad line and name it.

    One pass, one JSON parse and one sha256 per line; each checkpoint's signature is checked once. Allowed
    signers are judged at ``now`` (the verification time, as ``ssh-keygen -Y verify`` does), never at a time the
    log itself states.
    """
    import datetime as dt

    known = signers_known(signers)
    r = VerifyResult(str(path), signers_known=known)
    if not known:
        signers = None
    if data is None:
        data = read_log(path)
    when = now or dt.datetime.now(dt.timezone.utc)
    # the whole file's lines, whether verification reads to the end or stops at the first bad line
    r.entries = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    if anchor is not None:
        r.anchor = f"{anchor[0]}:{anchor[1]}"
    f = io.BytesIO(data)
    prev_hash, prev_time = GENESIS, ""
    closed_runs: set[str] = set()
    open_runs: set[str] = set()
    run_hosts: dict[str, set[str]] = {}  # each first run's hosts, as its opening line names them
    first_line: dict[str, int] = {}         # run -> the line of its first event
    plans_made: dict[str, tuple[int, object]] = {}  # plan digest -> (its plan_created line, that line's requester)
    every: list[Mapping[str, object]] = []  # every line read, in order (index = line - 1)
    run_lines: dict[str, list[int]] = {}    # run -> its lines
    last_actor: dict[str, Any] = {}         # run -> the actor of its latest line (a checkpoint's actor must be it)
    host_ends: dict[str, dict[str, object]] = {}  # run -> host -> the outcome of its host_finished line
    base_ends: dict[str, dict[str, set[object]]] = {}  # run id before any /part -> host -> outcomes its parts gave
    parts: dict[str, str] = {}              # a resume or rollback (by its opening line) -> the run it goes on with
    firstlike: set[str] = set()             # first runs and continuations after a canary (by their opening line)
    paused: dict[str, Mapping[str, object]] = {}  # a first run -> its run_finished's outcomes (hosts left waiting)
    continued: set[str] = set()             # first runs a continuation after the canary went on with (and ended)
    # (first-run-like part, host) -> its preflight's (outcome, failure); None: started, never finished
    preflight: dict[tuple[str, str], tuple[object, object] | None] = {}
    # a run (or a part of it) -> (the line that opened a later resume or rollback of that run, that part's id): upgrader
    # opens a resume or rollback of a run once the run has stopped (killed, or ended), so no line of it comes after
    superseded: dict[str, tuple[int, str]] = {}
    tail = _Tail()                          # the lines after the last checkpoint an allowed operator signed
    anchor_seq = anchor[0] if anchor is not None else 0
    anchor_hash: str | None = None
    sha256 = hashlib.sha256
    n = 0
    with f:
        lines = iter(f)
        for n, line in enumerate(lines, 1):
            if not line.endswith(b"\n"):
                return _fail(r, n, "torn", "the last line is incomplete (torn write or cut file)")
            rec = _record(line)
            try:
                if not isinstance(rec, dict):
                    raise TypeError("not an object")
                seq, prev = rec["seq"], rec["prev"]
            except (KeyError, TypeError):
                return _fail(r, n, "edited", "not a valid audit event (edited or damaged)")
            if type(seq) is not int or seq != n:
                if type(seq) is int and seq > n:
                    found = _find_seq(lines, n, n + 1)
                    if found is not None:
                        return _fail(r, n, "reordered", f"sequence number {seq} where {n} was expected; line "
                                     f"{found} holds sequence number {n} (lines reordered)")
                    return _fail(r, n, "missing", f"sequence jumps from {n - 1} to {seq}: "
                                 f"{seq - n} line(s) before it were removed")
                return _fail(r, n, "reordered", f"sequence number {seq} where {n} was expected "
                             "(lines reordered or duplicated)")
            if prev != prev_hash:
                if n > 1:
                    return _fail(r, n - 1, "edited", f"line {n - 1} was edited or replaced: its hash no longer "
                                 f"matches the chain recorded in line {n}")
                return _fail(r, n, "edited", "the first line does not start the chain")
            shape = _shape_problem(rec) or _data_problem(rec)
            if shape:
                return _fail(r, n, "edited", f"not an event upgrader writes: {shape}")
            this_hash = sha256(line[:-1]).hexdigest()
            time = rec["time"]
            if time < prev_time:
                return _fail(r, n, "reordered", f"time {time} is earlier than the line before ({prev_time})")
            raised = _clock_problem(rec, prev_time)
            if raised:
                return _fail(r, n, "edited", f"not an event upgrader writes: {raised}")
            run = rec.get("run")
            event = rec["event"]
            every.append(rec)
            if run:
                run_lines.setdefault(str(run), []).append(n)
                if run in superseded:  # attack20r16 H1
                    at, part = superseded[run]
                    return _fail(r, n, "edited", f"not an event upgrader writes: a line of run {run} after line {at} "
                                 f"opened {part}, a later part of that run (a resume or rollback starts only once the "
                                 "run has stopped, so none of the run's own lines can follow its opening)")
            # attack20r17 L1: upgrader writes a witness_missing line with no run, phase or outcome
            if event == "witness_missing" and (run or rec.get("phase") or rec.get("outcome") or not rec.get("host")
                                               or set(_d(rec.get("data"))) - {"for_run", "seq", "head", "error"}):
                return _fail(r, n, "edited", "not an event upgrader writes: a witness_missing line names only the host "
                             "that did not record a checkpoint and that checkpoint")
            if not run and event in _RUN_EVENTS:  # attack20r16 M1: every run, host and phase event has its run
                return _fail(r, n, "edited", f"not an event upgrader writes: a {event} line with no run (upgrader "
                             "writes every run, host or phase event with the id of its run)")
            if event == "checkpoint":
                checked = cast(AuditEvent, rec)  # shaped as an event (_shape_problem above)
                problem = _checkpoint_problem(checked, n, prev_hash, time)
                refused = None if problem else _signer_problem(checked, signers, when)
                if not problem and not refused:
                    problem = _actor_problem(checked, last_actor.get(run) if run else None)
                if problem:
                    start = r.last_checkpoint["line"] + 1 if r.last_checkpoint else 1
                    covered = f"line {start}" if start == n - 1 else f"lines {start}-{n - 1}"
                    if isinstance(problem, _HeadMismatch):
                        return _fail(r, n, "head mismatch", f"the checkpoint's signature is sound, but the head it "
                                     f"signs ({problem.signed[:16]}…, line {problem.seq}) is not the hash of the "
                                     f"line before it now ({prev_hash[:16]}…): one of the {covered} it covers was "
                                     "rewritten after it was signed (and the chain rebuilt)")
                    return _fail(r, n, "bad signature", f"checkpoint signature is not valid: {problem} (this "
                                 f"checkpoint, or one of the {covered} it covers, was changed)")
                if refused:  # a sound signature by someone not allowed now: it vouches for nothing
                    tail.refused = tail.refused or (n, refused)
                else:
                    r.checkpoints += 1
                    r.last_checkpoint = {"seq": n - 1, "head": prev_hash, "line": n,
                                         "signer": rec["checkpoint"]["signer"]}
                    tail = _Tail()
                if run:
                    closed_runs.add(run)
                    open_runs.discard(run)
            else:
                if event == "plan_created":
                    made = rec.get("data")
                    if isinstance(made, dict) and isinstance(made.get("plan"), str):
                        plans_made.setdefault(str(made["plan"]), (n, made.get("requester")))
                if run:
                    if run in closed_runs:
                        return _fail(r, n, "forged", f"an event of run {run} after that run's closing checkpoint")
                    if run not in open_runs:
                        if run_opening([rec], run) is None:  # only an opening event opens a run (attack20r15 M2)
                            return _fail(r, n, "forged", f"an event of run {run} that never started: its first line "
                                         f"is {event}, but upgrader opens a run with run_started, resume_requested or "
                                         "rollback_requested before any other line of it")
                        wrong = _continuation_problem(rec, run, first_line)
                        if wrong:
                            return _fail(r, n, "forged", wrong)
                        wrong = _continuation_hosts(rec, run_hosts) or _after_problem(rec, paused, continued)
                        if wrong:
                            return _fail(r, n, "edited", f"not an event upgrader writes: {wrong}")
                        of_run = _d(rec.get("data")).get("of_run")
                        if event in _CONTINUES and isinstance(of_run, str):
                            parts[run] = of_run
                            for gone in [of_run, *(q for q, of in parts.items() if of == of_run and q != run)]:
                                superseded.setdefault(gone, (n, run))
                        if first_like(rec):
                            firstlike.add(run)
                        if event == "run_started" and isinstance(rec.get("data"), dict):
                            named = rec["data"].get("hosts")
                            run_hosts[run] = {str(h.get("host")) for h in (named if isinstance(named, list) else [])
                                              if isinstance(h, dict)}
                        open_runs.add(run)
                        first_line.setdefault(run, n)
                        wrong = _requester_problem(rec, n, plans_made)
                        if wrong:
                            return _fail(r, n, "edited", wrong)
                    last_actor[run] = rec.get("actor")
                    host = rec.get("host")
                    if run in firstlike and isinstance(host, str) and rec.get("phase") == "preflight" \
                            and event in ("phase_started", "phase_finished"):
                        preflight[(run, host)] = (rec.get("outcome"), _d(rec.get("data")).get("failure")) \
                            if event == "phase_finished" else None
                    if event == "host_finished" and isinstance(host, str):
                        wrong = _end_after_preflight(rec, preflight) if run in firstlike else None
                        if wrong:
                            return _fail(r, n, "edited", f"not an event upgrader writes: {wrong}")
                        host_ends.setdefault(run, {})[host] = rec.get("outcome")
                        base = base_ends.setdefault(parts.get(run, str(run)), {})
                        base.setdefault(host, set()).add(rec.get("outcome"))
                    elif event == "run_finished":
                        earlier = base_ends.get(parts[run], {}) if run in parts else {}
                        wrong = finish_problem(rec, host_ends.get(run, {}), earlier)
                        if wrong:
                            return _fail(r, n, "edited", wrong)
                        if run not in parts and run not in paused:
                            paused[run] = _d(_d(rec.get("data")).get("outcomes"))
                        elif run in parts and run in firstlike:  # a continuation after the canary ended: no other
                            continued.add(parts[run])
                tail.add(n, run, event)
            if n == anchor_seq:
                anchor_hash = this_hash
            prev_hash, prev_time = this_hash, time
            r.valid_entries = n
    r.uncovered = n - (r.last_checkpoint["line"] if r.last_checkpoint else 0)
    from .moved import moved_problem

    moved = moved_problem(every, run_lines)  # a run's first or last lines moved in time (audit/moved.py)
    if moved is not None:
        return _fail(r, moved[0], "edited", moved[1])
    reused = reused_approval(every)
    if reused is not None:
        return _fail(r, reused[0], "edited", reused[1])
    if tail.refused:
        line_no, why = tail.refused
        start = r.last_checkpoint["line"] + 1 if r.last_checkpoint else 1
        return _fail(r, line_no, "bad signature", f"the checkpoint's signature is sound, but its signer is not "
                     f"allowed now: {why}; no checkpoint of an allowed operator vouches for lines {start}-{line_no - 1} "
                     "(list the operator in the allowed signers, or re-check with the signers that were meant)")
    bad = tail.unproven()
    if bad is not None and not (anchor is not None and anchor_seq >= bad[1]):
        first, _last, finished = bad
        if finished:
            first = min(first, first_line[finished])
            text = (f"{r.uncovered} event{'' if r.uncovered == 1 else 's'}, including a finished run, carry no valid "
                    f"signature: run {finished} finished, and no checkpoint signed by an allowed operator follows "
                    "it (checkpoints removed and the chain rebuilt, or the run was recorded without an operator key)")
        else:
            text = (f"not proven: {r.uncovered} event{'' if r.uncovered == 1 else 's'} after the last checkpoint, "
                    "beyond the opening of the newest run, carry no valid signature; a run killed here looks exactly "
                    "like one edited after its checkpoint was removed (if a run was killed, 'upgrader resume RUN' "
                    "or 'upgrader rollback RUN' closes it with a signed checkpoint; or give --anchor)")
        return _fail(r, first, "unsigned", text)
    if anchor is not None:
        seq, head = anchor
        r.anchor_checked = True
        if seq > n:
            return _fail(r, n + 1, "truncated", f"missing: the log ends at line {n}, but the anchor you hold names "
                         f"line {seq}: {seq - n} line(s) were cut off the end (the anchor names one line: whether "
                         f"lines 1-{n} were also rewritten it cannot tell)")
        if anchor_hash != head:
            return _fail(r, seq, "rewritten", f"rewritten: the log holds line {seq}, but its hash is not the head "
                         f"your anchor holds ({head[:16]}…): the log was rewritten at or before line {seq} (its "
                         "own checkpoints were signed again afterwards)")
    if r.uncovered:
        r.warnings.append(f"{r.uncovered} entr{'y' if r.uncovered == 1 else 'ies'} after the last checkpoint "
                          "are not covered by a signature (plans, approvals, or the opening of a run that is starting)")
    return r


def reused_approval(lines: Sequence[Mapping[str, object]]) -> tuple[int, str] | None:
    """An approval is spent at the first host lock its run takes (the controller's ledger and the host's opening
    record refuse it again): a run_started line naming an approval that an earlier run spent (it passed preflight on a
    host or reached one: ``witness._reached``) was made up. A run refused before any lock spends nothing, so an
    honest re-run after it names the same approval (attack20r12 M1). (line, message) or None."""
    from .reach import _reached

    events = [cast(JSONObject, dict(e)) for e in lines]
    spent_by = {str(e.get("run")) for e in events if e.get("event") == "phase_finished"
                and e.get("phase") == "preflight" and e.get("outcome") == "ok"} | set(_reached(events))
    spent: dict[str, tuple[str, object]] = {}
    for e in events:
        if e.get("event") != "run_started" or not isinstance(e.get("run"), str):
            continue
        run, data = str(e["run"]), e.get("data")
        given = data.get("approvals") if isinstance(data, dict) else None
        for item in given if isinstance(given, list) else []:
            digest = item.get("digest") if isinstance(item, dict) else None
            if not isinstance(digest, str):
                continue
            first = spent.get(digest)
            if first is not None and first[0] != run and isinstance(e.get("seq"), int):
                return int(str(e["seq"])), (
                    f"run {run} names approval {digest[:16]}…, which run {first[0]} (line {first[1]}) spent when it "
                    "took a host's lock: an approval is used once, upgrader refuses it again (a made-up or replayed "
                    "run)")
            if first is None and run in spent_by:
                spent[digest] = (run, e.get("seq"))
    return None


#: each host outcome's exit code, as the engine derives a run's exit code (the highest of its hosts'); kept equal to
#: core.engine.OUTCOME_EXIT (a test compares them)
OUTCOME_EXIT = {"committed": 0, "restored": 0, "unchanged": 1, "rolled_back": 1, "not_started": 1,
                "stale": 2, "bad_input": 2, "policy_refused": 3, "refused": 4, "needs_person": 5,
                "superseded": 5, "waiting": 0}


#: outcomes that say a host was changed or needs a person: the engine writes a host_finished line for each one
CHANGING_OUTCOMES = frozenset(("committed", "restored", "rolled_back", "needs_person"))


def finish_problem(rec: Mapping[str, object], ends: Mapping[str, object],
                   earlier: Mapping[str, Collection[object]] | None = None) -> str | None:
    """What a ``run_finished`` line says that its run's own lines contradict, or None: each host's outcome must be
    the one of that host's ``host_finished`` line in the run (``ends``), and the exit code the highest of the
    outcomes' codes (the engine derives it so; an honest log never differs). A host the run did not finish itself
    (a resume's hosts done before it) may carry an outcome that changes a host (committed, restored, rolled_back,
    needs_person) only as an earlier part of the same run ended it (``earlier``: host -> outcomes of the
    host_finished lines of the run and its parts before this line); the engine never claims a change, or a person's
    attention, for a host it wrote no host_finished line for."""
    data = rec.get("data")
    d: Mapping[str, Any] = data if isinstance(data, dict) else {}
    outcomes = d.get("outcomes")
    if not isinstance(outcomes, dict):
        return None
    for host, said in outcomes.items():
        if host in ends and ends[host] != said:
            return (f"run {rec.get('run')} ends with host {host} {said}, but that host's host_finished line in the "
                    f"run says {ends[host]}: the run's end was edited")
        if host not in ends and said in CHANGING_OUTCOMES and said not in (earlier or {}).get(host, ()):
            return (f"run {rec.get('run')} ends with host {host} {said}, but no host_finished line of the run (or "
                    f"of an earlier part of it) ends that host so: the run's end was edited")
    code = d.get("exit_code", rec.get("outcome"))
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if type(code) is int and outcomes and all(isinstance(o, str) and o in OUTCOME_EXIT for o in outcomes.values()):
        derived = max(OUTCOME_EXIT[str(o)] for o in outcomes.values())
        if code != derived:
            return (f"run {rec.get('run')} ends with exit code {code}, but its hosts' outcomes ("
                    f"{', '.join(f'{h} {o}' for h, o in outcomes.items())}) give {derived}: the run's end was edited")
    return None


# Every event name upgrader writes; anything else (a homoglyph of one, too) is an edited line.
_RUN_EVENTS = frozenset(("run_started", "approval_accepted", "resume_requested", "rollback_requested", "guide_run",
                         "locks_broken", "phase_started", "phase_finished", "host_started", "host_finished",
                         "rollback_started", "run_finished", "lock_broken", "run_interrupted", "guide_interrupted"))
_OTHER_EVENTS = frozenset(("checkpoint", "plan_created", "approval_created", "approval_refused", "run_refused",
                           "access_granted", "access_extended", "access_revoked", "access_record_restored",
                           "guide_cancelled", "guide_refused", "guide_backup_confirmation", "guide_plan_waits_for_approval",
                           "guide_audit_key_made",
                           "guide_audit_key_listed", "guide_audit_key_line_shown", "guide_approval_key_untrusted",
                           "guide_access_kept", "guide_access_closed", "guide_access_close_failed",
                           "witness_missing"))
KNOWN_EVENTS = _RUN_EVENTS | _OTHER_EVENTS
# what a run writes before it touches a host: all that may stand after the last checkpoint besides events of no run
_OPENING = frozenset(("run_started", "approval_accepted", "resume_requested", "rollback_requested", "guide_run",
                      "locks_broken"))
_KEYS = frozenset(("seq", "prev", "time", "clock", "mono", "event", "run", "host", "phase", "outcome", "actor",
                   "data"))
_CHECKPOINT_KEYS = frozenset(("seq", "prev", "time", "clock", "mono", "event", "run", "host", "phase", "outcome",
                              "actor", "checkpoint"))
_ACTOR_KEYS = frozenset(("user", "host", "key", "principal"))


class _Tail:
    """The events after the last allowed checkpoint: only events of no run and the opening of the newest run are
    accepted there unsigned (a plan being made and approved, a run starting); anything more is not proven."""

    def __init__(self) -> None:
        self.runs: dict[str, list[int]] = {}      # run -> [first line, last line] in the tail
        self.beyond: list[int] = []                # lines of run events beyond a run's opening
        self.finished: str | None = None
        self.refused: tuple[int, str] | None = None  # a checkpoint with a sound signature by a signer not allowed

    def add(self, n: int, run: str | None, event: str) -> None:
        if not run:
            return
        span = self.runs.setdefault(run, [n, n])
        span[1] = n
        if event not in _OPENING:
            self.beyond.append(n)
        if event == "run_finished" and self.finished is None:
            self.finished = run

    def unproven(self) -> tuple[int, int, str | None] | None:
        """(first line, last line, a finished run) of what no signature covers beyond that; None when nothing."""
        if not self.runs:
            return None
        newest = max(self.runs, key=lambda u: self.runs[u][0])
        lines = list(self.beyond)
        for run, (first, last) in self.runs.items():
            if run != newest:
                lines += [first, last]
        if not lines:
            return None
        return min(lines), max(lines), self.finished


_CONTINUES = {"resume_requested": "resume", "rollback_requested": "rollback"}


def _requester_problem(rec: Mapping[str, object], n: int, made: Mapping[str, tuple[int, object]]) -> str | None:
    """Why a run_started line's requester is not its plan's: the log's own plan_created line of the same plan digest
    recorded the plan's requester (user and host, inside the digest), and the run must name the same person."""
    data = rec.get("data")
    if rec.get("event") != "run_started" or not isinstance(data, dict) or str(data.get("plan")) not in made:
        return None
    line, theirs = made[str(data.get("plan"))]
    said = data.get("requester")
    said_d = said if isinstance(said, dict) else {}
    theirs_d = theirs if isinstance(theirs, dict) else {}
    for k in ("user", "host"):
        if said_d.get(k) != theirs_d.get(k):
            return (f"run {rec.get('run')} names requester {k} {said_d.get(k)!r}, but line {line} "
                    f"(plan_created of the same plan {str(data.get('plan'))[:16]}…) says {theirs_d.get(k)!r}: the "
                    "requester was changed (the plan's requester is inside its digest)")
    return None


def _continuation_problem(rec: Mapping[str, object], run: str, seen: Mapping[str, int]) -> str | None:
    """Why a resume_requested / rollback_requested line that opens ``run`` is not a continuation upgrader writes:
    its of_run must name a run earlier in the log, and its run id is that run's id with /resume- or /rollback-."""
    kind = _CONTINUES.get(str(rec.get("event")))
    if kind is None:
        if rec.get("event") == "run_started" and "/" in run:  # a resume's or rollback's id shape (attack20r13 H2)
            return f"a run_started whose run id {run} is not one upgrader makes (UTC time and six hex digits)"
        return None
    data = rec.get("data")
    of_run = data.get("of_run") if isinstance(data, dict) else None
    if not isinstance(of_run, str) or not of_run:
        return f"a {rec.get('event')} of run {run} that names no earlier run (of_run)"
    if not run.startswith(f"{of_run}/{kind}-"):
        return f"a {rec.get('event')} whose run id {run} is not a {kind} of run {of_run}"
    if of_run not in seen:
        return f"a {rec.get('event')} of run {of_run}, a run not earlier in the log"
    return None


def _d(value: object) -> Mapping[str, object]:
    """``value`` when it is a mapping (a line's field as the log has it), else an empty one."""
    return value if isinstance(value, dict) else {}


def _after_problem(rec: Mapping[str, object], paused: Mapping[str, Mapping[str, object]],
                   continued: Collection[str]) -> str | None:
    """A resume going on after a canary (``after``) is written only for a run that paused after a healthy canary: its
    run_finished line (earlier in the log) left each host the resume names ``waiting`` (or ``not_started``), and
    upgrader goes on with those hosts only, once: a finished continuation rewrites the run's result, which then
    waits no more (attack20r14 H1). Any other ``after`` is an edited line."""
    data = _d(rec.get("data"))
    if rec.get("event") != "resume_requested" or data.get("after") is None:
        return None
    of_run = str(data.get("of_run"))
    left = paused.get(of_run)
    hosts = data.get("hosts")
    if of_run in continued:
        return (f"its resume_requested line goes on after a canary (after {data.get('after')!r}), but run {of_run} "
                "already went on after its canary (an earlier continuation of it finished): upgrader goes on after a "
                "canary once")
    if left is None or "waiting" not in left.values():
        return (f"its resume_requested line goes on after a canary (after {data.get('after')!r}), but run {of_run} "
                "did not pause after a healthy canary (its run_finished line leaves no host waiting): upgrader goes "
                "on after a canary only with the hosts a paused run left waiting")
    for host in hosts if isinstance(hosts, list) else []:
        if left.get(str(host)) not in ("waiting", "not_started"):
            return (f"its resume_requested line goes on after a canary with host {host}, which run {of_run} ended "
                    f"{left.get(str(host))}, not waiting: upgrader goes on after a canary only with the hosts a "
                    "paused run left waiting")
    return None


#: a host's end that only a host past its preflight (under its lock) can have in a first run
_LOCKED_ENDS = frozenset(("committed", "rolled_back", "restored"))
#: the failures of a preflight after which the engine ends the host needing a person (a lock held by another run,
#: the host lost): any other failed preflight ends it refused, stale, unchanged and the like
_PERSON_FAILURES = frozenset(("locked", "unreachable"))


def _end_after_preflight(rec: Mapping[str, object],
                         preflight: Mapping[tuple[str, str], tuple[object, object] | None]) -> str | None:
    """A first run (or a continuation after a canary) ends a host committed, rolled back or restored only past a
    preflight that went well there: the engine ends a host whose preflight failed refused, stale, unchanged or
    needing a person (only for a lock held by another run or a host lost), and one whose preflight never finished
    (a crash in it) needing a person (attack20r14 H2)."""
    run, host, outcome = str(rec.get("run")), str(rec.get("host")), rec.get("outcome")
    key = (run, host)
    if key not in preflight:
        return None
    seen = preflight[key]
    if seen is not None and seen[0] == "ok":
        return None
    if outcome in _LOCKED_ENDS:
        how = "failed" if seen is not None else "never finished"
        return (f"its host_finished line ends host {host} {outcome} in run {run}, whose preflight there {how}: "
                "upgrader ends a host so only past a preflight that went well (under its lock)")
    if outcome == "needs_person" and seen is not None and seen[1] not in _PERSON_FAILURES:
        return (f"its host_finished line ends host {host} needs_person in run {run}, whose preflight there failed "
                f"({seen[1]!r}): upgrader ends a host whose preflight failed so only when its lock was held by another "
                "run or the host was lost (locked, unreachable)")
    return None


def _continuation_hosts(rec: Mapping[str, object], run_hosts: Mapping[str, set[str]]) -> str | None:
    """A resume or rollback goes on with hosts of its run only (its plan's): one naming another host is an edited
    line (attack20r12 LOW)."""
    data = rec.get("data")
    if rec.get("event") not in _CONTINUES or not isinstance(data, dict):
        return None
    planned = run_hosts.get(str(data.get("of_run")))
    hosts = data.get("hosts")
    if planned is None or not isinstance(hosts, list):
        return None
    other = [h for h in hosts if isinstance(h, str) and h not in planned]
    if other:
        return (f"its {rec.get('event')} line names host(s) {', '.join(other)}, which run {data.get('of_run')} "
                "does not have: upgrader resumes or rolls back only a run's own hosts")
    return None


def _shape_problem(rec: Mapping[str, object]) -> str | None:
    """Why a line is not shaped like an event upgrader writes (unknown keys or event, a field of the wrong type)."""
    keys = _CHECKPOINT_KEYS if rec.get("event") == "checkpoint" else _KEYS
    extra = set(rec) - keys
    if extra:
        return f"unknown field(s) {', '.join(sorted(map(repr, extra)))}"
    if type(rec.get("prev")) is not str or type(rec.get("time")) is not str:
        return "'prev' and 'time' must be text"
    if "mono" in rec and type(rec.get("mono")) not in (int, float):
        return "'mono' must be a number"
    event = rec.get("event")
    if type(event) is not str or event not in KNOWN_EVENTS:
        return f"unknown event {str(event)[:60]!r}"
    for k in ("run", "host", "phase", "outcome"):
        if rec.get(k) is not None and type(rec.get(k)) is not str:
            return f"{k!r} must be text"
    if rec.get("actor") is not None and not isinstance(rec.get("actor"), dict):
        return "'actor' must be an object"
    if rec.get("data") is not None and not isinstance(rec.get("data"), dict):
        return "'data' must be an object"
    return None


_DIGEST = re.compile(r"[0-9a-f]{64}")

#: the kinds of value upgrader writes in a run's lines, as the checks and views read them (attack20r11 M4): "text",
#: "text?" (or null), "object", "object?", "list", "number", "integer", "flag?" (true, false or null)
_KINDS: dict[str, Callable[[object], bool]] = {
    "text": lambda v: type(v) is str, "text?": lambda v: v is None or type(v) is str,
    "object": lambda v: isinstance(v, dict), "object?": lambda v: v is None or isinstance(v, dict),
    "list": lambda v: isinstance(v, list), "number": lambda v: type(v) in (int, float),
    "integer": lambda v: type(v) is int, "flag?": lambda v: v is None or type(v) is bool}
_APPROVAL = {"approver": "text", "key": "text", "expires": "text", "digest": "text", "comment": "text?",
             "after_hours": "flag?"}
_CONTINUATION = {"of_run": "text", "hosts": "list", "policy": "object?", "window": "object?"}
#: event -> {field of its data: kind}; a field absent is not judged here (the checks that need it say so)
_DATA_KINDS: dict[str, dict[str, str]] = {
    "run_started": {"plan": "text", "target": "text", "requester": "object", "approvals": "list",
                    "catalog": "object?", "policy": "object?", "window": "object?", "hosts": "list"},
    "resume_requested": _CONTINUATION, "rollback_requested": _CONTINUATION,
    "approval_accepted": _APPROVAL,
    "host_finished": {"version": "text?", "error": "text?", "rollback_cause": "text?"},
    "run_finished": {"outcomes": "object", "exit_code": "integer", "stopped_early": "text?"},
    "phase_finished": {"seconds": "number", "detail": "text?", "result": "object?"},
}
#: the objects inside an opening line's data: {field: kind}
_INNER_KINDS: dict[str, dict[str, str]] = {
    "requester": {"user": "text?", "host": "text?", "key": "text?"},
    "policy": {"sha256": "text?", "identity": "text?", "source": "text?"},
    "window": {"inside": "flag?", "reason": "text?"},
    "catalog": {"sha256": "text?", "signer": "text?", "fingerprint": "text?", "path": "text?"},
}
_HOST_KINDS = {"host": "text", "current": "text?", "target": "text?", "address": "text?", "install_dir": "text?",
               "package": "object?"}
_SHOWN_KIND = {"text": "text", "text?": "text or null", "object": "an object", "object?": "an object or null",
               "list": "a list", "number": "a number", "integer": "a whole number", "flag?": "true, false or null"}


def _misfits(rec: Mapping[str, object]) -> Iterator[tuple[tuple[object, ...], object, str]]:
    """Each value in a run line's data of a kind upgrader never writes there: (its path below ``data``, the value,
    the kind written there; "item": a list item to leave out)."""
    event, data = rec.get("event"), rec.get("data")
    if not isinstance(data, dict):
        return
    for name, kind in _DATA_KINDS.get(str(event), {}).items():
        if name in data and not _KINDS[kind](data[name]):
            yield (name,), data[name], kind
    if event in OPENING_EVENTS:
        for name, kinds in _INNER_KINDS.items():
            found = data.get(name)
            inner: Mapping[str, object] = found if isinstance(found, dict) else {}
            for k, kind in kinds.items():
                if k in inner and not _KINDS[kind](inner[k]):
                    yield (name, k), inner[k], kind
        hosts = data.get("hosts")
        for i, h in enumerate(hosts if isinstance(hosts, list) else []):
            if event == "run_started" and isinstance(h, dict):
                for k, kind in _HOST_KINDS.items():
                    if (k in h or k == "host") and not _KINDS[kind](h.get(k)):
                        yield ("hosts", i, k), h.get(k), kind
            elif event == "run_started" or type(h) is not str:
                yield ("hosts", i), h, "item"
    given = data.get("approvals") if event == "run_started" else None
    for i, a in enumerate(given if isinstance(given, list) else []):
        if not isinstance(a, dict):
            yield ("approvals", i), a, "item"
            continue
        for k, kind in _APPROVAL.items():
            if k in a and not _KINDS[kind](a[k]):
                yield ("approvals", i, k), a[k], kind
    journal = data.get("journal") if event == "resume_requested" else None
    if "journal" in data and event == "resume_requested" and not isinstance(journal, dict):
        yield ("journal",), journal, "object"
    for host, seen in journal.items() if isinstance(journal, dict) else ():
        if not isinstance(seen, dict):
            yield ("journal", host), seen, "object"
            continue
        for k, kind in (("intents", "list"), ("ended", "text?")):
            if k in seen and not _KINDS[kind](seen[k]):
                yield ("journal", host, k), seen[k], kind
    outcomes = data.get("outcomes") if event == "run_finished" else None
    for host, said in outcomes.items() if isinstance(outcomes, dict) else ():
        if type(said) is not str or said not in OUTCOME_EXIT:
            yield ("outcomes", host), said, "outcome"


def _data_problem(rec: Mapping[str, object]) -> str | None:
    """Why a run line's data is not what upgrader writes there (the fields the checks read, hash and compare): an
    opening line names at least one host (a plan without hosts is never allowed, a host pattern that leaves none is
    refused), each approval a run names carries its 64-hex digest, a run's end its hosts' outcomes as known outcome
    words and its exit code as a number, a host's end a known outcome, and every field the checks or views read
    holds the kind of value upgrader writes there (_misfits). None when the line is sound or of no run."""
    event, data = rec.get("event"), rec.get("data")
    d: Mapping[str, object] = data if isinstance(data, dict) else {}
    if event in _CONTINUES and not isinstance(d.get("of_run"), str):
        return None  # a continuation of no earlier run: forged (_continuation_problem names it)
    # a first run's line that names no plan and no host claims nothing to hold it to (no host, plan or approval:
    # no upgrader run, and nothing the case or the hosts could show); one that names a plan or hosts names its hosts
    if event in _CONTINUES or event == "run_started" and ("plan" in d or "hosts" in d):
        hosts = d.get("hosts")
        if not isinstance(hosts, list) or not hosts:
            return (f"its {event} line names no host ('hosts' is {_short(hosts)}): upgrader opens a run, resume or "
                    "rollback only for at least one host")
    if event == "run_started" or event == "approval_accepted":
        given = d.get("approvals", []) if event == "run_started" else [d]
        for a in given if isinstance(given, list) else []:
            digest = a.get("digest") if isinstance(a, dict) else None
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                return (f"its {event} line names an approval without its digest (64 hex digits): {_short(a)}; "
                        "upgrader names every approval it accepts by its digest")
    if event == "host_finished" and rec.get("outcome") is not None and rec.get("outcome") not in OUTCOME_EXIT:
        return f"its host_finished line's outcome {_short(rec.get('outcome'))} is not an outcome upgrader writes"
    for path, value, kind in _misfits(rec):
        where = ".".join(str(p) for p in path)
        if kind == "outcome":
            return f"its {event} line's outcome of host {path[1]} is {_short(value)}, not an outcome upgrader writes"
        if kind == "item":
            return f"its {event} line's '{where}' is {_short(value)}, not an entry upgrader writes there"
        return f"its {event} line's '{where}' is {_short(value)}, not {_SHOWN_KIND[kind]}"
    return None


def fitted(rec: dict[str, object]) -> dict[str, object]:
    """``rec`` with each misfit of its data (_misfits: verify_log names the line edited) replaced by what the views
    can show: text as its JSON text, an object or list as an empty one, anything else as null; a list entry of
    another kind is left out. The views of an edited log then show it instead of failing."""
    misfits = list(_misfits(rec))
    if not misfits:
        return rec
    fitted = json.loads(json.dumps(rec))
    drop: list[tuple[object, ...]] = []
    for path, value, kind in misfits:
        at = fitted["data"]
        for p in path[:-1]:
            at = at[p]
        if kind == "item":
            drop.append(path)
            continue
        at[path[-1]] = (json.dumps(value, ensure_ascii=False) if kind in ("text", "text?", "outcome") else
                        {} if kind.startswith("object") else [] if kind == "list" else None)
    for path in sorted(drop, key=lambda p: -int(str(p[1]))):  # the highest index first
        del fitted["data"][path[0]][path[1]]
    return cast("dict[str, object]", fitted)


def _short(value: object) -> str:
    """A field's value as the problem names it (JSON, cut to 60 characters)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:59] + "…"


def _clock_problem(rec: Mapping[str, object], prev_time: str) -> str | None:
    """Why a line's ``clock`` is not one the writer keeps (_raised): only beside a time raised to the line before's,
    and earlier than it. None when the line has none or a sound one."""
    if "clock" not in rec:
        return None
    clock = rec.get("clock")
    if type(clock) is not str or not clock < str(rec.get("time")) or rec.get("time") != prev_time:
        return (f"'clock' {str(clock)[:40]!r} beside time {rec.get('time')}: the writer keeps its clock only beside a "
                f"time raised to the line before's ({prev_time or 'none'}), and earlier than it")
    return None


class _HeadMismatch(str):
    """A checkpoint whose signature is sound over a head that is no longer the hash of the line before it."""

    def __new__(cls, seq: int, signed: str) -> _HeadMismatch:
        obj = super().__new__(cls, "head mismatch")
        obj.seq, obj.signed = seq, signed
        return obj

    seq: int
    signed: str


def _checkpoint_problem(rec: AuditEvent, n: int, prev_hash: str, time: str) -> str | None:
    """Why the checkpoint on line ``n`` does not prove the chain up to ``prev_hash`` by its own key; None when it
    does. The line's unsigned fields are pinned: no host, phase, outcome or data, and the key is the signing key's
    fingerprint."""
    from ..trust.sshsig import SignatureError, fingerprint, parse_armored, verify

    cp = rec.get("checkpoint")
    if not isinstance(cp, dict) or set(cp) != {"seq", "head", "signer", "key", "signature"}:
        return "the line holds no checkpoint of the known shape (seq, head, signer, key, signature)"
    if type(cp["seq"]) is not int or not all(type(cp[k]) is str for k in ("head", "signer", "key", "signature")):
        return "a checkpoint field has the wrong type"
    if any(rec.get(k) is not None for k in ("host", "phase", "outcome")):
        return "a checkpoint line names no host, phase or outcome (those fields were added)"
    try:
        sig = parse_armored(cp["signature"])
        # the signature over what the checkpoint says it signs: sound, yet naming another head, is a rewrite of
        # the lines it covers ("head mismatch"), not a forged signature
        verify(sig, checkpoint_statement(cp["seq"], cp["head"], rec.get("run"), cp["signer"], time), NAMESPACE)
    except (SignatureError, ValueError) as e:
        if cp["seq"] != n - 1 or cp["head"] != prev_hash:
            return "it does not name the line before it"
        return str(e)
    if cp["seq"] != n - 1:
        return "it does not name the line before it"
    if cp["head"] != prev_hash:
        return _HeadMismatch(cp["seq"], cp["head"])
    if cp["key"] != fingerprint(sig.public_key):
        return f"checkpoint.key {cp['key'][:60]!r} is not the fingerprint of the key that signed it"
    return None


def _actor_problem(rec: AuditEvent, run_actor: object) -> str | None:
    """A checkpoint's actor is not signed: it must be the actor of the run's own lines (which the signature covers)
    and name the signing key and signer."""
    cp = rec["checkpoint"]
    actor = rec.get("actor")
    if run_actor is not None and actor != run_actor:
        return "its actor is not the one that wrote the run's events"
    if actor:
        if set(actor) != _ACTOR_KEYS or actor.get("key") != cp["key"] or actor.get("principal") != cp["signer"]:
            return "its actor does not name the signing key and signer"
    return None


def _signer_problem(rec: AuditEvent, signers: AllowedSigners | None, when: _dt.datetime) -> str | None:
    """Why the allowed signers do not let this checkpoint's signer sign now; None when they do (or are unknown)."""
    from ..trust.sshsig import parse_armored

    if signers is None:  # only the signature against its own key: the verdict is "cannot check"
        return None
    cp = rec["checkpoint"]
    try:
        signers.check(cp["signer"], parse_armored(cp["signature"]).public_key, NAMESPACE, when)
    except ValueError as e:
        return str(e)
    return None


def read_events(path: Path, data: bytes | None = None) -> Iterator[dict[str, object]]:
    """Parsed events of a log, from ``data`` (the bytes ``verify_log`` judged) when given (lines that are not a
    JSON object are skipped; use verify_log to judge the log)."""
    for line in io.BytesIO(read_log(path) if data is None else data):
        rec = _record(line if line.endswith(b"\n") else line + b"\n")
        if isinstance(rec, dict):
            yield fitted(rec)
