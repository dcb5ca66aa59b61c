"""PHP mysqli and PDO (emulated prepares off), plain and compressed, against a throw-away
MariaDB: the replayed capture must equal the server's own accounting per template and
command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import drivers
from tests.support.mariadb import MariaDB

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
PHP = ["php", "-d", "memory_limit=512M"]


COMPRESSION = pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])


def run_php(driver_server: MariaDB, tmp_path: Path, driver: str, compress: bool) -> drivers.DriverRun:
    workload = str(drivers.DRIVERS / "php" / f"{driver}_workload.php")
    env = {"DRIVER_COMPRESS": "1" if compress else "0"}
    name = f"php-{driver}{'-compressed' if compress else ''}"
    return drivers.run_driver(driver_server, name, [*PHP, workload], tmp_path, env=env)


@COMPRESSION
def test_mysqli_equals_the_server(driver_server: MariaDB, tmp_path: Path, compress: bool) -> None:
    run = run_php(driver_server, tmp_path, "mysqli", compress)
    drivers.assert_exact(run)
    assert run.server[drivers.admin_key("Long Data")].commands["Long Data"] == 4


@COMPRESSION
def test_pdo_server_side_prepares_equal_the_server(driver_server: MariaDB, tmp_path: Path, compress: bool) -> None:
    run = run_php(driver_server, tmp_path, "pdo", compress)
    drivers.assert_exact(run)
    assert sum(t.commands["Execute"] for t in run.server.values()) > 100


if os.geteuid() != 0:  # pragma: no cover - capture needs root
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))
