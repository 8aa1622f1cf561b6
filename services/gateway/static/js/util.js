// Small DOM and formatting helpers shared by every panel.

export const $ = (id) => document.getElementById(id);

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function hms(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

export function clock(ts) {
  return ts ? hms(ts) : "";
}

export function fmt(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  return v.toFixed(a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3);
}

export function deg(v) {
  return Number.isFinite(v) ? v.toFixed(1) + "°" : "?";
}

export function badge(node, text, cls) {
  node.textContent = text;
  node.className = "badge " + (cls || "");
}

// The answer line under the header: command results and refusals, for the operator to read.
export function answer(text, ok) {
  const line = $("answer");
  line.textContent = hms(Date.now() / 1000) + "  " + text;
  line.className = "answer " + (ok === true ? "ok" : ok === false ? "bad" : "");
}

// The info line: what the page itself could not do (no history, unknown channel…).
export function info(text) {
  const line = $("info");
  if (line) line.textContent = text;
}
