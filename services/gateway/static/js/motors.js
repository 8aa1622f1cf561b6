// Motors panel: `motor_state` ({connected, motors: [{id, name, position_deg, moving, target_deg}]}).
import { store } from "./store.js";
import { deg, el } from "./util.js";

function render(list, s) {
  list.textContent = "";
  if (!s) {
    list.append(el("li", "muted", "no motor state yet"));
    return;
  }
  if (!s.connected) list.append(el("li", "alarm", "motor controller not connected"));
  for (const m of s.motors || []) {
    const where = deg(m.position_deg);
    const moving = m.moving ? " → " + deg(m.target_deg) + " (moving)" : "";
    list.append(el("li", "", (m.name || "motor " + m.id) + ": " + where + moving));
  }
}

export function mount(root) {
  const list = el("ul", "motors");
  root.append(list);
  render(list, null);
  store.watch("motors", (s) => render(list, s));
}
