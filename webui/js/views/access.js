// Users and API keys (admin only): people, their roles and passwords; tokens and gateway keys.

import * as api from "../api.js";
import { h } from "../dom.js";
import * as fmt from "../format.js";
import { badge, confirmDialog, copyText, emptyState, errorState, makeForm, openDialog, pageHeader, showApiError, toast }
  from "../ui.js";

const KINDS = [["api", "API token — for scripts using the management API"],
  ["gateway", "Gateway key — for clients of the Ollama and /v1 routes"]];

function cell(label, ...content) {
  return h("td", { "data-label": label }, ...content);
}

/** The once-only display of a new key's secret, with a copy button. */
function showSecret(secret, key) {
  const field = h("input", { type: "text", readonly: true, value: secret, class: "secret", id: "new-key-secret",
    "aria-label": "The new key" });
  const copy = h("button", { type: "button", class: "primary", id: "copy-secret", onclick: async () => {
    const ok = await copyText(secret, field);
    copy.textContent = ok ? "Copied" : "Select and copy it by hand";
  } }, "Copy");
  const ui = openDialog({
    title: "Your new key",
    body: [
      h("p", {}, "Copy ", h("strong", {}, key.name), " now: it is shown only this once and cannot be recovered."),
      h("div", { class: "secret-row" }, field, copy),
      h("p", { class: "hint" }, key.kind === "gateway"
        ? "Clients send it as Authorization: Bearer <key> to the Ollama and /v1 routes."
        : "Scripts send it as Authorization: Bearer <key> to the management API."),
    ],
    actions: [h("button", { type: "button", onclick: () => ui.close() }, "Done")],
  });
  field.select();
  copy.focus();
}

export function accessView(root, ctx) {
  root.append(pageHeader("Users & keys"));
  if (!ctx.admin) {
    root.append(emptyState("Only admins can manage users and API keys."));
    return {};
  }
  const usersBox = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading…"));
  const keysBox = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading…"));
  let users = [];

  const userForm = makeForm([
    { name: "username", label: "Username", required: true, attrs: { autocomplete: "off", autocapitalize: "none" } },
    { name: "password", label: "Password", type: "password", required: true, hint: "At least 8 characters.",
      attrs: { autocomplete: "new-password" } },
    { name: "role", label: "Role", type: "select", value: "viewer", options: [["viewer", "viewer (read-only)"], ["admin", "admin"]] },
  ], {
    submitLabel: "Create user",
    onSubmit: async (v) => {
      try {
        const user = await api.post("/api/users", { username: v.username.trim(), password: v.password, role: v.role });
        toast(`Created ${user.role} ${user.username}.`, "ok");
        userForm.inputs.username.value = "";
        userForm.inputs.password.value = "";
        await refresh();
      } catch (err) {
        showApiError(userForm, err);
      }
    },
  });
  userForm.form.classList.add("inline-form");

  const keyForm = makeForm([
    { name: "name", label: "Key name", required: true, hint: "What the key is for, e.g. ci-pipeline." },
    { name: "kind", label: "Kind", type: "select", value: "api", options: KINDS },
    { name: "user_id", label: "Owner", type: "select", options: [["", "me"]] },
  ], {
    submitLabel: "Create key",
    onSubmit: async (v) => {
      try {
        const body = { name: v.name.trim(), kind: v.kind };
        if (v.user_id) body.user_id = v.user_id;
        const answer = await api.post("/api/proxy/keys", body);
        keyForm.inputs.name.value = "";
        showSecret(answer.secret, answer.key);
        await refresh();
      } catch (err) {
        showApiError(keyForm, err);
      }
    },
  });
  keyForm.form.classList.add("inline-form");

  root.append(
    h("section", { class: "card" }, h("h2", {}, "Users"), userForm.form, usersBox),
    h("section", { class: "card" }, h("h2", {}, "API keys"), keyForm.form, keysBox));

  async function act(fn, done) {
    try {
      await fn();
      if (done) toast(done, "ok");
    } catch (err) {
      if (err.status !== 401) toast(err.message, "error");
    }
    await refresh();
  }

  function resetPassword(user) {
    const formApi = makeForm([{ name: "password", label: "New password", type: "password", required: true,
      hint: "At least 8 characters. Their sessions end at once.", attrs: { autocomplete: "new-password" } }], {
      submitLabel: "Reset password",
      onSubmit: async ({ password }) => {
        try {
          await api.patch(`/api/users/${api.enc(user.id)}`, { password });
          ui.close();
          toast(`Password of ${user.username} reset.`, "ok");
        } catch (err) {
          showApiError(formApi, err);
        }
      },
    });
    const ui = openDialog({ title: `Reset the password of ${user.username}`, body: formApi.form });
    formApi.inputs.password.focus();
  }

  function renderUsers() {
    if (!users.length) {
      usersBox.replaceChildren(emptyState("No users."));
      return;
    }
    usersBox.replaceChildren(h("table", { class: "rtable" },
      h("thead", {}, h("tr", {}, ["Username", "Role", "Created", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, users.map((u) => {
        const other = u.role === "admin" ? "viewer" : "admin";
        return h("tr", { dataset: { userId: u.id } },
          cell("Username", u.username, u.id === ctx.user.id ? h("span", { class: "muted" }, " (you)") : null),
          cell("Role", badge(u.role, u.role === "admin" ? "info" : "muted")),
          cell("Created", fmt.dateTime(u.created_at)),
          cell("Actions", h("div", { class: "actions" },
            h("button", { type: "button", class: "small", "aria-label": `Make ${u.username} ${other}`,
              onclick: async () => {
                await act(() => api.patch(`/api/users/${api.enc(u.id)}`, { role: other }), `${u.username} is now ${other}.`);
                if (u.id === ctx.user.id) location.reload(); // the console follows one's own new role
              } }, `Make ${other}`),
            h("button", { type: "button", class: "small", "aria-label": `Reset the password of ${u.username}`,
              onclick: () => resetPassword(u) }, "Reset password"),
            h("button", { type: "button", class: "small danger", "aria-label": `Delete ${u.username}`,
              onclick: async () => {
                const ok = await confirmDialog({ title: `Delete ${u.username}?`, danger: true, confirm: "Delete user",
                  message: "Their sessions, API tokens and gateway keys stop working at once." });
                if (ok) await act(() => api.del(`/api/users/${api.enc(u.id)}`), `Deleted ${u.username}.`);
              } }, "Delete"))));
      }))));
    const owner = keyForm.inputs.user_id;
    const chosen = owner.value;
    owner.replaceChildren(h("option", { value: "" }, `me (${ctx.user.username})`),
      ...users.filter((u) => u.id !== ctx.user.id).map((u) => h("option", { value: u.id, selected: u.id === chosen }, u.username)));
  }

  function renderKeys(keys) {
    if (!keys.length) {
      keysBox.replaceChildren(emptyState("No API keys yet — create one above."));
      return;
    }
    keysBox.replaceChildren(h("table", { class: "rtable keys-table" },
      h("thead", {}, h("tr", {}, ["Name", "Kind", "Key", "Owner", "Created", "Last used", "Status", "Actions"]
        .map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, keys.map((k) => h("tr", { dataset: { keyId: k.id } },
        cell("Name", h("span", { class: "key-name" }, k.name)),
        cell("Kind", k.kind === "gateway" ? "gateway" : "API"),
        cell("Key", h("code", {}, `${k.prefix}…`)),
        cell("Owner", k.username || "—"),
        cell("Created", fmt.dateTime(k.created_at)),
        cell("Last used", k.last_used_at ? fmt.ago(k.last_used_at) : "never"),
        cell("Status", k.revoked ? badge("revoked", "muted") : badge("active", "ok")),
        cell("Actions", k.revoked ? "—" : h("button", { type: "button", class: "small danger",
          "aria-label": `Revoke ${k.name}`, onclick: async () => {
            const ok = await confirmDialog({ title: `Revoke ${k.name}?`, danger: true, confirm: "Revoke key",
              message: "Anything using this key stops working at once. This cannot be undone." });
            if (ok) await act(() => api.del(`/api/proxy/keys/${api.enc(k.id)}`), `Revoked ${k.name}.`);
          } }, "Revoke")))))));
  }

  async function refresh() {
    try {
      const [u, k] = await Promise.all([api.get("/api/users"), api.get("/api/proxy/keys")]);
      users = u.users || [];
      renderUsers();
      renderKeys(k.keys || []);
    } catch (err) {
      if (err.status === 401) return;
      usersBox.replaceChildren(errorState(err, refresh));
      keysBox.replaceChildren();
    }
  }

  refresh();
  return {};
}
