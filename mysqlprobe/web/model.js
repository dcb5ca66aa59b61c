// The dashboard's data: reports in, per-template aggregates over a time window out. No DOM.
//
// Reports are merged into frames (time slots of the window; 60 slots per window), per
// (server, db, user, template key), exactly as the master merges: counts and sums add, errors add
// per code, latency sketches add bucket by bucket, min/max take extremes. Quantiles come from
// the merged buckets with DDSketch's rule (mysqlprobe/message/sketch.py), never from averaged
// quantiles. A report seen twice (same node and seq) is merged once.
(function (root) {
  "use strict";
  const MP = (root.MP = root.MP || {});

  const ALPHA = 0.01;
  const GAMMA = 1 + (2 * ALPHA) / (1 - ALPHA);
  const SLOTS = 60;
  const MAX_SLOW = 500; // slow samples kept for the window, worst first
  const MAX_MISSING = 200; // missing intervals remembered (master)
  const MAX_TEXTS = 20000; // template texts kept beyond those in the window

  // The value a sketch bucket stands for (ddsketch LogarithmicMapping.value).
  function bucketValue(key) {
    return Math.pow(GAMMA, key) * (2 / (1 + GAMMA));
  }

  // Where a value (µs) falls on the bucket axis, fractionally: the inverse of bucketValue.
  function bucketPosition(value) {
    return Math.log((value * (1 + GAMMA)) / 2) / Math.log(GAMMA);
  }

  function newSketch() {
    return { zero: 0, bins: new Map(), count: 0 };
  }

  function addWireSketch(sketch, wire) {
    if (!wire) return;
    const keys = wire.keys || [];
    const counts = wire.counts || [];
    sketch.zero += wire.zero || 0;
    sketch.count += wire.zero || 0;
    for (let i = 0; i < keys.length; i++) {
      sketch.bins.set(keys[i], (sketch.bins.get(keys[i]) || 0) + counts[i]);
      sketch.count += counts[i];
    }
  }

  function mergeSketch(into, other) {
    into.zero += other.zero;
    into.count += other.count;
    for (const [k, n] of other.bins) into.bins.set(k, (into.bins.get(k) || 0) + n);
  }

  // Values (µs) at quantiles qs (ascending), null when empty: DDSketch's get_quantile_value.
  function quantiles(sketch, qs) {
    if (!sketch || sketch.count === 0) return qs.map(() => null);
    const keys = Array.from(sketch.bins.keys()).sort((a, b) => a - b);
    const out = [];
    let i = 0;
    let running = 0;
    for (const q of qs) {
      const rank = q * (sketch.count - 1);
      if (rank < sketch.zero) {
        out.push(0);
        continue;
      }
      const want = rank - sketch.zero;
      while (i < keys.length && !(running + sketch.bins.get(keys[i]) > want)) {
        running += sketch.bins.get(keys[i]);
        i++;
      }
      out.push(bucketValue(keys[Math.min(i, keys.length - 1)]));
    }
    return out;
  }

  // A template's quantiles clamped into its [min, max], as the report's are: the sketch's 1%
  // error must never show a median below the fastest call.
  function aggQuantiles(agg, qs) {
    const q = quantiles(agg.sketch, qs);
    if (!agg.count) return q;
    return q.map((v) => (v === null ? null : Math.min(Math.max(v, agg.min), agg.max)));
  }

  function newAgg(entry) {
    return {
      id: entry.server + "\u0000" + entry.db + "\u0000" + (entry.user || "") + "\u0000" + entry.key,
      key: entry.key,
      server: entry.server || "",
      db: entry.db || "",
      user: entry.user || "",
      count: 0,
      commands: {},
      errors: {},
      sum: 0,
      min: 0,
      max: 0,
      ttfb: 0,
      rowsSent: 0,
      rowsAffected: 0,
      bytesIn: 0,
      bytesOut: 0,
      noIndex: 0,
      noGoodIndex: 0,
      warnings: 0,
      incomplete: 0,
      first: 0,
      last: 0,
      sketch: newSketch(),
      slaves: {},
    };
  }

  function addCounts(into, from) {
    for (const k in from || {}) into[k] = (into[k] || 0) + from[k];
  }

  function mergeAgg(a, b) {
    if (b.count === 0 && b.sketch.count === 0) return;
    if (a.count === 0) {
      a.min = b.min;
      a.first = b.first;
    } else {
      a.min = Math.min(a.min, b.min);
      a.first = Math.min(a.first, b.first);
    }
    a.max = Math.max(a.max, b.max);
    a.last = Math.max(a.last, b.last);
    a.count += b.count;
    addCounts(a.commands, b.commands);
    addCounts(a.errors, b.errors);
    a.sum += b.sum;
    a.ttfb += b.ttfb;
    a.rowsSent += b.rowsSent;
    a.rowsAffected += b.rowsAffected;
    a.bytesIn += b.bytesIn;
    a.bytesOut += b.bytesOut;
    a.noIndex += b.noIndex;
    a.noGoodIndex += b.noGoodIndex;
    a.warnings += b.warnings;
    a.incomplete += b.incomplete;
    mergeSketch(a.sketch, b.sketch);
    for (const node in b.slaves) {
      const s = (a.slaves[node] = a.slaves[node] || { count: 0, sum: 0, errors: 0 });
      s.count += b.slaves[node].count;
      s.sum += b.slaves[node].sum;
      s.errors += b.slaves[node].errors;
    }
  }

  // A report's template entry as an aggregate of its own.
  function entryAgg(entry) {
    const lat = entry.latency_us || {};
    const a = newAgg(entry);
    a.count = entry.count || 0;
    addCounts(a.commands, entry.commands);
    addCounts(a.errors, entry.errors);
    a.sum = lat.sum || 0;
    a.min = lat.min || 0;
    a.max = lat.max || 0;
    a.ttfb = entry.ttfb_us_sum || 0;
    a.rowsSent = entry.rows_sent || 0;
    a.rowsAffected = entry.rows_affected || 0;
    a.bytesIn = entry.bytes_in || 0;
    a.bytesOut = entry.bytes_out || 0;
    a.noIndex = entry.no_index_used || 0;
    a.noGoodIndex = entry.no_good_index_used || 0;
    a.warnings = entry.warnings || 0;
    a.incomplete = entry.incomplete || 0;
    a.first = entry.first_seen_ns || 0;
    a.last = entry.last_seen_ns || 0;
    addWireSketch(a.sketch, lat.sketch);
    for (const node in entry.slaves || {}) {
      const s = entry.slaves[node];
      a.slaves[node] = { count: s.count || 0, sum: s.latency_us_sum || 0, errors: s.errors || 0 };
    }
    return a;
  }

  function newFrame(start, end) {
    return { start: start, end: end, templates: new Map(), totals: {}, capture: {}, reports: 0 };
  }

  function mergeFrame(into, frame) {
    into.start = Math.min(into.start, frame.start);
    into.end = Math.max(into.end, frame.end);
    for (const [id, agg] of frame.templates) {
      let mine = into.templates.get(id);
      if (!mine) into.templates.set(id, (mine = newAgg(agg)));
      mergeAgg(mine, agg);
    }
    addCounts(into.totals, frame.totals);
    addCounts(into.capture, frame.capture);
    into.reports += frame.reports;
  }

  function subtractCounts(into, from) {
    for (const k in from || {}) {
      into[k] = (into[k] || 0) - from[k];
      if (into[k] <= 0) delete into[k];
    }
  }

  // Take a frame's numbers out of a merged aggregate again (counts, sums and sketch buckets
  // subtract exactly; extremes are recomputed by the caller).
  function subtractAgg(a, b) {
    a.count -= b.count;
    subtractCounts(a.commands, b.commands);
    subtractCounts(a.errors, b.errors);
    a.sum -= b.sum;
    a.ttfb -= b.ttfb;
    a.rowsSent -= b.rowsSent;
    a.rowsAffected -= b.rowsAffected;
    a.bytesIn -= b.bytesIn;
    a.bytesOut -= b.bytesOut;
    a.noIndex -= b.noIndex;
    a.noGoodIndex -= b.noGoodIndex;
    a.warnings -= b.warnings;
    a.incomplete -= b.incomplete;
    a.sketch.zero -= b.sketch.zero;
    a.sketch.count -= b.sketch.count;
    for (const [k, n] of b.sketch.bins) {
      const left = (a.sketch.bins.get(k) || 0) - n;
      if (left > 0) a.sketch.bins.set(k, left);
      else a.sketch.bins.delete(k);
    }
    for (const node in b.slaves) {
      const s = a.slaves[node];
      if (!s) continue;
      s.count -= b.slaves[node].count;
      s.sum -= b.slaves[node].sum;
      s.errors -= b.slaves[node].errors;
      if (s.count <= 0) delete a.slaves[node];
    }
  }

  function numeric(obj) {
    const out = {};
    for (const k in obj || {}) if (typeof obj[k] === "number") out[k] = obj[k];
    return out;
  }

  class Model {
    constructor(options) {
      const o = options || {};
      this.windowS = o.windowS || 300;
      this.texts = new Map(); // template key -> text
      this.frames = []; // ascending by start
      this.seen = new Set(); // "node\u0000seq" of merged reports
      this.seenOrder = [];
      this.slow = []; // worst first
      this.missing = []; // master: {node, seq} of intervals that never arrived
      this.latest = null; // the newest report (role, slaves, heartbeat, capture health)
      this.intervalNs = 0;
      this.reportsMerged = 0;
      this.duplicates = 0;
      this._window = null;
    }

    get slotNs() {
      return Math.max((this.windowS * 1e9) / SLOTS, this.intervalNs || 1e9);
    }

    setWindow(seconds) {
      this.windowS = seconds;
      const slot = this.slotNs;
      const regrouped = [];
      for (const f of this.frames) {
        const last = regrouped[regrouped.length - 1];
        if (last && Math.floor(last.start / slot) === Math.floor(f.start / slot)) mergeFrame(last, f);
        else regrouped.push(f);
      }
      this.frames = regrouped;
      this._evict();
      this._window = null;
    }

    // Texts learned from a report or from a {"kind": "templates"} answer.
    learnTexts(map) {
      for (const k in map) if (map[k]) this.texts.set(k, map[k]);
    }

    // Keys of templates in the window whose text has not arrived yet.
    missingTexts() {
      const out = new Set();
      for (const f of this.frames) for (const agg of f.templates.values()) if (!this.texts.has(agg.key)) out.add(agg.key);
      return Array.from(out);
    }

    add(report) {
      if (!report || !Array.isArray(report.templates)) return false;
      if (report.seq !== undefined) {
        const id = report.node + "\u0000" + report.seq;
        if (this.seen.has(id)) {
          this.duplicates++;
          return false;
        }
        this.seen.add(id);
        this.seenOrder.push(id);
        if (this.seenOrder.length > 10000) this.seen.delete(this.seenOrder.shift());
      }
      const iv = report.interval || {};
      const start = iv.start_ns || 0;
      const end = iv.end_ns || start;
      if (report.kind !== "replay" && end > start) this.intervalNs = end - start;
      const frame = newFrame(start, end);
      for (const entry of report.templates) {
        if (entry.template) this.texts.set(entry.key, entry.template);
        const agg = entryAgg(entry);
        const mine = frame.templates.get(agg.id);
        if (mine) mergeAgg(mine, agg);
        else frame.templates.set(agg.id, agg);
      }
      frame.totals = numeric(report.totals);
      delete frame.totals.coverage;
      frame.capture = numeric(report.capture);
      frame.reports = 1;
      this._place(frame);
      for (const s of report.slow || []) this.slow.push(s);
      this.slow.sort((a, b) => b.latency_us - a.latency_us);
      if (this.slow.length > MAX_SLOW) this.slow.length = MAX_SLOW;
      for (const m of report.missing || []) {
        for (const seq of m.seqs || []) this.missing.push({ node: m.node, seq: seq, at: end });
        if (!(m.seqs || []).length) this.missing.push({ node: m.node, seq: null, at: end, state: "silent" });
      }
      if (this.missing.length > MAX_MISSING) this.missing.splice(0, this.missing.length - MAX_MISSING);
      if (!this.latest || (report.interval && end >= ((this.latest.interval || {}).end_ns || 0))) this.latest = report;
      this.reportsMerged++;
      return true;
    }

    _place(frame) {
      const slot = this.slotNs;
      const idx = Math.floor(frame.start / slot);
      let i = this.frames.length - 1;
      while (i >= 0 && this.frames[i].start > frame.start && Math.floor(this.frames[i].start / slot) !== idx) i--;
      if (i >= 0 && Math.floor(this.frames[i].start / slot) === idx) {
        mergeFrame(this.frames[i], frame);
        if (this._window) mergeFrame(this._window, frame);
      } else {
        this.frames.splice(i + 1, 0, frame);
        if (this._window) mergeFrame(this._window, frame);
      }
      this._evict();
    }

    _evict() {
      if (!this.frames.length) return false;
      const newest = this.frames[this.frames.length - 1].end;
      const horizon = newest - this.windowS * 1e9;
      let n = 0;
      while (n < this.frames.length - 1 && this.frames[n].end <= horizon) n++;
      const gone = n ? this.frames.splice(0, n) : [];
      if (n && this._window) this._forget(gone);
      if (n) {
        const first = this.frames[0].start;
        if (this.texts.size > MAX_TEXTS) {
          const live = new Set();
          for (const f of this.frames) for (const agg of f.templates.values()) live.add(agg.key);
          for (const key of this.texts.keys()) if (!live.has(key)) this.texts.delete(key);
        }
        this.slow = this.slow.filter((s) => s.start_ns >= first);
        this.missing = this.missing.filter((m) => m.at > first);
      }
      return n > 0;
    }

    // Frames left the window: subtract them from the merged window instead of merging
    // every frame again (the cost that grows with templates x frames), then recompute the
    // extremes, which do not subtract, from the frames that stay.
    _forget(gone) {
      const w = this._window;
      for (const f of gone) {
        for (const [id, agg] of f.templates) {
          const mine = w.templates.get(id);
          if (!mine) continue;
          subtractAgg(mine, agg);
          if (mine.count <= 0 && mine.sketch.count <= 0) w.templates.delete(id);
        }
        subtractCounts(w.totals, f.totals);
        subtractCounts(w.capture, f.capture);
        w.reports -= f.reports;
      }
      const seen = new Set();
      for (const f of this.frames) {
        for (const [id, agg] of f.templates) {
          const mine = w.templates.get(id);
          if (!mine || agg.count === 0) continue;
          if (!seen.has(id)) {
            seen.add(id);
            mine.min = agg.min;
            mine.max = agg.max;
            mine.first = agg.first;
            mine.last = agg.last;
          } else {
            mine.min = Math.min(mine.min, agg.min);
            mine.max = Math.max(mine.max, agg.max);
            mine.first = Math.min(mine.first, agg.first);
            mine.last = Math.max(mine.last, agg.last);
          }
        }
      }
      w.start = this.frames[0].start;
    }

    // Everything in the window, merged once, then kept up to date report by report.
    window() {
      if (!this._window) {
        const w = newFrame(Infinity, 0);
        for (const f of this.frames) mergeFrame(w, f);
        this._window = w;
      }
      return this._window;
    }

    windowSeconds() {
      if (!this.frames.length) return 0;
      return Math.max(1e-9, (this.frames[this.frames.length - 1].end - this.frames[0].start) / 1e9);
    }

    // One row per template in the window, with the numbers the table shows.
    rows() {
      const w = this.window();
      const seconds = this.windowSeconds();
      let total = 0;
      for (const agg of w.templates.values()) total += agg.sum;
      const users = new Map();
      for (const s of this.slow) {
        if (!users.has(s.key)) users.set(s.key, new Set());
        if (s.user) users.get(s.key).add(s.user);
      }
      const out = [];
      for (const agg of w.templates.values()) {
        const q = aggQuantiles(agg, [0.5, 0.99]);
        let errors = 0;
        for (const c in agg.errors) errors += agg.errors[c];
        out.push({
          id: agg.id,
          key: agg.key,
          server: agg.server,
          db: agg.db,
          text: this.texts.get(agg.key) || "",
          // the report's own user; for statements of connections nobody named, the samples'
          users: agg.user ? new Set([agg.user]) : users.get(agg.key) || new Set(),
          count: agg.count,
          rate: seconds > 0 ? agg.count / seconds : 0,
          errors: errors,
          sum: agg.sum,
          share: total > 0 ? agg.sum / total : 0,
          p50: q[0],
          p99: q[1],
          rowsPerCall: agg.count ? agg.rowsSent / agg.count : 0,
          agg: agg,
        });
      }
      return out;
    }

    // The window's SLOTS time slots, oldest first, for one template: [start_ns, end_ns,
    // calls per second, p99 µs], or nulls for a slot no report covered.
    series(id) {
      const slot = this.slotNs;
      const out = Array.from({ length: SLOTS }, () => [null, null, null, null]);
      if (!this.frames.length) return out;
      const newest = Math.floor(this.frames[this.frames.length - 1].start / slot);
      for (const f of this.frames) {
        const at = SLOTS - 1 - (newest - Math.floor(f.start / slot));
        if (at < 0) continue;
        const agg = f.templates.get(id);
        const secs = Math.max(1e-9, (f.end - f.start) / 1e9);
        out[at] = [f.start, f.end, agg ? agg.count / secs : 0, agg ? aggQuantiles(agg, [0.99])[0] : null];
      }
      return out;
    }

    // Capture health over the window and in the newest report.
    health() {
      const w = this.window();
      const latest = this.latest || {};
      const t = w.totals;
      const commands = t.commands || 0;
      // As message/report.py merge_totals: commands analysed / commands observed.
      const observed = commands + (t.responses_lost || 0) + (t.unread_exchanges || 0);
      return {
        packets: w.capture.packets || 0,
        bytes: w.capture.bytes || 0,
        dropped: (w.capture.dropped_kernel || 0) + (w.capture.dropped_interface || 0),
        gaps: t.gaps || w.capture.gaps || 0,
        resyncs: t.resyncs || 0,
        responsesLost: t.responses_lost || 0,
        encrypted: t.encrypted_conns || 0,
        unread: t.unread_exchanges || 0,
        nonMysql: t.non_mysql_conns || 0,
        captureGapNs: w.capture.capture_gap_ns || 0,
        workersMissing: (latest.capture || {}).workers_missing || 0,
        workersRestarted: (latest.capture || {}).workers_restarted || 0,
        coverage: latest.totals && typeof latest.totals.coverage === "number" ? latest.totals.coverage : null,
        windowCoverage: observed ? Math.max(0, (commands - (t.incomplete || 0)) / observed) : null,
        reports: w.reports,
      };
    }
  }

  MP.bucketValue = bucketValue;
  MP.bucketPosition = bucketPosition;
  MP.quantiles = quantiles;
  MP.aggQuantiles = aggQuantiles;
  MP.newSketch = newSketch;
  MP.addWireSketch = addWireSketch;
  MP.Model = Model;
  MP.SLOTS = SLOTS;
})(typeof window !== "undefined" ? window : globalThis);
