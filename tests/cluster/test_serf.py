"""The serf agent wrapper (cluster/serf.py) with real serf agents on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.serf import SerfAgent
from tests.support.mariadb import free_port


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[tuple[SerfAgent, SerfAgent]]:
    pair = tuple(
        SerfAgent(
            node=name,
            bind="127.0.0.1",
            port=free_port(),
            rpc_port=free_port(),  # never serf's default 7373
            seeds=[],
            tags={"role": "slave"},
            state_dir=tmp_path / name,
        )
        for name in ("one", "two")
    )
    try:
        for agent in pair:
            agent.start()
        for agent in pair:
            wait_for(lambda agent=agent: bool(agent.members()), what=f"{agent.node} answering on {agent.rpc}")
        yield pair[0], pair[1]
    finally:
        for agent in pair:
            agent.stop()


def wait_for(check: object, *, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as exc:  # the agent is still starting
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def test_join_uses_the_configured_rpc_port(agents: tuple[SerfAgent, SerfAgent]) -> None:
    """``/cluster/join`` ends in ``SerfAgent.join``: with a non-default cluster.rpcport the
    CLI must talk to this node's agent, not to 127.0.0.1:7373."""
    one, two = agents
    one.join(f"127.0.0.1:{two.port}")
    wait_for(lambda: {m.name for m in one.members() if m.status == "alive"} == {"one", "two"}, what="the join")
    assert {m.name for m in two.members()} == {"one", "two"}
    one.set_tags(role="master")
    wait_for(lambda: {m.name: m.tags.get("role") for m in two.members()}["one"] == "master", what="the tag")
