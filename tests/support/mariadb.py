"""Throw-away MariaDB servers for tests: a fresh datadir, a free port, stopped afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pymysql

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MariaDB:
    """A mariadbd process with its own datadir, listening on 127.0.0.1:``port``."""

    def __init__(self, *, extra_args: Sequence[str] = (), port: int | None = None, bind: str = "127.0.0.1") -> None:
        self.bind = bind
        self.dir = tempfile.mkdtemp(prefix="mysqlprobe-mariadb-")
        self.datadir = os.path.join(self.dir, "data")
        self.port = port or free_port()
        self.socket = os.path.join(self.dir, "mysqld.sock")
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = os.path.join(self.dir, "error.log")
        # Temporary files of its own: servers installed at the same time by other test runs
        # once failed on each other's files in the shared /tmp.
        self.tmpdir = os.path.join(self.dir, "tmp")
        os.makedirs(self.tmpdir, exist_ok=True)

    def install(self) -> None:
        result = subprocess.run(
            [
                INSTALL_DB,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
                f"--tmpdir={self.tmpdir}",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {result.stderr[-2000:]}")

    def start(self, timeout: float = 60.0) -> None:
        if not os.path.isdir(os.path.join(self.datadir, "mysql")):
            self.install()
        args = [
            MARIADBD,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            f"--bind-address={self.bind}",
            f"--socket={self.socket}",
            f"--pid-file={os.path.join(self.dir, 'mysqld.pid')}",
            f"--tmpdir={self.tmpdir}",
            f"--log-error={self.log}",
            "--user=root",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=48M",
            "--skip-name-resolve",
            "--max-connections=500",
            "--performance-schema=ON",
            "--performance-schema-digests-size=20000",
            "--performance-schema-events-statements-history-long-size=200000",
            "--performance-schema-consumer-events-statements-current=ON",
            "--performance-schema-consumer-events-statements-history-long=ON",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {self.tail_log()}")
            try:
                self.connect().close()
                return
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"mariadbd did not start: {self.tail_log()}")

    def tail_log(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as fh:
                return fh.read()[-3000:]
        except OSError:
            return "(no log)"

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection:  # type: ignore[type-arg]
        params: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "user": "root", "password": ""}
        params.update(kwargs)
        return pymysql.connect(**params)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = self.connect(autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args or None)
                return list(cur.fetchall())
        finally:
            conn.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def running_mariadb(extra_args: Sequence[str] = ()) -> Iterator[MariaDB]:
    server = MariaDB(extra_args=extra_args)
    try:
        server.start()
        yield server
    finally:
        server.destroy()
