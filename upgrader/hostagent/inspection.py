"""Inspection: read-only health facts of this host and one install (upgrader/customer/inspection.py
decides what is a warning; this only reads).
"""

import hashlib
import os
import re
import socket
import stat
import sys
import time

from .beneath import open_beneath, resolve_beneath, sparse, walk_dirs
from .common import CHUNK, AgentError
from .files import read_text
from . import hosttrust
from .inspect_perf import (access_figures, jvm_figures, net_counters, net_figures, patch_figures, process_before,
                           process_figures, start_patches, stop_patches)
from .processes import (describe_selector, foreign_process, listening, pid_alive, pid_file_record, port_open,
                        proc_cmdline, read_pid, select_processes)
from .state import Paths
from .versions import read_version


SYSCTLS = ("fs.file-max", "fs.nr_open", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog",
           "net.ipv4.ip_local_port_range", "vm.swappiness", "vm.max_map_count", "vm.overcommit_memory")
ERROR_LINE = r"ERROR|SEVERE|FATAL|Exception"
#: config files whose text never leaves the host, even when a playbook lists them: key stores, keys,
#: licences and anything under a security/ directory (their digests do)
TEXT_NEVER = re.compile(
    r"(^|/)security/"
    r"|\.(jks|jceks|p12|pfx|keystore|truststore|key|keys|pem|kdb|sth|rdb)$"  # Java, PKCS#12, IBM GSKit, LTPA
    r"|(^|/)(license[^/]*|boot\.properties|SerializedSystemIni\.dat|\.?htpasswd"  # WebLogic, Apache
    r"|[^/]*(credential|secret|passw)[^/]*)$", re.I)
TEXT_MAX = 262144
CONFIG_HASH_MAX = 64 << 20  # bytes of one config file inspect hashes (config files are far smaller)


def proc_limits(pid):
    """Open files and processes (soft, hard) of a process, from /proc/PID/limits."""
    out = {}
    for line in (read_text("/proc/%s/limits" % pid) or "").splitlines():
        for key, label in (("open_files", "Max open files"), ("processes", "Max processes")):
            if line.startswith(label):
                soft, hard = line[len(label):].split()[:2]
                out[key] = [None if v == "unlimited" else int(v) for v in (soft, hard)]
    return out


#: how many directory entries one pattern's expansion may look at (a bound on the walk, whatever the tree)
GLOB_MAX_ENTRIES = 200000


def glob_beneath(root, pattern, refused=None):
    """The paths below ``root`` (relative, '/'-separated) that ``pattern`` matches, as glob.glob(recursive=True)
    would give them, except that ``**`` never descends through a link to a directory (``a -> .`` would make it
    endless) and the walk looks at GLOB_MAX_ENTRIES entries at most.

    Every directory is listed from descriptors opened with O_NOFOLLOW beneath root, after its path is resolved
    beneath root (resolve_beneath): a link met on the way that leads out is never followed, not even to list what
    it points at, and its sentence (the one check_host_paths gives) is added to ``refused``."""
    import fnmatch

    if pattern.startswith("/"):
        return []  # the install's own paths only
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    seen = [0]
    found = []
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return []

    def names(d):
        """(name, is a plain directory, is a link) of the entries of logical directory ``d`` (a list)."""
        fd = open_resolved(root, root_fd, d, "inspected path", refused)
        if fd is None:
            return []
        try:
            with os.scandir(fd) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in it]
        except OSError:
            return []
        finally:
            if fd != root_fd:
                os.close(fd)
        seen[0] += len(entries)
        if seen[0] > GLOB_MAX_ENTRIES:
            return []
        return sorted(entries)

    def match(name, part):
        if name.startswith(".") and not part.startswith("."):
            return False
        return fnmatch.fnmatchcase(name, part)

    def walk(d, i):
        if seen[0] > GLOB_MAX_ENTRIES:
            return
        if i == len(parts):
            found.append(d)
            return
        part = parts[i]
        if part == "**":
            walk(d, i + 1)  # zero directories
            for name, is_dir, _ in names(d):
                if not name.startswith(".") and is_dir:
                    walk(d + [name], i)
            return
        if part == "..":
            if d:  # never above root (a link's own '..' is resolved physically when it is listed)
                walk(d[:-1], i + 1)
            return
        if not any(c in part for c in "*?["):
            if i + 1 < len(parts) or any(n == part for n, _, _ in names(d)):
                walk(d + [part], i + 1)
            return
        for name, is_dir, is_link in names(d):
            if match(name, part) and (i + 1 == len(parts) or is_dir or is_link):
                walk(d + [name], i + 1)  # a link is resolved beneath root when it is listed

    try:
        walk([], 0)
    finally:
        os.close(root_fd)
    return ["/".join(f) for f in found if f]


def open_resolved(root, root_fd, rel_parts, what, refused):
    """A descriptor of the directory ``rel_parts`` names below ``root`` (``root_fd`` itself for none), its links
    resolved beneath root and every component opened with O_NOFOLLOW; None when it is missing or not a directory,
    or when a link on its way leads out (its sentence then added to ``refused``, once)."""
    try:
        physical = resolve_beneath(root, "/".join(rel_parts), what)
        return walk_dirs(root_fd, physical, what, root)
    except AgentError as e:
        if refused is not None and e.kind == "unsafe_path" and str(e) not in refused:
            refused.append(str(e))
        return None
    except OSError:
        return None


def inside_globs(root, patterns, expand=True, refused=None):
    """The files below ``root`` the patterns name (a directory named: every file below it, once), inside only;
    a path whose links lead out is left out, its sentence added to ``refused``."""
    out = []
    for pattern in patterns:
        for rel in sorted(set(glob_beneath(root, pattern, refused))):
            try:
                physical = resolve_beneath(root, rel, "inspected path")
            except AgentError as e:  # found through a link that leads out: not the install's file, said so
                if refused is not None and str(e) not in refused:
                    refused.append(str(e))
                continue
            try:
                mode = os.lstat(os.path.join(root, *physical)).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                if expand:
                    out += inside_globs(root, [rel + "/**/*"], False, refused)
            elif stat.S_ISREG(mode):
                out.append(rel)
    return sorted(set(out))


def config_selection(root, configs, text_globs, refused=None):
    """(path, text wanted) of each config file: text only for the paths ``text_globs`` (a list) names."""
    texts = set(inside_globs(root, text_globs, refused=refused)) if isinstance(text_globs, list) else set()
    return [(rel, rel in texts) for rel in sorted(set(inside_globs(root, configs, refused=refused)) | texts)]


def config_facts(root, rel, text):
    """sha256, size and mtime of a config file; its text when asked for and allowed (see TEXT_NEVER). A digest
    is derived from the content, so it leaves the host only under the rule of the text (open_beneath's disclosure
    rule): a file the accounts that could have put it there may not read themselves is reported withheld, with
    its size and time only (from its inode), never its sha256."""
    try:
        fd = open_beneath(root, rel, "config file", disclose=True)
    except AgentError as e:  # e.g. a hard link of another owner's file: neither its text nor its digest
        if not (e.data.get("hard_link") or e.data.get("not_disclosed")):
            raise
        fd = open_beneath(root, rel, "config file", disclose=False)  # fstat only: nothing of it is read
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return {"path": rel, "size": st.st_size, "mtime": st.st_mtime, "withheld": str(e), "text_withheld": str(e)}
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        unhashed = not_hashed(st)
        if unhashed:
            return {"path": rel, "size": st.st_size, "mtime": st.st_mtime, "withheld": unhashed,
                    "text_withheld": unhashed}
        h, left = hashlib.sha256(), st.st_size
        while left > 0:  # the size seen: a file its owner grows meanwhile (as a hole, for free) is read no further
            block = f.read(min(CHUNK, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
        f.seek(0)
        data = f.read(min(TEXT_MAX + 1, st.st_size)) if text else b""
    c = {"path": rel, "sha256": h.hexdigest(), "size": st.st_size, "mtime": st.st_mtime}
    if not text:
        return c
    if TEXT_NEVER.search(rel):
        c["text_withheld"] = "a key store, key, licence or security file: digest only"
    elif st.st_size > TEXT_MAX:
        c["text_withheld"] = "larger than %d bytes: digest only" % TEXT_MAX
    elif b"\0" in data:
        c["text_withheld"] = "binary (holds NUL bytes): digest only"
    else:
        c["text"] = data.decode("utf-8", "replace")
    return c


def not_hashed(st):
    """Why a config file of stat ``st`` is not hashed (None when it is): sparse, or over CONFIG_HASH_MAX. Its owner
    (often the service account) can make it terabytes long as a hole at no cost: hashed to the end, the (root)
    agent would read for hours (over SSH, on after the controller gave up)."""
    if sparse(st):
        return "a sparse file (%d bytes, of which %d on disk): not hashed" % (st.st_size, st.st_blocks * 512)
    if st.st_size > CONFIG_HASH_MAX:
        return "%d bytes, more than the %d inspect hashes: not hashed" % (st.st_size, CONFIG_HASH_MAX)
    return None


def read_tail(fd, size, want):
    """At most ``want`` bytes from ``size - want`` on (the last ``want`` bytes of a file of ``size`` bytes). The
    file is another account's, which can make it longer (a hole costs it nothing) between the fstat that gave
    ``size`` and this read: a read to EOF would then take all of it into memory; this never takes more than
    ``want``."""
    return os.pread(fd, want, max(0, size - want))


def log_facts(root, rel, lines, tail, pattern):
    path = os.path.join(root, rel)
    try:
        fd = open_beneath(root, rel, "log file")
    except AgentError as e:  # a hard link of another owner's file: not read, said so
        if not e.data.get("hard_link"):
            raise
        fd = open_beneath(root, rel, "log file", disclose=False)  # its size and time only
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return {"path": path, "size": st.st_size, "mtime": st.st_mtime, "recent": time.time() - st.st_mtime < 86400,
                "lines": 0, "errors": 0, "samples": [], "withheld": str(e)}
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        data = read_tail(f.fileno(), st.st_size, 256 * max(lines, tail, 1))
        text = data.decode("utf-8", "replace").splitlines()[-max(lines, tail, 1):]
    errors = [x for x in text[-lines:] if re.search(pattern, x)] if lines else []
    out = {"path": path, "size": st.st_size, "mtime": st.st_mtime, "recent": time.time() - st.st_mtime < 86400,
           "lines": min(lines, len(text)), "errors": len(errors), "samples": errors[-5:],
           "errors_last_day": errors_last_day(text[-lines:] if lines else [], pattern, time.time()),
           "bytes_read": len(data)}
    if sparse(st):
        out["sparse"] = True  # its size is mostly a hole: what was read may be zeros, not the log's lines
    if tail:
        out["tail"] = text[-tail:]
    return out


LINE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})"            # 2026-12-03T16:27:13
                       r"|(\d{2})-(\w{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2})")          # 03-Dec-2026 16:27:13 (Tomcat)
MONTHS = dict((m, i) for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                            "Nov", "Dec"), 1))


def line_time(line):
    """The local time a log line starts with (ISO or Tomcat's form), seconds since the epoch; None without one."""
    m = LINE_TIME.search(line[:40])
    if not m:
        return None
    try:
        if m.group(1):
            parts = [int(m.group(i)) for i in range(1, 7)]
        else:
            parts = [int(m.group(9)), MONTHS[m.group(8)], int(m.group(7))] + [int(m.group(i)) for i in (10, 11, 12)]
        return time.mktime(tuple(parts) + (0, 0, -1))
    except (KeyError, ValueError, OverflowError):
        return None


def errors_last_day(text, pattern, now):
    """Error lines of the last 24 hours among ``text``: a line without a time of its own (a stack trace's) has the time
    of the line before it. None when no line has a time (the rate cannot be told)."""
    count, when, seen = 0, None, False
    for line in text:
        t = line_time(line)
        if t is not None:
            when, seen = t, True
        if when is not None and now - when < 86400 and re.search(pattern, line):
            count += 1
    return count if seen else None


def host_addresses():
    """This host's own addresses (IPv4 from /proc/net/fib_trie, IPv6 from /proc/net/if_inet6), loopback and
    link-local left out; the addresses the host name resolves to where /proc says nothing."""
    found = []
    lines = (read_text("/proc/net/fib_trie") or "").splitlines()
    for prev, line in zip(lines, lines[1:]):
        m = re.match(r"\s*\|-- (\d+\.\d+\.\d+\.\d+)$", prev)
        if m and "/32 host LOCAL" in line and not m.group(1).startswith("127.") and m.group(1) not in found:
            found.append(m.group(1))
    for line in (read_text("/proc/net/if_inet6") or "").splitlines():
        raw = line.split()[0] if line.split() else ""
        if len(raw) == 32 and raw != "0" * 31 + "1" and not raw.startswith("fe80"):
            text = ":".join(raw[i:i + 4] for i in range(0, 32, 4))
            try:
                text = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))
            except (OSError, ValueError):
                pass
            if text not in found:
                found.append(text)
    if not found:
        try:
            for info in socket.getaddrinfo(socket.gethostname(), None):
                addr = info[4][0]
                if addr not in found and not addr.startswith("127.") and addr != "::1":
                    found.append(addr)
        except (OSError, UnicodeError):
            pass
    return found


def op_inspect(req):
    """Health facts: OS, kernel and its parameters, limits, disk, CPU, memory, the product's version,
    process, ports, config digests and log error counts. Reads only; changes nothing."""
    paths = Paths(req)
    started, net_before = time.time(), net_counters()  # the sample's start: rates are measured over the op
    # the package manager's listing (a second or more of apt's own) runs while the rest is read and the sample waits
    patches = start_patches() if req.get("patches", True) else None
    try:
        out = inspect_facts(req, paths, started, net_before, patches)
        if patches:  # after the sample's figures: their window stays the sample's
            out["patches"] = patch_figures(patches)
        return out
    finally:
        stop_patches(patches)


def inspect_facts(req, paths, started, net_before, patches):
    """op_inspect's facts; ``patches``: the package manager's listing start_patches began (None: not asked)."""
    import platform
    import resource

    osr = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', read_text("/etc/os-release") or "", re.M))
    mem = dict((k, int(v.split()[0]) * 1024) for k, v in re.findall(r"^(\w+):\s+(\d+ ?\w*)$",
                                                                     read_text("/proc/meminfo") or "", re.M))
    out = {"hostname": socket.gethostname(), "addresses": host_addresses(), "os": {"name": osr.get("NAME") or platform.system(),
           "version": osr.get("VERSION_ID") or osr.get("VERSION") or "", "pretty": osr.get("PRETTY_NAME", "")},
           "kernel": platform.release(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
           "load": list(os.getloadavg()), "time": time.time(), "install_dir": paths.install,
           "exists": os.path.isdir(paths.install),
           "memory": {"total": mem.get("MemTotal"), "available": mem.get("MemAvailable"),
                      "swap_total": mem.get("SwapTotal"), "swap_free": mem.get("SwapFree")},
           "sysctl": dict((k, (read_text("/proc/sys/" + k.replace(".", "/")) or "").strip() or None)
                          for k in SYSCTLS)}
    nofile, nproc = resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_NPROC)
    out["ulimits"] = {"agent": dict((k, [None if x == resource.RLIM_INFINITY else x for x in v])
                                    for k, v in (("open_files", nofile), ("processes", nproc)))}
    where = paths.install
    while not os.path.isdir(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)
    st = os.statvfs(where)
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    out["disk"] = {"path": where, "total": total, "free": free,
                   "used_pct": round(100.0 * (total - st.f_bfree * st.f_frsize) / total, 1) if total else None}
    if patches:
        out["patches"] = None  # read by op_inspect after the sample (start_patches)
    if not out["exists"]:
        finish_sample(out, req, started, net_before, None, None)
        return out
    refused = hosttrust.version_command_refused(req, req["version_source"])
    if refused:  # a trust-root host runs no playbook command outside a run it accepted
        out["version"], out["version_error"], out["version_refused"] = None, refused, "host_trust"
    else:
        out["version"], out["version_error"] = read_version(paths, req["version_source"])
    try:
        pid, pid_error = read_pid(paths, req.get("pid_file")), None
    except AgentError as e:  # a pid file reached through a link that leads out is not read: reported instead
        pid, pid_error = None, str(e)
    if not req.get("pid_file") and req.get("process"):  # no pid file: the server found by its command line
        pid = (select_processes(req["process"])[0] or [None])[0]
    out["process"] = {"pid_file": req.get("pid_file"), "pid": pid, "running": bool(pid) and pid_alive(pid)}
    if not req.get("pid_file") and req.get("process"):
        out["process"]["found_by"] = describe_selector(req["process"])
    if pid_error:
        out["process"]["error"] = pid_error
    if out["process"]["running"]:
        # the pid file is the service account's to write: a process it names that is not the service's is neither
        # measured nor attached to (as stop never signals it)
        why = foreign_process(pid, paths, [pid_file_record(paths, req.get("pid_file"))], req.get("process"))
        if why:
            out["process"]["running"] = False
            out["process"]["error"] = "not measured: %s" % why
    before = None
    if out["process"]["running"]:
        out["ulimits"]["product"] = proc_limits(pid)
        before = process_before(pid)
    listen = listening()
    out["ports"] = [{"port": int(p), "open": port_open(p, timeout=0.3), "listen": listen.get(int(p), [])}
                    for p in req.get("ports", [])]
    refused = []  # the sentences of config and log globs that meet a link leading out of the install dir
    out["configs"] = [config_facts(paths.install, rel, text)
                      for rel, text in config_selection(paths.install, req.get("configs", []),
                                                        req.get("config_text"), refused)]
    pattern = req.get("error_pattern") or ERROR_LINE
    out["logs"] = [dict(log_facts(paths.install, rel, int(req.get("log_lines", 2000)),
                                  int(req.get("tail", 0)), pattern), path=rel)
                   for rel in inside_globs(paths.install, req.get("logs", []), refused=refused)]
    access = req.get("access_log")
    if access:
        out["access"] = access_figures(paths.install, inside_globs(paths.install, access.get("files") or [],
                                                                   refused=refused), access, time.time())
    else:
        out["access"] = {"error": "the playbook names no access log (inspect.access_log)", "source": None}
    if refused:
        out["paths_refused"] = refused
    finish_sample(out, req, started, net_before, pid if out["process"]["running"] else None, before)
    return out


def finish_sample(out, req, started, net_before, pid, before):
    """The figures measured over the op's run (at least ``sample_seconds``): network rates, the process's CPU, RSS,
    threads and open files, and the JVM's heap and GC when the process is a JVM."""
    wait = float(req.get("sample_seconds", 2)) - (time.time() - max(started, (before or {}).get("time") or 0))
    if wait > 0:
        time.sleep(min(wait, 30))
    out["network"] = net_figures(net_before, net_counters(), max(0.001, time.time() - started))
    if pid is None:
        out["perf"] = {"error": "the product's process is not running (or unknown): no load figures"}
        return
    perf = process_figures(pid, before)
    argv = proc_cmdline(pid)
    if argv and os.path.basename(argv[0]) in ("java", "javaw") or any(a.startswith("-Xmx") for a in argv):
        perf["jvm"] = jvm_figures(pid, argv)
    out["perf"] = perf
