//! Every primitive's forward against the f64 reference, table-driven: one row
//! per op. Inputs sweep scalars, empty tensors, size-1 axes, sizes that are
//! not multiples of the workgroup size, non-contiguous views and a tensor of
//! over a million elements. Each tolerance is the op's error bound in f32
//! (WGSL's accuracy rules for the builtins it uses, plus rounding).

mod common;

use common::*;
use std::f64::consts::PI;

use wgrad::{DType, Tensor};

const SHAPES: &[&[usize]] = &[&[], &[0], &[1], &[7], &[257], &[3, 1, 5], &[2, 3, 4], &[1 << 20]];

struct Unary {
    name: &'static str,
    gpu: fn(&Tensor) -> Tensor,
    cpu: fn(f64) -> f64,
    /// input domain
    lo: f64,
    hi: f64,
    /// error bound: atol + rtol·|want| + ulps_per_x·EPS·|x|·|want|
    atol: f64,
    rtol: f64,
}

const U: f64 = f32::EPSILON as f64;

/// numpy's remainder: the sign of the divisor.
fn py_remainder(a: f64, b: f64) -> f64 {
    let r = a % b;
    if r != 0.0 && (r < 0.0) != (b < 0.0) { r + b } else { r }
}

#[rustfmt::skip]
const UNARY: &[Unary] = &[
    Unary { name: "neg",      gpu: |x| -x,            cpu: |x| -x,                    lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.0 },
    Unary { name: "abs",      gpu: |x| x.abs(),       cpu: f64::abs,                  lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.0 },
    Unary { name: "sign",     gpu: |x| x.sign(),      cpu: |x| if x == 0.0 { 0.0 } else { x.signum() }, lo: -2.0, hi: 2.0, atol: 0.0, rtol: 0.0 },
    // WGSL exp: 3 + 2|x| ULP
    Unary { name: "exp",      gpu: |x| x.exp(),       cpu: f64::exp,                  lo: -5.0, hi: 5.0, atol: 0.0, rtol: 13.0 * U },
    // WGSL log: absolute 2^-21 on [0.5, 2], else 3 ULP
    Unary { name: "log",      gpu: |x| x.log(),       cpu: f64::ln,                   lo: 0.01, hi: 50.0, atol: 4.8e-7, rtol: 3.0 * U },
    // WGSL sqrt and 1/x: 2.5 ULP each
    Unary { name: "sqrt",     gpu: |x| x.sqrt(),      cpu: f64::sqrt,                 lo: 0.0, hi: 50.0, atol: 0.0, rtol: 2.5 * U },
    Unary { name: "rsqrt",    gpu: |x| x.rsqrt(),     cpu: |x| 1.0 / x.sqrt(),        lo: 0.01, hi: 50.0, atol: 0.0, rtol: 5.0 * U },
    Unary { name: "recip",    gpu: |x| x.recip(),     cpu: |x| 1.0 / x,               lo: 0.1, hi: 50.0, atol: 0.0, rtol: 2.5 * U },
    // WGSL sin/cos: absolute 2^-11 on [-π, π]
    Unary { name: "sin",      gpu: |x| x.sin(),       cpu: f64::sin,                  lo: -PI, hi: PI, atol: 4.9e-4, rtol: 0.0 },
    Unary { name: "cos",      gpu: |x| x.cos(),       cpu: f64::cos,                  lo: -PI, hi: PI, atol: 4.9e-4, rtol: 0.0 },
    // tanh via exp: a few ULP of exp(2x) on |x| ≤ 4, cancellation near 0 is absolute
    Unary { name: "tanh",     gpu: |x| x.tanh(),      cpu: f64::tanh,                 lo: -4.0, hi: 4.0, atol: 4.0 * U, rtol: 16.0 * U },
    // exp (3 + 2|x| ULP) then one division
    Unary { name: "sigmoid",  gpu: |x| x.sigmoid(),   cpu: |x| 1.0 / (1.0 + (-x).exp()), lo: -8.0, hi: 8.0, atol: 0.0, rtol: 22.0 * U },
    Unary { name: "relu",     gpu: |x| x.relu(),      cpu: |x| x.max(0.0),            lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.0 },
    // erf approximation |err| < 1.2e-7, scaled by x/2, plus rounding
    Unary { name: "gelu",     gpu: |x| x.gelu(),      cpu: |x| 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt())), lo: -5.0, hi: 5.0, atol: 4.0e-7, rtol: 4.0 * U },
    // log1p: absolute 2^-21 from log, max(x, 0) exact
    Unary { name: "softplus", gpu: |x| x.softplus(),  cpu: |x| x.max(0.0) + (-x.abs()).exp().ln_1p(), lo: -20.0, hi: 20.0, atol: 4.8e-7, rtol: 2.0 * U },
    // series near 0 (relative 1e-7), Chebyshev fit elsewhere (absolute 1.2e-7)
    Unary { name: "erf",      gpu: |x| x.erf(),       cpu: libm::erf,                 lo: -4.0, hi: 4.0, atol: 1.5e-7, rtol: 4.0 * U },
    // 1 + |x| rounds once (½ ULP), then WGSL's division: 2.5 ULP
    Unary { name: "softsign", gpu: |x| x.softsign(),  cpu: |x| x / (1.0 + x.abs()),   lo: -5.0, hi: 5.0, atol: 0.0, rtol: 3.0 * U },
    // own reduction to |r| ≤ π/4 and a series: a few ULP, 2 divisions
    Unary { name: "tan",      gpu: |x| x.tan(),       cpu: f64::tan,                  lo: -1.5, hi: 1.5, atol: 0.0, rtol: 16.0 * U },
    Unary { name: "tan wide", gpu: |x| x.tan(),       cpu: f64::tan,                  lo: -100.0, hi: 100.0, atol: 0.0, rtol: 64.0 * U },
    // own atan (series after two reductions, each step ≤ 2.5 ULP) through
    // atan2 and √((1 − x)(1 + x)): 16 ULP
    Unary { name: "atan",     gpu: |x| x.atan(),      cpu: f64::atan,                 lo: -20.0, hi: 20.0, atol: 0.0, rtol: 16.0 * U },
    Unary { name: "asin",     gpu: |x| x.asin(),      cpu: f64::asin,                 lo: -1.0, hi: 1.0, atol: 0.0, rtol: 16.0 * U },
    Unary { name: "acos",     gpu: |x| x.acos(),      cpu: f64::acos,                 lo: -1.0, hi: 1.0, atol: 0.0, rtol: 16.0 * U },
    // exp: 3 + 2|x| ULP (13 on |x| ≤ 5), then an add and a division; expm1 near 0
    Unary { name: "sinh",     gpu: |x| x.sinh(),      cpu: f64::sinh,                 lo: -5.0, hi: 5.0, atol: 0.0, rtol: 18.0 * U },
    Unary { name: "cosh",     gpu: |x| x.cosh(),      cpu: f64::cosh,                 lo: -5.0, hi: 5.0, atol: 0.0, rtol: 18.0 * U },
    // e^(|x| − ln 2): exp's 3 + 2·88 ULP, and |x| − ln 2 rounded by ½ ULP of 88 (32 U)
    Unary { name: "sinh big", gpu: |x| x.sinh(),      cpu: f64::sinh,                 lo: 10.0, hi: 88.0, atol: 0.0, rtol: 212.0 * U },
    // log1p (2⁻²¹ absolute where it takes log) after a sqrt and a division
    Unary { name: "asinh",    gpu: |x| x.asinh(),     cpu: f64::asinh,                lo: -50.0, hi: 50.0, atol: 4.8e-7, rtol: 16.0 * U },
    Unary { name: "acosh",    gpu: |x| x.acosh(),     cpu: f64::acosh,                lo: 1.0, hi: 50.0, atol: 4.8e-7, rtol: 16.0 * U },
    Unary { name: "atanh",    gpu: |x| x.atanh(),     cpu: f64::atanh,                lo: -0.99, hi: 0.99, atol: 4.8e-7, rtol: 16.0 * U },
    // series on |x| < ½ (a few ULP), else log: 2⁻²¹ absolute on [0.5, 2]
    Unary { name: "log1p",    gpu: |x| x.log1p(),     cpu: f64::ln_1p,                lo: -0.99, hi: 5.0, atol: 4.8e-7, rtol: 8.0 * U },
    Unary { name: "log1p tiny", gpu: |x| (x * 1e-6).log1p(), cpu: |x| (x * 1e-6).ln_1p(), lo: -1.0, hi: 1.0, atol: 0.0, rtol: 8.0 * U },
    // series on |x| < ½; else exp (3 + 2|x| ULP) magnified ≤ 2.6× by the − 1
    Unary { name: "expm1",    gpu: |x| x.expm1(),     cpu: f64::exp_m1,               lo: -5.0, hi: 5.0, atol: 0.0, rtol: 14.0 * U },
    Unary { name: "expm1 tiny", gpu: |x| (x * 1e-6).expm1(), cpu: |x| (x * 1e-6).exp_m1(), lo: -1.0, hi: 1.0, atol: 0.0, rtol: 8.0 * U },
    // WGSL log2: 2⁻²¹ absolute on [0.5, 2], else 3 ULP; exp2: 3 + 2|x| ULP
    Unary { name: "log2",     gpu: |x| x.log2(),      cpu: f64::log2,                 lo: 0.01, hi: 50.0, atol: 4.8e-7, rtol: 3.0 * U },
    Unary { name: "exp2",     gpu: |x| x.exp2(),      cpu: f64::exp2,                 lo: -5.0, hi: 5.0, atol: 0.0, rtol: 13.0 * U },
    Unary { name: "floor",    gpu: |x| x.floor(),     cpu: f64::floor,                lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.0 },
    Unary { name: "ceil",     gpu: |x| x.ceil(),      cpu: f64::ceil,                 lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.0 },
    Unary { name: "round",    gpu: |x| x.round(),     cpu: f64::round_ties_even,      lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.0 },
    Unary { name: "trunc",    gpu: |x| x.trunc(),     cpu: f64::trunc,                lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.0 },
    // sigmoid (22 ULP on |x| ≤ 8) times x
    Unary { name: "silu",     gpu: |x| x.silu(),      cpu: |x| x / (1.0 + (-x).exp()), lo: -8.0, hi: 8.0, atol: 0.0, rtol: 23.0 * U },
    // softplus (2⁻²¹ absolute) through tanh (slope ≤ 1; 4 ULP + 16 ULP), times |x| ≤ 5
    Unary { name: "mish",     gpu: |x| x.mish(),      cpu: |x| x * x.exp().ln_1p().tanh(), lo: -5.0, hi: 5.0, atol: 5.0 * (4.8e-7 + 4.0 * U), rtol: 17.0 * U },
    // a division by 6 and an addition
    Unary { name: "hardsigmoid", gpu: |x| x.hardsigmoid(), cpu: |x| (x / 6.0 + 0.5).clamp(0.0, 1.0), lo: -5.0, hi: 5.0, atol: 0.5 * U, rtol: 3.0 * U },
    // as softplus
    Unary { name: "logsigmoid", gpu: |x| x.logsigmoid(), cpu: |x| x.min(0.0) - (-x.abs()).exp().ln_1p(), lo: -20.0, hi: 20.0, atol: 4.8e-7, rtol: 2.0 * U },
    // compositions of exact selections
    Unary { name: "clamp",    gpu: |x| x.clamp(-1.0, 2.0), cpu: |x| x.clamp(-1.0, 2.0), lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.0 },
    Unary { name: "hardtanh", gpu: |x| x.hardtanh(),  cpu: |x| x.clamp(-1.0, 1.0),   lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.0 },
    Unary { name: "isnan",    gpu: |x| x.log().isnan().cast(DType::F32), cpu: |x| mask(x.ln().is_nan()), lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.0 },
    // products round as IEEE says; integers times 1e37 are ≥ 0.08 % from
    // f32's largest value, so the host's product overflows where the GPU's does
    Unary { name: "isinf",    gpu: |x| (x.round() * 1e37).isinf().cast(DType::F32), cpu: |x| mask((x.round_ties_even() as f32 * 1e37f32).is_infinite()), lo: -60.0, hi: 60.0, atol: 0.0, rtol: 0.0 },
    Unary { name: "isfinite", gpu: |x| x.log().isfinite().cast(DType::F32), cpu: |x| mask(x > 0.0), lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.0 },
    Unary { name: "logical_not", gpu: |x| x.round().logical_not().cast(DType::F32), cpu: |x| mask(x.round_ties_even() == 0.0), lo: -2.0, hi: 2.0, atol: 0.0, rtol: 0.0 },
    Unary { name: "square",   gpu: |x| x.square(),    cpu: |x| x * x,                 lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.5 * U },
    Unary { name: "pow 2",    gpu: |x| x.pow(2.0),    cpu: |x| x * x,                 lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.5 * U },
    // exp2(y log2 x): (3 + 2|y log2 x|) ULP plus |y|·2^-21 from log2; on
    // [1/8, 9] |y log2 x| ≤ 4.8 (tiny bases are allowed far more: 75 ULP
    // at 2^-24, and a GPU's pow was seen 21 ULP off at 1.4e-5)
    Unary { name: "pow 1.5",  gpu: |x| x.pow(1.5),    cpu: |x| x.powf(1.5),           lo: 0.125, hi: 9.0, atol: 0.0, rtol: 13.0 * U + 1.5 * 4.8e-7 },
    Unary { name: "pow -3",   gpu: |x| x.pow(-3.0),   cpu: |x| x.powi(-3),            lo: -3.0, hi: -0.5, atol: 0.0, rtol: 14.0 * U + 3.0 * 4.8e-7 },
    Unary { name: "x * 2.5",  gpu: |x| x * 2.5,       cpu: |x| x * 2.5,               lo: -5.0, hi: 5.0, atol: 0.0, rtol: 0.5 * U },
    Unary { name: "x + 2.5",  gpu: |x| x + 2.5,       cpu: |x| x + 2.5,               lo: -5.0, hi: 5.0, atol: 0.5 * U * 2.5, rtol: 0.5 * U },
    Unary { name: "1 - x",    gpu: |x| 1.0 - x,       cpu: |x| 1.0 - x,               lo: -5.0, hi: 5.0, atol: 0.5 * U, rtol: 0.5 * U },
    Unary { name: "2 / x",    gpu: |x| 2.0 / x,       cpu: |x| 2.0 / x,               lo: 0.5, hi: 5.0, atol: 0.0, rtol: 2.5 * U },
    Unary { name: "max 0.3",  gpu: |x| x.maximum(0.3), cpu: |x| x.max(0.3f32 as f64), lo: -1.0, hi: 1.0, atol: 0.0, rtol: 0.0 },
];

#[test]
fn unary_ops() {
    let mut rng = Rng::new(1);
    for op in UNARY {
        for shape in SHAPES {
            let a = rng.array(shape, op.lo, op.hi);
            for (view, t, a) in views(&a) {
                let got = download(&(op.gpu)(&t));
                let want = a.map(op.cpu);
                let what = format!("{} on {view} {shape:?}", op.name);
                assert_close(&what, &got, &want, op.rtol, op.atol);
            }
        }
    }
}

struct Binary {
    name: &'static str,
    gpu: fn(&Tensor, &Tensor) -> Tensor,
    cpu: fn(f64, f64) -> f64,
    lo: f64,
    hi: f64,
    rtol: f64,
}

#[rustfmt::skip]
const BINARY: &[Binary] = &[
    Binary { name: "add",     gpu: |a, b| a + b,                          cpu: |a, b| a + b,        lo: -5.0, hi: 5.0, rtol: 0.5 * U },
    Binary { name: "sub",     gpu: |a, b| a - b,                          cpu: |a, b| a - b,        lo: -5.0, hi: 5.0, rtol: 0.5 * U },
    Binary { name: "mul",     gpu: |a, b| a * b,                          cpu: |a, b| a * b,        lo: -5.0, hi: 5.0, rtol: 0.5 * U },
    // WGSL x / y: 2.5 ULP
    Binary { name: "div",     gpu: |a, b| a / b,                          cpu: |a, b| a / b,        lo: 0.5, hi: 5.0, rtol: 2.5 * U },
    // exp2(y log2 x), |y log2 x| ≤ 4.7: (3 + 2·4.7) ULP + |y|·2^-21
    Binary { name: "pow",     gpu: |a, b| a.pow(b),                       cpu: f64::powf,           lo: 0.5, hi: 5.0, rtol: 13.0 * U + 5.0 * 4.8e-7 },
    Binary { name: "maximum", gpu: |a, b| a.maximum(b),                   cpu: f64::max,            lo: -5.0, hi: 5.0, rtol: 0.0 },
    Binary { name: "minimum", gpu: |a, b| a.minimum(b),                   cpu: f64::min,            lo: -5.0, hi: 5.0, rtol: 0.0 },
    Binary { name: "eq",      gpu: |a, b| a.eq(b).cast(DType::F32),       cpu: |a, b| mask(a == b),    lo: -2.0, hi: 2.0, rtol: 0.0 },
    Binary { name: "ne",      gpu: |a, b| a.ne(b).cast(DType::F32),       cpu: |a, b| mask(a != b),    lo: -2.0, hi: 2.0, rtol: 0.0 },
    Binary { name: "lt",      gpu: |a, b| a.lt(b).cast(DType::F32),       cpu: |a, b| mask(a < b),     lo: -2.0, hi: 2.0, rtol: 0.0 },
    Binary { name: "le",      gpu: |a, b| a.le(b).cast(DType::F32),       cpu: |a, b| mask(a <= b),    lo: -2.0, hi: 2.0, rtol: 0.0 },
    Binary { name: "gt",      gpu: |a, b| a.gt(b).cast(DType::F32),       cpu: |a, b| mask(a > b),     lo: -2.0, hi: 2.0, rtol: 0.0 },
    Binary { name: "ge",      gpu: |a, b| a.ge(b).cast(DType::F32),       cpu: |a, b| mask(a >= b),    lo: -2.0, hi: 2.0, rtol: 0.0 },
    Binary { name: "where",   gpu: |a, b| a.gt(b).where_(a, b),           cpu: |a, b| if a > b { a } else { b }, lo: -2.0, hi: 2.0, rtol: 0.0 },
    // own atan of the ratio ≤ 1 (a division first): 16 ULP
    Binary { name: "atan2",   gpu: |a, b| a.atan2(b),                     cpu: f64::atan2,          lo: -5.0, hi: 5.0, rtol: 16.0 * U },
    // exact (integer-valued inputs here; fractional ones in fmod_is_exact)
    Binary { name: "fmod",    gpu: |a, b| a.fmod(b),                      cpu: |a, b| a % b,        lo: -5.0, hi: 5.0, rtol: 0.0 },
    Binary { name: "remainder", gpu: |a, b| a.remainder(b),               cpu: py_remainder,        lo: -5.0, hi: 5.0, rtol: 0.0 },
    Binary { name: "logical_and", gpu: |a, b| a.logical_and(b).cast(DType::F32), cpu: |a, b| mask(a != 0.0 && b != 0.0), lo: -2.0, hi: 2.0, rtol: 0.0 },
    Binary { name: "logical_or", gpu: |a, b| a.logical_or(b).cast(DType::F32), cpu: |a, b| mask(a != 0.0 || b != 0.0), lo: -2.0, hi: 2.0, rtol: 0.0 },
    Binary { name: "logical_xor", gpu: |a, b| a.logical_xor(b).cast(DType::F32), cpu: |a, b| mask((a != 0.0) != (b != 0.0)), lo: -2.0, hi: 2.0, rtol: 0.0 },
    // b − a (½ ULP), times 0.3 (½ ULP), plus a (½ ULP): relative to the larger of |a|, |b|
    Binary { name: "lerp",    gpu: |a, b| a.lerp(b, 0.3),                 cpu: |a, b| a + 0.3f32 as f64 * (b - a), lo: 1.0, hi: 5.0, rtol: 4.0 * U },
    Binary { name: "clamp to tensors", gpu: |a, b| a.clamp(b, &(b + 1.0)), cpu: |a, b| a.max(b).min(b + 1.0), lo: -2.0, hi: 2.0, rtol: 0.0 },
];

/// Shape pairs exercising numpy broadcasting.
const PAIRS: &[(&[usize], &[usize])] = &[
    (&[], &[]),
    (&[257], &[257]),
    (&[3, 4], &[4]),
    (&[3, 1], &[1, 4]),
    (&[2, 3, 4], &[3, 1]),
    (&[], &[5]),
    (&[5, 1, 3], &[1, 7, 1]),
    (&[0, 3], &[3]),
    (&[1 << 20], &[1]),
];

#[test]
fn binary_ops() {
    let mut rng = Rng::new(2);
    for op in BINARY {
        for (sa, sb) in PAIRS {
            let (a, b) = (rng.array(sa, op.lo, op.hi), rng.array(sb, op.lo, op.hi));
            // integer-valued copies make the comparisons see ties
            let (a, b) = if op.rtol == 0.0 { (a.map(f64::round), b.map(f64::round)) } else { (a, b) };
            let want = a.zip(&b, op.cpu);
            for (va, ta, _) in views(&a) {
                let got = download(&(op.gpu)(&ta, &upload(&b)));
                let what = format!("{} of {va} {sa:?} and {sb:?}", op.name);
                assert_close(&what, &got, &want, op.rtol, 0.0);
            }
            let got = download(&(op.gpu)(&upload(&b), &upload(&a)));
            assert_close(&format!("{} of {sb:?} and {sa:?}", op.name), &got, &b.zip(&a, op.cpu), op.rtol, 0.0);
        }
    }
}

#[test]
fn pow_negative_bases_and_special_values() {
    let x = Tensor::from_slice(dev(), &[-2.0f32, -2.0, -2.0, 0.0, 0.0, 0.0, 3.0, f32::NAN, -8.0], &[9]);
    let y = Tensor::from_slice(dev(), &[2.0f32, 3.0, 0.5, 0.0, 2.5, -1.0, 0.0, 0.0, -1.0], &[9]);
    let got: Vec<f32> = x.pow(&y).to_vec().unwrap();
    let want = [4.0, -8.0, f32::NAN, 1.0, 0.0, f32::INFINITY, 1.0, 1.0, -0.125];
    for (g, w) in got.iter().zip(want) {
        assert!(g == &w || (g.is_nan() && w.is_nan()), "{got:?} vs {want:?}");
    }
    // NaN propagates through maximum/minimum and relu, as in PyTorch
    let n = Tensor::from_slice(dev(), &[f32::NAN, 1.0], &[2]);
    let v: Vec<f32> = n.maximum(0.0).to_vec().unwrap();
    assert!(v[0].is_nan() && v[1] == 1.0);
    let v: Vec<f32> = n.relu().to_vec().unwrap();
    assert!(v[0].is_nan());
    // stable formulations do not overflow
    let big = Tensor::from_slice(dev(), &[-100.0f32, 100.0], &[2]);
    assert_eq!(big.sigmoid().to_vec::<f32>().unwrap(), vec![0.0, 1.0]);
    assert_eq!(big.softplus().to_vec::<f32>().unwrap(), vec![0.0, 100.0]);
    assert_eq!(big.tanh().to_vec::<f32>().unwrap(), vec![-1.0, 1.0]);
}

#[test]
fn integer_ops() {
    let d = dev();
    let a = Tensor::from_slice(d, &[-7i32, -1, 0, 5, 9], &[5]);
    let b = Tensor::from_slice(d, &[2i32, 3, 4, -2, 9], &[5]);
    assert_eq!((&a + &b).to_vec::<i32>().unwrap(), vec![-5, 2, 4, 3, 18]);
    assert_eq!((&a - &b).to_vec::<i32>().unwrap(), vec![-9, -4, -4, 7, 0]);
    assert_eq!((&a * &b).to_vec::<i32>().unwrap(), vec![-14, -3, 0, -10, 81]);
    assert_eq!((&a / &b).to_vec::<i32>().unwrap(), vec![-3, 0, 0, -2, 1]);
    assert_eq!(a.maximum(&b).to_vec::<i32>().unwrap(), vec![2, 3, 4, 5, 9]);
    assert_eq!(a.abs().to_vec::<i32>().unwrap(), vec![7, 1, 0, 5, 9]);
    assert_eq!((-&a).to_vec::<i32>().unwrap(), vec![7, 1, 0, -5, -9]);
    assert_eq!(a.lt(&b).to_vec::<u32>().unwrap(), vec![1, 1, 1, 0, 0]);
    assert_eq!(a.add(3).to_vec::<i32>().unwrap(), vec![-4, 2, 3, 8, 12]);
    let u = Tensor::from_slice(d, &[3u32, 0, 7], &[3]);
    assert_eq!(u.eq(7u32).to_vec::<u32>().unwrap(), vec![0, 0, 1]);
    assert_eq!(u.mul(2u32).to_vec::<u32>().unwrap(), vec![6, 0, 14]);
    // casts: f32 → int truncates towards zero and saturates at the largest
    // value f32 represents exactly (WGSL's rule): 2^31 - 128 for i32
    let f = Tensor::from_slice(d, &[-2.7f32, -0.5, 0.5, 2.7, 3e9, -3e9], &[6]);
    assert_eq!(f.cast(DType::I32).to_vec::<i32>().unwrap(), vec![-2, 0, 0, 2, 2_147_483_520, i32::MIN]);
    assert_eq!(f.narrow(0, 2, 3).cast(DType::U32).to_vec::<u32>().unwrap(), vec![0, 2, 3_000_000_000]);
    assert_eq!(a.cast(DType::F32).to_vec::<f32>().unwrap(), vec![-7.0, -1.0, 0.0, 5.0, 9.0]);
    assert_eq!(u.cast(DType::F32).to_vec::<f32>().unwrap(), vec![3.0, 0.0, 7.0]);
    // where on integer branches with scalar fallbacks
    let m = Tensor::from_slice(d, &[1u32, 0, 1], &[3]);
    assert_eq!(m.where_(&u, 5u32).to_vec::<u32>().unwrap(), vec![3, 5, 7]);
}

#[test]
fn softmax_rows() {
    let mut rng = Rng::new(4);
    for &(shape, axis) in &[
        (&[5][..], 0usize),
        (&[3, 10], 1),
        (&[3, 10], 0),
        (&[2, 3, 257], 2),
        (&[4, 1000, 3], 1),
        (&[1, 1], 1),
        (&[300, 100], 1),
    ] {
        let a = rng.array(shape, -3.0, 3.0);
        let n = shape[axis] as f64;
        for (view, t, a) in views(&a) {
            // exp: (3 + 2·6) ULP; sum: (n/64 + 16)·u as a tree, n·u in order; one division: 2.5 ULP
            let rows = a.numel() as f64 / n;
            let depth = if rows >= 256.0 || n <= 64.0 { n } else { n / 64.0 + 16.0 };
            let rtol = (15.0 + depth + 3.0) * U;
            let what = format!("softmax along {axis} of {view} {shape:?}");
            assert_close(&what, &download(&t.softmax(axis as isize)), &a.softmax(axis), rtol, 1e-12);
            let atol = 4.8e-7 + depth * U + 12.0 * U;
            let what = format!("log_softmax along {axis} of {view} {shape:?}");
            assert_close(&what, &download(&t.log_softmax(axis as isize)), &a.log_softmax(axis), U, atol);
        }
    }
    // huge logits do not overflow
    let t = Tensor::from_slice(dev(), &[1000.0f32, 0.0, -1000.0], &[3]);
    assert_eq!(t.softmax(0).to_vec::<f32>().unwrap(), vec![1.0, 0.0, 0.0]);
    assert_eq!(t.logsumexp(&[0], false).item::<f32>().unwrap(), 1000.0);
}

#[test]
fn matmul_shapes() {
    let mut rng = Rng::new(5);
    #[rustfmt::skip]
    let cases: &[(&[usize], &[usize])] = &[
        (&[1, 1], &[1, 1]), (&[3, 5], &[5, 7]), (&[65, 33], &[33, 70]), (&[128, 784], &[784, 10]),
        (&[2, 3, 4], &[4, 5]), (&[4, 5], &[2, 5, 3]), (&[2, 1, 3, 4], &[5, 4, 2]), (&[0, 3], &[3, 2]),
        (&[3, 0], &[0, 2]), (&[300, 200], &[200, 130]), (&[7, 3000], &[3000, 5]), (&[2, 9, 1100], &[1100, 40]),
        // multiples of four: rows of A and B load four at a time, over edge
        // tiles, broadcast batches and a k split into slices
        // (transposed views of A: four rows at a time; of B: four k steps
        // of a column at a time)
        (&[65, 36], &[36, 132]), (&[3, 1, 8, 12], &[2, 12, 20]), (&[1, 1028], &[1028, 4]), (&[2, 36, 8], &[8, 12]),
        // row vectors (one row of A: a tile of one row, k in steps of 8 and
        // a remainder) and column vectors (one column of B: run as the
        // transposed row vector), batched, with k split into slices
        (&[1, 784], &[784, 256]), (&[1, 37], &[37, 45]), (&[1, 7], &[7, 3]), (&[1, 16], &[16, 65]),
        (&[1, 3000], &[3000, 5]), (&[3, 1, 20], &[20, 9]), (&[2, 5, 1, 12], &[12, 33]), (&[1, 9], &[2, 9, 64]),
        (&[45, 37], &[37, 1]), (&[130, 1024], &[1024, 1]), (&[4, 6, 9], &[4, 9, 1]), (&[3, 2, 8], &[8, 1]),
        (&[2, 1], &[1, 1]), (&[1, 33], &[33, 1]), (&[784, 1], &[1, 256]),
    ];
    for (sa, sb) in cases {
        let (a, b) = (rng.array(sa, -1.0, 1.0), rng.array(sb, -1.0, 1.0));
        let (want, scale) = a.matmul_with_scale(&b);
        let k = sa[sa.len() - 1] as f64;
        // k sequential FMAs: |error| ≤ k·u·Σ|a||b|
        let bound = scale.map(|s| (k + 1.0) * (U / 2.0) * s);
        for (va, ta, _) in views(&a) {
            for (vb, tb, _) in views(&b) {
                let got = download(&ta.matmul(&tb));
                assert_within(&format!("matmul {va} {sa:?} · {vb} {sb:?}"), &got, &want, &bound);
            }
        }
    }
    // 1-d operands: vector·matrix, matrix·vector, dot
    let (m, v) = (rng.array(&[3, 4], -1.0, 1.0), rng.array(&[4], -1.0, 1.0));
    let got = download(&upload(&m).matmul(&upload(&v)));
    let want = m.matmul_with_scale(&v.reshape(&[4, 1])).0.reshape(&[3]);
    assert_close("matrix · vector", &got, &want, 1e-6, 1e-6);
    let got = download(&upload(&v).matmul(&upload(&m.t())));
    assert_close("vector · matrix", &got, &want, 1e-6, 1e-6);
    let got = download(&upload(&v).matmul(&upload(&v)));
    assert_eq!(got.shape, Vec::<usize>::new());
}

/// A product with more tiles along a row or a column than one dispatch
/// holds (65,535 workgroups per dimension, the widest tiles 128 columns)
/// runs in several dispatches: every element is computed, once.
#[test]
fn matmul_beyond_one_dispatch() {
    let d = dev();
    let n = 65535 * 128 + 5;
    let v: Vec<f32> = (0..n).map(|j| (j % 1999) as f32 / 1024.0 - 0.7).collect(); // never 0
    // one product each: exact (the f32 product, rounded once)
    let wide = Tensor::from_slice(d, &[1.5f32], &[1, 1]).matmul(&Tensor::from_slice(d, &v, &[1, n]));
    let tall = Tensor::from_slice(d, &v, &[n, 1]).matmul(&Tensor::from_slice(d, &[-2.25f32], &[1, 1]));
    for (what, t, s) in [("1×1 · 1×n", wide, 1.5f32), ("n×1 · 1×1", tall, -2.25)] {
        let got = t.to_vec::<f32>().unwrap();
        assert_eq!(got.len(), n, "{what}");
        for (j, (g, x)) in got.iter().zip(&v).enumerate() {
            assert_eq!(g.to_bits(), (x * s).to_bits(), "{what}: element {j} = {g}, expected {}", x * s);
        }
    }
}

#[test]
fn creation() {
    let d = dev();
    assert_eq!(Tensor::zeros(d, &[3]).to_vec::<f32>().unwrap(), vec![0.0; 3]);
    assert_eq!(Tensor::ones(d, &[2, 2]).to_vec::<f32>().unwrap(), vec![1.0; 4]);
    assert_eq!(Tensor::full(d, &[2], 7u32).to_vec::<u32>().unwrap(), vec![7, 7]);
    assert_eq!(Tensor::full(d, &[2], -3i32).to_vec::<i32>().unwrap(), vec![-3, -3]);
    assert_eq!(Tensor::arange(d, 0.0, 5.0, 2.0).to_vec::<f32>().unwrap(), vec![0.0, 2.0, 4.0]);
    assert_eq!(Tensor::arange(d, 3.0, 0.0, -1.0).to_vec::<f32>().unwrap(), vec![3.0, 2.0, 1.0]);
    assert_eq!(Tensor::scalar(d, 2.5f32).item::<f32>().unwrap(), 2.5);
    let e = Tensor::zeros(d, &[0, 3]);
    assert_eq!(e.to_vec::<f32>().unwrap(), Vec::<f32>::new());
    assert_eq!((&e + 1.0).sum(&[0], false).to_vec::<f32>().unwrap(), vec![0.0; 3]);
    let like = Tensor::from_slice(d, &[1i32, 2], &[2]).full_like(9.0);
    assert_eq!((like.dtype(), like.to_vec::<i32>().unwrap()), (DType::I32, vec![9, 9]));
}

/// Philox4x32-10 on the CPU, the reference for the GPU generator.
fn philox(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c[0] as u64;
        let p1 = 0xCD9E_8D57u64 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(0x9E37_79B9), k[1].wrapping_add(0xBB67_AE85)];
    }
    c
}

#[test]
fn random_matches_philox_and_is_reproducible() {
    let d = own_device();
    let seed = 0x1234_5678_9abc_def0u64;
    d.manual_seed(seed);
    let u: Vec<f32> = Tensor::rand(&d, &[1001]).to_vec().unwrap();
    let key = [seed as u32, (seed >> 32) as u32];
    for (i, &x) in u.iter().enumerate() {
        let w = philox([(i / 4) as u32, 0, 0, 0], key)[i % 4];
        assert_eq!(x, (w >> 8) as f32 / (1u32 << 24) as f32, "element {i}");
    }
    // the next call continues the stream; reseeding replays it
    let second: Vec<f32> = Tensor::rand(&d, &[8]).to_vec().unwrap();
    assert_ne!(&second[..], &u[..8]);
    d.manual_seed(seed);
    assert_eq!(Tensor::rand(&d, &[1001]).to_vec::<f32>().unwrap(), u);
    // normal samples: moments of a million draws within 5 standard errors
    let n = 1 << 20;
    let z = Tensor::normal(&d, &[n], 2.0, 3.0);
    let mean: f32 = z.mean_all().item().unwrap();
    let var: f32 = (&z - 2.0).square().mean_all().item().unwrap();
    let se = 3.0 / (n as f32).sqrt();
    assert!((mean - 2.0).abs() < 5.0 * se, "mean {mean}");
    assert!((var - 9.0).abs() < 5.0 * 9.0 * (2.0 / n as f32).sqrt(), "var {var}");
    let u = Tensor::uniform(&d, &[n], -1.0, 3.0);
    let (lo, hi): (f32, f32) = (u.min(&[0], false).item().unwrap(), u.max(&[0], false).item().unwrap());
    assert!(lo >= -1.0 && hi < 3.0 && lo < -0.99 && hi > 2.99);
}

/// The special values of f32, each op applied to every one (and every pair):
/// results follow IEEE 754 and C's math library (NaN in, NaN out; overflow to
/// ±∞; invalid operations give NaN), with maximum/minimum propagating NaN as
/// PyTorch does. Checked on every backend: WGSL leaves non-finite inputs to
/// the implementation, so the kernels handle them explicitly.
#[test]
fn non_finite_values_propagate_as_ieee_says() {
    let (inf, nan) = (f64::INFINITY, f64::NAN);
    let specials = [nan, inf, -inf, 0.0, -0.0, 1.0, -1.0, 0.5, 3.0];
    let same = |g: f32, w: f64| {
        if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() || w == 0.0 {
            g as f64 == w
        } else {
            ((g as f64 - w) / w).abs() < 1e-5
        }
    };
    let x = Tensor::from_slice(dev(), &specials.map(|v| v as f32), &[specials.len()]);
    let erf = |v: f64| libm::erf(v);
    type Unary = (&'static str, Tensor, fn(f64) -> f64);
    type Binary = (&'static str, Tensor, fn(f64, f64) -> f64);
    let unary: Vec<Unary> = vec![
        ("neg", -&x, |v| -v),
        ("abs", x.abs(), f64::abs),
        ("sign", x.sign(), |v| {
            if v.is_nan() {
                v
            } else if v == 0.0 {
                0.0
            } else {
                v.signum()
            }
        }),
        ("exp", x.exp(), f64::exp),
        ("log", x.log(), f64::ln),
        ("sqrt", x.sqrt(), f64::sqrt),
        ("rsqrt", x.rsqrt(), |v| 1.0 / v.sqrt()),
        ("recip", x.recip(), |v| 1.0 / v),
        ("sin", x.sin(), f64::sin),
        ("cos", x.cos(), f64::cos),
        ("tanh", x.tanh(), f64::tanh),
        ("sigmoid", x.sigmoid(), |v| 1.0 / (1.0 + (-v).exp())),
        ("relu", x.relu(), |v| if v < 0.0 { 0.0 } else { v }),
        ("softplus", x.softplus(), |v| if v > 30.0 { v } else { v.exp().ln_1p() }),
        ("erf", x.erf(), erf),
        ("square", x.square(), |v| v * v),
    ];
    let mut wrong = Vec::new();
    for (name, t, f) in unary {
        for (&v, g) in specials.iter().zip(t.to_vec::<f32>().unwrap()) {
            if !same(g, f(v)) {
                wrong.push(format!("{name}({v}) = {g}, expected {}", f(v)));
            }
        }
    }
    let n = specials.len();
    let a = x.reshape(&[n, 1]);
    let b = x.reshape(&[1, n]);
    let binary: Vec<Binary> = vec![
        ("add", &a + &b, |p, q| p + q),
        ("sub", &a - &b, |p, q| p - q),
        ("mul", &a * &b, |p, q| p * q),
        ("div", &a / &b, |p, q| p / q),
        ("pow", a.pow(&b), f64::powf),
        ("maximum", a.maximum(&b), |p, q| if p.is_nan() || q.is_nan() { f64::NAN } else { p.max(q) }),
        ("minimum", a.minimum(&b), |p, q| if p.is_nan() || q.is_nan() { f64::NAN } else { p.min(q) }),
        ("lt", a.lt(&b).cast(wgrad::DType::F32), |p, q| (p < q) as u8 as f64),
        ("eq", a.eq(&b).cast(wgrad::DType::F32), |p, q| (p == q) as u8 as f64),
        ("ne", a.ne(&b).cast(wgrad::DType::F32), |p, q| (p != q) as u8 as f64),
        ("ge", a.ge(&b).cast(wgrad::DType::F32), |p, q| (p >= q) as u8 as f64),
    ];
    for (name, t, f) in binary {
        let got = t.to_vec::<f32>().unwrap();
        for (i, &p) in specials.iter().enumerate() {
            for (j, &q) in specials.iter().enumerate() {
                if !same(got[i * n + j], f(p, q)) {
                    wrong.push(format!("{name}({p}, {q}) = {}, expected {}", got[i * n + j], f(p, q)));
                }
            }
        }
    }
    // reductions, softmax and matmul: one non-finite value reaches exactly
    // the results that depend on it
    let rows: [[f64; 3]; 6] =
        [[1.0, nan, 2.0], [inf, 1.0, 2.0], [inf, -inf, 0.0], [-inf, -inf, -inf], [1.0, 2.0, 3.0], [-inf, 0.0, 1.0]];
    let t = Tensor::from_slice(dev(), &rows.concat().iter().map(|&v| v as f32).collect::<Vec<_>>(), &[6, 3]);
    let by_row = |name: &str, got: Tensor, f: &dyn Fn(&[f64; 3]) -> f64, wrong: &mut Vec<String>| {
        for (r, g) in rows.iter().zip(got.to_vec::<f32>().unwrap()) {
            if !same(g, f(r)) {
                wrong.push(format!("{name}({r:?}) = {g}, expected {}", f(r)));
            }
        }
    };
    let fold_max = |r: &[f64; 3]| r.iter().fold(-inf, |m, &v| if m.is_nan() || v.is_nan() { nan } else { m.max(v) });
    let lse = move |r: &[f64; 3]| {
        let m = fold_max(r);
        if m.is_infinite() { m } else { m + r.iter().map(|v| (v - m).exp()).sum::<f64>().ln() }
    };
    by_row("sum", t.sum(&[-1], false), &|r| r.iter().sum(), &mut wrong);
    by_row("mean", t.mean(&[-1], false), &|r| r.iter().sum::<f64>() / 3.0, &mut wrong);
    by_row("max", t.max(&[-1], false), &fold_max, &mut wrong);
    by_row("logsumexp", t.logsumexp(&[-1], false), &lse, &mut wrong);
    let softmax = t.softmax(-1).to_vec::<f32>().unwrap();
    for (r, g) in rows.iter().zip(softmax.chunks(3)) {
        let m = fold_max(r);
        let e: Vec<f64> = r.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        for (k, &gv) in g.iter().enumerate() {
            if !same(gv, e[k] / s) {
                wrong.push(format!("softmax({r:?})[{k}] = {gv}, expected {}", e[k] / s));
            }
        }
    }
    let eye = Tensor::from_slice(dev(), &[1.0f32, 0.0, 0.0, 1.0, 0.0, 0.0], &[3, 2]);
    let mm = t.matmul(&eye).to_vec::<f32>().unwrap();
    for (r, g) in rows.iter().zip(mm.chunks(2)) {
        for (c, &gv) in g.iter().enumerate() {
            let w: f64 = (0..3).map(|k| r[k] * [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]][k][c]).sum();
            if !same(gv, w) {
                wrong.push(format!("matmul row {r:?} column {c} = {gv}, expected {w}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{} wrong:\n{}", wrong.len(), wrong.join("\n"));
}
