"""The ``mariadb`` command-line client plain, with ``--compress`` and with TLS against a
throw-away MariaDB (TLS on, with a certificate made by the test): plain and compressed
sessions must equal the server's own accounting per template and command; a TLS session
is counted as encrypted and nothing of it is parsed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import drivers
from tests.support.mariadb import MariaDB

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
CLI = str(drivers.DRIVERS / "cli" / "mariadb_cli.sh")


@pytest.fixture(scope="module")
def server() -> Iterator[MariaDB]:
    server = drivers.driver_server(tls=True)
    try:
        yield server
    finally:
        server.destroy()


@pytest.mark.parametrize("mode", ["plain", "compress"])
def test_cli_equals_the_server(server: MariaDB, tmp_path: Path, mode: str) -> None:
    run = drivers.run_driver(server, f"cli-{mode}", ["bash", CLI, mode], tmp_path)
    drivers.assert_exact(run)  # plain: with two logins refused (1045), compared with Access_denied_errors
    assert run.server_logins["access_denied"] == (2 if mode == "plain" else 0)
    loads = [t for t in run.server.values() if t.template.startswith("LOAD DATA LOCAL INFILE")]
    assert [t.rows_affected for t in loads] == [40]


def test_cli_over_tls_is_counted_encrypted_not_parsed(server: MariaDB, tmp_path: Path) -> None:
    env = {"MYSQLPROBE_TLS_CA": os.path.join(server.dir, "server-cert.pem")}
    run = drivers.run_driver(server, "cli-tls", ["bash", CLI, "tls"], tmp_path, env=env)
    assert sum(t.commands.total() for t in run.server.values()) > 10  # the server did run it
    totals = run.report["totals"]
    assert totals["encrypted_conns"] == 1, totals
    assert totals["queries"] == 0 and not [t for t in run.report["templates"] if "Query" in t["commands"]]
    # nothing could be read: coverage says so
    assert totals["unread_exchanges"] > 0 and totals["coverage"] < 1.0, totals
    run.assert_workers_agree()


if os.geteuid() != 0:  # pragma: no cover - capture needs root
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))
