"""Issue 12, attack12r21 H1, H2, M3: the "engineer let in" refusal and ``approve -o``.

H1  While a grant lets an engineer into the operator's account, an approval of a plan signed by a key the account holds
    is refused (exit 4). The account's keys were learnt only from openssh-key-v1 files directly in HOME/keys and
    ``$HOME/.ssh``: a PEM key, a key in a subfolder, or one in the password-database home (when ``HOME`` points
    elsewhere) was not counted, and the engineer signed the plan with it and approved it with their own key. A file
    that looks like a private key but whose key cannot be told (encrypted PEM without its .pub, damaged) now refuses
    the approval while anyone is let in, naming the file.
H2  authorized_keys was read only in its first MiB: the engineer padded it in front of the grant line. It is read
    whole (a file over 64 MiB is refused); ``access list`` / ``revoke`` still work on the padded file.
M3  ``approve -o`` wrote ``.NAME.tmp`` through a link planted in a shared folder; ``plan -o`` wrote through a link
    planted at the output itself.
All through the shipped CLI, with real keys (ssh-keygen), the real sample middleware, the host untouched.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_outputs_through_links import _shared_with_a_planted_link
from test_trust_roots_13 import _untouched
from test_trust_roots_9 import _cli
from trust_support import approval_signed_anyway, pristine
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.reasons import UNTRANSLATED, refusal


def _keygen(path: Path, *extra: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", "kept", "-f", str(path), *extra], check=True)
    return path


def _listed_requester(sandbox: Sandbox, key: Path) -> None:
    """The account's key ``key`` is a requester in the operator's allowed_signers (namespace upgrader-plan)."""
    pub = " ".join(key.with_name(key.name + ".pub").read_text(encoding="utf-8").split()[:2])
    with (sandbox.keys / "allowed_signers").open("a", encoding="utf-8") as f:
        f.write(f'requester2@customer namespaces="upgrader-plan" {pub}\n')


def _stolen(key: Path, tmp_path: Path, passphrase: str = "") -> Path:
    """The engineer's copy of the account's key, outside the account's folders, converted to OpenSSH format as
    ``ssh-keygen -p`` does (``plan --key`` reads that)."""
    copy = tmp_path / "stolen"
    shutil.copyfile(key, copy)
    copy.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", passphrase, "-N", "", "-f", str(copy)], check=True)
    return copy


def _granted(sandbox: Sandbox, tmp_path: Path) -> tuple[dict[str, str], Path, str]:
    """``access grant`` of a login key the engineer made into the operator's account (a scratch HOME): the account's
    environment, its HOME and the grant's id."""
    home = tmp_path / "operator-home"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home)}
    login = _keygen(tmp_path / "engineer-login", "-t", "ed25519")
    done = _cli(sandbox.root, "access", "grant", "--key", str(login.with_suffix(".pub")), "--hours", "2", env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    (grant,) = re.findall(r"upgrader-grant:(\w+)", (home / ".ssh" / "authorized_keys").read_text(encoding="utf-8"))
    return env, home, grant


def _plan(sandbox: Sandbox, tmp_path: Path, key: Path, env: dict[str, str]) -> Path:
    plan = tmp_path / "D.json"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--catalog",
                str(sandbox.catalog / "catalog.yaml"), "--to", "7.0.4.2", "--key", str(key), "-o", str(plan), env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    return plan


def _approve(sandbox: Sandbox, plan: Path, env: dict[str, str],
             argv0: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[str], Path]:
    approval = plan.with_suffix(".approval")
    if not argv0:
        return _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval),
                    env=env), approval
    full = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    full.update(env)
    return subprocess.run([*argv0, sys.executable, "-m", "upgrader", "--home", str(sandbox.root), "approve", str(plan),
                           "--key", str(sandbox.engineer_key), "-o", str(approval)], cwd=sandbox.root, env=full,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300), approval


def _refused(done: subprocess.CompletedProcess[str], *said: str) -> None:
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert all(s in out for s in said) and "Traceback" not in out, out


def _in_chinese(done: subprocess.CompletedProcess[str], *said: str) -> None:
    """The refusal (reason and hint) as the operator who reads Chinese gets it: whole, nothing left in English."""
    zh = refusal(done.stderr.split("upgrader: error: ", 1)[1].rstrip("\n"), "zh")
    assert UNTRANSLATED not in zh and all(s in zh for s in said), zh


def _run_refused(sandbox: Sandbox, plan: Path, env: dict[str, str], *said: str) -> None:
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval_signed_anyway(sandbox, plan)), "--yes",
                env={**env, "UPGRADER_AUDIT_KEY": str(sandbox.operator_key)})
    _refused(done, *said)


@pytest.mark.parametrize("where", ["pem", "pkcs8", "subfolder"])
def test_an_account_key_in_pem_form_or_in_a_subfolder_refuses_the_approval_while_the_engineer_is_let_in(
        sandbox: Sandbox, tmp_path: Path, where: str) -> None:
    """H1, the attacker's first two variants: the account's requester key kept as ~/.ssh/id_rsa in PEM (or PKCS#8)
    form, or in OpenSSH form in ~/.ssh/old/; the engineer, let in through a grant, signs the plan with a converted
    copy and approves it with their own key. Refused at approve and at run (exit 4) naming the grant; nothing written,
    the host untouched."""
    before = pristine(sandbox)
    env, home, grant = _granted(sandbox, tmp_path)
    if where == "subfolder":
        key = _keygen(home / ".ssh" / "old" / "id_req", "-t", "ed25519")
    else:
        key = _keygen(home / ".ssh" / "id_rsa", "-t", "rsa", "-b", "2048", "-m", "PEM" if where == "pem" else "PKCS8")
        assert key.read_text(encoding="utf-8").startswith(
            "-----BEGIN RSA PRIVATE KEY-----" if where == "pem" else "-----BEGIN PRIVATE KEY-----")
    _listed_requester(sandbox, key)
    if where != "subfolder":
        key.with_name("id_rsa.pub").unlink()  # the public key is derived from the private key itself
    plan = _plan(sandbox, tmp_path, _stolen(key, tmp_path), env)
    done, approval = _approve(sandbox, plan, env)
    _refused(done, f"access grant {grant}", "lets an engineer log in to this account")
    assert not approval.exists()
    _run_refused(sandbox, plan, env, f"access grant {grant}")
    _untouched(before, sandbox)


def test_an_account_key_in_the_password_database_home_counts_when_home_points_elsewhere(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """H1, third variant: the account's key kept in the .ssh of its home in the password database while the commands
    run with HOME set elsewhere. The approval is refused all the same (exit 4). That home's .ssh is stood in for by a
    scratch folder mounted over it in the command's own mount namespace (on a machine without that .ssh yet, an empty
    one is made for the test and removed after it, as ssh-keygen would make it)."""
    # root and unshare stand in for the password-database home's .ssh (the suite runs as root: tests/run.sh)
    assert os.geteuid() == 0 and shutil.which("unshare") is not None, "run the suite as root (tests/run.sh)"
    real_ssh = Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".ssh"
    made = not real_ssh.is_dir()
    if made:  # a fresh machine has no ~/.ssh yet: make it as ssh-keygen would (empty, 0700), remove it afterwards
        real_ssh.mkdir(mode=0o700)
    try:
        _password_home_key_refused(sandbox, tmp_path, real_ssh)
    finally:
        if made:
            real_ssh.rmdir()


def _password_home_key_refused(sandbox: Sandbox, tmp_path: Path, real_ssh: Path) -> None:
    before = pristine(sandbox)
    env, home, grant = _granted(sandbox, tmp_path)
    stand_in = tmp_path / "pw-home-ssh"
    stand_in.mkdir(mode=0o700)
    key = _keygen(stand_in / "attack12r21_req", "-t", "ed25519")
    _listed_requester(sandbox, key)
    plan = _plan(sandbox, tmp_path, _stolen(key, tmp_path), env)
    mounted = ("unshare", "-m", "sh", "-c", 'mount --make-rprivate / && mount --bind "$1" "$2" && shift 2 && '
               'exec "$@"', "sh", str(stand_in), str(real_ssh))
    done, approval = _approve(sandbox, plan, env, mounted)
    _refused(done, f"access grant {grant}", "lets an engineer log in to this account")
    assert not approval.exists()
    done, approval = _approve(sandbox, plan, env)  # without the key in that home: nothing the account holds signed it
    assert done.returncode == ExitCode.OK and approval.exists(), done.stdout + done.stderr
    _untouched(before, sandbox)


@pytest.mark.parametrize("kind", ["encrypted", "damaged", "two keys"])
def test_a_key_file_whose_key_cannot_be_told_refuses_the_approval_while_anyone_is_let_in(
        sandbox: Sandbox, tmp_path: Path, kind: str) -> None:
    """H1, fail closed: a file in the account's key folders that looks like a private key but whose key cannot be
    told (an encrypted PEM key without its .pub: the engineer learnt its passphrase; damaged; two keys in one file)
    may be the key that signed the plan: while a grant lets anyone in, the approval is refused at approve and at run
    (exit 4) naming that file and the grant line. Moved out of the account's folders, the approval is accepted (the plan's key is then
    none the account holds)."""
    before = pristine(sandbox)
    env, home, grant = _granted(sandbox, tmp_path)
    key = _keygen(tmp_path / "kept" / "id_enc", "-t", "rsa", "-b", "2048")
    _listed_requester(sandbox, key)
    plan = _plan(sandbox, tmp_path, key, env)
    kept = home / ".ssh" / "backup" / "id_enc"
    kept.parent.mkdir(parents=True)
    if kind == "encrypted":
        subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "correct horse", "-m", "PEM", "-f", str(key)],
                       check=True)
        shutil.copyfile(key, kept)
        assert "ENCRYPTED" in kept.read_text(encoding="utf-8")
    elif kind == "damaged":
        kept.write_text("-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n",
                        encoding="utf-8")
    else:  # a key upgrader can read first, the plan's key after it: which one ssh would use is not told
        other = _keygen(tmp_path / "other", "-t", "ed25519")
        kept.write_bytes(other.read_bytes() + key.read_bytes())
    assert not kept.with_name("id_enc.pub").exists()
    done, approval = _approve(sandbox, plan, env)
    authorized = home / ".ssh" / "authorized_keys"
    _refused(done, f"{kept} looks like a private key of this account, but upgrader cannot tell which key it is",
             f"{authorized} line 1 (access grant {grant}) lets an engineer log in", f"{kept}.pub")
    _in_chinese(done, f"{kept} 看起来是本账户的私钥", f"{authorized} 第 1 行（访问授权 {grant}）", f"{kept}.pub")
    assert not approval.exists()
    _run_refused(sandbox, plan, env, f"{kept} looks like a private key of this account")
    _untouched(before, sandbox)
    shutil.move(kept, tmp_path / "moved-out")
    done, approval = _approve(sandbox, plan, env)
    assert done.returncode == ExitCode.OK and approval.exists(), done.stdout + done.stderr


def test_a_padded_authorized_keys_still_refuses_the_approval_and_the_grant_can_be_revoked(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """H2, the attacker's repro: logged in, the engineer pads the account's authorized_keys with 1.1 MB of comment
    lines in front of the grant line (sshd reads it all and still lets them in). The approval of the plan signed by
    the account's key is refused (exit 4) naming the grant; ``access list`` shows the grant and ``access revoke``
    closes it (the padding kept); then the approval is accepted. A file over 64 MiB is refused, not read in part."""
    before = pristine(sandbox)
    env, home, grant = _granted(sandbox, tmp_path)
    key = _keygen(home / ".ssh" / "id_req", "-t", "ed25519")
    _listed_requester(sandbox, key)
    plan = _plan(sandbox, tmp_path, _stolen(key, tmp_path), env)
    authorized = home / ".ssh" / "authorized_keys"
    padding = ("#" + "x" * 1000 + "\n") * 1100
    authorized.write_text(padding + authorized.read_text(encoding="utf-8"), encoding="utf-8")
    assert authorized.stat().st_size > 1 << 20
    done, approval = _approve(sandbox, plan, env)
    _refused(done, f"access grant {grant} ({authorized} line 1101")
    assert not approval.exists()
    _run_refused(sandbox, plan, env, f"access grant {grant}")
    _untouched(before, sandbox)

    done = _cli(sandbox.root, "access", "list", env=env)
    assert done.returncode == ExitCode.OK and grant in done.stdout, done.stdout + done.stderr
    done = _cli(sandbox.root, "access", "revoke", grant, env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert authorized.read_text(encoding="utf-8") == padding  # the grant line gone, the rest byte for byte
    done, approval = _approve(sandbox, plan, env)
    assert done.returncode == ExitCode.OK and approval.exists(), done.stdout + done.stderr

    with authorized.open("r+b") as f:  # over 64 MiB (sparse): refused rather than read in part
        f.truncate((64 << 20) + 1)
    approval.unlink()
    done, approval = _approve(sandbox, plan, env)
    _refused(done, f"{authorized} is larger than 64 MiB", "refuses rather than read it in part")
    _in_chinese(done, f"{authorized} 大于 64 MiB")
    assert not approval.exists()


def test_approve_and_plan_never_write_through_a_link_planted_in_a_shared_folder(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """M3, the attacker's repro: in a folder others can write, a link ``.B.approval.tmp`` -> a root-only file; ``approve
    -o shared/B.approval`` writes a regular file and leaves the victim as it was. An ``-o`` that is itself a link
    (approve or plan) is refused (exit 2) and nothing is written through it."""
    victim, link = _shared_with_a_planted_link(tmp_path, ".B.approval.tmp")
    shared = link.parent
    plan = tmp_path / "A.json"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--catalog",
                str(sandbox.catalog / "catalog.yaml"), "--to", "7.0.4.2", "--key", str(sandbox.requester_key),
                "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    out = shared / "B.approval"
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(out))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert victim.read_text(encoding="utf-8") == "precious\n" and victim.stat().st_mode & 0o777 == 0o600
    assert not out.is_symlink() and out.read_text(encoding="utf-8").startswith("upgrader approval")
    assert out.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in shared.iterdir()) == [".B.approval.tmp", "B.approval"]  # no temp file left

    for argv in (["approve", str(plan), "--key", str(sandbox.engineer_key)],
                 ["plan", "--inventory", str(sandbox.inventory), "--catalog", str(sandbox.catalog / "catalog.yaml"),
                  "--to", "7.0.4.2", "--key", str(sandbox.requester_key)]):
        link = shared / f"{argv[0]}-out"
        link.symlink_to(victim)
        done = _cli(sandbox.root, *argv, "-o", str(link))
        said = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == ExitCode.BAD_INPUT, said
        assert f"{link}" in said and "-o names a link" in said and "Traceback" not in said, said
        assert victim.read_text(encoding="utf-8") == "precious\n" and link.is_symlink()
