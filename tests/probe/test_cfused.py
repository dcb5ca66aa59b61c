"""The fused batch loop against the tuple path: probe._cdecode handing segments to
probe._cflows as C values (through the ``probe._cflows._C_API`` capsule) must do exactly
what building each Segment tuple and calling ``InOrder(ts, seg)`` does.

Three flow tables are fed the same generated connections (those of test_cexchange: logins,
queries of every response kind, cuts, bare ACKs, FIN/RST) as Ethernet frames in capture
batches, over IPv4 or IPv6, with frames of other ports, non-TCP and truncated frames
mixed in: a compiled one through ``Decoder.batch(buffer, meta, in_order)`` (the fused
path), a compiled one through ``Decoder.batch(buffer, meta, lambda ts, seg: in_order(ts,
seg))`` (a callback of another type: tuples built, then the same InOrder) and a pure one.
After every batch the fused and tuple sides must have the same flow state (every
connection's halves, held segment and conversation), events, counters and C counters;
every drained interval must be the same, and the pure side's too.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from probe import native
from probe.decode import BATCH_META, LINKTYPE_ETHERNET, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, DecodeCounters, Segment
from probe.mysql.events import TO_CLIENT, TO_SERVER
from tests.probe.test_cexchange import SERVER_IP, Peer, Side, capture, compare, conv_state
from tests.support import mysqlwire as w
from tests.support.fuzz import fuzz_settings
from tests.support.native import need_compiled

Step = tuple[int, Segment | None, bool]
V6_PREFIX = bytes.fromhex("fd000000000000000000000000000000")[:12]


def v6(address: Any) -> bytes:
    return V6_PREFIX + address.to_bytes(4, "big")


def frame(seg: Segment) -> bytes:
    """An Ethernet frame carrying seg (checksums zero: the decoder does not check them)."""
    src, dst, sport, dport, seq, ack, flags, payload = seg
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 65535, 0, 0) + payload
    if isinstance(src, bytes):
        ip = struct.pack("!IHBB", 0x60000000, len(tcp), 6, 64) + src + dst
        return bytes(12) + b"\x86\xdd" + ip + tcp
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, src, dst)
    return bytes(12) + b"\x08\x00" + ip + tcp


class Fed:
    """A Side fed through a frame decoder's batch loop."""

    def __init__(self, *, pure: bool, server_ip: bytes, wrap: bool = False) -> None:
        self.side = Side(pure=pure, server_ips=frozenset({server_ip}))
        self.decode_counters = DecodeCounters()
        self.decoder: native.FrameDecoder
        if pure:
            self.decoder = native.PureDecoder(LINKTYPE_ETHERNET, self.decode_counters)
        else:
            assert native.cdecode is not None
            self.decoder = native.cdecode.Decoder(LINKTYPE_ETHERNET, self.decode_counters)
        entry = self.side.entry
        self.callback: Callable[[int, Segment], object] = (lambda ts, seg: entry(ts, seg)) if wrap else entry

    def batch(self, buffer: bytes | bytearray, meta: bytes) -> None:
        self.decoder.batch(buffer, meta, self.callback)


def half_state(half: Any) -> dict[str, Any]:
    return {name: getattr(half, name) for name in type(half).__slots__}


def flow_state(fed: Fed) -> Any:
    flows = fed.side.flows
    conns = {}
    for key, conn in flows.table.items():
        held = conn.held
        conns[key] = (
            [half_state(h) for h in conn.halves],
            conn.last_ns,
            conn.waiting is None,
            None if held is None else bool(held.active),
            conv_state(conn.conv),
        )
    entry = fed.side.entry
    fast = {name: getattr(entry, name) for name in ("fast_exchanges", "fast_replayed", "fast_cache_resets")}
    return conns, flows.tcp_segments, vars(flows.counters), vars(fed.decode_counters), fast, fed.side.other


@st.composite
def batches(draw: st.DrawFn) -> tuple[bool, list[tuple[list[Step], bytes, bytes]]]:
    """The steps of a generated capture cut into batches; a sweep or drain ends a batch."""
    steps: list[Step] = draw(capture())
    over_v6 = draw(st.booleans())
    out: list[tuple[list[Step], bytes, bytes]] = []
    pending: list[Step] = []
    buffer, meta = bytearray(), bytearray()

    def add(ts: int, data: bytes, caplen: int | None = None) -> None:
        sec, ns = divmod(ts, 1_000_000_000)
        meta.extend(BATCH_META.pack(sec, ns // 1000, len(buffer), len(data) if caplen is None else caplen))
        buffer.extend(data)

    def flush() -> None:
        nonlocal buffer, meta, pending
        out.append((pending, bytes(buffer), bytes(meta)))
        pending, buffer, meta = [], bytearray(), bytearray()

    for ts, seg, drain in steps:
        if seg is None:
            flush()
            pending.append((ts, seg, drain))
            flush()
            continue
        if over_v6:
            seg = (v6(seg[0]), v6(seg[1]), *seg[2:])
        noise = draw(st.integers(0, 30))
        if noise == 0:  # the same segment to another port
            add(ts, frame((*seg[:3], 8080, *seg[4:])))
        elif noise == 1:  # not TCP, then truncated
            add(ts, bytes(12) + b"\x08\x06" + bytes(28))
            add(ts, frame(seg)[:30])
        data = frame(seg)
        add(ts, data)
        pending.append((ts, seg, drain))
        if drain or draw(st.integers(0, 3)) == 0:
            flush()
    flush()
    return over_v6, out


def run(over_v6: bool, cut: list[tuple[list[Step], bytes, bytes]]) -> tuple[Fed, Fed, Fed]:
    need_compiled()
    server = v6(SERVER_IP) if over_v6 else SERVER_IP.to_bytes(4, "big")
    fused, tupled, pure = (
        Fed(pure=False, server_ip=server),
        Fed(pure=False, server_ip=server, wrap=True),
        Fed(pure=True, server_ip=server),
    )
    for i, (steps, buffer, meta) in enumerate(cut):
        for fed in (fused, tupled, pure):
            if fed is pure:
                fed.batch(buffer, meta)
            else:
                # As pcapy's buffer, reused once the batch is done: what was kept must be a copy.
                reused = bytearray(buffer)
                fed.batch(reused, meta)
                reused[:] = bytes(len(reused))
            for ts, seg, _ in steps:
                if seg is None:
                    fed.side.flows.expire(ts)
        assert flow_state(fused) == flow_state(tupled), f"batch {i}"
        compare(pure.side, fused.side, f"batch {i}")
        if any(drain for _, _, drain in steps):
            drained = fused.side.drain()
            assert drained == tupled.side.drain() == pure.side.drain(), f"drain after batch {i}"
    for fed in (fused, tupled, pure):
        fed.side.flows.close_all(2_000_000_000_000_000_000, "end of capture")
    assert flow_state(fused) == flow_state(tupled)
    compare(pure.side, fused.side, "end")
    assert fused.side.drain() == tupled.side.drain() == pure.side.drain()
    return fused, tupled, pure


@fuzz_settings(150)
@given(batches())
def test_the_fused_batch_loop_does_what_the_tuple_path_does(case: tuple[bool, list[Any]]) -> None:
    run(*case)


def test_the_capsule_is_published_and_found() -> None:
    need_compiled()
    assert native.cflows is not None
    assert type(native.cflows._C_API).__name__ == "PyCapsule"
    assert "probe._cflows._C_API" in repr(native.cflows._C_API)


def in_batches(steps: list[Step], size: int) -> list[tuple[list[Step], bytes, bytes]]:
    """Steps as IPv4 capture batches of ``size`` frames."""
    out: list[tuple[list[Step], bytes, bytes]] = []
    for start in range(0, len(steps), size):
        chunk = steps[start : start + size]
        buffer, meta = bytearray(), bytearray()
        for ts, seg, _ in chunk:
            assert seg is not None
            sec, ns = divmod(ts, 1_000_000_000)
            data = frame(seg)
            meta.extend(BATCH_META.pack(sec, ns // 1000, len(buffer), len(data)))
            buffer.extend(data)
        out.append((chunk, bytes(buffer), bytes(meta)))
    return out


def exchanges(peer: Peer, n: int, tag: int) -> list[Segment]:
    out = []
    for i in range(n):
        out.append(peer.send(TO_SERVER, w.query(f"SELECT v FROM t WHERE id = {tag * 1000 + i}")))
        out.append(peer.send(TO_CLIENT, w.result_set(["v"], [[str(tag).encode()]])))
    return out


def test_connections_on_a_reused_four_tuple_and_more_than_the_key_cache_holds() -> None:
    """The compiled path caches, per captured 4-tuple, the objects it looks the connection
    up with and the table's own key. A 4-tuple used again (after a FIN, after an RST, and
    by a SYN while the old connection is still open) must find the new connection, and
    1,300 connections (more than the cache's 1,024 entries: collisions replace entries) must
    each find their own: the same state, events and intervals as the pure engine."""
    segments: list[Segment] = []
    reused = Peer(52000)
    for ending in (TCP_FIN, TCP_RST, TCP_SYN):
        segments += reused.opening() + exchanges(reused, 3, 1)
        if ending == TCP_FIN:
            segments.append(reused.send(TO_SERVER, flags=TCP_FIN | TCP_ACK))
            segments.append(reused.send(TO_CLIENT, flags=TCP_FIN | TCP_ACK))
        elif ending == TCP_RST:
            segments.append(reused.send(TO_CLIENT, flags=TCP_RST | TCP_ACK))
        reused.seq = [reused.seq[0] + 77_777, reused.seq[1] + 33_333]  # a new connection's numbers
    segments += reused.opening() + exchanges(reused, 2, 2)
    peers = [Peer(20000 + i) for i in range(1300)]
    for peer in peers:
        segments += peer.opening()
    for round_ in range(2):  # every connection again, after all the others filled the cache
        for i, peer in enumerate(peers):
            segments += exchanges(peer, 1, i + round_)
    ts = 1_700_000_000_000_000_000
    steps: list[Step] = [(ts + i * 1000, seg, False) for i, seg in enumerate(segments)]
    steps[-1] = (steps[-1][0], steps[-1][1], True)
    fused, _, pure = run(False, in_batches(steps, 200))
    assert fused.side.entry.fast_exchanges > 2500
    assert pure.side.flows.counters.connections_opened == 1304
