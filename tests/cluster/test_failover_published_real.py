"""Gossip failover in the window after a publish: the leader publishes an interval and dies
before its acknowledgements reach the slave. The slave offers those reports again to the
new leader, which must know (from the leader's feed it followed as a standby) that they
were published: it drops them, acknowledges them, and publishes each statement once.

Real processes (two masters, one slave), real MariaDB, real capture on lo. The leader dies
through the fault-injection switch ``MYSQLPROBE_FAULT_EXIT_AFTER_PUBLISH``: right after
its subscribers were sent a report holding slave reports, before it acknowledges them.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mysqlprobe.master import FAULT_EXIT_AFTER_PUBLISH, FAULT_EXIT_CODE
from tests.cluster.test_gossip_real import Cluster
from tests.cluster.test_resume_real import Background
from tests.support import workload
from tests.support.mariadb import MariaDB
from tests.support.nodes import Collector, Node, gossip_configs

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))


@pytest.fixture()
def server() -> Iterator[MariaDB]:
    yield from workload.schema_server()


def statements(report: dict[str, Any]) -> int:
    return sum(int(t["count"]) for t in report["templates"])


def wait(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def following(standby: Node) -> bool:
    feed = standby.get("/status").get("leader_feed") or {}
    return any(link["state"] == "connected" and link["reports"] for link in feed.get("links", ()))


def acknowledged(slave: Node, target: int) -> bool:
    """Whether the slave's spool holds no report up to seq ``target`` any more."""
    spool = slave.get("/status")["collector"]["spool"]
    return bool(spool["reports"] == 0 or (spool["oldest_seq"] is not None and spool["oldest_seq"] > target))


def test_reports_the_dead_leader_published_are_not_published_again(server: MariaDB, tmp_path: Path) -> None:
    trigger = tmp_path / "die-after-publish"
    configs = gossip_configs(["m1", "m2", "s1"], ["m1", "m2", "s1"], interval=1, lockttlms=3000)
    configs["s1"]["probe"] = {"device": "lo", "port": server.port, "workers": 1}
    nodes = {name: Node(tmp_path, config, name) for name, config in configs.items()}
    cluster = Cluster(nodes, [server])
    collectors: dict[str, Collector] = {}
    try:
        for name, node in nodes.items():
            node.start(env={FAULT_EXIT_AFTER_PUBLISH: str(trigger)} if name.startswith("m") else None)
        leader, epoch = cluster.wait_leader(timeout=60, ask="s1")
        standby = "m2" if leader == "m1" else "m1"
        collectors = {name: Collector(f"ws://127.0.0.1:{nodes[name].port}/collector") for name in nodes}
        collectors[leader].wait_for(
            lambda c: sum(1 for r in c.reports if any(s["node"] == "s1" and s["seqs"] for s in r["slaves"])) >= 2
        )
        # Slave reports published before the collectors subscribed are not looked at.
        first = 1 + max(seq for r in collectors[leader].reports for s in r["slaves"] for seq in s["seqs"])
        wait(lambda: following(nodes[standby]), "the standby follows the leader's feed")
        with Background(server):
            time.sleep(3.5)
            trigger.touch()
            code = nodes[leader].proc.wait(timeout=30)  # type: ignore[union-attr]
            assert code == FAULT_EXIT_CODE and not trigger.exists()
            successor, epoch2 = cluster.wait_leader(not_name=leader, timeout=20, ask="s1")
            assert successor == standby and epoch2 > epoch
            time.sleep(3.0)
        slave = nodes["s1"]
        target = int(slave.get("/status")["seq"]) + 1

        wait(lambda: acknowledged(slave, target), f"every report of s1 up to seq {target} acknowledged", timeout=60)
        wait(
            lambda: any(target in s["seqs"] for r in collectors[successor].reports for s in r["slaves"]),
            f"the successor published s1's seq {target}",
        )
        status = nodes[successor].get("/status")
        with urllib.request.urlopen(nodes[successor].url + "/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
    finally:
        for collector in collectors.values():
            collector.close()
        for node in nodes.values():
            node.stop()

    counted = {r["seq"]: statements(r) for r in collectors["s1"].reports if first <= r["seq"] <= target}
    assert set(counted) == set(range(first, target + 1))  # the slave collector saw every report
    assert sum(counted.values()) > 0
    # The dead leader's last report was sent to its subscribers and held slave reports.
    last = collectors[leader].reports[-1]
    died_with = [seq for s in last["slaves"] if s["node"] == "s1" for seq in s["seqs"]]
    assert died_with
    publications: dict[int, list[tuple[str, int]]] = {}
    for name in (leader, successor):
        published = {(r["incarnation"], r["seq"]): r for r in collectors[name].reports}
        for report in published.values():
            for entry in report["slaves"]:
                if entry["node"] != "s1":
                    continue
                for seq in entry["seqs"]:
                    publications.setdefault(seq, []).append((name, report["seq"]))
                known = [seq for seq in entry["seqs"] if seq in counted]
                if known and len(known) == len(entry["seqs"]):  # what the report says of s1 is what s1 counted
                    merged = sum(t["slaves"].get("s1", {}).get("count", 0) for t in report["templates"])
                    assert merged == sum(counted[seq] for seq in known), (name, report["seq"])
    twice = {seq: where for seq, where in publications.items() if seq in counted and len(where) > 1}
    assert twice == {}, f"published twice: {twice} (the dead leader's last report held {died_with})"
    assert {seq for seq in publications if seq in counted} == set(counted)  # and none lost
    merge = status["merge"]
    assert merge["duplicates_published_by_predecessor"] >= len(died_with)
    assert merge["duplicates"] >= merge["duplicates_published_by_predecessor"]
    name = "mysqlprobe_merge_duplicates_published_by_predecessor_total"
    exported = [line for line in metrics.splitlines() if line.startswith(name)]
    assert exported == [f"{name} {merge['duplicates_published_by_predecessor']:.1f}"]


def test_a_leader_restarted_alone_does_not_publish_its_last_report_twice(server: MariaDB, tmp_path: Path) -> None:
    """One master-capable node and a slave as the witness voter. The master publishes and
    dies before acknowledging; restarted, it wins the next epoch. No other master led in
    between, so its checkpointed last report is the only word on those slave reports: it
    publishes it again (same node, incarnation and seq: subscribers deduplicate) and drops
    and acknowledges the slave reports it held when the slave offers them again."""
    trigger = tmp_path / "die-after-publish"
    configs = gossip_configs(["m1", "s1"], ["m1", "s1"], interval=1, lockttlms=3000)
    configs["s1"]["probe"] = {"device": "lo", "port": server.port, "workers": 1}
    nodes = {name: Node(tmp_path, config, name) for name, config in configs.items()}
    cluster = Cluster(nodes, [server])
    before: Collector | None = None
    after: Collector | None = None
    slave_collector: Collector | None = None
    try:
        nodes["s1"].start()
        nodes["m1"].start(env={FAULT_EXIT_AFTER_PUBLISH: str(trigger)})
        _, epoch = cluster.wait_leader(timeout=60, ask="s1")
        before = Collector(f"ws://127.0.0.1:{nodes['m1'].port}/collector")
        slave_collector = Collector(f"ws://127.0.0.1:{nodes['s1'].port}/collector")
        before.wait_for(
            lambda c: sum(1 for r in c.reports if any(s["node"] == "s1" and s["seqs"] for s in r["slaves"])) >= 2
        )
        first = 1 + max(seq for r in before.reports for s in r["slaves"] for seq in s["seqs"])
        with Background(server):
            time.sleep(3.5)
            trigger.touch()
            code = nodes["m1"].proc.wait(timeout=30)  # type: ignore[union-attr]
            assert code == FAULT_EXIT_CODE and not trigger.exists()
            nodes["m1"].start()
            after = Collector(f"ws://127.0.0.1:{nodes['m1'].port}/collector")
            epoch2 = wait(
                lambda: (leader := cluster.leader("s1")) is not None and leader[1] > epoch and leader[1],
                "the restarted master leads a new epoch",
                timeout=60,
            )
            assert cluster.leader("s1") == ("m1", epoch + 1) and epoch2 == epoch + 1
            time.sleep(3.0)
        slave = nodes["s1"]
        target = int(slave.get("/status")["seq"]) + 1

        wait(lambda: acknowledged(slave, target), f"every report of s1 up to seq {target} acknowledged", timeout=60)
        wait(
            lambda: any(target in s["seqs"] for r in after.reports for s in r["slaves"]),  # type: ignore[union-attr]
            f"the restarted master published s1's seq {target}",
        )
        status = nodes["m1"].get("/status")
    finally:
        for collector in (before, after, slave_collector):
            if collector is not None:
                collector.close()
        for node in nodes.values():
            node.stop()

    assert before is not None and after is not None and slave_collector is not None
    counted = {r["seq"]: statements(r) for r in slave_collector.reports if first <= r["seq"] <= target}
    assert set(counted) == set(range(first, target + 1))
    assert sum(counted.values()) > 0
    died_with = [seq for s in before.reports[-1]["slaves"] if s["node"] == "s1" for seq in s["seqs"]]
    assert died_with
    # One publication is one report identity, whichever subscriber received it.
    reports = {(r["node"], r["incarnation"], r["seq"]): r for r in before.reports + after.reports}
    publications: dict[int, list[tuple[str, int]]] = {}
    for (_, incarnation, seq), report in reports.items():
        for entry in report["slaves"]:
            if entry["node"] == "s1":
                for slave_seq in entry["seqs"]:
                    publications.setdefault(slave_seq, []).append((incarnation, seq))
    twice = {seq: where for seq, where in publications.items() if seq in counted and len(where) > 1}
    assert twice == {}, f"published twice: {twice} (the master died with {died_with})"
    assert {seq for seq in publications if seq in counted} == set(counted)  # and none lost
    merged = sum(
        t["slaves"].get("s1", {}).get("count", 0)
        for r in reports.values()
        if any(e["node"] == "s1" and set(e["seqs"]) <= set(counted) and e["seqs"] for e in r["slaves"])
        for t in r["templates"]
    )
    assert merged == sum(counted.values())
    merge = status["merge"]
    assert merge["earlier_term_republished"] == 1
    assert merge["duplicates_published_by_predecessor"] >= len(died_with)
