// The console's shell: sign-in, the page router (`#/page/…?query`), the signed-in key's role.

import { api, ApiError, onUnauthorized, session } from "./api.js";
import { h, replace, timeZone } from "./dom.js";
import { overview } from "./overview.js";
import { spend } from "./spend.js";
import { keys, teams } from "./keys.js";
import { requests } from "./requests.js";
import { health } from "./health.js";

const PAGES = { overview, spend, keys, teams, requests, health };
const ADMIN_ONLY = new Set(["keys", "teams"]);

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const alertBox = document.getElementById("alert");
const signOutButton = document.getElementById("sign-out");

// What the signed-in key may do: "admin" or "reader" (usage:read).
let role = null;
// Each render gets a number; a slower, older one must not paint over a newer page.
let generation = 0;

export function showError(error) {
  const message = error instanceof ApiError ? error.message : `Something went wrong: ${error.message ?? error}`;
  replace(alertBox, h("span", {}, message),
    h("button", { type: "button", class: "link", onclick: () => { alertBox.hidden = true; } }, "Dismiss"));
  alertBox.hidden = false;
}

function clearError() {
  alertBox.hidden = true;
  alertBox.replaceChildren();
}

export function route() {
  const [path, search = ""] = window.location.hash.replace(/^#\/?/, "").split("?");
  const [page, ...rest] = path.split("/");
  return { page: page || "overview", rest: rest.map(decodeURIComponent), query: new URLSearchParams(search) };
}

export function go(page, query = {}) {
  const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "" && v != null));
  const text = params.toString();
  window.location.hash = `#/${page}${text ? `?${text}` : ""}`;
}

async function render() {
  const mine = ++generation;
  if (!session.key || !role) {
    signInPage();
    return;
  }
  const where = route();
  const page = PAGES[where.page] && !(ADMIN_ONLY.has(where.page) && role !== "admin") ? where.page : "overview";
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clearError();
  const view = h("div", { class: "page", "aria-busy": "true" });
  replace(main, view);
  try {
    await PAGES[page](view, { ...where, role, go, showError, isCurrent: () => mine === generation });
  } catch (error) {
    if (mine === generation) showError(error);
  } finally {
    view.setAttribute("aria-busy", "false");
  }
}

function signInPage() {
  nav.hidden = true;
  signOutButton.hidden = true;
  const input = h("input", {
    id: "key", name: "key", type: "password", autocomplete: "off", required: true, spellcheck: "false",
  });
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("label", { for: "key" }, "API key (admin or usage:read)"),
    input,
    h("p", { class: "muted" },
      "The key stays in this browser tab (sessionStorage) and is sent only to this gateway, as the ",
      h("code", {}, "Authorization"), " header of each API call."),
    button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    clearError();
    try {
      role = await roleOf(input.value.trim());
      session.key = input.value.trim();
      showShell();
      if (!window.location.hash || window.location.hash === "#/sign-in") go("overview");
      else render();
    } catch (error) {
      showError(error);
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  replace(main, form);
  input.focus();
}

// Admin if it may list keys; a reader if it may read the usage report; refused otherwise.
async function roleOf(key) {
  try {
    await api("/admin/v1/keys", { key, query: { limit: 1 } });
    return "admin";
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 403) throw error;
  }
  try {
    await api("/admin/v1/usage", { key, query: { group_by: "" } });
    return "reader";
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) {
      throw new ApiError(403, "This key has neither the admin nor the usage:read scope, so the console shows it nothing.");
    }
    throw error;
  }
}

function showShell() {
  nav.hidden = false;
  signOutButton.hidden = false;
  for (const link of nav.querySelectorAll("[data-admin]")) link.hidden = role !== "admin";
}

function signOut(message) {
  session.key = null;
  role = null;
  render();
  if (message) showError(new ApiError(401, `${message} Sign in again.`));
}

async function start() {
  document.getElementById("zone").textContent = `Times: ${timeZone} · chart buckets: UTC`;
  signOutButton.addEventListener("click", () => signOut());
  // The skip link moves the focus without touching the hash, which names the page.
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    (main.querySelector("h1") ?? main).focus();
  });
  onUnauthorized((message) => signOut(message));
  window.addEventListener("hashchange", render);
  if (session.key) {
    try {
      role = await roleOf(session.key);
      showShell();
    } catch (error) {
      session.key = null;
      showError(error);
    }
  }
  render();
}

start();
