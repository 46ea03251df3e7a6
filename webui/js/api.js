// The JSON API, exactly as scripts use it: cookie session + X-XSRFToken on unsafe methods.

export class ApiError extends Error {
  /** status 0 = the API could not be reached at all. */
  constructor(status, message, body = {}) {
    super(message);
    this.status = status;
    this.body = body || {};
    this.fields = (body && typeof body.fields === "object" && body.fields) || {};
  }
}

let xsrfToken = "";
let onUnauthorized = () => {};

export function setXsrf(token) {
  xsrfToken = token || "";
}

/** Called when a request that needed the session got 401: the session ended. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function cookie(name) {
  const pair = document.cookie.split("; ").find((c) => c.startsWith(`${name}=`));
  return pair ? decodeURIComponent(pair.slice(name.length + 1)) : "";
}

function headers(method, body) {
  const out = { Accept: "application/json" };
  if (body !== undefined) out["Content-Type"] = "application/json";
  if (!["GET", "HEAD"].includes(method)) {
    // The readable cookie is the freshest copy (a password change rotates it).
    const token = cookie("aivonx_xsrf") || xsrfToken;
    if (token) out["X-XSRFToken"] = token;
  }
  return out;
}

async function send(method, path, body, { quiet401 = false } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(method, body),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "API unreachable — check that the proxy is running");
  }
  if (response.status === 401 && !quiet401) onUnauthorized();
  return response;
}

async function parse(response) {
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: text.slice(0, 300) };
    }
  }
  if (!response.ok && response.status !== 207) {
    const message = (data && typeof data.error === "string" && data.error) || `HTTP ${response.status}`;
    throw new ApiError(response.status, message, data);
  }
  return data;
}

export async function request(method, path, body, options) {
  return parse(await send(method, path, body, options));
}

export const get = (path, options) => request("GET", path, undefined, options);
export const post = (path, body, options) => request("POST", path, body ?? {}, options);
export const put = (path, body) => request("PUT", path, body);
export const patch = (path, body) => request("PATCH", path, body);
export const del = (path, body) => request("DELETE", path, body);

/**
 * POST and read an NDJSON answer line by line (fetch + ReadableStream): ``onLine`` gets
 * each parsed object as soon as it arrives. Resolves with the last object.
 */
export async function streamLines(path, body, onLine) {
  const response = await send("POST", path, body);
  if (!response.ok) await parse(response); // throws the API's error
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  let last = null;
  const handle = (raw) => {
    if (!raw.trim()) return;
    try {
      last = JSON.parse(raw);
    } catch {
      return; // a torn line cannot happen with complete reads; ignore anything unparseable
    }
    onLine(last);
  };
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch {
      throw new ApiError(0, "the connection to the proxy was lost during the operation");
    }
    if (chunk.done) break;
    pending += decoder.decode(chunk.value, { stream: true });
    const lines = pending.split("\n");
    pending = lines.pop();
    lines.forEach(handle);
  }
  handle(pending + decoder.decode());
  return last;
}

export const enc = encodeURIComponent;
