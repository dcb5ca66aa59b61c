"""The probe engine: frames in, per-interval statistics out. Live capture and replay share it.

Owns the wiring of the sans-I/O stages (decode -> flow table and TCP reassembly -> MySQL
conversations -> aggregation) and the capture counters of the report. It never reads a
clock or a file: ``packet(ts_ns, frame)`` feeds it, ``tick(now_ns)`` expires state,
``drain(now_ns)`` ends an interval, ``finish(now_ns)`` settles what is still open at the
end of a capture. The same packets therefore give the same report, live or offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from probe.aggregate import DEFAULT_MAX_SLOW, DEFAULT_MAX_TEMPLATES, Aggregator, Interval
from probe.decode import DecodeCounters, Segment, make_decoder
from probe.flows import FlowLimits, FlowTable
from probe.mysql.events import (
    CommandCompleted,
    ConnectionEncrypted,
    Event,
    Garbage,
    ReplicationStream,
    ResponseLost,
    Resynced,
    ServerGreeted,
)
from probe.normalize import DEFAULT_CACHE_SIZE, Normalizer

#: How often (packet time) the flow table is swept for expired connections.
_SWEEP_EVERY_NS = 5_000_000_000


@dataclass
class EngineConfig:
    """What the engine watches and the bounds it keeps."""

    ports: frozenset[int] = frozenset({3306})
    """Server ports; both directions of connections to them are analysed."""
    server_ips: frozenset[bytes] | None = None
    """Packed server addresses to restrict to (``--server``); ``None`` means any."""
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


class Engine:
    def __init__(self, config: EngineConfig, linktype: int) -> None:
        self.config = config
        self.decode_counters = DecodeCounters()
        self._decode = make_decoder(linktype, self.decode_counters)
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
        self.packets = 0
        self.bytes = 0
        self.events: dict[str, int] = {}
        self.servers: dict[str, str] = {}  # server address -> version, from greetings
        self._next_sweep = 0

    # -- input ----------------------------------------------------------------------------

    def packet(self, ts: int, frame: bytes) -> None:
        self.packets += 1
        self.bytes += len(frame)
        segment = self._decode(frame)
        if segment is not None:
            self.flows.segment(ts, segment)
        if ts >= self._next_sweep:
            self.tick(ts)

    def segment(self, ts: int, segment: Segment) -> None:
        """An already-decoded segment (live capture decodes before sharding)."""
        self.packets += 1
        self.bytes += len(segment.payload)
        self.flows.segment(ts, segment)

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
        if isinstance(event, ResponseLost):
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

    # -- output ---------------------------------------------------------------------------

    def finish(self, now_ns: int) -> None:
        """End of capture: settle every open connection (pending requests are counted lost)."""
        self.flows.close_all(now_ns, "end of capture")

    def capture_counters(self) -> dict[str, Any]:
        """Cumulative counters since the engine started."""
        counters: dict[str, Any] = {"packets": self.packets, "bytes": self.bytes}
        counters.update(self.decode_counters.as_dict())
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
        counters["connections_active"] = len(self.flows.table)
        counters["normalizer_cache_resets"] = self.normalizer.cache_resets
        limit_hits: dict[str, int] = {}
        for conn in self.flows.table.values():
            for name, n in conn.conv.limit_hits.items():
                limit_hits[name] = limit_hits.get(name, 0) + n
        counters["limit_hits"] = limit_hits
        return counters

    def drain(self) -> Interval:
        return self.aggregator.drain()
