"""The replay's text profile (mysqlprobe/render.py) and the dashboard's template layout."""

from __future__ import annotations

from typing import Any

from message.report import TemplateStats
from mysqlprobe.dashboard import pretty
from mysqlprobe.render import profile

TEMPLATE = "SELECT day, data, `year` FROM events WHERE day = ? AND data LIKE ?"


def doc(template: str) -> dict[str, Any]:
    stats = TemplateStats("10.0.0.1:3306", "shop", "00000000000000cc", template)
    stats.count = 1
    stats.sketch.add(100)
    stats.latency_sum = stats.latency_min = stats.latency_max = 100
    totals = dict.fromkeys(("queries", "commands", "errors", "packets", "bytes", "gaps", "resyncs"), 1)
    totals.update(encrypted_conns=0, unparsed_packets=0, responses_lost=0, coverage=1.0)
    return {
        "source": {"file": "x.pcap", "error": None},
        "interval": {"start_ns": 0, "end_ns": 10**9},
        "totals": totals,
        "analysis": {"elapsed_s": 0.1, "workers": 1},
        "templates": [stats.to_json()],
    }


def test_detail_view_keeps_identifiers_that_are_keywords() -> None:
    detail = profile(doc(TEMPLATE), top=5, width=120).split("# Query 1:", 1)[1]
    assert "day," in detail and "data," in detail and "day = ?" in detail and "data LIKE ?" in detail
    assert "DAY" not in detail and "DATA" not in detail
    assert "SELECT" in detail and "FROM events" in detail


def test_dashboard_layout_keeps_identifiers_that_are_keywords() -> None:
    laid_out = pretty(TEMPLATE)
    assert "DAY" not in laid_out and "DATA" not in laid_out and "data LIKE ?" in laid_out
