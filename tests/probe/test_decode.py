"""Link-layer, IP and TCP decoding of frames built with scapy, by both implementations
(probe.decode and the compiled probe._cdecode)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether, Loopback
from scapy.packet import Raw

from probe import native
from probe.decode import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    DecodeCounters,
    UnsupportedLinkType,
    make_decoder,
)
from tests.support.native import IMPLEMENTATIONS, frame_decoder

PAYLOAD = b"\x05\x00\x00\x00\x03SELECT"
TCP_PART = TCP(sport=51000, dport=3306, seq=77, ack=99, flags="PA") / Raw(PAYLOAD)


_impl = ["pure"]


@pytest.fixture(autouse=True, params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> str:
    """Every test here runs against each implementation."""
    _impl[0] = request.param
    frame_decoder(request.param, LINKTYPE_ETHERNET, DecodeCounters())  # skips/fails if not built
    return str(request.param)


def decode(linktype: int, frame: bytes) -> tuple[object, DecodeCounters]:
    counters = DecodeCounters()
    return frame_decoder(_impl[0], linktype, counters)(frame), counters


def test_ethernet_ipv4() -> None:
    seg, _ = decode(LINKTYPE_ETHERNET, bytes(Ether() / IP(src="10.0.0.7", dst="10.0.0.1") / TCP_PART))
    # IPv4 addresses decode to ints (one struct call, no slicing).
    assert seg == (0x0A000007, 0x0A000001, 51000, 3306, 77, 99, 0x18, PAYLOAD)


def test_ethernet_padding_is_trimmed() -> None:
    frame = bytes(Ether() / IP(src="10.0.0.7", dst="10.0.0.1") / TCP(sport=1, dport=3306, flags="A"))
    seg, _ = decode(LINKTYPE_ETHERNET, frame + b"\0" * 6)
    assert seg is not None and seg[7] == b""


@pytest.mark.parametrize("tags", [[Dot1Q(vlan=10)], [Dot1AD(vlan=5), Dot1Q(vlan=10)]])
def test_vlan_tags(tags: list[object]) -> None:
    pkt = Ether()
    for tag in tags:
        pkt = pkt / tag
    seg, _ = decode(LINKTYPE_ETHERNET, bytes(pkt / IP(src="10.0.0.7", dst="10.0.0.1") / TCP_PART))
    assert seg is not None and seg[7] == PAYLOAD


def test_ipv4_options_take_the_general_path() -> None:
    frame = bytes(Ether() / IP(src="10.0.0.7", dst="10.0.0.1", options=[IPOption_Router_Alert()]) / TCP_PART)
    seg, _ = decode(LINKTYPE_ETHERNET, frame)
    assert seg is not None and seg[:4] == (0x0A000007, 0x0A000001, 51000, 3306) and seg[7] == PAYLOAD


def test_linux_cooked_v1_and_v2() -> None:
    frame = bytes(CookedLinux(proto=0x0800) / IP(src="10.0.0.7", dst="10.0.0.1") / TCP_PART)
    assert decode(LINKTYPE_LINUX_SLL, frame)[0] is not None
    sll2 = b"\x08\x00" + b"\0" * 18 + bytes(IP(src="10.0.0.7", dst="10.0.0.1") / TCP_PART)
    seg, _ = decode(LINKTYPE_LINUX_SLL2, sll2)
    assert seg is not None and seg[7] == PAYLOAD


def test_bsd_loopback_and_raw_ip() -> None:
    assert decode(LINKTYPE_NULL, bytes(Loopback(type=2) / IP() / TCP_PART))[0] is not None
    assert decode(LINKTYPE_LOOP, b"\0\0\0\x02" + bytes(IP() / TCP_PART))[0] is not None
    assert decode(LINKTYPE_RAW, bytes(IP() / TCP_PART))[0] is not None


def test_ipv6_with_extension_header() -> None:
    frame = bytes(Ether() / IPv6(src="fd00::7", dst="fd00::1") / IPv6ExtHdrHopByHop() / TCP_PART)
    seg, _ = decode(LINKTYPE_ETHERNET, frame)
    assert seg is not None and seg[0] == bytes.fromhex("fd00" + "00" * 13 + "07") and seg[3] == 3306
    assert seg[7] == PAYLOAD


def test_fragments_non_tcp_and_truncated_are_counted() -> None:
    _, counters = decode(LINKTYPE_ETHERNET, bytes(Ether() / IP(flags="MF", frag=0) / TCP_PART))
    assert counters.ip_fragments == 1
    _, counters = decode(LINKTYPE_ETHERNET, bytes(Ether() / IPv6() / IPv6ExtHdrFragment() / TCP_PART))
    assert counters.ip_fragments == 1
    _, counters = decode(LINKTYPE_ETHERNET, bytes(Ether() / IP() / UDP() / Raw(b"x")))
    assert counters.non_tcp == 1
    _, counters = decode(LINKTYPE_ETHERNET, bytes(Ether(type=0x0806) / Raw(b"\0" * 28)))
    assert counters.non_ip == 1
    whole = bytes(Ether() / IP() / TCP_PART)
    _, counters = decode(LINKTYPE_ETHERNET, whole[:40])
    assert counters.truncated == 1


def test_unsupported_link_type() -> None:
    with pytest.raises(UnsupportedLinkType):
        make_decoder(147, DecodeCounters())
    with pytest.raises(UnsupportedLinkType):
        native.frame_decoder(147, DecodeCounters())
