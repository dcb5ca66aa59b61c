"""Heartbeat lag on a real primary/replica pair."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.mariadb import MariaDB
from tests.support.replication import replicated_pair
from watcher.heartbeat import HeartbeatLoop, HeartbeatReader, HeartbeatWriter

pytestmark = [pytest.mark.mariadb]


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[MariaDB, MariaDB]]:
    with replicated_pair() as servers:
        yield servers


def lag_after(reader: HeartbeatLoop, seconds: float) -> dict[str, object]:
    time.sleep(seconds)
    return reader.state()


def test_lag_steady_stopped_resumed_and_primary_down(pair: tuple[MariaDB, MariaDB]) -> None:
    primary, replica = pair
    writer = HeartbeatLoop(HeartbeatWriter("127.0.0.1", primary.port, "root", "", node="w1", epoch=lambda: 4), 0.1)
    reader = HeartbeatLoop(HeartbeatReader("127.0.0.1", replica.port, "root", "", interval_s=0.1), 0.1)
    first = reader.worker.state(time.time_ns())
    assert first["lag_ms"] is None and first["stale"]  # nothing read yet: no fake 0
    writer.start()
    reader.start()
    try:
        deadline = time.monotonic() + 20
        state = reader.state()
        while state["lag_ms"] is None and time.monotonic() < deadline:
            state = lag_after(reader, 0.2)
        samples = [lag_after(reader, 0.25)["lag_ms"] for _ in range(8)]
        assert all(s is not None and s < 500 for s in samples), samples  # near 0 in steady state
        state = reader.state()
        assert state["last_good"]["writer"] == "w1" and state["last_good"]["writer_epoch"] == 4  # type: ignore[index]
        assert state["last_good"]["binlog"]["gtid"]  # type: ignore[index]
        assert not state["stale"] and state["error"] is None

        replica.query("STOP SLAVE SQL_THREAD")
        time.sleep(1.0)
        t1, lag1 = time.monotonic(), reader.state()["lag_ms"]
        time.sleep(3.0)
        t2, lag2 = time.monotonic(), reader.state()["lag_ms"]
        rate = (lag2 - lag1) / 1000 / (t2 - t1)  # type: ignore[operator]
        assert 0.8 < rate < 1.2, rate  # lag grows at wall-clock rate
        assert not reader.state()["stale"]  # the IO thread is fine: this is real lag

        replica.query("START SLAVE SQL_THREAD")
        deadline = time.monotonic() + 15
        while (reader.state()["lag_ms"] or 1e9) > 500 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert reader.state()["lag_ms"] < 500  # type: ignore[operator]

        primary.stop()
        deadline = time.monotonic() + 30
        state = reader.state()
        while not (state["stale"] and state["error"]) and time.monotonic() < deadline:
            state = lag_after(reader, 0.3)
        assert state["stale"] and "replication" in str(state["error"])
        assert state["last_good"] is not None  # the last good value is kept, apart from the error
        deadline = time.monotonic() + 15
        while not writer.state()["error"] and time.monotonic() < deadline:
            time.sleep(0.2)
        wstate = writer.state()
        assert wstate["error"] and wstate["failures"] > 0
    finally:
        writer.stop()
        reader.stop()
        if primary.proc is None:
            primary.start()


def test_writer_refuses_a_read_only_server_and_reader_reports_missing_row(pair: tuple[MariaDB, MariaDB]) -> None:
    primary, replica = pair
    replica.query("SET GLOBAL read_only = ON")
    try:
        writer = HeartbeatWriter("127.0.0.1", replica.port, "root", "", node="w2", database="hb_other")
        assert not writer.beat(time.time_ns())
        assert "read-only" in str(writer.last_error)
    finally:
        replica.query("SET GLOBAL read_only = OFF")
    reader = HeartbeatReader("127.0.0.1", primary.port, "root", "", row_id=999)
    if primary.proc is not None:
        HeartbeatWriter("127.0.0.1", primary.port, "root", "", node="w3").beat(time.time_ns())
        assert not reader.read(time.time_ns())
        assert "no heartbeat row" in str(reader.state(time.time_ns())["error"])
        assert reader.state(time.time_ns())["lag_ms"] is None
