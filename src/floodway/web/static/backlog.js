/* floodway dashboard: the backlog (scheduled + waiting + retrying + running jobs) of the last
 * two minutes, and its projection from the drain forecast (/api/forecast, every five seconds):
 * a dashed line to zero at the ETA, with a band from the earliest to the latest end.
 *
 *   <canvas id="backlog-chart" data-projection="…">  with  <b id="backlog-eta">
 *
 * The past comes from the overview's live stream (the "fw:stats" event app.js sends each
 * second); before the page opened it is worked back from the store's history: the backlog now,
 * plus what finished since, minus what was enqueued since.
 */
"use strict";
(() => {
  const canvas = document.getElementById("backlog-chart");
  const label = document.getElementById("backlog-eta");
  if (!canvas) return;
  const WINDOW = 120; // seconds of the past shown
  const OPEN = ["scheduled", "waiting", "retrying", "running"];
  const HEADERS = { "Accept": "application/json", "X-Requested-With": "floodway" };
  const past = []; // {t, n}
  let projection = null; // {t, n, end, low, high, drains, eta}
  let history = null;

  const open = (totals) => OPEN.reduce((n, s) => n + (totals[s] || 0), 0);

  // what the store saw before the page opened, worked back from the first live count
  function seed(now, n) {
    if (!history || past.length > 1) return;
    let level = n;
    const points = [];
    for (let i = history.seconds.length - 1; i >= 0; i--) {
      const t = history.seconds[i] + 1;
      if (t >= now) continue;
      points.unshift({ t, n: Math.max(0, level) });
      level += (history.done[i] || 0) - (history.enqueued[i] || 0);
    }
    past.unshift(...points);
    canvas.dataset.seeded = String(points.length);
    history = null;
  }

  document.addEventListener("fw:stats", (ev) => {
    const now = Date.now() / 1000;
    const n = open(ev.detail.totals || {});
    seed(now, n);
    past.push({ t: now, n });
    while (past.length && past[0].t < now - WINDOW - 2) past.shift();
    draw();
  });

  async function loadHistory() {
    try {
      const r = await fetch("/api/stats/history?seconds=" + WINDOW, { headers: HEADERS, credentials: "same-origin", cache: "no-store" });
      if (r.ok) history = await r.json();
    } catch (err) { /* the live stream fills the chart anyway */ }
  }

  // the whole backlog drains when its slowest queue does
  async function forecast() {
    try {
      const r = await fetch("/api/forecast", { headers: HEADERS, credentials: "same-origin", cache: "no-store" });
      if (!r.ok) return;
      const data = await r.json();
      const busy = data.queues.filter((q) => q.backlog > 0);
      const now = Date.now() / 1000;
      const n = busy.reduce((a, q) => a + q.backlog, 0);
      if (!busy.length) {
        projection = { t: now, n: 0, drains: true, end: 0 };
      } else if (busy.some((q) => !q.drains || q.eta_seconds === null)) {
        const stuck = busy.find((q) => !q.drains || q.eta_seconds === null);
        projection = { t: now, n, drains: false, eta: stuck.eta || "?", queue: stuck.queue };
      } else {
        const slowest = busy.reduce((a, q) => (q.eta_seconds > a.eta_seconds ? q : a));
        const high = busy.some((q) => q.eta_high === null) ? null : Math.max(...busy.map((q) => q.eta_high));
        projection = { t: now, n, drains: true, end: slowest.eta_seconds, eta: slowest.eta, queue: slowest.queue,
                       low: Math.max(...busy.map((q) => q.eta_low ?? q.eta_seconds)), high };
      }
      canvas.dataset.projection = !projection.n ? "empty" : projection.drains ? String(projection.end) : "will-not-drain";
      if (label) {
        label.textContent = !projection.n ? "no backlog"
          : projection.drains ? `drains in ${projection.eta} (queue ${projection.queue})`
          : `${projection.queue}: ${projection.eta}`;
      }
      draw();
    } catch (err) { /* the next tick tries again */ }
  }

  function ahead() {
    // the future shown: up to the latest end (capped at an hour), at least a minute
    if (!projection || !projection.drains || !projection.n) return 60;
    return Math.min(3600, Math.max(60, fwChart.niceMax(projection.high ?? projection.end)));
  }

  function draw() {
    const pad = { l: 54, r: 12, t: 10, b: 22 };
    const { g, w, h } = fwChart.prepare(canvas, pad);
    const now = Date.now() / 1000;
    const future = ahead();
    const split = pad.l + w * 0.6; // the past on the left, the projection on the right
    const x = (t) => (t <= now ? split - (split - pad.l) * (now - t) / WINDOW : split + (pad.l + w - split) * (t - now) / future);
    const top = fwChart.niceMax(Math.max(1, ...past.map((p) => p.n), projection ? projection.n : 0));
    const y = (v) => pad.t + h * (1 - v / top);

    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#64748b"; g.strokeStyle = "#eef2f7"; g.lineWidth = 1;
    g.textAlign = "right"; g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      g.beginPath(); g.moveTo(pad.l, y(v)); g.lineTo(pad.l + w, y(v)); g.stroke();
      g.fillText(Math.round(v).toLocaleString(), pad.l - 8, y(v));
    }
    g.textAlign = "center"; g.textBaseline = "top";
    g.fillText(`-${WINDOW}s`, x(now - WINDOW), pad.t + h + 6);
    g.fillText("now", split, pad.t + h + 6);
    g.fillText(`+${future >= 120 ? Math.round(future / 60) + "m" : future + "s"}`, pad.l + w - 14, pad.t + h + 6);
    g.strokeStyle = "#cbd5e1"; g.setLineDash([2, 3]);
    g.beginPath(); g.moveTo(split, pad.t); g.lineTo(split, pad.t + h); g.stroke(); g.setLineDash([]);

    g.save();
    g.beginPath(); g.rect(pad.l, pad.t - 2, w, h + 4); g.clip();
    if (past.length > 1) {
      g.beginPath();
      past.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p.n)) : g.moveTo(x(p.t), y(p.n))));
      g.strokeStyle = "#7c3aed"; g.lineWidth = 2.5; g.lineJoin = "round"; g.stroke();
    }
    const p = projection;
    if (p && p.n) {
      const from = past.length ? past[past.length - 1].n : p.n;
      if (p.drains) {
        const end = now + p.end;
        if (p.low !== undefined) { // the range of the end: a band from the earliest to the latest
          g.beginPath();
          g.moveTo(x(now), y(from));
          g.lineTo(x(now + p.low), y(0));
          g.lineTo(p.high === null ? pad.l + w : x(now + p.high), y(0));
          g.closePath();
          g.fillStyle = "rgba(124,58,237,.12)"; g.fill();
        }
        g.beginPath(); g.moveTo(x(now), y(from)); g.lineTo(x(end), y(0));
        g.strokeStyle = "#7c3aed"; g.lineWidth = 2; g.setLineDash([6, 4]); g.stroke(); g.setLineDash([]);
      } else { // it will not drain: the backlog stays (or grows)
        g.beginPath(); g.moveTo(x(now), y(from)); g.lineTo(pad.l + w, y(from));
        g.strokeStyle = "#dc2626"; g.lineWidth = 2; g.setLineDash([6, 4]); g.stroke(); g.setLineDash([]);
      }
    }
    g.restore();
  }

  loadHistory();
  forecast();
  setInterval(() => { if (!document.hidden) forecast(); }, 5000);
  window.addEventListener("resize", draw);
})();
