"""``upgrader plan show PLAN`` (the full review an approver reads) and ``upgrader plan digest PLAN``.

``approve`` prints the same review before it signs (``print_review``). Kept apart from ``plan``
itself so that show can grow options (e.g. reading the hosts) without touching plan making.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...core.exit_codes import ExitCode
from ._common import console, context_of, print_json

__all__ = ["cmd_plan_show", "cmd_plan_digest", "reviewed_plan", "print_review"]


def reviewed_plan(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any]:
    """``upgrader.api.show_plan`` of ``args.plan``: (plan, review, policy here)."""
    from ...api import show_plan

    shown = show_plan(context_of(args), Path(args.plan))
    return shown.plan, shown.review, shown.policy


def cmd_plan_show(args: argparse.Namespace) -> int:
    """``plan show PLAN [--check]``: the full review; with --check, every host read (read-only) after it."""
    plan, review, _ = reviewed_plan(args)
    if not getattr(args, "check", False):
        if args.json:
            print_json(review)
        else:
            print_review(console(), review)
        return ExitCode.OK
    from ...api import check_hosts
    from .plan_check import print_host_check

    if args.json:  # one document: what the hosts said, with the review beside it
        return print_host_check(check_hosts(plan), None, as_json=True, json_extra={"review": review})
    c = console()
    print_review(c, review)
    c.print()
    return print_host_check(check_hosts(plan), c, as_json=False)


def cmd_plan_digest(args: argparse.Namespace) -> int:
    from ...core.plan import load_plan

    plan = load_plan(args.plan)
    if args.json:
        print_json({"plan": str(args.plan), "digest": plan.digest})
    else:
        print(plan.digest)
    return ExitCode.OK


def _line(c: Any, text: str) -> None:
    from ...core.text_safety import shown

    # commands are shown verbatim, never wrapped; every non-printable character escaped (ESC, bidi overrides)
    c.print(shown(text), markup=False, highlight=False, soft_wrap=True)


def _trust_lines(c: Any, files: Any) -> None:
    """Each trust file a policy names: key, source and sha256 (or why none)."""
    if not isinstance(files, list):
        _line(c, "  trust files: NOT RECORDED (a plan of an older upgrader: a run refuses it, make it again)")
        return
    for t in files:
        if t.get("source") is None:
            _line(c, f"  trust file {t.get('key')}: not set")
        else:
            what = f"sha256 {t['sha256']}" if t.get("sha256") else str(t.get("state")).upper()
            _line(c, f"  trust file {t.get('key')}: {t.get('source')}  {what}")


def print_review(c: Any, r: dict[str, Any]) -> None:
    """The review as text, every value in full (a secret in a command, a URL's password, masked as in every output:
    the approver sees where it goes, not what it is)."""
    from ...audit.redaction import redact_value

    r = redact_value(r)
    req = r["requester"]
    _line(c, f"plan {r['plan']}  (to {r['target']}, made {r['created']})")
    signed = f"signed with key {req['key']}" if req["signed"] else "unsigned (the operator who runs it counts as " \
                                                                     "the requester)"
    said = f"(said: {req['user']}@{req['host']})"
    if req["signed"]:  # the key's names in the operator's allowed_signers; what the requester typed only as said
        names = ", ".join(req.get("listed_as") or []) or "(not listed)"
        _line(c, f"requester: {names} {said}, {signed}")
    else:
        _line(c, f"requester: {said}, {signed}")
    cat = r["catalog"]
    _line(c, f"catalog: {cat['path']}  serial {cat['serial']}  signed by {cat.get('signer') or '-'} "
             f"({cat.get('fingerprint') or '-'})  sha256 {cat['sha256']}")
    pol = r["policy"]
    _line(c, f"policy: {pol['source']}  sha256 {pol['sha256']}  identity {pol.get('identity') or 'NOT RECORDED'}")
    _trust_lines(c, pol.get("trust_files"))
    here = r.get("policy_here")
    if here:
        verdict = "the same" if here["same"] else "DIFFERENT: a run here refuses this plan (exit 4)"
        real = here.get("real")
        _line(c, f"policy here ({here['from']}): {here['source']}"
                 + (f" (real file {real})" if real and real != here["source"] else "")
                 + f"  sha256 {here['sha256']}  identity {here.get('identity')}: {verdict}")
        if not here["same"]:
            _trust_lines(c, here.get("trust_files"))
    window = r.get("window")
    if window:
        inside = {True: "inside", False: "outside"}.get(window.get("inside"), "unknown")
        wp = window.get("policy") or {}
        _line(c, f"service window: {inside}: {window.get('reason', '')} (window {', '.join(wp.get('days', []))} "
                 f"{wp.get('start')}-{wp.get('end')} {wp.get('timezone')}; outside it: {wp.get('outside')})")
    for h in r["hosts"]:
        _line(c, "")
        again = h.get("decided_again") or {}
        verdict = "allowed" if h["allowed"] and (again.get("same", True) or again.get("error")) \
            and not again.get("refused") else "REFUSED"
        _line(c, f"host {h['host']} ({h['address']}, port {h['port']}, user {h['user'] or '-'}) "
                 f"{h['install_dir']}: {h['product']} {h['current']} -> {h['target']}: {verdict}")
        if h.get("product_confirmed") is False:
            _line(c, f"  product {h['product']}: NOT CONFIRMED by the host: no host trust root states it (root's "
                     "host-trust.json \"installs\"), so it is the inventory's word and the service account's files; "
                     "check the install is this product before you approve")
        state, default = h.get("state_dir"), h.get("default_state_dir")
        if state and state.rstrip("/") != default:
            _line(c, f"  STATE DIR NOT THE DEFAULT: {state} (the inventory names it; the default is {default}); the "
                     "host's trust ledger stays in the default one too")
        pkg = h["package"]
        if pkg:
            _line(c, f"  package: {pkg['file']} ({pkg['kind']}, {pkg['size']} bytes) sha256 {pkg['sha256']}")
            if pkg.get("remove"):
                _line(c, f"  package removes: {', '.join(pkg['remove'])}")
        else:
            _line(c, "  package: none in the catalog")
        pb = h["playbook"]
        _line(c, f"  playbook: {pb['name']} ({pb['path']}, {pb.get('from') or 'source not recorded'}, "
                 f"sha256 {pb['sha256']})")
        here = h.get("playbook_here")
        if here:
            verdict = "the same" if here["same"] else "DIFFERENT: a run here refuses this plan (exit 4)"
            where = here.get("error") or f"{here['source']} ({here['from']}) sha256 {here['sha256']}"
            _line(c, f"  playbook here: {where}: {verdict}")
        source = h.get("version_source") or {}
        if source.get("file"):
            _line(c, f"  installed version read from: file {source['file']} (in {h['install_dir']}), "
                     f"pattern {source.get('pattern')!r}")
        elif source.get("command"):
            _line(c, f"  installed version read from: the output of command {source['command']!r}, "
                     f"pattern {source.get('pattern')!r}")
        _line(c, "  policy decision:")
        for rule in h["decision"]["rules"]:
            _line(c, f"    {rule['status']:<5} {rule['rule']}: {rule['reason']}")
        for check in h["checks"]:
            _line(c, f"    {check['status']:<5} {check['check']}: {check['reason']}")
        if again.get("error"):
            _line(c, f"  decided again here: {'REFUSED' if again.get('refused') else 'CANNOT'}: {again['error']}; "
                     "a run here refuses this plan")
        elif again and not again.get("same"):
            failed = "; ".join(f"{x['rule']}: {x['reason']}" for x in again["rules"] if x.get("status") == "fail")
            _line(c, f"  decided again here (the operator's policy, the signed catalog, {h['current']} -> "
                     f"{h['target']}): {'allowed' if again['allowed'] else 'REFUSED: ' + failed}: DIFFERENT from "
                     "the plan's decision: a run here refuses this plan (exit 3)")
        elif again:
            _line(c, f"  decided again here (the operator's policy, the signed catalog, {h['current']} -> "
                     f"{h['target']}): the same")
        _line(c, f"  commands the run executes on the host, as they will run (in {h['install_dir']}, as "
                 f"{h['user'] or 'the login user'}; when that is root, as the install dir's owner if root does not "
                 "own it):")
        for cmd in h["commands"]:
            limit = f"  (timeout {cmd['timeout']}s)" if cmd.get("timeout") is not None else ""
            _line(c, f"    {cmd['when']}: {cmd['command']}{limit}")
        if h.get("variables"):
            _line(c, "  values the playbook is rendered with (the run renders the operator's playbook with exactly "
                     "these):")
            for v in h["variables"]:
                _line(c, f"    {v}")
        if h["stop"]:
            _line(c, "  stop: " + ", ".join(f"{k} {v}" for k, v in h["stop"].items()))
        if h.get("stop_signals"):
            _line(c, f"  stop may signal (SIGTERM, then SIGKILL) only: {h['stop_signals']}")
        _line(c, "  health probes: " + "; ".join(f"{p['name']}: {p['checks']}" for p in h["probes"]))
        if h["observe"]:
            _line(c, "  observation: " + ", ".join(f"{k} {v}" for k, v in h["observe"].items()))
        _line(c, f"  preserved: {', '.join(h['preserve']) or '-'}")
