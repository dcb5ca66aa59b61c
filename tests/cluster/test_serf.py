"""The serf agent wrapper (cluster/serf.py) with real serf agents on loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.serf import SerfAgent, SerfError
from tests.support.mariadb import free_port

ROOT = Path(__file__).resolve().parents[2]


def make_agent(state: Path, name: str = "n", tags: dict[str, str] | None = None, **ports: int) -> SerfAgent:
    """An agent on loopback with its own ports (never serf's default RPC port 7373)."""
    return SerfAgent(
        node=name,
        bind="127.0.0.1",
        port=ports.get("port") or free_port(),
        rpc_port=ports.get("rpc_port") or free_port(),
        seeds=[],
        tags=tags if tags is not None else {"role": "slave"},
        state_dir=state / name,
    )


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[tuple[SerfAgent, SerfAgent]]:
    pair = tuple(make_agent(tmp_path, name) for name in ("one", "two"))
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


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has exited
    except OSError:
        return False


def test_the_agent_dies_with_its_node_even_by_kill_9(tmp_path: Path) -> None:
    """A node killed -9 must not leave its agent gossiping it as alive with its old tags."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from cluster.serf import SerfAgent\n"
        f"a = SerfAgent(node='n', bind='127.0.0.1', port={free_port()}, rpc_port={free_port()}, seeds=[],"
        f" tags={{'role': 'master', 'epoch': '1'}}, state_dir=Path({str(tmp_path / 'n')!r}))\n"
        "a.start()\n"
        "print(a.proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    node = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert node.stdout is not None
        agent_pid = int(node.stdout.readline())
        assert _alive(agent_pid)
        node.send_signal(signal.SIGKILL)
        node.wait()
        deadline = time.monotonic() + 10
        while _alive(agent_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(agent_pid), "the serf agent outlived its node"
    finally:
        node.kill()
        node.wait()


def test_a_restarted_node_stops_the_agent_its_previous_run_left(tmp_path: Path) -> None:
    ports = {"port": free_port(), "rpc_port": free_port()}

    def make(role: str) -> SerfAgent:
        return make_agent(tmp_path, tags={"role": role}, **ports)

    old = make("master")
    old.start()
    assert old.proc is not None
    try:
        wait_for(lambda: bool(old.members()), what="the first agent")
        # The previous run is gone without stopping its agent (no prctl death signal
        # where the node's starting thread lives on, another OS, a stuck stop).
        new = make("standby")
        try:
            new.start()
            assert old.proc.wait(timeout=10) is not None
            wait_for(lambda: [m.tags.get("role") for m in new.members()] == ["standby"], what="the new agent")
            assert new.proc is not None and new.proc.poll() is None
        finally:
            new.stop()
        assert not (tmp_path / "n" / "serf.pid").exists()
    finally:
        old.stop()


def test_a_pid_file_naming_another_process_is_left_alone(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "n").mkdir()
        (tmp_path / "n" / "serf.pid").write_text(f"{other.pid}\n")
        agent = make_agent(tmp_path)
        assert agent.stop_leftover() is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_tags_the_agent_refused_are_sent_again(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, tags={"role": "standby"})
    # Not started: the CLI fails, and the change must not be recorded as applied.
    with pytest.raises(SerfError):
        agent.set_tags(role="master")
    assert agent.tags == {"role": "standby"}
    agent.start()
    try:
        wait_for(lambda: bool(agent.members()), what="the agent")
        agent.set_tags(role="master")
        assert [m.tags.get("role") for m in agent.members()] == ["master"]
    finally:
        agent.stop()
