"""Reports: the unit every node produces, ships and merges.

Owns the report's types and their JSON form (DESIGN.md "Report schema", validated against
``message/schema/report.schema.json`` in the tests), and the one merge rule all layers use:
counts, sums and bytes add, errors add per code, min/max take the extreme, latency sketches
add bucket by bucket, slow samples keep the worst N. Merging is commutative and
associative, so workers -> slave -> master give the same numbers as one process would.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from message.errors import SchemaError as SchemaError  # re-exported: callers import it from here
from message.logins import LoginStats, merge_logins
from message.sketch import LatencySketch

SCHEMA_VERSION = 1
QUANTILES = (0.5, 0.95, 0.99, 0.999)

#: Template key and text that collect statements beyond the per-interval template bound.
OVERFLOW_KEY = "0000000000000000"
OVERFLOW_TEMPLATE = "/* statements of templates over the limit */"


#: What a template entry is merged by: (server, db, user, template key).
TemplateIdent = tuple[str, str, str, str]


class TemplateStats:
    """Per (server, db, user, template key) statistics for one interval. ``user`` is the
    account of the connections that ran it ("" when not known: a connection already open
    when the capture started that no watcher has named)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "commands",
        "count",
        "db",
        "errors",
        "first_seen_ns",
        "incomplete",
        "key",
        "last_seen_ns",
        "latency_max",
        "latency_min",
        "latency_sum",
        "no_good_index_used",
        "no_index_used",
        "rows_affected",
        "rows_sent",
        "server",
        "sketch",
        "template",
        "ttfb_sum",
        "user",
        "warnings",
    )

    def __init__(self, server: str, db: str, key: str, template: str, user: str = "") -> None:
        self.server = server
        self.db = db
        self.user = user
        self.key = key
        self.template = template
        self.commands: dict[str, int] = {}  # count by protocol command: Query, Execute, ...
        self.count = 0
        self.errors: dict[str, int] = {}
        self.latency_sum = 0
        self.latency_min = 0
        self.latency_max = 0
        self.ttfb_sum = 0
        self.sketch = LatencySketch()
        self.rows_sent = 0
        self.rows_affected = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.no_index_used = 0
        self.no_good_index_used = 0
        self.warnings = 0
        self.incomplete = 0
        self.first_seen_ns = 0
        self.last_seen_ns = 0

    @property
    def ident(self) -> TemplateIdent:
        return (self.server, self.db, self.user, self.key)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def merge(self, other: TemplateStats) -> None:
        if other.count == 0:
            return
        if self.count == 0:
            self.latency_min = other.latency_min
            self.first_seen_ns = other.first_seen_ns
        else:
            self.latency_min = min(self.latency_min, other.latency_min)
            self.first_seen_ns = min(self.first_seen_ns, other.first_seen_ns)
        self.latency_max = max(self.latency_max, other.latency_max)
        self.last_seen_ns = max(self.last_seen_ns, other.last_seen_ns)
        self.count += other.count
        for name, n in other.commands.items():
            self.commands[name] = self.commands.get(name, 0) + n
        for code, n in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + n
        self.latency_sum += other.latency_sum
        self.ttfb_sum += other.ttfb_sum
        self.sketch.merge(other.sketch)
        self.rows_sent += other.rows_sent
        self.rows_affected += other.rows_affected
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.no_index_used += other.no_index_used
        self.no_good_index_used += other.no_good_index_used
        self.warnings += other.warnings
        self.incomplete += other.incomplete
        if not self.template and other.template:
            self.template = other.template

    def quantiles(self, qs: tuple[float, ...] = QUANTILES) -> list[float | None]:
        """The sketch's quantile estimates clamped into [min, max]: the sketch's 1% relative
        error must never put a median below the minimum seen."""
        low, high = self.latency_min, self.latency_max
        return [None if q is None else float(min(max(q, low), high)) for q in self.sketch.quantiles(qs)]

    def to_json(self, *, with_template: bool = True, quantiles: bool = True) -> dict[str, Any]:
        """The wire form; ``quantiles=False`` skips computing p50..p999 (the sketch carries
        them anyway), for checkpoints."""
        p50, p95, p99, p999 = self.quantiles() if quantiles else (None, None, None, None)
        out: dict[str, Any] = {
            "key": self.key,
            "server": self.server,
            "db": self.db,
            "user": self.user,
            "commands": dict(sorted(self.commands.items())),
            "count": self.count,
            "errors": dict(sorted(self.errors.items())),
            "latency_us": {
                "sum": self.latency_sum,
                "min": self.latency_min,
                "max": self.latency_max,
                "p50": p50,
                "p95": p95,
                "p99": p99,
                "p999": p999,
                "sketch": self.sketch.to_json(),
            },
            "ttfb_us_sum": self.ttfb_sum,
            "rows_sent": self.rows_sent,
            "rows_affected": self.rows_affected,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "no_index_used": self.no_index_used,
            "no_good_index_used": self.no_good_index_used,
            "warnings": self.warnings,
            "incomplete": self.incomplete,
            "first_seen_ns": self.first_seen_ns,
            "last_seen_ns": self.last_seen_ns,
        }
        if with_template:
            out["template"] = self.template
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TemplateStats:
        try:
            stats = cls(
                str(data["server"]),
                str(data.get("db", "")),
                str(data["key"]),
                str(data.get("template", "")),
                str(data.get("user", "")),
            )
            latency = data["latency_us"]
            stats.count = int(data["count"])
            stats.commands = {str(k): int(v) for k, v in dict(data.get("commands", {})).items()}
            stats.errors = {str(k): int(v) for k, v in dict(data.get("errors", {})).items()}
            stats.latency_sum = int(latency["sum"])
            stats.latency_min = int(latency["min"])
            stats.latency_max = int(latency["max"])
            stats.sketch = LatencySketch.from_json(latency["sketch"])
            stats.ttfb_sum = int(data.get("ttfb_us_sum", 0))
            for name in (
                "rows_sent",
                "rows_affected",
                "bytes_in",
                "bytes_out",
                "no_index_used",
                "no_good_index_used",
                "warnings",
                "incomplete",
                "first_seen_ns",
                "last_seen_ns",
            ):
                setattr(stats, name, int(data.get(name, 0)))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise SchemaError(f"bad template entry: {exc!r}") from None
        return stats


@dataclass(order=True)
class SlowQuery:
    """A sample of one statement slower than the threshold."""

    latency_us: int
    start_ns: int = field(compare=True)
    key: str = field(compare=False, default="")
    sql: str = field(compare=False, default="")
    params: list[Any] | None = field(compare=False, default=None)
    db: str = field(compare=False, default="")
    user: str = field(compare=False, default="")
    client: str = field(compare=False, default="")
    server: str = field(compare=False, default="")
    conn_id: int | None = field(compare=False, default=None)
    error: dict[str, Any] | None = field(compare=False, default=None)
    rows_sent: int = field(compare=False, default=0)
    rows_affected: int = field(compare=False, default=0)
    trace_id: str = field(compare=False, default="")

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "key": self.key,
            "sql": self.sql,
            "params": self.params,
            "db": self.db,
            "user": self.user,
            "client": self.client,
            "server": self.server,
            "conn_id": self.conn_id,
            "start_ns": self.start_ns,
            "latency_us": self.latency_us,
            "rows_sent": self.rows_sent,
            "rows_affected": self.rows_affected,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SlowQuery:
        try:
            return cls(
                latency_us=int(data["latency_us"]),
                start_ns=int(data["start_ns"]),
                key=str(data["key"]),
                sql=str(data.get("sql", "")),
                params=list(data["params"]) if data.get("params") is not None else None,
                db=str(data.get("db", "")),
                user=str(data.get("user", "")),
                client=str(data.get("client", "")),
                server=str(data.get("server", "")),
                conn_id=int(data["conn_id"]) if data.get("conn_id") is not None else None,
                error=dict(data["error"]) if data.get("error") else None,
                rows_sent=int(data.get("rows_sent", 0)),
                rows_affected=int(data.get("rows_affected", 0)),
                trace_id=str(data.get("trace_id", "")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise SchemaError(f"bad slow sample: {exc!r}") from None


class SlowSamples:
    """The worst ``limit`` slow statements of an interval (a min-heap by latency)."""

    __slots__ = ("_heap", "dropped", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._heap: list[SlowQuery] = []
        self.dropped = 0

    def offer(self, sample: SlowQuery) -> None:
        heap = self._heap
        if len(heap) < self.limit:
            heapq.heappush(heap, sample)
        elif self.limit and sample > heap[0]:
            heapq.heapreplace(heap, sample)
            self.dropped += 1
        else:
            self.dropped += 1

    def would_keep(self, latency_us: int) -> bool:
        return len(self._heap) < self.limit or (self.limit > 0 and latency_us > self._heap[0].latency_us)

    def merge(self, samples: Iterable[SlowQuery], dropped: int = 0) -> None:
        for sample in samples:
            self.offer(sample)
        self.dropped += dropped

    def worst_first(self) -> list[SlowQuery]:
        return sorted(self._heap, reverse=True)

    def __len__(self) -> int:
        return len(self._heap)


STATEMENT_COMMANDS = ("Query", "Execute", "Bulk_execute")


def report_totals(
    counters: Mapping[str, int], capture: Mapping[str, Any], templates: Iterable[TemplateStats]
) -> dict[str, Any]:
    """The ``totals`` block of a report. ``coverage`` is the share of the commands observed
    (completed, whose response was lost, or proven by a server response the probe could not
    read: encrypted, unparsable or not MySQL) that were fully analysed."""
    commands = int(counters.get("commands", 0))
    incomplete = int(counters.get("incomplete", 0))
    lost = int(capture.get("responses_lost", 0))
    unread = int(capture.get("unread_exchanges", 0))
    observed = commands + lost + unread
    return {
        "queries": sum(n for t in templates for name, n in t.commands.items() if name in STATEMENT_COMMANDS),
        "commands": commands,
        "errors": int(counters.get("errors", 0)),
        "packets": int(capture.get("packets", 0)),
        "bytes": int(capture.get("bytes", 0)),
        "gaps": int(capture.get("gaps", 0)),
        "resyncs": int(capture.get("resyncs", 0)),
        "encrypted_conns": int(capture.get("encrypted_conns", 0)),
        "unparsed_packets": int(capture.get("unparsed_segments", 0)),
        "responses_lost": lost,
        "unread_exchanges": unread,
        "non_mysql_conns": int(capture.get("non_mysql_conns", 0)),
        "incomplete": incomplete,
        "coverage": round((commands - incomplete) / observed, 6) if observed else 1.0,
    }


def merge_totals(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    """Add totals of another report; ``coverage`` is recomputed from the sums."""
    for name, value in other.items():
        if name != "coverage" and isinstance(value, int) and not isinstance(value, bool):
            into[name] = into.get(name, 0) + value
    commands = into.get("commands", 0)
    observed = commands + into.get("responses_lost", 0) + into.get("unread_exchanges", 0)
    into["coverage"] = round((commands - into.get("incomplete", 0)) / observed, 6) if observed else 1.0


def add_capture(into: dict[str, Any], other: Mapping[str, Any], *, sign: int = 1) -> None:
    """Add (or, with ``sign=-1``, subtract) capture counters, one level of nesting deep."""
    for name, value in other.items():
        if isinstance(value, dict):
            sub = into.setdefault(name, {})
            for key, n in value.items():
                sub[key] = sub.get(key, 0) + sign * n
        elif isinstance(value, int) and not isinstance(value, bool):
            into[name] = into.get(name, 0) + sign * value


class IntervalSum:
    """The sum of parts of one interval (workers of a slave, shards of a replay): each part
    has ``templates``, ``slow``, ``slow_dropped``, ``counters`` and ``capture``."""

    def __init__(self, max_slow: int) -> None:
        self.templates: dict[TemplateIdent, TemplateStats] = {}
        self.logins: dict[tuple[str, str, str], LoginStats] = {}
        self.slow = SlowSamples(max_slow)
        self.counters: dict[str, int] = {}
        self.capture: dict[str, Any] = {}

    def add(self, part: Any) -> None:
        merge_templates(self.templates, part.templates)
        merge_logins(self.logins, getattr(part, "logins", ()))
        self.slow.merge(part.slow, part.slow_dropped)
        add_counters(self.counters, part.counters)
        add_capture(self.capture, part.capture)


def by_load(stats: Iterable[TemplateStats]) -> list[TemplateStats]:
    """Heaviest first (total time), ties broken by identity: one order for any input order."""
    return sorted(stats, key=lambda t: (-t.latency_sum, t.key, t.server, t.db, t.user))


def fold_templates(
    templates: Mapping[TemplateIdent, TemplateStats], limit: int
) -> tuple[dict[TemplateIdent, TemplateStats], dict[str, int]]:
    """Keep the ``limit`` heaviest templates by total time; fold the others (and any
    overflow entries already there) into one overflow entry per (server, db), whatever
    their users. Whatever
    order the templates were gathered in, the result is the same, and no template that
    carries time is hidden behind lighter ones. Returns (templates, what was folded:
    ``templates``, ``statements``, ``latency_us_sum``)."""
    ranked = by_load(t for t in templates.values() if t.key != OVERFLOW_KEY)
    kept = {t.ident: t for t in ranked[:limit]}
    folded = {"templates": max(0, len(ranked) - limit), "statements": 0, "latency_us_sum": 0}
    rest = [t for t in templates.values() if t.key == OVERFLOW_KEY] + ranked[limit:]
    for item in sorted(rest, key=lambda t: (t.server, t.db, t.key, t.user)):
        ident = (item.server, item.db, "", OVERFLOW_KEY)
        entry = kept.get(ident)
        if entry is None:
            entry = kept[ident] = TemplateStats(item.server, item.db, OVERFLOW_KEY, OVERFLOW_TEMPLATE)
        entry.merge(item)
        folded["statements"] += item.count
        folded["latency_us_sum"] += item.latency_sum
    return kept, folded


def merge_templates(into: dict[TemplateIdent, TemplateStats], stats: Iterable[TemplateStats]) -> None:
    """Add ``stats`` into ``into``, keyed by (server, db, user, key)."""
    for item in stats:
        have = into.get(item.ident)
        if have is None:
            have = into[item.ident] = TemplateStats(item.server, item.db, item.key, item.template, item.user)
        have.merge(item)


def add_counters(into: dict[str, int], other: Mapping[str, Any]) -> None:
    for name, value in other.items():
        if isinstance(value, int) and not isinstance(value, bool):
            into[name] = into.get(name, 0) + value
