//! The row kernels: softmax, log_softmax and logsumexp, each along one
//! axis in one pass over the rows (logsumexp over several axes moves them
//! last and merges them), and attention's scaled, optionally causal
//! softmax over the last axis. Kernels: `shaders/softmax.wgsl`.

use bytemuck::{Pod, Zeroable};

use crate::autograd::Primitive;
use crate::dtype::DType;
use crate::ops::elementwise::fill;
use crate::ops::layout::contiguous_forward;
use crate::ops::reduce::{keep, reduced_shape, serial, split};
use crate::ops::{apply, need_f32};
use crate::runtime::{Kernel, Shader, grid};
use crate::shape::{self, Layout, MAX_RANK, contiguous_strides, pack, pack_divisors};
use crate::tensor::Tensor;

/// The row primitives.
#[derive(Clone, Debug)]
pub(crate) enum Rows {
    Softmax(usize),
    LogSoftmax(usize),
    LogSumExp {
        axes: Vec<usize>,
        keepdim: bool,
    },
    /// softmax(scale·x) over the last axis, entries j > i of query row i
    /// masked out when `causal` (attention's weights; see [`scaled_softmax`]).
    ScaledSoftmax {
        scale: f32,
        causal: bool,
    },
}

impl Primitive for Rows {
    fn name(&self) -> &'static str {
        self.kernel().entry()
    }

    fn forward(&self, x: &[&Tensor]) -> Tensor {
        match self {
            Rows::Softmax(axis) | Rows::LogSoftmax(axis) => rows_forward(self.kernel(), x[0], *axis),
            Rows::LogSumExp { axes, keepdim } => logsumexp_forward(x[0], axes, *keepdim),
            Rows::ScaledSoftmax { scale, causal } => {
                let causal = if *causal { x[0].dim(-2) } else { 0 };
                rows_with(self.kernel(), x[0], x[0].rank() - 1, *scale, causal)
            }
        }
    }

    fn vjp(&self, g: &Tensor, x: &[&Tensor], y: &Tensor, _needs: &[bool]) -> Vec<Option<Tensor>> {
        vec![Some(match self {
            // y = softmax(x): dx = y ⊙ (g − Σ g⊙y)
            Rows::Softmax(axis) => y * &(g - &(g * y).sum(&[*axis as isize], true)),
            // y = x − lse(x): dx = g − softmax(x) Σ g
            Rows::LogSoftmax(axis) => g - &(y.exp() * g.sum(&[*axis as isize], true)),
            // f = log Σ eˣ: ∂x = e^(x − f) = softmax(x)
            Rows::LogSumExp { axes, keepdim } => {
                keep(g, x[0], axes, *keepdim) * (x[0] - &keep(y, x[0], axes, *keepdim)).exp()
            }
            // y = softmax(s·x): dx = s·y ⊙ (g − Σ g⊙y); masked entries have
            // y = 0, so their gradient is 0
            Rows::ScaledSoftmax { scale, .. } => (y * *scale) * (g - &(g * y).sum(&[-1], true)),
        })]
    }

    fn jvp(&self, t: &[Option<&Tensor>], x: &[&Tensor], y: &Tensor) -> Option<Tensor> {
        let t = t[0]?;
        Some(match self {
            // dy = y ⊙ (t − Σ t⊙y)
            Rows::Softmax(axis) => y * &(t - &(t * y).sum(&[*axis as isize], true)),
            // dy = t − Σ softmax(x)⊙t
            Rows::LogSoftmax(axis) => t - &(y.exp() * t).sum(&[*axis as isize], true),
            // df = Σ softmax(x)⊙t over the axes
            Rows::LogSumExp { axes, keepdim } => {
                let iaxes: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
                ((x[0] - &keep(y, x[0], axes, *keepdim)).exp() * t).sum(&iaxes, *keepdim)
            }
            // dy = s·y ⊙ (t − Σ t⊙y)
            Rows::ScaledSoftmax { scale, .. } => (y * *scale) * (t - &(t * y).sum(&[-1], true)),
        })
    }
}

/// The entry points of `shaders/softmax.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowKernel {
    Softmax,
    LogSoftmax,
    LogSumExp,
    ScaledSoftmax,
}

impl RowKernel {
    fn entry(self) -> &'static str {
        match self {
            RowKernel::Softmax => "softmax",
            RowKernel::LogSoftmax => "log_softmax",
            RowKernel::LogSumExp => "logsumexp",
            RowKernel::ScaledSoftmax => "scaled_softmax",
        }
    }
}

impl Rows {
    fn kernel(&self) -> RowKernel {
        match self {
            Rows::Softmax(_) => RowKernel::Softmax,
            Rows::LogSoftmax(_) => RowKernel::LogSoftmax,
            Rows::LogSumExp { .. } => RowKernel::LogSumExp,
            Rows::ScaledSoftmax { .. } => RowKernel::ScaledSoftmax,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RowParams {
    n_rows: u32,
    n: u32,
    stride: u32,
    rank_outer: u32,
    offset: u32,
    scale: f32,
    causal: u32,
    _pad: u32,
    shape_outer: [u32; MAX_RANK],
    str_outer: [u32; MAX_RANK],
    magic_outer: [u32; MAX_RANK],
    shift_outer: [u32; MAX_RANK],
}

/// Runs a row kernel along `axis`; returns the output buffer's tensor, laid
/// out row-major in (other dims..., axis) order (logsumexp: other dims only).
fn rows(kernel: RowKernel, x: &Tensor, axis: usize) -> Tensor {
    rows_with(kernel, x, axis, 1.0, 0)
}

/// [`rows`] of `scale`·x, with the causal mask over blocks of `causal` rows
/// (0: none); the mask needs `axis` last.
fn rows_with(kernel: RowKernel, x: &Tensor, axis: usize, scale: f32, causal: usize) -> Tensor {
    let entry = kernel.entry();
    let ((os, _), _) = split(x.layout(), &[axis]);
    if os.len() > MAX_RANK && !x.is_contiguous() {
        // a view whose dimensions do not merge down to the kernel's: dense, they do
        return rows_with(kernel, &contiguous_forward(x), axis, scale, causal);
    }
    let l = x.layout();
    let ((os, ost), _) = split(l, &[axis]);
    let n = l.shape[axis];
    let n_rows = shape::numel(&os);
    let mut outer_shape: Vec<usize> = l.shape.clone();
    outer_shape.remove(axis);
    let out_shape = if kernel == RowKernel::LogSumExp {
        outer_shape.clone()
    } else {
        let mut s = outer_shape.clone();
        s.push(n);
        s
    };
    let out = Tensor::empty(x.device(), entry, &out_shape, DType::F32);
    if n_rows == 0 || n == 0 {
        if n_rows > 0 {
            // logsumexp of nothing is log(0) = -inf; softmax of nothing is empty
            fill(&out, f32::NEG_INFINITY.to_bits());
        }
        return out;
    }
    if os.len() > MAX_RANK {
        panic!("wgrad: {entry}: views of rank > {MAX_RANK} after merging dimensions are not supported");
    }
    let params = RowParams {
        n_rows: n_rows as u32,
        n: n as u32,
        stride: l.strides[axis] as u32,
        rank_outer: os.len() as u32,
        offset: l.offset as u32,
        scale,
        causal: causal as u32,
        _pad: 0,
        shape_outer: pack(&os),
        str_outer: pack(&ost),
        magic_outer: pack_divisors(&os).0,
        shift_outer: pack_divisors(&os).1,
    };
    let one_per_invocation = serial(n_rows, n);
    let kernel = Kernel::new(Shader::Softmax, entry).with("SERIAL", one_per_invocation as u32);
    let groups = if one_per_invocation { n_rows.div_ceil(64) } else { n_rows };
    let bindings = [("x", x.storage()), ("out", out.storage())];
    x.device().inner.record(&kernel, &bindings, bytemuck::bytes_of(&params), grid(groups as u32));
    out
}

fn rows_forward(kernel: RowKernel, x: &Tensor, axis: usize) -> Tensor {
    let out = rows(kernel, x, axis);
    // Undo the move of `axis` to the end: a permuted view, no copy.
    let rank = x.rank();
    let mut perm: Vec<usize> = (0..rank).collect();
    perm.remove(rank - 1);
    perm.insert(axis, rank - 1);
    out.with_layout(out.layout().permute(&perm))
}

fn logsumexp_forward(x: &Tensor, axes: &[usize], keepdim: bool) -> Tensor {
    let out_shape = reduced_shape(x.shape(), axes, keepdim);
    let lse = if axes.len() == 1 {
        rows(RowKernel::LogSumExp, x, axes[0])
    } else {
        // Move the reduced axes last, make that dense, and merge them into one.
        let kept: Vec<usize> = (0..x.rank()).filter(|d| !axes.contains(d)).collect();
        let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
        let moved = contiguous_forward(&x.with_layout(x.layout().permute(&perm)));
        let mut merged: Vec<usize> = kept.iter().map(|&d| x.shape()[d]).collect();
        merged.push(axes.iter().map(|&d| x.shape()[d]).product());
        let l = Layout { shape: merged.clone(), strides: contiguous_strides(&merged), offset: 0 };
        rows(RowKernel::LogSumExp, &moved.with_layout(l), kept.len())
    };
    lse.with_layout(Layout::contiguous(&out_shape))
}

/// softmax(`scale`·x) over the last axis of `x` [..., Tq, Tk], in one
/// kernel: with `causal`, entry j of row i (i indexing axis −2) is masked
/// out when j > i (top-left aligned, as PyTorch's `is_causal`). A row with
/// every entry masked (−∞) gives zeros, not NaN. Attention's weights.
#[track_caller]
pub(crate) fn scaled_softmax(x: &Tensor, scale: f32, causal: bool) -> Tensor {
    need_f32("scaled_softmax", x);
    if x.rank() < 2 {
        panic!("wgrad: scaled_softmax: needs [..., Tq, Tk], got shape {:?}", x.shape());
    }
    apply(Rows::ScaledSoftmax { scale, causal }, &[x])
}

impl Tensor {
    /// log Σ exp over `axes`, computed stably (the max is subtracted first).
    #[track_caller]
    pub fn logsumexp(&self, axes: &[isize], keepdim: bool) -> Tensor {
        need_f32("logsumexp", self);
        let axes = shape::axes("logsumexp", self.shape(), axes);
        apply(Rows::LogSumExp { axes, keepdim }, &[self])
    }

    /// exp(x) / Σ exp(x) along `axis`.
    #[track_caller]
    pub fn softmax(&self, axis: isize) -> Tensor {
        need_f32("softmax", self);
        let axis = shape::axis("softmax", self.shape(), axis);
        apply(Rows::Softmax(axis), &[self])
    }

    /// x − logsumexp(x) along `axis`.
    #[track_caller]
    pub fn log_softmax(&self, axis: isize) -> Tensor {
        need_f32("log_softmax", self);
        let axis = shape::axis("log_softmax", self.shape(), axis);
        apply(Rows::LogSoftmax(axis), &[self])
    }
}
