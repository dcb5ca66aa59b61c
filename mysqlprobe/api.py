"""The HTTP API over a node's stores: /events/* (trace store) and /api/metrics/*.

Owns the parameters and answers of these endpoints: every bad parameter is a 400 with a
reason, an unknown trace id a 404, a wrong method a 405, all as JSON; lists are ``[]``
when empty; scan limits are capped rather than refused. Slow samples carry SQL text: with
a token set, /events/query and /events/scan need it (``server.check_read``: unless
``websocket.opensubscribers``), /events/delete always does; /events/status and
/api/metrics/* are counts and node-level numbers (what /status shows: no template, no
SQL) and stay open.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from aiohttp import web

from cluster.metrics import MetricsStore
from cluster.traces import MAX_SCAN_LIMIT, TraceStore
from mysqlprobe.server import HTTPProblem, check_read, check_token, request_params

#: Largest values taken (beyond them the arithmetic in ns/us overflows or means nothing).
MAX_SECONDS = 1e11  # a window or a time since the epoch: about 3,000 years
MAX_MILLISECONDS = 1e12


def _number(
    params: dict[str, str], name: str, *, unit: str, positive: bool = True, maximum: float = MAX_SECONDS
) -> float | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise HTTPProblem(400, f"{name}: expected a number of {unit}, got {raw!r}") from None
    if not math.isfinite(value) or (positive and value <= 0) or value < 0:
        raise HTTPProblem(
            400, f"{name}: expected a {'positive' if positive else 'non-negative'} number of {unit}, got {raw!r}"
        )
    if value > maximum:
        raise HTTPProblem(400, f"{name}: {raw!r} is more than the largest accepted, {maximum:g} {unit}")
    return value


def _integer(params: dict[str, str], name: str, default: int, low: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPProblem(400, f"{name}: expected a whole number, got {raw!r}") from None
    if value < low:
        raise HTTPProblem(400, f"{name}: must be at least {low}, got {value}")
    return value


class StoresAPI:
    def __init__(
        self, traces: TraceStore, metrics: MetricsStore, token: Callable[[], str], *, open_read: bool = False
    ) -> None:
        self.traces = traces
        self.metrics = metrics
        self.token = token
        self.open_read = open_read

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/events/query", self.query)
        app.router.add_route("*", "/events/delete", self.delete)
        app.router.add_get("/events/scan", self.scan)
        app.router.add_get("/events/status", self.status)
        app.router.add_get("/api/metrics/raw", self.raw)
        app.router.add_get("/api/metrics/aggregate", self.aggregate)

    @staticmethod
    def _trace_id(params: dict[str, str]) -> str:
        trace_id = params.get("trace_id", "").strip()
        if not trace_id:
            raise HTTPProblem(400, "trace_id: expected a trace id (node.conn_id.seq)")
        return trace_id

    async def query(self, request: web.Request) -> web.Response:
        check_read(request, self.token(), self.open_read)
        trace_id = self._trace_id(dict(request.query))
        event = self.traces.get(trace_id, time.time_ns())
        if event is None:
            raise HTTPProblem(404, f"no event with trace id {trace_id!r}")
        return web.json_response(event)

    async def delete(self, request: web.Request) -> web.Response:
        if request.method not in ("POST", "DELETE"):
            raise HTTPProblem(405, f"{request.method} is not allowed here (allowed: POST, DELETE)")
        check_token(request, self.token())
        trace_id = self._trace_id(await request_params(request) if request.method == "POST" else dict(request.query))
        if not self.traces.delete(trace_id, time.time_ns()):
            raise HTTPProblem(404, f"no event with trace id {trace_id!r}")
        return web.json_response({"deleted": trace_id})

    async def scan(self, request: web.Request) -> web.Response:
        check_read(request, self.token(), self.open_read)
        params = dict(request.query)
        cursor = _integer(params, "cursor", 0, 0)
        limit = min(_integer(params, "limit", 100, 1), MAX_SCAN_LIMIT)
        since = _number(params, "since", unit="seconds since the epoch", positive=False)
        min_latency = _number(params, "min_latency_ms", unit="milliseconds", positive=False, maximum=MAX_MILLISECONDS)
        key = params.get("key") or None
        events, next_cursor = self.traces.scan(
            time.time_ns(),
            cursor=cursor,
            limit=limit,
            since_ns=int(since * 1e9) if since is not None else None,
            key=key,
            min_latency_us=int(min_latency * 1000) if min_latency is not None else None,
        )
        return web.json_response({"events": events, "cursor": next_cursor, "limit": limit})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.traces.status())

    def _window(self, request: web.Request) -> int:
        seconds = _number(dict(request.query), "seconds", unit="seconds")
        if seconds is None:
            raise HTTPProblem(400, "seconds: expected a positive number of seconds")
        return time.time_ns() - int(seconds * 1e9)

    async def raw(self, request: web.Request) -> web.Response:
        since = self._window(request)
        return web.json_response([s.to_json() for s in self.metrics.since(since, time.time_ns())])

    async def aggregate(self, request: web.Request) -> web.Response:
        since = self._window(request)
        group_by = request.query.get("group_by")
        if group_by not in (None, "", "node"):
            raise HTTPProblem(400, f"group_by: expected 'node', got {group_by!r}")
        return web.json_response(self.metrics.aggregate(since, time.time_ns(), by_node=group_by == "node"))
