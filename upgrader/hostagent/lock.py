"""The host's lock: one run at a time holds the host (approvals already used elsewhere and older catalogs are
refused here).
"""

import errno
import json
import os
import time

from .common import AgentError, test_kill
from .files import create_nofollow, fsync_dir, read_json
from .hosttrust import lock_plan
from .ledger import check_catalog_serial, used_approvals
from .state import Paths, check_state_dir, ensure_state_dir
from .witness import approval_expiries, check_opened_approvals, check_opening, record_opening


def op_lock(req):
    paths = Paths(req)
    check_state_dir(paths)
    if req.get("product") is not None:  # the ledger's product is the plan's (product.py), before anything is written
        from .product import check_product
        check_product(paths, req["product"], None)
    # the kind of run the controller opens (run, resume, rollback, ...), checked against this host's own records of
    # it before anything is written (witness.check_opening)
    kind = check_opening(paths, req, read_json(paths.lock))
    # a change starts only on approvals still valid by this host's own clock, read from their signed statements
    expiries = approval_expiries(req, kind)
    ensure_state_dir(paths.state)
    used = used_approvals(paths)
    for digest in req.get("approvals", []):
        if digest in used and used[digest].get("run") != req["run_id"]:
            raise AgentError("approval %s... was already used on this host by run %s" % (
                digest[:12], used[digest].get("run")), "replayed", holder=used[digest])
    check_opened_approvals(paths, req)  # opened here by another run: spent, whether or not it finished
    check_catalog_serial(paths, req.get("catalog"))
    me = {"run": req["run_id"], "controller": req.get("controller"), "user": req.get("user"),
          "time": time.time()}
    accepted_plan = lock_plan(req)  # a host trust root: the plan it verified for this lock binds the run's probes
    if accepted_plan:
        me["host_trust_plan"] = accepted_plan
    holder = read_json(paths.lock)
    broken = None
    if holder and holder.get("run") != req["run_id"]:
        if not req.get("break_lock"):
            raise AgentError("host is locked by run %s (%s@%s since %s)" % (
                holder.get("run"), holder.get("user"), holder.get("controller"),
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))), "locked", holder=holder)
        os.unlink(paths.lock)
        broken = holder
    if not holder or holder.get("run") != req["run_id"]:
        tmp = paths.lock + ".%d" % os.getpid()
        with os.fdopen(create_nofollow(tmp), "w") as f:
            json.dump(me, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, paths.lock)  # atomic create-if-absent, unlike rename
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
            holder = read_json(paths.lock) or {}
            raise AgentError("host was locked by run %s meanwhile" % holder.get("run"), "locked", holder=holder)
        finally:
            os.unlink(tmp)
        fsync_dir(paths.state)
    holder = read_json(paths.lock)
    # this host's opening record of the run (witness.py), by its own clock: kept even if the run never finishes
    record_opening(paths, req, holder, expiries)
    test_kill(req, "lock:held")
    return {"locked": True, "holder": holder, "broken": broken}


def op_unlock(req):
    paths = Paths(req)
    holder = read_json(paths.lock)
    if holder and holder.get("run") == req["run_id"]:
        os.unlink(paths.lock)
        fsync_dir(paths.state)
        return {"released": True}
    return {"released": False, "holder": holder}
