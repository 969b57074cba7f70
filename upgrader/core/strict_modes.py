"""Whether a file the operator trusts could be changed by another account (sshd's StrictModes, for the policy, the
trust files it names and the operator's playbooks)."""

from __future__ import annotations

import os
import stat as _stat

__all__ = ["open_to_others"]


def open_to_others(path: str) -> str | None:
    """Why the file ``path`` could be replaced or changed by an account other than this one or root (as sshd's
    StrictModes asks of authorized_keys): the file's owner and mode, its directory's (a sticky directory is
    fine: only the owner replaces a name in it), and the real file's directory when it is a link. None: it
    cannot, or it does not exist (that is said where it is read)."""
    me = os.geteuid()

    def why(where: str, st: os.stat_result, what: str) -> str | None:
        if st.st_uid not in (0, me):
            return f"{what} {where} is owned by uid {st.st_uid}, neither you (uid {me}) nor root"
        open_bits = st.st_mode & (_stat.S_IWGRP | _stat.S_IWOTH)
        if open_bits and not (_stat.S_ISDIR(st.st_mode) and st.st_mode & _stat.S_ISVTX):
            return f"{what} {where} is writable by {'its group' if open_bits & _stat.S_IWGRP else 'others'} " \
                   f"(mode {_stat.S_IMODE(st.st_mode):o})"
        return None

    try:
        found = why(path, os.stat(path), "the file")
        for directory in dict.fromkeys((os.path.dirname(os.path.abspath(path)),
                                        os.path.dirname(os.path.realpath(path)))):
            found = found or why(directory, os.stat(directory), "its directory")
    except OSError:
        return None
    return found
