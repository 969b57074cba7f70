"""The command line as users meet it: exit codes, JSON, --help of every command, and bad input without tracebacks."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from upgrader.cli import build_parser, main
from upgrader.cli.commands.demo import Sandbox, build_sandbox
from upgrader.core.playbook import shipped_playbooks_dir

HEAVY = ("rich", "yaml", "fabric", "invoke", "paramiko")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def upgrader_process(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real program in its own process, as a shell would start it."""
    return subprocess.run([sys.executable, "-m", "upgrader", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


# ---------------------------------------------------------------- upgrader versions check


@pytest.mark.parametrize("argv, rc, failing", [
    (["7.0.4.1", "7.0.4.2"], 0, set()),
    (["7.0.4.1", "7.0.5.0"], 0, set()),
    (["V7.0.4.9", "7.0.4.9_M1"], 0, set()),
    (["7.0.4.1", "7.1.0.0"], 3, {"free_levels"}),
    (["7.0.4.2", "7.0.4.1"], 3, {"newer"}),
    (["7.0.4.2", "7.0.4.2"], 3, {"newer"}),
    (["7.0.4.9", "7.0.C.6"], 3, {"newer", "same_line"}),
    (["7.0.4.1", "7.0.4.8", "--changes", "external_interface"], 3, {"declared_changes"}),
    (["7.0.4.1", "7.0.4.3", "--kind", "patch", "--requires", ">=7.0.4.2, <7.0.4.3"], 3, {"patch_requires"}),
    (["7.0.4.2", "7.0.4.3", "--kind", "patch", "--requires", ">=7.0.4.1, <7.0.4.3"], 0, set()),
])
def test_versions_check_exit_code_and_json_decision(capsys, argv, rc, failing):
    """`versions check --json` exits 0 when allowed and 3 when refused, listing each rule with status and reason."""
    got, out, _ = cli(capsys, "versions", "check", *argv, "--json")
    assert got == rc
    data = json.loads(out)
    assert data["allowed"] is (rc == 0)
    assert {r["rule"] for r in data["rules"] if r["status"] == "fail"} == failing
    assert all(r["reason"].strip() for r in data["rules"])
    assert data["current"] and data["target"]


def test_versions_check_without_json_explains_in_words(capsys):
    """The human output of a refusal names the failing rule's reason in plain words."""
    rc, out, _ = cli(capsys, "versions", "check", "7.0.4.1", "7.1.0.0")
    assert rc == 3
    assert "7.1" in out and "level 2" in out


@pytest.mark.parametrize("argv, which", [
    (["7.x", "7.0.4.2"], "CURRENT"),
    (["7.0.4.1", "latest"], "TARGET"),
    (["7.0.4.1", ""], "TARGET"),
    (["7.0.4.1", "7.0.4.2.1.9"], "TARGET"),
])
def test_versions_check_malformed_version_exits_2_saying_what_a_version_looks_like(capsys, argv, which):
    """A malformed version exits 2 naming the argument and showing what a valid version looks like."""
    rc, out, err = cli(capsys, "versions", "check", *argv)
    assert rc == 2
    assert which in err
    assert "7.0.4.9" in err
    assert "Traceback" not in err


def test_versions_check_malformed_requires_range_exits_2(capsys):
    """A --requires range that is not a range exits 2 naming --requires."""
    rc, _, err = cli(capsys, "versions", "check", "7.0.4.1", "7.0.4.3", "--kind", "patch", "--requires", "soon")
    assert rc == 2
    assert "--requires" in err


def test_versions_check_unknown_change_kind_exits_2_listing_known_ones(capsys):
    """An unknown --changes kind exits 2 and lists the kinds that exist."""
    rc, _, err = cli(capsys, "versions", "check", "7.0.4.1", "7.0.4.2", "--changes", "everything")
    assert rc == 2
    assert "external_interface" in err


# ---------------------------------------------------------------- --help of every command


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (command path, parser) pair reachable from parser, groups included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(build_parser()))


def test_every_command_of_product_contract_is_there():
    """The commands PRODUCT.md names and the CLI implements today all have a parser (a floor, not a ceiling)."""
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"demo", "versions check", "plan", "approve", "run", "rollback", "package build",
            "package verify"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) or "upgrader" for p, _ in COMMANDS])
def test_help_of_every_command_exits_0_and_mentions_its_options(capsys, path):
    """`upgrader ... --help` exits 0 and its text mentions every option and argument of that command."""
    parser = dict(COMMANDS)[path]
    rc, out, err = cli(capsys, *path, "--help")
    assert rc == 0
    assert err == ""
    assert out.startswith("usage: upgrader")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name in action.choices:
                assert name in out, f"subcommand {name} missing from {' '.join(path)} --help"
        elif action.option_strings:
            for opt in action.option_strings:
                assert opt in out, f"{opt} missing from {' '.join(path)} --help"
        else:
            assert (action.metavar or action.dest) in out


def test_help_does_not_import_heavy_libraries(tmp_path):
    """`upgrader --help` and every command's --help import none of rich, yaml, fabric, invoke, paramiko."""
    paths = [list(p) for p, _ in COMMANDS]
    code = (
        "import contextlib, io, json, sys\n"
        "from upgrader.cli import main\n"
        f"for path in {paths!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main([*path, '--help']) == 0, path\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    loaded = json.loads(res.stdout)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == []
    assert "upgrader.cli" in loaded


def test_help_as_a_process_does_not_import_heavy_libraries(tmp_path):
    """`python -X importtime -m upgrader --help` shows no import of rich, yaml, fabric, invoke or paramiko."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "upgrader", "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert "usage: upgrader" in res.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in res.stderr.splitlines()
                if line.startswith("import time:")}
    assert "upgrader" in imported
    assert imported.isdisjoint(HEAVY)


# ---------------------------------------------------------------- bad input: exit 2, file and key, no traceback


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    """A sandbox's files (catalog, keys, policy, inventory); its service is never started here."""
    return build_sandbox(tmp_path / "box")


def plan_process(box: Sandbox, inventory: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return upgrader_process("--home", str(box.root), "plan", "--inventory", str(inventory), "--to", "7.0.4.2",
                            "--catalog", str(box.catalog), "-o", str(cwd / "plan.json"), cwd=cwd)


def assert_bad_input(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert res.stderr.startswith("upgrader: error: ") or res.stderr.startswith("usage: ")
    for w in words:
        assert w in res.stderr, f"{w!r} not in {res.stderr!r}"


def test_missing_inventory_file_exits_2_naming_it(box, tmp_path):
    """plan with an inventory that does not exist exits 2 naming the file, without a traceback."""
    missing = tmp_path / "no-such-inventory.yaml"
    res = plan_process(box, missing, tmp_path)
    assert_bad_input(res, str(missing), "not found")
    assert not (tmp_path / "plan.json").exists()


def test_inventory_yaml_syntax_error_exits_2_naming_file_and_line(box, tmp_path):
    """An inventory that is not YAML exits 2 naming the file and the line, without a traceback."""
    inv = tmp_path / "inventory.yaml"
    inv.write_text("format: 1\nhosts:\n  app-01: {address: local, install_dir: x\n")
    res = plan_process(box, inv, tmp_path)
    assert_bad_input(res, str(inv), "line ", "invalid YAML")


def test_unknown_key_in_inventory_exits_2_naming_file_and_key(box, tmp_path):
    """An unknown key in a host entry exits 2 naming the file and the key path, without a traceback."""
    inv = tmp_path / "inventory.yaml"
    inv.write_text(box.inventory.read_text().replace("    product: sample-middleware\n",
                                                     "    product: sample-middleware\n    colour: blue\n"))
    res = plan_process(box, inv, tmp_path)
    assert_bad_input(res, str(inv), "hosts.app-01.colour", "unknown key")


def test_wrong_type_in_inventory_exits_2_naming_file_and_key(box, tmp_path):
    """A port that is not a number exits 2 naming the file and hosts.<name>.port."""
    inv = tmp_path / "inventory.yaml"
    inv.write_text(box.inventory.read_text().replace("    address: local\n", "    address: local\n    port: ssh\n"))
    res = plan_process(box, inv, tmp_path)
    assert_bad_input(res, str(inv), "hosts.app-01.port", "integer")


def test_wrong_type_in_playbook_exits_2_naming_file_and_key(box, tmp_path):
    """A playbook with backup.keep: 'three' exits 2 naming the playbook file and backup.keep."""
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())
    spec["backup"]["keep"] = "three"
    playbook = box.root / "playbooks" / "my-playbook.yaml"  # the operator's playbooks: HOME/playbooks
    playbook.parent.mkdir(exist_ok=True)
    playbook.write_text(yaml.safe_dump(spec))
    inv = tmp_path / "inventory.yaml"
    inv.write_text(box.inventory.read_text().replace("    playbook: sample-middleware\n",
                                                     "    playbook: my-playbook\n"))
    res = plan_process(box, inv, tmp_path)
    assert_bad_input(res, str(playbook), "backup.keep", "integer")


def test_bad_duration_in_playbook_exits_2_naming_file_and_key(box, tmp_path):
    """A playbook with stop.timeout: sixty exits 2 naming the playbook file, stop.timeout and a valid form."""
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())
    spec["stop"]["timeout"] = "sixty"
    playbook = box.root / "playbooks" / "my-playbook.yaml"  # the operator's playbooks: HOME/playbooks
    playbook.parent.mkdir(exist_ok=True)
    playbook.write_text(yaml.safe_dump(spec))
    inv = tmp_path / "inventory.yaml"
    inv.write_text(box.inventory.read_text().replace("    playbook: sample-middleware\n",
                                                     "    playbook: my-playbook\n"))
    res = plan_process(box, inv, tmp_path)
    assert_bad_input(res, str(playbook), "stop.timeout", "'sixty'", "30s")


def test_plan_file_that_is_not_json_exits_2(tmp_path):
    """`run` of a file that is not a plan exits 2 naming it, without a traceback."""
    plan = tmp_path / "plan.json"
    plan.write_text("{not json")
    res = upgrader_process("--home", str(tmp_path / "home"), "run", str(plan), cwd=tmp_path)
    assert_bad_input(res, str(plan))


def test_package_verify_of_missing_file_exits_2(tmp_path):
    """`package verify` of a file that does not exist exits 2 naming it."""
    res = upgrader_process("package", "verify", str(tmp_path / "nope.tar.gz"), cwd=tmp_path)
    assert_bad_input(res, str(tmp_path / "nope.tar.gz"))


def test_unknown_command_and_missing_argument_exit_2_with_usage(tmp_path):
    """An unknown command or a missing required option exits 2 with a usage line, without a traceback."""
    for argv in (["frobnicate"], ["plan", "--to", "7.0.4.2"], ["versions", "check", "7.0.4.1"]):
        res = upgrader_process(*argv, cwd=tmp_path)
        assert res.returncode == 2, argv
        assert "usage: upgrader" in res.stderr
        assert "Traceback" not in res.stderr


def test_malformed_version_as_a_process_exits_2_without_traceback(tmp_path):
    """`upgrader versions check 7.x 7.0.4.2` in its own process exits 2 with one clear message."""
    res = upgrader_process("versions", "check", "7.x", "7.0.4.2", cwd=tmp_path)
    assert_bad_input(res, "CURRENT", "7.0.4.9")


# ---------------------------------------------------------------- output paths that cannot be written


def test_package_build_into_a_directory_exits_2_naming_it(tmp_path):
    """`package build -o DIR` (an existing directory) exits 2 naming it, instead of crashing."""
    (tmp_path / "src" / "lib").mkdir(parents=True)
    (tmp_path / "src" / "lib" / "VERSION").write_text("1.0\n")
    (tmp_path / "out").mkdir()
    res = upgrader_process("package", "build", str(tmp_path / "src"), "--product", "x", "--version", "1.0",
                           "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert_bad_input(res, str(tmp_path / "out"), "directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_package_build_of_a_special_file_exits_2_and_leaves_no_partial_package(tmp_path):
    """A fifo in the source tree exits 2 naming it, and no half-written .part file is left beside the output."""
    import os

    (tmp_path / "src" / "lib").mkdir(parents=True)
    os.mkfifo(tmp_path / "src" / "lib" / "pipe")
    res = upgrader_process("package", "build", str(tmp_path / "src"), "--product", "x", "--version", "1.0",
                           "-o", str(tmp_path / "x-1.0.tar.gz"), cwd=tmp_path)
    assert_bad_input(res, "lib/pipe", "only regular files")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_plan_output_into_a_directory_exits_2_naming_it(sandbox, tmp_path):
    """`plan -o DIR` (an existing directory) exits 2 naming it, instead of an internal error. (The service runs:
    a plan proves its health probes on the running version first.)"""
    box = sandbox
    (tmp_path / "plans").mkdir()
    res = upgrader_process("--home", str(box.root), "plan", "--inventory", str(box.inventory), "--to", "7.0.4.2",
                           "--catalog", str(box.catalog), "-o", str(tmp_path / "plans"), cwd=tmp_path)
    assert_bad_input(res, str(tmp_path / "plans"))


def test_approve_output_into_a_directory_exits_2_naming_it(sandbox, tmp_path):
    """`approve PLAN -o DIR` (an existing directory) exits 2 naming it, instead of an internal error."""
    box = sandbox
    plan = tmp_path / "plan.json"
    res = upgrader_process("--home", str(box.root), "plan", "--inventory", str(box.inventory), "--to", "7.0.4.2",
                           "--catalog", str(box.catalog), "--key", str(box.requester_key), "-o", str(plan),
                           cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (tmp_path / "approvals").mkdir()
    res = upgrader_process("--home", str(box.root), "approve", str(plan), "--key", str(box.engineer_key),
                           "-o", str(tmp_path / "approvals"), cwd=tmp_path)
    assert_bad_input(res, str(tmp_path / "approvals"))


def test_keys_generate_into_an_unusable_directory_exits_2_naming_it(tmp_path):
    """`keys generate NAME --dir PATH` where PATH is a file exits 2 naming it, instead of an internal error."""
    (tmp_path / "afile").write_text("")
    res = upgrader_process("keys", "generate", "eng", "--dir", str(tmp_path / "afile" / "keys"), cwd=tmp_path)
    assert_bad_input(res, str(tmp_path / "afile"))
