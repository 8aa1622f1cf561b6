// Runs and recordings panel: the test runs (name, start, duration, result) with their reports, and
// the logger's recordings; either opens in a viewer that plots chosen channels over its whole length
// (`GET /api/runs/{id}/series`, `/api/parquet_files/{name}/series`: min/max buckets the gateway
// reduces), where dragging over a plot zooms and reads that span again in finer detail. Downloads:
// the Parquet file as it is, or the shown span as CSV. A run's plots mark its valve changes, alarms and
// aborts (`GET /api/runs/{id}/events`). An operator starts a named run (a cold flow, a
// leak check: a `test` procedure such as hotfire starts its own) and stops the active one
// (`run_start` / `run_stop`, answered `run_response`); `run_state` says which run is recording.
import { bandPlot, columns, limitsByChannel, markerOf } from "./chart.js";
import { api, on, send, token } from "./connection.js";
import { commandBlock, store, watchCommandBlock } from "./store.js";
import { answer, el, fmt, hms } from "./util.js";

const POINTS = 1200; // buckets per read: about one per pixel
const PLOT_HEIGHT = 170;
const DEFAULT_CHANNELS = ["P1", "P5", "THRUST", "Tbogaz1"];
const RESULT_CLASS = { completed: "ok", aborted: "bad", interrupted: "bad", cancelled: "warn", stopped: "" };

const ui = {};
let opened = null; // {kind: "run" | "recording", id, label, base, channels, shown, answer}
let limits = {};
let generation = 0;

function when(value) {
  // run.json's times are UNIX seconds; accept ISO text too
  const t = typeof value === "number" ? value : Date.parse(value) / 1000;
  return Number.isFinite(t) ? t : null;
}

function dateTime(t) {
  if (t === null) return "—";
  const d = new Date(t * 1000);
  return d.toLocaleDateString([], { year: "numeric", month: "2-digit", day: "2-digit" }) + " " + hms(t);
}

function duration(s) {
  if (!Number.isFinite(s)) return "—";
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return m + " min " + Math.round(s - m * 60) + " s";
}

function button(text, title, onClick) {
  const b = el("button", "small", text);
  b.type = "button";
  if (title) b.title = title;
  b.addEventListener("click", onClick);
  return b;
}

function say(text, bad) {
  ui.status.textContent = text;
  ui.status.className = "muted review-status" + (bad ? " alarm" : "");
}

// -- lists -------------------------------------------------------------------------------------------

async function loadRuns() {
  try {
    const answer = await api("/api/runs");
    const runs = Array.isArray(answer) ? answer : answer.runs || [];
    ui.runs.textContent = "";
    if (!runs.length) ui.runs.append(emptyRow(5, "no runs recorded yet"));
    for (const run of runs) ui.runs.append(runRow(run));
  } catch (e) {
    ui.runs.textContent = "";
    ui.runs.append(emptyRow(5, "runs unavailable (" + e.message + ")"));
  }
}

function emptyRow(span, text) {
  const tr = el("tr");
  const td = el("td", "muted", text);
  td.colSpan = span;
  tr.append(td);
  return tr;
}

function runRow(run) {
  const started = when(run.started_at);
  const ended = when(run.ended_at);
  const tr = el("tr");
  tr.dataset.run = run.id;
  const name = el("td", "", run.name || run.id);
  name.title = [run.id, run.procedure ? "procedure " + run.procedure : "", run.notes || ""].filter(Boolean).join(" · ");
  const result = el("td", "result " + (RESULT_CLASS[run.result] || ""), run.active ? "running" : run.result || "—");
  const actions = el("td", "actions");
  const report = button("report", "the run's report", () => openReport(run));
  const plot = button("plot", "plot the run's samples", () => openSource({ kind: "run", id: run.id, label: "run " + (run.name || run.id) }));
  for (const b of [report, plot]) {
    b.disabled = Boolean(run.active);
    if (run.active) b.title = "the run is still recording";
  }
  actions.append(report, plot);
  tr.append(name, el("td", "", dateTime(started)), el("td", "num", duration(ended !== null && started !== null ? ended - started : NaN)),
    result, actions);
  return tr;
}

async function loadRecordings() {
  try {
    const files = await api("/api/parquet_files");
    ui.recordings.textContent = "";
    if (!files.length) ui.recordings.append(emptyRow(3, "no recordings yet"));
    for (const f of files) {
      const tr = el("tr");
      tr.dataset.recording = f.name;
      const actions = el("td", "actions");
      actions.append(button("plot", "plot this recording", () => openSource({ kind: "recording", id: f.name, label: f.name })));
      tr.append(el("td", "mono", f.name), el("td", "num", (f.size / 1024).toFixed(1) + " MB"), actions);
      ui.recordings.append(tr);
    }
  } catch (e) {
    ui.recordings.textContent = "";
    ui.recordings.append(emptyRow(3, "recordings unavailable (" + e.message + ")"));
  }
}

function refresh() {
  loadRuns();
  loadRecordings();
}

// -- the active run: start and stop ------------------------------------------------------------------

function startRun() {
  const name = ui.runName.value.trim();
  const reason = commandBlock();
  if (reason) return answer("RUN NOT STARTED: " + reason, false);
  if (!name) {
    ui.runName.focus();
    return answer("RUN NOT STARTED: give the run a name", false);
  }
  send({ type: "run_start", name, notes: ui.runNotes.value.trim() });
  answer("starting run " + name + "…");
}

function stopRun() {
  const active = (store.get("run") || {}).active;
  const reason = commandBlock();
  if (reason) return answer("RUN NOT STOPPED: " + reason, false);
  if (!active) return;
  send({ type: "run_stop", id: active.id });
  answer("stopping run " + (active.name || active.id) + "…");
}

function onRunAnswer(m) {
  const run = m.run || {};
  const what = m.command === "run_start" ? "start" : "stop";
  if (m.success) {
    answer("run " + (run.name || run.id || "") + (what === "start" ? " started" : " stopped"), true);
    if (what === "start") {
      ui.runName.value = "";
      ui.runNotes.value = "";
    }
  } else {
    answer("RUN " + what.toUpperCase() + " REFUSED: " + (m.reason || "no reason given"), false);
  }
}

function showRun() {
  const state = store.get("run") || {};
  const active = state.active;
  const reason = commandBlock();
  ui.runActive.hidden = !active;
  ui.runForm.hidden = Boolean(active);
  if (active) {
    const started = when(active.started_at);
    const by = active.procedure ? " by procedure " + active.procedure : active.started_by ? " by " + active.started_by : "";
    ui.runNow.textContent = "Recording run " + (active.name || active.id) + by + " since " + (started === null ? "—" : hms(started));
    // a test procedure's run ends with the procedure (actuation refuses to stop it meanwhile)
  }
  for (const control of [ui.runStart, ui.runStop, ui.runName, ui.runNotes]) {
    control.disabled = Boolean(reason);
    control.title = reason;
  }
  const runs = active ? active.id : "";
  if (listed !== undefined && runs !== listed) refresh(); // a run started or ended: list it as it is now
  listed = runs;
}

let listed; // the active run's id the list was last refreshed for ("": none; undefined: not yet)

function runBar() {
  const bar = el("div", "review-bar run-control");
  ui.runForm = el("div", "run-form");
  ui.runName = el("input");
  ui.runName.id = "run-name";
  ui.runName.maxLength = 100;
  ui.runName.placeholder = "e.g. cold flow #3";
  ui.runName.setAttribute("aria-label", "run name");
  ui.runNotes = el("input");
  ui.runNotes.id = "run-notes";
  ui.runNotes.maxLength = 2000;
  ui.runNotes.placeholder = "notes";
  ui.runNotes.setAttribute("aria-label", "run notes");
  ui.runStart = button("Start run", "start a named test run: its samples and events are recorded apart", startRun);
  ui.runName.addEventListener("keydown", (e) => e.key === "Enter" && startRun());
  ui.runForm.append(el("span", "muted", "new run:"), ui.runName, ui.runNotes, ui.runStart);
  ui.runActive = el("div", "run-active");
  ui.runActive.hidden = true;
  ui.runNow = el("span", "run-now");
  ui.runNow.id = "run-now";
  ui.runNow.setAttribute("role", "status");
  ui.runStop = button("Stop run", "end the active run (its report follows)", stopRun);
  ui.runActive.append(ui.runNow, ui.runStop);
  bar.append(ui.runForm, ui.runActive);
  return bar;
}

// -- report ------------------------------------------------------------------------------------------

// The report is the gateway's HTML: shown in a sandboxed frame (no scripts, no access to this page).
// The frame's document is set once per report: two srcdoc navigations in quick succession (a
// placeholder, then the page) can leave Chromium showing the first.
async function openReport(run) {
  const mine = ++reportGeneration;
  ui.reportTitle.textContent = "Report: " + (run.name || run.id);
  ui.report.hidden = false;
  ui.reportFrame.hidden = true;
  ui.reportStatus.textContent = "loading…";
  let page;
  try {
    const r = await fetch("/api/runs/" + encodeURIComponent(run.id) + "/report", {
      headers: token() ? { Authorization: "Bearer " + token() } : {},
    });
    if (!r.ok) throw new Error("HTTP " + r.status);
    page = await r.text();
  } catch (e) {
    page = "<p style='font-family:sans-serif'>no report: " + e.message + "</p>";
  }
  if (mine !== reportGeneration) return; // another report was opened meanwhile
  ui.reportStatus.textContent = "";
  ui.reportFrame.srcdoc = page;
  ui.reportFrame.hidden = false;
}

let reportGeneration = 0;

// -- viewer ------------------------------------------------------------------------------------------

function base(what) {
  return what.kind === "run" ? "/api/runs/" + encodeURIComponent(what.id) : "/api/parquet_files/" + encodeURIComponent(what.id);
}

async function openSource(what) {
  const chosen = opened ? opened.shown : (new URLSearchParams(location.search).get("channels") || "").split(",").filter(Boolean);
  opened = Object.assign({ base: base(what), channels: [], shown: chosen.length ? chosen : DEFAULT_CHANNELS.slice(),
    answer: null, markers: [] }, what);
  if (what.kind === "run") loadMarkers(opened);
  ui.viewer.hidden = false;
  ui.viewerTitle.textContent = what.label;
  ui.viewer.dataset.open = what.kind + ":" + what.id;
  await read(null, null);
  ui.viewer.scrollIntoView({ block: "nearest" });
}

// The run's events as plot markers; the plots are drawn again once they are here.
async function loadMarkers(what) {
  try {
    const answer = await api(what.base + "/events");
    what.markers = answer.events.map(markerOf).filter(Boolean);
    ui.viewer.dataset.markers = String(what.markers.length);
    if (opened === what) drawPlots();
  } catch (e) {
    if (opened === what) say("no markers: the run's events cannot be read (" + e.message + ")", true);
  }
}

// Reads [start, end] (null: the whole length) of the shown channels, min/max reduced by the gateway.
async function read(start, end) {
  const what = opened;
  const mine = ++generation;
  const query = new URLSearchParams({ points: String(POINTS) });
  if (start !== null) query.set("start", start.toFixed(6));
  if (end !== null) query.set("end", end.toFixed(6));
  // every channel at first (to know them); then only those shown
  if (what.channels.length) query.set("channels", what.shown.filter((c) => what.channels.includes(c)).join(","));
  say("reading…");
  try {
    const answer = await api(what.base + "/series?" + query.toString().replace(/%2C/g, ","));
    if (mine !== generation) return;
    if (!what.channels.length) {
      what.channels = answer.channels;
      what.shown = what.shown.filter((c) => answer.channels.includes(c));
      if (!what.shown.length) what.shown = answer.channels.slice(0, 4);
      fillPicker();
    }
    what.answer = answer;
    ui.viewer.dataset.start = String(answer.start);
    ui.viewer.dataset.end = String(answer.end);
    ui.viewer.dataset.reads = String(Number(ui.viewer.dataset.reads || 0) + 1);
    const whole = answer.first !== null && answer.start <= answer.first && answer.end >= answer.last;
    const bucket = (answer.end - answer.start) / Math.max(1, answer.t.length);
    say((whole ? "whole length " : "zoomed ") + hms(answer.start) + " – " + hms(answer.end) + " (" +
      duration(answer.end - answer.start) + "; " + answer.n_source + " samples in " + answer.t.length +
      " buckets of " + fmt(bucket * 1000) + " ms)");
    ui.whole.disabled = whole;
    drawPlots();
  } catch (e) {
    if (mine === generation) say("cannot read: " + e.message, true);
  }
}

function fillPicker() {
  ui.picker.textContent = "";
  for (const name of opened.channels) {
    const label = el("label");
    const box = el("input");
    box.type = "checkbox";
    box.value = name;
    box.checked = opened.shown.includes(name);
    box.addEventListener("change", () => {
      opened.shown = opened.channels.filter((c) => (c === name ? box.checked : opened.shown.includes(c)));
      const a = opened.answer;
      read(a ? a.start : null, a ? a.end : null);
    });
    label.append(box, " " + name);
    ui.picker.append(label);
  }
}

function drawPlots() {
  const what = opened;
  for (const p of ui.plotted) p.u.destroy();
  ui.plotted = [];
  ui.plots.textContent = "";
  if (!what || !what.answer) return;
  const units = {};
  for (const c of ((store.get("config") || {}).channels) || []) units[c.name] = c.unit || "";
  const range = [what.answer.start, what.answer.end];
  for (const name of what.shown.filter((c) => what.answer.channels.includes(c))) {
    const div = el("div", "plot");
    div.dataset.channel = name;
    ui.plots.append(div);
    const u = bandPlot(div, {
      title: name,
      unit: units[name],
      limits: limits[name] || [],
      markers: () => what.markers,
      xRange: () => range,
      onZoom: (t0, t1) => read(t0, t1),
      width: Math.max(200, div.clientWidth - 8),
      height: PLOT_HEIGHT,
    });
    u.setData(columns(what.answer, name));
    ui.plotted.push({ u, div });
  }
}

// A download with this page's token: fetched, then saved from memory.
async function download(format) {
  const a = opened && opened.answer;
  if (!a) return;
  // Parquet: the file as it is; CSV: the span and channels shown
  const query = new URLSearchParams({ start: a.start.toFixed(6), end: a.end.toFixed(6), channels: opened.shown.join(",") });
  const path = format === "csv" ? opened.base + "/csv?" + query.toString().replace(/%2C/g, ",")
    : opened.base + (opened.kind === "run" ? "/samples" : "/download");
  say("downloading " + format + "…");
  try {
    const r = await fetch(path, {
      headers: token() ? { Authorization: "Bearer " + token() } : {},
    });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const name = (/filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "") || [])[1] || "download." + format;
    const link = el("a");
    link.href = URL.createObjectURL(await r.blob());
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    say("downloaded " + name);
  } catch (e) {
    say("download failed: " + e.message, true);
  }
}

// -- page --------------------------------------------------------------------------------------------

function table(headings, id) {
  const t = el("table", "review-table");
  const head = el("tr");
  for (const h of headings) head.append(el("th", "", h));
  const thead = el("thead");
  thead.append(head);
  const body = el("tbody");
  body.id = id;
  t.append(thead, body);
  return [t, body];
}

export function mount(root) {
  const bar = el("div", "review-bar");
  bar.append(button("refresh", "list the runs and recordings again", refresh));
  const [runsTable, runsBody] = table(["run", "started", "duration", "result", ""], "runs");
  const [recTable, recBody] = table(["recording", "size", ""], "recordings");
  ui.runs = runsBody;
  ui.recordings = recBody;
  const lists = el("div", "review-lists");
  const runsBox = el("div", "review-list");
  runsBox.append(el("h3", "", "Runs"), runsTable);
  const recBox = el("div", "review-list");
  recBox.append(el("h3", "", "Recordings"), recTable);
  lists.append(runsBox, recBox);

  ui.report = el("div", "review-report");
  ui.report.id = "report";
  ui.report.hidden = true;
  const reportBar = el("div", "review-bar");
  ui.reportTitle = el("h3", "", "Report");
  ui.reportStatus = el("span", "muted");
  ui.reportStatus.setAttribute("role", "status");
  reportBar.append(ui.reportTitle, ui.reportStatus, button("close", "", () => { ui.report.hidden = true; }));
  ui.reportFrame = el("iframe");
  ui.reportFrame.title = "run report";
  ui.reportFrame.setAttribute("sandbox", "");
  ui.report.append(reportBar, ui.reportFrame);

  ui.viewer = el("div", "review-viewer");
  ui.viewer.id = "viewer";
  ui.viewer.hidden = true;
  const viewerBar = el("div", "review-bar");
  ui.viewerTitle = el("h3");
  ui.whole = button("whole length", "zoom out to the whole recording", () => read(null, null));
  ui.whole.id = "viewer-whole";
  const parquet = button("Parquet", "download the file as it is", () => download("parquet"));
  parquet.id = "download-parquet";
  const csv = button("CSV", "download the span shown, channels shown, as CSV", () => download("csv"));
  csv.id = "download-csv";
  viewerBar.append(ui.viewerTitle, ui.whole, el("span", "muted", "download:"), parquet, csv,
    button("close", "", () => { ui.viewer.hidden = true; opened = null; }));
  ui.picker = el("div", "review-picker");
  ui.status = el("span", "muted review-status");
  ui.status.id = "viewer-status";
  ui.status.setAttribute("role", "status");
  ui.plots = el("div", "plots");
  ui.plotted = [];
  ui.viewer.append(viewerBar, ui.picker, ui.status, el("p", "muted", "drag over a plot to zoom: the span is read again in finer detail"), ui.plots);

  root.append(runBar(), bar, lists, ui.report, ui.viewer);
  on("authenticated", refresh);
  on("run_response", onRunAnswer);
  // the logger finished a run's files, or its report: list it as the logger has it now
  on("event", (m) => ["run_recorded", "run_report"].includes((m.data || {}).kind) && refresh());
  store.watch("run", showRun);
  watchCommandBlock(showRun);
  store.watch("config", (config) => (limits = limitsByChannel(config)));
  window.addEventListener("resize", () => {
    for (const p of ui.plotted) p.u.setSize({ width: Math.max(200, p.div.clientWidth - 8), height: PLOT_HEIGHT });
  });
}
