"""Trace store and metrics collection, sans-I/O, with an injected clock."""

from __future__ import annotations

from cluster.metrics import MetricsStore, Sample
from cluster.traces import TraceStore

S = 1_000_000_000


def event(trace_id: str, start_ns: int, latency_us: int, key: str = "k1", pad: int = 0) -> dict[str, object]:
    return {"trace_id": trace_id, "start_ns": start_ns, "latency_us": latency_us, "key": key, "sql": "x" * pad}


def test_trace_store_query_delete_and_bounds() -> None:
    store = TraceStore(ttl_ns=60 * S, max_events=3, max_bytes=10_000)
    store.add([event("n.1.1", 1, 500), event("n.1.2", 2, 900, key="k2")], now_ns=0)
    assert store.get("n.1.2", 0)["latency_us"] == 900  # type: ignore[index]
    assert store.delete("n.1.1", 0) and not store.delete("n.1.1", 0)
    store.add([event(f"n.2.{i}", 10 + i, 100) for i in range(4)], now_ns=0)
    assert len(store) == 3 and store.evicted["count"] == 2 and store.evicted["deleted"] == 1
    assert store.get("n.1.2", 0) is None  # the oldest went first
    store.add([event("big", 50, 1, pad=9800)], now_ns=0)  # over the budget with the others
    assert store.evicted["bytes"] >= 1 and store.bytes <= 10_000
    store.add([event("huge", 60, 1, pad=20_000)], now_ns=0)  # larger than the whole budget
    assert store.get("huge", 0) is None
    assert store.expire(61 * S) >= 1 and len(store) == 0 and store.evicted["ttl"] >= 1


def test_trace_scan_cursor_is_stable_and_filters_apply() -> None:
    store = TraceStore()
    store.add([event(f"n.1.{i}", i * S, i * 100, key="a" if i % 2 else "b") for i in range(1, 11)], now_ns=0)
    page, cursor = store.scan(0, limit=3)
    assert [e["trace_id"] for e in page] == ["n.1.1", "n.1.2", "n.1.3"]
    store.delete("n.1.4", 0)  # deleted ahead of the cursor
    store.add([event("n.1.11", 11 * S, 1100, key="a")], now_ns=0)
    page, cursor = store.scan(0, cursor=cursor, limit=3)
    assert [e["trace_id"] for e in page] == ["n.1.5", "n.1.6", "n.1.7"]
    rest, end = store.scan(0, cursor=cursor, limit=100)
    assert [e["trace_id"] for e in rest] == ["n.1.8", "n.1.9", "n.1.10", "n.1.11"]
    assert store.scan(0, cursor=end)[0] == []
    filtered, _ = store.scan(0, key="a", min_latency_us=500, since_ns=6 * S)
    assert [e["trace_id"] for e in filtered] == ["n.1.7", "n.1.9", "n.1.11"]


def test_metrics_since_aggregate_and_expiry() -> None:
    store = MetricsStore(retention_ns=100 * S, max_samples=1000)
    samples = [Sample(i * S, f"s{i % 2}", "lag_ms", float(i), i == 5) for i in range(1, 21)]
    store.record(samples, now_ns=20 * S)
    assert [s.ts_ns for s in store.since(18 * S, 20 * S)] == [18 * S, 19 * S, 20 * S]
    store.record([Sample(int(17.5 * S), "s0", "lag_ms", 99.0, False)], now_ns=20 * S)  # late
    assert [s.value for s in store.since(17 * S, 20 * S)][:3] == [17.0, 99.0, 18.0]
    whole = store.aggregate(0, 20 * S)
    assert whole[0]["count"] == 21 and whole[0]["errors"] == 1 and whole[0]["max"] == 99.0
    assert whole[0]["p50"] == 11.0 and whole[0]["min"] == 1.0
    per_node = store.aggregate(0, 20 * S, by_node=True)
    assert {e["node"] for e in per_node} == {"s0", "s1"}
    store.expire(115 * S)  # the clock moved: samples older than 100 s go
    assert [s.value for s in store.since(0, 115 * S)] == [15.0, 16.0, 17.0, 99.0, 18.0, 19.0, 20.0]
    assert store.since(0, 10**12) == [] and store.aggregate(0, 10**12) == []


def test_metrics_count_bound() -> None:
    store = MetricsStore(max_samples=10)
    store.record([Sample(i, "n", "m", 1.0, False) for i in range(25)], now_ns=25)
    assert len(store) == 10 and store.dropped_for_count == 15
    assert store.since(0, 25)[0].ts_ns == 15
