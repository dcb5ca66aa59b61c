"""COM_QUERY and COM_STMT_EXECUTE exchanges answered by one ERR packet, completed in C
(probe/_cwire.c reads the ERR, probe/_caccs.c counts it by code).

Each case is one connection fed whole to a pure and a compiled flow table
(``tests.probe.test_cexchange.run``: same events, conversation state and intervals after
every segment); the case then says how many exchanges C completed and checks the errors
by code, so that a regression that sends every ERR to Python (or takes one it must not)
shows.
"""

from __future__ import annotations

import struct

from probe import native
from probe.decode import TCP_ACK, TCP_SYN, Segment
from probe.mysql import constants as c
from probe.mysql.events import TO_CLIENT, TO_SERVER
from tests.probe.test_cexchange import CLIENT_IP, PORT, SERVER_IP, Side, binary_result, run, whole_chunks
from tests.support import mysqlwire as w

Step = tuple[int, Segment | None, bool]
DUPLICATE, NO_TABLE, DEADLOCK = 1062, 1146, 1213


def bare_err(code: int, message: str = "no sqlstate") -> bytes:
    """An ERR packet without '#' and sqlstate (a client without CLIENT_PROTOCOL_41)."""
    return b"\xff" + struct.pack("<H", code) + message.encode()


def errors(side: Side) -> tuple[dict[str, dict[str, int]], int]:
    """Errors by code by template text over the drained intervals, and their counter."""
    out: dict[str, dict[str, int]] = {}
    for interval in side.intervals:
        for stats in interval.templates:
            for code, count in stats.errors.items():
                codes = out.setdefault(stats.template, {})
                codes[code] = codes.get(code, 0) + count
    return out, sum(interval.counters["errors"] for interval in side.intervals)


def fast(side: Side) -> int:
    return int(side.entry.fast_exchanges)


def test_repeated_errors_are_counted_in_c() -> None:
    """Duplicate keys (with sqlstate) and a missing table (without): after the first of each
    template, every one is C's, counted under its code as Aggregator.add counts it."""
    script = w.Script().login()
    for i in range(6):
        script.client(w.query(f"INSERT INTO t VALUES ({i}, 'dup')"))
        script.server(w.framed([w.err(DUPLICATE, "23000", f"Duplicate entry '{i}' for key 'PRIMARY'")], 1))
        script.client(w.query(f"SELECT v FROM missing WHERE id = {i}"))
        script.server(w.framed([bare_err(NO_TABLE, "Table 'shop.missing' doesn't exist")], 1))
    pure, compiled = run(whole_chunks(script))
    assert fast(compiled) == 10
    assert compiled.entry.fast_replayed == 0
    assert errors(compiled) == errors(pure)
    assert errors(pure) == (
        {"INSERT INTO t VALUES (...)": {"1062": 6}, "SELECT v FROM missing WHERE id = ?": {"1146": 6}},
        12,
    )


def test_errors_and_results_of_one_template_interleave() -> None:
    """One template answered by OKs, result sets and ERRs of three codes in turn: all C's
    but the first; every field of the interval equal (run compares them)."""
    script = w.Script().login(deprecate_eof=True)
    replies = [
        w.framed([w.ok(affected=1)], 1),
        w.framed([w.err(DEADLOCK, "40001", "Deadlock found")], 1),
        w.result_set(["v"], [[b"x"]], deprecate_eof=True),
        w.framed([w.err(DUPLICATE, "23000", "")], 1),
        w.framed([bare_err(1205, "Lock wait timeout")], 1),
    ]
    for i in range(15):
        script.client(w.query(f"UPDATE t SET v = {i} WHERE id = {i}"))
        script.server(replies[i % len(replies)])
    pure, compiled = run(whole_chunks(script))
    assert fast(compiled) == 14
    assert errors(compiled) == errors(pure)
    assert errors(pure) == (
        {"UPDATE t SET v = ? WHERE id = ?": {"1213": 3, "1062": 3, "1205": 3}},
        9,
    )


def test_execute_errors_are_counted_in_c() -> None:
    """Executes of a prepared INSERT refused as duplicates, between successful ones: C's
    after the first execute (which binds the types), same state and counts as Python's."""
    script = w.Script().login()
    script.client(w.prepare("INSERT INTO t (id) VALUES (?)"))
    script.server(w.prepare_ok(1, 0, 1))
    for i in range(8):
        script.client(w.execute(1, [(c.TYPE_LONG, struct.pack("<i", i))], bind=i == 0))
        reply = w.err(DUPLICATE, "23000", "Duplicate entry") if i % 2 else w.ok(affected=1)
        script.server(w.framed([reply], 1))
    script.client(w.prepare("SELECT v FROM t WHERE id = ?"))
    script.server(w.prepare_ok(2, 1, 1))
    for i in range(4):
        script.client(w.execute(2, [(c.TYPE_LONG, struct.pack("<i", i))], bind=i == 0))
        if i == 2:
            script.server(binary_result(1, [[struct.pack("<i", i)]], deprecate=False))
        else:
            script.server(w.framed([bare_err(NO_TABLE)], 1))
    pure, compiled = run(whole_chunks(script))
    assert fast(compiled) == 7 + 3
    assert errors(compiled) == errors(pure)
    assert errors(pure) == (
        {"INSERT INTO t(id) VALUES (...)": {"1062": 4}, "SELECT v FROM t WHERE id = ?": {"1146": 3}},
        7,
    )


def test_the_bound_on_codes_per_accumulator() -> None:
    """A template failing with more distinct codes than one accumulator counts: C takes the
    codes it has room for, Python the others (fast_error_codes_full), the counts equal."""
    assert native.cflows is not None
    room = native.cflows.ACC_ERROR_CODES
    codes = [2000 + k for k in range(room + 3)]
    script = w.Script().login()
    for code in codes:
        for i in range(3):
            script.client(w.query(f"DELETE FROM t WHERE id = {code + i}"))
            script.server(w.framed([w.err(code, "HY000", f"error {code}")], 1))
    for i in range(2):  # a code with room again after others were refused
        script.client(w.query(f"DELETE FROM t WHERE id = {i}"))
        script.server(w.framed([w.err(codes[1], "HY000", "again")], 1))
    pure, compiled = run(whole_chunks(script))
    # The first statement is Python's (its entry is made); the accumulator then takes the
    # first code's two others and `room - 1` more codes, three statements each.
    taken = 2 + 3 * (room - 1) + 2
    assert fast(compiled) == taken
    assert compiled.entry.fast_error_codes_full == 3 * len(codes) - 1 - (taken - 2)
    assert errors(compiled) == errors(pure)
    by_code = errors(pure)[0]["DELETE FROM t WHERE id = ?"]
    assert by_code == {str(code): 3 for code in codes} | {str(codes[1]): 5}


def test_a_drain_empties_the_codes() -> None:
    """After an interval is drained its accumulators start empty: codes refused before have
    room again in the next interval."""
    assert native.cflows is not None
    room = native.cflows.ACC_ERROR_CODES
    script = w.Script().login()
    for code in range(3000, 3000 + room + 1):
        for i in range(2):
            script.client(w.query(f"DELETE FROM u WHERE id = {i}"))
            script.server(w.framed([w.err(code)], 1))
    steps = whole_chunks(script)
    last = steps[-1]
    steps[-1] = (last[0], last[1], True)  # drain after the last reply
    more = w.Script()
    for i in range(3):
        more.client(w.query(f"DELETE FROM u WHERE id = {i}"))
        more.server(w.framed([w.err(3000 + room)], 1))
    seq = [1000 + sum(len(d) for dr, d, _ in script.chunks if dr == TO_SERVER)]
    seq.append(5000 + sum(len(d) for dr, d, _ in script.chunks if dr == TO_CLIENT))
    ts = last[0]
    ends = [(CLIENT_IP, SERVER_IP, 51000, PORT), (SERVER_IP, CLIENT_IP, PORT, 51000)]
    for direction, data, _ in more.chunks:
        ts += 50_000
        steps.append((ts, (*ends[direction], seq[direction], seq[1 - direction], TCP_ACK, data), False))
        seq[direction] += len(data)
    pure, compiled = run(steps)
    # Interval one: the first Python's, then 1 + 2 * (room - 1) in C, the last code's two
    # refused. Interval two: the first Python's (a new entry), two in C.
    assert fast(compiled) == 1 + 2 * (room - 1) + 2
    assert compiled.entry.fast_error_codes_full == 2
    assert errors(compiled) == errors(pure)
    assert [i.counters["errors"] for i in compiled.intervals] == [i.counters["errors"] for i in pure.intervals]


def test_errors_python_keeps() -> None:
    """Codes 0 and 0xFFFF, an ERR cut in two segments, one after rows, one to a PREPARE, one
    followed by more bytes: all Python's (one after a CALL's first result is C's:
    tests/probe/test_cmulti.py)."""
    script = w.Script().login()
    sql = "SELECT v FROM t WHERE id = {}"
    script.client(w.query(sql.format(0)))
    script.server(w.framed([w.err(DUPLICATE)], 1))
    for code in (0, 0xFFFF):
        script.client(w.query(sql.format(code)))
        script.server(w.framed([w.err(code)], 1))
    script.client(w.query(sql.format(7)))
    whole = w.framed([w.err(NO_TABLE)], 1)
    script.server(whole[:6]).server(whole[6:])
    script.client(w.query(sql.format(8)))
    script.server(w.framed([w.lenenc_int(1), w.column_def("v"), w.eof(), w.lenenc_str(b"x"), w.err(1317)], 1))
    script.client(w.query("CALL p(1)"))
    script.server(w.framed([w.ok()], 1))
    script.client(w.prepare("SELECT nothing FROM missing"))
    script.server(w.framed([w.err(NO_TABLE)], 1))
    script.client(w.query(sql.format(9)))
    script.server(w.framed([w.err(DUPLICATE)], 1) + w.framed([w.err(DUPLICATE)], 2))
    pure, compiled = run(whole_chunks(script))
    assert fast(compiled) == 0
    assert errors(compiled) == errors(pure)


def test_a_slow_error_is_pythons_with_its_message() -> None:
    """An ERR slower than the threshold: its sample carries code, sqlstate and message."""
    steps: list[Step] = []
    ts = 1_700_000_000_000_000_000
    ends = [(CLIENT_IP, SERVER_IP, 51000, PORT), (SERVER_IP, CLIENT_IP, PORT, 51000)]
    seq = [1000, 5000]
    steps.append((ts, (*ends[TO_SERVER], 999, 0, TCP_SYN, b""), False))
    steps.append((ts, (*ends[TO_CLIENT], 4999, 1000, TCP_SYN | TCP_ACK, b""), False))
    script = w.Script().login()
    for i in range(4):
        script.client(w.query(f"SELECT v FROM t WHERE id = {i}"))
        script.server(w.framed([w.err(DEADLOCK, "40001", "Deadlock found")], 1), after_us=5000 if i == 2 else 50)
    for direction, data, after in script.chunks:
        ts += after * 1000
        steps.append((ts, (*ends[direction], seq[direction], seq[1 - direction], TCP_ACK, data), False))
        seq[direction] += len(data)
    pure, compiled = run(steps)
    assert fast(compiled) == 2
    assert errors(compiled) == errors(pure)
    assert errors(pure) == ({"SELECT v FROM t WHERE id = ?": {"1213": 4}}, 4)
    slow = [s for interval in compiled.intervals for s in interval.slow]
    assert [s.error for s in slow] == [{"code": DEADLOCK, "sqlstate": "40001", "message": "Deadlock found"}]
