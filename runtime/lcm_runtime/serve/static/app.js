// The lcm-openvino page: a form for the server's OpenAI-style images API, streamed previews, a mask
// painted over an uploaded picture, and this session's images. No libraries, no build step.
"use strict";

const config = window.LCM_CONFIG || {};
const defaults = { steps: 4, guidance: 1, size: 512, ...(config.defaults || {}) };
const KEY_STORAGE = "lcm-openvino.api-key";
const $ = (id) => document.getElementById(id);

const form = $("controls");
const state = { picture: null, painted: false, strengthTouched: false, controller: null };

// --- set up -------------------------------------------------------------------------------------

$("model-name").textContent = config.model || "unknown";
$("width").value = $("height").value = defaults.size;
$("steps").value = defaults.steps;
$("guidance").value = defaults.guidance;
if (config.apiKeyRequired) {
  $("api-key-field").hidden = false;
  $("api-key").value = localStorage.getItem(KEY_STORAGE) || "";
}
$("api-key").addEventListener("input", () => localStorage.setItem(KEY_STORAGE, $("api-key").value.trim()));

form.addEventListener("submit", (event) => {
  event.preventDefault();
  generate();
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
});
$("cancel").addEventListener("click", () => state.controller && state.controller.abort());

// --- the uploaded picture and its mask ----------------------------------------------------------

const canvas = $("mask-canvas");
const brush = canvas.getContext("2d");

$("image-input").addEventListener("change", () => {
  const file = $("image-input").files[0];
  if (!file) return removePicture();
  const image = $("source-image");
  image.onload = () => {
    state.picture = file;
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    clearMask();
    state.strengthTouched = false;
    $("strength").value = 0.8;
    fitSizeTo(image.naturalWidth, image.naturalHeight);
    $("image-editor").hidden = false;
  };
  image.onerror = () => {
    removePicture();
    showError("That file is not a picture this browser can show; choose a PNG, JPEG or WebP.");
  };
  if (image.src) URL.revokeObjectURL(image.src);
  image.src = URL.createObjectURL(file);
});

// Keep the longer side the fields ask for, with the picture's shape, in multiples of 8.
function fitSizeTo(width, height) {
  const longest = Math.max(Number($("width").value) || defaults.size, Number($("height").value) || defaults.size);
  const scale = longest / Math.max(width, height);
  $("width").value = Math.max(8, Math.round((width * scale) / 8) * 8);
  $("height").value = Math.max(8, Math.round((height * scale) / 8) * 8);
}

function removePicture() {
  state.picture = null;
  $("image-input").value = "";
  $("image-editor").hidden = true;
  clearMask();
}

function clearMask() {
  brush.clearRect(0, 0, canvas.width, canvas.height);
  state.painted = false;
  if (!state.strengthTouched) $("strength").value = 0.8;
}

$("clear-mask").addEventListener("click", clearMask);
$("remove-image").addEventListener("click", removePicture);
$("strength").addEventListener("input", () => (state.strengthTouched = true));

let last = null;
function canvasPoint(event) {
  const box = canvas.getBoundingClientRect();
  const scale = canvas.width / box.width;
  return { x: (event.clientX - box.left) * scale, y: (event.clientY - box.top) * scale, scale };
}
function paintTo(point) {
  brush.strokeStyle = "#ff3b30"; // only the alpha counts for the mask
  brush.lineWidth = Number($("brush-size").value) * point.scale;
  brush.lineCap = brush.lineJoin = "round";
  brush.beginPath();
  brush.moveTo(last.x, last.y);
  brush.lineTo(point.x + 0.01, point.y); // a click alone still paints a dot
  brush.stroke();
  last = point;
  if (!state.painted) {
    state.painted = true;
    if (!state.strengthTouched) $("strength").value = 1;
  }
}
canvas.addEventListener("pointerdown", (event) => {
  canvas.setPointerCapture(event.pointerId);
  last = canvasPoint(event);
  paintTo(last);
});
canvas.addEventListener("pointermove", (event) => last && paintTo(canvasPoint(event)));
for (const type of ["pointerup", "pointercancel"]) canvas.addEventListener(type, () => (last = null));

// The painted strokes as a PNG of the picture's size: white = repaint, black = keep, 8-bit gray
// without alpha (a canvas's own PNG always has alpha, which the server would read as OpenAI's mask).
async function maskPng() {
  const { width, height } = canvas;
  const rgba = brush.getImageData(0, 0, width, height).data;
  const rows = new Uint8Array((width + 1) * height); // each row: filter byte 0, then the pixels
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) rows[y * (width + 1) + 1 + x] = rgba[(y * width + x) * 4 + 3] >= 128 ? 255 : 0;
  }
  const deflated = new Blob([rows]).stream().pipeThrough(new CompressionStream("deflate"));
  const data = new Uint8Array(await new Response(deflated).arrayBuffer());
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header[8] = 8; // bit depth; color type 0 (gray), no interlace
  const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  const parts = [signature, pngChunk("IHDR", header), pngChunk("IDAT", data), pngChunk("IEND", new Uint8Array(0))];
  return new Blob(parts, { type: "image/png" });
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  for (let k = 0; k < 8; k++) n = n & 1 ? 0xedb88320 ^ (n >>> 1) : n >>> 1;
  return n >>> 0;
});
function pngChunk(type, data) {
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  chunk.set(new TextEncoder().encode(type), 4);
  chunk.set(data, 8);
  let crc = 0xffffffff;
  for (const byte of chunk.subarray(4, 8 + data.length)) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  view.setUint32(8 + data.length, (crc ^ 0xffffffff) >>> 0);
  return chunk;
}

// --- generating ---------------------------------------------------------------------------------

function number(id) {
  const text = $(id).value.trim();
  return text === "" ? undefined : Number(text);
}

function settings() {
  const width = number("width") ?? defaults.size;
  const height = number("height") ?? defaults.size;
  const chosen = {
    prompt: $("prompt").value,
    size: `${width}x${height}`,
    n: number("count") ?? 1,
    num_inference_steps: number("steps"),
    guidance_scale: number("guidance"),
    seed: number("seed"),
    negative_prompt: $("negative-prompt").value.trim() || undefined,
    strength: state.picture ? number("strength") : undefined,
    stream: true,
    partial_images: 1,
  };
  for (const name of Object.keys(chosen)) if (chosen[name] === undefined) delete chosen[name];
  return chosen;
}

async function request(chosen) {
  const headers = {};
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const options = { method: "POST", headers, signal: state.controller.signal };
  if (!state.picture) {
    headers["Content-Type"] = "application/json";
    return fetch("/v1/images/generations", { ...options, body: JSON.stringify(chosen) });
  }
  const body = new FormData();
  body.append("image", state.picture, state.picture.name || "image.png");
  if (state.painted) body.append("mask", await maskPng(), "mask.png");
  for (const [name, value] of Object.entries(chosen)) body.append(name, String(value));
  return fetch("/v1/images/edits", { ...options, body });
}

async function generate() {
  if (state.controller) return;
  showError("");
  if (!$("prompt").value.trim()) {
    showError("Write a prompt first.");
    $("prompt").focus();
    return;
  }
  const chosen = settings();
  const mode = state.picture ? (state.painted ? "inpaint" : "image to image") : "text to image";
  state.controller = new AbortController();
  setBusy(true);
  showProgress(0, chosen.n, 0, chosen.num_inference_steps ?? defaults.steps, "waiting for the model…");
  $("result").replaceChildren();
  let made = 0;
  try {
    const response = await request(chosen);
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const { event, data } of serverEvents(response)) {
      if (event.endsWith(".partial_image")) {
        $("preview").src = `data:image/png;base64,${data.b64_json}`;
        $("preview-box").hidden = false;
        showProgress(data.image_index ?? 0, chosen.n, data.step, data.steps);
      } else if (event.endsWith(".completed")) {
        made += 1;
        addImage(data, chosen, mode);
      } else if (event === "error") {
        throw new Error((data.error && data.error.message) || "the server reported an error");
      }
    }
    if (made === 0) throw new Error("the server closed the stream before the image was finished");
  } catch (error) {
    if (error.name === "AbortError") showError("Cancelled.");
    else if (error instanceof TypeError) showError(`Could not reach the server (${error.message}).`);
    else showError(error.message);
  } finally {
    state.controller = null;
    setBusy(false);
    $("progress").hidden = true;
    $("preview-box").hidden = true;
  }
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body.error && body.error.message) return body.error.message;
  } catch (_) {
    // not JSON: fall through to the status
  }
  return `the server answered ${response.status} ${response.statusText}`;
}

// Server-sent events from a fetch() body (EventSource cannot POST): {event, data} objects.
async function* serverEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = (buffer + value).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

function setBusy(busy) {
  $("generate").disabled = busy;
  $("generate").textContent = busy ? "Generating…" : "Generate";
  $("cancel").disabled = !busy;
  form.setAttribute("aria-busy", String(busy));
}

function showProgress(image, images, step, steps, note) {
  $("progress").hidden = false;
  const bar = $("progress-bar");
  bar.max = Math.max(1, images * steps);
  bar.value = image * steps + step;
  const which = images > 1 ? `image ${image + 1} of ${images}: ` : "";
  $("progress-text").textContent = note || `${which}step ${step} of ${steps}`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// --- results and history ------------------------------------------------------------------------

function addImage(data, chosen, mode) {
  const bytes = Uint8Array.from(atob(data.b64_json), (c) => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  const entry = {
    url,
    prompt: chosen.prompt,
    seed: data.seed,
    steps: chosen.num_inference_steps ?? defaults.steps,
    guidance: chosen.guidance_scale ?? defaults.guidance,
    size: data.size,
    mode,
    strength: chosen.strength,
  };
  entry.fileName = `lcm-${slug(entry.prompt)}-${entry.seed}.png`;
  $("result").append(figureFor(entry));
  addToHistory(entry);
}

function slug(text) {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "image";
}

function figureFor(entry) {
  const figure = document.createElement("figure");
  const image = document.createElement("img");
  image.src = entry.url;
  image.alt = entry.prompt;
  const caption = document.createElement("figcaption");
  const facts = document.createElement("dl");
  const rows = [
    ["Prompt", entry.prompt],
    ["Seed", entry.seed],
    ["Steps", entry.steps],
    ["Guidance", entry.guidance],
    ["Size", entry.size],
    ["Mode", entry.mode],
  ];
  if (entry.strength !== undefined) rows.push(["Strength", entry.strength]);
  for (const [name, value] of rows) {
    const term = document.createElement("dt");
    term.textContent = name;
    const detail = document.createElement("dd");
    detail.textContent = String(value);
    detail.className = name.toLowerCase();
    facts.append(term, detail);
  }
  const download = document.createElement("a");
  download.href = entry.url;
  download.download = entry.fileName;
  download.className = "download";
  download.textContent = "Download PNG";
  const reuse = document.createElement("button");
  reuse.type = "button";
  reuse.textContent = "Use this seed";
  reuse.addEventListener("click", () => ($("seed").value = entry.seed));
  const actions = document.createElement("div");
  actions.className = "buttons";
  actions.append(download, reuse);
  caption.append(facts, actions);
  figure.append(image, caption);
  return figure;
}

function addToHistory(entry) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.title = `${entry.prompt} (seed ${entry.seed})`;
  button.setAttribute("aria-label", `show ${entry.prompt}, seed ${entry.seed}`);
  const thumbnail = document.createElement("img");
  thumbnail.src = entry.url;
  thumbnail.alt = "";
  button.append(thumbnail);
  button.addEventListener("click", () => {
    $("result").replaceChildren(figureFor(entry));
    for (const other of document.querySelectorAll("#history button")) other.removeAttribute("aria-current");
    button.setAttribute("aria-current", "true");
  });
  item.append(button);
  $("history").prepend(item);
  $("history-empty").hidden = true;
}
