// Health: what `/readyz` tells an admin key: providers, open circuits, the record store and its queue.

import { api } from "./api.js";
import { count, h, localTime, replace, table } from "./dom.js";

export async function health(view, context) {
  const ready = await api("/readyz", { accept: [503] });
  if (!context.isCurrent()) return;
  const refresh = h("button", { type: "button", onclick: () => health(view, context) }, "Refresh");
  const tone = ready.status === "ready" ? "good" : "bad";
  const head = h("div", { class: "head" }, h("h1", { tabindex: "-1" }, "Health"),
    h("span", { class: `badge ${tone}`, "data-status": ready.status }, ready.status), refresh);
  if (!ready.providers) {
    replace(view, head, h("p", {}, "Providers, circuits and the store are shown to admin keys only."));
    view.dataset.loaded = "health";
    return;
  }
  const circuits = ready.circuits ?? [];
  const store = ready.store;
  replace(view, head,
    h("section", { class: "cards", "aria-label": "Store" },
      card("Record store", store.state, store.state === "up" ? "answering" : "not answering", store.state === "up"),
      card("Pending records", count(store.pending_records), "waiting to be written", true),
      card("Dropped records", count(store.dropped_records), "lost since start (queue full)", store.dropped_records === 0),
      ready.limits ? card("Limit counters", ready.limits.state, "Redis or this process", ready.limits.state === "up") : null),
    h("h2", {}, "Providers"),
    table(["Provider", "Credentials", "Circuits"],
      ready.providers.map((provider) => {
        const open = circuits.filter((c) => c.provider === provider.name);
        return h("tr", { "data-provider": provider.name },
          h("th", { scope: "row" }, provider.name),
          h("td", {}, provider.credentials ? "configured" : "none (fine for local servers)"),
          h("td", {}, open.length ? open.map((c) => `${c.upstream_model}: ${c.state}`).join(", ") : h("span", { class: "badge good" }, "closed")));
      })),
    h("h2", {}, "Open circuits"),
    table(["Provider", "Upstream model", "State", "Opened"],
      circuits.map((c) => h("tr", {},
        h("td", {}, c.provider), h("td", {}, c.upstream_model), h("td", {}, h("span", { class: "badge bad" }, c.state)),
        h("td", {}, localTime(c.opened_at)))), "None: every circuit is closed."));
  view.dataset.loaded = "health";
}

function card(title, value, note, good) {
  return h("div", { class: `card ${good ? "" : "warn"}` }, h("span", { class: "muted" }, title),
    h("strong", {}, value), h("small", { class: "muted" }, note));
}
