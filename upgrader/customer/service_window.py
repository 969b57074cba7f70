"""The service window at the edges: what a plan records about it, and the check before a run.

``plan_window`` evaluates the policy's window with the clock at plan time, for the plan JSON
(``{"inside", "reason", "next_opening", "policy"}``, part of the plan digest). ``check_run_window``
evaluates it again with the clock at run time and refuses (exit 4, before any host is touched)
a run outside the window, or on a day the holiday calendar cannot tell, unless the policy's
``window.outside`` allows it or enough approvals were made with ``--after-hours``. The decision
itself is ``version_policy.window_status``; this module loads, translates errors and words the
refusal.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable, Mapping

from ..core.errors import ApprovalRefused, InputError

__all__ = ["load_service_window", "plan_window", "check_run_window", "rollback_window"]


def load_service_window(policy: Any) -> Any:
    """The policy's ``ServiceWindow`` with its holiday calendar; a bad setting or file is exit 2."""
    from version_policy import PolicyError, load_window

    try:
        return load_window(policy)
    except PolicyError as e:
        raise InputError(str(e), hint="fix the window section of the policy or its holidays file") from None


def plan_window(policy: Any, now: _dt.datetime) -> dict[str, Any]:
    """The window as the plan records it: inside (True, False or None), reason, next opening, settings."""
    from version_policy import window_status

    window = load_service_window(policy)
    return {**window_status(now, window).to_dict(), "policy": window.describe()}


def check_run_window(plan_window_data: Mapping[str, Any] | None, policy: Any, after_hours_by: Iterable[str],
                     now: _dt.datetime) -> dict[str, Any]:
    """Refuse (ApprovalRefused) a run the window does not allow now; return the window as checked.
    ``after_hours_by``: the approvers whose valid approval of this plan was made with ``--after-hours``."""
    from version_policy import window_status

    window = load_service_window(policy)
    planned = (plan_window_data or {}).get("policy") or {}
    planned_digest = (planned.get("holidays") or {}).get("sha256")
    if planned_digest and planned_digest != window.calendar.digest:
        raise ApprovalRefused(f"the holidays file {window.calendar.source} changed since the plan was made "
                              f"(sha256 {window.calendar.digest[:16]}… now, {str(planned_digest)[:16]}… then)",
                              hint="make and approve a new plan")
    status = window_status(now, window)
    checked = {**status.to_dict(), "outside_policy": window.outside}
    if status.inside is True or window.outside == "allow":
        return checked
    where = "outside the service window" if status.inside is False else "on a day the holiday calendar cannot tell"
    if window.outside == "refuse":
        raise ApprovalRefused(f"{status.reason}; the policy refuses runs {where} (window.outside: refuse); "
                              "nothing was changed", hint=_when(status))
    required = int(policy.approvals_required)
    flagged = sorted({approver.lower() for approver in after_hours_by})
    if len(flagged) >= required:
        return {**checked, "after_hours_approvals": flagged}
    need = "an approval" if required == 1 else f"approvals from {required} engineers"
    got = f" (got {len(flagged)}: {', '.join(flagged)})" if flagged else ""
    raise ApprovalRefused(f"{status.reason}; a run {where} needs {need} made with --after-hours{got} "
                          "(window.outside: after_hours_approval); nothing was changed",
                          hint="have the plan approved for after hours: upgrader approve PLAN --key KEY "
                               f"--after-hours -o APPROVAL; or {_when(status)}")


def _when(status: Any) -> str:
    if status.next_opening is not None:
        return f"run it inside the window (it opens next at {status.next_opening.isoformat(timespec='minutes')})"
    if status.inside is None:
        return "add the year to the holidays file named above"
    return "run it inside the window"


def rollback_window(policy: Any, now: Any) -> tuple[dict[str, Any], str]:
    """The service window as it applies to a rollback now, and the line that says so. The policy's
    ``window.rollback`` is ``any_time`` (the default: undoing a bad upgrade does not wait) or ``like_run``
    (then refused outside the window exactly as ``run`` is: exit 4, nothing touched)."""
    how = str(policy.value("window.rollback"))
    if how == "any_time":
        window = plan_window(policy, now)
        where = "inside" if window.get("inside") else "outside" if window.get("inside") is False else "at"
        return ({**window, "rollback": how},
                f"service window: rollbacks are allowed at any hour (policy window.rollback: any_time); now is "
                f"{where} the window")
    checked = check_run_window(None, policy, [], now)
    return {**checked, "rollback": how}, "service window: the rollback is allowed now (policy window.rollback: like_run)"
