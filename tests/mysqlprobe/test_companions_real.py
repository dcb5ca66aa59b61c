"""Heartbeat lag, metrics and the trace store, through real nodes and real MariaDB servers."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest

from probe import native
from tests.support.mariadb import MariaDB
from tests.support.nodes import Collector, Node
from tests.support.replication import replicated_pair

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))


def node_config(server: MariaDB, **extra: object) -> dict[str, object]:
    config: dict[str, object] = {
        "interval": 1,
        "probe": {"device": "lo", "port": server.port, "workers": 1},
        "watcher": {"uname": "root", "port": server.port},
    }
    config.update(extra)
    return config


def test_heartbeat_lag_in_reports_status_and_the_merged_view(tmp_path: Path) -> None:
    with replicated_pair() as (primary, replica):
        writer = Node(tmp_path, node_config(primary, heartbeat={"mode": "writer", "intervalms": 200}), "hb-writer")
        reader = Node(tmp_path, node_config(replica, heartbeat={"mode": "reader", "intervalms": 200}), "hb-reader")
        writer.start()
        reader.start()
        master = Node(tmp_path, {"slave": False, "interval": 1}, "hb-master").start()
        try:
            for node in (writer, reader):
                assert master.request(f"/cluster/join?addr=127.0.0.1:{node.port}")[0] == 200
            collector = Collector(f"ws://127.0.0.1:{master.port}/collector")
            server = f"127.0.0.1:{replica.port}"
            collector.wait_for(
                lambda c: any((r.get("heartbeat", {}).get(server) or {}).get("lag_ms") is not None for r in c.reports),
                timeout=40,
            )
            merged = next(
                r["heartbeat"][server] for r in reversed(collector.reports) if server in r.get("heartbeat", {})
            )
            assert merged["lag_ms"] < 1000 and merged["node"] == "hb-reader" and not merged["stale"]
            assert merged["last_good"]["writer"] == "hb-writer"
            status = reader.get("/status")["heartbeat"][server]
            assert status["role"] == "reader" and status["lag_ms"] is not None
            assert writer.get("/status")["heartbeat"][f"127.0.0.1:{primary.port}"]["beats"] > 0
            replica.query("STOP SLAVE SQL_THREAD")
            time.sleep(3.5)
            lagging = reader.get("/status")["heartbeat"][server]["lag_ms"]
            assert lagging > 2500
            replica.query("START SLAVE SQL_THREAD")
            # The lag is in the metrics collection too, per slave and server.
            raw = master.get("/api/metrics/raw?seconds=60")
            lags = [s for s in raw if s["metric"] == "heartbeat_lag_ms"]
            assert lags and any(s["value"] and s["value"] > 2000 for s in lags)
            aggregate = master.get("/api/metrics/aggregate?seconds=60&group_by=node")
            rows = {a["node"]: a for a in aggregate if a["metric"] == "heartbeat_lag_ms"}
            # One row per (node, server) that reads a heartbeat: the reader's own and the master's
            # merged view of it; the writer measures no lag and has no row.
            assert set(rows) == {f"hb-reader/{server}", f"hb-master/{server}"}, rows
            row = rows[f"hb-reader/{server}"]
            assert row["count"] >= 3 and row["max"] > 2000 and row["min"] is not None
            collector.close()
        finally:
            master.stop()
            reader.stop()
            writer.stop()


def test_metrics_endpoints_validate_and_answer(tmp_path: Path) -> None:
    server = MariaDB()
    server.start()
    node = Node(tmp_path, node_config(server), "metrics").start()
    try:
        assert node.get("/api/metrics/raw?seconds=0.001") == [] or isinstance(
            node.get("/api/metrics/raw?seconds=0.001"), list
        )
        for query, reason in [
            ("", "seconds: expected a positive number"),
            ("?seconds=abc", "expected a number of seconds"),
            ("?seconds=-5", "positive"),
            ("?seconds=0", "positive"),
            ("?seconds=nan", "positive"),
        ]:
            status, body = node.request("/api/metrics/raw" + query)
            assert status == 400 and reason in body["error"], (query, body)
        status, body = node.request("/api/metrics/aggregate?seconds=5&group_by=color")
        assert status == 400 and "group_by" in body["error"]
        time.sleep(2.5)
        raw = node.get("/api/metrics/raw?seconds=60")
        assert {"queries", "packets", "dropped_kernel", "coverage"} <= {s["metric"] for s in raw}
        assert all(set(s) == {"ts_ns", "node", "metric", "value", "error"} for s in raw)
        aggregate = node.get("/api/metrics/aggregate?seconds=60")
        assert all(
            {"metric", "count", "errors", "first_seen_ns", "last_seen_ns", "min", "mean", "p50", "p95", "p99", "max"}
            <= set(a)
            for a in aggregate
        )
    finally:
        node.stop()
        server.destroy()


def test_trace_store_endpoints(tmp_path: Path) -> None:
    server = MariaDB()
    server.start()
    node = Node(
        tmp_path,
        node_config(server, slowthresholdms=50, token="tt", traces={"ttls": 4, "maxevents": 5, "maxmb": 1}),
        "traces",
    ).start()
    auth = {"X-Mysqlprobe-Token": "tt"}  # slow samples carry SQL: with a token set, reading them needs it

    def get(path: str) -> Any:
        status, answer = node.request(path, headers=auth)
        assert status == 200, (path, status, answer)
        return answer

    try:
        conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root")
        with conn.cursor() as cur:
            for i in range(3):
                cur.execute(f"SELECT SLEEP(0.{i + 1}) AS s{i}")
                cur.fetchall()
        deadline = time.monotonic() + 20
        while len(get("/events/scan")["events"]) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        page = get("/events/scan?limit=2")
        assert len(page["events"]) == 2
        rest = get(f"/events/scan?cursor={page['cursor']}")
        assert len(rest["events"]) == 1  # a stable cursor: nothing twice, nothing skipped
        events = page["events"] + rest["events"]
        assert all(e["trace_id"].startswith("traces.") for e in events)
        slowest = max(events, key=lambda e: e["latency_us"])
        assert slowest["latency_us"] >= 300_000 and "SLEEP" in slowest["sql"]
        assert get(f"/events/query?trace_id={slowest['trace_id']}")["trace_id"] == slowest["trace_id"]
        assert [e["trace_id"] for e in get("/events/scan?min_latency_ms=250")["events"]] == [slowest["trace_id"]]
        assert get(f"/events/scan?key={slowest['key']}")["events"]
        assert get(f"/events/scan?since={time.time() + 60}")["events"] == []
        # errors
        for path, code, reason in [
            ("/events/query", 400, "trace_id"),
            ("/events/query?trace_id=nope", 404, "no event"),
            ("/events/scan?limit=abc", 400, "limit"),
            ("/events/scan?limit=0", 400, "at least 1"),
            ("/events/scan?cursor=-1", 400, "cursor"),
            ("/events/scan?min_latency_ms=x", 400, "min_latency_ms"),
        ]:
            status, body = node.request(path, headers=auth)
            assert status == code and reason in body["error"], (path, body)
        assert get("/events/scan?limit=100000")["limit"] == 1000  # capped, not refused
        status, body = node.request(f"/events/delete?trace_id={slowest['trace_id']}")
        assert status == 405
        status, body = node.request(f"/events/delete?trace_id={slowest['trace_id']}", method="DELETE")
        assert status == 401
        status, body = node.request(f"/events/delete?trace_id={slowest['trace_id']}", method="DELETE", headers=auth)
        assert status == 200
        status, body = node.request(f"/events/delete?trace_id={slowest['trace_id']}", method="DELETE", headers=auth)
        assert status == 404
        # bounds: count (5) and TTL (4 s)
        with conn.cursor() as cur:
            for i in range(8):
                cur.execute(f"SELECT SLEEP(0.06) AS t{i}")
                cur.fetchall()
        conn.close()
        time.sleep(2)
        stats = node.get("/events/status")
        assert stats["events"] <= 5 and stats["evicted"]["count"] >= 1
        time.sleep(5)
        stats = node.get("/events/status")
        assert stats["events"] == 0 and stats["evicted"]["ttl"] >= 1
        status = node.get("/status")
        assert status["git_hash"] and status["engine"] == native.ENGINE  # which decoder this node runs
    finally:
        node.stop()
        server.destroy()
