#![doc = include_str!("../README.md")]

extern crate self as wgrad;

mod autograd;
pub mod checkpoint;
mod codegen;
mod custom;
pub mod data;
mod device;
mod dtype;
mod error;
mod graph;
pub mod nn;
mod ops;
pub mod optim;
mod pool;
mod shaders;
mod shape;
mod tensor;

#[cfg(not(target_arch = "wasm32"))]
pub use autograd::gradcheck;
#[doc(hidden)]
pub use autograd::params_path;
pub use autograd::{
    GradcheckOptions, GradcheckReport, Output, Params, grad, gradcheck_async, hvp, no_grad, value_and_grad, vjp,
};
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
