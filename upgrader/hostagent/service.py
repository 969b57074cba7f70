"""Stopping and starting the service, and the playbook's hook commands."""

import os
import signal
import time

from .beneath import open_beneath
from . import hosttrust
from .common import AgentError, test_kill
from .probes import log_files
from .processes import (command_account, foreign_process, pid_file_record, pidfd, port_open, proc_identity, real_ports,
                        run_shell, send_signal, service_pids, wait_until)
from .state import Paths, run_state, set_run_state


def refuse_foreign_pid(paths, spec, cwd):
    """Refused before a stop command that would run as root (command_account: root owns ``cwd``, the agent is root)
    while the pid file names a live process that is not the service's own: the vendor's ``kill $(cat
    run/server.pid)`` would signal it as root. The run's preflight refuses this already; this holds when the pid file
    is rewritten after it (by pid and uid only, never that process's command line)."""
    if os.geteuid() != 0 or command_account(cwd) is not None:
        return
    record = pid_file_record(paths, spec.get("pid_file"))
    why = foreign_process(record["pid"], paths, [record]) if record else None
    if why:
        raise AgentError("the pid file %s names a process that is NOT the service's own: %s; the stop command %r runs "
                         "as root and would signal it, so it was not run and nothing was stopped: put the service's "
                         "own pid back in %s, or stop the service by hand, then run again"
                         % (spec["pid_file"], why, spec["command"], spec["pid_file"]), "foreign_pid")


def op_stop(req):
    hosttrust.bound(req, "stop")  # with a host trust root: the accepted plan entry's own step
    paths = Paths(req)
    spec = req["stop"]
    start = time.time()
    sel = spec.get("process")
    found = service_pids(paths, spec.get("pid_file"), sel)
    records = [pid_file_record(paths, spec.get("pid_file"))]  # who wrote which pid, before the stop command ran
    pid = found[0] if found else None
    ports = real_ports(spec.get("ports", []))
    result = {"pid": pid, "escalated": None}

    def gone():
        # a service still starting writes its pid late; a Java server's stop script returns before its JVM exits
        return not service_pids(paths, spec.get("pid_file"), sel, pid) and \
            not any(port_open(x, timeout=0.2) for x in ports)

    if gone() and not req.get("always_run_command"):
        # after an interruption a service may be starting right now (launched, not yet listening):
        # watch for a moment, or as long as the playbook lets a service this run launched come up,
        # before calling it stopped
        st = run_state(paths) if paths.in_run else {}
        deadline = max(start + float(req.get("settle", 0)), launch_deadline(st, req.get("launch_settle")))
        if not wait_until(lambda: not gone(), deadline, 0.05):
            result.update(already_stopped=True, seconds=round(time.time() - start, 3))
            return result
        found = service_pids(paths, spec.get("pid_file"), sel)
        records.append(pid_file_record(paths, spec.get("pid_file")))
        pid = found[0] if found else None
        result["pid"] = pid
    remember_service_uid(paths, pid)
    asked = time.time()  # the stop timeout counts from here, not from any wait for a service coming up
    # an interrupted swap may have left no install dir: the stop script is then in the old tree
    cwd = paths.install
    if not os.path.isdir(cwd) and paths.run_id and os.path.isdir(paths.run("old")):
        cwd = paths.run("old")
    if os.path.isdir(cwd):
        refuse_foreign_pid(paths, spec, cwd)
        res = run_shell(spec["command"], cwd, float(spec.get("timeout", 60)), req.get("env"))
    else:
        res = {"exit": None, "stdout": "", "stderr": "no install dir: signals only", "timed_out": False,
               "seconds": 0.0}
    result["command"] = res
    deadline = asked + float(spec.get("timeout", 60))
    if not wait_until(gone, deadline):
        targets = service_pids(paths, spec.get("pid_file"), sel, pid)
        if not spec.get("force", True) or not targets:
            raise AgentError("service did not stop within %ss" % spec.get("timeout", 60), "failed", **result)
        records.append(pid_file_record(paths, spec.get("pid_file")))
        fds = dict((target, pidfd(target)) for target in targets)  # taken before the check: signals reach the
        try:                                                          # process checked, never a later one
            for target in targets:
                why = foreign_process(target, paths, records, sel)
                if why:
                    raise AgentError(
                        "service did not stop within %ss, and the process to signal is not the service's own: %s. No "
                        "signal was sent to it (the pid file %s is written by the service account, which could name "
                        "any process): a person must check pid %d and stop the service"
                        % (spec.get("timeout", 60), why, spec.get("pid_file") or "-", target), "needs_person",
                        **result)
            for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGKILL, "SIGKILL")):
                result["escalated"] = name
                for target in targets:
                    send_signal(target, fds[target], sig)
                if wait_until(gone, time.time() + float(spec.get("kill_wait", 5))):
                    break
            else:
                raise AgentError("service pid %s survived SIGKILL" % ", ".join(str(t) for t in targets),
                                 "needs_person", **result)
        finally:
            for fd in fds.values():
                if fd is not None:
                    os.close(fd)
    if paths.in_run:
        set_run_state(paths, launched=None)  # whatever this run launched is stopped: none is coming up
    result["seconds"] = round(time.time() - start, 3)
    return result


def remember_service_uid(paths, pid):
    """The run's state keeps the effective uid of the service this run first stopped (``service_uid``): the process
    probe fails a service that comes back as root when it ran as another account before (probes.root_now). A later
    stop of the same run (its rollback, a resume) keeps the first one."""
    if not paths.in_run or not pid or "service_uid" in run_state(paths):
        return
    seen = proc_identity(pid)
    if seen:
        set_run_state(paths, service_uid=seen[0][1])


def launch_deadline(st, allowed):
    """When a service this run launched in its current phase should be up by (0: none was launched).

    After an interruption the service may be coming up right now: launched, not yet listening (many
    servers write their pid file only once they listen). ``allowed`` is the time the playbook gives it."""
    launched = st.get("launched")
    if not launched or launched.get("phase") != st.get("phase"):
        return 0.0
    now = time.time()
    return min(float(launched["at"]), now) + float(allowed or 0)  # a clock set back never lengthens the wait


def op_start(req):
    hosttrust.bound(req, "start")  # with a host trust root: the accepted plan entry's own step
    paths = Paths(req)
    spec = req["start"]
    st = run_state(paths) if paths.in_run else {}

    def running():
        """The service's pid, or "port N" when only its port answers; None when it does not run."""
        pids = service_pids(paths, req.get("pid_file"), req.get("process"))
        if pids:
            return pids[0]
        for port in real_ports(req.get("ports", [])):
            if port_open(port, timeout=0.2):
                return "port %s" % port
        return None

    # a retried or resumed start must not start a second server, nor one while the last is coming up
    if wait_until(lambda: bool(running()), launch_deadline(st, req.get("settle")), 0.05):
        return {"already_running": running(), "log_offsets": st.get("log_offsets", {}),
                "command": {"seconds": 0.0}}
    log = req.get("log_offsets", {})
    offsets = {}
    for f in [m for pattern in log for m in log_files(paths, pattern)]:  # a date-rotated log: every file so far
        try:
            fd = open_beneath(paths.install, f, "log file", disclose=False)  # its size only
        except OSError:
            offsets[f] = 0
            continue
        try:
            offsets[f] = os.fstat(fd).st_size
        finally:
            os.close(fd)
    if paths.in_run:
        set_run_state(paths, log_offsets=offsets, launched={"phase": st.get("phase"), "at": time.time()},
                      launch_began=time.time())
    res = run_shell(spec["command"], paths.install, float(spec.get("timeout", 60)), req.get("env"))
    if paths.in_run:  # the service's time to come up counts from when the start command returned
        set_run_state(paths, launched={"phase": st.get("phase"), "at": time.time()})
    test_kill(req, "start:launched")
    if res["exit"] != 0 or res["timed_out"]:
        why = "timed out after %ss" % spec.get("timeout", 60) if res["timed_out"] else "exited %s" % res["exit"]
        raise AgentError("start command %s" % why, "failed", command=res, log_offsets=offsets)
    return {"command": res, "log_offsets": offsets}


def op_hook(req):
    hosttrust.bound(req, "hook")  # with a host trust root: the accepted plan entry's own step
    paths = Paths(req)
    res = run_shell(req["command"], paths.install, float(req.get("hook_timeout", 300)), req.get("env"))
    test_kill(req, "hook:ran")
    if res["exit"] != 0 or res["timed_out"]:
        raise AgentError("hook %r %s" % (req["command"], "timed out" if res["timed_out"] else
                                          "exited %s" % res["exit"]), "failed", command=res)
    return {"command": res}
