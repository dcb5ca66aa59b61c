"""Which stored rows answer a time range: the sans-I/O arithmetic of history levels.

Owns the levels (raw intervals, minutes, hours, UTC days), their alignment, and the plan of a
range query: the range ``[from, to)`` is cut into the coarsest pieces the store holds whole --
full days already rolled up, then full hours, then full minutes, then raw interval rows at
the edges -- so a query over a day reads about 24 hour rows per template instead of 8,640
interval rows, and the answer is exactly the same (rollups add buckets). A row belongs to the period its interval
*starts* in; the same rule places raw rows in minutes and minutes in hours.

Whatever retention already removed is reported as not covered; because every level keeps
its newest data longest, the part not covered is always the oldest end of a range.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW, MINUTE, HOUR, DAY = 0, 1, 2, 3
LEVEL_NAMES = {RAW: "interval", MINUTE: "minute", HOUR: "hour", DAY: "day"}
MINUTE_NS = 60 * 10**9
HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS
PERIOD_NS = {MINUTE: MINUTE_NS, HOUR: HOUR_NS, DAY: DAY_NS}


def floor_to(t: int, period: int) -> int:
    return t - t % period


def ceil_to(t: int, period: int) -> int:
    return -((-t) // period) * period


@dataclass(frozen=True)
class Marks:
    """What the store holds, as times (ns since the epoch).

    ``minutes_until``/``hours_until``/``days_until``: every minute (hour, day) that starts
    before this time has been rolled up. ``raw_from``/``minutes_from``/...: rows starting
    earlier were removed from that level by retention or the byte bound.
    """

    minutes_until: int = 0
    hours_until: int = 0
    days_until: int = 0
    raw_from: int = 0
    minutes_from: int = 0
    hours_from: int = 0
    days_from: int = 0

    def until(self, level: int) -> int:
        return (0, self.minutes_until, self.hours_until, self.days_until)[level]

    def held_from(self, level: int) -> int:
        return (self.raw_from, self.minutes_from, self.hours_from, self.days_from)[level]


@dataclass(frozen=True)
class Piece:
    """Rows of ``level`` whose start is in ``[start, end)``."""

    level: int
    start: int
    end: int


@dataclass(frozen=True)
class Plan:
    pieces: tuple[Piece, ...]
    covered_from: int | None  # None: nothing of the range is held
    complete: bool


def plan_range(start: int, end: int, marks: Marks, *, coarsest: int = DAY) -> Plan:
    """The pieces that answer ``[start, end)``; levels coarser than ``coarsest`` are not
    used (a series whose steps are not whole hours cannot use hour rows)."""
    pieces: list[Piece] = []
    lost: list[tuple[int, int]] = []
    _cover(start, end, min(coarsest, DAY), marks, pieces, lost)
    pieces.sort(key=lambda p: p.start)
    return Plan(tuple(pieces), pieces[0].start if pieces else None, not lost)


def _cover(start: int, end: int, level: int, marks: Marks, pieces: list[Piece], lost: list[tuple[int, int]]) -> None:
    """Cover ``[start, end)`` with whole periods of ``level`` where they are held, and the
    rest with finer levels."""
    if start >= end:
        return
    if level == RAW:
        held = max(start, marks.raw_from)
        if held > start:
            lost.append((start, min(held, end)))
        if held < end:
            pieces.append(Piece(RAW, held, end))
        return
    period = PERIOD_NS[level]
    low = max(ceil_to(start, period), ceil_to(marks.held_from(level), period))
    high = min(floor_to(end, period), floor_to(marks.until(level), period))
    if low < high:
        pieces.append(Piece(level, low, high))
        _cover(start, low, level - 1, marks, pieces, lost)
        _cover(high, end, level - 1, marks, pieces, lost)
    else:
        _cover(start, end, level - 1, marks, pieces, lost)


def finest_level_for_step(start: int, step: int) -> int:
    """The coarsest level whose rows never straddle two steps of a series from ``start``."""
    if step % DAY_NS == 0 and start % DAY_NS == 0:
        return DAY
    if step % HOUR_NS == 0 and start % HOUR_NS == 0:
        return HOUR
    if step % MINUTE_NS == 0 and start % MINUTE_NS == 0:
        return MINUTE
    return RAW
