"""The guide's three access questions (the engineer's public key, how many hours, from where), each
answer checked as it is given with ``upgrader.customer.access``'s own checks and asked again with the reason in
the operator's language: a private key pasted by mistake, a number of hours beyond the policy, an address
that is no address. The source address is required; "any address" only when the operator says so in
words (``任何地址`` or ``any``). It asks; making the grant is ``upgrader.api.grant_access``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...core.errors import InputError

__all__ = ["GrantAnswers", "ask_grant_answers", "ANY_ADDRESS_WORDS"]

ANY_ADDRESS_WORDS = ("任何地址", "任意地址", "任何", "any", "any address")


@dataclass(frozen=True)
class GrantAnswers:
    key: str                     # the public key file, checked
    hours: float                 # within the policy's limit
    from_patterns: str | None    # None: any address, chosen explicitly


class _NoAnswer(Exception):
    """The input ended while a question was asked again: no access then."""


def ask_grant_answers(g: Any, policy: Any) -> GrantAnswers | None:
    """The checked answers, or None when the operator gives no key or the input ends (no access then)."""
    try:
        key = _ask_key(g)
        if key is None:
            return None
        hours = _ask_hours(g, policy)
        return GrantAnswers(key, hours, _ask_from(g))
    except _NoAnswer:
        g.say("access_none")
        return None


def _reply(g: Any, question: str, default: str = "") -> str:
    reply = str(g.prompt(question, default)).strip()
    if getattr(g, "input_ended", False):
        raise _NoAnswer()
    return reply


def _ask_key(g: Any) -> str | None:
    from ...customer.access import load_public_key_file

    while True:
        reply = _reply(g, g.t("ask_key"))
        if not reply:
            g.say("key_empty")
            return None
        try:
            key = load_public_key_file(reply)
        except InputError as e:
            said = e.message[len(e.path) + 2:] if e.path and e.message.startswith(f"{e.path}: ") else e.message
            if "PRIVATE key" in said:
                g.say("key_private", file=reply)
            elif said.startswith("cannot read the public key: "):
                g.say("key_unreadable", file=reply, error=said.partition(": ")[2])
            else:
                g.say("key_bad", file=reply, error=g.words(said))
            continue
        g.say("key_ok", fp=key.fingerprint, kind=key.kind)
        return reply


def _ask_hours(g: Any, policy: Any) -> float:
    from ...customer.access import check_hours

    maximum = float(policy.access_max_hours)
    while True:
        reply = _reply(g, g.t("ask_hours"), f"{policy.access_default_hours:g}")
        try:
            value = float(reply)
            if not math.isfinite(value):
                raise ValueError(reply)
            return check_hours(value, policy.access_default_hours, maximum, policy.source)
        except (ValueError, InputError):
            g.say("hours_bad", value=reply, max=f"{maximum:g}")


def _ask_from(g: Any) -> str | None:
    from ...customer.access import check_from

    while True:
        reply = _reply(g, g.t("ask_from"))
        if not reply:
            g.say("from_required")
            continue
        if reply.lower() in ANY_ADDRESS_WORDS:
            return None
        try:
            return check_from(reply.replace(" ", ""))
        except InputError:
            g.say("from_bad", value=reply)
