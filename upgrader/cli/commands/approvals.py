"""``upgrader approve``: an engineer reviews a plan and signs their approval of exactly that plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...core.exit_codes import ExitCode
from ._common import console, context_of, print_json


def cmd_approve(args: argparse.Namespace) -> int:
    from ...api import approve, show_plan

    ctx = context_of(args)
    shown = show_plan(ctx, Path(args.plan))  # what the engineer signs, in full, before anything is signed
    c = None if args.json else console()  # --json (scripts): rich is not even imported
    if c is not None:
        from .review import print_review

        print_review(c, shown.review)
    made = approve(ctx, shown, key=Path(args.key), output=Path(args.output), principal=args.principal,
                   expires=args.expires, comment=args.comment or "", after_hours=args.after_hours)
    if args.json:
        print_json({"approval": str(made.file), "plan": made.plan, "approver": made.approver,
                    "expires": made.expires.isoformat(), "key": made.key, "review": made.review})
    else:
        assert c is not None
        c.print(f"\n[bold green]approved[/bold green] plan {made.plan} as [bold]{made.approver}[/bold] "
                f"(key {made.key}), valid until {made.expires.isoformat()}")
        c.print(f"approval written to [bold]{made.file}[/bold]; run it with: upgrader run {args.plan} "
                f"--approval {made.file}")
    return ExitCode.OK
