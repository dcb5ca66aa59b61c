"""What prepared statements and session checkpoints cost a slave (issue 12, point 11).

1. Prepared statements: 2,000 connections each preparing 20 statements of 10 KB, fed to
   the sans-I/O conversation as a worker would, without a byte budget and with the default
   one (``probe.maxpreparedmb``, 64 MiB): SQL held and peak RSS growth.
2. Session checkpoint: 20,000 connections with one prepared statement each (a 34 MB base),
   then intervals where ten sessions change: bytes written per interval.

    python3 bench/state_cost.py
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def prepared(budget_mb: int) -> str:
    from probe.mysql.conversation import Conversation, PreparedBudget
    from probe.normalize import Normalizer
    from tests.support import mysqlwire as w

    conns, statements, size = 2000, 20, 10_000
    budget = PreparedBudget(budget_mb << 20) if budget_mb else None
    normalizer = Normalizer()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    convs = []
    for i in range(conns):
        conv = Conversation(f"10.0.{i >> 8}.{i & 255}:40000", "10.0.0.1:3306", normalizer, from_start=True)
        conv.budget = budget
        script = w.Script().login(conn_id=i)
        for n in range(statements):
            script.client(w.prepare(f"SELECT a FROM t{n} WHERE b = ? AND c <> '{i}-{n}-{'x' * size}'"))
            script.server(w.prepare_ok(n + 1, columns=0, params=1))
        for ts, direction, data in script.timed():
            conv.feed(ts, direction, data)
        convs.append(conv)
    held = sum(len(s.sql) for c in convs for s in c.prepared.values())
    over = sum(c.limit_hits.get("max_prepared_bytes", 0) for c in convs)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    label = f"{budget_mb} MiB budget" if budget_mb else "no budget"
    return f"{label}: SQL held {held / 2**20:.0f} MiB, peak RSS +{grown:.0f} MiB, statements over budget {over}"


def checkpoint() -> None:
    from message.persist import StateWrites
    from mysqlprobe.sessions import SessionCheckpoint

    sql = "SELECT c FROM sbtest1 WHERE id = ? AND k IN (" + ", ".join("?" for _ in range(540)) + ")"
    live: dict[str, tuple[str, str, int | None, dict[int, str]]] = {
        f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}:40000": ("app", "shop", i, {1: sql}) for i in range(20_000)
    }
    directory = Path(tempfile.mkdtemp())
    sessions = SessionCheckpoint(directory, "s", StateWrites(directory))
    started = time.perf_counter()
    sessions.record(1, live, set(live), set())
    print(f"checkpoint base: {sessions.bytes_written / 1e6:.1f} MB in {(time.perf_counter() - started) * 1000:.0f} ms")
    for n in range(1, 6):
        before = sessions.bytes_written
        changed = {f"10.0.0.{n * 10 + j}:40000" for j in range(10)}
        for key in changed:
            live[key] = ("app", "shop", n, {2: sql + " "})
        started = time.perf_counter()
        sessions.record(1 + n, live, changed, set())
        elapsed = (time.perf_counter() - started) * 1000
        print(f"interval {n}: 10 sessions changed -> {sessions.bytes_written - before} bytes in {elapsed:.1f} ms")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(prepared(int(sys.argv[1])))
    else:
        for budget in (0, 64):  # one process each: peak RSS is per process
            subprocess.run([sys.executable, __file__, str(budget)], check=True)
        checkpoint()
