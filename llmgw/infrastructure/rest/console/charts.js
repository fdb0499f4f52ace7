// Bar charts drawn as SVG: one bar per time bucket, a title and a tooltip per bar. Small enough that a
// chart library would be more code than it saves (the buckets are at most a few hundred).

import { h, s } from "./dom.js";

const WIDTH = 600;
const HEIGHT = 180;
const LEFT = 48;
const BOTTOM = 22;
const TOP = 8;

// `points`: [{label, value}] in time order; `format` turns a value into text; `name` tags the figure
// (`data-chart`) for tests and styles; `tick` (default `format`) labels the axis; `tone` colours the bars.
export function barChart({ title, name, points, format, tick = format, tone = "primary" }) {
  const top = Math.max(...points.map((p) => p.value), 0);
  const scale = top > 0 ? (HEIGHT - BOTTOM - TOP) / top : 0;
  const slot = (WIDTH - LEFT) / Math.max(points.length, 1);
  const gap = Math.min(4, slot * 0.2);
  const every = Math.ceil(points.length / 8);
  const total = points.reduce((sum, p) => sum + p.value, 0);
  const svg = s("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img",
    "aria-label": `${title}: ${format(total)} in all over ${points.length} buckets`,
  },
  s("line", { x1: LEFT, x2: WIDTH, y1: HEIGHT - BOTTOM, y2: HEIGHT - BOTTOM, class: "axis" }),
  s("text", { x: LEFT - 6, y: TOP + 10, class: "tick end" }, tick(top)),
  s("text", { x: LEFT - 6, y: HEIGHT - BOTTOM, class: "tick end" }, tick(0)),
  points.map((point, i) => {
    const height = point.value * scale;
    const x = LEFT + i * slot + gap / 2;
    return [
      s("rect", {
        class: `bar ${tone}`, x, width: Math.max(slot - gap, 1), y: HEIGHT - BOTTOM - height,
        height: Math.max(height, 0), "data-value": point.value,
      }, s("title", {}, `${point.label}: ${format(point.value)}`)),
      i % every === 0
        ? s("text", { x: x + (slot - gap) / 2, y: HEIGHT - 6, class: "tick middle" }, point.short ?? point.label)
        : null,
    ];
  }));
  return h("figure", { class: "chart", "data-chart": name, "data-total": total },
    h("figcaption", {}, h("span", {}, title), h("strong", {}, format(total))),
    svg);
}
