"""Merge mysqlprobe reports from NATS JetStream into Redis, exactly once, with as many
instances as the load needs.

Every instance pulls from one durable consumer (``merge``) of the stream the bridge writes,
so JetStream hands each report to one instance at a time. An instance merges a report into
Redis in one Lua script that first claims the report's ``Nats-Msg-Id`` (``SET NX``) and adds
nothing if it was claimed before, then acknowledges the message. An instance killed after
the merge but before the ack makes JetStream redeliver the report after ``ack_wait``; the
claim makes that redelivery a no-op. Killed before the merge: another instance merges it.

Redis keys: ``mysqlprobe:templates`` (key -> template text), ``mysqlprobe:t:<server>|<db>|<key>``
(count, errors, latency_us, rows_sent, rows_affected, no_index_used, bytes_in, bytes_out),
``mysqlprobe:sketch:<server>|<db>|<key>`` (latency sketch bucket -> count, mergeable),
``mysqlprobe:reports`` (node -> reports merged), ``mysqlprobe:consumers`` (instance -> reports).

    python3 examples/nats/consumer.py --name merge-1 --nats nats://127.0.0.1:4222 --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import nats
import redis.asyncio as redis
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from message import decode

STREAM = "MYSQLPROBE"
DURABLE = "merge"
#: How long a claim on a report id is kept: longer than JetStream's redelivery of it.
CLAIM_TTL_S = 7 * 86400
FIELDS = ("rows_sent", "rows_affected", "no_index_used", "bytes_in", "bytes_out")

# KEYS[1]: the report's claim. ARGV[1]: claim TTL; then (hash, field, increment) triples.
MERGE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #ARGV, 3 do redis.call('HINCRBY', ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
return 1
"""


def increments(report: dict[str, Any], consumer: str) -> list[str | int]:
    out: list[str | int] = []
    for t in report.get("templates", []):
        ident = f"{t['server']}|{t['db']}|{t['key']}"
        stats = f"mysqlprobe:t:{ident}"
        out += [stats, "count", int(t["count"]), stats, "errors", sum(int(n) for n in t["errors"].values())]
        out += [stats, "latency_us", int(t["latency_us"]["sum"])]
        for name in FIELDS:
            out += [stats, name, int(t.get(name, 0))]
        sketch = t["latency_us"]["sketch"]
        out += [f"mysqlprobe:sketch:{ident}", "zero", int(sketch.get("zero", 0))]
        for key, n in zip(sketch["keys"], sketch["counts"], strict=True):
            out += [f"mysqlprobe:sketch:{ident}", str(key), int(n)]
    out += ["mysqlprobe:reports", str(report["node"]), 1, "mysqlprobe:consumers", consumer, 1]
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="this instance's name (in mysqlprobe:consumers)")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--fetch-wait",
        type=float,
        default=5.0,
        help="seconds a pull request waits on the server; keep it longer than the slaves' interval",
    )
    parser.add_argument(
        "--ack-wait", type=float, default=30.0, help="seconds before an unacknowledged report is redelivered"
    )
    parser.add_argument(
        "--die-before-ack",
        type=int,
        default=0,
        metavar="N",
        help="for demonstrations: die like kill -9 right after merging the Nth report, before acknowledging it",
    )
    args = parser.parse_args()
    merges = 0
    db = redis.from_url(args.redis)
    merge = db.register_script(MERGE)
    nc = await nats.connect(args.nats)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        "mysqlprobe.reports.>", durable=DURABLE, stream=STREAM, config=ConsumerConfig(ack_wait=args.ack_wait)
    )
    print(f"{args.name}: merging {STREAM} into {args.redis}", flush=True)
    while True:
        try:
            # A pull request lingers on the server and JetStream serves waiting requests in
            # order. A wait as short as the report interval phase-locks with it: an idle
            # instance re-asks just after each report and another gets every report (seen
            # in CI: c2 merged reports 1-55 while c1 waited).
            messages = await sub.fetch(args.batch, timeout=args.fetch_wait)
        except NatsTimeout:
            continue
        for msg in messages:
            report = decode(msg.data)
            msg_id = (msg.headers or {}).get("Nats-Msg-Id") or (
                f"{report['node']}/{report.get('incarnation') or 't' + str(report['interval']['start_ns'])}"
                f"/{report['seq']}"
            )
            texts = {t["key"]: t["template"] for t in report.get("templates", []) if t.get("template")}
            if texts:
                await db.hset("mysqlprobe:templates", mapping=texts)  # idempotent: same key, same text
            merged = await merge(
                keys=[f"mysqlprobe:claim:{msg_id}"], args=[CLAIM_TTL_S, *increments(report, args.name)]
            )
            merges += 1
            if merges == args.die_before_ack:
                print(f"{args.name}: {msg_id} merged, dying before the ack", flush=True)
                os._exit(137)
            await msg.ack_sync()
            print(f"{args.name}: {msg_id} {'merged' if merged else 'already merged'}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
