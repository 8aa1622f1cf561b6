// Events panel: the live `event` and `service_status` messages, newest first, and the recent events
// from `GET /api/events` below them when the page connects.
import { api, on } from "./connection.js";
import { clock, el } from "./util.js";

const EVENTS_SHOWN = 50;
const WARN_KINDS = new Set(["redline", "deadman", "go_safe", "gap", "disk_error", "valve_ack_timeout",
  "valve_refused", "motor_error", "motor_reset"]);

let list = null;

function eventText(e) {
  const rest = Object.entries(e)
    .filter(([k]) => !["ts", "service", "kind"].includes(k))
    .map(([k, v]) => k + "=" + (typeof v === "object" && v !== null ? JSON.stringify(v) : v));
  return [clock(e.ts), e.service, e.kind].filter(Boolean).join(" ") + "  " + rest.join(" ");
}

function addEvent(e, atEnd) {
  const refused = e.kind === "command" && e.accepted === false;
  const offline = e.kind === "status" && e.state !== "online";
  const li = el("li", WARN_KINDS.has(e.kind) || refused || offline ? "warn" : "", eventText(e));
  li.dataset.ts = e.ts || 0;
  if (atEnd) list.append(li);
  else list.prepend(li);
  while (list.children.length > EVENTS_SHOWN) list.lastChild.remove();
}

async function loadEvents() {
  try {
    const answer = await api("/api/events?limit=" + EVENTS_SHOWN);
    const oldest = list.lastChild ? Number(list.lastChild.dataset.ts) : Infinity;
    for (const e of answer.events) if ((e.ts || 0) < oldest) addEvent(e, true);
  } catch (e) {
    // the live events still arrive over /ws
  }
}

export function mount(root) {
  list = el("ol", "events");
  list.id = "events";
  root.append(list);
  on("event", (m) => addEvent(m.data || {}));
  on("service_status", (m) => {
    const d = m.data || {};
    addEvent({ ts: d.ts, service: m.service, kind: "status", state: d.state, reason: d.reason });
  });
  on("authenticated", loadEvents);
}
