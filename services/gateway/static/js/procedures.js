// Procedure panel: the running sequence (its steps with the current one, phase, T-time, time to the
// next step, hold reason, Hold / Resume), the go/no-go checklist, and every sequence with its Start
// button. Sequences and their steps come from `GET /api/sequences`, progress from the system state's
// `sequence` (docs/protocol.md, `rcs/state/system`), the checklist from the WebSocket's `checklist`
// (asked every 2 s: actuation judges it when asked). Commands on the WebSocket: `sequence {name}`, `system_mode hold {reason}` / `resume` (their
// answers: `sequence_response` here, `system_mode_response` in controls.js).
import { standNow } from "./clock.js";
import { api, on, send } from "./connection.js";
import { commandBlock, store, watchCommandBlock } from "./store.js";
import { answer, clock, el } from "./util.js";

const TICK_MS = 100; // the clocks are read to a tenth of a second
const CHECKLIST_EVERY_MS = 2000;

// -- formatting ------------------------------------------------------------------------------------

// T-time: "T−00:07.0" before T-0 (`after` false), "T+00:03.2" after it.
export function tTime(t, after) {
  if (t === null || t === undefined || !Number.isFinite(t)) return "T —";
  const a = Math.abs(t);
  const minutes = Math.floor(a / 60);
  const seconds = (a - minutes * 60).toFixed(1).padStart(4, "0");
  return (after ? "T+" : "T−") + String(minutes).padStart(2, "0") + ":" + seconds;
}

function secondsText(s) {
  return Number.isFinite(s) ? s.toFixed(1) + " s" : "—";
}

// -- the running sequence's clocks -------------------------------------------------------------------

// T-time now, extrapolated from the state's `ts` by the stand's clock. Not while held (the clock
// stands), nor before T-0 while a step waits for a condition (the estimate counts fixed waits only).
export function tNow(seq, ts, now) {
  if (!seq) return null;
  if (seq.t0 !== null && seq.t0 !== undefined) return now - seq.t0;
  if (seq.t_s === null || seq.t_s === undefined) return null;
  if (seq.held || seq.waiting_for) return seq.t_s;
  return Math.min(seq.t_s + (now - ts), 0);
}

export function nextStepIn(seq, ts, now) {
  if (!seq || seq.held || seq.next_step_in_s === null || seq.next_step_in_s === undefined) return null;
  return Math.max(0, seq.next_step_in_s - (now - ts));
}

// -- why a control is disabled ------------------------------------------------------------------------

// Why no sequence may start now (said once for the whole list), then why this one may not.
function startsBlock(system) {
  const blocked = commandBlock();
  if (blocked) return blocked;
  if (system && system.state === "aborting") return "aborting: only abort is accepted";
  if (system && system.sequence) return system.sequence.name + " is running: one sequence at a time";
  return "";
}

function startBlock(sequence, system) {
  const all = startsBlock(system);
  if (all) return all;
  if (sequence.requires_armed && (!system || system.state !== "armed")) {
    return "arm first: " + sequence.name + " requires an armed stand";
  }
  return "";
}

function holdBlock(system) {
  const blocked = commandBlock();
  if (blocked) return blocked;
  const seq = system && system.sequence;
  if (!seq) return "no sequence is running";
  if (seq.abort) return "the abort sequence cannot be held";
  if (seq.held) return "already held";
  if (seq.t0 !== null && seq.t0 !== undefined) return "past T-0: only abort stops it";
  return "";
}

function resumeBlock(system) {
  const blocked = commandBlock();
  if (blocked) return blocked;
  const seq = system && system.sequence;
  return seq && seq.held ? "" : "nothing is held";
}

// A button that says why it is disabled: in its title and in the text `why` (aria-describedby).
function gate(button, why, reason) {
  button.disabled = Boolean(reason);
  button.title = reason || button.dataset.title || "";
  if (why) why.textContent = reason;
}

function commandButton(label, cls, title) {
  const b = el("button", cls, label);
  b.type = "button";
  b.dataset.title = title;
  return b;
}

let ids = 0;
function describedBy(button, why) {
  why.id = "why-" + ++ids;
  button.setAttribute("aria-describedby", why.id);
}

// -- commands ---------------------------------------------------------------------------------------

function command(what, message) {
  if (send(message)) answer(what + " sent, waiting for actuation…");
  else answer(what + " NOT SENT: not connected to the gateway", false);
}

function onSequenceAnswer(m) {
  if (m.success) answer("START " + m.name + " accepted", true);
  else answer("START " + m.name + " FAILED: " + (m.reason || "no reason given"), false);
}

// -- the panel ----------------------------------------------------------------------------------------

function runningView() {
  const box = el("div", "proc-running");
  const title = el("div", "proc-title");
  const held = el("div", "proc-held");
  held.setAttribute("role", "alert");
  const clocks = el("div", "proc-clocks");
  const tclock = el("div", "tclock", "T —");
  tclock.setAttribute("aria-label", "T-time");
  const next = el("div", "proc-next");
  clocks.append(tclock, next);
  const controls = el("div", "proc-controls");
  const reason = el("input", "hold-reason");
  reason.type = "text";
  reason.maxLength = 200;
  reason.placeholder = "hold reason (optional)";
  reason.setAttribute("aria-label", "Hold reason");
  const hold = commandButton("Hold", "cmd hold", "hold the running sequence before its next step (not after T-0)");
  const resume = commandButton("Resume", "cmd resume", "go on with the held sequence where it stopped");
  const why = el("div", "why muted");
  describedBy(hold, why);
  resume.setAttribute("aria-describedby", why.id);
  controls.append(reason, hold, resume);
  const steps = el("ol", "proc-steps");
  steps.setAttribute("aria-label", "steps");
  box.append(title, held, clocks, controls, why, steps);
  hold.addEventListener("click", () => {
    const text = reason.value.trim();
    command("HOLD", text ? { type: "system_mode", mode: "hold", reason: text } : { type: "system_mode", mode: "hold" });
    reason.value = "";
  });
  resume.addEventListener("click", () => command("RESUME", { type: "system_mode", mode: "resume" }));
  return { box, title, held, tclock, next, hold, resume, why, steps, stepsOf: null };
}

function renderSteps(view, seq, sequence) {
  const key = seq ? seq.name : null;
  if (view.stepsOf !== key) {
    view.stepsOf = key;
    view.steps.textContent = "";
    for (const step of (sequence && sequence.steps) || []) {
      const li = el("li", "");
      li.dataset.step = step.step;
      const head = el("span", "step-head", step.step + (step.t0 ? " · T-0" : "") + (step.phase ? " · " + step.phase : ""));
      li.append(head, el("span", "step-text", step.text));
      view.steps.append(li);
    }
  }
  for (const li of view.steps.children) {
    const n = Number(li.dataset.step);
    const state = !seq ? "" : n < seq.step ? "done" : n === seq.step ? "current" : "todo";
    li.className = state;
    if (state === "current") li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  }
}

function renderRunning(view, system, sequences) {
  const seq = system && system.sequence;
  view.box.classList.toggle("idle", !seq);
  if (!seq) {
    view.title.textContent = "No sequence running" + (system && system.reason ? " · " + system.reason : "");
    view.held.textContent = "";
    view.held.hidden = true;
    renderSteps(view, null, null);
    return;
  }
  const kind = seq.abort ? "abort sequence" : seq.procedure ? "procedure" : "sequence";
  view.title.textContent = kind + " " + seq.name + " · step " + seq.step + "/" + seq.steps +
    " · phase " + (seq.phase || "—") + (seq.started ? " · started " + clock(seq.started) : "");
  view.held.hidden = !seq.held;
  view.held.textContent = seq.held ? "HELD: " + seq.held : "";
  renderSteps(view, seq, sequences.find((s) => s.name === seq.name));
}

function tick(view) {
  const system = store.get("system");
  const seq = system && system.sequence;
  if (!seq) {
    view.tclock.textContent = "T —";
    view.next.textContent = "";
    return;
  }
  const now = standNow();
  const after = seq.t0 !== null && seq.t0 !== undefined;
  view.tclock.textContent = tTime(tNow(seq, system.ts, now), after);
  view.tclock.classList.toggle("after-t0", after);
  const left = nextStepIn(seq, system.ts, now);
  const waiting = seq.waiting_for ? "waiting for " + seq.waiting_for : "";
  if (seq.held) view.next.textContent = "held" + (waiting ? " · " + waiting : "");
  else if (left === null) view.next.textContent = waiting || "";
  else if (waiting) view.next.textContent = waiting + " · timeout in " + secondsText(left);
  else view.next.textContent = "next step in " + secondsText(left);
}

// -- checklist -----------------------------------------------------------------------------------------

function renderChecklist(summary, list) {
  const c = store.get("checklist");
  list.textContent = "";
  if (!c || c.unavailable) {
    summary.className = "check-summary";
    summary.textContent = "go/no-go checklist not available" + (c ? ": " + c.unavailable : "");
    return;
  }
  const items = c.items || [];
  const failing = items.filter((i) => !i.ok);
  summary.className = "check-summary " + (c.ok ? "go" : "nogo");
  summary.textContent = c.ok ? "GO: every item ready for arming"
    : "NO-GO: " + failing.length + " of " + items.length + " not ready";
  for (const item of items) {
    const li = el("li", item.ok ? "go" : "nogo");
    li.append(el("span", "check-mark", item.ok ? "✓ GO" : "✗ NO-GO"), el("span", "check-label", item.label || item.id),
      el("span", "check-reason", item.reason || ""));
    if (!item.ok && item.tare && item.tare.length) li.append(tareButton(item.tare));
    list.append(li);
  }
}

// A failing `tare_recent` item offers its tare: zero those channels from their last 2 s (idle only;
// actuation refuses otherwise, and the answer says why). Tare only at true zero (docs/safety.md §2.2).
function tareButton(channels) {
  const b = commandButton("Tare " + channels.join(", "), "cmd tare",
    "zero " + channels.join(", ") + " from their last 2 s: only with nothing on the load cell and the chamber empty");
  const system = store.get("system");
  gate(b, null, commandBlock() || (system && system.state !== "idle" ? "tare only while idle" : ""));
  b.addEventListener("click", () => command("TARE " + channels.join(", "), { type: "tare", channels }));
  return b;
}

function onTareAnswer(m) {
  const what = "TARE " + (m.channels || []).join(", ");
  if (m.success) answer(what + " done", true);
  else answer(what + " FAILED: " + (m.reason || "no reason given"), false);
  askChecklist();
}

// The checklist is actuation's judgement of the moment (no push): asked for over the WebSocket
// (`checklist`, answered `checklist_response {success, ok, items, ts}`) every CHECKLIST_EVERY_MS.
function askChecklist() {
  if (store.get("identity")) send({ type: "checklist" });
}

function onChecklist(m) {
  store.set("checklist", m.success ? { ok: m.ok, items: m.items || [], ts: m.ts } : { unavailable: m.reason });
}

// -- sequences ------------------------------------------------------------------------------------------

function sequenceRows(table, sequences) {
  table.textContent = "";
  const rows = [];
  // procedures first (the hot fire), then the others in config order; the abort sequence is ABORT's
  const shown = sequences.filter((x) => !x.abort && x.procedure).concat(sequences.filter((x) => !x.abort && !x.procedure));
  for (const s of shown) {
    const li = el("li", "seq");
    const start = commandButton("Start " + s.name, "cmd start", "start " + s.name);
    const why = el("span", "why muted");
    describedBy(start, why);
    start.setAttribute("aria-describedby", "why-starts " + why.id);
    const tags = [s.procedure ? "procedure" : "", s.requires_armed ? "needs armed" : "unarmed"].filter(Boolean);
    const info = el("div", "seq-info");
    info.append(el("span", "seq-name", s.name), el("span", "seq-tags", tags.join(" · ")),
      el("span", "seq-desc muted", s.description || ""), why);
    li.append(info, start);
    start.addEventListener("click", () => command("START " + s.name, { type: "sequence", name: s.name }));
    table.append(li);
    rows.push({ sequence: s, start, why });
  }
  return rows;
}

async function loadSequences() {
  try {
    store.set("sequences", (await api("/api/sequences")).sequences);
  } catch (e) {
    answer("could not read the sequences (" + e.message + ")", false);
  }
}

export function mount(root) {
  const blocked = el("div", "why blocked muted");
  blocked.setAttribute("role", "status");
  const view = runningView();
  const check = el("div", "checklist");
  const checkTitle = el("h3", "", "Go / no-go");
  const summary = el("div", "check-summary");
  summary.setAttribute("role", "status");
  const checkList = el("ul", "check-items");
  checkList.setAttribute("aria-label", "go/no-go checklist");
  check.append(checkTitle, summary, checkList);
  const seqTitle = el("h3", "", "Sequences");
  const startsWhy = el("div", "why");
  startsWhy.id = "why-starts";
  const table = el("ul", "sequences");
  table.setAttribute("aria-label", "sequences");
  root.append(blocked, view.box, check, seqTitle, startsWhy, table);

  let rows = [];
  const update = () => {
    const system = store.get("system");
    const sequences = store.get("sequences") || [];
    const block = commandBlock();
    const noStart = startsBlock(system);
    const unarmed = !noStart && (!system || system.state !== "armed");
    blocked.textContent = block ? "Commands disabled: " + block : "";
    startsWhy.textContent = noStart && noStart !== block ? "Start disabled: " + noStart
      : unarmed ? "Sequences that need an armed stand start once it is armed" : "";
    renderRunning(view, system, sequences);
    gate(view.hold, view.why, holdBlock(system));
    gate(view.resume, null, resumeBlock(system));
    if (view.hold.disabled && !view.resume.disabled) view.why.textContent = "";
    if (!system || !system.sequence) view.why.textContent = "";
    for (const row of rows) {
      const reason = startBlock(row.sequence, system);
      gate(row.start, null, reason);
      row.why.textContent = reason && reason !== noStart && !(unarmed && row.sequence.requires_armed) ? reason : "";
    }
    tick(view);
  };
  store.watch("sequences", (sequences) => {
    rows = sequenceRows(table, sequences || []);
    update();
  });
  store.watch("system", update);
  store.watch("checklist", () => renderChecklist(summary, checkList));
  watchCommandBlock(update);
  // (Re)read the sequences and the checklist each time the page is logged in.
  store.watch("identity", (identity) => {
    if (!identity) return;
    loadSequences();
    askChecklist();
  });
  on("checklist_response", onChecklist);
  on("tare_response", onTareAnswer);
  setInterval(askChecklist, CHECKLIST_EVERY_MS);
  on("sequence_response", onSequenceAnswer);
  setInterval(() => tick(view), TICK_MS);
}
