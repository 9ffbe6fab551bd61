//! Elementwise primitives: unary maps, binary maps with broadcasting (tensor
//! ⊕ tensor and tensor ⊕ scalar), comparisons, where, cast, copy and fill.
//! Kernels: `shaders/elementwise.wgsl`.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::graph::{EwExpr, EwInfo, EwOperand};
use crate::ops::{Prim, apply};
use crate::pool::Storage;
use crate::shaders::{Kernel, Shader};
use crate::shape::{MAX_RANK, broadcast_shapes, coalesce, pack, pack_divisors};
use crate::tensor::Tensor;

/// Unary maps; discriminants are the shader's op codes (checked by a test).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum UnaryOp {
    Neg = 0,
    Abs = 1,
    Sign = 2,
    Exp = 3,
    Log = 4,
    Sqrt = 5,
    Rsqrt = 6,
    Recip = 7,
    Sin = 8,
    Cos = 9,
    Tanh = 10,
    Sigmoid = 11,
    Relu = 12,
    Gelu = 13,
    Softplus = 14,
    Erf = 15,
}

impl UnaryOp {
    #[cfg(test)]
    pub const ALL: [UnaryOp; 16] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Sign,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
        UnaryOp::Gelu,
        UnaryOp::Softplus,
        UnaryOp::Erf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Sign => "sign",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Erf => "erf",
        }
    }

    /// Integer tensors support only the sign-related maps.
    fn allows(self, dtype: DType) -> bool {
        match dtype {
            DType::F32 => true,
            DType::I32 => matches!(self, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign),
            DType::U32 => false,
        }
    }
}

/// Binary maps; discriminants are the shader's op codes (checked by a test).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BinaryOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Pow = 4,
    Maximum = 5,
    Minimum = 6,
    Eq = 7,
    Ne = 8,
    Lt = 9,
    Le = 10,
    Gt = 11,
    Ge = 12,
}

impl BinaryOp {
    #[cfg(test)]
    pub const ALL: [BinaryOp; 13] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
        }
    }

    /// Comparisons produce u32 masks (0 or 1).
    pub fn is_comparison(self) -> bool {
        (self as u32) >= BinaryOp::Eq as u32
    }

    fn out_dtype(self, dtype: DType) -> DType {
        if self.is_comparison() { DType::U32 } else { dtype }
    }
}

/// The right-hand side of a binary op: a tensor or a scalar.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    Tensor(&'a Tensor),
    Scalar(f64),
}

/// Things usable as the other operand of a binary op: `&Tensor`, `f32`,
/// `f64`, `i32`, `u32`. Scalars take the tensor's dtype.
pub trait IntoOperand<'a> {
    fn into_operand(self) -> Operand<'a>;
}

impl<'a> IntoOperand<'a> for &'a Tensor {
    fn into_operand(self) -> Operand<'a> {
        Operand::Tensor(self)
    }
}

macro_rules! scalar_operand {
    ($($t:ty),*) => {$(
        impl IntoOperand<'_> for $t {
            fn into_operand(self) -> Operand<'static> {
                Operand::Scalar(self as f64)
            }
        }
    )*};
}
scalar_operand!(f32, f64, i32, u32);

// ---- kernel launch -------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct EwParams {
    numel: u32,
    rank: u32,
    off_a: u32,
    off_b: u32,
    off_c: u32,
    off_out: u32,
    scalar: u32,
    _pad: u32,
    shape: [u32; MAX_RANK],
    str_a: [u32; MAX_RANK],
    str_b: [u32; MAX_RANK],
    str_c: [u32; MAX_RANK],
    str_out: [u32; MAX_RANK],
    div_magic: [u32; MAX_RANK],
    div_shift: [u32; MAX_RANK],
}

/// Runs an elementwise kernel over `out` (any view), reading the inputs in
/// the slots a, b, c broadcast to the shape of `out`.
pub(crate) fn launch(kernel: Kernel, out: &Tensor, inputs: [Option<&Tensor>; 3], scalar: u32) {
    let n = out.numel();
    if n == 0 {
        return;
    }
    let shape = out.shape();
    let views: Vec<_> = inputs
        .iter()
        .map(|t| t.map(|t| t.layout().broadcast_to(shape).expect("broadcast checked by the op")))
        .collect();
    let mut strides: Vec<Vec<usize>> =
        views.iter().map(|v| v.as_ref().map_or_else(|| vec![0; shape.len()], |v| v.strides.clone())).collect();
    strides.push(out.strides().to_vec());
    let logical = strides.clone();
    let dims = coalesce(shape, &mut strides);
    if dims.len() > MAX_RANK {
        panic!("wgrad: {}: views of rank {} are beyond the kernels' {MAX_RANK} dimensions", kernel.entry, dims.len());
    }
    let off = |i: usize| views[i].as_ref().map_or(0, |v| v.offset as u32);
    let (div_magic, div_shift) = pack_divisors(&dims);
    let kernel = kernel.with("FLAT", (dims.len() <= 1) as u32);
    let params = EwParams {
        numel: n as u32,
        rank: dims.len() as u32,
        off_a: off(0),
        off_b: off(1),
        off_c: off(2),
        off_out: out.layout().offset as u32,
        scalar,
        _pad: 0,
        shape: pack(&dims),
        str_a: pack(&strides[0]),
        str_b: pack(&strides[1]),
        str_c: pack(&strides[2]),
        str_out: pack(&strides[3]),
        div_magic,
        div_shift,
    };
    // A binary op with a scalar operand still declares both input bindings
    // (the pipeline's layout comes from the shader before specialisation), so
    // the tensor operand fills the unused slot.
    let used = match kernel.entry.as_ref() {
        "binary" => 2,
        "where_" => 3,
        "fill" => 0,
        _ => 1,
    };
    let first = inputs.iter().flatten().next().copied();
    let mut bindings: Vec<(u32, Arc<Storage>)> = Vec::with_capacity(4);
    for (slot, t) in inputs.iter().enumerate().take(used) {
        let t = (*t).or(first).expect("an elementwise kernel with inputs has one");
        bindings.push((slot as u32 + 1, t.storage().clone()));
    }
    bindings.push((4, out.storage().clone()));
    let groups = crate::graph::grid(n.div_ceil(256) as u32);
    // What the node computes, for fusing it into a generated kernel later.
    let constant = |k: &str| kernel.constants.iter().find(|c| c.0 == k).map_or(0, |c| c.1);
    let (expr, slots) = match kernel.entry.as_ref() {
        "unary" => (EwExpr::Unary { op: constant("OP"), dt: constant("DT") }, vec![0]),
        "binary" => {
            let (op, dt) = (constant("OP"), constant("DT"));
            match constant("SCALAR") {
                1 => (EwExpr::Binary { op, dt, scalar: Some((scalar, false)) }, vec![0]),
                2 => (EwExpr::Binary { op, dt, scalar: Some((scalar, true)) }, vec![1]),
                _ => (EwExpr::Binary { op, dt, scalar: None }, vec![0, 1]),
            }
        }
        "where_" => (EwExpr::Where, vec![0, 1, 2]),
        "cast_" => (EwExpr::Cast { from: constant("FROM"), to: constant("DT") }, vec![0]),
        "copy" => (EwExpr::Copy, vec![0]),
        _ => (EwExpr::Fill { bits: scalar }, vec![]),
    };
    let operand = |slot: usize| {
        let t = inputs[slot].expect("operand present");
        EwOperand { buffer: t.storage().buffer().clone(), offset: off(slot) as usize, strides: logical[slot].clone() }
    };
    let info = EwInfo {
        expr,
        shape: shape.to_vec(),
        inputs: slots.into_iter().map(operand).collect(),
        out: EwOperand {
            buffer: out.storage().buffer().clone(),
            offset: out.layout().offset,
            strides: logical[3].clone(),
        },
    };
    out.device().inner.record_fusable(
        &kernel,
        bindings,
        bytemuck::bytes_of(&params),
        groups,
        crate::graph::Fusable::Elementwise(Box::new(info)),
    );
}

fn kernel(entry: &'static str, op: u32, dtype: DType) -> Kernel {
    Kernel::new(Shader::Elementwise, entry).with("OP", op).with("DT", dtype.code())
}

pub(crate) fn fill(out: &Tensor, bits: u32) {
    launch(Kernel::new(Shader::Elementwise, "fill"), out, [None, None, None], bits);
}

/// Copies `src` into the view `dst` (same shape).
pub(crate) fn copy_into(dst: &Tensor, src: &Tensor) {
    launch(Kernel::new(Shader::Elementwise, "copy"), dst, [Some(src), None, None], 0);
}

// ---- forward of the primitives ------------------------------------------

pub(crate) fn unary_forward(op: UnaryOp, x: &Tensor) -> Tensor {
    let out = Tensor::empty(x.device(), op.name(), x.shape(), x.dtype());
    launch(kernel("unary", op as u32, x.dtype()), &out, [Some(x), None, None], 0);
    out
}

pub(crate) fn binary_forward(op: BinaryOp, a: &Tensor, b: &Tensor) -> Tensor {
    let shape = broadcast_shapes(a.shape(), b.shape()).expect("checked by the op");
    let out = Tensor::empty(a.device(), op.name(), &shape, op.out_dtype(a.dtype()));
    launch(kernel("binary", op as u32, a.dtype()), &out, [Some(a), Some(b), None], 0);
    out
}

pub(crate) fn binary_scalar_forward(op: BinaryOp, x: &Tensor, scalar: f64, scalar_left: bool) -> Tensor {
    let out = Tensor::empty(x.device(), op.name(), x.shape(), op.out_dtype(x.dtype()));
    let k = kernel("binary", op as u32, x.dtype()).with("SCALAR", if scalar_left { 2 } else { 1 });
    let slots = if scalar_left { [None, Some(x), None] } else { [Some(x), None, None] };
    launch(k, &out, slots, x.dtype().bits_of(scalar));
    out
}

pub(crate) fn where_forward(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    let shape = broadcast_shapes(&broadcast_shapes(cond.shape(), a.shape()).expect("checked"), b.shape())
        .expect("checked by the op");
    let out = Tensor::empty(a.device(), "where_", &shape, a.dtype());
    launch(Kernel::new(Shader::Elementwise, "where_"), &out, [Some(a), Some(b), Some(cond)], 0);
    out
}

pub(crate) fn cast_forward(x: &Tensor, dtype: DType) -> Tensor {
    let out = Tensor::empty(x.device(), "cast", x.shape(), dtype);
    let k = Kernel::new(Shader::Elementwise, "cast_").with("FROM", x.dtype().code()).with("DT", dtype.code());
    launch(k, &out, [Some(x), None, None], 0);
    out
}

// ---- public API ------------------------------------------------------------

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {$(
        $(#[$doc])*
        #[track_caller]
        pub fn $name(&self) -> Tensor {
            self.unary(UnaryOp::$op)
        }
    )*};
}

macro_rules! binary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {$(
        $(#[$doc])*
        #[track_caller]
        pub fn $name<'a>(&self, rhs: impl IntoOperand<'a>) -> Tensor {
            self.binary(BinaryOp::$op, rhs.into_operand())
        }
    )*};
}

impl Tensor {
    #[track_caller]
    pub(crate) fn unary(&self, op: UnaryOp) -> Tensor {
        if !op.allows(self.dtype()) {
            panic!("wgrad: {}: not defined for {} tensors (shape {:?})", op.name(), self.dtype(), self.shape());
        }
        apply(Prim::Unary(op), &[self])
    }

    #[track_caller]
    pub(crate) fn binary(&self, op: BinaryOp, rhs: Operand<'_>) -> Tensor {
        self.check_arith(op);
        match rhs {
            Operand::Tensor(b) => {
                crate::ops::same_device(op.name(), &[self, b]);
                if b.dtype() != self.dtype() {
                    panic!(
                        "wgrad: {}: dtypes differ: {:?} is {} but {:?} is {} (convert one with .cast())",
                        op.name(),
                        self.shape(),
                        self.dtype(),
                        b.shape(),
                        b.dtype()
                    );
                }
                if broadcast_shapes(self.shape(), b.shape()).is_none() {
                    panic!("wgrad: {}: shapes {:?} and {:?} do not broadcast", op.name(), self.shape(), b.shape());
                }
                apply(Prim::Binary(op), &[self, b])
            }
            Operand::Scalar(s) => self.binary_scalar(op, s, false),
        }
    }

    #[track_caller]
    pub(crate) fn binary_scalar(&self, op: BinaryOp, scalar: f64, scalar_left: bool) -> Tensor {
        self.check_arith(op);
        if self.dtype() != DType::F32 && scalar.fract() != 0.0 {
            panic!("wgrad: {}: scalar {scalar} is not an integer but the tensor is {}", op.name(), self.dtype());
        }
        apply(Prim::BinaryScalar { op, scalar, scalar_left }, &[self])
    }

    #[track_caller]
    fn check_arith(&self, op: BinaryOp) {
        if op == BinaryOp::Pow && self.dtype() != DType::F32 {
            panic!("wgrad: pow: needs f32 tensors, got {} (shape {:?})", self.dtype(), self.shape());
        }
    }

    unary_methods! {
        /// −x.
        neg => Neg;
        /// |x|.
        abs => Abs;
        /// −1, 0 or 1 (NaN stays NaN).
        sign => Sign;
        /// eˣ.
        exp => Exp;
        /// Natural logarithm.
        log => Log;
        /// √x.
        sqrt => Sqrt;
        /// 1/√x.
        rsqrt => Rsqrt;
        /// 1/x.
        recip => Recip;
        /// sin x.
        sin => Sin;
        /// cos x.
        cos => Cos;
        /// tanh x.
        tanh => Tanh;
        /// 1/(1 + e⁻ˣ), computed without overflow.
        sigmoid => Sigmoid;
        /// max(x, 0).
        relu => Relu;
        /// x·Φ(x), the exact (erf) form.
        gelu => Gelu;
        /// log(1 + eˣ), computed without overflow.
        softplus => Softplus;
        /// The error function.
        erf => Erf;
    }

    binary_methods! {
        /// Elementwise sum with broadcasting (also `+`).
        add => Add;
        /// Elementwise difference with broadcasting (also `-`).
        sub => Sub;
        /// Elementwise product with broadcasting (also `*`).
        mul => Mul;
        /// Elementwise quotient with broadcasting (also `/`).
        div => Div;
        /// xʸ (f32): negative bases need integer exponents.
        pow => Pow;
        /// Elementwise maximum (NaN propagates).
        maximum => Maximum;
        /// Elementwise minimum (NaN propagates).
        minimum => Minimum;
        /// Mask (u32 0/1) of `self == rhs`.
        eq => Eq;
        /// Mask (u32 0/1) of `self != rhs`.
        ne => Ne;
        /// Mask (u32 0/1) of `self < rhs`.
        lt => Lt;
        /// Mask (u32 0/1) of `self <= rhs`.
        le => Le;
        /// Mask (u32 0/1) of `self > rhs`.
        gt => Gt;
        /// Mask (u32 0/1) of `self >= rhs`.
        ge => Ge;
    }

    /// x².
    #[track_caller]
    pub fn square(&self) -> Tensor {
        self * self
    }

    /// Picks `a` where the mask `self` (u32/i32) is non-zero, else `b`, with
    /// broadcasting of all three. `a` and `b` may be scalars.
    ///
    /// ```
    /// # use wgrad::{Device, Tensor};
    /// # let dev = Device::new()?;
    /// let x = Tensor::from_slice(&dev, &[-1.0f32, 2.0], &[2]);
    /// let leaky = x.gt(0.0).where_(&x, &(&x * 0.01));
    /// # Ok::<(), wgrad::Error>(())
    /// ```
    #[track_caller]
    pub fn where_<'a, 'b>(&self, a: impl IntoOperand<'a>, b: impl IntoOperand<'b>) -> Tensor {
        if self.dtype() == DType::F32 {
            panic!("wgrad: where_: the condition must be a u32/i32 mask, got f32 of shape {:?}", self.shape());
        }
        let (a, b) = (a.into_operand(), b.into_operand());
        let dtype = match (a, b) {
            (Operand::Tensor(t), _) | (_, Operand::Tensor(t)) => t.dtype(),
            _ => DType::F32,
        };
        let to_tensor = |o: Operand<'_>| match o {
            Operand::Tensor(t) => t.clone(),
            Operand::Scalar(s) => {
                let t = Tensor::empty(self.device(), "where_", &[], dtype);
                fill(&t, dtype.bits_of(s));
                t
            }
        };
        let (a, b) = (to_tensor(a), to_tensor(b));
        crate::ops::same_device("where_", &[self, &a, &b]);
        if a.dtype() != b.dtype() {
            panic!("wgrad: where_: branches differ in dtype: {} and {}", a.dtype(), b.dtype());
        }
        let ok = broadcast_shapes(self.shape(), a.shape()).and_then(|s| broadcast_shapes(&s, b.shape()));
        if ok.is_none() {
            panic!(
                "wgrad: where_: shapes {:?} (mask), {:?} and {:?} do not broadcast",
                self.shape(),
                a.shape(),
                b.shape()
            );
        }
        apply(Prim::Where, &[self, &a, &b])
    }

    /// Converts to another dtype (f32 → integer truncates towards zero).
    #[track_caller]
    pub fn cast(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        apply(Prim::Cast(dtype), &[self])
    }
}

// ---- operators ---------------------------------------------------------------

macro_rules! operator {
    ($trait:ident, $method:ident, $op:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.binary(BinaryOp::$op, Operand::Tensor(rhs))
            }
        }
        impl std::ops::$trait<Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                self.binary(BinaryOp::$op, Operand::Tensor(&rhs))
            }
        }
        impl std::ops::$trait<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.binary(BinaryOp::$op, Operand::Tensor(rhs))
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                self.binary(BinaryOp::$op, Operand::Tensor(&rhs))
            }
        }
        operator!(@scalar $trait, $method, $op, f32);
        operator!(@scalar $trait, $method, $op, i32);
        operator!(@scalar $trait, $method, $op, u32);
    };
    (@scalar $trait:ident, $method:ident, $op:ident, $t:ty) => {
        impl std::ops::$trait<$t> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: $t) -> Tensor {
                self.binary_scalar(BinaryOp::$op, rhs as f64, false)
            }
        }
        impl std::ops::$trait<$t> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: $t) -> Tensor {
                self.binary_scalar(BinaryOp::$op, rhs as f64, false)
            }
        }
        impl std::ops::$trait<&Tensor> for $t {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                rhs.binary_scalar(BinaryOp::$op, self as f64, true)
            }
        }
        impl std::ops::$trait<Tensor> for $t {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                rhs.binary_scalar(BinaryOp::$op, self as f64, true)
            }
        }
    };
}

operator!(Add, add, Add);
operator!(Sub, sub, Sub);
operator!(Mul, mul, Mul);
operator!(Div, div, Div);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
}

impl std::ops::Neg for Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
}

// ---- VJP rules -----------------------------------------------------------------

/// Gradient of a unary map: `g·f'(x)`, using the output `y` where that is cheaper.
pub(crate) fn unary_vjp(op: UnaryOp, g: &Tensor, x: &Tensor, y: &Tensor) -> Option<Tensor> {
    use std::f32::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI, PI};
    Some(match op {
        UnaryOp::Neg => -g,                                          // f' = −1
        UnaryOp::Abs => g * &x.sign(),                               // f' = sign(x)
        UnaryOp::Sign => return None,                                // piecewise constant
        UnaryOp::Exp => g * y,                                       // f' = eˣ = y
        UnaryOp::Log => g / x,                                       // f' = 1/x
        UnaryOp::Sqrt => g / &(y * 2.0),                             // f' = 1/(2√x)
        UnaryOp::Rsqrt => g * &(y / x) * -0.5,                       // f' = −½·x^(−3/2) = −½·y/x
        UnaryOp::Recip => -(g * &y.square()),                        // f' = −1/x² = −y²
        UnaryOp::Sin => g * &x.cos(),                                // f' = cos x
        UnaryOp::Cos => -(g * &x.sin()),                             // f' = −sin x
        UnaryOp::Tanh => g * &(1.0 - y.square()),                    // f' = 1 − tanh²
        UnaryOp::Sigmoid => g * &(y * &(1.0 - y)),                   // f' = σ(1 − σ)
        UnaryOp::Relu => x.gt(0.0).where_(g, 0.0),                   // f' = [x > 0]
        UnaryOp::Softplus => g * &x.sigmoid(),                       // f' = σ(x)
        UnaryOp::Erf => g * &((-x.square()).exp() * FRAC_2_SQRT_PI), // f' = 2/√π·e^(−x²)
        UnaryOp::Gelu => {
            // f = x·Φ(x): f' = Φ(x) + x·φ(x), φ(x) = e^(−x²/2)/√(2π)
            let cdf = (x * FRAC_1_SQRT_2).erf() * 0.5 + 0.5;
            let pdf = (x.square() * -0.5).exp() * (1.0 / (2.0 * PI).sqrt());
            g * &(cdf + x * &pdf)
        }
    })
}

/// Weight of `a` in d max(a, b) (or min): 1 where it wins, ½ on ties, else 0.
fn winner_weight(a_wins: Tensor, tie: Tensor) -> Tensor {
    a_wins.cast(DType::F32) + tie.cast(DType::F32) * 0.5
}

/// Gradients of a binary map (before undoing broadcasting), for the
/// operands `needs` selects.
pub(crate) fn binary_vjp(
    op: BinaryOp,
    g: &Tensor,
    a: &Tensor,
    b: &Tensor,
    y: &Tensor,
    needs: &[bool],
) -> Vec<Option<Tensor>> {
    let (na, nb) = (needs[0], needs[1]);
    let (ga, gb) = match op {
        BinaryOp::Add => (na.then(|| g.clone()), nb.then(|| g.clone())), // ∂a = 1, ∂b = 1
        BinaryOp::Sub => (na.then(|| g.clone()), nb.then(|| -g)),        // ∂a = 1, ∂b = −1
        BinaryOp::Mul => (na.then(|| g * b), nb.then(|| g * a)),         // ∂a = b, ∂b = a
        BinaryOp::Div => (na.then(|| g / b), nb.then(|| -(g * &(y / b)))), // ∂a = 1/b, ∂b = −a/b² = −y/b
        BinaryOp::Pow => (
            // ∂a = b·a^(b−1) (0 where b = 0), ∂b = y·ln a (0 where a ≤ 0)
            na.then(|| g * &b.eq(0.0).where_(0.0, &(b * &a.pow(&(b - 1.0))))),
            nb.then(|| g * &a.gt(0.0).where_(&(y * &a.log()), 0.0)),
        ),
        BinaryOp::Maximum | BinaryOp::Minimum => {
            let wins = if op == BinaryOp::Maximum { a.gt(b) } else { a.lt(b) };
            let w = winner_weight(wins, a.eq(b));
            (na.then(|| g * &w), nb.then(|| g * &(1.0 - w)))
        }
        _ => (None, None), // comparisons: masks carry no gradient
    };
    vec![ga, gb]
}

/// Gradient of a binary map with a scalar operand `s` (on the left if
/// `left`), with respect to the tensor operand `x`.
pub(crate) fn binary_scalar_vjp(
    op: BinaryOp,
    g: &Tensor,
    x: &Tensor,
    s: f64,
    left: bool,
    y: &Tensor,
) -> Option<Tensor> {
    let sf = s as f32;
    Some(match (op, left) {
        (BinaryOp::Add, _) => g.clone(),
        (BinaryOp::Sub, false) => g.clone(),
        (BinaryOp::Sub, true) => -g, // d(s − x) = −1
        (BinaryOp::Mul, _) => g * sf,
        (BinaryOp::Div, false) => g * (1.0 / sf),
        (BinaryOp::Div, true) => -(g * &(y / x)), // d(s/x) = −s/x² = −y/x
        (BinaryOp::Pow, false) if s == 0.0 => return None,
        (BinaryOp::Pow, false) => g * &(x.pow(sf - 1.0) * sf), // d xˢ = s·x^(s−1)
        (BinaryOp::Pow, true) => {
            // d sˣ = sˣ·ln s; 0ˣ is flat for x > 0, negative bases have no real derivative
            let ln = if s > 0.0 {
                s.ln() as f32
            } else if s == 0.0 {
                0.0
            } else {
                f32::NAN
            };
            g * &(y * ln)
        }
        (BinaryOp::Maximum, _) => g * &winner_weight(x.gt(sf), x.eq(sf)),
        (BinaryOp::Minimum, _) => g * &winner_weight(x.lt(sf), x.eq(sf)),
        _ => return None,
    })
}
