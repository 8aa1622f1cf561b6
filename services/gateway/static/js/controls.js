// Controls panel: the system state, Arm, Disarm and Abort. Always visible (the header is sticky);
// only Arm asks for a confirmation, which names its consequences; Disarm and Abort never do.
// Keyboard shortcuts, anywhere on the page (even in a text field or a dialog):
//   Alt+A  Abort (also the Pause/Break key)     Alt+R  Arm (opens its confirmation)     Alt+S  Disarm
import { cancelConfirmation, confirmAction } from "./confirm.js";
import { on, send } from "./connection.js";
import { commandBlock, store, watchCommandBlock } from "./store.js";
import { answer, clock, el } from "./util.js";

const ARM_CONSEQUENCES =
  "Armed, the stand lets the isolation valves and the igniter open and sequences run. The red-lines " +
  "watch the lines, and the deadman aborts if no operator console sends its heartbeat for 2 s: keep " +
  "this page open. Abort (Alt+A) is always available.";

function button(id, label, cls, title, keys) {
  const b = el("button", cls, label);
  b.id = id;
  b.type = "button";
  b.dataset.title = title + " (" + keys + ")";
  b.title = b.dataset.title;
  b.setAttribute("aria-keyshortcuts", keys);
  return b;
}

function isOperator() {
  const id = store.get("identity");
  return Boolean(id) && id.role === "operator" && store.get("connection") === "open";
}

// Sends `system_mode`; says why not when it cannot be sent. Abort goes out whenever an operator is
// connected, stale data or not.
export function command(mode) {
  const blocked = mode === "abort" ? (isOperator() ? "" : commandBlock() || "not connected as operator") : commandBlock();
  if (blocked) {
    answer(mode.toUpperCase() + " NOT SENT: " + blocked + (mode === "abort" ? " — use the hardware E-stop" : ""), false);
    return;
  }
  send({ type: "system_mode", mode });
  answer(mode.toUpperCase() + " sent, waiting for actuation…");
}

async function arm() {
  const blocked = commandBlock();
  if (blocked) {
    answer("ARM NOT SENT: " + blocked, false);
    return;
  }
  const ok = await confirmAction({ title: "Arm the stand?", text: ARM_CONSEQUENCES, confirm: "Arm" });
  if (ok) command("arm");
}

function onCommandAnswer(m) {
  const what = String(m.mode || "command").toUpperCase();
  if (m.success) answer(what + " accepted" + (m.state ? ": state " + m.state : ""), true);
  else answer(what + " REFUSED: " + (m.reason || "no reason given"), false);
}

function showState(stateBox, reasonBox, s) {
  const state = (s && s.state) || "?";
  stateBox.textContent = state.toUpperCase();
  stateBox.className = "state " + state;
  const seq = s && s.sequence;
  const running = seq ? "sequence " + seq.name + " step " + seq.step + "/" + seq.steps + " · " : "";
  reasonBox.textContent = running + ((s && s.reason) || "") + (s && s.ts ? " · " + clock(s.ts) : "");
}

// Alt+<letter> by the key's position (event.code), so it works whatever the layout and on macOS,
// where Option+letter types a character.
const SHORTCUTS = {
  KeyA: () => command("abort"),
  Pause: () => command("abort"),
  KeyR: arm,
  KeyS: () => command("disarm"),
};

function onKey(ev) {
  const action = ev.code === "Pause" ? SHORTCUTS.Pause : ev.altKey && !ev.ctrlKey && !ev.metaKey && SHORTCUTS[ev.code];
  if (!action || ev.repeat) return;
  ev.preventDefault();
  ev.stopPropagation();
  if (ev.code !== "KeyR") cancelConfirmation(); // Abort and Disarm never wait behind a dialog
  action();
}

export function mount(root) {
  const stateBox = el("div", "state", "?");
  stateBox.id = "state";
  stateBox.setAttribute("role", "status");
  stateBox.setAttribute("aria-label", "system state");
  const reasonBox = el("div", "muted reason");
  reasonBox.id = "reason";
  const armButton = button("arm", "Arm", "cmd", "arm the stand, after a confirmation", "Alt+R");
  const disarm = button("disarm", "Disarm", "cmd", "disarm the stand", "Alt+S");
  const abort = button("abort", "Abort", "", "abort: actuation runs the abort sequence", "Alt+A");
  const buttons = el("div", "commands");
  buttons.append(armButton, disarm, abort);
  const state = el("div", "state-box");
  state.append(stateBox, reasonBox);
  const keys = el("p", "keys muted", "keys: Alt+A abort · Alt+R arm · Alt+S disarm");
  keys.id = "keys";
  const why = el("p", "blocked");
  why.id = "command-block";
  why.setAttribute("role", "status");
  root.append(state, buttons, why, keys);

  armButton.addEventListener("click", arm);
  disarm.addEventListener("click", () => command("disarm"));
  abort.addEventListener("click", () => command("abort"));
  document.addEventListener("keydown", onKey, true); // capture: before any field or dialog sees it
  on("system_mode_response", onCommandAnswer);
  store.watch("system", (s) => showState(stateBox, reasonBox, s));

  // Arm and Disarm follow commandBlock(); Abort stays clickable unless the page is a viewer's, to
  // say that it cannot be sent (and to send it at once once connected).
  watchCommandBlock((blocked) => {
    const id = store.get("identity");
    armButton.disabled = disarm.disabled = Boolean(blocked);
    abort.disabled = Boolean(id) && id.role !== "operator";
    for (const b of [armButton, disarm]) b.title = blocked ? b.id + " unavailable: " + blocked : b.dataset.title;
    abort.title = abort.disabled ? "abort unavailable: " + blocked : abort.dataset.title;
    why.textContent = blocked ? "Commands disabled: " + blocked : "";
    if (blocked) cancelConfirmation();
  });
}
