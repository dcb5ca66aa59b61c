"""Benchmark: the normalizer's cost per statement on a realistic mix, against sqlparse.

The mix: sysbench oltp_read_write statements with random literals (none repeat), ORM-style
statements with backticks and IN lists, statements with comments and hints, multi-row
INSERTs. Prints µs per statement for the normalizer (cold caches, every statement new),
and for sqlparse.format(strip_comments) and sqlparse.parse on a sample, in the same run.
Run from the repository root: ``python3 bench/normalize_bench.py``.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlparse

from probe.normalize import Normalizer


def statements(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    r = rng.randint

    def s() -> str:
        return "-".join(str(r(10**10, 10**11)) for _ in range(3))

    makers = [
        lambda t: f"SELECT c FROM sbtest{t} WHERE id={r(1, 10**6)}",
        lambda t: f"SELECT c FROM sbtest{t} WHERE id BETWEEN {r(1, 10**6)} AND {r(1, 10**6)}",
        lambda t: f"SELECT SUM(k) FROM sbtest{t} WHERE id BETWEEN {r(1, 10**6)} AND {r(1, 10**6)}",
        lambda t: f"SELECT DISTINCT c FROM sbtest{t} WHERE id BETWEEN {r(1, 10**6)} AND {r(1, 10**6)} ORDER BY c",
        lambda t: f"UPDATE sbtest{t} SET k=k+1 WHERE id={r(1, 10**6)}",
        lambda t: f"UPDATE sbtest{t} SET c='{s()}' WHERE id={r(1, 10**6)}",
        lambda t: f"DELETE FROM sbtest{t} WHERE id={r(1, 10**6)}",
        lambda t: f"INSERT INTO sbtest{t} (id, k, c, pad) VALUES ({r(1, 10**6)}, {r(1, 10**6)}, '{s()}', '{s()}')",
        lambda t: "BEGIN",
        lambda t: "COMMIT",
        lambda t: (
            "SELECT `auth_user`.`id`, `auth_user`.`username`, `auth_user`.`email` FROM `auth_user` "
            f"WHERE `auth_user`.`id` IN ({', '.join(str(r(1, 9999)) for _ in range(r(1, 20)))}) LIMIT 21"
        ),
        lambda t: f"/* app:web req:{r(1, 10**9)} */ SELECT name FROM users WHERE email = 'u{r(1, 10**6)}@x.io'",
        lambda t: f"SELECT /*+ MAX_EXECUTION_TIME(500) */ * FROM orders WHERE created > '2024-0{r(1, 9)}-01' -- report",
        lambda t: (
            "INSERT INTO events (a, b, c) VALUES "
            + ",".join(f"({r(1, 99)}, 'x{r(1, 99)}', NOW())" for _ in range(r(2, 30)))
        ),
    ]
    return [rng.choice(makers)(r(1, 8)) for _ in range(n)]


def per_statement(fn, items: list[str], repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def main() -> None:
    mix = statements(100_000)
    fresh = [Normalizer() for _ in range(3)]
    results = []
    for normalizer in fresh:  # a new normalizer each run: caches start cold
        start = time.perf_counter()
        for sql in mix:
            normalizer.normalize(sql)
        results.append((time.perf_counter() - start) / len(mix) * 1e6)
    ours = min(results)
    sample = mix[:2000]
    fmt = per_statement(lambda q: sqlparse.format(q, strip_comments=True), sample, repeat=1)
    parse = per_statement(sqlparse.parse, sample[:500], repeat=1)
    print(f"{'normalizer (mysqlprobe)':<34} {ours:8.2f} µs/statement  {1e6 / ours:10,.0f} statements/s")
    print(f"{'sqlparse.format(strip_comments)':<34} {fmt:8.2f} µs/statement  {fmt / ours:8.1f}x slower")
    print(f"{'sqlparse.parse':<34} {parse:8.2f} µs/statement  {parse / ours:8.1f}x slower")


if __name__ == "__main__":
    main()
