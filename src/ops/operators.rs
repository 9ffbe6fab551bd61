//! The operand types of binary ops, and the operators `+ - * /` and
//! unary `-` on tensors and scalars (all the elementwise primitives).

use crate::ir::{BinaryOp, UnaryOp};
use crate::tensor::Tensor;

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

impl<'a> IntoOperand<'a> for Operand<'a> {
    fn into_operand(self) -> Operand<'a> {
        self
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
