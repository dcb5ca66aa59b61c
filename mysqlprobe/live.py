"""Live capture: worker processes that each own a share of the connections.

Owns the worker processes of a slave and their lifecycle. Each worker opens one pcapy-ng
handle per device and joins it to a PACKET_FANOUT_HASH group shared by all workers of the
device, so the kernel hands both directions of a connection to the same worker and no
packet crosses a process boundary. Handles are non-blocking and read with ``select`` (the
bundled libpcap never times out a blocking read on an idle link), so an idle worker still
answers. At the end of each interval the parent asks every worker to drain; the answers
(its statistics for the interval, capture counter deltas, pcap drop counters) are merged
into the slave report by the caller. A worker that dies is restarted and counted.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from message.report import SlowQuery, TemplateStats, add_capture
from probe.capture import CaptureError, LiveCapture
from probe.engine import Engine, EngineConfig

#: Batches read from one handle before the control pipe is looked at again.
_BATCHES_PER_TURN = 32
_BATCH = 256


@dataclass
class WorkerSettings:
    devices: list[str]
    port: int
    snaplen: int
    buffer_bytes: int
    immediate: bool
    engine: EngineConfig
    parent_pid: int = field(default_factory=os.getpid)

    def fanout_group(self, device_index: int) -> int:
        # One group per device, the same for every worker of this slave (and across worker
        # restarts), and unlikely to collide with another slave's on the same host.
        return (self.parent_pid * 8 + device_index) & 0xFFFF


@dataclass
class WorkerInterval:
    index: int
    pid: int
    templates: list[TemplateStats]
    slow: list[SlowQuery]
    slow_dropped: int
    counters: dict[str, int]
    capture: dict[str, Any]
    sessions: dict[str, tuple[str, str, int | None, dict[int, str]]] = field(default_factory=dict)


def worker_main(index: int, settings: WorkerSettings, control: Connection) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    try:
        captures = [
            LiveCapture(
                device,
                {settings.port},
                snaplen=settings.snaplen,
                buffer_bytes=settings.buffer_bytes,
                immediate=settings.immediate,
                fanout_group=settings.fanout_group(i),
            )
            for i, device in enumerate(settings.devices)
        ]
    except CaptureError as exc:
        control.send(("fatal", str(exc)))
        return
    engine = Engine(settings.engine, captures[0].linktype)
    control.send(("ready", os.getpid()))
    previous: dict[str, Any] = {}
    fds: list[Any] = [c.fileno() for c in captures] + [control]
    batches = 0
    while True:
        try:
            select.select(fds, [], [], 0.5)
        except InterruptedError:
            continue
        for capture in captures:
            for _ in range(_BATCHES_PER_TURN):
                buffer, meta = capture.read_batch(_BATCH)
                if not meta:
                    break
                batches += 1
                engine.batch(buffer, meta, capture.linktype)
        if os.getppid() != settings.parent_pid:
            return  # orphaned: the slave is gone
        while control.poll():
            try:
                message = control.recv()
            except EOFError:
                return
            kind = message[0]
            if kind == "drain":
                engine.tick(time.time_ns())
                previous = _drain(index, engine, captures, previous, control, batches)
            elif kind == "sessions":
                engine.learn_sessions(message[1])
            elif kind == "restore":
                engine.restore_sessions(message[1])
            elif kind == "slow_threshold_us":
                engine.aggregator.slow_threshold_us = message[1]
            elif kind == "stop":
                for capture in captures:
                    capture.close()
                return


def _drain(
    index: int,
    engine: Engine,
    captures: list[LiveCapture],
    previous: dict[str, Any],
    control: Connection,
    batches: int,
) -> dict[str, Any]:
    interval = engine.drain()
    cumulative = engine.capture_counters()
    cumulative["capture_batches"] = batches
    received = dropped = if_dropped = 0
    for capture in captures:
        r, d, i = capture.stats()
        received += r
        dropped += d
        if_dropped += i
    cumulative["pcap_received"] = received
    cumulative["dropped_kernel"] = dropped
    cumulative["dropped_interface"] = if_dropped
    delta: dict[str, Any] = {}
    add_capture(delta, cumulative)
    add_capture(delta, previous, sign=-1)
    delta["connections_active"] = cumulative["connections_active"]
    control.send(
        (
            "interval",
            WorkerInterval(
                index=index,
                pid=os.getpid(),
                templates=interval.templates,
                slow=interval.slow,
                slow_dropped=interval.slow_dropped,
                counters=interval.counters,
                capture=delta,
                sessions=engine.session_snapshot(),
            ),
        )
    )
    return cumulative


class WorkerError(RuntimeError):
    """Workers could not start (no such device, no permission to capture, ...)."""


@dataclass
class _Worker:
    index: int
    process: Any
    control: Connection
    started: float
    last_report: float | None = None
    restarts: int = 0


class WorkerPool:
    """The slave's capture workers: start, drain each interval, restart when they die."""

    def __init__(self, settings: WorkerSettings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._ctx = multiprocessing.get_context("spawn")  # the parent has threads: no fork
        self.workers: list[_Worker | None] = [None] * count
        self.restarts = 0
        self.missed_drains = 0

    def start(self, timeout: float = 30.0) -> None:
        for index in range(self.count):
            self.workers[index] = self._spawn(index, timeout)

    def _spawn(self, index: int, timeout: float) -> _Worker:
        parent_end, child_end = self._ctx.Pipe()
        process = self._ctx.Process(
            target=worker_main, args=(index, self.settings, child_end), name=f"capture-{index}", daemon=True
        )
        process.start()
        child_end.close()
        if not parent_end.poll(timeout):
            process.kill()
            raise WorkerError(f"capture worker {index} did not start within {timeout:.0f} s")
        try:
            kind, detail = parent_end.recv()
        except EOFError:
            process.join(1)
            raise WorkerError(f"capture worker {index} exited at start (code {process.exitcode})") from None
        if kind == "fatal":
            process.join(5)
            raise WorkerError(detail)
        return _Worker(index, process, parent_end, time.time())

    def check(self) -> int:
        """Restart dead workers; returns how many were restarted."""
        restarted = 0
        for index, worker in enumerate(self.workers):
            if worker is None or not worker.process.is_alive():
                previous_restarts = worker.restarts if worker is not None else 0
                if worker is not None:
                    worker.control.close()
                try:
                    fresh = self._spawn(index, 30.0)
                except WorkerError:
                    self.workers[index] = None
                    continue
                fresh.restarts = previous_restarts + (1 if worker is not None else 0)
                self.workers[index] = fresh
                self.restarts += 1
                restarted += 1
        return restarted

    def broadcast(self, message: tuple[Any, ...]) -> None:
        for worker in self.workers:
            if worker is not None and worker.process.is_alive():
                with contextlib.suppress(BrokenPipeError, OSError):  # it died: check() restarts it
                    worker.control.send(message)

    def drain(self, timeout: float) -> tuple[list[WorkerInterval], list[int]]:
        """Ask every worker for its interval; returns (answers, indexes that did not answer)."""
        asked: dict[int, _Worker] = {}
        for worker in self.workers:
            if worker is None or not worker.process.is_alive():
                continue
            try:
                worker.control.send(("drain",))
                asked[worker.index] = worker
            except (BrokenPipeError, OSError):
                continue
        answers: list[WorkerInterval] = []
        deadline = time.monotonic() + timeout
        while asked and time.monotonic() < deadline:
            for index, worker in list(asked.items()):
                try:
                    if not worker.control.poll(0.01):
                        if not worker.process.is_alive():
                            del asked[index]
                        continue
                    kind, payload = worker.control.recv()
                except (EOFError, OSError):
                    del asked[index]
                    continue
                if kind == "interval":
                    answers.append(payload)
                    worker.last_report = time.time()
                    del asked[index]
        missing = sorted(set(range(self.count)) - {a.index for a in answers})
        self.missed_drains += len(missing)
        return answers, missing

    def status(self) -> list[dict[str, Any]]:
        now = time.time()
        out: list[dict[str, Any]] = []
        for index, worker in enumerate(self.workers):
            if worker is None:
                out.append({"index": index, "alive": False, "pid": None, "restarts": 0})
                continue
            out.append(
                {
                    "index": index,
                    "pid": worker.process.pid,
                    "alive": worker.process.is_alive(),
                    "restarts": worker.restarts,
                    "uptime_s": round(now - worker.started, 1),
                    "last_report_age_s": None if worker.last_report is None else round(now - worker.last_report, 1),
                }
            )
        return out

    def stop(self) -> None:
        self.broadcast(("stop",))
        for worker in self.workers:
            if worker is None:
                continue
            worker.process.join(3)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(3)
            worker.control.close()
