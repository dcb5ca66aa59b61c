"""``mysqlprobe replay --format html``: one self-contained file that Chromium opens with the
network cut off and that shows the capture's top template; and the dashboard at the scale
the issue names (1,000 templates, 20 slaves), fed by the master's real merge."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cluster.merge import ReportMerger
from message import LatencySketch, TemplateStats
from mysqlprobe.dashboard import page, report_html
from tests.support.browser import Browser, ink_fraction

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample.pcap.gz"
SCREENSHOTS = Path(os.environ.get("MYSQLPROBE_SCREENSHOTS", "/tmp/mysqlprobe-screenshots"))


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mysqlprobe.cli", "replay", str(SAMPLE), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_html_report_opens_offline_and_shows_the_top_template(tmp_path: Path) -> None:
    doc = json.loads(replay("--format", "json").stdout)
    out = tmp_path / "report.html"
    result = replay("--format", "html", "-o", str(out))
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    # Self-contained: no script, style or image is loaded from anywhere.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", html)
    top = doc["templates"][0]
    with Browser() as browser:
        browser.goto(out.as_uri(), offline=True)
        browser.wait("document.querySelectorAll('#templates tr.tpl').length > 0", 20)
        row = browser.eval(
            "(r => ({key: r.dataset.key, count: r.querySelector('.col-count').textContent,"
            " text: r.querySelector('.sql').textContent}))(document.querySelector('#templates tr.tpl'))"
        )
        assert row == {"key": top["key"], "count": f"{top['count']:,}", "text": top["template"]}
        info = browser.eval("document.querySelector('#page-info').textContent")
        assert info == f"1-{min(50, len(doc['templates']))} of {len(doc['templates'])} templates"
        shot = SCREENSHOTS / "replay-report.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        browser.call("screenshot", path=str(shot))
        assert ink_fraction(shot) > 0.05, "the report screenshot is blank"
        browser.call("click", selector="#templates tr.tpl")
        browser.wait("document.querySelector('#detail-key') !== null")
        pretty = browser.eval("document.querySelector('#pretty').textContent")
        assert "\n" in pretty and pretty.split() == top["template"].split()
        assert browser.eval("document.querySelectorAll('#detail svg.histogram rect.bar').length") > 0
        assert browser.problems() == {"problems": [], "blocked": []}


def test_html_report_bad_output_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = replay("--format", "html", "-o", str(tmp_path / "no" / "such" / "dir.html"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "cannot write" in result.stderr


def test_script_json_cannot_close_the_script_element() -> None:
    doc = {"templates": [], "slow": [{"sql": "SELECT '</script><script>alert(1)</script>'"}]}
    html = page("t", {"doc": doc, "pretty": {}})
    block = html.split('id="mysqlprobe-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(block)["doc"] == doc


def _cluster_report(templates: int, slaves: int) -> dict[str, Any]:
    """A master's merged report of ``slaves`` slaves sharing ``templates`` templates."""
    rng = random.Random(3)
    merger = ReportMerger()
    now = time.time_ns()
    for n in range(slaves):
        entries = []
        for i in range(templates):
            text = f"SELECT c{i} FROM t{i} WHERE id = ?"
            stats = TemplateStats(f"10.0.0.{i % 4}:3306", f"db{i % 7}", f"{i:016x}", text)
            for _ in range(rng.randrange(1, 5)):
                latency = int(rng.lognormvariate(6 + (i % 10) / 3, 1))
                stats.count += 1
                stats.commands["Query"] = stats.count
                stats.latency_sum += latency
                stats.latency_min = min(stats.latency_min or latency, latency)
                stats.latency_max = max(stats.latency_max, latency)
                stats.sketch.add(latency)
            stats.first_seen_ns, stats.last_seen_ns = now - 10**10, now
            entries.append(stats.to_json())
        report = {
            "node": f"slave-{n:02d}",
            "seq": 4 if n % 5 == 0 else 1,  # every fifth slave lost two intervals (2 and 3)
            "interval": {"start_ns": now - 10**10, "end_ns": now},
            "templates": entries,
            "totals": {"queries": sum(e["count"] for e in entries), "commands": 1, "errors": 0},
            "slow": [],
        }
        if n % 5 == 0:
            assert merger.add({**report, "seq": 1, "templates": []}) == "merged"
        assert merger.add(report) == "merged"
    doc = merger.drain(
        node="master",
        role="master",
        seq=9,
        epoch=2,
        start_ns=now - 10**10,
        end_ns=now,
        expected=[f"slave-{n:02d}" for n in range(slaves)],
    )
    assert LatencySketch.from_json(doc["templates"][0]["latency_us"]["sketch"]).count > 0
    return doc


def test_dashboard_reads_at_1000_templates_and_20_slaves(tmp_path: Path) -> None:
    doc = _cluster_report(1000, 20)
    out = tmp_path / "cluster.html"
    out.write_text(report_html(doc))
    with Browser() as browser:
        browser.goto(out.as_uri(), offline=True)
        browser.wait("document.querySelectorAll('#templates tr.tpl').length > 0", 30)
        assert browser.eval("document.querySelectorAll('#templates tr.tpl').length") == 50
        assert browser.eval("document.querySelector('#page-info').textContent") == "1-50 of 1,000 templates"
        assert browser.eval("document.querySelector('#templates tr.tpl').dataset.key") == doc["templates"][0]["key"]
        assert browser.eval("document.querySelectorAll('#slaves tr[data-node]').length") == 20
        assert browser.eval("document.querySelectorAll('#missing li').length") == 4 * 2  # 4 slaves x 2 seqs
        # Sorting, paging and filtering all 1,000 rows stays interactive.
        elapsed = browser.eval(
            "(() => { const t = performance.now(); document.querySelector('th.col-p99').click();"
            " document.querySelector('#next').click(); return performance.now() - t; })()"
        )
        assert elapsed < 1000, f"sort + page took {elapsed:.0f} ms"
        assert browser.eval("document.querySelector('#page-info').textContent") == "51-100 of 1,000 templates"
        # A new merged report every interval: decoding aside, merging it into the window and
        # drawing the page again stays well under the default 10 s interval.
        cost = browser.eval(
            """(() => {
              const app = MP.app, doc = app.data.doc, times = [];
              for (let i = 1; i <= 20; i++) {
                const r = JSON.parse(JSON.stringify(doc));
                r.seq = doc.seq + i;
                r.interval = {start_ns: doc.interval.start_ns + i * 1e10, end_ns: doc.interval.end_ns + i * 1e10};
                const t = performance.now();
                app.model.add(r);
                app.render();
                times.push(performance.now() - t);
              }
              times.sort((a, b) => a - b);
              return {median: times[10], max: times[19], frames: app.model.frames.length};
            })()"""
        )
        print(f"merge + render of a 1,000-template, 20-slave report: {cost}")
        assert cost["frames"] == 21 and cost["median"] < 1000, cost
        browser.call("fill", selector="#f-text", value="t999 ")
        assert browser.eval("document.querySelectorAll('#templates tr.tpl').length") == 1
        browser.call("fill", selector="#f-text", value="")
        browser.call("click", selector="#templates tr.tpl")
        browser.wait("document.querySelector('#per-slave') !== null")
        assert browser.eval("document.querySelectorAll('#per-slave tr').length") == 20 + 1
        shot = SCREENSHOTS / "cluster-scale.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        browser.call("screenshot", path=str(shot))
        assert ink_fraction(shot) > 0.05
        assert browser.problems() == {"problems": [], "blocked": []}
