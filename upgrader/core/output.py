"""The file a command writes with ``-o`` (a plan, an approval), written so that nothing planted beside it is written
through: ``-o`` itself must not be a link (refused, exit 2, nothing written); the data goes to a new file made in the
same folder with O_CREAT|O_EXCL|O_NOFOLLOW (never an existing file or a link someone else put there, as in a team's
shared drop folder), is fsynced, then renamed over ``-o``; the folder is fsynced after."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from .errors import InputError

__all__ = ["write_output"]


def write_output(path: Path, data: bytes, *, what: str, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` as a new file of mode ``mode``; InputError (exit 2) naming ``path`` and ``what``
    (``the plan``, ``the approval``) when it is a link or a folder, or cannot be written."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise InputError(f"cannot write {what}: {e.strerror}", path=str(path), hint="give a file path for -o") from e
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise InputError(f"-o names a link (-> {os.readlink(path)}): upgrader does not write {what} through a link; "
                         "nothing was written", path=str(path),
                         hint="give -o the path of a new or regular file, or remove the link")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise InputError(f"cannot write {what}: Is a directory", path=str(path), hint="give a file path for -o")
    tmp = f".{path.name}.{secrets.token_hex(4)}.tmp"
    dfd = None
    try:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
        os.fsync(dfd)
    except OSError as e:
        why = "Is a directory" if e.errno == errno.EISDIR else e.strerror
        raise InputError(f"cannot write {what}: {why}", path=str(path), hint="give a file path for -o") from e
    finally:
        if dfd is not None:
            os.close(dfd)
