"""The template workflow: the customer's `inspect --bundle` (one file: report and JSON, redacted) and support's
`inspect --review BUNDLE` (compared with the last bundle received from that host, advice written back as a report),
on the real sample; a bundle changed after it was written, or holding anything else, is refused naming the file and
nothing is kept."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from conftest import upgrader
from test_audit_report import Page

from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox


def _members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


def _customer_bundle(box: Sandbox, capsys, out: Path) -> None:
    capsys.readouterr()
    assert upgrader(box, "inspect", "--install-dir", str(box.install_dir), "--var", f"port={box.port}",
                    "--remarks", "db password=Hunter2-secret", "--bundle", str(out), "--lang", "zh") == 0
    assert f"巡检包已写入 {out}" in capsys.readouterr().out


def _review(support: Path, bundle: Path, *extra: str) -> int:
    return main(["--home", str(support), "inspect", "--review", str(bundle), *extra])


def test_bundle_and_review_round_trip_shows_advice_and_what_changed_since_the_last_bundle(
        sandbox: Sandbox, capsys, tmp_path: Path) -> None:
    box = sandbox
    support = tmp_path / "support-home"
    first = tmp_path / "inspection-1.tar.gz"
    _customer_bundle(box, capsys, first)
    members = _members(first)
    assert sorted(members) == ["inspection.json", "manifest.json", "report.html"]
    assert all(b"Hunter2-secret" not in blob for blob in members.values())  # redacted as diagnostics bundles are
    assert "健康巡检报告" in members["report.html"].decode()
    capsys.readouterr()
    assert _review(support, first, "--lang", "zh") == 0
    advice = tmp_path / "inspection-1-advice.html"
    text = Page(advice.read_text()).text
    assert "技术支持已审阅并给出建议" in text and "此主机没有以往的巡检记录" in text
    assert len(list((support / "inspections" / "received").glob("*/*.json"))) == 1
    # half a year later: the site edited its configuration
    with open(box.install_dir / "conf" / "server.conf", "a") as f:
        f.write("# threads raised by the site\n")
    second = tmp_path / "inspection-2.tar.gz"
    _customer_bundle(box, capsys, second)
    capsys.readouterr()
    out_file = tmp_path / "advice-2.html"
    assert _review(support, second, "-o", str(out_file), "--json") == 0
    (h,) = json.loads(capsys.readouterr().out)["hosts"]
    assert h["previous"]["file"].startswith(str(support / "inspections" / "received"))
    (change,) = [c for c in h["changes"] if c["area"] == "config"]
    assert change["name"] == "conf/server.conf" and change["previous"] != change["new"]
    assert all("advice" in w for w in h["warnings"] if w["check"] != "log")
    html = out_file.read_text()
    assert "conf/server.conf was edited" in Page(html).text


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None], extra: dict[str, bytes] | None = None) -> None:
    with tarfile.open(src, "r:gz") as tar, tarfile.open(dst, "w:gz") as out:
        for m in tar:
            data = tar.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
            name = m.name.split("/", 1)[-1]
            if name in change:
                data = change[name]
                m.size = len(data or b"")
            out.addfile(m, io.BytesIO(data) if data is not None else None)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("how, words", [
    ("edited", "inspection.json does not match its digest in manifest.json"),
    ("extra", "'../evil.sh' is not a member of an inspection bundle"),
    ("not-tar", "not an inspection bundle"),
])
def test_a_changed_or_foreign_bundle_is_refused_naming_the_file_and_nothing_is_kept(
        sandbox: Sandbox, capsys, tmp_path: Path, how: str, words: str) -> None:
    box = sandbox
    good = tmp_path / "good.tar.gz"
    _customer_bundle(box, capsys, good)
    bad = tmp_path / "bad.tar.gz"
    if how == "edited":
        data = json.loads(_members(good)["inspection.json"])
        data["hosts"][0]["facts"]["version"] = "9.9.9"
        _rewrite(good, bad, {"inspection.json": json.dumps(data).encode()})
    elif how == "extra":
        _rewrite(good, bad, {}, {"../evil.sh": b"#!/bin/sh\n"})
    else:
        bad.write_bytes(b"this is not a tarball\n")
    support = tmp_path / "support-home"
    capsys.readouterr()
    assert _review(support, bad) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and words in err and "Traceback" not in err
    assert not (support / "inspections").exists() and not (tmp_path / "bad-advice.html").exists()


def test_review_does_not_go_with_a_collection_option(sandbox: Sandbox, capsys, tmp_path: Path) -> None:
    """--review reads a bundle only: with --install-dir it is bad input (exit 2) saying what does not go with it."""
    box = sandbox
    capsys.readouterr()
    assert upgrader(box, "inspect", "--review", str(tmp_path / "x.tar.gz"), "--install-dir", str(box.install_dir)) == 2
    err = capsys.readouterr().err
    assert "--review BUNDLE reads a customer's inspection: it does not go with --install-dir" in err
    assert not (box.root / "inspections").exists()
