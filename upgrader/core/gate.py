"""The gate before a plan touches a host, held by the operator, not by the plan.

The plan is the requester's document: it records the policy it was made under (source and
digest) but never supplies it. ``operator_policy`` checks the operator's policy (``--policy``, else
``HOME/policy.yaml``, else the system-wide policy, else the shipped default) and refuses a plan
made under another one (exit 4). ``redecide`` reads every host again (read-only) and makes each
host's policy decision again under that policy: a different answer refuses the run (exit 3), a
host that was already upgraded from a newer catalog refuses it too (exit 4).
"""

from __future__ import annotations

import datetime as _dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, cast

from .errors import ApprovalRefused, InputError, PolicyRefused, TransportError
from .shapes import DecisionData, PlanHost

if TYPE_CHECKING:
    from version_policy import Policy

    from .playbook import Playbook

    from ..fleet.inventory import Host
    from ..fleet.transport.base import Transport
    from ..trust.catalog import Catalog

__all__ = ["operator_policy", "policy_mismatch", "redecide", "decision_key", "decide_offline",
           "refuse_if_decided_otherwise", "check_playbooks", "render_for_plan_host"]


def policy_mismatch(plan_policy: Mapping[str, object], policy: Policy) -> ApprovalRefused | None:
    """The refusal for a plan made under another policy than ``policy``, or None when they are the same.

    The same policy means the same identity (``Policy.identity``): the policy file's bytes and every trust file it
    names (approvers', vendors' and auditors' allowed_signers, the holiday calendar) at the same place with the same
    bytes. A plan that does not record the identity (made before upgrader recorded it) cannot prove which trust
    files it was made under and is refused: the requester makes it again."""
    how = "; the policy comes from --policy, HOME/policy.yaml, /etc/upgrader/policy.yaml or the shipped default, " \
          "never from the plan"
    planned = str(plan_policy.get("sha256"))
    identity = plan_policy.get("identity")
    if not isinstance(identity, str) or not isinstance(plan_policy.get("trust_files"), list):
        return ApprovalRefused(
            f"the plan records only its policy file ({plan_policy.get('source')}, sha256 {planned}), not the trust "
            "files that policy names (allowed_signers, trusted_signers, holidays): it was made by an older upgrader "
            "and cannot show it was made under the operator's policy; nothing was changed",
            hint="make and approve the plan again with this upgrader ('upgrader plan ...', then 'upgrader approve')")
    if policy.identity == identity and _planned_identity(plan_policy) == identity:
        return None
    differ: list[str] = []
    if policy.digest != planned:
        differ.append(f"the policy file: the plan's is {plan_policy.get('source')} (sha256 {planned}), the "
                      f"operator's is {policy.source} (sha256 {policy.digest})")
    planned_files = {str(t.get("key")): t for t in _trust_list(plan_policy)}
    for here in policy.trust_files:
        then = planned_files.pop(here.key, None)
        if then is None:
            differ.append(f"{here.key}: the plan records nothing, the operator's is {_shown(here.to_dict())}")
        elif (then.get("source"), then.get("sha256"), then.get("state")) != (here.source, here.sha256, here.state):
            differ.append(f"{here.key}: the plan's is {_shown(then)}, the operator's is {_shown(here.to_dict())}")
    for key, then in planned_files.items():
        differ.append(f"{key}: the plan's is {_shown(then)}, the operator's policy has no such key")
    if not differ:  # the record does not add up to its own identity: the plan was edited
        differ.append(f"the plan's policy record does not match its identity {identity}: the plan was altered")
    return ApprovalRefused(
        f"the plan was made under another policy (identity {identity} in the plan, {policy.identity} here), "
        "nothing was changed:\n  " + "\n  ".join(differ) + "\n  " + how.lstrip("; "),
        hint="make and approve a new plan under the operator's policy (or fix the operator's policy file)")


def _trust_list(plan_policy: Mapping[str, object]) -> list[Mapping[str, object]]:
    return [t for t in cast("list[object]", plan_policy.get("trust_files") or []) if isinstance(t, Mapping)]


def _planned_identity(plan_policy: Mapping[str, object]) -> str:
    """The identity the plan's own record of the policy adds up to."""
    from version_policy.policy import policy_identity

    return policy_identity(str(plan_policy.get("sha256")), _trust_list(plan_policy))


def _shown(t: Mapping[str, object]) -> str:
    if t.get("source") is None:
        return "not set"
    return f"{t.get('source')} " + (f"(sha256 {t.get('sha256')})" if t.get("sha256") else f"({t.get('state')})")


def operator_policy(policy: Policy, plan_policy: Mapping[str, object]) -> Policy:
    """The operator's policy (loaded by the caller from where ``policy_path`` says); ApprovalRefused (exit 4)
    when the plan was made under another policy."""
    refusal = policy_mismatch(plan_policy, policy)
    if refusal is not None:
        raise refusal
    planned = plan_policy.get("manual_changes")
    if planned is not None and str(planned) != policy.manual_changes:  # the plan's copy was edited
        raise ApprovalRefused(f"the plan says rules.manual_changes is {planned!r} but the operator's policy "
                              f"{policy.source} says {policy.manual_changes!r}: the plan was altered; nothing was "
                              "changed", hint="make and approve a new plan under the operator's policy")
    return policy


def decision_key(decision: DecisionData) -> tuple[bool, tuple[tuple[str, str], ...]]:
    """What must be equal for two decisions to be the same answer: allowed, and each rule's status (the
    reasons may name today's date)."""
    return (bool(decision.get("allowed")),
            tuple((str(r.get("rule")), str(r.get("status"))) for r in decision.get("rules", [])))


def redecide(hosts: list[PlanHost], *, policy: Policy, catalog: Catalog, now: _dt.datetime,
             connect: Callable[[Host], Transport], forks: int = 8,
             playbooks: Mapping[str, Playbook] | None = None) -> None:
    """Decide every host again under ``policy``: first offline (the plan's own current -> target pair and the
    signed catalog's entry, for every host, whatever it runs now), then from the host read again (read-only):
    PolicyRefused naming every host whose decision differs from the plan's; ApprovalRefused for a plan that
    contradicts itself (two entries for one install, another target), a host that saw a newer catalog, or an
    address that now reaches another machine or install than the plan recorded (``other_machine``). A host
    that no longer runs the plan's current version, or cannot be reached now, is then left to the engine, which
    stops it at preflight (stale plan, unreachable) before touching it. With ``playbooks`` (the operator's, from
    ``check_playbooks``) the values each playbook reads from the install's configuration (``vars_from``) are read
    again: a value that is no longer the plan's refuses the run (ApprovalRefused, exit 4: the approved probes and
    commands were rendered with the old one)."""
    from version_policy import UpgradeRequest, VersionError, decide, parse_range, parse_version

    from ..fleet.inventory import host_from_plan
    from ..trust.plan_trust import trusted_package
    from .planner import _decide, check_seen_serial, host_facts
    from ..fleet.transport.base import AgentClient

    from .config_vars import read_config_vars, read_differs

    block = policy.manual_changes == "block"  # the operator's setting, never the plan's copy
    drifted: list[str] = []
    moved: list[str] = []
    elsewhere: list[str] = []
    identities: dict[str, Mapping[str, object] | None] = {}

    from .plan import check_consistency, same_installs

    check_consistency(list(hosts), str(hosts[0]["target"]) if hosts else "", "the plan")
    offline = decide_offline(hosts, policy=policy, catalog=catalog, today=now.date())

    def one(h: PlanHost) -> tuple[str, DecisionData, DecisionData]:
        host = host_from_plan(h)
        spec = h["playbook"]["spec"]
        entry, package = trusted_package(catalog, h)  # decided from the signed entry, never the plan's copy
        try:
            transport = connect(host)
            try:
                agent = AgentClient(transport)
                facts = host_facts(agent, host, spec, [], check_drift=block)
                identities[h["name"]] = cast("Mapping[str, object] | None", facts.get("identity"))
                pb = (playbooks or {}).get(str(h["playbook"].get("name")))
                if pb is not None and (pb.vars_from or h.get("vars_read")):
                    read = read_config_vars(agent, install_dir=host.install_dir, state_dir=host.state_dir,
                                            vars_from=pb.vars_from)
                    moved.extend(read_differs(h["name"], h.get("vars_read") or {}, read))
            finally:
                transport.close()
        except TransportError:
            # unreachable now: the engine meets it again at preflight and reports it, touching nothing there
            return h["name"], h["decision"], h["decision"]
        check_seen_serial(h["name"], h["product"], facts, int(catalog.serial))
        if facts.get("version") != h["current"]:
            # the host moved since the plan: the engine stops it at preflight as a stale plan, untouched
            return h["name"], h["decision"], h["decision"]
        other = other_machine(h, facts.get("identity"), facts.get("install_lineage"))
        if other:  # the address reaches another machine or another install than the one approved
            elsewhere.append(other)
            return h["name"], h["decision"], h["decision"]
        if block and facts.get("drift"):
            listed = ", ".join(str(d.get("path")) for d in facts["drift"][:5])
            drifted.append(f"{h['name']}: product files changed by hand since the last install ({listed}) and the "
                           "operator's policy says rules.manual_changes: block")
        decision = _decide(host, facts.get("version"), facts, parse_version(h["target"]), entry, package,
                           policy, now.date(), UpgradeRequest, decide, parse_version, parse_range, VersionError)
        return h["name"], h["decision"], decision

    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        answers = list(pool.map(one, hosts))
    twice = same_installs([(h["name"], identities.get(h["name"])) for h in hosts])
    if twice:  # read on the hosts now: another address or spelling of one install, a link to it
        raise ApprovalRefused("the plan names one install twice (the plan was edited), nothing was changed:\n  "
                              + "\n  ".join(twice), hint="make and approve a new plan with one entry per install")
    if elsewhere:
        raise ApprovalRefused("the plan was made for other machines or installs than these addresses reach now, "
                              "nothing was changed:\n  " + "\n  ".join(elsewhere),
                              hint="make the plan again for the machines it is to upgrade, and have it approved")
    if moved:
        raise ApprovalRefused("the install's configuration no longer gives the values the plan was made with (the "
                              "approved health checks and commands use them), nothing was changed:\n  "
                              + "\n  ".join(moved), hint="make and approve a new plan")
    differ = []
    for name, planned, now_decided in offline + answers:
        if decision_key(planned) != decision_key(now_decided):
            differ.append(_differs_text(name, planned, now_decided))
    differ += drifted
    if differ:
        raise PolicyRefused("the version policy decides differently now than when the plan was made, nothing was "
                            "changed:\n  " + "\n  ".join(differ))


def other_machine(h: Mapping[str, object], seen: object, lineage: object = None) -> str | None:
    """Why the host read now is not the machine or install the plan entry ``h`` recorded (its ``identity``, from the
    facts at plan time: machine id and the install dir's st_dev/st_ino); None when it is the same. A plan entry
    without an identity cannot say which machine it was approved for and is refused too."""
    planned = h.get("identity")
    name = h.get("name")
    if not isinstance(planned, Mapping) or not planned.get("machine") or not isinstance(planned.get("install"), list):
        return (f"{name}: the plan does not record which machine and install it was made for (made by an older "
                "upgrader, or edited)")
    now = seen if isinstance(seen, Mapping) else {}
    if now.get("machine") != planned.get("machine"):
        return (f"{name}: the plan was made for machine {planned.get('machine')}, this address reaches machine "
                f"{now.get('machine')}: make the plan again")
    if list(now.get("install") or []) != list(planned["install"]) and list(planned["install"]) not in [
            list(e) for e in (lineage if isinstance(lineage, list) else []) if isinstance(e, list)]:  # trees the
        # agent itself replaced at that path (a run rolled back, then retried with its unused approval)
        return (f"{name}: the plan was made for the install {h.get('install_dir')} with (st_dev, st_ino) "
                f"{tuple(planned['install'])}, the install there now is {tuple(now.get('install') or ())} (another "
                "install at the same path): make the plan again")
    return None


def decide_offline(hosts: Sequence[PlanHost], *, policy: Policy, catalog: Catalog,
                   today: _dt.date) -> list[tuple[str, DecisionData, DecisionData]]:
    """Each host's decision made again without reading it: the plan's own current -> target pair under ``policy``
    (the operator's, at this moment) and the signed catalog's entry for the target. Returns (name, the plan's
    decision, the decision now) per host; ApprovalRefused (exit 4) when the plan's package is not the catalog's."""
    from version_policy import UpgradeRequest, VersionError, decide, parse_range, parse_version

    from ..fleet.inventory import host_from_plan
    from ..trust.plan_trust import trusted_package
    from .planner import _decide

    out: list[tuple[str, DecisionData, DecisionData]] = []
    for h in hosts:
        entry, package = trusted_package(catalog, h)
        try:
            target = parse_version(h["target"])
        except VersionError as e:
            raise ApprovalRefused(f"{h['name']}: the plan's target {h['target']!r} is not a version: {e}",
                                  hint="make and approve a new plan") from None
        decision = _decide(host_from_plan(h), h["current"], {}, target, entry, package, policy, today,
                           UpgradeRequest, decide, parse_version, parse_range, VersionError)
        out.append((h["name"], h["decision"], decision))
    return out


def refuse_if_decided_otherwise(answers: Sequence[tuple[str, DecisionData, DecisionData]]) -> None:
    """PolicyRefused (exit 3) naming every host whose decision now differs from the plan's."""
    differ = []
    for name, planned, now_decided in answers:
        if decision_key(planned) != decision_key(now_decided):
            differ.append(_differs_text(name, planned, now_decided))
    if differ:
        raise PolicyRefused("the version policy decides differently now than the plan says, nothing was changed:\n  "
                            + "\n  ".join(differ), hint="make and approve a new plan")


def _differs_text(name: str, planned: DecisionData, now_decided: DecisionData) -> str:
    failed = [f"{r['rule']}: {r['reason']}" for r in now_decided.get("rules", []) if r.get("status") == "fail"]
    verdict = "allowed" if now_decided.get("allowed") else "refused (" + "; ".join(failed) + ")"
    return f"{name}: the plan says {'allowed' if planned.get('allowed') else 'refused'}, decided again now: {verdict}"


def check_playbooks(hosts: Sequence[Mapping[str, object]], home: str | Path,
                    given: Mapping[str, Playbook] | None = None) -> dict[str, Playbook]:
    """Each host's playbook loaded again from the operator's roots (HOME/playbooks, /etc/upgrader/playbooks, the
    shipped ones; ``given``: name -> Playbook the operator named on this command line): ApprovalRefused (exit 4)
    when its digest differs from the one the plan records, naming both, or when the plan's rendered steps (version
    source, stop, start, hooks, probes) are not that playbook's with values put in. Returns name -> the operator's
    playbook (``redecide`` reads its ``vars_from`` on each host again)."""
    from .playbook import load_operator_playbook

    loaded: dict[str, tuple[Playbook, str]] = {}
    problems: list[str] = []
    for h in hosts:
        meta = cast("dict[str, Any]", h.get("playbook") or {})
        name = str(meta.get("name"))
        if name not in loaded:
            if given and name in given:
                loaded[name] = (given[name], "--playbook")
            else:
                try:
                    loaded[name] = load_operator_playbook(name, home)
                except InputError as e:
                    raise ApprovalRefused(f"{h.get('name')}: the plan's playbook {name!r} ({meta.get('path')}, sha256 "
                                          f"{meta.get('sha256')}) is not one of the operator's: {e.message}; nothing "
                                          "was changed", hint="make and approve a new plan with the operator's "
                                          "playbook (HOME/playbooks, /etc/upgrader/playbooks or a shipped one)"
                                          ) from None
        pb, where = loaded[name]
        if pb.digest != meta.get("sha256"):
            problems.append(f"{h.get('name')}: the plan's playbook {name!r} is {meta.get('path')} (sha256 "
                            f"{meta.get('sha256')}), the operator's is {pb.path} ({where}, sha256 {pb.digest})")
            continue
        try:
            spec, rollback_observe = render_for_plan_host(pb, h)
        except InputError as e:
            problems.append(f"{h.get('name')}: the operator's playbook {pb.path} cannot be rendered with the plan's "
                            f"values: {e.message}")
            continue
        differ = _first_difference(spec, meta.get("spec"), "")
        if differ is None:
            differ = _first_difference(rollback_observe, meta.get("rollback_observe"), "rollback_observe")
        if differ is not None:
            problems.append(f"{h.get('name')}: the plan's steps are not those of the operator's playbook {pb.path} "
                            f"(sha256 {pb.digest}) rendered with the plan's values (variables, install_dir, versions)"
                            f": {differ} differs")
    if problems:
        raise ApprovalRefused("the plan was made with another playbook than the operator's, nothing was changed:\n  "
                              + "\n  ".join(problems),
                              hint="a playbook comes from HOME/playbooks, /etc/upgrader/playbooks or the shipped "
                                   "ones, never from the plan: make and approve a new plan")
    return {name: pb for name, (pb, _) in loaded.items()}


def render_for_plan_host(pb: Playbook, h: Mapping[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """The operator's playbook rendered exactly as ``upgrader plan`` renders it for plan entry ``h``: its defaults,
    the values the plan records as read from the install's configuration (``vars_read``), the explicit ones
    (``vars``: inventory vars, --var), the entry's install_dir and name, and its current and target versions.
    Returns (the spec, the rollback's observe spec); InputError when a variable is missing."""
    from .config_vars import merge_variables

    read = cast("dict[str, Any]", h.get("vars_read") or {})
    explicit = {str(k): v for k, v in cast("dict[str, object]", h.get("vars") or {}).items()}
    install_dir, name = str(h.get("install_dir")), str(h.get("name"))
    values, _ = merge_variables(pb.defaults, read, {"install_dir": install_dir, "host": name, **explicit})
    base = {**values, "install_dir": install_dir, "host": name}
    current = str(h.get("current") or "unknown")
    spec = pb.render({**base, "target_version": str(h.get("target")), "current_version": current})
    rollback = pb.render({**base, "target_version": current, "current_version": current})
    return cast("dict[str, object]", spec), cast("dict[str, object]", rollback["observe"])


def _first_difference(expected: object, got: object, key: str) -> str | None:
    """The first key where ``got`` is not exactly ``expected`` (same keys, same items, same values and types)."""
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(expected) != set(got):
            return key or "the spec"
        for k in expected:
            found = _first_difference(expected[k], got[k], f"{key}.{k}" if key else k)
            if found is not None:
                return found
        return None
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, list) or len(expected) != len(got):
            return key
        for i, (e, r) in enumerate(zip(expected, got)):
            found = _first_difference(e, r, f"{key}[{i}]")
            if found is not None:
                return found
        return None
    return None if expected == got and type(expected) is type(got) else key
