"""Small durable-file helpers: files created without following a link, JSON written atomically and
fsynced, digests.
"""

import errno
import fcntl
import hashlib
import json
import os
import stat

from .common import CHUNK, AgentError
from .mounts import remove_tree


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def create_nofollow(path, mode=0o644):
    """A new file at ``path`` opened for writing (a leftover of that name removed first, never followed)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)


def append_line_nofollow(path, line):
    """Append one line to the file ``path`` (made when absent, 0600), never through a link; fsynced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AgentError("%s is a symlink; the agent keeps its state only in plain files: remove the link"
                             % path, "unsafe_path", path=path)
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AgentError("%s is not a regular file; the agent keeps its state only in plain files" % path,
                             "unsafe_path", path=path)
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with os.fdopen(create_nofollow(tmp), "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def open_regular(path, follow=False):
    """A descriptor of the regular file ``path`` for reading, opened with O_NONBLOCK (a FIFO or device there is
    never waited on) and its last component not followed unless ``follow``; anything but a regular file is refused
    (unsafe_path), naming it."""
    fd = os.open(path, READ_FLAGS & ~(os.O_NOFOLLOW if follow else 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise AgentError("%s is not a regular file (%s); the agent reads only regular files and did not read it: "
                         "remove it" % (path, "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode)
                                        else "a socket or a device"), "unsafe_path", path=path)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def read_json(path, default=None):
    try:
        with os.fdopen(open_regular(path), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AgentError("%s is a symlink; the agent keeps its state only in plain files: remove the link"
                             % path, "unsafe_path", path=path)
        raise
    except ValueError:
        raise AgentError("%s is damaged (not valid JSON)" % path, "needs_person")


def sha256_file(path):
    """sha256 of the file ``path`` (its last component never followed: a link there is an error)."""
    h = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as f:
        for b in iter(lambda: f.read(CHUNK), b""):
            h.update(b)
    return h.hexdigest()


def canonical_digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def rmtree(path):
    """Remove ``path`` (a file, a link or a tree), never across a mount point: one in it is refused before anything
    is deleted (see mounts.remove_tree)."""
    remove_tree(path)


def read_text(path, limit=1 << 20):
    """The text of the regular file ``path`` (links followed: /proc, /etc), None when it is missing, unreadable or
    not a regular file (never waited on)."""
    try:
        with os.fdopen(open_regular(path, follow=True), encoding="utf-8", errors="replace") as f:
            return f.read(limit)
    except (OSError, AgentError):
        return None
