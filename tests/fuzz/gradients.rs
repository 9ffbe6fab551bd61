//! The f64 reference: gradients and their error bounds, and finite
//! differences.

use crate::common::Array;
use crate::program::{BinaryFn::*, Equation, Op, Program, ReduceFn::*, ScalarFn::*, ScanFn, UnaryFn::*, numel};
use crate::reference::{
    Analysis, Bounded, HALF, Kernels, LOG_ABS, SIN_ABS, TINY, ULP, abs, along, column, exp_err, keep, prod, quot,
    sort_indices, zeros, zip,
};

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
            // the new rows' rules, as wgrad writes them (src/ir/elementwise.rs)
            let (gb, xb, yb) = (Bounded::new(g, eg, k), Bounded::new(xv, ex, k), Bounded::new(y, ey, k));
            let rule = match f {
                // g/(x² + 1)
                Atan => Some(gb.div(&xb.square().plus(1.0))),
                // g·rsqrt(x² + 1)
                Asinh => Some(gb.mul(&xb.square().plus(1.0).rsqrt())),
                // g·(s·(x·(1 − s) + 1)), s = σ(x)
                Silu => {
                    let s = xb.sigmoid();
                    Some(gb.mul(&s.mul(&xb.mul(&s.from(1.0)).plus(1.0))))
                }
                // g·(t + x·(1 − t²)·σ(x)), t = tanh(softplus x)
                Mish => {
                    let t = xb.softplus().tanh();
                    Some(gb.mul(&t.add(&xb.mul(&t.square().from(1.0)).mul(&xb.sigmoid()))))
                }
                // g/(|x| + 1)²
                Softsign => Some(gb.div(&xb.abs().plus(1.0).square())),
                // g·σ(−x)
                Logsigmoid => Some(gb.mul(&xb.neg().sigmoid())),
                // g·(y + 1)
                Expm1 => Some(gb.mul(&yb.plus(1.0))),
                // g/(x + 1)
                Log1p => Some(gb.div(&xb.plus(1.0))),
                // g·cosh x
                Sinh => Some(gb.mul(&xb.cosh())),
                _ => None,
            };
            if let Some(c) = rule {
                return one(*x, c.v, c.e);
            }
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
                _ => unreachable!("ruled above"),
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
            let [(ca, ea2), (cb, eb2)] = matmul_backward(&v[*a], &e[*a], &v[*b], &e[*b], g, eg);
            vec![Contribution { to: *a, g: ca, e: ea2 }, Contribution { to: *b, g: cb, e: eb2 }]
        }
        // the gradient to x where lo ≤ x ≤ hi (two where_: exact)
        Op::Clamp { x, lo, hi } => {
            let inside = v[*x].map(|x| f64::from(u8::from(*lo <= x && x <= *hi)));
            one(*x, g * &inside, eg * &inside)
        }
        // y = a + s, s = d·w, d = b − a: ∂a = g (from the sum) and −g·w
        // (from the difference), ∂b = g·w
        Op::Lerp { a, b, w } => {
            let gw = Bounded::new(g, eg, k).times(*w);
            vec![
                to_operand(*a, g.clone(), eg.clone()),
                to_operand(*a, &gw.v * -1.0, gw.e.clone()),
                to_operand(*b, gw.v, gw.e),
            ]
        }
        Op::Scan { x, f, axis } => {
            let (c, err) = scan_backward(*f, &v[*x], &e[*x], y, ey, g, eg, *axis, k);
            one(*x, c, err)
        }
        // a gather of the sorted positions (no near-ties: the GPU's order is
        // the reference's)
        Op::Sort { x, axis, descending } => {
            let idx = sort_indices(&v[*x], *axis, *descending, v[*x].shape[*axis]);
            one_scatter(*x, &v[*x].shape, *axis, &idx, g, eg)
        }
        Op::Topk { x, k: top, axis, largest } => {
            let idx = sort_indices(&v[*x], *axis, *largest, *top);
            one_scatter(*x, &v[*x].shape, *axis, &idx, g, eg)
        }
        Op::Einsum(eq, xs) => {
            let (av, ea) = (&v[xs[0]], &e[xs[0]]);
            match eq {
                Equation::BatchedMatmul => {
                    let [(ca, ea2), (cb, eb2)] = matmul_backward(av, ea, &v[xs[1]], &e[xs[1]], g, eg);
                    vec![Contribution { to: xs[0], g: ca, e: ea2 }, Contribution { to: xs[1], g: cb, e: eb2 }]
                }
                // a matmul with the second operand read transposed
                Equation::TransposeContract => {
                    let [(ca, ea2), (cb, eb2)] = matmul_backward(av, ea, &v[xs[1]].t(), &e[xs[1]].t(), g, eg);
                    vec![Contribution { to: xs[0], g: ca, e: ea2 }, Contribution { to: xs[1], g: cb.t(), e: eb2.t() }]
                }
                // (g·I) expanded: g on the diagonal, exactly
                Equation::Diagonal => {
                    let n = g.shape[0];
                    let on = |a: &Array| {
                        Array::new(
                            &[n, n],
                            (0..n * n).map(|i| if i % (n + 1) == 0 { a.data[i / n] } else { 0.0 }).collect(),
                        )
                    };
                    one(xs[0], on(g), on(eg))
                }
                // a broadcast product [i, 1]·[j]: as Mul
                Equation::Outer => {
                    let (bv, eb) = (&v[xs[1]], &e[xs[1]]);
                    let (ca, ea2) = times(bv, eb);
                    let (cb, eb2) = times(&column(av), &column(ea));
                    let (ca, ea2) = unbroadcast(ca, ea2, &[av.shape[0], 1]);
                    let (cb, eb2) = unbroadcast(cb, eb2, &bv.shape);
                    vec![
                        Contribution { to: xs[0], g: ca.reshape(&av.shape), e: ea2.reshape(&av.shape) },
                        Contribution { to: xs[1], g: cb, e: eb2 },
                    ]
                }
            }
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

/// The VJP of a matmul a·b (batched, broadcast) with the bounds of its
/// error: dA = G·Bᵀ (dots of length n), dB = Aᵀ·G (length m), each then
/// summed over broadcast batches (r terms): ≤ (len + r)·u·Σ|terms|.
fn matmul_backward(av: &Array, ea: &Array, bv: &Array, eb: &Array, g: &Array, eg: &Array) -> [(Array, Array); 2] {
    let (m, n) = (g.shape[g.shape.len() - 2] as f64, g.shape[g.shape.len() - 1] as f64);
    let mm = |p: &Array, q: &Array| p.matmul_with_scale(q).0;
    let (ca, sa) = g.matmul_with_scale(&bv.t());
    let ea2 = mm(eg, &abs(&bv.t())) + mm(&abs(g), &eb.t()) + mm(eg, &eb.t());
    let (cb, sb) = av.t().matmul_with_scale(g);
    let eb2 = mm(&abs(&av.t()), eg) + mm(&ea.t(), &abs(g)) + mm(&ea.t(), eg);
    let batched = |c: Array, err: Array, scale: Array, len: f64, shape: &[usize]| {
        let reps = (c.numel() / numel(shape)) as f64;
        let (c, err) = unbroadcast(c, err, shape);
        let scale = sum_to(&scale, shape);
        (c, err + scale * ((len + reps) * HALF) + TINY)
    };
    [batched(ca, ea2, sa, n, &av.shape), batched(cb, eb2, sb, m, &bv.shape)]
}

/// The VJP of a scan along `axis`, ∂x_i = Σ_{k≥i} g_k·J_ki (J the row's
/// Jacobian, lower triangular), with the bound of the GPU's error in it.
/// Where wgrad's rule reads x (cumprod, logcumsumexp), J is off by at most
/// J⁺ − |J|, J⁺ its bound at operands moved by their errors; g's errors
/// carry over through J⁺; and the rounding errors are relative to
/// Σ_k |ĝ_k|·J⁺_ki.
#[allow(clippy::too_many_arguments)]
fn scan_backward(
    f: ScanFn,
    x: &Array,
    ex: &Array,
    y: &Array,
    ey: &Array,
    g: &Array,
    eg: &Array,
    axis: usize,
    k: Kernels,
) -> (Array, Array) {
    let extra = k.extra_ulps();
    let row = |r: &[Vec<f64>]| {
        let [x, ex, y, ey, g, eg] = [&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]];
        let n = x.len();
        let (mut grad, mut err) = (vec![0.0; n], vec![0.0; n]);
        for i in 0..n {
            let cnt = (n - i) as f64;
            // J_ki and J⁺_ki for k ≥ i
            let (mut j, mut jp): (Vec<f64>, Vec<f64>) = match f {
                ScanFn::Cumsum => (vec![1.0; n], vec![1.0; n]),
                ScanFn::Cumprod => {
                    let mut j = x[..i].iter().product::<f64>();
                    let mut jp = (0..i).map(|l| x[l].abs() + ex[l]).product::<f64>();
                    (0..n)
                        .map(|l| {
                            if l > i {
                                j *= x[l];
                                jp *= x[l].abs() + ex[l];
                            }
                            (j, jp)
                        })
                        .unzip()
                }
                ScanFn::Logcumsumexp => {
                    (0..n).map(|l| ((x[i] - y[l]).exp(), (x[i] + ex[i] - y[l] + ey[l]).exp())).unzip()
                }
            };
            for l in 0..i {
                (j[l], jp[l]) = (0.0, 0.0);
            }
            grad[i] = (i..n).map(|l| g[l] * j[l]).sum();
            let carried: f64 = (i..n).map(|l| eg[l] * jp[l] + g[l].abs() * (jp[l] - j[l].abs())).sum();
            let scale: f64 = (i..n).map(|l| (g[l].abs() + eg[l]) * jp[l]).sum();
            err[i] = carried
                + match f {
                    // the scan the other way: cnt − 1 roundings ≤ u·Σ|g|
                    ScanFn::Cumsum => (cnt - 1.0) * HALF * scale + TINY,
                    // (Π_{j<i} x_j)·B_i, B from the linear recurrence: each
                    // term takes ≤ 3 roundings per ⊕ on its path (< n of them),
                    // the prefix < n more, the product one (in a fused kernel
                    // one ULP more); underflows add TINY each (factors ≤ 1)
                    ScanFn::Cumprod => (3.0 * n as f64 * HALF + extra * ULP) * scale + 3.0 * n as f64 * TINY,
                    // exp(x_i + lse_{k≥i}(log ĝ_k − y_k)) per sign of g, then
                    // the difference of the two parts
                    ScanFn::Logcumsumexp => {
                        let terms: Vec<usize> = (i..n).filter(|&l| g[l].abs() + eg[l] > 0.0).collect();
                        if terms.is_empty() {
                            0.0
                        } else {
                            // |log ĝ|, and |log ĝ − y|
                            let lg = |l: usize| {
                                let (hi, lo) = (g[l].abs() + eg[l], (g[l].abs() - eg[l]).max(TINY));
                                hi.ln().abs().max(lo.ln().abs())
                            };
                            let z = |l: usize| lg(l) + y[l].abs();
                            // each term's exponent: log (2⁻²¹, or 3 ULP), − y (½ ULP)
                            let term = terms
                                .iter()
                                .map(|&l| LOG_ABS + (3.0 + extra) * ULP * lg(l) + (0.5 + extra) * ULP * z(l))
                                .fold(0.0, f64::max);
                            // the reverse scan: per step 2⁻²¹ + 10u + u·M (the
                            // forward's analysis), M ≤ max|z| + ln cnt
                            let m = terms.iter().map(|&l| z(l)).fold(0.0, f64::max) + cnt.ln();
                            let lse = cnt * (LOG_ABS + 10.0 * HALF + HALF * m);
                            // t = x_i + lse (½ ULP), |t| ≤ |x_i| + M; exp: (3 + 2|t|) ULP
                            let t = x[i].abs() + m;
                            let delta = term + lse + (0.5 + extra) * ULP * t;
                            let theta = delta.exp_m1() + (3.0 + 2.0 * t + extra) * ULP;
                            theta * scale + (0.5 + extra) * ULP * grad[i].abs() + TINY
                        }
                    }
                };
        }
        vec![grad, err]
    };
    let mut out = along(&[x, ex, y, ey, g, eg], axis, x.shape[axis], row);
    let err = out.pop().expect("two rows");
    (out.pop().expect("two rows"), err)
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
