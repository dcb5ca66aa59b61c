"""/metrics: a live slave scraped under a real workload and checked against its reports, the
exposition checked by promtool and by prometheus_client's parser; the top-N bound."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from message.report import TemplateStats
from mysqlprobe.prometheus import LATENCY_BUCKETS_S, NodeMetrics
from tests.support import workload
from tests.support.mariadb import MariaDB, free_port
from tests.support.nodes import Collector, Node
from tests.support.prom import Samples, parse, scrape, series


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/test.sh installs Debian's prometheus package"
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def synthetic_report(seq: int, loads: dict[str, int], rng: random.Random) -> dict[str, Any]:
    templates = []
    for key, calls in loads.items():
        stats = TemplateStats("10.0.0.1:3306", "app", key, f"SELECT * FROM t{key} WHERE id = ?")
        for _ in range(calls):
            latency = rng.randint(50, 50_000)
            stats.count += 1
            stats.commands["Query"] = stats.commands.get("Query", 0) + 1
            stats.latency_sum += latency
            stats.sketch.add(latency)
            stats.rows_sent += 1
        templates.append(stats.to_json())
    return {"seq": seq, "templates": templates, "capture": {"packets": 10}, "totals": {"queries": 1}}


def test_top_n_bounds_series_and_counters_never_go_back() -> None:
    rng = random.Random(3)
    metrics = NodeMetrics(
        topn=3, template_length=20, status=lambda: {"role": "slave"}, version="0", git_hash="x", queue_depths=None
    )
    previous: Samples = {}
    gone: dict[str, float] = {}
    total_calls = 0
    for seq in range(1, 13):
        # The hot set moves: templates 0-4 early, 5-9 late; 10 templates, 3 series.
        hot = range(5) if seq <= 6 else range(5, 10)
        loads = {f"{k:016x}": (40 if k in hot else 2) + k for k in range(10)}
        total_calls += sum(loads.values())
        metrics.observe(synthetic_report(seq, loads, rng))
        text = metrics.exposition()[0].decode()
        samples = parse(text)
        keys = {dict(ls)["key"] for (n, ls) in samples if n == "mysqlprobe_statements_total"}
        assert len(keys) <= 4 and "other" in keys
        for (name, labels), value in previous.items():
            if name.endswith(("_total", "_bucket", "_count")):
                if (name, labels) in samples:
                    assert samples[(name, labels)] >= value, (name, labels)
                else:  # evicted: its series stops; what it counted stays counted
                    gone[name] = gone.get(name, 0) + value
        # Every call is counted once: in a live series, in "other", or in an evicted series.
        for name in ("mysqlprobe_statements_total", "mysqlprobe_statement_latency_seconds_count"):
            assert sum(v for (n, _), v in samples.items() if n == name) + gone.get(name, 0) == total_calls
        previous = samples
    late = {f"{k:016x}" for k in range(5, 10)}  # the hot set took over every series
    members = keys - {"other"}
    assert len(members) == 3 and members <= late
    infos = [dict(ls) for (n, ls) in samples if n == "mysqlprobe_template_info"]
    assert {i["key"] for i in infos} == members and all(len(i["template"]) <= 20 for i in infos)
    assert series(samples, "mysqlprobe_template_series_evicted_total") >= 3
    promtool_check(text)


@pytest.fixture(scope="module")
def server() -> Iterator[MariaDB]:
    yield from workload.schema_server()


def run_statements(server: MariaDB) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", database=workload.DB, autocommit=True)
    with conn.cursor() as cur:
        for i in range(60):
            cur.execute(f"SELECT id, name FROM items WHERE id BETWEEN {i} AND {i + 5}")
            cur.fetchall()
            cur.execute(f"UPDATE items SET qty = qty + 1 WHERE id = {i + 1}")
            cur.execute(f"SELECT COUNT(*) FROM items WHERE note LIKE '%{i}%'")  # no index
            cur.fetchall()
        for _ in range(4):
            with pytest.raises(pymysql.err.ProgrammingError):
                cur.execute("SELECT * FROM no_such_table WHERE id = 1")
    conn.close()
    workload.text_workload(server, rounds=10)


@pytest.mark.mariadb
@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_live_slave_metrics_match_its_reports(server: MariaDB, tmp_path: Path) -> None:
    config = {
        "interval": 1,
        "probe": {"device": "lo", "port": server.port, "workers": 2},
        "prometheus": {"topn": 100, "templatelength": 40},  # room for every template: exact sums
    }
    node = Node(tmp_path, config, name="promslave").start()
    collector = Collector(f"ws://127.0.0.1:{node.port}/collector")
    try:
        run_statements(server)
        # Wait for the workload's last statements to be reported, then scrape.
        collector.wait_for(lambda c: len(c.reports) >= 3 and c.reports[-1]["totals"]["queries"] == 0, timeout=60)
        text = scrape(node)
        samples = parse(text)
        published = int(series(samples, "mysqlprobe_reports_total"))
        collector.wait_for(lambda c: c.reports and c.reports[-1]["seq"] >= published, timeout=30)
        reports = [r for r in collector.reports if r["seq"] <= published]
        assert [r["seq"] for r in reports] == list(range(1, published + 1)), "the subscriber missed a report"
    finally:
        collector.close()
        node.stop()
    promtool_check(text)

    merged: dict[tuple[str, str, str], TemplateStats] = {}
    for report in reports:
        for entry in report["templates"]:
            stats = TemplateStats.from_json(entry)
            ident = (stats.server, stats.db, stats.key)  # series sum a template's users
            merged.setdefault(ident, TemplateStats(*ident, stats.template)).merge(stats)
    # Every template has its series (none evicted: the top-N bound is test_top_n_...), nothing in "other".
    assert series(samples, "mysqlprobe_template_series_evicted_total") == 0
    assert series(samples, "mysqlprobe_statements_total", key="other") == 0
    assert sum(v for (n, _), v in samples.items() if n == "mysqlprobe_statements_total") == sum(
        s.count for s in merged.values()
    )
    members = [dict(ls) for (n, ls) in samples if n == "mysqlprobe_statements_total" and dict(ls)["key"] != "other"]
    assert {(m["server"], m["db"], m["key"]) for m in members} == set(merged)
    # Each series equals the sum of the reports.
    checked = 0
    for labels in members:
        stats = merged[(labels["server"], labels["db"], labels["key"])]
        ls = {k: labels[k] for k in ("server", "db", "key")}
        assert series(samples, "mysqlprobe_statements_total", **ls) == stats.count
        assert series(samples, "mysqlprobe_statement_errors_total", **ls) == stats.error_count
        assert series(samples, "mysqlprobe_statement_rows_sent_total", **ls) == stats.rows_sent
        assert series(samples, "mysqlprobe_statement_rows_affected_total", **ls) == stats.rows_affected
        assert series(samples, "mysqlprobe_statement_no_index_used_total", **ls) == stats.no_index_used
        assert series(samples, "mysqlprobe_statement_seconds_total", **ls) == pytest.approx(stats.latency_sum / 1e6)
        assert series(samples, "mysqlprobe_statement_latency_seconds_count", **ls) == stats.count
        assert series(samples, "mysqlprobe_statement_latency_seconds_bucket", le="+Inf", **ls) == stats.count
        # The histogram is the sketch re-binned: the bucket where half the calls are reached
        # holds the sketch's median (1% relative accuracy at the boundary).
        median = stats.sketch.quantile(0.5)
        assert median is not None
        for bound in LATENCY_BUCKETS_S:
            below = series(samples, "mysqlprobe_statement_latency_seconds_bucket", le=repr(bound), **ls)
            if below >= stats.count / 2:
                assert median / 1e6 <= bound * 1.01
                break
            assert median / 1e6 >= bound * 0.99
        info = series(samples, "mysqlprobe_template_info", template=_cut(stats.template, 40), **ls)
        assert info == 1
        checked += 1
    assert checked == len(merged) > 10
    errors = sum(s.error_count for s in merged.values())
    assert errors >= 4
    assert series(samples, "mysqlprobe_error_codes_total", code="1146") == sum(
        s.errors.get("1146", 0) for s in merged.values()
    )
    assert sum(s.no_index_used for s in merged.values()) >= 60
    # Node health agrees with the reports and with /status.
    for name in ("packets", "bytes", "dropped_kernel", "gaps"):
        assert series(samples, f"mysqlprobe_capture_{name}_total") == sum(r["capture"].get(name, 0) for r in reports)
    # A request and its response are two packets at least.
    assert series(samples, "mysqlprobe_capture_packets_total") >= 2 * sum(r["totals"]["commands"] for r in reports)
    assert series(samples, "mysqlprobe_queries_total") == sum(r["totals"]["queries"] for r in reports)
    assert series(samples, "mysqlprobe_coverage_ratio") == reports[-1]["totals"]["coverage"]
    assert series(samples, "mysqlprobe_role", role="slave") == 1
    assert series(samples, "mysqlprobe_workers_alive") == 2
    assert series(samples, "mysqlprobe_workers_restarted_total") == 0
    assert series(samples, "mysqlprobe_subscribers") == 1
    assert series(samples, "mysqlprobe_reports_published_total") >= published
    assert series(samples, "mysqlprobe_reports_spooled") >= 1  # no master acknowledges them
    assert series(samples, "mysqlprobe_build_info", version=__import__("mysqlprobe").__version__) == 1
    assert series(samples, "mysqlprobe_queue_depth", queue="collector") >= 0


def _cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def test_scrape_costs_little(tmp_path: Path) -> None:
    """A scrape renders from accumulated counters: 100 series in well under a second."""
    rng = random.Random(5)
    metrics = NodeMetrics(topn=100, template_length=200, status=lambda: {}, version="0", git_hash="x")
    for seq in range(5):
        metrics.observe(synthetic_report(seq, {f"{k:016x}": 3 for k in range(300)}, rng))
    started = time.perf_counter()
    for _ in range(5):
        metrics.exposition()
    elapsed = (time.perf_counter() - started) / 5
    assert elapsed < 0.5, elapsed


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.mark.mariadb
@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_master_metrics_add_up_the_slave(server: MariaDB, tmp_path: Path) -> None:
    slave = Node(tmp_path, {"interval": 1, "probe": {"device": "lo", "port": server.port, "workers": 1}}, "mslave")
    master = Node(tmp_path, {"interval": 1, "slave": False}, "pmaster")
    slave.start()
    master.start()
    try:
        status, _ = master.request(f"/cluster/join?addr=127.0.0.1:{slave.port}", "POST")
        assert status == 200
        run_statements(server)
        deadline = time.monotonic() + 60
        while True:  # quiet, every slave report merged, and the master published after that
            s, m = parse(scrape(slave)), parse(scrape(master))
            merged = series(m, "mysqlprobe_merge_merged_total")
            if (
                merged == series(s, "mysqlprobe_reports_total")
                and total(m, "mysqlprobe_statements_total") == total(s, "mysqlprobe_statements_total")
                # every statement of run_statements reported (184), not the first interval only
                and series(s, "mysqlprobe_queries_total") >= 184
                and series(s, "mysqlprobe_template_series") > 10
            ):
                break
            assert time.monotonic() < deadline, (merged, series(s, "mysqlprobe_reports_total"))
            time.sleep(0.5)
        text = scrape(master)
    finally:
        master.stop()
        slave.stop()
    promtool_check(text)
    m = parse(text)
    assert series(m, "mysqlprobe_role", role="master") == 1
    assert series(m, "mysqlprobe_slaves_connected") == 1
    assert series(m, "mysqlprobe_merge_duplicates_total") >= 0
    assert series(m, "mysqlprobe_template_series") == series(s, "mysqlprobe_template_series") > 10
    assert series(m, "mysqlprobe_template_series_evicted_total") == 0
    for name in ("mysqlprobe_statement_errors_total", "mysqlprobe_statement_rows_sent_total"):
        assert total(m, name) == total(s, name), name
    assert total(m, "mysqlprobe_statement_seconds_total") == pytest.approx(
        total(s, "mysqlprobe_statement_seconds_total")
    )
    assert series(m, "mysqlprobe_capture_packets_total") == series(s, "mysqlprobe_capture_packets_total")
    assert total(m, "mysqlprobe_merge_missing_intervals_total") == 0


def test_heartbeat_lag_missing_intervals_and_status_families() -> None:
    """What a master's report and /status body carry becomes the node-health families."""
    status = {
        "role": "master",
        "epoch": 7,
        "collector": {"subscribers": 2, "reports_published": 5, "spool": {"reports": 3}},
        "pusher": {"queued": 4, "pushed": 9, "acked": 5, "resent": 1, "overflowed": 0},
        "merge": {"merged": 11, "duplicates": 2, "rejected": 0},
        "subscriptions": [{"state": "connected"}, {"state": "dialling"}],
        "otlp": {"exported": 3, "failed": 1, "dropped": 0},
    }
    metrics = NodeMetrics(topn=10, template_length=50, status=lambda: status, version="9", git_hash="h")
    for seq, missing in ((1, 2), (2, 0), (3, 1)):
        metrics.observe(
            {
                "seq": seq,
                "templates": [],
                "capture": {"packets": 10, "capture_gap_ns": 500_000_000},
                "totals": {"queries": 1, "coverage": 0.5 + seq / 10},
                "heartbeat": {"db1:3306": {"lag_ms": 12.5 * seq, "stale": seq == 3}},
                "missing": [{"node": "s1", "seqs": [], "count": missing}],
            }
        )
    text = metrics.exposition()[0].decode()
    promtool_check(text)
    samples = parse(text)
    assert series(samples, "mysqlprobe_heartbeat_lag_seconds", server="db1:3306") == 0.0375
    assert series(samples, "mysqlprobe_heartbeat_stale", server="db1:3306") == 1
    assert series(samples, "mysqlprobe_merge_missing_intervals_total", slave="s1") == 3
    assert series(samples, "mysqlprobe_capture_packets_total") == 30
    assert series(samples, "mysqlprobe_capture_gap_seconds_total") == 1.5
    assert series(samples, "mysqlprobe_coverage_ratio") == 0.8
    assert series(samples, "mysqlprobe_role", role="master") == 1 and series(samples, "mysqlprobe_epoch") == 7
    assert series(samples, "mysqlprobe_reports_spooled") == 3 and series(samples, "mysqlprobe_push_queue") == 4
    assert series(samples, "mysqlprobe_push_acked_total") == 5
    assert series(samples, "mysqlprobe_merge_duplicates_total") == 2
    assert series(samples, "mysqlprobe_slaves_connected") == 1
    assert series(samples, "mysqlprobe_otlp_failed_total") == 1
    assert series(samples, "mysqlprobe_build_info", version="9", git_hash="h") == 1


@pytest.mark.mariadb
@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_a_real_prometheus_scrapes_a_node_with_a_token_as_the_readme_says(server: MariaDB, tmp_path: Path) -> None:
    """With ``token`` set, /metrics needs it (its _info series carry template texts): the
    scrape config of the README (``authorization: {credentials_file: ...}``, a Bearer token)
    is let in, a job without it gets the 401."""
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: scripts/test.sh installs Debian's prometheus package"
    token = "pr0m-t0ken"
    node = Node(
        tmp_path, {"interval": 1, "token": token, "probe": {"device": "lo", "port": server.port, "workers": 1}}, "tok"
    ).start()
    (tmp_path / "mysqlprobe.token").write_text(token)
    target = {"static_configs": [{"targets": [f"127.0.0.1:{node.port}"]}]}
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "with-token",
                        "authorization": {"credentials_file": str(tmp_path / "mysqlprobe.token")},
                        **target,
                    },
                    {"job_name": "without-token", **target},
                ],
            }
        )
    )
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def api(path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=10) as resp:
            return json.loads(resp.read())["data"]

    try:
        run_statements(server)
        deadline = time.monotonic() + 60
        targets: dict[str, Any] = {}
        infos: list[Any] = []
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                targets = {t["labels"]["job"]: t for t in api("targets")["activeTargets"]}
                infos = api("query?query=" + urllib.parse.quote('mysqlprobe_template_info{job="with-token"}'))["result"]
            except (OSError, KeyError):
                continue  # prometheus is starting
            if len(targets) == 2 and all(t["lastError"] or t["health"] == "up" for t in targets.values()) and infos:
                break
        assert targets["with-token"]["health"] == "up", targets
        assert targets["without-token"]["health"] == "down" and "401" in targets["without-token"]["lastError"]
        assert any("FROM items" in i["metric"]["template"] for i in infos), infos
        unauthenticated = api("query?query=" + urllib.parse.quote('mysqlprobe_template_info{job="without-token"}'))
        assert unauthenticated["result"] == []
    finally:
        proc.terminate()
        proc.wait(30)
        node.stop()
