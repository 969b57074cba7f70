"""After stop: the staged tree swapped in, the preserved paths moved across."""

import os
import time

from .beneath import (OPEN_DIR, check_host_paths, check_install_id, dir_id, hash_beneath, install_name, link_parents,
    move_beneath, open_root, rename_install_out)
from . import hosttrust
from .common import AgentError, test_kill
from .files import read_json, write_json_atomic
from .identity import dir_identity, record_lineage
from .manifests import copy_preserved
from .state import Paths, run_state, set_run_state
from .versions import check_installed_version


def op_install(req):
    """After stop: swap the staged tree in, move preserved paths across. Idempotent."""
    paths = Paths(req)
    st = run_state(paths)
    if st.get("installed"):
        return st["installed"]
    hosttrust.bound(req, "install")  # with a host trust root: the accepted entry's preserve list and target
    preserve = [p["path"] for p in req["preserve"]]
    cache = [p["path"] for p in req["preserve"] if p.get("kind") == "cache"]
    new_tree = paths.run("staging", "tree")
    old = paths.run("old")
    t0 = time.time()
    manifest = read_json(paths.run("backup", "manifest.json")) or {}
    install_id, staged_id = manifest.get("install_id"), manifest.get("staged_id")
    pfd, name = install_name(paths)
    try:
        if not os.path.isdir(old):
            if not os.path.isdir(new_tree):
                raise AgentError("staged tree %s is missing" % new_tree, "failed")
            # the live tree again (links may have been put on the preserved paths' way since prepare)
            check_install_id(pfd, name, paths, [install_id] if install_id else None)
            problems = [p for p in (link_parents(paths.install, rel, "preserved path") for rel in preserve) if p]
            problems += check_host_paths(paths.install, {"preserve": preserve})
            if problems:
                raise AgentError(problems[0] + " (changed after the backup was made)", "needs_person",
                                 problems=problems)
            # config edited between backup and stop: keep a copy of that state too (the backup itself stays as is)
            late = []
            for c in manifest["config"]:
                if c["dir"]:
                    continue
                digest = hash_beneath(paths.install, c["path"], "preserved path")
                if digest is not None and digest != c.get("sha256"):
                    late.append(copy_preserved(paths.install, paths.run("backup", "at-stop"), c["path"]))
            if late:
                write_json_atomic(paths.run("backup", "at-stop.json"), late)
            set_run_state(paths, phase="swapping")
            record_lineage(paths, dir_identity(name, pfd), dir_identity(new_tree))  # the staged tree replaces it
            rename_install_out(pfd, name, old, paths, [install_id] if install_id else None)
            test_kill(req, "install:moved_old")
            os.rename(new_tree, name, dst_dir_fd=pfd)
            test_kill(req, "install:swapped")
            os.fsync(pfd)
        elif check_install_id(pfd, name, paths, [staged_id] if staged_id else None) is None:
            os.rename(new_tree, name, dst_dir_fd=pfd)
        # move the customer's paths into the new tree (rename: no copy, no loss), from descriptors of the old
        # tree and of the install dir (the staged tree prepare made): no link on either side is followed
        check_install_id(pfd, name, paths, [staged_id] if staged_id else None)
        old_fd = open_root(old, "the old tree")
        try:
            new_fd = os.open(name, OPEN_DIR, dir_fd=pfd)
            try:
                if staged_id and dir_id(os.fstat(new_fd)) != staged_id:
                    raise AgentError("the install dir %s was swapped during the install; check the host by hand"
                                     % paths.install, "needs_person")
                for rel in preserve:
                    if rel in cache:  # cleared: the new version rebuilds it (the old one is in the backup)
                        continue
                    if move_beneath(old_fd, new_fd, rel, "preserved path", old, paths.install):
                        test_kill(req, "install:preserve")
            finally:
                os.close(new_fd)
        finally:
            os.close(old_fd)
    finally:
        os.close(pfd)
    new_manifest = read_json(paths.run("staging", "manifest.json"))
    new_manifest["version"] = req.get("target_version")
    # the product now installed (product.py): with a host trust root, the product of the plan entry it accepted
    # (confirmed by root's installs or a ledger record written under that root) and where it was read
    # (product_source: a later run under the root takes it as root's word), else the controller's plan (a guess)
    kept = hosttrust.accepted(paths)
    product = ((kept or {}).get("entry") or {}).get("product") if kept is not None else req.get("product")
    if product:
        new_manifest["product"] = str(product)
    if kept is not None and product and kept.get("product_from"):
        from .product import product_source
        new_manifest["product_source"] = product_source(hosttrust.TRUST_DIR, kept["product_from"], kept.get("plan"))
    new_manifest["run"] = paths.run_id
    new_manifest["installed_by"] = paths.run_id
    write_json_atomic(paths.installed, new_manifest)
    result = {"seconds": round(time.time() - t0, 4), "files": len(new_manifest["files"])}
    # installed_at: when this host installed the run (its own clock); an unfinished run's rollback is bounded by it
    set_run_state(paths, phase="installed", installed=result, installed_at=time.time())
    if req.get("version_source"):
        check_installed_version(paths, req["version_source"], req.get("target_version"))
    return result
