"""Inspections kept over time: the second inspection of the real sample shows what changed since the first (a kernel
parameter set in between, a config file edited, error lines of the last day), previous beside new, in English and Chinese; --compare names the
inspection to compare with; a bad --compare file is refused before any host is asked."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import upgrader

from upgrader.cli.commands.demo import Sandbox


def _inspect_in_netns(box: Sandbox, somaxconn: int, *extra: str) -> dict:
    """The shipped CLI in a network namespace of its own, whose net.core.somaxconn is set first (a per-namespace
    kernel parameter: the machine's own is never touched)."""
    cmd = (f"echo {somaxconn} > /proc/sys/net/core/somaxconn && exec {sys.executable} -m upgrader "
           f'--home {box.root} inspect --install-dir {box.install_dir} --var port={box.port} --json "$@"')
    done = subprocess.run(["unshare", "-n", "sh", "-c", cmd, "sh", *extra], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_a_changed_kernel_parameter_and_config_file_show_beside_their_previous_values(sandbox: Sandbox,
                                                                                      capsys) -> None:
    box = sandbox
    first = _inspect_in_netns(box, 4096)["hosts"][0]
    assert first["previous"] is None and first["changes"] == []
    kept_first = Path(first["kept"])
    assert kept_first.parent.parent == box.root / "inspections" and kept_first.suffix == ".json"
    with open(box.install_dir / "conf" / "server.conf", "a") as f:
        f.write("# tuned by the site\n")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")  # the sample's own line format, local time
    with open(box.install_dir / "logs" / "server.log", "a") as f:
        f.write(f"{stamp} ERROR pool exhausted\n{stamp} ERROR pool exhausted\n")
    second = _inspect_in_netns(box, 8192)["hosts"][0]
    assert second["previous"]["file"] == str(kept_first)
    by = {(c["area"], c["name"]): c for c in second["changes"]}
    kernel = by[("kernel", "net.core.somaxconn")]
    assert (kernel["previous"], kernel["new"]) == ("4096", "8192")
    assert kernel["message_zh"] == "内核参数 net.core.somaxconn 已变化：4096 -> 8192"
    config = by[("config", "conf/server.conf")]
    assert config["previous"] != config["new"] and "was edited" in config["message"] and "已被修改" in config["message_zh"]
    errors = by[("errors", "log_errors_per_day")]
    assert (errors["previous"], errors["new"]) == (0, 2) and errors["message_zh"] == "日志每天的错误行：0 -> 2"
    assert [p["disk_used_pct"] is not None for p in second["trend"]] == [True, True]
    assert len(list(kept_first.parent.glob("*.json"))) == 2
    # the table says it too, in Chinese
    capsys.readouterr()
    assert upgrader(box, "inspect", "--install-dir", str(box.install_dir), "--var", f"port={box.port}",
                    "--compare", str(kept_first), "--lang", "zh") == 0
    out = capsys.readouterr().out
    assert "已变化" in out and "配置文件 conf/server.conf 已被修改" in out


@pytest.mark.parametrize("text", [None, "{not json"])
def test_a_missing_or_unreadable_compare_file_is_bad_input_and_nothing_is_kept(sandbox: Sandbox, capsys,
                                                                               tmp_path: Path, text: str | None) -> None:
    box = sandbox
    bad = tmp_path / "previous.json"
    if text is not None:
        bad.write_text(text)
    capsys.readouterr()
    assert upgrader(box, "inspect", "--install-dir", str(box.install_dir), "--compare", str(bad)) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "--compare" in err and "Traceback" not in err
    assert not (box.root / "inspections").exists()
