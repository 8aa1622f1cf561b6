// Plots panel: chosen channels over a window of 10 s to 10 min as min/max bands (telemetry.js keeps
// the buckets and reads the history a window needs), and the latest value of every channel (click a
// row to add or remove its plot).
//
// Each plot draws its channel's warning limits and red-lines (`GET /api/config`, the store's `config`) and markers for valve
// changes, alarms and aborts (`event` messages, and `GET /api/events` on connecting).
// Pause freezes what is shown while data keep arriving; dragging over a plot zooms every plot to that
// span and pauses, reading the span again from the ring buffer at a finer resolution; Live resumes.
// URL options: `?channels=P1,P5` (plots shown), `?window=60` (seconds, one of WINDOWS).
import { bandPlot, columns, limitsByChannel, markerOf } from "./chart.js";
import { api, on } from "./connection.js";
import { store } from "./store.js";
import { POINTS, WINDOWS, buf, bucketS, readHistory, setWindow } from "./telemetry.js";
import { el, fmt, hms, info } from "./util.js";

const PLOT_HEIGHT = 190;
const MARKERS_KEPT = 500;
const MAX_ZOOM_POINTS = 4000; // a zoom's re-read from the ring buffer (× every channel)
const RING_S = 600; // acquisition's ring buffer (acquisition.ring_seconds)

const plots = {}; // channel -> {u, div}
let chosen = (new URLSearchParams(location.search).get("channels") || "P1,P5,THRUST,Tbogaz1")
  .split(",").filter(Boolean);
let drawn = -1; // buf.version last drawn
let grid = null; // the plots' grid
let values = null; // the values table
let limits = {}; // channel -> [{kind, direction, value}]
const markers = []; // [{t, kind: "valve" | "alarm" | "abort", label}], by time
let frozen = null; // {t, lo, hi, end} shown while paused
let zoom = null; // [t0, t1]
let zoomGeneration = 0;
const ui = {}; // toolbar elements
const paintListeners = [];

function addMarker(t, kind, label) {
  if (!Number.isFinite(t) || markers.some((m) => m.kind === kind && Math.abs(m.t - t) < 0.05)) return;
  markers.push({ t, kind, label });
  markers.sort((a, b) => a.t - b.t);
  if (markers.length > MARKERS_KEPT) markers.splice(0, markers.length - MARKERS_KEPT);
  const counts = {}; // for people and tests to read: markers by kind
  for (const m of markers) counts[m.kind] = (counts[m.kind] || 0) + 1;
  grid.dataset.markers = JSON.stringify(counts);
  drawn = -1;
}

function onEvent(e) {
  const m = markerOf(e);
  if (m) addMarker(m.t, m.kind, m.label);
}

async function loadMarkers() {
  try {
    for (const e of (await api("/api/events?limit=500")).events) onEvent(e);
  } catch (e) {
    // the live events still arrive
  }
}

// -- plots -----------------------------------------------------------------------------------------

function xRange() {
  if (zoom) return zoom;
  const t = frozen || buf;
  const end = frozen ? frozen.end : t.t.length ? t.t[t.t.length - 1] : Date.now() / 1000;
  return [end - buf.windowS, end];
}

function makePlot(name) {
  const div = el("div", "plot");
  div.dataset.channel = name;
  div.dataset.limits = String((limits[name] || []).length);
  grid.appendChild(div);
  const u = bandPlot(div, {
    title: name,
    unit: unitsOf(store.get("meta"))[name],
    limits: limits[name] || [],
    markers: () => markers,
    xRange,
    onZoom: zoomTo,
    width: Math.max(200, div.clientWidth - 8),
    height: PLOT_HEIGHT,
  });
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
  drawn = -1;
}

// Units and limits are part of a plot's title and drawing: the plots are made again.
function remake() {
  for (const name of Object.keys(plots)) {
    plots[name].u.destroy();
    plots[name].div.remove();
    delete plots[name];
  }
  setChosen(chosen);
}

function togglePlot(name) {
  setChosen(chosen.includes(name) ? chosen.filter((c) => c !== name) : chosen.concat([name]));
}

function resizePlots() {
  for (const p of Object.values(plots)) {
    p.u.setSize({ width: Math.max(200, p.div.clientWidth - 8), height: PLOT_HEIGHT });
  }
}

function redraw() {
  const version = frozen ? -2 : buf.version;
  if (drawn !== version) {
    drawn = version;
    const data = frozen || buf;
    for (const [name, p] of Object.entries(plots)) {
      if (data.lo[name]) p.u.setData([data.t, data.lo[name], data.hi[name]]);
    }
    // what is drawn, for people and tests to read: buckets and their first and last time
    grid.dataset.points = String(data.t.length);
    grid.dataset.first = String(data.t.length ? data.t[0] : "");
    grid.dataset.last = String(data.t.length ? data.t[data.t.length - 1] : "");
    if (!frozen && paintListeners.length) {
      const frame = { received: buf.received, sampleT: buf.sampleT };
      // painted: the first task after this animation frame was rendered
      setTimeout(() => { for (const f of paintListeners) f(frame, performance.now()); }, 0);
    }
  }
  requestAnimationFrame(redraw);
}

// f({received, sampleT}, paintedAt) after each live frame drawn (bench/dashboard.py).
export function onPainted(f) {
  paintListeners.push(f);
}

// -- window, pause, zoom ---------------------------------------------------------------------------

function say(text) {
  ui.status.textContent = text;
}

function pause() {
  const lo = {};
  const hi = {};
  for (const name of buf.channels) {
    lo[name] = buf.lo[name].slice();
    hi[name] = buf.hi[name].slice();
  }
  frozen = { t: buf.t.slice(), lo, hi, end: buf.t.length ? buf.t[buf.t.length - 1] : Date.now() / 1000 };
  ui.pause.textContent = "live";
  ui.pause.setAttribute("aria-pressed", "true");
  grid.classList.add("paused");
  say("paused at " + hms(frozen.end));
  drawn = -1;
}

function live() {
  frozen = null;
  zoom = null;
  zoomGeneration += 1;
  ui.pause.textContent = "pause";
  ui.pause.setAttribute("aria-pressed", "false");
  grid.classList.remove("paused");
  say("");
  drawn = -1;
}

// Every plot to [t0, t1], paused; the span read again from the ring buffer in finer buckets.
async function zoomTo(t0, t1) {
  if (!frozen) pause();
  zoom = [t0, t1];
  drawn = -1;
  const mine = ++zoomGeneration;
  const seconds = Date.now() / 1000 - t0;
  const points = Math.min(MAX_ZOOM_POINTS, Math.ceil((POINTS * seconds) / Math.max(t1 - t0, 1e-3)));
  const span = hms(t0) + " – " + hms(t1);
  if (seconds > RING_S) {
    say("zoomed " + span + " (older than the ring buffer: no finer detail)");
    return;
  }
  say("zoomed " + span + ": reading detail…");
  try {
    const h = await readHistory(seconds, points);
    if (mine !== zoomGeneration) return;
    const lo = {};
    const hi = {};
    for (const name of h.channels) [, lo[name], hi[name]] = columns(h, name);
    frozen = { t: h.t, lo, hi, end: frozen.end };
    say("zoomed " + span + " · " + h.n + " buckets of " + h.n_source + " samples");
    drawn = -1;
  } catch (e) {
    if (mine === zoomGeneration) say("zoomed " + span + " (no finer detail: " + e.message + ")");
  }
}

function toolbar() {
  const bar = el("div", "plot-toolbar");
  const label = el("label", "", "window ");
  ui.window = el("select");
  ui.window.id = "plot-window";
  for (const s of WINDOWS) {
    const o = el("option", "", s < 60 ? s + " s" : s / 60 + " min");
    o.value = String(s);
    ui.window.append(o);
  }
  ui.window.addEventListener("change", () => {
    live();
    setWindow(Number(ui.window.value));
    const query = new URLSearchParams(location.search);
    query.set("window", ui.window.value);
    history.replaceState(null, "", location.pathname + "?" + query.toString().replace(/%2C/g, ","));
  });
  label.append(ui.window);
  ui.pause = el("button", "", "pause");
  ui.pause.id = "plot-pause";
  ui.pause.type = "button";
  ui.pause.setAttribute("aria-pressed", "false");
  ui.pause.title = "freeze the plots (data keep arriving); drag over a plot to zoom";
  ui.pause.addEventListener("click", () => (frozen ? live() : pause()));
  const legend = el("span", "muted plot-legend");
  for (const [cls, text] of [["mk valve", "valves"], ["mk alarm", "alarm"], ["mk abort", "abort"],
    ["lim warning", "warning"], ["lim redline", "red-line"]]) legend.append(el("i", cls), text + " ");
  legend.append("· drag: zoom");
  ui.status = el("span", "muted plot-status");
  ui.status.id = "plot-status";
  ui.status.setAttribute("role", "status");
  bar.append(label, ui.pause, legend, ui.status);
  return bar;
}

// -- latest values ---------------------------------------------------------------------------------

// One row per channel, in two columns; click a row (or Enter on it) to show or hide its plot.
function buildValuesTable(channels) {
  values.textContent = "";
  values.style.gridTemplateRows = "repeat(" + Math.ceil(channels.length / 2) + ", auto)";
  const units = unitsOf(store.get("meta"));
  for (const name of channels) {
    const row = el("button", "row");
    row.type = "button";
    row.dataset.channel = name;
    row.setAttribute("aria-label", "plot " + name);
    row.title = "show or hide the plot of " + name;
    row.append(el("span", "name", name), el("span", "value", "—"), el("span", "unit", units[name] || ""));
    row.addEventListener("click", () => togglePlot(name));
    values.appendChild(row);
  }
  markChosenRows();
  const unknown = chosen.filter((c) => channels.length && !channels.includes(c));
  if (unknown.length) info("not channels of this stand: " + unknown.join(", "));
}

function unitsOf(meta) {
  const units = {};
  for (const c of (meta && meta.channels) || []) units[c.name] = c.unit || "";
  return units;
}

function markChosenRows() {
  for (const row of values.children) {
    row.classList.toggle("plotted", chosen.includes(row.dataset.channel));
    row.setAttribute("aria-pressed", String(chosen.includes(row.dataset.channel)));
  }
}

function showLatest(latest) {
  for (const row of values.children) {
    const v = latest[row.dataset.channel];
    row.children[1].textContent = v ? fmt(v.value) : "—";
    row.children[1].title = v ? "newest 10 ms: " + fmt(v.lo) + " … " + fmt(v.hi) : "";
  }
}

function windowTitle(seconds) {
  const h2 = grid.parentElement.querySelector("h2");
  if (!h2) return;
  h2.firstChild.textContent = "Last " + (seconds < 60 ? seconds + " s " : seconds / 60 + " min ");
  const small = h2.querySelector("small");
  const ms = Math.round(bucketS() * 1000);
  if (small) small.textContent = "min/max band per " + ms + " ms · click a channel under Latest values to add or remove its plot";
}

export function mount(root) {
  grid = el("div", "plots");
  grid.id = "plots";
  const valuesTitle = el("h3", "", "Latest values");
  valuesTitle.append(el("small", "", "click: plot"));
  values = el("div", "values");
  values.id = "values";
  root.append(toolbar(), grid, valuesTitle, values);
  store.watch("channels", buildValuesTable);
  let units = "";
  store.watch("meta", (meta) => {
    const now = unitsOf(meta);
    for (const row of values.children) row.children[2].textContent = now[row.dataset.channel] || "";
    if (JSON.stringify(now) !== units) {
      units = JSON.stringify(now);
      remake();
    }
  });
  store.watch("latest", showLatest);
  store.watch("window", (seconds) => {
    ui.window.value = String(seconds);
    windowTitle(seconds);
  });
  store.watch("history", (h) => {
    if (frozen) return;
    say(h.loading ? "reading " + h.seconds + " s of history…" : h.error ? "no history: " + h.error : "");
  });
  on("event", (m) => onEvent(m.data || {}));
  on("authenticated", loadMarkers);
  store.watch("config", (config) => {
    limits = limitsByChannel(config);
    remake();
  });
  setChosen(chosen);
  window.addEventListener("resize", resizePlots);
  requestAnimationFrame(redraw);
}
