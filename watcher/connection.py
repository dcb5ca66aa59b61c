"""One pymysql connection to the watched server, reused and reopened after a failure.

Owns how the watcher's components talk to MySQL: lazy connect, timeouts on connect, read
and write, autocommit, and closing a connection that failed so that the next query opens a
fresh one.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pymysql


class MySQLConnection:
    def __init__(self, host: str, port: int, user: str, password: str, timeout: float) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.timeout = timeout
        self.conn: Any = None

    def _connection(self) -> Any:
        if self.conn is None:
            self.conn = pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                connect_timeout=self.timeout,
                read_timeout=self.timeout,
                write_timeout=self.timeout,
                autocommit=True,
            )
        return self.conn

    def query_rows(self, sql: str, args: tuple[Any, ...] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        """(column names, rows); a failure closes the connection and propagates."""
        try:
            with self._connection().cursor() as cur:
                cur.execute(sql, args)
                columns = [d[0] for d in cur.description] if cur.description else []
                return columns, list(cur.fetchall())
        except (pymysql.MySQLError, OSError):
            self.close()
            raise

    def query(self, sql: str, args: tuple[Any, ...] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        columns, rows = self.query_rows(sql, args)
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                self.conn.close()
            self.conn = None
