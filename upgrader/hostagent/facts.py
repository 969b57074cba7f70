"""Read-only facts of one install: its version, lock, free space, drift, cached packages, unsafe paths."""

import os
import stat
import sys

from .beneath import check_host_paths
from .common import AGENT_FORMAT, DRIFT_LISTED
from .files import read_json
from .ledger import ledger_drift, ledger_fds, ledger_serials
from .manifests import scan_tree
from .state import Paths, run_state
from .versions import read_version


def op_facts(req):
    paths = Paths(req)
    out = {"install_dir": paths.install, "state_dir": paths.state, "exists": os.path.isdir(paths.install),
           "python": sys.version.split()[0], "agent_format": AGENT_FORMAT}
    if out["exists"]:
        out["version"], out["version_error"] = read_version(paths, req["version_source"])
    else:
        out["version"], out["version_error"] = None, "install dir %s does not exist" % paths.install
    out["lock"] = read_json(paths.lock)
    st = os.statvfs(os.path.dirname(paths.install.rstrip("/")) or "/")
    out["free_bytes"] = st.f_bavail * st.f_frsize
    with ledger_fds(paths, strict=False) as fds:  # a look only: the run's lock refuses a ledger copy not its own
        out["baseline"] = any(stat.S_ISREG(os.stat("installed.json", dir_fd=fd, follow_symlinks=False).st_mode)
                              for _, fd in fds if "installed.json" in os.listdir(fd))
    if req.get("check_drift") and out["exists"]:
        current = scan_tree(paths.install, req.get("preserve", []))
        changes = ledger_drift(paths, current, strict=False)
        out["drift"] = changes[:DRIFT_LISTED]
        out["drift_count"] = len(changes)
        out["product_bytes"] = sum(f["size"] for f in current["files"].values())
    out["cached"] = [s for s in req.get("packages", []) if os.path.isfile(os.path.join(paths.packages, s + ".tar.gz"))]
    if req.get("check_paths") is not None and out["exists"]:
        out["unsafe_paths"] = check_host_paths(paths.install, req["check_paths"])
    out["non_ascii"] = non_ascii_names(paths.install, req.get("ascii_dirs", []))
    out["catalog_serials"] = ledger_serials(paths, strict=False)
    return out


def non_ascii_names(root, dirs):
    found = []
    for d in dirs:
        base = os.path.join(root, d)
        if not os.path.isdir(base):
            continue
        for name in sorted(os.listdir(base)):
            try:
                name.encode("ascii")
            except UnicodeEncodeError:
                found.append(d + "/" + name)
    return found


def op_state(req):
    paths = Paths(req)
    return {"state": run_state(paths), "lock": read_json(paths.lock),
            "backup": os.path.isfile(paths.run("backup", "manifest.json")),
            "install_exists": os.path.isdir(paths.install), "old_exists": os.path.isdir(paths.run("old"))}
