// Shared widgets: dialogs, toasts, forms with per-field errors, badges, empty and error states.

import { h, uid } from "./dom.js";

export function toast(message, kind = "info") {
  const region = document.getElementById("toasts");
  const item = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  region.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/** A modal <dialog> (focus trap and Escape come with it). Resolves when closed. */
export function openDialog({ title, body, actions = [], wide = false, onClose }) {
  const titleId = uid("dlg");
  const dialog = h("dialog", { class: wide ? "wide" : "", "aria-labelledby": titleId },
    h("div", { class: "dialog-head" },
      h("h2", { id: titleId }, title),
      h("button", { type: "button", class: "icon", "aria-label": "Close", onclick: () => close() }, "×")),
    h("div", { class: "dialog-body" }, body),
    actions.length ? h("div", { class: "dialog-actions" }, actions) : null);
  const close = () => {
    if (dialog.open) dialog.close();
  };
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (onClose) onClose();
  });
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, close };
}

/** "Are you sure?" → Promise<boolean>. */
export function confirmDialog({ title, message, confirm = "Confirm", danger = false }) {
  return new Promise((resolve) => {
    let answer = false;
    const yes = h("button", { type: "button", class: danger ? "danger" : "primary",
      onclick: () => { answer = true; ui.close(); } }, confirm);
    const no = h("button", { type: "button", onclick: () => ui.close() }, "Cancel");
    const ui = openDialog({ title, body: h("p", {}, message), actions: [no, yes], onClose: () => resolve(answer) });
    no.focus();
  });
}

/**
 * A form whose fields show the API's messages next to them.
 * spec: [{name, label, type, value, options: [[value, label]], hint, required, attrs}]
 */
export function makeForm(spec, { submitLabel = "Save", onSubmit, readOnly = false, extra = null } = {}) {
  const inputs = {};
  const errors = {};
  const formError = h("p", { class: "form-error", role: "alert", hidden: true });
  const rows = spec.map((field) => {
    const id = uid(field.name);
    const errorId = `${id}-error`;
    const hintId = field.hint ? `${id}-hint` : null;
    const common = { id, name: field.name, "aria-describedby": [hintId, errorId].filter(Boolean).join(" "),
      disabled: readOnly || field.disabled, required: field.required && !readOnly, ...(field.attrs || {}) };
    let input;
    if (field.type === "select") {
      input = h("select", common, field.options.map(([value, label]) =>
        h("option", { value, selected: String(value) === String(field.value ?? "") }, label)));
    } else if (field.type === "textarea") {
      input = h("textarea", { ...common, rows: field.rows || 3 });
      input.value = field.value ?? "";
    } else if (field.type === "checkbox") {
      input = h("input", { ...common, type: "checkbox", checked: Boolean(field.value) });
    } else {
      input = h("input", { ...common, type: field.type || "text", value: field.value ?? "" });
    }
    inputs[field.name] = input;
    errors[field.name] = h("span", { id: errorId, class: "field-error", hidden: true });
    const hint = field.hint ? h("span", { id: hintId, class: "hint" }, field.hint) : null;
    if (field.type === "checkbox") {
      return h("div", { class: "field field-check" },
        h("label", { for: id }, input, " ", field.label), hint, errors[field.name]);
    }
    return h("div", { class: "field" }, h("label", { for: id }, field.label), input, hint, errors[field.name]);
  });
  const submit = readOnly ? null : h("button", { type: "submit", class: "primary" }, submitLabel);
  const form = h("form", { novalidate: true, class: "form" }, rows, extra, formError,
    submit ? h("div", { class: "form-actions" }, submit) : null);

  function clearErrors() {
    formError.hidden = true;
    formError.textContent = "";
    for (const [name, el] of Object.entries(errors)) {
      el.hidden = true;
      el.textContent = "";
      inputs[name].removeAttribute("aria-invalid");
    }
  }

  /** Show ``fields`` ({name: message}) next to their inputs; the rest (and ``message``) above the button. */
  function setErrors(fields = {}, message = "", aliases = {}) {
    clearErrors();
    const leftover = [];
    let first = null;
    for (const [rawName, text] of Object.entries(fields)) {
      const name = aliases[rawName] || rawName;
      if (errors[name]) {
        errors[name].textContent = String(text);
        errors[name].hidden = false;
        inputs[name].setAttribute("aria-invalid", "true");
        first = first || inputs[name];
      } else {
        leftover.push(`${rawName}: ${text}`);
      }
    }
    const summary = [message, ...leftover].filter(Boolean).join(" — ");
    if (summary) {
      formError.textContent = summary;
      formError.hidden = false;
    }
    if (first) first.focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!onSubmit || readOnly) return;
    clearErrors();
    submit.disabled = true;
    try {
      await onSubmit(values());
    } finally {
      submit.disabled = false;
    }
  });

  function values() {
    const out = {};
    for (const [name, input] of Object.entries(inputs)) {
      out[name] = input.type === "checkbox" ? input.checked : input.value;
    }
    return out;
  }

  return { form, inputs, setErrors, clearErrors, values };
}

/** Show an ApiError on a form: field messages next to fields, the rest at the bottom. */
export function showApiError(formApi, err, aliases = {}) {
  const fields = { ...(err.fields || {}) };
  if (err.body && typeof err.body.field === "string") fields[err.body.field] = err.message;
  const fieldCount = Object.keys(fields).length;
  formApi.setErrors(fields, fieldCount ? (err.status === 400 ? "Please correct the marked fields." : "") : err.message,
    aliases);
}

export function badge(text, kind) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

export function nodeBadges(node) {
  return [
    badge(node.status, node.status === "active" ? "ok" : node.status === "standby" ? "warn" : "muted"),
    node.enabled === false ? badge("disabled", "muted") : null,
    node.draining ? badge(node.idle ? "drained" : "draining", "info") : null,
  ];
}

export function emptyState(message, action = null) {
  return h("div", { class: "empty" }, h("p", {}, message), action);
}

export function errorState(err, retry) {
  const text = err && err.status === 0 ? "API unreachable — retrying" : (err && err.message) || "Something went wrong";
  return h("div", { class: "empty error-state", role: "alert" }, h("p", {}, text),
    retry ? h("button", { type: "button", onclick: retry }, "Try again") : null);
}

export function pageHeader(title, ...actions) {
  return h("div", { class: "page-head" },
    h("h1", { tabindex: "-1", class: "page-title" }, title),
    actions.length ? h("div", { class: "page-actions" }, actions) : null);
}

/** Copy text to the clipboard; falls back to a selection for non-secure origins. */
export async function copyText(text, fallbackInput) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (fallbackInput) {
      fallbackInput.select();
      try {
        return document.execCommand("copy");
      } catch {
        return false;
      }
    }
    return false;
  }
}
