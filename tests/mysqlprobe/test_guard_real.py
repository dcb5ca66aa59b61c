"""Connection floods against a real node process: slowloris requests and idle connections
are timed out, connections beyond the bound shed the idle ones, the descriptor soft limit is
raised at start, and the node keeps answering /status and keeps its /collector subscribers."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time
from pathlib import Path

from mysqlprobe.guard import DESCRIPTOR_RESERVE
from tests.cluster.test_gossip_full_disk_real import Watch
from tests.support.mariadb import free_port
from tests.support.nodes import Collector, Node, gossip_configs

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def test_slowloris_requests_are_timed_out_and_the_node_keeps_serving(tmp_path: Path) -> None:
    node = Node(tmp_path, {"slave": False, "interval": 1, "http": {"idletimeouts": 3}}, "slowloris").start()
    sockets: list[socket.socket] = []
    trickled: list[socket.socket] = []
    try:
        subscriber = Collector(f"ws://127.0.0.1:{node.port}/collector")
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", node.port))
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            sockets.append(sock)
        # Bodies trickled in a byte at a time: their request is in a handler, so the body
        # read has its own deadline (10 s) and they get a 408.
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", node.port))
            sock.sendall(
                b"POST /config/update HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 1000\r\n\r\nreport_period_ms="
            )
            trickled.append(sock)
        started = time.monotonic()
        answered = []
        while time.monotonic() - started < 11:
            for sock in sockets + trickled:  # a header line or a body byte now and then: never complete
                with contextlib.suppress(OSError):
                    sock.send(b"X-Slow: 1\r\n" if sock in sockets else b"1")
            before = time.monotonic()
            assert node.get("/status", timeout=5)["role"] == "master"
            answered.append(time.monotonic() - before)
            time.sleep(0.5)
        assert max(answered) < 5.0, answered  # served all along (not a latency benchmark)
        assert sum(closed_by_peer(s) for s in sockets) == 300
        for sock in trickled:
            sock.setblocking(True)
            sock.settimeout(5)
            assert sock.recv(100).startswith(b"HTTP/1.1 408"), "a trickled body was not timed out"
            sock.close()
        status = node.get("/status")["connections"]
        assert status["timed_out"] >= 300 and status["open"] < 10, status
        count = len(subscriber.reports)
        subscriber.wait_for(lambda c: len(c.reports) >= count + 2, timeout=15)  # still subscribed
        subscriber.close()
    finally:
        for sock in sockets + trickled:
            sock.close()
        node.stop()


def test_idle_connections_beyond_the_descriptor_limit(tmp_path: Path) -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))  # soft 256; the node raises it to 1024

    node = Node(tmp_path, {"slave": False, "interval": 1}, "idle").start(preexec_fn=low_limit)
    sockets: list[socket.socket] = []
    try:
        status = node.get("/status")["connections"]
        assert status["descriptor_limit"] == {"soft": 1024, "hard": 1024}
        assert status["max"] == 1024 - DESCRIPTOR_RESERVE
        subscribers = [Collector(f"ws://127.0.0.1:{node.port}/collector") for _ in range(3)]
        for _ in range(1100):
            sockets.append(socket.create_connection(("127.0.0.1", node.port)))
        time.sleep(1.0)
        for _ in range(5):
            assert node.get("/status", timeout=5)["role"] == "master"
        status = node.get("/status")["connections"]
        # Beyond the bound each new connection sheds the idlest (or the sweeper got there first).
        assert status["shed"] + status["timed_out"] >= 1100 - status["max"], status
        assert status["open"] <= status["max"], status
        for subscriber in subscribers:
            count = len(subscriber.reports)
            subscriber.wait_for(lambda c, n=count: len(c.reports) >= n + 2, timeout=15)
            subscriber.close()
        assert node.proc is not None and node.proc.poll() is None
        assert node.get("/status")["collector"]["subscribers_dropped"] == 0
    finally:
        for sock in sockets:
            sock.close()
        node.stop()


def test_descriptor_flood_on_a_gossip_master_and_its_raft_port(tmp_path: Path) -> None:
    """Gossip mode adds a serf agent's RPC connection and pysyncobj's Raft sockets, which
    need descriptors too: 1,100 idle connections to the master's HTTP port, then as many as
    its Raft port takes in 20 s, under a 1,024 limit, must leave one master (the same or a
    successor at a higher epoch), every node alive, gossip answering and the slave's reports
    acknowledged (``Watch`` checks, at every sample, all alive and one master per epoch)."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))

    configs = gossip_configs(["m1", "m2", "s1"], ["m1", "m2", "s1"], interval=1, lockttlms=3000)
    configs["s1"]["probe"] = {"device": "lo", "port": free_port(), "workers": 1}
    nodes: dict[str, Node] = {}
    sockets: list[socket.socket] = []

    watch = Watch(nodes)

    def wait_one_master(timeout: float) -> tuple[int, str]:
        watch.until(lambda _: len(watch.masters()) == 1, timeout, "one master")
        (name,) = watch.masters()
        return int(watch.status[name]["epoch"]), name

    def leader_cpu() -> float:
        proc = nodes[leader].proc
        assert proc is not None
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def acks() -> int:
        return int(nodes["s1"].get("/status")["collector"]["acks"])

    try:
        for name, config in configs.items():
            nodes[name] = Node(tmp_path, config, name).start(preexec_fn=low_limit if name != "s1" else None)
        epoch, leader = wait_one_master(90)
        for port in (nodes[leader].port, configs[leader]["cluster"]["raftport"]):
            opened, flood_end = 0, time.monotonic() + 20
            while opened < 1100 and time.monotonic() < flood_end:
                try:
                    sockets.append(socket.create_connection(("127.0.0.1", port), timeout=0.3))
                    opened += 1
                except OSError:  # a full accept backlog drops the SYN: try again
                    pass
            # HTTP: all 1,100 (the guard sheds the idlest); Raft: pysyncobj accepts slowly,
            # ~450 in 20 s here, each one a descriptor held by the leader.
            assert opened >= 300, opened
            cpu = leader_cpu()
            time.sleep(3)
            assert leader_cpu() - cpu < 1.5, "the leader spins on a failing accept()"
            before = acks()
            time.sleep(4)
            after_epoch, after_leader = wait_one_master(30)
            assert after_epoch >= epoch
            epoch = after_epoch
            assert {e["name"] for e in nodes[after_leader].get("/cluster/listnodes")} == {"m1", "m2", "s1"}
            deadline = time.monotonic() + 30
            while acks() <= before:  # the slave's reports are still merged and acknowledged
                assert time.monotonic() < deadline, "no acknowledgement during the flood"
                time.sleep(0.5)
        for sock in sockets:
            sock.close()
        sockets.clear()
        watch.sample()
        assert len(watch.masters()) == 1
    finally:
        for sock in sockets:
            sock.close()
        for node in nodes.values():
            node.stop()
