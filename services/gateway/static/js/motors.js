// Motors panel: each step motor's position, target and whether it moves (`motor_state`:
// {connected, motors: [{id, name, position_deg, moving, target_deg}]}), with a relative move ("Move
// MOTOR1 by", `step_motor_command {motor_id, angle}`) and an absolute one ("Move MOTOR1 to",
// `step_motor_command {motor_id, target}`); actuation answers once the move completed.
import { on, send } from "./connection.js";
import { commandBlock, store, watchCommandBlock } from "./store.js";
import { answer, deg, el } from "./util.js";

// Why a move cannot be sent now ("" when it can): the shared gate, then the stand's own refusals.
function moveBlock() {
  const blocked = commandBlock();
  if (blocked) return blocked;
  const motors = store.get("motors");
  if (!motors || !motors.connected) return "the motor controller is not connected";
  const system = store.get("system");
  if (system && system.state === "aborting") return "aborting: only abort is accepted";
  const seq = system && system.sequence;
  if (seq && seq.procedure && !seq.held) return "procedure " + seq.name + " is running: hold first";
  return "";
}

function field(label, id, placeholder) {
  const input = el("input", "motor-input");
  input.type = "number";
  input.step = "any";
  input.id = id;
  input.placeholder = placeholder;
  input.setAttribute("aria-label", label);
  input.inputMode = "decimal";
  return input;
}

function card(m) {
  const name = m.name || "motor " + m.id;
  const li = el("li", "motor");
  li.dataset.motor = m.id;
  const head = el("div", "motor-head");
  const position = el("span", "motor-position");
  position.setAttribute("aria-label", name + " position");
  const target = el("span", "motor-target muted");
  head.append(el("span", "motor-name", name), position, target);
  const by = field(name + " relative move in degrees", "motor-" + m.id + "-by", "± degrees");
  const to = field(name + " target position in degrees", "motor-" + m.id + "-to", "degrees");
  const moveBy = el("button", "cmd move", "Move by");
  moveBy.type = "button";
  moveBy.setAttribute("aria-label", "Move " + name + " by the relative angle");
  const moveTo = el("button", "cmd move", "Move to");
  moveTo.type = "button";
  moveTo.setAttribute("aria-label", "Move " + name + " to the target position");
  const rows = el("div", "motor-moves");
  rows.append(by, moveBy, to, moveTo);
  li.append(head, rows);

  const go = (input, key, what) => {
    const value = Number(input.value);
    if (input.value.trim() === "" || !Number.isFinite(value)) {
      answer(name + ": enter a number of degrees " + what, false);
      input.focus();
      return;
    }
    const reason = moveBlock();
    if (reason) {
      answer(name + " MOVE NOT SENT: " + reason, false);
      return;
    }
    send({ type: "step_motor_command", motor_id: m.id, [key]: value });
    answer(name + " move " + what + " " + deg(value) + " sent, waiting for the motor…");
  };
  moveBy.addEventListener("click", () => go(by, "angle", "by"));
  moveTo.addEventListener("click", () => go(to, "target", "to"));
  by.addEventListener("keydown", (e) => e.key === "Enter" && go(by, "angle", "by"));
  to.addEventListener("keydown", (e) => e.key === "Enter" && go(to, "target", "to"));
  return { li, position, target, buttons: [moveBy, moveTo], inputs: [by, to] };
}

function onAnswer(m) {
  const motors = (store.get("motors") || {}).motors || [];
  const found = motors.find((x) => x.id === m.motor_id);
  const name = found ? found.name : "motor " + m.motor_id;
  const at = Number.isFinite(m.position_deg) ? ": at " + deg(m.position_deg) : "";
  if (m.success) answer(name + " move done" + at, true);
  else answer(name + " MOVE FAILED: " + (m.response || m.reason || "no reason given"), false);
}

export function mount(root) {
  const status = el("div", "motor-status muted");
  status.setAttribute("role", "status");
  const list = el("ul", "motors");
  root.append(status, list);
  let cards = new Map(); // id -> card

  const update = () => {
    const s = store.get("motors");
    const reason = moveBlock();
    status.textContent = !s ? "no motor state yet" : !s.connected ? "motor controller not connected"
      : reason ? "Moves disabled: " + reason : "";
    status.className = "motor-status " + (s && !s.connected ? "alarm" : "muted");
    const motors = (s && s.motors) || [];
    if (motors.map((m) => m.id).join() !== [...cards.keys()].join()) {
      list.textContent = "";
      cards = new Map(motors.map((m) => [m.id, card(m)]));
      for (const c of cards.values()) list.append(c.li);
    }
    for (const m of motors) {
      const c = cards.get(m.id);
      c.position.textContent = deg(m.position_deg);
      c.target.textContent = m.moving ? "moving → " + deg(m.target_deg) : "stopped" +
        (Number.isFinite(m.target_deg) ? " · target " + deg(m.target_deg) : "");
      c.li.classList.toggle("moving", Boolean(m.moving));
      for (const b of c.buttons) {
        b.disabled = Boolean(reason);
        b.title = reason;
      }
    }
  };
  store.watch("motors", update);
  store.watch("system", update);
  watchCommandBlock(update);
  on("step_motor_response", onAnswer);
  update();
}
