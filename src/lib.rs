#![doc = include_str!("../README.md")]
// One code path for both targets: handles are `Arc`s so that native devices
// and tensors are `Send + Sync`; in the browser wgpu's objects are not `Send`,
// and the same `Arc`s are simply used from one thread.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

extern crate self as wgrad;

mod autograd;
mod autotune;
mod check;
pub mod checkpoint;
mod codegen;
mod compile;
mod custom;
pub mod data;
mod device;
mod dtype;
mod error;
mod fusion;
mod graph;
pub mod nn;
mod ops;
pub mod optim;
mod pool;
mod shaders;
mod shape;
mod tensor;
#[cfg(target_arch = "wasm32")]
mod web;

#[cfg(not(target_arch = "wasm32"))]
pub use autograd::gradcheck;
#[doc(hidden)]
pub use autograd::params_path;
pub use autograd::{
    GradcheckOptions, GradcheckReport, Output, Params, grad, gradcheck_async, hvp, no_grad, value_and_grad, vjp,
};
pub use compile::{Compiled, MemoryPlan, compile};
pub use custom::{CustomKernel, CustomOp};
pub use device::{Counters, Device};
pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use ops::elementwise::{IntoOperand, Operand};
pub use tensor::Tensor;
pub use wgpu;
/// Derives [`Params`] for a struct of tensors; `#[params(skip)]` marks
/// fields that are not differentiated (they are cloned).
pub use wgrad_derive::Params;
