"""Fuzz target of TCP reassembly (``probe.flows`` through the engine): any capture order,
duplicates and losses of a real conversation's frames, and arbitrary segments, give counts
and never an exception; retransmissions and small reorderings change nothing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from probe.decode import LINKTYPE_ETHERNET
from probe.engine import Engine, EngineConfig
from tests.support import mysqlwire as w
from tests.support.fuzz import fuzz_settings

pytestmark = pytest.mark.fuzz


def _frames() -> list[bytes]:
    script = w.Script().login()
    for i in range(4):
        script.client(w.query(f"SELECT v FROM t WHERE id = {i}"))
        script.server(w.result_set(["v"], [[b"x" * 300]] * 3), after_us=200)
    return [frame for _, frame in w.to_frames(script, mss=200)]


FRAMES = _frames()
TEMPLATE = "SELECT v FROM t WHERE id = ?"


def _run(frames: list[bytes]) -> Engine:
    engine = Engine(EngineConfig(), LINKTYPE_ETHERNET)
    for i, frame in enumerate(frames):
        engine.packet(1_000_000_000 + i * 50_000, frame)  # capture time always moves on
    engine.finish(1_000_000_000 + len(frames) * 50_000 + 1)
    return engine


def _select(engine: Engine) -> tuple[int, int]:
    found = [t for t in engine.drain().templates if t.template == TEMPLATE]
    return (found[0].count, found[0].rows_sent) if found else (0, 0)


BASELINE = _select(_run(FRAMES))


def test_the_baseline_is_the_whole_conversation() -> None:
    assert BASELINE == (4, 12)


@fuzz_settings(200)
@given(st.lists(st.tuples(st.integers(0, len(FRAMES) - 1), st.integers(1, 6)), max_size=8))
@example(repeats=[(0, 5)])  # found: a SYN captured again after data was taken for port reuse
def test_retransmissions_change_nothing(repeats: list[tuple[int, int]]) -> None:
    frames = list(FRAMES)
    for index, later in sorted(repeats, reverse=True):
        frames.insert(min(len(frames), index + later), FRAMES[index])  # the same segment again, later
    engine = _run(frames)
    assert _select(engine) == BASELINE
    assert engine.capture_counters()["gaps"] == 0


@fuzz_settings(200)
@given(st.lists(st.integers(0, len(FRAMES) - 2), max_size=6, unique=True))
def test_neighbouring_segments_swapped_change_nothing(swaps: list[int]) -> None:
    # Each segment captured at most one place off (a segment moved further, past another of
    # its own direction, may be declared lost by design: see the flows docstring).
    frames = list(FRAMES)
    done: list[int] = []
    for i in sorted(swaps):
        if done and i - done[-1] < 2:
            continue
        frames[i], frames[i + 1] = frames[i + 1], frames[i]
        done.append(i)
    engine = _run(frames)
    assert _select(engine) == BASELINE
    assert engine.capture_counters()["gaps"] == 0


@fuzz_settings(300)
@given(st.permutations(range(len(FRAMES))), st.sets(st.integers(0, len(FRAMES) - 1), max_size=10))
def test_any_order_and_losses_never_raise_nor_invent(order: list[int], lost: set[int]) -> None:
    engine = _run([FRAMES[i] for i in order if i not in lost])
    count, rows = _select(engine)
    assert count <= BASELINE[0] and rows <= BASELINE[1]
    if not lost and order == sorted(order):
        assert (count, rows) == BASELINE


def _tcp_frame(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, b"\x0a\0\0\x01", b"\x0a\0\0\x02")
    if dport != 3306:  # server to client
        ip = ip[:12] + b"\x0a\0\0\x02" + b"\x0a\0\0\x01"
    return b"\x00" * 12 + b"\x08\x00" + ip + tcp


segments = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from([40000, 40001]),
        st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 2**31, 2**32 - 1]),
        st.integers(0, 2**32 - 1),
        st.integers(0, 255),
        st.binary(max_size=120),
    ),
    max_size=40,
)


@fuzz_settings(300)
@given(segments)
def test_arbitrary_segments_never_raise(steps: list[tuple[bool, int, int, int, int, bytes]]) -> None:
    frames = [
        _tcp_frame(3306, client, seq, ack, flags, payload)
        if to_client
        else _tcp_frame(client, 3306, seq, ack, flags, payload)
        for to_client, client, seq, ack, flags, payload in steps
    ]
    engine = _run(frames)
    engine.drain()
    assert engine.capture_counters()["connections_active"] == 0  # finish() closed every one
