// The WebSocket to the gateway: token, auth, reconnect, heartbeat, and the message dispatch table.
//
// Every message used by the page is specified in docs/protocol.md, "Gateway WebSocket — `/ws`".
// Panels register what they handle with `on(type, handler)`; several handlers may share a type.
// Token: the login form, or `/#token=…` (moved into localStorage and removed from the address bar;
// a fragment never reaches the server's logs). It is sent in the first `auth` message, never in the
// WebSocket URL; the answer `authenticated {name, role}` says whether commands are allowed.
/* global MessagePack */
import { store } from "./store.js";

const HEARTBEAT_MS = 500; // actuation's deadman aborts after 2 s without an operator heartbeat
const RETRY_MS = 2000;
const TOKEN_KEY = "rcs.token";

const handlers = new Map(); // type -> [handler]
let ws = null;
let retry = null;
let heartbeat = null; // the ticker while this page is an operator's

export function on(type, handler) {
  if (!handlers.has(type)) handlers.set(type, []);
  handlers.get(type).push(handler);
}

function dispatch(m) {
  for (const handler of handlers.get(m.type) || []) handler(m);
}

export function send(message) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(message));
  return true;
}

// -- token ------------------------------------------------------------------------------------------

export function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

// `#token=…` in the address: keep it in localStorage and take it out of the address bar.
export function takeTokenFromFragment() {
  const found = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!found) return "";
  let problem = "";
  try {
    setToken(decodeURIComponent(found[1]));
  } catch (e) {
    problem = "the #token= in the address is not valid URL encoding: log in with the form";
  }
  history.replaceState(null, "", location.pathname + location.search);
  return problem;
}

// fetch() with this page's token; resolves to the parsed JSON, throws Error("HTTP <status>: detail").
export async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers.Authorization = "Bearer " + token();
  if (options.body !== undefined && typeof options.body !== "string") {
    headers["Content-Type"] = "application/json";
    options = Object.assign({}, options, { body: JSON.stringify(options.body) });
  }
  const r = await fetch(path, Object.assign({}, options, { headers }));
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error("HTTP " + r.status + (body && body.detail ? ": " + body.detail : ""));
  return body;
}

// -- heartbeat ----------------------------------------------------------------------------------------

// Heartbeats tick in a worker: browsers throttle a hidden tab's own timers (down to once a minute),
// which would let the deadman abort while the operator looks at another tab.
function startTicker(ms, tick) {
  const code = "setInterval(() => postMessage(0), " + ms + ");";
  const worker = new Worker(URL.createObjectURL(new Blob([code], { type: "text/javascript" })));
  worker.onmessage = tick;
  return worker;
}

function stopHeartbeat() {
  if (heartbeat) heartbeat.terminate();
  heartbeat = null;
}

on("authenticated", (m) => {
  store.set("identity", { name: m.name, role: m.role });
  stopHeartbeat();
  if (m.role === "operator") heartbeat = startTicker(HEARTBEAT_MS, () => send({ type: "heartbeat" }));
});

// -- socket -------------------------------------------------------------------------------------------

function decode(data) {
  return typeof data === "string" ? JSON.parse(data) : MessagePack.decode(new Uint8Array(data));
}

export function connect() {
  clearTimeout(retry);
  stopHeartbeat(); // the next socket's first message must be its `auth`
  if (ws) {
    ws.onclose = null;
    ws.close();
  }
  store.set("identity", null);
  store.set("connection", "connecting");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(proto + "//" + location.host + "/ws");
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    send({ type: "auth", token: token() }); // must be the first message (within 5 s)
    store.set("connection", "open");
  };
  ws.onmessage = (ev) => dispatch(decode(ev.data));
  ws.onclose = onClose;
}

function onClose(ev) {
  stopHeartbeat();
  store.set("identity", null);
  if (ev.code === 1008 && ev.reason === "authentication required") {
    // a wrong or missing token: retrying would not help
    store.set("connection", "refused");
    return;
  }
  store.set("connection", "closed");
  retry = setTimeout(connect, RETRY_MS);
}
