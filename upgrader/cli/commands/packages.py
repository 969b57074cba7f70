"""``upgrader package build|verify``."""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

from ...core.errors import InputError
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
    from ...hostagent.common import AgentError
    from ...hostagent.extract import check_members
    from ...trust.catalog import load_catalog, verify_package_file
    from ...trust.package import file_digest, read_meta

    pkg = Path(args.pkg)
    meta = read_meta(pkg)
    info: dict[str, object] = {"package": str(pkg), "product": meta.product, "version": meta.version,
                               "kind": meta.kind, "changes": list(meta.changes)}
    limits: dict[str, int] = {}
    if args.catalog:
        catalog = load_catalog(args.catalog)
        entry = catalog.find(meta.product, meta.version)
        if entry is None:
            raise InputError(f"the catalog has no entry for {meta.product} {meta.version}", path=str(catalog.path))
        verify_package_file(pkg, entry)
        limits = {"members": entry.max_members, "unpacked_bytes": entry.max_unpacked_bytes}
        info["catalog"] = str(catalog.path)
    try:
        with tarfile.open(pkg, "r:gz") as tar:
            members = check_members(tar, limits)
    except AgentError as e:
        raise InputError(str(e), path=str(pkg), hint="do not install this package; ask the vendor") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"damaged package: {e}", path=str(pkg)) from None
    info.update(members=len(members), sha256=file_digest(pkg), size=pkg.stat().st_size, ok=True)
    if args.json:
        print_json(info)
    else:
        against = " against the catalog" if args.catalog else " (no catalog given: digest not checked)"
        console().print(f"[green]✔[/green] {pkg}: {meta.product} {meta.version} ({meta.kind}), "
                        f"{len(members)} safe members{against}")
    return ExitCode.OK
