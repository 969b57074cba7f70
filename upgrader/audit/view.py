"""What an auditor's views show of the log: the verdict in words and the events a filter selects (``upgrader
audit show|export``, ``upgrader.api.export_audit``). Pure: the log's bytes and the verdict come in."""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from typing import TYPE_CHECKING

from ..core.errors import InputError
from .log import VerifyResult, read_events

if TYPE_CHECKING:
    from .witness import WitnessResult

__all__ = ["CANNOT_CHECK", "describe", "headline", "witness_headline", "altered", "parse_since", "select_events"]

CANNOT_CHECK = "cannot check the checkpoints: give --allowed-signers or --policy"


def altered(result: VerifyResult) -> bool:
    """The log is known to be altered: with allowed signers, any failure; without them, a broken chain or a
    checkpoint that does not verify against its own key (which needs no trust to see; events that no checkpoint
    covers are then only unproven)."""
    if result.status == "altered":
        return True
    return not result.chain_intact and result.problem != "unsigned"


def headline(result: VerifyResult, lang: str = "en") -> str:
    """The verdict every view puts first: INTACT, ALTERED (line N) or UNVERIFIED (no trust given); in Chinese
    with ``lang="zh"`` (完好 / 已被篡改（第 N 行：…）/ 未核验（…）)."""
    if lang == "zh":
        from ..core.reasons import word

        if altered(result):
            return f"已被篡改（第 {result.bad_line} 行：{word('problem', result.problem, 'zh')}）"
        if result.status == "cannot_check":
            return "未核验（没有给出信任依据：--allowed-signers 或 --policy）"
        return "完好"
    if altered(result):
        return f"ALTERED (line {result.bad_line}: {result.problem})"
    if result.status == "cannot_check":
        return "UNVERIFIED (no trust given: --allowed-signers or --policy)"
    return "INTACT"


def witness_headline(w: WitnessResult, lang: str = "en") -> str:
    """The hosts' verdict on the log that every view puts beside its own (``--witness INVENTORY``): ALTERED (the
    hosts' records contradict it), NOT PROVEN (a doubt), CANNOT CHECK (a host not read) or INTACT, with the count
    that makes it so; ``audit verify --witness`` names each finding."""
    zh = lang == "zh"
    # the syslog lines not signed by a trusted audit key: no part of the verdict, never passed over in silence
    ignored = "" if not w.ignored else (f"；{len(w.ignored)} 行没有可信审计密钥签名的 syslog 已忽略" if zh else
                                        f"; {len(w.ignored)} syslog line(s) not signed by a trusted audit key ignored")
    if w.problems:
        return (f"已被篡改（{len(w.problems)} 处与主机自己的记录不符）" if zh else
                f"ALTERED ({len(w.problems)} finding(s) against the hosts' own records)") + ignored
    if w.doubts:
        return (f"未经证实（{len(w.doubts)} 处存疑）" if zh else f"NOT PROVEN ({len(w.doubts)} doubt(s))") + ignored
    if w.unreachable:
        return (f"无法核验（{len(w.unreachable)} 台主机无法读取）" if zh else
                f"CANNOT CHECK ({len(w.unreachable)} host(s) could not be read)") + ignored
    return (f"完好（{w.checked} 个见证的检查点与日志一致）" if zh else
            f"INTACT ({w.checked} witnessed checkpoint(s) match the log)") + ignored


def describe(result: VerifyResult, lang: str = "en") -> str:
    """The verdict in words; never a bare OK. Without allowed signers: that it cannot check, and the chain's result.
    ``lang="zh"``: the same in Chinese (as the Chinese HTML report says it)."""
    if lang == "zh":
        return _describe_zh(result)
    if not result.signers_known:
        if not result.chain_intact:
            chain = (f"altered at {result.message} ({result.problem}); {result.valid_entries} entries before it form "
                     "a valid chain")
        else:
            chain = (f"{result.entries} entries form an unbroken hash chain with {result.checkpoints} checkpoint(s) "
                     "whose signatures match their own keys, which proves nothing until the keys are known to be "
                     "your operators'")
        return f"CANNOT CHECK: {CANNOT_CHECK} (no allowed signers are known); the chain on its own: {chain}"
    if not result.intact:
        return f"ALTERED: {result.message} ({result.problem}); {result.valid_entries} entries before it form a valid chain"
    text = (f"{result.entries} entries form an intact hash chain with {result.checkpoints} valid signed "
            f"checkpoint(s)")
    if result.anchor_checked:
        text += "; the log is complete up to the anchor you hold"
        after = result.entries - int(str(result.anchor or "0").split(":")[0])
        if after > 0:
            text += (f" ({after} entr{'y' if after == 1 else 'ies'} after it {'is' if after == 1 else 'are'} "
                     "chained but not anchored)")
    else:
        text += ("; completeness after the last checkpoint you hold elsewhere is NOT proven "
                 "(give --anchor SEQ:HEAD from a run's output to prove nothing was cut off)")
    return text


_ZH = {
    "ok": "{n} 条记录构成完整的哈希链，含 {c} 个有效的签名检查点；",
    "anchor": "日志直至您保存的锚点是完整的。",
    "open": "最后检查点之后的完整性未经证明（使用运行时输出的 --anchor SEQ:HEAD 可证明末尾没有被截断）。",
    "bad": "日志已被篡改：第 {line} 行（{problem}）；其前 {valid} 条记录构成有效的链。",
    "unchecked": "无法核验检查点：请用 --allowed-signers 或 --policy 指定允许的签名者（当前不知道任何允许的签名者）。"
                 "仅就哈希链本身而言：",
}


def _detail_zh(result: VerifyResult) -> str | None:
    """What the English verdict says after "line N:", in Chinese when its form is known (else left out: the
    problem's name and line already stand in the verdict)."""
    from ..core.reasons import UNTRANSLATED, translate

    detail = re.sub(r"^line \d+: ", "", str(result.message or ""))
    if not detail:
        return None
    said = translate(detail, "zh")
    return None if said.startswith(UNTRANSLATED) else said


def _describe_zh(result: VerifyResult) -> str:
    from ..core.reasons import word

    if result.chain_intact and (result.intact or not result.signers_known):
        text = _ZH["ok"].format(n=result.entries, c=result.checkpoints)
        text += _ZH["anchor" if result.anchor_checked else "open"]
    else:
        text = _ZH["bad"].format(line=result.bad_line, problem=word("problem", result.problem, "zh"),
                                 valid=result.valid_entries)
        said = _detail_zh(result)
        if said:
            text = text[:-1] + f"：{said}。"
    return (_ZH["unchecked"] + text) if not result.signers_known else text


def _moment(text: str) -> _dt.datetime | None:
    """An ISO time as an aware datetime; one without a zone is UTC, as the log records times."""
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def parse_since(text: str | None) -> _dt.datetime | None:
    """``--since`` as a moment (compared as moments, not as strings: "2026-11-26T10:00+08:00" is 02:00 in a log
    written in UTC); InputError when it is not a date."""
    if not text:
        return None
    since = _moment(text)
    if since is None:
        raise InputError(f"--since: expected a date like 2026-11-26 or 2026-11-26T10:00 (UTC unless you add a zone "
                         f"such as +08:00), got {text!r}")
    return since


def select_events(path: Path, data: bytes, *, run: str | None = None, host: str | None = None,
                  since: str | None = None) -> list[dict[str, object]]:
    """The events of the log's ``data`` that a view shows: of runs whose id starts with ``run``; of ``host``
    (with the run's start and end, which name no host); at or after ``since``."""
    after = parse_since(since)
    out = []
    for e in read_events(path, data):
        if run and not str(e.get("run") or "").startswith(run):
            continue
        if host and e.get("host") not in (host, None):
            continue
        if host and e.get("host") is None and e.get("event") not in ("run_started", "run_finished"):
            continue
        if after:
            at = _moment(str(e.get("time", "")))
            if at is None or at < after:
                continue
        out.append(e)
    return out
