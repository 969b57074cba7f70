"""attack20r17 L1: a ``witness_missing`` line (written with no run: the host that did not record a run's checkpoint,
and that checkpoint) forged with an outcome, a phase, a run or other data, then the log rechained and signed with
the operator key, read INTACT and `audit show` listed it as the host's event. It is an edited line now (ALTERED,
exit 6, naming the line), in English and in Chinese; the honest log stays INTACT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from test_audit_forged_shapes import honest_log
from test_audit_witness import rechain
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox
from upgrader.trust.keys import load_private_key

FORGED: list[dict[str, Any]] = [
    {"outcome": "needs_person", "data": {"for_run": "x", "seq": 1, "head": "0" * 64,
                                         "error": "rollback failed: disk full"}},
    {"phase": "rollback", "data": {"for_run": "x", "seq": 1, "head": "0" * 64, "error": "e"}},
    {"data": {"for_run": "x", "seq": 1, "head": "0" * 64, "error": "e", "outcome": "needs_person"}},
    {"run": "RUN", "data": {"for_run": "x", "seq": 1, "head": "0" * 64, "error": "e"}},
]


@pytest.mark.parametrize("extra", FORGED)
def test_a_witness_missing_line_of_another_shape_is_an_edited_line(sandbox: Sandbox, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   extra: dict[str, Any]) -> None:
    lines = honest_log(sandbox)
    run = next(json.loads(x)["run"] for x in lines if json.loads(x)["event"] == "run_started")
    honest = tmp_path / "honest.jsonl"
    honest.write_bytes(b"".join(lines))
    base = json.loads(lines[-1])
    line = {k: base[k] for k in ("time", "clock") if k in base}
    line.update({"event": "witness_missing", "run": None, "host": "app-01", "phase": None, "outcome": None,
                 "actor": base.get("actor"), **{k: (run if v == "RUN" else v) for k, v in extra.items()}})
    forged_lines = lines[:-1] + [json.dumps({"seq": 0, "prev": "", **line}).encode() + b"\n", lines[-1]]
    key = load_private_key(sandbox.root / "keys" / "operator")
    principal = json.loads(lines[-1])["checkpoint"]["signer"]
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(b"".join(rechain(forged_lines, lambda r: r, key, principal)))
    capsys.readouterr()
    assert main(["--home", str(sandbox.root), "audit", "verify", str(honest)]) == 0, capsys.readouterr()
    capsys.readouterr()
    for lang in ("en", "zh"):
        rc = main(["--home", str(sandbox.root), "audit", "verify", str(forged), "--lang", lang])
        out = capsys.readouterr().out
        assert rc == 6, out
        said = " ".join(out.split())
        assert f"line {len(lines)}" in said or f"第 {len(lines)} 行" in said, said
        assert ("a witness_missing line names only the host" in said if lang == "en"
                else "witness_missing 行只写明没有记录检查点的主机和该检查点" in said), said
    assert main(["--home", str(sandbox.root), "audit", "show", str(forged)]) == 6
