"""Reassembly under reordering (probe/flows.py), on frames built with scapy: held
segments keep their own capture time, and an ACK captured before the data it covers is
tolerated within the reordering window instead of declaring the data lost."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from message.report import TemplateStats
from probe.decode import LINKTYPE_ETHERNET
from probe.engine import Engine, EngineConfig
from probe.flows import FlowLimits
from probe.mysql.events import CommandCompleted, Event
from tests.support import mysqlwire as w

SELECT = "SELECT v FROM t WHERE id = ?"


def workload(queries: int = 5, rows: int = 3) -> w.Script:
    script = w.Script().login()
    for i in range(queries):
        script.client(w.query(f"SELECT v FROM t WHERE id = {i}"))
        script.server(w.result_set(["v"], [[b"x" * 700]] * rows), after_us=200)
    return script


def tcp(frame: bytes) -> TCP:
    return Ether(frame)[TCP]


def is_server_data(frame: bytes) -> bool:
    segment = tcp(frame)
    return bool(segment.sport == 3306 and len(segment.payload))


def is_client_data(frame: bytes) -> bool:
    segment = tcp(frame)
    return bool(segment.dport == 3306 and len(segment.payload))


def run(frames: list[tuple[int, bytes]], config: EngineConfig | None = None) -> tuple[Engine, list[CommandCompleted]]:
    engine = Engine(config or EngineConfig(), LINKTYPE_ETHERNET)
    seen: list[CommandCompleted] = []
    forward = engine.flows.on_events

    def record(events: list[Event]) -> None:
        seen.extend(e for e in events if isinstance(e, CommandCompleted))
        forward(events)

    engine.flows.on_events = record
    for ts, frame in frames:
        engine.packet(ts, frame)
    return engine, seen


def selects(engine: Engine) -> TemplateStats:
    return {t.template: t for t in engine.drain().templates}[SELECT]


def bare_ack(frame: bytes) -> bytes:
    """A pure ACK from the client carrying the same acknowledgement as ``frame``."""
    pkt = Ether(frame)
    segment = pkt[TCP]
    return bytes(
        Ether()
        / IP(src=pkt[IP].src, dst=pkt[IP].dst)
        / TCP(sport=segment.sport, dport=segment.dport, flags="A", seq=segment.seq, ack=segment.ack)
    )


def test_ack_captured_before_the_reply_it_covers() -> None:
    """Each response's last segment is captured after the client's next request, which
    already acknowledges it (a capture on ``any`` or a SPAN port)."""
    frames = w.to_frames(workload(), mss=1000)
    reordered = list(frames)
    swaps = 0
    for i in range(len(reordered) - 1):
        (_, a), (ts_b, b) = reordered[i], reordered[i + 1]
        if is_server_data(a) and is_client_data(b):
            # The request is captured first, the reply's end a microsecond after it.
            reordered[i], reordered[i + 1] = (ts_b, b), (ts_b + 1000, a)
            swaps += 1
    assert swaps == 6  # the login exchange too: greeting and handshake response, OK and first query
    expected = selects(run(frames)[0])
    engine, done = run(reordered)
    got = selects(engine)
    counters = engine.capture_counters()
    assert counters["gaps"] == 0 and counters["responses_lost"] == 0
    assert (got.count, got.rows_sent, got.bytes_out) == (expected.count, expected.rows_sent, expected.bytes_out)
    # Four replies end 1 µs after the next request (sent 100 µs after them), the last on time.
    assert [e.latency_us for e in done if e.template == SELECT] == [301, 301, 301, 301, 200]


def test_bare_ack_captured_before_the_reply() -> None:
    frames = w.to_frames(workload(), mss=1000)
    out: list[tuple[int, bytes]] = []
    for i, (ts, frame) in enumerate(frames):
        if is_server_data(frame) and i + 1 < len(frames) and not is_server_data(frames[i + 1][1]):
            # The client's ACK of the whole reply, captured a microsecond before its end.
            later = next((f for _, f in frames[i + 1 :] if is_client_data(f)), None)
            if later is not None:
                out.append((ts - 1000, bare_ack(later)))
        out.append((ts, frame))
    engine, _ = run(out)
    got = selects(engine)
    assert got.count == 5 and got.rows_sent == 15
    assert engine.capture_counters()["gaps"] == 0


def test_ack_of_really_lost_bytes_declares_the_gap_after_the_window() -> None:
    frames = w.to_frames(workload(queries=6, rows=6), mss=500)
    victim = [i for i, (_, f) in enumerate(frames) if is_server_data(f)][7]
    del frames[victim]
    for config in (EngineConfig(), EngineConfig(flows=FlowLimits(reorder_packets=1, reorder_ns=1))):
        engine, done = run(frames, config)
        counters = engine.capture_counters()
        assert counters["gaps"] == 1 and counters["responses_lost"] == 1
        got = selects(engine)
        assert got.count == 5 and got.rows_sent == 30
        assert max(e.latency_us for e in done if e.template == SELECT) == 200


def test_held_segments_keep_their_own_capture_time() -> None:
    """The last segment of a reply is captured before the middle one (retransmitted 5 ms
    later): the reply ends at the last segment's own time, not at the retransmission's."""
    frames = w.to_frames(workload(queries=1, rows=4), mss=800)
    server = [i for i, (_, f) in enumerate(frames) if is_server_data(f)]
    first_reply = server[-4:]  # the SELECT's reply: 4 segments
    middle, last = first_reply[2], first_reply[3]
    (_, f_m), (ts_l, f_l) = frames[middle], frames[last]
    frames[middle] = (ts_l + 1000, f_l)
    frames[last] = (ts_l + 5_000_000, f_m)
    engine, done = run(frames)
    select = [e for e in done if e.template == SELECT]
    assert len(select) == 1 and select[0].rows_sent == 4
    assert select[0].end_ns == ts_l + 1000  # not ts_l + 5 ms
    assert engine.capture_counters()["out_of_order"] == 1


def test_teardown_while_waiting_closes_once() -> None:
    """The client's FIN acknowledges a reply the capture shows only after it: the
    connection waits, the reply is counted, and the connection closes once."""
    script = workload(queries=2)
    frames = w.to_frames(script, mss=1000)
    last_ts = frames[-1][0]
    client, server = ("10.0.0.7", 51000), ("10.0.0.1", 3306)
    seq_c = 1001 + sum(len(d) for _, dr, d in script.timed() if dr == 0)
    seq_s = 500_001 + sum(len(d) for _, dr, d in script.timed() if dr == 1)
    for flags, src, dst, seq, ack in (
        ("FA", client, server, seq_c, seq_s),
        ("FA", server, client, seq_s, seq_c + 1),
        ("A", client, server, seq_c + 1, seq_s + 1),
    ):
        last_ts += 1000
        frame = Ether() / IP(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq, ack=ack)
        frames.append((last_ts, bytes(frame)))
    last_reply = max(i for i, (_, f) in enumerate(frames) if is_server_data(f))
    reply_end = frames.pop(last_reply)
    frames.insert(len(frames) - 2, reply_end)  # after the client's FIN
    for config in (EngineConfig(), EngineConfig(flows=FlowLimits(reorder_packets=1))):
        engine, done = run(frames, config)
        counters = engine.capture_counters()
        assert counters["connections_opened"] == 1 and counters["connections_closed"] == 1
        assert counters["connections_active"] == 0
        assert len([e for e in done if e.template == SELECT]) == 2
        assert counters["gaps"] == 0 and counters["responses_lost"] == 0
