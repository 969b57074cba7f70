"""The engine's events as JSON Lines: one object per event, for schedulers (AWX, Rundeck, Jenkins, Airflow)
that show a run's progress and keep it (``upgrader run --events FILE|-``, ``upgrader.api.run(events=...)``).

Format 1, stable: every line is one JSON object with exactly these keys (``null`` where a key does not apply):

``format``       1
``event``        run_started, host_started, phase_started, phase_finished, host_retry, rollback_started,
                 config_changed_since, lock_broken, canary_finished, host_finished, run_finished
``time``         ISO 8601 with its UTC offset
``run``          the run id
``host``         the host's name (``null`` for run_started, canary_finished and run_finished)
``phase``        the phase (phase_started, phase_finished; host_retry: the agent action retried)
``status``       started (run/host/phase started), ok or failed (phase_finished, canary_finished), retry,
                 rolling_back, the host's outcome (host_finished: committed, rolled_back, unchanged, ...),
                 done (run_finished when every host ended well) or failed (run_finished otherwise)
``seconds``      how long the phase took (phase_finished)
``detail``       the phase's detail or error, the rollback's cause, the host's error, why the run stopped early
``from_version`` the version the host runs before the move (run, resume: the plan's current version;
                 rollback: the plan's target)
``to_version``   the version the move goes to
``version``      what the host runs at its end (host_finished)
``exit_code``    the run's exit code (run_finished)

New keys may be added in format 1; none is removed or changes meaning without a new ``format``. Text is
redacted as in every output (passwords, tokens and keys are ``***``). Each line is written and flushed
as the event happens; the events of different hosts interleave in the order they happened.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TextIO

from ..audit.redaction import redact_value
from .shapes import Event, JSONObject

__all__ = ["FORMAT", "FIELDS", "EventStream", "event_line"]

FORMAT = 1
#: the keys of every line, in this order
FIELDS = ("format", "event", "time", "run", "host", "phase", "status", "seconds", "detail", "from_version",
          "to_version", "version", "exit_code")

_STATUS = {"run_started": "started", "host_started": "started", "phase_started": "started", "host_retry": "retry",
           "rollback_started": "rolling_back", "config_changed_since": "changed", "lock_broken": "forced"}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def event_line(event: Event, versions: Mapping[str, tuple[str | None, str | None]]) -> JSONObject:
    """The format-1 object of one engine event (``versions``: host -> (from, to))."""
    kind = str(event.get("event"))
    host = _text(event.get("host"))
    status: object = _STATUS.get(kind)
    detail: object = None
    phase: object = event.get("phase")
    if kind == "phase_finished":
        status, detail = event.get("status"), event.get("detail")
    elif kind == "host_retry":
        phase, detail = event.get("op"), event.get("error")
    elif kind == "rollback_started":
        detail = event.get("cause")
    elif kind == "config_changed_since":
        paths = event.get("paths")
        detail = ", ".join(str(p) for p in paths) if isinstance(paths, list) else _text(paths)
    elif kind == "lock_broken":
        holder = event.get("holder")
        detail = f"broke the lock of run {holder.get('run')}" if isinstance(holder, dict) else None
    elif kind == "canary_finished":
        status, detail = ("ok" if event.get("ok") else "failed"), event.get("stopped")
    elif kind == "host_finished":
        status, detail = event.get("outcome"), event.get("error")
    elif kind == "run_finished":
        status = "done" if event.get("exit_code") == 0 else "failed"
        detail = event.get("stopped_early")
    elif kind == "run_started":
        hosts = event.get("hosts")
        detail = f"{len(hosts)} host(s)" if isinstance(hosts, list) else None
    before, after = versions.get(host, (None, None)) if host else (None, None)
    seconds = event.get("seconds")
    line: JSONObject = {
        "format": FORMAT, "event": kind, "time": _text(event.get("time")), "run": _text(event.get("run")),
        "host": host, "phase": _text(phase), "status": _text(status),
        "seconds": float(seconds) if isinstance(seconds, (int, float)) else None, "detail": _text(detail) or None,
        "from_version": before, "to_version": after,
        "version": _text(event.get("version")) if kind == "host_finished" else None,
        "exit_code": event.get("exit_code") if kind == "run_finished" else None}
    redacted = redact_value(line)
    assert isinstance(redacted, dict)
    return {k: redacted.get(k) for k in FIELDS}


class EventStream:
    """An engine observer that writes each event as one JSON line to ``out`` (flushed at once; thread-safe).
    A write that fails (a closed pipe) stops the stream, never the run."""

    def __init__(self, out: TextIO, versions: Mapping[str, tuple[str | None, str | None]] | None = None) -> None:
        self.out = out
        self.versions: dict[str, tuple[str | None, str | None]] = dict(versions or {})
        self.broken = False
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        import json

        line = json.dumps(event_line(event, self.versions), ensure_ascii=False, sort_keys=False, default=str)
        with self._lock:
            if self.broken:
                return
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (OSError, ValueError):
                self.broken = True
