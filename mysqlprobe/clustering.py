"""Cluster wiring of a node: membership (static or gossip), election, /cluster/* endpoints.

Owns what every node does for the cluster, whatever its role: in gossip mode it runs a Serf
agent with its role, epoch and serving port as tags and, when it is one of the voters, a
Raft member of the election; in static mode a master keeps a persisted slave list. It
answers /cluster/join, /cluster/remove, /cluster/leave and /cluster/listnodes. The
endpoints validate their input (400 with a reason), never block on the network for long,
and the state-changing ones need the token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from cluster.election import Election
from cluster.serf import Member, SerfAgent, SerfError
from cluster.static import AddressError, StaticMembers, normalize_address
from message.persist import StateWrites
from mysqlprobe.config import Config
from mysqlprobe.server import HTTPProblem, check_token, request_params

log = logging.getLogger("mysqlprobe.cluster")


class Clustering:
    """``role`` is "slave" or "master-capable"; ``on_members`` is told about slaves."""

    def __init__(
        self, config: Config, name: str, state: Path, *, master_capable: bool, writes: StateWrites | None = None
    ) -> None:
        self.config = config
        self.name = name
        self.state = state
        self.master_capable = master_capable
        self.gossip = config.cluster.gossip
        self.serf: SerfAgent | None = None
        self.election: Election | None = None
        self.static: StaticMembers | None = None
        self.members: list[Member] = []
        self.members_error: str | None = None
        self.role = "standby" if master_capable else "slave"
        self.epoch = 0
        self.on_change: Callable[[], None] | None = None
        self.last_reports: dict[str, float] = {}  # slave address -> last report time
        self.raft_addr = f"{config.cluster.bind}:{config.cluster.raftport}"
        self.writes = writes
        self._journal_errors_seen = 0
        if not self.gossip and master_capable:
            self.static = StaticMembers(state / "members.json", writes)
            self.role = "master"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        cluster = self.config.cluster
        if not self.gossip:
            return
        voters = cluster.voters
        votes = not voters or self.raft_addr in voters
        if self.master_capable and not votes:
            raise ValueError(f"cluster.voters: a master-capable node must vote, and {self.raft_addr} is not listed")
        if votes:
            self.election = Election(
                self.raft_addr,
                voters,
                node=self.name,
                candidate=self.master_capable,
                lock_ttl_s=cluster.lockttlms / 1000,
                state_dir=self.state / "raft",
            )
        self.serf = SerfAgent(
            node=self.name,
            bind=cluster.bind,
            port=cluster.port,
            rpc_port=cluster.rpcport,
            seeds=cluster.seeds,
            tags=self._tags(),
            state_dir=self.state / "serf",
        )
        self.serf.start()

    def _tags(self) -> dict[str, str]:
        return {
            "group": self.config.cluster.group,
            "role": self.role,
            "epoch": str(self.epoch),
            "port": str(self.config.serverport),
            "raft": self.raft_addr if self.election is not None else "",
        }

    def stop(self, *, leave: bool = True) -> None:
        if self.serf is not None:
            if leave:
                try:
                    self.serf.leave()
                except SerfError as exc:
                    log.warning("serf leave: %s", exc)
            self.serf.stop()
        if self.election is not None:
            self.election.close()

    def step(self) -> bool:
        """One round of election and membership (blocking: run it in a thread). Returns
        whether the role or epoch changed."""
        before = (self.role, self.epoch)
        if self.static is not None:
            self.static.flush()
        if self.election is not None:
            is_master, epoch = self.election.step()
            if self.master_capable:
                self.role = "master" if is_master else "standby"
                self.epoch = epoch
            self._journal_state(self.election)
        if self.serf is not None:
            self.serf.ensure_running()
            try:
                self.serf.set_tags(**self._tags())
                members = self.serf.members()
                group = self.config.cluster.group
                self.members = [m for m in members if m.tags.get("group", group) == group]
                self.members_error = None
            except SerfError as exc:
                self.members_error = str(exc)
        return (self.role, self.epoch) != before

    def _journal_state(self, election: Election) -> None:
        """The Raft journal's health in the node's state-write accounting (/status "state")."""
        if self.writes is None:
            return
        errors, error = election.journal_write_errors, election.journal_exception
        if error is not None and errors > self._journal_errors_seen:
            self.writes.failed("raft.journal", error)
        elif error is None:
            self.writes.recovered("raft.journal")
        self._journal_errors_seen = errors

    def step_down(self) -> None:
        if self.election is not None:
            self.election.step_down()
            self.role = "standby"

    def known_epoch(self) -> int:
        """The highest epoch this node knows of: its own, or the election's counter."""
        election = self.election
        return max(self.epoch, election.current_epoch() if election is not None else 0)

    def master_addresses(self) -> set[str]:
        """HTTP addresses of the other live masters (the leader a standby follows; gossip)."""
        return {
            m.http_address
            for m in self.members
            if m.role == "master" and m.status == "alive" and m.name != self.name and m.http_address
        }

    def slave_addresses(self) -> set[str]:
        """HTTP addresses of the slaves a master should subscribe to."""
        if self.static is not None:
            return set(self.static.slaves)
        return {m.http_address for m in self.members if m.role == "slave" and m.status == "alive" and m.http_address}

    # -- HTTP -----------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/cluster/join", self.join)
        app.router.add_route("*", "/cluster/remove", self.remove)
        app.router.add_route("*", "/cluster/leave", self.leave)
        app.router.add_get("/cluster/listnodes", self.listnodes)

    async def _address(self, request: web.Request) -> str:
        if request.method not in ("GET", "POST", "PUT"):
            raise HTTPProblem(405, f"{request.method} is not allowed here (allowed: GET, POST)")
        check_token(request, self.config.token)
        params = await request_params(request)
        addr = params.get("addr", "")
        if not addr:
            raise HTTPProblem(400, "addr: expected HOST:PORT, [IPv6]:PORT or NAME:PORT")
        try:
            return normalize_address(addr)
        except AddressError as exc:
            raise HTTPProblem(400, f"addr: {exc}") from None

    async def join(self, request: web.Request) -> web.Response:
        addr = await self._address(request)
        if self.static is not None:
            canonical, new = self.static.join(addr)
            self._changed()
            return web.json_response({"joined": canonical, "new": new, "slaves": self.static.slaves})
        if self.serf is None:
            raise HTTPProblem(400, "a slave in static mode has no member list: join it on its master")
        try:
            await asyncio.wait_for(asyncio.to_thread(self.serf.join, addr), 15)
        except (SerfError, TimeoutError) as exc:
            raise HTTPProblem(400, f"cannot join {addr}: {exc}") from None
        return web.json_response({"joined": addr})

    async def remove(self, request: web.Request) -> web.Response:
        addr = await self._address(request)
        if self.static is not None:
            canonical, removed = self.static.remove(addr)
            if not removed:
                raise HTTPProblem(404, f"{canonical} is not a member")
            self._changed()
            return web.json_response({"removed": canonical, "slaves": self.static.slaves})
        raise HTTPProblem(400, "in gossip mode a member is removed by stopping it or by /cluster/leave on it")

    async def leave(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "POST", "PUT"):
            raise HTTPProblem(405, f"{request.method} is not allowed here (allowed: GET, POST)")
        check_token(request, self.config.token)
        if self.static is not None:
            gone = self.static.leave()
            self._changed()
            return web.json_response({"left": True, "forgot": gone})
        if self.serf is not None:
            self.step_down()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.serf.leave), 20)
            except (SerfError, TimeoutError) as exc:
                raise HTTPProblem(400, f"cannot leave: {exc}") from None
            return web.json_response({"left": True})
        raise HTTPProblem(400, "a slave in static mode is not in a member list: remove it on its master")

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def listnodes(self, request: web.Request) -> web.Response:
        return web.json_response(self.nodes())

    def nodes(self, masters: list[str] | None = None) -> list[dict[str, Any]]:
        """One object per member, this node included."""
        http_self = f"{self.config.bind}:{self.config.serverport}"
        out: list[dict[str, Any]] = []
        if self.serf is not None:
            for m in self.members:
                entry: dict[str, Any] = {
                    "name": m.name,
                    "address": m.http_address,
                    "role": m.role,
                    "state": m.status,
                    "server_port": m.server_port,
                    "gossip_port": m.gossip_port,
                    "epoch": m.epoch,
                    "self": m.name == self.name,
                    "last_report": self.last_reports.get(m.http_address or ""),
                }
                if m.name == self.name:
                    entry["role"], entry["epoch"] = self.role, self.epoch
                out.append(entry)
            if not any(e["self"] for e in out):
                out.insert(0, self._self_entry(http_self))
            self._mark_leader(out)
            return out
        out.append(self._self_entry(http_self))
        if self.static is not None:
            for addr in self.static.slaves:
                last = self.last_reports.get(addr)
                out.append(
                    {
                        "name": addr,
                        "address": addr,
                        "role": "slave",
                        "state": "reporting"
                        if last and time.time() - last < 3 * self.config.interval + 5
                        else "silent",
                        "server_port": int(addr.rsplit(":", 1)[1]),
                        "self": False,
                        "last_report": last,
                    }
                )
        for master in masters or []:
            out.append({"name": master, "address": None, "role": "master", "state": "subscribed", "self": False})
        self._mark_leader(out)
        return out

    @staticmethod
    def _mark_leader(entries: list[dict[str, Any]]) -> None:
        """The live master with the highest epoch leads; a master with an older epoch (a
        dead one gossip has not noticed yet, or a stalled one back) is marked stale."""
        masters = [e for e in entries if e["role"] == "master" and e["state"] == "alive"]
        top = max((e["epoch"] for e in masters), default=None)
        for entry in entries:
            entry["leader"] = False
            if entry["role"] == "master" and top is not None and entry["epoch"] < top:
                entry["state"] = "stale"
        for entry in masters:
            if entry["epoch"] == top:
                entry["leader"] = True
                break

    def _self_entry(self, http_self: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": http_self,
            "role": self.role,
            "state": "alive",
            "server_port": self.config.serverport,
            "gossip_port": self.config.cluster.port if self.gossip else None,
            "epoch": self.epoch,
            "self": True,
            "last_report": None,
        }

    def status(self) -> dict[str, Any]:
        return {
            "mode": "gossip" if self.gossip else "static",
            "role": self.role,
            "epoch": self.epoch,
            "members": len(self.members) if self.gossip else (len(self.static.slaves) if self.static else 0),
            "members_error": self.members_error,
            "election": self.election.status() if self.election is not None else None,
            "serf": self.serf.status() if self.serf is not None else None,
        }
