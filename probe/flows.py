"""TCP connections: the connection table and per-direction reassembly by sequence number.

Owns which connections exist, their byte streams in order, and the losses in them. Each
direction is a ``HalfStream`` that maps 32-bit sequence numbers to 64-bit stream offsets,
delivers in-order bytes at once, trims retransmissions, holds out-of-order segments (a
bounded number of bytes, each with its own capture time) and declares a gap when the
bytes cannot come any more: when the out-of-order buffer is full, at teardown, or when the
peer acknowledged them (the receiver got them, we did not). An acknowledgement may be
captured before the data it covers (captures on ``any``, bonded NICs, SPAN ports, merged
files), so the connection then waits a small reordering window (``reorder_packets``,
``reorder_ns``): the other direction's segments are held in capture order and processed
after the awaited bytes, or after the gap if they do not come.

Sans-I/O: ``FlowTable.segment(ts_ns, segment)`` and ``expire(now_ns)`` are all there is;
events come back through the ``on_events`` callback given at construction. The engine calls
``segment_entry``: ``segment`` itself, or (compiled engine) ``probe._cflows.InOrder``, which
handles the in-order data and bare ACKs of established connections and passes every other
segment to ``segment`` unchanged; ``segment`` is the specification it is tested against.
``table``, ``ports`` and ``server_ips`` are bound once (the compiled path keeps them). The
compiled path may also hold back a connection's COM_QUERY segment to complete the exchange
itself (``Connection.held``); whatever touches that connection's conversation here settles
it first (``Held.settle`` feeds it as it would have been fed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

from probe import native
from probe.decode import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Address, Segment
from probe.mysql.conversation import DEFAULT_MAX_PREPARED_BYTES, Conversation, ConversationLimits, PreparedBudget
from probe.mysql.events import TO_CLIENT, TO_SERVER, Event
from probe.normalize import Normalizer, Template

_MASK = 0xFFFFFFFF
_HALF = 0x80000000

#: Default bounds (documented in config.yaml).
DEFAULT_MAX_CONNECTIONS = 20_000
DEFAULT_MAX_OOO_BYTES = 1 << 20
DEFAULT_HALF_CLOSED_TIMEOUT_NS = 60 * 1_000_000_000
DEFAULT_REORDER_PACKETS = 16
DEFAULT_REORDER_NS = 10_000_000


@dataclass
class FlowCounters:
    other_ports: int = 0
    retransmitted: int = 0
    out_of_order: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    ooo_overflows: int = 0
    connections_opened: int = 0
    connections_midstream: int = 0
    connections_closed: int = 0
    connections_evicted: int = 0
    connections_expired: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class HalfStream:
    """One direction of a connection in stream offsets."""

    __slots__ = ("fin", "next_seq", "offset", "ooo", "ooo_bytes", "started")

    def __init__(self) -> None:
        self.started = False
        self.next_seq = 0
        self.offset = 0  # stream offset of next_seq
        # stream offset -> (capture time, bytes) held out of order
        self.ooo: dict[int, tuple[int, bytes]] = {}
        self.ooo_bytes = 0
        self.fin = False

    def start(self, seq: int) -> None:
        self.started = True
        self.next_seq = seq & _MASK

    def offset_of(self, seq: int) -> int:
        return self.offset + (((seq - self.next_seq + _HALF) & _MASK) - _HALF)

    def advance(self, size: int) -> None:
        self.offset += size
        self.next_seq = (self.next_seq + size) & _MASK


class AckedUnseen:
    """A connection waiting for bytes its peer acknowledged before the capture showed them."""

    __slots__ = ("direction", "held", "since_ns", "upto")

    def __init__(self, direction: int, upto: int, since_ns: int) -> None:
        self.direction = direction  # the direction whose bytes are awaited
        self.upto = upto  # stream offset acknowledged
        self.since_ns = since_ns
        self.held: list[tuple[int, Segment]] = []  # the other direction's segments, in capture order


class Connection:
    __slots__ = ("client", "closed", "conv", "halves", "held", "key", "last_ns", "server", "waiting")

    def __init__(
        self, key: tuple[Address, int, Address, int], client: str, server: str, conv: Conversation, now_ns: int
    ) -> None:
        # The table's key, the very object it is stored under: the compiled path looks the
        # connection up with it again, which a dict matches by identity before comparing.
        self.key = key
        self.client = client
        self.server = server
        self.conv = conv
        self.halves = (HalfStream(), HalfStream())  # indexed by direction
        self.last_ns = now_ns
        self.waiting: AckedUnseen | None = None
        self.closed = False
        # The compiled path's COM_QUERY segment not fed to ``conv`` yet (``probe._cflows.Held``):
        # settled (fed) before anything else touches the conversation.
        self.held: Any = None


class PinnedTemplate:
    """A normalizer that knows one answer: the template a held statement got when it came
    (the compiled path feeds it late, after the real normalizer's caches were cleared)."""

    __slots__ = ("template",)

    def __init__(self, template: Template) -> None:
        self.template = template

    def normalize(self, sql: str) -> Template:
        return self.template


def endpoint(addr: Address, port: int) -> str:
    ip = ip_address(addr)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


@dataclass
class FlowLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_ooo_bytes: int = DEFAULT_MAX_OOO_BYTES
    half_closed_timeout_ns: int = DEFAULT_HALF_CLOSED_TIMEOUT_NS
    idle_timeout_ns: int = 0  # 0: open connections never expire by time alone
    reorder_packets: int = DEFAULT_REORDER_PACKETS
    """Segments held while waiting for acknowledged bytes the capture has not shown; when
    more come, the awaited bytes are declared lost."""
    reorder_ns: int = DEFAULT_REORDER_NS
    """The same window in capture time; whichever ends first declares the gap."""
    conversation: ConversationLimits = field(default_factory=ConversationLimits)
    max_prepared_bytes: int = DEFAULT_MAX_PREPARED_BYTES
    """SQL bytes of prepared statements kept over all connections (``PreparedBudget``)."""


class FlowTable:
    """Connections to the watched server port(s), keyed by (client ip, port, server ip, port)."""

    # Slots: probe/_cflows.c moves tcp_segments and reads on_events at their offsets.
    __slots__ = (
        "counters",
        "limit_hits_closed",
        "limits",
        "non_mysql_closed",
        "normalizer",
        "on_events",
        "ports",
        "prepared_budget",
        "restored",
        "segment_entry",
        "server_ips",
        "sessions",
        "table",
        "tcp_segments",
        "unparsed_closed",
        "unread_closed",
    )

    def __init__(
        self,
        ports: frozenset[int],
        on_events: Callable[[list[Event]], None],
        normalizer: Normalizer,
        *,
        server_ips: frozenset[bytes] | None = None,
        limits: FlowLimits | None = None,
        pure: bool = False,
    ) -> None:
        """``pure``: ``segment_entry`` is ``segment`` even when the compiled path is built."""
        self.ports = ports
        # Decoded IPv4 addresses are ints, IPv6 ones packed bytes: the filter holds both.
        self.server_ips: frozenset[Address] | None = (
            None
            if server_ips is None
            else frozenset(int.from_bytes(ip, "big") if len(ip) == 4 else ip for ip in server_ips)
        )
        self.on_events = on_events
        self.normalizer = normalizer
        self.limits = limits or FlowLimits()
        self.table: dict[tuple[Address, int, Address, int], Connection] = {}
        self.counters = FlowCounters()
        self.tcp_segments = 0  # kept apart from ``counters``: it moves on every packet
        self.unparsed_closed = 0  # unparsed segments of connections already gone
        self.unread_closed = 0  # exchanges of connections already gone that could not be read
        self.non_mysql_closed = 0  # connections already gone that did not speak MySQL
        self.limit_hits_closed: dict[str, int] = {}  # conversation bounds hit by closed connections
        self.prepared_budget = PreparedBudget(self.limits.max_prepared_bytes)
        # Client endpoint -> (user, db, connection id, {statement id: SQL}), from the
        # server's process list and from a checkpoint, for connections whose handshake the
        # probe never saw.
        self.sessions: dict[str, tuple[str, str, int | None, dict[int, str]]] = {}
        self.restored: dict[str, tuple[str, str, int | None, dict[int, str]]] = {}
        #: What the engine calls per segment: ``segment``'s in-order case compiled, or itself.
        self.segment_entry: Callable[[int, Segment], None] = (
            self.segment if pure or native.cflows is None else native.cflows.InOrder(self)
        )

    # -- per segment --------------------------------------------------------------------------

    def segment(self, ts: int, seg: Segment, *, replay: bool = False) -> None:
        """One TCP segment (``replay``: a segment held while waiting, processed now)."""
        src, dst, sport, dport, seq, ack, flags, payload = seg
        server_ips = self.server_ips
        if dport in self.ports and (server_ips is None or dst in server_ips):
            direction = TO_SERVER
            key = (src, sport, dst, dport)
        elif sport in self.ports and (server_ips is None or src in server_ips):
            direction = TO_CLIENT
            key = (dst, dport, src, sport)
        else:
            self.counters.other_ports += 1
            return
        if not replay:
            self.tcp_segments += 1
        conn = self.table.get(key)
        if conn is not None and conn.held is not None:
            conn.held.settle(conn)
        if flags & TCP_SYN:
            conn = self._syn(ts, key, direction, seq, flags, conn)
        elif conn is None:
            if not payload or flags & TCP_RST:
                return  # a bare ACK/FIN/RST: the tail of a connection we never saw or closed
            conn = self._open(ts, key, from_start=False)
        conn.last_ns = ts
        waiting = conn.waiting
        if waiting is not None and direction != waiting.direction:
            self._hold(ts, conn, seg)
            return
        half = conn.halves[direction]
        other = conn.halves[1 - direction]
        ack_off = None
        if flags & TCP_ACK:
            if not other.started:
                other.start(ack)  # the peer's next byte is the one this side expects
            if not other.fin:
                ack_off = other.offset + (((ack - other.next_seq + _HALF) & _MASK) - _HALF)
                if ack_off > other.offset and waiting is None:
                    # The peer has acknowledged bytes we have not seen: lost, unless they
                    # arrive within the reordering window. This segment waits with the rest.
                    if flags & TCP_RST:
                        self._declare_gap(ts, conn, 1 - direction, other, ack_off)
                    else:
                        conn.waiting = AckedUnseen(1 - direction, ack_off, ts)
                        self._hold(ts, conn, seg)
                        return
        if payload:
            if not half.started:
                half.start(seq)
            if seq == half.next_seq and not half.ooo:
                half.offset += len(payload)
                half.next_seq = (seq + len(payload)) & _MASK
                events = conn.conv.feed(ts, direction, payload, ack_off)
                if events:
                    self.on_events(events)
            else:
                self._irregular(ts, conn, direction, half, seq, payload, ack_off)
            if waiting is not None:
                if half.offset >= waiting.upto:
                    self._release(ts, conn, lost=False)  # the awaited bytes came
                elif half.ooo and max(half.ooo) >= waiting.upto:
                    self._release(ts, conn, lost=True)  # bytes after them came first: lost
        if flags & (TCP_FIN | TCP_RST):
            self._teardown(ts, key, conn, direction, half, flags)

    def _hold(self, ts: int, conn: Connection, seg: Segment) -> None:
        """Keep a segment of the direction that acknowledged unseen bytes; end the wait when
        the window is over."""
        waiting = conn.waiting
        assert waiting is not None
        waiting.held.append((ts, seg))
        if len(waiting.held) > self.limits.reorder_packets or ts - waiting.since_ns > self.limits.reorder_ns:
            self._release(ts, conn, lost=True)

    def _release(self, ts: int, conn: Connection, *, lost: bool, closing: bool = False) -> None:
        """End a wait: declare the awaited bytes lost (``lost``), then process the held
        segments in capture order (without FIN/RST when the connection is ``closing``)."""
        waiting = conn.waiting
        if waiting is None:
            return
        if conn.held is not None:
            conn.held.settle(conn)
        conn.waiting = None
        direction = waiting.direction
        half = conn.halves[direction]
        if lost:
            self._declare_gap(ts, conn, direction, half, waiting.upto, drain=False)
        # The awaited direction's bytes after the gap and the held segments go to the
        # conversation in capture order, as they were sent.
        for held_ns, seg in waiting.held:
            if conn.closed:
                return  # a held FIN/RST closed it: what follows belongs to no connection
            self._drain(ts, conn, direction, half, until_ns=held_ns)
            if closing:
                seg = (*seg[:6], seg[6] & ~(TCP_FIN | TCP_RST | TCP_SYN), seg[7])
            self.segment(held_ns, seg, replay=True)
        self._drain(ts, conn, direction, half)

    def _syn(
        self,
        ts: int,
        key: tuple[Address, int, Address, int],
        direction: int,
        seq: int,
        flags: int,
        conn: Connection | None,
    ) -> Connection:
        half_seq = (seq + 1) & _MASK
        if conn is not None:
            half = conn.halves[direction]
            if half.started and half.offset_of(half_seq) == 0:
                # A retransmitted SYN or the SYN-ACK of this connection (its sequence number
                # is this stream's first), even one captured after data flowed.
                return conn
            if direction == TO_CLIENT and not half.started:
                half.start(half_seq)
                return conn
            self._close(ts, key, conn, "reused")
        conn = self._open(ts, key, from_start=True)
        conn.halves[direction].start(half_seq)
        return conn

    def _open(self, ts: int, key: tuple[Address, int, Address, int], *, from_start: bool) -> Connection:
        if len(self.table) >= self.limits.max_connections:
            self._evict(ts)
        client = endpoint(key[0], key[1])
        server = endpoint(key[2], key[3])
        conv = Conversation(client, server, self.normalizer, from_start=from_start, limits=self.limits.conversation)
        conv.budget = self.prepared_budget
        conn = Connection(key, client, server, conv, ts)
        if not from_start:
            self.apply_known(conv)
        self.table[key] = conn
        self.counters.connections_opened += 1
        if not from_start:
            self.counters.connections_midstream += 1
        return conn

    def _irregular(
        self,
        ts: int,
        conn: Connection,
        direction: int,
        half: HalfStream,
        seq: int,
        payload: bytes,
        ack_off: int | None,
    ) -> None:
        off = half.offset_of(seq)
        end = off + len(payload)
        if end <= half.offset:
            self.counters.retransmitted += 1
            return
        if off > half.offset:
            held = half.ooo.get(off)
            if held is None or len(held[1]) < len(payload):
                half.ooo_bytes += len(payload) - (len(held[1]) if held is not None else 0)
                half.ooo[off] = (ts, payload)
            self.counters.out_of_order += 1
            if half.ooo_bytes > self.limits.max_ooo_bytes:
                self.counters.ooo_overflows += 1
                self._declare_gap(ts, conn, direction, half, min(half.ooo))
            return
        if off < half.offset:
            self.counters.retransmitted += 1
            payload = payload[half.offset - off :]
        half.advance(len(payload))
        self._feed(ts, conn, direction, payload, ack_off)
        self._drain(ts, conn, direction, half)

    def _drain(self, ts: int, conn: Connection, direction: int, half: HalfStream, until_ns: int | None = None) -> None:
        """Deliver held segments that have become contiguous, each at its own capture time
        (only those captured by ``until_ns``, when given)."""
        while half.ooo:
            start = min(half.ooo)
            if start > half.offset or (until_ns is not None and half.ooo[start][0] > until_ns):
                return
            held_ns, data = half.ooo.pop(start)
            half.ooo_bytes -= len(data)
            if start + len(data) <= half.offset:
                continue
            data = data[half.offset - start :]
            half.advance(len(data))
            self._feed(held_ns, conn, direction, data, None)

    def _declare_gap(
        self, ts: int, conn: Connection, direction: int, half: HalfStream, upto: int, *, drain: bool = True
    ) -> None:
        if half.ooo:
            upto = min(upto, min(half.ooo))
        size = upto - half.offset
        if size <= 0:
            return
        self.counters.gaps += 1
        self.counters.gap_bytes += size
        half.advance(size)
        events = conn.conv.gap(ts, direction, size)
        if events:
            self.on_events(events)
        if drain:
            self._drain(ts, conn, direction, half)

    def _feed(self, ts: int, conn: Connection, direction: int, data: bytes, ack_off: int | None) -> None:
        events = conn.conv.feed(ts, direction, data, ack_off)
        if events:
            self.on_events(events)

    def _teardown(
        self,
        ts: int,
        key: tuple[Address, int, Address, int],
        conn: Connection,
        direction: int,
        half: HalfStream,
        flags: int,
    ) -> None:
        if flags & TCP_RST:
            self._close(ts, key, conn, "reset")
            return
        if half.started and not half.fin:
            half.fin = True
            half.next_seq = (half.next_seq + 1) & _MASK
        if conn.halves[1 - direction].fin or not conn.halves[1 - direction].started:
            self._close(ts, key, conn, "closed")

    # -- lifetime -------------------------------------------------------------------------------

    def _close(self, ts: int, key: tuple[Address, int, Address, int], conn: Connection, reason: str) -> None:
        if conn.closed:
            return
        if conn.held is not None:
            conn.held.settle(conn)
        self._release(ts, conn, lost=True, closing=True)
        conn.closed = True
        for direction, half in enumerate(conn.halves):
            if half.ooo:
                self._declare_gap(ts, conn, direction, half, max(o + len(d) for o, (_, d) in half.ooo.items()))
        events = conn.conv.close(ts, reason)
        if events:
            self.on_events(events)
        self.unparsed_closed += conn.conv.unparsed_segments
        self.unread_closed += conn.conv.unread_exchanges
        self.non_mysql_closed += conn.conv.not_mysql
        conn.conv.release_budget()
        for name, hits in conn.conv.limit_hits.items():
            self.limit_hits_closed[name] = self.limit_hits_closed.get(name, 0) + hits
        if self.table.get(key) is conn:
            del self.table[key]
        self.counters.connections_closed += 1

    def _evict(self, ts: int) -> None:
        """The table is full: close the least recently active 1/16 of it."""
        victims = sorted(self.table.items(), key=lambda item: item[1].last_ns)
        for key, conn in victims[: max(1, len(victims) // 16)]:
            self._close(ts, key, conn, "evicted")
            self.counters.connections_evicted += 1

    def expire(self, now_ns: int) -> None:
        """Drop half-closed connections (and idle ones, when an idle timeout is set)."""
        half_closed = now_ns - self.limits.half_closed_timeout_ns
        idle = now_ns - self.limits.idle_timeout_ns if self.limits.idle_timeout_ns else None
        for key, conn in list(self.table.items()):
            if conn.waiting is not None and now_ns - conn.waiting.since_ns > self.limits.reorder_ns:
                self._release(now_ns, conn, lost=True)
                if conn.closed:
                    continue
            closing = conn.halves[0].fin or conn.halves[1].fin
            if (closing and conn.last_ns < half_closed) or (idle is not None and conn.last_ns < idle):
                self._close(now_ns, key, conn, "expired")
                self.counters.connections_expired += 1

    def close_all(self, now_ns: int, reason: str) -> None:
        for key, conn in list(self.table.items()):
            self._close(now_ns, key, conn, reason)

    def settle(self) -> None:
        """Feed every segment the compiled path holds to its conversation."""
        for conn in self.table.values():
            if conn.held is not None:
                conn.held.settle(conn)

    def apply_known(self, conv: Conversation) -> None:
        """Fill a connection seen mid-stream from what is known of it elsewhere."""
        for source in (self.restored, self.sessions):
            known = source.get(conv.client)
            if known is not None:
                user, db, conn_id, prepared = known
                conv.assume_session(user, db, conn_id)
                for stmt_id, sql in prepared.items():
                    conv.learn_prepared(int(stmt_id), sql)

    def limit_hits(self) -> dict[str, int]:
        """How often each per-connection bound bit, over all connections seen."""
        hits = dict(self.limit_hits_closed)
        for conn in self.table.values():
            for name, n in conn.conv.limit_hits.items():
                hits[name] = hits.get(name, 0) + n
        return hits

    def unparsed_segments(self) -> int:
        return self.unparsed_closed + sum(conn.conv.unparsed_segments for conn in self.table.values())

    def unread_exchanges(self) -> int:
        """Exchanges the server answered that could not be analysed (encrypted, unparsable,
        not MySQL): they count against coverage."""
        return self.unread_closed + sum(conn.conv.unread_exchanges for conn in self.table.values())

    def non_mysql_conns(self) -> int:
        """Connections on the watched port whose peers did not speak MySQL (HTTP, TLS, SSH)."""
        return self.non_mysql_closed + sum(conn.conv.not_mysql for conn in self.table.values())
