"""The node's HTTP and websocket server (aiohttp): /collector, /status, /config/update.

Owns serving reports to subscribers and the HTTP rules of the API:

- ``/collector`` (websocket): each report is one binary message, a raw snappy block of the
  report's JSON. A template's text goes to a subscriber the first time its key does (so a
  late subscriber gets every text it has not seen), and again on request: a text message
  ``{"templates": [key, ...]}`` is answered with ``{"kind": "templates", "templates":
  {key: text}}``. Every subscriber has a bounded queue; one that falls ``maxqueue``
  messages behind, or does not take a message within ``writetimeoutms``, is dropped and
  counted: a slow reader never grows the node's memory. What a subscriber sends is bounded
  apart (``max_inbound``, 64 KiB): a larger message closes its connection (counted).
- Errors are JSON ``{"error": reason}`` with 400 (bad parameter), 401 (token), 404, 405.
- The token rule, one for every endpoint (``check_token``, ``check_read``): with no token
  configured everything is open. With one (``Authorization: Bearer T``,
  ``X-Mysqlprobe-Token: T`` or ``?token=T``), what changes state always needs it, and a
  read of query data (templates: their texts and per-template statistics; slow samples)
  needs it unless ``open_read`` (``websocket.opensubscribers``) lets readers in without
  it; what a node says of itself (health, node-level counters, membership: /status,
  /cluster/listnodes, /events/status, /api/metrics/*) stays open. A 401 says whether a token was
  missing or wrong, never what was offered. On ``/collector`` the handshake is the read;
  every control message (a master's hello, an acknowledgement) changes state and needs
  the token (in the handshake or in the message). A bad control message is counted and
  answered with a reason; an unauthenticated one also closes the connection.
  Acknowledgements only remove this node's own reports; epochs are integers from 0 to
  ``MAX_EPOCH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from message import encode
from pusher.spool import DiskSpool

log = logging.getLogger("mysqlprobe.server")

#: Template texts remembered for late subscribers and requests.
DEFAULT_TEMPLATE_CACHE = 100_000
#: Keys remembered per subscriber as already sent.
DEFAULT_KNOWN_KEYS = 100_000
#: Seconds a request body may take to arrive.
BODY_TIMEOUT_S = 10.0
#: Largest message a subscriber may send (config ``websocket.maxinbound``).
DEFAULT_MAX_INBOUND = 64 << 10


class HTTPProblem(Exception):
    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})


def problem(status: int, reason: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


#: How a client offers the token (said in every 401).
TOKEN_WAYS = "Authorization: Bearer T, X-Mysqlprobe-Token: T or ?token=T"
#: What a 401 asks for (RFC 9110: a 401 names its scheme).
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="mysqlprobe"'}


def _offered(request: web.Request) -> str:
    """The token a request carries ("" when none); 400 when a header byte is not UTF-8."""
    offered = (
        request.headers.get("X-Mysqlprobe-Token")
        or request.query.get("token")
        or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    )
    try:
        offered.encode()
    except UnicodeEncodeError:  # a header byte that is not UTF-8 (aiohttp keeps it as a surrogate)
        raise HTTPProblem(400, "the token is not valid UTF-8") from None
    return offered


def token_offered(request: web.Request, token: str) -> bool:
    """Whether the request carries ``token`` (always true when no token is configured)."""
    if not token:
        return True
    offered = _offered(request)
    return bool(offered) and hmac.compare_digest(offered.encode(), token.encode())


def same_token(offered: object, token: str) -> bool:
    """Whether a token sent inside a message (a JSON string) is the configured one."""
    if not isinstance(offered, str) or not offered:
        return False
    return hmac.compare_digest(offered.encode("utf-8", "surrogatepass"), token.encode())


def require_token(request: web.Request, token: str, what: str) -> None:
    """401 unless the request carries ``token`` (nothing to check when none is configured).
    The reason says whether a token was missing or wrong, never what was offered."""
    if token_offered(request, token):
        return
    why = "no token was offered" if not _offered(request) else "the token offered is not the configured one"
    raise HTTPProblem(401, f"{what} needs the configured token: {why} ({TOKEN_WAYS})", CHALLENGE)


def check_token(request: web.Request, token: str) -> None:
    """An endpoint that changes state: with a token configured, always needs it."""
    require_token(request, token, "this endpoint")


def check_read(request: web.Request, token: str, open_read: bool) -> None:
    """A read of query data (templates: their texts and per-template statistics; slow
    samples): with a token configured it needs it, unless ``open_read``
    (``websocket.opensubscribers``) lets readers in without it, as /collector does."""
    if open_read:
        return
    require_token(request, token, request.path)


@dataclass(eq=False)  # identity: subscribers live in a set
class _Subscriber:
    ws: web.WebSocketResponse
    queue: asyncio.Queue[bytes]
    known: OrderedDict[str, None]
    peer: str
    sent: int = 0
    master: str | None = None  # the master node this subscriber says it is
    epoch: int = -1
    authenticated: bool = False  # offered the token (or none is configured)


#: Close code for a master whose epoch is older than one already seen (fenced off).
CLOSE_STALE_EPOCH = 4409
#: Close code for a control message from a subscriber without the token.
CLOSE_UNAUTHENTICATED = 4401
#: A report still unacknowledged this many reports later is offered to the current master
#: again, at most once per as many reports: an acknowledgement lost on the way (sent while
#: the master's connection was being replaced, refused before its hello) would otherwise
#: keep it in the spool until the next hello. The master merges each report once.
REOFFER_AFTER = 10

#: Largest epoch accepted in a hello (what a JSON number keeps exactly everywhere).
MAX_EPOCH = 2**53 - 1


class ControlError(ValueError):
    """A /collector control message that is malformed or not allowed; the text says why."""


def valid_epoch(value: object) -> int:
    """An epoch from a hello: an integer (not a boolean, not a float) in 0..MAX_EPOCH."""
    if type(value) is not int:
        raise ControlError(f"epoch: expected an integer from 0 to {MAX_EPOCH}")
    if not 0 <= value <= MAX_EPOCH:
        raise ControlError(f"epoch: out of range 0-{MAX_EPOCH}")
    return value


class CollectorHub:
    """Fans reports out to /collector subscribers."""

    def __init__(
        self,
        *,
        max_queue: int = 16,
        write_timeout_s: float = 5.0,
        heartbeat_s: float = 30.0,
        max_message: int = 64 << 20,
        max_inbound: int = DEFAULT_MAX_INBOUND,
        template_cache: int = DEFAULT_TEMPLATE_CACHE,
        token: Callable[[], str] = lambda: "",
        open_read: bool = False,
        node: str = "",
    ) -> None:
        self.token = token
        self.open_read = open_read
        self.node = node  # acknowledgements for another node are refused
        self.incarnation = ""  # ... and for another incarnation of this one
        self.control_refused = 0  # control messages without the token
        self.control_rejected = 0  # malformed control messages
        self.max_queue = max_queue
        self.write_timeout_s = write_timeout_s
        self.heartbeat_s = heartbeat_s
        self.max_message = max_message
        self.max_inbound = max_inbound
        self.inbound_too_large = 0
        self.template_cache = template_cache
        self.templates: OrderedDict[str, str] = OrderedDict()
        self.subscribers: set[_Subscriber] = set()
        self.subscribers_total = 0
        self.subscribers_dropped = 0
        self.messages_sent = 0
        self.published = 0
        self.last_report: dict[str, Any] | None = None
        self.max_epoch = -1  # highest master epoch seen: the fencing token
        self.stale_masters_refused = 0
        self.on_epoch: Callable[[int], None] | None = None
        # Reports a master has not acknowledged yet (durable; replayed when a master
        # subscribes, removed on its acknowledgement). None: no delivery guarantee.
        self.spool: DiskSpool | None = None
        self.replayed = 0
        self.reoffered = 0  # re-offers of reports left unacknowledged (REOFFER_AFTER)
        self._last_reoffer = 0  # the seq of the report that last triggered one
        self.acks = 0
        self._replays: set[asyncio.Future[None]] = set()

    def remember_templates(self, texts: Mapping[str, str]) -> None:
        cache = self.templates
        for key, text in texts.items():
            if key in cache:
                cache.move_to_end(key)
            cache[key] = text
        while len(cache) > self.template_cache:
            cache.popitem(last=False)

    def publish(self, report: dict[str, Any]) -> None:
        """Queue one report for every subscriber; entries carry their ``template`` text."""
        texts = {t["key"]: t["template"] for t in report.get("templates", ()) if t.get("template")}
        self.remember_templates(texts)
        self.published += 1
        self.last_report = report
        if self.spool is not None and "seq" in report:
            self.spool.append((str(report.get("incarnation", "")), int(report["seq"])), encode(report))
            self._reoffer(int(report["seq"]))
        bare = [{k: v for k, v in t.items() if k != "template"} for t in report.get("templates", ())]
        for sub in list(self.subscribers):
            entries = []
            for full, stripped in zip(report.get("templates", ()), bare, strict=True):
                key = full["key"]
                if key in sub.known:
                    sub.known.move_to_end(key)
                    entries.append(stripped)
                elif full.get("template"):
                    sub.known[key] = None
                    entries.append(full)
                else:
                    entries.append(stripped)  # no text known yet: it goes with a later report
            while len(sub.known) > DEFAULT_KNOWN_KEYS:
                sub.known.popitem(last=False)
            message = encode({**report, "templates": entries})
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                self._drop(sub, "fell behind")

    async def close_all(self, timeout_s: float = 2.0) -> None:
        """Close every subscriber (1001, going away): a stopping node does not wait for
        them to hang up (aiohttp would wait up to a minute for their handlers)."""
        subs, self.subscribers = list(self.subscribers), set()

        async def bye(sub: _Subscriber) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.ws.close(code=1001, message=b"node stopping"), timeout_s)

        await asyncio.gather(*(bye(sub) for sub in subs))

    def _drop(self, sub: _Subscriber, why: str) -> None:
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            self.subscribers_dropped += 1
            log.warning("dropping /collector subscriber %s: %s", sub.peer, why)
            asyncio.get_event_loop().create_task(sub.ws.close(code=1013, message=why.encode()))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # What a subscriber sends (requests, hello, ack) is small: its own bound, so one
        # huge message cannot cost the node memory or stall its loop.
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_s, max_msg_size=self.max_inbound)
        if not ws.can_prepare(request).ok:
            raise HTTPProblem(400, "/collector is a websocket endpoint")
        authenticated = token_offered(request, self.token())
        if not authenticated:
            check_read(request, self.token(), self.open_read)
        await ws.prepare(request)
        sub = _Subscriber(ws, asyncio.Queue(self.max_queue), OrderedDict(), request.remote or "?")
        sub.authenticated = authenticated
        self.subscribers.add(sub)
        self.subscribers_total += 1
        writer = asyncio.ensure_future(self._writer(sub))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._request(sub, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    if getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                        self.inbound_too_large += 1
                        log.warning(
                            "closed /collector subscriber %s: message over %d bytes", sub.peer, self.max_inbound
                        )
                    break
        finally:
            self.subscribers.discard(sub)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _writer(self, sub: _Subscriber) -> None:
        while True:
            message = await sub.queue.get()
            try:
                await asyncio.wait_for(sub.ws.send_bytes(message), self.write_timeout_s)
            except (TimeoutError, ConnectionResetError, RuntimeError):
                self._drop(sub, "write timed out")
                return
            finally:
                sub.queue.task_done()
            sub.sent += 1
            self.messages_sent += 1

    async def sent(self, timeout_s: float) -> bool:
        """Wait until every subscriber has been sent what was queued for it (at most
        ``timeout_s``); False if one has not."""
        waits = [asyncio.ensure_future(sub.queue.join()) for sub in self.subscribers]
        if not waits:
            return True
        _, pending = await asyncio.wait(waits, timeout=timeout_s)
        for wait in pending:
            wait.cancel()
        return not pending

    async def _request(self, sub: _Subscriber, text: str) -> None:
        """One text message from a subscriber; never raises (a bad one is counted and
        answered with the reason; one that needs the token and lacks it also closes)."""
        try:
            await self._control(sub, text)
        except ControlError as exc:
            self.control_rejected += 1
            log.warning("/collector subscriber %s: bad control message: %s", sub.peer, exc)
            with contextlib.suppress(Exception):
                await sub.ws.send_str(json.dumps({"error": str(exc)}))
        except PermissionError as exc:
            self.control_refused += 1
            log.warning("/collector subscriber %s: %s", sub.peer, exc)
            self.subscribers.discard(sub)
            with contextlib.suppress(Exception):
                await sub.ws.send_str(json.dumps({"error": str(exc)}))
                await sub.ws.close(code=CLOSE_UNAUTHENTICATED, message=b"token required")
        except (ConnectionResetError, RuntimeError):
            pass  # the subscriber went away while we answered
        except Exception as exc:  # a bug must not end the node or the connection loop
            self.control_rejected += 1
            log.exception("/collector subscriber %s: control message failed", sub.peer)
            with contextlib.suppress(Exception):
                await sub.ws.send_str(json.dumps({"error": f"not understood ({type(exc).__name__})"}))

    def _authorize(self, sub: _Subscriber, message: Mapping[str, Any], what: str) -> None:
        if sub.authenticated:
            return
        if same_token(message.get("token"), self.token()):
            sub.authenticated = True
            return
        raise PermissionError(f"{what} needs the configured token")

    async def _control(self, sub: _Subscriber, text: str) -> None:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and "hello" in data:
            hello = data["hello"]
            if not isinstance(hello, dict):
                raise ControlError("hello: expected an object")
            await self._hello(sub, hello)
            return
        if isinstance(data, dict) and "ack" in data:
            ack = data["ack"]
            if not isinstance(ack, dict):
                raise ControlError("ack: expected an object")
            self._authorize(sub, ack, "an acknowledgement")
            self._ack(sub, ack)
            return
        try:
            if not isinstance(data, dict):
                raise TypeError
            keys = data["templates"]
            if not isinstance(keys, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            await sub.ws.send_str(json.dumps({"error": 'expected {"templates": [key, ...]}'}))
            return
        found = {str(k): self.templates[str(k)] for k in keys if str(k) in self.templates}
        for key in found:
            sub.known[key] = None
        await sub.ws.send_bytes(encode({"kind": "templates", "templates": found}))

    async def _hello(self, sub: _Subscriber, hello: Mapping[str, Any]) -> None:
        """A subscriber introduces itself. A master with an epoch older than one already
        seen is refused (fencing: a stalled master that comes back cannot act); a newer
        master cuts off the older ones still subscribed. Only a subscriber with the token
        may say it is a master."""
        if hello.get("role") != "master":
            await sub.ws.send_str(json.dumps({"welcome": {"epoch": self.max_epoch}}))
            return
        self._authorize(sub, hello, "a master's hello")
        epoch = valid_epoch(hello.get("epoch"))
        if epoch < self.max_epoch:
            self.stale_masters_refused += 1
            log.warning("refusing master %s: epoch %d < %d", hello.get("node"), epoch, self.max_epoch)
            await sub.ws.send_str(json.dumps({"error": "stale epoch", "epoch": self.max_epoch}))
            self.subscribers.discard(sub)
            await sub.ws.close(code=CLOSE_STALE_EPOCH, message=b"stale epoch")
            return
        sub.master = str(hello.get("node", "?"))
        sub.epoch = epoch
        if epoch > self.max_epoch:
            self.max_epoch = epoch
            if self.on_epoch is not None:
                self.on_epoch(epoch)
            for other in list(self.subscribers):
                if other is not sub and other.master is not None and other.epoch < epoch:
                    self.stale_masters_refused += 1
                    self.subscribers.discard(other)
                    asyncio.get_event_loop().create_task(
                        other.ws.close(code=CLOSE_STALE_EPOCH, message=b"a newer master took over")
                    )
        await sub.ws.send_str(json.dumps({"welcome": {"epoch": self.max_epoch}}))
        if self.spool is not None and len(self.spool):
            self._start_replay(sub)

    def _reoffer(self, seq: int) -> None:
        """Offer the current masters again the reports left unacknowledged REOFFER_AFTER
        reports ago (see there)."""
        assert self.spool is not None
        oldest = self.spool.oldest_seq
        if oldest is None or seq - oldest < REOFFER_AFTER or seq - self._last_reoffer < REOFFER_AFTER:
            return
        masters = [sub for sub in self.subscribers if sub.master is not None and sub.epoch == self.max_epoch]
        if not masters:
            return
        self._last_reoffer = seq
        for sub in masters:
            self.reoffered += 1
            self._start_replay(sub, before=seq - REOFFER_AFTER + 1)

    def _start_replay(self, sub: _Subscriber, before: int | None = None) -> None:
        """``_replay`` in the background (its task kept until it is done)."""
        self._replays = {task for task in self._replays if not task.done()}
        self._replays.add(asyncio.ensure_future(self._replay(sub, before)))

    async def _replay(self, sub: _Subscriber, before: int | None = None) -> None:
        """Send a master every report it has not acknowledged (with ``before``, those of
        lower seqs), oldest first. Live reports may overtake or repeat some of them: the
        master merges each (node, incarnation, seq) once."""
        assert self.spool is not None
        for (_, seq), data in list(self.spool.items()):
            if before is not None and seq >= before:
                continue
            if sub not in self.subscribers or sub.ws.closed:
                return
            try:
                await asyncio.wait_for(sub.ws.send_bytes(data), self.write_timeout_s)
            except (TimeoutError, ConnectionResetError, RuntimeError):
                self._drop(sub, "replay timed out")
                return
            self.replayed += 1

    def _ack(self, sub: _Subscriber, ack: Mapping[str, Any]) -> None:
        """A master acknowledges reports it has merged durably: they leave the spool. Only
        this node's reports, of the incarnation named (default: the current one)."""
        if sub.master is None or sub.epoch < self.max_epoch:
            raise ControlError("ack: only the current master acknowledges (send a hello first)")
        node = ack.get("node")
        if not isinstance(node, str) or (self.node and node != self.node):
            raise ControlError(f"ack: node must be this node ({self.node!r})")
        incarnation = ack.get("incarnation", self.incarnation)
        if not isinstance(incarnation, str):
            raise ControlError("ack: incarnation must be a string")
        seqs = ack["seqs"] if "seqs" in ack else [ack.get("seq")]
        if not isinstance(seqs, list) or len(seqs) > 100_000:
            raise ControlError("ack: seqs must be a list of sequence numbers")
        if not all(type(seq) is int and 0 <= seq <= MAX_EPOCH for seq in seqs):
            raise ControlError("ack: every seq must be an integer")
        if self.spool is None:
            return
        for seq in seqs:
            if (incarnation, seq) in self.spool:
                self.spool.remove((incarnation, seq))
                self.acks += 1

    def status(self) -> dict[str, Any]:
        return {
            "max_epoch": self.max_epoch,
            "stale_masters_refused": self.stale_masters_refused,
            "control_refused": self.control_refused,
            "control_rejected": self.control_rejected,
            "open_read": self.open_read,
            "masters": sorted(f"{s.master}@{s.epoch}" for s in self.subscribers if s.master is not None),
            "subscribers": len(self.subscribers),
            "subscribers_total": self.subscribers_total,
            "subscribers_dropped": self.subscribers_dropped,
            "reports_published": self.published,
            "messages_sent": self.messages_sent,
            "templates_cached": len(self.templates),
            "inbound_too_large": self.inbound_too_large,
            "spool": self.spool.status() if self.spool is not None else None,
            "replayed": self.replayed,
            "reoffered": self.reoffered,
            "acks": self.acks,
        }


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HTTPProblem as exc:
        return problem(exc.status, exc.reason, exc.headers)
    except web.HTTPMethodNotAllowed as exc:
        return problem(405, f"{request.method} is not allowed here (allowed: {', '.join(sorted(exc.allowed_methods))})")
    except web.HTTPNotFound:
        return problem(404, f"no such endpoint: {request.path}")


def parse_int(request: web.Request, params: Mapping[str, str], name: str, low: int, high: int, unit: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise HTTPProblem(400, f"{name}: expected a whole number of {unit}, got {raw!r}") from None
    if not low <= value <= high:
        raise HTTPProblem(400, f"{name}: {value} is out of range {low}-{high} {unit}")
    return value


async def request_params(request: web.Request) -> dict[str, str]:
    """Query string and, for POST, form or JSON body parameters (body wins)."""
    params = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):  # a body trickled in holds a connection
                params.update(await _body_params(request))
        except TimeoutError:
            raise HTTPProblem(408, f"the request body did not arrive within {BODY_TIMEOUT_S:g} s") from None
    params.pop("token", None)
    return params


async def _body_params(request: web.Request) -> dict[str, str]:
    """Parameters of a POST body: a JSON object, or a form (urlencoded or multipart)."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise HTTPProblem(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HTTPProblem(400, "the JSON body must be an object")
        return {str(k): str(v) for k, v in body.items()}
    try:
        form = await request.post()
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        # The body's bytes are not echoed: they may hold a token.
        raise HTTPProblem(400, f"the {request.content_type} body cannot be read ({type(exc).__name__})") from None
    return {k: str(v) for k, v in form.items()}
