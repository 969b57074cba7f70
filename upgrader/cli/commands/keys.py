"""``upgrader keys generate``: an engineer's (or vendor's) Ed25519 SSH key and its allowed_signers line."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...core.exit_codes import ExitCode
from ._common import console, print_json


def cmd_generate(args: argparse.Namespace) -> int:
    from ...trust.keys import generate_key

    directory = Path(args.dir) if args.dir else args.home / "keys"
    private, public, line = generate_key(directory / args.name, args.principal or args.name)
    if args.json:
        print_json({"private_key": str(private), "public_key": str(public), "allowed_signers_line": line})
        return ExitCode.OK
    c = console()
    c.print(f"private key [bold]{private}[/bold] (mode 0600: keep it to yourself)")
    c.print(f"public key  [bold]{public}[/bold]")
    c.print("add this line to the allowed_signers file named by the policy (approvals.allowed_signers):")
    c.print(line, soft_wrap=True)
    return ExitCode.OK
