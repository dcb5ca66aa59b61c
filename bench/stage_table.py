"""Per-stage cost table of the replay engine, pure and compiled, in µs per statement.

The stages are the issue's: capture (libpcap and pcapy-ng's batch copies), decode, flows,
conversation, normalizer, aggregation, and the rest of the node (the interpreter driving
the batch loop, reports). Each engine's share per stage is measured one way and its total
another, both on the same capture:

- total: CPU seconds of the engine's pass over the file (``bench/stage_profile.py
  --callgrind`` prints them; best of ``--repeat`` runs, no profiler);
- pure engine shares: cProfile's self time per stage (``bench/stage_profile.py``);
- compiled engine shares: instructions (``valgrind --tool=callgrind``, minus an
  import-only run), attributed through the call tree: each of our C functions keeps what
  it executes itself and the CPython API it calls, minus our C functions it calls and the
  Python code it calls back (the statements the C path hands to the Python engine, a stage
  of its own). cProfile cannot see inside the compiled batch loop, so it cannot be used here.
  The compiled path's per-template counters are updated inline in the exchange path, so its
  aggregation per statement shows under conversation; what is left of aggregation is the
  fold at drain, once per template and interval (under node).

Run from the repository root (needs valgrind)::

    python3 bench/stage_table.py bench/out/sysbench.pcap --port PORT
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "bench" / "stage_profile.py"
STAGES = ("capture", "decode", "flows", "conversation", "normalizer", "aggregation", "python engine", "node")

#: Our C functions whose stage is not their file's.
_BY_FUNCTION = {
    "skeleton": "normalizer",
    "skel_check": "normalizer",
    "skel_slot": "normalizer",
    "skel_clear": "normalizer",
    "fnv": "normalizer",
    "acc_for": "aggregation",
    "acc_bucket": "aggregation",
    "fold": "aggregation",
}
_BY_FILE = {
    "_cdecode.c": "decode",
    "_cflows.c": "flows",
    "_cexchange.c": "conversation",
    "_cwire.c": "conversation",
    "_cresponses.c": "conversation",
}
#: Calls through which our C code runs Python code (a fallback to the Python engine).
_CALLS_INTO_PYTHON = re.compile(r"call\.c:(PyObject_Vectorcall\w*|PyObject_Call\w*|_PyObject_Call\w*)")
_LINE = re.compile(r"^\s*([\d,]+) \([ \d.]+%\)\s+([*<>])\s+(\S+)")


def python() -> str:
    """The interpreter itself (a pyenv shim is a shell script: valgrind would measure bash)."""
    return os.path.realpath(sys.executable) if "shims" not in sys.executable else sys.base_prefix + "/bin/python3"


def engine_env(pure: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # imports would compile every source each run
    if pure:
        env["MYSQLPROBE_NO_EXTENSIONS"] = "1"
    else:
        env.pop("MYSQLPROBE_NO_EXTENSIONS", None)
    return env


def cpu_per_statement(capture: str, ports: list[str], pure: bool, repeat: int) -> tuple[float, int]:
    """(µs of CPU per statement for the engine's pass, statements), best of ``repeat``."""
    best = float("inf")
    statements = 0
    for _ in range(repeat):
        out = subprocess.run(
            [python(), str(PROFILE), capture, *ports, "--callgrind"],
            env=engine_env(pure),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        fields = dict(part.split("=", 1) for part in out.split())
        statements = int(fields["statements"])
        best = min(best, float(fields["cpu_s"]) / statements * 1e6)
    return best, statements


def pure_shares(capture: str, ports: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [python(), str(PROFILE), capture, *ports],
        env=engine_env(True),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shares: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].endswith("%"):
            stage = "node" if parts[0] == "other" else parts[0]
            shares[stage] = shares.get(stage, 0.0) + float(parts[1].rstrip("%")) / 100
    return shares


def callgrind_total(argv: list[str], env: dict[str, str], out: Path) -> int:
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        env=env,
        capture_output=True,
        check=True,
    )
    text = subprocess.run(["callgrind_annotate", str(out)], capture_output=True, text=True, check=True).stdout
    match = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text)
    assert match, "callgrind_annotate printed no total"
    return int(match.group(1).replace(",", ""))


def _ours(name: str) -> tuple[str, str] | None:
    """(file, function) of one of our C functions, else None."""
    where = name.rsplit("/", 1)[-1]
    file, _, function = where.partition(":")
    return (file, function) if file in _BY_FILE else None


def compiled_instructions(capture: str, ports: list[str], workdir: Path) -> tuple[dict[str, int], int]:
    """Instructions per stage for the compiled engine's pass, and the pass's total."""
    env = engine_env(False)
    run_out, import_out = workdir / "run.out", workdir / "import.out"
    total = callgrind_total([python(), str(PROFILE), capture, *ports, "--callgrind"], env, run_out)
    baseline = callgrind_total(
        [python(), "-c", "import mysqlprobe.replay, probe.engine, probe.native, probe.flows"], env, import_out
    )
    tree = subprocess.run(
        ["callgrind_annotate", "--tree=calling", "--inclusive=yes", "--threshold=100", str(run_out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stages = dict.fromkeys(STAGES, 0)
    current: tuple[str, str] | None = None
    current_cost = 0
    seen: set[tuple[str, str]] = set()

    def close() -> None:
        if current is not None and current not in seen:
            seen.add(current)
            file, function = current
            stages[_BY_FUNCTION.get(function, _BY_FILE[file])] += current_cost

    for line in tree.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        cost, mark, name = int(match.group(1).replace(",", "")), match.group(2), match.group(3)
        if mark == "*":
            close()
            # The same function is listed twice, once under its absolute path without
            # callees (how its callers name it): the relative entry has the call tree.
            current, current_cost = (None if name.startswith("/") else _ours(name)), cost
            if "pcapobj.cc:p_next_batch" in name:
                stages["capture"] += cost
        elif mark == ">" and current is not None:
            if _ours(name) is not None:
                current_cost -= cost  # counted in that function's own block
            elif _CALLS_INTO_PYTHON.search(name):
                current_cost -= cost
                stages["python engine"] += cost
    close()
    run_total = total - baseline
    stages["node"] = run_total - sum(v for k, v in stages.items() if k != "node")
    return stages, run_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture")
    parser.add_argument("--port", type=int, action="append")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ports = [f"--port={p}" for p in args.port or [3306]]
    pure_us, statements = cpu_per_statement(args.capture, ports, True, args.repeat)
    compiled_us, _ = cpu_per_statement(args.capture, ports, False, args.repeat)
    shares = pure_shares(args.capture, ports)
    with tempfile.TemporaryDirectory(prefix="stage-table-") as tmp:
        instructions, run_total = compiled_instructions(args.capture, ports, Path(tmp))
    print(f"capture {args.capture}: {statements:,} statements; CPU of the engine's pass, best of {args.repeat}")
    print(f"{'stage':<15}{'pure µs/stmt':>14}{'compiled µs/stmt':>18}{'compiled kinstr/stmt':>22}")
    for stage in STAGES:
        share = instructions[stage] / run_total
        print(
            f"{stage:<15}{shares.get(stage, 0.0) * pure_us:>14.2f}{share * compiled_us:>18.2f}"
            f"{instructions[stage] / statements / 1000:>22.1f}"
        )
    print(f"{'total':<15}{pure_us:>14.2f}{compiled_us:>18.2f}{run_total / statements / 1000:>22.1f}")


if __name__ == "__main__":
    main()
