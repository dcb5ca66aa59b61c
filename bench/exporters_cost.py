"""Benchmark: what /metrics and OTLP cost a node per interval and per scrape.

Builds reports of N templates (default 5,000, the per-interval bound) with real sketches,
then times ``NodeMetrics.observe`` (once per interval, on the event loop), a scrape of
``prometheus.topn`` series (default 100) and an OTLP request (built off the event loop).
Run from the repository root: ``python3 bench/exporters_cost.py``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from message.report import TemplateStats
from mysqlprobe.otlp import build_request
from mysqlprobe.prometheus import NodeMetrics


def report(templates: int, calls: int, rng: random.Random) -> dict[str, Any]:
    entries = []
    for k in range(templates):
        stats = TemplateStats("10.0.0.1:3306", "app", f"{k:016x}", f"SELECT c FROM t{k} WHERE id = ?")
        for _ in range(calls):
            latency = int(rng.lognormvariate(7, 1.2))
            stats.count += 1
            stats.latency_sum += latency
            stats.sketch.add(latency)
        entries.append(stats.to_json())
    return {"seq": 1, "interval": {"start_ns": 0, "end_ns": 10**10}, "templates": entries, "capture": {}, "totals": {}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--templates", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=5, help="statements per template and interval")
    parser.add_argument("--topn", type=int, default=100)
    args = parser.parse_args()
    rng = random.Random(1)
    reports = [report(args.templates, args.calls, rng) for _ in range(3)]
    metrics = NodeMetrics(topn=args.topn, template_length=200, status=lambda: {}, version="0", git_hash="-")
    observe = []
    for r in reports:
        started = time.perf_counter()
        metrics.observe(r)
        observe.append(time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(10):
        body, _ = metrics.exposition()
    scrape = (time.perf_counter() - started) / 10
    started = time.perf_counter()
    payload = build_request(reports[0], node="n", version="0", db_system="mysql", topn=args.topn).SerializeToString()
    otlp = time.perf_counter() - started
    print(f"{args.templates} templates x {args.calls} calls per report, top {args.topn}")
    print(f"observe (per interval): best {min(observe) * 1e3:.1f} ms, worst {max(observe) * 1e3:.1f} ms")
    print(f"scrape: {scrape * 1e3:.1f} ms, {len(body):,} bytes")
    print(f"OTLP request: {otlp * 1e3:.1f} ms, {len(payload):,} bytes")


if __name__ == "__main__":
    main()
