"""``upgrader catalog build|sign``: the vendor's side of the signed catalog (``upgrader.api.build_catalog``,
``sign_catalog``); this module parses the arguments and prints."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...core.exit_codes import ExitCode
from ._common import console, print_json


def cmd_build(args: argparse.Namespace) -> int:
    from ...api import build_catalog

    built = build_catalog(Path(args.dir), serial=args.serial, key=Path(args.key) if args.key else None)
    sig = built.signature
    if args.json:
        print_json({"catalog": str(built.file), "packages": built.packages, "serial": built.serial,
                    "signature": str(sig) if sig else None})
    else:
        console().print(f"wrote {built.file} ({built.packages} packages, serial {built.serial})"
                        + (f", signed: {sig}" if sig else "; not signed yet: upgrader catalog sign"))
    return ExitCode.OK


def cmd_sign(args: argparse.Namespace) -> int:
    from ...api import sign_catalog

    sig = sign_catalog(Path(args.catalog), key=Path(args.key))
    path = Path(args.catalog)
    if path.is_dir():
        path = path / "catalog.yaml"
    if args.json:
        print_json({"catalog": str(path), "signature": str(sig)})
    else:
        console().print(f"signed {path} -> {sig}")
    return ExitCode.OK
