"""Gossip mode on full disks, with real processes: the master's and then the standby's
state directory (Raft journal, serf snapshot, checkpoints) on a small tmpfs that fills up
and frees again. No node dies, there is never more than one master per epoch nor an epoch
that goes back, the failure is counted and visible in /status, logged once, and the nodes
come back when the space does."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.mysqlprobe.test_full_disk_real import fill, remount, tmpfs
from tests.support.mariadb import free_port
from tests.support.nodes import Node, gossip_configs
from tests.support.prom import parse, scrape, series

pytestmark = [pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="mounting a tmpfs and live capture need root"))


class Watch:
    """Polls every node's /status and checks, at every sample, what must always hold: all
    alive, one master per epoch at most, no epoch lower than one seen before."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes
        self.highest = 0
        self.status: dict[str, dict[str, Any]] = {}

    def sample(self) -> dict[str, dict[str, Any]]:
        for name, node in self.nodes.items():
            assert node.proc is not None and node.proc.poll() is None, (
                f"{name} died ({node.proc.returncode if node.proc else None}): {node.log.read_text()[-2000:]}"
            )
            self.status[name] = node.get("/status", timeout=5)
        masters = [(s["epoch"], name) for name, s in self.status.items() if s["role"] == "master"]
        epochs = [epoch for epoch, _ in masters]
        assert len(set(epochs)) == len(epochs), f"two masters at one epoch: {masters}"
        if masters:  # the leading epoch never goes back (a fenced, older master may linger)
            assert max(epochs) >= self.highest, (masters, self.highest)
        self.highest = max([self.highest, *epochs])
        return self.status

    def masters(self) -> list[str]:
        return [name for name, s in self.status.items() if s["role"] == "master"]

    def until(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sample()
            if predicate(self.status):
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}: {self.status_summary()}")

    def hold(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sample()
            time.sleep(0.3)

    def status_summary(self) -> dict[str, Any]:
        return {
            name: (s["role"], s["epoch"], s["state"]["degraded"], sorted(s["state"]["failing"]))
            for name, s in self.status.items()
        }


def raft_journal(status: dict[str, Any]) -> dict[str, Any]:
    journal: dict[str, Any] = status["cluster"]["election"]["journal"]
    return journal


def test_full_disks_on_master_and_standby_degrade_without_death_or_split_brain(tmp_path: Path) -> None:
    configs = gossip_configs(["m1", "m2", "s1"], ["m1", "m2", "s1"], interval=1, lockttlms=3000)
    configs["s1"]["probe"] = {"device": "lo", "port": free_port(), "workers": 1}
    nodes: dict[str, Node] = {}
    with contextlib.ExitStack() as mounts:
        for name in ("m1", "m2"):
            configs[name]["statedir"] = str(mounts.enter_context(tmpfs(tmp_path / f"{name}-state", size="2m")))
        try:
            for name, config in configs.items():
                nodes[name] = Node(tmp_path, config, name).start()
            watch = Watch(nodes)
            watch.until(lambda s: len(watch.masters()) == 1, 90, "a master")
            first = watch.masters()[0]
            other = "m2" if first == "m1" else "m1"
            epoch1 = watch.status[first]["epoch"]

            # 1. The master's disk fills: it stops acting as master (its Raft member cannot
            # persist a vote or an entry), the standby takes over with a higher epoch.
            fillers = [fill(nodes[first].state)]
            watch.until(
                lambda s: s[first]["role"] == "standby" and raft_journal(s[first])["write_errors"] > 0,
                30,
                "the full master to step down",
            )
            watch.until(lambda s: s[other]["role"] == "master" and s[other]["epoch"] > epoch1, 30, "a takeover")
            epoch2 = watch.status[other]["epoch"]
            full = watch.status[first]
            assert full["state"]["degraded"] and "raft.journal" in full["state"]["failing"], full["state"]
            assert "No space left" in full["state"]["failing"]["raft.journal"]
            assert raft_journal(full)["degraded"] and not raft_journal(full)["running"]
            assert series(parse(scrape(nodes[first])), "mysqlprobe_store_degraded", store="raft_journal") == 1
            watch.hold(5)  # stays that way: alive, not master, nobody at a stale epoch
            assert watch.masters() == [other]
            # Gossip still works on the full node (its serf snapshot cannot be written).
            assert {e["name"] for e in nodes[first].get("/cluster/listnodes")} == {"m1", "m2", "s1"}
            watch.until(lambda s: s["s1"]["collector"]["max_epoch"] == epoch2, 15, "the slave to follow")

            # 2. The new master's disk fills too: no voter majority can persist anything,
            # so there is no master at all rather than two.
            fillers.append(fill(nodes[other].state))
            watch.until(lambda s: not watch.masters(), 30, "no master")
            watch.hold(5)
            assert not watch.masters()
            assert all(raft_journal(watch.status[n])["degraded"] for n in ("m1", "m2"))

            # 3. Space returns: both rejoin, one master with an epoch above every earlier one.
            for filler in fillers:
                filler.unlink()
            watch.until(
                lambda s: all(not s[n]["state"]["degraded"] and raft_journal(s[n])["running"] for n in ("m1", "m2")),
                40,
                "recovery",
            )
            watch.until(lambda s: len(watch.masters()) == 1, 40, "a master again")
            leader = watch.masters()[0]
            epoch3 = watch.status[leader]["epoch"]
            assert epoch3 > epoch2 > epoch1
            watch.until(lambda s: s["s1"]["collector"]["max_epoch"] == epoch3, 15, "the slave to follow")
            for name in ("m1", "m2"):
                journal = raft_journal(watch.status[name])
                assert journal["recoveries"] >= 1 and not journal["degraded"], journal
                assert watch.status[name]["cluster"]["election"]["has_quorum"]
        finally:
            for node in nodes.values():
                node.stop()
    for name in ("m1", "m2"):
        text = nodes[name].log.read_text()
        assert "Traceback" not in text and "failed _onTick" not in text, text[-3000:]
        assert text.count("cannot write the raft journal") == 1, text[-3000:]  # once, not a flood
        assert text.count("raft journal writable again") == 1, text[-3000:]


def test_a_gossip_node_starts_on_a_read_only_state_dir_and_leads_once_it_is_writable(tmp_path: Path) -> None:
    config = gossip_configs(["m1", "m2"], ["m1"], interval=1, lockttlms=3000)["m1"]  # m1 votes alone
    with tmpfs(tmp_path / "m1-state") as directory:
        remount(directory, "ro")
        config["statedir"] = str(directory)
        node = Node(tmp_path, config, "m1").start()
        try:
            watch = Watch({"m1": node})
            watch.hold(3)
            status = watch.status["m1"]
            assert status["role"] == "standby" and status["state"]["degraded"]
            assert "Read-only" in status["state"]["failing"]["raft.journal"]
            assert not raft_journal(status)["running"] and raft_journal(status)["write_errors"] >= 1
            serf = status["cluster"]["serf"]
            assert serf["alive"] and not serf["snapshot"] and serf["restarts"] == 0  # gossip without a snapshot
            remount(directory, "rw")
            watch.until(lambda s: s["m1"]["role"] == "master", 30, "the node to lead")
            assert raft_journal(watch.status["m1"])["recoveries"] == 1 and not watch.status["m1"]["state"]["degraded"]
            assert (directory / "raft" / "raft.journal").exists()
        finally:
            node.stop()
    text = node.log.read_text()
    assert "Traceback" not in text and text.count("cannot write the raft journal") == 1, text[-3000:]
