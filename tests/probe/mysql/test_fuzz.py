"""The parser's contract: any bytes, split anywhere, give events or documented reports
(Garbage, Resynced, ResponseLost) and never an exception out of feed/gap/close."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probe.mysql import constants as c
from probe.mysql.conversation import Conversation, ConversationLimits
from probe.mysql.events import TO_CLIENT, TO_SERVER, CommandCompleted
from probe.normalize import Normalizer
from tests.support import mysqlwire as w
from tests.support.fuzz import fuzz_settings

pytestmark = pytest.mark.fuzz

_NORMALIZER = Normalizer()
_LIMITS = ConversationLimits(max_query_bytes=4096, max_packet_buffer=1 << 16, max_pending_bytes=8 * 400)


def _valid_chunks() -> list[tuple[int, bytes]]:
    script = (
        w.Script()
        .login()
        .client(w.query("SELECT a FROM t WHERE id = 1"))
        .server(w.result_set(["a"], [[b"x"], [None]]))
        .client(w.framed([bytes([c.Command.STMT_PREPARE]) + b"SELECT ? FROM t"]))
        .server(w.prepare_ok(1, columns=1, params=1))
        .client(w.execute(1, [(c.TYPE_LONG, b"\x01\x00\x00\x00")]))
        .server(w.result_set(["a"], [[b"1"]]))
        .client(w.query("SELECT 1; SELECT 2"))
        .server(
            w.result_set(["1"], [[b"1"]], status=c.SERVER_MORE_RESULTS_EXISTS) + w.result_set(["2"], [[b"2"]], seq=5)
        )
    )
    return [(direction, data) for _, direction, data in script.timed()]


VALID = _valid_chunks()

chunks = st.lists(
    st.tuples(st.sampled_from([TO_SERVER, TO_CLIENT]), st.binary(min_size=0, max_size=300)),
    max_size=30,
)


def _drive(conv: Conversation, steps: list[tuple[int, bytes]], gaps: list[int] | None = None) -> int:
    ts = 1
    produced = 0
    for i, (direction, data) in enumerate(steps):
        ts += 1000
        produced += len(conv.feed(ts, direction, data, None if i % 3 else ts % 5000))
        if gaps and i in gaps:
            produced += len(conv.gap(ts, direction, 1 + i))
    produced += len(conv.close(ts + 1))
    return produced


@fuzz_settings(300)
@given(chunks, st.booleans())
def test_random_bytes_never_raise(steps: list[tuple[int, bytes]], from_start: bool) -> None:
    conv = Conversation("c:1", "s:2", _NORMALIZER, from_start=from_start, limits=_LIMITS)
    _drive(conv, steps)


@fuzz_settings(300)
@given(
    st.lists(st.integers(min_value=0, max_value=len(VALID) - 1), min_size=1, max_size=20),
    st.lists(st.tuples(st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=255))),
    st.lists(st.integers(min_value=1, max_value=400), max_size=10),
    st.lists(st.integers(min_value=0, max_value=20), max_size=3),
    st.booleans(),
)
def test_mutated_conversations_never_raise(
    order: list[int],
    mutations: list[tuple[int, int]],
    cuts: list[int],
    gaps: list[int],
    from_start: bool,
) -> None:
    stream = [(VALID[i][0], bytearray(VALID[i][1])) for i in order]
    for position, value in mutations:
        direction, data = stream[position % len(stream)]
        if data:
            data[position % len(data)] = value
    steps: list[tuple[int, bytes]] = []
    for index, (direction, data) in enumerate(stream):
        cut = cuts[index % len(cuts)] if cuts else len(data)
        for start in range(0, len(data), max(1, cut)):
            steps.append((direction, bytes(data[start : start + cut])))
    conv = Conversation("c:1", "s:2", _NORMALIZER, from_start=from_start, limits=_LIMITS)
    _drive(conv, steps, gaps)


@fuzz_settings(100)
@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=40))
def test_valid_stream_split_anywhere_gives_the_same_commands(cuts: list[int]) -> None:
    def commands(split: bool) -> list[tuple[str, int]]:
        conv = Conversation("c:1", "s:2", _NORMALIZER, from_start=True)
        out = []
        ts = 0
        k = 0
        for direction, data in VALID:
            pieces = [data]
            if split:
                pieces = []
                pos = 0
                while pos < len(data):
                    step = cuts[k % len(cuts)]
                    k += 1
                    pieces.append(data[pos : pos + step])
                    pos += step
            for piece in pieces:
                ts += 1
                out += [
                    (e.template, e.rows_sent)
                    for e in conv.feed(ts, direction, piece)
                    if isinstance(e, CommandCompleted)
                ]
        return out

    assert commands(True) == commands(False)


@fuzz_settings(400)
@given(
    st.lists(st.integers(min_value=0, max_value=0xFFFF), min_size=1, max_size=6),
    st.binary(max_size=80),
    st.booleans(),
)
def test_execute_parameters_of_any_shape_never_raise(types: list[int], values: bytes, bind: bool) -> None:
    conv = Conversation("c:1", "s:2", _NORMALIZER, from_start=True)
    steps = [(direction, data) for _, direction, data in w.Script().login().timed()]
    steps.append(
        (TO_SERVER, w.framed([bytes([c.Command.STMT_PREPARE]) + b"SELECT " + b"?," * (len(types) - 1) + b"?"]))
    )
    steps.append((TO_CLIENT, w.prepare_ok(1, columns=0, params=len(types))))
    body = bytes([c.Command.STMT_EXECUTE]) + b"\x01\x00\x00\x00\x00\x01\x00\x00\x00"
    body += b"\x00" * ((len(types) + 7) // 8) + (b"\x01" if bind else b"\x00")
    if bind:
        body += b"".join(t.to_bytes(2, "little") for t in types)
    steps.append((TO_SERVER, w.framed([body + values])))
    steps.append((TO_CLIENT, w.framed([w.ok()], 1)))
    _drive(conv, steps)
