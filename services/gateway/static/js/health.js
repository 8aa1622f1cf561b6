// Health panel: one row per part of the stand, each green (ok), amber (degraded) or red (failing),
// with what is known about it: the page's link to the gateway, the broker, each service, the STM32
// link and protocol, the Arduino, the logger's file and the free disk, acquisition's ring buffer,
// the telemetry's age, frames this page lost; and the gateway's list of problems with their reasons.
// Live parts come over /ws; the rest from GET /api/status, /api/buffer_status and /api/storage.
import { api, on } from "./connection.js";
import { store } from "./store.js";
import { badge, el } from "./util.js";

const POLL_MS = 3000;
const SERVICES = ["acquisition", "actuation", "logger", "gateway"];
const CONNECTION = {
  connecting: ["connecting", "off"],
  open: ["connected", "on"],
  closed: ["disconnected — retrying", "off"],
  refused: ["token refused", "off"],
};

const rows = {}; // key -> {status, text}

function row(list, key, label) {
  const li = el("li", "health-row unknown");
  const name = el("span", "health-name", label);
  const text = el("span", "health-text", "unknown");
  li.dataset.part = key;
  li.append(name, text);
  list.append(li);
  rows[key] = { li, text };
}

// level: "ok" | "warn" | "bad" | "unknown"
function set(key, level, text) {
  rows[key].li.className = "health-row " + level;
  rows[key].text.textContent = text;
}

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function showServices(services) {
  for (const name of SERVICES) {
    const s = services[name];
    if (!s) set("svc-" + name, "unknown", "not seen");
    else if (s.state === "online") set("svc-" + name, "ok", "online");
    else set("svc-" + name, "bad", "offline" + (s.reason ? ": " + s.reason : ""));
  }
}

function showStm32(s) {
  if (!s) return set("stm32", "unknown", "not reported");
  const what = [s.kind, s.protocol, s.port].filter(Boolean).join(" · ");
  const lost = s.lost_samples_total ? " · " + s.lost_samples_total + " samples lost" : "";
  if (s.connected) set("stm32", "ok", "up · " + what + lost + (s.safe ? " · holding all valves closed (safe)" : ""));
  else set("stm32", "bad", (s.link === "silent" ? "SILENT (port open, no frames)" : "NOT CONNECTED") + (what ? " · " + what : ""));
}

function showArduino(m) {
  if (!m) return set("arduino", "unknown", "not reported");
  set("arduino", m.connected ? "ok" : "bad", (m.connected ? "connected" : "NOT CONNECTED") + (m.port ? " · " + m.port : ""));
}

async function poll() {
  if (!store.get("identity")) return;
  const [status, ring, storage] = await Promise.allSettled([
    api("/api/status"), api("/api/buffer_status"), api("/api/storage"),
  ]);
  if (status.status === "fulfilled") {
    const s = status.value;
    set("broker", s.broker_connected ? "ok" : "bad", s.broker_connected ? "gateway connected" : "the gateway is not connected to the broker");
    const known = store.get("services");
    const merged = {};
    for (const [name, state] of Object.entries(s.services)) merged[name] = Object.assign({}, known[name] || {}, { state });
    store.set("services", merged);
  } else set("broker", "unknown", status.reason.message);
  if (ring.status === "fulfilled") {
    const r = ring.value;
    set("ring", "ok", Math.round(r.fill * 100) + " % full · " + r.size + " / " + r.capacity + " samples · " + bytes(r.memory_bytes));
  } else set("ring", "bad", ring.reason.message);
  if (storage.status === "fulfilled") {
    const d = storage.value;
    const low = d.total_bytes && d.free_bytes / d.total_bytes < 0.05;
    set("disk", d.free_bytes === null ? "unknown" : low ? "warn" : "ok",
      bytes(d.free_bytes) + " free of " + bytes(d.total_bytes) + " · " + d.data_dir);
    if (d.logger_reason) set("file", "bad", d.logger_reason);
    else if (d.disk_error) set("file", "bad", d.disk_error);
    else set("file", d.open_segment ? "ok" : "warn", d.open_segment ? d.open_segment.split("/").pop() : "no file open");
  } else {
    set("disk", "unknown", storage.reason.message);
    set("file", "unknown", storage.reason.message);
  }
}

export function mount(root) {
  const strip = el("div", "health-badges");
  const conn = el("span", "badge off", "disconnected");
  conn.id = "conn";
  conn.title = "WebSocket to the gateway";
  const age = el("span", "badge off", "no data");
  age.id = "age";
  age.title = "time since the last telemetry frame arrived";
  const dropped = el("span", "badge warn");
  dropped.id = "dropped";
  dropped.hidden = true;
  dropped.title = "telemetry frames the gateway dropped because this page read too slowly";
  strip.append(conn, age, dropped);
  const problems = el("div", "problems");
  problems.id = "problems";
  problems.setAttribute("aria-label", "what the gateway knows to be wrong with the stand");
  const list = el("ul", "health-list");
  list.id = "health";
  root.append(strip, problems, list);
  row(list, "broker", "broker");
  for (const name of SERVICES) row(list, "svc-" + name, name);
  row(list, "stm32", "STM32");
  row(list, "arduino", "Arduino");
  row(list, "file", "logger file");
  row(list, "disk", "free disk");
  row(list, "ring", "ring buffer");
  row(list, "age", "data age");
  const stm32 = el("div", "muted"); // kept for tests and tools that read #stm32
  stm32.id = "stm32";
  stm32.hidden = true;
  root.append(stm32);

  store.watch("connection", (c) => badge(conn, ...CONNECTION[c]));
  store.watch("latest", () => {
    const at = store.get("lastFrameAt");
    if (!at) return set("age", "bad", "no telemetry yet");
    const s = ((performance.now() - at) / 1000).toFixed(1);
    if (!store.get("stale")) {
      badge(age, "data live", "on");
      set("age", "ok", s + " s");
    } else {
      badge(age, "no data for " + Math.round(s) + " s", "off");
      set("age", "bad", "no telemetry for " + s + " s");
    }
  });
  store.watch("problems", (found) => {
    problems.replaceChildren();
    if (!found.length) problems.append(el("span", "badge on", "stand ok"));
    for (const p of found) {
      const b = el("span", "badge off", p.component + ": " + p.reason);
      b.title = p.reason;
      problems.append(b);
    }
  });
  store.watch("services", showServices);
  store.watch("stm32", showStm32);
  store.watch("motors", showArduino);
  const count = { notices: 0, frames: 0 };
  on("dropped", (m) => {
    count.notices += 1;
    count.frames += m.count;
    dropped.textContent = "dropped " + count.frames + " frames (" + count.notices + " notices)";
    dropped.hidden = false;
  });
  on("authenticated", poll);
  setInterval(poll, POLL_MS);
}
