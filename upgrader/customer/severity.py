"""Incident severity of a run that did not end well, by the support contract's four levels. Pure.

The level follows the customer's state *after* the run, not the failure of the new version
(PRODUCT.md, "Severity levels"):

1 一级 非常严重: the service is down, cannot start, keeps crashing, or cannot reach its data source
  (a rollback that failed after stop, a host lost after stop);
2 二级 严重: it serves, but core functions are badly degraded or unstable (after a failed rollback
  the old version answers, but only some of its health checks pass, or it fails again in the window);
3 三级 一般: the upgrade failed and was rolled back and the old version is healthy (a workaround
  exists: stay on it), or a function is partly lost but the service runs;
4 四级 轻微: a minor loss or a warning only (the upgrade did not happen and the service was never
  touched: a failed preflight or backup, a lock, an unreachable host before stop).

Committed, restored on request, not started, refused and stale hosts are no incident (None), and
neither is a host the operator cancelled (``is_cancelled``: left unchanged, or stopped and rolled
back to a healthy old version). A cancelled host whose rollback failed is an incident like any other.
The run's level is the most severe (lowest) of its hosts. ``LEVELS`` holds the contract's names,
response levels and the three response times; ``describe`` gives the lines people read, in English
and Chinese. This module reads no file and knows no time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..core.engine import CANCELLED

__all__ = ["RULES", "RULES_ZH", "LEVELS", "Level", "classify_host", "classify_run", "is_cancelled", "describe", "LEVEL_NAMES"]


@dataclass(frozen=True)
class Level:
    """One of the contract's four levels: names and times in English and Chinese."""

    level: int
    name: tuple[str, str]          # (en, zh): 非常严重 ...
    response: tuple[str, str]      # the response level: 非常紧急 ...
    meaning: tuple[str, str]
    respond: tuple[str, str]       # respond within
    callback: tuple[str, str]      # first call-back within
    action_plan: tuple[str, str]   # initial action plan within
    hours: tuple[str, str]         # the service hours that apply


_BOOKED = ("7×24 when booked in advance (otherwise weekdays 09:00–18:00 Beijing time, not on public holidays)",
           "提前预约可获得 7×24 小时响应（否则为工作日 9:00–18:00 北京时间，法定节假日除外）")
_STANDARD = ("standard hours only: weekdays 09:00–18:00 Beijing time, not on public holidays",
             "仅限标准服务时间：工作日 9:00–18:00（北京时间），法定节假日除外")

LEVELS: dict[int, Level] = {
    1: Level(1, ("very serious", "非常严重"), ("very urgent", "非常紧急"),
             ("the service is down, cannot start, keeps crashing, or cannot reach its data source",
              "服务中断、无法启动、反复崩溃，或无法连接数据源"),
             ("2 h", "2 小时"), ("1 h", "1 小时"), ("2 h", "2 小时"), _BOOKED),
    2: Level(2, ("serious", "严重"), ("urgent", "紧急"),
             ("the service runs, but core functions are badly degraded or unstable",
              "服务在运行，但核心功能严重受损或不稳定"),
             ("4 h", "4 小时"), ("2 h", "2 小时"), ("4 h", "4 小时"), _BOOKED),
    3: Level(3, ("moderate", "一般"), ("important", "重要"),
             ("the upgrade failed and was rolled back, the old version runs and is healthy (a workaround exists), "
              "or a function is partly lost but the service runs",
              "升级失败并已回滚，旧版本正常运行（有临时解决办法），或部分功能受损但服务在运行"),
             ("8 h", "8 小时"), ("4 h", "4 小时"), ("1 working day", "1 个工作日"), _STANDARD),
    4: Level(4, ("minor", "轻微"), ("normal", "一般"),
             ("a minor loss or a warning only", "轻微影响或仅为警告"),
             ("48 h", "48 小时"), ("8 h", "8 小时"), ("2 working days", "2 个工作日"), _STANDARD),
}
LEVEL_NAMES = {n: lv.meaning[0] for n, lv in LEVELS.items()}
_ZH_NUM = {1: "一", 2: "二", 3: "三", 4: "四"}

#: (level, rule) as ``classify_host`` names them
RULES = (
    (1, "the service was stopped and is not running again (the rollback failed, or the host was lost after stop)"),
    (1, "after stop the service keeps crashing or cannot start (the process probe fails)"),
    (1, "a failing probe shows the service cannot reach its data source (JDBC, datasource, database)"),
    (2, "after a failed rollback the service answers, but some of its health checks fail or it is unstable"),
    (3, "the upgrade failed and was rolled back: the old version runs and is healthy (workaround: stay on it)"),
    (3, "the stop failed and the old version runs and is healthy again: nothing was installed"),
    (4, "the upgrade did not happen and the service was never touched (preflight, backup, lock, or the host was "
        "unreachable before stop)"),
)

#: the same rules in Chinese, in the same order (what ``describe`` shows for "zh")
RULES_ZH = (
    "服务已停止且没有重新运行（回滚失败，或停止服务后失去了与主机的连接）",
    "停止服务后，服务反复崩溃或无法启动（进程检查不通过）",
    "检查不通过的原因表明服务无法连接数据源（JDBC、数据源、数据库）",
    "回滚失败后服务有响应，但部分健康检查不通过或运行不稳定",
    "升级失败并已回滚：旧版本在运行且健康（临时解决办法：继续使用旧版本）",
    "停止服务失败，旧版本已重新运行且健康：没有安装任何东西",
    "升级没有进行，服务从未被触动（预检、备份、锁，或停止服务前无法连接主机）",
)
_ZH_RULE = dict(zip((rule for _, rule in RULES), RULES_ZH))

_NO_INCIDENT = ("committed", "restored", "not_started", "refused", "policy_refused", "stale", "bad_input", "superseded", "waiting")
_CORE = ("process", "tcp", "http")
_TOUCHING = ("stop", "install", "start", "rollback", "observe")
_DATA_SOURCE = re.compile(r"jdbc|data ?source|database|sqlexception|could not connect to (the )?db", re.I)


def _failed_probes(detail: str, types: dict[str, str]) -> list[tuple[str, str, str]]:
    """(name, type, detail) of each probe named in an observe failure ``when: name: detail; name: detail``."""
    _, _, rest = detail.partition(": ")
    out = []
    for part in rest.split("; "):
        name, sep, what = part.partition(": ")
        if sep:
            out.append((name, types.get(name, "command" if name not in _CORE else name), what))
    return out


def _rule(index: int, host: str, detail: str) -> dict[str, Any]:
    level, rule = RULES[index]
    return {"host": host, "level": level, "meaning": LEVEL_NAMES[level], "rule": rule, "evidence": detail}


def is_cancelled(host: dict[str, Any]) -> bool:
    """Did the operator cancel this host's run, and did it end well (unchanged, or rolled back healthy)?"""
    if host.get("outcome") not in ("unchanged", "rolled_back", "not_started"):
        return False
    return host.get("rollback_cause") == CANCELLED or str(host.get("error") or "").startswith(
        (CANCELLED, f"cancel: {CANCELLED}"))


def _touched(host: dict[str, Any]) -> bool:
    """Was the service stopped or changed by this run (by what its phase records show)?"""
    return any(str(p.get("phase")) in _TOUCHING or str(p.get("phase")).startswith("hook:after_")
               for p in host.get("phases") or [])


def _down(name: str, host: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    """A host left needing a person after stop: how bad is the service now? From its last failed phase."""
    error = str(host.get("error") or "")
    failed = [p for p in host.get("phases") or [] if p.get("status") == "failed"]
    last = failed[-1] if failed else {}
    detail = str(last.get("detail") or error)
    if last.get("phase") == "observe":
        probes = _failed_probes(detail, types)
        if any(_DATA_SOURCE.search(what) for _, _, what in probes):
            return _rule(2, name, error or detail)
        if any(kind == "process" for _, kind, _ in probes):
            return _rule(1, name, error or detail)
        core = [p for p in probes if p[1] in _CORE]
        serving = len(core) < len([t for t in types.values() if t in _CORE]) or not core
        if serving or "during the observation window" in detail:
            return _rule(3, name, error or detail)
    return _rule(0, name, error or detail)


def classify_host(host: dict[str, Any], probe_types: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The severity of one host's result (``RunResult.to_dict()['hosts'][i]``), or None: no incident.

    ``probe_types`` maps the playbook's probe names to their types (process, tcp, http, log, command)."""
    outcome = host.get("outcome")
    if outcome in _NO_INCIDENT or is_cancelled(host):
        return None
    name = str(host.get("host"))
    cause = str(host.get("rollback_cause") or host.get("error") or outcome)
    if outcome == "rolled_back":
        return _rule(4, name, cause)
    if outcome == "unchanged":
        return _rule(5, name, cause) if _touched(host) else _rule(6, name, cause)
    if outcome == "needs_person" and _touched(host):
        return _down(name, host, probe_types or {})
    return _rule(6, name, cause)


def classify_run(result: dict[str, Any], probe_types: dict[str, dict[str, str]] | None = None,
                 response_hours: tuple[float, ...] | None = None) -> dict[str, Any] | None:
    """The run's severity: the most severe host's, with every host's, the contract's names and response times
    (``response_hours``: the policy's "respond within" per level, when it sets one)."""
    hosts = [c for c in (classify_host(h, (probe_types or {}).get(str(h.get("host")))) for h in result["hosts"])
             if c is not None]
    if not hosts:
        return None
    worst = min(hosts, key=lambda c: int(c["level"]))
    level = int(worst["level"])
    lv = LEVELS[level]
    hours = float(response_hours[level - 1]) if response_hours else float(lv.respond[0].split()[0])
    return {"level": level, "name": lv.name[0], "name_zh": lv.name[1], "response_level": lv.response[0],
            "response_level_zh": lv.response[1], "meaning": lv.meaning[0], "meaning_zh": lv.meaning[1],
            "response_hours": hours, "callback": lv.callback[0], "action_plan": lv.action_plan[0],
            "service_hours": lv.hours[0], "host": worst["host"], "rule": worst["rule"],
            "evidence": worst["evidence"], "hosts": hosts}


def describe(severity: dict[str, Any], lang: str) -> list[str]:
    """The lines people read about a run's severity (plain text, no markup), in ``lang`` ("en" or "zh")."""
    lv = LEVELS[int(severity["level"])]
    hours = float(severity.get("response_hours") or 0)
    if lang == "zh":
        respond = f"{hours:g} 小时" if hours else lv.respond[1]
        rule = _ZH_RULE.get(str(severity.get("rule")), severity.get("rule"))
        return [f"故障级别：{_ZH_NUM[lv.level]}级 {lv.name[1]}（响应级别：{lv.response[1]}）——{lv.meaning[1]}。",
                f"响应时限：{respond}内响应，{lv.callback[1]}内首次回电，{lv.action_plan[1]}内给出初步处理方案；"
                f"服务时间：{lv.hours[1]}。",
                f"判定依据（{severity.get('host')}）：{rule}"]
    respond = f"{hours:g} h" if hours else lv.respond[0]
    return [f"Severity level {lv.level}, {lv.name[0]} (response level: {lv.response[0]}): {lv.meaning[0]}.",
            f"Response: within {respond}, first call-back within {lv.callback[0]}, initial action plan within "
            f"{lv.action_plan[0]}; service hours: {lv.hours[0]}.",
            f"Why ({severity.get('host')}): {severity.get('rule')}"]
