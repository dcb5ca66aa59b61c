"""``mysqlprobe run``: a node of the role its configuration says, served over HTTP.

Owns the process wiring of a slave: the capture worker pool, the process list watcher, the
interval loop (drain the workers, merge their statistics into one report, publish it on
/collector) and the HTTP endpoints of a slave (/status, /config/update).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from message.report import (
    SCHEMA_VERSION,
    SlowSamples,
    TemplateStats,
    add_capture,
    add_counters,
    merge_templates,
    report_totals,
)
from mysqlprobe import __version__
from mysqlprobe.config import Config, ConfigError, load_config
from mysqlprobe.live import WorkerError, WorkerInterval, WorkerPool, WorkerSettings
from mysqlprobe.server import CollectorHub, HTTPProblem, check_token, errors_as_json, parse_int, request_params
from probe.engine import EngineConfig
from probe.flows import FlowLimits
from watcher import ProcesslistWatcher, Session

log = logging.getLogger("mysqlprobe")


def git_hash() -> str:
    """The commit this code runs from: MYSQLPROBE_GIT_HASH, or the checkout's HEAD."""
    env = os.environ.get("MYSQLPROBE_GIT_HASH")
    if env:
        return env
    try:
        result = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


class RuntimeSettings:
    """Settings tunable over /config/update; changes apply at the next interval."""

    TUNABLE = {
        "report_period_ms": (100, 3_600_000, "milliseconds"),
        "slow_threshold_ms": (0, 86_400_000, "milliseconds"),
    }

    def __init__(self, config: Config) -> None:
        self.current = {"report_period_ms": config.interval * 1000, "slow_threshold_ms": config.slowthresholdms}
        self.pending: dict[str, int] = {}

    def apply_pending(self) -> dict[str, int]:
        changed = {k: v for k, v in self.pending.items() if self.current.get(k) != v}
        self.current.update(self.pending)
        self.pending = {}
        return changed


class SlaveNode:
    role = "slave"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.name = config.node_name
        self.started = time.time()
        self.git_hash = git_hash()
        self.settings = RuntimeSettings(config)
        self.hub = CollectorHub(
            max_queue=config.websocket.maxqueue,
            write_timeout_s=config.websocket.writetimeoutms / 1000,
            heartbeat_s=config.websocket.pingtimeouts,
            max_message=config.websocket.maxmessagesize,
        )
        engine = EngineConfig(
            ports=frozenset({config.probe.port}),
            slow_threshold_us=config.slowthresholdms * 1000,
            max_slow=config.probe.maxslow,
            max_templates=config.probe.maxtemplates,
            redact=config.redact,
            dedup_ns=2_000_000 if len(config.devices) > 1 else 0,
            flows=FlowLimits(max_connections=config.probe.maxconnections),
        )
        self.pool = WorkerPool(
            WorkerSettings(
                devices=config.devices,
                port=config.probe.port,
                snaplen=config.probe.snappylength,
                buffer_bytes=config.probe.buffermb << 20,
                immediate=config.probe.immediate,
                engine=engine,
            ),
            config.probe.workers,
        )
        self.watcher: ProcesslistWatcher | None = None
        if config.watcher.uname:
            self.watcher = ProcesslistWatcher(
                config.watcher.host,
                config.watcher.port,
                config.watcher.uname,
                config.watcher.password,
                refresh_s=config.watcher.refreshs,
                on_refresh=self._sessions,
            )
        self.seq = 0
        self.capture_totals: dict[str, Any] = {}
        self.last_report_at: float | None = None
        self.trace_seq = 0
        self._pool_lock = asyncio.Lock()
        self._stop = asyncio.Event()

    # -- wiring ---------------------------------------------------------------------------

    def _sessions(self, sessions: dict[str, Session]) -> None:
        self.pool.broadcast(("sessions", {k: (s.user, s.db, s.conn_id) for k, s in sessions.items()}))

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors_as_json])
        app.router.add_get("/collector", self.hub.handle)
        app.router.add_get("/status", self.status)
        app.router.add_route("*", "/config/update", self.config_update)
        return app

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await asyncio.to_thread(self.pool.start)
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.bind, self.config.serverport)
        await site.start()
        log.info("slave %s serving on %s:%d", self.name, self.config.bind, self.config.serverport)
        if self.watcher is not None:
            self.watcher.start()
        health = asyncio.ensure_future(self._health())
        try:
            await self._intervals()
        finally:
            health.cancel()
            if self.watcher is not None:
                await asyncio.to_thread(self.watcher.stop)
            await asyncio.to_thread(self.pool.stop)
            await runner.cleanup()

    async def _health(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            async with self._pool_lock:
                restarted = await asyncio.to_thread(self.pool.check)
            if restarted:
                log.warning("restarted %d capture worker(s)", restarted)
                if self.watcher is not None and self.watcher.sessions:
                    self._sessions(self.watcher.sessions)

    async def _intervals(self) -> None:
        start = time.time_ns()
        while not self._stop.is_set():
            period_ns = self.settings.current["report_period_ms"] * 1_000_000
            wait = (start + period_ns - time.time_ns()) / 1e9
            if wait > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), wait)
                    break
                except TimeoutError:
                    pass
            end = time.time_ns()
            async with self._pool_lock:
                answers, missing = await asyncio.to_thread(self.pool.drain, max(2.0, period_ns / 2e9))
            self.publish(self.build_report(start, end, answers, missing))
            changed = self.settings.apply_pending()
            if "slow_threshold_ms" in changed:
                self.pool.broadcast(("slow_threshold_us", changed["slow_threshold_ms"] * 1000))
            start = end

    def publish(self, report: dict[str, Any]) -> None:
        self.hub.publish(report)
        self.last_report_at = time.time()

    # -- reports --------------------------------------------------------------------------

    def build_report(
        self, start_ns: int, end_ns: int, answers: list[WorkerInterval], missing: list[int]
    ) -> dict[str, Any]:
        templates: dict[tuple[str, str, str], TemplateStats] = {}
        slow = SlowSamples(self.config.probe.maxslow)
        counters: dict[str, int] = {}
        capture: dict[str, Any] = {}
        for answer in answers:
            merge_templates(templates, answer.templates)
            slow.merge(answer.slow, answer.slow_dropped)
            add_counters(counters, answer.counters)
            add_capture(capture, answer.capture)
        capture["workers_missing"] = len(missing)
        capture["workers_restarted"] = self.pool.restarts
        add_capture(self.capture_totals, {k: v for k, v in capture.items() if k != "workers_restarted"})
        self.seq += 1
        samples = []
        for sample in slow.worst_first():
            self.trace_seq += 1
            sample.trace_id = f"{self.name}.{sample.conn_id or 0}.{self.trace_seq}"
            samples.append(sample.to_json())
        ordered = sorted(templates.values(), key=lambda t: (-t.latency_sum, t.key))
        servers = sorted({t.server for t in ordered})
        return {
            "schema": SCHEMA_VERSION,
            "kind": "interval",
            "node": self.name,
            "role": self.role,
            "seq": self.seq,
            "epoch": 0,
            "server": servers[0] if len(servers) == 1 else f"*:{self.config.probe.port}",
            "interval": {"start_ns": start_ns, "end_ns": end_ns},
            "totals": report_totals(counters, capture, ordered),
            "capture": capture,
            "templates": [t.to_json() for t in ordered],
            "slow": samples,
            "slow_dropped": slow.dropped,
        }

    # -- HTTP -----------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "version": __version__,
                "git_hash": self.git_hash,
                "node": self.name,
                "role": self.role,
                "uptime_s": round(time.time() - self.started, 1),
                "devices": self.config.devices,
                "port": self.config.probe.port,
                "settings": dict(self.settings.current),
                "pending_settings": dict(self.settings.pending),
                "seq": self.seq,
                "last_report_at": self.last_report_at,
                "capture": self.capture_totals,
                "dropped_kernel": self.capture_totals.get("dropped_kernel", 0),
                "dropped_interface": self.capture_totals.get("dropped_interface", 0),
                "workers": self.pool.status(),
                "workers_restarted": self.pool.restarts,
                "collector": self.hub.status(),
                "watcher": self.watcher.status() if self.watcher is not None else None,
            }
        )

    async def config_update(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "POST"):
            raise HTTPProblem(405, f"{request.method} is not allowed here (allowed: GET, POST)")
        check_token(request, self.config.token)
        params = await request_params(request)
        unknown = sorted(set(params) - set(RuntimeSettings.TUNABLE))
        if unknown:
            raise HTTPProblem(
                400, f"unknown setting {unknown[0]!r} (tunable: {', '.join(sorted(RuntimeSettings.TUNABLE))})"
            )
        if not params:
            raise HTTPProblem(400, f"no setting given (tunable: {', '.join(sorted(RuntimeSettings.TUNABLE))})")
        accepted = {}
        for name, (low, high, unit) in RuntimeSettings.TUNABLE.items():
            value = parse_int(request, params, name, low, high, unit)
            if value is not None:
                accepted[name] = value
        self.settings.pending.update(accepted)
        return web.json_response({"accepted": accepted, "effective": "at the next interval"})


def run_node(config_path: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"mysqlprobe: config error: {exc}", file=sys.stderr)
        return 2
    if not config.slave:
        print("mysqlprobe: slave: false (master/standby) is not available in this build", file=sys.stderr)
        return 2
    node = SlaveNode(config)
    try:
        asyncio.run(node.run())
    except WorkerError as exc:
        print(f"mysqlprobe: cannot capture: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mysqlprobe: cannot serve on {config.bind}:{config.serverport}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
