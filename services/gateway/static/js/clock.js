// The stand's clock as this page sees it: `standNow()` is UNIX seconds by the gateway host's clock,
// so a countdown extrapolated from a state's `ts` is right even when this computer's clock is off.
// The offset is learnt from telemetry: each `sensor_display` frame's newest bucket was sampled (by
// the STM32's clock, anchored to the host's) moments before it arrived, so the smallest
// "arrival − sample time" over the last frames is the clock offset plus a few milliseconds. Without
// telemetry the page's own clock is used.
import { on } from "./connection.js";

const WINDOW = 90; // frames (3 s at 30 frames/s): follows a clock that steps, ignores a slow frame
const recent = [];
let offset = 0; // local − stand, seconds

on("sensor_display", (m) => {
  if (!m.n || !m.t || m.t.byteLength < m.n * 8) return;
  const t = new DataView(m.t.buffer, m.t.byteOffset, m.t.byteLength).getFloat64((m.n - 1) * 8, true);
  if (!Number.isFinite(t)) return;
  recent.push(Date.now() / 1000 - t);
  if (recent.length > WINDOW) recent.shift();
  offset = Math.min(...recent);
});

export function standNow() {
  return Date.now() / 1000 - offset;
}
