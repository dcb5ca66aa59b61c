"""Benchmark: what a slave report costs the master.

1. In process: ``ReportMerger.add`` of slave reports carrying 20, 500 and 5,000 templates
   (decoding the snappy JSON included), then the interval's drain, per report.
2. Real processes: a static master and two slaves next to two MariaDB servers under
   sysbench oltp_read_write; the master's CPU (from /proc) divided by the slave reports it
   merged.
Run from the repository root as root: ``python3 bench/master_cost.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster.merge import ReportMerger  # noqa: E402
from message import decode, encode  # noqa: E402
from message.report import TemplateStats  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402
from tests.support.nodes import Collector, Node  # noqa: E402
from tests.support.sysbench import run_options, sysbench_argv  # noqa: E402

CLOCK = os.sysconf("SC_CLK_TCK")


def synthetic(templates: int, seq: int) -> bytes:
    entries = []
    for i in range(templates):
        stats = TemplateStats("10.0.0.1:3306", "shop", f"{i:016x}", f"SELECT c{i} FROM t WHERE id = ?")
        for latency in (100, 250, 900, 4000, 120):
            stats.count += 1
            stats.commands["Query"] = stats.count
            stats.latency_sum += latency
            stats.latency_max = max(stats.latency_max, latency)
            stats.latency_min = min(stats.latency_min or latency, latency)
            stats.sketch.add(latency)
        entries.append(stats.to_json(with_template=seq == 1))
    report = {
        "schema": 1,
        "kind": "interval",
        "node": "s1",
        "role": "slave",
        "seq": seq,
        "interval": {"start_ns": 0, "end_ns": 1},
        "totals": {"queries": 5 * templates},
        "capture": {},
        "templates": entries,
        "slow": [],
    }
    return encode(report)


def in_process() -> None:
    for templates in (20, 500, 5000):
        messages = [synthetic(templates, seq) for seq in range(1, 21)]
        merger = ReportMerger()
        start = time.process_time()
        for message in messages:
            merger.add(decode(message))
        merger.drain(node="m", role="master", seq=1, epoch=1, start_ns=0, end_ns=1, expected=["s1"])
        per = (time.process_time() - start) / len(messages) * 1000
        print(f"in process: {templates:>5} templates a report: {per:8.2f} ms of master CPU per slave report")


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def real(seconds: int = 20) -> None:
    servers = [MariaDB(), MariaDB()]
    workdir = Path(tempfile.mkdtemp(prefix="mysqlprobe-master-"))
    nodes: list[Node] = []
    try:
        for server in servers:
            server.start()
            server.query("CREATE DATABASE sbtest")
            argv = sysbench_argv(server.port, tables=2, table_size=5000)
            subprocess.run([*argv, "prepare"], check=True, capture_output=True)
        slaves = [
            Node(workdir, {"interval": 1, "probe": {"device": "lo", "port": s.port, "workers": 1}}, f"s{i}").start()
            for i, s in enumerate(servers)
        ]
        master = Node(workdir, {"slave": False, "interval": 1}, "master").start()
        nodes = [*slaves, master]
        for node in slaves:
            master.request(f"/cluster/join?addr=127.0.0.1:{node.port}")
        collector = Collector(f"ws://127.0.0.1:{master.port}/collector")
        time.sleep(3)
        before_cpu = cpu(master.proc.pid)  # type: ignore[union-attr]
        before = master.get("/status")["merge"]["merged"]
        runs = [
            subprocess.Popen(
                [*sysbench_argv(s.port, tables=2, table_size=5000), *run_options(2, seconds)],
                stdout=subprocess.DEVNULL,
            )
            for s in servers
        ]
        for run in runs:
            run.wait()
        time.sleep(2)
        used = cpu(master.proc.pid) - before_cpu  # type: ignore[union-attr]
        status = master.get("/status")["merge"]
        merged = status["merged"] - before
        queries = sum(r["totals"]["queries"] for r in collector.reports)
        collector.close()
        print(
            f"real: master merged {merged} slave reports ({queries:,} queries) in {seconds} s using {used:.2f} s CPU: "
            f"{used / max(1, merged) * 1000:.2f} ms per slave report; intake latency p50 "
            f"{status['intake_latency_ms_p50']:.1f} ms"
        )
    finally:
        for node in nodes:
            node.stop()
        for server in servers:
            server.destroy()


if __name__ == "__main__":
    in_process()
    real()
