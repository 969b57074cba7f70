"""Nothing outside the install dir, round 11: the leftovers of the earlier rounds.

1. After a stop timeout the agent signals only the service's own process: the pid the pid file names, running as the
   pid file's owner and started before the pid file was written, or a match of the playbook's process selector. A
   root process that merely sits in the install dir or has one of its files open (root's ``tail -f logs/x.log``) is
   never signalled: the run needs a person, naming the pid.

Every mount is made inside the test process's own mount namespace (the suite runs under ``unshare -m``) and undone.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import approve, plan_to
from hoststate import assert_host_untouched
from test_host_paths import last_run_id, run_cli
from trust_support import host_state
from upgrader.cli.commands.demo import Sandbox

OLD, NEW = "7.0.4.1", "7.0.4.2"


# ------------------------------------------------------------------ 1: escalation hits the service's own process only


@pytest.mark.parametrize("writer", ["service-account", "root-stale"])
def test_1_stop_never_signals_roots_tail_of_an_install_log(sandbox: Sandbox, writer: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Root runs ``tail -f INSTALL/logs/server.log`` with its working directory in the install (SIGTERM ignored, as
    a shell's `trap '' TERM` leaves it). The pid file names it, written either by the service account (daemon owns
    run/) or, root's own but stale, an hour before that tail started. The run's stop asks bin/stop.sh, waits the
    stop timeout and then sends no signal: the run needs a person, naming the pid; the tail is alive, the service
    still answers the old version, and the whole host is as it was (the lock aside)."""
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 0
    approval = approve(sandbox, plan)
    log = sandbox.install_dir / "logs" / "server.log"
    victim = subprocess.Popen(["sh", "-c", "trap '' TERM; exec tail -f %s" % log], cwd=sandbox.install_dir,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = sandbox.install_dir / "run"
        pid_file = run / "server.pid"
        if writer == "service-account":
            subprocess.run(["chown", "-R", "daemon:daemon", str(run)], check=True)
            pid_file.write_text("%d\n" % victim.pid)  # what daemon writes in its own run/
            assert pid_file.stat().st_uid == pwd_uid("daemon")
        else:
            pid_file.write_text("%d\n" % victim.pid)
            hour_ago = time.time() - 3600
            os.utime(pid_file, (hour_ago, hour_ago))
        deadline = time.monotonic() + 10
        while os.readlink("/proc/%d/exe" % victim.pid).endswith("/sh") and time.monotonic() < deadline:
            time.sleep(0.05)  # until the shell has become tail
        before = host_state(sandbox)
        rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
        assert rc != 0, text
        assert "pid %d" % victim.pid in text and "No signal was sent" in text, text
        assert ("pid file's writer" in text) if writer == "service-account" else ("after the pid file" in text), text
        assert victim.poll() is None  # alive: neither SIGTERM nor SIGKILL reached it
        assert sandbox.answers() == OLD
        after = host_state(sandbox)
        assert (after.product, after.pid, after.service, after.version) == \
            (before.product, before.pid, before.service, OLD)
    finally:
        victim.kill()
        victim.wait()


def pwd_uid(name: str) -> int:
    import pwd
    return pwd.getpwnam(name).pw_uid

