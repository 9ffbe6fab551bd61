//! The ops, a file per family. Every public op validates its arguments
//! (panicking with the op, the shapes and the caller's line), then goes
//! through [`apply`], which records the forward kernel and, under `grad`,
//! a tape node. Each family defines its primitives — forward and VJP rule
//! side by side, implementing [`Primitive`](crate::autograd::Primitive) —
//! and the public methods built on them; derived ops are compositions.
//!
//! Families import only the ones below them: elementwise ← layout ←
//! reduce ← softmax; reduce ← matmul ← conv, einsum; reduce ← scan; reduce ← sort
//! (whose sort and topk compose index's gather); pool2d, index, random,
//! creation and custom on top of elementwise and layout.

mod arrange;
pub(crate) mod conv;
mod creation;
pub(crate) mod custom;
mod einsum;
pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod layout;
pub(crate) mod matmul;
pub(crate) mod operators;
pub(crate) mod pool2d;
mod random;
pub(crate) mod reduce;
mod scan;
pub(crate) mod softmax;
mod sort;

use std::sync::Arc;

use crate::autograd::Primitive;
use crate::dtype::DType;
use crate::tensor::Tensor;

/// Runs primitive `prim` on `inputs` (see [`crate::autograd::apply`]).
#[track_caller]
pub(crate) fn apply(prim: impl Primitive, inputs: &[&Tensor]) -> Tensor {
    crate::autograd::apply(Arc::new(prim), inputs)
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
