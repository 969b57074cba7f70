"""Recovery: may a rollback or resume of this run act here? (read-only; decided before anything stops)"""

import os

from .beneath import OPEN_DIR, hash_beneath, parent_beneath
from .common import AgentError
from .files import read_json
from .manifests import scan_fd, verify_backup
from .state import Paths, run_state


UNKNOWN_OWNER = "unknown"


def tree_owner(installed):
    """The run whose install is the product tree now in place, from installed.json: None when upgrader never
    installed it, UNKNOWN_OWNER for a tree restored by an agent that did not record it."""
    if not installed:
        return None
    if "installed_by" in installed:
        return installed["installed_by"]
    return UNKNOWN_OWNER if installed.get("restored") else installed.get("run")


def op_recovery_check(req):
    """Whose tree is in place, compared with what this run did here. ``verdict``:
    installed    this run's install is in place (a rollback restores its backup)
    before       the tree from before this run is in place and this run did not end here (it was interrupted
                 before its install was recorded, or during its rollback): resume and rollback go on
    rolled_back  the tree from before this run is in place and this run ended (rolled back, or never installed)
    changed      another run (``by``) changed the host since: this run must not touch it"""
    paths = Paths(req)
    installed = read_json(paths.installed)
    owner = tree_owner(installed)
    st = run_state(paths) if paths.in_run else {}
    manifest = read_json(paths.run("backup", "manifest.json")) if paths.in_run else None
    before = manifest.get("installed_by", UNKNOWN_OWNER) if manifest else UNKNOWN_OWNER
    last = (installed or {}).get("run")
    out = {"installed_by": owner, "last_run": last, "restored": bool((installed or {}).get("restored")),
           "version": (installed or {}).get("version"), "phase": st.get("phase"), "by": None}
    if owner == paths.run_id:
        out["verdict"] = "installed"
    elif manifest is None:
        # no backup of this run here: it never stopped this host (or retention dropped the backup after later
        # runs); the host changed since when installed.json was written after this run's last step here (a
        # run that left no state here at all changed nothing: the caller's own checks decide)
        written = os.path.getmtime(paths.installed) if installed else 0
        if st.get("updated") and last != paths.run_id and written > float(st["updated"]):
            out["verdict"], out["by"] = "changed", last
        else:
            out["verdict"] = "before"
    elif owner == UNKNOWN_OWNER and last == paths.run_id:  # recorded before installed_by existed
        out["verdict"] = "rolled_back" if st.get("rolled_back") or st.get("phase") == "finished" else "before"
    elif (owner == before and owner != UNKNOWN_OWNER) or installed is None:
        ended = st.get("rolled_back") or st.get("phase") == "finished"
        out["verdict"] = "rolled_back" if ended else "before"
    else:
        out["verdict"], out["by"] = "changed", last
    out["config_changed"] = config_changed_since(paths, manifest) if out["verdict"] == "installed" else []
    return out


def op_backup_check(req):
    """Read every byte of this run's backup against its checksums (read-only), before a rollback stops anything."""
    paths = Paths(req)
    manifest = read_json(paths.run("backup", "manifest.json"))
    if not manifest:
        raise AgentError("run %s has no backup on this host" % paths.run_id, "needs_person")
    verify_backup(paths.run("backup", "tree"), manifest, rehash="full")
    return {"files": len(manifest["tree"]["files"]), "config": len(manifest["config"])}


def config_changed_since(paths, manifest):
    """Configuration files (preserved, kind config) that differ now from the run's backup of them: a rollback
    restores the backup and keeps these aside (config-before-rollback)."""
    changed = []
    cache = [p["path"] for p in (manifest or {}).get("preserve", []) if p.get("kind") == "cache"]
    for c in (manifest or {}).get("config", []):
        if c["path"] in cache:  # compiled pages, not configuration
            continue
        if c["dir"]:  # read from descriptors, through plain directories only (as every read of the install)
            with parent_beneath(paths.install, c["path"], "preserved path") as at:
                if at is None:
                    continue
                try:
                    fd = os.open(at[1], OPEN_DIR, dir_fd=at[0])
                except OSError:
                    continue  # gone, or not a directory any more: nothing a rollback would keep
                try:
                    tree = scan_fd(fd, os.path.join(paths.install, c["path"]), [])
                finally:
                    os.close(fd)
            digests = dict((rel, f.get("sha256")) for rel, f in tree["files"].items())
            if digests != dict((rel, f.get("sha256")) for rel, f in c["tree"]["files"].items()):
                changed.append(c["path"])
        else:
            digest = hash_beneath(paths.install, c["path"], "preserved path")
            if digest is not None and digest != c.get("sha256"):
                changed.append(c["path"])
    return changed
