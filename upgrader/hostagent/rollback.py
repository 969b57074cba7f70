"""Rollback: the backup put back in place, the customer's data written since kept."""

import os
import stat
import time

from .beneath import (OPEN_DIR, DirFds, check_install_id, dir_id, hash_beneath, install_mount_problem, install_name,
    lstat_beneath, move_beneath, open_root, rename_install_out)
from .common import AgentError, test_kill
from .files import fsync_dir, read_json, rmtree, write_json_atomic
from .identity import dir_identity, record_lineage
from .manifests import chmod_dirs, copy_preserved, dir_entry, keep_top, snapshot, verify_backup
from .recovery import UNKNOWN_OWNER
from .state import Paths, run_state, set_run_state


def op_rollback(req):
    """Put the backed-up tree back (after the new version was stopped), preserved paths moved across."""
    paths = Paths(req)
    st = run_state(paths)
    if st.get("rolled_back"):
        return st["rolled_back"]
    t0 = time.time()
    manifest = read_json(paths.run("backup", "manifest.json"))
    if not manifest:
        raise AgentError("run %s has no backup on this host" % paths.run_id, "needs_person")
    backup = paths.run("backup", "tree")
    verify_backup(backup, manifest, rehash=req.get("verify", "full"))
    preserve = [p["path"] for p in manifest["preserve"]]
    kinds = dict((p["path"], p.get("kind", "config")) for p in manifest["preserve"])
    restore = paths.run("restore")
    failed = paths.run("failed")
    kept = []
    # the install name must be one of the directories this run knows (the old tree or the staged one), never a
    # link or another directory put there since; everything in it is moved from descriptors (see move_beneath)
    # (or the restored tree an interrupted attempt of this rollback already moved in)
    known = [i for i in (manifest.get("install_id"), manifest.get("staged_id"), st.get("restore_id")) if i] or None
    pfd, name = install_name(paths)
    try:
        # a rollback requested later finds the tree a later run put back (its restored copy): any real directory
        # (never a link) is accepted here, and pinned, so a swap while this rollback works is still refused
        live_st = check_install_id(pfd, name, paths, None)
        # the live tree is moved to runs/RUN/failed: one that is or holds a mount point is refused before anything
        # is built or moved (the mounted files would be carried into the state dir)
        problem = install_mount_problem(pfd, name, paths) if live_st is not None else None
        if problem is not None:
            raise problem
    finally:
        os.close(pfd)
    if live_st is not None and known is not None and dir_id(live_st) not in known:
        known = known + [dir_id(live_st)]
    if not os.path.isdir(failed) or live_st is not None:
        # nothing is ever lost: configuration edited while the new version ran is kept beside the backup
        for c in manifest["config"]:
            if live_st is None:
                break
            if kinds.get(c["path"]) == "cache":  # what the failed version compiled is not kept
                continue
            st_cfg = lstat_beneath(paths.install, c["path"], "preserved path")
            if st_cfg is None:
                continue
            if not c["dir"] and stat.S_ISREG(st_cfg.st_mode) and \
                    hash_beneath(paths.install, c["path"], "preserved path") != c.get("sha256"):
                copy_preserved(paths.install, paths.run("config-before-rollback"), c["path"])
                kept.append(c["path"])
            elif c["dir"] and stat.S_ISDIR(st_cfg.st_mode):
                copy_preserved(paths.install, paths.run("config-before-rollback"), c["path"])
                kept.append(c["path"])
        salvage_data(paths, restore, [rel for rel in preserve if kinds.get(rel) not in ("config", "cache")])
        rmtree(restore)
        # product files: hard links to the verified backup; config: fresh copies of the backup copies
        snapshot(backup, restore, manifest["tree"], restore=True)
        restored = DirFds(restore, "the restored tree")
        try:
            chmod_dirs(restored, manifest["tree"]["dirs"])
            # restore/ becomes the install dir: its owner is the account the playbook's commands run as, never
            # root's because the agent made it (a backup of an older agent: the install dir's owner now)
            top = manifest.get("top") or (dir_entry(live_st) if live_st is not None else None)
            if top:
                keep_top(restored.get(""), top)
        finally:
            restored.close()
        late = dict((c["path"], c) for c in (read_json(paths.run("backup", "at-stop.json")) or []))
        for c in manifest["config"]:
            base = paths.run("backup", "at-stop") if c["path"] in late else backup
            copy_preserved(base, restore, c["path"])
        pfd, name = install_name(paths)
        try:
            live = check_install_id(pfd, name, paths, known) is not None
            homes = ([paths.install] if live else []) + ([paths.run("old")] if os.path.isdir(paths.run("old")) else [])
            home_fds = [os.open(name, OPEN_DIR, dir_fd=pfd) if h == paths.install else open_root(h, "the old tree")
                        for h in homes]
            restore_fd = open_root(restore, "the restored tree")
            try:
                if live and known and dir_id(os.fstat(home_fds[0])) not in known:
                    raise AgentError("the install dir %s was swapped during the rollback; check the host by hand"
                                     % paths.install, "needs_person")
                for rel in preserve:
                    if kinds.get(rel) in ("config", "cache"):  # restored from the backup's copies above
                        continue
                    # from the live tree, else from the old one (the swap stopped before the data moved over)
                    for home, fd in zip(homes, home_fds):
                        if move_beneath(fd, restore_fd, rel, "preserved path", home, restore, replace=False):
                            break
            finally:
                for fd in home_fds + [restore_fd]:
                    os.close(fd)
            fsync_dir(restore)
            test_kill(req, "rollback:built")
            set_run_state(paths, phase="restoring", restore_id=dir_id(os.lstat(restore)))
            if live:  # the restored tree replaces the live one (a plan of the tree before the run names it still)
                record_lineage(paths, dir_identity(name, pfd), dir_identity(restore))
            if live:
                rmtree(failed)
                rename_install_out(pfd, name, failed, paths, known)
                test_kill(req, "rollback:moved_failed")
            os.rename(restore, name, dst_dir_fd=pfd)
            os.fsync(pfd)
        finally:
            os.close(pfd)
    elif os.path.isdir(restore):
        # interrupted after the failed tree was moved aside, before the restored tree was moved in
        pfd, name = install_name(paths)
        try:
            if check_install_id(pfd, name, paths, None) is None:
                os.rename(restore, name, dst_dir_fd=pfd)
                os.fsync(pfd)
        finally:
            os.close(pfd)
    if not os.path.isdir(paths.install):
        raise AgentError("neither %s nor a restored tree in %s is there; the product is in %s"
                         % (paths.install, restore, failed), "needs_person")
    installed = dict(manifest["tree"])
    installed.update(version=manifest.get("version"), run=manifest.get("run"), restored=True,
                     installed_by=manifest.get("installed_by", UNKNOWN_OWNER))
    if manifest.get("product"):  # the product of the restored tree, as the ledger recorded it before this run
        installed["product"] = manifest["product"]
        if manifest.get("product_source"):
            installed["product_source"] = manifest["product_source"]
    write_json_atomic(paths.installed, installed)
    result = {"seconds": round(time.time() - t0, 3), "files": len(manifest["tree"]["files"])}
    if kept:
        result["config_kept"] = {"paths": kept, "in": paths.run("config-before-rollback")}
    set_run_state(paths, phase="rolled_back", rolled_back=result)
    return result


def salvage_data(paths, restore, data_paths):
    """An earlier rollback attempt, interrupted after it built restore/, had already moved the customer's
    data into it: move that data back where the rebuild takes it from, before restore/ is thrown away."""
    if not os.path.isdir(restore):
        return
    restore_fd = open_root(restore, "the restored tree")
    try:
        for rel in data_paths:
            if lstat_beneath(restore, rel, "preserved path") is None:
                continue
            home = next((d for d in (paths.install, paths.run("old")) if os.path.isdir(d)), None)
            if home is None:
                raise AgentError("%s holds %s, and neither the install dir nor the old tree is there to take it "
                                 "back" % (restore, rel), "needs_person")
            home_fd = open_root(home, "the install dir")  # op_rollback checked the install name is this run's
            try:
                move_beneath(restore_fd, home_fd, rel, "preserved path", restore, home, replace=False)
            finally:
                os.close(home_fd)
    finally:
        os.close(restore_fd)
    fsync_dir(restore)
