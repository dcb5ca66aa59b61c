"""Cutting a capture batch at a drain's end: every packet lands on exactly one side, in order."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from mysqlprobe.live import split_batch

META = struct.Struct("IIII")


def make_batch(packets: list[tuple[int, bytes]]) -> tuple[bytes, bytes]:
    buffer = b""
    meta = b""
    for ts_us, frame in packets:
        meta += META.pack(ts_us // 1_000_000, ts_us % 1_000_000, len(buffer), len(frame))
        buffer += frame
    return buffer, meta


def unpack(batch: tuple[bytes, bytes] | None) -> list[tuple[int, bytes]]:
    if batch is None:
        return []
    buffer, meta = batch
    return [(sec * 1_000_000 + usec, buffer[o : o + n]) for sec, usec, o, n in META.iter_unpack(meta)]


@given(
    st.lists(st.tuples(st.integers(0, 10**7), st.binary(min_size=1, max_size=40)), min_size=1, max_size=50),
    st.integers(0, 10**7),
)
def test_split_batch_keeps_every_packet_once(packets: list[tuple[int, bytes]], cut_us: int) -> None:
    packets.sort(key=lambda p: p[0])  # a handle hands packets over in capture order
    before, after = split_batch(make_batch(packets), cut_us * 1000)
    assert unpack(before) + unpack(after) == packets
    assert all(ts < cut_us for ts, _ in unpack(before))
    assert all(ts >= cut_us for ts, _ in unpack(after))
    if before is not None and after is None:
        assert before == make_batch(packets)  # the common case costs no copy
