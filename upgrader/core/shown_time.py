"""Times as people read them: in the policy's time zone (``window.timezone``, default Asia/Shanghai), to
the minute, with the zone named ("2026-12-04 14:22 北京时间", "2026-12-04 14:22 (Asia/Shanghai)").

Records (the audit log, the journal, JSON output) keep ISO 8601 with their offset; this module is only
for what is printed or rendered for a person. It reads no clock and does no I/O.
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from version_policy import Policy

__all__ = ["DEFAULT_ZONE", "policy_zone", "shown_time", "zone_name"]

DEFAULT_ZONE = "Asia/Shanghai"
_BEIJING = ("Asia/Shanghai", "Asia/Chongqing", "Asia/Harbin", "Asia/Urumqi", "PRC")


def policy_zone(policy: Policy | None) -> str:
    """The policy's ``window.timezone``, else Asia/Shanghai."""
    try:
        value = policy.value("window.timezone") if policy is not None else None
    except Exception:  # noqa: BLE001 - an unreadable setting is reported where the window is checked
        value = None
    return str(value or DEFAULT_ZONE)


def zone_name(zone: str, lang: str) -> str:
    """"北京时间" for China's zone in Chinese, else the IANA name."""
    return "北京时间" if lang == "zh" and zone in _BEIJING[:1] else zone


def shown_time(at: _dt.datetime | str | None, zone: str = DEFAULT_ZONE, lang: str = "en") -> str:
    """``at`` (an aware datetime or an ISO 8601 text) in ``zone``, to the minute, the zone named; "-" for None
    and the text as it is when it is not a time."""
    if at is None or at == "":
        return "-"
    if isinstance(at, str):
        try:
            parsed = _dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            return at
        at = parsed
    if at.tzinfo is None:
        at = at.replace(tzinfo=_dt.timezone.utc)
    try:
        local = at.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        zone, local = "UTC", at.astimezone(_dt.timezone.utc)
    name = zone_name(zone, lang)
    return f"{local:%Y-%m-%d %H:%M} {name}" if name != zone else f"{local:%Y-%m-%d %H:%M} ({zone})"
