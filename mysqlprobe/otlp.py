"""OpenTelemetry export (optional, off by default): per-template metrics over OTLP/HTTP.

Owns turning a report into an ``ExportMetricsServiceRequest`` (the official
``opentelemetry-proto`` messages, protobuf over HTTP POST) and sending it to
``otlp.endpoint``. Each report becomes one request with delta temporality (the report's
interval is the data points' start and end), following the database semantic conventions:

- ``db.client.operation.duration``: histogram in seconds, one data point per template
  (the top ``otlp.topn`` by load, the rest summed in one point with ``db.query.summary``
  ``other``), explicit bounds ``LATENCY_BUCKETS_S`` (the same as /metrics), re-binned from
  the report's sketch; attributes ``db.system.name``, ``db.namespace``,
  ``db.operation.name``, ``db.query.summary``, ``db.query.text`` (the template: literals are
  already ``?``), ``server.address``, ``server.port``, ``user.name`` (the account, when
  known: reports keep a template per user), and ``db.response.status_code`` when
  every call of the interval failed with one code (the report does not split latency by
  outcome).
- ``mysqlprobe.db.client.operation.errors``: a delta sum per template and error code, with
  ``db.response.status_code`` (the convention has no error count of its own).

Reports wait in a bounded queue (``otlp.maxqueue``); when it is full the oldest is dropped
and counted. A failed request is counted and not retried: the next interval brings the next
delta, and nothing else depends on the export.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Mapping
from typing import Any

import aiohttp
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from message.report import OVERFLOW_KEY
from mysqlprobe.prometheus import LATENCY_BUCKETS_S, histogram_index

log = logging.getLogger("mysqlprobe.otlp")

DURATION = "db.client.operation.duration"
ERRORS = "mysqlprobe.db.client.operation.errors"
#: Characters of template text sent as db.query.text.
QUERY_TEXT_LENGTH = 2000
_TARGET = re.compile(
    r"^\s*(?:SELECT\b.*?\bFROM|DELETE\b.*?\bFROM|INSERT\b.*?\bINTO|REPLACE\b.*?\bINTO|UPDATE)\s+"
    r"((?:`[^`]+`|[\w$]+)(?:\.(?:`[^`]+`|[\w$]+))?)",
    re.IGNORECASE | re.DOTALL,
)


def operation_name(template: str) -> str:
    """The statement's first keyword (``SELECT``, ``INSERT``, ...), upper-cased."""
    match = re.match(r"\s*(?:/\*.*?\*/\s*)*([A-Za-z]+)", template, re.DOTALL)
    return match.group(1).upper() if match else ""


def query_summary(template: str) -> str:
    """A low-cardinality summary: the operation and its first target table, if any."""
    operation = operation_name(template)
    match = _TARGET.match(template)
    if match is None:
        return operation
    return f"{operation} {match.group(1).replace('`', '')}"


def _attr(key: str, value: str | int) -> KeyValue:
    any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
    return KeyValue(key=key, value=any_value)


def _server(server: str) -> tuple[str, int | None]:
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        return server, None
    return host.strip("[]"), int(port)


class _Point:
    """A histogram data point being built (counts per explicit bucket)."""

    def __init__(self) -> None:
        self.count = 0
        self.sum_us = 0
        self.min_us: int | None = None
        self.max_us = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)

    def add(self, entry: Mapping[str, Any]) -> None:
        latency = entry.get("latency_us", {})
        count = int(entry.get("count", 0))
        if count == 0:
            return
        self.count += count
        self.sum_us += int(latency.get("sum", 0))
        low = int(latency.get("min", 0))
        self.min_us = low if self.min_us is None else min(self.min_us, low)
        self.max_us = max(self.max_us, int(latency.get("max", 0)))
        sketch = latency.get("sketch", {})
        self.buckets[0] += int(sketch.get("zero", 0))
        for key, n in zip(sketch.get("keys", ()), sketch.get("counts", ()), strict=False):
            self.buckets[histogram_index(int(key))] += int(n)

    def proto(self, attributes: list[KeyValue], start_ns: int, end_ns: int) -> HistogramDataPoint:
        return HistogramDataPoint(
            attributes=attributes,
            start_time_unix_nano=start_ns,
            time_unix_nano=end_ns,
            count=self.count,
            sum=self.sum_us / 1e6,
            bucket_counts=self.buckets,
            explicit_bounds=list(LATENCY_BUCKETS_S),
            min=(self.min_us or 0) / 1e6,
            max=self.max_us / 1e6,
        )


def build_request(
    report: Mapping[str, Any],
    *,
    node: str,
    version: str,
    db_system: str,
    topn: int,
    texts: Mapping[str, str] | None = None,
) -> ExportMetricsServiceRequest:
    """The OTLP request for one report (``texts``: template texts known from earlier reports)."""
    interval = report.get("interval", {})
    start_ns, end_ns = int(interval.get("start_ns", 0)), int(interval.get("end_ns", 0))
    entries = sorted(
        (t for t in report.get("templates", ()) if int(t.get("count", 0)) > 0),
        key=lambda t: -int(t.get("latency_us", {}).get("sum", 0)),
    )
    points: list[HistogramDataPoint] = []
    errors: list[NumberDataPoint] = []
    rest = _Point()
    for rank, entry in enumerate(entries):
        if rank >= topn or entry.get("key") == OVERFLOW_KEY:
            rest.add(entry)
            continue
        text = str(entry.get("template") or (texts or {}).get(str(entry.get("key")), ""))
        host, port = _server(str(entry.get("server", "")))
        common = [_attr("db.system.name", db_system), _attr("server.address", host)]
        if port is not None:
            common.append(_attr("server.port", port))
        if entry.get("db"):
            common.append(_attr("db.namespace", str(entry["db"])))
        if entry.get("user"):  # a template per account: the account keeps the points apart
            common.append(_attr("user.name", str(entry["user"])))
        common += [
            _attr("db.operation.name", operation_name(text)),
            _attr("db.query.summary", query_summary(text)),
            _attr("db.query.text", text[:QUERY_TEXT_LENGTH]),
            _attr("mysqlprobe.template.key", str(entry.get("key", ""))),
        ]
        point = _Point()
        point.add(entry)
        codes = {str(code): int(n) for code, n in dict(entry.get("errors", {})).items() if int(n)}
        attributes = list(common)
        if len(codes) == 1 and sum(codes.values()) == point.count:
            attributes.append(_attr("db.response.status_code", next(iter(codes))))
        points.append(point.proto(attributes, start_ns, end_ns))
        for code, n in sorted(codes.items()):
            errors.append(
                NumberDataPoint(
                    attributes=[*common, _attr("db.response.status_code", code)],
                    start_time_unix_nano=start_ns,
                    time_unix_nano=end_ns,
                    as_int=n,
                )
            )
    if rest.count:
        other = [_attr("db.system.name", db_system), _attr("db.query.summary", "other")]
        points.append(rest.proto(other, start_ns, end_ns))
    metrics = [
        Metric(
            name=DURATION,
            description="Duration of database client operations, seen on the wire (last request byte to last"
            " response byte).",
            unit="s",
            histogram=Histogram(
                data_points=points, aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
            ),
        )
    ]
    if errors:
        metrics.append(
            Metric(
                name=ERRORS,
                description="Operations answered with an error, by error code.",
                unit="{operation}",
                sum=Sum(
                    data_points=errors,
                    aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA,
                    is_monotonic=True,
                ),
            )
        )
    resource = Resource(
        attributes=[
            _attr("service.name", "mysqlprobe"),
            _attr("service.instance.id", node),
            _attr("service.version", version),
            _attr("mysqlprobe.role", str(report.get("role", ""))),
            _attr("mysqlprobe.seq", int(report.get("seq", 0))),
        ]
    )
    scope = InstrumentationScope(name="mysqlprobe", version=version)
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(resource=resource, scope_metrics=[ScopeMetrics(scope=scope, metrics=metrics)])
        ]
    )


class OtlpExporter:
    """Sends one request per published report to an OTLP/HTTP endpoint, in the background."""

    def __init__(
        self,
        endpoint: str,
        *,
        node: str,
        version: str,
        db_system: str = "mysql",
        topn: int = 100,
        timeout_s: float = 5.0,
        max_queue: int = 16,
    ) -> None:
        self.endpoint = endpoint
        self.node = node
        self.version = version
        self.db_system = db_system
        self.topn = topn
        self.timeout_s = timeout_s
        self.queue: deque[tuple[Mapping[str, Any], Mapping[str, str]]] = deque()
        self.max_queue = max_queue
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._wake = asyncio.Event()

    def observe(self, report: Mapping[str, Any], texts: Mapping[str, str] | None = None) -> None:
        """Queue a report; its request is built off the event loop (tens of ms for 5,000 templates)."""
        if len(self.queue) >= self.max_queue:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append((report, texts or {}))
        self._wake.set()

    def _body(self, report: Mapping[str, Any], texts: Mapping[str, str]) -> bytes:
        request = build_request(
            report, node=self.node, version=self.version, db_system=self.db_system, topn=self.topn, texts=texts
        )
        return bytes(request.SerializeToString())

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        headers = {"Content-Type": "application/x-protobuf"}
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self.queue:
                    body = await asyncio.to_thread(self._body, *self.queue.popleft())
                    try:
                        async with session.post(self.endpoint, data=body, headers=headers) as resp:
                            await resp.read()
                            if resp.status // 100 == 2:
                                self.exported += 1
                                continue
                            self.last_error = f"HTTP {resp.status}"
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        self.last_error = str(exc) or type(exc).__name__
                    self.failed += 1
                    log.warning("OTLP export to %s failed: %s", self.endpoint, self.last_error)

    def status(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "exported": self.exported,
            "failed": self.failed,
            "dropped": self.dropped,
            "queued": len(self.queue),
            "last_error": self.last_error,
        }
