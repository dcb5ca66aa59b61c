"""TCP tracking and reassembly through the engine, on frames built with scapy."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from message.report import TemplateStats
from probe.decode import LINKTYPE_ETHERNET
from probe.engine import Engine, EngineConfig
from probe.flows import FlowLimits
from tests.support import mysqlwire as w


def workload(queries: int = 5, rows: int = 3) -> w.Script:
    script = w.Script().login()
    for i in range(queries):
        script.client(w.query(f"SELECT v FROM t WHERE id = {i}"))
        script.server(w.result_set(["v"], [[b"x" * 700]] * rows), after_us=200)
    return script


def run(frames: list[tuple[int, bytes]], config: EngineConfig | None = None) -> Engine:
    engine = Engine(config or EngineConfig(), LINKTYPE_ETHERNET)
    for ts, frame in frames:
        engine.packet(ts, frame)
    return engine


def stats(engine: Engine) -> dict[str, TemplateStats]:
    return {t.template: t for t in engine.drain().templates}


def test_in_order_capture() -> None:
    engine = run(w.to_frames(workload()))
    result = stats(engine)
    select = result["SELECT v FROM t WHERE id = ?"]
    assert select.count == 5 and select.rows_sent == 15 and select.db == "shop"
    counters = engine.capture_counters()
    assert counters["gaps"] == 0 and counters["retransmitted"] == 0 and counters["connections_opened"] == 1


def test_out_of_order_and_retransmitted_segments() -> None:
    frames = w.to_frames(workload(), mss=500)
    shuffled = list(frames)
    # Swap consecutive data segments of the server (a reordering network path), and
    # repeat a run of segments (retransmissions).
    swaps = 0
    for i in range(len(shuffled) - 1):
        a, b = Ether(shuffled[i][1])[TCP], Ether(shuffled[i + 1][1])[TCP]
        if a.sport == b.sport == 3306 and len(a.payload) and len(b.payload) and swaps < 4 and i % 2:
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
            swaps += 1
    assert swaps == 4
    shuffled = shuffled[:20] + shuffled[15:20] + shuffled[20:]
    engine = run(shuffled)
    select = stats(engine)["SELECT v FROM t WHERE id = ?"]
    assert select.count == 5 and select.rows_sent == 15
    counters = engine.capture_counters()
    assert counters["retransmitted"] >= 5 and counters["out_of_order"] >= 1
    assert counters["gaps"] == 0


def test_partially_overlapping_retransmission() -> None:
    frames = w.to_frames(workload(queries=1), mss=400)
    index = len(frames) - 2
    ts, raw = frames[index]
    pkt = Ether(raw)
    tcp = pkt[TCP]
    data = bytes(tcp.payload)

    def piece(offset: int, chunk: bytes) -> bytes:
        head = Ether() / IP(src=pkt[IP].src, dst=pkt[IP].dst)
        return bytes(
            head / TCP(sport=tcp.sport, dport=tcp.dport, flags="PA", seq=tcp.seq + offset, ack=tcp.ack) / chunk
        )

    # The segment first arrives cut short, then resent from an offset inside the first part.
    frames[index : index + 1] = [(ts, piece(0, data[:200])), (ts + 10, piece(100, data[100:]))]
    engine = run(frames)
    assert stats(engine)["SELECT v FROM t WHERE id = ?"].rows_sent == 3
    assert engine.capture_counters()["retransmitted"] == 1


def test_lost_server_segment_drops_only_that_response() -> None:
    frames = w.to_frames(workload(queries=4, rows=6), mss=500)
    # find a server data segment in the middle of the second response and drop it
    server_data = [i for i, (_, f) in enumerate(frames) if Ether(f)[TCP].sport == 3306 and len(Ether(f)[TCP].payload)]
    victim = server_data[6]
    del frames[victim]
    engine = run(frames)
    select = stats(engine)["SELECT v FROM t WHERE id = ?"]
    counters = engine.capture_counters()
    assert counters["gaps"] == 1 and counters["responses_lost"] == 1
    assert select.count == 3 and select.rows_sent == 18  # the three intact responses, exactly
    # No latency was stretched by pairing a request with a later response.
    assert select.latency_max < 1000


def test_lost_client_segment_resyncs_on_the_next_request() -> None:
    frames = w.to_frames(workload(queries=4), mss=1460)
    client_data = [i for i, (_, f) in enumerate(frames) if Ether(f)[TCP].dport == 3306 and len(Ether(f)[TCP].payload)]
    del frames[client_data[2]]  # the second SELECT request
    engine = run(frames)
    select = stats(engine)["SELECT v FROM t WHERE id = ?"]
    assert select.count == 3 and select.rows_sent == 9
    assert engine.capture_counters()["gaps"] == 1


def test_fin_and_rst_close_connections() -> None:
    script = workload(queries=1)
    frames = w.to_frames(script)
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
    engine = run(frames)
    counters = engine.capture_counters()
    assert counters["connections_closed"] == 1 and counters["connections_active"] == 0
    assert counters["connections_opened"] == 1  # the final bare ACK does not open a new one

    rst = w.to_frames(w.Script().login().client(w.query("SELECT SLEEP(9)")))
    frame = Ether() / IP(src="10.0.0.1", dst="10.0.0.7") / TCP(sport=3306, dport=51000, flags="R", seq=1, ack=1)
    rst.append((rst[-1][0] + 1000, bytes(frame)))
    counters = run(rst).capture_counters()
    assert counters["connections_closed"] == 1 and counters["responses_lost"] == 1


def test_sequence_numbers_wrap_around() -> None:
    frames = w.to_frames(workload(queries=6), isn=(0xFFFFFF00, 0xFFFFF000), mss=300)
    select = stats(run(frames))["SELECT v FROM t WHERE id = ?"]
    assert select.count == 6 and select.rows_sent == 18


def test_mid_stream_attach() -> None:
    frames = w.to_frames(workload(queries=3), handshake=False)
    # drop the login exchange as if capture started after it
    engine = run(frames[3:])
    select = stats(engine)["SELECT v FROM t WHERE id = ?"]
    assert select.count == 3 and select.db == ""
    assert engine.capture_counters()["connections_midstream"] == 1


def test_connection_table_is_bounded() -> None:
    config = EngineConfig(flows=FlowLimits(max_connections=4))
    frames: list[tuple[int, bytes]] = []
    for port in range(40000, 40010):
        frames += w.to_frames(workload(queries=1), client=("10.0.0.7", port))
    frames.sort(key=lambda item: item[0])
    engine = run(frames, config)
    counters = engine.capture_counters()
    assert counters["connections_active"] <= 4 and counters["connections_evicted"] >= 6


def test_out_of_order_buffer_is_bounded() -> None:
    config = EngineConfig(flows=FlowLimits(max_ooo_bytes=2000))
    frames = w.to_frames(workload(queries=1, rows=20), mss=500)
    server_data = [i for i, (_, f) in enumerate(frames) if Ether(f)[TCP].sport == 3306 and len(Ether(f)[TCP].payload)]
    del frames[server_data[2]]
    engine = run(frames, config)
    counters = engine.capture_counters()
    assert counters["ooo_overflows"] >= 1 and counters["gaps"] >= 1


def test_other_ports_are_ignored() -> None:
    frames = w.to_frames(workload(queries=1), server=("10.0.0.1", 5432))
    engine = run(frames)
    assert engine.capture_counters()["other_ports"] == len(frames)
    assert not engine.drain().templates


def replay_file(tmp_path_name: str, frames: list[tuple[int, bytes]]) -> dict[str, TemplateStats]:
    """The offline path end to end: a pcap written by scapy, read by pcapy-ng."""
    from mysqlprobe.replay import run_shard

    w.write_pcap(tmp_path_name, frames)
    result = run_shard(tmp_path_name, EngineConfig())
    assert result.error is None
    return {t.template: t for t in result.templates}


def test_capture_file_with_16_mib_payloads(tmp_path: object) -> None:
    big_value = b"v" * (0xFFFFFF + 10)
    script = (
        w.Script()
        .login()
        .client(w.query("SELECT doc FROM t WHERE id = 1"))
        .server(w.result_set(["doc"], [[big_value], [b"tail"]]))
        .client(w.query("SELECT 1"))
        .server(w.result_set(["1"], [[b"1"]]))
    )
    out = replay_file(f"{tmp_path}/big.pcap", w.to_frames(script, mss=65000))
    assert out["SELECT doc FROM t WHERE id = ?"].rows_sent == 2
    assert out["SELECT ?"].rows_sent == 1


def test_capture_file_with_compression_and_tls(tmp_path: object) -> None:
    caps = w.CLIENT_CAPS | w.c.CLIENT_COMPRESS
    compressed = (
        w.Script()
        .server(w.framed([w.greeting()]))
        .client(w.framed([w.handshake_response(caps=caps)], 1))
        .server(w.framed([w.ok()], 2))
        .client(w.compress_stream(w.query("SELECT name FROM items WHERE id = 1")))
        .server(w.compress_stream(w.result_set(["name"], [[b"n" * 300]] * 40)))
    )
    encrypted = (
        w.Script()
        .server(w.framed([w.greeting()]))
        .client(w.framed([w.ssl_request()], 1))
        .client(b"\x16\x03\x01\x00\x05hello")
        .server(b"\x16\x03\x03\x00\x05world")
    )
    frames = w.to_frames(compressed, mss=700) + w.to_frames(encrypted, client=("10.0.0.8", 52000))
    frames.sort(key=lambda item: item[0])
    path = f"{tmp_path}/mixed.pcap"
    out = replay_file(path, frames)
    assert out["SELECT name FROM items WHERE id = ?"].rows_sent == 40
    from mysqlprobe.replay import run_shard

    counters = run_shard(path, EngineConfig()).capture
    assert counters["encrypted_conns"] == 1 and counters["unparsed_segments"] == 2
