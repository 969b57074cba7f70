"""The English reasons of the version policy, the service window and the engine, shown in Chinese by their form
(``upgrader.core.reasons``): table-driven over real decisions, with no reason left untranslated."""

from __future__ import annotations

import datetime

import pytest

from upgrader.core.reasons import UNTRANSLATED, cause, failure, translate
from upgrader.core.shown_time import shown_time
from version_policy import UpgradeRequest, decide, load_policy, load_window, parse_range, parse_version, window_status

TODAY = datetime.date(2026, 12, 3)


def request(current: str, target: str, **changes: object) -> UpgradeRequest:
    fields: dict[str, object] = {"product": "TongWeb", "target_product": "TongWeb",
                                 "maintenance_until": datetime.date(2027, 1, 1), "today": TODAY}
    fields.update(changes)
    if isinstance(fields.get("requires"), str):
        fields["requires"] = parse_range(str(fields["requires"]))
    return UpgradeRequest(current=parse_version(current), target=parse_version(target), **fields)  # type: ignore[arg-type]


CASES = [
    request("7.0.4.1", "7.0.4.2"), request("7.0.4.9", "7.0.4.9_M1"), request("7.0.4.9_M2", "7.0.4.9_M10"),
    request("7.0.4.2", "7.0.4.1"), request("7.0.4.2", "7.0.4.2"), request("7.0.4", "7.0.4.0"),
    request("7.0.4.9", "7.0.C.6"), request("7.0.C.3", "7.0.C.6"), request("7.0.4.1", "7.1.0.0"),
    request("7.0.4.1", "8.0.0.0"), request("7.0.4.1", "7.0.5.0"), request("7.0.4.9_M1", "7.0.4.9_P1"),
    request("7.0.4.1", "7.0.4.2", target_product="Tomcat"),
    request("7.0.4.1", "7.0.4.2", declared_changes=("monitoring",)),
    request("7.0.4.1", "7.0.4.2", declared_changes=("external_interface", "config_format")),
    request("7.0.4.1", "7.0.4.2", declared_changes=("logging",)),
    request("7.0.4.1", "7.0.4.2", maintenance_until=datetime.date(2026, 1, 1)),
    request("7.0.4.1", "7.0.4.2", maintenance_until=None), request("7.0.4.1", "7.0.4.2", today=None),
    request("7.0.4.1", "7.0.4.3", kind="patch", requires=">=7.0.4.1, <7.0.4.3"),
    request("7.0.4.1", "7.0.4.6", kind="patch", requires=">=7.0.4.5"),
    request("7.0.4.1", "7.0.4.6", kind="patch"),
]


@pytest.mark.parametrize("req", CASES, ids=lambda r: f"{r.current}->{r.target}")
def test_every_rule_reason_of_real_decisions_reads_in_chinese(req: UpgradeRequest) -> None:
    """Each rule's reason, passed, failed or skipped, has a Chinese form: no "原文", no English word of the rule."""
    for r in decide(req, load_policy()).results:
        zh = translate(r.reason, "zh")
        assert not zh.startswith(UNTRANSLATED), r.reason
        for english in (" is newer than ", " is older than ", "levels", "the package", "contract", "checked"):
            assert english not in zh, (r.reason, zh)
        assert translate(r.reason, "en") == r.reason


@pytest.mark.parametrize("when", ["2026-12-03T03:00:00Z", "2026-12-03T08:00:00Z", "2026-12-03T12:00:00Z",
                                  "2026-12-05T03:00:00Z", "2026-10-01T03:00:00Z"])
def test_the_service_window_sentence_reads_in_chinese_with_beijing_time(when: str) -> None:
    """Before, inside and after the hours, a weekend and a public holiday: the window's reason in Chinese, the
    time named as Beijing time."""
    now = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
    reason = window_status(now, load_window(load_policy())).reason
    zh = translate(reason, "zh")
    assert not zh.startswith(UNTRANSLATED) and "北京时间" in zh and "window" not in zh, (reason, zh)


def test_a_failure_is_summarised_first_with_the_logs_own_line_and_the_detail_after() -> None:
    """The engine's cause: the plain summary first, the log's line before the probes, the English detail last."""
    text = ("observe: never healthy after start: process: pid None not running; tcp: port 8080 closed; "
            "log: logs/server.log: ERROR cannot start: configuration rejected")
    zh = cause(text, "zh")
    assert zh.startswith("新版本启动失败：日志 logs/server.log 报错“ERROR cannot start: configuration rejected”；"
                         "进程没有运行；端口 8080 没有打开")
    assert zh.endswith("技术细节：never healthy after start: process: pid None not running; tcp: port 8080 closed; "
                       "log: logs/server.log: ERROR cannot start: configuration rejected）")
    assert failure(text.partition(": ")[2], "zh").startswith("启动后一直不健康：日志 logs/server.log 报错")
    assert cause("cancelled by the operator (before stop)", "zh") == "操作员已取消"
    assert cause("start: the start command exited 1", "en").startswith("the new version did not start")


@pytest.mark.parametrize("at,zone,lang,shown", [
    ("2026-12-04T06:22:00+00:00", "Asia/Shanghai", "zh", "2026-12-04 14:22 北京时间"),
    ("2026-12-04T06:22:00+00:00", "Asia/Shanghai", "en", "2026-12-04 14:22 (Asia/Shanghai)"),
    ("2026-12-04T06:22Z", "Europe/Berlin", "zh", "2026-12-04 07:22 (Europe/Berlin)"),
    (None, "Asia/Shanghai", "zh", "-"), ("not a time", "Asia/Shanghai", "zh", "not a time"),
])
def test_times_for_people_are_in_the_policys_zone_with_the_zone_named(at: str | None, zone: str, lang: str,
                                                                       shown: str) -> None:
    assert shown_time(at, zone, lang) == shown


def test_a_sentence_is_never_half_translated_by_a_generic_form() -> None:
    """"A and B" / "A; B" with an English half no form knows: shown whole behind 原文, never "…too和roll…";
    with both halves known, both are translated; the health-check proof and probe details have their forms."""
    english = ("vm: the health check(s) 'tcp' (port 1 closed) fail on the running version 7.0.4.1: they would fail "
               "after the upgrade too and roll a good upgrade back, so nothing was stopped")
    assert translate(english, "zh") == f"{UNTRANSLATED}：{english}"
    assert translate("7.0.4.2 is newer than 7.0.4.1 (level 4: 2 vs 1); full package: no requires range", "zh") == \
        "7.0.4.2 比 7.0.4.1 新（第 4 级：2 对 1）；完整包：没有适用版本范围"
    assert translate("2 probe(s) pass on the running 7.0.4.1: process (pid 7 alive), tcp (port 8080 open); 1 log "
                     "probe(s) judged after start", "zh") == \
        "2 项检查在当前运行的 7.0.4.1 上通过：process（进程 7 在运行），tcp（端口 8080 已打开）；另有 1 项日志检查在新版本启动后判断"


def test_a_missing_pid_file_is_said_in_chinese_as_what_cannot_be_told() -> None:
    """The process probe without its pid file (it may run without writing one) reads as that, not as a dead process,
    and the rest of the list is still translated."""
    text = ("observe: never healthy after start: process: no pid file run/server.pid: not running, or running "
            "without writing it (cannot tell); tcp: port 8080 closed")
    zh = cause(text, "zh")
    assert "没有 pid 文件 run/server.pid：进程没有运行，或在运行但没有写 pid 文件（无法判断）；端口 8080 没有打开" in zh, zh
