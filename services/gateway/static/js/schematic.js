// Schematic panel: the stand's valves as the STM32 acknowledged them (`valve_state`).
import { store } from "./store.js";
import { clock, el } from "./util.js";

const VALVE_COUNT = 9;

function render(list, cause, valves) {
  list.textContent = "";
  for (let i = 0; i < VALVE_COUNT; i++) {
    // Until actuation publishes a valve state, only the device's bitmask is known: no names.
    const name = valves.names ? valves.names[i] : "valve " + (i + 1);
    const open = valves.bits ? valves.bits[i] === 1 : null;
    const li = el("li", open === null ? "" : open ? "open" : "closed");
    li.append(el("span", "", name), el("b", "", open === null ? "?" : open ? "OPEN" : "closed"));
    list.appendChild(li);
  }
  cause.textContent = valves.cause
    ? "last change: " + valves.cause + " · " + clock(valves.ts)
    : valves.names ? "" : "as the STM32 reports them; names come with the first valve change";
}

export function mount(root) {
  const list = el("ul", "valves");
  list.id = "valves";
  const cause = el("div", "muted");
  cause.id = "valve-cause";
  root.append(list, cause);
  store.watch("valves", (v) => render(list, cause, v));
}
