"""Perl DBD::MariaDB with server-side prepare against a throw-away MariaDB: the replayed
capture must equal the server's own accounting per template and command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import drivers
from tests.support.mariadb import MariaDB

pytestmark = [pytest.mark.mariadb, pytest.mark.live]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_dbd_mariadb_server_prepare_equals_the_server(driver_server: MariaDB, tmp_path: Path, compress: bool) -> None:
    workload = str(drivers.DRIVERS / "perl" / "dbd_mariadb_workload.pl")
    env = {"DRIVER_COMPRESS": "1" if compress else "0"}
    name = f"perl-dbd-mariadb{'-compressed' if compress else ''}"
    run = drivers.run_driver(driver_server, name, ["perl", workload], tmp_path, env=env)
    drivers.assert_exact(run)
    assert sum(t.commands["Execute"] for t in run.server.values()) > 100


if os.geteuid() != 0:  # pragma: no cover - capture needs root
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))
