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

// log(1 + x), accurate near 0: for |x| < ½ the series 2·atanh(s) with
// s = x/(2 + x), |s| ≤ ⅕ (truncated after s¹³: relative error < 1e-10);
// elsewhere 1 + x is exact or rounds by ½ ULP of a value ≥ 1.5.
fn op_log1p(x: f32) -> f32 {
    if abs(x) < 0.5 {
        let s = x / (2.0 + x);
        let s2 = s * s;
        return 2.0 * s * (1.0 + s2 * (0.33333333 + s2 * (0.2 + s2 * (0.14285714 + s2 * (0.11111111
            + s2 * (0.09090909 + s2 * 0.07692308))))));
    }
    return log(1.0 + x);
}
// eˣ − 1, accurate near 0: Taylor series for |x| < ½ (truncated after x¹⁰:
// relative error < 1e-10), else exp(x) − 1 (exp ≥ 1.6 or ≤ 0.61, so the
// subtraction loses at most 2 bits).
fn op_expm1(x: f32) -> f32 {
    if abs(x) < 0.5 {
        return x * (1.0 + x * (0.5 + x * (0.16666667 + x * (0.041666668 + x * (0.008333334 + x * (0.0013888889
            + x * (1.984127e-4 + x * (2.4801588e-5 + x * (2.7557319e-6 + x * 2.7557319e-7)))))))));
    }
    return exp(x) - 1.0;
}
fn op_log2(x: f32) -> f32 { return log2(x); }
fn op_exp2(x: f32) -> f32 { return exp2(x); }
// tan: x = k·π/2 + r with |r| ≤ π/4 (π/2 in three parts, so r is exact
// for |x| < 10⁴), tan r = 2t/(1 − t²) with t = tan(r/2) from its Taylor
// series on |r/2| ≤ π/8 (truncated after the r¹³ term: relative error
// < 1e-8), and tan x = −1/tan r for odd k. (WGSL's own tan is only
// required to be as good as sin/cos, 2⁻¹¹ absolute.)
fn op_tan(x: f32) -> f32 {
    if is_nan(x) || is_inf(x) { return nan(); }
    let k = round(x * 0.63661977);
    let r = ((x - k * 1.5703125) - k * 4.8375129699707031e-4) - k * 7.5497899548918821e-8;
    let h = 0.5 * r;
    let h2 = h * h;
    let t = h * (1.0 + h2 * (0.33333333 + h2 * (0.13333333 + h2 * (0.053968254 + h2 * (0.021869489
        + h2 * (0.0088632355 + h2 * 0.0035921280))))));
    let num = 2.0 * t;
    let den = (1.0 - t) * (1.0 + t);
    let odd = (i32(k) & 1) != 0;
    return select(num / den, -den / num, odd);
}
// sinh and cosh from e^|x|: near 0 sinh uses expm1 (no cancellation); past
// |x| = 10 the e^-|x| term is below rounding and e^(|x| − ln 2) avoids
// overflowing where sinh itself does not.
fn op_sinh(x: f32) -> f32 {
    let a = abs(x);
    var r: f32;
    if a < 1.0 {
        let u = op_expm1(a);
        r = 0.5 * (u + u / (u + 1.0));
    } else if a < 10.0 {
        let e = exp(a);
        r = 0.5 * (e - 1.0 / e);
    } else {
        r = exp(a - 0.6931472);
    }
    return select(select(r, -r, x < 0.0), x, is_nan(x));
}
fn op_cosh(x: f32) -> f32 {
    let a = abs(x);
    if a < 10.0 {
        let e = exp(a);
        return 0.5 * (e + 1.0 / e);
    }
    return select(exp(a - 0.6931472), x, is_nan(x));
}
// atan on [0, ∞): atan(a) = π/2 − atan(1/a) past 1; past tan(π/12),
// atan(a) = π/6 + atan((a√3 − 1)/(a + √3)); then the odd series on
// |t| ≤ 0.268 (truncated after t¹⁷: relative error < 1e-12).
fn atan_nonneg(a: f32) -> f32 {
    var t = a;
    var base = 0.0;
    var flip = false;
    if t > 1.0 {
        t = 1.0 / t;
        flip = true;
    }
    if t > 0.26794919 {
        t = (t * 1.7320508 - 1.0) / (t + 1.7320508);
        base = 0.52359878;
    }
    let t2 = t * t;
    let r = base + t * (1.0 + t2 * (-0.33333333 + t2 * (0.2 + t2 * (-0.14285714 + t2 * (0.11111111
        + t2 * (-0.09090909 + t2 * (0.07692308 + t2 * (-0.06666667 + t2 * 0.05882353))))))));
    return select(r, 1.5707964 - r, flip);
}
fn op_atan(x: f32) -> f32 {
    if is_nan(x) { return x; }
    let r = atan_nonneg(abs(x));
    return select(r, -r, x < 0.0);
}
// asin and acos through atan2 with √((1 − x)(1 + x)): both factors are
// exact near ±1, so there is no cancellation.
fn op_asin(x: f32) -> f32 { return op_atan2(x, sqrt((1.0 - x) * (1.0 + x))); }
fn op_acos(x: f32) -> f32 { return op_atan2(sqrt((1.0 - x) * (1.0 + x)), x); }
// asinh(x) = log1p(|x| + x²/(1 + √(1 + x²))), signed; log|x| + ln 2 past 2¹²
// (where x² would lose the 1 and, further on, overflow).
fn op_asinh(x: f32) -> f32 {
    let a = abs(x);
    var r: f32;
    if a > 4096.0 {
        r = log(a) + 0.6931472;
    } else {
        r = op_log1p(a + a * a / (1.0 + sqrt(1.0 + a * a)));
    }
    return select(select(r, -r, x < 0.0), x, is_nan(x));
}
// acosh(x) = log1p((x − 1) + √((x − 1)(x + 1))), exact factors near 1;
// log x + ln 2 past 2¹²; NaN below 1.
fn op_acosh(x: f32) -> f32 {
    if x > 4096.0 { return log(x) + 0.6931472; }
    let d = x - 1.0;
    if d < 0.0 { return nan(); }
    return op_log1p(d + sqrt(d * (x + 1.0)));
}
// atanh(x) = ½ (log1p(x) − log1p(−x)): no cancellation (the terms have
// opposite signs) and each log1p is exact in its argument; ±inf at ±1,
// NaN beyond.
fn op_atanh(x: f32) -> f32 {
    if abs(x) > 1.0 { return nan(); }
    return 0.5 * (op_log1p(x) - op_log1p(-x));
}
// Rounding: exact. round() takes halves to the even integer, as numpy does.
fn op_floor(x: f32) -> f32 { return floor(x); }
fn op_ceil(x: f32) -> f32 { return ceil(x); }
fn op_round(x: f32) -> f32 { return round(x); }
fn op_trunc(x: f32) -> f32 { return trunc(x); }
// x·σ(x)
fn op_silu(x: f32) -> f32 { return x * op_sigmoid(x); }
// x·tanh(softplus(x))
fn op_mish(x: f32) -> f32 { return x * op_tanh(op_softplus(x)); }
// relu6(x + 3)/6 = clamp(x/6 + ½, 0, 1); NaN stays NaN.
fn op_hardsigmoid(x: f32) -> f32 { return select(min(max(x / 6.0 + 0.5, 0.0), 1.0), x, is_nan(x)); }
// log σ(x) = min(x, 0) − log(1 + e^−|x|), which never overflows.
fn op_logsigmoid(x: f32) -> f32 { return select(min(x, 0.0) - log1p_small(exp(-abs(x))), x, is_nan(x)); }

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
// atan2(y, x) in (−π, π], with C's special cases: signed zeros give ±0 or
// ±π, infinities the multiples of π/4. Built on atan of a ratio ≤ 1.
fn op_atan2(y: f32, x: f32) -> f32 {
    if is_nan(x) || is_nan(y) { return nan(); }
    let ay = abs(y);
    let ax = abs(x);
    let x_negative = bitcast<u32>(x) >= 0x80000000u;
    var r: f32;
    if ay == 0.0 {
        r = select(0.0, 3.1415927, x_negative);
    } else if is_inf(ax) && is_inf(ay) {
        r = select(0.78539816, 2.3561945, x_negative);
    } else {
        if ay > ax {
            r = 1.5707964 - atan_nonneg(ax / ay);
        } else {
            r = atan_nonneg(ay / ax);
        }
        if x_negative { r = 3.1415927 - r; }
    }
    return select(r, -r, bitcast<u32>(y) >= 0x80000000u);
}
// C's fmod, exactly (the result is representable, so it is computed on the
// integer significands: |x| = mx·2^(ex−24), |y| = my·2^(ey−24), and
// mx·2^(ex−ey) mod my by shifts of at most 8 bits); the sign is x's.
fn op_fmod(x: f32, y: f32) -> f32 {
    if is_nan(x) || is_nan(y) || is_inf(x) || y == 0.0 { return nan(); }
    let ax = abs(x);
    let ay = abs(y);
    if is_inf(y) || ax < ay { return x; }
    let fx = frexp(ax);
    let fy = frexp(ay);
    let my = u32(fy.fract * 16777216.0);
    var r = u32(fx.fract * 16777216.0) % my;
    var d = fx.exp - fy.exp;
    while d > 0 {
        let s = u32(min(d, 8));
        r = (r << s) % my;
        d -= i32(s);
    }
    let m = ldexp(f32(r), fy.exp - 24);
    return select(m, -m, bitcast<u32>(x) >= 0x80000000u);
}
fn op_fmod_i32(x: i32, y: i32) -> i32 { return x % y; }
fn op_fmod_u32(x: u32, y: u32) -> u32 { return x % y; }
// numpy's remainder (Python's %): fmod moved by y when their signs differ,
// so the result takes y's sign; a zero result is +0 or −0 as y.
fn op_remainder(x: f32, y: f32) -> f32 {
    let r = op_fmod(x, y);
    let y_negative = bitcast<u32>(y) >= 0x80000000u;
    if r == 0.0 { return select(0.0, -0.0, y_negative); }
    if (r < 0.0) != y_negative { return r + y; }
    return r;
}
fn op_remainder_i32(x: i32, y: i32) -> i32 {
    let r = x % y;
    return select(r, r + y, r != 0 && ((r < 0) != (y < 0)));
}
fn op_remainder_u32(x: u32, y: u32) -> u32 { return x % y; }

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
// Logic on truth values: non-zero is true (NaN too, as in numpy).
fn op_logical_and(x: f32, y: f32) -> bool { return op_ne(x, 0.0) && op_ne(y, 0.0); }
fn op_logical_and_i32(x: i32, y: i32) -> bool { return x != 0 && y != 0; }
fn op_logical_and_u32(x: u32, y: u32) -> bool { return x != 0u && y != 0u; }
fn op_logical_or(x: f32, y: f32) -> bool { return op_ne(x, 0.0) || op_ne(y, 0.0); }
fn op_logical_or_i32(x: i32, y: i32) -> bool { return x != 0 || y != 0; }
fn op_logical_or_u32(x: u32, y: u32) -> bool { return x != 0u || y != 0u; }
fn op_logical_xor(x: f32, y: f32) -> bool { return op_ne(x, 0.0) != op_ne(y, 0.0); }
fn op_logical_xor_i32(x: i32, y: i32) -> bool { return (x != 0) != (y != 0); }
fn op_logical_xor_u32(x: u32, y: u32) -> bool { return (x != 0u) != (y != 0u); }

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
