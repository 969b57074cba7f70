"""Several agent requests in one round trip (action ``batch``, issue 16): a run's preflight sends the trust gate, the
lock and the facts together. What must hold, on the agent's own request handler (what the controller's lines reach):

1. each request of a batch is answered exactly as when it comes alone (same refusal, same kind, same message);
2. the batch stops at the first refusal: nothing after it runs (a refused gate takes no lock; a refused lock reads
   no facts), and the host is as it was;
3. a batch inside a batch, or a batch without a list of requests, is refused as bad input.

The runs over SSH that go through the batched preflight, and its refusals, are those of test_fleet_ssh,
test_host_trust and test_trust_roots_*.
"""

from __future__ import annotations

import json
from pathlib import Path

from hoststate import lock_audit, take_lock
from upgrader import sample
from upgrader.hostagent.main import handle
from upgrader.core.playbook import load_playbook, shipped_playbooks_dir

FACTS = {"version_source": load_playbook(shipped_playbooks_dir() / "sample-middleware.yaml").spec["version"],
         "check_drift": False, "preserve": [], "packages": [], "check_paths": {}, "ascii_dirs": []}


def install(tmp_path: Path) -> dict[str, object]:
    """An install of 7.0.4.1 and the base fields of a run's requests to it."""
    where = tmp_path / "hosts" / "app-01"
    sample.install(where, port=18091)
    return {"install_dir": str(where), "state_dir": None}


def lock_req(base: dict[str, object], run_id: str) -> dict[str, object]:
    return {"op": "lock", **base, "run_id": run_id, "controller": "test", "user": "test", "approvals": [],
            "audit": lock_audit(run_id, "run")}


def lock_file(base: dict[str, object]) -> Path:
    return Path(str(base["install_dir"])).parent / ".upgrader-app-01" / "lock"


def test_1_each_request_is_answered_as_alone(tmp_path: Path) -> None:
    base = install(tmp_path)
    alone = handle({"op": "facts", **base, **FACTS})
    reply = handle({"op": "batch", "requests": [lock_req(base, "run-a"), {"op": "facts", **base, **FACTS}]})
    assert reply["ok"] is True, reply
    locked, facts = reply["result"]["replies"]
    assert locked["ok"] is True and locked["result"]["holder"]["run"] == "run-a"
    assert facts["ok"] is True and facts["result"]["version"] == alone["result"]["version"] == "7.0.4.1"
    assert json.loads(lock_file(base).read_text())["run"] == "run-a"


def test_2_a_refused_lock_stops_the_batch(tmp_path: Path) -> None:
    """Another run holds the host: the lock's refusal is the one a lone lock gets, and the facts are not read."""
    base = install(tmp_path)
    assert take_lock(lambda op, **req: handle({"op": op, **base, **req}), "run-other")["ok"] is True
    holder = lock_file(base).read_bytes()
    alone = handle(lock_req(base, "run-b"))
    reply = handle({"op": "batch", "requests": [{"op": "host_trust", **base, "run_id": "run-b", "sha256": "0" * 64},
                                                lock_req(base, "run-b"), {"op": "facts", **base, **FACTS}]})
    replies = reply["result"]["replies"]
    assert len(replies) == 2 and replies[0]["ok"] is True
    assert replies[1]["ok"] is False and replies[1]["kind"] == alone["kind"] == "locked"
    assert replies[1]["error"] == alone["error"] and "run-other" in replies[1]["error"]
    assert lock_file(base).read_bytes() == holder


def test_3_a_refused_first_request_takes_no_lock(tmp_path: Path) -> None:
    """The first request refused (its install dir is a link leading out): the lock after it is never taken."""
    base = install(tmp_path)
    link = tmp_path / "hosts" / "app-link"
    link.symlink_to(Path(str(base["install_dir"])))
    first = {"op": "facts", "install_dir": str(link), "state_dir": None, **FACTS}
    alone = handle(dict(first))
    reply = handle({"op": "batch", "requests": [first, lock_req(base, "run-c")]})
    (refused,) = reply["result"]["replies"]
    assert refused == alone and refused["ok"] is False and refused["kind"] == "unsafe_path"
    assert not lock_file(base).exists()


def test_3b_malformed_batches_are_bad_input(tmp_path: Path) -> None:
    base = install(tmp_path)
    assert handle({"op": "batch", "requests": "lock"})["kind"] == "bad_input"
    nested = handle({"op": "batch", "requests": [{"op": "batch", "requests": [lock_req(base, "run-d")]}]})
    (inner,) = nested["result"]["replies"]
    assert inner["ok"] is False and inner["kind"] == "bad_input"
    assert not lock_file(base).exists()
