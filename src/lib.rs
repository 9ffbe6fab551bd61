#![doc = include_str!("../README.md")]
// One code path for both targets: handles are `Arc`s so that native devices
// and tensors are `Send + Sync`; in the browser wgpu's objects are not `Send`,
// and the same `Arc`s are simply used from one thread.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

extern crate self as wgrad;

// The layers, each importing only those above it in this list
// (ARCHITECTURE.md): the leaves, the runtime, code generation, the tensor
// and its tape, the ops, and what is built on them.
mod dtype;
mod error;
mod ir;
mod shape;

mod runtime;

mod codegen;

mod autograd;
mod tensor;

mod ops;

pub mod checkpoint;
mod compile;
pub mod data;
mod device;
pub mod nn;
pub mod optim;
pub mod pack;
#[cfg(not(target_arch = "wasm32"))]
pub mod parallel;
#[cfg(target_arch = "wasm32")]
mod web;

#[cfg(not(target_arch = "wasm32"))]
pub use autograd::gradcheck;
pub use autograd::{
    GradcheckOptions, GradcheckReport, Output, Params, grad, gradcheck_async, hessian, hvp, hvp_rev, jacfwd, jacobian,
    jacrev, jvp, no_grad, value_and_grad, vjp,
};
#[doc(hidden)]
pub use autograd::{nest_flat as params_nest_flat, params_path};
pub use compile::{Compiled, MemoryPlan, compile};
pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use ops::custom::{CustomKernel, CustomOp};
pub use ops::index::ScatterReduce;
pub use ops::operators::{IntoOperand, Operand};
pub use ops::reduce::Norm;
pub use runtime::{Counters, Device};
pub use tensor::Tensor;
pub use wgpu;
/// Derives [`Params`] for a struct of tensors; `#[params(skip)]` marks
/// fields that are not differentiated (they are cloned).
pub use wgrad_derive::Params;
