"""upgrader as a library: the use cases as typed functions, for the CLI, the guide and other programs (a
scheduler such as AWX, Rundeck, Jenkins or Airflow; a vendor's release checks).

Every function takes a ``Context`` (where runs and the audit log are kept, the clock, the operator's policy
file and audit key) and typed values, returns a typed result, raises only ``UpgraderError`` subclasses (each
carries its ``exit_code``: PRODUCT.md's table) and prints nothing. The upgrade story::

    ctx = Context(home=Path("/var/lib/upgrader"))
    made = make_plan(ctx, inventory=Path("inventory.yaml"), to="7.0.4.2", catalog=Path("catalog"),
                     output=Path("plan.json"), key=Path("keys/requester"))
    approve(ctx, made.file, key=Path("keys/engineer"), output=Path("plan.approval"))   # another person
    result = run(ctx, made.file, approvals=[Path("plan.approval")], observers=[MyObserver()])
    result.exit_code, [(h.host, h.outcome, h.version) for h in result.hosts]

``run`` (and ``resume``, ``rollback``) tell ``observers`` every engine event as it happens (``on_event(event)``,
a dict with ``event``, ``run``, ``host``, ``time`` and the event's fields) and, with ``events=``, write them as
JSON Lines (``upgrader.core.events``: format 1). A ``CancelToken`` cancels a run at the engine's next safe
point: hosts before stop are released unchanged, hosts after stop are rolled back.

The steps of ``run`` are public too (``check_run``, ``start_run``, ``finish_run``): the guide checks a plan
and its approval long before it starts the run.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypedDict, cast

from .core.clock import Clock, SystemClock
from .core.engine import HostOutcome, Observer
from .core.errors import ApprovalRefused, InputError, PolicyRefused, UpgraderError
from .core.events import EventStream
from .core.plan import Plan
from .core.shapes import Event, JSONObject, JournalSeen, PlanData, PlanHost

if TYPE_CHECKING:
    from version_policy import Policy

    from .audit.witness import WitnessResult
    from .core.engine import HostTarget
    from .core.hostcheck import HostCheck
    from .core.engine import RunResult as EngineResult
    from .core.journal import Journal
    from .core.playbook import Playbook
    from .core.recorder import Operator, Recorder
    from .fleet.transport.base import Transport
    from .trust.approval import Approval, UsedApprovals
    from .trust.catalog import Catalog
    from .trust.keys import HeldKey, Identity
    from .trust.requester import Requester
    from .audit.crosscheck import CrossCheck
    from .audit.log import VerifyResult
    from .trust.signers import AllowedSigners
    from .customer.access import Grant, GrantChange, HostFile
    from .fleet.inventory import Host as InventoryHost
    from .fleet.inventory import Inventory
    from .fleet.transport.base import AgentClient

__all__ = [
    # inputs
    "Context", "CancelToken", "Guard", "RunLimits", "RunStart", "Observer", "EventStream", "SYSTEM_POLICY",
    # results
    "PlanMade", "PlanReview", "ApprovalMade", "RunResult", "HostResult", "PhaseResult", "CheckedRun", "StartedRun",
    # the use cases
    "make_plan", "show_plan", "approve", "run", "resume", "rollback", "check_run", "start_run", "finish_run",
    "check_hosts", "HostsChecked",
    "verify_audit", "witnessed_exit_code", "export_audit", "audit_case", "AuditCase", "cross_check_audit", "AuditCrossCheck", "plan_digest", "build_package", "verify_package", "build_catalog", "sign_catalog",
    "available", "inspect", "write_inspection", "write_inspection_bundle", "review_inspection", "grant_access",
    "list_access", "revoke_access",
    "PackageBuilt", "PackageChecked", "CatalogBuilt", "AuditExport", "Availability", "Inspection", "AccessResult",
    "audit_exit_code", "inspection_report_kind",
    # helpers the CLI and the guide share
    "load_policy", "policy_file", "policy_origin", "plan_policy", "trusted_catalog", "record_plan", "record_refusal", "refuse_refused",
    "accepted_plan", "accepted_run", "AcceptedRun", "journal_view",
    # the errors every function may raise (each with its exit_code)
    "UpgraderError", "InputError", "PolicyRefused", "ApprovalRefused",
]

#: the machine's policy, used when neither the context's policy nor HOME/policy.yaml exists
SYSTEM_POLICY = Path("/etc/upgrader/policy.yaml")


# -- inputs ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Context:
    """Where and as whom the use cases work.

    ``home``: runs, approvals used, plans of the guide and the audit log (the CLI's ``--home``).
    ``clock``: the only source of "now". ``policy``: the operator's policy file (None: HOME/policy.yaml, else
    /etc/upgrader/policy.yaml, else the shipped default; never a path a plan names). ``audit_key``: the SSH key
    that signs audit checkpoints (None: env UPGRADER_AUDIT_KEY, HOME/keys/operator, ~/.ssh/id_*).
    ``warn``: told what an operator must know before hosts are touched (e.g. a checkpoint that would not
    verify); without it, warnings are only in the results."""

    home: Path
    clock: Clock = field(default_factory=SystemClock)
    policy: Path | None = None
    audit_key: Path | None = None
    warn: Callable[[str], None] | None = None
    #: the operator's policy as load_policy read it, with its trust files' bytes: read once per context, so every
    #: decision of a command uses the bytes hashed into the identity it checks and records (a file swapped in
    #: HOME between two reads is never trusted under the other's identity)
    _policies: dict[str | None, Policy] = field(default_factory=dict, init=False, compare=False, repr=False)


class CancelToken(threading.Event):
    """Cancels a run at the engine's next safe point (``cancel()``, from any thread)."""

    def cancel(self) -> None:
        self.set()

    @property
    def cancelled(self) -> bool:
        return self.is_set()


class Guard(Protocol):
    """Holds the program's interrupt while a run goes (the CLI's Ctrl-C: ``core.interrupts.Interrupts``):
    ``running()`` is entered once every check passed, before the run's first record, and left once its
    records are written; its ``cancel`` is the run's cancel token; ``presses`` is recorded in the audit log."""

    cancel: threading.Event
    presses: int

    def running(self) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class RunLimits:
    """How a run goes over its hosts: ``forks`` at once, rolling ``batch``es, a failure budget and a canary."""

    forks: int = 10
    batch: int | None = None
    max_failures: int | None = None
    canary: int = 0

    @classmethod
    def parse(cls, total: int, *, forks: int = 10, batch: str | int | None = None,
              max_failures: str | int | None = None, canary: int = 0) -> RunLimits:
        """From the CLI's words: ``batch`` and ``max_failures`` as N or P% of ``total`` hosts (InputError)."""
        b = _count(batch, total, "--batch", minimum=1)
        m = _count(max_failures, total, "--max-failures", minimum=0)
        if forks < 1:
            raise InputError("--forks must be at least 1")
        if canary < 0 or canary > total:
            raise InputError(f"--canary must be between 0 and the number of hosts ({total})")
        return cls(forks, b, m, canary)


@dataclass(frozen=True)
class RunStart:
    """Told to ``on_started`` once a run's journal exists, before any host is touched."""

    run_id: str
    command: str                 # run, resume or rollback
    hosts: tuple[str, ...]
    journal: Path
    cancels: bool                # does a cancel stop this run (run: yes; resume, rollback: they go on to the end)
    window_note: str | None = None
    policy: JSONObject | None = None  # the operator's policy it runs under: source, sha256, identity


# -- results ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanMade:
    plan: Plan
    file: Path
    catalog_signer: JSONObject

    @property
    def allowed(self) -> bool:
        return self.plan.allowed


@dataclass(frozen=True)
class PlanReview:
    """Everything a plan will do, in full (what an approver reads), with the operator's policy here."""

    plan: Plan
    file: Path
    review: JSONObject
    policy: Policy


@dataclass(frozen=True)
class ApprovalMade:
    file: Path
    plan: str                   # the digest approved
    approver: str
    key: str                    # the approver's key fingerprint
    expires: _dt.datetime
    review: JSONObject


@dataclass(frozen=True)
class PhaseResult:
    phase: str
    status: str
    seconds: float
    detail: str


@dataclass(frozen=True)
class HostResult:
    host: str
    outcome: str                # committed, rolled_back, unchanged, needs_person, waiting, restored, ...
    current: str | None
    target: str | None
    version: str | None         # what runs at the end
    error: str | None
    rollback_cause: str | None
    downtime: float | None
    phases: tuple[PhaseResult, ...]


@dataclass(frozen=True)
class RunResult:
    """A run's (resume's, rollback's) result: ``data`` is what its result file holds."""

    run_id: str
    exit_code: int
    hosts: tuple[HostResult, ...]
    stopped_early: str | None
    data: JSONObject
    ran: bool = True            # False: resume found the run finished, nothing to do
    warnings: tuple[str, ...] = ()

    @property
    def checkpoint(self) -> JSONObject | None:
        cp = self.data.get("checkpoint")
        return cast(JSONObject, cp) if isinstance(cp, dict) else None

    @property
    def diagnostics(self) -> JSONObject | None:
        d = self.data.get("diagnostics")
        return cast(JSONObject, d) if isinstance(d, dict) else None

    @property
    def waiting(self) -> list[str]:
        return [h.host for h in self.hosts if h.outcome == "waiting"]

    @classmethod
    def of(cls, data: JSONObject, *, ran: bool = True, warnings: Sequence[str] = ()) -> RunResult:
        hosts = []
        for h in cast("list[dict[str, object]]", data.get("hosts") or []):
            phases = tuple(PhaseResult(str(p.get("phase")), str(p.get("status")), _float(p.get("seconds")) or 0.0,
                                       str(p.get("detail") or ""))
                           for p in cast("list[dict[str, object]]", h.get("phases") or []))
            hosts.append(HostResult(str(h.get("host")), str(h.get("outcome")), _opt(h.get("current")),
                                    _opt(h.get("target")), _opt(h.get("version")), _opt(h.get("error")),
                                    _opt(h.get("rollback_cause")), _float(h.get("downtime")), phases))
        code = data.get("exit_code")
        return cls(str(data.get("run_id")), int(code) if isinstance(code, (int, str)) else 0, tuple(hosts),
                   _opt(data.get("stopped_early")), data, ran, tuple(warnings))


@dataclass(frozen=True)
class CheckedRun:
    """Everything ``run`` (and the guide) checked before touching a host: the policy, the trusted catalog,
    the approvals, the service window and the host targets."""

    policy: Policy
    operator: Operator
    signed_by: JSONObject
    approvals: list[Approval]
    window: JSONObject
    targets: list[HostTarget]
    requester: Requester | None = None
    #: what a host with its own trust root checks itself (trust/host_evidence.py)
    evidence: JSONObject | None = None

    @property
    def approval_digests(self) -> tuple[str, ...]:
        return tuple(a.digest for a in self.approvals)

    @property
    def catalog_serial(self) -> int | None:
        """The serial of the signed catalog this run installs from (each host refuses an older one)."""
        serial = self.signed_by.get("serial")
        return int(serial) if isinstance(serial, (int, str)) else None


@dataclass(frozen=True)
class StartedRun:
    run_id: str
    journal: Journal
    recorder: Recorder
    controller: dict[str, str]
    #: the requester as the run's run_started line names it (user, host, key): the hosts' opening records keep it
    requester: JSONObject | None = None
    #: the run directory's lock (``_hold_run``), held until ``release``
    held: list[int] = field(default_factory=list)

    def release(self) -> None:
        """Let the run's directory go (a resume or rollback of the run may start now)."""
        while self.held:
            os.close(self.held.pop())

    def close_on_error(self, error: BaseException) -> None:
        """The engine itself failed (a bug, a full disk under the journal): the audit log still gets the end of
        the run and a signed checkpoint (best effort); the journal keeps what ``resume`` needs."""
        try:
            self.recorder.event("run_finished", outcome="error", error=f"{type(error).__name__}: {error}",
                                hint=f"upgrader resume {self.run_id}")
            self.recorder.checkpoint()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        finally:
            self.release()


# -- policy, catalog, operator ---------------------------------------------------------------------------

def policy_file(ctx: Context) -> str | None:
    """The operator's policy: the context's, else HOME/policy.yaml, else SYSTEM_POLICY when it exists, else None
    (the shipped default). Never a path written in a plan: the plan is the requester's document."""
    if ctx.policy is not None:
        return os.path.abspath(ctx.policy)  # plans and audit events name the file wherever they are read
    for candidate in (Path(ctx.home) / "policy.yaml", SYSTEM_POLICY):
        if candidate.is_file():
            return os.path.abspath(candidate)
    return None


def load_policy(ctx: Context | str | None) -> Policy:
    """The operator's policy (``policy_file``), or the policy file given; a bad one is InputError (exit 2)."""
    from version_policy import PolicyError
    from version_policy import load_policy as _load

    path = policy_file(ctx) if isinstance(ctx, Context) else ctx
    if isinstance(ctx, Context) and path in ctx._policies:
        return ctx._policies[path]
    try:
        policy = _load(path)
    except PolicyError as e:
        raise InputError(str(e), hint="fix the policy file or leave out --policy to use the default") from None
    if isinstance(ctx, Context):
        if path is not None:
            _refuse_open_trust_roots(policy)
            _refuse_open_home(ctx.home)
        ctx._policies[path] = policy
    return policy


def _refuse_open_trust_roots(policy: Policy) -> None:
    """Exit 4 when the operator's policy file, or a trust file it names (who may approve, whose catalogs count, who
    signs checkpoints, holidays), could be changed by another account: whoever can write it decides what runs
    (a HOME/policy.yaml planted by someone who can write HOME would shadow /etc/upgrader/policy.yaml)."""
    from .core.strict_modes import open_to_others

    for where in [policy.source, *(t.source for t in policy.trust_files if t.source)]:
        problem = open_to_others(where)
        if problem:
            raise ApprovalRefused(
                f"the operator's policy {policy.source} cannot be trusted: {problem}, so another account could "
                "change who may approve, whose catalogs count and which upgrades are free; nothing was changed",
                hint="make it yours (or root's) and writable only by you (chown, chmod go-w on the file, its "
                     "directory and each directory above), or keep the policy where only you can write (--policy, "
                     "/etc/upgrader/policy.yaml)")


def _refuse_open_home(home: Path) -> None:
    """Exit 4 when HOME itself, or a directory above it, could be changed by another account (sshd's StrictModes
    walks every component up to /): whoever can rename HOME (or a directory above it) swaps in another home, with
    another policy, other keys, an empty ledger of used approvals and older catalog serials, under the same name."""
    from .core.strict_modes import ancestors_open_to_others

    problem = ancestors_open_to_others(str(home), itself=True)
    if problem:
        raise ApprovalRefused(
            f"the operator's HOME {home} cannot be trusted: {problem}, so another account could put another home "
            "(another policy, other keys, no record of used approvals) in its place; nothing was changed",
            hint="keep HOME where only you (or root) can write, on every directory up to / (chown, chmod go-w; a "
                 "sticky directory, as the system's temporary one, is fine above it), or give another --home")


def real_policy_source(policy: Policy) -> str | None:
    """The policy's file as it really is (links resolved): what is printed beside the name it was found under."""
    return os.path.realpath(policy.source) if policy.source else None


def plan_policy(ctx: Context, plan: Mapping[str, object]) -> Policy:
    """The operator's policy, refused (exit 4) when the plan was made under another policy."""
    from .core.gate import operator_policy

    return operator_policy(load_policy(ctx), cast("Mapping[str, object]", plan["policy"]))


def trusted_catalog(path: str | Path, policy: Policy, home: Path, now: _dt.datetime) -> tuple[Catalog, JSONObject]:
    """Load a catalog and check its vendor signature and serial (exit 4 when it cannot be trusted)."""
    from .trust.catalog import load_catalog
    from .trust.catalog_trust import verify_catalog
    from .trust.signers import policy_signers
    from .trust.verified import VerifiedPackages

    catalog = load_catalog(path)
    info = verify_catalog(catalog, signers=policy_signers(policy, "catalog.trusted_signers"), now=now, home=home)
    # the packages this operator already verified in full (HOME/cache): an unchanged file is not hashed again
    return replace(catalog, verified=VerifiedPackages(Path(home))), dict(info)


def _operator(ctx: Context, policy: Policy | None, need_key: bool = True,
              warnings: list[str] | None = None) -> Operator:
    from .core.recorder import operator_identity

    operator = operator_identity(ctx.home, policy, key_path=str(ctx.audit_key) if ctx.audit_key else None,
                                 need_key=need_key)
    if need_key and operator.warning:  # said before any host is touched, not found later by an auditor
        if warnings is not None:
            warnings.append(operator.warning)
        if ctx.warn is not None:
            ctx.warn(operator.warning)
    return operator


def _recorder(ctx: Context, policy: Policy | None, need_key: bool = True, run: str | None = None) -> Recorder:
    from .core.recorder import Recorder

    if policy is None:
        policy = load_policy(ctx)
    return Recorder(ctx.home, _operator(ctx, policy, need_key), ctx.clock, run=run)


# -- plan, show, approve ---------------------------------------------------------------------------------

def make_plan(ctx: Context, *, inventory: Path, to: str, catalog: Path, output: Path, hosts: str | None = None,
              requester: str | None = None, key: Path | None = None) -> PlanMade:
    """Read each host (read-only), decide by the version policy, verify the package against the signed catalog
    and write the plan to ``output`` (signed with the requester's ``key``, when given). A plan that refuses a
    host is written too (``PlanMade.allowed`` is False): it shows why."""
    from .customer.service_window import plan_window
    from .core.planner import make_plan as _make, requester_identity
    from .fleet.inventory import load_inventory
    from .fleet.transport import connect

    clock = ctx.clock
    inv = load_inventory(inventory)
    chosen = inv.select(hosts)
    policy = load_policy(ctx)
    cat, signed_by = trusted_catalog(catalog, policy, ctx.home, clock.now())
    signing_key = None
    if key is not None:  # read before any host is contacted
        from .trust.keys import load_private_key

        signing_key = load_private_key(key)
    plan = _make(inv, chosen, target=to, catalog=cat, policy=policy, clock=clock, connect=connect,
                 requester=requester_identity(requester), window=plan_window(policy, clock.now()),
                 signed_by=signed_by, home=ctx.home)
    if signing_key is not None:
        from .core.plan import plan_digest
        from .trust.requester import sign_plan

        plan = Plan(sign_plan(plan.data, signing_key, plan_digest))
    from .core.output import write_output

    out = Path(output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot write the plan: {e.strerror}", path=str(out), hint="give a file path for -o") from e
    write_output(out, plan.to_json().encode("utf-8"), what="the plan")  # never through a link planted there
    record_plan(ctx, policy, plan, out, signed_by)
    return PlanMade(plan, out, signed_by)


def record_plan(ctx: Context, policy: Policy, plan: Plan, out: Path, signed_by: Mapping[str, object]) -> None:
    """The audit event of a new plan (allowed or refused)."""
    _recorder(ctx, policy, need_key=False).event(
        "plan_created", outcome="allowed" if plan.allowed else "refused", plan=plan.digest, file=str(out),
        target=plan.data["target"], catalog={**plan.data["catalog"], **signed_by}, policy=plan.data["policy"],
        requester=plan.data["requester"], hosts=[_host_summary(h) for h in plan.hosts])


def policy_origin(ctx: Context) -> str:
    if ctx.policy is not None:
        return "--policy"
    if (Path(ctx.home) / "policy.yaml").is_file():
        return "HOME/policy.yaml"
    return "system policy" if SYSTEM_POLICY.is_file() else "the shipped default"


def show_plan(ctx: Context, plan_file: Path) -> PlanReview:
    """Load a plan, check its requester signature (exit 4 when damaged) and build its review (everything it
    will do), with the operator's policy and playbooks here beside the plan's. Touches no host."""
    from .core.plan import load_plan
    from .core.review import plan_review
    from .trust.requester import plan_signer

    plan = load_plan(plan_file)
    signer = plan_signer(plan.data, plan.digest, str(plan_file))  # a damaged or stripped signature is refused here
    from .core.plan import check_consistency

    check_consistency(plan.hosts, str(plan.data["target"]), str(plan_file))  # one entry per install, one target
    review = plan_review(plan.data, plan.digest)
    policy = load_policy(ctx)
    if signer is not None:  # a requester listed only as '*@vendor' is nobody: run refuses it, so nobody reviews it
        _refuse_pattern_requester(policy, signer, str(plan_file))
        # who the requester is: the names the operator's allowed_signers gives the key, not the name the plan says
        cast(JSONObject, review["requester"])["listed_as"] = _listed_names(policy, signer)
    planned = cast(JSONObject, review["policy"])
    review["policy_here"] = {"source": policy.source, "real": real_policy_source(policy), "sha256": policy.digest,
                             "from": policy_origin(ctx),
                             "identity": policy.identity, "trust_files": [t.to_dict() for t in policy.trust_files],
                             "same": policy.identity == planned.get("identity")}
    here: dict[tuple[str, str], JSONObject] = {}  # one read of each playbook, not one per host naming it
    for h in cast("list[dict[str, object]]", review["hosts"]):
        planned_pb = cast(JSONObject, h["playbook"])
        seen = (str(planned_pb.get("name")), str(planned_pb.get("sha256")))
        if seen not in here:
            here[seen] = _playbook_here(planned_pb, ctx.home)
        h["playbook_here"] = dict(here[seen])
    _decided_again(ctx, plan, review, policy)
    return PlanReview(plan, Path(plan_file), review, policy)


def _decided_again(ctx: Context, plan: Plan, review: JSONObject, policy: Policy) -> None:
    """Each host's decision made again here, offline (the plan's current -> target pair, the operator's policy,
    the signed catalog's entry): ``review["hosts"][i]["decided_again"]`` is {allowed, rules, same} or {error}."""
    from .core.gate import decide_offline, decision_key

    hosts = cast("list[dict[str, object]]", review["hosts"])
    now = ctx.clock.now()
    catalog_meta = plan.data["catalog"]
    try:
        catalog, _ = trusted_catalog(str(catalog_meta["path"]), policy, ctx.home, now)
        if catalog.sha256 != catalog_meta.get("sha256"):
            raise UpgraderError(f"the catalog {catalog.path} is not the one the plan was made with")
        answers = {name: (planned, again) for name, planned, again in
                   decide_offline(plan.hosts, policy=policy, catalog=catalog, today=now.date())}
    except UpgraderError as e:  # refused (exit 4): the plan contradicts the signed catalog; else it cannot tell
        for h in hosts:
            h["decided_again"] = {"error": e.message, "refused": isinstance(e, ApprovalRefused)}
        return
    for h in hosts:
        planned, again = answers[str(h["host"])]
        h["decided_again"] = {"allowed": bool(again.get("allowed")), "rules": list(again.get("rules", [])),
                              "same": decision_key(planned) == decision_key(again)}


def _refuse_pattern_requester(policy: Policy, signer: bytes, source: str) -> None:
    """Exit 4 when the approvals' allowed_signers list the plan's signer only through pattern principals."""
    from .trust.requester import refuse_pattern_requester
    from .trust.signers import policy_signers

    signers = policy_signers(policy, "approvals.allowed_signers")
    if signers is not None:
        refuse_pattern_requester(signers, signer, source)


def _refuse_revoked_requester(policy: Policy, signer: bytes, source: str, now: _dt.datetime) -> None:
    """Exit 4 when the approvals' allowed_signers list the plan's signer only through lines that do not let it sign
    plans at ``now`` (namespace, valid-before/valid-after): every run refuses such a requester, so nobody signs it."""
    from .trust.requester import refuse_revoked_requester
    from .trust.signers import policy_signers

    signers = policy_signers(policy, "approvals.allowed_signers")
    if signers is not None:
        refuse_revoked_requester(signers, signer, source, now)


def _playbook_here(planned: JSONObject, home: Path) -> JSONObject:
    """The operator's playbook of the plan's playbook name (what a run here compares the plan with)."""
    from .core.playbook import load_operator_playbook

    try:
        pb, where = load_operator_playbook(str(planned.get("name")), home)
    except UpgraderError as e:
        return {"error": e.message, "same": False}
    return {"source": str(pb.path), "from": where, "sha256": pb.digest, "same": pb.digest == planned.get("sha256")}


def approve(ctx: Context, plan: Path | PlanReview, *, key: Path, output: Path, principal: str | None = None,
            expires: str | float = "24h", comment: str = "", after_hours: bool = False) -> ApprovalMade:
    """Sign an approval of exactly this plan (its digest) with the engineer's SSH ``key`` (SSHSIG, namespace
    upgrader-approval), valid for ``expires`` ("2h", "7d" or seconds, 1m..30d). Refused: a plan the policy
    refuses (exit 3), made under another policy, unsigned when the policy requires signed plans, or the
    approver's own plan (exit 4). ``plan`` may be the review the approver read (``show_plan``)."""
    from .core.document import parse_duration
    from .core.gate import policy_mismatch
    from .core.recorder import Recorder, operator_identity
    from .trust.approval import make_statement, write_approval
    from .trust.keys import Identity, load_private_key
    from .trust.requester import Requester, names_the_approver, plan_signer

    reviewed = plan if isinstance(plan, PlanReview) else show_plan(ctx, plan)
    the_plan, policy, source = reviewed.plan, reviewed.policy, str(reviewed.file)
    if not the_plan.allowed:
        raise PolicyRefused("the version policy refuses this plan (see above); a refused plan cannot be approved")
    again = [(str(h["host"]), cast(JSONObject, h.get("decided_again") or {}))
             for h in cast("list[dict[str, object]]", reviewed.review["hosts"])]
    refused = [f"{name}: {a['error']}" for name, a in again if a.get("refused")]
    if refused:
        raise ApprovalRefused("the plan does not match the signed catalog (see above), nothing was signed:\n  "
                              + "\n  ".join(refused), hint="make and approve a new plan")
    # a catalog this machine cannot read or verify (CANNOT in the review): the run checks it again before any host
    differ = [name for name, a in again if not a.get("error") and not a.get("same", False)]
    if differ:
        raise PolicyRefused(f"the version policy decides differently than the plan says for {', '.join(differ)} "
                            "(see above): the plan was edited or the policy changed; nothing was signed",
                            hint="make and approve a new plan")
    refusal = policy_mismatch(the_plan.data["policy"], policy)
    if refusal is not None:
        raise refusal
    if isinstance(expires, str):
        try:
            valid_for = parse_duration(expires)
        except ValueError as e:
            raise InputError(f"--expires: {e}") from None
    else:
        valid_for = float(expires)
    if not 60 <= valid_for <= 30 * 86400:
        raise InputError("--expires must be between 1m and 30d")
    private = load_private_key(key)
    identity = Identity(principal or "", private, str(key))
    clock = ctx.clock
    name = _approver_name(principal, identity, policy, clock.now())
    signer = plan_signer(the_plan.data, the_plan.digest, source)
    if signer is None and not policy.allow_unsigned_plans:
        raise ApprovalRefused(f"{source}: the plan is not signed and the policy requires signed plans "
                              "(approvals.allow_unsigned_plans: false): nobody can tell who asked for it",
                              hint="ask the requester to make it with 'upgrader plan --key THEIR_KEY'")
    if _operator_as_requester(ctx, the_plan, policy, signer, source) and not policy.allow_self_approval:
        held = Requester(cast(bytes, signer), frozenset(), "signed the plan and runs it")
        _refuse_granted_approver(ctx.home, identity.fingerprint, name, source, held, clock.now())
        _refuse_while_let_in(ctx.home, source, held, clock.now())
    if signer is not None and not policy.allow_self_approval:  # a key file of the account that cannot be told
        _refuse_unknown_key_while_let_in(ctx.home, source, Requester(signer, frozenset(), "signed the plan"),
                                         [identity.fingerprint], clock.now())
    if signer == identity.key_blob and not policy.allow_self_approval:
        raise ApprovalRefused(f"the plan was signed with your key {identity.fingerprint}: you cannot approve your own "
                              "plan (segregation of duties)", hint="another engineer approves it with their own key")
    if signer is not None and not policy.allow_self_approval:
        theirs = Requester(signer, _key_principals(policy, signer), "signed the plan")
        if theirs.same_person(identity.key_blob, name, _identity_principals(policy, identity)):
            raise ApprovalRefused(f"the plan was signed with the key {theirs.fingerprint}, listed as "
                                  f"{', '.join(sorted(theirs.principals))}: the same person as you ({name}); you "
                                  "cannot approve your own plan (segregation of duties)",
                                  hint="another engineer approves it with their own key")
    if signer is not None:
        _refuse_revoked_requester(policy, signer, source, clock.now())
    label = str(the_plan.data["requester"].get("user", "unknown"))
    if not policy.allow_self_approval and names_the_approver(label, name, _identity_principals(policy, identity)):
        raise ApprovalRefused(f"the plan's requester is {label!r}, which names you ({name}): you cannot approve "
                              "your own plan (segregation of duties)",
                              hint="another engineer approves it with their own key")
    statement = make_statement(the_plan.digest, name, label, clock.now(), valid_for, comment, after_hours)
    out = Path(output)
    write_approval(out, statement, private)
    Recorder(ctx.home, operator_identity(ctx.home, policy, need_key=False), clock).event(
        "approval_created", outcome="approved", plan=the_plan.digest, approver=name, key=identity.fingerprint,
        expires=statement.expires.isoformat(), comment=statement.comment, after_hours=statement.after_hours,
        requester=statement.requester, file=str(out), digest=statement.digest)
    return ApprovalMade(out, the_plan.digest, name, identity.fingerprint, statement.expires, reviewed.review)


def _approver_name(given: str | None, identity: Identity, policy: Policy, now: _dt.datetime) -> str:
    """The approver's name: ``principal`` (never a pattern such as ``*@vendor``), else the only literal principal
    of their key's line in the approvals' allowed_signers."""
    from .trust.approval import NAMESPACE, is_literal_principal
    from .trust.signers import policy_signers

    if given is not None and not is_literal_principal(given):
        raise ApprovalRefused(f"--as {given!r} is a pattern, not a person: an approver is named by a literal "
                              "principal of their own key's line in allowed_signers",
                              hint="give --as YOUR_NAME as your line in allowed_signers spells it")
    signers_path = policy.allowed_signers
    if not signers_path:
        if given:
            return str(given)
        raise InputError(f"cannot tell who you are from the key {identity.fingerprint}",
                         hint="give --as PRINCIPAL (your name in the allowed_signers file)")
    signers = policy_signers(policy, "approvals.allowed_signers")
    assert signers is not None  # signers_path is set
    listed = list(signers.principals_for(identity.key_blob, NAMESPACE, now))
    names = [p for p in listed if is_literal_principal(p)]
    if given is not None:
        if not listed:  # a key the operator's allowed_signers does not list: no run would accept what it signs
            raise ApprovalRefused(
                f"--as {given!r}: your key {identity.fingerprint} is not listed in {signers.source} for namespace "
                f"{NAMESPACE} (or its line has expired): it cannot approve plans here; nothing was written",
                hint="ask the operator to add your key under your own name to approvals.allowed_signers")
        spelled = [n for n in names if n.lower() == given.lower() and n != given]
        if spelled:  # every run compares names as allowed_signers spells them (case-sensitive), so must approve
            raise ApprovalRefused(
                f"--as {given!r}: your key {identity.fingerprint} is listed in {signers.source} as {spelled[0]!r}, "
                f"not {given!r}: names are compared exactly as allowed_signers spells them, so every run would "
                "refuse this approval; nothing was written",
                hint=f"give --as {spelled[0]} (or leave --as out)")
        if given not in names:
            # the key's line names it only through a pattern (or not at all): refused before any file is written
            raise ApprovalRefused(
                f"--as {given!r}: your key {identity.fingerprint} is listed in {signers.source} only as "
                f"{', '.join(listed)}, which does not name {given!r} literally: an approver is named by a literal "
                "principal of their own key's line",
                hint="ask the operator to list your key under your own name (e.g. 'alice@vendor "
                     "namespaces=\"upgrader-approval\" ssh-ed25519 ...') and give --as that name")
        return str(given)  # whether the key may sign under this name is checked (again) by every run
    if len(names) == 1:
        return names[0]
    raise InputError(f"cannot tell who you are from the key {identity.fingerprint} "
                     f"({'names: ' + ', '.join(names) if names else 'no literal name'} in {signers.source})",
                     hint="give --as PRINCIPAL (your name in the allowed_signers file)")


def _identity_principals(policy: Policy, identity: Identity) -> frozenset[str]:
    """The literal names the approver's key is listed under in the approvals' allowed_signers (none without it)."""
    from .trust.requester import literal_principals
    from .trust.signers import policy_signers

    signers_path = policy.allowed_signers
    if not signers_path:
        return frozenset()
    signers = policy_signers(policy, "approvals.allowed_signers")
    return literal_principals(signers, identity.key_blob) if signers else frozenset()


def _listed_names(policy: Policy, key: bytes) -> list[str]:
    """The literal names ``key`` is listed under in the approvals' allowed_signers, as written (none without it)."""
    from .trust.requester import listed_names
    from .trust.signers import policy_signers

    return listed_names(policy_signers(policy, "approvals.allowed_signers"), key) if policy.allowed_signers else []


def _key_principals(policy: Policy, key: bytes) -> frozenset[str]:
    """The literal names ``key`` is listed under in the approvals' allowed_signers (none without it)."""
    from .trust.requester import literal_principals
    from .trust.signers import policy_signers

    signers_path = policy.allowed_signers
    if not signers_path:
        return frozenset()
    signers = policy_signers(policy, "approvals.allowed_signers")
    return literal_principals(signers, key) if signers else frozenset()


# -- run -------------------------------------------------------------------------------------------------

def refuse_refused(plan: Plan) -> None:
    """PolicyRefused naming each refused host of the plan and the failed rules and checks, if there is one."""
    refused = plan.refused_hosts()
    if refused:
        reasons = []
        for h in refused:
            why = [r["reason"] for r in h["decision"]["rules"] if r["status"] == "fail"]
            why += [c["reason"] for c in h.get("checks", []) if c["status"] == "fail"]
            reasons.append(f"{h['name']}: " + "; ".join(why))
        raise PolicyRefused("the plan refuses these hosts, nothing was changed:\n  " + "\n  ".join(reasons))


def record_refusal(ctx: Context, plan: Plan, error: UpgraderError, approvals: Sequence[str | Path]) -> None:
    """An audit event for a plan refused at run time (policy or approval); best effort."""
    try:
        _recorder(ctx, None, need_key=False).event(
            "approval_refused" if isinstance(error, ApprovalRefused) else "run_refused", outcome="refused",
            plan=plan.digest, reason=str(error), approvals=[str(a) for a in approvals])
    except UpgraderError:
        pass  # the refusal itself is what the user must see


def check_run(ctx: Context, plan: Plan, approvals: Sequence[str | Path], *, catalog: Path | None = None,
              playbooks: Mapping[str, Playbook] | None = None, forks: int = 8, source: str | None = None,
              warnings: list[str] | None = None) -> CheckedRun:
    """Refuse (exit 3, 4 or 2) a plan that may not run now; touches no host (it reads each, read-only, to decide
    again). A refusal by the policy or of the approvals is recorded in the audit log. ``catalog``: where the
    packages are, if not where the plan says; ``playbooks``: name -> playbook the operator named besides their
    playbook roots; ``source``: how messages name the plan (default: its file)."""
    try:
        return _check_run(ctx, plan, approvals, catalog, playbooks, forks, source, warnings)
    except (PolicyRefused, ApprovalRefused) as e:
        record_refusal(ctx, plan, e, approvals)
        raise


def _check_run(ctx: Context, plan: Plan, approvals: Sequence[str | Path], catalog: Path | None,
               playbooks: Mapping[str, Playbook] | None, forks: int, source: str | None,
               warnings: list[str] | None) -> CheckedRun:
    from .core.gate import check_playbooks, redecide
    from .customer.service_window import check_run_window
    from .fleet.transport import connect

    refuse_refused(plan)
    now = ctx.clock.now()
    policy = plan_policy(ctx, plan.data)  # the operator's, never the plan's
    operator = _operator(ctx, policy, warnings=warnings)
    catalog_dir = Path(catalog) if catalog else Path(str(plan.data["catalog"]["path"]))
    cat, signed_by = trusted_catalog(catalog_dir, policy, ctx.home, now)
    if cat.sha256 != plan.data["catalog"]["sha256"]:  # the bytes whose signature was just checked
        raise ApprovalRefused(f"the catalog {cat.path} is not the one the plan was made with",
                              hint="make and approve a new plan with this catalog")
    accepted, requester = _check_approvals(ctx, plan, [str(a) for a in approvals], policy, now, operator,
                                           source or "the plan")
    window = check_run_window(plan.data.get("window"), policy,  # the clock at run time
                              [a.statement.approver for a in accepted if a.statement.after_hours], now)
    targets = _targets(cat, plan.hosts)
    operators = check_playbooks(plan.hosts, ctx.home, playbooks)  # the operator's, exit 4
    redecide(plan.hosts, policy=policy, catalog=cat, now=now, connect=connect, playbooks=operators,
             forks=max(1, int(forks or 8)))  # read-only: decided again under this policy, vars_from read again
    from .trust.host_evidence import host_evidence

    return CheckedRun(policy, operator, signed_by, accepted, window, targets, requester,
                      host_evidence(plan.data, accepted, cat))


def _used_approvals(home: Path) -> UsedApprovals:
    from .trust.approval import UsedApprovals

    return UsedApprovals(home / "approvals" / "used.jsonl")


def _operator_as_requester(ctx: Context, plan: Plan, policy: Policy, signer: bytes | None, source: str) -> bool:
    """At approve: a plan signed by the operator key named at this controller (--audit-key, UPGRADER_AUDIT_KEY,
    HOME/keys/operator, ~/.ssh/id_*) has that key as its requester, which counts only when the policy's
    allowed_signers names it (requester_of refuses it otherwise, exit 4): the run would refuse it. An unsigned
    plan's requester is the operator who runs it, which only the run knows. True when the plan's signer is that
    operator key, or another key this account holds (account_keys)."""
    from .core.recorder import operator_identity
    from .trust.requester import requester_of
    from .trust.signers import policy_signers
    from .trust.sshsig import public_key_blob

    operator = operator_identity(ctx.home, policy, need_key=False)
    if signer is None:
        return False
    mine = public_key_blob(operator.key.public_key()) if operator.key is not None else None
    if signer == mine and policy.allowed_signers:
        requester_of(plan.data, plan.digest, source, signers=policy_signers(policy, "approvals.allowed_signers"),
            allow_unsigned=policy.allow_unsigned_plans,
            operator_key=mine)
    return signer in account_keys(ctx.home, mine)  # another key this account holds counts too (any --audit-key)


def _check_approvals(ctx: Context, plan: Plan, paths: list[str], policy: Policy, now: _dt.datetime,
                     operator: Operator, source: str) -> tuple[list[Approval], Requester]:
    """The accepted approvals and the requester's key they were checked against."""
    from .trust.approval import check_approvals
    from .trust.requester import refuse_revoked_requester, requester_of
    from .trust.signers import policy_signers
    from .trust.sshsig import public_key_blob

    signers_path = policy.allowed_signers
    signers = policy_signers(policy, "approvals.allowed_signers")
    operator_key = public_key_blob(operator.key.public_key()) if operator.key is not None else None
    requester = requester_of(plan.data, plan.digest, source, signers=signers,
                             allow_unsigned=policy.allow_unsigned_plans, operator_key=operator_key)
    used = _used_approvals(ctx.home)
    accepted = check_approvals(paths, plan_digest=plan.digest, requester=requester, signers=signers,
                               required=policy.approvals_required, allow_self=policy.allow_self_approval, now=now,
                               used=used, requester_label=str((plan.data.get("requester") or {}).get("user") or ""))
    if requester.key in account_keys(ctx.home, operator_key) and not policy.allow_self_approval:
        for a in accepted:
            _refuse_granted_approver(ctx.home, a.signature.fingerprint, a.statement.approver, a.source, requester,
                                     now)
        _refuse_while_let_in(ctx.home, source, requester, now)
    if not policy.allow_self_approval:  # a key file of the account that cannot be told may be the requester's
        _refuse_unknown_key_while_let_in(ctx.home, source, requester, [a.signature.fingerprint for a in accepted],
                                         now)
    if requester.how.startswith("signed"):  # a signer whose every line leaves out upgrader-plan or has expired
        refuse_revoked_requester(signers, requester.key, source, now)
    return accepted, requester


#: at most this many entries of each key folder (its subfolders' included) are read as keys the account holds (a key
#: folder holds a few), in subfolders at most this deep
HELD_KEY_FILES = 200
HELD_KEY_DEPTH = 8


@dataclass(frozen=True)
class HeldKeys:
    """The keys this account holds (account_keys): their public key blobs, and the files that look like private keys
    but whose key upgrader cannot tell (``unknown``: any of them may be the key that signed a plan)."""

    blobs: set[bytes]
    unknown: list[HeldKey]


def key_folders(home: Path) -> list[Path]:
    """Where this account keeps keys: HOME/keys and ~/.ssh, of the home in the password database and of ``$HOME``
    (as own_authorized_keys reads both: a session that sets HOME elsewhere does not hide a key)."""
    import pwd

    homes = [pwd.getpwuid(os.geteuid()).pw_dir, str(Path.home())]
    return list(dict.fromkeys([home / "keys"] + [Path(h) / ".ssh" for h in homes if h]))


def _key_folder_files(folder: Path) -> tuple[list[Path], list[HeldKey]]:
    """Every file of ``folder`` and its subfolders (links followed, each folder once), and the subfolders that cannot
    be read (they may hold a key); ApprovalRefused (exit 4) when there are more than HELD_KEY_FILES entries or
    folders deeper than HELD_KEY_DEPTH: read them all or decide nothing, padding must not hide a key."""
    import errno

    from .trust.keys import HeldKey

    files: list[Path] = []
    unreadable: list[HeldKey] = []
    seen: set[tuple[int, int]] = set()
    count = 0
    todo = [(folder, 0)]
    while todo:
        here, depth = todo.pop(0)
        try:
            st = os.stat(here)
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError as e:
            if here == folder and e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            unreadable.append(HeldKey(here, None, f"a folder that cannot be read ({e.strerror})"))
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        count += len(entries)
        if count > HELD_KEY_FILES:
            raise ApprovalRefused(
                f"{folder} holds more than the {HELD_KEY_FILES} entries (its subfolders' included) upgrader reads to "
                "know which keys this account holds (whoever logs in to it can sign with any of them); nothing was "
                "changed", hint=f"remove from {folder} what is not a key, then run the command again")
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_dir():
                    if depth >= HELD_KEY_DEPTH:
                        raise ApprovalRefused(
                            f"{folder} has folders more than {HELD_KEY_DEPTH} deep ({path}), deeper than upgrader "
                            "reads to know which keys this account holds (whoever logs in to it can sign with any of "
                            "them); nothing was changed",
                            hint=f"move the keys in {path} up, or out of {folder}, then run the command again")
                    todo.append((path, depth + 1))
                elif entry.is_file():  # no FIFO or device: only files are read
                    files.append(path)
            except OSError:
                files.append(path)  # held_key tells
    return files, unreadable


def held_keys(home: Path, operator_key: bytes | None) -> HeldKeys:
    """The keys this account holds: the operator key this command uses (--audit-key, UPGRADER_AUDIT_KEY) and every
    private key the account keeps where upgrader looks for one (HOME/keys/operator, ~/.ssh/id_*) and beside them, in
    any file of HOME/keys or ~/.ssh or their subfolders (key_folders: HOME/keys/requester, ~/.ssh/old/id_rsa are as
    much the account's), in any form OpenSSH accepts (trust/keys.held_key: openssh-key-v1, PEM, PKCS#8), whichever
    the command was told to use: whoever logs in to the account can sign with any of them (read from the key file's
    clear part or its .pub: no passphrase asked). A file that looks like a private key whose key cannot be told is
    kept in ``unknown``."""
    from .core.recorder import stored_key_files
    from .trust.keys import held_key

    files = list(stored_key_files(home))
    unknown: list[HeldKey] = []
    for folder in key_folders(home):
        found, unreadable = _key_folder_files(folder)
        files += found
        unknown += unreadable
    blobs = {operator_key} if operator_key is not None else set()
    for path in dict.fromkeys(files):
        held = held_key(path)
        if held is not None and held.blob is not None:
            blobs.add(held.blob)
        elif held is not None:
            unknown.append(held)
    return HeldKeys(blobs, unknown)


def account_keys(home: Path, operator_key: bytes | None) -> set[bytes]:
    """The public key blobs of the keys this account holds (held_keys)."""
    return held_keys(home, operator_key).blobs


def _refuse_unknown_key_while_let_in(home: Path, source: str, requester: Requester, approvers: Sequence[str],
                                     now: _dt.datetime) -> None:
    """ApprovalRefused (exit 4) when the plan's requester is no key this account is known to hold, but a file of its
    key folders looks like a private key whose key upgrader cannot tell (encrypted PEM without its .pub, damaged,
    unreadable) while anyone is let in to the account (a grant, a key added during one, or an approver's key): it
    may be the key that signed the plan, and the engineer logged in could sign with it (attack12r21 H1). The file
    and the line are named; fail closed."""
    from .customer.access import (added_during_grants, lines_letting_in, open_grant_lines, own_authorized_keys)

    held = held_keys(home, None)
    if requester.key in held.blobs or not held.unknown:
        return
    files = own_authorized_keys()
    lines = open_grant_lines(files, now, home) or [k for fp in approvers for k in lines_letting_in(files, fp, now)]
    if lines:
        k = lines[0]
        what = f"{k.path} line {k.line}" + (f" (access grant {k.grant.id})" if k.grant is not None else "")
    else:
        added = added_during_grants(home, files, now)
        if not added:
            return
        what = f"{added[0].line.path} line {added[0].line.line} (a key added while access grant {added[0].grant} " \
               "was open)"
    key = held.unknown[0]
    raise ApprovalRefused(f"{source}: {key.path} looks like a private key of this account, but upgrader cannot tell "
                          f"which key it is ({key.why}), and {what} lets an engineer log in to this account: logged "
                          f"in, they could have signed this plan with it (the key {requester.fingerprint}) and "
                          "approved it with a key of their own (segregation of duties); nothing was changed",
                          hint=f"put its public key beside it ({key.path}.pub: ssh-keygen -y -f {key.path}) or move "
                               "it out of the account's key folders, or close the access first, then approve again")


def _refuse_granted_approver(home: Path, key: str, approver: str, source: str, requester: Requester,
                             now: _dt.datetime) -> None:
    """ApprovalRefused (exit 4) when the approver's key may log in to this account (``upgrader access grant``
    without ``--user`` lets the engineer into the operator's own account) while the plan's requester is a key this
    account holds: logged in as the operator, the approver can read that key and sign the plan with it, so requester
    and approver may be one person. Decided by the key: any line of the account's authorized_keys files for it, a
    grant or not (a grant whose comment was edited, the key copied to authorized_keys2, count alike). The line is
    named (file, line, the grant's id) so the operator can remove it; then the operator makes the plan again and has
    it approved."""
    from .customer.access import format_time, lines_letting_in, own_authorized_keys

    _refuse_grant_record_gone(home, source, requester)
    found = lines_letting_in(own_authorized_keys(), key, now)
    if not found:
        _refuse_added_by_grant(home, key, approver, source, requester, now)
        return
    k = found[0]
    g = k.grant
    what = (f"access grant {g.id} ({k.path} line {k.line}, until "
            f"{format_time(g.expires) if g.expires else 'no expiry'})") if g else f"{k.path} line {k.line}"
    raise ApprovalRefused(f"{source}: the approval is signed by {key} ({approver}), and {what} lets that key log in "
                          f"to this account, which holds the operator key {requester.fingerprint} that "
                          f"{requester.how}: the approver could have asked for the plan themselves (segregation of "
                          "duties); nothing was changed",
                          hint=(f"close the grant (upgrader access revoke {g.id})" if g else
                                f"remove that key from {k.path}") + ", make the plan again with your own key, and "
                               "have it approved again")


def _refuse_while_let_in(home: Path, source: str, requester: Requester, now: _dt.datetime) -> None:
    """ApprovalRefused (exit 4) while a grant lets an engineer into this account (or a key added during one still
    does), when the plan's requester is a key this account holds: logged in, the engineer could sign the plan with
    that key and approve it with another key of their own, one the grant does not name (attack12r19 H1). Whoever
    approves, requester and approver could be one person; the grant's line is named."""
    from .customer.access import added_during_grants, format_time, open_grant_lines, own_authorized_keys

    _refuse_grant_record_gone(home, source, requester)
    files = own_authorized_keys()
    lines = open_grant_lines(files, now, home)
    if lines:
        k, g = lines[0], lines[0].grant
        what = (f"access grant {g.id} ({k.path} line {k.line}, until "
                f"{format_time(g.expires) if g.expires else 'no expiry'})") if g is not None else \
            f"{k.path} line {k.line} (the key of an access grant into this account, its grant marker gone)"
        hint = f"close the grant (upgrader access revoke {g.id})" if g is not None else f"remove that line from {k.path}"
    else:
        added = added_during_grants(home, files, now)
        if not added:
            return
        a = added[0]
        what = f"{a.line.path} line {a.line.line} (a key added while access grant {a.grant} was open)"
        hint = f"remove that line from {a.line.path} (upgrader access list shows every such line)"
    raise ApprovalRefused(f"{source}: {what} lets an engineer log in to this account, which holds the key "
                          f"{requester.fingerprint} that {requester.how}: logged in, they could have signed this plan "
                          "with it and approved it with another key of their own (segregation of duties); an "
                          "approval of a plan signed by this account's keys is refused while anyone is let in; "
                          "nothing was changed",
                          hint=hint + ", make the plan again, and have it approved again")


def _refuse_grant_record_gone(home: Path, source: str, requester: Requester) -> None:
    """ApprovalRefused (exit 4) when the audit log holds a grant into this account whose record
    (HOME/access/grants/ID.json) is missing or unreadable: the record is the account's file, and the engineer
    logged in through the grant could delete it to hide the keys that let them in (attack12r20). The checks take
    the log's events as well; the gone record is a reason of its own: somebody in this account removed it."""
    from .core.recorder import audit_path
    from .customer.access import grants_kept

    gone = [k for k in grants_kept(home) if k.record_problem is not None]
    if not gone:
        return
    k = gone[0]
    raise ApprovalRefused(
        f"{source}: the record of access grant {k.grant} is gone: {k.record} {k.record_problem}, but the audit log "
        f"({audit_path(home)}) holds the grant into this account, which holds the key {requester.fingerprint} that "
        f"{requester.how}: whoever was let in could have removed it to hide the keys the grant let in (segregation "
        "of duties); an approval of a plan signed by this account's keys is refused until the record is back; "
        f"nothing was changed\n{source}：访问授权 {k.grant} 的记录已不存在：{k.record} "
        f"{'缺失' if k.record_problem == 'is missing' else '无法读取'}，但审计日志（{audit_path(home)}）记有这次进入本账户"
        f"的授权；本账户持有的密钥 {requester.fingerprint} 签署了此计划：被授权登录的人可能删除了记录以隐藏授权期间放入的"
        "密钥（职责分离）；在记录恢复之前，拒绝批准由本账户密钥签署的计划；未做任何更改",
        hint=(f"check this account's authorized_keys for keys you did not add (upgrader access list), rotate the "
              f"operator key, then write the record back from the audit log with 'upgrader access revoke {k.grant}' "
              "(it also ends the grant if it is still open), make the plan again and have it approved again / "
              "检查本账户的 authorized_keys 中有无不是您添加的密钥（upgrader access list），更换操作员密钥，然后用 "
              f"'upgrader access revoke {k.grant}' 从审计日志写回记录（若授权仍有效也一并结束），重新制作计划并再次批准"))


def _refuse_added_by_grant(home: Path, key: str, approver: str, source: str, requester: Requester,
                           now: _dt.datetime) -> None:
    """ApprovalRefused (exit 4) when a key added to this account's authorized_keys while the approver's key had a
    grant into it still logs in (customer/access.added_during_grants): logged in, the engineer could add a second
    key of their own (or a cert-authority line), which outlives the grant and is listed by no grant. The line is
    named; the operator removes it (or, if it is their own, keeps it and has another engineer approve)."""
    from .customer.access import added_during_grants, own_authorized_keys

    added = added_during_grants(home, own_authorized_keys(), now, engineer=key)
    if not added:
        return
    a = added[0]
    raise ApprovalRefused(f"{source}: the approval is signed by {key} ({approver}), and {a.line.path} line "
                          f"{a.line.line} lets the key {a.fingerprint} log in to this account, added while access "
                          f"grant {a.grant} let that engineer in; this account holds the operator key "
                          f"{requester.fingerprint} that {requester.how}: the approver could have asked for the "
                          "plan themselves (segregation of duties); nothing was changed",
                          hint=f"remove that line from {a.line.path} (upgrader access list shows every such line; "
                               "if you added it yourself, another engineer approves instead), make the plan again "
                               "with your own key, and have it approved again")


def _targets(catalog: Catalog, hosts: Sequence[PlanHost]) -> list[HostTarget]:
    from .core.engine import HostTarget
    from .trust.plan_trust import trusted_package

    targets = []
    seen: set[tuple[str, str]] = set()
    for h in hosts:
        # the entry of the plan's product and target in the signed catalog, rebuilt in full: the plan's package
        # must equal it (version, kind, changes, requires, limits, remove, ...), exit 4 otherwise; its file is
        # verified once per run (size, sha256, package.yaml, members), refused here before any host is touched
        wanted = (str(h.get("product")), str(h.get("target")))
        entry, package = trusted_package(catalog, h, verify=wanted not in seen)
        seen.add(wanted)
        targets.append(HostTarget(plan={**h, "package": package}, connect=_connector(h),
                                  package_file=catalog.package_path(entry)))
    return targets


def start_run(ctx: Context, plan: Plan, checked: CheckedRun) -> StartedRun:
    """A new run: its journal (with the accepted plan) and its first audit events."""
    from .core.journal import Journal, new_run_id, runs_dir
    from .core.recorder import Recorder

    clock = ctx.clock
    run_id = new_run_id(clock.now())
    journal = Journal(runs_dir(ctx.home) / run_id, clock.now)
    held = _hold_run(journal.dir, run_id)  # a new directory: no other process holds it
    journal.write("plan.json", plan.data)
    approved_by: list[JSONObject] = [
        {"approver": a.statement.approver, "key": a.signature.fingerprint, "expires": a.statement.expires.isoformat(),
         "digest": a.digest, "comment": a.statement.comment, "after_hours": a.statement.after_hours}
        for a in checked.approvals]
    accepted: JSONObject = {"digest": plan.digest, "catalog": checked.signed_by, "approvals": approved_by}
    journal.record("plan", "accepted", digest=plan.digest, catalog=checked.signed_by, approvals=approved_by,
                   seal=_seal(run_id, accepted, checked.operator))
    from .trust.host_evidence import save_evidence

    save_evidence(journal.dir, checked.evidence)  # sent again by resume (trust/host_evidence.py)
    recorder = Recorder(ctx.home, checked.operator, clock, run=run_id)
    who = checked.requester
    requester = {**plan.data["requester"], **({"key": who.fingerprint, "key_is": f"the key that {who.how}"}
                                              if who is not None else {})}
    recorder.event("run_started", plan=plan.digest, target=plan.data["target"], requester=requester,
                   approvals=approved_by, catalog={**plan.data["catalog"], **checked.signed_by},
                   policy=plan.data["policy"], self_approval_allowed=bool(checked.policy.allow_self_approval),
                   window=checked.window, hosts=[_host_summary(h) for h in plan.hosts])
    for a in approved_by:
        recorder.event("approval_accepted", outcome="accepted", **cast("dict[str, Any]", a))
    return StartedRun(run_id, journal, recorder, {"user": checked.operator.user, "host": checked.operator.host},
                      requester, [held])


def _seal(run_id: str, fields: JSONObject, operator: Operator) -> str:
    """The seal of the "plan accepted" record's ``fields``, made with the key the run is accepted under
    (trust/run_seal.py): ``resume`` and ``rollback`` act only on a record that key sealed."""
    from .trust.run_seal import seal

    if operator.key is None:  # check_run asks for the operator's key; a caller that made its own CheckedRun may not
        raise InputError("no SSH key to seal the run's accepted plan with",
                         hint="give --audit-key KEY, set UPGRADER_AUDIT_KEY, or create HOME/keys/operator "
                              "(upgrader keys generate operator)")
    return seal(run_id, fields, operator.key)


def finish_run(ctx: Context, checked: CheckedRun, started: StartedRun, outcome: EngineResult, *,
               obfuscate: bool = False) -> JSONObject:
    """After the engine: the approvals are spent, the audit checkpoint signed, result.json written (then the
    diagnostics bundle, when a host failed, and result.json again with its name). Returns the result."""
    from .customer.diagnostics import bundle_after_run

    result = outcome.to_dict()
    if _passed_preflight(result):  # spent at the first lock (spend_at_lock); here only what that did not record
        spend_at_lock(ctx, checked, started)()
    try:
        result["checkpoint"] = started.recorder.checkpoint()
        result["witness"] = _witness(ctx, started.recorder, result, [t.plan for t in checked.targets])
        bundle_after_run(ctx.home, result, lambda r: _write(started.journal, "result.json", r), obfuscate=obfuscate)
    finally:
        started.release()  # its records are written: a resume or rollback of it may start
    return result


def spend_at_lock(ctx: Context, checked: CheckedRun, started: StartedRun) -> Callable[[], None]:
    """The engine's ``on_locked`` for a run: the first time a host's lock is taken for it, before anything is changed
    there, the run's approvals are recorded spent in HOME/approvals/used.jsonl (fsync'd), once. A run killed after
    that, then rolled back, leaves them spent: another run naming them is refused (exit 4, the run named); ``resume``
    and ``rollback`` of this run need none. A run refused before any lock (a host locked by another run,
    unreachable) spends nothing."""
    once = threading.Lock()
    done: list[bool] = []

    def spend() -> None:
        with once:
            if done:
                return
            used = _used_approvals(ctx.home)
            fresh = [a for a in checked.approvals if used.find(a.digest) is None]
            if fresh:
                used.mark(fresh, started.run_id, ctx.clock.now())
            done.append(True)

    return spend


def _write(journal: Journal, name: str, data: object) -> None:
    journal.write(name, data)


def _passed_preflight(result: JSONObject) -> bool:
    """Did any host of the run get past its preflight (and so may have been changed)?"""
    return any(p.get("phase") == "preflight" and p.get("status") == "ok"
               for h in cast("list[dict[str, object]]", result["hosts"])
               for p in cast("list[dict[str, object]]", h.get("phases") or []))


def run(ctx: Context, plan: Path | Plan, approvals: Sequence[str | Path] = (), *, checked: CheckedRun | None = None,
        catalog: Path | None = None, limits: RunLimits = RunLimits(), observers: Sequence[Observer] = (),
        events: TextIO | None = None, cancel: threading.Event | None = None,
        confirm: Callable[[list[HostOutcome]], bool] | None = None, break_lock: bool = False,
        obfuscate: bool = False, guard: Guard | None = None,
        on_started: Callable[[RunStart], None] | None = None) -> RunResult:
    """Check the plan and its ``approvals`` (``check_run``; or take ``checked``), then run it on every host:
    preflight, backup, stop, install, start, observe; roll back automatically on failure. Returns the result
    (also in HOME/runs/RUN_ID/result.json); its ``exit_code`` is the CLI's.

    ``observers`` get every engine event; ``events``: a text stream for the JSON Lines of format 1;
    ``cancel``: the run's cancel token; ``confirm``: asked after a healthy canary whether to go on (None: the
    others wait for ``resume``); ``break_lock``: take over host locks of a run known to be dead."""
    from .core.engine import Engine

    warnings: list[str] = []
    if isinstance(plan, Path):
        from .core.plan import load_plan

        source: str | None = str(plan)
        plan = load_plan(plan)
    else:
        source = None
    if checked is None:
        try:
            refuse_refused(plan)
        except PolicyRefused as e:
            record_refusal(ctx, plan, e, approvals)
            raise
        limits = RunLimits.parse(len(plan.hosts), forks=limits.forks, batch=limits.batch,
                                 max_failures=limits.max_failures, canary=limits.canary)
        checked = check_run(ctx, plan, approvals, catalog=catalog, forks=limits.forks, source=source,
                            warnings=warnings)
    token = cancel if cancel is not None else guard.cancel if guard is not None else threading.Event()
    with _running(guard):  # from here a run, once started, always reaches its end and its records
        started = start_run(ctx, plan, checked)
        versions = {h["name"]: (h["current"], h["target"]) for h in plan.hosts}
        told = _observers(observers, events, versions)
        if on_started is not None:
            on_started(RunStart(started.run_id, "run", tuple(versions), started.journal.dir, True,
                                policy=_policy_in_force(checked.policy)))
        engine = Engine(journal=started.journal, clock=ctx.clock, observers=[started.recorder, *told],
                        forks=limits.forks, batch=limits.batch, max_failures=limits.max_failures,
                        controller=started.controller, manual_changes=checked.policy.manual_changes,
                        canary=limits.canary, confirm=confirm, approvals=checked.approval_digests,
                        break_lock=break_lock, cancel=token, catalog_serial=checked.catalog_serial,
                        host_evidence=checked.evidence, on_locked=spend_at_lock(ctx, checked, started),
                        audit=_host_audit("run", started.recorder, plan.digest, checked.window, started.requester,
                                          plan.data.get("policy")))
        if break_lock:
            started.recorder.event("locks_broken", outcome="forced", reason="--break-lock given by the operator")
        try:
            try:
                outcome = engine.run(checked.targets)
            except BaseException as e:
                started.close_on_error(e)
                raise
            _record_interrupts(started.recorder, guard, cancels=True)
            result = finish_run(ctx, checked, started, outcome, obfuscate=obfuscate)
        finally:
            started.release()
    return RunResult.of(result, warnings=warnings)


@contextmanager
def _running(guard: Guard | None) -> Iterator[None]:
    with guard.running() if guard is not None else nullcontext():
        yield


def _observers(observers: Sequence[Observer], events: TextIO | None,
               versions: Mapping[str, tuple[str | None, str | None]]) -> list[Observer]:
    told = list(observers)
    if events is not None:
        told.append(EventStream(events, versions))
    return told


def _record_interrupts(recorder: Recorder, guard: Guard | None, cancels: bool) -> None:
    """The operator's interrupt on the audit record (what the hosts did about it is in their own events)."""
    if guard is not None and guard.presses:
        recorder.event("run_interrupted", outcome="cancelled" if cancels else "continued", presses=guard.presses)


def _host_summary(h: PlanHost) -> JSONObject:
    pkg = h.get("package")
    return {"host": h["name"], "address": h["address"], "install_dir": h["install_dir"], "current": h["current"],
            "target": h["target"], "allowed": h["allowed"], "decision": h["decision"], "checks": h.get("checks"),
            "package": {k: pkg.get(k) for k in ("file", "sha256", "size", "kind")} if pkg else None,
            "ssh_key": _key_fingerprint(h.get("key"))}


def _key_fingerprint(path: str | None) -> str | None:
    """The fingerprint of the SSH key a host is reached with (matches the grant it came in through, if any)."""
    if not path:
        return None
    from .trust.keys import load_private_key, load_public_key
    from .trust.sshsig import fingerprint, public_key_blob

    try:
        pub = Path(path + ".pub")
        key = load_public_key(pub) if pub.is_file() else load_private_key(path).public_key()
        return fingerprint(public_key_blob(key))
    except UpgraderError:
        return None


def _connector(h: PlanHost) -> Callable[[], Transport]:
    """How the engine reaches a host of the plan (a new transport each time it asks)."""
    from .fleet.inventory import host_from_plan
    from .fleet.transport import connect

    host = host_from_plan(h)
    return lambda: connect(host)


def _package_file(h: PlanHost) -> str:
    pkg = h.get("package")
    return pkg["file"] if pkg else ""


def _count(value: str | int | None, total: int, name: str, minimum: int) -> int | None:
    """'N' or 'P%' of ``total`` hosts (a percentage rounds down, at least ``minimum``)."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 <= pct <= 100:
                raise ValueError
            return max(minimum, int(total * pct / 100))
        n = int(text)
    except ValueError:
        raise InputError(f"{name}: expected a number or a percentage like 25%, got {value!r}") from None
    if n < minimum:
        raise InputError(f"{name} must be at least {minimum}")
    return n


# -- resume and rollback ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AcceptedRun:
    """What a run was accepted under, as its sealed journal record says: the plan (its ``plan.json``, whose digest
    is the record's), the approvals recorded, and the fingerprint of the operator key that sealed the record."""

    plan: PlanData
    digest: str
    approvals: list[JSONObject]
    sealed_by: str

    @property
    def approval_digests(self) -> tuple[str, ...]:
        return tuple(str(a["digest"]) for a in self.approvals)


def accepted_run(run_dir: Path, policy: Policy, now: _dt.datetime) -> AcceptedRun:
    """The run's "plan accepted" journal record, refused (exit 4) unless its seal verifies by an operator key the
    operator's audit allowed_signers (``policy``) list now, and the run's plan.json, refused (exit 4) unless its
    digest is the one that record accepted: the journal and the file in the run directory are only HOME's copies,
    and resume and rollback run their commands."""
    from .core.journal import read_journal
    from .core.plan import plan_digest
    from .trust.run_seal import check_seal
    from .trust.signers import policy_signers

    journal = run_dir / "journal.jsonl"
    record = next((rec for rec in read_journal(journal) if rec.phase == "plan" and rec.event == "accepted"), None)
    if record is None:
        raise ApprovalRefused(f"{journal}: no record of an accepted plan: this run never started, or its journal was "
                              "cut; nothing was changed",
                              hint="put the journal back from a backup of the operator's HOME, or make, approve and "
                                   "run a new plan")
    signers_path = policy.audit_signers
    signers = policy_signers(policy, "audit.allowed_signers")
    sealed_by = check_seal(journal, record.seq, run_dir.name, record.data, signers, now)
    plan = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    accepted = str(record.data.get("digest"))
    found = plan_digest(plan)
    if accepted != found:
        raise ApprovalRefused(f"{run_dir / 'plan.json'} is not the plan this run accepted: its sha256 is {found}, "
                              f"the run's journal accepted {accepted}; nothing was changed",
                              hint="the run's plan.json was edited: put the accepted plan back, or make and approve "
                                   "a new plan")
    approvals = record.data.get("approvals")
    return AcceptedRun(cast(PlanData, dict(plan)), accepted,
                       list(cast("list[JSONObject]", approvals if isinstance(approvals, list) else [])), sealed_by)


def accepted_plan(run_dir: Path, policy: Policy, now: _dt.datetime) -> PlanData:
    """The plan run ``run_dir`` was accepted under (``accepted_run``: exit 4 unless the journal's record is sealed by
    an operator's key and plan.json is the plan it accepted)."""
    return accepted_run(run_dir, policy, now).plan


def journal_view(run_dir: Path) -> dict[str, JournalSeen]:
    """Per host, what the run journal proves happened: started, phases intended and done, the end."""
    from .core.journal import read_journal

    seen: dict[str, JournalSeen] = {}
    for rec in read_journal(run_dir / "journal.jsonl"):
        if not rec.host:
            continue
        h = seen.setdefault(rec.host, {"started": False, "ended": None, "intents": [], "done": []})
        if rec.phase == "host" and rec.event == "start":
            h["started"] = True
        elif rec.phase == "host" and rec.event == "end":
            h["ended"] = _opt(rec.data.get("outcome"))
            h["version"] = _opt(rec.data.get("version"))
        elif rec.event == "intent":
            h.setdefault("intents", []).append(rec.phase)
        elif rec.event == "done":
            h.setdefault("done", []).append(rec.phase)
    return seen


def _rolled_back(run_dir: Path) -> bool:
    """Whether a rollback of the run was started (its journal's run-level rollback record, written before any host
    is touched): a run paused after its canary that the operator rolled back is over; its approval does not carry
    the waiting hosts on (attack12r23 M2)."""
    from .core.journal import read_journal

    return (run_dir / "rollback-result.json").exists() or any(
        rec.phase == "rollback" and not rec.host for rec in read_journal(run_dir / "journal.jsonl"))


def refused_at_preflight(run_dir: Path) -> set[str]:
    """Hosts the run's journal shows refused at preflight and never taken further (no backup, stop, install or
    start was ever intended there), read up to the first rollback or resume of the run: the run never prepared
    or stopped them, so a rollback has nothing to undo there and sends them nothing."""
    from .core.journal import read_journal

    failed: set[str] = set()
    went_on: set[str] = set()
    for rec in read_journal(run_dir / "journal.jsonl"):
        if rec.phase in ("rollback", "resume"):
            break
        if not rec.host:
            continue
        if rec.phase == "preflight" and rec.event == "failed":
            failed.add(rec.host)
        elif rec.event in ("intent", "done") and rec.phase != "preflight":
            went_on.add(rec.host)
    return failed - went_on


def _host_audit(kind: str, recorder: Recorder, plan: str | None, window: object, requester: object = None,
                policy: object = None) -> JSONObject:
    """What each host records of this run at its lock (its opening record) and at its finish beside its own account
    (hostagent/witness.py): the kind of run (run, resume, continuation, rollback: the host checks it against its
    own records of the run, never infers it), the id the audit log gives this part of the run, the plan digest,
    whether the run was inside the service window, and (a new run) its requester (user, host, key) and its
    policy's sha256; and the identity of the audit log the run is written to (its first line's hash), so that a
    host serving two logs has each compared only with its own runs."""
    from .audit.log import log_identity

    inside = window.get("inside") if isinstance(window, dict) else None
    who = requester if isinstance(requester, dict) else {}
    digest = policy.get("sha256") if isinstance(policy, dict) else None
    return {"kind": kind, "as": recorder.run, "plan": plan, "window": inside if isinstance(inside, bool) else None,
            "requester": {k: who.get(k) for k in ("user", "host", "key")} if who else None,
            "policy": digest if isinstance(digest, str) else None, "log": log_identity(recorder.log.path)}


def _policy_in_force(policy: Policy) -> JSONObject:
    """The policy a resume, continuation or rollback runs under, as its opening audit event and each host's opening
    record keep it: an auditor judges that part of the run (its service window) by this policy, not by the one
    its first run was planned under (the customer may have changed it since)."""
    return {"source": policy.source, "sha256": policy.digest, "identity": policy.identity}


def _run_dir(ctx: Context, run_id: str, hint: str | None) -> Path:
    """The run's directory; InputError when there is no such run (``hint`` None: name the recent runs)."""
    from .core.journal import run_dir_of, runs_dir

    run_dir = run_dir_of(ctx.home, run_id)
    if not (run_dir / "plan.json").is_file():
        if hint is None:
            known = sorted(p.name for p in runs_dir(ctx.home).glob("*") if p.is_dir())[-5:]
            hint = f"recent runs: {', '.join(known) or 'none'}; or give --home"
        raise InputError(f"no run {run_id!r} in {runs_dir(ctx.home)}", hint=hint)
    return run_dir


def _hold_run(run_dir: Path, run_id: str) -> int:
    """The run's directory locked (flock) for the command that works on the run now: a run, and each resume or
    rollback of it, holds it until its records are written; the kernel lets it go when the process dies (a killed
    run). Returns the descriptor to close; InputError (nothing written) while another command holds it: the audit
    log counts a line of a run after a resume or rollback of it opened as edited (attack20r16 H1), so a resume or
    rollback of a run that is still working is refused, not interleaved with it."""
    import fcntl

    # a file of the operator's, 0600 (attack20r17 M2): another account that can read the run directory could
    # otherwise hold a lock on the directory itself and refuse every resume and rollback of the run
    try:
        fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise InputError(f"run {run_id}: cannot open its lock file {run_dir / '.lock'}: {e.strerror}",
                         hint="make the run directory the operator's and not a link, then try again") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError(f"run {run_id} is still running in another upgrader process (or a resume or rollback of "
                         "it is)", hint="wait until it ends, or stop it (Ctrl-C), then try again") from None
    return fd


@contextmanager
def _holding_run(run_dir: Path, run_id: str) -> Iterator[None]:
    fd = _hold_run(run_dir, run_id)
    try:
        yield
    finally:
        os.close(fd)


def _select(run_dir: Path, hosts: list[PlanHost], pattern: str | None) -> list[PlanHost]:
    if not pattern:
        return hosts
    from .fleet.inventory import Inventory, host_from_plan

    inv = Inventory(path=run_dir / "plan.json", hosts={h["name"]: host_from_plan(h) for h in hosts}, groups={})
    names = {h.name for h in inv.select(pattern)}
    return [h for h in hosts if h["name"] in names]


def _notify(observers: Sequence[Observer], kind: str, run_id: str, clock: Clock, **data: object) -> None:
    """An event of resume or rollback themselves (their start and end), to the caller's observers only."""
    event: Event = {"event": kind, "run": run_id, "host": None, "time": clock.now().isoformat(), **data}
    for o in observers:
        o.on_event(event)


def _close(ctx: Context, recorder: Recorder, journal: Journal, result: JSONObject, name: str,
           obfuscate: bool, ran: Collection[str] | None = None) -> JSONObject:
    """The end of every command that ran hosts: audit outcome and signed checkpoint, result file. ``ran``: the hosts
    this part ran, when the result also holds hosts an earlier part ran (a continuation after a canary)."""
    from .customer.diagnostics import bundle_after_run

    hosts = cast("list[dict[str, object]]", result["hosts"])
    recorder.event("run_finished", outcome=str(result["exit_code"]), outcomes={h["host"]: h["outcome"] for h in hosts})
    result["checkpoint"] = recorder.checkpoint()
    plan = journal.dir / "plan.json"
    plan_hosts = cast("list[PlanHost]", json.loads(plan.read_text(encoding="utf-8")).get("hosts") or []) \
        if plan.is_file() else []
    result["witness"] = _witness(ctx, recorder, result, plan_hosts, ran)
    bundle_after_run(ctx.home, result, lambda r: _write(journal, name, r), name, obfuscate=obfuscate)
    return result


def _agent_call(connector: Callable[[], Transport], install_dir: str,
                state_dir: str | None) -> Callable[[str, JSONObject], JSONObject]:
    """``call(op, request)`` on the agent of one install: a connection, one request, the session ended as every
    command ends it (an SSH one kept idle for reuse)."""
    from .audit.witness import CALL_TIMEOUT
    from .fleet.transport import AgentClient

    def call(op: str, request: JSONObject) -> JSONObject:
        transport = connector()
        try:
            return AgentClient(transport).call(op, timeout=CALL_TIMEOUT, install_dir=install_dir, state_dir=state_dir,
                                               **request)
        finally:
            transport.close()
    return call


def _witness(ctx: Context, recorder: Recorder, result: JSONObject, plan_hosts: Sequence[PlanHost],
             ran: Collection[str] | None = None) -> JSONObject | None:
    """After the checkpoint: every host the run reached (a phase of it went well, or the host recorded its finish: a
    resume or rollback of a run killed before its backup ends it "unchanged" with no phase) appends the checkpoint
    to its own record (audit/witness.py); of a continuation after a canary, only the hosts it ran (``ran``): the
    canary host never ran it and keeps no record of it to witness (attack20r15 L3). A host that does not is named in the result's ``witness.missing`` (the CLI
    warns) and in a ``witness_missing`` line of the audit log; the run's outcome stays what it was."""
    from .audit.witness import WitnessTarget, send_witnesses

    cp = cast("dict[str, Any] | None", result.get("checkpoint"))
    if not cp:
        return None
    reached = {str(h.get("host")) for h in cast("list[dict[str, object]]", result.get("hosts") or [])
               if h.get("finished") is True
               or any(p.get("status") == "ok" for p in cast("list[dict[str, object]]", h.get("phases") or []))}
    if ran is not None:
        reached &= set(ran)
    label = str(recorder.run or result["run_id"])
    if "/" in label:  # a resume or rollback: also the hosts that finished a part of the run killed before its checkpoint
        reached |= _unwitnessed_finishes(recorder.log.path, label)
    targets = [WitnessTarget(h["name"], _agent_call(_connector(h), h["install_dir"], h.get("state_dir")))
               for h in plan_hosts if h["name"] in reached]
    try:  # the operator's policy: each host also tells its local syslog (a SIEM keeps it)
        syslog = bool(load_policy(ctx).audit_syslog) if targets else False
    except Exception:  # noqa: BLE001 - the run already loaded it; a witness never fails a run
        syslog = False
    syslog_failed: dict[str, str] = {}
    # the run as the log's checkpoint line names it (a rollback's or resume's own id, RUN/rollback-…), which is the
    # id each host recorded at its finish (label, above)
    missing = send_witnesses(targets, cp, label, recorder.clock.now().isoformat(timespec="milliseconds"),
                             syslog=syslog, syslog_failed=syslog_failed)
    for host, why in sorted(missing.items()):
        try:  # no run: the run closed with its checkpoint; the next checkpoint covers this line
            recorder.log.append("witness_missing", host=host, time=recorder.clock.now().isoformat(
                timespec="milliseconds"), data={"for_run": label, "seq": cp["seq"], "head": cp["head"],
                                                "error": why})
        except Exception:  # noqa: BLE001 - the warning in the result still says it
            pass
    return {"witnessed": sorted(t.name for t in targets if t.name not in missing),
            "missing": [{"host": h, "error": why} for h, why in sorted(missing.items())],
            **({"syslog": {"sent": sorted(t.name for t in targets if t.name not in missing
                                          and t.name not in syslog_failed),
                           "failed": [{"host": h, "error": why} for h, why in sorted(syslog_failed.items())]}}
               if syslog else {})}


def _unwitnessed_finishes(log: Path, label: str) -> set[str]:
    """The hosts the audit log ends (host_finished) in an earlier part of ``label``'s run that has no checkpoint of
    its own (killed after those hosts finished) and no later part's checkpoint came after: each keeps its finish and
    no witness of it; the checkpoint of this part covers those lines, and the host's agent takes it for that part
    (hostagent/witness.py ``_covered``; attack20r16 M2)."""
    base = label.split("/")[0]
    ends: dict[str, set[str]] = {}
    try:
        data = log.read_bytes()
    except OSError:
        return set()
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        run = rec.get("run") if isinstance(rec, dict) else None
        if not isinstance(run, str) or run == label or run.split("/")[0] != base:
            continue
        if rec.get("event") == "checkpoint":  # its hosts were asked then; an earlier killed part was covered then
            ends.clear()
        elif rec.get("event") == "host_finished" and isinstance(rec.get("host"), str):
            ends.setdefault(run, set()).add(rec["host"])
    return {h for hosts in ends.values() for h in hosts}


def _finished(observers: Sequence[Observer], result: JSONObject, clock: Clock) -> None:
    hosts = cast("list[dict[str, object]]", result["hosts"])
    _notify(observers, "run_finished", str(result["run_id"]), clock, exit_code=result["exit_code"],
            stopped_early=result.get("stopped_early"), outcomes={str(h["host"]): h["outcome"] for h in hosts})


def _part_label(run_id: str, part: str, clock: Clock) -> str:
    """The id the log and each host give a resume or rollback of ``run_id`` (RUN/resume-…, RUN/rollback-…): its
    time and random bits, as a run id has (``new_run_id``), so that two of one run in the same second never share a
    label (a host ends each label once and would refuse the second one's finish); the time first keeps them
    sortable."""
    from .core.journal import new_run_id

    return f"{run_id}/{part}-{new_run_id(clock.now())}"


def resume(ctx: Context, run_id: str, *, hosts: str | None = None, yes: bool = False,
           confirm: Callable[[list[HostOutcome]], bool] | None = None, break_lock: bool = False,
           obfuscate: bool = False, observers: Sequence[Observer] = (), events: TextIO | None = None,
           guard: Guard | None = None, on_started: Callable[[RunStart], None] | None = None) -> RunResult:
    """Finish what an interrupted run left, from its journal and each host's own state: hosts before stop are
    released untouched, hosts stopped, mid-install or mid-start are rolled back (or completed, if the playbook
    says so), hosts done stay done. A run paused after a healthy canary goes on with the waiting hosts
    (``yes``, or ``confirm`` says so; else InputError), under the same approval checked again now. A run that
    had ended: ``RunResult.ran`` is False. Running it twice changes nothing the second time."""
    run_dir = _run_dir(ctx, run_id, "check the run id, or give --home")
    with _holding_run(run_dir, run_id):  # never beside the run or another resume or rollback of it
        return _resume(ctx, run_id, run_dir, hosts=hosts, yes=yes, confirm=confirm, break_lock=break_lock,
                       obfuscate=obfuscate, observers=observers, events=events, guard=guard, on_started=on_started)


def _resume(ctx: Context, run_id: str, run_dir: Path, *, hosts: str | None, yes: bool,
            confirm: Callable[[list[HostOutcome]], bool] | None, break_lock: bool, obfuscate: bool,
            observers: Sequence[Observer], events: TextIO | None, guard: Guard | None,
            on_started: Callable[[RunStart], None] | None) -> RunResult:
    done_file = run_dir / "result.json"
    if done_file.is_file():
        result = cast(JSONObject, json.loads(done_file.read_text(encoding="utf-8")))
        outcomes = cast("list[dict[str, object]]", result["hosts"])
        waiting = [str(h["host"]) for h in outcomes if h["outcome"] in ("waiting", "not_started")]
        needs_person = [h["host"] for h in outcomes if h["outcome"] == "needs_person"]
        view = journal_view(run_dir)
        # hosts of a continuation after the canary that was itself interrupted are finished from the journal
        # below, like any interrupted run, and so are hosts that need a person (locked, lost, a failed rollback:
        # resume reads each again and finishes what it can); otherwise the run had ended
        if not needs_person and not any(view.get(h, {}).get("started") for h in waiting):
            if waiting and "canary succeeded" in str(result.get("stopped_early") or "") \
                    and not _rolled_back(run_dir):  # the operator rolled it back: its waiting hosts stay as they are
                return _continue_after_canary(ctx, run_id, run_dir, result, waiting, yes, confirm, observers,
                                              events, guard, on_started, obfuscate)
            return RunResult.of(result, ran=False)
    clock = ctx.clock
    policy = load_policy(ctx)  # the operator's, never a path the plan names
    accepted = accepted_run(run_dir, policy, clock.now())  # exit 4 unless sealed by an operator and plan.json is it
    plan = accepted.plan
    chosen = _select(run_dir, plan["hosts"], hosts)
    seen = journal_view(run_dir)
    approvals = accepted.approval_digests
    from .core.engine import Engine, HostTarget
    from .core.gate import check_playbooks
    from .core.journal import Journal
    from .core.recorder import Recorder
    from .trust.host_evidence import run_evidence

    evidence = run_evidence(run_dir, plan, approvals)  # exit 4 unless it is this run's plan and approvals
    journal = Journal(run_dir, clock.now)
    check_playbooks(chosen, ctx.home)  # what resume runs is the operator's playbook's, exit 4 otherwise
    warnings: list[str] = []
    operator = _operator(ctx, policy, warnings=warnings)
    recorder = Recorder(ctx.home, operator, clock, run=_part_label(run_id, "resume", clock))
    recorder.event("resume_requested", of_run=run_id, hosts=[h["name"] for h in chosen],
                   journal={k: {"intents": v.get("intents"), "ended": v.get("ended")} for k, v in seen.items()},
                   policy=_policy_in_force(policy))
    package_dir = Path(str(plan["catalog"]["path"])).parent
    targets = [HostTarget(plan=h, connect=_connector(h), package_file=package_dir / _package_file(h))
               for h in chosen]
    told = _observers(observers, events, {h["name"]: (h["current"], h["target"]) for h in chosen})
    engine = Engine(journal=journal, clock=clock, observers=[recorder, *told],
                    controller={"user": operator.user, "host": operator.host}, approvals=approvals,
                    break_lock=break_lock, host_evidence=evidence,
                    audit=_host_audit("resume", recorder, accepted.digest, None, policy=_policy_in_force(policy)))
    with _running(guard):  # until its records are written
        if on_started is not None:
            on_started(RunStart(run_id, "resume", tuple(h["name"] for h in chosen), journal.dir, False,
                                policy=_policy_in_force(policy)))
        _notify(told, "run_started", run_id, clock, hosts=[h["name"] for h in chosen], command="resume")
        result = engine.resume(targets, seen).to_dict()
        _record_interrupts(recorder, guard, cancels=False)
        _close(ctx, recorder, journal, result, "result.json", obfuscate)
        _finished(told, result, clock)
    return RunResult.of(result, warnings=warnings)


def _continue_after_canary(ctx: Context, run_id: str, run_dir: Path, result: JSONObject, waiting: list[str],
                           yes: bool, confirm: Callable[[list[HostOutcome]], bool] | None,
                           observers: Sequence[Observer], events: TextIO | None, guard: Guard | None,
                           on_started: Callable[[RunStart], None] | None, obfuscate: bool) -> RunResult:
    """A run stopped after a good canary goes on with the waiting hosts, under the same approval."""
    from .core.engine import OUTCOME_EXIT, Engine
    from .core.gate import check_playbooks, redecide
    from .core.journal import Journal
    from .core.recorder import Recorder
    from .fleet.transport import connect
    from .trust.host_evidence import run_evidence

    outcomes = cast("list[dict[str, object]]", result["hosts"])
    if not yes:
        committed = [HostOutcome(str(h["host"]), "committed", None, None) for h in outcomes
                     if h["outcome"] == "committed"]
        if confirm is None or not confirm(committed):
            raise InputError(f"{len(waiting)} host(s) wait for a confirmation after the canary: "
                             f"{', '.join(waiting)}", hint=f"upgrader resume {run_id} --yes")
    clock = ctx.clock
    accepted = accepted_run(run_dir, load_policy(ctx), clock.now())  # exit 4 unless sealed by an operator
    plan = accepted.plan
    chosen = [h for h in plan["hosts"] if h["name"] in waiting]
    approvals = accepted.approval_digests
    evidence = run_evidence(run_dir, plan, approvals)  # exit 4 unless it is this run's plan and approvals
    policy = plan_policy(ctx, plan)
    window = _check_continuation(run_id, accepted, policy, clock.now())
    cat, _ = trusted_catalog(Path(str(plan["catalog"]["path"])), policy, ctx.home, clock.now())
    if cat.sha256 != plan["catalog"]["sha256"]:
        raise ApprovalRefused(f"the catalog {cat.path} is not the one the plan was made with",
                              hint="make and approve a new plan for the waiting hosts")
    operators = check_playbooks(chosen, ctx.home)
    targets = _targets(cat, chosen)
    redecide(chosen, policy=policy, catalog=cat, now=clock.now(), connect=connect,
             playbooks=operators)  # decided again now
    journal = Journal(run_dir, clock.now)
    warnings: list[str] = []
    operator = _operator(ctx, policy, warnings=warnings)
    recorder = Recorder(ctx.home, operator, clock, run=_part_label(run_id, "resume", clock))
    recorder.event("resume_requested", of_run=run_id, hosts=waiting, after="canary confirmed", window=window,
                   policy=_policy_in_force(policy))
    token = guard.cancel if guard is not None else threading.Event()
    told = _observers(observers, events, {h["name"]: (h["current"], h["target"]) for h in chosen})
    engine = Engine(journal=journal, clock=clock, observers=[recorder, *told], forks=10,
                    controller={"user": operator.user, "host": operator.host},
                    manual_changes=policy.manual_changes, approvals=approvals, cancel=token,
                    catalog_serial=cat.serial, host_evidence=evidence,
                    audit=_host_audit("continuation", recorder, accepted.digest, window,
                                      policy=_policy_in_force(policy)))
    with _running(guard):  # until its records are written
        if on_started is not None:
            on_started(RunStart(run_id, "resume", tuple(waiting), journal.dir, True, policy=_policy_in_force(policy)))
        more = engine.run(targets).to_dict()
        _record_interrupts(recorder, guard, cancels=True)
        by_host = {h["host"]: h for h in cast("list[dict[str, object]]", more["hosts"])}
        merged = [by_host.get(h["host"], h) for h in outcomes]
        result["hosts"] = merged
        result["stopped_early"] = more.get("stopped_early")
        result["exit_code"] = max(OUTCOME_EXIT[str(h["outcome"])] for h in merged)
        _close(ctx, recorder, journal, result, "result.json", obfuscate, ran=[str(h) for h in by_host])
    return RunResult.of(result, warnings=warnings)


def _check_continuation(run_id: str, accepted: AcceptedRun, policy: Policy, now: _dt.datetime) -> JSONObject:
    """Hosts that wait after a canary are started later: the run's approvals must still be valid then, and
    the service window must allow it then (as ``run`` checks both when it starts). Returns the window."""
    from .customer.service_window import check_run_window

    records = accepted.approvals
    valid = [a for a in records if _dt.datetime.fromisoformat(str(a["expires"])) > now]
    required = int(policy.approvals_required)
    if len(valid) < required:
        expired = ", ".join(f"{a['approver']} (until {a['expires']})" for a in records) or "none recorded"
        raise ApprovalRefused(f"the approval of run {run_id} is no longer valid ({expired}); the hosts that wait "
                              "after its canary were not touched",
                              hint="make and approve a new plan for those hosts (upgrader plan --hosts ...)")
    return dict(check_run_window(accepted.plan.get("window"), policy,
                                 [str(a["approver"]) for a in valid if a.get("after_hours")], now))


def rollback(ctx: Context, run_id: str, *, hosts: str | None = None, batch: str | int | None = None,
             max_failures: str | int | None = None, confirm: Callable[[list[PlanHost]], bool] | None = None,
             break_lock: bool = False, obfuscate: bool = False, confirmed_by: str = "--yes",
             observers: Sequence[Observer] = (), events: TextIO | None = None, guard: Guard | None = None,
             on_started: Callable[[RunStart], None] | None = None) -> RunResult | None:
    """Restore each host of run ``run_id`` from its verified backup, start the old version and observe it.
    A host a later run changed since is refused before it is stopped (``superseded``, exit 5); a host where
    the run is already undone is left as it is. ``confirm`` is asked (with the hosts) once every check
    passed, before any host is stopped: False returns None, nothing touched. ``confirmed_by``: how the
    operator said yes, for the audit log."""
    run_dir = _run_dir(ctx, run_id, None)
    with _holding_run(run_dir, run_id):  # never beside the run or another resume or rollback of it
        return _rollback(ctx, run_id, run_dir, hosts=hosts, batch=batch, max_failures=max_failures, confirm=confirm,
                         break_lock=break_lock, obfuscate=obfuscate, confirmed_by=confirmed_by, observers=observers,
                         events=events, guard=guard, on_started=on_started)


def _rollback(ctx: Context, run_id: str, run_dir: Path, *, hosts: str | None, batch: str | int | None,
              max_failures: str | int | None, confirm: Callable[[list[PlanHost]], bool] | None, break_lock: bool,
              obfuscate: bool, confirmed_by: str, observers: Sequence[Observer], events: TextIO | None,
              guard: Guard | None, on_started: Callable[[RunStart], None] | None) -> RunResult | None:
    from .core.engine import Engine, HostTarget
    from .core.gate import check_playbooks
    from .core.journal import Journal
    from .core.recorder import Recorder
    from .customer.service_window import rollback_window

    clock = ctx.clock
    journal_clock = clock.now
    policy = load_policy(ctx)  # the operator's, never a path the plan names
    accepted = accepted_run(run_dir, policy, clock.now())  # exit 4 unless sealed by an operator and plan.json is it
    plan = accepted.plan
    chosen = _select(run_dir, plan["hosts"], hosts)
    check_playbooks(chosen, ctx.home)  # the rollback's start and probes are the operator's playbook's, exit 4
    warnings: list[str] = []
    operator = _operator(ctx, policy, warnings=warnings)
    b = _count(batch, len(chosen), "--batch", minimum=1)
    m = _count(max_failures, len(chosen), "--max-failures", minimum=0)
    window, window_line = rollback_window(policy, clock.now())  # exit 4 here when the policy says like_run
    if confirm is not None and not confirm(chosen):  # it stops the service: asked first
        return None
    journal = Journal(run_dir, journal_clock)
    recorder = Recorder(ctx.home, operator, clock, run=_part_label(run_id, "rollback", clock))
    recorder.event("rollback_requested", of_run=run_id, hosts=[h["name"] for h in chosen], batch=b,
                   max_failures=m, window=window, confirmed=confirmed_by, break_lock=bool(break_lock),
                   policy=_policy_in_force(policy))
    targets = [HostTarget(plan=h, connect=_connector(h), package_file=Path()) for h in chosen]
    told = _observers(observers, events, {h["name"]: (h["target"], h["current"]) for h in chosen})
    engine = Engine(journal=journal, clock=clock, observers=[recorder, *told], batch=b, max_failures=m,
                    controller={"user": operator.user, "host": operator.host}, break_lock=break_lock,
                    audit=_host_audit("rollback", recorder, accepted.digest, window, policy=_policy_in_force(policy)))
    with _running(guard):  # until its records are written
        if on_started is not None:
            on_started(RunStart(run_id, "rollback", tuple(h["name"] for h in chosen), journal.dir, False,
                                window_line, policy=_policy_in_force(policy)))
        _notify(told, "run_started", run_id, clock, hosts=[h["name"] for h in chosen], command="rollback")
        result = engine.rollback(targets, untouched=refused_at_preflight(run_dir)).to_dict()
        _record_interrupts(recorder, guard, cancels=False)
        _close(ctx, recorder, journal, result, "rollback-result.json", obfuscate)
        _finished(told, result, clock)
    return RunResult.of(result, warnings=warnings)


# -- a plan's hosts read before a run (run --dry-run, plan show --check) ----------------------------------

@dataclass(frozen=True)
class HostsChecked:
    """``check_hosts``: each host of the plan read now (read-only): ``checks`` (reachable, problems, facts),
    the commands and probes a run would use there (in ``data``), and the order of the hosts (waves; the first
    is the canary when there is one). ``data`` is what ``run --dry-run --json`` prints."""

    data: JSONObject
    checks: list[HostCheck]
    hosts: list[PlanHost]
    order: list[list[str]]

    @property
    def ok(self) -> bool:
        return all(x.ok for x in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when every host is ready, 5 when one is unreachable or not as the plan expects."""
        return 0 if self.ok else 5


def check_hosts(plan: Plan, *, canary: int = 0, batch: int | None = None,
                package_verified: bool = False) -> HostsChecked:
    """Read every host of ``plan`` (read-only: its version, lock, free space, host key, package) and say what a
    run would do there; touches nothing. ``package_verified``: the caller checked the packages against the
    signed catalog (``check_run`` does)."""
    from .core.hostcheck import check_hosts as _check_hosts
    from .core.hostcheck import commands, waves
    from .fleet.inventory import host_from_plan
    from .fleet.transport import connect

    hosts = list(plan.hosts)

    def connector(h: PlanHost) -> Transport:
        return connect(host_from_plan(h))

    checks = _check_hosts(hosts, connector)
    order = waves([h["name"] for h in hosts], canary, batch)
    data: JSONObject = {
        "dry_run": True, "digest": plan.digest, "ok": all(x.ok for x in checks), "order": order,
        "package_verified": package_verified,
        "hosts": [{**x.to_dict(), "current": h["current"], "target": h["target"],
                   "commands": [{"what": w, "text": t} for w, t in commands(h)]} for x, h in zip(checks, hosts)]}
    return HostsChecked(data, checks, hosts, order)


# -- audit, packages -------------------------------------------------------------------------------------

def verify_audit(ctx: Context, *, log: Path | None = None, allowed_signers: Path | None = None,
                 anchor: str | None = None, data: bytes | None = None) -> VerifyResult:
    """The verdict on the audit log (HOME/audit/audit.jsonl, or ``log``): its hash chain and every signed
    checkpoint, against ``allowed_signers`` (else the operator's policy's audit signers); ``anchor``
    (``SEQ:HEAD``, a checkpoint's JSON or a file holding either) proves no tail was cut. ``status``: intact,
    altered (exit 6) or cannot_check (exit 2); ``data``: the log's bytes when already read."""
    from .audit.log import parse_anchor, verify_log
    from .core.recorder import audit_path
    from .trust.signers import policy_signers, read_allowed_signers

    anchored = parse_anchor(anchor) if anchor else None
    signers: AllowedSigners | None = None
    source: Path | None = None
    digest: str | None = None  # the report names the exact file it trusted: the sha256 of the bytes it parsed
    if allowed_signers is not None:
        source = Path(allowed_signers)
        signers, digest = read_allowed_signers(source)
    else:
        policy = load_policy(ctx)
        signers = policy_signers(policy, "audit.allowed_signers")
        read = policy.trust_file("audit.allowed_signers")
        if signers is not None and read is not None and read.source is not None:
            source, digest = Path(read.source), read.sha256
    result = verify_log(Path(log) if log else audit_path(ctx.home), signers=signers,
                        anchor=anchored, data=data)
    result.signers_file = str(source) if source is not None else None
    result.signers_sha256 = digest
    result.anchor = f"{anchored[0]}:{anchored[1]}" if anchored else None
    _check_approvers(ctx, result, Path(log) if log else audit_path(ctx.home), data)
    return result


def _check_approvers(ctx: Context, result: VerifyResult, path: Path, data: bytes | None) -> None:
    """Every approver the log names held to the approvers' allowed_signers (the policy's approvals.allowed_signers):
    a name that is not a literal principal of its approval's key there makes the log ALTERED at that line
    (``approvers_file`` names the file; without one the names stay the controller's word)."""
    from .audit.crosscheck import approver_problem
    from .audit.log import read_events, read_log
    from .trust.signers import policy_signers

    try:
        signers = policy_signers(load_policy(ctx), "approvals.allowed_signers")
    except UpgraderError:
        return  # no policy to read on the auditor's machine: the names stay the controller's word
    if signers is None:
        return
    result.approvers_file = str(signers.source)
    from .trust.requester import _PATTERN_CHARS

    result.approvers_keys = frozenset(x.fingerprint for x in signers.entries
                                      if any(not _PATTERN_CHARS & set(p) for p in x.principals))
    if not result.chain_intact:
        return
    events = list(read_events(path, data if data is not None else read_log(path)))
    found = approver_problem(events[:result.valid_entries] if result.valid_entries else events, signers)
    if found is not None:
        line, why = found
        result.bad_line, result.problem, result.message = line, "forged", f"line {line}: {why}"
        result.valid_entries = min(result.valid_entries, line - 1)


def verify_witnesses(ctx: Context, inventory: Path, *, log: Path | None = None, data: bytes | None = None,
                     hosts: str | None = None, earlier: Sequence[Path] = (),
                     syslog: Sequence[Path] = (), other_logs: Sequence[Path] = (),
                     allowed_signers: Path | None = None,
                     other_signers: Mapping[Path, Path] | None = None) -> WitnessResult:
    """The audit log (its ``data`` when already read) against the checkpoints every host of ``inventory`` (or those
    ``hosts`` selects) witnessed at the end of each run (read-only). ``status``: intact, altered (a witnessed head
    the log does not have, or a witnessed run cut off: exit 6) or cannot_check (a host could not be read: exit 2).
    ``earlier``: policy files in force at other times; a run (or rollback) made under one of them has its service
    window judged by it. ``syslog``: syslog exports holding the hosts' witnesses (copies off the hosts, out of a
    controller's reach), each compared with the log and with its host's own records. ``other_logs``: the other
    audit logs of the same hosts (the customer's guide on a host, another controller): each is checked against
    the hosts' records of its own runs, its findings named by its file. Each other log is first verified on its own
    (chain, signatures under its own ``other_signers[path]`` when given, else ``allowed_signers`` or the policy's
    audit signers, unsigned tail): one that is not intact explains none of the hosts' records (it could say
    anything), and the verdict names it and why. A syslog export that holds no copy of these logs' witnesses is
    named (not proven): a wrong export must not read as checked."""
    from .audit.log import read_log
    import datetime as _dt

    from .audit.witness import (WitnessTarget, authenticated_copies, check_witnesses, read_syslog_copies,
                                read_witnesses, unused_exports)
    from .core.recorder import audit_path
    from .fleet.inventory import load_inventory
    from functools import partial

    from .fleet.transport import connect

    inv = load_inventory(inventory)
    if data is None:
        data = read_log(Path(log) if log else audit_path(ctx.home))
    named = _log_hosts(data)
    chosen = inv.select(hosts)
    elsewhere: list[tuple[str, str, object, JSONObject]] = []
    for h in chosen:  # each host is read where the log says its runs went, not where the auditor's inventory says
        where = named.get(h.name)
        if where is None:
            continue
        for key, mine in (("install_dir", h.install_dir), ("address", h.address)):
            said = where.get(key)
            if key == "install_dir" and said is not None and (
                    not isinstance(said, str) or os.path.normpath(said) != os.path.normpath(str(mine))):
                # the log's line is the controller's word, the inventory the customer's: the host is read where the
                # inventory says, and the line is judged by what the host keeps there (attack20r12 M3)
                elsewhere.append((h.name, str(mine), where[key], where))
                continue
            if where.get(key) is not None and os.path.normpath(str(where[key])) != os.path.normpath(str(mine)):
                raise InputError(f"host {h.name} has {key} {mine}, but the audit log's last run on it "
                                 f"(line {where['line']}) has {where[key]}: the hosts' records are read where the log's "
                                 "runs went", path=str(inventory), key=f"hosts.{h.name}.{key}",
                                 hint=f"give the inventory the runs used (its {key}: {where[key]})")
    targets = [WitnessTarget(h.name, _agent_call(partial(connect, h), h.install_dir, h.state_dir)) for h in chosen]
    read = {h.name for h in chosen}
    not_read = {name: "not selected" if name in inv.hosts else f"not in the inventory {inventory}"
                for name in named if name not in read}
    policy = load_policy(ctx)
    witnessed = read_witnesses(targets, syslog=bool(policy.audit_syslog))
    for w in witnessed:  # a host the log names with no ledger where its runs went: nothing of it is on record
        if w.absent and w.host in named and not w.error:
            w.error = (f"it keeps no state dir at {w.absent}, where the log's runs on it went: no record of "
                       "them there")
    others = [load_policy(str(p)) for p in earlier]
    copies = []
    for p in syslog:
        try:
            copies += read_syslog_copies(Path(p))
        except OSError as e:
            raise InputError(f"cannot read the syslog export {p}: {e.strerror or e}", path=str(p),
                             hint="give the file your SIEM (or the host's auth log copied off it) exported") from e
    from .audit.log import log_identity, log_identity_of

    window, windows = _window_of(policy), {p.digest: _window_of(p) for p in others}
    logs = [(Path(p), read_log(Path(p))) for p in other_logs]
    untrusted = _untrusted_logs(ctx, logs, allowed_signers, other_signers or {})
    logs = [(p, d) for p, d in logs if p not in untrusted]  # a log not intact on its own explains nothing
    given = {log_identity(p) or "": str(p) for p, _ in logs}
    main_id = log_identity_of(data) or ""
    # only a copy signed by a trusted audit key is evidence (attack20r8 #3): the log's own signers for its copies,
    # each other log's (--other-log LOG:SIGNERS) for its own
    main_signers = _audit_signers(ctx, allowed_signers)
    copies, ignored, unsigned = authenticated_copies(
        copies, [(data, main_signers)] + [(d, _audit_signers(ctx, (other_signers or {}).get(p) or allowed_signers))
                                          for p, d in logs], _dt.datetime.now(_dt.timezone.utc))
    result = check_witnesses(data, witnessed, not_read=not_read, window=window, policy_digest=policy.digest,
                             earlier=windows, syslog_copies=copies, given_logs=given, syslog_given=bool(syslog))
    for en, zh in ignored:
        result.ignored.append(en)
        result.ignored_zh.append(zh)
    _install_dir_findings(result, data, elsewhere)
    for en, zh, altered in untrusted.values():
        result.found(en, zh, doubt=not altered)
    for en, zh in unused_exports([str(Path(p)) for p in syslog], copies, [data] + [d for _, d in logs], unsigned):
        result.found(en, zh, doubt=True)
    for path, other in logs:  # each other log against the hosts' records of its own runs
        ours = {**given, main_id: "the log verified"}
        theirs = check_witnesses(other, witnessed, window=window, policy_digest=policy.digest, earlier=windows,
                                 syslog_copies=copies, given_logs=ours, syslog_given=bool(syslog))
        result.checked += theirs.checked
        for en, zh in zip(theirs.problems, theirs.problems_zh):
            result.found(f"log {path}: {en}", f"日志 {path}：{zh}")
        for en, zh in zip(theirs.doubts, theirs.doubts_zh):
            result.found(f"log {path}: {en}", f"日志 {path}：{zh}", doubt=True)
    return result


def _audit_signers(ctx: Context, allowed_signers: Path | None) -> AllowedSigners | None:
    """The allowed signers audit checkpoints are verified with: ``allowed_signers`` when given, else the policy's
    audit signers (verify_audit's), None when none are known."""
    from .trust.signers import policy_signers, read_allowed_signers

    if allowed_signers is not None:
        return read_allowed_signers(Path(allowed_signers))[0]
    return policy_signers(load_policy(ctx), "audit.allowed_signers")


def _untrusted_logs(ctx: Context, logs: Sequence[tuple[Path, bytes]], allowed_signers: Path | None,
                    own_signers: Mapping[Path, Path]) -> dict[Path, tuple[str, str, bool]]:
    """{path: (en, zh, altered)} for each ``--other-log`` that is not intact on its own verification (under its own
    allowed signers, ``own_signers[path]``, when the auditor gave them: the customer's guide signs with the
    customer's own audit key; else the same allowed signers as the log verified): an edited line, a broken chain,
    a checkpoint signed by a key not allowed or a finished run left unsigned make it ALTERED; no signers known
    leaves it unproven. Such a log may say anything, so its runs must not explain a host's records."""
    from .audit.view import describe

    out: dict[Path, tuple[str, str, bool]] = {}
    for path, data in logs:
        own = own_signers.get(path)
        v = verify_audit(ctx, log=path, allowed_signers=own or allowed_signers, data=data)
        code = audit_exit_code(v)
        if code == 0:
            continue
        hint, hint_zh = ("", "") if own is not None else (
            "; a log signed under other allowed signers is given with them: --other-log LOG:SIGNERS",
            "；在另一份 allowed_signers 下签名的日志，请连同它一起给出：--other-log 日志:签名人文件")
        out[path] = (f"log {path} given with --other-log is not intact on its own: {describe(v)}; its runs explain "
                     f"none of the hosts' records (verify it with: upgrader audit verify LOG){hint}",
                     f"用 --other-log 给出的日志 {path} 自身未通过核验：{describe(v, 'zh')}；它的运行不能解释主机的任何记录"
                     f"（请用 upgrader audit verify 日志 单独核验它）{hint_zh}", code == 6)
    return out


def _window_of(policy: Policy) -> object:
    """The policy's service window, None when it has no usable one (the window is then not judged)."""
    from .customer.service_window import load_service_window

    try:
        return load_service_window(policy)
    except Exception:  # noqa: BLE001 - a policy without a usable window: the window is not judged
        return None


def _install_dir_findings(result: WitnessResult, data: bytes,
                          elsewhere: Sequence[tuple[str, str, object, JSONObject]]) -> None:
    """A log line that sends a host's run to another install_dir than the inventory's (or one that is no path at
    all): the host was read at the inventory's. When the host keeps records there of the log's earlier runs and the
    line's run never reached it (by the log's own lines), the line contradicts the host: ALTERED; otherwise not
    proven (the host may have been moved: give the inventory its install_dir)."""
    from .audit.reach import _reached
    from .audit.witness import _log_lines

    reached = _reached(_log_lines(data)[2])
    for name, mine, theirs, where in elsewhere:
        h = next((w for w in result.hosts if w.host == name), None)
        keeps = h is not None and not h.error and bool(h.opened or h.runs)
        run, line = where.get("run"), where.get("line")
        typed = isinstance(theirs, str) and theirs != ""
        altered = not typed or keeps and name not in reached.get(str(run), set())
        shown = json.dumps(theirs)
        verdict_en = ("the line contradicts the host (ALTERED)" if altered else
                      f"not proven (if the host was moved, give the inventory its install_dir: {shown})")
        verdict_zh = ("该行与主机相矛盾（已被篡改）" if altered else
                      f"未证实（如果主机确实迁移了，请在清单中给出它的 install_dir：{shown}）")
        result.found(f"line {line} (run {run}) gives host {name} install_dir {shown}, the inventory {mine}; the host "
                     f"was read at {mine}" + (", where it keeps its records of the log's earlier runs" if keeps else "")
                     + f": {verdict_en}",
                     f"第 {line} 行（运行 {run}）给主机 {name} 的 install_dir 为 {shown}，清单为 {mine}；已在 {mine} 读取该主机"
                     + ("，它在那里保存着日志中更早运行的记录" if keeps else "") + f"：{verdict_zh}",
                     doubt=not altered)


def _log_hosts(data: bytes) -> dict[str, JSONObject]:
    """{host: where the log's last opening line of a run (run_started, resume_requested, rollback_requested) on it
    sent that run (address, install_dir, its line)}."""
    import json as _json

    from .audit.log import OPENING_EVENTS, fitted

    out: dict[str, JSONObject] = {}
    for n, line in enumerate(data.split(b"\n")[:-1], 1):
        try:
            rec = _json.loads(line)
        except ValueError:
            continue
        rec = fitted(rec) if isinstance(rec, dict) else rec  # a misfit field read as the views do (an edited line)
        if not isinstance(rec, dict) or rec.get("event") not in OPENING_EVENTS or not isinstance(rec.get("data"), dict):
            continue
        for h in rec["data"].get("hosts") or []:
            if isinstance(h, dict) and isinstance(h.get("host"), str):
                out[h["host"]] = {"address": h.get("address"), "install_dir": h.get("install_dir"), "line": n,
                                  "run": rec.get("run")}
    return out


@dataclass(frozen=True)
class PackageBuilt:
    file: Path
    sha256: str
    size: int
    members: int
    product: str
    version: str
    kind: str


def build_package(directory: Path, output: Path, *, product: str, version: str, kind: str = "full",
                  requires: str | None = None, remove: Sequence[str] = (), changes: Sequence[str] = (),
                  description: str = "") -> PackageBuilt:
    """Pack the product files of ``directory`` into a package (.tar.gz with package.yaml). A patch
    (``kind="patch"``) needs ``requires`` (the versions it applies to) and may ``remove`` product files."""
    from version_policy import VersionError, parse_range

    from .trust.package import PackageMeta
    from .trust.package import build_package as _build

    if kind == "full" and (requires or remove):
        raise InputError("--requires and --remove are for patch packages (add --kind patch)")
    if kind == "patch" and not requires:
        raise InputError("a patch needs --requires (the versions it applies to), e.g. '>=7.0.4.1, <7.0.4.3'")
    if requires:
        try:
            parse_range(requires)
        except VersionError as e:
            raise InputError(f"--requires: {e}") from None
    data: dict[str, object] = {"format": 1, "product": product, "version": version, "kind": kind,
                               "requires": requires, "changes": list(changes), "remove": list(remove),
                               "description": description or None}
    meta = PackageMeta.from_data({k: v for k, v in data.items() if v not in (None, [])}, "command line")
    built = _build(Path(directory), Path(output), meta)
    return PackageBuilt(built.path, built.sha256, built.size, built.members, meta.product, meta.version, meta.kind)


@dataclass(frozen=True)
class PackageChecked:
    """``verify_package``: the package's own description and what was checked (``catalog``: the catalog its
    digest and size were checked against; None: only its members were)."""

    file: Path
    product: str
    version: str
    kind: str
    changes: list[str]
    members: int
    sha256: str
    size: int
    catalog: Path | None

    def to_dict(self) -> JSONObject:
        info: JSONObject = {"package": str(self.file), "product": self.product, "version": self.version,
                            "kind": self.kind, "changes": list(self.changes)}
        if self.catalog is not None:
            info["catalog"] = str(self.catalog)
        info.update(members=self.members, sha256=self.sha256, size=self.size, ok=True)
        return info


def verify_package(package: Path, *, catalog: Path | None = None) -> PackageChecked:
    """Check a package before it goes anywhere: every member safe to unpack (no link out, no absolute path, no
    device...), and, with ``catalog``, its digest, size and the catalog's limits. InputError (exit 2) otherwise."""
    import tarfile

    from .hostagent.common import AgentError
    from .hostagent.extract import check_members
    from .hostagent.tarheaders import open_package
    from .trust.catalog import load_catalog, verify_package_file
    from .trust.package import file_digest, read_meta

    pkg = Path(package)
    meta = read_meta(pkg)
    limits: dict[str, int] = {}
    checked_against: Path | None = None
    if catalog is not None:
        cat = load_catalog(catalog)
        entry = cat.find(meta.product, meta.version)
        if entry is None:
            raise InputError(f"the catalog has no entry for {meta.product} {meta.version}", path=str(cat.path))
        verify_package_file(pkg, entry)
        limits = {"members": entry.max_members, "unpacked_bytes": entry.max_unpacked_bytes}
        checked_against = cat.path
    try:
        with open_package(pkg) as tar:
            members = check_members(tar, limits)
    except AgentError as e:
        raise InputError(str(e), path=str(pkg), hint="do not install this package; ask the vendor") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"damaged package: {e}", path=str(pkg)) from None
    return PackageChecked(pkg, meta.product, meta.version, meta.kind, list(meta.changes), len(members),
                          file_digest(pkg), pkg.stat().st_size, checked_against)


@dataclass(frozen=True)
class CatalogBuilt:
    """``build_catalog``: the catalog written, how many packages it lists, its serial, its signature (None: not
    signed yet)."""

    file: Path
    packages: int
    serial: int
    signature: Path | None


def build_catalog(directory: Path, *, serial: int, key: Path | None = None) -> CatalogBuilt:
    """The vendor's catalog (catalog.yaml) of every package (.tar.gz) in ``directory``; signed with ``key`` (an
    SSH private key) when given, else to be signed later (``sign_catalog``)."""
    import tarfile

    from .trust.catalog import write_catalog
    from .trust.package import Built, file_digest, read_meta

    directory = Path(directory)
    packages = sorted(directory.glob("*.tar.gz"))
    if not packages:
        raise InputError("no .tar.gz packages in the directory", path=str(directory))
    built = []
    for p in packages:
        meta = read_meta(p)  # its headers checked too (tarheaders): a package read here is a package read whole
        with tarfile.open(p, "r:gz") as tar:
            members = tar.getmembers()
        built.append(Built(p, file_digest(p), p.stat().st_size, meta, len(members),
                           sum(m.size for m in members if m.isreg())))
    path = write_catalog(directory, built, serial=serial)
    return CatalogBuilt(path, len(built), serial, sign_catalog(path, key=key) if key is not None else None)


def sign_catalog(catalog: Path, *, key: Path) -> Path:
    """Sign a catalog (its file, or the directory holding catalog.yaml) with the vendor's SSH key; the
    signature's path."""
    from .trust.catalog_trust import sign_catalog as _sign
    from .trust.keys import load_private_key

    path = Path(catalog)
    if path.is_dir():
        path = path / "catalog.yaml"
    if not path.is_file():
        raise InputError("catalog not found", path=str(path))
    return _sign(path, load_private_key(key))


class WitnessOptions(TypedDict, total=False):
    """verify_witnesses's options that audit case and audit export pass on (the CLI's --earlier-policy, --syslog,
    --other-log LOG[:SIGNERS])."""

    earlier: Sequence[Path]
    syslog: Sequence[Path]
    other_logs: Sequence[Path]
    other_signers: Mapping[Path, Path] | None


@dataclass(frozen=True)
class AuditCase:
    """``audit_case``: the case file of one run (``case``: requester, approvals, policy, catalog, window, hosts'
    phases, downtime, outcome, checkpoint) and the verdict on the whole log it was read from."""

    case: JSONObject
    result: VerifyResult
    witness: WitnessResult | None = None

    @property
    def exit_code(self) -> int:
        """6 when the log was altered (the case is then not evidence), the hosts' witnessed checkpoints do not
        match it (``witness``), or an approval file does not or none has an approval's digest (``approval_check``);
        2 when a host could not be read and nothing else is wrong; else 0."""
        from .audit.view import altered

        checked, planned = self.case.get("approval_check"), self.case.get("plan_check")
        # an approval of the run that no file of the folder has (or that names no digest) is a mismatch too
        unmatched = isinstance(checked, dict) and any(
            isinstance(a, dict) and a.get("checked_file") is None for a in cast("list[object]",
                                                                                self.case.get("approvals") or []))
        if altered(self.result) or (self.witness is not None and self.witness.problems) \
                or (isinstance(checked, dict) and checked.get("problems")) or unmatched \
                or (isinstance(planned, dict) and planned.get("problems")):
            return 6
        return 2 if self.witness is not None and (self.witness.unreachable or self.witness.doubts) else 0


def audit_case(ctx: Context, run: str, *, log: Path | None = None, allowed_signers: Path | None = None,
               anchor: str | None = None, witness: Path | None = None,
               approvals: Path | None = None, witness_options: WitnessOptions | None = None,
               plans: Path | None = None) -> AuditCase:
    """One record per change: the run ``run`` (its id, or a prefix naming one run) from one read of the log,
    after the verification of the whole log. InputError when no run or several runs match. ``witness``: an
    inventory whose hosts' witnessed checkpoints fill the case's ``witnesses`` (read-only, audit/witness.py).
    ``approvals``: the folder of approval files the auditor was given; each approval of the case then names its
    file, whose signature (and signer, under the policy's approvals.allowed_signers) is checked, and whose plan,
    approver, key and expiry must be the log's (``approval_check``; a problem makes the exit code 6).
    ``witness_options``: verify_witnesses's ``syslog``, ``other_logs``, ``other_signers``, ``earlier``.
    ``plans``: the folder of plan files the auditor was given: the run's plan must be one of them, and its requester,
    hosts and target the log's (``plan_check``; a problem makes the exit code 6). The requester is the controller's
    word (``unchecked``) unless the plan file or an approval file holds it."""
    from .audit.case import build_case, hold_requester, run_ids
    from .audit.crosscheck import requester_held
    from .audit.log import read_log, read_events
    from .core.recorder import audit_path

    path = Path(log) if log else audit_path(ctx.home)
    data = read_log(path)
    result = verify_audit(ctx, log=path, allowed_signers=allowed_signers, anchor=anchor, data=data)
    events = list(read_events(path, data))
    ids = [r for r in run_ids(events) if r == run] or [r for r in run_ids(events) if r.startswith(run)]
    if len(ids) != 1:
        raise InputError(f"{'no run' if not ids else f'{len(ids)} runs'} in the audit log "
                         f"{'matches' if not ids else 'match'} {run!r}"
                         + (f": {', '.join(ids[:5])}" if ids else ""), path=str(path),
                         hint="give the run id as a run printed it ('upgrader audit show' lists them)")
    case = build_case(events, ids[0])
    assert case is not None
    from .audit.case import mark_approvers

    mark_approvers(case, result.approvers_file, result.approvers_keys)
    held: dict[str, str] = {}
    if approvals is not None:
        held.update(requester_held(_check_case_approvals(ctx, case, events, ids[0], approvals), events, ids[0]))
    if plans is not None:
        held.update(requester_held(_check_case_plans(case, events, ids[0], plans), events, ids[0]))
    hold_requester(case, held)
    if witness is None:
        return AuditCase(case, result)
    from .audit.witness import case_witnesses, mark_followups

    witnessed = verify_witnesses(ctx, witness, data=data, allowed_signers=allowed_signers, **(witness_options or {}))
    hosts = [str(h.get("host")) for h in cast("list[dict[str, object]]", case.get("hosts") or [])]
    case["witnesses"] = case_witnesses(witnessed, ids[0], hosts)
    mark_followups(case, witnessed)  # a later run no host witnessed is the controller's word
    _downtime_from_hosts(case)
    return AuditCase(case, result, witnessed)


def _approvals_required(ctx: Context) -> dict[str, int]:
    """policy digest -> approvals.required, for the policy the auditor holds (the home's, or --policy); none when it
    cannot be read (the runs' approval counts are then the controller's word)."""
    try:
        policy = load_policy(ctx)
        return {str(policy.digest): int(policy.approvals_required)}
    except Exception:  # noqa: BLE001 - no readable policy: nothing to hold the counts to
        return {}


def _check_case_plans(case: JSONObject, events: list[dict[str, object]], run: str, folder: Path) -> CrossCheck:
    """The run's plan against the files of ``folder`` (the --plans cross-check, over this run's lines and the log's
    plan_created line of its plan): every problem in ``plan_check`` (its file, None when no file has the digest)."""
    from .audit.crosscheck import cross_check

    _given_folder(folder, "--plans")
    plan = cast("dict[str, object]", case.get("requested") or {}).get("plan")
    mine = [e for e in events if e.get("run") == run
            or (e.get("event") == "plan_created" and cast("dict[str, object]", e.get("data") or {}).get("plan") == plan)]
    check = cross_check(mine, plans=Path(folder), approvals=None, signers=None)
    case["plan_check"] = {"folder": str(folder), "file": check.plans.get(str(plan)), "problems": check.problems}
    return check


def _check_case_approvals(ctx: Context, case: JSONObject, events: list[dict[str, object]], run: str,
                          folder: Path) -> CrossCheck:
    """Each approval of the case against the files of ``folder`` (the --approvals cross-check, over this run's
    lines and the log's approval_created lines only): ``checked_file`` (None: no file has its digest) and
    ``file_problems`` on each approval, every problem in ``approval_check``."""
    from .audit.crosscheck import cross_check

    _given_folder(folder, "--approvals")
    mine = [e for e in events if e.get("run") == run or e.get("event") == "approval_created"]
    check = cross_check(mine, plans=None, approvals=Path(folder), signers=_approval_signers(ctx, None),
                        required=_approvals_required(ctx))
    for a in cast("list[dict[str, object]]", case.get("approvals") or []):
        a["checked_file"] = check.approvals.get(str(a.get("digest")))
        a["file_problems"] = [p for p in check.problems if p.get("digest") == a.get("digest")]
    case["approval_check"] = {"folder": str(folder), "problems": check.problems,
                              "policy_unknown": run in check.unknown_policy}
    return check


def _downtime_from_hosts(case: JSONObject) -> None:
    """The case's downtime from the hosts' own records (audit/case.py ``downtime_from_hosts``)."""
    from .audit.case import downtime_from_hosts

    downtime_from_hosts(case)


def plan_digest(plan: Path) -> str:
    """The digest an approval signs: sha256 of the plan's canonical JSON (keys sorted, no spaces, UTF-8 as is)
    without its ``signature``; the README shows how to recompute it."""
    from .core.plan import load_plan

    return load_plan(str(plan)).digest


@dataclass(frozen=True)
class AuditCrossCheck:
    """``cross_check_audit``: the verdict on the log and the cross-check of the plans and approvals it names
    (``check``: each digest and the file that has it, and every problem naming the log's line and the file)."""

    result: VerifyResult
    check: CrossCheck

    @property
    def exit_code(self) -> int:
        """6 when a plan or approval is missing, swapped or badly signed, else the log's own verdict's code."""
        return 6 if not self.check.ok else audit_exit_code(self.result)


def _given_folder(folder: Path | None, flag: str) -> None:
    """InputError unless ``folder`` (given with ``flag``, --plans or --approvals) is a folder, or None."""
    if folder is not None and not Path(folder).is_dir():
        raise InputError(f"{flag}: not a folder", path=str(folder),
                         hint=f"give the folder that holds the {flag[2:]} the auditor was given")


def _approval_signers(ctx: Context, approval_signers: Path | None) -> AllowedSigners | None:
    """Whom an approval file may be signed by: ``approval_signers``, else the policy's approvals.allowed_signers
    (None when the policy names none: the signature is checked, its signer is not)."""
    from .trust.signers import load_allowed_signers, policy_signers

    if approval_signers is not None:
        return load_allowed_signers(approval_signers)
    policy = load_policy(ctx)
    return policy_signers(policy, "approvals.allowed_signers")


def cross_check_audit(ctx: Context, *, plans: Path | None = None, approvals: Path | None = None,
                      log: Path | None = None, allowed_signers: Path | None = None, anchor: str | None = None,
                      approval_signers: Path | None = None) -> AuditCrossCheck:
    """``audit verify --plans DIR --approvals DIR``: verify the log, then check every plan digest it names
    against the plans in ``plans`` (recomputed from each file) and every approval a run accepted against the files
    in ``approvals`` (digest, signature under ``approval_signers`` or the policy's approvals.allowed_signers, the
    plan and approver it names)."""
    from .audit.crosscheck import cross_check
    from .audit.log import read_events, read_log
    from .core.recorder import audit_path
    from .trust.signers import load_allowed_signers

    for folder, flag in ((plans, "--plans"), (approvals, "--approvals")):
        _given_folder(folder, flag)
    path = Path(log) if log else audit_path(ctx.home)
    data = read_log(path)
    result = verify_audit(ctx, log=path, allowed_signers=allowed_signers, anchor=anchor, data=data)
    signers = _approval_signers(ctx, approval_signers) if approvals is not None else None
    check = cross_check(list(read_events(path, data)), plans=Path(plans) if plans else None,
                        approvals=Path(approvals) if approvals else None, signers=signers,
                        required=_approvals_required(ctx))
    return AuditCrossCheck(result, check)


@dataclass(frozen=True)
class AuditExport:
    """``export_audit``: the report written (it says the verdict at its top, whatever it is), the number of
    events in it, and the verdict on the log (``status``: intact, altered or cannot_check)."""

    output: Path
    format: str
    events: int
    result: VerifyResult
    verdict: str
    cases_output: Path | None = None  # a CSV export's case file (REPORT.cases.csv), one row per run and host
    witness: WitnessResult | None = None  # the hosts' witnessed checkpoints, when an inventory was given
    plan_check: CrossCheck | None = None  # the runs' plans against the plan files given (--plans)

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def exit_code(self) -> int:
        """The log's verdict's code; 6 when a host's witnessed checkpoint or a plan file (``--plans``) does not
        match the log; 2 when a host could not be read and the log is otherwise intact."""
        from .core.exit_codes import ExitCode

        code = witnessed_exit_code(audit_exit_code(self.result), self.witness)
        return int(ExitCode.AUDIT_ALTERED) if self.plan_check is not None and self.plan_check.problems else code


def witnessed_exit_code(code: int, witness: WitnessResult | None) -> int:
    """A view's exit ``code`` (the log's own verdict) with the hosts' verdict when they were read (``--witness``):
    6 when their records contradict the log; 2 when a host could not be read or a doubt remains and the log is
    otherwise intact; else ``code``."""
    if witness is not None and witness.problems:
        return 6
    return 2 if witness is not None and (witness.unreachable or witness.doubts) and code == 0 else code


def audit_exit_code(result: VerifyResult) -> int:
    """0 intact, 6 altered (or a finished run unsigned), 2 cannot check (no allowed signers known)."""
    from .core.exit_codes import ExitCode

    return int({"intact": ExitCode.OK, "altered": ExitCode.AUDIT_ALTERED,
                "cannot_check": ExitCode.BAD_INPUT}[result.status])


def export_audit(ctx: Context, *, output: Path, format: str = "html", log: Path | None = None,
                 allowed_signers: Path | None = None, anchor: str | None = None, run: str | None = None,
                 host: str | None = None, since: str | None = None, lang: str | None = None,
                 witness: Path | None = None, witness_options: WitnessOptions | None = None,
                 plans: Path | None = None) -> AuditExport:
    """Write the auditor's report (``format``: html, json or csv) of the log's events of ``run`` (an id or its
    start), ``host`` and ``since`` (an ISO date or time), with the verdict on the whole log (``verify_audit``),
    made from one read of the log. The report is written whatever the verdict; ``exit_code`` tells it.
    ``witness_options``: verify_witnesses's ``syslog``, ``other_logs``, ``other_signers``, ``earlier`` (audit export
    --syslog, --other-log, --earlier-policy, as audit verify takes them)."""
    from .audit.log import read_log
    from .audit.report import export
    from .audit.view import describe, select_events
    from .core.recorder import audit_path

    path = Path(log) if log else audit_path(ctx.home)
    data = read_log(path)  # one read: the report shows exactly the bytes the verdict is about
    result = verify_audit(ctx, log=path, allowed_signers=allowed_signers, anchor=anchor, data=data)
    events = select_events(path, data, run=run, host=host, since=since)
    verdict = describe(result)
    # ``witness``: each case's witnesses from every host's record, the log's same bytes checked against them
    witnessed = verify_witnesses(ctx, witness, data=data, allowed_signers=allowed_signers,
                                 **(witness_options or {})) if witness is not None else None
    # ``plans``: every plan the log names against the files given; each run's requester a plan file holds
    held: dict[str, dict[str, str]] = {}
    check = None
    if plans is not None:
        from .audit.case import run_ids
        from .audit.crosscheck import cross_check, requester_held
        from .audit.log import read_events

        _given_folder(Path(plans), "--plans")
        everything = list(read_events(path, data))
        check = cross_check(everything, plans=Path(plans), approvals=None, signers=None)
        held = {r: requester_held(check, everything, r) for r in run_ids(everything)}
    export(format, events, result, verdict, Path(output), lang=lang, witnessed=witnessed, held=held)
    from .audit.report import cases_path

    return AuditExport(Path(output), format, len(events), result, verdict,
                       cases_path(Path(output)) if format == "csv" else None, witnessed, check)


# -- the customer's side: available, inspect, access -------------------------------------------------------

@dataclass(frozen=True)
class Availability:
    """``available``: per host (``hosts``, in the inventory's order), the newest free upgrade, what the policy
    refuses and why, the advisories that concern the installed version, or ``error`` when the host could not
    be read; the catalog (path, serial, signer) and the policy they were judged by."""

    catalog: JSONObject
    policy: str
    hosts: list[JSONObject]

    @property
    def exit_code(self) -> int:
        """0, or 5 when a host could not be read (the others are still answered)."""
        return 5 if any(h.get("error") for h in self.hosts) else 0

    def to_dict(self) -> JSONObject:
        return {"catalog": self.catalog, "policy": self.policy, "hosts": self.hosts}


def _installed_version(inventory: Inventory, host: InventoryHost, home: Path) -> str:
    """The host's installed version, read by the agent's read-only facts action."""
    from .core.planner import host_facts
    from .core.playbook import load_operator_playbook
    from .fleet.transport import AgentClient, connect

    pb, _ = load_operator_playbook(host.playbook, home, where=str(inventory.path), key=f"hosts.{host.name}.playbook")
    if pb.product != host.product:
        raise UpgraderError(f"the host runs {host.product!r} but playbook {pb.path} is for {pb.product!r}")
    spec = pb.render({"install_dir": host.install_dir, "host": host.name, **host.vars,
                      "target_version": "unknown", "current_version": "unknown"})
    transport = connect(host)
    try:
        facts = host_facts(AgentClient(transport), host, spec, [], check_drift=False)
    finally:
        transport.close()
    if not facts.get("version"):
        raise UpgraderError(str(facts.get("version_error") or "no installed version found"))
    return str(facts["version"])


def available(ctx: Context, *, inventory: Path, catalog: Path, hosts: str | None = None) -> Availability:
    """Per host of ``inventory`` (``hosts``: a pattern), the upgrades the signed ``catalog`` offers and the
    operator's policy allows. Reads each host's installed version (read-only); changes nothing, writes no plan."""
    from concurrent.futures import ThreadPoolExecutor

    from .customer.available import host_offers, unreadable_host
    from .fleet.inventory import load_inventory

    inv = load_inventory(inventory)
    chosen = inv.select(hosts)
    policy = load_policy(ctx)
    cat, signed_by = trusted_catalog(catalog, policy, ctx.home, ctx.clock.now())
    today = ctx.clock.now().date()

    def one(host: InventoryHost) -> JSONObject:
        try:
            current = _installed_version(inv, host, ctx.home)
        except UpgraderError as e:  # keep the other hosts' answers
            return {**unreadable_host(host.name, host.product, e.message), "address": host.address}
        return {**host_offers(host=host.name, product=host.product, current=current,
                              maintenance_until=host.maintenance_until, catalog=cat, policy=policy, today=today),
                "address": host.address}

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(chosen)))) as pool:
        results = list(pool.map(one, chosen))
    return Availability({"path": str(cat.path), "serial": cat.serial, **signed_by}, policy.source, results)


@dataclass(frozen=True)
class _InspectTarget:
    name: str
    address: str
    install_dir: str
    playbook: Playbook
    variables: JSONObject
    state_dir: str | None
    maintenance_until: _dt.date | None
    connect: Callable[[], Transport]


@dataclass(frozen=True)
class Inspection:
    """``inspect``: the report's data (``inspection``: time, form, catalog; ``hosts``: each host's facts,
    metrics, warnings, advisories or ``error``; ``summary``), as ``upgrader inspect --json`` prints it."""

    data: JSONObject

    @property
    def hosts(self) -> list[JSONObject]:
        return cast("list[JSONObject]", self.data["hosts"])

    @property
    def exit_code(self) -> int:
        """0 when every host was inspected (warnings are findings, not failures), 2 when a host's agent refused
        the install's path as bad input (a link, a directory another account can change: nothing was read there),
        else 5 when one could not be inspected."""
        codes = [h.get("error_exit_code") for h in self.hosts if h.get("error")]
        if 2 in codes:
            return 2
        return 5 if codes else 0


def _local_playbook(install_dir: Path, name: str | None) -> Playbook:
    """``playbook``, or the shipped playbook whose version file is in the install dir."""
    from .core.playbook import find_playbook, load_playbook, shipped_playbooks_dir

    if name:
        return load_playbook(find_playbook(name))
    tried = []
    for path in sorted(shipped_playbooks_dir().glob("*.yaml")):
        pb = load_playbook(path)
        version_file = pb.spec["version"].get("file")
        tried.append(pb.name)
        if version_file and (install_dir / version_file).is_file():
            return pb
    raise InputError(f"cannot tell which product is installed here (tried the playbooks {', '.join(tried)})",
                     path=str(install_dir), hint="name it with --playbook NAME or a playbook file")


def _inspect_targets(ctx: Context, install_dir: Path | None, inventory: Path | None, hosts: str | None,
                     playbook: str | None, variables: Mapping[str, str] | None) -> list[_InspectTarget]:
    from .core.playbook import load_operator_playbook
    from .fleet.transport import connect

    if bool(inventory) == bool(install_dir):
        raise InputError("give either --inventory INV or --install-dir DIR",
                         hint="upgrader inspect --install-dir /opt/TongWeb7049 (this machine) or --inventory hosts.yaml")
    if install_dir:
        if hosts:
            raise InputError("--hosts selects hosts of an inventory; it does not go with --install-dir")
        where = Path(install_dir).absolute()
        if not where.is_dir():
            raise InputError("the install dir does not exist (or is not a directory)", path=str(where),
                             hint="give the directory the product is installed in")
        from .fleet.transport.local import LocalTransport

        return [_InspectTarget("local", "local", str(where), _local_playbook(where, playbook),
                               dict(variables or {}), None, None, lambda: LocalTransport("local"))]
    if playbook or variables:
        raise InputError("--playbook and --var go with --install-dir; an inventory names each host's playbook "
                         "and vars")
    from .fleet.inventory import load_inventory

    assert inventory is not None
    inv = load_inventory(inventory)
    playbooks: dict[str, Playbook] = {}
    targets = []
    for h in inv.select(hosts):
        if h.playbook not in playbooks:
            playbooks[h.playbook] = load_operator_playbook(h.playbook, ctx.home, where=str(inv.path),
                                                           key=f"hosts.{h.name}.playbook")[0]
        pb = playbooks[h.playbook]
        if pb.product != h.product:
            raise InputError(f"host {h.name} runs {h.product!r} but playbook {pb.path} is for {pb.product!r}",
                             path=str(inv.path), key=f"hosts.{h.name}.playbook")

        def connector(h: InventoryHost = h) -> Transport:
            return connect(h)

        targets.append(_InspectTarget(h.name, h.address, h.install_dir, pb, dict(h.vars), h.state_dir,
                                      h.maintenance_until, connector))
    return targets


def _inspection_form(ctx: Context, policy: Policy | None, fields: Mapping[str, str | None]) -> JSONObject:
    """The head of the 巡检 form: who for, what, by whom, when (``period`` as written, else the collection's own
    start and end), and the time zone the times are shown in."""
    import getpass
    import socket

    from .core.shown_time import policy_zone

    if policy is None:
        try:
            policy = load_policy(ctx)
        except UpgraderError:
            policy = None
    inspector = fields.get("inspector")
    if not inspector:
        try:
            inspector = f"{getpass.getuser()}@{socket.gethostname()}"
        except (KeyError, OSError):
            inspector = None
    form: JSONObject = {"customer": fields.get("customer"), "system": fields.get("system"), "inspector": inspector,
                        "period": fields.get("period"), "remarks": fields.get("remarks"),
                        "timezone": policy_zone(policy)}
    for name in ("customer", "system", "inspector", "period", "remarks"):
        value = form[name]
        if value is not None and (len(str(value)) > 200 or any(ord(ch) < 32 for ch in str(value))):
            raise InputError(f"--{name}: at most 200 characters on one line", hint="e.g. --customer '某某银行'")
    return form


def inspect(ctx: Context, *, install_dir: Path | None = None, inventory: Path | None = None,
            hosts: str | None = None, playbook: str | None = None, variables: Mapping[str, str] | None = None,
            catalog: Path | None = None, customer: str | None = None, system: str | None = None,
            inspector: str | None = None, period: str | None = None, remarks: str | None = None,
            compare: Path | None = None, keep: bool = True) -> Inspection:
    """The health inspection (巡检) of one install on this machine (``install_dir``; ``playbook`` and
    ``variables`` name the product when its version file does not) or of the hosts of ``inventory``, read-only;
    with a signed ``catalog``, the advisories that concern each installed version are flagged. The form's head:
    ``customer``, ``system``, ``inspector`` (default: the login name at this machine), ``period``, ``remarks``.
    A host that cannot be inspected is reported with its ``error`` (exit code 5), the others still are.
    Each host's report is compared with ``compare`` (a kept or written inspection) or else with the newest one kept
    in ``HOME/inspections/HOST/`` (its ``changes``, ``previous`` and ``trend``), then kept there (unless ``keep`` is
    False)."""
    from concurrent.futures import ThreadPoolExecutor

    from .customer import inspect_history as history
    from .customer.inspection import flag_advisories, inspect_host

    if compare is not None:
        history.load_previous(compare, None)  # a missing or unreadable file is refused before any host is asked

    targets = _inspect_targets(ctx, install_dir, inventory, hosts, playbook, variables)
    clock = ctx.clock
    cat: Catalog | None = None
    policy: Policy | None = None
    signed_by: JSONObject = {}
    if catalog:
        policy = load_policy(ctx)
        cat, signed_by = trusted_catalog(catalog, policy, ctx.home, clock.now())
    today = clock.now().date()
    started = clock.now().isoformat(timespec="seconds")

    def one(t: _InspectTarget) -> JSONObject:
        try:
            transport = t.connect()
            try:
                report: JSONObject = inspect_host(transport, t.playbook, install_dir=t.install_dir, name=t.name,
                                                  variables=t.variables, state_dir=t.state_dir)
            finally:
                transport.close()
        except UpgraderError as e:  # keep the other hosts' reports
            return {"host": t.name, "address": t.address, "install_dir": t.install_dir, "product": t.playbook.product,
                    "playbook": str(t.playbook.path), "facts": {}, "metrics": {}, "thresholds": {},
                    "warnings": [], "advisories": [], "error": e.message, "error_exit_code": int(e.exit_code)}
        if cat is not None:
            report = flag_advisories(report, catalog=cat, policy=policy, today=today,
                                     maintenance_until=t.maintenance_until)
        return {**report, "address": t.address}

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets)))) as pool:
        reports = list(pool.map(one, targets))
    form = _inspection_form(ctx, policy, {"customer": customer, "system": system, "inspector": inspector,
                                          "period": period, "remarks": remarks})
    now = clock.now().isoformat(timespec="seconds")
    for h in reports:
        if h["error"]:
            continue
        key = history.host_key(h)
        prev_path = compare if compare is not None else next(reversed(history.kept(ctx.home, key)), None)
        previous = history.load_previous(prev_path, key) if prev_path is not None else None
        h["time"] = now
        h["previous"] = {"time": previous.get("time"), "file": str(prev_path)} if previous else None
        h["changes"] = history.changes(previous, h)
        h["trend"] = history.trend(ctx.home, key, h)
        if keep:
            h["kept"] = str(history.keep(ctx.home, h, now))
    warned = sum(len(cast("list[object]", h["warnings"])) for h in reports)
    data: JSONObject = {
        "inspection": {"time": clock.now().isoformat(timespec="seconds"), "started": started, "form": form,
                       "inventory": str(inventory) if inventory else None,
                       "catalog": {"path": str(cat.path), "serial": cat.serial, **signed_by}
                       if cat is not None else None},
        "hosts": reports,
        "summary": {"hosts": len(reports), "inspected": sum(1 for h in reports if not h["error"]),
                    "unreachable": [h["host"] for h in reports if h["error"]], "warnings": warned}}
    return Inspection(data)


def write_inspection_bundle(inspection: Inspection, output: Path, *, lang: str = "en") -> Path:
    """``inspect --bundle``: the one file the customer sends (see ``customer.inspect_bundle``)."""
    from .customer.inspect_bundle import write_bundle

    return write_bundle(inspection.data, Path(output), lang=lang)


def review_inspection(ctx: Context, bundle: Path) -> Inspection:
    """``inspect --review BUNDLE``: the engineer opens a customer's bundle, judges each host's facts again with this
    side's thresholds and advice tables, compares it with the last bundle received from that host (kept in
    ``HOME/inspections/received/HOST/``) and keeps it there. Returns the inspection to write back as the report."""
    from .customer import inspect_history as history
    from .customer.inspect_advice import advise
    from .customer.inspect_bundle import read_bundle
    from .core.playbook import THRESHOLDS
    from .customer.inspection import metrics, warnings

    data = read_bundle(bundle)
    folder = "inspections/received"
    for h in data["hosts"]:
        if h.get("error"):
            continue
        facts = h.get("facts") or {}
        try:
            thresholds = {k: v[0] for k, v in THRESHOLDS.items()}
            thresholds.update({k: float(v) for k, v in (h.get("thresholds") or {}).items() if k in THRESHOLDS})
            advisories = [w for w in h.get("warnings") or [] if isinstance(w, dict) and w.get("check") == "advisory"]
            h["thresholds"] = thresholds
            h["metrics"] = metrics(facts)
            h["warnings"] = warnings(facts, thresholds) + advisories
            advise(h)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise InputError(f"--review: the facts of host {h.get('host')} cannot be judged ({type(e).__name__}: {e})",
                             path=str(bundle), hint="ask the customer for the file upgrader inspect --bundle wrote, "
                                                    "unchanged") from None
        key = history.host_key(h)
        last = next(reversed(history.kept(ctx.home, key, folder)), None)
        previous = history.load_previous(last, key) if last is not None else None
        h["previous"] = {"time": previous.get("time"), "file": str(last)} if previous else None
        h["changes"] = history.changes(previous, h)
        when = str(h.get("time") or data["inspection"].get("time") or ctx.clock.now().isoformat(timespec="seconds"))
        h["trend"] = history.trend(ctx.home, key, {**h, "time": when}, folder=folder)
        h["kept"] = str(history.keep(ctx.home, h, when, folder=folder))
    data["summary"] = {**(data.get("summary") or {}),
                       "warnings": sum(len(h.get("warnings") or []) for h in data["hosts"])}
    data["inspection"]["reviewed"] = {"bundle": str(bundle), "time": ctx.clock.now().isoformat(timespec="seconds")}
    return Inspection(data)


def write_inspection(inspection: Inspection | JSONObject, output: Path, *, lang: str = "en") -> Path:
    """Write the inspection's report to ``output``: a self-contained HTML 巡检 form (.html, .htm; in ``lang``: en
    or zh) or JSON (.json), secrets redacted (a report is sent on), atomically."""
    from .audit.redaction import redact_value
    from .audit.report import _write_atomically

    kind = inspection_report_kind(output)
    data = cast("dict[str, object]", redact_value(inspection.data if isinstance(inspection, Inspection) else inspection))
    if kind == "html":
        from .customer.inspect_report import render_html

        text = render_html(data, lang)
    else:
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    _write_atomically(Path(output), text)
    return Path(output)


def inspection_report_kind(output: Path | str) -> str:
    """``html`` or ``json``, from the report's name; InputError for any other name."""
    suffix = Path(output).suffix.lower()
    if suffix in (".html", ".htm"):
        return "html"
    if suffix == ".json":
        return "json"
    raise InputError(f"-o: the report's name must end in .html or .json, got {str(output)!r}",
                     hint="e.g. -o inspection.html (send it to support) or -o inspection.json")


@dataclass(frozen=True)
class _AccessTarget:
    name: str  # "local", or the inventory's host name
    audit_host: str
    connect: Callable[[], Transport]
    local: bool


@dataclass(frozen=True)
class AccessResult:
    """``grant_access``, ``list_access``, ``revoke_access``: each host's outcome (``hosts``: ``host``,
    ``outcome``, ``user``, ``file`` and the grants made, found or removed; on a fleet a host that failed has
    ``error`` and ``exit_code``), the hours granted, and how the revoked grants were chosen (ID, --all or
    --expired)."""

    hosts: list[JSONObject]
    exit_code: int
    hours: float | None = None
    chosen: str | None = None

    def to_dict(self) -> JSONObject:
        return {"hosts": self.hosts}


_ACCESS_FORKS = 8


def _access_targets(inventory: Path | None, hosts: str | None) -> list[_AccessTarget]:
    import socket

    if inventory:
        from .fleet.inventory import load_inventory
        from .fleet.transport import connect

        def connector(h: InventoryHost) -> Callable[[], Transport]:
            return lambda: connect(h)

        return [_AccessTarget(h.name, h.name, connector(h), False) for h in load_inventory(inventory).select(hosts)]
    if hosts:
        raise InputError("--hosts needs --inventory", hint="give --inventory INV, or leave out --hosts for this host")
    from .fleet.transport.local import LocalTransport

    return [_AccessTarget("local", socket.gethostname(), lambda: LocalTransport("local"), True)]


def _on_each(targets: list[_AccessTarget], work: Callable[[AgentClient, _AccessTarget], JSONObject]) -> list[JSONObject]:
    """``work(agent, target)`` on every target; a fleet keeps each host's failure, this host raises its own."""
    from concurrent.futures import ThreadPoolExecutor

    from .fleet.transport import AgentClient

    def one(target: _AccessTarget) -> JSONObject:
        transport = target.connect()
        agent = AgentClient(transport)
        try:
            return {"host": target.name, **work(agent, target)}
        except UpgraderError as e:
            if target.local:
                raise
            return {"host": target.name, "outcome": "failed", "error": str(e), "exit_code": int(e.exit_code)}
        finally:
            agent.close()
            transport.close()

    if len(targets) == 1:
        return [one(targets[0])]
    with ThreadPoolExecutor(max_workers=min(_ACCESS_FORKS, len(targets))) as pool:
        return list(pool.map(one, targets))


def _access_exit(results: list[JSONObject]) -> int:
    return max([int(cast(int, r.get("exit_code", 0))) for r in results] or [0])


def _access_user(user: str | None) -> str | None:
    from .customer.access import check_user

    return check_user(user) if user is not None else None


def grant_access(ctx: Context, *, key: Path, hours: float | None = None, from_patterns: str | None = None,
                 reason: str | None = None, user: str | None = None, inventory: Path | None = None,
                 hosts: str | None = None) -> AccessResult:
    """Let an engineer's public ``key`` in for ``hours`` (default and maximum: the policy's), from the
    addresses ``from_patterns`` (sshd patterns, comma-separated; None: any), on this host's account (``user``:
    another account) or on every host of ``inventory``: one ``authorized_keys`` line that sshd itself enforces;
    the same key granted again is extended. Every input is checked before any host is touched; each grant is
    an audit event. One grant id on every host (``revoke_access(grant_id=...)`` ends it everywhere)."""
    import secrets

    from .customer.access import (add_grant, check_from, check_hours, check_reason, current_keys, edit_on_host,
                                  expiry_time, format_time, load_public_key_file, own_authorized_keys,
                                  remember_grant)

    policy = load_policy(ctx)
    public = load_public_key_file(key)
    granted = check_hours(hours, policy.access_default_hours, policy.access_max_hours, policy.source)
    from_ = check_from(from_patterns) if from_patterns is not None else None
    why = check_reason(reason) if reason is not None else None
    account = _access_user(user)
    targets = _access_targets(inventory, hosts)
    now = ctx.clock.now()
    expires = expiry_time(now, granted)
    recorder = _recorder(ctx, policy, need_key=False)  # before anything changes: no identity, nothing touched
    by = f"{recorder.operator.user}@{recorder.operator.host}"
    grant_id = secrets.token_hex(6)

    def work(agent: AgentClient, target: _AccessTarget) -> JSONObject:
        ids = [grant_id]

        def new_id() -> str:
            return ids.pop(0) if ids else secrets.token_hex(6)

        def edit(current: HostFile) -> tuple[bytes, GrantChange]:
            source = current.path if target.local else f"{target.name}:{current.path}"
            change = add_grant(current.data, public, expires=expires, from_=from_, by=by, reason=why,
                               new_id=new_id, source=source)
            return change.data, change

        own = target.local and account is None  # into this account: its keys before the grant are kept
        before = current_keys(own_authorized_keys(), now) if own else set()
        found, change = edit_on_host(agent, account, edit)
        if own:
            remember_grant(ctx.home, change.grant.id, change.grant.fingerprint, before, now)
        return {"outcome": "extended" if change.extended else "granted", "user": found.user, "file": found.path,
                "created_file": not found.exists, "grant": change.grant.describe(now),
                "previous_expires": format_time(change.previous_expires) if change.previous_expires else None,
                "_audit_host": target.audit_host, "_keys_before": sorted(before) if own else None}

    results = _on_each(targets, work)
    for r in results:
        before = r.pop("_keys_before", None)
        if r["outcome"] in ("granted", "extended"):
            g = cast("dict[str, object]", r["grant"])
            # a grant into this account carries what its record holds (the record is the account's file: an
            # engineer logged in could delete it; the approval checks read the log's events too)
            own = {"keys_before": before} if before is not None else {}
            recorder.event(f"access_{r['outcome']}", host=cast(str, r.pop("_audit_host")), outcome=str(r["outcome"]),
                           grant=g["id"], fingerprint=g["fingerprint"], key_type=g["key_type"], user=r["user"],
                           file=r["file"], hours=granted, expires=g["expires"], previous_expires=r["previous_expires"],
                           reason=g["reason"], granted_by=g["granted_by"], **_from(g), **cast("dict[str, Any]", own))
    return AccessResult(results, _access_exit(results), hours=granted)


def _added_lines(home: Path, now: _dt.datetime) -> list[JSONObject]:
    """The lines of this account's authorized_keys files that let in a key added while a grant into the account was
    open (customer/access.added_during_grants): ``access list`` and ``revoke`` show them, an approval by that
    grant's engineer is refused while they stay."""
    from .customer.access import added_during_grants, own_authorized_keys

    return [{"grant": a.grant, "engineer": a.engineer, "fingerprint": a.fingerprint, "file": str(a.line.path),
             "line": a.line.line} for a in added_during_grants(home, own_authorized_keys(), now)]


def _from(grant: Mapping[str, object]) -> dict[str, str | None]:
    """The grant's ``from`` (a Python keyword; its patterns, None: any address) as a keyword argument of
    ``Recorder.event``."""
    return {"from": cast("str | None", grant["from"])}


def list_access(ctx: Context, *, user: str | None = None, inventory: Path | None = None,
                hosts: str | None = None) -> AccessResult:
    """The grants in this host's ``authorized_keys`` (``user``: another account's), or on every host of
    ``inventory``: each with its id, key fingerprint, expiry, time left, who granted it, from where, why."""
    from .customer.access import list_grants, read_on_host

    account = _access_user(user)
    targets = _access_targets(inventory, hosts)
    now = ctx.clock.now()

    def work(agent: AgentClient, target: _AccessTarget) -> JSONObject:
        found = read_on_host(agent, account)
        return {"outcome": "ok", "user": found.user, "file": found.path, "exists": found.exists,
                "grants": [g.describe(now) for g in list_grants(found.data)],
                "added_during_grants": _added_lines(ctx.home, now) if target.local and account is None else []}

    results = _on_each(targets, work)
    return AccessResult(results, _access_exit(results))


def revoke_access(ctx: Context, *, grant_id: str | None = None, all: bool = False, expired: bool = False,
                  user: str | None = None, inventory: Path | None = None, hosts: str | None = None) -> AccessResult:
    """Remove grants, chosen by exactly one of ``grant_id``, ``all`` or ``expired``, on this host or on every
    host of ``inventory``; each removal is an audit event. A ``grant_id`` found on no host is exit code 2."""
    import re

    from .core.exit_codes import ExitCode
    from .customer.access import (close_grant, edit_on_host, list_grants, own_authorized_keys, remove_grants,
                                  restore_grant_record)

    chosen = [what for what, given in (("ID", grant_id), ("--all", all), ("--expired", expired)) if given]
    if len(chosen) != 1:
        raise InputError("give exactly one of ID, --all or --expired" + (f" (got {' and '.join(chosen)})"
                                                                          if chosen else ""),
                         hint="see the ids with: upgrader access list")
    if grant_id is not None and not re.fullmatch(r"[A-Za-z0-9]{1,64}", grant_id):
        raise InputError(f"{grant_id!r} is not a grant id", hint="see the ids with: upgrader access list")
    account = _access_user(user)
    targets = _access_targets(inventory, hosts)
    policy = load_policy(ctx)
    now = ctx.clock.now()
    recorder = _recorder(ctx, policy, need_key=False)

    def select(g: Grant) -> bool:
        return bool(all or (expired and g.expired(now)) or g.id == grant_id)

    def work(agent: AgentClient, target: _AccessTarget) -> JSONObject:
        def edit(current: HostFile) -> tuple[bytes, list[Grant]]:
            return remove_grants(current.data, select)

        own = target.local and account is None
        # a grant the audit log holds whose record is gone (refused by approve and run): written back from the log
        restored = bool(own and grant_id and restore_grant_record(ctx.home, grant_id, now))
        found, removed = edit_on_host(agent, account, edit)
        at_revoke: dict[str, list[str]] = {}
        if own:  # the keys that let anyone in once the engineer is out
            for g in removed:
                at_revoke[g.id] = close_grant(ctx.home, g.id, own_authorized_keys(), now)
        if grant_id and not removed and target.local and not restored:
            ids = [g.id for g in list_grants(found.data)]
            raise InputError(f"no grant {grant_id} here; " + (f"its grants: {', '.join(ids)}" if ids
                                                               else "it holds no grant"), path=found.path)
        return {"outcome": "revoked" if removed else "record restored" if restored else "unchanged",
                "user": found.user, "file": found.path, "record_restored": restored,
                "revoked": [g.describe(now) for g in removed], "_audit_host": target.audit_host,
                "_keys_at_revoke": at_revoke,
                "added_during_grants": _added_lines(ctx.home, now) if own else []}

    results = _on_each(targets, work)
    for r in results:
        audit_host = cast("str | None", r.pop("_audit_host", None))
        at_revoke = cast("dict[str, list[str]]", r.pop("_keys_at_revoke", None) or {})
        if r.get("record_restored"):
            recorder.event("access_record_restored", host=audit_host, outcome="restored", grant=grant_id,
                           user=r["user"], file=r["file"])
        for g in cast("list[dict[str, object]]", r.get("revoked", [])):
            own = {"keys_at_revoke": at_revoke[str(g["id"])]} if str(g["id"]) in at_revoke else {}
            recorder.event("access_revoked", host=audit_host, outcome="revoked", grant=g["id"],
                           fingerprint=g["fingerprint"], key_type=g["key_type"], user=r["user"], file=r["file"],
                           expires=g["expires"], expired=g["expired"], reason=g["reason"],
                           granted_by=g["granted_by"], selected_by=chosen[0], **_from(g), **cast("dict[str, Any]", own))
    code = _access_exit(results)
    if grant_id and code == 0 and not any(r.get("revoked") or r.get("record_restored") for r in results):
        code = int(ExitCode.BAD_INPUT)
        for r in results:
            r.update(outcome="failed", error=f"no grant {grant_id} in {r['file']}", exit_code=code)
    return AccessResult(results, code, chosen=chosen[0])


# -- small helpers ---------------------------------------------------------------------------------------

def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
