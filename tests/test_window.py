"""The service window (version_policy.window): inside, outside or unknown at fixed times, and its files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from version_policy import (PolicyError, load_holidays, load_policy, load_window, parse_holidays,
                            service_window, window_status)
from version_policy.window import ServiceWindow

SHANGHAI = "+08:00"


@pytest.fixture(scope="module")
def default_window() -> ServiceWindow:
    return load_window(load_policy())


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# (case, now, inside, words in the reason, next opening)
DEFAULT_CASES = [
    ("weekday_10am_is_inside", f"2026-11-27T10:00:00{SHANGHAI}", True,
     "Friday is a working day, 09:00-18:00", None),
    ("weekday_8pm_is_outside", f"2026-11-27T20:00:00{SHANGHAI}", False,
     "after it closes at 18:00", f"2026-11-30T09:00:00{SHANGHAI}"),
    ("weekday_before_nine_is_outside_and_opens_the_same_day", f"2026-11-27T08:59:59{SHANGHAI}", False,
     "before it opens at 09:00", f"2026-11-27T09:00:00{SHANGHAI}"),
    ("opening_minute_is_inside", f"2026-11-27T09:00:00{SHANGHAI}", True, "working day", None),
    ("closing_minute_is_outside", f"2026-11-27T18:00:00{SHANGHAI}", False, "after it closes", None),
    ("saturday_is_outside", f"2026-11-28T10:00:00{SHANGHAI}", False,
     "Saturday is not a service day (mon, tue, wed, thu, fri)", f"2026-11-30T09:00:00{SHANGHAI}"),
    ("national_day_is_a_holiday", f"2026-10-01T10:00:00{SHANGHAI}", False,
     "2026-10-01 is a public holiday (国庆节 National Day)", f"2026-10-08T09:00:00{SHANGHAI}"),
    ("spring_festival_2025_is_a_holiday", f"2025-02-03T11:00:00{SHANGHAI}", False,
     "public holiday (春节 Spring Festival)", f"2025-02-05T09:00:00{SHANGHAI}"),
    ("make_up_saturday_2026_02_14_is_inside", f"2026-02-14T10:00:00{SHANGHAI}", True,
     "Saturday 2026-02-14 is a make-up working day (调休, for 春节 Spring Festival)", None),
    ("make_up_sunday_2025_09_28_is_inside", f"2025-09-28T15:30:00{SHANGHAI}", True,
     "make-up working day", None),
    ("eve_of_a_holiday_opens_after_it_and_skips_the_weekend", f"2026-09-30T19:00:00{SHANGHAI}", False,
     "after it closes", f"2026-10-08T09:00:00{SHANGHAI}"),
    ("friday_before_a_make_up_saturday_opens_on_saturday", f"2026-10-09T19:00:00{SHANGHAI}", False,
     "after it closes", f"2026-10-10T09:00:00{SHANGHAI}"),
    ("utc_02_00_is_shanghai_10_00_inside", "2026-11-27T02:00:00+00:00", True,
     "2026-11-27 10:00 Friday (Asia/Shanghai)", None),
    ("utc_friday_23_00_is_shanghai_saturday_outside", "2026-11-27T23:00:00+00:00", False,
     "2026-11-28 07:00 Saturday (Asia/Shanghai)", f"2026-11-30T09:00:00{SHANGHAI}"),
]


@pytest.mark.parametrize("case,now,inside,words,opening", DEFAULT_CASES, ids=[c[0] for c in DEFAULT_CASES])
def test_default_window_decides_from_the_clock_and_the_shipped_calendar(default_window, case, now, inside,
                                                                        words, opening):
    """The default window (weekdays 09:00-18:00 Asia/Shanghai, CN holidays) gives the expected answer."""
    status = window_status(at(now), default_window)
    assert status.inside is inside, status.reason
    assert words in status.reason
    if opening is not None:
        assert status.next_opening == at(opening)
    if inside:
        assert status.next_opening is None


def test_a_day_in_a_year_without_holiday_data_is_unknown_and_names_the_file(default_window):
    """2027-05-03 10:00 cannot be decided: the reason names the year, the day and the file to add it to."""
    status = window_status(at(f"2027-05-03T10:00:00{SHANGHAI}"), default_window)
    assert status.inside is None and status.next_opening is None
    assert status.reason == ("no holiday data for 2027: cannot tell whether 2027-05-03 is a working day; "
                             f"add the year to {default_window.calendar.source}")
    assert default_window.calendar.source.endswith("holidays-cn.yaml")


def test_outside_the_hours_is_outside_even_in_a_year_without_data(default_window):
    """At 20:00 the day does not matter: outside, and the next opening is reported as unknown."""
    status = window_status(at(f"2027-05-03T20:00:00{SHANGHAI}"), default_window)
    assert status.inside is False and status.next_opening is None
    assert "the next opening cannot be told: no holiday data for 2027" in status.reason


def test_the_last_evening_of_a_known_year_cannot_name_the_next_opening(default_window):
    """After hours on 2026-12-31 the next working day lies in 2027, which the calendar lacks."""
    status = window_status(at(f"2026-12-31T19:00:00{SHANGHAI}"), default_window)
    assert status.inside is False and status.next_opening is None
    assert "cannot tell whether 2027-01-01 is a working day" in status.reason


def test_a_naive_datetime_is_refused(default_window):
    """window_status needs to know the offset of now; a naive datetime is a ValueError."""
    with pytest.raises(ValueError, match="aware"):
        window_status(dt.datetime(2026, 11, 27, 10, 0), default_window)


def test_status_to_dict_is_json_ready(default_window):
    """to_dict gives inside, reason and the next opening as ISO text."""
    status = window_status(at(f"2026-11-28T10:00:00{SHANGHAI}"), default_window)
    assert status.to_dict() == {"inside": False, "reason": status.reason,
                                "next_opening": "2026-11-30T09:00:00+08:00"}


def test_describe_names_settings_and_the_holiday_data(default_window):
    """describe() lists the settings and the calendar file, its sha256 and its years."""
    described = default_window.describe()
    assert described["timezone"] == "Asia/Shanghai" and described["days"] == ["mon", "tue", "wed", "thu", "fri"]
    assert (described["start"], described["end"], described["outside"]) == ("09:00", "18:00",
                                                                             "after_hours_approval")
    holidays = described["holidays"]
    assert isinstance(holidays, dict) and holidays["years"] == [2025, 2026] and len(holidays["sha256"]) == 64


# ------------------------------------------------------------------ the shipped calendar


def test_shipped_calendar_holds_the_2025_and_2026_state_council_schedules():
    """28 holiday days and 5 make-up days in 2025, 33 and 6 in 2026, as the two notices give them."""
    calendar = load_holidays()
    assert calendar.years == {2025, 2026}
    count = {year: sum(1 for d in calendar.holidays if d.year == year) for year in (2025, 2026)}
    assert count == {2025: 1 + 8 + 3 + 5 + 3 + 8, 2026: 3 + 9 + 3 + 5 + 3 + 3 + 7}
    assert sorted(d.isoformat() for d in calendar.workdays) == [
        "2025-01-26", "2025-02-08", "2025-04-27", "2025-09-28", "2025-10-11",
        "2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09", "2026-09-20", "2026-10-10"]


# ------------------------------------------------------------------ custom windows


CALENDAR_2026 = """\
format: 1
years:
  2026:
    holidays:
      - {name: Founders Day, from: 2026-03-02}
    workdays:
      - {date: 2026-03-07, for: Founders Day}
"""


def test_custom_window_days_hours_timezone_and_calendar_come_from_the_policy(tmp_path):
    """A policy with Mon-Sat 08:00-24:00 UTC and its own calendar (relative to the policy file) decides by them."""
    write(tmp_path, "cal.yaml", CALENDAR_2026)
    policy = load_policy(write(tmp_path, "policy.yaml", (
        "window:\n  timezone: UTC\n  days: [sat, mon, tue, wed, thu, fri]\n  start: '08:00'\n"
        "  end: '24:00'\n  holidays: cal.yaml\n  outside: refuse\n")))
    window = load_window(policy)
    assert window.days == ("mon", "tue", "wed", "thu", "fri", "sat") and window.outside == "refuse"
    cases = [("2026-03-03T23:59:00+00:00", True), ("2026-03-02T10:00:00+00:00", False),
             ("2026-03-07T10:00:00+00:00", True), ("2026-03-14T10:00:00+00:00", True),
             ("2026-03-15T10:00:00+00:00", False), ("2026-03-03T07:59:00+00:00", False)]
    for now, inside in cases:
        assert window_status(at(now), window).inside is inside, now
    holiday = window_status(at("2026-03-02T10:00:00+00:00"), window)
    assert "public holiday (Founders Day)" in holiday.reason
    assert holiday.next_opening == at("2026-03-03T08:00:00+00:00")


@pytest.mark.parametrize("text,key,words", [
    ("window:\n  end: 18:00\n", "window.end", "YAML reads an unquoted 18:00 as the number 1080"),
    ("window:\n  start: '25:00'\n", "window.start", "between '00:00' and '23:59'"),
    ("window:\n  start: '24:00'\n", "window.start", "between '00:00' and '23:59'"),
    ("window:\n  timezone: Asia/Shanghia\n", "window.timezone", "no 'Asia/Shanghia'"),
    ("window:\n  days: [mon, funday]\n", "window.days", "a list of days such as"),
    ("window:\n  days: []\n", "window.days", "a list of days such as"),
    ("window:\n  outside: sometimes\n", "window.outside", "refuse or after_hours_approval or allow"),
    ("window:\n  holiday: x.yaml\n", "window.holiday", "unknown key"),
], ids=["unquoted_time", "hour_25", "start_24", "unknown_zone", "unknown_day", "no_days", "bad_outside",
        "misspelt_key"])
def test_invalid_window_settings_name_the_key(tmp_path, text, key, words):
    """Each invalid window setting is a PolicyError naming the policy file and the key."""
    path = write(tmp_path, "policy.yaml", text)
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert error.value.key == key and error.value.path == str(path)
    assert words in str(error.value)


def test_a_window_that_ends_before_it_starts_is_refused(tmp_path):
    """start 18:00, end 09:00 (a window across midnight) is refused naming window.end."""
    policy = load_policy(write(tmp_path, "policy.yaml", "window:\n  start: '18:00'\n  end: '09:00'\n"))
    with pytest.raises(PolicyError) as error:
        load_window(policy)
    assert error.value.key == "window.end" and "spanning midnight is not supported" in str(error.value)


def test_a_missing_holidays_file_is_an_error_naming_it(tmp_path):
    """window.holidays naming a file that does not exist is a PolicyError naming that file."""
    policy = load_policy(write(tmp_path, "policy.yaml", "window:\n  holidays: nowhere.yaml\n"))
    with pytest.raises(PolicyError, match="nowhere.yaml: cannot read the holidays file"):
        load_window(policy)


@pytest.mark.parametrize("text,key,words", [
    ("years:\n  2026:\n    holidays: []\n    extra: 1\n", "years.2026.extra", "unknown key"),
    ("years:\n  2026:\n    holidays:\n      - {name: X, from: 2025-12-31}\n", "years.2026.holidays[0].from",
     "2025-12-31 is not in 2026"),
    ("years:\n  2026:\n    holidays:\n      - {name: X, from: 2026-05-05, to: 2026-05-01}\n",
     "years.2026.holidays[0].to", "not a holiday span"),
    ("years:\n  2026:\n    holidays:\n      - {name: X, from: 2026-05-01, to: 2026-05-03}\n"
     "      - {name: Y, from: 2026-05-03}\n", "years.2026.holidays[1]", "2026-05-03 is already a holiday (X)"),
    ("years:\n  2026:\n    holidays: []\n    workdays:\n      - {date: 2026-05-11, for: X}\n",
     "years.2026.workdays[0].date", "2026-05-11 is a Monday; a make-up working day is a Saturday or Sunday"),
    ("years:\n  2026:\n    holidays:\n      - {name: X, from: 'May 1'}\n", "years.2026.holidays[0].from",
     "expected a date like 2026-10-01"),
    ("years:\n  2026:\n    workdays: []\n", "years.2026.holidays", "required key is missing"),
    ("format: 2\n", "format", "expected 1"),
], ids=["unknown_key", "date_in_another_year", "backwards_span", "overlap", "weekday_make_up_day",
        "not_a_date", "no_holidays", "format_2"])
def test_invalid_holiday_calendars_name_the_key(text, key, words):
    """parse_holidays refuses a malformed calendar with a PolicyError naming the key."""
    import yaml

    with pytest.raises(PolicyError) as error:
        parse_holidays(yaml.safe_load(text), "cal.yaml")
    assert error.value.key == key and error.value.path == "cal.yaml"
    assert words in str(error.value)


def test_service_window_uses_the_calendar_it_is_given(tmp_path):
    """service_window is pure: the same policy with another calendar gives another answer."""
    import yaml

    policy = load_policy(None)
    calendar = parse_holidays(yaml.safe_load(CALENDAR_2026), "test calendar")
    window = service_window(policy, calendar)
    assert window_status(at(f"2026-03-02T10:00:00{SHANGHAI}"), window).inside is False
    assert window_status(at(f"2026-10-01T10:00:00{SHANGHAI}"), window).inside is True  # not a holiday here
    assert window_status(at(f"2025-10-01T10:00:00{SHANGHAI}"), window).inside is None
