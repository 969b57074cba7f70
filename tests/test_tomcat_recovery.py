"""Failures on a real Tomcat 10.1 (Debian's builds, on OpenJDK): a new version that cannot start is rolled back with
the old one answering; a controller SIGKILLed mid-run is resumed to a safe end; a playbook that needs a pid file is
refused before stop on a Tomcat that writes none, with the exact fix; and a rollback that cannot evaluate a probe
says what it saw instead of reporting a dead service."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Iterator

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import fault_env
from hoststate import HostState, assert_host_untouched
from hoststate import host_state as whole_host_state
from tomcat import Home, Site, Tomcat, install, jvm_pids
from tomcat_fixtures import TomcatCatalog, package_name, tomcat_catalog, tomcat_homes  # noqa: F401
from tomcat_lab import Lab, conf_digest, make_lab, quick_playbook
from upgrader.cli import main
from upgrader.core.playbook import shipped_playbooks_dir


@pytest.fixture(scope="module")
def broken_catalog(tmp_path_factory: pytest.TempPathFactory, tomcat_homes: tuple[Home, Home],
                   tomcat_catalog: TomcatCatalog) -> Path:
    """The vendor's catalog, signed by the vendor key, whose newest Tomcat ships a lib/catalina.jar without its
    classes (a release that passes every integrity check, reads as the target version, and still cannot start)."""
    old, new = tomcat_homes
    root = tmp_path_factory.mktemp("broken-catalog")
    bad_home = root / "home"
    shutil.copytree(new.path, bad_home)
    # a jar that still names its version (the host reads it back after the install and finds the target) but holds
    # none of Catalina's classes: the JVM cannot load org.apache.catalina.startup.Catalina
    jar = bad_home / "lib" / "catalina.jar"
    info = "org/apache/catalina/util/ServerInfo.properties"
    with zipfile.ZipFile(jar) as z:
        properties = z.read(info)
    jar.unlink()
    with zipfile.ZipFile(jar, "w") as z:
        z.writestr(info, properties)
    directory = root / "catalog"
    directory.mkdir()
    shutil.copy(tomcat_catalog.packages[old.server_number], directory / package_name(old))
    assert main(["--home", str(root / "h"), "package", "build", str(bad_home), "--product", "tomcat",
                 "--version", new.server_number, "-o", str(directory / package_name(new))]) == 0
    assert main(["--home", str(root / "h"), "catalog", "build", str(directory), "--serial", "2",
                 "--key", str(tomcat_catalog.vendor_key)]) == 0
    return directory


@contextlib.contextmanager
def _lab(tmp_path: Path, home: Home, catalog: Path, signers: Path, site: Site) -> Iterator[Lab]:
    tc = install(home, tmp_path / "tomcat", site)
    try:
        tc.start()
        yield make_lab(tmp_path / "home", tc, catalog, signers)
    finally:
        tc.ensure_stopped()


@pytest.fixture
def site(tmp_path: Path, tomcat_homes: tuple[Home, Home], tomcat_catalog: TomcatCatalog) -> Iterator[Lab]:
    """The oldest Tomcat running with JAVA_OPTS in bin/setenv.sh (no CATALINA_PID: no pid file) and a lab."""
    with _lab(tmp_path, tomcat_homes[0], tomcat_catalog.directory, tomcat_catalog.vendor_signers,
              Site.on_free_ports(setenv=True)) as lab:
        yield lab


def host_state(lab: Lab) -> HostState:
    """The whole host a refusal must leave as it was (tests/hoststate.py): the JVM (pid and start time), the agent's
    state dir (lock, packages, runs, ledger), every product and configuration file (logs/, temp/, work/ are the
    running server's own)."""
    home = lab.tomcat.home
    return whole_host_state(home, state_dir=lab.state_dir, pid_file=None, pids=lambda: jvm_pids(home),
                            own=("logs", "temp", "work"))


def test_a_new_tomcat_that_cannot_start_is_rolled_back_and_the_old_one_answers(
        tmp_path: Path, tomcat_homes: tuple[Home, Home], tomcat_catalog: TomcatCatalog, broken_catalog: Path) -> None:
    """10.1.60 with a corrupt catalina.jar: its JVM dies at once ("SEVERE ... ClassNotFoundException" in the dated
    catalina log), the run rolls back without waiting out start_timeout, 10.1.55 answers again, conf/ unchanged."""
    old, new = tomcat_homes
    with _lab(tmp_path, old, broken_catalog, tomcat_catalog.vendor_signers, Site.on_free_ports(setenv=True)) as lab:
        tc = lab.tomcat
        quick_playbook(lab)
        conf = conf_digest(tc.home)
        rc, plan = lab.plan(new.server_number)
        assert rc == 0
        run = lab.run(plan)
        host = run.host()
        assert (run.rc, host["outcome"], host["version"]) == (1, "rolled_back", old.server_number), host
        assert "ClassNotFoundException" in host["rollback_cause"] or "SEVERE" in host["rollback_cause"]
        assert "logs/catalina." in host["rollback_cause"]
        observe = [p for p in host["phases"] if p["phase"] == "observe"]
        assert observe[0]["status"] == "failed" and observe[-1]["status"] == "ok"
        assert tc.get("/shop/server.jsp") == (200, f"shop on Apache Tomcat/{old.upstream} (Debian)\n")
        assert tc.version()["Server number"] == old.server_number
        assert conf_digest(tc.home) == conf
        assert len(jvm_pids(tc.home)) == 1


def test_a_controller_killed_mid_run_is_resumed_to_the_old_tomcat(site: Lab, tomcat_homes: tuple[Home, Home]) -> None:
    """The controller is SIGKILLed once the new Tomcat was started; `resume RUN_ID` stops that JVM (found by its
    command line: there is no pid file), restores 10.1.55 and observes it answering; the host's lock is released."""
    old, new = tomcat_homes
    tc = site.tomcat
    quick_playbook(site)
    conf = conf_digest(tc.home)
    rc, plan = site.plan(new.server_number)
    assert rc == 0
    killed = site.child("run", str(plan), "--approval", str(site.approve(plan)),
                        env=fault_env(kill_at="observe:started"))
    assert killed.rc == -9, killed.out[-3000:]
    assert (site.state_dir / "lock").exists()
    (running,) = jvm_pids(tc.home)                                # the new version, left running
    assert tc.version()["Server number"] == new.server_number

    assert site.cli("resume", killed.id) == 1
    host = killed.host()
    assert (host["outcome"], host["version"]) == ("rolled_back", old.server_number), host
    assert host["seconds"] >= sum(p["seconds"] for p in host["phases"] if p["phase"] != "preflight") > 0
    assert running not in jvm_pids(tc.home) and len(jvm_pids(tc.home)) == 1
    assert tc.get("/notes/server.jsp") == (200, f"notes on Apache Tomcat/{old.upstream} (Debian)\n")
    assert conf_digest(tc.home) == conf
    assert not (site.state_dir / "lock").exists()


def pid_file_playbook(lab: Lab, start_timeout: str = "120s") -> None:
    """A site's own tomcat playbook that insists on CATALINA_PID's pid file (no process: section)."""
    spec = yaml.safe_load((shipped_playbooks_dir() / "tomcat.yaml").read_text())
    del spec["process"]
    spec["name"] = "tomcat-pidfile"
    spec["stop"]["pid_file"] = "temp/catalina.pid"
    spec["observe"].update(window="2s", interval="0.5s", start_timeout=start_timeout)
    spec["observe"]["probes"][0] = {"type": "process", "pid_file": "temp/catalina.pid"}
    (lab.root / "playbooks").mkdir(exist_ok=True)
    (lab.root / "playbooks" / "tomcat-pidfile.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    lab.write_inventory(playbook="tomcat-pidfile")


def test_a_playbook_that_needs_a_pid_file_is_refused_before_stop_with_the_fix(
        site: Lab, tomcat_homes: tuple[Home, Home], capsys: pytest.CaptureFixture[str]) -> None:
    """On a Tomcat that writes no pid file, `plan` with a playbook that needs one exits 2 naming the exact fix; a
    plan made while the pid file existed is refused by `run` in preflight after a restart without it. Nothing on the
    host changes: the same JVM, no lock, no package staged, no file touched."""
    new = tomcat_homes[1]
    tc = site.tomcat
    pid_file_playbook(site)
    before = host_state(site)
    capsys.readouterr()
    rc, plan = site.plan(new.server_number)
    err = capsys.readouterr().err
    assert rc == 2 and not plan.exists()
    assert "no pid file temp/catalina.pid" in err
    assert 'set CATALINA_PID in bin/setenv.sh (CATALINA_PID="$CATALINA_BASE/temp/catalina.pid")' in " ".join(err.split())
    assert_host_untouched(before, host_state(site))

    # the operator exports CATALINA_PID and restarts: the plan passes; then a restart without it, and run refuses
    with_pid = dataclasses.replace(tc, site=dataclasses.replace(tc.site, pid_in_env=True))
    tc.stop()
    with_pid.start()
    assert (tc.home / "temp" / "catalina.pid").is_file()
    rc, plan = site.plan(new.server_number)
    assert rc == 0
    with_pid.stop()
    tc.start()
    before = host_state(site)
    assert not (tc.home / "temp" / "catalina.pid").exists() and len(before.service) == 1
    capsys.readouterr()
    run = site.run(plan)
    out = capsys.readouterr()
    assert run.rc == 2, out
    assert run.host()["outcome"] == "stale"
    assert "set CATALINA_PID in bin/setenv.sh" in " ".join((out.out + out.err).split())
    assert_host_untouched(before, host_state(site), run_record=run.id)
    assert [p["phase"] for p in run.host()["phases"]] == ["preflight"]
    assert tc.get("/shop/")[0] == 200


def test_a_rollback_that_cannot_evaluate_the_pid_file_reports_the_old_tomcat_healthy(
        tmp_path: Path, tomcat_homes: tuple[Home, Home], tomcat_catalog: TomcatCatalog) -> None:
    """The operator's shell exports CATALINA_PID, the host agent's does not: the plan passes, but the Tomcat the agent
    stops leaves its pid file behind and the new one it starts writes none. The new version's health cannot be
    proven, so the run rolls back; the old Tomcat then answers on HTTP while the pid file is still the stale one: the
    outcome is rolled back (exit 1), not a person needed, and says which check could not be evaluated and what the
    others saw."""
    old, new = tomcat_homes
    site = Site.on_free_ports(setenv=True, pid_in_env=True)
    with _lab(tmp_path, old, tomcat_catalog.directory, tomcat_catalog.vendor_signers, site) as lab:
        tc = lab.tomcat
        assert (tc.home / "temp" / "catalina.pid").is_file() and "CATALINA_PID" not in os.environ
        pid_file_playbook(lab, start_timeout="15s")
        rc, plan = lab.plan(new.server_number)
        assert rc == 0
        run = lab.run(plan)
        host = run.host()
        assert (run.rc, host["outcome"], host["version"]) == (1, "rolled_back", old.server_number), host
        stale = (r"pid file temp/catalina\.pid names pid \d+, which does not run, and was written before the last "
                 r"start \(stale: the service started since does not write it\)")
        assert re.search("never healthy after start: process: " + stale, host["rollback_cause"]), host
        assert "the old version is healthy by the checks that can see it" in host["error"]
        assert re.search("not evaluated: process: " + stale, host["error"]), host["error"]
        assert "http: http://127.0.0.1:%d/ answered 200" % tc.site.http_port in host["error"]
        assert host["after"]["unevaluated"] == ["process"] and host["after"]["healthy"] is True
        assert tc.get("/shop/")[0] == 200 and tc.version()["Server number"] == old.server_number
        assert not jvm_pids(tc.home)[0] == int((tc.home / "temp" / "catalina.pid").read_text())
