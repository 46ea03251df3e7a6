// Boot, session and routing. Hash routes (#/nodes/…) keep the console a set of static files.

import * as api from "./api.js";
import { h, clear } from "./dom.js";
import * as live from "./live.js";
import { openDialog, makeForm, showApiError, toast, badge } from "./ui.js";
import { loginView } from "./views/login.js";
import { dashboardView } from "./views/dashboard.js";
import { nodesView, nodeDetailView } from "./views/nodes.js";
import { modelsView } from "./views/models.js";
import { configView } from "./views/config.js";
import { accessView } from "./views/access.js";
import { requestsView } from "./views/requests.js";

const NAV = [
  { path: "", label: "Dashboard" },
  { path: "nodes", label: "Nodes" },
  { path: "models", label: "Models" },
  { path: "config", label: "Config" },
  { path: "access", label: "Users & keys", admin: true },
  { path: "requests", label: "Requests" },
];

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
const nav = document.getElementById("nav");
const account = document.getElementById("account");
const banner = document.getElementById("banner");

let session = null; // {id, username, role}
let view = null; // the mounted view: {update?, unmount?}
let bootTimer = null;

function parseRoute() {
  const hash = location.hash.startsWith("#/") ? location.hash.slice(2) : "";
  const [path, ...rest] = hash.split("?")[0].split("/").map(decodeURIComponent);
  return { path: path || "", params: rest.filter(Boolean) };
}

export function navigate(path) {
  location.hash = `#/${path}`;
}

function showBanner(text) {
  banner.textContent = text;
  banner.hidden = !text;
}

// -- session ------------------------------------------------------------------------------------

async function boot() {
  clearTimeout(bootTimer);
  try {
    const me = await api.get("/api/auth/me", { quiet401: true });
    showBanner("");
    startSession(me, { focus: false }); // a fresh page load: focus stays at the top of the document
  } catch (err) {
    if (err.status === 0 || err.status >= 500) {
      showBanner("API unreachable — retrying…");
      bootTimer = setTimeout(boot, 3000);
      if (!main.querySelector("form")) showLogin();
      return;
    }
    showBanner("");
    showLogin();
  }
}

function startSession(user, { focus = true } = {}) {
  session = { id: user.id, username: user.username, role: user.role };
  api.setXsrf(user.xsrf_token);
  topbar.hidden = false;
  renderChrome();
  live.start();
  route({ focus });
}

function endSession(message, kind = "warn") {
  if (!session) return;
  session = null;
  live.stop();
  main.classList.remove("stale");
  unmountView();
  document.querySelectorAll("dialog").forEach((d) => d.close());
  api.setXsrf("");
  showLogin(message, kind);
}

function showLogin(message = "", kind = "warn") {
  topbar.hidden = true;
  unmountView();
  clear(main);
  loginView(main, {
    message,
    kind,
    onLoggedIn: (answer) => startSession({ ...answer.user, xsrf_token: answer.xsrf_token }),
  });
}

async function logout() {
  try {
    await api.post("/api/auth/logout", {}, { quiet401: true });
  } catch (err) {
    if (err.status === 0) {
      toast("API unreachable — could not log out", "error");
      return;
    }
  }
  endSession("You have been logged out.", "info");
}

function changePassword() {
  const formApi = makeForm([
    { name: "current_password", label: "Current password", type: "password", required: true,
      attrs: { autocomplete: "current-password" } },
    { name: "new_password", label: "New password", type: "password", required: true,
      hint: "At least 8 characters.", attrs: { autocomplete: "new-password" } },
  ], {
    submitLabel: "Change password",
    onSubmit: async (values) => {
      try {
        const answer = await api.post("/api/auth/password", values);
        api.setXsrf(answer.xsrf_token);
        dialogUi.close();
        toast("Password changed.", "ok");
      } catch (err) {
        showApiError(formApi, err);
      }
    },
  });
  const dialogUi = openDialog({ title: "Change your password", body: formApi.form });
  formApi.inputs.current_password.focus();
}

// -- chrome and routing -------------------------------------------------------------------------

function renderChrome() {
  const { path } = parseRoute();
  clear(nav).append(...NAV.filter((item) => !item.admin || session.role === "admin").map((item) =>
    h("a", { href: `#/${item.path}`, "aria-current": item.path === path ? "page" : false }, item.label)));
  clear(account).append(
    h("span", { class: "who" }, h("span", { class: "who-name" }, session.username), " ",
      badge(session.role, session.role === "admin" ? "info" : "muted")),
    h("button", { type: "button", class: "link", onclick: changePassword }, "Change password"),
    h("button", { type: "button", id: "logout", onclick: logout }, "Log out"));
}

function unmountView() {
  if (view && view.unmount) view.unmount();
  view = null;
}

function route({ focus = true } = {}) {
  if (!session) return;
  const { path, params } = parseRoute();
  renderChrome();
  closeMenu();
  unmountView();
  clear(main);
  const ctx = { user: session, admin: session.role === "admin", navigate, live };
  const views = {
    "": dashboardView,
    nodes: params.length ? (root, c) => nodeDetailView(root, c, params[0]) : nodesView,
    models: modelsView,
    config: configView,
    access: accessView,
    requests: requestsView,
  };
  const mount = views[path];
  if (!mount) {
    main.append(h("h1", { class: "page-title", tabindex: "-1" }, "Page not found"),
      h("p", {}, h("a", { href: "#/" }, "Back to the dashboard")));
  } else {
    view = mount(main, ctx) || {};
    if (view.update && live.current()) view.update(live.current());
  }
  const title = main.querySelector(".page-title");
  document.title = title ? `${title.textContent} · Aivonx Proxy` : "Aivonx Proxy";
  if (title && focus) title.focus({ preventScroll: true });
}

live.subscribe((snapshot) => {
  if (view && view.update) view.update(snapshot);
});

live.onStatus((status) => {
  if (!session) return;
  showBanner(status === "unreachable" ? "API unreachable — retrying…" : "");
  main.classList.toggle("stale", status === "unreachable"); // what is shown may be out of date
});

api.setUnauthorizedHandler(() => endSession("Your session has expired — please log in again."));

window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#/") || location.hash === "") route();
});

document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  (main.querySelector(".page-title") || main).focus();
});

nav.addEventListener("click", (event) => {
  if (event.target.closest("a")) closeMenu(); // also when the link is the current page
});

function closeMenu() {
  document.getElementById("menu-toggle").setAttribute("aria-expanded", "false");
  topbar.classList.remove("menu-open");
}

document.getElementById("menu-toggle").addEventListener("click", (event) => {
  const open = topbar.classList.toggle("menu-open");
  event.currentTarget.setAttribute("aria-expanded", String(open));
});

boot();
