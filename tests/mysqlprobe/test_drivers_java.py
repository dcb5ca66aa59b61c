"""MariaDB Connector/J (Debian libmariadb-java) with ``useServerPrepStmts`` against a
throw-away MariaDB: the workload is compiled with javac at test time; the replayed capture
must equal the server's own accounting per template and command."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import drivers
from tests.support.mariadb import MariaDB

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
CONNECTOR_J = "/usr/share/java/mariadb-java-client.jar"


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_connector_j_server_prepared_and_batches_equal_the_server(
    driver_server: MariaDB, tmp_path: Path, compress: bool
) -> None:
    classes = tmp_path / "classes"
    source = drivers.DRIVERS / "java" / "Workload.java"
    compiled = subprocess.run(["javac", "-d", str(classes), str(source)], capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stderr
    assert os.path.exists(CONNECTOR_J), "libmariadb-java is not installed"
    argv = ["java", "-cp", f"{CONNECTOR_J}:{classes}", "Workload"]
    env = {"DRIVER_COMPRESS": "1" if compress else "0"}
    name = f"java-connector-j{'-compressed' if compress else ''}"
    run = drivers.run_driver(driver_server, name, argv, tmp_path, env=env)
    drivers.assert_exact(run)
    # the pipelined batch: 300 executes written before any response is read
    assert sum(t.commands["Execute"] for t in run.server.values()) >= 300


if os.geteuid() != 0:  # pragma: no cover - capture needs root
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))
