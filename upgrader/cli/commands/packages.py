"""``upgrader package build|verify``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...core.exit_codes import ExitCode
from ._common import console, print_json


def cmd_build(args: argparse.Namespace) -> int:
    from ...api import build_package

    built = build_package(Path(args.dir), Path(args.output), product=args.product, version=args.pkg_version,
                          kind=args.kind, requires=args.requires, remove=args.remove, changes=args.changes,
                          description=args.description or "")
    info = {"package": str(built.file), "sha256": built.sha256, "size": built.size, "members": built.members,
            "product": built.product, "version": built.version, "kind": built.kind}
    if args.json:
        print_json(info)
    else:
        console().print(f"built [bold]{built.file}[/bold]: {built.product} {built.version} ({built.kind}), "
                        f"{built.members} members, {built.size} bytes, sha256 {built.sha256}")
    return ExitCode.OK


def cmd_verify(args: argparse.Namespace) -> int:
    from ...api import verify_package

    checked = verify_package(Path(args.pkg), catalog=Path(args.catalog) if args.catalog else None)
    if args.json:
        print_json(checked.to_dict())
    else:
        against = " against the catalog" if args.catalog else " (no catalog given: digest not checked)"
        console().print(f"[green]✔[/green] {checked.file}: {checked.product} {checked.version} ({checked.kind}), "
                        f"{checked.members} safe members{against}")
    return ExitCode.OK
