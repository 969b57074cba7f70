"""StrictModes up to /: the operator's HOME, its policy, the trust files and playbooks are refused when a directory
anywhere above them could be changed by another account (issue 12, attack12r21 M2).

The attack, through the shipped CLI: the operator's HOME is DIR/shared/home, root's and 0755, its policy requires two
approvals; DIR/shared is 0777 and not sticky (a group-shared directory). Another account (uid 65534, setpriv) renames
HOME away and puts a link to another root-owned home in its place (a lab copy whose policy requires one approval and
whose keys the attacker holds). Before, `run` read that home's policy and keys under the usual HOME path and committed
the upgrade of the operator's host. Now every directory above HOME, the policy and each trust file (and above their
real paths) must be root's or the operator's and not group/other-writable -- a sticky directory such as the system's
temporary directory is accepted above a name that is itself root's or the operator's -- and the run is refused
(exit 4) naming DIR/shared; nothing on the host changes."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import approve, kill_processes_under, upgrader
from hoststate import assert_host_untouched
from trust_support import cli, host_state
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox, build_sandbox
from upgrader.core.exit_codes import ExitCode

FROM, TO = "7.0.4.1", "7.0.4.2"
NOBODY = "65534"


@pytest.fixture
def top() -> Iterator[Path]:
    """A directory another account can reach (0755), under the system's temporary directory (1777, root's)."""
    where = Path(tempfile.mkdtemp(prefix="upgrader-m2-"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        kill_processes_under(where)
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def ops(top: Path) -> Iterator[Sandbox]:
    """The operator's host: the sample 7.0.4.1 running, its inventory and catalog."""
    box = build_sandbox(top / "ops")
    try:
        box.start_service()
        yield box
    finally:
        box.stop_service()


def operators_home(ops: Sandbox, home: Path) -> Path:
    """The operator's HOME at ``home``: root's, 0755, its policy requiring two approvals, the demo's keys."""
    home.mkdir(mode=0o755)
    shutil.copytree(ops.keys, home / "keys")
    (home / "policy.yaml").write_text(ops.policy.read_text().replace("required: 1", "required: 2"))
    return home


def test_another_account_swaps_a_home_below_a_directory_it_can_write_and_the_run_is_refused(
        top: Path, ops: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    shared = top / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone may rename what is in it
    home = operators_home(ops, shared / "home")
    lab = build_sandbox(top / "lab")  # another root-owned home, one approval, keys the attacker holds
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sh", "-c",
                    'mv "$1/home" "$1/home.real" && ln -s "$2" "$1/home"', "sh", str(shared), str(lab.root)],
                   check=True)
    assert (shared / "home").is_symlink() and (shared / "home.real" / "policy.yaml").is_file()
    # the plan and its one approval under the swapped HOME (made while the directory is closed a moment, so that these
    # two steps go through), for the operator's host: what `run` would then have committed
    shared.chmod(0o755)
    plan, approval = top / "C.json", top / "C.approval"
    assert main(["--home", str(home), "plan", "--inventory", str(ops.inventory), "--to", TO, "--catalog",
                 str(lab.catalog), "--key", str(lab.keys / "requester"), "-o", str(plan)]) == ExitCode.OK
    assert main(["--home", str(home), "approve", str(plan), "--key", str(lab.engineer_key), "-o",
                 str(approval)]) == ExitCode.OK
    shared.chmod(0o777)
    before = host_state(ops)
    for argv in (["run", str(plan), "--approval", str(approval)], ["plan", "show", str(plan)]):
        capsys.readouterr()
        rc = main(["--home", str(home), *argv])
        err = capsys.readouterr().err
        assert rc == ExitCode.APPROVAL_REFUSED, f"{argv[0]}: exit {rc}: {err}"
        said = " ".join(err.split())
        assert f"the directory {shared} is writable by others (mode 777, not sticky)" in said, said
        assert "cannot be trusted" in said and "nothing was changed" in said and "Traceback" not in said, said
    assert_host_untouched(before, host_state(ops))
    assert ops.answers() == FROM

    # the operator's own home, put back, is refused as well while the directory above it stays open (as sshd would)
    (shared / "home").unlink()
    (shared / "home.real").rename(home)
    rc, err = cli(ops, capsys, "--home", str(home), "plan", "show", str(plan))
    assert rc == ExitCode.APPROVAL_REFUSED and f"the directory {shared} is writable by others" in err, err
    # closed (chmod go-w), the same home is trusted: the plan is shown, under the operator's policy
    shared.chmod(0o755)
    rc, err = cli(ops, capsys, "--home", str(home), "plan", "show", str(plan))
    assert rc == ExitCode.OK, err
    assert_host_untouched(before, host_state(ops))


@pytest.mark.parametrize("opened", ["group-writable", "owned by another account"])
def test_a_policy_given_with_policy_below_an_open_directory_is_refused(
        top: Path, ops: Sandbox, capsys: pytest.CaptureFixture[str], opened: str) -> None:
    """--policy names a file whose directory is safe, but a directory two levels up is group-writable or another
    account's: refused (exit 4) naming that directory, nothing on the host changed."""
    above = top / "ops-shared"
    (above / "etc").mkdir(parents=True)
    policy = above / "etc" / "policy.yaml"
    policy.write_text(ops.policy.read_text().replace("keys/", f"{ops.keys}/"))
    before = host_state(ops)
    rc, err = cli(ops, capsys, "available", "--inventory", str(ops.inventory), "--catalog", str(ops.catalog),
                  "--policy", str(policy))
    assert rc == ExitCode.OK, err  # control: the same policy, nothing above it open
    if opened == "group-writable":
        above.chmod(0o775)
        words = f"the directory {above} is writable by its group (mode 775, not sticky), and {policy} lies below it"
    else:
        subprocess.run(["chown", NOBODY, str(above)], check=True)
        words = f"the directory {above} is owned by uid {NOBODY}, neither you"
    rc, err = cli(ops, capsys, "available", "--inventory", str(ops.inventory), "--catalog", str(ops.catalog),
                  "--policy", str(policy))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert words in " ".join(err.split()), err
    assert_host_untouched(before, host_state(ops))


def test_plan_show_and_run_print_the_real_file_of_a_policy_reached_through_a_link(
        ops: Sandbox, top: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """HOME/policy.yaml is a link to the operator's file elsewhere (a safe place): accepted, and `plan show` and `run`
    print the file really read beside the name it was found under."""
    elsewhere = top / "policies"
    elsewhere.mkdir()
    real = elsewhere / "ops-policy.yaml"
    real.write_text(ops.policy.read_text().replace("keys/", f"{ops.keys}/"))
    ops.policy.unlink()
    ops.policy.symlink_to(real)
    plan = ops.plans / "p.json"
    assert upgrader(ops, "plan", "--inventory", str(ops.inventory), "--to", TO, "--catalog", str(ops.catalog),
                    "-o", str(plan)) == ExitCode.OK
    capsys.readouterr()
    assert upgrader(ops, "plan", "show", str(plan)) == ExitCode.OK
    out = " ".join(capsys.readouterr().out.split())
    assert f"policy here (HOME/policy.yaml): {ops.policy} (real file {real})" in out, out
    approval = approve(ops, plan)
    capsys.readouterr()
    assert upgrader(ops, "run", str(plan), "--approval", str(approval)) == ExitCode.OK
    out = " ".join(capsys.readouterr().out.split())
    assert f"policy: HOME/policy.yaml, {real} sha256 " in out, out
    assert ops.answers() == TO
