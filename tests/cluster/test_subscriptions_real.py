"""A master's subscription to a hostile or broken "slave": a websocket server written here
that sends garbage (JSON lists and strings, reports without keys, wrong types, not snappy)
on each connection, then a good report. The master counts each, shows it in /status,
redials, and finally merges the good report: its subscription task never ends."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import websockets

from message import TemplateStats, encode
from tests.support.mariadb import free_port
from tests.support.nodes import Node


def good_report(seq: int) -> dict[str, Any]:
    entry = TemplateStats("127.0.0.1:3306", "shop", "00000000fa4e51a7", "SELECT ? FROM fake_slave")
    entry.count = 7
    entry.commands = {"Query": 7}
    for latency in (100, 200, 300, 400, 500, 600, 700):
        entry.sketch.add(latency)
        entry.latency_sum += latency
    entry.latency_min, entry.latency_max = 100, 700
    now = time.time_ns()
    return {
        "schema": 1,
        "kind": "interval",
        "node": "fake-slave",
        "role": "slave",
        "seq": seq,
        "epoch": 0,
        "server": "127.0.0.1:3306",
        "interval": {"start_ns": now - 10**9, "end_ns": now},
        "totals": {"queries": 7, "commands": 7, "errors": 0},
        "capture": {},
        "templates": [entry.to_json()],
        "slow": [],
    }


def interval(**changes: Any) -> bytes:
    report = good_report(1)
    report.update(changes)
    return encode(report)


GARBAGE: list[str | bytes] = [
    json.dumps([1, 2, 3]),  # a JSON list as a text message
    json.dumps("just a string"),
    "not json at all {",
    encode([{"kind": "interval"}]),  # a list in a report frame
    encode("a string report"),
    interval(templates=[{"template": "SELECT 1", "count": 1}]),  # a template without key
    interval(seq="one"),  # bad types
    interval(templates="everything"),
    interval(capture={"flags": {"x": "y"}}),
    interval(heartbeat={"db:1": 5}),
    encode({"kind": "templates", "templates": ["k"]}),
    b"\x00\xffnot snappy",
]


class HostileSlave:
    """Serves /collector: connection n gets GARBAGE[n]; once they are used up, good reports."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self.hellos: list[Any] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping: asyncio.Future[None] | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.main(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    async def main(self) -> None:
        self.stopping = self.loop.create_future()
        async with websockets.serve(self.handle, "127.0.0.1", self.port):
            self.ready.set()
            await self.stopping

    async def handle(self, ws: Any) -> None:
        index = self.connections
        self.connections += 1
        self.hellos.append(json.loads(await ws.recv()))
        try:
            if index < len(GARBAGE):
                await ws.send(GARBAGE[index])
                async for _ in ws:  # until the master hangs up
                    pass
                return
            for seq in range(1, 1000):  # a slave at last: a report every half second
                await ws.send(encode(good_report(seq)))
                await asyncio.sleep(0.5)
        except websockets.ConnectionClosed:
            pass

    def close(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self.stopping and self.stopping.set_result(None))
        self.thread.join(10)


def test_malformed_slave_messages_are_counted_and_redialled(tmp_path: Path) -> None:
    slave = HostileSlave()
    master = Node(tmp_path, {"slave": False, "interval": 1, "websocket": {"reconnectperiods": 1}}, "master").start()
    try:
        assert master.request(f"/cluster/join?addr=127.0.0.1:{slave.port}")[0] == 200
        deadline = time.monotonic() + 90
        link: dict[str, Any] = {}
        while time.monotonic() < deadline:
            link = master.get("/status")["subscriptions"][0]
            if link["reports"] >= 2:
                break
            time.sleep(0.5)
        assert link["malformed"] == len(GARBAGE), link
        assert link["reports"] >= 2 and link["state"] == "connected", link
        assert link["unexpected_errors"] == 0, link
        assert slave.connections == len(GARBAGE) + 1
        assert all(h.get("hello", {}).get("role") == "master" for h in slave.hellos)
        totals = master.get("/report/totals")
        assert any(t["key"] == "00000000fa4e51a7" and t["count"] >= 14 for t in totals["templates"]), totals
        log = master.log.read_text()
        assert log.count("sent a malformed message") == 1, log[-3000:]
        assert "Traceback" not in log
    finally:
        master.stop()
        slave.close()
