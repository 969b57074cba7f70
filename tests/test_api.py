"""``upgrader.api`` drives the whole upgrade story on the real sample middleware (real processes, keys,
signatures and tarballs): plan, show, approve, run with an observer and a cancel token, rollback, resume
after a run killed mid-way; refusals raise ``UpgraderError`` subclasses with the CLI's exit codes and touch
nothing; the API prints nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import fault_env, product_digest
from hoststate import HostState, assert_host_untouched
from hoststate import host_state as whole_host_state
from upgrader import api
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.engine import CANCELLED
from upgrader.core.errors import ApprovalRefused, InputError, PolicyRefused
from upgrader.core.exit_codes import ExitCode

PHASES = ["preflight", "backup", "stop", "install", "start", "observe"]


class Seen:
    """An observer that keeps every event (from the engine's threads)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(dict(event))

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]

    def phases(self, status: str = "ok") -> list[str]:
        return [e["phase"] for e in self.events if e["event"] == "phase_finished" and e["status"] == status]


def state_dir(box: Sandbox) -> Path:
    return box.install_dir.parent / f".upgrader-{box.install_dir.name}"


def host_state(box: Sandbox) -> HostState:
    """The whole host (tests/hoststate.py): product files, the running service's pid and start time, the version it
    answers, the agent's whole state dir (lock, staged packages, backups, ledger) and this machine's runs."""
    return whole_host_state(box.install_dir, answers=box.answers, home=box.root)


def plan_and_approve(box: Sandbox, ctx: api.Context, version: str) -> tuple[api.PlanMade, api.ApprovalMade]:
    made = api.make_plan(ctx, inventory=box.inventory, to=version, catalog=box.catalog,
                         output=box.plans / f"api-{version}.json", key=box.requester_key)
    approval = api.approve(ctx, made.file, key=box.engineer_key, output=box.approvals / f"api-{version}.approval",
                           comment="reviewed in the api test")
    return made, approval


def test_plan_approve_run_with_an_observer_then_rollback(sandbox: Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    box = sandbox
    ctx = api.Context(home=box.root)
    before = product_digest(box.install_dir)
    made, approval = plan_and_approve(box, ctx, "7.0.4.2")
    assert made.allowed and made.file.is_file() and made.plan.hosts[0]["current"] == "7.0.4.1"
    assert made.catalog_signer.get("serial") is not None
    review = api.show_plan(ctx, made.file)
    assert review.plan.digest == made.plan.digest == approval.plan
    assert review.review["policy_here"]["same"] is True  # type: ignore[index]
    assert approval.approver == "engineer@vendor" and approval.file.is_file()
    seen = Seen()
    result = api.run(ctx, made.file, approvals=[approval.file], observers=[seen])
    assert result.exit_code == ExitCode.OK and result.ran
    (host,) = result.hosts
    assert (host.host, host.outcome, host.current, host.target, host.version) == \
        ("app-01", "committed", "7.0.4.1", "7.0.4.2", "7.0.4.2")
    assert [p.phase for p in host.phases] == PHASES and host.downtime is not None
    assert box.answers() == "7.0.4.2"
    # the observer saw the run as it happened, in order
    assert seen.kinds()[0] == "run_started" and seen.kinds()[-1] == "run_finished"
    assert seen.phases() == PHASES
    assert seen.events[-1]["exit_code"] == 0 and seen.events[-1]["run"] == result.run_id
    # the result is what result.json holds, with the signed audit checkpoint
    on_disk = json.loads((box.root / "runs" / result.run_id / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result.data)) and result.checkpoint is not None

    back = api.rollback(ctx, result.run_id, observers=[seen])
    assert back is not None and back.exit_code == ExitCode.OK
    assert [(h.outcome, h.version) for h in back.hosts] == [("restored", "7.0.4.1")]
    assert box.answers() == "7.0.4.1" and product_digest(box.install_dir) == before
    assert seen.kinds()[-1] == "run_finished"
    # the API printed nothing
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_cancel_token_rolls_the_stopped_host_back(sandbox: Sandbox) -> None:
    """The token is set by an observer once ``stop`` finished (the operator's cancel on cue): the host is rolled
    back to the old version at the next safe point, healthy; the run says why."""
    box = sandbox
    ctx = api.Context(home=box.root)
    before = product_digest(box.install_dir)
    made, approval = plan_and_approve(box, ctx, "7.0.4.2")
    cancel = api.CancelToken()

    class CancelAfterStop:
        def on_event(self, event: dict[str, Any]) -> None:
            if event["event"] == "phase_finished" and event["phase"] == "stop":
                cancel.cancel()

    result = api.run(ctx, made.plan, approvals=[approval.file], observers=[CancelAfterStop()], cancel=cancel)
    assert cancel.cancelled
    (host,) = result.hosts
    assert (host.outcome, host.version, host.rollback_cause) == ("rolled_back", "7.0.4.1", CANCELLED)
    assert "install" not in [p.phase for p in host.phases if p.status == "ok"]
    assert result.exit_code == ExitCode.ROLLED_BACK
    assert box.answers() == "7.0.4.1" and product_digest(box.install_dir) == before


def test_refusals_raise_with_the_cli_exit_codes_and_touch_nothing(sandbox: Sandbox) -> None:
    box = sandbox
    ctx = api.Context(home=box.root)
    made, approval = plan_and_approve(box, ctx, "7.0.4.2")
    before = host_state(box)
    with pytest.raises(ApprovalRefused) as refused:  # no approval
        api.run(ctx, made.file)
    assert refused.value.exit_code == ExitCode.APPROVAL_REFUSED and "approval" in str(refused.value)
    with pytest.raises(InputError) as bad:  # bad limits: refused before any check reads a host
        api.run(ctx, made.file, approvals=[approval.file], limits=api.RunLimits(batch="150%"))
    assert bad.value.exit_code == ExitCode.BAD_INPUT and "--batch" in str(bad.value)
    refused_plan = api.make_plan(ctx, inventory=box.inventory, to="7.1.0.0", catalog=box.catalog,
                                 output=box.plans / "api-down.json", key=box.requester_key)
    assert not refused_plan.allowed  # a minor upgrade: written, with the reasons, and refused by run
    with pytest.raises(PolicyRefused) as policy:
        api.run(ctx, refused_plan.file, approvals=[approval.file])
    assert policy.value.exit_code == ExitCode.POLICY_REFUSED
    with pytest.raises(InputError):
        api.resume(ctx, "no-such-run")
    assert_host_untouched(before, host_state(box))
    # both refusals are on the audit record
    audit = [json.loads(line) for line in (box.root / "audit" / "audit.jsonl").read_text().splitlines()]
    assert {"approval_refused", "run_refused"} <= {e["event"] for e in audit}


def test_resume_through_the_api_finishes_a_run_killed_after_stop(sandbox: Sandbox) -> None:
    """A program that drives ``api.run`` is killed (SIGKILL) right after the service was stopped; ``api.resume``
    rolls the host back to the old version from the journal and the host's own state; a second resume has
    nothing to do."""
    box = sandbox
    ctx = api.Context(home=box.root)
    before = product_digest(box.install_dir)
    made, approval = plan_and_approve(box, ctx, "7.0.4.2")
    program = ("import sys\nfrom pathlib import Path\nfrom upgrader import api\n"
               "api.run(api.Context(home=Path(sys.argv[1])), Path(sys.argv[2]), approvals=[Path(sys.argv[3])])\n")
    env = {**os.environ, **fault_env(kill_at="stop:finished")}
    child = subprocess.run([sys.executable, "-c", program, str(box.root), str(made.file), str(approval.file)],
                           env=env, capture_output=True, text=True, timeout=300, cwd=box.root)
    assert child.returncode == -9, child.stderr[-2000:]
    (run_id,) = [p.name for p in (box.root / "runs").iterdir()]
    assert not (box.root / "runs" / run_id / "result.json").exists()
    seen = Seen()
    result = api.resume(ctx, run_id, observers=[seen])
    assert result.ran and result.exit_code == ExitCode.ROLLED_BACK
    assert [(h.outcome, h.version) for h in result.hosts] == [("rolled_back", "7.0.4.1")]
    assert box.answers() == "7.0.4.1" and product_digest(box.install_dir) == before
    assert seen.kinds()[0] == "run_started" and seen.kinds()[-1] == "run_finished"
    again = api.resume(ctx, run_id)
    assert not again.ran and again.exit_code == result.exit_code
    assert box.answers() == "7.0.4.1"


def readme_python_example() -> str:
    """The README's "Use from Python" example, as written (the first python block of that section)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Use from Python\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_python_example_runs_as_written(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Executed where the README says: in the directory ``upgrader demo --dir DIR --keep-running`` leaves (made by
    the shipped CLI, the sample at 7.0.4.3 and running): the plan is made, approved and run; the observer printed
    every phase; the host now runs 7.0.5.0."""
    code = readme_python_example()
    assert "api.run(" in code and "observers=" in code and "api.approve(" in code
    script = Path(sys.executable).parent / "upgrader"
    root = tmp_path / "demo"
    made = subprocess.run([str(script), "demo", "--dir", str(root), "--keep-running"], capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    conf = (root / "hosts" / "app-01" / "conf" / "server.conf").read_text(encoding="utf-8")
    box = Sandbox(root, int(re.search(r"(?m)^port\s*=\s*(\d+)", conf).group(1)))  # type: ignore[union-attr]
    try:
        assert box.answers() == "7.0.4.3"
        capfd.readouterr()
        monkeypatch.chdir(root)
        namespace: dict[str, Any] = {"__name__": "readme_example"}
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the documented example, verbatim
        result = namespace["result"]
        assert isinstance(result, api.RunResult) and result.exit_code == 0
        assert [(h.outcome, h.version) for h in result.hosts] == [("committed", "7.0.5.0")]
        assert box.answers() == "7.0.5.0"
        out = capfd.readouterr().out
        for phase in PHASES:
            assert f"app-01 {phase} ok " in out, out
        assert "app-01 committed now running 7.0.5.0" in out and "exit code 0" in out
    finally:
        box.stop_service()


# -- the other use cases, called as another program would (no CLI) -----------------------------------------


def _product_tree(d: Path) -> Path:
    (d / "lib").mkdir(parents=True)
    (d / "lib" / "app.jar").write_bytes(b"PK\x03\x04 a jar of the release" * 50)
    (d / "conf").mkdir()
    (d / "conf" / "server.properties").write_text("port=8080\n")
    return d


def test_build_package_verify_it_and_build_a_catalog_signed_with_the_vendors_key(
        sandbox: Sandbox, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A package built, checked on its own and against the catalog; the catalog signed with the vendor's real
    key is trusted under the operator's policy (its signer named); one signed with another key is refused (exit 4);
    a package changed after the catalog was made is refused (2)."""
    box = sandbox
    from upgrader.trust.keys import generate_key
    from upgrader.trust.package import read_meta

    product = read_meta(next(box.catalog.glob("*.tar.gz"))).product
    release = tmp_path / "release"
    release.mkdir()
    built = api.build_package(_product_tree(tmp_path / "src"), release / f"{product}-7.0.6.0.tar.gz",
                              product=product, version="7.0.6.0", changes=["monitoring"])
    assert built.file.is_file() and built.members >= 3 and len(built.sha256) == 64
    alone = api.verify_package(built.file)
    assert (alone.product, alone.version, alone.kind, alone.changes, alone.catalog) == \
        (product, "7.0.6.0", "full", ["monitoring"], None)
    assert alone.sha256 == built.sha256 and alone.members == built.members

    catalog = api.build_catalog(release, serial=9_000_000, key=box.vendor_key)
    assert (catalog.packages, catalog.serial) == (1, 9_000_000)
    assert catalog.file == release / "catalog.yaml" and catalog.signature is not None
    assert catalog.signature.is_file()
    against = api.verify_package(built.file, catalog=catalog.file)
    assert against.catalog == catalog.file and against.to_dict()["ok"] is True
    ctx = api.Context(home=tmp_path / "home", policy=box.policy)
    trusted, signed_by = api.trusted_catalog(catalog.file, api.load_policy(ctx), ctx.home, ctx.clock.now())
    assert signed_by["signer"] == "vendor-release" and trusted.find(product, "7.0.6.0") is not None

    forger, _, _ = generate_key(tmp_path / "forger", "forger@elsewhere")
    api.sign_catalog(release, key=forger)  # the same catalog, signed again by a key the policy does not trust
    with pytest.raises(ApprovalRefused) as untrusted:
        api.trusted_catalog(catalog.file, api.load_policy(ctx), ctx.home, ctx.clock.now())
    assert untrusted.value.exit_code == ExitCode.APPROVAL_REFUSED and "not a trusted vendor key" in str(untrusted.value)
    with built.file.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError) as changed:
        api.verify_package(built.file, catalog=catalog.file)
    assert changed.value.exit_code == ExitCode.BAD_INPUT
    assert capfd.readouterr() == ("", "")


def test_inspect_the_sample_install_and_write_its_report(sandbox: Sandbox, tmp_path: Path,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    """The running sample install: its version, its process (the pid of its pid file), the form's head as
    given; the report written as HTML in Chinese and as JSON; a host that cannot be read is exit 5."""
    box = sandbox
    ctx = api.Context(home=box.root)
    done = api.inspect(ctx, install_dir=box.install_dir, customer="某某银行", system="核心系统")
    assert done.exit_code == ExitCode.OK
    (host,) = done.hosts
    facts = host["facts"]
    assert isinstance(facts, dict) and facts["version"] == "7.0.4.1"
    pid = int((box.install_dir / "run" / "server.pid").read_text())
    assert facts["process"]["running"] and facts["process"]["pid"] == pid
    form = done.data["inspection"]["form"]  # type: ignore[index]
    assert (form["customer"], form["system"]) == ("某某银行", "核心系统")
    html = api.write_inspection(done, tmp_path / "inspection.html", lang="zh")
    assert "健康巡检报告" in html.read_text(encoding="utf-8") and "某某银行" in html.read_text(encoding="utf-8")
    saved = json.loads(api.write_inspection(done, tmp_path / "inspection.json").read_text(encoding="utf-8"))
    assert saved["hosts"][0]["facts"]["version"] == "7.0.4.1"
    with pytest.raises(InputError):
        api.write_inspection(done, tmp_path / "inspection.txt")
    with pytest.raises(InputError):
        api.inspect(ctx, install_dir=box.install_dir, inventory=box.inventory)

    # the host's SSH port is closed (nothing listens on 127.0.0.1:1): that host is reported, not inspected
    box.inventory.write_text(box.inventory.read_text(encoding="utf-8").replace(
        "    address: local\n", "    address: 127.0.0.1\n    port: 1\n"), encoding="utf-8")
    gone = api.inspect(ctx, inventory=box.inventory)
    assert gone.exit_code == ExitCode.NEEDS_PERSON and gone.hosts[0]["error"]
    assert capfd.readouterr() == ("", "")


def test_available_reads_the_installed_version_and_offers_the_newest_free_upgrade(sandbox: Sandbox) -> None:
    box = sandbox
    found = api.available(api.Context(home=box.root), inventory=box.inventory, catalog=box.catalog)
    assert found.exit_code == ExitCode.OK and found.catalog["signer"] == "vendor-release"
    (host,) = found.hosts
    assert (host["host"], host["current"], host["error"]) == ("app-01", "7.0.4.1", None)
    assert host["newest_free"] == {"version": "7.0.5.0", "kind": "full", "file": "sample-middleware-7.0.5.0.tar.gz"}
    assert "7.1.0.0" in [r["version"] for r in host["refused"]]  # type: ignore[union-attr]


def test_check_hosts_reads_every_host_of_a_plan_and_touches_nothing(sandbox: Sandbox) -> None:
    box = sandbox
    ctx = api.Context(home=box.root)
    made, _ = plan_and_approve(box, ctx, "7.0.4.2")
    before = host_state(box)
    checked = api.check_hosts(made.plan)
    assert checked.ok and checked.exit_code == ExitCode.OK and checked.order == [["app-01"]]
    assert checked.checks[0].facts["version"] == "7.0.4.1" and checked.data["digest"] == made.plan.digest
    assert_host_untouched(before, host_state(box))


def test_export_audit_writes_the_report_of_a_run_with_the_verdict(sandbox: Sandbox, tmp_path: Path) -> None:
    """After a run: the JSON report of that run's events says the log is intact (signed by the operator);
    the same log edited by hand is reported ALTERED (exit 6), the report still written."""
    box = sandbox
    ctx = api.Context(home=box.root)
    made, approval = plan_and_approve(box, ctx, "7.0.4.2")
    result = api.run(ctx, made.file, approvals=[approval.file])
    done = api.export_audit(ctx, output=tmp_path / "report.json", format="json", run=result.run_id[:8])
    assert (done.status, done.exit_code) == ("intact", ExitCode.OK) and done.events > 0
    report = json.loads(done.output.read_text(encoding="utf-8"))
    events = report["events"]
    assert len(events) == done.events and {e["run"] for e in events} == {result.run_id}
    assert {"run_started", "run_finished"} <= {e["event"] for e in events}
    with pytest.raises(InputError):
        api.export_audit(ctx, output=tmp_path / "r.json", format="json", since="yesterday")

    log = box.root / "audit" / "audit.jsonl"
    log.write_text(log.read_text(encoding="utf-8").replace('"committed"', '"failed"', 1), encoding="utf-8")
    altered = api.export_audit(ctx, output=tmp_path / "altered.html", format="html")
    assert (altered.status, altered.exit_code) == ("altered", ExitCode.AUDIT_ALTERED)
    assert "ALTERED" in altered.output.read_text(encoding="utf-8")


def test_grant_list_and_revoke_access_on_a_temp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real grant in the authorized_keys of an account whose HOME is a temp directory: the restricted line
    with the key and its expiry, listed with its id, revoked by that id (the file as before), each step an
    audit event; an id that is nowhere is exit 2."""
    from upgrader.trust.keys import generate_key

    home = tmp_path / "account"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    ak = home / ".ssh" / "authorized_keys"
    ak.write_bytes(b"# the account's own line\n")
    ak.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    _, pub, _ = generate_key(tmp_path / "engineer", "engineer@vendor")
    ctx = api.Context(home=tmp_path / "state")

    granted = api.grant_access(ctx, key=pub, hours=2, from_patterns="127.0.0.1", reason="CHG-1")
    assert granted.exit_code == 0 and granted.hours == 2
    (r,) = granted.hosts
    g = r["grant"]
    assert isinstance(g, dict) and r["outcome"] == "granted" and r["file"] == str(ak)
    blob = pub.read_text().split()[1]
    line = [ln for ln in ak.read_text().splitlines() if blob in ln]
    assert len(line) == 1 and line[0].startswith('restrict,expiry-time="') and 'from="127.0.0.1"' in line[0]
    assert f"upgrader-grant:{g['id']}" in line[0]

    listed = api.list_access(ctx)
    assert [x["id"] for x in listed.hosts[0]["grants"]] == [g["id"]]  # type: ignore[union-attr]
    with pytest.raises(InputError):
        api.revoke_access(ctx, grant_id="nosuchgrant")
    with pytest.raises(InputError):
        api.revoke_access(ctx, grant_id=str(g["id"]), all=True)
    revoked = api.revoke_access(ctx, grant_id=str(g["id"]))
    assert revoked.exit_code == 0 and revoked.chosen == "ID"
    assert ak.read_bytes() == b"# the account's own line\n"
    assert api.list_access(ctx).hosts[0]["grants"] == []
    audit = [json.loads(x) for x in (tmp_path / "state" / "audit" / "audit.jsonl").read_text().splitlines()]
    assert [(e["event"], e["data"]["grant"]) for e in audit if e["event"].startswith("access_")] == \
        [("access_granted", g["id"]), ("access_revoked", g["id"])]
