"""The node's /collector against hostile subscribers, on a real node process: what a
subscriber sends has its own small bound (``websocket.maxinbound``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import websockets

from tests.support.nodes import Collector, Node


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def send_huge(url: str, size: int) -> int | None:
    async with websockets.connect(url, max_size=None) as ws:
        try:
            await ws.send("x" * size)
            await asyncio.wait_for(ws.recv(), 30)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
    return None


async def ask_templates(url: str, keys: list[str]) -> object:
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"templates": keys}))
        return await asyncio.wait_for(ws.recv(), 10)


def test_subscriber_messages_have_their_own_small_bound(tmp_path: Path) -> None:
    node = Node(tmp_path, {"slave": False, "interval": 1}, "bounded").start()
    try:
        assert node.proc is not None
        url = f"ws://127.0.0.1:{node.port}/collector"
        reader = Collector(url)
        before = rss_kib(node.proc.pid)
        code = asyncio.run(send_huge(url, 48 << 20))
        assert code == 1009  # message too big, closed at once
        grown_mib = (rss_kib(node.proc.pid) - before) / 1024
        assert grown_mib < 24, f"the node grew by {grown_mib:.0f} MiB for a refused message"
        assert node.get("/status")["collector"]["inbound_too_large"] == 1
        # A request just under the bound is still answered, and other subscribers are served.
        keys = [f"{i:016x}" for i in range(3000)]
        assert len(json.dumps({"templates": keys})) < 64 << 10
        assert isinstance(asyncio.run(ask_templates(url, keys)), bytes)
        count = len(reader.reports)
        reader.wait_for(lambda c: len(c.reports) >= count + 2, timeout=15)
        reader.close()
    finally:
        node.stop()
