// Alarms: a banner while anything is unacknowledged, the list of alarms with their Acknowledge
// buttons, and an audible alert. Alarms are actuation's `rcs/state/alarms` (warnings and red-line
// trips; acknowledged with `alarm_ack {id}`, audited). Aborts are not alarms on the bus: each one seen
// (the `state` event into `aborting`, live or in `GET /api/events`) is shown here too until this page's
// operator (or viewer) acknowledges it; that acknowledgement is kept in this browser (localStorage),
// not audited.
//
// Sound: Web Audio, generated (no file fetched); browsers start audio only after a user gesture, so
// the first click or key on the page enables it. "Mute" silences the current alarms; a new one sounds
// again. `document.documentElement.dataset.alarmSound` says what the sound does (sounding, muted,
// quiet, blocked: not yet allowed by the browser) for people debugging and for the browser tests.
import { api, on, send } from "./connection.js";
import { commandBlock, store, watchCommandBlock } from "./store.js";
import { answer, clock, el, fmt } from "./util.js";

const ABORTS_KEY = "rcs.abortsAcknowledged";
const BEEP_EVERY_MS = 1500;
const ABORTS_REMEMBERED = 20;

let audio = null; // AudioContext, once a gesture allowed it
let muted = false;
let mutedFor = new Set(); // the unacknowledged keys when Mute was pressed
let beeper = null;

// -- aborts --------------------------------------------------------------------------------------

function acknowledgedAborts() {
  try {
    return JSON.parse(localStorage.getItem(ABORTS_KEY) || "[]");
  } catch (e) {
    return [];
  }
}

function acknowledgeAbort(ts) {
  const seen = acknowledgedAborts().concat([ts]).slice(-ABORTS_REMEMBERED);
  localStorage.setItem(ABORTS_KEY, JSON.stringify(seen));
  store.set("aborts", (store.get("aborts") || []).filter((a) => a.ts !== ts));
}

function onEvent(e) {
  if (!e || e.kind !== "state" || e.new !== "aborting" || !Number.isFinite(e.ts)) return;
  if (acknowledgedAborts().includes(e.ts)) return;
  const aborts = store.get("aborts") || [];
  if (aborts.some((a) => a.ts === e.ts)) return;
  store.set("aborts", aborts.concat([{ ts: e.ts, reason: e.reason || "" }]).slice(-ABORTS_REMEMBERED));
}

async function loadAborts() {
  try {
    const recent = (await api("/api/events?limit=200")).events || [];
    for (const e of recent.reverse()) onEvent(e);
  } catch (e) {
    // live events still arrive over /ws
  }
  document.documentElement.dataset.abortsRead = "yes"; // the recent ones are in (for the browser tests)
}

// -- what is unacknowledged ------------------------------------------------------------------------

function alarmList() {
  const a = store.get("alarms");
  return (a && a.alarms) || [];
}

function unacknowledged(alarm) {
  return alarm.state === "active-unacknowledged" || alarm.state === "cleared-unacknowledged";
}

// One key per thing that wants attention: alarm ids and abort times.
function pendingKeys() {
  return alarmList().filter(unacknowledged).map((a) => "alarm " + a.id)
    .concat((store.get("aborts") || []).map((a) => "abort " + a.ts));
}

// -- sound -----------------------------------------------------------------------------------------

function unlockAudio() {
  if (audio && audio.state === "running") return;
  if (!audio) {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    audio = new Context();
  }
  if (audio.state === "suspended") audio.resume().then(updateSound, () => {});
  updateSound();
}

// Two short tones, high then low: unlike any other sound in a control room's browser.
function beep() {
  if (!audio || audio.state !== "running") return;
  const start = audio.currentTime;
  [[880, 0], [660, 0.2]].forEach(([hz, at]) => {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = "square";
    osc.frequency.value = hz;
    gain.gain.setValueAtTime(0.0001, start + at);
    gain.gain.exponentialRampToValueAtTime(0.2, start + at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + at + 0.18);
    osc.connect(gain).connect(audio.destination);
    osc.start(start + at);
    osc.stop(start + at + 0.2);
  });
}

function soundState() {
  const pending = pendingKeys();
  if (!pending.length) return "quiet";
  if (muted && pending.every((k) => mutedFor.has(k))) return "muted";
  return audio && audio.state === "running" ? "sounding" : "blocked";
}

function updateSound() {
  const pending = pendingKeys();
  if (muted && !pending.every((k) => mutedFor.has(k))) muted = false; // something new: sound again
  const state = soundState();
  document.documentElement.dataset.alarmSound = state;
  if (state === "sounding" && !beeper) {
    beep();
    beeper = setInterval(beep, BEEP_EVERY_MS);
  } else if (state !== "sounding" && beeper) {
    clearInterval(beeper);
    beeper = null;
  }
  if (store.get("alarmSound") !== state) store.set("alarmSound", state);
}

// -- the panel -------------------------------------------------------------------------------------

function alarmText(a) {
  const kind = a.kind === "redline" ? "RED-LINE" : "WARNING";
  const value = a.value === null || a.value === undefined ? "" : " · value " + fmt(a.value);
  return kind + " " + a.channel + " " + a.direction + " " + Number(a.limit.toPrecision(6)) + value;
}

const STATE_TEXT = {
  "active-unacknowledged": "active, not acknowledged",
  "active-acknowledged": "active, acknowledged",
  "cleared-unacknowledged": "cleared, not acknowledged",
};

function ackButton(label, why) {
  const b = el("button", "cmd ack", "Acknowledge");
  b.type = "button";
  b.setAttribute("aria-label", label);
  b.title = why || label;
  b.disabled = Boolean(why);
  return b;
}

// The list is rebuilt only when what it shows changed: a button replaced between a press and its
// release would swallow the click.
let shown = "";

function render(parts) {
  const block = commandBlock();
  const alarms = alarmList();
  const aborts = store.get("aborts") || [];
  const state = store.get("alarmSound") || "quiet";
  const now = JSON.stringify([block, alarms, aborts, state]);
  if (now === shown) return;
  shown = now;
  const pending = alarms.filter(unacknowledged);
  const attention = pending.length + aborts.length;
  const redline = pending.some((a) => a.kind === "redline") || aborts.length > 0;
  parts.banner.hidden = attention === 0;
  parts.banner.className = "alarm-banner " + (redline ? "severe" : "warning");
  parts.headline.textContent = attention === 0 ? ""
    : attention + (attention === 1 ? " alarm" : " alarms") + " to acknowledge: " +
      aborts.map((a) => "ABORT").concat(pending.map(alarmText)).slice(0, 3).join(" · ");
  parts.why.textContent = block && pending.length ? "Acknowledge disabled: " + block : "";
  parts.list.textContent = "";
  for (const a of aborts) {
    const li = el("li", "alarm-item severe");
    // this console's own record, no command: a viewer may acknowledge it too, even while disconnected
    const ack = ackButton("Acknowledge abort at " + clock(a.ts), "");
    ack.addEventListener("click", () => {
      acknowledgeAbort(a.ts);
      answer("abort at " + clock(a.ts) + " acknowledged (on this console)", true);
    });
    li.append(el("span", "alarm-what", "ABORT " + clock(a.ts)), el("span", "alarm-detail", a.reason), ack);
    parts.list.append(li);
  }
  for (const a of alarms) {
    const li = el("li", "alarm-item " + (a.kind === "redline" ? "severe" : "warning") + (unacknowledged(a) ? "" : " acked"));
    const detail = STATE_TEXT[a.state] + " · raised " + clock(a.raised_ts) +
      (a.cleared_ts ? " · cleared " + clock(a.cleared_ts) : "") +
      (a.acknowledged_by ? " · acknowledged by " + a.acknowledged_by : "");
    li.append(el("span", "alarm-what", alarmText(a)), el("span", "alarm-detail", detail));
    if (unacknowledged(a)) {
      const ack = ackButton("Acknowledge " + a.key, block);
      ack.addEventListener("click", () => {
        send({ type: "alarm_ack", id: a.id });
        answer("ACKNOWLEDGE " + a.key + " sent…");
      });
      li.append(ack);
    }
    parts.list.append(li);
  }
  parts.list.hidden = !parts.list.children.length;
  parts.mute.hidden = state === "quiet";
  parts.mute.setAttribute("aria-pressed", String(state === "muted"));
  parts.mute.textContent = state === "muted" ? "Sound muted" : state === "blocked" ? "Enable sound" : "Mute";
  parts.mute.title = state === "blocked" ? "the browser allows sound after a click: click to hear alarms"
    : "silence the alarm sound until a new alarm is raised";
}

export function mount(root) {
  const banner = el("div", "alarm-banner");
  banner.setAttribute("role", "alert");
  const headline = el("span", "alarm-headline");
  const mute = el("button", "cmd mute", "Mute");
  mute.type = "button";
  mute.setAttribute("aria-label", "Mute alarm sound");
  const why = el("span", "why");
  banner.append(headline, mute, why);
  const list = el("ul", "alarm-list");
  list.setAttribute("aria-label", "alarms");
  root.append(banner, list);
  // stays in view under the (sticky) header
  const header = document.querySelector("header");
  if (header && window.ResizeObserver) {
    new ResizeObserver(() => { root.style.top = header.offsetHeight + "px"; }).observe(header);
  }
  const parts = { banner, headline, mute, why, list };

  mute.addEventListener("click", () => {
    if (store.get("alarmSound") === "blocked") {
      unlockAudio();
      return;
    }
    muted = !muted;
    mutedFor = new Set(muted ? pendingKeys() : []);
    updateSound();
  });
  // Audio may start only after a user gesture: the first one on the page enables it.
  for (const kind of ["pointerdown", "keydown"]) {
    document.addEventListener(kind, unlockAudio, { capture: true, passive: true });
  }
  unlockAudio(); // allowed at once where the browser's autoplay policy permits it

  const refresh = () => {
    updateSound();
    render(parts);
  };
  store.watch("alarms", refresh);
  store.watch("aborts", refresh);
  store.watch("alarmSound", () => render(parts));
  watchCommandBlock(refresh);
  store.watch("identity", (identity) => identity && loadAborts());
  on("event", (m) => onEvent(m.data));
  on("alarm_ack_response", (m) => {
    if (m.success) answer("alarm " + m.id + " acknowledged", true);
    else answer("ACKNOWLEDGE REFUSED: " + (m.reason || "no reason given"), false);
  });
  refresh();
}
