"""A bridge from mysqlprobe's pusher to NATS JetStream: an ingest server (websocket, like
examples/ingest_receiver.py) that stores each pushed report in a JetStream stream and
acknowledges it to the pusher only once JetStream has it.

Each report is published to ``mysqlprobe.reports.<node>`` with the header ``Nats-Msg-Id:
<node>/<incarnation>/<seq>``: within the stream's duplicate window, JetStream stores a report
the pusher sends twice (after a lost acknowledgement, a bridge restart, a failover between
bridges) only once. The pusher keeps a report until it is acknowledged, and this bridge
acknowledges only after JetStream's PubAck, so a bridge killed at any point loses nothing;
bridges keep no state, so several can run behind one pusher (``pusher.servers``).

    python3 examples/nats/bridge.py --port 9000 --nats nats://127.0.0.1:4222
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import nats
import websockets
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from message import CodecError, decode

STREAM = "MYSQLPROBE"
SUBJECTS = "mysqlprobe.reports.>"
#: How long JetStream remembers a Msg-Id: longer than any resend of the pusher.
DUPLICATE_WINDOW_S = 600.0


def message_id(report: dict[str, Any]) -> str:
    """``node/incarnation/seq``: a report's identity. Until reports carry an incarnation,
    ``t<interval start ns>`` stands in for it: the same in every resend of one report, and
    different for a node whose state was lost and whose ``seq`` starts again at 1 (a bare
    ``node/seq`` would make JetStream drop that node's new reports as duplicates)."""
    incarnation = report.get("incarnation") or f"t{int(report['interval']['start_ns'])}"
    return f"{report['node']}/{incarnation}/{int(report['seq'])}"


def subject(node: str) -> str:
    return "mysqlprobe.reports." + (re.sub(r"[^A-Za-z0-9_-]", "_", node) or "_")


async def ensure_stream(js: Any) -> None:
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECTS], duplicate_window=DUPLICATE_WINDOW_S))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--path", default="/ingest")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    nc = await nats.connect(args.nats)
    js = nc.jetstream()
    await ensure_stream(js)
    stored = duplicates = 0

    async def handler(ws: Any) -> None:
        nonlocal stored, duplicates
        if ws.request.path != args.path:
            await ws.close(code=1008, reason="wrong path")
            return
        async for data in ws:
            if isinstance(data, str):
                continue
            try:
                report = decode(data)
                msg_id = message_id(report)
            except (CodecError, KeyError, TypeError, ValueError):
                await ws.send(json.dumps({"error": "not a report"}))
                continue
            ack = await js.publish(subject(str(report["node"])), data, headers={"Nats-Msg-Id": msg_id})
            if ack.duplicate:
                duplicates += 1
            else:
                stored += 1
            print(json.dumps({"id": msg_id, "stream_seq": ack.seq, "duplicate": bool(ack.duplicate)}), flush=True)
            await ws.send(json.dumps({"ack": {"node": report["node"], "seq": report["seq"]}}))

    async with websockets.serve(handler, args.host, args.port, max_size=64 << 20):
        print(f"bridging ws://{args.host}:{args.port}{args.path} to {args.nats} stream {STREAM}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
