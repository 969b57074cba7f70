"""The real Tomcat fixture: two Debian versions assembled into Apache-layout homes, run on OpenJDK on
loopback ports with a site's customisations, stopped without leaving a JVM, and packaged for upgrader."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tomcat import (TOMCAT_PACKAGES, Home, Site, Tomcat, TomcatSetupError, cached_home, install, jvm_pids,
                    oldest_and_newest, port_owner)
from tomcat_fixtures import TomcatCatalog, old_tomcat, package_name, tomcat_catalog, tomcat_homes  # noqa: F401
from upgrader.cli import main

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LAYOUT = ("bin", "lib", "conf", "webapps", "logs", "temp", "work")


def _record(name: str, **reports: object) -> None:
    """Keep the measured start and stop timings as a test artifact (input for the downtime figures)."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"tomcat-{name}.json").write_text(json.dumps(
        {k: dataclasses.asdict(v) for k, v in reports.items()}, indent=2) + "\n")  # type: ignore[call-overload]


def _older(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net shows them) of the sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            address, hexport = cols[1].rsplit(":", 1)
            if cols[3] == "0A" and int(hexport, 16) == port:
                found.add(address)
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}   # 127.0.0.1, as IPv4 and IPv4-mapped IPv6


def test_two_debian_versions_become_self_contained_apache_homes(tomcat_homes: tuple[Home, Home]) -> None:
    """The oldest and newest tomcat10 on the mirror are laid out as CATALINA_HOMEs with real files only."""
    old, new = tomcat_homes
    assert _older(old.debian_version, new.debian_version)
    for home in tomcat_homes:
        assert home.server_number == f"{home.upstream}.0"
        assert {name: home.packages[name] for name in TOMCAT_PACKAGES} == dict.fromkeys(TOMCAT_PACKAGES,
                                                                                      home.debian_version)
        assert "libeclipse-jdt-core-java" in home.packages   # Jasper's JSP compiler
        for d in LAYOUT:
            assert (home.path / d).is_dir(), d
        for script in ("startup.sh", "shutdown.sh", "version.sh", "catalina.sh"):
            assert os.access(home.path / "bin" / script, os.X_OK), script
        for jar in ("bin/bootstrap.jar", "bin/tomcat-juli.jar", "lib/catalina.jar", "lib/servlet-api.jar",
                    "lib/jasper.jar", "lib/eclipse-jdt-core.jar"):
            assert (home.path / jar).is_file(), jar
        links = [p for p in home.path.rglob("*") if p.is_symlink()]
        assert links == []
    assert (old.path / "lib" / "catalina.jar").read_bytes() != (new.path / "lib" / "catalina.jar").read_bytes()


def test_a_mirror_without_two_versions_is_refused_loudly() -> None:
    """With fewer than two versions on the mirror there is nothing to upgrade to: the set-up says so and what to check."""
    with pytest.raises(TomcatSetupError, match=r"offers 0 version\(s\) of no-such-tomcat10-build \(none\);"
                                               r" the Tomcat tests need two: check .*sources.* apt-get update"):
        oldest_and_newest("no-such-tomcat10-build")


def test_a_second_call_reads_the_cache(tomcat_homes: tuple[Home, Home]) -> None:
    """An assembled home is reused: no download, no rebuild, the same files."""
    old = tomcat_homes[0]
    stamp = (old.path.parent / "home.json").stat()
    t0 = time.monotonic()
    again = cached_home(old.debian_version)
    assert time.monotonic() - t0 < 1
    assert again == old
    assert (old.path.parent / "home.json").stat().st_ino == stamp.st_ino


def test_version_sh_reports_each_version(tmp_path: Path, tomcat_homes: tuple[Home, Home]) -> None:
    """bin/version.sh of each install prints the Server number of its own Debian version."""
    for home in tomcat_homes:
        tomcat = install(home, tmp_path / home.upstream, Site.on_free_ports())
        report = tomcat.version()
        assert report["Server number"] == f"{home.upstream}.0"
        assert report["Server version"] == f"Apache Tomcat/{home.upstream} (Debian)"
    assert jvm_pids(tmp_path) == []


def test_old_tomcat_serves_both_apps_on_loopback_and_stops(old_tomcat: Tomcat) -> None:
    """The oldest version starts, answers for the WAR and the exploded app, and its JVM is gone after stop."""
    tc = old_tomcat
    old = tc.stock.upstream
    started = tc.start()
    assert started.pid is not None
    assert port_owner(tc.site.http_port) == port_owner(tc.site.shutdown_port) == started.pid
    assert jvm_pids(tc.home) == [started.pid]
    argv = Path(f"/proc/{started.pid}/cmdline").read_bytes().decode().split("\0")
    assert "-Xmx128m" in argv                                # the site's JAVA_OPTS reached the JVM
    for port in (tc.site.http_port, tc.site.shutdown_port):
        assert _listening_addresses(port) and _listening_addresses(port) <= LOOPBACK, port

    assert tc.get("/shop/") == (200, "<!doctype html><title>shop</title><p>shop index</p>\n")
    assert tc.get("/notes/") == (200, "<!doctype html><title>notes</title><p>notes index</p>\n")
    assert tc.get("/shop/server.jsp") == (200, f"shop on Apache Tomcat/{old} (Debian)\n")
    assert tc.get("/notes/server.jsp") == (200, f"notes on Apache Tomcat/{old} (Debian)\n")
    assert tc.get("/")[0] == 200                             # the ROOT app Debian ships
    assert tc.get("/missing/")[0] == 404
    assert (tc.home / "webapps" / "shop.war").is_file() and (tc.home / "webapps" / "shop" / "index.html").is_file()
    assert list((tc.home / "work").rglob("server_jsp.class"))          # JSPs compiled by Jasper with ecj
    assert not (tc.home / "temp" / "catalina.pid").exists()              # stock: no CATALINA_PID
    day = time.strftime("%Y-%m-%d")
    assert "Server version number: " + tc.stock.server_number in (tc.home / "logs" / "catalina.out").read_text()
    assert (tc.home / "logs" / f"catalina.{day}.log").is_file()
    assert (tc.home / "conf" / "Catalina" / "localhost").is_dir()

    stopped = tc.stop()
    assert stopped.pid == started.pid and stopped.script_exit == 0
    assert not stopped.killed
    assert not Path(f"/proc/{started.pid}").exists() or "Z" in Path(f"/proc/{started.pid}/stat").read_text().split()[2]
    assert jvm_pids(tc.home) == []
    assert port_owner(tc.site.http_port) is None and port_owner(tc.site.shutdown_port) is None
    assert tc.get("/shop/") == (0, "")
    _record("stock", start=started, stop=stopped)


def test_site_with_setenv_and_pid_file_runs_the_new_version(tmp_path: Path, tomcat_homes: tuple[Home, Home]) -> None:
    """With JAVA_OPTS and CATALINA_PID in bin/setenv.sh the newest version writes its pid and shutdown.sh waits for the JVM."""
    new = tomcat_homes[1]
    tc = install(new, tmp_path / "tomcat", Site.on_free_ports(setenv=True, pid_file=True))
    try:
        assert "JAVA_OPTS" not in tc.env()
        started = tc.start()
        pid_file = tc.home / "temp" / "catalina.pid"
        assert int(pid_file.read_text()) == started.pid == port_owner(tc.site.http_port)
        assert "-Xmx128m" in Path(f"/proc/{started.pid}/cmdline").read_bytes().decode().split("\0")
        assert tc.get("/notes/server.jsp") == (200, f"notes on Apache Tomcat/{new.upstream} (Debian)\n")
        stopped = tc.stop()
        assert not stopped.killed and stopped.script_exit == 0
        assert not stopped.outlived_script        # with CATALINA_PID, catalina.sh stop waits for the JVM
        assert not pid_file.exists()
        _record("setenv-pid-file", start=started, stop=stopped)
        assert jvm_pids(tc.home) == []
    finally:
        tc.ensure_stopped()


def test_upgrade_packages_are_built_and_verified(tomcat_catalog: TomcatCatalog, tomcat_homes: tuple[Home, Home],
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each CATALINA_HOME is an upgrader package that `package verify` accepts, alone and against the signed catalog."""
    for home in tomcat_homes:
        pkg = tomcat_catalog.packages[home.server_number]
        assert pkg.name == package_name(home)
        for extra in ([], ["--catalog", str(tomcat_catalog.directory)]):
            capsys.readouterr()
            assert main(["--home", str(tmp_path / "h"), "package", "verify", str(pkg), "--json", *extra]) == 0
            info = json.loads(capsys.readouterr().out)
            assert (info["ok"], info["product"], info["version"], info["kind"]) == (
                True, "tomcat", home.server_number, "full")
        with tarfile.open(pkg) as tar:
            members = {m.name: m for m in tar.getmembers()}
        for rel in ("bin/version.sh", "bin/startup.sh", "bin/shutdown.sh", "lib/catalina.jar", "conf/server.xml",
                    "webapps/ROOT/index.html", "lib/eclipse-jdt-core.jar"):
            assert members[rel].isreg(), rel
        assert members["bin/version.sh"].mode & 0o111
        assert not [m for m in members.values() if m.issym() or m.islnk()]
        assert (tomcat_catalog.directory / "catalog.yaml.sig").is_file()


def test_a_tampered_tomcat_package_is_refused_against_the_catalog(tomcat_catalog: TomcatCatalog,
                                                                  tomcat_homes: tuple[Home, Home],
                                                                  tmp_path: Path) -> None:
    """An attacker who rebuilds the newest package with their own catalina.jar does not get past `package verify --catalog`."""
    new = tomcat_homes[1]
    evil_home = tmp_path / "evil"
    shutil.copytree(new.path, evil_home)
    (evil_home / "lib" / "catalina.jar").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    evil = tmp_path / "catalog" / package_name(new)
    evil.parent.mkdir()
    assert main(["--home", str(tmp_path / "h"), "package", "build", str(evil_home), "--product", "tomcat",
                 "--version", new.server_number, "-o", str(evil)]) == 0
    shutil.copy(tomcat_catalog.directory / "catalog.yaml", evil.parent / "catalog.yaml")
    shutil.copy(tomcat_catalog.directory / "catalog.yaml.sig", evil.parent / "catalog.yaml.sig")
    rc = main(["--home", str(tmp_path / "h"), "package", "verify", str(evil), "--catalog", str(evil.parent)])
    assert rc == 2
    assert tomcat_catalog.packages[new.server_number].read_bytes() != evil.read_bytes()
