"""The only place that asks the system for the time; everything else is handed a ``Clock``.

The product reads the time from the system and from nothing else: no environment variable or file
moves its clock. A program that drives the CLI in-process (the test suite, a scheduler replaying a
scenario) passes its own ``Clock`` to ``cli.main(argv, clock=...)`` or ``upgrader.api.Context(clock=...)``.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "FixedClock"]


class Clock(Protocol):
    def now(self) -> _dt.datetime:
        """Aware UTC now."""
        ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> _dt.datetime:
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
