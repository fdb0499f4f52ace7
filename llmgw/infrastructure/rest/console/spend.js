// Spend: per key and per team over a period (from the usage report), with each one's budget (from its
// limits' usage); sortable, and saved as CSV.

import { all, api, ApiError } from "./api.js";
import { count, downloadCsv, h, loading, replace, usd } from "./dom.js";
import { periodOf, periodPicker } from "./period.js";

export async function spend(view, { query, role, go, isCurrent }) {
  const current = periodOf(query);
  const body = h("div", {}, loading("spend"));
  replace(view,
    h("div", { class: "head" }, h("h1", { tabindex: "-1" }, "Spend"),
      periodPicker(current, (next) => go("spend", next))),
    body);
  const range = { from: current.from, to: current.to };
  const [byKey, byTeam, keys, teams] = await Promise.all([
    api("/admin/v1/usage", { query: { ...range, group_by: "key" } }),
    api("/admin/v1/usage", { query: { ...range, group_by: "team" } }),
    role === "admin" ? all("/admin/v1/keys") : [],
    role === "admin" ? all("/admin/v1/teams") : [],
  ]);
  const [keyRows, teamRows] = await Promise.all([
    rowsOf(byKey.data, "key_id", keys, "keys"),
    rowsOf(byTeam.data, "team_id", teams, "teams"),
  ]);
  if (!isCurrent()) return;
  replace(body,
    h("p", { class: "muted" }, `Requests, tokens and cost from ${current.from} to ${current.to} (UTC days); budgets for their own current period.`),
    spendTable("Keys", "keys", keyRows, current),
    spendTable("Teams", "teams", teamRows, current));
  view.dataset.loaded = "spend";
}

// One row per owner that used something in the period or that exists (admin), with its budget if set.
async function rowsOf(usage, field, owners, kind) {
  const byId = new Map();
  for (const owner of owners) byId.set(owner.id, { id: owner.id, name: owner.name, owner, requests: 0, tokens: 0, cost: 0 });
  for (const row of usage) {
    const id = row[field] || "";
    const known = byId.get(id) ?? { id, name: id ? "" : "(none)", owner: null };
    byId.set(id, { ...known, requests: row.requests, tokens: row.total_tokens, cost: row.cost_usd });
  }
  const rows = [...byId.values()];
  await Promise.all(rows.map(async (row) => {
    const owner = row.owner;
    row.budget = null;
    if (!owner || (owner.budget_usd == null && owner.soft_budget_usd == null)) return;
    try {
      const used = await api(`/admin/v1/${kind}/${encodeURIComponent(row.id)}/usage`);
      row.budget = used.budget;
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
    }
  }));
  return rows;
}

// Sorted by `value`; `text` columns alphabetically, the others as numbers, largest first.
const COLUMNS = [
  { name: "Name", value: (r) => r.name || r.id, text: true },
  { name: "ID", value: (r) => r.id, text: true },
  { name: "Requests", value: (r) => r.requests },
  { name: "Tokens", value: (r) => r.tokens },
  { name: "Cost", value: (r) => r.cost },
  { name: "Budget used", value: (r) => (r.budget?.budget_usd ? r.budget.spent_usd / r.budget.budget_usd : -1) },
  { name: "Remaining", value: (r) => r.budget?.remaining_usd ?? Infinity },
];

function spendTable(title, name, rows, current) {
  let sortBy = 4;
  let descending = true;
  const tbody = h("tbody");
  const headRow = h("tr");
  const draw = () => {
    const column = COLUMNS[sortBy];
    const sorted = [...rows].sort((a, b) => {
      const x = column.value(a);
      const y = column.value(b);
      const order = column.text ? String(x).localeCompare(String(y)) : x - y;
      return descending ? -order : order;
    });
    replace(tbody, sorted.length ? sorted.map(row) : h("tr", {}, h("td", { colspan: COLUMNS.length, class: "muted" }, "Nothing in this period.")));
    replace(headRow, COLUMNS.map((col, i) => h("th", {
      scope: "col", class: col.text || i >= 5 ? null : "num", "aria-sort": i === sortBy ? (descending ? "descending" : "ascending") : "none",
    }, h("button", {
      type: "button", class: "sort",
      onclick: () => {
        descending = i === sortBy ? !descending : !col.text;
        sortBy = i;
        draw();
        headRow.querySelectorAll("button")[i].focus();
      },
    }, col.name, i === sortBy ? (descending ? " ▾" : " ▴") : ""))));
  };
  draw();
  const csv = () => downloadCsv(`spend-${name}-${current.from}-${current.to}.csv`,
    ["name", "id", "requests", "total_tokens", "cost_usd", "budget_usd", "budget_period", "spent_usd", "remaining_usd"],
    rows.map((r) => [r.name, r.id, r.requests, r.tokens, r.cost, r.budget?.budget_usd, r.budget?.period,
      r.budget?.spent_usd, r.budget?.remaining_usd]));
  return h("section", { class: "spend", "data-spend": name },
    h("div", { class: "head" }, h("h2", {}, title),
      h("button", { type: "button", onclick: csv }, `Export ${title.toLowerCase()} as CSV`)),
    h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, headRow), tbody)));
}

function row(r) {
  const budget = r.budget;
  let used = h("span", { class: "muted" }, "no budget");
  if (budget?.budget_usd) {
    used = h("span", { class: "budget" },
      h("meter", { min: 0, max: budget.budget_usd, low: budget.budget_usd * 0.8, high: budget.budget_usd * 0.95, optimum: 0, value: budget.spent_usd }),
      ` ${usd(budget.spent_usd)} of ${usd(budget.budget_usd)}${budget.period ? ` / ${budget.period}` : ""}`);
  } else if (budget?.soft_budget_usd) {
    used = h("span", {}, `${usd(budget.spent_usd)} (soft ${usd(budget.soft_budget_usd)})`);
  }
  return h("tr", {},
    h("th", { scope: "row" }, r.name || r.id || "(none)"),
    h("td", {}, h("code", {}, r.id || "—")),
    h("td", { class: "num" }, count(r.requests)),
    h("td", { class: "num" }, count(r.tokens)),
    h("td", { class: "num" }, usd(r.cost)),
    h("td", {}, used),
    h("td", { class: "num" }, budget?.remaining_usd == null ? "—" : usd(budget.remaining_usd)));
}
