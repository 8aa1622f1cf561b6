// The gateway's state pushes into the store: one line per message type (docs/protocol.md, "Gateway
// WebSocket"). Panels watch the store keys, not the messages.
import { on } from "./connection.js";
import { store } from "./store.js";

const VALVE_COUNT = 9; // valve patterns are 9 × 0/1 (protocol.md, `valve_command`)

// `valve_state`: the acknowledged pattern, with the valve names in order.
function onValveState(m) {
  const bits = Array.isArray(m.valves) ? m.valves.map(Number)
    : typeof m.bits === "string" ? m.bits.split("").map(Number) : store.get("valves").bits;
  store.set("valves", {
    names: Array.isArray(m.names) ? m.names : store.get("valves").names,
    bits, cause: m.cause || "", ts: m.ts, acknowledged: true,
  });
}

// `stm32_state`: the device's own bitmask stands for the valves until actuation's valve state arrived.
function onStm32State(m) {
  const s = m.data;
  store.set("stm32", s);
  const valves = store.get("valves");
  if (s && Number.isInteger(s.valves) && !valves.acknowledged) {
    const bits = Array.from({ length: VALVE_COUNT }, (_, i) => (s.valves >> i) & 1);
    store.set("valves", Object.assign({}, valves, { bits }));
  }
}

const feeds = {
  system_state: (m) => store.set("system", m.data),
  stm32_state: onStm32State,
  motor_state: (m) => store.set("motors", m.data),
  run_state: (m) => store.set("run", m.data),
  valve_state: onValveState,
  alarms: (m) => store.set("alarms", m.data),
  problems: (m) => store.set("problems", m.problems || []),
  service_status: (m) => store.update("services", { [m.service]: m.data || {} }),
};

for (const [type, feed] of Object.entries(feeds)) on(type, feed);
