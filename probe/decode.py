"""Frames to TCP segments: link layer, IPv4/IPv6 and TCP header decoding.

Owns the link types the probe reads (Ethernet with 802.1Q/802.1ad tags, Linux cooked SLL
and SLL2 from device ``any``, BSD NULL/LOOP, raw IP, and the IPv4/IPv6 link types) and
the counters of what is not a TCP segment. IP fragments are counted and skipped: MySQL
traffic is TCP and fragments of it only appear under broken path MTU settings.

``make_decoder(linktype, counters)`` returns a function ``frame -> Segment | None`` built
for that link type, so the per-packet path has no link-type dispatch; ``decode_batch`` runs
it over a capture batch. Both are the pure-Python oracle of the compiled decoder
(``probe/_cdecode.c``, chosen by ``probe/native.py``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields

# pcap link types (DLT_* as libpcap reports them, plus LINKTYPE_* of files).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD = 12
LINKTYPE_RAW_OPENBSD = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
_IPV6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

_TCP = struct.Struct("!HHII")
#: A capture batch record: (sec, usec, offset, caplen), native byte order.
BATCH_META = struct.Struct("IIII")
_IPV4_ADDRS = struct.Struct("!II")
#: Untagged Ethernet + IPv4 without options + TCP in one call: ethertype, version/IHL,
#: total length, flags/fragment offset, protocol, source, destination, ports, sequence,
#: acknowledgement, TCP data offset, TCP flags.
ETH_IPV4_TCP = struct.Struct("!12xHBxH2xHxB2xIIHHIIBB")


#: An IP address as decoded: an ``int`` for IPv4 (what one struct call yields, no slicing),
#: 16 packed bytes for IPv6. ``ipaddress.ip_address`` accepts both.
Address = int | bytes
#: A TCP segment: (src, dst, sport, dport, seq, ack, flags, payload). A plain tuple: built
#: once per packet, and a named tuple's Python-level constructor costs 3x more.
Segment = tuple[Address, Address, int, int, int, int, int, bytes]


@dataclass
class DecodeCounters:
    """Frames that did not yield a TCP segment, by reason."""

    non_ip: int = 0
    non_tcp: int = 0
    ip_fragments: int = 0
    truncated: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class UnsupportedLinkType(ValueError):
    pass


def _ip_decoder(counters: DecodeCounters) -> Callable[[bytes, int], Segment | None]:
    unpack_tcp = _TCP.unpack_from
    unpack_addrs = _IPV4_ADDRS.unpack_from

    def ip(frame: bytes, off: int) -> Segment | None:
        try:
            version = frame[off] >> 4
            src: Address
            dst: Address
            if version == 4:
                ihl = (frame[off] & 0x0F) << 2
                if frame[off + 9] != 6:
                    counters.non_tcp += 1
                    return None
                if (frame[off + 6] << 8 | frame[off + 7]) & 0x3FFF:
                    counters.ip_fragments += 1
                    return None
                total = frame[off + 2] << 8 | frame[off + 3]
                end = off + total if total else len(frame)  # 0: segmentation offload
                src, dst = unpack_addrs(frame, off + 12)
                t = off + ihl
            elif version == 6:
                nxt = frame[off + 6]
                end = off + 40 + (frame[off + 4] << 8 | frame[off + 5])
                src = frame[off + 8 : off + 24]
                dst = frame[off + 24 : off + 40]
                t = off + 40
                while nxt != 6:
                    if nxt in _IPV6_EXTENSIONS:
                        nxt = frame[t]
                        t += (frame[t + 1] + 1) << 3
                    elif nxt == _IPV6_FRAGMENT:
                        counters.ip_fragments += 1
                        return None
                    else:
                        counters.non_tcp += 1
                        return None
            else:
                counters.non_ip += 1
                return None
            sport, dport, seq, ack = unpack_tcp(frame, t)
            flags = frame[t + 13]
            data_off = t + ((frame[t + 12] >> 4) << 2)
        except (IndexError, struct.error):
            counters.truncated += 1
            return None
        if end > len(frame):
            end = len(frame)  # snap length cut the frame: keep what was captured
        return (src, dst, sport, dport, seq, ack, flags, frame[data_off:end])

    return ip


def make_decoder(linktype: int, counters: DecodeCounters) -> Callable[[bytes], Segment | None]:
    """A frame decoder for ``linktype``; raises ``UnsupportedLinkType`` for others."""
    ip = _ip_decoder(counters)

    if linktype == LINKTYPE_ETHERNET:
        fixed = ETH_IPV4_TCP.unpack_from

        def ethernet(frame: bytes) -> Segment | None:
            # Fast path: untagged Ethernet, IPv4 without options, TCP, no fragment. One
            # struct call reads every header field (1.0 µs a packet against 1.9 µs).
            if len(frame) >= 54:
                ethertype, ihl, total, frag, proto, src, dst, sport, dport, seq, ack, data_off, flags = fixed(frame)
                if ethertype == ETHERTYPE_IPV4 and ihl == 0x45 and proto == 6 and not frag & 0x3FFF:
                    end = 14 + total if total else len(frame)
                    return (src, dst, sport, dport, seq, ack, flags, frame[34 + (data_off >> 4 << 2) : end])
            if len(frame) < 14:
                counters.truncated += 1
                return None
            ethertype = frame[12] << 8 | frame[13]
            off = 14
            while ethertype in _VLAN_TAGS:
                if len(frame) < off + 4:
                    counters.truncated += 1
                    return None
                ethertype = frame[off + 2] << 8 | frame[off + 3]
                off += 4
            if ethertype == ETHERTYPE_IPV4 or ethertype == ETHERTYPE_IPV6:
                return ip(frame, off)
            counters.non_ip += 1
            return None

        return ethernet

    if linktype == LINKTYPE_LINUX_SLL or linktype == LINKTYPE_LINUX_SLL2:
        proto_at, off = (14, 16) if linktype == LINKTYPE_LINUX_SLL else (0, 20)

        def cooked(frame: bytes) -> Segment | None:
            if len(frame) < off:
                counters.truncated += 1
                return None
            proto = frame[proto_at] << 8 | frame[proto_at + 1]
            if proto == ETHERTYPE_IPV4 or proto == ETHERTYPE_IPV6:
                return ip(frame, off)
            counters.non_ip += 1
            return None

        return cooked

    if linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:

        def loopback(frame: bytes) -> Segment | None:
            # The family is host byte order in NULL, network order in LOOP; the IP
            # version nibble tells IPv4 from IPv6 whatever the family value.
            if len(frame) < 5:
                counters.truncated += 1
                return None
            return ip(frame, 4)

        return loopback

    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_BSD, LINKTYPE_RAW_OPENBSD, LINKTYPE_IPV4, LINKTYPE_IPV6):

        def raw(frame: bytes) -> Segment | None:
            if not frame:
                counters.truncated += 1
                return None
            return ip(frame, 0)

        return raw

    raise UnsupportedLinkType(f"unsupported link type {linktype}")


def decode_batch(
    decode: Callable[[bytes], Segment | None],
    buffer: bytes,
    meta: bytes,
    segment: Callable[[int, Segment], object],
) -> None:
    """Decode each frame of a capture batch (``BATCH_META`` records over ``buffer``) and
    call ``segment(ts_ns, seg)`` for each TCP segment, in order."""
    for sec, usec, offset, caplen in BATCH_META.iter_unpack(meta):
        decoded = decode(buffer[offset : offset + caplen])
        if decoded is not None:
            segment(sec * 1_000_000_000 + usec * 1000, decoded)
