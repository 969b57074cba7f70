"""Loaded by every Python child process of the tests (this directory is on their PYTHONPATH): when a
test set a fault variable, register the suite's fault hooks (see upgrader_test_faults.py)."""

import os

if os.environ.get("UPGRADER_FAULT_KILL_AT") or os.environ.get("UPGRADER_FAULT_PAUSE_AT") or \
        os.environ.get("UPGRADER_FAULT_EXCHANGE_AT") or os.environ.get("UPGRADER_FAULT_STOP_AT") or \
        os.environ.get("UPGRADER_FAULT_CUT_AT") or os.environ.get("UPGRADER_FAULT_TRACE"):
    try:
        import upgrader_test_faults
    except ImportError:  # pragma: no cover - a python that cannot see tests/plugin
        pass
    else:
        try:
            upgrader_test_faults.install()
        except ImportError:  # a python without upgrader (e.g. the one that runs the host agent)
            pass
