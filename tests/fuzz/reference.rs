//! The f64 reference: the error model, values and their forward error
//! bounds.

use crate::common::{Array, EPS};
use crate::program::{BinaryFn::*, Op, Program, ReduceFn::*, ScalarFn::*, UnaryFn::*, reduced};

// ---- error model ---------------------------------------------------------------
//
// Every value carries a bound on the GPU's absolute error, computed in f64
// alongside the reference: the operands' bounds propagated through the op,
// plus the op's own rounding. Propagation is bounded exactly, not to first
// order: products keep the ea·eb term (it is all there is when both factors
// are near zero after a cancellation), maps use their largest slope within
// the error interval. Roundings are bounded to first order in u: one ULP of
// an f32 value y is at most 2⁻²³·|y|, so an op accurate to k ULP errs by at
// most k·2⁻²³·|y| (`rounding`); +, −, × are correctly rounded (½ ULP), the
// builtins have WGSL's accuracies (as in tests/ops.rs), a sum of n terms
// in any order errs by at most (n − 1)·u·Σ|x| and a k-term dot product by
// (k + 1)·u·Σ|a·b|. The reverse pass (`backward`) does the same for each
// VJP formula of wgrad (src/ops), reading the forward values with their
// bounds. No safety factor: the bounds are used as they are (long runs use
// up to 0.999 of them, for single roundings of values just above a power of
// two, where half an ULP is ½·2⁻²³·|y| almost exactly). The finite
// differences carry their own bound (`finite_differences`).

/// 2⁻²³: one ULP of a value in [1, 2).
pub(crate) const ULP: f64 = EPS;
/// The unit roundoff u = 2⁻²⁴: correctly rounded +, −, × err by ≤ u·|result|.
pub(crate) const HALF: f64 = EPS / 2.0;
/// Results that are subnormal in f32 may flush to zero.
pub(crate) const TINY: f64 = f32::MIN_POSITIVE as f64;
/// WGSL sin and cos: absolute error 2⁻¹¹ on [−π, π].
pub(crate) const SIN_ABS: f64 = 1.0 / 2048.0;
/// WGSL log: absolute error 2⁻²¹ on [0.5, 2] (3 ULP elsewhere).
const LOG_ABS: f64 = 1.0 / (1u32 << 21) as f64;

/// Bound on one rounding of `y` by an op accurate to `ulps` ULP.
fn rounding(y: &Array, ulps: f64) -> Array {
    y.map(|v| ulps * ULP * v.abs() + TINY)
}

/// The rounding of elementwise ops: eager kernels round each op by itself;
/// fused kernels (compiled steps) may contract a·b + c into an fma or
/// reassociate a chain ((x + x) + c as x + (x + c) on lavapipe), which the
/// bounds allow as one more ULP per op.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kernels {
    Eager,
    Fused,
}

impl Kernels {
    /// Bound on one rounding of `y` by an elementwise op accurate to `ulps` ULP.
    pub(crate) fn rounding(self, y: &Array, ulps: f64) -> Array {
        rounding(y, ulps + self.extra_ulps())
    }

    pub(crate) fn extra_ulps(self) -> f64 {
        match self {
            Kernels::Eager => 0.0,
            Kernels::Fused => 1.0,
        }
    }
}

// ---- the f64 reference: values --------------------------------------------------

/// Elementwise `f(a, b)` with broadcasting (fast when the shapes agree).
pub(crate) fn zip(a: &Array, b: &Array, f: impl Fn(f64, f64) -> f64) -> Array {
    if a.shape == b.shape {
        Array::new(&a.shape, a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect())
    } else {
        a.zip(b, f)
    }
}

macro_rules! array_ops {
    ($($trait:ident $method:ident $op:tt),*) => {$(
        impl std::ops::$trait<&Array> for &Array {
            type Output = Array;
            fn $method(self, b: &Array) -> Array {
                zip(self, b, |x, y| x $op y)
            }
        }
        impl std::ops::$trait<&Array> for Array {
            type Output = Array;
            fn $method(self, b: &Array) -> Array {
                zip(&self, b, |x, y| x $op y)
            }
        }
        impl std::ops::$trait<Array> for Array {
            type Output = Array;
            fn $method(self, b: Array) -> Array {
                zip(&self, &b, |x, y| x $op y)
            }
        }
        impl std::ops::$trait<f64> for &Array {
            type Output = Array;
            fn $method(self, b: f64) -> Array {
                self.map(|x| x $op b)
            }
        }
        impl std::ops::$trait<f64> for Array {
            type Output = Array;
            fn $method(self, b: f64) -> Array {
                self.map(|x| x $op b)
            }
        }
    )*};
}

array_ops!(Add add +, Sub sub -, Mul mul *, Div div /);

pub(crate) fn abs(a: &Array) -> Array {
    a.map(f64::abs)
}

pub(crate) fn zeros(shape: &[usize]) -> Array {
    Array::full(shape, 0.0)
}

pub(crate) fn dot(a: &Array, b: &Array) -> f64 {
    a.data.iter().zip(&b.data).map(|(x, y)| x * y).sum()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The value of `op` given the earlier values `v` (or, for the linear data
/// movement ops, their error bounds: those move the same way).
pub(crate) fn eval(op: &Op, v: &[Array], inputs: &[Array]) -> Array {
    match op {
        Op::Input(j) => inputs[*j].clone(),
        Op::Unary(f, x) => {
            let f: fn(f64) -> f64 = match f {
                Tanh => f64::tanh,
                Sigmoid => sigmoid,
                Exp => f64::exp,
                Sin => f64::sin,
                Square => |x| x * x,
                Relu => |x| x.max(0.0),
                Abs => f64::abs,
            };
            v[*x].map(f)
        }
        Op::Binary(f, a, b) => match f {
            Add => &v[*a] + &v[*b],
            Sub => &v[*a] - &v[*b],
            Mul => &v[*a] * &v[*b],
            Div => &v[*a] / &v[*b],
            Maximum => zip(&v[*a], &v[*b], f64::max),
        },
        Op::Scalar(Times, c, x) => &v[*x] * *c,
        Op::Scalar(Plus, c, x) => &v[*x] + *c,
        Op::Permute(x, p) => v[*x].permute(p),
        Op::Narrow { x, axis, start, len } => v[*x].narrow(*axis, *start, *len),
        Op::Reshape(x, s) => v[*x].reshape(s),
        Op::Expand(x, s) => v[*x].expand(s),
        Op::Unsqueeze(x, a) => {
            let mut s = v[*x].shape.clone();
            s.insert(*a, 1);
            v[*x].reshape(&s)
        }
        Op::Reduce { x, f, axes, keepdim } => match f {
            Sum => v[*x].sum(axes, *keepdim),
            Mean => v[*x].mean(axes, *keepdim),
            Max => v[*x].max(axes, *keepdim),
            LogSumExp => v[*x].logsumexp(axes, *keepdim),
        },
        Op::Softmax { x, axis, log } => {
            if *log {
                v[*x].log_softmax(*axis)
            } else {
                v[*x].softmax(*axis)
            }
        }
        Op::Matmul(a, b) => v[*a].matmul_with_scale(&v[*b]).0,
        Op::Gather { x, axis, idx } => v[*x].gather(*axis, idx),
        Op::IndexSelect { x, axis, idx } => v[*x].index_select(*axis, idx),
        Op::Pad { x, pads, value } => v[*x].pad(pads, *value),
        Op::Cat { xs, axis } => Array::cat(&xs.iter().map(|&x| &v[x]).collect::<Vec<_>>(), *axis),
    }
}

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
        Op::Matmul(a, b) => {
            let (a, b, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            let k = *a.shape.last().expect("rank ≥ 2") as f64;
            // k FMAs: ≤ (k + 1)·u·Σ|a||b| (tests/ops.rs); and the operands'
            // errors as in `prod`, summed over k
            let scale = a.matmul_with_scale(b).1;
            let mm = |p: &Array, q: &Array| p.matmul_with_scale(q).0;
            mm(ea, &abs(b)) + mm(&abs(a), eb) + mm(ea, eb) + scale * ((k + 1.0) * HALF) + TINY
        }
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

/// The reference analysis of a program on its data.
pub(crate) struct Analysis {
    /// every value, exact
    pub(crate) values: Vec<Array>,
    /// bounds on the GPU's error in every value
    pub(crate) bounds: Vec<Array>,
    /// a near-tie of a max (the gradient check is skipped)
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
