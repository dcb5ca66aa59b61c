"""A varied MySQL workload and the server's own accounting of it (performance_schema).

The workload uses pymysql (text protocol, multi-statements, errors, USE, LOCAL INFILE,
a stored procedure returning result sets) and mysql-connector-python with server-side
prepared statements (binary protocol, unsigned parameters, long data, compression).
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Iterator
from typing import Any

import mysql.connector
import pymysql
import pymysql.constants.CLIENT as CLIENT

from tests.support.accounting import Accounting as Accounting  # the reference, re-exported
from tests.support.mariadb import MariaDB

DB = "shop"


def schema_server() -> Iterator[MariaDB]:
    """A throw-away MariaDB with the workload's schema, destroyed afterwards: the body of
    the tests' ``server`` fixtures (``yield from workload.schema_server()``)."""
    db = MariaDB()
    db.start()
    prepare_schema(db)
    try:
        yield db
    finally:
        db.destroy()


def prepare_schema(server: MariaDB) -> None:
    conn = server.connect(autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB}")
        cur.execute(f"USE {DB}")
        cur.execute(
            "CREATE TABLE items (id INT UNSIGNED PRIMARY KEY, name VARCHAR(64), price DECIMAL(10,2),"
            " qty BIGINT UNSIGNED, note TEXT, created DATETIME)"
        )
        cur.execute("CREATE TABLE logs (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(255), n INT)")
        rows = ",".join(f"({i}, 'item{i}', {i * 1.5:.2f}, {i * 7}, 'note {i}', NOW())" for i in range(1, 501))
        cur.execute(f"INSERT INTO items VALUES {rows}")
        cur.execute(
            "CREATE PROCEDURE two_results(IN lim INT) BEGIN"
            " SELECT id FROM items ORDER BY id LIMIT lim; SELECT COUNT(*) FROM items; END"
        )
    conn.close()


def text_workload(server: MariaDB, rounds: int = 30, seed: int = 7) -> dict[str, Any]:
    """Text-protocol statements; returns facts the test can check."""
    rng = random.Random(seed)
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as infile:
        for i in range(50):
            infile.write(f"loaded {i}\t{i}\n")
    conn = pymysql.connect(
        host="127.0.0.1",
        port=server.port,
        user="root",
        database=DB,
        autocommit=True,
        local_infile=True,
        client_flag=CLIENT.MULTI_STATEMENTS,
    )
    try:
        with conn.cursor() as cur:
            for r in range(rounds):
                cur.execute("SELECT name, price FROM items WHERE id = %s", (rng.randint(1, 500),))
                cur.fetchall()
                ids = [rng.randint(1, 500) for _ in range(rng.randint(1, 8))]
                cur.execute("SELECT id, qty FROM items WHERE id IN %s", (ids,))
                cur.fetchall()
                cur.execute("SELECT * FROM items WHERE price BETWEEN %s AND %s", (r, r + 100))
                cur.fetchall()
                cur.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (rng.randint(1, 500),))
                cur.execute("INSERT INTO logs (msg, n) VALUES (%s, %s), (%s, %s)", (f"m{r}", r, f"m{r}b", r + 1))
                cur.execute("SELECT /* tagged */ COUNT(*) FROM logs")
                cur.fetchall()
                with contextlib.suppress(pymysql.err.ProgrammingError):
                    cur.execute("SELECT * FROM no_such_table WHERE id = %s", (r,))
                with contextlib.suppress(pymysql.err.IntegrityError):
                    cur.execute("INSERT INTO items (id, name) VALUES (%s, 'dup')", (1,))
                if r % 5 == 0:
                    multi = "SELECT 1; SELECT id FROM items WHERE id < %s; UPDATE logs SET n = n + 1 WHERE id = 1"
                    cur.execute(multi, (r + 3,))
                    while cur.nextset():
                        pass
                    with contextlib.suppress(pymysql.err.ProgrammingError):
                        cur.execute("SELEC broken syntax")
                    cur.execute("CALL two_results(%s)", (r + 1,))
                    while cur.nextset():
                        pass
                    conn.select_db(DB)
                    cur.execute(f"USE {DB}")
                    cur.execute("SELECT note FROM items ORDER BY id DESC LIMIT 300")
                    cur.fetchall()
                    conn.ping()
            cur.execute(f"LOAD DATA LOCAL INFILE '{infile.name}' INTO TABLE logs (msg, n)")
    finally:
        conn.close()
        os.unlink(infile.name)
    return {}


def prepared_workload(server: MariaDB, rounds: int = 20, compress: bool = False) -> dict[str, Any]:
    """Server-side prepared statements through mysql-connector-python (pure Python)."""
    conn = mysql.connector.connect(
        host="127.0.0.1",
        port=server.port,
        user="root",
        database=DB,
        use_pure=True,
        compress=compress,
        autocommit=True,
    )
    executes = 0
    try:
        cur = conn.cursor(prepared=True)
        for r in range(rounds):
            cur.execute("SELECT name, qty FROM items WHERE id = %s", (r + 1,))
            cur.fetchall()
            cur.execute("UPDATE items SET qty = %s WHERE id = %s", (2**63 + r, r + 1))
            cur.execute("INSERT INTO logs (msg, n) VALUES (%s, %s)", ("p" * (r + 1), -r))
            executes += 3
        cur.close()
    finally:
        conn.close()
    return {"executes": executes}
