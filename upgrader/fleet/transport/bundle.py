"""The host agent as one zip application, built at run time on the controller.

``upgrader/hostagent`` is several modules; a host receives them as one file, as Ansible's AnsiballZ
ships a module and its helpers: a zip holding the package (as ``upgrader_hostagent/``) and a top-level
``__main__.py``. The zip's bytes depend on the sources alone (names sorted, every entry dated
1980-01-01 00:00, mode 0644, stored uncompressed), so the same sources give the same bytes on every
controller, and its sha256 names the cached copy on a host (``agent-<sha256>.pyz``). It is built once
per controller process.

Both transports start it through ``BOOT``: the host's ``python3 -I -B -S`` reads the cached file once,
checks its sha256 against the digest the controller passes, and imports the agent's modules from
those very bytes in memory (never from the file again, nor from a bytecode cache); a copy that does
not match answers ``UPGRADER-AGENT-MISSING`` and is sent again. ``python3 -I agent-<sha256>.pyz``
also runs it directly (one request on stdin, or ``--serve``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import TransportError

__all__ = ["AgentBundle", "agent_bundle", "build_bundle", "local_copy", "AGENT_FLAGS", "BOOT", "PACKAGE",
           "SOURCE_DIR"]

#: the agent's package in this checkout or installation
SOURCE_DIR = Path(__file__).resolve().parents[2] / "hostagent"
#: the package's name inside the zip (no ``upgrader`` package on a host: only the agent)
PACKAGE = "upgrader_hostagent"
#: every entry's time stamp and mode: nothing of the build machine enters the zip
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_MODE = 0o100644

# The zip's own entry point. Run as ``python3 agent.pyz``, it imports the package from the zip on sys.path;
# BOOT instead calls run() with the zip already read and checked, and the modules come from those bytes.
ZIP_MAIN = '''\
"""The upgrader host agent as one zip application (built by upgrader/fleet/transport/bundle.py).

``python3 -I agent.pyz`` runs it from the file (one request on stdin, or ``--serve``). The controller's
boot reads the file once, checks its sha256 and calls run() with those bytes: every module is then
compiled from the very bytes that were checked, never read again from the file nor from a bytecode cache.
"""

import sys

PACKAGE = "%(package)s"


class FromBytes(object):
    """Finds and loads PACKAGE's modules in a zip already in memory (put first on sys.meta_path)."""

    def __init__(self, zf, origin):
        self.zf = zf
        self.origin = origin
        self.names = set(zf.namelist())

    def find_spec(self, fullname, path=None, target=None):
        import importlib.util

        if fullname != PACKAGE and not fullname.startswith(PACKAGE + "."):
            return None
        base = fullname.replace(".", "/")
        for name, package in ((base + "/__init__.py", True), (base + ".py", False)):
            if name in self.names:
                return importlib.util.spec_from_loader(fullname, self, origin=self.origin + "/" + name,
                                                       is_package=package)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        origin = module.__spec__.origin
        module.__file__ = origin
        source = self.zf.read(origin[len(self.origin) + 1:])
        exec(compile(source, origin, "exec", dont_inherit=True), module.__dict__)


def run(zf, origin):
    """The agent, from ``zf`` (a ZipFile over the checked bytes of the file ``origin``)."""
    sys.meta_path.insert(0, FromBytes(zf, origin))
    from %(package)s.main import main

    return main()


if __name__ == "__main__":
    from %(package)s.main import main

    sys.exit(main())
''' % {"package": PACKAGE}

# Starts the cached zip only when its bytes still have the digest its name promises (the full sha256 is
# passed in): the file is read once, checked, and the agent imported from those bytes (ZIP_MAIN's run), so
# neither a changed file nor a planted bytecode cache is ever run. A mismatch answers UPGRADER-AGENT-MISSING
# and the zip is sent again. One line, no double quotes or '$': it travels inside a double-quoted shell word.
# Run with ``python3 -I -B -S`` (AGENT_FLAGS): neither the login directory nor PYTHON* variables can put modules in
# its way, no bytecode of the host's own Python library is written (a Python without a compiled stdlib would
# otherwise get __pycache__ files written into it, as root; dont_write_bytecode is set again first, should -B be
# lost), and ``site`` is not run: the agent needs the standard library only, and the host's site-packages
# (with their .pth files, which import modules at every start) cost each agent start time for nothing.
BOOT = ("import sys;sys.dont_write_bytecode=True;import hashlib,io,zipfile;p=sys.argv[1];b=open(p,'rb').read();"
        "ok=hashlib.sha256(b).hexdigest()==sys.argv[2];"
        "ok or (print('UPGRADER-AGENT-MISSING',flush=True),sys.exit(97));"
        "z=zipfile.ZipFile(io.BytesIO(b));g={'__name__':'upgrader_agent_boot'};"
        "exec(compile(z.read('__main__.py'),p+'/__main__.py','exec'),g);"
        "print('UPGRADER-AGENT-READY',flush=True);sys.argv=[p,'--serve'];sys.exit(g['run'](z,p))")
#: the host's Python's options for BOOT (above): isolated, no bytecode written, no site
AGENT_FLAGS = ("-I", "-B", "-S")


@dataclass(frozen=True)
class AgentBundle:
    """The zip's bytes and their sha256."""

    data: bytes
    sha256: str

    @property
    def name(self) -> str:
        """The cached copy's file name (on a host and in the controller's cache)."""
        return f"agent-{self.sha256}.pyz"


def build_bundle(source: Path = SOURCE_DIR) -> AgentBundle:
    """The zip application of the agent package in ``source``: its ``*.py`` files (sorted) and ZIP_MAIN."""
    files = {f"{PACKAGE}/{p.name}": p.read_bytes() for p in source.glob("*.py")}
    if f"{PACKAGE}/main.py" not in files:
        raise TransportError(f"the host agent's sources are missing in {source}")
    files["__main__.py"] = ZIP_MAIN.encode("utf-8")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.create_system = 3  # unix, wherever the controller runs
            info.external_attr = ZIP_MODE << 16
            info.compress_type = zipfile.ZIP_STORED
            z.writestr(info, files[name])
    data = buf.getvalue()
    return AgentBundle(data, hashlib.sha256(data).hexdigest())


_built: list[AgentBundle] = []
_lock = threading.Lock()


def agent_bundle() -> AgentBundle:
    """The agent's zip, built on first use and kept for the life of this process."""
    with _lock:
        if not _built:
            _built.append(build_bundle())
        return _built[0]


def cache_dir() -> Path:
    """The controller's own cache of the zip for the local transport (``$XDG_CACHE_HOME/upgrader``, else
    ``~/.cache/upgrader``: the same place a host keeps it in its login directory). As root, ``~`` is root's
    login directory from the password database, never $HOME: ``sudo`` keeps the caller's HOME, and root would
    otherwise keep, and run, its agent in a directory of that account's."""
    from .base import login_home

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(login_home(), ".cache")
    return Path(base) / "upgrader"


#: a directory opened without following a link in its last component
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _cache_refused(directory: Path, where: str, why: str, host: str | None) -> TransportError:
    return TransportError(f"the agent's cache directory {directory} is not a directory of this user that only it can "
                          f"write ({where} is {why}): remove it or fix its owner and mode (0700)", host=host)


def _open_cache_dir(directory: Path, host: str | None) -> int:
    """A descriptor of ``directory``, made (0700) where missing, walked from ``/`` one component at a time with
    O_NOFOLLOW: a link on the way is refused, not followed, and so is a directory another account owns or may
    write (a sticky one such as /tmp excepted on the way), the cache itself being this user's own, 0700 or
    tighter. The caller closes it."""
    uid = os.getuid()
    fd = os.open("/", _OPEN_DIR)
    parts = [p for p in directory.parts[1:] if p not in ("", ".")]
    try:
        for i, name in enumerate(parts):
            here = Path("/", *parts[:i + 1])
            if name == "..":
                raise _cache_refused(directory, str(here), "a '..' on the way", host)
            try:
                nfd = _open_or_make(fd, name)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _cache_refused(directory, str(here), "a link or not a directory", host) from e
                raise
            os.close(fd)
            fd = nfd
            st = os.fstat(fd)
            last = i == len(parts) - 1
            if st.st_uid not in ((uid,) if last else (0, uid)):
                raise _cache_refused(directory, str(here), f"owned by uid {st.st_uid}", host)
            if st.st_mode & 0o022 and (last or not st.st_mode & stat.S_ISVTX):
                raise _cache_refused(directory, str(here), f"writable by others (mode {stat.S_IMODE(st.st_mode):o})",
                                     host)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_or_make(fd: int, name: str) -> int:
    """The directory ``name`` in ``fd``, made 0700 when missing, opened with O_NOFOLLOW."""
    try:
        return os.open(name, _OPEN_DIR, dir_fd=fd)
    except FileNotFoundError:
        try:
            os.mkdir(name, 0o700, dir_fd=fd)
        except FileExistsError:
            pass  # made meanwhile by another process: checked as any other
        return os.open(name, _OPEN_DIR, dir_fd=fd)


def local_copy(bundle: AgentBundle | None = None, host: str | None = None) -> Path:
    """The zip in the controller's cache dir, written once per version (a copy whose bytes no longer have its
    digest is replaced); the directory must be this user's own, not a link, not writable by others, and it is
    read and written from its descriptor (_open_cache_dir), never through a name that could be swapped."""
    bundle = bundle or agent_bundle()
    directory = cache_dir()
    try:
        dfd = _open_cache_dir(directory, host)
    except OSError as e:
        raise TransportError(f"cannot prepare the agent's cache directory {directory}: {e}", host=host) from e
    try:
        if _holds(dfd, bundle):
            return directory / bundle.name
        _write(dfd, directory, bundle, host)
    finally:
        os.close(dfd)
    return directory / bundle.name


def _holds(dfd: int, bundle: AgentBundle) -> bool:
    """The cache already has the zip, bytes and all (a link or anything else in the way is replaced by _write)."""
    try:
        fd = os.open(bundle.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        return stat.S_ISREG(os.fstat(fd).st_mode) and hashlib.sha256(f.read()).hexdigest() == bundle.sha256


def _write(dfd: int, directory: Path, bundle: AgentBundle, host: str | None) -> None:
    """The zip written into the cache: several controllers (or hosts of one inventory) may write it at once, each
    its own temp file, renamed whole."""
    part = f"{bundle.name}.part-{os.urandom(6).hex()}"
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        with os.fdopen(fd, "wb") as f:
            f.write(bundle.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, bundle.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as e:
        try:
            os.unlink(part, dir_fd=dfd)
        except OSError:
            pass
        raise TransportError(f"cannot write the agent to {directory / bundle.name}: {e}", host=host) from e
