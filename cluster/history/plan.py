"""Which stored rows answer a time range: the sans-I/O arithmetic of history levels.

Owns the levels (raw intervals, minutes, hours), their alignment, and the plan of a range
query: the range ``[from, to)`` is cut into the coarsest pieces the store holds whole -- full
hours already rolled up, then full minutes, then raw interval rows at the edges -- so a query
over a day reads about 24 hour rows per template instead of 8,640 interval rows, and the
answer is exactly the same (rollups add buckets). A row belongs to the period its interval
*starts* in; the same rule places raw rows in minutes and minutes in hours.

Whatever retention already removed is reported as not covered; because every level keeps
its newest data longest, the part not covered is always the oldest end of a range.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW, MINUTE, HOUR = 0, 1, 2
LEVEL_NAMES = {RAW: "interval", MINUTE: "minute", HOUR: "hour"}
MINUTE_NS = 60 * 10**9
HOUR_NS = 3600 * 10**9
PERIOD_NS = {MINUTE: MINUTE_NS, HOUR: HOUR_NS}


def floor_to(t: int, period: int) -> int:
    return t - t % period


def ceil_to(t: int, period: int) -> int:
    return -((-t) // period) * period


@dataclass(frozen=True)
class Marks:
    """What the store holds, as times (ns since the epoch).

    ``minutes_until``/``hours_until``: every minute (hour) that starts before this time has
    been rolled up. ``raw_from``/``minutes_from``/``hours_from``: rows starting earlier
    were removed from that level by retention or the byte bound.
    """

    minutes_until: int = 0
    hours_until: int = 0
    raw_from: int = 0
    minutes_from: int = 0
    hours_from: int = 0


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


def plan_range(start: int, end: int, marks: Marks, *, coarsest: int = HOUR) -> Plan:
    """The pieces that answer ``[start, end)``; levels coarser than ``coarsest`` are not
    used (a series whose steps are not whole hours cannot use hour rows)."""
    pieces: list[Piece] = []
    lost: list[tuple[int, int]] = []
    rests = [(start, end)]
    if coarsest >= HOUR:
        low = max(ceil_to(start, HOUR_NS), ceil_to(marks.hours_from, HOUR_NS))
        high = min(floor_to(end, HOUR_NS), floor_to(marks.hours_until, HOUR_NS))
        if low < high:
            pieces.append(Piece(HOUR, low, high))
            rests = [(start, low), (high, end)]
    for rest_start, rest_end in rests:
        if rest_start >= rest_end:
            continue
        raws = [(rest_start, rest_end)]
        if coarsest >= MINUTE:
            low = max(ceil_to(rest_start, MINUTE_NS), ceil_to(marks.minutes_from, MINUTE_NS))
            high = min(floor_to(rest_end, MINUTE_NS), floor_to(marks.minutes_until, MINUTE_NS))
            if low < high:
                pieces.append(Piece(MINUTE, low, high))
                raws = [(rest_start, low), (high, rest_end)]
        for raw_start, raw_end in raws:
            if raw_start >= raw_end:
                continue
            held = max(raw_start, marks.raw_from)
            if held > raw_start:
                lost.append((raw_start, min(held, raw_end)))
            if held < raw_end:
                pieces.append(Piece(RAW, held, raw_end))
    pieces.sort(key=lambda p: p.start)
    return Plan(tuple(pieces), pieces[0].start if pieces else None, not lost)


def finest_level_for_step(start: int, step: int) -> int:
    """The coarsest level whose rows never straddle two steps of a series from ``start``."""
    if step % HOUR_NS == 0 and start % HOUR_NS == 0:
        return HOUR
    if step % MINUTE_NS == 0 and start % MINUTE_NS == 0:
        return MINUTE
    return RAW
