"""COM_QUERY and COM_STMT_EXECUTE exchanges completed in C (probe/_cexchange.c,
probe/_cexecute.c, probe/_cwire.c) against their oracle, the Python conversation and
aggregator.

The skeleton the C path looks templates up by must be ``_FAST_LITERAL.sub("?", sql)`` byte
for byte, and exactly for the text the normalizer would put through its skeleton cache
(hypothesis, on text made of the characters literals are made of). Then two flow tables,
one pure and one compiled with the fast path attached to its own aggregator, are fed the
same generated connections (logins with and without CLIENT_DEPRECATE_EOF, queries answered
by OK packets, result sets, empty ones, ERR packets (many codes, more than an accumulator
counts, codes 0 and 0xFFFF, with and without sqlstate, messages of any bytes), warnings,
index flags, multi-results (CALLs: result sets and OKs with MORE_RESULTS, then an OK, a
result set or an ERR, each result in its own server segment or several in one), session
changes, USE, comments, slow ones; prepared statements: PREPARE answered with and without
EOFs or refused, ids reused after CLOSE, executes with and without new types, rebinds,
NULLs, values that do not decode, unknown ids, id -1 behind its PREPARE, cursors, binary
result sets with and without definitions (MariaDB's cached metadata), OKs, errors,
multi-results (prepared CALLs, OUT-parameter result sets), RESET, long data, bulk
executes, COM_RESET_CONNECTION) cut into random segments, interleaved, with bare ACKs,
FIN/RST, expiry sweeps and interval drains. After every step the two must have the same
other events, the same normalizer caches and, on every connection with nothing held, the
same conversation state (prepared statements and the types they bound included); every
drained interval must be the same.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from probe import native
from probe.aggregate import Aggregator, Interval
from probe.capture import FileCapture
from probe.decode import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Segment
from probe.engine import Engine, EngineConfig
from probe.flows import FlowLimits, FlowTable
from probe.mysql import constants as c
from probe.mysql.conversation import Conversation
from probe.mysql.events import TO_CLIENT, TO_SERVER, CommandCompleted, Event
from probe.mysql.state import ConnectionState, PreparedStatement, Request
from probe.normalize import _FAST_LITERAL, _PLAIN_BACKTICKS, Normalizer
from tests.support import mysqlwire as w
from tests.support.fuzz import fuzz_settings
from tests.support.native import need_compiled

CLIENT_IP = 0x0A000007
SERVER_IP = 0x0A000001
PORT = 3306
MASK = 0xFFFFFFFF
SLOW_US = 300

# -- the skeleton -------------------------------------------------------------------------------


def python_skeleton(sql: str) -> str | None:
    """What the C skeleton must give: the normalizer's skeleton when it would take that path
    (and the C path does not decline the text: ';' or non-ASCII), else None."""
    if not sql.isascii() or ";" in sql:
        return None
    if any(mark in sql for mark in ("/*", "--", "#", "@'", '@"')):
        return None
    if "`" in sql and not _PLAIN_BACKTICKS.fullmatch(sql):
        return None
    skeleton = _FAST_LITERAL.sub("?", sql)
    if "'" in skeleton or '"' in skeleton:
        return None
    return skeleton


SQL_TEXT = st.text(alphabet="'\"\\nNxXbB_01289.eE+-$@`;#/* aZ\n(),=", max_size=40)


@fuzz_settings(3000)
@given(SQL_TEXT)
@example("SELECT 1.5e3x, 0x1g, 0b12, .5e, 1.e5, x'ab', _utf8mb4'a''b', 'a\\'b', \"q\"\"r\"")
@example("t.1.5 `a`.`b` @1 a1 1a $1 1.2.3 1e+ 1e+5 ..5 1..2")
def test_skeleton_is_the_normalizers(sql: str) -> None:
    need_compiled()
    assert native.cflows is not None
    expected = python_skeleton(sql)
    got = native.cflows.skeleton(sql.encode())
    assert got == (expected.encode() if expected is not None else None)


def test_skeleton_declines_non_ascii() -> None:
    need_compiled()
    assert native.cflows is not None
    assert native.cflows.skeleton("SELECT 'é'".encode()) is None
    assert native.cflows.skeleton(b"SELECT 1") == b"SELECT ?"


# -- two flow tables --------------------------------------------------------------------------


class Side:
    """A flow table, its normalizer and an aggregator fed as probe.engine feeds one."""

    def __init__(
        self,
        *,
        pure: bool,
        server_ips: frozenset[bytes] = frozenset({SERVER_IP.to_bytes(4, "big")}),
        limits: FlowLimits | None = None,
    ) -> None:
        self.pure = pure
        self.aggregator = Aggregator(slow_threshold_us=SLOW_US, max_templates=5, max_slow=3)
        self.normalizer = Normalizer(cache_size=9)
        self.other: list[Event] = []
        self.intervals: list[Interval] = []  # drained
        self.flows = FlowTable(
            frozenset({PORT}),
            self._events,
            self.normalizer,
            server_ips=server_ips,
            limits=limits,
            pure=pure,
        )
        self.entry: Any = self.flows.segment_entry
        if not pure:
            assert native.cflows is not None and isinstance(self.entry, native.cflows.InOrder)
            self.entry.attach(self.aggregator)

    def _events(self, events: list[Event]) -> None:
        for event in events:
            if type(event) is CommandCompleted:
                self.aggregator.add(event)
            else:
                self.other.append(event)

    def drain(self) -> Any:
        if not self.pure:
            self.aggregator.fold(self.entry.fold())
        interval = self.aggregator.drain()
        self.intervals.append(interval)
        return interval_state(interval)


def interval_state(interval: Interval) -> Any:
    return (
        sorted(repr(sorted(t.to_json().items())) for t in interval.templates),
        [plain(s.to_json()) for s in interval.slow],
        interval.slow_dropped,
        interval.counters,
    )


def conv_state(conv: Conversation) -> dict[str, Any]:
    skipped = ("_events", "normalizer", "budget", "_walk", "limits")
    return {k: plain(getattr(conv, k)) for k in ConnectionState.__slots__ if k not in skipped}


def plain(value: Any) -> Any:
    """Requests and prepared statements as their fields (they have no equality), NaN
    parameters as a string (a NaN is not equal to itself)."""
    if isinstance(value, Request):
        return {k: plain(v) for k, v in vars(value).items()}
    if isinstance(value, PreparedStatement):
        return [plain(getattr(value, name)) for name in PreparedStatement.__slots__]
    if isinstance(value, deque | list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, float) and value != value:
        return "NaN"  # a parameter decoded from bytes that spell a NaN: equal when both have it
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def held(conn: Any) -> bool:
    return conn.held is not None and bool(conn.held.active)


def compare(pure: Side, compiled: Side, where: str) -> None:
    assert compiled.other == pure.other, where
    assert compiled.normalizer._by_skeleton == pure.normalizer._by_skeleton, where
    assert compiled.normalizer._by_raw == pure.normalizer._by_raw, where
    assert compiled.normalizer.cache_resets == pure.normalizer.cache_resets, where
    assert compiled.flows.table.keys() == pure.flows.table.keys(), where
    for key, conn in compiled.flows.table.items():
        if not held(conn):
            assert conv_state(conn.conv) == conv_state(pure.flows.table[key].conv), where


# -- generated connections ------------------------------------------------------------------------

STATUS = c.SERVER_STATUS_AUTOCOMMIT


#: Error codes of generated ERR packets: the usual ones, code 0 (no error counted) and
#: 0xFFFF (MariaDB's progress report code), more codes than one accumulator counts.
ERR_CODES = [1062, 1064, 1146, 1213, 1062, 1205, 1054, 1048, 1452, 0, 0xFFFF, 2013, 1062]
ERR_MESSAGES = ["Duplicate entry '{n}' for key 'PRIMARY'", "", "Table 'db.t{n}' doesn't exist", "déjà vu"]


def err_payload(n: int) -> bytes:
    """An ERR packet's payload: a code of ERR_CODES, with a '#' and sqlstate (CLIENT_PROTOCOL_41)
    or without, a message (empty, not ASCII, or bytes that are not UTF-8)."""
    code = ERR_CODES[n % len(ERR_CODES)]
    message = ERR_MESSAGES[n // 3 % len(ERR_MESSAGES)].format(n=n)
    if n % 7 == 3:
        return b"\xff" + struct.pack("<H", code) + b"\xfe\xfa" + message.encode()
    if n % 5 == 2:
        return b"\xff" + struct.pack("<H", code) + message.encode()
    return w.err(code, ("23000", "42S02", "40001", "HY000")[n % 4], message)


def response(kind: str, n: int, deprecate: bool) -> bytes:
    if kind == "ok":
        return w.framed([w.ok(affected=n % 3)], 1)
    if kind == "rows":
        return w.result_set(["v", "w"], [[b"x" * (n % 40), None]] * (n % 4 + 1), deprecate_eof=deprecate)
    if kind == "empty":
        return w.result_set(["v"], [], deprecate_eof=deprecate)
    if kind == "noindex":
        return w.result_set(["v"], [[b"1"]], deprecate_eof=deprecate, status=STATUS | c.SERVER_QUERY_NO_INDEX_USED)
    if kind == "warn":
        return w.framed([w.ok(warnings=n % 5)], 1)
    if kind == "err":
        return w.framed([err_payload(n)], 1)
    if kind == "schema":
        return w.framed([w.ok(schema=f"db{n % 2}")], 1)
    if kind == "mid_err":  # an ERR after the first rows (the server gave up half way)
        head = [w.lenenc_int(1), w.column_def("v")] + ([] if deprecate else [w.eof()])
        return w.framed([*head, w.lenenc_str(b"x"), err_payload(n)], 1)
    if kind == "more_err":  # a CALL whose second statement failed
        first = w.result_set(["v"], [[b"1"]], deprecate_eof=deprecate, status=STATUS | c.SERVER_MORE_RESULTS_EXISTS)
        return first + w.framed([err_payload(n)], 1)
    if kind == "more":
        first = w.result_set(["v"], [[b"1"]], deprecate_eof=deprecate, status=STATUS | c.SERVER_MORE_RESULTS_EXISTS)
        return first + w.result_set(["v"], [[b"2"]], deprecate_eof=deprecate)
    if kind == "big_ok":
        return w.framed([w.ok(affected=300 + n)], 1)
    if kind == "wide_ok":  # insert ids and row counts of 1, 3, 4 and 9 bytes (2**33: Python's alone)
        affected = (1, 300, 70_000, 2**24 + 5, 2**33)[n % 5]
        return w.framed([w.ok(affected=affected, insert_id=(0, 5021, 2**20, 2**40, 7)[n % 5])], 1)
    if kind == "short_ok":  # no status and warnings after the insert id
        return w.framed([b"\x00\x01" + w.lenenc_int(300 + n)], 1)
    raise AssertionError(kind)


#: SERVER_PS_OUT_PARAMS: the result set of a prepared CALL's OUT parameters (Python reads
#: it as any result set).
PS_OUT_PARAMS = 0x1000
MORE = c.SERVER_MORE_RESULTS_EXISTS


def call_result(draw: st.DrawFn, n: int, deprecate: bool, columns: int | None, *, more: bool) -> list[bytes]:
    """The payloads of one result of a CALL (``more``: with MORE_RESULTS, a result before the
    last): a text result set (``columns`` None) or a binary one of ``columns`` columns with or
    without definitions, of 0 to 3 rows, with index flags or a prepared CALL's OUT-parameters
    flag; or an OK with affected rows and warnings."""
    status = STATUS | (MORE if more else 0) | draw(st.sampled_from([0, 0, c.SERVER_QUERY_NO_INDEX_USED, PS_OUT_PARAMS]))
    if draw(st.integers(0, 3)) == 0:
        return [w.ok(affected=(n % 4, 300 + n)[n % 2], warnings=n % 3, status=status)]
    rows = draw(st.integers(0, 3))
    if columns is None:
        head = [w.lenenc_int(1), w.column_def("v")]
        body = [w.text_row(b"r" * (n % 9 + i)) for i in range(rows)]
    else:
        metadata = draw(st.sampled_from([None, 0, 1]))
        head = [w.lenenc_int(columns) + (b"" if metadata is None else bytes([metadata]))]
        head += [w.column_def(f"c{i}") for i in range(columns if metadata != 0 else 0)]
        body = [binary_row([struct.pack("<i", n + i)] + [None] * (columns - 1)) for i in range(rows)]
    if not deprecate:
        head.append(w.eof(status))
    end = w.ok(status=status, header=0xFE) if deprecate else w.eof(status, warnings=n % 3)
    return [*head, *body, end]


def call_chunks(draw: st.DrawFn, n: int, deprecate: bool, columns: int | None) -> list[bytes]:
    """A CALL's response as the server writes it: 0 to 3 results with MORE_RESULTS, then the
    last one (an OK, with warnings or affected rows, a result set, an ERR, MariaDB's progress
    code, a session change); each result its own chunk (MariaDB flushes after each) or
    several in one."""
    results = [call_result(draw, n + i, deprecate, columns, more=True) for i in range(draw(st.integers(0, 3)))]
    end = draw(st.sampled_from(["ok", "ok", "result", "err", "err", "schema"]))
    if end == "ok":
        results.append([w.ok(affected=n % 3, warnings=n % 4, status=STATUS | (n % 2) * c.SERVER_QUERY_NO_INDEX_USED)])
    elif end == "result":
        results.append(call_result(draw, n, deprecate, columns, more=False))
    elif end == "err":
        results.append([err_payload(n)])
    else:
        results.append([w.ok(schema=f"db{n % 2}")])
    chunks: list[bytes] = []
    seq = 1
    for payloads in results:
        data = w.framed(payloads, seq)
        seq = (seq + len(payloads)) & 0xFF
        if chunks and draw(st.integers(0, 3)) == 0:
            chunks[-1] += data
        else:
            chunks.append(data)
    return chunks


QUERIES = [
    ("SELECT v, w FROM t WHERE id = {n}", "rows"),
    ("SELECT v FROM t WHERE id IN ({n}, {m}) AND k = 'a{m}'", "empty"),
    ("UPDATE t SET v = 'x{n}' WHERE id = {n}", "ok"),
    ("COMMIT", "ok"),
    ("SELECT v FROM u WHERE x = {n}", "noindex"),
    ("INSERT INTO t VALUES ({n}, 'q')", "warn"),
    ("INSERT INTO t VALUES ({n}, 'q')", "big_ok"),
    ("INSERT INTO t VALUES ({n}, 'z')", "wide_ok"),
    ("INSERT INTO u VALUES ({n})", "short_ok"),
    ("SELECT v FROM t WHERE broken = {n}", "err"),
    ("INSERT INTO t VALUES ({n}, 'dup')", "err"),
    ("SELECT v FROM missing WHERE id = {n}", "err"),
    ("USE db{b}", "ok"),
    ("SELECT {n}; SELECT 2", "more"),
    ("CALL p({n})", "more"),
    ("SET SESSION x = {n}", "schema"),
    ("/* c */ SELECT v FROM t WHERE id = {n}", "rows"),
    ("SELECT v FROM t{n} WHERE id = {m}", "rows"),
    ("SELECT v FROM t WHERE id = {n}", "mid_err"),
    ("CALL p({n})", "more_err"),
    ("CALL q({n})", "call"),
    ("CALL q({n}, 'a{m}')", "call"),
]
GAPS_US = [1, 40, 150, 290, 1, 40, 400, 5000]

# -- prepared statements ------------------------------------------------------------------------

#: (SQL, parameters, result columns) of the statements connections prepare.
PREPARED = [
    ("SELECT c, pad FROM sbtest1 WHERE id = ?", 1, 2),
    ("SELECT id FROM t WHERE k BETWEEN ? AND ?", 2, 1),
    ("UPDATE t SET c = ? WHERE id = ?", 2, 0),
    ("INSERT INTO t (id, k, c, d) VALUES (?, ?, ?, ?)", 4, 0),
    ("COMMIT", 0, 0),
    ("SELECT v FROM u WHERE x = ? OR y = ?", 2, 1),
]
#: Parameter types (with the unsigned flag in the second byte) and an encoding of a value.
PARAM_TYPES: list[tuple[int, bytes]] = [
    (c.TYPE_LONG, struct.pack("<i", -7)),
    (c.TYPE_LONGLONG | c.UNSIGNED_FLAG << 8, struct.pack("<Q", 2**63 + 5)),
    (c.TYPE_VAR_STRING, w.lenenc_str(b"abc")),
    (c.TYPE_DOUBLE, struct.pack("<d", 2.5)),
    (c.TYPE_DATETIME, bytes([7]) + struct.pack("<HBBBBB", 2024, 2, 29, 23, 59, 1)),
    (c.TYPE_NULL, b""),
]
LAST_PREPARED = 0xFFFFFFFF


@dataclass
class Prepared:
    """What a generated connection has prepared under an id (to generate its executes)."""

    params: int
    columns: int
    types: list[int] | None = None


def binary_row(values: list[bytes | None]) -> bytes:
    """A binary-protocol row: 0x00, the NULL bitmap (offset 2), the values that are not NULL."""
    bitmap = bytearray((len(values) + 9) // 8)
    for i, value in enumerate(values):
        if value is None:
            bitmap[(i + 2) >> 3] |= 1 << ((i + 2) & 7)
    return b"\x00" + bytes(bitmap) + b"".join(v for v in values if v is not None)


def binary_result(
    columns: int,
    rows: list[list[bytes | None]],
    *,
    deprecate: bool,
    metadata: int | None = None,
    status: int = STATUS,
    cursor: bool = False,
) -> bytes:
    """The binary result set of an execute: column count (with MariaDB's metadata flag when
    ``metadata`` is 0 or 1: 0, the client cached the definitions), definitions, EOF unless
    DEPRECATE_EOF, rows, and the final EOF or EOF-headed OK; a cursor's ends at the EOF."""
    payloads = [w.lenenc_int(columns) + (b"" if metadata is None else bytes([metadata]))]
    if metadata != 0:
        payloads += [w.column_def(f"c{i}") for i in range(columns)]
    if cursor:
        return w.framed([*payloads, w.eof(status | c.SERVER_STATUS_CURSOR_EXISTS)], 1)
    if not deprecate:
        payloads.append(w.eof(status))
    payloads += [binary_row(row) for row in rows]
    payloads.append(w.ok(status=status, header=0xFE) if deprecate else w.eof(status))
    return w.framed(payloads, 1)


def execute_response(
    draw: st.DrawFn, stmt: Prepared | None, n: int, deprecate: bool, *, cursor: bool
) -> bytes | list[bytes]:
    """A plausible reply to an execute of stmt (None: an unknown id, refused); a prepared
    CALL's in chunks (call_chunks)."""
    if stmt is None:
        return w.framed([w.err(1243)], 1)
    if not cursor and draw(st.integers(0, 5)) == 0:
        return call_chunks(draw, n, deprecate, stmt.columns or 1)
    if draw(st.integers(0, 6)) == 0:
        return w.framed([err_payload(draw(st.integers(0, 300)))], 1)
    if not stmt.columns:
        kind = draw(st.sampled_from(["ok", "ok", "wide", "warn", "more", "schema"]))
        if kind == "more":  # a CALL: an OK with more results, then the last one
            more = w.framed([w.ok(affected=1, status=STATUS | c.SERVER_MORE_RESULTS_EXISTS)], 1)
            return more + w.framed([w.ok(affected=n % 3)], 2)
        if kind == "schema":
            return w.framed([w.ok(schema=f"db{n % 2}")], 1)
        affected, insert_id = ((n % 3, 0), (300 + n, 2**20 + n), (1, 0))[("ok", "wide", "warn").index(kind)]
        return w.framed([w.ok(affected=affected, insert_id=insert_id, warnings=n % 3 if kind == "warn" else 0)], 1)
    values = [struct.pack("<i", n), w.lenenc_str(b"y" * (n % 30)), None]
    rows = [[values[(i + j + n) % 3] for j in range(stmt.columns)] for i in range(draw(st.integers(0, 4)))]
    metadata = draw(st.sampled_from([None, 0, 0, 1]))
    status = draw(st.sampled_from([STATUS, STATUS, STATUS | c.SERVER_QUERY_NO_INDEX_USED]))
    if draw(st.integers(0, 15)) == 0:
        status |= c.SERVER_MORE_RESULTS_EXISTS
        first = binary_result(stmt.columns, rows, deprecate=deprecate, metadata=metadata, status=status)
        return first + w.framed([w.ok()], 1)
    return binary_result(stmt.columns, rows, deprecate=deprecate, metadata=metadata, status=status, cursor=cursor)


def execute_request(draw: st.DrawFn, stmt_id: int, stmt: Prepared | None, *, cursor: bool) -> bytes:
    """COM_STMT_EXECUTE of stmt_id: mostly the types stmt has bound, or none (not rebound),
    sometimes other types, the wrong number of values, or NULLs."""
    count = stmt.params if stmt is not None else draw(st.integers(0, 2))
    types = stmt.types if stmt is not None and stmt.types is not None and draw(st.integers(0, 4)) else None
    if types is None or len(types) != count:
        types = [draw(st.sampled_from(PARAM_TYPES))[0] for _ in range(count)]
    encoding = dict(PARAM_TYPES)
    params = [(kind, None if draw(st.integers(0, 5)) == 0 else encoding[kind]) for kind in types]
    if count and draw(st.integers(0, 20)) == 0:
        params = params[:-1]  # one value short: the parameters do not decode
    bind = stmt is None or stmt.types is None or types != stmt.types or draw(st.integers(0, 3)) == 0
    if not draw(st.integers(0, 15)):
        bind = not bind
    if stmt is not None and bind and len(params) == count:
        stmt.types = types  # what Python keeps when the values decode (else the test's guess is off: harmless)
    return w.execute(stmt_id, params, bind=bind, flags=1 if cursor else 0)


def serve(script: w.Script, response: bytes | list[bytes]) -> None:
    for chunk in [response] if isinstance(response, bytes) else response:
        script.server(chunk)


def statement_steps(draw: st.DrawFn, script: w.Script, deprecate: bool, ids: dict[int, Prepared]) -> None:
    """Prepared-statement traffic: PREPARE (ids from a small pool, so an id comes back after
    a CLOSE), runs of executes, CLOSE, RESET, long data, id -1 behind its PREPARE in one
    write, cursors, bulk executes, COM_RESET_CONNECTION."""
    n = draw(st.integers(0, 300))
    step = draw(st.sampled_from(["prepare", "execute", "execute", "execute", "execute", "other"]))
    if step == "prepare" or not ids:
        sql, params, columns = draw(st.sampled_from(PREPARED))
        stmt_id = draw(st.integers(1, 3))
        script.client(w.prepare(sql))
        if draw(st.integers(0, 10)) == 0:
            script.server(w.framed([w.err(1146)], 1))
            return
        script.server(w.prepare_ok(stmt_id, columns, params, deprecate_eof=deprecate))
        ids[stmt_id] = Prepared(params, columns)
        return
    stmt_id = draw(st.sampled_from(sorted(ids)))
    stmt = ids[stmt_id]
    if step == "execute":
        for _ in range(draw(st.integers(1, 5))):
            cursor = stmt.columns > 0 and draw(st.integers(0, 15)) == 0
            known = draw(st.integers(0, 20)) > 0
            target, whose = (stmt_id, stmt) if known else (77, None)
            script.client(execute_request(draw, target, whose, cursor=cursor))
            serve(script, execute_response(draw, whose, n, deprecate, cursor=cursor))
            n += 1
        return
    other = draw(st.sampled_from(["close", "reset", "long_data", "last", "bulk", "reset_connection"]))
    if other == "close":
        script.client(w.command(c.Command.STMT_CLOSE, struct.pack("<I", stmt_id)))
        del ids[stmt_id]
    elif other == "reset":
        script.client(w.command(c.Command.STMT_RESET, struct.pack("<I", stmt_id)))
        script.server(w.framed([w.ok()], 1))
    elif other == "long_data":
        param = draw(st.integers(0, max(stmt.params - 1, 0)))
        script.client(w.command(c.Command.STMT_SEND_LONG_DATA, struct.pack("<IH", stmt_id, param) + b"blob"))
    elif other == "last":  # MariaDB: PREPARE and EXECUTE(-1) in one write
        sql, params, columns = draw(st.sampled_from(PREPARED))
        fresh = Prepared(params, columns)
        script.client(w.prepare(sql) + execute_request(draw, LAST_PREPARED, fresh, cursor=False))
        script.server(w.prepare_ok(stmt_id, columns, params, deprecate_eof=deprecate))
        serve(script, execute_response(draw, fresh, n, deprecate, cursor=False))
        ids[stmt_id] = fresh
    elif other == "bulk":
        kinds = [draw(st.sampled_from(PARAM_TYPES)) for _ in range(stmt.params)]
        rows = [[None if draw(st.integers(0, 4)) == 0 else value for _, value in kinds] for _ in range(2)]
        script.client(w.bulk_execute(stmt_id, [kind for kind, _ in kinds], rows))
        script.server(w.framed([w.ok(affected=2)], 1))
    else:
        script.client(w.command(c.Command.RESET_CONNECTION))
        script.server(w.framed([w.ok()], 1))
        ids.clear()


@st.composite
def connection(draw: st.DrawFn, client_port: int, user: str) -> list[tuple[int, Segment]]:
    """One connection's segments, each with the microseconds since the previous one."""
    isn = [draw(st.integers(0, MASK)), draw(st.integers(0, MASK))]
    ends = [(CLIENT_IP, SERVER_IP, client_port, PORT), (SERVER_IP, CLIENT_IP, PORT, client_port)]
    out: list[tuple[int, Segment]] = []

    def send(direction: int, flags: int, payload: bytes = b"", after: int = 10) -> None:
        src, dst, sport, dport = ends[direction]
        out.append((after, (src, dst, sport, dport, isn[direction], isn[1 - direction], flags, payload)))
        isn[direction] = (isn[direction] + len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) & MASK

    deprecate = draw(st.booleans())
    script = w.Script()
    if draw(st.integers(0, 4)):
        send(TO_SERVER, TCP_SYN)
        send(TO_CLIENT, TCP_SYN | TCP_ACK)
        send(TO_SERVER, TCP_ACK)
        script.login(user=user, deprecate_eof=deprecate)
    ids: dict[int, Prepared] = {}
    for _ in range(draw(st.integers(1, 16))):
        if draw(st.integers(0, 2)) == 0:
            statement_steps(draw, script, deprecate, ids)
            continue
        sql, kind = draw(st.sampled_from(QUERIES[:5] * 4 + QUERIES[9:12] * 2 + QUERIES[-2:] * 3 + QUERIES))
        n = draw(st.integers(0, 300))
        # An error flood (a run of one failing statement, each with its own code and message),
        # a run of CALLs.
        for i in range(draw(st.integers(2, 12)) if kind in ("err", "call") and draw(st.booleans()) else 1):
            script.client(w.query(sql.format(n=n + i, m=n + 1, b=n % 2)))
            serve(
                script,
                call_chunks(draw, n + i, deprecate, None) if kind == "call" else response(kind, n + i, deprecate),
            )
    # A quick connection: a response in several segments (a CALL's) stays under the slow
    # threshold.
    gaps = [1, 40] if draw(st.integers(0, 2)) == 0 else GAPS_US
    for direction, data, _ in script.chunks:
        after = draw(st.sampled_from(gaps))
        if draw(st.integers(0, 5)):
            send(direction, TCP_ACK, data, after)
        else:
            pos = 0
            while pos < len(data):
                size = draw(st.integers(1, len(data) - pos))
                send(direction, TCP_ACK, data[pos : pos + size], after)
                pos += size
        if draw(st.integers(0, 5)) == 0:
            send(1 - direction, TCP_ACK)
    ending = draw(st.sampled_from(["open", "fin", "rst"]))
    if ending == "fin":
        send(TO_SERVER, TCP_FIN | TCP_ACK)
        send(TO_CLIENT, TCP_FIN | TCP_ACK)
    elif ending == "rst":
        send(TO_CLIENT, TCP_RST | TCP_ACK)
    return out


@st.composite
def capture(draw: st.DrawFn) -> list[tuple[int, Segment | None, bool]]:
    """Up to three connections interleaved: (time, segment or None for a sweep, drain after)."""
    streams = [draw(connection(51000 + i, f"u{i % 2}")) for i in range(draw(st.integers(1, 3)))]
    ts = 1_700_000_000_000_000_000
    steps: list[tuple[int, Segment | None, bool]] = []
    while any(streams):
        stream = draw(st.sampled_from([s for s in streams if s]))
        after, seg = stream.pop(0)
        ts += after * 1000
        steps.append((ts, seg, draw(st.integers(0, 40)) == 0))
        if draw(st.integers(0, 30)) == 0:
            steps.append((ts + 1, None, False))
    return steps


def run(steps: Sequence[tuple[int, Segment | None, bool]], limits: FlowLimits | None = None) -> tuple[Side, Side]:
    need_compiled()
    pure, compiled = Side(pure=True, limits=limits), Side(pure=False, limits=limits)
    for i, (ts, seg, drain) in enumerate(steps):
        for side in (pure, compiled):
            if seg is None:
                side.flows.expire(ts)
            else:
                side.entry(ts, seg)
        compare(pure, compiled, f"step {i}: {seg!r}")
        if drain:
            assert compiled.drain() == pure.drain(), f"drain after step {i}"
    end = (steps[-1][0] if steps else 0) + 1
    for side in (pure, compiled):
        side.flows.close_all(end, "end of capture")
    compare(pure, compiled, "end")
    assert compiled.drain() == pure.drain()
    return pure, compiled


@fuzz_settings(200)
@given(capture())
def test_fast_exchanges_give_the_same_aggregates_and_state(steps: list[tuple[int, Segment | None, bool]]) -> None:
    run(steps)


def test_repeated_queries_take_the_fast_path() -> None:
    script = w.Script().login()
    for i in range(6):
        script.client(w.query(f"SELECT v FROM t WHERE id = {i}"))
        script.server(w.result_set(["v"], [[b"x"]] * i))
        script.client(w.query(f"UPDATE t SET v = 'y' WHERE id = {i}"))
        script.server(w.framed([w.ok(affected=1, status=STATUS | c.SERVER_QUERY_NO_GOOD_INDEX_USED)], 1))
    _, compiled = run(whole_chunks(script))
    # The first of each template goes through Python (its template is learnt, its entry made).
    assert compiled.entry.fast_exchanges == 10
    assert compiled.entry.fast_replayed == 0


def whole_chunks(script: w.Script) -> list[tuple[int, Segment | None, bool]]:
    """A script's chunks as the segments of one connection from its SYN, one chunk each."""
    seq = [1000, 5000]
    steps: list[tuple[int, Segment | None, bool]] = []
    ts = 1_700_000_000_000_000_000
    ends = [(CLIENT_IP, SERVER_IP, 51000, PORT), (SERVER_IP, CLIENT_IP, PORT, 51000)]
    steps.append((ts, (*ends[TO_SERVER], 999, 0, TCP_SYN, b""), False))
    steps.append((ts, (*ends[TO_CLIENT], 4999, 1000, TCP_SYN | TCP_ACK, b""), False))
    for direction, data, _ in script.chunks:
        ts += 50_000
        steps.append((ts, (*ends[direction], seq[direction], seq[1 - direction], TCP_ACK, data), False))
        seq[direction] += len(data)
    return steps


def test_oks_with_wide_counts_and_insert_ids() -> None:
    """sysbench's INSERTs name their id: the OK's insert id takes 3 bytes or more, which the
    fast path once declined (5% of that workload went to Python). Every width of both
    length-encoded integers is read as Python reads it; a count of 2**32 or more, and an OK
    without status and warnings, stay Python's."""
    widths = [(1, 0), (300, 5021), (70_000, 2**20), (2**24 + 5, 2**40), (2**33, 7)]
    script = w.Script().login()
    for affected, insert_id in widths:
        for i in range(3):
            script.client(w.query(f"INSERT INTO t VALUES ({affected + i}, 'z')"))
            script.server(w.framed([w.ok(affected=affected, insert_id=insert_id, warnings=i)], 1))
    for i in range(2):
        script.client(w.query(f"INSERT INTO u VALUES ({i})"))
        script.server(w.framed([b"\x00\x01" + w.lenenc_int(300 + i)], 1))
    _, compiled = run(whole_chunks(script))
    # One template: its first statement is Python's, the other 11 of the four narrower widths
    # are C's; the three 2**33 ones and the short OKs are Python's.
    assert compiled.entry.fast_exchanges == 11


class Peer:
    """Segments of one connection, from its handshake, each chunk whole."""

    def __init__(self, port: int) -> None:
        self.ends = [(CLIENT_IP, SERVER_IP, port, PORT), (SERVER_IP, CLIENT_IP, PORT, port)]
        self.seq = [1000 + port, 90_000 + port]

    def send(self, direction: int, data: bytes = b"", flags: int = TCP_ACK) -> Segment:
        seg = (*self.ends[direction], self.seq[direction], self.seq[1 - direction], flags, data)
        self.seq[direction] += len(data) + (1 if flags & TCP_SYN else 0)
        return seg

    def opening(self) -> list[Segment]:
        out = [self.send(TO_SERVER, flags=TCP_SYN), self.send(TO_CLIENT, flags=TCP_SYN | TCP_ACK)]
        for direction, data, _ in w.Script().login().chunks:
            out.append(self.send(direction, data))
        return out


def test_a_replay_after_the_normalizer_cleared_its_caches_leaves_them_as_python_would() -> None:
    a, b = Peer(51000), Peer(51001)
    segs = a.opening() + b.opening()
    reply = w.result_set(["v"], [[b"x"]])
    segs += [a.send(TO_SERVER, w.query("SELECT v FROM t WHERE id = 1")), a.send(TO_CLIENT, reply)]
    segs.append(a.send(TO_SERVER, w.query("SELECT v FROM t WHERE id = 2")))  # held
    for i in range(12):  # other statements fill the normalizer's caches: they are cleared
        segs += [b.send(TO_SERVER, w.query(f"SELECT c{i} FROM u")), b.send(TO_CLIENT, reply)]
    segs += [a.send(TO_CLIENT, reply[:7]), a.send(TO_CLIENT, reply[7:])]  # not whole: replayed
    steps = [(1_700_000_000_000_000_000 + i * 1000, seg, False) for i, seg in enumerate(segs)]
    pure, compiled = run(steps)
    assert compiled.entry.fast_replayed == 1
    assert pure.normalizer.cache_resets > 0


def test_the_engine_counts_its_fast_exchanges() -> None:
    """The bundled sample through the engine: most exchanges in C, every statement counted
    once (the file's 7,949), the path's counters among the capture counters."""
    need_compiled()
    capture = FileCapture(str(Path(__file__).resolve().parents[2] / "examples" / "sample.pcap.gz"))
    engine = Engine(EngineConfig(), capture.linktype)
    for buffer, meta in capture.batches():
        engine.batch(buffer, meta)
    engine.finish(engine.last_ns)
    interval = engine.drain()
    counters = engine.capture_counters()
    assert interval.counters["commands"] == sum(t.count for t in interval.templates) == 7949
    assert counters["fast_exchanges"] > 7000
    assert counters["fast_exchanges"] + counters["fast_replayed"] < 7949
    assert counters["fast_cache_resets"] == counters["fast_accs_full"] == counters["fast_error_codes_full"] == 0
