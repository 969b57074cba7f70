"""Package extraction: every member checked against the whole archive (as the file system would
resolve it) before anything is written, then written from directory descriptors with O_NOFOLLOW.
"""

import hashlib
import os

from .beneath import MAX_LINK_HOPS, OPEN_DIR, open_dir_at, walk_dirs
from .common import CHUNK, AgentError
from .tarheaders import open_package, shown


NAME_MAX, PATH_MAX = 255, 4096


def member_refused(m, why):
    """A refusal of member ``m``, its name shortened (tarheaders.shown): ``why`` shows other names the same way."""
    return AgentError("package member %r %s" % (shown(m.name), why), "bad_input", member=shown(m.name))


def link_refused(name, target, why):
    """A refusal of the package's symlink ``name`` -> ``target`` (both shortened, tarheaders.shown)."""
    return AgentError("package symlink %r -> %r %s" % (shown(name), shown(target), why), "bad_input",
                      member=shown(name))


def bytes_refused(max_bytes):
    return AgentError("package unpacks to more than %d bytes (the catalog's limit)" % max_bytes, "bad_input")


def member_parts(m):
    """The normalised components of a member's name ('.' and empty ones removed); '..' and absolute refused."""
    name = m.name
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise member_refused(m, "points outside the install dir (absolute, or not a POSIX name)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise member_refused(m, "points outside the install dir ('..')")
    if len(name.encode("utf-8", "surrogateescape")) > PATH_MAX or any(
            len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
        raise member_refused(m, "has a name longer than a file system allows")
    return parts


def resolve_link(name, links):
    """Resolve package symlink ``name`` against the archive's own links, as the kernel would in the staging
    root; AgentError when it climbs out of that root, is absolute or loops."""
    target = links[name]
    stack = name.split("/")[:-1]
    todo, hops = target.split("/"), 0
    while todo:
        c = todo.pop(0)
        if c in ("", "."):
            continue
        if c == "..":
            if not stack:
                raise link_refused(name, target, "escapes the install dir%s"
                                   % (" (through the package's own links)" if hops else ""))
            stack.pop()
            continue
        here = "/".join(stack + [c])
        if here in links:
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise link_refused(name, target, "goes through more than %d links (a loop?)" % MAX_LINK_HOPS)
            todo = links[here].split("/") + todo
            continue
        stack.append(c)
    return stack


def check_members(tar, limits):
    """Validate all members of a tar as one tree; return the list to extract (names normalised).

    Refused: '..' and absolute names, duplicates after normalisation, hard links, devices and other special
    files, a member under a symlink or a file of the package, a symlink that resolves (through the package's
    other links, in any order) outside the root, and more members or bytes than the catalog allows."""
    max_members = int(limits.get("members") or 100000)
    max_bytes = int(limits.get("unpacked_bytes") or 0)
    members, total = [], 0
    kinds, links = {}, {}  # normalised name -> dir|file|link|implicit (a parent no member named yet)
    for m in tar:
        if len(members) >= max_members:
            raise AgentError("package has more than %d members (the catalog's limit)" % max_members, "bad_input")
        parts = member_parts(m)
        if not (m.isreg() or m.isdir() or m.issym()):
            raise member_refused(m, "is a %s; only files, directories and symlinks are allowed"
                                 % ("hard link" if m.islnk() else "device or special file"))
        if not parts:
            if m.isdir():
                continue  # the root itself
            raise member_refused(m, "has no name")
        name = "/".join(parts)
        if kinds.get(name) not in (None, "implicit"):
            raise member_refused(m, "appears twice%s" % (" (as %r, once './' and '//' are removed)" % shown(name)
                                                         if name != m.name.rstrip("/") else ""))
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            kind = kinds.setdefault(parent, "implicit")
            if kind == "link":
                raise member_refused(m, "lies under the symlink %r" % shown(parent))
            if kind == "file":
                raise member_refused(m, "lies under the file %r" % shown(parent))
        if kinds.get(name) == "implicit" and not m.isdir():
            raise member_refused(m, "would replace a directory that earlier members lie in")
        if m.issym():
            if m.linkname.startswith("/") or "\x00" in m.linkname or not m.linkname:
                raise link_refused(m.name, m.linkname, "escapes the install dir")
            if len(m.linkname.encode("utf-8", "surrogateescape")) > PATH_MAX:
                raise member_refused(m, "is a symlink with a target longer than a file system allows")
            links[name] = m.linkname
        if m.size < 0:  # tarheaders refuses it first: a negative size would make the total below meaningless
            raise member_refused(m, "has a negative size (%d)" % m.size)
        if m.isreg():
            total += m.size
            if max_bytes and total > max_bytes:
                raise bytes_refused(max_bytes)
        kinds[name] = "link" if m.issym() else "dir" if m.isdir() else "file"
        m.name = name
        members.append(m)
    for name in links:  # against the whole archive: a later link changes what an earlier one means
        resolve_link(name, links)
    return members


def write_member(root_fd, dest, tar, m, hashes, budget=None):
    """Write one checked member below root_fd, walking its parents without following links. A file's bytes are
    counted against ``budget`` (a ByteBudget; none: no limit) as they are written."""
    budget = budget or ByteBudget(0)
    parts = m.name.split("/")
    fd = walk_dirs(root_fd, parts[:-1], "package member %r" % shown(m.name), dest, create=True)
    leaf = parts[-1]
    try:
        if m.isdir():
            try:
                os.mkdir(leaf, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            os.close(open_dir_at(fd, leaf, "package member %r" % shown(m.name), dest))
        elif m.issym():
            os.symlink(m.linkname, leaf, dir_fd=fd)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            src = tar.extractfile(m)
            h = hashlib.sha256()
            with os.fdopen(os.open(leaf, flags, 0o600, dir_fd=fd), "wb") as out:
                while True:
                    block = src.read(CHUNK)
                    if not block:
                        break
                    budget.spend(len(block))
                    h.update(block)
                    out.write(block)
                os.fchmod(out.fileno(), m.mode & 0o7777 & ~0o7022)
            hashes[m.name] = h.hexdigest()
    except FileExistsError:
        raise member_refused(m, "collides with a path already written")
    finally:
        if fd != root_fd:
            os.close(fd)


class ByteBudget:
    """The bytes extraction may still write under the catalog's ``unpacked_bytes`` (0: no limit), counted as they
    are written: check_members adds up the sizes the headers state, this holds whatever a header said."""

    def __init__(self, limit):
        self.limit = self.left = limit

    def spend(self, count):
        """Take ``count`` bytes; AgentError (bad_input) once the limit is passed."""
        self.left -= count
        if self.limit and self.left < 0:
            raise bytes_refused(self.limit)


def extract(archive, dest, limits, skip=("package.yaml",), hashes=None):
    """Extract the checked members of archive into dest (which must not exist); ``hashes`` receives each
    file's sha256, computed from the bytes as they are written (no second read)."""
    hashes = {} if hashes is None else hashes
    with open_package(archive) as tar:
        members = [m for m in check_members(tar, limits) if m.name not in skip]
        os.makedirs(dest)
        root_fd = os.open(dest, OPEN_DIR)
        budget = ByteBudget(int(limits.get("unpacked_bytes") or 0))
        try:
            for m in members:
                write_member(root_fd, dest, tar, m, hashes, budget)
            # directory modes last and deepest first, so read-only directories do not block their contents
            for m in sorted((m for m in members if m.isdir()), key=lambda m: -m.name.count("/")):
                fd = walk_dirs(root_fd, m.name.split("/"), "package member %r" % shown(m.name), dest)
                try:
                    os.fchmod(fd, m.mode & 0o7777 & ~0o7022)
                finally:
                    os.close(fd)
        finally:
            os.close(root_fd)
        meta = None
        try:
            f = tar.extractfile("package.yaml")
            meta = f.read(1 << 20).decode("utf-8", "replace") if f else None
        except KeyError:
            pass
    return members, meta
