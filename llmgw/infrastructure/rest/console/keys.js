// Keys and teams (admin keys only): list, create (a key's secret shown once), set scopes, models and
// limits, rotate and disable keys, delete teams.

import { all, api } from "./api.js";
import { confirmAction, openDialog, showSecret } from "./dialog.js";
import { h, localTime, replace, table, usd } from "./dom.js";

const SCOPES = ["inference", "usage:read", "admin"];
const LIMITS = [
  ["rpm", "Requests per minute", "1"],
  ["tpm", "Tokens per minute", "1"],
  ["max_parallel", "Requests at once", "1"],
  ["budget_usd", "Budget (USD)", "any"],
  ["soft_budget_usd", "Soft budget (USD, warns only)", "any"],
];

export async function keys(view, context) {
  const [found, teamList] = await Promise.all([all("/admin/v1/keys"), all("/admin/v1/teams")]);
  if (!context.isCurrent()) return;
  const teamNames = new Map(teamList.map((team) => [team.id, team.name]));
  const reload = () => keys(view, context);
  replace(view,
    h("div", { class: "head" }, h("h1", { tabindex: "-1" }, "Keys"),
      h("button", { type: "button", class: "primary", onclick: () => keyForm(null, teamList, reload, context) }, "Create key")),
    table(["Name", "ID", "Team", "Scopes", "Models", "Limits", "Status", "Last used", "Actions"],
      found.map((key) => h("tr", { "data-key": key.id },
        h("th", { scope: "row" }, key.name || "—"),
        h("td", {}, h("code", {}, key.id)),
        h("td", {}, key.team_id ? teamNames.get(key.team_id) ?? key.team_id : "—"),
        h("td", {}, key.scopes.join(", ")),
        h("td", {}, key.models.length ? key.models.join(", ") : "all"),
        h("td", {}, limitsText(key)),
        h("td", {}, status(key)),
        h("td", {}, localTime(key.last_used_at)),
        h("td", { class: "row-actions" },
          h("button", { type: "button", onclick: () => keyForm(key, teamList, reload, context) }, "Edit"),
          h("button", { type: "button", onclick: () => rotate(key, reload, context) }, "Rotate"),
          key.disabled
            ? h("button", { type: "button", onclick: () => enable(key, reload, context) }, "Enable")
            : h("button", { type: "button", class: "danger", onclick: () => disable(key, reload, context) }, "Disable")))),
      "No key yet: create one."));
  view.dataset.loaded = "keys";
}

function status(key) {
  if (key.disabled) return h("span", { class: "badge bad" }, "disabled");
  if (key.expires_at && key.expires_at * 1000 < Date.now()) return h("span", { class: "badge bad" }, "expired");
  return h("span", { class: "badge good" }, "active");
}

function limitsText(owner) {
  const parts = [];
  if (owner.rpm != null) parts.push(`${owner.rpm} rpm`);
  if (owner.tpm != null) parts.push(`${owner.tpm} tpm`);
  if (owner.max_parallel != null) parts.push(`${owner.max_parallel} at once`);
  if (owner.budget_usd != null) parts.push(`${usd(owner.budget_usd)} / ${owner.budget_period ?? "lifetime"}`);
  if (owner.soft_budget_usd != null) parts.push(`soft ${usd(owner.soft_budget_usd)}`);
  return parts.length ? parts.join(" · ") : "none";
}

function field(id, label, input, hint) {
  return h("div", { class: "field" }, h("label", { for: id }, label), input,
    hint ? h("small", { class: "muted" }, hint) : null);
}

function limitFields(owner) {
  return [
    ...LIMITS.map(([name, label, step]) => field(`f-${name}`, label,
      h("input", { id: `f-${name}`, name, type: "number", min: 0, step, value: owner?.[name] ?? "" }), "empty: no limit")),
    field("f-budget_period", "Budget period", h("select", { id: "f-budget_period", name: "budget_period" },
      ["", "day", "week", "month"].map((value) => h("option", { value, selected: (owner?.budget_period ?? "") === value }, value || "lifetime")))),
  ];
}

function limitValues(form) {
  const values = {};
  for (const [name, , step] of LIMITS) {
    const text = form.elements[name].value.trim();
    values[name] = text === "" ? null : step === "1" ? parseInt(text, 10) : parseFloat(text);
  }
  values.budget_period = form.elements.budget_period.value || null;
  return values;
}

// Only what changed, for a PATCH; everything set, for a POST.
function changes(before, after) {
  if (!before) return Object.fromEntries(Object.entries(after).filter(([, v]) => v !== null && v !== ""));
  return Object.fromEntries(Object.entries(after).filter(([name, v]) => JSON.stringify(before[name] ?? null) !== JSON.stringify(v)));
}

function submitting(form, dialog, send, context) {
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  form.append(error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const after = await send();
      dialog.close();
      after?.();
    } catch (exc) {
      error.textContent = exc.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

function keyForm(key, teamList, reload, context) {
  const expires = key?.expires_at ? new Date(key.expires_at * 1000 - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16) : "";
  const form = h("form", { class: "dialog-form", "aria-label": key ? "Edit key" : "Create key" },
    field("f-name", "Name", h("input", { id: "f-name", name: "name", required: true, value: key?.name ?? "" })),
    field("f-team", "Team", h("select", { id: "f-team", name: "team_id" },
      h("option", { value: "" }, "no team"),
      teamList.map((team) => h("option", { value: team.id, selected: key?.team_id === team.id }, `${team.name} (${team.id})`)))),
    h("fieldset", {}, h("legend", {}, "Scopes"),
      SCOPES.map((scope) => h("label", { class: "choice" },
        h("input", { type: "checkbox", name: "scopes", value: scope, checked: key ? key.scopes.includes(scope) : scope === "inference" }), scope))),
    field("f-models", "Models", h("input", { id: "f-models", name: "models", value: key?.models.join(", ") ?? "", placeholder: "all" }),
      "comma-separated ids or globs (local/*); empty: every model"),
    field("f-expires", `Expires (${Intl.DateTimeFormat().resolvedOptions().timeZone})`,
      h("input", { id: "f-expires", name: "expires_at", type: "datetime-local", value: expires }), "empty: never"),
    limitFields(key),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, key ? "Save" : "Create")));
  const dialog = openDialog(key ? `Edit key ${key.name}` : "Create a key", form);
  submitting(form, dialog, async () => {
    const els = form.elements;
    const expiresAt = els.expires_at.value ? Math.floor(new Date(els.expires_at.value).getTime() / 1000) : null;
    const values = {
      name: els.name.value.trim(),
      team_id: els.team_id.value || null,
      scopes: [...form.querySelectorAll("input[name=scopes]:checked")].map((box) => box.value),
      models: els.models.value.split(",").map((m) => m.trim()).filter(Boolean),
      expires_at: expiresAt,
      ...limitValues(form),
    };
    if (key) {
      await api(`/admin/v1/keys/${encodeURIComponent(key.id)}`, { method: "PATCH", body: changes(key, values) });
    } else {
      const created = await api("/admin/v1/keys", { method: "POST", body: changes(null, values) });
      reload();
      return () => showSecret(`Key ${created.name} created`, created.key);
    }
    reload();
    return null;
  }, context);
}

async function rotate(key, reload, context) {
  const grace = h("input", { id: "f-grace", name: "grace", type: "number", min: 0, step: "any", placeholder: "the gateway's default" });
  const form = h("form", { class: "dialog-form", "aria-label": "Rotate key" },
    h("p", {}, `A new secret replaces the one of ${key.name} (${key.id}).`),
    field("f-grace", "Seconds the old secret keeps working", grace, "empty: auth.rotation_grace; 0: stops at once"),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "danger" }, "Rotate")));
  const dialog = openDialog(`Rotate ${key.name}`, form);
  submitting(form, dialog, async () => {
    const body = grace.value === "" ? {} : { grace_seconds: parseFloat(grace.value) };
    const rotated = await api(`/admin/v1/keys/${encodeURIComponent(key.id)}:rotate`, { method: "POST", body });
    reload();
    return () => showSecret(`New secret for ${rotated.name}`, rotated.key);
  }, context);
}

async function disable(key, reload, context) {
  if (!(await confirmAction(`Disable ${key.name}?`, `Requests with ${key.id} are refused from now on, on every replica.`, "Disable"))) return;
  try {
    await api(`/admin/v1/keys/${encodeURIComponent(key.id)}:disable`, { method: "POST", body: {} });
    reload();
  } catch (error) {
    context.showError(error);
  }
}

async function enable(key, reload, context) {
  try {
    await api(`/admin/v1/keys/${encodeURIComponent(key.id)}`, { method: "PATCH", body: { disabled: false } });
    reload();
  } catch (error) {
    context.showError(error);
  }
}

export async function teams(view, context) {
  const [teamList, keyList] = await Promise.all([all("/admin/v1/teams"), all("/admin/v1/keys")]);
  if (!context.isCurrent()) return;
  const reload = () => teams(view, context);
  const members = (team) => keyList.filter((key) => key.team_id === team.id).length;
  replace(view,
    h("div", { class: "head" }, h("h1", { tabindex: "-1" }, "Teams"),
      h("button", { type: "button", class: "primary", onclick: () => teamForm(null, reload, context) }, "Create team")),
    table(["Name", "ID", "Keys#", "Limits", "Created", "Actions"],
      teamList.map((team) => h("tr", { "data-team": team.id },
        h("th", { scope: "row" }, team.name),
        h("td", {}, h("code", {}, team.id)),
        h("td", { class: "num" }, members(team)),
        h("td", {}, limitsText(team)),
        h("td", {}, localTime(team.created_at)),
        h("td", { class: "row-actions" },
          h("button", { type: "button", onclick: () => teamForm(team, reload, context) }, "Edit"),
          h("button", { type: "button", class: "danger", onclick: () => deleteTeam(team, reload, context) }, "Delete")))),
      "No team yet."));
  view.dataset.loaded = "teams";
}

function teamForm(team, reload, context) {
  const form = h("form", { class: "dialog-form", "aria-label": team ? "Edit team" : "Create team" },
    field("f-name", "Name", h("input", { id: "f-name", name: "name", required: true, value: team?.name ?? "" })),
    limitFields(team),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, team ? "Save" : "Create")));
  const dialog = openDialog(team ? `Edit team ${team.name}` : "Create a team", form);
  submitting(form, dialog, async () => {
    const values = { name: form.elements.name.value.trim(), ...limitValues(form) };
    if (team) await api(`/admin/v1/teams/${encodeURIComponent(team.id)}`, { method: "PATCH", body: changes(team, values) });
    else await api("/admin/v1/teams", { method: "POST", body: changes(null, values) });
    reload();
  }, context);
}

async function deleteTeam(team, reload, context) {
  if (!(await confirmAction(`Delete ${team.name}?`, `Team ${team.id} goes; what its keys used stays in the reports.`, "Delete"))) return;
  try {
    await api(`/admin/v1/teams/${encodeURIComponent(team.id)}`, { method: "DELETE" });
    reload();
  } catch (error) {
    context.showError(error);
  }
}
