//! The elementwise ops: one row each in the tables below, and what an
//! elementwise node computes ([`EwExpr`]).
//!
//! A row is everything wgrad knows of an op: its variant, the `Tensor`
//! method (whose doc gives f and f′), the integer dtypes it also accepts,
//! and its VJP rule, written with ops. Its arithmetic is one WGSL function
//! per dtype in `shaders/elementwise_ops.wgsl`, named after the method:
//! `op_tanh` (f32), `op_neg_i32`, `op_add_u32`. The tables are macros that
//! hand their rows to a consumer: [`UnaryOp`] and [`BinaryOp`] here, the
//! methods and VJP rules in `ops/elementwise.rs` (the rules are compiled
//! there, where tensors exist), and the tests check every row against the
//! shader. Adding an op is a row here, its WGSL function, and a row in the
//! test tables (`tests/ops.rs`, `tests/grad.rs`).

use crate::dtype::DType;

/// Every unary map. A row: `Variant method [integer dtypes] (g, x, y) =>
/// gradient of x` (`g` the output's gradient, `y` the output; `None`: no
/// gradient). The doc of each row is the method's.
macro_rules! unary_ops {
    ($m:ident) => {
        $m! {
            /// −x.  f′ = −1.
            Neg neg [I32] (g, _x, _y) => Some(-g);
            /// |x|.  f′ = sign(x).
            Abs abs [I32] (g, x, _y) => Some(g * &x.sign());
            /// −1, 0 or 1 (NaN stays NaN).  Piecewise constant: no gradient.
            Sign sign [I32] (_g, _x, _y) => None;
            /// eˣ.  f′ = eˣ.
            Exp exp [] (g, _x, y) => Some(g * y);
            /// Natural logarithm.  f′ = 1/x.
            Log log [] (g, x, _y) => Some(g / x);
            /// √x.  f′ = 1/(2√x).
            Sqrt sqrt [] (g, _x, y) => Some(g / &(y * 2.0));
            /// 1/√x.  f′ = −½·x^(−3/2) = −½·y/x.
            Rsqrt rsqrt [] (g, x, y) => Some(g * &(y / x) * -0.5);
            /// 1/x.  f′ = −1/x² = −y².
            Recip recip [] (g, _x, y) => Some(-(g * &y.square()));
            /// sin x.  f′ = cos x.
            Sin sin [] (g, x, _y) => Some(g * &x.cos());
            /// cos x.  f′ = −sin x.
            Cos cos [] (g, x, _y) => Some(-(g * &x.sin()));
            /// tanh x.  f′ = 1 − tanh² x.
            Tanh tanh [] (g, _x, y) => Some(g * &(1.0 - y.square()));
            /// 1/(1 + e⁻ˣ), computed without overflow.  f′ = σ(1 − σ).
            Sigmoid sigmoid [] (g, _x, y) => Some(g * &(y * &(1.0 - y)));
            /// max(x, 0).  f′ = [x > 0].
            Relu relu [] (g, x, _y) => Some(x.gt(0.0).where_(g, 0.0));
            /// x·Φ(x), the exact (erf) form.  f′ = Φ(x) + x·φ(x), φ(x) = e^(−x²/2)/√(2π).
            Gelu gelu [] (g, x, _y) => Some(g * &gelu_slope(x));
            /// log(1 + eˣ), computed without overflow.  f′ = σ(x).
            Softplus softplus [] (g, x, _y) => Some(g * &x.sigmoid());
            /// The error function.  f′ = 2/√π·e^(−x²).
            Erf erf [] (g, x, _y) => Some(g * &((-x.square()).exp() * std::f32::consts::FRAC_2_SQRT_PI));
            /// x/(1 + |x|).  f′ = 1/(1 + |x|)².
            Softsign softsign [] (g, x, _y) => Some(g / &(x.abs() + 1.0).square());
            /// tan x.  f′ = 1 + tan² x.
            Tan tan [] (g, _x, y) => Some(g * &(y.square() + 1.0));
            /// arcsin x, in [−π/2, π/2] (NaN outside [−1, 1]).  f′ = 1/√(1 − x²).
            Asin asin [] (g, x, _y) => Some(g * &((1.0 - x) * &(x + 1.0)).rsqrt());
            /// arccos x, in [0, π] (NaN outside [−1, 1]).  f′ = −1/√(1 − x²).
            Acos acos [] (g, x, _y) => Some(-(g * &((1.0 - x) * &(x + 1.0)).rsqrt()));
            /// arctan x, in (−π/2, π/2).  f′ = 1/(1 + x²).
            Atan atan [] (g, x, _y) => Some(g / &(x.square() + 1.0));
            /// sinh x.  f′ = cosh x.
            Sinh sinh [] (g, x, _y) => Some(g * &x.cosh());
            /// cosh x.  f′ = sinh x.
            Cosh cosh [] (g, x, _y) => Some(g * &x.sinh());
            /// arsinh x.  f′ = 1/√(x² + 1).
            Asinh asinh [] (g, x, _y) => Some(g * &(x.square() + 1.0).rsqrt());
            /// arcosh x (NaN below 1).  f′ = 1/√(x² − 1).
            Acosh acosh [] (g, x, _y) => Some(g * &((x - 1.0) * &(x + 1.0)).rsqrt());
            /// artanh x (±∞ at ±1, NaN beyond).  f′ = 1/(1 − x²).
            Atanh atanh [] (g, x, _y) => Some(g / &((1.0 - x) * &(x + 1.0)));
            /// ln(1 + x), accurate for small x.  f′ = 1/(1 + x).
            Log1p log1p [] (g, x, _y) => Some(g / &(x + 1.0));
            /// eˣ − 1, accurate for small x.  f′ = eˣ.
            Expm1 expm1 [] (g, _x, y) => Some(g * &(y + 1.0));
            /// log₂ x.  f′ = 1/(x ln 2).
            Log2 log2 [] (g, x, _y) => Some(g / &(x * std::f32::consts::LN_2));
            /// 2ˣ.  f′ = 2ˣ ln 2.
            Exp2 exp2 [] (g, _x, y) => Some(g * &(y * std::f32::consts::LN_2));
            /// The largest integer ≤ x.  Piecewise constant: no gradient.
            Floor floor [] (_g, _x, _y) => None;
            /// The smallest integer ≥ x.  Piecewise constant: no gradient.
            Ceil ceil [] (_g, _x, _y) => None;
            /// The nearest integer, halves to even (as numpy and PyTorch).  No gradient.
            Round round [] (_g, _x, _y) => None;
            /// x without its fractional part (towards zero).  No gradient.
            Trunc trunc [] (_g, _x, _y) => None;
            /// x·σ(x) (swish).  f′ = σ(x)·(1 + x·(1 − σ(x))).
            Silu silu [] (g, x, _y) => {
                let s = x.sigmoid();
                Some(g * &(&s * &(x * &(1.0 - &s) + 1.0)))
            };
            /// x·tanh(softplus x).  f′ = t + x·(1 − t²)·σ(x), t = tanh(softplus x).
            Mish mish [] (g, x, _y) => {
                let t = x.softplus().tanh();
                Some(g * &(&t + &(x * &(1.0 - t.square()) * &x.sigmoid())))
            };
            /// relu6(x + 3)/6, i.e. clamp(x/6 + ½, 0, 1).  f′ = ⅙ on (−3, 3), else 0.
            Hardsigmoid hardsigmoid [] (g, x, _y) => Some(x.abs().lt(3.0).where_(&(g * (1.0 / 6.0)), 0.0));
            /// log σ(x) = −softplus(−x), computed without overflow.  f′ = σ(−x).
            Logsigmoid logsigmoid [] (g, x, _y) => Some(g * &(-x).sigmoid());
        }
    };
}

/// Every binary map. A row: `Variant method [integer dtypes]` and three
/// VJP rules: `ab` with two tensor operands (`na`, `nb`: which gradients are
/// needed; broadcasting is undone by the driver), `xs` for `x ⊕ s` and
/// `sx` for `s ⊕ x` with a scalar `s` (an `f32`): the gradient of x.
/// Comparisons (`mask` rows) give u32 masks and no gradient.
macro_rules! binary_ops {
    ($m:ident) => {
        $m! {
            /// Elementwise sum with broadcasting (also `+`).  ∂a = 1, ∂b = 1.
            Add add [I32 U32] arith {
                ab: (g, _a, _b, _y, na, nb) => [na.then(|| g.clone()), nb.then(|| g.clone())],
                xs: (g, _x, _s, _y) => Some(g.clone()),
                sx: (g, _x, _s, _y) => Some(g.clone()),
            };
            /// Elementwise difference with broadcasting (also `-`).  ∂a = 1, ∂b = −1.
            Sub sub [I32 U32] arith {
                ab: (g, _a, _b, _y, na, nb) => [na.then(|| g.clone()), nb.then(|| -g)],
                xs: (g, _x, _s, _y) => Some(g.clone()),
                sx: (g, _x, _s, _y) => Some(-g),
            };
            /// Elementwise product with broadcasting (also `*`).  ∂a = b, ∂b = a.
            Mul mul [I32 U32] arith {
                ab: (g, a, b, _y, na, nb) => [na.then(|| g * b), nb.then(|| g * a)],
                xs: (g, _x, s, _y) => Some(g * s),
                sx: (g, _x, s, _y) => Some(g * s),
            };
            /// Elementwise quotient with broadcasting (also `/`).  ∂a = 1/b, ∂b = −a/b² = −y/b.
            Div div [I32 U32] arith {
                ab: (g, _a, b, y, na, nb) => [na.then(|| g / b), nb.then(|| -(g * &(y / b)))],
                xs: (g, _x, s, _y) => Some(g * (1.0 / s)),
                sx: (g, x, _s, y) => Some(-(g * &(y / x))),
            };
            /// xʸ (f32): negative bases need integer exponents.
            /// ∂a = b·a^(b−1) (0 where b = 0), ∂b = y·ln a (0 where a ≤ 0).
            Pow pow [] arith {
                ab: (g, a, b, y, na, nb) => [
                    na.then(|| g * &b.eq(0.0).where_(0.0, &(b * &a.pow(&(b - 1.0))))),
                    nb.then(|| g * &a.gt(0.0).where_(&(y * &a.log()), 0.0)),
                ],
                xs: (g, x, s, _y) => (s != 0.0).then(|| g * &(x.pow(s - 1.0) * s)),
                sx: (g, _x, s, y) => Some(g * &(y * ln_base(s))),
            };
            /// Elementwise maximum (NaN propagates).  ∂a = 1 where a wins, ½ on ties.
            Maximum maximum [I32 U32] arith {
                ab: (g, a, b, _y, na, nb) => winner(g, a.gt(b), a.eq(b), na, nb),
                xs: (g, x, s, _y) => Some(g * &winner_weight(x.gt(s), x.eq(s))),
                sx: (g, x, s, _y) => Some(g * &winner_weight(x.gt(s), x.eq(s))),
            };
            /// Elementwise minimum (NaN propagates).  ∂a = 1 where a wins, ½ on ties.
            Minimum minimum [I32 U32] arith {
                ab: (g, a, b, _y, na, nb) => winner(g, a.lt(b), a.eq(b), na, nb),
                xs: (g, x, s, _y) => Some(g * &winner_weight(x.lt(s), x.eq(s))),
                sx: (g, x, s, _y) => Some(g * &winner_weight(x.lt(s), x.eq(s))),
            };
            /// atan2(a, b): the angle of the point (b, a), in (−π, π], with C's
            /// special cases.  ∂a = b/(a² + b²), ∂b = −a/(a² + b²).
            Atan2 atan2 [] arith {
                ab: (g, a, b, _y, na, nb) => {
                    let r = g / &(a.square() + b.square());
                    [na.then(|| &r * b), nb.then(|| -(&r * a))]
                },
                xs: (g, x, s, _y) => Some(g * s / &(x.square() + s * s)),
                sx: (g, x, s, _y) => Some(-(g * s) / &(x.square() + s * s)),
            };
            /// C's fmod: a − b·trunc(a/b), computed exactly; the sign of `a`
            /// (integers: Rust's `%`).  ∂a = 1, ∂b = −trunc(a/b).
            Fmod fmod [I32 U32] arith {
                ab: (g, a, b, _y, na, nb) => [na.then(|| g.clone()), nb.then(|| -(g * &(a / b).trunc()))],
                xs: (g, _x, _s, _y) => Some(g.clone()),
                sx: (g, x, s, _y) => Some(-(g * &(s / x).trunc())),
            };
            /// numpy's remainder (Python's `%`): a − b·floor(a/b), with the
            /// sign of `b`.  ∂a = 1, ∂b = −floor(a/b).
            Remainder remainder [I32 U32] arith {
                ab: (g, a, b, _y, na, nb) => [na.then(|| g.clone()), nb.then(|| -(g * &(a / b).floor()))],
                xs: (g, _x, _s, _y) => Some(g.clone()),
                sx: (g, x, s, _y) => Some(-(g * &(s / x).floor())),
            };
            /// Mask (u32 0/1) of `self == rhs`.
            Eq eq [I32 U32] mask {};
            /// Mask (u32 0/1) of `self != rhs` (true where either is NaN).
            Ne ne [I32 U32] mask {};
            /// Mask (u32 0/1) of `self < rhs`.
            Lt lt [I32 U32] mask {};
            /// Mask (u32 0/1) of `self <= rhs`.
            Le le [I32 U32] mask {};
            /// Mask (u32 0/1) of `self > rhs`.
            Gt gt [I32 U32] mask {};
            /// Mask (u32 0/1) of `self >= rhs`.
            Ge ge [I32 U32] mask {};
            /// Mask (u32 0/1) of `self && rhs`, non-zero (and NaN) being true.
            LogicalAnd logical_and [I32 U32] mask {};
            /// Mask (u32 0/1) of `self || rhs`, non-zero (and NaN) being true.
            LogicalOr logical_or [I32 U32] mask {};
            /// Mask (u32 0/1) of exactly one of `self`, `rhs` being non-zero.
            LogicalXor logical_xor [I32 U32] mask {};
        }
    };
}

pub(crate) use {binary_ops, unary_ops};

/// The dtypes of a row's list.
macro_rules! dtypes {
    ($($dt:ident)*) => { &[DType::F32 $(, DType::$dt)*] };
}

macro_rules! define_unary {
    ($($(#[doc = $doc:literal])* $v:ident $method:ident [$($dt:ident)*] $vjp:tt => $rule:expr;)*) => {
        /// A unary map (one row of [`unary_ops!`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum UnaryOp { $($v,)* }

        impl UnaryOp {
            /// Every op, in table order.
            pub const ALL: &[UnaryOp] = &[$(UnaryOp::$v),*];

            /// Its code in the eager kernel (the `OP` constant): its row.
            pub fn code(self) -> u32 {
                self as u32
            }

            /// The method's name, for messages (and its WGSL function, `op_` + name).
            pub fn name(self) -> &'static str {
                match self { $(UnaryOp::$v => stringify!($method),)* }
            }

            /// The dtypes it accepts (always f32).
            pub fn dtypes(self) -> &'static [DType] {
                match self { $(UnaryOp::$v => dtypes!($($dt)*),)* }
            }
        }
    };
}

macro_rules! define_binary {
    ($($(#[doc = $doc:literal])* $v:ident $method:ident [$($dt:ident)*] $kind:ident { $($rules:tt)* };)*) => {
        /// A binary map (one row of [`binary_ops!`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum BinaryOp { $($v,)* }

        impl BinaryOp {
            /// Every op, in table order.
            pub const ALL: &[BinaryOp] = &[$(BinaryOp::$v),*];

            /// Its code in the eager kernel (the `OP` constant): its row.
            pub fn code(self) -> u32 {
                self as u32
            }

            /// The method's name, for messages (and its WGSL function, `op_` + name).
            pub fn name(self) -> &'static str {
                match self { $(BinaryOp::$v => stringify!($method),)* }
            }

            /// The dtypes it accepts (always f32).
            pub fn dtypes(self) -> &'static [DType] {
                match self { $(BinaryOp::$v => dtypes!($($dt)*),)* }
            }

            /// Comparisons produce u32 masks (0 or 1).
            pub fn is_comparison(self) -> bool {
                match self { $(BinaryOp::$v => stringify!($kind) == "mask",)* }
            }
        }
    };
}

unary_ops!(define_unary);
binary_ops!(define_binary);

impl BinaryOp {
    /// The dtype of its result on operands of `dtype`.
    pub fn out_dtype(self, dtype: DType) -> DType {
        if self.is_comparison() { DType::U32 } else { dtype }
    }
}

/// The WGSL function computing `op` on `dtype` (see the module doc).
fn function(name: &str, dtype: DType) -> String {
    match dtype {
        DType::F32 => format!("op_{name}"),
        other => format!("op_{name}_{other}"),
    }
}

/// The WGSL type of an element of `dtype`.
pub(crate) fn wgsl_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::I32 => "i32",
        DType::U32 => "u32",
    }
}

impl UnaryOp {
    /// WGSL giving the bits of the op applied to `x`, the bits (a `u32`
    /// expression) of an element of `dtype`.
    pub fn call(self, dtype: DType, x: &str) -> String {
        let t = wgsl_type(dtype);
        format!("bitcast<u32>({}(bitcast<{t}>({x})))", function(self.name(), dtype))
    }
}

impl BinaryOp {
    /// WGSL giving the bits of `x ⊕ y` (bits of elements of `dtype`; a
    /// comparison gives 0 or 1).
    pub fn call(self, dtype: DType, x: &str, y: &str) -> String {
        let t = wgsl_type(dtype);
        let f = function(self.name(), dtype);
        match self.is_comparison() {
            true => format!("u32({f}(bitcast<{t}>({x}), bitcast<{t}>({y})))"),
            false => format!("bitcast<u32>({f}(bitcast<{t}>({x}), bitcast<{t}>({y})))"),
        }
    }
}

/// A scalar operand of a binary node: its bits, and whether it is the left one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scalar {
    pub bits: u32,
    pub left: bool,
}

/// The computation of one elementwise node, per element of its output.
#[derive(Clone, Debug)]
pub(crate) enum EwExpr {
    Unary {
        op: UnaryOp,
        dtype: DType,
    },
    /// `scalar`: when one operand is a scalar, its bits and side.
    Binary {
        op: BinaryOp,
        dtype: DType,
        scalar: Option<Scalar>,
    },
    /// inputs: a, b, mask
    Where,
    Cast {
        from: DType,
        to: DType,
    },
    Copy,
    Fill {
        bits: u32,
    },
}

impl EwExpr {
    /// The eager kernel's entry point in `shaders/elementwise.wgsl`.
    pub fn entry(&self) -> &'static str {
        match self {
            EwExpr::Unary { .. } => "unary",
            EwExpr::Binary { .. } => "binary",
            EwExpr::Where => "where_",
            EwExpr::Cast { .. } => "cast_",
            EwExpr::Copy => "copy",
            EwExpr::Fill { .. } => "fill",
        }
    }

    /// The input slots (a, b, c) the eager kernel reads, in order.
    pub fn slots(&self) -> &'static [usize] {
        match self {
            EwExpr::Binary { scalar: None, .. } => &[0, 1],
            EwExpr::Binary { scalar: Some(Scalar { left: true, .. }), .. } => &[1],
            EwExpr::Where => &[0, 1, 2],
            EwExpr::Fill { .. } => &[],
            _ => &[0],
        }
    }

    /// WGSL of its value from its operands' values (`u32` bits, in slot order).
    pub fn wgsl(&self, operands: &[String]) -> String {
        let a = || operands[0].clone();
        match *self {
            EwExpr::Unary { op, dtype } => op.call(dtype, &a()),
            EwExpr::Binary { op, dtype, scalar: None } => op.call(dtype, &a(), &operands[1]),
            EwExpr::Binary { op, dtype, scalar: Some(Scalar { bits, left: false }) } => {
                op.call(dtype, &a(), &format!("{bits}u"))
            }
            EwExpr::Binary { op, dtype, scalar: Some(Scalar { bits, left: true }) } => {
                op.call(dtype, &format!("{bits}u"), &a())
            }
            EwExpr::Where => format!("select({}, {}, {} != 0u)", operands[1], a(), operands[2]),
            EwExpr::Cast { from, to } => format!("cast_bits({}u, {}u, {})", from.code(), to.code(), a()),
            EwExpr::Copy => a(),
            EwExpr::Fill { bits } => format!("{bits}u"),
        }
    }
}
