"""COM_STMT_EXECUTE exchanges completed in C (probe/_cexecute.c): which executes the fast
path takes, and that the statement it files them under is always the one Python would.

Each case is one connection fed whole to a pure and a compiled flow table
(``tests.probe.test_cexchange.run``: same events, conversation state and intervals after
every segment); the case then says how many exchanges C completed, so that a regression
that sends everything to Python (or takes what it must not) shows.
"""

from __future__ import annotations

import struct

from probe.decode import Segment
from probe.flows import FlowLimits
from probe.mysql import constants as c
from probe.mysql.state import UNKNOWN_STMT, ConversationLimits
from tests.probe.test_cexchange import STATUS, Side, binary_result, run, whole_chunks
from tests.support import mysqlwire as w

Step = tuple[int, Segment | None, bool]
LONG = c.TYPE_LONG
TEXT = c.TYPE_VAR_STRING


def long(value: int) -> tuple[int, bytes]:
    return (LONG, struct.pack("<i", value))


def templates(side: Side) -> dict[str, dict[str, int]]:
    """Commands by template text over the drained intervals."""
    out: dict[str, dict[str, int]] = {}
    for interval in side.intervals:
        for stats in interval.templates:
            commands = out.setdefault(stats.template, {})
            for name, count in stats.commands.items():
                commands[name] = commands.get(name, 0) + count
    return out


def test_repeated_executes_take_the_fast_path() -> None:
    """sysbench's shape (types bound by the first execute only) and the drivers' (the same
    types bound every time), answered by binary result sets with and without definitions
    and by OKs: all but the first execute of each statement are C's."""
    script = w.Script().login()
    script.client(w.prepare("SELECT c, pad FROM sbtest1 WHERE id = ?"))
    script.server(w.prepare_ok(1, 2, 1))
    script.client(w.prepare("UPDATE t SET c = ? WHERE id = ?"))
    script.server(w.prepare_ok(2, 0, 2))
    for i in range(6):
        script.client(w.execute(1, [long(i)], bind=i % 2 == 0))
        rows: list[list[bytes | None]] = [[struct.pack("<i", i), None]] * i
        script.server(binary_result(2, rows, deprecate=False, metadata=(None, 0, 1)[i % 3]))
        script.client(w.execute(2, [(TEXT, w.lenenc_str(b"x")), long(i)], bind=True))
        script.server(w.framed([w.ok(affected=1, status=STATUS | c.SERVER_QUERY_NO_INDEX_USED)], 1))
    _, compiled = run(whole_chunks(script))
    assert compiled.entry.fast_exchanges == 10
    assert compiled.entry.fast_replayed == 0


def test_deprecate_eof_binary_results() -> None:
    script = w.Script().login(deprecate_eof=True)
    script.client(w.prepare("SELECT v FROM t WHERE id = ?"))
    script.server(w.prepare_ok(7, 1, 1, deprecate_eof=True))
    for i in range(4):
        script.client(w.execute(7, [long(i)], bind=i == 0))
        script.server(binary_result(1, [[None]] * i, deprecate=True, metadata=0))
    _, compiled = run(whole_chunks(script))
    assert compiled.entry.fast_exchanges == 3


def test_an_id_reused_after_close_gets_the_new_template() -> None:
    script = w.Script().login()
    for sql in ("SELECT a FROM t WHERE id = ?", "SELECT b FROM u WHERE id = ?"):
        script.client(w.prepare(sql))
        script.server(w.prepare_ok(1, 1, 1))
        for i in range(3):
            script.client(w.execute(1, [long(i)], bind=i == 0))
            script.server(binary_result(1, [[b"\x01\x00\x00\x00"]], deprecate=False))
        script.client(w.command(c.Command.STMT_CLOSE, struct.pack("<I", 1)))
    pure, compiled = run(drained_at_close(whole_chunks(script)))
    assert compiled.entry.fast_exchanges == 4
    got = templates(compiled)
    assert got == templates(pure)
    assert got["SELECT a FROM t WHERE id = ?"] == got["SELECT b FROM u WHERE id = ?"] == {"Execute": 3}


def drained_at_close(steps: list[Step]) -> list[Step]:
    """An interval ends after each CLOSE (the side's aggregators keep 5 templates)."""
    return [(ts, seg, seg is not None and seg[7][4:5] == bytes([c.Command.STMT_CLOSE])) for ts, seg, _ in steps]


def test_an_id_prepared_again_without_close_gets_the_new_template() -> None:
    """A server would not hand out an open id again; the probe may still see it (a CLOSE in
    a lost segment): Python replaces the statement, and C reads Python's dict."""
    script = w.Script().login()
    for sql in ("SELECT a FROM t WHERE id = ?", "SELECT b FROM u WHERE id = ?"):
        script.client(w.prepare(sql))
        script.server(w.prepare_ok(1, 1, 1))
        for i in range(3):
            script.client(w.execute(1, [long(i)], bind=False))
            script.server(binary_result(1, [[b"\x01\x00\x00\x00"]], deprecate=False))
        script.client(w.command(c.Command.STMT_CLOSE, struct.pack("<I", 9)))  # an unknown id
    pure, compiled = run(drained_at_close(whole_chunks(script)))
    # Types never bound: the values do not decode, which changes nothing in Python; so C
    # takes all but the first of each.
    assert compiled.entry.fast_exchanges == 4
    got = templates(compiled)
    assert got == templates(pure)
    assert got["SELECT a FROM t WHERE id = ?"] == got["SELECT b FROM u WHERE id = ?"] == {"Execute": 3}


def test_reset_connection_forgets_the_statements() -> None:
    script = w.Script().login()
    script.client(w.prepare("SELECT a FROM t WHERE id = ?"))
    script.server(w.prepare_ok(1, 1, 1))
    for i in range(3):
        script.client(w.execute(1, [long(i)]))
        script.server(binary_result(1, [[b"\x01\x00\x00\x00"]], deprecate=False))
    script.client(w.command(c.Command.RESET_CONNECTION))
    script.server(w.framed([w.ok()], 1))
    for i in range(3):  # the server would refuse them; an OK is what C would take if it misread
        script.client(w.execute(1, [long(i)]))
        script.server(binary_result(1, [[b"\x01\x00\x00\x00"]], deprecate=False))
    pure, compiled = run(whole_chunks(script))
    assert compiled.entry.fast_exchanges == 2
    got = templates(compiled)
    assert got == templates(pure)
    assert got[UNKNOWN_STMT] == {"Execute": 3}


def test_long_data_and_statement_reset_are_pythons_and_then_c_again() -> None:
    script = w.Script().login()
    script.client(w.prepare("INSERT INTO t (id, doc) VALUES (?, ?)"))
    script.server(w.prepare_ok(3, 0, 2))
    params = [long(1), (c.TYPE_BLOB, w.lenenc_str(b"doc"))]
    script.client(w.execute(3, params)).server(w.framed([w.ok(affected=1)], 1))
    script.client(w.execute(3, params)).server(w.framed([w.ok(affected=1)], 1))  # C's
    script.client(w.command(c.Command.STMT_SEND_LONG_DATA, struct.pack("<IH", 3, 1) + b"a long document"))
    script.client(w.execute(3, params)).server(w.framed([w.ok(affected=1)], 1))  # consumes the long data
    script.client(w.execute(3, params)).server(w.framed([w.ok(affected=1)], 1))  # C's
    script.client(w.command(c.Command.STMT_SEND_LONG_DATA, struct.pack("<IH", 3, 1) + b"dropped"))
    script.client(w.command(c.Command.STMT_RESET, struct.pack("<I", 3))).server(w.framed([w.ok()], 1))
    script.client(w.execute(3, params)).server(w.framed([w.ok(affected=1)], 1))  # C's: the reset cleared it
    _, compiled = run(whole_chunks(script))
    assert compiled.entry.fast_exchanges == 3


def test_executes_python_keeps() -> None:
    """Id -1 behind its PREPARE, a cursor, a rebind to other types, session state and a bulk
    execute: none is C's (an ERR is, tests/probe/test_cerrors.py, and so are more results,
    tests/probe/test_cmulti.py)."""
    script = w.Script().login()
    script.client(w.prepare("SELECT v FROM t WHERE id = ?") + w.execute(0xFFFFFFFF, [long(1)]))
    script.server(w.prepare_ok(1, 1, 1) + binary_result(1, [], deprecate=False))
    script.client(w.execute(1, [long(2)])).server(binary_result(1, [], deprecate=False))  # C's
    script.client(w.execute(0xFFFFFFFF, [long(2)])).server(binary_result(1, [], deprecate=False))
    script.client(w.execute(1, [long(2)], flags=1)).server(binary_result(1, [], deprecate=False, cursor=True))
    script.client(w.execute(1, [(TEXT, w.lenenc_str(b"2"))])).server(binary_result(1, [], deprecate=False))
    script.client(w.execute(1, [long(2)], bind=False)).server(w.framed([w.err(1054)], 1))  # C's
    more = binary_result(1, [], deprecate=False, status=STATUS | c.SERVER_MORE_RESULTS_EXISTS)
    script.client(w.execute(1, [long(2)], bind=False)).server(more + w.framed([w.ok()], 1))  # C's
    script.client(w.execute(1, [long(2)], bind=False)).server(w.framed([w.ok(schema="other")], 1))
    script.client(w.bulk_execute(1, [LONG], [[struct.pack("<i", 5)]])).server(w.framed([w.ok(affected=1)], 1))
    pure, compiled = run(whole_chunks(script))
    assert compiled.entry.fast_exchanges == 3
    assert compiled.entry.fast_replayed == 1  # the session state
    assert templates(compiled) == templates(pure)


def test_a_cut_prepare_files_its_executes_as_incomplete() -> None:
    """A PREPARE longer than max_query_bytes: its executes are incomplete (Python's)."""
    limits = FlowLimits(conversation=ConversationLimits(max_query_bytes=40))
    script = w.Script().login()
    script.client(w.prepare("SELECT a_rather_long_column_name FROM a_table WHERE id = ?"))
    script.server(w.prepare_ok(1, 1, 1))
    for i in range(3):
        script.client(w.execute(1, [long(i)], bind=False))
        script.server(binary_result(1, [[b"\x01\x00\x00\x00"]], deprecate=False))
    pure, compiled = run(whole_chunks(script), limits)
    assert compiled.entry.fast_exchanges == 0
    assert compiled.intervals[-1].counters["incomplete"] == pure.intervals[-1].counters["incomplete"] == 4


def test_a_query_and_an_execute_of_one_template_are_counted_apart() -> None:
    script = w.Script().login()
    script.client(w.prepare("SELECT v FROM t WHERE id = ?")).server(w.prepare_ok(1, 1, 1))
    for i in range(3):
        script.client(w.query(f"SELECT v FROM t WHERE id = {i}"))
        script.server(w.result_set(["v"], [[b"x"]]))
        script.client(w.execute(1, [long(i)], bind=i == 0))
        script.server(binary_result(1, [[b"\x01\x00\x00\x00"]], deprecate=False))
    pure, compiled = run(whole_chunks(script))
    assert compiled.entry.fast_exchanges == 4
    got = templates(compiled)
    assert got == templates(pure)
    assert got["SELECT v FROM t WHERE id = ?"] == {"Query": 3, "Execute": 3}
