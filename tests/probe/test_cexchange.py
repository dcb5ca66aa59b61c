"""COM_QUERY exchanges completed in C (probe/_cexchange.c, probe/_cwire.c) against their
oracle, the Python conversation and aggregator.

The skeleton the C path looks templates up by must be ``_FAST_LITERAL.sub("?", sql)`` byte
for byte, and exactly for the text the normalizer would put through its skeleton cache
(hypothesis, on text made of the characters literals are made of). Then two flow tables,
one pure and one compiled with the fast path attached to its own aggregator, are fed the
same generated connections (logins with and without CLIENT_DEPRECATE_EOF, queries answered
by OK packets, result sets, empty ones, errors, warnings, index flags, multi-results,
session changes, USE, comments, slow ones) cut into random segments, interleaved, with
bare ACKs, FIN/RST, expiry sweeps and interval drains. After every step the two must have
the same other events, the same normalizer caches and, on every connection with nothing
held, the same conversation state; every drained interval must be the same.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from probe import native
from probe.aggregate import Aggregator, Interval
from probe.capture import FileCapture
from probe.decode import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Segment
from probe.engine import Engine, EngineConfig
from probe.flows import FlowTable
from probe.mysql import constants as c
from probe.mysql.conversation import Conversation
from probe.mysql.events import TO_CLIENT, TO_SERVER, CommandCompleted, Event
from probe.mysql.state import PreparedStatement, Request
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

    def __init__(self, *, pure: bool, server_ips: frozenset[bytes] = frozenset({SERVER_IP.to_bytes(4, "big")})) -> None:
        self.pure = pure
        self.aggregator = Aggregator(slow_threshold_us=SLOW_US, max_templates=5, max_slow=3)
        self.normalizer = Normalizer(cache_size=9)
        self.other: list[Event] = []
        self.flows = FlowTable(
            frozenset({PORT}),
            self._events,
            self.normalizer,
            server_ips=server_ips,
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
        return interval_state(self.aggregator.drain())


def interval_state(interval: Interval) -> Any:
    return (
        sorted(repr(sorted(t.to_json().items())) for t in interval.templates),
        [s.to_json() for s in interval.slow],
        interval.slow_dropped,
        interval.counters,
    )


def conv_state(conv: Conversation) -> dict[str, Any]:
    skipped = ("_events", "normalizer", "budget", "_walk", "limits")
    return {k: plain(v) for k, v in vars(conv).items() if k not in skipped}


def plain(value: Any) -> Any:
    """Requests and prepared statements as their fields (they have no equality)."""
    if isinstance(value, Request):
        return vars(value)
    if isinstance(value, PreparedStatement):
        return [plain(getattr(value, name)) for name in PreparedStatement.__slots__]
    if isinstance(value, deque | list):
        return [plain(v) for v in value]
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
        return w.framed([w.err(1064)], 1)
    if kind == "schema":
        return w.framed([w.ok(schema=f"db{n % 2}")], 1)
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
    ("USE db{b}", "ok"),
    ("SELECT {n}; SELECT 2", "more"),
    ("CALL p({n})", "more"),
    ("SET SESSION x = {n}", "schema"),
    ("/* c */ SELECT v FROM t WHERE id = {n}", "rows"),
    ("SELECT v FROM t{n} WHERE id = {m}", "rows"),
]
GAPS_US = [1, 40, 150, 290, 1, 40, 400, 5000]


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
    for _ in range(draw(st.integers(1, 16))):
        sql, kind = draw(st.sampled_from(QUERIES[:5] * 4 + QUERIES))
        n = draw(st.integers(0, 300))
        script.client(w.query(sql.format(n=n, m=n + 1, b=n % 2)))
        script.server(response(kind, n, deprecate))
    for direction, data, _ in script.chunks:
        after = draw(st.sampled_from(GAPS_US))
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


def run(steps: list[tuple[int, Segment | None, bool]]) -> tuple[Side, Side]:
    need_compiled()
    pure, compiled = Side(pure=True), Side(pure=False)
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
    assert counters["fast_cache_resets"] == counters["fast_accs_full"] == 0
