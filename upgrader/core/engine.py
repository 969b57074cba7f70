"""The engine: runs a plan's phases on each host and decides rollback.

It knows the phases and their order, the journal and the failure rules; it does not know how a
host is reached (a ``Transport`` is handed in through ``connect``), what time it is (a ``Clock``
is handed in) or how progress is shown (``observers`` receive events). Every side effect on a
host is announced in the journal (``intent``) before it happens and recorded after
(``done``/``failed``), so a killed run can be resumed from the journal and the host's own state.

Terminal outcomes of a host: ``committed`` (new version healthy), ``rolled_back`` (old version
restored and healthy), ``unchanged`` (failed before stop; nothing was changed), ``needs_person``
(rollback failed, host lost, or locked by someone else), ``not_started`` (the failure budget was
spent before its turn), ``waiting`` (after a healthy canary, for the operator's go-ahead: no failure), and
for a rollback requested after the fact, ``restored``. A rollback or resume
that finds the host changed by a later run since ends ``superseded`` before anything is stopped.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Protocol, Sequence, TypeVar, cast

from .clock import Clock
from .errors import InputError, TransportError
from .host_paths import check_rendered, paths_to_check
from .journal import Journal
from .shapes import (AgentReply, Event, HookSpec, JournalSeen, JSONObject, ObserveSpec, PlanHost, PlanPackage,
                     PlaybookSpec)
from ..fleet.transport.base import AgentClient, AgentFailure, Transport

__all__ = ["Engine", "HostOutcome", "RunResult", "Observer", "HostTarget", "OUTCOME_EXIT", "CANCELLED"]

#: the cause recorded when the operator cancels a run
CANCELLED = "cancelled by the operator"

T = TypeVar("T")
#: one agent action and its request (the engine adds the install's base fields)
Request = tuple[str, dict[str, object]]

#: exit code contributed by each host outcome (the run exits with the highest); ``bad_input``: refused before
#: stop because a path the run would touch leads out of the install dir (nothing was changed)
OUTCOME_EXIT = {"committed": 0, "restored": 0, "unchanged": 1, "rolled_back": 1, "not_started": 1,
                "stale": 2, "bad_input": 2, "policy_refused": 3, "refused": 4, "needs_person": 5,
                "superseded": 5, "waiting": 0}


class Observer(Protocol):
    def on_event(self, event: Event) -> None: ...


@dataclass(frozen=True)
class HostTarget:
    """Where one host of the plan is: its plan entry plus how to reach it."""

    plan: PlanHost
    connect: Callable[[], Transport]
    package_file: Path


@dataclass
class PhaseRecord:
    phase: str
    status: str          # ok | failed | skipped
    seconds: float
    detail: str = ""
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass
class HostOutcome:
    host: str
    outcome: str
    current: str | None
    target: str | None
    version: str | None = None            # what runs at the end
    phases: list[PhaseRecord] = field(default_factory=list)
    error: str | None = None
    rollback_cause: str | None = None
    downtime: float | None = None         # stop requested -> healthy again (upgrade or rollback)
    service_time: float | None = None     # the product's own stop + start-to-ready time within downtime
    backup_digest: str | None = None
    seconds: float = 0.0
    groups: tuple[str, ...] = ()          # the inventory groups of the host (for the mixed-version warning)
    after: JSONObject | None = None   # what was read on the host at the end (version, healthy), when in doubt
    finished: bool = False                # the host recorded this part's finish (its own record: witnessed at the end)

    def to_dict(self) -> JSONObject:
        return {"host": self.host, "groups": list(self.groups), "outcome": self.outcome, "current": self.current,
                "target": self.target,
                "version": self.version, "error": self.error, "rollback_cause": self.rollback_cause,
                "downtime": self.downtime, "service_time": self.service_time,
                "backup_digest": self.backup_digest, "seconds": round(self.seconds, 3),
                "phases": [{"phase": p.phase, "status": p.status, "seconds": round(p.seconds, 3),
                            "detail": p.detail, **({"data": p.data} if p.data else {})} for p in self.phases],
                **({"after": self.after} if self.after is not None else {}),
                **({"finished": True} if self.finished else {})}


@dataclass
class RunResult:
    run_id: str
    hosts: list[HostOutcome]
    stopped_early: str | None = None

    @property
    def exit_code(self) -> int:
        return max((OUTCOME_EXIT[h.outcome] for h in self.hosts), default=0)

    @property
    def waiting(self) -> int:
        """Hosts that wait for a confirmation after a healthy canary."""
        return sum(1 for h in self.hosts if h.outcome == "waiting")

    def to_dict(self) -> JSONObject:
        return {"run_id": self.run_id, "exit_code": self.exit_code, "stopped_early": self.stopped_early,
                "hosts": [h.to_dict() for h in self.hosts]}


class _PhaseFailed(Exception):
    def __init__(self, phase: str, message: str, kind: str = "failed") -> None:
        super().__init__(message)
        self.phase = phase
        self.message = message
        self.kind = kind


class Engine:
    """Runs plans. One engine per run."""

    def __init__(self, *, journal: Journal, clock: Clock, observers: list[Observer] | None = None,
                 forks: int = 4, batch: int | None = None, max_failures: int | None = None,
                 controller: dict[str, str] | None = None, manual_changes: str = "warn", canary: int = 0,
                 confirm: Callable[[list[HostOutcome]], bool] | None = None, retries: int = 3,
                 retry_delay: float = 1.0, sleep: Callable[[float], None] | None = None,
                 approvals: tuple[str, ...] = (), break_lock: bool = False,
                 cancel: threading.Event | None = None, catalog_serial: int | None = None,
                 host_evidence: Mapping[str, object] | None = None,
                 audit: Mapping[str, object] | None = None,
                 on_locked: Callable[[], None] | None = None) -> None:
        self.journal = journal
        # called once a host's lock is taken for this run, before anything is changed there (``run`` records its
        # approvals spent then: a run killed later, then rolled back, leaves them spent); an OSError from it
        # releases the lock and refuses the host
        self.on_locked = on_locked
        # what each host records of this run at its finish beside its own account (hostagent/witness.py): the id
        # the audit log gives this part of the run (``as``), the plan digest, the service window as judged now
        self.audit = {k: v for k, v in (audit or {}).items() if v is not None}
        self.clock = clock
        self.observers = list(observers or [])
        self.forks = max(1, forks)
        self.batch = batch
        self.max_failures = max_failures
        self.untouched: frozenset[str] = frozenset()  # rollback: hosts the run never touched
        self.controller = controller or {}
        self.manual_changes = manual_changes
        self.canary = max(0, canary)
        self.confirm = confirm
        self.retries = max(0, retries)
        self.retry_delay = retry_delay
        self.sleep = sleep or _sleep
        self.approvals = tuple(approvals)
        self.break_lock = break_lock  # an operator's explicit decision that a lock is stale
        # the serial of the signed catalog the run installs from: each host refuses one older than it has seen
        self.catalog_serial = catalog_serial
        # what a host with its own trust root checks for itself (hostagent/hosttrust.py): the plan's canonical bytes
        # and the requester's signature, the approvals, the catalog and its signature; None sends nothing
        self.host_evidence = dict(host_evidence) if host_evidence is not None else None
        # set by the operator (Ctrl-C in `guide`): a host before stop is released unchanged, a host after
        # stop is rolled back; checked between phases only, never during a rollback
        self.cancel = cancel or threading.Event()
        self._failures = 0
        self._lock = threading.Lock()

    @property
    def run_id(self) -> str:
        return self.journal.run_id

    def emit(self, kind: str, host: str | None = None, **data: object) -> None:
        event = {"event": kind, "run": self.run_id, "host": host, "time": self.clock.now().isoformat(), **data}
        for o in self.observers:
            o.on_event(event)

    # -- the run ------------------------------------------------------------------------------

    def run(self, targets: list[HostTarget]) -> RunResult:
        """Canary hosts first and alone, then rolling batches; the failure budget counts over the whole run."""
        names = [t.plan["name"] for t in targets]
        self.journal.record("run", "start", hosts=names, canary=self.canary, batch=self.batch,
                            max_failures=self.max_failures)
        self.emit("run_started", hosts=names)
        outcomes: dict[str, HostOutcome] = {}
        stopped_early = None
        waiting = False
        waves: list[list[HostTarget]] = []
        rest = list(targets)
        if self.canary:
            waves.append(rest[:self.canary])
            rest = rest[self.canary:]
        size = self.batch or len(rest) or 1
        waves += [rest[i:i + size] for i in range(0, len(rest), size)]
        for index, wave in enumerate(waves):
            if stopped_early is None and self._budget_spent():
                stopped_early = f"more than {self.max_failures} host(s) failed; no new host was started"
            if stopped_early is None and self.cancel.is_set():
                stopped_early = f"{CANCELLED}; no new host was started"
            if stopped_early is not None:
                for t in wave:
                    outcomes[t.plan["name"]] = self._not_started(t, stopped_early, waiting)
                continue
            with ThreadPoolExecutor(max_workers=min(self.forks, len(wave))) as pool:
                for outcome in pool.map(self._host_guarded, wave):
                    outcomes[outcome.host] = outcome
            if self.canary and index == 0 and len(waves) > 1:
                failed = [o for o in (outcomes[t.plan["name"]] for t in wave) if o.outcome != "committed"]
                if failed and self.cancel.is_set():
                    stopped_early = f"{CANCELLED} during the canary; the other hosts were not touched"
                elif failed:
                    stopped_early = (f"the canary failed on {', '.join(o.host for o in failed)}; "
                                     "the other hosts were not touched")
                elif self.cancel.is_set() or self.confirm is None or \
                        not self.confirm([outcomes[t.plan["name"]] for t in wave]):
                    # the same run goes on later, under the same approval: `upgrader resume RUN_ID --yes`
                    canaries = [t.plan["name"] for t in wave]
                    # a healthy canary is a pause, not a failure: also when the operator cancelled once it had
                    # committed (README: the other hosts wait the same way; audit/log.py _after_problem reads it so)
                    waiting = True
                    stopped_early = (f"the canary succeeded on {', '.join(canaries)}; the other hosts wait for a "
                                     f"confirmation: go on with 'upgrader resume {self.run_id} --yes'")
                self.journal.record("canary", "end", ok=not failed, stopped=stopped_early)
                self.emit("canary_finished", ok=not failed, stopped=stopped_early)
        for t in targets:
            outcomes[t.plan["name"]].groups = tuple(t.plan.get("groups") or ())
        result = RunResult(self.run_id, [outcomes[n] for n in names], stopped_early)
        self.journal.record("run", "end", exit_code=result.exit_code,
                            outcomes={h.host: h.outcome for h in result.hosts})
        paused = {"outcome": "waiting", "reason": f"paused after a healthy canary: {result.waiting} host(s) wait: "
                  f"upgrader resume {self.run_id} --yes"} if result.waiting else {}
        self.emit("run_finished", exit_code=result.exit_code, stopped_early=stopped_early,
                  outcomes={h.host: h.outcome for h in result.hosts}, **paused)
        return result

    def rollback(self, targets: list[HostTarget], untouched: Collection[str] = ()) -> RunResult:
        """Roll back hosts of an earlier run (finished or killed) to the version before it, in batches like a
        run: once more than ``max_failures`` hosts did not end restored, no further host is stopped.
        ``untouched``: hosts the run's journal shows refused at preflight (never prepared, never stopped): nothing
        of this run is there to undo, so no step at all is sent to them (not even the lock)."""
        self.untouched = frozenset(untouched)
        self.journal.record("rollback", "requested", hosts=[t.plan["name"] for t in targets], batch=self.batch,
                            max_failures=self.max_failures)
        size = self.batch or len(targets) or 1
        outcomes: list[HostOutcome] = []
        stopped_early = None
        for i in range(0, len(targets), size):
            wave = targets[i:i + size]
            if stopped_early is None and self._budget_spent():
                stopped_early = (f"the rollback failed on more than {self.max_failures} host(s); no further host "
                                 "was stopped")
            if stopped_early is not None:
                for t in wave:
                    o = HostOutcome(t.plan["name"], "not_started", t.plan["current"], t.plan["target"],
                                    error=f"not rolled back: {stopped_early}")
                    outcomes.append(self._rollback_end(t, o))
                continue
            with ThreadPoolExecutor(max_workers=min(self.forks, len(wave))) as pool:
                done = list(pool.map(lambda t: self._timed(_HostRun(self, t).rollback_requested), wave))
            for t, o in zip(wave, done):
                if o.outcome != "restored":
                    with self._lock:
                        self._failures += 1
                outcomes.append(self._rollback_end(t, o))
        return RunResult(self.run_id, outcomes, stopped_early)

    def _timed(self, work: Callable[[], HostOutcome]) -> HostOutcome:
        """``work()``'s outcome with the time it took (the summary's time column of a rollback or resume)."""
        started = self.clock.monotonic()
        o = work()
        o.seconds = self.clock.monotonic() - started
        return o

    def _rollback_end(self, t: HostTarget, o: HostOutcome) -> HostOutcome:
        o.groups = tuple(t.plan.get("groups") or ())
        self.journal.record("host", "end", host=o.host, outcome=o.outcome, version=o.version)
        self.emit("host_finished", o.host, outcome=o.outcome, version=o.version, error=o.error)
        return o

    def resume(self, targets: list[HostTarget], seen: Mapping[str, JournalSeen]) -> RunResult:
        """Finish what a killed run left, host by host, from the journal plus the host's own state."""
        self.journal.record("resume", "start", hosts=[t.plan["name"] for t in targets])
        with ThreadPoolExecutor(max_workers=min(self.forks, len(targets) or 1)) as pool:
            outcomes = list(pool.map(lambda t: self._resume_guarded(t, seen.get(t.plan["name"], {})), targets))
        result = RunResult(self.run_id, outcomes)
        self.journal.record("run", "end", exit_code=result.exit_code, resumed=True,
                            outcomes={h.host: h.outcome for h in outcomes})
        return result

    def _resume_guarded(self, t: HostTarget, seen: JournalSeen) -> HostOutcome:
        started = self.clock.monotonic()
        try:
            o = _HostRun(self, t).resume(seen)
        except Exception as e:  # noqa: BLE001 - one host's crash must not take the others down
            o = HostOutcome(t.plan["name"], "needs_person", t.plan["current"], t.plan["target"],
                            error=f"internal error while resuming: {type(e).__name__}: {e}")
        o.seconds = self.clock.monotonic() - started
        self.journal.record("host", "end", host=o.host, outcome=o.outcome, version=o.version, resumed=True)
        self.emit("host_finished", o.host, outcome=o.outcome, version=o.version, error=o.error)
        return o

    def _budget_spent(self) -> bool:
        with self._lock:
            return self.max_failures is not None and self._failures > self.max_failures

    def _not_started(self, t: HostTarget, why: str = "the run's failure budget was spent",
                     waiting: bool = False) -> HostOutcome:
        """A host this run did not touch: ``waiting`` after a healthy canary, else ``not_started``."""
        if waiting:
            o = HostOutcome(t.plan["name"], "waiting", t.plan["current"], t.plan["target"], version=t.plan["current"],
                            error=f"waits for a confirmation after the healthy canary: upgrader resume {self.run_id} --yes")
        else:
            o = HostOutcome(t.plan["name"], "not_started", t.plan["current"], t.plan["target"],
                            version=t.plan["current"], error=f"not started: {why}")
        self.journal.record("host", "not_started", host=o.host, waiting=waiting)
        self.emit("host_finished", o.host, outcome=o.outcome, version=o.version, error=o.error)
        return o

    def _host_guarded(self, t: HostTarget) -> HostOutcome:
        if self._budget_spent():
            return self._not_started(t)
        if self.cancel.is_set():
            return self._not_started(t, CANCELLED)
        started = self.clock.monotonic()
        try:
            outcome = _HostRun(self, t).execute()
        except Exception as e:  # noqa: BLE001 - a host's crash must not take the others down
            outcome = HostOutcome(t.plan["name"], "needs_person", t.plan["current"], t.plan["target"],
                                  error=f"internal error: {type(e).__name__}: {e}")
            self.journal.record("host", "crashed", host=outcome.host, error=outcome.error)
        outcome.seconds = self.clock.monotonic() - started
        if outcome.outcome != "committed":
            with self._lock:
                self._failures += 1
        self.journal.record("host", "end", host=outcome.host, outcome=outcome.outcome, version=outcome.version)
        self.emit("host_finished", outcome.host, outcome=outcome.outcome, version=outcome.version,
                  error=outcome.error, rollback_cause=outcome.rollback_cause)
        return outcome


class _HostRun:
    """One host's way through the phases."""

    def __init__(self, engine: Engine, target: HostTarget) -> None:
        self.e = engine
        self.t = target
        self.p = target.plan
        self.name = self.p["name"]
        self.spec = self.p["playbook"]["spec"]
        self.out = HostOutcome(self.name, "unchanged", self.p["current"], self.p["target"], version=self.p["current"])
        self.agent: AgentClient | None = None
        self.transport: Transport | None = None
        self.base: dict[str, Any] = {"install_dir": self.p["install_dir"], "state_dir": self.p.get("state_dir"),
                     "run_id": engine.run_id}
        self.stop_started: float | None = None
        self.service_time = 0.0
        self.last_step = "none"
        self.requested = False
        self.resumed = False
        self.launched = False  # this run started the new version: it may still be coming up when we stop it
        self.version_seen: str | None = None  # what a rollback's or resume's facts read: a refused one reports it

    # -- helpers --------------------------------------------------------------------------------

    def call(self, op: str, timeout: float | None = None, **req: object) -> AgentReply:
        """One agent action; a lost connection is retried (every action re-checks the host's own state)."""
        assert self.agent is not None
        agent = self.agent
        return self._retrying(op, lambda: cast(AgentReply, agent.call(op, timeout=timeout, **self.base, **req)))

    def call_batch(self, *requests: Request) -> list[AgentReply]:
        """Several agent actions in one round trip (AgentClient.call_batch), retried as one like ``call``: for
        actions sent one right after the other whatever the first answers, each then read-only or done once."""
        assert self.agent is not None
        agent = self.agent
        batch = [(op, {**self.base, **req}) for op, req in requests]
        return self._retrying("+".join(op for op, _ in requests),
                              lambda: cast(list[AgentReply], agent.call_batch(batch)))

    def _retrying(self, op: str, send: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return send()
            except TransportError as err:
                # a refused host key (or a timeout) will not heal by trying again
                if attempt >= self.e.retries or "timed out" in err.message or not getattr(err, "retryable", True):
                    reason = err.message.removeprefix(f"{err.host}: ") if err.host else err.message
                    raise TransportError(f"{reason} (after {attempt + 1} attempt(s); the host's last "
                                         f"recorded step: {self.last_step})", host=self.name, hint=err.hint) from err
                attempt += 1
                self.e.journal.record(op, "retry", host=self.name, attempt=attempt, error=err.message)
                self.e.emit("host_retry", self.name, op=op, attempt=attempt, error=err.message)
                self.e.sleep(self.e.retry_delay * attempt)

    def phase(self, name: str, fn: Callable[[], tuple[str, Mapping[str, object]]]) -> Mapping[str, object]:
        _kill_point(f"{name}:before")
        self.e.journal.record(name, "intent", host=self.name)
        self.e.emit("phase_started", self.name, phase=name)
        _kill_point(f"{name}:started")
        t0 = self.e.clock.monotonic()
        try:
            detail, data = fn()
            _kill_point(f"{name}:finished")
        except AgentFailure as err:
            self._phase_failed(name, t0, err.message, err.kind, err.data)
            raise _PhaseFailed(name, err.message, err.kind) from err
        except TransportError as err:
            self._phase_failed(name, t0, err.message, "unreachable", {})
            raise _PhaseFailed(name, err.message, "unreachable") from err
        except _PhaseFailed as err:
            self._phase_failed(name, t0, err.message, err.kind, {})
            raise
        seconds = self.e.clock.monotonic() - t0
        self.last_step = f"{name} done"
        self.out.phases.append(PhaseRecord(name, "ok", seconds, detail, data))
        self.e.journal.record(name, "done", host=self.name, seconds=round(seconds, 3), detail=detail,
                              result=_small(data))
        self.e.emit("phase_finished", self.name, phase=name, status="ok", seconds=round(seconds, 3), detail=detail,
                    result=_small(data))
        return data

    def _phase_failed(self, name: str, t0: float, message: str, kind: str, data: Mapping[str, object]) -> None:
        seconds = self.e.clock.monotonic() - t0
        self.out.phases.append(PhaseRecord(name, "failed", seconds, message, {"kind": kind}))
        self.e.journal.record(name, "failed", host=self.name, seconds=round(seconds, 3), error=message,
                              kind=kind, data=_small(data))
        self.e.emit("phase_finished", self.name, phase=name, status="failed", seconds=round(seconds, 3),
                    detail=message, failure=kind)

    def hooks(self, which: str) -> None:
        for h in self.spec.get("hooks", {}).get(which, []):
            def run_hook(h: HookSpec = h) -> tuple[str, AgentReply]:
                return (h["command"], self.call(
                    "hook", command=h["command"], hook_timeout=h["timeout"], phase=which, env=self.env(),
                    timeout=h["timeout"] + 30))
            self.phase(f"hook:{which}", run_hook)

    def env(self) -> dict[str, str]:
        return {"UPGRADER_RUN": self.e.run_id, "UPGRADER_HOST": self.name,
                "UPGRADER_CURRENT_VERSION": str(self.p["current"]), "UPGRADER_TARGET_VERSION": str(self.p["target"])}

    # -- the phases -------------------------------------------------------------------------

    def execute(self) -> HostOutcome:
        self.e.journal.record("host", "start", host=self.name, current=self.p["current"], target=self.p["target"])
        try:
            self.transport = self.t.connect()
            self.agent = AgentClient(self.transport)
            self.e.emit("host_started", self.name)
            return self._upgrade()
        except TransportError as err:
            self.out.outcome = "needs_person"
            self.out.error = err.message
            return self.out
        finally:
            if self.transport is not None:
                self.transport.close()

    def rollback_requested(self) -> HostOutcome:
        """The operator asked to undo this run on this host: restore its backup, observe the old version."""
        return self._read_back(self._rollback_requested)

    def resume(self, seen: JournalSeen) -> HostOutcome:
        """Decide from the journal (``seen``) and the host's state; every step below is idempotent."""
        return self._read_back(lambda: self._resume(seen))

    def _read_back(self, recover: Callable[[], HostOutcome]) -> HostOutcome:
        """Run ``recover``; when it ends needing a person, read what the host runs now (read-only, one look at the
        probes) so that the outcome and the severity say what is true there, not what was assumed."""
        out = recover()
        if out.outcome != "needs_person":
            return out
        try:
            transport = self.t.connect()
        except TransportError as err:
            out.after = {"read": False, "error": err.message}
            return out
        try:
            agent = AgentClient(transport)
            facts = agent.call("facts", **self.base, version_source=self.spec["version"], check_drift=False,
                               preserve=[], packages=[])
            # the probes of the version that is there (the new version's expect its version in answers)
            spec = self.spec["observe"] if facts.get("version") == self.p["target"] else \
                self.p["playbook"]["rollback_observe"]
            probes = {**spec, "start_timeout": 0, "window": 0}
            seen = agent.call("observe", **self.base, observe=probes, log_offsets={}, tolerate_unknown=True,
                              timeout=60)
            out.after = {"read": True, "version": facts.get("version"), "healthy": bool(seen["healthy"]),
                         "lock": facts.get("lock"), "probes": seen["probes"],
                         **({"unevaluated": [p["probe"] for p in seen["unevaluated"]]} if seen.get("unevaluated")
                            else {})}
            out.version = facts.get("version")
        except (AgentFailure, TransportError) as err:
            out.after = {"read": False, "error": str(err)}
        finally:
            transport.close()
        return out

    def _rollback_requested(self) -> HostOutcome:
        if self.name in self.e.untouched:
            # refused at preflight: the run never locked, stopped or changed this host, so its rollback does not
            # either (its stop, start and probes would be steps this run never had the host's consent for)
            self.e.journal.record("rollback", "nothing", host=self.name, reason="refused at preflight")
            self.out.outcome = "restored"
            self.out.error = f"nothing to roll back on {self.name} (refused at preflight, never touched)"
            return self.out
        self.e.journal.record("rollback", "start", host=self.name)  # an interrupted rollback shows in the journal
        self.out.outcome = "needs_person"
        try:
            self.transport = self.t.connect()
            self.agent = AgentClient(self.transport)
            self._lock()
            state = self.call("state")
            facts = self.call("facts", version_source=self.spec["version"], check_drift=False,
                              preserve=[x["path"] for x in self.spec["preserve"]], packages=[],
                              check_commands=paths_to_check(self.spec))
            check = self.call("recovery_check")
        except (AgentFailure, TransportError) as err:
            if isinstance(err, AgentFailure) and err.kind == "never_locked":
                assert self.transport is not None
                self.transport.close()  # nothing more is asked of this host
                return self._never_locked(err, "restored")
            if isinstance(err, AgentFailure) and err.kind == "host_trust":  # the host's own root: no lock taken
                self.out.outcome = "refused"
            self.out.error = str(err)
            return self.out
        finally:
            if self.agent is None and self.transport is not None:
                self.transport.close()
        try:
            version = self.version_seen = facts.get("version")
            if self._unsafe_to_recover(facts, "roll back"):
                self.call("unlock")
                return self.out
            if check["verdict"] == "changed":
                return self._superseded(check, version)
            if check["verdict"] == "rolled_back":
                return self._nothing_to_undo(state, version)
            if check.get("config_changed"):  # said before the stop; the rollback keeps them aside
                self.e.journal.record("config", "changed_since", host=self.name, paths=check["config_changed"])
                self.e.emit("config_changed_since", self.name, paths=check["config_changed"])
            if not state["backup"] and version == self.p["current"] and not (state["state"] or {}).get("phase"):
                # interrupted before its backup was made: this run never stopped or changed anything here,
                # so there is nothing to restore; make sure the old version is up, then release the host
                self.requested = True
                result = self._recover_without_install(_PhaseFailed(
                    "backup", "the run was interrupted before its backup; it had not changed this host"))
                if result.outcome == "unchanged":
                    result.outcome = "restored"
                return result
            if not state["backup"]:
                self.out.error = "no backup of this run is left on the host"
                self.call("unlock")
                return self.out
            # killed in the middle of the swap, the install dir is moved aside (no version to read): the
            # restore below puts the backed-up tree back and carries the data over from the moved tree; or
            # killed in the middle of an earlier rollback of this run, between moving the failed tree aside and
            # moving the restored one in (the host's state says "restoring"): the restore below finishes it
            restoring = (state["state"] or {}).get("phase") == "restoring"
            mid_swap = version is None and not state["install_exists"] and (state["old_exists"] or restoring)
            if version not in (self.p["target"], self.p["current"]) and not mid_swap:
                self.out.error = (f"the host runs {version}, not {self.p['target']} as this run left it: roll back "
                                  "the later run first")
                self.call("unlock")
                return self.out
            if not self._backup_sound(version):
                return self.out
            self.requested = True
            result = self._rollback("requested by the operator", "requested")
            if result.outcome == "rolled_back":
                result.outcome = "restored"
                result.error = None
            return result
        finally:
            assert self.transport is not None
            self.transport.close()

    def _resume(self, seen: JournalSeen) -> HostOutcome:
        if seen.get("ended") and seen["ended"] != "needs_person":  # a host that needs a person is read again
            self.out.outcome = str(seen["ended"])
            self.out.version = seen.get("version")
            self.out.error = "already finished before the interruption: nothing to do"
            return self.out
        self.resumed = True
        if not seen.get("started"):
            self.out.outcome = "not_started"
            self.out.error = "the run was interrupted before this host's turn: nothing was touched"
            return self.out
        self.transport = self.t.connect()
        self.agent = AgentClient(self.transport)
        try:
            try:
                self._lock()
                state = self.call("state")
                facts = self.call("facts", version_source=self.spec["version"], check_drift=False,
                                  preserve=[x["path"] for x in self.spec["preserve"]], packages=[],
                                  check_commands=paths_to_check(self.spec))
            except (AgentFailure, TransportError) as err:
                if isinstance(err, AgentFailure) and err.kind == "never_locked":
                    return self._never_locked(err, "unchanged")
                refused = isinstance(err, AgentFailure) and err.kind == "host_trust"  # no lock taken, nothing run
                self.out.outcome = "refused" if refused else "needs_person"
                self.out.error = f"cannot read the host's state to resume: {err}"
                return self.out
            version = self.version_seen = facts.get("version")
            phase = (state.get("state") or {}).get("phase")
            if self._unsafe_to_recover(facts, "resume"):  # the run's lock is kept: the host is mid-run
                return self.out
            check = self.call("recovery_check")
            if check["verdict"] == "changed":
                return self._superseded(check, version)
            self.e.journal.record("resume", "decide", host=self.name, journal=seen.get("intents", []),
                                  host_phase=phase, version=version)
            if "stop" not in seen.get("intents", []):
                # never stopped by us: release untouched (drop staging, keep the verified backup)
                self.out.outcome = "unchanged"
                self.out.error = "interrupted before stop: the host was released untouched"
                self._finish("unchanged")
                return self.out
            if cast(JSONObject, state["state"]).get("rolled_back") and \
                    self._healthy_now(self.p["playbook"]["rollback_observe"]):
                # the old version is back and answers: nothing to stop or start, only the end to record
                self.out.outcome = "rolled_back"
                self.out.version = version
                self.out.error = "the rollback had restored the old version; it runs and is healthy"
                self._finish("rolled_back")
                return self.out
            if cast(JSONObject, state["state"]).get("rolled_back") or phase == "restoring":
                return self._rollback("resumed: finishing an interrupted rollback", "resumed")
            if "observe" in seen.get("done", []) and version == self.p["target"] and phase == "installed":
                self.out.outcome = "committed"
                self.out.version = version
                self._finish("committed")
                return self.out
            if self.spec.get("on_resume", "rollback") == "complete" and phase == "installed":
                try:
                    self.phase("start", self._start)
                    self.phase("observe", self._observe)
                except _PhaseFailed as err:
                    return self._rollback(f"resumed, completing failed at {err.phase}: {err.message}", err.kind)
                self.out.outcome = "committed"
                self.out.version = self.p["target"]
                self._finish("committed")
                return self.out
            if not state.get("backup"):
                if version == self.p["current"] and phase in (None, "prepared"):
                    return self._recover_without_install(_PhaseFailed("stop", "interrupted during stop"))
                self.out.outcome = "needs_person"
                self.out.error = "interrupted after stop but no backup of this run is on the host"
                return self.out
            return self._rollback("resumed after the run was interrupted (the playbook says: roll back)", "resumed")
        finally:
            self.transport.close()

    def _unsafe_to_recover(self, facts: AgentReply, what: str) -> bool:
        """A rollback or resume runs the playbook's stop, start and hooks as the run did: refused (bad input, exit 2,
        before any of them) when the host finds a command that would run as root a script, or over a directory,
        another account can change (hostagent processes.root_command_problems), as the run's preflight refuses it."""
        problems = facts.get("unsafe_paths")
        if not problems:
            return False
        self.e.journal.record("recovery", "refused", host=self.name, reason="unsafe_path")
        self.out.outcome = "bad_input"
        self.out.version = facts.get("version")
        self.out.error = (f"nothing was stopped or started, the host runs {facts.get('version')} as it was; "
                          f"the {what} is refused: " + "; ".join(str(p) for p in problems))
        return True

    def _never_locked(self, err: AgentFailure, outcome: str) -> HostOutcome:
        """The host refused the lock of a resume or rollback: by its own records this run never took its lock (killed
        before its lock reached the host, or never its turn), so nothing of it was done there to go on with or undo;
        the host is left as it is."""
        self.e.journal.record("recovery", "nothing", host=self.name, reason="never locked by this run")
        self.out.outcome = outcome
        self.out.error = f"nothing of this run to {'roll back' if outcome == 'restored' else 'resume'} on " \
            f"{self.name}: {err.message}"
        return self.out

    def _healthy_now(self, observe: ObserveSpec) -> bool:
        """One read-only look at the probes (no waiting, no window, no phase record)."""
        try:
            res = self.call("observe", observe={**observe, "start_timeout": 0, "window": 0}, log_offsets={},
                            tolerate_unknown=True, timeout=60)
        except (AgentFailure, TransportError):
            return False
        return bool(res["healthy"])

    def _lock(self, before: Sequence[Request] = (), after: Sequence[Request] = ()) -> list[AgentReply]:
        """Take the host's lock for this run; a lock broken on the operator's word is recorded with its holder.
        ``before`` and ``after``: read-only actions sent in the same round trip, the first before the lock (its
        refusal leaves the lock untaken), the others once it is held; the results of ``after``."""
        controller = self.e.controller
        catalog = {"product": self.p["product"], "serial": self.e.catalog_serial} \
            if self.e.catalog_serial is not None else None
        pkg: dict[str, Any] = dict(self.p.get("package") or {})
        # a host with its own trust root locks only for a run whose evidence it accepts (or whose entry it kept);
        # audit: what the host's opening record of the run keeps (hostagent/witness.py), with the controller's clock
        # now: the host keeps it beside its own, which fixes the host's clock offset for the run where the log's
        # lines cannot move it (audit/witness.py _lock_clock)
        audit = {**self.e.audit, "clock": self.e.clock.now().isoformat(timespec="milliseconds"),
                 "target": self.p.get("target")}  # the host keeps it (and the package sha256) in its opening record
        res, *results = self.call_batch(*before, ("lock", dict(
            controller=controller.get("host"), user=controller.get("user"), approvals=list(self.e.approvals),
            break_lock=self.e.break_lock, catalog=catalog, sha256=pkg.get("sha256"),
            current_version=self.p["current"], product=self.p["product"], audit=audit,
            **self._evidence())), *after)[len(before):]
        if self.e.on_locked is not None:
            try:
                self.e.on_locked()
            except OSError as e:
                self.call("unlock")
                raise _PhaseFailed("preflight", f"cannot record the run's approvals as used ({e}); the host's lock "
                                                "was released, nothing was changed", "spend_failed") from None
        broken = res.get("broken")
        if broken:
            self.e.journal.record("lock", "broken", host=self.name, holder=broken)
            self.e.emit("lock_broken", self.name, outcome="forced", holder=broken,
                        reason="--break-lock given by the operator")
        return results

    def _backup_sound(self, version: str | None) -> bool:
        """Before a requested rollback stops anything: every byte of the backup matches its checksum. If not, the
        host is released as it is (the running version keeps running) and a person decides."""
        try:
            self.phase("verify_backup", lambda: ("every file of the backup matches its checksum",
                                                 self.call("backup_check", timeout=3600)))
        except _PhaseFailed as err:
            self.call("unlock")
            self.out.outcome = "needs_person"
            self.out.version = version
            self.out.error = (f"the backup of this run on the host cannot be trusted ({err.message}); nothing was "
                              f"stopped: {version} runs as it did. Restore from another backup, or keep this version")
            return False
        return True

    def _superseded(self, check: AgentReply, version: str | None) -> HostOutcome:
        """Another run changed this host since: a rollback or resume of this run must not touch it."""
        by = check.get("by")
        self.call("unlock")
        self.out.outcome = "superseded"
        self.out.version = version
        self.out.error = (f"{self.name} was changed by run {by} since; roll back {by}" if by else
                          f"{self.name} was changed by another run since (it left no record of which)") + \
            f" (nothing was stopped; {version} runs as it did)"
        self.e.journal.record("recovery", "refused", host=self.name, by=by, version=version)
        return self.out

    def _nothing_to_undo(self, state: AgentReply, version: str | None) -> HostOutcome:
        """This run's change is no longer in place here (rolled back, or never installed): observe, touch nothing;
        only a rollback that was itself interrupted before the old version came up starts it again."""
        probes = self.p["playbook"]["rollback_observe"]
        try:
            self.phase("observe", lambda: self._observe(probes))
        except _PhaseFailed:
            try:  # start is a no-op when the service runs
                self.phase("start", self._start)
                self.phase("observe", lambda: self._observe(probes))
            except _PhaseFailed as err:
                self.out.outcome = "needs_person"
                self.out.error = f"the old version is back on disk but not healthy: {err.message}"
                self.out.version = version
                return self.out
        self.out.outcome = "restored"
        self.out.version = version
        self.out.error = f"nothing to do: this run's change is not in place here; {version} runs and is healthy"
        self._note_unevaluated()
        # the host records this part's end too (its own record of what it did: observed, nothing undone), even when
        # the run had ended before: a bare unlock would leave the part opened and never finished on the host, and
        # the log's "restored" unwitnessed
        self._finish("rolled_back")
        return self.out

    def _upgrade(self) -> HostOutcome:
        try:
            self.phase("preflight", self._preflight)
        except _PhaseFailed as err:
            self.out.outcome = {"locked": "needs_person", "unreachable": "needs_person",
                                "replayed": "refused", "catalog_rollback": "refused",
                                "host_trust": "refused", "host_policy": "policy_refused",
                                "run_kind": "refused", "not_locked": "refused", "approval_expired": "refused",
                                "stale_plan": "stale", "unproven_probe": "stale",
                                "unsafe_path": "bad_input", "non_ascii": "bad_input"}.get(err.kind, "unchanged")
            self.out.error = f"preflight: {err.message}"
            return self.out
        try:
            self._check_cancel("backup")
            self.phase("backup", self._backup)
            self.hooks("before_stop")
            self._check_cancel("stop")
        except _PhaseFailed as err:
            self.out.error = f"{err.phase}: {err.message}"
            self._finish("unchanged")
            self.out.outcome = {"unreachable": "needs_person", "unsafe_path": "bad_input",
                                "too_many_files": "bad_input", "version_mismatch": "refused", "host_trust": "refused",
                                "not_locked": "refused", "host_policy": "policy_refused"}.get(err.kind, "unchanged")
            return self.out
        try:
            self.phase("stop", self._stop)
            self.hooks("after_stop")
        except _PhaseFailed as err:
            return self._recover_without_install(err)
        try:
            self._check_cancel("install")
            self.phase("install", self._install)
            self.hooks("after_install")
            self._check_cancel("start")
            self.phase("start", self._start)
            self.hooks("after_start")
            self._check_cancel("observe")
            self.phase("observe", self._observe)
            self._check_cancel("commit")
        except _PhaseFailed as err:
            if err.kind == "cancelled":
                return self._rollback(CANCELLED, err.kind)
            return self._rollback(f"{err.phase}: {err.message}", err.kind)
        self.out.outcome = "committed"
        self.out.version = self.p["target"]
        try:
            self.hooks("after_commit")
        except _PhaseFailed as err:  # the new version is healthy; a failed report hook does not undo it
            self.out.error = f"after_commit hook: {err.message}"
        self._finish("committed")
        return self.out

    def _check_cancel(self, before: str) -> None:
        """Between phases: has the operator cancelled the run? (``before`` names the next step.)"""
        _pause_point(before, self.e.cancel)
        if self.e.cancel.is_set():
            self.e.journal.record("cancel", "seen", host=self.name, before=before)
            raise _PhaseFailed("cancel", f"{CANCELLED} (before {before})", "cancelled")

    def _preflight(self) -> tuple[str, Mapping[str, object]]:
        pkg = cast(PlanPackage, self.p["package"])  # a host that runs has its package (plan_trust)
        try:
            check_rendered(self.spec, playbook=self.p["playbook"].get("path", "the playbook"), host=self.name,
                           inventory="the inventory")
        except InputError as e:
            raise _PhaseFailed("preflight", str(e), "unsafe_path") from None
        # one round trip: a host with its own trust root decides first, before its lock is taken; the facts once it
        # is held
        facts, = self._lock(
            before=[("host_trust", dict(sha256=pkg["sha256"], current_version=self.p["current"], **self._evidence()))],
            after=[("facts", dict(version_source=self.spec["version"], check_drift=False,
                                  preserve=[x["path"] for x in self.spec["preserve"]], packages=[pkg["sha256"]],
                                  check_paths=paths_to_check(self.spec, pkg),
                                  ascii_dirs=self.spec.get("preflight", {}).get("ascii_dirs", [])))])
        if facts.get("unsafe_paths"):
            self.call("unlock")
            raise _PhaseFailed("preflight", "; ".join(facts["unsafe_paths"]), "unsafe_path")
        if facts.get("version") != self.p["current"]:
            self.call("unlock")
            raise _PhaseFailed("preflight", f"the host runs {facts.get('version')!r}, the plan expected "
                                            f"{self.p['current']!r}: make a new plan", "stale_plan")
        if facts.get("non_ascii"):   # named since the plan was made: checked again before anything is stopped
            from .plan import non_ascii_reason

            self.call("unlock")
            raise _PhaseFailed("preflight", non_ascii_reason(list(facts["non_ascii"])), "non_ascii")
        self._prove_probes()
        # before the package is sent or copied for the run (receive_check writes the run's copy of a cached one)
        need = int(pkg["size"]) * 2 + int(pkg.get("limits", {}).get("unpacked_bytes", 0)) \
            + int(facts.get("copied_bytes", 0))  # the backup's copies of preserved config and cache
        if int(facts.get("free_bytes", 0)) < need:
            self.call("unlock")
            raise _PhaseFailed("preflight", f"only {facts['free_bytes'] >> 20} MiB free, {need >> 20} MiB needed",
                               "no_space")
        self.package_path = self._ensure_package(pkg)
        return f"{self.p['current']} -> {self.p['target']}, package on host", {"package_sha256": pkg["sha256"]}

    def _evidence(self) -> dict[str, object]:
        """The request field a host with its own trust root checks (nothing when the run has no evidence)."""
        if self.e.host_evidence is None:
            return {}
        return {"host_trust": {**self.e.host_evidence, "host": self.name}}

    def _prove_probes(self) -> None:
        """Every health probe once on the running old version (probe_proof): one that fails now would fail after
        the upgrade too and roll a good upgrade back, so the host is released untouched (exit 2)."""
        from .probe_proof import ProbeUnproven, prove

        try:  # a host with its own trust root runs only the command probes of the plan it accepted at the lock
            prove(lambda op, timeout=None, **req: self.call(op, timeout=timeout, **req, **self._evidence()),
                  host=self.name, observe=self.p["playbook"]["rollback_observe"], version=self.p["current"],
                  vars_read=self.p.get("vars_read"), before_stop=True)
        except AgentFailure as e:
            self.call("unlock")
            raise _PhaseFailed("preflight", e.message, e.kind) from e
        except ProbeUnproven as e:
            self.call("unlock")
            raise _PhaseFailed("preflight", f"{e.message} (likely fix: {(e.hint or '').removeprefix('likely fix: ')})",
                               "unproven_probe") from e

    def _ensure_package(self, pkg: PlanPackage) -> str:
        assert self.transport is not None
        if getattr(self.transport, "shares_filesystem", False):
            return str(self.t.package_file)
        check = self.call("receive_check", sha256=pkg["sha256"], size=pkg["size"])
        if not check["present"]:
            self.transport.put(self.t.package_file, check["upload_to"])
            check = self.call("receive_commit", sha256=pkg["sha256"], size=pkg["size"])
        return str(check["path"])

    def _backup(self) -> tuple[str, Mapping[str, object]]:
        pkg = cast(PlanPackage, self.p["package"])  # a host that runs has its package (plan_trust)
        res = self.call("prepare", package_path=self.package_path, sha256=pkg["sha256"], size=pkg["size"],
                        limits=pkg.get("limits", {}), kind=pkg["kind"], remove=pkg.get("remove", []),
                        preserve=self.spec["preserve"], current_version=self.p["current"], timeout=3600,
                        **self._evidence())
        self.out.backup_digest = res["backup_digest"]
        if res.get("drift") and self.e.manual_changes == "block":
            raise _PhaseFailed("backup", "product files were changed by hand since the last install: "
                               + ", ".join(d["path"] for d in res["drift"][:5]), "manual_changes")
        return (f"{res['backup_files']} files ({res['backup_bytes'] >> 20} MiB) snapshotted and verified, "
                f"{res['staged_files']} staged", res)

    def _stop(self) -> tuple[str, Mapping[str, object]]:
        self.stop_started = self.e.clock.monotonic()
        res = self.call("stop", stop=self.spec["stop"], env=self.env(),
                        timeout=float(self.spec["stop"]["timeout"]) + float(self.spec["stop"].get("kill_wait", 5)) * 2 + 30)
        self.service_time += float(res.get("seconds", 0))
        how = " (already stopped)" if res.get("already_stopped") else \
            f" (escalated to {res['escalated']})" if res.get("escalated") else ""
        return f"stopped in {res.get('seconds', 0):.2f}s{how}", {"escalated": res.get("escalated"),
                                                                 "account": res.get("command", {}).get("account")}

    def _install(self) -> tuple[str, Mapping[str, object]]:
        res = self.call("install", preserve=self.spec["preserve"], target_version=self.p["target"],
                        version_source=self.spec["version"], product=self.p["product"])  # the host reads the version again after the swap
        return f"{res['files']} files in place in {res['seconds']:.3f}s", res

    def _start(self, spec: PlaybookSpec | None = None) -> tuple[str, Mapping[str, object]]:
        logs = [p["file"] for p in self.spec["observe"]["probes"] if p["type"] == "log"]
        self.launched = True
        # settle: if this run already launched the service in this phase (then was interrupted), the host
        # waits this long from that launch for it to come up instead of starting a second one
        settle = float(self.spec["observe"]["start_timeout"])
        res = self.call("start", start=self.spec["start"], env=self.env(), log_offsets=logs,
                        pid_file=self.spec["stop"].get("pid_file"), ports=self.spec["stop"].get("ports", []),
                        **({"process": self.spec["process"]} if self.spec.get("process") else {}), settle=settle, timeout=float(self.spec["start"]["timeout"]) + settle + 30)
        self.log_offsets = res["log_offsets"]
        self.service_time += float(res["command"]["seconds"])
        return f"start command done in {res['command']['seconds']:.2f}s", {"account": res["command"].get("account")}

    def _observe(self, observe: ObserveSpec | None = None) -> tuple[str, Mapping[str, object]]:
        """Observe the new version (``observe`` None), or the old one (its probes given): for the old one, a probe
        that cannot be evaluated (no pid file) does not turn a service the other probes see healthy into a dead
        one; what was and was not seen goes into the outcome (``_unevaluated``)."""
        spec = observe or self.spec["observe"]
        t_call = self.e.clock.monotonic()
        res = self.call("observe", observe=spec, log_offsets=getattr(self, "log_offsets", {}),
                        **({"tolerate_unknown": True} if observe is not None else {}),
                        timeout=float(spec["start_timeout"]) + float(spec["window"]) + 60)
        if not res["healthy"]:
            bad = [p for p in res["probes"] if not p["ok"]]
            when = ("healthy at first, then failed during the observation window" if res.get("stage") == "window"
                    else "never healthy after start")
            raise _PhaseFailed("observe", f"{when}: "
                               + ("; ".join(f"{p['probe']}: {p['detail']}" for p in bad) or "unhealthy"),
                               "unhealthy")
        if self.stop_started is not None:
            healthy_at = t_call + float(res.get("ready_seconds", 0))
            self.out.downtime = round(healthy_at - self.stop_started, 4)
            self.service_time += float(res.get("ready_seconds", 0))
            self.out.service_time = round(self.service_time, 4)
        if res.get("unevaluated"):
            return self._unevaluated(spec, res)
        return (f"healthy: {len(res['probes'])} probes passed {res.get('checks', 1)} times over "
                f"{spec['window']:.1f}s", {"probes": res["probes"]})

    def _unevaluated(self, spec: ObserveSpec, res: AgentReply) -> tuple[str, Mapping[str, object]]:
        """The old version is healthy by the probes that can see it; the others could not be evaluated: say both."""
        seen = [p for p in res["probes"] if p["ok"]]
        blind = res["unevaluated"]
        note = ("healthy by the checks that can see it (" + "; ".join(f"{p['probe']}: {p['detail']}" for p in seen)
                + "); not evaluated: " + "; ".join(f"{p['probe']}: {p['detail']}" for p in blind))
        self.out.after = {"read": True, "version": self.p["current"], "healthy": True,
                          "unevaluated": [p["probe"] for p in blind], "probes": res["probes"]}
        self.unevaluated_note = note
        self.e.journal.record("observe", "unevaluated", host=self.name, probes=[p["probe"] for p in blind],
                              detail=note)
        return note, {"probes": res["probes"], "unevaluated": [p["probe"] for p in blind]}

    def _note_unevaluated(self) -> None:
        """A recovery that ended well with probes it could not evaluate says so in the outcome."""
        note = getattr(self, "unevaluated_note", None)
        if note:
            self.out.error = f"{self.out.error}; the old version is {note}" if self.out.error else \
                f"the old version is {note}"

    # -- failure paths ----------------------------------------------------------------------

    def _recover_without_install(self, err: _PhaseFailed) -> HostOutcome:
        """Stop failed: nothing was installed. Make sure the old version runs and is healthy."""
        self.out.rollback_cause = f"{err.phase}: {err.message}"
        try:
            self.stop_started = None
            self.phase("observe", lambda: self._observe(self.p["playbook"]["rollback_observe"]))
        except _PhaseFailed as seen:
            if seen.kind == "host_trust":  # the host runs no step of this run: nothing was or can be done here
                return self._refused_by_host(seen)
            try:
                self.phase("start", self._start)
                self.phase("observe", lambda: self._observe(self.p["playbook"]["rollback_observe"]))
            except _PhaseFailed as again:
                self.out.outcome = "needs_person"
                self.out.error = f"{self.out.rollback_cause}; the old version is not healthy: {again.message}"
                return self.out
        # a stop the host refused to run (foreign_pid: its pid file names another's process) is a refusal (exit 2)
        self.out.outcome = "bad_input" if err.kind == "foreign_pid" else "unchanged"
        self.out.error = self.out.rollback_cause
        self._note_unevaluated()
        self._finish("unchanged")
        return self.out

    def _refused_by_host(self, err: _PhaseFailed) -> HostOutcome:
        """The host's own trust root accepted nothing of this run: it ran none of its steps. Release the lock this
        recovery took (only this run's lock is released) and say so; a person decides (exit 4)."""
        try:
            self.call("unlock")
        except (AgentFailure, TransportError):
            pass
        self.out.outcome = "refused"
        self.out.error = f"{err.phase}: {err.message}"
        return self.out

    def _rollback(self, cause: str, kind: str) -> HostOutcome:
        self.out.rollback_cause = cause
        self.out.error = cause
        self.e.emit("rollback_started", self.name, cause=cause)
        if kind == "unreachable":
            self.out.outcome = "needs_person"
            return self.out
        self.stop_started = self.e.clock.monotonic()
        self.service_time = 0.0
        try:
            self.phase("rollback", self._restore)
            self.hooks("after_rollback")
            self.phase("start", self._start)
            self.phase("observe", lambda: self._observe(self.p["playbook"]["rollback_observe"]))
        except _PhaseFailed as err:
            # the host's own trust root admits no rollback of this run (rollback_hours): refused, nothing stopped
            self.out.outcome = "refused" if err.kind == "host_trust" else "needs_person"
            self.out.error = f"{cause}; rollback failed at {err.phase}: {err.message}"
            if err.kind == "host_trust" and (self.requested or self.resumed):
                self.out.version = self.version_seen  # nothing was stopped or restored: the host runs what it ran
            return self.out
        self.out.outcome = "rolled_back"
        self.out.version = self.p["current"]
        self._note_unevaluated()
        self._finish("rolled_back")
        return self.out

    def _restore(self) -> tuple[str, Mapping[str, object]]:
        # after an interruption, a service the interrupted run launched may still be coming up: the host
        # waits for it as long as the playbook allows a start, so that the stop below does not miss it
        after_interruption = float(self.spec["observe"]["start_timeout"]) if self.resumed or self.requested else 0.0
        stop = self.call("stop", stop=self.spec["stop"], env=self.env(), always_run_command=False,
                         settle=2.0 if (self.resumed or self.launched) else 0.0,
                         launch_settle=after_interruption,
                         timeout=float(self.spec["stop"]["timeout"]) + after_interruption + 60)
        # right after this run's own backup: quick (re-read only files whose inode changed);
        # an operator's rollback later re-reads every byte of the backup first
        res = self.call("rollback", verify="full" if self.requested else "quick", timeout=3600)
        check = self.call("verify_tree")
        if not check["identical"]:
            raise _PhaseFailed("rollback", "restored tree differs from the backup: "
                               + ", ".join(d["path"] for d in check["differences"][:5]), "needs_person")
        self.service_time += float(stop.get("seconds", 0))
        kept = res.get("config_kept")
        note = (f"; the configuration in use before the rollback ({', '.join(kept['paths'])}) is kept in "
                f"{kept['in']}") if kept else ""
        return (f"{res['files']} files restored from the verified backup in {res['seconds']:.2f}s; "
                f"byte-identical{note}", {"identical": True, **({"config_kept": kept} if kept else {})})

    def _finish(self, outcome: str) -> None:
        try:
            catalog = {"product": self.p["product"], "serial": self.e.catalog_serial} \
                if self.e.catalog_serial is not None else None
            self.call("finish", outcome=outcome, keep=self.spec.get("backup", {}).get("keep", 3),
                      approvals=list(self.e.approvals), catalog=catalog, audit=self.e.audit)
            self.e.journal.record("finish", "done", host=self.name, outcome=outcome)
            self.out.finished = True
        except (AgentFailure, TransportError) as err:
            # the used approvals, the catalog serial or the manifest beside the install may not be recorded, and the
            # host's lock is still held: a person looks (exit 5), whatever the run did before
            self.e.journal.record("finish", "failed", host=self.name, error=str(err))
            self.out.error = "; ".join(x for x in (self.out.error, f"finish: {err.message} (the host's lock is kept: "
                                                   "'upgrader status' shows it; check the host first)") if x)
            self.out.outcome = "needs_person"


def _kill_point(point: str) -> None:
    """A fault point at a phase boundary (``<phase>:before|started|finished``); see faults.py."""
    from . import faults

    faults.point(point)


def _pause_point(point: str, cancel: threading.Event) -> None:
    """A fault point at a cancel check (``backup``, ``stop``, ``install``, ``start``, ``observe``, ``commit``:
    the step about to begin); see faults.py."""
    from . import faults

    faults.point(f"cancel_check:{point}", cancel=cancel)


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _small(data: Mapping[str, object]) -> dict[str, object]:
    """Keep journal records small: drop long command output."""
    from ..audit.redaction import tail

    out = {}
    for k, v in data.items():
        if isinstance(v, dict) and "stdout" in v:  # redacted before it is cut, at a line boundary
            v = {**v, "stdout": tail(v["stdout"], 500), "stderr": tail(v["stderr"], 500)}
        out[k] = v
    return out
