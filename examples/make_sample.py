"""Re-create examples/sample.pcap.gz: a short capture of real MariaDB traffic.

Starts a throw-away mariadbd, records on lo while sysbench (oltp_read_write, 2 threads,
1 s) and the test suite's varied workload run, rewrites the server port to 3306 (so the
default ``--port`` applies), and gzips the result. Run from the repository root, as root:

    python3 examples/make_sample.py
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scapy.layers.inet import IP, TCP
from scapy.utils import PcapReader, PcapWriter

from tests.support import workload
from tests.support.mariadb import MariaDB
from tests.support.recorder import LoopbackRecorder
from tests.support.sysbench import sysbench_argv

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample.pcap.gz")


def main() -> None:
    server = MariaDB()
    server.start()
    fd, raw = tempfile.mkstemp(suffix=".pcap")
    os.close(fd)
    try:
        server.query("CREATE DATABASE sbtest")
        sysbench = sysbench_argv(server.port, tables=2, table_size=2000, extra=("--range-size=10",))
        subprocess.run([*sysbench, "prepare"], check=True, capture_output=True)
        workload.prepare_schema(server)
        with LoopbackRecorder(server.port, raw):
            subprocess.run(
                [*sysbench, "--threads=2", "--time=1", "--db-ps-mode=disable", "run"], check=True, capture_output=True
            )
            workload.text_workload(server, rounds=10)
            workload.prepared_workload(server, rounds=10)
    finally:
        server.destroy()
    with PcapReader(raw) as reader, gzip.open(OUT, "wb") as gz, PcapWriter(gz, linktype=1, sync=True) as writer:
        for pkt in reader:
            if TCP in pkt:
                tcp = pkt[TCP]
                if tcp.sport == server.port:
                    tcp.sport = 3306
                if tcp.dport == server.port:
                    tcp.dport = 3306
                del tcp.chksum
                del pkt[IP].chksum
                pkt = pkt.__class__(bytes(pkt))
            writer.write(pkt)
    os.unlink(raw)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
