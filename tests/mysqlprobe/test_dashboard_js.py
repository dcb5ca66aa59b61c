"""The dashboard's own decoder and sketch arithmetic, run in Node against the Python side:
the snappy blocks python-snappy writes (what /collector sends) and the quantiles
``message.sketch`` computes, so the browser shows the numbers the report has."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import snappy

from message import LatencySketch, encode
from message.report import merge_totals
from tests.support.browser import ROOT

UNIT = ROOT / "tests" / "browser" / "unit.mjs"


def run_node(cases: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is not installed (scripts/test.sh installs it)"
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    result = subprocess.run([node, str(UNIT), str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_snappy_decoder_reads_what_python_snappy_writes(tmp_path: Path) -> None:
    rng = random.Random(7)
    report = {"templates": [{"key": f"{i:016x}", "template": "SELECT c FROM t WHERE id = ?" * 3} for i in range(500)]}
    plains = [
        b"",
        b"x",
        bytes(rng.randrange(256) for _ in range(100_000)),  # incompressible: long literals
        b"abcd" * 50_000,  # long overlapping copies
        bytes(rng.choice(b"ab") for _ in range(70_000)),  # short copies, 1-byte offsets
        json.dumps(report).encode(),
        "é€😀 ünïcode".encode() * 1000,
    ]
    blocks = [bytes(snappy.compress(p)) for p in plains]
    blocks.append(encode(report))  # exactly a /collector message
    plains.append(snappy.uncompress(blocks[-1]))
    bad = [blocks[5][: len(blocks[5]) // 2], b"\xff\xff\xff\xff\xff\xff", blocks[3][:1] + b"\x05\xff\xff"]
    cases = {"snappy": [{"block": base64.b64encode(b).decode()} for b in blocks + bad], "quantiles": []}
    out = run_node(cases, tmp_path)["snappy"]
    for plain, answer in zip(plains, out, strict=False):
        assert base64.b64decode(answer["ok"]) == plain
    for answer in out[len(plains) :]:
        assert "error" in answer and answer["error"].startswith("snappy:")


def test_quantiles_from_merged_buckets_equal_the_python_sketch(tmp_path: Path) -> None:
    rng = random.Random(11)
    cases: dict[str, Any] = {"snappy": [], "quantiles": []}
    expected = []
    qs = [0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
    for size in (1, 2, 10, 1000, 20_000):
        whole = LatencySketch()
        parts = [LatencySketch() for _ in range(3)]
        for i in range(size):
            value = 0 if rng.random() < 0.02 else int(rng.lognormvariate(7, 1.5))
            whole.add(value)
            parts[i % 3].add(value)
        cases["quantiles"].append({"parts": [p.to_json() for p in parts], "qs": qs})
        expected.append(whole.quantiles(tuple(qs)))
    out = run_node(cases, tmp_path)["quantiles"]
    for ours, theirs in zip(out, expected, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert (a is None and b is None) or abs(a - b) <= 1e-9 * max(1.0, b), (ours, theirs)


def test_model_merges_reports_once_and_sums_counts(tmp_path: Path) -> None:
    def entry(key: str, count: int, values: list[int], errors: dict[str, int]) -> dict[str, Any]:
        sketch = LatencySketch()
        for v in values:
            sketch.add(v)
        return {
            "key": key,
            "server": "127.0.0.1:3306",
            "db": "shop",
            "template": f"SELECT {key}",
            "count": count,
            "commands": {"Query": count},
            "errors": errors,
            "latency_us": {"sum": sum(values), "min": min(values), "max": max(values), "sketch": sketch.to_json()},
            "rows_sent": count,
            "first_seen_ns": 1,
            "last_seen_ns": 2,
        }

    second = 10**9
    reports = []
    for seq in range(1, 6):
        start = 1_700_000_000 * second + seq * 10 * second
        reports.append(
            {
                "kind": "interval",
                "node": "n1",
                "seq": seq,
                "interval": {"start_ns": start, "end_ns": start + 10 * second},
                "templates": [entry("a" * 16, 3, [100, 200, 300], {}), entry("b" * 16, 1, [5000], {"1146": 1})],
                "totals": {"commands": 4, "incomplete": seq % 2, "responses_lost": 1, "unread_exchanges": seq},
                "capture": {"packets": 10},
                "slow": [],
            }
        )
    reports.append(reports[2])  # a duplicate (same node and seq) is merged once
    out = run_node({"snappy": [], "quantiles": [], "reports": reports, "window_s": 300}, tmp_path)["model"]
    assert out["accepted"] == [True] * 5 + [False]
    rows = {r["key"]: r for r in out["rows"]}
    assert rows["a" * 16]["count"] == 15 and rows["b" * 16]["count"] == 5 and rows["b" * 16]["errors"] == 5
    whole = LatencySketch()
    for _ in range(5):
        for v in (100, 200, 300):
            whole.add(v)
    # The sketch's estimate, clamped into [min, max] as the report's quantiles are.
    assert abs(rows["a" * 16]["p99"] - min(max(whole.quantile(0.99) or 0, 100), 300)) < 1e-6
    assert rows["b" * 16]["p99"] == 5000  # one value: the estimate is clamped onto it
    assert abs(rows["b" * 16]["share"] - 25000 / (25000 + 3000)) < 1e-9
    # Sparklines span the whole window (60 slots of 10 s here): the five reports are the last
    # five slots, the slots before them are empty (no report), not zero.
    # Coverage over the window is the report's rule over the summed totals.
    merged: dict[str, Any] = {}
    for report in reports[:5]:
        merge_totals(merged, report["totals"])
    assert out["health"]["windowCoverage"] == pytest.approx(merged["coverage"], abs=1e-6)
    series = out["series"]["a" * 16]
    assert len(series) == 60 and series[:55] == [None] * 55 and series[55:] == [0.3] * 5


def test_frames_leaving_the_window_are_subtracted_exactly(tmp_path: Path) -> None:
    rng = random.Random(5)
    second = 10**9
    reports = []
    for seq in range(1, 16):
        start = 1_700_000_000 * second + seq * 10 * second
        entries = []
        for t in rng.sample(range(6), rng.randrange(1, 6)):
            sketch = LatencySketch()
            values = [int(rng.lognormvariate(7 + t / 2, 1)) for _ in range(rng.randrange(1, 40))]
            for v in values:
                sketch.add(v)
            errors = {"1213": rng.randrange(1, 3)} if rng.random() < 0.3 else {}
            entries.append(
                {
                    "key": f"{t:016x}",
                    "server": "127.0.0.1:3306",
                    "db": "shop",
                    "count": len(values),
                    "commands": {"Query": len(values)},
                    "errors": errors,
                    "latency_us": {
                        "sum": sum(values),
                        "min": min(values),
                        "max": max(values),
                        "sketch": sketch.to_json(),
                    },
                    "rows_sent": len(values) * 2,
                    "first_seen_ns": start + rng.randrange(10**9),
                    "last_seen_ns": start + 9 * 10**9 + rng.randrange(10**9),
                    "slaves": {f"s{seq % 3}": {"count": len(values), "latency_us_sum": sum(values), "errors": 0}},
                }
            )
        reports.append(
            {
                "kind": "interval",
                "node": "m",
                "seq": seq,
                "interval": {"start_ns": start, "end_ns": start + 10 * second},
                "templates": entries,
                "totals": {"commands": sum(e["count"] for e in entries), "responses_lost": seq % 2},
                "capture": {"packets": 100 + seq},
                "slow": [],
            }
        )
    out = run_node({"snappy": [], "quantiles": [], "eviction": {"window_s": 60, "reports": reports}}, tmp_path)
    result = out["eviction"]
    assert result["kept"] == list(range(10, 16)) and result["frames"] == 6  # 9 frames left the window
    assert result["incremental"] == result["fresh"]
    assert result["health"][0] == result["health"][1]
