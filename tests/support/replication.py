"""A primary and a replica: two throw-away MariaDB servers in real (GTID) replication."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.mariadb import MariaDB


def replica_status(replica: MariaDB) -> dict[str, object]:
    conn = replica.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW SLAVE STATUS")
            row = cur.fetchone()
            columns = [d[0] for d in cur.description] if cur.description else []
    finally:
        conn.close()
    return dict(zip(columns, row, strict=False)) if row else {}


@contextmanager
def replicated_pair() -> Iterator[tuple[MariaDB, MariaDB]]:
    primary = MariaDB(extra_args=["--log-bin=mysql-bin", "--server-id=1", "--binlog-format=ROW"])
    replica = MariaDB(extra_args=["--server-id=2", "--relay-log=relay-bin", "--log-slave-updates=OFF"])
    try:
        primary.start()
        replica.start()
        replica.query(
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, MASTER_USER='root',"
            " MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1"
        )
        replica.query("START SLAVE")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = replica_status(replica)
            if status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes":
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"replication did not start: {replica_status(replica)}")
        yield primary, replica
    finally:
        replica.destroy()
        primary.destroy()
