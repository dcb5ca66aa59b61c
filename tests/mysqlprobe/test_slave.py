"""A live slave as a real process on lo: reports over /collector against performance_schema,
the process list watcher, runtime configuration, worker restarts and slow subscribers."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml
from jsonschema import Draft202012Validator

from message import report_schema
from tests.support import workload
from tests.support.mariadb import MariaDB, free_port
from tests.support.nodes import ROOT, Collector, Node

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))


@pytest.fixture(scope="module")
def server() -> Iterator[MariaDB]:
    yield from workload.schema_server()


def slave_config(server: MariaDB, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "interval": 1,
        "probe": {"device": "lo", "port": server.port, "workers": 2},
        "watcher": {"uname": "root", "refreshs": 1},
    }
    for key, value in extra.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    return config


def query_counts(reports: list[dict[str, Any]], db: str) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = {}
    for report in reports:
        for entry in report["templates"]:
            if entry["db"] != db:
                continue
            queries = entry["commands"].get("Query", 0)
            if queries:
                slot = counts.setdefault(entry["key"], [0, 0])
                slot[0] += queries
                slot[1] += sum(entry["errors"].values())
    return counts


def test_slave_reports_match_performance_schema(server: MariaDB, tmp_path: Path) -> None:
    # Connections opened before the slave starts: their handshake is never seen, so only
    # the process list watcher can tell their database.
    early = [server.connect(database=workload.DB, autocommit=True) for _ in range(3)]
    accounting = workload.Accounting(server)
    node = Node(tmp_path, slave_config(server)).start()
    collector = Collector(f"ws://127.0.0.1:{node.port}/collector")
    try:
        deadline = time.monotonic() + 30
        while node.get("/status")["watcher"]["refreshes"] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        accounting.reset()
        for i, conn in enumerate(early):
            with conn.cursor() as cur:
                for j in range(20):
                    cur.execute("SELECT name FROM items WHERE id = %s", (i * 20 + j + 1,))
                    cur.fetchall()
                cur.execute("UPDATE items SET qty = qty WHERE id < %s", (i + 2,))
        workload.text_workload(server, rounds=15)
        workload.prepared_workload(server, rounds=10)
        time.sleep(1.5)  # let the workload's last interval close
        expected = accounting.expectations(schema=workload.DB)
        seen = len(collector.reports)
        collector.wait_for(lambda c: len(c.reports) >= seen + 2)
    finally:
        collector.close()
        node.stop()
        for conn in early:
            conn.close()
        accounting.close()
    schema = report_schema()
    for report in collector.reports:
        Draft202012Validator(schema).validate(report)
        assert report["role"] == "slave" and report["kind"] == "interval"
    assert [r["seq"] for r in collector.reports] == sorted(r["seq"] for r in collector.reports)
    ours = query_counts(collector.reports, workload.DB)
    assert expected and ours == expected
    # Every template text reached this subscriber once, with the first report that had it.
    texts = {e["key"] for r in collector.reports for e in r["templates"] if "template" in e}
    assert {e["key"] for r in collector.reports for e in r["templates"]} <= texts
    capture = [r["capture"] for r in collector.reports]
    assert sum(c.get("dropped_kernel", 0) for c in capture) == 0
    assert sum(c.get("connections_midstream", 0) for c in capture) >= 3


def test_template_texts_for_late_subscribers_and_on_request(server: MariaDB, tmp_path: Path) -> None:
    node = Node(tmp_path, slave_config(server)).start()
    first = Collector(f"ws://127.0.0.1:{node.port}/collector")
    try:
        conn = server.connect(database=workload.DB, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SELECT qty FROM items WHERE id = 17")
            cur.fetchall()
        first.wait_for(
            lambda c: any("qty FROM items" in e.get("template", "") for r in c.reports for e in r["templates"])
        )
        key = next(e["key"] for r in first.reports for e in r["templates"] if "qty FROM items" in e.get("template", ""))
        late = Collector(f"ws://127.0.0.1:{node.port}/collector")
        with conn.cursor() as cur:
            cur.execute("SELECT qty FROM items WHERE id = 18")
            cur.fetchall()
        conn.close()
        late.wait_for(lambda c: any(e["key"] == key for r in c.reports for e in r["templates"]))
        entry = next(e for r in late.reports for e in r["templates"] if e["key"] == key)
        assert entry["template"] == "SELECT qty FROM items WHERE id = ?"  # sent to the late one too
        first.wait_for(lambda c: sum(e["key"] == key for r in c.reports for e in r["templates"]) >= 2)
        again = [e for r in first.reports for e in r["templates"] if e["key"] == key]
        assert "template" in again[0] and "template" not in again[-1]  # not sent twice
        first.send(json.dumps({"templates": [key, "ffffffffffffffff"]}))
        first.wait_for(lambda c: any(o.get("kind") == "templates" for o in c.other))
        answer = next(o for o in first.other if o.get("kind") == "templates")
        assert answer["templates"] == {key: "SELECT qty FROM items WHERE id = ?"}
        late.close()
    finally:
        first.close()
        node.stop()


def test_config_update_and_token(server: MariaDB, tmp_path: Path) -> None:
    node = Node(tmp_path, slave_config(server, token="s3cret")).start()
    collector = Collector(f"ws://127.0.0.1:{node.port}/collector?token=s3cret")
    try:
        status, body = node.request("/config/update?report_period_ms=500")
        assert status == 401 and "token" in body["error"]
        auth = {"Authorization": "Bearer s3cret"}
        for query, reason in [
            ("", "no setting given"),
            ("?report_period_ms=abc", "report_period_ms: expected a whole number"),
            ("?report_period_ms=5", "out of range"),
            ("?report_period_ms=", "expected a whole number"),
            ("?interval_s=3", "unknown setting 'interval_s'"),
            ("?slow_threshold_ms=-1", "out of range"),
        ]:
            status, body = node.request("/config/update" + query, headers=auth)
            assert status == 400, query
            assert reason in body["error"], (query, body)
        status, body = node.request("/config/update", method="DELETE", headers=auth)
        assert status == 405
        status, body = node.request(
            "/config/update",
            method="POST",
            data=b"report_period_ms=400",
            headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200 and body["accepted"] == {"report_period_ms": 400}
        collector.wait_for(lambda c: len(c.reports) >= 6, timeout=30)
        spans = [(r["interval"]["end_ns"] - r["interval"]["start_ns"]) / 1e6 for r in collector.reports[-3:]]
        assert all(300 < span < 700 for span in spans), spans
        assert node.get("/status")["settings"]["report_period_ms"] == 400
        status, body = node.request("/no/such/thing")
        assert status == 404 and "no such endpoint" in body["error"]
    finally:
        collector.close()
        node.stop()


def test_killed_worker_is_restarted(server: MariaDB, tmp_path: Path) -> None:
    node = Node(tmp_path, slave_config(server)).start()
    collector = Collector(f"ws://127.0.0.1:{node.port}/collector")
    try:
        victim = node.get("/status")["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        status = node.get("/status")
        while status["workers_restarted"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            status = node.get("/status")
        assert status["workers_restarted"] == 1
        assert all(w["alive"] for w in status["workers"]) and status["workers"][0]["pid"] != victim
        seen = len(collector.reports)
        conn = server.connect(database=workload.DB, autocommit=True)
        with conn.cursor() as cur:
            for i in range(30):
                cur.execute("SELECT price FROM items WHERE id = %s", (i + 1,))
                cur.fetchall()
        conn.close()
        collector.wait_for(
            lambda c: (
                sum(
                    e["count"]
                    for r in c.reports[seen:]
                    for e in r["templates"]
                    if "price FROM items" in e.get("template", "") or e["key"] == ""
                )
                >= 0
                and len(c.reports) >= seen + 3
            )
        )
        counted = sum(
            e["commands"].get("Query", 0)
            for r in collector.reports[seen:]
            for e in r["templates"]
            if e["db"] == workload.DB and e["key"] == _key("SELECT price FROM items WHERE id = ?")
        )
        assert counted == 30
        assert collector.reports[-1]["capture"]["workers_restarted"] == 1
    finally:
        collector.close()
        node.stop()


def _key(template: str) -> str:
    import hashlib

    return hashlib.md5(template.encode()).hexdigest()[:16]


def test_subscriber_that_never_reads_is_dropped(server: MariaDB, tmp_path: Path) -> None:
    node = Node(
        tmp_path,
        # Bounds loose enough that the reading subscriber keeps up on a busy machine, tight enough
        # that the stalled one (4 KiB receive buffer, never reads) is dropped within seconds.
        slave_config(server, interval=1, websocket={"maxqueue": 4, "writetimeoutms": 2000}),
    ).start()
    stalled = socket.create_connection(("127.0.0.1", node.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(
        b"GET /collector HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    reader = Collector(f"ws://127.0.0.1:{node.port}/collector")
    try:
        conn = server.connect(database=workload.DB, autocommit=True)
        deadline = time.monotonic() + 60
        status = node.get("/status")
        i = 0
        rng = random.Random(5)
        while status["collector"]["subscribers_dropped"] < 1 and time.monotonic() < deadline:
            with conn.cursor() as cur:
                # Distinct templates with long random aliases: large reports snappy cannot
                # shrink, so the stalled peer's socket buffers fill within seconds.
                for _ in range(40):
                    i += 1
                    alias = "".join(rng.choice(string.ascii_letters) for _ in range(60))
                    columns = ", ".join(f"{j} AS {alias}{j}" for j in range(40))
                    cur.execute(f"SELECT {columns} FROM items WHERE id = {i % 50 + 1}")
                    cur.fetchall()
            status = node.get("/status")
        conn.close()
        assert status["collector"]["subscribers_dropped"] == 1
        assert status["collector"]["subscribers"] == 1  # the reading one is still served
        seen = len(reader.reports)
        reader.wait_for(lambda c: len(c.reports) > seen)
    finally:
        stalled.close()
        reader.close()
        node.stop()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"probe": {"devcie": "lo"}}, "unknown key 'probe.devcie'"),
        ({"probe": {"port": "3306"}}, "probe.port: expected an integer"),
        ({"slave": "yes"}, "slave: expected a boolean"),
        ({"interval": True}, "interval: expected an integer"),
        ({"pusher": {"servers": "a:1"}}, "pusher.servers: expected a list of strings"),
        ({"pusher": {"servers": ["nohost"]}}, "pusher.servers[0]: expected HOST:PORT"),
        ({"probe": {"device": "no-such-nic0"}}, "cannot capture"),
    ],
)
def test_bad_configuration_is_refused(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    path = tmp_path / "bad.yaml"

    path.write_text(yaml.safe_dump({"serverport": free_port(), **config}))
    result = subprocess.run(
        [sys.executable, "-m", "mysqlprobe.cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert message in result.stderr, result.stderr


def test_watcher_password_from_the_environment(server: MariaDB, tmp_path: Path) -> None:
    server.query("CREATE USER IF NOT EXISTS 'watch'@'127.0.0.1' IDENTIFIED BY 'pw-from-env'")
    server.query("GRANT PROCESS ON *.* TO 'watch'@'127.0.0.1'")
    node = Node(tmp_path, slave_config(server, watcher={"uname": "watch", "password": "${WATCH_PW}"}))
    node.start(env={"WATCH_PW": "pw-from-env"})
    try:
        deadline = time.monotonic() + 20
        watcher = node.get("/status")["watcher"]
        while watcher["refreshes"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            watcher = node.get("/status")["watcher"]
        assert watcher["refreshes"] >= 1 and watcher["last_error"] is None
    finally:
        node.stop()


def test_pymysql_available() -> None:
    assert pymysql.__version__


def test_same_packet_on_two_devices_is_counted_once(server: MariaDB, tmp_path: Path) -> None:
    # On Linux, "any" sees loopback traffic too: every packet reaches both handles.
    config = slave_config(server, probe={"device": "lo,any"})
    node = Node(tmp_path, config).start()
    collector = Collector(f"ws://127.0.0.1:{node.port}/collector")
    try:
        conn = server.connect(database=workload.DB, autocommit=True)
        with conn.cursor() as cur:
            for i in range(40):
                cur.execute("SELECT note FROM items WHERE id = %s", (i + 1,))
                cur.fetchall()
        conn.close()
        key = _key("SELECT note FROM items WHERE id = ?")

        def counted(c: Collector) -> int:
            return sum(e["count"] for r in c.reports for e in r["templates"] if e["key"] == key)

        collector.wait_for(lambda c: counted(c) >= 40)
        time.sleep(2.5)
        assert counted(collector) == 40
        assert sum(r["capture"].get("duplicates", 0) for r in collector.reports) > 0
        assert sum(r["capture"].get("retransmitted", 0) for r in collector.reports) == 0
    finally:
        collector.close()
        node.stop()
