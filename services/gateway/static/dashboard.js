// rcs live dashboard: plain JS, no build step. Served by the gateway at `/`; talks only to `/ws`
// on the same origin. Messages are described in services/gateway/ws.py.
/* global uPlot, MessagePack */
"use strict";

const params = new URLSearchParams(location.search);
const CHANNELS = (params.get("channels") || "P1,P5,THRUST,Tbogaz1").split(",").filter(Boolean);
const MAX_HZ = Number(params.get("hz") || 30);
const WINDOW_S = 30;
const EVENTS_SHOWN = 30;
const TOKEN_KEY = "rcs.token";

const $ = (id) => document.getElementById(id);
const plots = {}; // channel -> {u, t: [], lo: [], hi: []}
let ws = null;
let retry = null;
let refused = false;

function setConn(text, ok) {
  $("conn").textContent = text;
  $("conn").className = "badge " + (ok ? "on" : "off");
}

function makePlot(name) {
  const div = document.createElement("div");
  div.className = "plot";
  $("plots").appendChild(div);
  const u = new uPlot(
    {
      title: name,
      width: 400,
      height: 220,
      scales: { x: { time: true } },
      series: [
        {},
        { label: "min", stroke: "#1f77b4", width: 1 },
        { label: "max", stroke: "#d62728", width: 1 },
      ],
      bands: [{ series: [2, 1], fill: "rgba(31,119,180,0.2)" }],
      legend: { live: false },
    },
    [[], [], []],
    div,
  );
  plots[name] = { u, div, t: [], lo: [], hi: [] };
}

function resizePlots() {
  for (const p of Object.values(plots)) {
    p.u.setSize({ width: Math.max(200, p.div.clientWidth - 8), height: 220 });
  }
}

function bytes(b) {
  // A msgpack bin is a Uint8Array view; copy it so the typed-array view is aligned.
  return b.slice().buffer;
}

function onDisplay(m) {
  const n = m.n;
  const t = new Float64Array(bytes(m.t));
  const lo = new Float32Array(bytes(m.min));
  const hi = new Float32Array(bytes(m.max));
  const nc = m.channels.length;
  m.channels.forEach((name, c) => {
    const p = plots[name];
    if (!p) return;
    for (let i = 0; i < n; i++) {
      p.t.push(t[i]);
      p.lo.push(Number.isFinite(lo[i * nc + c]) ? lo[i * nc + c] : null);
      p.hi.push(Number.isFinite(hi[i * nc + c]) ? hi[i * nc + c] : null);
    }
  });
}

function redraw() {
  for (const p of Object.values(plots)) {
    if (!p.t.length) continue;
    const last = p.t[p.t.length - 1];
    let cut = 0;
    while (cut < p.t.length && (p.t[cut] < last - WINDOW_S || p.t[cut] > last)) cut++;
    if (cut) {
      p.t.splice(0, cut);
      p.lo.splice(0, cut);
      p.hi.splice(0, cut);
    }
    p.u.setData([p.t, p.lo, p.hi]);
  }
  requestAnimationFrame(redraw);
}

function onValves(m) {
  const ul = $("valves");
  ul.textContent = "";
  const states = Array.isArray(m.valves) ? m.valves : String(m.bits || "").split("").map(Number);
  const names = m.names || states.map((_, i) => "V" + (i + 1));
  names.forEach((name, i) => {
    const li = document.createElement("li");
    const open = Number(states[i]) === 1;
    li.className = open ? "open" : "closed";
    li.textContent = name + ": " + (open ? "OPEN" : "closed");
    ul.appendChild(li);
  });
}

function onSystemState(data) {
  const state = data && (data.state || data.mode);
  $("state").textContent = "state: " + (state || "?");
}

function onEvent(e) {
  const li = document.createElement("li");
  const when = e && e.ts ? new Date(e.ts * 1000).toLocaleTimeString() : "";
  const rest = Object.assign({}, e);
  delete rest.ts;
  delete rest.service;
  delete rest.kind;
  li.textContent = [when, e.service, e.kind, JSON.stringify(rest)].filter(Boolean).join(" ");
  $("events").prepend(li);
  while ($("events").children.length > EVENTS_SHOWN) $("events").lastChild.remove();
}

function info(text) {
  $("info").textContent = text;
}

function onMessage(m) {
  switch (m.type) {
    case "sensor_display": onDisplay(m); break;
    case "valve_state": onValves(m); break;
    case "system_state": onSystemState(m.data); break;
    case "event": onEvent(m.data); break;
    case "subscribed": info("display " + (m.channels || []).join(", ") + " at " + m.max_hz + " Hz"); break;
    case "system_mode_response":
      info("abort: " + (m.success ? "accepted" : "refused: " + (m.reason || "")) + (m.state ? " (" + m.state + ")" : ""));
      if (m.state) onSystemState({ state: m.state });
      break;
    case "error":
      info("error: " + m.data);
      if (String(m.data).startsWith("authentication")) refused = true;
      break;
    default: break;
  }
}

function connect() {
  clearTimeout(retry);
  refused = false;
  if (ws) { ws.onclose = null; ws.close(); }
  const token = sessionStorage.getItem(TOKEN_KEY) || "";
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = proto + "//" + location.host + "/ws" + (token ? "?token=" + encodeURIComponent(token) : "");
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  setConn("connecting", false);
  ws.onopen = () => {
    setConn("connected", true);
    ws.send(JSON.stringify({ type: "subscribe", mode: "display", channels: CHANNELS, max_hz: MAX_HZ, sensor_data: false }));
  };
  ws.onmessage = (ev) => {
    const m = typeof ev.data === "string" ? JSON.parse(ev.data) : MessagePack.decode(new Uint8Array(ev.data));
    onMessage(m);
  };
  ws.onclose = () => {
    setConn(refused ? "refused (token?)" : "disconnected", false);
    if (!refused) retry = setTimeout(connect, 2000);
  };
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("token").value = "";
  connect();
});

$("abort").addEventListener("click", () => {
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    info("ABORT NOT SENT: not connected — use the hardware E-stop");
    return;
  }
  ws.send(JSON.stringify({ type: "system_mode", mode: "abort" }));
  info("abort sent");
});

CHANNELS.forEach(makePlot);
window.addEventListener("resize", resizePlots);
resizePlots();
requestAnimationFrame(redraw);
connect();
