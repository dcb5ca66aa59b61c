"""``mysqlprobe replay``: the probe engine over a capture file, on every core.

Owns running the engine offline and turning its statistics into the replay document.
The file is read by ``workers`` processes at once, each analysing the connections of its
shard (client port + server port modulo the number of workers, so both directions of a
connection land in the same worker); their statistics merge exactly (counts add, sketches
add bucket by bucket), so the document is the same for any number of workers. A replay is
one interval: the template bound is applied once, after the merge, keeping the heaviest
templates by total time and folding the rest into one overflow entry that the document
counts (``folded``); workers keep a much larger bound of their own.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import socket
import struct
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from message.logins import LoginStats, ordered_logins
from message.report import (
    SCHEMA_VERSION,
    IntervalSum,
    SlowQuery,
    TemplateIdent,
    TemplateStats,
    by_load,
    fold_templates,
    report_totals,
)
from probe import native
from probe.aggregate import DEFAULT_MAX_TEMPLATES
from probe.capture import CaptureError, FileCapture
from probe.decode import DecodeCounters, UnsupportedLinkType, make_decoder
from probe.engine import FAST_COUNTERS, Engine, EngineConfig

_RECORD_OVERHEAD = 16  # pcap record header, for progress by bytes
#: Templates one replay worker keeps before its own overflow entry takes further ones (its
#: memory bound); the document's bound (``ReplayOptions.max_templates``) comes after the merge.
WORKER_MAX_TEMPLATES = 200_000
#: Capture counters that describe a worker's own work, not the file: in ``analysis``.
_PER_WORKER_COUNTERS = ("normalizer_cache_resets", *FAST_COUNTERS)


@dataclass
class ReplayOptions:
    path: str
    engine: EngineConfig = field(default_factory=EngineConfig)
    workers: int = 1
    max_templates: int = DEFAULT_MAX_TEMPLATES
    """Templates in the document: the heaviest by total time; the others are folded."""


@dataclass
class ShardResult:
    templates: list[TemplateStats]
    logins: list[LoginStats]
    slow: list[SlowQuery]
    slow_dropped: int
    counters: dict[str, int]
    capture: dict[str, Any]
    first_ns: int
    last_ns: int
    error: str | None
    peak_rss_kb: int = 0


@dataclass
class ReplayResult:
    path: str
    templates: dict[TemplateIdent, TemplateStats]
    slow: list[SlowQuery]
    slow_dropped: int
    counters: dict[str, int]
    capture: dict[str, Any]
    first_ns: int
    last_ns: int
    error: str | None
    elapsed_s: float
    workers: int
    peak_rss_kb: list[int]
    logins: list[LoginStats] = field(default_factory=list)
    folded: dict[str, int] = field(default_factory=dict)
    worker_counters: dict[str, int] = field(default_factory=dict)


def estimated_size(path: str) -> int:
    """Bytes libpcap will read: the file size, or a gzip file's recorded plain size."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return size
        fh.seek(-4, os.SEEK_END)
        plain = int(struct.unpack("<I", fh.read(4))[0])
    return plain if plain >= size else size * 4  # the trailer holds the size modulo 2**32


def run_shard(
    path: str,
    config: EngineConfig,
    progress: Callable[[int], None] | None = None,
) -> ShardResult:
    capture = FileCapture(path)
    try:
        engine = Engine(config, capture.linktype)
        done = 0
        for buffer, meta in capture.batches():
            engine.batch(buffer, meta)
            if progress is not None:
                done += len(buffer) + len(meta)
                progress(done)
        engine.finish(engine.last_ns)
        interval = engine.drain()
        return ShardResult(
            templates=interval.templates,
            logins=interval.logins,
            slow=interval.slow,
            slow_dropped=interval.slow_dropped,
            counters=interval.counters,
            capture=engine.capture_counters(),
            first_ns=engine.first_ns,
            last_ns=engine.last_ns,
            error=capture.error,
            peak_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        )
    finally:
        capture.close()


def _shard_process(path: str, config: EngineConfig, done: Any, pipe: Connection) -> None:
    def progress(n: int) -> None:
        done.value = n

    try:
        pipe.send(("ok", run_shard(path, config, progress)))
    except BaseException as exc:  # reported by the parent, which owns the exit code
        pipe.send(("error", f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        pipe.close()


def replay(options: ReplayOptions, on_progress: Callable[[float], None] | None = None) -> ReplayResult:
    """Analyse the file; raises ``CaptureError`` if it cannot be opened at all."""
    capture = FileCapture(options.path)  # fail early, in one process, on a bad file
    capture.close()
    try:
        make_decoder(capture.linktype, DecodeCounters())
    except UnsupportedLinkType:
        raise CaptureError(
            f"{options.path}: link type {capture.linktype} is not supported (mysqlprobe reads Ethernet,"
            " Linux cooked SLL/SLL2, BSD loopback and raw IP captures)"
        ) from None
    started = time.perf_counter()
    workers = max(1, options.workers)
    total = max(1, estimated_size(options.path))
    configs = [_shard_config(options.engine, i, workers) for i in range(workers)]
    if workers == 1:
        callback = (lambda n: on_progress(n / total)) if on_progress is not None else None
        results = [run_shard(options.path, configs[0], callback)]
    else:
        results = _run_parallel(options.path, configs, total, on_progress)
    return _merge(options, results, time.perf_counter() - started, workers)


def _shard_config(base: EngineConfig, index: int, count: int) -> EngineConfig:
    bound = max(base.max_templates, WORKER_MAX_TEMPLATES)
    return EngineConfig(**{**base.__dict__, "shard": (index, count), "max_templates": bound})


def _run_parallel(
    path: str,
    configs: list[EngineConfig],
    total: int,
    on_progress: Callable[[float], None] | None,
) -> list[ShardResult]:
    ctx = multiprocessing.get_context("fork")
    procs = []
    for config in configs:
        done = ctx.Value("q", 0, lock=False)
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_shard_process, args=(path, config, done, sender), daemon=True)
        proc.start()
        sender.close()
        procs.append((proc, done, receiver))
    results: list[ShardResult] = []
    pending = {id(r): (p, d, r) for p, d, r in procs}
    outcome: dict[int, tuple[str, Any]] = {}
    while pending:
        if on_progress is not None:
            on_progress(sum(d.value for _, d, _ in procs) / (total * len(procs)))
        ready = multiprocessing.connection.wait([r for _, _, r in pending.values()], timeout=0.2)
        for handle in ready:
            proc, _, receiver = pending.pop(id(handle))
            try:
                outcome[id(receiver)] = receiver.recv()
            except EOFError:
                outcome[id(receiver)] = ("error", f"worker {proc.pid} died (exit code {proc.exitcode})")
            proc.join()
    for _, _, receiver in procs:
        status, value = outcome[id(receiver)]
        if status != "ok":
            raise RuntimeError(f"replay worker failed: {value}")
        results.append(value)
    return results


def _merge(options: ReplayOptions, results: list[ShardResult], elapsed: float, workers: int) -> ReplayResult:
    total = IntervalSum(options.engine.max_slow)
    for result in results:
        total.add(result)
    templates, slow, counters, capture = total.templates, total.slow, total.counters, total.capture
    # Every worker reads and decodes every frame that is not a TCP segment of a watched
    # connection: those counters are per file, not per shard.
    for name in ("packets", "bytes", "non_ip", "non_tcp", "ip_fragments", "truncated"):
        if name in capture:
            capture[name] = results[0].capture.get(name, 0)
    worker_counters = {name: capture.pop(name) for name in _PER_WORKER_COUNTERS if name in capture}
    counters.pop("templates_overflowed", None)  # per worker; ``folded`` says it for the file
    templates, folded = fold_templates(templates, options.max_templates)
    return ReplayResult(
        path=options.path,
        templates=templates,
        slow=slow.worst_first(),
        slow_dropped=slow.dropped,
        counters=counters,
        capture=capture,
        first_ns=min((r.first_ns for r in results if r.first_ns), default=0),
        last_ns=max((r.last_ns for r in results), default=0),
        error=next((r.error for r in results if r.error), None),
        elapsed_s=elapsed,
        workers=workers,
        peak_rss_kb=[r.peak_rss_kb for r in results]
        + ([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss] if workers > 1 else []),
        logins=list(total.logins.values()),
        folded=folded,
        worker_counters=worker_counters,
    )


def document(result: ReplayResult) -> dict[str, Any]:
    """The replay report: DESIGN.md's report schema for the whole file, plus ``totals``."""
    templates = by_load(result.templates.values())
    return {
        "schema": SCHEMA_VERSION,
        "kind": "replay",
        "node": socket.gethostname(),
        "role": "replay",
        "source": {"file": result.path, "error": result.error},
        "interval": {"start_ns": result.first_ns, "end_ns": result.last_ns},
        "totals": report_totals(result.counters, result.capture, templates),
        "capture": result.capture,
        "analysis": {
            "elapsed_s": round(result.elapsed_s, 3),
            "workers": result.workers,
            "engine": native.ENGINE,
            "peak_rss_mb": round(sum(result.peak_rss_kb) / 1024, 1),
            **result.worker_counters,
        },
        "folded": result.folded,
        "templates": [t.to_json() for t in templates],
        "logins": ordered_logins(result.logins),
        "slow": [s.to_json() for s in result.slow],
        "slow_dropped": result.slow_dropped,
    }
