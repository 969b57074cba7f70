"""``upgrader versions check``: the policy decision for one upgrade, every rule explained."""

from __future__ import annotations

import argparse

from ...core.errors import InputError
from ...core.exit_codes import ExitCode
from ._common import console, load_policy_or_fail, print_json


def cmd_check(args: argparse.Namespace) -> int:
    from version_policy import UpgradeRequest, VersionError, decide, parse_range, parse_version

    policy = load_policy_or_fail(args.policy)
    try:
        current = parse_version(args.current)
    except VersionError as e:
        raise InputError(f"CURRENT: {e}") from None
    try:
        target = parse_version(args.target)
    except VersionError as e:
        raise InputError(f"TARGET: {e}") from None
    try:
        requires = parse_range(args.requires) if args.requires else None
    except VersionError as e:
        raise InputError(f"--requires: {e}") from None
    from ...trust.package import CHANGE_KINDS

    for c in args.changes:
        if c not in CHANGE_KINDS:
            raise InputError(f"--changes: unknown change kind {c!r}", hint="use " + ", ".join(CHANGE_KINDS))
    decision = decide(UpgradeRequest(product=args.product, target_product=args.product, current=current,
                                     target=target, kind=args.kind, declared_changes=tuple(args.changes),
                                     requires=requires), policy)
    data = decision.to_dict()
    if args.json:
        print_json({"current": current.text, "target": target.text, "kind": args.kind,
                    "policy": policy.source, **data})
    else:
        from ..report import print_decision

        print_decision(console(), current.text, target.text, data)
    return ExitCode.OK if decision.allowed else ExitCode.POLICY_REFUSED
