// Drawing: DOM helpers, number formats, SVG sparklines and the latency histogram. Every text
// from the wire (SQL, names) goes in through textContent, never as markup.
(function (root) {
  "use strict";
  const MP = (root.MP = root.MP || {});
  const SVG = "http://www.w3.org/2000/svg";

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const k in attrs || {}) el.setAttribute(k, String(attrs[k]));
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function num(n, digits) {
    if (n === null || n === undefined || !isFinite(n)) return "-";
    return n.toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 0 : digits });
  }

  function us(v) {
    if (v === null || v === undefined || !isFinite(v)) return "-";
    if (v < 1000) return num(v, 0) + " µs";
    if (v < 1e6) return num(v / 1000, v < 1e4 ? 2 : 1) + " ms";
    return num(v / 1e6, 2) + " s";
  }

  function rate(v) {
    if (!isFinite(v)) return "-";
    return v >= 100 ? num(v, 0) : v >= 1 ? num(v, 1) : num(v, 3);
  }

  function bytes(v) {
    if (!isFinite(v)) return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return num(v, i ? 1 : 0) + " " + units[i];
  }

  function time(ns) {
    if (!ns) return "-";
    return new Date(ns / 1e6).toISOString().replace("T", " ").replace("Z", " UTC");
  }

  function pct(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return "-";
    return num(v * 100, digits === undefined ? 1 : digits) + "%";
  }

  // A small line chart of values (nulls are gaps), scaled to its own maximum.
  function sparkline(values, options) {
    const o = options || {};
    const w = o.width || 96;
    const hgt = o.height || 22;
    const max = Math.max(0, ...values.filter((v) => v !== null && isFinite(v)));
    const svg = s("svg", { class: "spark " + (o.class || ""), width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}` });
    svg.appendChild(s("line", { x1: 1, y1: hgt - 1.5, x2: w - 1, y2: hgt - 1.5, class: "base" }));
    if (!values.length) return svg;
    const step = values.length > 1 ? (w - 2) / (values.length - 1) : 0;
    let d = "";
    const present = (v) => v !== null && v !== undefined && isFinite(v);
    values.forEach((v, i) => {
      if (!present(v)) return;
      const x = 1 + i * step;
      const y = hgt - 2 - (max > 0 ? (v / max) * (hgt - 4) : 0);
      const joined = i > 0 && present(values[i - 1]);
      d += (joined ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      if (!joined && !present(values[i + 1])) svg.appendChild(s("circle", { cx: x, cy: y, r: 1.5 })); // a lone point
    });
    if (d) svg.appendChild(s("path", { d: d, fill: "none", "stroke-width": 1.5 }));
    svg.appendChild(s("title", {}, (o.label || "") + " max " + (o.format ? o.format(max) : num(max, 2))));
    return svg;
  }

  // A labelled trend for a detail view: name, the line, and its peak in words.
  function trendLine(name, values, options) {
    const present = values.filter((v) => v !== null && v !== undefined && isFinite(v));
    const peak = present.length ? Math.max(...present) : null;
    return h(
      "div",
      { class: "trend-line" },
      h("span", { class: "trend-name" }, name),
      sparkline(values, options),
      h("span", { class: "muted" }, peak === null ? "no data" : "peak " + options.format(peak))
    );
  }

  // The latency distribution from sketch buckets: bars of neighbouring buckets on a log axis,
  // with the p50 and p99 marked.
  function histogram(sketch, marks, options) {
    const o = options || {};
    const w = o.width || 640;
    const hgt = o.height || 170;
    const pad = { l: 44, r: 10, t: 14, b: 28 };
    const svg = s("svg", { class: "histogram", width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}` });
    const keys = Array.from(sketch.bins.keys()).sort((a, b) => a - b);
    if (!keys.length) {
      svg.appendChild(s("text", { x: w / 2, y: hgt / 2, "text-anchor": "middle" }, "no latencies in the window"));
      return svg;
    }
    // At least 24 buckets on the axis (±12% around a narrow distribution), so one bucket is
    // a bar among empty ones, not the whole chart.
    const widen = Math.max(0, 24 - (keys[keys.length - 1] - keys[0] + 1));
    const lo = keys[0] - Math.floor(widen / 2);
    const hi = keys[keys.length - 1] + Math.ceil(widen / 2);
    const maxBars = 60;
    const width = Math.max(1, Math.ceil((hi - lo + 1) / maxBars));
    const bars = new Map();
    for (const k of keys) {
      const b = Math.floor((k - lo) / width);
      bars.set(b, (bars.get(b) || 0) + sketch.bins.get(k));
    }
    const nbars = Math.floor((hi - lo) / width) + 1;
    const top = Math.max(...bars.values());
    const plotW = w - pad.l - pad.r;
    const plotH = hgt - pad.t - pad.b;
    const bw = plotW / nbars;
    const xOfKey = (k) => pad.l + ((k - lo) / width) * bw;
    svg.appendChild(s("line", { x1: pad.l, y1: pad.t + plotH, x2: w - pad.r, y2: pad.t + plotH, class: "axis" }));
    svg.appendChild(s("text", { x: pad.l - 4, y: pad.t + 8, "text-anchor": "end", class: "tick" }, num(top)));
    svg.appendChild(s("text", { x: pad.l - 4, y: pad.t + plotH, "text-anchor": "end", class: "tick" }, "0"));
    for (const [b, n] of bars) {
      const bh = Math.max(1, (n / top) * plotH);
      const lowKey = lo + b * width;
      const rect = s("rect", { x: pad.l + b * bw + 0.5, y: pad.t + plotH - bh, width: Math.max(1, bw - 1), height: bh, class: "bar" });
      rect.appendChild(s("title", {}, `${us(MP.bucketValue(lowKey))} - ${us(MP.bucketValue(lowKey + width - 1))}: ${num(n)} calls`));
      svg.appendChild(rect);
    }
    const ticks = Math.min(6, nbars);
    for (let i = 0; i <= ticks; i++) {
      const k = lo + Math.round(((hi - lo + width) * i) / ticks);
      const x = xOfKey(k);
      const anchor = i === 0 ? "start" : i === ticks ? "end" : "middle";
      svg.appendChild(s("text", { x: x, y: hgt - 8, "text-anchor": anchor, class: "tick" }, us(MP.bucketValue(k))));
    }
    let lastX = -Infinity;
    let row = 0;
    for (const m of marks || []) {
      if (m.value === null || m.value <= 0) continue;
      const x = Math.min(w - pad.r, Math.max(pad.l, xOfKey(MP.bucketPosition(m.value) + 0.5)));
      svg.appendChild(s("line", { x1: x, y1: pad.t - 4, x2: x, y2: pad.t + plotH, class: "mark " + m.class }));
      const right = x > w - pad.r - 30; // near the edge: label on the left of the line
      row = Math.abs(x - lastX) < 30 ? row + 1 : 0; // close marks: labels one under the other
      lastX = x;
      const y = pad.t + 4 + row * 12;
      svg.appendChild(s("text", { x: right ? x - 3 : x + 3, y: y, "text-anchor": right ? "end" : "start", class: "mark-label " + m.class }, m.label));
    }
    return svg;
  }

  // MySQL/MariaDB error names for the codes operators meet most (the server's own list is long).
  const ERROR_NAMES = {
    1040: "ER_CON_COUNT_ERROR (too many connections)",
    1044: "ER_DBACCESS_DENIED_ERROR",
    1045: "ER_ACCESS_DENIED_ERROR",
    1046: "ER_NO_DB_ERROR (no database selected)",
    1048: "ER_BAD_NULL_ERROR (column cannot be null)",
    1049: "ER_BAD_DB_ERROR (unknown database)",
    1050: "ER_TABLE_EXISTS_ERROR",
    1051: "ER_BAD_TABLE_ERROR (unknown table)",
    1054: "ER_BAD_FIELD_ERROR (unknown column)",
    1062: "ER_DUP_ENTRY (duplicate entry)",
    1064: "ER_PARSE_ERROR (syntax error)",
    1105: "ER_UNKNOWN_ERROR",
    1136: "ER_WRONG_VALUE_COUNT_ON_ROW",
    1142: "ER_TABLEACCESS_DENIED_ERROR",
    1146: "ER_NO_SUCH_TABLE",
    1205: "ER_LOCK_WAIT_TIMEOUT",
    1213: "ER_LOCK_DEADLOCK",
    1264: "ER_WARN_DATA_OUT_OF_RANGE",
    1292: "ER_TRUNCATED_WRONG_VALUE",
    1317: "ER_QUERY_INTERRUPTED",
    1366: "ER_TRUNCATED_WRONG_VALUE_FOR_FIELD",
    1406: "ER_DATA_TOO_LONG",
    1451: "ER_ROW_IS_REFERENCED_2 (foreign key)",
    1452: "ER_NO_REFERENCED_ROW_2 (foreign key)",
    1969: "ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)",
    3024: "ER_QUERY_TIMEOUT (MySQL max_execution_time)",
  };

  // A node endpoint relative to the page, carrying the page's ?token= (with a token set, the
  // node answers the feed and the report endpoints only with it).
  function api(path) {
    const token = typeof location !== "undefined" ? new URLSearchParams(location.search).get("token") : null;
    if (!token) return path;
    return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  MP.api = api;
  MP.view = { h, s, num, us, rate, bytes, time, pct, sparkline, trendLine, histogram, ERROR_NAMES };
})(typeof window !== "undefined" ? window : globalThis);
