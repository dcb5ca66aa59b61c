"""The process list watcher: parsing layouts, and a real server over IPv4 and IPv6."""

from __future__ import annotations

import pymysql
import pytest

from tests.support.mariadb import MariaDB
from watcher.processlist import ProcesslistWatcher, Session, client_endpoint, sessions_from_rows

MARIADB = ["Id", "User", "Host", "db", "Command", "Time", "State", "Info", "Progress"]
MYSQL57 = ["Id", "User", "Host", "db", "Command", "Time", "State", "Info"]
MYSQL80_PS = ["ID", "USER", "HOST", "DB", "COMMAND", "TIME", "STATE", "INFO", "EXECUTION_ENGINE"]


@pytest.mark.parametrize(
    ("host", "endpoint"),
    [
        ("127.0.0.1:51000", "127.0.0.1:51000"),
        ("::1:51000", "[::1]:51000"),
        ("[fd00::7]:443", "[fd00::7]:443"),
        ("::ffff:10.0.0.7:51000", "10.0.0.7:51000"),
        ("localhost", None),
        ("app.example.com:51000", None),
        ("", None),
        ("10.0.0.7", None),
    ],
)
def test_client_endpoint(host: str, endpoint: str | None) -> None:
    assert client_endpoint(host) == endpoint


@pytest.mark.parametrize("columns", [MARIADB, MYSQL57, MYSQL80_PS])
def test_layouts_by_column_name(columns: list[str]) -> None:
    def row(conn_id: int, user: str, host: str, db: str | None) -> list[object]:
        values = {"id": conn_id, "user": user, "host": host, "db": db}
        return [values.get(name.lower(), "x") for name in columns]

    rows = [row(5, "app", "10.0.0.7:51000", "shop"), row(6, "root", "localhost", None), row(7, "bi", "::1:4000", None)]
    assert sessions_from_rows(columns, rows) == {
        "10.0.0.7:51000": Session("app", "shop", 5),
        "[::1]:4000": Session("bi", "", 7),
    }


def test_layout_without_host_is_an_error() -> None:
    with pytest.raises(ValueError, match="Host"):
        sessions_from_rows(["Id", "db"], [])


@pytest.mark.mariadb
def test_real_server_ipv4_and_ipv6_and_failures() -> None:
    server = MariaDB(bind="127.0.0.1,::1")
    server.start()
    try:
        server.query("CREATE DATABASE inv")
        v4 = pymysql.connect(host="127.0.0.1", port=server.port, user="root", database="inv")
        v6 = pymysql.connect(host="::1", port=server.port, user="root", database="mysql")
        watcher = ProcesslistWatcher("127.0.0.1", server.port, "root", "")
        assert watcher.refresh()
        v4_end = f"127.0.0.1:{v4._sock.getsockname()[1]}"
        v6_end = f"[::1]:{v6._sock.getsockname()[1]}"
        assert watcher.sessions[v4_end].db == "inv" and watcher.sessions[v4_end].user == "root"
        assert watcher.sessions[v6_end].db == "mysql"
        good = dict(watcher.sessions)
        server.stop()
        assert not watcher.refresh()  # the server is down: the last good map stays
        assert watcher.sessions == good and watcher.failures == 1 and watcher.last_error
        server.start()
        assert watcher.refresh()  # reconnects by itself
        watcher.stop()
    finally:
        server.destroy()
