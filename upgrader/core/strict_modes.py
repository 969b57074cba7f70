"""Whether a file the operator trusts could be changed by another account (sshd's StrictModes, for the policy, the
trust files it names and the operator's playbooks)."""

from __future__ import annotations

import os
import stat as _stat

__all__ = ["ancestors_open_to_others", "open_to_others"]


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
    return found or ancestors_open_to_others(path)


def ancestors_open_to_others(path: str, *, itself: bool = False) -> str | None:
    """Why another account could replace ``path`` by renaming something above it (sshd's StrictModes walks every
    component up to /, safe_path): every directory above the name as given (``os.path.abspath``, links in it not
    resolved: whoever can write the directory holding a link can swap it) and above the real file
    (``os.path.realpath``) must be owned by root or this account and writable by neither its group nor others,
    except a sticky directory such as /tmp (there only the owner of a name may rename it, and the name below is
    itself checked: it must be root's or this account's). ``itself``: ``path`` (a directory such as HOME) is
    checked too, and a sticky bit does not excuse it (anyone could add a name in it). None: nothing above it is
    open, or it does not exist (said where it is read)."""
    me = os.geteuid()
    given = os.path.abspath(path)
    chains = (given, os.path.realpath(path))
    seen: set[str] = set()
    for chain in dict.fromkeys(chains):
        d = chain if itself else os.path.dirname(chain)
        while True:
            if d not in seen:
                seen.add(d)
                try:
                    st = os.stat(d)
                except OSError:
                    return None
                below = "" if d == chain else f", and {chain} lies below it"
                if st.st_uid not in (0, me):
                    return f"the directory {d} is owned by uid {st.st_uid}, neither you (uid {me}) nor root{below}"
                open_bits = st.st_mode & (_stat.S_IWGRP | _stat.S_IWOTH)
                if open_bits and (d == chain or not st.st_mode & _stat.S_ISVTX):
                    return (f"the directory {d} is writable by "
                            f"{'others' if open_bits & _stat.S_IWOTH else 'its group'} (mode "
                            f"{_stat.S_IMODE(st.st_mode):o}{'' if d == chain else ', not sticky'}){below}")
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    return None
