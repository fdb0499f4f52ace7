// Requests: the generation records, newest first, filtered and paged by cursor; and one record in full.

import { api } from "./api.js";
import { count, h, localTime, loading, ms, replace, table, timeZone, usd } from "./dom.js";

const FILTERS = ["key_id", "team_id", "model", "status", "from", "to"];

export async function requests(view, context) {
  if (context.rest[0]) return detail(view, context.rest[0], context);
  const { query, go, isCurrent } = context;
  const asked = Object.fromEntries(FILTERS.map((name) => [name, query.get(name) ?? ""]));
  const after = query.get("after") ?? "";
  const body = h("div", {}, loading("requests"));
  replace(view, h("div", { class: "head" }, h("h1", { tabindex: "-1" }, "Requests")), filterForm(asked, go), body);
  const page = await api("/admin/v1/generations", {
    query: { ...asked, from: toUnix(asked.from), to: toUnix(asked.to), limit: 50, after },
  });
  if (!isCurrent()) return;
  const more = page.has_more
    ? h("a", { class: "button", href: link({ ...asked, after: page.next_cursor }) }, "Older requests →") : null;
  const first = after ? h("a", { class: "button", href: link(asked) }, "← Newest") : null;
  replace(body,
    table([`Time (${timeZone})`, "ID", "Model", "Provider", "Status", "Tokens#", "Cost#", "Latency#", "Key"],
      page.data.map((record) => h("tr", { "data-generation": record.id },
        h("td", {}, localTime(record.created_at)),
        h("td", {}, h("a", { href: `#/requests/${encodeURIComponent(record.id)}` }, record.id)),
        h("td", {}, record.model),
        h("td", {}, record.provider),
        h("td", {}, badge(record.status)),
        h("td", { class: "num" }, count(record.total_tokens)),
        h("td", { class: "num" }, usd(record.cost_usd)),
        h("td", { class: "num" }, ms(record.latency_ms)),
        h("td", {}, record.key_id ? h("code", {}, record.key_id) : "—"))), "No request matches."),
    h("nav", { class: "pager", "aria-label": "Pages of requests" }, first, more));
  view.dataset.loaded = "requests";
}

function link(params) {
  const text = new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();
  return `#/requests${text ? `?${text}` : ""}`;
}

// A datetime-local value (the browser's zone) as Unix seconds, for the API.
function toUnix(value) {
  if (!value) return "";
  const time = new Date(value).getTime();
  return Number.isNaN(time) ? value : String(Math.floor(time / 1000));
}

function badge(status) {
  const tone = status === "completed" ? "good" : status === "error" ? "bad" : "warn";
  return h("span", { class: `badge ${tone}` }, status);
}

function filterForm(asked, go) {
  const input = (name, label, attrs = {}) => h("div", { class: "field" },
    h("label", { for: `q-${name}` }, label),
    h("input", { id: `q-${name}`, name, value: asked[name], ...attrs }));
  const form = h("form", { class: "filters", "aria-label": "Filters" },
    input("key_id", "Key ID"),
    input("team_id", "Team ID"),
    input("model", "Model", { placeholder: "provider/model" }),
    h("div", { class: "field" }, h("label", { for: "q-status" }, "Status"),
      h("select", { id: "q-status", name: "status" },
        ["", "completed", "error", "cancelled"].map((value) => h("option", { value, selected: asked.status === value }, value || "any")))),
    input("from", `From (${timeZone})`, { type: "datetime-local" }),
    input("to", `Until (${timeZone})`, { type: "datetime-local" }),
    h("div", { class: "field buttons" },
      h("button", { type: "submit", class: "primary" }, "Filter"),
      h("a", { class: "button", href: "#/requests" }, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go("requests", Object.fromEntries(FILTERS.map((name) => [name, form.elements[name].value.trim()])));
  });
  return form;
}

async function detail(view, id, { isCurrent }) {
  replace(view, h("p", {}, h("a", { href: "#/requests" }, "← All requests")), loading(id));
  const { generation: record } = await api(`/v1/generation/${encodeURIComponent(id)}`);
  if (!isCurrent()) return;
  const created = new Date(record.created_at);
  replace(view,
    h("p", {}, h("a", { href: "#/requests" }, "← All requests")),
    h("div", { class: "head" }, h("h1", { tabindex: "-1" }, record.id), badge(record.status)),
    h("section", { class: "cards", "aria-label": "Summary" },
      card("Model", record.model, `${record.provider} · ${record.upstream_model}`),
      card("Tokens", count(record.total_tokens), `${count(record.prompt_tokens)} in · ${count(record.completion_tokens)} out`),
      card("Cost", usd(record.cost_usd), record.cost_usd == null ? "not priced" : "USD"),
      card("Latency", ms(record.latency_ms), `first token ${ms(record.time_to_first_token_ms)}`)),
    h("p", { class: "muted" }, `Created ${localTime(record.created_at)} (${timeZone}) · ${created.toISOString()} (UTC)`),
    h("h2", {}, "Attempts"),
    table(["#", "Provider", "Upstream model", "Model", "Outcome", "Error", "Duration#"],
      record.attempts.map((attempt, i) => h("tr", {},
        h("td", {}, i + 1), h("td", {}, attempt.provider), h("td", {}, attempt.upstream_model),
        h("td", {}, attempt.model), h("td", {}, badge(attempt.outcome)), h("td", {}, attempt.error_code || "—"),
        h("td", { class: "num" }, ms(attempt.duration_ms)))), "No attempt: the request never reached a provider."),
    h("h2", {}, "Every field"),
    h("dl", { class: "fields" }, Object.entries(record).map(([name, value]) => [
      h("dt", {}, name),
      h("dd", { "data-field": name }, value === null ? "null" : typeof value === "object" ? JSON.stringify(value) : String(value)),
    ])));
  view.dataset.loaded = "generation";
}

function card(title, value, note) {
  return h("div", { class: "card" }, h("span", { class: "muted" }, title), h("strong", {}, value),
    h("small", { class: "muted" }, note));
}
