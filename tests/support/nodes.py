"""Run mysqlprobe nodes as real subprocesses and talk to them like their users do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets
import yaml

from message import decode
from tests.support.mariadb import free_port

ROOT = Path(__file__).resolve().parents[2]


def gossip_configs(names: list[str], voters: list[str], *, interval: int, **cluster: Any) -> dict[str, dict[str, Any]]:
    """Configurations of a gossip group on loopback: free Serf, RPC and Raft ports for each
    node, ``voters`` (names) as the Raft voters, m1 and m2 (those present) as seeds; names starting with
    ``s`` are slaves (callers add their ``probe`` section). ``cluster`` adds keys such as
    ``lockttlms``."""
    ports = {n: {"serf": free_port(), "rpc": free_port(), "raft": free_port()} for n in names}
    raft_voters = [f"127.0.0.1:{ports[n]['raft']}" for n in voters]
    seeds = [f"127.0.0.1:{ports[n]['serf']}" for n in ("m1", "m2") if n in ports]
    return {
        name: {
            "interval": interval,
            "slave": name.startswith("s"),
            "cluster": {
                "gossip": True,
                "port": ports[name]["serf"],
                "rpcport": ports[name]["rpc"],
                "raftport": ports[name]["raft"],
                "voters": raft_voters,
                "seeds": seeds,
                **cluster,
            },
        }
        for name in names
    }


class Node:
    """``mysqlprobe run -c CONFIG`` in a subprocess, with its HTTP port."""

    def __init__(self, directory: Path, config: dict[str, Any], name: str = "node") -> None:
        self.directory = directory
        self.port = int(config.setdefault("serverport", free_port()))
        config.setdefault("node", f"{name}")
        self.config = config
        self.path = directory / f"{name}.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.log = directory / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state(self) -> Path:
        """The state directory (``statedir``, or the default next to the configuration)."""
        if self.config.get("statedir"):
            return Path(self.config["statedir"])
        return self.directory / f"{self.path.stem}.state"

    def start(
        self,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], Any] | None = None,
        ready: Callable[[], Any] | None = None,
        args: tuple[str, ...] = (),
    ) -> Node:
        """Start and wait until ``ready()`` (default: GET /status over plain http) succeeds."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mysqlprobe.cli", "run", "-c", str(self.path), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                preexec_fn=preexec_fn,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                (ready or (lambda: self.get("/status")))()
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"node did not serve in time: {self.log.read_text()[-3000:]}")

    def get(self, path: str, timeout: float = 10.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def request(
        self, path: str, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, method=method, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Collector:
    """A /collector subscriber in a background thread, keeping every decoded report."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reports: list[dict[str, Any]] = []
        self.other: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._ws: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"could not subscribe to {url}")

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        async with websockets.connect(self.url, max_size=None) as ws:
            self._ws = ws
            self._ready.set()
            try:
                async for message in ws:
                    data = decode(message) if isinstance(message, bytes) else json.loads(message)
                    (self.reports if data.get("kind") == "interval" else self.other).append(data)
            except websockets.ConnectionClosed:
                pass

    def send(self, text: str) -> None:
        asyncio.run_coroutine_threadsafe(self._ws.send(text), self._loop).result(10)

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.1)
        raise AssertionError(f"condition not met in {timeout} s; {len(self.reports)} reports")

    def close(self) -> None:
        if self._ws is not None and self._thread.is_alive():  # not when the peer closed it
            closing = asyncio.run_coroutine_threadsafe(self._ws.close(), self._loop)
            with contextlib.suppress(Exception):  # already closed by the peer
                closing.result(10)
        self._thread.join(10)
