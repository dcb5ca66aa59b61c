"""The NATS JetStream ingest tier (examples/nats/): a live slave pushes to the bridge, which
stores each report in JetStream once (Nats-Msg-Id); two consumers share one durable pull
consumer and merge into Redis. Killing a consumer or the bridge loses nothing and counts
nothing twice: Redis ends equal to the sum of the slave's reports."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pymysql
import pytest
import redis

from message.report import TemplateStats
from tests.support.mariadb import free_port, running_mariadb
from tests.support.nodes import ROOT, Collector, Node

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))

EXAMPLE = ROOT / "examples" / "nats"


class Proc:
    """A subprocess with its output in a file."""

    def __init__(self, name: str, argv: list[str], directory: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = directory / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: str | None = None, timeout: float = 30.0) -> Proc:
        with open(self.log, "ab") as sink:
            self.proc = subprocess.Popen(self.argv, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while ready is not None and ready not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, f"{self.name} exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{self.name} not ready: {self.log.read_text()[-2000:]}"
            time.sleep(0.1)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


def wait_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.1)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[dict[str, Any]]:
    nats_server, redis_server = shutil.which("nats-server"), shutil.which("redis-server")
    assert nats_server and redis_server, "scripts/test.sh installs Debian's nats-server and redis-server"
    nats_port, redis_port = free_port(), free_port()
    procs = [
        Proc(
            "nats", [nats_server, "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", str(tmp_path / "js")], tmp_path
        ),
        Proc(
            "redis",
            [redis_server, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            tmp_path,
        ),
    ]
    for proc in procs:
        proc.start()
    wait_port(nats_port)
    wait_port(redis_port)
    try:
        yield {"nats": f"nats://127.0.0.1:{nats_port}", "redis": f"redis://127.0.0.1:{redis_port}/0"}
    finally:
        for proc in procs:
            proc.kill(signal.SIGTERM)


def consumer(name: str, services: dict[str, Any], directory: Path, *extra: str) -> Proc:
    argv = [sys.executable, str(EXAMPLE / "consumer.py"), "--name", name, "--batch", "1", "--ack-wait", "3", *extra]
    return Proc(name, [*argv, "--nats", services["nats"], "--redis", services["redis"]], directory)


def merged_by(db: redis.Redis, name: str) -> int:
    return int(db.hget("mysqlprobe:consumers", name) or 0)


def stream_state(url: str) -> tuple[int, list[str], bool]:
    """(messages in the stream, their Msg-Ids in order, whether a re-publish of the first
    report was refused as a duplicate)."""

    async def check() -> tuple[int, list[str], bool]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        info = await js.stream_info("MYSQLPROBE")
        ids = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            stored = await js.get_msg("MYSQLPROBE", seq)
            ids.append(stored.headers["Nats-Msg-Id"] if stored.headers else "")
        first = await js.get_msg("MYSQLPROBE", info.state.first_seq)
        again = await js.publish(
            first.subject, first.data or b"", headers={"Nats-Msg-Id": first.headers["Nats-Msg-Id"]}
        )
        after = await js.stream_info("MYSQLPROBE")
        await nc.close()
        assert after.state.messages == info.state.messages
        return int(info.state.messages), ids, bool(again.duplicate)

    return asyncio.run(check())


def test_jetstream_ingest_exactly_once_across_kills(services: dict[str, Any], tmp_path: Path) -> None:
    db = redis.Redis.from_url(services["redis"])
    bridge_port = free_port()
    bridge_argv = [sys.executable, str(EXAMPLE / "bridge.py"), "--port", str(bridge_port), "--nats", services["nats"]]
    bridge = Proc("bridge", bridge_argv, tmp_path).start(ready="bridging")
    # c1 dies as kill -9 would at the worst moment: after merging its 3rd report, before the ack.
    c1 = consumer("c1", services, tmp_path, "--die-before-ack", "3").start(ready="merging")
    c2 = consumer("c2", services, tmp_path).start(ready="merging")
    stop = threading.Event()
    with running_mariadb() as server:
        config = {
            "interval": 1,
            "probe": {"device": "lo", "port": server.port, "workers": 1},
            "pusher": {"servers": [f"127.0.0.1:{bridge_port}"]},
            "websocket": {"reconnectperiods": 1},
        }
        node = Node(tmp_path, config, name="natsslave").start()
        collector = Collector(f"ws://127.0.0.1:{node.port}/collector")

        def workload() -> None:
            conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
            with conn.cursor() as cur:
                i = 0
                while not stop.is_set():
                    cur.execute(f"SELECT {i} * 2 AS doubled")
                    i += 1
                    time.sleep(0.01)
            conn.close()

        thread = threading.Thread(target=workload, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while merged_by(db, "c1") == 0 or merged_by(db, "c2") == 0:  # two consumers share the work
                assert time.monotonic() < deadline, (merged_by(db, "c1"), merged_by(db, "c2"))
                time.sleep(0.2)
            assert c1.proc is not None
            assert c1.proc.wait(60) == 137  # c1 died holding a merged, unacknowledged report
            c3 = consumer("c3", services, tmp_path).start(ready="merging")  # an instance joins later
            time.sleep(1)
            bridge.kill()  # and the bridge: the pusher keeps what was not acknowledged
            time.sleep(2)
            bridge = Proc("bridge", bridge_argv, tmp_path).start(ready="bridging")
            time.sleep(2)
            stop.set()
            thread.join(10)
            collector.wait_for(lambda c: len(c.reports) >= 8 and c.reports[-1]["totals"]["queries"] == 0, timeout=60)
            time.sleep(2)  # the pusher delivers what is still queued
        finally:
            stop.set()
            node.stop()
            collector.close()  # after the node: it has every report the node published
    messages, ids, duplicate = stream_state(services["nats"])
    # JetStream stored each report once, in order, whatever was resent; the same id is refused.
    assert [re.sub(r"/[^/]+/", "/", i) for i in ids] == [f"natsslave/{seq}" for seq in range(1, messages + 1)]
    assert duplicate
    try:
        deadline = time.monotonic() + 60
        while int(db.hget("mysqlprobe:reports", "natsslave") or 0) < messages:
            assert time.monotonic() < deadline, "reports did not all reach Redis"
            time.sleep(0.2)
        time.sleep(4)  # past ack_wait: a redelivery would count now
    finally:
        for proc in (c2, c3, bridge):
            proc.kill(signal.SIGTERM)
    assert int(db.hget("mysqlprobe:reports", "natsslave") or 0) == messages
    assert merged_by(db, "c1") == 3
    assert merged_by(db, "c1") + merged_by(db, "c2") + merged_by(db, "c3") == messages
    # JetStream redelivered c1's unacknowledged report; its claim made the redelivery a no-op.
    redelivered = [line for p in ("c2", "c3") for line in (tmp_path / f"{p}.log").read_text().splitlines()]
    assert sum("already merged" in line for line in redelivered) == 1
    reports = [r for r in collector.reports if r["seq"] <= messages]
    assert [r["seq"] for r in reports] == list(range(1, messages + 1))
    assert messages >= 8
    totals: dict[str, TemplateStats] = {}
    for report in reports:
        for entry in report["templates"]:
            stats = TemplateStats.from_json(entry)
            ident = f"{stats.server}|{stats.db}|{stats.key}"
            totals.setdefault(ident, TemplateStats(stats.server, stats.db, stats.key, stats.template)).merge(stats)
    # Redis holds exactly the sum of the reports: none lost, none twice.
    for ident, stats in totals.items():
        row = {k.decode(): int(v) for k, v in db.hgetall(f"mysqlprobe:t:{ident}").items()}
        assert row["count"] == stats.count, ident
        assert row["latency_us"] == stats.latency_sum, ident
        assert row["rows_sent"] == stats.rows_sent, ident
        sketch = {k.decode(): int(v) for k, v in db.hgetall(f"mysqlprobe:sketch:{ident}").items()}
        assert sketch.pop("zero") == stats.sketch.zero
        assert {int(k): v for k, v in sketch.items() if v} == stats.sketch.bins
    doubled = [s for s in totals.values() if s.template == "SELECT ? * ? AS doubled"]
    assert doubled and doubled[0].count > 100
    assert db.hget("mysqlprobe:templates", doubled[0].key) == b"SELECT ? * ? AS doubled"
