// Health panel: connection, data age, the gateway's problems, the STM32 link, dropped frames.
import { on } from "./connection.js";
import { store } from "./store.js";
import { badge, el } from "./util.js";

const CONNECTION = {
  connecting: ["connecting", "off"],
  open: ["connected", "on"],
  closed: ["disconnected — retrying", "off"],
  refused: ["token refused", "off"],
};

export function mount(root) {
  const conn = el("span", "badge off", "disconnected");
  conn.id = "conn";
  conn.title = "WebSocket to the gateway";
  const age = el("span", "badge off", "no data");
  age.id = "age";
  age.title = "time since the last telemetry frame arrived";
  const problems = el("span", "problems");
  problems.id = "problems";
  problems.title = "what the gateway knows to be wrong with the stand, each with its reason";
  const dropped = el("span", "badge warn");
  dropped.id = "dropped";
  dropped.hidden = true;
  dropped.title = "telemetry frames the gateway dropped because this page read too slowly";
  const stm32 = el("div", "muted");
  stm32.id = "stm32";
  root.append(conn, age, problems, dropped, stm32);

  store.watch("connection", (c) => badge(conn, ...CONNECTION[c]));
  store.watch("latest", () => {
    const at = store.get("lastFrameAt");
    if (!at) return;
    const ms = performance.now() - at;
    if (!store.get("stale")) badge(age, "data live", "on");
    else badge(age, "no data for " + Math.round(ms / 1000) + " s", "off");
  });
  store.watch("problems", (list) => {
    problems.replaceChildren();
    if (!list.length) problems.append(el("span", "badge on", "stand ok"));
    for (const p of list) {
      const b = el("span", "badge off", p.component + ": " + p.reason);
      b.title = p.reason;
      problems.append(b);
    }
  });
  store.watch("stm32", (s) => {
    if (!s) return;
    const link = s.connected ? "STM32 " + (s.kind || "") + " connected"
      : s.link === "silent" ? "STM32 SILENT (port open, no frames)" : "STM32 NOT CONNECTED";
    stm32.textContent = link + (s.safe ? " · holding all valves closed (safe)" : "");
    stm32.className = s.connected ? "muted" : "alarm";
  });
  const count = { notices: 0, frames: 0 };
  on("dropped", (m) => {
    count.notices += 1;
    count.frames += m.count;
    dropped.textContent = "dropped " + count.frames + " frames (" + count.notices + " notices)";
    dropped.hidden = false;
  });
}
