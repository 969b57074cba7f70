"""The shipped tomcat playbook on a real Apache Tomcat 10.1 (Debian's builds, on OpenJDK): a stock install with no
bin/setenv.sh and no pid file is upgraded from the oldest to the newest version the mirror offers and rolled back
by its run id, with the applications answering and conf/ byte for byte as the site left it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tomcat import JAVA_OPTS, Home, Site, Tomcat, install, jvm_pids, port_owner
from tomcat_fixtures import TomcatCatalog, tomcat_catalog, tomcat_homes  # noqa: F401
from tomcat_lab import Lab, conf_digest, make_lab, quick_playbook


@pytest.fixture
def stock(tmp_path: Path, tomcat_homes: tuple[Home, Home], tomcat_catalog: TomcatCatalog,
          monkeypatch: pytest.MonkeyPatch):
    """The oldest Tomcat as a site runs it out of the box (no setenv.sh: JAVA_OPTS in the environment of the operator
    who started it; the host agent passes none of that environment to the playbook's commands), started and
    answering; a lab around it."""
    monkeypatch.setenv("JAVA_OPTS", JAVA_OPTS)
    tc = install(tomcat_homes[0], tmp_path / "tomcat", Site.on_free_ports())
    try:
        tc.start()
        yield make_lab(tmp_path / "home", tc, tomcat_catalog.directory, tomcat_catalog.vendor_signers)
    finally:
        tc.ensure_stopped()


def _jsp_classes(tc: Tomcat) -> list[str]:
    return sorted(str(p.relative_to(tc.home)) for p in (tc.home / "work").rglob("*.class"))


def test_stock_tomcat_upgrade_and_rollback_by_run_id(stock: Lab, tomcat_homes: tuple[Home, Home]) -> None:
    """10.1.55 -> 10.1.60 with the shipped playbook on a stock install: committed, both applications answer on the
    new version, conf/ byte-identical, work/ cleared; `rollback RUN_ID` brings 10.1.55 back with its compiled JSPs."""
    old, new = tomcat_homes
    tc = stock.tomcat
    assert not (tc.home / "bin" / "setenv.sh").exists() and not (tc.home / "temp" / "catalina.pid").exists()
    assert tc.get("/shop/server.jsp") == (200, f"shop on Apache Tomcat/{old.upstream} (Debian)\n")
    compiled = _jsp_classes(tc)
    assert compiled
    conf = conf_digest(tc.home)
    old_pid = tc.pid()

    rc, plan = stock.plan(new.server_number)
    assert rc == 0
    run = stock.run(plan)
    host = run.host()
    assert (run.rc, host["outcome"], host["version"]) == (0, "committed", new.server_number), host
    assert host["current"] == old.server_number
    # the old JVM is gone (shutdown.sh returned before it exited: the agent waited), a new one serves
    new_pid = tc.pid()
    assert old_pid not in jvm_pids(tc.home) and jvm_pids(tc.home) == [new_pid]
    assert port_owner(tc.site.shutdown_port) == new_pid
    assert _jsp_classes(tc) == []                                   # the old version's compiled JSPs: cleared
    assert tc.get("/shop/server.jsp") == (200, f"shop on Apache Tomcat/{new.upstream} (Debian)\n")
    assert tc.get("/notes/server.jsp") == (200, f"notes on Apache Tomcat/{new.upstream} (Debian)\n")
    assert conf_digest(tc.home) == conf
    assert tc.version()["Server number"] == new.server_number
    stop = next(p for p in host["phases"] if p["phase"] == "stop")
    assert stop["status"] == "ok" and "escalated" not in stop["detail"]

    assert stock.cli("rollback", run.id, "--yes") == 0
    back = run.host("rollback-result.json")
    assert (back["outcome"], back["version"]) == ("restored", old.server_number), back
    # the summary's time column is the rollback's own time (it printed 0.0s): at least its phases' sum
    assert back["seconds"] >= sum(p["seconds"] for p in back["phases"]) > 0
    assert tc.get("/shop/server.jsp") == (200, f"shop on Apache Tomcat/{old.upstream} (Debian)\n")
    assert conf_digest(tc.home) == conf
    assert set(compiled) <= set(_jsp_classes(tc))                 # work/ as it was before the upgrade
    assert len(jvm_pids(tc.home)) == 1 and new_pid not in jvm_pids(tc.home)


def test_the_same_upgrade_over_the_real_sshd(tmp_path: Path, tomcat_homes: tuple[Home, Home],
                                             tomcat_catalog: TomcatCatalog, sshd) -> None:  # noqa: ANN001
    """10.1.55 -> 10.1.60 with the host reached through OpenSSH on 127.0.0.1 (the agent runs in the SSH session;
    JAVA_OPTS in bin/setenv.sh, no pid file): committed, the applications answer on the new version, conf/ kept."""
    old, new = tomcat_homes
    tc = install(old, tmp_path / "tomcat", Site.on_free_ports(setenv=True))
    try:
        tc.start()
        lab = make_lab(tmp_path / "home", tc, tomcat_catalog.directory, tomcat_catalog.vendor_signers,
                       host_entry=sshd.host_entry())
        quick_playbook(lab)
        conf = conf_digest(tc.home)
        rc, plan = lab.plan(new.server_number)
        assert rc == 0
        run = lab.run(plan)
        host = run.host()
        assert (run.rc, host["outcome"], host["version"]) == (0, "committed", new.server_number), host
        assert tc.get("/notes/server.jsp") == (200, f"notes on Apache Tomcat/{new.upstream} (Debian)\n")
        assert tc.get("/shop/")[0] == 200
        assert conf_digest(tc.home) == conf
        assert len(jvm_pids(tc.home)) == 1
        assert "-Xmx128m" in Path(f"/proc/{jvm_pids(tc.home)[0]}/cmdline").read_bytes().decode().split("\0")
    finally:
        tc.ensure_stopped()
