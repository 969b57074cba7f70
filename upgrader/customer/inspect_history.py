"""Inspections kept over time, and what changed between two of them.

Each inspection of a host is kept as ``HOME/inspections/HOST/TIME.json`` (``TIME``: ``20261203T163228Z``), the
host's report as ``upgrader inspect --json`` prints it, redacted. The next inspection of that host is compared with
the newest one kept (or with ``--compare PREVIOUS.json``: a kept file, or a whole ``-o report.json``), and the
report shows the changes with the previous value beside the new: kernel parameters, limits, configuration digests
(which files), the product's version, error lines, disk and memory, and the middleware's load.

API::

    keep(home, report, when) -> Path                 the host's report written under HOME/inspections/HOST/
    kept(home, host) -> list[Path]                   oldest first (folder "inspections/received": bundles reviewed)
    load_previous(path, host) -> dict | None         a kept file, or the host's entry of a whole report (InputError)
    changes(previous, new) -> list[dict]             pure: {"area", "name", "previous", "new", "message", "message_zh"}
    trend(home, host, new, limit=12) -> list[dict]   pure apart from reading the kept files: one point an inspection
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Any

from ..core.errors import InputError

__all__ = ["keep", "kept", "load_previous", "changes", "trend", "host_key", "TREND"]

#: the figures a trend follows across inspections (metrics names)
TREND = ("disk_used_pct", "memory_available_pct", "log_errors", "heap_used_pct", "p95_ms", "share_5xx_pct")


def host_key(report: dict[str, Any]) -> str:
    """The folder name of a host: the inventory's name, or this machine's own name for a local inspection."""
    name = report.get("host") or "local"
    if name == "local":
        name = (report.get("facts") or {}).get("hostname") or "local"
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(name))[:100] or "local"


def _stamp(when: str) -> str:
    t = _dt.datetime.fromisoformat(when)
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc)
    return t.strftime("%Y%m%dT%H%M%SZ")


def kept(home: Path, host: str, folder: str = "inspections") -> list[Path]:
    d = Path(home) / folder / host
    return sorted(d.glob("*.json")) if d.is_dir() else []


def keep(home: Path, report: dict[str, Any], when: str, *, folder: str = "inspections") -> Path:
    from ..audit.redaction import redact_value
    from ..audit.report import _write_atomically

    d = Path(home) / folder / host_key(report)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{_stamp(when)}.json"
    data = {"time": when, "host": redact_value(report)}
    _write_atomically(path, json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False, default=str) + "\n")
    return path


def load_previous(path: Path, host: str | None) -> dict[str, Any] | None:
    """The host's report of a kept file ({"time", "host"}) or of a whole inspection ({"inspection", "hosts"});
    None when the file has no entry for the host."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("--compare: the file does not exist", path=str(path),
                         hint="give a kept inspection (HOME/inspections/HOST/TIME.json) or a report written with "
                              "-o report.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"--compare: not an inspection in JSON ({e})", path=str(path),
                         hint="give a file written by upgrader inspect (-o report.json, or a kept one)") from None
    if isinstance(data, dict) and isinstance(data.get("host"), dict) and data["host"].get("facts") is not None:
        report = dict(data["host"])
        report.setdefault("time", data.get("time"))
        return report
    if isinstance(data, dict) and isinstance(data.get("hosts"), list):
        hosts = [h for h in data["hosts"] if isinstance(h, dict) and not h.get("error")]
        when = (data.get("inspection") or {}).get("time")
        for h in hosts:
            if host is None or host_key(h) == host or h.get("host") == host or len(hosts) == 1:
                return {**h, "time": when}
        return None
    raise InputError("--compare: not an inspection (no host report in it)", path=str(path),
                     hint="give a file written by upgrader inspect (-o report.json, or a kept one)")


def _limits(facts: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for who, lim in (facts.get("ulimits") or {}).items():
        for key, values in (lim or {}).items():
            out[f"{who}.{key}"] = " / ".join("unlimited" if v is None else str(v) for v in values or [])
    return out


def _errors(report: dict[str, Any]) -> tuple[str, float] | None:
    """Error lines per day (those of the last 24 hours, by the lines' own times) when every log's lines carry times,
    else the error lines counted in the logs' last lines (the same number of lines each time)."""
    logs = (report.get("facts") or {}).get("logs")
    if logs is None:
        return None
    if logs and all(isinstance(x.get("errors_last_day"), int) for x in logs):
        return "per_day", float(sum(x["errors_last_day"] for x in logs))
    return "last_lines", float(sum(int(x.get("errors", 0)) for x in logs))


_AREA_ZH = {"kernel": "内核参数", "limits": "资源限制", "config": "配置文件", "version": "版本", "errors": "日志错误",
            "disk": "磁盘", "memory": "内存", "load": "中间件负载"}


def _change(area: str, name: str, previous: Any, new: Any, en: str, zh: str) -> dict[str, Any]:
    return {"area": area, "name": name, "previous": previous, "new": new, "message": en, "message_zh": zh}


def changes(previous: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """What changed from ``previous`` to ``new`` (host reports), in a fixed order; [] without a previous one."""
    if not previous:
        return []
    pf, nf = previous.get("facts") or {}, new.get("facts") or {}
    out: list[dict[str, Any]] = []
    for k in sorted(set(pf.get("sysctl") or {}) | set(nf.get("sysctl") or {})):
        a, b = (pf.get("sysctl") or {}).get(k), (nf.get("sysctl") or {}).get(k)
        if a != b:
            out.append(_change("kernel", k, a, b, f"kernel parameter {k} changed: {a} -> {b}",
                               f"内核参数 {k} 已变化：{a} -> {b}"))
    pl, nl = _limits(pf), _limits(nf)
    for k in sorted(set(pl) | set(nl)):
        if pl.get(k) != nl.get(k):
            out.append(_change("limits", k, pl.get(k), nl.get(k), f"limit {k} changed: {pl.get(k)} -> {nl.get(k)}",
                               f"资源限制 {k} 已变化：{pl.get(k)} -> {nl.get(k)}"))
    pc = {c["path"]: c.get("sha256") for c in pf.get("configs") or []}
    nc = {c["path"]: c.get("sha256") for c in nf.get("configs") or []}
    for path in sorted(set(pc) | set(nc)):
        if path not in nc:
            out.append(_change("config", path, pc[path], None, f"configuration file {path} is gone",
                               f"配置文件 {path} 已不存在"))
        elif path not in pc:
            out.append(_change("config", path, None, nc[path], f"configuration file {path} is new",
                               f"新增配置文件 {path}"))
        elif pc[path] != nc[path]:
            out.append(_change("config", path, pc[path], nc[path], f"configuration file {path} was edited "
                               f"(sha256 {str(pc[path])[:12]} -> {str(nc[path])[:12]})",
                               f"配置文件 {path} 已被修改（sha256 {str(pc[path])[:12]} -> {str(nc[path])[:12]}）"))
    if pf.get("version") != nf.get("version"):
        out.append(_change("version", "version", pf.get("version"), nf.get("version"),
                           f"product version {pf.get('version')} -> {nf.get('version')}",
                           f"产品版本 {pf.get('version')} -> {nf.get('version')}"))
    ea, eb = _errors(previous), _errors(new)
    if ea is not None and eb is not None and ea != eb:
        if ea[0] == eb[0] == "per_day":
            out.append(_change("errors", "log_errors_per_day", ea[1], eb[1],
                               f"error lines per day in the logs: {ea[1]:g} -> {eb[1]:g}",
                               f"日志每天的错误行：{ea[1]:g} -> {eb[1]:g}"))
        else:
            out.append(_change("errors", "log_errors", ea[1], eb[1],
                               f"error lines in the logs' last lines: {ea[1]:g} -> {eb[1]:g}",
                               f"日志末尾的错误行：{ea[1]:g} -> {eb[1]:g}"))
    pm, nm = previous.get("metrics") or {}, new.get("metrics") or {}
    for key, area, en, zh, step in (("disk_used_pct", "disk", "disk use", "磁盘使用率", 1.0),
                                    ("memory_available_pct", "memory", "memory available", "可用内存", 5.0),
                                    ("heap_used_pct", "load", "JVM heap used", "JVM 堆使用率", 10.0),
                                    ("p95_ms", "load", "95th percentile response time (ms)", "95 分位响应时间（毫秒）", 0),
                                    ("share_5xx_pct", "load", "5xx share", "5xx 比例", 0.5)):
        a, b = pm.get(key), nm.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(b - a) > step and a != b:
            unit = "%" if key.endswith("pct") else ""
            out.append(_change(area, key, a, b, f"{en}: {a:g}{unit} -> {b:g}{unit}", f"{zh}：{a:g}{unit} -> {b:g}{unit}"))
    return out


def trend(home: Path, host: str, new: dict[str, Any], limit: int = 12, folder: str = "inspections"
          ) -> list[dict[str, Any]]:
    """The TREND figures of the kept inspections of ``host`` (oldest first, the last ``limit``), then ``new``."""
    points = []
    for path in kept(home, host, folder)[-limit:]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            m = (data.get("host") or {}).get("metrics") or {}
        except (OSError, ValueError, AttributeError):
            continue
        points.append({"time": data.get("time"), **{k: m.get(k) for k in TREND}})
    points.append({"time": new.get("time"), **{k: (new.get("metrics") or {}).get(k) for k in TREND}})
    return points
