"""Whose gate is it: each weakness of issue 12 played as an attacker with the shipped CLI, real keys, a
real catalog and the real sample middleware; each now ends in a refusal with its exit code and message,
and nothing on the host changed (product files, service pid and version, lock, staged packages, the
host's records, run records).

1. the requester's own policy and key named at plan time; a decision that changed by run time
2. a catalog swapped between reads (a FIFO); a fresh home offered an older catalog for a host that saw a newer one
3. ``--as '*@vendor'``; ``--requester`` of another name (in test_approvals.py too)
4. ``plan show`` and ``approve`` print the full review, every command and hook the run executes
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, plan_to, signed_plan, upgrader
from hoststate import assert_host_untouched, lock_audit
from trust_support import add_signer, approval_signed_anyway, cli, copy_catalog, host_state, pristine, state_dir, vendor_catalog
from upgrader.cli import main
from upgrader import api
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.plan import load_plan
from upgrader.core.review import host_commands

TO = "7.0.4.2"


def _plan(box: Sandbox, capsys: pytest.CaptureFixture[str], name: str, *extra: str, to: str = TO,
          catalog: Path | None = None, home: Path | None = None) -> tuple[int, str, Path]:
    out = box.plans / f"{name}.json"
    capsys.readouterr()
    rc = main(["--home", str(home or box.root), *signed_plan(box, ["plan", "--inventory", str(box.inventory), "--to", to,
               "--catalog", str(catalog or box.catalog), "-o", str(out), *extra])])
    return rc, capsys.readouterr().err, out


# ---------------------------------------------------------------- 1. the policy is the operator's


def _attacker_policy(box: Sandbox, tmp_path: Path) -> tuple[Path, Path]:
    """The requester's own policy: level 2 free, self-approval allowed, their own key the only engineer."""
    attacker = tmp_path / "attacker"
    assert upgrader(box, "keys", "generate", "mallory", "--dir", str(attacker)) == 0
    key = attacker / "mallory"
    signers = attacker / "allowed_signers"
    add_signer(signers, "mallory@evil", key)
    policy = attacker / "policy.yaml"
    policy.write_text("format: 1\nrules:\n  free_levels: [2, 3, 4]\napprovals:\n  allow_self_approval: true\n"
                      "  allowed_signers: allowed_signers\ncatalog:\n"
                      f"  trusted_signers: {box.keys / 'vendor_signers'}\nwindow:\n  outside: allow\n",
                      encoding="utf-8")
    return policy, key


def test_a_plan_made_under_the_requesters_own_policy_is_refused(sandbox: Sandbox, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The requester plans the refused 7.0 -> 7.1 upgrade under their own policy (--policy) and key, approves it
    themselves: their policy allows it, but run takes the operator's (HOME/policy.yaml) and refuses the plan with
    exit 4, naming both policies and both digests; nothing on the host changed."""
    policy, key = _attacker_policy(sandbox, tmp_path)
    rc, err, plan = _plan(sandbox, capsys, "mine", "--policy", str(policy), "--key", str(key), to="7.1.0.0")
    assert rc == ExitCode.OK, err  # under the attacker's policy the plan is allowed
    approval = sandbox.approvals / "mine.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(key), "--as", "mallory@evil",
                  "--policy", str(policy), "-o", str(approval))
    assert rc == ExitCode.OK, err
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    planned_under = load_plan(plan).data["policy"]
    home_digest = hashlib.sha256(sandbox.policy.read_bytes()).hexdigest()
    for words in ("made under another policy", str(policy), planned_under["sha256"], str(sandbox.policy),
                  home_digest):
        assert words in err, f"{words!r} not in {err}"
    assert_host_untouched(before, host_state(sandbox))
    assert before.version == "7.0.4.1"


def test_run_and_approve_take_the_policy_from_policy_option_then_home_then_system(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The order of the trust roots: --policy, else HOME/policy.yaml, else the system-wide policy, else the shipped
    default. A plan made under --policy X runs (dry) with --policy X, is refused under HOME/policy.yaml; in a home
    without policy.yaml the system-wide policy is the one used (and recorded in the plan)."""
    other = tmp_path / "operator-policy.yaml"
    other.write_text(sandbox.policy.read_text(encoding="utf-8").replace("required: 1", "required: 1  # site B")
                     .replace("keys/", f"{sandbox.keys}/"), encoding="utf-8")
    rc, err, plan = _plan(sandbox, capsys, "site-b", "--policy", str(other))
    assert rc == ExitCode.OK, err
    assert load_plan(plan).data["policy"]["source"] == str(other)
    approval = sandbox.approvals / "site-b.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key), "--policy", str(other),
                  "-o", str(approval))
    assert rc == ExitCode.OK, err
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--dry-run", "--policy", str(other))
    assert rc == ExitCode.OK, err
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--dry-run")
    assert rc == ExitCode.APPROVAL_REFUSED and str(other) in err and str(sandbox.policy) in err, err
    # no HOME/policy.yaml: the system-wide policy (the path is a module constant upgrader.api resolves)
    home = tmp_path / "fresh-home"
    monkeypatch.setattr(api, "SYSTEM_POLICY", other)
    rc, err, plan2 = _plan(sandbox, capsys, "system", home=home)
    assert rc == ExitCode.OK, err
    assert load_plan(plan2).data["policy"]["sha256"] == load_plan(plan).data["policy"]["sha256"]
    capsys.readouterr()
    rc = main(["--home", str(home), "plan", "show", str(plan2), "--json"])
    shown = json.loads(capsys.readouterr().out)
    here = shown["policy_here"]
    assert rc == 0 and {k: here[k] for k in ("source", "sha256", "from", "same")} == {
        "source": str(other), "sha256": shown["policy"]["sha256"], "from": "system policy", "same": True}
    assert here["identity"] == shown["policy"]["identity"] and here["trust_files"] == shown["policy"]["trust_files"]
    assert_host_untouched(before, host_state(sandbox))


def test_run_decides_again_with_the_facts_of_the_day_it_runs(sandbox: Sandbox,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A plan allowed today for a host whose maintenance contract ends tomorrow, run (under faketime) two days
    later: the decision made again at run time refuses it (exit 3), naming the rule; nothing on the host changed."""
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    text = sandbox.inventory.read_text(encoding="utf-8")
    sandbox.inventory.write_text(text.replace("maintenance_until: 2099-12-31", f"maintenance_until: {tomorrow}"),
                                 encoding="utf-8")
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    approval = approve(sandbox, plan, "--expires", "7d")
    before = pristine(sandbox)
    env = {**os.environ, "FAKETIME": "+2d", "LD_PRELOAD": _libfaketime(), "FAKETIME_DONT_RESET": "1"}
    proc = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(sandbox.root), "run", str(plan),
                           "--approval", str(approval)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == ExitCode.POLICY_REFUSED, proc.stderr
    for words in ("decides differently now", "app-01", "the plan says allowed", "maintenance_contract"):
        assert words in proc.stderr, proc.stderr
    assert_host_untouched(before, host_state(sandbox))


def _libfaketime() -> str:
    for candidate in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                      "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1"):
        if Path(candidate).is_file():
            return candidate
    raise AssertionError("libfaketime not found: tests/run.sh installs the faketime package")


# ---------------------------------------------------------------- 2. the catalog: one read, serials on the host


class CatalogFifo:
    """catalog.yaml as a FIFO that serves ``contents[i]`` to the i-th reader (the last one from then on)."""

    def __init__(self, path: Path, contents: list[bytes]) -> None:
        self.path, self.contents, self.served = path, contents, 0
        path.unlink()
        os.mkfifo(path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            fd = os.open(self.path, os.O_WRONLY)  # waits for the next reader
            try:
                if self._stop.is_set():
                    return
                data = self.contents[min(self.served, len(self.contents) - 1)]
                self.served += 1
                os.write(fd, data)
            except BrokenPipeError:
                pass
            finally:
                os.close(fd)
            self._wait_reader_gone()

    def _wait_reader_gone(self) -> None:
        """Until the reader closed its end (a non-blocking open for writing fails with ENXIO): the next reader is
        another open, not the same one reading on."""
        import errno
        import time

        while not self._stop.is_set():
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as e:
                if e.errno == errno.ENXIO:
                    return
                raise
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # lets the waiting writer see the stop
        self._thread.join(timeout=10)
        os.close(fd)
        assert not self._thread.is_alive()


def test_a_catalog_swapped_between_reads_is_refused(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """catalog.yaml is a FIFO that gives an unsigned, edited catalog to its first reader and the vendor's signed one
    to every later reader (what a file replaced between two reads does): the catalog is read once, so the edited
    bytes are the ones whose signature is checked: exit 4, no plan, nothing on the host changed."""
    catalog = sandbox.catalog / "catalog.yaml"
    genuine = catalog.read_bytes()
    forged = genuine.replace(b"description: maintenance release", b"description: trust me", 1)
    assert forged != genuine
    before = pristine(sandbox)
    fifo = CatalogFifo(catalog, [forged, genuine])
    try:
        rc, err, out = _plan(sandbox, capsys, "swapped")
    finally:
        fifo.close()
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "bad catalog signature" in err and str(catalog) in err
    assert fifo.served == 1, f"catalog.yaml was read {fifo.served} times"
    assert not out.exists()
    assert_host_untouched(before, host_state(sandbox))


def test_the_catalog_bytes_parsed_are_the_bytes_signed_and_recorded(sandbox: Sandbox,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The other order (signed first, edited after): the plan reads the catalog once, and records the sha256 of the
    bytes it parsed and verified."""
    catalog = sandbox.catalog / "catalog.yaml"
    genuine = catalog.read_bytes()
    fifo = CatalogFifo(catalog, [genuine, genuine.replace(b"serial: 1", b"serial: 9", 1)])
    try:
        rc, err, out = _plan(sandbox, capsys, "once")
    finally:
        fifo.close()
    assert rc == ExitCode.OK, err
    assert fifo.served == 1, f"catalog.yaml was read {fifo.served} times"
    recorded = load_plan(out).data["catalog"]
    assert recorded["sha256"] == hashlib.sha256(genuine).hexdigest() and recorded["serial"] == 1


def _fresh_home(box: Sandbox, home: Path, *argv: str) -> list[str]:
    """argv for a second controller: its own empty home, the operator's policy and key named explicitly."""
    return ["--home", str(home), *argv]


def test_a_fresh_home_cannot_downgrade_the_catalog_of_a_host_that_saw_a_newer_one(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second controller (a fresh home, which has never seen serial 2) plans with the vendor's older serial 1
    catalog, then the host is upgraded from serial 2 by the first controller (a run that fails and rolls back: the
    host keeps 7.0.4.1). The fresh home's run, and any new plan it makes, are refused (exit 4): the host itself
    remembers serial 2. Nothing on the host changed."""
    home = tmp_path / "second-controller"
    policy = ["--policy", str(sandbox.policy)]
    rc, err, old_plan = _plan(sandbox, capsys, "old-catalog", *policy, home=home)
    assert rc == ExitCode.OK, err
    old_approval = sandbox.approvals / "old.approval"
    capsys.readouterr()
    assert main(_fresh_home(sandbox, home, "approve", str(old_plan), "--key", str(sandbox.engineer_key), *policy,
                            "-o", str(old_approval))) == 0
    newer = copy_catalog(sandbox, "catalog-serial-2")
    vendor_catalog(sandbox, newer, serial=2)
    rc, err, bad = _plan(sandbox, capsys, "serial-2", to="7.0.4.5", catalog=newer)
    assert rc == ExitCode.OK, err
    rc, err = cli(sandbox, capsys, "run", str(bad), "--approval", str(approve(sandbox, bad)))
    assert rc == ExitCode.ROLLED_BACK, err
    before = host_state(sandbox)
    assert before.version == "7.0.4.1" and before.lock is None and before.host_records is not None
    assert json.loads((Path(str(sandbox.install_dir.parent / ".upgrader-app-01")) / "catalog-serials.json")
                      .read_text()) == {"sample-middleware": 2}

    capsys.readouterr()
    rc = main(_fresh_home(sandbox, home, "run", str(old_plan), "--approval", str(old_approval), *policy,
                          "--audit-key", str(sandbox.keys / "operator")))
    err = capsys.readouterr().err
    assert rc == ExitCode.APPROVAL_REFUSED, err
    for words in ("app-01", "catalog serial 1 is older than serial 2", "already upgraded from"):
        assert words in err, err
    assert_host_untouched(before, host_state(sandbox))
    rc, err, again = _plan(sandbox, capsys, "old-catalog-again", *policy, home=home)
    assert rc == ExitCode.APPROVAL_REFUSED and "older than serial 2" in err, err
    assert not again.exists()
    assert_host_untouched(before, host_state(sandbox))


# ---------------------------------------------------------------- 3. approvers are literal principals


def test_approve_as_a_pattern_is_refused(sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A key listed as `*@vendor` signing `--as '*@vendor'`: approve refuses the pattern (exit 4, no file), and an
    approval in that name made anyway (the library, the same real key) is refused by run; nothing touched."""
    key = tmp_path / "wild" / "wild"
    assert upgrader(sandbox, "keys", "generate", str(key)) == ExitCode.OK
    add_signer(sandbox.keys / "allowed_signers", "*@vendor", key, 'namespaces="upgrader-approval"')
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    out = sandbox.approvals / "pattern.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(key), "--as", "*@vendor", "-o", str(out))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "is a pattern, not a person" in err and not out.exists()
    from upgrader.trust.approval import make_statement, write_approval
    from upgrader.trust.keys import load_private_key

    write_approval(out, make_statement(load_plan(plan).digest, "*@vendor", "someone", dt.datetime.now(dt.UTC), 3600),
                   load_private_key(key))
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(out))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "never a pattern" in err and "*@vendor" in err
    assert_host_untouched(before, host_state(sandbox))


def test_a_stripped_requester_signature_is_refused(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Removing the requester's signature from a signed plan (to pass it off as unsigned, run by someone else)
    keeps its digest but is refused by plan show, approve and run (exit 4)."""
    rc, plan = plan_to(sandbox, TO, "--key", str(sandbox.engineer_key))
    assert rc == ExitCode.OK
    data = json.loads(plan.read_text(encoding="utf-8"))
    assert data["requester"]["key"] and data["signature"].startswith("-----BEGIN SSH SIGNATURE-----")
    del data["signature"]
    plan.write_text(json.dumps(data), encoding="utf-8")
    before = pristine(sandbox)
    for argv in (["plan", "show", str(plan)], ["approve", str(plan), "--key", str(sandbox.keys / "operator"),
                                                "--as", "operator@customer", "-o", str(sandbox.approvals / "x")]):
        rc, err = cli(sandbox, capsys, *argv)
        assert rc == ExitCode.APPROVAL_REFUSED and "signature" in err, err
    assert_host_untouched(before, host_state(sandbox))


# ---------------------------------------------------------------- 4. the review


def _hooked_playbook(box: Sandbox) -> None:
    """The sample playbook with a hook at every phase and a command probe, used by the sandbox inventory."""
    src = Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml"
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    doc["hooks"] = {phase: [{"command": f"echo hook-{phase} >> logs/hooks.log"}]
                    for phase in ("before_stop", "after_stop", "after_install", "after_start", "after_commit",
                                  "after_rollback")}
    doc["observe"]["probes"].append({"name": "selfcheck", "type": "command",
                                     "command": "test -s lib/VERSION && echo '[ok]' ${port}"})
    playbooks = box.inventory.parent / "playbooks"
    playbooks.mkdir(exist_ok=True)
    (playbooks / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def test_plan_show_and_approve_print_every_command_the_run_executes(sandbox: Sandbox,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """With hooks at every phase and a command probe, `plan show` (text and --json) and `approve` print, in full:
    every command and hook the run will execute (rendered: ${port} replaced), the package's full sha256, the
    catalog signer and serial, the policy source and digest, every rule's decision and the service window; the
    run then executes exactly those hooks."""
    _hooked_playbook(sandbox)
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    data = load_plan(plan).data
    h = data["hosts"][0]
    commands = [c["command"] for c in host_commands(h)]
    spec = h["playbook"]["spec"]
    expected = [spec["stop"]["command"], spec["start"]["command"]]
    expected += [x["command"] for hooks in spec["hooks"].values() for x in hooks]
    expected += [p["command"] for p in spec["observe"]["probes"] if p["type"] == "command"]
    assert set(expected) <= set(commands) and len(spec["hooks"]) == 6
    assert f"'[ok]' {sandbox.port}" in " ".join(commands)  # rendered as it will run
    capsys.readouterr()
    assert upgrader(sandbox, "plan", "show", str(plan)) == 0
    shown = capsys.readouterr().out
    out = sandbox.approvals / "reviewed.approval"
    assert upgrader(sandbox, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(out)) == 0
    approved = capsys.readouterr().out
    digest = load_plan(plan).digest
    for text in (shown, approved):
        for piece in [*expected, h["package"]["sha256"], h["package"]["file"], data["catalog"]["signer"],
                      f"serial {data['catalog']['serial']}", data["policy"]["source"], data["policy"]["sha256"],
                      digest, "service window"]:
            assert piece in text, f"{piece!r} missing from the review:\n{text}"
        for rule in h["decision"]["rules"]:
            assert f"{rule['rule']}: {rule['reason']}" in text
    assert upgrader(sandbox, "plan", "show", str(plan), "--json") == 0
    review = json.loads(capsys.readouterr().out)
    assert [c["command"] for c in review["hosts"][0]["commands"]] == commands
    assert review["plan"] == digest and review["catalog"]["serial"] == 1
    assert upgrader(sandbox, "plan", "digest", str(plan)) == 0
    assert capsys.readouterr().out.strip() == digest
    assert digest in out.read_text(encoding="utf-8")  # the signed statement names the plan digest
    runs = sandbox.root / "runs"
    assert upgrader(sandbox, "run", str(plan), "--approval", str(out)) == ExitCode.OK
    (run_dir,) = list(runs.iterdir())
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    hooks_ran = [p for p in result["hosts"][0]["phases"] if str(p["phase"]).startswith("hook:")]
    assert [p["phase"] for p in hooks_ran] == [f"hook:{p}" for p in ("before_stop", "after_stop", "after_install",
                                                                     "after_start", "after_commit")]
    for p in hooks_ran:  # each hook the run executed was shown, verbatim, before it was approved
        assert p["detail"] in shown and p["detail"] in approved, p


def test_the_host_agent_refuses_a_lock_for_an_older_catalog_than_it_saw(tmp_path: Path) -> None:
    """The host's own check (what a second controller racing past the controller's checks meets): the agent's lock
    action refuses a run from an older catalog serial than a finished run recorded, and takes no lock; a run from
    the same or a newer serial takes the lock, and the newest serial is kept when that run finishes (a run refused
    in preflight records nothing)."""
    from upgrader.hostagent.common import AgentError
    from upgrader.hostagent.finish import op_finish
    from upgrader.hostagent.lock import op_lock

    install = tmp_path / "app"
    install.mkdir()
    state = tmp_path / ".upgrader-app"

    def lock(run: str, serial: int) -> dict[str, object]:
        return dict(op_lock({"install_dir": str(install), "run_id": run, "controller": "c", "user": "u",
                             "catalog": {"product": "p", "serial": serial}, "audit": lock_audit(run)}))

    def finish(run: str, serial: int) -> None:
        (state / "runs" / run).mkdir(parents=True)  # as prepare leaves it
        op_finish({"install_dir": str(install), "run_id": run, "outcome": "committed",
                         "catalog": {"product": "p", "serial": serial}})

    assert lock("run-1", 2)["locked"] is True
    assert not (state / "catalog-serials.json").exists()  # taking the lock records nothing yet
    finish("run-1", 2)
    with pytest.raises(AgentError) as refused:
        lock("run-2", 1)
    assert refused.value.kind == "catalog_rollback" and "older than serial 2" in str(refused.value)
    assert not (state / "lock").exists()
    assert lock("run-3", 3)["locked"] is True
    finish("run-3", 3)
    assert json.loads((state / "catalog-serials.json").read_text()) == {"p": 3}


def test_rollback_takes_the_operators_policy_not_the_path_in_the_plan(sandbox: Sandbox, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A plan made and run under --policy FILE, a file that is gone by the time of the rollback (the plan names its
    path): rollback uses the operator's policy (here HOME/policy.yaml) and restores the old version."""
    moved = tmp_path / "elsewhere.yaml"
    moved.write_text(sandbox.policy.read_text(encoding="utf-8").replace("keys/", f"{sandbox.keys}/"),
                     encoding="utf-8")
    rc, err, plan = _plan(sandbox, capsys, "moved", "--policy", str(moved))
    assert rc == ExitCode.OK, err
    assert load_plan(plan).data["policy"]["source"] == str(moved)
    approval = sandbox.approvals / "moved.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key), "--policy", str(moved),
                  "-o", str(approval))
    assert rc == ExitCode.OK, err
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--policy", str(moved))
    assert rc == ExitCode.OK, err
    moved.unlink()
    (run_id,) = [p.name for p in (sandbox.root / "runs").iterdir()]
    rc, err = cli(sandbox, capsys, "rollback", run_id)
    assert rc == ExitCode.OK, err
    assert sandbox.wait_version("7.0.4.1", timeout=10) == "7.0.4.1"


# ---------------------------------------------------------------- every field of an approved plan is requester input
# (attack report on issue 12: each plan edit below was approved by a real engineer key and run by the operator)


def _edit_plan(plan: Path, edit: Any, key: Path | None = None) -> None:
    """The requester edits their plan file (as a text editor would) before it is approved, and signs it again with
    their key (``key``, else the sandbox requester's)."""
    from upgrader.trust.keys import load_private_key
    from upgrader.core.plan import plan_digest, readable_json
    from upgrader.trust.requester import sign_plan

    data = json.loads(plan.read_text(encoding="utf-8"))
    edit(data)
    signer = key or plan.parent.parent / "keys" / "requester"
    plan.write_text(readable_json(sign_plan(data, load_private_key(signer), plan_digest)), encoding="utf-8")


def _approved_run(box: Sandbox, capsys: pytest.CaptureFixture[str], plan: Path) -> tuple[int, str]:
    """The engineer approves the (edited) plan after its review; the operator runs it."""
    approval = approve(box, plan)
    return cli(box, capsys, "run", str(plan), "--approval", str(approval))


def _refused_at_approval_and_run(box: Sandbox, capsys: pytest.CaptureFixture[str], plan: Path) -> tuple[int, str]:
    """``approve`` decides the (edited) plan again from the signed catalog and refuses to sign it (exit 4); an
    approval signed anyway by the engineer's own tooling: the run refuses on its own (its exit code and message
    returned)."""
    rc, err = cli(box, capsys, "approve", str(plan), "--key", str(box.engineer_key), "-o", str(box.root / "x.approval"))
    assert rc == ExitCode.APPROVAL_REFUSED and not (box.root / "x.approval").exists(), err
    assert "the plan's package does not match the signed catalog's entry" in err, err
    return cli(box, capsys, "run", str(plan), "--approval", str(approval_signed_anyway(box, plan)))


def _upgraded_once(box: Sandbox, capsys: pytest.CaptureFixture[str], to: str = TO, catalog: Path | None = None) -> None:
    """A first, legitimate run, so that the host has the ledger of an install by upgrader (its manifest)."""
    rc, err, plan = _plan(box, capsys, f"first-{to}", to=to, catalog=catalog)
    assert rc == ExitCode.OK, err
    rc, err = _approved_run(box, capsys, plan)
    assert rc == ExitCode.OK, err


def test_a_plan_carrying_the_package_of_another_version_than_its_target_is_refused(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Level 2 through the back door: the plan targets the free 7.0.4.2 but carries the 7.1.0.0 package of the same
    signed catalog (and drops the version probe). The run rebuilds the package from the catalog entry of the plan's
    product and target and refuses the difference (exit 4), naming the fields; nothing on the host changed."""
    rc, err, p71 = _plan(sandbox, capsys, "to-7.1", to="7.1.0.0")
    assert rc == ExitCode.POLICY_REFUSED, err
    rc, err, plan = _plan(sandbox, capsys, "free")
    assert rc == ExitCode.OK, err
    level2 = json.loads(p71.read_text(encoding="utf-8"))["hosts"][0]["package"]

    def swap(d: dict[str, Any]) -> None:
        h = d["hosts"][0]
        h["package"] = level2
        obs = h["playbook"]["spec"]["observe"]
        obs["probes"] = [p for p in obs["probes"] if p.get("name") != "version"]
    _edit_plan(plan, swap)
    before = pristine(sandbox)
    rc, err = _refused_at_approval_and_run(sandbox, capsys, plan)
    assert rc == ExitCode.APPROVAL_REFUSED, err
    for words in ("app-01: the plan's package does not match the signed catalog's entry for sample-middleware "
                  f"{TO}", "version (plan: '7.1.0.0', catalog: '7.0.4.2')", "sha256 (plan:", "nothing was changed"):
        assert words in err, err
    assert_host_untouched(before, host_state(sandbox))


def test_declared_changes_deleted_from_the_plan_are_taken_from_the_signed_catalog(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """7.0.4.8 declares an external-interface change (never free). The requester deletes the declared changes from
    the plan and marks the rule passed: the run compares the package with the catalog entry in full (exit 4, the
    changes named); nothing on the host changed."""
    rc, err, plan = _plan(sandbox, capsys, "never-free", to="7.0.4.8")
    assert rc == ExitCode.POLICY_REFUSED and "declared_changes" in err + json.dumps(load_plan(plan).data), err

    def hide(d: dict[str, Any]) -> None:
        h = d["hosts"][0]
        h["package"]["changes"] = []
        for r in h["decision"]["rules"]:
            if r["rule"] == "declared_changes":
                r["status"], r["reason"] = "pass", "the package declares no changes the policy refuses"
        h["decision"]["allowed"] = h["allowed"] = d["allowed"] = True
    _edit_plan(plan, hide)
    before = pristine(sandbox)
    rc, err = _refused_at_approval_and_run(sandbox, capsys, plan)
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "changes (plan: [], catalog: ['external_interface'])" in err, err
    assert_host_untouched(before, host_state(sandbox))


def _block_manual_changes(box: Sandbox) -> None:
    """The operator's policy (HOME/policy.yaml) blocks upgrades over hand-made changes; a hotfix is made by hand."""
    with open(box.policy, "a", encoding="utf-8") as f:
        f.write("rules:\n  manual_changes: block\n")
    with open(box.install_dir / "lib" / "server.py", "a", encoding="utf-8") as f:
        f.write("# local hotfix HF-42, do not overwrite\n")


def test_manual_changes_is_the_operators_setting_not_the_plans_copy(sandbox: Sandbox,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """rules.manual_changes: block, and a hand-made hotfix on a host upgrader installed before. The requester edits
    the plan's copy of the setting to 'warn' (and the check to warn): refused (exit 4, both settings named). Editing
    only the host's check is refused too (exit 3: the run checks the host again under the operator's setting).
    Nothing on the host changed, the hotfix is still there."""
    _upgraded_once(sandbox, capsys)
    _block_manual_changes(sandbox)
    rc, err, plan = _plan(sandbox, capsys, "over-hotfix", to="7.0.4.3")
    assert rc == ExitCode.POLICY_REFUSED, err

    def allow(d: dict[str, Any], setting: str) -> None:
        d["policy"]["manual_changes"] = setting
        for c in d["hosts"][0]["checks"]:
            if c["check"] == "manual_changes":
                c["status"] = "warn"
        d["hosts"][0]["allowed"] = d["allowed"] = True
    before = host_state(sandbox)
    assert before.version == TO and before.lock is None
    _edit_plan(plan, lambda d: allow(d, "warn"))
    rc, err = _approved_run(sandbox, capsys, plan)
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "the plan says rules.manual_changes is 'warn' but the operator's policy" in err and "'block'" in err, err
    assert_host_untouched(before, host_state(sandbox))
    _edit_plan(plan, lambda d: allow(d, "block"))
    rc, err = _approved_run(sandbox, capsys, plan)
    assert rc == ExitCode.POLICY_REFUSED, err
    for words in ("app-01: product files changed by hand since the last install (lib/server.py)",
                  "rules.manual_changes: block"):
        assert words in err, err
    assert_host_untouched(before, host_state(sandbox))
    assert "HF-42" in (sandbox.install_dir / "lib" / "server.py").read_text(encoding="utf-8")


def test_a_state_dir_named_by_the_inventory_does_not_move_the_hosts_trust_ledger(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The host was upgraded from catalog serial 2 (its ledger: serial, used approval, the install's manifest, in
    the default state dir beside the install). The requester's inventory names a fresh state_dir: the review shows
    it prominently; the older serial-1 catalog is still refused (exit 4) and so is an upgrade over a hand-made
    change under rules.manual_changes: block (exit 3). Nothing on the host changed, the fresh dir holds nothing."""
    newer = copy_catalog(sandbox, "catalog-serial-2")
    vendor_catalog(sandbox, newer, serial=2)
    _upgraded_once(sandbox, capsys, catalog=newer)
    fresh = tmp_path / "fresh-state"
    text = sandbox.inventory.read_text(encoding="utf-8")
    sandbox.inventory.write_text(text.replace("    maintenance_until:", f"    state_dir: {fresh}\n"
                                              "    maintenance_until:"), encoding="utf-8")
    rc, err, moved = _plan(sandbox, capsys, "moved", to="7.0.4.3", catalog=newer)
    assert rc == ExitCode.OK, err
    capsys.readouterr()
    assert upgrader(sandbox, "plan", "show", str(moved)) == 0
    shown = capsys.readouterr().out
    assert f"STATE DIR NOT THE DEFAULT: {fresh}" in shown and str(state_dir(sandbox.install_dir)) in shown, shown
    before = host_state(sandbox)
    assert before.version == TO and before.host_records is not None
    # a second controller (a fresh home that never saw serial 2) with the vendor's serial-1 catalog
    rc, err, old = _plan(sandbox, capsys, "old-serial", "--policy", str(sandbox.policy), to="7.0.4.3",
                         home=tmp_path / "second-controller")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "catalog serial 1 is older than serial 2 this host was already upgraded from" in err and not old.exists()
    _block_manual_changes(sandbox)
    before = host_state(sandbox)
    rc, err, over = _plan(sandbox, capsys, "over-hotfix", to="7.0.4.3", catalog=newer)
    assert rc == ExitCode.POLICY_REFUSED, err
    check = [c for c in load_plan(over).data["hosts"][0]["checks"] if c["check"] == "manual_changes"]
    assert check and check[0]["status"] == "fail" and "lib/server.py" in check[0]["reason"], check
    assert_host_untouched(before, host_state(sandbox))
    assert not fresh.exists() or not any(fresh.rglob("*.json"))


def test_an_engineer_cannot_approve_a_plan_that_names_them_its_requester(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """allow_self_approval: false, unsigned plans allowed (the default): the engineer makes a plan in their own name
    (--requester engineer@vendor) and approves it with their own key. approve refuses (exit 4, no file); an approval
    made anyway with the same real key (the library) is refused by run (exit 4). Nothing on the host changed."""
    rc, err, plan = _plan(sandbox, capsys, "mine", "--requester", "engineer@vendor")
    assert rc == ExitCode.OK, err
    out = sandbox.approvals / "self.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(out))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "the plan's requester is 'engineer@vendor', which names you (engineer@vendor)" in err and not out.exists()
    from upgrader.trust.approval import make_statement, write_approval
    from upgrader.trust.keys import load_private_key

    statement = make_statement(load_plan(plan).digest, "engineer@vendor", "engineer@vendor",
                               dt.datetime.now(dt.timezone.utc), 3600, "", False)
    write_approval(out, statement, load_private_key(sandbox.engineer_key))
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(out))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "approved a plan whose requester is 'engineer@vendor': their own plan" in err, err
    assert_host_untouched(before, host_state(sandbox))


ESC_HOOK = "touch PWNED #\x1b[2K\x1b[1G    hook after_start: bin/notify-monitoring.sh"


def test_control_characters_are_refused_at_load_and_escaped_in_the_review(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A hook hidden from the approver with terminal escapes (ESC[2K ESC[1G erase the line) is refused when the
    playbook is loaded (exit 2, file and key named), so is a bidi override in an inventory value; a plan file
    edited to carry one anyway is reviewed with every non-printable character escaped (plan show and approve).
    Nothing on the host changed."""
    before = pristine(sandbox)
    src = Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml"
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    doc["hooks"] = {"after_start": [{"command": ESC_HOOK}]}
    playbooks = sandbox.inventory.parent / "playbooks"
    playbooks.mkdir(exist_ok=True)
    book = playbooks / "sample-middleware.yaml"
    book.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    rc, err, plan = _plan(sandbox, capsys, "escaped")
    assert rc == ExitCode.BAD_INPUT and not plan.exists(), err
    for words in (f"{book}: hooks.after_start[0].command: a playbook value holds the control character \\x1b",
                  "\\x1b[2K"):
        assert words in err, err
    assert "\x1b" not in err
    book.unlink()
    text = sandbox.inventory.read_text(encoding="utf-8")
    sandbox.inventory.write_text(text.replace("      port:", "      site: \"lab\u202eexe.sh\"\n      port:"),
                                 encoding="utf-8")
    rc, err, plan = _plan(sandbox, capsys, "bidi")
    assert rc == ExitCode.BAD_INPUT and not plan.exists(), err
    assert f"{sandbox.inventory}: hosts.app-01.vars.site: an inventory value holds the control character \\u202e" \
           in err, err
    sandbox.inventory.write_text(text, encoding="utf-8")
    rc, err, plan = _plan(sandbox, capsys, "edited")
    assert rc == ExitCode.OK, err
    _edit_plan(plan, lambda d: d["hosts"][0]["playbook"]["spec"].setdefault("hooks", {}).update(
        {"after_start": [{"command": ESC_HOOK}]}))
    capsys.readouterr()
    assert upgrader(sandbox, "plan", "show", str(plan)) == 0
    shown = capsys.readouterr().out
    out = sandbox.approvals / "escaped.approval"
    assert upgrader(sandbox, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(out)) == 0
    approved = capsys.readouterr().out
    for text_out in (shown, approved):
        assert "\x1b" not in text_out
        assert "hook after_start: touch PWNED #\\x1b[2K\\x1b[1G    hook after_start: bin/notify-monitoring.sh" \
            in text_out, text_out
    assert_host_untouched(before, host_state(sandbox))


def test_a_run_in_another_state_dir_keeps_the_ledger_beside_the_install_too(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The other way round: a run whose inventory names another state_dir, from catalog serial 2, leaves the host's
    ledger (catalog serial, used approval, the install's manifest) in the default state dir too; an inventory without
    state_dir on a second controller with the serial-1 catalog is then refused (exit 4), nothing changed."""
    newer = copy_catalog(sandbox, "catalog-serial-2")
    vendor_catalog(sandbox, newer, serial=2)
    elsewhere = tmp_path / "elsewhere-state"
    text = sandbox.inventory.read_text(encoding="utf-8")
    sandbox.inventory.write_text(text.replace("    maintenance_until:", f"    state_dir: {elsewhere}\n"
                                              "    maintenance_until:"), encoding="utf-8")
    _upgraded_once(sandbox, capsys, catalog=newer)
    default = state_dir(sandbox.install_dir)
    assert json.loads((default / "catalog-serials.json").read_text()) == {"sample-middleware": 2}
    assert (default / "approvals-used.jsonl").read_text() == (elsewhere / "approvals-used.jsonl").read_text() != ""
    assert json.loads((default / "installed.json").read_text())["version"] == TO
    sandbox.inventory.write_text(text, encoding="utf-8")
    before = host_state(sandbox)
    rc, err, old = _plan(sandbox, capsys, "old-serial", "--policy", str(sandbox.policy), to="7.0.4.3",
                         home=tmp_path / "second-controller")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "catalog serial 1 is older than serial 2 this host was already upgraded from" in err and not old.exists()
    assert_host_untouched(before, host_state(sandbox))
