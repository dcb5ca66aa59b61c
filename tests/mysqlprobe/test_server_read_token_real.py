"""The token rule for reads (``server.check_read``), against a real slave capturing a real
MariaDB and a real static master merging it, asked over real HTTP (urllib): with a token
set, every endpoint that answers query data (templates, their statistics, slow samples)
needs it — in any of its three forms — unless ``websocket.opensubscribers`` lets readers
in; a 401 says why and never echoes what was offered; node health and membership stay
open and carry no SQL; what changes state needs the token whatever ``opensubscribers``
says."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import workload
from tests.support.mariadb import MariaDB
from tests.support.nodes import Node

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))

TOKEN = "r3ad-t0ken"
WRONG = "wr0ng-guess-4711"
#: In the captured SQL (a column alias and a literal): it must show only where SQL may.
CANARY = "canary_col"

#: GET endpoints that answer query data (templates, their statistics, slow samples) on every
#: node ({trace}, {key} filled in).
QUERY_READS = [
    "/events/query?trace_id={trace}",
    "/events/scan",
    "/api/history/top?from=-1h",
    "/api/history/series?key={key}&from=-1h",
    "/api/history/template?key={key}",
    "/api/dashboard/last",
    "/api/dashboard/template?key={key}",
    "/metrics",
]
#: ... of them, those whose answer holds the canary's template text or sample.
CARRY_CANARY = {
    "/events/query?trace_id={trace}",
    "/events/scan",
    "/api/history/top?from=-1h",
    "/api/history/template?key={key}",
    "/api/dashboard/template?key={key}",
    "/metrics",
    "/report/totals",
}
#: GET endpoints of what a node says of itself (health, counters, membership): open.
OPEN_READS = [
    "/",
    "/status",
    "/cluster/listnodes",
    "/events/status",
    "/api/metrics/raw?seconds=600",
    "/api/metrics/aggregate?seconds=600",
]


@pytest.fixture(scope="module")
def server() -> Iterator[MariaDB]:
    yield from workload.schema_server()


def fetch(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def with_query(path: str, query: str) -> str:
    return path + ("&" if "?" in path else "?") + query


def three_ways(token: str, path: str) -> list[tuple[str, str, dict[str, str]]]:
    """(how, path, headers): the token as X-Mysqlprobe-Token, as a Bearer and as ?token=."""
    return [
        ("header", path, {"X-Mysqlprobe-Token": token}),
        ("bearer", path, {"Authorization": f"Bearer {token}"}),
        ("query", with_query(path, "token=" + urllib.parse.quote(token)), {}),
    ]


def pair(tmp_path: Path, server: MariaDB, **websocket: Any) -> tuple[Node, Node]:
    """A slave with the token (and ``websocket`` settings) and its static master."""
    slave = Node(
        tmp_path,
        {
            "interval": 1,
            "token": TOKEN,
            "slowthresholdms": 20,
            "history": {"mode": "on"},  # a slave with a master keeps none by default
            "websocket": websocket,
            "probe": {"device": "lo", "port": server.port, "workers": 1},
        },
        "s1",
    ).start()
    master = Node(tmp_path, {"slave": False, "interval": 1, "token": TOKEN, "websocket": websocket}, "m1").start()
    status, _, body = fetch(
        master.url + f"/cluster/join?addr=127.0.0.1:{slave.port}", "POST", {"X-Mysqlprobe-Token": TOKEN}
    )
    assert status == 200, body
    return slave, master


def run_canary(server: MariaDB) -> None:
    conn = server.connect(database=workload.DB, autocommit=True)
    with conn.cursor() as cur:
        for _ in range(3):
            cur.execute(f"SELECT SLEEP(0.03) AS {CANARY}, 'canary-literal'")
            cur.fetchall()
    conn.close()


def wait_json(url: str, ready: Any, timeout: float = 60.0) -> Any:
    """GET ``url`` with the token until ``ready(answer)``; returns the answer."""
    deadline = time.monotonic() + timeout
    answer: Any = None
    while time.monotonic() < deadline:
        status, _, body = fetch(url, headers={"X-Mysqlprobe-Token": TOKEN})
        if status == 200:
            answer = json.loads(body)
            if ready(answer):
                return answer
        time.sleep(0.3)
    raise AssertionError(f"{url}: not ready in {timeout} s; last answer {answer!r:.500}")


def canary_everywhere(server: MariaDB, slave: Node, master: Node) -> tuple[str, str]:
    """Run the canary and wait until both nodes hold it everywhere: (trace id, key)."""
    run_canary(server)
    scan = wait_json(slave.url + "/events/scan", lambda a: any(CANARY in e["sql"] for e in a["events"]))
    event = next(e for e in scan["events"] if CANARY in e["sql"])
    trace, key = event["trace_id"], event["key"]
    for node in (slave, master):
        wait_json(node.url + f"/events/query?trace_id={trace}", lambda a: a["trace_id"] == trace)
        wait_json(node.url + f"/api/history/template?key={key}", lambda a: CANARY in a["template"])
        wait_json(node.url + f"/api/dashboard/template?key={key}", lambda a: CANARY in a["template"])
    wait_json(master.url + "/report/totals", lambda a: any(t["key"] == key for t in a["templates"]))
    return trace, key


def sql_reads(node: Node, trace: str, key: str, master: bool) -> list[tuple[str, str]]:
    """(pattern, path) of the query-data reads of a node."""
    patterns = QUERY_READS + (["/report/totals"] if master else [])
    return [(p, p.format(trace=trace, key=key)) for p in patterns]


def assert_refused(url: str, headers: dict[str, str], method: str = "GET", why: str = "") -> None:
    status, answer_headers, body = fetch(url, method, headers)
    assert status == 401, (url, headers, status, body[:300])
    assert answer_headers.get("WWW-Authenticate", "").startswith("Bearer"), answer_headers
    error = json.loads(body)["error"]
    assert "needs the configured token" in error and why in error, error
    assert WRONG not in body.decode() and WRONG not in json.dumps(answer_headers)
    assert b"Traceback" not in body


def no_traceback(*nodes: Node) -> None:
    for node in nodes:
        log = node.log.read_text()
        assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]


def test_with_a_token_sql_reads_need_it_in_any_form_and_health_stays_open(server: MariaDB, tmp_path: Path) -> None:
    slave, master = pair(tmp_path, server)
    try:
        trace, key = canary_everywhere(server, slave, master)
        for node, is_master in ((slave, False), (master, True)):
            for pattern, path in sql_reads(node, trace, key, is_master):
                url = node.url + path
                assert_refused(url, {}, why="no token was offered")
                for _, wrong_path, headers in three_ways(WRONG, path):
                    assert_refused(node.url + wrong_path, headers, why="not the configured one")
                for how, right_path, headers in three_ways(TOKEN, path):
                    status, _, body = fetch(node.url + right_path, headers=headers)
                    assert status == 200, (node.path.stem, path, how, body[:300])
                    if pattern in CARRY_CANARY:
                        assert CANARY in body.decode(), (node.path.stem, path, how)
            for path in OPEN_READS:
                status, _, body = fetch(node.url + path)
                assert status == 200, (node.path.stem, path, body[:300])
                # Health and membership hold no SQL: neither the template nor the literal.
                assert CANARY not in body.decode() and "canary-literal" not in body.decode(), (path, body[:2000])
            # What changes state still needs it (and is refused before any parameter is read).
            assert_refused(node.url + "/config/update?report_period_ms=2000", {}, "POST", "no token was offered")
            assert_refused(node.url + f"/events/delete?trace_id={trace}", {}, "DELETE", "no token was offered")
        no_traceback(slave, master)
    finally:
        master.stop()
        slave.stop()


def test_opensubscribers_lets_readers_in_but_never_writers(server: MariaDB, tmp_path: Path) -> None:
    slave, master = pair(tmp_path, server, opensubscribers=True)
    try:
        trace, key = canary_everywhere(server, slave, master)
        for node, is_master in ((slave, False), (master, True)):
            for pattern, path in sql_reads(node, trace, key, is_master):
                status, _, body = fetch(node.url + path)
                assert status == 200, (node.path.stem, path, body[:300])
                if pattern in CARRY_CANARY:
                    assert CANARY in body.decode(), (node.path.stem, path)
            changes = [
                ("POST", "/config/update?report_period_ms=2000"),
                ("DELETE", f"/events/delete?trace_id={trace}"),
                ("POST", f"/events/delete?trace_id={trace}"),
            ]
            if is_master:
                changes += [("POST", "/cluster/join?addr=127.0.0.1:1"), ("POST", "/cluster/remove?addr=127.0.0.1:1")]
                changes += [("POST", f"/cluster/remove?addr=127.0.0.1:{slave.port}"), ("POST", "/cluster/leave")]
            for method, path in changes:
                assert_refused(node.url + path, {}, method, "no token was offered")
                for _, wrong_path, headers in three_ways(WRONG, path):
                    assert_refused(node.url + wrong_path, headers, method, "not the configured one")
            # ... and nothing changed: the settings, the trace, the member list.
            status_body = json.loads(fetch(node.url + "/status")[2])
            assert status_body["pending_settings"] == {} and status_body["settings"]["report_period_ms"] == 1000
            assert fetch(node.url + f"/events/query?trace_id={trace}")[0] == 200
        members = json.loads(fetch(master.url + "/cluster/listnodes")[2])
        assert [m["address"] for m in members if m["role"] == "slave"] == [f"127.0.0.1:{slave.port}"]
        no_traceback(slave, master)
    finally:
        master.stop()
        slave.stop()
