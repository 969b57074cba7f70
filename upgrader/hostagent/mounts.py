"""Mount boundaries: the agent never deletes, copies or moves a tree across one.

A mount inside an install dir (a shared directory bind-mounted into data/, logs on another disk, a tmpfs at work/)
holds files that physically lie outside the install dir; an upgrade moves the install dir aside and deletes what it
leaves there, so a tree the agent walks recursively is refused at the first mount point it meets. A bind mount of a
directory of the same file system has the same st_dev, so mounts are told apart by their id (``mnt_id`` of
/proc/self/fdinfo/FD), st_dev where /proc does not say.
"""

import os
import re
import stat

from .common import MAX_DEPTH, AgentError

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def mount_id(fd):
    """The id of the mount the open descriptor ``fd`` lies on, ("dev", st_dev) when /proc does not tell it. Read with
    one os.read (a run asks it for every directory it copies or deletes)."""
    try:
        info = os.open("/proc/self/fdinfo/%d" % fd, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            data = os.read(info, 4096)
        finally:
            os.close(info)
        at = data.find(b"mnt_id:")
        if at >= 0:
            return int(data[at + 7:].split(None, 1)[0])
    except (OSError, ValueError, IndexError):
        pass
    return ("dev", os.fstat(fd).st_dev)


def crosses(parent_fd, fd):
    """Whether the directory open as ``fd`` lies on another mount than its parent, open as ``parent_fd``."""
    return os.fstat(parent_fd).st_dev != os.fstat(fd).st_dev or mount_id(parent_fd) != mount_id(fd)


def source_of(fd):
    """What is mounted where ``fd`` lies, as /proc/self/mountinfo says ("tmpfs tmpfs", "ext4 /dev/sdb1 /shared")."""
    mid = str(mount_id(fd))
    for entry in mount_table() or []:
        if entry[0] == mid:
            return described(entry)
    return "device %d" % os.fstat(fd).st_dev


def mount_table():
    """[(mount id, root, mount point, file system type, source)] of /proc/self/mountinfo, or None when it cannot be
    read. The table is split as the kernel writes it: lines on b"\\n" and fields on b" " only (it escapes space, tab,
    newline and backslash in a path as \\ooo and nothing else), never on what str.splitlines or str.split also
    take for a line or a field break (\\r, \\x0b, \\x1c, \\x85, \\u2028...): a mount point whose name holds
    one of those would otherwise forge entries of its own or hide itself."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            data = f.read()
    except OSError:
        return None
    table = []
    for line in data.split(b"\n"):
        head, _, tail = line.partition(b" - ")
        fields, post = head.split(b" "), tail.split(b" ")
        if len(fields) < 5 or len(post) < 2:
            continue
        table.append((fields[0].decode("ascii", "replace"), unescape(fields[3]), unescape(fields[4]),
                      os.fsdecode(post[0]), unescape(post[1])))
    return table


def described(entry):
    """A mount table entry in a message: "TYPE SOURCE", and the mounted directory when it is not the root."""
    _, root, _, kind, source = entry
    return "%s %s%s" % (kind, source, "" if root == "/" else " " + root)


def unescape(field):
    """A path field of /proc/self/mountinfo (bytes) as it is, decoded as the file system's names are (the kernel
    writes space, tab, newline and backslash as \\ooo)."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes((int(m.group(1), 8) & 0xFF,)), field))


def mount_points_at(fd, rel="", here=None):
    """[(rel, source)] of every mount point below the directory open as ``fd`` (``rel`` its name in messages), each
    met without following a link and not entered. The mount table (/proc/self/mountinfo) names them at once; a
    directory walk, telling mounts apart by id, where the table cannot be read or does not place ``fd``."""
    if not rel and here is None:
        listed = listed_mount_points(fd)
        if listed is not None:
            return listed
    return walked_mount_points(fd, rel, here)


def listed_mount_points(fd):
    """mount_points_at from the mount table: the mount points whose path lies below the one the kernel gives for
    ``fd`` (outermost only: a mount inside another is not entered), or None when that path is not known (no /proc,
    a directory deleted meanwhile)."""
    try:
        where = os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        return None
    table = mount_table()
    if table is None or not where.startswith("/") or where.endswith(" (deleted)"):
        return None
    prefix = where.rstrip("/") + "/"
    found = {}
    for entry in table:
        point = entry[2]
        if point.startswith(prefix) and len(point) > len(prefix):
            found[point[len(prefix):]] = described(entry)
    outer = sorted(r for r in found if not any(r.startswith(o + "/") for o in found if o != r))
    return [(r, found[r]) for r in outer]


def walked_mount_points(fd, rel="", here=None):
    """mount_points_at by walking the tree below ``fd``."""
    found = []
    if here is None:
        here = (os.fstat(fd).st_dev, mount_id(fd))
    for name in sorted(os.listdir(fd)):
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        try:
            sub = os.open(name, OPEN_DIR, dir_fd=fd)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            path = rel + "/" + name if rel else name
            if (os.fstat(sub).st_dev, mount_id(sub)) != here:
                found.append((path, source_of(sub)))
            else:
                found += walked_mount_points(sub, path, here)
        finally:
            os.close(sub)
    return found


def mount_points(path):
    """mount_points_at for the directory ``path`` (its last component not followed)."""
    fd = os.open(path, OPEN_DIR)
    try:
        return mount_points_at(fd)
    finally:
        os.close(fd)


def across_mount(shown, source):
    """The refusal of a recursive delete that met a mount point: the tree is left as it is."""
    return AgentError("%s is a mount point (%s mounted there): the agent never deletes, copies or moves across a "
                      "mount, and left that tree as it is: unmount it, then check the host and release the run"
                      % (shown, source), "needs_person", path=shown, mount=True)


def remove_tree(path):
    """Remove ``path`` (a file or link unlinked, a directory emptied from descriptors and removed) when no mount point
    lies in it; otherwise refused (across_mount) before anything is deleted, and again at any mount point met while
    deleting (one put there meanwhile)."""
    parent, name = os.path.split(os.path.abspath(path))
    pfd = os.open(parent, OPEN_DIR & ~os.O_NOFOLLOW)
    try:
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=pfd)
            return
        fd = os.open(name, OPEN_DIR, dir_fd=pfd)
        try:
            if crosses(pfd, fd):
                raise across_mount(path, source_of(fd))
            found = mount_points_at(fd)
            if found:
                raise across_mount(os.path.join(path, found[0][0]), found[0][1])
        finally:
            os.close(fd)
        remove_at(pfd, name, path)
    finally:
        os.close(pfd)


def remove_at(parent_fd, name, shown, top=None, depth=0):
    """Remove ``name`` in directory ``parent_fd`` (``shown`` its path in messages): nothing it holds is followed, and
    a directory on another mount than its parent is refused (across_mount), not entered. A directory MAX_DEPTH
    levels down is not entered: it is renamed into the removed tree's top directory (``top``, the same file system)
    under a name of its own and removed from there, so a chain of any depth goes with bounded recursion and
    descriptors (the service account can make one thousands deep in its own tree)."""
    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    fd = os.open(name, OPEN_DIR, dir_fd=parent_fd)
    try:
        if crosses(parent_fd, fd):
            raise across_mount(shown, source_of(fd))
        while True:  # the top directory lists again what deeper levels moved up into it
            entries = os.listdir(fd)
            if not entries:
                break
            for entry in entries:
                if top is not None and depth >= MAX_DEPTH and _is_dir_at(fd, entry):
                    _move_up(fd, entry, top)
                    continue
                remove_at(fd, entry, os.path.join(shown, entry), fd if top is None else top, depth + 1)
            if top is not None:
                break  # only the top directory waits for what was moved into it
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


_DEEP = [0]


def _move_up(fd, entry, top):
    """Rename directory ``entry`` of ``fd`` into ``top`` under a new name (one the tree already has is skipped)."""
    import errno

    for _ in range(1000):
        _DEEP[0] += 1
        try:
            os.rename(entry, ".upgrader-deep-%d-%d" % (os.getpid(), _DEEP[0]), src_dir_fd=fd, dst_dir_fd=top)
            return
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise
    raise AgentError("cannot move a deep directory up to remove it: every name tried is taken", "needs_person")


def _is_dir_at(fd, name):
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False
