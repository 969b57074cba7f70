"""Hostile input through the real commands: packages that try to escape, YAML that tries to run code or
explode, unknown keys and wrong types in every file kind, versions, names and paths carrying shell code,
and two hosts on one install. Each is refused (exit 2, or 3 where the version policy decides) with a
message naming the problem, and the host is left exactly as it was: same files, same running server.
Where such input is legitimate (an install dir with spaces and quotes) it works, and nothing is injected.

Hostile package members refused by `package verify`, by `plan` and by the host agent are covered in
test_package_safety.py; here the same members reach `upgrader run` through a plan that was edited to
name them (and approved), to show the run checks the package itself before any host is touched.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, kill_processes_under, plan_to, upgrader
from fleet import Fleet
from hoststate import HostState, assert_host_untouched
from hoststate import host_state as whole_host_state
from upgrader import sample
from upgrader.cli.commands.demo import Sandbox, build_sandbox
from upgrader.trust.package import file_digest
from upgrader.core.playbook import shipped_playbooks_dir
from upgrader.sample import http_get

OLD, NEW = "7.0.4.1", "7.0.4.2"


# ---------------------------------------------------------------- what 'nothing touched' means


def host_state(box: Sandbox) -> HostState:
    """The whole host (tests/hoststate.py): product files, the service's pid, start time and answer, the agent's
    state dir (lock, runs, staged packages, ledger) and this machine's runs."""
    return whole_host_state(box.install_dir, answers=box.answers, home=box.root)


def assert_untouched(box: Sandbox, was: HostState) -> None:
    assert_host_untouched(was, host_state(box))
    assert box.answers() == OLD
    assert http_get(box.port, "/health")[0] == 200


def refused(box: Sandbox, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the CLI in-process; its exit code and everything it printed (stderr last)."""
    capsys.readouterr()
    rc = upgrader(box, *argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out + err


def plan_refused(box: Sandbox, capsys: pytest.CaptureFixture[str], *extra: str,
                 inventory: Path | None = None, version: str = NEW) -> tuple[int, str]:
    out = box.root / "plans" / f"hostile-{uuid.uuid4().hex[:8]}.json"
    rc, text = refused(box, capsys, "plan", "--inventory", str(inventory or box.inventory), "--to", version,
                       "--catalog", str(box.catalog), "-o", str(out), *extra)
    if rc != 0:
        assert not out.exists(), "a refused plan was written"
    return rc, text


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def inventory_data(box: Sandbox) -> dict[str, Any]:
    return yaml.safe_load(box.inventory.read_text(encoding="utf-8"))


def playbook_data() -> dict[str, Any]:
    return yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))


def use_playbook(box: Sandbox, spec: dict[str, Any], name: str = "custom") -> Path:
    spec = {**spec, "name": name}
    spec["observe"] = {**spec["observe"], "window": "0.5s"}
    (box.root / "playbooks").mkdir(exist_ok=True)  # the operator's playbooks: HOME/playbooks, named by name
    path = write_yaml(box.root / "playbooks" / f"{name}.yaml", spec)
    inv = inventory_data(box)
    for host in inv["hosts"].values():
        host["playbook"] = name
    write_yaml(box.inventory, inv)
    return path


def sign_catalog(box: Sandbox, directory: Path) -> None:
    assert upgrader(box, "catalog", "sign", str(directory), "--key", str(box.vendor_key)) == 0


# ---------------------------------------------------------------- hostile packages through `upgrader run`


def _member(tar: tarfile.TarFile, name: str, data: bytes = b"x\n", kind: bytes = tarfile.REGTYPE,
            linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


class _Zeros(io.RawIOBase):
    """``n`` zero bytes, read in chunks (a bomb's member without holding it in memory)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def _bomb(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("lib/modules/bomb.bin")
    info.size = 64 << 20
    info.mode = 0o644
    tar.addfile(info, io.BufferedReader(_Zeros(info.size)))


HOSTILE_PACKAGES: dict[str, tuple[Callable[[tarfile.TarFile], None], str]] = {
    "dotdot member": (lambda t: _member(t, "lib/../../escaped.txt"), "points outside the install dir"),
    "absolute member": (lambda t: _member(t, "/tmp/escaped-by-package.txt"), "points outside the install dir"),
    "symlink outside": (lambda t: _member(t, "lib/etc", kind=tarfile.SYMTYPE, linkname="../../../../etc"),
                        "escapes the install dir"),
    "hardlink outside": (lambda t: _member(t, "lib/passwd", kind=tarfile.LNKTYPE, linkname="/etc/passwd"),
                         "hard link"),
    "character device": (lambda t: _member(t, "lib/kmem", kind=tarfile.CHRTYPE), "device or special file"),
    "too many members": (lambda t: [_member(t, f"lib/m/{i:05d}") for i in range(20000)], "more than 100 members"),
    "decompression bomb": (_bomb, f"more than {1 << 20} bytes"),
}


def hostile_package(directory: Path, extra: Callable[[tarfile.TarFile], None]) -> Path:
    """A package that looks like sample-middleware 7.0.4.2 plus one hostile part."""
    directory.mkdir(parents=True)
    pkg = directory / f"sample-middleware-{NEW}.tar.gz"
    meta = f"format: 1\nproduct: sample-middleware\nversion: {NEW}\nkind: full\nchanges: []\n".encode()
    with tarfile.open(pkg, "w:gz", compresslevel=1, format=tarfile.GNU_FORMAT) as tar:
        _member(tar, "package.yaml", meta)
        _member(tar, "lib", kind=tarfile.DIRTYPE)
        _member(tar, "lib/VERSION", f"{NEW}\n".encode())
        extra(tar)
    return pkg


def catalog_entry(pkg: Path, members: int = 100, unpacked: int = 1 << 20) -> dict[str, Any]:
    return {"file": pkg.name, "product": "sample-middleware", "version": NEW, "kind": "full",
            "sha256": file_digest(pkg), "size": pkg.stat().st_size, "changes": [],
            "limits": {"members": members, "unpacked_bytes": unpacked}}


def write_catalog(box: Sandbox, directory: Path, entries: list[dict[str, Any]]) -> Path:
    path = write_yaml(directory / "catalog.yaml", {"format": 1, "serial": 1, "published": "2026-11-01T00:00:00+00:00",
                                                   "packages": entries})
    sign_catalog(box, directory)
    return path


def edited_plan(box: Sandbox, plan: Path, catalog: Path, entry: dict[str, Any]) -> Path:
    """The plan, edited to take its 7.0.4.2 package from another catalog (as a tampering tool would) and signed again
    by its requester."""
    from upgrader.trust.keys import load_private_key
    from upgrader.core.plan import plan_digest
    from upgrader.trust.requester import sign_plan

    data = json.loads(plan.read_text())
    data["catalog"] = {"path": str(catalog.resolve()), "sha256": file_digest(catalog), "serial": 1}
    (host,) = data["hosts"]
    host["package"] = {**host["package"], **{k: entry[k] for k in ("file", "sha256", "size")},
                       "limits": entry["limits"]}
    out = plan.with_name("edited-" + plan.name)
    out.write_text(json.dumps(sign_plan(data, load_private_key(box.requester_key), plan_digest), indent=2))
    return out


@pytest.mark.parametrize("kind", sorted(HOSTILE_PACKAGES))
def test_run_of_an_approved_plan_naming_a_hostile_package_exits_2_before_any_host_is_touched(
        sandbox, tmp_path, capsys, kind):
    """A plan edited to name a hostile package, then approved, is refused by `run` (exit 2) naming the problem."""
    extra, words = HOSTILE_PACKAGES[kind]
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 0
    directory = tmp_path / "hostile"
    entry = catalog_entry(hostile_package(directory, extra))
    catalog = write_catalog(sandbox, directory, [entry])
    plan = edited_plan(sandbox, plan, catalog, entry)
    approval = approve(sandbox, plan)
    was = host_state(sandbox)
    rc, text = refused(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2
    assert words in text
    assert str(directory / f"sample-middleware-{NEW}.tar.gz") in text
    assert_untouched(sandbox, was)
    assert not Path("/tmp/escaped-by-package.txt").exists()
    assert not (sandbox.root / "hosts" / "escaped.txt").exists()


# ---------------------------------------------------------------- YAML that runs code or explodes


MARKER = "pwned-by-yaml"


def python_tag(marker: Path) -> str:
    return f"!!python/object/apply:os.system [\"touch {marker}\"]"


BILLION_LAUGHS = ("lol0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                  + "".join(f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)))


def _hostile_inventory(box: Sandbox, attack: str, marker: Path) -> tuple[list[str], Path]:
    text = box.inventory.read_text(encoding="utf-8")
    text += f"x_attack: {python_tag(marker)}\n" if attack == "python tag" else BILLION_LAUGHS
    path = box.root / "hostile-inventory.yaml"
    path.write_text(text, encoding="utf-8")
    return ["--inventory", str(path)], path


def _hostile_playbook(box: Sandbox, attack: str, marker: Path) -> tuple[list[str], Path]:
    path = use_playbook(box, playbook_data(), "hostile")
    text = path.read_text(encoding="utf-8")
    text = text.replace("description:", f"description: {python_tag(marker)}\nx_description:") \
        if attack == "python tag" else text + BILLION_LAUGHS
    path.write_text(text, encoding="utf-8")
    return [], path


def _hostile_policy(box: Sandbox, attack: str, marker: Path) -> tuple[list[str], Path]:
    text = box.policy.read_text(encoding="utf-8")
    text += f"x_attack: {python_tag(marker)}\n" if attack == "python tag" else BILLION_LAUGHS
    path = box.root / "hostile-policy.yaml"
    path.write_text(text, encoding="utf-8")
    return ["--policy", str(path)], path


def _hostile_catalog(box: Sandbox, attack: str, marker: Path) -> tuple[list[str], Path]:
    directory = box.root / "hostile-catalog"
    directory.mkdir()
    text = (box.catalog / "catalog.yaml").read_text(encoding="utf-8")
    text += f"x_attack: {python_tag(marker)}\n" if attack == "python tag" else BILLION_LAUGHS
    (directory / "catalog.yaml").write_text(text, encoding="utf-8")
    for pkg in box.catalog.glob("*.tar.gz"):
        os.link(pkg, directory / pkg.name)
    sign_catalog(box, directory)
    return ["--catalog", str(directory)], directory / "catalog.yaml"


YAML_FILES = {"inventory": _hostile_inventory, "playbook": _hostile_playbook, "policy": _hostile_policy,
              "catalog": _hostile_catalog}


@pytest.mark.parametrize("attack, words", [("python tag", "python/object/apply:os.system"),
                                           ("billion laughs", "anchors and aliases")])
@pytest.mark.parametrize("kind", sorted(YAML_FILES))
def test_yaml_with_python_tags_or_alias_bombs_is_refused_and_runs_nothing(sandbox, capsys, kind, attack, words):
    """A python/object tag or a billion-laughs alias chain in any YAML file: plan exits 2 naming the file."""
    marker = sandbox.root / MARKER
    extra, path = YAML_FILES[kind](sandbox, attack, marker)
    was = host_state(sandbox)
    rc, text = plan_refused(sandbox, capsys, *extra,
                            inventory=path if kind == "inventory" else None)
    assert rc == 2
    assert str(path) in text
    assert words.lower() in text.lower()
    assert not marker.exists()
    assert_untouched(sandbox, was)


# ---------------------------------------------------------------- unknown keys and wrong types


def _inventory_edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Sandbox], list[str]]:
    def apply(box: Sandbox) -> list[str]:
        data = inventory_data(box)
        change(data["hosts"]["app-01"])
        path = write_yaml(box.root / "edited-inventory.yaml", data)
        return ["--inventory", str(path)]
    return apply


def _playbook_edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Sandbox], list[str]]:
    def apply(box: Sandbox) -> list[str]:
        spec = playbook_data()
        change(spec)
        use_playbook(box, spec, "edited")
        return []
    return apply


def _policy_edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Sandbox], list[str]]:
    def apply(box: Sandbox) -> list[str]:
        data = yaml.safe_load(box.policy.read_text(encoding="utf-8"))
        change(data)
        # the policy's relative paths (keys/...) are resolved beside it
        path = write_yaml(box.root / "edited-policy.yaml", data)
        return ["--policy", str(path)]
    return apply


def _catalog_edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Sandbox], list[str]]:
    def apply(box: Sandbox) -> list[str]:
        directory = box.root / "edited-catalog"
        directory.mkdir()
        data = yaml.safe_load((box.catalog / "catalog.yaml").read_text(encoding="utf-8"))
        (entry,) = [e for e in data["packages"] if e["version"] == NEW]
        change(entry)
        write_yaml(directory / "catalog.yaml", data)
        for pkg in box.catalog.glob("*.tar.gz"):
            os.link(pkg, directory / pkg.name)
        sign_catalog(box, directory)
        return ["--catalog", str(directory)]
    return apply


def _package_yaml_edit(extra_line: str) -> Callable[[Sandbox], list[str]]:
    def apply(box: Sandbox) -> list[str]:
        directory = box.root / "edited-package"
        directory.mkdir()
        pkg = directory / f"sample-middleware-{NEW}.tar.gz"
        with tarfile.open(box.catalog / pkg.name, "r:gz") as src, tarfile.open(pkg, "w:gz") as dst:
            for m in src:
                data = src.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
                if m.name == "package.yaml":
                    data = data + extra_line.encode() + b"\n" if data is not None else None
                    m = copy.copy(m)
                    m.size = len(data or b"")
                dst.addfile(m, io.BytesIO(data) if data is not None else None)
        write_catalog(box, directory, [catalog_entry(pkg, members=1000, unpacked=1 << 24)])
        return ["--catalog", str(directory)]
    return apply


FILE_ERRORS: dict[str, tuple[Callable[[Sandbox], list[str]], str]] = {
    "inventory unknown key": (_inventory_edit(lambda h: h.update(colour="blue")), "colour: unknown key"),
    "inventory wrong type": (_inventory_edit(lambda h: h.update(port="twenty-two")), "port: expected an integer"),
    "playbook unknown key": (_playbook_edit(lambda s: s["stop"].update(timout="5s")), "stop.timout: unknown key"),
    "playbook wrong type": (_playbook_edit(lambda s: s["observe"].update(probes="all of them")),
                            "observe.probes: expected a list"),
    "policy unknown key": (_policy_edit(lambda p: p.update(colour="blue")), "colour"),
    "policy wrong type": (_policy_edit(lambda p: p["approvals"].update(required="one")), "required"),
    "catalog unknown key": (_catalog_edit(lambda e: e.update(colour="blue")), "colour: unknown key"),
    "catalog wrong type": (_catalog_edit(lambda e: e.update(size="big")), "size: expected an integer"),
    "package.yaml unknown key": (_package_yaml_edit("colour: blue"), "colour: unknown key"),
    "package.yaml wrong type": (_package_yaml_edit("description: [1, 2]"), "description: expected a string"),
}


@pytest.mark.parametrize("case", sorted(FILE_ERRORS))
def test_unknown_key_or_wrong_type_in_a_file_makes_plan_exit_2_naming_the_key(sandbox, capsys, case):
    """An unknown key or a value of the wrong type in any input file: plan exits 2 naming the key; nothing touched."""
    edit, words = FILE_ERRORS[case]
    extra = edit(sandbox)
    was = host_state(sandbox)
    rc, text = plan_refused(sandbox, capsys, *extra)
    assert rc == 2
    assert words in text
    assert_untouched(sandbox, was)


PLAN_ERRORS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown top-level key": (lambda p: p.update(colour="blue"), "colour"),
    "unknown host key": (lambda p: p["hosts"][0].update(colour="blue"), "colour"),
    "target of the wrong type": (lambda p: p.update(target=7042), "target"),
    "host install_dir of the wrong type": (lambda p: p["hosts"][0].update(install_dir=["/", "etc"]), "install_dir"),
}


@pytest.mark.parametrize("case", sorted(PLAN_ERRORS))
def test_approved_plan_with_unknown_key_or_wrong_type_makes_run_exit_2(sandbox, capsys, case):
    """A plan JSON edited with an unknown key or a wrong type cannot be approved, and run refuses it: exit 2."""
    change, words = PLAN_ERRORS[case]
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 0
    good = approve(sandbox, plan)  # an approval of the plan as it was made
    data = json.loads(plan.read_text())
    change(data)
    plan.write_text(json.dumps(data, indent=2))
    was = host_state(sandbox)
    rc, text = refused(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key),
                       "-o", str(sandbox.approvals / "edited.approval"))
    assert rc == 2
    assert words in text and str(plan) in text
    assert not (sandbox.approvals / "edited.approval").exists()
    rc, text = refused(sandbox, capsys, "run", str(plan), "--approval", str(good))
    assert rc == 2
    assert words in text and str(plan) in text
    assert_untouched(sandbox, was)


# ---------------------------------------------------------------- versions carrying shell code


@pytest.mark.parametrize("target", [f"{NEW};touch {{marker}}", f"{NEW}\ntouch {{marker}}", f"{NEW}$(touch {{marker}})",
                                    "`touch {marker}`"])
def test_target_version_with_shell_code_is_refused_as_malformed(sandbox, capsys, target):
    """--to with ';', a newline, $(...) or backticks is a malformed version: plan exits 2 and runs nothing."""
    marker = sandbox.root / "pwned-by-version"
    was = host_state(sandbox)
    rc, text = plan_refused(sandbox, capsys, version=target.format(marker=marker))
    assert rc == 2
    assert "--to" in text
    assert not marker.exists()
    assert_untouched(sandbox, was)


def test_installed_version_with_shell_code_is_refused_by_policy_and_never_reaches_a_shell(sandbox, capsys):
    """A VERSION file reading '7.0.4.1$(touch x)' is an unreadable version: the plan is refused (exit 3), so is
    its approval and its run; a hook that echoes ${current_version} never runs, nothing is touched."""
    marker = sandbox.root / "pwned-by-installed-version"
    version_file = sandbox.install_dir / "lib" / "VERSION"
    version_file.write_text(f"{OLD}$(touch {marker})\n")
    spec = playbook_data()
    spec["hooks"] = {"before_stop": [{"command": "echo ${current_version} > logs/hook-saw-version.txt"}]}
    use_playbook(sandbox, spec, "echoes-version")
    was = host_state(sandbox)
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 3
    (host,) = json.loads(plan.read_text())["hosts"]
    assert [r["rule"] for r in host["decision"]["rules"] if r["status"] == "fail"] == ["installed_version"]
    rc, _ = refused(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key),
                    "-o", str(sandbox.approvals / "refused.approval"))
    assert rc == 3
    rc, text = refused(sandbox, capsys, "run", str(plan))
    assert rc == 3
    assert "unreadable" in text
    assert not marker.exists()
    assert not (sandbox.install_dir / "logs" / "hook-saw-version.txt").exists()
    assert_host_untouched(was, host_state(sandbox))
    assert http_get(sandbox.port, "/health")[0] == 200


# ---------------------------------------------------------------- names, paths and variables carrying shell code


@pytest.mark.parametrize("field, value, words", [
    ("name", "app 01", "host names use letters"),
    ("name", "app-01';touch x;'", "host names use letters"),
    ("name", "$(touch x)", "host names use letters"),
    ("address", "$(touch x)", "address"),
    ("address", "host;touch x", "address"),
    ("user", "root'$(touch x)'", "user"),
])
def test_host_name_address_or_user_with_quotes_spaces_or_shell_code_is_refused(sandbox, capsys, field, value, words):
    """A host name, address or user with spaces, quotes or $(...) makes plan exit 2 naming it; nothing touched."""
    data = inventory_data(sandbox)
    host = data["hosts"]["app-01"]
    if field == "name":
        data["hosts"] = {value: host}
        data["groups"] = {"demo": [value]}
    else:
        host[field] = value
    path = write_yaml(sandbox.root / "hostile-inventory.yaml", data)
    was = host_state(sandbox)
    rc, text = plan_refused(sandbox, capsys, inventory=path)
    assert rc == 2
    assert words in text
    assert str(path) in text
    assert_untouched(sandbox, was)


def test_variable_value_with_shell_code_is_one_literal_word_in_a_playbook_command(sandbox, capsys):
    """An inventory var '$(touch M); echo' used as ${note} in a hook reaches the hook as that literal text: no M."""
    marker = sandbox.root / "pwned-by-variable"
    value = f"$(touch {marker}); echo `touch {marker}` \"quoted\" 'single'"
    data = inventory_data(sandbox)
    data["hosts"]["app-01"]["vars"]["note"] = value
    write_yaml(sandbox.inventory, data)
    spec = playbook_data()
    spec["hooks"] = {"after_install": [{"command": "printf '%s\\n' ${note} > hook-note.txt"}]}
    use_playbook(sandbox, spec, "echoes-note")
    rc, plan = plan_to(sandbox, NEW)
    if os.geteuid() == 0 and sandbox.install_dir.stat().st_uid == 0:
        # root runs the hook: a word with shell code in it is read as a script a program might hand to a shell,
        # and its $(...) cannot be judged: refused at plan (exit 2), nothing run (fix12v, fail closed)
        assert rc == 2 and not plan.exists()
        assert not marker.exists() and not (sandbox.install_dir / "hook-note.txt").exists()
        return
    assert rc == 0
    rc = upgrader(sandbox, "run", str(plan), "--approval", str(approve(sandbox, plan)))
    assert rc == 0
    assert not marker.exists(), "the shell evaluated a variable's value: injection"
    assert (sandbox.install_dir / "hook-note.txt").read_text() == value + "\n"
    assert sandbox.answers() == NEW


WEIRD_DIR = "my app's \"dir\" $(touch pwned-{token}) `touch pwned-{token}`"


def marker_places(tmp_path: Path) -> list[Path]:
    return [tmp_path, Path.cwd(), Path.home(), Path("/"), Path("/root"), Path("/tmp")]


def assert_no_marker(token: str, tmp_path: Path) -> None:
    name = f"pwned-{token}"
    found = [p / name for p in marker_places(tmp_path) if (p / name).exists()]
    found += list(tmp_path.rglob(name))
    assert not found, f"a path was evaluated by a shell: {found}"


@pytest.fixture
def weird_sandbox(tmp_path: Path) -> Iterator[tuple[Sandbox, str]]:
    """A sandbox whose install (7.0.4.1, running) lies in a directory named with spaces, quotes, $() and ``."""
    token = uuid.uuid4().hex[:8]
    box = build_sandbox(tmp_path / "box")
    box.install_dir = tmp_path / "box" / "hosts" / WEIRD_DIR.format(token=token) / "app-01"
    try:
        sample.install(box.install_dir, port=box.port)
        data = inventory_data(box)
        data["hosts"]["app-01"]["install_dir"] = str(box.install_dir)
        write_yaml(box.inventory, data)
        box.start_service()
        yield box, token
    finally:
        if (box.install_dir / "bin" / "stop.sh").is_file():
            box.stop_service()
        kill_processes_under(tmp_path)


def test_install_dir_with_spaces_quotes_and_shell_code_upgrades_and_injects_nothing(weird_sandbox, tmp_path, capsys):
    """An install dir named with spaces, quotes, $(...) and backticks upgrades to 7.0.4.2 (exit 0), no marker."""
    box, token = weird_sandbox
    use_playbook(box, playbook_data(), "quick")
    conf = (box.install_dir / "conf" / "server.conf").read_bytes()
    rc, plan = plan_to(box, NEW)
    assert rc == 0
    approval = approve(box, plan)
    capsys.readouterr()
    rc = upgrader(box, "run", str(plan), "--approval", str(approval), "--json")
    result = json.loads(capsys.readouterr().out)
    assert rc == 0, result
    assert box.answers() == NEW
    assert (box.install_dir / "conf" / "server.conf").read_bytes() == conf
    assert_no_marker(token, tmp_path)


def test_install_dir_with_spaces_quotes_and_shell_code_upgrades_over_ssh_and_injects_nothing(fleet, tmp_path, capsys):
    """Over the real sshd, an install dir named with spaces, quotes, $(...) and backticks upgrades, no marker."""
    f: Fleet = fleet(1)
    token = uuid.uuid4().hex[:8]
    f.hosts[0].stop()
    box = f.box
    box.install_dir = f.hosts[0].install_dir.parent / WEIRD_DIR.format(token=token) / "app-01"
    sample.install(box.install_dir, port=box.port)
    f.write_inventory(install_dir=str(box.install_dir), playbook=f.playbook.stem)
    subprocess.run([str(box.install_dir / "bin" / "start.sh")], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    box.wait_version(OLD, timeout=15)
    rc, plan = plan_to(box, NEW)
    assert rc == 0
    approval = approve(box, plan)
    capsys.readouterr()
    rc = upgrader(box, "run", str(plan), "--approval", str(approval), "--json")
    result = json.loads(capsys.readouterr().out)
    assert rc == 0, result
    assert box.answers() == NEW
    assert_no_marker(token, tmp_path)
    assert_no_marker(token, f.sshd.root / "home")
    subprocess.run([str(box.install_dir / "bin" / "stop.sh")], check=True)


# ---------------------------------------------------------------- two hosts, one install


@pytest.mark.parametrize("spelling", ["{dir}", "{dir}/", "{parent}/./app-01", "{parent}//app-01",
                                      "{parent}/../hosts/app-01", "{link}"])
def test_inventory_with_two_hosts_on_the_same_install_dir_is_refused(sandbox, tmp_path, capsys, spelling):
    """Two hosts whose install dirs are the same directory (spelled differently, or through a symlink): exit 2."""
    link = tmp_path / "same-install"
    link.symlink_to(sandbox.install_dir)
    data = inventory_data(sandbox)
    twin = copy.deepcopy(data["hosts"]["app-01"])
    twin["install_dir"] = spelling.format(dir=sandbox.install_dir, parent=sandbox.install_dir.parent, link=link)
    data["hosts"]["app-02"] = twin
    data["groups"] = {"demo": ["app-01", "app-02"]}
    path = write_yaml(sandbox.root / "twins.yaml", data)
    was = host_state(sandbox)
    rc, text = plan_refused(sandbox, capsys, inventory=path)
    assert rc == 2
    assert "same install dir" in text
    assert "app-01" in text and "app-02" in text
    assert_untouched(sandbox, was)
