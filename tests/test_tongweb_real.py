"""The shipped tongweb playbook on a TongWeb-shaped install whose server is a real Tomcat JVM (tests/tongweb.py):
a build-tag upgrade 7.0.4.9_M3 -> 7.0.4.9_M4 committed with the site's configuration, licence and applications kept;
a non-ASCII application name in autodeploy/ refused before anything is stopped; a new build that cannot start rolled
back with the old one answering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hoststate import HostState, assert_host_untouched
from hoststate import host_state as whole_host_state
from tomcat import Home, port_owner
from tomcat_fixtures import tomcat_homes  # noqa: F401
from tomcat_lab import Lab
from tongweb import PID_FILE, TongWeb, TongWebSite, install
from tongweb_lab import (NEW, OLD, TongWebCatalog, broken_tongweb_catalog, kept_digest,  # noqa: F401
                         quick_tongweb_playbook, tongweb_catalog, tongweb_lab, write_inventory)
from tomcat_lab import make_lab


def _tw(lab: Lab) -> TongWeb:
    return lab.tomcat  # type: ignore[return-value]


def host_state(lab: Lab) -> HostState:
    """The whole host a refusal must leave as it was (tests/hoststate.py): the JVMs (pid, start time), the agent's
    state dir (lock, packages, runs, ledger), every file of the install except the running server's own (logs/,
    temp/, work/)."""
    tw = _tw(lab)
    return whole_host_state(tw.home, state_dir=lab.state_dir, pid_file=PID_FILE, pids=tw.jvms,
                            own=("logs", "temp", "work"))


def test_build_tag_upgrade_m3_to_m4_keeps_the_site(tongweb_lab: Lab, tomcat_homes: tuple[Home, Home]) -> None:
    """7.0.4.9_M3 -> 7.0.4.9_M4 with the shipped tongweb playbook (its ports read from conf/tongweb.xml): committed,
    the new JVM serves the application in autodeploy/ and the console, conf/tongweb.xml, conf/security/, license.dat,
    external.vmoptions and autodeploy/ byte for byte as the site left them."""
    old, new = tomcat_homes
    lab, tw = tongweb_lab, _tw(tongweb_lab)
    quick_tongweb_playbook(lab)
    assert tw.get("/portal/server.jsp") == (200, f"portal on Apache Tomcat/{old.upstream} (Debian)\n")
    kept = kept_digest(tw.home)
    old_pid = tw.pid_file()
    assert old_pid == port_owner(tw.site.http_port)

    rc, plan = lab.plan(NEW)
    assert rc == 0
    run = lab.run(plan)
    host = run.host()
    assert (run.rc, host["outcome"], host["version"], host["current"]) == (0, "committed", NEW, OLD), host
    assert tw.version() == f"V{NEW}"
    (jvm,) = tw.jvms()
    assert jvm != old_pid and tw.pid_file() == jvm == port_owner(tw.site.http_port)
    assert port_owner(tw.site.console_port) == jvm
    assert tw.get("/portal/server.jsp") == (200, f"portal on Apache Tomcat/{new.upstream} (Debian)\n")
    assert f"TongWeb {NEW} console" in tw.get("/", port=tw.site.console_port)[1]
    assert kept_digest(tw.home) == kept
    stop = next(p for p in host["phases"] if p["phase"] == "stop")
    assert stop["status"] == "ok" and "escalated" not in stop["detail"], stop
    # the listeners the playbook used are the site's, read from conf/tongweb.xml
    assert str(tw.site.http_port) in str(host) and str(tw.site.console_port) in str(host)


def test_a_non_ascii_application_name_is_refused_before_stop(tongweb_lab: Lab,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """An application directory named in Chinese in autodeploy/ (it breaks TongWeb's patch tool): `plan` refuses the
    host naming it (exit 3, the plan not allowed); a plan made before the site deployed it is refused by `run` in
    preflight (exit 2, outcome bad_input), before anything is stopped. The same JVM and pid file, no lock, no
    package staged, no file of the install touched; the application still answers."""
    lab, tw = tongweb_lab, _tw(tongweb_lab)
    quick_tongweb_playbook(lab)
    rc, clean_plan = lab.plan(NEW)          # made while every name is ASCII
    assert rc == 0

    app = tw.home / "autodeploy" / "门户"
    (app / "WEB-INF").mkdir(parents=True)
    (app / "index.html").write_text("<p>门户</p>\n")
    before = host_state(lab)
    capsys.readouterr()
    rc, plan = lab.plan(NEW)
    out = capsys.readouterr()
    assert rc == 3, out
    assert "non_ascii_names" in out.out and "autodeploy/" in out.out
    (planned,) = json.loads(plan.read_text())["hosts"]
    check = next(c for c in planned["checks"] if c["check"] == "non_ascii_names")
    assert check["status"] == "fail" and not planned["allowed"]
    assert "autodeploy/门户" in check["reason"] and "rename them to ASCII names" in check["reason"]
    assert_host_untouched(before, host_state(lab))

    run = lab.run(clean_plan)
    out = capsys.readouterr()
    host = run.host()
    assert (run.rc, host["outcome"], host["version"]) == (2, "bad_input", OLD), host
    assert [p["phase"] for p in host["phases"]] == ["preflight"]
    assert "non-ASCII names in application folders" in host["error"] and "autodeploy/门户" in host["error"]
    assert "autodeploy/门户" in out.out + out.err
    assert_host_untouched(before, host_state(lab), run_record=run.id)
    assert str(tw.pid_file()) == before.pid == str(port_owner(tw.site.http_port))
    assert tw.version() == f"V{OLD}" and tw.get("/portal/")[0] == 200


def test_a_new_build_that_cannot_start_is_rolled_back_and_the_old_one_answers(
        tmp_path: Path, tomcat_homes: tuple[Home, Home], tongweb_catalog: TongWebCatalog,
        broken_tongweb_catalog: Path) -> None:
    """_M4 with a corrupt lib/catalina.jar: its JVM dies at start (SEVERE/ClassNotFoundException in logs/server.log),
    the run rolls back, _M3 answers again on the site's ports with its pid file, the site's files unchanged."""
    old = tomcat_homes[0]
    tw = install(tongweb_catalog.products[OLD], tmp_path / "TongWeb7049M3", TongWebSite.on_free_ports())
    try:
        tw.start()
        lab = make_lab(tmp_path / "home", tw, broken_tongweb_catalog, tongweb_catalog.vendor_signers)  # type: ignore[arg-type]
        write_inventory(lab)
        quick_tongweb_playbook(lab)
        kept = kept_digest(tw.home)
        old_pid = tw.pid_file()
        rc, plan = lab.plan(NEW)
        assert rc == 0
        run = lab.run(plan)
        host = run.host()
        assert (run.rc, host["outcome"], host["version"]) == (1, "rolled_back", OLD), host
        assert "logs/server.log" in host["rollback_cause"] or "process" in host["rollback_cause"], host
        observe = [p for p in host["phases"] if p["phase"] == "observe"]
        assert observe[0]["status"] == "failed" and observe[-1]["status"] == "ok"
        assert tw.version() == f"V{OLD}"
        (jvm,) = tw.jvms()
        assert jvm != old_pid and tw.pid_file() == jvm == port_owner(tw.site.http_port)
        assert tw.get("/portal/server.jsp") == (200, f"portal on Apache Tomcat/{old.upstream} (Debian)\n")
        assert kept_digest(tw.home) == kept
    finally:
        tw.ensure_stopped()
