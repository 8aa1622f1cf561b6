// Bench panel: how fast this page turns telemetry into pixels, measured here: telemetry frame
// received → plots painted (p50, p99 over the last FRAMES drawn), and drawn frames per second.
// bench/dashboard.py reads the same figures (window.rcsBench) with the stand at 10 kHz.
import { onPainted } from "./plots.js";
import { el } from "./util.js";

const FRAMES = 5000; // about 2.5 min at 30 frames/s
const SHOW_EVERY_MS = 1000;

// window.rcsBench: frame → painted (ms) and sample → painted (ms, the sample's UNIX time against
// this machine's clock) of the last FRAMES frames drawn.
const bench = { painted: [], sampleAge: [], frames: 0 };
window.rcsBench = bench;

function percentile(values, p) {
  if (!values.length) return NaN;
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function keep(list, value) {
  list.push(value);
  if (list.length > FRAMES) list.shift();
}

export function mount(root) {
  const figures = el("div", "bench-figures");
  const shown = {};
  for (const [key, label] of [["p50", "frame → painted p50"], ["p99", "p99"], ["fps", "plots drawn/s"]]) {
    const box = el("span", "", label + " ");
    shown[key] = el("b", "", "—");
    shown[key].id = "bench-" + key;
    box.append(shown[key]);
    figures.append(box);
  }
  root.append(figures);
  onPainted((frame, paintedAt) => {
    if (!frame.received) return;
    bench.frames += 1;
    keep(bench.painted, paintedAt - frame.received);
    keep(bench.sampleAge, Date.now() - frame.sampleT * 1000);
  });
  let frames = 0;
  setInterval(() => {
    const ms = (v) => (Number.isFinite(v) ? v.toFixed(1) + " ms" : "—");
    shown.p50.textContent = ms(percentile(bench.painted, 50));
    shown.p99.textContent = ms(percentile(bench.painted, 99));
    shown.fps.textContent = String(bench.frames - frames);
    frames = bench.frames;
  }, SHOW_EVERY_MS);
}
