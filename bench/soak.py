"""Soak: a gossip cluster under sysbench for minutes, with its master killed twice and a
slave restarted without its state. Not part of the suite.

One master, one standby and two slaves (each next to its own MariaDB) in gossip mode; both
servers run ``sysbench oltp_read_write`` at full speed for ``--seconds`` (600 by default).
At 25% and 50% of the run the leading master is killed (-9) and restarted 5 s later; at 70%
the second slave is killed, its state directory deleted, and restarted. At the end it
prints, per server and in total: statements executed (performance_schema, schema sbtest),
counted by the slaves (reports deduplicated by node, incarnation and seq, read from each
slave's /collector), published by the masters (their merged reports read from each master's
/collector, deduplicated by node and seq; a slave report one master merged just before
being killed can be merged again by the next one) and what each master's /report/totals
holds (it starts afresh when the master wins an election), the RSS of
every process (node plus its capture workers) over time, and every drop counter of /status.

Run from the repository root as root: ``python3 bench/soak.py [--seconds 600] [--threads 8]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.mariadb import MariaDB  # noqa: E402
from tests.support.nodes import Collector, Node, gossip_configs  # noqa: E402
from tests.support.sysbench import run_options, sysbench_argv  # noqa: E402

#: /status counters printed at the end, as (path in /status, label).
DROP_COUNTERS = [
    (("capture", "dropped_kernel"), "kernel drops"),
    (("capture", "dropped_interface"), "interface drops"),
    (("capture", "workers_missing"), "worker answers missing"),
    (("capture", "late_answers"), "late worker answers"),
    (("capture", "gaps"), "TCP gaps"),
    (("capture", "responses_lost"), "responses lost"),
    (("collector", "subscribers_dropped"), "subscribers dropped"),
    (("collector", "inbound_too_large"), "subscriber messages too large"),
    (("collector", "spool", "overflowed"), "spool overflowed"),
    (("merge", "duplicates"), "duplicates dropped (master)"),
    (("merge", "duplicates_published_by_predecessor"), "  of which published by the predecessor"),
    (("merge", "predecessor_seqs_forgotten"), "learned seqs forgotten (standby)"),
    (("merge", "rejected"), "reports rejected (master)"),
    (("connections", "shed"), "connections shed"),
    (("connections", "timed_out"), "connections timed out"),
]


def rss_mib(pid: int) -> float:
    """RSS of a process and its children (a slave's capture workers), MiB."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def dig(document: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


class Soak:
    def __init__(self, seconds: int, threads: int, workdir: Path) -> None:
        self.seconds = seconds
        self.threads = threads
        self.workdir = workdir
        self.servers = [MariaDB(), MariaDB()]
        self.nodes: dict[str, Node] = {}
        self.rss: list[tuple[float, dict[str, float]]] = []
        self.events: list[str] = []
        self.started = time.monotonic()
        self.final_status: dict[str, Any] = {}
        self.subscribers: dict[str, list[Collector]] = {}

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f} s] {text}"
        self.events.append(line)
        print(line, flush=True)

    def setup(self) -> None:
        for server in self.servers:
            server.start()
            server.query("CREATE DATABASE sbtest")
            subprocess.run(
                [*sysbench_argv(server.port, tables=4, table_size=10000), "prepare"], check=True, capture_output=True
            )
        names = ["m1", "m2", "s1", "s2"]
        for name, config in gossip_configs(names, ["m1", "m2", "s1"], interval=1).items():
            if name.startswith("s"):
                server_port = self.servers[int(name[1]) - 1].port
                config["probe"] = {"device": "lo", "port": server_port, "workers": 2}
                # As an operator runs it: the process list names the database of connections
                # opened before a slave (re)started, e.g. after losing its state directory.
                config["watcher"] = {"uname": "root", "port": server_port, "refreshs": 1}
            self.nodes[name] = Node(self.workdir, config, name)
        for node in self.nodes.values():
            node.start()
        self.wait_leader()

    def leader(self) -> str | None:
        for node in self.nodes.values():
            if node.proc is None or node.proc.poll() is not None:
                continue
            with contextlib.suppress(Exception):
                for entry in node.get("/cluster/listnodes", timeout=3):
                    if entry.get("leader"):
                        return str(entry["name"])
        return None

    def wait_leader(self, not_name: str | None = None, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = self.leader()
            if name is not None and name != not_name:
                return name
            time.sleep(0.2)
        raise RuntimeError("no leader")

    def sample_rss(self) -> None:
        sample = {
            name: rss_mib(node.proc.pid)
            for name, node in self.nodes.items()
            if node.proc is not None and node.proc.poll() is None
        }
        self.rss.append((time.monotonic() - self.started, sample))

    def executed(self) -> dict[str, int]:
        out = {}
        for server in self.servers:
            rows = server.query(
                "SELECT COALESCE(SUM(COUNT_STAR), 0) FROM performance_schema.events_statements_summary_by_digest"
                " WHERE SCHEMA_NAME = 'sbtest'"
            )
            out[f"127.0.0.1:{server.port}"] = int(rows[0][0])
        return out

    def run(self) -> None:
        # Statements of the set-up (sysbench prepare) reach reports of the intervals before
        # the accounting starts: let those go by before subscribing, or they count here.
        time.sleep(3)
        for server in self.servers:
            server.query("TRUNCATE performance_schema.events_statements_summary_by_digest")
        # Each slave's reports, read straight from it (a fresh subscriber after a restart).
        self.subscribers = {
            name: [Collector(f"ws://127.0.0.1:{self.nodes[name].port}/collector")] for name in ("s1", "s2", "m1", "m2")
        }
        runs = [
            subprocess.Popen(
                [*sysbench_argv(s.port, tables=4, table_size=10000), *run_options(self.threads, self.seconds)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for s in self.servers
        ]
        run_started = time.monotonic()
        self.log(f"sysbench started on both servers ({self.threads} threads each)")
        plan = [(0.25, self.kill_leader), (0.5, self.kill_leader), (0.7, self.wipe_slave)]
        next_sample = 0.0
        while any(r.poll() is None for r in runs):
            elapsed = time.monotonic() - run_started
            if plan and elapsed >= plan[0][0] * self.seconds:
                plan.pop(0)[1]()
            if elapsed >= next_sample:
                self.sample_rss()
                next_sample = elapsed + max(5.0, self.seconds / 20)
            time.sleep(0.5)
        self.log("sysbench done")
        time.sleep(6)  # the last intervals reach the slaves' subscribers and the master
        self.sample_rss()
        self.report()
        for subscribers in self.subscribers.values():
            for subscriber in subscribers:
                subscriber.close()

    def kill_leader(self) -> None:
        name = self.wait_leader()
        node = self.nodes[name]
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait()
        self.log(f"killed the leading master {name} (-9)")
        successor = self.wait_leader(not_name=name)
        self.log(f"{successor} leads")
        time.sleep(5)
        node.start()
        self.subscribers[name].append(Collector(f"ws://127.0.0.1:{node.port}/collector"))
        self.log(f"{name} restarted")

    def wipe_slave(self) -> None:
        node = self.nodes["s2"]
        node.stop(signal.SIGKILL)
        shutil.rmtree(self.workdir / "s2.state", ignore_errors=True)
        node.start()
        self.subscribers["s2"].append(Collector(f"ws://127.0.0.1:{node.port}/collector"))
        self.log("s2 killed, its state directory deleted, restarted")

    def report(self) -> None:
        executed = self.executed()
        by_node: dict[str, int] = {}
        for name, subscribers in self.subscribers.items():
            seen: set[tuple[Any, ...]] = set()
            for report in (r for subscriber in subscribers for r in subscriber.reports):
                ident = (report["node"], report.get("incarnation"), report["seq"], report["interval"]["end_ns"])
                if ident in seen:
                    continue
                seen.add(ident)
                by_node[name] = by_node.get(name, 0) + sum(
                    t["count"] for t in report["templates"] if t.get("db") == "sbtest"
                )
        # Exactly once, report by report: every slave report (node, incarnation, seq) the
        # slaves published, and the masters' published reports that merged it.
        slave_counts: dict[tuple[Any, ...], int] = {}
        publications: dict[tuple[Any, ...], list[tuple[str, int]]] = {}
        for name, subscribers in self.subscribers.items():
            seen_here: set[tuple[Any, ...]] = set()
            for report in (r for subscriber in subscribers for r in subscriber.reports):
                if name.startswith("s"):
                    ident = (report["node"], report.get("incarnation"), report["seq"])
                    slave_counts[ident] = sum(t["count"] for t in report["templates"] if t.get("db") == "sbtest")
                    continue
                mine = (report["node"], report.get("incarnation"), report["seq"])
                if mine in seen_here:
                    continue
                seen_here.add(mine)
                for slave in report.get("slaves", ()):
                    lives = {slave.get("incarnation"): slave.get("seqs", ()), **slave.get("earlier_seqs", {})}
                    for incarnation, seqs in lives.items():
                        for seq in seqs:
                            key = (slave["node"], incarnation, seq)
                            publications.setdefault(key, []).append((name, report["seq"]))
        twice = {k: v for k, v in publications.items() if len(v) > 1}
        never = [k for k in slave_counts if k not in publications]
        merged: dict[str, int] = {}
        per_master: dict[str, Any] = {}
        for name in ("m1", "m2"):
            with contextlib.suppress(Exception):
                totals = self.nodes[name].get("/report/totals")
                merged[name] = sum(t["count"] for t in totals["templates"] if t.get("db") == "sbtest")
                per_master[name] = {
                    "slaves": totals.get("slaves"),
                    "duplicates_dropped": totals.get("duplicates_dropped"),
                }
        seqs = {
            name: sorted({(r.get("incarnation"), r["seq"]) for c in subscribers for r in c.reports}, key=str)
            for name, subscribers in self.subscribers.items()
            if name.startswith("s")
        }
        for name, node in self.nodes.items():
            with contextlib.suppress(Exception):
                self.final_status[name] = node.get("/status")
        print("\n== statements (schema sbtest)")
        print(f"executed (performance_schema): {sum(executed.values()):>12,}  {executed}")
        slaves = {n: c for n, c in by_node.items() if n.startswith("s")}
        masters = {n: c for n, c in by_node.items() if n.startswith("m")}
        print(f"counted by the slaves:         {sum(slaves.values()):>12,}  {slaves}")
        print(f"published by the masters:      {sum(masters.values()):>12,}  {masters}")
        print(f"merged since last election:    {sum(merged.values()):>12,}  {merged} (/report/totals)")
        for name, detail in per_master.items():
            print(f"  {name}: {detail}")
        for name, pairs in seqs.items():
            print(f"  {name}: {len(pairs)} reports read from it, (incarnation, seq) {pairs[:2]} .. {pairs[-2:]}")
        doubled = sum(slave_counts.get(k, 0) * (len(v) - 1) for k, v in twice.items())
        print(f"slave reports published twice:   {len(twice):>10,}  ({doubled:,} statements)")
        for key, where in sorted(twice.items(), key=str)[:10]:
            print(f"  {key} in {where}")
        lost = sum(slave_counts[k] for k in never)
        print(
            f"slave reports never published:   {len(never):>10,}  ({lost:,} statements; the last ones may be in flight)"
        )
        for key in sorted(never, key=str)[:10]:
            print(f"  {key}: {slave_counts[key]:,}")
        print("\n== RSS (MiB, node + capture workers)")
        names = list(self.nodes)
        print("   t/s " + "".join(f"{n:>9}" for n in names))
        for at, sample in self.rss:
            print(f"{at:6.0f} " + "".join(f"{sample.get(n, float('nan')):9.1f}" for n in names))
        print("\n== drop counters (/status at the end)")
        for path, label in DROP_COUNTERS:
            values = {n: dig(s, path) for n, s in self.final_status.items() if dig(s, path) is not None}
            print(f"{label:32} {values}")
        print("\n== events")
        print("\n".join(self.events))

    def stop(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.stop()
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--threads", type=int, default=8, help="sysbench threads per server")
    args = parser.parse_args()
    soak = Soak(args.seconds, args.threads, Path(tempfile.mkdtemp(prefix="mysqlprobe-soak-")))
    try:
        soak.setup()
        soak.run()
    finally:
        soak.stop()


if __name__ == "__main__":
    main()
