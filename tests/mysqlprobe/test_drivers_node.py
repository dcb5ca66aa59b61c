"""Node ``mysql2`` and ``mariadb`` (npm, installed by ``npm ci`` in tests/drivers/node)
against a throw-away MariaDB: the replayed capture must equal the server's own accounting
per template and command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import drivers
from tests.support.mariadb import MariaDB

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
NODE = drivers.DRIVERS / "node"


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_mysql2_equals_the_server(driver_server: MariaDB, tmp_path: Path, compress: bool) -> None:
    # mysql2 writes the header of a >= 16 MiB packet in a segment of its own
    argv = ["node", str(NODE / "mysql2_workload.js")]
    env = {"DRIVER_COMPRESS": "1" if compress else "0"}
    run = drivers.run_driver(driver_server, f"node-mysql2{'-compressed' if compress else ''}", argv, tmp_path, env=env)
    drivers.assert_exact(run)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_mariadb_connector_equals_the_server(driver_server: MariaDB, tmp_path: Path, compress: bool) -> None:
    # executes by statement id -1 behind their prepare, batch() as COM_STMT_BULK_EXECUTE
    argv = ["node", str(NODE / "mariadb_workload.js")]
    env = {"DRIVER_COMPRESS": "1" if compress else "0"}
    run = drivers.run_driver(driver_server, f"node-mariadb{'-compressed' if compress else ''}", argv, tmp_path, env=env)
    drivers.assert_exact(run)
    assert sum(t.commands["Bulk_execute"] for t in run.server.values()) == 2
    assert run.server[drivers.admin_key("Long Data")].commands["Long Data"] >= 2


if os.geteuid() != 0:  # pragma: no cover - capture needs root
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))
