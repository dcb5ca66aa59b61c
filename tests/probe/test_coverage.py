"""Coverage counts what could not be read (probe/mysql, probe/flows, message.report_totals):
encrypted connections, exchanges that could not be parsed and non-MySQL traffic on the
port lower it, on captures built with scapy, fed whole and segment by segment."""

from __future__ import annotations

import os

import pytest

from message.report import report_totals
from probe.decode import LINKTYPE_ETHERNET
from probe.engine import Engine, EngineConfig
from tests.support import mysqlwire as w


def engine_for(scripts: list[w.Script], *, mss: int = 1460, handshake: bool = True) -> Engine:
    frames: list[tuple[int, bytes]] = []
    for i, script in enumerate(scripts):
        frames += w.to_frames(script, client=("10.0.0.7", 41000 + i), mss=mss, handshake=handshake)
    frames.sort(key=lambda item: item[0])
    engine = Engine(EngineConfig(), LINKTYPE_ETHERNET)
    for ts, frame in frames:
        engine.packet(ts, frame)
    engine.finish(engine.last_ns)
    return engine


def totals(engine: Engine) -> dict[str, object]:
    interval = engine.drain()
    return report_totals(interval.counters, engine.capture_counters(), interval.templates)


def plain(queries: int = 6) -> w.Script:
    script = w.Script().login()
    for i in range(queries):
        script.client(w.query(f"SELECT {i}")).server(w.result_set(["x"], [[b"1"]]))
    return script


def tls_records(n: int) -> bytes:
    return b"".join(b"\x17\x03\x03" + (40).to_bytes(2, "big") + os.urandom(40) for _ in range(n))


def encrypted(exchanges: int) -> w.Script:
    script = w.Script().server(w.framed([w.greeting()])).client(w.framed([w.ssl_request()], 1))
    script.client(b"\x16\x03\x01\x00\x30" + os.urandom(48)).server(b"\x16\x03\x03\x00\x30" + os.urandom(48))
    for _ in range(exchanges):
        script.client(tls_records(1)).server(tls_records(3))
    return script


def http(requests: int) -> w.Script:
    script = w.Script()
    for _ in range(requests):
        script.client(b"GET /status HTTP/1.1\r\nHost: db\r\n\r\n")
        script.server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return script


def ssh(exchanges: int) -> w.Script:
    script = w.Script().server(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").client(b"SSH-2.0-OpenSSH_9.2\r\n")
    for _ in range(exchanges):
        script.client(os.urandom(64)).server(os.urandom(300))
    return script


def tls_server(exchanges: int) -> w.Script:
    script = w.Script()
    for _ in range(exchanges):
        script.client(b"\x16\x03\x01\x00\x30" + os.urandom(48)).server(b"\x16\x03\x03\x00\x60" + os.urandom(96))
    return script


@pytest.mark.parametrize("mss", [1460, 7])
def test_plain_traffic_is_fully_covered(mss: int) -> None:
    result = totals(engine_for([plain()], mss=mss))
    assert result["coverage"] == 1.0 and result["unread_exchanges"] == 0 and result["non_mysql_conns"] == 0


@pytest.mark.parametrize("mss", [1460, 7])
def test_encrypted_exchanges_count_against_coverage(mss: int) -> None:
    result = totals(engine_for([plain(6), encrypted(6)], mss=mss))
    assert result["encrypted_conns"] == 1 and result["non_mysql_conns"] == 0
    assert result["unread_exchanges"] >= 6  # the TLS handshake's own exchange may count too
    assert result["coverage"] <= (1 + 6) / (1 + 6 + 6)  # Connect + 6 SELECTs read


@pytest.mark.parametrize("make", [http, ssh, tls_server])
def test_non_mysql_traffic_on_the_port_is_not_an_idle_server(make: object) -> None:
    """A wrong --port: HTTP, SSH or TLS give 0 commands and coverage 0, not 1."""
    result = totals(engine_for([make(4)]))  # type: ignore[operator]
    assert result["commands"] == 0 and result["non_mysql_conns"] == 1
    assert result["unread_exchanges"] >= 3 and result["coverage"] == 0.0


def test_unparsable_exchanges_of_a_connection_seen_mid_stream() -> None:
    """Attached mid-stream to a conversation whose bytes never frame as MySQL: the server
    answered, so commands ran, and none could be read."""
    script = w.Script()
    for _ in range(5):
        script.client(b"\x01\x02\x03\x04\x05junk" * 3).server(b"\x09\x08\x07" * 20)
    result = totals(engine_for([plain(2), script], handshake=False))
    assert result["unread_exchanges"] >= 4 and result["coverage"] < 0.75


def test_table_header_shows_what_was_unread() -> None:
    from mysqlprobe.render import profile

    engine = engine_for([plain(2), http(3)])
    interval = engine.drain()
    capture = engine.capture_counters()
    doc = {
        "source": {"file": "x.pcap", "error": None},
        "interval": {"start_ns": 0, "end_ns": 10**9},
        "totals": report_totals(interval.counters, capture, interval.templates),
        "analysis": {"elapsed_s": 0.1, "workers": 1},
        "templates": [t.to_json() for t in interval.templates],
    }
    header = profile(doc, top=5, width=120).split("\n\n", 1)[0]
    assert "3 exchanges unread" in header and "1 connections not MySQL" in header
    assert "coverage 100.00%" not in header
