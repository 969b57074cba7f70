"""Paths beneath a root: every path the agent touches in an install dir (and every package member)
is resolved physically, as the kernel would, and refused when a link on the way leads out; it is
then opened from a directory descriptor, one component at a time, with O_NOFOLLOW, so that a link
swapped in after the check cannot lead out either.

Preserved paths and product files are moved, copied and linked from directory descriptors: every
component on both sides opened with O_NOFOLLOW, so a link put on the way (by a package or swapped in
by whoever owns the tree) makes the step refuse instead of reaching outside.
"""

import contextlib
import errno
import fcntl
import hashlib
import os
import pwd
import stat
import struct

from .common import CHUNK, MAX_DEPTH, AgentError, too_deep
from .mounts import across_mount, crosses, mount_points_at, source_of


MAX_LINK_HOPS = 40  # as the kernel's own limit of links followed in one lookup


OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def link_target(path, dir_fd=None):
    """The target of link ``path`` for a message ('(swapped since)' when it is no longer a link)."""
    try:
        return os.readlink(path, dir_fd=dir_fd)
    except OSError:
        return "(swapped since)"


def split_rel_join(rel):
    """``rel`` spelled as a walk names it ('a/b', without '.' or empty components)."""
    return "/".join(split_rel(rel) or [])


def split_rel(rel):
    """The components of a relative path, '.' and empty ones removed; None when it is absolute or climbs."""
    if not isinstance(rel, str) or rel.startswith("/") or "\x00" in rel:
        return None
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    return None if ".." in parts else parts


def unsafe_path(what, rel, root, why):
    return AgentError("%s %s %s (install dir %s); nothing was changed: make it a plain file or "
                      "directory inside the install dir, or correct the playbook or inventory"
                      % (what, rel, why, root), "unsafe_path", path=rel, what=what)


def resolve_beneath(root, rel, what, follow_last=True, holders=None):
    """The components of ``rel`` below ``root``, every link on the way resolved on the real file system.

    A link that leads outside root (absolute, or climbing above it) is refused, naming the link; missing
    components are taken as they are. ``follow_last`` False keeps a final link as itself (to remove it)."""
    parts = split_rel(rel)
    if parts is None:
        raise unsafe_path(what, rel, root, "is absolute or climbs out with '..'")
    return follow_beneath(root, rel, what, [], list(parts), follow_last, holders=holders)


def follow_beneath(root, rel, what, done, todo, follow_last=True, via=None, aliases=(), holders=None):
    """The loop of resolve_beneath: ``done`` resolved components, ``todo`` the rest (may hold '..' and a leading
    '' for an absolute link target); ``via``: (link, target) that put ``todo`` there; ``aliases``: other absolute
    paths that name root (a staged tree's, once it takes the install dir's place)."""
    bases = [os.path.abspath(root), os.path.realpath(root)] + list(aliases)
    hops = 0
    if todo and todo[0] == "":  # an absolute target: allowed only when it names a path inside root
        target = "/".join(todo)
        base = [b for b in bases if target == b or target.startswith(b + "/")]
        if not base:
            raise unsafe_path(what, rel, root, "passes through the symlink %s -> %s, which leads outside "
                                               "the install dir" % via)
        done, todo = [], target[len(base[0]):].split("/")
    while todo:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if not done:
                raise unsafe_path(what, rel, root, "passes through the symlink %s -> %s, which leads outside "
                                                   "the install dir" % via)
            done.pop()
            continue
        full = os.path.join(root, *(done + [name]))
        try:
            st = os.lstat(full)
        except OSError:
            done.append(name)
            continue
        if not stat.S_ISLNK(st.st_mode) or (not todo and not follow_last):
            done.append(name)
            continue
        hops += 1
        if holders is not None and done not in holders:
            holders.append(list(done))  # the directory that holds the link (its physical components)
        try:
            target = os.readlink(full)
        except OSError:  # no longer a link: the name was swapped while it was checked
            raise unsafe_path(what, rel, root, "changed while it was checked (%s was a symlink, then not): a "
                                               "directory is being swapped for a link" % "/".join(done + [name]))
        via = ("/".join(done + [name]), target)
        if hops > MAX_LINK_HOPS:
            raise unsafe_path(what, rel, root, "meets more than %d symlinks (the last %s -> %s; a loop?)"
                              % ((MAX_LINK_HOPS,) + via))
        if target.startswith("/"):
            base = [b for b in bases if target == b or target.startswith(b + "/")]
            if not base:
                raise unsafe_path(what, rel, root, "passes through the symlink %s -> %s, which leads outside "
                                                   "the install dir" % via)
            done, target = [], target[len(base[0]):]
        todo = target.split("/") + todo
    return done


def open_dir_at(fd, name, what, root):
    """A descriptor of directory ``name`` in directory ``fd``; a link or a file there is refused."""
    try:
        return os.open(name, OPEN_DIR, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise AgentError("%s: %s is not a plain directory (a symlink?); refusing to go through it below %s"
                             % (what, name, root), "unsafe_path", path=name)
        raise


def walk_dirs(root_fd, parts, what, root, create=False):
    """Descriptor of the directory root/parts[0]/.../parts[-1], opened one step at a time with O_NOFOLLOW
    from ``root_fd`` (the caller closes it; it may be root_fd itself when parts is empty)."""
    fd = root_fd
    for name in parts:
        if create:
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
        try:
            nfd = open_dir_at(fd, name, what, root)
        finally:
            if fd != root_fd:
                os.close(fd)
        fd = nfd
    return fd


def kind_of(mode):
    """What a file that is not a regular file is, for a message."""
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def regular_only(fd, what, rel):
    """``fd`` (opened with O_NONBLOCK, so that a FIFO did not wait for a writer) when it is a regular file, its
    O_NONBLOCK flag cleared; else it is closed and refused, naming it: the agent never reads from a FIFO, a
    socket or a device put in place of a file."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise AgentError("%s %s is %s, not a regular file; the agent reads only regular files and did not read it: "
                         "remove it (or make it the file the playbook means)" % (what, rel, kind_of(mode)),
                         "unsafe_path", path=rel, what=what)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def foreign_link(fd, dir_fd, what, rel):
    """A refusal when the file open as ``fd`` has more than one hard link and another owner than its directory (open
    as ``dir_fd``): on a host with fs.protected_hardlinks=0 whoever owns the directory can link any file there, a
    root-only one too; its contents are not disclosed (None when it may be read)."""
    st, dst = os.fstat(fd), os.fstat(dir_fd)
    if st.st_nlink > 1 and st.st_uid != dst.st_uid:
        return AgentError("%s %s has %d hard links and is owned by uid %d, not by the owner of its directory (uid %d): "
                          "it may be a link to a file outside the install dir; its contents were not read: make it a "
                          "file of its own (cp it over itself), or set fs.protected_hardlinks=1"
                          % (what, rel, st.st_nlink, st.st_uid, dst.st_uid), "unsafe_path", path=rel, what=what, hard_link=True)
    return None


NOBODY_ID = 65534  # nobody / nogroup: the group a uid with no account entry reads with, never its directory's

ACL_XATTR = "system.posix_acl_access"
ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK = 0x02, 0x04, 0x08, 0x10
ACL_WRITE = 0x02


def walk_place(parts, i):
    """How the i-th directory of the walk to root/parts[...]/file is named in a message (0: the install dir)."""
    if i == 0:
        return "the install dir"
    if i == len(parts) - 1:
        return "its directory"
    return "directory %s" % "/".join(parts[:i])


def acl_writers(dfd, st):
    """The identities the POSIX ACL of the directory open as ``dfd`` lets write it besides its owner and root
    (["uid 4242", "gid 7"]), and whether its owning group may write it; None when it has no ACL (the mode bits
    then say it all). An ACL that cannot be read or parsed counts as written by an unknown identity."""
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:
        return None
    try:
        raw = getxattr(dfd, ACL_XATTR)
    except OSError as e:
        if e.errno in (errno.ENODATA, getattr(errno, "ENOTSUP", -1), getattr(errno, "EOPNOTSUPP", -1)):
            return None
        return ["an identity its ACL names (the ACL could not be read: %s)" % e.strerror], False
    if len(raw) < 4 or (len(raw) - 4) % 8 or struct.unpack("<I", raw[:4])[0] != 2:
        return ["an identity its ACL names (the ACL is not one this agent can read)"], False
    named, group_obj, mask = [], False, ACL_WRITE
    for off in range(4, len(raw), 8):
        tag, perm, ident = struct.unpack("<HHI", raw[off:off + 8])
        if tag == ACL_MASK:
            mask = perm
        elif tag == ACL_GROUP_OBJ:
            group_obj = bool(perm & ACL_WRITE)
        elif tag == ACL_USER and perm & ACL_WRITE and ident not in (0, st.st_uid):
            named.append("uid %d" % ident)
        elif tag == ACL_GROUP and perm & ACL_WRITE:
            named.append("gid %d" % ident)  # listed whatever the mask says: the mask is the owner's to change
    return named, group_obj and bool(mask & ACL_WRITE)


def dir_writers(dfd, st):
    """Who besides its owner and root may write the directory open as ``dfd`` (stat ``st``): ("everyone" | "group" |
    "acl", [named identities]) or None; an ACL entry that grants write (ACL_USER, ACL_GROUP) counts as much as the
    group and other write bits, which show only the ACL's mask once there is one."""
    if st.st_mode & stat.S_IWOTH:
        return "everyone", []
    acl = acl_writers(dfd, st)
    if acl is not None:
        named, group = acl
        if named:
            return "acl", named
        return ("group", []) if group else None
    return ("group", []) if st.st_mode & stat.S_IWGRP else None


def root_only_problem(path):
    """Why running ``path`` as root could run code another account put there (None when it cannot): the file and
    every directory on its way, as named and as really reached through its links, must be root's and writable by
    nobody else (mode bits and POSIX ACL), so no account but root can change what runs. Looked at from the file up,
    so the nearest such place is the one named."""
    real = os.path.realpath(path)
    seen = []
    for p in (path, real):
        q = os.path.normpath(p)
        while True:
            if q not in seen:
                seen.append(q)
            if q == "/":
                break
            q = os.path.dirname(q)
    for q in seen:
        try:
            st = os.lstat(q)
        except OSError as e:
            return "%s cannot be examined (%s)" % (q, e.strerror)
        if stat.S_ISLNK(st.st_mode):
            continue  # a link's own mode means nothing; the directory holding it, and its target, are looked at
        if st.st_uid != 0:
            return "%s is owned by uid %d" % (q, st.st_uid)
        try:
            writers = dir_writers(q, st)
        except OSError as e:
            return "%s cannot be examined (%s)" % (q, e.strerror)
        if writers:
            kind, named = writers
            return "%s may be written by %s" % (q, ", ".join(named) if named else
                                                "everyone" if kind == "everyone" else "its group (gid %d)" % st.st_gid)
    return None


def walk_for_read(root_fd, parts, what, root):
    """Like walk_dirs (the descriptor of the file's directory), with what a disclosing read needs to know of each
    directory from the install dir down: [(place, stat, writers)] (see dir_writers)."""
    fd, walk = root_fd, []
    try:
        for i in range(len(parts)):
            st = os.fstat(fd)
            walk.append((walk_place(parts, i), st, dir_writers(fd, st)))
            if i < len(parts) - 1:
                nfd = open_dir_at(fd, parts[i], what, root)
                if fd != root_fd:
                    os.close(fd)
                fd = nfd
    except BaseException:
        if fd != root_fd:
            os.close(fd)
        raise
    return fd, walk


def link_holders(root_fd, holders, parts, what, root):
    """[(place, stat, writers)] (as walk_for_read's) of each directory that holds a link followed on the way to
    root/parts (``holders``: their components, from resolve_beneath) and is not on the walk itself (the file's
    physical path): the account that owns such a directory could have made the link, so it counts as one that could
    have put the file there (``logs/server.log -> ../lib/license.key`` made by the owner of logs/)."""
    out = []
    on_walk = [parts[:i] for i in range(len(parts))]
    for hold in holders:
        if hold in on_walk:
            continue
        dfd = walk_dirs(root_fd, hold, what, root)
        try:
            st = os.fstat(dfd)
            out.append(("directory %s (holding a link on the way)" % ("/".join(hold) or "."), st,
                        dir_writers(dfd, st)))
        finally:
            if dfd != root_fd:
                os.close(dfd)
    return out


def account_of(uid):
    """(gid, groups) a process of ``uid`` has: its account's, or for a uid with no account entry (a container's or a
    deleted account's numeric owner) nobody's group alone, never the group of a directory it owns (often root's)."""
    try:
        pw = pwd.getpwuid(uid)
        return pw.pw_gid, os.getgrouplist(pw.pw_name, pw.pw_gid)
    except KeyError:
        return NOBODY_ID, [NOBODY_ID]


def reader_identities(walk):
    """[(uid, gid, groups, whose)] of every account a disclosing read is made as when the agent runs as root: the
    non-root owner of each directory from the install dir down to the file's, the accounts that could have put the
    file there (each may rename a subtree or link a file into what it owns); [] when the agent is not root (the kernel
    already decides as the agent's own account) or all of them belong to root."""
    if os.geteuid() != 0:
        return []
    out, seen = [], set()
    for place, st, _ in walk:
        if st.st_uid != 0 and st.st_uid not in seen:
            seen.add(st.st_uid)
            gid, groups = account_of(st.st_uid)
            whose = "the install dir's owner" if place == "the install dir" else "the owner of %s" % place
            out.append((st.st_uid, gid, groups, whose))
    return out


@contextlib.contextmanager
def as_account(ident):
    """The agent's effective uid, gid and groups set to ``ident``'s (see reader_identities) for the block, then all
    three restored, whatever happens (the agent is single-threaded: no other thread runs meanwhile)."""
    groups, egid = os.getgroups(), os.getegid()
    try:
        try:
            os.setgroups(ident[2])
            os.setegid(ident[1])
            os.seteuid(ident[0])
        except OSError as e:  # no CAP_SETUID/CAP_SETGID (a restricted container): nothing is disclosed then
            raise AgentError("the agent could not take the identity of uid %d (%s) to read a file whose contents "
                             "would leave the host; it was not read: run the agent as root with its usual "
                             "capabilities" % (ident[0], e.strerror), "needs_person", not_disclosed=True,
                             hard_link=True)
        yield
    finally:
        if os.geteuid() != 0:
            os.seteuid(0)
        if os.getegid() != egid:
            os.setegid(egid)
        if sorted(os.getgroups()) != sorted(groups):
            os.setgroups(groups)


def not_disclosed(what, rel, why):
    return AgentError("%s %s %s: not disclosed; its contents were not read: make it a file that account may read "
                      "itself (or remove it), or correct the playbook" % (what, rel, why), "unsafe_path", path=rel,
                      what=what, hard_link=True, not_disclosed=True)


def file_acl_names(fd):
    """Whether the file open as ``fd`` has a POSIX access ACL that names users or groups (one of them may be denied
    what its mode bits grant everyone)."""
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:
        return False
    try:
        raw = getxattr(fd, ACL_XATTR)
    except OSError:
        return False
    return any(struct.unpack("<H", raw[off:off + 2])[0] in (ACL_USER, ACL_GROUP) for off in range(4, len(raw) - 7, 8))


def writers_problem(fd, walk, what, rel):
    """A refusal of the file open as ``fd`` when a directory on the walk to it (see walk_for_read) may be written by
    an identity other than its owner and root (group or other write bits, an ACL entry): any of them could have put
    there any file it can link or move, one it may not read itself too (whoever owns it), so the file is disclosed
    only when everyone may read it (S_IROTH, and no ACL of its own that names a user or group)."""
    st = os.fstat(fd)
    for place, dst, writers in walk:
        if writers is None:
            continue
        if st.st_mode & stat.S_IROTH and not file_acl_names(fd):
            return None
        kind, named = writers
        if kind == "everyone":
            who = "everyone may write %s" % place
        elif kind == "group":
            group = "its directory's group" if place == "its directory" else "the group of %s" % place
            who = "%s (gid %d) may write %s" % (group, dst.st_gid, place)
        else:
            who = "the ACL of %s lets %s write it" % (place, ", ".join(named))
        return not_disclosed(what, rel, "is not readable by everyone, and %s besides its owner (another account "
                                        "could have put it there, a file it may not read itself too)" % who)
    return None


def reopen_as_writers(fd, dir_fd, walk, name, what, rel):
    """A descriptor of the file open as ``fd`` (``name`` in ``dir_fd``) opened again with the identity of each
    account that could have put it there (see reader_identities), so that the kernel decides whether each of them
    may read it: refused when one may not, or when the name now holds another file; ``fd`` itself when no other
    account counts."""
    for ident in reader_identities(walk):
        try:
            with as_account(ident):
                again = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                                dir_fd=dir_fd)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EACCES, errno.EPERM):
                raise not_disclosed(what, rel, "is not readable by %s (uid %d), an account that could have put it "
                                               "there" % (ident[3], ident[0]))
            raise
        a, b = os.fstat(fd), os.fstat(again)
        os.close(fd)
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
            os.close(again)
            raise AgentError("%s %s was replaced while it was read; refusing it" % (what, rel), "unsafe_path", path=rel)
        fd = regular_only(again, what, rel)
    return fd


def open_beneath(root, rel, what, flags=os.O_RDONLY, disclose=True):
    """Open root/rel for reading, resolved beneath root and walked without following any link; a file that is
    not a regular one is refused without waiting on it (see regular_only; ``flags`` with O_DIRECTORY: a
    directory). ``disclose`` (the default): its contents, or part of them, may leave the host (a version, config
    text, log lines, a vars_from value), so the file is read only when the account that could have put it there may
    read it itself (see reopen_as_writers, writers_problem) and a hard link of another owner's file is refused (see
    foreign_link); pass False only where nothing of the content is returned (a size, a time). The directories
    that hold each link followed on the way count as the directories of the walk do: their owners are accounts
    that could have put the file there (the link), and others who may write them too (see link_holders)."""
    holders = []
    parts = resolve_beneath(root, rel, what, holders=holders)
    if not parts:
        raise unsafe_path(what, rel, root, "is the install dir itself, not a file in it")
    root_fd = open_root(root, "the install dir")
    try:
        if disclose and not flags & os.O_DIRECTORY:
            fd, walk = walk_for_read(root_fd, parts, what, root)
            try:
                walk += link_holders(root_fd, holders, parts, what, root)
            except BaseException:
                if fd != root_fd:
                    os.close(fd)
                raise
        else:
            fd, walk = walk_dirs(root_fd, parts[:-1], what, root), []
        try:
            ffd = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=fd)
            if flags & os.O_DIRECTORY:
                return ffd
            regular_only(ffd, what, rel)
            if not disclose:
                return ffd
            problem = foreign_link(ffd, fd, what, rel) or writers_problem(ffd, walk, what, rel)
            if problem is not None:
                os.close(ffd)
                raise problem
            return reopen_as_writers(ffd, fd, walk, parts[-1], what, rel)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise AgentError("%s %s became a symlink while it was read; refusing it" % (what, rel), "unsafe_path",
                                 path=rel)
            raise
        finally:
            if fd != root_fd:
                os.close(fd)
    finally:
        os.close(root_fd)


#: what read_beneath returns at most when its caller names no limit
READ_MAX = 1 << 20


def read_beneath(root, rel, what, limit=READ_MAX, offset=0, disclose=True):
    """The bytes of root/rel (see open_beneath; ``disclose`` False only where nothing of them is returned), from
    ``offset``, at most ``limit`` (never to EOF: the file may be another account's, which can grow it at will)."""
    fd = open_beneath(root, rel, what, disclose=disclose)
    try:
        return os.pread(fd, limit, offset)
    finally:
        os.close(fd)


def remove_at(parent_fd, name):
    """Remove ``name`` in directory ``parent_fd``: a file or link is unlinked, a directory emptied from
    descriptors and removed; nothing it holds is ever followed."""
    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    fd = os.open(name, OPEN_DIR, dir_fd=parent_fd)
    try:
        if crosses(parent_fd, fd):  # a mount's files lie outside: never deleted (see mounts.py)
            raise across_mount(name, source_of(fd))
        for entry in os.listdir(fd):
            remove_at(fd, entry)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def remove_beneath(root, rel, what, missing_ok=False):
    """Remove root/rel (a final link is removed, not followed); refused when a link on its way leads
    out of root or a component is not a plain directory. False when it was not there."""
    parts = resolve_beneath(root, rel, what, follow_last=False)
    if not parts:
        raise unsafe_path(what, rel, root, "is the install dir itself, not a path in it")
    root_fd = open_root(root, "the install dir")
    try:
        try:
            fd = walk_dirs(root_fd, parts[:-1], what, root)
        except FileNotFoundError:
            if missing_ok:
                return False
            raise
        try:
            remove_at(fd, parts[-1])
        except FileNotFoundError:
            if missing_ok:
                return False
            raise
        finally:
            if fd != root_fd:
                os.close(fd)
    finally:
        os.close(root_fd)
    return True


def recorded_link_problems(root, links, preserved):
    """The product links a scan recorded (rel -> target, as read then), checked before anything is made from them:
    one that lies on the way of a preserved path (install moves those through plain directories only) or whose
    recorded target leads outside root is refused, one sentence each. The target checked is the one recorded,
    which the backup and the staged tree would recreate, not whatever the name holds now."""
    problems = []
    for rel, target in sorted(links.items()):
        under = [p for p in preserved if p.startswith(rel + "/")]
        if under:
            problems.append(str(unsafe_path("preserved path", under[0], root, "passes through the symlink %s -> %s; "
                                            "a preserved path is moved only through plain directories"
                                            % (rel, target))))
            continue
        try:
            follow_beneath(root, rel, "product link", rel.split("/")[:-1], target.split("/"), via=(rel, target))
        except AgentError as e:
            problems.append(str(e))
    return problems


def staged_link_problems(tree, links, install):
    """Every link of a staged tree (rel -> target, as scanned) resolved physically through the staged tree's own
    links: one that ends above the tree (a patch's ``lib/esc -> up/../..`` laid over the install's own
    ``lib/up -> ..``) is refused, one sentence each. An absolute target naming the install dir counts as inside
    (the staged tree takes its place)."""
    problems = []
    for rel, target in sorted(links.items()):
        try:
            follow_beneath(tree, rel, "staged link", rel.split("/")[:-1], target.split("/"), via=(rel, target),
                           aliases=(os.path.abspath(install),))
        except AgentError as e:
            problems.append(str(e))
    return problems


def check_host_paths(root, spec):
    """Every path a run will touch in the install dir, checked before anything is changed: the problems
    found (one sentence each; empty when all resolve beneath root)."""
    problems = []
    checks = [("preserved path", p, True) for p in spec.get("preserve", [])]
    checks += [("the patch's remove entry", p, False) for p in spec.get("remove", [])]
    checks += [("pid_file", p, True) for p in spec.get("pid_files", [])]
    checks += [("log file", p, True) for p in spec.get("logs", [])]
    checks += [("version file", p, True) for p in ([spec["version_file"]] if spec.get("version_file") else [])]
    checks += [("preflight.ascii_dirs entry", p, True) for p in spec.get("ascii_dirs", [])]
    read = ("pid_file", "log file", "version file")  # read by the agent: a FIFO or device there is named now
    for what, rel, follow in checks:
        try:
            parts = resolve_beneath(root, rel, what, follow_last=follow)
        except AgentError as e:
            problems.append(str(e))
            continue
        if what in read and parts:
            try:
                mode = os.lstat(os.path.join(root, *parts)).st_mode
            except OSError:
                continue  # missing (or unreadable): each reader says so itself
            if not stat.S_ISREG(mode):
                problems.append("%s %s is %s, not a regular file; the agent reads only regular files and did not "
                                "read it: remove it (or make it the file the playbook means)" % (what, rel, kind_of(mode)))
    for rel, st in copied_files(root, spec.get("copied", [])):  # config and cache: copied into the backup
        problem = copy_problem(st, "preserved path", rel)
        if problem:
            problems.append(problem)
    problems += mount_problems(root, spec.get("preserve", []))
    if "pid_files" in spec:  # the whole list a plan or a run's preflight asks for: set-id files too (a preserved
        # directory is left to prepare, which knows which of them it copies)
        problems += setid_problems(root, [split_rel_join(p) for p in spec.get("preserve", [])])
    return problems


def mount_problems(root, preserve):
    """One sentence for every mount point inside the install dir ``root`` (see mounts.py): an upgrade moves the
    install dir aside and deletes what it leaves there, and a preserved path is renamed, which a mount point refuses
    (EBUSY) -- so each is refused before anything is stopped."""
    parent, name = os.path.split(os.path.abspath(root).rstrip("/") or "/")
    try:
        pfd = os.open(parent or "/", OPEN_DIR & ~os.O_NOFOLLOW)
    except OSError:
        return []  # missing or not a directory: said elsewhere
    try:
        fd = os.open(name, OPEN_DIR, dir_fd=pfd) if name else os.dup(pfd)
    except OSError:
        os.close(pfd)
        return []
    problems = []
    try:
        if name and crosses(pfd, fd):
            problems.append("the install dir %s is itself a mount point (%s mounted there): an upgrade moves the "
                            "install dir aside and a new tree into its place, which a mount point refuses, and the "
                            "agent never moves a mount, so the run is refused: mount the file system one level up "
                            "and put the install dir inside it (point install_dir there)" % (root, source_of(fd)))
        found = mount_points_at(fd)
    finally:
        os.close(fd)
        os.close(pfd)
    for rel, source in found:
        kept = [p for p in preserve if rel == split_rel_join(p) or rel.startswith(split_rel_join(p) + "/")]
        if kept and split_rel_join(kept[0]) == rel:
            where = "preserved path %s is itself a mount point" % rel
        elif kept:
            where = "%s, in preserved path %s, is a mount point" % (rel, kept[0])
        else:
            where = "%s is a mount point" % rel
        problems.append("%s inside the install dir (%s mounted there): an upgrade moves the install dir aside and "
                        "deletes what it leaves, and the agent never deletes, copies or moves across a mount, so "
                        "the run is refused: unmount it and mount it outside the install dir (point the product's "
                        "configuration there), or unmount it for the upgrade and mount it again after"
                        % (where, source))
    return problems


def open_root(path, what):
    """A descriptor of directory ``path`` itself; refused when its last component is a link."""
    try:
        return os.open(path, OPEN_DIR)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise AgentError("%s %s is not a plain directory (a symlink?); refusing to use it; nothing there was "
                             "changed: check the host by hand" % (what, path), "needs_person", path=path)
        raise


def parent_at(root_fd, rel, what, root, create=False):
    """(descriptor of the directory that holds ``rel``, its last name): every component a plain directory,
    none followed (FileNotFoundError when one is missing and ``create`` is false). The caller closes it."""
    parts = split_rel(rel)
    if not parts:
        raise unsafe_path(what, rel, root, "is absolute, climbs out with '..' or is the install dir itself")
    fd = walk_dirs(root_fd, parts[:-1], what, root, create=create)
    return (os.dup(fd) if fd == root_fd else fd), parts[-1]


def link_parents(root, rel, what, package=False):
    """A sentence when a component above the last of ``rel`` in ``root`` is a symlink (None when none is);
    ``package``: root is the staged tree of the package (the link is the package's)."""
    parts = split_rel(rel)
    if parts is None:
        return str(unsafe_path(what, rel, root, "is absolute or climbs out with '..'"))
    for i in range(len(parts) - 1):
        full = os.path.join(root, *parts[:i + 1])
        try:
            st = os.lstat(full)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            link = ("/".join(parts[:i + 1]), link_target(full))
            if package:
                return ("%s %s passes through the symlink %s -> %s that the package puts on its way; a preserved "
                        "path is moved only through plain directories; nothing was changed: the package is "
                        "refused (ask the vendor)" % ((what, rel) + link))
            return str(unsafe_path(what, rel, root, "passes through the symlink %s -> %s; a preserved path is "
                                   "moved only through plain directories" % link))
        if not stat.S_ISDIR(st.st_mode):
            return None
    return None


@contextlib.contextmanager
def parent_beneath(root, rel, what):
    """(descriptor of the directory that holds root/rel, its last name), reached through plain directories only,
    or None when a component on the way (or root itself) is missing; both descriptors are closed on leaving."""
    try:
        root_fd = open_root(root, "the install dir")
    except FileNotFoundError:  # an interrupted swap or rollback left no install dir: nothing there to read
        yield None
        return
    try:
        try:
            fd, name = parent_at(root_fd, rel, what, root)
        except FileNotFoundError:
            yield None
            return
        try:
            yield fd, name
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)


def lstat_beneath(root, rel, what):
    """The lstat of root/rel reached through plain directories only; None when it is not there."""
    with parent_beneath(root, rel, what) as at:
        if at is None:
            return None
        try:
            return os.stat(at[1], dir_fd=at[0], follow_symlinks=False)
        except FileNotFoundError:
            return None


def hash_beneath(root, rel, what):
    """sha256 of the regular file root/rel reached through plain directories only; None when it is not one."""
    with parent_beneath(root, rel, what) as at:
        if at is None:
            return None
        try:
            ffd = os.open(at[1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                          dir_fd=at[0])
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP):
                return None
            raise
    with os.fdopen(ffd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        h = hashlib.sha256()
        for b in iter(lambda: f.read(CHUNK), b""):
            h.update(b)
        return h.hexdigest()


SET_ID = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


def copy_mode(uid, mode):
    """The mode a copy made by the agent gets: the source's, but set-user-ID, set-group-ID and sticky only when
    root owned the source (a set-id copy of another account's file, made by root, would run as root)."""
    return mode if uid == 0 else mode & ~SET_ID


def keep_owner(fd, uid, gid, mode):
    """Give the file or directory open as ``fd`` (one the agent just made) the owner and group ``uid``/``gid``
    when the agent runs as root (else it stays the agent's own), then ``mode`` (see copy_mode). The owner is
    changed first: chown clears set-id bits, and the mode chosen is the one that must stay."""
    if os.geteuid() == 0:
        os.fchown(fd, uid, gid)
    else:
        uid = os.geteuid()  # the copy is the agent's: keep a set-id bit only of root's own (never the case then)
    os.fchmod(fd, copy_mode(uid, mode))


def walk_tree(root, visit, full, skip=()):
    """Call ``visit(fd, name, rel, st)`` for each entry beneath ``root`` (lstat), in name order, walked from directory
    descriptors without following a link, until ``full()`` says enough was found. A directory named in ``skip`` is
    neither visited nor walked; one swapped for a link or gone meanwhile is not walked (the scan that copies or
    moves it refuses it on its own)."""
    skip = set(skip)

    def walk(fd, rel_dir):
        if rel_dir.count("/") >= MAX_DEPTH - 1:
            raise too_deep(root, rel_dir)
        for name in sorted(os.listdir(fd)):
            if full():
                return
            rel = rel_dir + "/" + name if rel_dir else name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode) and rel in skip:
                continue
            visit(fd, name, rel, st)
            if stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(name, OPEN_DIR, dir_fd=fd)
                except OSError:
                    continue
                try:
                    walk(sub, rel)
                finally:
                    os.close(sub)

    fd = open_root(root, "the install dir")
    try:
        walk(fd, "")
    finally:
        os.close(fd)


def walk_deep_said(root, visit, full, skip, found):
    """walk_tree for a check that lists problems: a tree deeper than MAX_DEPTH is one more problem in ``found``
    (refused before stop like the others), not an error that ends the request."""
    try:
        walk_tree(root, visit, full, skip)
    except AgentError as e:
        if e.kind != "too_many_files":
            raise
        found.append(str(e))


def setid_problems(root, skip=()):
    """One sentence for each regular file below ``root`` that is set-user-ID or set-group-ID and not owned by root,
    or that another account can reach and is sparse or huge (copy_problem) (walked from descriptors, no link
    followed; at most 20). The agent copies install files as root (a patch, the backup of config and of other
    accounts' files, a rollback): such a file is refused before anything is changed, never copied. Directories
    named in ``skip`` (preserved data the agent only renames, never copies) are not walked."""
    found = []

    def visit(fd, name, rel, st):
        if stat.S_ISREG(st.st_mode) and (st.st_uid != os.geteuid() or st.st_nlink > 1) and \
                copy_problem(st, "install file", rel):  # the backup copies such a file (manifests.snapshot)
            found.append(copy_problem(st, "install file", rel))
        elif stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID) and st.st_uid != 0:
            found.append("install file %s is set-user-ID or set-group-ID (mode %04o) and owned by uid %d, not "
                         "root: the agent will not copy it (a copy made by root could run as root); nothing "
                         "was changed: remove the bits (chmod ug-s %s) or, when the vendor ships the file so, "
                         "make root its owner" % (rel, stat.S_IMODE(st.st_mode), st.st_uid,
                                                  os.path.join(root, rel)))

    walk_deep_said(root, visit, lambda: len(found) >= 20, skip, found)
    return found


#: a file whose blocks hold this much less than its size is mostly a hole (a sparse file)
SPARSE_SLACK = 1 << 20
#: the largest file the agent copies (a preserved config or cache file, a patch's product file, a backup copy)
COPY_FILE_MAX = 1 << 30


def sparse(st):
    """Is the file of stat ``st`` sparse: its apparent size more than SPARSE_SLACK beyond the bytes its blocks
    hold (a small file, or one a file system stores compressed, is never called so below the slack)?"""
    return st.st_size - st.st_blocks * 512 > SPARSE_SLACK


def copy_problem(st, what, rel):
    """Why the regular file of stat ``st`` is not copied by the agent (None when it may be). Its owner can make it
    sparse (a hole of any size costs it nothing) or huge; the agent, often root, would write every byte of it densely
    and fill the file system (root's reserve too) before the service is even stopped."""
    if sparse(st):
        why = "is a sparse file (%d bytes, of which %d on disk): a copy would write every byte of it" % (
            st.st_size, st.st_blocks * 512)
    elif st.st_size > COPY_FILE_MAX:
        why = "is %d bytes, more than the %d the agent copies" % (st.st_size, COPY_FILE_MAX)
    else:
        return None
    return ("%s %s %s; nothing was changed: make it an ordinary file of its real size (cp --sparse=never), or "
            "remove it" % (what, rel, why))


def copy_size_seen(fin, fout, size, what, name):
    """Copy exactly ``size`` bytes (the size copy_problem judged at open) of ``fin`` to ``fout``; AgentError
    (unsafe_path) naming the file when it ends sooner or goes on. Its owner can grow it as a hole while the copy
    runs: read to EOF, the agent (often root) would write zeros until the file system is full."""
    left = size
    while left > 0:
        block = fin.read(min(CHUNK, left))
        if not block:
            break
        fout.write(block)
        left -= len(block)
    if left or fin.read(1) or os.fstat(fin.fileno()).st_size != size:
        raise AgentError("%s %s changed size while it was copied (%d bytes when it was opened, %d now): refused, "
                         "nothing was changed; let its owner finish writing it, then run again"
                         % (what, name, size, os.fstat(fin.fileno()).st_size), "unsafe_path", path=name)


def copied_files(root, rels, what="preserved path"):
    """[(rel, lstat)] of every regular file the paths ``rels`` name below ``root`` (a directory: every file below
    it), walked from descriptors with O_NOFOLLOW after each path is resolved beneath root; what cannot be reached
    so is left out (check_host_paths names a link that leads out)."""
    out = []

    def visit(fd, name, rel):
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode):
            out.append((rel, st))
        elif stat.S_ISDIR(st.st_mode):
            sub = open_dir_at(fd, name, what, root)
            try:
                for entry in sorted(os.listdir(sub)):
                    visit(sub, entry, rel + "/" + entry)
            finally:
                os.close(sub)

    try:
        root_fd = open_root(root, "the install dir")
    except (AgentError, OSError):
        return out
    try:
        for rel in rels:
            try:
                rel = "/".join(resolve_beneath(root, rel, what))
                fd, name = parent_at(root_fd, rel, what, root)
            except (AgentError, OSError):
                continue
            try:
                visit(fd, name, rel)
            except (AgentError, OSError):
                pass  # swapped or gone while it was walked: the copy itself refuses what it cannot copy
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
    return out


def copy_out(parent_fd, name, dst_fd, dst_name, what="file", owner=None, shown=None):
    """Copy ``name`` in directory ``parent_fd`` (a file, a link as a link, or a directory) to the new name
    ``dst_name`` in directory ``dst_fd``, owners, modes and times kept (set-id and sticky bits only of what root
    owns, see keep_owner); nothing on either side is followed (``what`` names the source in messages).
    ``owner``: (uid, gid, mode) a copied regular file gets instead of its source's; ``shown``: the path messages
    give (its path in the tree; default ``name``)."""
    shown = shown or name
    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=parent_fd), dst_name, dir_fd=dst_fd)
        if os.geteuid() == 0:  # the link itself (never what it names)
            os.chown(dst_name, st.st_uid, st.st_gid, dir_fd=dst_fd, follow_symlinks=False)
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, OPEN_DIR, dir_fd=parent_fd)
        try:
            if crosses(parent_fd, fd):  # a mount's files lie outside: never copied (see mounts.py)
                raise across_mount("%s %s" % (what, name), source_of(fd))
            st = os.fstat(fd)  # the owner and mode of the directory opened, not of whatever the name held before
            os.mkdir(dst_name, 0o700, dir_fd=dst_fd)
            out = os.open(dst_name, OPEN_DIR, dir_fd=dst_fd)
            try:
                for entry in sorted(os.listdir(fd)):
                    copy_out(fd, entry, out, entry, what, shown=shown + "/" + entry)
                keep_owner(out, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(out)
        finally:
            os.close(fd)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=parent_fd)
        with os.fdopen(fd, "rb") as fin:
            st = os.fstat(fin.fileno())  # owner, mode and times of the file opened (a name swapped after the stat
            if not stat.S_ISREG(st.st_mode):  # above must not lend its set-id bits or its owner to another file)
                raise AgentError("%s %s changed while it was copied; refusing it" % (what, shown), "needs_person")
            problem = copy_problem(st, what, shown)
            if problem:  # made sparse or huge since it was checked: refused here too, nothing written
                raise AgentError(problem, "unsafe_path", path=shown)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            with os.fdopen(os.open(dst_name, flags, 0o600, dir_fd=dst_fd), "wb") as fout:
                copy_size_seen(fin, fout, st.st_size, what, shown)
                fout.flush()
                keep_owner(fout.fileno(), *(owner or (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))))
                os.utime(fout.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        raise AgentError("%s %s is neither a file, a directory nor a link; refusing to copy it" % (what, shown),
                         "needs_person")


class DirFds(object):
    """Descriptors of the plain directories below a root, opened once each with O_NOFOLLOW."""

    def __init__(self, root, what, create=False):
        self.root, self.what, self.create = root, what, create
        self.fds = {"": open_root(root, what)}

    def get(self, rel_dir):
        if rel_dir not in self.fds:
            head, _, name = rel_dir.rpartition("/")
            parent = self.get(head)
            if self.create:
                try:
                    os.mkdir(name, 0o755, dir_fd=parent)
                except FileExistsError:
                    pass
            fd = open_dir_at(parent, name, self.what, self.root)
            if crosses(parent, fd):  # a mount's files lie outside: never copied, linked or moved (see mounts.py)
                try:
                    raise across_mount(os.path.join(self.root, rel_dir), source_of(fd))
                finally:
                    os.close(fd)
            self.fds[rel_dir] = fd
        return self.fds[rel_dir]

    def at(self, rel):
        """(directory descriptor, last name) of a relative path."""
        head, _, name = rel.rpartition("/")
        return self.get(head), name

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


def move_beneath(src_fd, dst_fd, rel, what, src_root, dst_root, replace=True):
    """Rename src_root/rel to dst_root/rel (its parents made in dst), from descriptors: no component on either
    side is followed. An existing dst is removed first (``replace``), else refused. False when src has none."""
    try:
        sfd, name = parent_at(src_fd, rel, what, src_root)
    except FileNotFoundError:
        return False
    try:
        try:
            os.stat(name, dir_fd=sfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        dfd, _ = parent_at(dst_fd, rel, what, dst_root, create=True)
        try:
            try:
                os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if not replace:
                    raise AgentError("%s exists in both %s and %s; not choosing between them" % (rel, src_root, dst_root),
                                     "needs_person")
                remove_at(dfd, name)
            except FileNotFoundError:
                pass
            os.rename(name, name, src_dir_fd=sfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
    return True


def dir_id(st):
    return [st.st_dev, st.st_ino]


def install_name(paths):
    """(descriptor of the install dir's parent, the install dir's name in it)."""
    parent, name = os.path.split(paths.install.rstrip("/"))
    return os.open(parent or "/", OPEN_DIR & ~os.O_NOFOLLOW), name


def check_install_id(pfd, name, paths, allowed):
    """The lstat of the install name when it is still one of the directories ``allowed`` ([st_dev, st_ino]
    recorded by prepare; None: not recorded), None when it is absent; else refused (needs_person)."""
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode) or (allowed is not None and dir_id(st) not in allowed):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not the directory this run prepared"
        raise AgentError("the install dir %s is now %s; refusing to move it or anything in it (nothing was "
                         "moved): check the host by hand" % (paths.install, what), "needs_person", path=paths.install)
    return st


def install_mount_problem(pfd, name, paths):
    """The refusal (an AgentError, needs_person) when the install dir ``name`` (in the directory open as ``pfd``) is
    itself a mount point or holds one: moving it would carry the mounted files into the run's state dir, where the
    run's trees are deleted. None when it holds none, or is not a directory (said elsewhere)."""
    try:
        fd = os.open(name, OPEN_DIR, dir_fd=pfd)
    except OSError:
        return None
    try:
        if crosses(pfd, fd):
            return across_mount(paths.install, source_of(fd))
        found = mount_points_at(fd)
        if found:
            return across_mount(os.path.join(paths.install, found[0][0]), found[0][1])
    finally:
        os.close(fd)
    return None


def rename_install_out(pfd, name, dst, paths, allowed):
    """Move the install dir (still one of ``allowed``, holding no mount point) to ``dst``; moved back and refused
    when what moved was something else (it was swapped between the check and the rename)."""
    check_install_id(pfd, name, paths, allowed)
    problem = install_mount_problem(pfd, name, paths)
    if problem is not None:
        raise problem
    os.rename(name, dst, src_dir_fd=pfd)
    st = os.lstat(dst)
    if not stat.S_ISDIR(st.st_mode) or (allowed is not None and dir_id(st) not in allowed):
        os.rename(dst, name, dst_dir_fd=pfd)
        raise AgentError("the install dir %s was swapped while it was moved; it was put back, nothing else was "
                         "moved: check the host by hand" % paths.install, "needs_person", path=paths.install)
