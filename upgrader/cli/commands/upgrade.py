"""``upgrader plan``, ``upgrader run`` and ``upgrader rollback``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.errors import ApprovalRefused, InputError, PolicyRefused, UpgraderError
from ...core.recorder import Recorder
from ...core.exit_codes import ExitCode
from ._common import console, load_policy_or_fail, policy_path, print_json
from ...core.journal import runs_dir
from ...fleet.inventory import host_from_plan

__all__ = ["cmd_plan", "cmd_run", "cmd_rollback", "host_from_plan", "runs_dir", "plan_policy", "trusted_catalog",
           "check_run", "start_run", "finish_run", "record_refusal", "record_plan", "refuse_refused", "CheckedRun",
           "StartedRun"]


def plan_policy(plan: Any, args: argparse.Namespace) -> Any:
    """The operator's policy (--policy, HOME/policy.yaml, the system-wide policy or the shipped default, never a
    path the plan names); refused (exit 4) when the plan was made under another policy."""
    from ...core.gate import operator_policy

    return operator_policy(load_policy_or_fail(policy_path(args)), plan.data["policy"])


def trusted_catalog(path: str | Path, policy: Any, home: Path, now: Any) -> tuple[Any, dict[str, Any]]:
    """Load a catalog and check its vendor signature and serial (exit 4 when it cannot be trusted)."""
    from ...trust.catalog import load_catalog
    from ...trust.catalog_trust import verify_catalog

    catalog = load_catalog(path)
    signers = policy.trusted_signers
    info = verify_catalog(catalog, trusted_signers=policy.resolve_path(signers) if signers else None, now=now,
                          home=home)
    return catalog, info


def cmd_plan(args: argparse.Namespace) -> int:
    from ...core.clock import clock_of
    from ...fleet.inventory import load_inventory
    from ...core.planner import make_plan, requester_identity
    from ...fleet.transport import connect

    clock = clock_of(args)
    inventory = load_inventory(args.inventory)
    hosts = inventory.select(args.hosts)
    policy = load_policy_or_fail(policy_path(args))
    catalog, signed_by = trusted_catalog(args.catalog, policy, args.home, clock.now())
    from ...customer.service_window import plan_window

    signing_key = _plan_key(args)
    plan = make_plan(inventory, hosts, target=args.to, catalog=catalog, policy=policy, clock=clock,
                     connect=connect, requester=requester_identity(args.requester),
                     window=plan_window(policy, clock.now()), signed_by=signed_by, home=args.home)
    if signing_key is not None:
        from ...core.plan import Plan, plan_digest
        from ...trust.requester import sign_plan

        plan = Plan(sign_plan(plan.data, signing_key, plan_digest))
    out = Path(args.output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(plan.to_json(), encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write the plan: {e.strerror}", path=str(out), hint="give a file path for -o") from e
    record_plan(args, policy, clock, plan, out, signed_by)
    if args.json:
        print_json({"plan": str(out), "digest": plan.digest, **plan.data})
    else:
        from ..report import print_plan

        c = console()
        print_plan(c, plan.data, plan.digest)
        c.print(f"plan written to [bold]{out}[/bold] (sha256 {plan.digest})")
        if plan.allowed:
            c.print("next: an engineer approves it, then [bold]upgrader run "
                    f"{out}[/bold]")
    return ExitCode.OK if plan.allowed else ExitCode.POLICY_REFUSED


def _plan_key(args: argparse.Namespace) -> Any:
    """The requester's private key of ``plan --key`` (read before any host is contacted), or None."""
    if not getattr(args, "key", None):
        return None
    from ...trust.keys import load_private_key

    return load_private_key(args.key)


def record_plan(args: argparse.Namespace, policy: Any, clock: Any, plan: Any, out: Path,
                signed_by: dict[str, Any]) -> None:
    """The audit event of a new plan (allowed or refused)."""
    _recorder(args, policy, clock, need_key=False).event(
        "plan_created", outcome="allowed" if plan.allowed else "refused", plan=plan.digest, file=str(out),
        target=plan.data["target"], catalog={**plan.data["catalog"], **signed_by}, policy=plan.data["policy"],
        requester=plan.data["requester"], hosts=[_host_summary(h) for h in plan.hosts])


def _targets(catalog: Any, hosts: list[dict[str, Any]]) -> list[Any]:
    from ...trust.catalog import verify_package_file
    from ...core.engine import HostTarget
    from ...trust.plan_trust import trusted_package
    from ...fleet.transport import connect

    targets = []
    verified: set[str] = set()
    for h in hosts:
        # the entry of the plan's product and target in the signed catalog, rebuilt in full: the plan's package
        # must equal it (version, kind, changes, requires, limits, remove, ...), exit 4 otherwise
        entry, package = trusted_package(catalog, h)
        path = catalog.package_path(entry)
        if entry.sha256 not in verified:
            verify_package_file(path, entry)  # refused here, before any host is touched
            verified.add(entry.sha256)
        host = host_from_plan(h)
        targets.append(HostTarget(plan={**h, "package": package}, connect=lambda host=host: connect(host),
                                  package_file=path))
    return targets


def cmd_run(args: argparse.Namespace) -> int:
    from ...core.clock import clock_of
    from ...core.plan import load_plan

    plan = load_plan(args.plan)
    clock = clock_of(args)
    try:
        return _run(args, plan, clock)
    except (PolicyRefused, ApprovalRefused) as e:
        record_refusal(args, plan, clock, e)
        raise


def _run(args: argparse.Namespace, plan: Any, clock: Any) -> int:
    refuse_refused(plan)
    total = len(plan.hosts)
    batch = _count(args.batch, total, "--batch", minimum=1)
    max_failures = _count(args.max_failures, total, "--max-failures", minimum=0)
    if args.forks < 1:
        raise InputError("--forks must be at least 1")
    if args.canary < 0 or args.canary > total:
        raise InputError(f"--canary must be between 0 and the number of hosts ({total})")
    checked = check_run(args, plan, clock)
    c = None if args.json else console()  # --json (scripts): rich is not even imported
    if args.dry_run:
        from .plan_check import check_plan_hosts

        return check_plan_hosts(args, plan.data, plan.digest, c, canary=args.canary, batch=batch,
                                package_verified=True)
    interrupts = run_interrupts(None)
    with interrupts.running():  # from here a run, once started, always reaches its end and its records
        return _run_started(args, plan, checked, clock, c, batch, max_failures, interrupts)


def _run_started(args: argparse.Namespace, plan: Any, checked: CheckedRun, clock: Any, c: Any,
                 batch: int | None, max_failures: int | None, interrupts: Any) -> int:
    from ...core.engine import Engine

    started = start_run(args, plan, checked, clock)
    interrupts.echo.update(_ctrl_c_messages(started.run_id, cancels=True))  # now the messages can name the run
    board = None
    observers: list[Any] = [started.recorder]
    if c is not None:
        from ..report import LiveBoard, PhaseLines

        board = LiveBoard(c, [h["name"] for h in plan.hosts], clock) if c.is_terminal else None
        observers.append(board or PhaseLines(c))
    if c is not None:
        c.print(f"run [bold]{started.run_id}[/bold]: {len(checked.targets)} host(s) to {plan.data['target']} "
                f"(journal {started.journal.dir})")
    engine = Engine(journal=started.journal, clock=clock, observers=observers, forks=args.forks, batch=batch,
                    max_failures=max_failures, controller=started.controller,
                    manual_changes=checked.policy.manual_changes, canary=args.canary,
                    confirm=_confirmer(args, c, board, interrupts.cancel), approvals=checked.approval_digests,
                    break_lock=args.break_lock, cancel=interrupts.cancel, catalog_serial=checked.catalog_serial)
    if args.break_lock:
        started.recorder.event("locks_broken", outcome="forced", reason="--break-lock given by the operator")
    try:
        if board is not None:
            with board:
                outcome = engine.run(checked.targets)
        else:
            outcome = engine.run(checked.targets)
    except BaseException as e:
        started.close_on_error(e)
        raise
    record_interrupts(started.recorder, interrupts)
    result = finish_run(args, checked, started, outcome, clock)
    return _report(c, result)


#: what Ctrl-C answers while ``run`` goes on (``{run}``: the run id, once there is one)
_RUN_CTRL_C = {
    "cancel_first": ("upgrader: Ctrl-C: cancelling the run. No other host starts; hosts not stopped yet are released "
                     "unchanged, hosts already stopped are rolled back to the old version at their next safe point. "
                     "Wait for the summary."),
    "cancel_again": ("upgrader: still cancelling: a rollback in progress is never abandoned (the service would stay "
                     "down). Wait for the summary; if this machine must go now, kill upgrader: `upgrader resume {run}` "
                     "finishes from the run journal later."),
}
#: what Ctrl-C answers while ``resume`` or ``rollback`` goes on: they are not cancelled halfway
_RESUME_CTRL_C = ("upgrader: Ctrl-C: a resume or rollback is not stopped halfway (the service could stay down); it "
                  "goes on to its end. Wait for the summary.")


def run_interrupts(run_id: str | None, cancels: bool = True) -> Any:
    """Ctrl-C handling for a command that runs hosts (enter ``.running()`` before the run starts). With
    ``cancels``, the first Ctrl-C cancels the run at the engine's next safe point (pass ``.cancel`` to the
    engine); without, it only says that the work goes on. Either way it never cuts an action in half."""
    from ...core.interrupts import Interrupts

    return Interrupts(echo=_ctrl_c_messages(run_id, cancels))


def _ctrl_c_messages(run_id: str | None, cancels: bool) -> dict[str, str]:
    if not cancels:
        return {"cancel_first": _RESUME_CTRL_C, "cancel_again": _RESUME_CTRL_C}
    return {key: text.format(run=run_id or "RUN_ID") for key, text in _RUN_CTRL_C.items()}


def record_interrupts(recorder: Any, interrupts: Any, cancels: bool = True) -> None:
    """The operator's Ctrl-C on the audit record (what the hosts did about it is in their own events)."""
    if interrupts.presses:
        recorder.event("run_interrupted", outcome="cancelled" if cancels else "continued",
                       presses=interrupts.presses)


def _report(c: Any, result: dict[str, Any]) -> int:
    """What a command that ran hosts prints last (the JSON when ``c`` is None, else the summary, the
    diagnostics and the checkpoint; one stderr line per host that did not commit); its exit code. Everything it
    prints is redacted (a host's error quotes what the product logged)."""
    from ...audit.redaction import redact_value

    result = redact_value(result)
    if c is None:
        print_json(result)
    else:
        from ..report import print_run_summary
        from .diagnostics import print_diagnostics

        print_run_summary(c, result)
        print_diagnostics(c, result.get("diagnostics"))
        _print_checkpoint(c, result["checkpoint"])
        waiting = sum(1 for h in result["hosts"] if h["outcome"] == "waiting")
        if waiting:
            c.print(f"[bold]{waiting} host(s) wait:[/bold] upgrader resume {result['run_id']} --yes", soft_wrap=True)
    _explain_failures(result)
    return int(result["exit_code"])


@dataclass(frozen=True)
class CheckedRun:
    """Everything ``run`` (and ``guide``) checked before touching a host: the policy, the trusted catalog,
    the approvals, the service window and the host targets."""

    policy: Any
    operator: Any
    signed_by: dict[str, Any]
    approvals: list[Any]
    window: dict[str, Any]
    targets: list[Any]
    requester: Any = None  # the key that stands for the requester (requester.Requester)

    @property
    def approval_digests(self) -> tuple[str, ...]:
        return tuple(a.digest for a in self.approvals)

    @property
    def catalog_serial(self) -> int | None:
        """The serial of the signed catalog this run installs from (each host refuses an older one)."""
        serial = self.signed_by.get("serial")
        return int(serial) if serial is not None else None


@dataclass(frozen=True)
class StartedRun:
    run_id: str
    journal: Any
    recorder: Any
    controller: dict[str, str]

    def close_on_error(self, error: BaseException) -> None:
        """The engine itself failed (a bug, a full disk under the journal): the audit log still gets the end of
        the run and a signed checkpoint (best effort); the journal keeps what ``resume`` needs."""
        try:
            self.recorder.event("run_finished", outcome="error", error=f"{type(error).__name__}: {error}",
                                hint=f"upgrader resume {self.run_id}")
            self.recorder.checkpoint()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass


def check_run(args: argparse.Namespace, plan: Any, clock: Any) -> CheckedRun:
    """Refuse (exit 3, 4 or 2) a plan that may not run now; touches no host. Uses args.approval (a list),
    args.catalog, args.home and args.audit_key."""
    refuse_refused(plan)
    now = clock.now()
    policy = plan_policy(plan, args)  # the operator's, never the plan's
    operator = _operator(args, policy)
    catalog_dir = Path(args.catalog) if args.catalog else Path(plan.data["catalog"]["path"])
    catalog, signed_by = trusted_catalog(catalog_dir, policy, args.home, now)
    if catalog.sha256 != plan.data["catalog"]["sha256"]:  # the bytes whose signature was just checked
        raise ApprovalRefused(f"the catalog {catalog.path} is not the one the plan was made with",
                              hint="make and approve a new plan with this catalog")
    approvals, requester = _check_approvals(args, plan, policy, now, operator)
    from ...customer.service_window import check_run_window

    window = check_run_window(plan.data.get("window"), policy,  # the clock at run time
                              [a.statement.approver for a in approvals if a.statement.after_hours], now)
    targets = _targets(catalog, plan.hosts)
    from ...core.gate import check_playbooks, redecide

    check_playbooks(plan.hosts, args.home, getattr(args, "given_playbooks", None))  # the operator's, exit 4
    from ...fleet.transport import connect

    redecide(plan.hosts, policy=policy, catalog=catalog, now=now, connect=connect,
             forks=max(1, int(getattr(args, "forks", 8) or 8)))  # read-only: decided again under this policy
    return CheckedRun(policy, operator, signed_by, approvals, window, targets, requester)


def refuse_refused(plan: Any) -> None:
    """PolicyRefused naming each refused host of the plan and the failed rules and checks, if there is one."""
    refused = plan.refused_hosts()
    if refused:
        reasons = []
        for h in refused:
            why = [r["reason"] for r in h["decision"]["rules"] if r["status"] == "fail"]
            why += [c["reason"] for c in h.get("checks", []) if c["status"] == "fail"]
            reasons.append(f"{h['name']}: " + "; ".join(why))
        raise PolicyRefused("the plan refuses these hosts, nothing was changed:\n  " + "\n  ".join(reasons))


def start_run(args: argparse.Namespace, plan: Any, checked: CheckedRun, clock: Any) -> StartedRun:
    """A new run: its journal (with the accepted plan) and its first audit events."""
    from ...core.journal import Journal, new_run_id

    run_id = new_run_id(clock.now())
    journal = Journal(runs_dir(args.home) / run_id, clock.now)
    journal.write("plan.json", plan.data)
    approved_by = [{"approver": a.statement.approver, "key": a.signature.fingerprint,
                    "expires": a.statement.expires.isoformat(), "digest": a.digest,
                    "comment": a.statement.comment, "after_hours": a.statement.after_hours}
                   for a in checked.approvals]
    journal.record("plan", "accepted", digest=plan.digest, catalog=checked.signed_by, approvals=approved_by)
    recorder = Recorder(args.home, checked.operator, clock, run=run_id)
    who = checked.requester
    requester = {**plan.data["requester"], **({"key": who.fingerprint, "key_is": f"the key that {who.how}"}
                                              if who is not None else {})}
    recorder.event("run_started", plan=plan.digest, target=plan.data["target"], requester=requester,
                   approvals=approved_by, catalog={**plan.data["catalog"], **checked.signed_by},
                   policy=plan.data["policy"], self_approval_allowed=bool(checked.policy.allow_self_approval),
                   window=checked.window, hosts=[_host_summary(h) for h in plan.hosts])
    for a in approved_by:
        recorder.event("approval_accepted", outcome="accepted", **a)
    return StartedRun(run_id, journal, recorder, {"user": checked.operator.user, "host": checked.operator.host})


def finish_run(args: argparse.Namespace, checked: CheckedRun, started: StartedRun, outcome: Any,
               clock: Any) -> dict[str, Any]:
    """After the engine: the approvals are spent, the audit checkpoint signed, result.json written (then the
    diagnostics bundle, when a host failed, and result.json again with its name)."""
    result: dict[str, Any] = outcome.to_dict()
    if passed_preflight(result):  # a run refused by every host before it touched one leaves its approval unspent
        _used_approvals(args.home).mark(checked.approvals, started.run_id, clock.now())
    result["checkpoint"] = started.recorder.checkpoint()
    from .diagnostics import bundle_after_run

    bundle_after_run(args, result, lambda r: started.journal.write("result.json", r))
    return result


def passed_preflight(result: dict[str, Any]) -> bool:
    """Did any host of the run get past its preflight (and so may have been changed)?"""
    return any(p.get("phase") == "preflight" and p.get("status") == "ok"
               for h in result["hosts"] for p in h.get("phases") or [])


def record_refusal(args: argparse.Namespace, plan: Any, clock: Any, e: UpgraderError) -> None:
    """An audit event for a plan refused at run time (policy or approval); best effort."""
    try:
        _recorder(args, None, clock, need_key=False).event(
            "approval_refused" if isinstance(e, ApprovalRefused) else "run_refused", outcome="refused",
            plan=plan.digest, reason=str(e), approvals=list(args.approval))
    except UpgraderError:
        pass  # the refusal itself is what the user must see


def _explain_failures(result: dict[str, Any]) -> None:
    """One line per host that did not commit, on stderr (for people and for scripts)."""
    import sys

    words = {"rolled_back": "failed and was rolled back", "unchanged": "failed before anything changed",
             "needs_person": "NEEDS A PERSON", "not_started": "was not started", "refused": "was refused",
             "stale": "was not touched: the plan does not fit the host as it is now",
             "bad_input": "was refused before stop, nothing changed", "superseded": "was not touched"}
    from ...core.engine import CANCELLED

    for h in result["hosts"]:
        if h["outcome"] in words:
            cancelled = h["outcome"] == "rolled_back" and h.get("rollback_cause") == CANCELLED
            what = "was rolled back" if cancelled else words[h["outcome"]]
            print(f"upgrader: {h['host']}: {what}: {h.get('error') or ''}".rstrip(": "), file=sys.stderr)


def _count(value: str | None, total: int, name: str, minimum: int) -> int | None:
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


def _confirmer(args: argparse.Namespace, c: Any, board: Any, cancel: Any = None) -> Any:
    """After a good canary: --yes continues; on a terminal, ask; otherwise stop and say how to go on. A run
    cancelled by Ctrl-C never goes on; Ctrl-C at the question answers no."""
    if args.yes:
        return lambda outcomes: not (cancel is not None and cancel.is_set())
    import sys

    if not sys.stdin.isatty():
        return None

    def ask(outcomes: list[Any]) -> bool:
        import signal
        import threading

        from rich.prompt import Confirm

        if cancel is not None and cancel.is_set():
            return False
        if board is not None and board._live is not None:
            board._live.stop()
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.default_int_handler) if in_main else None
        try:
            ok = Confirm.ask(f"canary done on {', '.join(o.host for o in outcomes)}: continue with the other hosts?",
                             console=c or console(), default=False)
        except (KeyboardInterrupt, EOFError):
            ok = False
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if board is not None and board._live is not None:
            board._live.start()
        return bool(ok)
    return ask


def _host_summary(h: dict[str, Any]) -> dict[str, Any]:
    pkg = h.get("package") or {}
    return {"host": h["name"], "address": h["address"], "install_dir": h["install_dir"], "current": h["current"],
            "target": h["target"], "allowed": h["allowed"], "decision": h["decision"], "checks": h.get("checks"),
            "package": {k: pkg.get(k) for k in ("file", "sha256", "size", "kind")} if pkg else None,
            "ssh_key": _key_fingerprint(h.get("key"))}


def _key_fingerprint(path: str | None) -> str | None:
    """The fingerprint of the SSH key a host is reached with (matches the grant it came in through, if any)."""
    if not path:
        return None
    from ...trust.keys import load_private_key, load_public_key
    from ...trust.sshsig import fingerprint, public_key_blob

    try:
        pub = Path(path + ".pub")
        key = load_public_key(pub) if pub.is_file() else load_private_key(path).public_key()
        return fingerprint(public_key_blob(key))
    except UpgraderError:
        return None


def _operator(args: argparse.Namespace, policy: Any, need_key: bool = True) -> Any:
    from ...core.recorder import operator_identity

    operator = operator_identity(args.home, policy, key_path=getattr(args, "audit_key", None), need_key=need_key)
    if need_key and operator.warning:  # said before any host is touched, not found later by an auditor
        print(f"upgrader: warning: {operator.warning}", file=sys.stderr)
    return operator


def _recorder(args: argparse.Namespace, policy: Any, clock: Any, need_key: bool = True, run: str | None = None) -> Any:
    if policy is None:
        policy = load_policy_or_fail(policy_path(args))
    return Recorder(args.home, _operator(args, policy, need_key), clock, run=run)


def _print_checkpoint(c: Any, cp: dict[str, Any] | None) -> None:
    if cp:
        c.print(f"audit checkpoint: line {cp['line']} signs seq {cp['seq']} head {cp['head']} ({cp['signer']}); "
                f"keep it elsewhere to prove the log complete later: "
                f"[bold]upgrader audit verify --anchor {cp['seq']}:{cp['head']}[/bold]", soft_wrap=True)


def _used_approvals(home: Path) -> Any:
    from ...trust.approval import UsedApprovals

    return UsedApprovals(home / "approvals" / "used.jsonl")


def _check_approvals(args: argparse.Namespace, plan: Any, policy: Any, now: Any,
                     operator: Any) -> tuple[list[Any], Any]:
    """The accepted approvals and the requester's key they were checked against."""
    from ...trust.approval import check_approvals
    from ...trust.requester import requester_of
    from ...trust.signers import load_allowed_signers
    from ...trust.sshsig import public_key_blob

    signers_path = policy.allowed_signers
    signers = load_allowed_signers(policy.resolve_path(signers_path)) if signers_path else None
    operator_key = public_key_blob(operator.key.public_key()) if operator.key is not None else None
    requester = requester_of(plan.data, plan.digest, str(getattr(args, "plan", None) or "the plan"),
                             signers=signers, allow_unsigned=policy.allow_unsigned_plans, operator_key=operator_key)
    return check_approvals(args.approval, plan_digest=plan.digest, requester=requester,
                           signers=signers, required=policy.approvals_required,
                           allow_self=policy.allow_self_approval, now=now, used=_used_approvals(args.home),
                           requester_label=str((plan.data.get("requester") or {}).get("user") or "")), requester


def cmd_rollback(args: argparse.Namespace) -> int:
    from ...core.clock import clock_of
    from ...core.engine import Engine, HostTarget
    from ...fleet.inventory import Inventory
    from ...core.journal import Journal
    from ..report import PhaseLines
    from ...fleet.transport import connect

    run_dir = runs_dir(args.home) / args.run_id
    plan_file = run_dir / "plan.json"
    if not plan_file.is_file():
        known = sorted(p.name for p in runs_dir(args.home).glob("*") if p.is_dir())[-5:]
        raise InputError(f"no run {args.run_id!r} in {runs_dir(args.home)}",
                         hint=f"recent runs: {', '.join(known) or 'none'}; or give --home")
    plan = accepted_plan(run_dir)  # exit 4 when plan.json is not the plan the journal accepted
    hosts = plan["hosts"]
    if args.hosts:
        inv = Inventory(path=plan_file, hosts={h["name"]: host_from_plan(h) for h in hosts}, groups={})
        names = {h.name for h in inv.select(args.hosts)}
        hosts = [h for h in hosts if h["name"] in names]
    clock = clock_of(args)
    journal = Journal(run_dir, clock.now)
    c = console()
    policy = load_policy_or_fail(policy_path(args))  # the operator's, never a path the plan names
    from ...core.gate import check_playbooks

    check_playbooks(hosts, args.home)  # the rollback's start and probes are the operator's playbook's, exit 4
    operator = _operator(args, policy)
    from .recovery import RecoveryNotes, print_config_kept, rollback_window
    from .rollback_confirm import CANCELLED_EXIT, confirm_rollback

    batch = _count(args.batch, len(hosts), "--batch", minimum=1)
    max_failures = _count(args.max_failures, len(hosts), "--max-failures", minimum=0)
    window, window_line = rollback_window(policy, clock.now())  # exit 4 here when the policy says like_run
    if not confirm_rollback(args, args.run_id, hosts):  # it stops the service: asked first on a terminal
        return CANCELLED_EXIT
    if not args.json:
        c.print(window_line)
    recorder = Recorder(args.home, operator, clock, run=f"{args.run_id}/rollback-{clock.now():%Y%m%dT%H%M%S}")
    recorder.event("rollback_requested", of_run=args.run_id, hosts=[h["name"] for h in hosts], batch=batch,
                   max_failures=max_failures, window=window, confirmed="--yes" if args.yes else "asked",
                   break_lock=bool(args.break_lock))
    targets = [HostTarget(plan=h, connect=lambda h=h: connect(host_from_plan(h)), package_file=Path())
               for h in hosts]
    observers: list[Any] = [recorder] + ([] if args.json else [PhaseLines(c), RecoveryNotes(c)])
    engine = Engine(journal=journal, clock=clock, observers=observers, batch=batch, max_failures=max_failures,
                    controller={"user": operator.user, "host": operator.host}, break_lock=args.break_lock)
    interrupts = run_interrupts(args.run_id, cancels=False)
    with interrupts.running():  # until its records are written
        result = engine.rollback(targets).to_dict()
        record_interrupts(recorder, interrupts, cancels=False)
        if not args.json:
            print_config_kept(c, result)
        return _close_run(args, c, recorder, journal, result, "rollback-result.json")


def journal_view(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per host, what the run journal proves happened: started, phases intended and done, the end."""
    from ...core.journal import read_journal

    seen: dict[str, dict[str, Any]] = {}
    for rec in read_journal(run_dir / "journal.jsonl"):
        if not rec.host:
            continue
        h = seen.setdefault(rec.host, {"started": False, "ended": None, "intents": [], "done": []})
        if rec.phase == "host" and rec.event == "start":
            h["started"] = True
        elif rec.phase == "host" and rec.event == "end":
            h["ended"] = rec.data.get("outcome")
            h["version"] = rec.data.get("version")
        elif rec.event == "intent":
            h["intents"].append(rec.phase)
        elif rec.event == "done":
            h["done"].append(rec.phase)
    return seen


def cmd_resume(args: argparse.Namespace) -> int:
    from ...core.clock import clock_of
    from ...core.engine import Engine, HostTarget
    from ...fleet.inventory import Inventory
    from ...core.journal import Journal
    from ..report import PhaseLines
    from ...fleet.transport import connect

    run_dir = runs_dir(args.home) / args.run_id
    plan_file = run_dir / "plan.json"
    if not plan_file.is_file():
        raise InputError(f"no run {args.run_id!r} in {runs_dir(args.home)}", hint="check the run id, or give --home")
    c = console()
    done_file = run_dir / "result.json"
    if done_file.is_file():
        result = json.loads(done_file.read_text(encoding="utf-8"))
        waiting = [h["host"] for h in result["hosts"] if h["outcome"] in ("waiting", "not_started")]
        needs_person = [h["host"] for h in result["hosts"] if h["outcome"] == "needs_person"]
        view = journal_view(run_dir)
        # hosts of a continuation after the canary that was itself interrupted are finished from the journal
        # below, like any interrupted run, and so are hosts that need a person (locked, lost, a failed rollback:
        # resume reads each again and finishes what it can); otherwise the run had ended
        if not needs_person and not any(view.get(h, {}).get("started") for h in waiting):
            if waiting and "canary succeeded" in str(result.get("stopped_early") or ""):
                return _continue_after_canary(args, run_dir, result, waiting, c)
            if args.json:
                print_json({**result, "resumed": False, "note": "the run had finished: nothing to resume"})
            else:
                c.print(f"run {args.run_id} had finished (exit {result['exit_code']}): nothing to resume")
                _print_open_rollbacks(c, args.run_id, run_dir, [h["host"] for h in result["hosts"]])
            return int(result["exit_code"])
    plan = accepted_plan(run_dir)  # exit 4 when plan.json is not the plan the journal accepted
    hosts = plan["hosts"]
    if args.hosts:
        inv = Inventory(path=plan_file, hosts={h["name"]: host_from_plan(h) for h in hosts}, groups={})
        names = {h.name for h in inv.select(args.hosts)}
        hosts = [h for h in hosts if h["name"] in names]
    seen = journal_view(run_dir)
    approvals = _run_approvals(run_dir)
    clock = clock_of(args)
    journal = Journal(run_dir, clock.now)
    policy = load_policy_or_fail(policy_path(args))  # the operator's, never a path the plan names
    from ...core.gate import check_playbooks

    check_playbooks(hosts, args.home)  # what resume runs is the operator's playbook's, exit 4 otherwise
    operator = _operator(args, policy)
    recorder = Recorder(args.home, operator, clock, run=f"{args.run_id}/resume-{clock.now():%Y%m%dT%H%M%S}")
    recorder.event("resume_requested", of_run=args.run_id, hosts=[h["name"] for h in hosts],
                   journal={k: {"intents": v["intents"], "ended": v["ended"]} for k, v in seen.items()})
    targets = [HostTarget(plan=h, connect=lambda h=h: connect(host_from_plan(h)),
                          package_file=Path(plan["catalog"]["path"]).parent / (h.get("package") or {}).get("file", ""))
               for h in hosts]
    from .recovery import RecoveryNotes

    engine = Engine(journal=journal, clock=clock,
                    observers=[recorder] + ([] if args.json else [PhaseLines(c), RecoveryNotes(c)]),
                    controller={"user": operator.user, "host": operator.host}, approvals=approvals,
                    break_lock=args.break_lock)
    interrupts = run_interrupts(args.run_id, cancels=False)
    with interrupts.running():  # until its records are written
        result = engine.resume(targets, seen).to_dict()
        record_interrupts(recorder, interrupts, cancels=False)
        return _close_run(args, c, recorder, journal, result, "result.json")


def _print_open_rollbacks(c: Any, run_id: str, run_dir: Path, hosts: list[str]) -> None:
    """A finished run whose rollback was interrupted: say which command finishes that (not resume)."""
    from .status import run_needs

    for host in hosts:
        for need in run_needs(run_dir.parent, host):
            if need["run"] == run_id:
                c.print(f"but {host}: run {run_id} {need['why']}: {need['resolve']}", soft_wrap=True, markup=False)


def accepted_plan(run_dir: Path) -> dict[str, Any]:
    """The run's plan.json, refused (exit 4) unless its digest is the one the run's journal accepted when the
    run started: the file in the run directory is only a copy, and resume and rollback run its commands."""
    from ...core.journal import read_journal
    from ...core.plan import plan_digest

    plan = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    accepted = next((rec.data.get("digest") for rec in read_journal(run_dir / "journal.jsonl")
                     if rec.phase == "plan" and rec.event == "accepted"), None)
    found = plan_digest(plan)
    if accepted != found:
        raise ApprovalRefused(f"{run_dir / 'plan.json'} is not the plan this run accepted: its sha256 is {found}, "
                              f"the run's journal accepted {accepted or 'no plan'}; nothing was changed",
                              hint="the run's plan.json was edited: put the accepted plan back, or make and approve "
                                   "a new plan")
    return dict(plan)


def _run_approvals(run_dir: Path) -> tuple[str, ...]:
    """The digests of the approvals a run was started with (its journal's accepted plan record)."""
    return tuple(a["digest"] for a in _run_approval_records(run_dir))


def _run_approval_records(run_dir: Path) -> list[dict[str, Any]]:
    """The approvals a run was started with, as its journal recorded them (approver, expiry, after hours)."""
    from ...core.journal import read_journal

    for rec in read_journal(run_dir / "journal.jsonl"):
        if rec.phase == "plan" and rec.event == "accepted":
            return list(rec.data.get("approvals", []))
    return []


def _check_continuation(run_id: str, run_dir: Path, plan: dict[str, Any], policy: Any, now: Any) -> dict[str, Any]:
    """Hosts that wait after a canary are started later: the run's approvals must still be valid then, and
    the service window must allow it then (as ``run`` checks both when it starts). Returns the window."""
    import datetime as _dt

    from ...customer.service_window import check_run_window

    records = _run_approval_records(run_dir)
    valid = [a for a in records if _dt.datetime.fromisoformat(str(a["expires"])) > now]
    required = int(policy.approvals_required)
    if len(valid) < required:
        expired = ", ".join(f"{a['approver']} (until {a['expires']})" for a in records) or "none recorded"
        raise ApprovalRefused(f"the approval of run {run_id} is no longer valid ({expired}); the hosts that wait "
                              "after its canary were not touched",
                              hint="make and approve a new plan for those hosts (upgrader plan --hosts ...)")
    return check_run_window(plan.get("window"), policy, [str(a["approver"]) for a in valid if a.get("after_hours")],
                            now)


def _close_run(args: argparse.Namespace, c: Any, recorder: Any, journal: Any, result: dict[str, Any],
               name: str) -> int:
    """The end of every command that ran hosts: audit outcome and signed checkpoint, result file, report."""
    recorder.event("run_finished", outcome=str(result["exit_code"]),
                   outcomes={h["host"]: h["outcome"] for h in result["hosts"]})
    result["checkpoint"] = recorder.checkpoint()
    from .diagnostics import bundle_after_run

    bundle_after_run(args, result, lambda r: journal.write(name, r), name)
    return _report(None if args.json else c, result)


def _continue_after_canary(args: argparse.Namespace, run_dir: Path, result: dict[str, Any], waiting: list[str],
                           c: Any) -> int:
    """A run stopped after a good canary goes on with the waiting hosts, under the same approval."""
    from ...core.clock import clock_of
    from ...core.engine import Engine
    from ...core.journal import Journal
    from ..report import PhaseLines

    if not args.yes:
        confirm = _confirmer(args, c, None)
        if confirm is None or not confirm([type("H", (), {"host": h["host"]})() for h in result["hosts"]
                                           if h["outcome"] == "committed"]):
            raise InputError(f"{len(waiting)} host(s) wait for a confirmation after the canary: "
                             f"{', '.join(waiting)}", hint=f"upgrader resume {args.run_id} --yes")
    plan = accepted_plan(run_dir)
    hosts = [h for h in plan["hosts"] if h["name"] in waiting]
    approvals = _run_approvals(run_dir)
    clock = clock_of(args)
    policy = plan_policy(_PlanView(plan), args)
    window = _check_continuation(args.run_id, run_dir, plan, policy, clock.now())
    catalog, _ = trusted_catalog(Path(plan["catalog"]["path"]), policy, args.home, clock.now())
    if catalog.sha256 != plan["catalog"]["sha256"]:
        raise ApprovalRefused(f"the catalog {catalog.path} is not the one the plan was made with",
                              hint="make and approve a new plan for the waiting hosts")
    from ...core.gate import check_playbooks, redecide

    check_playbooks(hosts, args.home)
    targets = _targets(catalog, hosts)
    from ...core.gate import redecide
    from ...fleet.transport import connect

    redecide(hosts, policy=policy, catalog=catalog, now=clock.now(), connect=connect)  # decided again now
    journal = Journal(run_dir, clock.now)
    operator = _operator(args, policy)
    recorder = Recorder(args.home, operator, clock, run=f"{args.run_id}/resume-{clock.now():%Y%m%dT%H%M%S}")
    recorder.event("resume_requested", of_run=args.run_id, hosts=waiting, after="canary confirmed", window=window)
    interrupts = run_interrupts(args.run_id)
    engine = Engine(journal=journal, clock=clock, observers=[recorder] + ([] if args.json else [PhaseLines(c)]),
                    forks=getattr(args, "forks", 10), controller={"user": operator.user, "host": operator.host},
                    manual_changes=policy.manual_changes, approvals=approvals,
                    cancel=interrupts.cancel, catalog_serial=catalog.serial)
    from ...core.engine import OUTCOME_EXIT

    with interrupts.running():  # until its records are written
        more = engine.run(targets).to_dict()
        record_interrupts(recorder, interrupts)
        by_host = {h["host"]: h for h in more["hosts"]}
        result["hosts"] = [by_host.get(h["host"], h) for h in result["hosts"]]
        result["stopped_early"] = more.get("stopped_early")
        result["exit_code"] = max(OUTCOME_EXIT[h["outcome"]] for h in result["hosts"])
        return _close_run(args, c, recorder, journal, result, "result.json")


class _PlanView:
    """The shape plan_policy expects, over a plan dict read from a run directory."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
