"""Throw-away PostgreSQL databases on the server at 127.0.0.1:5432 (trust auth).

``MYSQLPROBE_TEST_PG`` may name another server (a libpq DSN of a database the test user can
connect to and create databases from); the default is ``host=127.0.0.1 port=5432
user=postgres dbname=test``. No server is a test failure, not a skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ADMIN_DSN = os.environ.get("MYSQLPROBE_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A new empty database for the duration; yields its DSN, drops it afterwards."""
    name = f"mysqlprobe_history_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
        try:
            yield make_conninfo(**{**conninfo_to_dict(ADMIN_DSN), "dbname": name})
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
