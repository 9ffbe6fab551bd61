//! Reductions against the f64 reference: sum, mean, max, min, logsumexp,
//! arg-reductions, and the derived prod, var, std, norm, any and all, on
//! contiguous and strided views, with bounds from the summation's
//! arithmetic.

mod common;

use common::*;
use wgrad::{DType, Norm, Tensor};

const U: f64 = f32::EPSILON as f64;

/// Sum error bound: each addition adds ≤ u·Σ|x| (u = 2⁻²⁴), times the
/// longest chain of additions any element goes through (`depth`).
fn sum_bound(n_out: usize, n: usize, abs_sum: &Array) -> Array {
    let depth = depth(n_out, n) as f64;
    abs_sum.map(|s| depth * (U / 2.0) * s + 1e-30)
}

/// The longest chain of additions in `n_out` sums of `n` elements each.
/// Many or short reductions run one per invocation, in order: n − 1. Few
/// long ones as a tree: ⌈n/64⌉ sequential additions per invocation and 6
/// tree levels. Few very long ones (over 8192) in two passes: the first
/// folds chunks in order (at most ⌈2048/n_out⌉ chunks, each about 256
/// elements), the second reduces the partial sums as above.
fn depth(n_out: usize, n: usize) -> usize {
    if n_out >= 256 || n <= 64 {
        n
    } else if n <= 8192 {
        n.div_ceil(64) + 6
    } else {
        let chunks = n.div_ceil(256).min(2048usize.div_ceil(n_out));
        n.div_ceil(chunks) + depth(n_out, chunks)
    }
}

const REDUCE_CASES: &[(&[usize], &[usize])] = &[
    (&[], &[]),
    (&[7], &[0]),
    (&[3, 5], &[1]),
    (&[3, 5], &[0]),
    (&[3, 5], &[0, 1]),
    (&[2, 3, 4], &[0, 2]),
    (&[2, 1, 4], &[1]),
    (&[4, 300], &[1]),
    (&[1 << 20], &[0]),
    (&[3, 1 << 18], &[1]),
    (&[1000, 17], &[0]),
    (&[0, 4], &[0]),
    (&[300, 70], &[1]),
    (&[5, 400], &[0]),
    // a bias gradient's sum over (0, 2, 3) of NCHW: short (one pass), and
    // long enough to split, its chunks ending inside the contiguous planes
    (&[4, 3, 7, 9], &[0, 2, 3]),
    (&[7, 3, 29, 43], &[0, 2, 3]),
    (&[5, 33, 13, 17], &[0, 2, 3]),
    (&[3, 2, 1 << 12], &[0, 2]),
];

#[test]
fn reductions() {
    let mut rng = Rng::new(3);
    for &(shape, axes) in REDUCE_CASES {
        let a = rng.array(shape, -3.0, 3.0);
        let iaxes: Vec<isize> = axes.iter().map(|&x| x as isize).collect();
        let n: usize = axes.iter().map(|&d| shape[d]).product();
        let n_out: usize = shape.iter().product::<usize>() / n.max(1);
        for (view, t, a) in views(&a) {
            for keepdim in [false, true] {
                let what = |op: &str| format!("{op} over {axes:?} of {view} {shape:?} keepdim={keepdim}");
                let abs = a.abs().sum(axes, keepdim);
                assert_within(
                    &what("sum"),
                    &download(&t.sum(&iaxes, keepdim)),
                    &a.sum(axes, keepdim),
                    &sum_bound(n_out, n, &abs),
                );
                let mean_bound = sum_bound(n_out, n, &abs).map(|b| b / n.max(1) as f64 + 1e-30);
                let want = a.mean(axes, keepdim);
                if n > 0 {
                    let bound = mean_bound.zip(&want, |b, w| b + U * w.abs());
                    assert_within(&what("mean"), &download(&t.mean(&iaxes, keepdim)), &want, &bound);
                }
                if n > 0 || a.numel() == 0 && shape.iter().enumerate().all(|(d, &s)| s > 0 || !axes.contains(&d)) {
                    assert_close(&what("max"), &download(&t.max(&iaxes, keepdim)), &a.max(axes, keepdim), 0.0, 0.0);
                    assert_close(&what("min"), &download(&t.min(&iaxes, keepdim)), &a.min(axes, keepdim), 0.0, 0.0);
                }
                if axes.len() == 1 && n > 0 {
                    let ax = axes[0];
                    let am = t.argmax(ax as isize, keepdim).cast(DType::F32);
                    assert_close(&what("argmax"), &download(&am), &a.arg(ax, keepdim, true), 0.0, 0.0);
                    let am = t.argmin(ax as isize, keepdim).cast(DType::F32);
                    assert_close(&what("argmin"), &download(&am), &a.arg(ax, keepdim, false), 0.0, 0.0);
                }
                if n > 0 {
                    // log: 2^-21 absolute; the sum of exp contributes its relative error
                    let depth = if n_out >= 256 || n <= 64 { n as f64 } else { n as f64 / 64.0 + 16.0 };
                    let atol = 4.8e-7 + depth * U + 8.0 * U;
                    let got = download(&t.logsumexp(&iaxes, keepdim));
                    let want = a.logsumexp(axes, keepdim);
                    assert_close(&what("logsumexp"), &got, &want, U, atol);
                }
            }
        }
    }
}

/// prod's inputs: factors e^v with |v| ≤ min(0.2, 3/√n) and random signs,
/// so a product of n of them stays within e^±3√n·min(0.2, 3/√n) — far from
/// overflow and denormals even for n = 2²⁰ — rounded to f32.
fn prod_input(rng: &mut Rng, a: &Array, n: usize) -> Array {
    let c = (3.0 / (n.max(1) as f64).sqrt()).min(0.2);
    let signs = rng.array(&a.shape, -1.0, 1.0);
    a.zip(&signs, |v, s| ((v / 3.0 * c).exp() * s.signum()) as f32 as f64)
}

/// Σ(x − x̄)² over `axes` (keepdim as asked) and the variance it gives with
/// divisor max(N − correction, 0), as numpy's and PyTorch's.
fn var_ref(a: &Array, axes: &[usize], correction: usize, keepdim: bool) -> (Array, Array) {
    let n: usize = axes.iter().map(|&d| a.shape[d]).product();
    let mean = a.mean(axes, true);
    let ss = a.zip(&mean, |x, m| (x - m) * (x - m)).sum(axes, keepdim);
    let divisor = n.saturating_sub(correction) as f64;
    let var = ss.map(|s| s / divisor);
    (ss, var)
}

/// Error of √v̂ given |v̂ − v| ≤ b: |√v̂ − √v| ≤ min(√b, b/√v), plus WGSL's
/// sqrt (2.5 ULP).
fn sqrt_bound(v: &Array, b: &Array) -> Array {
    v.zip(b, |v, b| b.sqrt().min(b / v.sqrt()) + 2.5 * U * v.sqrt() + 1e-30)
}

/// prod, var, std, the norms, any and all: compositions over the kernels
/// above, each against the f64 reference with its own error bound.
#[test]
fn derived_reductions() {
    let u = U / 2.0; // unit roundoff
    let mut rng = Rng::new(4);
    for &(shape, axes) in REDUCE_CASES {
        let a = rng.array(shape, -3.0, 3.0);
        let iaxes: Vec<isize> = axes.iter().map(|&x| x as isize).collect();
        let n: usize = axes.iter().map(|&d| shape[d]).product();
        let n_out: usize = shape.iter().product::<usize>() / n.max(1);
        let p = prod_input(&mut rng, &a, n);
        for ((view, t, a), (_, tp, p)) in views(&a).into_iter().zip(views(&p)) {
            for keepdim in [false, true] {
                let what = |op: &str| format!("{op} over {axes:?} of {view} {shape:?} keepdim={keepdim}");
                // prod: n − 1 rounded products of exact f32 inputs, in any
                // order: relative error ≤ γ_(n−1) = (n−1)u / (1 − (n−1)u)
                let want = p.reduce(axes, keepdim, 1.0, |acc, v| acc * v);
                let k = n.saturating_sub(1) as f64 * u;
                assert_close(&what("prod"), &download(&tp.prod(&iaxes, keepdim)), &want, k / (1.0 - k), 1e-30);

                // var: with x̄ within δ of the mean (the mean's bound of
                // `reductions`), Σ(x − x̂)² = S + n·δ² (no cross term); each
                // square of a rounded difference is within 3u, the sum adds
                // the sum bound over S, and scaling by a rounded 1/(N − c)
                // 2u: |v̂ − v| ≤ ((depth + 5)u·S' + n·δ²)/(N − c), S' = S + n·δ²
                let abs = a.abs().sum(axes, true);
                let delta = sum_bound(n_out, n, &abs)
                    .zip(&a.mean(axes, true), |b, m| b / n.max(1) as f64 + U * m.abs())
                    .reshape(&a.sum(axes, keepdim).shape);
                for correction in [0, 1, 3] {
                    let what = |op: &str| format!("{} correction={correction}", what(op));
                    let (ss, want) = var_ref(&a, axes, correction, keepdim);
                    let spread = ss.zip(&delta, |s, d| s + n as f64 * d * d);
                    let divisor = n.saturating_sub(correction) as f64;
                    let bound = sum_bound(n_out, n, &spread)
                        .zip(&spread, |b, s| b + 5.0 * u * s)
                        .zip(&delta, |b, d| (b + n as f64 * d * d) / divisor);
                    assert_within(&what("var"), &download(&t.var(&iaxes, correction, keepdim)), &want, &bound);
                    let std_want = want.map(f64::sqrt);
                    let got = download(&t.std(&iaxes, correction, keepdim));
                    assert_within(&what("std"), &got, &std_want, &sqrt_bound(&want, &bound));
                }

                // L1: a sum of exact |x|; ∞ and −∞: exact
                let got = download(&t.norm(Norm::L1, &iaxes, keepdim));
                let abs = a.abs().sum(axes, keepdim);
                assert_within(&what("L1 norm"), &got, &abs, &sum_bound(n_out, n, &abs));
                if n > 0 {
                    let got = download(&t.norm(Norm::Inf, &iaxes, keepdim));
                    assert_close(&what("∞ norm"), &got, &a.abs().max(axes, keepdim), 0.0, 0.0);
                    let got = download(&t.norm(Norm::NegInf, &iaxes, keepdim));
                    assert_close(&what("−∞ norm"), &got, &a.abs().min(axes, keepdim), 0.0, 0.0);
                }
                // L2: squares within u, then the sum bound, then the square root
                let squares = a.map(|v| v * v).sum(axes, keepdim);
                let bound = sqrt_bound(&squares, &sum_bound(n_out, n, &squares).zip(&squares, |b, s| b + u * s));
                let want = squares.map(f64::sqrt);
                assert_within(&what("L2 norm"), &download(&t.norm(Norm::L2, &iaxes, keepdim)), &want, &bound);
                if axes.len() == 2 {
                    let got = download(&t.norm(Norm::Fro, &iaxes, keepdim));
                    assert_within(&what("Frobenius norm"), &got, &want, &bound);
                }

                // any and all: exact, on u32 masks, i32 values and f32 values
                let any_ref = |m: &Array| m.reduce(axes, keepdim, 0.0, |acc, v| if v != 0.0 { 1.0 } else { acc });
                let all_ref = |m: &Array| m.reduce(axes, keepdim, 1.0, |acc, v| if v == 0.0 { 0.0 } else { acc });
                let exact = |op: &str, got: Tensor, want: Array| {
                    assert_close(&what(op), &download(&got.cast(DType::F32)), &want, 0.0, 0.0)
                };
                let (over, under) = (a.map(|v| mask(v > 1.0)), a.map(|v| mask(v > -2.5)));
                exact("any of a u32 mask", t.gt(1.0).any(&iaxes, keepdim), any_ref(&over));
                exact("all of a u32 mask", t.gt(-2.5).all(&iaxes, keepdim), all_ref(&under));
                let ints = t.floor().cast(DType::I32);
                exact("any of i32", ints.any(&iaxes, keepdim), any_ref(&a.map(f64::floor)));
                exact("all of i32", ints.all(&iaxes, keepdim), all_ref(&a.map(f64::floor)));
                exact("any of f32", t.any(&iaxes, keepdim), any_ref(&a));
                exact("all of f32", t.all(&iaxes, keepdim), all_ref(&a));
            }
        }
    }
}

#[test]
fn prod_of_zeros_and_any_all_of_nan() {
    let x = Tensor::from_slice(dev(), &[2.0f32, 0.0, -3.0, 0.0, 0.0, 1.5, f32::NAN, 4.0], &[4, 2]);
    assert_eq!(x.prod(&[1], false).to_vec::<f32>().unwrap()[..3], [0.0, 0.0, 0.0]);
    assert!(x.prod_all().item::<f32>().unwrap().is_nan());
    // NaN is non-zero (numpy's truth of NaN)
    assert_eq!(x.any(&[1], false).to_vec::<u32>().unwrap(), vec![1, 1, 1, 1]);
    assert_eq!(x.all(&[1], false).to_vec::<u32>().unwrap(), vec![0, 0, 0, 1]);
    assert_eq!(Tensor::zeros(dev(), &[0, 3]).prod(&[0], false).to_vec::<f32>().unwrap(), vec![1.0; 3]);
}

#[test]
fn argmax_ties_and_nan() {
    let t = Tensor::from_slice(dev(), &[1.0f32, 3.0, 3.0, 0.0, f32::NAN, 2.0, f32::NAN, 5.0], &[2, 4]);
    assert_eq!(t.argmax(1, false).to_vec::<u32>().unwrap(), vec![1, 0]);
    assert_eq!(t.argmin(1, false).to_vec::<u32>().unwrap(), vec![3, 0]);
    let m: Vec<f32> = t.max(&[1], false).to_vec().unwrap();
    assert!(m[0] == 3.0 && m[1].is_nan());
}
