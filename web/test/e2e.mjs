// The demo in a real browser: Debian's Chromium, headless, with WebGPU.
// Waits for the adapter, checks the Newton panel's Hessian against the native
// value, trains a fixed number of steps, checks that the loss fell and the
// test accuracy passed a threshold (the GPT: that its loss fell by a margin
// and it wrote a sample), checks the trained MLP's
// derivatives (gradient, forward mode, second order) against finite
// differences on the page's GPU, draws a 7 and checks that the
// prediction of the whole drawing is 7 (training and drawing are
// deterministic), fails on any console error, and saves a screenshot.
//
//   node web/test/e2e.mjs   (after scripts/build-web; scripts/test-web does both)
//
// Environment: CHROMIUM (default /usr/bin/chromium), MODEL (mlp, cnn or gpt,
// default mlp), STEPS (default 150), MIN_ACCURACY (default 0.85),
// SCREENSHOT (default ci-artifacts/web-demo.png).

import { spawn } from 'node:child_process';
import { mkdirSync, copyFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const web = join(dirname(fileURLToPath(import.meta.url)), '..');
const root = join(web, '..');
const model = process.env.MODEL || 'mlp';
const steps = parseInt(process.env.STEPS || '150', 10);
const minAccuracy = parseFloat(process.env.MIN_ACCURACY || '0.85');
const shot = process.env.SCREENSHOT || join(root, 'ci-artifacts', 'web-demo.png');
const port = 8000 + Math.floor(Math.random() * 1000);

// The Newton panel's Hessian at its start (−0.5, 1), row-major: the f64 closed
// form rounded to f32, pinned also in tests/forward.rs
// (newton_panel_hessian_matches_its_pins), where the native value must be
// within 1e-6. Each entry is a mean of eight terms σ(z)(1 − σ(z))·x², each a
// dozen f32 operations (a matmul, exp and log inside softplus and its two
// derivatives, products); WGSL lets exp and log be off by 3 + 2|x| ULP and
// SwiftShader's are not correctly rounded, so allow 2e-5 (about 100 ULP of
// values ≤ 0.6): far below the 1e-2 a wrong rule or a dropped term would give.
const NEWTON_HESSIAN = [0.58635174, 0.17749216, 0.17749216, 0.19896534];
const NEWTON_TOLERANCE = 2e-5;
// the GPT's loss must end at least this fraction below its first value
const GPT_MARGIN = 0.15;

function check(ok, what) {
  if (!ok) throw new Error(`browser test: ${what}`);
  console.log(`ok: ${what}`);
}

const server = spawn('python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.1'], { cwd: web, stdio: 'ignore' });
let browser;
let failed = false;
try {
  for (let i = 0; i < 50; i++) {
    try { if ((await fetch(`http://127.0.0.1:${port}/index.html`)).ok) break; } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--disable-quic', '--no-first-run',
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('console', (m) => {
    console.log(`[page ${m.type()}] ${m.text()}`);
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  const t0 = Date.now();
  await page.goto(`http://127.0.0.1:${port}/index.html?model=${model}&steps=${steps}`);

  await page.waitForFunction(() => window.wgradState && (window.wgradState.adapter || window.wgradState.error), null, { timeout: 120_000 });
  const adapter = await page.evaluate(() => window.wgradState.adapter);
  check(adapter && adapter.name, `WebGPU adapter: ${adapter && `${adapter.name} (${adapter.backend}, fallback ${adapter.fallback})`}`);
  console.log(adapter.matmul);

  await page.waitForFunction(() => window.wgradState.newton || window.wgradState.error, null, { timeout: 300_000 });
  const newton = await page.evaluate(() => window.wgradState.newton);
  check(newton && newton.hessian.length === 4 && newton.hessian.every((h, i) => Math.abs(h - NEWTON_HESSIAN[i]) <= NEWTON_TOLERANCE),
    `the Newton panel's Hessian on the page's GPU ${JSON.stringify(newton?.hessian)} equals the native ` +
    `${JSON.stringify(NEWTON_HESSIAN)} within ${NEWTON_TOLERANCE}`);
  const [a, b, l] = newton.path.at(-1);
  check(Math.abs(a - 0.88745) < 1e-3 && Math.abs(b + 0.47296) < 1e-3,
    `Newton converged to (${a.toFixed(5)}, ${b.toFixed(5)}), loss ${l.toFixed(6)} (f64: (0.88745, -0.47296), 0.523152)`);

  await page.waitForFunction(() => window.wgradState.done || window.wgradState.error, null, { timeout: 900_000, polling: 500 });
  const s = await page.evaluate(() => ({
    error: window.wgradState.error, losses: window.wgradState.losses, accuracy: window.wgradState.finalAccuracy,
    rate: window.wgradState.rate, firstEpoch: window.wgradState.firstEpochSeconds, steps: window.wgradState.demo.steps(),
  }));
  check(!s.error, `no error while training (${s.error || 'none'})`);
  check(s.steps === steps, `trained ${s.steps} steps`);
  const first = s.losses[0][1];
  const last = s.losses.at(-1)[1];
  if (model === 'gpt') {
    check(last < (1 - GPT_MARGIN) * first, `GPT loss fell from ${first.toFixed(3)} to ${last.toFixed(3)} nats/char ` +
      `(by ${(100 * (1 - last / first)).toFixed(1)}%, at least ${100 * GPT_MARGIN}%)`);
    const samples = await page.evaluate(() => window.wgradState.samples);
    const shown = await page.locator('#samples pre').first().textContent();
    check(samples.length > 0 && samples.at(-1)[1].length === 100 && shown === samples.at(-1)[1],
      `the GPT wrote ${samples.length} samples, the last after ${samples.at(-1)?.[0]} steps: ${JSON.stringify(samples.at(-1)?.[1])}`);
  } else {
    check(last < 0.5 * first, `loss fell from ${first.toFixed(3)} to ${last.toFixed(3)}`);
    check(s.accuracy >= minAccuracy, `test accuracy ${(100 * s.accuracy).toFixed(2)}% ≥ ${100 * minAccuracy}%`);
  }

  // the trained model's derivatives in this browser: gradient, forward mode and
  // second order (the MLP's: the CNN's max-pooling makes its loss piecewise
  // smooth, and a finite-difference step across all its weights crosses kinks)
  if (model === 'mlp') {
    const d = await page.evaluate(() => window.wgradState.demo.checkDerivatives(8));
    check(d.passed && d.forward.length === 2 && d.secondOrder.length === 2,
      `derivatives on the page's GPU agree with finite differences: ⟨∇L, v⟩ ${JSON.stringify(d.directions)}, ` +
      `jvp vs vjp ${JSON.stringify(d.forward)}, ⟨H·u, v⟩ ${JSON.stringify(d.secondOrder)}` +
      `${d.failures.length ? `; failed: ${d.failures.join('; ')}` : ''}`);
  }

  // draw a 7 on the pad
  if (model !== 'gpt') {
    const box = await page.locator('#pad').boundingBox();
    const P = (x, y) => [box.x + x * box.width, box.y + y * box.height];
    await page.mouse.move(...P(0.22, 0.22));
    await page.mouse.down();
    for (const [x, y] of [[0.5, 0.2], [0.78, 0.2], [0.62, 0.5], [0.48, 0.85]]) await page.mouse.move(...P(x, y), { steps: 8 });
    await page.mouse.up();
    // the prediction of the whole drawing (not of a part drawn so far)
    await page.waitForFunction(() => window.wgradState.lastPrediction?.strokes === 1, null, { timeout: 60_000 });
    const guess = await page.locator('#guess').textContent();
    const pred = await page.evaluate(() => window.wgradState.lastPrediction);
    const total = pred.probabilities.reduce((a, b) => a + b, 0);
    check(guess === '7' && pred.digit === 7 && Math.abs(total - 1) < 1e-3,
      `a drawn 7 is classified as ${guess} (p = ${pred.probabilities[pred.digit].toFixed(2)}, Σp = ${total.toFixed(4)})`);
  }

  check(errors.length === 0, `no console errors${errors.length ? `: ${errors.join(' | ')}` : ''}`);
  await page.waitForTimeout(300); // the probability bars' 0.12 s transition
  mkdirSync(dirname(shot), { recursive: true });
  await page.screenshot({ path: shot, fullPage: true });
  // the README shows the default demo, the MLP's, and the GPT's
  const shown = { mlp: 'screenshot.png', gpt: 'screenshot-gpt.png' }[model];
  if (shown) copyFileSync(shot, join(web, shown));
  console.log(`screenshot: ${shot}${shown ? ` (and web/${shown})` : ''}`);
  console.log(`summary: ${steps} ${model.toUpperCase()} steps at ${s.rate.toFixed(2)} steps/s, ` +
    (model === 'gpt' ? `loss ${first.toFixed(3)} → ${last.toFixed(3)} nats/char, ` : `first epoch after ${s.firstEpoch?.toFixed(1)} s, `) +
    `page load to done ${((Date.now() - t0) / 1000).toFixed(1)} s` +
    (model === 'gpt' ? '' : `, accuracy ${(100 * s.accuracy).toFixed(2)}%`) +
    `; Newton panel Hessian ${JSON.stringify(newton.hessian)}`);
} catch (e) {
  failed = true;
  console.error(String(e.stack || e));
} finally {
  if (browser) await browser.close();
  server.kill();
}
process.exit(failed ? 1 : 0);
