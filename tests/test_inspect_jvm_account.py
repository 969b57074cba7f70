"""The JVM's figures are read with the JDK's own tools as the JVM's own account: a real JVM run as `nobody` is read
by the agent (root) through jcmd/jstat run as `nobody`; an agent running as yet another account cannot attach and
says why, giving the JVM's resident memory instead. Real processes, the agent's own functions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from upgrader.hostagent.inspect_perf import jvm_figures

SLEEPER = "public class Sleeper { public static void main(String[] a) throws Exception { Thread.sleep(300000); } }\n"


@pytest.fixture
def nobody_jvm() -> Iterator[int]:
    """A JVM (Java's single-file source launcher) running as nobody, -Xmx48m, its source where nobody may read it
    (pytest's own temporary directories are root's alone)."""
    where = Path(tempfile.mkdtemp(prefix="inspect-jvm-"))
    where.chmod(0o755)
    src = where / "Sleeper.java"
    src.write_text(SLEEPER)
    src.chmod(0o644)
    proc = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "java", "-Xmx48m",
                             "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", str(src)], cwd="/tmp",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("Threads:") and int(line.split()[1]) > 5
                      for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()):
            assert proc.poll() is None and time.monotonic() < deadline, "the JVM did not start"
            time.sleep(0.2)
        time.sleep(1)  # the launcher compiles the source, then main() sleeps
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(where)


def _argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_jcmd_runs_as_the_jvms_account_and_another_account_is_told_why(nobody_jvm: int) -> None:
    pid = nobody_jvm
    assert os.geteuid() == 0 and Path(f"/proc/{pid}").stat().st_uid == 65534
    figs = jvm_figures(pid, _argv(pid))
    assert figs["heap_max"]["value"] == 48 << 20
    assert figs["heap_used"]["source"] == f"jcmd {pid} GC.heap_info" and figs["heap_used"]["value"] > 0, figs
    assert figs["full_gc"]["source"] == f"jstat -gcutil {pid}" and figs["full_gc"]["value"] >= 0
    # the same functions in an agent running as daemon (uid 1): no attach, the reason, the RSS instead
    code = ("import json, sys; from upgrader.hostagent.inspect_perf import jvm_figures; "
            f"print(json.dumps(jvm_figures({pid}, json.loads(sys.argv[1]))))")
    done = subprocess.run(["setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups", sys.executable, "-c", code,
                           json.dumps(_argv(pid))], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(__file__).resolve().parent.parent))
    assert done.returncode == 0, done.stderr[-2000:]
    other = json.loads(done.stdout)
    assert other["heap_used"]["value"] is None
    assert other["heap_used"]["error"].startswith("the JVM runs as uid 65534 and the agent as uid 1: jcmd can attach "
                                                  "only as the JVM's own account")
    assert "VmRSS" in other["heap_used"]["error"] and other["gc_time_pct"]["value"] is None
