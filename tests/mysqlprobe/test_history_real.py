"""Query history with real processes: a slave capturing a real MariaDB on lo, a master
keeping history (SQLite in its state directory, or a throw-away PostgreSQL database), a
workload across many intervals and a master killed with SIGKILL and restarted.

Over the whole run, the history's counts per template equal performance_schema's; the p99
over the range, from merged rows, equals the p99 of the whole run's merged sketch (the
master's cumulative totals) and differs from the average of the per-interval p99s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from cluster.history import HistoryStore, open_database
from cluster.history.codec import decode_sketch
from message.sketch import LatencySketch
from tests.cluster.test_resume_real import Background, wait_settled
from tests.support import workload
from tests.support.mariadb import MariaDB
from tests.support.nodes import ROOT, Node
from tests.support.postgres import throwaway_database

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))

SLEEP_TEMPLATE = "SELECT SLEEP(?)"
TAG_TEMPLATE = "SELECT ? AS tag"  # run by root and by a second account


@pytest.fixture()
def server() -> Iterator[MariaDB]:
    yield from workload.schema_server()


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""
    else:
        with throwaway_database() as name:
            yield name


def history_counts(answer: dict[str, Any]) -> dict[str, list[int]]:
    """Per key: [statements, errors] of the shop database, as the accounting gives them."""
    out: dict[str, list[int]] = {}
    for entry in answer["templates"]:
        queries = entry["commands"].get("Query", 0)
        if entry["db"] == workload.DB and queries:
            # a template's entries of several users (or of an unknown one) add up
            have = out.setdefault(entry["key"], [0, 0])
            have[0] += queries
            have[1] += sum(entry["errors"].values())
    return out


def top(master: Node, start_s: float) -> dict[str, Any]:
    query = urllib.parse.urlencode({"from": f"{start_s:.3f}", "to": "now", "order": "calls", "limit": "1000"})
    status, answer = master.request(f"/api/history/top?{query}")
    assert status == 200, answer
    return answer


def test_history_over_a_run_with_a_master_restart(server: MariaDB, dsn: str, tmp_path: Path) -> None:
    run_start_s = time.time() - 1
    slave = Node(
        tmp_path,
        {"interval": 1, "probe": {"device": "lo", "port": server.port, "workers": 1}, "history": {"mode": "off"}},
        "s",
    ).start()
    state = tmp_path / "m.state"
    master = Node(
        tmp_path, {"slave": False, "interval": 1, "statedir": str(state), "history": {"dsn": dsn}}, "m"
    ).start()
    accounting = workload.Accounting(server)
    try:
        assert master.request(f"/cluster/join?addr=127.0.0.1:{slave.port}")[0] == 200
        time.sleep(2)
        server.query("CREATE USER IF NOT EXISTS 'reporter'@'127.0.0.1' IDENTIFIED BY 'pw'")
        server.query(f"GRANT SELECT ON {workload.DB}.* TO 'reporter'@'127.0.0.1'")
        accounting.reset()
        sleeper = pymysql.connect(host="127.0.0.1", port=server.port, user="root", database=workload.DB)
        reporter = pymysql.connect(
            host="127.0.0.1", port=server.port, user="reporter", password="pw", database=workload.DB
        )
        with Background(server), sleeper.cursor() as cur, reporter.cursor() as other:
            for second in range(10):
                for _ in range(3):
                    cur.execute("SELECT 1 AS tag")
                for _ in range(2):
                    other.execute("SELECT 2 AS tag")
                # SELECT SLEEP(?) is fast in every interval but one, where 10 of its calls
                # take 60 ms: 2% of the run's calls, so they set the run's p99.
                for _ in range(50):
                    cur.execute("SELECT SLEEP(0)")
                if second == 6:
                    for _ in range(10):
                        cur.execute("SELECT SLEEP(0.06)")
                if second == 3:
                    master.stop(signal.SIGKILL)
                    time.sleep(1.0)
                    master.start()
                time.sleep(1.0)
        sleeper.close()
        reporter.close()
        totals = wait_settled(slave, master)
        expected = accounting.expectations(schema=workload.DB)
        assert expected and len(expected) >= 8
        deadline = time.monotonic() + 30
        while history_counts(answer := top(master, run_start_s)) != expected and time.monotonic() < deadline:
            time.sleep(1.0)
        assert history_counts(answer) == expected
        status = master.get("/status")["history"]
        assert status["write_errors"] == 0 and status["writes"] > 3

        # p99 over the run from merged rows == p99 of the run's merged sketch.
        (entry,) = [e for e in answer["templates"] if e["template"] == SLEEP_TEMPLATE]
        (cumulative,) = [t for t in totals["templates"] if t["key"] == entry["key"] and t["user"] == "root"]
        run_sketch = LatencySketch.from_json(cumulative["latency_us"]["sketch"])
        assert entry["count"] == run_sketch.count == 510
        assert entry["latency_us"]["p99"] == cumulative["latency_us"]["p99"]
        run_p99 = run_sketch.quantile(0.99)
        assert run_p99 is not None and abs(entry["latency_us"]["p99"] - run_p99) <= 0.02 * run_p99
        assert entry["latency_us"]["p99"] > 50_000  # the slow burst is the run's tail
        # ... and not the average of the per-interval p99s (what averaging rollups would give).
        db = open_database(dsn, state / "history.sqlite3")
        try:
            # The rows' sketches add up to exactly the run's sketch, bucket by bucket.
            (from_rows,) = HistoryStore(db).merged(int(run_start_s * 1e9), time.time_ns(), key=entry["key"]).values()
            assert from_rows.sketch == run_sketch
            rows = db.query(
                "SELECT r.sketch FROM history_rows r JOIN history_series s ON s.id = r.series"
                " WHERE r.level = 0 AND s.key = ?",
                (entry["key"],),
            )
        finally:
            db.close()
        per_interval = [decode_sketch(bytes(row[0])).quantile(0.99) or 0.0 for row in rows]
        assert len(per_interval) >= 8
        averaged = sum(per_interval) / len(per_interval)
        assert averaged < entry["latency_us"]["p99"] / 2, (averaged, entry["latency_us"]["p99"])

        # Reports keep a template per account: user= answers for one of them, and the
        # server's own per-account accounting agrees.
        (both,) = [e for e in answer["templates"] if e["template"] == TAG_TEMPLATE]
        assert both["count"] == 50
        by_user = {}
        for user in ("root", "reporter"):
            query = urllib.parse.urlencode({"from": f"{run_start_s:.3f}", "user": user, "limit": "1000"})
            status, by_user[user] = master.request(f"/api/history/top?{query}")
            assert status == 200, by_user[user]
        assert [e["count"] for e in by_user["root"]["templates"] if e["template"] == TAG_TEMPLATE] == [30]
        assert [e["count"] for e in by_user["reporter"]["templates"] if e["template"] == TAG_TEMPLATE] == [20]
        ((server_says,),) = server.query(
            "SELECT SUM(COUNT_STAR) FROM performance_schema.events_statements_summary_by_user_by_event_name"
            " WHERE USER = 'reporter' AND EVENT_NAME LIKE 'statement/sql/%'"
        )
        assert sum(e["commands"].get("Query", 0) for e in by_user["reporter"]["templates"]) == int(server_says)

        # The command line gives the same answer.
        where = ["--dsn", dsn] if dsn else ["--state", str(state)]
        options = [f"--from={run_start_s:.3f}", "--order", "calls", "--top", "1000", "--format", "json"]
        cli = subprocess.run(
            [sys.executable, "-m", "mysqlprobe.cli", "history", "top", *where, *options],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert history_counts(json.loads(cli.stdout)) == expected
    finally:
        accounting.close()
        master.stop()
        slave.stop()
