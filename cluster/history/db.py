"""The two databases history lives in: SQLite (embedded default) and PostgreSQL (shared).

Owns connections, dialect differences and schema migrations. Statements are written once
with ``?`` placeholders and run on both; the schema is a list of versioned migrations
applied in order inside a transaction, the version kept in ``history_meta``. Each
``Database`` belongs to one thread (the store runs in a dedicated executor thread).

- SQLite: one file in the node's state directory, WAL journal (readers do not block the
  writer), ``synchronous=NORMAL`` (a power cut may lose the last transaction, never
  corrupt the file), rows in a ``WITHOUT ROWID`` table clustered on their key.
- PostgreSQL: any DSN psycopg 3 accepts; writers of several masters take a transaction
  advisory lock, so rollups and pruning are never done twice at the same time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Advisory lock id that serialises history writers sharing one PostgreSQL database.
PG_WRITE_LOCK = 0x6D7973716C_68  # "mysql" "h"

SCHEMA_VERSION = 2

# Version -> statements; {blob}, {serial_pk} and {without_rowid} are filled per dialect.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE history_meta (name VARCHAR(64) PRIMARY KEY, value BIGINT NOT NULL)",
        "CREATE TABLE history_templates (key VARCHAR(32) PRIMARY KEY, text TEXT NOT NULL,"
        " first_seen_ns BIGINT NOT NULL, last_seen_ns BIGINT NOT NULL)",
        "CREATE TABLE history_series (id {serial_pk}, server TEXT NOT NULL, db TEXT NOT NULL,"
        " usr TEXT NOT NULL, key VARCHAR(32) NOT NULL, UNIQUE (server, db, usr, key))",
        "CREATE TABLE history_rows (level SMALLINT NOT NULL, start_ns BIGINT NOT NULL, series BIGINT NOT NULL,"
        " calls BIGINT NOT NULL, errors BIGINT NOT NULL, lat_sum BIGINT NOT NULL, lat_min BIGINT NOT NULL,"
        " lat_max BIGINT NOT NULL, rows_sent BIGINT NOT NULL, rows_affected BIGINT NOT NULL,"
        " bytes_in BIGINT NOT NULL, bytes_out BIGINT NOT NULL, no_index_used BIGINT NOT NULL,"
        " first_seen_ns BIGINT NOT NULL, last_seen_ns BIGINT NOT NULL, extra TEXT NOT NULL, sketch {blob} NOT NULL,"
        " PRIMARY KEY (level, start_ns, series)){without_rowid}",
        "CREATE TABLE history_reports (source TEXT NOT NULL, start_ns BIGINT NOT NULL, PRIMARY KEY (source, start_ns))",
    ],
    # Per row, the bucket at or below which its p99 lies in any merge (codec.quantile_bound_key);
    # NULL in rows written before: no bound known.
    2: ["ALTER TABLE history_rows ADD COLUMN p99_key BIGINT"],
}


class HistoryDBError(Exception):
    """The history database cannot be opened, migrated or written."""


class Database:
    """One connection of one dialect; statements use ``?`` placeholders."""

    dialect = ""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def begin(self) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError

    def size_bytes(self) -> int:
        """Bytes the history tables take (SQLite: pages in use, not free pages)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def migrate(self) -> int:
        """Apply the migrations this database lacks; returns the schema version."""
        self.begin()
        try:
            version = self._version()
            for number in sorted(MIGRATIONS):
                if number <= version:
                    continue
                for statement in MIGRATIONS[number]:
                    self.execute(self._dialect(statement))
                self._set_version(number)
                version = number
            self.commit()
        except BaseException:
            self.rollback()
            raise
        if version > SCHEMA_VERSION:
            raise HistoryDBError(f"history schema version {version} is newer than this code ({SCHEMA_VERSION})")
        return version

    def _version(self) -> int:
        if not self._has_table("history_meta"):
            return 0
        rows = self.query("SELECT value FROM history_meta WHERE name = ?", ("schema_version",))
        return int(rows[0][0]) if rows else 0

    def _set_version(self, number: int) -> None:
        self.execute("DELETE FROM history_meta WHERE name = ?", ("schema_version",))
        self.execute("INSERT INTO history_meta (name, value) VALUES (?, ?)", ("schema_version", number))

    def _has_table(self, name: str) -> bool:
        raise NotImplementedError

    def _dialect(self, statement: str) -> str:
        raise NotImplementedError


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise HistoryDBError(f"cannot open history database {path}: {exc}") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, params).fetchall())

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def size_bytes(self) -> int:
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def close(self) -> None:
        self.conn.close()

    def _has_table(self, name: str) -> bool:
        return bool(self.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def _dialect(self, statement: str) -> str:
        return statement.format(blob="BLOB", serial_pk="INTEGER PRIMARY KEY", without_rowid=" WITHOUT ROWID")


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise HistoryDBError("history.dsn needs psycopg 3: pip install 'psycopg[binary]'") from None
        self._errors: tuple[type[Exception], ...] = (psycopg.Error,)
        try:
            self.conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())  # libpq's message spans lines
            raise HistoryDBError(f"cannot connect to the history database: {reason}") from None
        self._in_transaction = False

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        if params:
            self.conn.execute(self._sql(sql), params)
        else:
            self.conn.execute(sql.encode())  # no placeholders to fill: '%' stays a '%'

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(self._sql(sql), rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            if params:
                cur.execute(self._sql(sql), params)
            else:
                cur.execute(sql.encode())
            return [tuple(row) for row in cur.fetchall()]

    def begin(self) -> None:
        self.conn.execute("BEGIN")
        self._in_transaction = True
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_WRITE_LOCK,))

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self._in_transaction = False

    def rollback(self) -> None:
        if self._in_transaction:
            self._in_transaction = False
            self.conn.execute("ROLLBACK")

    def size_bytes(self) -> int:
        rows = self.query(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND c.relname LIKE 'history%' AND n.nspname = current_schema()"
        )
        return int(rows[0][0])

    def close(self) -> None:
        self.conn.close()

    def _has_table(self, name: str) -> bool:
        return bool(self.query("SELECT to_regclass(?) IS NOT NULL", (name,))[0][0])

    def _dialect(self, statement: str) -> str:
        return statement.format(blob="BYTEA", serial_pk="BIGSERIAL PRIMARY KEY", without_rowid="")


def open_database(dsn: str, sqlite_path: Path) -> Database:
    """PostgreSQL when ``dsn`` is set, else the SQLite file; migrated to the current schema."""
    db: Database = PostgresDatabase(dsn) if dsn else SQLiteDatabase(sqlite_path)
    try:
        db.migrate()
    except HistoryDBError:
        db.close()
        raise
    except Exception as exc:
        db.close()
        raise HistoryDBError(f"cannot migrate the history database: {exc}") from None
    return db
