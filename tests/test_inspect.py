"""`upgrader inspect`: the health inspection of the real sample middleware, locally and over the real sshd, as a
table, JSON and a self-contained HTML report rendered by headless Chromium; thresholds, advisories and bad input."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ARTIFACTS, upgrader
from test_audit_report import Page, chromium, outside_references
from test_available import ADVISORY, set_advisories

from upgrader.cli.commands.demo import Sandbox
from upgrader.core.playbook import THRESHOLDS
from upgrader.customer.inspection import metrics, warnings
from upgrader.core.playbook import shipped_playbooks_dir

SYSCTLS = ("fs.file-max", "fs.nr_open", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog",
           "net.ipv4.ip_local_port_range", "vm.swappiness", "vm.max_map_count", "vm.overcommit_memory")


def inspect(box: Sandbox, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = upgrader(box, "inspect", *argv)
    return rc, capsys.readouterr().out


def local_args(box: Sandbox, *extra: str) -> list[str]:
    return ["--install-dir", str(box.install_dir), "--var", f"port={box.port}", *extra]


def tripping_playbook(box: Sandbox) -> Path:
    """The sample playbook with an inspect: block whose disk threshold every file system trips (used > 0 %)."""
    text = (shipped_playbooks_dir() / "sample-middleware.yaml").read_text()
    path = box.root / "strict-sample.yaml"
    path.write_text(text + "\ninspect:\n  logs: ['logs/*.log']\n  thresholds:\n    disk_used_pct: 0\n")
    return path


def test_local_inspection_reports_system_product_and_kernel_facts_as_json(sandbox: Sandbox, capsys) -> None:
    """--install-dir on the running sample: OS, kernel, every kernel parameter, limits, disk, memory, the version,
    the running pid, the open port, the config digest and the log, all with sane values."""
    box = sandbox
    rc, out = inspect(box, capsys, *local_args(box, "--json"))
    assert rc == 0
    data = json.loads(out)
    assert data["summary"] == {"hosts": 1, "inspected": 1, "unreachable": [], "warnings": len(data["hosts"][0]["warnings"])}
    (h,) = data["hosts"]
    f = h["facts"]
    assert h["error"] is None and h["product"] == "sample-middleware"
    assert f["os"]["name"] and f["kernel"] and f["cpus"] >= 1 and len(f["load"]) == 3
    assert set(f["sysctl"]) == set(SYSCTLS)
    assert f["sysctl"]["net.core.somaxconn"] is None or int(f["sysctl"]["net.core.somaxconn"]) > 0
    assert f["memory"]["total"] > f["memory"]["available"] > 0
    assert 0 < f["disk"]["used_pct"] < 100 and f["disk"]["free"] > 0
    assert f["version"] == "7.0.4.1"
    pid = int((box.install_dir / "run" / "server.pid").read_text())
    assert f["process"] == {"pid_file": "run/server.pid", "pid": pid, "running": True}
    assert f["ulimits"]["product"]["open_files"][0] > 0 and f["ulimits"]["agent"]["open_files"][0] > 0
    assert f["ports"] == [{"port": box.port, "open": True, "listen": ["127.0.0.1"]}]
    conf = box.install_dir / "conf" / "server.conf"
    assert f["configs"] == [{"path": "conf/server.conf", "sha256": hashlib.sha256(conf.read_bytes()).hexdigest(),
                             "size": conf.stat().st_size, "mtime": conf.stat().st_mtime}]
    (log,) = f["logs"]
    assert log["path"] == "logs/server.log" and log["errors"] == 0 and log["lines"] >= 1
    assert set(h["metrics"]) == set(THRESHOLDS) and h["metrics"]["log_errors"] == 0
    assert all(w["check"] not in ("process", "port", "log", "log_errors", "version") for w in h["warnings"])


def test_local_inspection_table_names_the_host_version_process_and_summary(sandbox: Sandbox, capsys) -> None:
    """Without --json a table shows the version, the running process and the port, then a summary line."""
    box = sandbox
    rc, out = inspect(box, capsys, *local_args(box))
    assert rc == 0
    assert "Health inspection" in out and "7.0.4.1" in out and "running (pid" in out and f"{box.port}✔" in out
    assert "1 of 1 host(s) inspected" in out


def test_a_stopped_product_and_a_closed_port_are_warnings(sandbox: Sandbox, capsys) -> None:
    """With the service stopped the inspection still exits 0 and warns that it is not running and its port is closed."""
    box = sandbox
    box.stop_service()
    rc, out = inspect(box, capsys, *local_args(box, "--json"))
    assert rc == 0
    checks = {w["check"]: w["message"] for w in json.loads(out)["hosts"][0]["warnings"]}
    assert "not running" in checks["process"] and f"port {box.port} is not open" in checks["port"]


def test_a_threshold_breach_and_log_errors_warn_in_table_json_and_html(sandbox: Sandbox, capsys,
                                                                       tmp_path: Path) -> None:
    """A playbook threshold that trips (disk_used_pct: 0) and ERROR lines in the log are warnings in all three outputs."""
    box = sandbox
    with open(box.install_dir / "logs" / "server.log", "a") as f:
        f.write("2026-11-26T10:00:00 ERROR datasource jdbc/orders: connection refused\n"
                "2026-11-26T10:00:01 SEVERE java.lang.IllegalStateException: pool closed\n")
    pb = tripping_playbook(box)
    report = tmp_path / "inspection.html"
    rc, out = inspect(box, capsys, *local_args(box, "--playbook", str(pb), "--json", "-o", str(report)))
    assert rc == 0
    (h,) = json.loads(out)["hosts"]
    checks = {w["check"]: w for w in h["warnings"]}
    assert checks["disk_used_pct"]["threshold"] == 0 and checks["disk_used_pct"]["value"] > 0
    assert checks["log_errors"]["value"] == 2 and "pool closed" in checks["log"]["message"]
    html = report.read_text()
    assert "disk use of the install dir" in html and "pool closed" in html and 'class="warn"' in html
    rc, out = inspect(box, capsys, *local_args(box, "--playbook", str(pb)))
    assert rc == 0
    assert re.search(r"warning disk_used_pct: disk use of the install dir's file system \(%\): [\d.]+ is above 0",
                     out)
    assert "warning log_errors" in out and "warning log: logs/server.log: 2 error line(s)" in out


def test_json_report_file_holds_the_same_inspection(sandbox: Sandbox, capsys, tmp_path: Path) -> None:
    """-o x.json writes the inspection as JSON (the table is still printed)."""
    box = sandbox
    out_file = tmp_path / "inspection.json"
    rc, out = inspect(box, capsys, *local_args(box, "-o", str(out_file)))
    assert rc == 0 and f"report written to {out_file}" in out
    data = json.loads(out_file.read_text())
    assert data["hosts"][0]["facts"]["version"] == "7.0.4.1"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_html_report_renders_in_headless_chromium_with_facts_and_warnings(sandbox: Sandbox, capsys,
                                                                          tmp_path: Path, lang: str) -> None:
    """The HTML report needs nothing outside the file; Chromium shows the title, version, kernel and a warning."""
    box = sandbox
    report = tmp_path / f"inspection-{lang}.html"
    rc, _ = inspect(box, capsys, *local_args(box, "--playbook", str(tripping_playbook(box)), "-o", str(report),
                                             "--lang", lang))
    assert rc == 0
    assert inline_only(report.read_text())
    dom = chromium(f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = Page(dom.stdout).text
    facts = json.loads(json.dumps(_facts(box, capsys)))
    assert ("健康巡检报告" if lang == "zh" else "Health inspection report") in text
    assert ("内核参数" if lang == "zh" else "Kernel parameters") in text
    assert "7.0.4.1" in text and facts["kernel"] in text and "net.core.somaxconn" in text
    assert "disk_used_pct" in text and "conf/server.conf" in text
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"inspect-report-{lang}.png"
    shot.unlink(missing_ok=True)
    done = chromium(f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400", f"--screenshot={shot}",
                    report.as_uri())
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def inline_only(html: str) -> bool:
    """Nothing that would make a browser fetch anything: the only extra element allowed is inline <svg> (charts)."""
    found = [x for x in outside_references(html) if x != "<svg>"]
    assert found == []
    return True


def _facts(box: Sandbox, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    rc, out = inspect(box, capsys, *local_args(box, "--json"))
    assert rc == 0
    return dict(json.loads(out)["hosts"][0]["facts"])


def test_html_report_escapes_collected_text(sandbox: Sandbox, capsys, tmp_path: Path) -> None:
    """A log line with markup shows as text: the report holds no tag the log wrote."""
    box = sandbox
    with open(box.install_dir / "logs" / "server.log", "a") as f:
        f.write("ERROR <script>alert(1)</script><img src=x>\n")
    report = tmp_path / "r.html"
    rc, _ = inspect(box, capsys, *local_args(box, "-o", str(report)))
    assert rc == 0
    html = report.read_text()
    assert "<script" not in html and "<img" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_an_advisory_for_the_installed_version_is_flagged(sandbox: Sandbox, capsys) -> None:
    """With --catalog, an advisory naming 7.0.4.1 is flagged on the host with its free fix, and is a warning."""
    box = sandbox
    set_advisories(box, [ADVISORY])
    rc, out = inspect(box, capsys, "--inventory", str(box.inventory), "--catalog", str(box.catalog), "--json")
    assert rc == 0
    (h,) = json.loads(out)["hosts"]
    (adv,) = h["advisories"]
    assert adv["id"] == "SMW-2026-0001" and adv["fix"]["version"] == "7.0.4.3"
    assert any(w["check"] == "advisory" and "SMW-2026-0001" in w["message"] for w in h["warnings"])
    rc, out = inspect(box, capsys, "--inventory", str(box.inventory), "--catalog", str(box.catalog))
    assert rc == 0 and "warning advisory: SMW-2026-0001 [high]" in out


def test_inventory_of_two_hosts_is_inspected_over_real_ssh(fleet, capsys) -> None:
    """Over the real sshd each host of the inventory reports its own version, running pid and open port."""
    f = fleet(2)
    capsys.readouterr()
    rc = upgrader(f.box, "inspect", "--inventory", str(f.box.inventory), "--json")
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["summary"]["inspected"] == 2
    by_name = {h["host"]: h for h in data["hosts"]}
    assert set(by_name) == {h.name for h in f.hosts}
    for fh in f.hosts:
        facts = by_name[fh.name]["facts"]
        assert by_name[fh.name]["address"] == "127.0.0.1"
        assert facts["version"] == "7.0.4.1" and facts["process"]["running"]
        assert facts["ports"][0]["port"] == fh.port and facts["ports"][0]["open"]
        assert facts["install_dir"] == str(fh.install_dir)
    rc = upgrader(f.box, "inspect", "--inventory", str(f.box.inventory), "--hosts", f.hosts[0].name)
    out = capsys.readouterr().out
    assert rc == 0 and f.hosts[0].name in out and f.hosts[1].name not in out


def test_missing_install_dir_is_bad_input_naming_it(sandbox: Sandbox, capsys) -> None:
    """A missing --install-dir: exit 2, the message names the directory, no traceback."""
    box = sandbox
    missing = box.root / "no-such-install"
    capsys.readouterr()
    assert upgrader(box, "inspect", "--install-dir", str(missing)) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err and "Traceback" not in err


def test_unreadable_inventory_is_bad_input_naming_the_file(sandbox: Sandbox, capsys, tmp_path: Path) -> None:
    """An inventory that is not there or not YAML: exit 2 naming the file."""
    box = sandbox
    bad = tmp_path / "inventory.yaml"
    bad.write_text("hosts: [unclosed\n")
    for inv in (bad, tmp_path / "absent.yaml"):
        capsys.readouterr()
        assert upgrader(box, "inspect", "--inventory", str(inv)) == 2
        err = capsys.readouterr().err
        assert str(inv) in err and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["-o", "report.txt"], "must end in .html or .json"),
    ([], "give either --inventory INV or --install-dir DIR"),
    (["--var", "novalue"], "expected NAME=VALUE"),
])
def test_bad_options_are_bad_input(sandbox: Sandbox, capsys, argv: list[str], words: str) -> None:
    """Wrong option combinations and values: exit 2 with a message that says what to give."""
    box = sandbox
    extra = ["--install-dir", str(box.install_dir)] if argv else []
    capsys.readouterr()
    assert upgrader(box, "inspect", *extra, *argv) == 2
    assert words in capsys.readouterr().err


def test_an_unknown_threshold_in_the_playbook_is_refused_naming_the_key(sandbox: Sandbox, capsys) -> None:
    """inspect.thresholds.disk_full is not a threshold: exit 2 naming the file and key, listing the known ones."""
    box = sandbox
    pb = box.root / "typo.yaml"
    pb.write_text((shipped_playbooks_dir() / "sample-middleware.yaml").read_text()
                  + "\ninspect:\n  thresholds:\n    disk_full: 90\n")
    capsys.readouterr()
    assert upgrader(box, "inspect", "--install-dir", str(box.install_dir), "--playbook", str(pb)) == 2
    err = capsys.readouterr().err
    assert str(pb) in err and "inspect.thresholds.disk_full" in err and "disk_used_pct" in err


@pytest.mark.parametrize("facts, thresholds, expected", [
    ({"disk": {"used_pct": 90.0}}, None, {"disk_used_pct"}),
    ({"disk": {"used_pct": 90.0}}, {"disk_used_pct": 95}, set()),
    ({"memory": {"total": 100, "available": 5}}, None, {"memory_available_pct"}),
    ({"sysctl": {"fs.file-max": "1000", "net.core.somaxconn": "128"}}, None, {"file_max", "somaxconn"}),
    ({"sysctl": {"fs.file-max": None}}, None, set()),
    ({"ulimits": {"agent": {"open_files": [1024, 4096]}}}, None, {"open_files"}),
    ({"ulimits": {"agent": {"open_files": [None, None]}}}, None, set()),
    ({"ulimits": {"agent": {"open_files": [70000, 70000]}, "product": {"open_files": [1024, 1024]}}}, None,
     {"open_files"}),
    ({"load": [9.0, 1, 1], "cpus": 2}, None, {"load_per_cpu"}),
    ({"logs": [{"path": "l", "errors": 3, "lines": 10, "samples": ["x ERROR"]}]}, None, {"log_errors", "log"}),
    ({"exists": False, "install_dir": "/x"}, None, {"install_dir"}),
])
def test_warnings_follow_the_thresholds(facts: dict[str, Any], thresholds: dict[str, float] | None,
                                        expected: set[str]) -> None:
    """Pure: each threshold warns on its side only, overrides win, unavailable and unlimited values never warn."""
    assert {w["check"] for w in warnings(facts, thresholds)} == expected
    assert set(metrics(facts)) == set(THRESHOLDS)


def test_load_network_and_patch_figures_of_the_sample_each_name_their_source(sandbox: Sandbox, capsys) -> None:
    """The running sample (not a JVM): RSS, threads, open files and CPU from /proc; no access log named, said so;
    every interface's rates over the sample from /proc/net/dev; the patch level from apt's own view."""
    box = sandbox
    rc, out = inspect(box, capsys, *local_args(box, "--json"))
    assert rc == 0
    f = json.loads(out)["hosts"][0]["facts"]
    pid = int((box.install_dir / "run" / "server.pid").read_text())
    perf = f["perf"]
    assert perf["rss"]["source"] == f"/proc/{pid}/status VmRSS" and perf["rss"]["value"] > 1 << 20
    assert perf["threads"]["value"] >= 1 and perf["open_files"]["value"] >= 3
    assert perf["cpu_pct"]["value"] >= 0 and perf["cpu_pct"]["sample_seconds"] >= 2
    assert "jvm" not in perf  # a Python process: no heap to ask a JDK about
    assert f["access"] == {"error": "the playbook names no access log (inspect.access_log)", "source": None}
    assert f["network"] and all(n["source"].startswith("/proc/net/dev over") and n["rx_bytes_per_s"] >= 0
                                and (n["speed_mbps"] or n["speed_error"]) for n in f["network"])
    assert f["patches"]["source"].startswith("apt list --upgradable") and f["patches"]["pending"] >= 0
    m = json.loads(out)["hosts"][0]["metrics"]
    assert m["heap_used_pct"] is None and m["share_5xx_pct"] is None and m["security_updates"] is not None


def test_each_warning_carries_advice_from_the_products_table_in_both_languages(sandbox: Sandbox, capsys) -> None:
    """Thresholds that trip on the sample (a playbook asking for more than any host has) get the setting, the file and
    the reason from the advice tables, filled in with the value, in English and Chinese; the zh table prints both."""
    box = sandbox
    pb = box.root / "demanding.yaml"
    pb.write_text((shipped_playbooks_dir() / "sample-middleware.yaml").read_text()
                  + "\ninspect:\n  thresholds:\n    file_max: 1.0e+18\n    open_files: 1.0e+18\n")
    rc, out = inspect(box, capsys, *local_args(box, "--playbook", str(pb), "--json"))
    assert rc == 0
    (h,) = json.loads(out)["hosts"]
    by = {w["check"]: w for w in h["warnings"]}
    file_max = by["file_max"]
    assert file_max["advice"]["en"]["file"] == "/etc/sysctl.d/90-middleware.conf"
    assert file_max["advice"]["en"]["setting"].startswith("fs.file-max = ")
    assert str(int(file_max["value"])) in file_max["advice"]["en"]["reason"]
    assert "整个系统只能打开" in file_max["advice"]["zh"]["reason"] and "低于" in file_max["message_zh"]
    assert "nofile 65536" in by["open_files"]["advice"]["en"]["setting"]
    rc, out = inspect(box, capsys, *local_args(box, "--playbook", str(pb), "--lang", "zh"))
    assert rc == 0 and "建议：fs.file-max = 1048576（然后执行 sysctl --system）（文件：/etc/sysctl.d/90-middleware.conf）" in out
    assert "fs.file-max（整个系统的文件句柄数）" in out


def test_every_advice_table_names_setting_file_and_reason_in_both_languages() -> None:
    """The shipped tables load (each entry: en and zh, each with setting, file and reason); the product's entry wins:
    Tomcat's heap advice names bin/setenv.sh, TongWeb's bin/external.vmoptions (FIELD-NOTES), the platform's the
    sysctl file."""
    from upgrader.customer.inspect_advice import table

    for product in ("tomcat", "tongweb", "sample-middleware"):
        entries = table(product)
        assert set(THRESHOLDS) <= set(entries), set(THRESHOLDS) - set(entries)
    assert table("tomcat")["heap_used_pct"]["en"]["file"].startswith("bin/setenv.sh")
    assert table("tongweb")["heap_used_pct"]["zh"]["file"] == "bin/external.vmoptions"
    assert table("tomcat")["connector_threads_pct"]["en"]["file"] == "conf/server.xml"
    assert table("sample-middleware")["somaxconn"]["en"]["file"] == "/etc/sysctl.d/90-middleware.conf"


_MEASURE = ("<script>document.body.setAttribute('data-charts', JSON.stringify("
            "Array.from(document.querySelectorAll('svg.chart')).map(function (s) {"
            "var r = s.getBoundingClientRect(); return {w: r.width, h: r.height, title: s.querySelector('title')"
            ".textContent, marks: Array.from(s.querySelectorAll('.mark')).filter(function (m) {"
            "var b = m.getBoundingClientRect(); return b.width > 0 || b.height > 0; }).length}; })));</script>")


def rendered_charts(report: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """Each chart of the report as headless Chromium lays it out: its size, title and the marks (bars, lines, points)
    drawn with a size. Measured on a copy with a measuring script added (the report itself has none)."""
    probe = tmp_path / f"measure-{report.name}"
    probe.write_text(report.read_text().replace("</body>", _MEASURE + "</body>"))
    dom = chromium(f"--user-data-dir={tmp_path / 'profile-measure'}", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-charts="([^"]*)"', dom.stdout)
    assert m, "the measuring script did not run"
    import html as _html

    return list(json.loads(_html.unescape(m.group(1))))


def screenshot(report: Path, tmp_path: Path, name: str, height: int = 2400) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    done = chromium(f"--user-data-dir={tmp_path / 'profile-shot'}", f"--window-size=1280,{height}",
                    f"--screenshot={shot}", report.as_uri())
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return shot


def test_fleet_report_opens_with_an_overview_worst_host_first_and_its_trend_chart_renders(fleet, capsys,
                                                                                          tmp_path: Path) -> None:
    """Three hosts over the real sshd, one stopped: the HTML report opens with hosts × checks, the stopped host first
    (its service cell warns), the others all ✔; the second inspection draws each host's trend, which Chromium lays
    out with its points."""
    f = fleet(3)
    f.hosts[1].stop()
    report = tmp_path / "fleet-zh.html"
    for _ in range(2):
        capsys.readouterr()
        assert upgrader(f.box, "inspect", "--inventory", str(f.box.inventory), "--lang", "zh", "-o", str(report)) == 0
    html = report.read_text()
    assert inline_only(html)
    page = Page(html)
    text = page.text
    rows = re.findall(r'<tr><td class="h"><a href="#host-([^"]+)">.*?</tr>', html)
    assert rows[0] == f.hosts[1].name and sorted(rows) == sorted(h.name for h in f.hosts)  # the stopped host leads
    stopped = re.search(rf'<a href="#host-{f.hosts[1].name}">.*?</tr>', html)
    assert stopped and '<td class="warn" title="产品没有运行' in stopped.group(0)  # its service cell
    assert text.index("总览") < text.index("告警 (") and "建议" in text
    charts = rendered_charts(report, tmp_path)
    trends = [c for c in charts if c["title"] == "历次巡检趋势"]
    assert len(trends) == 3 and all(c["w"] > 100 and c["h"] > 100 and c["marks"] >= 4 for c in trends)
    screenshot(report, tmp_path, "inspect-fleet-zh.png", 3000)
