"""``mysqlprobe run``: a node of the role its configuration says, served over HTTP.

Owns the process wiring of a node. ``BaseNode`` is what every role has (the HTTP app with
/collector, /status, /config/update and /cluster/*, the cluster wiring, the pusher, the
persisted report sequence); ``SlaveNode`` adds the capture worker pool, the process list
watcher and the interval loop (drain the workers, merge their statistics into one report,
publish it). The master and standby live in ``mysqlprobe.master``.
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

from cluster.metrics import MetricsStore, Sample
from cluster.traces import TraceStore
from message.logins import ordered_logins
from message.persist import StateError, StateWrites, read_shaped
from message.report import (
    SCHEMA_VERSION,
    IntervalSum,
    add_capture,
    report_totals,
)
from mysqlprobe import __version__
from mysqlprobe.api import StoresAPI
from mysqlprobe.clustering import Clustering
from mysqlprobe.config import Config, ConfigError, load_config, state_dir
from mysqlprobe.dashboard import Dashboard
from mysqlprobe.guard import ConnectionGuard, connection_bound, raise_descriptor_limit
from mysqlprobe.history import HistoryAPI, HistoryService
from mysqlprobe.identity import ReportIdentity
from mysqlprobe.live import WorkerError, WorkerInterval, WorkerPool, WorkerSettings
from mysqlprobe.logging_setup import configure as configure_logging
from mysqlprobe.otlp import OtlpExporter
from mysqlprobe.prometheus import NodeMetrics
from mysqlprobe.server import (
    CollectorHub,
    HTTPProblem,
    check_read,
    check_token,
    errors_as_json,
    parse_int,
    request_params,
    valid_epoch,
)
from mysqlprobe.sessions import SessionCheckpoint, WorkerSessions
from mysqlprobe.tls import client_context, server_context
from probe import native
from probe.engine import EngineConfig
from probe.flows import FlowLimits
from pusher.client import Pusher
from pusher.spool import DiskSpool
from watcher import ProcesslistWatcher, Session
from watcher.heartbeat import HeartbeatLoop, HeartbeatReader, HeartbeatWriter

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


class ServeError(RuntimeError):
    """The HTTP server could not listen (address in use, no permission, ...)."""


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


class BaseNode:
    """What every node has: the HTTP app, /collector, /status, runtime settings, the
    cluster wiring, the pusher and a persisted report sequence number."""

    role = "node"
    master_capable = False

    def __init__(self, config: Config, state: Path) -> None:
        self.config = config
        self.state = state
        self.name = config.node_name
        self.started = time.time()
        self.git_hash = git_hash()
        self.settings = RuntimeSettings(config)
        self.writes = StateWrites(state)
        self.identity = ReportIdentity(state / "seq.json", self.name, self.writes)
        self.hub = CollectorHub(
            max_queue=config.websocket.maxqueue,
            write_timeout_s=config.websocket.writetimeoutms / 1000,
            heartbeat_s=config.websocket.pingtimeouts,
            max_message=config.websocket.maxmessagesize,
            max_inbound=config.websocket.maxinbound,
            token=lambda: self.config.token,
            open_read=config.websocket.opensubscribers,
            node=self.name,
        )
        self.server_tls = server_context(config.tls)
        self.client_tls = client_context(config.tls)
        self.guard = ConnectionGuard(
            max_connections=config.http.maxconnections, idle_timeout_s=float(config.http.idletimeouts)
        )
        self.hub.incarnation = self.identity.incarnation
        self.clustering = Clustering(config, self.name, state, master_capable=self.master_capable, writes=self.writes)
        self.pusher: Pusher | None = None
        if config.pusher.servers:
            spool = DiskSpool(state / "spool" / "push", self.name)
            self.pusher = Pusher(
                config.pusher.servers,
                path=config.pusher.path,
                preconnect=config.pusher.preconnect,
                reconnect_max_s=config.websocket.reconnectperiods,
                spool=spool,
                ssl=self.client_tls,
            )
            for key, data in spool.items():  # unacknowledged before a restart: resend
                self.pusher.restore(key, data, spooled=True)
        self.traces = TraceStore(
            ttl_ns=config.traces.ttls * 10**9, max_events=config.traces.maxevents, max_bytes=config.traces.maxmb << 20
        )
        self.metrics = MetricsStore(
            retention_ns=config.metrics.retentions * 10**9, max_samples=config.metrics.maxsamples
        )
        self.api = StoresAPI(
            self.traces, self.metrics, lambda: self.config.token, open_read=config.websocket.opensubscribers
        )
        self.history: HistoryService | None = None
        if config.history.mode != "off":
            self.history = HistoryService(config.history, state, config.interval, master_capable=self.master_capable)
        self.last_report_at: float | None = None
        self.prometheus = NodeMetrics(
            topn=config.prometheus.topn,
            template_length=config.prometheus.templatelength,
            status=self.status_body,
            version=__version__,
            git_hash=self.git_hash,
            queue_depths=self.queue_depths,
        )
        self.otlp: OtlpExporter | None = None
        if config.otlp.endpoint:
            self.otlp = OtlpExporter(
                config.otlp.endpoint,
                node=self.name,
                version=__version__,
                db_system=config.otlp.dbsystem,
                topn=config.otlp.topn,
                timeout_s=config.otlp.timeoutms / 1000,
                max_queue=config.otlp.maxqueue,
            )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Future[Any]] = []

    @property
    def current_role(self) -> str:
        return self.clustering.role if self.master_capable else self.role

    @property
    def seq(self) -> int:
        return self.identity.seq

    @property
    def incarnation(self) -> str:
        return self.identity.incarnation

    def next_seq(self) -> int:
        seq = self.identity.next()
        self.hub.incarnation = self.identity.incarnation
        return seq

    #: Whether this node's own reports carry the slow samples it stores (a master stores
    #: every slave's samples as they arrive instead).
    stores_own_samples = True

    def publish(self, report: dict[str, Any]) -> None:
        now = time.time_ns()
        self.hub.publish(report)
        if self.pusher is not None:
            self.pusher.push(report)
        self.last_report_at = time.time()
        self.prometheus.observe(report, self.hub.templates)
        if self.otlp is not None:
            self.otlp.observe(report, self.hub.templates)
        if self.stores_own_samples:
            self.traces.add(report.get("slow", ()), now)
        self.metrics.record(self.report_samples(report, self.name, now), now)
        if self.history is not None and self.history.keeps(
            self.current_role, self.hub.max_epoch >= 0 or self.config.cluster.gossip
        ):
            self.history.record(report)

    def report_samples(self, report: dict[str, Any], node: str, ts: int) -> list[Sample]:
        """The per-interval metrics of a report (this node's, or a slave's on a master)."""
        totals = report.get("totals", {})
        capture = report.get("capture", {})
        samples = [
            Sample(ts, node, "queries", float(totals.get("queries", 0)), False),
            Sample(ts, node, "errors", float(totals.get("errors", 0)), False),
            Sample(ts, node, "coverage", float(totals.get("coverage", 1.0)), False),
            Sample(ts, node, "packets", float(capture.get("packets", 0)), False),
            Sample(
                ts, node, "dropped_kernel", float(capture.get("dropped_kernel", 0)), bool(capture.get("dropped_kernel"))
            ),
        ]
        if node == self.name:
            if self.pusher is not None:
                samples.append(Sample(ts, node, "push_queue_depth", float(len(self.pusher.unacked)), False))
            samples.append(Sample(ts, node, "subscribers", float(len(self.hub.subscribers)), False))
        for server, lag in dict(report.get("heartbeat", {})).items():
            if lag.get("role") == "writer":
                continue  # a writer measures no lag: a null sample would only hide the readers' values
            value = lag.get("lag_ms")
            samples.append(
                Sample(ts, f"{node}/{server}" if node else server, "heartbeat_lag_ms", value, bool(lag.get("error")))
            )
        return samples

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard.middleware, errors_as_json])
        app.router.add_get("/collector", self.hub.handle)
        app.router.add_get("/status", self.status)
        app.router.add_route("*", "/config/update", self.config_update)
        app.router.add_get("/metrics", self.metrics_text)
        self.clustering.routes(app)
        self.api.routes(app)
        Dashboard(self.hub, f"mysqlprobe {self.name}", lambda: self.config.token).routes(app)
        HistoryAPI(self.history, lambda: self.config.token, open_read=self.config.websocket.opensubscribers).routes(app)
        return app

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self.guard.descriptors = raise_descriptor_limit()
        self.guard.max_connections = connection_bound(self.config.http.maxconnections, self.guard.descriptors[0])
        await self.start()
        await asyncio.to_thread(self.clustering.start)
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        assert runner.server is not None
        self.guard.attach(runner.server)
        self._tasks.append(asyncio.ensure_future(self.guard.sweeper()))
        site = web.TCPSite(runner, self.config.bind, self.config.serverport, ssl_context=self.server_tls)
        try:
            await site.start()
        except OSError as exc:
            raise ServeError(
                f"cannot serve on {self.config.bind}:{self.config.serverport}: {exc.strerror or exc}"
            ) from None
        scheme = "https" if self.server_tls is not None else "http"
        log.info(
            "%s %s serving on %s:%d (%s, %s engine)",
            self.current_role,
            self.name,
            self.config.bind,
            self.config.serverport,
            scheme,
            native.ENGINE,
        )
        self._tasks.append(asyncio.ensure_future(self._cluster_loop()))
        if self.pusher is not None:
            self._tasks.append(asyncio.ensure_future(self.pusher.run()))
        if self.otlp is not None:
            self._tasks.append(asyncio.ensure_future(self.otlp.run()))
        try:
            await self.main()
        finally:
            for task in self._tasks:
                task.cancel()
            await self.stop()
            if self.history is not None:
                await self.history.close()
            if self.pusher is not None:
                await self.pusher.close()
            await asyncio.to_thread(self.clustering.stop)
            await self.hub.close_all()
            await runner.cleanup()

    async def _cluster_loop(self) -> None:
        while True:
            try:
                changed = await asyncio.to_thread(self.clustering.step)
            except Exception:  # a cluster hiccup must not take the node down
                log.exception("cluster step failed")
                changed = False
            if changed:
                log.info("role %s, epoch %d", self.clustering.role, self.clustering.epoch)
            self.identity.retry()  # in the loop, as next() is: never two writers of seq.json
            await self.cluster_changed(changed)
            await asyncio.sleep(0.5)

    async def start(self) -> None:
        """Role-specific start (before the HTTP server)."""

    async def stop(self) -> None:
        """Role-specific cleanup."""

    async def main(self) -> None:
        await self._stop.wait()

    async def cluster_changed(self, changed: bool) -> None:
        """Called after every cluster step."""

    def status_body(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "git_hash": self.git_hash,
            "engine": native.ENGINE,
            "node": self.name,
            "role": self.current_role,
            "epoch": self.clustering.epoch,
            "uptime_s": round(time.time() - self.started, 1),
            "settings": dict(self.settings.current),
            "pending_settings": dict(self.settings.pending),
            "seq": self.seq,
            "incarnation": self.incarnation,
            "state": {**self.writes.status(), **self.identity.status()},
            "last_report_at": self.last_report_at,
            "collector": self.hub.status(),
            "connections": self.guard.status(),
            "cluster": self.clustering.status(),
            "pusher": self.pusher.status() if self.pusher is not None else None,
            "otlp": self.otlp.status() if self.otlp is not None else None,
            "traces": self.traces.status(),
            "metrics": self.metrics.status(),
            "history": self.history.status() if self.history is not None else None,
        }

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status_body())

    def queue_depths(self) -> dict[str, int]:
        depths = {"collector": sum(sub.queue.qsize() for sub in self.hub.subscribers)}
        if self.pusher is not None:
            depths["push"] = len(self.pusher.unacked)
        if self.otlp is not None:
            depths["otlp"] = len(self.otlp.queue)
        return depths

    def check_read(self, request: web.Request) -> None:
        """A read of query data (``server.check_read``): the token when one is set, unless
        readers may come in without it (``websocket.opensubscribers``)."""
        check_read(request, self.config.token, self.config.websocket.opensubscribers)

    async def metrics_text(self, request: web.Request) -> web.Response:
        self.check_read(request)  # per-template series; the _info series carry template texts
        body, content_type = self.prometheus.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

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

    async def wait_interval(self, start_ns: int) -> bool:
        """Sleep to the end of the interval that began at ``start_ns``; False when stopping."""
        period_ns = self.settings.current["report_period_ms"] * 1_000_000
        wait = (start_ns + period_ns - time.time_ns()) / 1e9
        if wait > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), wait)
                return False
            except TimeoutError:
                pass
        return not self._stop.is_set()


#: Capture values that are a state now, not a count of events: /status shows the latest.
CAPTURE_GAUGES = frozenset({"connections_active", "workers_restarted"})


class SlaveNode(BaseNode):
    role = "slave"

    def __init__(self, config: Config, state: Path) -> None:
        super().__init__(config, state)
        saved = read_shaped(state / "epoch.json", "fencing-epoch", lambda p: valid_epoch(p["epoch"]))
        if saved is not None:
            self.hub.max_epoch = saved
        self.hub.on_epoch = lambda epoch: self._save_epoch()
        engine = EngineConfig(
            ports=frozenset({config.probe.port}),
            slow_threshold_us=config.slowthresholdms * 1000,
            max_slow=config.probe.maxslow,
            max_templates=config.probe.maxtemplates,
            redact=config.redact,
            dedup_ns=2_000_000 if len(config.devices) > 1 else 0,
            flows=FlowLimits(
                max_connections=config.probe.maxconnections, max_prepared_bytes=config.probe.maxpreparedmb << 20
            ),
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
        self.heartbeat: HeartbeatLoop | None = None
        hb = config.heartbeat
        if hb.mode != "off":
            worker: HeartbeatWriter | HeartbeatReader
            if hb.mode == "writer":
                worker = HeartbeatWriter(
                    config.watcher.host,
                    config.watcher.port,
                    config.watcher.uname,
                    config.watcher.password,
                    node=self.name,
                    epoch=lambda: max(0, self.hub.max_epoch),
                    row_id=hb.id,
                    database=hb.database,
                    table=hb.table,
                )
            else:
                worker = HeartbeatReader(
                    config.watcher.host,
                    config.watcher.port,
                    config.watcher.uname,
                    config.watcher.password,
                    row_id=hb.id,
                    database=hb.database,
                    table=hb.table,
                    interval_s=hb.intervalms / 1000,
                )
            self.heartbeat = HeartbeatLoop(worker, hb.intervalms / 1000)
        self.capture_totals: dict[str, Any] = {}
        self.drained: dict[int, tuple[int, int]] = {}  # drain request id -> its interval, the latest 64
        self.trace_seq = 0
        # Resumable state: reports wait in the spool until a master acknowledges them; the
        # checkpoint keeps the end of the last interval (to report a restart's downtime as a
        # capture gap) and, per connection, what the wire will not say again.
        self.hub.spool = DiskSpool(state / "spool" / "master", "")
        self.checkpoint = SessionCheckpoint(state, self.name, self.writes)
        self.last_end_ns, restored = self.checkpoint.load()
        self.worker_sessions = WorkerSessions(restored, config.probe.workers)
        self.pending_gap: dict[str, Any] | None = None
        self._pool_lock = asyncio.Lock()

    # -- wiring ---------------------------------------------------------------------------

    def _save_epoch(self) -> None:
        self.writes.write(self.state / "epoch.json", "fencing-epoch", {"epoch": self.hub.max_epoch})

    def _sessions(self, sessions: dict[str, Session]) -> None:
        self.pool.broadcast(("sessions", {k: (s.user, s.db, s.conn_id, s.prepared) for k, s in sessions.items()}))

    async def start(self) -> None:
        await asyncio.to_thread(self.pool.start)
        if self.sessions:
            self.pool.broadcast(("restore", self.sessions))
        if self.watcher is not None:
            self.watcher.start()
        if self.heartbeat is not None:
            self.heartbeat.start()
        self._tasks.append(asyncio.ensure_future(self._health()))

    async def stop(self) -> None:
        if self.watcher is not None:
            await asyncio.to_thread(self.watcher.stop)
        if self.heartbeat is not None:
            await asyncio.to_thread(self.heartbeat.stop)
        await asyncio.to_thread(self.pool.stop)

    async def main(self) -> None:
        await self._intervals()

    async def _health(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            async with self._pool_lock:
                restarted = await asyncio.to_thread(self.pool.check)
            if restarted:
                log.warning("restarted %d capture worker(s)", restarted)
                if self.sessions:
                    self.pool.broadcast(("restore", self.sessions))
                if self.watcher is not None and self.watcher.sessions:
                    self._sessions(self.watcher.sessions)

    async def _intervals(self) -> None:
        start = time.time_ns()
        if self.last_end_ns is not None and self.last_end_ns < start:
            # Down since the last report: that time is a capture gap, said in the next report.
            self.pending_gap = {
                "start_ns": self.last_end_ns,
                "end_ns": start,
                "reason": "probe restart",
            }
        else:
            self.pending_gap = None
        while await self.wait_interval(start):
            end = time.time_ns()
            period_ns = self.settings.current["report_period_ms"] * 1_000_000
            async with self._pool_lock:
                answers, missing, late = await asyncio.to_thread(self.pool.drain, max(2.0, period_ns / 2e9), end)
            self.drained[self.pool.request] = (start, end)
            while len(self.drained) > 64:
                del self.drained[next(iter(self.drained))]
            self.publish_late(late)
            report = self.build_report(start, end, answers, missing)
            self._apply_sessions(answers)
            self.publish(report)
            self.last_end_ns = end
            if "epoch.json" in self.writes.failing:
                self._save_epoch()
            changed_sessions, gone = self.worker_sessions.take_changes()
            await asyncio.to_thread(self.checkpoint.record, end, self.sessions, changed_sessions, gone)
            changed = self.settings.apply_pending()
            if "slow_threshold_ms" in changed:
                self.pool.broadcast(("slow_threshold_us", changed["slow_threshold_ms"] * 1000))
            start = end

    def publish_late(self, late: list[WorkerInterval]) -> None:
        """Answers that missed their drain's deadline: one report per interval they belong to,
        with that interval's bounds and ``late: true`` (never added to the current one)."""
        by_request: dict[int, list[WorkerInterval]] = {}
        for answer in late:
            by_request.setdefault(answer.request, []).append(answer)
        for request, answers in sorted(by_request.items()):
            start, end = self.drained.get(request, (0, 0))
            log.warning("%d capture worker answer(s) for interval %d came late", len(answers), request)
            self._apply_sessions(answers)
            self.publish(self.build_report(start, end, answers, [], late=True))

    @property
    def sessions(self) -> dict[str, Any]:
        """Per live connection, what the wire will not say again (restored ones included
        until every worker has answered)."""
        return self.worker_sessions.current()

    def _apply_sessions(self, answers: list[WorkerInterval]) -> None:
        for answer in answers:
            self.worker_sessions.apply(answer.index, answer.sessions, answer.sessions_gone, answer.sessions_full)

    # -- reports --------------------------------------------------------------------------

    def build_report(
        self, start_ns: int, end_ns: int, answers: list[WorkerInterval], missing: list[int], *, late: bool = False
    ) -> dict[str, Any]:
        total = IntervalSum(self.config.probe.maxslow)
        for answer in answers:
            total.add(answer)
        templates, slow, counters, capture = total.templates, total.slow, total.counters, total.capture
        capture["workers_missing"] = len(missing)
        capture["workers_restarted"] = self.pool.restarts
        if late:
            capture["late_answers"] = len(answers)
        gap = None if late else self.pending_gap
        if gap is not None:
            capture["capture_gap_ns"] = gap["end_ns"] - gap["start_ns"]
            capture["capture_gaps"] = 1
            self.pending_gap = None
        add_capture(self.capture_totals, {k: v for k, v in capture.items() if k not in CAPTURE_GAUGES})
        # Gauges are the current value (this interval's, summed over workers), never summed over time.
        self.capture_totals["connections_active"] = capture.get("connections_active", 0)
        seq = self.next_seq()
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
            "seq": seq,
            "incarnation": self.incarnation,
            "epoch": self.hub.max_epoch if self.hub.max_epoch > 0 else 0,
            "server": servers[0] if len(servers) == 1 else f"*:{self.config.probe.port}",
            "interval": {"start_ns": start_ns, "end_ns": end_ns},
            "totals": report_totals(counters, capture, ordered),
            "capture": capture,
            "templates": [t.to_json() for t in ordered],
            "logins": ordered_logins(total.logins.values()),
            "slow": samples,
            "slow_dropped": slow.dropped,
            "heartbeat": self._heartbeat(),
            **({"gap": gap} if gap is not None else {}),
            **({"late": True} if late else {}),
        }

    def _heartbeat(self) -> dict[str, Any]:
        if self.heartbeat is None:
            return {}
        state = self.heartbeat.state()
        return {state["server"]: state}

    # -- HTTP -----------------------------------------------------------------------------

    def status_body(self) -> dict[str, Any]:
        body = super().status_body()
        body.update(
            {
                "devices": self.config.devices,
                "port": self.config.probe.port,
                "capture": self.capture_totals,
                "dropped_kernel": self.capture_totals.get("dropped_kernel", 0),
                "dropped_interface": self.capture_totals.get("dropped_interface", 0),
                "workers": self.pool.status(),
                "checkpoint": self.checkpoint.status(),
                "workers_restarted": self.pool.restarts,
                "watcher": self.watcher.status() if self.watcher is not None else None,
                "heartbeat": self._heartbeat(),
            }
        )
        return body


def set_state_aside(state: Path) -> Path | None:
    """``--fresh-state``: rename the state directory to ``STATE.old-TIMESTAMP`` (kept for a
    post-mortem, never deleted); the node then starts with a new incarnation."""
    if not state.exists():
        return None
    aside = state.with_name(f"{state.name}.old-{time.strftime('%Y%m%dT%H%M%S')}")
    n = 1
    while aside.exists():
        aside = state.with_name(f"{state.name}.old-{time.strftime('%Y%m%dT%H%M%S')}-{n}")
        n += 1
    state.rename(aside)
    return aside


def run_node(config_path: str, *, fresh_state: bool = False) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"mysqlprobe: config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.format)
    state = state_dir(config, config_path)
    if fresh_state:
        try:
            moved = set_state_aside(state)
        except OSError as exc:
            print(f"mysqlprobe: cannot move the state directory {state} aside: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if moved is not None:
            log.warning("state directory %s moved to %s; starting with a new one", state, moved)
    node: BaseNode
    try:
        if config.slave:
            node = SlaveNode(config, state)
        else:
            from mysqlprobe.master import MasterNode

            node = MasterNode(config, state)
        asyncio.run(node.run())
    except StateError as exc:
        print(f"mysqlprobe: state error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"mysqlprobe: config error: {exc}", file=sys.stderr)
        return 2
    except WorkerError as exc:
        print(f"mysqlprobe: cannot capture: {exc}", file=sys.stderr)
        return 2
    except ServeError as exc:
        print(f"mysqlprobe: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mysqlprobe: {exc.filename or 'I/O'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
