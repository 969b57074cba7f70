"""The inspection report as one self-contained HTML file (inline CSS; no scripts, fonts, images or
links to anything outside it), in English or Simplified Chinese, for a customer to send to support.

It renders the data ``upgrader inspect`` collected (``upgrader.api.inspect``) as a 巡检 report form
one can file: the form's head (customer, system, inspector, inspection period, in the policy's time
zone), a summary, then per host its name and addresses, its findings first, then the facts (system,
kernel parameters, limits, product, ports, configuration digests, logs) and advisories, and at the end
a conclusion and a signature block. Labels and findings are in the chosen language (findings through
``upgrader.core.reasons``); collected data (versions, paths, log lines) stays as collected. A head field
nobody filled in is a blank line to write on. Every value is untrusted text and is escaped. It computes
and reads nothing.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from ..core.reasons import UNTRANSLATED, translate
from ..audit.labels import load_labels
from ..core.shown_time import DEFAULT_ZONE, shown_time
from .inspect_charts import bars, lines

__all__ = ["render_html"]

#: the report's labels, ``{en, zh}`` a label (inspect_labels.yaml)
_LABELS_FILE = Path(__file__).with_name("inspect_labels.yaml")
_LABELS = {lang: load_labels(_LABELS_FILE, lang) for lang in ("en", "zh")}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:2em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.4em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f3f3f3}
.warn{background:#fff4d6}.bad{background:#fde2e2;color:#900;font-weight:bold}.ok{color:#176f2c}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;word-break:break-all}
.summary td{font-size:1.05em}footer{margin-top:3em;color:#777;font-size:.85em}
section.host{page-break-before:auto;break-inside:avoid-page}
svg.chart{display:inline-block;margin:.3em 1em .3em 0;background:#fafafa;border:1px solid #e3e3e3}
table.overview td{text-align:center}table.overview td.h{text-align:left}.src{color:#666;font-size:.85em}
table.form{width:100%;max-width:60em}table.form th{width:9em}.blank{display:inline-block;min-width:14em;
border-bottom:1px solid #555}.sign td{height:3.2em;min-width:12em}section.end{break-inside:avoid-page}
"""

_CHECKS = {"zh": {"install_dir": "安装目录", "version": "版本", "process": "产品进程", "port": "端口", "log": "日志",
                  "disk_used_pct": "磁盘使用率", "memory_available_pct": "可用内存", "load_per_cpu": "CPU 负载",
                  "file_max": "系统文件句柄", "open_files": "打开文件数上限", "processes": "进程数上限",
                  "somaxconn": "监听队列", "tcp_max_syn_backlog": "SYN 队列", "max_map_count": "内存映射数",
                  "log_errors": "日志错误", "advisory": "安全公告",
                  "heap_used_pct": "JVM 堆使用率", "heap_max_pct_ram": "JVM 堆上限占内存", "gc_time_pct": "垃圾回收耗时",
                  "connector_threads_pct": "连接器线程", "share_5xx_pct": "5xx 比例", "p95_ms": "95 分位响应时间",
                  "network_util_pct": "链路利用率", "network_errors_per_s": "网卡错误", "security_updates": "安全更新"}}

#: the overview's columns: label key -> the checks it gathers
GROUPS = {"ov_service": ("install_dir", "version", "process", "port"),
          "ov_system": ("disk_used_pct", "memory_available_pct", "load_per_cpu"),
          "ov_kernel": ("file_max", "open_files", "processes", "somaxconn", "tcp_max_syn_backlog", "max_map_count"),
          "ov_jvm": ("heap_used_pct", "heap_max_pct_ram", "gc_time_pct"),
          "ov_traffic": ("connector_threads_pct", "share_5xx_pct", "p95_ms"),
          "ov_network": ("network_util_pct", "network_errors_per_s"),
          "ov_patches": ("security_updates", "advisory"),
          "ov_logs": ("log", "log_errors")}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _gib(n: Any) -> str:
    return f"{n / (1 << 30):.1f} GiB" if isinstance(n, (int, float)) else "?"


def _rows(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _blank(value: Any) -> str:
    return _e(value) if value else '<span class="blank">&nbsp;</span>'


def _check(check: str, lang: str) -> str:
    name = _CHECKS.get(lang, {}).get(check)
    return f"{name} ({check})" if name else check


def _message(w: dict[str, Any], lang: str) -> str:
    return str(w["message_zh"]) if lang == "zh" and w.get("message_zh") else _finding(w["message"], lang)


def _finding(message: Any, lang: str) -> str:
    text = translate(str(message), lang)
    return text if not text.startswith(UNTRANSLATED + "：") else str(message)


def _host(h: dict[str, Any], t: dict[str, str], lang: str = "en") -> str:
    f = h.get("facts") or {}
    name = f.get("hostname") or h["host"]
    addresses = list(f.get("addresses") or [])
    parts = [f'<section class="host" id="host-{_e(h["host"])}"><h2>{_e(name)}'
             + (f' <small>({_e(", ".join(addresses))})</small>' if addresses else "") + "</h2>"]
    ident = [(t["host_name"], _e(name)), (t["addresses"], _e(", ".join(addresses)) or _e(t["none"]))]
    if h.get("address") and h["address"] != "local":
        ident.append((t["inventory_address"], _e(f"{h['host']}: {h['address']}")))
    parts.append(_rows(ident))
    if h.get("error"):
        parts.append(f'<p class="bad">{_e(t["not_inspected"])}: {_e(_finding(h["error"], lang))}</p></section>')
        return "".join(parts)
    m = h["metrics"]
    parts.append(f"<h3>{_e(t['warnings'])} ({len(h['warnings'])})</h3>")
    if h["warnings"]:
        parts.append(f"<table><tr><th>{_e(t['check'])}</th><th>{_e(t['message'])}</th><th>{_e(t['value'])}</th>"
                     f"<th>{_e(t['threshold'])}</th><th>{_e(t['advice'])}</th></tr>" + "".join(
                         f'<tr class="warn"><td>{_e(_check(w["check"], lang))}</td><td>{_e(_message(w, lang))}</td>'
                         f'<td>{_e(w["value"])}</td><td>{_e(w["threshold"])}</td><td>{_advice(w, t, lang)}</td></tr>'
                         for w in h["warnings"]) + "</table>")
    else:
        parts.append(f'<p class="ok">{_e(t["no_warnings"])}</p>')
    parts.append(_changes(h, t, lang))
    parts.append(_perf(h, t, lang))
    os_ = f.get("os") or {}
    mem, disk, proc = f.get("memory") or {}, f.get("disk") or {}, f.get("process") or {}
    parts.append(f"<h3>{_e(t['system'])}</h3>" + _rows([
        (t["os"], _e(os_.get("pretty") or f"{os_.get('name')} {os_.get('version')}")),
        (t["kernel"], _e(f.get("kernel"))), (t["cpus"], _e(f.get("cpus"))),
        (t["load"], _e(", ".join(f"{x:.2f}" for x in f.get("load") or []))),
        (t["memory"], _e(f"{_gib(mem.get('available'))} {t['of']} {_gib(mem.get('total'))} "
                         f"({m.get('memory_available_pct')}%)")),
        (t["disk"], _e(f"{disk.get('path')}: {disk.get('used_pct')}%, {t['free']} {_gib(disk.get('free'))} "
                       f"{t['of']} {_gib(disk.get('total'))}"))]))
    ports = "<br>".join(
        f"{_e(p['port'])}: <span class=\"{'ok' if p['open'] else 'bad'}\">{_e(t['open'] if p['open'] else t['closed'])}"
        f"</span>" + (f" ({_e(t['listen'])} {_e(', '.join(p['listen']))})" if p.get("listen") else "")
        for p in f.get("ports") or []) or _e(t["none"])
    parts.append(f"<h3>{_e(t['product'])}</h3>" + _rows([
        (t["product"], _e(h.get("product"))), (t["install_dir"], f"<code>{_e(h.get('install_dir'))}</code>"),
        (t["version"], _e(f.get("version") or f.get("version_error"))),
        (t["process"], _e(f"{t['running']} (pid {proc.get('pid')})" if proc.get("running") else t["not_running"])),
        (t["ports"], ports)]))
    parts.append(f"<h3>{_e(t['kernel_params'])}</h3>" + _rows(
        [(k, _e(v) if v is not None else f'<span class="warn">{_e(t["unavailable"])}</span>')
         for k, v in (f.get("sysctl") or {}).items()]))
    limits = f.get("ulimits") or {}
    parts.append(f"<h3>{_e(t['limits'])}</h3>" + _rows(
        [(f"{t['agent'] if who == 'agent' else t['product_process']}: {t[key]}",
          _e(" / ".join(t["unlimited"] if x is None else str(x) for x in values)))
         for who, lim in limits.items() for key, values in lim.items()]))
    configs = f.get("configs") or []
    parts.append(f"<h3>{_e(t['configs'])}</h3>" + (_rows(
        [(c["path"], (f"<code>{_e(c['sha256'])}</code>" if c.get("sha256") else _e(c.get("withheld", "")))
          + f" ({_e(c.get('size'))} B)") for c in configs])
        if configs else f"<p>{_e(t['none'])}</p>"))
    logs = f.get("logs") or []
    parts.append(f"<h3>{_e(t['logs'])}</h3>" + (_rows(
        [(log["path"], f'<span class="{"warn" if log["errors"] else "ok"}">{_e(log["errors"])} {_e(t["errors"])}'
                       f"</span> ({_e(t['in_last'])}: {_e(log['lines'])})"
                       + "".join(f"<br><code>{_e(s)}</code>" for s in log.get("samples") or []))
         for log in logs]) if logs else f"<p>{_e(t['none'])}</p>"))
    parts.append(_network(f, t))
    advisories = h.get("advisories") or []
    parts.append(f"<h3>{_e(t['advisories'])}</h3>" + ("".join(
        f'<p class="bad">{_e(a["id"])} [{_e(a["severity"])}] {_e(a["title"])}: {_e(t.get(a["status"], a["status"]))} — '
        f'{_e(_finding(a["fix_note"], lang))}</p>' for a in advisories) or f"<p>{_e(t['none'])}</p>"))
    parts.append("</section>")
    return "".join(parts)


def _head(data: dict[str, Any], t: dict[str, str], lang: str) -> str:
    info = data["inspection"]
    form = info.get("form") or {}
    zone = str(form.get("timezone") or DEFAULT_ZONE)
    start, end = info.get("started") or info.get("time"), info.get("time")
    first, last = shown_time(start, zone, lang), shown_time(end, zone, lang)
    period = form.get("period") or (first if first == last else f"{first} {t['period_to']} {last}")
    return ('<table class="form">'
            f"<tr><th>{_e(t['customer'])}</th><td>{_blank(form.get('customer'))}</td>"
            f"<th>{_e(t['system_name'])}</th><td>{_blank(form.get('system'))}</td></tr>"
            f"<tr><th>{_e(t['inspector'])}</th><td>{_blank(form.get('inspector'))}</td>"
            f"<th>{_e(t['period'])}</th><td>{_e(period)}</td></tr></table>")


def _end(data: dict[str, Any], t: dict[str, str]) -> str:
    s = data["summary"]
    lines = [t["concl_warn"].format(n=s["inspected"], w=s["warnings"]) if s["warnings"]
             else t["concl_ok"].format(n=s["inspected"])]
    if s["unreachable"]:
        lines.append(t["concl_missing"].format(hosts=", ".join(s["unreachable"])))
    remarks = (data["inspection"].get("form") or {}).get("remarks")
    sign = (f'<table class="sign"><tr><th>{_e(t["sign_inspector"])}</th><td></td><th>{_e(t["date"])}</th><td></td></tr>'
            f'<tr><th>{_e(t["sign_customer"])}</th><td></td><th>{_e(t["date"])}</th><td></td></tr></table>')
    return (f'<section class="end"><h2>{_e(t["conclusion"])}</h2>' + "".join(f"<p>{_e(x)}</p>" for x in lines)
            + (f"<p>{_e(t['remarks'])}: {_e(remarks)}</p>" if remarks else "")
            + f'<h2>{_e(t["signatures"])}</h2>{sign}</section>')


def render_html(data: dict[str, Any], lang: str = "en") -> str:
    """The whole report; ``lang`` is ``en`` or ``zh``."""
    lang = "zh" if lang == "zh" else "en"
    t = _LABELS[lang]
    s = data["summary"]
    summary = _rows([(t["hosts"], _e(s["hosts"])),
                     (t["inspected"], _e(s["inspected"])), (t["warnings"], _e(s["warnings"]))]
                    + ([(t["not_inspected"], f'<span class="bad">{_e(", ".join(s["unreachable"]))}</span>')]
                       if s["unreachable"] else []))
    body = _overview(data["hosts"], t, lang) + "".join(_host(h, t, lang) for h in data["hosts"])
    return (f'<!DOCTYPE html>\n<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
            f"<title>{_e(t['title'])}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_e(t['title'])}</h1><p>{_e(t['form'])}</p>{_reviewed(data, t, lang)}{_head(data, t, lang)}"
            f"<div class=\"summary\">{summary}</div>{body}{_end(data, t)}"
            f"<footer>{_e(t['footer'])}</footer></body></html>\n")


#: the agent's reasons for a figure it could not read, in Chinese (the English is the agent's own)
_WHY_ZH = (
    (r"the playbook names no access log \(inspect\.access_log\)", "剧本未指定访问日志（inspect.access_log）"),
    (r"the product's process is not running \(or unknown\): no load figures", "产品进程未运行（或未知）：没有负载指标"),
    (r"no access log matches (.*) in the install dir", "安装目录中没有与 {0} 匹配的访问日志"),
    (r"the format (.*) has no %D or %T: no response times", "日志格式 {0} 不含 %D 或 %T：没有响应时间"),
    (r"no -Xmx on the JVM's command line.*", "JVM 命令行中没有 -Xmx：适用 JVM 的默认值（物理内存的四分之一）"),
    (r"the JVM runs as uid (\d+) and the agent as uid (\d+).*",
     "JVM 以 uid {0} 运行，采集进程以 uid {1} 运行：jcmd 只能以 JVM 自己的账户连接（请以 root 或该账户运行采集进程）"),
    (r"the JVM runs as root and (.*?) could be changed by an account other than root \((.*)\): .*",
     "JVM 以 root 运行，而 {0} 可被 root 以外的账户修改（{1}）：采集进程不会以 root 运行这样的 JDK 工具"),
    (r"no jcmd next to the JVM (.*?) nor on PATH.*", "JVM（{0}）旁及 PATH 中都没有 jcmd：只安装了 JRE，没有 JDK 工具"),
    (r"(jcmd GC\.heap_info|jstat -gcutil) failed: (.*)", "{0} 执行失败：{1}"),
    (r"neither apt nor dnf on this host", "本机既没有 apt 也没有 dnf"),
    (r"the link speed is not known.*", "链路速率未知（虚拟网卡或未连接）"),
)


def _why(text: Any, lang: str) -> str:
    import re

    if lang == "zh":
        for pattern, template in _WHY_ZH:
            m = re.fullmatch(pattern, str(text), re.S)
            if m:
                return template.format(*m.groups())
    return _finding(text, lang)


def _advice(w: dict[str, Any], t: dict[str, str], lang: str) -> str:
    advice = (w.get("advice") or {}).get(lang) or (w.get("advice") or {}).get("en")
    if not advice:
        return ""
    return (f"<b>{_e(t['setting'])}</b>: {_e(advice['setting'])}<br><b>{_e(t['file'])}</b>: "
            f"<code>{_e(advice['file'])}</code><br><b>{_e(t['reason'])}</b>: {_e(advice['reason'])}")


def _changes(h: dict[str, Any], t: dict[str, str], lang: str) -> str:
    if "changes" not in h:
        return ""
    head = f"<h3>{_e(t['changes'])}</h3>"
    previous = h.get("previous")
    if not previous:
        return head + f"<p>{_e(t['first_inspection'])}</p>" + _trend(h, t)
    zone = str(h.get("_zone") or DEFAULT_ZONE)
    head += (f'<p class="src">{_e(t["compared_with"])} '
             f'{_e(shown_time(previous["time"], zone, lang) if previous.get("time") else "?")}</p>')
    if not h["changes"]:
        return head + f'<p class="ok">{_e(t["no_changes"])}</p>' + _trend(h, t)
    rows = "".join(
        f'<tr class="warn"><td>{_e(c["area"])}</td><td><code>{_e(c["name"])}</code></td><td>{_e(c["previous"])}</td>'
        f'<td>{_e(c["new"])}</td><td>{_e(c["message_zh"] if lang == "zh" else c["message"])}</td></tr>'
        for c in h["changes"])
    return (head + f"<table><tr><th>{_e(t['area'])}</th><th>{_e(t['item'])}</th><th>{_e(t['previous'])}</th>"
            f"<th>{_e(t['new'])}</th><th>{_e(t['message'])}</th></tr>{rows}</table>" + _trend(h, t))


def _trend(h: dict[str, Any], t: dict[str, str]) -> str:
    points = h.get("trend") or []
    if not points:
        return ""
    labels = [str(p.get("time") or "")[:10] for p in points]
    series = {t["disk"] + " %": [p.get("disk_used_pct") for p in points],
              t["memory"] + " %": [p.get("memory_available_pct") for p in points]}
    if any(isinstance(p.get("heap_used_pct"), (int, float)) for p in points):
        series[t["heap_used"] + " %"] = [p.get("heap_used_pct") for p in points]
    return f"<div>{lines(series, labels, t['trend_chart'])}</div>"


def _fig(fig: Any, t: dict[str, str], fmt: Any = None) -> tuple[str, str]:
    """(the value, its source) of one figure; an unreadable figure shows why."""
    if not isinstance(fig, dict):
        return _e(t["not_measured"]), ""
    value = fig.get("value")
    if value is None:
        return f'<span class="warn">{_e(t["unavailable"])}: {_e(_why(fig.get("error"), t["lang"]))}</span>', \
            _e(fig.get("source"))
    return _e(fmt(value) if fmt else value), _e(fig.get("source"))


def _mib(n: Any) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def _perf(h: dict[str, Any], t: dict[str, str], lang: str) -> str:
    f = h.get("facts") or {}
    perf = f.get("perf")
    if perf is None:
        return ""
    out = [f"<h3>{_e(t['perf'])}</h3>"]
    if perf.get("error"):
        out.append(f'<p class="warn">{_e(_why(perf["error"], lang))}</p>')
    else:
        rows = [("rss", perf.get("rss"), _mib), ("threads", perf.get("threads"), None),
                ("proc_open_files", perf.get("open_files"), None), ("cpu_pct", perf.get("cpu_pct"), None),
                ("connector_threads", perf.get("connector_threads"), None)]
        jvm = perf.get("jvm") or {}
        rows += [(k, jvm.get(k), _mib if k.startswith("heap") else None) for k in
                 ("heap_used", "heap_committed", "heap_max", "old_gen_pct", "young_gc", "full_gc", "gc_seconds",
                  "gc_time_pct") if k in jvm]
        body = []
        for key, fig, fmt in rows:
            value, source = _fig(fig, t, fmt)
            body.append(f"<tr><th>{_e(t[key])}</th><td>{value}</td><td class=\"src\">{source}</td></tr>")
        if (f.get("settings") or {}).get("max_threads"):
            body.append(f"<tr><th>{_e(t['max_threads'])}</th><td>{_e(f['settings']['max_threads'])}</td>"
                        f"<td class=\"src\">{_e((f.get('settings_source') or {}).get('max_threads'))}</td></tr>")
        out.append(f"<table><tr><th>{_e(t['figure'])}</th><th>{_e(t['value'])}</th><th>{_e(t['source'])}</th></tr>"
                   + "".join(body) + "</table>")
    access = f.get("access") or {}
    out.append(f"<h3>{_e(t['access'])}</h3>")
    if access.get("error"):
        out.append(f'<p class="warn">{_e(t["unavailable"])}: {_e(_why(access["error"], lang))}</p>')
        return "".join(out)
    hour, day = access.get("hour") or {}, access.get("day") or {}

    def resp(w: dict[str, Any]) -> str:
        r = w.get("response_ms")
        if not r:
            return f'<span class="warn">{_e(t["unavailable"])}: {_e(_why(w.get("response_error"), lang))}</span>'
        return _e(", ".join(f"{k} {v}" for k, v in r.items()))
    rows2 = [(t["requests"], "requests"), (t["requests_per_min"], "requests_per_min"),
             (t["peak_per_min"], "peak_per_min"), (t["share_5xx"], "share_5xx_pct")]
    out.append(f"<table><tr><th></th><th>{_e(t['last_hour'])}</th><th>{_e(t['last_day'])}</th></tr>"
               + "".join(f"<tr><th>{_e(label)}</th><td>{_e(hour.get(k))}</td><td>{_e(day.get(k))}</td></tr>"
                         for label, k in rows2)
               + f"<tr><th>{_e(t['response_ms'])}</th><td>{resp(hour)}</td><td>{resp(day)}</td></tr></table>"
               + f'<p class="src">{_e(t["source"])}: {_e(access.get("source"))}</p>')
    charts = []
    if hour.get("response_ms"):
        charts.append(bars([(k, v) for k, v in hour["response_ms"].items()], "ms", t["percentiles_chart"]))
    per_minute = hour.get("per_minute") or []
    if per_minute:
        start = int(per_minute[-1][0]) - 59
        counts = dict((int(m), n) for m, n in per_minute)
        charts.append(lines({t["requests_per_min"]: [counts.get(start + i, 0) for i in range(60)]},
                            ["-60 min"] + [""] * 58 + ["0"], t["per_minute_chart"]))
    out.append("<div>" + "".join(charts) + "</div>")
    return "".join(out)


def _network(f: dict[str, Any], t: dict[str, str]) -> str:
    out = []
    nets = f.get("network")
    if nets is not None:
        rows = "".join(
            f"<tr><td>{_e(n['interface'])}</td><td>{_e(n['rx_bytes_per_s'])}</td><td>{_e(n['tx_bytes_per_s'])}</td>"
            f"<td>{_e(round(n['rx_errors_per_s'] + n['tx_errors_per_s'], 2))}</td>"
            f"<td>{_e(n['speed_mbps']) if n.get('speed_mbps') else _e(t['unavailable'])}</td>"
            f"<td>{_e(n.get('utilisation_pct'))}</td></tr>" for n in nets)
        out.append(f"<h3>{_e(t['network'])}</h3><table><tr><th>{_e(t['interface'])}</th><th>{_e(t['rx'])}</th>"
                   f"<th>{_e(t['tx'])}</th><th>{_e(t['net_errors'])}</th><th>{_e(t['speed'])}</th>"
                   f"<th>{_e(t['util'])}</th></tr>{rows}</table>"
                   + (f'<p class="src">{_e(t["source"])}: {_e(nets[0]["source"].split(";")[0])}; /sys/class/net/*/speed</p>'
                      if nets else ""))
    patches = f.get("patches")
    if patches is not None:
        out.append(f"<h3>{_e(t['patches'])}</h3>" + _rows([
            (t["pending"], _e(patches.get("pending")) if patches.get("pending") is not None
             else f'<span class="warn">{_e(t["unavailable"])}: {_e(_why(patches.get("error"), t["lang"]))}</span>'),
            (t["security"], _e(patches.get("security")) + "".join(
                f"<br><code>{_e(x)}</code>" for x in (patches.get("security_packages") or [])[:10])),
            (t["source"], f'<span class="src">{_e(patches.get("source"))}</span>')]))
    return "".join(out)


def _overview(hosts: list[dict[str, Any]], t: dict[str, str], lang: str) -> str:
    """One screen: a row a host (worst first: not inspected, then most warnings), a column a group of checks."""
    def score(h: dict[str, Any]) -> tuple[int, int, str]:
        return (0 if h.get("error") else 1, -len(h.get("warnings") or []), str(h.get("host")))
    head = "".join(f"<th>{_e(t[g])}</th>" for g in GROUPS) + f"<th>{_e(t['ov_changes'])}</th>"
    rows = []
    for h in sorted(hosts, key=score):
        name = (h.get("facts") or {}).get("hostname") if h.get("host") == "local" else h.get("host")
        if h.get("error"):
            rows.append(f'<tr><td class="h">{_e(name or h.get("host"))}</td><td class="bad" colspan="{len(GROUPS) + 1}">'
                        f'{_e(t["not_inspected"])}: {_e(_finding(h["error"], lang))}</td></tr>')
            continue
        cells = []
        for checks in GROUPS.values():
            found = [w for w in h.get("warnings") or [] if w["check"] in checks]
            cells.append(f'<td class="warn" title="{_e("; ".join(_message(w, lang) for w in found))}">⚠ {len(found)}</td>'
                         if found else f'<td class="ok">✔</td>')
        n = len(h.get("changes") or [])
        cells.append(f'<td class="warn">{n}</td>' if n else '<td class="ok">–</td>')
        rows.append(f'<tr><td class="h"><a href="#host-{_e(h.get("host"))}">{_e(name or h.get("host"))}</a></td>'
                    + "".join(cells) + "</tr>")
    return (f'<h2>{_e(t["overview"])}</h2><table class="overview"><tr><th>{_e(t["host_name"])}</th>{head}</tr>'
            + "".join(rows) + "</table>")


def _reviewed(data: dict[str, Any], t: dict[str, str], lang: str) -> str:
    reviewed = data["inspection"].get("reviewed")
    if not reviewed:
        return ""
    zone = str((data["inspection"].get("form") or {}).get("timezone") or DEFAULT_ZONE)
    return (f'<p class="ok">{_e(t["reviewed"])}: {_e(shown_time(reviewed["time"], zone, lang))} '
            f'({_e(Path(str(reviewed["bundle"])).name)})</p>')
