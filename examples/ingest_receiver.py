"""An example ingest server for mysqlprobe's pusher.

Listens for websocket connections on PATH (default /ingest). Each binary message is one
report (a raw snappy block of JSON); the receiver appends it to a JSON-lines log (synced
to disk before acknowledging), then answers ``{"ack": {"node": N, "seq": S}}``. Reports
are deduplicated by (node, incarnation, seq), also across restarts (the log is read at
start), so a report the pusher resends after a lost acknowledgement is stored once, and a
node that lost its state (a new incarnation, numbering from 1 again) is stored anew.

    python3 examples/ingest_receiver.py --port 9000 --log received.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from message import CodecError, decode


class Receiver:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.seen: set[tuple[str, str, int]] = set()
        if log_path.exists():
            for line in log_path.read_text().splitlines():
                entry = json.loads(line)
                self.seen.add((entry["node"], entry.get("incarnation", ""), entry["seq"]))
        self.log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - open for the server's life
        self.duplicates = 0

    async def handle(self, ws: Any) -> None:
        async for message in ws:
            if isinstance(message, str):
                continue
            try:
                report = decode(message)
                key = (str(report["node"]), str(report.get("incarnation", "")), int(report["seq"]))
            except (CodecError, KeyError, TypeError, ValueError):
                await ws.send(json.dumps({"error": "not a report"}))
                continue
            if key in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(key)
                record = {
                    "node": key[0],
                    "incarnation": key[1],
                    "seq": key[2],
                    "interval": report.get("interval"),
                    "queries": report.get("totals", {}).get("queries", 0),
                }
                self.log.write(json.dumps(record) + "\n")
                self.log.flush()
                os.fsync(self.log.fileno())
            await ws.send(json.dumps({"ack": {"node": key[0], "seq": key[2]}}))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--path", default="/ingest")
    parser.add_argument("--log", default="received.jsonl")
    args = parser.parse_args()
    receiver = Receiver(Path(args.log))

    async def handler(ws: Any) -> None:
        if ws.request.path != args.path:
            await ws.close(code=1008, reason="wrong path")
            return
        await receiver.handle(ws)

    async with websockets.serve(handler, args.host, args.port, max_size=64 << 20):
        print(f"receiving on ws://{args.host}:{args.port}{args.path}, logging to {args.log}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
