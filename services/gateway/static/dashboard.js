// rcs operator console: plain ES modules, no build step, no external requests. Served by the gateway at `/`.
//
// Layout: index.html has one container per panel, `<section data-panel="NAME">`; the module
// js/NAME.js owns everything inside it and exports `mount(root)`. Shared parts:
//   js/connection.js  WebSocket, token, reconnect, heartbeat; `on(type, fn)` dispatch table, send(), api()
//   js/store.js       the page's state (store.get/set/watch), commandBlock(): why commands are disabled
//   js/feeds.js       the gateway's state pushes into the store
//   js/telemetry.js   the telemetry buffer (sensor_display + /api/history), latest values, staleness
//   js/util.js        DOM and formatting helpers, the answer line
// To add a panel: a container in index.html, a module in js/, one line in PANELS below.
// URL options: `?channels=P1,P5` (plots shown), `?hz=30` (display frames per second), `#token=…`.
import * as alarms from "./js/alarms.js";
import * as bench from "./js/bench.js";
import { connect, takeTokenFromFragment } from "./js/connection.js";
import * as controls from "./js/controls.js";
import * as events from "./js/events.js";
import "./js/feeds.js";
import * as health from "./js/health.js";
import * as identity from "./js/identity.js";
import * as motors from "./js/motors.js";
import * as plots from "./js/plots.js";
import * as procedures from "./js/procedures.js";
import * as runs from "./js/runs.js";
import * as schematic from "./js/schematic.js";
import { store } from "./js/store.js";
import "./js/telemetry.js";
import { info } from "./js/util.js";

const PANELS = { identity, controls, alarms, health, schematic, procedures, motors, plots, events, runs, bench };

const problem = takeTokenFromFragment();
for (const [name, panel] of Object.entries(PANELS)) {
  const root = document.querySelector('[data-panel="' + name + '"]');
  if (root) panel.mount(root);
  else info("index.html has no container for the " + name + " panel");
}
if (problem) info(problem);
// While not connected, what the page shows is old: dim it so nobody reads it as the stand's state.
store.watch("connection", (c) => document.body.classList.toggle("stale", c !== "open"));
connect();
