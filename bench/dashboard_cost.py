"""Benchmark: what one /collector message costs the dashboard in the browser's engine.

Builds a master's merged report of 1,000 templates from 20 slaves with the real merge
(``cluster.merge``), encodes it as /collector does, and times in Node (the V8 engine
Chromium runs) the page's snappy decoder alone and decoder plus ``JSON.parse``, median of
30 runs; then in headless Chromium (the page of ``replay --format html`` with that report,
switched to draw the live trend columns too) the cost of merging each of 60 such reports
into the 5-minute window and redrawing: median, 90th percentile and max.
Run from the repository root: ``python3 bench/dashboard_cost.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from message import encode  # noqa: E402
from mysqlprobe.dashboard import report_html  # noqa: E402
from tests.mysqlprobe.test_dashboard_report import _cluster_report  # noqa: E402
from tests.support.browser import Browser  # noqa: E402

TIMER = r"""
const fs = require("fs"), vm = require("vm");
vm.runInThisContext(fs.readFileSync(process.argv[1] + "/mysqlprobe/web/snappy.js", "utf8"));
const block = fs.readFileSync(process.argv[2]);
function median(f) {
  const t = [];
  for (let i = 0; i < 30; i++) {
    const s = process.hrtime.bigint();
    f();
    t.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  return t.sort((a, b) => a - b)[15];
}
const snappy = median(() => MP.snappyDecode(block));
console.log(JSON.stringify({snappy_ms: snappy, decode_and_parse_ms: median(() => MP.decodeMessage(block))}));
"""

PAGE = """(() => {
  const app = MP.app, doc = app.data.doc, total = [], merge = [];
  app.live = true; // draw the live-only trend columns as a live page does
  for (let i = 1; i <= 60; i++) {
    const r = JSON.parse(JSON.stringify(doc));
    r.seq = doc.seq + i;
    r.interval = {start_ns: doc.interval.start_ns + i * 1e10, end_ns: doc.interval.end_ns + i * 1e10};
    const t = performance.now();
    app.model.add(r);
    const m = performance.now();
    app.render();
    total.push(performance.now() - t);
    merge.push(m - t);
  }
  total.sort((a, b) => a - b);
  merge.sort((a, b) => a - b);
  return {median: total[30], p90: total[54], max: total[59], merge_median: merge[30], frames: app.model.frames.length};
})()"""


def in_chromium(doc: dict[str, Any]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "scale.html"
        page.write_text(report_html(doc))
        with Browser() as browser:
            browser.goto(page.as_uri(), offline=True)
            browser.wait("document.querySelectorAll('#templates tr.tpl').length > 0", 60)
            result: dict[str, float] = browser.eval(PAGE)
            return result


def main() -> None:
    doc = _cluster_report(1000, 20)
    block = encode(doc)
    with tempfile.NamedTemporaryFile(suffix=".snappy") as fh:
        fh.write(block)
        fh.flush()
        result = subprocess.run(["node", "-e", TIMER, str(ROOT), fh.name], capture_output=True, text=True, check=True)
    times = json.loads(result.stdout)
    print(f"report: 1,000 templates x 20 slaves, {len(json.dumps(doc)):,} bytes of JSON, {len(block):,} bytes snappy")
    print(
        f"snappy decode {times['snappy_ms']:.1f} ms, decode + JSON.parse {times['decode_and_parse_ms']:.1f} ms"
        " (median of 30)"
    )
    page = in_chromium(doc)
    print(
        f"Chromium, window of {page['frames']} frames: merge + redraw median {page['median']:.0f} ms,"
        f" p90 {page['p90']:.0f} ms, max {page['max']:.0f} ms (merge alone median {page['merge_median']:.0f} ms)"
    )


if __name__ == "__main__":
    main()
