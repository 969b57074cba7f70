"""StrictModes through a chain of links (issue 12, attack12r22 M2).

The operator's HOME is DIR/opt/home, a link (root's, in root's DIR/opt) to DIR/shared/cur, itself a link to the real
home. DIR/shared is another account's (a deploy account's ``current`` link): it re-points ``cur`` at another
root-owned home (other policy, other keys) and the same HOME path is another home. The checks looked above the name as
given and above its real file only, never at the directory holding a link in the middle of the chain. Now the path is
resolved one component at a time as the kernel does (at most 40 links) and every directory looked up in, and the one
holding every link followed, must be root's or the operator's: refused (exit 4) naming DIR/shared, the host untouched;
the same chain through root's directories works. The same for a policy given with --policy."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hoststate import assert_host_untouched
from test_home_ancestors import FROM, NOBODY, TO, operators_home, ops, top  # noqa: F401 (fixtures)
from trust_support import cli, host_state
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.strict_modes import MAX_LINKS, ancestors_open_to_others, traversal


def _chain(top: Path, target: Path, name: str) -> tuple[Path, Path]:
    """DIR/opt/NAME -> DIR/shared/cur -> ``target``: DIR/opt root's, DIR/shared and its link ``cur`` another
    account's (made by it). The path as given and the directory it holds."""
    opt, shared = top / "opt", top / "shared"
    opt.mkdir(mode=0o755, exist_ok=True)
    shared.mkdir(mode=0o755, exist_ok=True)
    os.chown(shared, int(NOBODY), int(NOBODY))
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "ln", "-sfn",
                    str(target), str(shared / "cur")], check=True)
    (opt / name).symlink_to(shared / "cur")
    return opt / name, shared


def test_a_home_reached_through_a_link_in_another_accounts_directory_is_refused(
        top: Path, ops: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    real = operators_home(ops, top / "real")
    plan = top / "C.json"
    rc, err = cli(ops, capsys, "--home", str(real), "plan", "--inventory", str(ops.inventory), "--to", TO,
                  "--catalog", str(ops.catalog), "--key", str(real / "keys" / "requester"), "-o", str(plan))
    assert rc == ExitCode.OK, err
    home, shared = _chain(top, real, "home")
    assert os.path.realpath(home) == str(real)
    before = host_state(ops)
    for argv in (["plan", "show", str(plan)], ["run", str(plan), "--approval", str(top / "none.approval")]):
        rc, err = cli(ops, capsys, "--home", str(home), *argv)
        said = " ".join(err.split())
        assert rc == ExitCode.APPROVAL_REFUSED, f"{argv[0]}: exit {rc}: {said}"
        assert f"the directory {shared} is owned by uid {NOBODY}, neither you" in said, said
        assert f"it holds the link {shared / 'cur'} on the way to {home}" in said, said
        assert "cannot be trusted" in said and "Traceback" not in said, said
    assert_host_untouched(before, host_state(ops))
    assert ops.answers() == FROM
    # the same chain through root's directories (the link in shared/ root's too) is trusted
    os.chown(shared, 0, 0)
    os.lchown(shared / "cur", 0, 0)
    rc, err = cli(ops, capsys, "--home", str(home), "plan", "show", str(plan))
    assert rc == ExitCode.OK, err
    assert_host_untouched(before, host_state(ops))


def test_a_policy_reached_through_a_link_in_another_accounts_directory_is_refused(
        top: Path, ops: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    etc = top / "etc-real"
    etc.mkdir(mode=0o755)
    (etc / "policy.yaml").write_text(ops.policy.read_text().replace("keys/", f"{ops.keys}/"))
    given, shared = _chain(top, etc, "etc")
    policy = given / "policy.yaml"
    before = host_state(ops)
    rc, err = cli(ops, capsys, "available", "--inventory", str(ops.inventory), "--catalog", str(ops.catalog),
                  "--policy", str(policy))
    said = " ".join(err.split())
    assert rc == ExitCode.APPROVAL_REFUSED, said
    assert f"the directory {shared} is owned by uid {NOBODY}" in said and str(shared / "cur") in said, said
    assert_host_untouched(before, host_state(ops))
    os.chown(shared, 0, 0)
    os.lchown(shared / "cur", 0, 0)
    rc, err = cli(ops, capsys, "available", "--inventory", str(ops.inventory), "--catalog", str(ops.catalog),
                  "--policy", str(policy))
    assert rc == ExitCode.OK, err


def test_traversal_follows_every_link_as_the_kernel_does_and_stops_after_the_kernels_limit(top: Path) -> None:
    """Relative and absolute targets, ``..`` after a link (physical, as the kernel), the holder of every link; more
    than MAX_LINKS links: a problem, never a pass."""
    (top / "a" / "b").mkdir(parents=True)
    (top / "real").mkdir()
    (top / "real" / "f").write_text("x")
    (top / "a" / "b" / "up").symlink_to("../../real")  # relative, resolved from a/b
    (top / "a" / "l").symlink_to(top / "a" / "b" / "up")  # absolute, to another link
    way = traversal(str(top / "a" / "l" / "f"))
    assert way.problem is None and way.real == str(top / "real" / "f")
    assert way.links == [(str(top / "a"), str(top / "a" / "l")), (str(top / "a" / "b"), str(top / "a" / "b" / "up"))]
    assert str(top / "a" / "b") in way.directories and str(top / "real") in way.directories
    assert traversal(str(top / "a" / "l" / ".." / "f")).real == str(top / "f")  # .. of real/, not of a/
    prev = top / "real"
    for i in range(MAX_LINKS + 1):
        (top / f"n{i}").symlink_to(prev)
        prev = top / f"n{i}"
    assert traversal(str(top / f"n{MAX_LINKS - 1}")).problem is None
    assert traversal(str(prev)).problem == f"{prev} goes through more than {MAX_LINKS} links"
    assert ancestors_open_to_others(str(top / "a" / "l" / "f")) is None  # all root's (the test runs as root)
