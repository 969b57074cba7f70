"""``upgrader catalog build|sign``: the vendor's side of the signed catalog."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...core.errors import InputError
from ...core.exit_codes import ExitCode
from ._common import console, print_json


def cmd_build(args: argparse.Namespace) -> int:
    from ...trust.catalog import write_catalog
    from ...trust.package import Built, file_digest, read_meta

    directory = Path(args.dir)
    packages = sorted(directory.glob("*.tar.gz"))
    if not packages:
        raise InputError("no .tar.gz packages in the directory", path=str(directory))
    built = []
    for p in packages:
        import tarfile

        meta = read_meta(p)
        with tarfile.open(p, "r:gz") as tar:
            members = tar.getmembers()
        built.append(Built(p, file_digest(p), p.stat().st_size, meta, len(members),
                           sum(m.size for m in members if m.isreg())))
    path = write_catalog(directory, built, serial=args.serial)
    sig = _sign(path, args.key) if args.key else None
    if args.json:
        print_json({"catalog": str(path), "packages": len(built), "serial": args.serial,
                    "signature": str(sig) if sig else None})
    else:
        console().print(f"wrote {path} ({len(built)} packages, serial {args.serial})"
                        + (f", signed: {sig}" if sig else "; not signed yet: upgrader catalog sign"))
    return ExitCode.OK


def _sign(path: Path, key: str) -> Path:
    from ...trust.keys import load_private_key
    from ...trust.catalog_trust import sign_catalog

    return sign_catalog(path, load_private_key(key))


def cmd_sign(args: argparse.Namespace) -> int:
    path = Path(args.catalog)
    if path.is_dir():
        path = path / "catalog.yaml"
    if not path.is_file():
        raise InputError("catalog not found", path=str(path))
    sig = _sign(path, args.key)
    if args.json:
        print_json({"catalog": str(path), "signature": str(sig)})
    else:
        console().print(f"signed {path} -> {sig}")
    return ExitCode.OK
