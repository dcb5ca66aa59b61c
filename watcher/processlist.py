"""Which database and user each client connection uses, asked of MySQL itself.

Owns reading the server's process list (``SHOW PROCESSLIST``, columns chosen by name, so
MariaDB and MySQL 5.7/8.0 layouts all work) into a map ``"ip:port" -> Session``. The probe
uses it for connections whose handshake it never saw (open before capture started). The
parsing is pure (``sessions_from_rows``); ``ProcesslistWatcher`` is the thin pymysql part:
one connection, reused, reopened after a failure, and a failed refresh keeps the last good
map (its error is reported, the map is not emptied).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymysql

from watcher.connection import MySQLConnection


@dataclass(frozen=True)
class Session:
    user: str
    db: str
    conn_id: int | None
    prepared: dict[int, str] = field(default_factory=dict)  # statement id -> SQL text


def client_endpoint(host: str) -> str | None:
    """The process list's ``Host`` as the probe writes endpoints (``1.2.3.4:5``,
    ``[::1]:5``); ``None`` for socket connections and hosts without a port."""
    if not host or host in ("localhost",) or ":" not in host:
        return None
    address, _, port = host.rpartition(":")
    if not port.isdigit():
        return None
    address = address.strip("[]")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None  # a host name: name resolution is on, the address is not known
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def sessions_from_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Session]:
    """Map client endpoints to sessions from process list rows, columns found by name."""
    index = {name.lower(): i for i, name in enumerate(columns)}
    try:
        host_i, user_i = index["host"], index["user"]
    except KeyError:
        raise ValueError(f"process list without Host/User columns: {list(columns)}") from None
    db_i = index.get("db")
    id_i = index.get("id")
    sessions: dict[str, Session] = {}
    for row in rows:
        endpoint = client_endpoint(_text(row[host_i]))
        if endpoint is None:
            continue
        db = _text(row[db_i]) if db_i is not None else ""
        conn_id = int(row[id_i]) if id_i is not None and row[id_i] is not None else None
        sessions[endpoint] = Session(_text(row[user_i]), db, conn_id)
    return sessions


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


class ProcesslistWatcher:
    """Refreshes the session map every ``refresh_s`` seconds in a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        refresh_s: float = 5.0,
        on_refresh: Callable[[dict[str, Session]], None] | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.refresh_s = refresh_s
        self.on_refresh = on_refresh
        self.connect_timeout = connect_timeout
        self.sessions: dict[str, Session] = {}
        self.refreshes = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_refresh: float | None = None
        self._db = MySQLConnection(host, port, user, password, connect_timeout)
        self._prepared_supported = True  # performance_schema.prepared_statements_instances
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """One refresh; on failure the last good map stays and the error is kept."""
        try:
            columns, rows = self._db.query_rows("SHOW PROCESSLIST")
            sessions = self._with_prepared(sessions_from_rows(columns, rows))
        except (pymysql.MySQLError, OSError, ValueError) as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._db.close()
            return False
        self.sessions = sessions
        self.refreshes += 1
        self.last_error = None
        self.last_refresh = time.time()
        if self.on_refresh is not None:
            self.on_refresh(sessions)
        return True

    def _with_prepared(self, sessions: dict[str, Session]) -> dict[str, Session]:
        """Statements each connection has prepared, where the server keeps them
        (MariaDB and MySQL with performance_schema on); the statement ids are the ones of
        the wire protocol. Without the table, the sessions stay as they are."""
        if not self._prepared_supported:
            return sessions
        try:
            _, rows = self._db.query_rows(
                "SELECT t.PROCESSLIST_ID, p.STATEMENT_ID, p.SQL_TEXT"
                " FROM performance_schema.prepared_statements_instances p"
                " JOIN performance_schema.threads t ON t.THREAD_ID = p.OWNER_THREAD_ID"
                " WHERE p.OWNER_OBJECT_TYPE IS NULL"
            )
        except pymysql.MySQLError:
            self._prepared_supported = False
            return sessions
        by_conn: dict[int, dict[int, str]] = {}
        for conn_id, stmt_id, sql in rows:
            if conn_id is not None and stmt_id is not None and sql is not None:
                by_conn.setdefault(int(conn_id), {})[int(stmt_id)] = _text(sql)
        if not by_conn:
            return sessions
        return {
            endpoint: Session(s.user, s.db, s.conn_id, by_conn.get(s.conn_id or -1, {}))
            for endpoint, s in sessions.items()
        }

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="processlist", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.refresh_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.connect_timeout + 1)
        self._db.close()

    def status(self) -> dict[str, Any]:
        return {
            "server": f"{self.host}:{self.port}",
            "sessions": len(self.sessions),
            "refreshes": self.refreshes,
            "failures": self.failures,
            "last_refresh": self.last_refresh,
            "last_error": self.last_error,
        }
