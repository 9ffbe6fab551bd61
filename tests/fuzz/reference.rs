//! The f64 reference: the error model and values (their forward error
//! bounds are in `bounds.rs`).

use crate::common::{Array, EPS};
use crate::program::{BinaryFn::*, Equation, Op, ReduceFn::*, ScalarFn::*, ScanFn::*, UnaryFn::*};

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
pub(crate) const LOG_ABS: f64 = 1.0 / (1u32 << 21) as f64;
/// A Lipschitz constant of silu and of mish: max |f′| is 1.0998 and 1.0885.
pub(crate) const SILU_MISH_SLOPE: f64 = 1.1;

/// Bound on one rounding of `y` by an op accurate to `ulps` ULP.
pub(crate) fn rounding(y: &Array, ulps: f64) -> Array {
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

pub(crate) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub(crate) fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `f` applied to the rows along `axis` of the arrays `xs` (of one shape):
/// it gets one row of each and returns rows of `len` elements, one per
/// output array (of `xs[0]`'s shape with `len` along the axis).
pub(crate) fn along(xs: &[&Array], axis: usize, len: usize, f: impl Fn(&[Vec<f64>]) -> Vec<Vec<f64>>) -> Vec<Array> {
    let shape = &xs[0].shape;
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let mut out_shape = shape.clone();
    out_shape[axis] = len;
    let mut out: Vec<Array> = Vec::new();
    for o in 0..outer {
        for i in 0..inner {
            let rows: Vec<Vec<f64>> =
                xs.iter().map(|x| (0..n).map(|k| x.data[(o * n + k) * inner + i]).collect()).collect();
            let results = f(&rows);
            if out.is_empty() {
                out = results.iter().map(|_| Array::full(&out_shape, 0.0)).collect();
            }
            for (a, r) in out.iter_mut().zip(results) {
                for (k, value) in r.into_iter().enumerate() {
                    a.data[(o * len + k) * inner + i] = value;
                }
            }
        }
    }
    out
}

/// numpy's logaddexp.
pub(crate) fn logaddexp(a: f64, b: f64) -> f64 {
    if a == b {
        return a + std::f64::consts::LN_2;
    }
    a.max(b) + (-(a - b).abs()).exp().ln_1p()
}

/// An inclusive scan of one row, in order.
pub(crate) fn scan_row(f: crate::program::ScanFn, row: &[f64]) -> Vec<f64> {
    let mut acc = match f {
        Cumsum => 0.0,
        Cumprod => 1.0,
        Logcumsumexp => f64::NEG_INFINITY,
    };
    let step = |acc: f64, v: f64| match f {
        Cumsum => acc + v,
        Cumprod => acc * v,
        Logcumsumexp => logaddexp(acc, v),
    };
    row.iter()
        .map(|&v| {
            acc = step(acc, v);
            acc
        })
        .collect()
}

/// The first `k` indices of a stable sort of each row along `axis` (as
/// wgrad's argsort: equal elements keep their order in both directions).
pub(crate) fn sort_indices(x: &Array, axis: usize, descending: bool, k: usize) -> Array {
    let row = |r: &[Vec<f64>]| {
        let mut order: Vec<usize> = (0..r[0].len()).collect();
        let key = |i: &usize| if descending { -r[0][*i] } else { r[0][*i] };
        // (−0 equals +0, as on the GPU; there are no NaNs)
        order.sort_by(|i, j| key(i).partial_cmp(&key(j)).expect("no NaN"));
        vec![order[..k].iter().map(|&i| i as f64).collect()]
    };
    along(&[x], axis, k, row).remove(0)
}

/// The diagonal of a square matrix.
pub(crate) fn diagonal(a: &Array) -> Array {
    Array::new(&a.shape[..1], (0..a.shape[0]).map(|i| a.at(&[i, i])).collect())
}

/// A vector as a column [n, 1].
pub(crate) fn column(a: &Array) -> Array {
    a.reshape(&[a.shape[0], 1])
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
                Atan => f64::atan,
                Asinh => f64::asinh,
                Silu => |x| x * sigmoid(x),
                Mish => |x| x * softplus(x).tanh(),
                Softsign => |x| x / (1.0 + x.abs()),
                Logsigmoid => |x| -softplus(-x),
                Expm1 => f64::exp_m1,
                Log1p => f64::ln_1p,
                Sinh => f64::sinh,
            };
            v[*x].map(f)
        }
        Op::Clamp { x, lo, hi } => v[*x].map(|x| x.clamp(*lo, *hi)),
        Op::Lerp { a, b, w } => &v[*a] + &((&v[*b] - &v[*a]) * *w),
        Op::Scan { x, f, axis } => {
            let row = |r: &[Vec<f64>]| vec![scan_row(*f, &r[0])];
            along(&[&v[*x]], *axis, v[*x].shape[*axis], row).remove(0)
        }
        Op::Sort { x, axis, descending } => {
            let n = v[*x].shape[*axis];
            v[*x].gather(*axis, &sort_indices(&v[*x], *axis, *descending, n))
        }
        Op::Topk { x, k, axis, largest } => v[*x].gather(*axis, &sort_indices(&v[*x], *axis, *largest, *k)),
        Op::Einsum(eq, xs) => {
            let a = &v[xs[0]];
            match eq {
                Equation::BatchedMatmul => a.matmul_with_scale(&v[xs[1]]).0,
                Equation::TransposeContract => a.matmul_with_scale(&v[xs[1]].t()).0,
                Equation::Diagonal => diagonal(a),
                Equation::Outer => column(a) * &v[xs[1]],
            }
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

pub(crate) use crate::bounds::{Analysis, Bounded, analyse, exp_err, keep, prod, quot};
