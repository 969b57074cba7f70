"""A real Apache Tomcat 10.1 for the tests: a site's install of a cached home, run on Debian's OpenJDK.

A :class:`Site` is what a customer adds to a stock install (tests/tomcat_debian.py builds those):
its own HTTP and shutdown ports on 127.0.0.1, a user in ``tomcat-users.xml``, an application as a
WAR and one as an exploded directory, ``JAVA_OPTS`` (in the environment of whoever starts it, or in
``bin/setenv.sh`` when the site has one, optionally with ``CATALINA_PID``). :class:`Tomcat` starts,
stops and inspects one install with its own scripts and finds its JVM without a pid file.

It does not decide anything about upgrades: the tool under test does that.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tomcat_debian import (CACHE, TOMCAT_PACKAGES, Home, TomcatSetupError, cached_home, offered_versions,
                           oldest_and_newest)

__all__ = ["CACHE", "TOMCAT_PACKAGES", "JAVA_OPTS", "TomcatSetupError", "Home", "Site", "Tomcat",
           "StartReport", "StopReport", "offered_versions", "oldest_and_newest", "cached_home", "install",
           "jvm_pids", "port_owner"]

# small heap, one GC and one JIT thread, C1 only: a 2-core machine shared with other test runs
JAVA_OPTS = ("-Xms16m -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:CICompilerCount=1 "
             "-XX:ActiveProcessorCount=1 -Xss512k -Djava.security.egd=file:/dev/./urandom")
_BOOTSTRAP = "org.apache.catalina.startup.Bootstrap"
# the environment catalina.sh reads; a test's own shell must not leak any of it into the install
_CATALINA_ENV = ("CATALINA_HOME", "CATALINA_BASE", "CATALINA_PID", "CATALINA_OUT", "CATALINA_OPTS",
                 "CATALINA_TMPDIR", "JAVA_OPTS", "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "JRE_HOME")


# --- a site's install ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Site:
    """What a customer changes in a stock Tomcat: ports, a user, two applications, JVM options."""

    http_port: int
    shutdown_port: int
    user: str = "siteadmin"
    password: str = "site-Secret-1"
    java_opts: str = JAVA_OPTS
    setenv: bool = False        # JAVA_OPTS in bin/setenv.sh (else in the environment of whoever starts it)
    pid_file: bool = False      # CATALINA_PID=$CATALINA_BASE/temp/catalina.pid in bin/setenv.sh
    pid_in_env: bool = False    # CATALINA_PID exported in the operator's own shell (only their starts write it)
    war_app: str = "shop"       # deployed as webapps/shop.war (Tomcat unpacks it on start)
    dir_app: str = "notes"      # deployed as the exploded directory webapps/notes/

    @classmethod
    def on_free_ports(cls, **options: object) -> "Site":
        http = _free_port()
        shutdown = _free_port()
        while shutdown == http:
            shutdown = _free_port()
        return cls(http, shutdown, **options)  # type: ignore[arg-type]


def install(stock: Home, dest: Path, site: Site) -> "Tomcat":
    """Copy the cached stock home to ``dest`` and apply the site's customisations."""
    shutil.copytree(stock.path, dest, symlinks=True)
    conf = dest / "conf"
    _edit(conf / "server.xml", '<Server port="-1" shutdown="SHUTDOWN">',
          f'<Server port="{site.shutdown_port}" shutdown="SHUTDOWN">')
    _edit(conf / "server.xml", '    <Connector port="8080" protocol="HTTP/1.1"\n',
          f'    <Connector address="127.0.0.1" port="{site.http_port}" protocol="HTTP/1.1"\n')
    _edit(conf / "tomcat-users.xml", "\n</tomcat-users>",
          f'\n  <role rolename="manager-gui"/>\n'
          f'  <user username="{site.user}" password="{site.password}" roles="manager-gui"/>\n</tomcat-users>')
    webapps = dest / "webapps"
    with zipfile.ZipFile(webapps / f"{site.war_app}.war", "w", zipfile.ZIP_DEFLATED) as war:
        for name, text in _app_files(site.war_app).items():
            war.writestr(name, text)
    for name, text in _app_files(site.dir_app).items():
        (webapps / site.dir_app / name).parent.mkdir(parents=True, exist_ok=True)
        (webapps / site.dir_app / name).write_text(text)
    if site.setenv or site.pid_file:
        lines = ["# site settings, read by catalina.sh"]
        if site.setenv:
            lines.append(f'JAVA_OPTS="{site.java_opts}"')
        if site.pid_file:
            lines.append('CATALINA_PID="$CATALINA_BASE/temp/catalina.pid"')
        (dest / "bin" / "setenv.sh").write_text("\n".join(lines) + "\n")
    return Tomcat(dest, site, stock)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if text.count(old) != 1:
        raise TomcatSetupError(f"{path.name} of this Tomcat version holds {text.count(old)} times {old.strip()!r}"
                               " (expected once): adapt the site customisation in tests/tomcat.py")
    path.write_text(text.replace(old, new))


def _app_files(app: str) -> dict[str, str]:
    """A tiny web application: a static page, a JSP (compiled by Jasper with ecj) and web.xml."""
    return {
        "index.html": f"<!doctype html><title>{app}</title><p>{app} index</p>\n",
        "server.jsp": ('<%@ page contentType="text/plain; charset=UTF-8" %>'
                       f"{app} on <%= application.getServerInfo() %>\n"),
        "WEB-INF/web.xml": ('<?xml version="1.0" encoding="UTF-8"?>\n'
                            '<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0">\n'
                            f"  <display-name>{app}</display-name>\n</web-app>\n"),
    }


# --- running it ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class StartReport:
    """How a start went, in seconds from the moment bin/startup.sh was called."""

    pid: int | None
    script_seconds: float          # startup.sh returned (the JVM runs on in the background)
    port_open_seconds: float       # the HTTP port accepted a connection
    answered_seconds: float        # the root page answered over HTTP


@dataclass(frozen=True)
class StopReport:
    """How a stop went, in seconds from the moment bin/shutdown.sh was called."""

    pid: int | None
    script_exit: int
    script_seconds: float          # shutdown.sh returned
    port_closed_seconds: float     # the HTTP port stopped accepting
    exited_seconds: float          # the JVM was gone
    killed: bool                   # it had to be SIGKILLed after the deadline
    outlived_script: bool          # the JVM was still running when shutdown.sh returned


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def jvm_pids(base: Path) -> list[int]:
    """The Tomcat server JVMs whose ``-Dcatalina.base`` is ``base``.

    bin/version.sh, bin/shutdown.sh and bin/configtest.sh start short-lived JVMs with the same
    ``-Dcatalina.base``; only the server runs ``Bootstrap`` with ``start`` as its last argument."""
    want = f"-Dcatalina.base={os.path.realpath(base)}"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(entry.name)
        if argv and want in argv and _BOOTSTRAP in argv and argv[-1] == "start" and _alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def port_owner(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` (IPv4 or IPv6), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:   # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return int(entry.name)
            except OSError:
                continue
    return None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait(predicate: Callable[[], bool], deadline: float, interval: float = 0.05) -> bool:
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Tomcat:
    """One installed Tomcat: start, stop and inspect it with its own scripts."""

    home: Path
    site: Site
    stock: Home
    started_pids: list[int] = field(default_factory=list)   # every server JVM seen, for the finalizer

    def env(self) -> dict[str, str]:
        """The environment a site's operator starts it with: no CATALINA_* from outside, JAVA_OPTS unless setenv.sh has them."""
        env = {k: v for k, v in os.environ.items() if k not in _CATALINA_ENV}
        if not self.site.setenv:
            env["JAVA_OPTS"] = self.site.java_opts
        if self.site.pid_in_env:
            env["CATALINA_PID"] = str(self.home / "temp" / "catalina.pid")
        return env

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.site.http_port}{path}"

    def get(self, path: str = "/", timeout: float = 30) -> tuple[int, str]:
        """HTTP GET on the site's port: (status, body); status 0 when nothing answered."""
        try:
            with _NO_PROXY.open(self.url(path), timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")
        except (OSError, urllib.error.URLError):
            return 0, ""

    def script(self, name: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.home / "bin" / name)], cwd=self.home, env=self.env(), text=True,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)

    def version(self) -> dict[str, str]:
        """``bin/version.sh``'s report as a dict, e.g. ``{"Server number": "10.1.60.0", ...}``."""
        res = self.script("version.sh")
        if res.returncode != 0:
            raise TomcatSetupError(f"bin/version.sh exited {res.returncode}: {res.stderr.strip()[-500:]}")
        return dict((k.strip(), v.strip()) for k, v in
                    (line.split(":", 1) for line in res.stdout.splitlines() if ":" in line))

    def pid(self) -> int | None:
        """The server JVM: the owner of the HTTP port, else the JVM whose catalina.base is this install."""
        owner = port_owner(self.site.http_port)
        if owner is not None:
            return owner
        pids = jvm_pids(self.home)
        return pids[0] if pids else None

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for log in sorted((self.home / "logs").glob("catalina*")):
            out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def start(self, timeout: float = 90) -> StartReport:
        """bin/startup.sh, then poll until the site's root page answers over HTTP."""
        t0 = time.monotonic()
        res = self.script("startup.sh", timeout=timeout)
        returned = time.monotonic() - t0
        if res.returncode != 0:
            raise TomcatSetupError(f"bin/startup.sh exited {res.returncode}: {res.stdout[-500:]} {res.stderr[-500:]}")
        deadline = t0 + timeout
        bound = None
        # the connector binds its port early (bindOnInit) and answers only once the webapps are deployed
        while True:
            pids = jvm_pids(self.home)
            self.started_pids.extend(p for p in pids if p not in self.started_pids)
            if bound is None and _port_open(self.site.http_port):
                bound = time.monotonic() - t0
            if bound is not None and self.get("/", timeout=2)[0] != 0:
                break
            if time.monotonic() > deadline or (not pids and time.monotonic() - t0 > 10):
                raise TomcatSetupError(f"Tomcat at {self.home} did not answer on port {self.site.http_port}"
                                       f" within {time.monotonic() - t0:.0f}s\n{self.log_tail()}")
            time.sleep(0.05)
        pid = self.pid()
        if pid is not None and pid not in self.started_pids:
            self.started_pids.append(pid)
        assert bound is not None
        return StartReport(pid, returned, bound, time.monotonic() - t0)

    def stop(self, timeout: float = 60) -> StopReport:
        """bin/shutdown.sh, then wait for the JVM to exit; SIGKILL it if it outlives ``timeout``."""
        pid = self.pid()
        t0 = time.monotonic()
        deadline = t0 + timeout
        closed = exited = None
        killed = False
        script_exit = -1
        returned = float(timeout)
        outlived = False
        try:
            script_exit = self.script("shutdown.sh", timeout=timeout).returncode
            returned = time.monotonic() - t0
            outlived = pid is not None and _alive(pid)
            while time.monotonic() < deadline:
                if closed is None and not _port_open(self.site.http_port):
                    closed = time.monotonic() - t0
                if exited is None and (pid is None or not _alive(pid)):
                    exited = time.monotonic() - t0
                if closed is not None and exited is not None:
                    break
                time.sleep(0.02)
        finally:
            if pid is not None and _alive(pid):
                killed = True
                _kill(pid)
        now = time.monotonic() - t0
        return StopReport(pid, script_exit, returned, closed if closed is not None else now,
                          exited if exited is not None else now, killed, outlived)

    def ensure_stopped(self) -> None:
        """Finalizer: no JVM of this install survives the test (SIGTERM runs Tomcat's shutdown hook, then SIGKILL)."""
        for pid in set(self.started_pids) | set(jvm_pids(self.home)):
            if _alive(pid):
                _kill(pid)


def _kill(pid: int, grace: float = 10) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except OSError:
            return
        if _wait(lambda: not _alive(pid), time.monotonic() + grace):
            return
