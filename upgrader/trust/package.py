"""Packages: a ``.tar.gz`` whose root holds ``package.yaml`` and the product files.

This module builds packages, reads their metadata and checks them against a catalog entry on
the controller. It never extracts a package: extraction happens on the host, in the agent,
with its own member checks (see ``hostagent/extract.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..core.document import Section, parse_yaml
from ..core.errors import InputError

__all__ = ["PackageMeta", "Built", "CHANGE_KINDS", "build_package", "read_meta", "file_digest",
           "META_NAME"]

META_NAME = "package.yaml"
CHANGE_KINDS = ("external_interface", "config_format", "monitoring")
_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


@dataclass(frozen=True)
class PackageMeta:
    product: str
    version: str
    kind: str = "full"
    requires: str | None = None
    changes: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    description: str = ""

    def to_yaml_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"format": 1, "product": self.product, "version": self.version,
                             "kind": self.kind}
        if self.requires:
            d["requires"] = self.requires
        d["changes"] = list(self.changes)
        if self.remove:
            d["remove"] = list(self.remove)
        if self.description:
            d["description"] = self.description
        return d

    @classmethod
    def from_data(cls, data: object, source: str) -> "PackageMeta":
        s = Section(data, source=source, what="package metadata")
        s.int("format", 1, minimum=1, maximum=1)
        meta = cls(
            product=s.str("product", pattern=_NAME_RE, describe="a product name like 'tongweb'"),
            version=_version_text(s, "version"),
            kind=s.choice("kind", ("full", "patch"), "full"),
            requires=s.str("requires", None),
            changes=tuple(s.str_list("changes", [])),
            remove=tuple(s.str_list("remove", [])),
            description=s.str("description", ""),
        )
        s.done()
        for i, c in enumerate(meta.changes):
            if c not in CHANGE_KINDS:
                raise s.error(f"changes[{i}]", f"unknown change kind {c!r}",
                              hint="use " + ", ".join(CHANGE_KINDS))
        for i, r in enumerate(meta.remove):
            if r.startswith("/") or ".." in Path(r).parts or "\\" in r:
                raise s.error(f"remove[{i}]", f"must be a relative path inside the product, got {r!r}")
        if meta.kind == "full" and meta.remove:
            raise s.error("remove", "only patch packages list files to remove (a full package replaces the tree)")
        return meta


def _version_text(s: Section, key: str) -> str:
    from version_policy import VersionError, parse_version

    text = s.str(key)
    try:
        parse_version(text)
    except VersionError as e:
        raise s.error(key, str(e)) from None
    return str(text).strip()


@dataclass(frozen=True)
class Built:
    path: Path
    sha256: str
    size: int
    meta: PackageMeta
    members: int = 0
    unpacked_bytes: int = 0
    extra: dict[str, object] = field(default_factory=dict)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_package(src: str | Path, out: str | Path, meta: PackageMeta, *, compresslevel: int = 6) -> Built:
    """Pack directory ``src`` with ``meta`` into ``out`` (reproducible: sorted, fixed mtimes/owners)."""
    import yaml

    src = Path(src)
    if not src.is_dir():
        raise InputError("not a directory", path=str(src), hint="give the directory that holds the product files")
    if (src / META_NAME).exists():
        raise InputError(f"the source directory already holds a {META_NAME}", path=str(src),
                         hint="the builder writes package.yaml itself from the command-line options")
    out = Path(out)
    if out.is_dir():
        raise InputError("is a directory; give the package file to write, e.g. DIR/product-1.0.tar.gz",
                         path=str(out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the package's directory: {e.strerror}", path=str(out.parent)) from e
    meta_bytes = yaml.safe_dump(meta.to_yaml_dict(), sort_keys=False, allow_unicode=True).encode()
    members = 0
    unpacked = 0
    tmp = out.with_name(f".{out.name}.{os.urandom(4).hex()}.part")  # a new file, never one (or a link) found there
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644),
                       "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=compresslevel) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    info = tarfile.TarInfo(META_NAME)
                    info.size = len(meta_bytes)
                    info.mode = 0o644
                    tar.addfile(info, io.BytesIO(meta_bytes))
                    for path in _walk_sorted(src):
                        rel = path.relative_to(src).as_posix()
                        st = path.lstat()
                        info = tar.gettarinfo(str(path), arcname=rel)
                        info.uid = info.gid = 0
                        info.uname = info.gname = "root"
                        info.mtime = int(st.st_mtime)
                        if info.isreg():
                            with open(path, "rb") as f:
                                tar.addfile(info, f)
                            unpacked += info.size
                        elif info.isdir() or info.issym():
                            tar.addfile(info)
                        else:
                            raise InputError("only regular files, directories and symlinks can be packaged",
                                             path=str(path))
                        members += 1
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except OSError as e:
        _discard(tmp)
        raise InputError(f"cannot write the package: {e.strerror}: {e.filename}", path=str(out)) from e
    except InputError:
        _discard(tmp)
        raise
    return Built(path=out, sha256=file_digest(out), size=out.stat().st_size, meta=meta,
                 members=members + 1, unpacked_bytes=unpacked + len(meta_bytes))


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _walk_sorted(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames):
            yield base / name
        for name in sorted(filenames):
            yield base / name


def read_meta(path: str | Path) -> PackageMeta:
    """Read ``package.yaml`` from a package without extracting anything else; it must be among the package's
    first members (tarheaders.meta_member: the members read before it are kept in memory)."""
    from ..hostagent.common import AgentError
    from ..hostagent.tarheaders import meta_member, open_package

    p = Path(path)
    try:
        with open_package(p) as tar:
            member = meta_member(tar, "the package")
            if member is not None:
                if not member.isreg() or member.size > 1 << 20:
                    raise InputError(f"{META_NAME} is not a small regular file", path=str(p))
                f = tar.extractfile(member)
                assert f is not None
                data = parse_yaml(f.read(), source=f"{p}:{META_NAME}", what="package metadata")
                return PackageMeta.from_data(data, f"{p}:{META_NAME}")
    except FileNotFoundError as e:
        raise InputError("package not found", path=str(p)) from e
    except AgentError as e:
        raise InputError(str(e), path=str(p), hint="do not install this package; ask the vendor") from None
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
        raise InputError(f"not a readable .tar.gz package ({e})", path=str(p),
                         hint="the file is damaged or not a package; download it again") from e
    raise InputError(f"the package has no {META_NAME} at its root", path=str(p),
                     hint="build packages with 'upgrader package build'")
