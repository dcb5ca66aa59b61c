"""Prometheus ``/metrics``: per-template counters and histograms, and the node's health.

Owns the Prometheus view of a node (any role). It is fed each report the node publishes
(``observe``, once per interval: work per template of the report, never per statement)
and renders on scrape from what it has accumulated plus the node's ``/status`` body; a
scrape never touches the capture path.

Per (server, db, template key), following mysqld_exporter's performance_schema digest
metrics: ``mysqlprobe_statements_total``, ``..._errors_total``, ``..._rows_sent_total``,
``..._rows_affected_total``, ``..._no_index_used_total``, ``..._seconds_total`` and the
histogram ``mysqlprobe_statement_latency_seconds`` whose buckets (``LATENCY_BUCKETS_S``) are
the same on every node, so ``sum by (le)`` aggregates slaves in PromQL. Each sketch bucket
of a report is counted in the first histogram bucket at or above the sketch bucket's value
(the value its quantiles report), so the histogram is the sketch re-binned, ≤1% off at a
boundary. ``mysqlprobe_template_info`` carries the template text, cut.

Cardinality: at most ``topn`` templates have series of their own. Membership is sticky: a
template is admitted while there is room, or when its load (latency sum) in an interval
exceeds twice the weakest member's load per interval (an exponentially weighted average),
which is then evicted (its series
disappear; Prometheus marks them stale). Everything else adds to one series with
``key="other"`` (server and db empty). Every counter only grows, so ``rate()`` stays right.
"""

from __future__ import annotations

import bisect
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from message.report import OVERFLOW_KEY
from message.sketch import _MAPPING

#: Upper bounds (seconds) of the latency histogram, identical on every node.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_BOUNDS_US = [b * 1e6 for b in LATENCY_BUCKETS_S]
_LE = [repr(b) for b in LATENCY_BUCKETS_S] + ["+Inf"]
#: Weight of the past in a member's load per interval (exponentially weighted average).
DECAY = 0.8
#: Error codes with a series of their own at most; further codes add to ``code="other"``.
MAX_ERROR_CODES = 200
OTHER = "other"
_COUNTERS = ("count", "errors", "rows_sent", "rows_affected", "no_index_used")


def histogram_index(sketch_key: int, cache: dict[int, int] = {}) -> int:  # noqa: B006 - a deliberate memo
    """The histogram bucket (index into ``LATENCY_BUCKETS_S``, or its length for +Inf)
    that a latency sketch bucket falls in."""
    index = cache.get(sketch_key)
    if index is None:
        index = cache[sketch_key] = bisect.bisect_left(_BOUNDS_US, _MAPPING.value(sketch_key))
    return index


@dataclass
class SeriesTotals:
    """Cumulative counters of one template series (or of ``other``)."""

    count: int = 0
    errors: int = 0
    rows_sent: int = 0
    rows_affected: int = 0
    no_index_used: int = 0
    latency_us: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    score: float = 0.0  # load per interval, exponentially weighted: for membership

    def add(self, entry: Mapping[str, Any]) -> None:
        self.count += int(entry.get("count", 0))
        self.errors += sum(int(n) for n in dict(entry.get("errors", {})).values())
        self.rows_sent += int(entry.get("rows_sent", 0))
        self.rows_affected += int(entry.get("rows_affected", 0))
        self.no_index_used += int(entry.get("no_index_used", 0))
        latency = entry.get("latency_us", {})
        self.latency_us += int(latency.get("sum", 0))
        sketch = latency.get("sketch", {})
        buckets = self.buckets
        buckets[0] += int(sketch.get("zero", 0))
        for key, n in zip(sketch.get("keys", ()), sketch.get("counts", ()), strict=False):
            buckets[histogram_index(int(key))] += int(n)


Ident = tuple[str, str, str]  # (server, db, key): a template's users are summed


class TemplateSeries:
    """The bounded set of template series: top-N members by load, plus ``other``."""

    def __init__(self, topn: int, template_length: int) -> None:
        self.topn = topn
        self.template_length = template_length
        self.members: dict[Ident, SeriesTotals] = {}
        self.texts: dict[Ident, str] = {}
        self.other = SeriesTotals()
        self.admitted = 0
        self.evicted = 0
        self.error_codes: dict[tuple[str, str], int] = {}  # (server, code) -> errors

    def observe(self, templates: Iterable[Mapping[str, Any]], texts: Mapping[str, str]) -> None:
        """Add one report's template entries (``texts``: key -> text known from earlier reports)."""
        entries = [t for t in templates if t.get("key") != OVERFLOW_KEY]
        for member in self.members.values():
            member.score *= DECAY
        outsiders = [t for t in entries if _ident(t) not in self.members]
        outsiders.sort(key=lambda t: -int(t.get("latency_us", {}).get("sum", 0)))
        weakest = sorted(self.members, key=lambda ident: self.members[ident].score)
        for entry in outsiders:
            if _ident(entry) in self.members:
                continue  # admitted with another user's entry of this template
            load = float(entry.get("latency_us", {}).get("sum", 0))
            if len(self.members) >= self.topn:
                if not weakest or load <= 2 * self.members[weakest[0]].score:
                    break  # outsiders are sorted: no later one can get in either
                gone = weakest.pop(0)
                del self.members[gone]
                self.texts.pop(gone, None)
                self.evicted += 1
            ident = _ident(entry)
            self.members[ident] = SeriesTotals()
            self.admitted += 1
        for entry in entries:
            ident = _ident(entry)
            series = self.members.get(ident)
            if series is None:
                self.other.add(entry)
            else:
                series.add(entry)
                series.score += (1 - DECAY) * float(entry.get("latency_us", {}).get("sum", 0))
                text = entry.get("template") or texts.get(ident[2])
                if text and ident not in self.texts:
                    self.texts[ident] = _cut(str(text), self.template_length)
            for code, n in dict(entry.get("errors", {})).items():
                slot = (ident[0], str(code))
                if slot not in self.error_codes and len(self.error_codes) >= MAX_ERROR_CODES:
                    slot = (ident[0], OTHER)
                self.error_codes[slot] = self.error_codes.get(slot, 0) + int(n)
        for entry in templates:
            if entry.get("key") == OVERFLOW_KEY:
                self.other.add(entry)

    def families(self) -> Iterator[Metric]:
        labels = ["server", "db", "key"]
        rows = [(list(ident), series) for ident, series in sorted(self.members.items())]
        rows.append((["", "", OTHER], self.other))
        names = {
            "count": ("mysqlprobe_statements", "Statements (commands) seen, per template."),
            "errors": ("mysqlprobe_statement_errors", "Statements answered with an error, per template."),
            "rows_sent": ("mysqlprobe_statement_rows_sent", "Rows sent in result sets, per template."),
            "rows_affected": ("mysqlprobe_statement_rows_affected", "Rows affected (OK packets), per template."),
            "no_index_used": (
                "mysqlprobe_statement_no_index_used",
                "Statements the server flagged SERVER_QUERY_NO_INDEX_USED, per template.",
            ),
        }
        for attr in _COUNTERS:
            name, doc = names[attr]
            family = CounterMetricFamily(name, doc, labels=labels)
            for values, series in rows:
                family.add_metric(values, getattr(series, attr))
            yield family
        seconds = CounterMetricFamily(
            "mysqlprobe_statement_seconds",
            "Time from the last request byte to the last response byte, summed, per template.",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "mysqlprobe_statement_latency_seconds",
            "Latency (last request byte to last response byte), re-binned from the report's sketch.",
            labels=labels,
        )
        for values, series in rows:
            seconds.add_metric(values, series.latency_us / 1e6)
            cumulative, buckets = 0, []
            for le, n in zip(_LE, series.buckets, strict=True):
                cumulative += n
                buckets.append((le, float(cumulative)))
            latency.add_metric(values, buckets, series.latency_us / 1e6)
        yield seconds
        yield latency
        info = InfoMetricFamily(
            "mysqlprobe_template", "Template text (cut) of each template with series.", labels=labels
        )
        for ident, text in sorted(self.texts.items()):
            if ident in self.members:
                info.add_metric(list(ident), {"template": text})
        yield info
        errors = CounterMetricFamily(
            "mysqlprobe_error_codes", "Error packets by server and error code.", labels=["server", "code"]
        )
        for (server, code), n in sorted(self.error_codes.items()):
            errors.add_metric([server, code], n)
        yield errors
        yield _gauge("mysqlprobe_template_series", "Templates with series of their own.", len(self.members))
        yield _gauge("mysqlprobe_template_series_limit", "Configured top-N of template series.", self.topn)
        yield _counter(
            "mysqlprobe_template_series_evicted", "Templates whose series made room for a hotter one.", self.evicted
        )


def _ident(entry: Mapping[str, Any]) -> Ident:
    return (str(entry.get("server", "")), str(entry.get("db", "")), str(entry.get("key", "")))


def _cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[: max(0, length - 1)] + "…"


def _gauge(name: str, doc: str, value: float, labels: Mapping[str, str] | None = None) -> GaugeMetricFamily:
    if labels:
        family = GaugeMetricFamily(name, doc, labels=list(labels))
        family.add_metric(list(labels.values()), value)
        return family
    return GaugeMetricFamily(name, doc, value=value)


def _degraded_families(status: Mapping[str, Any]) -> Iterator[Metric]:
    """Whether each store of the node is degraded (its last write failed: full or read-only
    disk, no descriptors), with its write errors and recoveries: the node keeps serving
    meanwhile, so this is the only place an operator's alert can see it."""
    degraded = GaugeMetricFamily(
        "mysqlprobe_store_degraded", "1 while a store's writes fail (full or read-only disk).", labels=["store"]
    )
    errors = CounterMetricFamily("mysqlprobe_store_write_errors", "Failed writes of a store.", labels=["store"])
    recoveries = CounterMetricFamily(
        "mysqlprobe_store_recoveries", "Times a degraded store wrote again.", labels=["store"]
    )
    cluster = status.get("cluster")
    election = cluster.get("election") if isinstance(cluster, Mapping) else None
    history = status.get("history")
    collector = status.get("collector")
    stores = {
        "state": status.get("state"),
        "spool": collector.get("spool") if isinstance(collector, Mapping) else None,
        "raft_journal": election.get("journal") if isinstance(election, Mapping) else None,
        "history": history,
    }
    for store, info in stores.items():
        if not isinstance(info, Mapping):
            continue
        failed = info.get("degraded") if "degraded" in info else bool(info.get("last_error"))
        degraded.add_metric([store], 1.0 if failed else 0.0)
        errors.add_metric([store], float(info.get("write_errors", 0) or 0))
        if "recoveries" in info:
            recoveries.add_metric([store], float(info.get("recoveries", 0) or 0))
    yield degraded
    yield errors
    yield recoveries


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


#: Report capture counters exposed as ``mysqlprobe_capture_<name>_total``, summed over reports.
CAPTURE_COUNTERS = {
    "packets": "Packets captured.",
    "bytes": "Bytes captured.",
    "dropped_kernel": "Packets the kernel dropped (capture buffer full).",
    "dropped_interface": "Packets the interface dropped.",
    "gaps": "TCP stream gaps (bytes that never arrived).",
    "resyncs": "Times the protocol resynchronised on a command boundary.",
    "responses_lost": "Requests whose response was lost to a gap.",
    "encrypted_conns": "TLS connections seen (counted, not decoded).",
    "duplicates": "Packets seen on two devices, counted once.",
    "capture_gaps": "Periods the probe was not capturing (restarts).",
}


class NodeMetrics:
    """The ``/metrics`` collector of one node: what its reports said, summed, and what its
    ``/status`` says now."""

    def __init__(
        self,
        *,
        topn: int,
        template_length: int,
        status: Callable[[], Mapping[str, Any]],
        version: str,
        git_hash: str,
        queue_depths: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.templates = TemplateSeries(topn, template_length)
        self.status = status
        self.queue_depths = queue_depths
        self.build = {"version": version, "git_hash": git_hash, "python": platform.python_version()}
        self.capture: dict[str, float] = {}
        self.totals: dict[str, int] = {}
        self.capture_gap_seconds = 0.0
        self.coverage: float | None = None
        self.reports = 0
        self.last_report_end_s: float | None = None
        self.heartbeat: dict[str, Any] = {}
        self.missing: dict[str, int] = {}  # slave -> intervals missing (master)
        self.texts: dict[str, str] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe(self, report: Mapping[str, Any], texts: Mapping[str, str] | None = None) -> None:
        """Add one published report (once per interval)."""
        self.reports += 1
        self.templates.observe(report.get("templates", ()), texts or {})
        for name, value in dict(report.get("capture", {})).items():
            if name in CAPTURE_COUNTERS and isinstance(value, int | float) and not isinstance(value, bool):
                self.capture[name] = self.capture.get(name, 0) + value
        self.capture_gap_seconds += int(report.get("capture", {}).get("capture_gap_ns", 0)) / 1e9
        totals = dict(report.get("totals", {}))
        for name in ("queries", "commands", "errors", "incomplete"):
            self.totals[name] = self.totals.get(name, 0) + int(totals.get(name, 0))
        if "coverage" in totals:
            self.coverage = float(totals["coverage"])
        end_ns = report.get("interval", {}).get("end_ns")
        if end_ns:
            self.last_report_end_s = int(end_ns) / 1e9
        self.heartbeat = dict(report.get("heartbeat", {}))
        for slave in report.get("missing", ()):
            name = str(slave.get("node", "?"))
            self.missing[name] = self.missing.get(name, 0) + int(slave.get("count", 0))

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # -- prometheus_client Collector -----------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from self.templates.families()
        yield from self._report_families()
        yield from self._status_families(self.status())

    def _report_families(self) -> Iterator[Metric]:
        for name, doc in CAPTURE_COUNTERS.items():
            yield _counter(f"mysqlprobe_capture_{name}", doc, self.capture.get(name, 0))
        yield _counter(
            "mysqlprobe_capture_gap_seconds", "Time the probe did not capture (restarts).", self.capture_gap_seconds
        )
        for name, doc in (
            ("queries", "Statements (Query, Execute) seen."),
            ("commands", "Protocol commands seen."),
            ("errors", "Commands answered with an error."),
            ("incomplete", "Commands not fully analysed (their response was cut by a gap)."),
        ):
            yield _counter(f"mysqlprobe_{name}", doc, self.totals.get(name, 0))
        if self.coverage is not None:
            yield _gauge(
                "mysqlprobe_coverage_ratio",
                "Commands fully analysed / commands observed, in the last interval.",
                self.coverage,
            )
        yield _counter("mysqlprobe_reports", "Reports this node published.", self.reports)
        if self.last_report_end_s is not None:
            yield _gauge(
                "mysqlprobe_last_report_end_timestamp_seconds",
                "End of the last published interval.",
                self.last_report_end_s,
            )
        lag = GaugeMetricFamily(
            "mysqlprobe_heartbeat_lag_seconds", "Replication lag measured by heartbeat (reader).", labels=["server"]
        )
        stale = GaugeMetricFamily(
            "mysqlprobe_heartbeat_stale", "1 when the heartbeat lag is not current.", labels=["server"]
        )
        for server, state in sorted(self.heartbeat.items()):
            if not isinstance(state, Mapping):
                continue
            if state.get("lag_ms") is not None:
                lag.add_metric([server], float(state["lag_ms"]) / 1000)
            if "stale" in state:
                stale.add_metric([server], 1.0 if state["stale"] else 0.0)
        yield lag
        yield stale
        missing = CounterMetricFamily(
            "mysqlprobe_merge_missing_intervals",
            "Slave intervals that never reached this master (sequence gaps, silent slaves).",
            labels=["slave"],
        )
        for name, count in sorted(self.missing.items()):
            missing.add_metric([name], count)
        yield missing

    def _status_families(self, status: Mapping[str, Any]) -> Iterator[Metric]:
        yield InfoMetricFamily("mysqlprobe_build", "Version of this node.", value=self.build)
        role = str(status.get("role", "?"))
        yield _gauge("mysqlprobe_role", "This node's role (1 for the current one).", 1, {"role": role})
        yield _gauge("mysqlprobe_epoch", "Cluster epoch this node knows.", float(status.get("epoch", 0) or 0))
        yield _gauge("mysqlprobe_uptime_seconds", "Seconds since the node started.", float(status.get("uptime_s", 0)))
        collector = status.get("collector") or {}
        yield _gauge(
            "mysqlprobe_subscribers", "Current /collector subscribers.", float(collector.get("subscribers", 0))
        )
        for name, key, doc in (
            ("mysqlprobe_subscribers_connected", "subscribers_total", "/collector subscribers that connected."),
            ("mysqlprobe_subscribers_dropped", "subscribers_dropped", "Subscribers dropped for falling behind."),
            ("mysqlprobe_reports_published", "reports_published", "Reports handed to /collector."),
            ("mysqlprobe_collector_messages_sent", "messages_sent", "Messages written to subscribers."),
            ("mysqlprobe_reports_acked", "acks", "Reports a master acknowledged to this node."),
            ("mysqlprobe_reports_replayed", "replayed", "Spooled reports resent to a master."),
            (
                "mysqlprobe_reports_reoffered",
                "reoffered",
                "Re-offers to a master of spooled reports left unacknowledged.",
            ),
            ("mysqlprobe_stale_masters_refused", "stale_masters_refused", "Masters refused for a stale epoch."),
        ):
            yield _counter(name, doc, float(collector.get(key, 0) or 0))
        spool = collector.get("spool") or {}
        yield _gauge(
            "mysqlprobe_reports_spooled", "Reports waiting in the spool for a master.", float(spool.get("reports", 0))
        )
        yield _counter(
            "mysqlprobe_spool_overflowed", "Reports the full spool had to drop.", float(spool.get("overflowed", 0))
        )
        pusher = status.get("pusher")
        if pusher:
            yield _gauge(
                "mysqlprobe_push_queue", "Pushed reports not yet acknowledged.", float(pusher.get("queued", 0))
            )
            for name, doc in (
                ("pushed", "Reports pushed to an ingest server."),
                ("acked", "Pushed reports acknowledged."),
                ("resent", "Pushed reports sent again after a failure."),
                ("overflowed", "Reports the full push queue dropped."),
            ):
                yield _counter(f"mysqlprobe_push_{name}", doc, float(pusher.get(name, 0)))
        otlp = status.get("otlp")
        if isinstance(otlp, Mapping):
            for name, doc in (
                ("exported", "OTLP export requests accepted by the endpoint."),
                ("failed", "OTLP export requests that failed."),
                ("dropped", "OTLP export requests dropped from the full queue."),
            ):
                yield _counter(f"mysqlprobe_otlp_{name}", doc, float(otlp.get(name, 0)))
        queues = GaugeMetricFamily("mysqlprobe_queue_depth", "Messages waiting in a queue.", labels=["queue"])
        for name, depth in sorted((self.queue_depths() if self.queue_depths else {}).items()):
            queues.add_metric([name], float(depth))
        yield queues
        workers = status.get("workers")
        if isinstance(workers, list):
            yield _gauge(
                "mysqlprobe_workers_alive", "Capture workers alive.", float(sum(1 for w in workers if w.get("alive")))
            )
            yield _counter(
                "mysqlprobe_workers_restarted", "Capture workers restarted.", float(status.get("workers_restarted", 0))
            )
        merge = status.get("merge")
        if isinstance(merge, Mapping):
            for name, doc in (
                ("merged", "Slave reports merged."),
                ("duplicates", "Slave reports dropped as duplicates (same node and seq)."),
                (
                    "duplicates_published_by_predecessor",
                    "Of the duplicates: slave reports offered again after a failover, already published by the"
                    " master before.",
                ),
                ("predecessor_seqs", "Slave reports a standby learned the leader published (its feed)."),
                (
                    "predecessor_seqs_forgotten",
                    "Learned slave reports pushed out of the bounded window before they were offered again.",
                ),
                ("rejected", "Slave reports rejected as malformed."),
            ):
                yield _counter(f"mysqlprobe_merge_{name}", doc, float(merge.get(name, 0) or 0))
        yield from _degraded_families(status)
        links = status.get("subscriptions")
        if isinstance(links, list):
            yield _gauge(
                "mysqlprobe_slaves_connected",
                "Slaves this master is subscribed to right now.",
                float(sum(1 for link in links if isinstance(link, Mapping) and link.get("state") == "connected")),
            )
