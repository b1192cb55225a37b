/* floodway dashboard: live fragments, action buttons, the throughput chart.
 *
 * Hand-written instead of vendored htmx (see floodway/web/dashboard.py): no network at run
 * time, one small file, fetch and EventSource only.
 *
 *   <div data-src="/ui/queues" data-poll="5000" data-refresh-on="stats">  fragment refreshed on a
 *       timer and/or when the named live event arrives
 *   <button data-action="/api/jobs/ID/retry" data-done="message">  POSTs, then refreshes the page's fragments
 *   <body data-stream="/api/stream">  queue counts each second: totals, chart, "stats" refreshes
 *   <body data-job-stream="/api/jobs/ID/stream">  one job's timeline: "job" refreshes, closed when final
 */
"use strict";
(() => {
  const HEADERS = { "X-Requested-With": "floodway", "Accept": "text/html, application/json" };
  // the final statuses, from the server (floodway.jobs): never listed here
  const FINAL = (document.body.dataset.final || "").split(",").filter(Boolean);
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  // -- fragments ------------------------------------------------------------------------------
  function toLogin() {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  async function refresh(el) {
    if (el._busy) { el._again = true; return; }
    el._busy = true;
    try {
      const r = await fetch(el.dataset.src, { headers: HEADERS, credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { toLogin(); return; }
      if (r.ok || r.status === 404) {
        const html = await r.text();
        if (html !== el._html) {
          el._html = html;
          el.innerHTML = html;
          applyWidths(el);
          el.dispatchEvent(new CustomEvent("fw:swapped", { bubbles: true }));
        }
      }
    } catch (err) {
      /* a network hiccup: the next tick tries again */
    } finally {
      el._busy = false;
      if (el._again) { el._again = false; refresh(el); }
    }
  }

  // bar widths come as data-width percentages: the Content-Security-Policy forbids inline styles
  function applyWidths(root) {
    for (const el of $$("[data-width]", root)) el.style.width = `${Number(el.dataset.width) || 0}%`;
  }

  const refreshAll = () => $$("[data-src]").forEach(refresh);
  const refreshOn = (name) => $$(`[data-refresh-on~="${name}"]`).forEach(refresh);

  function startPolling() {
    for (const el of $$("[data-src]")) {
      if ($(".empty", el) && el.textContent.trim() === "Loading…") refresh(el);
      const every = Number(el.dataset.poll || 0);
      if (every > 0) setInterval(() => { if (!document.hidden) refresh(el); }, every);
    }
  }

  // -- toasts and actions -----------------------------------------------------------------------
  function toast(message, bad = false) {
    const box = $("#toasts");
    if (!box) return;
    const t = document.createElement("div");
    t.className = "toast" + (bad ? " bad" : "");
    t.setAttribute("role", bad ? "alert" : "status");
    t.textContent = message;
    box.appendChild(t);
    setTimeout(() => t.remove(), bad ? 6000 : 3500);
  }

  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("[data-action]");
    if (!button) return;
    ev.preventDefault();
    button.disabled = true;
    try {
      const r = await fetch(button.dataset.action, { method: "POST", headers: HEADERS, credentials: "same-origin" });
      if (r.status === 401) { toLogin(); return; }
      let body = {};
      try { body = await r.json(); } catch (err) { /* not JSON */ }
      if (r.ok) toast(button.dataset.done || "Done");
      else toast(body.error || `Failed (${r.status})`, true);
    } catch (err) {
      toast("The server did not answer", true);
    } finally {
      button.disabled = false;
      refreshAll();
      openJobStream();
    }
  });

  // -- bulk actions: the jobs page's filter, counted first (a dry run), then confirmed ------------
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("[data-bulk]");
    if (!button) return;
    ev.preventDefault();
    const action = button.dataset.bulk;
    const filter = JSON.parse($("#bulk").dataset.filter || "{}");
    const post = (dryRun) => fetch("/api/jobs/bulk-actions", {
      method: "POST",
      headers: { ...HEADERS, "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ action, filter, dry_run: dryRun }),
    });
    button.disabled = true;
    try {
      const counted = await post(true);
      if (counted.status === 401) { toLogin(); return; }
      const preview = await counted.json();
      if (!counted.ok) { toast(preview.error || `Failed (${counted.status})`, true); return; }
      if (!window.confirm(`${action} ${preview.count} job(s) matching this filter?`)) return;
      const done = await post(false);
      const result = await done.json();
      if (done.ok) toast(`${action}: ${result.count} job(s)`);
      else toast(result.error || `Failed (${done.status})`, true);
    } catch (err) {
      toast("The server did not answer", true);
    } finally {
      button.disabled = false;
      refreshAll();
    }
  });

  // -- live indicator -----------------------------------------------------------------------------
  function live(on) {
    const badge = $("#live");
    if (badge) badge.classList.toggle("on", on);
  }

  // -- overview stream and chart ----------------------------------------------------------------------
  const WINDOW = 120; // seconds kept; the axis grows from 40 s to this as samples come in
  const series = []; // {t, done, enq, running}
  let previous = null;

  function onStats(data) {
    const totals = data.totals || {};
    for (const el of $$("[data-total]")) el.textContent = (totals[el.dataset.total] || 0).toLocaleString();
    const now = Date.now() / 1000;
    const all = Object.values(totals).reduce((a, b) => a + b, 0);
    const done = FINAL.reduce((a, s) => a + (totals[s] || 0), 0);
    if (previous) {
      const dt = Math.max(now - previous.t, 0.001);
      series.push({
        t: now,
        done: Math.max(0, (done - previous.done) / dt),
        enq: Math.max(0, (all - previous.all) / dt),
        running: totals.running || 0,
      });
      while (series.length && series[0].t < now - WINDOW - 2) series.shift();
      const last = series[series.length - 1];
      $("#rate-done").textContent = last.done.toFixed(1);
      $("#rate-in").textContent = last.enq.toFixed(1);
      $("#rate-run").textContent = String(last.running);
    }
    previous = { t: now, done, all };
    document.dispatchEvent(new CustomEvent("fw:stats", { detail: data })); // backlog.js draws from it
    drawChart();
    refreshOn("stats");
  }

  // the chart starts from the store's last WINDOW seconds (jobs enqueued and done in each), not
  // empty; the running line starts with the live stream (the store keeps no history of it)
  async function seedChart() {
    const canvas = $("#chart");
    if (!canvas) return;
    try {
      const r = await fetch("/api/stats/history?seconds=" + WINDOW, { headers: HEADERS, credentials: "same-origin", cache: "no-store" });
      if (!r.ok) return;
      const h = await r.json();
      const first = series.length ? series[0].t : Infinity;
      const seeded = h.seconds
        .map((s, i) => ({ t: s + 1, done: h.done[i], enq: h.enqueued[i], running: undefined }))
        .filter((p) => p.t < first);
      series.unshift(...seeded);
      canvas.dataset.seeded = String(seeded.length);
      drawChart();
    } catch (e) { /* the live stream fills the chart anyway */ }
  }

  function drawChart() {
    const canvas = $("#chart");
    if (!canvas) return;
    const pad = { l: 44, r: 12, t: 10, b: 22 };
    const { g, w, h } = fwChart.prepare(canvas, pad);
    const top = fwChart.niceMax(Math.max(1, ...series.map((p) => Math.max(p.done, p.enq, p.running || 0))));
    const now = Date.now() / 1000;
    const span = Math.min(WINDOW, Math.max(40, series.length ? Math.ceil((now - series[0].t) / 20) * 20 : 40));
    const x = (t) => pad.l + w * (1 - (now - t) / span);
    const y = (v) => pad.t + h * (1 - v / top);

    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#64748b";
    g.strokeStyle = "#eef2f7";
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      g.beginPath(); g.moveTo(pad.l, y(v)); g.lineTo(pad.l + w, y(v)); g.stroke();
      g.fillText(Number.isInteger(v) ? String(v) : v.toFixed(1), pad.l - 8, y(v));
    }
    g.textAlign = "center";
    g.textBaseline = "top";
    for (let i = 4; i >= 0; i--) {
      const s = Math.round((span * i) / 4);
      g.fillText(s ? `-${s}s` : "now", x(now - s), pad.t + h + 6);
    }

    if (series.length < 2) {
      g.textAlign = "center"; g.textBaseline = "middle"; g.fillStyle = "#94a3b8";
      g.fillText("collecting…", pad.l + w / 2, pad.t + h / 2);
      return;
    }
    g.save();
    g.beginPath(); g.rect(pad.l, pad.t - 2, w, h + 4); g.clip();
    const line = (key, color, opts = {}) => {
      g.beginPath();
      let pen = false; // a point without a value (seeded history has no running count) lifts it
      for (const p of series) {
        if (p[key] === undefined) { pen = false; continue; }
        if (pen) g.lineTo(x(p.t), y(p[key])); else { g.moveTo(x(p.t), y(p[key])); pen = true; }
      }
      g.strokeStyle = color; g.lineWidth = opts.width || 2; g.setLineDash(opts.dash || []);
      g.lineJoin = "round"; g.stroke(); g.setLineDash([]);
      if (opts.fill) {
        g.lineTo(x(series[series.length - 1].t), y(0)); g.lineTo(x(series[0].t), y(0)); g.closePath();
        const grad = g.createLinearGradient(0, pad.t, 0, pad.t + h);
        grad.addColorStop(0, opts.fill); grad.addColorStop(1, "rgba(255,255,255,0)");
        g.fillStyle = grad; g.fill();
      }
    };
    line("running", "#d97706", { dash: [4, 4], width: 1.5 });
    line("enq", "#2563eb", { width: 2 });
    line("done", "#16a34a", { width: 2.5, fill: "rgba(22,163,74,.22)" });
    g.restore();
  }

  function openStatsStream(url) {
    const es = new EventSource(url);
    es.addEventListener("open", () => live(true));
    es.addEventListener("stats", (ev) => { live(true); onStats(JSON.parse(ev.data)); });
    es.addEventListener("revoked", () => { es.close(); toLogin(); });
    es.addEventListener("error", () => live(false)); // EventSource reconnects by itself
  }

  // -- job stream ----------------------------------------------------------------------------------
  let jobStream = null;
  let jobTimer = null;

  function jobChanged() {
    clearTimeout(jobTimer);
    jobTimer = setTimeout(() => refreshOn("job"), 60);
  }

  function openJobStream() {
    const url = document.body.dataset.jobStream;
    if (!url || (jobStream && jobStream.readyState !== EventSource.CLOSED)) return;
    const es = (jobStream = new EventSource(url));
    es.addEventListener("open", () => live(true));
    es.addEventListener("event", jobChanged);
    es.addEventListener("job", jobChanged);
    es.addEventListener("end", () => { es.close(); jobChanged(); }); // the page still polls
    es.addEventListener("revoked", () => { es.close(); toLogin(); });
    es.addEventListener("error", () => { live(false); if (es.readyState === EventSource.CLOSED) jobStream = null; });
  }

  // -- start -----------------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    applyWidths(document);
    startPolling();
    if (document.body.dataset.stream) openStatsStream(document.body.dataset.stream);
    else if (!document.body.dataset.jobStream) live(true);
    openJobStream();
    drawChart();
    seedChart();
    window.addEventListener("resize", drawChart);
  });
})();
