"""The end of a run: the installed tree verified, the ledger written, the run's files cleared."""

import json
import os
import time

from .beneath import DirFds
from . import hosttrust
from .common import test_kill
from .files import read_json, rmtree
from .ledger import ledger_fds, record_catalog_serial
from .lock import op_unlock
from .manifests import drift, hash_at, scan_tree, top_differs
from .state import Paths, append_line_at, set_run_state, write_json_at
from .witness import RUN_RECORDS, run_record


def op_verify_tree(req):
    """Compare the live product tree with a backup's manifest (byte-identical check)."""
    paths = Paths(req)
    manifest = read_json(paths.run("backup", "manifest.json"))
    preserve = [p["path"] for p in manifest["preserve"]]
    current = scan_tree(paths.install, preserve, hash_files=False)
    expected = manifest["tree"]["files"]
    live = DirFds(paths.install, "product file")  # read through plain directories only
    try:
        for rel, f in current["files"].items():  # hash only what is not provably the backed-up file itself
            want = expected.get(rel)
            if want and f.get("ino") == want.get("ino") and f["size"] == want["size"] and \
                    f.get("mtime") == want.get("mtime"):
                f["sha256"] = want["sha256"]
            else:
                f["sha256"] = hash_at(*(live.at(rel) + (os.path.join(paths.install, rel),)))[1]
    finally:
        live.close()
    diffs = drift(manifest["tree"], current)
    for rel, target in manifest["tree"].get("links", {}).items():
        if current["links"].get(rel) != target:
            diffs.append({"path": rel, "change": "link"})
    for rel in current["links"]:
        if rel not in manifest["tree"].get("links", {}):
            diffs.append({"path": rel, "change": "added"})
    # the install dir itself: its owner is the account the commands run as (a backup of an older agent: no record)
    top = top_differs(paths.install, manifest["top"]) if manifest.get("top") else None
    if top:
        diffs.append({"path": "the install dir itself (%s)" % top, "change": "owner"})
    return {"identical": not diffs, "differences": diffs[:50]}


def op_finish(req):
    """End of a run on a host: drop staging and old trees, apply backup retention, release the lock."""
    paths = Paths(req)
    for leftover in ("staging", "old", "failed", "restore", "package.tar.gz"):
        rmtree(paths.run(leftover))
        test_kill(req, "finish:cleanup")
    set_run_state(paths, phase="finished", outcome=req.get("outcome"))
    now = time.time()
    installed = read_json(paths.installed)
    # every copy of the ledger, each opened once (never through a link, only a directory of the agent's own that
    # nobody else can write) and written only through that descriptor; a refusal keeps the lock (needs a person)
    # with a host trust root, the approvals this host verified itself at prepare, never the controller's list
    kept = hosttrust.accepted(paths)
    # a host with its own trust root records nothing on the controller's word: a run it kept no entry for (refused
    # at prepare) spends no approval and raises no catalog serial here
    rooted = kept is None and hosttrust.load_root() is not None
    spent = list(kept["approvals"]) if kept is not None else [] if rooted else list(req.get("approvals") or [])
    # this host's own record of the run (witness.py): what it executed and saw, by its own clock -- the auditor's
    # tools compare the controller's log with it
    before = (read_json(paths.run("backup", "manifest.json")) or {}).get("version")
    record = run_record(paths, req, spent, before, (installed or {}).get("version"), now)
    if kept is not None and kept.get("plan"):
        record["plan"] = kept["plan"]  # the plan this host verified itself, not the controller's word
    with ledger_fds(paths, create=True) as fds:
        for d, fd in fds if spent else []:
            append_line_at(fd, "approvals-used.jsonl", "".join(
                json.dumps({"approval": digest, "run": paths.run_id, "time": now}) + "\n"
                for digest in spent), d)
        for d, fd in fds:
            append_line_at(fd, RUN_RECORDS, json.dumps(record, sort_keys=True) + "\n", d)
        for d, fd in fds if installed else []:  # the last install's manifest, beside the install too
            if os.path.abspath(d) != os.path.abspath(paths.state):
                write_json_at(fd, "installed.json", installed)
        # a run that got past preflight was accepted with this catalog: older ones are refused here from now on
        # (recorded at the end, with the used approvals, so a refusal in preflight leaves the host as it was)
        trusted = (read_json(paths.run("state.json")) or {}).get("host_trust")
        # with the host's own trust root, the serial it read from the vendor-signed bytes (hosttrust.py), not the
        # controller's word
        record_catalog_serial(fds, {"product": trusted["product"], "serial": trusted["catalog_serial"]}
                              if trusted and trusted.get("catalog_serial") else None if rooted else req.get("catalog"))
        for d, fd in fds if trusted else []:  # what the host's own trust root accepted for this run
            append_line_at(fd, "host-trust.jsonl", json.dumps(dict(trusted, run=paths.run_id, time=now,
                                                                   outcome=req.get("outcome"))) + "\n", d)
    if kept is not None:  # the run ended: its accepted entry admits only its own rollback from now on
        hosttrust.spend_entry(paths, req.get("outcome"))
    removed = retention(paths, int(req.get("keep", 3)))
    released = op_unlock(req)["released"]  # a run ends once: its finish always releases the host
    return {"removed_backups": removed, "released": released}


def retention(paths, keep):
    """Keep the newest `keep` backups, and always the newest backup of a committed run."""
    runs_dir = os.path.join(paths.state, "runs")
    if not os.path.isdir(runs_dir):
        return []
    runs = []
    for run in os.listdir(runs_dir):
        st = read_json(os.path.join(runs_dir, run, "state.json")) or {}
        if os.path.isdir(os.path.join(runs_dir, run, "backup")) and st.get("phase") == "finished":
            runs.append((st.get("updated", 0), run, st.get("outcome")))
    runs.sort(reverse=True)
    keep_set = set(r[1] for r in runs[:max(1, keep)])
    committed = [r for r in runs if r[2] == "committed"]
    if committed:
        keep_set.add(committed[0][1])
    removed = []
    for _, run, _ in runs:
        if run not in keep_set:
            rmtree(os.path.join(runs_dir, run, "backup"))
            removed.append(run)
    return removed
