"""Query history: per-interval rows per (server, db, user, template key), rolled up without
losing mergeability, bounded in time and bytes, queried over any range.

Owns the rows and their life:

- ``write(source, start, end, templates, now)``: one interval's templates become raw rows, in
  one transaction with everything else that interval does (template texts upserted once per
  key, rollups and pruning due at ``now``). A report already written (same source and
  interval start) is skipped, so a master that republishes after a crash counts nothing twice.
- Rollups: a closed minute becomes one row per series whose sketch is the bucket-wise sum
  of its raw rows; a closed hour, the sum of its minutes; a closed UTC day, the sum of its
  hours. A row that arrives for a period already rolled up is added into those rollups too.
- Retention per level (``Retention``), then a byte bound over all rows: the oldest rows that
  a coarser level already holds go first; rows removed for space are counted.
- ``top``/``series``/``template``: answers computed from merged rows (see ``plan``), quantiles
  from merged sketches, never from averaged quantiles.

Sans-I/O in time: every method that depends on the clock takes ``now`` (ns).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cluster.history.codec import (
    UNBOUNDED_KEY,
    SketchSum,
    bucket_value,
    decode_sketch,
    encode_sketch,
    quantile_bound_key,
)
from cluster.history.db import Database
from cluster.history.plan import (
    DAY,
    DAY_NS,
    HOUR,
    HOUR_NS,
    LEVEL_NAMES,
    MINUTE,
    MINUTE_NS,
    PERIOD_NS,
    RAW,
    Marks,
    Piece,
    Plan,
    finest_level_for_step,
    floor_to,
    plan_range,
)
from message.report import TemplateStats

#: Bytes a row is charged for its columns and index entries, besides its sketch and extra.
ROW_OVERHEAD = 120
ORDERS = ("load", "calls", "errors", "p99")
QUANTILES = (0.5, 0.95, 0.99, 0.999)

_COLUMNS = (
    "level, start_ns, series, calls, errors, lat_sum, lat_min, lat_max, rows_sent, rows_affected,"
    " bytes_in, bytes_out, no_index_used, first_seen_ns, last_seen_ns, extra, sketch, p99_key"
)
_INSERT_ROW = f"INSERT INTO history_rows ({_COLUMNS}) VALUES ({', '.join('?' * 18)})"
_MARK_NAMES = ("minutes_until", "hours_until", "days_until", "raw_from", "minutes_from", "hours_from", "days_from")
#: Reported quantiles are clamped into [min, max], which may lift one by up to the sketch's
#: relative error above its bucket's value: bounds are widened by this much.
_CLAMP_MARGIN = 1.03
_UNTIL = {MINUTE: "minutes_until", HOUR: "hours_until", DAY: "days_until"}
_FROM = {RAW: "raw_from", MINUTE: "minutes_from", HOUR: "hours_from", DAY: "days_from"}


@dataclass(frozen=True)
class Retention:
    """How long each level is kept, the byte bound, and how late a report may come."""

    raw_ns: int = 24 * HOUR_NS
    minute_ns: int = 7 * DAY_NS
    hour_ns: int = 90 * DAY_NS
    max_bytes: int = 1 << 30
    late_ns: int = 2 * MINUTE_NS
    """A minute is rolled up this long after it ends (later rows are still added to it)."""


SeriesKey = tuple[str, str, str, str]  # server, db, user, template key


def _extra(stats: TemplateStats) -> str:
    extra: dict[str, Any] = {}
    if stats.commands:
        extra["commands"] = stats.commands
    if stats.errors:
        extra["errors"] = stats.errors
    for name in ("ttfb_sum", "no_good_index_used", "warnings", "incomplete"):
        value = getattr(stats, name)
        if value:
            extra[name] = value
    return json.dumps(extra, separators=(",", ":"), sort_keys=True)


def _add_extra(stats: TemplateStats, text: str) -> None:
    extra = json.loads(text)
    for name, n in extra.get("commands", {}).items():
        stats.commands[name] = stats.commands.get(name, 0) + n
    for code, n in extra.get("errors", {}).items():
        stats.errors[code] = stats.errors.get(code, 0) + n
    for name in ("ttfb_sum", "no_good_index_used", "warnings", "incomplete"):
        if name in extra:
            setattr(stats, name, getattr(stats, name) + int(extra[name]))


def _row(level: int, start: int, series: int, stats: TemplateStats) -> tuple[Any, ...]:
    return (
        level,
        start,
        series,
        stats.count,
        stats.error_count,
        stats.latency_sum,
        stats.latency_min,
        stats.latency_max,
        stats.rows_sent,
        stats.rows_affected,
        stats.bytes_in,
        stats.bytes_out,
        stats.no_index_used,
        stats.first_seen_ns,
        stats.last_seen_ns,
        _extra(stats),
        encode_sketch(stats.sketch),
        quantile_bound_key(stats.sketch, 0.99),
    )


def _stats(row: Sequence[Any], key: SeriesKey) -> TemplateStats:
    """A row (columns from ``calls`` on) as statistics."""
    stats = _accumulate(TemplateStats(key[0], key[1], key[3], ""), row)
    stats.sketch = decode_sketch(bytes(row[13]))
    return stats


class _Tally:
    """A sum of rows in progress: the counters in a ``TemplateStats``, the sketch in a
    dense ``SketchSum`` (adding a stored sketch is one slice operation)."""

    __slots__ = ("sketch", "stats")

    def __init__(self, key: SeriesKey) -> None:
        self.stats = TemplateStats(key[0], key[1], key[3], "")
        self.sketch = SketchSum()

    def add(self, row: Sequence[Any]) -> None:
        """Add a row (columns from ``calls`` on)."""
        _accumulate(self.stats, row)
        self.sketch.add_encoded(bytes(row[13]))

    def result(self) -> TemplateStats:
        self.stats.sketch = self.sketch.sketch()
        return self.stats


def _accumulate(stats: TemplateStats, row: Sequence[Any]) -> TemplateStats:
    """Add the counters of a row (columns from ``calls`` on) into ``stats``, as
    ``TemplateStats.merge`` would; the caller adds the sketch."""
    calls = int(row[0])
    if calls <= 0:
        return stats
    if stats.count == 0:
        stats.latency_min = int(row[3])
        stats.first_seen_ns = int(row[10])
    else:
        stats.latency_min = min(stats.latency_min, int(row[3]))
        stats.first_seen_ns = min(stats.first_seen_ns, int(row[10]))
    stats.latency_max = max(stats.latency_max, int(row[4]))
    stats.last_seen_ns = max(stats.last_seen_ns, int(row[11]))
    stats.count += calls
    stats.latency_sum += int(row[2])
    stats.rows_sent += int(row[5])
    stats.rows_affected += int(row[6])
    stats.bytes_in += int(row[7])
    stats.bytes_out += int(row[8])
    stats.no_index_used += int(row[9])
    _add_extra(stats, row[12])
    return stats


def _row_bytes(extra: str, sketch: bytes) -> int:
    return ROW_OVERHEAD + len(extra) + len(sketch)


def _each_piece(pieces: Sequence[Piece]) -> Iterator[tuple[str, list[Any]]]:
    """A WHERE condition per piece: one statement per piece keeps each an index range scan
    (PostgreSQL scans the whole table for an OR of ranges)."""
    for piece in pieces:
        yield "r.level = ? AND r.start_ns >= ? AND r.start_ns < ?", [piece.level, piece.start, piece.end]


class HistoryStore:
    def __init__(self, db: Database, retention: Retention | None = None) -> None:
        self.db = db
        self.retention = retention or Retention()
        self._series: dict[SeriesKey, int] = {}
        self._series_by_id: dict[int, SeriesKey] = {}
        self.reports_written = 0
        self.duplicates = 0
        self.p99_merged = 0  # templates merged by the last ranking by p99

    # -- meta ---------------------------------------------------------------------------

    def _meta(self) -> dict[str, int]:
        return {str(name): int(value) for name, value in self.db.query("SELECT name, value FROM history_meta")}

    def _set_meta(self, values: Mapping[str, int]) -> None:
        for name, value in values.items():
            self.db.execute("DELETE FROM history_meta WHERE name = ?", (name,))
            self.db.execute("INSERT INTO history_meta (name, value) VALUES (?, ?)", (name, int(value)))

    def marks(self) -> Marks:
        meta = self._meta()
        return Marks(**{name: meta.get(name, 0) for name in _MARK_NAMES})

    # -- series ids ---------------------------------------------------------------------

    def _load_series(self) -> None:
        for ident, server, db, usr, key in self.db.query("SELECT id, server, db, usr, key FROM history_series"):
            series = (str(server), str(db), str(usr), str(key))
            self._series[series] = int(ident)
            self._series_by_id[int(ident)] = series

    def _series_ids(self, keys: Iterable[SeriesKey]) -> dict[SeriesKey, int]:
        wanted = set(keys)
        unknown = [k for k in wanted if k not in self._series]
        if unknown:
            self._load_series()
            unknown = [k for k in unknown if k not in self._series]
        if unknown:
            self.db.executemany(
                "INSERT INTO history_series (server, db, usr, key) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                unknown,
            )
            self._load_series()
        return {k: self._series[k] for k in wanted}

    def _series_key(self, ident: int) -> SeriesKey:
        if ident not in self._series_by_id:
            self._load_series()
        return self._series_by_id[ident]

    # -- writing ------------------------------------------------------------------------

    def write(
        self,
        source: str,
        start_ns: int,
        templates: Sequence[TemplateStats],
        now_ns: int,
    ) -> bool:
        """Store one interval of ``source`` (a node) starting at ``start_ns``: the templates'
        statistics, each under its own (server, db, user, key). Returns False when this
        interval of this source was written before."""
        db = self.db
        db.begin()
        try:
            if db.query("SELECT 1 FROM history_reports WHERE source = ? AND start_ns = ?", (source, start_ns)):
                db.rollback()
                self.duplicates += 1
                return False
            db.execute("INSERT INTO history_reports (source, start_ns) VALUES (?, ?)", (source, start_ns))
            merged: dict[SeriesKey, TemplateStats] = {}
            texts: dict[str, TemplateStats] = {}
            for stats in templates:
                if stats.count <= 0:
                    continue
                key = (stats.server, stats.db, stats.user, stats.key)
                have = merged.get(key)
                if have is None:
                    merged[key] = have = TemplateStats(stats.server, stats.db, stats.key, stats.template)
                have.merge(stats)
                text = texts.get(stats.key)
                if text is None:
                    texts[stats.key] = text = TemplateStats("", "", stats.key, stats.template)
                text.merge(stats)
            self._upsert_texts(texts.values())
            ids = self._series_ids(merged)
            rows = {ids[k]: v for k, v in merged.items()}
            meta = self._meta()
            delta = self._add_into(RAW, start_ns, rows)
            if start_ns < meta.get("minutes_until", 0):
                delta += self._add_into(MINUTE, floor_to(start_ns, MINUTE_NS), rows)
            if start_ns < meta.get("hours_until", 0):
                delta += self._add_into(HOUR, floor_to(start_ns, HOUR_NS), rows)
            if start_ns < meta.get("days_until", 0):
                delta += self._add_into(DAY, floor_to(start_ns, DAY_NS), rows)
            began = meta.get("began_ns", 0)
            self._set_meta(
                {
                    "stored_bytes": meta.get("stored_bytes", 0) + delta,
                    "began_ns": start_ns if began == 0 else min(began, start_ns),
                }
            )
            self._compact(now_ns)
            db.commit()
        except BaseException:
            db.rollback()
            raise
        self.reports_written += 1
        return True

    def _upsert_texts(self, texts: Iterable[TemplateStats]) -> None:
        self.db.executemany(
            "INSERT INTO history_templates (key, text, first_seen_ns, last_seen_ns) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET"
            " text = CASE WHEN history_templates.text = '' THEN excluded.text ELSE history_templates.text END,"
            " first_seen_ns = CASE WHEN excluded.first_seen_ns < history_templates.first_seen_ns"
            " THEN excluded.first_seen_ns ELSE history_templates.first_seen_ns END,"
            " last_seen_ns = CASE WHEN excluded.last_seen_ns > history_templates.last_seen_ns"
            " THEN excluded.last_seen_ns ELSE history_templates.last_seen_ns END",
            [(t.key, t.template, t.first_seen_ns, t.last_seen_ns) for t in texts],
        )

    def _add_into(self, level: int, start: int, rows: Mapping[int, TemplateStats]) -> int:
        """Add statistics into the rows of ``level`` at ``start`` (creating them or merging
        into those there); returns the change in stored bytes."""
        if not rows:
            return 0
        delta = 0
        existing = self.db.query(
            "SELECT series, calls, errors, lat_sum, lat_min, lat_max, rows_sent, rows_affected, bytes_in,"
            " bytes_out, no_index_used, first_seen_ns, last_seen_ns, extra, sketch"
            " FROM history_rows WHERE level = ? AND start_ns = ?",
            (level, start),
        )
        combined = dict(rows)
        replaced = []
        for row in existing:
            ident = int(row[0])
            if ident not in rows:
                continue
            stats = _stats(row[1:], self._series_key(ident))
            stats.merge(rows[ident])
            combined[ident] = stats
            replaced.append((level, start, ident))
            delta -= _row_bytes(row[13], bytes(row[14]))
        if replaced:
            self.db.executemany("DELETE FROM history_rows WHERE level = ? AND start_ns = ? AND series = ?", replaced)
        new_rows = [_row(level, start, ident, stats) for ident, stats in combined.items()]
        self.db.executemany(_INSERT_ROW, new_rows)
        delta += sum(_row_bytes(r[15], r[16]) for r in new_rows)
        return delta

    # -- rollups, retention, byte bound ---------------------------------------------------

    def compact(self, now_ns: int) -> None:
        """Roll up, prune and enforce the byte bound as of ``now_ns`` (``write`` does this
        too, in its transaction)."""
        self.db.begin()
        try:
            self._compact(now_ns)
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise

    def _compact(self, now: int) -> None:
        meta = self._meta()
        ret = self.retention
        added = 0
        # Minutes from raw rows once they ended ``late_ns`` ago; hours from minutes and days
        # from hours once all their parts are rolled up.
        for level in (MINUTE, HOUR, DAY):
            period = PERIOD_NS[level]
            if level == MINUTE:
                target = floor_to(now - ret.late_ns, MINUTE_NS)
            else:
                target = floor_to(meta[_UNTIL[level - 1]], period)
            done = meta.get(_UNTIL[level], 0)
            if done == 0:
                oldest = self.db.query("SELECT MIN(start_ns) FROM history_rows WHERE level = ?", (level - 1,))[0][0]
                done = floor_to(int(oldest), period) if oldest is not None else target
            if done < target:
                added += self._roll(level - 1, level, done, target)
                done = target
            meta[_UNTIL[level]] = max(done, meta.get(_UNTIL[level], 0))
        stored = meta.get("stored_bytes", 0) + added
        # Retention: never drop rows a coarser level does not hold yet. Days are kept as
        # long as hours (they exist to answer long ranges with fewer rows).
        cutoffs = {
            RAW: min(now - ret.raw_ns, meta["minutes_until"]),
            MINUTE: min(floor_to(now - ret.minute_ns, MINUTE_NS), meta["hours_until"]),
            HOUR: min(floor_to(now - ret.hour_ns, HOUR_NS), meta["days_until"]),
            DAY: floor_to(now - ret.hour_ns, DAY_NS),
        }
        for level, cutoff in cutoffs.items():
            if cutoff > meta.get(_FROM[level], 0):
                stored -= self._delete(level, cutoff)[1]
                meta[_FROM[level]] = cutoff
        self.db.execute("DELETE FROM history_reports WHERE start_ns < ?", (cutoffs[RAW],))
        oldest_kept = min(meta.get("hours_from", 0), meta.get("days_from", 0))
        self.db.execute("DELETE FROM history_templates WHERE last_seen_ns < ?", (oldest_kept,))
        meta["stored_bytes"] = stored
        self._bound_bytes(meta)
        self._set_meta(meta)

    def _roll(self, source: int, target: int, start: int, end: int) -> int:
        """Sum rows of ``source`` starting in ``[start, end)`` into ``target`` rows, one
        chunk at a time; returns the bytes added."""
        period = PERIOD_NS[target]
        chunk = {MINUTE: HOUR_NS, HOUR: DAY_NS, DAY: 7 * DAY_NS}[target]
        added = 0
        cursor = start
        while cursor < end:
            first = self.db.query(
                "SELECT MIN(start_ns) FROM history_rows WHERE level = ? AND start_ns >= ? AND start_ns < ?",
                (source, cursor, end),
            )[0][0]
            if first is None:
                break
            cursor = floor_to(int(first), period)
            upto = min(end, cursor + chunk)
            periods: dict[int, dict[int, _Tally]] = {}
            for row in self.db.query(
                "SELECT start_ns, series, calls, errors, lat_sum, lat_min, lat_max, rows_sent, rows_affected,"
                " bytes_in, bytes_out, no_index_used, first_seen_ns, last_seen_ns, extra, sketch"
                " FROM history_rows WHERE level = ? AND start_ns >= ? AND start_ns < ?",
                (source, cursor, upto),
            ):
                ident = int(row[1])
                bucket = periods.setdefault(floor_to(int(row[0]), period), {})
                tally = bucket.get(ident)
                if tally is None:
                    tally = bucket[ident] = _Tally(self._series_key(ident))
                tally.add(row[2:])
            for period_start, tallies in sorted(periods.items()):
                added += self._add_into(target, period_start, {i: t.result() for i, t in tallies.items()})
            cursor = upto
        return added

    def _delete(self, level: int, before: int) -> tuple[int, int]:
        """Delete rows of ``level`` starting before ``before``: (rows, bytes) removed."""
        count, size = self.db.query(
            "SELECT COUNT(*), COALESCE(SUM(length(extra) + length(sketch)), 0) FROM history_rows"
            " WHERE level = ? AND start_ns < ?",
            (level, before),
        )[0]
        if count:
            self.db.execute("DELETE FROM history_rows WHERE level = ? AND start_ns < ?", (level, before))
        return int(count), int(size) + ROW_OVERHEAD * int(count)

    def _bound_bytes(self, meta: dict[str, int]) -> None:
        """Over ``max_bytes``: drop the oldest hour of raw rows already rolled up, then of
        minutes already rolled up, then the oldest day of hours already rolled up, then the
        oldest day, until under the bound."""
        for _ in range(100_000):
            if meta.get("stored_bytes", 0) <= self.retention.max_bytes:
                return
            for level, mark, limit, step in (
                (RAW, "raw_from", meta.get("minutes_until", 0), HOUR_NS),
                (MINUTE, "minutes_from", meta.get("hours_until", 0), HOUR_NS),
                (HOUR, "hours_from", meta.get("days_until", 0), DAY_NS),
                (DAY, "days_from", None, DAY_NS),
            ):
                oldest = self.db.query(
                    "SELECT MIN(start_ns) FROM history_rows WHERE level = ? AND start_ns < ?",
                    (level, limit if limit is not None else 2**62),
                )[0][0]
                if oldest is None:
                    continue
                before = floor_to(int(oldest), step) + step
                if limit is not None:
                    before = min(before, limit)
                if level == DAY:
                    newest = self.db.query("SELECT MAX(start_ns) FROM history_rows WHERE level = ?", (DAY,))[0][0]
                    if newest is not None and before > int(newest):
                        continue  # keep the newest day whatever the bound
                rows, size = self._delete(level, before)
                meta["stored_bytes"] = meta.get("stored_bytes", 0) - size
                meta["dropped_for_space"] = meta.get("dropped_for_space", 0) + rows
                meta[mark] = max(meta.get(mark, 0), before)
                break
            else:
                return

    # -- queries --------------------------------------------------------------------------

    def _filters(self, server: str | None, db: str | None, user: str | None) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for column, value in (("server", server), ("db", db), ("usr", user)):
            if value is not None:
                clauses.append(f" AND s.{column} = ?")
                params.append(value)
        return "".join(clauses), params

    def top(
        self,
        start: int,
        end: int,
        *,
        server: str | None = None,
        db: str | None = None,
        user: str | None = None,
        order: str = "load",
        limit: int = 20,
    ) -> dict[str, Any]:
        """Templates ranked over ``[start, end)`` (see README "History" for the shape)."""
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}")
        plan = plan_range(start, end, self.marks())
        answer = self._frame(start, end, plan)
        answer.update({"order": order, "limit": limit, "templates": [], "templates_total": 0})
        if not plan.pieces:
            return answer
        filters, filter_params = self._filters(server, db, user)
        sums: dict[tuple[str, str, str], list[int]] = {}
        members: dict[tuple[str, str, str], set[int]] = {}
        rows = [
            row
            for where, params in _each_piece(plan.pieces)
            for row in self.db.query(
                "SELECT r.series, SUM(r.calls), SUM(r.errors), SUM(r.lat_sum), MAX(COALESCE(r.p99_key, ?))"
                " FROM history_rows r JOIN history_series s ON s.id = r.series"
                f" WHERE {where}{filters} GROUP BY r.series",
                [UNBOUNDED_KEY, *params, *filter_params],
            )
        ]
        for row in rows:
            ident = int(row[0])
            server_, db_, _, key = self._series_key(ident)
            group = (server_, db_, key)
            have = sums.setdefault(group, [0, 0, 0, int(row[4])])
            for i in range(3):
                have[i] += int(row[1 + i])
            have[3] = max(have[3], int(row[4]))
            members.setdefault(group, set()).add(ident)
        answer["templates_total"] = len(sums)
        if order == "p99":
            entries = self._top_by_p99(plan.pieces, sums, members, limit)
        else:
            column = {"load": 2, "calls": 0, "errors": 1}[order]
            chosen = sorted(sums, key=lambda g: (-sums[g][column], -sums[g][2], g))[:limit]
            entries = self._groups(plan.pieces, chosen, members)
        texts = self._texts({s.key for s in entries})
        out = []
        for stats in entries:
            stats.template = texts.get(stats.key, ("", 0, 0))[0]
            entry = stats.to_json()
            entry["latency_us"].pop("sketch")
            entry["latency_us"]["avg"] = stats.latency_sum / stats.count if stats.count else None
            entry["error_count"] = stats.error_count
            out.append(entry)
        answer["templates"] = out
        return answer

    def _groups(
        self, pieces: Sequence[Piece], groups: Sequence[tuple[str, str, str]], members: Mapping[Any, Collection[int]]
    ) -> list[TemplateStats]:
        """The merged statistics of each (server, db, key) group, over all its series."""
        merged = self._merge_series(pieces, [i for g in groups for i in members[g]])
        out = []
        for group in groups:
            stats = TemplateStats(group[0], group[1], group[2], "")
            for ident in members[group]:
                if ident in merged:
                    stats.merge(merged[ident])
            out.append(stats)
        return out

    def _top_by_p99(
        self,
        pieces: Sequence[Piece],
        sums: Mapping[tuple[str, str, str], list[int]],
        members: Mapping[Any, Collection[int]],
        limit: int,
    ) -> list[TemplateStats]:
        """The ``limit`` templates of highest p99 (as reported: clamped into [min, max]),
        exactly, merging as few as needed: a template's p99 is at most the value of its rows'
        largest bound key (plus the clamp margin), so templates are merged in order of that
        bound until the last kept p99 beats the next bound."""
        candidates = sorted(sums, key=lambda g: (-sums[g][3], g))
        kept: list[tuple[float, TemplateStats]] = []
        batch = max(limit, 50)
        self.p99_merged = 0
        for offset in range(0, len(candidates), batch):
            self.p99_merged += len(candidates[offset : offset + batch])
            for stats in self._groups(pieces, candidates[offset : offset + batch], members):
                kept.append((stats.quantiles((0.99,))[0] or 0.0, stats))
            kept.sort(key=lambda item: (-item[0], -item[1].latency_sum, item[1].key))
            del kept[limit:]
            following = offset + batch
            if (
                following < len(candidates)
                and len(kept) >= limit
                and kept[-1][0] > bucket_value(sums[candidates[following]][3]) * _CLAMP_MARGIN
            ):
                break
        return [stats for _, stats in kept]

    def _merge_series(self, pieces: Sequence[Piece], idents: Sequence[int]) -> dict[int, TemplateStats]:
        merged: dict[int, _Tally] = {}
        if not idents:
            return {}
        for offset in range(0, len(idents), 500):
            batch = idents[offset : offset + 500]
            for row in (
                row
                for where, params in _each_piece(pieces)
                for row in self.db.query(
                    "SELECT r.series, r.calls, r.errors, r.lat_sum, r.lat_min, r.lat_max, r.rows_sent,"
                    " r.rows_affected, r.bytes_in, r.bytes_out, r.no_index_used, r.first_seen_ns, r.last_seen_ns,"
                    f" r.extra, r.sketch FROM history_rows r WHERE {where}"
                    f" AND r.series IN ({', '.join('?' * len(batch))})",
                    params + list(batch),
                )
            ):
                ident = int(row[0])
                tally = merged.get(ident)
                if tally is None:
                    tally = merged[ident] = _Tally(self._series_key(ident))
                tally.add(row[1:])
        return {ident: tally.result() for ident, tally in merged.items()}

    def _texts(self, keys: Iterable[str]) -> dict[str, tuple[str, int, int]]:
        wanted = sorted(keys)
        out: dict[str, tuple[str, int, int]] = {}
        for offset in range(0, len(wanted), 500):
            batch = wanted[offset : offset + 500]
            for key, text, first, last in self.db.query(
                "SELECT key, text, first_seen_ns, last_seen_ns FROM history_templates"
                f" WHERE key IN ({', '.join('?' * len(batch))})",
                batch,
            ):
                out[str(key)] = (str(text), int(first), int(last))
        return out

    def _frame(self, start: int, end: int, plan: Plan) -> dict[str, Any]:
        covered = plan.covered_from
        complete = plan.complete
        began = self._meta().get("began_ns", 0)
        note = None
        if covered is None:
            note = "no history is kept for this range: it is older than every level's retention"
        elif not began or began >= end:
            covered, complete = None, False
            note = "history begins after this range" if began else "no history has been written yet"
        elif not complete:
            note = (
                f"history covers this range from {covered / 1e9:.3f} (unix seconds) on; "
                "older rows were removed by retention or the byte bound"
            )
        elif began > covered:
            covered, complete = began, False
            note = f"history begins at {began / 1e9:.3f} (unix seconds), inside this range"
        return {
            "from": start / 1e9,
            "to": end / 1e9,
            "covers": None if covered is None else {"from": covered / 1e9, "to": end / 1e9},
            "complete": complete,
            "note": note,
            "levels": [{"level": LEVEL_NAMES[p.level], "from": p.start / 1e9, "to": p.end / 1e9} for p in plan.pieces],
        }

    def series(
        self,
        key: str,
        start: int,
        end: int,
        step: int,
        *,
        server: str | None = None,
        db: str | None = None,
        user: str | None = None,
    ) -> dict[str, Any]:
        """Calls, errors and p50/p95/p99 of one template per ``step`` over ``[start, end)``."""
        plan = plan_range(start, end, self.marks(), coarsest=finest_level_for_step(start, step))
        answer = self._frame(start, end, plan)
        answer.update({"key": key, "step": step / 1e9})
        buckets = [_Tally(("", "", "", key)) for _ in range(-((start - end) // step))]
        if plan.pieces:
            filters, filter_params = self._filters(server, db, user)
            for row in (
                row
                for where, params in _each_piece(plan.pieces)
                for row in self.db.query(
                    "SELECT r.start_ns, r.series, r.calls, r.errors, r.lat_sum, r.lat_min, r.lat_max, r.rows_sent,"
                    " r.rows_affected, r.bytes_in, r.bytes_out, r.no_index_used, r.first_seen_ns, r.last_seen_ns,"
                    " r.extra, r.sketch FROM history_rows r JOIN history_series s ON s.id = r.series"
                    f" WHERE {where} AND s.key = ?{filters}",
                    [*params, key, *filter_params],
                )
            ):
                buckets[(int(row[0]) - start) // step].add(row[2:])
        points = []
        for index, tally in enumerate(buckets):
            stats = tally.result()
            p50, p95, p99 = stats.sketch.quantiles((0.5, 0.95, 0.99))
            points.append(
                {
                    "t": (start + index * step) / 1e9,
                    "count": stats.count,
                    "errors": stats.error_count,
                    "latency_sum_us": stats.latency_sum,
                    "p50": p50,
                    "p95": p95,
                    "p99": p99,
                }
            )
        answer["points"] = points
        return answer

    def template(self, key: str) -> dict[str, Any] | None:
        """The text of a template and when it was first and last seen; None if unknown."""
        found = self._texts([key]).get(key)
        if found is None:
            return None
        text, first, last = found
        return {"key": key, "template": text, "first_seen_ns": first, "last_seen_ns": last}

    def merged(self, start: int, end: int, key: str | None = None) -> dict[tuple[str, str, str], TemplateStats]:
        """Every template's statistics over ``[start, end)`` with its merged sketch (for
        tests and tools that want more than ``top``)."""
        plan = plan_range(start, end, self.marks())
        ids = [i for i, k in self._all_series().items() if key is None or k[3] == key]
        out: dict[tuple[str, str, str], TemplateStats] = {}
        for stats in self._merge_series(plan.pieces, ids).values() if plan.pieces else ():
            group = (stats.server, stats.db, stats.key)
            have = out.get(group)
            if have is None:
                out[group] = have = TemplateStats(*group, "")
            have.merge(stats)
        return out

    def _all_series(self) -> dict[int, SeriesKey]:
        self._load_series()
        return dict(self._series_by_id)

    def status(self) -> dict[str, Any]:
        meta = self._meta()
        return {
            "backend": self.db.dialect,
            "schema_version": meta.get("schema_version", 0),
            "stored_bytes": meta.get("stored_bytes", 0),
            "max_bytes": self.retention.max_bytes,
            "dropped_for_space": meta.get("dropped_for_space", 0),
            "reports_written": self.reports_written,
            "duplicates": self.duplicates,
            **{name: meta.get(name, 0) / 1e9 for name in _MARK_NAMES},
        }
