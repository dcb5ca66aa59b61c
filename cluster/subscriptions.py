"""The master's subscriptions to its slaves' /collector (websockets client).

Owns one dialling task per slave: connect (with the cluster's token in the handshake: a
slave accepts a master's hello and acknowledgements only from a subscriber that has it),
introduce itself with a hello carrying the master's epoch (the fencing token slaves
check), receive reports and hand them on, keep the template texts that come with them (and
ask for any that are missing), acknowledge by (node, incarnation, seq), and redial with
exponential backoff when a connection fails or was never made. A slave that refuses the
hello (stale epoch) is reported as such; the master steps down when that happens.

Whatever a slave sends is checked before it is used (``parse_slave_message``): a message
that is not a known control message, a templates message or a well-formed interval report
is counted (``malformed``), logged the first time for that slave, and the connection is
dropped and redialled. No failure of one slave's connection ends its dialling task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from message import CodecError, SchemaError, decode
from message.check import check_interval_report

log = logging.getLogger("mysqlprobe.cluster")

#: Close code a slave uses for a master with an old epoch (mysqlprobe.server).
CLOSE_STALE_EPOCH = 4409
DEFAULT_TEXT_CACHE = 200_000


def collector_url(addr: str, *, secure: bool = False) -> str:
    return f"{'wss' if secure else 'ws'}://{addr}/collector"


class MalformedMessage(ValueError):
    """A slave sent something that is neither a report nor a message we know."""


def parse_slave_message(message: str | bytes, max_size: int) -> tuple[str, dict[str, Any]]:
    """(kind, document) of a message from a slave: ``control`` (text), ``templates``,
    ``interval`` or another report kind; ``MalformedMessage`` saying what is wrong."""
    if isinstance(message, str):
        try:
            data = json.loads(message)
        except ValueError:
            raise MalformedMessage("a text message that is not JSON") from None
        if not isinstance(data, dict):
            raise MalformedMessage(f"a text message that is a JSON {type(data).__name__}, not an object")
        return "control", data
    try:
        data = decode(message, max_size)
    except CodecError as exc:
        raise MalformedMessage(str(exc)) from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"a binary message that is a JSON {type(data).__name__}, not an object")
    kind = data.get("kind")
    if kind == "templates":
        texts = data.get("templates")
        if not isinstance(texts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in texts.items()):
            raise MalformedMessage("templates: expected an object of key -> text")
    elif kind == "interval":
        try:
            check_interval_report(data)
        except SchemaError as exc:
            raise MalformedMessage(f"interval report: {exc}") from None
    return str(kind), data


@dataclass
class Link:
    addr: str
    state: str = "connecting"  # connecting, connected, down, refused
    connected_at: float | None = None
    last_report_at: float | None = None
    node: str | None = None  # the slave's node name, from its reports
    reports: int = 0
    dials: int = 0
    failures: int = 0
    malformed: int = 0  # messages refused (each one cost the connection)
    unexpected: int = 0  # connections lost to an error of ours
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    ws: Any = field(default=None, repr=False)


class Subscriptions:
    def __init__(
        self,
        on_report: Callable[[Link, dict[str, Any], dict[str, str]], Awaitable[None] | None],
        hello: Callable[[], dict[str, Any]],
        *,
        reconnect_max_s: float = 5.0,
        ping_s: float = 30.0,
        max_size: int = 64 << 20,
        on_refused: Callable[[Link, int], None] | None = None,
        ssl: SSLContext | None = None,
        token: Callable[[], str] = lambda: "",
    ) -> None:
        self.token = token
        self.on_report = on_report
        self.hello = hello
        self.reconnect_max_s = reconnect_max_s
        self.ping_s = ping_s
        self.max_size = max_size
        self.on_refused = on_refused
        self.ssl = ssl  # wss:// with these certificate checks when set
        self.links: dict[str, Link] = {}
        self.malformed = 0
        self.texts: OrderedDict[str, str] = OrderedDict()

    def set_targets(self, addrs: set[str]) -> None:
        for addr in set(self.links) - addrs:
            self.remove(addr)
        for addr in addrs - set(self.links):
            link = self.links[addr] = Link(addr)
            link.task = asyncio.ensure_future(self._run(link))

    def remove(self, addr: str) -> None:
        link = self.links.pop(addr, None)
        if link is not None and link.task is not None:
            link.task.cancel()

    async def close(self) -> None:
        tasks = [link.task for link in self.links.values() if link.task is not None]
        self.links.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def announce(self) -> None:
        """Send the hello again on every connection (the epoch changed)."""
        for link in list(self.links.values()):
            if link.ws is not None:
                with contextlib.suppress(Exception):
                    await link.ws.send(json.dumps({"hello": self.hello()}))

    async def ack(self, link: Link, node: str, incarnation: str, seqs: list[int]) -> bool:
        """Acknowledge reports of ``node`` on a live connection (after they are durable)."""
        if link.ws is None:
            return False
        try:
            await link.ws.send(json.dumps({"ack": {"node": node, "incarnation": incarnation, "seqs": seqs}}))
        except Exception:  # the connection is gone: the slave will send them again
            return False
        return True

    def _remember(self, texts: dict[str, str]) -> None:
        for key, text in texts.items():
            self.texts[key] = text
            self.texts.move_to_end(key)
        while len(self.texts) > DEFAULT_TEXT_CACHE:
            self.texts.popitem(last=False)

    async def _run(self, link: Link) -> None:
        backoff = 0.2
        while True:
            link.dials += 1
            try:
                async with websockets.connect(
                    collector_url(link.addr, secure=self.ssl is not None),
                    ssl=self.ssl,
                    open_timeout=5,
                    ping_interval=self.ping_s,
                    ping_timeout=self.ping_s,
                    max_size=self.max_size,
                    close_timeout=2,
                    additional_headers={"Authorization": f"Bearer {token}"} if (token := self.token()) else None,
                ) as ws:
                    link.ws = ws
                    link.state = "connected"
                    link.connected_at = time.time()
                    backoff = 0.2
                    await ws.send(json.dumps({"hello": self.hello()}))
                    await self._receive(link, ws)
            except asyncio.CancelledError:
                raise
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code == CLOSE_STALE_EPOCH:
                    link.state = "refused"
                    link.last_error = "refused: stale epoch"
                    if self.on_refused is not None:
                        self.on_refused(link, code)
                else:
                    link.state = "down"
                    link.last_error = f"closed ({code})"
                link.failures += 1
            except MalformedMessage as exc:
                link.state = "down"
                link.failures += 1
                link.malformed += 1
                self.malformed += 1
                link.last_error = f"malformed message: {exc}"
                if link.malformed == 1:
                    log.warning("slave %s sent a malformed message (%s); redialling", link.addr, exc)
                backoff = max(backoff, self.reconnect_max_s)  # do not hammer a broken peer
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, CodecError, ValueError) as exc:
                link.state = "down"
                link.failures += 1
                link.last_error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug must cost this connection, never the dialling task
                link.state = "down"
                link.failures += 1
                link.unexpected += 1
                link.last_error = f"{type(exc).__name__}: {exc}"
                if link.unexpected == 1:
                    log.exception("subscription to %s failed; redialling", link.addr)
            finally:
                link.ws = None
            await asyncio.sleep(backoff)
            backoff = min(self.reconnect_max_s, backoff * 2)

    async def _receive(self, link: Link, ws: Any) -> None:
        async for message in ws:
            kind, data = parse_slave_message(message, self.max_size)
            if kind == "control":
                if "error" in data and data.get("error") == "stale epoch":
                    link.last_error = f"refused: stale epoch (slave has seen {data.get('epoch')})"
                continue
            if kind == "templates":
                self._remember(data["templates"])
                continue
            if kind != "interval":
                continue
            texts = {t["key"]: t["template"] for t in data.get("templates", ()) if t.get("template")}
            self._remember(texts)
            missing = [
                t["key"] for t in data.get("templates", ()) if not t.get("template") and t["key"] not in self.texts
            ]
            if missing:
                await ws.send(json.dumps({"templates": missing}))
            link.reports += 1
            link.last_report_at = time.time()
            link.node = str(data.get("node", link.node))
            result = self.on_report(link, data, self.texts)
            if asyncio.iscoroutine(result):
                await result

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "addr": link.addr,
                "node": link.node,
                "state": link.state,
                "reports": link.reports,
                "dials": link.dials,
                "failures": link.failures,
                "malformed": link.malformed,
                "unexpected_errors": link.unexpected,
                "last_report_at": link.last_report_at,
                "last_error": link.last_error,
            }
            for link in self.links.values()
        ]
