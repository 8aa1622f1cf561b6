// The telemetry buffer: every channel over the plotted window (10 s to 10 min), from `sensor_display`
// frames and `GET /api/history`, as min/max buckets of equal time.
//
// The window is cut into about POINTS buckets (at least one telemetry batch, 10 ms, each); a frame's
// buckets (one per batch) are folded into them, so a 10-minute window costs no more to keep and draw
// than a 10-second one. Choosing a window (`setWindow`) reads that much history from acquisition's
// ring buffer. A shared time axis and per-channel min/max; a null point breaks the lines at a gap.
// Panels read `buf` (plots) or the store's `latest` (values at their places), `lastFrameAt`, `stale`.
import { api, on, send } from "./connection.js";
import { STALE_MS, store } from "./store.js";
import { info } from "./util.js";

export const WINDOWS = [10, 30, 60, 120, 300, 600]; // seconds the plots may show
export const POINTS = 800; // buckets per window: about one per pixel of a wide plot
const MIN_BUCKET_S = 0.01; // a telemetry batch: finer buckets would stay empty
const params = new URLSearchParams(location.search);
const MAX_HZ = Number(params.get("hz") || 30);
const LATEST_EVERY_MS = 250; // values are for reading: a few updates a second

// `version` grows with every change; `received`/`sampleT`: performance.now() at the newest frame's
// arrival and its newest sample's UNIX time (frame → painted, bench/dashboard.py).
export const buf = {
  channels: [], t: [], lo: {}, hi: {}, session: null, seqNext: null, key: null, version: 0,
  windowS: WINDOWS.includes(Number(params.get("window"))) ? Number(params.get("window")) : 30,
  received: 0, sampleT: 0, newest: {},
};
let generation = 0; // a history answer for an older window is dropped

export function bucketS() {
  return Math.max(MIN_BUCKET_S, buf.windowS / POINTS);
}

function bin(b) {
  // A msgpack bin is a Uint8Array view into the message; copy it so the typed array is aligned.
  return b.slice().buffer;
}

function finite(v) {
  return Number.isFinite(v) ? v : null;
}

function resetBuffer(channels) {
  const changed = !sameChannels(channels);
  buf.channels = channels.slice();
  buf.t = [];
  buf.lo = {};
  buf.hi = {};
  buf.key = null;
  for (const name of channels) {
    buf.lo[name] = [];
    buf.hi[name] = [];
  }
  buf.version += 1;
  if (changed || !store.get("channels")) store.set("channels", buf.channels);
}

function sameChannels(channels) {
  return channels.length === buf.channels.length && channels.every((c, i) => c === buf.channels[i]);
}

function push(t, row) {
  buf.t.push(t);
  buf.channels.forEach((name, c) => {
    buf.lo[name].push(row ? row.lo[c] : null);
    buf.hi[name].push(row ? row.hi[c] : null);
  });
}

// Fold min/max into the newest bucket.
function fold(last, name, l, h) {
  if (l !== null) buf.lo[name][last] = buf.lo[name][last] === null ? l : Math.min(buf.lo[name][last], l);
  if (h !== null) buf.hi[name][last] = buf.hi[name][last] === null ? h : Math.max(buf.hi[name][last], h);
}

// The buckets older than the window go, in steps of an eighth of it (cheap at 30 frames/s).
function trimBuffer() {
  const limit = buf.t[buf.t.length - 1] - buf.windowS;
  const eighth = Math.floor(buf.t.length / 8);
  if (!buf.t.length || buf.t[eighth] >= limit) return;
  let cut = 0;
  while (cut < buf.t.length && buf.t[cut] < limit) cut++;
  buf.t.splice(0, cut);
  for (const name of buf.channels) {
    buf.lo[name].splice(0, cut);
    buf.hi[name].splice(0, cut);
  }
}

// A `sensor_display` frame: n buckets × all channels (the page subscribes to every channel).
function onDisplay(m) {
  const received = performance.now();
  if (!sameChannels(m.channels)) resetBuffer(m.channels);
  const t = new Float64Array(bin(m.t));
  const lo = new Float32Array(bin(m.min));
  const hi = new Float32Array(bin(m.max));
  const nc = m.channels.length;
  // Samples missing between frames (dropped frames, a gap on the stand, a new session): break the line.
  if (buf.t.length && (m.session !== buf.session || m.seq_first !== buf.seqNext)) {
    push(t[0], null);
    buf.key = null;
  }
  buf.session = m.session;
  buf.seqNext = m.seq_next;
  const width = bucketS();
  for (let i = 0; i < m.n; i++) {
    const key = Math.floor(t[i] / width);
    if (key === buf.key) {
      const last = buf.t.length - 1;
      buf.channels.forEach((name, c) => fold(last, name, finite(lo[i * nc + c]), finite(hi[i * nc + c])));
    } else {
      const row = { lo: [], hi: [] };
      for (let c = 0; c < nc; c++) {
        row.lo.push(finite(lo[i * nc + c]));
        row.hi.push(finite(hi[i * nc + c]));
      }
      push(t[i], row);
      buf.key = key;
    }
  }
  const newest = (m.n - 1) * nc;
  buf.newest = {};
  buf.channels.forEach((name, c) => (buf.newest[name] = [finite(lo[newest + c]), finite(hi[newest + c])]));
  trimBuffer();
  buf.version += 1;
  buf.received = received;
  buf.sampleT = t[m.n - 1];
  store.set("lastFrameAt", received);
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

// `GET /api/history`: the window from acquisition's ring buffer, put before the live data.
async function backfill() {
  const mine = ++generation;
  const seconds = buf.windowS;
  store.set("history", { loading: true, seconds });
  try {
    const h = await api("/api/history?seconds=" + seconds + "&points=" + Math.round(seconds / bucketS()));
    if (mine !== generation) return;
    prependHistory(h);
    store.set("history", { loading: false, seconds, n: h.n, n_source: h.n_source });
  } catch (e) {
    if (mine !== generation) return;
    store.set("history", { loading: false, seconds, error: e.message });
    info("no history for the plots (" + e.message + "): they fill as data arrives");
  }
}

// The plotted window (seconds, one of WINDOWS): the buffer starts over, filled from the history.
export function setWindow(seconds) {
  if (!WINDOWS.includes(seconds)) return;
  buf.windowS = seconds;
  resetBuffer(buf.channels);
  buf.session = null;
  store.set("window", seconds);
  backfill();
}

// `GET /api/history` for `seconds` back from now in `points` buckets (a zoom's finer detail).
export function readHistory(seconds, points) {
  return api("/api/history?seconds=" + seconds.toFixed(3) + "&points=" + points);
}

// The newest telemetry batch (10 ms) of each channel: its middle, and its min … max.
function publishLatest() {
  const latest = {};
  for (const name of buf.channels) {
    const [lo, hi] = buf.newest[name] || [null, null];
    latest[name] = lo !== null && hi !== null ? { value: (lo + hi) / 2, lo, hi } : null;
  }
  store.set("latest", latest);
  const at = store.get("lastFrameAt");
  const stale = !at || performance.now() - at >= STALE_MS;
  if (stale !== store.get("stale")) store.set("stale", stale);
}

store.set("window", buf.windowS);
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
