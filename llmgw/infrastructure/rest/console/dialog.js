// Modal dialogs on the native <dialog> element: it keeps the keyboard inside, closes on Escape, and gives
// the focus back to what had it.

import { h } from "./dom.js";

export function openDialog(title, ...content) {
  const opener = document.activeElement;
  const dialog = h("dialog", { "aria-labelledby": "dialog-title" },
    h("div", { class: "head" }, h("h2", { id: "dialog-title" }, title),
      h("button", { type: "button", class: "link", "aria-label": "Close", onclick: () => dialog.close() }, "✕")),
    content);
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  // The first field, or what the dialog marks, rather than the close button.
  dialog.querySelector("[autofocus], input, select")?.focus();
  return dialog;
}

// Resolves true if the person confirms.
export function confirmAction(title, message, action) {
  return new Promise((resolve) => {
    let confirmed = false;
    const dialog = openDialog(title,
      h("p", {}, message),
      h("div", { class: "actions" },
        h("button", { type: "button", autofocus: true, onclick: () => dialog.close() }, "Cancel"),
        h("button", { type: "button", class: "danger", onclick: () => { confirmed = true; dialog.close(); } }, action)));
    dialog.addEventListener("close", () => resolve(confirmed));
  });
}

// A secret shown once, with a button that copies it.
export function showSecret(title, secret) {
  const status = h("span", { role: "status", class: "muted" });
  const code = h("code", { class: "secret", id: "secret", tabindex: "0" }, secret);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(secret);
      status.textContent = "Copied.";
    } catch {
      window.getSelection().selectAllChildren(code);
      status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
    }
  };
  return openDialog(title,
    h("p", {}, "Copy the key now: it is shown this once, and the gateway keeps only its hash."),
    h("div", { class: "secret-row" }, code,
      h("button", { type: "button", class: "primary", autofocus: true, onclick: copy }, "Copy"), status),
    h("div", { class: "actions" }, h("button", { type: "button", onclick: (e) => e.target.closest("dialog").close() }, "Done")));
}
