// The page's state: one observable store that every panel reads and watches.
//
// `store.set(key, value)` replaces a value and calls the watchers of that key; `store.watch(key, fn)`
// calls `fn(value)` now and on every change. Keys (add your own; document them here):
//   connection  "connecting" | "open" | "closed" | "refused"   (the WebSocket)
//   identity    null | {name, role}                             (`authenticated`, or `/api/whoami`)
//   config      null | {valves, channels, limits, schematic}    (`GET /api/config`)
//   system      the retained `rcs/state/system`
//   stm32       the retained `rcs/state/stm32`
//   valves      {names, bits, cause, ts, acknowledged}          (`valve_state`)
//   motors      the retained `rcs/state/motors`
//   run         the retained `rcs/state/run`: {active, last, ts}
//   alarms      the retained `rcs/state/alarms`
//   problems    [{component, reason}]
//   services    {<service>: status data}                        (`service_status`)
//   meta        the retained telemetry meta (channels with units)
//   latest      {<channel>: value}: the newest bucket's middle, a few times a second
//   lastFrameAt performance.now() of the last telemetry frame (0: none yet)
//   stale       true while telemetry is older than STALE_MS (or none arrived)
//   sequences   [{name, description, procedure, requires_armed, abort, steps}]  (`GET /api/sequences`)
//   checklist   null | {ok, items: [{id, label, kind, ok, reason}], ts} | {unavailable: reason}
//   aborts      [{ts, reason}]: aborts this console shows until acknowledged (alarms.js)
//   alarmSound  "quiet" | "sounding" | "muted" | "blocked" (alarms.js)

export const STALE_MS = 1000;

const values = new Map();
const watchers = new Map();

export const store = {
  get(key) {
    return values.get(key);
  },
  set(key, value) {
    values.set(key, value);
    for (const fn of watchers.get(key) || []) fn(value);
  },
  // Merge `patch` into an object value.
  update(key, patch) {
    this.set(key, Object.assign({}, values.get(key) || {}, patch));
  },
  watch(key, fn) {
    if (!watchers.has(key)) watchers.set(key, []);
    watchers.get(key).push(fn);
    if (values.has(key)) fn(values.get(key));
  },
};

store.set("connection", "connecting");
store.set("identity", null);
store.set("valves", { names: null, bits: null, cause: "", ts: null, acknowledged: false });
store.set("problems", []);
store.set("services", {});
store.set("latest", {});
store.set("lastFrameAt", 0);
store.set("stale", true);

// Why this page may not command the stand now ("" when it may). Every command control is disabled
// with this as its reason; Abort alone stays enabled for an operator (see controls.js).
export function commandBlock() {
  const identity = store.get("identity");
  if (store.get("connection") !== "open") return "not connected to the gateway";
  if (!identity) return "not logged in";
  if (identity.role !== "operator") return identity.name + " is a viewer: commands need an operator account";
  if (store.get("stale")) return "telemetry is stale: the stand's state is unknown";
  return "";
}

// Watch everything commandBlock depends on.
export function watchCommandBlock(fn) {
  let last = null;
  const check = () => {
    const now = commandBlock();
    if (now !== last) {
      last = now;
      fn(now);
    }
  };
  for (const key of ["connection", "identity", "stale"]) store.watch(key, check);
}
