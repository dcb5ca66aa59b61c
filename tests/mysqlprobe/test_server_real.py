"""The node's /collector against hostile subscribers, on a real node process: what a
subscriber sends has its own small bound (``websocket.maxinbound``)."""

from __future__ import annotations

import asyncio
import json
import socket
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


def raw_http(port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client library to tidy them) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_hostile_http_requests_get_a_4xx_with_a_reason(tmp_path: Path) -> None:
    node = Node(tmp_path, {"slave": False, "interval": 1, "token": "s3cret"}, "hostile-http").start()
    try:
        for path, reason in [
            ("/api/metrics/raw?seconds=1e300", "largest accepted"),
            ("/api/metrics/aggregate?seconds=1e300", "largest accepted"),
            ("/events/scan?min_latency_ms=1e306", "largest accepted"),
            ("/events/scan?since=1e300", "largest accepted"),
            ("/events/scan?cursor=" + "9" * 5000, "cursor"),
        ]:
            status, body = node.request(path, headers={"X-Mysqlprobe-Token": "s3cret"})
            assert status == 400 and reason in body["error"], (path, status, body)
        broken = b"--zzz\r\nbroken part without headers end"
        multipart = (
            b"POST /config/update HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Mysqlprobe-Token: s3cret\r\n"
            b"Content-Type: multipart/form-data; boundary=zzz\r\nContent-Length: %d\r\n\r\n%s" % (len(broken), broken)
        )
        status, body = raw_http(node.port, multipart)
        assert status == 400 and b"cannot be read" in body, body
        for header in (b"X-Mysqlprobe-Token: s3\xffcret", b"Authorization: Bearer \xfe\xff"):
            status, body = raw_http(
                node.port,
                b"POST /config/update?report_period_ms=2000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + header
                + b"\r\nContent-Length: 0\r\n\r\n",
            )
            assert status == 400 and b"not valid UTF-8" in body, body
        log = node.log.read_text()
        assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
        assert node.get("/status")["role"] == "master"
    finally:
        node.stop()
