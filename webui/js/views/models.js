// Models: the models × nodes matrix (digest drift highlighted), pulls with live per-node
// progress read from the NDJSON stream, and deleting a model from nodes.

import * as api from "../api.js";
import { append, h, replaceKeepingFocus } from "../dom.js";
import * as fmt from "../format.js";
import { badge, emptyState, makeForm, openDialog, pageHeader, toast } from "../ui.js";

function routable(node) {
  return node.status === "active" && node.enabled && !node.draining;
}

/** One pull's progress panel: a <progress> per node, filled from the stream's lines. */
function pullPanel(model, expected) {
  const rows = new Map();
  const list = h("div", { class: "pull-rows" });
  const summary = h("p", { class: "pull-summary", role: "status" }, "Starting…");
  const dismiss = h("button", { type: "button", class: "small", hidden: true, onclick: () => panel.remove() }, "Dismiss");
  const panel = h("section", { class: "card pull-panel", "aria-label": `Pull of ${model}` },
    h("div", { class: "panel-head" }, h("h2", {}, "Pulling ", h("code", {}, model)), dismiss), list, summary);

  function row(nodeId, name) {
    let r = rows.get(nodeId);
    if (!r) {
      const bar = h("progress", { max: 100, value: 0, "aria-label": `${name}: pull progress` });
      const pct = h("span", { class: "pct" }, "0 %");
      const status = h("span", { class: "pull-status" }, "waiting");
      const el = h("div", { class: "pull-row", dataset: { nodeId } }, h("span", { class: "pull-node" }, name), bar, pct, status);
      r = { el, bar, pct, status, layers: new Map() };
      rows.set(nodeId, r);
      list.append(el);
    }
    return r;
  }
  const set = (r, percent) => {
    const value = Math.max(0, Math.min(100, Math.floor(percent)));
    r.bar.value = value;
    r.pct.textContent = `${value} %`;
  };
  expected.forEach((n) => row(n.id, n.name));

  return {
    panel,
    line(msg) {
      if (Array.isArray(msg.results)) {
        const ok = msg.results.filter((x) => x.status === "success").length;
        summary.textContent = msg.status === "success" ? `Done: ${model} is on ${ok} node(s).`
          : msg.status === "partial" ? `Partly done: ${ok} of ${msg.results.length} node(s) succeeded.`
            : "The pull failed on every node.";
        summary.className = `pull-summary notice notice-${msg.status === "success" ? "ok" : "error"}`;
        dismiss.hidden = false;
        return;
      }
      if (!msg.node_id) return;
      const r = row(msg.node_id, msg.node || msg.node_id);
      if (msg.status === "success" && !msg.digest) {
        set(r, 100);
        r.status.textContent = "done";
        r.el.classList.add("done");
      } else if (msg.status === "error" && !msg.digest) {
        r.status.textContent = `failed: ${msg.error || "error"}`;
        r.el.classList.add("failed");
      } else {
        summary.textContent = "Pulling…";
        if (msg.digest && typeof msg.total === "number") {
          r.layers.set(msg.digest, { total: msg.total, completed: msg.completed || 0 });
          let total = 0;
          let completed = 0;
          r.layers.forEach((l) => { total += l.total; completed += l.completed; });
          if (total > 0) set(r, (completed * 100) / total);
        }
        r.status.textContent = msg.status || "";
      }
    },
    fail(err) {
      summary.textContent = `Pull failed: ${err.message}`;
      summary.className = "pull-summary notice notice-error";
      dismiss.hidden = false;
    },
  };
}

export function modelsView(root, ctx) {
  const pulls = h("div", { class: "pulls" });
  const matrix = h("div", { class: "table-wrap" });
  let state = null;
  let pullForm = null;

  async function pull(model, node) {
    const nodes = state ? state.nodes || [] : [];
    const expected = node ? [node] : nodes.filter(routable);
    const p = pullPanel(model, expected);
    pulls.prepend(p.panel);
    try {
      await api.streamLines("/api/proxy/pull", { model, ...(node ? { node_id: node.id } : {}) }, p.line);
    } catch (err) {
      p.fail(err);
      if (err.status === 400 && pullForm) pullForm.setErrors({ model: err.message });
    }
  }

  if (ctx.admin) {
    pullForm = makeForm([
      { name: "model", label: "Model", required: true, hint: "A name from the Ollama library, e.g. llama3.2 or qwen2.5:7b." },
      { name: "target", label: "Pull to", type: "select", options: [["", "All active nodes"]] },
    ], {
      submitLabel: "Pull",
      onSubmit: async ({ model, target }) => {
        if (!model.trim()) {
          pullForm.setErrors({ model: "Enter a model name." });
          return;
        }
        const node = target ? (state.nodes || []).find((n) => n.id === target) : null;
        pull(model.trim(), node); // not awaited: several pulls may run side by side
      },
    });
    pullForm.form.classList.add("inline-form");
  }

  append(root, [pageHeader("Models"),
    pullForm ? h("section", { class: "card" }, h("h2", {}, "Pull a model"), pullForm.form) : null, pulls, matrix]);

  function deleteDialog(row) {
    const holders = row.nodes;
    const formApi = makeForm(holders.map((n) => ({ name: n.node_id, label: n.node, type: "checkbox", value: true })), {
      submitLabel: "Delete",
      onSubmit: async (values) => {
        const chosen = holders.filter((n) => values[n.node_id]);
        if (!chosen.length) {
          formApi.setErrors({}, "Choose at least one node.");
          return;
        }
        const all = chosen.length === holders.length;
        const calls = all ? [api.del("/api/proxy/models", { model: row.name })]
          : chosen.map((n) => api.del("/api/proxy/models", { model: row.name, node_id: n.node_id }));
        const results = await Promise.allSettled(calls);
        const failed = results.filter((r) => r.status === "rejected" || (r.value && r.value.status !== "success"));
        ui.close();
        if (failed.length) {
          const reason = failed[0].status === "rejected" ? failed[0].reason.message
            : (failed[0].value.results || []).filter((x) => x.error).map((x) => `${x.node}: ${x.error}`).join("; ");
          toast(`Deleting ${row.name} failed on some nodes: ${reason}`, "error");
        } else {
          toast(`Deleted ${row.name} from ${chosen.length} node(s).`, "ok");
        }
      },
    });
    const ui = openDialog({ title: `Delete ${row.name}`, body: [h("p", {}, "Delete it from these nodes:"), formApi.form] });
  }

  function update(next) {
    state = next;
    const nodes = state.nodes || [];
    if (pullForm) {
      const select = pullForm.inputs.target;
      const chosen = select.value;
      const options = [["", "All active nodes"], ...nodes.map((n) => [n.id, `${n.name}${routable(n) ? "" : ` (${n.status})`}`])];
      const same = select.options.length === options.length
        && options.every(([v, l], i) => select.options[i].value === v && select.options[i].textContent === l);
      if (!same) {
        select.replaceChildren(...options.map(([v, l]) => h("option", { value: v, selected: v === chosen }, l)));
      }
    }
    const models = state.models || [];
    if (!nodes.length) {
      replaceKeepingFocus(matrix, emptyState("No nodes yet — add one.", h("a", { href: "#/nodes" }, "Go to the nodes")));
      return;
    }
    if (!models.length) {
      replaceKeepingFocus(matrix, emptyState(ctx.admin ? "No models on any node yet — pull one above."
        : "No models on any node yet."));
      return;
    }
    replaceKeepingFocus(matrix, h("table", { class: "rtable matrix" },
      h("caption", {}, "Models × nodes: size, whether loaded, and digest (highlighted where nodes disagree)"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Model"),
        nodes.map((n) => h("th", { scope: "col" }, n.name)), ctx.admin ? h("th", { scope: "col" }, "Actions") : null)),
      h("tbody", {}, models.map((row) => {
        const byNode = new Map(row.nodes.map((n) => [n.node_id, n]));
        return h("tr", { class: row.digest_drift ? "drift" : "", dataset: { model: row.key } },
          h("th", { scope: "row", "data-label": "Model" }, h("span", { class: "model-name" }, row.name),
            row.digest_drift ? [" ", badge("digest drift", "warn")] : null),
          nodes.map((node) => {
            const entry = byNode.get(node.id);
            if (!entry) {
              return h("td", { "data-label": node.name, class: "absent" }, h("span", { class: "muted" }, "—"),
                ctx.admin && routable(node) ? [" ", h("button", { type: "button", class: "small link",
                  "data-fk": `pull-${row.key}-${node.id}`, "aria-label": `Pull ${row.name} to ${node.name}`,
                  onclick: () => pull(row.name, node) }, "Pull")] : null);
            }
            return h("td", { "data-label": node.name, class: "present" },
              h("span", { class: "present-mark", "aria-label": "present" }, "✓ "), fmt.bytes(entry.size),
              entry.loaded ? [" ", badge("loaded", "ok")] : null,
              h("code", { class: `digest${row.digest_drift ? " drifted" : ""}` }, fmt.shortDigest(entry.digest)));
          }),
          ctx.admin ? h("td", { "data-label": "Actions" }, h("button", { type: "button", class: "small danger",
            "data-fk": `del-${row.key}`, "aria-label": `Delete ${row.name} from nodes`,
            onclick: () => deleteDialog(row) }, "Delete…")) : null);
      }))));
  }

  if (!ctx.live.current()) matrix.append(h("p", { class: "muted" }, "Loading…"));
  return { update };
}
