"""The master's merge, sans-I/O: exactly once, nothing overwritten, absence visible."""

from __future__ import annotations

import json
from typing import Any

from cluster.merge import ReportMerger
from message.report import TemplateStats


def slave_report(
    node: str, seq: int, entries: list[tuple[str, int, list[int]]], *, texts: bool = True
) -> dict[str, Any]:
    templates = []
    for key, errors, latencies in entries:
        stats = TemplateStats("10.0.0.1:3306", "shop", key, f"SELECT {key}")
        for latency in latencies:
            stats.count += 1
            stats.commands["Query"] = stats.commands.get("Query", 0) + 1
            stats.latency_sum += latency
            stats.latency_min = min(stats.latency_min or latency, latency)
            stats.latency_max = max(stats.latency_max, latency)
            stats.sketch.add(latency)
        if errors:
            stats.errors["1146"] = errors
        entry = stats.to_json(with_template=texts)
        templates.append(entry)
    count = sum(len(lat) for _, _, lat in entries)
    return {
        "schema": 1,
        "kind": "interval",
        "node": node,
        "role": "slave",
        "seq": seq,
        "interval": {"start_ns": seq * 10, "end_ns": seq * 10 + 10},
        "totals": {"queries": count, "commands": count, "errors": sum(e for _, e, _ in entries), "incomplete": 0},
        "capture": {"packets": 2 * count},
        "templates": templates,
        "slow": [],
    }


def drain(merger: ReportMerger, expected: list[str] | None = None) -> dict[str, Any]:
    return merger.drain(
        node="m", role="master", seq=1, epoch=3, start_ns=0, end_ns=100, expected=expected or ["s1", "s2"]
    )


def test_counts_add_across_slaves_and_duplicates_are_dropped() -> None:
    merger = ReportMerger()
    a = slave_report("s1", 1, [("0000000000000001", 1, [10, 20])])
    b = slave_report("s2", 7, [("0000000000000001", 0, [5, 500]), ("0000000000000002", 0, [3])])
    assert merger.add(a) == "merged"
    assert merger.add(b) == "merged"
    assert merger.add(a) == "duplicate"  # resent after a reconnect: merged once
    report = drain(merger)
    entry = next(t for t in report["templates"] if t["key"] == "0000000000000001")
    assert entry["count"] == 4 and entry["errors"] == {"1146": 1}
    assert (entry["latency_us"]["min"], entry["latency_us"]["max"], entry["latency_us"]["sum"]) == (5, 500, 535)
    assert report["totals"]["queries"] == 5 and report["capture"]["packets"] == 10
    assert report["duplicates_dropped"] == 1 and report["epoch"] == 3
    assert [s["node"] for s in report["slaves"]] == ["s1", "s2"]
    assert report["missing"] == []


def test_gaps_in_a_slaves_sequence_are_marked_missing() -> None:
    merger = ReportMerger()
    merger.add(slave_report("s1", 1, [("0000000000000001", 0, [1])]))
    drain(merger)
    merger.add(slave_report("s1", 4, [("0000000000000001", 0, [1])]))
    report = drain(merger, expected=["s1", "s2"])
    missing = {m["node"]: m for m in report["missing"]}
    assert missing["s1"]["seqs"] == [2, 3] and missing["s1"]["count"] == 2
    assert "s2" in missing  # expected, but sent nothing
    assert next(s for s in report["slaves"] if s["node"] == "s2")["state"] == "silent"


def test_old_duplicates_after_the_interval_are_still_dropped() -> None:
    merger = ReportMerger()
    first = slave_report("s1", 1, [("0000000000000001", 0, [1])])
    merger.add(first)
    drain(merger)
    assert merger.add(first) == "duplicate"
    assert drain(merger)["templates"] == []


def test_missing_template_texts_come_from_the_cache() -> None:
    merger = ReportMerger()
    merger.add(slave_report("s1", 1, [("0000000000000009", 0, [1])], texts=False), {"0000000000000009": "SELECT 9"})
    assert drain(merger)["templates"][0]["template"] == "SELECT 9"


def test_malformed_reports_are_rejected_not_merged() -> None:
    merger = ReportMerger()
    assert merger.add({"node": "s1"}) == "rejected"
    bad = slave_report("s1", 1, [("0000000000000001", 0, [1])])
    bad["templates"][0]["latency_us"]["sketch"] = {"alpha": 0.5}
    assert merger.add(bad) == "rejected"
    assert merger.rejected == 2 and drain(merger)["templates"] == []


def test_snapshot_and_restore_resume_exactly() -> None:
    merger = ReportMerger()
    merger.add(slave_report("s1", 1, [("0000000000000001", 1, [10, 20])]))
    drain(merger)
    merger.add(slave_report("s1", 2, [("0000000000000001", 0, [30])]))
    snapshot = json.loads(json.dumps(merger.snapshot()))
    resumed = ReportMerger()
    resumed.restore(snapshot)
    assert resumed.add(slave_report("s1", 2, [("0000000000000001", 0, [30])])) == "duplicate"
    assert resumed.add(slave_report("s1", 3, [("0000000000000001", 0, [40])])) == "merged"
    entry = next(t for t in resumed.cumulative_report()["templates"] if t["key"] == "0000000000000001")
    assert entry["count"] == 4 and entry["errors"] == {"1146": 1} and entry["latency_us"]["sum"] == 100
    assert drain(resumed)["templates"][0]["count"] == 2  # the interval resumed where it was


def test_each_template_carries_its_per_slave_breakdown_across_a_checkpoint() -> None:
    merger = ReportMerger()
    assert merger.add(slave_report("s1", 1, [("0000000000000001", 1, [10, 20])])) == "merged"
    resumed = ReportMerger()
    resumed.restore(merger.snapshot())  # a master restarted mid-interval keeps the breakdown
    assert resumed.add(slave_report("s2", 1, [("0000000000000001", 0, [5, 500]), ("0000000000000002", 0, [3])]))
    report = drain(resumed)
    by_key = {t["key"]: t["slaves"] for t in report["templates"]}
    assert by_key["0000000000000001"] == {
        "s1": {"count": 2, "latency_us_sum": 30, "errors": 1},
        "s2": {"count": 2, "latency_us_sum": 505, "errors": 0},
    }
    assert by_key["0000000000000002"] == {"s2": {"count": 1, "latency_us_sum": 3, "errors": 0}}
    assert drain(resumed)["templates"] == []  # the next interval starts empty


def with_logins(
    report: dict[str, Any], *entries: tuple[str, str, int, dict[str, int], dict[str, int]]
) -> dict[str, Any]:
    report["logins"] = [
        {
            "server": "10.0.0.1:3306",
            "user": user,
            "client": client,
            "count": count,
            "errors": errors,
            "session_errors": session,
            "first_seen_ns": report["interval"]["start_ns"] + 1,
            "last_seen_ns": report["interval"]["end_ns"] - 1,
        }
        for user, client, count, errors, session in entries
    ]
    return report


def test_login_entries_add_across_slaves_and_survive_a_restore() -> None:
    merger = ReportMerger()
    a = with_logins(
        slave_report("s1", 1, []), ("app", "10.0.0.7", 3, {"1045": 2}, {}), ("", "10.0.0.9", 1, {"1040": 1}, {})
    )
    b = with_logins(slave_report("s2", 1, []), ("app", "10.0.0.7", 2, {"1045": 1}, {"1927": 1}))
    assert merger.add(a) == "merged" and merger.add(b) == "merged" and merger.add(a) == "duplicate"
    restored = ReportMerger()
    restored.restore(merger.snapshot())
    for source in (merger, restored):
        logins = {(e["user"], e["client"]): e for e in drain(source)["logins"]}
        app = logins[("app", "10.0.0.7")]
        assert (app["count"], app["errors"], app["session_errors"]) == (5, {"1045": 3}, {"1927": 1})
        assert logins[("", "10.0.0.9")]["errors"] == {"1040": 1}
        assert (app["first_seen_ns"], app["last_seen_ns"]) == (11, 19)


def with_incarnation(report: dict[str, Any], incarnation: str) -> dict[str, Any]:
    return {**report, "incarnation": incarnation}


def test_a_slave_without_its_state_is_a_new_incarnation_merged_not_dropped() -> None:
    merger = ReportMerger()
    for seq in range(1, 6):
        assert merger.add(with_incarnation(slave_report("s", seq, [("k", 0, [10])]), "old")) == "merged"
    # Restarted without state: seq 1 again, under a new incarnation.
    assert merger.add(with_incarnation(slave_report("s", 1, [("k", 0, [10])]), "new")) == "merged"
    assert merger.add(with_incarnation(slave_report("s", 2, [("k", 0, [10])]), "new")) == "merged"
    assert merger.add(with_incarnation(slave_report("s", 2, [("k", 0, [10])]), "new")) == "duplicate"
    # A late replay of the old incarnation is merged once, and only once.
    assert merger.add(with_incarnation(slave_report("s", 6, [("k", 0, [10])]), "old")) == "merged"
    assert merger.add(with_incarnation(slave_report("s", 3, [("k", 0, [10])]), "old")) == "duplicate"
    assert merger.restarts_without_state == 1
    report = drain(merger, ["s"])
    entry = report["slaves"][0]
    assert entry["incarnation"] == "new" and entry["restarted_without_state"] == ["new"]
    # Each seq is listed under its own incarnation (what a standby learns from, see below).
    assert entry["seqs"] == [1, 2] and entry["earlier_seqs"] == {"old": [1, 2, 3, 4, 5, 6]}
    assert report["restarts_without_state"] == 1 and report["templates"][0]["count"] == 8
    # A checkpoint keeps the incarnations: after a master restart nothing is merged twice.
    restored = ReportMerger()
    restored.restore(merger.snapshot())
    assert restored.add(with_incarnation(slave_report("s", 2, [("k", 0, [10])]), "new")) == "duplicate"
    assert restored.add(with_incarnation(slave_report("s", 5, [("k", 0, [10])]), "old")) == "duplicate"
    assert restored.add(with_incarnation(slave_report("s", 3, [("k", 0, [10])]), "new")) == "merged"
    assert restored.restarts_without_state == 1
    assert merger.add(with_incarnation(slave_report("s", 1, [("k", 0, [10])]), 5)) == "rejected"  # type: ignore[arg-type]


def report_of(seq: int, incarnation: str = "i1", node: str = "s") -> dict[str, Any]:
    return with_incarnation(slave_report(node, seq, [("k", 0, [10])]), incarnation)


def test_a_successor_drops_and_counts_what_its_predecessor_published() -> None:
    """A standby learns from the leader's feed; taking over, it drops (and the master
    acknowledges) what the leader published, and merges the rest once."""
    leader = ReportMerger()
    for seq in (1, 2, 3):
        assert leader.add(report_of(seq)) == "merged"
    published = drain(leader, ["s"])
    entry = published["slaves"][0]
    standby = ReportMerger()
    standby.learn_published("s", entry["incarnation"], entry["seqs"])
    assert standby.add(report_of(4)) == "merged"  # its own, earlier term: not published
    successor = standby.successor()
    # The dead leader never acknowledged 1-3: the slave offers them again, with 4 and 5.
    outcomes = [successor.add(report_of(seq)) for seq in (1, 2, 3, 4, 5)]
    assert outcomes == ["duplicate"] * 3 + ["merged"] * 2
    assert successor.duplicates == 3 and successor.duplicates_published_by_predecessor == 3
    assert successor.add(report_of(5)) == "duplicate"  # its own duplicate: another cause
    assert successor.duplicates == 4 and successor.duplicates_published_by_predecessor == 3
    report = drain(successor, ["s"])
    assert report["slaves"][0]["seqs"] == [4, 5] and report["missing"] == []  # no gap after 3
    assert report["templates"][0]["count"] == 2
    assert report["duplicates_published_by_predecessor"] == 3 and successor.predecessor_seqs == 3
    # The marks survive a checkpoint of the new term, and the term after.
    restored = ReportMerger()
    restored.restore(json.loads(json.dumps(successor.snapshot())))
    assert restored.duplicates_published_by_predecessor == 3
    assert restored.add(report_of(2)) == "duplicate" and restored.duplicates_published_by_predecessor == 4
    assert restored.successor().add(report_of(3)) == "duplicate"


def test_what_a_standby_learns_follows_the_slaves_incarnations() -> None:
    standby = ReportMerger()
    standby.learn_published("s", "i1", [1, 2, 3])
    standby.learn_published("s", "i2", [1])  # the slave restarted without its state
    standby.learn_published("s", "i1", [4], current=False)  # a late one of the old life
    standby.learn_published("s", "i0", [9], current=False)  # an older life, seen late
    assert standby.restarts_without_state == 0  # the leader counted and showed that restart
    successor = standby.successor()
    assert [successor.add(report_of(seq, "i1")) for seq in (1, 4, 5)] == ["duplicate", "duplicate", "merged"]
    assert [successor.add(report_of(seq, "i2")) for seq in (1, 2)] == ["duplicate", "merged"]
    assert successor.add(report_of(9, "i0")) == "duplicate"
    assert successor.duplicates_published_by_predecessor == 4 and successor.restarts_without_state == 0
    report = drain(successor, ["s"])
    assert report["slaves"][0]["seqs"] == [2] and report["slaves"][0]["earlier_seqs"] == {"i1": [5]}


def test_what_a_standby_learns_is_bounded_and_counted() -> None:
    standby = ReportMerger(seen_window=4)
    standby.learn_published("s", "i1", list(range(1, 11)))
    assert standby.predecessor_seqs == 10 and standby.predecessor_seqs_forgotten == 6
    successor = standby.successor()
    assert successor.predecessor_seqs_forgotten == 6
    # Forgotten, but older than the window: still taken for duplicates (not by this cause).
    assert successor.add(report_of(2)) == "duplicate" and successor.duplicates_published_by_predecessor == 0
    assert successor.add(report_of(9)) == "duplicate" and successor.duplicates_published_by_predecessor == 1
    assert successor.add(report_of(11)) == "merged"
