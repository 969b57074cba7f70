"""Issue 12, round thirteen: who may say which product is installed, and the customer's guide writes no trust root.
Played through the shipped CLI with real keys, a real vendor-signed catalog and the real sample middleware.

1 The installed product was the word of whoever writes the install dir or the ledger: on a host with its own trust
  root, the product's identifying files (lib/VERSION, bin/stop.sh, bin/start.sh) or an installed.json written by a
  run without that root confirmed the plan's product. Now only root's host-trust.json ``installs``, or a ledger
  record a run under that root wrote (``product_source``), confirm it: otherwise the run is refused (exit 3), the
  whole host unchanged, naming the line root adds. Without a trust root, the plan's review says NOT CONFIRMED (the
  inventory's word), in English and Chinese.
2 Root's ``installs`` were matched by path string: root's entry spelled through a symlinked parent (or ``//``)
  missed, and the service account's files decided instead. Now the directory itself is matched (st_dev, st_ino).
3 The guide listed the operator's new key in the approvals' allowed_signers itself, and took the requester's name
  from UPGRADER_USER. Now it writes no trust root: it prints the exact line and where, and exits 4; an approval by a
  key the policy does not list is refused (exit 4) with the exact line its owner adds; the requester is the login
  account.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hoststate import assert_host_untouched
from test_trust_roots_6 import host_root  # noqa: F401 - the host trust root fixture (engineer, requester, vendor)
from test_trust_roots_7 import _evidence
from test_trust_roots_11 import _lock_refused
from test_trust_roots_9 import _cli
from trust_support import HostState, host_state, make_ssh_key, pristine, public_key_fields, state_dir, write_root_config
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.reasons import translate

TO = "7.0.4.2"


def _plan(sandbox: Sandbox, tmp_path: Path, to: str = TO, name: str = "p") -> Path:
    plan = tmp_path / f"{name}.json"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--catalog",
                str(sandbox.catalog / "catalog.yaml"), "--to", to, "--key", str(sandbox.requester_key), "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    return plan


def _approve(sandbox: Sandbox, plan: Path) -> tuple[Path, str]:
    approval = plan.with_suffix(".approval")
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    return approval, done.stdout + done.stderr


def _run(sandbox: Sandbox, plan: Path, approval: Path) -> subprocess.CompletedProcess[str]:
    return _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes",
                env={"UPGRADER_AUDIT_KEY": str(sandbox.operator_key)})


def _same_product(plan: Path) -> dict[str, str]:
    (rule,) = [r for r in json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["decision"]["rules"]
               if r["rule"] == "same_product"]
    return rule


def _untouched(before: HostState, sandbox: Sandbox) -> None:
    """The whole host as ``before``; the one thing allowed: the refused run's own record in this controller's HOME."""
    after = host_state(sandbox)
    new = [r for r in after.home_runs if r not in before.home_runs]
    assert len(new) <= 1, new
    assert_host_untouched(before, after, run_record=new[0] if new else None)


def _unstated(host_root: Path) -> None:
    """Root's host-trust.json without ``installs``: the trust root says nothing about the installed product."""
    (host_root / "host-trust.json").write_text("{}", encoding="utf-8")


# ------------------------------------------------------------------ 1: the service account's word confirms nothing


def test_a_trust_root_host_does_not_take_the_install_dirs_files_for_the_product(sandbox: Sandbox, host_root: Path,
                                                                                tmp_path: Path) -> None:
    """The host keeps a trust root but root has not stated the product: the install dir's identifying files (anyone
    who writes the install dir lays them out) are a guess. The plan's review says NOT CONFIRMED; the approved run is
    refused (exit 3) naming root's host-trust.json and the exact ``installs`` entry to add; the host is untouched.
    Root adds it: the same plan and approval commit, and the ledger records the product under the trust root."""
    _unstated(host_root)
    before = pristine(sandbox)
    plan = _plan(sandbox, tmp_path)
    assert "NOT CONFIRMED" in _same_product(plan)["reason"], _same_product(plan)
    approval, said = _approve(sandbox, plan)
    assert "NOT CONFIRMED by the host" in said, said
    done = _run(sandbox, plan, approval)
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.POLICY_REFUSED, out
    assert "cannot tell which product is installed" in out and "host-trust.json" in out, out
    assert f'"installs": {{"{sandbox.install_dir}": "sample-middleware"}}' in out.replace("\n", ""), out
    assert "Traceback" not in out
    _untouched(before, sandbox)
    write_root_config(host_root, installs={str(sandbox.install_dir): "sample-middleware"})
    done = _run(sandbox, plan, approval)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    installed = json.loads((state_dir(sandbox.install_dir) / "installed.json").read_text(encoding="utf-8"))
    assert installed["product"] == "sample-middleware", installed
    assert installed["product_source"]["trust_root"] == str(host_root), installed
    assert '"installs"' in installed["product_source"]["from"], installed


def test_a_ledger_written_without_the_trust_root_does_not_confirm_the_product(sandbox: Sandbox, host_root: Path,
                                                                              tmp_path: Path) -> None:
    """An upgrade made before the host had a trust root wrote installed.json ``product`` (the controller's word,
    kept in the service account's state dir). Root then sets up the trust root without ``installs``: that ledger is
    not root's word, so the next approved run (7.0.4.2 -> 7.0.4.3) is refused (exit 3), the host untouched."""
    config = host_root / "host-trust.json"
    stated = config.read_text(encoding="utf-8")
    aside = host_root.with_name("host-trust.aside")
    host_root.rename(aside)  # no trust root yet
    try:
        plan = _plan(sandbox, tmp_path)
        approval, _ = _approve(sandbox, plan)
        done = _run(sandbox, plan, approval)
        assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    finally:
        aside.rename(host_root)
    installed = json.loads((state_dir(sandbox.install_dir) / "installed.json").read_text(encoding="utf-8"))
    assert installed["product"] == "sample-middleware" and "product_source" not in installed, installed
    _unstated(host_root)
    plan = _plan(sandbox, tmp_path, "7.0.4.3", "second")
    approval, _ = _approve(sandbox, plan)
    before = host_state(sandbox)
    done = _run(sandbox, plan, approval)
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.POLICY_REFUSED, out
    assert "cannot tell which product is installed" in out and "ledger" in out, out
    _untouched(before, sandbox)
    config.write_text(stated, encoding="utf-8")  # root states it: the run goes ahead
    done = _run(sandbox, plan, approval)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr


def test_without_a_trust_root_the_review_says_the_product_is_not_confirmed(sandbox: Sandbox, tmp_path: Path) -> None:
    """No host trust root: the host's guess (its files) agrees with the inventory, and ``plan show`` and
    ``approve`` say NOT CONFIRMED (the inventory's word); the reason reads 未经确认 in Chinese."""
    plan = _plan(sandbox, tmp_path)
    rule = _same_product(plan)
    assert rule["status"] == "pass" and "NOT CONFIRMED: the inventory's word" in rule["reason"], rule
    assert "its files on the host: lib/VERSION" in rule["reason"], rule
    assert "未经确认" in translate(rule["reason"], "zh") and "原文" not in translate(rule["reason"], "zh")
    shown = _cli(sandbox.root, "plan", "show", str(plan))
    assert shown.returncode == ExitCode.OK and "sample-middleware: NOT CONFIRMED by the host" in shown.stdout, shown
    review = json.loads(_cli(sandbox.root, "plan", "show", str(plan), "--json").stdout)
    assert review["hosts"][0]["product_confirmed"] is False
    _, said = _approve(sandbox, plan)
    assert "NOT CONFIRMED by the host" in said, said


# ------------------------------------------------------------------ 2: root's installs name a directory, not a string


@pytest.mark.parametrize("spelling", ["symlinked parent", "double slash"])
def test_roots_installs_match_the_directory_however_it_is_spelled(sandbox: Sandbox, host_root: Path, tmp_path: Path,
                                                                  spelling: str) -> None:
    """Root states in ``installs`` that the install is other-middleware, spelling the directory through a symlinked
    parent or with ``//``; the service account's files say sample-middleware. A plan approved before root's
    statement is refused by ``run`` (exit 3), and the host itself refuses the lock on that plan's evidence
    (host_policy) naming root's statement, the whole host unchanged."""
    _unstated(host_root)
    plan = _plan(sandbox, tmp_path)
    approval, _ = _approve(sandbox, plan)
    if spelling == "symlinked parent":
        link = tmp_path / "apps"
        link.symlink_to(sandbox.install_dir.parent)
        key = f"{link}/{sandbox.install_dir.name}"
    else:
        key = "/" + str(sandbox.install_dir).replace("/hosts/", "//hosts//") + "/"
    assert key != str(sandbox.install_dir)
    write_root_config(host_root, installs={key: "other-middleware"})
    before = pristine(sandbox)
    done = _run(sandbox, plan, approval)
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.POLICY_REFUSED, out
    assert "the installed product is 'other-middleware'" in out and '"installs"' in out, out
    ev = _evidence(sandbox, plan, approval, (sandbox.catalog / "catalog.yaml").read_text(encoding="utf-8"))
    sha = json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["package"]["sha256"]
    said = _lock_refused(sandbox, ev, sha, "sample-middleware")
    assert "is an install of other-middleware" in said and os.path.normpath(key) in said, said
    _untouched(before, sandbox)


# ------------------------------------------------------------------ 3: the customer's guide writes no trust root


def _guide(sandbox: Sandbox, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``upgrader guide --yes`` as the customer runs it (the shipped CLI, its own process, no terminal)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    full.update({"LANG": "C.UTF-8", "COLUMNS": "400", **(env or {})})
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(sandbox.root), "guide", *argv, "--yes",
                           "--lang", "en"], cwd=sandbox.root, env=full, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.usefixtures("guide_contract")
def test_the_guide_never_lists_a_key_in_allowed_signers_nor_takes_a_name_from_the_environment(
        sandbox: Sandbox) -> None:
    """No operator key yet; the customer starts the guide with UPGRADER_USER naming the engineer. The guide makes
    the key but leaves allowed_signers byte for byte as it was, printing the exact line (the login account's name,
    not the variable's) and the file, and stops (exit 4) before any plan. The operator adds that line and runs the
    guide again: the plan's requester is the login account, not the variable's name (exit 4: no approval yet)."""
    for name in ("operator", "operator.pub"):
        (sandbox.keys / name).unlink()
    signers = sandbox.keys / "allowed_signers"
    kept = signers.read_bytes()
    done = _guide(sandbox, "--inventory", str(sandbox.inventory), "--package",
                  str(sandbox.catalog / f"sample-middleware-{TO}.tar.gz"), env={"UPGRADER_USER": "engineer"})
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert signers.read_bytes() == kept, "the guide changed the trust root allowed_signers"
    me = pwd.getpwuid(os.getuid()).pw_name
    line = f'{me}@{socket.gethostname()} namespaces="upgrader-plan,upgrader-audit" ' \
        f'{public_key_fields(sandbox.keys / "operator")}'
    flat = " ".join(out.split())
    assert f"{signers} is a trust root, so the guide never changes it" in flat and line in flat, out
    assert not list((sandbox.root / "guide").glob("plans/*.json")), "a plan was made with an unlisted key"
    with signers.open("a", encoding="utf-8") as f:
        f.write(line + "\n")  # the file's owner adds the line, as printed
    done = _guide(sandbox, "--inventory", str(sandbox.inventory), "--package",
                  str(sandbox.catalog / f"sample-middleware-{TO}.tar.gz"), env={"UPGRADER_USER": "engineer"})
    assert done.returncode == ExitCode.APPROVAL_REFUSED, done.stdout + done.stderr
    (plan,) = (sandbox.root / "guide" / "plans").glob("*.json")
    requester = json.loads(plan.read_text(encoding="utf-8"))["requester"]
    assert requester["user"] == me and requester["user"] != "engineer", requester


@pytest.mark.usefixtures("guide_contract")
def test_an_approval_by_a_key_the_policy_does_not_list_is_refused_with_the_line_to_add(sandbox: Sandbox,
                                                                                        tmp_path: Path) -> None:
    """Mallory signs an approval of the customer's plan with her own key, as "engineer@vendor". The guide refuses it
    (exit 4) and prints the exact allowed_signers line (her name, namespace upgrader-approval, her public key) and
    the file its owner adds it to; allowed_signers and the whole host are unchanged."""
    from upgrader.core.plan import load_plan, plan_digest
    from upgrader.trust.approval import make_statement, write_approval
    from upgrader.trust.keys import load_private_key
    import datetime as dt

    done = _guide(sandbox, "--inventory", str(sandbox.inventory), "--package",
                  str(sandbox.catalog / f"sample-middleware-{TO}.tar.gz"))
    assert done.returncode == ExitCode.APPROVAL_REFUSED, done.stdout + done.stderr
    (plan,) = (sandbox.root / "guide" / "plans").glob("*.json")
    mallory = make_ssh_key(tmp_path / "mallory", "ed25519", comment="mallory")
    data = load_plan(plan).data
    statement = make_statement(plan_digest(data), "engineer@vendor", str(data["requester"].get("user")),
                               dt.datetime.now(dt.timezone.utc), 3600)
    approval = tmp_path / "mallory.approval"
    write_approval(approval, statement, load_private_key(mallory))
    signers = sandbox.keys / "allowed_signers"
    kept = signers.read_bytes()
    before = host_state(sandbox)
    done = _guide(sandbox, "--plan", str(plan), "--approval", str(approval))
    out = done.stdout + done.stderr
    flat = " ".join(out.split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    want = f'engineer@vendor namespaces="upgrader-approval" {public_key_fields(mallory)}'
    assert want in flat and f"the owner of {signers} adds this line" in flat, out
    assert "Traceback" not in out
    assert signers.read_bytes() == kept
    assert_host_untouched(before, host_state(sandbox))
