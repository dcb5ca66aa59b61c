"""The slave's session checkpoint is incremental: a base written once, then one journal
line per interval with only what changed; a restart reads base + journal (a torn last line
is ignored), and the base is rewritten only when the journal outgrows it."""

from __future__ import annotations

from pathlib import Path

from message.persist import StateWrites
from mysqlprobe.sessions import SessionCheckpoint, WorkerSessions

SQL = "SELECT c FROM sbtest1 WHERE id = ? AND k IN (" + ", ".join("?" for _ in range(500)) + ")"


def sessions(n: int) -> dict[str, tuple[str, str, int | None, dict[int, str]]]:
    return {f"10.0.{i >> 8}.{i & 255}:40000": ("app", "shop", i, {1: SQL, 2: SQL + " "}) for i in range(n)}


def test_an_interval_costs_what_changed_not_every_session(tmp_path: Path) -> None:
    live = sessions(5_000)
    checkpoint = SessionCheckpoint(tmp_path, "s", StateWrites(tmp_path))
    assert checkpoint.record(1_000, live, set(live), set())
    base = checkpoint.bytes_written
    assert base > 5_000 * 2 * len(SQL)  # the first checkpoint is the whole state
    for interval in range(1, 11):
        changed = f"10.0.0.{interval}:40000"
        live[changed] = ("app", "shop", interval, {7: f"SELECT {interval}"})
        gone = f"10.0.1.{interval}:40000"
        del live[gone]
        before = checkpoint.bytes_written
        assert checkpoint.record(1_000 + interval, live, {changed}, {gone})
        assert checkpoint.bytes_written - before < 300  # one small journal line
    assert checkpoint.compactions == 1 and checkpoint.base.stat().st_size == base
    restarted = SessionCheckpoint(tmp_path, "s", StateWrites(tmp_path))
    assert restarted.load() == (1_010, live)


def test_a_torn_journal_line_is_ignored(tmp_path: Path) -> None:
    live = sessions(3)
    checkpoint = SessionCheckpoint(tmp_path, "s", StateWrites(tmp_path))
    checkpoint.record(1, live, set(live), set())
    live["a:1"] = ("u", "d", 9, {1: "SELECT 1"})
    checkpoint.record(2, live, {"a:1"}, set())
    with open(checkpoint.journal, "ab") as fh:
        fh.write(b'3f00 {"last_end_ns": 3, "se')  # a kill -9 in the middle of an append
    restarted = SessionCheckpoint(tmp_path, "s", StateWrites(tmp_path))
    assert restarted.load() == (2, live) and restarted.torn_lines == 1
    # The next checkpoint after a start is a new base: the torn line is gone for good.
    assert restarted.record(4, live, set(), set())
    assert restarted.journal.read_bytes() == b"" and SessionCheckpoint(tmp_path, "s", StateWrites(tmp_path)).load() == (
        4,
        live,
    )


def test_the_base_is_rewritten_when_the_journal_outgrows_it(tmp_path: Path) -> None:
    live: dict[str, tuple[str, str, int | None, dict[int, str]]] = {"y:0": ("u", "d", 0, {})}
    checkpoint = SessionCheckpoint(tmp_path, "s", StateWrites(tmp_path), compact_bytes=0)
    checkpoint.record(1, live, set(live), set())
    for i in range(40):
        live[f"x:{i}"] = ("u", "d", i, {})
        checkpoint.record(2 + i, live, {f"x:{i}"}, set())
    assert checkpoint.compactions >= 2
    assert checkpoint.journal_bytes <= max(checkpoint.base_bytes, 2_000)
    assert SessionCheckpoint(tmp_path, "s", StateWrites(tmp_path)).load() == (41, live)


def test_worker_deltas() -> None:
    restored = {"r:1": ("u", "d", 1, {1: "SELECT 1"})}
    tracked = WorkerSessions(restored, workers=2)
    tracked.apply(0, {"a:1": ("u", "d", 2, {})}, [], full=True)
    assert tracked.current().keys() == {"r:1", "a:1"}  # restored kept until every worker answered
    tracked.apply(1, {"b:1": ("u", "d", 3, {})}, [], full=True)
    assert tracked.current().keys() == {"a:1", "b:1"}
    assert tracked.take_changes() == ({"a:1", "b:1"}, {"r:1"})
    tracked.apply(0, {"a:2": ("u", "d", 4, {})}, ["a:1"], full=False)
    assert tracked.current().keys() == {"a:2", "b:1"}
    assert tracked.take_changes() == ({"a:2"}, {"a:1"})
    tracked.apply(1, {"b:2": ("u", "d", 5, {})}, [], full=True)  # worker 1 restarted
    assert tracked.current().keys() == {"a:2", "b:2"}
    assert tracked.take_changes() == ({"b:2"}, {"b:1"})
