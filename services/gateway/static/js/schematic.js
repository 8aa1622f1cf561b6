// Schematic panel: the feed system (static/schematic.svg, from `GET /api/config`'s `schematic`).
// Each valve is a toggle button named by the valve (aria-pressed = open as the STM32 acknowledged
// it); a click sends `valve_command {name, open}` and shows the valve pending until the answer; a
// refusal's reason stays under the drawing while the valve keeps showing its real state. Opening an
// isolation valve or the igniter asks for a confirmation (`confirm` in the config). Sensor values sit
// at their places, coloured by their warning and red-line limits.
import { cancelConfirmation, confirmAction } from "./confirm.js";
import { api, on, send } from "./connection.js";
import { commandBlock, store, watchCommandBlock } from "./store.js";
import { answer, clock, el, fmt } from "./util.js";

const ANSWER_TIMEOUT_MS = 15000; // the gateway answers within its command timeout; this is a backstop
const ROLE_TEXT = {
  isolation: "an isolation valve: it lets propellant from the supply into the line",
  igniter: "the igniter",
  run: "a run valve",
  purge: "a purge valve",
  relief: "a relief valve",
};

const controls = {}; // valve name -> {node, state, role, confirm}
let order = []; // valve names in valve order (the config's), until `valve_state` names them
const pending = {}; // valve name -> {open, timer}
const refused = {}; // valve name -> reason of the last refusal (until its next command)
let notes = null; // the list of refusals under the drawing
let cause = null;

function valveOpen(name) {
  const v = store.get("valves");
  const i = (v.names || order).indexOf(name);
  return v.bits && i >= 0 ? v.bits[i] === 1 : null;
}

function stateText(name) {
  const open = valveOpen(name);
  if (pending[name]) return pending[name].open ? "opening…" : "closing…";
  return open === null ? "?" : open ? "OPEN" : "closed";
}

function renderValve(name) {
  const c = controls[name];
  const open = valveOpen(name);
  const blocked = commandBlock();
  c.node.classList.toggle("open", open === true);
  c.node.classList.toggle("closed", open === false);
  c.node.classList.toggle("pending", Boolean(pending[name]));
  c.node.classList.toggle("refused", Boolean(refused[name]));
  c.node.classList.toggle("disabled", Boolean(blocked));
  c.node.setAttribute("aria-pressed", String(open === true));
  c.node.setAttribute("aria-disabled", String(Boolean(blocked)));
  c.node.setAttribute("aria-busy", String(Boolean(pending[name])));
  c.state.textContent = stateText(name);
  const what = (open ? "close " : "open ") + name + " (" + (c.role || "valve") + ")";
  c.title.textContent = blocked ? name + ": " + blocked : refused[name] ? what + " — refused: " + refused[name] : what;
}

function renderAll() {
  for (const name of Object.keys(controls)) renderValve(name);
  notes.replaceChildren();
  for (const [name, reason] of Object.entries(refused)) {
    const li = el("li", "refusal", name + " refused: " + reason);
    li.dataset.valve = name;
    notes.append(li);
  }
  const v = store.get("valves");
  cause.textContent = v.cause ? "last change: " + v.cause + " · " + clock(v.ts)
    : v.names ? "" : "as the STM32 reports them";
}

async function toggle(name) {
  const c = controls[name];
  const blocked = commandBlock();
  if (blocked) {
    answer(name + " NOT SENT: " + blocked, false);
    return;
  }
  if (pending[name]) {
    answer(name + ": the previous command is not answered yet", false);
    return;
  }
  const open = !valveOpen(name);
  if (open && c.confirm) {
    const ok = await confirmAction({
      title: "Open " + name + "?",
      text: name + " is " + (ROLE_TEXT[c.role] || "a valve") + ". Opening it is refused unless the stand is armed.",
      confirm: "Open " + name,
    });
    if (!ok || commandBlock()) return;
  }
  delete refused[name];
  if (!send({ type: "valve_command", name, open })) {
    answer(name + " NOT SENT: not connected to the gateway", false);
    return;
  }
  pending[name] = { open, timer: setTimeout(() => onAnswer({ name, open, success: false, reason: "no answer from the gateway" }), ANSWER_TIMEOUT_MS) };
  answer((open ? "open " : "close ") + name + " sent, waiting for the STM32…");
  renderAll();
}

// `valve_response` of a one-valve command (`name`, `open`); whole-pattern answers have no name.
function onAnswer(m) {
  if (!m.name || !pending[m.name]) return;
  clearTimeout(pending[m.name].timer);
  delete pending[m.name];
  const what = (m.open ? "open " : "close ") + m.name;
  if (m.success) answer(what + ": acknowledged by the STM32", true);
  else {
    refused[m.name] = m.reason || "no reason given";
    answer(what + " REFUSED: " + refused[m.name], false);
  }
  renderAll();
}

// Connection lost: no answer will come for what was pending.
function dropPending() {
  for (const name of Object.keys(pending)) {
    clearTimeout(pending[name].timer);
    delete pending[name];
  }
}

function limitsOf(config) {
  const limits = {};
  for (const c of config.channels) limits[c.name] = { unit: c.unit, description: c.description, warn: c, red: [] };
  for (const r of config.redlines) if (limits[r.channel]) limits[r.channel].red.push(r);
  return limits;
}

function level(limit, v) {
  const beyond = (l) => (l.above !== null && l.above !== undefined && v > l.above) || (l.below !== null && l.below !== undefined && v < l.below);
  if (limit.red.some(beyond)) return "red";
  if (beyond({ above: limit.warn.warn_above, below: limit.warn.warn_below })) return "warn";
  return "ok";
}

function bindReadings(svg, limits) {
  const readings = [...svg.querySelectorAll("[data-channel]")].map((node) => {
    const name = node.dataset.channel;
    const limit = limits[name] || { unit: "", warn: {}, red: [] };
    const title = document.createElementNS(node.namespaceURI, "title");
    title.textContent = name + (limit.description ? " — " + limit.description : "");
    node.prepend(title);
    return { node, name, limit, value: node.querySelector(".channel-value") };
  });
  store.watch("latest", (latest) => {
    for (const r of readings) {
      const v = latest[r.name];
      r.value.textContent = v ? fmt(v.value) + " " + r.limit.unit : "—";
      const lvl = v ? level(r.limit, v.value) : "none";
      r.node.setAttribute("class", "reading " + lvl);
    }
  });
}

function bindValves(svg, config) {
  const roles = Object.fromEntries(config.valves.map((v) => [v.name, v]));
  order = config.valves.map((v) => v.name);
  for (const node of svg.querySelectorAll("[data-valve]")) {
    const name = node.dataset.valve;
    const title = document.createElementNS(node.namespaceURI, "title");
    node.prepend(title);
    node.setAttribute("role", "button");
    node.setAttribute("tabindex", "0");
    node.setAttribute("aria-label", name);
    controls[name] = {
      node, title, state: node.querySelector(".valve-state"),
      role: roles[name] ? roles[name].role : "", confirm: roles[name] ? roles[name].confirm : true,
    };
    node.addEventListener("click", () => toggle(name));
    node.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        toggle(name);
      }
    });
  }
}

async function load(drawing) {
  const config = await api("/api/config");
  store.set("config", config);
  const r = await fetch(config.schematic);
  if (!r.ok) throw new Error("schematic: HTTP " + r.status);
  const svg = new DOMParser().parseFromString(await r.text(), "image/svg+xml").documentElement;
  drawing.replaceChildren(document.importNode(svg, true));
  const live = drawing.firstChild;
  live.setAttribute("role", "group");
  live.setAttribute("aria-label", "feed system: valves and sensors");
  bindValves(live, config);
  bindReadings(live, limitsOf(config));
  renderAll();
}

export function mount(root) {
  const drawing = el("div", "drawing");
  drawing.append(el("p", "muted", "loading the stand's layout…"));
  notes = el("ul", "refusals");
  notes.id = "valve-refusals";
  notes.setAttribute("aria-live", "polite");
  cause = el("div", "muted");
  cause.id = "valve-cause";
  root.append(drawing, notes, cause);
  let loaded = false;
  on("authenticated", () => {
    if (loaded) return;
    loaded = true;
    load(drawing).catch((e) => {
      loaded = false;
      drawing.replaceChildren(el("p", "alarm", "no stand layout (" + e.message + ")"));
    });
  });
  on("valve_response", onAnswer);
  // A valve that changed since its refusal: the note is history; the valve shows what is.
  let before = null;
  store.watch("valves", (v) => {
    for (const name of Object.keys(refused)) {
      const i = (v.names || order).indexOf(name);
      if (before && v.bits && before[i] !== v.bits[i]) delete refused[name];
    }
    before = v.bits;
    renderAll();
  });
  store.watch("connection", (c) => {
    if (c !== "open") dropPending();
  });
  watchCommandBlock((blocked) => {
    if (blocked) cancelConfirmation();
    renderAll();
  });
}
