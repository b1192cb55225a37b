/* floodway dashboard: the learned-quota chart of one limit — admitted/s, 429s/s and the
 * effective rate the limit's keys are paced at, sampled from /api/limits every two seconds.
 *
 *   <canvas id="limit-chart" data-limit-chart>  with  <select id="limit-pick">
 */
"use strict";
(() => {
  const canvas = document.getElementById("limit-chart");
  const pick = document.getElementById("limit-pick");
  if (!canvas || !pick) return;
  const WINDOW = 120; // seconds shown
  const series = {};  // limit name -> [{t, admitted, throttled, rate}]
  const last = {};    // limit name -> {t, admitted, throttled}

  const sum = (keys, field) => keys.reduce((n, k) => n + (k[field] || 0), 0);

  async function sample() {
    try {
      const r = await fetch("/api/limits", { headers: { "Accept": "application/json", "X-Requested-With": "floodway" },
                                             credentials: "same-origin", cache: "no-store" });
      if (!r.ok) return;
      const now = Date.now() / 1000;
      for (const lim of (await r.json()).limits) {
        const keys = lim.keys || [];
        const admitted = sum(keys, "admitted"), throttled = sum(keys, "throttled");
        const rate = keys.length ? sum(keys, "effective_rate") : null;
        const prev = last[lim.name];
        last[lim.name] = { t: now, admitted, throttled };
        if (!Array.from(pick.options).some((o) => o.value === lim.name)) pick.add(new Option(lim.name, lim.name));
        if (!prev || now <= prev.t) continue;
        const dt = now - prev.t;
        const points = (series[lim.name] = series[lim.name] || []);
        points.push({ t: now, admitted: Math.max(0, admitted - prev.admitted) / dt,
                      throttled: Math.max(0, throttled - prev.throttled) / dt, rate });
        while (points.length && points[0].t < now - WINDOW) points.shift();
      }
      draw();
    } catch (err) { /* the next sample tries again */ }
  }

  function draw() {
    const points = series[pick.value] || [];
    canvas.dataset.points = String(points.length);
    const pad = { l: 44, r: 12, t: 10, b: 22 };
    const { g, w, h } = fwChart.prepare(canvas, pad);
    const top = Math.max(1, ...points.map((p) => Math.max(p.admitted, p.throttled, p.rate || 0))) * 1.1;
    const now = Date.now() / 1000;
    const x = (t) => pad.l + w * (1 - (now - t) / WINDOW), y = (v) => pad.t + h * (1 - v / top);
    g.font = "11px system-ui, sans-serif"; g.fillStyle = "#64748b"; g.textAlign = "right"; g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) g.fillText((top * i / 4).toFixed(top < 8 ? 1 : 0), pad.l - 8, y(top * i / 4));
    if (points.length < 2) {
      g.textAlign = "center"; g.fillText("collecting…", pad.l + w / 2, pad.t + h / 2);
      return;
    }
    const line = (key, color, dash) => {
      g.beginPath(); g.setLineDash(dash || []); g.strokeStyle = color; g.lineWidth = 2;
      points.forEach((p, i) => p[key] == null ? null : (i ? g.lineTo(x(p.t), y(p[key])) : g.moveTo(x(p.t), y(p[key]))));
      g.stroke(); g.setLineDash([]);
    };
    line("rate", "#7c3aed", [5, 4]);
    line("admitted", "#2563eb");
    line("throttled", "#dc2626");
  }

  pick.addEventListener("change", draw);
  sample();
  setInterval(sample, 2000);
})();
