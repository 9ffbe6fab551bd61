//! The primitives. Every public op validates its arguments (panicking with
//! the op, the shapes and the caller's line), then goes through [`apply`],
//! which records the forward kernel. Derived ops are compositions of these.

pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod layout;
pub(crate) mod matmul;
pub(crate) mod random;
pub(crate) mod reduce;

use crate::dtype::DType;
use crate::tensor::Tensor;
use elementwise::{BinaryOp, UnaryOp};
use reduce::ReduceOp;

/// A primitive op with its static arguments.
#[derive(Clone, Debug)]
pub(crate) enum Prim {
    Unary(UnaryOp),
    Binary(BinaryOp),
    BinaryScalar {
        op: BinaryOp,
        scalar: f64,
        scalar_left: bool,
    },
    /// inputs: mask, a, b
    Where,
    Cast(DType),
    /// sum / max / min over `axes`, times `scale` (mean is a scaled sum)
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keepdim: bool,
        scale: f32,
    },
    /// argmax / argmin along one axis
    ArgReduce {
        op: ReduceOp,
        axis: usize,
        keepdim: bool,
    },
    Softmax(usize),
    LogSoftmax(usize),
    LogSumExp {
        axes: Vec<usize>,
        keepdim: bool,
    },
    Matmul,
    Reshape(Vec<usize>),
    Permute(Vec<usize>),
    Expand(Vec<usize>),
    Narrow {
        axis: usize,
        start: usize,
        len: usize,
    },
    Contiguous,
    Pad {
        pads: Vec<(usize, usize)>,
        value: f64,
    },
    Cat {
        axis: usize,
    },
    /// inputs: x, indices
    Gather {
        axis: usize,
    },
    /// inputs: x, 1-d indices
    IndexSelect {
        axis: usize,
    },
    /// inputs: indices, src; output has `size` along `axis`, zeros elsewhere
    ScatterAdd {
        axis: usize,
        size: usize,
    },
    OneHot(usize),
}

impl Prim {
    /// Records the forward kernel(s) of the primitive.
    pub(crate) fn forward(&self, x: &[&Tensor]) -> Tensor {
        match self {
            Prim::Unary(op) => elementwise::unary_forward(*op, x[0]),
            Prim::Binary(op) => elementwise::binary_forward(*op, x[0], x[1]),
            Prim::BinaryScalar {
                op,
                scalar,
                scalar_left,
            } => elementwise::binary_scalar_forward(*op, x[0], *scalar, *scalar_left),
            Prim::Where => elementwise::where_forward(x[0], x[1], x[2]),
            Prim::Cast(dtype) => elementwise::cast_forward(x[0], *dtype),
            Prim::Reduce {
                op,
                axes,
                keepdim,
                scale,
            } => reduce::reduce_forward(*op, x[0], axes, *keepdim, *scale),
            Prim::ArgReduce { op, axis, keepdim } => {
                reduce::arg_forward(*op, x[0], *axis, *keepdim)
            }
            Prim::Softmax(axis) => reduce::rows_forward("softmax", x[0], *axis),
            Prim::LogSoftmax(axis) => reduce::rows_forward("log_softmax", x[0], *axis),
            Prim::LogSumExp { axes, keepdim } => reduce::logsumexp_forward(x[0], axes, *keepdim),
            Prim::Matmul => matmul::matmul_forward(x[0], x[1]),
            Prim::Reshape(shape) => layout::reshape_forward(x[0], shape),
            Prim::Permute(perm) => x[0].with_layout(x[0].layout().permute(perm)),
            Prim::Expand(shape) => {
                x[0].with_layout(x[0].layout().broadcast_to(shape).expect("checked"))
            }
            Prim::Narrow { axis, start, len } => {
                x[0].with_layout(x[0].layout().narrow(*axis, *start, *len))
            }
            Prim::Contiguous => layout::contiguous_forward(x[0]),
            Prim::Pad { pads, value } => layout::pad_forward(x[0], pads, *value),
            Prim::Cat { axis } => layout::cat_forward(x, *axis),
            Prim::Gather { axis } => index::gather_forward(x[0], x[1], *axis),
            Prim::IndexSelect { axis } => index::index_select_forward(x[0], x[1], *axis),
            Prim::ScatterAdd { axis, size } => index::scatter_add_forward(x[0], x[1], *axis, *size),
            Prim::OneHot(n) => index::one_hot_forward(x[0], *n),
        }
    }
}

/// Runs a primitive on validated inputs.
#[track_caller]
pub(crate) fn apply(prim: Prim, inputs: &[&Tensor]) -> Tensor {
    prim.forward(inputs)
}

/// Panics unless all tensors live on the same device.
#[track_caller]
pub(crate) fn same_device(op: &str, tensors: &[&Tensor]) {
    if let Some((first, rest)) = tensors.split_first() {
        if rest.iter().any(|t| !t.device().same(first.device())) {
            panic!("wgrad: {op}: tensors live on different devices");
        }
    }
}

/// Panics unless the tensor is f32.
#[track_caller]
pub(crate) fn need_f32(op: &str, t: &Tensor) {
    if t.dtype() != DType::F32 {
        panic!(
            "wgrad: {op}: needs an f32 tensor, got {} of shape {:?}",
            t.dtype(),
            t.shape()
        );
    }
}

/// Panics unless the tensor holds indices (u32 or i32).
#[track_caller]
pub(crate) fn need_indices(op: &str, t: &Tensor) {
    if t.dtype() == DType::F32 {
        panic!(
            "wgrad: {op}: indices must be u32 or i32, got f32 of shape {:?} (use .cast())",
            t.shape()
        );
    }
}
