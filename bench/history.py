"""Benchmark: the query history store on SQLite and on PostgreSQL.

1. Write cost per interval at 5,000 templates: ``HistoryStore.write`` of 10 s intervals
   (each template with 1-60 calls of log-normal latencies), the minute rollups that fall
   due included; then the rollup of one hour (60 minute rows per template) on its own.
   Disk bytes per template-interval: the database's size over templates x intervals.
2. ``top`` over a store shaped like a node's after 90 days at 1,000 templates: 24 h of
   10 s interval rows (8.64 M), 24 h of minute rows, 90 days of hour rows (2.16 M), then
   90 day rows, bulk loaded (sketches drawn from a pool of real sketches; minute, hour and
   day sketches are sums of 6, 60 and 24 finer ones). Minute rows older than 24 h, which no
   query here reads, are left out. Times: ``top`` over the last 24 h (order=load, the
   default, and order=p99, which merges every template's sketch), over 90 days from hour
   rows alone, then with day rows.

Run from the repository root: ``python3 bench/history.py [--templates-24h 1000]
[--skip-postgres] [--phases writes,queries]``; PostgreSQL is the server at 127.0.0.1:5432 (a throw-away database).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster.history import HistoryStore, open_database  # noqa: E402
from cluster.history.db import Database, PostgresDatabase  # noqa: E402
from cluster.history.plan import DAY, DAY_NS, HOUR, HOUR_NS, MINUTE, MINUTE_NS, RAW, floor_to  # noqa: E402
from cluster.history.store import _row  # noqa: E402
from message.report import TemplateStats  # noqa: E402
from tests.support.postgres import throwaway_database  # noqa: E402

S = 10**9
INTERVAL = 10 * S
COLUMNS = (
    "level, start_ns, series, calls, errors, lat_sum, lat_min, lat_max, rows_sent, rows_affected,"
    " bytes_in, bytes_out, no_index_used, first_seen_ns, last_seen_ns, extra, sketch, p99_key"
)


def interval_stats(rng: random.Random, key: int, start: int, calls: int) -> TemplateStats:
    stats = TemplateStats("10.0.0.1:3306", f"db{key % 7}", f"{key:016x}", f"SELECT c{key} FROM t{key} WHERE id = ?")
    for _ in range(calls):
        value = int(rng.lognormvariate(6 + key % 5, 0.8)) + 1
        stats.count += 1
        stats.latency_sum += value
        stats.latency_min = value if stats.count == 1 else min(stats.latency_min, value)
        stats.latency_max = max(stats.latency_max, value)
        stats.sketch.add(value)
        stats.rows_sent += 3
        stats.bytes_in += 60
        stats.bytes_out += 300
    stats.commands["Query"] = stats.count
    if key % 11 == 0:
        stats.errors["1213"] = 1
    stats.first_seen_ns, stats.last_seen_ns = start + 1, start + INTERVAL - 1
    return stats


def size_of(db: Database) -> int:
    if isinstance(db, PostgresDatabase):
        return int(
            db.query(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind = 'r' AND c.relname LIKE 'history%' AND n.nspname = current_schema()"
            )[0][0]
        )
    pages = db.query("PRAGMA page_count")[0][0]
    return int(pages) * int(db.query("PRAGMA page_size")[0][0])


def bench_writes(name: str, dsn: str, path: Path, templates: int, intervals: int) -> dict[str, Any]:
    rng = random.Random(1)
    db = open_database(dsn, path)
    store = HistoryStore(db)
    t0 = floor_to(1_800_000_000 * S, HOUR_NS) + 5 * S
    calls = [max(1, int(60 / (1 + k / 50))) for k in range(templates)]
    costs = []
    for i in range(intervals):
        start = t0 + i * INTERVAL
        rows = [interval_stats(rng, k, start, rng.randint(1, calls[k])) for k in range(templates)]
        began = time.perf_counter()
        store.write("bench", start, rows, start + INTERVAL)
        costs.append(time.perf_counter() - began)
    size = size_of(db)
    status = store.status()
    # One hour's rollup on its own: 60 minute rows per template (copies of the minutes just
    # written, moved across the hour) summed into hour rows.
    minutes = db.query("SELECT * FROM history_rows WHERE level = ? ORDER BY start_ns", (MINUTE,))
    db.begin()
    hour0 = floor_to(t0, HOUR_NS) + 10 * HOUR_NS
    moved = []
    for m in range(60):
        for row in minutes[:templates]:
            moved.append((MINUTE, hour0 + m * MINUTE_NS, *row[2:]))
    db.executemany(f"INSERT INTO history_rows ({COLUMNS}) VALUES ({', '.join('?' * 18)})", moved)
    db.execute("UPDATE history_meta SET value = ? WHERE name = 'minutes_until'", (hour0 + HOUR_NS,))
    db.execute("UPDATE history_meta SET value = ? WHERE name = 'hours_until'", (hour0,))
    db.commit()
    began = time.perf_counter()
    store.compact(hour0 + HOUR_NS + 3 * MINUTE_NS)
    hour_rollup = time.perf_counter() - began
    db.close()
    return {
        "backend": name,
        "templates": templates,
        "intervals": intervals,
        "write_median_s": statistics.median(costs),
        "write_max_s": max(costs),
        "write_mean_s": statistics.mean(costs),
        "hour_rollup_s": hour_rollup,
        "disk_bytes_per_template_interval": size / (templates * intervals),
        "stored_bytes_per_template_interval": status["stored_bytes"] / (templates * intervals),
    }


def variants(rng: random.Random, templates: int) -> list[list[Any]]:
    """Row tails (calls .. sketch) for raw, minute, hour and day rows, 40 of each; each
    coarser one is the sum of finer ones (6 raw, 60 minutes, 24 hours)."""
    groups = [[interval_stats(rng, k % templates, 0, rng.randint(5, 30)) for k in range(40)]]
    for parts in (6, 60, 24):
        coarser = []
        for _ in range(40):
            total = TemplateStats("", "", "", "")
            for part in rng.choices(groups[-1], k=parts):
                total.merge(part)
            coarser.append(total)
        groups.append(coarser)
    return [[_row(0, 0, 0, s)[3:] for s in group] for group in groups]


def bulk_rows(level: int, starts: range, templates: int, tails: list[Any]) -> Iterator[tuple[Any, ...]]:
    n = len(tails)
    for i, start in enumerate(starts):
        for series in range(1, templates + 1):
            yield (level, start, series, *tails[(i * 7 + series) % n])


def insert_rows(db: Database, rows: Iterator[tuple[Any, ...]]) -> None:
    if isinstance(db, PostgresDatabase):
        with db.conn.cursor() as cur, cur.copy(f"COPY history_rows ({COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        db.executemany(f"INSERT INTO history_rows ({COLUMNS}) VALUES ({', '.join('?' * 18)})", rows)


def set_marks(db: Database, marks: dict[str, int]) -> None:
    for name, value in marks.items():
        db.execute("DELETE FROM history_meta WHERE name = ?", (name,))
        db.execute("INSERT INTO history_meta (name, value) VALUES (?, ?)", (name, value))


def load_store(db: Database, templates: int, end: int, tails: list[list[Any]]) -> None:
    """24 h of raw and minute rows, 90 days of hour rows (no day rows yet)."""
    db.begin()
    db.executemany(
        "INSERT INTO history_series (id, server, db, usr, key) VALUES (?, ?, ?, ?, ?)",
        [(k + 1, "10.0.0.1:3306", f"db{k % 7}", "", f"{k:016x}") for k in range(templates)],
    )
    db.executemany(
        "INSERT INTO history_templates (key, text, first_seen_ns, last_seen_ns) VALUES (?, ?, ?, ?)",
        [(f"{k:016x}", f"SELECT c{k} FROM t{k} WHERE id = ?", end - 90 * DAY_NS, end) for k in range(templates)],
    )
    minutes_until = floor_to(end - 2 * MINUTE_NS, MINUTE_NS)
    hours_until = floor_to(minutes_until, HOUR_NS)
    insert_rows(db, bulk_rows(RAW, range(end - DAY_NS, end, INTERVAL), templates, tails[RAW]))
    start = floor_to(end - DAY_NS, MINUTE_NS)
    insert_rows(db, bulk_rows(MINUTE, range(start, minutes_until, MINUTE_NS), templates, tails[MINUTE]))
    start = floor_to(end - 90 * DAY_NS, HOUR_NS)
    insert_rows(db, bulk_rows(HOUR, range(start, hours_until, HOUR_NS), templates, tails[HOUR]))
    set_marks(
        db,
        {
            "minutes_until": minutes_until,
            "hours_until": hours_until,
            "raw_from": end - DAY_NS,
            "minutes_from": floor_to(end - DAY_NS, MINUTE_NS),
            "hours_from": floor_to(end - 90 * DAY_NS, HOUR_NS),
            "began_ns": end - 90 * DAY_NS,
        },
    )
    db.commit()
    if isinstance(db, PostgresDatabase):
        db.execute("ANALYZE")


def add_days(db: Database, templates: int, end: int, tails: list[list[Any]]) -> None:
    """Day rows for the 90 days, as the store's rollup of whole days makes them."""
    db.begin()
    days_until = floor_to(floor_to(end - 2 * MINUTE_NS, HOUR_NS), DAY_NS)
    start = -(-(end - 90 * DAY_NS) // DAY_NS) * DAY_NS
    insert_rows(db, bulk_rows(DAY, range(start, days_until, DAY_NS), templates, tails[DAY]))
    set_marks(db, {"days_until": days_until, "days_from": start})
    db.commit()
    if isinstance(db, PostgresDatabase):
        db.execute("ANALYZE")


def timed(fn: Any, repeat: int = 3) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return times[0], min(times)


def bench_queries(name: str, dsn: str, path: Path, templates: int) -> dict[str, Any]:
    end = floor_to(1_800_000_000 * S, HOUR_NS) + 37 * MINUTE_NS + 25 * S
    tails = variants(random.Random(2), templates)
    db = open_database(dsn, path)
    began = time.perf_counter()
    load_store(db, templates, end, tails)
    load_s = time.perf_counter() - began
    size = size_of(db)
    db.close()
    db = open_database(dsn, path)  # a fresh connection: no warm series cache
    store = HistoryStore(db)
    out: dict[str, Any] = {"backend": name, "templates": templates, "load_s": load_s, "size_bytes": size}
    day = store.top(end - DAY_NS, end)
    assert day["templates_total"] == templates and day["complete"], day["note"]
    out["levels_24h"] = "+".join(sorted({p["level"] for p in day["levels"]}))
    out["top_24h_load_first_s"], out["top_24h_load_best_s"] = timed(lambda: store.top(end - DAY_NS, end))
    out["top_24h_p99_first_s"], out["top_24h_p99_best_s"] = timed(lambda: store.top(end - DAY_NS, end, order="p99"))
    start90 = end - 90 * DAY_NS
    out["top_90d_hours_load_s"] = timed(lambda: store.top(start90, end), 1)[0]
    add_days(db, templates, end, tails)
    out["top_90d_days_load_first_s"], out["top_90d_days_load_best_s"] = timed(lambda: store.top(start90, end))
    out["top_90d_days_p99_s"] = timed(lambda: store.top(start90, end, order="p99"), 1)[0]
    db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--templates-24h", type=int, default=1000)
    parser.add_argument("--write-templates", type=int, default=5000)
    parser.add_argument("--write-intervals", type=int, default=30)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--phases", default="writes,queries", help="comma-separated: writes, queries")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="history-bench-") as tmp:
        backends = [("sqlite", "")] + ([] if args.skip_postgres else [("postgresql", "pg")])
        for name, kind in backends:
            for phase in args.phases.split(","):
                path = Path(tmp) / f"{name}-{phase}.sqlite3"
                if kind:
                    with throwaway_database() as dsn:
                        results.append(run_phase(phase, name, dsn, path, args))
                else:
                    results.append(run_phase(phase, name, "", path, args))
                print_result(results[-1])


def run_phase(phase: str, name: str, dsn: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    if phase == "writes":
        return bench_writes(name, dsn, path, args.write_templates, args.write_intervals)
    return bench_queries(name, dsn, path, args.templates_24h)


def print_result(result: dict[str, Any]) -> None:
    parts = []
    for key, value in result.items():
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    print(" ".join(parts), flush=True)


if __name__ == "__main__":
    main()
