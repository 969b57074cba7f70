"""Health probes (port, HTTP, log line, command, process) of a started service, and health checks proven on
the running version (read-only).
"""

import os
import re
import time

from .beneath import OPEN_DIR, lstat_beneath, open_beneath, read_beneath, resolve_beneath
from .common import AgentError
from .processes import (describe_selector, foreign_process, listening, pid_alive, pid_file_record, port_open,
                        proc_identity, real_ports, run_shell, select_processes)
from .state import Paths, run_state


LOG_LINE = 4000  # a log probe's matching line, before the controller redacts it and cuts it to 200 characters


def pid_file_state(paths, pid_file):
    """(pid, None) from a pid file, or (None, why): missing (cannot tell), empty or not a number."""
    try:
        text = read_beneath(paths.install, pid_file, "pid_file", 64, disclose=True).strip()
    except AgentError as e:  # its number is its content: withheld under the disclosure rule, never reported
        if not (e.data.get("hard_link") or e.data.get("not_disclosed")):
            raise
        return None, "withheld (%s)" % e
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, "unreadable (%s)" % e.strerror
    try:
        return int(text or b"0") or None, None if text else "empty"
    except ValueError:
        return None, "not a number"


def probe_process(paths, probe, before_stop=False):
    """(ok, detail, unknown) of a process probe; ``unknown``: it could not be evaluated (no pid file: the service
    may well run, nothing says which process it is). ``before_stop`` (a run's preflight): a pid file naming a
    process that is not the service's own fails the probe (see below)."""
    if probe.get("pid_file"):
        pid, why = pid_file_state(paths, probe["pid_file"])
        if pid is None and why == "missing":
            return False, ("no pid file %s: not running, or running without writing it (cannot tell)"
                           % probe["pid_file"]), True
        if pid is None:
            return False, "pid file %s is %s" % (probe["pid_file"], why), False
        ok = pid_alive(pid)
        if not ok and stale_pid_file(paths, probe["pid_file"]):
            # left by a server stopped without it (its stop did not remove it), not written by the one started now
            return False, ("pid file %s names pid %s, which does not run, and was written before the last start "
                           "(stale: the service started since does not write it)" % (probe["pid_file"], pid)), True
        foreign = foreign_process(pid, paths, [pid_file_record(paths, probe["pid_file"])]) \
            if ok else None
        if foreign is not None:  # whoever writes the pid file may name any process: the review must say so; by
            # pid and uid only, never that process's command line. Before a run's stop it fails: the agent never
            # signals it (foreign_process again), but the playbook's stop command (the vendor's `kill $(cat
            # run/server.pid)`, run as root when root owns the install) would
            return not before_stop, "pid file %s names a process that is NOT the service's own: %s" % (
                probe["pid_file"], foreign), False
        root = root_now(paths, pid) if ok else None
        if root:
            return False, root, False
        return ok, "pid %s %s" % (pid, "alive" if ok else "not running"), False
    sel = probe.get("process") or {}
    pids, problem = select_processes(sel)
    if problem:
        return False, problem, False
    if not pids:
        return False, "not running: no %s" % describe_selector(sel)[2:], False
    return True, "pid %s alive (found by its command line)" % ", ".join(str(p) for p in pids), False


def root_now(paths, pid):
    """Why the service's process ``pid`` must not pass in this run (None: it may): it runs as root while the service
    this run stopped ran as another account (service.remember_service_uid). A root start command over that account's
    install brought it back as root: the run does not commit, whatever else answers."""
    old = (run_state(paths) if paths.in_run else {}).get("service_uid")
    seen = proc_identity(pid) if isinstance(old, int) and old != 0 else None
    if not seen or 0 not in seen[0]:
        return None
    return ("pid %s runs as uid %s, but the service ran as uid %s before this run stopped it: its start command ran "
            "as root and the service came back as root; make the install consistent (give it to the service account, "
            "or start the service the way it ran before)" % (pid, "/".join(str(u) for u in seen[0]), old))


def stale_pid_file(paths, pid_file):
    """Was the pid file last written before this run's last start command began (so not by that start)?"""
    began = (run_state(paths) if paths.in_run else {}).get("launch_began")
    if not began:
        return False
    try:
        st = lstat_beneath(paths.install, pid_file, "pid_file")
    except (AgentError, OSError):
        return False
    return st is not None and st.st_mtime < float(began) - 1


def log_files(paths, pattern):
    """The files a log probe reads: ``pattern`` itself, or when its file name is a pattern (``catalina.*.log``: a
    log rotated by date), the files matching it, oldest name first."""
    import fnmatch

    head, name = os.path.split(pattern)
    if not any(c in name for c in "*?["):
        return [pattern]
    try:
        fd = open_beneath(paths.install, head, "log file", os.O_RDONLY | os.O_DIRECTORY) if head else \
            os.open(paths.install, OPEN_DIR)
    except OSError:
        return []
    try:
        names = os.listdir(fd)
    finally:
        os.close(fd)
    return [os.path.join(head, n) if head else n for n in sorted(fnmatch.filter(names, name))]


def probe_once(paths, probe, log_offsets, before_stop=False):
    kind = probe["type"]
    try:
        if kind == "process":
            return probe_process(paths, probe, before_stop)
        if kind == "tcp":
            if not real_ports([probe["port"]]):
                return False, "port %s is not a port to connect to (disabled?)" % probe["port"], False
            ok = port_open(probe["port"], probe.get("host", "127.0.0.1"), float(probe.get("timeout", 1)))
            return ok, "port %s %s" % (probe["port"], "open" if ok else "closed")
        if kind == "http":
            import urllib.error
            import urllib.request

            try:
                with urllib.request.urlopen(probe["url"], timeout=float(probe.get("timeout", 2))) as r:
                    status, body = r.status, r.read(65536).decode("utf-8", "replace")
            except urllib.error.HTTPError as e:
                status, body = e.code, ""
            want = int(probe.get("status", 200))
            if status != want:
                return False, "%s answered %s, expected %s" % (probe["url"], status, want)
            if "body" in probe and body.strip() != probe["body"]:
                return False, "%s answered %r, expected %r" % (probe["url"], body.strip()[:80], probe["body"])
            if "contains" in probe and probe["contains"] not in body:
                return False, "%s answer lacks %r" % (probe["url"], probe["contains"])
            return True, "%s answered %s" % (probe["url"], status)
        if kind == "log":
            texts = []
            for f in log_files(paths, probe["file"]):  # a new file of a date-rotated log is read from its start
                try:
                    texts.append((f, read_beneath(paths.install, f, "log file", 4 << 20, log_offsets.get(f, 0)).decode("utf-8", "replace")))
                except FileNotFoundError:
                    pass
            for f, text in texts if probe.get("absent") else []:
                m = re.search(probe["absent"], text, re.MULTILINE)
                if m:
                    line = text[text.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0]
                    # the controller redacts the whole line, then cuts it short: a cut here first could leave a
                    # URL's password without the '@' that marks it
                    line = line.strip()
                    return False, "%s: %s" % (f, line[:LOG_LINE] + ("\u2026" if len(line) > LOG_LINE else ""))
            if probe.get("present") and not any(re.search(probe["present"], t, re.MULTILINE) for _, t in texts):
                return False, "%s has no line matching %r yet" % (probe["file"], probe["present"])
            return True, "%s clean" % (", ".join(f for f, _ in texts) or probe["file"])
        if kind == "command":
            res = run_shell(probe["command"], paths.install, float(probe.get("timeout", 10)))
            ok = res["exit"] == int(probe.get("exit", 0))
            return ok, "command exited %s" % res["exit"]
    except (OSError, ValueError) as e:
        return False, "%s probe: %s" % (kind, e)
    return False, "unknown probe type %r" % kind


def probe_result(paths, probe, log_offsets, before_stop=False):
    """One probe's result as observe and prove report it; ``unknown``: it could not be evaluated."""
    res = probe_once(paths, probe, log_offsets, before_stop)
    out = {"probe": probe.get("name") or probe["type"], "ok": bool(res[0]), "detail": res[1]}
    if len(res) > 2 and res[2]:
        out["unknown"] = True
    return out


def op_observe(req):
    """Wait until every probe passes (start_timeout), then watch them for the whole window."""
    from .hosttrust import bound
    bound(req, "observe")  # with a host trust root: the accepted entry's probes only
    paths = Paths(req)
    spec = req["observe"]
    probes = spec["probes"]
    offsets = req.get("log_offsets", {})
    t0 = time.time()
    interval = float(spec.get("interval", 0.5))
    ready_deadline = t0 + float(spec.get("start_timeout", 60))
    last = []
    fast = min(0.05, interval)

    # a rollback's observe: a probe that cannot be evaluated (no pid file) does not make a service that the other
    # probes see healthy a dead one; it is reported as not evaluated
    tolerate = bool(req.get("tolerate_unknown"))

    def check():
        return [probe_result(paths, p, offsets) for p in probes]

    def passing(results):
        if all(r["ok"] for r in results):
            return True
        # with a probe not evaluated, at least one that watches the service itself (not a log) must pass
        return tolerate and all(r["ok"] or r.get("unknown") for r in results) and \
            any(r["ok"] and p["type"] != "log" for r, p in zip(results, probes))

    def unevaluated(results):
        return [r for r in results if not r["ok"] and r.get("unknown")] if tolerate else []

    while True:
        last = check()
        if passing(last):
            break
        # a dead process or an error in the log will not heal: stop waiting early
        hard = [r for r, p in zip(last, probes) if not r["ok"] and p["type"] in ("log",)]
        if hard or time.time() >= ready_deadline:
            return {"healthy": False, "stage": "start", "probes": last, "seconds": round(time.time() - t0, 3)}
        time.sleep(fast)
    ready = time.time()
    window_end = ready + float(spec.get("window", 0))
    checks = 1
    while time.time() < window_end:
        time.sleep(min(interval, max(0.0, window_end - time.time())))
        last = check()
        checks += 1
        if not passing(last):
            return {"healthy": False, "stage": "window", "probes": last, "checks": checks,
                    "ready_seconds": round(ready - t0, 3), "seconds": round(time.time() - t0, 3)}
    out = {"healthy": True, "probes": last, "checks": checks, "ready_seconds": round(ready - t0, 3),
           "seconds": round(time.time() - t0, 3)}
    if unevaluated(last):
        out["unevaluated"] = unevaluated(last)
    return out


def op_prove(req):
    """Each observe probe once against the version running now (before anything is stopped). Log probes are
    judged on what a newly started version writes, so here only their file's place is checked. ``before_stop``: the
    preflight of a run, whose stop comes next (a plan's review only says a foreign pid, a run refuses it)."""
    paths = Paths(req)
    results = []
    unapproved = None
    # the host trust module is compiled only for command probes (it binds nothing else): a plan's proof of
    # tcp/http/process probes does not pay for it
    if any(p.get("type") == "command" for p in req.get("probes", [])):
        from .hosttrust import bind_probes, unapproved_commands
        unapproved = unapproved_commands(req)  # with a host trust root: no command of a plan not yet approved
        if not unapproved:  # a run the host accepted: only the command probes its accepted plan entry names
            bind_probes(req)
    for p in req.get("probes", []):
        name = p.get("name") or p["type"]
        if p["type"] == "command" and unapproved:
            results.append({"probe": name, "type": "command", "ok": True, "skipped": unapproved,
                            "detail": unapproved})
            continue
        if p["type"] == "log":
            try:
                resolve_beneath(paths.install, p["file"], "log file")
                skipped = "judged on the lines a newly started version writes, not on the old log"
            except AgentError as e:
                results.append({"probe": name, "type": "log", "ok": False, "detail": str(e)})
                continue
            results.append({"probe": name, "type": "log", "ok": True, "skipped": skipped, "detail": skipped})
            continue
        r = probe_result(paths, p, {}, bool(req.get("before_stop")))  # a run's preflight (see probe_process)
        r.update(probe=name, type=p["type"])
        results.append(r)
    return {"probes": results, "listening": sorted(listening())}
