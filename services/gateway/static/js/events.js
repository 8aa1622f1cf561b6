// Events panel: the audit log as a table (time, who, what, result, reason), newest first, filtered by
// kind and by person. The live `event` and `service_status` messages go on top; the recent events
// from `GET /api/events` (with its `kind` and `who` filters) below them when the page connects and
// whenever a filter changes.
import { api, on } from "./connection.js";
import { clock, el } from "./util.js";

const EVENTS_SHOWN = 200;
const WARN_KINDS = new Set(["redline", "deadman", "go_safe", "gap", "disk_error", "valve_ack_timeout",
  "valve_refused", "motor_error", "motor_reset", "service_given_up", "service_exited"]);
const SHOWN_ELSEWHERE = new Set(["ts", "service", "kind", "publisher", "who", "origin", "login", "reason"]);

let body = null;
const filters = { kind: null, who: null };
const seen = { kind: new Set(), who: new Set() };
const selects = {};

function short(v) {
  const text = typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
  return text.length > 80 ? text.slice(0, 79) + "…" : text;
}

// A command's arguments: "name value, …" (the value alone when it is named as the command).
function args(a, command) {
  if (!a || typeof a !== "object") return "";
  return Object.entries(a).map(([k, v]) => (k === command ? "" : k + " ") + short(v)).join(", ");
}

function rest(e) {
  return Object.entries(e).filter(([k]) => !SHOWN_ELSEWHERE.has(k)).map(([k, v]) => k + "=" + short(v)).join(" ");
}

// Per kind: [who, what, result, reason]; anything else: its service and its fields.
const ROWS = {
  command: (e) => [e.who || e.login, e.command + (args(e.args, e.command) ? " " + args(e.args, e.command) : ""),
    e.accepted === false ? "refused" : e.ok === false ? "failed" : "accepted", e.reason || ""],
  state: (e) => [e.service, "state " + e.old + " → " + e.new, "", e.reason || ""],
  redline: (e) => [e.service, "red-line " + e.channel + " " + e.direction + " " + e.limit, "tripped: " + short(e.value), ""],
  alarm: (e) => {
    const a = e.alarm || {};
    return [a.acknowledged_by || e.service, a.kind + " " + (a.key || a.channel), a.state, ""];
  },
  run_recorded: (e) => [e.service, "run " + e.id + " recorded (" + e.samples + " samples)", e.result || "", ""],
  run_report: (e) => [e.service, "report of run " + e.id, e.status || "", e.reason || ""],
  valves: (e) => [e.service, "valves " + e.bits + (e.open && e.open.length ? " (open: " + e.open.join(", ") + ")" : " (all closed)"),
    "", e.cause || ""],
  step: (e) => [e.service, e.sequence === null ? "sequence ended"
    : e.sequence + " step " + e.step + "/" + e.steps + (e.phase ? " (" + e.phase + ")" : ""), "", ""],
  gap: (e) => [e.service, "gap: " + e.size + " samples lost (seq " + e.seq_from + "–" + e.seq_to + ")", "", e.reason || ""],
  deadman: (e) => [e.service, "deadman", "abort", e.reason || ""],
  status: (e) => [e.service, "service " + e.state, e.state === "online" ? "" : "offline", e.reason || ""],
  run_start: (e) => [e.who || e.service, "run start " + (e.name || e.id || ""), "", e.reason || ""],
  run_stop: (e) => [e.who || e.service, "run stop " + (e.name || e.id || ""), e.result || "", e.reason || ""],
};

function row(e) {
  const make = ROWS[e.kind];
  const [who, what, result, reason] = make ? make(e) : [e.service, e.kind + " " + rest(e), "", e.reason || ""];
  const refused = e.kind === "command" && (e.accepted === false || e.ok === false);
  const offline = e.kind === "status" && e.state !== "online";
  const tr = el("tr", WARN_KINDS.has(e.kind) || refused || offline ? "warn" : "");
  tr.dataset.ts = e.ts || 0;
  tr.dataset.kind = e.kind || "";
  tr.dataset.who = e.who || "";
  tr.append(el("td", "num", clock(e.ts)), el("td", "who", who || ""), el("td", "what", what),
    el("td", "result", result), el("td", "reason", reason));
  tr.title = (e.origin ? e.origin + " · " : "") + rest(e);
  return tr;
}

function learn(e) {
  for (const key of ["kind", "who"]) {
    const v = e[key];
    if (typeof v === "string" && v && !seen[key].has(v)) {
      seen[key].add(v);
      const option = el("option", "", v);
      option.value = v;
      const sorted = [...selects[key].options].slice(1).map((o) => o.value).concat([v]).sort();
      selects[key].insertBefore(option, selects[key].options[1 + sorted.indexOf(v)] || null);
    }
  }
}

function matches(e) {
  return (filters.kind === null || e.kind === filters.kind) && (filters.who === null || e.who === filters.who);
}

function addEvent(e, atEnd) {
  learn(e);
  if (!matches(e)) return;
  const tr = row(e);
  if (atEnd) body.append(tr);
  else body.prepend(tr);
  while (body.children.length > EVENTS_SHOWN) body.lastChild.remove();
}

// The gateway's recent events with the filters, below what arrived live.
async function loadEvents() {
  const query = new URLSearchParams({ limit: String(EVENTS_SHOWN) });
  if (filters.kind) query.set("kind", filters.kind);
  if (filters.who) query.set("who", filters.who);
  try {
    const answer = await api("/api/events?" + query);
    const oldest = body.lastChild ? Number(body.lastChild.dataset.ts) : Infinity;
    for (const e of answer.events) if ((e.ts || 0) < oldest) addEvent(e, true);
  } catch (e) {
    // the live events still arrive over /ws
  }
}

function filterSelect(key, label, all) {
  const box = el("label", "", label + " ");
  const select = el("select");
  select.id = "events-" + key;
  const any = el("option", "", all);
  any.value = "";
  select.append(any);
  select.addEventListener("change", () => {
    filters[key] = select.value || null;
    body.textContent = "";
    loadEvents();
  });
  selects[key] = select;
  box.append(select);
  return box;
}

export function mount(root) {
  const bar = el("div", "events-bar");
  bar.append(filterSelect("kind", "kind", "every kind"), filterSelect("who", "person", "everyone"));
  const table = el("table", "events-table");
  const head = el("tr");
  for (const h of ["time", "who", "what", "result", "reason"]) head.append(el("th", "", h));
  const thead = el("thead");
  thead.append(head);
  body = el("tbody");
  body.id = "events";
  table.append(thead, body);
  const scroll = el("div", "events-scroll");
  scroll.append(table);
  root.append(bar, scroll);
  on("event", (m) => addEvent(m.data || {}));
  // a service's status is republished as its details change (a logger behind, say): a row when it
  // goes online or offline only
  const states = {};
  on("service_status", (m) => {
    const d = m.data || {};
    if (states[m.service] === d.state) return;
    states[m.service] = d.state;
    addEvent({ ts: d.ts, service: m.service, kind: "status", state: d.state, reason: d.reason });
  });
  on("authenticated", loadEvents); // below what already arrived live (statuses come on connecting)
}
