"""This host's trust ledger: used approvals, catalog serials and the last install's manifest, kept in every
copy of the state dir (the default one beside the install, and the request's when it names another).
"""

import contextlib
import json
import os

from .common import AgentError
from .manifests import drift
from .state import ledger_dirs, open_state_dir, read_json_at, state_file_error, write_json_at
from .versions import same_version


@contextlib.contextmanager
def ledger_fds(paths, create=False, strict=True):
    """[(dir, descriptor)] of every copy of the ledger (ledger_dirs), each opened once with open_state_dir: a copy
    that is a link, or a directory of another account or writable by others, is refused (``strict``), or left
    out (not ``strict``: a read-only look such as facts, before the run's lock refuses it). A missing copy is
    made when ``create``, else left out. Every read and write of the ledger goes through these descriptors."""
    fds = []
    try:
        for d in ledger_dirs(paths):
            try:
                fd = open_state_dir(d, create)
            except AgentError:
                if strict:
                    raise
                continue
            if fd is not None:
                fds.append((d, fd))
        yield fds
    finally:
        for _, fd in fds:
            os.close(fd)


def ledger_serials(paths, strict=True):
    """Per product, the newest catalog serial any copy of the ledger recorded."""
    seen = {}
    with ledger_fds(paths, strict=strict) as fds:
        for d, fd in fds:
            for product, serial in (read_json_at(fd, CATALOG_SERIALS, d) or {}).items():
                seen[product] = max(int(serial), int(seen.get(product, 0)))
    return seen


def ledger_drift(paths, current, strict=True):
    """Hand changes against the last install's manifest in every ledger copy (one that is missing, as a fresh
    state dir would be, hides nothing the default one holds)."""
    out, listed = [], set()
    with ledger_fds(paths, strict=strict) as fds:
        for d, fd in fds:
            for change in drift(read_json_at(fd, "installed.json", d), current):
                if change["path"] not in listed:
                    listed.add(change["path"])
                    out.append(change)
    return sorted(out, key=lambda c: c["path"])


def used_approvals(paths):
    """Approvals (digests) already consumed by a run on this host, with the run that used them (every copy of
    the ledger: a plan that names a fresh state dir does not make a used approval new)."""
    out = {}
    with ledger_fds(paths) as fds:
        for d, dfd in fds:
            try:  # never through a link to elsewhere
                fd = os.open("approvals-used.jsonl", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                             | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise state_file_error(d, "approvals-used.jsonl", e)
            with os.fdopen(fd, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        out.setdefault(rec["approval"], rec)
                    except (ValueError, KeyError, TypeError):
                        continue
    return out


#: per product, the newest catalog serial a run on this host was accepted with (next to the used approvals)
CATALOG_SERIALS = "catalog-serials.json"


def check_catalog_serial(paths, catalog):
    """Refuse a run from a catalog older than one this host has already been upgraded from (any controller)."""
    if not catalog:
        return
    seen = ledger_serials(paths).get(catalog["product"], 0)
    if int(seen) > int(catalog["serial"]):
        raise AgentError("catalog serial %s is older than serial %s this host was already upgraded from: refusing "
                         "a rollback to an old catalog; get the current catalog from the vendor" % (
                             catalog["serial"], seen), "catalog_rollback")


def record_catalog_serial(fds, catalog):
    """Record the catalog's serial in every copy of the ledger (``fds``, from ledger_fds)."""
    if not catalog:
        return
    for d, fd in fds:
        seen = read_json_at(fd, CATALOG_SERIALS, d) or {}
        if int(seen.get(catalog["product"], 0)) < int(catalog["serial"]):
            seen[catalog["product"]] = int(catalog["serial"])
            write_json_at(fd, CATALOG_SERIALS, seen)


def check_ledger_version(paths, current):
    """Before anything is staged or stopped: the version this host's own ledger says upgrader installed last
    (installed.json beside the install, and in the request's state dir when it names another one) must be the
    plan's current version. A plan that reads the version from elsewhere (an old log line) and so plans a
    downgrade as an upgrade is refused here, nothing changed. Each copy is read through its descriptor
    (ledger_fds), never through a link."""
    with ledger_fds(paths) as fds:
        for d, fd in fds:
            recorded = (read_json_at(fd, "installed.json", d) or {}).get("version")
            if recorded and current and not same_version(recorded, current):
                raise AgentError("this host's ledger (%s) says upgrader last installed %s here, but the plan says "
                                 "the host runs %s: the plan's version source does not read the installed version; "
                                 "refusing before stop, nothing changed" % (os.path.join(d, "installed.json"),
                                                                            recorded, current),
                                 "version_mismatch", recorded=recorded, planned=current)
