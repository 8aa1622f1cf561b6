// rcs live dashboard: plain JS, no build step, no external requests. Served by the gateway at `/`.
//
// It talks to the gateway's `/ws` on the same origin; every message used here is specified in
// docs/protocol.md, section "Gateway WebSocket — `/ws`". On connecting it also reads the last 30 s
// (`GET /api/history`) and the recent events (`GET /api/events`) once, so the page is not empty.
//
// Token: the login form, or `/#token=…` (moved into localStorage and removed from the address bar;
// a fragment never reaches the server's logs). It is sent in the first `auth` message, never in the
// WebSocket URL, and the answer (`authenticated {name, role}`) says whether commands are allowed.
// URL options: `?channels=P1,P5` (plots shown), `?hz=30` (display frames per second).
/* global uPlot, MessagePack */
"use strict";

const params = new URLSearchParams(location.search);
const WINDOW_S = 30; // plotted time span
const MAX_HZ = Number(params.get("hz") || 30);
const HEARTBEAT_MS = 500; // actuation's deadman aborts after 2 s without an operator heartbeat
const RETRY_MS = 2000;
const VALUES_EVERY_MS = 250; // the values table is for reading: a few updates a second
const STALE_MS = 1000; // no telemetry frame for this long: the data badge turns red
const EVENTS_SHOWN = 50;
const VALVE_COUNT = 9; // valve patterns are 9 × 0/1 (protocol.md, `valve_command`)
const TOKEN_KEY = "rcs.token";
const WARN_KINDS = new Set(["redline", "deadman", "go_safe", "gap", "disk_error", "valve_ack_timeout",
  "valve_refused", "motor_error", "motor_reset"]);

const $ = (id) => document.getElementById(id);

// Telemetry of every channel over the last WINDOW_S, one point per display bucket (a telemetry
// batch): a shared time axis and per-channel min/max. A null point breaks the lines at a gap.
const buf = { channels: [], t: [], lo: {}, hi: {}, session: null, seqNext: null };
const plots = {}; // channel -> {u, div}
let chosen = (params.get("channels") || "P1,P5,THRUST,Tbogaz1").split(",").filter(Boolean);
let dirty = false; // new data since the last redraw
let lastFrameAt = 0; // performance.now() of the last display frame

let ws = null;
let retry = null;
let heartbeat = null; // the ticker while this page is an operator's
let identity = null; // {name, role} once authenticated
const dropped = { notices: 0, frames: 0 }; // `dropped` notices since the page loaded
const valves = { names: null, bits: null, cause: "", ts: null, acknowledged: false };
const units = {}; // channel -> unit, from `telemetry_meta`

// -- small helpers ---------------------------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function clock(ts) {
  return ts ? hms(ts) : "";
}

function fmt(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  return v.toFixed(a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3);
}

function hms(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

function deg(v) {
  return Number.isFinite(v) ? v.toFixed(1) + "°" : "?";
}

function badge(id, text, cls) {
  $(id).textContent = text;
  $(id).className = "badge " + (cls || "");
}

function info(text) {
  $("info").textContent = text;
}

// The answer line under the header: command results and refusals, for the operator to read.
function answer(text, ok) {
  const line = $("answer");
  line.textContent = hms(Date.now() / 1000) + "  " + text;
  line.className = "answer " + (ok === true ? "ok" : ok === false ? "bad" : "");
}

function send(message) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(message));
  return true;
}

// -- token -----------------------------------------------------------------------------------------

// `#token=…` in the address: keep it in localStorage and take it out of the address bar.
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

function takeTokenFromFragment() {
  const found = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!found) return;
  try {
    localStorage.setItem(TOKEN_KEY, decodeURIComponent(found[1]));
  } catch (e) {
    info("the #token= in the address is not valid URL encoding: log in with the form");
  }
  history.replaceState(null, "", location.pathname + location.search);
}

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

// -- telemetry buffer --------------------------------------------------------------------------------

function bin(b) {
  // A msgpack bin is a Uint8Array view into the message; copy it so the typed array is aligned.
  return b.slice().buffer;
}

function resetBuffer(channels) {
  buf.channels = channels.slice();
  buf.t = [];
  buf.lo = {};
  buf.hi = {};
  for (const name of channels) {
    buf.lo[name] = [];
    buf.hi[name] = [];
  }
  buildValuesTable();
}

function sameChannels(channels) {
  return channels.length === buf.channels.length && channels.every((c, i) => c === buf.channels[i]);
}

function pushGap(t) {
  buf.t.push(t);
  for (const name of buf.channels) {
    buf.lo[name].push(null);
    buf.hi[name].push(null);
  }
}

// A `sensor_display` frame: n buckets × all channels (we subscribe to every channel).
function onDisplay(m) {
  if (!sameChannels(m.channels)) resetBuffer(m.channels);
  const t = new Float64Array(bin(m.t));
  const lo = new Float32Array(bin(m.min));
  const hi = new Float32Array(bin(m.max));
  const nc = m.channels.length;
  // Samples missing between frames (dropped frames, a gap on the stand, a new session): break the line.
  if (buf.t.length && (m.session !== buf.session || m.seq_first !== buf.seqNext)) pushGap(t[0]);
  buf.session = m.session;
  buf.seqNext = m.seq_next;
  for (let i = 0; i < m.n; i++) {
    buf.t.push(t[i]);
    m.channels.forEach((name, c) => {
      buf.lo[name].push(finite(lo[i * nc + c]));
      buf.hi[name].push(finite(hi[i * nc + c]));
    });
  }
  trimBuffer();
  lastFrameAt = performance.now();
  dirty = true;
}

function finite(v) {
  return Number.isFinite(v) ? v : null;
}

function trimBuffer() {
  const last = buf.t[buf.t.length - 1];
  let cut = 0;
  while (cut < buf.t.length && buf.t[cut] < last - WINDOW_S) cut++;
  if (!cut) return;
  buf.t.splice(0, cut);
  for (const name of buf.channels) {
    buf.lo[name].splice(0, cut);
    buf.hi[name].splice(0, cut);
  }
}

// `GET /api/history`: the last WINDOW_S from acquisition's ring buffer, put before the live data.
async function backfill() {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  try {
    // 100 points a second: the live buckets' width with the default 10 ms telemetry batches
    const r = await fetch("/api/history?seconds=" + WINDOW_S + "&points=" + WINDOW_S * 100, { headers });
    if (!r.ok) throw new Error("HTTP " + r.status);
    prependHistory(await r.json());
  } catch (e) {
    info("no history for the plots (" + e.message + "): they fill as data arrives");
  }
}

function prependHistory(h) {
  if (!buf.t.length && !sameChannels(h.channels)) resetBuffer(h.channels);
  const first = buf.t.length ? buf.t[0] : Infinity;
  let n = 0;
  while (n < h.t.length && h.t[n] < first) n++; // only what is older than the live data
  if (!n) return;
  buf.t.unshift(...h.t.slice(0, n));
  for (const name of buf.channels) {
    const lo = h.min[name] || [];
    const hi = h.max[name] || [];
    buf.lo[name].unshift(...Array.from({ length: n }, (_, i) => (lo[i] === undefined ? null : lo[i])));
    buf.hi[name].unshift(...Array.from({ length: n }, (_, i) => (hi[i] === undefined ? null : hi[i])));
  }
  trimBuffer();
  dirty = true;
}

// -- plots ------------------------------------------------------------------------------------------

function lastT() {
  return buf.t.length ? buf.t[buf.t.length - 1] : Date.now() / 1000;
}

function makePlot(name) {
  const div = el("div", "plot");
  $("plots").appendChild(div);
  const u = new uPlot(
    {
      title: name,
      width: 400,
      height: 190,
      // Every plot shows the same WINDOW_S ending at the newest sample, so they line up.
      scales: { x: { time: true, range: () => [lastT() - WINDOW_S, lastT()] } },
      series: [
        {},
        { label: "min", stroke: "#1f77b4", width: 1 },
        { label: "max", stroke: "#d62728", width: 1 },
      ],
      bands: [{ series: [2, 1], fill: "rgba(31,119,180,0.25)" }],
      // plain HH:MM:SS ticks: uPlot's default second row (date, minute) overlaps on narrow plots
      axes: [{ space: 70, values: (u, ticks) => ticks.map(hms) }, {}],
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
    },
    [[], [], []],
    div,
  );
  plots[name] = { u, div };
}

function setChosen(names) {
  chosen = names;
  for (const name of Object.keys(plots)) {
    if (!chosen.includes(name)) {
      plots[name].u.destroy();
      plots[name].div.remove();
      delete plots[name];
    }
  }
  chosen.forEach((name) => plots[name] || makePlot(name));
  // keep the choice across reloads (and in a bookmark)
  const query = new URLSearchParams(location.search);
  query.set("channels", chosen.join(","));
  history.replaceState(null, "", location.pathname + "?" + query.toString().replace(/%2C/g, ","));
  markChosenRows();
  resizePlots();
  dirty = true;
}

function togglePlot(name) {
  setChosen(chosen.includes(name) ? chosen.filter((c) => c !== name) : chosen.concat([name]));
}

function resizePlots() {
  for (const p of Object.values(plots)) {
    p.u.setSize({ width: Math.max(200, p.div.clientWidth - 8), height: 190 });
  }
}

function redraw() {
  if (dirty) {
    dirty = false;
    for (const [name, p] of Object.entries(plots)) {
      if (buf.lo[name]) p.u.setData([buf.t, buf.lo[name], buf.hi[name]]);
    }
  }
  requestAnimationFrame(redraw);
}

// -- latest values --------------------------------------------------------------------------------

// One row per channel, in two columns; click a row to show or hide its plot.
function buildValuesTable() {
  const box = $("values");
  box.textContent = "";
  box.style.gridTemplateRows = "repeat(" + Math.ceil(buf.channels.length / 2) + ", auto)";
  for (const name of buf.channels) {
    const row = el("div", "row");
    row.dataset.channel = name;
    row.title = "click: show or hide the plot of " + name;
    row.append(el("span", "name", name), el("span", "value", "—"), el("span", "unit", units[name] || ""));
    row.addEventListener("click", () => togglePlot(name));
    box.appendChild(row);
  }
  markChosenRows();
  const unknown = chosen.filter((c) => buf.channels.length && !buf.channels.includes(c));
  if (unknown.length) info("not channels of this stand: " + unknown.join(", "));
}

// Units from acquisition's retained meta (pushed on connect and at each new session).
function onMeta(meta) {
  for (const c of (meta && meta.channels) || []) units[c.name] = c.unit || "";
  for (const row of $("values").children) row.children[2].textContent = units[row.dataset.channel] || "";
}

function markChosenRows() {
  for (const row of $("values").children) {
    row.classList.toggle("plotted", chosen.includes(row.dataset.channel));
  }
}

// The newest bucket (10 ms) of each channel: its middle (its min … max in the tooltip).
function updateValues() {
  const last = buf.t.length - 1;
  for (const row of $("values").children) {
    const name = row.dataset.channel;
    const lo = last >= 0 ? buf.lo[name][last] : null;
    const hi = last >= 0 ? buf.hi[name][last] : null;
    const known = lo !== null && hi !== null;
    row.children[1].textContent = known ? fmt((lo + hi) / 2) : "—";
    row.children[1].title = known ? "newest 10 ms: " + fmt(lo) + " … " + fmt(hi) : "";
  }
}

function updateAge() {
  if (!lastFrameAt) return;
  const ms = performance.now() - lastFrameAt;
  if (ms < STALE_MS) badge("age", "data live", "on");
  else badge("age", "no data for " + Math.round(ms / 1000) + " s", "off");
}

// -- stand state ----------------------------------------------------------------------------------

// `rcs/state/system`: {state, armed, reason, sequence}
function onSystemState(s) {
  const state = (s && s.state) || "?";
  $("state").textContent = state.toUpperCase();
  $("state").className = "state " + state;
  const seq = s && s.sequence;
  const running = seq ? "sequence " + seq.name + " step " + seq.step + "/" + seq.steps + " · " : "";
  $("reason").textContent = running + ((s && s.reason) || "") + (s && s.ts ? " · " + clock(s.ts) : "");
}

// `rcs/state/stm32`: the link (up, silent or down), and the valves the device itself reports.
function onStm32State(s) {
  if (!s) return;
  const link = s.connected ? "STM32 " + (s.kind || "") + " connected"
    : s.link === "silent" ? "STM32 SILENT (port open, no frames)" : "STM32 NOT CONNECTED";
  $("stm32").textContent = link + (s.safe ? " · holding all valves closed (safe)" : "");
  $("stm32").className = s.connected ? "muted" : "alarm";
  // The device's bitmask only until actuation's valve state (names, cause) has arrived.
  if (Number.isInteger(s.valves) && !valves.acknowledged) {
    valves.bits = Array.from({ length: VALVE_COUNT }, (_, i) => (s.valves >> i) & 1);
    renderValves();
  }
}

// `problems`: what is wrong with the stand ({component, reason} each), as the gateway's
// /api/health says it: one red badge per problem, or one green badge when there is none.
function onProblems(list) {
  const box = $("problems");
  box.replaceChildren();
  if (!list.length) {
    box.append(el("span", "badge on", "stand ok"));
    return;
  }
  for (const p of list) {
    const b = el("span", "badge off", p.component + ": " + p.reason);
    b.title = p.reason;
    box.append(b);
  }
}

// `valve_state`: the acknowledged pattern, with the valve names in order.
function onValveState(m) {
  if (Array.isArray(m.names)) valves.names = m.names;
  if (Array.isArray(m.valves)) valves.bits = m.valves.map(Number);
  else if (typeof m.bits === "string") valves.bits = m.bits.split("").map(Number);
  valves.cause = m.cause || "";
  valves.ts = m.ts;
  valves.acknowledged = true;
  renderValves();
}

function renderValves() {
  const ul = $("valves");
  ul.textContent = "";
  for (let i = 0; i < VALVE_COUNT; i++) {
    // Until actuation publishes a valve state, only the device's bitmask is known: no names.
    const name = valves.names ? valves.names[i] : "valve " + (i + 1);
    const open = valves.bits ? valves.bits[i] === 1 : null;
    const li = el("li", open === null ? "" : open ? "open" : "closed");
    li.append(el("span", "", name), el("b", "", open === null ? "?" : open ? "OPEN" : "closed"));
    ul.appendChild(li);
  }
  $("valve-cause").textContent = valves.cause
    ? "last change: " + valves.cause + " · " + clock(valves.ts)
    : valves.names ? "" : "as the STM32 reports them; names come with the first valve change";
}

// `rcs/state/motors`: {connected, motors: [{id, name, position_deg, moving, target_deg}]}
function onMotorState(s) {
  const ul = $("motors");
  ul.textContent = "";
  if (!s || !s.connected) ul.appendChild(el("li", "alarm", "motor controller not connected"));
  for (const m of (s && s.motors) || []) {
    const where = deg(m.position_deg);
    const moving = m.moving ? " → " + deg(m.target_deg) + " (moving)" : "";
    ul.appendChild(el("li", "", (m.name || "motor " + m.id) + ": " + where + moving));
  }
}

// -- events ---------------------------------------------------------------------------------------

function eventText(e) {
  const rest = Object.entries(e)
    .filter(([k]) => !["ts", "service", "kind"].includes(k))
    .map(([k, v]) => k + "=" + (typeof v === "object" && v !== null ? JSON.stringify(v) : v));
  return [clock(e.ts), e.service, e.kind].filter(Boolean).join(" ") + "  " + rest.join(" ");
}

function addEvent(e, atEnd) {
  const refused = e.kind === "command" && e.accepted === false;
  const offline = e.kind === "status" && e.state !== "online";
  const li = el("li", WARN_KINDS.has(e.kind) || refused || offline ? "warn" : "", eventText(e));
  li.dataset.ts = e.ts || 0;
  if (atEnd) $("events").append(li);
  else $("events").prepend(li);
  while ($("events").children.length > EVENTS_SHOWN) $("events").lastChild.remove();
}

// `GET /api/events`: what happened before this page connected (newest first), below the live ones.
async function loadEvents() {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  try {
    const r = await fetch("/api/events?limit=" + EVENTS_SHOWN, { headers });
    if (!r.ok) return;
    const oldest = $("events").lastChild ? Number($("events").lastChild.dataset.ts) : Infinity;
    for (const e of (await r.json()).events) if ((e.ts || 0) < oldest) addEvent(e, true);
  } catch (e) {
    // the live events still arrive over /ws
  }
}

function onServiceStatus(m) {
  const d = m.data || {};
  addEvent({ ts: d.ts, service: m.service, kind: "status", state: d.state, reason: d.reason });
}

// -- commands -------------------------------------------------------------------------------------

function isOperator() {
  return identity !== null && identity.role === "operator" && ws && ws.readyState === WebSocket.OPEN;
}

// Buttons follow the role: viewers (and a page not yet logged in) get none enabled. ABORT stays
// clickable while disconnected, only to say that it cannot be sent.
function updateButtons() {
  const op = isOperator();
  $("arm").disabled = !op;
  $("disarm").disabled = !op;
  $("abort").disabled = identity !== null && identity.role !== "operator";
  const why = identity && identity.role !== "operator" ? "viewer token: commands need an operator token" : "";
  for (const id of ["arm", "disarm", "abort"]) $(id).title = why || $(id).dataset.title || "";
}

function command(mode) {
  if (!isOperator()) {
    answer(mode.toUpperCase() + " NOT SENT: not connected as operator" +
      (mode === "abort" ? " — use the hardware E-stop" : ""), false);
    return;
  }
  send({ type: "system_mode", mode });
  answer(mode.toUpperCase() + " sent, waiting for actuation…");
}

function onCommandAnswer(m) {
  const what = String(m.mode || "command").toUpperCase();
  if (m.success) answer(what + " accepted" + (m.state ? ": state " + m.state : ""), true);
  else answer(what + " REFUSED: " + (m.reason || "no reason given"), false);
}

// -- connection -----------------------------------------------------------------------------------

// While not connected, what the page shows is old: dim it so nobody reads it as the stand's state.
function markStale(stale) {
  document.body.classList.toggle("stale", stale);
}

function onAuthenticated(m) {
  identity = { name: m.name, role: m.role };
  markStale(false);
  badge("who", m.name === m.role ? m.role : m.name + " (" + m.role + ")", m.role === "operator" ? "op" : "");
  $("login").hidden = true;
  $("logout").hidden = false;
  // start over: the history fills what this page missed while it was away
  resetBuffer(buf.channels);
  buf.session = null;
  // every channel: the values table shows them all, the plots pick theirs
  send({ type: "subscribe", mode: "display", max_hz: MAX_HZ, sensor_data: false });
  stopHeartbeat();
  if (m.role === "operator") heartbeat = startTicker(HEARTBEAT_MS, () => send({ type: "heartbeat" }));
  updateButtons();
  backfill();
  loadEvents();
}

function onMessage(m) {
  switch (m.type) {
    case "sensor_display": onDisplay(m); break;
    case "authenticated": onAuthenticated(m); break;
    case "subscribed": info("telemetry: all channels, " + m.max_hz + " frames/s"); break;
    case "telemetry_meta": onMeta(m.data); break;
    case "system_state": onSystemState(m.data); break;
    case "stm32_state": onStm32State(m.data); break;
    case "motor_state": onMotorState(m.data); break;
    case "valve_state": onValveState(m); break;
    case "event": addEvent(m.data || {}); break;
    case "service_status": onServiceStatus(m); break;
    case "problems": onProblems(m.problems || []); break;
    case "system_mode_response": onCommandAnswer(m); break;
    case "dropped":
      dropped.notices += 1;
      dropped.frames += m.count;
      $("dropped").textContent = "dropped " + dropped.frames + " frames (" + dropped.notices + " notices)";
      $("dropped").hidden = false;
      break;
    case "error": answer("gateway: " + m.data, false); break;
    default: break;
  }
}

function decode(data) {
  return typeof data === "string" ? JSON.parse(data) : MessagePack.decode(new Uint8Array(data));
}

function connect() {
  clearTimeout(retry);
  stopHeartbeat(); // the next socket's first message must be its `auth`
  if (ws) {
    ws.onclose = null;
    ws.close();
  }
  identity = null;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(proto + "//" + location.host + "/ws");
  ws.binaryType = "arraybuffer";
  badge("conn", "connecting", "off");
  markStale(true);
  ws.onopen = () => {
    badge("conn", "connected", "on");
    send({ type: "auth", token: token() }); // must be the first message (within 5 s)
  };
  ws.onmessage = (ev) => onMessage(decode(ev.data));
  ws.onclose = onClose;
  updateButtons();
}

function onClose(ev) {
  stopHeartbeat();
  identity = null;
  markStale(true);
  updateButtons();
  $("who").className = "badge"; // no longer acting as anyone
  if (ev.code === 1008 && ev.reason === "authentication required") {
    // a wrong or missing token: retrying would not help
    badge("conn", token() ? "token refused" : "no token", "off");
    badge("who", "not logged in");
    $("login").hidden = false;
    $("logout").hidden = true;
    $("token").focus();
    return;
  }
  badge("conn", "disconnected — retrying", "off");
  retry = setTimeout(connect, RETRY_MS);
}

// -- start ----------------------------------------------------------------------------------------

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem(TOKEN_KEY, $("token").value);
  $("token").value = "";
  connect();
});

$("logout").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  connect(); // refused without a token (unless RCS_AUTH=off): shows the login form
});

$("arm").addEventListener("click", () => command("arm"));
$("disarm").addEventListener("click", () => command("disarm"));
$("abort").addEventListener("click", () => command("abort"));
$("abort").dataset.title = $("abort").title;

takeTokenFromFragment();
renderValves();
setChosen(chosen);
window.addEventListener("resize", resizePlots);
setInterval(() => { updateValues(); updateAge(); }, VALUES_EVERY_MS);
requestAnimationFrame(redraw);
connect();
