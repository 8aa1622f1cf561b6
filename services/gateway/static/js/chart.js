// One channel as a min/max band (uPlot), with its warning and red-line limits and event markers
// drawn on it: what the live plots and the review of recordings and runs both draw.
//
// `limits`: [{kind: "warning" | "redline", direction: "above" | "below", value}] (limitsByChannel).
// `markers()`: [{t, kind: "valve" | "alarm" | "abort", label}] in UNIX seconds, read at each draw.
// `onZoom(t0, t1)`: the user dragged over the plot (the plot's x scale is then the caller's).

import { hms } from "./util.js";

const uPlot = globalThis.uPlot;

export const MARKER_COLOURS = { valve: "#8fa6c4", alarm: "#ffb020", abort: "#ff4040" };
const LIMIT_STYLE = { warning: { colour: "#ffb020", dash: [6, 4] }, redline: { colour: "#ff4040", dash: [] } };
const NEAR = 0.5; // a limit is drawn inside the plot once the data reach this fraction of it

// The y range: the data's, widened to a limit the data come near (else the limit is only named).
function yRange(limits) {
  return (u, lo, hi) => {
    if (lo === null || hi === null || !Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
    let a = lo;
    let b = hi;
    for (const l of limits) {
      const near = l.direction === "above" ? hi >= l.value * NEAR : lo <= l.value / NEAR;
      if (near) {
        a = Math.min(a, l.value);
        b = Math.max(b, l.value);
      }
    }
    const pad = (b - a) * 0.05 || Math.abs(b) * 0.05 || 1;
    return [a - pad, b + pad];
  };
}

function drawLimits(u, limits) {
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  const [y0, y1] = [u.scales.y.min, u.scales.y.max];
  const px = devicePixelRatio || 1;
  ctx.save();
  ctx.font = 11 * px + "px system-ui, sans-serif";
  let offScale = 0;
  for (const l of limits) {
    const style = LIMIT_STYLE[l.kind];
    const name = (l.kind === "redline" ? "red-line " : "warning ") + (l.direction === "above" ? "> " : "< ") + l.value;
    ctx.fillStyle = style.colour;
    if (l.value < y0 || l.value > y1) {
      // not within the data's range: named in the corner, so nobody thinks there is none
      // top left (live data come in on the right), on a dark box so the band does not hide it
      const text = name + (l.value > y1 ? " (above the plot)" : " (below the plot)");
      const y = top + (4 + 14 * offScale++) * px;
      ctx.fillStyle = "rgba(15,19,23,0.85)";
      ctx.fillRect(left + 2 * px, y, ctx.measureText(text).width + 4 * px, 13 * px);
      ctx.fillStyle = style.colour;
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      ctx.fillText(text, left + 4 * px, y + 1 * px);
      ctx.textBaseline = "alphabetic";
      continue;
    }
    const y = Math.round(u.valToPos(l.value, "y", true));
    ctx.strokeStyle = style.colour;
    ctx.lineWidth = 1.5 * px;
    ctx.setLineDash(style.dash.map((d) => d * px));
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + width, y);
    ctx.stroke();
    ctx.textAlign = "left";
    ctx.fillText(name, left + 4 * px, y - 3 * px);
  }
  ctx.restore();
}

function drawMarkers(u, markers) {
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  const [x0, x1] = [u.scales.x.min, u.scales.x.max];
  const px = devicePixelRatio || 1;
  ctx.save();
  ctx.font = 10 * px + "px system-ui, sans-serif";
  ctx.textAlign = "left";
  for (const m of markers) {
    if (m.t < x0 || m.t > x1) continue;
    const x = Math.round(u.valToPos(m.t, "x", true));
    ctx.strokeStyle = MARKER_COLOURS[m.kind] || "#666";
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = (m.kind === "abort" ? 2 : 1) * px;
    ctx.setLineDash(m.kind === "valve" ? [3 * px, 3 * px] : []);
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, top + height);
    ctx.stroke();
    if (m.label && x < left + width - 20 * px) ctx.fillText(m.label, x + 2 * px, top + height - 4 * px);
  }
  ctx.restore();
}

// What an event says happened, as a marker {kind, label} (or null): valve changes (actuation's
// `valves` events), aborts, alarms raised.
const MARKER_OF = {
  state: (e) => (e.new === "aborting" ? { kind: "abort", label: "abort" } : null),
  redline: (e) => ({ kind: "abort", label: "red-line " + e.channel }),
  alarm: (e) => (e.alarm && e.alarm.state === "active-unacknowledged"
    ? { kind: "alarm", label: (e.alarm.kind === "redline" ? "red-line " : "warning ") + e.alarm.channel } : null),
  valves: () => ({ kind: "valve", label: "valves" }),
};

export function markerOf(e) {
  const make = e && MARKER_OF[e.kind];
  const m = make ? make(e) : null;
  return m && Number.isFinite(e.ts) ? Object.assign({ t: e.ts }, m) : null;
}

// Limits by channel, {channel: [{kind, direction, value}]}, from `GET /api/config` (the store's
// `config`): each channel's warning limits and its red-lines.
export function limitsByChannel(config) {
  const by = {};
  const add = (channel, kind, direction, value) => {
    if (Number.isFinite(value)) (by[channel] = by[channel] || []).push({ kind, direction, value });
  };
  for (const c of (config && config.channels) || []) {
    add(c.name, "warning", "above", c.warn_above);
    add(c.name, "warning", "below", c.warn_below);
  }
  for (const r of (config && config.redlines) || []) {
    add(r.channel, "redline", "above", r.above);
    add(r.channel, "redline", "below", r.below);
  }
  return by;
}

// Tick labels HH:MM:SS, with as many decimals of a second as the ticks' spacing needs.
function timeLabel(ticks) {
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : 1;
  const decimals = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step) - 1e-9));
  return (t) => hms(t) + (decimals ? "." + (t % 1).toFixed(decimals).slice(2) : "");
}

// A band plot of one channel in `div`; returns the uPlot. `xRange()` gives [t0, t1] (null: auto).
// Dark-room colours (the page's dark theme): light axis text, dim grid, a bright trace.
const TRACE = "#5aaaff";
const DARK_AXIS = { stroke: "#c8d0d8", grid: { stroke: "#2a313a", width: 1 }, ticks: { stroke: "#2a313a", width: 1 } };

export function bandPlot(div, { title, unit, limits, markers, xRange, onZoom, width, height }) {
  const opts = {
    title: unit ? title + " [" + unit + "]" : title,
    width: width || 400,
    height: height || 190,
    scales: {
      x: { time: true, range: (u, lo, hi) => (xRange && xRange()) || [lo, hi] },
      y: { range: yRange(limits || []) },
    },
    series: [
      {},
      { label: "min", stroke: TRACE, width: 1 },
      { label: "max", stroke: TRACE, width: 1 },
    ],
    bands: [{ series: [2, 1], fill: "rgba(90,170,255,0.3)" }],
    axes: [{ space: 80, values: (u, ticks) => ticks.map(timeLabel(ticks)), ...DARK_AXIS }, { size: 56, ...DARK_AXIS }],
    legend: { show: false },
    cursor: { drag: { x: true, y: false, setScale: false } },
    hooks: {
      draw: [(u) => { drawLimits(u, limits || []); drawMarkers(u, markers ? markers() : []); }],
      // uPlot draws the selection; the span is taken from the pointer itself (below)
      setSelect: [(u) => u.select.width && u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false)],
    },
  };
  const u = new uPlot(opts, [[], [], []], div);
  if (onZoom) zoomByDrag(u, onZoom);
  followWidth(u, div, opts.height);
  return u;
}

// The plot takes its box's width whenever that changes (a window resized, a scrollbar appearing,
// the grid reflowing); the box (CSS: min-width 0, overflow hidden) never grows to fit the canvas.
function followWidth(u, div, height) {
  let width = 0;
  const observer = new ResizeObserver(() => {
    const now = Math.max(200, div.clientWidth - 8);
    if (now !== width && div.isConnected) {
      width = now;
      u.setSize({ width: now, height });
    }
  });
  observer.observe(div);
  u.hooks.destroy = (u.hooks.destroy || []).concat([() => observer.disconnect()]);
}

// A drag across the plot (at least MIN_DRAG_PX wide) zooms to its span: the positions of the pointer
// going down and up, against the plot area where it is at that moment (scrolled or not).
const MIN_DRAG_PX = 3;
function zoomByDrag(u, onZoom) {
  let down = null;
  u.over.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    down = ev.clientX;
    u.over.setPointerCapture(ev.pointerId); // its pointerup comes here, wherever it is let go
  });
  u.over.addEventListener("pointerup", (ev) => {
    if (down === null) return;
    const rect = u.over.getBoundingClientRect();
    const clamp = (x) => Math.min(rect.width, Math.max(0, x - rect.left));
    const [a, b] = [clamp(down), clamp(ev.clientX)].sort((p, q) => p - q);
    down = null;
    if (b - a >= MIN_DRAG_PX) onZoom(u.posToVal(a, "x"), u.posToVal(b, "x"));
  });
}

// {t, min: {ch: []}, max: {ch: []}} answers (history, series) → columns for one channel.
export function columns(answer, name) {
  const lo = (answer.min && answer.min[name]) || [];
  const hi = (answer.max && answer.max[name]) || [];
  return [answer.t, answer.t.map((_, i) => (lo[i] === undefined ? null : lo[i])),
    answer.t.map((_, i) => (hi[i] === undefined ? null : hi[i]))];
}
