// The elementwise ops, one function per op and element type, named after
// the op's `Tensor` method: `op_tanh` (f32), `op_neg_i32`, `op_add_u32`.
// They are the single definition of each op's arithmetic, called by the
// eager kernels (elementwise.wgsl, through a dispatch on the op code that
// src/codegen/elementwise.rs writes from the op tables of
// src/ir/elementwise.rs) and by the kernels generated for compiled steps.
// Values travel as raw 32-bit words and are bitcast to these types.

const F32: u32 = 0u;
const I32: u32 = 1u;
const U32: u32 = 2u;

// ---- unary ---------------------------------------------------------------

fn op_neg(x: f32) -> f32 { return -x; }
fn op_neg_i32(x: i32) -> i32 { return -x; }
fn op_abs(x: f32) -> f32 { return abs(x); }
fn op_abs_i32(x: i32) -> i32 { return abs(x); }
fn op_sign(x: f32) -> f32 { return select(sign(x), x, is_nan(x)); }
fn op_sign_i32(x: i32) -> i32 { return sign(x); }
fn op_exp(x: f32) -> f32 { return exp(x); }
fn op_log(x: f32) -> f32 { return log(x); }
fn op_sqrt(x: f32) -> f32 { return sqrt(x); }
// 1/sqrt rather than inverseSqrt: the builtin may be a low-precision estimate.
fn op_rsqrt(x: f32) -> f32 { return 1.0 / sqrt(x); }
fn op_recip(x: f32) -> f32 { return 1.0 / x; }
fn op_sin(x: f32) -> f32 { return sin(x); }
fn op_cos(x: f32) -> f32 { return cos(x); }
// tanh saturates to ±1 in f32 beyond |x| = 9; clamping keeps
// implementations that compute (e^2x - 1)/(e^2x + 1) away from inf/inf.
// NaN passes through explicitly: clamp/max of NaN is implementation-defined.
fn op_tanh(x: f32) -> f32 { return select(tanh(clamp(x, -15.0, 15.0)), x, is_nan(x)); }
// Two branches so exp never overflows.
fn op_sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}
// relu(NaN) = NaN, as in PyTorch.
fn op_relu(x: f32) -> f32 { return select(select(x, 0.0, x < 0.0), x, is_nan(x)); }
// gelu(x) = x Φ(x) = x (1 + erf(x / √2)) / 2, the exact form (PyTorch's default).
fn op_gelu(x: f32) -> f32 { return 0.5 * x * (1.0 + op_erf(x * 0.70710678118654752)); }
// log(1 + e) for e in [0, 1], accurate when e is tiny.
fn log1p_small(e: f32) -> f32 { return select(log(1.0 + e), e * (1.0 - 0.5 * e), e < 1e-4); }
// softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^-|x|), which never overflows.
fn op_softplus(x: f32) -> f32 { return select(max(x, 0.0) + log1p_small(exp(-abs(x))), x, is_nan(x)); }
// erf: Maclaurin series near 0 (truncation < 1e-9 for |x| < 0.5), else
// 1 - erfc with the Chebyshev fit of Numerical Recipes §6.2 (|error| < 1.2e-7).
fn op_erf(x: f32) -> f32 {
    let z = abs(x);
    if z < 0.5 {
        let x2 = x * x;
        return 1.1283791670955126 * x * (1.0 + x2 * (-0.33333333333 + x2 * (0.1 + x2 * (-0.0238095238
            + x2 * (0.0046296296 + x2 * (-7.5757576e-4 + x2 * 1.0683761e-4))))));
    }
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * exp(poly);
    return select(erfc - 1.0, 1.0 - erfc, x >= 0.0);
}
fn op_softsign(x: f32) -> f32 { return x / (1.0 + abs(x)); }

// ---- binary --------------------------------------------------------------

fn op_add(x: f32, y: f32) -> f32 { return x + y; }
fn op_add_i32(x: i32, y: i32) -> i32 { return x + y; }
fn op_add_u32(x: u32, y: u32) -> u32 { return x + y; }
fn op_sub(x: f32, y: f32) -> f32 { return x - y; }
fn op_sub_i32(x: i32, y: i32) -> i32 { return x - y; }
fn op_sub_u32(x: u32, y: u32) -> u32 { return x - y; }
fn op_mul(x: f32, y: f32) -> f32 { return x * y; }
fn op_mul_i32(x: i32, y: i32) -> i32 { return x * y; }
fn op_mul_u32(x: u32, y: u32) -> u32 { return x * y; }
fn op_div(x: f32, y: f32) -> f32 { return x / y; }
// Integer division truncates towards zero; WGSL defines x / 0 = x.
fn op_div_i32(x: i32, y: i32) -> i32 { return x / y; }
fn op_div_u32(x: u32, y: u32) -> u32 { return x / y; }
// x^y with every special case of C's pow (C99 F.9.4.4): x^±0 = 1 and
// 1^y = 1 even for NaN; otherwise NaN in, NaN out; negative bases need an
// integer exponent, whose parity gives the sign; zero and infinite bases and
// exponents by their limits. The tests are on the bits and ordered so that
// compilers assuming finite math cannot fold them away.
fn op_pow(x: f32, y: f32) -> f32 {
    if y == 0.0 && !is_nan(y) { return 1.0; }
    if x == 1.0 && !is_nan(x) { return 1.0; }
    if is_nan(x) || is_nan(y) { return nan(); }
    if y == 1.0 { return x; }
    if y == 2.0 { return x * x; }
    let ax = abs(x);
    let ay = abs(y);
    if is_inf(y) {
        if ax == 1.0 { return 1.0; }
        return select(0.0, inf(), (ax > 1.0) == (y > 0.0));
    }
    let integer = fract(ay) == 0.0;
    // odd integers below 2^24 (larger f32 values are all even)
    let odd = integer && ay < 16777216.0 && (u32(ay) & 1u) == 1u;
    let negative = bitcast<u32>(x) >= 0x80000000u;
    if ax == 0.0 || is_inf(x) {
        // 0^y and inf^y: a zero or an infinity, its sign the base's for odd y
        let big = (ax == 0.0) == (y < 0.0);
        let r = select(0.0, inf(), big);
        return select(r, -r, negative && odd);
    }
    if negative && !integer { return nan(); }
    let r = exp2(y * log2(ax));
    return select(r, -r, negative && odd);
}
fn op_maximum(x: f32, y: f32) -> f32 { return fmax(x, y); }
fn op_maximum_i32(x: i32, y: i32) -> i32 { return max(x, y); }
fn op_maximum_u32(x: u32, y: u32) -> u32 { return max(x, y); }
fn op_minimum(x: f32, y: f32) -> f32 { return fmin(x, y); }
fn op_minimum_i32(x: i32, y: i32) -> i32 { return min(x, y); }
fn op_minimum_u32(x: u32, y: u32) -> u32 { return min(x, y); }

// IEEE comparisons: every one with a NaN is false except `!=`. Spelled out
// because compilers that assume finite math lower `!=` to "ordered and
// unequal".
fn unordered(x: f32, y: f32) -> bool { return is_nan(x) || is_nan(y); }
fn op_eq(x: f32, y: f32) -> bool { return !unordered(x, y) && x == y; }
fn op_eq_i32(x: i32, y: i32) -> bool { return x == y; }
fn op_eq_u32(x: u32, y: u32) -> bool { return x == y; }
fn op_ne(x: f32, y: f32) -> bool { return unordered(x, y) || x != y; }
fn op_ne_i32(x: i32, y: i32) -> bool { return x != y; }
fn op_ne_u32(x: u32, y: u32) -> bool { return x != y; }
fn op_lt(x: f32, y: f32) -> bool { return !unordered(x, y) && x < y; }
fn op_lt_i32(x: i32, y: i32) -> bool { return x < y; }
fn op_lt_u32(x: u32, y: u32) -> bool { return x < y; }
fn op_le(x: f32, y: f32) -> bool { return !unordered(x, y) && x <= y; }
fn op_le_i32(x: i32, y: i32) -> bool { return x <= y; }
fn op_le_u32(x: u32, y: u32) -> bool { return x <= y; }
fn op_gt(x: f32, y: f32) -> bool { return !unordered(x, y) && x > y; }
fn op_gt_i32(x: i32, y: i32) -> bool { return x > y; }
fn op_gt_u32(x: u32, y: u32) -> bool { return x > y; }
fn op_ge(x: f32, y: f32) -> bool { return !unordered(x, y) && x >= y; }
fn op_ge_i32(x: i32, y: i32) -> bool { return x >= y; }
fn op_ge_u32(x: u32, y: u32) -> bool { return x >= y; }

// ---- cast ----------------------------------------------------------------

// The bits of x (of type `src`) converted to type `dst`. f32 → integer
// conversions truncate towards zero and saturate at the largest values f32
// represents exactly (WGSL's rule, spelled out: GL backends do not saturate);
// NaN becomes 0.
fn cast_bits(src: u32, dst: u32, x: u32) -> u32 {
    let f = select(bitcast<f32>(x), 0.0, is_nan(bitcast<f32>(x)));
    if src == F32 && dst == I32 { return bitcast<u32>(i32(clamp(f, -2147483648.0, 2147483520.0))); }
    if src == F32 && dst == U32 { return u32(clamp(f, 0.0, 4294967040.0)); }
    if src == I32 && dst == F32 { return bitcast<u32>(f32(bitcast<i32>(x))); }
    if src == U32 && dst == F32 { return bitcast<u32>(f32(x)); }
    return x;
}
