// A small time-series chart in inline SVG, drawn at the width it is given (and again when that
// changes): lines with gaps where data is missing, an optional min–max band, marked moments.

import { locale } from "./i18n.js";
import { h, s } from "./util.js";

const PAD = { left: 44, right: 12, top: 18, bottom: 26 };
const X_STEPS = [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((x) => x * 1000);

function niceStep(range, count) {
  const raw = range / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

function extent(series, lo, hi) {
  let min = Infinity;
  let max = -Infinity;
  for (const sr of series) {
    for (const [, v] of sr.points) { min = Math.min(min, v); max = Math.max(max, v); }
    for (const [, a, b] of sr.band || []) { min = Math.min(min, a); max = Math.max(max, b); }
  }
  if (lo != null) min = Math.min(min, lo);
  if (hi != null) max = Math.max(max, hi);
  if (!Number.isFinite(min)) return [0, 1];
  if (min === max) return [min - 1, max + 1];
  const pad = (max - min) * 0.08;
  return [min - pad, max + pad];
}

/** Split points into runs wherever the gap is much longer than the usual spacing. */
function runs(points) {
  if (points.length < 2) return [points];
  const gaps = points.slice(1).map((p, i) => p[0] - points[i][0]).sort((a, b) => a - b);
  const limit = Math.max(3 * gaps[Math.floor(gaps.length / 2)], 180000);
  const out = [[points[0]]];
  for (let i = 1; i < points.length; i++) {
    if (points[i][0] - points[i - 1][0] > limit) out.push([]);
    out[out.length - 1].push(points[i]);
  }
  return out;
}

function timeLabel(ms, step) {
  const opts = step >= 86400000 ? { month: "2-digit", day: "2-digit" } : { hour: "2-digit", minute: "2-digit", hour12: false };
  return new Intl.DateTimeFormat(locale(), opts).format(new Date(ms));
}

function draw(width, o) {
  const height = o.height || 200;
  const compact = Boolean(o.compact);
  const pad = compact ? { left: 4, right: 4, top: 4, bottom: 4 } : PAD;
  const w = Math.max(120, width);
  const [y0, y1] = extent(o.series, o.yMin, o.yMax);
  const x = (t) => pad.left + ((t - o.from) / Math.max(1, o.to - o.from)) * (w - pad.left - pad.right);
  const y = (v) => height - pad.bottom - ((v - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  const root = s("svg", { width: w, height, viewBox: `0 0 ${w} ${height}`, role: "img", "aria-label": o.label || "" });
  if (!compact) {
    const step = niceStep(y1 - y0, 4);
    for (let v = Math.ceil(y0 / step) * step; v <= y1; v += step) {
      root.append(s("line", { class: "gridline", x1: pad.left, x2: w - pad.right, y1: y(v), y2: y(v) }),
        s("text", { class: "axis", x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, +v.toFixed(2)));
    }
    const tStep = X_STEPS.find((st) => (o.to - o.from) / st <= Math.max(2, (w - 60) / 90)) || X_STEPS.at(-1);
    const offset = new Date(o.from).getTimezoneOffset() * 60000;
    for (let t = Math.ceil((o.from - offset) / tStep) * tStep + offset; t <= o.to; t += tStep) {
      root.append(s("text", { class: "axis", x: x(t), y: height - 6, "text-anchor": "middle" }, timeLabel(t, tStep)));
    }
    if (o.unit) root.append(s("text", { class: "axis unit", x: pad.left, y: 11, "text-anchor": "start" }, o.unit));
  }
  for (const m of o.marks || []) {
    if (m.t < o.from || m.t > o.to) continue;
    root.append(s("line", { class: ["mark", m.cls], x1: x(m.t), x2: x(m.t), y1: pad.top - 4, y2: height - pad.bottom }),
      s("text", { class: ["mark-label", m.cls], x: x(m.t) + (x(m.t) > w * 0.7 ? -4 : 4), y: pad.top + 6,
        "text-anchor": x(m.t) > w * 0.7 ? "end" : "start" }, m.label));
  }
  o.series.forEach((sr, i) => {
    const cls = sr.cls || `s${i}`;
    if (sr.band && sr.band.length > 1) {
      for (const run of runs(sr.band.map(([t, a, b]) => [t, a, b]))) {
        if (run.length < 2) continue;
        const top = run.map(([t, , b]) => `${x(t).toFixed(1)},${y(b).toFixed(1)}`);
        const bottom = run.slice().reverse().map(([t, a]) => `${x(t).toFixed(1)},${y(a).toFixed(1)}`);
        root.append(s("polygon", { class: ["band", cls], points: [...top, ...bottom].join(" ") }));
      }
    }
    for (const run of runs(sr.points)) {
      if (run.length > 1) {
        root.append(s("polyline", { class: ["line", cls], points: run.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }));
      }
      if (run.length === 1 || sr.points.length <= 40) {
        for (const [t, v] of run) root.append(s("circle", { class: ["dot", cls], cx: x(t), cy: y(v), r: compact ? 2 : 3 }));
      }
    }
  });
  return root;
}

/**
 * A chart element: `series` [{label, cls, points: [[ms, value]], band: [[ms, min, max]]}],
 * `from`/`to` in ms, `unit`, `marks` [{t, label, cls}], `height`, `compact` (no axes).
 */
export function lineChart(options) {
  const box = h("div", { class: ["chart", options.compact && "compact"] });
  let drawn = 0;
  const redraw = () => {
    const width = Math.floor(box.clientWidth);
    if (!width || width === drawn) return;
    drawn = width;
    box.replaceChildren(draw(width, options));
  };
  // drawn in the next frame, never inside the observer's callback (no resize loops)
  new ResizeObserver(() => requestAnimationFrame(redraw)).observe(box);
  return box;
}

/** Readings from /api/devices/{id}/readings (step 1m/1h) as a chart series. */
export function bucketSeries(items, label, cls) {
  return {
    label, cls,
    points: items.map((b) => [Date.parse(b.ts) + 30000, b.mean]),
    band: items.map((b) => [Date.parse(b.ts) + 30000, b.min, b.max]),
  };
}
