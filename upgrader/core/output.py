"""The file a command writes with ``-o`` (a plan, an approval), written so that nothing planted beside it is written
through: ``-o`` itself must not be a link (refused, exit 2, nothing written); the data goes to a new file made in the
same folder with O_CREAT|O_EXCL|O_NOFOLLOW (never an existing file or a link someone else put there, as in a team's
shared drop folder), is fsynced, then renamed over ``-o``; the folder is fsynced after. The folder itself is reached
one directory at a time (open_folder): a link on the way is followed only when root or the user running upgrader owns
it, never one another account planted in a folder it can write (``shared/reports`` -> a folder of root's)."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from .errors import InputError

__all__ = ["open_folder", "write_output"]

#: links followed on the way to one folder, as the kernel allows (ELOOP beyond)
MAX_LINKS = 40


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
        dfd = open_folder(path.parent, what=what, option="-o")
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


def open_folder(folder: Path, *, what: str, option: str) -> int:
    """A descriptor of the directory ``folder``, reached one name at a time with O_NOFOLLOW from ``/`` (or the
    working directory): a link on the way is followed only when root or this process's user owns it (the kernel's
    protected_symlinks rule, on every name of the path, not only in sticky folders); one another account owns is
    refused (InputError, exit 2, naming the link and its owner): it could lead a root run to write ``what`` into any
    folder. The caller closes the descriptor."""
    names = [p for p in str(folder).split("/") if p not in ("", ".")]
    fd = os.open("/" if str(folder).startswith("/") else ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    links = 0
    try:
        while names:
            name = names.pop(0)
            try:
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.lstat(name, dir_fd=fd)
                if not stat.S_ISLNK(st.st_mode):
                    raise
                target = os.readlink(name, dir_fd=fd)
                links += 1
                if st.st_uid not in (0, os.geteuid()) or os.lstat(name, dir_fd=fd).st_ino != st.st_ino:
                    raise InputError(f"cannot write {what}: on the way to {folder}, {name} is a link (-> {target}) "
                                     f"that account {_owner(st.st_uid)} owns; upgrader follows only links root or you "
                                     "own (another account could lead it to write anywhere); nothing was written",
                                     path=str(folder), hint=f"give {option} a path without that link") from None
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
                names[:0] = [p for p in target.split("/") if p not in ("", ".")]
                if target.startswith("/"):
                    nfd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                else:
                    continue  # the link's target is read from the folder that holds it
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _owner(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
