//! The f64 reference's forward error bounds: per op, from the error model
//! of `reference.rs`, and the analysis of a whole program.

use crate::common::Array;
use crate::program::{BinaryFn::*, Equation, Op, Program, ReduceFn::*, ScalarFn::*, ScanFn::*, UnaryFn::*, reduced};
use crate::reference::*;

// ---- the f64 reference: forward error bounds ---------------------------------------

/// Bound on |â·b̂ − a·b| when |â − a| ≤ ea and |b̂ − b| ≤ eb. Not first
/// order: when both factors are near zero (after a cancellation), ea·eb is
/// all there is.
pub(crate) fn prod(a: &Array, ea: &Array, b: &Array, eb: &Array) -> Array {
    abs(a) * eb + ea * &abs(b) + ea * eb
}

/// Bound on |â/b̂ − a/b| under the same conditions, with eb < |b|.
pub(crate) fn quot(a: &Array, ea: &Array, b: &Array, eb: &Array) -> Array {
    (ea * &abs(b) + abs(a) * eb) / &zip(b, eb, |b, e| b.abs() * (b.abs() - e))
}

/// Bound on |e^(x̂) − e^x| = e^x·|e^δ − 1| for |δ| ≤ ex.
pub(crate) fn exp_err(y: &Array, ex: &Array) -> Array {
    y * &ex.map(f64::exp_m1)
}

/// The largest slope of a map whose slope falls away from 0 (tanh,
/// sigmoid) within `e` of `x`: its slope at max(|x| − e, 0).
fn slope(x: &Array, e: &Array, f: fn(f64) -> f64) -> Array {
    zip(x, e, |x, e| f((x.abs() - e).max(0.0)))
}

/// The GPU's log-sum-exp over `axes` is max m, s = Σ exp(x − m), m + log s
/// (softmax.wgsl, one row per output). Everything here keeps the axes.
struct Lse {
    /// softmax over the axes: each term's share of s
    p: Array,
    /// bound on the relative error of the computed s
    rel_s: Array,
    /// bound on the error of the computed log-sum-exp
    err: Array,
}

fn lse_analysis(x: &Array, ex: &Array, axes: &[usize]) -> Lse {
    let n: usize = axes.iter().map(|&d| x.shape[d]).product();
    let m = x.max(axes, true);
    let t = x - &m;
    let s = t.map(f64::exp).sum(axes, true);
    let lse = &m + &s.map(f64::ln);
    let p = (x - &lse).map(f64::exp);
    // x − m rounds by ½ ULP of t, exp adds (3 + 2|t|) ULP: each term is off
    // by (3 + 2.5|t|) ULP relative, weighted by its share; then n − 1 sums
    let rel_s = (&p * &t.map(|t| (3.0 + 2.5 * t.abs()) * ULP)).sum(axes, true) + (n.max(1) - 1) as f64 * HALF;
    let log = s.map(|s| if s <= 2.0 { LOG_ABS } else { 3.0 * ULP * s.ln() });
    // inputs off by δ move it by log Σ p·e^δ ≤ Σ p·(e^|δ| − 1); and
    // log(s·(1 + ε)) = log s + ε to first order in u
    let err = (&p * &ex.map(f64::exp_m1)).sum(axes, true) + &rel_s + &log + &rounding(&lse, 0.5);
    Lse { p, rel_s, err }
}

/// Reshapes a reduced value to keep the reduced axes (size 1).
pub(crate) fn keep(y: &Array, x_shape: &[usize], axes: &[usize]) -> Array {
    y.reshape(&reduced(x_shape, axes, true))
}

fn sech2(x: f64) -> f64 {
    1.0 - x.tanh().powi(2)
}

fn sigmoid_slope(x: f64) -> f64 {
    sigmoid(x) * (1.0 - sigmoid(x))
}

/// A value of a formula of several f32 ops (a VJP rule, a composition) with
/// a bound on the GPU's error in it: each op propagates its operands'
/// bounds as `prod` and `quot` do and adds its own rounding (one more ULP
/// in fused kernels). The builtins carry WGSL's accuracies, or the ones
/// tests/ops.rs derives for wgrad's own kernels.
#[derive(Clone)]
pub(crate) struct Bounded {
    pub(crate) v: Array,
    pub(crate) e: Array,
    k: Kernels,
}

impl Bounded {
    pub(crate) fn new(v: &Array, e: &Array, k: Kernels) -> Bounded {
        Bounded { v: v.clone(), e: e.clone(), k }
    }

    /// `v` with the propagated error `moved` and a rounding of `ulps` ULP.
    fn rounded(&self, v: Array, moved: Array, ulps: f64) -> Bounded {
        let e = moved + self.k.rounding(&v, ulps);
        Bounded { v, e, k: self.k }
    }

    pub(crate) fn add(&self, o: &Bounded) -> Bounded {
        self.rounded(&self.v + &o.v, &self.e + &o.e, 0.5)
    }

    pub(crate) fn sub(&self, o: &Bounded) -> Bounded {
        self.rounded(&self.v - &o.v, &self.e + &o.e, 0.5)
    }

    pub(crate) fn mul(&self, o: &Bounded) -> Bounded {
        self.rounded(&self.v * &o.v, prod(&self.v, &self.e, &o.v, &o.e), 0.5)
    }

    /// WGSL x / y: 2.5 ULP
    pub(crate) fn div(&self, o: &Bounded) -> Bounded {
        self.rounded(&self.v / &o.v, quot(&self.v, &self.e, &o.v, &o.e), 2.5)
    }

    pub(crate) fn square(&self) -> Bounded {
        self.mul(self)
    }

    /// x + c for an f32 scalar c
    pub(crate) fn plus(&self, c: f64) -> Bounded {
        self.rounded(&self.v + c, self.e.clone(), 0.5)
    }

    /// c − x for an f32 scalar c
    pub(crate) fn from(&self, c: f64) -> Bounded {
        self.rounded(self.v.map(|x| c - x), self.e.clone(), 0.5)
    }

    /// x·c for an f32 scalar c
    pub(crate) fn times(&self, c: f64) -> Bounded {
        self.rounded(&self.v * c, &self.e * c.abs(), 0.5)
    }

    /// −x and |x|: exact
    pub(crate) fn neg(&self) -> Bounded {
        Bounded { v: &self.v * -1.0, e: self.e.clone(), k: self.k }
    }

    pub(crate) fn abs(&self) -> Bounded {
        Bounded { v: abs(&self.v), e: self.e.clone(), k: self.k }
    }

    /// A map with its value `y`, the bound `moved` on how far the operand's
    /// error moves it, and its own error `own` (not counting the extra ULP
    /// of fused kernels, which this adds).
    fn map(&self, f: fn(f64) -> f64, moved: impl Fn(f64, f64) -> f64, own: impl Fn(f64, f64) -> f64) -> Bounded {
        let y = self.v.map(f);
        let e = zip(&self.v, &self.e, moved) + zip(&self.v, &y, own) + self.k.rounding(&y, 0.0);
        Bounded { v: y, e, k: self.k }
    }

    /// exp(−|x|) with (3 + 2|x|) ULP, then 1 + e and one division (2.5
    /// ULP): ≤ (9 + 2|x|) ULP of y; the slope falls away from 0
    pub(crate) fn sigmoid(&self) -> Bounded {
        self.map(
            sigmoid,
            |x, e| e * sigmoid_slope((x.abs() - e).max(0.0)),
            |x, y| (9.0 + 2.0 * x.abs()) * ULP * y.abs(),
        )
    }

    /// 16 ULP + 4·2⁻²³ absolute (tests/ops.rs); slope 1 − tanh² falls away from 0
    pub(crate) fn tanh(&self) -> Bounded {
        self.map(f64::tanh, |x, e| e * sech2((x.abs() - e).max(0.0)), |_, y| 16.0 * ULP * y.abs() + 4.0 * ULP)
    }

    /// max(x, 0) + log(1 + e), e = exp(−|x|): exp errs by ≤ (3 + 2|x|)·e ≤ 3
    /// ULP absolute, 1 + e in [1, 2] rounds by ≤ 1 ULP absolute, log adds
    /// 2⁻²¹ (slope ≤ 1 throughout); then ½ ULP for the sum. Slope σ(x).
    pub(crate) fn softplus(&self) -> Bounded {
        self.map(softplus, |x, e| e * sigmoid(x + e), |_, y| LOG_ABS + 4.0 * ULP + 0.5 * ULP * y.abs())
    }

    /// 1/√x: 2.5 ULP each (tests/ops.rs), on x > 0 beyond its error
    pub(crate) fn rsqrt(&self) -> Bounded {
        let f = |x: f64| 1.0 / x.sqrt();
        self.map(f, move |x, e| f(x - e) - f(x), |_, y| 5.0 * ULP * y.abs())
    }

    /// 18 ULP on |x| ≤ 5 (tests/ops.rs); |cosh′| = |sinh| grows with |x|
    pub(crate) fn cosh(&self) -> Bounded {
        self.map(f64::cosh, |x, e| e * (x.abs() + e).sinh(), |_, y| 18.0 * ULP * y.abs())
    }
}

/// The matmul a·b (batched, broadcast) of operands with bounds `ea`, `eb`:
/// k FMAs: ≤ (k + 1)·u·Σ|a||b| (tests/ops.rs); and the operands' errors
/// as in `prod`, summed over k.
fn matmul_bound(a: &Array, ea: &Array, b: &Array, eb: &Array) -> Array {
    let k = *a.shape.last().expect("rank ≥ 2") as f64;
    let scale = a.matmul_with_scale(b).1;
    let mm = |p: &Array, q: &Array| p.matmul_with_scale(q).0;
    mm(ea, &abs(b)) + mm(&abs(a), eb) + mm(ea, eb) + scale * ((k + 1.0) * HALF) + TINY
}

/// Bounds of a scan's outputs along `axis` (see tests/scan.rs): each
/// output is a tree of fewer than k ⊕ over its prefix of k elements.
fn scan_bound(f: crate::program::ScanFn, x: &Array, ex: &Array, axis: usize) -> Array {
    let row = |r: &[Vec<f64>]| {
        let (x, ex) = (&r[0], &r[1]);
        let y = scan_row(f, x);
        let out = (0..x.len()).map(|k| {
            let steps = k as f64; // (k + 1 elements)
            let prefix = 0..=k;
            match f {
                // Σ e_i, and each of the k roundings ≤ u·Σ|x_i|
                Cumsum => {
                    let s: f64 = prefix.clone().map(|i| x[i].abs()).sum();
                    prefix.map(|i| ex[i]).sum::<f64>() + steps * HALF * s + TINY
                }
                // |Π x̂ − Π x| ≤ Π(|x| + e) − Π|x|; k roundings of u each
                // (relative, or TINY where a product underflows: factors ≤ 1
                // do not amplify it)
                Cumprod => {
                    let hi: f64 = prefix.clone().map(|i| x[i].abs() + ex[i]).product();
                    let lo: f64 = prefix.map(|i| x[i].abs()).product();
                    hi - lo + steps * (HALF * hi + TINY)
                }
                // inputs off by δ move it by ≤ Σ p·(e^|δ| − 1) (as in
                // `lse_analysis`); each logaddexp step errs by ≤ 2⁻²¹ (log)
                // + 10u (exp of a value ≤ 0, log1p's correction) + u·M, M the
                // largest magnitude of a partial result (tests/scan.rs)
                Logcumsumexp => {
                    let moved: f64 = prefix.clone().map(|i| (x[i] - y[k]).exp() * ex[i].exp_m1()).sum();
                    let m = prefix.map(|i| x[i].abs()).fold(y[k].abs(), f64::max);
                    moved + (steps + 1.0) * (LOG_ABS + 10.0 * HALF + HALF * m) + TINY
                }
            }
        });
        vec![out.collect()]
    };
    along(&[x, ex], axis, x.shape[axis], row).remove(0)
}

/// A bound on the GPU's error in the result `y` of `op`, given the values
/// `v` and the bounds `e` of its operands: the propagated errors (exactly
/// bounded, see `prod`) plus the op's own rounding (first order in u).
fn forward_bound(op: &Op, v: &[Array], e: &[Array], y: &Array, k: Kernels) -> Array {
    match op {
        Op::Input(_) => zeros(&y.shape), // exact in f32
        Op::Unary(f, x) => {
            let (x, ex) = (&v[*x], &e[*x]);
            match f {
                // 16 ULP + 4·2⁻²³ absolute (tests/ops.rs)
                Tanh => ex * &slope(x, ex, sech2) + k.rounding(y, 16.0) + 4.0 * ULP,
                // exp(−|x|) with (3 + 2|x|) ULP, then 1 + e and one division (2.5
                // ULP): ≤ (9 + 2|x|) ULP of y
                Sigmoid => {
                    ex * &slope(x, ex, sigmoid_slope) + y * &x.map(|x| (9.0 + 2.0 * x.abs()) * ULP) + k.rounding(y, 0.0)
                }
                // WGSL exp: (3 + 2|x|) ULP
                Exp => exp_err(y, ex) + y * &x.map(|x| (3.0 + 2.0 * x.abs()) * ULP) + k.rounding(y, 0.0),
                // |sin(x + δ) − sin x| ≤ |cos x|·|δ| + δ²/2; WGSL: 2⁻¹¹ absolute on [−π, π]
                Sin => zip(x, ex, |x, e| x.cos().abs() * e + e * e / 2.0) + k.rounding(y, 0.0) + SIN_ABS,
                Square => prod(x, ex, x, ex) + k.rounding(y, 0.5),
                // exact, and 1-Lipschitz: the operand's error carries over
                Relu | Abs => ex + &k.rounding(y, 0.0),
                // own atan: 16 ULP (tests/ops.rs); slope 1/(1 + x²)
                Atan => ex * &slope(x, ex, |x| 1.0 / (1.0 + x * x)) + k.rounding(y, 16.0),
                // log1p after a sqrt and a division: 16 ULP and 2⁻²¹ absolute
                // (tests/ops.rs: 4.8e-7); slope 1/√(1 + x²)
                Asinh => ex * &slope(x, ex, |x| 1.0 / (1.0 + x * x).sqrt()) + k.rounding(y, 16.0) + LOG_ABS,
                // x·σ(x): sigmoid's (9 + 2|x|) ULP (see Sigmoid) and ½ ULP
                Silu => ex * SILU_MISH_SLOPE + abs(y) * &x.map(|x| (9.5 + 2.0 * x.abs()) * ULP) + k.rounding(y, 0.0),
                // x·tanh(sp), sp = softplus(x) off by ≤ 2⁻²¹ + 4 ULP absolute +
                // ½ ULP of sp (`Bounded::softplus`), through tanh (slope ≤ 1)
                // and times x; tanh's own 16 ULP + 4·2⁻²³ times x; ½ ULP for
                // the product (tests/ops.rs derives the same on |x| ≤ 5)
                Mish => {
                    let sp = x.map(softplus);
                    let carried = abs(x) * &sp.map(|s| LOG_ABS + 4.0 * ULP + 0.5 * ULP * s + 4.0 * ULP);
                    ex * SILU_MISH_SLOPE + carried + k.rounding(y, 16.5)
                }
                // 1 + |x| (½ ULP) and WGSL's division (2.5 ULP); slope 1/(1 + |x|)²
                Softsign => ex * &slope(x, ex, |x| 1.0 / (1.0 + x).powi(2)) + k.rounding(y, 3.0),
                // −softplus(−x): as `Bounded::softplus`; slope σ(−x)
                Logsigmoid => zip(x, ex, |x, e| e * sigmoid(e - x)) + k.rounding(y, 0.5) + LOG_ABS + 4.0 * ULP,
                // |x| < ½: a series, 8 ULP (tests/ops.rs, "expm1 tiny"); else
                // exp's (3 + 2|x|) ULP of eˣ and ½ ULP for the − 1. Inputs off
                // by δ: eˣ·|e^δ − 1|
                Expm1 => {
                    let ex_ = x.map(f64::exp);
                    let own = zip(x, y, |x, y| {
                        if x.abs() < 0.5 {
                            8.0 * ULP * y.abs()
                        } else {
                            (3.0 + 2.0 * x.abs()) * ULP * x.exp() + 0.5 * ULP * y.abs()
                        }
                    });
                    exp_err(&ex_, ex) + own + k.rounding(y, 0.0)
                }
                // x ≥ 0: a series below ½ (8 ULP, tests/ops.rs); else 1 + x
                // rounds (½ ULP of it: ½·2⁻²³ after the log) and log errs by
                // 2⁻²¹ on [0.5, 2], 3 ULP beyond. Inputs off by δ:
                // log((1 + x)/(1 + x − |δ|))
                Log1p => {
                    let moved = zip(x, ex, |x, e| -(-e / (1.0 + x)).ln_1p());
                    moved + k.rounding(y, 8.0) + LOG_ABS + 0.5 * ULP
                }
                // 18 ULP on |x| ≤ 5 (tests/ops.rs); slope cosh grows with |x|
                Sinh => zip(x, ex, |x, e| e * (x.abs() + e).cosh()) + k.rounding(y, 18.0),
            }
        }
        // selections, exact and 1-Lipschitz
        Op::Clamp { x, .. } => &e[*x] + &k.rounding(y, 0.0),
        // a + (b − a)·w: three roundings
        Op::Lerp { a, b, w } => {
            let (a, b) = (Bounded::new(&v[*a], &e[*a], k), Bounded::new(&v[*b], &e[*b], k));
            a.add(&b.sub(&a).times(*w)).e
        }
        Op::Scan { x, f, axis } => scan_bound(*f, &v[*x], &e[*x], *axis),
        // sorting is 1-Lipschitz in the max norm: each sorted value is off by
        // at most the largest error in its row (the GPU may order differently
        // elements closer than that)
        Op::Sort { x, axis, .. } | Op::Topk { x, axis, .. } => {
            let len = y.shape[*axis];
            let row = |r: &[Vec<f64>]| vec![vec![r[0].iter().fold(0.0, |m: f64, &e| m.max(e)); len]];
            along(&[&e[*x]], *axis, len, row).remove(0)
        }
        Op::Einsum(eq, xs) => {
            let (a, ea) = (&v[xs[0]], &e[xs[0]]);
            match eq {
                Equation::BatchedMatmul => matmul_bound(a, ea, &v[xs[1]], &e[xs[1]]),
                Equation::TransposeContract => matmul_bound(a, ea, &v[xs[1]].t(), &e[xs[1]].t()),
                // x·I summed over a row: one exact term and exact zeros
                Equation::Diagonal => diagonal(ea),
                Equation::Outer => prod(&column(a), &column(ea), &v[xs[1]], &e[xs[1]]) + k.rounding(y, 0.5),
            }
        }
        Op::Binary(f, a, b) => {
            let (a, b, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            match f {
                Add | Sub => ea + eb + k.rounding(y, 0.5),
                Mul => prod(a, ea, b, eb) + k.rounding(y, 0.5),
                // WGSL x / y: 2.5 ULP
                Div => quot(a, ea, b, eb) + k.rounding(y, 2.5),
                // exact, and 1-Lipschitz in each operand
                Maximum => zip(ea, eb, f64::max) + k.rounding(y, 0.0),
            }
        }
        Op::Scalar(Times, c, x) => &e[*x] * c.abs() + k.rounding(y, 0.5),
        Op::Scalar(Plus, _, x) => &e[*x] + &k.rounding(y, 0.5),
        Op::Permute(..)
        | Op::Narrow { .. }
        | Op::Reshape(..)
        | Op::Expand(..)
        | Op::Unsqueeze(..)
        | Op::Gather { .. }
        | Op::IndexSelect { .. }
        | Op::Cat { .. } => eval(op, e, &[]),
        // the fill is exact
        Op::Pad { x, pads, .. } => e[*x].pad(pads, 0.0),
        Op::Reduce { x, f, axes, keepdim } => {
            let (x, ex) = (&v[*x], &e[*x]);
            let n = axes.iter().map(|&d| x.shape[d]).product::<usize>() as f64;
            // a sum of n terms in any order errs by ≤ (n − 1)·u·Σ|x|
            let sum = || ex.sum(axes, *keepdim) + abs(x).sum(axes, *keepdim) * ((n - 1.0) * HALF) + TINY;
            match f {
                Sum => sum(),
                // then × f32(1/n): ½ ULP for 1/n, ½ for the product
                Mean => sum() / n + rounding(y, 1.0),
                // |max(x + δ) − max x| ≤ max |δ|
                Max => ex.max(axes, *keepdim),
                LogSumExp => lse_analysis(x, ex, axes).err.reshape(&y.shape),
            }
        }
        Op::Softmax { x, axis, log } => {
            let (x, ex) = (&v[*x], &e[*x]);
            let l = lse_analysis(x, ex, &[*axis]);
            if *log {
                // x − lse, rounded
                ex + &l.err + rounding(y, 0.5)
            } else {
                // exp(x − m)·(1/s): the term's own (3 + 2.5|t|) ULP, s's relative
                // error, 2.5 ULP for 1/s and ½ for the product; inputs off by δ
                // scale y by e^(δ − Σ p·δ)
                let t = x - &x.max(&[*axis], true);
                let moved = (ex + &(&l.p * &ex.map(f64::exp_m1)).sum(&[*axis], true)).map(f64::exp_m1);
                let rel = moved + t.map(|t| (3.0 + 2.5 * t.abs() + 3.0) * ULP) + &l.rel_s;
                y * &rel + TINY
            }
        }
        Op::Matmul(a, b) => matmul_bound(&v[*a], &e[*a], &v[*b], &e[*b]),
    }
}

/// Elements of a max within rounding (or finite-difference) reach of the
/// maximum without being exactly equal to it: the GPU may pick another
/// element than the reference, and the loss has a kink there.
fn near_tie(x: &Array, ex: &Array, axes: &[usize]) -> bool {
    let m = x.max(axes, true);
    let em = ex.max(axes, true);
    let gap = &m - x;
    let reach = (ex + &em) * 2.0 + &m.map(|m| 1e-4 * (1.0 + m.abs()));
    gap.data.iter().zip(&reach.data).any(|(&g, &r)| g > 0.0 && g <= r)
}

/// Elements of a relu's or abs's operand within rounding (or finite-
/// difference) reach of their kink at 0: the GPU's value may lie on the
/// other side, and the differences straddle it.
fn near_zero(x: &Array, ex: &Array) -> bool {
    x.data.iter().zip(&ex.data).any(|(&x, &e)| x.abs() <= 2.0 * e + 1e-4)
}

/// Two elements of a row within rounding (or finite-difference) reach of
/// each other without being equal: the GPU may sort them the other way,
/// and the loss has a kink there. (Equal ones are copies or constants,
/// ordered alike by both stable sorts.)
fn near_tie_in_rows(x: &Array, ex: &Array, axis: usize) -> bool {
    let row = |r: &[Vec<f64>]| {
        let (x, ex) = (&r[0], &r[1]);
        let near = (0..x.len()).any(|i| {
            (0..i).any(|j| {
                let gap = (x[i] - x[j]).abs();
                gap > 0.0 && gap <= 2.0 * (ex[i] + ex[j]) + 1e-4 * (1.0 + x[i].abs())
            })
        });
        vec![vec![f64::from(u8::from(near))]]
    };
    along(&[x, ex], axis, 1, row).remove(0).data.iter().any(|&n| n > 0.0)
}

/// The reference analysis of a program on its data.
pub(crate) struct Analysis {
    /// every value, exact
    pub(crate) values: Vec<Array>,
    /// bounds on the GPU's error in every value
    pub(crate) bounds: Vec<Array>,
    /// a kink: a near-tie of a max or a sort, an operand of relu, abs or
    /// clamp near its kink (the gradient check is skipped)
    pub(crate) kink: Option<usize>,
}

pub(crate) fn analyse(p: &Program, xs: &[Array], k: Kernels) -> Analysis {
    let mut values: Vec<Array> = Vec::new();
    let mut bounds: Vec<Array> = Vec::new();
    let mut kink = None;
    for (i, op) in p.ops.iter().enumerate() {
        let y = eval(op, &values, xs);
        let e = forward_bound(op, &values, &bounds, &y, k);
        let near = match op {
            Op::Reduce { x, f: Max, axes, .. } => near_tie(&values[*x], &bounds[*x], axes),
            Op::Unary(Relu | Abs, x) => near_zero(&values[*x], &bounds[*x]),
            Op::Binary(Maximum, a, b) => near_zero(&(&values[*a] - &values[*b]), &(&bounds[*a] + &bounds[*b])),
            Op::Clamp { x, lo, hi } => {
                near_zero(&(&values[*x] - *lo), &bounds[*x]) || near_zero(&(&values[*x] - *hi), &bounds[*x])
            }
            Op::Sort { x, axis, .. } | Op::Topk { x, axis, .. } => near_tie_in_rows(&values[*x], &bounds[*x], *axis),
            _ => false,
        };
        if near {
            kink = kink.or(Some(i));
        }
        values.push(y);
        bounds.push(e);
    }
    Analysis { values, bounds, kink }
}
