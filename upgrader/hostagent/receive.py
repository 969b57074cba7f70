"""Packages sent to the host once, kept by digest and checked again before each use."""

import os

from .common import AgentError, test_kill
from .files import sha256_file
from .state import Paths, check_state_dir, ensure_state_dir


def op_receive_check(req):
    """Is the package already on the host with the right digest? (so it is not sent again)"""
    paths = Paths(req)
    check_state_dir(paths)
    path = os.path.join(paths.packages, req["sha256"] + ".tar.gz")
    # a cached package is used only with its digest checked again, on every run: a copy changed on the host
    # since it was received (same size or not) is thrown away and sent again
    result = {"present": False, "path": path, "upload_to": path + ".part"}
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        raise AgentError("%s is not a plain file (a link?); remove it" % path, "unsafe_path", path=path)
    if os.path.isfile(path):
        if os.path.getsize(path) == req["size"] and sha256_file(path) == req["sha256"]:
            return {"present": True, "path": path}
        os.unlink(path)
        result["replaced"] = "the cached copy no longer had sha256 %s; it was removed" % req["sha256"]
    ensure_state_dir(paths.state)  # made with the agent's marker
    os.makedirs(paths.packages, 0o700, exist_ok=True)
    return result


def op_receive_commit(req):
    paths = Paths(req)
    path = os.path.join(paths.packages, req["sha256"] + ".tar.gz")
    part = path + ".part"
    digest = sha256_file(part)
    if digest != req["sha256"] or os.path.getsize(part) != req["size"]:
        os.unlink(part)
        raise AgentError("package arrived with sha256 %s, expected %s" % (digest, req["sha256"]), "failed")
    test_kill(req, "receive_commit:checked")
    os.replace(part, path)
    test_kill(req, "receive_commit:committed")
    return {"path": path}
