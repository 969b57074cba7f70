"""``upgrader guide``: the customer operator's guided upgrade of the middleware on this host.

Plan and approval: an approval signs one plan's digest, and a plan records the host's facts at
the time it was made, so the guide never approves anything itself and never runs a plan nobody
approved. Either the engineer sends a plan and its approval (``--plan P --approval A``), or the
guide makes the plan here (``--package PKG`` or ``--catalog CAT --to VERSION``), keeps it as
``HOME/guide/plans/<digest>.json`` and stops (exit 4) asking the operator to send that file to the
engineer; run again with the approval the engineer sends back, and the guide finds the plan by
the digest the approval names. The run itself is ``upgrader run``'s: the same checks
(``check_run``), journal, audit events and result (``start_run``, ``finish_run``).

The questions are here; the run, its progress and its explanation are in ``guide_run``. Errors the
guide raises itself carry the English text (logs, scripts) and the operator's language (shown).

Exit codes: PRODUCT.md's (0 upgraded, 1 failed or cancelled after stop and rolled back, 2 bad
input, 3 refused by the policy, 4 approval missing or invalid or outside the service window,
5 needs a person), plus 130 when the operator cancelled (Ctrl-C or a "no") before the service was
stopped, and 129 when the terminal was lost before the run started: in both nothing changed.

Engineer access granted here is never left open by accident: at the end it is offered for closing
(default: close), and closed without asking on Ctrl-C at that question or on a lost terminal.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from pathlib import Path
from typing import Any

from rich.markup import escape

from ...core.errors import ApprovalRefused, InputError, PolicyRefused, UpgraderError
from ..guide_messages import _MARKS, Markup, Messages
from ...core.interrupts import Interrupts, TerminalLost, pause_for_test
from ...core.language import resolve_lang
from ._common import console, context_of, load_policy_or_fail, parse_variables, policy_path
from .guide_access import ask_grant_answers
from .guide_run import CANCELLED_EXIT, HANGUP_EXIT, follow_up, run_guided

__all__ = ["CANCELLED_EXIT", "HANGUP_EXIT", "cmd_guide"]

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
        if guide.grant is not None and e.key == "stop_no":  # its line is still there until offer_revoke
            guide.say("stop_no_grant", id=guide.grant["id"])
        else:
            guide.say(e.key)
        guide.record("guide_cancelled", reason=e.key)
        return CANCELLED_EXIT
    except KeyboardInterrupt:
        if guide.run_code is not None:  # after the run (while explaining it): its outcome stands
            return guide.run_code
        guide.c.print()
        if guide.grant is not None:  # its line is still in authorized_keys until offer_revoke closes it
            guide.say("interrupted_with_grant", id=guide.grant["id"])
        else:
            guide.say("interrupted_before")
        guide.record("guide_cancelled", reason="Ctrl-C before the run started")
        return CANCELLED_EXIT
    except TerminalLost:
        guide.record("guide_cancelled", reason="the terminal was lost before the run started")
        return HANGUP_EXIT
    except UpgraderError as e:
        guide.show_error(e)
        raise
    finally:
        guide.offer_revoke()
        guide.interrupts.restore()


class _Guide:
    def __init__(self, args: argparse.Namespace) -> None:
        from ._common import clock_of

        self.args = args
        self.t = Messages(resolve_lang(args.lang))
        self.c = console()
        self.clock = clock_of(args)
        self.interrupts = Interrupts()
        self.grant: dict[str, Any] | None = None
        self.step_no = 0
        self.run_code: int | None = None  # set once the run has ended
        self.variables: dict[str, str] = {}  # the install's playbook variables
        self.backup: dict[str, Any] | None = None  # the operator's answer about their business-data backup
        self.zone = "Asia/Shanghai"  # the policy's time zone: times are shown in it
        self.input_ended = False  # the operator's input reached its end (no more answers)

    def when(self, at: Any) -> str:
        """A time as the operator reads it: in the policy's zone, the zone named."""
        from ...core.shown_time import shown_time

        return shown_time(at, self.zone, self.t.lang)

    def words(self, reason: Any) -> str:
        """A reason another module wrote in English, in the operator's language."""
        from ...core.reasons import translate

        return translate(str(reason), self.t.lang)

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
        self.interrupts.check_terminal()
        if self.args.yes:
            answer = default if scripted is None else scripted
            self.say("answer_auto", question=question, answer=self.t("yes_word" if answer else "no_word"))
            return answer
        suffix = escape(self.t.plain("yn_default_yes" if default else "yn_default_no"))
        while True:
            try:
                reply = self.c.input(f"{question} {suffix} ").strip().lower()
            except EOFError:
                reply = ""
            self.interrupts.check_terminal()  # a hang-up while asking reads as end of input: not an answer
            if not reply:
                return default
            if reply in ("y", "yes", "是", "是的", "好"):
                return True
            if reply in ("n", "no", "否", "不", "不是"):
                return False
            self.say("yn_invalid")

    def prompt(self, question: str, default: str = "") -> str:
        self.interrupts.check_terminal()
        shown = f"{question} \\[{escape(default)}]: " if default else f"{question}: "
        try:
            reply = self.c.input(shown).strip()
        except EOFError:
            reply = ""
            self.input_ended = True
        self.interrupts.check_terminal()
        return reply or default

    def error(self, cls: type[UpgraderError], key: str, hint: str | None = None, path: str | None = None,
              **fields: Any) -> UpgraderError:
        """An error of the guide's own: its message (logs, scripts) in English, the operator's language shown."""
        en = Messages("en")
        kwargs: dict[str, Any] = {"path": path} if path is not None else {}
        err = cls(en.plain(key, **fields), hint=en.plain(hint, **fields) if hint else None, **kwargs)
        err.localized = (self.t(key, **fields), self.t(hint, **fields) if hint else None, path)  # type: ignore[attr-defined]
        return err

    def show_error(self, e: UpgraderError) -> None:
        """An error in the operator's language, when it is not English (the English line follows on stderr)."""
        localized = getattr(e, "localized", None)
        if self.t.lang == "en" or getattr(e, "shown", False):
            return
        if localized is None:  # an error of another module: its words translated by their form
            from ...core.reasons import UNTRANSLATED, translate

            hint = translate(e.hint, self.t.lang) if e.hint else None
            localized = (self.words(e.message), None if hint is None or hint.startswith(UNTRANSLATED) else hint,
                         None)
        text, hint, path = localized
        self.say("error_shown", text=Markup(f"{escape(path)}: {text}") if path else text)
        if hint:
            self.say("error_hint", hint=hint)

    def record(self, event: str, **data: Any) -> None:
        """An audit event of the guide itself (best effort: a refusal or cancellation must still be shown)."""
        from ...core.recorder import Recorder, operator_identity

        try:
            policy = load_policy_or_fail(policy_path(self.args))
            Recorder(self.args.home, operator_identity(self.args.home, policy, need_key=False),
                     self.clock).event(event, **data)
        except UpgraderError:
            pass

    # -- the steps ---------------------------------------------------------------------------

    def main(self) -> int:
        args = self.args
        self.variables = self._variables(args.var)
        self.say("title")
        self.say("intro")
        if args.yes:
            self.say("yes_mode")
        self._policy_zone()
        plan, plan_file = self.given_plan()
        self.step("step_find")
        if plan is None:
            host, playbook = self.find_host()
            facts = self.read_facts(host, playbook.render({"install_dir": host.install_dir, "host": host.name,
                                                           **host.vars, "target_version": "unknown",
                                                           "current_version": "unknown"}))
            self.say("installed", product=host.product, version=facts.get("version") or "?", dir=host.install_dir,
                     playbook=playbook.name)
            self.refuse_if_locked(facts)
            self.step("step_policy")
            plan, plan_file = self.make_plan(host)
        else:
            h = plan.hosts[0]
            if self.args.inventory:  # the install's variables (ports for the inspection)
                self._from_inventory(self.variables)
            self.say("plan_given", file=plan_file, digest=plan.digest[:16], created=self.when(plan.data.get("created")),
                     requester=(plan.data.get("requester") or {}).get("user"))
            from ...fleet.inventory import host_from_plan

            facts = self.read_facts(host_from_plan(h), h["playbook"]["spec"])
            self.say("installed", product=h["product"], version=facts.get("version") or "?", dir=h["install_dir"],
                     playbook=h["playbook"]["name"])
            self.refuse_if_locked(facts)
            if h["current"] is not None and facts.get("version") != h["current"]:
                raise self.error(InputError, "stale", "stale_hint", path=str(plan_file), version=facts.get("version"),
                                 planned=h["current"])
            self.step("step_policy")
        self.explain_decision(plan)
        self.step("step_approval")
        self.audit_key()
        checked = self.check_approval(plan, plan_file)
        self.step("step_checks")
        self.show_checks(plan)
        self.prove_probes(plan)
        self.inspect(plan.hosts[0])
        self.step("step_backup")
        self.say("backup_note", dir=plan.hosts[0]["install_dir"])
        backed_up = self.ask(self.t("ask_backup"), default=False, scripted=True)
        self.backup = {"answer": "yes" if backed_up else "no", "answered_at": self.clock.now().isoformat(),
                       "scripted": bool(args.yes)}
        self.record("guide_backup_confirmation", outcome="confirmed" if backed_up else "declined", plan=plan.digest,
                    **self.backup)
        if not backed_up:
            raise _Cancelled("backup_no")
        self.step("step_access")
        self.offer_access()
        self.step("step_plan")
        self.show_plan(plan)
        h = plan.hosts[0]
        if not self.ask(self.t("ask_stop", product=h["product"], target=h["target"]), default=False, scripted=True):
            raise _Cancelled("stop_no")
        self.step("step_run")
        return run_guided(self, plan, checked, self._run_args(), self.backup)

    def given_plan(self) -> tuple[Any, Path | None]:
        """The plan the engineer sent (--plan), or the one the guide made earlier that --approval names."""
        from ...core.plan import load_plan

        args = self.args
        if args.plan:
            plan = load_plan(args.plan)
            path = Path(args.plan)
        elif args.approval:
            from ...trust.approval import read_approval

            try:
                digest = read_approval(args.approval).statement.plan
            except ApprovalRefused as e:
                self.say("approval_refused", reason=self.words(e.message))
                e.shown = True  # type: ignore[attr-defined]
                raise
            path = _plans_dir(args.home) / f"{digest}.json"
            if not path.is_file():
                raise self.error(ApprovalRefused, "approval_other_plan", "approval_other_plan_hint",
                                 file=args.approval, digest=digest[:16], dir=_plans_dir(args.home))
            plan = load_plan(path)
        else:
            if not (args.package or (args.catalog and args.to)):
                raise self.error(InputError, "missing_target", "missing_target_hint")
            return None, None
        hosts = plan.hosts
        if len(hosts) != 1 or hosts[0]["address"] != "local":
            raise self.error(InputError, "plan_not_local", "plan_not_local_hint", path=str(path))
        if args.package:
            from ...trust.package import file_digest

            if file_digest(args.package) != (hosts[0].get("package") or {}).get("sha256"):
                raise self.error(InputError, "plan_other_package", "plan_other_package_hint", path=str(args.package),
                                 plan=path)
        if args.install_dir and Path(args.install_dir).resolve() != Path(hosts[0]["install_dir"]).resolve():
            raise self.error(InputError, "plan_other_dir", "plan_other_dir_hint", path=str(path),
                             planned=hosts[0]["install_dir"], dir=args.install_dir)
        return plan, path

    def find_host(self) -> tuple[Any, Any]:
        """The install to upgrade: from --inventory, --install-dir, the usual places, or the operator."""
        from ...core.discovery import (
            find_installs,
            identify,
            search_patterns,
            shipped_playbooks,
        )
        from ...fleet.inventory import Host

        args = self.args
        variables = dict(self.variables)
        if args.inventory:
            return self._from_inventory(variables)
        from ...core.playbook import playbook_roots

        roots = playbook_roots(args.home)  # the operator's playbooks first, then the shipped ones
        playbooks = [self._playbook(args.playbook)] if args.playbook else shipped_playbooks([d for d, _ in roots[:-1]])
        if args.install_dir:
            directory = Path(args.install_dir).resolve()
        else:
            patterns = search_patterns()
            self.say("searching", places=" ".join(patterns))
            found = find_installs(playbooks, patterns)
            directory = self._choose(found)
        playbook = identify(directory, playbooks)
        if playbook is None:
            raise self.error(InputError, "not_install", "not_install_hint", path=str(directory), dir=directory)
        where = "--playbook" if args.playbook else next(
            (label for d, label in roots if playbook.path.parent.resolve() == d.resolve()), "shipped playbooks")
        self.chosen_playbook = (playbook, where)  # make_plan records it; check_run compares the plan with it
        return Host(name=_host_name(), address="local", install_dir=str(directory), product=playbook.product,
                    playbook=playbook.path.stem, vars=variables), playbook

    def _choose(self, found: list[Any]) -> Path:
        if len(found) == 1:
            self.say("found_one", product=found[0].playbook.product, dir=found[0].install_dir)
            self.refuse_if_locked({"lock": _left_lock(Path(found[0].install_dir))})  # before its question
            if self.ask(self.t("ask_use_found"), default=True, scripted=True):
                return Path(found[0].install_dir)
            raise _Cancelled("stop_no")
        if self.args.yes:
            raise self.error(InputError, "yes_needs_dir", "yes_needs_dir_hint")
        if found:
            self.say("found_many")
            for i, f in enumerate(found, 1):
                self.c.print(f"  {i}. {escape(f.playbook.product)}  {escape(str(f.install_dir))}")
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
        from ...core.playbook import find_playbook, load_playbook

        return load_playbook(find_playbook(name))

    def _from_inventory(self, variables: dict[str, str]) -> tuple[Any, Any]:
        from dataclasses import replace

        from ...fleet.inventory import load_inventory

        inv = load_inventory(self.args.inventory)
        hosts = [h for h in inv.hosts.values() if h.is_local]
        if self.args.install_dir:
            wanted = Path(self.args.install_dir).resolve()
            hosts = [h for h in hosts if Path(h.install_dir).resolve() == wanted]
        if len(hosts) != 1:
            raise self.error(InputError, "inventory_not_one", "inventory_not_one_hint", path=str(inv.path), n=len(hosts))
        host = replace(hosts[0], vars={**hosts[0].vars, **variables})
        self.variables = {str(k): str(v) for k, v in host.vars.items()}
        from ...core.playbook import load_operator_playbook

        playbook, _ = load_operator_playbook(host.playbook, self.args.home, where=str(inv.path),
                                             key=f"hosts.{host.name}.playbook")
        return host, playbook

    def read_facts(self, host: Any, spec: dict[str, Any]) -> dict[str, Any]:
        from ...core.planner import host_facts
        from ...fleet.transport import AgentClient
        from ...fleet.transport.local import LocalTransport

        transport = LocalTransport("local")
        agent = AgentClient(transport)
        try:
            return host_facts(agent, host, spec, packages=[], check_drift=False)
        finally:
            agent.close()
            transport.close()

    def make_plan(self, host: Any) -> tuple[Any, Path]:
        from ...fleet.inventory import Inventory
        from ...trust.package import file_digest, read_meta
        from ...core.planner import make_plan, requester_identity
        from ...customer.service_window import plan_window
        from ...fleet.transport import connect
        from ...api import record_plan, trusted_catalog

        args = self.args
        from ...core.recorder import operator_identity

        policy = load_policy_or_fail(policy_path(args))
        me = operator_identity(args.home, policy, need_key=False, key_path=getattr(args, "audit_key", None))
        if me.key is None:
            self.audit_key()  # made, and listed by the policy's owner, before the plan records the policy
        else:
            self._require_listed(policy, me)
        policy = load_policy_or_fail(policy_path(args))
        target = args.to
        catalog_path = args.catalog
        if args.package:
            pkg = Path(args.package)
            meta = read_meta(pkg)
            if target and target != meta.version:
                raise self.error(InputError, "package_other_version", "package_other_version_hint", path=str(pkg),
                                 version=meta.version, target=target)
            target = meta.version
            catalog_path = catalog_path or str(pkg.resolve().parent)
        now = self.clock.now()
        catalog, signed_by = trusted_catalog(catalog_path, policy, args.home, now)
        if args.package:
            entry = catalog.find(meta.product, meta.version)
            if entry is None or file_digest(args.package) != entry.sha256:
                raise self.error(ApprovalRefused, "package_not_in_catalog", "package_not_in_catalog_hint",
                                 catalog=catalog.path, product=meta.product, version=meta.version)
        inventory = Inventory(path=_plans_dir(args.home) / "inventory", hosts={host.name: host}, groups={})
        from ...core.probe_proof import ProbeUnproven

        try:
            chosen = getattr(self, "chosen_playbook", None)
            plan = make_plan(inventory, [host], target=str(target), catalog=catalog, policy=policy, clock=self.clock,
                             connect=connect, requester=requester_identity(login_name()),
                             window=plan_window(policy, now),
                             signed_by=signed_by, home=args.home,
                             playbooks={host.playbook: chosen} if chosen is not None else None)
        except ProbeUnproven as e:
            self.show_unproven(e)
            raise
        plan = self._sign_plan(plan, policy)
        out = _plans_dir(args.home) / f"{plan.digest}.json"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            from ...core.journal import write_json_atomic

            write_json_atomic(out, plan.data)
        except OSError as e:
            raise self.error(InputError, "plan_write_failed", path=str(out), error=e.strerror) from e
        from ...core.plan import load_plan

        plan = load_plan(out)  # what the engineer will approve is exactly this file
        record_plan(context_of(args), policy, plan, out, signed_by)
        return plan, out

    def _sign_plan(self, plan: Any, policy: Any) -> Any:
        """The guide's plan is the operator's request: signed with the operator's key (the audit key, made first
        when there is none), so that the engineer who approves it is not its requester."""
        from ...core.plan import Plan, plan_digest
        from ...core.recorder import operator_identity
        from ...trust.requester import sign_plan

        me = operator_identity(self.args.home, policy, key_path=getattr(self.args, "audit_key", None), need_key=False)
        if me.key is None:
            self.audit_key()
            me = operator_identity(self.args.home, policy, key_path=getattr(self.args, "audit_key", None))
        return Plan(sign_plan(plan.data, me.key, plan_digest))

    # -- preconditions checked before any question (guide_checks) ------------------------------

    def refuse_if_locked(self, facts: dict[str, Any]) -> None:
        """A lock left on the install: refused before any question, nothing used up (exit 5), with the way out."""
        from .guide_checks import refuse_if_locked

        refuse_if_locked(self, facts)

    def prove_probes(self, plan: Any) -> None:
        """The plan's health probes, once, on the running version (probe_proof); refused before stop (exit 2)."""
        from .guide_checks import prove_probes

        prove_probes(self, plan)

    def show_unproven(self, e: Any) -> None:
        from .guide_checks import show_unproven

        show_unproven(self, e)

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
            from ...api import refuse_refused

            self.say("refused_end")
            refuse_refused(plan)  # `upgrader run`'s refusal: each failed rule and check, named

    def _rule_line(self, rule: str, status: str, reason: str) -> None:
        name, meaning = self.t.rule(rule)
        status_word = self.t.plain(f"status_{status}") if status in ("pass", "fail", "skip", "warn") else status
        self.say("rule_line", mark=_MARKS.get(status, "?"), name=f"{name} ({status_word})", meaning=meaning)
        self.say("rule_detail", reason=self.words(reason))

    def check_approval(self, plan: Any, plan_file: Path | None) -> Any:
        from ...api import check_run, plan_policy

        args = self.args
        policy = plan_policy(context_of(args), plan.data)
        self._show_window(policy)
        if not args.approval:
            carried = [w for flag, value in (("--inventory", args.inventory), ("--policy", args.policy),
                                             ("--catalog", args.catalog), ("--lang", args.lang)) if value
                       for w in (flag, str(value))]
            carried += [w for pair in args.var or () for w in ("--var", pair)]
            again = follow_up(args, "guide", "--plan", str(plan_file), "--approval", "APPROVAL", *carried)
            from .guide_checks import _show_vars

            _show_vars(self, plan.hosts[0].get("vars_read") or {})  # what the plan's probes use, before it is sent
            self.say("no_approval", plan=plan_file, again=again)
            self.record("guide_plan_waits_for_approval", plan=plan.digest, file=str(plan_file))
            raise ApprovalRefused(f"no approval given: send {plan_file} to your engineer for approval")
        run_args = self._run_args()
        try:  # a refusal is recorded in the audit log by check_run
            checked = check_run(context_of(run_args), plan, run_args.approval,
                                catalog=Path(run_args.catalog) if run_args.catalog else None,
                                playbooks=run_args.given_playbooks, source=str(run_args.plan or "the plan"))
        except (PolicyRefused, ApprovalRefused) as e:
            self.say("approval_refused", reason=self.words(e.message))
            if isinstance(e, ApprovalRefused):
                self._untrusted_engineer(policy, run_args.approval)
            e.shown = True  # type: ignore[attr-defined]
            raise
        for a in checked.approvals:
            self.say("approval_ok", approver=a.statement.approver, key=a.signature.fingerprint,
                     expires=self.when(a.statement.expires),
                     after=self.t("after_hours") if a.statement.after_hours else "")
        return checked

    def _untrusted_engineer(self, policy: Any, approvals: list[str]) -> None:
        """An approval signed by a key the policy's allowed_signers do not list: the exact line its owner (the
        operator, never the guide: allowed_signers is a trust root) adds, and where. The refusal stays exit 4."""
        from ...trust.approval import NAMESPACE, read_approval
        from ...trust.keys import signer_line
        from ...trust.signers import load_allowed_signers
        from ...trust.sshsig import load_public_key_blob

        if not policy.allowed_signers:
            return
        where = policy.resolve_path(policy.allowed_signers)
        try:
            listed = {e.key_blob for e in load_allowed_signers(where).entries}
        except UpgraderError:
            listed = set()
        for path in approvals:
            try:
                a = read_approval(path)
                key = load_public_key_blob(a.signature.public_key)
            except (UpgraderError, ValueError):
                continue
            if a.signature.public_key in listed:
                continue
            name = a.statement.approver
            if not re.fullmatch(r"[A-Za-z0-9._@+-]+", name or ""):
                name = "ENGINEER@VENDOR"  # a pattern or an odd name is never a principal to list
            line = signer_line(name, key, NAMESPACE)
            self.say("approval_key_untrusted", file=str(where), line=line, fp=a.signature.fingerprint)
            self.record("guide_approval_key_untrusted", file=str(where), line=line, fingerprint=a.signature.fingerprint)

    def _show_window(self, policy: Any) -> None:
        from ...customer.service_window import plan_window

        w = plan_window(policy, self.clock.now())
        key = {True: "window_inside", False: "window_outside"}.get(w.get("inside"), "window_unknown")
        self.say(key, reason=self.words(w.get("reason", "")))
        if w.get("inside") is not True:
            rule = {"allow": "window_rule_allow", "after_hours_approval": "window_rule_after",
                    "refuse": "window_rule_refuse"}.get(str((w.get("policy") or {}).get("outside")))
            if rule:
                self.say(rule)

    def show_checks(self, plan: Any) -> None:
        h = plan.hosts[0]
        self.say("still_current", version=h["current"])
        for ch in h.get("checks", []):
            name, _ = self.t.rule(ch["check"])
            self.say("check_line", mark=_MARKS.get(ch["status"], "·"), name=name, reason=self.words(ch["reason"]))

    def inspect(self, h: dict[str, Any]) -> None:
        """The health inspection of this install (``upgrader.customer.inspection``); it informs, it does not decide."""
        # INSPECTION CALL SITE: the one place the guide runs the health inspection (upgrader/customer/inspection.py).
        try:
            from ...customer.inspection import inspect_host
        except ImportError:  # an upgrader without the inspection module
            self.say("inspection_none")
            return
        from ...fleet.transport.local import LocalTransport
        from ...core.playbook import load_operator_playbook

        transport = LocalTransport("local")
        try:
            name = str(h["playbook"]["name"])  # the operator's playbook of that name, never a path in the plan
            given = self._run_args().given_playbooks
            playbook = given[name] if name in given else load_operator_playbook(name, self.args.home)[0]
            report = inspect_host(transport, playbook, install_dir=h["install_dir"],
                                  name=h["name"], variables=self.variables, state_dir=h.get("state_dir"))
        except UpgraderError as e:
            self.say("inspection_failed", error=self.words(e.message))
            return
        finally:
            transport.close()
        found = list(report.get("warnings") or [])
        self.say("inspection_ok", summary=self.t("inspection_count", n=len(found)) if found
                 else self.t("inspection_clean"))
        for w in found:
            self.say("inspection_warn", text=self.words(w.get("message", w) if isinstance(w, dict) else w))

    def offer_access(self) -> None:
        if not self.ask(self.t("ask_access"), default=False, scripted=False):
            return
        from ...api import grant_access

        policy = load_policy_or_fail(policy_path(self.args))
        answers = ask_grant_answers(self, policy)  # each answer checked as it is given
        if answers is None:
            return
        reason = "upgrader guide" if answers.from_patterns else \
            "upgrader guide (any source address: chosen explicitly by the operator)"
        try:
            with self.interrupts.protected():  # the grant line and the guide's record of it, never one alone
                results = grant_access(context_of(self.args), key=Path(answers.key), hours=answers.hours,
                                       from_patterns=answers.from_patterns, reason=reason).hosts
                pause_for_test("access_granted", lambda: self.interrupts.hung_up)  # the line is written
                r = results[0]
                g = r["grant"]
                self.grant = {"id": g["id"], "expires": g["expires"], "file": r["file"]}
        except UpgraderError as e:
            self.say("access_failed", error=self.words(e))
            return
        self.say("access_granted", id=g["id"], user=r["user"], fp=g["fingerprint"], expires=self.when(g["expires"]),
                 where=g["from"] or self.t("access_any"))

    def audit_key(self) -> None:
        """The operator's audit key (it signs the run's checkpoint): found where upgrader looks, or made now at
        the place the operator chooses (default HOME/keys/operator)."""
        from ...trust.keys import generate_key
        from ...core.recorder import operator_identity

        policy = load_policy_or_fail(policy_path(self.args))
        given = getattr(self.args, "audit_key", None)
        me = operator_identity(self.args.home, policy, key_path=given, need_key=False)
        if me.key is not None:
            self.say("audit_key_found", key=me.key_path, fp=me.fingerprint)
            self._require_listed(policy, me)
            return
        self.say("audit_key_none")
        default = Path(self.args.home) / "keys" / "operator"
        while True:
            where = default if self.args.yes else \
                Path(self.prompt(self.t("ask_audit_key"), str(default))).expanduser().absolute()
            try:
                key, pub, _ = generate_key(where, f"{login_name()}@{me.host}")
            except UpgraderError as e:
                self.say("audit_key_failed", error=self.words(e))
                if self.args.yes:
                    raise
                continue
            break
        if key.resolve() != default.resolve():
            self.args.audit_key = str(key)  # check_run and the printed follow-ups use it
        me = operator_identity(self.args.home, policy, key_path=str(key))
        self.say("audit_key_made", key=key, pub=pub, fp=me.fingerprint)
        self.record("guide_audit_key_made", key=str(key), fingerprint=me.fingerprint)
        self._require_listed(policy, me)

    def _require_listed(self, policy: Any, me: Any) -> None:
        """The operator's key must be named (a literal principal, any namespace) by the approvals' allowed_signers
        before the guide makes or runs a plan: the plan records that file's digest, and a run refuses a plan whose
        requester key nobody listed. When it is not, the exact line(s) to add and where are printed and the guide
        stops (exit 4) with nothing written: the operator adds the line, then runs the guide again."""
        from ...trust.requester import literal_principals
        from ...trust.signers import load_allowed_signers
        from ...trust.sshsig import public_key_blob

        if not policy.allowed_signers or me.key is None:
            return
        where = policy.resolve_path(policy.allowed_signers)
        try:
            signers = load_allowed_signers(where)
        except UpgraderError:
            return  # a missing or bad file is reported, in its place, by the step that reads it
        if literal_principals(signers, public_key_blob(me.key.public_key())):
            return
        self._list_new_key(policy, me)
        raise self.error(ApprovalRefused, "audit_key_unlisted", "audit_key_unlisted_hint", file=str(where),
                         fp=me.fingerprint)

    def _list_new_key(self, policy: Any, me: Any) -> None:
        """The new operator key signs the guide's plans and the run's checkpoint: only a key that the policy's
        allowed_signers name counts as a plan's requester (the self-approval rule compares keys and names). Those
        files are trust roots, the operator's to change, never the guide's (a guide that lists keys itself would
        let whoever runs it make themselves trusted): the exact line to add, and where, is printed; until it is
        there a run of the plan is refused (exit 4). The name in it is the login account, never an environment
        variable's word."""
        from ...trust.keys import signer_line
        from ...trust.requester import NAMESPACE as PLAN_NS

        wanted: dict[Path, list[str]] = {}
        for name, ns in ((policy.allowed_signers, PLAN_NS), (policy.audit_signers, "upgrader-audit")):
            if name:
                wanted.setdefault(policy.resolve_path(name), []).append(ns)
        for path, spaces in wanted.items():
            line = signer_line(f"{login_name()}@{me.host}", me.key.public_key(), ",".join(spaces))
            self.say("audit_key_add_line", file=str(path), line=line)
            self.record("guide_audit_key_line_shown", file=str(path), line=line, fingerprint=me.fingerprint)

    def _policy_zone(self) -> None:
        from ...core.shown_time import policy_zone

        try:
            self.zone = policy_zone(load_policy_or_fail(policy_path(self.args)))
        except UpgraderError:
            pass  # a bad policy is reported, in its place, by the step that needs it

    def offer_revoke(self) -> None:
        """At the end (whatever the end): offer to close the access granted earlier (default: close it). With
        nobody to answer (a lost terminal) or a Ctrl-C at the question, the safe answer: close it."""
        if self.grant is None:
            return
        g, self.grant = self.grant, None
        why = "the operator's answer"
        if self.interrupts.hung_up:
            close, why = True, "the terminal was lost"
        else:
            try:
                close = self.ask(self.t("ask_revoke", id=g["id"]), default=True)
            except KeyboardInterrupt:
                close, why = True, "Ctrl-C at the question (the safe answer)"
            except TerminalLost:
                close, why = True, "the terminal was lost"
        if not close:
            self.say("access_kept", id=g["id"], expires=self.when(g["expires"]),
                     command=follow_up(self.args, "access", "revoke", g["id"]))
            self.record("guide_access_kept", grant=g["id"], expires=g["expires"])
            return
        from ...api import revoke_access

        try:
            with self.interrupts.protected():
                revoked = revoke_access(context_of(self.args), grant_id=g["id"])
                results, code = revoked.hosts, revoked.exit_code
        except KeyboardInterrupt:
            return  # the revocation itself ran to its end (access_revoked is in the audit log)
        except UpgraderError as e:
            self.say("access_failed", error=self.words(e))
            self.record("guide_access_close_failed", grant=g["id"], reason=why, error=str(e))
            return
        self.record("guide_access_closed", outcome="closed" if code == 0 else "failed", grant=g["id"], reason=why)
        if code == 0:
            self.say("access_closed_lost" if self.interrupts.hung_up else "access_revoked", id=g["id"],
                     file=results[0]["file"])

    def show_plan(self, plan: Any) -> None:
        h = plan.hosts[0]
        pkg = h.get("package") or {}
        self.say("plan_line", host=h["name"], current=h["current"], target=h["target"],
                 kind=self.t("kind_patch" if pkg.get("kind") == "patch" else "kind_full"))
        for i, p in enumerate(h["phases"], 1):
            self.say("phase_line", n=i, name=self.t.phase(p["phase"]), does=self.t.does(p["phase"]) or p["does"])
        self.say("downtime_note")

    def _variables(self, pairs: list[str] | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for pair in pairs or ():
            try:
                out.update(parse_variables([pair]))
            except InputError:
                raise self.error(InputError, "bad_var", "bad_var_hint", pair=repr(pair)) from None
        return out

    def _run_args(self) -> argparse.Namespace:
        a = argparse.Namespace(**vars(self.args))
        a.approval = [self.args.approval] if self.args.approval else []
        given = {}  # the playbook the operator named here (--playbook FILE) or the guide found, besides their roots
        if self.args.playbook:
            pb = self._playbook(self.args.playbook)
            given[pb.path.stem] = pb
        chosen = getattr(self, "chosen_playbook", None)
        if chosen is not None:
            given[chosen[0].path.stem] = chosen[0]
        a.given_playbooks = given
        return a


def _left_lock(install_dir: Path) -> Any:
    """The lock on an install of this machine, where the host agent keeps it (``<parent>/.upgrader-<name>/lock``),
    read by the agent's own rules (hostagent/state.py read_lock: the state dir checked as the agent's, the lock
    never followed through a link nor read past its size cap); refused as the agent would refuse it."""
    from ...core.errors import NeedsPerson
    from ...core.host_paths import refuse_agent_unsafe
    from ...hostagent.common import AgentError
    from ...hostagent.state import Paths, read_lock

    try:
        return read_lock(Paths({"install_dir": str(install_dir)}))
    except AgentError as e:
        refuse_agent_unsafe(e, host="local")
        raise NeedsPerson(str(e), hint="check that no run holds the install (upgrader status), then remove the "
                                       "damaged lock file") from e
    except OSError:
        return None  # unreadable here: the agent's own facts tell, with their reason


def login_name() -> str:
    """The account this process runs as, from the system's account database: the guide's requester label and the
    name it proposes for the operator's key. Never an environment variable (UPGRADER_USER, USER, LOGNAME): whoever
    starts the guide could name anyone."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid-{os.getuid()}"


def _plans_dir(home: Path) -> Path:
    return Path(home) / "guide" / "plans"


def _host_name() -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63].strip("-.")
    return name or "local"
