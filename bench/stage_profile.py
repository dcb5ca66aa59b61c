"""Per-stage cost of the replay engine on one capture: cProfile self time grouped by stage.

The machine this runs on is shared, so wall time is noisy: the proportions of cProfile's
self time are stable, and ``--callgrind`` runs only the engine over the file (one worker,
no report) so that ``valgrind --tool=callgrind`` counts its instructions::

    python3 bench/stage_profile.py examples/sample.pcap.gz                 # proportions
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        python3 bench/stage_profile.py examples/sample.pcap.gz --callgrind  # instructions

``MYSQLPROBE_NO_EXTENSIONS=1`` runs the pure engine. Statements: the report's calls total.
``--callgrind`` also prints the pass's CPU seconds (``bench/stage_table.py`` reads them).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mysqlprobe.replay import run_shard  # noqa: E402
from probe import native  # noqa: E402
from probe.engine import EngineConfig  # noqa: E402

#: Stage of a function, by the file that defines it (C functions by name).
STAGES = (
    ("aggregation", ("engine.py:_events", "engine.py:_other")),
    ("decode", ("probe/decode.py", "probe/engine.py", "_cdecode", "iter_unpack", "unpack_from")),
    ("flows", ("probe/flows.py",)),
    ("conversation", ("probe/mysql/",)),
    ("normalizer", ("probe/normalize.py", "probe/redact.py")),
    ("aggregation", ("probe/aggregate.py", "ddsketch")),
    ("capture", ("probe/capture.py", "pcapy")),
)


def stage_of(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    for stage, marks in STAGES:
        if any(mark in where for mark in marks):
            return stage
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pcap")
    parser.add_argument("--port", type=int, action="append")
    parser.add_argument("--callgrind", action="store_true", help="no profiler: one engine pass only")
    parser.add_argument("--shard", default="0/1", help="INDEX/COUNT: one replay worker's share (default 0/1)")
    args = parser.parse_args()
    index, count = (int(part) for part in args.shard.split("/"))
    config = EngineConfig(ports=frozenset(args.port or [3306]), shard=(index, count))
    if args.callgrind:
        started = time.process_time()
        result = run_shard(args.pcap, config)
        cpu = time.process_time() - started
        print(f"engine={native.ENGINE} statements={sum(t.count for t in result.templates)} cpu_s={cpu:.4f}")
        return
    profile = cProfile.Profile()
    profile.enable()
    result = run_shard(args.pcap, config)
    profile.disable()
    statements = sum(t.count for t in result.templates)
    stats = pstats.Stats(profile)
    per_stage: dict[str, float] = {}
    for (filename, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        if filename == "~" and stage_of(filename, name) == "other":
            # A builtin (len, a slice, a dict method): its time goes to its callers' stages.
            for (cfile, _cline, cname), crow in row[4].items():
                per_stage[stage_of(cfile, cname)] = per_stage.get(stage_of(cfile, cname), 0.0) + crow[2]
            continue
        per_stage[stage_of(filename, name)] = per_stage.get(stage_of(filename, name), 0.0) + row[2]
    total = sum(per_stage.values())
    print(f"engine={native.ENGINE} statements={statements} packets={result.capture['packets']}")
    print(f"{'stage':<14}{'share':>8}{'us/stmt (profiled)':>20}")
    for stage, seconds in sorted(per_stage.items(), key=lambda kv: -kv[1]):
        print(f"{stage:<14}{seconds / total:>8.1%}{seconds / statements * 1e6:>20.2f}")


if __name__ == "__main__":
    main()
