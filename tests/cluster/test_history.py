"""The history store on SQLite and on a throw-away PostgreSQL database: rollups that keep
sketches mergeable, retention per level, the byte bound, duplicates, late rows, range plans.
Time is an argument everywhere: no test sleeps."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.history import HistoryStore, Marks, Retention, open_database, plan_range
from cluster.history.codec import bucket_value, decode_sketch, encode_sketch, quantile_bound_key
from cluster.history.db import MIGRATIONS, SCHEMA_VERSION
from cluster.history.plan import DAY, DAY_NS, HOUR, HOUR_NS, MINUTE, MINUTE_NS, RAW, Piece, floor_to
from message.report import TemplateStats
from message.sketch import LatencySketch
from tests.support.postgres import throwaway_database

S = 10**9
T0 = 1_800_000_000 * S  # an hour boundary: 1_800_000_000 = 500,000 h
INTERVAL = 10 * S


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if request.param == "sqlite":
        yield "", tmp_path / "history.sqlite3"
    else:
        with throwaway_database() as dsn:
            yield dsn, tmp_path


def open_store(backend: tuple[str, Path], retention: Retention | None = None) -> HistoryStore:
    return HistoryStore(open_database(*backend), retention)


def interval_stats(rng: random.Random, key: int, start: int, *, slow: bool = False) -> TemplateStats:
    stats = TemplateStats("127.0.0.1:3306", "shop", f"{key:016x}", f"SELECT * FROM t{key} WHERE id = ?")
    for i in range(rng.randint(5, 40)):
        value = int(rng.lognormvariate(7 if slow else 5, 0.6)) + 1
        stats.count += 1
        stats.commands["Query"] = stats.commands.get("Query", 0) + 1
        stats.latency_sum += value
        stats.latency_min = value if stats.count == 1 else min(stats.latency_min, value)
        stats.latency_max = max(stats.latency_max, value)
        stats.sketch.add(value)
        stats.rows_sent += 2
        if i % 7 == 3:
            stats.errors["1146"] = stats.errors.get("1146", 0) + 1
    stats.first_seen_ns = start + 1
    stats.last_seen_ns = start + INTERVAL - 1
    return stats


def test_top_over_rollups_equals_one_sketch_of_everything(backend: tuple[str, Path]) -> None:
    """Three hours of 10 s intervals: the answer over any range comes from raw, minute and
    hour rows, and equals the merge of every interval; p99 over the range is the p99 of the
    whole run's sketch, not the average of per-interval p99s."""
    rng = random.Random(5)
    store = open_store(backend)
    whole: dict[str, TemplateStats] = {}
    per_interval_p99: dict[str, list[float]] = {}
    intervals = 3 * 360 + 7
    for i in range(intervals):
        start = T0 + 25 * S + i * INTERVAL
        rows = []
        for key in range(6):
            # Template 0 has a bad stretch: a few slow intervals among many fast ones.
            stats = interval_stats(rng, key, start, slow=key == 0 and i % 50 == 0)
            rows.append(stats)
            whole.setdefault(stats.key, TemplateStats(stats.server, stats.db, stats.key, "")).merge(stats)
            per_interval_p99.setdefault(stats.key, []).append(stats.sketch.quantile(0.99) or 0.0)
        assert store.write("slave-1", start, rows, now_ns=start + INTERVAL)
    end = T0 + 25 * S + intervals * INTERVAL
    answer = store.top(T0 + 25 * S, end, order="calls", limit=10)
    assert answer["complete"] and answer["covers"] == {"from": T0 / S + 25, "to": end / S}
    levels = {part["level"] for part in answer["levels"]}
    assert levels == {"interval", "minute", "hour"}
    assert answer["templates_total"] == 6
    for entry in answer["templates"]:
        expected = whole[entry["key"]]
        assert entry["count"] == expected.count
        assert entry["errors"] == expected.errors
        assert entry["commands"] == expected.commands
        assert entry["rows_sent"] == expected.rows_sent
        assert entry["latency_us"]["sum"] == expected.latency_sum
        assert entry["latency_us"]["min"] == expected.latency_min
        assert entry["latency_us"]["max"] == expected.latency_max
        assert entry["latency_us"]["p99"] == expected.quantiles((0.99,))[0]
        assert entry["template"] == f"SELECT * FROM t{int(entry['key'], 16)} WHERE id = ?"
    earlier = store.top(T0, end)
    assert not earlier["complete"] and earlier["covers"]["from"] == T0 / S + 25
    assert "history begins at" in earlier["note"]
    merged = store.merged(T0, end)
    assert {k[2]: v.sketch for k, v in merged.items()} == {k: v.sketch for k, v in whole.items()}
    key = f"{0:016x}"
    true_p99 = whole[key].sketch.quantile(0.99)
    averaged = sum(per_interval_p99[key]) / len(per_interval_p99[key])
    assert true_p99 is not None and abs(averaged - true_p99) / true_p99 > 0.2
    # A sub-range that starts and ends inside minutes: raw rows at its edges.
    start, stop = T0 + 3600 * S + 17 * S, T0 + 2 * 3600 * S + 123 * S
    part = {e["key"]: e for e in store.top(start, stop, order="load", limit=10)["templates"]}
    for key, entry in part.items():
        expected = TemplateStats("", "", key, "")
        for stats in store.merged(start, stop, key=key).values():
            expected.merge(stats)
        assert entry["count"] == expected.count > 0


def test_orders_filters_and_limit(backend: tuple[str, Path]) -> None:
    rng = random.Random(2)
    store = open_store(backend)
    for i in range(30):
        start = T0 + i * INTERVAL
        rows = [interval_stats(rng, key, start, slow=key == 4) for key in range(5)]
        other = interval_stats(rng, 9, start)
        other.db = "other"
        other.user = "app"
        rows.append(other)
        store.write("n", start, rows, start + INTERVAL)
    end = T0 + 30 * INTERVAL
    by_p99 = store.top(T0, end, order="p99", limit=2)["templates"]
    assert by_p99[0]["key"] == f"{4:016x}" and len(by_p99) == 2
    assert by_p99[0]["latency_us"]["p99"] >= by_p99[1]["latency_us"]["p99"]
    by_calls = store.top(T0, end, order="calls", limit=10)["templates"]
    assert [e["count"] for e in by_calls] == sorted((e["count"] for e in by_calls), reverse=True)
    by_errors = store.top(T0, end, order="errors", limit=10)["templates"]
    assert [e["error_count"] for e in by_errors] == sorted((e["error_count"] for e in by_errors), reverse=True)
    assert {e["db"] for e in store.top(T0, end, db="other")["templates"]} == {"other"}
    assert [e["key"] for e in store.top(T0, end, user="app")["templates"]] == [f"{9:016x}"]
    assert store.top(T0, end, server="10.0.0.1:3306")["templates"] == []


def test_a_report_written_twice_counts_once(backend: tuple[str, Path]) -> None:
    rng = random.Random(3)
    store = open_store(backend)
    rows = [interval_stats(rng, 1, T0)]
    assert store.write("master", T0, rows, T0 + INTERVAL)
    assert not store.write("master", T0, rows, T0 + INTERVAL)
    assert store.write("other-master", T0, rows, T0 + INTERVAL)  # another source: its own rows
    (entry,) = store.top(T0, T0 + INTERVAL)["templates"]
    assert entry["count"] == 2 * rows[0].count


def test_late_rows_are_added_into_rollups_already_made(backend: tuple[str, Path]) -> None:
    rng = random.Random(4)
    store = open_store(backend)
    first = interval_stats(rng, 1, T0)
    store.write("a", T0, [first], T0 + INTERVAL)
    store.compact(T0 + 2 * HOUR_NS)  # the minute and the hour are rolled up
    assert store.marks().hours_until == T0 + HOUR_NS
    late = interval_stats(rng, 1, T0 + 30 * S)
    store.write("b", T0 + 30 * S, [late], T0 + 2 * HOUR_NS)
    expected = first.sketch.copy()
    expected.merge(late.sketch)
    for start, end in ((T0, T0 + MINUTE_NS), (T0, T0 + HOUR_NS)):
        answer = store.top(start, end)
        assert answer["levels"][0]["level"] == ("minute" if end - start == MINUTE_NS else "hour")
        assert answer["templates"][0]["count"] == first.count + late.count
    ((_, merged),) = store.merged(T0, T0 + HOUR_NS).items()
    assert merged.sketch == expected


def test_retention_moves_answers_to_coarser_levels_then_says_what_is_covered(backend: tuple[str, Path]) -> None:
    rng = random.Random(6)
    retention = Retention(raw_ns=24 * HOUR_NS, minute_ns=7 * 24 * HOUR_NS, hour_ns=90 * 24 * HOUR_NS)
    store = open_store(backend, retention)
    total = after_first_minute = 0
    for i in range(12):  # 00:00:07 .. 00:01:57 of the first hour
        start = T0 + 7 * S + i * INTERVAL
        stats = interval_stats(rng, 1, start)
        total += stats.count
        after_first_minute += stats.count if start >= T0 + MINUTE_NS else 0
        store.write("n", start, [stats], start + INTERVAL)
    query = (T0 + 3 * S, T0 + 3 * MINUTE_NS)
    assert store.top(*query)["templates"][0]["count"] == total

    store.compact(T0 + 25 * HOUR_NS)  # raw rows expired; whole minutes answer
    answer = store.top(*query)
    assert answer["templates"][0]["count"] == after_first_minute
    assert not answer["complete"] and answer["covers"]["from"] == (T0 + MINUTE_NS) / S
    assert "retention" in answer["note"]
    assert store.top(T0 + MINUTE_NS, T0 + HOUR_NS)["complete"]

    store.compact(T0 + 8 * 24 * HOUR_NS)  # minutes expired; the hour answers
    whole_hour = store.top(T0, T0 + HOUR_NS)
    assert whole_hour["covers"]["from"] == T0 / S + 7  # when history began
    assert whole_hour["templates"][0]["count"] == total
    assert whole_hour["levels"] == [{"level": "hour", "from": T0 / S, "to": (T0 + HOUR_NS) / S}]
    partial = store.top(*query)
    assert partial["covers"] is None and partial["templates"] == []

    store.compact(T0 + 91 * 24 * HOUR_NS)  # everything expired
    gone = store.top(T0, T0 + HOUR_NS)
    assert gone["templates"] == [] and gone["covers"] is None and "older than" in gone["note"]
    assert store.template(f"{1:016x}") is None  # its text went with its last row


def test_byte_bound_drops_oldest_rolled_up_rows_and_counts_them(backend: tuple[str, Path]) -> None:
    rng = random.Random(8)
    store = open_store(backend, Retention(max_bytes=200_000))
    for i in range(6 * 360):  # six hours
        start = T0 + i * INTERVAL
        store.write("n", start, [interval_stats(rng, k, start) for k in range(3)], start + INTERVAL)
    status = store.status()
    assert status["dropped_for_space"] > 0
    assert status["stored_bytes"] <= 200_000
    marks = store.marks()
    assert marks.raw_from > T0  # the oldest raw rows went first
    # The newest hours are still answered in full from the coarser levels.
    answer = store.top(T0 + 4 * HOUR_NS, T0 + 5 * HOUR_NS)
    assert answer["complete"] and answer["templates"]


def test_days_roll_up_from_hours_and_answer_long_ranges(backend: tuple[str, Path]) -> None:
    rng = random.Random(12)
    store = open_store(backend)
    day0 = floor_to(T0, DAY_NS) + DAY_NS
    whole: dict[str, TemplateStats] = {}
    for i in range(2 * 48):  # an interval every 30 minutes for two days
        start = day0 + i * 30 * MINUTE_NS
        rows = [interval_stats(rng, key, start, slow=key == 1 and i % 9 == 0) for key in range(2)]
        for stats in rows:
            whole.setdefault(stats.key, TemplateStats("", "", stats.key, "")).merge(stats)
        store.write("n", start, rows, start + INTERVAL)
    store.compact(day0 + 3 * DAY_NS)
    answer = store.top(day0, day0 + 2 * DAY_NS)
    assert answer["levels"] == [{"level": "day", "from": day0 / S, "to": (day0 + 2 * DAY_NS) / S}]
    for entry in answer["templates"]:
        assert entry["count"] == whole[entry["key"]].count
        assert entry["latency_us"]["p99"] == whole[entry["key"]].quantiles((0.99,))[0]
    daily = store.series(f"{1:016x}", day0, day0 + 2 * DAY_NS, DAY_NS)
    assert {part["level"] for part in daily["levels"]} == {"day"}
    assert sum(p["count"] for p in daily["points"]) == whole[f"{1:016x}"].count


def test_series_per_step_and_template(backend: tuple[str, Path]) -> None:
    rng = random.Random(9)
    store = open_store(backend)
    counts = [0] * 12
    for i in range(12 * 6):  # 12 minutes
        start = T0 + i * INTERVAL
        stats = interval_stats(rng, 3, start)
        counts[i // 6] += stats.count
        store.write("n", start, [stats], start + INTERVAL)
    store.compact(T0 + HOUR_NS)
    answer = store.series(f"{3:016x}", T0, T0 + 12 * MINUTE_NS, MINUTE_NS)
    assert [p["count"] for p in answer["points"]] == counts
    assert [p["t"] for p in answer["points"]] == [(T0 + i * MINUTE_NS) / S for i in range(12)]
    assert {part["level"] for part in answer["levels"]} == {"minute"}
    assert all(p["p50"] <= p["p95"] <= p["p99"] for p in answer["points"])
    fine = store.series(f"{3:016x}", T0, T0 + 2 * MINUTE_NS, 30 * S)
    assert sum(p["count"] for p in fine["points"]) == counts[0] + counts[1]
    assert {part["level"] for part in fine["levels"]} == {"interval"}
    empty = store.series("ffffffffffffffff", T0, T0 + MINUTE_NS, MINUTE_NS)
    assert empty["points"] == [
        {"t": T0 / S, "count": 0, "errors": 0, "latency_sum_us": 0} | dict.fromkeys(("p50", "p95", "p99"))
    ]
    template = store.template(f"{3:016x}")
    assert template == {
        "key": f"{3:016x}",
        "template": "SELECT * FROM t3 WHERE id = ?",
        "first_seen_ns": T0 + 1,
        "last_seen_ns": T0 + 71 * INTERVAL + INTERVAL - 1,
    }


def test_migrations_are_versioned_and_reopening_keeps_rows(backend: tuple[str, Path]) -> None:
    rng = random.Random(10)
    store = open_store(backend)
    store.write("n", T0, [interval_stats(rng, 1, T0)], T0 + INTERVAL)
    store.db.close()
    again = open_store(backend)
    assert again.status()["schema_version"] == SCHEMA_VERSION
    assert again.top(T0, T0 + INTERVAL)["templates_total"] == 1


def test_ranking_by_p99_merges_only_what_it_must_and_equals_merging_everything(backend: tuple[str, Path]) -> None:
    rng = random.Random(13)
    store = open_store(backend)
    for i in range(12):
        start = T0 + i * INTERVAL
        rows = []
        for key in range(200):
            stats = interval_stats(rng, key, start)
            for _ in range(3 if key % 40 == 7 else 0):  # a few templates have a slow tail
                stats.sketch.add(200_000 + key)
                stats.count += 1
                stats.latency_sum += 200_000 + key
                stats.latency_max = max(stats.latency_max, 200_000 + key)
            rows.append(stats)
        store.write("n", start, rows, start + INTERVAL)
    end = T0 + 12 * INTERVAL
    everything = store.merged(T0, end)
    expected = sorted(everything.values(), key=lambda s: (-(s.quantiles((0.99,))[0] or 0.0), -s.latency_sum, s.key))
    answer = store.top(T0, end, order="p99", limit=5)
    assert [e["key"] for e in answer["templates"]] == [s.key for s in expected[:5]]
    assert [e["latency_us"]["p99"] for e in answer["templates"]] == [s.quantiles((0.99,))[0] for s in expected[:5]]
    assert answer["templates"][0]["latency_us"]["p99"] > 100_000
    assert store.p99_merged < 200  # the bounds spared most merges


def test_a_version_1_store_is_migrated_and_its_rows_still_rank(tmp_path: Path) -> None:
    rng = random.Random(14)
    path = tmp_path / "old.sqlite3"
    import sqlite3

    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[1]:
        conn.execute(statement.format(blob="BLOB", serial_pk="INTEGER PRIMARY KEY", without_rowid=" WITHOUT ROWID"))
    conn.execute("INSERT INTO history_meta VALUES ('schema_version', 1)")
    conn.execute("INSERT INTO history_series VALUES (1, 'srv', 'shop', '', 'aaaaaaaaaaaaaaaa')")
    slow = interval_stats(rng, 1, T0, slow=True)
    conn.execute(
        "INSERT INTO history_rows VALUES (0, ?, 1, ?, 0, ?, ?, ?, 0, 0, 0, 0, 0, ?, ?, '{}', ?)",
        (T0, slow.count, slow.latency_sum, slow.latency_min, slow.latency_max, T0, T0 + 1, encode_sketch(slow.sketch)),
    )
    conn.commit()
    conn.close()
    store = HistoryStore(open_database("", path))
    assert store.status()["schema_version"] == SCHEMA_VERSION == 2
    store.write("n", T0 + INTERVAL, [interval_stats(rng, 2, T0 + INTERVAL)], T0 + 2 * INTERVAL)
    (first, second) = store.top(T0, T0 + 2 * INTERVAL, order="p99", limit=2)["templates"]
    assert first["key"] == "aaaaaaaaaaaaaaaa" and first["latency_us"]["p99"] == slow.quantiles((0.99,))[0]
    assert second["key"] == f"{2:016x}"


def test_p99_of_any_merge_is_at_most_the_parts_largest_bound() -> None:
    rng = random.Random(15)
    for _ in range(300):
        parts = []
        for _ in range(rng.randint(1, 6)):
            sketch = LatencySketch()
            for _ in range(rng.randint(1, 200)):
                sketch.add(0 if rng.random() < 0.05 else int(rng.lognormvariate(rng.uniform(2, 9), 1.5)))
            parts.append(sketch)
        merged = LatencySketch()
        for sketch in parts:
            merged.merge(sketch)
        bound = max(quantile_bound_key(sketch, 0.99) for sketch in parts)
        assert (merged.quantile(0.99) or 0.0) <= bucket_value(bound)


def test_stored_sketches_round_trip() -> None:
    rng = random.Random(1)
    sketch = LatencySketch()
    for _ in range(5000):
        sketch.add(int(rng.lognormvariate(6, 2)))
    sketch.add(0)
    assert decode_sketch(encode_sketch(sketch)) == sketch
    assert decode_sketch(encode_sketch(LatencySketch())) == LatencySketch()
    with pytest.raises(ValueError):
        decode_sketch(b"not a sketch")


def test_plan_uses_the_coarsest_rows_held_whole() -> None:
    day0 = floor_to(T0, DAY_NS) + DAY_NS
    days = Marks(minutes_until=day0 + 3 * DAY_NS, hours_until=day0 + 3 * DAY_NS, days_until=day0 + 2 * DAY_NS)
    plan = plan_range(day0 - HOUR_NS, day0 + 2 * DAY_NS + HOUR_NS, days)
    assert plan.pieces == (
        Piece(HOUR, day0 - HOUR_NS, day0),
        Piece(DAY, day0, day0 + 2 * DAY_NS),
        Piece(HOUR, day0 + 2 * DAY_NS, day0 + 2 * DAY_NS + HOUR_NS),
    )
    marks = Marks(minutes_until=T0 + 5 * HOUR_NS, hours_until=T0 + 4 * HOUR_NS)
    plan = plan_range(T0 + 30 * S, T0 + 4 * HOUR_NS + 10 * MINUTE_NS + 5 * S, marks)
    assert plan.pieces == (
        Piece(RAW, T0 + 30 * S, T0 + MINUTE_NS),
        Piece(MINUTE, T0 + MINUTE_NS, T0 + HOUR_NS),
        Piece(HOUR, T0 + HOUR_NS, T0 + 4 * HOUR_NS),
        Piece(MINUTE, T0 + 4 * HOUR_NS, T0 + 4 * HOUR_NS + 10 * MINUTE_NS),
        Piece(RAW, T0 + 4 * HOUR_NS + 10 * MINUTE_NS, T0 + 4 * HOUR_NS + 10 * MINUTE_NS + 5 * S),
    )
    assert plan.complete
    # Nothing rolled up yet: raw rows only; a series in 30 s steps never uses minutes.
    assert plan_range(T0, T0 + HOUR_NS, Marks()).pieces == (Piece(RAW, T0, T0 + HOUR_NS),)
    assert plan_range(T0, T0 + HOUR_NS, marks, coarsest=RAW).pieces == (Piece(RAW, T0, T0 + HOUR_NS),)
    # Raw rows expired: the edge before the first whole minute is not covered.
    old = Marks(minutes_until=T0 + HOUR_NS, hours_until=T0, raw_from=T0 + HOUR_NS)
    plan = plan_range(T0 + 30 * S, T0 + 10 * MINUTE_NS, old)
    assert plan.pieces == (Piece(MINUTE, T0 + MINUTE_NS, T0 + 10 * MINUTE_NS),)
    assert not plan.complete and plan.covered_from == T0 + MINUTE_NS
