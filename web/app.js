// The playground's page: settings → Playground (chainrule compiled to WebAssembly),
// then a loop of training steps and redraws. All math runs in the wasm module.
import init, { Playground } from "./pkg/chainrule_web.js";

const $ = (id) => document.getElementById(id);
const COLORS = [[220, 60, 60], [50, 110, 220], [40, 170, 80], [200, 150, 30], [150, 60, 200]];
const GRID = 64;
const STEPS_PER_FRAME = 5;

let pg = null;          // the Playground
let running = false;
let losses = [];
let bounds = null;      // [xmin, xmax, ymin, ymax] of the plot
let selected = null;    // the clicked element, e.g. "0.weight[1,0]"

function showError(e) {
  $("error").textContent = e ? String(e.message ?? e) : "";
}

function settings() {
  const hidden = $("hidden").value.split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
  if (hidden.some((n) => !Number.isInteger(n) || n < 1 || n > 256)) {
    throw new Error("hidden layers: widths from 1 to 256, comma-separated");
  }
  const classes = { spiral: 3, moons: 2, circles: 2, xor: 2 }[$("dataset").value];
  const sizes = [2, ...hidden, classes];
  const layers = [];
  for (let i = 0; i + 1 < sizes.length; i++) {
    layers.push({ type: "linear", in: sizes[i], out: sizes[i + 1] });
    if (i + 2 < sizes.length) layers.push({ type: $("activation").value });
  }
  const data = { name: $("dataset").value, samples: Number($("samples").value) };
  if ($("noise").value !== "") data.noise = Number($("noise").value);
  return {
    model: { layers },
    data,
    loss: "cross_entropy",
    optimizer: { type: $("optimizer").value, lr: Number($("lr").value) },
    batch_size: Number($("batch").value),
    seed: Number($("seed").value),
  };
}

function reset() {
  showError(null);
  running = false;
  $("run").textContent = "Run";
  try {
    const next = new Playground(JSON.stringify(settings()));
    if (pg) pg.free();
    pg = next;
  } catch (e) {
    showError(e);
    return;
  }
  losses = [];
  selected = null;
  const p = pg.points();
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < p.length; i += 2) {
    x0 = Math.min(x0, p[i]); x1 = Math.max(x1, p[i]);
    y0 = Math.min(y0, p[i + 1]); y1 = Math.max(y1, p[i + 1]);
  }
  const m = 0.1 * Math.max(x1 - x0, y1 - y0);
  bounds = [x0 - m, x1 + m, y0 - m, y1 + m];
  $("explain-text").textContent = "Click a weight.";
  $("graph-view").innerHTML = "";
  redraw();
}

function train(steps) {
  try {
    losses.push(...pg.train(steps));
  } catch (e) {
    running = false;
    $("run").textContent = "Run";
    showError(e);
  }
}

function redraw() {
  drawBoundary();
  drawCurve();
  drawNetwork();
  let accuracy = "";
  try { accuracy = ` · accuracy ${(100 * pg.accuracy()).toFixed(1)}%`; } catch (e) { showError(e); }
  const last = losses.length ? losses[losses.length - 1].toFixed(4) : "–";
  $("status").textContent = `step ${pg.steps()} · batch loss ${last}${accuracy}`;
  if (selected) explain(selected);
}

function drawBoundary() {
  const c = $("boundary"), g = c.getContext("2d");
  const [x0, x1, y0, y1] = bounds;
  const k = pg.outputs();
  let out;
  try { out = pg.predict_grid(x0, x1, y0, y1, GRID, GRID); } catch (e) { showError(e); return; }
  const img = g.createImageData(GRID, GRID);
  for (let j = 0; j < GRID; j++) {
    for (let i = 0; i < GRID; i++) {
      const cell = j * GRID + i, row = out.subarray(cell * k, cell * k + k);
      const max = Math.max(...row);
      let sum = 0, best = 0;
      for (let q = 0; q < k; q++) { sum += Math.exp(row[q] - max); if (row[q] > row[best]) best = q; }
      const confidence = 1 / sum;               // softmax of the winning class
      const col = COLORS[best % COLORS.length], w = 0.15 + 0.45 * (confidence - 1 / k) * k / (k - 1);
      const at = ((GRID - 1 - j) * GRID + i) * 4;   // rows run upwards from y_min
      for (let q = 0; q < 3; q++) img.data[at + q] = 255 * (1 - w) + col[q] * w;
      img.data[at + 3] = 255;
    }
  }
  const tmp = new OffscreenCanvas(GRID, GRID);
  tmp.getContext("2d").putImageData(img, 0, 0);
  g.imageSmoothingEnabled = true;
  g.drawImage(tmp, 0, 0, c.width, c.height);
  const p = pg.points(), labels = pg.labels();
  for (let n = 0; n < labels.length; n++) {
    const px = (p[2 * n] - x0) / (x1 - x0) * c.width;
    const py = (1 - (p[2 * n + 1] - y0) / (y1 - y0)) * c.height;
    const col = COLORS[labels[n] % COLORS.length];
    g.fillStyle = `rgb(${col})`;
    g.strokeStyle = n === Number($("sample").value) ? "#000" : "#fff";
    g.lineWidth = n === Number($("sample").value) ? 2.5 : 1;
    g.beginPath(); g.arc(px, py, 3.5, 0, 2 * Math.PI); g.fill(); g.stroke();
  }
}

function drawCurve() {
  const c = $("curve"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (losses.length < 2) return;
  const max = Math.max(...losses.slice(0, 50), 1e-9);
  g.strokeStyle = "#333";
  g.beginPath();
  losses.forEach((l, i) => {
    const x = i / (losses.length - 1) * c.width;
    const y = c.height - Math.min(l / max, 1) * (c.height - 4);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
}

// The network as columns of units: a line per weight, a circle per unit (its bias).
function drawNetwork() {
  const svg = $("drawing"), NS = "http://www.w3.org/2000/svg";
  const params = JSON.parse(pg.parameters());
  const layers = JSON.parse(pg.model_json()).layers;
  const linears = [];
  layers.forEach((l, index) => { if (l.type === "linear") linears.push({ index, ...l }); });
  const widths = [linears[0].in, ...linears.map((l) => l.out)];
  const W = Number(svg.getAttribute("width")), H = Number(svg.getAttribute("height"));
  const pos = (col, unit) => [30 + col * (W - 60) / (widths.length - 1),
                              H / 2 + (unit - (widths[col] - 1) / 2) * Math.min(22, (H - 30) / widths[col])];
  svg.replaceChildren();
  const add = (tag, attrs, name, title) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (name) {
      e.dataset.element = name;
      if (name === selected) e.classList.add("selected");
      e.addEventListener("click", () => { selected = name; explain(name); drawNetwork(); });
      const t = document.createElementNS(NS, "title"); t.textContent = title; e.append(t);
    }
    svg.append(e);
  };
  linears.forEach((l, col) => {
    const w = params[`${l.index}.weight`].values;
    const scale = Math.max(...w.map(Math.abs), 1e-9);
    for (let j = 0; j < l.out; j++) {
      for (let k = 0; k < l.in; k++) {
        const v = w[j * l.in + k], [xa, ya] = pos(col, k), [xb, yb] = pos(col + 1, j);
        add("line", { x1: xa, y1: ya, x2: xb, y2: yb, stroke: v > 0 ? "#2a6fdb" : "#d9482b",
                      "stroke-width": 0.5 + 3.5 * Math.abs(v) / scale, "stroke-opacity": 0.8 },
            `${l.index}.weight[${j},${k}]`, `${l.index}.weight[${j},${k}] = ${v.toFixed(4)}`);
      }
    }
  });
  for (let k = 0; k < widths[0]; k++) {
    const [x, y] = pos(0, k);
    add("circle", { cx: x, cy: y, r: 7, fill: "#eee" }, null, null);
  }
  linears.forEach((l, col) => {
    const b = params[`${l.index}.bias`]?.values;
    for (let j = 0; j < l.out; j++) {
      const [x, y] = pos(col + 1, j);
      const name = b ? `${l.index}.bias[${j}]` : null;
      add("circle", { cx: x, cy: y, r: 7, fill: b && b[j] > 0 ? "#cfe0fa" : "#fadbd3" }, name,
          b ? `${name} = ${b[j].toFixed(4)}` : null);
    }
  });
}

function explain(name) {
  $("explain-title").textContent = `∂C/∂${name}`;
  try {
    $("explain-text").textContent = pg.explain(name, Number($("sample").value), "text");
  } catch (e) {
    $("explain-text").textContent = String(e.message ?? e);
  }
}

function frame() {
  if (!running) return;
  train(STEPS_PER_FRAME);
  redraw();
  requestAnimationFrame(frame);
}

await init();
$("reset").onclick = reset;
$("run").onclick = () => {
  if (!pg) return;
  running = !running;
  $("run").textContent = running ? "Pause" : "Run";
  if (running) requestAnimationFrame(frame);
};
$("step").onclick = () => { if (pg) { train(1); redraw(); } };
$("sample").onchange = () => { if (pg) redraw(); };
$("graph").onclick = () => {
  try { $("graph-view").innerHTML = pg.graph(Number($("sample").value)); } catch (e) { showError(e); }
};
$("gradcheck").onclick = () => {
  $("explain-title").textContent = "Gradient check (first 8 points)";
  try { $("explain-text").textContent = pg.gradcheck(8); } catch (e) { showError(e); }
};
for (const id of ["dataset", "samples", "noise", "seed", "hidden", "activation", "optimizer", "lr", "batch"]) {
  $(id).onchange = reset;
}
reset();
