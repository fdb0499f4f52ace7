// Overview: requests, errors, tokens and cost over a period, per UTC day (per hour for one day), and the
// same by model and by provider. Three calls to the usage report, which reads the rollups.

import { api } from "./api.js";
import { barChart } from "./charts.js";
import { count, h, loading, replace, short, table, usd } from "./dom.js";
import { buckets, periodOf, periodPicker } from "./period.js";

export async function overview(view, { query, go, isCurrent }) {
  const current = periodOf(query);
  const body = h("div", {}, loading("usage"));
  replace(view,
    h("div", { class: "head" }, h("h1", { tabindex: "-1" }, "Overview"),
      periodPicker(current, (next) => go("overview", next))),
    body);
  const range = { from: current.from, to: current.to };
  const [series, byModel, byProvider] = await Promise.all([
    api("/admin/v1/usage", { query: { ...range, group_by: current.unit } }),
    api("/admin/v1/usage", { query: { ...range, group_by: "model" } }),
    api("/admin/v1/usage", { query: { ...range, group_by: "provider" } }),
  ]);
  if (!isCurrent()) return;
  const rows = new Map(series.data.map((row) => [row[current.unit], row]));
  const slots = buckets(current);
  const points = (field) => slots.map((slot) => ({ ...slot, value: rows.get(slot.key)?.[field] ?? 0 }));
  const totals = series.totals;
  const scope = current.unit === "hour" ? `per hour of ${current.from} (UTC)` : `per UTC day, ${current.from} to ${current.to}`;
  replace(body,
    h("section", { class: "cards", "aria-label": "Totals" },
      card("Requests", count(totals.requests), `${count(totals.cancelled)} cancelled`),
      card("Errors", count(totals.errors), totals.requests ? `${((100 * totals.errors) / totals.requests).toFixed(1)}% of requests` : "—"),
      card("Tokens", short(totals.total_tokens), `${short(totals.prompt_tokens)} in · ${short(totals.completion_tokens)} out`),
      card("Cost", usd(totals.cost_usd), "priced models only")),
    h("p", { class: "muted" }, `Charts: ${scope}.`),
    h("section", { class: "charts", "aria-label": "Charts" },
      barChart({ title: "Requests", name: "requests", points: points("requests"), format: count }),
      barChart({ title: "Errors", name: "errors", points: points("errors"), format: count, tone: "bad" }),
      barChart({ title: "Tokens", name: "tokens", points: points("total_tokens"), format: short }),
      barChart({ title: "Cost", name: "cost", points: points("cost_usd"), format: usd, tick: dollars })),
    h("section", { class: "split" },
      breakdown("By model", "model", byModel.data),
      breakdown("By provider", "provider", byProvider.data)));
  view.dataset.loaded = "overview";
}

// An axis label of at most six characters.
function dollars(value) {
  return value >= 1 || value === 0 ? `$${short(value)}` : `$${value.toPrecision(2).replace(/^0/, "")}`;
}

function card(title, value, note) {
  return h("div", { class: "card" }, h("span", { class: "muted" }, title), h("strong", {}, value),
    h("small", { class: "muted" }, note));
}

function breakdown(title, field, data) {
  const sorted = [...data].sort((a, b) => b.requests - a.requests);
  return h("div", { class: "breakdown", "data-breakdown": field },
    h("h2", {}, title),
    table([field === "model" ? "Model" : "Provider", "Requests#", "Errors#", "Tokens#", "Cost#"],
      sorted.map((row) => h("tr", {},
        h("th", { scope: "row" }, row[field] || "(none)"),
        h("td", { class: "num" }, count(row.requests)),
        h("td", { class: "num" }, count(row.errors)),
        h("td", { class: "num" }, short(row.total_tokens)),
        h("td", { class: "num" }, usd(row.cost_usd))))));
}
