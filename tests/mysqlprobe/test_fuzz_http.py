"""Fuzz target of HTTP parameter parsing, through a real aiohttp server on loopback: any
query string, body, content type and token header on the node's parsers (request_params,
check_token, parse_int, the stores API's numbers) is an answer or a 4xx with a reason,
never a 500."""

from __future__ import annotations

import asyncio
import json
import urllib.parse

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from cluster.metrics import MetricsStore
from cluster.traces import TraceStore
from mysqlprobe.api import StoresAPI
from mysqlprobe.server import check_token, errors_as_json, parse_int, request_params
from tests.support.fuzz import fuzz_settings

pytestmark = pytest.mark.fuzz

TOKEN = "s3cret"


async def echo(request: web.Request) -> web.Response:
    check_token(request, TOKEN)
    params = await request_params(request)
    period = parse_int(request, params, "report_period_ms", 100, 3_600_000, "milliseconds")
    return web.json_response({"params": params, "period": period})


def make_app() -> web.Application:
    app = web.Application(middlewares=[errors_as_json])
    app.router.add_route("*", "/echo", echo)
    StoresAPI(TraceStore(), MetricsStore(), lambda: TOKEN).routes(app)
    return app


async def exchange(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def serve_and_send(requests: list[bytes]) -> list[tuple[int, bytes]]:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return [await exchange(port, r) for r in requests]
    finally:
        await runner.cleanup()


def _check(answers: list[tuple[int, bytes]]) -> None:
    for status, body in answers:
        assert status < 500, body
        if status >= 400 and body.startswith(b"{"):
            assert json.loads(body)["error"]


query_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["1e300", "-0", "nan", "inf", "1e-400", "0x10", "9" * 5000, " 12 ", "१२३", "1_000"]),
)
paths = st.sampled_from(
    [
        "/echo",
        "/events/scan",
        "/events/query",
        "/events/delete",
        "/api/metrics/raw",
        "/api/metrics/aggregate",
    ]
)
names = st.sampled_from(
    ["report_period_ms", "seconds", "since", "min_latency_ms", "cursor", "limit", "trace_id", "group_by", "key"]
)


@fuzz_settings(60)
@given(st.lists(st.tuples(paths, st.dictionaries(names, query_values, max_size=3)), min_size=1, max_size=8))
def test_any_query_string(requests: list[tuple[str, dict[str, str]]]) -> None:
    raw = [
        # With the token: the reads of slow samples need it, and their parameters are the target.
        f"GET {path}?{urllib.parse.urlencode(query)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"X-Mysqlprobe-Token: {TOKEN}\r\n\r\n".encode()
        for path, query in requests
    ]
    _check(asyncio.run(serve_and_send(raw)))


content_types = st.sampled_from(
    [
        b"application/json",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=zzz",
        b"multipart/form-data",
        b"text/plain",
        b"application/json; charset=latin-1",
    ]
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"--zzz\r\nbroken",
            b'--zzz\r\nContent-Disposition: form-data; name="report_period_ms"\r\n\r\n500\r\n--zzz--\r\n',
            b'{"report_period_ms": [1, 2]}',
            b"[1, 2]",
            b"report_period_ms=%FF%FE",
            b'{"a": NaN}',
        ]
    ),
)
tokens = st.one_of(st.just(TOKEN.encode()), st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b))


@fuzz_settings(60)
@given(st.lists(st.tuples(paths, content_types, bodies, tokens, st.booleans()), min_size=1, max_size=6))
def test_any_body_and_token(requests: list[tuple[str, bytes, bytes, bytes, bool]]) -> None:
    raw = [
        b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s: %s\r\n"
        b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (
            path.encode(),
            b"Authorization" if bearer else b"X-Mysqlprobe-Token",
            (b"Bearer " + token) if bearer else token,
            content_type,
            len(body),
            body,
        )
        for path, content_type, body, token, bearer in requests
    ]
    _check(asyncio.run(serve_and_send(raw)))
