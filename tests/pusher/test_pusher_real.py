"""The pusher with real receivers (examples/ingest_receiver.py): round-robin, failover when
one is killed mid-stream, every report delivered once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.mariadb import free_port
from tests.support.nodes import ROOT, Node

pytestmark = [pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))


class Receiver:
    def __init__(self, directory: Path, name: str) -> None:
        self.port = free_port()
        self.log = directory / f"{name}.jsonl"
        self.start()

    def start(self) -> None:
        """Start (again, after a kill: same port, same log)."""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "ingest_receiver.py"),
                "--port",
                str(self.port),
                "--log",
                str(self.log),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        assert b"receiving" in self.proc.stdout.readline()

    def received(self) -> list[tuple[str, int]]:
        if not self.log.exists():
            return []
        return [(e["node"], e["seq"]) for e in map(json.loads, self.log.read_text().splitlines())]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


def test_every_report_arrives_once_when_a_receiver_dies(tmp_path: Path) -> None:
    r1, r2 = Receiver(tmp_path, "r1"), Receiver(tmp_path, "r2")
    node = Node(
        tmp_path,
        {
            "interval": 1,
            "probe": {"device": "lo", "port": 3306, "workers": 1},
            "pusher": {"servers": [f"127.0.0.1:{r1.port}", f"127.0.0.1:{r2.port}"], "preconnect": True},
        },
        "pushing-slave",
    ).start()
    try:
        deadline = time.monotonic() + 30
        while (len(r1.received()) < 3 or len(r2.received()) < 3) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(r1.received()) >= 3 and len(r2.received()) >= 3  # round-robin over both
        r1.stop(signal.SIGKILL)
        killed_seq = node.get("/status")["seq"]
        time.sleep(6)
        final = node.get("/status")["seq"]
        deadline = time.monotonic() + 20
        while node.get("/status")["pusher"]["queued"] and time.monotonic() < deadline:
            time.sleep(0.2)
        status = node.get("/status")["pusher"]
    finally:
        node.stop()
        r2.stop()
    assert status["overflowed"] == 0 and status["queued"] == 0
    first, second = r1.received(), r2.received()
    assert len(second) == len(set(second))  # the survivor stored each report once
    seqs = {seq for _, seq in first} | {seq for _, seq in second}
    assert set(range(1, final + 1)) <= seqs  # nothing lost
    assert all((("pushing-slave", seq) in second) for seq in range(killed_seq + 1, final + 1))
    assert all(
        ((n, s) in second) for n, s in [("pushing-slave", s) for s in range(1, final + 1)] if (n, s) not in first
    )
