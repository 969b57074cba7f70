"""`upgrader inspect` on a real Tomcat 10.1 (Debian's, run on OpenJDK): the JVM's figures from the JDK's own
jcmd/jstat, the process's from /proc, the access log's requests, 5xx share and response-time percentiles from the
pattern the server itself was given (%D added by the site), each figure with its source."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_audit_report import Page
from test_inspect import inline_only, rendered_charts, screenshot
from tomcat_fixtures import old_tomcat, tomcat_homes  # noqa: F401  (fixtures)

from tomcat import Tomcat
from upgrader.cli import main

BOOM = '<%@ page contentType="text/plain" %><% if (true) throw new IllegalStateException("boom"); %>\n'


def _get(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=30) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_a_running_tomcat_reports_jvm_process_and_access_log_figures_with_their_sources(
        old_tomcat: Tomcat, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    t = old_tomcat
    server_xml = t.home / "conf" / "server.xml"
    text = server_xml.read_text()
    stock = 'pattern="%h %l %u %t &quot;%r&quot; %s %b"'
    assert text.count(stock) == 1, "Debian's AccessLogValve pattern changed: adapt this test"
    server_xml.write_text(text.replace(stock, 'pattern="%h %l %u %t &quot;%r&quot; %s %b %D" buffered="false"'))
    (t.home / "webapps" / t.site.dir_app / "boom.jsp").write_text(BOOM)
    t.start()
    pid = t.pid()
    assert pid
    base = f"http://127.0.0.1:{t.site.http_port}"
    codes = [_get(f"{base}/{t.site.dir_app}/") for _ in range(6)] + [_get(f"{base}/{t.site.dir_app}/boom.jsp")]
    codes.append(_get(f"{base}/no-such-app/"))
    assert codes.count(500) == 1 and codes.count(404) == 1 and codes.count(200) == 6
    capsys.readouterr()
    rc = main(["--home", str(tmp_path / "home"), "inspect", "--install-dir", str(t.home), "--playbook", "tomcat",
               "--var", f"http_port={t.site.http_port}", "--var", f"shutdown_port={t.site.shutdown_port}", "--json"])
    assert rc == 0
    (h,) = json.loads(capsys.readouterr().out)["hosts"]
    f = h["facts"]
    perf = f["perf"]
    assert perf["rss"]["value"] > 16 << 20 and perf["rss"]["source"] == f"/proc/{pid}/status VmRSS"
    assert perf["threads"]["value"] > 10 and perf["open_files"]["value"] > 10
    assert perf["cpu_pct"]["value"] >= 0 and perf["cpu_pct"]["source"].startswith(f"/proc/{pid}/stat")
    assert perf["connector_threads"]["value"] >= 1  # http-nio-PORT-exec-N threads, by their names
    jvm = perf["jvm"]
    assert jvm["heap_max"] == {"value": 128 << 20, "source": "the JVM's command line (-Xmx)"}
    assert jvm["heap_used"]["source"] == f"jcmd {pid} GC.heap_info" and 0 < jvm["heap_used"]["value"] <= 128 << 20
    assert jvm["full_gc"]["source"] == f"jstat -gcutil {pid}" and jvm["full_gc"]["value"] >= 0
    assert 0 <= jvm["gc_time_pct"]["value"] < 100
    access = f["access"]
    assert "localhost_access_log." in access["source"] and "%D" in access["source"]
    hour = access["hour"]
    assert hour["requests"] >= 8 and hour["peak_per_min"] >= 1
    assert hour["share_5xx_pct"] == pytest.approx(100.0 * 1 / hour["requests"], abs=0.01)
    assert hour["response_ms"]["p50"] is not None and hour["response_ms"]["p99"] >= hour["response_ms"]["p50"]
    assert access["day"]["requests"] >= hour["requests"]
    assert f["settings"]["max_threads"] == "200"  # Tomcat's default: the Connector does not set it
    m = h["metrics"]
    assert m["heap_used_pct"] == pytest.approx(100.0 * jvm["heap_used"]["value"] / (128 << 20), abs=0.1)
    assert m["share_5xx_pct"] == hour["share_5xx_pct"] and m["p95_ms"] == hour["response_ms"]["p95"]
    (w,) = [w for w in h["warnings"] if w["check"] == "share_5xx_pct"]  # 1 in 8 answers was a 500
    assert w["advice"]["en"]["file"] == "the product's logs" and "5xx" in w["advice"]["zh"]["reason"]
    assert w["message_zh"].startswith("最近一小时 5xx 响应（占请求 %）：")
    assert re.match(r"/proc/net/dev over [\d.]+ s", f["network"][0]["source"]) if f["network"] else True
    # the HTML reports: the percentiles and requests-per-minute charts and the trend, laid out by Chromium
    for lang, title in (("en", "Response-time percentiles, last hour (ms)"), ("zh", "最近一小时响应时间分位数（毫秒）")):
        report = tmp_path / f"tomcat-{lang}.html"
        rc = main(["--home", str(tmp_path / "home"), "inspect", "--install-dir", str(t.home), "--playbook", "tomcat",
                   "--var", f"http_port={t.site.http_port}", "--var", f"shutdown_port={t.site.shutdown_port}",
                   "--lang", lang, "-o", str(report)])
        assert rc == 0 and inline_only(report.read_text())
        charts = {c["title"]: c for c in rendered_charts(report, tmp_path)}
        assert charts[title]["marks"] == 4 and charts[title]["w"] > 100  # p50, p90, p95, p99 drawn
        assert len(charts) == 3 and all(c["marks"] >= 1 and c["h"] > 100 for c in charts.values())
        text = Page(report.read_text()).text
        assert (f"jcmd {pid} GC.heap_info" in text) and ("JVM 堆已用" if lang == "zh" else "JVM heap used") in text
        screenshot(report, tmp_path, f"inspect-tomcat-{lang}.png", 3200)
