// The kvae explorer: a page over kvae-serve's JSON endpoints (no libraries, works offline).
// Every control sends at most one request at a time; a change made while one is in flight is
// sent when it returns (only the latest).  document.body.dataset.busy counts requests in flight.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  info: null, explorer: null, z: [], order: [], ranges: [], seed: 0, busy: 0,
  codeA: null, codeB: null, drawn: false, standardNormal: true,
};

// ---------------------------------------------------------------- errors and requests
function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setBusy(delta) {
  S.busy += delta;
  document.body.dataset.busy = String(S.busy);
}

async function api(path, body) {
  setBusy(1);
  try {
    const init = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    const response = await fetch(path, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      throw new Error(`${path}: ${response.status} ${(data && data.error) || response.statusText}`);
    }
    return data;
  } finally {
    setBusy(-1);
  }
}

// One request in flight per control; the latest argument given meanwhile runs next.
function control(fn) {
  let running = false, queued = false, next;
  const run = (arg) => {
    if (running) { queued = true; next = arg; return; }
    running = true;
    Promise.resolve().then(() => fn(arg)).catch((e) => showError(e.message)).finally(() => {
      running = false;
      if (queued) { queued = false; const a = next; next = undefined; run(a); }
    });
  };
  return run;
}

function debounce(fn, ms) {
  let timer = null;
  return (arg) => { clearTimeout(timer); timer = setTimeout(() => fn(arg), ms); };
}

// ---------------------------------------------------------------- images
function shape() { return S.info.input_shape; }  // [H, W, C]

function flat(a) { return Array.isArray(a) ? a.flat(Infinity) : a; }

// Draw images (each a flat [H*W*C] array in [0, 1]) as a grid on a canvas.
function drawGrid(canvas, images, cols) {
  const [h, w, c] = shape();
  const rows = Math.ceil(images.length / cols);
  const off = document.createElement("canvas");
  off.width = cols * w; off.height = rows * h;
  const ctx = off.getContext("2d");
  const data = ctx.createImageData(off.width, off.height);
  images.forEach((img, k) => {
    const r0 = Math.floor(k / cols) * h, c0 = (k % cols) * w;
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        const p = ((r0 + i) * off.width + c0 + j) * 4;
        for (let ch = 0; ch < 3; ch++) {
          const v = img[(i * w + j) * c + (c === 3 ? ch : 0)];
          data.data[p + ch] = Math.round(255 * Math.min(1, Math.max(0, v)));
        }
        data.data[p + 3] = 255;
      }
    }
  });
  ctx.putImageData(data, 0, 0);
  const out = canvas.getContext("2d");
  out.imageSmoothingEnabled = false;
  out.fillStyle = "#000";
  out.fillRect(0, 0, canvas.width, canvas.height);
  const scale = Math.min(canvas.width / off.width, canvas.height / off.height);
  out.drawImage(off, 0, 0, off.width * scale, off.height * scale);
}

// The drawing canvas as the model's input [H, W, C] (area-averaged, values in [0, 1]).
function canvasInput() {
  const [h, w, c] = shape();
  const off = document.createElement("canvas");
  off.width = w; off.height = h;
  const ctx = off.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage($("draw"), 0, 0, w, h);
  const px = ctx.getImageData(0, 0, w, h).data;
  const x = [];
  for (let i = 0; i < h; i++) {
    const row = [];
    for (let j = 0; j < w; j++) {
      const p = (i * w + j) * 4;
      if (c === 3) row.push([px[p] / 255, px[p + 1] / 255, px[p + 2] / 255]);
      else row.push(Array(c).fill((0.299 * px[p] + 0.587 * px[p + 1] + 0.114 * px[p + 2]) / 255));
    }
    x.push(row);
  }
  return x;
}

// ---------------------------------------------------------------- labels
function labelsFor(n) {
  if (S.info.num_classes == null) return {};
  return { labels: Array(n).fill(parseInt($("label").value, 10)) };
}

// ---------------------------------------------------------------- decoding codes
function hasImages() { return S.info.endpoints.includes("/images"); }

async function imagesOf(codes) {
  if (hasImages()) {
    const out = await api("/images", { z: codes, seed: S.seed, ...labelsFor(codes.length) });
    return out.images.map(flat);
  }
  const out = await api("/decode", { z: codes, ...labelsFor(codes.length) });
  const mean = out.probs || out.loc || Object.values(out)[0];
  return mean.map(flat);
}

const decodeSliders = control(async () => {
  const [img] = await imagesOf([S.z.slice()]);
  drawGrid($("decoded"), [img], 1);
  $("decoded").dataset.version = String((parseInt($("decoded").dataset.version || "0", 10)) + 1);
});

// ---------------------------------------------------------------- sliders
function fmt(v) { return (v >= 0 ? " " : "") + v.toFixed(2); }

function buildSliders() {
  const box = $("sliders");
  box.textContent = "";
  const kl = S.explorer && S.explorer.kl_per_dim;
  S.order.forEach((d) => {
    const row = document.createElement("div");
    row.className = "slider";
    const name = document.createElement("span");
    name.textContent = `z${d}` + (kl ? ` ${kl[d].toFixed(1)}` : "");
    name.title = kl ? `KL of dimension ${d}: ${kl[d].toFixed(3)} nats` : `dimension ${d}`;
    const input = document.createElement("input");
    input.type = "range";
    input.min = String(S.ranges[d][0]); input.max = String(S.ranges[d][1]); input.step = "0.01";
    input.value = String(S.z[d]);
    input.id = `z${d}`;
    input.setAttribute("aria-label", `latent dimension ${d}`);
    const value = document.createElement("span");
    value.textContent = fmt(S.z[d]);
    input.addEventListener("input", () => {
      S.z[d] = parseFloat(input.value);
      value.textContent = fmt(S.z[d]);
      slid();
    });
    row.append(name, input, value);
    box.append(row);
  });
  $("order-note").textContent = kl ? "sliders ordered by KL per dimension (nats), largest first"
                                   : "sliders in dimension order";
}

const slid = debounce(() => decodeSliders(), 20);

function setCode(z) {
  S.z = z.map(Number);
  S.order.forEach((d) => {
    const input = $(`z${d}`);
    input.value = String(S.z[d]);
    input.nextSibling.textContent = fmt(S.z[d]);
  });
  decodeSliders();
}

// ---------------------------------------------------------------- random numbers (seeded)
function rng(seed) {  // mulberry32
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(u) {
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

function priorCode() {
  const D = S.info.latent_dim;
  if (S.standardNormal || !S.explorer) {
    const g = gaussian(rng(S.seed * 7919 + 1));
    return Array.from({ length: D }, g);
  }
  const codes = S.explorer.codes;  // the aggregate posterior stands in for a non-Gaussian prior
  return codes[Math.floor(rng(S.seed + 3)() * codes.length)].slice();
}

// ---------------------------------------------------------------- samples
const refreshSamples = control(async () => {
  const out = await api("/sample", { n: 16, seed: S.seed, ...(S.info.num_classes == null ? {} : labelsFor(16)) });
  drawGrid($("samples"), out.images.map(flat), 4);
  $("seed").textContent = String(S.seed);
});

// ---------------------------------------------------------------- encode / reconstruct
async function encodeInput(x) {
  const out = await api("/encode", { x: [x], ...labelsFor(1) });
  return flat(out.loc || Object.values(out)[0]);
}

const encodeDrawing = control(async () => {
  const x = canvasInput();
  const code = await encodeInput(x);
  const [img] = await imagesOf([code]);
  drawGrid($("recon"), [img], 1);
  $("recon").dataset.version = String((parseInt($("recon").dataset.version || "0", 10)) + 1);
  S.lastEncoded = code;
  setCode(code);
});

function setupDrawing() {
  const canvas = $("draw");
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let down = false, last = null;
  const point = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  };
  const stroke = (p) => {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = canvas.width / 12; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(...(last || p)); ctx.lineTo(...p); ctx.stroke();
    last = p;
  };
  canvas.addEventListener("pointerdown", (e) => { down = true; last = null; stroke(point(e)); });
  canvas.addEventListener("pointermove", (e) => { if (down) stroke(point(e)); });
  const end = () => { if (down) { down = false; last = null; S.drawn = true; clearError(); encodeDrawing(); } };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointerleave", end);
  $("clear").addEventListener("click", () => { clear(); S.drawn = false; });
  canvas.addEventListener("dragover", (e) => e.preventDefault());
  canvas.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer.files[0]) loadFile(e.dataTransfer.files[0]); });
  $("upload").addEventListener("change", () => { if ($("upload").files[0]) loadFile($("upload").files[0]); });
}

const MAX_FILE_BYTES = 10 * 1024 * 1024;

async function loadFile(file) {
  clearError();
  if (file.size > MAX_FILE_BYTES) {
    showError(`${file.name}: ${(file.size / 1048576).toFixed(1)} MB is over the limit of 10 MB`);
    return;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (e) {
    showError(`${file.name} is not an image this browser can read (${file.type || "unknown type"})`);
    return;
  }
  const canvas = $("draw"), ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
  const w = bitmap.width * scale, h = bitmap.height * scale;
  ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  S.drawn = true;
  encodeDrawing();
}

// An example image from explorer.json onto the drawing canvas.
function showExample(k) {
  const img = flat(S.explorer.examples[k]);
  drawGrid($("draw"), [img], 1);
  S.drawn = true;
  encodeDrawing();
}

// ---------------------------------------------------------------- interpolation
function slerp(a, b, t) {
  const na = Math.hypot(...a), nb = Math.hypot(...b);
  const dot = a.reduce((s, v, i) => s + v * b[i], 0) / (na * nb || 1);
  const omega = Math.acos(Math.min(1, Math.max(-1, dot)));
  if (omega < 1e-6) return a.map((v, i) => (1 - t) * v + t * b[i]);
  const s = Math.sin(omega);
  return a.map((v, i) => (Math.sin((1 - t) * omega) / s) * v + (Math.sin(t * omega) / s) * b[i]);
}

const interpolate = control(async () => {
  if (!S.codeA || !S.codeB) return;
  const steps = 8, codes = [];
  for (let k = 0; k < steps; k++) {
    const t = k / (steps - 1);
    codes.push(S.standardNormal ? slerp(S.codeA, S.codeB, t) : S.codeA.map((v, i) => (1 - t) * v + t * S.codeB[i]));
  }
  drawGrid($("strip"), await imagesOf(codes), steps);
});

async function setEnd(which) {
  const code = await encodeInput(canvasInput());
  if (which === "A") S.codeA = code; else S.codeB = code;
  $("interp-kind").textContent = (S.codeA ? "A set" : "A: not set") + ", " + (S.codeB ? "B set" : "B: not set") +
    (S.standardNormal ? " (spherical, N(0, I) prior)" : " (linear)");
  interpolate();
}

// ---------------------------------------------------------------- latent map
async function drawMap() {
  const canvas = $("map"), ctx = canvas.getContext("2d");
  const D = S.info.latent_dim;
  if (D === 2) {
    $("map-title").textContent = "Decoded latent plane (z1 across, z2 down, -3..3)";
    const n = 12, codes = [];
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) codes.push([-3 + 6 * j / (n - 1), 3 - 6 * i / (n - 1)]);
    drawGrid(canvas, await imagesOf(codes), n);
    canvas.onclick = (e) => {
      const r = canvas.getBoundingClientRect();
      const u = (e.clientX - r.left) / r.width, v = (e.clientY - r.top) / r.height;
      setCode([-3 + 6 * u, 3 - 6 * v]);
    };
    return;
  }
  if (!S.explorer) {
    $("map-title").textContent = "Latent map";
    $("map-note").textContent = "this bundle carries no encoded codes (export with --explorer-examples)";
    canvas.hidden = true;
    return;
  }
  $("map-title").textContent = `PCA map of ${S.explorer.n} encoded validation images`;
  $("map-note").textContent = "click a point to load its code into the sliders";
  const pts = S.explorer.pca.points, labels = S.explorer.labels;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const pad = 10, W = canvas.width - 2 * pad, H = canvas.height - 2 * pad;
  const px = (p) => [pad + W * (p[0] - x0) / ((x1 - x0) || 1), pad + H * (1 - (p[1] - y0) / ((y1 - y0) || 1))];
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  pts.forEach((p, k) => {
    const [u, v] = px(p);
    ctx.fillStyle = labels ? `hsl(${(labels[k] * 36) % 360}, 70%, 45%)` : "#336";
    ctx.fillRect(u - 2, v - 2, 4, 4);
  });
  canvas.onclick = (e) => {
    const r = canvas.getBoundingClientRect();
    const u = (e.clientX - r.left) * canvas.width / r.width, v = (e.clientY - r.top) * canvas.height / r.height;
    let best = 0, bestD = Infinity;
    pts.forEach((p, k) => { const [a, b] = px(p); const d = (a - u) ** 2 + (b - v) ** 2; if (d < bestD) { bestD = d; best = k; } });
    setCode(S.explorer.codes[best]);
  };
}

// ---------------------------------------------------------------- start
async function main() {
  S.info = await api("/healthz");
  if (S.info.explorer) S.explorer = await api("/explorer.json");
  const D = S.info.latent_dim;
  S.standardNormal = !S.explorer || S.explorer.prior === "standard_normal";
  S.ranges = S.explorer ? S.explorer.ranges : Array.from({ length: D }, () => [-3, 3]);
  const kl = S.explorer && S.explorer.kl_per_dim;
  S.order = Array.from({ length: D }, (_, d) => d);
  if (kl) S.order.sort((a, b) => kl[b] - kl[a]);
  if (S.explorer && S.explorer.slider_dims) S.order = S.explorer.slider_dims.slice();  // the first (top) group
  const groups = S.explorer && S.explorer.groups && S.explorer.groups.length > 1 ?
    `; sliders: ${S.order.length} of group ${S.explorer.groups[0].name} (the top)` : "";
  $("model").textContent = `${S.info.model}: input ${S.info.input_shape.join("×")}, ${D} latent dimensions${groups}` +
    (S.info.num_classes != null ? `, ${S.info.num_classes} classes` : "") + (S.explorer ? "" : " (no explorer data)");
  if (S.info.num_classes != null) {
    $("label-picker").hidden = false;
    for (let k = 0; k < S.info.num_classes; k++) {
      const o = document.createElement("option"); o.value = String(k); o.textContent = String(k); $("label").append(o);
    }
    $("label").addEventListener("change", () => { refreshSamples(); decodeSliders(); });
  }
  if (S.explorer && S.explorer.examples.length) {
    const none = document.createElement("option"); none.value = ""; none.textContent = "an example image…";
    $("example").append(none);
    S.explorer.examples.forEach((_, k) => {
      const o = document.createElement("option"); o.value = String(k); o.textContent = `example ${k + 1}`;
      $("example").append(o);
    });
    $("example").addEventListener("change", () => { if ($("example").value !== "") showExample(+$("example").value); });
  } else {
    $("example").hidden = true;
  }
  S.z = priorCode();
  buildSliders();
  setupDrawing();
  $("reseed").addEventListener("click", () => { S.seed += 1; refreshSamples(); });
  $("reset-sample").addEventListener("click", () => { S.seed += 1; setCode(priorCode()); });
  $("reset-encoded").addEventListener("click", () => {
    if (!S.drawn) { showError("draw or load an image first"); return; }
    encodeDrawing();
  });
  $("set-a").addEventListener("click", () => setEnd("A").catch((e) => showError(e.message)));
  $("set-b").addEventListener("click", () => setEnd("B").catch((e) => showError(e.message)));
  $("interp-kind").textContent = S.standardNormal ? "spherical (N(0, I) prior)" : "linear";
  refreshSamples();
  decodeSliders();
  await drawMap();
  document.body.dataset.ready = "1";
  $("status").textContent = "ready";
}

main().catch((e) => { showError(e.message); document.body.dataset.ready = "error"; });
window.kvaeExplorer = S;
