// The demo page: loads the wasm module and the digits (or, for the GPT, a
// text), trains with start/pause, charts loss and accuracy, classifies what
// you draw or samples text, and runs Newton's method with Hessians.
//
// URL parameters, for links and for the browser test:
//   ?model=mlp|cnn|gpt   the model to start with (gpt: a character model)
//   ?steps=N             train N steps on load, then evaluate on all test
//                        digits (the GPT: draw a sample)

import init, { Demo, TextDemo } from './pkg/wgrad.js';
import { setUpNewton } from './newton.js';

const FILES = ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'];
const STEPS_PER_CALL = { mlp: 10, cnn: 2, gpt: 2 };
const EVAL_EVERY = { mlp: 100, cnn: 20 };
const EVAL_DIGITS = 500;
// the GPT: a sample of SAMPLE_CHARS characters every SAMPLE_EVERY steps
const SAMPLE_EVERY = 20;
const SAMPLE_CHARS = 100;
const TEMPERATURE = 0.8;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// Everything the page knows, also read by the browser test.
const state = {
  demo: null,
  model: ['cnn', 'gpt'].includes(params.get('model')) ? params.get('model') : 'mlp',
  running: false,
  busy: Promise.resolve(),
  losses: [],      // [step, mean loss since the previous point]
  accuracies: [],  // [step, accuracy on EVAL_DIGITS test digits]
  rate: null,
  adapter: null,
  finalAccuracy: null,
  firstEpochSeconds: null,
  done: false,
  error: null,
  strokes: 0,      // strokes drawn on the pad
  samples: [],     // the GPT's: [step, text]
  newton: null,    // the Newton panel's first run: {path, hessian, gradient}
};
const isText = () => state.model === 'gpt';
window.wgradState = state;

function status(text) { $('status').textContent = text; }

function fail(where, e) {
  state.error = `${where}: ${e && e.message ? e.message : e}`;
  console.error(state.error);
  status(state.error);
}

async function main() {
  buildBars();
  setUpPad();
  drawCharts();
  if (!navigator.gpu) {
    return noWebGPU('This browser does not expose WebGPU (navigator.gpu is missing).');
  }
  const gpuAdapter = await navigator.gpu.requestAdapter();
  if (!gpuAdapter) {
    return noWebGPU('WebGPU is present but no adapter is available (it may be disabled or blocklisted).');
  }
  const fallback = Boolean(gpuAdapter.isFallbackAdapter || (gpuAdapter.info && gpuAdapter.info.isFallbackAdapter));
  status(`loading the wasm module and ${isText() ? 'the text' : 'the digits'}…`);
  await init();
  const get = async (f) => {
    const r = await fetch(`data/${f}`);
    if (!r.ok) throw new Error(`fetching data/${f}: HTTP ${r.status}`);
    return r;
  };
  if (isText()) {
    state.demo = await TextDemo.create(await (await get('shakespeare.txt')).text());
  } else {
    state.demo = await Demo.create(...await Promise.all(FILES.map(async (f) => new Uint8Array(await (await get(f)).arrayBuffer()))));
  }
  showMode();
  // wgpu reports the backend; the browser's own adapter info names the device
  const info = gpuAdapter.info || {};
  const described = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ');
  const fromWgpu = JSON.parse(state.demo.adapter());
  state.adapter = { ...fromWgpu, name: fromWgpu.name || described || 'unnamed adapter', fallback };
  const a = state.adapter;
  $('adapter').textContent = `${a.name} · ${a.backend}${a.fallback ? ' · fallback (software) adapter' : ''}`;
  $('adapter').classList.add('ok');
  $('model').value = state.model;
  if (!isText()) state.demo.setModel(state.model);
  for (const id of ['model', 'start', 'reset']) $(id).disabled = false;
  $('start').onclick = () => (state.running ? pause() : start());
  $('reset').onclick = () => { pause(); reset(state.model); };
  // the GPT and the digit models are separate demos: switch by reloading
  $('model').onchange = () => {
    pause();
    if (($('model').value === 'gpt') !== isText()) location.search = `?model=${$('model').value}`;
    else reset($('model').value);
  };
  $('clear').onclick = clearPad;
  state.newton = await setUpNewton(state.demo.newton(), $('newton-plot'), $('newton-numbers'));
  status(isText() ? 'ready: press Start to train the GPT' : 'ready: press Start, or draw a digit to see the untrained model guess');
  const fixed = parseInt(params.get('steps') || '', 10);
  if (fixed > 0) await trainFixed(fixed);
}

function noWebGPU(reason) {
  $('no-webgpu').hidden = false;
  $('no-webgpu-reason').textContent = reason;
  $('adapter').textContent = 'no WebGPU';
  status('');
  state.error = reason;
}

// The page's parts for the model: the digits' (pad, accuracy) or the text's
// (samples).
function showMode() {
  const text = isText();
  $('train-title').textContent = text ? 'Train a character GPT on Hamlet' : 'Train on 8,000 real MNIST digits';
  $('draw-card').hidden = text;
  $('samples-card').hidden = !text;
  for (const id of ['accuracy-chart', 'accuracy-stat', 'epochs-stat']) $(id).hidden = text;
  $('loss-label').textContent = text ? 'loss, nats/char' : 'loss';
  if (text) $('gpt-about').textContent = state.demo.describe();
}

function reset(model) {
  if (model === 'gpt') return location.reload(); // a fresh TextDemo
  state.model = model;
  state.demo.setModel(model);
  state.losses = [];
  state.accuracies = [];
  state.rate = null;
  updateStats();
  drawCharts();
  status(`new ${model.toUpperCase()}: press Start`);
  predictNow();
}

function start() {
  state.running = true;
  $('start').textContent = 'Pause';
  status('training…');
  state.busy = trainLoop();
}

function pause() {
  state.running = false;
  $('start').textContent = 'Start';
}

// One call records STEPS_PER_CALL steps on the GPU and reads their mean loss
// back once; the page stays responsive between calls.
async function trainSteps(n) {
  const t0 = performance.now();
  const loss = await state.demo.train(n);
  const dt = (performance.now() - t0) / 1000;
  const rate = n / dt;
  state.rate = state.rate === null ? rate : 0.8 * state.rate + 0.2 * rate;
  state.losses.push([state.demo.steps(), loss]);
  if (!isText() && state.firstEpochSeconds === null && state.demo.epochs() >= 1) {
    state.firstEpochSeconds = (performance.now() - state.trainStart) / 1000;
  }
  const every = isText() ? SAMPLE_EVERY : EVAL_EVERY[state.model];
  const steps = state.demo.steps();
  if (Math.floor(steps / every) > Math.floor((steps - n) / every)) {
    if (isText()) await sampleText();
    else state.accuracies.push([steps, await state.demo.evaluate(EVAL_DIGITS)]);
  }
  updateStats();
  drawCharts();
}

async function trainLoop() {
  state.trainStart ??= performance.now();
  try {
    while (state.running) {
      await trainSteps(STEPS_PER_CALL[state.model]);
      await new Promise(requestAnimationFrame);
    }
  } catch (e) {
    pause();
    fail('training', e);
  }
}

async function trainFixed(total) {
  status(`training ${total} steps…`);
  state.trainStart = performance.now();
  try {
    let left = total;
    while (left > 0) {
      const n = Math.min(left, STEPS_PER_CALL[state.model]);
      await trainSteps(n);
      left -= n;
      await new Promise(requestAnimationFrame);
    }
    if (isText()) {
      if (state.samples.at(-1)?.[0] !== state.demo.steps()) await sampleText();
      const [first, last] = [state.losses[0][1], state.losses.at(-1)[1]];
      status(`trained ${total} steps: loss ${first.toFixed(3)} → ${last.toFixed(3)} nats/char`);
      state.done = true;
      return;
    }
    state.finalAccuracy = await state.demo.evaluate(1e9);
    if (state.accuracies.at(-1)?.[0] !== state.demo.steps()) state.accuracies.push([state.demo.steps(), state.finalAccuracy]);
    drawCharts();
    $('accuracy').textContent = `${(100 * state.finalAccuracy).toFixed(1)}%`;
    status(`trained ${total} steps: ${(100 * state.finalAccuracy).toFixed(2)}% on all 2,000 test digits`);
    state.done = true;
  } catch (e) {
    fail('training', e);
  }
}

// A sample from the GPT as it is now, shown above the earlier ones.
async function sampleText() {
  const step = state.demo.steps();
  const text = await state.demo.sample(SAMPLE_CHARS, TEMPERATURE);
  state.samples.push([step, text]);
  const item = document.createElement('div');
  item.className = 'sample';
  item.innerHTML = '<span class="label"></span><pre></pre>';
  item.querySelector('.label').textContent = `after ${step} steps`;
  item.querySelector('pre').textContent = text;
  $('samples').prepend(item);
}

function updateStats() {
  const d = state.demo;
  $('steps').textContent = d ? d.steps() : 0;
  $('epochs').textContent = d && !isText() ? d.epochs().toFixed(2) : '0.00';
  $('rate').textContent = state.rate === null ? '–' : state.rate.toFixed(1);
  const l = state.losses.at(-1);
  $('loss').textContent = l ? l[1].toFixed(3) : '–';
  const a = state.accuracies.at(-1);
  $('accuracy').textContent = a ? `${(100 * a[1]).toFixed(1)}%` : '–';
}

// ---- charts ---------------------------------------------------------------

function drawChart(canvas, points, { title, color, yMax, format }) {
  const ctx = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  const pad = { l: 46, r: 12, t: 22, b: 24 };
  ctx.clearRect(0, 0, w, h);
  ctx.font = '12px system-ui, sans-serif';
  ctx.fillStyle = '#1d2330';
  ctx.fillText(title, pad.l, 14);
  const xMax = Math.max(10, points.length ? points.at(-1)[0] : 10);
  const top = yMax ?? Math.max(1e-3, ...points.map((p) => p[1])) * 1.1;
  const X = (x) => pad.l + (x / xMax) * (w - pad.l - pad.r);
  const Y = (y) => h - pad.b - (y / top) * (h - pad.t - pad.b);
  ctx.strokeStyle = '#e3e6ec';
  ctx.fillStyle = '#6b7385';
  for (let i = 0; i <= 4; i++) {
    const y = (top * i) / 4;
    ctx.beginPath();
    ctx.moveTo(pad.l, Y(y));
    ctx.lineTo(w - pad.r, Y(y));
    ctx.stroke();
    ctx.fillText(format(y), 4, Y(y) + 4);
  }
  ctx.fillText('0', pad.l, h - 6);
  ctx.fillText(`${xMax} steps`, w - pad.r - 60, h - 6);
  if (!points.length) return;
  ctx.strokeStyle = color;
  ctx.fillStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
  ctx.stroke();
  ctx.lineWidth = 1;
  if (points.length < 30) {
    for (const [x, y] of points) {
      ctx.beginPath();
      ctx.arc(X(x), Y(y), 3, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
}

function drawCharts() {
  drawChart($('loss-chart'), state.losses, {
    title: isText() ? 'training loss (nats per character)' : 'training loss', color: '#3b5bdb', format: (v) => v.toFixed(2),
  });
  drawChart($('accuracy-chart'), state.accuracies, {
    title: `test accuracy (${EVAL_DIGITS} digits)`, color: '#e8590c', yMax: 1, format: (v) => `${Math.round(100 * v)}%`,
  });
}

// ---- drawing pad ----------------------------------------------------------

function buildBars() {
  $('bars').innerHTML = Array.from({ length: 10 }, (_, d) =>
    `<div class="bar" id="bar-${d}"><span>${d}</span><div class="track"><div class="fill"></div></div><span class="pct">–</span></div>`).join('');
}

function setUpPad() {
  const pad = $('pad');
  const ctx = pad.getContext('2d', { willReadFrequently: true });
  clearPad();
  let drawing = false;
  let last = null;
  const at = (e) => {
    const r = pad.getBoundingClientRect();
    return [((e.clientX - r.left) * pad.width) / r.width, ((e.clientY - r.top) * pad.height) / r.height];
  };
  pad.addEventListener('pointerdown', (e) => {
    drawing = true;
    last = at(e);
    pad.setPointerCapture(e.pointerId);
  });
  pad.addEventListener('pointermove', (e) => {
    if (!drawing) return;
    const p = at(e);
    ctx.strokeStyle = '#fff';
    ctx.lineWidth = 20;
    ctx.lineCap = 'round';
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...p);
    ctx.stroke();
    last = p;
    schedulePredict();
  });
  const end = () => {
    if (drawing) state.strokes += 1;
    drawing = false;
    schedulePredict();
  };
  pad.addEventListener('pointerup', end);
  pad.addEventListener('pointercancel', end);
}

function clearPad() {
  const ctx = $('pad').getContext('2d', { willReadFrequently: true });
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, 280, 280);
  $('guess').textContent = '?';
  for (let d = 0; d < 10; d++) showBar(d, null, false);
}

// The pad as MNIST expects it: the ink's bounding box scaled to fit 20×20,
// placed so its centre of mass sits at the centre of a 28×28 image.
function padPixels() {
  const pad = $('pad');
  const src = pad.getContext('2d', { willReadFrequently: true }).getImageData(0, 0, pad.width, pad.height).data;
  let [x0, y0, x1, y1] = [pad.width, pad.height, -1, -1];
  for (let y = 0; y < pad.height; y++) {
    for (let x = 0; x < pad.width; x++) {
      if (src[(y * pad.width + x) * 4] > 20) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0) return null;
  const side = Math.max(x1 - x0 + 1, y1 - y0 + 1);
  const scale = 20 / side;
  const small = document.createElement('canvas');
  small.width = small.height = 28;
  const sctx = small.getContext('2d', { willReadFrequently: true });
  sctx.imageSmoothingQuality = 'high';
  const dw = (x1 - x0 + 1) * scale;
  const dh = (y1 - y0 + 1) * scale;
  sctx.drawImage(pad, x0, y0, x1 - x0 + 1, y1 - y0 + 1, (28 - dw) / 2, (28 - dh) / 2, dw, dh);
  const img = sctx.getImageData(0, 0, 28, 28).data;
  const grey = new Float32Array(784);
  let [mass, mx, my] = [0, 0, 0];
  for (let i = 0; i < 784; i++) {
    grey[i] = img[i * 4] / 255;
    mass += grey[i];
    mx += grey[i] * (i % 28);
    my += grey[i] * Math.floor(i / 28);
  }
  const [dx, dy] = [Math.round(13.5 - mx / mass), Math.round(13.5 - my / mass)];
  const out = new Float32Array(784);
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      const [sx, sy] = [x - dx, y - dy];
      if (sx >= 0 && sx < 28 && sy >= 0 && sy < 28) out[y * 28 + x] = grey[sy * 28 + sx];
    }
  }
  return out;
}

let predictQueued = false;
// Predictions run concurrently with drawing; only the latest one asked for
// is shown (an older one, of a partial drawing, may finish after it).
let predictAsked = 0;
function schedulePredict() {
  if (predictQueued) return;
  predictQueued = true;
  requestAnimationFrame(() => { predictQueued = false; predictNow(); });
}

async function predictNow() {
  if (!state.demo) return;
  const pixels = padPixels();
  if (!pixels) return;
  const asked = ++predictAsked;
  const strokes = state.strokes;
  try {
    const probs = await state.demo.predict(pixels);
    if (asked !== predictAsked) return;
    const best = probs.indexOf(Math.max(...probs));
    $('guess').textContent = String(best);
    probs.forEach((p, d) => showBar(d, p, d === best));
    state.lastPrediction = { digit: best, probabilities: Array.from(probs), pixels: Array.from(pixels), strokes };
  } catch (e) {
    fail('prediction', e);
  }
}

function showBar(d, p, top) {
  const bar = $(`bar-${d}`);
  bar.classList.toggle('top', top);
  bar.querySelector('.fill').style.width = p === null ? '0%' : `${(100 * p).toFixed(1)}%`;
  bar.querySelector('.pct').textContent = p === null ? '–' : `${(100 * p).toFixed(1)}%`;
}

main().catch((e) => fail('start-up', e));
