// Dashboard: pools, one card per node, fleet totals and 15-minute charts — all live.

import { h, replaceKeepingFocus } from "../dom.js";
import * as fmt from "../format.js";
import { lineChart, legend } from "../chart.js";
import { emptyState, nodeBadges, pageHeader } from "../ui.js";

const CHART_REDRAW_MS = 1000;

function tile(label, value, kind = "") {
  return h("div", { class: `tile ${kind}` }, h("span", { class: "tile-value" }, value),
    h("span", { class: "tile-label" }, label));
}

function fact(term, ...value) {
  return [h("dt", {}, term), h("dd", {}, ...value)];
}

export function nodeCard(node) {
  const latency = node.latency_ms || {};
  const loaded = node.loaded_models || [];
  const labels = Object.entries(node.labels || {});
  return h("article", { class: `node-card status-${node.status}`, dataset: { nodeId: node.id } },
    h("header", {},
      h("h3", {}, h("a", { href: `#/nodes/${encodeURIComponent(node.id)}`, "data-fk": `card-${node.id}` }, node.name)),
      h("div", { class: "badges" }, nodeBadges(node))),
    h("p", { class: "url" }, node.url),
    h("dl", { class: "facts facts-2" },
      fact("Probe", fmt.ms(latency.probe)),
      fact(h("abbr", { title: "time to first byte" }, "TTFB"), fmt.ms(latency.ttfb)),
      fact("In flight", `${node.in_flight}${node.max_concurrency ? ` / ${node.max_concurrency}` : ""}`),
      fact("Queued", String(node.queued)),
      fact("Requests", String(node.requests_total)),
      fact("Failures", String(node.failures_total)),
      fact("Version", node.version || "—"),
      fact("Models", String((node.models || []).length))),
    h("div", { class: "loaded" }, h("span", { class: "muted" }, "Loaded: "),
      loaded.length ? loaded.map((m) => h("span", { class: "chip" }, m.name)) : h("span", { class: "muted" }, "none")),
    labels.length ? h("div", { class: "labels" }, labels.map(([k, v]) => h("span", { class: "chip chip-label" }, `${k}=${v}`))) : null,
    node.last_error ? h("p", { class: "last-error" }, h("strong", {}, "Last error: "),
      h("span", { class: "last-error-text" }, node.last_error)) : null);
}

export function dashboardView(root, ctx) {
  const totals = h("section", { class: "tiles", "aria-label": "Fleet totals" });
  const pools = h("section", { class: "pools", "aria-label": "Pools" });
  const charts = h("section", { class: "charts", "aria-label": "Charts" });
  root.append(pageHeader("Dashboard"), totals, pools, charts);
  let lastChart = 0;
  let pending = null;

  function drawCharts() {
    lastChart = Date.now();
    const data = ctx.live.chartSeries();
    const colors = new Map(data.nodes.map((n, i) => [n.id, i]));
    const rateSeries = data.nodes.map((n) => ({ name: n.name, color: colors.get(n.id), points: n.rate }));
    const ttfbSeries = data.nodes.map((n) => ({ name: n.name, color: colors.get(n.id), points: n.ttfb }));
    const rateFmt = (v) => `${fmt.number(v, v < 10 ? 2 : 0)}/s`;
    // Draw at the real size (one or two columns, minus the card's padding).
    const columns = window.matchMedia("(max-width: 1000px)").matches ? 1 : 2;
    const width = (charts.clientWidth - (columns - 1) * 16) / columns - 34;
    replaceKeepingFocus(charts,
      h("figure", { class: "card chart-card" },
        h("figcaption", {}, "Requests per second per node ", h("span", { class: "muted" }, "· last 15 min")),
        lineChart({ label: "Requests per second per node", from: data.from, to: data.to, width, series: rateSeries,
          format: rateFmt }),
        legend(rateSeries, rateFmt)),
      h("figure", { class: "card chart-card" },
        h("figcaption", {}, "Time to first byte per node ", h("span", { class: "muted" }, "· last 15 min")),
        lineChart({ label: "Time to first byte per node", from: data.from, to: data.to, width, series: ttfbSeries,
          format: fmt.ms }),
        legend(ttfbSeries, fmt.ms)));
  }

  function scheduleCharts() {
    const wait = CHART_REDRAW_MS - (Date.now() - lastChart);
    if (wait <= 0) drawCharts();
    else if (!pending) pending = setTimeout(() => { pending = null; drawCharts(); }, wait);
  }

  function update(state) {
    const t = state.totals || {};
    replaceKeepingFocus(totals,
      tile("Nodes", String(t.nodes ?? 0)),
      tile("Active", String(t.active ?? 0), t.active ? "ok" : "warn"),
      tile("Standby", String(t.standby ?? 0), t.standby ? "warn" : ""),
      tile("Routable", String(t.routable ?? 0)),
      tile("In flight", String(t.in_flight ?? 0)),
      tile("Queued", String(t.queued ?? 0)),
      tile("Models", String(t.models ?? 0)),
      tile("Strategy", state.strategy || "—", "text"));
    const nodes = state.nodes || [];
    if (!nodes.length) {
      replaceKeepingFocus(pools, emptyState("No nodes yet — add one.",
        ctx.admin ? h("a", { class: "button primary", href: "#/nodes/new" }, "Add a node")
          : h("span", { class: "muted" }, "An admin can add nodes on the Nodes page.")));
    } else {
      const byId = new Map(nodes.map((n) => [n.id, n]));
      const pool = (title, ids, cls, none) => h("div", { class: `pool ${cls}` },
        h("h2", {}, `${title} `, h("span", { class: "count" }, `(${ids.length})`),
          ids.length ? null : h("span", { class: "pool-empty" }, ` — ${none}`)),
        ids.length ? h("div", { class: "cards" }, ids.map((id) => byId.get(id)).filter(Boolean).map(nodeCard)) : null);
      replaceKeepingFocus(pools,
        pool("Active pool", state.active || [], "active-pool", "no active node: requests cannot be served"),
        pool("Standby pool", state.standby || [], "standby-pool", "every node is healthy"));
    }
    scheduleCharts();
  }

  const tick = setInterval(scheduleCharts, 5000); // the time axis moves even when nothing happens
  window.addEventListener("resize", scheduleCharts);
  if (!ctx.live.current()) totals.append(h("p", { class: "muted" }, "Connecting to the live feed…"));
  return {
    update,
    unmount() {
      clearInterval(tick);
      clearTimeout(pending);
      window.removeEventListener("resize", scheduleCharts);
    },
  };
}
