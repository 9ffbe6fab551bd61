//! Generated WGSL: pure functions from the shared vocabulary (`ir`) to
//! WGSL text, its bindings and its uniform — never a graph node or a
//! device. Each generated module is made of the files in `shaders/` plus
//! generated functions (variants by composition: a file's kernels call hook
//! functions that another file, or the generator, supplies); the runtime
//! validates it with naga when it is first used.
//!
//! - `elementwise.rs`: the eager elementwise module (the dispatch over the
//!   op tables) and fused elementwise chains;
//! - `chain.rs`: a fused chain's layout and per-element code;
//! - `matmul.rs`, `matmul_header.rs`, `matmul_tiled.rs`,
//!   `matmul_subgroup.rs`: the matmuls (and convolutions as implicit
//!   GEMMs), with epilogues;
//! - `reduction.rs`: reductions running the chains around them;
//! - `optimizer.rs`: optimizer updates of several tensors in place.

mod chain;
mod elementwise;
mod kernel;
mod matmul;
mod matmul_header;
mod matmul_subgroup;
mod matmul_tiled;
mod optimizer;
mod reduction;
#[cfg(test)]
mod tests;

pub(crate) use chain::{FusedMember, FusedOperand};
pub(crate) use elementwise::{eager_elementwise, fused_elementwise};
pub(crate) use kernel::GeneratedKernel;
pub(crate) use matmul::{source as matmul_source, with_epilogue as matmul_epilogue};
pub(crate) use optimizer::{StepCount, optimizer_in_place};
pub(crate) use reduction::{Epilogue, Prologue, reduction};
