"""The compiled in-order path of the flow table (probe._cflows.InOrder) against its oracle,
``FlowTable.segment``.

Differential: two flow tables, one pure and one whose ``segment_entry`` is the compiled
path, are fed the same segments and must make the same calls to their conversations (the
same bytes, gaps and closes, at the same capture times, with the same acknowledgements),
give the same events and end every step in the same state (counters, connections, their
halves and reordering waits). The segments are MySQL conversations (login, queries,
result sets) that hypothesis cuts into random segments, interleaves over several
connections (port reuse included), starts at random sequence numbers (wrap-around at
2**32 included), and then retransmits, overlaps, drops, reorders, delays past the
acknowledgement that covers them, and mixes with FIN, RST and SYN flags and expiry sweeps.
The compiled entry point itself is fuzzed with arguments of any type.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probe import native
from probe.decode import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Segment
from probe.flows import Connection, FlowLimits, FlowTable
from probe.mysql.conversation import Conversation
from probe.mysql.events import TO_CLIENT, TO_SERVER, Event
from probe.normalize import Normalizer
from tests.support import mysqlwire as w
from tests.support.fuzz import fuzz_settings
from tests.support.native import need_compiled

CLIENT_IP = 0x0A000007
SERVER_IP = 0x0A000001
PORT = 3306
PSH = 0x08
MASK = 0xFFFFFFFF
LIMITS = FlowLimits(
    max_connections=3,
    max_ooo_bytes=400,
    half_closed_timeout_ns=5_000_000,
    reorder_packets=3,
    reorder_ns=1_000_000,
)

Call = tuple[Any, ...]


class Recording:
    """A real conversation whose feed/gap/close calls are written down."""

    def __init__(self, conv: Conversation, log: list[Call]) -> None:
        self._conv = conv
        self._log = log

    def feed(self, ts: int, direction: int, data: bytes, ack: int | None = None) -> list[Event]:
        self._log.append(("feed", self._conv.client, ts, direction, bytes(data), ack))
        return self._conv.feed(ts, direction, data, ack)

    def gap(self, ts: int, direction: int, size: int) -> list[Event]:
        self._log.append(("gap", self._conv.client, ts, direction, size))
        return self._conv.gap(ts, direction, size)

    def close(self, ts: int, reason: str = "closed") -> list[Event]:
        self._log.append(("close", self._conv.client, ts, reason))
        return self._conv.close(ts, reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conv, name)


class RecordedFlows(FlowTable):
    """A flow table whose conversations and events are recorded in ``log``."""

    def __init__(self, *, pure: bool) -> None:
        self.log: list[Call] = []
        self.python_calls = 0  # segments FlowTable.segment saw first (not held ones again)
        super().__init__(
            frozenset({PORT}),
            lambda events: self.log.append(("events", *events)),
            Normalizer(),
            server_ips=frozenset({SERVER_IP.to_bytes(4, "big")}),
            limits=LIMITS,
            pure=pure,
        )

    def segment(self, ts: int, seg: Segment, *, replay: bool = False) -> None:
        self.python_calls += not replay
        super().segment(ts, seg, replay=replay)

    def _open(self, ts: int, key: Any, *, from_start: bool) -> Connection:
        conn = super()._open(ts, key, from_start=from_start)
        conn.conv = Recording(conn.conv, self.log)  # type: ignore[assignment]
        return conn


def pair() -> tuple[RecordedFlows, RecordedFlows]:
    need_compiled()
    assert native.cflows is not None
    pure, compiled = RecordedFlows(pure=True), RecordedFlows(pure=False)
    assert isinstance(compiled.segment_entry, native.cflows.InOrder)
    assert pure.segment_entry == pure.segment
    return pure, compiled


def state(flows: RecordedFlows) -> Any:
    """Everything of a flow table the two paths could disagree on."""
    conns = []
    for key, conn in flows.table.items():
        halves = [(h.started, h.next_seq, h.offset, h.fin, h.ooo_bytes, dict(h.ooo)) for h in conn.halves]
        waiting = conn.waiting
        wait = None if waiting is None else (waiting.direction, waiting.upto, waiting.since_ns, list(waiting.held))
        conns.append((key, conn.client, conn.server, conn.closed, conn.last_ns, halves, wait))
    return (
        flows.counters.as_dict(),
        flows.tcp_segments,
        flows.unparsed_segments(),
        flows.unread_exchanges(),
        flows.non_mysql_conns(),
        flows.limit_hits(),
        conns,
    )


def run_both(steps: list[tuple[int, Segment | None]]) -> tuple[RecordedFlows, RecordedFlows]:
    """Feed both tables (``None``: an expiry sweep at that time); equal after every step."""
    pure, compiled = pair()
    for i, (ts, seg) in enumerate(steps):
        for flows in (pure, compiled):
            if seg is None:
                flows.expire(ts)
            else:
                flows.segment_entry(ts, seg)
        assert compiled.log == pure.log, f"step {i}: {seg!r}"
        assert state(compiled) == state(pure), f"step {i}: {seg!r}"
    end = steps[-1][0] + 1 if steps else 1
    for flows in (pure, compiled):
        flows.close_all(end, "end of capture")
    assert compiled.log == pure.log
    assert state(compiled) == state(pure)
    return pure, compiled


# -- generated captures ------------------------------------------------------------------------


def exchange(queries: int) -> list[tuple[int, bytes]]:
    script = w.Script().login()
    for i in range(queries):
        script.client(w.query(f"SELECT v FROM t WHERE id = {i}"))
        script.server(w.result_set(["v"], [[b"x" * (20 + 30 * i)]] * (1 + i % 3)))
    return [(direction, data) for direction, data, _ in script.chunks]


ISN = st.one_of(st.integers(0, MASK), st.integers(MASK - 600, MASK))


@st.composite
def connection(draw: st.DrawFn, client_port: int) -> list[Segment]:
    """One connection's segments in the order they were sent, each acknowledging all the
    sender has received."""
    isn = [draw(ISN), draw(ISN)]
    ends = [(CLIENT_IP, SERVER_IP, client_port, PORT), (SERVER_IP, CLIENT_IP, PORT, client_port)]
    out: list[Segment] = []

    def send(direction: int, flags: int, payload: bytes = b"") -> None:
        src, dst, sport, dport = ends[direction]
        out.append((src, dst, sport, dport, isn[direction], isn[1 - direction], flags, payload))
        isn[direction] = (isn[direction] + len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) & MASK

    if draw(st.booleans()):  # seen from its handshake
        src, dst, sport, dport = ends[TO_SERVER]
        out.append((src, dst, sport, dport, isn[TO_SERVER], 0, TCP_SYN, b""))
        isn[TO_SERVER] = (isn[TO_SERVER] + 1) & MASK
        send(TO_CLIENT, TCP_SYN | TCP_ACK)
        send(TO_SERVER, TCP_ACK)
    for direction, data in exchange(draw(st.integers(0, 3))):
        pos = 0
        while pos < len(data):
            size = draw(st.integers(1, max(1, len(data) - pos)))
            send(direction, TCP_ACK | PSH, data[pos : pos + size])
            pos += size
            if draw(st.integers(0, 3)) == 0:
                send(1 - direction, TCP_ACK)  # a bare ACK of what came so far
    ending = draw(st.sampled_from(["open", "fin", "rst", "half"]))
    if ending in ("fin", "half"):
        first = draw(st.sampled_from([TO_SERVER, TO_CLIENT]))
        send(first, TCP_FIN | TCP_ACK)
        if ending == "fin":
            send(1 - first, TCP_FIN | TCP_ACK)
            send(first, TCP_ACK)
    elif ending == "rst":
        send(draw(st.sampled_from([TO_SERVER, TO_CLIENT])), TCP_RST | TCP_ACK)
    return out


@st.composite
def interleaved(draw: st.DrawFn) -> list[Segment]:
    """Up to three connections, the first two possibly on the same client port (one after
    the other: a reused port), their segments interleaved."""
    reuse = draw(st.booleans())
    streams = [draw(connection(51000))]
    second = draw(connection(51000 if reuse else 51001))
    if reuse:
        streams[0] = streams[0] + second
    else:
        streams.append(second)
    if draw(st.booleans()):
        streams.append(draw(connection(51002)))
    merged: list[Segment] = []
    while any(streams):
        live = [s for s in streams if s]
        merged.append(draw(st.sampled_from(live)).pop(0))
    return merged


OPS = st.lists(
    st.tuples(
        st.sampled_from(["dup", "overlap", "merge", "drop", "swap", "move", "ackahead", "flags", "expire"]),
        st.integers(0, 10_000),
        st.integers(1, 8),
    ),
    max_size=10,
)


def perturb(segments: list[Segment], ops: list[tuple[str, int, int]]) -> list[Segment | None]:
    """Retransmissions, overlaps, losses, reorderings and stray flags (``None``: a sweep)."""
    out: list[Segment | None] = list(segments)
    for op, where, n in ops:
        if not out:
            break
        i = where % len(out)
        seg = out[i]
        if op == "expire":
            out.insert(i, None)
            continue
        if seg is None:
            continue
        if op == "dup":
            out.insert(min(len(out), i + n), seg)
        elif op == "overlap" and len(seg[7]) > 1:
            cut = 1 + where % (len(seg[7]) - 1)
            out.insert(min(len(out), i + n), (*seg[:4], (seg[4] + cut) & MASK, *seg[5:7], seg[7][cut:]))
        elif op == "merge":
            j = next((k for k in range(i + 1, len(out)) if out[k] is not None and out[k][:4] == seg[:4]), None)  # type: ignore[index]
            nxt = out[j] if j is not None else None
            if nxt is not None and (seg[4] + len(seg[7])) & MASK == nxt[4]:
                out.insert(min(len(out), j + n), (*nxt[:4], seg[4], *nxt[5:7], seg[7] + nxt[7]))  # type: ignore[operator]
        elif op == "drop":
            del out[i]
        elif op == "swap" and i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
        elif op == "move":
            out.insert(min(len(out), i + n + 1), seg)
            del out[i]
        elif op == "ackahead":
            out[i] = (*seg[:5], (seg[5] + n * 37) & MASK, *seg[6:])
        elif op == "flags":
            out[i] = (*seg[:6], seg[6] ^ (TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK, PSH)[n % 5], seg[7])
    return out


def timed(segments: list[Segment | None], gaps: list[int]) -> list[tuple[int, Segment | None]]:
    ts = 1_700_000_000_000_000_000
    steps = []
    for i, seg in enumerate(segments):
        ts += gaps[i % len(gaps)] if gaps else 1000
        steps.append((ts, seg))
    return steps


GAPS = st.lists(st.sampled_from([1, 1000, 50_000, 400_000, 2_000_000, 7_000_000]), min_size=1, max_size=6)


@fuzz_settings(300)
@given(interleaved(), GAPS)
def test_in_order_captures_give_the_same_calls_and_state(segments: list[Segment], gaps: list[int]) -> None:
    pure, compiled = run_both(timed(list(segments), gaps))
    assert pure.tcp_segments == pure.python_calls == len(segments)
    assert compiled.python_calls < len(segments)  # the compiled path took some


@fuzz_settings(600)
@given(interleaved(), OPS, GAPS)
def test_disordered_captures_give_the_same_calls_and_state(
    segments: list[Segment], ops: list[tuple[str, int, int]], gaps: list[int]
) -> None:
    run_both(timed(perturb(segments, ops), gaps))


def test_a_sequence_wrapping_at_2_32_is_delivered_in_order() -> None:
    data = b"".join(d for _, d in exchange(2))
    isn = MASK - 10
    steps: list[tuple[int, Segment | None]] = []
    seq = isn
    for i in range(0, len(data), 7):
        steps.append((1000 + i, (CLIENT_IP, SERVER_IP, 51000, PORT, seq, 77, TCP_ACK, data[i : i + 7])))
        seq = (seq + len(data[i : i + 7])) & MASK
    _, compiled = run_both(steps)
    fed = [call for call in compiled.log if call[0] == "feed"]
    assert b"".join(call[4] for call in fed) == data
    assert compiled.counters.gaps == 0 and compiled.counters.retransmitted == 0


def test_replayed_held_segments_go_through_the_python_path() -> None:
    """``segment(..., replay=True)`` keywords pass to the pure method unchanged."""
    pure, compiled = pair()
    seg: Segment = (CLIENT_IP, SERVER_IP, 51000, PORT, 5, 9, TCP_ACK, b"abc")
    for flows in (pure, compiled):
        flows.segment_entry(1, seg)
        flows.segment_entry(2, seg, replay=True)  # type: ignore[call-arg]
    assert compiled.log == pure.log and state(compiled) == state(pure)
    assert compiled.tcp_segments == 1


def test_the_compiled_constants_are_the_python_ones() -> None:
    need_compiled()
    assert native.cflows is not None
    assert native.cflows.assumed_constants() == {
        "TCP_FIN": TCP_FIN,
        "TCP_SYN": TCP_SYN,
        "TCP_RST": TCP_RST,
        "TCP_ACK": TCP_ACK,
        "TO_SERVER": TO_SERVER,
        "TO_CLIENT": TO_CLIENT,
    }


def test_the_compiled_path_needs_a_flow_table() -> None:
    need_compiled()
    assert native.cflows is not None
    with pytest.raises(TypeError):
        native.cflows.InOrder()
    with pytest.raises(AttributeError):
        native.cflows.InOrder(object())


class _CountedElsewhere(FlowTable):
    """tcp_segments is a property here: the slot InOrder would move is not it."""

    __slots__ = ("_count",)

    @property  # type: ignore[override]
    def tcp_segments(self) -> int:
        return self._count

    @tcp_segments.setter
    def tcp_segments(self, value: int) -> None:
        self._count = value


def test_the_compiled_path_refuses_a_table_whose_counters_are_not_slots() -> None:
    need_compiled()
    assert native.cflows is not None
    flows = _CountedElsewhere(frozenset({PORT}), lambda events: None, Normalizer(), pure=True)
    with pytest.raises(TypeError, match=r"\.tcp_segments is not a slot"):
        native.cflows.InOrder(flows)
    plain = RecordedFlows(pure=False)  # a subclass with a __dict__ of its own: its base's slots
    assert isinstance(plain.segment_entry, native.cflows.InOrder)


# -- the entry point fuzzed ----------------------------------------------------------------------

ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**32, 2**63, -1, TCP_ACK, TCP_ACK | PSH, PORT, 51000]),
    st.sampled_from([CLIENT_IP, SERVER_IP]),
    st.binary(max_size=20),
    st.text(max_size=4),
    st.just(bytearray(b"xy")),
    st.just([1]),
    st.floats(allow_nan=False),
)


def outcome(flows: FlowTable, ts: Any, seg: Any) -> Any:
    try:
        return ("ok", flows.segment_entry(ts, seg))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


@fuzz_settings(400)
@given(st.lists(st.tuples(ANY, st.one_of(st.lists(ANY, max_size=9).map(tuple), ANY)), max_size=8))
def test_any_arguments_do_what_the_python_method_does(calls: list[tuple[Any, Any]]) -> None:
    pure, compiled = pair()
    # An established connection for the arguments to hit.
    for flows in (pure, compiled):
        flows.segment_entry(1, (CLIENT_IP, SERVER_IP, 51000, PORT, 100, 200, TCP_ACK, b"x"))
        flows.segment_entry(2, (SERVER_IP, CLIENT_IP, PORT, 51000, 200, 101, TCP_ACK, b"y"))
    for ts, seg in calls:
        got = [outcome(flows, ts, seg) for flows in (pure, compiled)]
        assert got[1] == got[0]
        assert compiled.log == pure.log
        assert state(compiled) == state(pure)


@fuzz_settings(200)
@given(
    st.tuples(
        st.sampled_from([CLIENT_IP, SERVER_IP]),
        st.sampled_from([CLIENT_IP, SERVER_IP]),
        st.sampled_from([PORT, 51000]),
        st.sampled_from([PORT, 51000]),
        st.integers(0, MASK),
        st.integers(0, MASK),
        st.integers(0, 0x3F),
        st.binary(max_size=12),
    ),
    st.lists(st.integers(0, 12), max_size=6),
)
def test_random_well_typed_segments_match(first: Segment, more: list[int]) -> None:
    """Random headers on an established connection, each next one near the last."""
    steps: list[tuple[int, Segment | None]] = [
        (1, (CLIENT_IP, SERVER_IP, 51000, PORT, 100, 200, TCP_ACK, b"x")),
        (2, (SERVER_IP, CLIENT_IP, PORT, 51000, 200, 101, TCP_ACK, b"y")),
        (3, first),
    ]
    seg = first
    for i, step in enumerate(more):
        seg = (*seg[:4], (seg[4] + step) & MASK, (seg[5] + step // 2) & MASK, seg[6], seg[7][step % 3 :])
        steps.append((4 + i, seg))
    run_both(steps)
