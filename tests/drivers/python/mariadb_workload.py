"""MariaDB Connector/Python (``mariadb`` from PyPI): the driver workload.

Usage: mariadb_workload.py HOST PORT DATABASE BIG_BYTES (DRIVER_COMPRESS=1: compressed). Text queries, server-side
prepared statements with every parameter type, executemany (COM_STMT_BULK_EXECUTE),
multi-statements, a CALL returning two result sets, errors, and one request larger than
a 16 MiB protocol packet.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import os
import sys

import mariadb
from mariadb.constants import CLIENT


def main() -> None:
    host, port, database, big = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    conn = mariadb.connect(
        host=host,
        port=port,
        user="root",
        password="",
        database=database,
        autocommit=True,
        client_flag=CLIENT.MULTI_STATEMENTS,
        compress=os.environ.get("DRIVER_COMPRESS") == "1",
    )
    cur = conn.cursor()
    for i in range(1, 6):
        cur.execute(f"SELECT name, price FROM items WHERE id = {i}")
        cur.fetchall()
    cur.execute("UPDATE items SET qty = qty + 1 WHERE id < 5")

    prepared = conn.cursor(prepared=True)
    for i in range(3):
        prepared.execute("SELECT id, name FROM items WHERE id BETWEEN ? AND ?", (i + 1, i + 10))
        prepared.fetchall()
    prepared.close()
    prepared = conn.cursor(prepared=True)  # one cursor per statement: reusing one crashes 1.1.14
    prepared.execute(
        "INSERT INTO typed (ti, si, i, bi, ub, f, d, dec_v, s, bin, bl, tx, day, dt, tm, flag, nul)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            -5,
            300,
            -70000,
            -(2**40),
            2**63 + 5,
            1.5,
            2.25,
            decimal.Decimal("12345.678901"),
            "text é",
            b"\x00\x01\xff",
            b"blob" * 100,
            "long text " * 50,
            datetime.date(2024, 2, 29),
            datetime.datetime(2024, 2, 29, 12, 30, 45, 123456),
            datetime.timedelta(hours=5, minutes=6, seconds=7, microseconds=8),
            True,
            None,
        ),
    )
    prepared.close()
    prepared = conn.cursor(prepared=True)
    prepared.execute("SELECT ti, ub, dec_v, day, dt, tm FROM typed WHERE id = ?", (1,))
    prepared.fetchall()

    # executemany: COM_STMT_BULK_EXECUTE
    prepared.close()
    prepared = conn.cursor(prepared=True)
    bulk_insert = "INSERT INTO bulk (name, n) VALUES (?, ?)"
    prepared.executemany(bulk_insert, [(f"row{i}", i) for i in range(200)])
    print(json.dumps({"bulk": bulk_insert, "affected": prepared.rowcount}))
    prepared.close()
    prepared = conn.cursor(prepared=True)
    bulk_update = "UPDATE bulk SET n = n + ? WHERE id = ?"
    prepared.executemany(bulk_update, [(1, i) for i in range(1, 51)])
    print(json.dumps({"bulk": bulk_update, "affected": prepared.rowcount}))

    cur.execute("SELECT 1; SELECT id FROM items WHERE id < 3; UPDATE items SET qty = qty + 1 WHERE id = 1")
    while True:
        if cur.description:
            cur.fetchall()
        if not cur.nextset():
            break

    cur.callproc("two_results", (4,))
    while True:
        if cur.description:
            cur.fetchall()
        if not cur.nextset():
            break

    for sql in ("SELEC broken syntax", "SELECT * FROM no_such_table", "INSERT INTO items (id, name) VALUES (1, 'd')"):
        with contextlib.suppress(mariadb.Error):
            cur.execute(sql)
    prepared.close()
    prepared = conn.cursor(prepared=True)
    with contextlib.suppress(mariadb.Error):
        prepared.execute("INSERT INTO items (id, name) VALUES (?, ?)", (2, "dup"))

    cur.execute("SELECT LENGTH('" + "x" * big + "')")
    assert cur.fetchall()[0][0] == big
    cur.close()
    prepared.close()
    conn.close()


if __name__ == "__main__":
    main()
