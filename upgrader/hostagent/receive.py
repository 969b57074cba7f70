"""Packages sent to the host once, kept by digest and checked again before each use.

In a run, the check hashes the cached package while copying it into the run's own copy (the one prepare
extracts), so that the package is read and hashed once per run, not once by the check and again by prepare.
"""

import hashlib
import os
import stat

from .common import CHUNK, AgentError, test_kill
from .files import create_nofollow, open_regular, sha256_file
from .state import Paths, check_state_dir, ensure_state_dir, read_lock

#: the run copies this agent process wrote and hashed itself in receive_check: path -> (sha256, size, identity of
#: the file as written). prepare, later in the same session, extracts such a copy without hashing it again when
#: the path still names that very file, unchanged since (checked_copy); a new agent process remembers none
_COPIES = {}


def _identity(st):
    """What changes when a file is replaced (device, inode) or written to (size, mtime, ctime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def copy_hashed(fin, dest):
    """Copy the open file ``fin`` into the new file ``dest`` (a leftover removed, never through a link), hashing
    the bytes as they are written; fsynced. (sha256, size, identity of ``dest`` as written)."""
    h = hashlib.sha256()
    size = 0
    with os.fdopen(create_nofollow(dest), "wb") as fout:
        for b in iter(lambda: fin.read(CHUNK), b""):
            h.update(b)
            size += len(b)
            fout.write(b)
        fout.flush()
        os.fsync(fout.fileno())
        return h.hexdigest(), size, _identity(os.fstat(fout.fileno()))


def checked_copy(path, sha256, size):
    """Is ``path`` the run copy of the package ``sha256`` that this process wrote and hashed (receive_check), the
    same file and not written to since? Then prepare uses it as its verified copy."""
    kept = _COPIES.get(path)
    if kept is None or kept[:2] != (sha256, size):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and _identity(st) == kept[2]


def _cached_matches(paths, path, req):
    """Has the cached package ``path`` the digest the request names? For the run that holds this host's lock, its
    bytes are hashed on their way into the run's own copy (kept for prepare: checked_copy); otherwise just hashed."""
    holder = read_lock(paths)
    if not req.get("run_id") or not isinstance(holder, dict) or holder.get("run") != req["run_id"]:
        return sha256_file(path) == req["sha256"]
    for d in (os.path.join(paths.state, "runs"), paths.run()):
        if not os.path.isdir(d):
            os.makedirs(d, 0o700, exist_ok=True)
    copy = paths.run("package.tar.gz")
    _COPIES.pop(copy, None)
    with os.fdopen(open_regular(path), "rb") as fin:
        digest, size, identity = copy_hashed(fin, copy)
    if digest != req["sha256"] or size != req["size"]:
        os.unlink(copy)
        return False
    _COPIES[copy] = (digest, size, identity)
    return True


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
        if os.path.getsize(path) == req["size"] and _cached_matches(paths, path, req):
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
