"""Support for the approval and trust tests: real OpenSSH keys and signatures made by the stock
``ssh-keygen``, allowed_signers lines, and the "nothing was touched" snapshot of a sandbox host.

No fakes here: every key is a real key file and every signature a real SSHSIG signature.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Mapping

import pytest

from conftest import upgrader
from hoststate import HostState, assert_host_untouched
from hoststate import host_state as _whole_host_state
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.errors import InputError

__all__ = [
    "SSH_KEYGEN",
    "HostState",
    "add_signer",
    "assert_host_untouched",
    "approval_signed_anyway",
    "cli",
    "copy_catalog",
    "host_state",
    "make_ssh_key",
    "pristine",
    "public_key_fields",
    "resigned",
    "rebuild_package",
    "root_installs",
    "sandbox_installs",
    "set_policy",
    "split_approval",
    "ssh_keygen",
    "state_dir",
    "vendor_catalog",
    "write_root_config",
]

SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def ssh_keygen(*args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``ssh-keygen`` (a missing binary is a failure, not a skip: tests/run.sh installs it)."""
    proc = subprocess.run([SSH_KEYGEN, *args], input=stdin, capture_output=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"ssh-keygen {' '.join(args)} exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace')}")
    return proc


def make_ssh_key(path: Path, kind: str, bits: int | None = None, passphrase: str = "",
                 comment: str = "test-key") -> Path:
    """A new private key at ``path`` (and ``path.pub``) made by ``ssh-keygen -t kind [-b bits]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-q", "-t", kind, "-N", passphrase, "-C", comment, "-f", str(path)]
    if bits:
        args[3:3] = ["-b", str(bits)]
    ssh_keygen(*args)
    return path


def public_key_fields(private_key: Path) -> str:
    """``type base64`` of the public key beside ``private_key`` (its ``.pub`` file, without the comment)."""
    text = private_key.with_name(private_key.name + ".pub").read_text(encoding="utf-8")
    return " ".join(text.split()[:2])


def add_signer(allowed_signers: Path, principals: str, private_key: Path, options: str = "") -> None:
    """Append ``principals [options] key`` to an allowed_signers file."""
    line = " ".join(p for p in (principals, options, public_key_fields(private_key)) if p)
    with open(allowed_signers, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def set_policy(box: Sandbox, old: str, new: str) -> None:
    """Rewrite one setting in the sandbox policy (HOME/policy.yaml), keeping its signer files."""
    text = box.policy.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {box.policy}"
    box.policy.write_text(text.replace(old, new, 1), encoding="utf-8")


def state_dir(install_dir: Path) -> Path:
    """Where the host agent keeps its state for an install: ``<parent>/.upgrader-<name>``."""
    return install_dir.parent / f".upgrader-{install_dir.name}"


def host_state(box: Sandbox) -> HostState:
    """The whole sandbox host (tests/hoststate.py): product files, the service (pid file, process start time, the
    version it answers), the agent's whole state dir (lock, staged packages, runs, ledger) and this machine's runs."""
    return _whole_host_state(box.install_dir, answers=lambda: _answer(box), home=box.root)


def _answer(box: Sandbox) -> str | None:
    """The version the sandbox service answers (allowing a loaded machine a few seconds), or None if it is down."""
    try:
        return box.wait_version(None, timeout=5)
    except InputError:
        return None


def pristine(box: Sandbox) -> HostState:
    """The sandbox host before any run: 7.0.4.1 answering, no run recorded anywhere."""
    state = host_state(box)
    assert state.version == "7.0.4.1"
    assert state.host_runs is None and state.home_runs == ()
    return state


def cli(box: Sandbox, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the real CLI in-process; return its exit code and what it wrote to stderr."""
    capsys.readouterr()
    rc = upgrader(box, *argv)
    return rc, capsys.readouterr().err


def resigned(data: dict[str, object], sandbox_root: Path) -> dict[str, object]:
    """Plan data edited by its requester and signed again with their key (the sandbox's keys/requester), as the
    requester of a plan would after editing it."""
    from upgrader.trust.keys import load_private_key
    from upgrader.core.plan import plan_digest
    from upgrader.trust.requester import sign_plan

    return sign_plan(dict(data), load_private_key(sandbox_root / "keys" / "requester"), plan_digest)


def split_approval(approval: Path, directory: Path) -> tuple[Path, Path]:
    """The documented split of an approval file: the statement (everything before the
    ``-----BEGIN SSH SIGNATURE-----`` line) and the signature (that line to the end)."""
    data = approval.read_bytes()
    marker = data.index(b"-----BEGIN SSH SIGNATURE-----")
    statement, signature = directory / "statement.txt", directory / "statement.sig"
    statement.write_bytes(data[:marker])
    signature.write_bytes(data[marker:])
    return statement, signature


def vendor_catalog(box: Sandbox, directory: Path, serial: int) -> Path:
    """Rewrite ``directory/catalog.yaml`` for the packages in it and sign it with the sandbox vendor key,
    as the vendor would (``upgrader catalog build DIR --serial N --key VENDOR_KEY``)."""
    rc = upgrader(box, "catalog", "build", str(directory), "--serial", str(serial), "--key", str(box.vendor_key))
    assert rc == 0, f"catalog build exited {rc}"
    return directory / "catalog.yaml"


def copy_catalog(box: Sandbox, name: str) -> Path:
    """A copy of the sandbox's signed catalog directory (packages, catalog.yaml, catalog.yaml.sig)."""
    dest = box.root / name
    shutil.copytree(box.catalog, dest)
    return dest


def rebuild_package(box: Sandbox, directory: Path, version: str, work: Path) -> Path:
    """Replace the package of ``version`` in ``directory`` by a build of the same version with other content."""
    from upgrader.sample import package_name, write_tree

    tree = work / f"tree-{version}"
    write_tree(tree, version)
    (tree / "docs" / "REBUILT.txt").write_text("the same version, built again with one more file\n", encoding="utf-8")
    out = directory / package_name(version)
    out.unlink()
    rc = upgrader(box, "package", "build", str(tree), "--product", "sample-middleware", "--version", version,
                  "--description", "maintenance release", "-o", str(out))
    assert rc == 0, f"package build exited {rc}"
    return out


def approval_signed_anyway(box: Sandbox, plan: Path, key: Path | None = None,
                           approver: str = "engineer@vendor") -> Path:
    """An approval of ``plan`` signed with the sandbox engineer's real key by their own tooling (``approve`` itself
    refuses a plan it cannot decide again to the same answer): what a run must still refuse on its own."""
    import datetime as dt
    import json

    from upgrader.core.plan import plan_digest
    from upgrader.trust.approval import make_statement, write_approval
    from upgrader.trust.keys import load_private_key

    data = json.loads(plan.read_text(encoding="utf-8"))
    statement = make_statement(plan_digest(data), approver, str(data["requester"].get("user")),
                               dt.datetime.now(dt.timezone.utc), 3600)
    out = box.approvals / f"{plan.stem}-anyway-{len(list(box.approvals.iterdir()))}.approval"
    write_approval(out, statement, load_private_key(key or box.engineer_key))
    return out


def write_root_config(root: Path, **settings: object) -> Path:
    """Root's edit of the host trust root's host-trust.json: ``settings`` merged into what is there (``installs``
    merged entry by entry, the rest replaced), mode 0644 as root keeps it; returns the file."""
    config = root / "host-trust.json"
    data = json.loads(config.read_text(encoding="utf-8")) if config.exists() else {}
    for key, value in settings.items():
        if key == "installs" and isinstance(value, Mapping):
            data["installs"] = {**data.get("installs", {}), **{str(k): str(v) for k, v in value.items()}}
        else:
            data[key] = value
    config.write_text(json.dumps(data, indent=1), encoding="utf-8")
    config.chmod(0o644)
    return config


def sandbox_installs(box: Sandbox, product: str = "sample-middleware") -> dict[str, str]:
    """Every install of the sandbox (its ``hosts/`` directory: app-01, and a fleet's app-02..) as ``product``."""
    hosts = box.root / "hosts"
    return {str(d): product for d in sorted(hosts.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def root_installs(root: Path, box: Sandbox, product: str = "sample-middleware") -> Path:
    """Root states in its host trust root which product each sandbox install is (host-trust.json ``installs``): the
    only first-upgrade confirmation of the installed product a trust-root host accepts (the install dir's files are
    the service account's word)."""
    return write_root_config(root, installs=sandbox_installs(box, product))
