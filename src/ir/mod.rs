//! The vocabulary shared by the layers above: the ops (elementwise and
//! reduction kinds, optimizer rules), what a recorded node computes
//! ([`Fusable`], for fusion in compiled steps), and the matmul's kernel
//! variants and tiles. Plain data: no device, no tensors, no WGSL text
//! beyond the names of the shader functions an op calls.

mod elementwise;
mod matmul;

use bytemuck::{Pod, Zeroable};

use crate::shape::MAX_RANK;

pub(crate) use elementwise::{BinaryOp, EwExpr, Scalar, UnaryOp, binary_ops, unary_ops};
pub(crate) use matmul::{ALoad, BLoad, ConvGemm, MatmulTile, MatmulVariant, Staging, WorkgroupTile};

/// Reduction kinds; discriminants are `shaders/reduce.wgsl`'s op codes
/// (its `OP` constant; a test checks that they agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ReduceOp {
    Sum = 0,
    Max = 1,
    Min = 2,
    ArgMax = 3,
    ArgMin = 4,
}

impl ReduceOp {
    #[cfg(test)]
    pub const ALL: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::ArgMax, ReduceOp::ArgMin];

    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::ArgMax => "argmax",
            ReduceOp::ArgMin => "argmin",
        }
    }

    /// Its code in `shaders/reduce.wgsl`.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// The uniform of `shaders/reduce.wgsl`'s kernels.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct ReduceParams {
    pub n_out: u32,
    pub n_red: u32,
    pub rank_out: u32,
    pub rank_red: u32,
    pub offset: u32,
    pub chunk: u32,
    pub n_chunks: u32,
    pub scale: f32,
    pub shape_out: [u32; MAX_RANK],
    pub str_out: [u32; MAX_RANK],
    pub shape_red: [u32; MAX_RANK],
    pub str_red: [u32; MAX_RANK],
    pub magic_out: [u32; MAX_RANK],
    pub shift_out: [u32; MAX_RANK],
    pub magic_red: [u32; MAX_RANK],
    pub shift_red: [u32; MAX_RANK],
    /// The field of the hooks' parameters (`shaders/reduce_hooks.wgsl`'s
    /// default: one unused word): generated variants put their chains'
    /// parameters here instead (`codegen/reduction.rs`).
    pub hooks: [u32; 4],
}

impl ReduceParams {
    /// Where the hooks' field starts.
    pub const HOOKS: usize = std::mem::offset_of!(ReduceParams, hooks);
}

/// The two kernels of `shaders/reduce.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReduceKernel {
    /// One invocation per output, folding its elements in order.
    Serial,
    /// One workgroup per output (or per chunk of one), as a tree.
    Tree,
}

impl ReduceKernel {
    pub fn entry(self) -> &'static str {
        match self {
            ReduceKernel::Serial => "reduce_serial",
            ReduceKernel::Tree => "reduce",
        }
    }
}

/// The optimizers' update rules, each a function `<name>_rule` of
/// `shaders/optim_rules.wgsl` and an eager entry point `<name>` of
/// `shaders/optim.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpdateRule {
    Sgd,
    SgdMomentum,
    Adam,
    RmsProp,
    RmsPropMomentum,
    Adagrad,
    Lion,
}

impl UpdateRule {
    /// The eager entry point (`shaders/optim.wgsl`).
    pub fn entry(self) -> &'static str {
        match self {
            UpdateRule::Sgd => "sgd",
            UpdateRule::SgdMomentum => "sgd_momentum",
            UpdateRule::Adam => "adam",
            UpdateRule::RmsProp => "rmsprop",
            UpdateRule::RmsPropMomentum => "rmsprop_momentum",
            UpdateRule::Adagrad => "adagrad",
            UpdateRule::Lion => "lion",
        }
    }

    /// The rule's function (`shaders/optim_rules.wgsl`).
    pub fn function(self) -> String {
        format!("{}_rule", self.entry())
    }
}

/// What fusion in compiled steps needs to know of a node.
#[derive(Clone, Debug)]
pub(crate) enum Fusable {
    Elementwise(Box<EwInfo>),
    /// A generated matmul writing its whole result (no split of k): an
    /// elementwise chain that follows can become its epilogue.
    Matmul(Box<MmInfo>),
    /// An optimizer update of one parameter tensor: where its parameter
    /// and state are written back, several can run in place in one dispatch.
    Optimizer(Box<OptInfo>),
    /// A reduction (`shaders/reduce.wgsl`): the chain computing its input
    /// can run in it as a prologue, one reading its result as an epilogue.
    Reduce(Box<RedInfo>),
}

/// A strided operand of an elementwise node over its output's shape.
#[derive(Clone, Debug)]
pub(crate) struct EwOperand {
    pub buffer: wgpu::Buffer,
    pub offset: usize,
    pub strides: Vec<usize>,
}

/// An elementwise node: what it computes, over which shape, from where, to where.
#[derive(Clone, Debug)]
pub(crate) struct EwInfo {
    pub expr: EwExpr,
    /// The output's shape: the iteration space.
    pub shape: Vec<usize>,
    pub inputs: Vec<EwOperand>,
    pub out: EwOperand,
}

/// A reduction node: it reduces `axes` of its input `x`, a view of
/// `shape`, and writes `outputs` elements of `out`, the final results if
/// `last` (else the partial results of a two-pass reduction).
#[derive(Clone, Debug)]
pub(crate) struct RedInfo {
    pub op: ReduceOp,
    pub kernel: ReduceKernel,
    pub x: EwOperand,
    pub shape: Vec<usize>,
    pub axes: Vec<usize>,
    pub out: wgpu::Buffer,
    pub outputs: usize,
    pub last: bool,
}

/// A parameter or state tensor an optimizer node reads, and where it
/// writes the new value.
#[derive(Clone, Debug)]
pub(crate) struct Update {
    pub read: wgpu::Buffer,
    pub written: wgpu::Buffer,
}

/// An optimizer node (`shaders/optim.wgsl`).
#[derive(Clone, Debug)]
pub(crate) struct OptInfo {
    pub rule: UpdateRule,
    /// The parameter, then the state slots the rule uses.
    pub updates: Vec<Update>,
    pub grad: wgpu::Buffer,
    pub scale: wgpu::Buffer,
    pub t: wgpu::Buffer,
    pub numel: usize,
}

/// A matmul node: its kernel variant and convolution product, if any (to
/// generate it again with an epilogue), the buffers it reads and writes,
/// and its output's element count.
#[derive(Clone, Debug)]
pub(crate) struct MmInfo {
    pub variant: MatmulVariant,
    /// the convolution product it runs, if it is one
    pub conv: Option<ConvGemm>,
    pub a: wgpu::Buffer,
    pub b: wgpu::Buffer,
    pub c: wgpu::Buffer,
    pub numel: usize,
}
