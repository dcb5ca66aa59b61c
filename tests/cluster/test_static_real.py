"""Static mode with real processes: a master, two slaves next to two MariaDB servers."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import workload
from tests.support.mariadb import MariaDB, free_port
from tests.support.nodes import Collector, Node

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))

TOKEN = {"X-Mysqlprobe-Token": "t0k"}


@pytest.fixture(scope="module")
def servers() -> Iterator[list[MariaDB]]:
    pair = [MariaDB(), MariaDB()]
    try:
        for server in pair:
            server.start()
            workload.prepare_schema(server)
        yield pair
    finally:
        for server in pair:
            server.destroy()


def slave(tmp_path: Path, server: MariaDB, name: str) -> Node:
    return Node(tmp_path, {"interval": 1, "probe": {"device": "lo", "port": server.port, "workers": 1}}, name)


def counts_by_server(reports: list[dict[str, Any]]) -> dict[str, dict[str, list[int]]]:
    out: dict[str, dict[str, list[int]]] = {}
    for report in reports:
        for entry in report["templates"]:
            queries = entry["commands"].get("Query", 0)
            if entry["db"] == workload.DB and queries:
                slot = out.setdefault(entry["server"], {}).setdefault(entry["key"], [0, 0])
                slot[0] += queries
                slot[1] += sum(entry["errors"].values())
    return out


def test_static_master_merges_two_slaves(servers: list[MariaDB], tmp_path: Path) -> None:
    slaves = [slave(tmp_path, servers[0], "s1").start(), slave(tmp_path, servers[1], "s2").start()]
    master = Node(tmp_path, {"slave": False, "interval": 1, "token": "t0k"}, "m1").start()
    accounts = [workload.Accounting(server) for server in servers]
    try:
        # The endpoints: token, validation, methods.
        assert master.request(f"/cluster/join?addr=127.0.0.1:{slaves[0].port}")[0] == 401
        status, body = master.request(f"/cluster/join?addr=127.0.0.1:{slaves[0].port}", headers=TOKEN)
        assert status == 200 and body["new"]
        status, body = master.request(
            "/cluster/join",
            method="POST",
            data=f"addr=localhost:{slaves[1].port}".encode(),
            headers={**TOKEN, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200 and body["joined"] == f"localhost:{slaves[1].port}"
        for bad, reason in [
            ("", "addr: expected"),
            ("10.0.0.1", "HOST:PORT"),
            ("::1:80", "brackets"),
            ("h:99999", "port"),
        ]:
            status, body = master.request(f"/cluster/join?addr={bad}", headers=TOKEN)
            assert status == 400 and reason in body["error"], (bad, body)
        assert master.request("/cluster/remove?addr=10.9.9.9:1", headers=TOKEN)[0] == 404
        assert master.request("/cluster/join?addr=x:1", method="DELETE", headers=TOKEN)[0] == 405
        # An unreachable member neither hangs the endpoint nor the node.
        unreachable = f"[::1]:{free_port()}"
        started = time.monotonic()
        assert master.request(f"/cluster/join?addr={unreachable}", headers=TOKEN)[0] == 200
        assert time.monotonic() - started < 2
        nodes = master.get("/cluster/listnodes")
        assert [n["role"] for n in nodes] == ["master", "slave", "slave", "slave"]
        assert {"name", "address", "role", "state", "server_port", "last_report"} <= set(nodes[1])

        collector = Collector(f"ws://127.0.0.1:{master.port}/collector?token=t0k")
        collector.wait_for(
            lambda c: any(len([s for s in r["slaves"] if s["state"] == "reporting"]) == 2 for r in c.reports)
        )
        for account in accounts:
            account.reset()
        seen = len(collector.reports)
        for server in servers:
            workload.text_workload(server, rounds=6)
        time.sleep(2.5)
        expected = {
            f"127.0.0.1:{s.port}": a.expectations(schema=workload.DB) for s, a in zip(servers, accounts, strict=True)
        }
        collector.wait_for(lambda c: len(c.reports) >= seen + 4)
        merged = counts_by_server(collector.reports[seen:])
        assert merged == expected
        assert all(r["role"] == "master" and r["node"] == "m1" for r in collector.reports)
        down = [m for r in collector.reports for m in r["missing"] if m["node"] == unreachable]
        assert down  # the unreachable member is marked, not silently absent
        collector.close()

        # A restart keeps the member list.
        master.stop()
        master.start()
        assert len([n for n in master.get("/cluster/listnodes") if n["role"] == "slave"]) == 3
        status, body = master.request(f"/cluster/remove?addr={unreachable}", headers=TOKEN)
        assert status == 200 and unreachable not in body["slaves"]
        status, body = master.request("/cluster/leave", headers=TOKEN)
        assert status == 200 and len(body["forgot"]) == 2
        assert [n["role"] for n in master.get("/cluster/listnodes")] == ["master"]
    finally:
        for account in accounts:
            account.close()
        master.stop()
        for node in slaves:
            node.stop()


def test_master_redials_slaves_and_marks_their_absence(servers: list[MariaDB], tmp_path: Path) -> None:
    late = slave(tmp_path, servers[0], "late")  # not started: the first dial fails
    master = Node(tmp_path, {"slave": False, "interval": 1}, "m2").start()
    try:
        assert master.request(f"/cluster/join?addr=127.0.0.1:{late.port}")[0] == 200
        collector = Collector(f"ws://127.0.0.1:{master.port}/collector")
        collector.wait_for(lambda c: len(c.reports) >= 2)
        assert all(r["missing"] and r["missing"][0]["node"] == f"127.0.0.1:{late.port}" for r in collector.reports)
        late.start()
        collector.wait_for(
            lambda c: any(s["state"] == "reporting" and s["seqs"] for r in c.reports for s in r["slaves"])
        )
        late.stop(signal.SIGKILL)
        gone = len(collector.reports)
        collector.wait_for(lambda c: len(c.reports) >= gone + 2)
        assert any(
            m["node"] in ("late", f"127.0.0.1:{late.port}") for r in collector.reports[gone:] for m in r["missing"]
        )
        late.start()
        back = len(collector.reports)
        collector.wait_for(lambda c: any(s["seqs"] for r in c.reports[back:] for s in r["slaves"]), timeout=30)
        link = master.get("/status")["subscriptions"][0]
        assert link["dials"] >= 3 and link["state"] == "connected"
        collector.close()
    finally:
        master.stop()
        late.stop()
