"""``upgrader guide``: the customer operator's guided upgrade of the middleware on this host.

Plan and approval: an approval signs one plan's digest, and a plan records the host's facts at
the time it was made, so the guide never approves anything itself and never runs a plan nobody
approved. Either the engineer sends a plan and its approval (``--plan P --approval A``), or the
guide makes the plan here (``--package PKG`` or ``--catalog CAT --to VERSION``), keeps it as
``HOME/guide/plans/<digest>.json`` and stops (exit 4) asking the operator to send that file to the
engineer; run again with the approval the engineer sends back, and the guide finds the plan by
the digest the approval names. The run itself is ``upgrader run``'s: the same checks
(``check_run``), journal, audit events and result (``start_run``, ``finish_run``).

Exit codes: PRODUCT.md's (0 upgraded, 1 failed or cancelled after stop and rolled back, 2 bad
input, 3 refused by the policy, 4 approval missing or invalid or outside the service window,
5 needs a person), plus 130 when the operator cancelled (Ctrl-C or a "no") before the service was
stopped, and 129 when the terminal was lost before the run started: in both nothing changed.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import ApprovalRefused, InputError, PolicyRefused, UpgraderError
from ..exit_codes import ExitCode
from ..guide_messages import Messages, language
from ..interrupts import Interrupts, TerminalLost
from ._common import console, load_policy_or_fail, policy_path

__all__ = ["cmd_guide", "CANCELLED_EXIT", "HANGUP_EXIT"]

CANCELLED_EXIT = 130  # the operator cancelled before stop: nothing changed
HANGUP_EXIT = 129     # the terminal was lost before the run started: nothing changed
_STEPS = ("step_find", "step_policy", "step_approval", "step_checks", "step_backup", "step_access", "step_plan",
          "step_run")


class _Cancelled(Exception):
    """The operator answered "no" to a question the upgrade needs."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def cmd_guide(args: argparse.Namespace) -> int:
    guide = _Guide(args)
    guide.interrupts.install()
    try:
        return guide.main()
    except _Cancelled as e:
        guide.say(e.key)
        guide.record("guide_cancelled", reason=e.key)
        return CANCELLED_EXIT
    except KeyboardInterrupt:
        if guide.run_code is not None:  # after the run (while explaining it): its outcome stands
            return guide.run_code
        guide.c.print()
        guide.say("interrupted_before")
        guide.record("guide_cancelled", reason="Ctrl-C before the run started")
        return CANCELLED_EXIT
    except TerminalLost:
        guide.record("guide_cancelled", reason="the terminal was lost before the run started")
        return HANGUP_EXIT
    finally:
        guide.offer_revoke()
        guide.interrupts.restore()


class _Guide:
    def __init__(self, args: argparse.Namespace) -> None:
        from ..clock import SystemClock

        self.args = args
        self.t = Messages(language(args.lang))
        self.c = console()
        self.clock = SystemClock()
        self.interrupts = Interrupts()
        self.grant: dict[str, Any] | None = None
        self.step_no = 0
        self.run_code: int | None = None  # set once the run has ended
        self.variables: dict[str, str] = _variables(args.var)  # the install's playbook variables

    # -- output and questions ----------------------------------------------------------------

    def say(self, msg: str, **fields: Any) -> None:
        try:
            self.c.print(self.t(msg, **fields), soft_wrap=True)
        except OSError:
            pass  # the terminal is gone; the journal and the audit log keep the record

    def step(self, key: str) -> None:
        self.step_no += 1
        self.c.print()
        self.say("step", n=self.step_no, total=len(_STEPS), title=self.t(key))

    def ask(self, question: str, default: bool, scripted: bool | None = None) -> bool:
        """A yes/no question. With --yes, ``scripted`` answers (None: the default); at end of input the
        default (the safe answer)."""
        if self.args.yes:
            answer = default if scripted is None else scripted
            self.say("answer_auto", question=question, answer=self.t("yes_word" if answer else "no_word"))
            return answer
        from rich.markup import escape

        suffix = escape(self.t("yn_default_yes" if default else "yn_default_no"))
        while True:
            try:
                reply = self.c.input(f"{question} {suffix} ").strip().lower()
            except EOFError:
                return default
            if not reply:
                return default
            if reply in ("y", "yes", "是", "是的", "好"):
                return True
            if reply in ("n", "no", "否", "不", "不是"):
                return False
            self.say("yn_invalid")

    def prompt(self, question: str, default: str = "") -> str:
        from rich.markup import escape

        shown = f"{question} \\[{escape(default)}]: " if default else f"{question}: "
        try:
            reply = self.c.input(shown).strip()
        except EOFError:
            return default
        return reply or default

    def record(self, event: str, **data: Any) -> None:
        """An audit event of the guide itself (best effort: a refusal or cancellation must still be shown)."""
        from ..recorder import Recorder, operator_identity

        try:
            policy = load_policy_or_fail(policy_path(self.args))
            Recorder(self.args.home, operator_identity(self.args.home, policy, need_key=False),
                     self.clock).event(event, **data)
        except UpgraderError:
            pass

    # -- the steps ---------------------------------------------------------------------------

    def main(self) -> int:
        args = self.args
        self.say("title")
        self.say("intro")
        if args.yes:
            self.say("yes_mode")
        plan, plan_file = self.given_plan()
        self.step("step_find")
        if plan is None:
            host, playbook = self.find_host()
            facts = self.read_facts(host, playbook.render({"install_dir": host.install_dir, "host": host.name,
                                                           **host.vars, "target_version": "unknown",
                                                           "current_version": "unknown"}))
            self.say("installed", product=host.product, version=facts.get("version") or "?", dir=host.install_dir,
                     playbook=playbook.name)
            self.step("step_policy")
            plan, plan_file = self.make_plan(host)
        else:
            h = plan.hosts[0]
            if self.args.inventory:  # the install's variables (ports for the inspection)
                self._from_inventory(self.variables)
            self.say("plan_given", file=plan_file, digest=plan.digest[:16], created=plan.data.get("created"),
                     requester=(plan.data.get("requester") or {}).get("user"))
            from .upgrade import host_from_plan

            facts = self.read_facts(host_from_plan(h), h["playbook"]["spec"])
            self.say("installed", product=h["product"], version=facts.get("version") or "?", dir=h["install_dir"],
                     playbook=h["playbook"]["name"])
            if h["current"] is not None and facts.get("version") != h["current"]:
                raise InputError(self.t("stale", version=facts.get("version"), planned=h["current"]),
                                 path=str(plan_file), hint=self.t("stale_hint"))
            self.step("step_policy")
        self.explain_decision(plan)
        self.step("step_approval")
        checked = self.check_approval(plan, plan_file)
        self.step("step_checks")
        self.show_checks(plan)
        self.inspect(plan.hosts[0])
        self.step("step_backup")
        self.say("backup_note", dir=plan.hosts[0]["install_dir"])
        if not self.ask(self.t("ask_backup"), default=False, scripted=True):
            raise _Cancelled("backup_no")
        self.step("step_access")
        self.offer_access()
        self.step("step_plan")
        self.show_plan(plan)
        h = plan.hosts[0]
        if not self.ask(self.t("ask_stop", product=h["product"], target=h["target"]), default=False, scripted=True):
            raise _Cancelled("stop_no")
        self.step("step_run")
        return self.run(plan, checked)

    def given_plan(self) -> tuple[Any, Path | None]:
        """The plan the engineer sent (--plan), or the one the guide made earlier that --approval names."""
        from ..plan import load_plan

        args = self.args
        if args.plan:
            plan = load_plan(args.plan)
            path = Path(args.plan)
        elif args.approval:
            from ..approval import read_approval

            try:
                digest = read_approval(args.approval).statement.plan
            except ApprovalRefused as e:
                self.say("approval_refused", reason=str(e))
                raise
            path = _plans_dir(args.home) / f"{digest}.json"
            if not path.is_file():
                raise ApprovalRefused(self.t("approval_other_plan", file=args.approval, digest=digest[:16],
                                             dir=_plans_dir(args.home)), hint=self.t("approval_other_plan_hint"))
            plan = load_plan(path)
        else:
            if not (args.package or (args.catalog and args.to)):
                raise InputError(self.t("missing_target"), hint=self.t("missing_target_hint"))
            return None, None
        hosts = plan.hosts
        if len(hosts) != 1 or hosts[0]["address"] != "local":
            raise InputError("the plan is not for this host alone (the guide runs a plan of one host whose address "
                             "is 'local')", path=str(path), hint="use upgrader run for a fleet plan")
        if args.package:
            from ..package import file_digest

            if file_digest(args.package) != (hosts[0].get("package") or {}).get("sha256"):
                raise InputError("the plan installs another package (sha256 differs)", path=str(args.package),
                                 hint=f"give the package the plan {path} was made for, or leave out --package")
        if args.install_dir and Path(args.install_dir).resolve() != Path(hosts[0]["install_dir"]).resolve():
            raise InputError(f"the plan is for {hosts[0]['install_dir']}, not {args.install_dir}", path=str(path),
                             hint="leave out --install-dir, or make a new plan for that directory")
        return plan, path

    def find_host(self) -> tuple[Any, Any]:
        """The install to upgrade: from --inventory, --install-dir, the usual places, or the operator."""
        from ..discovery import find_installs, identify, search_patterns, shipped_playbooks
        from ..inventory import Host

        args = self.args
        variables = _variables(args.var)
        if args.inventory:
            return self._from_inventory(variables)
        playbooks = [self._playbook(args.playbook)] if args.playbook else shipped_playbooks()
        if args.install_dir:
            directory = Path(args.install_dir).resolve()
        else:
            patterns = search_patterns()
            self.say("searching", places=" ".join(patterns))
            found = find_installs(playbooks, patterns)
            directory = self._choose(found)
        playbook = identify(directory, playbooks)
        if playbook is None:
            raise InputError(self.t("not_install", dir=directory), path=str(directory),
                             hint="give the product's install directory with --install-dir (and --playbook P "
                                  "for a product upgrader does not ship a playbook for)")
        return Host(name=_host_name(), address="local", install_dir=str(directory), product=playbook.product,
                    playbook=str(playbook.path), vars=variables), playbook

    def _choose(self, found: list[Any]) -> Path:
        if len(found) == 1:
            self.say("found_one", product=found[0].playbook.product, dir=found[0].install_dir)
            if self.ask(self.t("ask_use_found"), default=True, scripted=True):
                return Path(found[0].install_dir)
            raise _Cancelled("stop_no")
        if self.args.yes:
            raise InputError(self.t("yes_needs_dir"), hint="upgrader guide --install-dir DIR ...")
        if found:
            self.say("found_many")
            for i, f in enumerate(found, 1):
                self.c.print(f"  {i}. {f.playbook.product}  {f.install_dir}")
            while True:
                reply = self.prompt(self.t("ask_choose"))
                if not reply:
                    raise _Cancelled("stop_no")
                if reply.isdigit() and 1 <= int(reply) <= len(found):
                    return Path(found[int(reply) - 1].install_dir)
        self.say("found_none")
        reply = self.prompt(self.t("ask_dir"))
        if not reply:
            raise _Cancelled("stop_no")
        return Path(reply).expanduser().resolve()

    def _playbook(self, name: str) -> Any:
        from ..playbook import find_playbook, load_playbook

        return load_playbook(find_playbook(name))

    def _from_inventory(self, variables: dict[str, str]) -> tuple[Any, Any]:
        from dataclasses import replace

        from ..inventory import load_inventory
        from ..playbook import find_playbook, load_playbook

        inv = load_inventory(self.args.inventory)
        hosts = [h for h in inv.hosts.values() if h.is_local]
        if self.args.install_dir:
            wanted = Path(self.args.install_dir).resolve()
            hosts = [h for h in hosts if Path(h.install_dir).resolve() == wanted]
        if len(hosts) != 1:
            raise InputError(f"the guide needs exactly one host with address 'local' here, found {len(hosts)}",
                             path=str(inv.path), hint="give --install-dir to choose one")
        host = replace(hosts[0], vars={**hosts[0].vars, **variables})
        self.variables = {str(k): str(v) for k, v in host.vars.items()}
        playbook = load_playbook(find_playbook(host.playbook, [inv.path.parent / "playbooks", inv.path.parent]))
        return replace(host, playbook=str(playbook.path)), playbook

    def read_facts(self, host: Any, spec: dict[str, Any]) -> dict[str, Any]:
        from ..planner import host_facts
        from ..transport import AgentClient
        from ..transport.local import LocalTransport

        transport = LocalTransport("local")
        agent = AgentClient(transport)
        try:
            return host_facts(agent, host, spec, packages=[], check_drift=False)
        finally:
            agent.close()
            transport.close()

    def make_plan(self, host: Any) -> tuple[Any, Path]:
        from ..inventory import Inventory
        from ..package import file_digest, read_meta
        from ..planner import make_plan, requester_identity
        from ..service_window import plan_window
        from ..transport import connect
        from .upgrade import record_plan, trusted_catalog

        args = self.args
        policy = load_policy_or_fail(policy_path(args))
        target = args.to
        catalog_path = args.catalog
        if args.package:
            pkg = Path(args.package)
            meta = read_meta(pkg)
            if target and target != meta.version:
                raise InputError(f"the package holds {meta.version}, not {target}", path=str(pkg),
                                 hint="leave out --to, or give the package of that version")
            target = meta.version
            catalog_path = catalog_path or str(pkg.resolve().parent)
        now = self.clock.now()
        catalog, signed_by = trusted_catalog(catalog_path, policy, args.home, now)
        if args.package:
            entry = catalog.find(meta.product, meta.version)
            if entry is None or file_digest(args.package) != entry.sha256:
                raise ApprovalRefused(f"the package is not the one the signed catalog {catalog.path} lists for "
                                      f"{meta.product} {meta.version} (sha256 differs or no entry)",
                                      hint="use the package from the vendor's signed catalog")
        inventory = Inventory(path=_plans_dir(args.home) / "inventory", hosts={host.name: host}, groups={})
        plan = make_plan(inventory, [host], target=str(target), catalog=catalog, policy=policy, clock=self.clock,
                         connect=connect, requester=requester_identity(None), window=plan_window(policy, now))
        out = _plans_dir(args.home) / f"{plan.digest}.json"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            from ..journal import write_json_atomic

            write_json_atomic(out, plan.data)
        except OSError as e:
            raise InputError(f"cannot write the plan: {e.strerror}", path=str(out)) from e
        from ..plan import load_plan

        plan = load_plan(out)  # what the engineer will approve is exactly this file
        record_plan(args, policy, self.clock, plan, out, signed_by)
        return plan, out

    def explain_decision(self, plan: Any) -> None:
        h = plan.hosts[0]
        pkg = h.get("package")
        if pkg:
            self.say("package", product=pkg["product"], version=pkg["version"],
                     kind=self.t("kind_patch" if pkg["kind"] == "patch" else "kind_full"), sha=pkg["sha256"][:16],
                     serial=plan.data["catalog"].get("serial"))
        decision = h["decision"]
        self.say("decision_allowed" if h["allowed"] else "decision_refused", current=h["current"],
                 target=h["target"])
        for r in decision["rules"]:
            self._rule_line(r["rule"], r["status"], r["reason"])
        for ch in h.get("checks", []):
            if ch["status"] == "fail":
                self._rule_line(ch["check"], ch["status"], ch["reason"])
        if not h["allowed"]:
            self.say("refused_end")
            why = [r["reason"] for r in decision["rules"] if r["status"] == "fail"]
            why += [ch["reason"] for ch in h.get("checks", []) if ch["status"] == "fail"]
            raise PolicyRefused(f"{h['current']} -> {h['target']} refused: " + "; ".join(why))

    def _rule_line(self, rule: str, status: str, reason: str) -> None:
        from rich.markup import escape

        marks = {"pass": "[green]✔[/green]", "fail": "[red]✘[/red]", "skip": "[dim]·[/dim]", "warn": "[yellow]![/yellow]"}
        name, meaning = self.t.rule(rule)
        status_word = self.t(f"status_{status}") if status in ("pass", "fail", "skip", "warn") else status
        self.say("rule_line", mark=marks.get(status, "?"), name=f"{name} ({status_word})", meaning=escape(meaning))
        self.say("rule_detail", reason=escape(reason))

    def check_approval(self, plan: Any, plan_file: Path | None) -> Any:
        from .upgrade import check_run, record_refusal, plan_policy

        args = self.args
        policy = plan_policy(plan)
        self._show_window(policy)
        if not args.approval:
            again = f"upgrader guide --plan {plan_file} --approval APPROVAL"
            self.say("no_approval", plan=plan_file, again=again)
            self.record("guide_plan_waits_for_approval", plan=plan.digest, file=str(plan_file))
            raise ApprovalRefused(f"no approval given: send {plan_file} to your engineer for approval")
        run_args = self._run_args()
        try:
            checked = check_run(run_args, plan, self.clock)
        except (PolicyRefused, ApprovalRefused) as e:
            record_refusal(run_args, plan, self.clock, e)
            from rich.markup import escape

            self.say("approval_refused", reason=escape(str(e)))
            raise
        for a in checked.approvals:
            self.say("approval_ok", approver=a.statement.approver, key=a.signature.fingerprint,
                     expires=a.statement.expires.isoformat(timespec="minutes"),
                     after=self.t("after_hours") if a.statement.after_hours else "")
        return checked

    def _show_window(self, policy: Any) -> None:
        from ..service_window import plan_window

        w = plan_window(policy, self.clock.now())
        key = {True: "window_inside", False: "window_outside"}.get(w.get("inside"), "window_unknown")
        self.say(key, reason=w.get("reason", ""))
        if w.get("inside") is not True:
            rule = {"allow": "window_rule_allow", "after_hours_approval": "window_rule_after",
                    "refuse": "window_rule_refuse"}.get(str((w.get("policy") or {}).get("outside")))
            if rule:
                self.say(rule)

    def _run_args(self) -> argparse.Namespace:
        a = argparse.Namespace(**vars(self.args))
        a.approval = [self.args.approval] if self.args.approval else []
        return a

    def show_checks(self, plan: Any) -> None:
        from rich.markup import escape

        h = plan.hosts[0]
        self.say("still_current", version=h["current"])
        marks = {"pass": "[green]✔[/green]", "fail": "[red]✘[/red]", "warn": "[yellow]![/yellow]"}
        for ch in h.get("checks", []):
            name, _ = self.t.rule(ch["check"])
            self.say("check_line", mark=marks.get(ch["status"], "·"), name=name, reason=escape(ch["reason"]))

    def inspect(self, h: dict[str, Any]) -> None:
        """The health inspection of this install (``upgrader.inspection``); it informs, it does not decide."""
        # INSPECTION CALL SITE: the one place the guide runs the health inspection (upgrader/inspection.py).
        try:
            from ..inspection import inspect_host
        except ImportError:  # an upgrader without the inspection module
            self.say("inspection_none")
            return
        from rich.markup import escape

        from ..playbook import load_playbook
        from ..transport.local import LocalTransport

        transport = LocalTransport("local")
        try:
            report = inspect_host(transport, load_playbook(h["playbook"]["path"]), install_dir=h["install_dir"],
                                  name=h["name"], variables=self.variables, state_dir=h.get("state_dir"))
        except UpgraderError as e:
            self.say("inspection_failed", error=escape(str(e)))
            return
        finally:
            transport.close()
        found = list(report.get("warnings") or [])
        self.say("inspection_ok", summary=self.t("inspection_count", n=len(found)) if found
                 else self.t("inspection_clean"))
        for w in found:
            self.say("inspection_warn", text=escape(str(w.get("message", w) if isinstance(w, dict) else w)))

    def offer_access(self) -> None:
        if not self.ask(self.t("ask_access"), default=False, scripted=False):
            return
        from rich.markup import escape

        from .access import grant

        policy = load_policy_or_fail(policy_path(self.args))
        key = self.prompt(self.t("ask_key"))
        if not key:
            return
        hours = self.prompt(self.t("ask_hours"), f"{policy.access_default_hours:g}")
        from_ = self.prompt(self.t("ask_from"))
        try:
            hours_value = float(hours)
        except ValueError:
            hours_value = -1.0  # refused by the grant with the policy's limits in the message
        grant_args = argparse.Namespace(home=self.args.home, policy=self.args.policy, key=key, hours=hours_value,
                                        from_patterns=from_ or None, user=None, reason="upgrader guide",
                                        inventory=None, hosts=None, json=False)
        try:
            results, _ = grant(grant_args)
        except UpgraderError as e:
            self.say("access_failed", error=escape(str(e)))
            return
        r = results[0]
        g = r["grant"]
        self.grant = {"id": g["id"], "expires": g["expires"], "file": r["file"]}
        self.say("access_granted", id=g["id"], user=escape(r["user"]), fp=g["fingerprint"], expires=g["expires"],
                 where=escape(g["from"] or self.t("access_any")))

    def offer_revoke(self) -> None:
        """At the end (whatever the end): offer to close the access granted earlier (default: close it)."""
        if self.grant is None:
            return
        g, self.grant = self.grant, None
        try:
            close = True if self.interrupts.hung_up else self.ask(self.t("ask_revoke", id=g["id"]), default=True)
        except (KeyboardInterrupt, TerminalLost):
            close = False
        if not close:
            self.say("access_kept", id=g["id"], expires=g["expires"])
            return
        from .access import revoke

        try:
            results, code, _ = revoke(argparse.Namespace(home=self.args.home, policy=self.args.policy,
                                                         grant_id=g["id"], all=False, expired=False, user=None,
                                                         inventory=None, hosts=None, json=False))
        except UpgraderError as e:
            self.say("access_failed", error=str(e))
            return
        if code == 0:
            self.say("access_revoked", id=g["id"], file=results[0]["file"])

    def show_plan(self, plan: Any) -> None:
        h = plan.hosts[0]
        pkg = h.get("package") or {}
        self.say("plan_line", host=h["name"], current=h["current"], target=h["target"],
                 kind=self.t("kind_patch" if pkg.get("kind") == "patch" else "kind_full"))
        for i, p in enumerate(h["phases"], 1):
            self.say("phase_line", n=i, name=self.t.phase(p["phase"]), does=self.t.does(p["phase"]) or p["does"])
        self.say("downtime_note")

    # -- the run -----------------------------------------------------------------------------

    def run(self, plan: Any, checked: Any) -> int:
        from ..engine import CANCELLED, Engine
        from .upgrade import finish_run, start_run

        run_args = self._run_args()
        started = start_run(run_args, plan, checked, self.clock)
        started.recorder.event("guide_run", outcome="started", lang=self.t.lang, scripted=bool(self.args.yes))
        self.say("run_started", run=started.run_id, journal=started.journal.dir)
        engine = Engine(journal=started.journal, clock=self.clock,
                        observers=[started.recorder, _Progress(self)], forks=1, controller=started.controller,
                        manual_changes=str(plan.data["policy"].get("manual_changes", "warn")),
                        approvals=checked.approval_digests, cancel=self.interrupts.cancel)
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["outcome"] = engine.run(checked.targets)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread below
                box["error"] = e

        with self.interrupts.running():
            worker = threading.Thread(target=work, name="guide-run")
            worker.start()
            while worker.is_alive():
                worker.join(0.2)
                for note in self.interrupts.notes():
                    self.say(note)
            for note in self.interrupts.notes():
                self.say(note)
            if "error" in box:
                raise box["error"]
            cancelled = self.interrupts.cancel.is_set()
            if cancelled or self.interrupts.hung_up:
                started.recorder.event("guide_interrupted", outcome="cancelled" if cancelled else "continued",
                                       presses=self.interrupts.presses, terminal_lost=self.interrupts.hung_up)
            result = finish_run(run_args, checked, started, box["outcome"], self.clock)
        self.run_code = int(result["exit_code"])
        if cancelled and result["hosts"][0]["outcome"] in ("unchanged", "not_started"):
            self.run_code = CANCELLED_EXIT
        return self.explain(result, started, checked, cancelled, CANCELLED)

    def explain(self, result: dict[str, Any], started: Any, checked: Any, cancelled: bool, cause_cancelled: str) -> int:
        from rich.markup import escape

        from ..recorder import audit_path

        self.c.print()
        h = result["hosts"][0]
        outcome = h["outcome"]
        cause = escape(str(h.get("rollback_cause") or h.get("error") or ""))
        code = int(result["exit_code"])
        if outcome == "committed":
            if cancelled:
                self.say("done_after_cancel")
            downtime = f"{h['downtime']:.1f}s" if h.get("downtime") is not None else "-"
            self.say("done_ok", product=checked.targets[0].plan["product"], version=h["version"], downtime=downtime)
            self.say("done_ok_next", run=started.run_id)
        elif cancelled and outcome in ("unchanged", "not_started"):
            self.say("cancelled_nothing", lock=self.t("lock_released"))
            code = CANCELLED_EXIT
        elif outcome == "rolled_back" and h.get("rollback_cause") == cause_cancelled:
            self.say("cancelled_rolled_back", version=h["version"])
        elif outcome == "rolled_back":
            self.say("failed_rolled_back", cause=cause, version=h["version"])
        elif outcome == "unchanged":
            self.say("failed_unchanged", cause=cause)
        elif outcome == "stale" or outcome == "refused":
            self.say("stale_plan", cause=cause)
        else:
            self.say("needs_person", cause=cause)
        if outcome != "committed" and not (cancelled and code == CANCELLED_EXIT):
            bundle = result.get("diagnostics") or (result["hosts"][0].get("diagnostics"))
            self.say("send_support", journal=started.journal.dir, run=started.run_id,
                     audit=audit_path(self.args.home),
                     diag=self.t("diagnostics", bundle=bundle) if bundle else "")
            approvers = ", ".join(a.statement.approver for a in checked.approvals) or "-"
            self.say("contact", approver=approvers)
        cp = result.get("checkpoint")
        if cp:
            self.say("checkpoint", line=cp["line"], seq=cp["seq"], head=cp["head"])
        for line in _failure_lines(result):
            try:
                print(line, file=sys.stderr)
            except OSError:
                pass
        return code


class _Progress:
    """The engine's events as the guide's progress lines; a dead terminal never reaches the engine."""

    def __init__(self, guide: _Guide) -> None:
        self.g = guide
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        from rich.markup import escape

        try:
            with self._lock:
                kind = event["event"]
                t = self.g.t
                if kind == "phase_started":
                    self.g.say("phase_started", name=t.phase(event["phase"]))
                elif kind == "phase_finished":
                    self.g.say("phase_ok" if event["status"] == "ok" else "phase_failed", name=t.phase(event["phase"]),
                               seconds=float(event.get("seconds") or 0), detail=escape(str(event.get("detail") or "")))
                elif kind == "rollback_started":
                    self.g.say("rolling_back", cause=escape(str(event.get("cause", ""))))
        except Exception:  # noqa: BLE001 - showing progress must never break the run
            pass


def _failure_lines(result: dict[str, Any]) -> list[str]:
    words = {"rolled_back": "failed and was rolled back", "unchanged": "not upgraded, nothing changed",
             "needs_person": "NEEDS A PERSON", "not_started": "was not started", "refused": "was refused",
             "stale": "was not touched: the plan is out of date"}
    return [f"upgrader: {h['host']}: {words[h['outcome']]}: {h.get('error') or ''}".rstrip(": ")
            for h in result["hosts"] if h["outcome"] in words]


def _plans_dir(home: Path) -> Path:
    return Path(home) / "guide" / "plans"


def _host_name() -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63].strip("-.")
    return name or "local"


def _variables(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InputError(f"--var {pair!r}: expected NAME=VALUE, e.g. --var http_port=8088")
        out[name] = value
    return out
