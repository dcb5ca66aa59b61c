"""Connection guard of the node's HTTP/websocket server: floods cost connections, not the node.

Owns three bounds around the aiohttp server:

- the descriptor limit: at start the soft ``RLIMIT_NOFILE`` is raised to the hard limit
  where the system allows it (``raise_descriptor_limit``);
- concurrent connections: at most ``max_connections`` (never more than the descriptor
  limit minus a reserve for state files, pipes and outgoing connections). A connection over
  the bound sheds the connection that has been idle longest (no request in progress); if
  every connection is busy, the new one is closed. Both are counted;
- idle and incomplete requests: a connection with no request in a handler for
  ``idle_timeout_s`` (a keep-alive connection nobody uses, headers trickled a byte at a
  time, nothing sent at all) is closed, counted. A request is "in a handler" once its
  headers are complete, so /collector subscribers (one long request) are never touched.

aiohttp calls its server's ``connection_made``/``connection_lost`` for every connection;
the guard wraps those two on the server instance and marks requests busy with a middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger("mysqlprobe.guard")

#: Descriptors kept free of HTTP connections: state files, pipes, sockets the node dials.
DESCRIPTOR_RESERVE = 256
#: How often idle connections are looked for.
SWEEP_S = 0.5


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit if allowed; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.info("descriptor limit raised from %d to %d", soft, hard)
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("descriptor limit stays at %d (hard %d): %s", soft, hard, exc)
    return soft, hard


def connection_bound(configured: int, soft_limit: int) -> int:
    """The connections the server may hold: the configured bound, within the descriptors."""
    if soft_limit == resource.RLIM_INFINITY:
        return configured
    return max(16, min(configured, soft_limit - DESCRIPTOR_RESERVE))


@dataclass
class _Connection:
    transport: asyncio.Transport
    opened: float
    last_active: float
    busy: int = 0


class ConnectionGuard:
    def __init__(
        self, *, max_connections: int, idle_timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self.connections: dict[asyncio.Transport, _Connection] = {}
        self.accepted = 0
        self.shed = 0
        self.refused = 0
        self.timed_out = 0
        self.descriptors: tuple[int, int] | None = None

    # -- wiring -----------------------------------------------------------------------------

    def attach(self, server: web.Server) -> None:
        """Hook the server's per-connection callbacks (called by each RequestHandler)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self.opened(transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            transport = handler.transport
            if transport is not None:
                self.connections.pop(transport, None)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        connection = self.connections.get(request.transport) if request.transport is not None else None
        if connection is None:
            return await handler(request)
        connection.busy += 1
        try:
            return await handler(request)
        finally:
            connection.busy -= 1
            connection.last_active = self.clock()

    # -- policy -----------------------------------------------------------------------------

    def opened(self, transport: asyncio.Transport) -> None:
        now = self.clock()
        if len(self.connections) >= self.max_connections:
            idle = [c for c in self.connections.values() if not c.busy]
            if not idle:
                self.refused += 1
                transport.abort()
                return
            oldest = min(idle, key=lambda c: c.last_active)
            self.connections.pop(oldest.transport, None)
            oldest.transport.abort()
            self.shed += 1
            if self.shed == 1 or self.shed % 1000 == 0:
                log.warning(
                    "%d connections open (the bound): shedding idle ones (%d so far)", len(self.connections), self.shed
                )
        self.accepted += 1
        self.connections[transport] = _Connection(transport, now, now)

    def sweep(self) -> int:
        """Close connections idle (no request in a handler) for longer than the timeout."""
        cutoff = self.clock() - self.idle_timeout_s
        stale = [c for c in self.connections.values() if not c.busy and c.last_active < cutoff]
        for connection in stale:
            self.connections.pop(connection.transport, None)
            connection.transport.abort()
        self.timed_out += len(stale)
        return len(stale)

    async def sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            with contextlib.suppress(Exception):  # never let housekeeping end the node
                self.sweep()

    def status(self) -> dict[str, Any]:
        return {
            "open": len(self.connections),
            "busy": sum(1 for c in self.connections.values() if c.busy),
            "max": self.max_connections,
            "idle_timeout_s": self.idle_timeout_s,
            "accepted": self.accepted,
            "shed": self.shed,
            "refused": self.refused,
            "timed_out": self.timed_out,
            "descriptor_limit": None
            if self.descriptors is None
            else {"soft": self.descriptors[0], "hard": self.descriptors[1]},
        }
