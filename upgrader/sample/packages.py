"""The sample product's release line and the builder that turns it into packages and a catalog.

``RELEASES`` is the fixed history the demo, tests and benchmarks upgrade through: healthy full
releases, one patch, three deliberately faulty builds and one that changes the management API.
``build_packages`` writes each as ``sample-middleware-<version>.tar.gz`` plus ``catalog.yaml``.

This module does not sign catalogs, install packages or start anything; package format and
catalog format belong to ``upgrader.trust.package`` and ``upgrader.trust.catalog``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..trust.catalog import write_catalog
from ..trust.package import CHANGE_KINDS, Built, PackageMeta, build_package
from .tree import INSTALLED_FIRST, LEGACY_COMPAT, PRODUCT, write_patch_tree, write_tree

__all__ = ["RELEASES", "SampleRelease", "build_packages", "package_name"]

# Every file in a built tree gets this mtime, so building twice gives byte-identical packages.
_FIXED_MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class SampleRelease:
    """One release of the sample product and how it is packaged."""

    version: str
    kind: str = "full"  # "full" | "patch"
    requires: str | None = None  # patches only, e.g. ">=7.0.4.1, <7.0.4.3"
    changes: tuple[str, ...] = ()  # declared changes, from upgrader.trust.package.CHANGE_KINDS
    fault: str | None = None  # content of lib/FAULT: "unhealthy", "no-start", "crash-after:N"
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("full", "patch"):
            raise ValueError(f"{self.version}: kind must be 'full' or 'patch', got {self.kind!r}")
        if self.kind == "full" and self.requires:
            raise ValueError(f"{self.version}: only patches have 'requires'")
        for c in self.changes:
            if c not in CHANGE_KINDS:
                raise ValueError(f"{self.version}: unknown change kind {c!r} (use {', '.join(CHANGE_KINDS)})")


RELEASES: tuple[SampleRelease, ...] = (
    SampleRelease(INSTALLED_FIRST, description="the version installed first"),
    SampleRelease("7.0.4.2", description="maintenance release"),
    SampleRelease("7.0.4.3", kind="patch", requires=">=7.0.4.1, <7.0.4.3",
                  description="security patch; removes the deprecated legacy_compat module"),
    SampleRelease("7.0.4.5", fault="unhealthy", description="installs fine but fails its health probes"),
    SampleRelease("7.0.4.6", fault="no-start", description="the service cannot start"),
    SampleRelease("7.0.4.7", fault="crash-after:1.5", description="dies during the observation window"),
    SampleRelease("7.0.4.8", changes=("external_interface",),
                  description="changes the management API: never free"),
    SampleRelease("7.0.5.0", description="maintenance release"),
    SampleRelease("7.1.0.0", description="a minor-version upgrade: not free"),
)


def package_name(version: str) -> str:
    """The file name of a release's package: ``sample-middleware-<version>.tar.gz``."""
    return f"{PRODUCT}-{version}.tar.gz"


def _fix_mtimes(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (_FIXED_MTIME, _FIXED_MTIME))
        os.utime(dirpath, (_FIXED_MTIME, _FIXED_MTIME))


def _build_one(out_dir: Path, release: SampleRelease, filler_bytes: int, compresslevel: int) -> Built:
    with tempfile.TemporaryDirectory(prefix=f"{PRODUCT}-{release.version}-") as tmp:
        tree = Path(tmp) / "tree"
        if release.kind == "patch":
            write_patch_tree(tree, release)
            remove: tuple[str, ...] = (LEGACY_COMPAT,)
        else:
            write_tree(tree, release.version, fault=release.fault, filler_bytes=filler_bytes)
            remove = ()
        _fix_mtimes(tree)
        meta = PackageMeta(product=PRODUCT, version=release.version, kind=release.kind,
                           requires=release.requires, changes=release.changes, remove=remove,
                           description=release.description)
        return build_package(tree, out_dir / package_name(release.version), meta,
                             compresslevel=compresslevel)


def build_packages(out_dir: Path, *, releases: Iterable[SampleRelease] = RELEASES, filler_bytes: int = 0,
                   serial: int = 1, compresslevel: int = 6) -> Path:
    """Build every release into ``out_dir`` and write ``out_dir/catalog.yaml``; return its path.

    Full releases carry ``filler_bytes`` of ``lib/modules`` filler; patches never do. Packages
    are reproducible (fixed mtimes, owners and order), so rebuilding gives the same sha256.
    """
    out_dir = Path(out_dir)
    releases = tuple(releases)
    versions = [r.version for r in releases]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise ValueError(f"releases listed twice: {', '.join(duplicates)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    built = [_build_one(out_dir, r, filler_bytes, compresslevel) for r in releases]
    return write_catalog(out_dir, built, serial=serial)
