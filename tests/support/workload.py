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
from collections import Counter
from typing import Any

import mysql.connector
import pymysql
import pymysql.constants.CLIENT as CLIENT

from probe.normalize import Normalizer, split_statements
from tests.support.mariadb import MariaDB

DB = "shop"


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


class Accounting:
    """The server's own statement accounting, read over one connection opened up front.

    Open it before ``reset()`` and before the capture starts: its own statements then stay
    out of what it reports (TRUNCATEs are filtered, its reads come after the snapshot).
    """

    def __init__(self, server: MariaDB, normalizer: Normalizer | None = None) -> None:
        self.server = server
        self.norm = normalizer or Normalizer()
        self.conn = server.connect(autocommit=True)

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def reset(self) -> None:
        for table in (
            "events_statements_summary_by_digest",
            "events_statements_history_long",
            "events_statements_summary_global_by_event_name",
        ):
            self._query(f"TRUNCATE performance_schema.{table}")

    def close(self) -> None:
        self.conn.close()

    def _key(self, sql: str) -> str:
        # A statement of a multi-statement query is recorded with the rest of the text.
        return self.norm.normalize(split_statements(sql)[0]).key

    def expectations(self, schema: str | None = None) -> dict[str, list[int]]:
        """Per our template key: [statements, errors] the server accounted.

        Counts come from events_statements_summary_by_digest (read first). Each digest is
        mapped to our template through the SQL texts of its statements in
        events_statements_history_long, which holds every statement since ``reset()``;
        statements nested in stored programs never crossed the wire and are subtracted;
        statements the parser rejected have no digest and are taken from the history.
        """
        schema_filter = f" AND SCHEMA_NAME = '{schema}'" if schema else ""
        summary = self._query(
            "SELECT DIGEST, DIGEST_TEXT, COUNT_STAR, SUM_ERRORS"
            " FROM performance_schema.events_statements_summary_by_digest"
            " WHERE DIGEST IS NOT NULL AND DIGEST_TEXT NOT LIKE 'TRUNCATE `performance_schema`%'" + schema_filter
        )
        history = self._query(
            "SELECT DIGEST, SQL_TEXT, NESTING_EVENT_LEVEL, ERRORS, EVENT_NAME"
            " FROM performance_schema.events_statements_history_long"
            + (f" WHERE CURRENT_SCHEMA = '{schema}'" if schema else "")
        )
        top_keys: dict[str, Counter[str]] = {}
        nested: Counter[str] = Counter()
        nested_errors: Counter[str] = Counter()
        expected: dict[str, list[int]] = {}
        for digest, sql, level, errors, event in history:
            if digest is None:
                if not level and sql is not None and event.startswith("statement/sql/"):
                    entry = expected.setdefault(self._key(sql), [0, 0])
                    entry[0] += 1
                    entry[1] += int(errors)
            elif level:
                nested[digest] += 1
                nested_errors[digest] += int(errors)
            elif sql is not None:
                top_keys.setdefault(digest, Counter())[self._key(sql)] += 1
        for digest, text, count, errors in summary:
            top = int(count) - nested[digest]
            if top <= 0:
                continue
            keys = top_keys.get(digest)
            if not keys:
                raise AssertionError(f"digest {digest} ({text}) has {top} top-level statements but no SQL text")
            if len(keys) > 1:
                raise AssertionError(f"digest {digest} ({text}) maps to several templates: {keys}")
            entry = expected.setdefault(next(iter(keys)), [0, 0])
            entry[0] += top
            entry[1] += int(errors) - nested_errors[digest]
        return expected

    def commands(self) -> dict[str, int]:
        """statement/com/* counts (Prepare, Execute, Ping, ...) since ``reset()``."""
        return {
            name.rsplit("/", 1)[1]: int(n)
            for name, n in self._query(
                "SELECT EVENT_NAME, COUNT_STAR"
                " FROM performance_schema.events_statements_summary_global_by_event_name"
                " WHERE EVENT_NAME LIKE 'statement/com/%' AND COUNT_STAR > 0"
            )
        }
