"""Replay sharding: which of ``count`` workers owns a connection, and the batch loop of one.

Owns ``Sharder`` (the owner map every worker keeps the same way, from packet headers
alone) and ``sharded_batch``, a worker's batch loop; ``probe/_cdecode.c`` has the
compiled form of the loop (``Decoder.sharded_batch``), tested equal to this one.
"""

from __future__ import annotations

from collections.abc import Callable

from probe.decode import (
    BATCH_META,
    ETH_IPV4_TCP,
    LINKTYPE_ETHERNET,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Address,
    Segment,
)


class Sharder:
    """Which connections one of ``count`` replay workers owns.

    Every worker reads every packet and keeps this map the same way, from packet headers
    alone, so each connection has exactly one owner. Owners are dealt round-robin in order
    of first sight: balanced even for a handful of connections, where a hash of the ports
    is lumpy. A connection is keyed by (client address, client port, server port): a probe
    watches one host, whose address does not tell its connections apart.
    """

    def __init__(self, ports: frozenset[int], index: int, count: int, max_connections: int) -> None:
        self.ports = ports
        self.index = index
        self.count = count
        self.limit = 4 * max_connections
        self.owners: dict[tuple[Address, int, int], list[int]] = {}
        self._next = 0

    def owns_segment(self, segment: Segment) -> bool:
        """The general path, for frames the engine's fast path does not read itself."""
        src, dst, sport, dport, _, _, flags, payload = segment
        if dport in self.ports:
            return self.owner((src, sport, dport), 0, flags, bool(payload)) == self.index
        if sport in self.ports:
            return self.owner((dst, dport, sport), 1, flags, bool(payload)) == self.index
        return self.index == 0  # other ports: counted once, by the first worker

    def owner(self, key: tuple[Address, int, int], direction: int, flags: int, has_payload: bool) -> int:
        owners = self.owners
        entry = owners.get(key)
        client_syn = flags & TCP_SYN and not flags & TCP_ACK
        if entry is None or (client_syn and entry[1]):
            if not has_payload and not flags & TCP_SYN:
                return 0  # a bare ACK/FIN/RST of an unknown connection: the first worker's
            if len(owners) >= self.limit:
                del owners[next(iter(owners))]
            entry = owners[key] = [self._next, 0]
            self._next = (self._next + 1) % self.count
        elif client_syn:
            entry[1] = 1
        owner = entry[0]
        if flags & (TCP_RST | TCP_FIN):
            if flags & TCP_RST:
                del owners[key]
            else:
                entry[1] |= 2 << direction
                if entry[1] & 6 == 6:
                    del owners[key]
        elif not flags & TCP_SYN:
            entry[1] |= 1
        return owner


def sharded_batch(
    decode: Callable[[bytes], Segment | None],
    linktype: int,
    buffer: bytes,
    meta: bytes,
    segment: Callable[[int, Segment], object],
    sharder: Sharder,
) -> None:
    """The batch loop of one replay worker: foreign connections' packets cost one header
    unpack and one dict lookup, before any decoding. The pure-Python oracle of the
    compiled ``Decoder.sharded_batch``."""
    header = ETH_IPV4_TCP.unpack_from
    ports = sharder.ports
    owners = sharder.owners
    index = sharder.index
    fast = linktype == LINKTYPE_ETHERNET
    for sec, usec, offset, caplen in BATCH_META.iter_unpack(meta):
        if fast and caplen >= 54:
            ethertype, ihl, total, frag, proto, src, dst, sport, dport, seq, ack, data_off, flags = header(
                buffer, offset
            )
            if ethertype == 0x0800 and ihl == 0x45 and proto == 6 and not frag & 0x3FFF:
                if dport in ports:
                    key = (src, sport, dport)
                    direction = 0
                elif sport in ports:
                    key = (dst, dport, sport)
                    direction = 1
                else:
                    if index:
                        continue
                    key = None
                if key is not None:
                    entry = owners.get(key)
                    if entry is not None and not flags & 0x07 and entry[1]:
                        # An established connection, no SYN/FIN/RST: the common case.
                        if entry[0] != index:
                            continue
                    elif sharder.owner(key, direction, flags, total > 20 + (data_off >> 4 << 2)) != index:
                        continue
                end = offset + 14 + total if total else offset + caplen
                if end > offset + caplen:
                    end = offset + caplen
                payload = buffer[offset + 34 + (data_off >> 4 << 2) : end]
                segment(sec * 1_000_000_000 + usec * 1000, (src, dst, sport, dport, seq, ack, flags, payload))
                continue
        # Any other frame: every worker decodes it (so decode counters agree) and the
        # owner analyses it.
        decoded = decode(buffer[offset : offset + caplen])
        if decoded is not None and sharder.owns_segment(decoded):
            segment(sec * 1_000_000_000 + usec * 1000, decoded)
