"""The only place that asks the system for the time; everything else is handed a ``Clock``.

For tests only: when the environment variable ``UPGRADER_TEST_NOW`` holds an ISO 8601 time with
its UTC offset (``2026-11-27T10:00:00+08:00``), ``SystemClock.now()`` returns that time instead of
the system's, so the CLI can be run at a fixed moment (the service window, approval expiry).
``monotonic()`` is never fixed: waits and timeouts stay real. Like ``UPGRADER_TEST_KILL_AT``, it
is not meant for production use.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from typing import Protocol

from .errors import InputError

__all__ = ["Clock", "SystemClock", "FixedClock", "TEST_NOW"]


class Clock(Protocol):
    def now(self) -> _dt.datetime:
        """Aware UTC now."""
        ...

    def monotonic(self) -> float: ...


TEST_NOW = "UPGRADER_TEST_NOW"


def _test_now(value: str) -> _dt.datetime:
    try:
        at = _dt.datetime.fromisoformat(value)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise InputError(f"{TEST_NOW}={value!r}: expected an ISO 8601 time with its UTC offset, "
                         "e.g. 2026-11-27T10:00:00+08:00 (for tests only)")
    return at.astimezone(_dt.timezone.utc)


class SystemClock:
    def now(self) -> _dt.datetime:
        fixed = os.environ.get(TEST_NOW)
        if fixed:  # tests only, see the module docstring
            return _test_now(fixed)
        return _dt.datetime.now(_dt.timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class FixedClock:
    """A clock that only moves when told to (tests, reproducible plans)."""

    def __init__(self, at: _dt.datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = at
        self._mono = 0.0

    def now(self) -> _dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += _dt.timedelta(seconds=seconds)
        self._mono += seconds
