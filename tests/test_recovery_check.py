"""The host agent's read-only recovery check (``op_recovery_check``): whose tree is in place, compared with what
the run being recovered did there. Table-driven over real state directories written as the agent writes them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from upgrader.hostagent.recovery import op_recovery_check


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _host(tmp_path: Path, installed: dict[str, Any] | None, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An install dir with its state dir: installed.json and, per run, state.json and the backup manifest."""
    install = tmp_path / "app"
    install.mkdir()
    state = tmp_path / ".upgrader-app"
    for run, r in runs.items():
        _write(state / "runs" / run / "state.json", {"updated": time.time() - 100, **r.get("state", {})})
        if "before" in r:
            _write(state / "runs" / run / "backup" / "manifest.json",
                   {"run": run, "config": [], "tree": {"files": {}}, **({"installed_by": r["before"]}
                                                                        if r["before"] != "legacy" else {})})
    if installed is not None:
        _write(state / "installed.json", installed)
    return {"install_dir": str(install)}


CASES = [
    # (what, installed.json, runs on the host, run recovered, verdict, by)
    ("its install is in place", {"run": "A", "installed_by": "A"},
     {"A": {"before": None, "state": {"phase": "finished"}}}, "A", "installed", None),
    ("it was rolled back already", {"run": "A", "installed_by": None, "restored": True},
     {"A": {"before": None, "state": {"phase": "finished", "rolled_back": {}}}}, "A", "rolled_back", None),
    ("a later run installed since", {"run": "B", "installed_by": "B"},
     {"A": {"before": None, "state": {"phase": "finished", "rolled_back": {}}},
      "B": {"before": None, "state": {"phase": "finished"}}}, "A", "changed", "B"),
    ("a later run was rolled back: A's install is in place again", {"run": "B", "installed_by": "A", "restored": True},
     {"A": {"before": None, "state": {"phase": "finished"}}, "B": {"before": "A", "state": {"phase": "finished"}}},
     "A", "installed", None),
    ("A undone, then B installed and rolled back: A is still undone", {"run": "B", "installed_by": "Z",
                                                                         "restored": True},
     {"A": {"before": "Z", "state": {"phase": "finished", "rolled_back": {}}},
      "B": {"before": "Z", "state": {"phase": "finished"}}}, "A", "rolled_back", None),
    ("interrupted mid-swap: installed.json still the one from before", {"run": "Z", "installed_by": "Z"},
     {"A": {"before": "Z", "state": {"phase": "swapping"}}}, "A", "before", None),
    ("interrupted before its backup: A changed nothing", {"run": "Z", "installed_by": "Z"}, {}, "A", "before", None),
    ("a legacy installed.json written by A's install", {"run": "A"},
     {"A": {"before": "legacy", "state": {"phase": "finished"}}}, "A", "installed", None),
    ("a legacy installed.json restored by A", {"run": "A", "restored": True},
     {"A": {"before": "legacy", "state": {"phase": "finished", "rolled_back": {}}}}, "A", "rolled_back", None),
    ("a legacy installed.json restored by B", {"run": "B", "restored": True},
     {"A": {"before": "legacy", "state": {"phase": "finished"}}}, "A", "changed", "B"),
]


@pytest.mark.parametrize("what,installed,runs,run,verdict,by", CASES, ids=[c[0] for c in CASES])
def test_recovery_check_names_whose_tree_is_in_place(tmp_path, what, installed, runs, run, verdict, by):
    """The verdict (installed, before, rolled_back, changed) and the run that changed the host."""
    req = _host(tmp_path, installed, runs)
    out = op_recovery_check({**req, "run_id": run})
    assert (out["verdict"], out["by"]) == (verdict, by), what


def test_a_run_whose_backup_retention_dropped_is_superseded_by_the_run_that_wrote_installed_json_after_it(tmp_path):
    """A finished, its backup was pruned by retention after later runs; B's install is newer: changed by B."""
    req = _host(tmp_path, {"run": "B", "installed_by": "B"}, {"A": {"state": {"phase": "finished"}}})
    installed = tmp_path / ".upgrader-app" / "installed.json"
    os.utime(installed, (time.time(), time.time()))
    out = op_recovery_check({**req, "run_id": "A"})
    assert (out["verdict"], out["by"]) == ("changed", "B")
