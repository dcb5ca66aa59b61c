"""Prepared statements are bounded by bytes per worker (``FlowLimits.max_prepared_bytes``):
many connections preparing large statements never hold more SQL than the budget; past it a
statement keeps only its template (counted), its executes still get that template, and
closed statements and ended connections give their bytes back."""

from __future__ import annotations

import struct

from probe.decode import LINKTYPE_ETHERNET
from probe.engine import Engine, EngineConfig
from probe.flows import FlowLimits
from probe.mysql import constants as c
from tests.support import mysqlwire as w

BUDGET = 200_000
SQL_BYTES = 10_000


def statement(conn: int, n: int) -> str:
    filler = ", ".join(f"'{conn:03d}-{n:02d}-{i:05d}'" for i in range((SQL_BYTES - 60) // 15))
    return f"SELECT a FROM t{n} WHERE b = ? AND c NOT IN ({filler})"


def connection(conn: int, statements: int, *, close: int | None = None) -> w.Script:
    script = w.Script().login(conn_id=conn)
    for n in range(statements):
        script.client(w.prepare(statement(conn, n)))
        script.server(w.prepare_ok(n + 1, columns=0, params=1))
    for n in range(statements):
        script.client(w.execute(n + 1, [(c.TYPE_LONG, struct.pack("<i", n))]))
        script.server(w.framed([w.ok()], 1))
    if close is not None:
        script.client(w.command(c.Command.STMT_CLOSE, struct.pack("<I", close)))
    return script


def test_prepared_sql_is_bounded_by_bytes_per_worker() -> None:
    engine = Engine(
        EngineConfig(ports=frozenset({3306}), flows=FlowLimits(max_prepared_bytes=BUDGET), slow_threshold_us=0),
        LINKTYPE_ETHERNET,
    )
    budget = engine.flows.prepared_budget
    peak = 0
    for conn in range(10):
        frames = w.to_frames(connection(conn, 5, close=1 if conn == 0 else None), client=("10.0.0.7", 50000 + conn))
        for ts, frame in frames:
            engine.packet(ts, frame)
            peak = max(peak, budget.used)
    # 50 statements of ~10 KB against a 200 KB budget: never more than the budget held.
    assert peak <= BUDGET and budget.used <= BUDGET
    hits = engine.capture_counters()["limit_hits"]
    assert hits["max_prepared_bytes"] >= 50 - BUDGET // SQL_BYTES - 1
    interval = engine.drain()
    executes = {t.template: t.commands.get("Execute", 0) for t in interval.templates}
    # Every execute kept its statement's template, over the budget or not.
    assert "EXECUTE <unknown prepared statement>" not in executes
    assert sum(executes.values()) == 50
    assert all(t.startswith("SELECT a FROM t") and t.endswith("NOT IN (...)") for t in executes if executes[t])
    # Over the budget a sample shows the template instead of the SQL; within it, the SQL.
    sqls = [s.sql for s in interval.slow if s.sql.startswith("SELECT a FROM t")]
    assert any("'000-" in s for s in sqls) and any(s.endswith("NOT IN (...)") for s in sqls)
    # Connections that end give their bytes back.
    engine.finish(2_000_000_000_000_000_000)
    assert budget.used == 0


def test_closed_statements_give_their_bytes_back() -> None:
    engine = Engine(
        EngineConfig(ports=frozenset({3306}), flows=FlowLimits(max_prepared_bytes=BUDGET)), LINKTYPE_ETHERNET
    )
    frames = w.to_frames(connection(0, 3, close=2))
    for ts, frame in frames[:-1]:
        engine.packet(ts, frame)
    held = engine.flows.prepared_budget.used
    assert held == sum(len(statement(0, n)) for n in range(3))
    engine.packet(*frames[-1])  # COM_STMT_CLOSE of statement 2
    assert engine.flows.prepared_budget.used == held - len(statement(0, 1))
