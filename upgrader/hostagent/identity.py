"""Which machine and which directory an install is, whatever name and spelling the inventory gives it.

The controller refuses a plan with two entries for one install (``//opt/x``, ``/opt/./x``, a link to it, the
machine under another address): it compares the machine's identity (``/etc/machine-id``; without one, the
running kernel's boot id) and the install dir's (st_dev, st_ino), the link followed. Read-only.
"""

import os

_SOURCES = ("/etc/machine-id", "/var/lib/dbus/machine-id", "/proc/sys/kernel/random/boot_id")


def machine_identity():
    """{"machine": "<source>:<id>"} or {"machine": None} when no source can be read."""
    for source in _SOURCES:
        try:
            with open(source, "r") as fh:
                value = fh.read(200).strip()
        except (OSError, ValueError):
            continue
        if value:
            return {"machine": "%s:%s" % (os.path.basename(source), value)}
    return {"machine": None}


def install_identity(install_dir):
    """[st_dev, st_ino] of the install dir (a link followed: a link to it is the same install), None if absent."""
    try:
        st = os.stat(install_dir)
    except OSError:
        return None
    return [st.st_dev, st.st_ino]


#: the install dir's earlier identities on this host: each time the agent itself puts another tree at the install's
#: path (the staged tree at install, the restored tree at rollback) it records {"from": old, "to": new} in the ledger
#: first, so that a plan made for the tree it replaced still names this install (a rolled-back run retried with its
#: unused approval), while a tree put there by anyone else is another install
LINEAGE = "install-lineage.jsonl"


def dir_identity(path, dir_fd=None):
    """[st_dev, st_ino] of a directory entry (never through a link), None if absent."""
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return [st.st_dev, st.st_ino]


def record_lineage(paths, before, after):
    """Record in every copy of the ledger that the agent replaces the install ``before`` by ``after`` (both
    [dev, ino]). Called before the rename; a failure to record leaves a plan of the old tree refused, never more."""
    import json

    from .ledger import ledger_fds
    from .state import append_line_at

    if not before or not after or before == after:
        return
    try:
        with ledger_fds(paths, create=True) as fds:
            for d, fd in fds:
                append_line_at(fd, LINEAGE, json.dumps({"from": list(before), "to": list(after)}) + "\n", d)
    except Exception:  # noqa: BLE001 - the swap itself must not fail for its record; the safe side is "refused"
        pass


def install_lineage(paths, current, limit=64):
    """The install's earlier identities, newest first, as this host's ledger recorded them back from ``current``."""
    import json
    import stat

    from .ledger import ledger_fds

    earlier = {}
    try:
        with ledger_fds(paths, strict=False) as fds:
            for _, fd in fds:
                try:
                    f = os.open(LINEAGE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
                except OSError:
                    continue
                try:
                    if not stat.S_ISREG(os.fstat(f).st_mode):
                        continue
                    text = os.read(f, 1 << 20).decode("utf-8", "replace")
                finally:
                    os.close(f)
                for line in text.splitlines():
                    try:
                        rec = json.loads(line)
                        earlier.setdefault(tuple(rec["to"]), list(rec["from"]))
                    except (ValueError, KeyError, TypeError):
                        continue
    except Exception:  # noqa: BLE001 - a read-only look: no ledger, no lineage
        return []
    out, seen, at = [], set(), tuple(current or ())
    while at in earlier and len(out) < limit:
        prev = earlier[at]
        if tuple(prev) in seen:
            break
        seen.add(tuple(prev))
        out.append(prev)
        at = tuple(prev)
    return out
