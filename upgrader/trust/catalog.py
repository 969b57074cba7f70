"""The package catalog: ``catalog.yaml`` listing packages with their sha256, size and limits,
and the vendor's security advisories.

Reading, writing and checking a package file against its entry; reading and validating the
advisories (``Advisory``: id, title, severity, product, affected versions and ranges, fixed
versions or a hotfix package of the catalog). Signature checks of the catalog itself live in
``trust.py``; which hosts an advisory concerns is ``available.py``'s business; this module only
reads and writes the document.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..core.document import Section
from ..core.errors import InputError
from .package import Built, PackageMeta, file_digest, read_meta
from .verified import VerifiedPackages, now_ns

if TYPE_CHECKING:
    from version_policy import Version, VersionRange

__all__ = ["Catalog", "CatalogEntry", "Advisory", "load_catalog", "write_catalog", "verify_package_file",
           "CATALOG_NAME", "DEFAULT_MAX_MEMBERS", "SEVERITIES"]

CATALOG_NAME = "catalog.yaml"
DEFAULT_MAX_MEMBERS = 100_000
SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class CatalogEntry:
    file: str
    product: str
    version: str
    kind: str
    sha256: str
    size: int
    requires: str | None = None
    changes: tuple[str, ...] = ()
    max_members: int = DEFAULT_MAX_MEMBERS
    max_unpacked_bytes: int = 0
    description: str = ""

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"file": self.file, "product": self.product, "version": self.version,
                             "kind": self.kind, "sha256": self.sha256, "size": self.size}
        if self.requires:
            d["requires"] = self.requires
        d["changes"] = list(self.changes)
        d["limits"] = {"members": self.max_members, "unpacked_bytes": self.max_unpacked_bytes}
        if self.description:
            d["description"] = self.description
        return d


@dataclass(frozen=True)
class Advisory:
    """A security advisory: which versions of ``product`` are affected, and what fixes it.

    ``affected`` holds each item as written and parsed: a ``VersionRange`` (``>=7.0.4.0, <7.0.4.3``)
    or a single ``Version`` (``7.0.4.2-P1``). ``fixed`` are versions that fix it; ``hotfix`` is the
    file name of a package of this catalog that fixes it.
    """

    id: str
    title: str
    severity: str
    product: str
    affected: tuple[tuple[str, Version | VersionRange], ...]
    fixed: tuple[str, ...] = ()
    hotfix: str | None = None
    url: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"id": self.id, "title": self.title, "severity": self.severity, "product": self.product,
                             "affected": [text for text, _ in self.affected], "fixed": list(self.fixed)}
        for key in ("hotfix", "url", "description"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        return d


@dataclass(frozen=True)
class Catalog:
    path: Path
    serial: int
    published: str
    entries: tuple[CatalogEntry, ...]
    advisories: tuple[Advisory, ...] = field(default=())
    #: the exact bytes of catalog.yaml that were parsed (read once: the signature is checked over these)
    content: bytes = field(default=b"", repr=False, compare=False)
    #: the operator's record of package files already verified in full (set by the trusted load for a HOME)
    verified: VerifiedPackages | None = field(default=None, repr=False, compare=False)

    @property
    def sha256(self) -> str:
        """The sha256 of the bytes that were parsed (never of a second read of the file)."""
        import hashlib

        return hashlib.sha256(self.content).hexdigest()

    @property
    def directory(self) -> Path:
        return self.path.parent

    def package_path(self, entry: CatalogEntry) -> Path:
        return self.directory / entry.file

    def find(self, product: str, version: str) -> CatalogEntry | None:
        from version_policy import parse_version

        want = parse_version(version)
        for e in self.entries:
            if e.product == product and parse_version(e.version) == want:
                return e
        return None

    def products(self) -> list[str]:
        return sorted({e.product for e in self.entries})


def _entry(s: Section) -> CatalogEntry:
    limits = s.section("limits", {})
    assert limits is not None
    entry = CatalogEntry(
        file=s.str("file", pattern=r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}",
                   describe="a file name beside catalog.yaml (no directories)"),
        product=s.str("product"),
        version=s.str("version"),
        kind=s.choice("kind", ("full", "patch"), "full"),
        sha256=s.str("sha256", pattern=r"[0-9a-f]{64}", describe="64 lowercase hex digits"),
        size=s.int("size", minimum=1),
        requires=s.str("requires", None),
        changes=tuple(s.str_list("changes", [])),
        max_members=limits.int("members", DEFAULT_MAX_MEMBERS, minimum=1),
        max_unpacked_bytes=limits.int("unpacked_bytes", 0, minimum=0),
        description=s.str("description", ""),
    )
    limits.done()
    s.done()
    return entry


def _affected_item(text: str) -> Version | VersionRange:
    """``>=7.0.4.0, <7.0.4.3`` is a range, ``7.0.4.2-P1`` one version; ValueError when malformed."""
    from version_policy import parse_range, parse_version

    stripped = text.strip()
    return parse_range(stripped) if stripped[:1] in "<>=!" or "," in stripped else parse_version(stripped)


def _advisory(s: Section, products: list[str], files: dict[str, CatalogEntry]) -> Advisory:
    from version_policy import parse_version

    product = s.str("product", products[0] if len(products) == 1 else None)
    if product is None:
        raise s.error("product", "required key is missing (the catalog does not list exactly one product: "
                                 f"{', '.join(products) or 'none'})", hint="add 'product:' to the advisory")
    affected = []
    for i, text in enumerate(s.str_list("affected")):
        try:
            affected.append((text, _affected_item(text)))
        except ValueError as e:
            raise s.error(f"affected[{i}]", str(e)) from None
    if not affected:
        raise s.error("affected", "must list at least one affected version or range")
    fixed = s.str_list("fixed", [])
    for i, text in enumerate(fixed):
        try:
            parse_version(text)
        except ValueError as e:
            raise s.error(f"fixed[{i}]", str(e)) from None
    hotfix = s.str("hotfix", None, pattern=r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}",
                   describe="the file name of a package of this catalog")
    if hotfix is not None and (hotfix not in files or files[hotfix].product != product):
        raise s.error("hotfix", f"{hotfix!r} is not a {product} package of this catalog",
                      hint="name the file of a package listed under packages")
    if not fixed and hotfix is None:
        raise s.error("fixed", "an advisory needs fixed versions or a hotfix package", hint="add 'fixed: [VERSION]'")
    advisory = Advisory(
        id=s.str("id", pattern=r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}",
                 describe="an advisory id like TW-2026-0001 (letters, digits, . _ : -)"),
        title=s.str("title"), severity=s.choice("severity", SEVERITIES), product=product,
        affected=tuple(affected), fixed=tuple(fixed), hotfix=hotfix, url=s.str("url", ""),
        description=s.str("description", ""))
    s.done()
    return advisory


def read_catalog_bytes(p: Path) -> bytes:
    """catalog.yaml in one read (at most MAX_YAML_BYTES): these bytes are parsed, hashed and signature-checked,
    so a file that changes between reads (a FIFO, a file replaced meanwhile) cannot pass one check and feed
    another."""
    from ..core.document import MAX_YAML_BYTES

    try:
        with open(p, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except IsADirectoryError as e:
        raise InputError("is a directory; expected the catalog file", path=str(p)) from e
    except FileNotFoundError as e:
        raise InputError("catalog not found", path=str(p), hint="check the path") from e
    except OSError as e:
        raise InputError(f"cannot read catalog: {e.strerror}", path=str(p)) from e
    if len(data) > MAX_YAML_BYTES:
        raise InputError(f"catalog is larger than {MAX_YAML_BYTES} bytes", path=str(p),
                         hint="this does not look like a catalog; check the path")
    return data


def load_catalog(path: str | Path) -> Catalog:
    """Read catalog.yaml once and parse exactly those bytes (``Catalog.content``)."""
    from ..core.document import parse_yaml

    p = Path(path)
    if p.is_dir():
        p = p / CATALOG_NAME
    content = read_catalog_bytes(p)
    s = Section(parse_yaml(content, source=str(p), what="catalog"), source=str(p), what="a catalog")
    s.int("format", 1, minimum=1, maximum=1)
    serial = s.int("serial", minimum=1)
    published = s.str("published", "")
    entries = tuple(_entry(e) for e in s.sections("packages", what="package entry"))
    products = sorted({e.product for e in entries})
    files = {e.file: e for e in entries}
    advisories = tuple(_advisory(a, products, files) for a in s.sections("advisories", [], what="advisory"))
    s.done()
    ids: set[str] = set()
    for i, a in enumerate(advisories):
        if a.id in ids:
            raise InputError(f"advisory {a.id} is listed twice", path=str(p), key=f"advisories[{i}].id")
        ids.add(a.id)
    seen: set[tuple[str, str]] = set()
    for e in entries:
        if (e.product, e.version) in seen:
            raise InputError(f"package {e.product} {e.version} is listed twice", path=str(p))
        seen.add((e.product, e.version))
    return Catalog(path=p, serial=serial, published=published, entries=entries, advisories=advisories,
                   content=content)


def write_catalog(directory: str | Path, built: Iterable[Built], *, serial: int,
                  published: _dt.datetime | None = None) -> Path:
    """Write ``catalog.yaml`` in ``directory`` for packages that lie in that directory."""
    import yaml

    directory = Path(directory)
    entries = []
    for b in built:
        if b.path.parent.resolve() != directory.resolve():
            raise InputError("catalog packages must lie beside catalog.yaml", path=str(b.path))
        entries.append(CatalogEntry(
            file=b.path.name, product=b.meta.product, version=b.meta.version, kind=b.meta.kind,
            sha256=b.sha256, size=b.size, requires=b.meta.requires, changes=b.meta.changes,
            max_members=max(b.members * 2, 100), max_unpacked_bytes=max(b.unpacked_bytes * 2, 1 << 20),
            description=b.meta.description).to_dict())
    doc = {"format": 1, "serial": serial,
           "published": (published or _dt.datetime.now(_dt.timezone.utc)).isoformat(timespec="seconds"),
           "packages": entries}
    out = directory / CATALOG_NAME
    tmp = out.with_suffix(".yaml.part")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, out)
    return out


def verify_package_file(path: str | Path, entry: CatalogEntry, verified: VerifiedPackages | None = None) -> PackageMeta:
    """Check size, then sha256, then that package.yaml agrees with the catalog entry, then every member.

    ``verified``: the operator's record of files already verified in full (trust/verified.py): a file it shows
    unchanged since it passed as this entry's sha256 and limits is not hashed and walked again; one that
    passes now is recorded there."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError as e:
        raise InputError("package file not found", path=str(p), hint="download it beside catalog.yaml") from e
    size = st.st_size
    if size != entry.size:
        raise InputError(f"size {size} differs from the catalog's {entry.size} bytes: the package was altered "
                         "or truncated", path=str(p), hint="download the package again; do not use this file")
    limits = (entry.max_members, entry.max_unpacked_bytes)
    known = verified is not None and verified.passed(p, st, entry.sha256, limits)
    started = now_ns()
    if not known:
        digest = file_digest(p)
        if digest != entry.sha256:
            raise InputError(f"sha256 {digest} differs from the catalog's {entry.sha256}: the package was altered",
                             path=str(p), hint="download the package again; do not use this file")
    meta = read_meta(p)
    if (meta.product, meta.version, meta.kind) != (entry.product, entry.version, entry.kind):
        raise InputError(f"package.yaml says {meta.product} {meta.version} ({meta.kind}) but the catalog says "
                         f"{entry.product} {entry.version} ({entry.kind})", path=str(p))
    if not known:
        _check_members(p, entry)
        if verified is not None:
            verified.remember(p, st, started, entry.sha256, limits)
    return meta


_CHECKED: set[tuple[str, int, int]] = set()  # (sha256, limits) of packages whose members passed, this process


def _check_members(p: Path, entry: CatalogEntry) -> None:
    """The host agent's member checks, run here too: a hostile package is refused before any host is touched.
    The verdict is remembered by digest (the bytes were just hashed), so plan and run in one process check once."""
    import tarfile

    from ..hostagent.common import AgentError
    from ..hostagent.extract import check_members
    from ..hostagent.tarheaders import open_package

    key = (entry.sha256, entry.max_members, entry.max_unpacked_bytes)
    if key in _CHECKED:
        return

    try:
        with open_package(p) as tar:
            check_members(tar, {"members": entry.max_members, "unpacked_bytes": entry.max_unpacked_bytes})
    except AgentError as e:
        raise InputError(str(e), path=str(p), hint="do not install this package; ask the vendor") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"damaged package: {e}", path=str(p),
                         hint="download the package again; do not use this file") from None
    _CHECKED.add(key)
