"""Replication lag by heartbeat: a writer on the primary, readers on the replicas.

Owns the heartbeat table and the lag it measures. The writer upserts one row
``(id, writer, epoch, ts_ns, binlog file/pos, GTID position)`` every interval (down to
100 ms); replication carries it to the replicas, where a reader compares the row's
``ts_ns`` with its own clock: the lag, with sub-second resolution (clocks must be in sync,
as for any heartbeat).

- The table is created only when it is missing, so no needless DDL reaches the binlog; the
  statement is logged so that replicas get the table the updates need. The writer refuses
  to run on a read-only server: DDL or writes there would be errant transactions.
- The reader reports errors apart from the last good lag: ``lag_ms`` is ``None`` before
  the first good read and whenever the latest read failed (never a fake 0), ``last_good``
  keeps the previous value with its age (``staleness_s``). It also reads the replica's own
  status: with the IO thread down (the primary is gone), the heartbeat can only say the
  lag is at least this much, so it is marked ``stale`` with the replication error.

Clock and connection are injected; ``beat(now_ns)`` and ``read(now_ns)`` are single steps.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql

from watcher.connection import MySQLConnection

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,63}")
MIN_INTERVAL_S = 0.1


def _checked(name: str, what: str) -> str:
    if not _IDENT.fullmatch(name):
        raise ValueError(f"heartbeat {what}: {name!r} is not a plain identifier")
    return name


class HeartbeatWriter:
    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        node: str,
        epoch: Callable[[], int] = lambda: 0,
        row_id: int = 1,
        database: str = "mysqlprobe",
        table: str = "heartbeat",
        timeout: float = 5.0,
    ) -> None:
        self.db = MySQLConnection(host, port, user, password, timeout)
        self.node = node
        self.epoch = epoch
        self.row_id = row_id
        self.database = _checked(database, "database")
        self.table = _checked(table, "table")
        self.server = f"{host}:{port}"
        self.beats = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_beat_ns: int | None = None
        self.position: dict[str, Any] = {}
        self._table_ready = False

    def ensure_table(self) -> None:
        rows = self.db.query(
            "SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (self.database, self.table),
        )
        if rows[0]["n"]:
            self._table_ready = True
            return
        flags = self.db.query("SELECT @@read_only AS ro")
        if flags[0]["ro"]:
            raise RuntimeError(f"{self.server} is read-only: run the heartbeat writer next to the primary")
        self.db.query(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        self.db.query(
            f"CREATE TABLE IF NOT EXISTS `{self.database}`.`{self.table}` ("
            " id INT UNSIGNED NOT NULL PRIMARY KEY,"
            " writer VARCHAR(255) NOT NULL,"
            " epoch BIGINT NOT NULL,"
            " ts_ns BIGINT NOT NULL,"
            " binlog_file VARCHAR(255) NULL,"
            " binlog_pos BIGINT NULL,"
            " gtid TEXT NULL"
            ") ENGINE=InnoDB"
        )
        self._table_ready = True

    def _binlog_position(self) -> dict[str, Any]:
        position: dict[str, Any] = {"file": None, "pos": None, "gtid": None}
        with contextlib.suppress(pymysql.MySQLError):
            rows = self.db.query("SHOW MASTER STATUS")
            if rows:
                position["file"] = rows[0].get("File")
                position["pos"] = rows[0].get("Position")
        for variable in ("@@gtid_binlog_pos", "@@gtid_executed"):  # MariaDB, then MySQL
            with contextlib.suppress(pymysql.MySQLError):
                gtid = self.db.query(f"SELECT {variable} AS g")[0]["g"]
                position["gtid"] = gtid or None
                break
        return position

    def beat(self, now_ns: int) -> bool:
        try:
            if not self._table_ready:
                self.ensure_table()
            self.position = self._binlog_position()
            self.db.query(
                f"INSERT INTO `{self.database}`.`{self.table}`"
                " (id, writer, epoch, ts_ns, binlog_file, binlog_pos, gtid) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON DUPLICATE KEY UPDATE writer = VALUES(writer),"
                " epoch = VALUES(epoch), ts_ns = VALUES(ts_ns), binlog_file = VALUES(binlog_file),"
                " binlog_pos = VALUES(binlog_pos), gtid = VALUES(gtid)",
                (
                    self.row_id,
                    self.node,
                    self.epoch(),
                    now_ns,
                    self.position["file"],
                    self.position["pos"],
                    self.position["gtid"],
                ),
            )
        except (pymysql.MySQLError, OSError, RuntimeError) as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._table_ready = False if isinstance(exc, pymysql.err.ProgrammingError) else self._table_ready
            return False
        self.beats += 1
        self.last_error = None
        self.last_beat_ns = now_ns
        return True

    def state(self, now_ns: int) -> dict[str, Any]:
        return {
            "role": "writer",
            "server": self.server,
            "writer": self.node,
            "beats": self.beats,
            "failures": self.failures,
            "error": self.last_error,
            "last_beat_ns": self.last_beat_ns,
            "since_last_beat_s": None if self.last_beat_ns is None else round((now_ns - self.last_beat_ns) / 1e9, 3),
            "binlog": self.position,
        }

    def close(self) -> None:
        self.db.close()


class HeartbeatReader:
    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        row_id: int = 1,
        database: str = "mysqlprobe",
        table: str = "heartbeat",
        interval_s: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self.db = MySQLConnection(host, port, user, password, timeout)
        self.row_id = row_id
        self.database = _checked(database, "database")
        self.table = _checked(table, "table")
        self.interval_s = interval_s
        self.server = f"{host}:{port}"
        self.reads = 0
        self.failures = 0
        self.lag_ms: float | None = None
        self.last_good: dict[str, Any] | None = None
        self.last_good_ns: int | None = None
        self.error: str | None = None
        self.replication: dict[str, Any] | None = None

    def read(self, now_ns: int) -> bool:
        try:
            rows = self.db.query(
                f"SELECT writer, epoch, ts_ns, binlog_file, binlog_pos, gtid FROM `{self.database}`.`{self.table}`"
                " WHERE id = %s",
                (self.row_id,),
            )
        except (pymysql.MySQLError, OSError) as exc:
            self.failures += 1
            self.lag_ms = None
            self.error = f"{type(exc).__name__}: {exc}"
            self.replication = None
            return False
        self.replication = self._replication()
        if not rows:
            self.failures += 1
            self.lag_ms = None
            self.error = "no heartbeat row yet (is a writer running on the primary?)"
            return False
        row = rows[0]
        self.reads += 1
        self.lag_ms = max(0.0, (now_ns - int(row["ts_ns"])) / 1e6)
        self.last_good = {
            "lag_ms": self.lag_ms,
            "writer": row["writer"],
            "writer_epoch": int(row["epoch"]),
            "row_ts_ns": int(row["ts_ns"]),
            "binlog": {"file": row["binlog_file"], "pos": row["binlog_pos"], "gtid": row["gtid"]},
        }
        self.last_good_ns = now_ns
        io_error = (self.replication or {}).get("io_error")
        self.error = f"replication: {io_error}" if io_error else None
        return True

    def _replication(self) -> dict[str, Any] | None:
        try:
            rows = self.db.query("SHOW SLAVE STATUS")
        except (pymysql.MySQLError, OSError):
            return None  # no REPLICATION CLIENT privilege, or not a replica: the heartbeat alone
        if not rows:
            return None
        row = rows[0]
        return {
            "io_running": row.get("Slave_IO_Running"),
            "sql_running": row.get("Slave_SQL_Running"),
            "seconds_behind_master": row.get("Seconds_Behind_Master"),
            "io_error": row.get("Last_IO_Error") or None,
            "sql_error": row.get("Last_SQL_Error") or None,
        }

    def state(self, now_ns: int) -> dict[str, Any]:
        staleness = None if self.last_good_ns is None else (now_ns - self.last_good_ns) / 1e9
        io_down = self.replication is not None and self.replication.get("io_running") not in ("Yes", None)
        stale = self.last_good_ns is None or staleness is None or staleness > 3 * self.interval_s or io_down
        return {
            "role": "reader",
            "server": self.server,
            "lag_ms": None if self.lag_ms is None else round(self.lag_ms, 3),
            "stale": stale,
            "staleness_s": None if staleness is None else round(staleness, 3),
            "error": self.error,
            "last_good": self.last_good,
            "replication": self.replication,
            "reads": self.reads,
            "failures": self.failures,
        }

    def close(self) -> None:
        self.db.close()


class HeartbeatLoop:
    """Runs a writer's ``beat`` or a reader's ``read`` every interval in a thread."""

    def __init__(self, worker: HeartbeatWriter | HeartbeatReader, interval_s: float) -> None:
        self.worker = worker
        self.interval_s = max(MIN_INTERVAL_S, interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            if isinstance(self.worker, HeartbeatWriter):
                self.worker.beat(time.time_ns())
            else:
                self.worker.read(time.time_ns())
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def state(self) -> dict[str, Any]:
        return self.worker.state(time.time_ns())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.worker.close()
