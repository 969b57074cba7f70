"""attack20r17 M2: the lock that keeps a resume or rollback from running beside the run it continues is a 0600 file of
the operator's in the run directory, not the directory itself: another account that can read the run directory (a
0755 home) holding a lock on the directory no longer refuses every resume and rollback of the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from upgrader import api
from upgrader.core.errors import InputError

NOBODY = 65534

HOLD = "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); " \
       "print('held', flush=True); time.sleep(30)"


@pytest.mark.skipif(os.geteuid() != 0, reason="plays another account: needs root (CI runs as root)")
def test_another_account_holding_the_run_directory_blocks_nothing() -> None:
    """nobody holds a lock on the run directory (readable to all, as under a 0755 home): the run's own lock is still
    taken; a second command of the operator's is refused as before; nobody cannot open the 0600 lock file."""
    home = Path(tempfile.mkdtemp(prefix="run-lock-", dir="/tmp"))
    home.chmod(0o755)
    run_dir = home / "runs" / "20261205T100000Z-abcdef"
    run_dir.mkdir(parents=True, mode=0o755)
    (home / "runs").chmod(0o755)
    run_dir.chmod(0o755)
    holder = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
                               "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        fd = api._hold_run(run_dir, "20261205T100000Z-abcdef")  # the directory's lock is nobody's concern now
        try:
            lock = run_dir / ".lock"
            assert lock.stat().st_mode & 0o777 == 0o600 and lock.stat().st_uid == os.geteuid()
            with pytest.raises(InputError, match="still running in another upgrader process"):
                api._hold_run(run_dir, "20261205T100000Z-abcdef")  # the operator's own second command still waits
            tried = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                    sys.executable, "-c", HOLD, str(lock)], capture_output=True, text=True, timeout=20)
            assert tried.returncode != 0 and "Permission denied" in tried.stderr, tried
        finally:
            os.close(fd)
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(home)
