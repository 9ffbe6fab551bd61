//! The f64 reference: gradients and their error bounds, and finite
//! differences.

use crate::common::Array;
use crate::program::{BinaryFn::*, Op, Program, ReduceFn::*, ScalarFn::*, UnaryFn::*, numel};
use crate::reference::{Analysis, HALF, Kernels, SIN_ABS, TINY, ULP, abs, exp_err, keep, prod, quot, zeros, zip};

// ---- the f64 reference: gradients and their error bounds ---------------------------

/// `g` summed down to `shape`, undoing broadcasting (as wgrad's driver does),
/// with the bound `e` of its error: the sum of m terms adds (m − 1)·u·Σ|g|.
fn unbroadcast(g: Array, e: Array, shape: &[usize]) -> (Array, Array) {
    if g.shape == shape {
        return (g, e);
    }
    let m = (g.numel() / numel(shape)) as f64;
    let err = sum_to(&e, shape) + sum_to(&abs(&g), shape) * ((m - 1.0) * HALF) + TINY;
    (sum_to(&g, shape), err)
}

/// `g` summed down to `shape` over the axes it was broadcast along.
fn sum_to(g: &Array, shape: &[usize]) -> Array {
    let lead = g.shape.len() - shape.len();
    let axes: Vec<usize> =
        (0..g.shape.len()).filter(|&d| d < lead || (shape[d - lead] == 1 && g.shape[d] != 1)).collect();
    g.sum(&axes, true).reshape(shape)
}

/// One adjoint contribution: to value `to`, exact value `g`, error bound `e`.
struct Contribution {
    to: usize,
    g: Array,
    e: Array,
}

/// The contributions of op `i` to its operands' adjoints, given its exact
/// adjoint `g` with error bound `eg`, following wgrad's VJP rules op by op:
/// each formula's f32 roundings plus the errors of what it reads (the
/// adjoint and the forward values, bounds `e`), propagated as forward.
fn backward(op: &Op, v: &[Array], e: &[Array], i: usize, g: &Array, eg: &Array, k: Kernels) -> Vec<Contribution> {
    let (y, ey) = (&v[i], &e[i]);
    let one = |to: usize, g: Array, e: Array| vec![Contribution { to, g, e }];
    // a contribution of the output's shape, summed down to operand `to`
    let to_operand = |to: usize, g: Array, err: Array| {
        let (g, e) = unbroadcast(g, err, &v[to].shape);
        Contribution { to, g, e }
    };
    // ĝ·d̂ rounded
    let times = |d: &Array, ed: &Array| {
        let c = g * d;
        let err = prod(g, eg, d, ed) + k.rounding(&c, 0.5);
        (c, err)
    };
    match op {
        Op::Input(_) => vec![],
        Op::Unary(f, x) => {
            let (xv, ex) = (&v[*x], &e[*x]);
            // d = f'(x) as the GPU computes it, with its error
            let (d, ed) = match f {
                // 1 − y·y: two roundings
                Tanh => {
                    let d = y.map(|y| 1.0 - y * y);
                    let ed = prod(y, ey, y, ey) + k.rounding(&(y * y), 0.5) + k.rounding(&d, 0.5);
                    (d, ed)
                }
                // y·(1 − y)
                Sigmoid => {
                    let r = y.map(|y| 1.0 - y);
                    let d = y * &r;
                    let ed = prod(y, ey, &r, &(ey + &k.rounding(&r, 0.5))) + k.rounding(&d, 0.5);
                    (d, ed)
                }
                Exp => (y.clone(), ey.clone()),
                // cos x: |cos(x + δ) − cos x| ≤ |sin x|·|δ| + δ²/2; 2⁻¹¹ absolute
                Sin => {
                    let d = xv.map(f64::cos);
                    let ed = zip(xv, ex, |x, e| x.sin().abs() * e + e * e / 2.0) + k.rounding(&d, 0.0) + SIN_ABS;
                    (d, ed)
                }
                // [x > 0] and sign(x): exact, on the same side of the kink as
                // the reference (programs near it skip this check)
                Relu => (xv.map(|x| if x > 0.0 { 1.0 } else { 0.0 }), zeros(&xv.shape)),
                Abs => (xv.map(|x| if x == 0.0 { 0.0 } else { x.signum() }), zeros(&xv.shape)),
                // x·x is a product with x twice: two contributions g·x
                Square => {
                    let (c, err) = times(xv, ex);
                    return vec![
                        Contribution { to: *x, g: c.clone(), e: err.clone() },
                        Contribution { to: *x, g: c, e: err },
                    ];
                }
            };
            let (c, err) = times(&d, &ed);
            one(*x, c, err)
        }
        Op::Binary(f, a, b) => {
            let (av, bv, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            match f {
                Add => vec![to_operand(*a, g.clone(), eg.clone()), to_operand(*b, g.clone(), eg.clone())],
                Sub => vec![to_operand(*a, g.clone(), eg.clone()), to_operand(*b, g * -1.0, eg.clone())],
                Mul => {
                    let (ca, ea2) = times(bv, eb);
                    let (cb, eb2) = times(av, ea);
                    vec![to_operand(*a, ca, ea2), to_operand(*b, cb, eb2)]
                }
                // ∂a = g/b; ∂b = −g·(y/b)
                Div => {
                    let ca = g / bv;
                    let ea2 = quot(g, eg, bv, eb) + k.rounding(&ca, 2.5);
                    let t = y / bv;
                    let et = quot(y, ey, bv, eb) + k.rounding(&t, 2.5);
                    let (cb, eb2) = times(&t, &et);
                    vec![to_operand(*a, ca, ea2), to_operand(*b, cb * -1.0, eb2)]
                }
                // g to the larger operand (no ties: programs near one skip
                // this check)
                Maximum => {
                    let wins = zip(av, bv, |x, y| if x > y { 1.0 } else { 0.0 });
                    let ga = g * &wins;
                    let gb = g - &ga;
                    let (e_a, e_b) = (eg * &wins, eg - &(eg * &wins));
                    vec![to_operand(*a, ga, e_a), to_operand(*b, gb, e_b)]
                }
            }
        }
        Op::Scalar(Times, c, x) => {
            let gc = g * *c;
            let err = eg * c.abs() + k.rounding(&gc, 0.5);
            one(*x, gc, err)
        }
        Op::Scalar(Plus, _, x) => one(*x, g.clone(), eg.clone()),
        Op::Permute(x, p) => {
            let mut inverse = vec![0; p.len()];
            for (i, &d) in p.iter().enumerate() {
                inverse[d] = i;
            }
            one(*x, g.permute(&inverse), eg.permute(&inverse))
        }
        Op::Narrow { x, axis, start, len } => {
            let mut pads = vec![(0, 0); g.shape.len()];
            pads[*axis] = (*start, v[*x].shape[*axis] - start - len);
            one(*x, g.pad(&pads, 0.0), eg.pad(&pads, 0.0))
        }
        Op::Reshape(x, _) | Op::Unsqueeze(x, _) => one(*x, g.reshape(&v[*x].shape), eg.reshape(&v[*x].shape)),
        Op::Expand(x, _) => vec![to_operand(*x, g.clone(), eg.clone())],
        Op::Reduce { x, f, axes, .. } => {
            let (xv, ex) = (&v[*x], &e[*x]);
            let s = &xv.shape;
            let (gk, egk) = (keep(g, s, axes), keep(eg, s, axes));
            let n = axes.iter().map(|&d| s[d]).product::<usize>() as f64;
            match f {
                Sum => one(*x, gk.expand(s), egk.expand(s)),
                // g·f32(1/n): ½ ULP for 1/n, ½ for the product
                Mean => {
                    let c = (gk / n).expand(s);
                    let err = (egk / n).expand(s) + k.rounding(&c, 1.0);
                    one(*x, c, err)
                }
                // g/count to each (exactly equal) maximum, count ≥ 1
                Max => {
                    let at = zip(xv, &keep(y, s, axes), |x, m| f64::from(u8::from(x == m)));
                    let count = at.sum(axes, true);
                    let share = &gk / &count;
                    let err = &egk / &count + k.rounding(&share, 2.5);
                    one(*x, &at * &share, at * &err)
                }
                // g·exp(x − y): x − y rounds (½ ULP of t), exp (3 + 2|t|) ULP
                LogSumExp => {
                    let t = xv - &keep(y, s, axes);
                    let p = t.map(f64::exp);
                    let dt = ex + &keep(ey, s, axes) + k.rounding(&t, 0.5);
                    let ep = exp_err(&p, &dt) + &p * &t.map(|t| (3.0 + 2.0 * t.abs()) * ULP) + k.rounding(&p, 0.0);
                    let c = &gk * &p;
                    let err = prod(&gk, &egk, &p, &ep) + k.rounding(&c, 0.5);
                    one(*x, c, err)
                }
            }
        }
        Op::Softmax { x, axis, log } => {
            let n = v[*x].shape[*axis] as f64;
            let sum = |a: &Array| a.sum(&[*axis], true);
            if *log {
                // g − exp(y)·Σg
                let p = y.map(f64::exp);
                let ep = exp_err(&p, ey) + &p * &y.map(|y| (3.0 + 2.0 * y.abs()) * ULP) + k.rounding(&p, 0.0);
                let total = sum(g);
                let et = sum(eg) + sum(&abs(g)) * ((n - 1.0) * HALF) + TINY;
                let q = &p * &total;
                let eq = prod(&p, &ep, &total, &et) + k.rounding(&q, 0.5);
                let c = g - &q;
                let err = eg + &eq + k.rounding(&c, 0.5);
                one(*x, c, err)
            } else {
                // y·(g − Σ g·y)
                let (gy, egy) = times(y, ey);
                let total = sum(&gy);
                let et = sum(&egy) + sum(&abs(&gy)) * ((n - 1.0) * HALF) + TINY;
                let d = g - &total;
                let ed = eg + &et + k.rounding(&d, 0.5);
                let c = y * &d;
                let err = prod(y, ey, &d, &ed) + k.rounding(&c, 0.5);
                one(*x, c, err)
            }
        }
        Op::Matmul(a, b) => {
            let (av, bv, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            // dA = G·Bᵀ (dots of length n), dB = Aᵀ·G (length m), each then
            // summed over broadcast batches (r terms): ≤ (len + r)·u·Σ|terms|
            let (m, n) = (g.shape[g.shape.len() - 2] as f64, g.shape[g.shape.len() - 1] as f64);
            let mm = |p: &Array, q: &Array| p.matmul_with_scale(q).0;
            let (ca, sa) = g.matmul_with_scale(&bv.t());
            let ea2 = mm(eg, &abs(&bv.t())) + mm(&abs(g), &eb.t()) + mm(eg, &eb.t());
            let (cb, sb) = av.t().matmul_with_scale(g);
            let eb2 = mm(&abs(&av.t()), eg) + mm(&ea.t(), &abs(g)) + mm(&ea.t(), eg);
            let batched = |c: Array, err: Array, scale: Array, len: f64, to: usize| {
                let reps = (c.numel() / v[to].numel()) as f64;
                let (c, err) = unbroadcast(c, err, &v[to].shape);
                let scale = sum_to(&scale, &v[to].shape);
                Contribution { to, g: c, e: err + scale * ((len + reps) * HALF) + TINY }
            };
            vec![batched(ca, ea2, sa, n, *a), batched(cb, eb2, sb, m, *b)]
        }
        Op::Gather { x, axis, idx } => one_scatter(*x, &v[*x].shape, *axis, idx, g, eg),
        Op::IndexSelect { x, axis, idx } => {
            // the indices spread over g's shape: a gather's
            let mut line = vec![1; g.shape.len()];
            line[*axis] = idx.len();
            let spread = Array::new(&line, idx.iter().map(|&i| i as f64).collect()).expand(&g.shape);
            one_scatter(*x, &v[*x].shape, *axis, &spread, g, eg)
        }
        Op::Pad { x, pads, .. } => {
            let inner = |a: &Array| (0..pads.len()).fold(a.clone(), |a, d| a.narrow(d, pads[d].0, v[*x].shape[d]));
            one(*x, inner(g), inner(eg))
        }
        Op::Cat { xs, axis } => {
            let mut start = 0;
            let mut out = Vec::new();
            for &x in xs {
                let len = v[x].shape[*axis];
                out.push(Contribution { to: x, g: g.narrow(*axis, start, len), e: eg.narrow(*axis, start, len) });
                start += len;
            }
            out
        }
    }
}

/// The adjoint of a gather: g summed into the positions `idx` names (k
/// terms into one position add (k − 1)·u·Σ|g|).
fn one_scatter(to: usize, shape: &[usize], axis: usize, idx: &Array, g: &Array, eg: &Array) -> Vec<Contribution> {
    let scatter = |src: &Array| zeros(shape).scatter_add(axis, idx, src);
    let count = scatter(&Array::full(&g.shape, 1.0));
    let err = scatter(eg) + zip(&scatter(&abs(g)), &count, |s, k| (k - 1.0).max(0.0) * HALF * s);
    vec![Contribution { to, g: scatter(g), e: err }]
}

/// The exact gradient of Σ w·y with respect to each input, and bounds on
/// the GPU's error in it: reverse mode over the ops (the seed w is exact on
/// the GPU too: ∂(Σ w·y)/∂y = 1·w).
pub(crate) fn gradients(p: &Program, a: &Analysis, w: &Array, k: Kernels) -> Vec<(Array, Array)> {
    let n = p.ops.len();
    let mut adj: Vec<Vec<Contribution>> = (0..n).map(|_| vec![]).collect();
    adj[n - 1].push(Contribution { to: n - 1, g: w.clone(), e: zeros(&w.shape) });
    let mut grads: Vec<(Array, Array)> = p.inputs.iter().map(|s| (zeros(s), zeros(s))).collect();
    for i in (0..n).rev() {
        let parts = std::mem::take(&mut adj[i]);
        if parts.is_empty() {
            continue;
        }
        // the GPU adds contributions one by one: m terms add (m − 1)·u·Σ|g|
        let m = parts.len() as f64;
        let mut g = zeros(&parts[0].g.shape);
        let mut e = zeros(&g.shape);
        let mut total = zeros(&g.shape);
        for c in &parts {
            g = g + &c.g;
            e = e + &c.e;
            total = total + &abs(&c.g);
        }
        let e = e + total * ((m - 1.0) * (HALF + k.extra_ulps() * ULP));
        if let Op::Input(j) = p.ops[i] {
            grads[j] = (g, e);
            continue;
        }
        for c in backward(&p.ops[i], &a.values, &a.bounds, i, &g, &e, k) {
            adj[c.to].push(c);
        }
    }
    grads
}

/// Central differences of the f64 loss, h = 1e-6, with bounds on their
/// error. The f64 loss has rounding errors below `loss_bound`·2⁻²⁹ (the
/// bound of the f32 loss scaled to f64's u = 2⁻⁵³), so the differences are
/// off by at most that/h, plus truncation h²/6·|L'''|, taken ≤ 1e-7·(1 + |g|).
pub(crate) fn finite_differences(p: &Program, xs: &[Array], w: &Array, loss_bound: f64) -> Vec<(Array, Array)> {
    let h = 1e-6;
    let roundoff = loss_bound * 2f64.powi(-29) / h;
    let mut out = Vec::new();
    for j in 0..xs.len() {
        let mut g = zeros(&xs[j].shape);
        for i in 0..xs[j].numel() {
            let mut moved = xs.to_vec();
            moved[j].data[i] = xs[j].data[i] + h;
            let up = p.loss(&moved, w);
            moved[j].data[i] = xs[j].data[i] - h;
            let down = p.loss(&moved, w);
            g.data[i] = (up - down) / (2.0 * h);
        }
        let err = g.map(|g| roundoff + 1e-7 * (1.0 + g.abs()));
        out.push((g, err));
    }
    out
}
