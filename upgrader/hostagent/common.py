"""What every part of the host agent shares: its format number, the fault point, the error it reports."""

import os
import signal


AGENT_FORMAT = 1
DRIFT_LISTED = 20  # hand-changed files named in a reply (the count is always given)
CHUNK = 1 << 20


def test_kill(req, point):
    """A fault point: die here, as a power cut would, when the request's ``_test_kill`` names it. The controller
    never sets that field; only the test suite's fault plugin (tests/plugin) makes it add one."""
    if req.get("_test_kill") == point:
        os.kill(os.getpid(), signal.SIGKILL)


class AgentError(Exception):
    def __init__(self, message, kind="failed", **data):
        Exception.__init__(self, message)
        self.kind = kind
        self.data = data
