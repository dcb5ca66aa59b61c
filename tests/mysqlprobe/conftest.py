"""Fixtures shared by the real-driver tests (test_drivers_*.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import drivers
from tests.support.mariadb import MariaDB


@pytest.fixture(scope="module")
def driver_server() -> Iterator[MariaDB]:
    """A throw-away MariaDB set up for driver workloads (``drivers.driver_server``), one per
    test module, destroyed after it."""
    server = drivers.driver_server()
    try:
        yield server
    finally:
        server.destroy()
