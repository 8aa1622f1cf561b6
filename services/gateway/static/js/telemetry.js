// The telemetry buffer: every channel over the last WINDOW_S, one point per display bucket (a
// telemetry batch), from `sensor_display` frames and `GET /api/history`. A shared time axis and
// per-channel min/max; a null point breaks the lines at a gap. Panels read `buf` (plots) or the
// store's `latest` (values at their places), `lastFrameAt` and `stale`.
import { api, on, send } from "./connection.js";
import { STALE_MS, store } from "./store.js";
import { info } from "./util.js";

export const WINDOW_S = 30; // plotted time span
const MAX_HZ = Number(new URLSearchParams(location.search).get("hz") || 30);
const LATEST_EVERY_MS = 250; // values are for reading: a few updates a second

export const buf = { channels: [], t: [], lo: {}, hi: {}, session: null, seqNext: null, version: 0 };

function bin(b) {
  // A msgpack bin is a Uint8Array view into the message; copy it so the typed array is aligned.
  return b.slice().buffer;
}

function finite(v) {
  return Number.isFinite(v) ? v : null;
}

function resetBuffer(channels) {
  buf.channels = channels.slice();
  buf.t = [];
  buf.lo = {};
  buf.hi = {};
  for (const name of channels) {
    buf.lo[name] = [];
    buf.hi[name] = [];
  }
  store.set("channels", buf.channels);
}

function sameChannels(channels) {
  return channels.length === buf.channels.length && channels.every((c, i) => c === buf.channels[i]);
}

function pushGap(t) {
  buf.t.push(t);
  for (const name of buf.channels) {
    buf.lo[name].push(null);
    buf.hi[name].push(null);
  }
}

function trimBuffer() {
  const last = buf.t[buf.t.length - 1];
  let cut = 0;
  while (cut < buf.t.length && buf.t[cut] < last - WINDOW_S) cut++;
  if (!cut) return;
  buf.t.splice(0, cut);
  for (const name of buf.channels) {
    buf.lo[name].splice(0, cut);
    buf.hi[name].splice(0, cut);
  }
}

// A `sensor_display` frame: n buckets × all channels (the page subscribes to every channel).
function onDisplay(m) {
  if (!sameChannels(m.channels)) resetBuffer(m.channels);
  const t = new Float64Array(bin(m.t));
  const lo = new Float32Array(bin(m.min));
  const hi = new Float32Array(bin(m.max));
  const nc = m.channels.length;
  // Samples missing between frames (dropped frames, a gap on the stand, a new session): break the line.
  if (buf.t.length && (m.session !== buf.session || m.seq_first !== buf.seqNext)) pushGap(t[0]);
  buf.session = m.session;
  buf.seqNext = m.seq_next;
  for (let i = 0; i < m.n; i++) {
    buf.t.push(t[i]);
    m.channels.forEach((name, c) => {
      buf.lo[name].push(finite(lo[i * nc + c]));
      buf.hi[name].push(finite(hi[i * nc + c]));
    });
  }
  trimBuffer();
  buf.version += 1;
  store.set("lastFrameAt", performance.now());
}

function prependHistory(h) {
  if (!buf.t.length && !sameChannels(h.channels)) resetBuffer(h.channels);
  const first = buf.t.length ? buf.t[0] : Infinity;
  let n = 0;
  while (n < h.t.length && h.t[n] < first) n++; // only what is older than the live data
  if (!n) return;
  buf.t.unshift(...h.t.slice(0, n));
  for (const name of buf.channels) {
    const lo = h.min[name] || [];
    const hi = h.max[name] || [];
    buf.lo[name].unshift(...Array.from({ length: n }, (_, i) => (lo[i] === undefined ? null : lo[i])));
    buf.hi[name].unshift(...Array.from({ length: n }, (_, i) => (hi[i] === undefined ? null : hi[i])));
  }
  trimBuffer();
  buf.version += 1;
}

// `GET /api/history`: the last WINDOW_S from acquisition's ring buffer, put before the live data.
async function backfill() {
  try {
    // 100 points a second: the live buckets' width with the default 10 ms telemetry batches
    prependHistory(await api("/api/history?seconds=" + WINDOW_S + "&points=" + WINDOW_S * 100));
  } catch (e) {
    info("no history for the plots (" + e.message + "): they fill as data arrives");
  }
}

// The newest bucket of each channel: its middle, and its min … max.
function publishLatest() {
  const last = buf.t.length - 1;
  const latest = {};
  for (const name of buf.channels) {
    const lo = last >= 0 ? buf.lo[name][last] : null;
    const hi = last >= 0 ? buf.hi[name][last] : null;
    latest[name] = lo !== null && hi !== null ? { value: (lo + hi) / 2, lo, hi } : null;
  }
  store.set("latest", latest);
  const at = store.get("lastFrameAt");
  const stale = !at || performance.now() - at >= STALE_MS;
  if (stale !== store.get("stale")) store.set("stale", stale);
}

on("sensor_display", onDisplay);
on("telemetry_meta", (m) => store.set("meta", m.data || null));
on("authenticated", () => {
  // start over: the history fills what this page missed while it was away
  resetBuffer(buf.channels);
  buf.session = null;
  // every channel: the values show them all, the plots pick theirs
  send({ type: "subscribe", mode: "display", max_hz: MAX_HZ, sensor_data: false });
  backfill();
});
on("subscribed", (m) => info("telemetry: all channels, " + m.max_hz + " frames/s"));
setInterval(publishLatest, LATEST_EVERY_MS);
