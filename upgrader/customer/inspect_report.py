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
table.form{width:100%;max-width:60em}table.form th{width:9em}.blank{display:inline-block;min-width:14em;
border-bottom:1px solid #555}.sign td{height:3.2em;min-width:12em}section.end{break-inside:avoid-page}
"""

_CHECKS = {"zh": {"install_dir": "安装目录", "version": "版本", "process": "产品进程", "port": "端口", "log": "日志",
                  "disk_used_pct": "磁盘使用率", "memory_available_pct": "可用内存", "load_per_cpu": "CPU 负载",
                  "file_max": "系统文件句柄", "open_files": "打开文件数上限", "processes": "进程数上限",
                  "somaxconn": "监听队列", "tcp_max_syn_backlog": "SYN 队列", "max_map_count": "内存映射数",
                  "log_errors": "日志错误", "advisory": "安全公告"}}


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


def _finding(message: Any, lang: str) -> str:
    text = translate(str(message), lang)
    return text if not text.startswith(UNTRANSLATED + "：") else str(message)


def _host(h: dict[str, Any], t: dict[str, str], lang: str = "en") -> str:
    f = h.get("facts") or {}
    name = f.get("hostname") or h["host"]
    addresses = list(f.get("addresses") or [])
    parts = [f'<section class="host"><h2>{_e(name)}'
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
                     f"<th>{_e(t['threshold'])}</th></tr>" + "".join(
                         f'<tr class="warn"><td>{_e(_check(w["check"], lang))}</td><td>{_e(_finding(w["message"], lang))}</td>'
                         f'<td>{_e(w["value"])}</td><td>{_e(w["threshold"])}</td></tr>' for w in h["warnings"])
                     + "</table>")
    else:
        parts.append(f'<p class="ok">{_e(t["no_warnings"])}</p>')
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
        [(c["path"], f"<code>{_e(c['sha256'])}</code> ({_e(c['size'])} B)") for c in configs])
        if configs else f"<p>{_e(t['none'])}</p>"))
    logs = f.get("logs") or []
    parts.append(f"<h3>{_e(t['logs'])}</h3>" + (_rows(
        [(log["path"], f'<span class="{"warn" if log["errors"] else "ok"}">{_e(log["errors"])} {_e(t["errors"])}'
                       f"</span> ({_e(t['in_last'])}: {_e(log['lines'])})"
                       + "".join(f"<br><code>{_e(s)}</code>" for s in log.get("samples") or []))
         for log in logs]) if logs else f"<p>{_e(t['none'])}</p>"))
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
    body = "".join(_host(h, t, lang) for h in data["hosts"])
    return (f'<!DOCTYPE html>\n<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
            f"<title>{_e(t['title'])}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_e(t['title'])}</h1><p>{_e(t['form'])}</p>{_head(data, t, lang)}"
            f"<div class=\"summary\">{summary}</div>{body}{_end(data, t)}"
            f"<footer>{_e(t['footer'])}</footer></body></html>\n")
