// Login: a cookie session (HttpOnly) that survives reloads; the page never holds a token.

import * as api from "../api.js";
import { h } from "../dom.js";
import { makeForm, showApiError } from "../ui.js";

export function loginView(root, { message, kind, onLoggedIn }) {
  const formApi = makeForm([
    { name: "username", label: "Username", required: true, attrs: { autocomplete: "username", autocapitalize: "none" } },
    { name: "password", label: "Password", type: "password", required: true,
      attrs: { autocomplete: "current-password" } },
  ], {
    submitLabel: "Log in",
    onSubmit: async ({ username, password }) => {
      if (!username.trim() || !password) {
        formApi.setErrors({
          ...(username.trim() ? {} : { username: "Enter your username." }),
          ...(password ? {} : { password: "Enter your password." }),
        });
        return;
      }
      try {
        const answer = await api.post("/api/auth/login", { username: username.trim(), password, session: true },
          { quiet401: true });
        onLoggedIn(answer);
      } catch (err) {
        if (err.status === 401) formApi.setErrors({}, "Wrong username or password.");
        else showApiError(formApi, err);
        formApi.inputs.password.value = "";
        formApi.inputs.password.focus();
      }
    },
  });
  root.append(h("section", { class: "login card" },
    h("h1", { class: "page-title", tabindex: "-1" }, "Log in to Aivonx Proxy"),
    message ? h("p", { class: `notice notice-${kind}`, role: "status", id: "login-message" }, message) : null,
    formApi.form));
  formApi.inputs.username.focus();
}
