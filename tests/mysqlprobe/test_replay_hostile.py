"""`mysqlprobe replay` on hostile files and pipes, as a real subprocess: link types the
probe does not read, a damaged record after a timestamp past 2^31, and a reader that goes
away (`| head`). Each is one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.dot11 import Dot11, RadioTap
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.layers.ppp import PPP
from scapy.packet import Raw
from scapy.utils import PcapWriter, wrpcap

from tests.support.nodes import ROOT

QUERY = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=3306) / Raw(b"\x09\x00\x00\x00\x03SELECT 1")


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mysqlprobe.cli", "replay", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def usb_capture(path: Path) -> None:
    writer = PcapWriter(str(path), linktype=189)  # LINKTYPE_USB_LINUX
    writer.write(bytes(range(64)))
    writer.close()


@pytest.mark.parametrize(
    ("name", "write", "linktype"),
    [
        ("ppp", lambda p: wrpcap(str(p), [PPP() / QUERY]), 9),
        ("wifi", lambda p: wrpcap(str(p), [RadioTap() / Dot11() / QUERY]), 127),
        ("usb", usb_capture, 189),
    ],
)
def test_unsupported_link_types_are_one_line_and_exit_2(tmp_path: Path, name: str, write: Any, linktype: int) -> None:
    path = tmp_path / f"{name}.pcap"
    write(path)
    for workers in ("1", "2"):
        result = replay(str(path), "--workers", workers)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and f"link type {linktype} is not supported" in result.stderr
        assert result.stdout == ""


def test_damaged_record_after_a_timestamp_past_2_31(tmp_path: Path) -> None:
    frame = bytes(Ether() / QUERY)
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    record = struct.pack("<IIII", 2**31 + 5, 10, len(frame), len(frame)) + frame
    damaged = struct.pack("<IIII", 2**31 + 6, 10, 10**8, 10**8) + b"\x00" * 20
    path = tmp_path / "y2038.pcap"
    path.write_bytes(header + record + record + damaged)
    result = replay(str(path), "--format", "json", "--workers", "1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid packet capture length" in result.stderr, result.stderr
    document = json.loads(result.stdout)  # the report of what was read
    assert document["totals"]["packets"] == 2
    assert document["interval"]["start_ns"] == (2**31 + 5) * 10**9 + 10_000


def test_a_reader_that_goes_away_is_no_traceback() -> None:
    for output in ("json", "table"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "mysqlprobe.cli", "replay", "examples/sample.pcap.gz", "--format", output],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # `| head -0`: gone before the first byte is written
        stderr = proc.stderr.read().decode()
        assert proc.wait(120) == 141, stderr
        assert stderr == "", stderr
