// The dashboard page: live from the node's own /collector (snappy blocks decoded here), or
// static from a replay document inlined in the page (mysqlprobe replay --format html).
(function (root) {
  "use strict";
  const MP = root.MP;
  const { h, num, us, rate, bytes, time, pct, sparkline, histogram, ERROR_NAMES } = MP.view;
  const PAGE = 50;

  // Append children, skipping the null/false of optional parts (Element.append would print them).
  function put(el, ...children) {
    for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  }

  const COLUMNS = [
    { id: "rank", label: "#", sort: null },
    { id: "text", label: "Template", sort: "text" },
    { id: "share", label: "Load", sort: "share", title: "share of the total time of all templates in the window" },
    { id: "rate", label: "Calls/s", sort: "rate" },
    { id: "count", label: "Calls", sort: "count" },
    { id: "errors", label: "Errors", sort: "errors" },
    { id: "p50", label: "p50", sort: "p50" },
    { id: "p99", label: "p99", sort: "p99" },
    { id: "rows", label: "Rows/call", sort: "rowsPerCall" },
    { id: "spark-calls", label: "Calls/s trend", sort: null, live: true },
    { id: "spark-p99", label: "p99 trend", sort: null, live: true },
  ];

  class App {
    constructor(data) {
      this.data = data; // null when live
      this.live = !data;
      this.model = new MP.Model({ windowS: 300 });
      this.sort = { key: "share", desc: true };
      this.filter = { server: "", db: "", user: "", text: "" };
      this.page = 0;
      this.selected = null; // template id of the detail view
      this.pretty = new Map(Object.entries((data && data.pretty) || {}));
      this.status = null;
      this.nodes = null;
      this.connected = false;
      this.lastMessageAt = 0;
      this.requested = new Set();
      this._dirty = false;
      this.mode = "live"; // or "history": a past range from /api/history/*
      this.hist = this.live ? new MP.HistoryView(this) : null;
      this.build();
      if (this.live) this.startLive();
      else this.model.add(data.doc);
      this.render();
    }

    // -- page skeleton --------------------------------------------------------------------

    build() {
      const body = document.body;
      body.textContent = "";
      this.el = {};
      const windowSelect = h(
        "select",
        { id: "window", onchange: (e) => this.setWindow(+e.target.value) },
        [60, 300, 900, 3600].map((s) => h("option", { value: s, selected: s === this.model.windowS }, s < 3600 ? s / 60 + " min" : "1 hour"))
      );
      this.el.title = h("span", { id: "title" }, "mysqlprobe");
      this.el.node = h("span", { id: "node-info" });
      this.el.conn = h("span", { id: "conn", class: "badge" });
      const modeSelect = h(
        "select",
        { id: "mode", onchange: (e) => this.setMode(e.target.value) },
        h("option", { value: "live", selected: true }, "live"),
        h("option", { value: "history" }, "history")
      );
      this.el.windowPick = h("span", { id: "window-pick" }, "window ", windowSelect);
      this.el.histControls = this.hist ? this.hist.controls() : null;
      body.appendChild(
        h(
          "header",
          {},
          this.el.title,
          this.el.node,
          h("span", { class: "spacer" }),
          this.live ? [modeSelect, this.el.windowPick, this.el.histControls] : null,
          this.el.conn
        )
      );
      this.el.health = h("section", { id: "health" });
      body.appendChild(this.el.health);
      this.el.histNote = h("section", { id: "history-note", hidden: true });
      body.appendChild(this.el.histNote);
      const main = h("main", {});
      const filters = h(
        "div",
        { id: "filters" },
        (this.el.server = h("select", { id: "f-server", onchange: (e) => this.setFilter("server", e.target.value) })),
        (this.el.db = h("select", { id: "f-db", onchange: (e) => this.setFilter("db", e.target.value) })),
        h("input", { id: "f-user", placeholder: "user", oninput: (e) => this.setFilter("user", e.target.value) }),
        h("input", { id: "f-text", placeholder: "filter by text or key", oninput: (e) => this.setFilter("text", e.target.value) }),
        (this.el.pager = h("span", { id: "pager" }))
      );
      this.el.thead = h("thead", {});
      this.el.tbody = h("tbody", {});
      this.el.table = h("table", { id: "templates" }, this.el.thead, this.el.tbody);
      this.el.side = h("aside", { id: "side" });
      this.el.tableTitle = h("h2", {}, "Top templates by load");
      main.appendChild(h("section", { id: "top" }, this.el.tableTitle, filters, this.el.table));
      main.appendChild(this.el.side);
      body.appendChild(main);
      this.el.detail = h("section", { id: "detail", hidden: true });
      body.appendChild(this.el.detail);
      document.addEventListener("keydown", (e) => {
        if (e.key === "Escape" && this.selected) this.close();
      });
    }

    setWindow(seconds) {
      this.model.setWindow(seconds);
      this.render();
    }

    setFilter(name, value) {
      this.filter[name] = value;
      this.page = 0;
      if (name === "user" && this.mode === "history") this.hist.userChanged(); // a history API parameter
      this.render();
    }

    setMode(mode) {
      this.mode = mode;
      this.page = 0;
      this.selected = null;
      this.el.detail.hidden = true;
      const history = mode === "history";
      this.el.windowPick.hidden = history;
      this.el.histControls.hidden = !history;
      this.el.histNote.hidden = !history;
      if (history) this.hist.load();
      this.render();
    }

    get showTrends() {
      return this.live && this.mode === "live";
    }

    // -- live feed ------------------------------------------------------------------------

    fetchLast() {
      fetch(MP.api("api/dashboard/last"))
        .then((r) => (r.ok ? r.json() : null))
        .then((report) => {
          if (report && report.templates) this.add(report);
        })
        .catch(() => {});
    }

    startLive() {
      this.fetchLast();
      this.connect(0);
      this.poll();
      setInterval(() => this.poll(), 5000);
      setInterval(() => this.renderConn(), 1000);
    }

    connect(attempt) {
      // With a token set, the node lets /collector in only with it: pass on the page's ?token=.
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname.replace(/[^/]*$/, "") + MP.api("collector");
      const ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => {
        if (attempt > 0) this.fetchLast(); // the newest report, in case one passed while away
        this.connected = true;
        attempt = 0;
        this.requested.clear();
        this.renderConn();
      };
      ws.onmessage = (ev) => {
        this.lastMessageAt = Date.now();
        let msg;
        try {
          msg = typeof ev.data === "string" ? JSON.parse(ev.data) : MP.decodeMessage(ev.data);
        } catch (err) {
          console.warn("undecodable /collector message", err);
          return;
        }
        if (msg.kind === "templates") {
          this.model.learnTexts(msg.templates || {});
          this.schedule();
        } else if (msg.templates) {
          this.add(msg);
        }
      };
      ws.onclose = () => {
        this.connected = false;
        this.renderConn();
        setTimeout(() => this.connect(attempt + 1), Math.min(10000, 500 * 2 ** attempt));
      };
    }

    add(report) {
      if (!this.model.add(report)) return;
      const missing = this.model.missingTexts().filter((k) => !this.requested.has(k)).slice(0, 1000);
      if (missing.length && this.ws && this.ws.readyState === 1) {
        missing.forEach((k) => this.requested.add(k));
        this.ws.send(JSON.stringify({ templates: missing }));
      }
      this.schedule();
    }

    poll() {
      fetch(MP.api("status"))
        .then((r) => r.json())
        .then((s) => {
          this.status = s;
          this.schedule();
        })
        .catch(() => {});
      fetch(MP.api("cluster/listnodes"))
        .then((r) => r.json())
        .then((n) => {
          this.nodes = n;
          this.schedule();
        })
        .catch(() => {});
    }

    schedule() {
      if (this._dirty) return;
      this._dirty = true;
      requestAnimationFrame(() => {
        this._dirty = false;
        this.render();
      });
    }

    // -- rendering ------------------------------------------------------------------------

    render() {
      const detailScroll = this.el.detail.scrollTop; // a redraw must not move what the reader looks at
      this.renderHeader();
      this.renderHealth();
      if (this.mode === "history") {
        this.el.histNote.textContent = "";
        this.el.histNote.appendChild(this.hist.banner());
        this.el.tableTitle.textContent = "Top templates by load over the range";
      } else this.el.tableTitle.textContent = "Top templates by load";
      this.renderTable();
      this.renderSide();
      if (this.selected) {
        this.renderDetail();
        this.el.detail.scrollTop = detailScroll;
      }
    }

    renderHeader() {
      if (!this.live) {
        const doc = this.data.doc;
        const t = doc.totals || {};
        const span = ((doc.interval.end_ns - doc.interval.start_ns) / 1e9).toFixed(1);
        const what = doc.kind === "replay" ? (doc.source || {}).file || "" : `node ${doc.node} · role ${doc.role} · epoch ${doc.epoch}`;
        this.el.title.textContent = doc.kind === "replay" ? "mysqlprobe replay" : "mysqlprobe report";
        this.el.node.textContent = `${what} · ${num(t.queries)} queries in ${span} s of traffic · ${time(doc.interval.start_ns)}`;
        return;
      }
      const s = this.status;
      const latest = this.model.latest;
      const role = s ? s.role : latest ? latest.role : "?";
      const epoch = s ? s.epoch : latest ? latest.epoch : "?";
      const name = s ? s.node : latest ? latest.node : "";
      this.el.node.textContent = `node ${name} · role ${role} · epoch ${epoch}` + (s ? ` · v${s.version}` : "");
    }

    renderConn() {
      if (!this.live) {
        this.el.conn.textContent = "offline report";
        this.el.conn.className = "badge";
        return;
      }
      const latest = this.model.latest;
      const age = latest ? Math.max(0, Date.now() / 1000 - latest.interval.end_ns / 1e9) : null;
      this.el.conn.textContent = (this.connected ? "live" : "disconnected") + (age !== null ? ` · last report ${age.toFixed(0)} s ago` : " · waiting for the first report");
      this.el.conn.className = "badge " + (this.connected ? "ok" : "bad");
    }

    renderHealth() {
      const hl = this.model.health();
      const chip = (label, value, bad, id) => h("span", { class: "chip" + (bad ? " bad" : ""), id: id }, h("b", {}, label), " ", value);
      const cov = hl.windowCoverage;
      this.el.health.textContent = "";
      put(this.el.health,
        h("span", { class: "health-title" }, "Capture health" + (this.live ? " (window)" : "")),
        chip("coverage", pct(cov, 2), cov !== null && cov < 0.99, "h-coverage"),
        chip("kernel/interface drops", num(hl.dropped), hl.dropped > 0, "h-drops"),
        chip("gaps", num(hl.gaps), hl.gaps > 0, "h-gaps"),
        chip("resyncs", num(hl.resyncs), false, "h-resyncs"),
        chip("responses lost", num(hl.responsesLost), hl.responsesLost > 0, "h-lost"),
        chip("capture downtime", hl.captureGapNs ? us(hl.captureGapNs / 1000) : "none", hl.captureGapNs > 0, "h-downtime"),
        chip("encrypted conns", num(hl.encrypted), false, "h-encrypted"),
        hl.unread ? chip("unread exchanges", num(hl.unread), true, "h-unread") : null,
        hl.nonMysql ? chip("non-MySQL conns", num(hl.nonMysql), false, "h-non-mysql") : null,
        chip("packets", num(hl.packets), false, "h-packets"),
        chip("bytes", bytes(hl.bytes), false, "h-bytes"),
        this.live ? chip("workers missing/restarted", `${hl.workersMissing}/${hl.workersRestarted}`, hl.workersMissing > 0, "h-workers") : null,
        this.live ? chip("reports", num(hl.reports), false, "h-reports") : null
      );
      this.renderConn();
    }

    filteredRows() {
      const f = this.filter;
      const text = f.text.trim().toLowerCase();
      const user = f.user.trim().toLowerCase();
      const history = this.mode === "history";
      let rows = history ? this.hist.rows() : this.model.rows();
      const servers = new Set(rows.map((r) => r.server));
      const dbs = new Set(rows.map((r) => r.db));
      this.fillSelect(this.el.server, "all servers", servers, f.server);
      this.fillSelect(this.el.db, "all databases", dbs, f.db);
      rows = rows.filter(
        (r) =>
          (!f.server || r.server === f.server) &&
          (!f.db || r.db === f.db) &&
          (history || !user || Array.from(r.users).some((u) => u.toLowerCase().includes(user))) &&
          (!text || r.text.toLowerCase().includes(text) || r.key.includes(text))
      );
      const k = this.sort.key;
      const dir = this.sort.desc ? -1 : 1;
      rows.sort((a, b) => {
        const x = a[k] === null ? -1 : a[k];
        const y = b[k] === null ? -1 : b[k];
        if (x < y) return -dir;
        if (x > y) return dir;
        return a.id < b.id ? -1 : 1;
      });
      return rows;
    }

    fillSelect(select, all, values, current) {
      const want = [""].concat(Array.from(values).sort());
      const have = Array.from(select.options).map((o) => o.value);
      if (want.join("\u0000") === have.join("\u0000")) return;
      select.textContent = "";
      for (const v of want) select.appendChild(h("option", { value: v, selected: v === current }, v === "" ? all : v || "(no database)"));
    }

    renderTable() {
      const cols = COLUMNS.filter((c) => this.showTrends || !c.live);
      this.el.thead.textContent = "";
      this.el.thead.appendChild(
        h(
          "tr",
          {},
          cols.map((c) =>
            h(
              "th",
              {
                class: "col-" + c.id + (c.sort ? " sortable" : "") + (this.sort.key === c.sort ? " sorted" : ""),
                title: c.title,
                onclick: c.sort
                  ? () => {
                      this.sort = { key: c.sort, desc: this.sort.key === c.sort ? !this.sort.desc : c.sort !== "text" };
                      this.render();
                    }
                  : null,
              },
              c.label,
              this.sort.key === c.sort ? (this.sort.desc ? " ▼" : " ▲") : ""
            )
          )
        )
      );
      const rows = this.filteredRows();
      const pages = Math.max(1, Math.ceil(rows.length / PAGE));
      this.page = Math.min(this.page, pages - 1);
      const first = this.page * PAGE;
      const shown = rows.slice(first, first + PAGE);
      this.el.pager.textContent = "";
      put(
        this.el.pager,
        h("button", { id: "prev", disabled: this.page === 0, onclick: () => this.goPage(-1) }, "‹"),
        h("span", { id: "page-info" }, rows.length ? `${num(first + 1)}-${num(first + shown.length)} of ${num(rows.length)} templates` : "no templates"),
        h("button", { id: "next", disabled: this.page >= pages - 1, onclick: () => this.goPage(1) }, "›")
      );
      this.el.tbody.textContent = "";
      if (!shown.length) {
        const why = this.mode === "history" ? (this.hist.loading ? "loading…" : "no template in this range") : this.model.reportsMerged ? "no template matches" : "waiting for the first report…";
        this.el.tbody.appendChild(h("tr", { class: "empty" }, h("td", { colspan: cols.length }, why)));
        return;
      }
      shown.forEach((r, i) => {
        const series = this.showTrends ? this.model.series(r.id) : [];
        const cells = {
          rank: first + i + 1,
          text: [h("div", { class: "sql" }, r.text || "(template text not received yet)"), h("div", { class: "meta" }, `${r.key} · ${r.db || "(no db)"} · ${r.agg && r.agg.user ? r.agg.user : "(user not known)"} · ${r.server}`)],
          share: [h("div", { class: "bar", style: `width:${(r.share * 100).toFixed(1)}%` }), h("span", {}, pct(r.share))],
          rate: rate(r.rate),
          count: num(r.count),
          errors: num(r.errors),
          p50: us(r.p50),
          p99: us(r.p99),
          rows: num(r.rowsPerCall, 1),
          "spark-calls": this.showTrends ? sparkline(series.map((p) => p[2]), { class: "calls", label: "calls/s", format: rate }) : null,
          "spark-p99": this.showTrends ? sparkline(series.map((p) => p[3]), { class: "p99", label: "p99", format: us }) : null,
        };
        this.el.tbody.appendChild(
          h(
            "tr",
            { class: "tpl" + (r.id === this.selected ? " selected" : ""), "data-key": r.key, "data-id": r.id, onclick: () => this.open(r.id) },
            cols.map((c) => h("td", { class: "col-" + c.id + (c.id === "errors" && r.errors ? " bad" : "") }, cells[c.id]))
          )
        );
      });
    }

    goPage(delta) {
      this.page = Math.max(0, this.page + delta);
      this.render();
    }

    renderSide() {
      const side = this.el.side;
      side.textContent = "";
      if (!this.live) side.appendChild(this.summaryPanel());
      else side.appendChild(this.clusterPanel());
      const latest = this.model.latest;
      if (latest && Array.isArray(latest.slaves)) side.appendChild(this.slavesPanel(latest));
    }

    summaryPanel() {
      const doc = this.data.doc;
      const t = doc.totals || {};
      const rows = [
        ["queries", num(t.queries)],
        ["commands", num(t.commands)],
        ["errors", num(t.errors)],
        ["templates", num(doc.templates.length)],
        ["slow samples", num(doc.slow.length)],
        ["packets", num(t.packets)],
        ["bytes", bytes(t.bytes)],
        ["coverage", pct(t.coverage, 2)],
      ];
      if (doc.analysis) rows.push(["analysed in", doc.analysis.elapsed_s + " s"]);
      return h("div", { class: "panel", id: "summary" }, h("h3", {}, doc.kind === "replay" ? "Capture file" : "Report"), h("table", { class: "kv" }, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))));
    }

    clusterPanel() {
      const nodes = this.nodes || [];
      return h(
        "div",
        { class: "panel", id: "cluster" },
        h("h3", {}, "Cluster"),
        h(
          "table",
          { class: "small" },
          h("tr", {}, ["name", "role", "state", "epoch", "leader"].map((x) => h("th", {}, x))),
          nodes.map((n) =>
            h(
              "tr",
              { class: n.self ? "self" : "" },
              h("td", { title: n.address || "" }, n.name + (n.self ? " (this node)" : "")),
              h("td", {}, n.role),
              h("td", { class: n.state === "alive" || n.state === "reporting" ? "" : "warn" }, n.state),
              h("td", {}, n.epoch === undefined || n.epoch === null ? "-" : n.epoch),
              h("td", {}, n.leader ? "★ leader" : "")
            )
          )
        )
      );
    }

    slavesPanel(latest) {
      const missing = this.model.missing;
      return h(
        "div",
        { class: "panel", id: "slaves" },
        h("h3", {}, `Slaves (${latest.slaves.length}) in the last interval`),
        h(
          "table",
          { class: "small" },
          h("tr", {}, ["slave", "state", "reports", "queries", "errors", "missing"].map((x) => h("th", {}, x))),
          latest.slaves.map((s) =>
            h(
              "tr",
              { "data-node": s.node },
              h("td", {}, s.node),
              h("td", { class: s.state === "reporting" ? "" : "warn" }, s.state),
              h("td", {}, num((s.seqs || []).length)),
              h("td", {}, num((s.totals || {}).queries || 0)),
              h("td", {}, num((s.totals || {}).errors || 0)),
              h("td", { class: s.missing_count ? "warn" : "" }, num(s.missing_count || 0))
            )
          )
        ),
        h("h3", {}, `Missing intervals in the window (${missing.length})`),
        missing.length
          ? h("ul", { id: "missing" }, missing.slice(-20).reverse().map((m) => h("li", {}, `${m.node}: ${m.seq === null ? "sent nothing" : "seq " + m.seq} (interval ending ${time(m.at)})`)))
          : h("p", { class: "muted" }, "none")
      );
    }

    // -- template detail ------------------------------------------------------------------

    open(id) {
      this.selected = id;
      this.el.detail.hidden = false;
      // Below the capture health bar, which stays in sight.
      this.el.detail.style.top = Math.max(0, this.el.health.getBoundingClientRect().bottom) + "px";
      this.el.detail.scrollTop = 0;
      this.render();
    }

    close() {
      this.selected = null;
      this.el.detail.hidden = true;
      this.render();
    }

    prettyText(key, fallback) {
      if (this.pretty.has(key)) return this.pretty.get(key);
      if (this.live && !this.requested.has("pretty:" + key)) {
        this.requested.add("pretty:" + key);
        fetch(MP.api("api/dashboard/template?key=" + encodeURIComponent(key)))
          .then((r) => (r.ok ? r.json() : null))
          .then((t) => {
            if (t && t.pretty) {
              this.pretty.set(key, t.pretty);
              this.schedule();
            }
          })
          .catch(() => {});
      }
      return fallback;
    }

    renderDetail() {
      const d = this.el.detail;
      d.textContent = "";
      const close = h("button", { id: "close", onclick: () => this.close() }, "close ✕");
      if (this.mode === "history") {
        const row = this.hist.rows().find((r) => r.id === this.selected);
        if (!row) {
          put(d, close, h("p", {}, "This template is not in the range any more."));
          return;
        }
        put(
          d,
          h("div", { class: "detail-head" }, h("h2", {}, "Template ", h("code", { id: "detail-key" }, row.key)), close),
          h("div", { class: "meta" }, `database ${row.db || "(none)"} · server ${row.server} · history ${this.hist.from} to ${this.hist.to}`),
          h("pre", { id: "pretty", class: "sql" }, this.prettyText(row.key, row.text)),
          this.hist.detail(row)
        );
        return;
      }
      const agg = this.model.window().templates.get(this.selected);
      if (!agg) {
        put(d, close, h("p", {}, "This template has no calls in the window any more."));
        return;
      }
      const text = this.model.texts.get(agg.key) || "";
      const q = MP.aggQuantiles(agg, [0.5, 0.95, 0.99, 0.999]);
      const calls = agg.count || 1;
      const seconds = this.model.windowSeconds();
      const stats = [
        ["calls", num(agg.count)],
        ["calls/s", rate(agg.count / seconds)],
        ["total time", us(agg.sum)],
        ["mean", us(agg.sum / calls)],
        ["min", us(agg.min)],
        ["p50", us(q[0])],
        ["p95", us(q[1])],
        ["p99", us(q[2])],
        ["p99.9", us(q[3])],
        ["max", us(agg.max)],
        ["time to first byte (mean)", us(agg.ttfb / calls)],
        ["rows sent", `${num(agg.rowsSent)} (${num(agg.rowsSent / calls, 1)}/call)`],
        ["rows affected", `${num(agg.rowsAffected)} (${num(agg.rowsAffected / calls, 1)}/call)`],
        ["bytes in / out", `${bytes(agg.bytesIn)} / ${bytes(agg.bytesOut)}`],
        ["no index used", num(agg.noIndex)],
        ["warnings", num(agg.warnings)],
        ["commands", Object.entries(agg.commands).map(([k, v]) => `${k} ${num(v)}`).join(", ")],
        ["first seen", time(agg.first)],
        ["last seen", time(agg.last)],
      ];
      const samples = this.model.slow.filter((s) => s.key === agg.key && (!agg.db || s.db === agg.db));
      const messages = {};
      for (const s of samples) if (s.error) messages[s.error.code] = messages[s.error.code] || `${s.error.sqlstate} ${s.error.message}`;
      const errors = Object.entries(agg.errors).sort((a, b) => b[1] - a[1]);
      put(
        d,
        h("div", { class: "detail-head" }, h("h2", {}, "Template ", h("code", { id: "detail-key" }, agg.key)), close),
        h("div", { class: "meta" }, `database ${agg.db || "(none)"} · server ${agg.server}`),
        h("pre", { id: "pretty", class: "sql" }, this.prettyText(agg.key, text)),
        h(
          "div",
          { class: "cols" },
          h("table", { class: "kv", id: "detail-stats" }, stats.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))),
          h(
            "div",
            {},
            h("h3", {}, "Latency distribution (sketch buckets, ±1%)"),
            histogram(agg.sketch, [
              { value: q[0], label: "p50", class: "p50" },
              { value: q[2], label: "p99", class: "p99" },
            ]),
            this.live ? this.trend(agg) : null
          )
        ),
        h("h3", {}, `Errors by code (${num(errors.reduce((n, e) => n + e[1], 0))})`),
        errors.length
          ? h(
              "table",
              { class: "small", id: "errors" },
              h("tr", {}, ["code", "name", "count", "message (from samples)"].map((x) => h("th", {}, x))),
              errors.map(([code, n]) => h("tr", {}, h("td", {}, code), h("td", {}, ERROR_NAMES[code] || ""), h("td", {}, num(n)), h("td", {}, messages[code] || "")))
            )
          : h("p", { class: "muted" }, "no errors"),
        Object.keys(agg.slaves).length ? this.perSlave(agg) : null,
        h("h3", {}, `Slow samples (${samples.length})`),
        samples.length ? this.samplesTable(samples.slice(0, 50)) : h("p", { class: "muted" }, "no statement of this template crossed the slow threshold in the window")
      );
    }

    trend(agg) {
      const series = this.model.series(agg.id);
      const minutes = this.model.windowS / 60;
      return h(
        "div",
        { class: "trend" },
        h("h3", {}, `Over the last ${minutes < 60 ? minutes + " min" : minutes / 60 + " h"}`),
        MP.view.trendLine("calls/s", series.map((p) => p[2]), { width: 300, height: 40, class: "calls", label: "calls/s", format: rate }),
        MP.view.trendLine("p99", series.map((p) => p[3]), { width: 300, height: 40, class: "p99", label: "p99", format: us })
      );
    }

    perSlave(agg) {
      const entries = Object.entries(agg.slaves).sort((a, b) => b[1].sum - a[1].sum);
      return h(
        "div",
        { id: "per-slave" },
        h("h3", {}, `Per slave (${entries.length})`),
        h(
          "table",
          { class: "small" },
          h("tr", {}, ["slave", "calls", "share of time", "mean", "errors"].map((x) => h("th", {}, x))),
          entries.map(([node, s]) => h("tr", {}, h("td", {}, node), h("td", {}, num(s.count)), h("td", {}, pct(agg.sum ? s.sum / agg.sum : 0)), h("td", {}, us(s.count ? s.sum / s.count : null)), h("td", {}, num(s.errors))))
        )
      );
    }

    samplesTable(samples) {
      return h(
        "table",
        { class: "small samples", id: "samples" },
        h("tr", {}, ["start", "latency", "user", "client", "conn", "rows", "error", "statement", "parameters"].map((x) => h("th", {}, x))),
        samples.map((s) =>
          h(
            "tr",
            {},
            h("td", {}, time(s.start_ns)),
            h("td", {}, us(s.latency_us)),
            h("td", {}, s.user || "-"),
            h("td", {}, s.client || "-"),
            h("td", {}, s.conn_id === null ? "-" : s.conn_id),
            h("td", {}, num((s.rows_sent || 0) + (s.rows_affected || 0))),
            h("td", { class: s.error ? "bad" : "" }, s.error ? `${s.error.code} ${s.error.message}` : ""),
            h("td", { class: "sql" }, s.sql),
            h("td", { class: "params" }, s.params === null || s.params === undefined ? "(none or redacted)" : JSON.stringify(s.params))
          )
        )
      );
    }
  }

  MP.App = App;
  MP.start = function () {
    const node = document.getElementById("mysqlprobe-data");
    const data = node ? JSON.parse(node.textContent) : null;
    MP.app = new App(data);
  };
})(typeof window !== "undefined" ? window : globalThis);
