"""Health inspection of one host and one install: collect facts through the agent, judge them.

The half-yearly inspection (``upgrader inspect``), the guide's check before an upgrade and the
diagnostics bundle all use this module. Collection runs on the host (the agent's read-only
``inspect`` op: OS, kernel and its parameters, limits, disk, CPU, memory, the product's version,
process, ports, config digests, log error counts); the judging here is pure.

API::

    inspect_host(target, playbook, *, install_dir, name="local", variables=None, state_dir=None,
                 tail=0, config_text=False) -> dict
        target: an ``AgentClient`` or a ``Transport`` (an AgentClient is opened on it and closed).
        playbook: a loaded ``Playbook`` (its version source, pid file, ports, config and log paths,
        and its ``inspect:`` block). ``tail`` > 0 adds the last lines of each log; ``config_text``
        adds the text of the config files that the playbook's ``inspect.configs`` lists by name, and
        only of those (the default config set, the preserved config paths, gives digests only); the
        agent never reads out a file holding NUL bytes, a key store or key (``*.jks``, ``*.p12``,
        ``*.pfx``, ``*.keystore``, ``*.key``, ``*.pem``), a ``license*`` file or anything under a
        ``security/`` directory: those get ``text_withheld`` and their digest. Both are for the
        diagnostics bundle; redact before storing. Each config: {"path", "sha256", "size", "mtime"}.
        Returns {"host", "install_dir", "product", "playbook", "facts", "metrics", "warnings",
        "thresholds", "error": None, "vars_read"}: ``vars_read`` is what the install's own configuration
        said for the playbook's ``vars_from`` (``config_vars``; explicit ``variables`` win). Raises ``TransportError`` (exit 5) when the host cannot be
        reached or the agent fails; a missing install dir is a warning, not an error.

    warnings(facts, thresholds=None) -> list[dict]                          (pure)
        Each warning: {"check", "value", "threshold", "message"}. ``thresholds`` overrides
        ``THRESHOLDS``' defaults by name.

    metrics(facts) -> dict                                                  (pure)
    flag_advisories(report, catalog=..., policy=..., today=..., maintenance_until=None) -> report
        adds "advisories" (as ``upgrader available`` flags them) and one warning per advisory.

It changes nothing on any host, prints nothing and knows no HTML (see ``inspect_report``).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Mapping

from ..core.errors import TransportError
from ..fleet.transport.base import AgentClient, AgentFailure
from ..core.playbook import THRESHOLDS  # the playbook's inspect.thresholds override them

__all__ = ["THRESHOLDS", "inspect_host", "warnings", "metrics", "agent_request", "flag_advisories"]


def _int(text: Any) -> int | None:
    try:
        return int(str(text).split()[0])
    except (ValueError, IndexError):
        return None


def metrics(facts: dict[str, Any]) -> dict[str, Any]:
    """The numbers the thresholds apply to (None: unavailable on this host; a limit may be "unlimited")."""
    mem = facts.get("memory") or {}
    sysctl = facts.get("sysctl") or {}
    limits = (facts.get("ulimits") or {}).get("product") or (facts.get("ulimits") or {}).get("agent") or {}
    load, cpus = facts.get("load") or [], facts.get("cpus") or 0
    logs = facts.get("logs")

    def soft(key: str) -> float | str | None:
        value = (limits.get(key) or [None])[0]
        return "unlimited" if value is None and key in limits else value

    return {
        "disk_used_pct": (facts.get("disk") or {}).get("used_pct"),
        "memory_available_pct": round(100.0 * mem["available"] / mem["total"], 1)
        if mem.get("available") is not None and mem.get("total") else None,
        "load_per_cpu": round(load[0] / cpus, 2) if load and cpus else None,
        "file_max": _int(sysctl.get("fs.file-max")),
        "open_files": soft("open_files"),
        "processes": soft("processes"),
        "somaxconn": _int(sysctl.get("net.core.somaxconn")),
        "tcp_max_syn_backlog": _int(sysctl.get("net.ipv4.tcp_max_syn_backlog")),
        "max_map_count": _int(sysctl.get("vm.max_map_count")),
        "log_errors": sum(int(x.get("errors", 0)) for x in logs) if logs is not None else None,
        **load_metrics(facts),
    }


def _value(fig: Any) -> Any:
    return fig.get("value") if isinstance(fig, dict) else None


def load_metrics(facts: dict[str, Any]) -> dict[str, Any]:
    """The middleware's load, the network and the patch level (None: unavailable; the facts say why)."""
    perf = facts.get("perf") or {}
    jvm = perf.get("jvm") or {}
    used, limit = _value(jvm.get("heap_used")), _value(jvm.get("heap_max"))
    total = (facts.get("memory") or {}).get("total")
    threads, max_threads = _value(perf.get("connector_threads")), _int((facts.get("settings") or {}).get("max_threads"))
    hour = (facts.get("access") or {}).get("hour") or {}
    nets = facts.get("network") or []
    utils = [n["utilisation_pct"] for n in nets if isinstance(n.get("utilisation_pct"), (int, float))]
    return {
        "heap_used_pct": round(100.0 * used / limit, 1) if used is not None and limit else None,
        "heap_max_pct_ram": round(100.0 * limit / total, 1) if limit and total else None,
        "gc_time_pct": _value(jvm.get("gc_time_pct")),
        "connector_threads_pct": round(100.0 * threads / max_threads, 1) if threads and max_threads else None,
        "share_5xx_pct": hour.get("share_5xx_pct"),
        "p95_ms": (hour.get("response_ms") or {}).get("p95"),
        "network_util_pct": max(utils) if utils else None,
        "network_errors_per_s": round(sum(n.get("rx_errors_per_s", 0) + n.get("tx_errors_per_s", 0) for n in nets), 2)
        if nets else None,
        "security_updates": (facts.get("patches") or {}).get("security"),
    }


#: the thresholds' names in Chinese (the English is THRESHOLDS' own)
THRESHOLDS_ZH = {
    "disk_used_pct": "安装目录所在文件系统的使用率（%）", "memory_available_pct": "可用内存（占总量 %）",
    "load_per_cpu": "每 CPU 的 1 分钟平均负载", "file_max": "fs.file-max（整个系统的文件句柄数）",
    "open_files": "产品进程（否则为采集进程）的打开文件数限制（ulimit -n）",
    "processes": "产品进程（否则为采集进程）的进程数限制（ulimit -u）", "somaxconn": "net.core.somaxconn（监听队列）",
    "tcp_max_syn_backlog": "net.ipv4.tcp_max_syn_backlog", "max_map_count": "vm.max_map_count",
    "log_errors": "日志末尾匹配 ERROR/SEVERE/FATAL/Exception 的行数", "heap_used_pct": "JVM 堆使用率（占 -Xmx %）",
    "heap_max_pct_ram": "JVM -Xmx（占主机内存 %）", "gc_time_pct": "JVM 垃圾回收耗时（占运行时间 %）",
    "connector_threads_pct": "HTTP 连接器线程（占 maxThreads %）", "share_5xx_pct": "最近一小时 5xx 响应（占请求 %）",
    "p95_ms": "最近一小时 95 分位响应时间（毫秒）", "network_util_pct": "最繁忙网卡的链路利用率（%）",
    "network_errors_per_s": "网卡每秒错误数（收 + 发）", "security_updates": "待安装的操作系统安全更新数",
}


def warnings(facts: dict[str, Any], thresholds: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Everything an inspector should look at, one warning each, in a fixed order."""
    out: list[dict[str, Any]] = []
    if not facts.get("exists", True):
        return [{"check": "install_dir", "value": facts.get("install_dir"), "threshold": None,
                 "message": f"install dir {facts.get('install_dir')} does not exist",
                 "message_zh": f"安装目录 {facts.get('install_dir')} 不存在"}]
    if facts.get("version_error"):
        out.append({"check": "version", "value": None, "threshold": None,
                    "message": f"installed version unreadable: {facts['version_error']}",
                    "message_zh": "无法读取已安装的版本：版本来源是一条命令；主机有自己的信任根时，在被接受的运行之外只读取"
                                  "文件来源（该命令未运行）" if facts.get("version_refused") else
                                  f"无法读取已安装的版本：{facts['version_error']}"})
    process = facts.get("process") or {}
    if process.get("error"):  # the pid file was not read (a link that leads out, a FIFO): said as it is
        out.append({"check": "process", "value": None, "threshold": None,
                    "message": f"the product's process is unknown: {process['error']}",
                    "message_zh": f"无法确定产品进程：{process['error']}"})
    elif (process.get("pid_file") or process.get("found_by")) and not process.get("running"):
        out.append({"check": "process", "value": process.get("pid"), "threshold": None,
                    "message": f"the product is not running (pid file {process['pid_file']}: "
                               f"{process.get('pid') or 'absent'})" if process.get("pid_file") else
                               f"the product is not running (no {process['found_by']})",
                    "message_zh": f"产品未运行（pid 文件 {process['pid_file']}：{process.get('pid') or '不存在'}）"
                                  if process.get("pid_file") else f"产品未运行（未找到 {process['found_by']}）"})
    for port in facts.get("ports") or []:
        if not port.get("open"):
            out.append({"check": "port", "value": port["port"], "threshold": None,
                        "message": f"port {port['port']} is not open on 127.0.0.1",
                        "message_zh": f"端口 {port['port']} 在 127.0.0.1 上未开放"})
    values = metrics(facts)
    for name, (default, direction, what) in THRESHOLDS.items():
        limit = (thresholds or {}).get(name, default)
        value = values.get(name)
        if not isinstance(value, (int, float)):
            continue  # unavailable, or an unlimited limit
        if (direction == "max" and value > limit) or (direction == "min" and value < limit):
            shown = f"{value:g}"
            out.append({"check": name, "value": value, "threshold": limit,
                        "message": f"{what}: {shown} is {'above' if direction == 'max' else 'below'} {limit:g}",
                        "message_zh": f"{THRESHOLDS_ZH.get(name, what)}：{shown} "
                                      f"{'高于' if direction == 'max' else '低于'} {limit:g}"})
    for log in facts.get("logs") or []:
        if log.get("errors"):
            out.append({"check": "log", "value": log["errors"], "threshold": None,
                        "message": f"{log['path']}: {log['errors']} error line(s) in its last {log['lines']} lines; "
                                   f"last: {(log.get('samples') or [''])[-1][:160]}",
                        "message_zh": f"{log['path']}：最后 {log['lines']} 行中有 {log['errors']} 行错误；"
                                      f"最后一行：{(log.get('samples') or [''])[-1][:160]}"})
    for w in out:  # the wording the rest of the tool uses in Chinese, where it has one
        if w["check"] not in THRESHOLDS:
            known = _zh(w["message"])
            if known != w["message"]:
                w["message_zh"] = known
    for why in facts.get("paths_refused") or []:  # a config or log glob met a link that leads out: not followed
        out.append({"check": "path_refused", "value": None, "threshold": None,
                    "message": f"not inspected: {why}",
                    "message_zh": f"未检查（路径经过指向安装目录之外的符号链接，没有跟随）：{_zh(why)}"})
    for log in facts.get("logs") or []:  # after the wording loop: its Chinese is whole already
        if log.get("sparse"):  # a log is appended to, never seeked past: a hole is someone's doing
            out.append({"check": "log_sparse", "value": log.get("size"), "threshold": None,
                        "message": f"{log['path']}: {log.get('size')} bytes but mostly a hole (a sparse file): "
                                   f"only its last {log.get('bytes_read')} bytes were read",
                        "message_zh": f"{log['path']}：大小 {log.get('size')} 字节，但大部分是空洞（稀疏文件）："
                                      f"只读取了最后 {log.get('bytes_read')} 字节"})
    return out


def _ports(spec: dict[str, Any]) -> list[int]:
    found: list[int] = []
    candidates = list(spec["stop"].get("ports") or [])
    candidates += [p["port"] for p in spec["observe"]["probes"] if p["type"] == "tcp"]
    for value in candidates:
        try:
            port = int(value)
        except (TypeError, ValueError):
            continue
        if 0 < port < 65536 and port not in found:  # -1: a disabled port (Tomcat's <Server port="-1">)
            found.append(port)
    return found


def agent_request(playbook: Any, variables: Mapping[str, Any], install_dir: str) -> dict[str, Any]:
    """The agent ``inspect`` request for an install: what to read, from the rendered playbook."""
    spec = playbook.render({"install_dir": install_dir, "target_version": "unknown", "current_version": "unknown",
                            **variables})
    from ..core.host_paths import check_rendered

    check_rendered(spec, playbook=str(playbook.path), host=str(variables.get("host", "local")),
                   inventory="the inventory (or --var)")
    block = playbook.inspect or {}
    pid_file = spec["stop"].get("pid_file") or next(
        (p["pid_file"] for p in spec["observe"]["probes"] if p["type"] == "process" and p.get("pid_file")), None)
    logs = block.get("logs") or sorted({p["file"] for p in spec["observe"]["probes"] if p["type"] == "log"}) \
        or ["logs/*.log"]
    configs = block.get("configs") or [p["path"] for p in spec["preserve"] if p.get("kind") == "config"]
    request = {"version_source": spec["version"], "pid_file": pid_file, "ports": _ports(spec), "configs": configs,
               "logs": logs, "log_lines": block.get("log_lines", 2000)}
    if not pid_file and spec.get("process"):
        request["process"] = spec["process"]  # the server found by its command line
    if block.get("error_pattern"):
        request["error_pattern"] = block["error_pattern"]
    if block.get("access_log"):
        request["access_log"] = block["access_log"]
    request["sample_seconds"] = block.get("sample_seconds", 2)
    return request


def inspect_host(target: Any, playbook: Any, *, install_dir: str, name: str = "local",
                 variables: Mapping[str, Any] | None = None, state_dir: str | None = None, tail: int = 0,
                 config_text: bool = False) -> dict[str, Any]:
    """Inspect one install on one host (see the module docstring)."""
    from ..core.config_vars import merge_variables, read_config_vars

    agent = target if isinstance(target, AgentClient) else AgentClient(target)
    texts = list((playbook.inspect or {}).get("configs") or []) if config_text else []
    try:
        # the ports the install's own configuration names (vars_from); explicit variables win
        read = read_config_vars(agent, install_dir=install_dir, state_dir=state_dir,
                                vars_from=getattr(playbook, "vars_from", None) or {})
        values, vars_read = merge_variables({}, read, {"host": name, **(variables or {})})
        request = agent_request(playbook, values, install_dir)
        settings = (playbook.inspect or {}).get("settings") or {}
        declared = read_config_vars(agent, install_dir=install_dir, state_dir=state_dir, vars_from=settings) \
            if settings else {}
        pattern = (declared.get("access_log_format") or {}).get("value")
        if pattern and request.get("access_log"):  # the format the server itself was told to write
            request["access_log"] = {**request["access_log"], "format": str(pattern)}
        facts = agent.call("inspect", install_dir=install_dir, state_dir=state_dir, tail=tail,
                           config_text=texts, timeout=300, **request)
    except AgentFailure as e:
        from ..core.host_paths import refuse_agent_unsafe

        refuse_agent_unsafe(e, host=name)
        raise TransportError(f"the inspection failed on the host: {e.message}", host=name) from e
    finally:
        if agent is not target:
            agent.close()
    # the settings the inspection judges against (maxThreads...): what the configuration says, else the default
    defaults = (playbook.inspect or {}).get("setting_defaults") or {}
    facts["settings"] = {k: v.get("value", defaults.get(k)) for k, v in declared.items()}
    facts["settings_source"] = {k: v.get("file") for k, v in declared.items()}
    thresholds = {k: v[0] for k, v in THRESHOLDS.items()}
    thresholds.update((playbook.inspect or {}).get("thresholds") or {})
    from .inspect_advice import advise

    return advise({"host": name, "install_dir": install_dir, "product": playbook.product, "playbook": str(playbook.path),
            "facts": facts, "metrics": metrics(facts), "thresholds": thresholds,
            "warnings": warnings(facts, thresholds), "advisories": [], "error": None, "vars_read": vars_read})


_STATUS_ZH = {"affected": "受影响", "cannot tell": "无法判断"}


def _zh(text: Any) -> str:
    from ..core.reasons import UNTRANSLATED, translate

    shown = translate(str(text), "zh")
    return str(text) if shown.startswith(UNTRANSLATED) else shown


def flag_advisories(report: dict[str, Any], *, catalog: Any, policy: Any, today: _dt.date,
                    maintenance_until: _dt.date | None = None) -> dict[str, Any]:
    """Add the catalog's advisories that concern the installed version (as ``upgrader available`` does)."""
    from .available import host_offers

    version = (report.get("facts") or {}).get("version")
    if not version:
        return report
    offers = host_offers(host=report["host"], product=report["product"], current=str(version),
                         maintenance_until=maintenance_until, catalog=catalog, policy=policy, today=today)
    from .inspect_advice import advise

    report["advisories"] = offers["advisories"]
    for a in offers["advisories"]:
        report["warnings"].append({"check": "advisory", "value": a["id"], "threshold": None,
                                   "message": f"{a['id']} [{a['severity']}] {a['title']}: {a['status']} "
                                              f"({a['why']}); {a['fix_note']}",
                                   "message_zh": f"{a['id']} [{a['severity']}] {a['title']}："
                                                 f"{_STATUS_ZH.get(a['status'], a['status'])}（{_zh(a['why'])}）；"
                                                 f"{_zh(a['fix_note'])}"})
    return advise(report)
