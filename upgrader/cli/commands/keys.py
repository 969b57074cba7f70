"""``upgrader keys generate``: an engineer's (or vendor's) Ed25519 SSH key and its allowed_signers line."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...core.errors import InputError
from ...core.exit_codes import ExitCode
from ._common import console, print_json


def cmd_generate(args: argparse.Namespace) -> int:
    from ...trust.keys import generate_key

    if "/" in args.name:  # a path, as with ssh-keygen -f: relative to the current directory
        if args.dir:
            raise InputError(f"NAME {args.name!r} is a path and --dir {args.dir!r} names a directory too",
                             hint="give a bare NAME with --dir, or only the path")
        path = Path(args.name)
    else:  # a bare name: in --dir, else in HOME/keys
        path = (Path(args.dir) if args.dir else args.home / "keys") / args.name
    private, public, line = generate_key(path, args.principal or path.name)
    if args.json:
        print_json({"private_key": str(private), "public_key": str(public), "allowed_signers_line": line})
        return ExitCode.OK
    c = console()
    c.print(f"private key [bold]{private}[/bold] (mode 0600: keep it to yourself)")
    c.print(f"public key  [bold]{public}[/bold]")
    c.print("add this line to the allowed_signers file named by the policy (approvals.allowed_signers):")
    c.print(line, soft_wrap=True)
    return ExitCode.OK
