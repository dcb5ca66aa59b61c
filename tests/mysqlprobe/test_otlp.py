"""OTLP export: a real slave under a real workload sends to a real OTLP/HTTP receiver (aiohttp,
decoding with the official opentelemetry-proto messages); every report arrives as one
request whose data points equal the report's templates."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from message.report import TemplateStats
from mysqlprobe.otlp import DURATION, ERRORS, operation_name, query_summary
from mysqlprobe.prometheus import LATENCY_BUCKETS_S, histogram_index
from tests.support.mariadb import free_port, running_mariadb
from tests.support.nodes import Collector, Node


class Receiver:
    """An OTLP/HTTP metrics receiver on 127.0.0.1 in a thread of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[ExportMetricsServiceRequest] = []
        self.content_types: set[str] = set()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/metrics"

    async def handle(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        message = ExportMetricsServiceRequest()
        message.ParseFromString(await request.read())
        self.requests.append(message)
        return web.Response(
            body=ExportMetricsServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def _run(self, ready: threading.Event) -> None:
        app = web.Application()
        app.router.add_post("/v1/metrics", self.handle)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind)
    return out


def test_summary_and_operation() -> None:
    assert operation_name("SELECT c FROM sbtest1 WHERE id = ?") == "SELECT"
    assert query_summary("SELECT c FROM `shop`.`items` WHERE id = ?") == "SELECT shop.items"
    assert query_summary("INSERT INTO logs (msg, n) VALUES (...)") == "INSERT logs"
    assert query_summary("UPDATE items SET qty = qty + ? WHERE id = ?") == "UPDATE items"
    assert query_summary("DELETE FROM logs WHERE id = ?") == "DELETE logs"
    assert query_summary("SELECT ? + ?") == "SELECT"
    assert query_summary("/* x */ COMMIT") == "COMMIT"


@pytest.mark.mariadb
@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_live_slave_exports_each_report_over_otlp(tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        with running_mariadb() as server:
            config = {
                "interval": 1,
                "probe": {"device": "lo", "port": server.port, "workers": 1},
                "otlp": {"endpoint": receiver.url, "dbsystem": "mariadb", "topn": 50},
            }
            node = Node(tmp_path, config, name="otlpslave").start()
            collector = Collector(f"ws://127.0.0.1:{node.port}/collector")
            try:
                conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
                with conn.cursor() as cur:
                    cur.execute("CREATE DATABASE IF NOT EXISTS otel")
                    cur.execute("CREATE TABLE IF NOT EXISTS otel.items (id INT PRIMARY KEY, v INT)")
                    cur.execute("USE otel")
                    for i in range(40):
                        cur.execute(f"INSERT INTO items VALUES ({i}, {i * 2})")
                        cur.execute(f"SELECT v FROM items WHERE id = {i}")
                        cur.fetchall()
                    for _ in range(3):
                        with pytest.raises(pymysql.err.ProgrammingError):
                            cur.execute("SELECT * FROM missing_table")
                conn.close()
                collector.wait_for(
                    lambda c: len(c.reports) >= 2 and c.reports[-1]["totals"]["queries"] == 0, timeout=60
                )
                last = collector.reports[-1]["seq"]
                deadline = time.monotonic() + 30
                while not any(_seq(r) == last for r in receiver.requests):
                    assert time.monotonic() < deadline, "the last report was not exported"
                    time.sleep(0.1)
                status = node.get("/status")["otlp"]
            finally:
                collector.close()
                node.stop()
    finally:
        receiver.close()
    assert receiver.content_types == {"application/x-protobuf"}
    assert status["failed"] == 0 and status["dropped"] == 0 and status["exported"] >= last
    by_seq = {_seq(r): r for r in receiver.requests}
    checked = failed = 0
    texts: dict[str, str] = {}
    for report in collector.reports:
        request = by_seq[report["seq"]]  # every report was exported
        (resource,) = request.resource_metrics
        assert attributes(resource.resource.attributes)["service.name"] == "mysqlprobe"
        metrics = {m.name: m for m in resource.scope_metrics[0].metrics}
        duration = metrics[DURATION]
        assert duration.unit == "s" and duration.histogram.aggregation_temporality == 1  # delta
        points = {attributes(p.attributes).get("mysqlprobe.template.key"): p for p in duration.histogram.data_points}
        for entry in report["templates"]:
            if entry["count"] == 0:
                continue
            stats = TemplateStats.from_json(entry)
            # /collector sends a template's text with its key's first report only
            text = texts.setdefault(entry["key"], entry.get("template", ""))
            point = points[entry["key"]]
            attrs = attributes(point.attributes)
            assert point.count == stats.count
            assert point.sum == pytest.approx(stats.latency_sum / 1e6)
            assert point.start_time_unix_nano == report["interval"]["start_ns"]
            assert point.time_unix_nano == report["interval"]["end_ns"]
            assert list(point.explicit_bounds) == list(LATENCY_BUCKETS_S)
            expected = [0] * (len(LATENCY_BUCKETS_S) + 1)
            expected[0] += stats.sketch.zero
            for key, n in stats.sketch.bins.items():
                expected[histogram_index(key)] += n
            assert list(point.bucket_counts) == expected
            assert attrs["db.system.name"] == "mariadb"
            assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == server.port
            assert attrs["db.query.text"] == text
            assert attrs["db.operation.name"] == operation_name(text)
            if entry["db"]:
                assert attrs["db.namespace"] == entry["db"]
            if text.startswith("SELECT * FROM missing_table"):
                assert attrs["db.response.status_code"] == "1146"
                failed += stats.count
                errors = metrics[ERRORS].sum.data_points
                assert sum(p.as_int for p in errors if attributes(p.attributes)["db.response.status_code"] == "1146")
            if text == "SELECT v FROM items WHERE id = ?":
                assert attrs["db.query.summary"] == "SELECT items" and attrs["db.namespace"] == "otel"
                assert "db.response.status_code" not in attrs
                checked += stats.count
    assert checked == 40 and failed == 3


def _seq(request: ExportMetricsServiceRequest) -> int:
    return int(attributes(request.resource_metrics[0].resource.attributes)["mysqlprobe.seq"])
