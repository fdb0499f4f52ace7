// Calls to the gateway's own API with the signed-in key, and its errors in words.

const KEY = "llmgw.console.key";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(status, message, type = null, code = null) {
    super(message);
    this.status = status;
    this.type = type;
    this.code = code;
  }
}

const WHAT = {
  400: "The gateway did not accept the request",
  401: "The key was refused",
  403: "This key may not do that",
  404: "Not found",
  409: "That conflicts with what exists",
  429: "Too many requests for now",
  502: "An upstream provider failed",
  503: "The gateway is not ready",
  504: "An upstream provider timed out",
};

function describe(status, error) {
  const what = WHAT[status] ?? (status >= 500 ? "The gateway failed" : "The request failed");
  const detail = [`HTTP ${status}`, error?.type, error?.code].filter(Boolean).join(", ");
  return error?.message ? `${what}: ${error.message} (${detail})` : `${what} (${detail}).`;
}

// Called on any 401: the key no longer works (disabled, rotated away, mistyped).
let unauthorized = () => {};
export function onUnauthorized(callback) { unauthorized = callback; }

// One API call: JSON in and out (or CSV text with `csv`); `query` entries that are empty are left out;
// statuses in `accept` are answers, not errors (`/readyz` says 503 with its body).
export async function api(path, { method = "GET", body, query = {}, key = session.key, accept = [] } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store",
    });
  } catch (exc) {
    throw new ApiError(0, `Could not reach the gateway (${exc.message}).`);
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    answer = null;
  }
  if (!response.ok && !accept.includes(response.status)) {
    const error = answer?.error;
    if (response.status === 401 && key === session.key) unauthorized(describe(401, error));
    throw new ApiError(response.status, describe(response.status, error), error?.type, error?.code);
  }
  return answer;
}

// Every page of a listing (`data`, `next_cursor`), up to `most` items.
export async function all(path, query = {}, most = 2000) {
  const items = [];
  let after = "";
  do {
    const page = await api(path, { query: { ...query, limit: 100, after } });
    items.push(...page.data);
    after = page.has_more ? page.next_cursor : "";
  } while (after && items.length < most);
  return items;
}
