"""sysbench oltp_read_write against a throw-away server: one command line for every user."""

from __future__ import annotations


def sysbench_argv(port: int, *, tables: int = 4, table_size: int = 10000, extra: tuple[str, ...] = ()) -> list[str]:
    """The common part; append ``"prepare"`` or run options and ``"run"``."""
    return [
        "sysbench",
        "oltp_read_write",
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        f"--mysql-port={port}",
        "--mysql-user=root",
        "--mysql-db=sbtest",
        f"--tables={tables}",
        f"--table-size={table_size}",
        *extra,
    ]


def run_options(threads: int, seconds: int, *, prepared: bool = False) -> list[str]:
    """A text-protocol run (no server-side prepared statements), or with ``prepared`` one
    where every statement is a server-side prepared statement's execute."""
    mode = "auto" if prepared else "disable"
    return [f"--threads={threads}", f"--time={seconds}", f"--db-ps-mode={mode}", "run"]
