// Nodes: the table, add/edit/delete, enable/disable, drain, "check now", and a detail view.

import * as api from "../api.js";
import { h, replaceKeepingFocus } from "../dom.js";
import * as fmt from "../format.js";
import { confirmDialog, emptyState, makeForm, nodeBadges, openDialog, pageHeader, showApiError, toast }
  from "../ui.js";

const ALIASES = { url: "address", host: "address" };

function splitUrl(url) {
  try {
    const u = new URL(url);
    return { address: u.hostname.replace(/^\[|\]$/g, ""), port: u.port || (u.protocol === "https:" ? "443" : "80"),
      scheme: u.protocol.replace(":", "") };
  } catch {
    return { address: "", port: "11434", scheme: "http" };
  }
}

function parsePairs(text, separator, field) {
  const out = {};
  const lines = text.split("\n").map((l) => l.trim()).filter(Boolean);
  for (const [i, line] of lines.entries()) {
    const at = line.indexOf(separator);
    if (at <= 0) throw Object.assign(new Error(`line ${i + 1}: write ${field}`), { field });
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

/** The add/edit dialog. ``node`` null = add. Resolves after a successful save. */
export function nodeForm(node) {
  const editing = Boolean(node);
  const parts = editing ? splitUrl(node.url) : { address: "", port: "11434", scheme: "http" };
  const headerNames = editing ? node.header_names || [] : [];
  const spec = [
    { name: "name", label: "Name", value: editing ? node.name : "", required: true,
      hint: "Letters, digits, spaces, '.', '_' and '-'." },
    { name: "address", label: "Address", value: parts.address, required: true, hint: "Host name or IP address." },
    { name: "port", label: "Port", type: "number", value: parts.port, attrs: { min: 1, max: 65535 } },
    { name: "scheme", label: "Scheme", type: "select", value: parts.scheme, options: [["http", "http"], ["https", "https"]] },
    { name: "max_concurrency", label: "Max concurrent requests", type: "number",
      value: editing && node.max_concurrency ? node.max_concurrency : "", hint: "Empty = no limit.",
      attrs: { min: 1, max: 10000 } },
    { name: "labels", label: "Labels", type: "textarea", rows: 2, hint: "One key=value per line.",
      value: editing ? Object.entries(node.labels || {}).map(([k, v]) => `${k}=${v}`).join("\n") : "" },
    { name: "headers", label: "Headers sent to the node", type: "textarea", rows: 2,
      hint: editing && headerNames.length
        ? `Stored (values hidden): ${headerNames.join(", ")}. Leave empty to keep them.`
        : "One 'Name: value' per line, e.g. Authorization: Bearer …; values are never shown again." },
  ];
  if (editing && headerNames.length) spec.push({ name: "clear_headers", label: "Remove the stored headers", type: "checkbox" });
  if (!editing) spec.push({ name: "enabled", label: "Enabled (takes requests once healthy)", type: "checkbox", value: true });

  return new Promise((resolve) => {
    let saved = null;
    const formApi = makeForm(spec, {
      submitLabel: editing ? "Save changes" : "Add node",
      onSubmit: async (v) => {
        let body;
        try {
          body = {
            name: v.name.trim(),
            address: v.address.trim(),
            port: /^\d+$/.test(v.port.trim()) ? Number(v.port) : v.port,
            scheme: v.scheme,
            max_concurrency: v.max_concurrency.trim() === "" ? null
              : /^\d+$/.test(v.max_concurrency.trim()) ? Number(v.max_concurrency) : v.max_concurrency,
            labels: parsePairs(v.labels, "=", "key=value"),
          };
          const headers = parsePairs(v.headers, ":", "Name: value");
          if (Object.keys(headers).length) body.headers = headers;
          else if (v.clear_headers) body.headers = {};
        } catch (err) {
          formApi.setErrors({ [err.field === "key=value" ? "labels" : "headers"]: err.message });
          return;
        }
        if (!editing) body.enabled = v.enabled;
        try {
          saved = editing
            ? await api.patch(`/api/proxy/nodes/${api.enc(node.id)}`, body)
            : await api.post("/api/proxy/nodes", body);
          ui.close();
          toast(editing ? `Saved ${saved.name}.` : `Added ${saved.name}; it is ${saved.status}.`, "ok");
        } catch (err) {
          showApiError(formApi, err, ALIASES);
        }
      },
    });
    const ui = openDialog({ title: editing ? `Edit ${node.name}` : "Add a node", body: formApi.form, wide: true,
      onClose: () => resolve(saved) });
    formApi.inputs.name.focus();
  });
}

/** The write actions of one node (admin only). ``after`` runs after a successful delete. */
function nodeActions(node, busy, { after, compact = false } = {}) {
  const run = async (label, fn) => {
    busy.add(node.id);
    try {
      await fn();
    } catch (err) {
      toast(`${label} ${node.name}: ${err.message}`, "error");
    } finally {
      busy.delete(node.id);
    }
  };
  const disabled = busy.has(node.id);
  const btn = (action, text, fn, cls = "") => h("button", { type: "button", class: `small ${cls}`, disabled,
    "data-fk": `${action}-${node.id}`, "aria-label": `${text} ${node.name}`, onclick: fn }, text);
  return h("div", { class: `actions${compact ? " compact" : ""}` },
    btn("check", "Check now", () => run("Check", async () => {
      const result = await api.post(`/api/proxy/nodes/${api.enc(node.id)}/check`);
      toast(`${result.name} is ${result.status}${result.last_error && result.status !== "active"
        ? ` — ${result.last_error}` : ""}.`, result.status === "active" ? "ok" : "warn");
    })),
    btn("edit", "Edit", () => nodeForm(node)),
    btn("enable", node.enabled ? "Disable" : "Enable", () => run("Update", () =>
      api.patch(`/api/proxy/nodes/${api.enc(node.id)}`, { enabled: !node.enabled }))),
    btn("drain", node.draining ? "Resume" : "Drain", () => run("Update", () =>
      api.patch(`/api/proxy/nodes/${api.enc(node.id)}`, { draining: !node.draining }))),
    btn("delete", "Delete", () => run("Delete", async () => {
      const ok = await confirmDialog({ title: `Delete ${node.name}?`, danger: true, confirm: "Delete node",
        message: `The node ${node.name} (${node.url}) will be removed from the fleet. Its models stay on the machine.` });
      if (!ok) return;
      try {
        await api.del(`/api/proxy/nodes/${api.enc(node.id)}`);
      } catch (err) {
        if (err.status !== 409) throw err;
        const force = await confirmDialog({ title: `${node.name} is busy`, danger: true, confirm: "Remove anyway",
          message: `${err.body.in_flight ?? "Some"} request(s) are running on it. They will finish, but no new one starts.` });
        if (!force) return;
        await api.del(`/api/proxy/nodes/${api.enc(node.id)}?force=true`);
      }
      toast(`Deleted ${node.name}.`, "ok");
      if (after) after();
    }), "danger"));
}

function cell(label, ...content) {
  return h("td", { "data-label": label }, ...content);
}

export function nodesView(root, ctx, { add = false } = {}) {
  const busy = new Set();
  const body = h("div", { class: "table-wrap" });
  const addButton = ctx.admin ? h("button", { type: "button", class: "primary", id: "add-node",
    onclick: () => nodeForm(null) }, "Add node") : null;
  root.append(pageHeader("Nodes", addButton), body);
  if (add && ctx.admin) queueMicrotask(() => nodeForm(null).then(() => ctx.navigate("nodes")));

  function update(state) {
    const nodes = state.nodes || [];
    if (!nodes.length) {
      replaceKeepingFocus(body, emptyState("No nodes yet — add one.",
        ctx.admin ? h("button", { type: "button", class: "primary", onclick: () => nodeForm(null) }, "Add a node")
          : null));
      return;
    }
    replaceKeepingFocus(body, h("table", { class: "rtable nodes-table" },
      h("thead", {}, h("tr", {}, ["Name", "Address", "Status", "In flight", "Latency", "Models", "Version",
        ctx.admin ? "Actions" : null].filter(Boolean).map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, nodes.map((node) => h("tr", { dataset: { nodeId: node.id } },
        cell("Name", h("a", { href: `#/nodes/${encodeURIComponent(node.id)}`, "data-fk": `link-${node.id}` }, node.name)),
        cell("Address", h("span", { class: "url" }, node.url)),
        cell("Status", h("span", { class: "badges node-status" }, nodeBadges(node))),
        cell("In flight", `${node.in_flight}${node.max_concurrency ? ` / ${node.max_concurrency}` : ""}`,
          node.queued ? ` (+${node.queued} queued)` : ""),
        cell("Latency", fmt.ms(node.latency_ms && (node.latency_ms.ttfb ?? node.latency_ms.probe))),
        cell("Models", `${(node.models || []).length} (${(node.loaded_models || []).length} loaded)`),
        cell("Version", node.version || "—"),
        ctx.admin ? cell("Actions", nodeActions(node, busy)) : null)))));
  }

  if (!ctx.live.current()) body.append(h("p", { class: "muted" }, "Loading…"));
  return { update };
}

export function nodeDetailView(root, ctx, nodeId) {
  if (nodeId === "new") return nodesView(root, ctx, { add: true });
  const busy = new Set();
  const content = h("div", { class: "detail" }, h("p", { class: "muted" }, "Loading…"));
  root.append(h("p", { class: "crumbs" }, h("a", { href: "#/nodes" }, "← All nodes")), content);
  let titled = false;

  function update(state) {
    const node = (state.nodes || []).find((n) => n.id === nodeId);
    if (!node) {
      replaceKeepingFocus(content, pageHeader("Node not found"),
        emptyState("No node has this id — it may have been deleted.", h("a", { href: "#/nodes" }, "Back to the nodes")));
      return;
    }
    const latency = node.latency_ms || {};
    const speed = node.tokens_per_second || {};
    const errors = [...(node.recent_errors || [])].reverse();
    const speedByModel = speed.by_model || {};
    const byModel = [...new Set([...Object.keys(latency.ttfb_by_model || {}), ...Object.keys(speedByModel)])].sort();
    replaceKeepingFocus(content,
      pageHeader(node.name, h("span", { class: "badges" }, nodeBadges(node))),
      ctx.admin ? nodeActions(node, busy, { after: () => ctx.navigate("nodes") }) : null,
      h("section", { class: "card" }, h("h2", {}, "Overview"), h("dl", { class: "facts wide" },
        h("dt", {}, "Address"), h("dd", { class: "url" }, node.url),
        h("dt", {}, "Version"), h("dd", {}, node.version || "—"),
        h("dt", {}, "Latency"), h("dd", {}, `probe ${fmt.ms(latency.probe)} · first byte ${fmt.ms(latency.ttfb)}`),
        h("dt", {}, "Speed"), h("dd", {}, speed.node == null ? "—" : `${speed.node} tokens/s`),
        h("dt", {}, "In flight"), h("dd", {}, `${node.in_flight}${node.max_concurrency ? ` / ${node.max_concurrency}` : ""}`,
          ` · queued ${node.queued}`),
        h("dt", {}, "Requests"), h("dd", {}, `${node.requests_total} · failures ${node.failures_total}`,
          node.consecutive_failures ? ` (${node.consecutive_failures} in a row)` : ""),
        h("dt", {}, "Last check"), h("dd", {}, fmt.ago(node.last_check)),
        h("dt", {}, "Labels"), h("dd", {}, Object.keys(node.labels || {}).length
          ? Object.entries(node.labels).map(([k, v]) => h("span", { class: "chip chip-label" }, `${k}=${v}`)) : "—"),
        h("dt", {}, "Headers"), h("dd", {}, (node.header_names || []).join(", ") || "—"),
        h("dt", {}, "Last error"), h("dd", { class: node.last_error ? "last-error-text" : "" }, node.last_error || "—"))),
      h("section", { class: "card" }, h("h2", {}, `Models (${(node.models || []).length})`),
        (node.models || []).length ? h("table", { class: "rtable" },
          h("thead", {}, h("tr", {}, ["Name", "Size", "Digest", "Modified", "Loaded"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, node.models.map((m) => h("tr", {},
            cell("Name", m.name), cell("Size", fmt.bytes(m.size)), cell("Digest", h("code", {}, fmt.shortDigest(m.digest))),
            cell("Modified", fmt.dateTime(m.modified_at)),
            cell("Loaded", (node.loaded_models || []).some((l) => l.name === m.name) ? "yes" : "no")))))
          : emptyState("This node has no models.", h("a", { href: "#/models" }, "Pull one on the Models page"))),
      h("section", { class: "card" }, h("h2", {}, "Loaded models"),
        (node.loaded_models || []).length ? h("table", { class: "rtable" },
          h("thead", {}, h("tr", {}, ["Name", "VRAM", "Unloads"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, node.loaded_models.map((m) => h("tr", {},
            cell("Name", m.name), cell("VRAM", fmt.bytes(m.size_vram)), cell("Unloads", fmt.dateTime(m.expires_at))))))
          : h("p", { class: "muted" }, "No model is loaded in memory.")),
      byModel.length ? h("section", { class: "card" }, h("h2", {}, "Measured by model"),
        h("ul", { class: "plain" }, byModel.map((m) => h("li", {},
          `${m}: first byte ${fmt.ms((latency.ttfb_by_model || {})[m])} · `,
          speedByModel[m] == null ? "speed —" : `${speedByModel[m]} tokens/s`)))) : null,
      h("section", { class: "card" }, h("h2", {}, "Recent errors"),
        errors.length ? h("ul", { class: "errors" }, errors.map((e) => h("li", {},
          h("time", { datetime: e.time }, fmt.dateTime(e.time)), " ", h("span", { class: "last-error-text" }, e.error))))
          : h("p", { class: "muted" }, "No errors recorded.")));
    if (!titled) {
      titled = true;
      document.title = `${node.name} · Aivonx Proxy`;
      content.querySelector(".page-title").focus({ preventScroll: true });
    }
  }
  return { update };
}
