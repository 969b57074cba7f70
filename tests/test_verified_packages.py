"""The operator's record of package files already verified in full (HOME/cache/verified-packages.json, issue 16):
``plan`` records the package it verified, and a ``run`` of the same unchanged file does not hash it again. The
record must never make changed bytes pass: a package altered in place with its size and mtime kept, or another
file put in its place with the same size and mtime, is refused by ``run`` (exit 2) before the host is touched;
so is one whose record was forged in a cache file that others could write."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, plan_to
from trust_support import cli, host_state, pristine
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.sample import package_name
from upgrader.trust.verified import CACHE_NAME, SETTLED_NS

TO = "7.0.4.2"


def cache_file(box: Sandbox) -> Path:
    return box.root / "cache" / CACHE_NAME


def settled(package: Path) -> os.stat_result:
    """Wait until the package's last change is old enough to be recorded (the record's race guard)."""
    while time.time_ns() - package.stat().st_ctime_ns < SETTLED_NS + 50_000_000:
        time.sleep(0.1)
    return package.stat()


def records(box: Sandbox) -> list[dict[str, object]]:
    return list(json.loads(cache_file(box).read_text(encoding="utf-8"))["packages"])


def planned_recorded_approved(box: Sandbox) -> tuple[Path, Path, Path, os.stat_result]:
    """A plan to 7.0.4.2 whose package file was recorded as verified, and its approval."""
    package = box.catalog / package_name(TO)
    st = settled(package)
    rc, plan = plan_to(box, TO)
    assert rc == ExitCode.OK
    (record,) = [r for r in records(box) if r["path"] == str(package)]
    assert (record["dev"], record["ino"], record["size"], record["mtime_ns"], record["ctime_ns"]) == \
        (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return package, plan, approve(box, plan), st


def altered(data: bytes) -> bytes:
    """The same length, one byte of the middle changed."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]


def assert_refused(box: Sandbox, capsys: pytest.CaptureFixture[str], plan: Path, approval: Path) -> None:
    before = pristine(box)
    rc, err = cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.BAD_INPUT, err
    assert "sha256" in err and "differs from the catalog" in err and package_name(TO) in err
    assert "Traceback" not in err
    assert host_state(box) == before
    assert not (box.approvals / "used.jsonl").exists(), "a refused run consumed the approval"


def test_plan_records_the_package_and_the_run_of_the_unchanged_file_installs_it(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The record is the operator's own file (0600, in HOME/cache) naming the sha256 and the limits checked;
    a run of the unchanged package upgrades the host."""
    package, plan, approval, _ = planned_recorded_approved(sandbox)
    st = os.lstat(cache_file(sandbox))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    (record,) = [r for r in records(sandbox) if r["path"] == str(package)]
    doc = yaml.safe_load((sandbox.catalog / "catalog.yaml").read_text(encoding="utf-8"))
    (entry,) = [e for e in doc["packages"] if e["version"] == TO]
    assert record["sha256"] == entry["sha256"]
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.OK, err
    assert sandbox.answers() == TO


@pytest.mark.parametrize("how", ["altered in place", "replaced by another file"])
def test_a_package_changed_with_its_size_and_mtime_kept_is_refused(sandbox: Sandbox, how: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """After plan recorded the package, its bytes change but its size and mtime are put back (os.utime): the
    run verifies it in full again and refuses it (exit 2), the host untouched, the approval not spent."""
    package, plan, approval, st = planned_recorded_approved(sandbox)
    data = altered(package.read_bytes())
    if how == "altered in place":
        with open(package, "r+b") as f:
            f.write(data)
    else:
        other = package.with_name(package.name + ".new")
        other.write_bytes(data)
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(other, package)
    os.utime(package, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = package.stat()
    assert (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert package.read_bytes() == data
    assert_refused(sandbox, capsys, plan, approval)
    # verified in full again, the changed file is not recorded
    assert all(r["ctime_ns"] != now.st_ctime_ns or r["ino"] != now.st_ino for r in records(sandbox))


@pytest.mark.parametrize("how", ["writable by others", "a link to another file"])
def test_a_record_forged_in_a_cache_file_others_can_write_is_not_believed(sandbox: Sandbox, how: str,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Someone who could write the cache file (or put a link in its place) writes a record naming the altered
    package's new identity and the catalog's sha256: the record is not believed, the run refuses the package."""
    package, plan, approval, st = planned_recorded_approved(sandbox)
    with open(package, "r+b") as f:
        f.write(altered(package.read_bytes()))
    os.utime(package, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = package.stat()
    forged = [{**r, "ino": now.st_ino, "ctime_ns": now.st_ctime_ns} if r["path"] == str(package) else r
              for r in records(sandbox)]
    text = json.dumps({"format": 1, "packages": forged})
    cache = cache_file(sandbox)
    if how == "writable by others":
        cache.write_text(text, encoding="utf-8")
        cache.chmod(0o666)
    else:
        elsewhere = sandbox.root.parent / "planted-cache.json"
        elsewhere.write_text(text, encoding="utf-8")
        elsewhere.chmod(0o600)
        cache.unlink()
        cache.symlink_to(elsewhere)
    assert_refused(sandbox, capsys, plan, approval)
