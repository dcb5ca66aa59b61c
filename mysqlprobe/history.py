"""Query history in a running node: the store off the event loop, /api/history/*, and
``mysqlprobe history``.

Owns the wiring of ``cluster.history`` into a node and the user-facing rules:

- ``HistoryService``: every published report is written by one writer thread (one
  transaction per interval); queries run in a reader thread with their own connection.
  At most ``MAX_PENDING_WRITES`` reports wait for the writer; beyond that a report is
  dropped from history and counted (``writes_dropped`` in /status). A database that is
  down is retried at the next report; its error is in /status.
- ``HistoryAPI``: ``GET /api/history/top``, ``/api/history/series``, ``/api/history/template``
  (shapes in README "Query history"). Times are unix seconds, ISO 8601 or relative
  (``now``, ``-15m``, ``-2h``, ``-7d``); bad ones are 400 with a reason. They answer
  query data (template texts and per-template statistics): with a token set they need it
  (``server.check_read``: unless ``websocket.opensubscribers``).
- ``history_command``: ``mysqlprobe history top`` on a state directory or a DSN.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from cluster.history import HistoryDBError, HistoryStore, Retention, open_database
from cluster.history.plan import HOUR_NS, MINUTE_NS
from cluster.history.store import ORDERS
from message.report import SchemaError, TemplateStats
from mysqlprobe.config import HistoryConfig
from mysqlprobe.server import HTTPProblem, check_read

SQLITE_NAME = "history.sqlite3"
MAX_PENDING_WRITES = 16
MAX_TOP_LIMIT = 1000
MAX_SERIES_POINTS = 10_000
_STEPS_S = (10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400)
_RELATIVE = re.compile(r"-(\d+(?:\.\d+)?)([smhd])")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

T = TypeVar("T")


def parse_time(text: str, now_ns: int) -> int:
    """``now``, ``-15m`` (s, m, h, d ago), unix seconds, or ISO 8601 (UTC when no zone)
    -> ns since the epoch; ``ValueError`` says what was expected."""
    text = text.strip()
    if text == "now":
        return now_ns
    match = _RELATIVE.fullmatch(text)
    if match:
        return now_ns - int(float(match.group(1)) * _UNITS_S[match.group(2)] * 1e9)
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"{text!r} is not a time")
        return int(seconds * 1e9)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time (unix seconds, ISO 8601, now, or -15m/-2h/-7d)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``5m``, ``1h``, ``1d`` -> ns; ``ValueError`` if not a positive duration."""
    text = text.strip()
    unit = 1
    if text and text[-1] in _UNITS_S:
        unit = _UNITS_S[text[-1]]
        text = text[:-1]
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a duration such as 60, 60s, 5m, 1h or 1d") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected a positive duration")
    return int(value * unit * 1e9)


def default_step(span_ns: int) -> int:
    """A round step giving at most 300 points over ``span_ns``."""
    for step in _STEPS_S:
        if span_ns / (step * 1e9) <= 300:
            return step * 10**9
    return -(-span_ns // 300)


def retention_of(config: HistoryConfig, interval_s: int) -> Retention:
    return Retention(
        raw_ns=config.rawhours * HOUR_NS,
        minute_ns=config.minutedays * 24 * HOUR_NS,
        hour_ns=config.hourdays * 24 * HOUR_NS,
        max_bytes=config.maxmb << 20,
        late_ns=max(2 * MINUTE_NS, 3 * interval_s * 10**9),
    )


def report_rows(report: dict[str, Any]) -> list[TemplateStats]:
    """A report's template entries (each carries the user it belongs to)."""
    return [TemplateStats.from_json(t) for t in report.get("templates", ())]


class HistoryService:
    """A node's history store, used from the event loop without blocking it."""

    def __init__(self, config: HistoryConfig, state: Path, interval_s: int, *, master_capable: bool) -> None:
        self.config = config
        self.path = state / SQLITE_NAME
        self.retention = retention_of(config, interval_s)
        self.master_capable = master_capable
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="history-write")
        self._read_pool = ThreadPoolExecutor(1, thread_name_prefix="history-read")
        self._local = threading.local()
        self.pending = 0
        self.writes = 0
        self.writes_dropped = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self.last_write_s: float | None = None
        self.store_status: dict[str, Any] = {}

    def keeps(self, role: str, subscribed: bool) -> bool:
        """Whether this node's reports go to history now: a master's always (in auto mode);
        a slave's while no master has subscribed to it and it is not in a gossip cluster."""
        if self.config.mode == "on":
            return True
        if self.config.mode == "off":
            return False
        return role == "master" or (role == "slave" and not subscribed)

    def _store(self) -> HistoryStore:
        """This thread's store, opened (and migrated) on first use."""
        store: HistoryStore | None = getattr(self._local, "store", None)
        if store is None:
            store = HistoryStore(open_database(self.config.dsn, self.path), self.retention)
            self._local.store = store
        return store

    def record(self, report: dict[str, Any]) -> None:
        """Queue one report for the writer (non-blocking; dropped and counted when full)."""
        if self.pending >= MAX_PENDING_WRITES:
            self.writes_dropped += 1
            return
        self.pending += 1
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._write_pool, self._write, report, time.time_ns())
        future.add_done_callback(self._written)

    async def flush(self) -> None:
        """Until every report recorded so far is written (or failed)."""
        await asyncio.get_running_loop().run_in_executor(self._write_pool, lambda: None)

    def _write(self, report: dict[str, Any], now_ns: int) -> dict[str, Any]:
        started = time.perf_counter()
        store = self._store()
        interval = report.get("interval", {})
        store.write(str(report.get("node", "")), int(interval["start_ns"]), report_rows(report), now_ns)
        status = store.status()
        status["last_write_s"] = round(time.perf_counter() - started, 4)
        return status

    def _written(self, future: asyncio.Future[dict[str, Any]]) -> None:
        self.pending -= 1
        try:
            self.store_status = future.result()
            self.writes += 1
            self.last_error = None
        except (HistoryDBError, SchemaError, KeyError, ValueError, TypeError) as exc:
            self._failed(exc)
        except Exception as exc:  # a database driver's own error: counted, never fatal
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        # A broken connection is reopened at the next write.
        self._write_pool.submit(self._forget_store)

    def _forget_store(self) -> None:
        store = getattr(self._local, "store", None)
        if store is not None:
            self._local.store = None
            with contextlib.suppress(Exception):  # already broken: nothing more to do
                store.db.close()

    async def query(self, fn: Callable[[HistoryStore], T]) -> T:
        """Run ``fn(store)`` in the reader thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._read_pool, lambda: fn(self._store()))
        except HistoryDBError as exc:
            await loop.run_in_executor(self._read_pool, self._forget_store)
            raise HTTPProblem(503, f"history store unavailable: {exc}") from None

    async def close(self) -> None:
        """Finish the queued writes, then close each thread's connection in its thread."""
        loop = asyncio.get_running_loop()
        for pool in (self._write_pool, self._read_pool):
            await loop.run_in_executor(pool, self._forget_store)
            pool.shutdown(wait=False)

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.config.mode,
            "backend": "postgresql" if self.config.dsn else "sqlite",
            "pending": self.pending,
            "writes": self.writes,
            "writes_dropped": self.writes_dropped,
            "write_errors": self.write_errors,
            "last_error": self.last_error,
            "store": self.store_status,
        }


class HistoryAPI:
    """/api/history/*: answers from the node's history store."""

    def __init__(self, service: HistoryService | None, token: Callable[[], str], *, open_read: bool = False) -> None:
        self.service = service
        self.token = token
        self.open_read = open_read

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/history/top", self.top)
        app.router.add_get("/api/history/series", self.series)
        app.router.add_get("/api/history/template", self.template)

    def _service(self, request: web.Request) -> HistoryService:
        check_read(request, self.token(), self.open_read)
        if self.service is None:
            raise HTTPProblem(404, "this node keeps no history (history.mode is off)")
        return self.service

    @staticmethod
    def _range(params: dict[str, str], now_ns: int) -> tuple[int, int]:
        if not params.get("from"):
            raise HTTPProblem(400, "from: expected a time (unix seconds, ISO 8601, now, or -15m/-2h/-7d)")
        try:
            start = parse_time(params["from"], now_ns)
        except ValueError as exc:
            raise HTTPProblem(400, f"from: {exc}") from None
        try:
            end = parse_time(params["to"], now_ns) if params.get("to") else now_ns
        except ValueError as exc:
            raise HTTPProblem(400, f"to: {exc}") from None
        if start >= end:
            raise HTTPProblem(400, f"from must be before to (from {start / 1e9:.3f}, to {end / 1e9:.3f})")
        return start, end

    @staticmethod
    def _dimensions(params: dict[str, str]) -> dict[str, str | None]:
        return {name: params.get(name) or None for name in ("server", "db", "user")}

    async def top(self, request: web.Request) -> web.Response:
        service = self._service(request)
        params = dict(request.query)
        start, end = self._range(params, time.time_ns())
        order = params.get("order") or "load"
        if order not in ORDERS:
            raise HTTPProblem(400, f"order: expected one of {', '.join(ORDERS)}, got {order!r}")
        raw_limit = params.get("limit") or "20"
        try:
            limit = int(raw_limit)
        except ValueError:
            raise HTTPProblem(400, f"limit: expected a whole number, got {raw_limit!r}") from None
        if limit < 1:
            raise HTTPProblem(400, f"limit: must be at least 1, got {limit}")
        limit = min(limit, MAX_TOP_LIMIT)
        dims = self._dimensions(params)
        answer = await service.query(lambda store: store.top(start, end, order=order, limit=limit, **dims))
        return web.json_response(answer)

    async def series(self, request: web.Request) -> web.Response:
        service = self._service(request)
        params = dict(request.query)
        key = params.get("key", "").strip()
        if not key:
            raise HTTPProblem(400, "key: expected a template key")
        start, end = self._range(params, time.time_ns())
        if params.get("step"):
            try:
                step = parse_duration(params["step"])
            except ValueError as exc:
                raise HTTPProblem(400, f"step: {exc}, got {params['step']!r}") from None
        else:
            step = default_step(end - start)
        points = -(-(end - start) // step)
        if points > MAX_SERIES_POINTS:
            raise HTTPProblem(
                400, f"step: {step / 1e9:g} s gives {points} points over this range (at most {MAX_SERIES_POINTS})"
            )
        dims = self._dimensions(params)
        answer = await service.query(lambda store: store.series(key, start, end, step, **dims))
        return web.json_response(answer)

    async def template(self, request: web.Request) -> web.Response:
        service = self._service(request)
        key = request.query.get("key", "").strip()
        if not key:
            raise HTTPProblem(400, "key: expected a template key")
        answer = await service.query(lambda store: store.template(key))
        if answer is None:
            raise HTTPProblem(404, f"no template with key {key!r} in history")
        return web.json_response(answer)


def history_command(args: Any, now_ns: int) -> int:
    """``mysqlprobe history top``: prints the answer of /api/history/top; 2 on bad input."""
    import json
    import shutil

    from mysqlprobe.render import history_table

    try:
        start = parse_time(args.from_, now_ns)
        end = parse_time(args.to, now_ns)
    except ValueError as exc:
        print(f"mysqlprobe: error: {exc}", file=sys.stderr)
        return 2
    if start >= end:
        print("mysqlprobe: error: --from must be before --to", file=sys.stderr)
        return 2
    if args.dsn:
        dsn, path = args.dsn, Path()
    else:
        dsn, path = "", Path(args.state) / SQLITE_NAME
        if not path.is_file():
            print(f"mysqlprobe: error: no history in {args.state} ({SQLITE_NAME} not found)", file=sys.stderr)
            return 2
    try:
        db = open_database(dsn, path)
    except HistoryDBError as exc:
        print(f"mysqlprobe: error: {exc}", file=sys.stderr)
        return 2
    try:
        store = HistoryStore(db)
        answer = store.top(start, end, server=args.server, db=args.db, user=args.user, order=args.order, limit=args.top)
    finally:
        db.close()
    if args.format == "json":
        json.dump(answer, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
    else:
        width = shutil.get_terminal_size((160, 24)).columns
        sys.stdout.write(history_table(answer, width=width, details=args.details))
    return 0
