"""Connection floods against a real node process: slowloris requests and idle connections
are timed out, connections beyond the bound shed the idle ones, the descriptor soft limit is
raised at start, and the node keeps answering /status and keeps its /collector subscribers."""

from __future__ import annotations

import contextlib
import resource
import socket
import time
from pathlib import Path

from mysqlprobe.guard import DESCRIPTOR_RESERVE
from tests.support.nodes import Collector, Node


def closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def test_slowloris_requests_are_timed_out_and_the_node_keeps_serving(tmp_path: Path) -> None:
    node = Node(tmp_path, {"slave": False, "interval": 1, "http": {"idletimeouts": 3}}, "slowloris").start()
    sockets: list[socket.socket] = []
    trickled: list[socket.socket] = []
    try:
        subscriber = Collector(f"ws://127.0.0.1:{node.port}/collector")
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", node.port))
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            sockets.append(sock)
        # Bodies trickled in a byte at a time: their request is in a handler, so the body
        # read has its own deadline (10 s) and they get a 408.
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", node.port))
            sock.sendall(
                b"POST /config/update HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 1000\r\n\r\nreport_period_ms="
            )
            trickled.append(sock)
        started = time.monotonic()
        answered = []
        while time.monotonic() - started < 11:
            for sock in sockets + trickled:  # a header line or a body byte now and then: never complete
                with contextlib.suppress(OSError):
                    sock.send(b"X-Slow: 1\r\n" if sock in sockets else b"1")
            before = time.monotonic()
            assert node.get("/status", timeout=5)["role"] == "master"
            answered.append(time.monotonic() - before)
            time.sleep(0.5)
        assert max(answered) < 5.0, answered  # served all along (not a latency benchmark)
        assert sum(closed_by_peer(s) for s in sockets) == 300
        for sock in trickled:
            sock.setblocking(True)
            sock.settimeout(5)
            assert sock.recv(100).startswith(b"HTTP/1.1 408"), "a trickled body was not timed out"
            sock.close()
        status = node.get("/status")["connections"]
        assert status["timed_out"] >= 300 and status["open"] < 10, status
        count = len(subscriber.reports)
        subscriber.wait_for(lambda c: len(c.reports) >= count + 2, timeout=15)  # still subscribed
        subscriber.close()
    finally:
        for sock in sockets + trickled:
            sock.close()
        node.stop()


def test_idle_connections_beyond_the_descriptor_limit(tmp_path: Path) -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))  # soft 256; the node raises it to 1024

    node = Node(tmp_path, {"slave": False, "interval": 1}, "idle").start(preexec_fn=low_limit)
    sockets: list[socket.socket] = []
    try:
        status = node.get("/status")["connections"]
        assert status["descriptor_limit"] == {"soft": 1024, "hard": 1024}
        assert status["max"] == 1024 - DESCRIPTOR_RESERVE
        subscribers = [Collector(f"ws://127.0.0.1:{node.port}/collector") for _ in range(3)]
        for _ in range(1100):
            sockets.append(socket.create_connection(("127.0.0.1", node.port)))
        time.sleep(1.0)
        for _ in range(5):
            assert node.get("/status", timeout=5)["role"] == "master"
        status = node.get("/status")["connections"]
        # Beyond the bound each new connection sheds the idlest (or the sweeper got there first).
        assert status["shed"] + status["timed_out"] >= 1100 - status["max"], status
        assert status["open"] <= status["max"], status
        for subscriber in subscribers:
            count = len(subscriber.reports)
            subscriber.wait_for(lambda c, n=count: len(c.reports) >= n + 2, timeout=15)
            subscriber.close()
        assert node.proc is not None and node.proc.poll() is None
        assert node.get("/status")["collector"]["subscribers_dropped"] == 0
    finally:
        for sock in sockets:
            sock.close()
        node.stop()
