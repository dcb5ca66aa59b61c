"""The trace store: slow-query events kept by trace id, bounded by TTL, count and bytes.

Owns the events of the ``slow`` samples of reports, keyed by their trace id
(``node.conn_id.seq``). Every event gets an insertion number; a scan cursor is such a
number, so a cursor stays valid while older events expire or are deleted (a scan resumes
after the last event it returned, whatever happened before it). Bounds: events older than
``ttl_ns`` expire, and the oldest go first when there are more than ``max_events`` or they
take more than ``max_bytes`` (their JSON size); every eviction is counted by cause.

Sans-I/O: every call that depends on time takes ``now_ns``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sortedcontainers import SortedDict

DEFAULT_TTL_S = 24 * 3600
DEFAULT_MAX_EVENTS = 100_000
DEFAULT_MAX_BYTES = 64 << 20
MAX_SCAN_LIMIT = 1000


@dataclass
class _Stored:
    number: int
    stored_ns: int
    size: int
    event: dict[str, Any]


class TraceStore:
    def __init__(
        self,
        *,
        ttl_ns: int = DEFAULT_TTL_S * 10**9,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.ttl_ns = ttl_ns
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._events: OrderedDict[str, _Stored] = OrderedDict()  # trace id -> event, oldest first
        self._numbers: SortedDict = SortedDict()  # insertion number -> trace id, for cursors
        self._next = 0
        self.bytes = 0
        self.stored = 0
        self.replaced = 0
        self.evicted = {"ttl": 0, "count": 0, "bytes": 0, "deleted": 0}

    def __len__(self) -> int:
        return len(self._events)

    def add(self, events: Iterable[Mapping[str, Any]], now_ns: int) -> int:
        """Store events that carry a ``trace_id``; returns how many were stored."""
        added = 0
        for event in events:
            trace_id = str(event.get("trace_id") or "")
            if not trace_id:
                continue
            copy = dict(event)
            size = len(json.dumps(copy, separators=(",", ":"), default=str))
            if size > self.max_bytes:
                self.evicted["bytes"] += 1
                continue
            if trace_id in self._events:
                self._remove(trace_id)
                self.replaced += 1
            self._next += 1
            self._events[trace_id] = _Stored(self._next, now_ns, size, copy)
            self._numbers[self._next] = trace_id
            self.bytes += size
            self.stored += 1
            added += 1
        self.expire(now_ns)
        while len(self._events) > self.max_events:
            self._evict_oldest("count")
        while self.bytes > self.max_bytes and self._events:
            self._evict_oldest("bytes")
        return added

    def _remove(self, trace_id: str) -> _Stored:
        stored = self._events.pop(trace_id)
        self._numbers.pop(stored.number, None)
        self.bytes -= stored.size
        return stored

    def _evict_oldest(self, cause: str) -> None:
        trace_id = next(iter(self._events))
        self._remove(trace_id)
        self.evicted[cause] += 1

    def expire(self, now_ns: int) -> int:
        gone = 0
        while self._events:
            oldest = next(iter(self._events.values()))
            if now_ns - oldest.stored_ns <= self.ttl_ns:
                break
            self._evict_oldest("ttl")
            gone += 1
        return gone

    def get(self, trace_id: str, now_ns: int) -> dict[str, Any] | None:
        self.expire(now_ns)
        stored = self._events.get(trace_id)
        return None if stored is None else stored.event

    def delete(self, trace_id: str, now_ns: int) -> bool:
        self.expire(now_ns)
        if trace_id not in self._events:
            return False
        self._remove(trace_id)
        self.evicted["deleted"] += 1
        return True

    def scan(
        self,
        now_ns: int,
        *,
        cursor: int = 0,
        limit: int = 100,
        since_ns: int | None = None,
        key: str | None = None,
        min_latency_us: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Events after ``cursor`` (oldest first) matching the filters: (page, next cursor).
        The next cursor is the number of the last event looked at, so a scan never
        returns an event twice and never skips one that is still stored."""
        self.expire(now_ns)
        limit = max(1, min(limit, MAX_SCAN_LIMIT))
        page: list[dict[str, Any]] = []
        last = cursor
        for number in self._numbers.irange(minimum=cursor, inclusive=(False, True)):
            trace_id = self._numbers[number]
            last = number
            event = self._events[trace_id].event
            if since_ns is not None and int(event.get("start_ns", 0)) < since_ns:
                continue
            if key is not None and event.get("key") != key:
                continue
            if min_latency_us is not None and int(event.get("latency_us", 0)) < min_latency_us:
                continue
            page.append(event)
            if len(page) >= limit:
                break
        return page, last

    def status(self) -> dict[str, Any]:
        return {
            "events": len(self._events),
            "bytes": self.bytes,
            "stored": self.stored,
            "replaced": self.replaced,
            "evicted": dict(self.evicted),
            "limits": {"ttl_s": self.ttl_ns / 1e9, "max_events": self.max_events, "max_bytes": self.max_bytes},
        }
