"""Hostile packages, built by hand with tarfile: refused by `package verify`, by planning and by the host agent."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import plan_to, product_digest, upgrader
from hoststate import assert_host_untouched, host_state, take_lock
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox
from upgrader.fleet.transport.base import AgentClient, AgentFailure
from upgrader.fleet.transport.local import LocalTransport

META = b"format: 1\nproduct: sample-middleware\nversion: 7.0.4.2\nkind: full\nchanges: []\n"
PROTECTED = "escaped-by-package.txt"  # a name no package may ever write outside its tree


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x\n", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o777 if kind == tarfile.SYMTYPE else 0o644
    tar.addfile(info)


def _normal_tree(tar: tarfile.TarFile) -> None:
    """The harmless part of every hostile package: looks like a sample-middleware 7.0.4.2 release."""
    _file(tar, "package.yaml", META)
    for d in ("bin", "lib", "conf"):
        _special(tar, d, tarfile.DIRTYPE)
    _file(tar, "lib/VERSION", b"7.0.4.2\n")
    _file(tar, "conf/server.conf", b"port = 18080\n")


HOSTILE: dict[str, tuple[Callable[[tarfile.TarFile], None], str]] = {
    "dotdot member": (lambda t: _file(t, f"lib/../../{PROTECTED}"), "points outside the install dir"),
    "leading dotdot": (lambda t: _file(t, f"../{PROTECTED}"), "points outside the install dir"),
    "absolute path": (lambda t: _file(t, f"/tmp/{PROTECTED}"), "points outside the install dir"),
    "symlink escaping": (lambda t: _special(t, "lib/escape", tarfile.SYMTYPE, "../../../etc"),
                         "escapes the install dir"),
    "absolute symlink": (lambda t: _special(t, "lib/passwd", tarfile.SYMTYPE, "/etc/passwd"),
                         "escapes the install dir"),
    "hardlink": (lambda t: _special(t, "lib/hard", tarfile.LNKTYPE, "lib/VERSION"), "hard link"),
    "character device": (lambda t: _special(t, "lib/null", tarfile.CHRTYPE), "device or special file"),
    "block device": (lambda t: _special(t, "lib/sda", tarfile.BLKTYPE), "device or special file"),
    "fifo": (lambda t: _special(t, "lib/pipe", tarfile.FIFOTYPE), "device or special file"),
    "write through own symlink": (
        lambda t: (_special(t, "lib/plugins", tarfile.SYMTYPE, "../conf"), _file(t, "lib/plugins/server.conf")),
        "lies under the symlink"),
    "duplicate member": (lambda t: _file(t, "lib/VERSION", b"6.6.6\n"), "appears twice"),
    "huge pax header": (lambda t: _pax_file(t, "lib/README.txt", {"comment": "a" * 100_000}),
                        "carries a pax header of"),
    "huge GNU long name": (lambda t: _file(t, "lib/" + "n" * 100_000), "carries a GNU long name header of"),
    # shapes where a raw header walk and tarfile disagree, and tarfile's own parse reads without a bound
    "pax header behind a sized directory": (lambda t: hidden_pax(t, 100_000), "carries a pax header of"),
    "GNU sparse 1.0 map": (lambda t: sparse_map(t, 10), "is a sparse file"),
    "old GNU sparse extension chain": (lambda t: sparse_chain(t, 3), "is a sparse file"),
    # values a pax header sets (attack14r17): tarfile applied them unchecked
    "pax global size": (lambda t: global_size(t, 2 << 20),
                        "'lib/neg.txt' carries a pax header that is global and sets a size for every member after it"),
    "negative pax size": (lambda t: pax_sized(t, "lib/neg.txt", -(1 << 30), b""),
                          "'lib/neg.txt' carries a pax header that sets a negative size (-1073741824)"),
    "pax size other than the header's": (lambda t: pax_sized(t, "lib/README.txt", 5, b"x\n"),
                                         "sets a size (5) other than its header's (2)"),
    "malformed pax header": (lambda t: malformed_pax(t, 8 << 10),
                             "'lib/README.txt' carries a pax header that is not a list of"),
}


def _pax_file(tar: tarfile.TarFile, name: str, pax: dict[str, str]) -> None:
    """A member preceded by a pax extended header (the archive is GNU format: this one member is written as pax)."""
    was, tar.format = tar.format, tarfile.PAX_FORMAT
    try:
        info = tarfile.TarInfo(name)
        info.pax_headers = pax
        tar.addfile(info, io.BytesIO(b""))
    finally:
        tar.format = was


BLOCK = tarfile.BLOCKSIZE


def _raw(tar: tarfile.TarFile, data: bytes) -> None:
    """Whole blocks written as they are into the archive being built (headers tarfile itself would not write)."""
    assert len(data) % BLOCK == 0
    assert tar.fileobj is not None
    tar.fileobj.write(data)
    tar.offset += len(data)


def _summed(header: bytearray) -> bytes:
    """A raw header with its checksum field recomputed."""
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _header(name: str, kind: bytes, size: int) -> bytes:
    """A ustar header whose size field says ``size`` whatever its type (tarfile writes 0 for a directory)."""
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, 0o755
    header = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    header[124:136] = b"%011o\0" % size
    return _summed(header)


def hidden_pax(tar: tarfile.TarFile, comment: int) -> None:
    """A directory whose size field says 512 (tarfile skips no data for a directory, a walk that trusts the field
    skips the next block), then a pax header with a ``comment`` of ``comment`` bytes, then lib/README.txt."""
    _raw(tar, _header("lib/notes/", tarfile.DIRTYPE, BLOCK))
    length = len(" comment=\n") + comment
    length += len(str(length + len(str(length))))
    record_head = b"%d comment=" % length
    _raw(tar, _header("././@PaxHeader", tarfile.XHDTYPE, length))
    assert tar.fileobj is not None
    chunk, left = b"a" * (1 << 20), comment
    tar.fileobj.write(record_head)
    while left:
        tar.fileobj.write(chunk[:min(left, len(chunk))])
        left -= min(left, len(chunk))
    tar.fileobj.write(b"\n" + bytes(-length % BLOCK))
    tar.offset += length + (-length % BLOCK)
    _file(tar, "lib/README.txt")


def pax_records(records: dict[str, str]) -> bytes:
    """The data of a pax header holding ``records``, each "%d %s=%s\\n" with its own length first."""
    body = b""
    for keyword, value in records.items():
        record = b" %s=%s\n" % (keyword.encode(), value.encode())
        length = len(record) + 1
        while len(b"%d" % length) + len(record) != length:
            length += 1
        body += b"%d" % length + record
    return body


def _pax_raw(tar: tarfile.TarFile, kind: bytes, data: bytes) -> None:
    """A pax header (``kind`` x or g) whose data is ``data`` as it is, written raw (tarfile checks what it writes)."""
    _raw(tar, _header("././@PaxHeader", kind, len(data)) + data + bytes(-len(data) % BLOCK))


def _reg_raw(tar: tarfile.TarFile, name: str, data: bytes, size: int | None = None) -> None:
    """A regular file whose header's size field says ``size`` (default: its data's length), then its data."""
    header = bytearray(_header(name, tarfile.REGTYPE, len(data) if size is None else size))
    header[100:108] = b"%07o\0" % 0o644
    _raw(tar, _summed(header) + data + bytes(-len(data) % BLOCK))


def global_size(tar: tarfile.TarFile, big: int) -> None:
    """attack14r17 #1: a global pax header sets size=-1 GiB for every member after it, so the empty lib/neg.txt
    counts -1 GiB toward the unpacked-bytes total, and lib/big.bin (its size ``big`` set by its own pax header,
    its data zeros) is then not counted against the catalog's limit."""
    _pax_raw(tar, tarfile.XGLTYPE, pax_records({"size": str(-(1 << 30))}))
    _reg_raw(tar, "lib/neg.txt", b"")
    _pax_raw(tar, tarfile.XHDTYPE, pax_records({"size": str(big)}))
    _reg_raw(tar, "lib/big.bin", bytes(big), size=0)


def pax_sized(tar: tarfile.TarFile, name: str, size: int, data: bytes) -> None:
    """A pax header setting ``size`` for the regular file ``name`` whose raw header holds ``data``'s size."""
    _pax_raw(tar, tarfile.XHDTYPE, pax_records({"size": str(size)}))
    _reg_raw(tar, name, data)


def malformed_pax(tar: tarfile.TarFile, size: int) -> None:
    """attack14r17 #3's shape, malformed: a record, then a run of digits to the header's ``size``. Python 3.11.7's
    tarfile searched it with a regular expression quadratic in that run (CVE-2024-6232), then skipped it."""
    first = pax_records({"comment": "ab"})
    _pax_raw(tar, tarfile.XHDTYPE, first + b"1" * (size - len(first)))
    _file(tar, "lib/README.txt")


def sparse_map(tar: tarfile.TarFile, entries: int) -> None:
    """lib/README.txt as a GNU sparse 1.0 member: a small pax header, then a map of ``entries`` (offset, size)
    pairs at the start of the member's data (tarfile reads it whole while it parses the header)."""
    data = b"read me\n"
    sparse_map = b"%d\n" % entries + b"1\n" * (2 * entries)
    sparse_map += bytes(-len(sparse_map) % BLOCK)
    info = tarfile.TarInfo("GNUSparseFile.0/lib/README.txt")
    info.size = len(sparse_map) + len(data)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "lib/README.txt",
                        "GNU.sparse.realsize": str(len(data))}
    was, tar.format = tar.format, tarfile.PAX_FORMAT
    try:
        tar.addfile(info, io.BytesIO(sparse_map + data))
    finally:
        tar.format = was


def sparse_chain(tar: tarfile.TarFile, blocks: int) -> None:
    """lib/README.txt as an old GNU sparse ('S') member followed by ``blocks`` extension blocks of 21 (1, 1)
    entries each (tarfile follows the chain while it parses the header)."""
    data = b"read me\n"
    info = tarfile.TarInfo("lib/README.txt")
    info.size, info.mode = BLOCK, 0o644
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[386:410] = b"%011o\0%011o\0" % (0, len(data))
    header[482] = 1  # extended: extension blocks follow
    header[483:495] = b"%011o\0" % len(data)
    extension = bytearray(b"%011o\0%011o\0" % (1, 1) * 21 + bytes(8))
    extension[504] = 1
    _raw(tar, _summed(header))
    for _ in range(blocks - 1):
        _raw(tar, bytes(extension))
    extension[504] = 0
    _raw(tar, bytes(extension) + data.ljust(BLOCK, b"\0"))


def build(path: Path, extra: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        _normal_tree(tar)
        extra(tar)
    return path


def many_members(tar: tarfile.TarFile) -> None:
    for i in range(20):
        _file(tar, f"lib/m{i:02d}.txt")


def big_member(tar: tarfile.TarFile) -> None:
    _file(tar, "lib/big.bin", b"\0" * 50_000)


@dataclass(frozen=True)
class Limits:
    members: int = 100
    unpacked_bytes: int = 1 << 20


def write_catalog(directory: Path, pkg: Path, limits: Limits = Limits()) -> Path:
    """catalog.yaml beside pkg with its true sha256 and size: sample-middleware 7.0.4.2, full."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"format": 1, "serial": 1, "published": "2026-11-01T00:00:00+00:00", "packages": [{
        "file": pkg.name, "product": "sample-middleware", "version": "7.0.4.2", "kind": "full",
        "sha256": hashlib.sha256(pkg.read_bytes()).hexdigest(), "size": pkg.stat().st_size, "changes": [],
        "limits": {"members": limits.members, "unpacked_bytes": limits.unpacked_bytes},
        "description": "looks like a maintenance release"}]}
    path = directory / "catalog.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["package", "verify", *argv])
    return rc, capsys.readouterr().err


# ---------------------------------------------------------------- upgrader package verify


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_package_verify_refuses_hostile_member(tmp_path, capsys, kind):
    """`package verify` exits 2 for a hostile member and names the problem and the package."""
    extra, words = HOSTILE[kind]
    pkg = build(tmp_path / "sample-middleware-7.0.4.2.tar.gz", extra)
    rc, err = verify(capsys, str(pkg))
    assert rc == 2
    assert words in err
    assert str(pkg) in err
    assert "Traceback" not in err
    assert not (tmp_path.parent / PROTECTED).exists() and not Path("/tmp", PROTECTED).exists()


def test_package_verify_accepts_the_harmless_part(tmp_path, capsys):
    """The same package without its hostile member verifies (exit 0): the checks are not blanket refusals."""
    pkg = build(tmp_path / "ok.tar.gz", lambda t: None)
    assert verify(capsys, str(pkg))[0] == 0
    write_catalog(tmp_path, pkg)
    assert verify(capsys, str(pkg), "--catalog", str(tmp_path))[0] == 0


def test_package_verify_refuses_more_members_than_the_catalog_allows(tmp_path, capsys):
    """A package with more members than its catalog entry's limit is refused (exit 2) naming the limit."""
    pkg = build(tmp_path / "sample-middleware-7.0.4.2.tar.gz", many_members)
    write_catalog(tmp_path, pkg, Limits(members=10))
    rc, err = verify(capsys, str(pkg), "--catalog", str(tmp_path))
    assert rc == 2
    assert "more than 10 members" in err


def test_package_verify_refuses_more_unpacked_bytes_than_the_catalog_allows(tmp_path, capsys):
    """A package that unpacks to more bytes than its catalog entry allows is refused (exit 2) naming the limit."""
    pkg = build(tmp_path / "sample-middleware-7.0.4.2.tar.gz", big_member)
    write_catalog(tmp_path, pkg, Limits(unpacked_bytes=10_000))
    rc, err = verify(capsys, str(pkg), "--catalog", str(tmp_path))
    assert rc == 2
    assert "more than 10000 bytes" in err


def test_package_verify_refuses_a_file_that_is_not_a_tarball(tmp_path, capsys):
    """Random bytes named .tar.gz are refused with exit 2 and no traceback."""
    pkg = tmp_path / "junk.tar.gz"
    pkg.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    rc, err = verify(capsys, str(pkg))
    assert rc == 2
    assert str(pkg) in err and "Traceback" not in err


# ---------------------------------------------------------------- a run with a hostile package in the catalog


def state_runs(box: Sandbox) -> Path:
    return box.install_dir.parent / f".upgrader-{box.install_dir.name}" / "runs"


def hostile_catalog(box: Sandbox, directory: Path, extra: Callable[[tarfile.TarFile], None],
                    limits: Limits = Limits()) -> Path:
    """A catalog, signed with the sandbox's vendor key, whose 7.0.4.2 entry is a hostile package."""
    directory.mkdir(parents=True)
    pkg = build(directory / "sample-middleware-7.0.4.2.tar.gz", extra)
    catalog = write_catalog(directory, pkg, limits)
    assert upgrader(box, "catalog", "sign", str(catalog), "--key", str(box.vendor_key)) == 0
    return directory


RUN_CASES = {**{k: (v[0], Limits(), v[1]) for k, v in HOSTILE.items()},
             "too many members": (many_members, Limits(members=10), "more than 10 members"),
             "too many bytes": (big_member, Limits(unpacked_bytes=10_000), "more than 10000 bytes")}


@pytest.mark.parametrize("kind", sorted(RUN_CASES))
def test_hostile_package_in_catalog_is_refused_before_the_host_is_touched(sandbox, tmp_path, capsys, kind):
    """Planning with a catalog whose 7.0.4.2 package is hostile exits 2; the host is untouched and answers 7.0.4.1."""
    extra, limits, words = RUN_CASES[kind]
    catalog = hostile_catalog(sandbox, tmp_path / "catalog", extra, limits)
    before = product_digest(sandbox.install_dir)
    pid = (sandbox.install_dir / "run" / "server.pid").read_text()
    whole = host_state(sandbox.install_dir, answers=sandbox.answers, home=sandbox.root)
    capsys.readouterr()
    rc, plan = plan_to(sandbox, "7.0.4.2", "--catalog", str(catalog))
    err = capsys.readouterr().err
    assert rc == 2
    assert words in err
    assert not plan.exists()
    assert product_digest(sandbox.install_dir) == before
    assert (sandbox.install_dir / "run" / "server.pid").read_text() == pid
    assert sandbox.answers() == "7.0.4.1"
    assert not state_runs(sandbox).exists()
    assert not (sandbox.root / "runs").exists()
    assert_host_untouched(whole, host_state(sandbox.install_dir, answers=sandbox.answers, home=sandbox.root))


# ---------------------------------------------------------------- the host agent's own checks


@pytest.mark.parametrize("kind", ["dotdot member", "symlink escaping", "write through own symlink", "hardlink",
                                  "huge pax header", "huge GNU long name", "pax header behind a sized directory",
                                  "GNU sparse 1.0 map", "old GNU sparse extension chain", "pax global size",
                                  "negative pax size", "malformed pax header"])
def test_agent_refuses_to_stage_hostile_package_and_leaves_product_untouched(sandbox, tmp_path, kind):
    """Even if a controller sent it, the host agent refuses to stage a hostile package (bad_input), product untouched."""
    extra, words = HOSTILE[kind]
    pkg = build(tmp_path / "hostile.tar.gz", extra)
    before = product_digest(sandbox.install_dir)
    agent = AgentClient(LocalTransport("app-01"))
    take_lock(lambda op, **req: agent.call(op, install_dir=str(sandbox.install_dir), state_dir=None, **req),
              "hostile-1")  # a host prepares only for the run that holds its lock
    with pytest.raises(AgentFailure) as e:
        agent.call("prepare", install_dir=str(sandbox.install_dir), state_dir=None, run_id="hostile-1",
                   package_path=str(pkg), sha256=hashlib.sha256(pkg.read_bytes()).hexdigest(),
                   size=pkg.stat().st_size, limits={}, kind="full", remove=[],
                   preserve=[{"path": "conf/server.conf", "kind": "config"}, {"path": "data", "kind": "data"},
                             {"path": "logs", "kind": "data"}, {"path": "run", "kind": "data"}],
                   current_version="7.0.4.1")
    assert e.value.kind == "bad_input"
    assert words in e.value.message
    assert product_digest(sandbox.install_dir) == before
    assert sandbox.answers() == "7.0.4.1"
    staged = state_runs(sandbox) / "hostile-1" / "staging"
    assert not any(p.is_file() or p.is_symlink() for p in staged.rglob("*"))
    assert not (tmp_path.parent / PROTECTED).exists() and not (sandbox.install_dir.parent / PROTECTED).exists()


# ---------------------------------------------------------------- the same shapes at size: memory stays bounded

MiB = 1 << 20
SIZED = {  # each made tarfile hold hundreds of MB (the map and the chain as lists of tuples) from a small file
    "pax header behind a sized directory": lambda t: hidden_pax(t, 200 * MiB),
    "GNU sparse 1.0 map": lambda t: sparse_map(t, 5_000_000),
    "old GNU sparse extension chain": lambda t: sparse_chain(t, 200_000),
}


@pytest.mark.parametrize("kind", sorted(SIZED))
def test_verify_and_plan_refuse_a_sized_header_shape_with_bounded_memory(sandbox, tmp_path, kind):
    """The shapes above at a size that made tarfile allocate hundreds of MB from a package of under 1 MB:
    ``package verify`` and ``plan`` (the shipped CLI, in its own process) exit 2 naming the member, and the
    process's peak memory stays under 150 MiB."""
    from test_host_paths_17 import cli_measured

    catalog = hostile_catalog(sandbox, tmp_path / "catalog", SIZED[kind])
    pkg = catalog / "sample-middleware-7.0.4.2.tar.gz"
    assert pkg.stat().st_size < MiB
    words = HOSTILE[kind][1]
    rc, text, peak_kib = cli_measured(sandbox, "package", "verify", str(pkg))
    assert (rc, words in text, "'lib/README.txt'" in text) == (2, True, True), text
    assert peak_kib < 150 * 1024, peak_kib  # a memory bound (KiB), not a time one
    out = tmp_path / "plan.json"
    rc, text, peak_kib = cli_measured(sandbox, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2",
                                      "--catalog", str(catalog), "-o", str(out))
    assert (rc, words in text, out.exists()) == (2, True, False), text
    assert peak_kib < 150 * 1024, peak_kib


def test_verify_refuses_many_long_names_before_package_yaml_with_bounded_memory(sandbox, tmp_path):
    """4000 members with a 60 KiB pax path each (every header under the 64 KiB bound), then package.yaml: reading
    the metadata kept every name (about 240 MB from a package of under 1 MB). ``package verify`` exits 2 once it
    has read 64 members without package.yaml among them (before, once the package's extended headers passed their
    total bound), naming the package, with its peak under 150 MiB."""
    from test_host_paths_17 import cli_measured

    pkg = tmp_path / "sample-middleware-7.0.4.2.tar.gz"
    with tarfile.open(pkg, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for i in range(4000):
            _file(tar, "lib/%04d-" % i + "n" * 60_000)
        _normal_tree(tar)
    assert pkg.stat().st_size < MiB
    rc, text, peak_kib = cli_measured(sandbox, "package", "verify", str(pkg))
    said = " ".join(text.split())
    assert (rc, "no package.yaml among its first 64 members" in said, str(pkg) in said) == (2, True, True), text
    assert peak_kib < 150 * 1024, peak_kib


# ---------------------------------------------------------------- package.yaml among the first members (fix14u)

def late_meta_package(path: Path, before: int) -> Path:
    """A package of ``before`` tiny members (empty files, one header block each), then the sample's harmless tree
    with its package.yaml: the shape that made reading package.yaml hold every member before it."""
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        _special(tar, "lib", tarfile.DIRTYPE)
        for i in range(before):
            _file(tar, "lib/m%06d" % i, b"")
        _normal_tree(tar)
    return path


def test_package_yaml_after_the_first_members_is_refused_by_verify_and_plan_with_bounded_memory(sandbox, tmp_path):
    """attack12r17 L1: 100,000 empty members before package.yaml (a package of about 2 MB): reading the metadata
    kept them all (175 MB in the finding; 80 MiB here) before the member limit refused the package. ``package
    verify`` and ``plan`` (the shipped CLI, in its own process; the vendor signed the catalog) now exit 2 naming
    the package and what to do, verify's peak memory under 64 MiB; the host is not touched. A package of 'upgrader package build' has its
    package.yaml first (checked here too)."""
    from test_host_paths_17 import cli_measured

    directory = tmp_path / "catalog"
    directory.mkdir()
    pkg = late_meta_package(directory / "sample-middleware-7.0.4.2.tar.gz", 100_000)
    assert pkg.stat().st_size < 3 * MiB
    catalog = write_catalog(directory, pkg, Limits(members=200_000))
    assert upgrader(sandbox, "catalog", "sign", str(catalog), "--key", str(sandbox.vendor_key)) == 0
    whole = host_state(sandbox.install_dir, answers=sandbox.answers, home=sandbox.root)
    rc, text, peak_kib = cli_measured(sandbox, "package", "verify", str(pkg))
    said = " ".join(text.split())
    assert (rc, str(pkg) in said, "no package.yaml among its first 64 members" in said) == (2, True, True), text
    assert "'upgrader package build'" in said, text
    # a memory bound (KiB), not a time one: about 45 MiB now, 80 MiB on this machine's Python before (the members)
    assert peak_kib < 64 * 1024, peak_kib
    out = tmp_path / "plan.json"
    rc, text, peak_kib = cli_measured(sandbox, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2",
                                      "--catalog", str(directory), "--key", str(sandbox.requester_key), "-o", str(out))
    said = " ".join(text.split())
    assert (rc, "no package.yaml among its first 64 members" in said, out.exists()) == (2, True, False), text
    assert peak_kib < 150 * 1024, peak_kib
    assert_host_untouched(whole, host_state(sandbox.install_dir, answers=sandbox.answers, home=sandbox.root))
    # the builder's own packages read as before: package.yaml is their first member
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    for i in range(100):
        (src / "lib" / ("m%03d" % i)).write_text("x\n")
    built = tmp_path / "built.tar.gz"
    assert upgrader(sandbox, "package", "build", str(src), "--product", "sample-middleware", "--version", "7.0.4.2",
                    "-o", str(built)) == 0
    with tarfile.open(built, "r:gz") as tar:
        assert tar.next().name == "package.yaml"  # type: ignore[union-attr]
    assert upgrader(sandbox, "package", "verify", str(built)) == 0


def test_the_host_agent_refuses_a_package_yaml_after_the_first_members(tmp_path):
    """The agent's own read of package.yaml (a host with a trust root, at prepare, before extraction) stops at the
    same bound: the package's members up to the 64th read, then refused (bad_input) naming the package and what to
    do; a package with package.yaml among them is read as before."""
    from upgrader.hostagent import hosttrust
    from upgrader.hostagent.common import AgentError

    verdict = {"package": "ab" * 32, "product": "sample-middleware", "target": "7.0.4.2",
               "catalog_entry": {"changes": [], "kind": "full", "requires": None}}
    late = late_meta_package(tmp_path / "late.tar.gz", 1000)
    with pytest.raises(AgentError) as e:
        hosttrust.check_package_meta(str(late), verdict)
    assert e.value.kind == "bad_input"
    for words in ("the package abababababab... (sample-middleware 7.0.4.2)", "no package.yaml among its first 64",
                  "'upgrader package build'"):
        assert words in str(e.value), str(e.value)
    hosttrust.check_package_meta(str(late_meta_package(tmp_path / "early.tar.gz", 60)), verdict)


# ---------------------------------------------------------------- long member names in refusals (fix14u)

LONG = "lib/" + "n" * 60_000 + "/end"  # past a file system's limits: refused for its length
DEEP = "lib/" + "/".join(["n" * 199] * 20) + "/end"  # 4,008 characters, within them: refused for what it is
LONG_NAMES: dict[str, tuple[Callable[[tarfile.TarFile], None], str, str]] = {
    "a 60 KB name": (lambda t: _file(t, LONG), "has a name longer than a file system allows", LONG),
    "a hard link with a 4 KB name": (lambda t: _special(t, DEEP, tarfile.LNKTYPE, "lib/VERSION"), "hard link", DEEP),
    "a symlink with a 60 KB target": (lambda t: _special(t, "lib/escape", tarfile.SYMTYPE, "/" + LONG),
                                      "escapes the install dir", "/" + LONG),
}


@pytest.mark.parametrize("kind", sorted(LONG_NAMES))
def test_a_refusal_shows_a_long_member_name_shortened(tmp_path, capsys, kind):
    """A member name (or link target) of kilobytes went whole into the refusal: one line of up to 60 KB on the
    operator's screen. ``package verify`` still exits 2 naming the package and the member, by its first and last
    100 characters around "…", and the whole message stays short."""
    extra, words, name = LONG_NAMES[kind]
    pkg = tmp_path / "long.tar.gz"
    with tarfile.open(pkg, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        _normal_tree(tar)
        extra(tar)
    rc, err = verify(capsys, str(pkg))
    assert rc == 2, err[:2000]
    assert words in err and str(pkg) in err, err[:2000]
    assert "Traceback" not in err
    assert name[:100] + "…" + name[-100:] in err, err[:2000]
    assert len(err) < 2000, len(err)


# ---------------------------------------------------------------- values a pax header sets (attack14r17)


def test_a_pax_size_that_sends_the_reading_back_is_refused_at_once(tmp_path, capsys):
    """attack14r17 #2 (the shape of CVE-2025-8194): a pax header with size=-1536 before the empty docs/b sent
    tarfile's offset back to that header, so a reader looking for the package.yaml that follows read x, b, x, b,
    ... (a 4 KB package: 194 s and 1.3 GB in ``package verify``). ``package verify`` and the agent's own read of
    package.yaml now refuse it at the first docs/b, naming it."""
    from upgrader.hostagent import hosttrust
    from upgrader.hostagent.common import AgentError

    pkg = tmp_path / "sample-middleware-7.0.4.2.tar.gz"
    with tarfile.open(pkg, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        _special(tar, "docs", tarfile.DIRTYPE)
        _pax_raw(tar, tarfile.XHDTYPE, pax_records({"size": "-1536"}))
        _reg_raw(tar, "docs/b", b"")
        _normal_tree(tar)
    assert pkg.stat().st_size < 8192
    words = "'docs/b' carries a pax header that sets a negative size (-1536)"
    rc, err = verify(capsys, str(pkg))
    assert (rc, words in err, str(pkg) in err, "Traceback" in err) == (2, True, True, False), err[:2000]
    verdict = {"package": "ab" * 32, "product": "sample-middleware", "target": "7.0.4.2",
               "catalog_entry": {"changes": [], "kind": "full", "requires": None}}
    with pytest.raises(AgentError) as e:
        hosttrust.check_package_meta(str(pkg), verdict)
    assert e.value.kind == "bad_input"
    assert words in str(e.value), str(e.value)


def test_the_member_check_refuses_a_negative_size_whatever_the_parse_said():
    """Defence in depth: check_members, which adds up the sizes toward the catalog's unpacked_bytes, refuses a
    member whose size is negative (it would lower the total) even when the archive's parse let it through."""
    from upgrader.hostagent.common import AgentError
    from upgrader.hostagent.extract import check_members

    neg = tarfile.TarInfo("lib/neg.txt")
    neg.size = -(1 << 30)
    with pytest.raises(AgentError) as e:
        check_members([neg], {"unpacked_bytes": 1 << 20})
    assert (e.value.kind, "'lib/neg.txt' has a negative size" in str(e.value)) == ("bad_input", True), str(e.value)


NON_ASCII = "lib/données-中文-ü.txt"
LONG_OK = "lib/" + "/".join(["d" * 200] * 3) + "/file.txt"  # over ustar's 100 + 155: a pax path


def test_well_formed_pax_headers_still_verify_and_extract(tmp_path, capsys):
    """The pax records read by the agent's own parser (not tarfile's) set what they did: a long path, a non-ASCII
    path, a long link target, and a comment that is one long run of digits (attack14r17 #3's shape, well formed:
    read in one pass). ``package verify`` accepts the package and the agent's extraction writes every member."""
    from upgrader.hostagent.extract import extract

    pkg = tmp_path / "sample-middleware-7.0.4.2.tar.gz"
    with tarfile.open(pkg, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        _normal_tree(tar)
        _file(tar, NON_ASCII, "中文\n".encode())
        _file(tar, LONG_OK, b"long\n")
        _special(tar, "lib/long-link", tarfile.SYMTYPE, "../" + LONG_OK)
        _pax_file(tar, "lib/digits.txt", {"comment": "1" * (8 << 10)})
    rc, err = verify(capsys, str(pkg))
    assert rc == 0, err[:2000]
    members, meta = extract(str(pkg), str(tmp_path / "out"), {"members": 100, "unpacked_bytes": 1 << 20})
    out = tmp_path / "out"
    assert (out / NON_ASCII).read_text() == "中文\n"
    assert (out / LONG_OK).read_bytes() == b"long\n"
    assert (out / "lib/long-link").resolve() == (out / LONG_OK).resolve()
    assert (out / "lib/digits.txt").read_bytes() == b""
    assert meta is not None and "7.0.4.2" in meta


def test_the_writer_alone_stops_at_the_catalogs_byte_limit(tmp_path):
    """Defence in depth: whatever size a header states (and check_members adds up), the writer counts the bytes it
    really writes against the catalog's unpacked_bytes: a 50,000-byte member under a 10,000-byte limit is refused
    (bad_input, the limit named) with no more than the limit on disk."""
    import os

    from upgrader.hostagent.beneath import OPEN_DIR
    from upgrader.hostagent.common import AgentError
    from upgrader.hostagent.extract import ByteBudget, write_member

    pkg = build(tmp_path / "big.tar.gz", big_member)
    root = tmp_path / "staging"
    root.mkdir()
    fd = os.open(root, OPEN_DIR)
    try:
        with tarfile.open(pkg, "r:gz") as tar:
            big = tar.getmember("lib/big.bin")
            big.name = "big.bin"
            with pytest.raises(AgentError) as e:
                write_member(fd, str(root), tar, big, {}, ByteBudget(10_000))
    finally:
        os.close(fd)
    assert (e.value.kind, "more than 10000 bytes" in str(e.value)) == ("bad_input", True), str(e.value)
    assert (root / "big.bin").stat().st_size <= 10_000
