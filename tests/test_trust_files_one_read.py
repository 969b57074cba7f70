"""Issue 12, attack12r18 H1: a trust file the policy names is read once, when the policy is loaded, and every
decision uses those bytes -- the bytes hashed into the policy's identity. An attacker who can swap a file in the
operator's HOME between two reads (a group-writable keys/ dir, a shared service home) once got a foreign vendor's
catalog, package and approver accepted under the identity of the operator's unchanged files.

The swap is played with a FIFO in place of the file: the first open reads the operator's bytes, every later open
the attacker's (the operator's file plus the attacker's key). A product that reads the file once sees only the
operator's bytes and refuses; one that reads it again trusts the attacker's line."""

from __future__ import annotations

import os
import time
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import upgrader
from trust_support import add_signer, approval_signed_anyway, cli, copy_catalog, host_state, make_ssh_key, pristine
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode



@contextmanager
def swapped_after_first_read(path: Path, later: bytes, reads: int = 1) -> Iterator[list[int]]:
    """``path`` becomes a FIFO that serves its current bytes to the first ``reads`` readers and ``later`` to every
    reader after them; yields the list of reads served (their sizes). The file is put back afterwards."""
    first = path.read_bytes()
    path.unlink()
    os.mkfifo(path, 0o600)
    served: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            fd = os.open(path, os.O_WRONLY)  # waits for the next reader
            try:
                if stop.is_set():
                    return
                data = first if len(served) < reads else later
                os.write(fd, data)
                served.append(len(data))
            finally:
                os.close(fd)
            time.sleep(0.05)  # the reader that got them closes before the next open (else it would read on)


    writer = threading.Thread(target=serve, daemon=True)
    writer.start()
    try:
        yield served
    finally:
        stop.set()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets a writer waiting in open() return and see stop
        try:
            writer.join(5)
        finally:
            os.close(fd)
        path.unlink()
        path.write_bytes(first)
    assert not writer.is_alive()


def test_a_vendor_signers_file_swapped_after_the_policy_read_does_not_let_a_foreign_catalog_in(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The requester signs a catalog with their own "vendor" key; the operator's keys/vendor_signers gets the
    attacker's line for every read after the first. ``plan`` refuses the catalog (exit 4, the attacker's key named
    as not a trusted vendor key), writes no plan, reads the file once, and leaves the host as it was."""
    box = sandbox
    before = pristine(box)
    evil = tmp_path / "evil-vendor"
    make_ssh_key(evil, "ed25519")
    catalog = copy_catalog(box, "evil-catalog")
    assert upgrader(box, "catalog", "build", str(catalog), "--serial", "1", "--key", str(evil)) == 0
    signers = box.keys / "vendor_signers"
    extra = tmp_path / "extra"
    extra.write_bytes(signers.read_bytes())
    add_signer(extra, "vendor-release", evil, 'namespaces="upgrader-catalog"')

    out = box.plans / "evil.json"
    argv = ["--home", str(box.root), "plan", "--inventory", str(box.inventory), "--to", "7.0.4.2", "--catalog",
            str(catalog), "--key", str(box.requester_key), "-o", str(out)]
    rc, text = cli(box, capsys, *argv)  # control: the file as it is refuses the attacker's catalog
    assert rc == ExitCode.APPROVAL_REFUSED, text
    assert "not a trusted vendor key" in text and not out.exists()

    with swapped_after_first_read(signers, extra.read_bytes()) as served:
        rc, text = cli(box, capsys, *argv)
    assert rc == ExitCode.APPROVAL_REFUSED, text
    assert "not a trusted vendor key" in text, text
    assert not out.exists()
    assert len(served) == 1, f"keys/vendor_signers was read {len(served)} times by one plan"
    assert host_state(box) == before


def test_an_allowed_signers_file_swapped_after_the_policy_read_does_not_let_a_foreign_approver_in(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A plan the requester made and an approval signed by a key the operator never listed; keys/allowed_signers
    gets that key's line for every read after the first. ``run`` refuses the approval (exit 4), the host untouched
    (lock, staged packages, product files, the service's pid)."""
    box = sandbox
    before = pristine(box)
    plan = box.plans / "to-7.0.4.2.json"
    rc, text = cli(box, capsys, "--home", str(box.root), "plan", "--inventory", str(box.inventory), "--to", "7.0.4.2",
                   "--catalog", str(box.catalog), "--key", str(box.requester_key), "-o", str(plan))
    assert rc == 0, text
    mallory = tmp_path / "mallory"
    make_ssh_key(mallory, "ed25519")
    signers = box.keys / "allowed_signers"
    extra = tmp_path / "extra"
    extra.write_bytes(signers.read_bytes())
    add_signer(extra, "mallory@vendor", mallory, 'namespaces="upgrader-approval"')
    # the attacker's approval, signed with their own tooling (the statement format is public; approve would refuse)
    approval = approval_signed_anyway(box, plan, key=mallory, approver="mallory@vendor")
    rc, text = cli(box, capsys, "--home", str(box.root), "run", str(plan), "--approval", str(approval), "--dry-run")
    assert rc == 4 and "signed by an untrusted key" in text, text  # control: the file as it is refuses it

    # the policy names this file twice (approvals' and audit's signers): the operator's bytes for two reads
    with swapped_after_first_read(signers, extra.read_bytes(), reads=2) as served:
        rc, text = cli(box, capsys, "--home", str(box.root), "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.APPROVAL_REFUSED, text
    assert "signed by an untrusted key" in text, text
    assert len(served) == 1, f"keys/allowed_signers was read {len(served)} times by one run"
    assert host_state(box) == before
    assert box.answers() == "7.0.4.1"


def opened_refuses(box: Sandbox, capsys: pytest.CaptureFixture[str], argv: list[str], out: Path,
                   opened: tuple[tuple[Path, int], ...], said: str = "") -> None:
    """With each place of ``opened`` in turn given its mode (put back after), the command ``argv`` is refused
    (exit 4) naming that place as writable by others (and saying ``said``), and writes nothing to ``out``."""
    for place, mode in opened:
        was = place.stat().st_mode & 0o7777
        place.chmod(mode)
        try:
            rc, text = cli(box, capsys, *argv)
        finally:
            place.chmod(was)
        assert rc == ExitCode.APPROVAL_REFUSED, text
        assert f"{place} is writable by" in text and said in text and "cannot be trusted" in text, text
        assert not out.exists()


def test_a_policy_or_trust_file_another_account_could_change_is_refused(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """attack12r18 M1: whoever can write HOME could plant HOME/policy.yaml (shadowing /etc/upgrader/policy.yaml)
    or swap keys/allowed_signers. As sshd's StrictModes does for authorized_keys, the operator's policy file and
    every trust file it names must be the operator's (or root's), their directories not writable by a group or
    others: else ``plan`` and ``run`` refuse (exit 4), naming the file or directory, and nothing is written."""
    box = sandbox
    before = pristine(box)
    out = box.plans / "open.json"
    argv = ["--home", str(box.root), "plan", "--inventory", str(box.inventory), "--to", "7.0.4.2", "--catalog",
            str(box.catalog), "--key", str(box.requester_key), "-o", str(out)]
    opened_refuses(box, capsys, argv, out, ((box.root, 0o775), (box.keys, 0o777), (box.policy, 0o664),
                                           (box.keys / "vendor_signers", 0o666)))
    rc, text = cli(box, capsys, *argv)  # the same with the modes put back: the plan is made
    assert rc == 0 and out.exists(), text
    assert host_state(box) == before


def test_an_operator_playbook_another_account_could_change_is_refused(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """attack12r19 M1: with the policy kept safe, another account that can write HOME/playbooks planted a playbook
    whose after_start hook ran as root. The operator's playbook (HOME/playbooks or /etc/upgrader/playbooks) must be
    theirs or root's, not writable by a group or others, nor its directory: else ``plan`` refuses (exit 4) naming
    it, and nothing is written; the shipped playbooks are the package's own."""
    import shutil

    from upgrader.core.playbook import shipped_playbooks_dir

    box = sandbox
    before = pristine(box)
    mine = box.root / "playbooks"
    mine.mkdir()
    shutil.copy(shipped_playbooks_dir() / "sample-middleware.yaml", mine / "sample-middleware.yaml")
    out = box.plans / "pb.json"
    argv = ["--home", str(box.root), "plan", "--inventory", str(box.inventory), "--to", "7.0.4.2", "--catalog",
            str(box.catalog), "--key", str(box.requester_key), "-o", str(out)]
    opened_refuses(box, capsys, argv, out, ((mine, 0o775), (mine / "sample-middleware.yaml", 0o646)), "playbook")
    rc, text = cli(box, capsys, *argv)
    assert rc == 0 and out.exists(), text
    assert host_state(box) == before


def test_padding_the_accounts_key_folder_does_not_hide_its_keys(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """attack12r19 L1: upgrader reads at most 200 entries of HOME/keys (and ~/.ssh) to know which keys the account
    holds (a granted engineer who logs in may sign with any of them); 200 empty dotfiles sorted before
    ``requester`` hid it. A folder holding more than that is refused (exit 4, the folder named), the host untouched."""
    from conftest import approve

    box = sandbox
    before = pristine(box)
    plan = box.plans / "pad.json"
    rc, text = cli(box, capsys, "--home", str(box.root), "plan", "--inventory", str(box.inventory), "--to", "7.0.4.2",
                   "--catalog", str(box.catalog), "--key", str(box.requester_key), "-o", str(plan))
    assert rc == 0, text
    approval = approve(box, plan)
    for i in range(200):
        (box.keys / f".pad{i:03d}").write_bytes(b"")
    rc, text = cli(box, capsys, "--home", str(box.root), "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.APPROVAL_REFUSED, text
    assert f"{box.keys} holds" in text and "more than the 200" in text, text
    assert host_state(box) == before
