/* floodway dashboard: what the charts share (app.js's throughput, limits.js's learned quota,
 * backlog.js's backlog and projection): a canvas sized for the screen's pixel ratio, the
 * plotting area inside its margins, and a round top for the value axis.
 */
"use strict";
window.fwChart = {
  /** The canvas's 2-D context, cleared and scaled to CSS pixels, and the area to plot in. */
  prepare(canvas, pad) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (canvas.width !== width * ratio || canvas.height !== height * ratio) {
      canvas.width = width * ratio;
      canvas.height = height * ratio;
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    return { g, w: width - pad.l - pad.r, h: height - pad.t - pad.b };
  },
  /** A round number at or above ``v`` for the top of an axis (quarter lines at whole numbers). */
  niceMax(v) {
    if (v <= 4) return 4;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  },
};
