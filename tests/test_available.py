"""`upgrader available` on the sandbox (sample middleware 7.0.4.1, the sample catalog) and catalog advisories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import product_digest, upgrader
from upgrader.cli.commands.demo import Sandbox

ADVISORY = {"id": "SMW-2026-0001", "title": "Path traversal in the admin console", "severity": "high",
            "affected": [">=7.0.4.0, <7.0.4.3", "V7.0.3.9"], "fixed": ["7.0.4.3", "7.0.5.0"]}
OTHER = {"id": "SMW-2026-0002", "title": "Header injection", "severity": "medium", "affected": ["7.0.4.2"],
         "fixed": ["7.0.4.3"]}


def available(box: Sandbox, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    rc = upgrader(box, "available", "--inventory", str(box.inventory), "--catalog", str(box.catalog), "--json", *extra)
    out = capsys.readouterr().out
    return rc, json.loads(out) if rc == 0 else {}


def host(data: dict[str, Any], name: str = "app-01") -> dict[str, Any]:
    (found,) = [h for h in data["hosts"] if h["host"] == name]
    return found


def set_advisories(box: Sandbox, advisories: list[dict[str, Any]]) -> None:
    """Put advisories into the sandbox catalog and sign it again as the vendor."""
    path = box.catalog / "catalog.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["advisories"] = json.loads(json.dumps(advisories))  # copies: no YAML aliases for repeated entries
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    assert upgrader(box, "catalog", "sign", str(path), "--key", str(box.vendor_key)) == 0


def add_host_at(box: Sandbox, name: str, version: str) -> Path:
    """A second install (a copy of app-01 claiming ``version``) added to the sandbox inventory."""
    install = box.root / "hosts" / name
    shutil.copytree(box.install_dir, install, ignore=shutil.ignore_patterns("run", "logs"))
    (install / "lib" / "VERSION").write_text(f"{version}\n")
    doc = yaml.safe_load(box.inventory.read_text())
    doc["hosts"][name] = {**json.loads(json.dumps(doc["hosts"]["app-01"], default=str)), "install_dir": str(install)}
    box.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    return install


def test_sample_catalog_offers_7_0_5_0_and_says_why_each_other_version_is_refused(sandbox, capsys):
    """At 7.0.4.1 the newest free upgrade is 7.0.5.0; 7.0.4.8 (interface change) and 7.1.0.0 (minor) are refused."""
    box = sandbox
    before = product_digest(box.install_dir)
    rc, data = available(box, capsys)
    assert rc == 0
    app = host(data)
    assert app["current"] == "7.0.4.1" and app["error"] is None
    assert app["newest_free"] == {"version": "7.0.5.0", "kind": "full", "file": "sample-middleware-7.0.5.0.tar.gz"}
    assert [a["version"] for a in app["allowed"]] == ["7.0.4.2", "7.0.4.3", "7.0.4.5", "7.0.4.6", "7.0.4.7",
                                                       "7.0.5.0"]
    refused = {r["version"]: r["reasons"] for r in app["refused"]}
    assert set(refused) == {"7.0.4.8", "7.1.0.0"}
    assert refused["7.0.4.8"] == ["the package declares a change to external interfaces; such upgrades are never free"]
    assert refused["7.1.0.0"] == ["7.0 -> 7.1 changes level 2 (minor); only levels 3 and 4 are free"]
    assert app["advisories"] == [] and data["catalog"]["signer"] == "vendor-release"
    assert product_digest(box.install_dir) == before and box.answers() == "7.0.4.1"


def test_patch_requires_range_decides_per_host(sandbox, capsys):
    """Patch 7.0.4.3 (requires >=7.0.4.1, <7.0.4.3) is offered at 7.0.4.1 but refused at 7.0.4.0, with the range."""
    box = sandbox
    add_host_at(box, "app-02", "7.0.4.0")
    rc, data = available(box, capsys)
    assert rc == 0
    patch = [a for a in host(data, "app-01")["allowed"] if a["version"] == "7.0.4.3"]
    assert patch and patch[0]["kind"] == "patch"
    old = host(data, "app-02")
    assert old["current"] == "7.0.4.0" and old["newest_free"]["version"] == "7.0.5.0"
    refused = {r["version"]: r["reasons"] for r in old["refused"]}
    assert any("7.0.4.0 is outside >=7.0.4.1, <7.0.4.3" in reason for reason in refused["7.0.4.3"])
    rc, only = available(box, capsys, "--hosts", "app-02")
    assert rc == 0 and [h["host"] for h in only["hosts"]] == ["app-02"]


def test_an_advisory_affecting_7_0_4_1_flags_the_host_and_names_the_free_fix(sandbox, capsys):
    """SMW-2026-0001 (>=7.0.4.0, <7.0.4.3) flags app-01 with the least-change free fix, patch 7.0.4.3."""
    box = sandbox
    set_advisories(box, [ADVISORY, OTHER])
    rc, data = available(box, capsys)
    assert rc == 0
    (flag,) = host(data)["advisories"]  # SMW-2026-0002 names 7.0.4.2 only
    assert flag["id"] == "SMW-2026-0001" and flag["severity"] == "high" and flag["status"] == "affected"
    assert "7.0.4.1 is within >=7.0.4.0, <7.0.4.3" in flag["why"]
    assert flag["fix"] == {"version": "7.0.4.3", "kind": "patch", "file": "sample-middleware-7.0.4.3.tar.gz"}
    assert flag["fix_note"] == "free fix: 7.0.4.3 (patch, sample-middleware-7.0.4.3.tar.gz)"


def test_a_host_the_patch_does_not_fit_gets_the_next_free_fix(sandbox, capsys):
    """At 7.0.4.0 the fixing patch's requires range fails, so the free fix named is the full 7.0.5.0."""
    box = sandbox
    add_host_at(box, "app-02", "7.0.4.0")
    set_advisories(box, [ADVISORY])
    rc, data = available(box, capsys)
    assert rc == 0
    (flag,) = host(data, "app-02")["advisories"]
    assert flag["fix"]["version"] == "7.0.5.0"


def test_a_hotfix_only_advisory_names_the_hotfix_package(sandbox, capsys):
    """An advisory with only a hotfix package (no fixed versions) names that package as the free fix."""
    box = sandbox
    set_advisories(box, [{"id": "SMW-2026-0003", "title": "Weak session ids", "severity": "critical",
                          "affected": ["7.0.4.1"], "hotfix": "sample-middleware-7.0.4.3.tar.gz"}])
    rc, data = available(box, capsys)
    assert rc == 0
    (flag,) = host(data)["advisories"]
    assert flag["fix"]["file"] == "sample-middleware-7.0.4.3.tar.gz" and flag["why"].startswith("7.0.4.1 is listed")


def test_an_advisory_without_a_free_fix_says_why(sandbox, capsys):
    """When the only fixed version is refused (7.1.0.0, a minor upgrade) or absent, the advisory says so."""
    box = sandbox
    set_advisories(box, [{**ADVISORY, "fixed": ["7.1.0.0", "7.0.9.0"]}])
    rc, data = available(box, capsys)
    assert rc == 0
    (flag,) = host(data)["advisories"]
    assert flag["fix"] is None
    assert "fixed in 7.0.9.0, which this catalog does not hold" in flag["fix_note"]
    assert "7.1.0.0 (full) is refused: 7.0 -> 7.1 changes level 2 (minor)" in flag["fix_note"]


def test_table_output_shows_the_newest_free_upgrade_refusals_and_advisories(sandbox, capsys):
    """Without --json a table names 7.0.5.0, the refusal reasons and the flagged advisory with its fix."""
    box = sandbox
    set_advisories(box, [ADVISORY])
    capsys.readouterr()
    assert upgrader(box, "available", "--inventory", str(box.inventory), "--catalog", str(box.catalog)) == 0
    out = capsys.readouterr().out
    for words in ("7.0.5.0 (full)", "7.0.4.8", "external interfaces", "7.1.0.0", "SMW-2026-0001",
                  "free fix: 7.0.4.3 (patch", "1 host(s) run a version named in an advisory: app-01"):
        assert words in out, words


@pytest.mark.parametrize("change,key,words", [
    ({"fixd": ["7.0.4.3"]}, "advisories[0].fixd", "unknown key"),
    ({"affected": [">=7.0.4.x"]}, "advisories[0].affected[0]", "invalid version range"),
    ({"affected": ["7.0.4.1", "seven"]}, "advisories[0].affected[1]", "invalid version"),
    ({"affected": "7.0.4.1"}, "advisories[0].affected", "expected a list of strings"),
    ({"fixed": ["7.0.4.3 final"]}, "advisories[0].fixed[0]", "invalid version"),
    ({"severity": "urgent"}, "advisories[0].severity", "expected one of low, medium, high, critical"),
    ({"hotfix": "nowhere.tar.gz"}, "advisories[0].hotfix", "is not a sample-middleware package of this catalog"),
    ({"fixed": None}, "advisories[0].fixed", "needs fixed versions or a hotfix package"),
    ({"id": None}, "advisories[0].id", "required key is missing"),
], ids=["unknown_key", "bad_range", "bad_version", "not_a_list", "bad_fixed", "bad_severity", "unknown_hotfix",
        "no_fix", "no_id"])
def test_a_malformed_advisory_is_bad_input_naming_the_key(sandbox, capsys, change, key, words):
    """Each malformed advisory makes `available` exit 2 with the catalog file and the key in the message."""
    box = sandbox
    advisory = {k: v for k, v in {**ADVISORY, **change}.items() if v is not None}
    set_advisories(box, [advisory])
    capsys.readouterr()
    assert upgrader(box, "available", "--inventory", str(box.inventory), "--catalog", str(box.catalog)) == 2
    err = capsys.readouterr().err
    assert f"catalog.yaml: {key}: " in err and words in err


def test_an_advisory_listed_twice_is_bad_input(sandbox, capsys):
    """Two advisories with one id are refused (exit 2) naming the second."""
    box = sandbox
    set_advisories(box, [ADVISORY, ADVISORY])
    capsys.readouterr()
    assert upgrader(box, "available", "--inventory", str(box.inventory), "--catalog", str(box.catalog)) == 2
    assert "advisories[1].id: advisory SMW-2026-0001 is listed twice" in capsys.readouterr().err


def test_an_advisory_added_without_the_vendor_signature_is_not_trusted(sandbox, capsys):
    """Editing catalog.yaml (an advisory) without signing it again is refused like any altered catalog: exit 4."""
    box = sandbox
    path = box.catalog / "catalog.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["advisories"] = [ADVISORY]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    capsys.readouterr()
    assert upgrader(box, "available", "--inventory", str(box.inventory), "--catalog", str(box.catalog)) == 4
    assert "bad catalog signature" in capsys.readouterr().err


def test_an_unreadable_host_is_reported_and_the_others_still_listed(sandbox, capsys):
    """A host whose version file is gone is listed with the error (exit 5); app-01 still gets its answer."""
    box = sandbox
    install = add_host_at(box, "app-02", "7.0.4.0")
    (install / "lib" / "VERSION").unlink()
    capsys.readouterr()
    rc = upgrader(box, "available", "--inventory", str(box.inventory), "--catalog", str(box.catalog), "--json")
    assert rc == 5
    data = json.loads(capsys.readouterr().out)
    assert host(data)["newest_free"]["version"] == "7.0.5.0"
    broken = host(data, "app-02")
    assert broken["current"] is None and broken["error"]
