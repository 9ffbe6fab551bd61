// The second-derivative panel: Newton's method on a two-parameter logistic
// regression, each step's Hessian computed on the page's GPU by wgrad's
// `hessian` (forward mode over the reverse-mode gradient). Draws the loss's
// contours over (slope a, intercept b) and the iterates; a click starts
// Newton again from the point clicked.

// the plotted window of (a, b), and the first run's start (the browser test
// compares the Hessian there with the native value: tests/forward.rs)
const A = [-1.25, 1.75];
const B = [-1.75, 1.5];
const START = [-0.5, 1.0];
const ITERATIONS = 6;
const GRID = 64;
const LEVELS = [0.525, 0.53, 0.55, 0.6, 0.7, 0.85, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0];

// Draws the contours, runs Newton from START, and resolves to that first run.
export async function setUpNewton(newton, canvas, numbers) {
  const grid = await newton.grid(A[0], A[1], B[0], B[1], GRID);
  const run = async ([a, b]) => {
    const r = await newton.path(a, b, ITERATIONS);
    draw(canvas, grid, r.path);
    show(numbers, r);
    return r;
  };
  canvas.addEventListener('click', (e) => {
    const rect = canvas.getBoundingClientRect();
    const [u, v] = [(e.clientX - rect.left) / rect.width, (e.clientY - rect.top) / rect.height];
    run([A[0] + u * (A[1] - A[0]), B[1] - v * (B[1] - B[0])]).catch((err) => console.error(`newton: ${err}`));
  });
  return run(START);
}

function draw(canvas, grid, path) {
  const ctx = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  // grid row k holds b = B[0] + k·Δ: b up the canvas
  const X = (a) => ((a - A[0]) / (A[1] - A[0])) * w;
  const Y = (b) => h - ((b - B[0]) / (B[1] - B[0])) * h;
  const at = (i, j) => grid[j * GRID + i];
  const px = (i) => (i / (GRID - 1)) * w;
  const py = (j) => h - (j / (GRID - 1)) * h;
  ctx.fillStyle = '#f8f9fc';
  ctx.fillRect(0, 0, w, h);
  // contour lines by marching squares: in each cell, join the points where
  // the level crosses its edges (linear interpolation along each edge)
  ctx.lineWidth = 1;
  LEVELS.forEach((level, n) => {
    ctx.strokeStyle = `hsl(${225 - (n * 200) / LEVELS.length}, 55%, 58%)`;
    ctx.beginPath();
    for (let j = 0; j + 1 < GRID; j++) {
      for (let i = 0; i + 1 < GRID; i++) {
        const corners = [[i, j], [i + 1, j], [i + 1, j + 1], [i, j + 1]];
        const hits = [];
        for (let e = 0; e < 4; e++) {
          const [p, q] = [corners[e], corners[(e + 1) % 4]];
          const [u, v] = [at(...p), at(...q)];
          if ((u < level) !== (v < level)) {
            const t = (level - u) / (v - u);
            hits.push([px(p[0] + t * (q[0] - p[0])), py(p[1] + t * (q[1] - p[1]))]);
          }
        }
        for (let k = 0; k + 1 < hits.length; k += 2) {
          ctx.moveTo(...hits[k]);
          ctx.lineTo(...hits[k + 1]);
        }
      }
    }
    ctx.stroke();
  });
  // the iterates, joined
  ctx.strokeStyle = '#e8590c';
  ctx.fillStyle = '#e8590c';
  ctx.lineWidth = 2;
  ctx.beginPath();
  path.forEach(([a, b], i) => (i ? ctx.lineTo(X(a), Y(b)) : ctx.moveTo(X(a), Y(b))));
  ctx.stroke();
  path.forEach(([a, b], i) => {
    ctx.beginPath();
    ctx.arc(X(a), Y(b), i ? 3.5 : 5, 0, 2 * Math.PI);
    ctx.fill();
  });
  ctx.fillStyle = '#1d2330';
  ctx.font = '12px system-ui, sans-serif';
  ctx.fillText('slope a →', w - 64, h - 8);
  ctx.fillText('↑ intercept b', 6, 14);
}

function show(el, { path, hessian: H, gradient: g }) {
  const f = (v) => v.toFixed(5);
  const [a, b] = path[0];
  const rows = path.map(([pa, pb, l], i) => `<tr><td>${i}</td><td>${f(pa)}</td><td>${f(pb)}</td><td>${f(l)}</td></tr>`).join('');
  el.innerHTML = `
    <p>at the start (${a.toFixed(2)}, ${b.toFixed(2)}):</p>
    <div class="matrix"><span class="label">Hessian ∇²L</span>
      <table><tr><td>${f(H[0])}</td><td>${f(H[1])}</td></tr><tr><td>${f(H[2])}</td><td>${f(H[3])}</td></tr></table></div>
    <div class="matrix"><span class="label">gradient ∇L</span>
      <table><tr><td>${f(g[0])}</td></tr><tr><td>${f(g[1])}</td></tr></table></div>
    <table class="iterates"><tr><th>step</th><th>a</th><th>b</th><th>loss</th></tr>${rows}</table>`;
}
