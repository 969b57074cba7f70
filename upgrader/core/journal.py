"""The run journal: the controller's durable record of how far each host of a run got.

One directory per run id (``runs/<run_id>/``) with ``plan.json`` (the plan that ran),
``journal.jsonl`` (one record a line: sequence number, time, host, phase, event, data and a
checksum of the record) and ``result.json`` (the outcome, replaced atomically). A record is
written and fsynced *before* the side effect it announces ("intent") and after the effect was
observed ("done"/"failed"), so that a later ``resume`` can decide from it. A torn last line is
detected by its checksum; the valid prefix is authoritative.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import InputError
from ..audit.redaction import redact_value

__all__ = ["Journal", "JournalRecord", "read_journal", "write_json_atomic", "new_run_id", "runs_dir"]


def write_json_atomic(path: Path, data: object) -> None:
    """Temp file, fsync, rename, fsync the directory: readers see the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    from .plan import readable_json

    with open(tmp, "w", encoding="utf-8") as f:
        f.write(readable_json(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_run_id(now: _dt.datetime) -> str:
    """A sortable, unique run id: UTC time plus random bits (e.g. 20261126T101500Z-3f9a2c)."""
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()


@dataclass(frozen=True)
class JournalRecord:
    seq: int
    time: str
    host: str | None
    phase: str
    event: str
    data: dict[str, Any]


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


class Journal:
    """Append-only, fsynced records of one run; safe to use from several host threads."""

    def __init__(self, run_dir: Path, clock: Callable[[], _dt.datetime]) -> None:
        self.dir = run_dir
        self.path = run_dir / "journal.jsonl"
        self._clock = clock
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._file: Any = None
        self._synced = 0
        run_dir.mkdir(parents=True, exist_ok=True)
        existing = list(read_journal(self.path)) if self.path.exists() else []
        self._seq = existing[-1].seq if existing else 0
        self._synced = self._seq
        if self.path.exists():
            self._truncate_torn_tail()

    @property
    def run_id(self) -> str:
        return self.dir.name

    def _truncate_torn_tail(self) -> None:
        valid = 0
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n") or _parse(line) is None:
                    break
                valid += len(line)
        if valid != self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(valid)
                os.fsync(f.fileno())

    def record(self, phase: str, event: str, host: str | None = None, **data: object) -> JournalRecord:
        """Append one record and return once it is on disk.

        Group commit: many host threads append at once; each waits until an fsync that started after
        its own write has finished, so one fsync makes a whole group of concurrent records durable."""
        with self._lock:
            self._seq += 1
            rec = JournalRecord(self._seq, self._clock().isoformat(timespec="milliseconds"), host, phase,
                                event, data)
            body = json.dumps({"seq": rec.seq, "time": rec.time, "host": host, "phase": phase, "event": event,
                               "data": redact_value(data)}, sort_keys=True, ensure_ascii=False, default=str)
            # the bytes json.dumps({"crc": ..., "rec": rec}, sort_keys=True) gives, without encoding rec twice
            line = f'{{"crc": "{_checksum(body)}", "rec": {body}}}\n'
            if self._file is None:
                self._file = open(self.path, "ab")
            self._file.write(line.encode("utf-8"))
            self._file.flush()
            mine = rec.seq
        with self._sync_lock:
            if self._synced < mine:
                with self._lock:
                    upto = self._seq
                os.fsync(self._file.fileno())
                self._synced = upto
        return rec

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def write(self, name: str, data: object) -> Path:
        """A run file (result.json, ...), redacted: it goes into bundles and is read by people."""
        path = self.dir / name
        write_json_atomic(path, redact_value(data))
        return path


def _parse(line: bytes) -> JournalRecord | None:
    try:
        outer = json.loads(line)
        rec = outer["rec"]
        body = json.dumps(rec, sort_keys=True, ensure_ascii=False, default=str)
        if _checksum(body) != outer["crc"]:
            return None
        return JournalRecord(rec["seq"], rec["time"], rec["host"], rec["phase"], rec["event"], rec["data"])
    except (ValueError, KeyError, TypeError):
        return None


def read_journal(path: Path) -> Iterator[JournalRecord]:
    """The valid prefix of a journal: stops at the first torn, corrupt or out-of-sequence record."""
    try:
        f = open(path, "rb")
    except FileNotFoundError as e:
        raise InputError("run journal not found", path=str(path), hint="check the run id") from e
    with f:
        expected = 1
        for line in f:
            rec = _parse(line) if line.endswith(b"\n") else None
            if rec is None or rec.seq != expected:
                return
            expected += 1
            yield rec


def runs_dir(home: Path) -> Path:
    """Where the runs' directories are (``HOME/runs``)."""
    return home / "runs"


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def run_dir_of(home: Path, run_id: str) -> Path:
    """``HOME/runs/RUN_ID`` for a run id that is one name there; InputError for anything else (``.``, ``..``, a
    ``/``, an empty id), which would name another directory."""
    if not _RUN_ID.match(run_id):
        raise InputError(f"{run_id!r} is not a run id: a run id is one name (letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit; no '/', not '.' or '..')",
                         hint="the run ids are the names of the directories in HOME/runs; 'upgrader status' lists "
                              "the runs")
    return runs_dir(home) / run_id
