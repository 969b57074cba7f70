"""The host-side agent: performs one phase action on the host it runs on.

It is one self-contained file, standard library only, compatible with Python 3.8, because it
is copied as is to remote hosts and run there with their ``python3``. The controller sends one
JSON request (base64 in ``argv[1]``, or on stdin) and reads one JSON reply on stdout; the agent never decides *whether* to
act (the engine does), only *how*, always re-reading the real state of the host first so every
action is safe to repeat.

Layout it keeps beside the install dir, on the same file system (renames and hard links are
then atomic and free): ``<parent>/.upgrader-<name>/``
    lock                    who holds the host (run, controller, user, time)
    installed.json          manifest of the product files the last install put in place
    packages/<sha256>.tar.gz  packages already on the host (sent once)
    runs/<run>/state.json   how far this run got on this host
    runs/<run>/package.tar.gz  the verified copy that is extracted (never the original)
    runs/<run>/staging/     the new tree, built before stop
    runs/<run>/backup/      hard-link snapshot of the product files, copies of preserved config,
                            manifest.json with every file's sha256, mode, owner
    runs/<run>/old/         the previous tree after the swap (removed when the run ends)

What it deliberately does not do: read YAML, talk to other hosts, decide policy, write the
run journal or the audit log (the controller does).
"""

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import sys
import time

# tarfile, subprocess and urllib are imported where they are used: most actions need none of
# them, and the agent starts once per action.

AGENT_FORMAT = 1
DRIFT_LISTED = 20  # hand-changed files named in a reply (the count is always given)
CHUNK = 1 << 20


def test_kill(req, point):
    """A fault point: die here, as a power cut would, when the request's ``_test_kill`` names it. The controller
    never sets that field; only the test suite's fault plugin (tests/plugin) makes it add one."""
    if req.get("_test_kill") == point:
        os.kill(os.getpid(), signal.SIGKILL)


class AgentError(Exception):
    def __init__(self, message, kind="failed", **data):
        Exception.__init__(self, message)
        self.kind = kind
        self.data = data


# ---------------------------------------------------------------------------------------------
# small durable-file helpers


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def create_nofollow(path, mode=0o644):
    """A new file at ``path`` opened for writing (a leftover of that name removed first, never followed)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)


def append_line_nofollow(path, line):
    """Append one line to the file ``path`` (made when absent, 0600), never through a link; fsynced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AgentError("%s is a symlink; the agent keeps its state only in plain files: remove the link"
                             % path, "unsafe_path", path=path)
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AgentError("%s is not a regular file; the agent keeps its state only in plain files" % path,
                             "unsafe_path", path=path)
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with os.fdopen(create_nofollow(tmp), "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def read_json(path, default=None):
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AgentError("%s is a symlink; the agent keeps its state only in plain files: remove the link"
                             % path, "unsafe_path", path=path)
        raise
    except ValueError:
        raise AgentError("%s is damaged (not valid JSON)" % path, "needs_person")


def sha256_file(path):
    """sha256 of the file ``path`` (its last component never followed: a link there is an error)."""
    h = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)), "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def canonical_digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def rmtree(path):
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


class Paths(object):
    def __init__(self, req):
        self.install = os.path.abspath(req["install_dir"])
        parent, name = os.path.split(self.install.rstrip("/"))
        self.state = req.get("state_dir") or os.path.join(parent, ".upgrader-" + name)
        self.run_id = req.get("run_id")

    @property
    def lock(self):
        return os.path.join(self.state, "lock")

    @property
    def installed(self):
        return os.path.join(self.state, "installed.json")

    @property
    def packages(self):
        return os.path.join(self.state, "packages")

    @property
    def in_run(self):
        """The request belongs to a run whose directory is on this host (so it has a run state)."""
        return bool(self.run_id) and os.path.isdir(self.run())

    def run(self, *parts):
        if not self.run_id or not re.match(r"^[A-Za-z0-9._-]+$", self.run_id):
            raise AgentError("bad run id %r" % (self.run_id,), "bad_input")
        return os.path.join(self.state, "runs", self.run_id, *parts)


def run_state(paths):
    return read_json(paths.run("state.json"), {}) or {}


def set_run_state(paths, **changes):
    st = run_state(paths)
    if "phase" in changes:
        st.pop("launched", None)  # a service launched in an earlier phase is no longer coming up
    st.update(changes)
    st["updated"] = time.time()
    write_json_atomic(paths.run("state.json"), st)
    return st


# ---------------------------------------------------------------------------------------------
# manifests: what a product tree is, file by file


def is_preserved(rel, preserved):
    for p in preserved:
        if rel == p or rel.startswith(p + "/"):
            return True
    return False


def under_preserved(rel, preserved):
    """True when a preserved path lies inside directory rel (rel must be kept as a directory)."""
    return any(p.startswith(rel + "/") for p in preserved)


def scan_tree(root, preserved, hash_files=True):
    """Manifest of the product files under root, skipping preserved paths (see scan_fd); empty when root is
    missing, refused when root itself is a link."""
    try:
        fd = open_root(root, "the tree")
    except FileNotFoundError:
        return {"files": {}, "dirs": {}, "links": {}}
    try:
        return scan_fd(fd, root, preserved, hash_files)
    finally:
        os.close(fd)


def scan_fd(root_fd, root, preserved, hash_files=True):
    """Manifest of the directory open as ``root_fd`` (``root``, for messages), walked from descriptors: each entry
    is lstat'ed in the directory it was listed from, a directory is entered by opening that name there with
    O_NOFOLLOW (one swapped for a link meanwhile is refused, not followed), a link is recorded as a link and a
    file is hashed from its own descriptor (its size, inode and time taken from that descriptor too)."""
    files, dirs, links = {}, {}, {}

    def walk(fd, rel_dir):
        with os.scandir(fd) as it:
            names = sorted(e.name for e in it)
        for name in names:
            rel = rel_dir + "/" + name if rel_dir else name
            if is_preserved(rel, preserved):
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since it was listed
            if stat.S_ISLNK(st.st_mode):
                try:
                    links[rel] = os.readlink(name, dir_fd=fd)
                except OSError:
                    raise AgentError("%s/%s changed while the tree was read (a link, then not): a directory is "
                                     "being swapped for a link; refusing to go on" % (root, rel), "unsafe_path",
                                     path=rel)
            elif stat.S_ISDIR(st.st_mode):
                dirs[rel] = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
                sub = open_dir_at(fd, name, "product directory %s" % rel, root)
                try:
                    walk(sub, rel)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                if hash_files:
                    st, digest = hash_at(fd, name, "%s/%s" % (root, rel))
                entry = {"size": st.st_size, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                         "gid": st.st_gid, "ino": st.st_ino, "mtime": st.st_mtime_ns}
                if hash_files:
                    entry["sha256"] = digest
                files[rel] = entry
            else:
                raise AgentError("%s/%s is neither a file, a directory nor a link; refusing to handle it"
                                 % (root, rel), "needs_person")

    walk(root_fd, "")
    return {"files": files, "dirs": dirs, "links": links}


def hash_at(dfd, name, full):
    """(fstat, sha256) of the regular file ``name`` in directory ``dfd``, opened with O_NOFOLLOW; a link or
    anything but a regular file there is refused (``full`` names it)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AgentError("%s became a symlink while it was read; refusing it" % full, "unsafe_path", path=full)
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AgentError("%s is not a regular file any more; refusing it" % full, "unsafe_path", path=full)
        h = hashlib.sha256()
        for b in iter(lambda: f.read(CHUNK), b""):
            h.update(b)
        return st, h.hexdigest()


def drift(installed, current):
    """Product files changed by hand since the last install: changed, added, removed."""
    out = []
    if not installed:
        return out
    old = installed.get("files", {})
    new = current.get("files", {})
    for rel in sorted(set(old) | set(new)):
        a, b = old.get(rel), new.get(rel)
        if a and not b:
            out.append({"path": rel, "change": "removed"})
        elif b and not a:
            out.append({"path": rel, "change": "added"})
        elif a.get("sha256") != b.get("sha256"):
            out.append({"path": rel, "change": "modified"})
        elif a.get("mode") != b.get("mode"):
            out.append({"path": rel, "change": "mode"})
    return out


def read_version(paths, source):
    """The installed version, from a file (+ optional regex) or a command's output."""
    pattern = source.get("pattern") or r"^\s*(\S+)"
    if source.get("file"):
        f = os.path.join(paths.install, source["file"])
        try:
            if source.get("member"):
                text, why = read_version_member(paths, source)
                if text is None:
                    return None, why
            else:
                text = read_beneath(paths.install, source["file"], "version file", 65536).decode("utf-8", "replace")
        except FileNotFoundError:
            return None, "version file %s not found" % f
    else:
        res = run_shell(source["command"], paths.install, float(source.get("timeout", 30)))
        if res["exit"] != 0:
            return None, "version command exited %s: %s" % (res["exit"], res["stderr"][-300:])
        text = res["stdout"]
    m = re.search(pattern, text, re.MULTILINE)
    if not m:
        return None, "no version found by pattern %r" % pattern
    return (m.group(1) if m.groups() else m.group(0)).strip(), None


# ---------------------------------------------------------------------------------------------
# commands and processes


LOG_LINE = 4000  # a log probe's matching line, before the controller redacts it and cuts it to 200 characters
OUTPUT_TAIL = 16000  # a command's output, before the controller redacts it and keeps its last 4000 characters


def output_tail(text):
    """The end of a command's output, starting at a line boundary: a line cut in half can lose the name that
    marks its value as a secret (the controller redacts what it gets)."""
    if len(text) <= OUTPUT_TAIL:
        return text
    end = text[-OUTPUT_TAIL:]
    return end[end.find("\n") + 1:] if "\n" in end else ""


def run_shell(command, cwd, timeout, env=None):
    """Run a playbook command with sh in its own process group; kill the group on timeout."""
    import subprocess

    start = time.time()
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, err = proc.communicate()
        timed_out = True
    return {"exit": proc.returncode, "stdout": output_tail(out.decode("utf-8", "replace")),
            "stderr": output_tail(err.decode("utf-8", "replace")), "timed_out": timed_out,
            "seconds": round(time.time() - start, 3)}


def kill_group(pid):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except OSError:
            return
        deadline = time.time() + 2
        while time.time() < deadline:
            try:
                os.killpg(pid, 0)
            except OSError:
                return
            time.sleep(0.02)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    try:  # a zombie is not alive
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_pid(paths, pid_file):
    if not pid_file:
        return None
    try:
        return int(read_beneath(paths.install, pid_file, "pid_file", 64).strip() or b"0") or None
    except (OSError, ValueError):
        return None


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, deadline, interval=0.02):
    while True:
        if predicate():
            return True
        if time.time() >= deadline:
            return False
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# the server's process without a pid file: the playbook's ``process:`` selector (a stock Tomcat, like many
# Java servers, writes no pid file unless told to), cross-checked against the ports it listens on


def real_ports(ports):
    """The ports of a list that can be connected to: a disabled port (Tomcat's <Server port="-1">) is none."""
    out = []
    for p in ports or []:
        try:
            n = int(p)
        except (TypeError, ValueError):
            continue
        if 0 < n < 65536:
            out.append(n)
    return out


def proc_cmdline(pid):
    """The arguments of process ``pid`` ([] when it is gone or cannot be read)."""
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").split("\0")[:-1]


def cmdline_matches(argv, wants, last=None):
    """Does ``argv`` hold every argument of ``wants`` (and end with ``last``)? ``NAME=/dir`` also matches the
    same directory written another way (through a link, or with a trailing slash)."""
    if not argv or (last is not None and argv[-1] != last):
        return False
    for want in wants:
        if want in argv:
            continue
        name, sep, value = want.partition("=")
        if not sep or not value.startswith("/"):
            return False
        prefix = name + "="
        real = os.path.realpath(value)
        if not any(a.startswith(prefix + "/") and os.path.realpath(a[len(prefix):]) == real for a in argv):
            return False
    return True


def port_owners(ports, first=()):
    """{port: pid} of the processes holding the listening TCP sockets of ``ports`` (IPv4 and IPv6), from
    /proc/net/tcp* and /proc/PID/fd; a port nobody listens on, or whose holder cannot be read, is left out.
    The pids in ``first`` are looked at first (the server found by its command line, usually)."""
    socks = {}
    want = set(ports)
    for name in ("tcp", "tcp6"):
        for line in (read_text("/proc/net/" + name) or "").splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A":  # LISTEN
                port = int(cols[1].rsplit(":", 1)[1], 16)
                if port in want:
                    socks["socket:[%s]" % cols[9]] = port
    owners = {}
    if not socks:
        return owners
    wanted = set(socks.values())

    def scan(pid):
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            return
        for fd in fds:
            try:
                target = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target in socks:
                owners.setdefault(socks[target], int(pid))

    for pid in first:
        scan(pid)
    if set(owners) != wanted:
        try:
            entries = os.listdir("/proc")
        except OSError:
            entries = []
        for entry in entries:
            if entry.isdigit() and int(entry) not in first:
                scan(entry)
                if set(owners) == wanted:
                    break
    return owners


def select_processes(sel):
    """(pids, problem): the live processes the selector names, and why they cannot be trusted (None when they
    can). When one of the selector's ports listens, the process holding it must be one of those found (then
    only the holders are returned): a port held by some other process means the server found is not the one
    that serves."""
    try:
        entries = os.listdir("/proc")
    except OSError as e:
        return [], "cannot list processes (/proc: %s)" % e.strerror
    me = os.getpid()
    found = []
    for entry in entries:
        if entry.isdigit() and int(entry) != me and \
                cmdline_matches(proc_cmdline(entry), sel.get("cmdline_contains") or [], sel.get("cmdline_last")) \
                and pid_alive(int(entry)):
            found.append(int(entry))
    found.sort()
    ports = real_ports(sel.get("ports"))
    if not ports:
        return found, None
    owners = port_owners(ports, found)
    for port, owner in sorted(owners.items()):
        if owner not in found:
            args = " ".join(" ".join(a.split()) for a in proc_cmdline(owner))  # one line, its start and end
            args = args if len(args) <= 160 else args[:60] + " ... " + args[-95:]
            return found, ("port %d is held by pid %d (%s), not by the server found by its command line (%s)"
                           % (port, owner, args or "?", ", ".join(str(p) for p in found) or "none"))
    holders = [p for p in found if p in owners.values()]
    return holders or found, None


def describe_selector(sel):
    return "a process whose command line holds %s%s" % (
        " ".join(sel.get("cmdline_contains") or []),
        " and ends with %r" % sel["cmdline_last"] if sel.get("cmdline_last") else "")


def pid_file_state(paths, pid_file):
    """(pid, None) from a pid file, or (None, why): missing (cannot tell), empty or not a number."""
    try:
        text = read_beneath(paths.install, pid_file, "pid_file", 64).strip()
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, "unreadable (%s)" % e.strerror
    try:
        return int(text or b"0") or None, None if text else "empty"
    except ValueError:
        return None, "not a number"


def service_pids(paths, pid_file=None, sel=None, known=None):
    """The live pids of the service: the pid file's, else (or as well, when both are given) the selector's."""
    out = []
    for pid in ([known] if known else []) + [read_pid(paths, pid_file)]:
        if pid and pid not in out and pid_alive(pid):
            out.append(pid)
    if sel:
        for pid in select_processes(sel)[0]:
            if pid not in out:
                out.append(pid)
    return out


def probe_process(paths, probe):
    """(ok, detail, unknown) of a process probe; ``unknown``: it could not be evaluated (no pid file: the service
    may well run, nothing says which process it is)."""
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
        return ok, "pid %s %s" % (pid, "alive" if ok else "not running"), False
    sel = probe.get("process") or {}
    pids, problem = select_processes(sel)
    if problem:
        return False, problem, False
    if not pids:
        return False, "not running: no %s" % describe_selector(sel)[2:], False
    return True, "pid %s alive (found by its command line)" % ", ".join(str(p) for p in pids), False


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
            os.open(paths.install, OPEN_DIR & ~os.O_NOFOLLOW)
    except OSError:
        return []
    try:
        names = os.listdir(fd)
    finally:
        os.close(fd)
    return [os.path.join(head, n) if head else n for n in sorted(fnmatch.filter(names, name))]


def read_version_member(paths, source):
    """The text of ``member`` inside the zip or jar archive ``file`` (read without starting any program)."""
    import io
    import zipfile

    data = read_beneath(paths.install, source["file"], "version file", 64 << 20)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            info = z.getinfo(source["member"])
            if info.file_size > 1 << 20:
                raise ValueError("%s in %s is larger than 1 MiB" % (source["member"], source["file"]))
            return z.read(info).decode("utf-8", "replace"), None
    except KeyError:
        return None, "%s holds no %s" % (source["file"], source["member"])
    except (zipfile.BadZipfile, ValueError, RuntimeError, EOFError) as e:
        return None, "%s is not a readable archive: %s" % (source["file"], e)


# ---------------------------------------------------------------------------------------------
# paths beneath a root: every path the agent touches in an install dir (and every package member)
# is resolved physically, as the kernel would, and refused when a link on the way leads out; it is
# then opened from a directory descriptor, one component at a time, with O_NOFOLLOW, so that a link
# swapped in after the check cannot lead out either.

MAX_LINK_HOPS = 40  # as the kernel's own limit of links followed in one lookup
NAME_MAX, PATH_MAX = 255, 4096
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def link_target(path, dir_fd=None):
    """The target of link ``path`` for a message ('(swapped since)' when it is no longer a link)."""
    try:
        return os.readlink(path, dir_fd=dir_fd)
    except OSError:
        return "(swapped since)"


def split_rel(rel):
    """The components of a relative path, '.' and empty ones removed; None when it is absolute or climbs."""
    if not isinstance(rel, str) or rel.startswith("/") or "\x00" in rel:
        return None
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    return None if ".." in parts else parts


def unsafe_path(what, rel, root, why):
    return AgentError("%s %s %s (install dir %s); nothing was changed: make it a plain file or "
                      "directory inside the install dir, or correct the playbook or inventory"
                      % (what, rel, why, root), "unsafe_path", path=rel, what=what)


def resolve_beneath(root, rel, what, follow_last=True):
    """The components of ``rel`` below ``root``, every link on the way resolved on the real file system.

    A link that leads outside root (absolute, or climbing above it) is refused, naming the link; missing
    components are taken as they are. ``follow_last`` False keeps a final link as itself (to remove it)."""
    parts = split_rel(rel)
    if parts is None:
        raise unsafe_path(what, rel, root, "is absolute or climbs out with '..'")
    return follow_beneath(root, rel, what, [], list(parts), follow_last)


def follow_beneath(root, rel, what, done, todo, follow_last=True, via=None):
    """The loop of resolve_beneath: ``done`` resolved components, ``todo`` the rest (may hold '..' and a leading
    '' for an absolute link target); ``via``: (link, target) that put ``todo`` there."""
    bases = [os.path.abspath(root), os.path.realpath(root)]
    hops = 0
    if todo and todo[0] == "":  # an absolute target: allowed only when it names a path inside root
        target = "/".join(todo)
        base = [b for b in bases if target == b or target.startswith(b + "/")]
        if not base:
            raise unsafe_path(what, rel, root, "passes through the symlink %s -> %s, which leads outside "
                                               "the install dir" % via)
        done, todo = [], target[len(base[0]):].split("/")
    while todo:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if not done:
                raise unsafe_path(what, rel, root, "passes through the symlink %s -> %s, which leads outside "
                                                   "the install dir" % via)
            done.pop()
            continue
        full = os.path.join(root, *(done + [name]))
        try:
            st = os.lstat(full)
        except OSError:
            done.append(name)
            continue
        if not stat.S_ISLNK(st.st_mode) or (not todo and not follow_last):
            done.append(name)
            continue
        hops += 1
        try:
            target = os.readlink(full)
        except OSError:  # no longer a link: the name was swapped while it was checked
            raise unsafe_path(what, rel, root, "changed while it was checked (%s was a symlink, then not): a "
                                               "directory is being swapped for a link" % "/".join(done + [name]))
        via = ("/".join(done + [name]), target)
        if hops > MAX_LINK_HOPS:
            raise unsafe_path(what, rel, root, "meets more than %d symlinks (the last %s -> %s; a loop?)"
                              % ((MAX_LINK_HOPS,) + via))
        if target.startswith("/"):
            base = [b for b in bases if target == b or target.startswith(b + "/")]
            if not base:
                raise unsafe_path(what, rel, root, "passes through the symlink %s -> %s, which leads outside "
                                                   "the install dir" % via)
            done, target = [], target[len(base[0]):]
        todo = target.split("/") + todo
    return done


def open_dir_at(fd, name, what, root):
    """A descriptor of directory ``name`` in directory ``fd``; a link or a file there is refused."""
    try:
        return os.open(name, OPEN_DIR, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise AgentError("%s: %s is not a plain directory (a symlink?); refusing to go through it below %s"
                             % (what, name, root), "unsafe_path", path=name)
        raise


def walk_dirs(root_fd, parts, what, root, create=False):
    """Descriptor of the directory root/parts[0]/.../parts[-1], opened one step at a time with O_NOFOLLOW
    from ``root_fd`` (the caller closes it; it may be root_fd itself when parts is empty)."""
    fd = root_fd
    for name in parts:
        if create:
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
        try:
            nfd = open_dir_at(fd, name, what, root)
        finally:
            if fd != root_fd:
                os.close(fd)
        fd = nfd
    return fd


def open_beneath(root, rel, what, flags=os.O_RDONLY):
    """Open root/rel for reading, resolved beneath root and walked without following any link."""
    parts = resolve_beneath(root, rel, what)
    if not parts:
        raise unsafe_path(what, rel, root, "is the install dir itself, not a file in it")
    root_fd = os.open(root, OPEN_DIR & ~os.O_NOFOLLOW)
    try:
        fd = walk_dirs(root_fd, parts[:-1], what, root)
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise AgentError("%s %s became a symlink while it was read; refusing it" % (what, rel), "unsafe_path",
                                 path=rel)
            raise
        finally:
            if fd != root_fd:
                os.close(fd)
    finally:
        os.close(root_fd)


def read_beneath(root, rel, what, limit=-1, offset=0):
    """The bytes of root/rel (see open_beneath), from ``offset``, at most ``limit``."""
    fd = open_beneath(root, rel, what)
    with os.fdopen(fd, "rb") as f:
        if offset:
            f.seek(offset)
        return f.read(limit)


def remove_at(parent_fd, name):
    """Remove ``name`` in directory ``parent_fd``: a file or link is unlinked, a directory emptied from
    descriptors and removed; nothing it holds is ever followed."""
    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    fd = os.open(name, OPEN_DIR, dir_fd=parent_fd)
    try:
        for entry in os.listdir(fd):
            remove_at(fd, entry)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def remove_beneath(root, rel, what, missing_ok=False):
    """Remove root/rel (a final link is removed, not followed); refused when a link on its way leads
    out of root or a component is not a plain directory. False when it was not there."""
    parts = resolve_beneath(root, rel, what, follow_last=False)
    if not parts:
        raise unsafe_path(what, rel, root, "is the install dir itself, not a path in it")
    root_fd = os.open(root, OPEN_DIR & ~os.O_NOFOLLOW)
    try:
        try:
            fd = walk_dirs(root_fd, parts[:-1], what, root)
        except FileNotFoundError:
            if missing_ok:
                return False
            raise
        try:
            remove_at(fd, parts[-1])
        except FileNotFoundError:
            if missing_ok:
                return False
            raise
        finally:
            if fd != root_fd:
                os.close(fd)
    finally:
        os.close(root_fd)
    return True


def recorded_link_problems(root, links, preserved):
    """The product links a scan recorded (rel -> target, as read then), checked before anything is made from them:
    one that lies on the way of a preserved path (install moves those through plain directories only) or whose
    recorded target leads outside root is refused, one sentence each. The target checked is the one recorded,
    which the backup and the staged tree would recreate, not whatever the name holds now."""
    problems = []
    for rel, target in sorted(links.items()):
        under = [p for p in preserved if p.startswith(rel + "/")]
        if under:
            problems.append(str(unsafe_path("preserved path", under[0], root, "passes through the symlink %s -> %s; "
                                            "a preserved path is moved only through plain directories"
                                            % (rel, target))))
            continue
        try:
            follow_beneath(root, rel, "product link", rel.split("/")[:-1], target.split("/"), via=(rel, target))
        except AgentError as e:
            problems.append(str(e))
    return problems


def check_host_paths(root, spec):
    """Every path a run will touch in the install dir, checked before anything is changed: the problems
    found (one sentence each; empty when all resolve beneath root)."""
    problems = []
    checks = [("preserved path", p, True) for p in spec.get("preserve", [])]
    checks += [("the patch's remove entry", p, False) for p in spec.get("remove", [])]
    checks += [("pid_file", p, True) for p in spec.get("pid_files", [])]
    checks += [("log file", p, True) for p in spec.get("logs", [])]
    checks += [("version file", p, True) for p in ([spec["version_file"]] if spec.get("version_file") else [])]
    for what, rel, follow in checks:
        try:
            resolve_beneath(root, rel, what, follow_last=follow)
        except AgentError as e:
            problems.append(str(e))
    return problems


def check_state_dir(paths):
    """The agent's own directories are plain directories, not links to elsewhere, owned by the agent's user
    and writable by nobody else (another account could otherwise put links in them for root to follow)."""
    dirs = [paths.state, os.path.join(paths.state, "runs"), paths.packages]
    if paths.run_id:
        dirs.append(paths.run())
    for d in dirs:
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            continue
        problem = state_dir_problem(d, st, lambda: link_target(d))
        if problem:
            raise problem


def state_dir_problem(d, st, target):
    """The refusal (an AgentError) of state dir ``d`` whose lstat is ``st``, or None when the agent may keep its
    state there: a plain directory owned by the agent's user that nobody else can write."""
    if stat.S_ISLNK(st.st_mode):
        return AgentError("%s is a symlink (-> %s); the agent keeps its state only in plain directories: "
                          "remove the link" % (d, target()), "unsafe_path", path=d)
    if not stat.S_ISDIR(st.st_mode):
        return AgentError("%s is not a directory; the agent keeps its state there: move it away" % d,
                          "unsafe_path", path=d)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return AgentError("%s is owned by uid %d with mode %o; the agent keeps its state only in directories "
                          "owned by uid %d that nobody else can write: chown it and chmod go-w, or move it away"
                          % (d, st.st_uid, stat.S_IMODE(st.st_mode), os.geteuid()), "unsafe_path", path=d)
    return None


def open_state_dir(path, create=False):
    """A descriptor of the agent's own directory ``path`` (a state or ledger dir), opened once from its parent's
    descriptor with O_NOFOLLOW and checked on that descriptor (state_dir_problem): whoever can write the parent
    may swap the name for a link afterwards, but every read and write made relative to this descriptor stays in
    the directory checked. None when it is absent (made 0700 when ``create``). The caller closes it."""
    parent, name = os.path.split(os.path.abspath(path).rstrip("/"))
    if create:
        os.makedirs(parent or "/", 0o755, exist_ok=True)
    pfd = os.open(parent or "/", OPEN_DIR & ~os.O_NOFOLLOW)
    try:
        if create:
            try:
                os.mkdir(name, 0o700, dir_fd=pfd)
            except FileExistsError:
                pass
        try:
            fd = os.open(name, OPEN_DIR, dir_fd=pfd)
        except FileNotFoundError:
            if create:
                raise
            return None
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            raise state_dir_problem(path, st, lambda: link_target(name, pfd)) or e
    finally:
        os.close(pfd)
    problem = state_dir_problem(path, os.fstat(fd), lambda: "")
    if problem:
        os.close(fd)
        raise problem
    return fd


def state_file_error(where, name, e):
    if e.errno == errno.ELOOP:
        return AgentError("%s/%s is a symlink; the agent keeps its state only in plain files: remove the link"
                          % (where, name), "unsafe_path", path=os.path.join(where, name))
    return e


def read_json_at(dfd, name, where, default=None):
    """The JSON document ``name`` in directory ``dfd`` (``where``, for messages), never read through a link."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
    except FileNotFoundError:
        return default
    except OSError as e:
        raise state_file_error(where, name, e)
    with os.fdopen(fd, encoding="utf-8") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AgentError("%s/%s is not a regular file; the agent keeps its state only in plain files"
                             % (where, name), "unsafe_path", path=os.path.join(where, name))
        try:
            return json.load(f)
        except ValueError:
            raise AgentError("%s/%s is damaged (not valid JSON)" % (where, name), "needs_person")


def write_json_at(dfd, name, data):
    """Replace ``name`` in directory ``dfd`` atomically (a new file, fsynced, renamed over it in that directory)."""
    tmp = "%s.tmp.%d" % (name, os.getpid())
    try:
        os.unlink(tmp, dir_fd=dfd)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644,
                 dir_fd=dfd)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    os.fsync(dfd)


def append_line_at(dfd, name, line, where):
    """Append ``line`` to the file ``name`` in directory ``dfd`` (made 0600 when absent), never through a link."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                     | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=dfd)
    except OSError as e:
        raise state_file_error(where, name, e)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AgentError("%s/%s is not a regular file; the agent keeps its state only in plain files"
                             % (where, name), "unsafe_path", path=os.path.join(where, name))
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


# preserved paths and product files are moved, copied and linked from directory descriptors: every
# component on both sides opened with O_NOFOLLOW, so a link put on the way (by a package or swapped in
# by whoever owns the tree) makes the step refuse instead of reaching outside

def open_root(path, what):
    """A descriptor of directory ``path`` itself; refused when its last component is a link."""
    try:
        return os.open(path, OPEN_DIR)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise AgentError("%s %s is not a plain directory (a symlink?); refusing to use it; nothing there was "
                             "changed: check the host by hand" % (what, path), "needs_person", path=path)
        raise


def parent_at(root_fd, rel, what, root, create=False):
    """(descriptor of the directory that holds ``rel``, its last name): every component a plain directory,
    none followed (FileNotFoundError when one is missing and ``create`` is false). The caller closes it."""
    parts = split_rel(rel)
    if not parts:
        raise unsafe_path(what, rel, root, "is absolute, climbs out with '..' or is the install dir itself")
    fd = walk_dirs(root_fd, parts[:-1], what, root, create=create)
    return (os.dup(fd) if fd == root_fd else fd), parts[-1]


def link_parents(root, rel, what, package=False):
    """A sentence when a component above the last of ``rel`` in ``root`` is a symlink (None when none is);
    ``package``: root is the staged tree of the package (the link is the package's)."""
    parts = split_rel(rel)
    if parts is None:
        return str(unsafe_path(what, rel, root, "is absolute or climbs out with '..'"))
    for i in range(len(parts) - 1):
        full = os.path.join(root, *parts[:i + 1])
        try:
            st = os.lstat(full)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            link = ("/".join(parts[:i + 1]), link_target(full))
            if package:
                return ("%s %s passes through the symlink %s -> %s that the package puts on its way; a preserved "
                        "path is moved only through plain directories; nothing was changed: the package is "
                        "refused (ask the vendor)" % ((what, rel) + link))
            return str(unsafe_path(what, rel, root, "passes through the symlink %s -> %s; a preserved path is "
                                   "moved only through plain directories" % link))
        if not stat.S_ISDIR(st.st_mode):
            return None
    return None


@contextlib.contextmanager
def parent_beneath(root, rel, what):
    """(descriptor of the directory that holds root/rel, its last name), reached through plain directories only,
    or None when a component on the way (or root itself) is missing; both descriptors are closed on leaving."""
    try:
        root_fd = open_root(root, "the install dir")
    except FileNotFoundError:  # an interrupted swap or rollback left no install dir: nothing there to read
        yield None
        return
    try:
        try:
            fd, name = parent_at(root_fd, rel, what, root)
        except FileNotFoundError:
            yield None
            return
        try:
            yield fd, name
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)


def lstat_beneath(root, rel, what):
    """The lstat of root/rel reached through plain directories only; None when it is not there."""
    with parent_beneath(root, rel, what) as at:
        if at is None:
            return None
        try:
            return os.stat(at[1], dir_fd=at[0], follow_symlinks=False)
        except FileNotFoundError:
            return None


def hash_beneath(root, rel, what):
    """sha256 of the regular file root/rel reached through plain directories only; None when it is not one."""
    with parent_beneath(root, rel, what) as at:
        if at is None:
            return None
        try:
            ffd = os.open(at[1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                          dir_fd=at[0])
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP):
                return None
            raise
    with os.fdopen(ffd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        h = hashlib.sha256()
        for b in iter(lambda: f.read(CHUNK), b""):
            h.update(b)
        return h.hexdigest()


def copy_out(parent_fd, name, dst_fd, dst_name, what="file"):
    """Copy ``name`` in directory ``parent_fd`` (a file, a link as a link, or a directory) to the new name
    ``dst_name`` in directory ``dst_fd``, modes and times kept; nothing on either side is followed (``what``
    names the source in messages)."""
    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=parent_fd), dst_name, dir_fd=dst_fd)
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, OPEN_DIR, dir_fd=parent_fd)
        try:
            os.mkdir(dst_name, 0o700, dir_fd=dst_fd)
            out = os.open(dst_name, OPEN_DIR, dir_fd=dst_fd)
            try:
                for entry in sorted(os.listdir(fd)):
                    copy_out(fd, entry, out, entry, what)
                os.fchmod(out, stat.S_IMODE(st.st_mode))
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(out)
        finally:
            os.close(fd)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=parent_fd)
        with os.fdopen(fd, "rb") as fin:
            if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
                raise AgentError("%s %s changed while it was copied; refusing it" % (what, name), "needs_person")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            with os.fdopen(os.open(dst_name, flags, 0o600, dir_fd=dst_fd), "wb") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
                fout.flush()
                os.fchmod(fout.fileno(), stat.S_IMODE(st.st_mode))
                os.utime(fout.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        raise AgentError("%s %s is neither a file, a directory nor a link; refusing to copy it" % (what, name),
                         "needs_person")


class DirFds(object):
    """Descriptors of the plain directories below a root, opened once each with O_NOFOLLOW."""

    def __init__(self, root, what, create=False):
        self.root, self.what, self.create = root, what, create
        self.fds = {"": open_root(root, what)}

    def get(self, rel_dir):
        if rel_dir not in self.fds:
            head, _, name = rel_dir.rpartition("/")
            parent = self.get(head)
            if self.create:
                try:
                    os.mkdir(name, 0o755, dir_fd=parent)
                except FileExistsError:
                    pass
            self.fds[rel_dir] = open_dir_at(parent, name, self.what, self.root)
        return self.fds[rel_dir]

    def at(self, rel):
        """(directory descriptor, last name) of a relative path."""
        head, _, name = rel.rpartition("/")
        return self.get(head), name

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


def move_beneath(src_fd, dst_fd, rel, what, src_root, dst_root, replace=True):
    """Rename src_root/rel to dst_root/rel (its parents made in dst), from descriptors: no component on either
    side is followed. An existing dst is removed first (``replace``), else refused. False when src has none."""
    try:
        sfd, name = parent_at(src_fd, rel, what, src_root)
    except FileNotFoundError:
        return False
    try:
        try:
            os.stat(name, dir_fd=sfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        dfd, _ = parent_at(dst_fd, rel, what, dst_root, create=True)
        try:
            try:
                os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if not replace:
                    raise AgentError("%s exists in both %s and %s; not choosing between them" % (rel, src_root, dst_root),
                                     "needs_person")
                remove_at(dfd, name)
            except FileNotFoundError:
                pass
            os.rename(name, name, src_dir_fd=sfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
    return True


def dir_id(st):
    return [st.st_dev, st.st_ino]


def install_name(paths):
    """(descriptor of the install dir's parent, the install dir's name in it)."""
    parent, name = os.path.split(paths.install.rstrip("/"))
    return os.open(parent or "/", OPEN_DIR & ~os.O_NOFOLLOW), name


def check_install_id(pfd, name, paths, allowed):
    """The lstat of the install name when it is still one of the directories ``allowed`` ([st_dev, st_ino]
    recorded by prepare; None: not recorded), None when it is absent; else refused (needs_person)."""
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode) or (allowed is not None and dir_id(st) not in allowed):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not the directory this run prepared"
        raise AgentError("the install dir %s is now %s; refusing to move it or anything in it (nothing was "
                         "moved): check the host by hand" % (paths.install, what), "needs_person", path=paths.install)
    return st


def rename_install_out(pfd, name, dst, paths, allowed):
    """Move the install dir (still one of ``allowed``) to ``dst``; moved back and refused when what moved was
    something else (it was swapped between the check and the rename)."""
    check_install_id(pfd, name, paths, allowed)
    os.rename(name, dst, src_dir_fd=pfd)
    st = os.lstat(dst)
    if not stat.S_ISDIR(st.st_mode) or (allowed is not None and dir_id(st) not in allowed):
        os.rename(dst, name, dst_dir_fd=pfd)
        raise AgentError("the install dir %s was swapped while it was moved; it was put back, nothing else was "
                         "moved: check the host by hand" % paths.install, "needs_person", path=paths.install)


# ---------------------------------------------------------------------------------------------
# package extraction: every member checked against the whole archive (as the file system would
# resolve it) before anything is written, then written from directory descriptors with O_NOFOLLOW


def member_refused(m, why):
    return AgentError("package member %r %s" % (m.name, why), "bad_input", member=m.name)


def member_parts(m):
    """The normalised components of a member's name ('.' and empty ones removed); '..' and absolute refused."""
    name = m.name
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise member_refused(m, "points outside the install dir (absolute, or not a POSIX name)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise member_refused(m, "points outside the install dir ('..')")
    if len(name.encode("utf-8", "surrogateescape")) > PATH_MAX or any(
            len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
        raise member_refused(m, "has a name longer than a file system allows")
    return parts


def resolve_link(name, links):
    """Resolve package symlink ``name`` against the archive's own links, as the kernel would in the staging
    root; AgentError when it climbs out of that root, is absolute or loops."""
    target = links[name]
    stack = name.split("/")[:-1]
    todo, hops = target.split("/"), 0
    while todo:
        c = todo.pop(0)
        if c in ("", "."):
            continue
        if c == "..":
            if not stack:
                raise AgentError("package symlink %r -> %r escapes the install dir%s" % (
                    name, target, " (through the package's own links)" if hops else ""), "bad_input", member=name)
            stack.pop()
            continue
        here = "/".join(stack + [c])
        if here in links:
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise AgentError("package symlink %r -> %r goes through more than %d links (a loop?)" % (
                    name, target, MAX_LINK_HOPS), "bad_input", member=name)
            todo = links[here].split("/") + todo
            continue
        stack.append(c)
    return stack


def check_members(tar, limits):
    """Validate all members of a tar as one tree; return the list to extract (names normalised).

    Refused: '..' and absolute names, duplicates after normalisation, hard links, devices and other special
    files, a member under a symlink or a file of the package, a symlink that resolves (through the package's
    other links, in any order) outside the root, and more members or bytes than the catalog allows."""
    max_members = int(limits.get("members") or 100000)
    max_bytes = int(limits.get("unpacked_bytes") or 0)
    members, total = [], 0
    kinds, links = {}, {}  # normalised name -> dir|file|link|implicit (a parent no member named yet)
    for m in tar:
        if len(members) >= max_members:
            raise AgentError("package has more than %d members (the catalog's limit)" % max_members, "bad_input")
        parts = member_parts(m)
        if not (m.isreg() or m.isdir() or m.issym()):
            raise member_refused(m, "is a %s; only files, directories and symlinks are allowed"
                                 % ("hard link" if m.islnk() else "device or special file"))
        if not parts:
            if m.isdir():
                continue  # the root itself
            raise member_refused(m, "has no name")
        name = "/".join(parts)
        if kinds.get(name) not in (None, "implicit"):
            raise member_refused(m, "appears twice%s" % (" (as %r, once './' and '//' are removed)" % name
                                                         if name != m.name.rstrip("/") else ""))
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            kind = kinds.setdefault(parent, "implicit")
            if kind == "link":
                raise member_refused(m, "lies under the symlink %r" % parent)
            if kind == "file":
                raise member_refused(m, "lies under the file %r" % parent)
        if kinds.get(name) == "implicit" and not m.isdir():
            raise member_refused(m, "would replace a directory that earlier members lie in")
        if m.issym():
            if m.linkname.startswith("/") or "\x00" in m.linkname or not m.linkname:
                raise AgentError("package symlink %r -> %r escapes the install dir" % (m.name, m.linkname),
                                 "bad_input", member=m.name)
            if len(m.linkname.encode("utf-8", "surrogateescape")) > PATH_MAX:
                raise member_refused(m, "is a symlink with a target longer than a file system allows")
            links[name] = m.linkname
        if m.isreg():
            total += m.size
            if max_bytes and total > max_bytes:
                raise AgentError("package unpacks to more than %d bytes (the catalog's limit)" % max_bytes,
                                 "bad_input")
        kinds[name] = "link" if m.issym() else "dir" if m.isdir() else "file"
        m.name = name
        members.append(m)
    for name in links:  # against the whole archive: a later link changes what an earlier one means
        resolve_link(name, links)
    return members


def write_member(root_fd, dest, tar, m, hashes):
    """Write one checked member below root_fd, walking its parents without following links."""
    parts = m.name.split("/")
    fd = walk_dirs(root_fd, parts[:-1], "package member %r" % m.name, dest, create=True)
    leaf = parts[-1]
    try:
        if m.isdir():
            try:
                os.mkdir(leaf, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            os.close(open_dir_at(fd, leaf, "package member %r" % m.name, dest))
        elif m.issym():
            os.symlink(m.linkname, leaf, dir_fd=fd)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            src = tar.extractfile(m)
            h = hashlib.sha256()
            with os.fdopen(os.open(leaf, flags, 0o600, dir_fd=fd), "wb") as out:
                while True:
                    block = src.read(CHUNK)
                    if not block:
                        break
                    h.update(block)
                    out.write(block)
                os.fchmod(out.fileno(), m.mode & 0o7777 & ~0o7000)
            hashes[m.name] = h.hexdigest()
    except FileExistsError:
        raise member_refused(m, "collides with a path already written")
    finally:
        if fd != root_fd:
            os.close(fd)


def extract(archive, dest, limits, skip=("package.yaml",), hashes=None):
    """Extract the checked members of archive into dest (which must not exist); ``hashes`` receives each
    file's sha256, computed from the bytes as they are written (no second read)."""
    import tarfile

    hashes = {} if hashes is None else hashes
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in check_members(tar, limits) if m.name not in skip]
        os.makedirs(dest)
        root_fd = os.open(dest, OPEN_DIR)
        try:
            for m in members:
                write_member(root_fd, dest, tar, m, hashes)
            # directory modes last and deepest first, so read-only directories do not block their contents
            for m in sorted((m for m in members if m.isdir()), key=lambda m: -m.name.count("/")):
                fd = walk_dirs(root_fd, m.name.split("/"), "package member %r" % m.name, dest)
                try:
                    os.fchmod(fd, m.mode & 0o7777 & ~0o7000)
                finally:
                    os.close(fd)
        finally:
            os.close(root_fd)
        meta = None
        try:
            f = tar.extractfile("package.yaml")
            meta = f.read(1 << 20).decode("utf-8", "replace") if f else None
        except KeyError:
            pass
    return members, meta


# ---------------------------------------------------------------------------------------------
# operations


def op_facts(req):
    paths = Paths(req)
    out = {"install_dir": paths.install, "state_dir": paths.state, "exists": os.path.isdir(paths.install),
           "python": sys.version.split()[0], "agent_format": AGENT_FORMAT}
    if out["exists"]:
        out["version"], out["version_error"] = read_version(paths, req["version_source"])
    else:
        out["version"], out["version_error"] = None, "install dir %s does not exist" % paths.install
    out["lock"] = read_json(paths.lock)
    st = os.statvfs(os.path.dirname(paths.install.rstrip("/")) or "/")
    out["free_bytes"] = st.f_bavail * st.f_frsize
    with ledger_fds(paths, strict=False) as fds:  # a look only: the run's lock refuses a ledger copy not its own
        out["baseline"] = any(stat.S_ISREG(os.stat("installed.json", dir_fd=fd, follow_symlinks=False).st_mode)
                              for _, fd in fds if "installed.json" in os.listdir(fd))
    if req.get("check_drift") and out["exists"]:
        current = scan_tree(paths.install, req.get("preserve", []))
        changes = ledger_drift(paths, current, strict=False)
        out["drift"] = changes[:DRIFT_LISTED]
        out["drift_count"] = len(changes)
        out["product_bytes"] = sum(f["size"] for f in current["files"].values())
    out["cached"] = [s for s in req.get("packages", []) if os.path.isfile(os.path.join(paths.packages, s + ".tar.gz"))]
    if req.get("check_paths") is not None and out["exists"]:
        out["unsafe_paths"] = check_host_paths(paths.install, req["check_paths"])
    out["non_ascii"] = non_ascii_names(paths.install, req.get("ascii_dirs", []))
    out["catalog_serials"] = ledger_serials(paths, strict=False)
    return out


def non_ascii_names(root, dirs):
    found = []
    for d in dirs:
        base = os.path.join(root, d)
        if not os.path.isdir(base):
            continue
        for name in sorted(os.listdir(base)):
            try:
                name.encode("ascii")
            except UnicodeEncodeError:
                found.append(d + "/" + name)
    return found


def ledger_dirs(paths):
    """Where this host's trust ledger is kept (used approvals, catalog serials, the last install's manifest):
    always the default state dir beside the install (``.upgrader-NAME``), which no plan can move, and the
    request's state dir too when it names another one. Reads take every copy, writes go to each."""
    parent, name = os.path.split(paths.install.rstrip("/"))
    default = os.path.join(parent, ".upgrader-" + name)
    if os.path.abspath(paths.state) == default:
        return [default]
    return [default, os.path.abspath(paths.state)]


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


def op_lock(req):
    paths = Paths(req)
    check_state_dir(paths)
    os.makedirs(paths.state, 0o700, exist_ok=True)
    used = used_approvals(paths)
    for digest in req.get("approvals", []):
        if digest in used and used[digest].get("run") != req["run_id"]:
            raise AgentError("approval %s... was already used on this host by run %s" % (
                digest[:12], used[digest].get("run")), "replayed", holder=used[digest])
    check_catalog_serial(paths, req.get("catalog"))
    me = {"run": req["run_id"], "controller": req.get("controller"), "user": req.get("user"),
          "time": time.time()}
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
    return {"locked": True, "holder": read_json(paths.lock), "broken": broken}


def op_unlock(req):
    paths = Paths(req)
    holder = read_json(paths.lock)
    if holder and holder.get("run") == req["run_id"]:
        os.unlink(paths.lock)
        fsync_dir(paths.state)
        return {"released": True}
    return {"released": False, "holder": holder}


def op_receive_check(req):
    """Is the package already on the host with the right digest? (so it is not sent again)"""
    paths = Paths(req)
    check_state_dir(paths)
    path = os.path.join(paths.packages, req["sha256"] + ".tar.gz")
    # a cached package is used only with its digest checked again, on every run: a copy changed on the host
    # since it was received (same size or not) is thrown away and sent again
    result = {"present": False, "path": path, "upload_to": path + ".part"}
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        raise AgentError("%s is not a plain file (a link?); remove it" % path, "unsafe_path", path=path)
    if os.path.isfile(path):
        if os.path.getsize(path) == req["size"] and sha256_file(path) == req["sha256"]:
            return {"present": True, "path": path}
        os.unlink(path)
        result["replaced"] = "the cached copy no longer had sha256 %s; it was removed" % req["sha256"]
    os.makedirs(paths.packages, 0o700, exist_ok=True)
    return result


def op_receive_commit(req):
    paths = Paths(req)
    path = os.path.join(paths.packages, req["sha256"] + ".tar.gz")
    part = path + ".part"
    digest = sha256_file(part)
    if digest != req["sha256"] or os.path.getsize(part) != req["size"]:
        os.unlink(part)
        raise AgentError("package arrived with sha256 %s, expected %s" % (digest, req["sha256"]), "failed")
    os.replace(part, path)
    return {"path": path}


def same_version(a, b):
    """Two version strings name the same version (case, and trailing .0 levels, aside: 10.1.60.0 is 10.1.60)."""
    def norm(v):
        parts = str(v).strip().lower().split(".")
        while len(parts) > 1 and parts[-1] == "0":
            parts.pop()
        return parts
    return a is not None and b is not None and norm(a) == norm(b)


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


def check_installed_version(paths, source, target):
    """After the swap: the version the install now holds, read again, must be the target (else the run fails and
    the old version is put back)."""
    found, error = read_version(paths, source)
    if not same_version(found, target):
        raise AgentError("after the install the host reads version %s, not the target %s%s: the package did not put "
                         "the target in place" % (found, target, " (%s)" % error if error else ""),
                         "failed", found=found, target=target)


def op_prepare(req):
    """Before stop: verified copy of the package, staged new tree, verified backup snapshot."""
    paths = Paths(req)
    preserve = [p["path"] for p in req["preserve"]]
    run_dir = paths.run()
    check_state_dir(paths)
    if run_state(paths).get("prepared"):
        return run_state(paths)["prepared"]
    check_ledger_version(paths, req.get("current_version"))
    if os.path.isdir(paths.install):  # refused here too, even when the controller did not ask first
        problems = check_host_paths(paths.install, {"preserve": preserve, "remove": req.get("remove", [])})
        if problems:
            raise AgentError(problems[0], "unsafe_path", problems=problems)
    if os.path.isdir(run_dir):
        for leftover in ("staging", "backup", "package.tar.gz"):
            rmtree(paths.run(leftover))
    os.makedirs(run_dir, 0o700, exist_ok=True)
    if not os.path.isdir(paths.install):
        raise AgentError("install dir %s does not exist" % paths.install, "bad_input")
    # 1. copy the package, hash the copy, extract that copy: a file swapped after the check cannot slip in
    pkg = paths.run("package.tar.gz")
    src = req["package_path"]
    if not os.path.isfile(src):
        raise AgentError("package %s is missing on the host" % src, "failed")
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, os.fdopen(create_nofollow(pkg), "wb") as fout:
        while True:
            b = fin.read(CHUNK)
            if not b:
                break
            h.update(b)
            size += len(b)
            fout.write(b)
        fout.flush()
        os.fsync(fout.fileno())
    test_kill(req, "prepare:copied")
    if h.hexdigest() != req["sha256"] or size != req["size"]:
        raise AgentError("package on the host has sha256 %s (%d bytes); the catalog says %s (%d bytes)"
                         % (h.hexdigest(), size, req["sha256"], req["size"]), "bad_input")
    # 2. current product tree, hashed once; drift against the last install's manifest
    current = scan_tree(paths.install, preserve)
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
    members, _ = extract(pkg, extracted, req.get("limits", {}), hashes=written)
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
    new_manifest = scan_tree(new_tree, preserve, hash_files=False)
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
    manifest = {"format": AGENT_FORMAT, "run": paths.run_id, "version": req.get("current_version"),
                "tree": current, "config": configs, "preserve": req["preserve"],
                "installed_by": tree_owner(read_json(paths.installed)),
                # install and rollback move only these very directories (not whatever takes their names later)
                "install_id": dir_id(os.lstat(paths.install)), "staged_id": dir_id(os.lstat(new_tree))}
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
    set_run_state(paths, prepared=result, phase="prepared")
    return result


def copy_tree(src, dst, manifest):
    """A full copy of the product files of src (manifest) into the new directory dst, modes kept: read through
    plain directories only, written from descriptors of dst's directories (never through a link in either)."""
    os.makedirs(dst)
    fds, out = DirFds(src, "product file"), DirFds(dst, "the staged tree", create=True)
    try:
        for rel in sorted(manifest["dirs"]):
            out.get(rel)
        for rel in manifest["files"]:
            fd, name = fds.at(rel)
            dfd, dname = out.at(rel)
            copy_out(fd, name, dfd, dname, "product file")
        for rel, target in manifest["links"].items():
            dfd, dname = out.at(rel)
            os.symlink(target, dname, dir_fd=dfd)
        chmod_dirs(out, manifest["dirs"])
    finally:
        fds.close()
        out.close()


def chmod_dirs(fds, dirs):
    """Give each directory of a manifest its mode, on the descriptor of that directory (DirFds ``fds``)."""
    for rel, d in dirs.items():
        os.fchmod(fds.get(rel), d["mode"])


def scan_names(fd):
    """[(name, lstat)] of directory ``fd``, sorted."""
    with os.scandir(fd) as it:
        names = sorted(e.name for e in it)
    return [(n, os.stat(n, dir_fd=fd, follow_symlinks=False)) for n in names]


def overlay(src, dst):
    """Move the extracted package tree src over the tree dst (a patch): a directory of the package replaces
    anything else of that name, a file or link replaces anything of that name; all from descriptors."""
    def merge(sfd, dfd):
        for name, st in scan_names(sfd):
            try:
                there = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                there = None
            if stat.S_ISDIR(st.st_mode):
                if there is not None and not stat.S_ISDIR(there.st_mode):
                    remove_at(dfd, name)
                    there = None
                if there is None:
                    os.mkdir(name, 0o755, dir_fd=dfd)
                a = os.open(name, OPEN_DIR, dir_fd=sfd)
                try:
                    b = open_dir_at(dfd, name, "the staged tree", dst)
                    try:
                        merge(a, b)
                    finally:
                        os.close(b)
                finally:
                    os.close(a)
            else:
                if there is not None and stat.S_ISDIR(there.st_mode):
                    remove_at(dfd, name)
                os.replace(name, name, src_dir_fd=sfd, dst_dir_fd=dfd)

    sfd, dfd = open_root(src, "the extracted package"), open_root(dst, "the staged tree")
    try:
        merge(sfd, dfd)
    finally:
        os.close(sfd)
        os.close(dfd)


def snapshot(src, dst, manifest):
    """The hard-link backup of the product files of src (manifest) in the new directory dst: linked from plain
    directories only, the file itself never followed, created from descriptors of dst's own directories."""
    os.makedirs(dst)
    fds, out = DirFds(src, "product file"), DirFds(dst, "the backup", create=True)
    try:
        for rel in sorted(manifest["dirs"]):
            out.get(rel)
        for rel in manifest["files"]:
            fd, name = fds.at(rel)
            dfd, dname = out.at(rel)
            os.link(name, dname, src_dir_fd=fd, dst_dir_fd=dfd, follow_symlinks=False)
        for rel, target in manifest["links"].items():
            dfd, dname = out.at(rel)
            os.symlink(target, dname, dir_fd=dfd)
    finally:
        fds.close()
        out.close()


def copy_preserved(root, backup, rel):
    """Copy one preserved config path (file or directory) into backup/<rel>; return its manifest. It is read
    from descriptors through plain directories only (a link on its way is refused, never followed), and written
    the same way into backup (made if missing): a link there (the backup's copy of a product link) is refused."""
    os.makedirs(backup, 0o700, exist_ok=True)
    root_fd = open_root(root, "the install dir")
    try:
        fd, name = parent_at(root_fd, rel, "preserved path", root)
        try:
            bfd = open_root(backup, "the backup")
            try:
                dfd, dname = parent_at(bfd, rel, "the backup's copy of preserved path", backup, create=True)
            finally:
                os.close(bfd)
            try:
                try:
                    remove_at(dfd, dname)
                except FileNotFoundError:
                    pass
                copy_out(fd, name, dfd, dname, "preserved path")
                st = os.stat(dname, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    sub = open_dir_at(dfd, dname, "the backup's copy of preserved path", backup)
                    try:
                        return {"path": rel, "dir": True, "tree": scan_fd(sub, os.path.join(backup, rel), [])}
                    finally:
                        os.close(sub)
                digest = hash_at(dfd, dname, os.path.join(backup, rel))[1] if stat.S_ISREG(st.st_mode) else None
                return {"path": rel, "dir": False, "sha256": digest, "mode": stat.S_IMODE(st.st_mode)}
            finally:
                os.close(dfd)
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)


def unchanged_inode(st, f):
    """The very file the manifest hashed (same inode, size and modification time): its bytes are the
    bytes that were hashed, without reading them again."""
    return st.st_ino == f.get("ino") and st.st_size == f["size"] and st.st_mtime_ns == f.get("mtime")


def verify_backup(backup, manifest, rehash=False):
    """Every product file of the manifest is in the backup with its sha256. ``rehash``: "full" reads
    every file again; "quick" reads only files whose inode, size or time differ from the manifest;
    False checks presence and size (right after the backup was made and hashed). Read from descriptors of the
    backup's directories, never through a link."""
    fds = DirFds(backup, "the backup")
    try:
        for rel, f in manifest["tree"]["files"].items():
            try:
                fd, name = fds.at(rel)
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except (OSError, AgentError):
                raise AgentError("backup is missing %s" % rel, "needs_person")
            if not stat.S_ISREG(st.st_mode) or st.st_size != f["size"]:
                raise AgentError("backup copy of %s does not match its checksum" % rel, "needs_person")
            if rehash == "quick" and unchanged_inode(st, f):
                continue
            if rehash and hash_at(fd, name, os.path.join(backup, rel))[1] != f["sha256"]:
                raise AgentError("backup copy of %s does not match its checksum" % rel, "needs_person")
        for c in manifest["config"]:
            if c["dir"] or not c.get("sha256"):
                continue
            try:
                fd, name = fds.at(c["path"])
                digest = hash_at(fd, name, os.path.join(backup, c["path"]))[1]
            except (OSError, AgentError):
                digest = None
            if digest != c["sha256"]:
                raise AgentError("backup copy of %s does not match its checksum" % c["path"], "needs_person")
    finally:
        fds.close()


def op_stop(req):
    paths = Paths(req)
    spec = req["stop"]
    start = time.time()
    sel = spec.get("process")
    found = service_pids(paths, spec.get("pid_file"), sel)
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
        pid = found[0] if found else None
        result["pid"] = pid
    asked = time.time()  # the stop timeout counts from here, not from any wait for a service coming up
    # an interrupted swap may have left no install dir: the stop script is then in the old tree
    cwd = paths.install
    if not os.path.isdir(cwd) and paths.run_id and os.path.isdir(paths.run("old")):
        cwd = paths.run("old")
    if os.path.isdir(cwd):
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
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGKILL, "SIGKILL")):
            result["escalated"] = name
            for target in targets:
                try:
                    os.kill(target, sig)
                except OSError:
                    pass
            if wait_until(gone, time.time() + float(spec.get("kill_wait", 5))):
                break
        else:
            raise AgentError("service pid %s survived SIGKILL" % ", ".join(str(t) for t in targets), "needs_person",
                             **result)
    if paths.in_run:
        set_run_state(paths, launched=None)  # whatever this run launched is stopped: none is coming up
    result["seconds"] = round(time.time() - start, 3)
    return result


def op_install(req):
    """After stop: swap the staged tree in, move preserved paths across. Idempotent."""
    paths = Paths(req)
    st = run_state(paths)
    if st.get("installed"):
        return st["installed"]
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
    new_manifest["run"] = paths.run_id
    new_manifest["installed_by"] = paths.run_id
    write_json_atomic(paths.installed, new_manifest)
    result = {"seconds": round(time.time() - t0, 4), "files": len(new_manifest["files"])}
    set_run_state(paths, phase="installed", installed=result)
    if req.get("version_source"):
        check_installed_version(paths, req["version_source"], req.get("target_version"))
    return result


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
            fd = open_beneath(paths.install, f, "log file")
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


def probe_once(paths, probe, log_offsets):
    kind = probe["type"]
    try:
        if kind == "process":
            return probe_process(paths, probe)
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
                    texts.append((f, read_beneath(paths.install, f, "log file", 4 << 20,
                                                  log_offsets.get(f, 0)).decode("utf-8", "replace")))
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


def probe_result(paths, probe, log_offsets):
    """One probe's result as observe and prove report it; ``unknown``: it could not be evaluated."""
    res = probe_once(paths, probe, log_offsets)
    out = {"probe": probe.get("name") or probe["type"], "ok": bool(res[0]), "detail": res[1]}
    if len(res) > 2 and res[2]:
        out["unknown"] = True
    return out


def op_observe(req):
    """Wait until every probe passes (start_timeout), then watch them for the whole window."""
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
        snapshot(backup, restore, manifest["tree"])
        restored = DirFds(restore, "the restored tree")
        try:
            chmod_dirs(restored, manifest["tree"]["dirs"])
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
    with ledger_fds(paths, create=True) as fds:
        for d, fd in fds if req.get("approvals") else []:
            append_line_at(fd, "approvals-used.jsonl", "".join(
                json.dumps({"approval": digest, "run": paths.run_id, "time": now}) + "\n"
                for digest in req["approvals"]), d)
        for d, fd in fds if installed else []:  # the last install's manifest, beside the install too
            if os.path.abspath(d) != os.path.abspath(paths.state):
                write_json_at(fd, "installed.json", installed)
        # a run that got past preflight was accepted with this catalog: older ones are refused here from now on
        # (recorded at the end, with the used approvals, so a refusal in preflight leaves the host as it was)
        record_catalog_serial(fds, req.get("catalog"))
    removed = retention(paths, int(req.get("keep", 3)))
    released = op_unlock(req)["released"] if req.get("unlock", True) else False
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


def op_hook(req):
    paths = Paths(req)
    res = run_shell(req["command"], paths.install, float(req.get("hook_timeout", 300)), req.get("env"))
    if res["exit"] != 0 or res["timed_out"]:
        raise AgentError("hook %r %s" % (req["command"], "timed out" if res["timed_out"] else
                                          "exited %s" % res["exit"]), "failed", command=res)
    return {"command": res}


def op_state(req):
    paths = Paths(req)
    return {"state": run_state(paths), "lock": read_json(paths.lock),
            "backup": os.path.isfile(paths.run("backup", "manifest.json")),
            "install_exists": os.path.isdir(paths.install), "old_exists": os.path.isdir(paths.run("old"))}


# ---------------------------------------------------------------------------------------------
# recovery: may a rollback or resume of this run act here? (read-only; decided before anything stops)

UNKNOWN_OWNER = "unknown"


def tree_owner(installed):
    """The run whose install is the product tree now in place, from installed.json: None when upgrader never
    installed it, UNKNOWN_OWNER for a tree restored by an agent that did not record it."""
    if not installed:
        return None
    if "installed_by" in installed:
        return installed["installed_by"]
    return UNKNOWN_OWNER if installed.get("restored") else installed.get("run")


def op_recovery_check(req):
    """Whose tree is in place, compared with what this run did here. ``verdict``:
    installed    this run's install is in place (a rollback restores its backup)
    before       the tree from before this run is in place and this run did not end here (it was interrupted
                 before its install was recorded, or during its rollback): resume and rollback go on
    rolled_back  the tree from before this run is in place and this run ended (rolled back, or never installed)
    changed      another run (``by``) changed the host since: this run must not touch it"""
    paths = Paths(req)
    installed = read_json(paths.installed)
    owner = tree_owner(installed)
    st = run_state(paths) if paths.in_run else {}
    manifest = read_json(paths.run("backup", "manifest.json")) if paths.in_run else None
    before = manifest.get("installed_by", UNKNOWN_OWNER) if manifest else UNKNOWN_OWNER
    last = (installed or {}).get("run")
    out = {"installed_by": owner, "last_run": last, "restored": bool((installed or {}).get("restored")),
           "version": (installed or {}).get("version"), "phase": st.get("phase"), "by": None}
    if owner == paths.run_id:
        out["verdict"] = "installed"
    elif manifest is None:
        # no backup of this run here: it never stopped this host (or retention dropped the backup after later
        # runs); the host changed since when installed.json was written after this run's last step here (a
        # run that left no state here at all changed nothing: the caller's own checks decide)
        written = os.path.getmtime(paths.installed) if installed else 0
        if st.get("updated") and last != paths.run_id and written > float(st["updated"]):
            out["verdict"], out["by"] = "changed", last
        else:
            out["verdict"] = "before"
    elif owner == UNKNOWN_OWNER and last == paths.run_id:  # recorded before installed_by existed
        out["verdict"] = "rolled_back" if st.get("rolled_back") or st.get("phase") == "finished" else "before"
    elif (owner == before and owner != UNKNOWN_OWNER) or installed is None:
        ended = st.get("rolled_back") or st.get("phase") == "finished"
        out["verdict"] = "rolled_back" if ended else "before"
    else:
        out["verdict"], out["by"] = "changed", last
    out["config_changed"] = config_changed_since(paths, manifest) if out["verdict"] == "installed" else []
    return out


def op_backup_check(req):
    """Read every byte of this run's backup against its checksums (read-only), before a rollback stops anything."""
    paths = Paths(req)
    manifest = read_json(paths.run("backup", "manifest.json"))
    if not manifest:
        raise AgentError("run %s has no backup on this host" % paths.run_id, "needs_person")
    verify_backup(paths.run("backup", "tree"), manifest, rehash="full")
    return {"files": len(manifest["tree"]["files"]), "config": len(manifest["config"])}


def config_changed_since(paths, manifest):
    """Configuration files (preserved, kind config) that differ now from the run's backup of them: a rollback
    restores the backup and keeps these aside (config-before-rollback)."""
    changed = []
    cache = [p["path"] for p in (manifest or {}).get("preserve", []) if p.get("kind") == "cache"]
    for c in (manifest or {}).get("config", []):
        if c["path"] in cache:  # compiled pages, not configuration
            continue
        if c["dir"]:  # read from descriptors, through plain directories only (as every read of the install)
            with parent_beneath(paths.install, c["path"], "preserved path") as at:
                if at is None:
                    continue
                try:
                    fd = os.open(at[1], OPEN_DIR, dir_fd=at[0])
                except OSError:
                    continue  # gone, or not a directory any more: nothing a rollback would keep
                try:
                    tree = scan_fd(fd, os.path.join(paths.install, c["path"]), [])
                finally:
                    os.close(fd)
            digests = dict((rel, f.get("sha256")) for rel, f in tree["files"].items())
            if digests != dict((rel, f.get("sha256")) for rel, f in c["tree"]["files"].items()):
                changed.append(c["path"])
        else:
            digest = hash_beneath(paths.install, c["path"], "preserved path")
            if digest is not None and digest != c.get("sha256"):
                changed.append(c["path"])
    return changed


# ---------------------------------------------------------------------------------------------
# access grants: an account's ~/.ssh/authorized_keys, read whole and replaced whole. The controller
# edits the text (upgrader/customer/access.py); here it is only read, and swapped in under a lock when
# nobody changed it since it was read (compare and swap on its sha256), owner and mode kept.

AUTHORIZED_KEYS_MAX = 1 << 20


def access_target(req):
    """The account a request names (default: the agent's own, at $HOME) and its authorized_keys path."""
    import pwd

    euid, user = os.geteuid(), req.get("user")
    try:
        pw = pwd.getpwnam(user) if user else pwd.getpwuid(euid)
    except KeyError:
        raise AgentError("there is no user %r on this host" % (user or euid), "bad_input")
    if user and euid not in (0, pw.pw_uid):
        raise AgentError("only root (or %s) may change the authorized_keys of %s" % (user, user), "bad_input")
    home = pw.pw_dir if user else (os.environ.get("HOME") or pw.pw_dir)
    if not home or not os.path.isdir(home):
        raise AgentError("user %s has no home directory (%s)" % (pw.pw_name, home or "none"), "bad_input")
    ssh_dir = os.path.join(home, ".ssh")
    return pw, ssh_dir, os.path.join(ssh_dir, "authorized_keys")


def open_ssh_dir(pw, ssh_dir, create):
    """A descriptor of the account's ~/.ssh, reached from / one component at a time with O_NOFOLLOW (the
    home's own path is resolved first: links the system set up above it are followed, none below), so a
    directory the account swaps for a link meanwhile cannot redirect the edit. None when it is missing
    and ``create`` is false; made (0700, owned by the account) when it is missing and ``create`` is true."""
    home = os.path.realpath(os.path.dirname(ssh_dir))
    fd = os.open("/", OPEN_DIR)
    try:
        for name in [p for p in home.split("/") if p]:
            nfd = open_dir_at(fd, name, "home directory %s" % home, home)
            os.close(fd)
            fd = nfd
        if create:
            try:
                os.mkdir(".ssh", 0o700, dir_fd=fd)
                os.fsync(fd)
            except FileExistsError:
                pass
        try:
            ssh_fd = os.open(".ssh", OPEN_DIR, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise AgentError("%s is not a plain directory (a link?); edit it by hand" % ssh_dir, "bad_input")
            raise
    finally:
        os.close(fd)
    if create and os.geteuid() != pw.pw_uid and os.fstat(ssh_fd).st_uid != pw.pw_uid:
        os.fchown(ssh_fd, pw.pw_uid, pw.pw_gid)
    return ssh_fd


def read_authorized_keys(ssh_fd, path, pw):
    """(bytes, stat) of authorized_keys in the directory ssh_fd, (None, None) when there is none; never
    through a link."""
    if ssh_fd is None:
        return None, None
    try:
        fd = os.open("authorized_keys", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=ssh_fd)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AgentError("%s is a link; upgrader edits only a plain file" % path, "bad_input")
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        check_account_file(st, path, pw, owner=False)
        data = f.read(AUTHORIZED_KEYS_MAX + 1)
    if len(data) > AUTHORIZED_KEYS_MAX:
        raise AgentError("%s is larger than 1 MiB; is it the right file?" % path, "bad_input")
    return data, st


def op_access_read(req):
    import base64

    pw, ssh_dir, path = access_target(req)
    ssh_fd = open_ssh_dir(pw, ssh_dir, create=False)
    try:
        data, _ = read_authorized_keys(ssh_fd, path, pw)
    finally:
        if ssh_fd is not None:
            os.close(ssh_fd)
    return {"user": pw.pw_name, "path": path, "exists": data is not None,
            "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
            "data": base64.b64encode(data or b"").decode("ascii")}


def op_access_write(req):
    """Replace authorized_keys with req["data"] if it still has sha256 req["expect"] (None: absent).
    Every file is opened and renamed relative to the descriptor of ~/.ssh (see open_ssh_dir)."""
    import base64
    import fcntl

    pw, ssh_dir, path = access_target(req)
    data = base64.b64decode(req["data"])
    ssh_fd = open_ssh_dir(pw, ssh_dir, create=True)
    try:
        lock, created = open_access_lock(ssh_fd, ssh_dir, pw)
        try:
            if created and os.geteuid() == 0 and os.fstat(lock).st_uid != pw.pw_uid:
                os.fchown(lock, pw.pw_uid, pw.pw_gid)  # only the file this call made, never one found there
            fcntl.flock(lock, fcntl.LOCK_EX)
            old, st = read_authorized_keys(ssh_fd, path, pw)
            if (hashlib.sha256(old).hexdigest() if old is not None else None) != req.get("expect"):
                raise AgentError("%s changed while it was being edited" % path, "conflict")
            replace_authorized_keys(ssh_fd, path, data, st, pw)
        finally:
            os.close(lock)
    finally:
        os.close(ssh_fd)
    return {"path": path, "created": st is None, "sha256": hashlib.sha256(data).hexdigest()}


def check_account_file(st, path, pw, owner=True):
    """A file in the account's ~/.ssh that root may use: a regular file with one name (not a hard link to a
    file elsewhere) and (``owner``) owned by the account or root. authorized_keys keeps whatever owner it has."""
    if not stat.S_ISREG(st.st_mode):
        raise AgentError("%s is not a regular file; edit it by hand" % path, "bad_input")
    if st.st_nlink != 1:
        raise AgentError("%s has %d names (a hard link to a file elsewhere?); upgrader edits only a file with one "
                         "name: edit it by hand" % (path, st.st_nlink), "bad_input")
    if owner and st.st_uid not in (pw.pw_uid, 0):
        raise AgentError("%s is owned by uid %d, not by %s or root; edit it by hand" % (path, st.st_uid, pw.pw_name),
                         "bad_input")


def open_access_lock(ssh_fd, ssh_dir, pw):
    """(descriptor, made by this call) of ~/.ssh/.authorized_keys.lock: made new (O_EXCL), else an existing one
    opened without following a link and checked (check_account_file)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    path = os.path.join(ssh_dir, ".authorized_keys.lock")
    try:
        return os.open(".authorized_keys.lock", flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=ssh_fd), True
    except FileExistsError:
        pass
    try:
        fd = os.open(".authorized_keys.lock", flags, dir_fd=ssh_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AgentError("%s is a link; remove it" % path, "bad_input")
        raise
    try:
        check_account_file(os.fstat(fd), path, pw)
    except BaseException:
        os.close(fd)
        raise
    return fd, False


def replace_authorized_keys(ssh_fd, path, data, st, pw):
    """Write data to a new file in ssh_fd (owner and mode of the old file, else the account's and 0600),
    then rename it over authorized_keys."""
    uid, gid, mode = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) if st else (pw.pw_uid, pw.pw_gid, 0o600)
    tmp = ".authorized_keys.%d.%s" % (os.getpid(), os.urandom(4).hex())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600,
                 dir_fd=ssh_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if (uid, gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(f.fileno(), uid, gid)
                except PermissionError:
                    raise AgentError("cannot keep %s owned by uid %d, gid %d (only root can); nothing was "
                                     "changed" % (path, uid, gid), "bad_input")
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, "authorized_keys", src_dir_fd=ssh_fd, dst_dir_fd=ssh_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=ssh_fd)
        except OSError:
            pass
        raise
    os.fsync(ssh_fd)


# ---------------------------------------------------------------------------------------------
# inspection: read-only health facts of this host and one install (upgrader/customer/inspection.py
# decides what is a warning; this only reads)

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


def read_text(path, limit=1 << 20):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(limit)
    except OSError:
        return None


def proc_limits(pid):
    """Open files and processes (soft, hard) of a process, from /proc/PID/limits."""
    out = {}
    for line in (read_text("/proc/%s/limits" % pid) or "").splitlines():
        for key, label in (("open_files", "Max open files"), ("processes", "Max processes")):
            if line.startswith(label):
                soft, hard = line[len(label):].split()[:2]
                out[key] = [None if v == "unlimited" else int(v) for v in (soft, hard)]
    return out


def listening():
    """Listening TCP sockets: port -> local addresses (from /proc/net/tcp and tcp6)."""
    found = {}
    for name in ("tcp", "tcp6"):
        for line in (read_text("/proc/net/" + name) or "").splitlines()[1:]:
            cols = line.split()
            if len(cols) > 3 and cols[3] == "0A":
                addr, port = cols[1].rsplit(":", 1)
                if len(addr) == 8:
                    addr = ".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    addr = "::" if set(addr) == set("0") else "ipv6:" + addr
                found.setdefault(int(port, 16), set()).add(addr)
    return dict((p, sorted(a)) for p, a in found.items())


def inside_globs(root, patterns):
    import glob

    real = os.path.realpath(root)
    out = []
    for pattern in patterns:
        for f in sorted(glob.glob(os.path.join(root, pattern), recursive=True)):
            if os.path.isdir(f):
                out += inside_globs(root, [os.path.relpath(f, root) + "/**/*"])
            elif os.path.isfile(f) and os.path.realpath(f).startswith(real + os.sep):
                rel = os.path.relpath(f, root).replace(os.sep, "/")
                try:
                    resolve_beneath(root, rel, "inspected file")
                except AgentError:
                    continue  # found through a link that leads out: not the install's file
                out.append(rel)
    return sorted(set(out))


def config_selection(root, configs, text_globs):
    """(path, text wanted) of each config file: text only for the paths ``text_globs`` (a list) names."""
    texts = set(inside_globs(root, text_globs)) if isinstance(text_globs, list) else set()
    return [(rel, rel in texts) for rel in sorted(set(inside_globs(root, configs)) | texts)]


def config_facts(root, rel, text):
    """sha256, size and mtime of a config file; its text when asked for and allowed (see TEXT_NEVER)."""
    fd = open_beneath(root, rel, "config file")
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        h = hashlib.sha256()
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
        f.seek(0)
        data = f.read(TEXT_MAX + 1) if text else b""
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


def log_facts(root, rel, lines, tail, pattern):
    path = os.path.join(root, rel)
    with os.fdopen(open_beneath(root, rel, "log file"), "rb") as f:
        st = os.fstat(f.fileno())
        f.seek(max(0, st.st_size - 256 * max(lines, tail, 1)))
        text = f.read().decode("utf-8", "replace").splitlines()[-max(lines, tail, 1):]
    errors = [x for x in text[-lines:] if re.search(pattern, x)] if lines else []
    out = {"path": path, "size": st.st_size, "mtime": st.st_mtime, "recent": time.time() - st.st_mtime < 86400,
           "lines": min(lines, len(text)), "errors": len(errors), "samples": errors[-5:]}
    if tail:
        out["tail"] = text[-tail:]
    return out


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
    import platform
    import resource

    paths = Paths(req)
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
    if not out["exists"]:
        return out
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
        out["ulimits"]["product"] = proc_limits(pid)
    listen = listening()
    out["ports"] = [{"port": int(p), "open": port_open(p, timeout=0.3), "listen": listen.get(int(p), [])}
                    for p in req.get("ports", [])]
    out["configs"] = [config_facts(paths.install, rel, text)
                      for rel, text in config_selection(paths.install, req.get("configs", []),
                                                        req.get("config_text"))]
    pattern = req.get("error_pattern") or ERROR_LINE
    out["logs"] = [dict(log_facts(paths.install, rel, int(req.get("log_lines", 2000)),
                                  int(req.get("tail", 0)), pattern), path=rel)
                   for rel in inside_globs(paths.install, req.get("logs", []))]
    return out


# ---------------------------------------------------------------------------------------------
# configuration-read variables and health checks proven on the running version (read-only)

CONFIG_VAR_MAX = 1 << 20


def config_value(text, spec):
    """(value, line number) that ``spec`` selects in a config file's text, or (None, why)."""
    if spec.get("pattern"):
        m = re.search(spec["pattern"], text, re.MULTILINE)
        if not m:
            return None, "no line matches %r" % spec["pattern"]
        return (m.group(1) if m.groups() else m.group(0)).strip(), text.count("\n", 0, m.start()) + 1
    if "<!ENTITY" in text:
        return None, "the file declares XML entities; not read"
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        return None, "not well-formed XML: %s" % e
    for path in spec["xml"]:
        try:
            found = root.findall(path)
        except (SyntaxError, KeyError, TypeError, ValueError) as e:
            return None, "bad element path %r: %s" % (path, e)
        for el in found:
            value = el.get(spec.get("attribute", "")) if spec.get("attribute") else (el.text or "")
            if value is not None and value.strip():
                return value.strip(), None
    return None, "no element %s with %s" % (" or ".join(spec["xml"]), spec.get("attribute") or "text")


def op_read_vars(req):
    """Playbook variables read from the install's own configuration (``vars_from``): per name, the value and
    where it was found, or why it was not."""
    paths = Paths(req)
    out = {}
    for name, spec in sorted(req.get("vars_from", {}).items()):
        entry = {"file": spec["file"]}
        try:
            # resolved beneath the install dir and opened from descriptors: a link swapped in after the check
            # cannot lead the read outside
            data = read_beneath(paths.install, spec["file"], "vars_from file", CONFIG_VAR_MAX)
            value, where = config_value(data.decode("utf-8", "replace"), spec)
        except AgentError as e:
            value, where = None, str(e)
        except OSError as e:
            value, where = None, "%s: %s" % (e.strerror, spec["file"])
        if value is None:
            entry["error"] = where
        else:
            entry["value"] = value
            if isinstance(where, int):
                entry["line"] = where
        out[name] = entry
    return {"vars": out}


def op_prove(req):
    """Each observe probe once against the version running now (before anything is stopped). Log probes are
    judged on what a newly started version writes, so here only their file's place is checked."""
    paths = Paths(req)
    results = []
    for p in req.get("probes", []):
        name = p.get("name") or p["type"]
        if p["type"] == "log":
            try:
                resolve_beneath(paths.install, p["file"], "log file")
                skipped = "judged on the lines a newly started version writes, not on the old log"
            except AgentError as e:
                results.append({"probe": name, "type": "log", "ok": False, "detail": str(e)})
                continue
            results.append({"probe": name, "type": "log", "ok": True, "skipped": skipped, "detail": skipped})
            continue
        r = probe_result(paths, p, {})
        r.update(probe=name, type=p["type"])
        results.append(r)
    return {"probes": results, "listening": sorted(listening())}


OPS = {"facts": op_facts, "lock": op_lock, "unlock": op_unlock, "prepare": op_prepare, "stop": op_stop,
       "install": op_install, "start": op_start, "observe": op_observe, "rollback": op_rollback,
       "recovery_check": op_recovery_check, "backup_check": op_backup_check, "verify_tree": op_verify_tree, "finish": op_finish, "hook": op_hook, "state": op_state,
       "receive_check": op_receive_check, "receive_commit": op_receive_commit,
       "access_read": op_access_read, "access_write": op_access_write, "inspect": op_inspect,
       "read_vars": op_read_vars, "prove": op_prove}


MUTATING = ("prepare", "stop", "install", "start", "rollback", "finish", "hook")
#: the actions that read or write the state dir: each checks it again (check_state_dir) when it starts, not only
#: the run's lock in preflight (whoever can write its parent could have swapped it for a link since)
STATE_OPS = MUTATING + ("lock", "unlock", "receive_check", "receive_commit", "state", "verify_tree",
                        "recovery_check", "backup_check")


class OpLock(object):
    """One mutating action per run and host at a time: a retry after a lost connection waits for
    the first attempt (which may still be running on the host) and then sees its effect."""

    def __init__(self, req):
        self.fd = None
        if req.get("op") in MUTATING and req.get("run_id") and req.get("install_dir"):
            paths = Paths(req)
            check_state_dir(paths)
            directory = paths.run()
            for d in (paths.state, os.path.join(paths.state, "runs"), directory):
                if not os.path.isdir(d):
                    os.makedirs(d, 0o700, exist_ok=True)
            self.path = os.path.join(directory, ".op.lock")

    def __enter__(self):
        if hasattr(self, "path"):
            import fcntl

            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)


def handle(req):
    op = OPS.get(req.get("op"))
    if op is None:
        return {"ok": False, "kind": "bad_input", "error": "unknown agent op %r" % req.get("op")}
    try:
        if req.get("op") in STATE_OPS and req.get("install_dir"):
            check_state_dir(Paths(req))
        with OpLock(req):
            return {"ok": True, "result": op(req)}
    except AgentError as e:
        return {"ok": False, "kind": e.kind, "error": str(e), "data": e.data}
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return {"ok": False, "kind": "no_space",
                    "error": "%s: %s%s" % (e.strerror, e.filename or "", space_hint(
                        e.filename or req.get("state_dir") or req.get("install_dir")))}
        return {"ok": False, "kind": "failed", "error": "%s: %s" % (e.strerror, e.filename or "")}


def space_hint(path):
    """'; the file system at MOUNT has N MiB free of M MiB ...' for a full disk (empty when unknown)."""
    if not path:
        return ""
    try:
        where = os.path.abspath(path)
        while not os.path.exists(where) and os.path.dirname(where) != where:
            where = os.path.dirname(where)
        dev = os.stat(where).st_dev
        while os.path.dirname(where) != where and os.stat(os.path.dirname(where)).st_dev == dev:
            where = os.path.dirname(where)
        st = os.statvfs(where)
    except OSError:
        return ""
    return ("; the file system at %s has %d MiB free of %d MiB: make room there (the upgrade needs space for the "
            "backup and the unpacked package), then run again" % (where, st.f_bavail * st.f_frsize >> 20,
                                                                  st.f_blocks * st.f_frsize >> 20))


def serve():
    """A session: one JSON request per line on stdin, one JSON reply per line on stdout, until EOF.

    A lost connection must not cut an action in half: SIGHUP and SIGPIPE are ignored, so the action
    in progress runs to its end (and records its result in the run's state) even when nobody is
    left to read the reply; the controller's retry then waits on the action lock and sees it.
    A local agent shares the operator's terminal: its Ctrl-C is the controller's to handle (cancel
    between actions), so SIGINT is caught and dropped here (a handler, not SIG_IGN, so the commands
    the agent starts get the default back)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    out = sys.stdout
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError as e:
            reply = {"ok": False, "kind": "bad_input", "error": "request is not JSON: %s" % e}
        else:
            reply = handle(req)
        try:
            out.write(json.dumps(reply, sort_keys=True) + "\n")
            out.flush()
        except (OSError, ValueError):
            return 0
    return 0


def main():
    if sys.argv[-1:] == ["--serve"]:
        return serve()
    # one request as one base64 argument (no stdin round trips, no shell quoting issues),
    # or as JSON on stdin when no argument is given
    if len(sys.argv) > 1:
        import base64

        raw = base64.urlsafe_b64decode(sys.argv[1].encode("ascii"))
    else:
        raw = sys.stdin.buffer.read()
    try:
        req = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        reply = {"ok": False, "kind": "bad_input", "error": "request is not JSON: %s" % e}
    else:
        reply = handle(req)
    sys.stdout.write(json.dumps(reply, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
