// Plots panel: the last WINDOW_S of chosen channels as min/max bands, and the latest value of every
// channel (click a row to add or remove its plot). `?channels=P1,P5` chooses the plots.
/* global uPlot */
import { store } from "./store.js";
import { WINDOW_S, buf } from "./telemetry.js";
import { el, fmt, hms, info } from "./util.js";

const plots = {}; // channel -> {u, div}
let chosen = (new URLSearchParams(location.search).get("channels") || "P1,P5,THRUST,Tbogaz1")
  .split(",").filter(Boolean);
let drawn = -1; // buf.version last drawn
let box = null; // the plots' grid
let values = null; // the values table

function lastT() {
  return buf.t.length ? buf.t[buf.t.length - 1] : Date.now() / 1000;
}

function makePlot(name) {
  const div = el("div", "plot");
  box.appendChild(div);
  const u = new uPlot(
    {
      title: name,
      width: 400,
      height: 190,
      // Every plot shows the same WINDOW_S ending at the newest sample, so they line up.
      scales: { x: { time: true, range: () => [lastT() - WINDOW_S, lastT()] } },
      series: [
        {},
        { label: "min", stroke: "#1f77b4", width: 1 },
        { label: "max", stroke: "#d62728", width: 1 },
      ],
      bands: [{ series: [2, 1], fill: "rgba(31,119,180,0.25)" }],
      // plain HH:MM:SS ticks: uPlot's default second row (date, minute) overlaps on narrow plots
      axes: [{ space: 70, values: (u, ticks) => ticks.map(hms) }, {}],
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
    },
    [[], [], []],
    div,
  );
  plots[name] = { u, div };
}

function setChosen(names) {
  chosen = names;
  for (const name of Object.keys(plots)) {
    if (!chosen.includes(name)) {
      plots[name].u.destroy();
      plots[name].div.remove();
      delete plots[name];
    }
  }
  chosen.forEach((name) => plots[name] || makePlot(name));
  // keep the choice across reloads (and in a bookmark)
  const query = new URLSearchParams(location.search);
  query.set("channels", chosen.join(","));
  history.replaceState(null, "", location.pathname + "?" + query.toString().replace(/%2C/g, ","));
  markChosenRows();
  resizePlots();
  drawn = -1;
}

function togglePlot(name) {
  setChosen(chosen.includes(name) ? chosen.filter((c) => c !== name) : chosen.concat([name]));
}

function resizePlots() {
  for (const p of Object.values(plots)) {
    p.u.setSize({ width: Math.max(200, p.div.clientWidth - 8), height: 190 });
  }
}

function redraw() {
  if (drawn !== buf.version) {
    drawn = buf.version;
    for (const [name, p] of Object.entries(plots)) {
      if (buf.lo[name]) p.u.setData([buf.t, buf.lo[name], buf.hi[name]]);
    }
  }
  requestAnimationFrame(redraw);
}

// One row per channel, in two columns; click a row (or Enter on it) to show or hide its plot.
function buildValuesTable(channels) {
  values.textContent = "";
  values.style.gridTemplateRows = "repeat(" + Math.ceil(channels.length / 2) + ", auto)";
  const units = unitsOf(store.get("meta"));
  for (const name of channels) {
    const row = el("button", "row");
    row.type = "button";
    row.dataset.channel = name;
    row.setAttribute("aria-label", "plot " + name);
    row.title = "show or hide the plot of " + name;
    row.append(el("span", "name", name), el("span", "value", "—"), el("span", "unit", units[name] || ""));
    row.addEventListener("click", () => togglePlot(name));
    values.appendChild(row);
  }
  markChosenRows();
  const unknown = chosen.filter((c) => channels.length && !channels.includes(c));
  if (unknown.length) info("not channels of this stand: " + unknown.join(", "));
}

function unitsOf(meta) {
  const units = {};
  for (const c of (meta && meta.channels) || []) units[c.name] = c.unit || "";
  return units;
}

function markChosenRows() {
  for (const row of values.children) {
    row.classList.toggle("plotted", chosen.includes(row.dataset.channel));
    row.setAttribute("aria-pressed", String(chosen.includes(row.dataset.channel)));
  }
}

function showLatest(latest) {
  for (const row of values.children) {
    const v = latest[row.dataset.channel];
    row.children[1].textContent = v ? fmt(v.value) : "—";
    row.children[1].title = v ? "newest 10 ms: " + fmt(v.lo) + " … " + fmt(v.hi) : "";
  }
}

export function mount(root) {
  box = el("div", "plots");
  const valuesTitle = el("h3", "", "Latest values");
  valuesTitle.append(el("small", "", "click: plot"));
  values = el("div", "values");
  values.id = "values";
  root.append(box, valuesTitle, values);
  store.watch("channels", buildValuesTable);
  store.watch("meta", (meta) => {
    const units = unitsOf(meta);
    for (const row of values.children) row.children[2].textContent = units[row.dataset.channel] || "";
  });
  store.watch("latest", showLatest);
  setChosen(chosen);
  window.addEventListener("resize", resizePlots);
  requestAnimationFrame(redraw);
}
