"""Before stop: the verified copy of the package, the staged new tree, the verified backup snapshot."""

import os

from .beneath import (OPEN_DIR, DirFds, check_host_paths, dir_id, link_parents, recorded_link_problems,
                      remove_beneath, setid_problems, split_rel_join, staged_link_problems)
from .common import AGENT_FORMAT, DRIFT_LISTED, AgentError, test_kill
from .extract import extract
from . import hosttrust
from .files import canonical_digest, fsync_dir, read_json, rmtree, write_json_atomic
from .ledger import check_ledger_version, ledger_drift
from .manifests import (copy_preserved, copy_tree, dir_entry, hash_at, keep_top, overlay, scan_tree, snapshot,
                        verify_backup)
from .receive import checked_copy, copy_hashed
from .recovery import tree_owner
from .state import Paths, check_state_dir, ensure_state_dir, run_state, set_run_state


def _approvals_unused(paths, digests, req):
    """With a host trust root: the approvals this host verified itself (not the controller's list) must not have
    been used here by another run."""
    from .ledger import used_approvals

    used = used_approvals(paths)
    for digest in digests:
        if digest in used and used[digest].get("run") != req["run_id"]:
            raise AgentError("approval %s... was already used on this host by run %s" % (
                digest[:12], used[digest].get("run")), "replayed", holder=used[digest])


def _copy_package(req, pkg):
    """The run's copy ``pkg`` of the package at ``package_path``, hashed as it is written: refused unless it has the
    catalog's sha256 and size."""
    src = req["package_path"]
    if not os.path.isfile(src):
        raise AgentError("package %s is missing on the host" % src, "failed")
    with open(src, "rb") as fin:
        digest, size, _ = copy_hashed(fin, pkg)
    if digest != req["sha256"] or size != req["size"]:
        raise AgentError("package on the host has sha256 %s (%d bytes); the catalog says %s (%d bytes)"
                         % (digest, size, req["sha256"], req["size"]), "bad_input")


def op_prepare(req):
    """Before stop: verified copy of the package, staged new tree, verified backup snapshot."""
    paths = Paths(req)
    preserve = [p["path"] for p in req["preserve"]]
    run_dir = paths.run()
    check_state_dir(paths)
    if run_state(paths).get("prepared"):
        return run_state(paths)["prepared"]
    # a host with its own trust root decides again, on the evidence, before anything is copied or staged
    trusted = hosttrust.check(req, req.get("sha256"))
    limits = req.get("limits", {})
    if trusted:
        hosttrust.bound(req, "prepare", trusted)  # the package, kind, remove and preserve list of the accepted entry
        limits = hosttrust.signed_limits(req, trusted)  # extraction limits as the vendor signed them
        _approvals_unused(paths, trusted["approvals"], req)
    check_ledger_version(paths, req.get("current_version"))
    if os.path.isdir(paths.install):  # refused here too, even when the controller did not ask first
        copied = [p["path"] for p in req["preserve"] if p.get("kind") in ("config", "cache")]
        problems = check_host_paths(paths.install, {"preserve": preserve, "remove": req.get("remove", []),
                                                    "copied": copied})
        # nothing set-id of another account is ever copied by root (preserved data is moved, not copied)
        problems += setid_problems(paths.install, [split_rel_join(p["path"]) for p in req["preserve"]
                                                   if p.get("kind") not in ("config", "cache")])
        if problems:
            raise AgentError(problems[0], "unsafe_path", problems=problems)
    # 1. copy the package, hash the copy, extract that copy: a file swapped after the check cannot slip in. The copy
    # receive_check made in this session was hashed as it was written: it is used when still that very file, unchanged
    pkg = paths.run("package.tar.gz")
    received = checked_copy(pkg, req["sha256"], req["size"])
    if os.path.isdir(run_dir):
        for leftover in ("staging", "backup") + (() if received else ("package.tar.gz",)):
            rmtree(paths.run(leftover))
    ensure_state_dir(paths.state)  # made with the agent's marker
    os.makedirs(run_dir, 0o700, exist_ok=True)
    if not os.path.isdir(paths.install):
        raise AgentError("install dir %s does not exist" % paths.install, "bad_input")
    if not received:
        _copy_package(req, pkg)
    test_kill(req, "prepare:copied")
    try:
        return _stage_and_back_up(req, paths, pkg, trusted, limits, preserve)
    except Exception:
        # nothing half-made is left filling the disk: the staged tree and the partial backup are rebuilt by the
        # next prepare anyway, and the service was not stopped (the live install is all there is)
        for leftover in ("staging", "backup"):
            try:
                rmtree(paths.run(leftover))
            except (OSError, AgentError):
                pass  # the failure that brought us here is the one to report
        raise


def _stage_and_back_up(req, paths, pkg, trusted, limits, preserve):
    """Prepare's steps 2-4 (the package's copy is made and verified): the staged tree and the verified backup."""
    if trusted:  # the package's own package.yaml declares what the signed catalog entry says (changes, kind, requires)
        try:
            hosttrust.check_package_meta(pkg, trusted, req)
        except AgentError:
            os.unlink(pkg)
            raise
    # 2. current product tree, hashed once; drift against the last install's manifest
    current = scan_tree(paths.install, preserve, capped=True)  # before stop: refused past MAX_ENTRIES
    # the links as the scan saw them (a directory swapped for a link while it ran is recorded as that link): the
    # backup and the staged tree would recreate them, so one on a preserved path's way or leading out is refused
    problems = recorded_link_problems(paths.install, current["links"], preserve)
    if problems:
        raise AgentError(problems[0], "unsafe_path", problems=problems)
    hand_changes = ledger_drift(paths, current)
    # 3. staging: the new tree, complete, before the service is touched
    staging = paths.run("staging")
    extracted = paths.run("staging", "package")
    written = {}
    members, _ = extract(pkg, extracted, limits, hashes=written)
    test_kill(req, "prepare:extracted")
    new_tree = paths.run("staging", "tree")
    if req["kind"] == "patch":
        copy_tree(paths.install, new_tree, current)
        for rel in req.get("remove", []):
            if not remove_beneath(new_tree, rel, "the patch's remove entry", missing_ok=True):
                raise AgentError("the patch removes %s, which is not installed" % rel, "failed")
        overlay(extracted, new_tree)
        rmtree(extracted)
    else:
        os.rename(extracted, new_tree)
    keep_install_owner(paths.install, new_tree)  # a patch's copy too: made by the agent, it becomes the install dir
    # install moves each preserved path from the live tree to the staged one through plain directories only:
    # a link above one (put there by the package, or by the customer, also inside a preserved dir) is
    # refused now, before stop
    problems = [p for p in (link_parents(tree, rel, "preserved path", tree == new_tree) for rel in preserve
                            for tree in (new_tree, paths.install)) if p]
    if problems:
        raise AgentError(problems[0], "unsafe_path", problems=problems)
    cache = [p["path"] for p in req["preserve"] if p.get("kind") == "cache"]
    for rel in preserve:  # the customer's copies win; the package's defaults are dropped
        if rel not in cache:  # a cache (compiled pages) starts as the package has it; the old one is backed up
            remove_beneath(new_tree, rel, "preserved path", missing_ok=True)
    new_manifest = scan_tree(new_tree, preserve, hash_files=False, capped=True)
    # every link of the staged tree, as it will be installed, resolved through the tree's own links (a patch's
    # link laid over the install's links may climb out although the package alone says it stays inside)
    problems = staged_link_problems(new_tree, new_manifest["links"], paths.install)
    if problems:
        raise AgentError(problems[0], "unsafe_path", problems=problems)
    known = dict((rel, f["sha256"]) for rel, f in current["files"].items())  # a patch copies these unchanged
    known.update(written)  # extracted bytes were hashed on the way in (overlay wins)
    staged = DirFds(new_tree, "the staged tree")
    try:
        for rel, f in new_manifest["files"].items():
            f["sha256"] = known.get(rel) or hash_at(*(staged.at(rel) + (os.path.join(new_tree, rel),)))[1]
    finally:
        staged.close()
    # 4. backup: hard-link snapshot of the product files (same inodes, verified), copies of config
    backup = paths.run("backup", "tree")
    snapshot(paths.install, backup, current)
    test_kill(req, "prepare:snapshot")
    configs = []
    for p in req["preserve"]:
        if p.get("kind") in ("config", "cache") and os.path.lexists(os.path.join(paths.install, p["path"])):
            configs.append(copy_preserved(paths.install, backup, p["path"]))
    install_st = os.lstat(paths.install)
    manifest = {"format": AGENT_FORMAT, "run": paths.run_id, "version": req.get("current_version"),
                "tree": current, "config": configs, "preserve": req["preserve"],
                "installed_by": tree_owner(read_json(paths.installed)),
                "product": (read_json(paths.installed) or {}).get("product"),  # restored with the tree (rollback)
                "product_source": (read_json(paths.installed) or {}).get("product_source"),
                # install and rollback move only these very directories (not whatever takes their names later)
                "install_id": dir_id(install_st), "staged_id": dir_id(os.lstat(new_tree)),
                # the install dir's own owner, group and mode (the tree's "dirs" are those below it): a rollback
                # gives them back to the tree it rebuilds, which becomes the install dir (keep_top)
                "top": dir_entry(install_st)}
    verify_backup(backup, manifest)
    manifest["digest"] = canonical_digest({"tree": current, "config": configs})
    write_json_atomic(paths.run("backup", "manifest.json"), manifest)
    write_json_atomic(paths.run("staging", "manifest.json"), new_manifest)
    fsync_dir(staging)
    result = {"backup_digest": manifest["digest"], "backup_files": len(current["files"]),
              "backup_bytes": sum(f["size"] for f in current["files"].values()),
              "config_files": len(configs), "staged_files": len(new_manifest["files"]),
              "package_members": len(members), "drift": hand_changes[:DRIFT_LISTED],
              "drift_count": len(hand_changes)}
    # the staged tree and the backup must be on disk before the service stops: a crash after the swap
    # must not find half-written files, and flushing a large staged tree later (an fsync in the
    # downtime waits for it on ext4) would make the downtime grow with the install size
    os.sync()
    if trusted:
        hosttrust.keep_entry(paths, trusted)  # every later step of this run is bound to it (hosttrust.bound)
        trusted = {k: v for k, v in trusted.items() if k != "entry"}
    set_run_state(paths, prepared=result, phase="prepared", **({"host_trust": trusted} if trusted else {}))
    return result


def keep_install_owner(install, new_tree):
    """The staged tree (a directory the agent made, root's when it runs as root: a full package's, or a patch's copy
    of the install) gets the install dir's owner, group and mode (set-id bits only of root's, keep_owner): after the
    swap the install dir still belongs to its account, whose playbook commands (processes.command_account) and
    service go on running as that account, not as root, and whose service may still write where it wrote before."""
    fd = os.open(new_tree, OPEN_DIR)
    try:
        keep_top(fd, dir_entry(os.lstat(install)))
    finally:
        os.close(fd)
