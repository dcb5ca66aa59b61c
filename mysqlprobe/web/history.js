// The dashboard's history mode: the same table over a past time range, from the node's
// /api/history/top and /api/history/series (README "Query history"). Quantiles there are
// computed by the node from merged sketch buckets over the range.
(function (root) {
  "use strict";
  const MP = root.MP;
  const { h, num, us, rate, time, bytes } = MP.view;
  const PRESETS = [
    ["-15m", "last 15 min"],
    ["-1h", "last hour"],
    ["-6h", "last 6 hours"],
    ["-24h", "last 24 hours"],
    ["-7d", "last 7 days"],
    ["", "custom range"],
  ];

  class HistoryView {
    constructor(app) {
      this.app = app;
      this.from = "-1h";
      this.to = "now";
      this.answer = null;
      this.error = null;
      this.loading = false;
      this.series = new Map(); // template id -> series answer (or {error})
      this.generation = 0; // answers of an older request are ignored
      this._userTimer = null;
    }

    controls() {
      const fromInput = h("input", { id: "h-from", value: this.from, size: 20, title: "unix seconds, ISO 8601 (UTC), now, or -15m / -2h / -7d" });
      const toInput = h("input", { id: "h-to", value: this.to, size: 20, title: "unix seconds, ISO 8601 (UTC), now, or -15m / -2h / -7d" });
      const preset = h(
        "select",
        {
          id: "h-range",
          onchange: (e) => {
            if (!e.target.value) return;
            fromInput.value = e.target.value;
            toInput.value = "now";
            this.show(fromInput.value, toInput.value);
          },
        },
        PRESETS.map(([v, label]) => h("option", { value: v, selected: v === this.from }, label))
      );
      const button = h("button", { id: "h-show", onclick: () => this.show(fromInput.value, toInput.value) }, "show");
      return h("span", { id: "history-controls", hidden: true }, preset, " from ", fromInput, " to ", toInput, " ", button);
    }

    show(from, to) {
      this.from = from.trim();
      this.to = to.trim() || "now";
      this.load();
    }

    userChanged() {
      clearTimeout(this._userTimer);
      this._userTimer = setTimeout(() => this.load(), 400);
    }

    params(extra) {
      const p = new URLSearchParams({ from: this.from, to: this.to, ...extra });
      const user = this.app.filter.user.trim();
      if (user) p.set("user", user);
      return p.toString();
    }

    load() {
      const generation = ++this.generation;
      this.loading = true;
      this.error = null;
      this.series.clear();
      this.app.render();
      fetch(MP.api("api/history/top?" + this.params({ order: "load", limit: "1000" })))
        .then((r) => r.json().then((body) => [r.ok, body]))
        .then(([ok, body]) => {
          if (generation !== this.generation) return;
          this.loading = false;
          if (ok) this.answer = body;
          else {
            this.answer = null;
            this.error = body && body.error ? body.error : "the node did not answer";
          }
          this.app.render();
        })
        .catch((err) => {
          if (generation !== this.generation) return;
          this.loading = false;
          this.error = String(err);
          this.app.render();
        });
    }

    rows() {
      const templates = (this.answer && this.answer.templates) || [];
      const seconds = this.answer ? Math.max(1e-9, this.answer.to - this.answer.from) : 1;
      let total = 0;
      for (const t of templates) total += t.latency_us.sum;
      return templates.map((t) => ({
        id: t.server + "\u0000" + t.db + "\u0000" + t.key,
        key: t.key,
        server: t.server,
        db: t.db,
        text: t.template || "",
        users: new Set(),
        count: t.count,
        rate: t.count / seconds,
        errors: t.error_count || 0,
        sum: t.latency_us.sum,
        share: total > 0 ? t.latency_us.sum / total : 0,
        p50: t.latency_us.p50,
        p99: t.latency_us.p99,
        rowsPerCall: t.count ? t.rows_sent / t.count : 0,
        entry: t,
      }));
    }

    banner() {
      if (this.loading) return h("span", {}, "loading history…");
      if (this.error) return h("span", { class: "bad" }, "history: " + this.error);
      const a = this.answer;
      if (!a) return h("span", {}, "pick a range");
      const covers = a.covers ? `held from ${time(a.covers.from * 1e9)} to ${time(a.covers.to * 1e9)}` : "nothing held in this range";
      return h(
        "span",
        {},
        h("b", {}, "History "),
        `${time(a.from * 1e9)} → ${time(a.to * 1e9)} · ${covers} · ${num(a.templates_total)} templates`,
        a.complete ? "" : h("span", { class: "bad" }, " · incomplete"),
        a.note ? " · " + a.note : "",
        " · rows: " + (a.levels || []).map((l) => l.level).join(", ")
      );
    }

    // The detail of one template over the range: its numbers and its series.
    detail(row) {
      const t = row.entry;
      const lat = t.latency_us;
      const calls = t.count || 1;
      let series = this.series.get(row.id);
      if (series === undefined) {
        this.series.set(row.id, null);
        const p = { key: t.key, server: t.server, db: t.db };
        fetch(MP.api("api/history/series?" + this.params(p)))
          .then((r) => r.text().then((text) => [r, text]))
          .then(([r, text]) => {
            let body;
            try {
              body = JSON.parse(text);
            } catch (err) {
              body = { error: `HTTP ${r.status}: ${text.slice(0, 200)}` };
            }
            this.series.set(row.id, r.ok ? body : { error: body.error || `HTTP ${r.status}` });
            this.app.render();
          })
          .catch((err) => {
            this.series.set(row.id, { error: "the series request failed: " + err });
            this.app.render();
          });
        series = null;
      }
      const stats = [
        ["calls", num(t.count)],
        ["calls/s", rate(row.rate)],
        ["total time", us(lat.sum)],
        ["mean", us(lat.sum / calls)],
        ["min", us(lat.min)],
        ["p50", us(lat.p50)],
        ["p95", us(lat.p95)],
        ["p99", us(lat.p99)],
        ["p99.9", us(lat.p999)],
        ["max", us(lat.max)],
        ["rows sent", `${num(t.rows_sent)} (${num(t.rows_sent / calls, 1)}/call)`],
        ["rows affected", `${num(t.rows_affected)} (${num(t.rows_affected / calls, 1)}/call)`],
        ["bytes in / out", `${bytes(t.bytes_in)} / ${bytes(t.bytes_out)}`],
        ["no index used", num(t.no_index_used)],
        ["commands", Object.entries(t.commands || {}).map(([k, v]) => `${k} ${num(v)}`).join(", ")],
        ["first seen", time(t.first_seen_ns)],
        ["last seen", time(t.last_seen_ns)],
      ];
      let chart;
      if (series === null) chart = h("p", { class: "muted" }, "loading the series…");
      else if (series.error) chart = h("p", { class: "bad", id: "history-series-error" }, series.error);
      else {
        const points = series.points || [];
        chart = h(
          "div",
          { class: "trend", id: "history-series" },
          h("h3", {}, `Per ${series.step} s from ${time(series.from * 1e9)} to ${time(series.to * 1e9)} (${points.length} points)`),
          MP.view.trendLine("calls/s", points.map((p) => p.count / series.step), { width: 420, height: 48, class: "calls", label: "calls/s", format: rate }),
          MP.view.trendLine("p99", points.map((p) => p.p99), { width: 420, height: 48, class: "p99", label: "p99", format: us })
        );
      }
      const errors = Object.entries(t.errors || {}).sort((a, b) => b[1] - a[1]);
      return [
        h(
          "div",
          { class: "cols" },
          h("table", { class: "kv", id: "detail-stats" }, stats.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))),
          h("div", {}, chart)
        ),
        h("h3", {}, `Errors by code (${num(t.error_count || 0)})`),
        errors.length
          ? h(
              "table",
              { class: "small", id: "errors" },
              h("tr", {}, ["code", "name", "count"].map((x) => h("th", {}, x))),
              errors.map(([code, n]) => h("tr", {}, h("td", {}, code), h("td", {}, MP.view.ERROR_NAMES[code] || ""), h("td", {}, num(n))))
            )
          : h("p", { class: "muted" }, "no errors"),
      ];
    }
  }

  MP.HistoryView = HistoryView;
})(typeof window !== "undefined" ? window : globalThis);
