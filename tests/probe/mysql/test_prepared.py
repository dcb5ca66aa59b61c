"""Prepared statements (probe/mysql/prepared.py): MariaDB's statement id -1, failed
prepares and COM_STMT_BULK_EXECUTE, fed whole, byte by byte and at random splits."""

from __future__ import annotations

import struct

import pytest

from probe.mysql import constants as c
from probe.mysql.events import TO_CLIENT, TO_SERVER, ResponseLost
from probe.normalize import Normalizer
from tests.probe.mysql.test_conversation import completed, run, shape
from tests.support import mysqlwire as w

LAST = 0xFFFFFFFF  # "the statement just prepared"
INSERT = "INSERT INTO t (v) VALUES (?)"
SELECT = "SELECT id FROM t WHERE v = ?"
MISSING = "SELECT * FROM missing WHERE id = ?"
SPLITS = ["whole", "bytes", "random"]


def template(sql: str) -> str:
    return Normalizer().normalize(sql).text


def text(value: bytes) -> tuple[int, bytes]:
    return (c.TYPE_VAR_STRING, w.lenenc_str(value))


def long_int(value: int) -> tuple[int, bytes]:
    return (c.TYPE_LONG, struct.pack("<i", value))


def minus_one_script() -> w.Script:
    """What MariaDB Connector/C, /Python and the Node ``mariadb`` package send: PREPARE and
    EXECUTE(-1) in one write, before the prepare's response."""
    unknown = "Unknown prepared statement handler (4294967295) given to mysqld_stmt_execute"
    return (
        w.Script()
        .login()
        .client(w.prepare(INSERT) + w.execute(LAST, [text(b"abc")]))
        .server(w.prepare_ok(1, columns=0, params=1) + w.framed([w.ok(affected=1)], 1), after_us=300)
        .client(w.prepare(SELECT) + w.execute(LAST, [text(b"abc")]))
        .server(w.prepare_ok(2, columns=1, params=1) + w.binary_result_set(1, [[struct.pack("<i", 5)]] * 6))
        .client(w.prepare(MISSING) + w.execute(LAST, [long_int(1)]))
        .server(
            w.framed([w.err(1146, "42S02", "Table 'shop.missing' doesn't exist")], 1)
            + w.framed([w.err(1243, "HY000", unknown)], 1)
        )
        # -1 after the failed prepare's response still means that statement: refused again.
        .client(w.execute(LAST, [long_int(2)]))
        .server(w.framed([w.err(1243, "HY000", unknown)], 1))
        # The real ids keep their statements.
        .client(w.execute(2, [text(b"x")]))
        .server(w.binary_result_set(1, [[struct.pack("<i", 7)]]))
        .client(w.execute(1, [text(b"y")]))
        .server(w.framed([w.ok(affected=1)], 1))
    )


@pytest.mark.parametrize("split", SPLITS)
def test_statement_id_minus_one_is_the_last_prepare_request(split: str) -> None:
    done = completed(run(minus_one_script(), split=split)[0])[1:]
    described = [(e.command, e.template, e.error_code, e.rows_sent, e.rows_affected) for e in done]
    insert, select, missing = (template(sql) for sql in (INSERT, SELECT, MISSING))
    assert described == [
        ("Prepare", "PREPARE " + insert, 0, 0, 0),
        ("Execute", insert, 0, 0, 1),
        ("Prepare", "PREPARE " + select, 0, 0, 0),
        ("Execute", select, 0, 6, 0),
        ("Prepare", "PREPARE " + missing, 1146, 0, 0),
        ("Execute", missing, 1243, 0, 0),
        ("Execute", missing, 1243, 0, 0),
        ("Execute", select, 0, 1, 0),
        ("Execute", insert, 0, 0, 1),
    ]
    assert done[1].params == ("abc",) and done[5].params == (1,)
    assert all(e.complete for e in done)


def test_statement_id_minus_one_splits_agree() -> None:
    whole = [shape(e) for e in completed(run(minus_one_script())[0])]
    for seed in range(4):
        assert [shape(e) for e in completed(run(minus_one_script(), split="random", seed=seed)[0])] == whole


def test_minus_one_whose_prepare_response_is_lost_keeps_the_template() -> None:
    script = w.Script().login().client(w.prepare(SELECT) + w.execute(LAST, [text(b"q")]))
    _, conv = run(script)
    lost = conv.gap(10**19, TO_CLIENT, 40)  # the prepare's response is lost
    assert [e.command for e in lost if isinstance(e, ResponseLost)] == ["Prepare", "Execute"]
    # The server answers the next -1 execute of the same statement: still SELECT.
    conv.feed(10**19 + 1, TO_SERVER, w.execute(LAST, [text(b"r")]))
    done = completed(conv.feed(10**19 + 2, TO_CLIENT, w.binary_result_set(1, [[b"\0\0\0\0"]] * 2)))
    assert [(e.template, e.rows_sent) for e in done] == [(template(SELECT), 2)]


def bulk_script(*, send_types: bool = True) -> w.Script:
    """``executemany`` of MariaDB Connector/Python: PREPARE + BULK_EXECUTE(-1) in one write."""
    rows = [[w.lenenc_str(f"v{i}".encode()), struct.pack("<d", i * 1.5) if i % 3 else None] for i in range(50)]
    types = [c.TYPE_VAR_STRING, c.TYPE_DOUBLE]
    script = (
        w.Script()
        .login()
        .client(w.prepare("INSERT INTO t (v, d) VALUES (?, ?)") + w.bulk_execute(LAST, types, rows))
        .server(w.prepare_ok(9, columns=0, params=2) + w.framed([w.ok(affected=50)], 1), after_us=900)
    )
    if not send_types:  # a second bulk of the same statement, types remembered
        script.client(w.bulk_execute(9, types, rows[:7], send_types=False))
        script.server(w.framed([w.ok(affected=7)], 1))
    return script


@pytest.mark.parametrize("split", SPLITS)
def test_bulk_execute_is_one_statement_with_its_affected_rows(split: str) -> None:
    events, conv = run(bulk_script(send_types=False), split=split)
    done = completed(events)[1:]
    insert = template("INSERT INTO t (v, d) VALUES (?, ?)")
    assert [(e.command, e.template, e.rows_affected) for e in done] == [
        ("Prepare", "PREPARE " + insert, 0),
        ("Bulk_execute", insert, 50),
        ("Bulk_execute", insert, 7),
    ]
    assert done[1].params == ("v0", None)  # the first row, for samples
    assert done[2].params == ("v0", None)
    assert all(e.complete for e in done) and not conv.pending
    assert not [e for e in events if type(e).__name__ in ("Garbage", "Resynced")]
