// The live lab's page: a WebSocket client of `atheria serve` (protocol: docs/protocol.md).
"use strict";

const token = new URLSearchParams(location.search).get("token");
const withToken = (path) => (token ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : path);
const $ = (id) => document.getElementById(id);

const lab = {
  socket: null,
  hello: null,
  status: null,
  frame: null, // the newest frame's header
  view: { scale: 0, x: 0, y: 0 }, // shared pan and zoom (CSS pixels per cell, offset)
  series: { energy: [], entropy: [], matter: [], rate: [] },
  universeKey: "", // what identifies the universe the charts follow
  training: [],
  lastStep: -1,
  probing: false,
};

function send(command) {
  if (lab.socket && lab.socket.readyState === WebSocket.OPEN) lab.socket.send(JSON.stringify(command));
}

function say(text, isError) {
  const messages = $("messages");
  messages.textContent = text;
  messages.style.color = isError ? "#e07070" : "";
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(withToken(`${scheme}://${location.host}/ws`));
  socket.binaryType = "arraybuffer";
  lab.socket = socket;
  socket.onopen = () => setConnection("connected", true);
  socket.onclose = () => {
    setConnection("disconnected", false);
    setTimeout(connect, 1000);
  };
  socket.onmessage = (event) => (typeof event.data === "string" ? onMessage(JSON.parse(event.data)) : onFrame(event.data));
}

function setConnection(text, ok) {
  const badge = $("connection");
  badge.textContent = text;
  badge.className = `badge ${ok ? "ok" : "bad"}`;
}

function onMessage(message) {
  switch (message.type) {
    case "hello": return onHello(message);
    case "status": return onStatus(message);
    case "probe": return showProbe(message);
    case "snapshot": return addFile(message.name + ".safetensors", message.url);
    case "recorded": return addFile(message.name + ".gif", message.url);
    case "train_history": return onTrainHistory(message);
    case "training": return say(`training in ${message.dir}`);
    case "loaded": return onLoaded(message);
    case "error": return say(`${message.cmd ? message.cmd + ": " : ""}${message.error}`, true);
    default: return undefined;
  }
}

function onHello(hello) {
  lab.hello = hello;
  $("model").textContent = hello.model;
  $("device").textContent = hello.device;
  const views = $("views");
  views.innerHTML = "";
  for (const view of hello.views) {
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" value="${view.name}"> ${view.name}`;
    label.querySelector("input").onchange = () => {
      const chosen = [...views.querySelectorAll("input:checked")].map((input) => input.value);
      if (chosen.length > 0) send({ cmd: "set", views: chosen });
    };
    views.appendChild(label);
  }
  fillSelect($("train-arch"), hello.archs, "mlp");
  fillSelect($("train-loss"), hello.losses, "evolutionary");
  applyMode(hello.sparse);
  showToolParams();
}

/// A sparse run refuses the dense-only commands: their controls are disabled and say why, and
/// a click places matter instead of applying a tool.
function applyMode(sparse) {
  document.body.classList.toggle("sparse", sparse);
  const why = sparse ? "a sparse run has no such control (dense runs only)" : "";
  for (const id of ["universe", "snapshot", "upload", "rewind", "click-out", "click-out-chance", "train-load", "train-load-last"]) {
    $(id).disabled = sparse;
    $(id).title = why;
  }
  for (const option of $("tool").options) {
    const forSparse = option.value === "matter";
    option.disabled = sparse ? !forSparse && option.value !== "" : forSparse;
  }
  $("tool").value = sparse ? "matter" : "";
  for (const input of $("views").querySelectorAll("input")) {
    if (sparse && (input.value === "energy" || input.value === "physics")) {
      input.disabled = true;
      input.parentElement.title = "needs the dense engine's update";
    }
  }
}

function onLoaded(message) {
  $("model").textContent = message.model;
  $("model").title = message.model;
  say(`running the ${message.which} checkpoint: ${message.dir}`);
}

function fillSelect(select, names, chosen) {
  select.innerHTML = names.map((name) => `<option ${name === chosen ? "selected" : ""}>${name}</option>`).join("");
}

function onStatus(status) {
  lab.status = status;
  const state = status.healthy === false ? "stopped" : status.running ? "running" : status.pending_steps ? "stepping" : "paused";
  $("status-line").textContent =
    `${state} · step ${status.step} · ${status.steps_per_s.toFixed(1)} steps/s · ` +
    `${status.grid[0]}x${status.grid[1]} x${status.batch} · ${status.clients} client(s)` +
    (status.recording ? ` · recording ${status.recording} more` : "");
  const health = $("health");
  health.hidden = !status.error;
  health.textContent = status.error ? `${status.healthy === false ? "the simulation has stopped" : "recovered"}: ${status.error.error}` : "";
  if (status.model) {
    $("model").textContent = status.model;
    $("model").title = status.model;
  }
  setIfIdle($("gamma"), status.gamma);
  $("gamma-value").textContent = Number(status.gamma).toFixed(3);
  setIfIdle($("steps-per-frame"), status.steps_per_frame);
  setIfIdle($("grid"), `${status.grid[0]}x${status.grid[1]}`);
  setIfIdle($("seed"), status.seed);
  setIfIdle($("max-fps"), status.max_fps);
  setIfIdle($("universe"), status.universe);
  setIfIdle($("batch"), status.batch);
  if ($("init").dataset.edited !== "1" && document.activeElement !== $("init")) {
    $("init").value = status.init.startsWith("complex-noise") ? "complex-noise" : status.init;
  }
  $("universe").max = status.batch - 1;
  for (const input of $("views").querySelectorAll("input")) input.checked = status.views.includes(input.value);
  $("click-out").checked = (status.tools || []).some((tool) => tool.startsWith("click-out"));
  $("rewind").max = status.history || 0;
  followUniverse(status);
  onTrainingStatus(status.training);
}

/// Shows the server's value unless the user is editing the field: focused, or changed and not
/// yet sent (the Reset fields are sent only by Reset).
function setIfIdle(input, value) {
  if (document.activeElement !== input && input.dataset.edited !== "1") input.value = value;
}

for (const id of ["seed", "grid", "init", "batch"]) {
  $(id).addEventListener("input", () => ($(id).dataset.edited = "1"));
}

/// Clears the charts when they would mix two universes: another grid, batch, seed, initial
/// state, model or universe of the batch. (A step count that goes back, as after a reset, a
/// rewind or a loaded state, clears them when its frame comes: frames come in order, statuses
/// may overtake them.)
function followUniverse(status) {
  const key = [status.grid.join("x"), status.batch, status.seed, status.init, status.universe, status.model].join("|");
  if (key !== lab.universeKey) {
    lab.universeKey = key;
    clearCharts();
  }
}

function clearCharts() {
  for (const name of Object.keys(lab.series)) lab.series[name] = [];
  lab.lastStep = -1;
  drawCharts();
}

// --- Frames ---

function onFrame(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.slice(0, 4));
  if (magic !== "ATHF") return;
  const length = new DataView(buffer).getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.slice(8, 8 + length)));
  lab.frame = header;
  const [height, width] = header.grid;
  const cells = height * width;
  const names = header.views.map((view) => view.name);
  syncViewBoxes(names, width, height);
  header.views.forEach((view, index) => {
    const map = bytes.subarray(8 + length + index * cells, 8 + length + (index + 1) * cells);
    draw(view, map, width, height, header.sparse);
  });
  if (header.step < lab.lastStep) clearCharts();
  if (header.step !== lab.lastStep) {
    lab.lastStep = header.step;
    record("energy", header.step, header.metrics.total_energy);
    record("entropy", header.step, header.metrics.mean_entropy);
    record("matter", header.step, header.metrics.matter_cells);
    record("rate", header.step, header.steps_per_s);
    drawCharts();
  }
}

function syncViewBoxes(names, width, height) {
  const container = $("canvases");
  const boxes = [...container.children];
  const current = boxes.map((box) => box.dataset.view);
  const sizeChanged = boxes.some((box) => box.querySelector("canvas").width !== width || box.querySelector("canvas").height !== height);
  if (current.join() === names.join() && !sizeChanged) return;
  container.innerHTML = "";
  container.classList.toggle("many", names.length > 1);
  for (const name of names) {
    const box = document.createElement("div");
    box.className = "view";
    box.dataset.view = name;
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = name;
    box.append(canvas, label);
    attachPointer(box);
    container.appendChild(box);
  }
  if (sizeChanged || lab.view.scale === 0 || current.length !== names.length) fit(width, height);
  applyTransform();
}

function draw(view, map, width, height, sparse) {
  const box = $("canvases").querySelector(`[data-view="${view.name}"]`);
  const canvas = box.querySelector("canvas");
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  const table = lab.hello.colormaps[view.colormap];
  for (let i = 0; i < map.length; i++) {
    const color = table[map[i]];
    image.data[4 * i] = color[0];
    image.data[4 * i + 1] = color[1];
    image.data[4 * i + 2] = color[2];
    image.data[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  if (sparse) {
    context.strokeStyle = "rgba(255,255,255,0.5)";
    context.lineWidth = 0.5;
    for (const [i, j] of sparse.tiles) {
      const x = i * sparse.tile - sparse.origin[0];
      const y = j * sparse.tile - sparse.origin[1];
      context.strokeRect(x + 0.25, y + 0.25, sparse.tile - 0.5, sparse.tile - 0.5);
    }
  }
  box.querySelector(".label").textContent = `${view.name} [${view.low.toPrecision(3)}, ${view.high.toPrecision(3)}]`;
}

// --- Pan, zoom, hover, click ---

/// Fills the box with the grid: whole device pixels per cell where a cell gets two or more
/// (sharp cells), else the exact fit, smoothed (a pixelated fraction draws uneven cells: moiré).
function fit(width, height) {
  const box = $("canvases").querySelector(".view");
  const side = box ? box.clientWidth : 512;
  const exact = side / Math.max(width, height);
  const ratio = window.devicePixelRatio || 1;
  lab.view.scale = exact * ratio >= 2 ? Math.floor(exact * ratio) / ratio : exact;
  lab.view.x = Math.round((side - width * lab.view.scale) / 2);
  lab.view.y = Math.round((side - height * lab.view.scale) / 2);
}

function applyTransform() {
  const { scale, x, y } = lab.view;
  const sharp = scale * (window.devicePixelRatio || 1) >= 2 && Number.isInteger(scale * (window.devicePixelRatio || 1));
  for (const canvas of $("canvases").querySelectorAll("canvas")) {
    canvas.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
    canvas.style.imageRendering = sharp ? "pixelated" : "auto";
  }
}

/// The cell under a pointer event (column, row), or null off the grid.
function cellAt(event, box) {
  const rect = box.getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left - lab.view.x) / lab.view.scale);
  const y = Math.floor((event.clientY - rect.top - lab.view.y) / lab.view.scale);
  if (!lab.frame) return null;
  const [height, width] = lab.frame.grid;
  return x >= 0 && y >= 0 && x < width && y < height ? { x, y } : null;
}

function attachPointer(box) {
  let drag = null;
  box.addEventListener("wheel", (event) => {
    event.preventDefault();
    const rect = box.getBoundingClientRect();
    const px = event.clientX - rect.left;
    const py = event.clientY - rect.top;
    const factor = event.deltaY < 0 ? 1.25 : 0.8;
    const scale = Math.min(64, Math.max(0.25, lab.view.scale * factor));
    lab.view.x = px - ((px - lab.view.x) * scale) / lab.view.scale;
    lab.view.y = py - ((py - lab.view.y) * scale) / lab.view.scale;
    lab.view.scale = scale;
    applyTransform();
  });
  box.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX, y: event.clientY, moved: 0, startX: lab.view.x, startY: lab.view.y };
    box.setPointerCapture(event.pointerId);
  });
  box.addEventListener("pointermove", (event) => {
    if (drag) {
      drag.moved = Math.max(drag.moved, Math.abs(event.clientX - drag.x) + Math.abs(event.clientY - drag.y));
      lab.view.x = drag.startX + event.clientX - drag.x;
      lab.view.y = drag.startY + event.clientY - drag.y;
      applyTransform();
      return;
    }
    hover(event, box);
  });
  box.addEventListener("pointerup", (event) => {
    const wasClick = drag && drag.moved < 4;
    if (drag && !wasClick && lab.hello && lab.hello.sparse && lab.frame && lab.frame.sparse) {
      // A sparse universe is unbounded: a drag moves the server's window.
      const dx = Math.round((lab.view.x - drag.startX) / lab.view.scale);
      const dy = Math.round((lab.view.y - drag.startY) / lab.view.scale);
      const [ox, oy] = lab.frame.sparse.origin;
      lab.view.x = drag.startX;
      lab.view.y = drag.startY;
      applyTransform();
      send({ cmd: "window", x: ox - dx, y: oy - dy });
    }
    drag = null;
    if (wasClick) click(event, box);
  });
  box.addEventListener("pointerleave", () => ($("tooltip").hidden = true));
}

function hover(event, box) {
  const cell = cellAt(event, box);
  const tooltip = $("tooltip");
  if (!cell) {
    tooltip.hidden = true;
    return;
  }
  tooltip.style.left = `${event.clientX + 14}px`;
  tooltip.style.top = `${event.clientY + 14}px`;
  tooltip.hidden = false;
  if (!lab.probing) {
    lab.probing = true;
    send({ cmd: "probe", x: cell.x, y: cell.y });
    setTimeout(() => (lab.probing = false), 100);
  }
}

function showProbe(probe) {
  const lines = [`cell (${probe.x}, ${probe.y}) · step ${probe.step}`, "c  |psi_c|^2  phase"];
  probe.densities.forEach((density, c) => {
    lines.push(`${String(c).padEnd(2)} ${density.toFixed(4).padStart(9)}  ${probe.phases[c].toFixed(3).padStart(6)}`);
  });
  $("tooltip").textContent = lines.join("\n");
}

function toolSpec(name, cell) {
  const params = [...$("tool-params").querySelectorAll("input")].map((input) => `${input.name}=${input.value}`);
  if (cell && (name === "vortex" || name === "collapse")) params.unshift(`x=${cell.x}`, `y=${cell.y}`);
  return params.length ? `${name}:${params.join(",")}` : name;
}

function click(event, box) {
  const name = $("tool").value;
  const cell = cellAt(event, box);
  if (!name || !cell) return;
  if (name === "matter") {
    // A sparse universe is unbounded: the window's origin makes the cell absolute.
    const [ox, oy] = lab.frame && lab.frame.sparse ? lab.frame.sparse.origin : [0, 0];
    const radius = Number(($("tool-params").querySelector("input[name=radius]") || {}).value || 4);
    send({ cmd: "matter", x: ox + cell.x, y: oy + cell.y, radius });
    return;
  }
  send({ cmd: "tool", spec: toolSpec(name, cell) });
}

const TOOL_PARAMS = {
  vortex: [["m", 1], ["radius", 8]],
  collapse: [["radius", 6], ["intensity", 1]],
  wave: [["kx", 0.25], ["ky", 0]],
  "phase-flip": [["rate", 0.05]],
  "bit-flip": [["rate", 0.05]],
  matter: [["radius", 4]],
};

function showToolParams() {
  const params = TOOL_PARAMS[$("tool").value] || [];
  $("tool-params").innerHTML = params
    .map(([name, value]) => `<label>${name} <input name="${name}" type="number" step="any" value="${value}"></label>`)
    .join("");
}

// --- Charts ---

/// Keeps the value of `name` at `step` (null when there is none: a gap, not a zero).
function record(name, step, value) {
  const series = lab.series[name];
  series.push([step, Number.isFinite(value) ? value : null]);
  if (series.length > 600) series.shift();
}

/// Round numbers for an axis from `low` to `high`, and the decimals that tell them apart.
function ticks(low, high, count) {
  const raw = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((m) => m >= raw) || raw;
  const values = [];
  for (let i = Math.ceil(low / step); i * step <= high + step * 1e-9; i++) values.push(i * step);
  return { values, decimals: Math.max(0, -Math.floor(Math.log10(step) + 1e-9)) };
}

/// A value as an axis shows it: `decimals` places, or a power of ten for the very large or
/// small.
function tickLabel(value, decimals = 3) {
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude >= 1e5 || (magnitude < 1e-3 && decimals > 3))) return value.toExponential(2);
  return value.toFixed(Math.min(decimals, 6));
}

/// A line chart of [x, y] points with labelled axes. The y range is at least a thousandth of
/// the values' size, so that float rounding (1e-7 of the value) draws as the flat line it is.
function drawLine(canvas, points, label, xName) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  context.font = "10px sans-serif";
  const known = points.filter(([, y]) => y !== null);
  const last = known.length ? known[known.length - 1][1] : null;
  context.fillStyle = "#d7dde4";
  context.fillText(`${label}${last !== null ? `  ${Number(last.toPrecision(6))}` : ""}`, 48, 11);
  const plot = { left: 46, right: width - 6, top: 16, bottom: height - 16 };
  context.strokeStyle = "#3c4550";
  context.beginPath();
  context.moveTo(plot.left, plot.top);
  context.lineTo(plot.left, plot.bottom);
  context.lineTo(plot.right, plot.bottom);
  context.stroke();
  if (known.length === 0) {
    context.fillStyle = "#8b96a3";
    context.fillText("no data yet", plot.left + 6, (plot.top + plot.bottom) / 2);
    return;
  }
  let low = Math.min(...known.map(([, y]) => y));
  let high = Math.max(...known.map(([, y]) => y));
  const least = Math.max(Math.abs(low), Math.abs(high)) * 1e-3 || 1;
  if (high - low < least) {
    const middle = (high + low) / 2;
    low = middle - least / 2;
    high = middle + least / 2;
  }
  const x0 = points[0][0];
  const x1 = Math.max(points[points.length - 1][0], x0 + 1);
  const px = (x) => plot.left + ((x - x0) / (x1 - x0)) * (plot.right - plot.left);
  const py = (y) => plot.bottom - ((y - low) / (high - low)) * (plot.bottom - plot.top);
  context.fillStyle = "#8b96a3";
  context.textAlign = "right";
  const y = ticks(low, high, 3);
  const yTicks = y.values;
  for (const t of yTicks) {
    context.fillText(tickLabel(t, y.decimals), plot.left - 3, py(t) + 3);
    context.fillRect(plot.left - 2, py(t), 2, 1);
  }
  context.textAlign = "center";
  const xTicks = ticks(x0, x1, 4).values.filter(Number.isInteger);
  for (const t of xTicks) {
    // A label at the right end is kept inside the canvas.
    context.textAlign = px(t) > plot.right - 12 ? "right" : "center";
    context.fillText(String(t), px(t) > plot.right - 12 ? width - 2 : px(t), height - 4);
  }
  // What was drawn, for the page's tests.
  canvas.dataset.yticks = JSON.stringify(yTicks);
  canvas.dataset.xticks = JSON.stringify(xTicks);
  canvas.dataset.range = JSON.stringify([low, high]);
  context.textAlign = "left";
  context.fillText(xName, 4, height - 4);
  context.strokeStyle = "#4fb0c6";
  context.beginPath();
  let drawing = false;
  for (const [x, y] of points) {
    if (y === null) {
      drawing = false;
      continue;
    }
    if (drawing) context.lineTo(px(x), py(y));
    else context.moveTo(px(x), py(y));
    drawing = true;
  }
  context.stroke();
  if (known.length === 1) context.fillRect(px(known[0][0]) - 1, py(known[0][1]) - 1, 3, 3);
}

function drawCharts() {
  for (const [name, id] of [["energy", "chart-energy"], ["entropy", "chart-entropy"], ["matter", "chart-matter"], ["rate", "chart-rate"]]) {
    const canvas = $(id);
    drawLine(canvas, lab.series[name], canvas.dataset.label, "step");
  }
}

// --- Training ---

function onTrainingStatus(training) {
  if (!training) return;
  const last = training.last ? ` · loss ${training.last.loss.toPrecision(4)}` : "";
  $("train-status").textContent =
    `${training.running ? (training.stopping ? "stopping" : "training") : "done"} · ${training.points}/${training.episodes} episodes${last}` +
    (training.outcome ? ` · ${training.outcome}` : "");
  // Why "best" is the checkpoint it is: the lab's combined metric, lowest over a checkpoint's episodes.
  const best = training.best;
  const lastCheckpoint = training.last_checkpoint;
  $("train-checkpoints").textContent = best
    ? `best: episode ${best.episode}, the lowest mean combined metric (${best.metric === null ? "none yet" : Number(best.metric.toPrecision(4))}; the lab's 10 survival + 5 symmetry, or the loss) over a checkpoint's episodes` +
      (lastCheckpoint ? ` · last: episode ${lastCheckpoint.episode}` : "")
    : "no checkpoint yet (one every 10 episodes)";
  if (!document.body.classList.contains("sparse")) {
    $("train-load").disabled = !best;
    $("train-load-last").disabled = !lastCheckpoint;
  }
  if (training.points > lab.training.length) send({ cmd: "train_history", since: lab.training.length });
  const run = training.dir.split("/").pop();
  const frame = $("train-frame");
  // A picture every 10 episodes: show the newest once its ten have passed (statuses skip some).
  const tens = Math.floor(training.points / 10);
  if (tens > 0 && frame.dataset.tens !== String(tens)) {
    frame.dataset.tens = String(tens);
    frame.src = withToken(`/runs/${run}/frame.png?t=${tens}`);
  }
}

function onTrainHistory(message) {
  if (message.since !== lab.training.length) return;
  lab.training.push(...message.points);
  drawLine($("train-chart"), lab.training.map((point) => [point.episode, point.loss]), "training loss", "episode");
}

// --- Controls ---

function number(id) {
  return Number($(id).value);
}

$("play").onclick = () => send({ cmd: "play" });
$("pause").onclick = () => send({ cmd: "pause" });
$("step").onclick = () => send({ cmd: "step", count: 1 });
$("steps-per-frame").onchange = () => send({ cmd: "set", steps_per_frame: number("steps-per-frame") });
$("max-fps").onchange = () => send({ cmd: "set", max_fps: number("max-fps") });
$("gamma").oninput = () => send({ cmd: "set", gamma: number("gamma") });
$("universe").onchange = () => send({ cmd: "set", universe: number("universe") });
$("tool").onchange = showToolParams;
$("click-out").onchange = () =>
  send({ cmd: "tool", spec: `click-out:enabled=${$("click-out").checked},chance=${$("click-out-chance").value}` });
$("reset").onclick = () => {
  const [height, width] = $("grid").value.toLowerCase().split("x").map(Number);
  const command = { cmd: "reset", seed: number("seed"), grid: [height, width || height] };
  // The server keeps its initial state (a file, a noise strength the menu does not list)
  // unless the user chose another.
  if ($("init").dataset.edited === "1") command.init = $("init").value;
  if (!document.body.classList.contains("sparse")) command.batch = number("batch");
  send(command);
  for (const id of ["seed", "grid", "init", "batch"]) delete $(id).dataset.edited;
};
$("snapshot").onclick = () => send({ cmd: "snapshot" });
$("record").onclick = () => send({ cmd: "record", frames: number("record-frames") });
$("rewind").oninput = () => ($("rewind-value").textContent = `${number("rewind")} back`);
$("rewind").onchange = () => {
  const back = number("rewind");
  if (back > 0) send({ cmd: "rewind", back });
  // The slider measures from the state shown, which is now the one rewound to.
  $("rewind").value = 0;
  $("rewind-value").textContent = "0 back";
};
$("upload").onchange = async () => {
  const file = $("upload").files[0];
  if (!file) return;
  const base = file.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 60) || "upload";
  // The server never overwrites a snapshot: the first free name of base, base-2, base-3, ...
  let name = base;
  let response;
  for (let n = 2; ; n++) {
    response = await fetch(withToken(`/snapshots?name=${encodeURIComponent(name)}`), { method: "POST", body: file });
    if (response.status !== 409 || n > 99) break;
    name = `${base}-${n}`;
  }
  const reply = await response.json();
  if (!response.ok) return say(`upload: ${reply.error}`, true);
  addFile(`${name}.safetensors`, `/snapshots/${name}.safetensors`);
  send({ cmd: "load_snapshot", name });
};
$("train-start").onclick = () => {
  lab.training = [];
  send({
    cmd: "train_start",
    settings: {
      arch: $("train-arch").value,
      loss: $("train-loss").value,
      d_state: number("train-d"),
      hidden: number("train-h"),
      grid: number("train-grid"),
      qca_steps: number("train-steps"),
      episodes: number("train-episodes"),
      lr: number("train-lr"),
    },
  });
};
$("train-stop").onclick = () => send({ cmd: "train_stop" });
$("train-load").onclick = () => send({ cmd: "train_load", which: "best" });
$("train-load-last").onclick = () => send({ cmd: "train_load", which: "last" });

function addFile(name, url) {
  const item = document.createElement("li");
  item.innerHTML = `<a href="${withToken(url)}" download="${name}">${name}</a>`;
  $("files").appendChild(item);
  say(`wrote ${name}`);
}

connect();
