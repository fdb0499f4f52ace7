// Building elements (never from HTML text: API data only ever lands in text nodes) and formatting numbers
// and times for people.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attrs);
  append(el, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttributes(el, attrs);
  append(el, children);
  return el;
}

function setAttributes(el, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

export function count(value) {
  return integer.format(value ?? 0);
}

export function short(value) {
  return Math.abs(value ?? 0) < 10000 ? integer.format(value ?? 0) : compact.format(value);
}

export function usd(value) {
  if (value === null || value === undefined) return "—";
  const digits = value !== 0 && Math.abs(value) < 1 ? 6 : 2;
  return `$${value.toFixed(digits)}`;
}

export function ms(value) {
  return value === null || value === undefined ? "—" : `${integer.format(value)} ms`;
}

export const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

const localFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

// A time for people, in the browser's zone: from Unix seconds or ISO 8601 text.
export function localTime(value) {
  if (value === null || value === undefined || value === "") return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : localFormat.format(date);
}

// UTC days as the usage API counts them: "YYYY-MM-DD".
export function utcDay(date) {
  return date.toISOString().slice(0, 10);
}

export function addDays(day, days) {
  const date = new Date(`${day}T00:00:00Z`);
  date.setUTCDate(date.getUTCDate() + days);
  return utcDay(date);
}

export function loading(what) {
  return h("p", { class: "muted", role: "status" }, `Loading ${what}…`);
}

// Headers ending in "#" are numbers (aligned right; the "#" is not shown).
export function table(headers, rows, empty = "Nothing yet.") {
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("thead", {}, h("tr", {}, headers.map((name) => name.endsWith("#")
        ? h("th", { scope: "col", class: "num" }, name.slice(0, -1)) : h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, empty)))));
}

// A CSV file the browser saves: `rows` are arrays of cells.
export function downloadCsv(filename, header, rows) {
  const cell = (value) => {
    const text = value === null || value === undefined ? "" : String(value);
    return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  const text = [header, ...rows].map((row) => row.map(cell).join(",")).join("\r\n") + "\r\n";
  const link = h("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}
