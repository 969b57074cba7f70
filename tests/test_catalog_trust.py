"""The signed catalog end to end through the real CLI: a catalog that is unsigned, wrongly signed,
older than one already seen, or whose packages do not match it is refused at ``plan`` and at
``run`` before the host is touched (exit 4 for trust, exit 2 for package bytes)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, plan_to, upgrader
from hoststate import assert_host_untouched
from trust_support import (
    cli,
    copy_catalog,
    host_state,
    make_ssh_key,
    pristine,
    ssh_keygen,
    state_dir,
    vendor_catalog,
)
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.sample import package_name

TO = "7.0.4.2"


def plan_with(box: Sandbox, capsys: pytest.CaptureFixture[str], catalog: Path, name: str) -> tuple[int, str, Path]:
    out = box.plans / f"{name}.json"
    rc, err = cli(box, capsys, "plan", "--inventory", str(box.inventory), "--to", TO, "--catalog", str(catalog),
                  "-o", str(out))
    return rc, err, out


def assert_plan_refused(box: Sandbox, capsys: pytest.CaptureFixture[str], catalog: Path, code: int,
                        *words: str) -> str:
    """``upgrader plan`` exits ``code`` naming ``words``, writes no plan and leaves the host untouched."""
    before = pristine(box)
    rc, err, out = plan_with(box, capsys, catalog, "refused")
    assert rc == code, f"exit {rc}, expected {code}: {err}"
    for word in words:
        assert word in err, f"{word!r} not in the message: {err}"
    assert not out.exists()
    assert_host_untouched(before, host_state(box))
    assert not state_dir(box.install_dir).exists()
    return err


def planned_and_approved(box: Sandbox) -> tuple[Path, Path]:
    rc, plan = plan_to(box, TO)
    assert rc == ExitCode.OK
    return plan, approve(box, plan)


def assert_run_refused(box: Sandbox, capsys: pytest.CaptureFixture[str], plan: Path, approval: Path, code: int,
                       *words: str, extra: tuple[str, ...] = ()) -> str:
    """``upgrader run`` exits ``code`` naming ``words``; no run is recorded and the host is untouched."""
    before = pristine(box)
    used = box.approvals / "used.jsonl"
    rc, err = cli(box, capsys, "run", str(plan), "--approval", str(approval), *extra)
    assert rc == code, f"exit {rc}, expected {code}: {err}"
    for word in words:
        assert word in err, f"{word!r} not in the message: {err}"
    assert_host_untouched(before, host_state(box))
    assert not used.exists(), "a refused run consumed the approval"
    return err


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _catalog_entry(catalog: Path, version: str) -> dict[str, Any]:
    doc = yaml.safe_load((catalog / "catalog.yaml").read_text(encoding="utf-8"))
    (entry,) = [p for p in doc["packages"] if p["version"] == version]
    return dict(entry)


# ---------------------------------------------------------------- at plan


def test_plan_refuses_an_unsigned_catalog(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Without catalog.yaml.sig the catalog is not trusted: exit 4, naming the missing file."""
    (sandbox.catalog / "catalog.yaml.sig").unlink()
    assert_plan_refused(sandbox, capsys, sandbox.catalog, ExitCode.APPROVAL_REFUSED, "not signed",
                        "catalog.yaml.sig")


def test_plan_refuses_a_catalog_edited_after_signing(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """One changed word in catalog.yaml after the vendor signed it: bad signature, exit 4."""
    catalog = sandbox.catalog / "catalog.yaml"
    text = catalog.read_text(encoding="utf-8")
    catalog.write_text(text.replace("description: maintenance release", "description: maintenance releases", 1),
                       encoding="utf-8")
    assert catalog.read_text(encoding="utf-8") != text
    assert_plan_refused(sandbox, capsys, sandbox.catalog, ExitCode.APPROVAL_REFUSED, "bad catalog signature")


def test_plan_refuses_a_swapped_package_listed_in_an_edited_catalog(sandbox: Sandbox,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Replacing a package and editing its sha256 and size in catalog.yaml to match is caught by the signature."""
    package = sandbox.catalog / package_name(TO)
    old_sha = _catalog_entry(sandbox.catalog, TO)["sha256"]
    old_size = _catalog_entry(sandbox.catalog, TO)["size"]
    package.write_bytes((sandbox.catalog / package_name("7.0.4.6")).read_bytes())  # a release that cannot start
    catalog = sandbox.catalog / "catalog.yaml"
    text = catalog.read_text(encoding="utf-8")
    new_sha = hashlib.sha256(package.read_bytes()).hexdigest()
    text = text.replace(old_sha, new_sha).replace(f"size: {old_size}\n", f"size: {package.stat().st_size}\n", 1)
    catalog.write_text(text, encoding="utf-8")
    assert _catalog_entry(sandbox.catalog, TO)["sha256"] == new_sha
    assert_plan_refused(sandbox, capsys, sandbox.catalog, ExitCode.APPROVAL_REFUSED, "bad catalog signature")


@pytest.mark.parametrize("signer", ["intruder key", "engineer key"])
def test_plan_refuses_a_catalog_signed_by_a_key_not_in_vendor_signers(sandbox: Sandbox, tmp_path: Path, signer: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A valid signature by a key that is not a trusted vendor key (even a trusted approver's) is refused."""
    key = make_ssh_key(tmp_path / "intruder", "ed25519") if signer == "intruder key" else sandbox.engineer_key
    assert upgrader(sandbox, "catalog", "sign", str(sandbox.catalog), "--key", str(key)) == 0
    assert_plan_refused(sandbox, capsys, sandbox.catalog, ExitCode.APPROVAL_REFUSED, "not a trusted vendor key")


def test_plan_refuses_a_vendor_signature_made_for_another_namespace(sandbox: Sandbox,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The vendor key's signature over catalog.yaml in the approval namespace does not make a catalog signature."""
    sig = sandbox.catalog / "catalog.yaml.sig"
    sig.unlink()
    ssh_keygen("-Y", "sign", "-f", str(sandbox.vendor_key), "-n", "upgrader-approval",
               str(sandbox.catalog / "catalog.yaml"))
    assert_plan_refused(sandbox, capsys, sandbox.catalog, ExitCode.APPROVAL_REFUSED, "bad catalog signature",
                        "namespace")


def test_plan_refuses_a_rollback_to_an_older_catalog(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Once a catalog with serial 2 was used, the vendor's own serial 1 catalog is refused as a rollback."""
    newer = copy_catalog(sandbox, "catalog-serial-2")
    vendor_catalog(sandbox, newer, serial=2)
    rc, err, _ = plan_with(sandbox, capsys, newer, "serial-2")
    assert rc == ExitCode.OK, err
    assert_plan_refused(sandbox, capsys, sandbox.catalog, ExitCode.APPROVAL_REFUSED, "serial 1 is older than serial 2",
                        "rollback")
    rc, err, _ = plan_with(sandbox, capsys, newer, "serial-2-again")
    assert rc == ExitCode.OK, err


def test_a_forged_higher_serial_does_not_lock_out_the_genuine_catalog(sandbox: Sandbox,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """An edited catalog claiming serial 99 is refused and is not remembered: the genuine serial 1 still plans."""
    forged = copy_catalog(sandbox, "catalog-forged")
    text = (forged / "catalog.yaml").read_text(encoding="utf-8")
    assert "serial: 1\n" in text
    (forged / "catalog.yaml").write_text(text.replace("serial: 1\n", "serial: 99\n", 1), encoding="utf-8")
    assert_plan_refused(sandbox, capsys, forged, ExitCode.APPROVAL_REFUSED, "bad catalog signature")
    rc, err, _ = plan_with(sandbox, capsys, sandbox.catalog, "genuine")
    assert rc == ExitCode.OK, err


@pytest.mark.parametrize("change, words", [
    ("same size", ("sha256", "differs from the catalog", "altered")),
    ("one byte longer", ("size", "differs from the catalog", "altered or truncated")),
    ("one byte shorter", ("size", "differs from the catalog", "altered or truncated")),
])
def test_plan_refuses_a_package_whose_bytes_do_not_match_the_catalog(sandbox: Sandbox, change: str,
                                                                     words: tuple[str, ...],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A package edited after the catalog was signed is bad input (exit 2) at plan, naming the package file."""
    package = sandbox.catalog / package_name(TO)
    if change == "same size":
        flip_middle_byte(package)
    elif change == "one byte longer":
        package.write_bytes(package.read_bytes() + b"\x00")
    else:
        package.write_bytes(package.read_bytes()[:-1])
    err = assert_plan_refused(sandbox, capsys, sandbox.catalog, ExitCode.BAD_INPUT, *words)
    assert package.name in err


# ---------------------------------------------------------------- at run


@pytest.mark.parametrize("change, words", [
    ("same size", ("sha256", "differs from the catalog")),
    ("other size", ("size", "differs from the catalog")),
])
def test_run_refuses_a_package_replaced_after_planning(sandbox: Sandbox, change: str, words: tuple[str, ...],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A package changed between plan and run stops the run (exit 2) before the host is touched, and the approval
    is not used up: with the original bytes back, it still runs."""
    plan, approval = planned_and_approved(sandbox)
    package = sandbox.catalog / package_name(TO)
    original = package.read_bytes()
    if change == "same size":
        flip_middle_byte(package)
    else:
        package.write_bytes(original + b"trailing junk")
    err = assert_run_refused(sandbox, capsys, plan, approval, ExitCode.BAD_INPUT, *words)
    assert package.name in err
    package.write_bytes(original)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--dry-run")
    assert rc == ExitCode.OK, err


def test_run_refuses_a_catalog_edited_after_planning(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """catalog.yaml changed after the plan (not re-signed): bad signature at run, exit 4."""
    plan, approval = planned_and_approved(sandbox)
    catalog = sandbox.catalog / "catalog.yaml"
    catalog.write_text(catalog.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert_run_refused(sandbox, capsys, plan, approval, ExitCode.APPROVAL_REFUSED, "bad catalog signature")


def test_run_refuses_when_the_catalog_signature_was_removed(sandbox: Sandbox,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """catalog.yaml.sig deleted after the plan: the catalog is not signed, exit 4."""
    plan, approval = planned_and_approved(sandbox)
    (sandbox.catalog / "catalog.yaml.sig").unlink()
    assert_run_refused(sandbox, capsys, plan, approval, ExitCode.APPROVAL_REFUSED, "not signed")


def test_run_refuses_a_plan_made_with_a_catalog_older_than_one_seen_since(sandbox: Sandbox,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A plan made with serial 1, run after serial 2 was seen, is refused as a catalog rollback."""
    plan, approval = planned_and_approved(sandbox)
    newer = copy_catalog(sandbox, "catalog-serial-2")
    vendor_catalog(sandbox, newer, serial=2)
    rc, err, _ = plan_with(sandbox, capsys, newer, "serial-2")
    assert rc == ExitCode.OK, err
    assert_run_refused(sandbox, capsys, plan, approval, ExitCode.APPROVAL_REFUSED, "older than serial 2", "rollback")


def test_run_refuses_a_catalog_re_signed_by_the_vendor_since_the_plan(sandbox: Sandbox,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A genuine, newer catalog in the plan's place is still not the catalog the plan (and approval) covered."""
    plan, approval = planned_and_approved(sandbox)
    vendor_catalog(sandbox, sandbox.catalog, serial=2)
    assert_run_refused(sandbox, capsys, plan, approval, ExitCode.APPROVAL_REFUSED,
                       "not the one the plan was made with")


def test_run_refuses_another_signed_catalog_given_with_catalog_option(sandbox: Sandbox,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``run --catalog`` pointing at another genuinely signed catalog is refused: the plan names its catalog."""
    plan, approval = planned_and_approved(sandbox)
    other = copy_catalog(sandbox, "catalog-other")
    vendor_catalog(sandbox, other, serial=2)
    assert (other / "catalog.yaml").read_bytes() != (sandbox.catalog / "catalog.yaml").read_bytes()
    assert_run_refused(sandbox, capsys, plan, approval, ExitCode.APPROVAL_REFUSED,
                       "not the one the plan was made with", extra=("--catalog", str(other)))


def test_run_refuses_a_catalog_whose_vendor_key_was_revoked_since_the_plan(sandbox: Sandbox,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """vendor_signers is read at run time: once the vendor key is removed, its catalog is no longer trusted (the
    policy's identity covers vendor_signers, so the plan is refused as made under another policy, naming it)."""
    plan, approval = planned_and_approved(sandbox)
    (sandbox.keys / "vendor_signers").write_text("# the vendor key was revoked\n", encoding="utf-8")
    assert_run_refused(sandbox, capsys, plan, approval, ExitCode.APPROVAL_REFUSED, "made under another policy",
                       "catalog.trusted_signers")


def test_plan_refuses_a_catalog_signature_naming_an_unknown_key_type(sandbox: Sandbox,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A well-formed catalog.yaml.sig whose public key type was renamed is refused with exit 4, not a crash."""
    sig = sandbox.catalog / "catalog.yaml.sig"
    lines = sig.read_text().splitlines()
    raw = base64.b64decode("".join(lines[1:-1]))
    b64 = base64.b64encode(raw.replace(b"ssh-ed25519", b"ssh-ed25419", 1)).decode()
    sig.write_text("\n".join([lines[0], *(b64[i:i + 70] for i in range(0, len(b64), 70)), lines[-1]]) + "\n")
    assert_plan_refused(sandbox, capsys, sandbox.catalog, ExitCode.APPROVAL_REFUSED, "catalog")
