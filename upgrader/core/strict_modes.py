"""Whether a file the operator trusts could be changed by another account (sshd's StrictModes, for the policy, the
trust files it names and the operator's playbooks)."""

from __future__ import annotations

import os
import stat as _stat
from typing import NamedTuple

__all__ = ["ancestors_open_to_others", "open_to_others", "traversal", "Traversal", "MAX_LINKS"]

#: at most this many links are followed resolving one path (the kernel's limit, ELOOP beyond it)
MAX_LINKS = 40


class Traversal(NamedTuple):
    """How the kernel reaches a path: ``directories`` every directory a name is looked up in (each as it really is,
    no link in it), ``links`` every link followed with the directory that holds it, ``real`` the path reached (the
    part that does not exist yet kept as given), ``problem`` why it could not be told (too many links)."""

    directories: list[str]
    links: list[tuple[str, str]]
    real: str
    problem: str | None = None


def traversal(path: str) -> Traversal:
    """Resolve ``path`` one component at a time as the kernel does (a link's target resolved from the directory
    holding it, ``..`` after the links before it, at most MAX_LINKS links): whoever can write any directory looked up
    in, or the directory holding any link followed, decides what the path is (sshd's safe_path, extended to every
    link of a chain: HOME -> shared/cur -> the real home, where shared/ is another account's)."""
    whole = path if path.startswith("/") else os.path.join(os.getcwd(), path)
    todo = [c for c in reversed(whole.split("/")) if c not in ("", ".")]
    here = "/"
    directories: list[str] = []
    links: list[tuple[str, str]] = []
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            here = os.path.dirname(here)
            continue
        if here not in directories:
            directories.append(here)
        step = os.path.join(here, name)
        try:
            st = os.lstat(step)
        except OSError:
            return Traversal(directories, links, os.path.join(step, *reversed(todo)))
        if not _stat.S_ISLNK(st.st_mode):
            here = step
            continue
        if len(links) >= MAX_LINKS:
            return Traversal(directories, links, step, f"{path} goes through more than {MAX_LINKS} links")
        try:
            target = os.readlink(step)
        except OSError:
            return Traversal(directories, links, step)
        links.append((here, step))
        if target.startswith("/"):
            here = "/"
        todo.extend(c for c in reversed(target.split("/")) if c not in ("", "."))
    return Traversal(directories, links, here)


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
    open, or it does not exist (said where it is read). Every directory the kernel looks a name up in on the way
    to ``path`` and every directory holding a link it follows, in the middle of a chain too (traversal), is held to
    the same rule; more than MAX_LINKS links is refused likewise."""
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
    return _traversal_open_to_others(path, seen, me)


def _traversal_open_to_others(path: str, seen: set[str], me: int) -> str | None:
    """Why another account could change what ``path`` resolves to (traversal): a directory looked up in on the way,
    or the directory holding a link followed in the middle of a chain, owned by another account or open to others
    (a sticky one only when the link in it is root's or this account's); more than MAX_LINKS links. None: nothing."""
    way = traversal(path)
    if way.problem:
        return way.problem
    holders = dict((d, link) for d, link in way.links)
    for d in way.directories:
        if d in seen:
            continue
        seen.add(d)
        try:
            st = os.stat(d)
        except OSError:
            return None
        link = holders.get(d)
        below = f", and it holds the link {link} on the way to {path}" if link else f", and {path} is reached through it"
        if st.st_uid not in (0, me):
            return f"the directory {d} is owned by uid {st.st_uid}, neither you (uid {me}) nor root{below}"
        open_bits = st.st_mode & (_stat.S_IWGRP | _stat.S_IWOTH)
        if open_bits and not st.st_mode & _stat.S_ISVTX:
            return (f"the directory {d} is writable by {'others' if open_bits & _stat.S_IWOTH else 'its group'} "
                    f"(mode {_stat.S_IMODE(st.st_mode):o}, not sticky){below}")
    for d, link in way.links:
        try:
            owner = os.lstat(link).st_uid
            open_holder = os.stat(d).st_mode & (_stat.S_IWGRP | _stat.S_IWOTH)
        except OSError:
            return None
        if open_holder and owner not in (0, me):  # in a sticky directory the link's owner may replace it
            return (f"the link {link} is owned by uid {owner}, neither you (uid {me}) nor root, in the directory {d} "
                    f"others can write, on the way to {path}")
    return None
