"""Packages that try to write outside the staging root: a corpus of hostile archives and a property.

The corpus holds the shapes of CPython's PEP 706 extraction-filter tests, of the 2025 tarfile CVEs
(CVE-2025-4517 and its siblings: realpath-limit chains, a link resolved through another link, '..'
after normalisation, hard links to outside, duplicates that differ only by './' or '//') and the
chains that look harmless to a lexical check (``u0 -> .``, ``u1 -> u0/..``, ...; a link spelled
``x/./s`` above a later ``x/s/...``). Each is refused by `upgrader package verify`, by `plan`, by
`run` (locally and over the real sshd), and by the host agent itself: in-process, through its
request handler, and on a host over SSH. Every test lists the scratch area around the root before
and after: a canary file outside is untouched and nothing new appears there.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Iterator

import pytest
import yaml  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import approve, plan_to, product_digest, upgrader
from trust_support import resigned
from hoststate import HostState, assert_host_untouched, take_lock
from hoststate import host_state as whole_host_state
from fleet import Fleet
from upgrader import sample
from upgrader.hostagent.beneath import OPEN_DIR
from upgrader.hostagent.common import AgentError
from upgrader.hostagent.extract import extract, member_parts, write_member
from upgrader.hostagent.main import handle
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox
from upgrader.trust.package import file_digest
from upgrader.fleet.transport.base import AgentClient, AgentFailure
from upgrader.fleet.transport.ssh import SSHTransport

NEW = "7.0.4.2"
ESC = "ESCAPED"  # the file every hostile archive tries to create outside its root
CANARY = b"the customer's file outside the install dir\n"
META = f"format: 1\nproduct: sample-middleware\nversion: {NEW}\nkind: full\nchanges: []\n".encode()

Member = tuple[str, str, str]  # (kind, name, link target or text)


def F(name: str, text: str = "x\n") -> Member:
    return ("file", name, text)


def D(name: str) -> Member:
    return ("dir", name, "")


def L(name: str, target: str) -> Member:
    return ("sym", name, target)


def H(name: str, target: str) -> Member:
    return ("hard", name, target)


LONG = "d" * 247
REALPATH_CHAIN: list[Member] = []
_path = ""
for _step in "abcdefghijklmnop":  # CVE-2025-4517: each link names a long directory; realpath() gives up on the whole
    REALPATH_CHAIN += [D(_path + LONG), L(_path + _step, LONG)]
    _path += _step + "/"
REALPATH_CHAIN += [L("escape", "/".join("abcdefghijklmnop") + "/" + "../" * 17 + ".."), F(f"escape/{ESC}")]

CORPUS: dict[str, list[Member]] = {
    # PEP 706's filter test shapes
    "absolute file": [F(f"/tmp/{ESC}-absolute")],
    "parent file": [F(f"../{ESC}")],
    "dotdot inside a name": [F(f"lib/../../{ESC}")],
    "absolute symlink": [L("abs", "/")],
    "absolute symlink, then a file through it": [L("abs", "/tmp"), F(f"abs/{ESC}")],
    "symlink to the parent": [L("parent", "..")],
    "symlink to the parent, then a file through it": [L("parent", ".."), F(f"parent/{ESC}")],
    "symlink in a subdirectory climbing two levels": [D("sub"), L("sub/up", "../..")],
    "symlink to the root itself, then a file through it": [L("current", "."), F("current/inner")],
    "hard link to a file outside": [H("hl", f"../{ESC}")],
    "hard link to an absolute path": [H("passwd", "/etc/passwd")],
    "hard link to the archive's own symlink": [L("s", "."), H("h", "s")],
    "character device": [("chr", "lib/null", "")],
    "block device": [("blk", "lib/sda", "")],
    "fifo": [("fifo", "lib/pipe", "")],
    # the 2025 tarfile CVE family
    "realpath-limit chain": REALPATH_CHAIN,
    "link resolved through another link": [D("x"), L("x/l1", ".."), L("l2", "x/l1/.."), F(f"l2/{ESC}")],
    "dotdot after normalisation": [F(f"lib//.//..//..//{ESC}")],
    "symlink spelled with ./ climbing": [D("x"), L("x/./s", "../.."), F(f"x/s/{ESC}")],
    "duplicate differing by ./": [F("./lib/VERSION", "6.6.6\n")],
    "duplicate differing by //": [F("lib//VERSION", "6.6.6\n")],
    "duplicate of a directory as a file": [F("conf")],
    # chains that look harmless one link at a time, by name
    "dot chain": [L("u0", "."), L("u1", "u0/.."), L("u2", "u1/.."), L("u3", "u2/..")],
    "dot chain, then a file through it": [L("u0", "."), L("u1", "u0/.."), L("u2", "u1/.."), F(f"u2/{ESC}")],
    "x/./s above a later x/s/file": [D("x"), L("x/./s", "."), F("x/s/inner")],
    "a later link changes an earlier one": [L("a", "c/.."), L("c", ".")],
    "link loop": [L("loop1", "loop2"), L("loop2", "loop1")],
    "a file under a file": [F("lib/VERSION/inner")],
    "a link replacing a directory with files": [F("d/f"), L("d", "..")],
    "empty link target": [L("empty", "")],
}


def add(tar: tarfile.TarFile, member: Member) -> None:
    kind, name, extra = member
    info = tarfile.TarInfo(name)
    info.mode = 0o755 if kind == "dir" else 0o644
    data = None
    if kind == "file":
        raw = extra.encode()
        info.size = len(raw)
        data = io.BytesIO(raw)
    else:
        info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE,
                     "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
        info.linkname = extra if kind in ("sym", "hard") else ""
    tar.addfile(info, data)


def build(path: Path, members: list[Member], base: bool = True) -> Path:
    """A package that looks like sample-middleware 7.0.4.2 (when ``base``) plus ``members``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        if base:
            for m in [F("package.yaml", META.decode()), D("bin"), D("lib"), D("conf"), F("lib/VERSION", f"{NEW}\n"),
                      F("conf/server.conf", "port = 18080\n")]:
                add(tar, m)
        for m in members:
            add(tar, m)
    return path


def listing(area: Path, *skip: Path) -> dict[str, str]:
    """Every path under area (not following links) with what it is; the subtrees ``skip`` left out."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(area):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if any(p == s or s in p.parents for s in skip):
                continue
            out[str(p.relative_to(area))] = ("link:" + os.readlink(p) if os.path.islink(p) else
                                             "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def no_escape_anywhere() -> None:
    assert not Path(f"/tmp/{ESC}").exists() and not Path(f"/tmp/{ESC}-absolute").exists()


@pytest.fixture
def area(tmp_path: Path) -> Iterator[Path]:
    """A scratch area: the packages, a canary file outside any root, and room for roots."""
    a = tmp_path / "area"
    (a / "outside").mkdir(parents=True)
    (a / "outside" / "canary.txt").write_bytes(CANARY)
    yield a
    assert (a / "outside" / "canary.txt").read_bytes() == CANARY


# ---------------------------------------------------------------- upgrader package verify


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_package_verify_refuses_every_hostile_archive_of_the_corpus(area, capsys, case):
    """`upgrader package verify` exits 2 for each hostile archive, names it, and writes nothing anywhere."""
    pkg = build(area / "pkgs" / "deep" / "deeper" / f"sample-middleware-{NEW}.tar.gz", CORPUS[case])
    before = listing(area)
    capsys.readouterr()
    rc = main(["package", "verify", str(pkg)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(pkg) in err and "Traceback" not in err
    assert listing(area) == before
    no_escape_anywhere()


def test_package_verify_accepts_links_that_stay_inside(area, capsys):
    """Links that resolve inside the root (also through each other, also './'-spelled) verify: exit 0."""
    pkg = build(area / "ok.tar.gz", [D("x"), L("x/./s", ".."), L("t", "x/s/lib"), L("u", "t/../conf/server.conf"),
                                     D("lib/modules"), L("lib/modules/up", "../../conf")])
    capsys.readouterr()
    assert main(["package", "verify", str(pkg)]) == 0, capsys.readouterr().err


# ---------------------------------------------------------------- the agent on its own


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_agent_extraction_refuses_every_hostile_archive_and_writes_nothing_outside(area, case):
    """The agent's extract, called directly (no controller check before it), refuses each archive; nothing outside changes."""
    pkg = build(area / "pkgs" / "p.tar.gz", CORPUS[case])
    root = area / "runs" / "r1" / "staging"
    root.parent.mkdir(parents=True)
    before = listing(area)
    with pytest.raises(AgentError) as e:
        extract(str(pkg), str(root), {})
    assert e.value.kind == "bad_input"
    assert listing(area, root) == before
    assert not root.exists(), "members were written before the whole archive was checked"
    no_escape_anywhere()


def write_unchecked(pkg: Path, root: Path) -> None:
    """The writer alone, as if the member checks had missed everything: names only normalised, each member
    written from directory descriptors; refusals and errors are ignored, member by member."""
    root.mkdir(parents=True)
    fd = os.open(root, OPEN_DIR)
    try:
        with tarfile.open(pkg, "r:gz") as tar:
            for m in tar:
                try:
                    parts = member_parts(m)
                except AgentError:
                    continue
                if not parts or not (m.isreg() or m.isdir() or m.issym()):
                    continue
                m.name = "/".join(parts)
                try:
                    write_member(fd, str(root), tar, m, {})
                except (AgentError, OSError):
                    continue
    finally:
        os.close(fd)


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_the_writer_alone_cannot_leave_the_root_even_without_the_checks(area, case):
    """With the member checks skipped, the O_NOFOLLOW writer still puts nothing outside the root."""
    pkg = build(area / "pkgs" / "p.tar.gz", CORPUS[case])
    root = area / "staging"
    before = listing(area)
    write_unchecked(pkg, root)
    assert listing(area, root) == before
    no_escape_anywhere()


def prepare_request(install: Path, pkg: Path, run_id: str) -> dict[str, object]:
    return {"op": "prepare", "install_dir": str(install), "state_dir": None, "run_id": run_id,
            "package_path": str(pkg), "sha256": file_digest(pkg), "size": pkg.stat().st_size, "limits": {},
            "kind": "full", "remove": [], "current_version": "7.0.4.1",
            "preserve": [{"path": "conf/server.conf", "kind": "config"}, {"path": "data", "kind": "data"},
                         {"path": "logs", "kind": "data"}, {"path": "run", "kind": "data"}]}


def test_agent_request_handler_refuses_every_hostile_archive(area):
    """The agent's own request handler (what the controller calls) refuses each archive before staging a file."""
    install = area / "hosts" / "app-01"
    sample.install(install, port=18080)
    product = product_digest(install)
    for i, case in enumerate(sorted(CORPUS)):
        pkg = build(area / "pkgs" / f"{i}.tar.gz", CORPUS[case])
        base = {"install_dir": str(install), "state_dir": None}  # a host prepares only for the run holding its lock
        assert take_lock(lambda op, **req: handle({"op": op, **base, **req}), f"hostile-{i}", break_lock=True)["ok"]
        before = listing(area, area / "hosts" / ".upgrader-app-01")
        reply = handle(prepare_request(install, pkg, f"hostile-{i}"))
        assert reply["ok"] is False and reply["kind"] == "bad_input", (case, reply)
        staged = area / "hosts" / ".upgrader-app-01" / "runs" / f"hostile-{i}" / "staging"
        assert not any(p.is_file() or p.is_symlink() for p in staged.rglob("*")), case
        assert listing(area, area / "hosts" / ".upgrader-app-01") == before, case
        assert product_digest(install) == product
    no_escape_anywhere()


# ---------------------------------------------------------------- the property


NAMES = st.sampled_from(["a", "b", "c", "a/b", "a/c", "b/a", "./a", "a//b", "a/./b", "u0", "u1", "x/s"])
TARGETS = st.sampled_from([".", "..", "../..", "a", "b", "a/b", "a/..", "a/../..", "u0/..", "u1/..", "x/s/..",
                           "/", "/tmp", "/etc", "c/../..", "b/a/../../.."])


@st.composite
def archives(draw: st.DrawFn) -> list[Member]:
    members: list[Member] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["file", "dir", "sym", "sym"]))
        name = draw(NAMES)
        if draw(st.booleans()) and members:
            name = draw(st.sampled_from([m[1] for m in members])) + "/" + draw(st.sampled_from(["f", "g", ESC]))
        if draw(st.integers(0, 3)):  # mostly a fresh name, so that not every archive is a duplicate
            name += str(len(members))
        if kind == "sym":
            earlier = [m[1] for m in members]
            target = draw(st.one_of(TARGETS, st.sampled_from(earlier))) if earlier else draw(TARGETS)
            members.append(L(name, target))
        else:
            members.append(F(name) if kind == "file" else D(name))
    return members


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=archives())
def test_extraction_either_refuses_or_writes_only_beneath_the_root(tmp_path_factory, members):
    """A random archive of files, directories and symlinks (targets '.', '..', earlier names, absolute paths) is
    refused, or extracted with every path - and every link's resolution - beneath the root; nothing outside changes."""
    area = tmp_path_factory.mktemp("prop")
    (area / "outside").mkdir()
    (area / "outside" / "canary.txt").write_bytes(CANARY)
    pkg = build(area / "p.tar.gz", members, base=False)
    root = area / "deep" / "root"
    root.parent.mkdir()
    before = listing(area)
    try:
        extract(str(pkg), str(root), {}, skip=())
    except AgentError as e:
        assert e.kind == "bad_input"
    assert listing(area, root) == before
    real_root = str(root.resolve())
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            resolved = os.path.realpath(p)
            assert resolved == real_root or resolved.startswith(real_root + "/"), (members, p, resolved)
    # and the writer alone, without the checks, still writes nothing outside its root
    write_unchecked(pkg, area / "unchecked")
    assert listing(area, root, area / "unchecked") == before
    assert (area / "outside" / "canary.txt").read_bytes() == CANARY


# ---------------------------------------------------------------- plan and run refuse them too


def signed_catalog(box: Sandbox, directory: Path, members: list[Member]) -> tuple[Path, Path, dict[str, object]]:
    directory.mkdir(parents=True)
    pkg = build(directory / f"sample-middleware-{NEW}.tar.gz", members)
    entry = {"file": pkg.name, "product": "sample-middleware", "version": NEW, "kind": "full",
             "sha256": file_digest(pkg), "size": pkg.stat().st_size, "changes": [],
             "limits": {"members": 1000, "unpacked_bytes": 1 << 20}}
    (directory / "catalog.yaml").write_text(yaml.safe_dump(
        {"format": 1, "serial": 1, "published": "2026-11-01T00:00:00+00:00", "packages": [entry]}, sort_keys=False))
    assert upgrader(box, "catalog", "sign", str(directory / "catalog.yaml"), "--key", str(box.vendor_key)) == 0
    return directory, pkg, entry


def host_state(box: Sandbox, install: Path | None = None) -> HostState:
    """The whole host a refusal must leave as it was (tests/hoststate.py): product files, the service's pid and
    start time, the agent's state dir (lock, staged runs and packages, ledger)."""
    return whole_host_state(install or box.install_dir)


def test_plan_refuses_every_hostile_archive_of_the_corpus(sandbox, tmp_path, capsys):
    """`plan` with a signed catalog whose 7.0.4.2 package is any corpus archive exits 2; the host is untouched."""
    was = host_state(sandbox)
    canary = tmp_path / "canary.txt"
    canary.write_bytes(CANARY)
    for i, case in enumerate(sorted(CORPUS)):
        catalog, pkg, _ = signed_catalog(sandbox, tmp_path / f"catalog-{i}", CORPUS[case])
        capsys.readouterr()
        rc, plan = plan_to(sandbox, NEW, "--catalog", str(catalog))
        err = capsys.readouterr().err
        assert rc == 2, (case, err)
        assert str(pkg) in err, case
        assert not plan.exists()
        assert_host_untouched(was, host_state(sandbox), str(case))
    assert sandbox.answers() == "7.0.4.1"
    assert canary.read_bytes() == CANARY
    no_escape_anywhere()


RUN_CASES = ["dot chain, then a file through it", "symlink spelled with ./ climbing", "realpath-limit chain",
             "a later link changes an earlier one"]


def edited_plan(plan: Path, catalog: Path, entry: dict[str, object]) -> Path:
    """The plan, edited to take its 7.0.4.2 package from the hostile catalog (as a tampering tool would)."""
    data = json.loads(plan.read_text())
    data["catalog"] = {"path": str((catalog / "catalog.yaml").resolve()),
                       "sha256": file_digest(catalog / "catalog.yaml"), "serial": 1}
    for host in data["hosts"]:
        host["package"] = {**host["package"], **{k: entry[k] for k in ("file", "sha256", "size", "limits")}}
    out = plan.with_name("edited-" + plan.name)
    out.write_text(json.dumps(resigned(data, plan.parent.parent), indent=2))  # the requester signs it again
    return out


def run_refused(box: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
                install: Path | None = None) -> None:
    rc, plan = plan_to(box, NEW)
    assert rc == 0
    catalog, pkg, entry = signed_catalog(box, tmp_path / "hostile", CORPUS[case])
    plan = edited_plan(plan, catalog, entry)
    approval = approve(box, plan)
    was = host_state(box, install)
    canary = tmp_path / "canary.txt"
    canary.write_bytes(CANARY)
    capsys.readouterr()
    rc = upgrader(box, "run", str(plan), "--approval", str(approval))
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert str(pkg) in err and "Traceback" not in out + err
    assert_host_untouched(was, host_state(box, install))
    assert canary.read_bytes() == CANARY
    no_escape_anywhere()


@pytest.mark.parametrize("case", RUN_CASES)
def test_run_of_an_approved_plan_naming_a_chain_package_is_refused_before_stop(sandbox, tmp_path, capsys, case):
    """`run` of an approved plan edited to name a chain package exits 2: service not stopped, host unchanged."""
    run_refused(sandbox, tmp_path, capsys, case)
    assert sandbox.answers() == "7.0.4.1"


def test_run_over_ssh_of_a_plan_naming_a_chain_package_is_refused_before_stop(fleet, tmp_path, capsys):
    """Over the real sshd, the same edited plan exits 2; the remote host's state and service are unchanged."""
    f: Fleet = fleet(1)
    run_refused(f.box, tmp_path, capsys, "dot chain, then a file through it", f.hosts[0].install_dir)
    assert f.versions() == {"app-01": "7.0.4.1"}


def test_agent_on_a_host_over_ssh_refuses_every_hostile_archive(fleet, tmp_path):
    """The agent on a host reached over the real sshd, sent each archive as the controller would (upload, digest
    check, prepare), refuses it (bad_input): nothing outside, no staged file, service still running."""
    f: Fleet = fleet(1)
    host = f.hosts[0]
    canary = host.install_dir.parent / "canary.txt"
    canary.write_bytes(CANARY)
    pid = (host.install_dir / "run" / "server.pid").read_text()
    product = product_digest(host.install_dir)
    inv = yaml.safe_load(f.box.inventory.read_text())
    from upgrader.fleet.inventory import load_inventory

    (h,) = load_inventory(f.box.inventory).hosts.values()
    assert inv["hosts"]["app-01"]["address"] == "127.0.0.1"
    client = AgentClient(SSHTransport(h))
    try:
        for i, case in enumerate(sorted(CORPUS)):
            pkg = build(tmp_path / "pkgs" / f"{i}.tar.gz", CORPUS[case])
            base = {"install_dir": str(host.install_dir), "state_dir": None}
            check = client.call("receive_check", sha256=file_digest(pkg), size=pkg.stat().st_size, **base)
            client.transport.put(pkg, check["upload_to"])
            path = client.call("receive_commit", sha256=file_digest(pkg), size=pkg.stat().st_size, **base)["path"]
            take_lock(lambda op, **req: client.call(op, **base, **req), f"hostile-{i}", break_lock=True)
            request = prepare_request(host.install_dir, pkg, f"hostile-{i}")
            request.pop("op")
            request["package_path"] = path
            with pytest.raises(AgentFailure) as e:
                client.call("prepare", **request)
            assert e.value.kind == "bad_input", case
            staged = host.run_dir(f"hostile-{i}") / "staging"
            assert not any(p.is_file() or p.is_symlink() for p in staged.rglob("*")), case
            assert not (host.install_dir.parent / ESC).exists() and not (host.state_dir / ESC).exists(), case
    finally:
        client.close()
        client.transport.close()
    assert canary.read_bytes() == CANARY
    assert (host.install_dir / "run" / "server.pid").read_text() == pid
    assert product_digest(host.install_dir) == product
    assert host.answers() == "7.0.4.1"
    no_escape_anywhere()



def test_extraction_drops_group_and_other_write_as_pythons_data_filter_does(area: Path) -> None:
    """attack12r17 M1: a signed package whose bin/ is 0777 (or a script 0666) kept those modes, and the service
    account replaced the new start.sh between the swap and root's start. Like PEP 706's data filter, extraction
    clears group and other write (and set-id bits): the new tree is as writable as root lets it be, no more."""
    pkg = area / "pkgs" / "modes.tar.gz"
    pkg.parent.mkdir(parents=True)
    with tarfile.open(pkg, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        add(tar, F("package.yaml", META.decode()))
        for name, mode, kind in [("bin", 0o777, tarfile.DIRTYPE), ("bin/start.sh", 0o6777, tarfile.REGTYPE),
                                 ("lib", 0o775, tarfile.DIRTYPE), ("lib/VERSION", 0o664, tarfile.REGTYPE)]:
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, mode
            data = None
            if kind == tarfile.REGTYPE:
                info.size = 3
                data = io.BytesIO(b"x\n\n")
            tar.addfile(info, data)
    root = area / "root"
    extract(str(pkg), str(root), {})
    modes = {p: (root / p).stat().st_mode & 0o7777 for p in ("bin", "bin/start.sh", "lib", "lib/VERSION")}
    assert modes == {"bin": 0o755, "bin/start.sh": 0o755, "lib": 0o755, "lib/VERSION": 0o644}, modes
