"""Fill the example responses in docs/*.md from real nodes.

Starts a throw-away MariaDB, a slave capturing it on lo, a static-mode master subscribed to
it and, for the standby page, a gossip-mode group (two master-capable nodes and a slave
witness); runs a small workload; then asks every endpoint and writes each answer between
``<!-- example NAME -->`` and ``<!-- end example -->`` in the docs. Long lists are cut to
two entries (``"… N more"``) and long strings to 200 characters; nothing else is edited.

    sudo python3 scripts/doc_examples.py      # from the repository root; needs root (capture)
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pymysql  # noqa: E402

from tests.support import workload  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402
from tests.support.nodes import Collector, Node, gossip_configs  # noqa: E402

TOKEN = "doc-token"
DOCS = ROOT / "docs"
#: Examples that read query data: with a token set they need it (README "Security").
QUERY_DATA = {
    "events-scan",
    "events-query",
    "events-query-missing",
    "history-top",
    "history-series",
    "history-template",
    "dashboard-last",
    "dashboard-template",
}


def trim(value: Any, depth: int = 0) -> Any:
    if isinstance(value, list):
        items = [trim(v, depth + 1) for v in value[:2]]
        return items + ([f"… {len(value) - 2} more"] if len(value) > 3 else [trim(v) for v in value[2:3]])
    if isinstance(value, dict):
        return {k: trim(v, depth + 1) for k, v in value.items()}
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "…"
    return value


def call(node: Node, path: str, method: str = "GET", token: bool = False) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
    request = urllib.request.Request(node.url + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def example(node: Node, path: str, method: str = "GET", token: bool = False, lines: int = 0) -> str:
    status, content_type, body = call(node, path, method, token)
    shown = f"{method} {path}{'  (with the token)' if token else ''}\n-> {status} {content_type.split(';')[0]}\n"
    if content_type.startswith("application/json"):
        return shown + json.dumps(trim(json.loads(body)), indent=2, ensure_ascii=False)
    text = body.splitlines()
    if lines:
        text = text[:lines] + ([f"… {len(body.splitlines()) - lines} more lines"] if len(text) > lines else [])
    return shown + "\n".join(text)


def metrics_excerpt(node: Node, token: bool = False) -> str:
    _, content_type, body = call(node, "/metrics", token=token)
    wanted = re.compile(
        r"^(# (HELP|TYPE) )?mysqlprobe_(statements_total|statement_latency_seconds_bucket|template_info|"
        r"capture_packets_total|capture_dropped_kernel_total|coverage_ratio|role|epoch|build_info|"
        r"reports_spooled|subscribers|merge_duplicates_total|merge_missing_intervals_total)\b"
    )
    kept: list[str] = []
    per_name: dict[str, int] = {}
    for line in body.splitlines():
        if not wanted.match(line):
            continue
        name = line.split("{")[0].split(" ")[0 if not line.startswith("#") else 2]
        per_name[name] = per_name.get(name, 0) + 1
        if line.startswith("#") or per_name[name] <= 3:
            kept.append(line)
    shown = f"GET /metrics{'  (with the token)' if token else ''}\n-> 200 {content_type.split(';')[0]} (excerpt)\n"
    return shown + "\n".join(kept)


def collector_example(node: Node) -> str:
    collector = Collector(f"ws://127.0.0.1:{node.port}/collector?token={TOKEN}")
    try:
        collector.wait_for(lambda c: any(r["templates"] for r in c.reports), timeout=30)
        report = next(r for r in collector.reports if r["templates"])
    finally:
        collector.close()
    return "GET /collector (websocket; one binary message per report, shown decoded)\n" + json.dumps(
        trim(report), indent=2, ensure_ascii=False
    )


def fill(page: str, examples: dict[str, str]) -> None:
    path = DOCS / page
    text = path.read_text()
    for name, body in examples.items():
        pattern = re.compile(rf"(<!-- example {re.escape(name)} -->\n).*?(<!-- end example -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{page}: no example block named {name!r}")
        text = pattern.sub(lambda m, b=body: f"{m.group(1)}```\n{b}\n```\n{m.group(2)}", text)
    path.write_text(text)


def run_workload(server: MariaDB) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", database=workload.DB, autocommit=True)
    with conn.cursor() as cur:
        for i in range(50):
            cur.execute("SELECT id, name, price FROM items WHERE id = %s", (i,))
            cur.fetchall()
            cur.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (i,))
        with contextlib.suppress(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM no_such_table")
    conn.close()


def main() -> None:
    directory = Path(tempfile.mkdtemp(prefix="mysqlprobe-docs-"))
    server = MariaDB()
    server.start()
    workload.prepare_schema(server)
    nodes: list[Node] = []
    try:
        slave = Node(
            directory,
            {
                "interval": 2,
                "token": TOKEN,
                "slowthresholdms": 5,
                "probe": {"device": "lo", "port": server.port, "workers": 2},
                "watcher": {"uname": "root", "refreshs": 2},
            },
            "slave-1",
        ).start()
        nodes.append(slave)
        master = Node(directory, {"interval": 2, "token": TOKEN, "slave": False}, "master-1").start()
        nodes.append(master)
        join = example(master, f"/cluster/join?addr=127.0.0.1:{slave.port}", "POST", token=True)
        time.sleep(3)
        run_workload(server)
        conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SELECT SLEEP(0.02)")
        conn.close()
        time.sleep(5)
        scan = json.loads(call(slave, "/events/scan?limit=1", token=True)[2])
        trace_id = scan["events"][0]["trace_id"] if scan["events"] else "none"
        last = json.loads(call(slave, "/api/dashboard/last", token=True)[2])
        key = next((t["key"] for t in last.get("templates", []) if t.get("count")), "0")
        common = {
            "status": "/status",
            "collector": None,
            "metrics": None,
            "config-update": "/config/update?report_period_ms=2000&slow_threshold_ms=5",
            "config-update-bad": "/config/update?report_period_ms=5",
            "listnodes": "/cluster/listnodes",
            "events-status": "/events/status",
            "events-scan": "/events/scan?limit=1",
            "events-query": f"/events/query?trace_id={trace_id}",
            "events-query-missing": "/events/query?trace_id=nope.0.0",
            "metrics-raw": "/api/metrics/raw?seconds=3",
            "metrics-aggregate": "/api/metrics/aggregate?seconds=60",
            "history-top": "/api/history/top?from=-5m&limit=2",
            "history-series": f"/api/history/series?key={key}&from=-5m&step=1m",
            "history-template": f"/api/history/template?key={key}",
            "dashboard-last": "/api/dashboard/last",
            "dashboard-template": f"/api/dashboard/template?key={key}",
            "index": "/",
        }
        for page, node in (("slave.md", slave), ("master.md", master)):
            examples: dict[str, str] = {}
            for name, path in common.items():
                if name == "collector":
                    examples[name] = collector_example(node)
                elif name == "metrics":
                    examples[name] = metrics_excerpt(node, token=True)
                elif name.startswith("config-update"):
                    examples[name] = example(node, path, "POST", token=True)
                elif name == "index":
                    examples[name] = example(node, path, lines=3)
                else:
                    assert path is not None
                    examples[name] = example(node, path, token=name in QUERY_DATA)
            if page == "slave.md":
                examples["events-delete"] = example(node, f"/events/delete?trace_id={trace_id}", "POST", token=True)
                examples["events-delete-token"] = example(node, f"/events/delete?trace_id={trace_id}", "POST")
                examples["events-scan-token"] = example(node, "/events/scan?limit=1")
            else:
                examples["join"] = join
                examples["report-totals"] = example(node, "/report/totals", token=True)
                examples["remove-missing"] = example(node, "/cluster/remove?addr=127.0.0.1:1", "POST", token=True)
            fill(page, examples)
        fill("standby.md", standby_examples(directory, server))
    finally:
        for node in nodes:
            node.stop()
        server.destroy()


def standby_examples(directory: Path, server: MariaDB) -> dict[str, str]:
    names = ["m1", "m2", "s1"]
    nodes: dict[str, Node] = {}
    try:
        for name, config in gossip_configs(names, names, interval=2).items():
            if name.startswith("s"):
                config["probe"] = {"device": "lo", "port": server.port, "workers": 1}
            nodes[name] = Node(directory, config, f"gossip-{name}").start()
        deadline = time.monotonic() + 60
        while True:
            roles = {n: nodes[n].get("/status")["role"] for n in ("m1", "m2")}
            if sorted(roles.values()) == ["master", "standby"]:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"no master and standby: {roles}")
            time.sleep(0.5)
        standby = nodes[next(n for n, r in roles.items() if r == "standby")]
        time.sleep(6)  # gossip converges
        return {
            "standby-status": example(standby, "/status"),
            "standby-listnodes": example(standby, "/cluster/listnodes"),
            "standby-metrics": "\n".join(
                line
                for line in metrics_excerpt(standby).splitlines()
                if "role" in line or "epoch" in line or line.startswith(("GET", "->"))
            ),
        }
    finally:
        for node in nodes.values():
            node.stop()


if __name__ == "__main__":
    main()
