"""Benchmark: a live slave under sysbench oltp_read_write at the highest rate this machine runs.

Runs sysbench against a throw-away mariadbd in interleaved rounds: without a capture, with
a bare ``tcpdump -w /dev/null`` on the same port (the peer: what any libpcap capture costs
the server's host, with nothing done to the packets), and with a slave capturing on lo; it
reports, in the same run:
- statements the slave reported / statements the server executed (performance_schema's
  events_statements_history_long, every statement of the sbtest schema; the digest summary
  is shown too), which must be >= 99.99%;
- kernel drops (pcap) reported by the slave, which must be 0;
- the slave's CPU (parent + workers, from /proc) per 1,000 statements;
- sysbench throughput with the slave running against without it, and tcpdump's.
``--prepared`` runs sysbench with --db-ps-mode=auto (every statement an execute of a
server-side prepared statement). Needs root, sysbench and tcpdump.
Run from the repository root: ``python3 bench/slave_overhead.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.mariadb import MariaDB  # noqa: E402
from tests.support.nodes import Collector, Node  # noqa: E402
from tests.support.sysbench import run_options, sysbench_argv  # noqa: E402
from tests.support.workload import Accounting  # noqa: E402

CLOCK = os.sysconf("SC_CLK_TCK")
#: performance_schema_events_statements_history_long_size of tests/support/mariadb.py's servers.
HISTORY_LONG_SIZE = 200_000


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        stack.extend(children.get(current, []))
    return pids


def batch_scheduling(pid: int) -> None:
    """SCHED_BATCH for every thread of a process tree: its wake-ups no longer preempt the
    server's threads (the slave reads the kernel's blocks, nothing waits on it)."""
    for process in tree_pids(pid):
        for thread in os.listdir(f"/proc/{process}/task"):
            os.sched_setscheduler(int(thread), os.SCHED_BATCH, os.sched_param(0))


def tree_cpu(pid: int) -> float:
    """User+system CPU seconds of a process and all its descendants."""
    total = 0.0
    for current in tree_pids(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK
    return total


def own_cpu(pid: int) -> float:
    """User+system CPU seconds of one process (the slave's parent: reports, history, HTTP)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def sysbench(
    port: int, threads: int, seconds: int, command: str = "run", *, prepared: bool = False
) -> dict[str, float]:
    argv = sysbench_argv(port) + (run_options(threads, seconds, prepared=prepared) if command == "run" else [command])
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    if command != "run":
        return {}
    stats: dict[str, float] = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("queries:"):
            stats["qps"] = float(line.split("(")[1].split()[0])
            stats["queries"] = float(line.split()[1])
        elif line.startswith("transactions:"):
            stats["tps"] = float(line.split("(")[1].split()[0])
    return stats


def tcpdump_round(port: int, threads: int, seconds: int, prepared: bool) -> dict[str, float]:
    """sysbench with ``tcpdump -w /dev/null`` capturing the port on lo, with the slave's
    snap length and buffer: the host's cost of a libpcap capture that analyses nothing."""
    dump = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-s", "262144", "-B", str(32 << 10), "-w", "/dev/null", "-n", f"tcp port {port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    cpu_before = own_cpu(dump.pid)
    run = sysbench(port, threads, seconds, prepared=prepared)
    run["tcpdump_cpu_s"] = own_cpu(dump.pid) - cpu_before
    dump.terminate()
    _, err = dump.communicate(timeout=10)
    # "N packets captured", "M packets dropped by kernel"
    for line in err.splitlines():
        if "dropped by kernel" in line:
            run["kernel_drops"] = float(line.split()[0])
    return run


def slave_round(server: MariaDB, workdir: Path, args: argparse.Namespace, *, batch: bool) -> dict[str, float]:
    """sysbench with a slave capturing the port on lo: its throughput, the slave's CPU,
    and what it saw against what the server executed."""
    ps = args.prepared
    slave = {"interval": args.interval, "probe": {"device": "lo", "port": server.port, "workers": args.workers}}
    node = Node(workdir, slave, "slave")
    node.start()
    if batch:
        batch_scheduling(node.proc.pid)  # type: ignore[union-attr]
    collector = Collector(f"ws://127.0.0.1:{node.port}/collector")
    accounting = Accounting(server)
    time.sleep(1.5)
    accounting.reset()
    cpu_before = tree_cpu(node.proc.pid)  # type: ignore[union-attr]
    parent_before = own_cpu(node.proc.pid)  # type: ignore[union-attr]
    seen_before = len(collector.reports)
    run = sysbench(server.port, args.threads, args.seconds, prepared=ps)
    time.sleep(args.interval + 1.5)  # the last intervals close
    cpu = tree_cpu(node.proc.pid) - cpu_before  # type: ignore[union-attr]
    parent_cpu = own_cpu(node.proc.pid) - parent_before  # type: ignore[union-attr]
    digests = sum(count for count, _ in accounting.expectations(schema="sbtest").values())
    # Every statement event (the history holds 200,000): the exact reference. The
    # digest summary can undercount under concurrency (measured: 20 of 74,737).
    executed = int(
        accounting._query(
            "SELECT COUNT(*) FROM performance_schema.events_statements_history_long"
            " WHERE NESTING_EVENT_LEVEL = 0 AND CURRENT_SCHEMA = 'sbtest' AND EVENT_NAME LIKE 'statement/sql/%'"
        )[0][0]
    )
    held = int(accounting._query("SELECT COUNT(*) FROM performance_schema.events_statements_history_long")[0][0])
    if ps:
        # Executes are statement/com/Execute events (their statement nested below):
        # the global summary counts every one, whatever the history ring kept.
        executes = accounting.commands().get("Execute", 0)
        print(f"  executes {executes:,} (performance_schema), text statements in the history {executed:,}")
        executed += executes
        digests = executed
    elif held >= HISTORY_LONG_SIZE:
        # The history is a ring: it dropped the oldest statements. The digest table is
        # then the only complete count (it may undercount a few, see above).
        print(f"  history_long is full ({executed:,}): using the digest table's {digests:,}")
        executed = digests
    reports = collector.reports[seen_before:]
    seen = sum(
        e["commands"].get("Query", 0) + e["commands"].get("Execute", 0)
        for r in reports
        for e in r["templates"]
        if e["db"] == "sbtest"
    )
    drops = sum(r["capture"].get("dropped_kernel", 0) + r["capture"].get("dropped_interface", 0) for r in reports)
    collector.close()
    node.stop()
    accounting.close()
    run.update(
        {
            "executed": executed,
            "digests": digests,
            "seen": seen,
            "kernel_drops": drops,
            "slave_cpu_s": cpu,
            "parent_cpu_s": parent_cpu,
        }
    )
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--interval", type=int, default=10, help="the slave's report interval, s (default: the configuration's)"
    )
    parser.add_argument("--prepared", action="store_true", help="sysbench --db-ps-mode=auto")
    parser.add_argument("--workers", type=int, default=2, help="the slave's capture workers (default 2, as configured)")
    parser.add_argument("--no-peer", action="store_true", help="skip the tcpdump rounds")
    parser.add_argument(
        "--batch-variant", action="store_true", help="also rounds with the slave's threads under SCHED_BATCH"
    )
    args = parser.parse_args()
    server = MariaDB()
    server.start()
    workdir = Path(tempfile.mkdtemp(prefix="mysqlprobe-bench-"))
    variants = ["with", "with batch"] if args.batch_variant else ["with"]
    results: dict[str, list[dict[str, float]]] = {"without": [], "tcpdump": [], **{v: [] for v in variants}}
    ps = args.prepared
    try:
        server.query("CREATE DATABASE sbtest")
        sysbench(server.port, args.threads, args.seconds, "prepare")
        sysbench(server.port, args.threads, 3, prepared=ps)  # warm up the buffer pool
        for _ in range(args.rounds):
            results["without"].append(sysbench(server.port, args.threads, args.seconds, prepared=ps))
            if not args.no_peer:
                results["tcpdump"].append(tcpdump_round(server.port, args.threads, args.seconds, ps))
            for variant in variants:
                results[variant].append(slave_round(server, workdir, args, batch=variant != "with"))
    finally:
        server.destroy()
    without = max(r["qps"] for r in results["without"])
    print(f"sysbench oltp_read_write, {args.threads} threads, {args.seconds} s a run, {args.rounds} rounds")
    for variant in variants:
        for r in results[variant]:
            ratio = r["seen"] / r["executed"] * 100 if r["executed"] else 0.0
            print(
                f"  {variant} slave: {r['qps']:,.0f} q/s; statements seen {r['seen']:,} / executed "
                f"{r['executed']:,} = {ratio:.3f}% (digest table: {r['digests']:,}); kernel drops "
                f"{r['kernel_drops']}; slave CPU {r['slave_cpu_s']:.2f} s = "
                f"{r['slave_cpu_s'] / r['seen'] * 1e6:.1f} ms per 1,000 statements (capture workers "
                f"{(r['slave_cpu_s'] - r['parent_cpu_s']) / r['seen'] * 1e6:.1f}, parent "
                f"{r['parent_cpu_s'] / r['seen'] * 1e6:.1f}: reports, history and HTTP once per {args.interval} s "
                "interval)"
            )
    for r in results["tcpdump"]:
        print(
            f"  with tcpdump -w /dev/null: {r['qps']:,.0f} q/s; kernel drops {r.get('kernel_drops', 0):.0f}; "
            f"tcpdump CPU {r['tcpdump_cpu_s']:.2f} s = {r['tcpdump_cpu_s'] / r['queries'] * 1e6:.1f} ms per 1,000 "
            "statements"
        )
    for r in results["without"]:
        print(f"  without slave: {r['qps']:,.0f} q/s")
    kind = "prepared (--db-ps-mode=auto)" if ps else "text (--db-ps-mode=disable)"
    print(f"{kind}; slave report interval {args.interval} s, {args.workers} capture workers")
    peer = max(r["qps"] for r in results["tcpdump"]) if results["tcpdump"] else 0.0
    for variant in variants:
        best = max(r["qps"] for r in results[variant])
        print(f"best throughput {variant} slave / without: {best:,.0f} / {without:,.0f} = {best / without:.3f}")
        if peer:
            print(f"best throughput {variant} slave / with tcpdump: {best:,.0f} / {peer:,.0f} = {best / peer:.3f}")
    if peer:
        print(f"best throughput with tcpdump / without: {peer:,.0f} / {without:,.0f} = {peer / without:.3f}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "slave.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
