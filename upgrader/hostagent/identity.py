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
