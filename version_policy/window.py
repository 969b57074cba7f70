"""Service windows: may a run start now without an after-hours booking? Pure.

The standard service window is a span of local time (``window.start``-``window.end`` in
``window.timezone``) on working days: the service days of the week (``window.days``), minus the
public holidays of a holiday calendar, plus the make-up working days (调休: weekend days that
are working days) the calendar lists. ``window_status`` answers inside, outside, or unknown
(``inside=None``) when the answer depends on a year the calendar has no data for: a missing year
is reported, with the file to add it to, never guessed. ``parse_holidays`` checks a calendar
already read from YAML; ``service_window`` combines it with a policy's ``window.*`` settings.

This module reads no clock (``now`` is passed in), opens no file (``holidays.load_window``
does), and knows nothing of approvals: what a run outside the window needs
(``window.outside``) is decided by the caller.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import PolicyError
from .policy import Policy

__all__ = ["DAY_NAMES", "OUTSIDE_CHOICES", "Outside", "HolidayCalendar", "ServiceWindow",
           "WindowStatus", "parse_holidays", "service_window", "window_status"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_WORDS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
Outside = Literal["refuse", "after_hours_approval", "allow"]
OUTSIDE_CHOICES: tuple[Outside, ...] = ("refuse", "after_hours_approval", "allow")
_SEARCH_DAYS = 400  # how far ahead the next opening is looked for
_MAX_SPAN_DAYS = 31  # no public holiday is longer; a longer span is a typo


@dataclass(frozen=True)
class HolidayCalendar:
    """Public holidays and make-up working days, by date, for the ``years`` it has data for."""

    source: str
    digest: str
    years: frozenset[int]
    holidays: Mapping[_dt.date, str] = field(hash=False)
    workdays: Mapping[_dt.date, str] = field(hash=False)


@dataclass(frozen=True)
class ServiceWindow:
    """A policy's service window with its holiday calendar; build it with ``service_window``."""

    timezone: str
    days: tuple[str, ...]
    start: int  # minutes after midnight
    end: int  # minutes after midnight, at most 24:00
    outside: Outside
    calendar: HolidayCalendar

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def hours(self) -> str:
        """``09:00-18:00``."""
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"

    def describe(self) -> dict[str, object]:
        """JSON-ready: the settings and which holiday data (file, sha256, years) decide."""
        return {"timezone": self.timezone, "days": list(self.days), "start": _hhmm(self.start),
                "end": _hhmm(self.end), "outside": self.outside,
                "holidays": {"file": self.calendar.source, "sha256": self.calendar.digest,
                             "years": sorted(self.calendar.years)}}


@dataclass(frozen=True)
class WindowStatus:
    """``inside`` is None when it cannot be told; ``next_opening`` is None when inside or unknown."""

    inside: bool | None
    reason: str
    next_opening: _dt.datetime | None = None

    def to_dict(self) -> dict[str, object]:
        return {"inside": self.inside, "reason": self.reason,
                "next_opening": self.next_opening.isoformat() if self.next_opening else None}


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def service_window(policy: Policy, calendar: HolidayCalendar) -> ServiceWindow:
    """The policy's ``window.*`` settings with ``calendar``; PolicyError if they do not fit."""
    timezone = cast(str, policy.value("window.timezone"))
    start = _minutes(cast(str, policy.value("window.start")))
    end = _minutes(cast(str, policy.value("window.end")))
    if start >= end:
        raise PolicyError(f"the window ends ({_hhmm(end)}) before or when it starts ({_hhmm(start)}); "
                          "a window spanning midnight is not supported: give a start earlier "
                          "than the end", path=policy.source, key="window.end")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError(f"the time zone {timezone!r} is not in this machine's time zone "
                          "database; install the tzdata package (pip install tzdata) or the "
                          "system's tzdata", path=policy.source, key="window.timezone") from None
    return ServiceWindow(timezone, cast(tuple[str, ...], policy.value("window.days")), start, end,
                         cast(Outside, policy.value("window.outside")), calendar)


# ------------------------------------------------------------------------------ the decision


def _day(window: ServiceWindow, day: _dt.date) -> tuple[Literal["work", "off", "unknown"], str]:
    """Is ``day`` a working day, and why."""
    calendar, word = window.calendar, _DAY_WORDS[day.weekday()]
    if day.year not in calendar.years:
        return "unknown", (f"no holiday data for {day.year}: cannot tell whether {day.isoformat()} "
                           f"is a working day; add the year to {calendar.source}")
    if day in calendar.workdays:
        return "work", (f"{word} {day.isoformat()} is a make-up working day (调休, for "
                        f"{calendar.workdays[day]})")
    if day in calendar.holidays:
        return "off", f"{day.isoformat()} is a public holiday ({calendar.holidays[day]})"
    if DAY_NAMES[day.weekday()] in window.days:
        return "work", f"{word} is a working day"
    return "off", f"{word} is not a service day ({', '.join(window.days)})"


def _next_opening(window: ServiceWindow, local: _dt.datetime,
                  seconds: float) -> tuple[_dt.datetime | None, str]:
    """The next time the window opens after ``local``, or None and why it cannot be told."""
    today = local.date()
    first = 0 if seconds < window.start * 60 else 1
    for offset in range(first, _SEARCH_DAYS):
        day = today + _dt.timedelta(days=offset)
        kind, why = _day(window, day)
        if kind == "unknown":
            return None, f"the next opening cannot be told: {why}"
        if kind == "work":
            opening = _dt.datetime.combine(day, _dt.time(window.start // 60, window.start % 60),
                                           tzinfo=window.zone)
            return opening, f"it opens next at {opening.isoformat(timespec='minutes')}"
    return None, f"the window does not open in the next {_SEARCH_DAYS} days"


def window_status(now: _dt.datetime, policy_window: ServiceWindow) -> WindowStatus:
    """Inside, outside or unknown at ``now`` (an aware datetime), with the reason in plain words.

    Outside the hours it is outside whatever the day; within the hours it depends on the day,
    and a day in a year without holiday data gives ``inside=None``.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("window_status needs an aware datetime (with a UTC offset)")
    window = policy_window
    local = now.astimezone(window.zone)
    seconds = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    when = f"{local:%Y-%m-%d %H:%M} {_DAY_WORDS[local.weekday()]} ({window.timezone})"
    kind, why = _day(window, local.date())
    inside: bool | None
    if seconds < window.start * 60:
        inside, reason = False, (f"{when} is outside the service window: before it opens at "
                                 f"{_hhmm(window.start)} ({window.hours} on working days)")
    elif seconds >= window.end * 60:
        inside, reason = False, (f"{when} is outside the service window: after it closes at "
                                 f"{_hhmm(window.end)} ({window.hours} on working days)")
    elif kind == "work":
        return WindowStatus(True, f"{when} is inside the service window: {why}, {window.hours}")
    elif kind == "off":
        inside, reason = False, f"{when} is outside the service window: {why}"
    else:
        return WindowStatus(None, why)
    opening, note = _next_opening(window, local, seconds)
    return WindowStatus(inside, f"{reason}; {note}", opening)


# ------------------------------------------------------------------------ the holiday calendar


def _fail(source: str, key: str | None, message: str) -> PolicyError:
    return PolicyError(message, path=source, key=key)


def _mapping(value: object, source: str, key: str | None, known: tuple[str, ...],
             required: tuple[str, ...] = ()) -> dict[str, object]:
    where = f"in {key}" if key else "at the top level"
    if not isinstance(value, dict):
        raise _fail(source, key, f"expected a mapping with the keys {', '.join(known)}, got "
                                 f"{type(value).__name__}; see the shipped holidays-cn.yaml")
    for name in value:
        if name not in known:
            raise _fail(source, f"{key}.{name}" if key else str(name),
                        f"unknown key; the known keys {where} are {', '.join(known)}; fix its "
                        "spelling or remove it")
    for name in required:
        if name not in value:
            raise _fail(source, f"{key}.{name}" if key else name, "required key is missing")
    return cast(dict[str, object], value)


def _text(value: object, source: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise _fail(source, key, "expected a non-empty line of text")
    return value.strip()


def _date(value: object, source: str, key: str, year: int) -> _dt.date:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        try:
            value = _dt.date.fromisoformat(value)
        except ValueError:
            pass
    if not isinstance(value, _dt.date) or isinstance(value, _dt.datetime):
        raise _fail(source, key, f"expected a date like {year}-10-01, got {value!r:.40}")
    if value.year != year:
        raise _fail(source, key, f"{value.isoformat()} is not in {year}; list it under its own year")
    return value


def _year(value: object, source: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1970 <= value <= 2999:
        raise _fail(source, f"years.{value!r:.20}", "expected a year like 2026")
    return value


def parse_holidays(data: object, source: str, digest: str = "") -> HolidayCalendar:
    """Check a holiday calendar read from YAML; PolicyError naming the file and key if invalid.

    The shape is ``format: 1`` and ``years: {YEAR: {source, holidays: [{name, from, to}],
    workdays: [{date, for}]}}``; ``to`` defaults to ``from``. A date may be listed once, a
    holiday span is at most 31 days, and a make-up working day is a Saturday or Sunday.
    """
    top = _mapping({} if data is None else data, source, None, ("format", "name", "years"))
    if top.get("format", 1) != 1 or isinstance(top.get("format"), bool):
        raise _fail(source, "format", "expected 1 (the only holidays format this version reads)")
    if "name" in top:
        _text(top["name"], source, "name")
    years_node = top.get("years") or {}
    if not isinstance(years_node, dict):
        raise _fail(source, "years", "expected a mapping of years (2026: ...)")
    years: set[int] = set()
    holidays: dict[_dt.date, str] = {}
    workdays: dict[_dt.date, str] = {}
    for raw_year, body in years_node.items():
        year = _year(raw_year, source)
        if year in years:
            raise _fail(source, f"years.{year}", "the year is given twice; keep only one")
        years.add(year)
        key = f"years.{year}"
        node = _mapping(body, source, key, ("source", "holidays", "workdays"), ("holidays",))
        if "source" in node:
            _text(node["source"], source, f"{key}.source")
        for index, item in enumerate(_list(node.get("holidays"), source, f"{key}.holidays")):
            where = f"{key}.holidays[{index}]"
            entry = _mapping(item, source, where, ("name", "from", "to"), ("name", "from"))
            name = _text(entry["name"], source, f"{where}.name")
            first = _date(entry["from"], source, f"{where}.from", year)
            last = _date(entry.get("to", first), source, f"{where}.to", year)
            if last < first or (last - first).days >= _MAX_SPAN_DAYS:
                raise _fail(source, f"{where}.to", f"{first} to {last} is not a holiday span "
                                                   f"(to must be on or after from, within "
                                                   f"{_MAX_SPAN_DAYS} days)")
            for offset in range((last - first).days + 1):
                day = first + _dt.timedelta(days=offset)
                if day in holidays:
                    raise _fail(source, where, f"{day} is already a holiday ({holidays[day]})")
                holidays[day] = name
        for index, item in enumerate(_list(node.get("workdays"), source, f"{key}.workdays")):
            where = f"{key}.workdays[{index}]"
            entry = _mapping(item, source, where, ("date", "for"), ("date", "for"))
            day = _date(entry["date"], source, f"{where}.date", year)
            if day.weekday() < 5:
                raise _fail(source, f"{where}.date", f"{day} is a {_DAY_WORDS[day.weekday()]}; a "
                                                     "make-up working day is a Saturday or Sunday")
            if day in holidays or day in workdays:
                raise _fail(source, f"{where}.date", f"{day} is listed twice")
            workdays[day] = _text(entry["for"], source, f"{where}.for")
    return HolidayCalendar(source, digest, frozenset(years), MappingProxyType(holidays),
                           MappingProxyType(workdays))


def _list(value: object, source: str, key: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(source, key, "expected a list")
    return value
