"""Read-only facts of one install: its version, lock, free space, drift, cached packages, unsafe paths."""

import os
import stat
import sys

from .beneath import OPEN_DIR, check_host_paths, copied_files, resolve_beneath, walk_dirs
from .common import AGENT_FORMAT, DRIFT_LISTED, AgentError
from .identity import install_identity, install_lineage, machine_identity
from .ledger import ledger_drift, ledger_fds, ledger_serials
from .manifests import scan_tree, too_large as tree_too_large
from .processes import root_command_problems
from .state import Paths, read_lock, run_state
from .trustroot import describe, load_root
from .versions import read_version


def op_facts(req):
    paths = Paths(req)
    out = {"install_dir": paths.install, "state_dir": paths.state, "exists": os.path.isdir(paths.install),
           "python": sys.version.split()[0], "agent_format": AGENT_FORMAT}
    refused = _version_refused(req)
    if out["exists"] and refused:  # a trust-root host runs no playbook command outside a run it accepted
        out["version"], out["version_error"], out["version_refused"] = None, refused, "host_trust"
    elif out["exists"]:
        out["version"], out["version_error"] = read_version(paths, req["version_source"])
    else:
        out["version"], out["version_error"] = None, "install dir %s does not exist" % paths.install
    out["lock"] = read_lock(paths, checked=False)  # O_NOFOLLOW, size-capped: the guide shows its fields
    st = os.statvfs(os.path.dirname(paths.install.rstrip("/")) or "/")
    out["free_bytes"] = st.f_bavail * st.f_frsize
    with ledger_fds(paths, strict=False) as fds:  # a look only: the run's lock refuses a ledger copy not its own
        out["baseline"] = any(stat.S_ISREG(os.stat("installed.json", dir_fd=fd, follow_symlinks=False).st_mode)
                              for _, fd in fds if "installed.json" in os.listdir(fd))
    # a tree too large to scan (manifests.MAX_ENTRIES) is refused before stop, counted before anything lists it whole
    too_large = tree_too_large(paths.install, req.get("preserve", [])) if out["exists"] and (
        req.get("check_drift") or req.get("check_paths") is not None) else None
    if too_large and req.get("check_paths") is None:
        raise AgentError(too_large, "too_many_files", path=paths.install)
    if req.get("check_drift") and out["exists"] and not too_large:
        current = scan_tree(paths.install, req.get("preserve", []), capped=True)
        changes = ledger_drift(paths, current, strict=False)
        out["drift"] = changes[:DRIFT_LISTED]
        out["drift_count"] = len(changes)
        out["product_bytes"] = sum(f["size"] for f in current["files"].values())
    out["cached"] = [s for s in req.get("packages", []) if os.path.isfile(os.path.join(paths.packages, s + ".tar.gz"))]
    if req.get("check_paths") is not None and out["exists"]:
        out["unsafe_paths"] = ([too_large] if too_large else []) + check_host_paths(paths.install, req["check_paths"])
        # a command run as root in an install another account can change (its scripts, config, pid files)
        out["unsafe_paths"] += root_command_problems(paths.install, req["check_paths"].get("commands") or {})
        # the preserved config and cache the backup copies: counted in the free space a run needs
        out["copied_bytes"] = sum(st.st_size for _, st in copied_files(paths.install,
                                                                       req["check_paths"].get("copied", [])))
    elif req.get("check_commands") is not None and out["exists"]:
        # a rollback or resume runs the run's commands again: the same rule
        out["unsafe_paths"] = root_command_problems(paths.install, req["check_commands"].get("commands") or {})
    out["non_ascii"] = non_ascii_names(paths.install, req.get("ascii_dirs", []))
    out["catalog_serials"] = ledger_serials(paths, strict=False)
    install = install_identity(paths.install)  # one install, one entry; and the trees it replaced (lineage)
    out["identity"] = dict(machine_identity(), install=install)
    out["install_lineage"] = install_lineage(paths, install)
    out["host_trust"] = describe()  # whether this host keeps its own trust root (hosttrust.py)
    try:  # the product installed here by the host's own account (its ledger, root's statement, its files)
        root = load_root()
    except AgentError:
        root = None
    from .product import installed_product
    out["installed_product"] = installed_product(paths, root) if out["exists"] else None
    return out


def _version_refused(req):
    """hosttrust.version_command_refused for this request: the deciding module is compiled only on a host that has
    a trust root (without one every version source may be read), so a plan's read of a host does not pay for it."""
    try:
        if load_root() is None:
            return None
    except AgentError:
        pass  # a refused root: the deciding module says what that means
    from .hosttrust import version_command_refused
    return version_command_refused(req, req["version_source"])


def non_ascii_names(root, dirs):
    """The non-ASCII names in each directory of ``dirs`` (relative to ``root``): each resolved beneath root (a link
    inside is followed as the file system would, one that leads out refused) and listed from a descriptor opened
    one component at a time with O_NOFOLLOW, so nothing outside the install dir is ever listed. A directory that
    is missing, not a directory, or leads out is left out (check_host_paths reports the last)."""
    found = []
    for d in dirs:
        try:
            parts = resolve_beneath(root, d, "preflight.ascii_dirs entry")
        except AgentError:
            continue
        try:
            root_fd = os.open(root, OPEN_DIR)
        except OSError:
            return found
        if not parts:
            os.close(root_fd)
            continue
        try:
            fd = walk_dirs(root_fd, parts, "preflight.ascii_dirs entry", root)
        except (AgentError, FileNotFoundError, NotADirectoryError):
            continue
        finally:
            os.close(root_fd)
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        for name in sorted(names):
            try:
                name.encode("ascii")
            except UnicodeEncodeError:
                found.append(d + "/" + name)
    return found


def op_state(req):
    paths = Paths(req)
    return {"state": run_state(paths), "lock": read_lock(paths, checked=False),
            "backup": os.path.isfile(paths.run("backup", "manifest.json")),
            "install_exists": os.path.isdir(paths.install), "old_exists": os.path.isdir(paths.run("old"))}
