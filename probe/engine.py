"""The probe engine: frames in, per-interval statistics out. Live capture and replay share it.

Owns the wiring of the sans-I/O stages (decode -> flow table and TCP reassembly -> MySQL
conversations -> aggregation) and the capture counters of the report. It never reads a
clock or a file: ``packet(ts_ns, frame)`` feeds it, ``tick(now_ns)`` expires state,
``drain(now_ns)`` ends an interval, ``finish(now_ns)`` settles what is still open at the
end of a capture. The same packets therefore give the same report, live or offline.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from probe import native
from probe.aggregate import DEFAULT_MAX_SLOW, DEFAULT_MAX_TEMPLATES, Aggregator, Interval
from probe.decode import (
    DecodeCounters,
    Segment,
    make_decoder,
)
from probe.flows import FlowLimits, FlowTable
from probe.mysql.events import (
    CommandCompleted,
    ConnectionEncrypted,
    Event,
    Garbage,
    LoginFinished,
    ReplicationStream,
    ResponseLost,
    Resynced,
    ServerError,
    ServerGreeted,
)
from probe.native import frame_decoder, plain
from probe.normalize import DEFAULT_CACHE_SIZE, Normalizer
from probe.shard import Sharder

_META = struct.Struct("IIII")
#: Recent segment signatures kept for duplicate suppression.
_DEDUP_ENTRIES = 8192
#: Counters of the compiled COM_QUERY / COM_STMT_EXECUTE path: exchanges completed in C,
#: held requests fed to Python after all, and its bounds biting (skeleton cache cleared,
#: accumulators full, an accumulator's error codes full).
FAST_COUNTERS = ("fast_exchanges", "fast_replayed", "fast_cache_resets", "fast_accs_full", "fast_error_codes_full")
#: How often (packet time) the flow table is swept for expired connections.
_SWEEP_EVERY_NS = 5_000_000_000


@dataclass
class EngineConfig:
    """What the engine watches and the bounds it keeps."""

    ports: frozenset[int] = frozenset({3306})
    """Server ports; both directions of connections to them are analysed."""
    server_ips: frozenset[bytes] | None = None
    """Packed server addresses (4 or 16 bytes) to restrict to (``--server``); ``None``: any."""
    slow_threshold_us: int = 1_000_000
    """Statements at least this slow are kept as samples."""
    max_slow: int = DEFAULT_MAX_SLOW
    """Slow samples kept per interval (the worst)."""
    max_templates: int = DEFAULT_MAX_TEMPLATES
    """Templates per interval; further ones are counted in an overflow entry."""
    redact: bool = False
    """Slow samples carry the template instead of the raw SQL and no parameters."""
    normalizer_cache: int = DEFAULT_CACHE_SIZE
    """Entries per normalizer cache."""
    flows: FlowLimits = field(default_factory=FlowLimits)
    dedup_ns: int = 0
    """Drop a segment identical to one seen within this many ns (0: off). Set when one
    packet can reach the probe twice, as when capturing on several devices."""
    shard: tuple[int, int] = (0, 1)
    """(index, count): analyse only the connections this shard owns (see ``FlowTable``).
    Replay runs one engine per core over the same file this way; live capture shards in
    the kernel instead (PACKET_FANOUT_HASH)."""


class Engine:
    def __init__(self, config: EngineConfig, linktype: int) -> None:
        self.config = config
        self.decode_counters = DecodeCounters()
        self._frames = frame_decoder(linktype, self.decode_counters)
        self._decode = plain(self._frames)
        self._linktype = linktype
        self._decoders = {linktype: self._decode}
        self._recent: OrderedDict[tuple[Any, ...], int] = OrderedDict()
        self.duplicates = 0
        self.aggregator = Aggregator(
            slow_threshold_us=config.slow_threshold_us,
            max_slow=config.max_slow,
            max_templates=config.max_templates,
            redact=config.redact,
        )
        self.normalizer = Normalizer(cache_size=config.normalizer_cache)
        self.flows = FlowTable(
            config.ports,
            self._events,
            self.normalizer,
            server_ips=config.server_ips,
            limits=config.flows,
        )
        entry = self.flows.segment_entry
        #: The compiled path's COM_QUERY and COM_STMT_EXECUTE exchanges (``probe/_cexchange.c``)
        #: are counted in C and folded into the aggregator before anything reads it (``_fold``):
        #: they raise no CommandCompleted event (a wrapper of ``flows.on_events`` does not see them).
        self._compiled = entry if native.cflows is not None and isinstance(entry, native.cflows.InOrder) else None
        if self._compiled is not None:
            self._compiled.attach(self.aggregator)
        index, count = config.shard
        self._sharder = Sharder(config.ports, index, count, config.flows.max_connections) if count > 1 else None
        self.packets = 0
        self.bytes = 0
        self.first_ns = 0  # timestamp of the first packet seen
        self.last_ns = 0
        self.events: dict[str, int] = {}
        self.servers: dict[str, str] = {}  # server address -> version, from greetings
        self._next_sweep = 0

    # -- input ----------------------------------------------------------------------------

    def batch(self, buffer: bytes, meta: bytes, linktype: int | None = None) -> None:
        """A batch as the capture adapter reads it: 16-byte (sec, usec, offset, caplen)
        records, from a source of ``linktype`` (default: the engine's)."""
        if not meta:
            return
        if self._sharder is not None:
            self._frames.sharded_batch(buffer, meta, self.flows.segment_entry, self._sharder)
        elif self.config.dedup_ns or (linktype is not None and linktype != self._linktype):
            self._general_batch(buffer, meta, self._decoder(linktype or self._linktype))
        else:
            self._frames.batch(buffer, meta, self.flows.segment_entry)
        self._batch_done(buffer, meta)

    def _decoder(self, linktype: int) -> Callable[[bytes], Segment | None]:
        decode = self._decoders.get(linktype)
        if decode is None:
            decode = self._decoders[linktype] = make_decoder(linktype, self.decode_counters)
        return decode

    def _general_batch(self, buffer: bytes, meta: bytes, decode: Callable[[bytes], Segment | None]) -> None:
        """Any link type, with duplicate suppression when configured."""
        segment = self.flows.segment_entry
        window = self.config.dedup_ns
        recent = self._recent
        for sec, usec, offset, caplen in _META.iter_unpack(meta):
            decoded = decode(buffer[offset : offset + caplen])
            if decoded is None:
                continue
            ts = sec * 1_000_000_000 + usec * 1000
            if window:
                signature = (*decoded[:7], len(decoded[7]))
                seen = recent.get(signature)
                if seen is not None and ts - seen <= window:
                    self.duplicates += 1
                    continue
                recent[signature] = ts
                recent.move_to_end(signature)
                if len(recent) > _DEDUP_ENTRIES:
                    recent.popitem(last=False)
            segment(ts, decoded)

    def _batch_done(self, buffer: bytes, meta: bytes) -> None:
        sec, usec = _META.unpack_from(meta)[:2]
        if not self.first_ns:
            self.first_ns = sec * 1_000_000_000 + usec * 1000
        sec, usec = _META.unpack_from(meta, len(meta) - _META.size)[:2]
        self.last_ns = sec * 1_000_000_000 + usec * 1000
        self.packets += len(meta) // _META.size
        self.bytes += len(buffer)
        if self.last_ns >= self._next_sweep:
            self.tick(self.last_ns)

    def packet(self, ts: int, frame: bytes) -> None:
        if not self.first_ns:
            self.first_ns = ts
        self.last_ns = ts
        self.packets += 1
        self.bytes += len(frame)
        segment = self._decode(frame)
        if segment is not None:
            self.flows.segment_entry(ts, segment)
        if ts >= self._next_sweep:
            self.tick(ts)

    def tick(self, now_ns: int) -> None:
        if self._next_sweep:
            self.flows.expire(now_ns)
        self._next_sweep = now_ns + _SWEEP_EVERY_NS

    def _events(self, events: list[Event]) -> None:
        add = self.aggregator.add
        for event in events:
            if type(event) is CommandCompleted:
                add(event)
            else:
                self._other(event)

    def _other(self, event: Event) -> None:
        counters = self.events
        if isinstance(event, LoginFinished):
            self.aggregator.add_login(event)
            return
        if isinstance(event, ServerError):
            self.aggregator.add_server_error(event)
            name = "server_errors"
        elif isinstance(event, ResponseLost):
            name = "responses_lost"
        elif isinstance(event, Resynced):
            name = "resyncs"
        elif isinstance(event, Garbage):
            name = "garbage"
        elif isinstance(event, ConnectionEncrypted):
            name = "encrypted_conns"
        elif isinstance(event, ReplicationStream):
            name = "replication_conns"
        elif isinstance(event, ServerGreeted):
            name = "greetings"
        else:
            name = "logins"
        counters[name] = counters.get(name, 0) + 1

    def learn_sessions(self, sessions: dict[str, tuple[Any, ...]]) -> int:
        """Client endpoint -> (user, db, connection id[, {statement id: SQL}]) from the
        server's process list (and prepared_statements_instances): fills in connections
        whose handshake was never seen, now and later. Returns how many it filled."""
        self.flows.settle()
        self.flows.sessions = {k: (v[0], v[1], v[2], dict(v[3]) if len(v) > 3 else {}) for k, v in sessions.items()}
        filled = 0
        for conn in self.flows.table.values():
            if conn.conv.midstream and conn.client in self.flows.sessions:
                known_before = conn.conv.user
                self.flows.apply_known(conn.conv)
                filled += conn.conv.user != known_before
        return filled

    def restore_sessions(self, restored: dict[str, tuple[str, str, int | None, dict[int, str]]]) -> None:
        """Sessions saved by a checkpoint before a restart (or read from the server):
        applied to connections seen mid-stream, now and later."""
        self.flows.settle()
        self.flows.restored = restored
        for conn in self.flows.table.values():
            if conn.conv.midstream:
                self.flows.apply_known(conn.conv)

    def session_snapshot(self, limit: int = 100_000) -> dict[str, tuple[str, str, int | None, dict[int, str]]]:
        """Per live connection, what a restart must not forget (bounded: ``limit`` entries).
        With ``redact``, prepared statements are kept as their templates (never raw SQL):
        the template of a template is itself."""
        out: dict[str, tuple[str, str, int | None, dict[int, str]]] = {}
        for conn in self.flows.table.values():
            snapshot = conn.conv.session_snapshot()
            if snapshot is not None:
                if self.config.redact and snapshot[3]:
                    prepared = {sid: self.normalizer.normalize(sql).text for sid, sql in snapshot[3].items()}
                    snapshot = (snapshot[0], snapshot[1], snapshot[2], prepared)
                out[conn.client] = snapshot
                if len(out) >= limit:
                    break
        return out

    # -- output ---------------------------------------------------------------------------

    def finish(self, now_ns: int) -> None:
        """End of capture: settle every open connection (pending requests are counted lost)."""
        self.flows.close_all(now_ns, "end of capture")
        self._fold()

    def _fold(self) -> None:
        if self._compiled is not None:
            self.aggregator.fold(self._compiled.fold())

    def capture_counters(self) -> dict[str, Any]:
        """Cumulative counters since the engine started."""
        counters: dict[str, Any] = {"packets": self.packets, "bytes": self.bytes}
        counters.update(self.decode_counters.as_dict())
        counters["tcp_segments"] = self.flows.tcp_segments
        counters["duplicates"] = self.duplicates
        counters.update(self.flows.counters.as_dict())
        for name in (
            "responses_lost",
            "resyncs",
            "garbage",
            "encrypted_conns",
            "replication_conns",
            "greetings",
            "logins",
        ):
            counters[name] = self.events.get(name, 0)
        counters["unparsed_segments"] = self.flows.unparsed_segments()
        counters["unread_exchanges"] = self.flows.unread_exchanges()
        counters["non_mysql_conns"] = self.flows.non_mysql_conns()
        counters["connections_active"] = len(self.flows.table)
        counters["normalizer_cache_resets"] = self.normalizer.cache_resets
        counters["limit_hits"] = self.flows.limit_hits()
        compiled = self._compiled
        for name in FAST_COUNTERS:  # the compiled path (probe/_cexchange.c), and its bounds
            counters[name] = getattr(compiled, name) if compiled is not None else 0
        return counters

    def drain(self) -> Interval:
        self._fold()
        return self.aggregator.drain()
