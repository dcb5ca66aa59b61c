"""The message layer: sketches, report entries, merging and the wire codec."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import snappy
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from message.codec import CodecError, decode, encode
from message.report import (
    OVERFLOW_KEY,
    SlowQuery,
    SlowSamples,
    TemplateIdent,
    TemplateStats,
    fold_templates,
    merge_templates,
)
from message.sketch import RELATIVE_ACCURACY, LatencySketch, bucket_key

SCHEMA_PATH = Path(__file__).parents[2] / "message" / "schema" / "report.schema.json"


def test_bucket_table_equals_the_mapping_for_every_tabled_value() -> None:
    from ddsketch.mapping import LogarithmicMapping

    mapping = LogarithmicMapping(RELATIVE_ACCURACY)
    for value in range(1, (1 << 16) + 64):
        assert bucket_key(value) == mapping.key(value), value


def test_sketch_relative_error_is_within_one_percent() -> None:
    rng = random.Random(3)
    values = sorted(int(rng.lognormvariate(7, 1.8)) + 1 for _ in range(50_000))
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)
    for q in (0.5, 0.9, 0.95, 0.99, 0.999):
        exact = values[int(q * (len(values) - 1))]
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) / exact <= RELATIVE_ACCURACY + 1e-9


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=300), st.integers(1, 5))
def test_merged_sketches_equal_one_sketch_of_everything(values: list[int], parts: int) -> None:
    whole = LatencySketch()
    pieces = [LatencySketch() for _ in range(parts)]
    for i, value in enumerate(values):
        whole.add(value)
        pieces[i % parts].add(value)
    merged = LatencySketch()
    for piece in reversed(pieces):
        merged.merge(piece)
    assert merged == whole
    assert merged.quantiles((0.5, 0.99)) == whole.quantiles((0.5, 0.99))
    assert LatencySketch.from_json(json.loads(json.dumps(whole.to_json()))) == whole


def test_sketch_rejects_foreign_or_malformed_data() -> None:
    with pytest.raises(ValueError):
        LatencySketch.from_json({"alpha": 0.02, "zero": 0, "keys": [], "counts": []})
    with pytest.raises(ValueError):
        LatencySketch.from_json({"alpha": 0.01, "keys": [1, 2], "counts": [1]})
    assert LatencySketch().quantile(0.5) is None


def _stats(server: str, key: str, latencies: list[int], errors: dict[str, int]) -> TemplateStats:
    stats = TemplateStats(server, "shop", key, "SELECT ?")
    for i, latency in enumerate(latencies):
        stats.count += 1
        stats.commands["Query"] = stats.commands.get("Query", 0) + 1
        stats.latency_sum += latency
        stats.latency_min = latency if i == 0 else min(stats.latency_min, latency)
        stats.latency_max = max(stats.latency_max, latency)
        stats.sketch.add(latency)
        stats.first_seen_ns = stats.first_seen_ns or 1000 + i
        stats.last_seen_ns = 1000 + i
    stats.errors = dict(errors)
    return stats


def test_template_merge_adds_and_never_overwrites() -> None:
    a = _stats("s:1", "0123456789abcdef", [10, 20, 30], {"1146": 2})
    b = _stats("s:1", "0123456789abcdef", [5, 500], {"1146": 1, "1062": 4})
    into: dict[TemplateIdent, TemplateStats] = {}
    merge_templates(into, [a])
    merge_templates(into, [b])
    merged = into[("s:1", "shop", "", "0123456789abcdef")]
    assert merged.count == 5 and merged.commands == {"Query": 5}
    assert merged.errors == {"1146": 3, "1062": 4}
    assert (merged.latency_min, merged.latency_max, merged.latency_sum) == (5, 500, 565)
    assert merged.sketch.count == 5
    round_trip = TemplateStats.from_json(json.loads(json.dumps(merged.to_json())))
    assert round_trip.to_json() == merged.to_json()


def test_a_template_is_kept_per_user_and_overflow_folds_users_together() -> None:
    app = _stats("s:1", "0123456789abcdef", [10, 20], {})
    app.user = "app"
    report = _stats("s:1", "0123456789abcdef", [7], {"1146": 1})
    report.user = "report"
    into: dict[TemplateIdent, TemplateStats] = {}
    merge_templates(into, [app, report, app])
    assert {ident: t.count for ident, t in into.items()} == {
        ("s:1", "shop", "app", "0123456789abcdef"): 4,
        ("s:1", "shop", "report", "0123456789abcdef"): 1,
    }
    entry = into[("s:1", "shop", "report", "0123456789abcdef")].to_json()
    assert entry["user"] == "report" and TemplateStats.from_json(entry).user == "report"
    del entry["user"]  # a report of an earlier version: the user is not known
    assert TemplateStats.from_json(entry).user == ""
    kept, folded = fold_templates(into, 0)
    assert list(kept) == [("s:1", "shop", "", OVERFLOW_KEY)] and kept[("s:1", "shop", "", OVERFLOW_KEY)].count == 5
    assert folded["templates"] == 2 and folded["statements"] == 5


def test_template_entry_follows_the_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    entry = _stats("s:1", "0123456789abcdef", [10, 20], {}).to_json()
    template_schema = {"$defs": schema["$defs"], "$ref": "#/$defs/template"}
    Draft202012Validator(template_schema).validate(entry)


def test_slow_samples_keep_the_worst() -> None:
    samples = SlowSamples(3)
    for latency in (5, 50, 1, 40, 30, 60):
        samples.offer(SlowQuery(latency_us=latency, start_ns=latency, key="k"))
    assert [s.latency_us for s in samples.worst_first()] == [60, 50, 40]
    assert samples.dropped == 3


def test_codec_round_trip_is_a_raw_snappy_block() -> None:
    report = {"schema": 1, "templates": [{"template": "SELECT é", "count": 3}]}
    data = encode(report)
    assert decode(data) == report
    assert json.loads(snappy.uncompress(data)) == report  # what Go's snappy.Decode reads


@pytest.mark.parametrize("data", [b"", b"\xff\xff\xff\xff\xff\xff", b"\x05abc", b"\x03abc"])
def test_codec_rejects_garbage(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


def test_codec_refuses_oversized_messages_before_inflating() -> None:
    data = encode({"blob": "x" * 100_000})
    with pytest.raises(CodecError, match="exceeds"):
        decode(data, max_size=1000)


def test_quantiles_are_clamped_into_min_and_max() -> None:
    stats = TemplateStats("10.0.0.1:3306", "shop", "00000000000000aa", "SELECT ?")
    stats.latency_min = stats.latency_max = 1000
    stats.count = 500
    for _ in range(500):
        stats.sketch.add(1000)
    raw = stats.sketch.quantile(0.5)
    assert raw is not None and raw != 1000  # the sketch alone answers ~1% off
    latency = stats.to_json()["latency_us"]
    assert latency["p50"] == latency["p95"] == latency["p99"] == latency["p999"] == 1000
    stats.latency_max = 2000
    stats.sketch.add(2000)
    assert all(1000 <= q <= 2000 for q in stats.quantiles() if q is not None)
