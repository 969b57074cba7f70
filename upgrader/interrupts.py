"""Ctrl-C and a lost terminal during ``upgrader guide``.

Before the run starts, Ctrl-C is Python's ``KeyboardInterrupt`` and a hang-up (SIGHUP) raises
``TerminalLost``: the guide has changed nothing yet and says so. While the run is going, neither
stops the program: Ctrl-C sets ``cancel`` (the engine checks it between phases: before stop the
host is released unchanged, after stop it is rolled back) and every further Ctrl-C only asks
for patience; a hang-up sends the program's output to /dev/null (writing to a dead terminal must
not crash the run) and the run goes on to its end, recorded in the journal and the audit log.

This module only handles signals; it decides nothing about hosts.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any, Iterator
from contextlib import contextmanager

__all__ = ["Interrupts", "TerminalLost"]


class TerminalLost(Exception):
    """SIGHUP before the run started: nobody is left to answer the questions."""


class Interrupts:
    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.hung_up = False
        self.presses = 0
        self._run_started = False  # from then on a hang-up never raises: the run goes on to its end
        self._notes: list[str] = []
        self._lock = threading.Lock()
        self._saved: dict[int, Any] = {}

    def install(self) -> None:
        self._saved[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)

    def restore(self) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()

    @contextmanager
    def running(self) -> Iterator[None]:
        """While the run goes: Ctrl-C cancels (at the engine's next safe point) instead of raising."""
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        self._run_started = True
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def notes(self) -> list[str]:
        """What the handlers want said (message keys), oldest first; each is returned once."""
        with self._lock:
            out, self._notes = self._notes, []
        return out

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        self.presses += 1
        self.cancel.set()
        self._notes.append("cancel_first" if self.presses == 1 else "cancel_again")

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        if not self.hung_up:
            self.hung_up = True
            _detach_from_terminal()
        if not self._run_started:
            raise TerminalLost("the terminal was lost (SIGHUP)")


def _detach_from_terminal() -> None:
    """Point stdin, stdout and stderr at /dev/null: questions read EOF, output is dropped."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    for fd in (0, 1, 2):
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)
