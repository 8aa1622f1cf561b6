// Live plots: chosen channels over a window of 10 s to 10 min, as min/max bands.
//
// The window is cut into about POINTS buckets of equal time; each `sensor_display` frame's buckets
// (one per 10 ms telemetry batch) are folded into them, so a 10-minute window costs no more to draw
// than a 10-second one. Choosing a window reads that much history from acquisition's ring buffer
// (`GET /api/history`). Warning and red-line limits (`GET /api/limits`) are drawn, and markers for
// valve changes, alarms and aborts (from `valve_state` and `event` messages, and `GET /api/events`).
// Pause freezes what is shown (the data keep arriving); dragging over a plot zooms every plot to that
// span and pauses, reading the span again from the ring buffer at a finer resolution; Live resumes.
//
// URL options: `?channels=P1,P5` (plots shown), `?window=60` (seconds).
import { bandPlot, columns, getJson, hms } from "./chart.js";

export const WINDOWS = [10, 30, 60, 120, 300, 600];
const POINTS = 1500; // buckets per window: about one per pixel
const MIN_BUCKET_S = 0.01; // the telemetry batches: finer buckets would be empty
const MAX_ZOOM_POINTS = 4000; // a zoom's re-read from the ring buffer (× every channel)
const MARKERS_KEPT = 500;
const PLOT_HEIGHT = 190;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function finite(v) {
  return Number.isFinite(v) ? v : null;
}

function copy(b) {
  return b.slice().buffer; // a msgpack bin is a view into the message: copy it aligned
}

// What the audit and state messages say happened, as markers on the time axis.
const MARKER_OF = {
  state: (e) => (e.new === "aborting" ? { kind: "abort", label: "abort" } : null),
  redline: (e) => ({ kind: "abort", label: "red-line " + e.channel }),
  alarm: (e) => (e.alarm && e.alarm.state === "active-unacknowledged"
    ? { kind: "alarm", label: (e.alarm.kind === "redline" ? "red-line " : "alarm ") + e.alarm.channel } : null),
  command: (e) => (["valves", "valve"].includes(e.command) && e.accepted !== false && e.ok !== false
    ? { kind: "valve", label: "valves" } : null),
};

export class LivePlots {
  constructor(root, { token, channels, window: seconds, onChosen }) {
    this.root = root;
    this.token = token || (() => "");
    this.onChosen = onChosen || (() => {});
    this.chosen = channels.slice();
    this.windowS = WINDOWS.includes(seconds) ? seconds : 30;
    this.channels = [];
    this.units = {};
    this.limits = {}; // channel -> [limit]
    this.markers = [];
    this.plots = {}; // channel -> {u, div}
    this.frozen = null; // {t, lo, hi} shown while paused
    this.zoom = null; // [t0, t1]
    this.generation = 0; // history answers for an older window are dropped
    this.dirty = false;
    this.paintListeners = [];
    this.resetBuffer([]);
    this.build();
    requestAnimationFrame((ts) => this.redraw(ts));
    window.addEventListener("resize", () => this.resize());
  }

  // -- page ------------------------------------------------------------------------------------

  build() {
    const bar = el("div", "plot-toolbar");
    const label = el("label", "", "window ");
    this.select = el("select");
    this.select.id = "plot-window";
    for (const s of WINDOWS) {
      const o = el("option", "", s < 60 ? s + " s" : s / 60 + " min");
      o.value = String(s);
      this.select.append(o);
    }
    this.select.value = String(this.windowS);
    this.select.addEventListener("change", () => this.setWindow(Number(this.select.value)));
    label.append(this.select);
    this.pauseButton = el("button", "", "pause");
    this.pauseButton.id = "plot-pause";
    this.pauseButton.type = "button";
    this.pauseButton.addEventListener("click", () => (this.frozen ? this.live() : this.pause()));
    this.status = el("span", "muted plot-status");
    this.picker = el("details", "plot-picker");
    this.picker.append(el("summary", "", "channels"));
    this.pickerBox = el("div", "plot-picker-box");
    this.picker.append(this.pickerBox);
    const legend = el("span", "muted plot-legend");
    legend.innerHTML = '<i class="mk valve"></i>valves <i class="mk alarm"></i>alarm <i class="mk abort"></i>abort ' +
      '<i class="lim warning"></i>warning <i class="lim redline"></i>red-line · drag: zoom';
    bar.append(label, this.pauseButton, this.picker, legend, this.status);
    this.grid = el("section", "plot-grid");
    this.grid.id = "plots";
    this.root.append(bar, this.grid);
    this.setChosen(this.chosen);
  }

  setChosen(names) {
    this.chosen = names.slice();
    for (const name of Object.keys(this.plots)) {
      if (!this.chosen.includes(name)) {
        this.plots[name].u.destroy();
        this.plots[name].div.remove();
        delete this.plots[name];
      }
    }
    for (const name of this.chosen) if (!this.plots[name]) this.makePlot(name);
    for (const box of this.pickerBox.querySelectorAll("input")) box.checked = this.chosen.includes(box.value);
    this.onChosen(this.chosen);
    this.resize();
    this.dirty = true;
  }

  toggle(name) {
    this.setChosen(this.chosen.includes(name) ? this.chosen.filter((c) => c !== name) : this.chosen.concat([name]));
  }

  makePlot(name) {
    const div = el("div", "plot");
    div.dataset.channel = name;
    this.grid.append(div);
    const u = bandPlot(div, {
      title: name,
      unit: this.units[name],
      limits: this.limits[name] || [],
      markers: () => this.markers,
      xRange: () => this.xRange(),
      onZoom: (t0, t1) => this.zoomTo(t0, t1),
      width: Math.max(200, div.clientWidth - 8),
      height: PLOT_HEIGHT,
    });
    this.plots[name] = { u, div };
  }

  // Units and limits change a plot's title and drawing: made again.
  remake() {
    for (const name of Object.keys(this.plots)) {
      this.plots[name].u.destroy();
      this.plots[name].div.remove();
      delete this.plots[name];
    }
    this.setChosen(this.chosen);
  }

  resize() {
    for (const p of Object.values(this.plots)) p.u.setSize({ width: Math.max(200, p.div.clientWidth - 8), height: PLOT_HEIGHT });
  }

  fillPicker() {
    this.pickerBox.textContent = "";
    for (const name of this.channels) {
      const label = el("label");
      const box = el("input");
      box.type = "checkbox";
      box.value = name;
      box.checked = this.chosen.includes(name);
      box.addEventListener("change", () => this.toggle(name));
      label.append(box, " " + name);
      this.pickerBox.append(label);
    }
  }

  // -- inputs --------------------------------------------------------------------------------

  setMeta(meta) {
    for (const c of (meta && meta.channels) || []) this.units[c.name] = c.unit || "";
    this.remake();
  }

  setLimits(list) {
    this.limits = {};
    for (const l of list) (this.limits[l.channel] = this.limits[l.channel] || []).push(l);
    this.remake();
  }

  async loadLimits() {
    try {
      this.setLimits((await getJson("/api/limits", this.token())).limits);
    } catch (e) {
      this.say("no limits (" + e.message + ")");
    }
  }

  addMarker(t, kind, label) {
    if (!Number.isFinite(t)) return;
    if (this.markers.some((m) => m.kind === kind && Math.abs(m.t - t) < 0.05)) return;
    this.markers.push({ t, kind, label });
    this.markers.sort((a, b) => a.t - b.t);
    if (this.markers.length > MARKERS_KEPT) this.markers.splice(0, this.markers.length - MARKERS_KEPT);
    this.dirty = true;
  }

  onEvent(e) {
    const make = MARKER_OF[e && e.kind];
    const m = make ? make(e) : null;
    if (m) this.addMarker(e.ts, m.kind, m.label);
  }

  onValveState(m) {
    if (m.ts) this.addMarker(m.ts, "valve", "valves " + (m.bits || ""));
  }

  // -- buffer ----------------------------------------------------------------------------------

  bucketS() {
    return Math.max(MIN_BUCKET_S, this.windowS / POINTS);
  }

  resetBuffer(channels) {
    this.channels = channels.slice();
    this.buf = { t: [], lo: {}, hi: {}, key: null, session: null, seqNext: null };
    for (const name of channels) {
      this.buf.lo[name] = [];
      this.buf.hi[name] = [];
    }
  }

  pushBucket(t, lo, hi) {
    const b = this.buf;
    b.t.push(t);
    this.channels.forEach((name, c) => {
      b.lo[name].push(lo ? lo[c] : null);
      b.hi[name].push(hi ? hi[c] : null);
    });
  }

  // `sensor_display`: n buckets × channels, folded into this window's buckets.
  onDisplay(m) {
    const received = performance.now();
    if (m.channels.length !== this.channels.length || m.channels.some((c, i) => c !== this.channels[i])) {
      this.resetBuffer(m.channels);
      this.fillPicker();
    }
    const t = new Float64Array(copy(m.t));
    const lo = new Float32Array(copy(m.min));
    const hi = new Float32Array(copy(m.max));
    const nc = m.channels.length;
    const b = this.buf;
    if (b.t.length && (m.session !== b.session || m.seq_first !== b.seqNext)) {
      this.pushBucket(t[0], null, null); // lost samples or a new session: the line breaks
      b.key = null;
    }
    b.session = m.session;
    b.seqNext = m.seq_next;
    const width = this.bucketS();
    for (let i = 0; i < m.n; i++) {
      const key = Math.floor(t[i] / width);
      const last = b.t.length - 1;
      if (key === b.key && last >= 0) {
        this.channels.forEach((name, c) => {
          const l = finite(lo[i * nc + c]);
          const h = finite(hi[i * nc + c]);
          if (l !== null) b.lo[name][last] = b.lo[name][last] === null ? l : Math.min(b.lo[name][last], l);
          if (h !== null) b.hi[name][last] = b.hi[name][last] === null ? h : Math.max(b.hi[name][last], h);
        });
      } else {
        const row = (a) => this.channels.map((_, c) => finite(a[i * nc + c]));
        this.pushBucket(t[i], row(lo), row(hi));
        b.key = key;
      }
    }
    this.trim();
    this.dirty = true;
    this.pending = { received, sampleT: t[m.n - 1] };
  }

  trim() {
    const b = this.buf;
    const limit = b.t[b.t.length - 1] - this.windowS;
    if (b.t.length < 8 || b.t[Math.floor(b.t.length / 8)] >= limit) return; // cut in eighths: cheap
    let cut = 0;
    while (cut < b.t.length && b.t[cut] < limit) cut++;
    b.t.splice(0, cut);
    for (const name of this.channels) {
      b.lo[name].splice(0, cut);
      b.hi[name].splice(0, cut);
    }
  }

  lastT() {
    const t = this.buf.t;
    return t.length ? t[t.length - 1] : Date.now() / 1000;
  }

  // `GET /api/history`: the window from acquisition's ring buffer, before the live buckets.
  async backfill() {
    const generation = ++this.generation;
    const seconds = this.windowS;
    const points = Math.round(seconds / this.bucketS());
    this.say("reading " + seconds + " s of history…");
    try {
      const h = await getJson("/api/history?seconds=" + seconds + "&points=" + points, this.token());
      if (generation !== this.generation) return;
      this.prepend(h);
      this.say("");
    } catch (e) {
      if (generation === this.generation) this.say("no history (" + e.message + "): the plots fill as data arrive");
    }
  }

  prepend(h) {
    if (!this.buf.t.length && !this.channels.length) {
      this.resetBuffer(h.channels);
      this.fillPicker();
    }
    const b = this.buf;
    const first = b.t.length ? b.t[0] : Infinity;
    let n = 0;
    while (n < h.t.length && h.t[n] < first) n++;
    if (!n) return;
    b.t.unshift(...h.t.slice(0, n));
    for (const name of this.channels) {
      const lo = h.min[name] || [];
      const hi = h.max[name] || [];
      b.lo[name].unshift(...Array.from({ length: n }, (_, i) => (lo[i] === undefined ? null : lo[i])));
      b.hi[name].unshift(...Array.from({ length: n }, (_, i) => (hi[i] === undefined ? null : hi[i])));
    }
    this.trim();
    this.dirty = true;
  }

  // -- window, pause, zoom ---------------------------------------------------------------------

  setWindow(seconds) {
    this.windowS = seconds;
    this.select.value = String(seconds);
    const query = new URLSearchParams(location.search);
    query.set("window", String(seconds));
    history.replaceState(null, "", location.pathname + "?" + query.toString().replace(/%2C/g, ","));
    this.live();
    this.resetBuffer(this.channels);
    this.backfill();
  }

  xRange() {
    if (this.zoom) return this.zoom;
    const end = this.frozen ? this.frozen.end : this.lastT();
    return [end - this.windowS, end];
  }

  pause() {
    const b = this.buf;
    const lo = {};
    const hi = {};
    for (const name of this.channels) {
      lo[name] = b.lo[name].slice();
      hi[name] = b.hi[name].slice();
    }
    this.frozen = { t: b.t.slice(), lo, hi, end: this.lastT() };
    this.pauseButton.textContent = "live";
    this.root.classList.add("paused");
    this.say("paused at " + hms(this.frozen.end));
    this.dirty = true;
  }

  live() {
    this.frozen = null;
    this.zoom = null;
    this.pauseButton.textContent = "pause";
    this.root.classList.remove("paused");
    this.say("");
    this.dirty = true;
  }

  // Every plot to [t0, t1], paused; the span read again from the ring buffer in finer buckets.
  async zoomTo(t0, t1) {
    if (!this.frozen) this.pause();
    this.zoom = [t0, t1];
    this.dirty = true;
    const seconds = this.lastT() - t0;
    const points = Math.min(MAX_ZOOM_POINTS, Math.ceil((POINTS * seconds) / Math.max(t1 - t0, 1e-3)));
    if (seconds <= 0 || seconds > 600 || points < 2) return;
    const generation = ++this.generation;
    this.say("zoomed " + hms(t0) + " – " + hms(t1) + ": reading detail…");
    try {
      const h = await getJson("/api/history?seconds=" + seconds.toFixed(3) + "&points=" + points, this.token());
      if (generation !== this.generation || !this.zoom) return;
      const lo = {};
      const hi = {};
      for (const name of this.channels) [, lo[name], hi[name]] = columns(h, name);
      this.frozen = { t: h.t, lo, hi, end: this.frozen ? this.frozen.end : this.lastT() };
      this.say("zoomed " + hms(t0) + " – " + hms(t1) + " (" + h.n + " buckets of " + h.n_source + " samples)");
      this.dirty = true;
    } catch (e) {
      this.say("zoomed; no finer detail (" + e.message + ")");
    }
  }

  say(text) {
    this.status.textContent = text;
  }

  // -- drawing -------------------------------------------------------------------------------

  redraw() {
    if (this.dirty) {
      this.dirty = false;
      const data = this.frozen || this.buf;
      for (const [name, p] of Object.entries(this.plots)) {
        if (data.lo[name]) p.u.setData([data.t, data.lo[name], data.hi[name]]);
      }
      const pending = this.pending;
      this.pending = null;
      // painted: the first task after this frame was rendered
      if (pending && this.paintListeners.length) {
        setTimeout(() => { for (const f of this.paintListeners) f(pending, performance.now()); }, 0);
      }
    }
    requestAnimationFrame((ts) => this.redraw(ts));
  }

  // f({received, sampleT}, paintedAt): for measuring frame → painted (bench/dashboard.py).
  onPainted(f) {
    this.paintListeners.push(f);
  }
}
