// The playground's page: settings → Playground (chainrule compiled to WebAssembly),
// then a loop of training steps and redraws. All math runs in the wasm module; this
// file draws canvases and an SVG, wires the controls and keeps the state in the URL.
import init, { Playground, explain_formula, formula_params } from "./pkg/chainrule_web.js";

const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";
const COLORS = [[220, 60, 60], [50, 110, 220], [40, 170, 80], [200, 150, 30], [150, 60, 200]];
const GRID = 64;          // cells per side of the decision boundary
const UNIT_GRID = 20;     // cells per side of a hidden unit's heat map
const FRAME_BUDGET_MS = 14;
const REDRAW_MS = 200;    // the drawing's period while running
const SYNTHETIC = ["spiral", "moons", "circles", "xor", "blobs"];
const CLASSES = { spiral: 3, moons: 2, circles: 2, xor: 2, blobs: 3 };

let pg = null;            // the Playground
let formula = null;       // notebook 003: the formula's text (no Playground)
let notebook = null;      // {name, lr, loss} of a notebook preset
let uploadedModel = null; // a model.json loaded by the user (replaces the editor)
let uploadedParams = false;
let running = false;
let history = [];         // {step, train, val} per redraw
let bounds = null;        // [xmin, xmax, ymin, ymax] of the plot
let selected = null;      // the clicked element, e.g. "0.weight[1,0]"
let phase = null;         // step-through: "forward", "backward", "update" or null
let lastUrlUpdate = 0;

const fmt = (v) => (Number.isFinite(v) ? String(Number(v.toPrecision(6))) : String(v));

function showError(e) {
  $("error").textContent = e ? String(e.message ?? e) : "";
}

// ---------- settings ----------

function hiddenLayers() {
  const items = $("hidden").value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  return items.map((item) => {
    const [width, act] = item.split(/\s+/);
    const n = Number(width);
    if (!Number.isInteger(n) || n < 1 || n > 256) {
      throw new Error(`hidden layers: "${item}": a width from 1 to 256, optionally followed by an activation`);
    }
    return { width: n, activation: act || $("activation").value };
  });
}

function modelJson() {
  if (uploadedModel) return uploadedModel;
  const hidden = hiddenLayers();
  const sizes = [2, ...hidden.map((h) => h.width), CLASSES[$("preset").value]];
  const layers = [];
  for (let i = 0; i + 1 < sizes.length; i++) {
    layers.push({ type: "linear", in: sizes[i], out: sizes[i + 1] });
    if (i + 2 < sizes.length) layers.push({ type: hidden[i].activation });
  }
  return { layers };
}

function optimizerSettings() {
  const opt = { type: $("optimizer").value, lr: Number($("lr").value) };
  const momentum = Number($("momentum").value);
  if (momentum > 0 && (opt.type === "sgd" || opt.type === "rmsprop")) opt.momentum = momentum;
  return opt;
}

function settings() {
  const data = {
    name: $("preset").value,
    samples: Number($("samples").value),
    validation: Number($("validation").value) / 100,
  };
  if ($("noise").value !== "") data.noise = Number($("noise").value);
  return {
    model: modelJson(),
    data,
    loss: $("loss").value,
    optimizer: optimizerSettings(),
    batch_size: Number($("batch").value),
    seed: Number($("seed").value),
  };
}

// ---------- URL state ----------

const URL_FIELDS = { samples: "n", noise: "noise", validation: "v", hidden: "h", activation: "act",
  loss: "loss", optimizer: "opt", lr: "lr", momentum: "mom", batch: "bs", seed: "seed", sample: "s" };

function writeUrl() {
  const q = new URLSearchParams();
  q.set("preset", $("preset").value);
  for (const [id, key] of Object.entries(URL_FIELDS)) if ($(id).value !== "") q.set(key, $(id).value);
  if (pg) q.set("steps", String(pg.steps()));
  if (selected) q.set("el", selected);
  if (phase) q.set("phase", phase);
  history_replace(`#${q}`);
}

function history_replace(hash) {
  if (location.hash !== hash) window.history.replaceState(null, "", hash);
}

function readUrl() {
  const q = new URLSearchParams(location.hash.slice(1));
  if (!q.has("preset")) return null;
  $("preset").value = q.get("preset");
  for (const [id, key] of Object.entries(URL_FIELDS)) if (q.has(key)) $(id).value = q.get(key);
  return { steps: Number(q.get("steps") || 0), el: q.get("el"), phase: q.get("phase") };
}

// ---------- building ----------

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status} ${r.statusText}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function fetchText(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status} ${r.statusText}`);
  return r.text();
}

// What applies to each kind of preset: a data set ("data") uses every control; a
// notebook ("notebook") brings its own data, network, loss and learning rate (the
// network fieldset shows them, disabled; its data and architecture fields are
// hidden); notebook 003 ("formula") is a formula network with no Playground, so
// only clicking a parameter applies: no training, curve, sample, step-through,
// graph, gradient check or downloads. Switching back re-enables everything.
const NOT_FOR_NOTEBOOKS = ["samples", "noise", "validation", "hidden", "activation", "batch", "seed"];
const NOT_FOR_FORMULA = ["run", "step", "sample", "phase-forward", "phase-backward", "phase-update",
  "phase-off", "graph", "gradcheck", "download-model", "download-params"];

function setPresetControls(kind) {
  const notebookOrFormula = kind !== "data";
  $("data-settings").hidden = notebookOrFormula;
  $("network-settings").disabled = notebookOrFormula;
  $("network-settings").hidden = kind === "formula";
  for (const id of NOT_FOR_NOTEBOOKS) $(id).closest("label").hidden = notebookOrFormula;
  for (const id of NOT_FOR_FORMULA) $(id).disabled = kind === "formula";
  $("boundary-figure").hidden = notebookOrFormula;
  $("curve-figure").hidden = kind === "formula";
  $("val-key").hidden = kind !== "data";   // a notebook's data has no validation split
  $("curve-sets").textContent = kind === "data" ? "sets" : "set";
  $("sample-hint").hidden = kind === "formula";
  $("step-through").hidden = kind === "formula";
  document.body.dataset.preset = kind;
}

// Builds the playground from the controls (or a notebook's files); `restore` replays
// a shared URL's steps and selection.
async function reset(restore = null) {
  showError(null);
  stop();
  document.body.dataset.state = "loading";
  const preset = $("preset").value;
  try {
    formula = null;
    notebook = null;
    let next = null;
    if (preset.startsWith("nb:")) {
      const name = preset.slice(3);
      const dir = `notebooks/${name}`;
      const meta = JSON.parse(await fetchText(`${dir}/explain.json`));
      setPresetControls(name === "003" ? "formula" : "notebook");
      if (name === "003") {
        formula = await fetchText(`${dir}/network.formula`);
        notebook = { name, lr: meta.lr, loss: "bce" };
      } else {
        notebook = { name, lr: meta.lr, loss: meta.loss };
        const [model, params, x, y] = await Promise.all([
          fetchText(`${dir}/model.json`), fetchBytes(`${dir}/params.safetensors`),
          fetchBytes(`${dir}/x.npy`), fetchBytes(`${dir}/y.npy`)]);
        $("loss").value = meta.loss;
        $("optimizer").value = "sgd";
        $("lr").value = String(meta.lr);
        $("momentum").value = "0";
        const s = {
          model: JSON.parse(model), data: { validation: 0 }, loss: meta.loss,
          optimizer: { type: "sgd", lr: meta.lr }, batch_size: 1_000_000, seed: 0,
        };
        next = Playground.with_data(JSON.stringify(s), x, y);
        next.load_parameters(params);
      }
    } else {
      setPresetControls("data");
      next = new Playground(JSON.stringify(settings()));
    }
    if (pg) pg.free();
    pg = next;
  } catch (e) {
    showError(e);
    document.body.dataset.state = "error";
    return;
  }
  history = [];
  selected = null;
  phase = null;
  uploadedParams = false;
  for (const key of ["accuracy", "validationAccuracy", "steps", "uploaded"]) delete $("status").dataset[key];
  drawCurve();
  $("explain-title").textContent = "Derivation";
  $("explain-math").textContent = formula ? "Click a parameter." : "Click a weight or a unit.";
  $("factors").replaceChildren();
  $("explain-text").textContent = "";
  $("graph-view").replaceChildren();
  $("graph-section").hidden = true;
  $("phase-note").textContent = "";
  if (pg) {
    computeBounds();
    if (restore?.steps) {
      try { pg.train(restore.steps); } catch (e) { showError(e); }
    }
    if (restore?.phase) phase = restore.phase;
    recordHistory();
  }
  if (restore?.el) selected = restore.el;   // notebook 003's parameters too
  redraw(true);
  document.body.dataset.state = "ready";
}

function computeBounds() {
  const p = [...pg.points(), ...pg.validation_points()];
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < p.length; i += 2) {
    x0 = Math.min(x0, p[i]); x1 = Math.max(x1, p[i]);
    y0 = Math.min(y0, p[i + 1]); y1 = Math.max(y1, p[i + 1]);
  }
  const m = 0.1 * Math.max(x1 - x0, y1 - y0, 1e-3);
  bounds = [x0 - m, x1 + m, y0 - m, y1 + m];
}

// ---------- training ----------

function train(steps) {
  try {
    pg.train(steps);
    return true;
  } catch (e) {
    stop();
    showError(e);
    return false;
  }
}

function recordHistory() {
  try {
    history.push({ step: pg.steps(), train: pg.loss(), val: pg.validation_loss() });
  } catch (e) { showError(e); }
}

function stop() {
  running = false;
  $("run").textContent = "Run";
}

let lastDraw = 0;

function frame() {
  if (!running || !pg) return;
  const start = performance.now();
  let ok = true;
  // Train for most of the frame's budget; draw (the slow part) a few times a second.
  while (ok && performance.now() - start < FRAME_BUDGET_MS) ok = train(1);
  if (!ok || performance.now() - lastDraw > REDRAW_MS) {
    recordHistory();
    redraw(false);
    lastDraw = performance.now();
  }
  if (running) requestAnimationFrame(frame);
}

// ---------- drawing ----------

function redraw(always) {
  if (formula) {
    drawFormula();
    $("status").textContent = `notebook 003: a formula network (derivations only)`;
    writeUrl();
    return;
  }
  if (!pg) return;
  if (!notebook) drawBoundary();
  drawCurve();
  drawNetwork();
  drawParamsTable();
  let text = `step ${pg.steps()}`;
  try {
    text += ` · loss ${fmt(pg.loss())}`;
    if (!notebook) {
      const acc = pg.accuracy();
      text += ` · accuracy ${(100 * acc).toFixed(1)}%`;
      const val = pg.validation_accuracy();
      if (val !== undefined) {
        text += ` · validation ${(100 * val).toFixed(1)}%`;
        $("status").dataset.validationAccuracy = String(val);
      }
      $("status").dataset.accuracy = String(acc);
    }
  } catch (e) { showError(e); }
  $("status").textContent = text;
  $("status").dataset.steps = String(pg.steps());
  if (selected && (always || !running)) explain(selected);
  const now = performance.now();
  if (always || !running || now - lastUrlUpdate > 500) {
    writeUrl();
    lastUrlUpdate = now;
  }
}

function toCanvas([x, y], c) {
  const [x0, x1, y0, y1] = bounds;
  return [(x - x0) / (x1 - x0) * c.width, (1 - (y - y0) / (y1 - y0)) * c.height];
}

function boundaryImage(n) {
  const [x0, x1, y0, y1] = bounds;
  const k = pg.outputs();
  const out = pg.predict_grid(x0, x1, y0, y1, n, n);
  const img = new ImageData(n, n);
  for (let j = 0; j < n; j++) {
    for (let i = 0; i < n; i++) {
      const cell = j * n + i, row = out.subarray(cell * k, cell * k + k);
      const max = Math.max(...row);
      let sum = 0, best = 0;
      for (let q = 0; q < k; q++) { sum += Math.exp(row[q] - max); if (row[q] > row[best]) best = q; }
      const confidence = 1 / sum;                  // softmax of the winning class
      const col = COLORS[best % COLORS.length];
      const w = 0.15 + 0.45 * (confidence - 1 / k) * k / Math.max(k - 1, 1);
      const at = ((n - 1 - j) * n + i) * 4;        // rows run upwards from y_min
      for (let q = 0; q < 3; q++) img.data[at + q] = 255 * (1 - w) + col[q] * w;
      img.data[at + 3] = 255;
    }
  }
  return img;
}

function drawBoundary() {
  const c = $("boundary"), g = c.getContext("2d");
  let img;
  try { img = boundaryImage(GRID); } catch (e) { showError(e); return; }
  const tmp = new OffscreenCanvas(GRID, GRID);
  tmp.getContext("2d").putImageData(img, 0, 0);
  g.imageSmoothingEnabled = true;
  g.drawImage(tmp, 0, 0, c.width, c.height);
  const chosen = Number($("sample").value);
  const drawPoints = (p, labels, hollow) => {
    for (let n = 0; n < labels.length; n++) {
      const [px, py] = toCanvas([p[2 * n], p[2 * n + 1]], c);
      const col = `rgb(${COLORS[labels[n] % COLORS.length]})`;
      const isChosen = !hollow && n === chosen;
      g.beginPath(); g.arc(px, py, isChosen ? 5 : 3.5, 0, 2 * Math.PI);
      if (hollow) { g.strokeStyle = col; g.lineWidth = 1.5; g.stroke(); continue; }
      g.fillStyle = col; g.fill();
      g.strokeStyle = isChosen ? "#000" : "#fff"; g.lineWidth = isChosen ? 2.5 : 1; g.stroke();
    }
  };
  drawPoints(pg.validation_points(), pg.validation_labels(), true);
  drawPoints(pg.points(), pg.labels(), false);
}

function drawCurve() {
  const c = $("curve"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  c.dataset.points = String(history.length);
  if (history.length < 2) {
    if (history.length === 1 && !running) {
      g.fillStyle = "#777"; g.font = "12px system-ui";
      g.fillText(`step ${history[0].step} · loss ${fmt(history[0].train)}: Run or Step to draw the curve`, 8, c.height / 2);
    }
    return;
  }
  const all = history.flatMap((h) => (h.val === undefined ? [h.train] : [h.train, h.val]));
  const max = Math.max(...all, 1e-9);
  const last = history[history.length - 1].step || 1;
  const line = (key, color) => {
    g.strokeStyle = color; g.lineWidth = 1.5; g.beginPath();
    let started = false;
    for (const h of history) {
      if (h[key] === undefined) continue;
      const x = h.step / last * (c.width - 2) + 1, y = c.height - 2 - h[key] / max * (c.height - 20);
      started ? g.lineTo(x, y) : g.moveTo(x, y);
      started = true;
    }
    g.stroke();
  };
  line("train", "#333");
  line("val", "#e07b00");
  g.fillStyle = "#555"; g.font = "11px system-ui";
  g.fillText(`max ${fmt(max)} · step ${last}`, 4, 11);
}

// Layout: a column per layer of units (the inputs first), a line per weight.
function layout() {
  const layers = JSON.parse(pg.model_json()).layers;
  const linears = [];
  layers.forEach((l, index) => { if (l.type === "linear") linears.push({ index, ...l }); });
  // The activation after each linear layer (its index), if any.
  for (const l of linears) {
    const next = layers[l.index + 1];
    l.act = next && next.type !== "linear" ? { index: l.index + 1, type: next.type } : null;
  }
  const widths = [linears[0].in, ...linears.map((l) => l.out)];
  const svg = $("drawing");
  const W = Number(svg.getAttribute("width")), H = Number(svg.getAttribute("height"));
  // Units of a column share its height, at most 110 px apart: a 2-2-1 network spreads
  // out so that the labels of crossing edges do not meet.
  const spacing = (col) => Math.min(110, (H - 60) / widths[col]);
  const pos = (col, unit) => [40 + col * (W - 80) / (widths.length - 1),
    H / 2 + (unit - (widths[col] - 1) / 2) * spacing(col)];
  return { linears, widths, pos, spacing };
}

function heatMaps(lay) {
  // Each hidden unit's activation over the plane (2-D inputs only).
  const maps = {};
  if (notebook || lay.widths[0] !== 2) return maps;
  const [x0, x1, y0, y1] = bounds;
  lay.linears.slice(0, -1).forEach((l, col) => {
    if (!l.act) return;
    let out;
    try { out = pg.layer_grid(l.act.index, x0, x1, y0, y1, UNIT_GRID, UNIT_GRID); } catch { return; }
    for (let j = 0; j < l.out; j++) {
      let lo = Infinity, hi = -Infinity;
      for (let c = 0; c < UNIT_GRID * UNIT_GRID; c++) {
        const v = out[c * l.out + j]; lo = Math.min(lo, v); hi = Math.max(hi, v);
      }
      const cv = new OffscreenCanvas(UNIT_GRID, UNIT_GRID);
      const img = new ImageData(UNIT_GRID, UNIT_GRID);
      for (let r = 0; r < UNIT_GRID; r++) {
        for (let i = 0; i < UNIT_GRID; i++) {
          const v = out[(r * UNIT_GRID + i) * l.out + j];
          // Blue where the unit is high, orange where low, by its own range.
          const t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
          const at = ((UNIT_GRID - 1 - r) * UNIT_GRID + i) * 4;
          img.data[at] = 240 - 190 * t; img.data[at + 1] = 150 - 40 * t + 60 * t; img.data[at + 2] = 60 + 180 * t;
          img.data[at + 3] = 255;
        }
      }
      cv.getContext("2d").putImageData(img, 0, 0);
      maps[`${col + 1}:${j}`] = cv;
    }
  });
  return maps;
}

let heatCanvas = document.createElement("canvas");

function drawNetwork() {
  const svg = $("drawing");
  const params = JSON.parse(pg.parameters());
  const lay = layout();
  const { linears, widths, pos, spacing } = lay;
  const trace = phase ? JSON.parse(pg.trace(Number($("sample").value))) : null;
  svg.replaceChildren();
  const add = (tag, attrs, parent = svg) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    parent.append(e);
    return e;
  };
  const clickable = (e, name, title) => {
    e.dataset.element = name;
    if (name === selected) e.classList.add("selected");
    e.addEventListener("click", () => { selected = name; redraw(true); });
    const t = document.createElementNS(NS, "title"); t.textContent = title; e.append(t);
  };
  const few = linears.reduce((n, l) => n + l.in * l.out, 0) <= 12;
  // The units the chosen weight joins ("source" → "target"), or the chosen bias's
  // unit ("target"), by "column:unit": in a column too dense to write step-through
  // numbers on, these are ringed and their numbers written in the note.
  const focus = new Map();
  const m = /^(\d+)\.(weight|bias)\[(\d+)(?:,(\d+))?\]$/.exec(selected ?? "");
  const chosenCol = m ? linears.findIndex((l) => l.index === Number(m[1])) : -1;
  if (chosenCol >= 0) {
    focus.set(`${chosenCol + 1}:${m[3]}`, "target");
    if (m[4] !== undefined) focus.set(`${chosenCol}:${m[4]}`, "source");
  }
  let hiddenLabels = false;
  const focusNotes = [];     // the chosen weight's units' numbers, when not drawn
  // A unit's step-through numbers: always in its tooltip, and written above it
  // unless its column is too dense.
  const traceLabels = (col, x, y, lines, circle) => {
    if (!lines.length) return;
    let title = circle.querySelector("title");
    if (title) title.textContent += "\n";
    else title = circle.appendChild(document.createElementNS(NS, "title"));
    title.textContent += lines.join("\n");
    const last = col === widths.length - 1;
    if (spacing(col) < 11 * lines.length + 16) {
      // No room between a dense column's units (nor between its column and the
      // next, for the chosen weight's units): the numbers go to the tooltip, and
      // the chosen weight's units' numbers to the note under the drawing.
      hiddenLabels = true;
      const unit = Number(circle.id.split("-")[2]);
      const role = focus.get(`${col}:${unit}`);
      if (role) {
        circle.classList.add("focus");
        const where = last ? `output ${unit + 1}` : `unit ${unit + 1} of layer ${col}`;
        focusNotes[role === "source" ? 0 : 1] = `${where}: ${lines.join(", ")}`;
      }
      return;
    }
    // Above the unit; the last column's labels end at the unit's right edge, inside
    // the drawing.
    lines.forEach((text, i) => {
      add("text", { x: last ? x + 12 : x, y: y - 15 - 11 * (lines.length - 1 - i),
        "text-anchor": last ? "end" : "middle", class: "trace" }).textContent = text;
    });
  };
  const edgeLabels = [];
  linears.forEach((l, col) => {
    const w = params[`${l.index}.weight`].values;
    const scale = Math.max(...w.map(Math.abs), 1e-9);
    for (let j = 0; j < l.out; j++) {
      for (let k = 0; k < l.in; k++) {
        const v = w[j * l.in + k], [xa, ya] = pos(col, k), [xb, yb] = pos(col + 1, j);
        const name = `${l.index}.weight[${j},${k}]`;
        const e = add("line", { x1: xa, y1: ya, x2: xb, y2: yb, stroke: v > 0 ? "#2a6fdb" : "#d9482b",
          "stroke-width": 0.8 + 3.5 * Math.abs(v) / scale, "stroke-opacity": 0.75,
          id: `edge-${l.index}-${j}-${k}` });
        clickable(e, name, `${name} = ${fmt(v)}`);
        // A label per weight: its value, or the step-through phase's number.
        let label = few ? fmt(v) : null;
        if (trace) {
          const p = trace.params[`${l.index}.weight`];
          const at = j * l.in + k;
          label = phase === "forward" ? (few ? fmt(v) : null)
            : phase === "backward" ? `∂C/∂w=${fmt(p.grad[at])}` : `→ ${fmt(p.new[at])}`;
          if (!few && phase !== "forward" && name !== selected) label = null;
        }
        if (label !== null) edgeLabels.push({ x: xa + (xb - xa) * 0.62, y: ya + (yb - ya) * 0.62, text: label, name });
      }
    }
  });
  const heat = heatMaps(lay);
  for (let k = 0; k < widths[0]; k++) {
    const [x, y] = pos(0, k);
    const circle = add("circle", { cx: x, cy: y, r: 11, fill: "#eee", class: "input", id: `unit-0-${k}` });
    add("text", { x: x - 16, y: y + 4, "text-anchor": "end", class: "unit-label" }).textContent = `x${k + 1}`;
    if (trace) traceLabels(0, x, y, [fmt(trace.x[k])], circle);
  }
  linears.forEach((l, col) => {
    const b = params[`${l.index}.bias`]?.values;
    for (let j = 0; j < l.out; j++) {
      const [x, y] = pos(col + 1, j);
      const name = b ? `${l.index}.bias[${j}]` : null;
      const g = add("g", { class: "unit" });
      const map = heat[`${col + 1}:${j}`];
      if (map) {
        heatCanvas.width = UNIT_GRID; heatCanvas.height = UNIT_GRID;
        heatCanvas.getContext("2d").drawImage(map, 0, 0);
        add("image", { x: x - 11, y: y - 11, width: 22, height: 22, href: heatCanvas.toDataURL(),
          preserveAspectRatio: "none", class: "heat" }, g);
      }
      const circle = add("circle", { cx: x, cy: y, r: 11, fill: map ? "none" : (b && b[j] > 0 ? "#cfe0fa" : "#fadbd3"),
        id: `unit-${col + 1}-${j}` }, g);
      if (name) clickable(circle, name, `${name} = ${fmt(b[j])}`);
      if (trace) {
        const z = trace.layers[l.index], a = l.act ? trace.layers[l.act.index] : null;
        const lines = phase === "forward"
          ? [`z=${fmt(z.value[j])}`, ...(a ? [`a=${fmt(a.value[j])}`] : [])]
          : phase === "backward"
            ? [`∂C/∂z=${fmt(z.grad[j])}`, ...(a ? [`∂C/∂a=${fmt(a.grad[j])}`] : [])]
            : b ? [`b→${fmt(trace.params[`${l.index}.bias`].new[j])}`] : [];
        traceLabels(col + 1, x, y, lines, circle);
      }
    }
  });
  for (const lab of edgeLabels) {
    const t = add("text", { x: lab.x, y: lab.y, "text-anchor": "middle", class: "edge-label" });
    t.dataset.element = lab.name;
    t.textContent = lab.text;
  }
  if (trace) {
    $("phase-note").textContent = {
      forward: `Forward pass of sample ${$("sample").value}: each unit's z = Σ w·a + b and a = f(z); loss C = ${fmt(trace.loss)}.`,
      backward: `Backward pass: ∂C/∂ of each unit's z and a, and of ${few ? "each" : "the chosen"} weight (chain rule from the loss back).`,
      update: `Update with η = ${fmt(trace.lr)} on this one sample: θ ← θ − η·∂C/∂θ.`,
    }[phase] + (hiddenLabels ? " Too many units to write on: hover a unit for its numbers." : "")
      + (focusNotes.length ? ` The chosen ${m[2]}'s ${m[4] === undefined ? "unit" : "units"} (ringed): ${focusNotes.filter(Boolean).join("; ")}.` : "");
  } else {
    $("phase-note").textContent = "";
  }
}

// Every parameter's value, in a table a test (or a learner) can read.
function drawParamsTable() {
  const params = JSON.parse(pg.parameters());
  const names = Object.keys(params);
  const total = names.reduce((n, k) => n + params[k].values.length, 0);
  const box = $("params-table");
  if (total > 40) { box.replaceChildren(); return; }
  const table = document.createElement("table");
  table.innerHTML = "<caption>Parameters</caption>";
  for (const name of names) {
    const { shape, values } = params[name];
    values.forEach((v, i) => {
      const el = shape.length === 2 ? `${name}[${Math.floor(i / shape[1])},${i % shape[1]}]` : `${name}[${i}]`;
      const tr = table.insertRow();
      tr.insertCell().textContent = el;
      const td = tr.insertCell();
      td.textContent = fmt(v);
      td.dataset.element = el;
      td.className = "value";
      tr.onclick = () => { selected = el; redraw(true); };
      if (el === selected) tr.classList.add("selected");
    });
  }
  box.replaceChildren(table);
}

function drawFormula() {
  const svg = $("drawing");
  svg.replaceChildren();
  $("boundary-figure").hidden = true;
  const box = $("params-table");
  const table = document.createElement("table");
  table.innerHTML = "<caption>Parameters (click one)</caption>";
  for (const [name, value] of JSON.parse(formula_params(formula))) {
    const tr = table.insertRow();
    tr.insertCell().textContent = name;
    const td = tr.insertCell();
    td.textContent = fmt(value);
    td.dataset.element = name;
    if (name === selected) tr.classList.add("selected");
    tr.onclick = () => { selected = name; redraw(true); };
  }
  box.replaceChildren(table);
  const pre = document.createElementNS(NS, "foreignObject");
  pre.setAttribute("width", "100%"); pre.setAttribute("height", "100%");
  const p = document.createElement("pre");
  p.className = "formula";
  p.textContent = formula.split("\n").filter((l) => !l.startsWith("#") && l.trim()).join("\n");
  pre.append(p);
  svg.append(pre);
  if (selected) explain(selected);
}

// ---------- the derivation panel ----------

// Markdown as `chainrule explain --format markdown` writes it: `### heading`, `$$…$$`
// mathematics (typeset by KaTeX when it loaded) and plain text.
function renderMarkdown(md, box) {
  box.replaceChildren();
  const parts = md.split(/\$\$([\s\S]*?)\$\$/);
  let para = document.createElement("p");
  box.append(para);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      const display = part.includes("\n");
      const span = document.createElement("span");
      span.className = display ? "display" : "inline";
      if (window.katex) {
        // A display equation (the chain with its factors' formulas) is typeset in
        // KaTeX's inline mode with \displaystyle: the same look, but KaTeX breaks
        // inline mathematics after a top-level relation or operator (=, ·, +), so a
        // long chain wraps inside the panel instead of running past it. A piece that
        // cannot break scrolls inside its own block (style.css: .math .display).
        const tex = display ? `\\displaystyle ${part.trim()}` : part.trim();
        window.katex.render(tex, span, { displayMode: false, throwOnError: false, output: "htmlAndMathml" });
      } else {
        span.textContent = part.trim();
      }
      para.append(span);
      return;
    }
    part.split("\n").forEach((line, n) => {
      if (n > 0 && line === "" && para.childNodes.length) { para = document.createElement("p"); box.append(para); }
      if (line.startsWith("### ")) {
        const h = document.createElement("h3");
        h.textContent = line.slice(4).replaceAll("`", "");
        box.insertBefore(h, para);
      } else if (line) {
        para.append(document.createTextNode(line + " "));
      }
    });
  });
}

// The factors of the chain, each with its number; hovering one lights the part of
// the drawing it comes from.
function renderFactors(d) {
  const box = $("factors");
  box.replaceChildren();
  const s = d.samples[0];
  const m = /^(\d+)\.(weight|bias)\[(\d+)(?:,(\d+))?\]$/.exec(d.param);
  const lay = layout();
  const col = m ? lay.linears.findIndex((l) => l.index === Number(m[1])) : -1;
  const unit = m ? Number(m[3]) : 0;
  const edge = m && m[2] === "weight" ? $(`edge-${m[1]}-${m[3]}-${m[4]}`) : null;
  const light = (els, on) => els.forEach((e) => e?.classList.toggle("lit", on));
  const row = document.createElement("div");
  row.className = "factor-row";
  row.append("factors: ");
  s.factors.forEach((f, i) => {
    const chip = document.createElement("span");
    chip.className = "factor";
    chip.title = `${f.name} = ${f.formula}`;
    chip.innerHTML = `<span class="name"></span> = <span class="value"></span>`;
    chip.querySelector(".name").textContent = f.name;
    chip.querySelector(".value").textContent = fmt(f.value);
    chip.dataset.value = String(f.value);
    // The first factor of a weight is its input (the unit it leaves); the others
    // belong to the unit it feeds.
    const targets = i === 0 && edge ? [edge, $(`unit-${col}-${m[4]}`)] : [edge, $(`unit-${col + 1}-${unit}`)];
    chip.onmouseenter = () => light(targets, true);
    chip.onmouseleave = () => light(targets, false);
    row.append(chip, i + 1 < s.factors.length ? " · " : "");
  });
  row.append(` = ${fmt(s.term)}`);
  box.append(row);
  if (s.hidden_sum) {
    const h = s.hidden_sum;
    const sum = document.createElement("div");
    sum.className = "factor-row";
    sum.append(`∂C/∂a of unit ${unit + 1} sums over the ${h.terms.length} unit(s) it feeds: `);
    h.terms.forEach((t, q) => {
      const chip = document.createElement("span");
      chip.className = "factor term";
      chip.textContent = `${fmt(t.weight)} · ${fmt(t.activation_derivative)} · ${fmt(t.dC_da)}`;
      const next = lay.linears[col + 1];
      const targets = next ? [$(`edge-${next.index}-${q}-${unit}`), $(`unit-${col + 2}-${q}`)] : [];
      chip.onmouseenter = () => light(targets, true);
      chip.onmouseleave = () => light(targets, false);
      sum.append(chip, q + 1 < h.terms.length ? " + " : "");
    });
    sum.append(` = ${fmt(h.value)}`);
    box.append(sum);
  }
  const up = document.createElement("div");
  up.className = "factor-row update";
  up.textContent = `update: ${fmt(d.update.old)} − ${fmt(d.update.lr)} · ${fmt(d.autodiff)} = ${fmt(d.update.new)}`;
  up.dataset.new = String(d.update.new);
  box.append(up);
}

function explain(name) {
  // The loss's own name: C for a network, the formula's (notebook 003: L) otherwise.
  const loss = formula ? (/^loss\s+(\w+)\s*=/m.exec(formula)?.[1] ?? "L") : "C";
  $("explain-title").textContent = `∂${loss}/∂${name}`;
  $("explain-text").textContent = "";
  try {
    if (formula) {
      renderMarkdown(explain_formula(formula, name, notebook.lr, "markdown"), $("explain-math"));
      $("factors").replaceChildren();
      $("explain-text").textContent = explain_formula(formula, name, notebook.lr, "text");
      return;
    }
    const sample = Number($("sample").value);
    renderMarkdown(pg.explain(name, sample, "markdown"), $("explain-math"));
    renderFactors(JSON.parse(pg.explain(name, sample, "json")));
  } catch (e) {
    $("explain-math").textContent = String(e.message ?? e);
    $("factors").replaceChildren();
  }
}

// ---------- files ----------

function download(name, bytes, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([bytes], { type }));
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

async function upload(files) {
  showError(null);
  const byName = {};
  for (const f of files) byName[f.name.endsWith(".json") ? "model" : "params"] = f;
  try {
    if (byName.model) {
      const text = await byName.model.text();
      uploadedModel = JSON.parse(text);
      if (!SYNTHETIC.includes($("preset").value)) $("preset").value = "spiral";
      await reset();
      if (document.body.dataset.state === "error") { uploadedModel = null; return; }
    }
    if (byName.params && pg) {
      pg.load_parameters(new Uint8Array(await byName.params.arrayBuffer()));
      uploadedParams = true;
      history = [];
      recordHistory();
      redraw(true);
    }
    $("status").dataset.uploaded = "yes";
  } catch (e) {
    showError(e);
  }
}

// ---------- wiring ----------

await init();
window.chainrule = { get playground() { return pg; } };   // for the console and the tests
$("reset").onclick = () => { uploadedModel = null; reset(); };
$("preset").onchange = () => {
  uploadedModel = null;
  const preset = $("preset").value;
  if (SYNTHETIC.includes(preset)) {
    $("loss").value = "cross_entropy";
    $("optimizer").value = "adam";
    $("lr").value = "0.01";
  }
  $("sample").value = "0";
  reset();
};
$("run").onclick = () => {
  if (!pg) return;
  running = !running;
  $("run").textContent = running ? "Pause" : "Run";
  if (running) requestAnimationFrame(frame); else redraw(true);
};
$("step").onclick = () => { if (pg && train(1)) { recordHistory(); redraw(true); } };
$("sample").onchange = () => { if (pg || formula) redraw(true); };
$("boundary").onclick = (ev) => {
  if (!pg) return;
  const c = $("boundary"), r = c.getBoundingClientRect();
  const [mx, my] = [(ev.clientX - r.left) * c.width / r.width, (ev.clientY - r.top) * c.height / r.height];
  const p = pg.points();
  let best = -1, dist = 100;
  for (let n = 0; n < p.length / 2; n++) {
    const [px, py] = toCanvas([p[2 * n], p[2 * n + 1]], c);
    const d = (px - mx) ** 2 + (py - my) ** 2;
    if (d < dist) { dist = d; best = n; }
  }
  if (best >= 0) { $("sample").value = String(best); redraw(true); }
};
for (const p of ["forward", "backward", "update"]) {
  $(`phase-${p}`).onclick = () => { if (pg) { phase = p; redraw(true); } };
}
$("phase-off").onclick = () => { phase = null; if (pg) redraw(true); };
$("graph").onclick = () => {
  if (!pg) return;
  try {
    const sample = Number($("sample").value);
    $("graph-view").innerHTML = pg.graph(sample);
    $("graph-title").textContent = `Graph of the loss on sample ${sample} (chainrule graph)`;
    $("graph-section").hidden = false;
    $("graph-section").scrollIntoView({ block: "nearest" });
  } catch (e) { showError(e); }
};
$("gradcheck").onclick = () => {
  if (!pg) return;
  // Under the derivation (if any), headed, so that the panel's title still names it.
  const n = Math.min(8, pg.samples());
  try {
    $("explain-text").textContent = `Gradient check on the first ${n} point(s) (chainrule gradcheck):\n\n${pg.gradcheck(n)}`;
    $("explain-text").scrollIntoView({ block: "nearest" });
  } catch (e) { showError(e); }
};
$("share").onclick = async () => {
  writeUrl();
  try { await navigator.clipboard.writeText(location.href); $("share").textContent = "Link copied"; } catch {
    $("share").textContent = "Link in the address bar";
  }
  setTimeout(() => { $("share").textContent = "Copy link"; }, 2000);
};
$("download-model").onclick = () => { if (pg) download("model.json", pg.model_json(), "application/json"); };
$("download-params").onclick = () => {
  if (!pg) return;
  try { download("params.safetensors", pg.parameters_safetensors(), "application/octet-stream"); } catch (e) { showError(e); }
};
$("upload").onchange = (ev) => upload([...ev.target.files]);
for (const id of ["samples", "noise", "validation", "seed", "hidden", "activation", "loss", "optimizer", "lr", "momentum", "batch"]) {
  $(id).onchange = () => { uploadedModel = null; reset(); };
}
window.addEventListener("hashchange", () => {
  const restore = readUrl();
  if (restore) reset(restore);
});
reset(readUrl());
