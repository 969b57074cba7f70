"""A run's first or last lines moved in time, told from the log alone (issue 20, attack20r11 M2 b).

Every line keeps the writer's monotonic clock (``mono``, the machine's CLOCK_MONOTONIC, one clock for every process
of a boot) beside its wall clock (``line_clock``: a line the writer raised keeps its clock). Between two lines of one
machine, wall time elapsed minus monotonic time elapsed is the wall clock's step between them (0 when none). A step
of the wall clock stays: every later line shows it. A run's opening lines whose wall clock is behind both the log's
line before them and the run's next line (a gap that opens and closes again around them) were moved earlier; its
end lines ahead of both the run's line before them and the log's next line were moved later. An honest clock step
inside the run (NTP, a VM resumed) shows once and stays, forward or back: never both ways around one block.

The limit: a step is only told from a move by the lines around it. A first line of the log, or a run's end with no
later line yet, has no neighbour on one side and is not judged; a forward step at a run's end undone by a step back
before the next line reads as a move; lines of another machine or boot (another ``actor`` host, or a monotonic
clock behind) are not compared."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence

from .reach import line_clock

__all__ = ["moved_problem", "MOVE_TOLERANCE", "reading", "step"]

#: how far (seconds) the wall clock may run apart from the monotonic clock between two lines without being a step
#: (the two are read a moment apart; as the witness checks' OFFSET_TOLERANCE)
MOVE_TOLERANCE = 1.0


def reading(e: Mapping[str, object]) -> tuple[float, float, object] | None:
    """(wall clock, mono, the actor's host) of a line, or None without a monotonic reading or a readable time."""
    mono = e.get("mono")
    if type(mono) not in (int, float):
        return None
    try:
        at = _dt.datetime.fromisoformat(str(line_clock(e)).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    actor = e.get("actor")
    return at, float(str(mono)), actor.get("host") if isinstance(actor, dict) else None


def step(a: tuple[float, float, object], b: tuple[float, float, object]) -> float | None:
    """The wall clock's step from line a to the later line b (wall elapsed minus monotonic elapsed); None when the
    two cannot be compared (another machine, or b's monotonic clock behind: another boot)."""
    if a[2] != b[2] or b[1] < a[1]:
        return None
    return (b[0] - a[0]) - (b[1] - a[1])


def _block(lines: Sequence[tuple[int, Mapping[str, object], tuple[float, float, object]]],
           before: tuple[float, float, object] | None, after: tuple[float, float, object] | None,
           sign: float) -> float | None:
    """The step (seconds) by which ``lines`` (a block at a run's start, ``sign`` -1: moved earlier; or at its end,
    +1: moved later) stands apart from both the line ``before`` it and the line ``after`` it, or None."""
    if before is None or after is None:
        return None
    into, out = step(before, lines[0][2]), step(lines[-1][2], after)
    if into is None or out is None:
        return None
    # moved earlier: a step back into the block, forward out of it; moved later: forward in, back out
    moved = min(-into, out) if sign < 0 else min(into, -out)
    return moved if moved > MOVE_TOLERANCE else None


def moved_problem(log: Sequence[Mapping[str, object]], runs: Mapping[str, Sequence[int]]) -> tuple[int, str] | None:
    """The first run whose opening lines were moved earlier, or whose end lines were moved later (module doc):
    (the line, why). ``log``: every line of the log in order (index = line - 1); ``runs``: each run's line
    numbers, in order."""
    def read(n: int) -> tuple[float, float, object] | None:
        return reading(log[n - 1]) if 1 <= n <= len(log) else None

    def neighbour(n: int, direction: int, run: str) -> tuple[float, float, object] | None:
        """The nearest line before (-1) or after (+1) line ``n`` with a reading, outside ``run``."""
        m = n + direction
        while 1 <= m <= len(log):
            if log[m - 1].get("run") != run:
                r = read(m)
                if r is not None:
                    return r
            m += direction
        return None

    for run, numbers in runs.items():
        mine = [(n, log[n - 1], r) for n in numbers for r in [read(n)] if r is not None]
        if len(mine) < 2:
            continue
        # the block at the start: the opening line and every line after it at the same clock (within tolerance),
        # up to the first line that stands apart
        first = 1
        while first < len(mine) and abs(step(mine[first - 1][2], mine[first][2]) or 0.0) <= MOVE_TOLERANCE:
            first += 1
        if first < len(mine):
            by = _block(mine[:first], neighbour(mine[0][0], -1, run), mine[first][2], -1)
            if by is not None:
                n = mine[0][0]
                return n, (f"the {mine[0][1].get('event')} line of run {run} and the run's lines up to line "
                           f"{mine[first - 1][0]} were moved {by:.3f} s earlier: their wall clock is behind both the "
                           f"log's line before them and line {mine[first][0]}, by more than the writer's monotonic "
                           "clock shows (a clock step stays for every later line; this gap closes again)")
        last = len(mine) - 1
        while last > 0 and abs(step(mine[last - 1][2], mine[last][2]) or 0.0) <= MOVE_TOLERANCE:
            last -= 1
        if last > 0:
            by = _block(mine[last:], mine[last - 1][2], neighbour(mine[-1][0], 1, run), 1)
            if by is not None:
                n = mine[last][0]
                return n, (f"the {mine[last][1].get('event')} line of run {run} and the run's lines after it were "
                           f"moved {by:.3f} s later: their wall clock is ahead of both line {mine[last - 1][0]} and "
                           "the log's next line, by more than the writer's monotonic clock shows (a clock step stays "
                           "for every later line; this gap closes again)")
    return None
