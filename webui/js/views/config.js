// Config: the live routing settings, validated by the API field by field.

import * as api from "../api.js";
import { append, h } from "../dom.js";
import { errorState, makeForm, pageHeader, showApiError, toast } from "../ui.js";

const STRATEGIES = [
  ["least_active", "least_active — fewest requests in flight, weighed by measured speed"],
  ["lowest_latency", "lowest_latency — fastest time to first byte"],
  ["round_robin", "round_robin — take turns"],
  ["random", "random"],
];

// [name, label, kind, hint]
const FIELDS = [
  ["health_interval", "Health check interval (s)", "number", "Seconds between probes of every node."],
  ["fall", "Fall", "number", "Failed checks in a row before a node goes to standby."],
  ["rise", "Rise", "number", "Good checks in a row before a standby node is active again."],
  ["probe_timeout", "Probe timeout (s)", "number"],
  ["connect_timeout", "Connect timeout (s)", "number"],
  ["first_byte_timeout", "First byte timeout (s)", "number", "A node silent this long is skipped (before the first byte)."],
  ["idle_timeout", "Idle timeout (s)", "number", "Longest pause inside a streamed answer."],
  ["max_attempts", "Max attempts", "number", "Nodes tried per request before giving up."],
  ["queue_timeout", "Queue timeout (s)", "number", "How long a request may wait for a free slot; 0 = no queue."],
  ["max_body_size", "Max request body (bytes)", "number"],
  ["shutdown_grace", "Shutdown grace (s)", "number"],
  ["require_api_key", "Require a gateway API key for the Ollama and /v1 routes", "checkbox"],
  ["public_state", "Public state (read /api/proxy/state without login)", "checkbox"],
  ["public_metrics", "Public metrics", "checkbox"],
  ["cors_origins", "CORS origins", "textarea", "One origin per line, e.g. https://chat.example.com; * allows any."],
];

function toInput(name, value) {
  if (name === "cors_origins") return (value || []).join("\n");
  return value;
}

function fromInput(name, kind, raw) {
  if (kind === "checkbox") return raw;
  if (name === "cors_origins") return raw.split("\n").map((s) => s.trim()).filter(Boolean);
  const text = String(raw).trim();
  return text !== "" && Number.isFinite(Number(text)) ? Number(text) : text;
}

export function configView(root, ctx) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  append(root, [pageHeader("Config"), ctx.admin ? null
    : h("p", { class: "notice notice-info" }, "Read-only: only admins can change settings."), body]);
  let formApi = null;
  let loaded = null;

  async function load() {
    try {
      loaded = await api.get("/api/proxy/config");
    } catch (err) {
      if (err.status === 401) return;
      body.replaceChildren(errorState(err, load));
      return;
    }
    render();
  }

  function targets() {
    const nodes = (ctx.live.current() || {}).nodes || [];
    const options = [["all", "All active nodes"], ...nodes.map((n) => [n.id, n.name])];
    if (!options.some(([v]) => v === loaded.pull_target)) options.push([loaded.pull_target, loaded.pull_target]);
    return options;
  }

  function render() {
    const spec = [
      { name: "strategy", label: "Routing strategy", type: "select", value: loaded.strategy, options: STRATEGIES,
        hint: "Every strategy prefers a node where the model is already loaded." },
      { name: "pull_target", label: "Pull target", type: "select", value: loaded.pull_target, options: targets(),
        hint: "Where /api/pull through the gateway goes." },
      ...FIELDS.map(([name, label, kind, hint]) => ({ name, label, type: kind, hint, value: toInput(name, loaded[name]),
        attrs: kind === "number" ? { step: "any", inputmode: "decimal" } : undefined })),
    ];
    formApi = makeForm(spec, {
      readOnly: !ctx.admin,
      submitLabel: "Save settings",
      onSubmit: async (values) => {
        const changes = {};
        for (const field of spec) {
          const value = fromInput(field.name, field.type, values[field.name]);
          if (JSON.stringify(value) !== JSON.stringify(loaded[field.name])) changes[field.name] = value;
        }
        if (!Object.keys(changes).length) {
          toast("Nothing changed.", "info");
          return;
        }
        try {
          loaded = await api.patch("/api/proxy/config", changes);
          toast(`Saved: ${Object.keys(changes).join(", ")}.`, "ok");
          render();
        } catch (err) {
          showApiError(formApi, err);
        }
      },
    });
    formApi.form.classList.add("config-form");
    body.replaceChildren(h("section", { class: "card" }, formApi.form));
  }

  load();
  return {};
}
