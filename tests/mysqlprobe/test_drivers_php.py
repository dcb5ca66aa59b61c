"""PHP mysqli and PDO (emulated prepares off) against a throw-away MariaDB: the replayed
capture must equal the server's own accounting per template and command."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import drivers
from tests.support.mariadb import MariaDB

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
PHP = ["php", "-d", "memory_limit=512M"]


@pytest.fixture(scope="module")
def server() -> Iterator[MariaDB]:
    server = drivers.driver_server()
    try:
        yield server
    finally:
        server.destroy()


def test_mysqli_equals_the_server(server: MariaDB, tmp_path: Path) -> None:
    run = drivers.run_driver(
        server, "php-mysqli", [*PHP, str(drivers.DRIVERS / "php" / "mysqli_workload.php")], tmp_path
    )
    drivers.assert_exact(run)
    assert run.server[drivers.admin_key("Long Data")].commands["Long Data"] == 4


def test_pdo_server_side_prepares_equal_the_server(server: MariaDB, tmp_path: Path) -> None:
    workload = str(drivers.DRIVERS / "php" / "pdo_workload.php")
    run = drivers.run_driver(server, "php-pdo", [*PHP, workload], tmp_path)
    drivers.assert_exact(run)
    assert sum(t.commands["Execute"] for t in run.server.values()) > 100


if os.geteuid() != 0:  # pragma: no cover - capture needs root
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))
