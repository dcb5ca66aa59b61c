"""The election module leaves the process's socket functions as they were."""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys


def test_importing_the_election_keeps_inet_ntop_working() -> None:
    # In a fresh interpreter: pysyncobj patches socket.inet_ntop at import (once per process).
    code = (
        "import socket, cluster.election\n"
        "assert socket.inet_ntop(socket.AF_INET, bytes([10, 0, 0, 1])) == '10.0.0.1'\n"
        "assert socket.inet_ntop(socket.AF_INET6, bytes(15) + b'\\x01') == '::1'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    importlib.import_module("cluster.election")
    assert socket.inet_ntop(socket.AF_INET, bytes([127, 0, 0, 1])) == "127.0.0.1"
