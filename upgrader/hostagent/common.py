"""What every part of the host agent shares: its format number, the fault point, the error it reports."""

import os
import signal


AGENT_FORMAT = 1
DRIFT_LISTED = 20  # hand-changed files named in a reply (the count is always given)
CHUNK = 1 << 20
#: how deep a walk of an install goes (directories below its root): a deeper tree is refused (too_many_files), not
#: walked -- one level is a Python frame and an open descriptor, and the service account can make a chain of
#: thousands (a real product is a few dozen deep at most). remove_at removes deeper trees all the same.
MAX_DEPTH = 256


def too_deep(root, rel):
    """The refusal of a tree deeper than MAX_DEPTH (``rel``: the directory found that deep)."""
    return AgentError("%s is more than %d directories deep (at %s/%s…): refused, not walked; a product is a few "
                      "dozen deep at most: remove that chain, or move what it holds out of the install dir"
                      % (root, MAX_DEPTH, root, rel[:200]), "too_many_files", path=root)


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
