"""The inspection report as one self-contained HTML file (inline CSS; no scripts, fonts, images or
links to anything outside it), in English or Simplified Chinese, for a customer to send to support.

It renders the data ``upgrader inspect`` collected (``commands/inspect.py``): a summary, then per
host its warnings first, then the facts (system, kernel parameters, limits, product, ports,
configuration digests, logs) and advisories. Labels are translated; the collected data stays as
collected. Every value is untrusted text and is escaped. It computes and reads nothing.
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["render_html"]

_LABELS = {
    "en": {"title": "Health inspection report", "time": "Inspected at", "hosts": "Hosts", "inspected": "Inspected",
           "warnings": "Warnings", "no_warnings": "No warnings", "not_inspected": "Could not be inspected",
           "system": "System", "os": "Operating system", "kernel": "Kernel", "cpus": "CPUs", "load": "Load (1, 5, 15 min)",
           "memory": "Memory available", "disk": "Disk of the install dir", "product": "Product", "version": "Version",
           "install_dir": "Install dir", "process": "Process", "running": "running", "not_running": "not running",
           "ports": "Ports", "open": "open", "closed": "closed", "listen": "listening on",
           "kernel_params": "Kernel parameters", "unavailable": "unavailable", "limits": "Limits (soft / hard)",
           "open_files": "open files", "processes": "processes", "configs": "Configuration files (sha256)",
           "logs": "Logs", "errors": "error lines", "in_last": "in the last lines", "advisories": "Security advisories",
           "none": "none", "check": "Check", "message": "Finding", "threshold": "Threshold", "value": "Value",
           "agent": "agent", "product_process": "product process", "free": "free", "of": "of",
           "footer": "Made by upgrader inspect. Send this file to your support engineer."},
    "zh": {"title": "健康巡检报告", "time": "巡检时间", "hosts": "主机数", "inspected": "已巡检",
           "warnings": "告警", "no_warnings": "无告警", "not_inspected": "无法巡检",
           "system": "系统", "os": "操作系统", "kernel": "内核", "cpus": "CPU 数", "load": "负载（1、5、15 分钟）",
           "memory": "可用内存", "disk": "安装目录所在磁盘", "product": "产品", "version": "版本",
           "install_dir": "安装目录", "process": "进程", "running": "运行中", "not_running": "未运行",
           "ports": "端口", "open": "开放", "closed": "关闭", "listen": "监听地址",
           "kernel_params": "内核参数", "unavailable": "不可用", "limits": "资源限制（软 / 硬）",
           "open_files": "打开文件数", "processes": "进程数", "configs": "配置文件（sha256）",
           "logs": "日志", "errors": "错误行", "in_last": "在最后若干行中", "advisories": "安全公告",
           "none": "无", "check": "检查项", "message": "发现", "threshold": "阈值", "value": "值",
           "agent": "采集进程", "product_process": "产品进程", "free": "可用", "of": "共",
           "footer": "由 upgrader inspect 生成。请将此文件发送给技术支持工程师。"},
}

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
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _gib(n: Any) -> str:
    return f"{n / (1 << 30):.1f} GiB" if isinstance(n, (int, float)) else "?"


def _rows(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _host(h: dict[str, Any], t: dict[str, str]) -> str:
    parts = [f'<section class="host"><h2>{_e(h["host"])} <small>({_e(h.get("address"))})</small></h2>']
    if h.get("error"):
        parts.append(f'<p class="bad">{_e(t["not_inspected"])}: {_e(h["error"])}</p></section>')
        return "".join(parts)
    f, m = h["facts"], h["metrics"]
    parts.append(f"<h3>{_e(t['warnings'])} ({len(h['warnings'])})</h3>")
    if h["warnings"]:
        parts.append(f"<table><tr><th>{_e(t['check'])}</th><th>{_e(t['message'])}</th><th>{_e(t['value'])}</th>"
                     f"<th>{_e(t['threshold'])}</th></tr>" + "".join(
                         f'<tr class="warn"><td>{_e(w["check"])}</td><td>{_e(w["message"])}</td>'
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
          _e(" / ".join("unlimited" if x is None else str(x) for x in values)))
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
        f'<p class="bad">{_e(a["id"])} [{_e(a["severity"])}] {_e(a["title"])}: {_e(a["status"])} — '
        f'{_e(a["fix_note"])}</p>' for a in advisories) or f"<p>{_e(t['none'])}</p>"))
    parts.append("</section>")
    return "".join(parts)


def render_html(data: dict[str, Any], lang: str = "en") -> str:
    """The whole report; ``lang`` is ``en`` or ``zh``."""
    t = _LABELS["zh" if lang == "zh" else "en"]
    s = data["summary"]
    summary = _rows([(t["time"], _e(data["inspection"]["time"])), (t["hosts"], _e(s["hosts"])),
                     (t["inspected"], _e(s["inspected"])), (t["warnings"], _e(s["warnings"]))]
                    + ([(t["not_inspected"], f'<span class="bad">{_e(", ".join(s["unreachable"]))}</span>')]
                       if s["unreachable"] else []))
    body = "".join(_host(h, t) for h in data["hosts"])
    return (f'<!DOCTYPE html>\n<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
            f"<title>{_e(t['title'])}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_e(t['title'])}</h1><div class=\"summary\">{summary}</div>{body}"
            f"<footer>{_e(t['footer'])}</footer></body></html>\n")
