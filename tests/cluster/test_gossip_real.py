"""Gossip mode with real processes: master, standby and two slaves on loopback; the master
killed (kill -9) and stalled (SIGSTOP) while a workload runs against real MariaDB servers."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.cluster.test_static_real import counts_by_server
from tests.support import workload
from tests.support.mariadb import MariaDB
from tests.support.nodes import Collector, Node, gossip_configs

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))


@dataclass
class Cluster:
    nodes: dict[str, Node]
    servers: list[MariaDB]

    def alive(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.proc is not None and n.proc.poll() is None]

    def leader(self, ask: str | None = None) -> tuple[str, int] | None:
        """The leading master as any live node (or ``ask``) sees it."""
        candidates = [self.nodes[ask]] if ask else self.alive()
        for node in candidates:
            try:
                entries = node.get("/cluster/listnodes", timeout=3)
            except OSError:
                continue
            for entry in entries:
                if entry.get("leader"):
                    return entry["name"], int(entry["epoch"])
        return None

    def wait_leader(
        self, not_name: str | None = None, timeout: float = 30.0, ask: str | None = None
    ) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader(ask)
            if leader is not None and leader[0] != not_name:
                return leader
            time.sleep(0.1)
        raise AssertionError(f"no leader other than {not_name} within {timeout} s")


def assert_agent_gone(node: Node, timeout: float = 10.0) -> None:
    """A node killed -9 takes its serf agent with it (an orphan gossiped it alive)."""
    pid = int((node.state / "serf" / "serf.pid").read_text())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1][0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the serf agent {pid} of {node.path.stem} outlived it")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("gossip")
    servers = [MariaDB(), MariaDB()]
    for server in servers:
        server.start()
        workload.prepare_schema(server)
    names = ["m1", "m2", "s1", "s2"]
    configs = gossip_configs(names, ["m1", "m2", "s1"], interval=1, lockttlms=3000)
    nodes: dict[str, Node] = {}
    for name, config in configs.items():
        if name.startswith("s"):
            server = servers[int(name[1]) - 1]
            config["probe"] = {"device": "lo", "port": server.port, "workers": 1}
        nodes[name] = Node(directory, config, name)
    try:
        for node in nodes.values():
            node.start()
        yield Cluster(nodes, servers)
    finally:
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None and node.proc.returncode is None:
                with contextlib.suppress(OSError):
                    os.kill(node.proc.pid, signal.SIGCONT)
            node.stop()
        for server in servers:
            server.destroy()


def merged_after(cluster: Cluster, leader: str) -> dict[str, dict[str, list[int]]]:
    """Run a workload on both servers and return what the leader merged of it."""
    accounts = [workload.Accounting(server) for server in cluster.servers]
    collector = Collector(f"ws://127.0.0.1:{cluster.nodes[leader].port}/collector")
    try:
        collector.wait_for(
            lambda c: any(sum(s["state"] == "reporting" for s in r["slaves"]) == 2 for r in c.reports), timeout=30
        )
        for account in accounts:
            account.reset()
        seen = len(collector.reports)
        for server in cluster.servers:
            workload.text_workload(server, rounds=4)
        time.sleep(2.5)
        expected = {
            f"127.0.0.1:{s.port}": a.expectations(schema=workload.DB)
            for s, a in zip(cluster.servers, accounts, strict=True)
        }
        collector.wait_for(lambda c: len(c.reports) >= seen + 3)
        assert expected == counts_by_server(collector.reports[seen:])
        return expected
    finally:
        collector.close()
        for account in accounts:
            account.close()


def test_failover_restart_and_stall(cluster: Cluster) -> None:
    first, epoch = cluster.wait_leader(timeout=60)
    assert first in ("m1", "m2")
    deadline = time.monotonic() + 30  # gossip converges: every node sees all four
    while time.monotonic() < deadline:
        roles = {e["name"]: e["role"] for e in cluster.nodes["s2"].get("/cluster/listnodes")}
        if len(roles) == 4 and "master" in roles.values():
            break
        time.sleep(0.3)
    assert roles == {"m1": roles["m1"], "m2": roles["m2"], "s1": "slave", "s2": "slave"}
    assert sorted([roles["m1"], roles["m2"]]) == ["master", "standby"]
    merged_after(cluster, first)

    # kill -9 the master: the standby takes over with a higher epoch.
    standby = "m2" if first == "m1" else "m1"
    killed_at = time.monotonic()
    cluster.nodes[first].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    cluster.nodes[first].proc.wait()  # type: ignore[union-attr]
    assert_agent_gone(cluster.nodes[first])
    second, epoch2 = cluster.wait_leader(not_name=first, timeout=10, ask="s2")
    failover_s = time.monotonic() - killed_at
    print(f"failover after kill -9: {failover_s:.2f} s (epoch {epoch} -> {epoch2})")
    assert second == standby and epoch2 > epoch and failover_s < 10
    merged_after(cluster, second)  # counts after takeover equal performance_schema's

    # The old master comes back as a standby.
    cluster.nodes[first].start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = cluster.nodes[first].get("/status")
        if status["role"] == "standby" and status["cluster"]["election"]["has_quorum"]:
            break
        time.sleep(0.3)
    assert status["role"] == "standby"
    assert cluster.wait_leader(timeout=5) == (second, epoch2)

    # A partition: the master stalls (SIGSTOP) for 12 s, the standby takes over; when the
    # stalled one resumes, its old epoch is refused and it steps down.
    stalled = cluster.nodes[second]
    os.kill(stalled.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
    stopped_at = time.monotonic()
    try:
        third, epoch3 = cluster.wait_leader(not_name=second, timeout=10, ask="s1")
        assert third == first and epoch3 > epoch2
        time.sleep(max(0.0, 12 - (time.monotonic() - stopped_at)))  # stalled 12 s in all
    finally:
        os.kill(stalled.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if stalled.get("/status")["role"] == "standby":
            break
        time.sleep(0.2)
    assert stalled.get("/status")["role"] == "standby"
    for slave in ("s1", "s2"):
        hub = cluster.nodes[slave].get("/status")["collector"]
        assert hub["max_epoch"] == epoch3
        assert all(m.endswith(f"@{epoch3}") for m in hub["masters"])
    # Every view converges on the new leader (the resumed node's member list is 12 s old
    # until its next round).
    deadline = time.monotonic() + 10
    views: dict[str, tuple[str, int] | None] = {}
    while time.monotonic() < deadline:
        views = {name: cluster.leader(name) for name in cluster.nodes}
        if set(views.values()) == {(third, epoch3)}:
            break
        time.sleep(0.2)
    assert set(views.values()) == {(third, epoch3)}, views
    merged_after(cluster, third)


def test_no_statement_is_lost_or_counted_twice_when_the_master_dies_mid_interval(cluster: Cluster) -> None:
    """The workload runs across a kill -9 of the master. Whatever the dead master merged of
    the interval under way (and had it acknowledged the reports, the slaves would have
    forgotten them) must reach the new master: published reports of both, each counted
    once, equal performance_schema's."""
    leader, _ = cluster.wait_leader(timeout=30)
    masters = [name for name in ("m1", "m2") if cluster.nodes[name].proc.poll() is None]  # type: ignore[union-attr]
    assert leader in masters and len(masters) == 2
    collectors = {name: Collector(f"ws://127.0.0.1:{cluster.nodes[name].port}/collector") for name in masters}
    accounts = [workload.Accounting(server) for server in cluster.servers]
    stop = threading.Event()

    def run(server: MariaDB) -> None:
        seed = 0
        while not stop.is_set():
            seed += 1
            workload.text_workload(server, rounds=1, seed=seed)
            time.sleep(0.05)

    try:
        collectors[leader].wait_for(
            lambda c: any(sum(s["state"] == "reporting" for s in r["slaves"]) == 2 for r in c.reports), timeout=30
        )
        for account in accounts:
            account.reset()
        threads = [threading.Thread(target=run, args=(server,), daemon=True) for server in cluster.servers]
        for thread in threads:
            thread.start()
        time.sleep(3.7)  # several merged, checkpointed intervals, and one under way
        cluster.nodes[leader].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        cluster.nodes[leader].proc.wait()  # type: ignore[union-attr]
        successor, _ = cluster.wait_leader(not_name=leader, timeout=15, ask="s1")
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        time.sleep(3.0)  # the last slave intervals close and reach the new master
        expected = {
            f"127.0.0.1:{s.port}": a.expectations(schema=workload.DB)
            for s, a in zip(cluster.servers, accounts, strict=True)
        }
        seen = len(collectors[successor].reports)
        collectors[successor].wait_for(lambda c: len(c.reports) >= seen + 2)
        published = [r for c in collectors.values() for r in c.reports]
        assert len({(r["node"], r["seq"]) for r in published}) == len(published)
        assert counts_by_server(published) == expected
    finally:
        stop.set()
        for collector in collectors.values():
            collector.close()
        for account in accounts:
            account.close()
