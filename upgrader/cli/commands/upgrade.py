"""``upgrader plan``, ``upgrader run``, ``upgrader resume`` and ``upgrader rollback``: parse, call one
``upgrader.api`` function, render its result, exit with its code. The CLI's own part is the terminal:
Ctrl-C while hosts are worked on, the live board or phase lines, the canary question, and ``--events``."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from ...core.exit_codes import ExitCode
from ._common import console, context_of, print_json

__all__ = ["cmd_plan", "cmd_run", "cmd_resume", "cmd_rollback", "run_interrupts", "record_interrupts"]


def cmd_plan(args: argparse.Namespace) -> int:
    from ...api import make_plan

    made = make_plan(context_of(args), inventory=Path(args.inventory), to=args.to, catalog=Path(args.catalog),
                     output=Path(args.output), hosts=args.hosts, requester=args.requester,
                     key=Path(args.key) if getattr(args, "key", None) else None)
    plan, out = made.plan, made.file
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


class _Events:
    """``--events FILE|-``: the stream the api writes JSON Lines to (``-``: stdout; the human output then goes to
    stderr). ``None`` without the option."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.target: str | None = getattr(args, "events", None)
        self.stream: IO[str] | None = None
        if self.target == "-" and getattr(args, "json", False):
            from ...core.errors import InputError

            raise InputError("--events - and --json both write to stdout", hint="give --events FILE with --json")
        if self.target not in (None, "-") and os.path.islink(self.target):  # before anything runs (exit 2)
            from ...core.errors import InputError

            raise InputError(f"--events names a link (-> {os.readlink(self.target)}): upgrader does not write the "
                             "events through a link; nothing was done", path=self.target,
                             hint="give --events the path of a new or regular file, or - for stdout")
        if self.target not in (None, "-") and os.path.isdir(os.path.dirname(os.path.abspath(self.target))):
            from ...core.output import open_folder

            # before anything runs (exit 2): no other account's link on the way (opened again when written)
            os.close(open_folder(Path(self.target).parent, what="the events", option="--events"))

    @property
    def on_stdout(self) -> bool:
        return self.target == "-"

    def open(self) -> IO[str] | None:
        if self.target is None:
            return None
        if self.target == "-":
            self.stream = sys.stdout
            return self.stream
        from ...core.errors import InputError

        import errno

        try:  # never through a link someone planted at that name (a shared folder): O_NOFOLLOW
            from ...core.output import open_folder

            target = Path(self.target)
            dfd = open_folder(target.parent, what="the events", option="--events")  # no other account's link on the way
            try:
                fd = os.open(target.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                             dir_fd=dfd)
            finally:
                os.close(dfd)
            self.stream = os.fdopen(fd, "w", encoding="utf-8")
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise InputError(f"--events names a link (-> {os.readlink(self.target)}): upgrader does not write the "
                                 "events through a link", path=self.target,
                                 hint="give --events the path of a new or regular file, or - for stdout") from e
            raise InputError(f"cannot write the events: {e.strerror}", path=self.target,
                             hint="give a file path for --events, or - for stdout") from e
        return self.stream

    def lazy(self) -> Any:
        """A stream that opens the target on the first line (a refused or declined command leaves no file)."""
        return _LazyEvents(self) if self.target is not None else None

    def close(self) -> None:
        if self.stream is not None and self.stream is not sys.stdout:
            self.stream.close()


def _console(args: argparse.Namespace, events: _Events) -> Any:
    """The console of a command that runs hosts: None with --json (scripts: rich is not even imported); stderr
    when the events go to stdout."""
    if args.json:
        return None
    return console(stderr=events.on_stdout)


def cmd_run(args: argparse.Namespace) -> int:
    from ...api import RunLimits, check_run, policy_origin, real_policy_source, record_refusal, refuse_refused
    from ...core.errors import PolicyRefused
    from ...core.plan import load_plan

    plan = load_plan(args.plan)
    ctx = context_of(args)
    try:
        refuse_refused(plan)
    except PolicyRefused as e:
        record_refusal(ctx, plan, e, args.approval)
        raise
    limits = RunLimits.parse(len(plan.hosts), forks=args.forks, batch=args.batch, max_failures=args.max_failures,
                             canary=args.canary)
    events = _Events(args)
    checked = check_run(ctx, plan, args.approval, catalog=Path(args.catalog) if args.catalog else None,
                        forks=limits.forks, source=str(args.plan))  # records a refusal itself
    c = _console(args, events)
    if args.dry_run:
        from ...api import check_hosts
        from .plan_check import print_host_check

        checked_hosts = check_hosts(plan, canary=limits.canary, batch=limits.batch, package_verified=True)
        return print_host_check(checked_hosts, c, as_json=args.json, canary=limits.canary)
    from ...api import run

    interrupts = run_interrupts(None)
    board = None
    if c is not None and c.is_terminal:
        from ..report import LiveBoard

        board = LiveBoard(c, [h["name"] for h in plan.hosts], ctx.clock)
    observers: list[Any] = []
    if c is not None:
        from ..report import PhaseLines

        observers.append(board or PhaseLines(c))
    with ExitStack() as stack:
        stack.callback(events.close)

        def started(s: Any) -> None:
            interrupts.echo.update(_ctrl_c_messages(s.run_id, cancels=True))  # now the messages can name the run
            print_policy(c, s)
            if c is not None:
                c.print(f"run [bold]{s.run_id}[/bold]: {len(checked.targets)} host(s) to {plan.data['target']} "
                        f"(journal {s.journal})")
                real = real_policy_source(checked.policy)  # links resolved: the file really read
                c.print(f"policy: {policy_origin(ctx)}" + (f", {real}" if real else "")
                        + f"  sha256 {checked.policy.digest}")
            if board is not None:
                stack.enter_context(board)

        result = run(ctx, plan, checked=checked, limits=limits, observers=observers, events=events.open(),
                     confirm=_confirmer(args, c, board, interrupts.cancel), break_lock=args.break_lock,
                     obfuscate=args.obfuscate, guard=interrupts, on_started=started)
    return _report(c, result.data)


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
    """Ctrl-C handling for a command that runs hosts (the api enters ``.running()`` before the run starts). With
    ``cancels``, the first Ctrl-C cancels the run at the engine's next safe point; without, it only says that the
    work goes on. Either way it never cuts an action in half."""
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
        print_json(result, redacted=True)
    else:
        from ..report import print_run_summary
        from .diagnostics import print_diagnostics

        print_run_summary(c, result)
        print_diagnostics(c, result.get("diagnostics"))
        _print_checkpoint(c, result["checkpoint"])
        _print_witness(c, result.get("witness"))
        waiting = sum(1 for h in result["hosts"] if h["outcome"] == "waiting")
        if waiting:
            c.print(f"[bold]{waiting} host(s) wait:[/bold] upgrader resume {result['run_id']} --yes", soft_wrap=True)
    _explain_failures(result)
    return int(result["exit_code"])


def _explain_failures(result: dict[str, Any]) -> None:
    """One line per host that did not commit, on stderr (for people and for scripts)."""
    words = {"rolled_back": "failed and was rolled back", "unchanged": "failed before anything changed",
             "needs_person": "NEEDS A PERSON", "not_started": "was not started", "refused": "was refused",
             "policy_refused": "was refused by the host's trust root, nothing changed",
             "stale": "was not touched: the plan does not fit the host as it is now",
             "bad_input": "was refused before stop, nothing changed", "superseded": "was not touched"}
    from ...core.engine import CANCELLED

    for h in result["hosts"]:
        if h["outcome"] in words:
            cancelled = h["outcome"] == "rolled_back" and h.get("rollback_cause") == CANCELLED
            what = "was rolled back" if cancelled else words[h["outcome"]]
            print(f"upgrader: {h['host']}: {what}: {h.get('error') or ''}".rstrip(": "), file=sys.stderr)


def _confirmer(args: argparse.Namespace, c: Any, board: Any, cancel: Any = None) -> Any:
    """After a good canary: --yes continues; on a terminal, ask; otherwise stop and say how to go on. A run
    cancelled by Ctrl-C never goes on; Ctrl-C at the question answers no."""
    if args.yes:
        return lambda outcomes: not (cancel is not None and cancel.is_set())
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


def print_policy(c: Any, started: Any) -> None:
    """The one line that says which policy a run, resume or rollback uses (the operator's: --policy, HOME, the
    machine's or the shipped one; source and sha256), before any host is touched; on stderr with --json."""
    policy = getattr(started, "policy", None)
    if not policy:
        return
    line = f"policy: {policy['source']} (sha256 {policy['sha256']})"
    if c is None:
        print(f"upgrader: {line}", file=sys.stderr)
    else:
        from rich.text import Text

        c.print(Text(line), soft_wrap=True)


def _print_witness(c: Any, witness: dict[str, Any] | None) -> None:
    """Which hosts keep the checkpoint (audit verify --witness checks the log against them), and a warning for each
    host that could not record it (the run's outcome is not changed by that)."""
    if not witness:
        return
    from rich.text import Text

    if witness.get("witnessed"):
        c.print(Text(f"witnessed by: {', '.join(witness['witnessed'])}"), soft_wrap=True)
    for m in witness.get("missing") or []:
        c.print(Text.assemble(("warning:", "yellow"), f" host {m['host']} did not record the checkpoint (no witness "
                              f"there; the audit log notes it): {m['error']}"), soft_wrap=True)
    sent = (witness.get("syslog") or {}).get("sent")
    if sent:
        c.print(Text(f"sent to syslog by: {', '.join(sent)}"), soft_wrap=True)
    for m in (witness.get("syslog") or {}).get("failed") or []:
        c.print(Text.assemble(("warning:", "yellow"), f" host {m['host']} could not send the checkpoint to its "
                              f"syslog (audit.syslog: true): {m['error']}"), soft_wrap=True)


def _print_checkpoint(c: Any, cp: dict[str, Any] | None) -> None:
    if cp:
        c.print(f"audit checkpoint: line {cp['line']} signs seq {cp['seq']} head {cp['head']} ({cp['signer']}); "
                f"keep it elsewhere to prove the log complete later: "
                f"[bold]upgrader audit verify --anchor {cp['seq']}:{cp['head']}[/bold]", soft_wrap=True)


def _recovery_observers(args: argparse.Namespace) -> tuple[_Events, Any, list[Any], Any]:
    """What ``rollback`` and ``resume`` show and hold while they work: the events file (--events), the console
    (None with --json), its observers (the phases as lines, the recovery's notes) and the Ctrl-C guard of the
    run (which does not cancel a recovery)."""
    events = _Events(args)
    c = _console(args, events)
    observers: list[Any] = []
    if c is not None:
        from ..report import PhaseLines
        from .recovery import RecoveryNotes

        observers += [PhaseLines(c), RecoveryNotes(c)]
    return events, c, observers, run_interrupts(args.run_id, cancels=False)


def cmd_rollback(args: argparse.Namespace) -> int:
    from ...api import rollback
    from .recovery import print_config_kept
    from .rollback_confirm import CANCELLED_EXIT, confirm_rollback

    events, c, observers, interrupts = _recovery_observers(args)

    def started(s: Any) -> None:
        print_policy(c, s)
        if c is not None and s.window_note:
            c.print(s.window_note)

    try:
        result = rollback(context_of(args), args.run_id, hosts=args.hosts, batch=args.batch,
                          max_failures=args.max_failures,
                          confirm=lambda hosts: confirm_rollback(args, args.run_id, hosts, c),
                          break_lock=args.break_lock, obfuscate=args.obfuscate,
                          confirmed_by="--yes" if args.yes else "asked", observers=observers,
                          events=events.lazy(), guard=interrupts, on_started=started)
    finally:
        events.close()
    if result is None:  # the operator said no: nothing was touched
        return CANCELLED_EXIT
    if c is not None:
        print_config_kept(c, result.data)
    return _report(c, result.data)


class _LazyEvents:
    """The events file opened on the first line (a refused or declined command leaves no file behind)."""

    def __init__(self, events: _Events) -> None:
        self.events = events
        self.stream: IO[str] | None = None

    def write(self, text: str) -> int:
        if self.stream is None:
            self.stream = self.events.open()
        assert self.stream is not None
        return self.stream.write(text)

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()


def cmd_resume(args: argparse.Namespace) -> int:
    from ...api import resume

    events, c, observers, interrupts = _recovery_observers(args)

    def started(s: Any) -> None:
        interrupts.echo.update(_ctrl_c_messages(args.run_id, s.cancels))
        print_policy(c, s)

    try:
        result = resume(context_of(args), args.run_id, hosts=args.hosts, yes=args.yes,
                        confirm=None if args.yes else _confirmer(args, c or console(), None),
                        break_lock=args.break_lock, obfuscate=args.obfuscate, observers=observers,
                        events=events.lazy(), guard=interrupts, on_started=started)
    finally:
        events.close()
    if not result.ran:
        if args.json:
            print_json({**result.data, "resumed": False, "note": "the run had finished: nothing to resume"})
        else:
            c.print(f"run {args.run_id} had finished (exit {result.exit_code}): nothing to resume")
            _print_open_rollbacks(c, args.run_id, [h.host for h in result.hosts], Path(args.home))
        return result.exit_code
    return _report(c, result.data)


def _print_open_rollbacks(c: Any, run_id: str, hosts: list[str], home: Path) -> None:
    """A finished run whose rollback was interrupted: say which command finishes that (not resume)."""
    from ...core.journal import runs_dir
    from .status import run_needs

    for host in hosts:
        for need in run_needs(runs_dir(home), host):
            if need["run"] == run_id:
                c.print(f"but {host}: run {run_id} {need['why']}: {need['resolve']}", soft_wrap=True, markup=False)
