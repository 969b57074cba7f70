"""Inspection, load and performance: the product's process (RSS, threads, open files, CPU over a short sample),
its JVM's heap and GC (the JDK's own jcmd/jstat, run as the process's account, time-bounded), its access log
(requests per minute, 5xx share, response-time percentiles), network interfaces (bytes and errors per second over
the same sample, the link speed) and the OS patch level (the package manager's own read-only view).

Every figure is {"value": V, "source": "where it came from"}; a figure that cannot be read has value None and
"error": why. Reads only; changes nothing. Access logs are read beneath the install dir (beneath.open_beneath).
"""

import calendar
import os
import pwd
import re
import stat
import subprocess
import time

from .beneath import open_beneath, root_only_problem
from .common import AgentError
from .files import read_text
from .processes import become, kill_group, read_bounded

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
TOOL_TIMEOUT = 15          # seconds for one jcmd/jstat/apt/dnf run
TOOL_OUTPUT_KEPT = 1 << 20  # bytes of a tool's output kept from its start, and as many from its end
ACCESS_MAX = 16 << 20      # bytes read from the end of one access log file
MONTHS = dict((m, i) for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                            "Nov", "Dec"), 1))
#: the Tomcat/httpd pattern names (AccessLogValve)
NAMED_FORMATS = {"common": '%h %l %u %t "%r" %s %b',
                 "combined": '%h %l %u %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"'}


def figure(value, source, error=None, **extra):
    out = {"value": value, "source": source}
    if error:
        out["error"] = error
    out.update(extra)
    return out


# --- the process ------------------------------------------------------------------------------------

def proc_status(pid):
    return dict((k, v.strip()) for k, v in re.findall(r"^(\w+):\s*(.*)$", read_text("/proc/%d/status" % pid) or "",
                                                      re.M))


def cpu_ticks(pid):
    text = read_text("/proc/%d/stat" % pid)
    if not text:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def thread_names(pid):
    names = {}
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return None
    for tid in tasks:
        name = (read_text("/proc/%d/task/%s/comm" % (pid, tid)) or "").strip()
        names[name] = names.get(name, 0) + 1
    return names


def process_before(pid):
    return {"ticks": cpu_ticks(pid), "time": time.time()}


def process_figures(pid, before):
    """RSS, threads, open files and CPU % of ``pid`` (``before``: process_before taken a few seconds earlier)."""
    status = proc_status(pid)
    out = {}
    rss = status.get("VmRSS")
    out["rss"] = figure(int(rss.split()[0]) * 1024 if rss else None, "/proc/%d/status VmRSS" % pid,
                        None if rss else "no VmRSS (the process is gone or a kernel thread)")
    threads = status.get("Threads")
    out["threads"] = figure(int(threads) if threads else None, "/proc/%d/status Threads" % pid,
                            None if threads else "no Threads line")
    names = thread_names(pid) or {}
    connector = sum(n for name, n in names.items() if re.match(r"https?-(nio|nio2|apr|bio)-", name))
    out["connector_threads"] = figure(connector if names else None, "/proc/%d/task/*/comm (http-nio-*-exec)" % pid,
                                      None if names else "the process's threads cannot be listed")
    try:
        out["open_files"] = figure(len(os.listdir("/proc/%d/fd" % pid)), "/proc/%d/fd" % pid)
    except OSError as e:
        out["open_files"] = figure(None, "/proc/%d/fd" % pid, "%s (the process runs as uid %s; the agent as uid %d)"
                                   % (e.strerror, (status.get("Uid") or "?").split()[0], os.geteuid()))
    after = cpu_ticks(pid)
    elapsed = time.time() - before["time"]
    if after is None or before["ticks"] is None or elapsed <= 0:
        out["cpu_pct"] = figure(None, "/proc/%d/stat utime+stime" % pid, "the process's CPU time cannot be read")
    else:
        out["cpu_pct"] = figure(round(100.0 * (after - before["ticks"]) / CLK_TCK / elapsed, 1),
                                "/proc/%d/stat utime+stime over %.1f s" % (pid, elapsed), sample_seconds=round(elapsed, 1))
    return out


# --- the JVM --------------------------------------------------------------------------------------

def size_bytes(text):
    m = re.match(r"^(\d+)([kKmMgGtT]?)$", text or "")
    if not m:
        return None
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]


def run_as_owner(argv, uid, gid):
    """Run a JDK tool as the JVM's own account (the attach mechanism answers only its owner; no supplementary
    groups), time-bounded."""
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    try:
        user = pwd.getpwuid(uid)
        env["HOME"], env["USER"] = user.pw_dir, user.pw_name
    except KeyError:
        pass
    code, text = run_bounded(argv, subprocess.STDOUT, become(uid, gid, []) if os.geteuid() == 0 and uid != 0 else None,
                             TOOL_TIMEOUT, env)
    if code != 0:
        raise RuntimeError("%s exited %d: %s" % (os.path.basename(argv[0]), code, " ".join(text.split())[-300:]))
    return text


def run_bounded(argv, stderr, preexec, timeout, env):
    """Run a tool in its own process group, cwd "/", and read its output with processes.read_bounded (what it prints
    is held in bounded memory; killed at ``timeout``, subprocess.TimeoutExpired then): (exit code, stdout text)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd="/",
                            preexec_fn=preexec, start_new_session=True)
    out, _, timed_out = read_bounded(proc, timeout, keep=TOOL_OUTPUT_KEPT)
    if timed_out:
        raise subprocess.TimeoutExpired(argv, timeout)
    return proc.returncode, out


def jdk_tool(pid, name):
    """The JDK tool next to the JVM's own java (its JDK), else the one on PATH; None when neither exists."""
    try:
        exe = os.path.realpath("/proc/%d/exe" % pid)
    except OSError:
        exe = ""
    here = os.path.join(os.path.dirname(exe), name) if exe else ""
    if here and os.access(here, os.X_OK):
        return here
    for d in ("/usr/bin", "/bin", "/usr/local/bin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def parse_heap_info(text):
    """Used and committed heap (bytes) from ``jcmd PID GC.heap_info``: the sum of its top-level heap lines
    ('def new generation   total 4928K, used 1234K', 'garbage-first heap   total ..., used ...')."""
    used = total = 0
    found = False
    for line in text.splitlines():
        m = re.match(r"^ ?(\S.*?)\s+total (\d+)K, used (\d+)K", line)
        if m and "Metaspace" not in m.group(1) and "class space" not in m.group(1):
            total += int(m.group(2)) << 10
            used += int(m.group(3)) << 10
            found = True
    return (used, total) if found else None


def parse_gcutil(text):
    lines = [x.split() for x in text.strip().splitlines() if x.strip()]
    if len(lines) < 2 or len(lines[0]) != len(lines[-1]):
        return None
    out = {}
    for k, v in zip(lines[0], lines[-1]):
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = None
    return out


def jvm_figures(pid, argv):
    """Heap used, committed and max, GC counts and time, and GC share of the JVM's uptime."""
    status = proc_status(pid)
    uid = int((status.get("Uid") or "0").split()[0])
    gid = int((status.get("Gid") or "0").split()[0])
    out = {}
    xmx = [a[4:] for a in argv if a.startswith("-Xmx")]
    mx = [a.split("=", 1)[1] for a in argv if a.startswith("-XX:MaxHeapSize=")]
    limit = size_bytes((xmx or mx or [None])[-1])
    out["heap_max"] = figure(limit, "the JVM's command line (-Xmx)", None if limit else
                             "no -Xmx on the JVM's command line: the JVM's default (a quarter of RAM) applies")
    why_not = None
    uids = (status.get("Uid") or "").split()
    if len(set(uids[:3])) != 1:
        # a JDK tool attaches as the JVM's account; a process whose real, effective and saved uids differ is not
        # one account's (the caller has already checked it is the service's own process: inspection.op_inspect)
        why_not = "the JVM runs with mixed uids (%s): the agent attaches no JDK tool to it" % " ".join(uids[:3])
    elif os.geteuid() not in (0, uid):
        why_not = ("the JVM runs as uid %d and the agent as uid %d: jcmd can attach only as the JVM's own account "
                   "(run the agent as root or as that account)" % (uid, os.geteuid()))
    jcmd, jstat = jdk_tool(pid, "jcmd"), jdk_tool(pid, "jstat")
    if why_not is None and os.geteuid() == 0 and uid == 0:
        # the tool runs as root: never one that the service account (or any account but root) could have changed,
        # such as a JDK inside the install dir
        for tool in (jcmd, jstat):
            problem = tool and root_only_problem(tool)
            if problem:
                why_not = ("the JVM runs as root and %s could be changed by an account other than root (%s): the "
                           "agent runs no such JDK tool as root" % (tool, problem))
                break
        else:
            jcmd, jstat = jcmd and os.path.realpath(jcmd), jstat and os.path.realpath(jstat)  # as checked
    if why_not is None and jcmd:
        try:
            text = run_as_owner([jcmd, str(pid), "GC.heap_info"], uid, gid)
            heap = parse_heap_info(text)
            if heap:
                out["heap_used"] = figure(heap[0], "jcmd %d GC.heap_info" % pid)
                out["heap_committed"] = figure(heap[1], "jcmd %d GC.heap_info" % pid)
            else:
                why_not = "jcmd GC.heap_info printed no heap line: %s" % " ".join(text.split())[:200]
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            why_not = "jcmd GC.heap_info failed: %s" % e
    elif why_not is None:
        why_not = "no jcmd next to the JVM (%s) nor on PATH: a JRE without the JDK tools" % (
            os.path.realpath("/proc/%d/exe" % pid) if os.path.exists("/proc/%d/exe" % pid) else "?")
    if "heap_used" not in out:
        rss = proc_status(pid).get("VmRSS")
        out["heap_used"] = figure(None, "jcmd %d GC.heap_info" % pid, why_not + (
            "; the process's resident memory (/proc VmRSS, %s) bounds it" % rss if rss else ""))
    if jstat and not why_not:
        try:
            gc = parse_gcutil(run_as_owner([jstat, "-gcutil", str(pid)], uid, gid))
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            gc, why = None, "jstat -gcutil failed: %s" % e
        else:
            why = None if gc else "jstat -gcutil printed no figures"
    else:
        gc, why = None, why_not or "no jstat next to the JVM nor on PATH"
    source = "jstat -gcutil %d" % pid
    if gc:
        out["old_gen_pct"] = figure(gc.get("O"), source)
        out["young_gc"] = figure(gc.get("YGC"), source)
        out["full_gc"] = figure(gc.get("FGC"), source)
        out["gc_seconds"] = figure(gc.get("GCT"), source)
        uptime = process_uptime(pid)
        out["gc_time_pct"] = figure(round(100.0 * gc["GCT"] / uptime, 2) if uptime and gc.get("GCT") is not None
                                    else None, source + " GCT / the JVM's uptime (/proc/%d/stat)" % pid,
                                    None if uptime else "the JVM's uptime is unknown")
    else:
        for k in ("old_gen_pct", "full_gc", "gc_time_pct"):
            out[k] = figure(None, source, why)
    return out


def process_uptime(pid):
    text = read_text("/proc/%d/stat" % pid)
    up = read_text("/proc/uptime")
    if not text or not up:
        return None
    start = int(text.rsplit(")", 1)[-1].split()[19]) / float(CLK_TCK)
    return max(0.0, float(up.split()[0]) - start)


# --- the access log ----------------------------------------------------------------------------------

def pattern_regex(pattern):
    """A regular expression for one line of an AccessLogValve/httpd ``pattern`` and the names of its groups."""
    pattern = NAMED_FORMATS.get(pattern, pattern)
    out, names, i = "^", [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%" and i + 1 < len(pattern):
            m = re.match(r"%(\{[^}]*\})?([a-zA-Z])", pattern[i:])
            if not m:
                out += re.escape(ch)
                i += 1
                continue
            code = m.group(2) if not m.group(1) else (m.group(1) + m.group(2))
            quoted = i > 0 and pattern[i - 1] == '"'
            name = {"t": "time", "s": "status", "D": "D", "T": "T", "r": "request"}.get(code)
            if code == "t":
                inner, pre, post = r"[^\]]+", r"\[", r"\]"
            elif quoted:
                inner, pre, post = r'(?:[^"\\]|\\.)*', "", ""
            else:
                inner, pre, post = r"\S+", "", ""
            if name and name not in names:
                out += "%s(?P<%s>%s)%s" % (pre, name, inner, post)
                names.append(name)
            else:
                out += "%s(?:%s)%s" % (pre, inner, post)
            i += len(m.group(0))
        else:
            out += re.escape(ch)
            i += 1
    return re.compile(out), names


def clf_time(text):
    """Seconds since the epoch of '03/Dec/2026:16:27:13 +0000'."""
    m = re.match(r"(\d{2})/(\w{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})", text)
    if not m or m.group(2) not in MONTHS:
        return None
    t = calendar.timegm((int(m.group(3)), MONTHS[m.group(2)], int(m.group(1)), int(m.group(4)), int(m.group(5)),
                         int(m.group(6))))
    offset = (int(m.group(8)) * 60 + int(m.group(9))) * 60
    return t - offset if m.group(7) == "+" else t + offset


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def access_figures(root, rels, spec, now):
    """Requests per minute, peak minute, 5xx share and response-time percentiles over the last hour and day, from
    the access log files ``rels`` (beneath ``root``) written in ``spec['format']``."""
    fmt = spec.get("format") or "common"
    rx, names = pattern_regex(fmt)
    unit = spec.get("d_unit") or "microseconds"
    source = "%s (format %s)" % (", ".join(rels) or "no file", fmt)
    if not rels:
        return {"error": "no access log matches %s in the install dir" % ", ".join(spec.get("files") or []),
                "source": source}
    windows = {"hour": 3600, "day": 86400}
    seen = dict((w, {"n": 0, "5xx": 0, "ms": [], "minutes": {}}) for w in windows)
    unparsed, read_from = 0, []
    for rel in rels:
        try:
            fd = open_beneath(root, rel, "access log")
        except AgentError as e:  # a link that leads out, a hard link of another owner's file: not read, said so
            read_from.append({"path": rel, "error": str(e)})
            continue
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if now - st.st_mtime > 86400 + 3600:
                continue  # rotated before the last day began: nothing of it counts
            data = os.pread(f.fileno(), ACCESS_MAX, max(0, st.st_size - ACCESS_MAX))  # never to EOF (log_facts)
            data = data.decode("utf-8", "replace").splitlines()
        read_from.append({"path": rel, "size": st.st_size})
        for line in data:
            m = rx.match(line)
            if not m:
                unparsed += 1
                continue
            when = clf_time(m.group("time")) if "time" in names else None
            if when is None:
                unparsed += 1
                continue
            age = now - when
            status = m.group("status") if "status" in names else None
            ms = None
            if "D" in names and m.group("D").isdigit():
                ms = int(m.group("D")) / (1000.0 if unit == "microseconds" else 1.0)
            elif "T" in names:
                try:
                    ms = float(m.group("T")) * 1000.0
                except ValueError:
                    ms = None
            for w, span in windows.items():
                if 0 <= age < span or (age < 0 and -age < 300):
                    s = seen[w]
                    s["n"] += 1
                    s["5xx"] += 1 if status and status.startswith("5") else 0
                    if ms is not None:
                        s["ms"].append(ms)
                    minute = int(when // 60)
                    s["minutes"][minute] = s["minutes"].get(minute, 0) + 1
    out = {"source": source, "files": read_from, "unparsed_lines": unparsed}
    timing = "D" in names or "T" in names
    for w, span in windows.items():
        s = seen[w]
        fig = {"requests": s["n"], "requests_per_min": round(s["n"] / (span / 60.0), 2),
               "peak_per_min": max(s["minutes"].values()) if s["minutes"] else 0,
               "share_5xx_pct": round(100.0 * s["5xx"] / s["n"], 2) if s["n"] else None,
               "per_minute": sorted(s["minutes"].items())[-60:] if w == "hour" else None}
        if not timing:
            fig["response_ms"] = None
            fig["response_error"] = "the format %r has no %%D or %%T: no response times" % fmt
        else:
            fig["response_ms"] = dict(("p%d" % p, round(percentile(s["ms"], p), 1) if s["ms"] else None)
                                      for p in (50, 90, 95, 99))
        out[w] = fig
    return out


# --- the network and the OS patches --------------------------------------------------------------------

def net_counters():
    out = {}
    for line in (read_text("/proc/net/dev") or "").splitlines()[2:]:
        name, _, rest = line.partition(":")
        v = rest.split()
        if len(v) >= 16:
            out[name.strip()] = {"rx_bytes": int(v[0]), "rx_errors": int(v[2]), "tx_bytes": int(v[8]),
                                 "tx_errors": int(v[10])}
    return out


def net_figures(before, after, elapsed):
    out = []
    for name, b in sorted(before.items()):
        a = after.get(name)
        if a is None or name == "lo":
            continue
        speed_text = (read_text("/sys/class/net/%s/speed" % name) or "").strip()
        try:
            speed = int(speed_text)
        except ValueError:
            speed = None
        speed = speed if speed and speed > 0 else None
        rates = dict((k + "_per_s", round((a[k] - b[k]) / elapsed, 1)) for k in b)
        util = round(100.0 * 8 * max(rates["rx_bytes_per_s"], rates["tx_bytes_per_s"]) / (speed * 1e6), 2) \
            if speed else None
        out.append(dict(rates, interface=name, speed_mbps=speed, utilisation_pct=util, sample_seconds=round(elapsed, 1),
                        source="/proc/net/dev over %.1f s; /sys/class/net/%s/speed" % (elapsed, name),
                        speed_error=None if speed else "the link speed is not known (a virtual interface, or down)"))
    return out


NOBODY = 65534             # the account the package manager's read-only view runs as (no groups)
#: apt's listing, with no binary cache files either (an agent that is not root may still be an account apt can write as)
APT_UPGRADABLE = ["/usr/bin/apt", "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=", "list",
                  "--upgradable"]
#: --cacheonly as a user that is not root: read-only use of the system cache (dnf's own documentation)
DNF = ["/usr/bin/dnf", "-q", "--cacheonly"]


def start_unprivileged(argv):
    """Start a package manager's read-only listing as uid/gid 65534 with no supplementary groups, cwd "/", in a
    process group of its own: run as root, apt rebuilds and writes its binary caches (/var/cache/apt/*.bin) and dnf
    writes its logs and metadata; as nobody they write nothing and read the system's own lists. Read it with
    unprivileged_output."""
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C", "HOME": "/"}
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            preexec_fn=become(NOBODY, NOBODY, []) if os.geteuid() == 0 else None, env=env, cwd="/",
                            start_new_session=True)


def unprivileged_output(proc):
    """The output of a start_unprivileged listing as text (stderr dropped), read with processes.read_bounded (held
    in bounded memory; its group killed when late, subprocess.TimeoutExpired then)."""
    out, _, timed_out = read_bounded(proc, TOOL_TIMEOUT * 2, keep=TOOL_OUTPUT_KEPT)
    if timed_out:
        raise subprocess.TimeoutExpired(proc.args, TOOL_TIMEOUT * 2)
    return out


def run_unprivileged(argv):
    return unprivileged_output(start_unprivileged(argv))


def start_patches():
    """Start the package manager's listing that patch_figures reads, so that it runs while the inspection reads the
    rest and waits out its sample: apt's second or more then adds nothing to the op's time (it was run before the
    sample began). ("apt"|"dnf", the process), (None, None) without either, ("error", the exception)."""
    try:
        if os.access(APT_UPGRADABLE[0], os.X_OK):
            return "apt", start_unprivileged(APT_UPGRADABLE)
        if os.access(DNF[0], os.X_OK):
            return "dnf", start_unprivileged(DNF + ["updateinfo", "list", "--security"])
    except (OSError, subprocess.SubprocessError) as e:
        return "error", e
    return None, None


def stop_patches(started):
    """End a listing start_patches began that nobody read (the op failed on the way): never left running."""
    proc = started[1] if started and started[0] in ("apt", "dnf") else None
    if proc is not None and proc.returncode is None:
        kill_group(proc.pid)
        proc.communicate()


def patch_figures(started=None):
    """Pending updates from the package manager's own view, read-only (apt's or dnf's cache; no download), run as
    nobody (start_unprivileged) so that nothing is written on the host. ``started``: start_patches's answer."""
    kind, proc = started or start_patches()
    try:
        if kind == "error":
            raise proc
        if kind == "apt":
            lines = [x for x in unprivileged_output(proc).splitlines() if "[upgradable from" in x]
            security = [x.split("/")[0] for x in lines if re.search(r"/\S*-security", x)]
            return {"pending": len(lines), "security": len(security), "security_packages": security[:50],
                    "source": "apt list --upgradable (the package lists as last updated on the host)"}
        if kind == "dnf":
            security = sorted(set(x.split()[-1] for x in unprivileged_output(proc).splitlines()
                                  if len(x.split()) >= 3))
            text = run_unprivileged(DNF + ["check-update"])
            pending = [x for x in text.splitlines() if len(x.split()) == 3]
            return {"pending": len(pending), "security": len(security), "security_packages": security[:50],
                    "source": "dnf --cacheonly updateinfo list --security; dnf check-update"}
    except (OSError, subprocess.SubprocessError) as e:
        return {"pending": None, "security": None, "source": "the package manager", "error": str(e)}
    return {"pending": None, "security": None, "source": "the package manager",
            "error": "neither apt nor dnf on this host"}
