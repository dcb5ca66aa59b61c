"""/api/history/* of a real master process over a store filled beforehand, and
``mysqlprobe history top`` on the same state directory: answers, and bad input as 400s
with reasons (HTTP) or one line and exit 2 (CLI)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.history import HistoryStore, open_database
from message.report import TemplateStats
from tests.support.nodes import ROOT, Node

S = 10**9


def fill(path: Path, now_ns: int) -> dict[str, TemplateStats]:
    """Twenty minutes of 10 s intervals of three templates, ending a minute ago."""
    rng = random.Random(4)
    store = HistoryStore(open_database("", path))
    whole: dict[str, TemplateStats] = {}
    start0 = now_ns - 21 * 60 * S
    for i in range(120):
        start = start0 + i * 10 * S
        rows = []
        for k in range(3):
            stats = TemplateStats("127.0.0.1:3306", "shop", f"{k + 1:016x}", f"SELECT c{k} FROM t WHERE id = ?")
            for _ in range(rng.randint(1, 9 * (k + 1))):
                value = int(rng.lognormvariate(5 + k, 0.5)) + 1
                stats.count += 1
                stats.commands["Query"] = stats.count
                stats.latency_sum += value
                stats.latency_min = value if stats.count == 1 else min(stats.latency_min, value)
                stats.latency_max = max(stats.latency_max, value)
                stats.sketch.add(value)
            stats.first_seen_ns, stats.last_seen_ns = start, start + 9 * S
            rows.append(stats)
            whole.setdefault(stats.key, TemplateStats(stats.server, stats.db, stats.key, "")).merge(stats)
        store.write("filler", start, rows, start + 10 * S)
    store.db.close()
    return whole


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Path, dict[str, TemplateStats]]]:
    directory = tmp_path_factory.mktemp("history-api")
    state = directory / "state"
    state.mkdir()
    whole = fill(state / "history.sqlite3", time.time_ns())
    node = Node(directory, {"slave": False, "interval": 1, "statedir": str(state)}, "m").start()
    try:
        yield node, state, whole
    finally:
        node.stop()


def get(node: Node, path: str, **params: Any) -> tuple[int, Any]:
    return node.request(f"{path}?{urllib.parse.urlencode(params)}")


def test_top_series_and_template_answer_from_history(master: tuple[Node, Path, dict[str, TemplateStats]]) -> None:
    node, _, whole = master
    status, answer = get(node, "/api/history/top", **{"from": "-30m", "order": "calls", "limit": "2"})
    assert status == 200, answer
    assert answer["templates_total"] == 3 and len(answer["templates"]) == 2
    assert not answer["complete"] and "history begins at" in answer["note"]  # 21 minutes ago, the range 30
    for entry in answer["templates"]:
        expected = whole[entry["key"]]
        assert entry["count"] == expected.count
        assert entry["latency_us"]["p99"] == expected.quantiles((0.99,))[0]
        assert entry["template"].startswith("SELECT c")
    assert [e["count"] for e in answer["templates"]] == sorted((t.count for t in whole.values()), reverse=True)[:2]

    key = f"{3:016x}"
    status, series = get(node, "/api/history/series", key=key, **{"from": "-25m", "to": "now", "step": "5m"})
    assert status == 200, series
    assert len(series["points"]) == 5 and sum(p["count"] for p in series["points"]) == whole[key].count
    status, template = get(node, "/api/history/template", key=key)
    assert status == 200 and template["template"] == "SELECT c2 FROM t WHERE id = ?"
    assert template["first_seen_ns"] < template["last_seen_ns"]

    status, body = node.request("/status")
    assert body["history"]["backend"] == "sqlite" and body["history"]["write_errors"] == 0


@pytest.mark.parametrize(
    ("path", "params", "status", "reason"),
    [
        ("/api/history/top", {}, 400, "from: expected a time"),
        ("/api/history/top", {"from": "yesterday"}, 400, "from: 'yesterday' is not a time"),
        ("/api/history/top", {"from": "-1h", "to": "-2h"}, 400, "from must be before to"),
        ("/api/history/top", {"from": "-1h", "order": "slowest"}, 400, "order: expected one of load, calls"),
        ("/api/history/top", {"from": "-1h", "limit": "ten"}, 400, "limit: expected a whole number"),
        ("/api/history/top", {"from": "-1h", "limit": "0"}, 400, "limit: must be at least 1"),
        ("/api/history/series", {"from": "-1h"}, 400, "key: expected a template key"),
        ("/api/history/series", {"key": "ab", "from": "-1h", "step": "-5"}, 400, "step: expected a positive"),
        ("/api/history/series", {"key": "ab", "from": "-1h", "step": "5x"}, 400, "step: expected a duration"),
        ("/api/history/series", {"key": "ab", "from": "-30d", "step": "10s"}, 400, "points over this range"),
        ("/api/history/template", {}, 400, "key: expected a template key"),
        ("/api/history/template", {"key": "ffffffffffffffff"}, 404, "no template with key"),
    ],
)
def test_bad_requests_say_why(
    master: tuple[Node, Path, dict[str, TemplateStats]], path: str, params: dict[str, str], status: int, reason: str
) -> None:
    node, _, _ = master
    got, body = get(node, path, **params)
    assert got == status and reason in body["error"], body


def test_history_off_is_a_404_with_the_reason(tmp_path: Path) -> None:
    node = Node(tmp_path, {"slave": False, "interval": 1, "history": {"mode": "off"}}, "off").start()
    try:
        status, body = get(node, "/api/history/top", **{"from": "-1h"})
    finally:
        node.stop()
    assert status == 404 and "history.mode is off" in body["error"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mysqlprobe.cli", "history", "top", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_prints_the_same_answer_as_the_replay_table(master: tuple[Node, Path, dict[str, TemplateStats]]) -> None:
    _, state, whole = master
    result = run_cli("--state", str(state), "--from=-30m", "--to", "now", "--order", "calls")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# mysqlprobe history from ") and "ordered by calls" in lines[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("Rank"))
    ranked = sorted(whole.values(), key=lambda t: -t.count)
    for offset, stats in enumerate(ranked, 1):
        columns = lines[header + 1 + offset].split()
        assert columns[:3] == [str(offset), stats.key, f"{stats.count:,}"]
    assert "SELECT c" in result.stdout
    json_result = run_cli("--state", str(state), "--from=-30m", "--format", "json")
    assert json_result.returncode == 0 and '"templates_total":3' in json_result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--state", "/nonexistent", "--from=-1h"), "no history in /nonexistent"),
        (("--state", "/tmp", "--from", "soon"), "'soon' is not a time"),
        (("--state", "/tmp", "--from=-1h", "--to=-2h"), "--from must be before --to"),
        (("--dsn", "host=127.0.0.1 port=1 user=nobody dbname=none", "--from=-1h"), "cannot connect"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
