"""Benchmark: ``mysqlprobe replay`` against tshark and pt-query-digest on one sysbench capture.

1. starts a throw-away mariadbd and records 5 s of ``sysbench oltp_read_write`` (8 threads,
   --db-ps-mode=disable, or auto with --prepared) on lo, unless --pcap names an existing capture;
2. times, in the same run and on the same file (best of --repeat runs each):
   - mysqlprobe replay --format json (1 worker and the default workers),
   - tshark -r FILE -d tcp.port==PORT,mysql -Y mysql.query -T fields -e frame.time_epoch -e mysql.query,
   - tcpdump -r FILE -x -n -q -tttt | pt-query-digest --type tcpdump;
3. prints queries/s, ratios and peak memory, and writes bench/out/replay.json.

Needs root (capture), sysbench, tshark, tcpdump and percona-toolkit (apt-get installs them
when missing). Run from the repository root: ``python3 bench/replay_vs_peers.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out"
TOOLS = {
    "sysbench": "sysbench",
    "tshark": "tshark",
    "tcpdump": "tcpdump",
    "pt-query-digest": "percona-toolkit",
    "/usr/bin/time": "time",
}


def ensure_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None and not os.path.exists(tool)})
    if missing:
        subprocess.run(["apt-get", "update", "-q"], check=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def record(seconds: int, threads: int, *, prepared: bool = False) -> tuple[Path, int, int]:
    from tests.support.mariadb import MariaDB
    from tests.support.recorder import LoopbackRecorder
    from tests.support.sysbench import run_options, sysbench_argv

    server = MariaDB()
    server.start()
    path = OUT / ("sysbench-ps.pcap" if prepared else "sysbench.pcap")
    try:
        server.query("CREATE DATABASE sbtest")
        common = sysbench_argv(server.port)
        subprocess.run([*common, "prepare"], check=True, capture_output=True)
        with LoopbackRecorder(server.port, str(path)) as recorder:
            run = subprocess.run(
                [*common, *run_options(threads, seconds, prepared=prepared)],
                check=True,
                capture_output=True,
                text=True,
            )
        queries = next(int(line.split()[1]) for line in run.stdout.splitlines() if line.strip().startswith("total:"))
        print(
            f"recorded {path} ({path.stat().st_size / 1e6:.1f} MB, {recorder.packets} packets, "
            f"{recorder.dropped} dropped); sysbench reports {queries} queries"
        )
        return path, server.port, queries
    finally:
        server.destroy()


def timed(argv: list[str] | str, *, shell: bool = False) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KB, from GNU time: the largest process of the command), stdout."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        wrapped: list[str] = ["/usr/bin/time", "-f", "%M", "-o", rss.name]
        wrapped += ["sh", "-c", argv] if shell else list(argv)  # type: ignore[list-item]
        start = time.perf_counter()
        result = subprocess.run(wrapped, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"{argv} failed: {result.stderr[-2000:]}")
        peak = int(rss.read().strip().splitlines()[-1] or 0)
    return elapsed, peak, result.stdout


def best(runs: int, argv: list[str] | str, *, shell: bool = False) -> tuple[float, int, str]:
    results = [timed(argv, shell=shell) for _ in range(runs)]
    return min(results, key=lambda r: r[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pcap", help="use this capture instead of recording one")
    parser.add_argument("--port", type=int, help="server port of --pcap")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--prepared",
        action="store_true",
        help="record with --db-ps-mode=auto: every statement a prepared statement's execute (tshark then "
        "counts COM_STMT_EXECUTE packets too; pt-query-digest reads no executes and is timed for reference)",
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_tools()
    if args.pcap:
        path, port, sysbench_queries = Path(args.pcap), args.port or 3306, 0
    else:
        path, port, sysbench_queries = record(args.seconds, args.threads, prepared=args.prepared)

    probe = [sys.executable, "-m", "mysqlprobe.cli", "replay", str(path), "--port", str(port), "--format", "json"]
    results: dict[str, dict[str, Any]] = {}
    for workers in (1, min(2, os.cpu_count() or 1)):
        elapsed, _, out = best(args.repeat, [*probe, "--workers", str(workers)])
        doc = json.loads(out)
        results[f"mysqlprobe replay ({workers} worker{'s' if workers > 1 else ''})"] = {
            "seconds": elapsed,
            "analysis_seconds": doc["analysis"]["elapsed_s"],
            "queries": doc["totals"]["queries"],
            "peak_rss_mb": doc["analysis"]["peak_rss_mb"],
            "coverage": doc["totals"]["coverage"],
        }
    tshark = [
        "tshark",
        "-r",
        str(path),
        "-d",
        f"tcp.port=={port},mysql",
        "-Y",
        "mysql.query or mysql.command == 23" if args.prepared else "mysql.query",
        "-T",
        "fields",
        "-e",
        "frame.time_epoch",
        "-e",
        "mysql.query",
    ]
    elapsed, peak, out = best(args.repeat, tshark)
    results["tshark"] = {"seconds": elapsed, "queries": out.count("\n"), "peak_rss_mb": round(peak / 1024, 1)}
    pt = (
        f"tcpdump -r {path} -x -n -q -tttt 2>/dev/null | "
        f"pt-query-digest --type tcpdump --watch-server 127.0.0.1:{port} 2>/dev/null"
    )
    elapsed, peak, out = best(1, pt, shell=True)
    overall = next((line for line in out.splitlines() if line.startswith("# Overall:")), "")
    results["tcpdump | pt-query-digest"] = {
        "seconds": elapsed,
        "overall": overall,
        "peak_rss_mb": round(peak / 1024, 1),
    }

    ours = min((v for k, v in results.items() if k.startswith("mysqlprobe")), key=lambda v: v["seconds"])
    print(f"\ncapture: {path} port {port}, {ours['queries']} queries (sysbench said {sysbench_queries})")
    print(f"{'tool (whole command, same file)':<34} {'seconds':>8} {'queries/s':>10} {'peak MB':>8}  ratio")
    for name, value in results.items():
        qps = ours["queries"] / value["seconds"]
        ratio = value["seconds"] / ours["seconds"]
        print(f"{name:<34} {value['seconds']:>8.2f} {qps:>10,.0f} {value['peak_rss_mb']:>8}  {ratio:5.1f}x ours")
    for name, value in results.items():
        if "analysis_seconds" in value:
            print(
                f"  {name}: analysis alone (no interpreter start-up) {value['analysis_seconds']:.2f} s = "
                f"{ours['queries'] / value['analysis_seconds']:,.0f} queries/s"
            )
    summary = {"pcap": str(path), "port": port, "sysbench_queries": sysbench_queries, "results": results}
    (OUT / "replay.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
