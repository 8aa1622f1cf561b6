// Controls panel: the system state, Arm, Disarm and Abort, always visible, never behind a
// confirmation but Arm's; keyboard shortcuts that work anywhere on the page (docs in the page).
import { on, send } from "./connection.js";
import { commandBlock, store, watchCommandBlock } from "./store.js";
import { answer, clock, el } from "./util.js";

function button(id, label, cls, title) {
  const b = el("button", cls, label);
  b.id = id;
  b.type = "button";
  b.dataset.title = title;
  b.title = title;
  return b;
}

// Sends `system_mode`; says why not when it cannot be sent.
export function command(mode) {
  const blocked = commandBlock();
  const isOperator = store.get("identity") && store.get("identity").role === "operator";
  // Abort goes out whenever an operator is connected, stale data or not.
  if (blocked && !(mode === "abort" && isOperator && store.get("connection") === "open")) {
    answer(mode.toUpperCase() + " NOT SENT: " + blocked + (mode === "abort" ? " — use the hardware E-stop" : ""), false);
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

function showState(stateBox, reasonBox, s) {
  const state = (s && s.state) || "?";
  stateBox.textContent = state.toUpperCase();
  stateBox.className = "state " + state;
  const seq = s && s.sequence;
  const running = seq ? "sequence " + seq.name + " step " + seq.step + "/" + seq.steps + " · " : "";
  reasonBox.textContent = running + ((s && s.reason) || "") + (s && s.ts ? " · " + clock(s.ts) : "");
}

export function mount(root) {
  const stateBox = el("div", "state", "?");
  stateBox.id = "state";
  const reasonBox = el("div", "muted reason");
  reasonBox.id = "reason";
  const arm = button("arm", "Arm", "cmd", "arm the stand");
  const disarm = button("disarm", "Disarm", "cmd", "disarm the stand");
  const abort = button("abort", "Abort", "", "system_mode abort: actuation runs the abort sequence");
  const buttons = el("div", "commands");
  buttons.append(arm, disarm, abort);
  root.append(el("div", "", ""), buttons);
  root.firstChild.append(stateBox, reasonBox);

  arm.addEventListener("click", () => command("arm"));
  disarm.addEventListener("click", () => command("disarm"));
  abort.addEventListener("click", () => command("abort"));
  on("system_mode_response", onCommandAnswer);
  store.watch("system", (s) => showState(stateBox, reasonBox, s));

  // Buttons follow commandBlock(); Abort stays clickable unless the page is a viewer's, only to say
  // that it cannot be sent.
  const update = () => {
    const blocked = commandBlock();
    const id = store.get("identity");
    arm.disabled = disarm.disabled = Boolean(blocked);
    abort.disabled = Boolean(id) && id.role !== "operator";
    for (const b of [arm, disarm, abort]) b.title = (b.disabled && blocked) || b.dataset.title;
  };
  watchCommandBlock(update);
}
