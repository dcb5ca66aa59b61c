"""The metrics collection: per-interval samples, ordered, bounded by age and count.

Owns samples ``(ts_ns, node, metric, value, error)`` recorded every interval (report
intake latency, reports per slave, capture and drop counters, queue depths, heartbeat
lag), kept in time order. ``since(t)`` finds the first sample at or after t by binary
search. Samples older than the retention, or beyond ``max_samples``, are dropped (counted)
when time moves on: expiry is driven by the ``now_ns`` the caller passes, never by a clock
read here. ``aggregate`` summarises a window per metric (and per node if asked): count,
errors, first/last seen, min, mean, p50, p95, p99, max.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import Any, NamedTuple

DEFAULT_RETENTION_S = 3600
DEFAULT_MAX_SAMPLES = 100_000


class Sample(NamedTuple):
    ts_ns: int
    node: str
    metric: str
    value: float | None
    error: bool

    def to_json(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "node": self.node, "metric": self.metric, "value": self.value, "error": self.error}


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of a sorted, non-empty list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class MetricsStore:
    def __init__(
        self, *, retention_ns: int = DEFAULT_RETENTION_S * 10**9, max_samples: int = DEFAULT_MAX_SAMPLES
    ) -> None:
        self.retention_ns = retention_ns
        self.max_samples = max_samples
        self._ts: list[int] = []
        self._samples: list[Sample] = []
        self._start = 0  # samples before this index are expired (compacted lazily)
        self.recorded = 0
        self.expired = 0
        self.dropped_for_count = 0

    def __len__(self) -> int:
        return len(self._samples) - self._start

    def record(self, samples: Iterable[Sample], now_ns: int) -> None:
        for sample in samples:
            if self._ts and sample.ts_ns < self._ts[-1]:
                # Out of order (a late report): keep the list sorted.
                index = bisect.bisect_right(self._ts, sample.ts_ns, lo=self._start)
                self._ts.insert(index, sample.ts_ns)
                self._samples.insert(index, sample)
            else:
                self._ts.append(sample.ts_ns)
                self._samples.append(sample)
            self.recorded += 1
        self.expire(now_ns)

    def expire(self, now_ns: int) -> None:
        cutoff = bisect.bisect_left(self._ts, now_ns - self.retention_ns, lo=self._start)
        self.expired += cutoff - self._start
        self._start = cutoff
        overflow = len(self) - self.max_samples
        if overflow > 0:
            self._start += overflow
            self.dropped_for_count += overflow
        if self._start > 4096 and self._start * 2 > len(self._samples):
            del self._ts[: self._start]
            del self._samples[: self._start]
            self._start = 0

    def since(self, ts_ns: int, now_ns: int) -> list[Sample]:
        self.expire(now_ns)
        index = bisect.bisect_left(self._ts, ts_ns, lo=self._start)
        return self._samples[index:]

    def aggregate(self, ts_ns: int, now_ns: int, *, by_node: bool = False) -> list[dict[str, Any]]:
        groups: dict[tuple[str, str], list[Sample]] = {}
        for sample in self.since(ts_ns, now_ns):
            groups.setdefault((sample.metric, sample.node if by_node else ""), []).append(sample)
        out = []
        for (metric, node), samples in sorted(groups.items()):
            values = sorted(s.value for s in samples if s.value is not None)
            entry: dict[str, Any] = {
                "metric": metric,
                "count": len(samples),
                "errors": sum(1 for s in samples if s.error),
                "first_seen_ns": samples[0].ts_ns,
                "last_seen_ns": samples[-1].ts_ns,
                "min": values[0] if values else None,
                "mean": sum(values) / len(values) if values else None,
                "p50": _quantile(values, 0.5) if values else None,
                "p95": _quantile(values, 0.95) if values else None,
                "p99": _quantile(values, 0.99) if values else None,
                "max": values[-1] if values else None,
            }
            if by_node:
                entry["node"] = node
            out.append(entry)
        return out

    def status(self) -> dict[str, Any]:
        return {
            "samples": len(self),
            "recorded": self.recorded,
            "expired": self.expired,
            "dropped_for_count": self.dropped_for_count,
            "retention_s": self.retention_ns / 1e9,
            "max_samples": self.max_samples,
        }
