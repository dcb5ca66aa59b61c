"""The live dashboard in real headless Chromium, over a real slave capturing a real workload
against a throw-away MariaDB: the numbers on the page are the numbers of the slave's own
/collector reports, the page follows the feed without a reload, a template opens, and a
screenshot is not blank."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from tests.support import workload
from tests.support.browser import Browser, BrowserError, ink_fraction
from tests.support.mariadb import MariaDB
from tests.support.nodes import Collector, Node

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))

SCREENSHOTS = Path(os.environ.get("MYSQLPROBE_SCREENSHOTS", "/tmp/mysqlprobe-screenshots"))


@pytest.fixture(scope="module")
def server() -> Iterator[MariaDB]:
    yield from workload.schema_server()


def totals(reports: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, int]]:
    """Per (server, db, key): calls, errors and total time over the reports."""
    out: dict[tuple[str, str, str], dict[str, int]] = {}
    for report in reports:
        for entry in report["templates"]:
            slot = out.setdefault((entry["server"], entry["db"], entry["key"]), {"count": 0, "errors": 0, "sum": 0})
            slot["count"] += entry["count"]
            slot["errors"] += sum(entry["errors"].values())
            slot["sum"] += entry["latency_us"]["sum"]
    return out


def run_workload(server: MariaDB, sleeps: int, lookups: int) -> None:
    conn = server.connect(database=workload.DB, autocommit=True)
    with conn.cursor() as cur:
        for i in range(lookups):
            cur.execute("SELECT name FROM items WHERE id = %s", (i % 500 + 1,))
            cur.fetchall()
        for _ in range(sleeps):
            cur.execute("SELECT SLEEP(0.03), 'secret-literal'")
            cur.fetchall()
        for _ in range(3):
            with contextlib.suppress(pymysql.err.ProgrammingError):  # the error is the point
                cur.execute("SELECT * FROM no_such_table WHERE id = 1")
    conn.close()


def settle(collector: Collector) -> None:
    """Wait until the reports that cover the workload have all arrived."""
    time.sleep(1.5)
    seen = len(collector.reports)
    collector.wait_for(lambda c: len(c.reports) >= seen + 2)


def explain(browser: Browser) -> str:
    """What the page shows and knows, for a failed wait."""
    state = browser.eval(
        "({detail: (document.querySelector('#detail') || {}).innerText, connected: MP.app.connected,"
        " merged: MP.app.model.reportsMerged, slow: MP.app.model.slow.map(s => s.sql).slice(0, 20)})"
    )
    return f"page state: {state}; browser problems: {browser.problems()}"


ROW = "document.querySelector('#templates tr.tpl')"
COUNT_OF = (
    "(k => {{ const r = document.querySelector(`#templates tr.tpl[data-key='${{k}}']`);"
    " return r ? +r.querySelector('.col-count').textContent.replace(/,/g, '') : null; }})('{key}')"
)


def test_live_dashboard_follows_a_slave(server: MariaDB, tmp_path: Path) -> None:
    config = {
        "interval": 1,
        "slowthresholdms": 20,
        "redact": True,
        "probe": {"device": "lo", "port": server.port, "workers": 1},
    }
    node = Node(tmp_path, config, "dash").start()
    collector = Collector(f"ws://127.0.0.1:{node.port}/collector")
    browser = Browser()
    try:
        # The page and its helper endpoints answer like the rest of the API.
        with urllib.request.urlopen(node.url + "/", timeout=10) as resp:
            html = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("text/html")
        assert "MP.start()" in html and "<script src" not in html
        assert "http://" not in html.replace("http://www.w3.org", "")  # nothing from the network
        for path, code in [("/api/dashboard/template", 400), ("/api/dashboard/template?key=zz", 400)]:
            assert node.request(path)[0] == code
        assert node.request("/api/dashboard/template?key=ffffffffffffffff")[0] == 404

        browser.goto(node.url + "/")
        browser.wait("document.querySelector('#conn').textContent.startsWith('live')")
        browser.eval("window.__noReload = 42")

        # Phase 1: a workload whose top template by load is the SLEEP.
        run_workload(server, sleeps=20, lookups=200)
        settle(collector)
        sums = totals(collector.reports)
        top = max(sums, key=lambda k: sums[k]["sum"])
        _, db, key = top
        assert db == workload.DB and sums[top]["count"] == 20
        browser.wait(f"{ROW} && {ROW}.dataset.key === '{key}'", 30)
        browser.wait(f"{COUNT_OF.format(key=key)} === {sums[top]['count']}", 30)
        lookup = next(k for k in sums if k[1] == db and k[2] != key and sums[k]["count"] == 200)
        browser.wait(f"{COUNT_OF.format(key=lookup[2])} === 200", 30)
        failing = next(k for k in sums if sums[k]["errors"])
        assert sums[failing]["errors"] == 3
        errors = browser.eval(
            f"+document.querySelector(`#templates tr.tpl[data-key='{failing[2]}'] .col-errors`).textContent"
        )
        assert errors == 3

        # Phase 2: more of the same, shown without a reload.
        run_workload(server, sleeps=10, lookups=0)
        settle(collector)
        sums = totals(collector.reports)
        assert sums[top]["count"] == 30
        browser.wait(f"{COUNT_OF.format(key=key)} === 30", 30)
        assert browser.eval("window.__noReload") == 42
        assert browser.eval("performance.getEntriesByType('navigation').length") == 1

        # Capture health and cluster are on the page.
        assert browser.eval("document.querySelector('#h-drops').textContent") == "kernel/interface drops 0"
        assert "coverage" in browser.eval("document.querySelector('#h-coverage').textContent")
        assert node.config["node"] in browser.eval("document.querySelector('#cluster').textContent")
        assert "role slave" in browser.eval("document.querySelector('#node-info').textContent")

        # Filters: by text, by database.
        browser.call("fill", selector="#f-text", value="no_such_table")
        assert browser.eval("Array.from(document.querySelectorAll('#templates tr.tpl')).map(r => r.dataset.key)") == [
            failing[2]
        ]
        browser.call("fill", selector="#f-text", value="")
        browser.call("select", selector="#f-db", value=workload.DB)
        dbs = browser.eval(
            "Array.from(document.querySelectorAll('#templates tr.tpl .meta')).map(m => m.textContent.split(' · ')[1])"
        )
        assert dbs and set(dbs) == {workload.DB}
        # ... and by user: reports keep a template per account, the row names it.
        rows = "Array.from(document.querySelectorAll('#templates tr.tpl'))"
        users = browser.eval(f"{rows}.map(r => r.querySelector('.meta').textContent.split(' · ')[2])")
        assert users and set(users) == {"root"}
        browser.call("fill", selector="#f-user", value="nobody")
        assert browser.eval(f"{rows}.length") == 0
        browser.call("fill", selector="#f-user", value="roo")
        assert key in browser.eval(f"{rows}.map(r => r.dataset.key)")
        browser.call("fill", selector="#f-user", value="")

        shot = SCREENSHOTS / "live-table.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        browser.call("screenshot", path=str(shot))
        assert ink_fraction(shot) > 0.05, "the dashboard screenshot is blank"

        # The template detail: pretty text from the node, the distribution, samples redacted.
        browser.call("click", selector=f"#templates tr.tpl[data-key='{key}']")
        browser.wait(f"(document.querySelector('#detail-key') || {{}}).textContent === '{key}'")
        browser.wait("document.querySelector('#pretty').textContent.includes('\\n')", 20)
        pretty = browser.eval("document.querySelector('#pretty').textContent")
        assert pretty.startswith("SELECT SLEEP(?)") and "\n" in pretty
        assert browser.eval("document.querySelectorAll('#detail svg.histogram rect.bar').length") > 0
        stats = browser.eval(
            "Object.fromEntries(Array.from(document.querySelectorAll('#detail-stats tr'))"
            ".map(r => [r.cells[0].textContent, r.cells[1].textContent]))"
        )
        assert stats["calls"] == "30"
        samples = browser.eval("Array.from(document.querySelectorAll('#samples tr')).slice(1).map(r => r.innerText)")
        assert samples and all("SLEEP(?)" in s and "secret-literal" not in s for s in samples)
        assert all("root" in s for s in samples)
        shot = SCREENSHOTS / "live-detail.png"
        browser.call("screenshot", path=str(shot))
        assert ink_fraction(shot) > 0.05
        # New reports redraw the detail without moving what the reader scrolled to.
        scrolled = browser.eval(
            "(() => { const d = document.querySelector('#detail'); d.scrollTop = 150; return d.scrollTop; })()"
        )
        merged = browser.eval("MP.app.model.reportsMerged")
        browser.wait(f"MP.app.model.reportsMerged >= {merged + 2}", 30)
        assert scrolled > 0 and browser.eval("document.querySelector('#detail').scrollTop") == scrolled

        # Errors by code, with the message of a sample when one was kept.
        browser.call("click", selector="#close")
        browser.call("fill", selector="#f-text", value="no_such_table")
        browser.call("click", selector=f"#templates tr.tpl[data-key='{failing[2]}']")
        browser.wait("document.querySelector('#errors') !== null")
        assert "1146" in browser.eval("document.querySelector('#errors').textContent")
        assert "ER_NO_SUCH_TABLE" in browser.eval("document.querySelector('#errors').textContent")
        assert browser.problems() == {"problems": [], "blocked": []}
        browser.call("click", selector="#close")
        browser.call("fill", selector="#f-text", value="")

        # The node restarts: the page says so, reconnects by itself and goes on counting.
        collector.close()
        started = time.monotonic()
        assert node.stop() == 0
        assert time.monotonic() - started < 10  # an open dashboard does not hold the node up
        browser.wait("document.querySelector('#conn').textContent.startsWith('disconnected')", 30)
        node.start()
        collector = Collector(f"ws://127.0.0.1:{node.port}/collector")
        browser.wait("document.querySelector('#conn').textContent.startsWith('live')", 30)
        run_workload(server, sleeps=5, lookups=0)
        settle(collector)
        assert totals(collector.reports)[top]["count"] == 5
        try:
            browser.wait(f"{COUNT_OF.format(key=key)} === 35", 30)
        except BrowserError:
            raise AssertionError(explain(browser)) from None
        assert browser.eval("window.__noReload") == 42
    finally:
        browser.close()
        collector.close()
        node.stop()


def test_dashboard_endpoints_answer_before_the_first_report(tmp_path: Path, server: MariaDB) -> None:
    node = Node(tmp_path, {"interval": 60, "probe": {"device": "lo", "port": server.port, "workers": 1}}).start()
    try:
        with urllib.request.urlopen(node.url + "/api/dashboard/last", timeout=10) as resp:
            assert json.loads(resp.read()) is None
        try:
            urllib.request.urlopen(node.url + "/api/dashboard/template?key=0123456789abcdef", timeout=10)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404 and "no template" in json.loads(exc.read())["error"]
    finally:
        node.stop()


def test_master_dashboard_shows_slaves_breakdown_and_missing_intervals(server: MariaDB, tmp_path: Path) -> None:
    # Two slaves watch the same server (as two probes on one host would): each sees every
    # statement, so the master counts each statement twice, once per slave.
    slaves = [
        Node(tmp_path, {"interval": 1, "probe": {"device": "lo", "port": server.port, "workers": 1}}, name).start()
        for name in ("s1", "s2")
    ]
    master = Node(tmp_path, {"slave": False, "interval": 1}, "m1").start()
    browser = Browser()
    collector: Collector | None = None
    try:
        for node in slaves:
            assert master.request(f"/cluster/join?addr=127.0.0.1:{node.port}")[0] == 200
        collector = Collector(f"ws://127.0.0.1:{master.port}/collector")
        collector.wait_for(
            lambda c: any(len([s for s in r["slaves"] if s["state"] == "reporting"]) == 2 for r in c.reports)
        )
        browser.goto(master.url + "/")
        browser.wait("document.querySelectorAll('#slaves tr[data-node]').length === 2", 30)
        run_workload(server, sleeps=8, lookups=50)
        settle(collector)
        sums = totals(collector.reports)
        top = max(sums, key=lambda k: sums[k]["sum"])
        assert sums[top]["count"] == 16  # 8 statements, seen by both slaves
        browser.wait(f"{ROW} && {ROW}.dataset.key === '{top[2]}'", 30)
        browser.wait(f"{COUNT_OF.format(key=top[2])} === 16", 30)
        assert "role master" in browser.eval("document.querySelector('#node-info').textContent")
        cluster = browser.eval(
            "Array.from(document.querySelectorAll('#cluster tr')).slice(1)"
            ".map(r => Array.from(r.cells).map(c => c.textContent))"
        )
        assert cluster[0][:2] == ["m1 (this node)", "master"] and cluster[0][4] == "★ leader"
        assert sorted(row[1] for row in cluster[1:]) == ["slave", "slave"]

        browser.call("click", selector=f"#templates tr.tpl[data-key='{top[2]}']")
        browser.wait("document.querySelector('#per-slave') !== null")
        per_slave = browser.eval(
            "Array.from(document.querySelectorAll('#per-slave tr')).slice(1)"
            ".map(r => [r.cells[0].textContent, r.cells[1].textContent])"
        )
        assert sorted(per_slave) == [["s1", "8"], ["s2", "8"]]
        shot = SCREENSHOTS / "master-detail.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        browser.call("screenshot", path=str(shot))
        assert ink_fraction(shot) > 0.05
        browser.call("click", selector="#close")

        # A slave that dies: its intervals are missing, on the page as in the report.
        slaves[1].stop(signal.SIGKILL)
        collector.wait_for(lambda c: any(m["node"] == "s2" for m in c.reports[-1]["missing"]), 30)
        browser.wait(
            "Array.from(document.querySelectorAll('#missing li')).some(li => li.textContent.startsWith('s2'))", 30
        )
        state = browser.eval("document.querySelector(\"#slaves tr[data-node='s2']\").cells[1].textContent")
        assert state != "reporting"
        shot = SCREENSHOTS / "master-table.png"
        browser.call("screenshot", path=str(shot))
        assert browser.problems() == {"problems": [], "blocked": []}
    finally:
        browser.close()
        if collector is not None:
            collector.close()
        master.stop()
        for node in slaves:
            node.stop()


def test_history_range_picker_switches_between_live_and_a_past_range(server: MariaDB, tmp_path: Path) -> None:
    # A slave no master subscribes to keeps history (history.mode auto).
    config = {"interval": 1, "slowthresholdms": 20, "probe": {"device": "lo", "port": server.port, "workers": 1}}
    node = Node(tmp_path, config, "hist").start()
    collector = Collector(f"ws://127.0.0.1:{node.port}/collector")
    browser = Browser()
    try:
        browser.goto(node.url + "/")
        browser.wait("document.querySelector('#conn').textContent.startsWith('live')")
        run_workload(server, sleeps=12, lookups=40)
        settle(collector)
        sums = totals(collector.reports)
        top = max(sums, key=lambda k: sums[k]["sum"])
        assert sums[top]["count"] == 12
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the history writer runs behind the feed
            stored = node.get("/api/history/top?from=-15m&limit=1")["templates"]
            if stored and stored[0]["key"] == top[2] and stored[0]["count"] == 12:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"history never held the workload: {stored}")
        browser.wait(f"{COUNT_OF.format(key=top[2])} === 12", 30)

        browser.call("select", selector="#mode", value="history")
        browser.call("select", selector="#h-range", value="-15m")
        browser.wait("document.querySelector('#history-note').textContent.startsWith('History')", 30)
        browser.wait(f"{ROW} && {ROW}.dataset.key === '{top[2]}' && {COUNT_OF.format(key=top[2])} === 12", 30)
        assert browser.eval("document.querySelector('th.col-spark-calls')") is None  # trends are live-only
        shot = SCREENSHOTS / "history-table.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        browser.call("screenshot", path=str(shot))
        assert ink_fraction(shot) > 0.05
        note = browser.eval("document.querySelector('#history-note').textContent")
        assert "templates" in note and "held from" in note
        browser.call("click", selector=f"#templates tr.tpl[data-key='{top[2]}']")
        try:
            browser.wait("document.querySelector('#history-series') !== null", 60)
        except BrowserError:
            raise AssertionError(explain(browser)) from None
        stats = browser.eval(
            "Object.fromEntries(Array.from(document.querySelectorAll('#detail-stats tr'))"
            ".map(r => [r.cells[0].textContent, r.cells[1].textContent]))"
        )
        assert stats["calls"] == "12"
        shot = SCREENSHOTS / "history-detail.png"
        browser.call("screenshot", path=str(shot))
        assert ink_fraction(shot) > 0.05
        browser.call("click", selector="#close")

        # A range before the workload holds none of it; a bad range is the node's 400 reason.
        browser.call("fill", selector="#h-from", value="-2d")
        browser.call("fill", selector="#h-to", value="-1d")
        browser.call("click", selector="#h-show")
        browser.wait("document.querySelector('#templates tr.empty') !== null", 30)
        browser.call("fill", selector="#h-from", value="yesterday-ish")
        browser.call("click", selector="#h-show")
        browser.wait("document.querySelector('#history-note').textContent.startsWith('history: from:')", 30)

        # Back to live: the feed's table, with its trends.
        browser.call("select", selector="#mode", value="live")
        browser.wait(f"{COUNT_OF.format(key=top[2])} === 12", 30)
        assert browser.eval("document.querySelector('th.col-spark-calls') !== null")

        # Without redact, a slow prepared statement's sample shows its parameters.
        conn = mysql.connector.connect(
            host="127.0.0.1", port=server.port, user="root", database=workload.DB, use_pure=True, autocommit=True
        )
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT SLEEP(%s), %s AS tag", (0.03, "visible-param"))
        cur.fetchall()
        conn.close()
        collector.wait_for(lambda c: any("AS tag" in x["sql"] for r in c.reports for x in r["slow"]), 30)
        sample = next(x for r in collector.reports for x in r["slow"] if "AS tag" in x["sql"])
        assert sample["params"] == [0.03, "visible-param"]
        browser.wait(f"MP.app.model.slow.some(s => s.trace_id === '{sample['trace_id']}')", 30)
        browser.call("fill", selector="#f-text", value="AS tag")
        browser.call("click", selector="#templates tr.tpl")
        try:
            browser.wait("document.querySelector('#samples') !== null", 30)
        except BrowserError:
            raise AssertionError(explain(browser)) from None
        params = browser.eval("document.querySelector('#samples tr:nth-child(2) td.params').textContent")
        assert json.loads(params) == [0.03, "visible-param"]
        assert browser.problems()["problems"] == [
            "console: Failed to load resource: the server responded with a status of 400 (Bad Request)"
        ]
    finally:
        browser.close()
        collector.close()
        node.stop()


def test_with_a_token_the_report_endpoints_need_it_and_the_page_passes_it_on(server: MariaDB, tmp_path: Path) -> None:
    config = {"interval": 1, "token": "t0k", "probe": {"device": "lo", "port": server.port, "workers": 1}}
    node = Node(tmp_path, config, "tok").start()
    browser = Browser()
    try:
        for path in ("/api/dashboard/last", "/api/dashboard/template?key=0123456789abcdef"):
            status, body = node.request(path)
            assert status == 401 and "token" in body["error"]
        assert node.request("/api/dashboard/last", headers={"X-Mysqlprobe-Token": "t0k"})[0] == 200
        assert node.request("/api/dashboard/template?key=0123456789abcdef&token=t0k")[0] == 404
        browser.goto(node.url + "/?token=t0k")
        browser.wait("document.querySelector('#conn').textContent.startsWith('live')", 30)
        run_workload(server, sleeps=2, lookups=5)
        browser.wait("MP.app.model.reportsMerged >= 2 && document.querySelectorAll('#templates tr.tpl').length > 0", 30)
        browser.wait("(document.querySelector('#cluster') || {}).textContent.includes('tok')", 30)
        # History mode asks /api/history/* (query data: token) with the page's token too.
        deadline = time.monotonic() + 30
        while not node.request("/api/history/top?from=-15m&limit=1&token=t0k")[1]["templates"]:
            assert time.monotonic() < deadline, "history never held the workload"
            time.sleep(0.3)
        assert node.request("/api/history/top?from=-15m")[0] == 401
        browser.call("select", selector="#mode", value="history")
        browser.call("select", selector="#h-range", value="-15m")
        browser.wait("document.querySelector('#history-note').textContent.startsWith('History')", 30)
        browser.wait("document.querySelectorAll('#templates tr.tpl').length > 0", 30)
        assert browser.problems() == {"problems": [], "blocked": []}
    finally:
        browser.close()
        node.stop()
