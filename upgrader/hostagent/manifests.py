"""Manifests: what a product tree is, file by file; the staged tree built from them, the hard-link backup
snapshot and its verification.
"""

import errno
import hashlib
import os
import stat

from .beneath import (OPEN_DIR, DirFds, copy_mode, copy_out, keep_owner, open_dir_at, open_root, parent_at, remove_at,
                      walk_tree)
from .common import CHUNK, MAX_DEPTH, AgentError, too_deep
from .mounts import across_mount, crosses, source_of


#: files, directories and links a product tree may hold where it is read before stop (the install, the staged tree):
#: its manifest keeps about 1.1 KB of each in the agent, and the backup links or copies each one. An install with
#: 400,000 empty files made a 441 MB root agent and a 91 s backup; a product has a few thousand.
MAX_ENTRIES = 200000


def is_preserved(rel, preserved):
    for p in preserved:
        if rel == p or rel.startswith(p + "/"):
            return True
    return False


def under_preserved(rel, preserved):
    """True when a preserved path lies inside directory rel (rel must be kept as a directory)."""
    return any(p.startswith(rel + "/") for p in preserved)


def scan_tree(root, preserved, hash_files=True, capped=False):
    """Manifest of the product files under root, skipping preserved paths (see scan_fd); empty when root is
    missing, refused when root itself is a link."""
    try:
        fd = open_root(root, "the tree")
    except FileNotFoundError:
        return {"files": {}, "dirs": {}, "links": {}}
    try:
        return scan_fd(fd, root, preserved, hash_files, capped)
    finally:
        os.close(fd)


def scan_fd(root_fd, root, preserved, hash_files=True, capped=False):
    """Manifest of the directory open as ``root_fd`` (``root``, for messages), walked from descriptors: each entry
    is lstat'ed in the directory it was listed from, a directory is entered by opening that name there with
    O_NOFOLLOW (one swapped for a link meanwhile is refused, not followed), a link is recorded as a link and a
    file is hashed from its own descriptor (its size, inode and time taken from that descriptor too).

    ``capped`` (a read before stop: plan, prepare): a tree of more than MAX_ENTRIES entries is refused
    (too_many_files) once the walk has seen that many, naming the directory that holds the most. A read after
    stop (verifying the installed tree, a rollback) is never refused for its size: it must finish."""
    files, dirs, links = {}, {}, {}
    counts = {}  # directory -> the entries listed directly in it (with capped)

    def walk(fd, rel_dir):
        if rel_dir.count("/") >= MAX_DEPTH - 1:
            raise too_deep(root, rel_dir)
        with os.scandir(fd) as it:
            names = sorted(e.name for e in it)
        if capped:
            counts[rel_dir] = len(names)
        for name in names:
            rel = rel_dir + "/" + name if rel_dir else name
            if is_preserved(rel, preserved):
                continue
            if capped and len(files) + len(dirs) + len(links) >= MAX_ENTRIES:
                raise AgentError(too_many(root, counts), "too_many_files", path=root)
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since it was listed
            if stat.S_ISLNK(st.st_mode):
                try:
                    links[rel] = os.readlink(name, dir_fd=fd)
                except OSError:
                    raise AgentError("%s/%s changed while the tree was read (a link, then not): a directory is "
                                     "being swapped for a link; refusing to go on" % (root, rel), "unsafe_path",
                                     path=rel)
            elif stat.S_ISDIR(st.st_mode):
                dirs[rel] = dir_entry(st)
                sub = open_dir_at(fd, name, "product directory %s" % rel, root)
                try:
                    if crosses(fd, sub):  # a mount's files lie outside the tree: never read as its own
                        raise across_mount("%s/%s" % (root, rel), source_of(sub))
                    walk(sub, rel)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                if hash_files:
                    st, digest = hash_at(fd, name, "%s/%s" % (root, rel))
                entry = {"size": st.st_size, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                         "gid": st.st_gid, "ino": st.st_ino, "mtime": st.st_mtime_ns}
                if hash_files:
                    entry["sha256"] = digest
                files[rel] = entry
            else:
                raise AgentError("%s/%s is neither a file, a directory nor a link; refusing to handle it"
                                 % (root, rel), "needs_person")

    walk(root_fd, "")
    return {"files": files, "dirs": dirs, "links": links}


def too_many(root, counts):
    """The sentence that refuses the tree ``root`` for holding more than MAX_ENTRIES entries: it names the directory
    with the most entries of its own (``counts``: directory, relative to root -> entries in it) and what to do."""
    most = max(counts, key=lambda rel: counts[rel])
    return ("%s holds more than %d files, directories and links; the most are in %s (at least %d): refused before "
            "stop, nothing changed. A product has far fewer: the files a service writes (data, sessions, caches) "
            "belong in the playbook's preserve list as kind data (moved to the new version, never copied nor "
            "listed), in your own copy of the playbook; or move out of the install dir what is not the product's"
            % (root, MAX_ENTRIES, os.path.join(root, most) if most else root, counts[most]))


def too_large(root, preserved):
    """None, or the sentence (too_many) that refuses the tree ``root`` for holding more than MAX_ENTRIES entries
    beside its preserved paths. A walk from descriptors that keeps one count per directory, no manifest: read before
    anything hashes or lists the tree whole (plan, a run's preflight)."""
    counts, seen = {}, [0]

    def visit(fd, name, rel, st):
        seen[0] += 1
        parent = rel.rpartition("/")[0]
        counts[parent] = counts.get(parent, 0) + 1

    try:
        walk_tree(root, visit, lambda: seen[0] > MAX_ENTRIES, skip=preserved)
    except AgentError as e:
        if e.kind == "too_many_files":  # deeper than MAX_DEPTH: refused like a tree too large
            return str(e)
        return None  # a tree it cannot read whole: the scan that reads it (capped too) says why
    except OSError:
        return None
    return too_many(root, counts) if seen[0] > MAX_ENTRIES else None


def dir_entry(st):
    """A directory's manifest entry (its lstat ``st``): owner, group and mode, given back by chmod_dirs."""
    return {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


def keep_top(fd, top):
    """Give the tree's top directory (open as ``fd``: a directory the agent made, root's when it runs as root) the
    owner, group and mode ``top`` (dir_entry) of the install dir it becomes: the install dir's owner is the account
    the playbook's commands run as (processes.command_account), so a tree the agent made must never turn it root's."""
    keep_owner(fd, top["uid"], top["gid"], top["mode"])


def top_differs(install, top):
    """Why the install dir ``install`` no longer has the owner, group and mode ``top`` (dir_entry) a manifest
    recorded for it (None when it has them). An agent that is not root keeps its own account (keep_owner)."""
    st = os.lstat(install)
    uid, gid = (top["uid"], top["gid"]) if os.geteuid() == 0 else (os.geteuid(), st.st_gid)
    want = (uid, gid, copy_mode(uid, top["mode"]))
    have = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    if have == want:
        return None
    return "owner %d:%d mode %o, recorded %d:%d mode %o" % (have[0], have[1], have[2], want[0], want[1], want[2])


def hash_at(dfd, name, full):
    """(fstat, sha256) of the regular file ``name`` in directory ``dfd``, opened with O_NOFOLLOW; a link or
    anything but a regular file there is refused (``full`` names it)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AgentError("%s became a symlink while it was read; refusing it" % full, "unsafe_path", path=full)
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AgentError("%s is not a regular file any more; refusing it" % full, "unsafe_path", path=full)
        h = hashlib.sha256()
        for b in iter(lambda: f.read(CHUNK), b""):
            h.update(b)
        return st, h.hexdigest()


def drift(installed, current):
    """Product files changed by hand since the last install: changed, added, removed."""
    out = []
    if not installed:
        return out
    old = installed.get("files", {})
    new = current.get("files", {})
    for rel in sorted(set(old) | set(new)):
        a, b = old.get(rel), new.get(rel)
        if a and not b:
            out.append({"path": rel, "change": "removed"})
        elif b and not a:
            out.append({"path": rel, "change": "added"})
        elif a.get("sha256") != b.get("sha256"):
            out.append({"path": rel, "change": "modified"})
        elif a.get("mode") != b.get("mode"):
            out.append({"path": rel, "change": "mode"})
    return out


def copy_tree(src, dst, manifest):
    """A full copy of the product files of src (manifest) into the new directory dst, modes kept: read through
    plain directories only, written from descriptors of dst's directories (never through a link in either)."""
    os.makedirs(dst)
    fds, out = DirFds(src, "product file"), DirFds(dst, "the staged tree", create=True)
    try:
        for rel in sorted(manifest["dirs"]):
            out.get(rel)
        for rel in manifest["files"]:
            fd, name = fds.at(rel)
            dfd, dname = out.at(rel)
            copy_out(fd, name, dfd, dname, "product file", shown=rel)
        for rel, target in manifest["links"].items():
            dfd, dname = out.at(rel)
            os.symlink(target, dname, dir_fd=dfd)
        chmod_dirs(out, manifest["dirs"])
    finally:
        fds.close()
        out.close()


def chmod_dirs(fds, dirs):
    """Give each directory of a manifest its owner, group and mode, on the descriptor of that directory (DirFds
    ``fds``): set-id and sticky bits only of one root owned (see keep_owner)."""
    for rel, d in dirs.items():
        fd = fds.get(rel)
        if "uid" in d and "gid" in d:
            keep_owner(fd, d["uid"], d["gid"], d["mode"])
        else:  # a manifest of an older agent (owner not recorded): the mode, without set-id and sticky bits
            os.fchmod(fd, copy_mode(None, d["mode"]))


def scan_names(fd):
    """[(name, lstat)] of directory ``fd``, sorted."""
    with os.scandir(fd) as it:
        names = sorted(e.name for e in it)
    return [(n, os.stat(n, dir_fd=fd, follow_symlinks=False)) for n in names]


def overlay(src, dst):
    """Move the extracted package tree src over the tree dst (a patch): a directory of the package replaces
    anything else of that name, a file or link replaces anything of that name; all from descriptors."""
    def merge(sfd, dfd):
        for name, st in scan_names(sfd):
            try:
                there = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                there = None
            if stat.S_ISDIR(st.st_mode):
                if there is not None and not stat.S_ISDIR(there.st_mode):
                    remove_at(dfd, name)
                    there = None
                if there is None:
                    os.mkdir(name, 0o755, dir_fd=dfd)
                a = os.open(name, OPEN_DIR, dir_fd=sfd)
                try:
                    b = open_dir_at(dfd, name, "the staged tree", dst)
                    try:
                        merge(a, b)
                    finally:
                        os.close(b)
                finally:
                    os.close(a)
            else:
                if there is not None and stat.S_ISDIR(there.st_mode):
                    remove_at(dfd, name)
                os.replace(name, name, src_dir_fd=sfd, dst_dir_fd=dfd)

    sfd, dfd = open_root(src, "the extracted package"), open_root(dst, "the staged tree")
    try:
        merge(sfd, dfd)
    finally:
        os.close(sfd)
        os.close(dfd)


def snapshot(src, dst, manifest, restore=False):
    """The hard-link backup of the product files of src (manifest) in the new directory dst: linked from plain
    directories only, the file itself never followed, created from descriptors of dst's own directories.

    A hard link shares the file: only a file no other account can reach is linked. A file of another account (the
    service account's own product files, when the agent is root), or one with another link (which may lie anywhere
    that account writes, data/.keep), is copied instead, as the agent's own, and the copy's sha256 checked against
    the manifest's: that account cannot alter the verified backup afterwards. ``restore`` (a rollback building the
    tree back from the backup): such a copy is copied again, with the owner, group and mode the manifest recorded,
    so the live file is the account's again and the backup stays the agent's alone."""
    os.makedirs(dst)
    fds, out = DirFds(src, "product file"), DirFds(dst, "the backup", create=True)
    try:
        for rel in sorted(manifest["dirs"]):
            out.get(rel)
        for rel, f in manifest["files"].items():
            fd, name = fds.at(rel)
            dfd, dname = out.at(rel)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if restore and "uid" in f and (st.st_uid, st.st_gid) != (f["uid"], f["gid"]):
                copy_out(fd, name, dfd, dname, "backup copy of product file", (f["uid"], f["gid"], f["mode"]), rel)
            elif not restore and (st.st_uid != os.geteuid() or st.st_nlink > 1):
                # the agent's own, without set-id bits (the restore gives the manifest's owner and mode back)
                copy_out(fd, name, dfd, dname, "product file", (os.geteuid(), os.getegid(), f["mode"] & 0o777), rel)
                if f.get("sha256") and hash_at(dfd, dname, os.path.join(dst, rel))[1] != f["sha256"]:
                    raise AgentError("product file %s changed while it was backed up (after it was hashed); "
                                     "nothing was stopped: run again when nothing writes the product's files"
                                     % rel, "failed", path=rel)
            else:
                os.link(name, dname, src_dir_fd=fd, dst_dir_fd=dfd, follow_symlinks=False)
        for rel, target in manifest["links"].items():
            dfd, dname = out.at(rel)
            os.symlink(target, dname, dir_fd=dfd)
    finally:
        fds.close()
        out.close()


def copy_preserved(root, backup, rel):
    """Copy one preserved config path (file or directory) into backup/<rel>; return its manifest. It is read
    from descriptors through plain directories only (a link on its way is refused, never followed), and written
    the same way into backup (made if missing): a link there (the backup's copy of a product link) is refused."""
    os.makedirs(backup, 0o700, exist_ok=True)
    root_fd = open_root(root, "the install dir")
    try:
        fd, name = parent_at(root_fd, rel, "preserved path", root)
        try:
            bfd = open_root(backup, "the backup")
            try:
                dfd, dname = parent_at(bfd, rel, "the backup's copy of preserved path", backup, create=True)
            finally:
                os.close(bfd)
            try:
                try:
                    remove_at(dfd, dname)
                except FileNotFoundError:
                    pass
                copy_out(fd, name, dfd, dname, "preserved path", shown=rel)
                st = os.stat(dname, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    sub = open_dir_at(dfd, dname, "the backup's copy of preserved path", backup)
                    try:
                        return {"path": rel, "dir": True, "tree": scan_fd(sub, os.path.join(backup, rel), [])}
                    finally:
                        os.close(sub)
                digest = hash_at(dfd, dname, os.path.join(backup, rel))[1] if stat.S_ISREG(st.st_mode) else None
                return {"path": rel, "dir": False, "sha256": digest, "mode": stat.S_IMODE(st.st_mode)}
            finally:
                os.close(dfd)
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)


def unchanged_inode(st, f):
    """The very file the manifest hashed (same inode, size and modification time): its bytes are the
    bytes that were hashed, without reading them again."""
    return st.st_ino == f.get("ino") and st.st_size == f["size"] and st.st_mtime_ns == f.get("mtime")


def verify_backup(backup, manifest, rehash=False):
    """Every product file of the manifest is in the backup with its sha256. ``rehash``: "full" reads
    every file again; "quick" reads only files whose inode, size or time differ from the manifest;
    False checks presence and size (right after the backup was made and hashed). Read from descriptors of the
    backup's directories, never through a link."""
    fds = DirFds(backup, "the backup")
    try:
        for rel, f in manifest["tree"]["files"].items():
            try:
                fd, name = fds.at(rel)
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except (OSError, AgentError):
                raise AgentError("backup is missing %s" % rel, "needs_person")
            if not stat.S_ISREG(st.st_mode) or st.st_size != f["size"]:
                raise AgentError("backup copy of %s does not match its checksum" % rel, "needs_person")
            if rehash == "quick" and unchanged_inode(st, f):
                continue
            if rehash and hash_at(fd, name, os.path.join(backup, rel))[1] != f["sha256"]:
                raise AgentError("backup copy of %s does not match its checksum" % rel, "needs_person")
        for c in manifest["config"]:
            if c["dir"] or not c.get("sha256"):
                continue
            try:
                fd, name = fds.at(c["path"])
                digest = hash_at(fd, name, os.path.join(backup, c["path"]))[1]
            except (OSError, AgentError):
                digest = None
            if digest != c["sha256"]:
                raise AgentError("backup copy of %s does not match its checksum" % c["path"], "needs_person")
    finally:
        fds.close()
