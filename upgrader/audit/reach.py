"""What the audit log's lines say, read the same way by the log's own checks (audit/log), the time checks
(audit/moved) and the witnesses' (audit/witness), kept apart from all three so none imports another: which hosts a
run reached (took the lock of), and a line's writer clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..core.shapes import JSONObject

#: the events that open a run, first run or continuation: only these may be a run's first line (attack20r15 M2)
OPENING_EVENTS = ("run_started", "resume_requested", "rollback_requested")


def run_opening(events: Iterable[Mapping[str, object]], run: str) -> Mapping[str, object] | None:
    """The run's opening line: its first line, when that is a run_started, resume_requested or rollback_requested;
    None when the run has no line or its first line is any other event (upgrader writes a run's opening line before
    any other line of it: a run opened by another event, approval_refused or plan_created carrying a run id, is an
    edited log, and no check reads a requester, plan, approvals, policy or window from a later line). The one reading
    of a run's opening shared by the log's checks, the witnesses and the case."""
    first = next((e for e in events if e.get("run") == run), None)
    return first if first is not None and first.get("event") in OPENING_EVENTS else None


def first_like(opener: Mapping[str, object] | None) -> bool:
    """A run read as a first run by its opening line (not its id; attack20r13 H2: "RUN/x" with a run_started line):
    a run_started, or a resume going on after a canary (``after``), which runs its waiting hosts as a first run does
    (attack20r13 H1)."""
    if opener is None:
        return False
    data = opener.get("data")
    return opener.get("event") == "run_started" or opener.get("event") == "resume_requested" \
        and isinstance(data, dict) and data.get("after") is not None


def run_openings(events: Iterable[Mapping[str, object]]) -> dict[str, Mapping[str, object] | None]:
    """{run: its opening line (run_opening), or None} for every run of the lines, in one pass."""
    firsts: dict[str, Mapping[str, object]] = {}
    for e in events:
        run = e.get("run")
        if isinstance(run, str) and run not in firsts:
            firsts[run] = e
    return {run: e if e.get("event") in OPENING_EVENTS else None for run, e in firsts.items()}


def _reached(events: list[JSONObject]) -> dict[str, set[str]]:
    """{run label: the hosts whose lock the log says it took}: the host passed preflight (which takes the lock), a
    later phase started there, or a rollback of it started there (the engine rolls a host back only under the lock);
    or, in a first run, the host started (connected) and ended with no failed preflight: the engine ends a host it
    connected to only through its preflight, so a host that started, did not fail its preflight and ended (needs a
    person, committed, anything) took the lock (attack20r11 H0). A host that stopped before its lock is not reached:
    its preflight failed (refused, locked, unreachable) or never finished (the engine crashed in it), it was never
    started (not_started, waiting), or it never connected (a host_finished line alone). A resume or rollback may end
    a host without taking its lock (nothing of the run was there to go on with or undo): only its phases and its
    rollback count."""
    out: dict[str, set[str]] = {}
    started: set[tuple[str, str]] = set()
    ended: set[tuple[str, str]] = set()
    failed: set[tuple[str, str]] = set()
    checking: set[tuple[str, str]] = set()
    for e in events:
        run, host, phase, event = e.get("run"), e.get("host"), e.get("phase"), e.get("event")
        if not isinstance(run, str) or not isinstance(host, str):
            continue
        if event == "phase_started" and phase not in (None, "preflight") or event == "rollback_started" or \
                event == "phase_finished" and phase == "preflight" and e.get("outcome") == "ok":
            out.setdefault(run, set()).add(host)
        elif event == "phase_finished" and phase == "preflight":
            failed.add((run, host))
            checking.discard((run, host))
        elif event == "phase_started" and phase == "preflight":
            checking.add((run, host))  # never finished: the engine crashed in it, maybe before the lock
        elif event == "host_started":
            started.add((run, host))
        elif event == "host_finished" and e.get("outcome") not in ("not_started", "waiting"):
            ended.add((run, host))
    # a first run by its opening line (run_opening), and a resume going on after a canary (first_like)
    firsts = {run for run, opener in run_openings(events).items() if first_like(opener)}
    for run, host in (started & ended) - failed - checking:
        if run in firsts:
            out.setdefault(run, set()).add(host)
    return out


def line_clock(e: Mapping[str, object]) -> object:
    """The controller's clock when a line was written: its ``clock`` when the writer raised its time (_raised),
    else its ``time``."""
    clock = e.get("clock")
    return clock if isinstance(clock, str) else e.get("time")
