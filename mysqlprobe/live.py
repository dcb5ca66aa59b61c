"""Live capture: worker processes that each own a share of the connections.

Owns the worker processes of a slave and their lifecycle. Each worker opens one pcapy-ng
handle per device and joins it to a PACKET_FANOUT_HASH group shared by all workers of the
device, so the kernel hands both directions of a connection to the same worker and no
packet crosses a process boundary. Handles are non-blocking and read with ``select`` (the
bundled libpcap never times out a blocking read on an idle link), so an idle worker still
answers. At the end of each interval the parent asks every worker to drain; the answers
(its statistics for the interval, capture counter deltas, pcap drop counters) are merged
into the slave report by the caller. A worker that dies is restarted and counted.

Each drain request carries an id and the interval's end (``end_ns``). A worker cuts its
packets there by packet timestamp: what it reads after the request arrives but was captured
before ``end_ns`` still belongs to that interval, what was captured later waits for the next
drain. So a worker that was late (stalled, or busy with a backlog) still answers every
request with exactly its interval's statements, and the parent files an answer that comes
after its deadline under its own request id (``late``), never under the next interval.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import struct
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from message.logins import LoginStats
from message.report import SlowQuery, TemplateStats, add_capture
from probe.capture import CaptureError, LiveCapture
from probe.engine import Engine, EngineConfig

#: Batches read from one handle before the control pipe is looked at again.
_BATCHES_PER_TURN = 32
_BATCH = 256
#: Added to the handle's buffer timeout before an empty read counts as "nothing older left".
_SETTLE_MARGIN_NS = 30_000_000


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
    request: int
    index: int
    pid: int
    templates: list[TemplateStats]
    slow: list[SlowQuery]
    slow_dropped: int
    counters: dict[str, int]
    capture: dict[str, Any]
    # What changed in the worker's sessions since its previous answer (all of them when
    # ``sessions_full``: its first answer), and the endpoints whose session ended.
    sessions: dict[str, tuple[str, str, int | None, dict[int, str]]] = field(default_factory=dict)
    logins: list[LoginStats] = field(default_factory=list)
    sessions_gone: list[str] = field(default_factory=list)
    sessions_full: bool = True


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
    # The kernel hands a block of packets over when it is full or after the handle's timeout.
    settle_ns = max(c.timeout_ms for c in captures) * 1_000_000 + _SETTLE_MARGIN_NS
    cutter = _DrainCutter(index, engine, captures, control, settle_ns)
    fds: list[Any] = [c.fileno() for c in captures] + [control]
    while True:
        try:
            readable = select.select(fds, [], [], 0.02 if cutter.pending else 0.5)[0]
        except InterruptedError:
            continue
        if os.getppid() != settings.parent_pid:
            return  # orphaned: the slave is gone
        # Requests first: a drain must be known before the packets after its end are fed.
        # Connection.poll() builds a selector per call (a tenth of a busy worker's CPU when
        # asked on every wake-up): the pipe is asked only when select saw it readable.
        while control in readable and control.poll():
            try:
                message = control.recv()
            except EOFError:
                return
            kind = message[0]
            if kind == "drain":
                cutter.pending.append((message[1], message[2]))
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
        cutter.turn()


#: A batch as read from a handle: (buffer, 16-byte meta records).
Batch = tuple[bytes, bytes]
_META = struct.Struct("IIII")


def _ts(meta: bytes, position: int) -> int:
    sec, usec = _META.unpack_from(meta, position * _META.size)[:2]
    return int(sec) * 1_000_000_000 + int(usec) * 1000


def _repack(buffer: bytes, meta: bytes, first: int, last: int) -> Batch:
    """Packets ``first`` to ``last - 1`` of a batch as a batch of their own."""
    parts: list[bytes] = []
    records: list[bytes] = []
    offset = 0
    for sec, usec, start, caplen in _META.iter_unpack(meta[first * _META.size : last * _META.size]):
        parts.append(buffer[start : start + caplen])
        records.append(_META.pack(sec, usec, offset, caplen))
        offset += caplen
    return b"".join(parts), b"".join(records)


def split_batch(batch: Batch, end_ns: int) -> tuple[Batch | None, Batch | None]:
    """(packets captured before ``end_ns``, the rest); either may be None."""
    buffer, meta = batch
    count = len(meta) // _META.size
    if _ts(meta, count - 1) < end_ns:
        return batch, None
    if _ts(meta, 0) >= end_ns:
        return None, batch
    cut = next(i for i in range(count) if _ts(meta, i) >= end_ns)
    return _repack(buffer, meta, 0, cut), _repack(buffer, meta, cut, count)


class _DrainCutter:
    """A worker's reading turn: feeds packets, answering each pending drain at its cut."""

    def __init__(
        self, index: int, engine: Engine, captures: list[LiveCapture], control: Connection, settle_ns: int
    ) -> None:
        self.index = index
        self.settle_ns = settle_ns
        self.engine = engine
        self.captures = captures
        self.control = control
        self.pending: list[tuple[int, int]] = []  # (request id, end_ns), oldest first
        self.held: list[Batch | None] = [None] * len(captures)  # packets after the oldest cut
        self.previous: dict[str, Any] = {}
        self.sessions_sent: dict[str, Any] | None = None  # None: none sent yet
        self.batches = 0

    def _feed(self, position: int, batch: Batch) -> bool:
        """Feed what precedes the oldest pending cut; True when this capture reached it."""
        if not self.pending:
            self.engine.batch(batch[0], batch[1], self.captures[position].linktype)
            return False
        before, after = split_batch(batch, self.pending[0][1])
        if before is not None:
            self.engine.batch(before[0], before[1], self.captures[position].linktype)
        self.held[position] = after
        return after is not None

    def turn(self) -> None:
        while True:
            reached = [False] * len(self.captures)
            for position, capture in enumerate(self.captures):
                held, self.held[position] = self.held[position], None
                if held is not None and self._feed(position, held):
                    reached[position] = True
                    continue
                for _ in range(_BATCHES_PER_TURN):
                    buffer, meta = capture.read_batch(_BATCH)
                    if not meta:
                        # Caught up, once the kernel has handed over every block that can hold
                        # a packet from before the cut (it holds a block up to its timeout).
                        reached[position] = not self.pending or time.time_ns() >= self.pending[0][1] + self.settle_ns
                        break
                    self.batches += 1
                    if self._feed(position, (buffer, meta)):
                        reached[position] = True
                        break
            if not self.pending or not all(reached):
                return
            request, _end_ns = self.pending.pop(0)
            self.engine.tick(time.time_ns())
            self.previous, self.sessions_sent = _drain(
                request,
                self.index,
                self.engine,
                self.captures,
                self.previous,
                self.control,
                self.batches,
                self.sessions_sent,
            )
            if not self.pending and not any(self.held):
                return


def _drain(
    request: int,
    index: int,
    engine: Engine,
    captures: list[LiveCapture],
    previous: dict[str, Any],
    control: Connection,
    batches: int,
    sessions_sent: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Answer a drain; returns (cumulative counters, sessions as now sent). Sessions go as
    a delta against the previous answer: a few changes, not every connection's prepared
    statements again."""
    interval = engine.drain()
    snapshot = engine.session_snapshot()
    if sessions_sent is None:
        changed, gone = snapshot, []
    else:
        changed = {k: v for k, v in snapshot.items() if sessions_sent.get(k) != v}
        gone = [k for k in sessions_sent if k not in snapshot]
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
                request=request,
                index=index,
                pid=os.getpid(),
                templates=interval.templates,
                slow=interval.slow,
                slow_dropped=interval.slow_dropped,
                counters=interval.counters,
                capture=delta,
                sessions=changed,
                sessions_gone=gone,
                sessions_full=sessions_sent is None,
                logins=interval.logins,
            ),
        )
    )
    return cumulative, snapshot


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
        self.late_answers = 0
        self.request = 0  # id of the latest drain request

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

    def drain(self, timeout: float, end_ns: int) -> tuple[list[WorkerInterval], list[int], list[WorkerInterval]]:
        """Ask every worker for its interval up to ``end_ns``.

        Returns (answers to this request, indexes that did not answer in time, answers to
        earlier requests that came late: each still carries its own ``request`` id)."""
        self.request += 1
        request = self.request
        asked: dict[int, _Worker] = {}
        for worker in self.workers:
            if worker is None or not worker.process.is_alive():
                continue
            try:
                worker.control.send(("drain", request, end_ns))
                asked[worker.index] = worker
            except (BrokenPipeError, OSError):
                continue
        answers: list[WorkerInterval] = []
        late: list[WorkerInterval] = []
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
                if kind != "interval":
                    continue
                worker.last_report = time.time()
                if payload.request == request:
                    answers.append(payload)
                    del asked[index]
                else:
                    late.append(payload)
        missing = sorted(set(range(self.count)) - {a.index for a in answers})
        self.missed_drains += len(missing)
        self.late_answers += len(late)
        return answers, missing, late

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
