// A small SVG line chart (no library): one line per node over a fixed time window.

import { h } from "./dom.js";

const H = 160;
const PAD = { left: 52, right: 12, top: 12, bottom: 26 };
export const PALETTE_SIZE = 8;

function ago(ms) {
  if (ms < 1000) return "now";
  const s = Math.round(ms / 1000);
  return s < 120 ? `−${s} s` : `−${Math.round(s / 60)} min`;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (value <= m * exp) return m * exp;
  }
  return 10 * exp;
}

/**
 * lineChart({label, from, to, width, series: [{name, color, points: [[t, v]]}], format})
 * ``width`` is the drawn width in CSS pixels, so text keeps its size on a phone.
 * ``color`` is a palette index (CSS classes c0…c7): no inline style is needed (strict CSP).
 */
export function lineChart({ label, from, to, width = 640, series, format }) {
  const W = Math.max(240, Math.round(width));
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1]))));
  const x = (t) => PAD.left + ((t - from) / (to - from)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
  for (const fraction of [0, 0.5, 1]) {
    const v = max * fraction;
    svg.append(
      h("svg:line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }),
      h("svg:text", { x: PAD.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, format(v)));
  }
  for (const fraction of [1, 2 / 3, 1 / 3, 0]) {
    const back = (to - from) * fraction;
    svg.append(h("svg:text", { x: x(to - back), y: H - 6, class: "axis",
      "text-anchor": fraction === 1 ? "start" : fraction === 0 ? "end" : "middle" }, ago(back)));
  }
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const path = h("svg:path", { d, class: `line c${s.color % PALETTE_SIZE}` });
    path.append(h("svg:title", {}, s.name));
    svg.append(path);
    if (s.points.length === 1) {
      const [t, v] = s.points[0];
      svg.append(h("svg:circle", { cx: x(t), cy: y(v), r: 3, class: `dot c${s.color % PALETTE_SIZE}` }));
    }
  }
  return svg;
}

/** The legend under a chart: swatch, node name (as text), latest value. */
export function legend(series, format) {
  return h("ul", { class: "legend" }, series.map((s) => {
    const last = s.points.length ? s.points[s.points.length - 1][1] : null;
    return h("li", {}, h("span", { class: `swatch c${s.color % PALETTE_SIZE}`, "aria-hidden": "true" }),
      h("span", { class: "legend-name" }, s.name), " ", h("span", { class: "legend-value" },
        last === null ? "—" : format(last)));
  }));
}
