"""What the service account controls is read with a bound, and a cut says so: played through the shipped CLI on the
real sample middleware.

1 attack14r16 #3: an install of more than 200,000 files (manifests.MAX_ENTRIES; the service account can write them)
  made a 441 MB root agent and a 91 s backup. ``plan`` and a run's preflight now refuse it (exit 2) before stop,
  naming the install and the directory that holds the most, and what to do; nothing on the host changes. The same
  files under a preserved data directory are the service's data, not the product's: the plan is made.
2 The "[… N bytes left out …]" marker of a command's output reached nobody: the agent's and the controller's
  tails kept only the end. A hook that prints 1 MiB now leaves, in the audit log, a tail whose first line says how
  many bytes were left out, and that count is every byte the hook printed but the tail.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from conftest import approve, plan_to
from hoststate import assert_host_untouched, host_state
from test_host_paths import last_result, last_run_id, run_cli
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.playbook import shipped_playbooks_dir
from upgrader.hostagent.manifests import MAX_ENTRIES

OLD = "7.0.4.1"


def empty_files(directory: Path, count: int) -> None:
    """``count`` empty files in ``directory`` (made), as the service account could leave them."""
    directory.mkdir(parents=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(count):
            os.close(os.open("s%07d" % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def whole(box: Sandbox) -> Any:
    return host_state(box.install_dir, answers=box.answers, home=box.root)


def test_an_install_of_too_many_files_is_refused_by_plan_and_by_the_run_before_stop(sandbox, capsys) -> None:
    """More than MAX_ENTRIES empty files in lib/sessions: ``plan`` exits 2 naming the install, lib/sessions and the
    preserve setting, nothing on the host touched. A plan made before the files came is refused by its run's
    preflight (exit 2, outcome bad_input): the service never stopped (same pid and start time, still 7.0.4.1), the
    host as it was but the refused run's own record. Moved under data/ (preserved as kind data), they no longer
    count: the plan is made."""
    box = sandbox
    rc, early = plan_to(box, "7.0.4.2")
    assert rc == 0
    approval = approve(box, early)
    sessions = box.install_dir / "lib" / "sessions"
    empty_files(sessions, MAX_ENTRIES + 1)
    before = whole(box)

    rc, text = run_cli(box, capsys, "plan", "--inventory", str(box.inventory), "--to", "7.0.4.2", "--catalog",
                       str(box.catalog), "--key", str(box.requester_key), "-o", str(box.plans / "late.json"))
    said = " ".join(text.split())
    assert rc == 2, text[-3000:]
    assert f"{box.install_dir} holds more than {MAX_ENTRIES} files, directories and links" in said, said[-3000:]
    most = re.search(re.escape(f"the most are in {sessions} (at least ") + r"(\d+)\)", said)
    assert most and int(most.group(1)) > MAX_ENTRIES * 0.9, said[-3000:]  # all but the sample's own few files
    assert "preserve list as kind data" in said and "refused before stop" in said, said[-3000:]
    assert not (box.plans / "late.json").exists()
    assert_host_untouched(before, whole(box), "plan")

    rc, text = run_cli(box, capsys, "run", str(early), "--approval", str(approval))
    said = " ".join(text.split())
    assert rc == 2, text[-3000:]
    assert f"the most are in {sessions}" in said, said[-3000:]
    (host,) = last_result(box)["hosts"]
    assert host["outcome"] == "bad_input", host
    assert "stop" not in [p["phase"] for p in host["phases"]]
    assert box.answers() == OLD
    assert_host_untouched(before, whole(box), "run", run_record=last_run_id(box))

    os.rename(sessions, box.install_dir / "data" / "sessions")  # the service's data: preserved, moved, not listed
    rc, _ = plan_to(box, "7.0.4.2")
    assert rc == 0


def _playbook_with_a_loud_hook(box: Sandbox, command: str) -> None:
    """The sample playbook, in the operator's playbooks, with an after_install hook ``command``."""
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())
    spec["hooks"] = {"after_install": [{"command": command}]}
    (box.root / "playbooks").mkdir()
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def _outputs(value: object) -> list[str]:
    """Every ``stdout`` string anywhere in a JSON value."""
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == "stdout" and isinstance(v, str)] + \
            [s for v in value.values() for s in _outputs(v)]
    if isinstance(value, list):
        return [s for v in value for s in _outputs(v)]
    return []


def test_a_hooks_output_cut_says_how_many_bytes_were_left_out(sandbox, capsys) -> None:
    """An after_install hook prints 1 MiB of lines, then ``last-line``. The run commits; the audit log's record of
    the hook keeps the end of its output, whose first line is "[… N bytes left out …]", N being every byte the hook
    printed but the ones kept (the agent's 64 KiB head and tail, its 16,000-character tail and the controller's
    4,000 and 500 in between all counted)."""
    printed = (1 << 20) + len("last-line\n")
    _playbook_with_a_loud_hook(sandbox, "yes 'a line of the hook output' | head -c 1048576; echo last-line")
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == 0
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approve(sandbox, plan)))
    assert rc == 0, text[-3000:]
    log = (sandbox.root / "audit" / "audit.jsonl").read_text()
    records = [json.loads(line) for line in log.splitlines()
               if '"phase":"hook:after_install"' in line and '"event":"phase_finished"' in line]
    outputs = [s for r in records for s in _outputs(r)]
    assert outputs, records
    for out in outputs:
        first, kept = out.split("\n", 1)
        found = re.fullmatch(r"\[… (\d+) bytes left out …\]", first)
        assert found, out[:300]
        assert kept.endswith("last-line\n") or kept.endswith("last-line"), out[-300:]
        assert int(found.group(1)) + len(kept.encode()) in (printed, printed - 1), (found.group(1), len(kept))


def chain(top: Path, depth: int) -> Path:
    """``depth`` nested directories ``d/d/d/...`` under ``top`` (made from descriptors: the path is too long for
    one string), as the service account could leave them; returns ``top``."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        os.close(os.open("last", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return top


def test_a_directory_chain_deeper_than_the_walks_go_is_refused_before_stop_and_removed_after(sandbox, capsys) -> None:
    """attack14r18 #2: a chain of 1,100 nested directories (the service account's) crashed the agent's recursive
    walks: ``plan`` and preflight ended with exit 5 instead of a refusal, and the cleanup after a rollback could not
    delete a failed tree, so the host stayed locked. Now ``plan`` refuses it (exit 2, "more than 256 directories
    deep", the install named; 300 levels here), nothing touched; and the agent's removal takes a chain of any depth
    (3,000 here)."""
    from upgrader.hostagent.mounts import remove_tree

    box = sandbox
    chain(box.install_dir / "lib" / "deep", 300)  # beyond MAX_DEPTH (the attacker used 1,100; the test's own
    # path-based record of the host state recurses too)
    before = whole(box)
    rc, text = run_cli(box, capsys, "plan", "--inventory", str(box.inventory), "--to", "7.0.4.2", "--catalog",
                       str(box.catalog), "--key", str(box.requester_key), "-o", str(box.plans / "deep.json"))
    said = " ".join(text.split())
    assert rc == 2, text[-3000:]
    assert f"{box.install_dir} is more than 256 directories deep" in said, said[-3000:]
    assert not (box.plans / "deep.json").exists()
    assert_host_untouched(before, whole(box), "plan")

    elsewhere = chain(box.root / "failed-tree", 3000)
    remove_tree(str(elsewhere))
    assert not elsewhere.exists() and not any(p.name.startswith(".upgrader-deep") for p in box.root.iterdir())


def test_a_left_out_marker_of_thousands_of_digits_in_a_commands_output_is_only_text() -> None:
    """attack14r18 #1: the service account printed "[… <5,000 digits> bytes left out …]" into its log and a hook
    showed it: int() of that many digits raised in the agent's and the controller's tails after stop (the run ended
    exit 5, the service down). A marker is read back only with at most 12 digits; a longer one is the output's text."""
    from upgrader.hostagent.processes import cut_tail

    forged = "[… " + "9" * 5000 + " bytes left out …]\n"
    text = "start\n" + forged + "x" * 100 + "\nend\n"
    tail = cut_tail(text, 50)
    gone = text[:len(text) - len(tail.split("\n", 1)[1])]
    assert tail.startswith("[… %d bytes left out …]\n" % len(gone.encode("utf-8"))), tail[:200]
    assert tail.endswith("\nend\n")
