// The console's live source: /api/proxy/events (server-sent state snapshots). Keeps the
// latest snapshot, tells views about each one, and remembers 15 minutes of per-node
// counters so the dashboard can chart requests/s and time to first byte locally.

import * as api from "./api.js";

const WINDOW_MS = 15 * 60 * 1000;
// When the stream has been quiet this long, read /api/proxy/state once: request counters
// change without a state event, and a silent stream may be a dead one.
const QUIET_MS = 5000;
// A busy stream is never quiet: still confirm the session this often (an admin may have ended it).
const SESSION_CHECK_MS = 60000;

let source = null;
let snapshot = null;
let status = "connecting"; // connecting | live | unreachable
let lastData = 0;
let lastSessionCheck = 0;
let retryTimer = null;
let pollTimer = null;
let retryDelay = 1000;
const listeners = new Set();
const statusListeners = new Set();
const samples = []; // {t, nodes: {id: {name, total, ttfb}}}

export function current() {
  return snapshot;
}

export function connectionStatus() {
  return status;
}

/** fn(snapshot) after every new snapshot; returns an unsubscribe function. */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function onStatus(fn) {
  statusListeners.add(fn);
  return () => statusListeners.delete(fn);
}

function setStatus(next) {
  if (next === status) return;
  status = next;
  statusListeners.forEach((fn) => fn(status));
}

function accept(data) {
  snapshot = data;
  lastData = Date.now();
  retryDelay = 1000;
  setStatus("live");
  record(data);
  listeners.forEach((fn) => {
    try {
      fn(data);
    } catch (err) {
      console.error(err);
    }
  });
}

function record(data) {
  const nodes = {};
  for (const node of data.nodes || []) {
    nodes[node.id] = {
      name: node.name,
      total: node.requests_total || 0,
      ttfb: node.latency_ms ? node.latency_ms.ttfb : null,
    };
  }
  const t = Date.now();
  samples.push({ t, nodes });
  while (samples.length && samples[0].t < t - WINDOW_MS - 60000) samples.shift();
}

export function start() {
  stop();
  lastSessionCheck = Date.now();
  open();
  pollTimer = setInterval(pollIfQuiet, 1000);
}

export function stop() {
  if (source) source.close();
  source = null;
  clearTimeout(retryTimer);
  clearInterval(pollTimer);
  snapshot = null;
  status = "connecting";
  samples.length = 0;
}

function open() {
  const es = new EventSource("/api/proxy/events");
  source = es;
  es.addEventListener("state", (event) => {
    try {
      accept(JSON.parse(event.data));
    } catch (err) {
      console.error("bad state event", err);
    }
  });
  es.onerror = () => {
    if (source !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      // The server answered with an error (e.g. 401 after the session ended): find out which.
      source = null;
      diagnose();
    } else {
      setStatus("unreachable"); // the browser reconnects by itself
    }
  };
}

async function diagnose() {
  try {
    await api.get("/api/auth/me"); // a 401 here ends the session (api.js handler)
    scheduleReopen();
  } catch (err) {
    if (err.status === 401) return;
    setStatus("unreachable");
    scheduleReopen();
  }
}

function scheduleReopen() {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => {
    if (!source) open();
  }, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 15000);
}

async function pollIfQuiet() {
  if (document.hidden) return;
  if (Date.now() - lastSessionCheck > SESSION_CHECK_MS) {
    lastSessionCheck = Date.now();
    api.get("/api/auth/me").catch(() => {}); // a 401 ends the session (api.js handler)
  }
  if (Date.now() - lastData < QUIET_MS) return;
  lastData = Date.now(); // one poll per quiet period
  try {
    accept(await api.get("/api/proxy/state"));
  } catch (err) {
    if (err.status !== 401) setStatus("unreachable");
  }
}

// -- charts ---------------------------------------------------------------------------------------

function valueAt(nodeId, t, field) {
  // The last sample at or before t (counters are step functions between samples).
  for (let i = samples.length - 1; i >= 0; i -= 1) {
    if (samples[i].t <= t) {
      const node = samples[i].nodes[nodeId];
      return node ? node[field] : null;
    }
  }
  return null;
}

/**
 * Series for the dashboard charts over (up to) the last 15 minutes, one point every ``step`` ms:
 * {nodes: [{id, name, rate: [[t, req/s]], ttfb: [[t, ms]]}], from, to}.
 * Rates are averaged over ``window`` ms, so sparse samples do not read as spikes.
 */
export function chartSeries({ step = 2000, window = 10000, minSpan = 20000 } = {}) {
  const to = Date.now();
  const first = samples.length ? samples[0].t : to;
  // The charts span what this page has seen (at least ``minSpan``), up to 15 minutes.
  const from = Math.max(to - WINDOW_MS, Math.min(first, to - minSpan));
  const names = new Map();
  for (const sample of samples) {
    for (const [id, node] of Object.entries(sample.nodes)) names.set(id, node.name);
  }
  const nodes = [];
  for (const [id, name] of names) {
    const rate = [];
    const ttfb = [];
    for (let t = Math.max(from, first + step) - ((Math.max(from, first + step)) % step); t <= to; t += step) {
      if (t < first) continue;
      const start = Math.max(first, t - window);
      const now = valueAt(id, t, "total");
      const before = valueAt(id, start, "total");
      if (now !== null && before !== null && t > start && now >= before) {
        rate.push([t, ((now - before) * 1000) / (t - start)]);
      }
      const latency = valueAt(id, t, "ttfb");
      if (typeof latency === "number") ttfb.push([t, latency]);
    }
    nodes.push({ id, name, rate, ttfb });
  }
  nodes.sort((a, b) => a.name.localeCompare(b.name));
  return { nodes, from, to };
}
