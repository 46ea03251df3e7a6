// Requests: the most recent proxied requests, filterable, refreshed while the page is open.

import * as api from "../api.js";
import { h, replaceKeepingFocus } from "../dom.js";
import * as fmt from "../format.js";
import { badge, emptyState, errorState, makeForm, pageHeader } from "../ui.js";

const REFRESH_MS = 5000;

function cell(label, ...content) {
  return h("td", { "data-label": label }, ...content);
}

function statusBadge(status) {
  const code = Number(status);
  return badge(String(status ?? "—"), code >= 500 ? "error" : code >= 400 ? "warn" : code ? "ok" : "muted");
}

export function requestsView(root, ctx) {
  const list = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading…"));
  const filters = makeForm([
    { name: "model", label: "Model", attrs: { placeholder: "any" } },
    { name: "node", label: "Node", type: "select", options: [["", "any"]] },
    { name: "status", label: "Status", attrs: { placeholder: "e.g. 200, 5xx, error" } },
    { name: "limit", label: "Show", type: "select", value: "100", options: [["50", "50"], ["100", "100"], ["500", "500"]] },
  ], { submitLabel: "Filter", onSubmit: () => load() });
  filters.form.classList.add("inline-form", "filters");
  const liveToggle = h("input", { type: "checkbox", id: "requests-live", checked: true });
  root.append(pageHeader("Requests", h("label", { class: "toggle", for: "requests-live" }, liveToggle, " Live")),
    h("section", { class: "card" }, filters.form), list);
  let timer = null;
  let available = true;

  async function load() {
    clearTimeout(timer);
    const v = filters.values();
    const query = new URLSearchParams({ limit: v.limit });
    for (const key of ["model", "node", "status"]) if (v[key].trim()) query.set(key, v[key].trim());
    try {
      const data = await api.get(`/api/proxy/requests?${query}`);
      available = true;
      render(data.requests || []);
    } catch (err) {
      if (err.status === 401) return;
      if (err.status === 404) {
        available = false;
        list.replaceChildren(emptyState("The request log is not available on this proxy version."));
      } else if (err.status === 400) {
        filters.setErrors(err.fields, err.message);
      } else {
        list.replaceChildren(errorState(err, load));
      }
    }
    if (available && liveToggle.checked) timer = setTimeout(load, REFRESH_MS);
  }

  function render(rows) {
    if (!rows.length) {
      replaceKeepingFocus(list, emptyState("No requests match — send one through the proxy, or loosen the filters."));
      return;
    }
    replaceKeepingFocus(list, h("table", { class: "rtable requests-table" },
      h("thead", {}, h("tr", {}, ["Time", "Client", "Request", "Model", "Node", "Status", "First byte", "Duration", "Tokens"]
        .map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {},
        cell("Time", fmt.dateTime(r.time)),
        cell("Client", r.client || "—"),
        cell("Request", `${r.method || ""} ${r.path || ""}`.trim() || "—"),
        cell("Model", r.model || "—"),
        cell("Node", r.node || "—"),
        cell("Status", statusBadge(r.status), r.error ? h("div", { class: "last-error-text" }, r.error) : null),
        cell("First byte", fmt.ms(r.ttfb_ms)),
        cell("Duration", fmt.ms(r.duration_ms)),
        cell("Tokens", `${r.tokens_in ?? "—"} in · ${r.tokens_out ?? "—"} out`))))));
  }

  liveToggle.addEventListener("change", () => (liveToggle.checked ? load() : clearTimeout(timer)));

  function update(state) {
    const select = filters.inputs.node;
    const names = (state.nodes || []).map((n) => n.name);
    const current = [...select.options].map((o) => o.value).slice(1);
    if (names.join("\n") !== current.join("\n")) {
      const chosen = select.value;
      select.replaceChildren(h("option", { value: "" }, "any"),
        ...names.map((n) => h("option", { value: n, selected: n === chosen }, n)));
    }
  }

  load();
  return { update, unmount: () => clearTimeout(timer) };
}
