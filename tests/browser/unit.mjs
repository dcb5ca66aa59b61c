// Runs the dashboard's pure scripts (snappy decoder, sketch model) under Node on cases a
// Python test wrote (argv[2]), and prints what they computed, for the test to compare with
// python-snappy and message.sketch. Used by tests/mysqlprobe/test_dashboard_js.py.
import { readFileSync } from "node:fs";
import { runInThisContext } from "node:vm";

const web = new URL("../../mysqlprobe/web/", import.meta.url);
for (const name of ["snappy.js", "model.js"]) runInThisContext(readFileSync(new URL(name, web), "utf8"), { filename: name });
const MP = globalThis.MP;
const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = { snappy: [], quantiles: [], model: null };

for (const c of cases.snappy) {
  try {
    const plain = MP.snappyDecode(Buffer.from(c.block, "base64"));
    out.snappy.push({ ok: Buffer.from(plain).toString("base64") });
  } catch (err) {
    out.snappy.push({ error: String(err.message) });
  }
}
for (const c of cases.quantiles) {
  const sketch = MP.newSketch();
  for (const part of c.parts) MP.addWireSketch(sketch, part);
  out.quantiles.push(MP.quantiles(sketch, c.qs));
}
if (cases.reports) {
  const model = new MP.Model({ windowS: cases.window_s });
  const accepted = cases.reports.map((r) => model.add(r));
  out.model = {
    accepted,
    rows: model.rows().map((r) => ({ key: r.key, db: r.db, server: r.server, count: r.count, errors: r.errors, p99: r.p99, share: r.share })),
    frames: model.frames.length,
    health: model.health(),
    series: Object.fromEntries(model.rows().map((r) => [r.key, model.series(r.id).map((p) => p[2])])),
  };
}
if (cases.eviction) {
  // Reports one per frame through a short window (frames leave it), against a model fed only
  // the reports that are still in the window: the same rows either way.
  const rowsOf = (m) =>
    m
      .rows()
      .map((r) => ({
        id: r.id, count: r.count, errors: r.errors, sum: r.sum, p50: r.p50, p99: r.p99, min: r.agg.min,
        max: r.agg.max, first: r.agg.first, last: r.agg.last, rows: r.agg.rowsSent, slaves: r.agg.slaves,
        errorsByCode: r.agg.errors, buckets: Array.from(r.agg.sketch.bins.entries()).sort((a, b) => a[0] - b[0]),
      }))
      .sort((a, b) => (a.id < b.id ? -1 : 1));
  const incremental = new MP.Model({ windowS: cases.eviction.window_s });
  const kept = [];
  for (const r of cases.eviction.reports) {
    incremental.add(r);
    incremental.rows(); // the window is built, then kept up to date
  }
  const fresh = new MP.Model({ windowS: cases.eviction.window_s });
  const first = incremental.frames[0].start;
  for (const r of cases.eviction.reports) if (r.interval.start_ns >= first) (fresh.add(r), kept.push(r.seq));
  out.eviction = { incremental: rowsOf(incremental), fresh: rowsOf(fresh), kept, frames: incremental.frames.length,
    health: [incremental.health(), fresh.health()] };
}
process.stdout.write(JSON.stringify(out));
