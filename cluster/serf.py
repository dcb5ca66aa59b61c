"""Gossip membership through HashiCorp Serf, run as a managed child process.

Owns the node's Serf agent: started with the node's tags (group, role, epoch, serving
port, raft address), joined to the seed list (retrying until one answers), queried for the
member list (``serf members -format=json``), updated when the role or epoch changes
(``serf tags``), told to leave on a graceful stop, and restarted if it dies. Serf does the
gossip and the failure detection (SWIM, ``lan`` profile: a kill -9'd member is marked
failed in about 5 s); it elects nothing: see ``cluster.election``.

The agent never outlives its node: on Linux it gets SIGTERM when the node dies (even by
kill -9), and a node that starts finds the agent a previous run left behind (by the pid
file in its state directory) and stops it first. An orphaned agent kept gossiping a dead
node as alive with its last tags (a killed master's role and epoch); the restarted node's
own agent could not bind its port, and its tag updates went to the orphan.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("mysqlprobe.cluster")
SERF = shutil.which("serf") or "/usr/bin/serf"


class SerfError(RuntimeError):
    pass


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask the kernel to SIGTERM this child when the process that forked it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _agent_argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _stop_pid(pid: int, timeout: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Member:
    name: str
    host: str
    gossip_port: int
    status: str  # alive, failed, left, leaving
    tags: dict[str, str]

    @property
    def role(self) -> str:
        return self.tags.get("role", "?")

    @property
    def server_port(self) -> int | None:
        port = self.tags.get("port")
        return int(port) if port and port.isdigit() else None

    @property
    def http_address(self) -> str | None:
        if self.server_port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.server_port}"

    @property
    def epoch(self) -> int:
        epoch = self.tags.get("epoch", "0")
        return int(epoch) if epoch.lstrip("-").isdigit() else 0


def parse_members(text: str) -> list[Member]:
    data = json.loads(text)
    members = []
    for entry in data.get("members", []):
        addr = str(entry.get("addr", ""))
        host, _, port = addr.rpartition(":")
        members.append(
            Member(
                name=str(entry.get("name", "")),
                host=host.strip("[]"),
                gossip_port=int(port) if port.isdigit() else int(entry.get("port", 0)),
                status=str(entry.get("status", "")),
                tags={str(k): str(v) for k, v in dict(entry.get("tags", {})).items()},
            )
        )
    return members


class SerfAgent:
    def __init__(
        self,
        *,
        node: str,
        bind: str,
        port: int,
        rpc_port: int,
        seeds: list[str],
        tags: dict[str, str],
        state_dir: Path,
        profile: str = "lan",
    ) -> None:
        self.node = node
        self.bind = bind
        self.port = port
        self.rpc = f"127.0.0.1:{rpc_port}"
        self.seeds = seeds
        self.tags = dict(tags)
        self.state_dir = state_dir
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.snapshot = True  # False while the state directory cannot be written

    def _bind_address(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"{host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "serf.pid"

    def _snapshot_arg(self) -> str:
        return f"-snapshot={self.state_dir / 'serf.snapshot'}"

    def stop_leftover(self) -> bool:
        """Stop the agent a previous run of this node left running (its node was killed
        before it could stop it). Returns whether there was one."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return False
        argv = _agent_argv(pid)
        # The pid may have been reused: only an agent of this node, with this state, is ours.
        if pid == os.getpid() or "agent" not in argv or self._snapshot_arg() not in argv:
            return False
        log.warning("stopping serf agent %d left behind by an earlier run of %s", pid, self.node)
        _stop_pid(pid)
        return True

    def start(self) -> None:
        with contextlib.suppress(OSError):
            self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.proc is None:
            self.stop_leftover()
        # serf exits when it cannot open its snapshot: on a state directory that refuses
        # writes (read-only) it runs without one, and gets it back at its next start.
        writable = os.access(self.state_dir, os.W_OK)
        if writable != self.snapshot:
            self.snapshot = writable
            if not writable:
                log.warning("%s is not writable: serf runs without its snapshot", self.state_dir)
        argv = [
            SERF,
            "agent",
            f"-node={self.node}",
            f"-bind={self._bind_address()}",
            f"-rpc-addr={self.rpc}",
            f"-profile={self.profile}",
            *([self._snapshot_arg(), "-rejoin"] if writable else []),
            "-retry-interval=2s",
            "-log-level=warn",
        ]
        for key, value in self.tags.items():
            argv.append(f"-tag={key}={value}")
        for seed in self.seeds:
            argv.append(f"-retry-join={seed}")
        try:
            log_file = open(self.state_dir / "serf.log", "ab")  # noqa: SIM115 - owned by the child
        except OSError:  # a state directory that refuses writes must not stop gossip
            log_file = open(os.devnull, "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as exc:
            raise SerfError(f"cannot start serf ({SERF}): {exc.strerror or exc}") from None
        finally:
            log_file.close()
        with contextlib.suppress(OSError):
            self.pid_file.write_text(f"{self.proc.pid}\n")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_running(self) -> bool:
        """Restart the agent if it died; returns whether it had to."""
        if self.alive():
            return False
        log.warning("serf agent exited (%s); restarting", self.proc.returncode if self.proc else None)
        self.restarts += 1
        self.start()
        return True

    def _cli(self, command: str, *args: str, timeout: float = 5.0) -> str:
        # The serf CLI stops reading flags at the first positional argument (``join ADDR``):
        # the RPC address goes right after the subcommand.
        try:
            result = subprocess.run(
                [SERF, command, f"-rpc-addr={self.rpc}", *args], capture_output=True, text=True, timeout=timeout
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SerfError(f"serf {command}: {exc}") from None
        if result.returncode != 0:
            raise SerfError(f"serf {command}: {(result.stderr or result.stdout).strip()}")
        return result.stdout

    def members(self) -> list[Member]:
        return parse_members(self._cli("members", "-format=json"))

    def set_tags(self, **tags: str) -> None:
        changed = {k: v for k, v in tags.items() if self.tags.get(k) != v}
        if not changed:
            return
        self._cli("tags", *[f"-set={k}={v}" for k, v in changed.items()])
        self.tags.update(changed)  # only once the agent has them: a failed call is retried

    def join(self, address: str) -> None:
        self._cli("join", address, timeout=10.0)

    def leave(self) -> None:
        self._cli("leave", timeout=15.0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.pid_file.unlink()

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "alive": self.alive(),
            "restarts": self.restarts,
            "rpc": self.rpc,
            "snapshot": self.snapshot,
        }
