// The period a report covers (today, 7 or 30 days, or chosen days), as UTC days, and its picker.

import { addDays, h, utcDay } from "./dom.js";

const CHOICES = [["today", "Today"], ["7d", "7 days"], ["30d", "30 days"], ["custom", "Custom"]];

// {period, from, to, unit}: `unit` is the chart bucket, hours for one day and days otherwise.
export function periodOf(query) {
  const today = utcDay(new Date());
  const period = CHOICES.some(([value]) => value === query.get("period")) ? query.get("period") : "7d";
  let from = today;
  let to = today;
  if (period === "7d") from = addDays(today, -6);
  if (period === "30d") from = addDays(today, -29);
  if (period === "custom") {
    const day = /^\d{4}-\d{2}-\d{2}$/;
    from = day.test(query.get("from") ?? "") ? query.get("from") : addDays(today, -6);
    to = day.test(query.get("to") ?? "") ? query.get("to") : today;
    if (to < from) [from, to] = [to, from];
  }
  return { period, from, to, unit: from === to ? "hour" : "day" };
}

// The buckets of a period, each {key, label, short}; `key` matches a usage row's `day` or `hour`.
export function buckets({ from, to, unit }) {
  const out = [];
  if (unit === "hour") {
    for (let hour = 0; hour < 24; hour++) {
      const text = String(hour).padStart(2, "0");
      out.push({ key: `${from}T${text}:00:00Z`, label: `${from} ${text}:00 UTC`, short: `${text}h` });
    }
    return out;
  }
  for (let day = from; day <= to && out.length < 400; day = addDays(day, 1)) {
    out.push({ key: day, label: day, short: day.slice(5) });
  }
  return out;
}

// Set while the picker asks for a new period, so the page it renders gives the picker back its focus.
let refocus = false;

// The picker: a change asks `go` for the same page with the new period.
export function periodPicker(current, onChange) {
  const from = h("input", { type: "date", id: "period-from", value: current.from, "aria-label": "First day (UTC)" });
  const to = h("input", { type: "date", id: "period-to", value: current.to, "aria-label": "Last day (UTC)" });
  const custom = h("span", { class: "custom", hidden: current.period !== "custom" },
    h("label", { for: "period-from" }, "From"), from, h("label", { for: "period-to" }, "to"), to,
    h("button", { type: "submit" }, "Show"));
  const form = h("form", { class: "period", "aria-label": "Period" },
    h("fieldset", {},
      h("legend", {}, "Period (UTC days)"),
      CHOICES.map(([value, text]) => h("label", { class: "choice" },
        h("input", { type: "radio", name: "period", value, checked: value === current.period }), text)),
      custom));
  form.addEventListener("change", (event) => {
    if (event.target.name !== "period") return;
    if (event.target.value === "custom") {
      custom.hidden = false;
      from.focus();
      return;
    }
    refocus = true;
    onChange({ period: event.target.value });
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    refocus = true;
    onChange({ period: "custom", from: from.value, to: to.value });
  });
  if (refocus) {
    refocus = false;
    queueMicrotask(() => form.querySelector("input[name=period]:checked")?.focus());
  }
  return form;
}
