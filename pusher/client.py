"""Pushing reports to an ingest tier over websockets, with acknowledgements.

Owns delivery of a node's reports to ``pusher.servers``: each report goes to one server,
chosen round-robin, as one binary websocket message (the same snappy JSON as /collector);
the receiver answers ``{"ack": {"node": N, "seq": S}}``. A report stays in the queue until
it is acknowledged. When a server fails (cannot connect, closes, or does not acknowledge
within ``ack_timeout_s``), every report still unacknowledged on it is sent again to the
next server. Connections are redialled with backoff; ``preconnect`` dials every server at
start. The queue is bounded: when it is full the oldest report is dropped and counted
(``overflowed``) — with at least one server up, nothing is lost. Receivers deduplicate by
(node, seq), so a report resent after a lost acknowledgement is counted once.

``spool`` (optional) persists the queue so that a restart resends what was not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any, Protocol

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from message import encode

log = logging.getLogger("mysqlprobe.pusher")

DEFAULT_MAX_QUEUE = 1000


class Spool(Protocol):
    def append(self, key: tuple[str, int], data: bytes) -> None: ...

    def remove(self, key: tuple[str, int]) -> None: ...


@dataclass
class _Server:
    addr: str
    ws: Any = None
    state: str = "idle"
    sent: int = 0
    acked: int = 0
    failures: int = 0
    last_error: str | None = None
    inflight: set[tuple[str, int]] = field(default_factory=set)
    backoff_until: float = 0.0
    backoff: float = 0.2
    reader: asyncio.Task[None] | None = None


class Pusher:
    def __init__(
        self,
        servers: list[str],
        *,
        path: str = "/ingest",
        preconnect: bool = False,
        max_queue: int = DEFAULT_MAX_QUEUE,
        ack_timeout_s: float = 10.0,
        reconnect_max_s: float = 5.0,
        spool: Spool | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        if not servers:
            raise ValueError("a pusher needs at least one server")
        self.servers = [_Server(addr) for addr in servers]
        self.path = path if path.startswith("/") else f"/{path}"
        self.preconnect = preconnect
        self.max_queue = max_queue
        self.ack_timeout_s = ack_timeout_s
        self.reconnect_max_s = reconnect_max_s
        self.spool = spool
        self.ssl = ssl  # wss:// with these certificate checks when set
        # (node, seq) -> encoded report; insertion order is send order.
        self.unacked: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._sent_at: dict[tuple[str, int], float] = {}
        self._where: dict[tuple[str, int], _Server] = {}
        self._next = 0
        self._wake = asyncio.Event()
        self.overflowed = 0
        self.pushed = 0
        self.acked = 0
        self.resent = 0
        self.on_ack: Callable[[tuple[str, int]], None] | None = None
        self._closing: set[asyncio.Future[None]] = set()

    # -- input ----------------------------------------------------------------------------

    def push(self, report: dict[str, Any]) -> None:
        key = (str(report["node"]), int(report["seq"]))
        self.restore(key, encode(report))

    def restore(self, key: tuple[str, int], data: bytes, *, spooled: bool = False) -> None:
        """Queue an encoded report (``spooled``: it is already in the spool)."""
        if key in self.unacked:
            return
        while len(self.unacked) >= self.max_queue:
            old, _ = self.unacked.popitem(last=False)
            self._forget(old)
            self.overflowed += 1
            log.warning("push queue full: dropped report %s.%d", *old)
        self.unacked[key] = data
        if self.spool is not None and not spooled:
            self.spool.append(key, data)
        self.pushed += 1
        self._wake.set()

    def _forget(self, key: tuple[str, int]) -> None:
        self._sent_at.pop(key, None)
        server = self._where.pop(key, None)
        if server is not None:
            server.inflight.discard(key)
        if self.spool is not None:
            self.spool.remove(key)

    # -- delivery --------------------------------------------------------------------------

    async def run(self) -> None:
        if self.preconnect:
            for server in self.servers:
                await self._ensure(server)
        while True:
            self._wake.clear()
            self._expire_acks()
            await self._send_pending()
            timeout = 0.5 if self.unacked else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _expire_acks(self) -> None:
        now = time.monotonic()
        for key, sent in list(self._sent_at.items()):
            if now - sent > self.ack_timeout_s:
                server = self._where.get(key)
                if server is not None:
                    self._fail(server, "no acknowledgement in time")

    async def _send_pending(self) -> None:
        for key, data in list(self.unacked.items()):
            if key in self._where:
                continue  # in flight on a live connection
            server = await self._pick()
            if server is None:
                return  # every server is down: retry when one may be back
            try:
                await server.ws.send(data)
            except (ConnectionClosed, OSError) as exc:
                self._fail(server, f"send failed: {exc}")
                continue
            server.sent += 1
            server.inflight.add(key)
            self._where[key] = server
            self._sent_at[key] = time.monotonic()

    async def _pick(self) -> _Server | None:
        """The next server round-robin that is (or can be) connected."""
        for _ in range(len(self.servers)):
            server = self.servers[self._next % len(self.servers)]
            self._next += 1
            if await self._ensure(server):
                return server
        return None

    async def _ensure(self, server: _Server) -> bool:
        if server.ws is not None:
            return True
        if time.monotonic() < server.backoff_until:
            return False
        try:
            scheme = "ws" if self.ssl is None else "wss"
            server.ws = await websockets.connect(
                f"{scheme}://{server.addr}{self.path}", ssl=self.ssl, open_timeout=5, close_timeout=2, max_size=1 << 20
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            self._fail(server, f"{type(exc).__name__}: {exc}")
            return False
        server.state = "connected"
        server.backoff = 0.2
        server.reader = asyncio.ensure_future(self._read_acks(server, server.ws))
        return True

    async def _read_acks(self, server: _Server, ws: Any) -> None:
        try:
            async for message in ws:
                try:
                    ack = json.loads(message)["ack"]
                    key = (str(ack["node"]), int(ack["seq"]))
                except (ValueError, KeyError, TypeError):
                    continue
                if key in self.unacked:
                    del self.unacked[key]
                    self._forget(key)
                    server.acked += 1
                    self.acked += 1
                    if self.on_ack is not None:
                        self.on_ack(key)
        except (ConnectionClosed, OSError) as exc:
            if server.ws is ws:
                self._fail(server, f"connection lost: {exc}")
            return
        if server.ws is ws:
            self._fail(server, "closed by the server")

    def _fail(self, server: _Server, why: str) -> None:
        server.failures += 1
        server.last_error = why
        server.state = "down"
        log.warning("ingest server %s failed: %s", server.addr, why)
        ws, server.ws = server.ws, None
        if ws is not None:
            self._closing.add(asyncio.ensure_future(ws.close()))
            self._closing = {task for task in self._closing if not task.done()}
        if server.reader is not None and server.reader is not asyncio.current_task():
            server.reader.cancel()
        for key in list(server.inflight):
            self._where.pop(key, None)
            self._sent_at.pop(key, None)
            self.resent += 1
        server.inflight.clear()
        server.backoff_until = time.monotonic() + server.backoff
        server.backoff = min(self.reconnect_max_s, server.backoff * 2)
        self._wake.set()

    async def close(self) -> None:
        for server in self.servers:
            if server.reader is not None:
                server.reader.cancel()
            if server.ws is not None:
                with contextlib.suppress(Exception):
                    await server.ws.close()

    def status(self) -> dict[str, Any]:
        return {
            "queued": len(self.unacked),
            "pushed": self.pushed,
            "acked": self.acked,
            "resent": self.resent,
            "overflowed": self.overflowed,
            "servers": [
                {
                    "addr": s.addr,
                    "state": s.state,
                    "sent": s.sent,
                    "acked": s.acked,
                    "failures": s.failures,
                    "last_error": s.last_error,
                }
                for s in self.servers
            ],
        }
