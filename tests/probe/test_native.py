"""The compiled decoder (probe._cdecode) against its pure-Python oracle (probe.decode).

Differential: hypothesis builds frames of every link type (well-formed, with random header
fields, truncated, with bytes overwritten, or plain noise) and batches of them with random
offsets, capture lengths and batch boundaries; both implementations must give the same
segments, timestamps and counters. Also: the engine selection (``probe.native``) and that
the compiled module is loaded when it is required.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from probe import native
from probe.decode import (
    BATCH_META,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    LINKTYPE_RAW_BSD,
    LINKTYPE_RAW_OPENBSD,
    DecodeCounters,
    Segment,
)
from probe.shard import Sharder
from tests.mysqlprobe.test_replay_workers import captures
from tests.support.fuzz import fuzz_settings
from tests.support.native import IMPLEMENTATIONS, REQUIRE_VARIABLE, extensions_required, frame_decoder, need_compiled

LINKTYPES = (
    LINKTYPE_NULL,
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW_BSD,
    LINKTYPE_RAW_OPENBSD,
    LINKTYPE_RAW,
    LINKTYPE_LOOP,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL2,
)
ROOT = Path(__file__).parents[2]


def _u16(value: int) -> bytes:
    return struct.pack("!H", value)


@st.composite
def tcp_part(draw: st.DrawFn) -> bytes:
    data_off = draw(st.sampled_from([5, 5, 5, 8, 0, 1, 4, 15]))
    header = struct.pack(
        "!HHIIBB",
        draw(st.sampled_from([3306, 51000, 0, 65535])),
        draw(st.sampled_from([3306, 40000, 1])),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(0, 2**32 - 1)),
        data_off << 4,
        draw(st.integers(0, 255)),
    ) + bytes(6)
    options = bytes(max(0, data_off * 4 - 20)) if draw(st.booleans()) else b""
    return header + options + draw(st.binary(max_size=80))


@st.composite
def ipv4_packet(draw: st.DrawFn) -> bytes:
    inner = draw(tcp_part())
    ihl = draw(st.sampled_from([5, 5, 5, 6, 15, 0, 2]))
    options = bytes(max(0, ihl * 4 - 20))
    total = draw(st.sampled_from([20 + len(options) + len(inner), 0, 10, 65535, len(inner)]))
    frag = draw(st.sampled_from([0, 0, 0x4000, 0x2000, 0x0010, 0x8000]))
    proto = draw(st.sampled_from([6, 6, 6, 17, 1]))
    version = draw(st.sampled_from([4, 4, 4, 6, 5, 0]))
    header = (
        bytes([version << 4 | ihl, 0])
        + _u16(total)
        + bytes(2)
        + _u16(frag)
        + bytes([64, proto])
        + bytes(2)
        + draw(st.binary(min_size=8, max_size=8))
    )
    return header + options + inner


@st.composite
def ipv6_packet(draw: st.DrawFn) -> bytes:
    inner = draw(tcp_part())
    chain = draw(st.lists(st.sampled_from([0, 43, 60, 44, 17, 59]), max_size=3))
    headers = b""
    kinds = [*chain, 6]
    for following in kinds[1:]:
        units = draw(st.integers(0, 2))
        headers += bytes([following, units]) + bytes(6 + 8 * units)
    length = draw(st.sampled_from([len(headers) + len(inner), 0, 4, 65535]))
    version = draw(st.sampled_from([6, 6, 6, 4]))
    fixed = bytes([version << 4, 0, 0, 0]) + _u16(length) + bytes([kinds[0], 64])
    return fixed + draw(st.binary(min_size=32, max_size=32)) + headers + inner


@st.composite
def frame_of(draw: st.DrawFn, linktype: int) -> bytes:
    ip = draw(st.one_of(ipv4_packet(), ipv6_packet()))
    ethertype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    ethertype = draw(st.sampled_from([ethertype, ethertype, 0x0806, 0x0800, 0x86DD]))
    if linktype == LINKTYPE_ETHERNET:
        tags = b"".join(
            _u16(tag) + _u16(draw(st.integers(0, 4095)))
            for tag in draw(st.lists(st.sampled_from([0x8100, 0x88A8, 0x9100]), max_size=2))
        )
        frame = bytes(12) + tags + _u16(ethertype) + ip
    elif linktype == LINKTYPE_LINUX_SLL:
        frame = bytes(14) + _u16(ethertype) + ip
    elif linktype == LINKTYPE_LINUX_SLL2:
        frame = _u16(ethertype) + bytes(18) + ip
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        frame = bytes([0, 0, 0, 2]) + ip
    else:
        frame = ip
    cut = draw(st.one_of(st.none(), st.integers(0, len(frame))))
    if cut is not None:
        frame = frame[:cut]
    if frame and draw(st.booleans()):
        data = bytearray(frame)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        frame = bytes(data)
    return frame


@st.composite
def linktype_and_frames(draw: st.DrawFn) -> tuple[int, list[bytes]]:
    linktype = draw(st.sampled_from(LINKTYPES))
    frames = draw(st.lists(st.one_of(frame_of(linktype), st.binary(max_size=70)), min_size=1, max_size=12))
    return linktype, frames


def _decode_all(impl: str, linktype: int, frames: list[bytes]) -> tuple[list[Segment | None], dict[str, int]]:
    counters = DecodeCounters()
    decode = frame_decoder(impl, linktype, counters)
    return [decode(frame) for frame in frames], counters.as_dict()


@pytest.mark.fuzz
@fuzz_settings(400)
@given(linktype_and_frames())
@example((LINKTYPE_ETHERNET, [b"", b"\0" * 13, b"\0" * 54, b"\xff" * 60]))
def test_frames_decode_the_same(case: tuple[int, list[bytes]]) -> None:
    need_compiled()
    linktype, frames = case
    pure = _decode_all("pure", linktype, frames)
    compiled = _decode_all("compiled", linktype, frames)
    assert compiled == pure
    for ours, theirs in zip(compiled[0], pure[0], strict=True):
        assert ours is None or [type(v) for v in ours] == [type(v) for v in theirs]  # int vs bytes addresses


def _batches(draw: st.DrawFn, frames: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The frames laid out in batches as a capture reads them, with random gaps, capture
    lengths that overshoot the frame or the buffer, and random batch boundaries."""
    out: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(frames):
        size = draw(st.integers(1, len(frames) - i))
        buffer = b""
        records = []
        for frame in frames[i : i + size]:
            buffer += bytes(draw(st.integers(0, 3)))
            caplen = len(frame) + draw(st.sampled_from([0, 0, 0, -1, 5, 100_000, 2**32 - 1 - len(frame)]))
            offset = len(buffer) if draw(st.integers(0, 9)) else draw(st.integers(0, 2**32 - 1))
            records.append((draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 999_999)), offset, max(caplen, 0)))
            buffer += frame
        out.append((buffer, b"".join(BATCH_META.pack(*r) for r in records)))
        i += size
    return out


def _run_batches(impl: str, linktype: int, batches: list[tuple[bytes, bytes]]) -> tuple[list[Any], dict[str, int]]:
    counters = DecodeCounters()
    decoder = frame_decoder(impl, linktype, counters)
    seen: list[Any] = []
    for buffer, meta in batches:
        decoder.batch(buffer, meta, lambda ts, seg: seen.append((ts, seg)))
    return seen, counters.as_dict()


@pytest.mark.fuzz
@fuzz_settings(200)
@given(st.data(), linktype_and_frames())
def test_batches_decode_the_same(data: st.DataObject, case: tuple[int, list[bytes]]) -> None:
    need_compiled()
    linktype, frames = case
    laid_out = _batches(data.draw, frames)
    pure = _run_batches("pure", linktype, laid_out)
    compiled = _run_batches("compiled", linktype, laid_out)
    assert compiled == pure


@st.composite
def connection_frame(draw: st.DrawFn) -> bytes:
    """Untagged Ethernet + IPv4 + TCP among a few endpoints (the sharded fast path), with
    the flags of opens, closes and resets, so connections are seen again and change owner."""
    payload = draw(st.sampled_from([b"", b"", b"x", b"\x05\0\0\0\x03ab"]))
    flags = draw(st.sampled_from([0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x01]))
    data_off = draw(st.sampled_from([5, 5, 8]))
    tcp = struct.pack(
        "!HHIIBB",
        draw(st.sampled_from([3306, 40000, 40000, 5000])),
        draw(st.sampled_from([3306, 3306, 40000])),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(0, 2**32 - 1)),
        data_off << 4,
        flags,
    ) + bytes(6 + 4 * (data_off - 5))
    total = 20 + len(tcp) + len(payload)
    ip = b"\x45\0" + _u16(draw(st.sampled_from([total, total, 0]))) + bytes(4) + b"\x40\x06" + bytes(2)
    ip += draw(st.sampled_from([b"\x0a\0\0\x01", b"\x0a\0\0\x02"])) + draw(
        st.sampled_from([b"\x0a\0\0\x01", b"\x0a\0\0\x02"])
    )
    return bytes(12) + b"\x08\x00" + ip + tcp + payload + bytes(draw(st.sampled_from([0, 0, 6])))


def _run_sharded(
    impl: str, linktype: int, batches: list[tuple[bytes, bytes]], index: int
) -> tuple[list[Any], dict[str, int], dict[Any, list[int]]]:
    counters = DecodeCounters()
    decoder = frame_decoder(impl, linktype, counters)
    sharder = Sharder(frozenset({3306}), index, 2, max_connections=2)  # a small map: evictions too
    seen: list[Any] = []
    for buffer, meta in batches:
        decoder.sharded_batch(buffer, meta, lambda ts, seg: seen.append((ts, seg)), sharder)
    return seen, counters.as_dict(), sharder.owners


@pytest.mark.fuzz
@fuzz_settings(300)
@given(st.data())
def test_sharded_batches_decode_the_same(data: st.DataObject) -> None:
    """A replay worker's loop: the same segments reach each worker, the same owner map."""
    need_compiled()
    linktype = data.draw(st.sampled_from([LINKTYPE_ETHERNET, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL]))
    frames = data.draw(
        st.lists(st.one_of(connection_frame(), connection_frame(), frame_of(linktype)), min_size=1, max_size=30)
    )
    batches = []
    i = 0
    while i < len(frames):  # consistent records, as a capture writes them; caplen may cut a frame
        size = data.draw(st.integers(1, len(frames) - i))
        buffer, records = b"", []
        for frame in frames[i : i + size]:
            cut = data.draw(st.sampled_from([len(frame), len(frame), max(0, len(frame) - 3)]))
            records.append(BATCH_META.pack(1, data.draw(st.integers(0, 999_999)), len(buffer), cut))
            buffer += frame
        batches.append((buffer, b"".join(records)))
        i += size
    for index in (0, 1):
        assert _run_sharded("compiled", linktype, batches, index) == _run_sharded("pure", linktype, batches, index)


def test_a_reset_forgets_an_established_connection_in_both() -> None:
    """Data then RST on one connection: both loops ask the sharder, which forgets it."""
    need_compiled()

    def frame(flags: int, payload: bytes = b"") -> bytes:
        tcp = struct.pack("!HHIIBB", 40000, 3306, 1, 1, 0x50, flags) + bytes(6)
        ip = b"\x45\0" + _u16(40 + len(payload)) + bytes(4) + b"\x40\x06" + bytes(2) + b"\x0a\0\0\x01\x0a\0\0\x02"
        return bytes(12) + b"\x08\x00" + ip + tcp + payload

    data, reset = frame(0x18, b"abc"), frame(0x04)
    batch = (data + reset, BATCH_META.pack(1, 0, 0, len(data)) + BATCH_META.pack(1, 0, len(data), len(reset)))
    for index in (0, 1):
        pure = _run_sharded("pure", LINKTYPE_ETHERNET, [batch], index)
        assert _run_sharded("compiled", LINKTYPE_ETHERNET, [batch], index) == pure
        assert pure[2] == {}  # forgotten
        assert len(pure[0]) == (2 if index == 0 else 0)  # the first connection is worker 0's


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_batch_stops_at_a_failing_callback(impl: str) -> None:
    frame = bytes(12) + b"\x08\x00\x45\x00\x00\x28" + bytes(4) + b"\x40\x06" + bytes(10) + bytes(12) + b"\x50\x10"
    frame += bytes(6)
    meta = b"".join(BATCH_META.pack(1, 2, 0, len(frame)) for _ in range(3))
    decoder = frame_decoder(impl, LINKTYPE_ETHERNET, DecodeCounters())
    calls: list[int] = []

    def segment(ts: int, seg: Segment) -> None:
        calls.append(ts)
        if len(calls) == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        decoder.batch(frame, meta, segment)
    assert calls == [1_000_002_000, 1_000_002_000]
    with pytest.raises((ValueError, struct.error)):
        decoder.batch(frame, meta[:-1], segment)
    assert len(calls) == 2  # a malformed batch is refused before any frame


def test_an_uninitialised_compiled_decoder_refuses_to_count() -> None:
    need_compiled()
    assert native.cdecode is not None
    decoder = native.cdecode.Decoder.__new__(native.cdecode.Decoder)
    with pytest.raises(RuntimeError, match="not initialised"):
        decoder(b"")
    with pytest.raises(ValueError, match="unsupported link type"):
        native.cdecode.Decoder(147, DecodeCounters())


def test_the_compiled_module_is_loaded_when_required() -> None:
    """scripts/test.sh sets MYSQLPROBE_REQUIRE_EXTENSIONS=1: the suite runs compiled."""
    if extensions_required():
        assert native.cdecode is not None, f"{REQUIRE_VARIABLE}=1 but the compiled decoder did not load"
        assert native.ENGINE == "compiled"
    else:
        assert ("compiled" if native.cdecode is not None else "pure") == native.ENGINE


def _replay(path: Path, workers: int, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "mysqlprobe.cli", "replay", str(path), "--format=json", f"--workers={workers}"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("name", ["many_templates", "drivers_mix", "logins", "sample"])
def test_replay_documents_are_equal_and_name_their_engine(tmp_path: Path, name: str, workers: int) -> None:
    """The captures of the replay tests (scapy-built ones and the sample) through each
    engine, one worker and two: the same report, timing fields included; only the
    analysis block (how long, which engine) differs."""
    need_compiled()
    path = captures(tmp_path)[name]
    pure = _replay(path, workers, {"MYSQLPROBE_NO_EXTENSIONS": "1"})
    compiled = _replay(path, workers, {"MYSQLPROBE_NO_EXTENSIONS": "0"})
    assert pure["analysis"]["engine"] == "pure"
    assert compiled["analysis"]["engine"] == "compiled"
    assert pure["totals"]["commands"] > 0
    for doc in (pure, compiled):
        del doc["analysis"]
    assert compiled == pure
