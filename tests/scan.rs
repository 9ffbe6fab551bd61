//! Scans (cumsum, cumprod, logcumsumexp): forward values against an f64
//! reference written here (a sequential scan), gradients against central differences of the
//! reference, JVPs against directional differences, and second order
//! (forward over reverse against reverse over reverse and the reference).
//!
//! The error bounds of the scans come from the arithmetic:
//! - f32 addition and multiplication round correctly (unit roundoff u =
//!   2⁻²⁴); the kernels evaluate each output as a binary tree of ⊕ over its
//!   prefix (sequentially, or chunked with a shared-memory scan), at most
//!   k − 1 operations deep for the k-th element. A sum's error is then at
//!   most (k − 1)·u·Σ|xᵢ| and a product's (k − 1)·u·|y| (to first order;
//!   the bounds below take k·u, which covers the second-order terms).
//! - logaddexp's error per step is the rounding of m + log1p(…), u·|m|,
//!   plus WGSL's accuracy of log (absolute 2⁻²¹ on [0.5, 2]) and exp
//!   (3 + 2|x| ulp, ≤ 10u absolute for x ≤ 0 here); both arguments enter
//!   with weights e^(a−r) + e^(b−r) = 1, so errors do not grow along the
//!   tree: at most k·(2⁻²¹ + 10u + u·M) for the k-th element, M the largest
//!   magnitude of a partial result (≤ max(|y_k|, max|xᵢ|)).

mod common;

use std::panic::AssertUnwindSafe;

use common::*;
use wgrad::{Tensor, grad, hvp, hvp_rev, jvp};

/// Unit roundoff of f32.
const U: f64 = EPS / 2.0;
/// WGSL's absolute accuracy of log on [0.5, 2].
const LOG_ABS: f64 = 1.0 / (1u64 << 21) as f64;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Sum,
    Prod,
    Lse,
}

const OPS: [Op; 3] = [Op::Sum, Op::Prod, Op::Lse];

impl Op {
    fn gpu(self, x: &Tensor, axis: isize) -> Tensor {
        match self {
            Op::Sum => x.cumsum(axis),
            Op::Prod => x.cumprod(axis),
            Op::Lse => x.logcumsumexp(axis),
        }
    }

    /// Inputs the op is tested on: products of factors e^±0.2 with random
    /// signs stay far from overflow and denormals over 5000 factors.
    fn input(self, rng: &mut Rng, shape: &[usize]) -> Array {
        match self {
            Op::Sum => rng.array(shape, -2.0, 2.0),
            Op::Prod => {
                let a = rng.array(shape, -0.2, 0.2);
                let signs = rng.array(shape, -1.0, 1.0);
                a.zip(&signs, |v, s| (v.exp() * s.signum()) as f32 as f64)
            }
            Op::Lse => rng.array(shape, -3.0, 3.0),
        }
    }

    /// The per-element error of one step of the backward/forward pass
    /// relative to the absolute scale, for rows of `n` (see the module doc).
    fn unit(self, n: usize, m: f64) -> f64 {
        let n = n as f64;
        match self {
            // one scan of n terms
            Op::Sum => n * U,
            // (Σ g·y)/x: the scan's n·u plus y's own k·u, and the division
            Op::Prod => (2.0 * n + 2.0) * U,
            // the forward scan (for y), the scan the other way and exp's argument
            Op::Lse => (2.0 * n + 2.0) * (LOG_ABS + 10.0 * U + U * m),
        }
    }
}

// ---- f64 references --------------------------------------------------------------

/// numpy's logaddexp.
fn logaddexp(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == b {
        return a + std::f64::consts::LN_2;
    }
    a.max(b) + (-(a - b).abs()).exp().ln_1p()
}

fn scan_row(op: Op, row: &[f64]) -> Vec<f64> {
    let mut acc = match op {
        Op::Sum => 0.0,
        Op::Prod => 1.0,
        Op::Lse => f64::NEG_INFINITY,
    };
    row.iter()
        .map(|&v| {
            acc = match op {
                Op::Sum => acc + v,
                Op::Prod => acc * v,
                Op::Lse => logaddexp(acc, v),
            };
            acc
        })
        .collect()
}

fn scan_ref(op: Op, x: &Array, axis: usize) -> Array {
    along(x, axis, |r| scan_row(op, r))
}

/// The forward error bound of each output (module doc).
fn scan_bound(op: Op, x: &Array, axis: usize) -> Array {
    along(x, axis, |row| {
        let y = scan_row(op, row);
        let (mut abs_sum, mut max_abs) = (0.0, 0.0f64);
        (0..row.len())
            .map(|k| {
                let kk = (k + 1) as f64;
                abs_sum += row[k].abs();
                if row[k].is_finite() {
                    max_abs = max_abs.max(row[k].abs());
                }
                match op {
                    Op::Sum => kk * U * abs_sum,
                    Op::Prod => kk * U * y[k].abs(),
                    Op::Lse => kk * (LOG_ABS + 10.0 * U + U * max_abs.max(y[k].abs())),
                }
            })
            .collect()
    })
}

/// ∂y_k/∂x_i of one row (lower triangular: k ≥ i), from the definitions:
/// 1; Π_{j≤k, j≠i} x_j; e^(x_i − y_k).
fn jacobian_row(op: Op, row: &[f64]) -> Vec<Vec<f64>> {
    let n = row.len();
    let y = scan_row(op, row);
    let mut j = vec![vec![0.0; n]; n];
    for i in 0..n {
        let mut others: f64 = row[..i].iter().product();
        for k in i..n {
            if k > i {
                others *= row[k];
            }
            j[k][i] = match op {
                Op::Sum => 1.0,
                Op::Prod => others,
                Op::Lse => (row[i] - y[k]).exp(),
            };
        }
    }
    j
}

/// Per row along `axis`: Jᵀw (the gradient of Σ w·y) and |J|ᵀ|w| (its scale).
fn vjp_ref(op: Op, x: &Array, w: &Array, axis: usize) -> (Array, Array) {
    let n = x.shape[axis];
    let joined = Array::cat(&[x, w], axis);
    let both = along(&joined, axis, |r| {
        let (row, w) = r.split_at(n);
        let j = jacobian_row(op, row);
        let g = (0..n).map(|i| (0..n).map(|k| w[k] * j[k][i]).sum::<f64>());
        let s = (0..n).map(|i| (0..n).map(|k| (w[k] * j[k][i]).abs()).sum::<f64>());
        g.chain(s).collect()
    });
    (both.narrow(axis, 0, n), both.narrow(axis, n, n))
}

/// Per row along `axis`: |J|·|t| (the scale of J·t).
fn jvp_scale(op: Op, x: &Array, t: &Array, axis: usize) -> Array {
    let n = x.shape[axis];
    let joined = Array::cat(&[x, t], axis);
    let s = along(&joined, axis, |r| {
        let (row, t) = r.split_at(n);
        let j = jacobian_row(op, row);
        let mut s: Vec<f64> = (0..n).map(|k| (0..n).map(|i| (j[k][i] * t[i]).abs()).sum()).collect();
        s.extend(std::iter::repeat_n(0.0, n));
        s
    });
    s.narrow(axis, 0, n)
}

/// Central differences of L(x) = Σ w·f(x) in f64: h = 1e-6 gives about
/// 1e-9 relative accuracy on these small inputs, far below the f32 error.
fn reference_grad(f: &dyn Fn(&Array) -> Array, x: &Array, w: &Array) -> Array {
    let loss = |x: &Array| -> f64 { f(x).data.iter().zip(&w.data).map(|(a, b)| a * b).sum() };
    let h = 1e-6;
    let mut g = x.clone();
    for e in 0..x.numel() {
        let (mut p, mut m) = (x.clone(), x.clone());
        p.data[e] += h;
        m.data[e] -= h;
        g.data[e] = (loss(&p) - loss(&m)) / (2.0 * h);
    }
    g
}

/// max |row| of x and y along each row: the M of the logaddexp bound.
fn magnitude(x: &Array, y: &Array) -> f64 {
    x.data.iter().chain(&y.data).filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()))
}

// ---- scans: forward --------------------------------------------------------------

#[track_caller]
fn check_scan(op: Op, x: &Array, xt: &Tensor, axis: isize) {
    let a = if axis < 0 { (axis + x.shape.len() as isize) as usize } else { axis as usize };
    let got = op.gpu(xt, axis);
    assert!(got.is_contiguous(), "{op:?}: the output is contiguous");
    let want = scan_ref(op, x, a);
    assert_within(&format!("{op:?} of {:?} along {axis}", x.shape), &download(&got), &want, &scan_bound(op, x, a));
}

#[test]
fn scans_match_the_reference_along_every_axis() {
    let mut rng = Rng::new(1);
    for op in OPS {
        let x = op.input(&mut rng, &[3, 4, 5]);
        let xt = upload(&x);
        for axis in [0, 1, 2, -1, -3] {
            check_scan(op, &x, &xt, axis);
        }
        // a transposed view, and a narrowed one (an offset and a stride)
        let b = op.input(&mut rng, &[5, 7]);
        let bt = upload(&b);
        for axis in [0, 1] {
            check_scan(op, &b.t(), &bt.t(), axis);
            check_scan(op, &b.narrow(1, 2, 4), &bt.narrow(1, 2, 4), axis);
        }
        // a 1-d row and a 0-d-like single element
        let c = op.input(&mut rng, &[9]);
        check_scan(op, &c, &upload(&c), 0);
        let d = op.input(&mut rng, &[1, 1]);
        check_scan(op, &d, &upload(&d), 1);
    }
}

#[test]
fn scans_of_long_rows_and_of_many_short_rows() {
    let mut rng = Rng::new(2);
    // (shape, axis): rows within one chunk of 1024, over one, over several
    // (a workgroup per row); rows along a strided axis; many rows (one
    // invocation per row), long and short
    let cases: [(&[usize], isize); 7] = [
        (&[2, 1000], 1),
        (&[3, 1025], -1),
        (&[1, 5000], 1),
        (&[5000, 2], 0),
        (&[300, 1000], 1),
        (&[70000, 3], 1),
        (&[3, 70000], 0),
    ];
    for op in OPS {
        for (shape, axis) in cases {
            let x = op.input(&mut rng, shape);
            check_scan(op, &x, &upload(&x), axis);
        }
    }
}

#[test]
fn scans_of_empty_axes_are_empty() {
    for op in OPS {
        for (shape, axis) in [(&[0usize, 4][..], 0), (&[0, 4], 1), (&[3, 0], 1), (&[3, 0, 2], 2)] {
            let x = Tensor::zeros(dev(), shape);
            let y = op.gpu(&x, axis);
            assert_eq!(y.shape(), shape, "{op:?}");
            assert!(y.to_vec::<f32>().unwrap().is_empty());
        }
    }
}

#[test]
fn logcumsumexp_handles_infinities_and_nan_as_numpy_logaddexp() {
    let (inf, nan) = (f64::INFINITY, f64::NAN);
    let rows: [&[f64]; 4] = [
        &[-inf, -inf, 0.0, -inf, 1.0, 1.0],
        &[-inf, inf, 2.0, -inf, 3.0, -1.0],
        &[0.5, nan, 1.0, -inf, inf, 0.0],
        &[inf, inf, -inf, 100.0, -100.0, 88.0],
    ];
    for row in rows {
        let x = Array::new(&[row.len()], row.to_vec());
        check_scan(Op::Lse, &x, &upload(&x), 0);
    }
    // large magnitudes that would overflow exp in f32
    let x = Array::new(&[6], vec![90.0, -90.0, 95.0, 95.0, -100.0, 80.0]);
    check_scan(Op::Lse, &x, &upload(&x), 0);
}

#[test]
fn scans_validate_their_arguments() {
    let ints = Tensor::from_slice(dev(), &[1i32, 2, 3], &[3]);
    let (msg, _) = panic_of(AssertUnwindSafe(|| {
        ints.cumsum(0);
    }));
    assert!(msg.contains("wgrad: cumsum: needs an f32 tensor, got i32 of shape [3]"), "{msg}");
    let x = Tensor::zeros(dev(), &[2, 3]);
    let (msg, at) = panic_of(AssertUnwindSafe(|| {
        x.logcumsumexp(2);
    }));
    assert!(msg.contains("wgrad: logcumsumexp: axis 2 is out of range for a tensor of shape [2, 3]"), "{msg}");
    assert!(at.contains("scan.rs"), "{at}");
    let (msg, _) = panic_of(AssertUnwindSafe(|| {
        x.cumprod(-3);
    }));
    assert!(msg.contains("wgrad: cumprod: axis -3"), "{msg}");
}

// ---- scans: gradients --------------------------------------------------------------

/// The GPU's gradient of Σ w·op(x) along `axis`, `x` given as `view(upload)`.
fn gpu_grad(op: Op, x: &Array, w: &Array, axis: isize, view: fn(&Tensor) -> Tensor) -> Array {
    let f = |x: &Tensor, w: &Tensor| (op.gpu(&view(x), axis) * w).sum_all();
    let (g, _, ()) = grad(f)(&upload(x), &upload(w));
    download(&g)
}

/// (shape of the input, axis, a view of it on the GPU, the same view of the reference)
type ViewCase = (&'static [usize], isize, fn(&Tensor) -> Tensor, fn(&Array) -> Array);

#[test]
fn scan_gradients_match_central_differences() {
    let mut rng = Rng::new(3);
    let identity: fn(&Tensor) -> Tensor = |t| t.clone();
    for op in OPS {
        // (shape of the input, axis, view of it): the reference sees the view
        let cases: [ViewCase; 4] = [
            (&[3, 5], 1, identity, |a| a.clone()),
            (&[4, 3], 0, identity, |a| a.clone()),
            (&[2, 3, 4], -2, identity, |a| a.clone()),
            (&[5, 3], 1, |t| t.t(), |a| a.t()),
        ];
        for (shape, axis, view, view_ref) in cases {
            let x = op.input(&mut rng, shape);
            let xv = view_ref(&x);
            let a = if axis < 0 { (axis + xv.shape.len() as isize) as usize } else { axis as usize };
            let w = rng.array(&xv.shape, -1.0, 1.0);
            let f = |x: &Array| scan_ref(op, &view_ref(x), a);
            let want = reference_grad(&f, &x, &w);
            let got = gpu_grad(op, &x, &w, axis, view);
            // the scale |J|ᵀ|w|, computed on the view and mapped back
            let (_, scale) = vjp_ref(op, &xv, &w, a);
            let scale = if xv.shape == x.shape { scale } else { scale.t() };
            let unit = op.unit(xv.shape[a], magnitude(&xv, &scan_ref(op, &xv, a)) + 1.0);
            assert_within(&format!("∂ {op:?} {shape:?} along {axis}"), &got, &want, &scale.map(|s| unit * s));
        }
    }
}

/// Rows of 1500 (over one chunk: the carry of the workgroup path, forwards
/// and, in the backward pass, from the end). The reference is Jᵀw from the
/// Jacobian's definition: central differences of a 1500-term loss would
/// lose ε·|L|/h ≈ 1e-7, above the bound of the smallest gradients.
#[test]
fn scan_gradients_of_long_rows() {
    let mut rng = Rng::new(4);
    for op in OPS {
        let x = op.input(&mut rng, &[1500]);
        let w = rng.array(&[1500], -1.0, 1.0);
        let (want, scale) = vjp_ref(op, &x, &w, 0);
        let got = gpu_grad(op, &x, &w, 0, |t| t.clone());
        let unit = op.unit(1500, magnitude(&x, &scan_ref(op, &x, 0)) + 1.0);
        assert_within(&format!("∂ {op:?} of 1500"), &got, &want, &scale.map(|s| unit * s));
        // the same along a strided axis of two rows
        let x2 = op.input(&mut rng, &[1200, 2]);
        let w2 = rng.array(&[1200, 2], -1.0, 1.0);
        let (want, scale) = vjp_ref(op, &x2, &w2, 0);
        let got = gpu_grad(op, &x2, &w2, 0, |t| t.clone());
        let unit = op.unit(1200, magnitude(&x2, &scan_ref(op, &x2, 0)) + 1.0);
        assert_within(&format!("∂ {op:?} of [1200, 2] along 0"), &got, &want, &scale.map(|s| unit * s));
    }
}

#[test]
fn cumprod_gradient_is_exact_at_zeros() {
    // rows with no zero, one zero, two zeros (together and apart), a zero first and last
    #[rustfmt::skip]
    let x = Array::new(&[6, 5], vec![
        1.5, -0.5, 2.0, -1.25, 0.75,
        1.5, 0.0, 2.0, -1.25, 0.75,
        1.5, 0.0, 0.0, -1.25, 0.75,
        0.0, -0.5, 2.0, 0.0, 0.75,
        0.0, -0.5, 2.0, -1.25, 0.75,
        1.5, -0.5, 2.0, -1.25, 0.0,
    ]);
    let mut rng = Rng::new(5);
    let w = rng.array(&[6, 5], -1.0, 1.0);
    for (xv, wv, axis, view) in [
        (x.clone(), w.clone(), 1isize, (|t: &Tensor| t.clone()) as fn(&Tensor) -> Tensor),
        // the same rows as columns of a transposed view
        (x.t(), w.t(), 0, |t: &Tensor| t.t()),
    ] {
        let base = if axis == 1 { xv.clone() } else { xv.t() };
        let a = axis as usize;
        let f = |b: &Array| scan_ref(Op::Prod, &if axis == 1 { b.clone() } else { b.t() }, a);
        // L is multilinear in each x_i: central differences are exact but for rounding
        let want = reference_grad(&f, &base, &wv);
        let got = gpu_grad(Op::Prod, &base, &wv, axis, view);
        assert!(got.data.iter().all(|v| v.is_finite()), "{:?}", got.data);
        let (_, scale) = vjp_ref(Op::Prod, &xv, &wv, a);
        let scale = if axis == 1 { scale } else { scale.t() };
        let bound = scale.map(|s| Op::Prod.unit(5, 0.0) * s + 1e-9);
        assert_within(&format!("∂ cumprod with zeros along {axis}"), &got, &want, &bound);
    }
    // the gradient after a row's first zero is exactly 0
    let got = gpu_grad(Op::Prod, &x, &w, 1, |t| t.clone());
    for (r, c) in [(1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3), (3, 4), (4, 4)] {
        assert_eq!(got.data[r * 5 + c], 0.0, "row {r}, column {c}");
    }
}

#[test]
fn logcumsumexp_gradient_of_large_inputs_is_finite_and_right() {
    // e^±90 overflows f32 (and e^−90·e^90 would be 0·∞ in a naive rule)
    let x = Array::new(&[2, 5], vec![90.0, -90.0, 85.0, 95.0, -80.0, -95.0, -90.0, -85.0, 80.0, 90.0]);
    let w = Array::new(&[2, 5], vec![0.5, -1.0, 0.25, 1.0, -0.75, -0.5, 1.0, 0.0, 0.75, -0.25]);
    let f = |x: &Array| scan_ref(Op::Lse, x, 1);
    let want = reference_grad(&f, &x, &w);
    let got = gpu_grad(Op::Lse, &x, &w, 1, |t| t.clone());
    assert!(got.data.iter().all(|v| v.is_finite()), "{:?}", got.data);
    let (_, scale) = vjp_ref(Op::Lse, &x, &w, 1);
    let unit = Op::Lse.unit(5, 100.0);
    // (the reference's own error: ε·|L|/h ≈ 1e-16·500/1e-6)
    assert_within("∂ logcumsumexp of ±90", &got, &want, &scale.map(|s| unit * s + 1e-7));
}

// ---- scans: forward mode and second order ------------------------------------------

#[test]
fn scan_jvps_match_directional_differences() {
    let mut rng = Rng::new(6);
    for op in OPS {
        for (shape, axis) in [(&[3, 5][..], 1isize), (&[4, 3], 0), (&[1, 1500], 1)] {
            let mut x = op.input(&mut rng, shape);
            if op == Op::Prod && shape[0] == 3 {
                x.data[6] = 0.0; // a zero in row 1
            }
            let t = rng.array(shape, -1.0, 1.0);
            let a = axis as usize;
            let (y, dy) = jvp(|x: &Tensor| op.gpu(x, axis), &upload(&x), &upload(&t));
            let yr = scan_ref(op, &x, a);
            assert_within(&format!("{op:?} value"), &download(&y), &yr, &scan_bound(op, &x, a));
            // (f(x + ht) − f(x − ht))/2h: exact for cumsum but for rounding,
            // O(h²) otherwise (≈ 1e-12 relative here)
            let h = 1e-6;
            let shifted = |s: f64| scan_ref(op, &x.zip(&t, |x, t| x + s * h * t), a);
            let want = shifted(1.0).zip(&shifted(-1.0), |p, m| (p - m) / (2.0 * h));
            let unit = op.unit(shape[a], magnitude(&x, &yr) + 1.0);
            let bound = jvp_scale(op, &x, &t, a).map(|s| unit * s + 1e-9 * (1.0 + s));
            assert_within(&format!("J·t of {op:?} {shape:?}"), &download(&dy), &want, &bound);
        }
    }
}

/// f(x)'s second-order tensor ∂²f_k/∂x_i∂x_j by mixed central differences
/// (h = 1e-4: O(h²) + O(ε·|f|/h²) ≈ 1e-8), as [k][i][j].
#[allow(clippy::needless_range_loop)] // (indices as in the formula)
fn second_derivatives(f: &dyn Fn(&Array) -> Array, x: &Array) -> Vec<Vec<Vec<f64>>> {
    let (n, h) = (x.numel(), 1e-4);
    let m = f(x).numel();
    let mut d = vec![vec![vec![0.0; n]; n]; m];
    for i in 0..n {
        for j in 0..n {
            let at = |si: f64, sj: f64| {
                let mut p = x.clone();
                p.data[i] += si * h;
                p.data[j] += sj * h;
                f(&p)
            };
            let (pp, pm, mp, mm) = (at(1.0, 1.0), at(1.0, -1.0), at(-1.0, 1.0), at(-1.0, -1.0));
            for k in 0..m {
                d[k][i][j] = (pp.data[k] - pm.data[k] - mp.data[k] + mm.data[k]) / (4.0 * h * h);
            }
        }
    }
    d
}

#[test]
#[allow(clippy::needless_range_loop)] // (indices as in the formula)
fn scan_hessian_vector_products_agree_both_ways_and_with_the_reference() {
    let mut rng = Rng::new(7);
    type Case = (Op, &'static [usize], isize, fn(Tensor) -> Tensor, fn(Array) -> Array);
    let cases: [Case; 5] = [
        // cumsum is linear: square it for a Hessian
        (Op::Sum, &[2, 5], 1, |y| y.square(), |y| y.map(|v| v * v)),
        (Op::Prod, &[2, 5], 1, |y| y, |y| y),
        (Op::Prod, &[5, 2], 0, |y| y, |y| y),
        (Op::Lse, &[2, 5], 1, |y| y, |y| y),
        (Op::Lse, &[3, 4], 0, |y| y.sin(), |y| y.map(f64::sin)),
    ];
    for (ci, (op, shape, axis, post, post_ref)) in cases.into_iter().enumerate() {
        let mut x = op.input(&mut rng, shape);
        if op == Op::Prod {
            x.data[3] = 0.0; // one zero
            if ci == 2 {
                x.data[7] = 0.0; // and a second in the same column
            }
        }
        let a = axis as usize;
        let w = rng.array(shape, -1.0, 1.0);
        let v = rng.array(shape, -1.0, 1.0);
        let loss = |x: &Tensor, w: &Tensor| (post(op.gpu(x, axis)) * w).sum_all();
        let (xt, wt, vt) = (upload(&x), upload(&w), upload(&v));
        let fwd = download(&hvp(loss, &xt, &wt, &vt));
        let rev = download(&hvp_rev(loss, &xt, &wt, &vt));
        let f = |x: &Array| post_ref(scan_ref(op, x, a));
        let d = second_derivatives(&f, &x);
        // H·v and its scale Σ_k Σ_j |w_k·∂²f_k/∂x_i∂x_j·v_j|
        let n = x.numel();
        let (mut want, mut scale) = (Array::full(shape, 0.0), Array::full(shape, 0.0));
        for i in 0..n {
            for (k, dk) in d.iter().enumerate() {
                for j in 0..n {
                    want.data[i] += w.data[k] * dk[i][j] * v.data[j];
                    scale.data[i] += (w.data[k] * dk[i][j] * v.data[j]).abs();
                }
            }
        }
        // each second derivative runs the first derivative's scans twice over
        let unit = 2.0 * op.unit(shape[a], magnitude(&x, &scan_ref(op, &x, a)) + 1.0);
        // the reference's own error: ≈ 1e-8·(1 + |f|) per entry of d
        // (rounding ε·|f|/h² and truncation O(h²)), weighted by |w| and |v|
        let fmax = f(&x).data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let (wsum, vsum) = (w.data.iter().map(|v| v.abs()).sum::<f64>(), v.data.iter().map(|v| v.abs()).sum::<f64>());
        let bound = scale.map(|s| unit * s + 4e-8 * (1.0 + fmax) * wsum * vsum);
        assert_within(&format!("H·v (forward over reverse) of {op:?} {shape:?}"), &fwd, &want, &bound);
        assert_within(&format!("H·v (reverse over reverse) of {op:?} {shape:?}"), &rev, &want, &bound);
    }
}
