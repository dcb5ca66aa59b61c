"""The operator's dashboard: the page every node serves at ``/``, and the same page as one
self-contained file for ``mysqlprobe replay --format html``.

Owns the page and its two helper endpoints. The page is built once from the package data in
``mysqlprobe/web/`` (plain scripts and one style sheet, inlined: no build step, no request
for an asset, nothing fetched from the network) and reads the node's own feed:

- ``/collector``: the same snappy blocks every subscriber gets, decoded in the browser
  (``web/snappy.js``), so the page costs the node nothing a subscriber does not;
- ``GET /api/dashboard/last``: the node's newest report (with template texts), so the page
  has data before the next interval ends; ``null`` before the first report;
- ``GET /api/dashboard/template?key=K``: a template's text pretty-printed by sqlparse, once
  per key (cached, off the capture path, in a thread); 400 for a malformed key, 404 for a
  key the node does not know;
- in history mode, ``/api/history/top`` and ``/api/history/series`` (``mysqlprobe.history``)
  over a range the operator picks.

The offline report inlines the replay document and the pretty-printed templates in a
``<script type="application/json">`` block; the same scripts render it without a feed.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from collections.abc import Callable
from importlib import resources
from typing import Any

import sqlparse
from aiohttp import web

from mysqlprobe.server import CollectorHub, HTTPProblem, check_read

#: The page's scripts, in load order.
SCRIPTS = ("snappy.js", "model.js", "view.js", "history.js", "app.js")
#: Pretty-printed templates remembered by the node.
PRETTY_CACHE = 4096
#: Templates longer than this are shown as captured (sqlparse slows down on huge texts).
PRETTY_MAX_CHARS = 20_000
#: Templates pretty-printed into an offline report (the rest show as captured).
REPORT_PRETTY_MAX = 2000

_KEY = re.compile(r"^[0-9a-f]{16}$")


def _asset(name: str) -> str:
    return resources.files("mysqlprobe").joinpath("web", name).read_text(encoding="utf-8")


def script_json(obj: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``<`` can close it."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(title: str, data: Any = None) -> str:
    """The dashboard page; with ``data`` ({"doc": report, "pretty": {key: text}}) it is a
    static report that needs no server."""
    scripts = "\n".join(_asset(name) for name in SCRIPTS)
    if "</script" in scripts.lower():  # would end the inline element early
        raise RuntimeError("a dashboard script contains '</script'")
    block = f'<script type="application/json" id="mysqlprobe-data">{script_json(data)}</script>' if data else ""
    html = _asset("index.html")
    for name, value in (("title", _escape(title)), ("style", _asset("style.css")), ("data", block)):
        html = html.replace("{{" + name + "}}", value)
    return html.replace("{{scripts}}", scripts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def pretty(template: str) -> str:
    """A template laid out for reading, clauses on their own lines. Case is left alone: the
    normalizer upper-cased the keywords already, and identifiers that happen to be keywords
    (`day`, `data`) keep their spelling."""
    if len(template) > PRETTY_MAX_CHARS:
        return template
    return str(sqlparse.format(template, reindent=True))


def report_html(doc: dict[str, Any]) -> str:
    """``replay --format html``: the dashboard with the replay document inlined."""
    texts = {entry["key"]: entry.get("template", "") for entry in doc.get("templates", ())}
    formatted = {key: pretty(text) for key, text in list(texts.items())[:REPORT_PRETTY_MAX] if text}
    source = doc.get("source", {}).get("file", "")
    return page(f"mysqlprobe replay {source}", {"doc": doc, "pretty": formatted})


class Dashboard:
    """The live page and its endpoints, over a node's /collector hub. The report endpoints
    follow the node's read rule (``server.check_read``): with a token set they need it,
    unless readers are let in without it (``websocket.opensubscribers``); the page itself
    holds no data and is open, and it passes its own ``?token=`` on."""

    def __init__(self, hub: CollectorHub, title: str, token: Callable[[], str] = lambda: "") -> None:
        self.hub = hub
        self.token = token
        self.html = page(title)
        self.pretty: OrderedDict[str, str] = OrderedDict()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/api/dashboard/last", self.last)
        app.router.add_get("/api/dashboard/template", self.template)

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text=self.html, content_type="text/html", headers={"Cache-Control": "no-cache"})

    def _may_read(self, request: web.Request) -> None:
        check_read(request, self.token(), self.hub.open_read)

    async def last(self, request: web.Request) -> web.Response:
        self._may_read(request)
        return web.json_response(self.hub.last_report)

    async def template(self, request: web.Request) -> web.Response:
        self._may_read(request)
        key = request.query.get("key", "")
        if not _KEY.match(key):
            raise HTTPProblem(400, f"key: expected 16 hex digits, got {key!r}")
        text = self.hub.templates.get(key)
        if text is None:
            raise HTTPProblem(404, f"no template with key {key} on this node")
        formatted = self.pretty.get(key)
        if formatted is None:
            formatted = await asyncio.to_thread(pretty, text)
            self.pretty[key] = formatted
            while len(self.pretty) > PRETTY_CACHE:
                self.pretty.popitem(last=False)
        else:
            self.pretty.move_to_end(key)
        return web.json_response({"key": key, "template": text, "pretty": formatted})
