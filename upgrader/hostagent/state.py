"""The agent's state dir beside the install (``.upgrader-<name>/``): where a run keeps its files, how far it
got, and the checks that the directory is the agent's own; its JSON files read and written from the
directory's descriptor, never through a link.
"""

import errno
import json
import os
import re
import stat
import time

from .beneath import OPEN_DIR, link_target
from .common import AgentError
from .files import read_json, write_json_atomic


class Paths(object):
    def __init__(self, req):
        self.install = os.path.abspath(req["install_dir"])
        parent, name = os.path.split(self.install.rstrip("/"))
        self.default_state = os.path.join(parent, ".upgrader-" + name)
        given = req.get("state_dir")
        if given and (not isinstance(given, str) or not given.startswith("/") or "\x00" in given):
            raise AgentError("state_dir %r (the inventory's state_dir of this host) is not an absolute path; nothing "
                             "was read or changed: give the directory's absolute path, or remove the key to keep the "
                             "state beside the install dir" % (given,), "unsafe_path", path=given, key="state_dir")
        self.state = os.path.normpath(given) if given else self.default_state
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
        if not self.run_id or not re.match(r"^[A-Za-z0-9._-]+$", self.run_id) or self.run_id in (".", ".."):
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


def ledger_dirs(paths):
    """Where this host's trust ledger is kept (used approvals, catalog serials, the last install's manifest):
    always the default state dir beside the install (``.upgrader-NAME``), which no plan can move, and the
    request's state dir too when it names another one. Reads take every copy, writes go to each."""
    default = paths.default_state
    if os.path.abspath(paths.state) == default:
        return [default]
    return [default, os.path.abspath(paths.state)]


def check_state_dir(paths):
    """The agent's own directories are plain directories, not links to elsewhere, owned by the agent's user
    and writable by nobody else (another account could otherwise put links in them for root to follow); and,
    like sshd's StrictModes, no directory above them -- nor above the install dir -- is writable by another
    account (which could otherwise swap a checked directory for a link between the check and its use)."""
    problem = ancestor_problem(paths.install)
    if problem:
        raise problem
    for d in ledger_dirs(paths):
        problem = state_place_problem(d, d == paths.default_state)
        if problem:
            raise problem
    check_state_markers(paths, adopt=True)
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


#: the marker file of a state dir the agent made (or adopted): only a directory that carries it, or one that does
#: not exist yet (the agent makes it and writes the marker), is used as a state dir
STATE_MARKER = ".upgrader-state"
STATE_FORMAT = 1
#: what the agent itself keeps in a state dir (an older version's default state dir with nothing else is adopted)
STATE_NAMES = ("runs", "packages", "installed.json", "approvals-used.jsonl", "catalog-serials.json",
               "host-trust.jsonl", "checkpoints.jsonl", "runs.jsonl", "install-lineage.jsonl", "lock",
               STATE_MARKER)


def write_state_marker(fd):
    write_json_at(fd, STATE_MARKER, {"format": STATE_FORMAT, "what": "upgrader host agent state dir; do not put "
                                                                     "other files here"})


def state_marker_problem(d, fd, default, adopt):
    """The refusal (an AgentError) of the existing state dir ``d`` (open as ``fd``) that carries no marker of ours,
    or None. The default state dir beside the install (``default``) made by an older version -- holding only what
    the agent keeps -- is adopted: the marker written when ``adopt``."""
    names = os.listdir(fd)
    if STATE_MARKER in names:
        doc = read_json_at(fd, STATE_MARKER, d)
        fmt = doc.get("format") if isinstance(doc, dict) else None
        if not isinstance(fmt, int) or fmt < 1:
            return AgentError("%s/%s is not a state dir marker the agent wrote; nothing was changed: check the "
                              "directory by hand" % (d, STATE_MARKER), "unsafe_path", path=d, key="state_dir")
        if fmt > STATE_FORMAT:
            return AgentError("state dir %s was made by a newer upgrader (state format %d, this agent knows %d); "
                              "nothing was changed: upgrade the controller" % (d, fmt, STATE_FORMAT),
                              "unsafe_path", path=d, key="state_dir")
        return None
    foreign = sorted(n for n in names if n not in STATE_NAMES and ".tmp." not in n)
    # an existing directory without the marker is never taken, even an empty root-only one: /var/lib/private,
    # /lost+found and the like are the system's (the agent makes its state dir itself, with the marker)
    if default and not foreign:
        if adopt:
            write_state_marker(fd)
        return None
    if default:
        return AgentError(
            "the state dir %s beside the install holds files the agent did not put there (%s) and no %s marker; "
            "nothing was written there: move those files away, or set the inventory's state_dir for this host"
            % (d, ", ".join(foreign[:5]), STATE_MARKER), "unsafe_path", path=d, key="state_dir")
    return AgentError(
        "state_dir %s (the inventory's state_dir of this host) is an existing directory the agent did not make (it "
        "carries no %s marker): it may be another tool's directory, and the agent would write its run files, "
        "approvals-used.jsonl and catalog-serials.json there and replace an installed.json; nothing was written: "
        "set state_dir to a directory that does not exist yet (the agent makes it, with the marker), or remove the "
        "key to keep the state beside the install dir" % (d, STATE_MARKER), "unsafe_path", path=d, key="state_dir")


def check_state_markers(paths, adopt):
    """Every state dir of the request (its own and the ledger's default copy) either absent or carrying the
    agent's marker (state_marker_problem); ``adopt``: write the marker into an older version's default dir."""
    for d in ledger_dirs(paths):
        try:
            fd = open_state_dir(d)
        except AgentError:
            if adopt:
                raise
            continue  # a read-only look: the run's own checks refuse that directory
        if fd is None:
            continue
        try:
            problem = state_marker_problem(d, fd, d == paths.default_state, adopt)
        finally:
            os.close(fd)
        if problem:
            raise problem


def ensure_state_dir(path):
    """Make the state dir ``path`` (0700, with the marker) when it is absent; an existing one is left as it is
    (check_state_markers vouched for it)."""
    fd = open_state_dir(path)
    if fd is not None:
        os.close(fd)
        return
    fd = open_state_dir(path, create=True)
    os.close(fd)


def check_install(paths, kind="unsafe_path"):
    """The rule of check_state_dir for the install dir itself, applied by every action that reads or changes the
    install (facts, inspect, read_vars, prove as much as prepare): no directory above it may be changed by another
    account, and its own name -- the last component -- must be a plain directory, not a link (whoever made the
    link could point it at a root-only directory and have the agent read or change that). An absent install dir
    passes (the action reports it). Nothing of the install is read before this check. ``kind``: the refusal's kind
    for a link or a non-directory there (needs_person once a run may have stopped the service)."""
    problem = ancestor_problem(paths.install)
    if problem:
        raise problem
    try:
        st = os.lstat(paths.install)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise AgentError(
            "the install dir %s is a symlink (-> %s); the agent reads and changes an install only in a plain "
            "directory, never through a link (its owner could point it at any directory): name the directory "
            "itself as install_dir in the inventory, or replace the link with the directory; nothing was read or "
            "changed" % (paths.install, link_target(paths.install)), kind, path=paths.install)
    if not stat.S_ISDIR(st.st_mode):
        raise AgentError("the install dir %s is not a directory; nothing was read or changed: correct install_dir "
                         "in the inventory" % paths.install, kind, path=paths.install)


def trusted_uid(uid):
    return uid in (0, os.geteuid())


def ancestor_problem(path):
    """The refusal (an AgentError) of ``path`` when one of the directories above it (every directory from ``/``
    down, and through any link on the way, those above the link's target too) could be changed by an account
    other than root and the agent's own: owned by another uid, or writable by group or others -- a sticky
    directory owned by root or the agent's uid (such as /tmp, or a tmpfs mounted with its default mode 1777) only
    when the entry below it on the way -- ``path`` itself when the sticky directory is its parent -- is owned by
    root or the agent's uid, or (for ``path`` itself) does not exist yet: the sticky bit lets only an entry's
    owner rename or remove it, so nobody else can swap it for a link. Else None. The rule sshd applies with
    StrictModes from a user's file up to the home (where a group- or world-writable directory is refused, sticky
    or not), extended to every directory above, where the sticky bit is honoured as just said."""
    comps = [c for c in os.path.abspath(path).split("/") if c]
    todo, last = comps[:-1], (comps[-1] if comps else None)
    cur, links = "/", 0
    while True:
        st = os.lstat(cur)
        nxt = todo[0] if todo else None
        if not trusted_uid(st.st_uid) or st.st_mode & 0o022:
            # the entry below on the way: the next directory, or -- in the path's own parent -- the path itself
            # (a sticky parent protects an install or state dir owned by root as /tmp protects root's files in it)
            name = nxt if nxt is not None else last
            try:
                below = os.lstat(os.path.join(cur, name)) if name not in (None, ".", "..") else None
                missing = False
            except FileNotFoundError:
                below, missing = None, True
            except OSError:
                below, missing = None, False
            sticky_ok = (st.st_mode & stat.S_ISVTX and trusted_uid(st.st_uid)
                         and ((below is not None and trusted_uid(below.st_uid))
                              # the path itself not made yet: the agent makes it and opens it with O_NOFOLLOW, and
                              # refuses it when another account made it first
                              or (missing and nxt is None)))
            if not sticky_ok:
                who = "root" if os.geteuid() == 0 else "root and uid %d" % os.geteuid()
                return AgentError(
                    "%s lies below %s (owned by uid %d, mode %o), which an account other than %s can change: it "
                    "could swap what lies below for a link. The agent keeps installs and state dirs only below "
                    "directories owned by %s that nobody else can write (as sshd's StrictModes asks of a home): "
                    "chown that directory and chmod go-w, or move the install (or its state_dir) elsewhere"
                    % (path, cur, st.st_uid, stat.S_IMODE(st.st_mode), who, who),
                    "unsafe_path", path=cur)
        if nxt is None:
            return None
        todo.pop(0)
        if nxt == ".":
            continue
        if nxt == "..":
            cur = os.path.dirname(cur)
            continue
        step = os.path.join(cur, nxt)
        try:
            sst = os.lstat(step)
        except FileNotFoundError:
            return None  # nothing below yet: made later by the agent itself, and checked then
        if stat.S_ISLNK(sst.st_mode):
            links += 1
            if links > 40:
                return AgentError("%s: too many links on the way" % path, "unsafe_path", path=step)
            target = os.readlink(step)
            todo = [c for c in target.split("/") if c] + todo
            if target.startswith("/"):
                cur = "/"
            continue
        if not stat.S_ISDIR(sst.st_mode):
            return None  # not a directory: the caller's own checks refuse it
        cur = step


#: directories whose own entries are the system's: a state dir is never one of them, nor directly below one of them
#: (the inventory's system-directory check on install_dir, for the state dir)
SYSTEM_DIRS = ("/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev",
               "/proc", "/sys", "/run", "/var", "/opt", "/home", "/root", "/srv", "/mnt", "/media", "/tmp",
               "/var/run", "/var/lock", "/var/tmp", "/var/lib", "/var/log", "/usr/local", "/usr/lib", "/usr/bin",
               "/usr/sbin", "/usr/share", "/usr/libexec")
#: directories where any name made by the agent could change the system (/etc/nologin...): nothing directly below
SYSTEM_PARENTS = ("/", "/etc", "/usr", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys", "/run", "/var/run",
                  "/usr/bin", "/usr/sbin", "/usr/lib")


def is_system_place(path):
    """``path`` (absolute) is a system directory, or directly below one where a mere name matters (links above
    its last component resolved, and ``//`` read as ``/``, as the kernel does)."""
    parent = "/" + os.path.realpath(os.path.dirname(path) or "/").strip("/")
    full = "/" + os.path.join(parent, os.path.basename(path)).strip("/")
    lib = re.compile(r"^(/usr)?/lib[^/]*$")
    return (full in SYSTEM_DIRS or parent in SYSTEM_PARENTS or lib.match(full) is not None
            or lib.match(parent) is not None)


def state_place_problem(path, default=False):
    """The refusal (an AgentError) of state dir ``path`` by where it lies, or None: the rule of ancestor_problem;
    its parent must exist already (the agent makes the state dir itself, 0700, never a directory above it: a name
    such as /etc/nologin changes the system by merely existing); and it must be no system directory nor directly
    below one (/etc/NAME, /usr/NAME...) unless it is the ``default`` one beside the install (``.upgrader-NAME``)."""
    problem = ancestor_problem(path)
    if problem:
        return problem
    path = "/" + os.path.abspath(path).strip("/")
    if not default and (path == "/" or is_system_place(path)):
        return AgentError(
            "state_dir %s is a system path (a system directory, or a name directly below /, /etc, /usr, /bin, "
            "/sbin, /lib*, /boot, /dev, /proc, /sys or /run, where a name made by the agent could change the "
            "system); nothing was read or changed: give a directory of its own, such as /var/lib/upgrader/NAME "
            "(made by you, root-owned, not writable by others), or remove state_dir to keep the state beside the "
            "install dir" % path, "unsafe_path", path=path, key="state_dir")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        return AgentError(
            "the parent of state_dir %s (%s) does not exist; the agent makes only the state dir itself (0700), never "
            "a directory above it; nothing was read or changed: create the parent yourself (root-owned, not "
            "writable by others), or remove state_dir to keep the state beside the install dir" % (path, parent),
            "unsafe_path", path=parent, key="state_dir")
    return None


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
    # (the system-name rule for a state_dir the inventory gave is applied by check_state_dir before any create)
    problem = (state_place_problem(path, name.startswith(".upgrader-")) if create else ancestor_problem(path))
    if problem:
        raise problem
    try:
        pfd = os.open(parent or "/", OPEN_DIR & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        if create:
            raise
        return None  # its parent is not there either
    try:
        made = False
        if create:
            try:
                os.mkdir(name, 0o700, dir_fd=pfd)
                made = True
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
    if made:
        write_state_marker(fd)
    return fd


def state_file_error(where, name, e):
    if e.errno == errno.ELOOP:
        return AgentError("%s/%s is a symlink; the agent keeps its state only in plain files: remove the link"
                          % (where, name), "unsafe_path", path=os.path.join(where, name))
    return e


def _open_dir_nofollow(path):
    """A descriptor of directory ``path`` (its last component never followed), None when absent; a link or a
    file there is refused as a state file would be."""
    try:
        return os.open(path, OPEN_DIR)
    except FileNotFoundError:
        return None
    except OSError as e:
        parent, name = os.path.split(path.rstrip("/"))
        raise state_file_error(parent, name, e)


def read_json_at(dfd, name, where, default=None, limit=None):
    """The JSON document ``name`` in directory ``dfd`` (``where``, for messages), never read through a link; with
    ``limit``, a file larger than that many bytes is refused unread (not one the agent wrote)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
    except FileNotFoundError:
        return default
    except OSError as e:
        raise state_file_error(where, name, e)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AgentError("%s/%s is not a regular file; the agent keeps its state only in plain files"
                             % (where, name), "unsafe_path", path=os.path.join(where, name))
        data = f.read(-1 if limit is None else limit + 1)
        if limit is not None and len(data) > limit:
            raise AgentError("%s/%s is larger than %d bytes: not a file the agent wrote, and it was not read; remove "
                             "it after checking that no run holds the install" % (where, name, limit),
                             "unsafe_path", path=os.path.join(where, name))
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            raise AgentError("%s/%s is damaged (not valid JSON)" % (where, name), "needs_person")


#: the most a lock file holds (the agent writes a few hundred bytes: run, user, controller, time, a plan digest)
LOCK_LIMIT = 64 * 1024


def read_lock(paths, checked=True):
    """The host's lock (``paths.lock``) as the agent wrote it, or None when there is none: the state dir opened from
    its parent without following a link (and, ``checked``, checked as the agent's own: open_state_dir), the lock
    read from that descriptor with O_NOFOLLOW, a regular file of at most LOCK_LIMIT bytes, holding a JSON object.
    A link, a FIFO, a huge file (or another account's state dir) is refused (AgentError), never followed, waited
    on or read whole. Unchecked is for a look only (facts), where the run's own check_state_dir judges the dir."""
    dfd = open_state_dir(paths.state) if checked else _open_dir_nofollow(paths.state)
    if dfd is None:
        return None
    try:
        lock = read_json_at(dfd, "lock", paths.state, limit=LOCK_LIMIT)
    finally:
        os.close(dfd)
    if lock is not None and not isinstance(lock, dict):
        raise AgentError("%s is damaged (not a JSON object)" % paths.lock, "needs_person")
    return lock


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
