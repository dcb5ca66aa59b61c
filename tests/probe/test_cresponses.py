"""The compiled server walker (probe._cresponses) against its oracle, the pure loop of
``Responses._server_plain``.

Differential: two conversations, one with the walker and one without, are fed the same
bytes and must give the same events after every segment and end in the same state (every
field of the connection, its pending requests and prepared statements). The bytes are
conversations hypothesis builds from every response kind (text and binary result sets
with and without CLIENT_DEPRECATE_EOF, MariaDB's metadata flag, multi-results, CALL, OK
packets of every shape, ERR, LOCAL INFILE, prepares, cursors, pipelining), cut into random
segments, with bytes overwritten; payloads of 16 MiB and more; and random packets fed to a
request in each parser state. The walker itself is fuzzed with random arguments.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from probe import native
from probe.mysql import constants as c
from probe.mysql import state
from probe.mysql.conversation import Conversation, ConversationLimits
from probe.mysql.events import TO_CLIENT, TO_SERVER, Event
from probe.mysql.state import Request
from probe.normalize import Normalizer
from tests.support import mysqlwire as w
from tests.support.fuzz import fuzz_settings
from tests.support.native import need_compiled

LIMITS = ConversationLimits(max_query_bytes=4096, max_packet_buffer=1 << 16)


def pair(*, from_start: bool = True, limits: ConversationLimits | None = None) -> tuple[Conversation, Conversation]:
    """(pure, compiled) conversations of the same connection."""
    need_compiled()
    assert native.cresponses is not None
    pure = Conversation("10.0.0.7:51000", "10.0.0.1:3306", Normalizer(), from_start=from_start, limits=limits)
    compiled = Conversation("10.0.0.7:51000", "10.0.0.1:3306", Normalizer(), from_start=from_start, limits=limits)
    pure._walk = None
    compiled._walk = native.cresponses.walk
    return pure, compiled


def plain(value: Any) -> Any:
    """A comparable picture of a conversation's state: objects become their fields."""
    if isinstance(value, (str, bytes, int, float, bool, type(None))):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, (list, set)) or type(value).__name__ == "deque":
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    # Instance fields and class-level defaults (``Request`` keeps its defaults on the class:
    # a field set back to its default is the same state whether or not it was set).
    names = set(getattr(value, "__dict__", {}))
    for klass in type(value).__mro__:
        names |= {k for k, v in vars(klass).items() if not k.startswith("__") and not callable(v)}
        names |= set(getattr(klass, "__slots__", ()))
    names -= {k for k in names if isinstance(getattr(type(value), k, None), (property, staticmethod, classmethod))}
    fields = {name: getattr(value, name, None) for name in names}
    for skip in ("normalizer", "_walk", "_events", "budget", "_c_inflate", "_s_inflate"):
        fields.pop(skip, None)
    return {k: plain(v) for k, v in fields.items()}


def feed_both(pure: Conversation, compiled: Conversation, steps: list[tuple[int, bytes, int | None]]) -> list[Event]:
    """Feed both; events equal after every segment, states equal at the end."""
    everything: list[Event] = []
    ts = 1_700_000_000_000_000_000
    for direction, data, ack in steps:
        ts += 1000
        expected = pure.feed(ts, direction, data, ack)
        got = compiled.feed(ts, direction, data, ack)
        assert got == expected
        everything += expected
    assert plain(compiled) == plain(pure)
    closed = pure.close(ts + 1)
    assert compiled.close(ts + 1) == closed
    return everything + closed


# -- conversations of every response kind ----------------------------------------------------

SELECT = "SELECT a FROM t WHERE id = 1"
values = st.one_of(
    st.none(),
    st.binary(max_size=8),
    st.sampled_from([b"", b"\xfe\x00", b"\xff", b"x" * 251, b"y" * 300, b"z" * 70000]),
)


@st.composite
def text_result(draw: st.DrawFn, deprecate_eof: bool, status: int = c.SERVER_STATUS_AUTOCOMMIT, seq: int = 1) -> bytes:
    columns = [f"c{i}" for i in range(draw(st.integers(1, 3)))]
    rows = draw(st.lists(st.lists(values, min_size=len(columns), max_size=len(columns)), max_size=6))
    if draw(st.booleans()) and rows:
        rows = rows * draw(st.integers(2, 5))  # runs of equal rows
    flag = draw(st.booleans())
    return w.result_set(columns, rows, deprecate_eof=deprecate_eof, status=status, metadata_flag=flag, seq=seq)


def ok_packet(draw: st.DrawFn, *, header: int = 0x00, more: bool = False) -> bytes:
    status = draw(st.sampled_from([0, c.SERVER_STATUS_AUTOCOMMIT, 0x4000 | 2, 0x0040 | 2]))
    if more:
        status |= c.SERVER_MORE_RESULTS_EXISTS
    affected = draw(st.sampled_from([0, 1, 7, 250, 251, 300, 70000]))
    insert_id = draw(st.sampled_from([0, 5, 251, 1 << 20]))
    if status & c.SERVER_SESSION_STATE_CHANGED:
        return w.ok(affected, insert_id, status & ~c.SERVER_SESSION_STATE_CHANGED, schema="other", header=header)
    return w.ok(affected, insert_id, status, draw(st.integers(0, 3)), header=header)


@st.composite
def exchange(draw: st.DrawFn, deprecate_eof: bool) -> list[tuple[int, bytes]]:
    """One request and its response, as (direction, bytes) parts."""
    kind = draw(
        st.sampled_from(
            [
                *("select", "cached", "ok", "err", "multi", "call", "infile", "ping"),
                *("use", "reset", "prepare", "old_eof", "cursor"),
            ]
        )
    )
    if kind == "select":
        return [(TO_SERVER, w.query(SELECT)), (TO_CLIENT, draw(text_result(deprecate_eof)))]
    if kind == "cached":
        # MariaDB's cached metadata: a column count with the flag 0, no definitions.
        rows = [w.text_row(value) for value in draw(st.lists(values, max_size=4))]
        end = w.ok(header=0xFE) if deprecate_eof else w.eof()
        payloads = [b"\x01\x00", *([] if deprecate_eof else [w.eof()]), *rows, end]
        return [(TO_SERVER, w.query(SELECT)), (TO_CLIENT, w.framed(payloads, 1))]
    if kind == "ok":
        return [(TO_SERVER, w.query("UPDATE t SET a = 2")), (TO_CLIENT, w.framed([ok_packet(draw)], 1))]
    if kind == "err":
        return [(TO_SERVER, w.query("SELECT * FROM nope")), (TO_CLIENT, w.framed([w.err(1146, "42S02", "no")], 1))]
    if kind == "multi":
        more = c.SERVER_MORE_RESULTS_EXISTS | c.SERVER_STATUS_AUTOCOMMIT
        first = draw(text_result(deprecate_eof, status=more))
        seq = 9  # sequence ids of responses are not checked
        second = draw(st.sampled_from(["rows", "ok", "err"]))
        if second == "rows":
            tail = draw(text_result(deprecate_eof, seq=seq))
        elif second == "ok":
            tail = w.framed([ok_packet(draw)], seq)
        else:
            tail = w.framed([w.err(1064, "42000", "syntax")], seq)
        return [(TO_SERVER, w.query("SELECT 1; SELECT 2")), (TO_CLIENT, first + tail)]
    if kind == "call":
        more = c.SERVER_MORE_RESULTS_EXISTS | c.SERVER_STATUS_AUTOCOMMIT
        body = draw(text_result(deprecate_eof, status=more)) + w.framed([ok_packet(draw)], 9)
        return [(TO_SERVER, w.query("CALL p(1)")), (TO_CLIENT, body)]
    if kind == "infile":
        data = draw(st.binary(max_size=40))
        client = w.framed([data, b""], 2) if data else w.framed([b""], 2)
        return [
            (TO_SERVER, w.query("LOAD DATA LOCAL INFILE 'f' INTO TABLE t")),
            (TO_CLIENT, w.framed([b"\xfbf"], 1)),
            (TO_SERVER, client),
            (TO_CLIENT, w.framed([ok_packet(draw)], 4)),
        ]
    if kind == "ping":
        reply = draw(st.sampled_from([w.ok(), w.eof(), ok_packet(draw)]))
        return [(TO_SERVER, w.command(c.Command.PING)), (TO_CLIENT, w.framed([reply], 1))]
    if kind == "use":
        return [(TO_SERVER, w.query("USE other")), (TO_CLIENT, w.framed([ok_packet(draw)], 1))]
    if kind == "reset":
        return [(TO_SERVER, w.command(c.Command.RESET_CONNECTION)), (TO_CLIENT, w.framed([w.ok()], 1))]
    if kind == "old_eof":
        # A result set ended by a 1-byte EOF (pre-4.1 servers).
        payloads = [b"\x01", w.column_def("a"), b"\xfe", w.text_row(b"1"), b"\xfe"]
        return [(TO_SERVER, w.query(SELECT)), (TO_CLIENT, w.framed(payloads, 1))]
    stmt = draw(st.integers(1, 3))
    params, columns = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    parts = [
        (TO_SERVER, w.prepare("SELECT a FROM t WHERE id = " + ", ".join("?" * params) if params else SELECT)),
        (TO_CLIENT, w.prepare_ok(stmt, columns, params, deprecate_eof=deprecate_eof)),
    ]
    bound = [(c.TYPE_LONG, b"\x01\x00\x00\x00")] * params
    if kind == "cursor" and columns:
        parts.append((TO_SERVER, w.execute(stmt, bound, flags=1)))
        head = [w.lenenc_int(columns)] + [w.column_def(f"c{i}") for i in range(columns)]
        parts.append((TO_CLIENT, w.framed([*head, w.eof(c.SERVER_STATUS_CURSOR_EXISTS | 2)], 1)))
        return parts
    rows = [[struct.pack("<i", i)] * columns for i in range(draw(st.integers(0, 4)))]
    parts.append((TO_SERVER, w.execute(stmt, bound)))
    if columns:
        parts.append((TO_CLIENT, w.binary_result_set(columns, rows)))
    else:
        parts.append((TO_CLIENT, w.framed([ok_packet(draw)], 1)))
    return parts


@st.composite
def conversation(draw: st.DrawFn) -> tuple[bool, list[tuple[int, bytes]]]:
    from_start = draw(st.booleans())
    deprecate_eof = draw(st.booleans())
    parts: list[tuple[int, bytes]] = []
    if from_start:
        caps = w.CLIENT_CAPS | (c.CLIENT_DEPRECATE_EOF if deprecate_eof else 0)
        caps |= draw(st.sampled_from([0, c.CLIENT_SESSION_TRACK]))
        parts += [
            (TO_CLIENT, w.framed([w.greeting()])),
            (TO_SERVER, w.framed([w.handshake_response(caps=caps)], 1)),
            (TO_CLIENT, w.framed([w.ok()], 2)),
        ]
    exchanges = draw(st.lists(exchange(deprecate_eof), min_size=1, max_size=8))
    if draw(st.booleans()):
        # Pipelined: every request first, then every response.
        parts += [p for ex in exchanges for p in ex if p[0] == TO_SERVER and len(ex) == 2]
        parts += [p for ex in exchanges for p in ex if p[0] == TO_CLIENT and len(ex) == 2]
        parts += [p for ex in exchanges if len(ex) != 2 for p in ex]
    else:
        parts += [p for ex in exchanges for p in ex]
    return from_start, parts


def segments(data: bytes, cuts: list[int], start: int) -> list[bytes]:
    out = []
    pos = 0
    k = start
    while pos < len(data):
        step = cuts[k % len(cuts)] if cuts else len(data)
        k += 1
        out.append(data[pos : pos + step])
        pos += step
    return out


@fuzz_settings(300)
@given(
    conversation(),
    st.lists(st.integers(1, 300), max_size=12),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
)
def test_conversations_cut_anywhere_give_the_same_events_and_state(
    case: tuple[bool, list[tuple[int, bytes]]], cuts: list[int], mutations: list[tuple[int, int]]
) -> None:
    from_start, parts = case
    stream = [(direction, bytearray(data)) for direction, data in parts]
    for where, value in mutations:
        direction, data = stream[where % len(stream)]
        if direction == TO_CLIENT and data:
            data[where % len(data)] = value
    steps: list[tuple[int, bytes, int | None]] = []
    for index, (direction, data) in enumerate(stream):
        steps += [(direction, piece, None) for piece in segments(bytes(data), cuts, index)]
    pure, compiled = pair(from_start=from_start, limits=LIMITS)
    feed_both(pure, compiled, steps)


@pytest.mark.parametrize("deprecate_eof", [False, True])
@pytest.mark.parametrize("cut", [0, 1, 65536, 1 << 20])
def test_payloads_of_16_mib_and_more(deprecate_eof: bool, cut: int) -> None:
    """Rows of 16 MiB and more (first byte 0xFE or not), exactly 16 MiB - 1, a result of
    16 MiB - 1 whose empty continuation follows, and an OK after them, whole or cut."""
    big = b"v" * (0xFFFFFF + 1000)
    exact = b"w" * (0xFFFFFF - 4)  # lenenc 0xFD + 3 bytes: a payload of exactly 0xFFFFFF
    fe_first = b"\xfe" + b"u" * 0xFFFFFF  # a row that starts with 0xFE: still a row
    script = (
        w.Script()
        .login(deprecate_eof=deprecate_eof)
        .client(w.query("SELECT doc FROM t"))
        .server(w.result_set(["doc"], [[big], [b"small"], [exact], [b"s"]], deprecate_eof=deprecate_eof))
        .client(w.query("SELECT raw FROM t"))
        .server(
            w.framed(
                [
                    *(b"\x01", w.column_def("raw")),
                    *([] if deprecate_eof else [w.eof()]),
                    *(fe_first, w.text_row(b"1")),
                    w.ok(header=0xFE) if deprecate_eof else w.eof(),
                ],
                1,
            )
        )
        .client(w.query("UPDATE t SET a = 1"))
        .server(w.framed([w.ok(affected=3)], 1))
    )
    steps: list[tuple[int, bytes, int | None]] = []
    for _, direction, data in script.timed():
        if cut == 0:
            pieces = [data]
        elif cut == 1:  # the first 64 bytes one by one, then the rest
            pieces = [data[i : i + 1] for i in range(min(64, len(data)))] + [data[64:]]
        else:
            pieces = [data[i : i + cut] for i in range(0, len(data), cut)]
        steps += [(direction, piece, None) for piece in pieces if piece]
    pure, compiled = pair(limits=ConversationLimits(max_query_bytes=1 << 16))
    events = feed_both(pure, compiled, steps)
    done = [e for e in events if type(e).__name__ == "CommandCompleted"]
    assert [e.rows_sent for e in done][-3:] == [4, 2, 0]


# -- random packets in every parser state --------------------------------------------------------

packet = st.one_of(
    st.binary(max_size=12).map(lambda body: len(body).to_bytes(3, "little") + b"\x01" + body),
    st.sampled_from(
        [
            w.framed([w.eof()], 3),
            w.framed([w.eof(c.SERVER_MORE_RESULTS_EXISTS)], 3),
            w.framed([b"\xfe"], 3),
            w.framed([w.ok()], 1),
            w.framed([w.ok(status=c.SERVER_MORE_RESULTS_EXISTS)], 1),
            w.framed([w.ok(schema="other")], 1),
            w.framed([w.ok(affected=300, insert_id=7, warnings=2)], 1),
            w.framed([w.ok(header=0xFE)], 5),
            w.framed([w.err(1, "HY000", "e")], 1),
            w.framed([b"\x02"], 1),
            w.framed([b"\x02\x01"], 1),
            w.framed([b"\x02\x00"], 1),
            w.framed([b"\x02\x07"], 1),
            w.framed([b"\xfbfile"], 1),
            w.framed([w.column_def("a")], 2),
            w.framed([w.text_row(b"1", None)], 4),
            b"\x00\x00\x00\x05",
            b"\xff\xff\xff\x02" + b"x" * 40,
        ]
    ),
)


@fuzz_settings(400)
@given(
    st.integers(0, 11),
    st.integers(-1, 5),
    st.sampled_from(list(c.Reply)),
    st.sampled_from([c.Command.QUERY, c.Command.PING, c.Command.STMT_EXECUTE, c.Command.RESET_CONNECTION]),
    st.sampled_from([None, True, False]),
    st.booleans(),
    st.booleans(),
    st.lists(packet, max_size=8),
    st.lists(st.integers(1, 40), max_size=6),
    st.sampled_from([w.CLIENT_CAPS, w.CLIENT_CAPS | c.CLIENT_SESSION_TRACK]),
)
@example(
    3, 0, c.Reply.RESULT, c.Command.QUERY, None, False, False, [b"\x05\x00\x00\x02\x01abcd", b"\x00\x00\x00\x03"], [], 0
)
@example(  # a metadata flag neither 0 nor 1: definitions follow
    0,
    0,
    c.Reply.RESULT,
    c.Command.QUERY,
    False,
    False,
    False,
    [w.framed([b"\x01\x07", w.column_def("a"), w.eof(), w.text_row(b"1"), w.eof()], 1)],
    [],
    w.CLIENT_CAPS,
)
def test_random_packets_in_every_state_give_the_same_events_and_state(
    parser_state: int,
    remaining: int,
    reply: c.Reply,
    code: int,
    deprecate_eof: bool | None,
    cursor: bool,
    pieces: bool,
    packets: list[bytes],
    cuts: list[int],
    caps: int,
) -> None:
    pure, compiled = pair(limits=LIMITS)
    for conv in (pure, compiled):
        conv.phase = state.COMMANDS
        conv.caps = caps
        conv.deprecate_eof = deprecate_eof
        for _ in range(2):
            cmd = Request(code, "Query", reply, 1000, 0, None, 10, "")
            cmd.state, cmd.remaining, cmd.cursor = parser_state, remaining, cursor
            cmd.pieces = ["SELECT 1", "SELECT 2"] if pieces else None
            conv.pending.append(cmd)
    data = b"".join(packets)
    feed_both(pure, compiled, [(TO_CLIENT, piece, None) for piece in segments(data, cuts, 0)])


@fuzz_settings(300)
@given(
    st.lists(st.tuples(st.sampled_from([TO_SERVER, TO_CLIENT]), st.binary(max_size=200)), max_size=20),
    st.booleans(),
)
def test_random_bytes_give_the_same_events_and_state(steps: list[tuple[int, bytes]], from_start: bool) -> None:
    pure, compiled = pair(from_start=from_start, limits=LIMITS)
    feed_both(pure, compiled, [(direction, data, None) for direction, data in steps])


# -- the walker on its own -------------------------------------------------------------------------


def test_the_compiled_constants_are_the_python_ones() -> None:
    need_compiled()
    assert native.cresponses is not None
    assert native.cresponses.assumed_constants() == {
        "R_FIRST": state.R_FIRST,
        "R_COLDEFS": state.R_COLDEFS,
        "R_COLS_END": state.R_COLS_END,
        "R_ROWS": state.R_ROWS,
        "R_PREP_PARAMS": state.R_PREP_PARAMS,
        "R_PREP_COLS": state.R_PREP_COLS,
        "REPLY_STATUS": c.Reply.STATUS,
        "REPLY_RESULT": c.Reply.RESULT,
        "COMMAND_RESET_CONNECTION": c.Command.RESET_CONNECTION,
        "SERVER_MORE_RESULTS_EXISTS": c.SERVER_MORE_RESULTS_EXISTS,
        "SERVER_SESSION_STATE_CHANGED": c.SERVER_SESSION_STATE_CHANGED,
        "MAX_PACKET_LENGTH": c.MAX_PACKET_LENGTH,
    }
    assert (native.cresponses.STOP, native.cresponses.DONE, native.cresponses.SKIP) == (
        native.WALK_STOP,
        native.WALK_DONE,
        native.WALK_SKIP,
    )


@fuzz_settings(500)
@given(st.binary(max_size=64), st.integers(-5, 80), st.integers(0, 11), st.integers(-3, 300))
def test_the_walker_reads_only_inside_the_data(data: bytes, pos: int, parser_state: int, remaining: int) -> None:
    """Any bytes from any position in any state: an outcome, a position inside the data
    (or where it was given, when outside), never a read past the end (ASan builds check)."""
    need_compiled()
    assert native.cresponses is not None
    conv = Conversation("c:1", "s:2", Normalizer(), from_start=True)
    cmd = Request(c.Command.QUERY, "Query", c.Reply.RESULT, 0, 0, None, 0, "")
    cmd.state, cmd.remaining = parser_state, remaining
    outcome, end, status, warnings = native.cresponses.walk(conv, cmd, data, pos)
    assert outcome in (native.WALK_STOP, native.WALK_DONE, native.WALK_SKIP)
    assert end == pos if (pos < 0 or pos > len(data)) else pos <= end <= len(data)
    assert 0 <= status <= 0xFFFF and 0 <= warnings <= 0xFFFF
    assert cmd.bytes_out >= 0 and cmd.rows >= 0


def test_the_walker_leaves_other_buffers_and_bad_arguments_to_python() -> None:
    need_compiled()
    assert native.cresponses is not None
    conv = Conversation("c:1", "s:2", Normalizer(), from_start=True)
    cmd = Request(c.Command.QUERY, "Query", c.Reply.RESULT, 0, 0, None, 0, "")
    assert native.cresponses.walk(conv, cmd, bytearray(w.framed([w.ok()], 1)), 0) == (native.WALK_STOP, 0, 0, 0)
    with pytest.raises(TypeError):
        native.cresponses.walk(conv, cmd, b"")  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        native.cresponses.walk(object(), cmd, w.framed([w.ok()], 1), 0)
