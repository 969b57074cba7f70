"""Ctrl-C and a lost terminal during ``upgrader guide``; Ctrl-C during ``run``, ``resume`` and ``rollback``.

Before the run starts, Ctrl-C is Python's ``KeyboardInterrupt`` and a hang-up (SIGHUP) only marks the
terminal lost (and points stdin, stdout and stderr at /dev/null): the guide raises ``TerminalLost`` at
its next question (``check_terminal``), never from inside a step, so a step that writes (an access
grant) is never cut between its write and the guide's record of it. Inside ``protected()`` Ctrl-C is
held too and raised when the block ends. From ``running()`` on, neither stops the program: Ctrl-C sets
``cancel`` (the engine checks it between phases: before stop the host is released unchanged, after stop
it is rolled back) and every further Ctrl-C only asks for patience; after a hang-up the run goes on to
its end, recorded in the journal and the audit log.

This module only handles signals; it decides nothing about hosts.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable

__all__ = ["Interrupts", "TerminalLost", "pause_for_test"]


class TerminalLost(Exception):
    """SIGHUP before the run started: nobody is left to answer the questions."""


class Interrupts:
    """``echo`` (message key -> text): also write that text to stderr at once when Ctrl-C is pressed, for
    commands that do not poll ``notes()`` (``run``, ``resume``, ``rollback``)."""

    def __init__(self, echo: dict[str, str] | None = None) -> None:
        self.cancel = threading.Event()
        self.hung_up = False
        self.presses = 0
        self.echo = echo or {}
        self._notes: list[str] = []
        self._lock = threading.Lock()
        self._saved: dict[int, Any] = {}

    def install(self) -> None:
        self._saved[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)

    def restore(self) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()

    def check_terminal(self) -> None:
        """At a question point before the run: raise ``TerminalLost`` if the terminal was lost."""
        if self.hung_up:
            raise TerminalLost("the terminal was lost (SIGHUP)")

    @contextmanager
    def protected(self) -> Iterator[None]:
        """A step that must not be cut in half: a Ctrl-C during it is raised when it ends."""
        held: list[int] = []
        previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
        if held:
            raise KeyboardInterrupt

    @contextmanager
    def running(self) -> Iterator[None]:
        """While the run goes: Ctrl-C cancels (at the engine's next safe point) instead of raising. Enter it
        before the run is started, so that a run, once started, always reaches its end and its records.
        Outside the main thread (upgrader called as a library) signals are not ours: nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
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
        key = "cancel_first" if self.presses == 1 else "cancel_again"
        self._notes.append(key)
        if key in self.echo:
            try:  # os.write: a signal handler must not take the locks of Python's buffered streams
                os.write(2, f"\n{self.echo[key]}\n".encode("utf-8", "replace"))
            except OSError:
                pass

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        if not self.hung_up:
            self.hung_up = True
            _detach_from_terminal()


def pause_for_test(point: str, until: Callable[[], bool]) -> None:
    """A fault point of the guide (``guide:<point>``, with ``until``: true once the test has pressed Ctrl-C or
    hung up); see faults.py. Nothing happens in the product."""
    from . import faults

    faults.point(f"guide:{point}", until=until)


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
