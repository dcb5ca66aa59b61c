"""Benchmark: what one /collector message costs the dashboard in the browser's engine.

Builds a master's merged report of 1,000 templates from 20 slaves with the real merge
(``cluster.merge``), encodes it as /collector does, and times in Node (the V8 engine
Chromium runs) the page's snappy decoder alone and decoder plus ``JSON.parse``, median of
30 runs. The page's merge-and-redraw cost at the same scale is measured in Chromium by
``tests/mysqlprobe/test_dashboard_report.py::test_dashboard_reads_at_1000_templates_and_20_slaves``.
Run from the repository root: ``python3 bench/dashboard_cost.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from message import encode  # noqa: E402
from tests.mysqlprobe.test_dashboard_report import _cluster_report  # noqa: E402

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


if __name__ == "__main__":
    main()
