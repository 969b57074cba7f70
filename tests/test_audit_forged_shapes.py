"""Issue 20, attack20r11 M4: whoever writes the log (the engineer holds the operator key) edits a field of a run's
line to a value of a type upgrader never writes there (a list, an object, a number, null, a boolean, text),
rebuilds the chain and signs it again. Every view of the log (`audit verify`, with --witness too, `show`, `case`,
`export`) must give a verdict, never crash (exit 70, "internal error"); a value of another kind than upgrader wrote
there (a run's outcomes and exit code, an opening line's hosts, an approval's digest, the requester, window,
policy, a phase's seconds...) is an edited line, named by its number (ALTERED, exit 6). Before the fix an outcome
given as a list crashed every view (exit 70)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import plan_to, run_plan
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_audit_witness import rechain
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox
from upgrader.trust.keys import load_private_key

ALTERED = 6

#: values of every JSON type, of the kinds an editor would try
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10 ** 12), st.floats(allow_nan=False),
                   st.text(max_size=8), st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=4)), max_size=3),
                   st.dictionaries(st.text(max_size=4), st.one_of(st.none(), st.integers(), st.text(max_size=4)),
                                   max_size=2))

#: the lines edited (event) and the places in them (a path of keys and indexes below the line; "*": every key of
#: that object)
PLACES = [("run_finished", ("data", "outcomes", "*")), ("run_finished", ("data", "outcomes")),
          ("run_finished", ("data", "exit_code")), ("run_finished", ("data", "stopped_early")),
          ("run_finished", ("outcome",)), ("host_finished", ("data", "version")),
          ("host_finished", ("data", "error")), ("host_finished", ("data", "rollback_cause")),
          ("host_finished", ("data",)), ("run_started", ("data", "hosts")), ("run_started", ("data", "hosts", 0)),
          ("run_started", ("data", "hosts", 0, "host")), ("run_started", ("data", "hosts", 0, "target")),
          ("run_started", ("data", "hosts", 0, "current")), ("run_started", ("data", "hosts", 0, "package")),
          ("run_started", ("data", "approvals")), ("run_started", ("data", "approvals", 0)),
          ("run_started", ("data", "approvals", 0, "digest")), ("run_started", ("data", "approvals", 0, "expires")),
          ("run_started", ("data", "approvals", 0, "approver")), ("run_started", ("data", "approvals", 0, "key")),
          ("run_started", ("data", "requester")), ("run_started", ("data", "requester", "user")),
          ("run_started", ("data", "policy")), ("run_started", ("data", "policy", "sha256")),
          ("run_started", ("data", "window")), ("run_started", ("data", "window", "inside")),
          ("run_started", ("data", "catalog")), ("run_started", ("data", "plan")), ("run_started", ("data", "target")),
          ("approval_accepted", ("data", "digest")), ("approval_accepted", ("data", "expires")),
          ("phase_finished", ("data", "seconds")), ("phase_finished", ("data", "result")),
          ("phase_finished", ("data", "detail"))]

def honest_log(box: Sandbox) -> list[bytes]:
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    assert run_plan(box, plan) == 0
    return (box.root / "audit" / "audit.jsonl").read_bytes().splitlines(keepends=True)


def put(rec: dict[str, Any], path: tuple[Any, ...], value: Any) -> bool:
    """Set ``path`` in ``rec`` to ``value``; False when the path is not there (nothing set)."""
    at: Any = rec
    for k in path[:-1]:
        if isinstance(at, dict) and k in at or isinstance(at, list) and isinstance(k, int) and k < len(at):
            at = at[k]
        else:
            return False
    last = path[-1]
    if last == "*":
        if not isinstance(at, dict) or not at:
            return False
        for k in at:
            at[k] = copy.deepcopy(value)
        return True
    if isinstance(at, dict) and (last in at or path[0] == "data"):
        at[last] = value
        return True
    if isinstance(at, list) and isinstance(last, int) and last < len(at):
        at[last] = value
        return True
    return False


def get(rec: dict[str, Any], path: tuple[Any, ...]) -> Any:
    """The value at ``path`` in ``rec`` (the first key's for "*"; None when absent)."""
    at: Any = rec
    for k in path:
        if k == "*" and isinstance(at, dict) and at:
            at = next(iter(at.values()))
        elif isinstance(at, dict) and k in at or isinstance(at, list) and isinstance(k, int) and k < len(at):
            at = at[k]
        else:
            return None
    return at


def views(box: Sandbox, log: Path, run: str, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, int, str]]:
    """Every view of ``log``: (the command, its exit code, what it printed)."""
    out = []
    for argv in (["verify", str(log)], ["verify", str(log), "--lang", "zh"], ["show", str(log)],
                 ["case", run, str(log)], ["case", run, str(log), "--approvals", str(box.approvals)],
                 ["verify", str(log), "--witness", str(box.inventory)],
                 ["case", run, str(log), "--witness", str(box.inventory), "--lang", "zh"],
                 ["export", str(log), "--format", "csv", "-o", str(log.with_suffix(".csv"))],
                 ["export", str(log), "--format", "json", "-o", str(log.with_suffix(".json"))],
                 ["export", str(log), "--format", "html", "-o", str(log.with_suffix(".html"))]):
        capsys.readouterr()
        rc = main(["--home", str(box.root), "--debug", "audit", *argv])
        captured = capsys.readouterr()
        out.append((" ".join(argv[:1]), rc, captured.out + captured.err))
    return out


@pytest.fixture
def honest(sandbox: Sandbox) -> tuple[Sandbox, list[bytes]]:
    return sandbox, honest_log(sandbox)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=st.sampled_from(PLACES), value=VALUES)
def test_a_field_of_a_type_upgrader_never_writes_is_a_verdict_never_a_crash(
        honest: tuple[Sandbox, list[bytes]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        place: tuple[str, tuple[Any, ...]], value: Any) -> None:
    box, lines = honest
    event, path = place
    key = load_private_key(str(box.operator_key))
    run = next(json.loads(x)["run"] for x in lines if json.loads(x)["event"] == "run_started")
    original: list[Any] = []

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        if rec["event"] == event and not original:
            before = get(rec, path)
            if put(rec, path, value):
                original.append(before)
        return rec

    forged = rechain(lines, edit, key, "operator@customer")
    if not original:
        return  # the honest log has no such place
    log = tmp_path / f"forged-{abs(hash((place, repr(value))))}.jsonl"
    log.write_bytes(b"".join(forged))
    seq = next(int(json.loads(x)["seq"]) for x in forged if json.loads(x)["event"] == event)
    results = views(box, log, run, capsys)
    for name, rc, text in results:
        assert rc != 70 and "internal error" not in text and "Traceback" not in text, (name, place, value, text)
        assert rc in (0, 2, 6), (name, rc, text)
    was, now = _kind(original[0]), _kind(value)
    required = path[-1] in ("digest", "*") or path == ("data", "hosts")
    if now != was and (now != "null" or required) and was != "null":
        # a value of another kind than upgrader wrote there (null only where upgrader always writes a value)
        rc, text = results[0][1], " ".join(results[0][2].split())
        assert rc == ALTERED and f"ALTERED: line {seq}: not an event upgrader writes: " in text, (place, value, text)


def _kind(value: Any) -> str:
    """A JSON value's kind: null, flag, number, text, list or object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "flag"
    return {int: "number", float: "number", str: "text", list: "list", dict: "object"}[type(value)]
