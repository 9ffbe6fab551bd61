"""CPU reference figures for wgrad's benchmark suite (benches/suite.rs):
numpy (OpenBLAS) matmul GFLOP/s, and HIPS autograd on numpy for one training
step (forward, backward, SGD) of the MLP 784-256-10 at batch 128 and 1, and
for the first such step of a fresh process (benches/first_step.rs).
Prints JSON. Run by scripts/bench, which installs numpy and autograd.
`--first-step`: run one step at batch 128 and exit (the fresh process timed)."""

import json
import subprocess
import sys
import time

import autograd.numpy as anp
import numpy as np
from autograd import grad


def median_time(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def matmul(n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    t = median_time(lambda: a @ b, 7 if n < 2048 else 3)
    return 2 * n**3 / t / 1e9


def mlp(batch):
    """One training step of the MLP at `batch`, as a function."""
    rng = np.random.default_rng(0)
    params = [
        (rng.standard_normal((784, 256)) * 0.05).astype(np.float32),
        np.zeros(256, np.float32),
        (rng.standard_normal((256, 10)) * 0.05).astype(np.float32),
        np.zeros(10, np.float32),
    ]
    x = rng.random((batch, 784), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[np.arange(batch) % 10]

    def loss(p, x, y):
        h = anp.tanh(anp.dot(x, p[0]) + p[1])
        z = anp.dot(h, p[2]) + p[3]
        logp = z - anp.log(anp.sum(anp.exp(z - anp.max(z, axis=1, keepdims=True)), axis=1, keepdims=True)) \
            - anp.max(z, axis=1, keepdims=True)
        return -anp.sum(logp * y) / x.shape[0]

    g = grad(loss)

    def step():
        grads = g(params, x, y)
        for i in range(4):
            params[i] = params[i] - 0.01 * grads[i]

    return step


def mlp_step(batch):
    return median_time(mlp(batch), 50 if batch > 1 else 200) * 1e3


def first_step(runs=3):
    """Median seconds of a fresh interpreter's import, set-up and first step."""
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--first-step"], check=True)
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


if "--first-step" in sys.argv:
    mlp(128)()
    sys.exit()

print(json.dumps({
    "numpy_matmul_gflops": {str(n): matmul(n) for n in (256, 512, 1024, 2048)},
    "autograd_mlp_ms": {"128": mlp_step(128), "1": mlp_step(1)},
    "autograd_first_step_s": first_step(),
}))
