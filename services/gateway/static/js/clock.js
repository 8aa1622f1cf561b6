// The stand's clock as this page sees it: `standNow()` is UNIX seconds by the stand computer's clock,
// so a countdown extrapolated from a state's `ts` is right even when this computer's clock is off.
// The offset is learnt from the messages that are always live (never a retained state replayed on
// connect): `event` and `service_status` pushes, stamped by the services when they happened and
// relayed at once. The smallest "arrival − ts" of the last ones is the clock offset plus the
// shortest delivery time. (Telemetry sample times are no clock: a starved device lags behind.)
// Until one arrived, this computer's clock is used.
import { on } from "./connection.js";

const KEPT = 50; // the last pushes: follows a clock that was stepped
const recent = [];
let offset = 0; // local − stand, seconds

function observe(ts) {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return;
  recent.push(Date.now() / 1000 - ts);
  if (recent.length > KEPT) recent.shift();
  offset = Math.min(...recent);
}

on("event", (m) => observe(m.data && m.data.ts));
on("service_status", (m) => observe(m.data && m.data.ts));

export function standNow() {
  return Date.now() / 1000 - offset;
}
