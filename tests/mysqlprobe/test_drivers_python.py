"""MariaDB Connector/Python (``mariadb`` from PyPI, built on libmariadb) against a
throw-away MariaDB: the replayed capture must equal the server's own accounting per
template and command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support import drivers
from tests.support.mariadb import MariaDB

pytestmark = [pytest.mark.mariadb, pytest.mark.live]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_connector_python_equals_the_server(driver_server: MariaDB, tmp_path: Path, compress: bool) -> None:
    # prepared cursors send execute by statement id -1; executemany is COM_STMT_BULK_EXECUTE
    workload = str(drivers.DRIVERS / "python" / "mariadb_workload.py")
    env = {"DRIVER_COMPRESS": "1" if compress else "0"}
    name = f"py-mariadb{'-compressed' if compress else ''}"
    run = drivers.run_driver(driver_server, name, [sys.executable, workload], tmp_path, env=env)
    drivers.assert_exact(run)
    assert sum(t.commands["Bulk_execute"] for t in run.server.values()) == 2


if os.geteuid() != 0:  # pragma: no cover - capture needs root
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))
