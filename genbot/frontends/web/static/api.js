// The page talks only to genbot's public HTTP API: JSON routes, and server-sent events read from a
// fetch body (EventSource cannot POST). The API key lives in localStorage and travels as a bearer
// token, never as a cookie, so another site cannot make the browser send it.

const KEY_STORE = "genbot.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORE, key);
  else localStorage.removeItem(KEY_STORE);
}

/**
 * JSON.parse that keeps seeds exact: they go up to 2**63 - 1, past the 2**53 a JavaScript number
 * holds, so a long one stays a string of digits (the API takes either back). An escaped quote
 * inside a string value can never match the unescaped "seed": key this looks for.
 */
export function parseJson(text) {
  return JSON.parse(text.replace(/"seed":\s*(\d{16,})/g, '"seed":"$1"'));
}

/** An error from the API, with its HTTP status and the server's message. */
export class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = parseJson(await response.text());
    const detail = body?.error?.message ?? body?.detail ?? body?.message;
    if (typeof detail === "string") message = detail;
    else if (Array.isArray(detail)) message = detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, response.headers.get("Retry-After"));
}

/** Call a route; resolves to the JSON body, rejects with ApiError. */
export async function call(method, path, { json, body, contentType, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    if (contentType) init.headers["Content-Type"] = contentType;
    init.body = body;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : parseJson(await response.text());
}

export const get = (path, options) => call("GET", path, options);
export const post = (path, json, options = {}) => call("POST", path, { ...options, json });

/** A query string from the defined values of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const text = q.toString();
  return text ? `?${text}` : "";
}

/**
 * POST `json` and read server-sent events from the answer, calling `onEvent(name, data)` for each
 * (data parsed as JSON). Resolves when the stream ends; an abort through `signal` rejects with
 * an AbortError.
 */
export async function stream(path, json, onEvent, signal) {
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(json),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      dispatch(block, onEvent);
    }
  }
  if (buffer.trim()) dispatch(buffer, onEvent);
}

function dispatch(block, onEvent) {
  let event = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  let parsed = data;
  try {
    parsed = parseJson(data);
  } catch {
    // a plain-text event
  }
  onEvent(event, parsed);
}
