//! The primitives. Every public op validates its arguments (panicking with
//! the op, the shapes and the caller's line), then goes through [`apply`],
//! which records the forward kernel. Derived ops are compositions of these.

pub(crate) mod conv;
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
    Custom(crate::custom::CustomPrim),
    /// inputs: x [N, C, H, W], w [O, C/groups, KH, KW]; output: y [N, O, OH, OW]
    Conv2d(conv::ConvGeom),
    /// inputs: dy (y's shape), w; output: dx (x's shape)
    Conv2dInputGrad(conv::ConvGeom),
    /// inputs: x, dy; output: dw (w's shape)
    Conv2dWeightGrad(conv::ConvGeom),
    MaxPool2d(conv::PoolGeom),
    /// inputs: x (picks the argmax), v (the values taken there)
    MaxPoolSelect(conv::PoolGeom),
    /// inputs: x (picks the argmax), g (summed into it)
    MaxPoolScatter(conv::PoolGeom),
    AvgPool2d(conv::PoolGeom),
    AvgPoolBackward(conv::PoolGeom),
}

impl Prim {
    /// The op's name, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Prim::Unary(op) => op.name(),
            Prim::Binary(op) | Prim::BinaryScalar { op, .. } => op.name(),
            Prim::Where => "where_",
            Prim::Cast(_) => "cast",
            Prim::Reduce { op, scale, .. } => {
                if *scale == 1.0 {
                    op.name()
                } else {
                    "mean"
                }
            }
            Prim::ArgReduce { op, .. } => op.name(),
            Prim::Softmax(_) => "softmax",
            Prim::LogSoftmax(_) => "log_softmax",
            Prim::LogSumExp { .. } => "logsumexp",
            Prim::Matmul => "matmul",
            Prim::Reshape(_) => "reshape",
            Prim::Permute(_) => "permute",
            Prim::Expand(_) => "expand",
            Prim::Narrow { .. } => "narrow",
            Prim::Contiguous => "contiguous",
            Prim::Pad { .. } => "pad",
            Prim::Cat { .. } => "cat",
            Prim::Gather { .. } => "gather",
            Prim::IndexSelect { .. } => "index_select",
            Prim::ScatterAdd { .. } => "scatter_add",
            Prim::OneHot(_) => "one_hot",
            Prim::Custom(_) => "custom op",
            Prim::Conv2d(_) => "conv2d",
            Prim::Conv2dInputGrad(_) => "conv2d (input gradient)",
            Prim::Conv2dWeightGrad(_) => "conv2d (weight gradient)",
            Prim::MaxPool2d(_) | Prim::MaxPoolSelect(_) => "max_pool2d",
            Prim::MaxPoolScatter(_) => "max_pool2d (gradient)",
            Prim::AvgPool2d(_) => "avg_pool2d",
            Prim::AvgPoolBackward(_) => "avg_pool2d (gradient)",
        }
    }

    /// Records the forward kernel(s) of the primitive.
    pub(crate) fn forward(&self, x: &[&Tensor]) -> Tensor {
        match self {
            Prim::Unary(op) => elementwise::unary_forward(*op, x[0]),
            Prim::Binary(op) => elementwise::binary_forward(*op, x[0], x[1]),
            Prim::BinaryScalar { op, scalar, scalar_left } => {
                elementwise::binary_scalar_forward(*op, x[0], *scalar, *scalar_left)
            }
            Prim::Where => elementwise::where_forward(x[0], x[1], x[2]),
            Prim::Cast(dtype) => elementwise::cast_forward(x[0], *dtype),
            Prim::Reduce { op, axes, keepdim, scale } => reduce::reduce_forward(*op, x[0], axes, *keepdim, *scale),
            Prim::ArgReduce { op, axis, keepdim } => reduce::arg_forward(*op, x[0], *axis, *keepdim),
            Prim::Softmax(axis) => reduce::rows_forward("softmax", x[0], *axis),
            Prim::LogSoftmax(axis) => reduce::rows_forward("log_softmax", x[0], *axis),
            Prim::LogSumExp { axes, keepdim } => reduce::logsumexp_forward(x[0], axes, *keepdim),
            Prim::Matmul => matmul::matmul_forward(x[0], x[1]),
            Prim::Reshape(shape) => layout::reshape_forward(x[0], shape),
            Prim::Permute(perm) => x[0].with_layout(x[0].layout().permute(perm)),
            Prim::Expand(shape) => x[0].with_layout(x[0].layout().broadcast_to(shape).expect("checked")),
            Prim::Narrow { axis, start, len } => x[0].with_layout(x[0].layout().narrow(*axis, *start, *len)),
            Prim::Contiguous => layout::contiguous_forward(x[0]),
            Prim::Pad { pads, value } => layout::pad_forward(x[0], pads, *value),
            Prim::Cat { axis } => layout::cat_forward(x, *axis),
            Prim::Gather { axis } => index::gather_forward(x[0], x[1], *axis),
            Prim::IndexSelect { axis } => index::index_select_forward(x[0], x[1], *axis),
            Prim::ScatterAdd { axis, size } => index::scatter_add_forward(x[0], x[1], *axis, *size),
            Prim::OneHot(n) => index::one_hot_forward(x[0], *n),
            Prim::Custom(op) => op.0.forward(x),
            Prim::Conv2d(g) => conv::conv2d_forward(g, x[0], x[1]),
            Prim::Conv2dInputGrad(g) => conv::conv2d_input_grad(g, x[0], x[1]),
            Prim::Conv2dWeightGrad(g) => conv::conv2d_weight_grad(g, x[0], x[1]),
            Prim::MaxPool2d(_)
            | Prim::MaxPoolSelect(_)
            | Prim::MaxPoolScatter(_)
            | Prim::AvgPool2d(_)
            | Prim::AvgPoolBackward(_) => conv::pool_forward(self, x),
        }
    }

    /// Gradients of the inputs given the gradient `g` of the output (`None`:
    /// no gradient, e.g. for indices), for the inputs where `needs` is set.
    /// Written with ops, so the backward pass is recorded like the forward
    /// and is itself differentiable.
    pub(crate) fn vjp(&self, g: &Tensor, x: &[&Tensor], y: &Tensor, needs: &[bool]) -> Vec<Option<Tensor>> {
        match self {
            Prim::Unary(op) => vec![elementwise::unary_vjp(*op, g, x[0], y)],
            Prim::Binary(op) => elementwise::binary_vjp(*op, g, x[0], x[1], y, needs),
            Prim::BinaryScalar { op, scalar, scalar_left } => {
                vec![elementwise::binary_scalar_vjp(*op, g, x[0], *scalar, *scalar_left, y)]
            }
            Prim::Where => vec![None, needs[1].then(|| x[0].where_(g, 0.0)), needs[2].then(|| x[0].where_(0.0, g))],
            Prim::Cast(_) => vec![Some(g.clone())],
            Prim::Reduce { op, axes, keepdim, scale } => {
                vec![reduce::reduce_vjp(*op, g, x[0], y, axes, *keepdim, *scale)]
            }
            Prim::ArgReduce { .. } | Prim::OneHot(_) => vec![None; x.len()],
            Prim::Softmax(axis) => {
                // y = softmax(x): dx = y ⊙ (g − Σ g⊙y)
                let a = *axis as isize;
                vec![Some(y * &(g - &(g * y).sum(&[a], true)))]
            }
            Prim::LogSoftmax(axis) => {
                // y = x − lse(x): dx = g − softmax(x) Σ g
                let a = *axis as isize;
                vec![Some(g - &(y.exp() * g.sum(&[a], true)))]
            }
            Prim::LogSumExp { axes, keepdim } => {
                vec![Some(reduce::logsumexp_vjp(g, x[0], y, axes, *keepdim))]
            }
            Prim::Matmul => {
                // C = A·B: dA = G·Bᵀ, dB = Aᵀ·G (batch broadcasting is undone
                // by the driver). An operand read transposed (a weight w used
                // as wᵀ, as `nn::linear` does) gets its gradient computed
                // transposed too, dense in w's own layout: the optimizer then
                // reads it without a transposing copy.
                let transposed = |t: &Tensor| !t.is_contiguous() && t.t().is_contiguous();
                let da = |a: &Tensor| if transposed(a) { x[1].matmul(&g.t()).t() } else { g.matmul(&x[1].t()) };
                let db = |b: &Tensor| if transposed(b) { g.t().matmul(x[0]).t() } else { x[0].t().matmul(g) };
                vec![needs[0].then(|| da(x[0])), needs[1].then(|| db(x[1]))]
            }
            Prim::Reshape(_) | Prim::Contiguous => vec![Some(g.reshape(x[0].shape()))],
            Prim::Permute(perm) => {
                let mut inverse = vec![0isize; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inverse[p] = i as isize;
                }
                vec![Some(g.permute(&inverse))]
            }
            // the driver sums the broadcast dimensions away
            Prim::Expand(_) => vec![Some(g.clone())],
            Prim::Narrow { axis, start, len } => {
                let mut pads = vec![(0, 0); x[0].rank()];
                pads[*axis] = (*start, x[0].shape()[*axis] - start - len);
                vec![Some(g.pad(&pads, 0.0))]
            }
            Prim::Pad { pads, .. } => {
                let mut inner = g.clone();
                for (d, &(lo, _)) in pads.iter().enumerate() {
                    inner = inner.narrow(d as isize, lo, x[0].shape()[d]);
                }
                vec![Some(inner)]
            }
            Prim::Cat { axis } => {
                let mut start = 0;
                x.iter()
                    .zip(needs)
                    .map(|(t, &need)| {
                        let len = t.shape()[*axis];
                        start += len;
                        need.then(|| g.narrow(*axis as isize, start - len, len))
                    })
                    .collect()
            }
            Prim::Gather { axis } => vec![Some(index::gather_vjp(g, x[0], x[1], *axis)), None],
            Prim::IndexSelect { axis } => {
                vec![Some(index::index_select_vjp(g, x[0], x[1], *axis)), None]
            }
            Prim::ScatterAdd { axis, .. } => vec![None, Some(g.gather(*axis as isize, x[0]))],
            Prim::Custom(op) => op.0.vjp(g, x, y),
            Prim::Conv2d(_) | Prim::Conv2dInputGrad(_) | Prim::Conv2dWeightGrad(_) => conv::conv_vjp(self, g, x, needs),
            Prim::MaxPool2d(_)
            | Prim::MaxPoolSelect(_)
            | Prim::MaxPoolScatter(_)
            | Prim::AvgPool2d(_)
            | Prim::AvgPoolBackward(_) => conv::pool_vjp(self, g, x, needs),
        }
    }
}

pub(crate) use crate::autograd::apply;

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
        panic!("wgrad: {op}: needs an f32 tensor, got {} of shape {:?}", t.dtype(), t.shape());
    }
}

/// Panics unless the tensor holds indices (u32 or i32).
#[track_caller]
pub(crate) fn need_indices(op: &str, t: &Tensor) {
    if t.dtype() == DType::F32 {
        panic!("wgrad: {op}: indices must be u32 or i32, got f32 of shape {:?} (use .cast())", t.shape());
    }
}
