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
    case "loaded": return say(`loaded ${message.dir}`);
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
  showToolParams();
}

function fillSelect(select, names, chosen) {
  select.innerHTML = names.map((name) => `<option ${name === chosen ? "selected" : ""}>${name}</option>`).join("");
}

function onStatus(status) {
  lab.status = status;
  $("status-line").textContent =
    `${status.running ? "running" : "paused"} · step ${status.step} · ${status.steps_per_s.toFixed(1)} steps/s · ` +
    `${status.grid[0]}x${status.grid[1]} x${status.batch} · ${status.clients} client(s)` +
    (status.recording ? ` · recording ${status.recording} more` : "");
  setIfIdle($("gamma"), status.gamma);
  $("gamma-value").textContent = Number(status.gamma).toFixed(3);
  setIfIdle($("steps-per-frame"), status.steps_per_frame);
  setIfIdle($("grid"), `${status.grid[0]}x${status.grid[1]}`);
  setIfIdle($("seed"), status.seed);
  setIfIdle($("max-fps"), status.max_fps);
  $("universe").max = status.batch - 1;
  for (const input of $("views").querySelectorAll("input")) input.checked = status.views.includes(input.value);
  $("click-out").checked = (status.tools || []).some((tool) => tool.startsWith("click-out"));
  const history = status.history || 0;
  $("rewind").max = history;
  onTrainingStatus(status.training);
}

function setIfIdle(input, value) {
  if (document.activeElement !== input) input.value = value;
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
  if (header.step !== lab.lastStep) {
    lab.lastStep = header.step;
    record("energy", header.metrics.total_energy);
    record("entropy", header.metrics.mean_entropy);
    record("matter", header.metrics.matter_cells);
    record("rate", header.steps_per_s);
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

function fit(width, height) {
  const box = $("canvases").querySelector(".view");
  const side = box ? box.clientWidth : 512;
  lab.view.scale = Math.max(1, Math.floor(side / Math.max(width, height)));
  lab.view.x = (side - width * lab.view.scale) / 2;
  lab.view.y = (side - height * lab.view.scale) / 2;
}

function applyTransform() {
  const { scale, x, y } = lab.view;
  for (const canvas of $("canvases").querySelectorAll("canvas")) {
    canvas.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
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
  send({ cmd: "tool", spec: toolSpec(name, cell) });
}

const TOOL_PARAMS = {
  vortex: [["m", 1], ["radius", 8]],
  collapse: [["radius", 6], ["intensity", 1]],
  wave: [["kx", 0.25], ["ky", 0]],
  "phase-flip": [["rate", 0.05]],
  "bit-flip": [["rate", 0.05]],
};

function showToolParams() {
  const params = TOOL_PARAMS[$("tool").value] || [];
  $("tool-params").innerHTML = params
    .map(([name, value]) => `<label>${name} <input name="${name}" type="number" step="any" value="${value}"></label>`)
    .join("");
}

// --- Charts ---

function record(name, value) {
  const series = lab.series[name];
  series.push(value);
  if (series.length > 600) series.shift();
}

function drawLine(canvas, values, label) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  context.fillStyle = "#8b96a3";
  context.font = "11px sans-serif";
  const finite = values.filter(Number.isFinite);
  const low = Math.min(...finite);
  const high = Math.max(...finite);
  context.fillText(`${label}${finite.length ? `  ${finite[finite.length - 1].toPrecision(4)}` : ""}`, 4, 12);
  if (finite.length < 2) return;
  const span = high > low ? high - low : 1;
  context.strokeStyle = "#4fb0c6";
  context.beginPath();
  values.forEach((value, i) => {
    const x = (i / (values.length - 1)) * (width - 8) + 4;
    const y = height - 6 - ((value - low) / span) * (height - 24);
    if (i === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.stroke();
}

function drawCharts() {
  for (const [name, id] of [["energy", "chart-energy"], ["entropy", "chart-entropy"], ["matter", "chart-matter"], ["rate", "chart-rate"]]) {
    const canvas = $(id);
    drawLine(canvas, lab.series[name], canvas.dataset.label);
  }
}

// --- Training ---

function onTrainingStatus(training) {
  if (!training) return;
  const last = training.last ? ` · loss ${training.last.loss.toPrecision(4)}` : "";
  $("train-status").textContent =
    `${training.running ? (training.stopping ? "stopping" : "training") : "done"} · ${training.points}/${training.episodes} episodes${last}` +
    (training.outcome ? ` · ${training.outcome}` : "");
  if (training.points > lab.training.length) send({ cmd: "train_history", since: lab.training.length });
  const run = training.dir.split("/").pop();
  const frame = $("train-frame");
  if (training.points > 0 && training.points % 10 === 0 && frame.dataset.points !== String(training.points)) {
    frame.dataset.points = String(training.points);
    frame.src = withToken(`/runs/${run}/frame.png?t=${training.points}`);
  }
}

function onTrainHistory(message) {
  if (message.since !== lab.training.length) return;
  lab.training.push(...message.points);
  drawLine($("train-chart"), lab.training.map((point) => point.loss), "training loss");
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
  send({ cmd: "reset", seed: number("seed"), init: $("init").value, grid: [height, width || height] });
};
$("snapshot").onclick = () => send({ cmd: "snapshot" });
$("record").onclick = () => send({ cmd: "record", frames: number("record-frames") });
$("rewind").onchange = () => {
  const back = number("rewind");
  $("rewind-value").textContent = back;
  if (back > 0) send({ cmd: "rewind", back });
  $("rewind").value = 0;
};
$("upload").onchange = async () => {
  const file = $("upload").files[0];
  if (!file) return;
  const name = file.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64) || "upload";
  const response = await fetch(withToken(`/snapshots?name=${encodeURIComponent(name)}`), { method: "POST", body: file });
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

function addFile(name, url) {
  const item = document.createElement("li");
  item.innerHTML = `<a href="${withToken(url)}" download="${name}">${name}</a>`;
  $("files").appendChild(item);
  say(`wrote ${name}`);
}

connect();
